//! Consumer lag in offsets and in seconds, for every consuming stage.
//!
//! Offsets: high watermark minus the consumer's position, per assigned
//! partition. Seconds: how old the last record read from a partition that
//! still has lag is — how far behind the stage runs. Labels are topic and
//! partition only.

use prometheus::{IntGaugeVec, Opts, Registry};
use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use std::collections::HashMap;
use std::time::Duration;

/// The two lag gauges of a stage.
#[derive(Clone)]
pub struct LagGauges {
    records: IntGaugeVec,
    seconds: IntGaugeVec,
    last_ts: std::sync::Arc<std::sync::Mutex<HashMap<(String, i32), i64>>>,
}

impl LagGauges {
    /// `chitose_<stage>_consumer_lag_records` and `_seconds`.
    pub fn new(stage: &str, registry: &Registry) -> Self {
        let records = IntGaugeVec::new(
            Opts::new(
                format!("chitose_{stage}_consumer_lag_records"),
                "Records behind the high watermark, per assigned partition.",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        let seconds = IntGaugeVec::new(
            Opts::new(
                format!("chitose_{stage}_consumer_lag_seconds"),
                "Age of the last record read from a partition that still has lag; 0 when caught up.",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(records.clone()))
            .expect("unique");
        registry
            .register(Box::new(seconds.clone()))
            .expect("unique");
        LagGauges {
            records,
            seconds,
            last_ts: Default::default(),
        }
    }

    /// Remembers the Kafka timestamp (ms) of the last record read.
    pub fn saw(&self, topic: &str, partition: i32, ts_ms: Option<i64>) {
        if let Some(ts) = ts_ms {
            self.last_ts
                .lock()
                .expect("not poisoned")
                .insert((topic.to_owned(), partition), ts);
        }
    }

    /// Refreshes the gauges from the consumer's assignment (blocking: one
    /// watermark request per partition).
    pub fn refresh<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
        &self,
        consumer: &C,
        now_ms: i64,
    ) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let Ok(positions) = consumer.position() else {
            return;
        };
        self.records.reset();
        self.seconds.reset();
        for e in assignment.elements() {
            let (topic, p) = (e.topic(), e.partition());
            let Ok((low, high)) = consumer.fetch_watermarks(topic, p, Duration::from_secs(2))
            else {
                continue;
            };
            let pos = match positions.find_partition(topic, p).map(|x| x.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => low,
            };
            let lag = (high - pos).max(0);
            let label = p.to_string();
            self.records.with_label_values(&[topic, &label]).set(lag);
            let secs = if lag == 0 {
                0
            } else {
                self.last_ts
                    .lock()
                    .expect("not poisoned")
                    .get(&(topic.to_owned(), p))
                    .map_or(0, |ts| ((now_ms - ts) / 1000).max(0))
            };
            self.seconds.with_label_values(&[topic, &label]).set(secs);
        }
    }
}
