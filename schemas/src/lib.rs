//! # chitose-schemas: the contract every stage shares
//!
//! - `avro/`: the `.avsc` files, versioned (`raw/raw_event.vN.avsc`,
//!   `pseudo/<event_type>.vN.avsc`). Every field's `doc` starts with its
//!   class (DI, QI, SA, or OP for operational metadata) and says what the
//!   transform does with it.
//! - [`catalog`]: the schema store keyed by Rabin fingerprint.
//! - [`framing`]: single-object encoding and Confluent framing.
//! - [`codec`], [`raw`]: fast Avro binary codecs for chitose's Rust types.
//! - [`json`]: the JSON form of raw events (docs/json-form.md) → Avro, with
//!   errors that name the field path and never echo a value.
//! - [`edge`]: semantic checks a schema cannot express.
//! - [`mynumber`]: My Number (個人番号) detection.
//! - [`reference`]: reference tables (prefectures, ICD-10, 特定健診
//!   thresholds, YJ categories, age bands).
//! - [`registry`]: the Confluent-compatible registry seam.
//! - [`render`]: any framed datum back to JSON lines (`chitose tail`),
//!   direct identifiers masked.
//! - [`docs`]: the data dictionary in Markdown (`chitose schemas docs`).
//!
//! Nothing here does I/O beyond reading a schema folder: it is the pure core.

pub mod base32;
pub mod canonical;
pub mod catalog;
pub mod codec;
pub mod docs;
pub mod edge;
pub mod framing;
pub mod json;
pub mod json_schema;
pub mod mynumber;
pub mod raw;
pub mod reference;
pub mod registry;
pub mod render;

use apache_avro::Schema;
use catalog::{RAW_EVENT, SchemaEntry, SchemaStore};
use codec::{AvroRecord, DecodeError};
use framing::{FrameError, Framed, unframe};
use raw::RawEvent;
use std::collections::HashMap;
use std::sync::Arc;

/// Why a Kafka message could not be read as a raw event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Bad header.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A fingerprint no known schema has.
    #[error("message header: expected the fingerprint of a known schema, found {0:016x}")]
    UnknownFingerprint(u64),
    /// A Confluent id this decoder has not been told about.
    #[error("message header: expected a registered schema id, found {0}")]
    UnknownSchemaId(u32),
    /// A schema of another record.
    #[error("message header: expected a {expected} schema, found {found}")]
    WrongSchema {
        /// Wanted.
        expected: &'static str,
        /// Got.
        found: String,
    },
    /// The datum does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// An older writer schema could not be resolved to the current one.
    #[error("schema resolution from {from} to the current version failed: {message}")]
    Resolution {
        /// Writer schema path.
        from: String,
        /// apache-avro's message (it carries no datum values).
        message: String,
    },
}

/// Encodes and decodes raw events on the wire.
///
/// The current writer schema takes the fast path. Data written with an older
/// version of the same record is resolved through apache-avro first (slow,
/// but rare: only during a rolling upgrade of the hubs).
#[derive(Debug, Clone)]
pub struct RawCodec {
    store: SchemaStore,
    current: Arc<SchemaEntry>,
    confluent_ids: HashMap<u32, u64>,
}

impl RawCodec {
    /// A codec over the schemas of `store`; its newest RawEvent is current.
    pub fn new(store: SchemaStore) -> Self {
        let current = store
            .latest(RAW_EVENT)
            .expect("the store holds chitose.raw.RawEvent")
            .clone();
        RawCodec {
            store,
            current,
            confluent_ids: HashMap::new(),
        }
    }

    /// The current writer schema.
    pub fn current(&self) -> &Arc<SchemaEntry> {
        &self.current
    }

    /// Tells the codec which fingerprint a Confluent registry id stands for.
    pub fn add_confluent_id(&mut self, id: u32, fingerprint: u64) {
        self.confluent_ids.insert(id, fingerprint);
    }

