//! One Delta table: create, read a snapshot, write files, commit.
//!
//! Built on delta-kernel-rs (`delta_kernel` + its default engine, on the
//! workspace's arrow/parquet/object_store line; docs/design.md says why not
//! the `deltalake` crate). The kernel is synchronous: every call runs on
//! tokio's blocking pool, and the engine's own I/O on a small runtime of
//! its own, so neither a service's loop nor a current-thread test runtime
//! is blocked or re-entered.
//!
//! Commits are create-only writes of `_delta_log/<version>.json`
//! (If-None-Match on S3): whoever writes version N+1 first wins. A commit
//! that loses is re-read, never blindly retried: [`Table::commit`] checks
//! the `txn` versions and removed files it was built on against the newer
//! snapshot, and retries only when nothing it depends on moved.

use crate::{Lake, LakeError};
use arrow_array::{RecordBatch, StructArray};
use arrow_schema::SchemaRef;
use delta_kernel::committer::FileSystemCommitter;
use delta_kernel::engine::arrow_conversion::{TryFromArrow, TryIntoArrow};
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::expressions::Scalar;
use delta_kernel::schema::{StructField, StructType};
use delta_kernel::transaction::create_table::create_table;
use delta_kernel::transaction::data_layout::DataLayout;
use delta_kernel::transaction::{CommitResult, UpdateTableOperation};
use delta_kernel::{FileMeta, Snapshot, SnapshotRef};
use delta_kernel_default_engine::executor::tokio::TokioMultiThreadExecutor;
use delta_kernel_default_engine::{DefaultEngine, parquet::DataFileMetadata};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

pub use delta_kernel::transaction::UpdateTableOperation as Operation;

/// The engine delta-kernel reads and writes the log with.
pub type Engine = DefaultEngine<TokioMultiThreadExecutor>;

/// Who wrote a commit (`engineInfo`).
pub const ENGINE_INFO: &str = concat!("chitose/", env!("CARGO_PKG_VERSION"));

/// How many times a commit is rebuilt on a newer snapshot before giving up.
const COMMIT_ATTEMPTS: usize = 50;

pub(crate) fn engine(store: Arc<dyn ObjectStore>) -> Arc<Engine> {
    // One small runtime for every table's I/O, made on first use.
    static EXEC: OnceLock<Arc<TokioMultiThreadExecutor>> = OnceLock::new();
    let exec = EXEC
        .get_or_init(|| {
            Arc::new(
                TokioMultiThreadExecutor::new_owned_runtime(Some(2), None)
                    .expect("a tokio runtime can be built"),
            )
        })
        .clone();
    Arc::new(
        DefaultEngine::builder(store)
            .with_task_executor(exec)
            .build(),
    )
}

/// A snapshot of a table at one version.
#[derive(Clone)]
pub struct Snap {
    inner: SnapshotRef,
}

impl std::fmt::Debug for Snap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snap")
            .field("version", &self.version())
            .finish()
    }
}

impl Snap {
    /// The table version.
    pub fn version(&self) -> u64 {
        self.inner.version()
    }

    /// The table's logical schema (partition columns included), in Arrow.
    pub fn schema(&self) -> Result<SchemaRef, LakeError> {
        let s: arrow_schema::Schema = self
            .inner
            .schema()
            .as_ref()
            .try_into_arrow()
            .map_err(|e| LakeError::Config(format!("table schema: {e}")))?;
        Ok(Arc::new(s))
    }

    /// The partition columns, in order.
    pub fn partition_columns(&self) -> Vec<String> {
        self.inner
            .table_configuration()
            .metadata()
            .partition_columns()
            .to_vec()
    }
}

/// An active data file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Path relative to the table root, as the log has it (URL-encoded).
    pub path: String,
    /// The object.
    pub object: Path,
    /// Bytes.
    pub size: u64,
    /// Rows (from the commit's statistics).
    pub rows: Option<u64>,
    /// Partition values (`None`: null).
    pub partition: BTreeMap<String, Option<String>>,
    /// When it was written, ms since the epoch.
    pub modified_ms: i64,
}

