//! # chitose-ingest
//!
//! The prefecture producer service: each hub streams its events into
//! `health.raw.<prefecture>`.
//!
//! Pure cores:
//! - [`simulate`]: seeded, reproducible Kansai hub events, with a bad-data
//!   mode. No clock, no I/O.
//! - [`edge`]: JSON bytes in → framed Avro message out, or a reject with a
//!   reason: what every source does to a record.
//! - [`fhir`]: FHIR Bundles as the Japanese guides publish them → events.
//! - [`ssmix2`]: SS-MIX2 standardized-storage messages (HL7 v2.5) → events
//!   and corrections.
//!
//! Shell:
//! - [`producer`]: idempotent acks=all producer with bounded in-flight
//!   records; [`inorder`], the window that releases acknowledgements in
//!   line order for the files source's checkpoint; [`metrics`]; [`config`].
//! - Sources: [`files`] (exactly once through kill -9), [`http`], the
//!   SS-MIX2 storage walker ([`ssmix2::tree`], queueing for the files
//!   source), and the simulate loop in [`service`].

pub mod config;
pub mod edge;
pub mod fhir;
pub mod files;
pub mod http;
pub mod inorder;
pub mod metrics;
pub mod producer;
pub mod records;
pub mod rejects;
pub mod service;
pub mod simulate;
pub mod ssmix2;
pub mod tls;
pub mod token;
