//! chitose release: anonymized data sets from the pseudonymized lake.
//!
//! `chitose release --spec release.toml` reads one Delta snapshot of each
//! lake table a spec names, joins every pseudonym of one person into one
//! person (a union–find over every table's `linkage_pseudonyms`), finds the
//! least general levels of the quasi-identifiers' hierarchies at which every
//! released group — quasi-identifiers and each rare column as released —
//! holds at least k people (rolling rare values up within their class,
//! suppressing small groups and groups below ℓ, within a budget), re-keys
//! one pseudonym per person only for a named recipient, drops everything
//! else, shuffles the rows and writes `anonymized/<release_id>/<table>/` (a
//! Delta table) with a ledger entry and a report in JSON and Markdown.
//! `chitose lake audit` computes the same risk measures on any table without
//! changing it.
//!
//! - [`spec`]: the spec and its checks against the contract's classes;
//! - [`hierarchy`]: generalization hierarchies and value dictionaries;
//! - [`people`]: the union–find of a person's pseudonyms;
//! - [`core`]: index, plan, apply, risk — pure, no I/O;
//! - [`run`]: the snapshot, the two streamed passes, the files and report.

pub mod core;
pub mod hierarchy;
pub mod people;
pub mod run;
pub mod spec;
pub mod spill;
