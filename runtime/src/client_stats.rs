//! librdkafka's own statistics as metrics, for every stage's clients: the
//! requests a client sent the brokers, by type (produce, fetch, offset
//! commits, transaction markers, heartbeats, …), the messages and bytes it
//! moved, and the size of its produce batches — what says whether a stage
//! batches well or pays a round trip per record.
//!
//! librdkafka reports running totals per client every
//! `statistics.interval.ms` ([`crate::lag::STATS_INTERVAL_MS`]); the
//! counters here add what grew since the client's last report. Labels are
//! the client kind (`producer`, `consumer`) and librdkafka's request or
//! direction names from fixed lists — never a topic or a value.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use rdkafka::ClientContext;
use rdkafka::consumer::ConsumerContext;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The part of one librdkafka statistics report that the metrics read.
///
/// rdkafka's own `Statistics` type decodes the whole report (every
/// partition's fields and every broker's latency histograms) into maps and
/// strings: ~4.6 ms a report for the sink's 42 partitions, most of an idle
/// sink's CPU (issue 17's trickle profile). Serde skips the fields this
/// type does not name without allocating them.
#[derive(Debug, Default, Deserialize)]
pub struct Report {
    /// The client instance (`rdkafka#consumer-1`).
    #[serde(default)]
    pub name: String,
    /// `producer` or `consumer`.
    #[serde(rename = "type", default)]
    pub client_type: String,
    /// Wall clock of the report, seconds since the epoch.
    #[serde(default)]
    pub time: i64,
    /// Messages sent (running total).
    #[serde(default)]
    pub txmsgs: i64,
    /// Message bytes sent (running total).
    #[serde(default)]
    pub txmsg_bytes: i64,
    /// Messages received (running total).
    #[serde(default)]
    pub rxmsgs: i64,
    /// Message bytes received (running total).
    #[serde(default)]
    pub rxmsg_bytes: i64,
    /// Per broker connection.
    #[serde(default)]
    pub brokers: HashMap<String, BrokerReport>,
    /// Per topic.
    #[serde(default)]
    pub topics: HashMap<String, TopicReport>,
}

/// A broker connection's requests by type (running totals).
#[derive(Debug, Default, Deserialize)]
pub struct BrokerReport {
    /// Request name → requests sent.
    #[serde(default)]
    pub req: HashMap<String, i64>,
}

/// A topic's produce batches and partitions.
#[derive(Debug, Default, Deserialize)]
pub struct TopicReport {
    /// Messages per produce batch over the report's window.
    #[serde(default)]
    pub batchcnt: WindowSum,
    /// Bytes per produce batch over the report's window.
    #[serde(default)]
    pub batchsize: WindowSum,
    /// Partition id → its state (-1 is librdkafka's unassigned partition).
    #[serde(default)]
    pub partitions: HashMap<i32, PartitionReport>,
}

/// A rolling window's count and sum.
#[derive(Debug, Default, Deserialize)]
pub struct WindowSum {
    /// Samples in the window.
    #[serde(default)]
    pub cnt: i64,
    /// Their sum.
    #[serde(default)]
    pub sum: i64,
}

/// A partition's offsets as the client knows them.
#[derive(Debug, Deserialize)]
pub struct PartitionReport {
    /// Assigned to this consumer.
    #[serde(default)]
    pub desired: bool,
    /// librdkafka's fetch state (`none` when not fetched).
    #[serde(default)]
    pub fetch_state: String,
    /// Last stable offset (-1 unknown).
    #[serde(default = "unknown")]
    pub ls_offset: i64,
    /// High watermark (-1 unknown).
    #[serde(default = "unknown")]
    pub hi_offset: i64,
    /// Log start offset (-1 unknown).
    #[serde(default = "unknown")]
    pub lo_offset: i64,
    /// The application's position (-1 unknown).
    #[serde(default = "unknown")]
    pub app_offset: i64,
    /// The group's committed offset (-1 unknown).
    #[serde(default = "unknown")]
    pub committed_offset: i64,
}

fn unknown() -> i64 {
    -1
}

impl Report {
    /// Reads librdkafka's JSON report.
    pub fn parse(raw: &[u8]) -> Result<Report, serde_json::Error> {
        serde_json::from_slice(raw)
    }
}

/// The request types counted by name (librdkafka's names); others add to
/// `other`, so a broker's new request type cannot grow the label set.
pub const REQUESTS: &[&str] = &[
    "Produce",
    "Fetch",
    "ListOffsets",
    "Metadata",
    "OffsetCommit",
    "OffsetFetch",
    "FindCoordinator",
    "JoinGroup",
    "SyncGroup",
    "Heartbeat",
    "LeaveGroup",
    "InitProducerId",
    "AddPartitionsToTxn",
    "AddOffsetsToTxn",
    "EndTxn",
    "TxnOffsetCommit",
];