    /// Appends `ev` as a single-object encoded message.
    pub fn encode_soe(&self, ev: &RawEvent, out: &mut Vec<u8>) {
        framing::put_soe_header(out, self.current.fingerprint);
        codec::AvroCodec::encode(ev, out);
    }

    /// Appends `ev` with Confluent framing under `schema_id`.
    pub fn encode_confluent(&self, ev: &RawEvent, schema_id: u32, out: &mut Vec<u8>) {
        framing::put_confluent_header(out, schema_id);
        codec::AvroCodec::encode(ev, out);
    }

    /// Decodes a framed message.
    pub fn decode(&self, msg: &[u8]) -> Result<RawEvent, MessageError> {
        Ok(RawEvent::from_datum(&self.datum(msg)?)?)
    }

    /// Decodes a framed message over `ev`, reusing its buffers (the
    /// transform keeps one event per worker, so a record in the current
    /// schema allocates nothing; `spares` keeps a payload of each type). On
    /// error `ev` must not be used.
    pub fn decode_into(
        &self,
        msg: &[u8],
        ev: &mut RawEvent,
        spares: &mut raw::PayloadSpares,
    ) -> Result<(), MessageError> {
        let datum = self.datum(msg)?;
        let mut r = codec::Reader::new(&datum);
        ev.decode_sparing(&mut r, spares)?;
        r.finish()?;
        Ok(())
    }

    /// The datum of a framed message in the current schema: the message's
    /// own bytes when it was written with it, else resolved.
    fn datum<'m>(&self, msg: &'m [u8]) -> Result<std::borrow::Cow<'m, [u8]>, MessageError> {
        let (fp, datum) = match unframe(msg)? {
            Framed::SingleObject { fingerprint, datum } => (fingerprint, datum),
            Framed::Confluent { schema_id, datum } => (
                *self
                    .confluent_ids
                    .get(&schema_id)
                    .ok_or(MessageError::UnknownSchemaId(schema_id))?,
                datum,
            ),
        };
        if fp == self.current.fingerprint {
            return Ok(std::borrow::Cow::Borrowed(datum));
        }
        let writer = self
            .store
            .by_fingerprint(fp)
            .ok_or(MessageError::UnknownFingerprint(fp))?;
        if writer.full_name != RAW_EVENT {
            return Err(MessageError::WrongSchema {
                expected: RAW_EVENT,
                found: writer.full_name.clone(),
            });
        }
        Ok(std::borrow::Cow::Owned(resolve(
            writer,
            &self.current.schema,
            datum,
        )?))
    }
}

/// Re-encodes a datum written with `writer` in the `reader` schema.
///
/// apache-avro's own resolution picks the first union branch a value can be
/// coerced into, which for a union of records with all-optional fields
/// (Checkup) swallows other payloads. Avro's rule is to match named branches
/// by name, so we decode with the writer schema alone and map the value
/// onto the reader by names ourselves.
pub fn resolve(
    writer: &SchemaEntry,
    reader: &Schema,
    datum: &[u8],
) -> Result<Vec<u8>, MessageError> {
    let fail = |message: String| MessageError::Resolution {
        from: writer.path.clone(),
        message,
    };
    let mut slice = datum;
    let value = apache_avro::from_avro_datum(&writer.schema, &mut slice, None)
        .map_err(|e| fail(e.to_string()))?;
    if !slice.is_empty() {
        return Err(fail(format!("{} bytes left after the record", slice.len())));
    }
    let names = resolution::Names::of(&[&writer.schema, reader]);
    let value = resolution::map(value, &writer.schema, reader, &names, "$").map_err(fail)?;
    apache_avro::to_avro_datum(reader, value).map_err(|e| fail(e.to_string()))
}

pub(crate) mod resolution {
    use apache_avro::Schema;
    use apache_avro::types::Value;
    use std::collections::HashMap;

    pub(crate) struct Names(HashMap<String, Schema>);