impl DataFile {
    /// `prefecture=27/event_month=2025-05`: the partition as a folder name
    /// (null as Hive writes it).
    pub fn key(&self, columns: &[String]) -> String {
        columns
            .iter()
            .map(|c| {
                let v = self.partition.get(c).cloned().flatten();
                format!(
                    "{c}={}",
                    v.as_deref().unwrap_or("__HIVE_DEFAULT_PARTITION__")
                )
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// A Parquet file written and waiting for its commit.
#[derive(Debug, Clone)]
pub struct Staged {
    meta: FileMeta,
    stats: StructArray,
    partition: HashMap<String, Scalar>,
    /// The object.
    pub object: Path,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
}

/// A `txn` action to commit: the app's new version, and the version the
/// writer read from (`None`: the app had none). The commit only goes in
/// while the table still has `expected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    /// App id (see [`crate::layout::app_id`]).
    pub app_id: String,
    /// The version the writer started from.
    pub expected: Option<i64>,
    /// The version this commit sets.
    pub version: i64,
}

/// How a commit ended.
#[derive(Debug)]
pub enum Outcome {
    /// In the log at this version.
    Committed(Snap),
    /// Another writer moved these app ids first: nothing was committed; the
    /// caller's rows for them are replays. The snapshot is the newer one.
    Lost {
        /// App ids whose version moved.
        app_ids: Vec<String>,
        /// Their versions now.
        now: Vec<Option<i64>>,
        /// The newer snapshot.
        snap: Snap,
    },
    /// Files this commit removes are gone already (another compaction).
    Stale(Snap),
}

/// One table of the lake.
#[derive(Clone, Debug)]
pub struct Table {
    lake: Lake,
    rel: String,
}

async fn blocking<T: Send + 'static>(
    table: &str,
    f: impl FnOnce() -> delta_kernel::KernelResult<T> + Send + 'static,
) -> Result<T, LakeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LakeError::Delta {
            table: table.to_owned(),
            message: format!("kernel task failed: {e}"),
        })?
        .map_err(|e| LakeError::Delta {
            table: table.to_owned(),
            message: e.to_string(),
        })
}

impl Table {
    pub(crate) fn new(lake: Lake, rel: &str) -> Table {
        Table {
            lake,
            rel: rel.trim_matches('/').to_owned(),
        }
    }

    /// The table's folder, lake-relative.
    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// The table root's URL (what a Delta reader is given).
    pub fn url(&self) -> url::Url {
        self.lake.url(&self.rel)
    }

    /// The lake.
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// Whether the table has a log.
    pub async fn exists(&self) -> Result<bool, LakeError> {
        let log = self.lake.path(&format!("{}/_delta_log", self.rel));
        let mut l = self.lake.store.list(Some(&log));
        Ok(l.try_next().await?.is_some())
    }

    /// The newest snapshot; `None` when there is no table.
    pub async fn load(&self) -> Result<Option<Snap>, LakeError> {
        if !self.exists().await? {
            return Ok(None);
        }
        let (engine, url) = (self.lake.engine(), self.url());
        let inner = blocking(&self.rel, move || {
            Snapshot::builder_for(url.as_str()).build(engine.as_ref())
        })
        .await?;
        Ok(Some(Snap { inner }))
    }

    /// The snapshot at `version`.
    pub async fn load_at(&self, version: u64) -> Result<Snap, LakeError> {
        let (engine, url) = (self.lake.engine(), self.url());
        let inner = blocking(&self.rel, move || {
            Snapshot::builder_for(url.as_str())
                .at_version(version)
                .build(engine.as_ref())
        })
        .await?;
        Ok(Snap { inner })
    }

    /// The newest snapshot, reading only the log after `snap`.
    pub async fn refresh(&self, snap: &Snap) -> Result<Snap, LakeError> {
        let (engine, old) = (self.lake.engine(), snap.inner.clone());
        let inner = blocking(&self.rel, move || {
            Snapshot::builder_from(old).build(engine.as_ref())
        })
        .await?;
        Ok(Snap { inner })
    }