/// The metric names of `stage`'s clients (`chitose_<stage>_kafka_…`); the
/// produce batch gauges only for a stage that produces.
pub fn names(stage: &str, produces: bool) -> Vec<String> {
    let mut n = vec![
        format!("chitose_{stage}_kafka_requests_total"),
        format!("chitose_{stage}_kafka_messages_total"),
        format!("chitose_{stage}_kafka_message_bytes_total"),
    ];
    if produces {
        n.push(format!("chitose_{stage}_kafka_produce_batch_messages"));
        n.push(format!("chitose_{stage}_kafka_produce_batch_bytes"));
    }
    n
}

/// One report's running totals, by counter key.
#[derive(Debug, Default, PartialEq)]
pub struct Totals {
    /// `(client, request)` → requests sent, over every broker.
    pub requests: HashMap<(String, &'static str), u64>,
    /// `(client, direction)` → messages (`sent`, `received`).
    pub messages: HashMap<(String, &'static str), u64>,
    /// `(client, direction)` → message bytes.
    pub bytes: HashMap<(String, &'static str), u64>,
    /// Mean messages and bytes per produce batch over the report's window
    /// (none when nothing was produced in it).
    pub batch: Option<(i64, i64)>,
}

/// The client kind as a label: librdkafka's `type`, bounded.
fn client_kind(s: &Report) -> String {
    match s.client_type.as_str() {
        "producer" => "producer".into(),
        "consumer" => "consumer".into(),
        _ => "other".into(),
    }
}

/// Reads one report (a pure function: the tests feed it reports).
pub fn totals(s: &Report) -> Totals {
    let client = client_kind(s);
    let mut t = Totals::default();
    for b in s.brokers.values() {
        for (name, n) in &b.req {
            let key = REQUESTS
                .iter()
                .find(|r| **r == name.as_str())
                .copied()
                .unwrap_or("other");
            *t.requests.entry((client.clone(), key)).or_default() += (*n).max(0) as u64;
        }
    }
    t.messages
        .insert((client.clone(), "sent"), s.txmsgs.max(0) as u64);
    t.messages
        .insert((client.clone(), "received"), s.rxmsgs.max(0) as u64);
    t.bytes
        .insert((client.clone(), "sent"), s.txmsg_bytes.max(0) as u64);
    t.bytes
        .insert((client, "received"), s.rxmsg_bytes.max(0) as u64);
    // Each topic's window: cnt batches whose sizes sum to sum.
    let (mut batches, mut msgs, mut bytes) = (0i64, 0i64, 0i64);
    for topic in s.topics.values() {
        batches += topic.batchcnt.cnt;
        msgs += topic.batchcnt.sum;
        bytes += topic.batchsize.sum;
    }
    if batches > 0 {
        t.batch = Some((msgs / batches, bytes / batches));
    }
    t
}

/// What a counter should add: the growth since the last total, or the
/// whole total when it went down (a client made anew starts from 0).
pub fn growth(last: Option<u64>, now: u64) -> u64 {
    match last {
        Some(l) if now >= l => now - l,
        _ => now,
    }
}

/// The metrics of one stage's Kafka clients.
#[derive(Clone, Debug)]
pub struct ClientStats {
    requests: IntCounterVec,
    messages: IntCounterVec,
    bytes: IntCounterVec,
    /// Mean messages and bytes per produce batch (a stage that produces).
    batch: Option<(IntGaugeVec, IntGaugeVec)>,
    /// Per client instance (librdkafka's `name`): its last totals.
    last: Arc<Mutex<HashMap<String, Totals>>>,
}

impl ClientStats {
    /// Registers `chitose_<stage>_kafka_*` in `registry` for a stage with
    /// the clients `kinds` (`"producer"`, `"consumer"`).
    pub fn new(stage: &str, kinds: &[&str], registry: &Registry) -> Self {
        let produces = kinds.contains(&"producer");
        let mut n = names(stage, produces).into_iter();
        let mut next = || n.next().expect("a name per family");
        let (requests, messages, bytes) = (next(), next(), next());
        let counter = |name: String, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique");
            c
        };
        let gauge = |name: String, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["client"]).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique");
            g
        };
        let s = ClientStats {
            requests: counter(
                requests,
                "Requests the stage's Kafka clients sent, by client and request type (librdkafka statistics).",
                &["client", "request"],
            ),
            messages: counter(
                messages,
                "Messages the stage's Kafka clients sent or received (librdkafka statistics).",
                &["client", "direction"],
            ),
            bytes: counter(
                bytes,
                "Message bytes the stage's Kafka clients sent or received (librdkafka statistics).",
                &["client", "direction"],
            ),
            batch: produces.then(|| {
                (
                    gauge(
                        next(),
                        "Mean messages per produce batch over the last statistics interval.",
                    ),
                    gauge(
                        next(),
                        "Mean bytes per produce batch over the last statistics interval.",
                    ),
                )
            }),
            last: Arc::default(),
        };
        // Present from start-up (at 0), before the first report arrives.
        for client in kinds {
            let main = if *client == "producer" {
                "Produce"
            } else {
                "Fetch"
            };
            s.requests.with_label_values(&[client, main]);
            for d in ["sent", "received"] {
                s.messages.with_label_values(&[client, d]);
                s.bytes.with_label_values(&[client, d]);
            }
        }
        if let Some((m, b)) = &s.batch {
            m.with_label_values(&["producer"]).set(0);
            b.with_label_values(&["producer"]).set(0);
        }
        s
    }

