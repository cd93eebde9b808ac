//! # chitose-transform: de-identification and enrichment
//!
//! `health.raw.*` → `health.pseudo.<event_type>`, stateless, exactly once.
//!
//! - [`policy`]: the profile file (one rule per raw field), checked at load;
//! - [`plan`]: the policy compiled against the pseudo table schemas;
//! - [`core`]: the pure transform, bytes in → record out, no I/O;
//! - [`keys`], [`pseudonym`]: keys, linkage keys, pseudonyms, date shift;
//! - [`explain`]: the privacy officer's table, generated from the policy;
//! - [`service`]: the Kafka shell (transactions, DLQ, metrics).

pub mod config;
pub mod contract;
pub mod core;
pub mod explain;
pub mod fields;
pub mod keys;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod pseudonym;
pub mod service;
