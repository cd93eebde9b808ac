//! `chitose sink`: the Kafka shell around [`crate::core`].
//!
//! Per Kafka partition of a pseudo topic the ledger holds `next_offset`,
//! the committed files at or above it (`landed`), and the source
//! watermarks as of `next_offset`. On assignment the sink claims the
//! partition (a commit record at the next sequence number, create-only),
//! deletes files of flushes that never committed (their intents), and
//! seeks to `next_offset`; Kafka's committed offsets are only advisory.
//!
//! Rows are skipped when the offset lies in a committed file of the same
//! lake partition (re-read after a crash), when their source coordinates
//! are at or below the watermark (a transform replay), or when their event
//! id appeared within the last `dedupe_window_records` offsets of the
//! partition (a client's retry; [`crate::dedupe`]). Files roll by rows,
//! bytes and age; each close is one commit.

use crate::config::SinkConfig;
use crate::core::{self, Chunk, CoreError, Schemas};
use crate::lake::{Commit, Lake, LakeError, Landed};
use crate::metrics::SinkMetrics;
use crate::writer::{FileWriter, properties};
use chitose_runtime::ops::{self, Readiness};
use chitose_runtime::shutdown::Shutdown;
use chitose_schemas::catalog::SchemaStore;
use object_store::path::Path;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] chitose_runtime::config::ConfigError),
    /// Extra schemas do not load.
    #[error(transparent)]
    Schemas(#[from] chitose_schemas::catalog::SchemaError),
    /// The lake cannot be opened or written.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// Kafka client setup failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The ops address does not parse or bind.
    #[error("ops_listen: {0}")]
    Listen(String),
}

/// Counts of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Rows in committed files.
    pub rows: u64,
    /// Committed files.
    pub files: u64,
    /// Rows skipped as replays or already landed.
    pub skipped: u64,
}

enum Event {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

#[derive(Clone)]
struct Ctx(Arc<Mutex<Vec<Event>>>, chitose_runtime::lag::LagGauges);

impl ClientContext for Ctx {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.1.observe(&statistics);
    }
}

fn parts(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            self.0
                .lock()
                .expect("not poisoned")
                .push(Event::Revoked(parts(tpl)));
        }
    }
    fn post_rebalance(&self, c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            // Nothing is read from a partition before its ledger is recovered.
            let _ = c.pause(tpl);
            self.0
                .lock()
                .expect("not poisoned")
                .push(Event::Assigned(parts(tpl)));
        }
    }
}

struct OpenFile {
    writer: FileWriter,
    path: Path,
    intent: Path,
    fingerprint: u64,
    first: i64,
    last: i64,
    opened: Instant,
}

struct Part {
    table: String,
    partition: i32,
    epoch: u64,
    seq: u64,
    next_offset: i64,
    position: i64,
    landed: Vec<Landed>,
    wm_base: BTreeMap<String, i64>,
    wm_live: BTreeMap<String, i64>,
    wm_log: VecDeque<(i64, String, i64)>,
    open: BTreeMap<String, OpenFile>,
    paused: Option<String>,
    last_commit: Instant,
    /// Event ids of the last `dedupe_window_records` offsets.
    window: crate::dedupe::Window,
    /// The next offset the window expects (offsets feed it in order).
    window_next: i64,
}

/// The sink.
pub struct Sink {
    cfg: SinkConfig,
    lake: Lake,
    schemas: Schemas,
    metrics: SinkMetrics,
    owner: String,
    parts: BTreeMap<(String, i32), Part>,
    /// Reused across batches (building one sets up every table schema);
    /// dropped after a decode error, whose state it may keep.
    decoder: Option<arrow_avro::reader::Decoder>,
    summary: RunSummary,
}

fn table_of_topic(topic: &str) -> String {
    topic.rsplit('.').next().unwrap_or(topic).to_owned()
}

impl Sink {
    /// Opens the lake and loads the table schemas.
    pub fn new(cfg: SinkConfig, metrics: SinkMetrics) -> Result<Self, ServiceError> {
        cfg.validate()?;
        let mut store = SchemaStore::embedded();
        if let Some(dir) = &cfg.schemas_dir {
            store.add_dir(dir)?;
        }
        let lake = Lake::open(&cfg.lake, &cfg.lake_options)?;
        Ok(Sink {
            owner: format!("{}@{}", cfg.instance_id, uuid::Uuid::new_v4().simple()),
            schemas: Schemas::new(&store),
            cfg,
            lake,
            metrics,
            parts: BTreeMap::new(),
            decoder: None,
            summary: RunSummary::default(),
        })
    }

