//! The dead-letter queue contract: a record that a stage cannot process
//! goes to `health.dlq` with its original key, bytes and headers, plus
//! these headers saying why and where from. `chitose dlq list` and
//! `chitose dlq replay` read them back.
//!
//! The DLQ holds raw bytes (patient identifiers included): its ACLs are the
//! raw zone's. The error header never carries a value (every stage's errors
//! name the field and the shape found).

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

/// Stage that gave up (`transform`, `sink`).
pub const STAGE: &str = "chitose.dlq.stage";
/// Stable error class (`decode`, `validation`, `policy`).
pub const ERROR_CLASS: &str = "chitose.dlq.error_class";
/// Human message: field, expected, shape found.
pub const ERROR: &str = "chitose.dlq.error";
/// Topic the record was read from.
pub const SOURCE_TOPIC: &str = "chitose.dlq.source_topic";
/// Its partition.
pub const SOURCE_PARTITION: &str = "chitose.dlq.source_partition";
/// Its offset.
pub const SOURCE_OFFSET: &str = "chitose.dlq.source_offset";
/// Set on a record `chitose dlq replay` re-submitted: the DLQ offset it came from.
pub const REPLAYED_FROM: &str = "chitose.dlq.replayed_from";

/// Why a record is dead-lettered.
#[derive(Debug, Clone)]
pub struct Reason<'a> {
    /// Stage.
    pub stage: &'a str,
    /// Error class.
    pub class: &'a str,
    /// Message.
    pub message: &'a str,
}

/// `msg`'s own headers without earlier DLQ ones.
fn own_headers<M: Message>(msg: &M) -> OwnedHeaders {
    let mut h = OwnedHeaders::new();
    if let Some(orig) = msg.headers() {
        for i in 0..orig.count() {
            let x = orig.get(i);
            if !x.key.starts_with("chitose.dlq.") {
                h = h.insert(Header {
                    key: x.key,
                    value: x.value,
                });
            }
        }
    }
    h
}

/// The DLQ headers for `msg`: its own headers first (except earlier DLQ
/// headers), then the reason and source coordinates.
pub fn headers<M: Message>(msg: &M, reason: &Reason<'_>) -> OwnedHeaders {
    let mut h = own_headers(msg);
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    for (k, v) in [
        (STAGE, reason.stage),
        (ERROR_CLASS, reason.class),
        (ERROR, reason.message),
        (SOURCE_TOPIC, msg.topic()),
        (SOURCE_PARTITION, partition.as_str()),
        (SOURCE_OFFSET, offset.as_str()),
    ] {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    h
}

/// A header's value as text.
pub fn header<'m, M: Message>(msg: &'m M, key: &str) -> Option<&'m str> {
    let h = msg.headers()?;
    (0..h.count())
        .map(|i| h.get(i))
        .find(|x| x.key == key)
        .and_then(|x| x.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The record's headers minus the DLQ ones, plus [`REPLAYED_FROM`]: what
/// a replay sends back to the source topic.
pub fn replay_headers<M: Message>(msg: &M) -> OwnedHeaders {
    let h = own_headers(msg);
    let from = format!("{}/{}", msg.partition(), msg.offset());
    h.insert(Header {
        key: REPLAYED_FROM,
        value: Some(from.as_bytes()),
    })
}

/// The consumer group whose committed offsets mark where the last replay
/// stopped.
pub const REPLAY_GROUP: &str = "chitose-dlq-replay";

/// Why a DLQ command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// Reading the DLQ failed.
    #[error(transparent)]
    Read(#[from] crate::topic_read::ReadError),
    /// A client call failed.
    #[error("the dead-letter topic: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The runtime that waits for acknowledgements could not start.
    #[error("starting the runtime that waits for acknowledgements: {0}")]
    Runtime(#[from] std::io::Error),
    /// A replayed record was not acknowledged; nothing was committed.
    #[error("replaying {partition}/{offset}: expected an acknowledgement, found {error}")]
    NotAcknowledged {
        /// DLQ partition.
        partition: i32,
        /// DLQ offset.
        offset: i64,
        /// The broker's or client's error.
        error: String,
    },
}

/// Which dead-lettered records a replay sends back.
#[derive(Debug, Clone)]
pub struct ReplayFilter {
    /// Only records of this stage.
    pub stage: String,
    /// Only records of this error class (all when None).
    pub class: Option<String>,
    /// Records go back only to `<raw_prefix>NN` (a hub's raw topic).
    pub raw_prefix: String,
}

/// What happened to one DLQ record in a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayStep {
    /// Sent back to `to` (or would be, in a dry run).
    Replayed {
        /// DLQ partition.
        partition: i32,
        /// DLQ offset.
        offset: i64,
        /// Its source topic.
        to: String,
    },
    /// Its header names a topic that is not a hub's raw topic: refused.
    Refused {
        /// DLQ partition.
        partition: i32,
        /// DLQ offset.
        offset: i64,
    },
}

/// A replay's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Sent back (or would be).
    pub replayed: u64,
    /// Not matching the filter: passed over, and not offered again.
    pub passed: u64,
    /// Refused (their source is not a raw topic).
    pub refused: u64,
}

