//! The JSON form of raw events (docs/json-form.md) and its conversion to
//! Avro binary, driven by the `.avsc` rather than by Rust types.
//!
//! Why schema-driven: the same converter serves every schema version a hub
//! may still send, and it owns its error messages. serde's messages quote
//! the offending value ("invalid type: string \"山田\""), which would put
//! patient data into logs; ours name the field path, what was expected and
//! the *shape* of what was found, never the value itself.

use crate::mynumber;
use apache_avro::Schema;
use apache_avro::schema::RecordField;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;

mod stream;

use crate::codec::{Date, Timestamp, put_bytes, put_double, put_long};

/// Largest accepted JSON record, in bytes, unless configured otherwise.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 * 1024;
/// Longest accepted string, in characters, where the schema sets no
/// `chitose.max_length`.
pub const DEFAULT_MAX_STRING_CHARS: usize = 1024;

/// Why a JSON record was refused. Display: `<path>: expected …, found …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: expected {expected}, found {found}")]
pub struct JsonError {
    /// Dotted field path, e.g. `payload.jlac10_code`; `$` is the record.
    pub path: String,
    /// What the contract asks for.
    pub expected: String,
    /// The shape of what was sent (never the value).
    pub found: String,
    /// Stable, low-cardinality reason for metrics and reject files.
    pub reason: RejectReason,
}

/// Why a record was refused, as a metric label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// Not JSON, or not UTF-8.
    Malformed,
    /// Over the size limit.
    TooLarge,
    /// Wrong JSON type for the field.
    WrongType,
    /// A required field is absent.
    MissingField,
    /// A field the schema does not have.
    UnknownField,
    /// A string that does not match the field's pattern (code shapes).
    InvalidCode,
    /// Not one of the enum's symbols.
    UnknownSymbol,
    /// Over the field's length limit.
    TooLong,
    /// Not a valid date or timestamp.
    InvalidDate,
    /// A number out of the field's range.
    OutOfRange,
    /// A My Number (個人番号) appeared.
    MyNumber,
    /// Semantic edge check (see [`crate::edge`]).
    Semantic,
    /// A source record (e.g. a FHIR resource) with no mapping to an event.
    Unmappable,
    /// A control character in a string (they forge linkage keys and hide
    /// text from people reading it).
    ControlCharacter,
    /// A number that is not finite (NaN, ±infinity).
    NotFinite,
}

impl RejectReason {
    /// Every reason (metric label values).
    pub const ALL: [RejectReason; 15] = [
        RejectReason::Malformed,
        RejectReason::TooLarge,
        RejectReason::WrongType,
        RejectReason::MissingField,
        RejectReason::UnknownField,
        RejectReason::InvalidCode,
        RejectReason::UnknownSymbol,
        RejectReason::TooLong,
        RejectReason::InvalidDate,
        RejectReason::OutOfRange,
        RejectReason::MyNumber,
        RejectReason::Semantic,
        RejectReason::Unmappable,
        RejectReason::ControlCharacter,
        RejectReason::NotFinite,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::TooLarge => "too_large",
            RejectReason::WrongType => "wrong_type",
            RejectReason::MissingField => "missing_field",
            RejectReason::UnknownField => "unknown_field",
            RejectReason::InvalidCode => "invalid_code",
            RejectReason::UnknownSymbol => "unknown_symbol",
            RejectReason::TooLong => "too_long",
            RejectReason::InvalidDate => "invalid_date",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::MyNumber => "my_number",
            RejectReason::Semantic => "semantic",
            RejectReason::Unmappable => "unmappable",
            RejectReason::ControlCharacter => "control_character",
            RejectReason::NotFinite => "not_finite",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Describes a JSON value by its shape, never its content.
pub fn shape(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer".into(),
        Value::Number(_) => "a number with a fraction".into(),
        Value::String(s) => {
            let n = s.chars().count();
            format!("a string of {n} character{}", if n == 1 { "" } else { "s" })
        }
        Value::Array(a) => format!("an array of {} items", a.len()),
        Value::Object(_) => "an object".into(),
    }
}

/// A field's `chitose.pattern` (a code shape, anchored), compiled once,
/// with its source for error messages.
///
/// Matched by walking a fully built DFA (regex-automata, the engine under
/// `regex`) one byte at a time. The values are 2–17 byte codes, checked
/// on every record by the edge and again by the transform, and for strings
/// that short `Regex::is_match` spends its time getting ready to search
/// (a cache from its pool, the start state, the search loop's set-up):
/// 10 % of the pure transform (docs/benchmarks.md). The `Regex` stays as
/// the referee a test holds the walk to, and answers for a pattern whose
/// DFA does not build or gives up on a byte.
#[derive(Debug, Clone)]
pub struct CodePattern {
    source: String,
    re: regex::Regex,
    dfa: Option<WalkedDfa>,
}

/// A DFA with every match kind reported, and its start state for a search
/// from a string's first byte (no look-behind).
#[derive(Debug, Clone)]
struct WalkedDfa {
    dfa: regex_automata::dfa::dense::DFA<Vec<u32>>,
    start: regex_automata::util::primitives::StateID,
}

impl WalkedDfa {
    fn build(pattern: &str) -> Option<WalkedDfa> {
        use regex_automata::dfa::{Automaton, StartKind, dense};
        use regex_automata::{Anchored, MatchKind, util::start};
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Unanchored)
                    .accelerate(false)
                    .dfa_size_limit(Some(1 << 20)),
            )
            .build(pattern)
            .ok()?;
        let start = dfa
            .start_state(&start::Config::new().anchored(Anchored::No))
            .ok()?;
        Some(WalkedDfa { dfa, start })
    }

    /// Some(whether `s` has a match), or None when the DFA gave up.
    #[inline]
    fn is_match(&self, s: &[u8]) -> Option<bool> {
        use regex_automata::dfa::Automaton;
        let d = &self.dfa;
        let mut st = self.start;
        for &b in s {
            st = d.next_state(st, b);
            if d.is_special_state(st) {
                // A match state is entered one byte after the match ends.
                if d.is_match_state(st) {
                    return Some(true);
                }
                if d.is_dead_state(st) {
                    return Some(false);
                }
                if d.is_quit_state(st) {
                    return None;
                }
            }
        }
        Some(d.is_match_state(d.next_eoi_state(st)))
    }
}