    /// Claims a partition: reads its ledger, writes a claim, removes files of
    /// flushes that never committed. Returns the offset to read from.
    async fn recover(&mut self, topic: &str, partition: i32, low: i64) -> Result<i64, LakeError> {
        let table = table_of_topic(topic);
        let mut attempt = 0;
        let (claim, latest) = loop {
            let latest = self.lake.latest(&table, partition).await?;
            let seq = latest.as_ref().map_or(0, |c| c.seq + 1);
            let claim = Commit {
                seq,
                kind: "claim".into(),
                owner: self.owner.clone(),
                epoch: seq,
                next_offset: latest.as_ref().map_or(low, |c| c.next_offset.max(low)),
                landed: latest.as_ref().map_or_else(Vec::new, |c| c.landed.clone()),
                watermarks: latest
                    .as_ref()
                    .map_or_else(BTreeMap::new, |c| c.watermarks.clone()),
                files: Vec::new(),
                at_ms: chrono::Utc::now().timestamp_millis(),
            };
            match self.lake.commit(&table, partition, &claim).await {
                Ok(()) => break (claim, latest),
                Err(LakeError::Fenced { .. }) if attempt < 20 => {
                    // Another instance claimed it in between (a rebalance
                    // in flight): read again.
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        };
        // Files of flushes that never committed: the claim fenced their
        // writer, so they can go.
        let committed: std::collections::HashSet<String> = match &latest {
            Some(_) => self
                .lake
                .commits(&table, partition)
                .await?
                .into_iter()
                .flat_map(|c| c.files.into_iter().map(|f| f.path))
                .collect(),
            None => Default::default(),
        };
        for (intent, file) in self.lake.intents(&table, partition).await? {
            if !committed.contains(&file) {
                tracing::info!(%table, partition, file, "deleting a file of a flush that never committed");
                self.lake.delete(&Path::from(file.as_str())).await?;
            }
            self.lake.delete(&intent).await?;
        }
        // Read back the window before next_offset (event ids only), so a
        // restarted sink drops the same duplicates one run would have.
        let window = crate::dedupe::Window::new(self.cfg.dedupe_window_records);
        let start = window.rebuild_from(claim.next_offset, low);
        self.parts.insert(
            (topic.to_owned(), partition),
            Part {
                table,
                partition,
                epoch: claim.epoch,
                seq: claim.seq,
                next_offset: claim.next_offset,
                position: claim.next_offset,
                landed: claim.landed,
                wm_live: claim.watermarks.clone(),
                wm_base: claim.watermarks,
                wm_log: VecDeque::new(),
                open: BTreeMap::new(),
                paused: None,
                last_commit: Instant::now(),
                window,
                window_next: start,
            },
        );
        Ok(start)
    }

    /// Drops a partition's open files (not committed: the next owner reads
    /// their records again).
    async fn abandon(&mut self, key: &(String, i32)) {
        if let Some(mut p) = self.parts.remove(key) {
            for (_, f) in std::mem::take(&mut p.open) {
                drop(f.writer);
                let _ = self.lake.delete(&f.path).await;
                let _ = self.lake.delete(&f.intent).await;
            }
            self.metrics.clear_paused();
        }
        self.metrics.open_writers.set(self.open_count() as i64);
    }

    fn open_count(&self) -> usize {
        self.parts.values().map(|p| p.open.len()).sum()
    }

    /// Asks the registry (when configured) which schema each new Confluent
    /// id stands for; ids of schemas the sink knows are mapped to their
    /// fingerprints.
    async fn resolve_confluent_ids(&mut self, input: &[(i64, &[u8])]) {
        use chitose_schemas::registry::SchemaRegistry;
        let Some(url) = self.cfg.registry_url.clone() else {
            return;
        };
        let ids: std::collections::BTreeSet<u32> = input
            .iter()
            .filter_map(|(_, m)| core::confluent_id(m))
            .filter(|id| !self.schemas.knows_confluent_id(*id))
            .collect();
        if ids.is_empty() {
            return;
        }
        let registry = chitose_runtime::registry::HttpRegistry::new(url);
        for id in ids {
            match registry.schema_by_id(id).await {
                Ok(text) => {
                    let mut probe = SchemaStore::default();
                    match probe.add(&format!("registry/{id}.avsc"), &text) {
                        Ok(entry) if self.schemas.name(entry.fingerprint).is_some() => {
                            self.schemas.add_confluent_id(id, entry.fingerprint);
                        }
                        Ok(_) => tracing::warn!(
                            id,
                            "registry schema is not one of the sink's table schemas"
                        ),
                        Err(e) => tracing::warn!(id, error = %e, "registry schema does not parse"),
                    }
                }
                Err(e) => tracing::warn!(id, error = %e, "schema registry lookup failed"),
            }
        }
    }

    /// Lands the rows of one polled batch of a partition.
    async fn land(
        &mut self,
        key: &(String, i32),
        msgs: &[OwnedMessage],
    ) -> Result<Option<(i64, String)>, LakeError> {
        let Some(p) = self.parts.get(key) else {
            return Ok(None);
        };
        if p.paused.is_some() {
            return Ok(None);
        }
        let position = p.position;
        // Records before the position are the window being read back.
        let p = self.parts.get_mut(key).expect("checked");
        for m in msgs.iter().filter(|m| m.offset() < position) {
            if m.offset() >= p.window_next
                && let Some(id) = m.payload().and_then(crate::dedupe::event_id_of)
            {
                p.window.see(m.offset(), id);
                p.window_next = m.offset() + 1;
            }
        }
        let input: Vec<(i64, &[u8])> = msgs
            .iter()
            .filter(|m| m.offset() >= position)
            .map(|m| (m.offset(), m.payload().unwrap_or(&[])))
            .collect();
        if input.is_empty() {
            return Ok(None);
        }
        self.resolve_confluent_ids(&input).await;
        let mut decoder = self
            .decoder
            .take()
            .unwrap_or_else(|| self.schemas.decoder(self.cfg.batch_max_records.max(1)));
        let (chunks, err) = core::decode(&self.schemas, &mut decoder, &input);
        if err.is_none() {
            self.decoder = Some(decoder);
        }
        for chunk in &chunks {
            self.land_chunk(key, chunk).await?;
        }
        let p = self.parts.get_mut(key).expect("checked");
        match err {
            None => {
                p.position = input.last().expect("non-empty").0 + 1;
                Ok(None)
            }
            Some(e) => {
                let at = match &e {
                    CoreError::Framing { offset, .. }
                    | CoreError::UnknownSchemaId { offset, .. }
                    | CoreError::UnknownSchema { offset, .. }
                    | CoreError::Decode { offset, .. }
                    | CoreError::Partition { offset, .. } => *offset,
                    CoreError::Incompatible { .. } => input
                        .iter()
                        .find(|(_, m)| {
                            core::fingerprint(m, 0)
                                .ok()
                                .and_then(|fp| self.schemas.check(fp, 0).err())
                                .is_some()
                        })
                        .map_or(p.position, |(o, _)| *o),
                };
                p.position = at;
                let reason = match e {
                    CoreError::UnknownSchema { .. } | CoreError::UnknownSchemaId { .. } => {
                        "unknown_schema"
                    }
                    CoreError::Incompatible { .. } => "incompatible_schema",
                    CoreError::Partition { .. } => "partition_column",
                    _ => "undecodable",
                };
                p.paused = Some(reason.to_owned());
                self.metrics
                    .paused
                    .with_label_values(&[&p.table, reason])
                    .set(1);
                tracing::error!(table = %p.table, partition = p.partition, offset = at, error = %e,
                    "partition paused: this record cannot be landed; nothing after it is read until the cause is fixed and the sink restarted");
                Ok(Some((at, reason.to_owned())))
            }
        }
    }

    async fn land_chunk(&mut self, key: &(String, i32), chunk: &Chunk) -> Result<(), LakeError> {
        let keys = match core::partition_keys(chunk, &self.cfg.partition_columns) {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "row without its partition columns");
                return Ok(());
            }
        };
        let coords = core::source_coordinates(chunk);
        let ids = chunk.batch.column_by_name("event_id").and_then(|c| {
            c.as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .cloned()
        });
        let p = self.parts.get_mut(key).expect("caller checked");
        let mut keep = vec![true; keys.len()];
        let (mut replays, mut landed, mut duplicates) = (0u64, 0u64, 0u64);
        for i in 0..keys.len() {
            let o = chunk.offsets[i];
            // Every row enters the window, whatever happens to it below.
            let duplicate = match &ids {
                Some(ids) if o >= p.window_next && !arrow_array::Array::is_null(ids, i) => {
                    p.window_next = o + 1;
                    p.window.see(o, ids.value(i))
                }
                _ => false,
            };
            let already = p
                .landed
                .iter()
                .any(|l| l.key == keys[i] && l.first <= o && o <= l.last);
            if let Some(c) = &coords {
                let (src, so) = (&c[i].0, c[i].1);
                let wm = p.wm_live.get(src).copied().unwrap_or(-1);
                if so <= wm && !already {
                    keep[i] = false;
                    replays += 1;
                    continue;
                }
                if so > wm {
                    p.wm_live.insert(src.clone(), so);
                    p.wm_log.push_back((o, src.clone(), so));
                }
            }
            if already {
                keep[i] = false;
                landed += 1;
            } else if duplicate {
                keep[i] = false;
                duplicates += 1;
            }
        }
        if duplicates > 0 {
            self.metrics
                .skipped
                .with_label_values(&[&p.table, "duplicate_event_id"])
                .inc_by(duplicates);
        }
        if replays > 0 {
            self.metrics
                .skipped
                .with_label_values(&[&p.table, "replay"])
                .inc_by(replays);
        }
        if landed > 0 {
            self.metrics
                .skipped
                .with_label_values(&[&p.table, "landed"])
                .inc_by(landed);
        }
        self.summary.skipped += replays + landed + duplicates;
        for (pkey, batch, offsets) in core::split(chunk, &keys, &keep) {
            // A new schema version starts a new file.
            let p = self.parts.get_mut(key).expect("caller checked");
            if p.open
                .get(&pkey)
                .is_some_and(|f| f.fingerprint != chunk.fingerprint)
            {
                self.close_files(key, std::slice::from_ref(&pkey)).await?;
            }
            if !self.parts[key].open.contains_key(&pkey)
                && self.open_count() >= self.cfg.max_open_writers
            {
                // At the bound: the oldest file closes before a new one opens.
                self.close_oldest().await?;
            }
            let p = self.parts.get_mut(key).expect("caller checked");
            if !p.open.contains_key(&pkey) {
                let first = offsets[0];
                let path = self
                    .lake
                    .data_file(&p.table, &pkey, p.partition, first, p.epoch);
                let intent = self
                    .lake
                    .intend(&p.table, p.partition, p.epoch, first, &path)
                    .await?;
                let writer = FileWriter::create(
                    self.lake.store.clone(),
                    path.clone(),
                    batch.schema(),
                    properties(self.cfg.row_group_rows, "chitose-sink"),
                    self.cfg.upload_part_bytes,
                )
                .map_err(|e| LakeError::Config(format!("parquet writer: {e}")))?;
                p.open.insert(
                    pkey.clone(),
                    OpenFile {
                        writer,
                        path,
                        intent,
                        fingerprint: chunk.fingerprint,
                        first,
                        last: first,
                        opened: Instant::now(),
                    },
                );
            }
            let f = p.open.get_mut(&pkey).expect("just opened");
            f.writer
                .write(&batch)
                .await
                .map_err(|e| LakeError::Config(format!("writing {}: {e}", f.path)))?;
            f.last = *offsets.last().expect("non-empty group");
            if f.writer.buffered() >= self.cfg.row_group_bytes {
                f.writer
                    .flush_row_group()
                    .await
                    .map_err(|e| LakeError::Config(format!("writing {}: {e}", f.path)))?;
            }
        }
        self.metrics.open_writers.set(self.open_count() as i64);
        Ok(())
    }

