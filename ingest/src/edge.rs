//! The edge: what every ingest source does to one JSON record.
//!
//! JSON → Avro with the schema (field-level errors), then the semantic
//! checks of [`chitose_schemas::edge`], then single-object framing. Pure,
//! so the sources, the generator's tests and the benchmarks share it.

use chitose_schemas::catalog::{RAW_EVENT, SchemaStore};
use chitose_schemas::codec::{AvroRecord, DecodeError, Reader, Timestamp};
use chitose_schemas::json::{JsonError, JsonToAvro, RejectReason};
use chitose_schemas::raw::{PayloadSpares, RawEvent};
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
        let mut scratch = EdgeScratch::default();
        let message = self.accept_with(line, now, &mut scratch)?;
        Ok(Accepted {
            event: scratch.event.take().expect("set by an accepted record"),
            message,
        })
    }

    /// As [`accept`](Self::accept), decoding the checked record over the
    /// last one in `scratch` (a source keeps one per stream, so a record
    /// allocates only its message). On success the record is
    /// [`EdgeScratch::event`] until the next call.
    pub fn accept_with(
        &self,
        line: &[u8],
        now: Timestamp,
        scratch: &mut EdgeScratch,
    ) -> Result<Vec<u8>, JsonError> {
        let mut message = Vec::with_capacity(line.len() / 2 + 16);
        framing::put_soe_header(&mut message, self.fingerprint);
        self.json.convert(line, &mut message)?;
        let event = scratch.decode(&message[10..]).map_err(|e| JsonError {
            path: "$".into(),
            expected: "a record the raw codec can read".into(),
            found: e.to_string(),
            reason: RejectReason::Malformed,
        })?;
        edge::check(event, self.hub_prefecture.as_deref(), now)?;
        Ok(message)
    }
}

/// What [`Edge::accept_with`] keeps between records: the last event (its
/// strings are decoded over) and a payload of each type.
#[derive(Debug, Default)]
pub struct EdgeScratch {
    event: Option<RawEvent>,
    spares: PayloadSpares,
}

impl EdgeScratch {
    /// The record the last successful [`Edge::accept_with`] accepted.
    pub fn event(&self) -> &RawEvent {
        self.event
            .as_ref()
            .expect("called after a record was accepted")
    }

    fn decode(&mut self, datum: &[u8]) -> Result<&RawEvent, DecodeError> {
        match &mut self.event {
            Some(ev) => {
                let mut r = Reader::new(datum);
                let decoded = ev
                    .decode_sparing(&mut r, &mut self.spares)
                    .and_then(|()| r.finish());
                if let Err(e) = decoded {
                    // A half-decoded event must not be read again.
                    self.event = None;
                    return Err(e);
                }
            }
            None => self.event = Some(RawEvent::from_datum(datum)?),
        }
        Ok(self.event.as_ref().expect("just set"))
    }
}
