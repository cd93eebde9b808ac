//! chitose release: anonymized data sets from the pseudonymized lake.
//!
//! `chitose release --spec release.toml` reads one Delta snapshot of each
//! lake table a spec names, finds the least general levels of the
//! quasi-identifiers' hierarchies at which every equivalence class holds at
//! least k patients (suppressing the records of smaller classes, within a
//! budget), rolls rare sensitive values up their ladder per area and period
//! (null at the top), re-keys pseudonyms with a key made for the release and
//! never kept, drops everything else (source coordinates, event ids, key
//! ids, every column the spec does not name) and writes
//! `anonymized/<release_id>/<table>/` (a Delta table) with a report in JSON and
//! Markdown. `chitose lake audit` computes the same risk measures on any
//! table without changing it.
//!
//! - [`spec`]: the spec and its checks against the contract's classes;
//! - [`hierarchy`]: generalization hierarchies and value dictionaries;
//! - [`core`]: index, plan, apply, risk — pure, no I/O;
//! - [`run`]: the snapshot, the two streamed passes, the files and report.

pub mod core;
pub mod hierarchy;
pub mod people;
pub mod run;
pub mod spec;
