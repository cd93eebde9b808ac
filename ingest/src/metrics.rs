//! Ingest metrics, all in one place. Labels are bounded: prefecture,
//! source, reason (the edge's fixed reject reasons), never a value.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every metric name this stage exports, spelled once: the services
/// register them, and `chitose bench`, `chitose up` and the tests read
/// them from here.
pub mod names {
    /// `chitose_ingest_events_read_total`.
    pub const EVENTS_READ_TOTAL: &str = "chitose_ingest_events_read_total";
    /// `chitose_ingest_events_accepted_total`.
    pub const EVENTS_ACCEPTED_TOTAL: &str = "chitose_ingest_events_accepted_total";
    /// `chitose_ingest_produced_bytes_total`.
    pub const PRODUCED_BYTES_TOTAL: &str = "chitose_ingest_produced_bytes_total";
    /// `chitose_ingest_delivery_failures_total`.
    pub const DELIVERY_FAILURES_TOTAL: &str = "chitose_ingest_delivery_failures_total";
    /// `chitose_ingest_events_rejected_total`.
    pub const EVENTS_REJECTED_TOTAL: &str = "chitose_ingest_events_rejected_total";
    /// `chitose_ingest_produce_latency_seconds`.
    pub const PRODUCE_LATENCY_SECONDS: &str = "chitose_ingest_produce_latency_seconds";
    /// `chitose_ingest_queue_depth`.
    pub const QUEUE_DEPTH: &str = "chitose_ingest_queue_depth";
    /// `chitose_ingest_broker_up`.
    pub const BROKER_UP: &str = "chitose_ingest_broker_up";
    /// `chitose_ingest_http_refused_total`.
    pub const HTTP_REFUSED_TOTAL: &str = "chitose_ingest_http_refused_total";
    /// `chitose_ingest_fhir_entries_skipped_total`.
    pub const FHIR_ENTRIES_SKIPPED_TOTAL: &str = "chitose_ingest_fhir_entries_skipped_total";
    /// `chitose_ingest_files_refused_total`.
    pub const FILES_REFUSED_TOTAL: &str = "chitose_ingest_files_refused_total";
    /// `chitose_ingest_ssmix2_messages_total`.
    pub const SSMIX2_MESSAGES_TOTAL: &str = "chitose_ingest_ssmix2_messages_total";
    /// `chitose_ingest_kafka_requests_total`.
    pub const KAFKA_REQUESTS_TOTAL: &str = "chitose_ingest_kafka_requests_total";
    /// `chitose_ingest_kafka_messages_total`.
    pub const KAFKA_MESSAGES_TOTAL: &str = "chitose_ingest_kafka_messages_total";
    /// `chitose_ingest_kafka_message_bytes_total`.
    pub const KAFKA_MESSAGE_BYTES_TOTAL: &str = "chitose_ingest_kafka_message_bytes_total";
    /// `chitose_ingest_kafka_produce_batch_messages`.
    pub const KAFKA_PRODUCE_BATCH_MESSAGES: &str = "chitose_ingest_kafka_produce_batch_messages";
    /// `chitose_ingest_kafka_produce_batch_bytes`.
    pub const KAFKA_PRODUCE_BATCH_BYTES: &str = "chitose_ingest_kafka_produce_batch_bytes";
    // The client families are registered by
    // chitose_runtime::client_stats::ClientStats under these names (a test
    // checks they agree).

    /// Every family, for checks that the dashboard and alerts use only
    /// what is exported.
    pub const ALL: &[&str] = &[
        EVENTS_READ_TOTAL,
        EVENTS_ACCEPTED_TOTAL,
        PRODUCED_BYTES_TOTAL,
        DELIVERY_FAILURES_TOTAL,
        EVENTS_REJECTED_TOTAL,
        PRODUCE_LATENCY_SECONDS,
        QUEUE_DEPTH,
        BROKER_UP,
        HTTP_REFUSED_TOTAL,
        FHIR_ENTRIES_SKIPPED_TOTAL,
        FILES_REFUSED_TOTAL,
        SSMIX2_MESSAGES_TOTAL,
        KAFKA_REQUESTS_TOTAL,
        KAFKA_MESSAGES_TOTAL,
        KAFKA_MESSAGE_BYTES_TOTAL,
        KAFKA_PRODUCE_BATCH_MESSAGES,
        KAFKA_PRODUCE_BATCH_BYTES,
    ];
}

/// The ingest metric families.
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    /// Registry to serve.
    pub registry: Registry,
    /// Records read from the source.
    pub read: IntCounter,
    /// Records acknowledged by the broker.
    pub accepted: IntCounter,
    /// Records rejected at the edge, by reason.
    pub rejected: IntCounterVec,
    /// Time from enqueue to broker acknowledgement.
    pub produce_latency: Histogram,
    /// Records produced but not yet acknowledged.
    pub queue_depth: IntGauge,
    /// Bytes of framed messages acknowledged.
    pub produced_bytes: IntCounter,
    /// Deliveries that failed (the source retries them).
    pub delivery_failures: IntCounter,
    /// 1 when the broker answered the last metadata request.
    pub broker_up: IntGauge,
    /// HTTP requests and connections refused before any record was read,
    /// by reason ([`HTTP_REFUSALS`]).
    pub http_refused: IntCounterVec,
    /// FHIR entries that made no event of their own, by kind
    /// ([`crate::fhir::Skip`]): context, not_an_event, checkup_item,
    /// observation_group.
    pub fhir_skipped: IntCounterVec,
    /// Files refused whole (unreadable, undecodable, a symlink), by reason
    /// ([`FILE_REFUSALS`]); each is moved to `rejects/` with an entry.
    pub files_refused: IntCounterVec,
    /// SS-MIX2 messages taken from the storage, by outcome: event,
    /// correction, rejected, skipped.
    pub ssmix2_messages: IntCounterVec,
    /// The producer's librdkafka statistics.
    pub client: chitose_runtime::client_stats::ClientStats,
}