    /// The table, made with `schema` and `partition_columns` when it does
    /// not exist yet; an existing table must have the same partition
    /// columns, and gains the columns of `schema` it lacks (nullable).
    pub async fn create_or_evolve(
        &self,
        schema: &SchemaRef,
        partition_columns: &[String],
    ) -> Result<Snap, LakeError> {
        for attempt in 0.. {
            let snap = match self.load().await? {
                Some(s) => s,
                None => {
                    // The kernel wants a local table's folder to exist.
                    if let Ok(dir) = self.url().to_file_path() {
                        std::fs::create_dir_all(&dir)
                            .map_err(|e| LakeError::Config(format!("{}: {e}", dir.display())))?;
                    }
                    let kschema =
                        Arc::new(StructType::try_from_arrow(schema.as_ref()).map_err(|e| {
                            LakeError::Config(format!("{}: schema: {e}", self.rel))
                        })?);
                    let (engine, url, cols) =
                        (self.lake.engine(), self.url(), partition_columns.to_vec());
                    let r = blocking(&self.rel, move || {
                        let mut b = create_table(url.as_str(), kschema, ENGINE_INFO, true);
                        if !cols.is_empty() {
                            b = b.with_data_layout(DataLayout::partitioned(cols));
                        }
                        b.build(engine.as_ref(), Box::new(FileSystemCommitter::new()))?
                            .commit(engine.as_ref())
                            .map(|r| r.is_committed())
                    })
                    .await;
                    match r {
                        Ok(true) => {}
                        // Another writer made it first: read theirs.
                        Ok(false) if attempt < 5 => {}
                        Ok(false) => {
                            return Err(LakeError::Delta {
                                table: self.rel.clone(),
                                message: "the table could not be created".into(),
                            });
                        }
                        Err(e) if attempt < 5 => {
                            tracing::debug!(table = %self.rel, error = %e, "create raced");
                        }
                        Err(e) => return Err(e),
                    }
                    continue;
                }
            };
            let have = snap.partition_columns();
            if have != partition_columns {
                return Err(LakeError::Config(format!(
                    "{}: expected partition columns {partition_columns:?}, found {have:?} in the table (a table's partitioning is fixed when it is made)",
                    self.rel
                )));
            }
            let current = snap.schema()?;
            let missing: Vec<StructField> = schema
                .fields()
                .iter()
                .filter(|f| current.field_with_name(f.name()).is_err())
                .map(|f| {
                    StructField::try_from_arrow(f.as_ref())
                        .map(|sf| StructField::nullable(sf.name().clone(), sf.data_type().clone()))
                })
                .collect::<Result<_, _>>()
                .map_err(|e| LakeError::Config(format!("{}: schema: {e}", self.rel)))?;
            if missing.is_empty() {
                return Ok(snap);
            }
            let (engine, inner) = (self.lake.engine(), snap.inner.clone());
            let names: Vec<String> = missing.iter().map(|f| f.name().clone()).collect();
            let done = blocking(&self.rel, move || {
                let mut b =
                    inner.update_table(UpdateTableOperation::AlterTable, ENGINE_INFO, false);
                for f in missing {
                    b = b.add_column(f);
                }
                b.build(engine.as_ref(), Box::new(FileSystemCommitter::new()))?
                    .commit(engine.as_ref())
                    .map(|r| r.is_committed())
            })
            .await?;
            if done {
                tracing::info!(table = %self.rel, columns = ?names, "table schema evolved");
            } else if attempt >= COMMIT_ATTEMPTS {
                return Err(LakeError::Delta {
                    table: self.rel.clone(),
                    message: "schema change kept losing to other commits".into(),
                });
            }
        }
        unreachable!("the loop returns")
    }

    /// Versions of `app_ids` in `snap` (`None`: never set).
    pub async fn app_versions(
        &self,
        snap: &Snap,
        app_ids: &[String],
    ) -> Result<Vec<Option<i64>>, LakeError> {
        let (engine, inner, ids) = (self.lake.engine(), snap.inner.clone(), app_ids.to_vec());
        blocking(&self.rel, move || {
            ids.iter()
                .map(|id| inner.get_app_id_version(id, engine.as_ref()))
                .collect()
        })
        .await
    }

    /// Every active data file of `snap`.
    pub async fn files(&self, snap: &Snap) -> Result<Vec<DataFile>, LakeError> {
        let (engine, inner) = (self.lake.engine(), snap.inner.clone());
        let raw = blocking(&self.rel, move || {
            let scan = inner.scan_builder().build()?;
            let mut out: Vec<delta_kernel::scan::state::ScanFile> = Vec::new();
            for m in scan.scan_metadata(engine.as_ref())? {
                out = m?.visit_scan_files(out, |acc, f| acc.push(f))?;
            }
            Ok(out)
        })
        .await?;
        let cols = snap.partition_columns();
        Ok(raw
            .into_iter()
            .map(|f| {
                let decoded = percent_decode(&f.path);
                DataFile {
                    object: self.lake.path(&format!("{}/{decoded}", self.rel)),
                    path: f.path,
                    size: f.size.max(0) as u64,
                    rows: f.stats.map(|s| s.num_records),
                    partition: cols
                        .iter()
                        .map(|c| (c.clone(), f.partition_values.get(c).cloned()))
                        .collect(),
                    modified_ms: f.modification_time,
                }
            })
            .collect())
    }

