//! # chitose-sink: the Delta lake, exactly once
//!
//! `health.pseudo.*` → one Delta table per event type on any object_store
//! backend (local folder by default, S3, GCS, Azure).
//!
//! - [`core`]: pure: framed Avro → Arrow batches (arrow-avro), lake partition
//!   keys, schema compatibility;
//! - [`offsets`]: pure: exactly once through the Delta table's `txn`
//!   versions (what is committed, where to resume, what is a replay);
//! - [`service`]: the Kafka shell: buffers per lake partition, rolls, one
//!   Delta commit per table per roll (through `chitose-lake`).

pub mod config;
pub mod core;
pub mod dedupe;
pub mod metrics;
pub mod offsets;
pub mod service;
