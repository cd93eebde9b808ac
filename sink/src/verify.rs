//! `chitose lake verify`: does the lake hold what its ledger says?
//!
//! Reads every commit record and every data file's footer (never the rows),
//! so it is cheap enough to run after every deployment and before every
//! release. Problems it finds:
//!
//! - a ledger with a gap in its sequence numbers, an offset that goes
//!   backwards, or an object that does not parse;
//! - a committed file that is missing, or whose footer disagrees with its
//!   commit on row count;
//! - a file whose columns match no version of its table's schema;
//! - two committed files of one lake partition covering the same Kafka
//!   offsets (the same records twice);
//! - a file no commit names and no writer intends (an orphan: a fenced
//!   writer's upload that finished after it lost the partition — globbing
//!   readers would count it twice). `--delete-orphans` removes them.
//!
//! Files with an intent and no commit yet are a flush in flight: reported,
//! not a problem.

use crate::core::Schemas;
use crate::lake::{Lake, LakeError};
use arrow_schema::SchemaRef;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

/// Files, rows and bytes of one lake partition (`prefecture=27/event_month=2026-03`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Committed files.
    pub files: u64,
    /// Rows in them (from the footers).
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One thing wrong with the lake.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// A ledger object that does not parse, or a ledger that breaks its rules.
    Ledger {
        /// Table.
        table: String,
        /// Kafka partition.
        partition: i32,
        /// What was expected and found.
        message: String,
    },
    /// A committed file that is not in the store.
    Missing {
        /// Object path.
        path: String,
    },
    /// A file whose footer says another row count than its commit.
    Rows {
        /// Object path.
        path: String,
        /// Rows the ledger recorded.
        ledger: u64,
        /// Rows the footer holds.
        file: u64,
    },
    /// A file whose columns match no version of its table.
    Schema {
        /// Object path.
        path: String,
        /// What differs.
        message: String,
    },
    /// A file that cannot be read as Parquet.
    Unreadable {
        /// Object path.
        path: String,
        /// Why.
        message: String,
    },
    /// Two committed files of one lake partition with overlapping offsets.
    Overlap {
        /// One file.
        first: String,
        /// The other.
        second: String,
    },
    /// A file of a partition whose ledger is damaged: not checked, and
    /// never deleted as an orphan.
    Unverified {
        /// Object path.
        path: String,
    },
    /// A data file that no commit names and no writer intends.
    Orphan {
        /// Object path.
        path: String,
        /// Whether `--delete-orphans` deleted it.
        deleted: bool,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Ledger {
                table,
                partition,
                message,
            } => write!(f, "ledger {table} p{partition:03}: {message}"),
            Problem::Missing { path } => {
                write!(
                    f,
                    "{path}: expected (a commit names it), found no such object"
                )
            }
            Problem::Rows { path, ledger, file } => write!(
                f,
                "{path}: expected {ledger} rows (its commit), found {file} in the footer"
            ),
            Problem::Schema { path, message } => write!(f, "{path}: {message}"),
            Problem::Unreadable { path, message } => {
                write!(f, "{path}: expected a Parquet file, found {message}")
            }
            Problem::Overlap { first, second } => write!(
                f,
                "{second}: expected offsets after those of {first}, found an overlap (rows counted twice)"
            ),
            Problem::Unverified { path } => write!(
                f,
                "{path}: not checked, the ledger of its partition is damaged"
            ),
            Problem::Orphan { path, deleted } => write!(
                f,
                "{path}: expected a commit or an intent naming it, found neither (orphan{})",
                if *deleted { ", deleted" } else { "" }
            ),
        }
    }
}

/// What `verify` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// Per table, per lake partition.
    pub tables: BTreeMap<String, BTreeMap<String, Counts>>,
    /// Everything wrong; empty means the lake is consistent.
    pub problems: Vec<Problem>,
    /// Files of flushes in flight (an intent, no commit yet).
    pub in_flight: Vec<String>,
    /// Commit records read.
    pub commits: u64,
}

impl Report {
    /// Rows of a table over all its partitions.
    pub fn rows(&self, table: &str) -> u64 {
        self.tables
            .get(table)
            .map_or(0, |t| t.values().map(|c| c.rows).sum())
    }
}

