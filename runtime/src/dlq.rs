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
