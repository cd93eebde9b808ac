//! # chitose-runtime: plumbing shared by the services
//!
//! The async shell around the pure cores: Kafka client setup with the
//! settings the exactly-once design needs ([`kafka`]), the
//! Confluent-compatible registry client ([`registry`]), and graceful
//! shutdown ([`shutdown`]). Metrics and config loading join it as the
//! services land.

pub mod kafka;
pub mod registry;
pub mod shutdown;
