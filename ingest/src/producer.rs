//! The hub's producer: idempotent, acks=all, keyed by hub-local patient id,
//! with a bounded number of unacknowledged records (backpressure).
//!
//! Each record carries a ticket (its permit, start time, size and answer
//! channel) as librdkafka's delivery opaque, and the delivery callback, on
//! the producer's polling thread, settles it: metrics, permit, answer. So a
//! record costs no task, no second channel and no headers copy.

use crate::metrics::IngestMetrics;
use chitose_runtime::client_stats::StatsContext;
use chitose_runtime::kafka::KafkaSettings;
use chitose_runtime::ops::Readiness;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// One record in flight, settled by the delivery callback.
struct Ticket {
    started: Instant,
    len: u64,
    /// Returned to the semaphore when the broker answers, whether or not
    /// anyone awaits the answer.
    _permit: OwnedSemaphorePermit,
    answer: oneshot::Sender<Result<Ack, KafkaError>>,
}

/// Statistics to the metrics, and every delivery settled where librdkafka
/// reports it.
struct Context {
    stats: StatsContext,
    metrics: IngestMetrics,
}

impl ClientContext for Context {
    fn stats_raw(&self, raw: &[u8]) {
        self.stats.report(raw);
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<Ticket>;

    fn delivery(&self, r: &DeliveryResult<'_>, ticket: Box<Ticket>) {
        let m = &self.metrics;
        m.queue_depth.dec();
        let result = match r {
            Ok(d) => {
                m.produce_latency
                    .observe(ticket.started.elapsed().as_secs_f64());
                m.accepted.inc();
                m.produced_bytes.inc_by(ticket.len);
                Ok(Ack {
                    partition: d.partition(),
                    offset: d.offset(),
                })
            }
            Err((e, _)) => {
                m.delivery_failures.inc();
                Err(e.clone())
            }
        };
        // The permit goes back with the ticket; a caller that stopped
        // waiting is no error.
        let _ = ticket.answer.send(result);
    }
}

type Inner = ThreadedProducer<Context>;

/// A producer whose librdkafka statistics feed the ingest metrics.
fn create(settings: &KafkaSettings, metrics: &IngestMetrics) -> Result<Inner, KafkaError> {
    settings
        .with_statistics(&mut settings.producer_config())
        .create_with_context(Context {
            stats: StatsContext {
                client: metrics.client.clone(),
                lag: None,
            },
            metrics: metrics.clone(),
        })
}

/// Producer with backpressure and metrics.
#[derive(Clone)]
pub struct RawProducer {
    producer: Arc<std::sync::RwLock<Arc<Inner>>>,
    settings: KafkaSettings,
    topic: Arc<str>,
    permits: Arc<Semaphore>,
    metrics: IngestMetrics,
}

impl RawProducer {
    /// Creates the producer; `max_in_flight` bounds unacknowledged records.
    pub fn new(
        settings: &KafkaSettings,
        topic: &str,
        max_in_flight: usize,
        metrics: IngestMetrics,
    ) -> Result<Self, KafkaError> {
        Ok(RawProducer {
            producer: Arc::new(std::sync::RwLock::new(Arc::new(create(
                settings, &metrics,
            )?))),
            settings: settings.clone(),
            topic: topic.into(),
            permits: Arc::new(Semaphore::new(max_in_flight)),
            metrics,
        })
    }

    /// Enqueues one record (waiting while `max_in_flight` are unacknowledged)
    /// and returns a future of its acknowledgement. Records enqueued in order
    /// keep that order within a partition.
    pub async fn send(
        &self,
        key: &str,
        payload: Vec<u8>,
        headers: &[(&str, &[u8])],
    ) -> impl Future<Output = Result<Ack, KafkaError>> + Send + 'static + use<> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closes");
        let mut h = OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let (answer, answered) = oneshot::channel();
        let ticket = Box::new(Ticket {
            started: Instant::now(),
            len: payload.len() as u64,
            _permit: permit,
            answer,
        });
        let producer = self.producer.read().expect("not poisoned").clone();
        // Counted before the send: the delivery callback, on another
        // thread, may settle the record before `send` returns.
        self.metrics.queue_depth.inc();
        let mut record = BaseRecord::with_opaque_to(&self.topic, ticket)
            .key(key)
            .payload(&payload)
            .headers(h);
        let sent = loop {
            match producer.send(record) {
                Ok(()) => break Ok(()),
                // The record comes back with its ticket: try again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => break Err(e),
            }
        };
        if sent.is_err() {
            self.metrics.queue_depth.dec();
            self.metrics.delivery_failures.inc();
        }
        async move {
            sent?;
            answered.await.unwrap_or(Err(KafkaError::Canceled))
        }
    }

    /// Waits until every enqueued record is acknowledged or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer
            .read()
            .expect("not poisoned")
            .clone()
            .flush(timeout)
    }

    /// Checks the broker answers a metadata request; updates readiness.
    pub fn probe(&self, ready: &Readiness) -> bool {
        let producer = self.producer.read().expect("not poisoned").clone();
        let up = producer
            .client()
            .fetch_metadata(Some(&self.topic), Duration::from_secs(2))
            .is_ok_and(|m| {
                m.topics()
                    .first()
                    .is_some_and(|t| t.error().is_none() && !t.partitions().is_empty())
            });
        ready.set(up);
        self.metrics.broker_up.set(i64::from(up));
        up
    }

    /// Replaces the producer with a new one (a new idempotent producer id).
    /// After records timed out, an idempotent producer's sequence numbers
    /// no longer match the broker's and every later send fails; a fresh
    /// producer is the way out. Call it only when nothing is in flight.
    pub fn reset(&self) -> Result<(), KafkaError> {
        let fresh = Arc::new(create(&self.settings, &self.metrics)?);
        *self.producer.write().expect("not poisoned") = fresh;
        Ok(())
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}
