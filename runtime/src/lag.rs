//! Consumer lag in offsets and in seconds, for every consuming stage.
//!
//! Offsets: last stable offset (what a read_committed consumer can reach)
//! minus the consumer's position, per assigned
//! partition. Seconds: how old the last record read from a partition that
//! still has lag is — how far behind the stage runs. Labels are topic and
//! partition only. Until a partition is assigned (and whenever none is),
//! each gauge holds one zero series labelled `topic="none",
//! partition="-1"` (librdkafka's own mark for "no partition"), so the
//! dashboard, the alerts and the autoscalers see 0 from start-up instead
//! of "no data".

use crate::client_stats::Report;
use prometheus::{IntGaugeVec, Opts, Registry};
use std::collections::HashMap;

/// The two lag gauges of a stage.
#[derive(Clone)]
pub struct LagGauges {
    records: IntGaugeVec,
    seconds: IntGaugeVec,
    /// Topic → partition → timestamp of the last record read (by topic
    /// first, so a record is noted without allocating a key).
    last_ts: std::sync::Arc<std::sync::Mutex<HashMap<String, HashMap<i32, i64>>>>,
}

impl LagGauges {
    /// `chitose_<stage>_consumer_lag_records` and `_seconds`.
    pub fn new(stage: &str, registry: &Registry) -> Self {
        let records = IntGaugeVec::new(
            Opts::new(
                format!("chitose_{stage}_consumer_lag_records"),
                "Records behind the last stable offset, per assigned partition.",
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
        let g = LagGauges {
            records,
            seconds,
            last_ts: Default::default(),
        };
        g.none_assigned();
        g
    }

    fn none_assigned(&self) {
        for v in [&self.records, &self.seconds] {
            v.with_label_values(&[NONE.0, NONE.1]).set(0);
        }
    }

    /// Remembers the Kafka timestamp (ms) of the last record read.
    pub fn saw(&self, topic: &str, partition: i32, ts_ms: Option<i64>) {
        if let Some(ts) = ts_ms {
            let mut map = self.last_ts.lock().expect("not poisoned");
            match map.get_mut(topic) {
                Some(parts) => {
                    parts.insert(partition, ts);
                }
                None => {
                    map.insert(topic.to_owned(), HashMap::from([(partition, ts)]));
                }
            }
        }
    }

    /// Sets the gauges from librdkafka's statistics (every
    /// [`STATS_INTERVAL_MS`]): its cached watermarks and positions, so no
    /// request goes to the broker (a blocking ListOffsets per partition
    /// stalled the stages when the broker was slow to answer).
    pub fn observe(&self, stats: &Report) {
        let now_ms = stats.time * 1000;
        self.records.reset();
        self.seconds.reset();
        let last_ts = self.last_ts.lock().expect("not poisoned");
        let mut assigned = false;
        for (topic, t) in &stats.topics {
            for (p, s) in &t.partitions {
                // -1 is librdkafka's internal unassigned partition; only
                // partitions this consumer fetches count.
                if *p < 0 || !s.desired || s.fetch_state == "none" {
                    continue;
                }
                // A read_committed consumer can reach the last stable offset.
                let end = if s.ls_offset >= 0 {
                    s.ls_offset
                } else {
                    s.hi_offset
                };
                let pos = [s.app_offset, s.committed_offset, s.lo_offset]
                    .into_iter()
                    .find(|o| *o >= 0);
                let (Some(pos), true) = (pos, end >= 0) else {
                    continue;
                };
                let lag = (end - pos).max(0);
                let label = p.to_string();
                self.records.with_label_values(&[topic, &label]).set(lag);
                let secs = if lag == 0 {
                    0
                } else {
                    last_ts
                        .get(topic.as_str())
                        .and_then(|parts| parts.get(p))
                        .map_or(0, |ts| ((now_ms - ts) / 1000).max(0))
                };
                self.seconds.with_label_values(&[topic, &label]).set(secs);
                assigned = true;
            }
        }
        if !assigned {
            self.none_assigned();
        }
    }
}

/// Labels of the zero series shown while no partition is assigned.
const NONE: (&str, &str) = ("none", "-1");

/// How often librdkafka reports statistics (and the lag gauges move).
pub const STATS_INTERVAL_MS: &str = "5000";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_gauges_exist_from_start_up() {
        let registry = Registry::new();
        let _g = LagGauges::new("transform", &registry);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .filter(|f| !f.get_metric().is_empty())
            .map(|f| f.name().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "chitose_transform_consumer_lag_records",
                "chitose_transform_consumer_lag_seconds"
            ]
        );
    }
}
