//! The contract's field rules, applied again after decoding.
//!
//! Ingest checks every string of a JSON record (My Number scan, control
//! characters, length, code pattern), but anything with write access to a
//! raw topic can produce valid Avro that never passed ingest (Confluent
//! framing is accepted). So the transform does not trust the raw zone: it
//! re-applies the same rules, from the same `.avsc` attributes and the same
//! code ([`chitose_schemas::json::check_string_rules`]), and refuses
//! non-finite numbers, before any value reaches the pseudonymized zone. A
//! violation dead-letters the record with the reason as its class.

use crate::fields::{FIELDS, Get, Kind, Leaf, Val};
use chitose_schemas::json::{
    CodePattern, DEFAULT_MAX_STRING_CHARS, JsonError, RejectReason, check_string_rules,
};
use chitose_schemas::raw::{EventType, RawEvent};

struct FieldCheck {
    path: String,
    get: Get,
    kind: Kind,
    is_enum: bool,
    pattern: Option<CodePattern>,
    max_chars: usize,
}

/// The checks of every event type: envelope, patient and its own payload.
pub struct Contract {
    by_type: Vec<Vec<FieldCheck>>,
}

impl std::fmt::Debug for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contract")
            .field("fields", &self.by_type.iter().map(Vec::len).sum::<usize>())
            .finish()
    }
}

impl Contract {
    /// From the raw schema's leaves.
    pub fn new(raw: &[Leaf]) -> Contract {
        let by_type = EventType::ALL
            .iter()
            .map(|t| {
                raw.iter()
                    .filter(|l| {
                        l.section == "envelope" || l.section == "patient" || l.section == t.symbol()
                    })
                    .filter_map(|l| {
                        let get = FIELDS
                            .iter()
                            .find(|f| f.section == l.section && f.name == l.name)?
                            .get;
                        let path = match l.section.as_str() {
                            "envelope" => l.name.clone(),
                            "patient" => format!("patient.{}", l.name),
                            _ => format!("payload.{}", l.name),
                        };
                        Some(FieldCheck {
                            path,
                            get,
                            kind: l.kind,
                            is_enum: l.is_enum,
                            pattern: l.pattern.as_deref().and_then(|p| CodePattern::new(p).ok()),
                            max_chars: l.max_length.unwrap_or(DEFAULT_MAX_STRING_CHARS),
                        })
                    })
                    .collect()
            })
            .collect();
        Contract { by_type }
    }

    /// Checks every string and number of `ev`; the error names the field.
    pub fn check(&self, ev: &RawEvent) -> Result<(), JsonError> {
        let i = EventType::ALL
            .iter()
            .position(|t| *t == ev.event_type)
            .expect("every type is listed");
        for c in &self.by_type[i] {
            let fail = |(expected, found, reason): (String, String, RejectReason)| JsonError {
                path: c.path.clone(),
                expected,
                found,
                reason,
            };
            match (c.kind, (c.get)(ev)) {
                (Kind::Str, Val::Str(s)) if !c.is_enum => {
                    check_string_rules(s, c.pattern.as_ref(), c.max_chars).map_err(fail)?;
                }
                (Kind::Double, Val::Double(d)) if !d.is_finite() => {
                    return Err(fail((
                        "a finite number".into(),
                        if d.is_nan() {
                            "NaN".into()
                        } else {
                            "an infinite number".into()
                        },
                        RejectReason::NotFinite,
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }
}
