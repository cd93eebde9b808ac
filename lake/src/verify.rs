//! `chitose lake verify`: does each table's log agree with its files?
//!
//! Reads each table's newest snapshot and every active file's footer
//! (never the rows), so it is cheap enough to run after every deployment
//! and before every release. Problems it finds:
//!
//! - a table whose log does not load;
//! - an active file that is missing, or whose size or footer row count
//!   disagrees with its add action;
//! - a file whose columns are not the table's (name and type), or that
//!   lies outside its partition's folder.
//!
//! Files no snapshot lists (a crashed writer's upload, files a compaction
//! replaced) are invisible to every Delta reader: counted as
//! `unreferenced`, and removed by `chitose lake vacuum` after its
//! retention, not by verify.

use crate::delta::Table;
use crate::{Lake, LakeError, layout};
use arrow_schema::SchemaRef;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

/// Files, rows and bytes of one lake partition (`prefecture=27/event_month=2026-03`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Active files.
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
    /// A table whose log does not load.
    Log {
        /// Table.
        table: String,
        /// What the reader said.
        message: String,
    },
    /// An active file that is not in the store (or has another size).
    Missing {
        /// Object path.
        path: String,
    },
    /// A file whose size is not its add action's.
    Size {
        /// Object path (lake-relative).
        path: String,
        /// Bytes the log recorded.
        log: u64,
        /// Bytes in the store.
        file: u64,
    },
    /// A file whose footer says another row count than its add action.
    Rows {
        /// Object path.
        path: String,
        /// Rows the log recorded.
        log: u64,
        /// Rows the footer holds.
        file: u64,
    },
    /// A file whose columns are not the table's.
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
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Log { table, message } => {
                write!(f, "{table}: expected a readable Delta log, found {message}")
            }
            Problem::Missing { path } => write!(
                f,
                "{path}: expected (the log names it), found no such object"
            ),
            Problem::Size { path, log, file } => write!(
                f,
                "{path}: expected {log} bytes (its add action), found {file}"
            ),
            Problem::Rows { path, log, file } => write!(
                f,
                "{path}: expected {log} rows (its add action), found {file} in the footer"
            ),
            Problem::Schema { path, message } => write!(f, "{path}: {message}"),
            Problem::Unreadable { path, message } => {
                write!(f, "{path}: expected a Parquet file, found {message}")
            }
        }
    }
}

/// One table as verified.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TableReport {
    /// The version read.
    pub version: u64,
    /// Per lake partition.
    pub partitions: BTreeMap<String, Counts>,
    /// Data files under the table no snapshot lists (invisible to readers).
    pub unreferenced: u64,
}

/// What `verify` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// Per table.
    pub tables: BTreeMap<String, TableReport>,
    /// Everything wrong; empty means the lake is consistent.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Rows of a table over all its partitions.
    pub fn rows(&self, table: &str) -> u64 {
        self.tables
            .get(table)
            .map_or(0, |t| t.partitions.values().map(|c| c.rows).sum())
    }
}