    /// Closes the file opened longest ago, in whichever partition.
    async fn close_oldest(&mut self) -> Result<(), LakeError> {
        let oldest = self
            .parts
            .iter()
            .flat_map(|(pk, p)| {
                p.open
                    .iter()
                    .map(move |(k, f)| (f.opened, pk.clone(), k.clone()))
            })
            .min();
        if let Some((_, pk, k)) = oldest {
            self.close_files(&pk, &[k]).await?;
        }
        Ok(())
    }

    /// Closes the named files of a partition and commits them.
    async fn close_files(
        &mut self,
        key: &(String, i32),
        which: &[String],
    ) -> Result<(), LakeError> {
        let started = Instant::now();
        let p = self.parts.get_mut(key).expect("caller checked");
        let mut closed = Vec::new();
        for k in which {
            if let Some(f) = p.open.remove(k) {
                let rows = f.writer.rows();
                let bytes = f
                    .writer
                    .close()
                    .await
                    .map_err(|e| LakeError::Config(format!("closing {}: {e}", f.path)))?;
                closed.push((
                    Landed {
                        key: k.clone(),
                        path: f.path.to_string(),
                        first: f.first,
                        last: f.last,
                        rows,
                        bytes,
                    },
                    f.intent,
                ));
            }
        }
        self.commit(key, closed).await?;
        self.metrics.flush.observe(started.elapsed().as_secs_f64());
        self.metrics.open_writers.set(self.open_count() as i64);
        Ok(())
    }