    /// Writes `batch` (the table's columns without the partition columns)
    /// as one Parquet file in `partition`'s folder. It counts once a
    /// commit names it.
    pub async fn write(
        &self,
        snap: &Snap,
        partition: &[(String, Option<String>)],
        batch: RecordBatch,
        props: parquet::file::properties::WriterProperties,
        part_bytes: usize,
    ) -> Result<Staged, LakeError> {
        let values: HashMap<String, Scalar> = partition
            .iter()
            .map(|(c, v)| {
                (
                    c.clone(),
                    match v {
                        Some(v) => Scalar::String(v.clone()),
                        None => Scalar::Null(delta_kernel::schema::DataType::STRING),
                    },
                )
            })
            .collect();
        let (engine, inner, pv) = (self.lake.engine(), snap.inner.clone(), values.clone());
        let wc = blocking(&self.rel, move || {
            let txn = inner
                .update_table(UpdateTableOperation::Write, ENGINE_INFO, true)
                .build(engine.as_ref(), Box::new(FileSystemCommitter::new()))?;
            let b = txn.write_state()?.write_context_builder();
            // An unpartitioned table (a release) takes no partition values.
            if pv.is_empty() {
                b
            } else {
                b.with_partition_values(pv)
            }
            .build()
        })
        .await?;
        let url = wc
            .write_dir()
            .join(&format!("part-{}.zstd.parquet", uuid::Uuid::new_v4()))
            .map_err(|e| LakeError::Config(format!("{}: {e}", self.rel)))?;
        let object = Path::from_url_path(url.path())
            .map_err(|e| LakeError::Config(format!("{}: {e}", url.path())))?;
        let stats = delta_kernel_default_engine::stats::collect_stats(
            &batch,
            wc.stats_columns(),
            wc.physical_data_schema(),
        )
        .map_err(|e| LakeError::Parquet {
            path: object.to_string(),
            message: format!("statistics: {e}"),
        })?;
        let rows = batch.num_rows() as u64;
        let mut w = crate::parquet::FileWriter::create(
            self.lake.store.clone(),
            object.clone(),
            batch.schema(),
            props,
            part_bytes,
        )
        .map_err(|e| LakeError::Parquet {
            path: object.to_string(),
            message: e.to_string(),
        })?;
        let perr = |e: parquet::errors::ParquetError| LakeError::Parquet {
            path: object.to_string(),
            message: e.to_string(),
        };
        w.write(&batch).await.map_err(perr)?;
        let bytes = w.close().await.map_err(perr)?;
        let meta = FileMeta::new(url, chrono::Utc::now().timestamp_millis(), bytes);
        Ok(Staged {
            meta,
            stats,
            partition: values,
            object,
            rows,
            bytes,
        })
    }

