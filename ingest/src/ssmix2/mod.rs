//! SS-MIX2 standardized storage (標準化ストレージ): the HL7 v2.5 messages
//! Japanese EHRs write to a shared folder, one file per message.
//!
//! This module is the pure core: a file name and its bytes in, events in
//! the JSON form (or a reject naming data type, segment and field) out.
//! [`tree`] walks a storage root and queues new messages for the files
//! source, which sends them exactly once.
//!
//! Mapped (docs/ingest.md has the table):
//! - every message: PID → identity (kanji and kana names, birth date,
//!   sex, address, phone); insurance from the patient's latest ADT-00 IN1;
//! - ADT-22 admission → `encounter` (inpatient); ADT-52 discharge → the
//!   whole stay as `encounter` with `ended_at`, and a correction of the
//!   admission row it completes;
//! - PPR-01 PRB → `diagnosis` (ICD-10, MEDIS management number and
//!   exchange code); PRB-1 `DE` withdraws the diagnosis;
//! - OMP-01 RXE and OMP-11 RXA → `prescription` (YJ, HOT); OML-11 OBX →
//!   `lab_result` (JLAC10); ADT-61 IAM → `allergy`; an outpatient order
//!   (PV1-2 `O`) also makes that day's outpatient `encounter`;
//! - a file whose condition flag is 0 (cancelled) withdraws the events it
//!   would have made: corrections with the same event ids;
//! - every other data type is skipped and counted.
//!
//! Decoding: ISO-2022-JP (JIS X 0208, what SS-MIX2 mandates) through
//! `encoding_rs`; parsing: the `hl7-parser` crate. Rejects name the data
//! type, the segment and field — never a value, never the file name (it
//! holds the patient id and the order number).

pub mod tree;

use crate::fhir::put;
use chitose_schemas::json::{JsonError, RejectReason};
use hl7_parser::Message;
use hl7_parser::message::{Field, Segment};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The parts of a standardized-storage file name:
/// `<patient id>_<date or ->_<data type>_<order no>_<timestamp>_<department or ->_<flag>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    /// Hospital patient id (also the folder).
    pub patient_id: String,
    /// Care date `YYYYMMDD`, or None for `-` (patient-level data).
    pub date: Option<String>,
    /// Data type, e.g. `OMP-01`.
    pub data_type: String,
    /// Order number (15 characters in the standard; `9…9` when none).
    pub order_no: String,
    /// Creation timestamp, `YYYYMMDDHHMMSSfff`.
    pub timestamp: String,
    /// Department code or `-`.
    pub department: String,
    /// Condition flag 0: the message is cancelled (削除).
    pub cancelled: bool,
}

impl FileName {
    /// Parses a file name. Errors say what was expected, never echo it.
    pub fn parse(name: &str) -> Result<FileName, &'static str> {
        let parts: Vec<&str> = name.split('_').collect();
        let [pid, date, dt, order, ts, dept, flag] = parts.as_slice() else {
            return Err(
                "a name of 7 parts joined by _ (patient, date, data type, order, timestamp, department, flag)",
            );
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("a patient id of letters and digits");
        }
        let date = match *date {
            "-" => None,
            d if d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) => Some(d.to_owned()),
            _ => return Err("a care date YYYYMMDD or -"),
        };
        if dt.is_empty() || !dt.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("a data type such as OMP-01");
        }
        if ts.len() < 14 || !ts.bytes().all(|b| b.is_ascii_digit()) {
            return Err("a timestamp YYYYMMDDHHMMSSfff");
        }
        let cancelled = match *flag {
            "1" => false,
            "0" => true,
            _ => return Err("a condition flag 0 or 1"),
        };
        Ok(FileName {
            patient_id: (*pid).to_owned(),
            date,
            data_type: (*dt).to_owned(),
            order_no: (*order).to_owned(),
            timestamp: (*ts).to_owned(),
            department: (*dept).to_owned(),
            cancelled,
        })
    }
}

/// What one message became.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mapped {
    /// Events in the JSON form, corrections included.
    pub events: Vec<Value>,
    /// How many of them are corrections.
    pub corrections: usize,
    /// True when the data type makes no event (counted, not an error).
    pub skipped: bool,
}

