//! A JSON Schema (draft 2020-12) of the JSON form, generated from the
//! `.avsc`, so the two cannot disagree. The generated file is committed at
//! `schemas/json/raw_event.schema.json` and a test checks it is current.
//!
//! It states what the converter enforces, except the My Number scan and the
//! semantic edge checks, which JSON Schema cannot express (docs/json-form.md).

use apache_avro::Schema;
use apache_avro::schema::RecordField;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// The JSON Schema of the JSON form of a record schema.
pub fn generate(schema: &Schema, id: &str) -> Value {
    let mut names = HashMap::new();
    crate::catalog::named_types(schema, &mut names);
    let mut defs = Map::new();
    let root = node(schema, None, &names, &mut defs);
    let mut out = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": id,
        "title": "chitose raw event, JSON form",
    });
    let o = out.as_object_mut().expect("object");
    if let Value::Object(r) = root {
        o.extend(r);
    }
    o.insert("$defs".into(), Value::Object(defs));
    out
}

fn node(
    s: &Schema,
    field: Option<&RecordField>,
    names: &HashMap<String, Schema>,
    defs: &mut Map<String, Value>,
) -> Value {
    let s = match s {
        Schema::Ref { name } => names.get(&name.fullname(None)).unwrap_or(s),
        s => s,
    };
    match s {
        Schema::Null => json!({"type": "null"}),
        Schema::Boolean => json!({"type": "boolean"}),
        Schema::Int => json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX}),
        Schema::Long => json!({"type": "integer"}),
        Schema::Float | Schema::Double => json!({"type": "number"}),
        Schema::String => {
            let mut o = Map::new();
            o.insert("type".into(), "string".into());
            let max = field
                .and_then(|f| f.custom_attributes.get("chitose.max_length"))
                .and_then(Value::as_u64)
                .unwrap_or(crate::json::DEFAULT_MAX_STRING_CHARS as u64);
            o.insert("maxLength".into(), max.into());
            if let Some(p) = field.and_then(|f| f.custom_attributes.get("chitose.pattern")) {
                o.insert("pattern".into(), p.clone());
            }
            Value::Object(o)
        }
        Schema::Date => {
            json!({"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"})
        }
        Schema::TimestampMillis => json!({
            "type": "string",
            "format": "date-time",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
        }),
        Schema::Enum(e) => {
            defs.entry(e.name.name.clone())
                .or_insert_with(|| json!({"enum": e.symbols}));
            json!({"$ref": format!("#/$defs/{}", e.name.name)})
        }
        Schema::Array(a) => json!({"type": "array", "items": node(&a.items, None, names, defs)}),
        Schema::Union(u) => {
            let branches: Vec<Value> = u
                .variants()
                .iter()
                .map(|v| node(v, field, names, defs))
                .collect();
            json!({"anyOf": branches})
        }
        Schema::Record(r) => {
            let mut props = Map::new();
            let mut required = Vec::new();
            let mut conditionals = Vec::new();
            for f in &r.fields {
                let mut p = node(&f.schema, Some(f), names, defs);
                // A union of records is selected by event_type: say so with
                // if/then, one per branch.
                let records: Vec<(String, String)> = match &f.schema {
                    Schema::Union(u) => u
                        .variants()
                        .iter()
                        .filter_map(|v| match v {
                            Schema::Record(x) => x
                                .attributes
                                .get("chitose.event_type")
                                .and_then(Value::as_str)
                                .map(|t| (t.to_owned(), x.name.name.clone())),
                            _ => None,
                        })
                        .collect(),
                    _ => vec![],
                };
                if !records.is_empty() {
                    for (t, name) in &records {
                        conditionals.push(json!({
                            "if": {"properties": {"event_type": {"const": t}}, "required": ["event_type"]},
                            "then": {"properties": {f.name.clone(): {"$ref": format!("#/$defs/{name}")}}}
                        }));
                    }
                    p = json!({"type": "object"});
                }
                if let (Value::Object(o), Some(doc)) = (&mut p, &f.doc) {
                    o.insert("description".into(), doc.clone().into());
                }
                if f.default.is_none() {
                    required.push(Value::from(f.name.clone()));
                }
                props.insert(f.name.clone(), p);
            }
            let mut o = json!({
                "type": "object",
                "additionalProperties": false,
                "properties": props,
                "required": required,
            });
            if let Some(doc) = &r.doc {
                o["description"] = doc.clone().into();
            }
            if !conditionals.is_empty() {
                o["allOf"] = Value::Array(conditionals);
            }
            // Nested records become $defs; the root stays inline.
            if field.is_some() {
                let name = r.name.name.clone();
                defs.insert(name.clone(), o);
                return json!({"$ref": format!("#/$defs/{name}")});
            }
            o
        }
        _ => json!({}),
    }
}
