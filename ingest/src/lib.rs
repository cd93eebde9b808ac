//! # chitose-ingest
//!
//! The prefecture producer service: each hub streams its events into
//! `health.raw.<prefecture>`. The sources (files, HTTP, FHIR) arrive with
//! the ingest issue; this crate holds the synthetic generator now, because
//! every other stage needs realistic data to be tested with.
//!
//! - [`simulate`]: seeded, reproducible Kansai hub events, with a bad-data
//!   mode. Pure: no clock, no I/O.
//! - [`edge`]: JSON bytes in → Avro datum out, or a reject with a reason:
//!   the pure core the sources will share.

pub mod edge;
pub mod simulate;
