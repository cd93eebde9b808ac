//! The fast path of [`JsonToAvro::convert`](super::JsonToAvro::convert):
//! JSON bytes to Avro in one pass, driven by the compiled schema, with no
//! `Value` tree in between.
//!
//! It only has to be right when it succeeds. Any failure — a record the
//! contract rejects, or a shape it does not handle (a payload before its
//! `event_type`) — sends the record to the tree path, which gives the
//! canonical error or, for the shapes, the result. So this path refuses
//! everything the tree path refuses (each check below mirrors one in
//! `write`) and writes the same bytes for everything else; a test holds
//! the two paths to that over generated, re-ordered and hand-written
//! records.

use super::{MAX_STREAM_FIELDS, Node, RecordNode, check_string_rules, write_default};
use crate::codec::{Date, Timestamp, put_bytes, put_double, put_long};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Converts `input` (UTF-8, no byte-order mark) into `out`; an error means
/// "take the tree path", never a verdict on the record.
pub(super) fn convert(root: &Node, input: &[u8], out: &mut Vec<u8>) -> Result<(), Fail> {
    // One UTF-8 check of the whole line, then a parser that checks no
    // string again: serde_json's slice reader validates each string on its
    // own, and for 20–40 short strings a record the calls cost more than
    // one pass over the line (the edge's largest item in the files
    // source's profile). A line that is not UTF-8 goes to the tree path,
    // which says where.
    let text = std::str::from_utf8(input).map_err(|_| Fail)?;
    let mut de = serde_json::Deserializer::from_str(text);
    Seed {
        node: root,
        out,
        selector: None,
    }
    .deserialize(&mut de)
    .map_err(|_| Fail)?;
    de.end().map_err(|_| Fail)
}

/// The fast path gave up (the reason does not matter: the tree path says).
#[derive(Debug)]
pub(super) struct Fail;

fn fail<T, E: de::Error>() -> Result<T, E> {
    Err(E::custom("not on the fast path"))
}