impl CodePattern {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Result<CodePattern, String> {
        Ok(CodePattern {
            source: pattern.to_owned(),
            re: regex::Regex::new(pattern).map_err(|e| e.to_string())?,
            dfa: WalkedDfa::build(pattern),
        })
    }

    /// The pattern as written in the schema.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether `s` matches (the schema's patterns anchor themselves).
    pub fn is_match(&self, s: &str) -> bool {
        match self.dfa.as_ref().and_then(|d| d.is_match(s.as_bytes())) {
            Some(m) => m,
            None => self.re.is_match(s),
        }
    }

    /// [`Self::is_match`] by `regex` alone: the referee for tests.
    pub fn is_match_by_regex(&self, s: &str) -> bool {
        self.re.is_match(s)
    }

    /// Whether the DFA walk serves this pattern (tests check the schema's
    /// patterns all take it).
    pub fn walks(&self) -> bool {
        self.dfa.is_some()
    }
}

/// A string field's rules, from `chitose.pattern` and `chitose.max_length`.
#[derive(Debug, Clone)]
struct StrRule {
    pattern: Option<CodePattern>,
    max_chars: usize,
}

/// The schema compiled for conversion: named references resolved, field
/// rules attached, union selectors precomputed.
#[derive(Debug, Clone)]
enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Str(Box<StrRule>),
    Date,
    TimestampMillis,
    Enum(Vec<String>),
    Array(Box<Node>),
    Union {
        branches: Vec<Node>,
        null_index: Option<usize>,
        /// chitose.event_type of each record branch → branch index.
        by_event_type: Vec<(String, usize)>,
    },
    Record(Box<RecordNode>),
    Unsupported(&'static str),
}

#[derive(Debug, Clone)]
struct RecordNode {
    name: String,
    fields: Vec<FieldNode>,
    lookup: HashMap<String, usize>,
}

#[derive(Debug, Clone)]
struct FieldNode {
    name: String,
    node: Node,
    default: Option<Value>,
}

/// Converts JSON records of one Avro schema into Avro binary datums.
#[derive(Debug)]
pub struct JsonToAvro {
    schema: Schema,
    root: Node,
    max_record_bytes: usize,
}

struct Path<'a>(&'a [&'a str]);

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("$");
        }
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 && !p.starts_with('[') {
                f.write_str(".")?;
            }
            f.write_str(p)?;
        }
        Ok(())
    }
}

fn err(
    path: &[&str],
    expected: impl Into<String>,
    found: impl Into<String>,
    reason: RejectReason,
) -> JsonError {
    JsonError {
        path: Path(path).to_string(),
        expected: expected.into(),
        found: found.into(),
        reason,
    }
}