fn err(data_type: &str, at: &str, expected: &str, found: &str, reason: RejectReason) -> JsonError {
    JsonError {
        path: format!("message({}).{at}", bounded(data_type)),
        expected: expected.to_owned(),
        found: found.to_owned(),
        reason,
    }
}

fn bounded(s: &str) -> &str {
    if s.len() <= 12 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        s
    } else {
        "?"
    }
}

/// Decodes ISO-2022-JP (a message with no escape sequence is plain ASCII,
/// which decodes the same).
pub fn decode(bytes: &[u8]) -> Option<String> {
    encoding_rs::ISO_2022_JP
        .decode_without_bom_handling_and_without_replacement(bytes)
        .map(|c| c.into_owned())
}

/// The HL7 text of a field component, escapes resolved (`\F\` etc.).
fn comp(
    seg: &Segment<'_>,
    field: usize,
    component: usize,
    seps: &hl7_parser::message::Separators,
) -> Option<String> {
    let f = seg.field(field)?;
    let c = f.component(component)?;
    let v = c.display(seps).to_string();
    (!v.is_empty()).then_some(v)
}

fn repeats<'m>(seg: &'m Segment<'m>, field: usize) -> Vec<&'m hl7_parser::message::Repeat<'m>> {
    seg.field(field)
        .map(|f: &Field<'m>| f.repeats().collect())
        .unwrap_or_default()
}

/// `YYYYMMDD[HHMM[SS]]` → RFC 3339 in JST, or a date.
fn hl7_time(s: &str) -> Option<String> {
    let d: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    match d.len() {
        8 => Some(format!(
            "{}-{}-{}T00:00:00+09:00",
            &d[..4],
            &d[4..6],
            &d[6..8]
        )),
        12 => Some(format!(
            "{}-{}-{}T{}:{}:00+09:00",
            &d[..4],
            &d[4..6],
            &d[6..8],
            &d[8..10],
            &d[10..12]
        )),
        n if n >= 14 => Some(format!(
            "{}-{}-{}T{}:{}:{}+09:00",
            &d[..4],
            &d[4..6],
            &d[6..8],
            &d[8..10],
            &d[10..12],
            &d[12..14]
        )),
        _ => None,
    }
}

fn hl7_date(s: &str) -> Option<String> {
    let d: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    (d.len() >= 8).then(|| format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..8]))
}

/// A message, parsed, with its separators.
struct Msg<'m> {
    m: Message<'m>,
    dt: &'m str,
}

