//! # chitose-sink: the Parquet lake, exactly once
//!
//! `health.pseudo.*` → one Parquet table per event type on any object_store
//! backend (local folder by default, S3, GCS, Azure).
//!
//! - [`core`]: pure: framed Avro → Arrow batches (arrow-avro), lake partition
//!   keys, replay detection inputs, schema compatibility;
//! - [`writer`]: Parquet settings and streaming writers (row groups go to
//!   multipart uploads as they fill);
//! - [`lake`]: paths, the ledger (create-only commit records) and intents;
//! - [`service`]: the Kafka shell: recovery on assignment, rolling, commits.

pub mod config;
pub mod core;
pub mod dedupe;
pub mod lake;
pub mod metrics;
pub mod service;
pub mod verify;
pub mod writer;