fn compile(
    s: &Schema,
    field: Option<&RecordField>,
    names: &HashMap<String, Schema>,
    depth: usize,
) -> Result<Node, String> {
    if depth > 32 {
        return Err(
            "schema nests deeper than 32 levels (recursive types are not supported)".into(),
        );
    }
    let s = match s {
        Schema::Ref { name } => names
            .get(&name.fullname(None))
            .ok_or_else(|| format!("unknown named type {}", name.fullname(None)))?,
        other => other,
    };
    Ok(match s {
        Schema::Null => Node::Null,
        Schema::Boolean => Node::Boolean,
        Schema::Int => Node::Int,
        Schema::Long => Node::Long,
        Schema::Float => Node::Float,
        Schema::Double => Node::Double,
        Schema::String => {
            let attr = |k: &str| field.and_then(|f| f.custom_attributes.get(k));
            let pattern = match attr("chitose.pattern") {
                Some(Value::String(p)) => Some(
                    CodePattern::new(p)
                        .map_err(|e| format!("chitose.pattern is not a regex: {e}"))?,
                ),
                Some(_) => return Err("chitose.pattern must be a string".into()),
                None => None,
            };
            let max_chars = attr("chitose.max_length")
                .and_then(Value::as_u64)
                .map_or(DEFAULT_MAX_STRING_CHARS, |n| n as usize);
            Node::Str(Box::new(StrRule { pattern, max_chars }))
        }
        Schema::Date => Node::Date,
        Schema::TimestampMillis => Node::TimestampMillis,
        Schema::Enum(e) => Node::Enum(e.symbols.clone()),
        Schema::Array(a) => Node::Array(Box::new(compile(&a.items, None, names, depth + 1)?)),
        Schema::Union(u) => {
            let mut branches = Vec::new();
            let mut by_event_type = Vec::new();
            for (i, v) in u.variants().iter().enumerate() {
                let resolved = match v {
                    Schema::Ref { name } => names.get(&name.fullname(None)).unwrap_or(v),
                    _ => v,
                };
                if let Schema::Record(r) = resolved
                    && let Some(t) = r
                        .attributes
                        .get("chitose.event_type")
                        .and_then(Value::as_str)
                {
                    by_event_type.push((t.to_owned(), i));
                }
                branches.push(compile(v, field, names, depth + 1)?);
            }
            let null_index = branches.iter().position(|b| matches!(b, Node::Null));
            Node::Union {
                branches,
                null_index,
                by_event_type,
            }
        }
        Schema::Record(r) => {
            let mut fields = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                fields.push(FieldNode {
                    name: f.name.clone(),
                    node: compile(&f.schema, Some(f), names, depth + 1)
                        .map_err(|e| format!("{}.{}: {e}", r.name.name, f.name))?,
                    default: f.default.clone(),
                });
            }
            Node::Record(Box::new(RecordNode {
                name: r.name.name.clone(),
                lookup: r.lookup.clone().into_iter().collect(),
                fields,
            }))
        }
        _ => Node::Unsupported("a schema type chitose's JSON form does not use"),
    })
}

impl JsonToAvro {
    /// Prepares a converter; fails when a `chitose.*` attribute is invalid.
    pub fn new(schema: Schema) -> Result<Self, String> {
        let mut names = HashMap::new();
        crate::catalog::named_types(&schema, &mut names);
        let root = compile(&schema, None, &names, 0)?;
        Ok(JsonToAvro {
            schema,
            root,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        })
    }

    /// Changes the record size limit.
    pub fn with_max_record_bytes(mut self, n: usize) -> Self {
        self.max_record_bytes = n;
        self
    }

    /// The schema records are converted to.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Converts one JSON record (bytes as received) and appends its Avro
    /// datum to `out`. On error `out` may hold a partial datum: truncate it.
    pub fn convert(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), JsonError> {
        self.size_check(input)?;
        // The fast path streams the bytes straight to Avro; whatever it
        // does not take (every rejection among them, invalid UTF-8 too)
        // goes through the tree, which says why.
        let start = out.len();
        if stream::convert(&self.root, without_bom(input), out).is_ok() {
            return Ok(());
        }
        out.truncate(start);
        self.convert_tree(input, out)
    }

