//! Reading records out of dropped files: NDJSON lines, or CSV rows mapped
//! to the JSON form by a header mapping.
//!
//! A CSV mapping names, for each CSV column, the JSON-form field it fills
//! (`"検査値" = "payload.value_numeric:number"`; types: `string` (default),
//! `number`, `int`, `bool`), plus constants for fields the export does not
//! carry (`"event_type" = "lab_result"`). Empty cells are absent fields. A
//! cell that does not convert is a reject naming the field and the column.

use chitose_schemas::json::{JsonError, RejectReason, shape};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek};
use std::path::Path;

/// CSV settings (`[files.csv]`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvConfig {
    /// CSV column → `dotted.field[:type]` of the JSON form.
    pub columns: BTreeMap<String, String>,
    /// `dotted.field` → constant string value.
    pub constants: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Number,
    Int,
    Bool,
}

/// A validated mapping.
#[derive(Debug, Clone)]
pub struct CsvMapping {
    columns: BTreeMap<String, (Vec<String>, Kind)>,
    constants: Vec<(Vec<String>, String)>,
}

impl CsvMapping {
    /// Validates a mapping; errors name the key.
    pub fn new(cfg: &CsvConfig) -> Result<Self, String> {
        let mut columns = BTreeMap::new();
        for (col, target) in &cfg.columns {
            let (path, kind) = match target.split_once(':') {
                None => (target.as_str(), Kind::Str),
                Some((p, "string")) => (p, Kind::Str),
                Some((p, "number")) => (p, Kind::Number),
                Some((p, "int")) => (p, Kind::Int),
                Some((p, "bool")) => (p, Kind::Bool),
                Some((_, t)) => {
                    return Err(format!(
                        "files.csv.columns.{col}: expected a type string, number, int or bool, found {t:?}"
                    ));
                }
            };
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(format!(
                    "files.csv.columns.{col}: expected a dotted field such as patient.birth_date, found {target:?}"
                ));
            }
            columns.insert(
                col.clone(),
                (path.split('.').map(str::to_owned).collect(), kind),
            );
        }
        let mut errors = Vec::new();
        for p in cfg.constants.keys() {
            if p.is_empty() || p.split('.').any(str::is_empty) {
                errors.push(format!(
                    "files.csv.constants.{p}: expected a dotted field such as hub_prefecture"
                ));
            }
        }
        // Two sources for one field, or a field under another field's
        // value (`patient` and `patient.sex`): refused here, all at once,
        // rather than at the first row.
        let mut targets: Vec<(String, String)> = columns
            .iter()
            .map(|(col, (path, _)): (&String, &(Vec<String>, Kind))| {
                (path.join("."), format!("files.csv.columns.{col}"))
            })
            .chain(
                cfg.constants
                    .keys()
                    .map(|p| (p.clone(), format!("files.csv.constants.{p}"))),
            )
            .collect();
        targets.sort();
        for w in targets.windows(2) {
            let ((a, ka), (b, kb)) = (&w[0], &w[1]);
            if a == b {
                errors.push(format!(
                    "{kb}: expected a field no other key fills, found {a} also filled by {ka}"
                ));
            } else if b.starts_with(&format!("{a}.")) {
                errors.push(format!(
                    "{kb}: expected a field that is not inside another, found {b} inside {a}, which {ka} fills"
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let constants = cfg
            .constants
            .iter()
            .map(|(p, v)| (p.split('.').map(str::to_owned).collect(), v.clone()))
            .collect();
        Ok(CsvMapping { columns, constants })
    }

    /// True when no column is mapped (CSV files are then left alone).
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    fn set(obj: &mut Map<String, Value>, path: &[String], v: Value) {
        let mut cur = obj;
        for p in &path[..path.len() - 1] {
            let slot = cur
                .entry(p.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            // `new` refuses colliding paths; should one slip through, the
            // row fails at the edge instead of the process panicking.
            let Some(next) = slot.as_object_mut() else {
                return;
            };
            cur = next;
        }
        cur.insert(path[path.len() - 1].clone(), v);
    }

    /// Maps one row to JSON-form bytes.
    pub fn map_row(&self, headers: &[String], row: &csv::ByteRecord) -> Result<Vec<u8>, JsonError> {
        let mut obj = Map::new();
        for (path, v) in &self.constants {
            Self::set(&mut obj, path, Value::String(v.clone()));
        }
        for (i, cell) in row.iter().enumerate() {
            let Some(col) = headers.get(i) else { continue };
            let Some((path, kind)) = self.columns.get(col) else {
                continue;
            };
            let dotted = path.join(".");
            let text = std::str::from_utf8(cell).map_err(|e| JsonError {
                path: dotted.clone(),
                expected: format!("UTF-8 text in CSV column {col}"),
                found: format!("an invalid byte sequence at byte {}", e.valid_up_to()),
                reason: RejectReason::Malformed,
            })?;
            if text.is_empty() {
                continue;
            }
            let bad = |expected: &str| JsonError {
                path: dotted.clone(),
                expected: format!("{expected} in CSV column {col}"),
                found: format!("{} that is not one", shape(&Value::String(text.to_owned()))),
                reason: RejectReason::WrongType,
            };
            let v = match kind {
                Kind::Str => Value::String(text.to_owned()),
                Kind::Number => Value::from(
                    text.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite())
                        .ok_or_else(|| bad("a number"))?,
                ),
                Kind::Int => {
                    Value::from(text.trim().parse::<i64>().map_err(|_| bad("an integer"))?)
                }
                Kind::Bool => Value::Bool(match text.trim() {
                    "true" | "1" | "TRUE" => true,
                    "false" | "0" | "FALSE" => false,
                    _ => return Err(bad("true/false or 1/0")),
                }),
            };
            Self::set(&mut obj, path, v);
        }
        Ok(serde_json::to_vec(&Value::Object(obj)).expect("serializes"))
    }
}

/// What a position in a file holds.
#[derive(Debug)]
pub enum Item<'a> {
    /// An empty line: nothing to send.
    Blank,
    /// A record in the JSON form.
    Record(Cow<'a, [u8]>),
    /// A record that could not even be put in the JSON form.
    Invalid(JsonError, Vec<u8>),
    /// A FHIR entry read as context, merged, or of no event type: counted,
    /// nothing to send.
    Skipped(crate::fhir::Skip),
}

/// One item and where it ends.
#[derive(Debug)]
pub struct Next<'a> {
    /// 1-based line of the item's start.
    pub line: u64,
    /// Byte offset after it.
    pub end: u64,
    /// The item.
    pub item: Item<'a>,
}

/// Reads the records of one file, from a resume point.
pub enum RecordReader {
    /// NDJSON (`*.ndjson`, `*.jsonl`).
    Ndjson {
        /// Reader.
        reader: BufReader<File>,
        /// Last line read.
        line: u64,
        /// Offset after it.
        offset: u64,
        /// Line buffer.
        buf: Vec<u8>,
    },
    /// A FHIR Bundle (`*.fhir.json`): each mapped entry is an item, its
    /// entry index + 1 standing for the line.
    Fhir {
        /// Mapped entries, in order.
        items: std::vec::IntoIter<(u64, crate::fhir::Entry)>,
        /// File size (the end offset of every item).
        size: u64,
    },
    /// CSV with a header row (`*.csv`).
    Csv {
        /// Reader.
        reader: csv::Reader<File>,
        /// Header names.
        headers: Vec<String>,
        /// The mapping.
        mapping: CsvMapping,
        /// Row buffer.
        row: csv::ByteRecord,
        /// Rows starting on or before this line were done before a restart.
        skip_through: u64,
    },
}

impl RecordReader {
    /// True for the file names the FHIR reader takes.
    pub fn is_fhir(path: &Path) -> bool {
        path.file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".fhir.json"))
    }

