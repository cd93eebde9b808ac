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
//!
//! Shell:
//! - [`producer`]: idempotent acks=all producer with bounded in-flight
//!   records; [`metrics`]; [`config`].
//! - Sources: [`files`] (exactly once through kill -9), [`http`], and the
//!   simulate loop in [`service`].

pub mod config;
pub mod edge;
pub mod fhir;
pub mod files;
pub mod http;
pub mod metrics;
pub mod producer;
pub mod records;
pub mod rejects;
pub mod service;
pub mod simulate;
pub mod tls;
pub mod token;
