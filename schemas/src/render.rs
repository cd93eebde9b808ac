//! Framed Avro messages back to JSON, for people (`chitose tail`).
//!
//! The output is the JSON form of docs/json-form.md — a union of records as
//! the plain object of its branch, dates `YYYY-MM-DD`, timestamps RFC 3339
//! in JST — so a raw event reads the way a hub wrote it. Fields whose doc
//! starts with `DI:` (direct identifiers: names, phone, address, insurance
//! numbers…) are masked unless the caller asks for them: an operator
//! looking at lag or a DLQ entry rarely needs them, and a terminal
//! scroll-back is not a place for them.

use crate::catalog::{SchemaEntry, SchemaStore};
use crate::codec::{Date, Timestamp};
use crate::framing::{FrameError, Framed, unframe};
use crate::resolution::Names;
use apache_avro::Schema;
use apache_avro::types::Value;
use serde_json::{Map, Value as Json, json};
use std::collections::HashMap;
use std::sync::Arc;

/// What a masked direct identifier is shown as.
pub const MASK: &str = "<DI masked>";

/// Why a message could not be rendered. Never carries a datum value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// Bad header.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// No known schema has this fingerprint.
    #[error("message header: expected the fingerprint of a known schema, found {0:016x}")]
    UnknownFingerprint(u64),
    /// A Confluent id nobody resolved.
    #[error("message header: expected a schema id the registry knows, found {0}")]
    UnknownSchemaId(u32),
    /// The datum does not decode with its writer schema.
    #[error("datum: expected a {schema} record, found bytes that do not decode ({message})")]
    Datum {
        /// Writer schema (name and version).
        schema: String,
        /// apache-avro's message (positions and kinds, no values).
        message: String,
    },
}

/// Renders framed messages with the schemas of a store.
#[derive(Debug, Clone)]
pub struct Renderer {
    store: SchemaStore,
    confluent: HashMap<u32, u64>,
    show_identifiers: bool,
}

/// One rendered message.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Writer schema.
    pub schema: Arc<SchemaEntry>,
    /// The record as JSON.
    pub value: Json,
}

impl Renderer {
    /// A renderer over `store`; direct identifiers masked unless
    /// `show_identifiers`.
    pub fn new(store: SchemaStore, show_identifiers: bool) -> Self {
        Renderer {
            store,
            confluent: HashMap::new(),
            show_identifiers,
        }
    }

    /// Tells the renderer which fingerprint a Confluent id stands for.
    pub fn add_confluent_id(&mut self, id: u32, fingerprint: u64) {
        self.confluent.insert(id, fingerprint);
    }

    /// Learns a schema a registry returned for Confluent id `id`; fails
    /// when the text is not a chitose schema.
    pub fn add_registry_schema(
        &mut self,
        id: u32,
        text: &str,
    ) -> Result<(), crate::catalog::SchemaError> {
        let fp = match crate::canonical::fingerprint(text) {
            Ok(fp) if self.store.by_fingerprint(fp).is_some() => fp,
            _ => {
                self.store
                    .add(&format!("registry/{id}.avsc"), text)?
                    .fingerprint
            }
        };
        self.confluent.insert(id, fp);
        Ok(())
    }

    /// The Confluent id of a message the renderer cannot resolve yet, if any
    /// (the caller asks its registry, then [`Renderer::add_confluent_id`]).
    pub fn unknown_confluent_id(&self, msg: &[u8]) -> Option<u32> {
        match unframe(msg) {
            Ok(Framed::Confluent { schema_id, .. }) if !self.confluent.contains_key(&schema_id) => {
                Some(schema_id)
            }
            _ => None,
        }
    }

    /// Decodes and renders one framed message.
    pub fn render(&self, msg: &[u8]) -> Result<Rendered, RenderError> {
        let (fp, mut datum) = match unframe(msg)? {
            Framed::SingleObject { fingerprint, datum } => (fingerprint, datum),
            Framed::Confluent { schema_id, datum } => (
                *self
                    .confluent
                    .get(&schema_id)
                    .ok_or(RenderError::UnknownSchemaId(schema_id))?,
                datum,
            ),
        };
        let entry = self
            .store
            .by_fingerprint(fp)
            .ok_or(RenderError::UnknownFingerprint(fp))?;
        let fail = |message: String| RenderError::Datum {
            schema: format!("{} v{}", entry.full_name, entry.version),
            message,
        };
        let v = apache_avro::from_avro_datum(&entry.schema, &mut datum, None)
            .map_err(|e| fail(e.to_string()))?;
        if !datum.is_empty() {
            return Err(fail(format!("{} bytes left after the record", datum.len())));
        }
        let names = Names::of(&[&entry.schema]);
        Ok(Rendered {
            schema: entry.clone(),
            value: to_json(v, &entry.schema, &names, self.show_identifiers),
        })
    }
}

