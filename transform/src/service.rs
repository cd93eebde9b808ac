//! `chitose transform`: the Kafka shell around [`crate::core`].
//!
//! Consume-transform-produce in batches. With `exactly_once` each batch is
//! one Kafka transaction holding its outputs, its DLQ records and its
//! consumer offsets (send_offsets_to_transaction); on any failure the
//! transaction is aborted and the consumer rewound to the committed
//! offsets. Without it, outputs are flushed before the offsets are
//! committed (at-least-once): a crash replays records, with the same source
//! coordinates, and the sink drops them.
//!
//! The loop is synchronous on a blocking thread: librdkafka's transaction
//! calls block, and a batch is CPU work between two of them.

use crate::config::TransformConfig;
use crate::core::{Coords, Scratch, Transformer, raw_leaves};
use crate::keys::KeyRing;
use crate::metrics::TransformMetrics;
use crate::policy::Policy;
use chitose_runtime::batch_producer::BatchProducer;
use chitose_runtime::client_stats::StatsContext;
use chitose_runtime::dlq;
use chitose_runtime::ops::{self, Readiness};
use chitose_runtime::shutdown::Shutdown;
use chitose_schemas::catalog::SchemaStore;
use chitose_schemas::codec::Timestamp;
use chitose_schemas::raw::EventType;
use chitose_schemas::reference::Reference;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] chitose_runtime::config::ConfigError),
    /// The policy does not load or compile.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// A key is missing or too short.
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    /// Extra schemas do not load.
    #[error(transparent)]
    Schemas(#[from] chitose_schemas::catalog::SchemaError),
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
    /// Records written to pseudo topics (committed).
    pub written: u64,
    /// Records sent to the DLQ (committed).
    pub dlq: u64,
    /// Batches aborted and retried.
    pub aborted: u64,
}

/// The schema store: embedded, plus `schemas_dir`.
pub fn schema_store(cfg: &TransformConfig) -> Result<SchemaStore, ServiceError> {
    let mut store = SchemaStore::embedded();
    if let Some(dir) = &cfg.schemas_dir {
        store.add_dir(dir)?;
    }
    Ok(store)
}

/// Loads policy and keys and compiles the transformer; every start-up
/// check happens here.
pub fn build(
    cfg: &TransformConfig,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Transformer, ServiceError> {
    cfg.validate()?;
    let store = schema_store(cfg)?;
    let policy = Policy::load(&cfg.policy, &raw_leaves(&store))?;
    let keys = KeyRing::load(&cfg.keys, env, policy.max_shift_days > 0)?;
    let reference = Reference::load().expect("shipped reference tables are valid (tested)");
    Ok(Transformer::new(policy, keys, store, reference)?)
}

/// Counts delivery failures (at-least-once mode checks it before
/// committing) and feeds the producer's statistics to the metrics.
#[derive(Clone)]
struct Deliveries(Arc<AtomicU64>, StatsContext);

impl ClientContext for Deliveries {
    fn stats_raw(&self, raw: &[u8]) {
        self.1.report(raw);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            self.0.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "delivery failed");
        }
    }
}

type Out = BatchProducer<Deliveries>;

fn producer(cfg: &TransformConfig, ctx: Deliveries) -> Result<Out, KafkaError> {
    let mut c = cfg.kafka.producer_config();
    cfg.kafka.with_statistics(&mut c);
    // Only failures are counted (and a transaction's commit fails anyway if
    // a record of it failed): BatchProducer asks for reports of failures
    // alone; a report per delivered record would be work for the polling
    // thread and nothing else (a twentieth of the service's CPU on
    // MockCluster).
    if cfg.exactly_once {
        c.set("transactional.id", cfg.transactional_id())
            .set("transaction.timeout.ms", "60000");
    }
    let p = BatchProducer::create(&c, ctx)?;
    if cfg.exactly_once {
        // Fences an older producer with the same transactional.id (a zombie
        // of this instance) and aborts its open transaction.
        p.init_transactions(Duration::from_secs(30))?;
    }
    Ok(p)
}

