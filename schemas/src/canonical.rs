//! Parsing Canonical Form (Avro specification, "Schema Resolution /
//! Parsing Canonical Form"), computed from the schema's JSON text.
//!
//! Why our own: apache-avro 0.21 leaves logical types as `{"type":"long"}`
//! instead of collapsing them to `"long"` (the PRIMITIVES rule), so its
//! fingerprints differ from every other implementation (Java, fastavro).
//! Fingerprints must agree across languages for single-object encoding to
//! work, so we follow the spec and test against fastavro.

use serde_json::Value;

const PRIMITIVES: &[&str] = &[
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// Why a schema text has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parsing canonical form: expected {expected}, found {found}")]
pub struct CanonicalError {
    expected: &'static str,
    found: String,
}

fn bad(expected: &'static str, found: impl Into<String>) -> CanonicalError {
    CanonicalError {
        expected,
        found: found.into(),
    }
}

/// The Parsing Canonical Form of a schema given as JSON text.
pub fn canonical_form(text: &str) -> Result<String, CanonicalError> {
    let v: Value = serde_json::from_str(text).map_err(|e| bad("JSON", e.to_string()))?;
    let mut out = String::with_capacity(text.len() / 2);
    write(&v, None, &mut out)?;
    Ok(out)
}

/// The single-object fingerprint of a schema text: CRC-64-AVRO of its
/// Parsing Canonical Form.
pub fn fingerprint(text: &str) -> Result<u64, CanonicalError> {
    canonical_form(text).map(|c| crate::framing::rabin_fingerprint(c.as_bytes()))
}

fn fullname(name: &str, ns: Option<&str>) -> String {
    match ns {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_owned(),
    }
}

fn quote(s: &str, out: &mut String) {
    out.push_str(&Value::from(s).to_string());
}

fn write(v: &Value, ns: Option<&str>, out: &mut String) -> Result<(), CanonicalError> {
    match v {
        Value::String(s) if PRIMITIVES.contains(&s.as_str()) => quote(s, out),
        Value::String(s) => quote(&fullname(s, ns), out),
        Value::Array(branches) => {
            out.push('[');
            for (i, b) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(b, ns, out)?;
            }
            out.push(']');
        }
        Value::Object(o) => {
            let t = o
                .get("type")
                .ok_or_else(|| bad("a \"type\"", "an object without one"))?;
            let Value::String(t) = t else {
                // {"type": {...}} or {"type": [...]}: the wrapper adds nothing.
                return write(t, ns, out);
            };
            match t.as_str() {
                "record" | "error" | "enum" | "fixed" => {
                    let name = o
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("a named type with a \"name\"", t.clone()))?;
                    let explicit_ns = o.get("namespace").and_then(Value::as_str);
                    let full = if name.contains('.') {
                        name.to_owned()
                    } else {
                        fullname(name, explicit_ns.or(ns))
                    };
                    let inner_ns = full.rsplit_once('.').map(|(n, _)| n.to_owned());
                    out.push_str("{\"name\":");
                    quote(&full, out);
                    out.push_str(",\"type\":");
                    quote(if t == "error" { "record" } else { t }, out);
                    match t.as_str() {
                        "enum" => {
                            out.push_str(",\"symbols\":");
                            let symbols = o
                                .get("symbols")
                                .ok_or_else(|| bad("enum symbols", full.clone()))?;
                            out.push_str(&symbols.to_string());
                        }
                        "fixed" => {
                            out.push_str(",\"size\":");
                            let size = o
                                .get("size")
                                .and_then(Value::as_u64)
                                .ok_or_else(|| bad("a fixed size", full.clone()))?;
                            out.push_str(&size.to_string());
                        }
                        _ => {
                            out.push_str(",\"fields\":[");
                            let fields = o
                                .get("fields")
                                .and_then(Value::as_array)
                                .ok_or_else(|| bad("record fields", full.clone()))?;
                            for (i, f) in fields.iter().enumerate() {
                                if i > 0 {
                                    out.push(',');
                                }
                                let fname = f
                                    .get("name")
                                    .and_then(Value::as_str)
                                    .ok_or_else(|| bad("a field name", full.clone()))?;
                                out.push_str("{\"name\":");
                                quote(fname, out);
                                out.push_str(",\"type\":");
                                write(
                                    f.get("type")
                                        .ok_or_else(|| bad("a field type", fname.to_owned()))?,
                                    inner_ns.as_deref(),
                                    out,
                                )?;
                                out.push('}');
                            }
                            out.push(']');
                        }
                    }
                    out.push('}');
                }
                "array" => {
                    out.push_str("{\"type\":\"array\",\"items\":");
                    write(
                        o.get("items").ok_or_else(|| bad("array items", "none"))?,
                        ns,
                        out,
                    )?;
                    out.push('}');
                }
                "map" => {
                    out.push_str("{\"type\":\"map\",\"values\":");
                    write(
                        o.get("values").ok_or_else(|| bad("map values", "none"))?,
                        ns,
                        out,
                    )?;
                    out.push('}');
                }
                // PRIMITIVES: {"type":"long","logicalType":…} → "long".
                p => write(&Value::from(p), ns, out)?,
            }
        }
        other => return Err(bad("a schema (string, array or object)", other.to_string())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_rules() {
        assert_eq!(canonical_form(r#"{"type":"int"}"#).unwrap(), r#""int""#);
        assert_eq!(
            canonical_form(r#"{"type":"long","logicalType":"timestamp-millis"}"#).unwrap(),
            r#""long""#
        );
        assert_eq!(
            canonical_form(r#"{"type":"record","name":"R","namespace":"a.b","doc":"x","fields":[{"name":"f","type":{"type":"enum","name":"E","symbols":["A"]},"doc":"y","default":"A"},{"name":"g","type":["null","E"]}]}"#).unwrap(),
            r#"{"name":"a.b.R","type":"record","fields":[{"name":"f","type":{"name":"a.b.E","type":"enum","symbols":["A"]}},{"name":"g","type":["null","a.b.E"]}]}"#
        );
    }

    #[test]
    fn differs_from_apache_avro_only_by_its_logical_type_bug() {
        for (path, text) in crate::catalog::EMBEDDED {
            let ours = canonical_form(text).unwrap();
            let theirs = apache_avro::Schema::parse_str(text)
                .unwrap()
                .canonical_form()
                .replace(r#"{"type":"long"}"#, r#""long""#)
                .replace(r#"{"type":"int"}"#, r#""int""#);
            assert_eq!(ours, theirs, "{path}");
        }
    }
}