impl<'m> Msg<'m> {
    fn segs(&self, name: &'static str) -> impl Iterator<Item = &Segment<'m>> {
        self.m.segments().filter(move |s| s.name == name)
    }

    fn c(&self, seg: &Segment<'_>, field: usize, component: usize) -> Option<String> {
        comp(seg, field, component, &self.m.separators)
    }
}

/// The insurance tuple of an ADT-00 message (IN1-3 insurer number, IN1-10
/// 記号, IN1-11 番号, as JAHIS lays out ZI1), if it has one.
pub fn insurance_of(bytes: &[u8]) -> Option<Value> {
    let text = decode(bytes)?;
    let m = Message::parse_with_lenient_newlines(&text, true).ok()?;
    let in1 = m.segment("IN1")?;
    let seps = &m.separators;
    let insurer = comp(in1, 3, 1, seps)?;
    let number = comp(in1, 11, 1, seps)?;
    let mut out = json!({"insurer_number": insurer, "insured_number": number});
    if let Some(s) = comp(in1, 10, 1, seps) {
        out["insured_symbol"] = s.into();
    }
    Some(out)
}

/// The identity block from PID.
fn identity(msg: &Msg<'_>, insurance: Option<&Value>) -> Result<Value, JsonError> {
    let dt = msg.dt;
    let pid = msg
        .segs("PID")
        .next()
        .ok_or_else(|| err(dt, "PID", "a PID segment", "none", RejectReason::Unmappable))?;
    let local = msg.c(pid, 3, 1).ok_or_else(|| {
        err(
            dt,
            "PID-3",
            "the patient id",
            "none",
            RejectReason::MissingField,
        )
    })?;
    let birth = msg.c(pid, 7, 1).and_then(|b| hl7_date(&b)).ok_or_else(|| {
        err(
            dt,
            "PID-7",
            "a birth date YYYYMMDD",
            "none or another shape",
            RejectReason::InvalidDate,
        )
    })?;
    let mut out = Map::new();
    out.insert("local_patient_id".into(), local.into());
    out.insert("birth_date".into(), birth.into());
    let sex = match msg.c(pid, 8, 1).as_deref() {
        Some("M") => "male",
        Some("F") => "female",
        _ => "unknown",
    };
    out.insert("sex".into(), sex.into());
    for r in repeats(pid, 5) {
        let part = |n: usize| {
            r.component(n)
                .map(|c| c.display(&msg.m.separators).to_string())
                .filter(|s| !s.is_empty())
        };
        let name = match (part(1), part(2)) {
            (Some(f), Some(g)) => format!("{f}\u{3000}{g}"),
            (Some(f), None) => f,
            _ => continue,
        };
        // XPN-8 representation: I ideographic (kanji), P phonetic (kana).
        match part(8).as_deref() {
            Some("I") => out.insert("name_kanji".into(), name.into()),
            Some("P") => out.insert("name_kana".into(), name.into()),
            _ => None,
        };
    }
    if let Some(r) = repeats(pid, 11).first() {
        let part = |n: usize| {
            r.component(n)
                .map(|c| c.display(&msg.m.separators).to_string())
                .filter(|s| !s.is_empty())
        };
        if let Some(pc) = part(5) {
            out.insert("postal_code".into(), pc.into());
        }
        let line: Vec<String> = [1, 2, 4, 3, 8].iter().filter_map(|&n| part(n)).collect();
        if !line.is_empty() {
            out.insert("address_line".into(), line.join(" ").into());
        }
    }
    for r in repeats(pid, 13) {
        let part = |n: usize| {
            r.component(n)
                .map(|c| c.display(&msg.m.separators).to_string())
                .filter(|s| !s.is_empty())
        };
        if let Some(p) = part(12).or_else(|| part(1)) {
            out.insert("phone".into(), p.into());
            break;
        }
    }
    if let Some(i) = insurance {
        out.insert("insurance".into(), i.clone());
    }
    Ok(Value::Object(out))
}

/// A CWE field's codes: (code, text, coding system), the alternate triple
/// too.
fn codes(msg: &Msg<'_>, seg: &Segment<'_>, field: usize) -> Vec<(String, Option<String>, String)> {
    let mut out = Vec::new();
    for base in [1, 4] {
        if let (Some(code), Some(sys)) = (msg.c(seg, field, base), msg.c(seg, field, base + 2)) {
            out.push((code, msg.c(seg, field, base + 1), sys));
        }
    }
    out
}

/// The stable id of one event of a message: the same for the message and
/// its cancellation, whatever their timestamps.
fn event_id(facility: &str, f: &FileName, kind: &str, key: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        "chitose-ssmix2-event-v1",
        facility,
        &f.patient_id,
        kind,
        key,
    ] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    format!("ss2-{}", crate::fhir::letters(&h.finalize()[..20]))
}

struct Out<'a> {
    facility: &'a str,
    hub: &'a str,
    file: &'a FileName,
    identity: Value,
    mapped: Mapped,
}

impl Out<'_> {
    fn event(&mut self, kind: &str, key: &str, event_type: &str, occurred: String, payload: Value) {
        let id = event_id(self.facility, self.file, kind, key);
        if self.file.cancelled {
            self.correction(&id, event_type, occurred);
            return;
        }
        self.mapped.events.push(json!({
            "event_id": id,
            "event_type": event_type,
            "hub_prefecture": self.hub,
            "facility_code": self.facility,
            "occurred_at": occurred,
            "recorded_at": occurred,
            "source_format": "ssmix2",
            "patient": self.identity,
            "payload": payload,
        }));
    }

    fn correction(&mut self, id: &str, event_type: &str, occurred: String) {
        self.mapped.corrections += 1;
        self.mapped.events.push(json!({
            "event_id": id,
            "event_type": "correction",
            "hub_prefecture": self.hub,
            "facility_code": self.facility,
            "occurred_at": occurred,
            "recorded_at": occurred,
            "source_format": "ssmix2",
            "patient": self.identity,
            "payload": {"corrected_event_type": event_type, "reason": "cancelled"},
        }));
    }
}