/// The tables under `zone` (folders with a `_delta_log`).
pub async fn tables_in(lake: &Lake, zone: &str) -> Result<Vec<String>, LakeError> {
    let listing = lake
        .store
        .list_with_delimiter(Some(&lake.path(zone)))
        .await?;
    let mut out = Vec::new();
    for p in listing.common_prefixes {
        let Some(name) = p.filename().map(str::to_owned) else {
            continue;
        };
        if lake.table(&format!("{zone}/{name}")).exists().await? {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Verifies every table of the pseudonymized zone against its files;
/// `versions` are the tables' schemas (see [`crate::tables::versions`]).
pub async fn verify(
    lake: &Lake,
    versions: &BTreeMap<String, Vec<(u32, SchemaRef)>>,
) -> Result<Report, LakeError> {
    let mut report = Report::default();
    for name in tables_in(lake, layout::PSEUDONYMIZED).await? {
        let table = lake.table(&layout::table(&name));
        let snap = match table.load().await {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                report.problems.push(Problem::Log {
                    table: name.clone(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let t = verify_table(&table, &snap, versions.get(&name), &mut report.problems).await?;
        report.tables.insert(name, t);
    }
    Ok(report)
}

async fn verify_table(
    table: &Table,
    snap: &crate::delta::Snap,
    versions: Option<&Vec<(u32, SchemaRef)>>,
    problems: &mut Vec<Problem>,
) -> Result<TableReport, LakeError> {
    let lake = table.lake();
    let mut out = TableReport {
        version: snap.version(),
        ..Default::default()
    };
    let columns = snap.partition_columns();
    let logical = snap.schema()?;
    let files = table.files(snap).await?;
    let objects: HashMap<String, u64> = lake
        .store
        .list(Some(&lake.path(table.rel())))
        .try_collect::<Vec<_>>()
        .await?
        .into_iter()
        .filter(|m| m.location.as_ref().ends_with(".parquet"))
        .filter(|m| !m.location.as_ref().contains("/_delta_log/"))
        .map(|m| (m.location.to_string(), m.size))
        .collect();
    let mut active = std::collections::HashSet::new();
    for f in &files {
        active.insert(f.object.to_string());
        let path = lake.relative(&f.object);
        let key = f.key(&columns);
        let Some(size) = objects.get(f.object.as_ref()).copied() else {
            problems.push(Problem::Missing { path });
            continue;
        };
        if size != f.size {
            problems.push(Problem::Size {
                path: path.clone(),
                log: f.size,
                file: size,
            });
        }
        let (meta, schema) = match footer(lake, &f.object, size).await {
            Ok(x) => x,
            Err(message) => {
                problems.push(Problem::Unreadable { path, message });
                continue;
            }
        };
        let rows = meta.file_metadata().num_rows() as u64;
        if let Some(log) = f.rows
            && log != rows
        {
            problems.push(Problem::Rows {
                path: path.clone(),
                log,
                file: rows,
            });
        }
        if let Some(message) = schema_mismatch(&schema, &logical, &columns, versions) {
            problems.push(Problem::Schema {
                path: path.clone(),
                message,
            });
        }
        if !lake.relative(&f.object).contains(&format!("/{key}/")) {
            problems.push(Problem::Schema {
                path: path.clone(),
                message: format!(
                    "expected to lie under lake partition {key} (its partition values), found another folder"
                ),
            });
        }
        let c = out.partitions.entry(key).or_default();
        c.files += 1;
        c.rows += rows;
        c.bytes += size;
    }
    out.unreferenced = objects.keys().filter(|p| !active.contains(*p)).count() as u64;
    Ok(out)
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

/// Why a file's columns are not the table's (None when they are): every
/// column a known table column of the same type (a file written before a
/// column was added lacks it), and no partition column inside.
fn schema_mismatch(
    file: &SchemaRef,
    table: &SchemaRef,
    partition_columns: &[String],
    versions: Option<&Vec<(u32, SchemaRef)>>,
) -> Option<String> {
    if versions.is_none() {
        return Some("expected a table of the pseudo contract, found no schema for it".into());
    }
    for f in file.fields() {
        if partition_columns.contains(f.name()) {
            return Some(format!(
                "column {}: expected only in the partition values, found in the file",
                f.name()
            ));
        }
        match table.field_with_name(f.name()) {
            Ok(t) if t.data_type() == f.data_type() => {}
            Ok(t) => {
                return Some(format!(
                    "column {}: expected {}, found {}",
                    f.name(),
                    t.data_type(),
                    f.data_type()
                ));
            }
            Err(_) => {
                return Some(format!(
                    "column {}: expected a column of the table, found one it does not have",
                    f.name()
                ));
            }
        }
    }
    None
}

/// Files and rows of one table, from its log alone (no file is opened).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Census {
    /// Table.
    pub table: String,
    /// Version read.
    pub version: u64,
    /// Active files.
    pub files: u64,
    /// Rows (add actions' statistics).
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
    /// Median rows per file.
    pub median_rows: u64,
    /// Lake partitions (distinct partition values).
    pub partitions: u64,
}

/// [`Census`] of every table in `zone` (`pseudonymized`, or
/// `anonymized/<release_id>`).
pub async fn census(lake: &Lake, zone: &str) -> Result<Vec<Census>, LakeError> {
    let mut out = Vec::new();
    for name in tables_in(lake, zone).await? {
        let table = lake.table(&format!("{zone}/{name}"));
        let Some(snap) = table.load().await? else {
            continue;
        };
        let files = table.files(&snap).await?;
        let cols = snap.partition_columns();
        let mut rows: Vec<u64> = files.iter().map(|f| f.rows.unwrap_or(0)).collect();
        rows.sort_unstable();
        let keys: std::collections::BTreeSet<String> = files.iter().map(|f| f.key(&cols)).collect();
        out.push(Census {
            table: name,
            version: snap.version(),
            files: files.len() as u64,
            rows: rows.iter().sum(),
            bytes: files.iter().map(|f| f.size).sum(),
            median_rows: rows.get(rows.len() / 2).copied().unwrap_or(0),
            partitions: keys.len() as u64,
        });
    }
    Ok(out)
}