    /// Adds one report of the client named `s.name`.
    pub fn observe(&self, s: &Report) {
        let now = totals(s);
        let mut last = self.last.lock().expect("not poisoned");
        let before = last.get(&s.name);
        let add = |c: &IntCounterVec,
                   now: &HashMap<(String, &'static str), u64>,
                   before: Option<&HashMap<(String, &'static str), u64>>| {
            for ((client, label), n) in now {
                let prev = before.and_then(|b| b.get(&(client.clone(), *label)).copied());
                let g = growth(prev, *n);
                if g > 0 {
                    c.with_label_values(&[client.as_str(), label]).inc_by(g);
                }
            }
        };
        add(&self.requests, &now.requests, before.map(|b| &b.requests));
        add(&self.messages, &now.messages, before.map(|b| &b.messages));
        add(&self.bytes, &now.bytes, before.map(|b| &b.bytes));
        if let (Some((msgs, bytes)), Some((m, b)), "producer") =
            (now.batch, &self.batch, s.client_type.as_str())
        {
            m.with_label_values(&["producer"]).set(msgs);
            b.with_label_values(&["producer"]).set(bytes);
        }
        last.insert(s.name.clone(), now);
    }
}

/// A client context that feeds librdkafka's statistics to the stage's
/// client metrics and, for a consumer, its lag gauges; set
/// `statistics.interval.ms` to [`crate::lag::STATS_INTERVAL_MS`].
#[derive(Clone)]
pub struct StatsContext {
    /// Requests, messages and batches ([`ClientStats`]).
    pub client: ClientStats,
    /// The consumer's lag gauges (none for a producer).
    pub lag: Option<crate::lag::LagGauges>,
}

impl StatsContext {
    /// Feeds one raw report to the metrics (a context that wraps this one
    /// forwards its `stats_raw` here).
    pub fn report(&self, raw: &[u8]) {
        match Report::parse(raw) {
            Ok(r) => {
                self.client.observe(&r);
                if let Some(lag) = &self.lag {
                    lag.observe(&r);
                }
            }
            Err(e) => tracing::warn!(error = %e, "librdkafka statistics not understood"),
        }
    }
}

impl ClientContext for StatsContext {
    fn stats_raw(&self, raw: &[u8]) {
        self.report(raw);
    }
}

impl ConsumerContext for StatsContext {}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, kind: &str, produce: i64, fetch: i64, odd: i64, txmsgs: i64) -> Report {
        let broker = |req: Vec<(&str, i64)>| BrokerReport {
            req: req.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        };
        Report {
            name: name.into(),
            client_type: kind.into(),
            txmsgs,
            brokers: HashMap::from([
                (
                    "b1".to_owned(),
                    broker(vec![("Produce", produce), ("Fetch", fetch)]),
                ),
                (
                    "b2".to_owned(),
                    broker(vec![("Produce", 1), ("SomeNewRequest", odd)]),
                ),
            ]),
            topics: HashMap::from([(
                "t".to_owned(),
                TopicReport {
                    batchcnt: WindowSum { cnt: 4, sum: 400 },
                    batchsize: WindowSum {
                        cnt: 4,
                        sum: 40_000,
                    },
                    ..Default::default()
                },
            )]),
            ..Default::default()
        }
    }

    /// A real client's report, read by rdkafka's full `Statistics` decode
    /// (the oracle) and by [`Report`]: every field the metrics use agrees.
    #[test]
    fn a_real_report_reads_as_rdkafka_reads_it() {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        #[derive(Clone, Default)]
        struct Keep(Arc<Mutex<Vec<Vec<u8>>>>);
        impl ClientContext for Keep {
            fn stats_raw(&self, raw: &[u8]) {
                self.0.lock().unwrap().push(raw.to_vec());
            }
        }
        impl ConsumerContext for Keep {}
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("t", 3, 1).unwrap();
        let p: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .create()
            .unwrap();
        for i in 0..30 {
            let key = i.to_string();
            p.send(BaseRecord::to("t").key(&key).payload("x")).unwrap();
        }
        p.flush(std::time::Duration::from_secs(10)).unwrap();
        let keep = Keep::default();
        let c: BaseConsumer<Keep> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("group.id", "g")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "100")
            .create_with_context(keep.clone())
            .unwrap();
        c.subscribe(&["t"]).unwrap();
        let (mut read, started) = (0, std::time::Instant::now());
        let reports = || keep.0.lock().unwrap().len();
        let mut after = usize::MAX;
        // Two reports after the last record: the totals include it.
        while reports() < after.saturating_add(2)
            && started.elapsed() < std::time::Duration::from_secs(30)
        {
            if let Some(Ok(_)) = c.poll(std::time::Duration::from_millis(50)) {
                read += 1;
                if read == 30 {
                    after = reports();
                }
            }
        }
        assert_eq!(read, 30);
        let raw = keep.0.lock().unwrap().last().cloned().expect("a report");
        let full: rdkafka::Statistics = serde_json::from_slice(&raw).unwrap();
        let slim = Report::parse(&raw).unwrap();
        assert_eq!(
            (slim.name.as_str(), slim.client_type.as_str(), slim.time),
            (full.name.as_str(), full.client_type.as_str(), full.time)
        );
        assert_eq!(
            (slim.rxmsgs, slim.rxmsg_bytes, slim.txmsgs, slim.txmsg_bytes),
            (full.rxmsgs, full.rxmsg_bytes, full.txmsgs, full.txmsg_bytes)
        );
        assert!(slim.rxmsgs >= 30, "{}", slim.rxmsgs);
        assert_eq!(slim.brokers.len(), full.brokers.len());
        for (name, b) in &full.brokers {
            assert_eq!(slim.brokers[name].req, b.req, "{name}");
        }
        assert!(slim.brokers.values().any(|b| b.req.get("Fetch") > Some(&0)));
        let mut partitions = 0;
        for (topic, t) in &full.topics {
            let s = &slim.topics[topic];
            assert_eq!(
                (s.batchcnt.cnt, s.batchcnt.sum),
                (t.batchcnt.cnt, t.batchcnt.sum)
            );
            for (p, f) in &t.partitions {
                let s = &s.partitions[p];
                assert_eq!(
                    (
                        s.desired,
                        s.fetch_state.as_str(),
                        s.ls_offset,
                        s.hi_offset,
                        s.lo_offset,
                        s.app_offset,
                        s.committed_offset
                    ),
                    (
                        f.desired,
                        f.fetch_state.as_str(),
                        f.ls_offset,
                        f.hi_offset,
                        f.lo_offset,
                        f.app_offset,
                        f.committed_offset
                    ),
                    "{topic}/{p}"
                );
                partitions += usize::from(*p >= 0);
            }
        }
        assert_eq!(partitions, 3);
    }

    #[test]
    fn totals_sum_brokers_and_fold_unknown_requests() {
        let t = totals(&report("p#1", "producer", 10, 2, 7, 500));
        assert_eq!(t.requests[&("producer".into(), "Produce")], 11);
        assert_eq!(t.requests[&("producer".into(), "Fetch")], 2);
        assert_eq!(t.requests[&("producer".into(), "other")], 7);
        assert_eq!(t.messages[&("producer".into(), "sent")], 500);
        assert_eq!(t.batch, Some((100, 10_000)));
        assert_eq!(
            totals(&report("x", "admin", 0, 0, 0, 0))
                .requests
                .keys()
                .next()
                .unwrap()
                .0,
            "other"
        );
    }

    #[test]
    fn counters_add_growth_per_client_and_survive_a_new_client() {
        assert_eq!(growth(None, 5), 5);
        assert_eq!(growth(Some(5), 9), 4);
        assert_eq!(growth(Some(9), 3), 3, "a client made anew starts over");
        let registry = Registry::new();
        let s = ClientStats::new("test", &["producer"], &registry);
        s.observe(&report("p#1", "producer", 10, 0, 0, 100));
        s.observe(&report("p#1", "producer", 25, 0, 0, 300));
        // A second client of the same kind adds its own totals.
        s.observe(&report("p#2", "producer", 4, 0, 0, 50));
        let produce = s.requests.with_label_values(&["producer", "Produce"]).get();
        assert_eq!(produce, 26 + 5, "p#1 ended at 26, p#2 at 5");
        assert_eq!(
            s.messages.with_label_values(&["producer", "sent"]).get(),
            350
        );
        let (batch_messages, _) = s.batch.as_ref().unwrap();
        assert_eq!(batch_messages.with_label_values(&["producer"]).get(), 100);
        let exported: Vec<String> = registry
            .gather()
            .iter()
            .filter(|f| !f.get_metric().is_empty())
            .map(|f| f.name().to_owned())
            .collect();
        for n in names("test", true) {
            assert!(exported.contains(&n), "{n} missing from {exported:?}");
        }
    }
}