    /// Writes the next commit record of a partition.
    async fn commit(
        &mut self,
        key: &(String, i32),
        closed: Vec<(Landed, Path)>,
    ) -> Result<(), LakeError> {
        let p = self.parts.get_mut(key).expect("caller checked");
        let next = p
            .open
            .values()
            .map(|f| f.first)
            .min()
            .unwrap_or(p.position)
            .min(p.position);
        let mut landed: Vec<Landed> = p
            .landed
            .iter()
            .cloned()
            .chain(closed.iter().map(|(l, _)| l.clone()))
            .collect();
        landed.retain(|l| l.last >= next);
        let mut base = p.wm_base.clone();
        let mut log = p.wm_log.clone();
        while log.front().is_some_and(|(o, _, _)| *o < next) {
            let (_, src, so) = log.pop_front().expect("checked");
            let e = base.entry(src).or_insert(so);
            *e = (*e).max(so);
        }
        let c = Commit {
            seq: p.seq + 1,
            kind: "flush".into(),
            owner: self.owner.clone(),
            epoch: p.epoch,
            next_offset: next,
            landed: landed.clone(),
            watermarks: base.clone(),
            files: closed.iter().map(|(l, _)| l.clone()).collect(),
            at_ms: chrono::Utc::now().timestamp_millis(),
        };
        let (table, partition) = (p.table.clone(), p.partition);
        if let Err(e) = self.lake.commit(&table, partition, &c).await {
            // Not committed: these files do not count. Delete them; the
            // records are read again by whoever owns the partition.
            for (l, intent) in &closed {
                let _ = self.lake.delete(&Path::from(l.path.as_str())).await;
                let _ = self.lake.delete(intent).await;
            }
            return Err(e);
        }
        let p = self.parts.get_mut(key).expect("caller checked");
        p.seq = c.seq;
        p.next_offset = next;
        p.landed = landed;
        p.wm_base = base;
        p.wm_log = log;
        p.last_commit = Instant::now();
        for (l, intent) in closed {
            self.metrics
                .rows
                .with_label_values(&[&table])
                .inc_by(l.rows);
            self.metrics
                .bytes
                .with_label_values(&[&table])
                .inc_by(l.bytes);
            self.metrics.files.with_label_values(&[&table]).inc();
            self.summary.rows += l.rows;
            self.summary.files += 1;
            let _ = self.lake.delete(&intent).await;
        }
        Ok(())
    }