    /// The reference path: the same checks, then a parse into a `Value`
    /// tree (strictly: no key twice) and its conversion, never the fast
    /// path. [`convert`](Self::convert) gives the same bytes and errors;
    /// this is public so the tests and the fuzzer can hold it to that.
    pub fn convert_tree(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), JsonError> {
        self.precheck(input)?;
        let value = parse_strict(input)?;
        self.convert_value(&value, out)
    }

    /// Whether `input` converts on the fast path alone (for tests: the
    /// fallback must not be what makes the two paths agree).
    #[doc(hidden)]
    pub fn streams(&self, input: &[u8]) -> bool {
        self.size_check(input).is_ok()
            && stream::convert(&self.root, without_bom(input), &mut Vec::new()).is_ok()
    }

    fn size_check(&self, input: &[u8]) -> Result<(), JsonError> {
        if input.len() > self.max_record_bytes {
            return Err(err(
                &[],
                format!("a record of at most {} bytes", self.max_record_bytes),
                format!("{} bytes", input.len()),
                RejectReason::TooLarge,
            ));
        }
        Ok(())
    }

    /// Size and UTF-8, before the tree path parses.
    fn precheck(&self, input: &[u8]) -> Result<(), JsonError> {
        self.size_check(input)?;
        if let Err(e) = std::str::from_utf8(input) {
            return Err(err(
                &[],
                "UTF-8 text",
                format!("an invalid byte sequence at byte {}", e.valid_up_to()),
                RejectReason::Malformed,
            ));
        }
        Ok(())
    }

    /// Converts an already parsed JSON value.
    pub fn convert_value(&self, value: &Value, out: &mut Vec<u8>) -> Result<(), JsonError> {
        let mut path = Vec::with_capacity(8);
        write(&self.root, value, None, &mut path, out)
    }
}

fn write<'v>(
    node: &'v Node,
    v: &'v Value,
    selector: Option<&str>,
    path: &mut Vec<&'v str>,
    out: &mut Vec<u8>,
) -> Result<(), JsonError> {
    match node {
        Node::Null => match v {
            Value::Null => Ok(()),
            _ => Err(err(path, "null", shape(v), RejectReason::WrongType)),
        },
        Node::Boolean => match v {
            Value::Bool(b) => {
                out.push(u8::from(*b));
                Ok(())
            }
            _ => Err(err(path, "a boolean", shape(v), RejectReason::WrongType)),
        },
        Node::Int => match v.as_i64() {
            Some(n) if i32::try_from(n).is_ok() => {
                put_long(out, n);
                Ok(())
            }
            Some(_) => Err(err(
                path,
                "an integer within 32 bits",
                "a larger integer",
                RejectReason::OutOfRange,
            )),
            None => Err(err(path, "an integer", shape(v), RejectReason::WrongType)),
        },
        Node::Long => match v.as_i64() {
            Some(n) => {
                put_long(out, n);
                Ok(())
            }
            None => Err(err(path, "an integer", shape(v), RejectReason::WrongType)),
        },
        Node::Float | Node::Double => match v.as_f64() {
            Some(x) if v.is_number() && x.is_finite() => {
                if matches!(node, Node::Float) {
                    out.extend_from_slice(&(x as f32).to_le_bytes());
                } else {
                    put_double(out, x);
                }
                Ok(())
            }
            _ => Err(err(path, "a number", shape(v), RejectReason::WrongType)),
        },
        Node::Str(rule) => match v {
            Value::String(s) => {
                check_string(s, rule, path)?;
                put_bytes(out, s.as_bytes());
                Ok(())
            }
            _ => Err(err(path, "a string", shape(v), RejectReason::WrongType)),
        },
        Node::Date => match v {
            Value::String(s) => match Date::parse(s) {
                Some(d) => {
                    put_long(out, i64::from(d.0));
                    Ok(())
                }
                None => Err(err(
                    path,
                    "a calendar date YYYY-MM-DD",
                    format!("{} that is not one", shape(v)),
                    RejectReason::InvalidDate,
                )),
            },
            _ => Err(err(
                path,
                "a date string YYYY-MM-DD",
                shape(v),
                RejectReason::WrongType,
            )),
        },
        Node::TimestampMillis => match v {
            Value::String(s) => match Timestamp::parse(s) {
                Some(t) => {
                    put_long(out, t.0);
                    Ok(())
                }
                None => Err(err(
                    path,
                    "an RFC 3339 timestamp with offset, e.g. 2026-04-01T09:30:00+09:00",
                    format!("{} that is not one", shape(v)),
                    RejectReason::InvalidDate,
                )),
            },
            _ => Err(err(
                path,
                "an RFC 3339 timestamp string",
                shape(v),
                RejectReason::WrongType,
            )),
        },
        Node::Enum(symbols) => match v {
            Value::String(s) => match symbols.iter().position(|x| x == s) {
                Some(i) => {
                    put_long(out, i as i64);
                    Ok(())
                }
                None => Err(err(
                    path,
                    format!("one of {}", symbols.join(", ")),
                    format!("{} that is not a symbol", shape(v)),
                    RejectReason::UnknownSymbol,
                )),
            },
            _ => Err(err(
                path,
                format!("one of {}", symbols.join(", ")),
                shape(v),
                RejectReason::WrongType,
            )),
        },
        Node::Array(items_node) => match v {
            Value::Array(items) => {
                if !items.is_empty() {
                    put_long(out, items.len() as i64);
                    for item in items {
                        path.push("[]");
                        write(items_node, item, None, path, out)?;
                        path.pop();
                    }
                }
                out.push(0);
                Ok(())
            }
            _ => Err(err(path, "an array", shape(v), RejectReason::WrongType)),
        },
        Node::Union {
            branches,
            null_index,
            by_event_type,
        } => {
            if v.is_null() {
                return match null_index {
                    Some(i) => {
                        put_long(out, *i as i64);
                        Ok(())
                    }
                    None => Err(err(
                        path,
                        "a value (this field is not nullable)",
                        "null",
                        RejectReason::MissingField,
                    )),
                };
            }
            let branch = if by_event_type.is_empty() {
                match (0..branches.len()).find(|&i| Some(i) != *null_index) {
                    Some(i) => i,
                    None => return Err(err(path, "null", shape(v), RejectReason::WrongType)),
                }
            } else {
                // A union of records is selected by the envelope's event_type.
                match selector.and_then(|sel| by_event_type.iter().find(|(t, _)| t == sel)) {
                    Some((_, i)) => *i,
                    None => {
                        return Err(err(
                            path,
                            "a payload selected by a valid event_type",
                            "no valid event_type",
                            RejectReason::WrongType,
                        ));
                    }
                }
            };
            put_long(out, branch as i64);
            write(&branches[branch], v, None, path, out)
        }
        Node::Record(r) => write_record(r, v, path, out),
        Node::Unsupported(what) => Err(err(
            path,
            "a supported type",
            *what,
            RejectReason::WrongType,
        )),
    }
}

