//! Reading a whole topic from the command line (`dlq`, `tail`): assign
//! every partition, read to the end seen at the start (or on, with
//! `follow`).

use crate::kafka::ErrorMemory;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;

/// Why a topic could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// What failed, with the connection error behind it (a refused
    /// certificate, a failed login) when librdkafka reported one.
    #[error("{0}")]
    Explained(String),
    /// The topic is not there.
    #[error("topic {0}: expected it to exist, found no partitions")]
    NoTopic(String),
    /// A client call failed.
    #[error("reading the topic: {0}")]
    Kafka(#[from] KafkaError),
}

/// Where each partition starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// The oldest record kept.
    Beginning,
    /// The consumer group's committed offset (the beginning when none).
    Committed,
    /// The last N records of each partition.
    Last(i64),
}

/// `what` failed: the error, with the connection error behind it (a
/// refused certificate, a failed login) when librdkafka reported one.
pub fn why(c: &BaseConsumer<ErrorMemory>, what: String) -> ReadError {
    // librdkafka queues its logs and errors for the client: serve the
    // queue until it is empty so the context hears them (each poll hands
    // back at most one error event).
    for _ in 0..50 {
        match c.poll(Duration::from_millis(100)) {
            None => break,
            Some(Err(e)) => c.context().note(&e.to_string()),
            Some(Ok(_)) => {}
        }
    }
    ReadError::Explained(c.context().explain(what))
}

/// Assigns every partition of `topic` and returns the high watermarks seen
/// now, for the partitions that have records to read.
pub fn assign(
    c: &BaseConsumer<ErrorMemory>,
    topic: &str,
    start: Start,
) -> Result<BTreeMap<i32, i64>, ReadError> {
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| why(c, format!("fetching metadata of {topic}: {e}")))?;
    let Some(t) = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && !t.partitions().is_empty())
    else {
        return Err(ReadError::NoTopic(topic.to_owned()));
    };
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in t.partitions() {
        let (low, high) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        let from = match start {
            Start::Last(n) => (high - n).max(low),
            _ => low,
        };
        tpl.add_partition_offset(topic, p.id(), Offset::Offset(from))?;
        if high > from {
            ends.insert(p.id(), high);
        }
    }
    if let Start::Committed = start {
        let committed = c.committed_offsets(tpl.clone(), Duration::from_secs(10))?;
        for e in committed.elements() {
            if let Offset::Offset(o) = e.offset() {
                tpl.set_partition_offset(topic, e.partition(), Offset::Offset(o))?;
                if ends.get(&e.partition()).is_some_and(|end| o >= *end) {
                    ends.remove(&e.partition());
                }
            }
        }
    }
    c.assign(&tpl)?;
    Ok(ends)
}

/// Calls `f` per record until every partition reached its end as of
/// [`assign`]; records arriving meanwhile are left for the next run. With
/// `follow`, goes on reading until `stop` returns true. `f`'s error ends
/// the read and is returned.
pub fn drain<E: From<ReadError>>(
    c: &BaseConsumer<ErrorMemory>,
    mut ends: BTreeMap<i32, i64>,
    follow: bool,
    stop: impl Fn() -> bool,
    mut f: impl FnMut(&BorrowedMessage<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let mut idle = 0;
    while follow || !ends.is_empty() {
        if stop() {
            break;
        }
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                idle = 0;
                if follow {
                    f(&m)?;
                    continue;
                }
                if let Some(end) = ends.get(&m.partition()).copied() {
                    if m.offset() < end {
                        f(&m)?;
                    }
                    if m.offset() + 1 >= end {
                        ends.remove(&m.partition());
                    }
                }
            }
            Some(Err(e)) => return Err(ReadError::Kafka(e).into()),
            None if !follow => {
                // A partition written in transactions ends with a commit
                // marker, which is never delivered: its last record's
                // offset + 1 stays below the high watermark. Quiet for 3 s
                // after reaching the fetch position means the end.
                idle += 1;
                if idle >= 6 {
                    break;
                }
            }
            None => {}
        }
    }
    Ok(())
}