/// Runs until `shutdown` fires.
pub async fn run(
    cfg: TransformConfig,
    transformer: Transformer,
    shutdown: Shutdown,
) -> Result<RunSummary, ServiceError> {
    run_with(cfg, transformer, TransformMetrics::new(), shutdown).await
}

/// As [`run`], counting into `metrics` (which the caller can read live).
pub async fn run_with(
    cfg: TransformConfig,
    transformer: Transformer,
    metrics: TransformMetrics,
    shutdown: Shutdown,
) -> Result<RunSummary, ServiceError> {
    let ready = Readiness::default();
    let ops_addr = ops::serve(cfg.ops_listen, metrics.registry.clone(), ready.clone())
        .await
        .map_err(|e| ServiceError::Listen(e.to_string()))?;
    tracing::info!(%ops_addr, "ops endpoint: /metrics /healthz /readyz");
    let mut topics: Vec<(String, i32)> = EventType::ALL
        .iter()
        .map(|t| {
            (
                format!("{}{}", cfg.output_prefix, t.symbol()),
                cfg.output_partitions,
            )
        })
        .collect();
    topics.push((cfg.dlq_topic.clone(), cfg.output_partitions));
    let names: Vec<(&str, i32)> = topics.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    if let Err(e) = cfg.kafka.ensure_topics(&names).await {
        tracing::warn!(error = %e, "could not create output topics; assuming they exist");
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let mut sd = shutdown.clone();
        tokio::spawn(async move {
            sd.wait().await;
            stop.store(true, Ordering::SeqCst);
        });
    }
    let m = metrics.clone();
    tokio::task::spawn_blocking(move || worker(&cfg, &transformer, &m, &ready, &stop))
        .await
        .expect("transform worker does not panic")
}

struct Pending {
    written: BTreeMap<&'static str, u64>,
    no_branch: u64,
    dlq: BTreeMap<&'static str, u64>,
    empty: u64,
    oldest_ts: Option<i64>,
}