fn to_json(v: Value, s: &Schema, names: &Names, show: bool) -> Json {
    let s = names.get(s);
    match v {
        Value::Null => Json::Null,
        Value::Boolean(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Long(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Double(f) => json!(f),
        Value::String(x) | Value::Enum(_, x) => json!(x),
        Value::Bytes(b) | Value::Fixed(_, b) => json!(hex(&b)),
        Value::Date(d) => json!(Date(d).to_string()),
        Value::TimestampMillis(t) => json!(Timestamp(t).to_string()),
        Value::Uuid(u) => json!(u.to_string()),
        Value::Union(i, inner) => {
            let branch = match s {
                Schema::Union(u) => u.variants().get(i as usize).unwrap_or(s),
                _ => s,
            };
            to_json(*inner, branch, names, show)
        }
        Value::Array(items) => {
            let item = match s {
                Schema::Array(a) => &*a.items,
                _ => s,
            };
            Json::Array(
                items
                    .into_iter()
                    .map(|x| to_json(x, item, names, show))
                    .collect(),
            )
        }
        Value::Map(m) => {
            let item = match s {
                Schema::Map(m) => &*m.types,
                _ => s,
            };
            let mut keys: Vec<_> = m.into_iter().collect();
            keys.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(
                keys.into_iter()
                    .map(|(k, x)| (k, to_json(x, item, names, show)))
                    .collect(),
            )
        }
        Value::Record(fields) => {
            let Schema::Record(r) = s else {
                return Json::Null;
            };
            let mut out = Map::new();
            for ((name, fv), f) in fields.into_iter().zip(&r.fields) {
                let direct = f.doc.as_deref().is_some_and(|d| d.starts_with("DI:"));
                let present = !matches!(fv, Value::Null)
                    && !matches!(&fv, Value::Union(_, b) if **b == Value::Null);
                let j = if direct && present && !show {
                    json!(MASK)
                } else {
                    to_json(fv, &f.schema, names, show)
                };
                out.insert(name, j);
            }
            Json::Object(out)
        }
        // Logical types chitose's schemas do not use: their debug form.
        other => json!(format!("{other:?}")),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::RAW_EVENT;
    use crate::framing::put_soe_header;
    use crate::json::JsonToAvro;

    const EVENT: &str = r#"{"event_id":"2b8bb634-45e9-4ef0-850b-2ebba6efaa93","event_type":"lab_result",
     "hub_prefecture":"27","facility_code":"2710117845",
     "occurred_at":"2026-03-02T11:40:32.000+09:00","recorded_at":"2026-03-02T12:02:10.000+09:00",
     "source_format":"json",
     "patient":{"local_patient_id":"430001689","name_kanji":"山田　花子","name_kana":"ヤマダ　ハナコ",
       "birth_date":"1961-05-03","sex":"female","postal_code":"530-0001","municipality_code":"27100",
       "address_line":"本町3丁目1番8号","phone":"06-1234-5678",
       "insurance":{"insurer_number":"06270018","insured_symbol":"1234","insured_number":"56789","insured_branch":"00"}},
     "payload":{"jlac10_code":"3D046000001906202","test_name":"HbA1c(NGSP)","value_numeric":6.1,
       "unit":"%","reference_low":4.9,"reference_high":6.0,"abnormal_flag":"high"}}"#;

    fn framed() -> Vec<u8> {
        let store = SchemaStore::embedded();
        let raw = store.latest(RAW_EVENT).unwrap();
        let mut msg = Vec::new();
        put_soe_header(&mut msg, raw.fingerprint);
        JsonToAvro::new(raw.schema.clone())
            .unwrap()
            .convert(EVENT.as_bytes(), &mut msg)
            .unwrap();
        msg
    }

    /// Every field the hub sent comes back with the same value.
    fn assert_contains(sent: &Json, got: &Json, path: &str) {
        match sent {
            Json::Object(m) => {
                for (k, v) in m {
                    assert_contains(v, &got[k], &format!("{path}.{k}"));
                }
            }
            _ => assert_eq!(sent, got, "{path}"),
        }
    }

    #[test]
    fn a_raw_event_renders_as_its_json_form() {
        let r = Renderer::new(SchemaStore::embedded(), true)
            .render(&framed())
            .unwrap();
        assert_eq!(r.schema.full_name, RAW_EVENT);
        let sent: Json = serde_json::from_str(EVENT).unwrap();
        assert_contains(&sent, &r.value, "$");
    }

    #[test]
    fn direct_identifiers_are_masked_by_default_and_nothing_else() {
        let r = Renderer::new(SchemaStore::embedded(), false)
            .render(&framed())
            .unwrap();
        let text = r.value.to_string();
        for secret in [
            "山田",
            "ヤマダ",
            "06-1234-5678",
            "本町",
            "56789",
            "430001689",
        ] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
        assert_eq!(r.value["patient"]["phone"], MASK);
        // Not identifiers: kept.
        assert_eq!(r.value["payload"]["value_numeric"], 6.1);
        assert_eq!(r.value["patient"]["birth_date"], "1961-05-03");
        assert_eq!(r.value["hub_prefecture"], "27");
    }

    #[test]
    fn broken_messages_get_errors_without_values() {
        let store = SchemaStore::embedded();
        let rd = Renderer::new(store, false);
        let msg = framed();
        let truncated = rd.render(&msg[..msg.len() - 20]).unwrap_err().to_string();
        assert!(truncated.contains("chitose.raw.RawEvent v3"), "{truncated}");
        assert!(!truncated.contains("HbA1c"), "{truncated}");
        let mut wrong = msg.clone();
        wrong[2] ^= 0xff;
        assert!(matches!(
            rd.render(&wrong),
            Err(RenderError::UnknownFingerprint(_))
        ));
        let confluent = [0u8, 0, 0, 0, 7, 2, 3];
        assert_eq!(rd.unknown_confluent_id(&confluent), Some(7));
        assert!(matches!(
            rd.render(&confluent),
            Err(RenderError::UnknownSchemaId(7))
        ));
    }
}