/// Why the files source refused a whole file.
pub const FILE_REFUSALS: &[&str] = &["symlink", "not_a_file", "encoding", "unreadable"];

/// Why the HTTP source refused a request or connection before reading a
/// record: a wrong or missing token, no free slot, the request deadline,
/// too many records, a failed TLS handshake (plaintext, a wrong or missing
/// client certificate), a client certificate not pinned for this hub.
pub const HTTP_REFUSALS: &[&str] = &[
    "unauthorized",
    "busy",
    "timeout",
    "too_many_records",
    "tls_handshake",
    "client_certificate",
];

impl IngestMetrics {
    /// Registers the families with constant labels for this hub and source.
    pub fn new(prefecture: &str, source: &str) -> Self {
        let registry = Registry::new_custom(
            None,
            Some(
                [
                    ("prefecture".to_string(), prefecture.to_string()),
                    ("source".to_string(), source.to_string()),
                ]
                .into(),
            ),
        )
        .expect("valid labels");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let read = counter(names::EVENTS_READ_TOTAL, "Records read from the source.");
        let accepted = counter(
            names::EVENTS_ACCEPTED_TOTAL,
            "Records the broker acknowledged.",
        );
        let produced_bytes = counter(
            names::PRODUCED_BYTES_TOTAL,
            "Bytes of acknowledged messages.",
        );
        let delivery_failures = counter(
            names::DELIVERY_FAILURES_TOTAL,
            "Deliveries that failed and will be retried.",
        );
        let rejected = IntCounterVec::new(
            Opts::new(
                names::EVENTS_REJECTED_TOTAL,
                "Records rejected at the edge, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(rejected.clone()))
            .expect("unique metric");
        let produce_latency = Histogram::with_opts(
            HistogramOpts::new(
                names::PRODUCE_LATENCY_SECONDS,
                "Enqueue to broker acknowledgement.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(produce_latency.clone()))
            .expect("unique metric");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let queue_depth = gauge(
            names::QUEUE_DEPTH,
            "Records produced but not yet acknowledged.",
        );
        let broker_up = gauge(
            names::BROKER_UP,
            "1 when the broker answered the last metadata request.",
        );
        let http_refused = IntCounterVec::new(
            Opts::new(
                names::HTTP_REFUSED_TOTAL,
                "HTTP requests and connections refused before any record was read, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(http_refused.clone()))
            .expect("unique metric");
        // Every reason exists at zero, so rate() and alerts see 0, not "no data".
        for r in HTTP_REFUSALS {
            http_refused.with_label_values(&[r]);
        }
        let vec = |name: &str, help: &str, label: &str, values: &[&str]| {
            let v = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry
                .register(Box::new(v.clone()))
                .expect("unique metric");
            for x in values {
                v.with_label_values(&[x]);
            }
            v
        };
        let fhir_skipped = vec(
            names::FHIR_ENTRIES_SKIPPED_TOTAL,
            "FHIR entries read as context, merged into a checkup, or of no event type, by kind.",
            "kind",
            &crate::fhir::Skip::ALL.map(crate::fhir::Skip::as_str),
        );
        let files_refused = vec(
            names::FILES_REFUSED_TOTAL,
            "Files refused whole and moved to rejects/, by reason.",
            "reason",
            FILE_REFUSALS,
        );
        let ssmix2_messages = vec(
            names::SSMIX2_MESSAGES_TOTAL,
            "SS-MIX2 messages taken from the storage, by outcome.",
            "outcome",
            &["event", "correction", "rejected", "skipped"],
        );
        let client =
            chitose_runtime::client_stats::ClientStats::new("ingest", &["producer"], &registry);
        IngestMetrics {
            client,
            ssmix2_messages,
            fhir_skipped,
            files_refused,
            registry,
            read,
            accepted,
            rejected,
            produce_latency,
            queue_depth,
            produced_bytes,
            delivery_failures,
            broker_up,
            http_refused,
        }
    }

    /// Counts one refusal of the HTTP source.
    pub fn refuse(&self, reason: &'static str) {
        debug_assert!(HTTP_REFUSALS.contains(&reason));
        self.http_refused.with_label_values(&[reason]).inc();
    }
}

#[cfg(test)]
mod tests {
    /// The names in one place are the names served: every family the
    /// registry gathers is in `names::ALL`, listed once, and the lag
    /// gauges are there from start-up.
    #[test]
    fn every_served_family_is_named_once() {
        let m = super::IngestMetrics::new("27", "simulate");
        let problems = chitose_runtime::ops::name_problems(&m.registry, super::names::ALL);
        assert!(problems.is_empty(), "{problems:?}");
    }
}