fn worker(
    cfg: &TransformConfig,
    t: &Transformer,
    metrics: &TransformMetrics,
    ready: &Readiness,
    stop: &AtomicBool,
) -> Result<RunSummary, ServiceError> {
    let consumer: BaseConsumer<StatsContext> = cfg
        .kafka
        .with_statistics(&mut cfg.kafka.consumer_config(&cfg.group_id))
        .create_with_context(StatsContext {
            client: metrics.client.clone(),
            lag: Some(metrics.lag.clone()),
        })?;
    consumer.subscribe(&[&cfg.input_pattern])?;
    let deliveries = Deliveries(
        Arc::default(),
        StatsContext {
            client: metrics.client.clone(),
            lag: None,
        },
    );
    let mut out = producer(cfg, deliveries.clone())?;
    ready.set(true);
    tracing::info!(
        policy = %t.policy().profile,
        version = %t.policy().version,
        key_id = t.keys().current_id(),
        exactly_once = cfg.exactly_once,
        transactional_id = %cfg.transactional_id(),
        "transform running"
    );
    let topic_of: Vec<String> = EventType::ALL
        .iter()
        .map(|e| format!("{}{}", cfg.output_prefix, e.symbol()))
        .collect();
    let mut scratch = Scratch::default();
    let mut summary = RunSummary::default();
    let mut backoff = Duration::from_millis(100);
    while !stop.load(Ordering::SeqCst) {
        let collecting = Instant::now();
        let batch = collect(cfg, &consumer, stop);
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        tracing::debug!(
            records = batch.len(),
            collect_ms = collecting.elapsed().as_millis() as u64,
            "batch collected"
        );
        match process(
            cfg,
            t,
            &consumer,
            &out,
            &deliveries,
            &batch,
            &topic_of,
            &mut scratch,
            metrics,
        ) {
            Ok(p) => {
                let now = Timestamp::now().0;
                for (et, n) in &p.written {
                    metrics.processed.with_label_values(&[et]).inc_by(*n);
                    summary.written += n;
                }
                for (class, n) in &p.dlq {
                    metrics.dlq.with_label_values(&[class]).inc_by(*n);
                    summary.dlq += n;
                }
                if p.no_branch > 0 {
                    metrics
                        .linkage_fallback
                        .with_label_values(&["insurance_without_branch"])
                        .inc_by(p.no_branch);
                }
                if p.empty > 0 {
                    metrics
                        .dropped
                        .with_label_values(&["empty"])
                        .inc_by(p.empty);
                }
                if let Some(ts) = p.oldest_ts {
                    metrics.latency.observe(((now - ts).max(0)) as f64 / 1000.0);
                }
                metrics.batch.observe(started.elapsed().as_secs_f64());
                tracing::debug!(
                    commit_ms = started.elapsed().as_millis() as u64,
                    "batch committed"
                );
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                summary.aborted += 1;
                let cause = match &e {
                    KafkaError::Transaction(r) if r.is_retriable() => "retriable",
                    KafkaError::Transaction(r) if r.txn_requires_abort() => "abortable",
                    KafkaError::Transaction(_) => "fatal",
                    _ => "commit",
                };
                metrics.aborts.with_label_values(&[cause]).inc();
                tracing::warn!(error = %e, cause, records = batch.len(), "batch not committed; rewinding to the committed offsets");
                drop(batch);
                if cfg.exactly_once {
                    if out.abort_transaction(Duration::from_secs(30)).is_err() || cause == "fatal" {
                        // A fenced or fatal producer cannot be reused: a new
                        // one re-initializes (and fences any zombie).
                        out = producer(cfg, deliveries.clone())?;
                    }
                } else {
                    let _ = out.flush(Duration::from_secs(30));
                }
                deliveries.0.store(0, Ordering::SeqCst);
                rewind(&consumer);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    tracing::info!(?summary, "transform stopping");
    let _ = out.flush(Duration::from_secs(10));
    ready.set(false);
    Ok(summary)
}

fn collect<'c>(
    cfg: &TransformConfig,
    consumer: &'c BaseConsumer<StatsContext>,
    stop: &AtomicBool,
) -> Vec<BorrowedMessage<'c>> {
    let mut batch = Vec::new();
    let deadline = Instant::now() + cfg.batch_max;
    while batch.len() < cfg.batch_max_records && !stop.load(Ordering::Relaxed) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match consumer.poll(left.min(Duration::from_millis(100))) {
            Some(Ok(m)) => batch.push(m),
            Some(Err(e)) => tracing::debug!(error = %e, "consumer"),
            None if !batch.is_empty() && left < cfg.batch_max / 2 => {
                break;
            }
            None => {}
        }
    }
    batch
}

/// Seeks every assigned partition back to its committed offset.
fn rewind(consumer: &BaseConsumer<StatsContext>) {
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let Ok(committed) = consumer.committed_offsets(assignment, Duration::from_secs(10)) else {
        return;
    };
    let mut tpl = TopicPartitionList::new();
    for e in committed.elements() {
        let off = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        let _ = tpl.add_partition_offset(e.topic(), e.partition(), off);
    }
    if let Err(e) = consumer.seek_partitions(tpl, Duration::from_secs(10)) {
        tracing::warn!(error = %e, "rewind failed");
    }
}

/// Where a batch ends in each source partition: the offset to commit (the
/// last record's + 1) and the last timestamp seen (for the lag gauges).
/// A batch holds long runs from one partition, so the map is touched once
/// per run, not once per record.
#[derive(Default)]
struct Positions<'b> {
    done: BTreeMap<Partition<'b>, End>,
    run: Option<(Partition<'b>, End)>,
}

/// A source partition: topic and number.
type Partition<'b> = (&'b str, i32);
/// The offset to commit and the last timestamp seen.
type End = (i64, Option<i64>);

impl<'b> Positions<'b> {
    fn saw(&mut self, topic: &'b str, partition: i32, offset: i64, ts: Option<i64>) {
        let at = (topic, partition);
        match &mut self.run {
            Some((a, last)) if *a == at => *last = (offset + 1, ts.or(last.1)),
            _ => {
                if let Some((a, last)) = self.run.take() {
                    self.done.insert(a, last);
                }
                let before = self.done.get(&at).and_then(|l| l.1);
                self.run = Some((at, (offset + 1, ts.or(before))));
            }
        }
    }

    fn finish(mut self) -> BTreeMap<Partition<'b>, End> {
        if let Some((a, last)) = self.run.take() {
            self.done.insert(a, last);
        }
        self.done
    }
}

