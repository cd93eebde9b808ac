//! The edge: what every ingest source does to one JSON record.
//!
//! JSON → Avro with the schema (field-level errors), then the semantic
//! checks of [`chitose_schemas::edge`], then single-object framing. Pure,
//! so the sources, the generator's tests and the benchmarks share it.

use chitose_schemas::catalog::{RAW_EVENT, SchemaStore};
use chitose_schemas::codec::{AvroRecord, Timestamp};
use chitose_schemas::json::{JsonError, JsonToAvro, RejectReason};
use chitose_schemas::raw::RawEvent;
use chitose_schemas::{edge, framing};

/// Converts and checks records for one hub.
#[derive(Debug)]
pub struct Edge {
    json: JsonToAvro,
    fingerprint: u64,
    hub_prefecture: Option<String>,
}

/// An accepted record.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The decoded event (for the Kafka key and metrics).
    pub event: RawEvent,
    /// The framed message to produce.
    pub message: Vec<u8>,
}

impl Edge {
    /// An edge for the current raw schema; `hub_prefecture` restricts what
    /// the sender may write (None: any, for tests and tools).
    pub fn new(store: &SchemaStore, hub_prefecture: Option<String>) -> Self {
        let current = store
            .latest(RAW_EVENT)
            .expect("the store holds chitose.raw.RawEvent");
        Edge {
            json: JsonToAvro::new(current.schema.clone())
                .expect("shipped schema attributes are valid (tested)"),
            fingerprint: current.fingerprint,
            hub_prefecture,
        }
    }

    /// Accepts or rejects one JSON record received at `now`.
    pub fn accept(&self, line: &[u8], now: Timestamp) -> Result<Accepted, JsonError> {
        let mut message = Vec::with_capacity(line.len() / 2 + 16);
        framing::put_soe_header(&mut message, self.fingerprint);
        self.json.convert(line, &mut message)?;
        let event = RawEvent::from_datum(&message[10..]).map_err(|e| JsonError {
            path: "$".into(),
            expected: "a record the raw codec can read".into(),
            found: e.to_string(),
            reason: RejectReason::Malformed,
        })?;
        edge::check(&event, self.hub_prefecture.as_deref(), now)?;
        Ok(Accepted { event, message })
    }
}
