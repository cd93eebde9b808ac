//! `chitose sink`: the Kafka shell around [`crate::core`], landing rows in
//! the lake's Delta tables.
//!
//! Records are kept as read (their Avro bytes, back to back, after a cheap
//! framing and schema check and the dedupe window) until a table holds
//! [`STAGE_BYTES`] of them or rolls; then all of them are decoded in one
//! pass and buffered per *lake* partition (table × prefecture × month)
//! across every Kafka partition this instance owns, in Arrow, each row
//! tagged with its Kafka partition. So a trickle pays the decode, the
//! conversion to the lake's shape and the split once per roll, not once
//! per poll (issue 17: a trickle of 8 hubs cost 13× the CPU per row of
//! catching up when each poll's handful of rows was decoded and split).
//! A table rolls when its oldest row is
//! `roll_age` old, a lake partition holds `roll_rows` or `roll_bytes`,
//! or the sink is over `max_buffered_bytes` (the table holding most rolls
//! first): one Parquet file per lake partition, one Delta commit per
//! table, carrying a `txn` per Kafka partition it read ([`crate::offsets`]).
//! Nothing else is kept: on assignment the sink reads the partition's
//! version from the table and seeks there (after re-reading the dedupe
//! window's event ids before it).
//!
//! Rows are skipped when their event id appeared within the last
//! `dedupe_window_records` offsets of the partition (a client's retry, or
//! a transform that ran without transactions and replayed;
//! [`crate::dedupe`]), and dropped as replays when another writer committed
//! their offsets first (a zombie finds this out at its next commit).

use crate::config::SinkConfig;
use crate::core::{self, Chunk, CoreError, PartKey, Schemas};
use crate::metrics::SinkMetrics;
use crate::offsets::{Due, Offsets};
use arrow_array::RecordBatch;
use chitose_lake::delta::{Outcome, Snap, Staged, Table, Txn};
use chitose_lake::{Lake, LakeError, layout};
use chitose_runtime::ops::{self, Readiness};
use chitose_runtime::shutdown::Shutdown;
use chitose_schemas::catalog::SchemaStore;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
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
    /// Rows skipped as duplicates or dropped as replays.
    pub skipped: u64,
    /// Delta commits.
    pub commits: u64,
}

enum Event {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

#[derive(Clone)]
struct Ctx(
    Arc<Mutex<Vec<Event>>>,
    chitose_runtime::client_stats::StatsContext,
);

impl ClientContext for Ctx {
    fn stats_raw(&self, raw: &[u8]) {
        self.1.report(raw);
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
            // Nothing is read from a partition before its version is read
            // from the table.
            let _ = c.pause(tpl);
            self.0
                .lock()
                .expect("not poisoned")
                .push(Event::Assigned(parts(tpl)));
        }
    }
}

/// A table's records are decoded once this many of their bytes wait (or
/// at its roll): ~25 000 records of the contract's size, so catching up
/// decodes in batches as large as the roll's, and the Arrow they become
/// is a few times this.
pub const STAGE_BYTES: usize = 8 * 1024 * 1024;

/// Rows per decoded chunk.
const STAGE_ROWS: usize = 64 * 1024;

/// Messages of one Kafka partition, payloads back to back: one growing
/// buffer per partition, not an owned message (topic, key, headers,
/// payload) per record.
#[derive(Default)]
struct Records {
    offsets: Vec<i64>,
    ends: Vec<usize>,
    data: Vec<u8>,
    /// The Kafka timestamp (ms) of the last record that had one.
    last_ts: Option<i64>,
    /// The records' Kafka timestamps in 100 ms steps, run-length: (step,
    /// records), for the freshness histogram.
    steps: Vec<(i64, u64)>,
}

impl Records {
    fn push(&mut self, offset: i64, payload: &[u8]) {
        self.data.extend_from_slice(payload);
        self.offsets.push(offset);
        self.ends.push(self.data.len());
    }

    fn iter(&self) -> impl Iterator<Item = (i64, &[u8])> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.offsets
            .iter()
            .zip(starts.zip(&self.ends))
            .map(|(o, (s, e))| (*o, &self.data[s..*e]))
    }

    fn len(&self) -> usize {
        self.offsets.len()
    }

    fn saw_timestamp(&mut self, ms: Option<i64>) {
        let Some(ms) = ms else {
            return;
        };
        self.last_ts = Some(ms);
        let step = ms.div_euclid(FRESHNESS_STEP_MS);
        match self.steps.last_mut() {
            Some((s, n)) if *s == step => *n += 1,
            _ => self.steps.push((step, 1)),
        }
    }
}

