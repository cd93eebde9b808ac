//! Sink metrics. Labels: table, reason, topic, partition — never a value.

use chitose_runtime::client_stats::ClientStats;
use chitose_runtime::lag::LagGauges;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Every metric name this stage exports, spelled once: the services
/// register them, and `chitose bench`, `chitose up` and the tests read
/// them from here.
pub mod names {
    /// `chitose_sink_rows_total`.
    pub const ROWS_TOTAL: &str = "chitose_sink_rows_total";
    /// `chitose_sink_records_read_total`.
    pub const RECORDS_READ_TOTAL: &str = "chitose_sink_records_read_total";
    /// `chitose_sink_bytes_total`.
    pub const BYTES_TOTAL: &str = "chitose_sink_bytes_total";
    /// `chitose_sink_files_total`.
    pub const FILES_TOTAL: &str = "chitose_sink_files_total";
    /// `chitose_sink_skipped_rows_total`.
    pub const SKIPPED_ROWS_TOTAL: &str = "chitose_sink_skipped_rows_total";
    /// `chitose_sink_flush_seconds`.
    pub const FLUSH_SECONDS: &str = "chitose_sink_flush_seconds";
    /// `chitose_sink_freshness_seconds`.
    pub const FRESHNESS_SECONDS: &str = "chitose_sink_freshness_seconds";
    /// `chitose_sink_buffered_bytes`.
    pub const BUFFERED_BYTES: &str = "chitose_sink_buffered_bytes";
    /// `chitose_sink_buffered_partitions`.
    pub const BUFFERED_PARTITIONS: &str = "chitose_sink_buffered_partitions";
    /// `chitose_sink_oldest_unflushed_seconds`.
    pub const OLDEST_UNFLUSHED_SECONDS: &str = "chitose_sink_oldest_unflushed_seconds";
    /// `chitose_sink_commits_total`.
    pub const COMMITS_TOTAL: &str = "chitose_sink_commits_total";
    /// `chitose_sink_table_version`.
    pub const TABLE_VERSION: &str = "chitose_sink_table_version";
    /// `chitose_sink_paused_partitions`.
    pub const PAUSED_PARTITIONS: &str = "chitose_sink_paused_partitions";
    /// `chitose_sink_consumer_lag_records`.
    pub const CONSUMER_LAG_RECORDS: &str = "chitose_sink_consumer_lag_records";
    /// `chitose_sink_consumer_lag_seconds`.
    pub const CONSUMER_LAG_SECONDS: &str = "chitose_sink_consumer_lag_seconds";
    /// `chitose_sink_kafka_requests_total`.
    pub const KAFKA_REQUESTS_TOTAL: &str = "chitose_sink_kafka_requests_total";
    /// `chitose_sink_kafka_messages_total`.
    pub const KAFKA_MESSAGES_TOTAL: &str = "chitose_sink_kafka_messages_total";
    /// `chitose_sink_kafka_message_bytes_total`.
    pub const KAFKA_MESSAGE_BYTES_TOTAL: &str = "chitose_sink_kafka_message_bytes_total";
    // The lag and client families are registered by chitose_runtime's
    // LagGauges and ClientStats under these names (a test checks they
    // agree).

    /// Every family, for checks that the dashboard and alerts use only
    /// what is exported.
    pub const ALL: &[&str] = &[
        ROWS_TOTAL,
        RECORDS_READ_TOTAL,
        BYTES_TOTAL,
        FILES_TOTAL,
        SKIPPED_ROWS_TOTAL,
        FLUSH_SECONDS,
        FRESHNESS_SECONDS,
        BUFFERED_BYTES,
        BUFFERED_PARTITIONS,
        OLDEST_UNFLUSHED_SECONDS,
        COMMITS_TOTAL,
        TABLE_VERSION,
        PAUSED_PARTITIONS,
        CONSUMER_LAG_RECORDS,
        CONSUMER_LAG_SECONDS,
        KAFKA_REQUESTS_TOTAL,
        KAFKA_MESSAGES_TOTAL,
        KAFKA_MESSAGE_BYTES_TOTAL,
    ];
}

/// Every sink metric.
#[derive(Clone)]
pub struct SinkMetrics {
    /// The registry served on /metrics.
    pub registry: Registry,
    /// Rows in committed files, by table.
    pub rows: IntCounterVec,
    /// Records read and kept for the next roll, by table: the sink's
    /// intake, ahead of `rows` by what waits for a roll.
    pub read: IntCounterVec,
    /// Bytes of committed files, by table.
    pub bytes: IntCounterVec,
    /// Committed files, by table.
    pub files: IntCounterVec,
    /// Rows not landed on purpose, by table and reason (replay, landed).
    pub skipped: IntCounterVec,
    /// Seconds to write a table's files and commit them.
    pub flush: Histogram,
    /// Seconds from a row's Kafka timestamp to the commit that made it
    /// visible in the lake.
    pub freshness: Histogram,
    /// Bytes of buffered rows.
    pub buffered_bytes: IntGauge,
    /// Lake partitions with buffered rows.
    pub buffered_partitions: IntGauge,
    /// Delta commits by outcome.
    pub commits: IntCounterVec,
    /// Each table's newest version this instance knows.
    pub version: IntGaugeVec,
    /// Age of the oldest record not yet in a committed file.
    pub oldest_unflushed: IntGauge,
    /// Partitions paused, by table and reason.
    pub paused: IntGaugeVec,
    /// Lag.
    pub lag: LagGauges,
    /// The consumer's librdkafka statistics.
    pub client: ClientStats,
}