/// Verifies the lake's ledger against its files; with `delete_orphans`,
/// deletes files no commit or intent names.
pub async fn verify(
    lake: &Lake,
    schemas: &Schemas,
    delete_orphans: bool,
) -> Result<Report, LakeError> {
    let mut report = Report::default();
    // Ledger: _chitose/ledger/<table>/p<NNN>/<seq>.json
    let ledger: Vec<_> = lake
        .store
        .list(Some(&lake.path("_chitose/ledger")))
        .try_collect()
        .await?;
    // (table, partition) → its commit records, each parsed on its own so
    // one damaged object does not hide the others.
    let mut parts: BTreeMap<(String, i32), Vec<crate::lake::Commit>> = BTreeMap::new();
    let mut damaged: BTreeSet<(String, i32)> = BTreeSet::new();
    for m in &ledger {
        let parts_of: Vec<_> = m.location.parts().map(|p| p.as_ref().to_owned()).collect();
        let n = parts_of.len();
        let Some(key) = (n >= 3)
            .then(|| {
                parts_of[n - 2]
                    .strip_prefix('p')
                    .and_then(|p| p.parse().ok())
            })
            .flatten()
            .map(|p: i32| (parts_of[n - 3].clone(), p))
        else {
            continue;
        };
        let bytes = lake.store.get(&m.location).await?.bytes().await?;
        match serde_json::from_slice::<crate::lake::Commit>(&bytes) {
            Ok(c) => parts.entry(key).or_default().push(c),
            Err(e) => {
                report.problems.push(Problem::Ledger {
                    table: key.0.clone(),
                    partition: key.1,
                    message: format!("{}: expected a commit record, found {e}", m.location),
                });
                damaged.insert(key.clone());
                parts.entry(key).or_default();
            }
        }
    }
    let mut committed: HashMap<String, (String, crate::lake::Landed)> = HashMap::new();
    for ((table, partition), mut commits) in parts {
        let partition = &partition;
        let table = &table;
        commits.sort_by_key(|c| c.seq);
        report.commits += commits.len() as u64;
        let ledger_problem = |message: String| Problem::Ledger {
            table: table.clone(),
            partition: *partition,
            message,
        };
        // A damaged object is a gap already reported: the sequence checks
        // would only repeat it.
        let intact = !damaged.contains(&(table.clone(), *partition));
        for w in commits.windows(2).filter(|_| intact) {
            if w[1].seq != w[0].seq + 1 {
                report.problems.push(ledger_problem(format!(
                    "expected sequence {} after {}, found {}",
                    w[0].seq + 1,
                    w[0].seq,
                    w[1].seq
                )));
            }
            if w[1].next_offset < w[0].next_offset {
                report.problems.push(ledger_problem(format!(
                    "sequence {}: expected next_offset ≥ {}, found {}",
                    w[1].seq, w[0].next_offset, w[1].next_offset
                )));
            }
        }
        if intact
            && let Some(c) = commits.first()
            && c.seq != 0
        {
            report.problems.push(ledger_problem(format!(
                "expected the first sequence to be 0, found {}",
                c.seq
            )));
        }
        for c in commits {
            for f in c.files {
                if let Some((_, other)) = committed.get(&f.path) {
                    report.problems.push(ledger_problem(format!(
                        "sequence {}: {} was committed before (rows {} then {})",
                        c.seq, f.path, other.rows, f.rows
                    )));
                    continue;
                }
                committed.insert(f.path.clone(), (table.clone(), f));
            }
        }
    }
    // Offsets of one Kafka partition and lake partition must not overlap.
    // (table, lake key, Kafka partition) → (first, last, path) of its files.
    type Ranges = BTreeMap<(String, String, i32), Vec<(i64, i64, String)>>;
    let mut ranges: Ranges = BTreeMap::new();
    for (path, (table, l)) in &committed {
        let partition = partition_of(path).unwrap_or(-1);
        ranges
            .entry((table.clone(), l.key.clone(), partition))
            .or_default()
            .push((l.first, l.last, path.clone()));
    }
    for files in ranges.values_mut() {
        files.sort();
        for w in files.windows(2) {
            if w[1].0 <= w[0].1 {
                report.problems.push(Problem::Overlap {
                    first: w[0].2.clone(),
                    second: w[1].2.clone(),
                });
            }
        }
    }

    // Intents: files being written now.
    let intents: Vec<_> = lake
        .store
        .list(Some(&lake.path("_chitose/intents")))
        .try_collect()
        .await?;
    let mut intended = BTreeSet::new();
    for m in intents {
        let bytes = lake.store.get(&m.location).await?.bytes().await?;
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
            && let Some(p) = v["path"].as_str()
        {
            intended.insert(p.to_owned());
        }
    }

    let data: Vec<_> = lake
        .store
        .list(Some(&lake.path("pseudonymized")))
        .try_collect()
        .await?;
    let mut seen = BTreeSet::new();
    let mut versions: HashMap<String, Vec<(u32, SchemaRef)>> = HashMap::new();
    for m in data {
        let path = m.location.to_string();
        if !path.ends_with(".parquet") {
            continue;
        }
        seen.insert(path.clone());
        let Some((table, landed)) = committed.get(&path) else {
            let owner = path
                .split("pseudonymized/")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .zip(partition_of(&path))
                .map(|(t, p)| (t.to_owned(), p));
            if intended.contains(&path) {
                report.in_flight.push(path);
            } else if owner.is_some_and(|o| damaged.contains(&o)) {
                // Its commit may be the damaged object: never an orphan
                // (and never deleted) until the ledger is repaired.
                report.problems.push(Problem::Unverified { path });
            } else {
                if delete_orphans {
                    lake.delete(&m.location).await?;
                }
                report.problems.push(Problem::Orphan {
                    path,
                    deleted: delete_orphans,
                });
            }
            continue;
        };
        let (meta, schema) = match footer(lake, &m.location, m.size).await {
            Ok(x) => x,
            Err(message) => {
                report.problems.push(Problem::Unreadable { path, message });
                continue;
            }
        };
        let rows = meta.file_metadata().num_rows() as u64;
        if rows != landed.rows {
            report.problems.push(Problem::Rows {
                path: path.clone(),
                ledger: landed.rows,
                file: rows,
            });
        }
        let known = versions
            .entry(table.clone())
            .or_insert_with(|| schemas.table_versions(table));
        if let Some(message) = schema_mismatch(&schema, known) {
            report.problems.push(Problem::Schema {
                path: path.clone(),
                message,
            });
        }
        if !path.contains(&format!("/{}/", landed.key)) {
            report.problems.push(Problem::Schema {
                path: path.clone(),
                message: format!(
                    "expected to lie under lake partition {} (its commit), found another",
                    landed.key
                ),
            });
        }
        let c = report
            .tables
            .entry(table.clone())
            .or_default()
            .entry(landed.key.clone())
            .or_default();
        c.files += 1;
        c.rows += rows;
        c.bytes += m.size;
    }
    let mut missing: Vec<&String> = committed.keys().filter(|p| !seen.contains(*p)).collect();
    missing.sort();
    for path in missing {
        report
            .problems
            .push(Problem::Missing { path: path.clone() });
    }
    Ok(report)
}

