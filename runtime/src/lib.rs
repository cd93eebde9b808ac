//! # chitose-runtime: plumbing shared by the services
//!
//! The async shell around the pure cores: the Kafka ACLs of each role
//! ([`acl`]), Kafka client setup with the
//! settings the exactly-once design needs ([`kafka`]), a batch-at-a-time
//! producer that neither spins nor waits out 100 ms per flush
//! ([`batch_producer`]), the
//! Confluent-compatible registry client ([`registry`]), and graceful
//! shutdown ([`shutdown`]), layered configuration ([`config`]) and the
//! `/metrics`, `/healthz`, `/readyz` endpoint ([`ops`]), the dead-letter
//! contract ([`dlq`]), consumer lag gauges ([`lag`]) and CPU/RSS readings
//! for benchmarks ([`procstat`]), the process allocator ([`alloc`]), the
//! one rule and type for secrets ([`secret`]) and owner-only files for
//! personal data ([`private`]).

pub mod acl;
pub mod alloc;
pub mod batch_producer;
pub mod client_stats;
pub mod config;
pub mod dlq;
pub mod kafka;
pub mod lag;
pub mod ops;
pub mod private;
pub mod procstat;
pub mod registry;
pub mod secret;
pub mod shutdown;
pub mod topic_read;
pub mod topics;