    /// Opens `path` after line `resume_line` (byte `resume_offset` for
    /// NDJSON); `hub` is the prefecture FHIR events are stamped with.
    pub fn open(
        path: &Path,
        mapping: Option<&CsvMapping>,
        hub: &str,
        resume_line: u64,
        resume_offset: u64,
    ) -> std::io::Result<Self> {
        if Self::is_fhir(path) {
            let bytes = std::fs::read(path)?;
            let items: Vec<(u64, crate::fhir::Entry)> = match crate::fhir::map_bundle(&bytes, hub) {
                Ok(entries) => entries
                    .into_iter()
                    .map(|(i, e)| (i as u64 + 1, e))
                    .filter(|(line, _)| *line > resume_line)
                    .collect(),
                Err(e) if resume_line == 0 => vec![(1, crate::fhir::Entry::Rejected(e))],
                Err(_) => vec![],
            };
            return Ok(RecordReader::Fhir {
                items: items.into_iter(),
                size: bytes.len() as u64,
            });
        }
        let file = File::open(path)?;
        if let Some(mapping) = mapping.filter(|_| path.extension().is_some_and(|e| e == "csv")) {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .flexible(true)
                .from_reader(file);
            let headers = reader
                .headers()
                .map_err(|e| {
                    // Not UTF-8 (a Shift_JIS export read as UTF-8): the
                    // caller moves the file aside rather than stopping.
                    let kind = if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) {
                        std::io::ErrorKind::InvalidData
                    } else {
                        std::io::ErrorKind::Other
                    };
                    std::io::Error::new(kind, e.to_string())
                })?
                .iter()
                .map(|h| h.trim_start_matches('\u{feff}').to_owned())
                .collect();
            // CSV rows may span lines: resume by re-reading, not by seeking.
            return Ok(RecordReader::Csv {
                reader,
                headers,
                mapping: mapping.clone(),
                row: csv::ByteRecord::new(),
                skip_through: resume_line,
            });
        }
        let mut reader = BufReader::with_capacity(1 << 20, file);
        reader.seek(std::io::SeekFrom::Start(resume_offset))?;
        Ok(RecordReader::Ndjson {
            reader,
            line: resume_line,
            offset: resume_offset,
            buf: Vec::with_capacity(4096),
        })
    }

    /// The next item, or None at the end of the file.
    pub fn next_item(&mut self) -> std::io::Result<Option<Next<'_>>> {
        match self {
            RecordReader::Ndjson {
                reader,
                line,
                offset,
                buf,
            } => {
                buf.clear();
                let n = reader.read_until(b'\n', buf)?;
                if n == 0 {
                    return Ok(None);
                }
                *line += 1;
                *offset += n as u64;
                let mut l = &buf[..];
                while let Some((last, rest)) = l.split_last()
                    && (*last == b'\n' || *last == b'\r')
                {
                    l = rest;
                }
                let item = if l.iter().all(u8::is_ascii_whitespace) {
                    Item::Blank
                } else {
                    Item::Record(Cow::Borrowed(l))
                };
                Ok(Some(Next {
                    line: *line,
                    end: *offset,
                    item,
                }))
            }
            RecordReader::Fhir { items, size } => Ok(items.next().map(|(line, m)| Next {
                line,
                end: *size,
                item: match m {
                    crate::fhir::Entry::Event(v) => {
                        Item::Record(Cow::Owned(serde_json::to_vec(&v).expect("serializes")))
                    }
                    crate::fhir::Entry::Rejected(e) => Item::Invalid(e, Vec::new()),
                    crate::fhir::Entry::Skipped(k) => Item::Skipped(k),
                },
            })),
            RecordReader::Csv {
                reader,
                headers,
                mapping,
                row,
                skip_through,
            } => loop {
                let start_line = reader.position().line() + 1;
                match reader.read_byte_record(row) {
                    Ok(false) => return Ok(None),
                    Ok(true) => {
                        let line = row.position().map_or(start_line, |p| p.line());
                        if line <= *skip_through {
                            continue;
                        }
                        let end = reader.position().byte();
                        let raw = || row.iter().collect::<Vec<_>>().join(&b","[..]);
                        let item = if row.len() != headers.len() {
                            Item::Invalid(
                                JsonError {
                                    path: "$".into(),
                                    expected: format!(
                                        "{} CSV columns, as in the header",
                                        headers.len()
                                    ),
                                    found: format!("{} columns", row.len()),
                                    reason: RejectReason::Malformed,
                                },
                                raw(),
                            )
                        } else {
                            match mapping.map_row(headers, row) {
                                Ok(json) => Item::Record(Cow::Owned(json)),
                                Err(e) => Item::Invalid(e, raw()),
                            }
                        };
                        return Ok(Some(Next { line, end, item }));
                    }
                    Err(e) => return Err(std::io::Error::other(e)),
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> CsvMapping {
        let mut cfg = CsvConfig::default();
        for (c, t) in [
            ("id", "event_id"),
            ("val", "payload.value_numeric:number"),
            ("days", "payload.days_supply:int"),
        ] {
            cfg.columns.insert(c.into(), t.into());
        }
        cfg.constants
            .insert("event_type".into(), "lab_result".into());
        CsvMapping::new(&cfg).unwrap()
    }

    #[test]
    fn rows_map_to_nested_json_with_types() {
        let m = mapping();
        let headers = vec![
            "id".to_string(),
            "val".into(),
            "days".into(),
            "ignored".into(),
        ];
        let row = csv::ByteRecord::from(vec!["e1", "5.8", "", "x"]);
        let v: Value = serde_json::from_slice(&m.map_row(&headers, &row).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event_id": "e1", "event_type": "lab_result", "payload": {"value_numeric": 5.8}})
        );
    }

    #[test]
    fn a_bad_cell_names_field_and_column_not_value() {
        let m = mapping();
        let headers = vec!["id".to_string(), "val".into(), "days".into()];
        let e = m
            .map_row(&headers, &csv::ByteRecord::from(vec!["e1", "高い", "3"]))
            .unwrap_err();
        assert_eq!(e.path, "payload.value_numeric");
        assert!(
            e.to_string().contains("CSV column val") && !e.to_string().contains("高い"),
            "{e}"
        );
    }

    #[test]
    fn colliding_mapping_paths_are_all_refused_at_start_up() {
        // On main the first row panicked ("mapping paths do not collide").
        let mut cfg = CsvConfig::default();
        cfg.columns.insert("患者".into(), "patient".into());
        cfg.columns.insert("性別".into(), "patient.sex".into());
        cfg.columns.insert("ID".into(), "event_id".into());
        cfg.constants.insert("event_id".into(), "x".into());
        let e = CsvMapping::new(&cfg).unwrap_err();
        assert!(e.contains("found patient.sex inside patient"), "{e}");
        assert!(e.contains("found event_id also filled by"), "{e}");
    }

    #[test]
    fn bad_mapping_types_are_refused_with_the_key() {
        let mut cfg = CsvConfig::default();
        cfg.columns.insert("x".into(), "payload.a:float".into());
        assert!(
            CsvMapping::new(&cfg)
                .unwrap_err()
                .starts_with("files.csv.columns.x: expected a type")
        );
    }
}