#[allow(clippy::too_many_arguments)]
fn process(
    cfg: &TransformConfig,
    t: &Transformer,
    consumer: &BaseConsumer<StatsContext>,
    out: &Out,
    deliveries: &Deliveries,
    batch: &[BorrowedMessage<'_>],
    topic_of: &[String],
    s: &mut Scratch,
    metrics: &TransformMetrics,
) -> Result<Pending, KafkaError> {
    if cfg.exactly_once {
        out.begin_transaction()?;
    }
    let mut p = Pending {
        written: BTreeMap::new(),
        no_branch: 0,
        dlq: BTreeMap::new(),
        empty: 0,
        oldest_ts: None,
    };
    let mut positions = Positions::default();
    let now = Timestamp::now();
    for m in batch {
        let topic = m.topic();
        let partition = m.partition();
        let ts = m.timestamp().to_millis();
        positions.saw(topic, partition, m.offset(), ts);
        if let Some(ts) = ts {
            p.oldest_ts = Some(p.oldest_ts.map_or(ts, |o: i64| o.min(ts)));
        }
        let Some(value) = m.payload().filter(|v| !v.is_empty()) else {
            p.empty += 1;
            continue;
        };
        let coords = Coords {
            topic,
            partition,
            offset: m.offset(),
        };
        match t.transform(value, coords, now, s) {
            Ok(o) => {
                let i = EventType::ALL
                    .iter()
                    .position(|e| *e == o.event_type)
                    .expect("known type");
                out.send(
                    BaseRecord::to(&topic_of[i])
                        .key(s.pseudonym.as_bytes())
                        .payload(s.value.as_slice()),
                )?;
                *p.written.entry(o.event_type.symbol()).or_default() += 1;
                p.no_branch += u64::from(o.insurance_without_branch);
            }
            Err(e) => {
                let message = e.to_string();
                let reason = dlq::Reason {
                    stage: "transform",
                    class: e.class(),
                    message: &message,
                };
                let mut rec = BaseRecord::to(&cfg.dlq_topic)
                    .payload(value)
                    .headers(dlq::headers(m, &reason));
                if let Some(k) = m.key() {
                    rec = rec.key(k);
                }
                out.send(rec)?;
                *p.dlq.entry(e.class()).or_default() += 1;
            }
        }
    }
    let mut tpl = TopicPartitionList::new();
    // The lag gauges take a lock: once per partition a batch, not a record.
    for ((topic, partition), (next, ts)) in positions.finish() {
        metrics.lag.saw(topic, partition, ts);
        tpl.add_partition_offset(topic, partition, Offset::Offset(next))?;
    }
    if cfg.exactly_once {
        let group = consumer.group_metadata().ok_or(KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::InvalidGroupId,
        ))?;
        out.send_offsets_to_transaction(&tpl, &group, Duration::from_secs(30))?;
        out.commit_transaction(Duration::from_secs(60))?;
    } else {
        out.flush(Duration::from_secs(60))?;
        if deliveries.0.load(Ordering::SeqCst) > 0 {
            return Err(KafkaError::Flush(
                rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
            ));
        }
        consumer.commit(&tpl, CommitMode::Sync)?;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::Positions;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// Against a record-by-record fold: each partition's offset to
        /// commit is its last record's + 1, and its timestamp the last one
        /// a record of it carried, whatever the runs and interleaving.
        #[test]
        fn positions_are_the_last_record_of_each_partition(
            records in proptest::collection::vec(
                (0..2usize, 0..3i32, 0..1000i64, proptest::option::of(0..1_000_000i64)),
                0..200,
            )
        ) {
            let topics = ["health.raw.13", "health.raw.27"];
            let mut p = Positions::default();
            let mut want: BTreeMap<(&str, i32), (i64, Option<i64>)> = BTreeMap::new();
            for (t, part, offset, ts) in &records {
                p.saw(topics[*t], *part, *offset, *ts);
                let e = want.entry((topics[*t], *part)).or_insert((0, None));
                *e = (offset + 1, ts.or(e.1));
            }
            prop_assert_eq!(p.finish(), want);
        }
    }
}