    /// Closes files over the row, byte or age limit, then the oldest while
    /// over the open-writer bound, and writes row groups early while over
    /// the memory bound.
    async fn roll(&mut self, all: bool) -> Vec<((String, i32), LakeError)> {
        let mut failed = Vec::new();
        let age = Duration::from_millis(self.cfg.roll_age_ms);
        let keys: Vec<(String, i32)> = self.parts.keys().cloned().collect();
        for key in keys {
            let p = &self.parts[&key];
            let due: Vec<String> = p
                .open
                .iter()
                .filter(|(_, f)| {
                    all || f.writer.rows() >= self.cfg.roll_rows
                        || f.writer.size() >= self.cfg.roll_bytes
                        || f.opened.elapsed() >= age
                })
                .map(|(k, _)| k.clone())
                .collect();
            let idle_advance = p.open.is_empty()
                && p.position > p.next_offset
                && (all || p.last_commit.elapsed() >= age);
            let r = if !due.is_empty() {
                self.close_files(&key, &due).await
            } else if idle_advance {
                // Everything read was skipped or landed: move next_offset on.
                self.commit(&key, Vec::new()).await
            } else {
                Ok(())
            };
            if let Err(e) = r {
                failed.push((key, e));
            }
        }
        while self.open_count() > self.cfg.max_open_writers {
            let Some((key, k)) = self
                .parts
                .iter()
                .flat_map(|(pk, p)| {
                    p.open
                        .iter()
                        .map(move |(k, f)| (f.opened, pk.clone(), k.clone()))
                })
                .min()
                .map(|(_, pk, k)| (pk, k))
            else {
                break;
            };
            if let Err(e) = self.close_files(&key, &[k]).await {
                failed.push((key, e));
                break;
            }
        }
        let mut buffered: usize = self
            .parts
            .values()
            .flat_map(|p| p.open.values())
            .map(|f| f.writer.buffered())
            .sum();
        while buffered > self.cfg.max_buffered_bytes {
            let Some(f) = self
                .parts
                .values_mut()
                .flat_map(|p| p.open.values_mut())
                .max_by_key(|f| f.writer.buffered())
            else {
                break;
            };
            let before = f.writer.buffered();
            if before == 0 || f.writer.flush_row_group().await.is_err() {
                break;
            }
            buffered -= before;
        }
        let oldest = self
            .parts
            .values()
            .flat_map(|p| p.open.values())
            .map(|f| f.opened.elapsed().as_secs())
            .max()
            .unwrap_or(0);
        self.metrics.oldest_unflushed.set(oldest as i64);
        failed
    }
}

