//! A producer for services that write a batch, then flush or commit it:
//! the transform (and the benchmark's null pipeline, which must make the
//! same transactions).
//!
//! Such a producer asks only for failed deliveries
//! (`delivery.report.only.error`), so its event queue is nearly always
//! empty. rust-rdkafka's ways of serving that queue both cost more than
//! the queue holds:
//!
//! - `ThreadedProducer`'s thread calls `poll(100 ms)`, which blocks for
//!   the whole milliseconds left and then spins, polling with a 0 ms
//!   timeout, through the sub-millisecond remainder: about 1 % of a core
//!   per producer, a tenth of the transform's CPU at a broker-bound pace.
//! - `flush` (and `commit_transaction`, which calls it) checks the message
//!   count, then waits `poll(100 ms)` for an event; with no delivery
//!   reports none comes, so every flush lasted at least until the next
//!   100 ms boundary, spinning at its end, and every transaction with it.
//!
//! Here a thread serves the queue with non-blocking polls every
//! [`POLL_EVERY`], and [`BatchProducer::drain`] waits for librdkafka's
//! count of outstanding messages and events to reach zero, sleeping 1 ms
//! and doubling up to [`DRAIN_STEP_MAX`], before rust-rdkafka's flush,
//! which then returns at once. A failed delivery's report is still served
//! before `drain` returns: the count includes it until its event is
//! destroyed, after the context's `delivery` callback ran.
//!
//! Sleeping is not free on these machines: the first version (5 ms polls,
//! 1 ms drain steps) put 5.6 % and 9.5 % of the transform's CPU in the
//! pipeline run's flame graph into `nanosleep` wake-ups, since a broker
//! acknowledging 10 000 messages a second keeps a drain going for
//! seconds. Hence the slower poll and the growing step.

use rdkafka::ClientConfig;
use rdkafka::TopicPartitionList;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the background thread serves the event queue: a failed
/// delivery's report waits up to this long (and a drain with it).
pub const POLL_EVERY: Duration = Duration::from_millis(50);

/// The longest sleep of a drain between two looks at the count: what a
/// transaction may wait beyond its last acknowledgement.
pub const DRAIN_STEP_MAX: Duration = Duration::from_millis(16);

/// Non-blocking polls per wake-up: each serves at most one event (a
/// delivery report holds many messages; statistics come once a second).
const POLLS_PER_WAKE: usize = 8;

/// A record with a byte key and payload, as the services send them.
pub type Record<'a, C> = BaseRecord<'a, [u8], [u8], <C as ProducerContext>::DeliveryOpaque>;

/// A batch-at-a-time producer: see the module documentation.
pub struct BatchProducer<C: ProducerContext + 'static> {
    inner: Arc<BaseProducer<C>>,
    stop: Arc<AtomicBool>,
    poller: Option<JoinHandle<()>>,
}