/// Data types this module maps; any other is skipped and counted.
pub const MAPPED_TYPES: &[&str] = &[
    "ADT-22", "ADT-52", "ADT-61", "PPR-01", "OMP-01", "OMP-11", "OML-11",
];

/// Maps one message. `insurance`: the patient's tuple from their latest
/// ADT-00, if any.
pub fn map_message(
    file: &FileName,
    bytes: &[u8],
    facility: &str,
    hub: &str,
    insurance: Option<&Value>,
) -> Result<Mapped, JsonError> {
    let dt = file.data_type.as_str();
    if !MAPPED_TYPES.contains(&dt) {
        return Ok(Mapped {
            skipped: true,
            ..Mapped::default()
        });
    }
    let text = decode(bytes).ok_or_else(|| {
        err(
            dt,
            "$",
            "ISO-2022-JP text (JIS X 0208)",
            "bytes that are not",
            RejectReason::Malformed,
        )
    })?;
    let m = Message::parse_with_lenient_newlines(&text, true).map_err(|_| {
        err(
            dt,
            "$",
            "an HL7 v2 message starting with MSH",
            "text that does not parse",
            RejectReason::Malformed,
        )
    })?;
    let msg = Msg { m, dt };
    let identity = identity(&msg, insurance)?;
    if msg
        .segs("PID")
        .next()
        .and_then(|p| msg.c(p, 3, 1))
        .as_deref()
        != Some(file.patient_id.as_str())
    {
        return Err(err(
            dt,
            "PID-3",
            "the patient id of the storage folder",
            "another id",
            RejectReason::Semantic,
        ));
    }
    let msh_time = msg
        .m
        .segment("MSH")
        .and_then(|s| msg.c(s, 7, 1))
        .and_then(|t| hl7_time(&t));
    let day = file.date.as_deref().and_then(hl7_time);
    let mut out = Out {
        facility,
        hub,
        file,
        identity,
        mapped: Mapped::default(),
    };
    let pv1_class = msg.segs("PV1").next().and_then(|p| msg.c(p, 2, 1));
    match dt {
        "ADT-22" => {
            let pv1 = msg
                .segs("PV1")
                .next()
                .ok_or_else(|| err(dt, "PV1", "a PV1 segment", "none", RejectReason::Unmappable))?;
            let admit = msg.c(pv1, 44, 1).or_else(|| {
                msg.segs("EVN")
                    .next()
                    .and_then(|e| msg.c(e, 6, 1).or_else(|| msg.c(e, 2, 1)))
            });
            let at = admit.as_deref().and_then(hl7_time).ok_or_else(|| {
                err(
                    dt,
                    "PV1-44",
                    "the admission date and time",
                    "none",
                    RejectReason::MissingField,
                )
            })?;
            let key = admit.unwrap_or_default();
            out.event(
                "admission",
                &key,
                "encounter",
                at,
                json!({"encounter_id": short(&key), "encounter_class": "inpatient"}),
            );
        }
        "ADT-52" => {
            let pv1 = msg
                .segs("PV1")
                .next()
                .ok_or_else(|| err(dt, "PV1", "a PV1 segment", "none", RejectReason::Unmappable))?;
            let admit = msg.c(pv1, 44, 1).ok_or_else(|| {
                err(
                    dt,
                    "PV1-44",
                    "the admission date and time of the stay",
                    "none",
                    RejectReason::MissingField,
                )
            })?;
            let at = hl7_time(&admit).ok_or_else(|| {
                err(
                    dt,
                    "PV1-44",
                    "a time YYYYMMDDHHMM",
                    "another shape",
                    RejectReason::InvalidDate,
                )
            })?;
            let end = msg
                .c(pv1, 45, 1)
                .or_else(|| msg.segs("EVN").next().and_then(|e| msg.c(e, 6, 1)))
                .and_then(|e| hl7_time(&e))
                .ok_or_else(|| {
                    err(
                        dt,
                        "PV1-45",
                        "the discharge date and time",
                        "none",
                        RejectReason::MissingField,
                    )
                })?;
            // The admission row is replaced by the whole stay.
            if !file.cancelled {
                let admission = event_id(facility, file, "admission", &admit);
                out.correction(&admission, "encounter", at.clone());
            }
            out.event("stay", &admit, "encounter", at, json!({"encounter_id": short(&admit), "encounter_class": "inpatient", "ended_at": end}));
        }
        "PPR-01" => {
            for (n, prb) in msg.segs("PRB").enumerate() {
                let at = format!("PRB[{}]", n + 1);
                let mut p =
                    json!({"is_suspected": false, "outcome": "continuing", "is_primary": false});
                for (code, text, sys) in codes(&msg, prb, 3).into_iter().chain(codes(&msg, prb, 10))
                {
                    match sys.as_str() {
                        "I10" | "ICD10" => {
                            // K297 → K29.7; anything not ASCII is left
                            // for the contract's pattern to refuse.
                            let c = match (code.get(..3), code.get(3..)) {
                                (Some(a), Some(b))
                                    if !b.is_empty() && code.is_ascii() && !code.contains('.') =>
                                {
                                    format!("{a}.{b}")
                                }
                                _ => code,
                            };
                            p["icd10_code"] = c.into();
                        }
                        "MDCDX2" | "MDCDX" if code.len() == 8 => {
                            p["medis_disease_number"] = code.into();
                            put(&mut p, "disease_name", text);
                        }
                        "MDCDX2" | "MDCDX" if code.len() == 4 => {
                            p["medis_disease_code"] = code.into()
                        }
                        _ => {}
                    }
                }
                if let Some(z) = msg.segs("ZPR").nth(n) {
                    for (code, _, sys) in codes(&msg, z, 5) {
                        if sys.starts_with("MDCDX") && code.len() == 4 {
                            p["medis_disease_code"] = code.into();
                        }
                    }
                }
                if p.get("icd10_code").is_none()
                    && p.get("medis_disease_number").is_none()
                    && p.get("medis_disease_code").is_none()
                {
                    return Err(err(
                        dt,
                        &format!("{at}-3"),
                        "a diagnosis coded in ICD-10 (I10) or MEDIS (MDCDX2)",
                        "no such code",
                        RejectReason::Unmappable,
                    ));
                }
                if let Some(o) = msg.c(prb, 14, 1) {
                    p["outcome"] = match o.as_str() {
                        "D" => "died",
                        "R" => "cured",
                        _ => "continuing",
                    }
                    .into();
                }
                if msg.c(prb, 18, 1).as_deref() == Some("1") {
                    p["is_primary"] = true.into();
                }
                put(
                    &mut p,
                    "onset_date",
                    msg.c(prb, 16, 1).and_then(|d| hl7_date(&d)),
                );
                let when = msg
                    .c(prb, 2, 1)
                    .and_then(|t| hl7_time(&t))
                    .or(day.clone())
                    .or(msh_time.clone())
                    .ok_or_else(|| {
                        err(
                            dt,
                            &format!("{at}-2"),
                            "the date of the diagnosis",
                            "none",
                            RejectReason::MissingField,
                        )
                    })?;
                let key = msg
                    .c(prb, 4, 1)
                    .unwrap_or_else(|| format!("{}#{n}", file.order_no));
                if msg.c(prb, 1, 1).as_deref() == Some("DE") {
                    let id = event_id(facility, file, "diagnosis", &key);
                    out.correction(&id, "diagnosis", when);
                } else {
                    out.event("diagnosis", &key, "diagnosis", when, p);
                }
            }
        }
        "OMP-01" | "OMP-11" => {
            let (seg, code_field) = if dt == "OMP-01" {
                ("RXE", 2)
            } else {
                ("RXA", 5)
            };
            let ordered = msg
                .segs("ORC")
                .next()
                .and_then(|o| msg.c(o, 9, 1))
                .and_then(|t| hl7_time(&t));
            let route = msg.segs("RXR").next().and_then(|r| msg.c(r, 1, 1));
            let days = msg.segs("TQ1").next().and_then(|t| {
                let unit = msg.c(t, 6, 2);
                let n: i64 = msg.c(t, 6, 1)?.parse().ok()?;
                (unit.as_deref() == Some("d")).then_some(n)
            });
            for (n, s) in msg.segs(seg).enumerate() {
                let at = format!("{seg}[{}]-{code_field}", n + 1);
                let mut p = json!({"route": match route.as_deref() { Some("PO") => "oral", Some("IV" | "IM" | "SC") => "injection", Some("TP" | "OP") => "topical", Some("IH") => "inhalation", _ => "other" }});
                for (code, text, sys) in codes(&msg, s, code_field) {
                    match sys.as_str() {
                        "HOT" | "HOT9" | "HOT13" => p["hot_code"] = code.into(),
                        "YJ" | "99YJ" => p["yj_code"] = code.into(),
                        _ => continue,
                    }
                    put(&mut p, "drug_name", text);
                }
                if p.get("hot_code").is_none() && p.get("yj_code").is_none() {
                    // An injection mix or a free order: no drug code.
                    return Err(err(
                        dt,
                        &at,
                        "a drug coded in HOT or YJ",
                        "another coding system or none",
                        RejectReason::Unmappable,
                    ));
                }
                put(
                    &mut p,
                    "days_supply",
                    days.filter(|d| (1..=365).contains(d)),
                );
                let when = (if dt == "OMP-11" {
                    msg.c(s, 3, 1).and_then(|t| hl7_time(&t))
                } else {
                    None
                })
                .or(ordered.clone())
                .or(day.clone())
                .or(msh_time.clone())
                .ok_or_else(|| {
                    err(
                        dt,
                        "ORC-9",
                        "the order date",
                        "none",
                        RejectReason::MissingField,
                    )
                })?;
                out.event(
                    &format!("{dt}-{seg}"),
                    &format!("{}#{n}", file.order_no),
                    "prescription",
                    when,
                    p,
                );
            }
        }
        "OML-11" => {
            for (n, obx) in msg.segs("OBX").enumerate() {
                let at = format!("OBX[{}]", n + 1);
                let (code, text) = codes(&msg, obx, 3)
                    .into_iter()
                    .find(|(_, _, sys)| sys == "JC10")
                    .map(|(c, t, _)| (c, t))
                    .ok_or_else(|| {
                        err(
                            dt,
                            &format!("{at}-3"),
                            "a result coded in JLAC10 (JC10)",
                            "another coding system",
                            RejectReason::Unmappable,
                        )
                    })?;
                let mut p =
                    json!({"jlac10_code": code, "test_name": text.unwrap_or_else(|| code.clone())});
                let value = msg.c(obx, 5, 1);
                match (msg.c(obx, 2, 1).as_deref(), value) {
                    (Some("NM"), Some(v)) => {
                        let x: f64 = v.trim().parse().map_err(|_| {
                            err(
                                dt,
                                &format!("{at}-5"),
                                "a number (OBX-2 is NM)",
                                "text",
                                RejectReason::WrongType,
                            )
                        })?;
                        p["value_numeric"] = x.into();
                    }
                    (_, Some(v)) => p["value_text"] = v.into(),
                    (_, None) => {
                        return Err(err(
                            dt,
                            &format!("{at}-5"),
                            "a result value",
                            "none",
                            RejectReason::MissingField,
                        ));
                    }
                }
                put(&mut p, "unit", msg.c(obx, 6, 1));
                if let Some((lo, hi)) = msg.c(obx, 7, 1).as_deref().and_then(|r| r.split_once('-'))
                {
                    if let Ok(x) = lo.trim().parse::<f64>() {
                        p["reference_low"] = x.into();
                    }
                    if let Ok(x) = hi.trim().parse::<f64>() {
                        p["reference_high"] = x.into();
                    }
                }
                if let Some(f) = msg
                    .c(obx, 8, 1)
                    .and_then(|f| crate::fhir::codes::abnormal_flag(&f))
                {
                    p["abnormal_flag"] = f.into();
                }
                let when = msg
                    .c(obx, 14, 1)
                    .and_then(|t| hl7_time(&t))
                    .or_else(|| {
                        msg.segs("OBR")
                            .next()
                            .and_then(|o| msg.c(o, 7, 1))
                            .and_then(|t| hl7_time(&t))
                    })
                    .or(day.clone())
                    .ok_or_else(|| {
                        err(
                            dt,
                            &format!("{at}-14"),
                            "the time of the result",
                            "none",
                            RejectReason::MissingField,
                        )
                    })?;
                out.event(
                    "lab",
                    &format!("{}#{n}", file.order_no),
                    "lab_result",
                    when,
                    p,
                );
            }
        }
        "ADT-61" => {
            for (n, iam) in msg.segs("IAM").enumerate() {
                let at = format!("IAM[{}]", n + 1);
                let category = match msg.c(iam, 2, 1).as_deref() {
                    Some("DA") => Some("medication"),
                    Some("FA") => Some("food"),
                    Some("EA" | "LA" | "AA" | "PA") => Some("environment"),
                    _ => None,
                };
                let found = codes(&msg, iam, 3);
                let (code, text, sys) = found.into_iter().next().unwrap_or_default();
                let system = match sys.as_str() {
                    "HOT" | "HOT9" => "hot",
                    "YJ" => "yj",
                    _ => "other",
                };
                let mut p = json!({"substance_system": system, "clinical_status": "active", "is_confirmed": true});
                if !code.is_empty()
                    && code.len() <= 20
                    && code.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    p["substance_code"] = code.clone().into();
                }
                match text {
                    Some(t) => p["substance_name"] = t.into(),
                    None if code.is_empty() => {
                        return Err(err(
                            dt,
                            &format!("{at}-3"),
                            "an allergen code or name",
                            "none",
                            RejectReason::MissingField,
                        ));
                    }
                    None => {}
                }
                put(&mut p, "category", category);
                if let Some(s) = msg.c(iam, 4, 1) {
                    let sev = match s.as_str() {
                        "SV" => Some("severe"),
                        "MO" => Some("moderate"),
                        "MI" => Some("mild"),
                        _ => None,
                    };
                    put(&mut p, "reaction_severity", sev);
                }
                put(&mut p, "reaction", msg.c(iam, 5, 1));
                let when = msg
                    .segs("EVN")
                    .next()
                    .and_then(|e| msg.c(e, 2, 1))
                    .and_then(|t| hl7_time(&t))
                    .or(msh_time.clone())
                    .ok_or_else(|| {
                        err(
                            dt,
                            "EVN-2",
                            "the date the allergy was recorded",
                            "none",
                            RejectReason::MissingField,
                        )
                    })?;
                let key = format!("{}|{}", sys, code);
                if msg.c(iam, 6, 1).as_deref() == Some("D") {
                    let id = event_id(facility, file, "allergy", &key);
                    out.correction(&id, "allergy", when);
                } else {
                    out.event("allergy", &key, "allergy", when, p);
                }
            }
        }
        _ => unreachable!("checked against MAPPED_TYPES"),
    }
    // An outpatient order is also that day's outpatient visit; the id is
    // the day's, so every order of the day makes the same event (the sink
    // keeps one). A cancelled order does not cancel the visit.
    if matches!(dt, "OMP-01" | "OML-11")
        && pv1_class.as_deref() == Some("O")
        && !file.cancelled
        && let Some(d) = &file.date
        && let Some(at) = hl7_time(d)
    {
        out.event(
            "outpatient",
            d,
            "encounter",
            at,
            json!({"encounter_id": short(d), "encounter_class": "outpatient"}),
        );
    }
    if out.mapped.events.is_empty() {
        return Err(err(
            dt,
            "$",
            "at least one clinical segment (PRB, RXE, RXA, OBX, IAM, PV1)",
            "none",
            RejectReason::Unmappable,
        ));
    }
    Ok(out.mapped)
}

fn short(key: &str) -> String {
    crate::fhir::letters(&Sha256::digest(key.as_bytes())[..8])
}