/// Runs until `shutdown` fires: closes and commits every open file first.
pub async fn run(cfg: SinkConfig, shutdown: Shutdown) -> Result<RunSummary, ServiceError> {
    run_with(cfg, SinkMetrics::new(), shutdown).await
}

/// As [`run`], counting into `metrics` (which the caller can read live).
pub async fn run_with(
    cfg: SinkConfig,
    metrics: SinkMetrics,
    mut shutdown: Shutdown,
) -> Result<RunSummary, ServiceError> {
    let mut sink = Sink::new(cfg.clone(), metrics.clone())?;
    let ready = Readiness::default();
    let addr = cfg.ops_listen.parse().map_err(|e| {
        ServiceError::Listen(format!(
            "expected host:port, found {:?} ({e})",
            cfg.ops_listen
        ))
    })?;
    let ops_addr = ops::serve(addr, metrics.registry.clone(), ready.clone())
        .await
        .map_err(|e| ServiceError::Listen(e.to_string()))?;
    tracing::info!(%ops_addr, lake = %cfg.lake, "sink: ops endpoint /metrics /healthz /readyz");
    let ctx = Ctx(Arc::default(), metrics.lag.clone());
    let mut cc = cfg.kafka.consumer_config(&cfg.group_id);
    cc.set(
        "statistics.interval.ms",
        chitose_runtime::lag::STATS_INTERVAL_MS,
    );
    let consumer: StreamConsumer<Ctx> = cc.create_with_context(ctx.clone())?;
    consumer.subscribe(&[&cfg.input_pattern])?;
    // The log start offset does not depend on isolation; asking with
    // read_uncommitted keeps a broker from holding the request until open
    // transactions settle (nisshi did, ~1 s per partition).
    let watermarks: BaseConsumer = cfg
        .kafka
        .consumer_config(&format!("{}-watermarks", cfg.group_id))
        .set("isolation.level", "read_uncommitted")
        .create()?;
    ready.set(true);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        // Rebalance events first: revoked partitions drop their open files,
        // assigned ones are recovered from the ledger before any read.
        let events: Vec<Event> = std::mem::take(&mut *ctx.0.lock().expect("not poisoned"));
        for ev in events {
            match ev {
                Event::Revoked(ps) => {
                    for tp in ps {
                        sink.abandon(&tp).await;
                    }
                }
                Event::Assigned(ps) => {
                    for key in ps {
                        recover_and_seek(&mut sink, &consumer, &watermarks, &key).await;
                    }
                }
            }
        }
        let mut batch: BTreeMap<(String, i32), Vec<OwnedMessage>> = BTreeMap::new();
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_millis(cfg.batch_max_ms);
        let stop = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = shutdown.wait() => break true,
                _ = tick.tick() => break false,
                r = tokio::time::timeout(left.max(Duration::from_millis(1)), consumer.recv()) => match r {
                    Ok(Ok(m)) => {
                        metrics.lag.saw(m.topic(), m.partition(), m.timestamp().to_millis());
                        batch.entry((m.topic().to_owned(), m.partition())).or_default().push(m.detach());
                        n += 1;
                        if n >= cfg.batch_max_records || !ctx.0.lock().expect("not poisoned").is_empty() {
                            break false;
                        }
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "consumer"),
                    Err(_) => break false,
                },
            }
        };
        for (key, msgs) in batch {
            match sink.land(&key, &msgs).await {
                Ok(Some((at, _))) => {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(&key.0, key.1);
                    let _ = consumer.pause(&tpl);
                    tracing::warn!(topic = %key.0, partition = key.1, at, "paused");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(topic = %key.0, partition = key.1, error = %e, "landing failed; re-reading the partition from its ledger");
                    reset(&mut sink, &consumer, &watermarks, &key).await;
                }
            }
        }
        for (key, e) in sink.roll(stop).await {
            tracing::error!(topic = %key.0, partition = key.1, error = %e, "commit failed; re-reading the partition from its ledger");
            reset(&mut sink, &consumer, &watermarks, &key).await;
        }
        // Kafka offsets follow the ledger (advisory: tools show lag from them).
        let mut tpl = TopicPartitionList::new();
        for (key, p) in &sink.parts {
            if p.next_offset > 0 {
                let _ = tpl.add_partition_offset(&key.0, key.1, Offset::Offset(p.next_offset));
            }
        }
        if tpl.count() > 0 {
            let _ = consumer.commit(&tpl, CommitMode::Async);
        }
        if stop {
            break;
        }
    }
    tracing::info!(summary = ?sink.summary, "sink stopping");
    ready.set(false);
    Ok(sink.summary)
}