impl<C: ProducerContext + 'static> BatchProducer<C> {
    /// Creates the producer from `config` (with only failed deliveries
    /// reported) and starts its polling thread.
    pub fn create(config: &ClientConfig, context: C) -> KafkaResult<Self> {
        let mut config = config.clone();
        config.set("delivery.report.only.error", "true");
        let inner = Arc::new(BaseProducer::from_config_and_context(&config, context)?);
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (inner, stop) = (inner.clone(), stop.clone());
            std::thread::Builder::new()
                .name("producer events".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..POLLS_PER_WAKE {
                            inner.poll(Duration::ZERO);
                        }
                        std::thread::sleep(POLL_EVERY);
                    }
                })
                .map_err(|_| KafkaError::ClientCreation("cannot start the polling thread".into()))?
        };
        Ok(Self {
            inner,
            stop,
            poller: Some(poller),
        })
    }

    /// The underlying producer (statistics, metadata, purge).
    pub fn base(&self) -> &BaseProducer<C> {
        &self.inner
    }

    /// Queues one record, waiting while librdkafka's queue is full (a
    /// batch can outrun the broker); any other refusal is returned.
    pub fn send(&self, mut record: Record<'_, C>) -> KafkaResult<()> {
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Waits until every queued message is delivered or failed and every
    /// report of a failure has been served, looking after 1 ms, then after
    /// steps that double up to [`DRAIN_STEP_MAX`].
    pub fn drain(&self, timeout: Duration) -> KafkaResult<()> {
        let deadline = Instant::now() + timeout;
        let mut step = Duration::from_millis(1);
        while self.inner.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
            }
            std::thread::sleep(step);
            step = (step * 2).min(DRAIN_STEP_MAX);
        }
        Ok(())
    }

    /// [`Self::drain`], then librdkafka's flush (which finds nothing left).
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        let deadline = Instant::now() + timeout;
        self.drain(timeout)?;
        self.inner
            .flush(deadline.saturating_duration_since(Instant::now()))
    }

    /// Fences an older producer with the same `transactional.id`.
    pub fn init_transactions(&self, timeout: Duration) -> KafkaResult<()> {
        self.inner.init_transactions(timeout)
    }

    /// Opens a transaction.
    pub fn begin_transaction(&self) -> KafkaResult<()> {
        self.inner.begin_transaction()
    }

    /// Adds the consumer's offsets to the open transaction.
    pub fn send_offsets_to_transaction(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
        timeout: Duration,
    ) -> KafkaResult<()> {
        self.inner
            .send_offsets_to_transaction(offsets, group, timeout)
    }

    /// Drains, then commits the open transaction.
    pub fn commit_transaction(&self, timeout: Duration) -> KafkaResult<()> {
        let deadline = Instant::now() + timeout;
        self.drain(timeout)?;
        self.inner
            .commit_transaction(deadline.saturating_duration_since(Instant::now()))
    }

    /// Aborts the open transaction, dropping its queued messages.
    pub fn abort_transaction(&self, timeout: Duration) -> KafkaResult<()> {
        self.inner.abort_transaction(timeout)
    }
}

impl<C: ProducerContext + 'static> Drop for BatchProducer<C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.poller.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BatchProducer;
    use rdkafka::ClientContext;
    use rdkafka::message::DeliveryResult;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseRecord, ProducerContext};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Failures(Arc<AtomicU64>);
    impl ClientContext for Failures {}
    impl ProducerContext for Failures {
        type DeliveryOpaque = ();
        fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
            if r.is_err() {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn config(
        mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    ) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", mock.bootstrap_servers())
            .set("linger.ms", "50")
            .set("message.timeout.ms", "2000");
        c
    }

    /// Failed deliveries are counted by the time `flush` returns (the
    /// at-least-once transform checks the count then), and afterwards
    /// nothing is left in flight.
    #[test]
    fn flush_returns_after_failures_are_reported() {
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 2, 1).unwrap();
        let failures = Failures::default();
        let p = BatchProducer::create(&config(&mock), failures.clone()).unwrap();
        let send = |n: u32| {
            for i in 0..n {
                let key = i.to_be_bytes();
                p.send(BaseRecord::to("t").key(&key[..]).payload(&b"x"[..]))
                    .unwrap();
            }
        };
        // A permanent error for every Produce request: each record fails.
        mock.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD; 50],
        );
        send(100);
        p.flush(Duration::from_secs(20)).unwrap();
        assert_eq!(failures.0.load(Ordering::SeqCst), 100);
        assert_eq!(rdkafka::producer::Producer::in_flight_count(p.base()), 0);
        // Healthy again: the next batch adds no failure.
        mock.clear_request_errors(RDKafkaApiKey::Produce);
        send(100);
        p.flush(Duration::from_secs(20)).unwrap();
        assert_eq!(failures.0.load(Ordering::SeqCst), 100);
    }

    /// A transaction commits through the drain, and a second one after it
    /// (the producer stays usable); dropping the producer stops its thread.
    #[test]
    fn transactions_commit_through_the_drain() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 2, 1).unwrap();
        let mut c = config(&mock);
        c.set("transactional.id", "batch-producer-test");
        let p = BatchProducer::create(&c, Failures::default()).unwrap();
        p.init_transactions(Duration::from_secs(20)).unwrap();
        for _ in 0..2 {
            p.begin_transaction().unwrap();
            for i in 0..100u32 {
                let key = i.to_be_bytes();
                p.send(BaseRecord::to("t").key(&key[..]).payload(&b"x"[..]))
                    .unwrap();
            }
            p.commit_transaction(Duration::from_secs(20)).unwrap();
            assert_eq!(rdkafka::producer::Producer::in_flight_count(p.base()), 0);
        }
        drop(p);
    }
}
