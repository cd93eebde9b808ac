//! The hub's producer: idempotent, acks=all, keyed by hub-local patient id,
//! with a bounded number of unacknowledged records (backpressure).
//!
//! Each record carries a ticket (its permit, start time, size and answer)
//! as librdkafka's delivery opaque, and the delivery callback, on the
//! producer's polling thread, settles it: metrics, permit, answer. So a
//! record costs no task, no second channel and no headers copy. The answer
//! is a channel for a caller that awaits one record (HTTP); a stream of
//! records (the files and simulate sources) is answered through a
//! [`Tracker`] instead, with no channel or waker per record.

use crate::metrics::IngestMetrics;
use chitose_runtime::client_stats::StatsContext;
use chitose_runtime::kafka::KafkaSettings;
use chitose_runtime::ops::Readiness;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// One noted delivery: the sender's sequence number and the outcome.
pub type Delivery = (u64, Result<Ack, KafkaError>);

/// Deliveries of a stream of records, each noted under the number its
/// sender gave it ([`RawProducer::send_tracked`]). The sender takes them
/// in batches; a sender that waits is woken once per batch, not once per
/// record.
#[derive(Clone, Default)]
pub struct Tracker(Arc<TrackerInner>);

#[derive(Default)]
struct TrackerInner {
    /// Deliveries noted, so a sender can look without taking the lock.
    noted: AtomicU64,
    taken: AtomicU64,
    done: Mutex<Vec<Delivery>>,
    notify: Notify,
}

impl Tracker {
    fn note(&self, seq: u64, r: Result<Ack, KafkaError>) {
        self.0.done.lock().expect("not poisoned").push((seq, r));
        self.0.noted.fetch_add(1, Ordering::Release);
        self.0.notify.notify_one();
    }

    /// Moves the deliveries noted since the last call into `into`.
    pub fn take(&self, into: &mut Vec<Delivery>) {
        if self.0.noted.load(Ordering::Acquire) == self.0.taken.load(Ordering::Relaxed) {
            return;
        }
        let mut done = self.0.done.lock().expect("not poisoned");
        self.0.taken.fetch_add(done.len() as u64, Ordering::Relaxed);
        into.append(&mut done);
    }

    /// Waits until a delivery is noted after the last [`Tracker::take`]
    /// (at once if one already was).
    pub async fn noted(&self) {
        if self.0.noted.load(Ordering::Acquire) != self.0.taken.load(Ordering::Relaxed) {
            return;
        }
        self.0.notify.notified().await;
    }
}

/// Who hears of a record's delivery.
enum Answer {
    One(oneshot::Sender<Result<Ack, KafkaError>>),
    Tracked(Tracker, u64),
}

/// One record in flight, settled by the delivery callback.
struct Ticket {
    started: Instant,
    len: u64,
    /// Returned to the semaphore when the broker answers, whether or not
    /// anyone awaits the answer.
    _permit: OwnedSemaphorePermit,
    /// Taken by the delivery callback; a ticket dropped unanswered (a
    /// producer torn down with records queued) tells its tracker the
    /// record was not delivered, so no sender waits for it forever.
    answer: Option<Answer>,
}

impl Ticket {
    fn answer(&mut self, r: Result<Ack, KafkaError>) {
        match self.answer.take() {
            // A caller that stopped waiting is no error.
            Some(Answer::One(tx)) => {
                let _ = tx.send(r);
            }
            Some(Answer::Tracked(t, seq)) => t.note(seq, r),
            None => {}
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if matches!(self.answer, Some(Answer::Tracked(..))) {
            self.answer(Err(KafkaError::Canceled));
        }
    }
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

    fn delivery(&self, r: &DeliveryResult<'_>, mut ticket: Box<Ticket>) {
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
        // The permit goes back with the ticket.
        ticket.answer(result);
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
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> impl Future<Output = Result<Ack, KafkaError>> + Send + 'static + use<> {
        let (answer, answered) = oneshot::channel();
        let sent = self
            .enqueue(key, payload, headers, Answer::One(answer))
            .await;
        async move {
            sent?;
            answered.await.unwrap_or(Err(KafkaError::Canceled))
        }
    }

    /// Enqueues one record of a stream, as [`RawProducer::send`] does; its
    /// delivery is noted in `tracker` under `seq`. An error here means the
    /// record was not enqueued, and nothing is noted for it.
    pub async fn send_tracked(
        &self,
        key: &str,
        payload: &[u8],
        headers: &[(&str, &[u8])],
        tracker: &Tracker,
        seq: u64,
    ) -> Result<(), KafkaError> {
        self.enqueue(key, payload, headers, Answer::Tracked(tracker.clone(), seq))
            .await
    }

    async fn enqueue(
        &self,
        key: &str,
        payload: &[u8],
        headers: &[(&str, &[u8])],
        answer: Answer,
    ) -> Result<(), KafkaError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closes");
        let ticket = Box::new(Ticket {
            started: Instant::now(),
            len: payload.len() as u64,
            _permit: permit,
            answer: Some(answer),
        });
        let producer = self.producer.read().expect("not poisoned").clone();
        // Counted before the send: the delivery callback, on another
        // thread, may settle the record before `send` returns.
        self.metrics.queue_depth.inc();
        let mut record = BaseRecord::with_opaque_to(&self.topic, ticket)
            .key(key)
            .payload(payload);
        if !headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(headers.len());
            for (k, v) in headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(*v),
                });
            }
            record = record.headers(h);
        }
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                // The record comes back with its ticket: try again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, mut r)) => {
                    // Not enqueued: the caller hears it from this error,
                    // not from the ticket as well.
                    r.delivery_opaque.answer = None;
                    self.metrics.queue_depth.dec();
                    self.metrics.delivery_failures.inc();
                    return Err(e);
                }
            }
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