fn check_string(s: &str, rule: &StrRule, path: &[&str]) -> Result<(), JsonError> {
    check_string_rules(s, rule.pattern.as_ref(), rule.max_chars)
        .map_err(|(expected, found, reason)| err(path, expected, found, reason))
}

/// Whether `c` is a control character a string field may not hold: C0
/// (tab, line feed and carriage return aside, which free text has), DEL
/// and C1.
pub fn is_forbidden_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// The contract's rules for one string field, in the order that matters:
/// the My Number scan first (the one rejection that must never be reported
/// as something milder), control characters, length, pattern. Returns
/// (expected, found, reason); never the value. Shared by the JSON edge and
/// the transform, which re-checks what any producer wrote to a raw topic.
pub fn check_string_rules(
    s: &str,
    pattern: Option<&CodePattern>,
    max_chars: usize,
) -> Result<(), (String, String, RejectReason)> {
    let a = mynumber::prescan(s);
    let (my_number, control) = (
        a.may_hold_my_number && mynumber::contains_my_number(s),
        a.control,
    );
    if my_number {
        return Err((
            "no My Number (個人番号); it must never enter the pipeline".into(),
            "a 12-digit number with a valid My Number check digit".into(),
            RejectReason::MyNumber,
        ));
    }
    if control {
        return Err((
            "a string without control characters".into(),
            "a control character".into(),
            RejectReason::ControlCharacter,
        ));
    }
    // bytes >= chars, so only count chars when the byte length could exceed.
    if s.len() > max_chars {
        let n = s.chars().count();
        if n > max_chars {
            return Err((
                format!("at most {max_chars} characters"),
                format!("{n} characters"),
                RejectReason::TooLong,
            ));
        }
    }
    if let Some(p) = pattern
        && !p.is_match(s)
    {
        return Err((
            format!("a code matching {}", p.source()),
            format!(
                "a string of {} characters that does not match",
                s.chars().count()
            ),
            RejectReason::InvalidCode,
        ));
    }
    Ok(())
}