    /// Commits `adds` and `removes` (paths as [`DataFile::path`]) with
    /// `txns`, on `snap` or, after a conflict, on the newer snapshot when
    /// nothing it depends on moved. `data_change = false` marks a rewrite
    /// (compaction) that streaming readers skip.
    pub async fn commit(
        &self,
        snap: &Snap,
        adds: &[Staged],
        removes: &[String],
        txns: &[Txn],
        data_change: bool,
        operation: UpdateTableOperation,
    ) -> Result<Outcome, LakeError> {
        let mut snap = snap.clone();
        for attempt in 0..COMMIT_ATTEMPTS {
            if attempt > 0 {
                snap = self.refresh(&snap).await?;
            }
            // What the commit depends on must be as the writer saw it.
            let ids: Vec<String> = txns.iter().map(|t| t.app_id.clone()).collect();
            let now = if ids.is_empty() {
                Vec::new()
            } else {
                self.app_versions(&snap, &ids).await?
            };
            let moved: Vec<usize> = txns
                .iter()
                .zip(&now)
                .enumerate()
                .filter(|(_, (t, n))| t.expected != **n)
                .map(|(i, _)| i)
                .collect();
            if !moved.is_empty() {
                return Ok(Outcome::Lost {
                    app_ids: moved.iter().map(|i| txns[*i].app_id.clone()).collect(),
                    now: moved.iter().map(|i| now[*i]).collect(),
                    snap,
                });
            }
            let engine = self.lake.engine();
            let inner = snap.inner.clone();
            let adds = adds.to_vec();
            let removes: HashSet<String> = removes.iter().cloned().collect();
            let txns = txns.to_vec();
            let operation = operation.clone();
            let r = blocking(&self.rel, move || {
                let mut txn = inner
                    .clone()
                    .update_table(operation, ENGINE_INFO, data_change)
                    .build(engine.as_ref(), Box::new(FileSystemCommitter::new()))?;
                for t in &txns {
                    txn = txn.with_transaction_id(t.app_id.clone(), t.version);
                }
                if !removes.is_empty() {
                    let scan = inner.clone().scan_builder().build()?;
                    let mut found = 0;
                    for m in scan.scan_metadata(engine.as_ref())? {
                        let (data, sel) = m?.scan_files.into_parts();
                        let batch = ArrowEngineData::try_from_engine_data(data)?;
                        let rb = batch.record_batch();
                        let paths = rb
                            .column_by_name("path")
                            .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>())
                            .ok_or_else(|| {
                                delta_kernel::KernelError::generic(
                                    "scan files without a path column",
                                )
                            })?;
                        let sel: Vec<bool> = (0..rb.num_rows())
                            .map(|i| {
                                sel.get(i).copied().unwrap_or(true)
                                    && removes.contains(paths.value(i))
                            })
                            .collect();
                        found += sel.iter().filter(|s| **s).count();
                        txn.remove_files(delta_kernel::FilteredEngineData::try_new(
                            Box::new(ArrowEngineData::new(rb.clone())),
                            sel,
                        )?);
                    }
                    if found != removes.len() {
                        return Ok(None);
                    }
                }
                let wstate = txn.write_state()?;
                for a in &adds {
                    let b = wstate.write_context_builder();
                    let wc = if a.partition.is_empty() {
                        b
                    } else {
                        b.with_partition_values(a.partition.clone())
                    }
                    .build()?;
                    let md = delta_kernel_default_engine::build_add_file_metadata(
                        DataFileMetadata::new(a.meta.clone(), a.stats.clone()),
                        &wc,
                    )?;
                    txn.add_files(md);
                }
                Ok(Some(match txn.commit(engine.as_ref())? {
                    CommitResult::Committed(c) => c
                        .post_commit_snapshot()
                        .cloned()
                        .map(Ok)
                        .unwrap_or_else(|| {
                            Snapshot::builder_for(inner.table_root().as_str())
                                .build(engine.as_ref())
                        })
                        .map(Some)?,
                    _ => None,
                }))
            })
            .await?;
            match r {
                Some(Some(inner)) => return Ok(Outcome::Committed(Snap { inner })),
                // A file to remove is not active: compaction lost to another.
                None => return Ok(Outcome::Stale(snap)),
                // Another writer took the version: read again.
                Some(None) => continue,
            }
        }
        Err(LakeError::Delta {
            table: self.rel.clone(),
            message: format!("commit lost {COMMIT_ATTEMPTS} races in a row"),
        })
    }

    /// Writes a checkpoint of `snap` (readers then start there, not at
    /// version 0).
    pub async fn checkpoint(&self, snap: &Snap) -> Result<(), LakeError> {
        let (engine, inner) = (self.lake.engine(), snap.inner.clone());
        blocking(&self.rel, move || {
            inner.checkpoint(engine.as_ref(), None).map(|_| ())
        })
        .await
    }
}