    impl Names {
        pub(crate) fn of(schemas: &[&Schema]) -> Self {
            let mut out = HashMap::new();
            schemas
                .iter()
                .for_each(|s| crate::catalog::named_types(s, &mut out));
            Names(out)
        }
        pub(crate) fn get<'a>(&'a self, s: &'a Schema) -> &'a Schema {
            match s {
                Schema::Ref { name } => self.0.get(&name.fullname(None)).unwrap_or(s),
                _ => s,
            }
        }
    }

    fn name_of(s: &Schema) -> Option<&str> {
        match s {
            Schema::Record(r) => Some(&r.name.name),
            Schema::Enum(e) => Some(&e.name.name),
            Schema::Ref { name } => Some(&name.name),
            _ => None,
        }
    }

    pub fn map(
        v: Value,
        w: &Schema,
        r: &Schema,
        names: &Names,
        path: &str,
    ) -> Result<Value, String> {
        let (w, r) = (names.get(w), names.get(r));
        match (v, w, r) {
            (Value::Union(i, inner), Schema::Union(wu), Schema::Union(ru)) => {
                let wb = wu
                    .variants()
                    .get(i as usize)
                    .ok_or_else(|| format!("{path}: union branch {i} out of range"))?;
                let wb = names.get(wb);
                let j = ru
                    .variants()
                    .iter()
                    .position(|rb| {
                        let rb = names.get(rb);
                        match (name_of(wb), name_of(rb)) {
                            (Some(a), Some(b)) => a == b,
                            (None, None) => {
                                std::mem::discriminant(wb) == std::mem::discriminant(rb)
                            }
                            _ => false,
                        }
                    })
                    .ok_or_else(|| format!("{path}: writer branch {i} has no reader branch"))?;
                let inner = map(*inner, wb, &ru.variants()[j], names, path)?;
                Ok(Value::Union(j as u32, Box::new(inner)))
            }
            (Value::Record(fields), Schema::Record(wr), Schema::Record(rr)) => {
                let mut by_name: HashMap<String, (Value, &Schema)> = HashMap::new();
                for ((name, fv), wf) in fields.into_iter().zip(&wr.fields) {
                    by_name.insert(name, (fv, &wf.schema));
                }
                let mut out = Vec::with_capacity(rr.fields.len());
                for rf in &rr.fields {
                    let fpath = format!("{path}.{}", rf.name);
                    let v = match by_name.remove(&rf.name) {
                        Some((fv, ws)) => map(fv, ws, &rf.schema, names, &fpath)?,
                        None => {
                            let d = rf
                                .default
                                .as_ref()
                                .ok_or_else(|| format!("{fpath}: no value and no default"))?;
                            let v = Value::from(d.clone());
                            let target = match names.get(&rf.schema) {
                                // A union's default is of its first branch.
                                Schema::Union(u) => &u.variants()[0],
                                s => s,
                            };
                            let v = v.resolve(target).map_err(|e| format!("{fpath}: {e}"))?;
                            match names.get(&rf.schema) {
                                Schema::Union(_) => Value::Union(0, Box::new(v)),
                                _ => v,
                            }
                        }
                    };
                    out.push((rf.name.clone(), v));
                }
                Ok(Value::Record(out))
            }
            (Value::Enum(_, sym), Schema::Enum(_), Schema::Enum(re)) => {
                match re.symbols.iter().position(|s| *s == sym) {
                    Some(i) => Ok(Value::Enum(i as u32, sym)),
                    None => match &re.default {
                        Some(d) => Ok(Value::Enum(
                            re.symbols.iter().position(|s| s == d).unwrap_or(0) as u32,
                            d.clone(),
                        )),
                        None => Err(format!(
                            "{path}: symbol unknown to the reader and no default"
                        )),
                    },
                }
            }
            (Value::Array(items), Schema::Array(wa), Schema::Array(ra)) => Ok(Value::Array(
                items
                    .into_iter()
                    .map(|x| map(x, &wa.items, &ra.items, names, path))
                    .collect::<Result<_, _>>()?,
            )),
            // Primitives and promotions: apache-avro's resolution is right here.
            (v, _, r) => v.resolve(r).map_err(|e| format!("{path}: {e}")),
        }
    }
}