/// Observes, per record read, the seconds from its step's middle to now.
fn observe_freshness(h: &prometheus::Histogram, arrived: BTreeMap<i64, u64>) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for (step, n) in arrived {
        let ms = now_ms - step * FRESHNESS_STEP_MS - FRESHNESS_STEP_MS / 2;
        let age = (ms as f64 / 1000.0).max(0.0);
        for _ in 0..n {
            h.observe(age);
        }
    }
}

/// Freshness is tallied in steps of this many milliseconds: a table holds
/// a count per step until its commit, not a timestamp per row.
const FRESHNESS_STEP_MS: i64 = 100;

/// Rows of one lake partition waiting for the next roll, each row tagged
/// with its Kafka partition (so a revoked or lost partition's rows can be
/// dropped).
#[derive(Default)]
struct Buf {
    batches: Vec<(RecordBatch, Vec<i32>)>,
    rows: u64,
    bytes: usize,
}

/// Per Kafka partition: the dedupe window and a pause.
struct PartState {
    window: crate::dedupe::Window,
    /// The next offset the window expects (offsets feed it in order).
    window_next: i64,
    paused: Option<String>,
}

/// One table (one pseudo topic): its Delta table, what this instance owns
/// of the topic, and its buffers.
struct TableState {
    name: String,
    table: Table,
    snap: Snap,
    /// The columns files hold: the table's minus its partition columns.
    physical: arrow_schema::SchemaRef,
    offsets: Offsets,
    parts: BTreeMap<i32, PartState>,
    /// Records read and admitted, not yet decoded, per Kafka partition.
    raw: BTreeMap<i32, Records>,
    raw_bytes: usize,
    bufs: BTreeMap<PartKey, Buf>,
    oldest: Option<Instant>,
    last_commit: Instant,
    /// Kafka timestamps (100 ms steps → records) of what was read since
    /// the last commit: observed as freshness when the next one lands.
    arrived: BTreeMap<i64, u64>,
}

impl TableState {
    fn bytes(&self) -> usize {
        self.raw_bytes + self.bufs.values().map(|b| b.bytes).sum::<usize>()
    }

    fn is_empty(&self) -> bool {
        self.raw.is_empty() && self.bufs.is_empty()
    }

    fn drop_partition_rows(&mut self, partition: i32) -> u64 {
        let mut dropped = 0;
        if let Some(r) = self.raw.remove(&partition) {
            dropped += r.len() as u64;
            self.raw_bytes -= r.data.len();
        }
        for b in self.bufs.values_mut() {
            if !b
                .batches
                .iter()
                .any(|(_, parts)| parts.contains(&partition))
            {
                continue;
            }
            let mut kept = Vec::with_capacity(b.batches.len());
            for (batch, parts) in b.batches.drain(..) {
                let gone = parts.iter().filter(|p| **p == partition).count();
                dropped += gone as u64;
                if gone == 0 {
                    kept.push((batch, parts));
                } else if gone < parts.len() {
                    let mask: arrow_array::BooleanArray =
                        parts.iter().map(|p| Some(*p != partition)).collect();
                    let batch = arrow_select::filter::filter_record_batch(&batch, &mask)
                        .expect("the mask has one entry per row");
                    kept.push((
                        batch,
                        parts.into_iter().filter(|p| *p != partition).collect(),
                    ));
                }
            }
            b.batches = kept;
            b.rows = b.batches.iter().map(|(x, _)| x.num_rows() as u64).sum();
            b.bytes = b
                .batches
                .iter()
                .map(|(x, _)| x.get_array_memory_size())
                .sum();
        }
        self.bufs.retain(|_, b| b.rows > 0);
        if self.is_empty() {
            self.oldest = None;
        }
        dropped
    }
}

/// The sink.
pub struct Sink {
    cfg: SinkConfig,
    lake: Lake,
    schemas: Schemas,
    /// Table → its lake schema (the union of its contract versions).
    lake_schemas: BTreeMap<String, arrow_schema::SchemaRef>,
    partition_columns: Vec<String>,
    metrics: SinkMetrics,
    /// Topic → table state.
    tables: BTreeMap<String, TableState>,
    /// Reused across batches (building one sets up every table schema);
    /// dropped after a decode error, whose state it may keep.
    decoder: Option<arrow_avro::reader::Decoder>,
    /// Partitions that stopped at a record since the run loop last looked
    /// (it pauses them in the consumer).
    pauses: Vec<(String, i32, i64)>,
    /// A table version was committed or read since the run loop last
    /// looked (Kafka's advisory offsets are worth comparing).
    versions_moved: bool,
    summary: RunSummary,
}