/// Re-submits dead-lettered records of `topic` to their source topics,
/// from where the last replay stopped (group [`REPLAY_GROUP`]) to the end
/// seen at the start. The cursor is committed only once every replayed
/// record is acknowledged; a dry run sends and commits nothing. `step`
/// hears about each record replayed or refused.
pub fn replay(
    kafka: &crate::kafka::KafkaSettings,
    topic: &str,
    filter: &ReplayFilter,
    dry_run: bool,
    mut step: impl FnMut(ReplayStep),
) -> Result<ReplaySummary, ReplayError> {
    use crate::kafka::ErrorMemory;
    use crate::topic_read::{Start, assign, drain};
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{Offset, TopicPartitionList};
    use std::collections::BTreeMap;

    let c: BaseConsumer<ErrorMemory> = kafka
        .consumer_config(REPLAY_GROUP)
        .create_with_context(ErrorMemory::default())?;
    let ends = assign(&c, topic, Start::Committed)?;
    let producer: FutureProducer = kafka.producer_config().create()?;
    let mut sum = ReplaySummary::default();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut pending = Vec::new();
    drain::<ReplayError>(
        &c,
        ends,
        false,
        || false,
        |m| {
            next.insert(m.partition(), m.offset() + 1);
            let matches = header(m, STAGE) == Some(filter.stage.as_str())
                && filter
                    .class
                    .as_deref()
                    .is_none_or(|k| header(m, ERROR_CLASS) == Some(k));
            let Some(source) = header(m, SOURCE_TOPIC).filter(|_| matches) else {
                sum.passed += 1;
                return Ok(());
            };
            if !crate::topics::is_raw_topic(source, &filter.raw_prefix) {
                sum.refused += 1;
                step(ReplayStep::Refused {
                    partition: m.partition(),
                    offset: m.offset(),
                });
                return Ok(());
            }
            sum.replayed += 1;
            step(ReplayStep::Replayed {
                partition: m.partition(),
                offset: m.offset(),
                to: source.to_owned(),
            });
            if dry_run {
                return Ok(());
            }
            let mut rec = FutureRecord::to(source)
                .payload(m.payload().unwrap_or(&[]))
                .headers(replay_headers(m));
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            let f = producer
                .send_result(rec)
                .map_err(|(e, _)| ReplayError::NotAcknowledged {
                    partition: m.partition(),
                    offset: m.offset(),
                    error: e.to_string(),
                })?;
            pending.push((m.partition(), m.offset(), f));
            Ok(())
        },
    )?;
    if dry_run {
        return Ok(sum);
    }
    // Commit the cursor only once every replayed record is acknowledged.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for (partition, offset, f) in pending {
        let not_acked = |error: String| ReplayError::NotAcknowledged {
            partition,
            offset,
            error,
        };
        rt.block_on(f)
            .map_err(|_| not_acked("the delivery was cancelled".into()))?
            .map_err(|(e, _)| not_acked(e.to_string()))?;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &next {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
    }
    if !next.is_empty() {
        c.commit(&tpl, CommitMode::Sync)?;
    }
    Ok(sum)
}