impl SinkMetrics {
    /// Registers everything in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique");
            c
        };
        let rows = counter(
            names::ROWS_TOTAL,
            "Rows in committed Parquet files.",
            &["table"],
        );
        let read = counter(
            names::RECORDS_READ_TOTAL,
            "Records read from the pseudonymized topics and kept for their table's next roll (duplicates are counted in skipped_rows_total instead): the sink's intake, which rows_total follows at each commit. Records read again (after a rebalance or a failed commit) count again.",
            &["table"],
        );
        let bytes = counter(
            names::BYTES_TOTAL,
            "Bytes of committed Parquet files.",
            &["table"],
        );
        let files = counter(names::FILES_TOTAL, "Committed Parquet files.", &["table"]);
        let skipped = counter(
            names::SKIPPED_ROWS_TOTAL,
            "Rows not landed on purpose: duplicate_event_id (a client's retry or a transform replay: the same event id within the de-duplication window) or replay (another writer committed their offsets first).",
            &["table", "reason"],
        );
        let flush = Histogram::with_opts(
            HistogramOpts::new(
                names::FLUSH_SECONDS,
                "Time to write a table's files and commit them to its Delta log.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(flush.clone())).expect("unique");
        let freshness = Histogram::with_opts(
            HistogramOpts::new(
                names::FRESHNESS_SECONDS,
                "Per row landed: seconds from its record's Kafka timestamp (when the transform wrote it) to the Delta commit that made it visible in the lake, clocks of two hosts included. The leg before, ingest to transform, is the transform's consumer lag. Rows of a table count when its commit lands; a row dropped or replayed before that counts at the next commit.",
            )
            .buckets(vec![
                0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0,
                60.0, 75.0, 90.0, 120.0, 180.0, 300.0, 600.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(freshness.clone()))
            .expect("unique");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique");
            g
        };
        let buffered_bytes = gauge(
            names::BUFFERED_BYTES,
            "Bytes of records waiting for their table's next roll (as read, then as Arrow once decoded).",
        );
        let buffered_partitions = gauge(
            names::BUFFERED_PARTITIONS,
            "Lake partitions with decoded rows waiting for the next roll (each becomes one file); records are decoded in bulk, so between decodes this counts only what was decoded.",
        );
        let oldest_unflushed = gauge(
            names::OLDEST_UNFLUSHED_SECONDS,
            "Age of the oldest buffered row: how long it has waited to land.",
        );
        let commits = counter(
            names::COMMITS_TOTAL,
            "Delta commits by outcome: committed, or lost (another writer committed the same offsets first; the rows were dropped as replays).",
            &["table", "outcome"],
        );
        let version = IntGaugeVec::new(
            Opts::new(
                names::TABLE_VERSION,
                "The newest version of each table this instance committed or read.",
            ),
            &["table"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(version.clone()))
            .expect("unique");
        let paused = IntGaugeVec::new(
            Opts::new(
                names::PAUSED_PARTITIONS,
                "Kafka partitions paused because a record cannot be landed (unknown or incompatible schema, undecodable record).",
            ),
            &["table", "reason"],
        )
        .expect("valid metric");
        registry.register(Box::new(paused.clone())).expect("unique");
        let lag = LagGauges::new("sink", &registry);
        let client = ClientStats::new("sink", &["consumer"], &registry);
        let m = SinkMetrics {
            client,
            registry,
            rows,
            read,
            bytes,
            files,
            skipped,
            flush,
            freshness,
            buffered_bytes,
            buffered_partitions,
            commits,
            version,
            oldest_unflushed,
            paused,
            lag,
        };
        // Every series exists from the start, at zero: rate() and the
        // alerts see 0, not "no data", before the first file or pause.
        for t in tables() {
            for c in [&m.rows, &m.read, &m.bytes, &m.files] {
                c.with_label_values(&[t]);
            }
            for r in SKIP_REASONS {
                m.skipped.with_label_values(&[t, r]);
            }
            for o in COMMIT_OUTCOMES {
                m.commits.with_label_values(&[t, o]);
            }
        }
        m.clear_paused();
        m
    }

    /// Sets every table's paused gauges to 0.
    pub fn clear_paused(&self) {
        self.paused.reset();
        for t in tables() {
            for r in PAUSE_REASONS {
                self.paused.with_label_values(&[t, r]).set(0);
            }
        }
    }
}

/// Lake tables: one per event type.
fn tables() -> impl Iterator<Item = &'static str> {
    chitose_schemas::raw::EventType::ALL
        .iter()
        .map(|t| t.symbol())
}

/// Label values of `chitose_sink_skipped_rows_total{reason}`.
pub const SKIP_REASONS: [&str; 2] = ["duplicate_event_id", "replay"];

/// Label values of `chitose_sink_commits_total{outcome}`.
pub const COMMIT_OUTCOMES: [&str; 2] = ["committed", "lost"];

/// Label values of `chitose_sink_paused_partitions{reason}`.
pub const PAUSE_REASONS: [&str; 4] = [
    "unknown_schema",
    "incompatible_schema",
    "partition_column",
    "undecodable",
];

impl Default for SinkMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    /// The names in one place are the names served: every family the
    /// registry gathers is in `names::ALL`, listed once, and the lag
    /// gauges are there from start-up.
    #[test]
    fn every_served_family_is_named_once() {
        let m = super::SinkMetrics::new();
        let problems = chitose_runtime::ops::name_problems(&m.registry, super::names::ALL);
        assert!(problems.is_empty(), "{problems:?}");
    }
}