fn table_of_topic(topic: &str) -> String {
    topic.rsplit('.').next().unwrap_or(topic).to_owned()
}

/// Where a partition must be read from after [`Sink::flush`] found its
/// offsets committed by another writer.
type Reseek = (String, i32);

impl Sink {
    /// Opens the lake and loads the table schemas.
    pub fn new(cfg: SinkConfig, metrics: SinkMetrics) -> Result<Self, ServiceError> {
        cfg.validate()?;
        let mut store = SchemaStore::embedded();
        if let Some(dir) = &cfg.schemas_dir {
            store.add_dir(dir)?;
        }
        let lake = Lake::open(&cfg.lake, &cfg.lake_options)?;
        let lake_schemas = chitose_lake::tables::versions(&store)
            .into_iter()
            .filter_map(|(t, v)| Some((t, chitose_lake::tables::lake_schema(&v)?)))
            .collect();
        let partition_columns = layout::PARTITION_COLUMNS
            .iter()
            .map(|c| (*c).to_owned())
            .chain(cfg.partition_columns.iter().cloned())
            .collect();
        Ok(Sink {
            schemas: Schemas::new(&store),
            lake_schemas,
            partition_columns,
            cfg,
            lake,
            metrics,
            tables: BTreeMap::new(),
            decoder: None,
            pauses: Vec::new(),
            versions_moved: false,
            summary: RunSummary::default(),
        })
    }

    fn app_id(&self, topic: &str, partition: i32) -> String {
        layout::app_id(&self.cfg.group_id, topic, partition)
    }

    /// The table of a topic, made or evolved to the sink's schema on first
    /// use, its snapshot refreshed otherwise.
    async fn table_state(&mut self, topic: &str) -> Result<&mut TableState, LakeError> {
        if !self.tables.contains_key(topic) {
            let name = table_of_topic(topic);
            let schema = self.lake_schemas.get(&name).cloned().ok_or_else(|| {
                LakeError::Config(format!(
                    "topic {topic}: expected a pseudo table of the contract, found no schema for table {name}"
                ))
            })?;
            let table = self.lake.table(&layout::table(&name));
            let snap = table
                .create_or_evolve(&schema, &self.partition_columns)
                .await?;
            let physical =
                chitose_lake::tables::physical_schema(&snap.schema()?, &self.partition_columns);
            self.tables.insert(
                topic.to_owned(),
                TableState {
                    name,
                    table,
                    snap,
                    physical,
                    offsets: Offsets::default(),
                    parts: BTreeMap::new(),
                    raw: BTreeMap::new(),
                    raw_bytes: 0,
                    bufs: BTreeMap::new(),
                    oldest: None,
                    last_commit: Instant::now(),
                    arrived: BTreeMap::new(),
                },
            );
        }
        Ok(self.tables.get_mut(topic).expect("inserted"))
    }

    /// Takes a partition: reads its version from the table. Returns the
    /// offset to read from (the dedupe window before the version).
    async fn recover(&mut self, topic: &str, partition: i32, low: i64) -> Result<i64, LakeError> {
        let app = self.app_id(topic, partition);
        let window = self.cfg.dedupe_window_records;
        self.versions_moved = true;
        let t = self.table_state(topic).await?;
        t.snap = t.table.refresh(&t.snap).await?;
        let version = t.table.app_versions(&t.snap, &[app]).await?[0];
        t.drop_partition_rows(partition);
        let at = t.offsets.assign(partition, version, low);
        let w = crate::dedupe::Window::new(window);
        let start = w.rebuild_from(at, low);
        t.parts.insert(
            partition,
            PartState {
                window: w,
                window_next: start,
                paused: None,
            },
        );
        Ok(start)
    }

    /// Gives a partition up: its buffered rows go (the next owner reads
    /// them again from the table's version).
    fn abandon(&mut self, topic: &str, partition: i32) {
        if let Some(t) = self.tables.get_mut(topic) {
            t.drop_partition_rows(partition);
            t.offsets.revoke(partition);
            t.parts.remove(&partition);
        }
        self.metrics.clear_paused();
        self.update_gauges();
    }