/// `%3A` → `:` and so on: the log keeps paths URL-encoded.
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("prefecture", DataType::Utf8, true),
            Field::new("event_month", DataType::Utf8, true),
        ]))
    }

    fn rows(ids: &[&str]) -> RecordBatch {
        let s = Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            s,
            vec![
                Arc::new(StringArray::from(ids.to_vec())),
                Arc::new(Int64Array::from_iter_values(0..ids.len() as i64)),
            ],
        )
        .unwrap()
    }

    fn part(p: &str) -> Vec<(String, Option<String>)> {
        vec![
            ("prefecture".into(), Some(p.into())),
            ("event_month".into(), Some("2025-05".into())),
        ]
    }

    fn cols() -> Vec<String> {
        vec!["prefecture".into(), "event_month".into()]
    }

    fn props() -> parquet::file::properties::WriterProperties {
        crate::parquet::properties(1024, "test")
    }

    #[tokio::test]
    async fn a_commit_carries_files_and_txns_and_a_lost_race_is_detected() {
        let dir = std::env::temp_dir().join(format!("lake-{}", uuid::Uuid::new_v4()));
        let lake = Lake::open(dir.to_str().unwrap(), &BTreeMap::new()).unwrap();
        let t = lake.table("pseudonymized/t");
        let snap = t.create_or_evolve(&schema(), &cols()).await.unwrap();
        assert_eq!(snap.version(), 0);
        let a = t
            .write(&snap, &part("01"), rows(&["a", "b"]), props(), 1 << 20)
            .await
            .unwrap();
        let b = t
            .write(&snap, &part("27"), rows(&["c"]), props(), 1 << 20)
            .await
            .unwrap();
        let txn = |expected, version| Txn {
            app_id: "app".into(),
            expected,
            version,
        };
        let Outcome::Committed(s1) = t
            .commit(
                &snap,
                &[a, b],
                &[],
                &[txn(None, 3)],
                true,
                UpdateTableOperation::Write,
            )
            .await
            .unwrap()
        else {
            panic!("expected a commit")
        };
        assert_eq!(s1.version(), 1);
        assert_eq!(
            t.app_versions(&s1, &["app".into()]).await.unwrap(),
            vec![Some(3)]
        );
        let files = t.files(&s1).await.unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files.iter().map(|f| f.rows.unwrap()).sum::<u64>(), 3);
        assert!(
            files
                .iter()
                .any(|f| f.key(&cols()) == "prefecture=01/event_month=2025-05")
        );
        // A zombie that still believes the app is at None, built on the
        // old snapshot: its commit conflicts, is re-read, and is lost.
        let z = t
            .write(&snap, &part("01"), rows(&["a"]), props(), 1 << 20)
            .await
            .unwrap();
        match t
            .commit(
                &snap,
                &[z],
                &[],
                &[txn(None, 1)],
                true,
                UpdateTableOperation::Write,
            )
            .await
            .unwrap()
        {
            Outcome::Lost { app_ids, now, snap } => {
                assert_eq!(app_ids, vec!["app".to_string()]);
                assert_eq!(now, vec![Some(3)]);
                assert_eq!(snap.version(), 1);
            }
            other => panic!("expected a lost race, found {other:?}"),
        }
        // Another app's commit on the old snapshot is retried on the new one.
        let c = t
            .write(&snap, &part("13"), rows(&["d"]), props(), 1 << 20)
            .await
            .unwrap();
        let other = Txn {
            app_id: "other".into(),
            expected: None,
            version: 9,
        };
        let Outcome::Committed(s2) = t
            .commit(
                &snap,
                &[c],
                &[],
                &[other],
                true,
                UpdateTableOperation::Write,
            )
            .await
            .unwrap()
        else {
            panic!("expected a retried commit")
        };
        assert_eq!(s2.version(), 2);
        assert_eq!(t.files(&s2).await.unwrap().len(), 3);

        // Compaction: two small files of one partition become one.
        let d = t
            .write(&s2, &part("01"), rows(&["e"]), props(), 1 << 20)
            .await
            .unwrap();
        let Outcome::Committed(s3) = t
            .commit(&s2, &[d], &[], &[], true, UpdateTableOperation::Write)
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(t.files(&s3).await.unwrap().len(), 4);
        let done = crate::upkeep::compact(&t, Default::default(), props)
            .await
            .unwrap();
        assert_eq!((done.removed, done.added, done.rows), (2, 1, 3), "{done:?}");
        let s4 = t.load().await.unwrap().unwrap();
        let files = t.files(&s4).await.unwrap();
        assert_eq!(files.len(), 3);
        assert_eq!(files.iter().map(|f| f.rows.unwrap()).sum::<u64>(), 5);
        // The replaced files and the zombie's upload are unreferenced:
        // vacuum with no retention deletes exactly those three.
        let v = crate::upkeep::vacuum(&t, std::time::Duration::ZERO, false)
            .await
            .unwrap();
        assert_eq!(v.deleted.len(), 3, "{v:?}");
        t.checkpoint(&s4).await.unwrap();
        let s5 = t.load().await.unwrap().unwrap();
        assert_eq!(
            t.app_versions(&s5, &["app".into(), "other".into()])
                .await
                .unwrap(),
            vec![Some(3), Some(9)]
        );
        assert_eq!(t.files(&s5).await.unwrap().len(), 3);
        let _ = std::fs::remove_dir_all(dir);
    }
}