fn write_record<'v>(
    r: &'v RecordNode,
    v: &'v Value,
    path: &mut Vec<&'v str>,
    out: &mut Vec<u8>,
) -> Result<(), JsonError> {
    let Value::Object(obj) = v else {
        return Err(err(
            path,
            format!("an object ({})", r.name),
            shape(v),
            RejectReason::WrongType,
        ));
    };
    for key in obj.keys() {
        if !r.lookup.contains_key(key) {
            let shown: String = key.chars().take(40).collect();
            path.push(key);
            return Err(err(
                path,
                format!("only fields of {}", r.name),
                format!("unknown field `{shown}`"),
                RejectReason::UnknownField,
            ));
        }
    }
    let selector = obj.get("event_type").and_then(Value::as_str);
    for f in &r.fields {
        path.push(&f.name);
        match (obj.get(&f.name), &f.default) {
            (Some(fv), _) => write(&f.node, fv, selector, path, out)?,
            (None, Some(d)) => put_default(&f.node, d, path, out)?,
            (None, None) => {
                return Err(err(
                    path,
                    expected_for(&f.node),
                    "nothing (the field is required)",
                    RejectReason::MissingField,
                ));
            }
        }
        path.pop();
    }
    Ok(())
}

/// A missing field's default. Avro: a union's default belongs to its
/// first branch.
fn put_default<'v>(
    node: &'v Node,
    d: &'v Value,
    path: &mut Vec<&'v str>,
    out: &mut Vec<u8>,
) -> Result<(), JsonError> {
    match node {
        Node::Union { branches, .. } => {
            put_long(out, 0);
            write(&branches[0], d, None, path, out)
        }
        n => write(n, d, None, path, out),
    }
}

/// The fast path's default for a missing field; false when it has none
/// (the tree path then says what was missing).
fn write_default(f: &FieldNode, out: &mut Vec<u8>) -> bool {
    f.default
        .as_ref()
        .is_some_and(|d| put_default(&f.node, d, &mut Vec::new(), out).is_ok())
}

/// `input` without a leading UTF-8 byte-order mark (both paths skip one).
fn without_bom(input: &[u8]) -> &[u8] {
    input.strip_prefix("\u{feff}".as_bytes()).unwrap_or(input)
}

/// Records of at most this many fields take the fast path (a bit per
/// field); the contract's widest has 22.
const MAX_STREAM_FIELDS: usize = 64;

fn expected_for(n: &Node) -> String {
    match n {
        Node::Str(_) => "a string".into(),
        Node::Int | Node::Long => "an integer".into(),
        Node::Double | Node::Float => "a number".into(),
        Node::Boolean => "a boolean".into(),
        Node::Date => "a date YYYY-MM-DD".into(),
        Node::TimestampMillis => "an RFC 3339 timestamp".into(),
        Node::Enum(symbols) => format!("one of {}", symbols.join(", ")),
        Node::Record(r) => format!("an object ({})", r.name),
        Node::Union { .. } => "a payload object".into(),
        _ => "a value".into(),
    }
}

/// Parses JSON into a [`Value`], refusing what serde_json would let
/// through quietly: an object with a key given twice (serde_json keeps the
/// last, so two systems could read two different records from one line).
/// A leading UTF-8 byte-order mark is skipped. Errors carry a position,
/// never the input.
pub fn parse_strict(input: &[u8]) -> Result<Value, JsonError> {
    let input = without_bom(input);
    let mut de = serde_json::Deserializer::from_slice(input);
    let parsed = serde::Deserialize::deserialize(&mut de).and_then(|StrictValue(v)| {
        de.end()?;
        Ok(v)
    });
    parsed.map_err(|e| {
        let (expected, found) = if e.to_string().starts_with(DUPLICATE) {
            (
                "JSON objects with each key once".to_owned(),
                format!(
                    "a key given twice at line {} column {}",
                    e.line(),
                    e.column()
                ),
            )
        } else {
            // serde_json's syntax errors carry a category and a position,
            // not the input text.
            (
                "a JSON object".to_owned(),
                format!(
                    "invalid JSON ({:?}) at line {} column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            )
        };
        err(&[], expected, found, RejectReason::Malformed)
    })
}

const DUPLICATE: &str = "duplicated key";

/// A [`Value`] whose objects may not repeat a key.
struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::Deserialize::deserialize(d).map(|StrictValue(v)| v)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                return Err(serde::de::Error::custom(DUPLICATE));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}