    fn update_gauges(&self) {
        let bytes: usize = self.tables.values().map(TableState::bytes).sum();
        let parts: usize = self.tables.values().map(|t| t.bufs.len()).sum();
        self.metrics.buffered_bytes.set(bytes as i64);
        self.metrics.buffered_partitions.set(parts as i64);
        let oldest = self
            .tables
            .values()
            .filter_map(|t| t.oldest)
            .map(|o| o.elapsed().as_secs())
            .max()
            .unwrap_or(0);
        self.metrics.oldest_unflushed.set(oldest as i64);
    }

    /// Asks the registry (when configured) which schema each new Confluent
    /// id stands for; ids of schemas the sink knows are mapped to their
    /// fingerprints.
    async fn resolve_confluent_ids(&mut self, input: &Records) {
        use chitose_schemas::registry::SchemaRegistry;
        let Some(url) = self.cfg.registry_url.clone() else {
            return;
        };
        let ids: BTreeSet<u32> = input
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

    /// Takes the records of one polled batch of a partition: each is
    /// admitted (framing, schema), skipped as a duplicate or kept as read
    /// for the next decode. A record that cannot be admitted stops the
    /// partition there (the ones before it are kept; never skipped).
    async fn land(&mut self, key: &(String, i32), msgs: &Records) {
        let (topic, partition) = (&key.0, key.1);
        let Some(t) = self.tables.get_mut(topic) else {
            return;
        };
        let (Some(pos), Some(ps)) = (t.offsets.get(partition), t.parts.get_mut(&partition)) else {
            return;
        };
        if ps.paused.is_some() {
            return;
        }
        let position = pos.position;
        // Records before the position are the window being read back.
        let mut fresh = false;
        for (o, m) in msgs.iter() {
            if o >= position {
                fresh = true;
            } else if o >= ps.window_next
                && let Some(id) = crate::dedupe::event_id_of(m)
            {
                ps.window.see(o, id);
                ps.window_next = o + 1;
            }
        }
        if !fresh {
            return;
        }
        if self.cfg.registry_url.is_some() {
            self.resolve_confluent_ids(msgs).await;
        }
        let t = self.tables.get_mut(topic).expect("checked");
        let ps = t.parts.get_mut(&partition).expect("checked");
        let raw = t.raw.entry(partition).or_default();
        let (before, kept_before) = (raw.data.len(), raw.len());
        // Grown once per batch (amortised doubling), not record by record.
        raw.data.reserve(msgs.data.len());
        raw.offsets.reserve(msgs.len());
        raw.ends.reserve(msgs.len());
        let (mut next, mut duplicates, mut stop) = (position, 0u64, None);
        for (o, m) in msgs.iter().filter(|(o, _)| *o >= position) {
            if let Err(e) = core::admit(&self.schemas, m, o) {
                stop = Some((o, e));
                break;
            }
            next = o + 1;
            if o >= ps.window_next
                && let Some(id) = crate::dedupe::event_id_of(m)
            {
                ps.window_next = o + 1;
                if ps.window.see(o, id) {
                    duplicates += 1;
                    continue;
                }
            }
            raw.push(o, m);
        }
        // An admitted record is framed, so never empty: kept records and
        // buffered bytes grow together.
        let kept = raw.len() - kept_before;
        t.raw_bytes += raw.data.len() - before;
        if kept > 0 {
            self.metrics
                .read
                .with_label_values(&[&t.name])
                .inc_by(kept as u64);
            for (step, n) in &msgs.steps {
                *t.arrived.entry(*step).or_default() += n;
            }
        }
        if raw.len() == 0 {
            t.raw.remove(&partition);
        } else {
            t.oldest.get_or_insert_with(Instant::now);
        }
        t.offsets.read(partition, next);
        if duplicates > 0 {
            self.metrics
                .skipped
                .with_label_values(&[&t.name, "duplicate_event_id"])
                .inc_by(duplicates);
            self.summary.skipped += duplicates;
        }
        let big = t.raw_bytes >= STAGE_BYTES;
        if let Some((at, e)) = stop {
            self.pause(topic, partition, at, &e);
        }
        // The gauges follow at the roll check after this poll's records.
        if big {
            self.stage(topic);
        }
    }

    /// Stops a partition at the record at `at`: the rows before it land,
    /// nothing from it on is read until the cause is fixed and the sink
    /// restarted (the run loop pauses it in the consumer).
    fn pause(&mut self, topic: &str, partition: i32, at: i64, e: &CoreError) {
        let Some(t) = self.tables.get_mut(topic) else {
            return;
        };
        t.offsets.stop_at(partition, at);
        let reason = match e {
            CoreError::UnknownSchema { .. } | CoreError::UnknownSchemaId { .. } => "unknown_schema",
            CoreError::Incompatible { .. } => "incompatible_schema",
            CoreError::Partition { .. } => "partition_column",
            _ => "undecodable",
        };
        if let Some(ps) = t.parts.get_mut(&partition) {
            ps.paused = Some(reason.to_owned());
        }
        self.metrics
            .paused
            .with_label_values(&[&t.name, reason])
            .set(1);
        tracing::error!(table = %t.name, partition, offset = at, error = %e,
            "partition paused: this record cannot be landed; the rows before it land, nothing after it is read until the cause is fixed and the sink restarted");
        self.pauses.push((topic.to_owned(), partition, at));
    }

    /// Decodes every record a table holds as read, in one pass, into the
    /// lake partitions' buffers. A record that does not decode (or a chunk
    /// without the partition columns) stops its partition there: the rows
    /// before it are buffered, the ones after it dropped and not counted
    /// as read.
    fn stage(&mut self, topic: &str) {
        let Some(t) = self.tables.get_mut(topic) else {
            return;
        };
        if t.raw.is_empty() {
            return;
        }
        let raw = std::mem::take(&mut t.raw);
        t.raw_bytes = 0;
        let physical = t.physical.clone();
        let mut decoder = self
            .decoder
            .take()
            .unwrap_or_else(|| self.schemas.decoder(STAGE_ROWS));
        let mut chunks: Vec<(i32, Chunk)> = Vec::new();
        let mut stops: BTreeMap<i32, (i64, CoreError)> = BTreeMap::new();
        for (p, recs) in &raw {
            let input: Vec<(i64, &[u8])> = recs.iter().collect();
            let (cs, err) = core::decode(&self.schemas, &mut decoder, &input);
            chunks.extend(cs.into_iter().map(|c| (*p, c)));
            if let Some(e) = err {
                // The decoder may hold part of the bad record.
                decoder = self.schemas.decoder(STAGE_ROWS);
                let at = offset_of(&e).unwrap_or(recs.offsets[0]);
                stops.insert(*p, (at, e));
            }
        }
        self.decoder = Some(decoder);
        // Each chunk's partition columns and the lake's shape (types,
        // column order, no partition columns: the keys hold them), once.
        let mut stopped: BTreeSet<i32> = BTreeSet::new();
        let (mut batches, mut keys, mut tags) = (Vec::new(), Vec::new(), Vec::new());
        for (p, c) in &chunks {
            if stopped.contains(p) {
                continue;
            }
            let shaped = core::key_columns(c, &self.cfg.partition_columns).and_then(|k| {
                chitose_lake::tables::conform(&c.batch, &physical)
                    .map(|b| (k, b))
                    .map_err(|message| CoreError::Decode {
                        offset: c.offsets[0],
                        message,
                    })
            });
            match shaped {
                Ok((k, b)) => {
                    keys.push(k);
                    batches.push(b);
                    tags.push(*p);
                }
                Err(e) => {
                    stopped.insert(*p);
                    stops.insert(*p, (c.offsets[0], e));
                }
            }
        }
        let groups = core::regroup(&batches, &keys);
        let t = self.tables.get_mut(topic).expect("checked");
        for (k, batch, rows) in groups {
            let parts: Vec<i32> = rows.iter().map(|(b, _)| tags[*b]).collect();
            let b = t.bufs.entry(k).or_default();
            b.rows += batch.num_rows() as u64;
            b.bytes += batch.get_array_memory_size();
            b.batches.push((batch, parts));
        }
        for (p, (at, e)) in stops {
            self.pause(topic, p, at, &e);
        }
    }

    /// Writes a table's buffers (one file per lake partition) and commits
    /// them with the partitions' txns. Returns partitions whose offsets
    /// another writer committed first (to be read again from the table).
    async fn flush(&mut self, topic: &str) -> Result<Vec<Reseek>, LakeError> {
        let started = Instant::now();
        self.stage(topic);
        let app_id = |p: i32| layout::app_id(&self.cfg.group_id, topic, p);
        let t = self.tables.get(topic).expect("caller checked");
        let due: Vec<Due> = t.offsets.due();
        if due.is_empty() && t.bufs.is_empty() {
            return Ok(Vec::new());
        }
        let txns: Vec<Txn> = due
            .iter()
            .map(|d| Txn {
                app_id: app_id(d.partition),
                expected: d.expected,
                version: d.version,
            })
            .collect();
        // One file per lake partition, a few uploads at a time.
        let mut writes = Vec::with_capacity(t.bufs.len());
        for (k, b) in &t.bufs {
            let partition: Vec<(String, Option<String>)> = self
                .partition_columns
                .iter()
                .cloned()
                .zip(k.iter().cloned())
                .collect();
            let batches: Vec<arrow_array::RecordBatch> =
                b.batches.iter().map(|(x, _)| x.clone()).collect();
            let (table, snap, physical) = (t.table.clone(), t.snap.clone(), t.physical.clone());
            let props = chitose_lake::parquet::properties_sized(
                self.cfg.row_group_rows,
                b.rows as usize,
                "chitose-sink",
            );
            let part_bytes = self.cfg.upload_part_bytes;
            writes.push(async move {
                let batch = arrow_select::concat::concat_batches(&physical, &batches)
                    .map_err(|e| LakeError::Config(format!("buffered rows: {e}")))?;
                table
                    .write(&snap, &partition, batch, props, part_bytes)
                    .await
            });
        }
        let results: Vec<Result<Staged, LakeError>> = futures::stream::iter(writes)
            .buffer_unordered(4)
            .collect()
            .await;
        let mut staged = Vec::new();
        let mut failed = None;
        for r in results {
            match r {
                Ok(s) => staged.push(s),
                Err(e) => failed = Some(e),
            }
        }
        let t = self.tables.get_mut(topic).expect("caller checked");
        if let Some(e) = failed {
            discard(&self.lake, &staged).await;
            return Err(e);
        }
        let outcome = t
            .table
            .commit(
                &t.snap,
                &staged,
                &[],
                &txns,
                true,
                chitose_lake::delta::Operation::Write,
            )
            .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                // The commit may or may not be in the log (a timeout after
                // the put): read the table again before the next one.
                discard_if_unlisted(t, &staged).await;
                return Err(e);
            }
        };
        match outcome {
            Outcome::Committed(snap) => {
                let version = snap.version();
                t.snap = snap;
                t.offsets.committed(&due);
                self.versions_moved = true;
                t.bufs.clear();
                t.oldest = None;
                t.last_commit = Instant::now();
                observe_freshness(&self.metrics.freshness, std::mem::take(&mut t.arrived));
                let (rows, bytes) = staged
                    .iter()
                    .fold((0, 0), |(r, b), s| (r + s.rows, b + s.bytes));
                self.metrics.rows.with_label_values(&[&t.name]).inc_by(rows);
                self.metrics
                    .bytes
                    .with_label_values(&[&t.name])
                    .inc_by(bytes);
                self.metrics
                    .files
                    .with_label_values(&[&t.name])
                    .inc_by(staged.len() as u64);
                self.metrics
                    .commits
                    .with_label_values(&[&t.name, "committed"])
                    .inc();
                self.metrics
                    .version
                    .with_label_values(&[&t.name])
                    .set(version as i64);
                self.metrics.flush.observe(started.elapsed().as_secs_f64());
                self.summary.rows += rows;
                self.summary.files += staged.len() as u64;
                self.summary.commits += 1;
                if self.cfg.checkpoint_interval > 0
                    && version % self.cfg.checkpoint_interval == 0
                    && let Err(e) = t.table.checkpoint(&t.snap).await
                {
                    // Readers replay the JSON commits instead: slower, not wrong.
                    tracing::warn!(table = %t.name, version, error = %e, "checkpoint failed");
                }
                self.update_gauges();
                Ok(Vec::new())
            }
            Outcome::Lost { app_ids, now, snap } => {
                discard(&self.lake, &staged).await;
                t.snap = snap;
                self.metrics
                    .commits
                    .with_label_values(&[&t.name, "lost"])
                    .inc();
                let mut reseek = Vec::new();
                for (app, now) in app_ids.iter().zip(now) {
                    let Some(d) = due.iter().find(|d| &app_id(d.partition) == app) else {
                        continue;
                    };
                    let dropped = t.drop_partition_rows(d.partition);
                    self.metrics
                        .skipped
                        .with_label_values(&[&t.name, "replay"])
                        .inc_by(dropped);
                    self.summary.skipped += dropped;
                    tracing::warn!(table = %t.name, partition = d.partition, expected = ?d.expected, found = ?now, dropped,
                        "another writer committed these offsets first: the rows read since are replays, read again from its version");
                    reseek.push((topic.to_owned(), d.partition));
                }
                self.update_gauges();
                Ok(reseek)
            }
            Outcome::Stale(snap) => {
                discard(&self.lake, &staged).await;
                t.snap = snap;
                Err(LakeError::Config(
                    "an append was refused as stale (it removes no files)".into(),
                ))
            }
        }
    }

    /// Rolls the tables that are due (all of them with `all`), then the
    /// largest while over the memory bound. Returns partitions to read
    /// again, and failures.
    async fn roll(&mut self, all: bool) -> (Vec<Reseek>, Vec<(String, LakeError)>) {
        let age = self.cfg.roll_age;
        let mut reseek = Vec::new();
        let mut failed = Vec::new();
        let topics: Vec<String> = self.tables.keys().cloned().collect();
        for topic in &topics {
            let t = &self.tables[topic];
            let due = all
                || t.oldest.is_some_and(|o| o.elapsed() >= age)
                || t.bufs
                    .values()
                    .any(|b| b.rows >= self.cfg.roll_rows || b.bytes as u64 >= self.cfg.roll_bytes)
                // Everything read was skipped: move the version on.
                || (t.is_empty() && !t.offsets.due().is_empty() && t.last_commit.elapsed() >= age);
            if due {
                match self.flush(topic).await {
                    Ok(r) => reseek.extend(r),
                    Err(e) => failed.push((topic.clone(), e)),
                }
            }
        }
        loop {
            let total: usize = self.tables.values().map(TableState::bytes).sum();
            if total <= self.cfg.max_buffered_bytes {
                break;
            }
            let Some(topic) = self
                .tables
                .iter()
                .max_by_key(|(_, t)| t.bytes())
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            match self.flush(&topic).await {
                Ok(r) => reseek.extend(r),
                Err(e) => {
                    failed.push((topic, e));
                    break;
                }
            }
        }
        self.update_gauges();
        (reseek, failed)
    }

    /// Committed versions of owned partitions (for Kafka's advisory offsets).
    fn committed(&self) -> Vec<(String, i32, i64)> {
        self.tables
            .iter()
            .flat_map(|(topic, t)| {
                t.offsets.partitions().filter_map(move |p| {
                    t.offsets
                        .get(p)
                        .and_then(|s| s.table)
                        .map(|v| (topic.clone(), p, v))
                })
            })
            .collect()
    }
}

