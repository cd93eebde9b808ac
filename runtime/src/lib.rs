//! # chitose-runtime: plumbing shared by the services
//!
//! The async shell around the pure cores: Kafka client setup with the
//! settings the exactly-once design needs ([`kafka`]), the
//! Confluent-compatible registry client ([`registry`]), and graceful
//! shutdown ([`shutdown`]), layered configuration ([`config`]) and the
//! `/metrics`, `/healthz`, `/readyz` endpoint ([`ops`]).

pub mod config;
pub mod kafka;
pub mod ops;
pub mod registry;
pub mod shutdown;