/// After a failed write or commit: drop the partition's state and recover
/// it from the ledger again (a fenced writer finds the new owner's claim
/// and stays paused until the group moves the partition).
async fn reset(
    sink: &mut Sink,
    consumer: &StreamConsumer<Ctx>,
    watermarks: &BaseConsumer,
    key: &(String, i32),
) {
    sink.abandon(key).await;
    recover_and_seek(sink, consumer, watermarks, key).await;
}

/// Recovers a partition from the ledger, seeks to its `next_offset` and
/// resumes it; on failure it stays paused (the group hands it to a healthier
/// instance, or this one retries after the next rebalance).
async fn recover_and_seek(
    sink: &mut Sink,
    consumer: &StreamConsumer<Ctx>,
    watermarks: &BaseConsumer,
    key: &(String, i32),
) {
    let (topic, partition) = (&key.0, key.1);
    let low = watermarks
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map(|(l, _)| l)
        .unwrap_or(0);
    let mut tpl = TopicPartitionList::new();
    match sink.recover(topic, partition, low).await {
        Ok(start) => {
            let seek = tpl
                .add_partition_offset(topic, partition, Offset::Offset(start))
                .and_then(|()| {
                    consumer
                        .seek_partitions(tpl.clone(), Duration::from_secs(10))
                        .map(|_| ())
                })
                .and_then(|()| consumer.resume(&tpl));
            match seek {
                Ok(()) => {
                    tracing::info!(%topic, partition, start, "partition recovered from the ledger")
                }
                Err(e) => {
                    tracing::error!(%topic, partition, error = %e, "seek after recovery failed")
                }
            }
        }
        Err(e) => {
            tracing::error!(%topic, partition, error = %e, "recovery failed; the partition stays paused");
            tpl.add_partition(topic, partition);
            let _ = consumer.pause(&tpl);
        }
    }
}
