//! The hub's producer: idempotent, acks=all, keyed by hub-local patient id,
//! with a bounded number of unacknowledged records (backpressure).

use crate::metrics::IngestMetrics;
use chitose_runtime::client_stats::StatsContext;
use chitose_runtime::kafka::KafkaSettings;
use chitose_runtime::ops::Readiness;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// A producer whose librdkafka statistics feed the ingest metrics.
fn create(
    settings: &KafkaSettings,
    metrics: &IngestMetrics,
) -> Result<FutureProducer<StatsContext>, KafkaError> {
    settings
        .with_statistics(&mut settings.producer_config())
        .create_with_context(StatsContext {
            client: metrics.client.clone(),
            lag: None,
        })
}

/// Producer with backpressure and metrics.
#[derive(Clone)]
pub struct RawProducer {
    producer: Arc<std::sync::RwLock<FutureProducer<StatsContext>>>,
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
            producer: Arc::new(std::sync::RwLock::new(create(settings, &metrics)?)),
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
        let started = Instant::now();
        let len = payload.len() as u64;
        let delivery = loop {
            let record = FutureRecord::to(&self.topic)
                .key(key)
                .payload(&payload)
                .headers(h.clone());
            let producer = self.producer.read().expect("not poisoned").clone();
            match producer.send_result(record) {
                Ok(d) => break Ok(d),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => break Err(e),
            }
        };
        self.metrics.queue_depth.inc();
        let metrics = self.metrics.clone();
        // The acknowledgement is awaited in its own task, so the permit is
        // returned when the broker answers, not when the caller next polls
        // (a caller blocked on `send` for a permit would otherwise never
        // poll, and never get one).
        let task = tokio::spawn(async move {
            let result = match delivery {
                Ok(d) => match d.await {
                    Ok(Ok(delivery)) => Ok(Ack {
                        partition: delivery.partition,
                        offset: delivery.offset,
                    }),
                    Ok(Err((e, _))) => Err(e),
                    Err(_) => Err(KafkaError::Canceled),
                },
                Err(e) => Err(e),
            };
            metrics.queue_depth.dec();
            drop(permit);
            match &result {
                Ok(_) => {
                    metrics
                        .produce_latency
                        .observe(started.elapsed().as_secs_f64());
                    metrics.accepted.inc();
                    metrics.produced_bytes.inc_by(len);
                }
                Err(_) => metrics.delivery_failures.inc(),
            }
            result
        });
        async move { task.await.unwrap_or(Err(KafkaError::Canceled)) }
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
        let fresh = create(&self.settings, &self.metrics)?;
        *self.producer.write().expect("not poisoned") = fresh;
        Ok(())
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}