/// A Parquet file's footer and Arrow schema, read with two ranged GETs
/// (the 8-byte tail, then the metadata): the rows are never fetched.
async fn footer(
    lake: &Lake,
    path: &Path,
    size: u64,
) -> Result<(ParquetMetaData, SchemaRef), String> {
    if size < 12 {
        return Err(format!("{size} bytes"));
    }
    let tail = lake
        .store
        .get_range(path, size - 8..size)
        .await
        .map_err(|e| e.to_string())?;
    if &tail[4..] != b"PAR1" {
        return Err("no PAR1 magic at the end".into());
    }
    let len = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")));
    if len + 8 > size {
        return Err(format!("a footer of {len} bytes in a {size}-byte file"));
    }
    let buf = lake
        .store
        .get_range(path, size - 8 - len..size - 8)
        .await
        .map_err(|e| e.to_string())?;
    let meta = ParquetMetaDataReader::decode_metadata(&buf).map_err(|e| e.to_string())?;
    let fm = meta.file_metadata();
    let schema =
        parquet::arrow::parquet_to_arrow_schema(fm.schema_descr(), fm.key_value_metadata())
            .map_err(|e| e.to_string())?;
    Ok((meta, Arc::new(schema)))
}

/// The Kafka partition in a data file's name (`part-<p>-<first>-e<epoch>`).
fn partition_of(path: &str) -> Option<i32> {
    let name = Path::from(path).filename()?.to_owned();
    name.strip_prefix("part-")?.split('-').next()?.parse().ok()
}

/// Why `file` matches none of `versions` (None when it matches one): every
/// column with the same name, type and nullability, in order.
fn schema_mismatch(file: &SchemaRef, versions: &[(u32, SchemaRef)]) -> Option<String> {
    if versions.is_empty() {
        return Some("expected a known table, found no schema for it".into());
    }
    let shape = |s: &SchemaRef| -> Vec<(String, String, bool)> {
        s.fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string(), f.is_nullable()))
            .collect()
    };
    let got = shape(file);
    let mut closest = String::new();
    for (version, s) in versions {
        let want = shape(s);
        if want == got {
            return None;
        }
        let diff = want
            .iter()
            .zip(&got)
            .find(|(a, b)| a != b)
            .map(|(a, b)| {
                format!(
                    "column {}: expected {} {}, found {} {} {}",
                    a.0,
                    a.1,
                    if a.2 { "nullable" } else { "required" },
                    b.0,
                    b.1,
                    if b.2 { "nullable" } else { "required" }
                )
            })
            .unwrap_or_else(|| format!("expected {} columns, found {}", want.len(), got.len()));
        closest = format!("columns match no version of the table; against v{version}: {diff}");
    }
    Some(closest)
}