/// A string from the input: borrowed when it had no escapes.
enum Str<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Str<'_> {
    fn as_str(&self) -> &str {
        match self {
            Str::Borrowed(s) => s,
            Str::Owned(s) => s,
        }
    }
}

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str::Borrowed(s))
            }
            fn visit_str<E>(self, s: &str) -> Result<Str<'de>, E> {
                Ok(Str::Owned(s.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

/// One value of `node`, written to `out`. `selector` is the branch a
/// union of records takes (resolved by the record holding it from its
/// `event_type`).
struct Seed<'n, 'o> {
    node: &'n Node,
    out: &'o mut Vec<u8>,
    selector: Option<usize>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'n> Seed<'n, '_> {
    /// For a non-null value: a union writes the branch `write` would pick
    /// and becomes that branch (Avro has no union directly in a union);
    /// anything else is itself.
    fn resolved<E: de::Error>(self) -> Result<Self, E> {
        let Node::Union {
            branches,
            null_index,
            by_event_type,
        } = self.node
        else {
            return Ok(self);
        };
        let i = if by_event_type.is_empty() {
            match (0..branches.len()).find(|&i| Some(i) != *null_index) {
                Some(i) => i,
                None => return fail(),
            }
        } else {
            match self.selector {
                Some(i) => i,
                None => return fail(),
            }
        };
        put_long(self.out, i as i64);
        Ok(Seed {
            node: &branches[i],
            out: self.out,
            selector: None,
        })
    }

    fn put_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        let this = self.resolved()?;
        match this.node {
            Node::Str(rule) => {
                if check_string_rules(s, rule.pattern.as_ref(), rule.max_chars).is_err() {
                    return fail();
                }
                put_bytes(this.out, s.as_bytes());
            }
            Node::Date => match Date::parse(s) {
                Some(d) => put_long(this.out, i64::from(d.0)),
                None => return fail(),
            },
            Node::TimestampMillis => match Timestamp::parse(s) {
                Some(t) => put_long(this.out, t.0),
                None => return fail(),
            },
            Node::Enum(symbols) => match symbols.iter().position(|x| x == s) {
                Some(i) => put_long(this.out, i as i64),
                None => return fail(),
            },
            _ => return fail(),
        }
        Ok(())
    }

    fn put_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        let this = self.resolved()?;
        match this.node {
            Node::Int if i32::try_from(n).is_ok() => put_long(this.out, n),
            Node::Long => put_long(this.out, n),
            Node::Float => this.out.extend_from_slice(&(n as f64 as f32).to_le_bytes()),
            Node::Double => put_double(this.out, n as f64),
            _ => return fail(),
        }
        Ok(())
    }

    fn put_f64<E: de::Error>(self, x: f64) -> Result<(), E> {
        let this = self.resolved()?;
        match this.node {
            Node::Float if x.is_finite() => this.out.extend_from_slice(&(x as f32).to_le_bytes()),
            Node::Double if x.is_finite() => put_double(this.out, x),
            _ => return fail(),
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for Seed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value of the schema")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        let this = self.resolved()?;
        match this.node {
            Node::Boolean => {
                this.out.push(u8::from(v));
                Ok(())
            }
            _ => fail(),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.put_i64(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(n) => self.put_i64(n),
            // Beyond i64 only a float column takes it (as the tree's
            // as_f64 does); the tree path handles that rare case.
            Err(_) => fail(),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.put_f64(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.put_str(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        match self.node {
            Node::Null => Ok(()),
            Node::Union {
                null_index: Some(i),
                ..
            } => {
                put_long(self.out, *i as i64);
                Ok(())
            }
            _ => fail(),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let this = self.resolved()?;
        let Node::Array(items) = this.node else {
            return fail();
        };
        // Avro wants the count first: the items go to a buffer of their own.
        let mut buf = Vec::new();
        let mut n = 0i64;
        while seq
            .next_element_seed(Seed {
                node: items,
                out: &mut buf,
                selector: None,
            })?
            .is_some()
        {
            n += 1;
        }
        if n > 0 {
            put_long(this.out, n);
            this.out.extend_from_slice(&buf);
        }
        this.out.push(0);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let this = self.resolved()?;
        match this.node {
            Node::Record(r) => record(r, this.out, map),
            _ => fail(),
        }
    }
}

/// A record: each field written where it arrives, its range noted; then,
/// unless the fields came complete and in the schema's order (what a hub's
/// exporter writes), put in order with the missing ones' defaults.
fn record<'de, A: MapAccess<'de>>(
    r: &RecordNode,
    out: &mut Vec<u8>,
    mut map: A,
) -> Result<(), A::Error> {
    if r.fields.len() > MAX_STREAM_FIELDS {
        return fail();
    }
    let start = out.len();
    let mut ranges = [(0usize, 0usize); MAX_STREAM_FIELDS];
    let mut present = 0u64;
    let mut in_order = true;
    let mut last: Option<usize> = None;
    // The `event_type` string, once read: it picks the branch of a union
    // of records (the payload), as the tree path's selector does.
    let mut selector: Option<Str<'de>> = None;
    while let Some(key) = map.next_key::<Str<'de>>()? {
        let key = key.as_str();
        // Exporters write the schema's order: try the next field's name
        // before hashing the key.
        let next = last.map_or(0, |l| l + 1);
        let i = match r.fields.get(next) {
            Some(f) if f.name == key => next,
            _ => match r.lookup.get(key) {
                Some(&i) => i,
                None => return fail(),
            },
        };
        if present & (1 << i) != 0 {
            return fail();
        }
        let f = &r.fields[i];
        let from = out.len();
        if key == "event_type" {
            // The tree path reads the selector as this key's string.
            let v: Str<'de> = map.next_value()?;
            Seed {
                node: &f.node,
                out,
                selector: None,
            }
            .put_str(v.as_str())?;
            selector = Some(v);
        } else {
            let branch = match &f.node {
                Node::Union { by_event_type, .. } if !by_event_type.is_empty() => {
                    // A payload before its event_type: the tree path.
                    let Some(sel) = &selector else {
                        return fail();
                    };
                    by_event_type
                        .iter()
                        .find(|(t, _)| t == sel.as_str())
                        .map(|(_, b)| *b)
                }
                _ => None,
            };
            map.next_value_seed(Seed {
                node: &f.node,
                out,
                selector: branch,
            })?;
        }
        ranges[i] = (from, out.len());
        present |= 1 << i;
        in_order &= last.is_none_or(|l| l < i);
        last = Some(i);
    }
    // A bit per field (at most 64, checked above).
    let all = u64::MAX
        .checked_shr((MAX_STREAM_FIELDS - r.fields.len()) as u32)
        .unwrap_or(0);
    if present == all && in_order {
        return Ok(());
    }
    let body = out.split_off(start);
    for (i, f) in r.fields.iter().enumerate() {
        if present & (1 << i) != 0 {
            let (a, b) = ranges[i];
            out.extend_from_slice(&body[a - start..b - start]);
        } else if !write_default(f, out) {
            return fail();
        }
    }
    Ok(())
}
