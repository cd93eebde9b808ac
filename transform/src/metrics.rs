//! Transform metrics. Labels: event_type, reason, topic, partition — never
//! a patient value.

use chitose_runtime::client_stats::ClientStats;
use chitose_runtime::lag::LagGauges;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

/// Every metric name this stage exports, spelled once: the services
/// register them, and `chitose bench`, `chitose up` and the tests read
/// them from here.
pub mod names {
    /// `chitose_transform_records_total`.
    pub const RECORDS_TOTAL: &str = "chitose_transform_records_total";
    /// `chitose_transform_dlq_total`.
    pub const DLQ_TOTAL: &str = "chitose_transform_dlq_total";
    /// `chitose_transform_dropped_total`.
    pub const DROPPED_TOTAL: &str = "chitose_transform_dropped_total";
    /// `chitose_transform_aborted_batches_total`.
    pub const ABORTED_BATCHES_TOTAL: &str = "chitose_transform_aborted_batches_total";
    /// `chitose_transform_latency_seconds`.
    pub const LATENCY_SECONDS: &str = "chitose_transform_latency_seconds";
    /// `chitose_transform_batch_seconds`.
    pub const BATCH_SECONDS: &str = "chitose_transform_batch_seconds";
    /// `chitose_transform_linkage_fallback_total`.
    pub const LINKAGE_FALLBACK_TOTAL: &str = "chitose_transform_linkage_fallback_total";
    /// `chitose_transform_consumer_lag_records`.
    pub const CONSUMER_LAG_RECORDS: &str = "chitose_transform_consumer_lag_records";
    /// `chitose_transform_consumer_lag_seconds`.
    pub const CONSUMER_LAG_SECONDS: &str = "chitose_transform_consumer_lag_seconds";
    /// `chitose_transform_kafka_requests_total`.
    pub const KAFKA_REQUESTS_TOTAL: &str = "chitose_transform_kafka_requests_total";
    /// `chitose_transform_kafka_messages_total`.
    pub const KAFKA_MESSAGES_TOTAL: &str = "chitose_transform_kafka_messages_total";
    /// `chitose_transform_kafka_message_bytes_total`.
    pub const KAFKA_MESSAGE_BYTES_TOTAL: &str = "chitose_transform_kafka_message_bytes_total";
    /// `chitose_transform_kafka_produce_batch_messages`.
    pub const KAFKA_PRODUCE_BATCH_MESSAGES: &str = "chitose_transform_kafka_produce_batch_messages";
    /// `chitose_transform_kafka_produce_batch_bytes`.
    pub const KAFKA_PRODUCE_BATCH_BYTES: &str = "chitose_transform_kafka_produce_batch_bytes";
    // The lag and client families are registered by chitose_runtime's
    // LagGauges and ClientStats under these names (a test checks they
    // agree).

    /// Every family, for checks that the dashboard and alerts use only
    /// what is exported.
    pub const ALL: &[&str] = &[
        RECORDS_TOTAL,
        DLQ_TOTAL,
        DROPPED_TOTAL,
        ABORTED_BATCHES_TOTAL,
        LATENCY_SECONDS,
        BATCH_SECONDS,
        LINKAGE_FALLBACK_TOTAL,
        CONSUMER_LAG_RECORDS,
        CONSUMER_LAG_SECONDS,
        KAFKA_REQUESTS_TOTAL,
        KAFKA_MESSAGES_TOTAL,
        KAFKA_MESSAGE_BYTES_TOTAL,
        KAFKA_PRODUCE_BATCH_MESSAGES,
        KAFKA_PRODUCE_BATCH_BYTES,
    ];
}

/// Every transform metric.
#[derive(Clone)]
pub struct TransformMetrics {
    /// The registry served on /metrics.
    pub registry: Registry,
    /// Records written to a pseudo topic, by event type.
    pub processed: IntCounterVec,
    /// Records sent to the DLQ, by error class.
    pub dlq: IntCounterVec,
    /// Records skipped on purpose, by reason (tombstones).
    pub dropped: IntCounterVec,
    /// Seconds from the raw record's broker timestamp to its commit.
    pub latency: Histogram,
    /// Seconds per committed batch.
    pub batch: Histogram,
    /// Transactions aborted (and retried), by cause.
    pub aborts: IntCounterVec,
    /// Records whose linkage fell through a basis, by reason.
    pub linkage_fallback: IntCounterVec,
    /// Lag gauges.
    pub lag: LagGauges,
    /// The consumer's and producer's librdkafka statistics.
    pub client: ClientStats,
}

impl TransformMetrics {
    /// Registers everything in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique");
            c
        };
        let processed = counter(
            names::RECORDS_TOTAL,
            "Records written to health.pseudo.<event_type>.",
            &["event_type"],
        );
        let dlq = counter(
            names::DLQ_TOTAL,
            "Records sent to the DLQ, by error class (decode, validation, policy, and the contract's reasons: my_number, control_character, too_long, invalid_code, not_finite).",
            &["reason"],
        );
        let dropped = counter(
            names::DROPPED_TOTAL,
            "Records skipped on purpose (empty values), by reason.",
            &["reason"],
        );
        let aborts = counter(
            names::ABORTED_BATCHES_TOTAL,
            "Transactions aborted and retried, by cause.",
            &["cause"],
        );
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique");
            h
        };
        let latency = hist(
            names::LATENCY_SECONDS,
            "From the raw record's broker timestamp to the commit of its output.",
            // Finer around a second: a batch waits up to batch_max (1 s)
            // for records, so that is where a trickle's latency sits.
            vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 5.0, 10.0,
                30.0, 60.0, 300.0,
            ],
        );
        let batch = hist(
            names::BATCH_SECONDS,
            "Time to transform and commit one batch.",
            vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
        );
        // Every known series exists from the start, at zero: rate() and
        // the alerts see 0, not "no data".
        for r in crate::core::DLQ_CLASSES {
            dlq.with_label_values(&[r]);
        }
        dropped.with_label_values(&["empty"]);
        for c in ABORT_CAUSES {
            aborts.with_label_values(&[c]);
        }
        let linkage_fallback = counter(
            names::LINKAGE_FALLBACK_TOTAL,
            "Records whose pseudonym could not use a linkage basis they had inputs for, by reason (insurance_without_branch: an insurance tuple without its 枝番 names a family, not a person).",
            &["reason"],
        );
        linkage_fallback.with_label_values(&["insurance_without_branch"]);
        let lag = LagGauges::new("transform", &registry);
        let client = ClientStats::new("transform", &["consumer", "producer"], &registry);
        TransformMetrics {
            client,
            linkage_fallback,
            registry,
            processed,
            dlq,
            dropped,
            latency,
            batch,
            aborts,
            lag,
        }
    }
}

/// Label values of `chitose_transform_aborted_batches_total{cause}`.
pub const ABORT_CAUSES: [&str; 4] = ["retriable", "abortable", "fatal", "commit"];

impl Default for TransformMetrics {
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
        let m = super::TransformMetrics::new();
        let problems = chitose_runtime::ops::name_problems(&m.registry, super::names::ALL);
        assert!(problems.is_empty(), "{problems:?}");
    }
}