/// The offset a core error names.
fn offset_of(e: &CoreError) -> Option<i64> {
    match e {
        CoreError::Framing { offset, .. }
        | CoreError::UnknownSchemaId { offset, .. }
        | CoreError::UnknownSchema { offset, .. }
        | CoreError::Decode { offset, .. }
        | CoreError::Partition { offset, .. } => Some(*offset),
        _ => None,
    }
}

/// Deletes files that no commit will name (best effort: vacuum removes
/// what is left).
async fn discard(lake: &Lake, staged: &[Staged]) {
    for s in staged {
        let _ = lake.delete(&s.object).await;
    }
}

/// After a commit error: deletes the staged files unless the newest
/// snapshot lists them (the commit did go in).
async fn discard_if_unlisted(t: &mut TableState, staged: &[Staged]) {
    let Ok(snap) = t.table.refresh(&t.snap).await else {
        return;
    };
    let listed: std::collections::HashSet<String> = match t.table.files(&snap).await {
        Ok(f) => f.into_iter().map(|f| f.object.to_string()).collect(),
        Err(_) => return,
    };
    t.snap = snap;
    for s in staged {
        if !listed.contains(s.object.as_ref()) {
            let _ = t.table.lake().delete(&s.object).await;
        }
    }
}

/// Runs until `shutdown` fires: rolls every table first.
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
    let ops_addr = ops::serve(cfg.ops_listen, metrics.registry.clone(), ready.clone())
        .await
        .map_err(|e| ServiceError::Listen(e.to_string()))?;
    tracing::info!(%ops_addr, lake = %cfg.lake, "sink: ops endpoint /metrics /healthz /readyz");
    let ctx = Ctx(
        Arc::default(),
        chitose_runtime::client_stats::StatsContext {
            client: metrics.client.clone(),
            lag: Some(metrics.lag.clone()),
        },
    );
    let mut cc = cfg.kafka.consumer_config(&cfg.group_id);
    cfg.kafka.with_statistics(&mut cc);
    // Rows wait up to a roll (60 s) anyway: fetches that wait for 1 MiB or
    // a second cost a trickle one round trip per second per broker, not
    // one per record (librdkafka's default, fetch.min.bytes = 1). The
    // operator's own settings win.
    for (k, v) in [
        ("fetch.min.bytes", "1048576"),
        ("fetch.wait.max.ms", "1000"),
    ] {
        if !cfg.kafka.properties.contains_key(k) {
            cc.set(k, v);
        }
    }
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
    let mut advised: BTreeMap<(String, i32), i64> = BTreeMap::new();
    loop {
        // Rebalance events first: revoked partitions drop their rows,
        // assigned ones read their version from the table before any read.
        let events: Vec<Event> = std::mem::take(&mut *ctx.0.lock().expect("not poisoned"));
        for ev in events {
            match ev {
                Event::Revoked(ps) => {
                    for (topic, p) in ps {
                        sink.abandon(&topic, p);
                        advised.remove(&(topic, p));
                    }
                }
                Event::Assigned(ps) => {
                    for key in ps {
                        recover_and_seek(&mut sink, &consumer, &watermarks, &key).await;
                    }
                }
            }
        }
        // Per (topic, partition), in arrival order; a handful of keys, found
        // without allocating a topic string per message.
        let mut batch: Vec<((String, i32), Records)> = Vec::new();
        let mut n = 0;
        let add = |batch: &mut Vec<((String, i32), Records)>,
                   m: &rdkafka::message::BorrowedMessage<'_>| {
            let (topic, partition) = (m.topic(), m.partition());
            let payload = m.payload().unwrap_or(&[]);
            let v = match batch
                .iter()
                .position(|((t, p), _)| *p == partition && t == topic)
            {
                Some(i) => &mut batch[i].1,
                None => {
                    batch.push(((topic.to_owned(), partition), Records::default()));
                    &mut batch.last_mut().expect("just pushed").1
                }
            };
            v.push(m.offset(), payload);
            v.saw_timestamp(m.timestamp().to_millis());
        };
        // The batch's clock starts at its first record, so an idle sink
        // wakes only for the tick. After it the loop takes what is already
        // fetched without waiting, and sleeps to the deadline once: a
        // trickle costs one wake-up per batch, not a park and an unpark per
        // record (idle time was most of a trickle's cost); catching up
        // fills the batch from librdkafka's prefetched queue at once.
        let mut deadline: Option<Instant> = None;
        let stop = loop {
            let Some(d) = deadline else {
                tokio::select! {
                    _ = shutdown.wait() => break true,
                    _ = tick.tick() => break false,
                    r = consumer.recv() => match r {
                        Ok(m) => {
                            add(&mut batch, &m);
                            n += 1;
                            deadline = Some(Instant::now() + cfg.batch_max);
                        }
                        Err(e) => tracing::debug!(error = %e, "consumer"),
                    },
                }
                continue;
            };
            while n < cfg.batch_max_records {
                match consumer.recv().now_or_never() {
                    Some(Ok(m)) => {
                        add(&mut batch, &m);
                        n += 1;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "consumer");
                        break;
                    }
                    None => break,
                }
            }
            if n >= cfg.batch_max_records
                || Instant::now() >= d
                || !ctx.0.lock().expect("not poisoned").is_empty()
            {
                break false;
            }
            tokio::select! {
                _ = shutdown.wait() => break true,
                _ = tokio::time::sleep_until(d.into()) => {}
            }
        };
        for (key, msgs) in batch {
            // The lag gauges want the last record's time: once per
            // partition and batch, not a lock per record.
            metrics.lag.saw(&key.0, key.1, msgs.last_ts);
            sink.land(&key, &msgs).await;
        }
        let (reseek, failed) = sink.roll(stop).await;
        for (topic, partition, at) in std::mem::take(&mut sink.pauses) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, partition);
            let _ = consumer.pause(&tpl);
            tracing::warn!(%topic, partition, at, "paused");
        }
        for key in reseek {
            recover_and_seek(&mut sink, &consumer, &watermarks, &key).await;
        }
        for (topic, e) in failed {
            // The rows stay buffered; the next roll tries again.
            tracing::error!(%topic, error = %e, "roll failed; retrying at the next roll");
        }
        // Kafka offsets follow the table (advisory: tools show lag from
        // them), committed only when they moved.
        let mut tpl = TopicPartitionList::new();
        let moved = std::mem::take(&mut sink.versions_moved);
        for (topic, p, v) in if moved { sink.committed() } else { Vec::new() } {
            if advised.get(&(topic.clone(), p)) != Some(&v) {
                let _ = tpl.add_partition_offset(&topic, p, Offset::Offset(v));
                advised.insert((topic, p), v);
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

/// Reads a partition's version from the table, seeks there (minus the
/// dedupe window) and resumes it; on failure it stays paused (the group
/// hands it to a healthier instance, or this one retries after the next
/// rebalance).
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
                    tracing::debug!(%topic, partition, start, "partition resumed at the table's version")
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
