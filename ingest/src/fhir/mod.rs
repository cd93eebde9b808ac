//! FHIR R4 Bundles as the Japanese guides publish them → events in the
//! JSON form.
//!
//! Read as JP Core, JP-CLINS (電子カルテ情報共有サービス), 電子処方箋 and
//! eCheckupReport / 自治体検診 write them (docs/ingest.md has the tables):
//! - references by `urn:uuid:` fullUrl, relative `Type/id`, absolute URL
//!   and `#contained`;
//! - each entry is linked to *its* Patient (subject, patient), that
//!   patient's own Coverage (beneficiary) and the Organization that acted
//!   (performer, requester, recorder, serviceProvider, the Encounter's
//!   provider, then the document's custodian and author): nothing of one
//!   patient or facility is applied to another;
//! - document bundles: the Composition supplies the patient, the
//!   organization and the date (its Encounter's start, else its own date)
//!   when an entry has none;
//! - code systems by every URI and OID the guides use ([`codes`]).
//!
//! Each entry ends as an event, a reject with the reason, or a counted skip
//! (context such as Patient or Composition, resources that are no event,
//! 特定健診 items merged into their checkup event, observation groups):
//! nothing is dropped silently.

pub mod codes;

use chitose_schemas::json::{JsonError, RejectReason};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Why an entry produced no event of its own, as a metric label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Patient, Organization, Coverage, Practitioner, Composition, …: read
    /// for the entries that refer to them.
    Context,
    /// A resource no event type stands for (CarePlan, DocumentReference,
    /// Procedure, nested Bundle, …).
    NotAnEvent,
    /// A 特定健診 item merged into its checkup event.
    CheckupItem,
    /// An Observation that only groups others (hasMember).
    ObservationGroup,
}

impl Skip {
    /// Every kind, for metrics.
    pub const ALL: [Skip; 4] = [
        Skip::Context,
        Skip::NotAnEvent,
        Skip::CheckupItem,
        Skip::ObservationGroup,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Context => "context",
            Skip::NotAnEvent => "not_an_event",
            Skip::CheckupItem => "checkup_item",
            Skip::ObservationGroup => "observation_group",
        }
    }
}

/// One entry's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// An event in the JSON form.
    Event(Value),
    /// Why not, naming the entry and the element.
    Rejected(JsonError),
    /// Read as context, or merged, or no event type: counted.
    Skipped(Skip),
}

/// Resources read as context for the entries that refer to them.
const CONTEXT: &[&str] = &[
    "Patient",
    "Organization",
    "Coverage",
    "Practitioner",
    "PractitionerRole",
    "Composition",
    "Location",
    "Specimen",
    "Medication",
    "RelatedPerson",
    "Device",
    "Endpoint",
    "HealthcareService",
];

fn reject(i: usize, rt: &str, expected: &str, found: &str) -> JsonError {
    JsonError {
        path: format!("entry[{i}].resource({})", bounded_type(rt)),
        expected: expected.to_owned(),
        found: found.to_owned(),
        reason: RejectReason::Unmappable,
    }
}

/// A resource type as sent is shown only when it is a plain identifier.
fn bounded_type(rt: &str) -> &str {
    if rt.len() <= 40 && rt.bytes().all(|b| b.is_ascii_alphabetic()) {
        rt
    } else {
        "?"
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(Value::as_str)
}

fn codings(concept: Option<&Value>) -> impl Iterator<Item = &Value> {
    concept
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The code of the first coding whose system is one of `systems`.
fn coding<'a>(concept: Option<&'a Value>, systems: &[&str]) -> Option<&'a str> {
    codings(concept)
        .find(|c| {
            c.get("system")
                .and_then(Value::as_str)
                .is_some_and(|s| systems.contains(&s))
        })?
        .get("code")?
        .as_str()
}

fn has_code(concept: Option<&Value>, systems: &[&str], code: &str) -> bool {
    codings(concept).any(|c| {
        c.get("system")
            .and_then(Value::as_str)
            .is_some_and(|s| systems.contains(&s))
            && c.get("code").and_then(Value::as_str) == Some(code)
    })
}

/// `text`, else the display of the coding in `systems`, else any display.
fn display(concept: Option<&Value>, systems: &[&str]) -> Option<String> {
    let c = concept?;
    c.get("text")
        .and_then(Value::as_str)
        .or_else(|| {
            codings(Some(c))
                .find(|x| {
                    x.get("system")
                        .and_then(Value::as_str)
                        .is_some_and(|s| systems.contains(&s))
                })
                .and_then(|x| x.get("display"))
                .and_then(Value::as_str)
        })
        .or_else(|| codings(Some(c)).find_map(|x| x.get("display").and_then(Value::as_str)))
        .map(str::to_owned)
}

fn categories(r: &Value) -> impl Iterator<Item = &Value> {
    r.get("category")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn has_category(r: &Value, code: &str) -> bool {
    categories(r).any(|c| has_code(Some(c), codes::OBSERVATION_CATEGORY, code))
}

fn ext<'a>(v: &'a Value, url: &str) -> Option<&'a Value> {
    v.get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(url))
}

fn ext_str<'a>(v: &'a Value, url: &str) -> Option<&'a str> {
    ext(v, url)?.get("valueString")?.as_str()
}

/// Full-width digits (common in Japanese exports) as ASCII; anything else
/// kept.
fn ascii_digits(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '０'..='９' => char::from(b'0' + (c as u32 - '０' as u32) as u8),
            c => c,
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

fn is_digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

/// A reference's target: a bundle entry or a contained resource.
struct Index<'a> {
    resources: Vec<&'a Value>,
    urls: Vec<Option<&'a str>>,
    keys: HashMap<String, usize>,
}

impl<'a> Index<'a> {
    fn new(entries: &'a [Value]) -> Self {
        let mut resources = Vec::with_capacity(entries.len());
        let mut urls = Vec::with_capacity(entries.len());
        let mut keys = HashMap::with_capacity(entries.len() * 2);
        for (i, e) in entries.iter().enumerate() {
            let r = e.get("resource").unwrap_or(&Value::Null);
            resources.push(r);
            urls.push(e.get("fullUrl").and_then(Value::as_str));
            if let Some(u) = e.get("fullUrl").and_then(Value::as_str) {
                keys.entry(u.to_owned()).or_insert(i);
            }
            if let (Some(t), Some(id)) = (
                r.get("resourceType").and_then(Value::as_str),
                r.get("id").and_then(Value::as_str),
            ) {
                keys.entry(format!("{t}/{id}")).or_insert(i);
            }
        }
        Index {
            resources,
            urls,
            keys,
        }
    }

    /// Resolves `reference` as seen from resource `from` (for `#id`).
    fn resolve(&self, from: &'a Value, reference: &str) -> Option<&'a Value> {
        if let Some(id) = reference.strip_prefix('#') {
            return from
                .get("contained")?
                .as_array()?
                .iter()
                .find(|c| c.get("id").and_then(Value::as_str) == Some(id));
        }
        let plain = reference
            .split_once("/_history/")
            .map_or(reference, |(a, _)| a);
        if let Some(&i) = self.keys.get(plain) {
            return Some(self.resources[i]);
        }
        // An absolute URL to a resource in the bundle: its last two
        // segments are `Type/id`.
        let mut parts = plain.rsplit('/');
        let (id, t) = (parts.next()?, parts.next()?);
        self.keys
            .get(&format!("{t}/{id}"))
            .map(|&i| self.resources[i])
    }

    /// Every reference held directly under `key` of `r`: an object, an
    /// array of them, or their `actor`.
    fn refs(&self, r: &'a Value, key: &str) -> Vec<&'a Value> {
        let one = |v: &'a Value| -> Option<&'a Value> {
            let s = v
                .get("reference")
                .or_else(|| v.get("actor").and_then(|a| a.get("reference")))?
                .as_str()?;
            self.resolve(r, s)
        };
        match r.get(key) {
            Some(Value::Array(a)) => a.iter().filter_map(one).collect(),
            Some(v @ Value::Object(_)) => one(v).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    fn of_type(&self, t: &'a str) -> impl Iterator<Item = &'a Value> + '_ {
        self.resources
            .iter()
            .copied()
            .filter(move |r| rtype(r) == t)
    }
}

fn rtype(r: &Value) -> &str {
    r.get("resourceType").and_then(Value::as_str).unwrap_or("")
}

/// The 10-digit medical institution code of an Organization.
fn institution(org: &Value) -> Option<String> {
    if rtype(org) != "Organization" {
        return None;
    }
    for id in org
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if id
            .get("system")
            .and_then(Value::as_str)
            .is_some_and(|s| codes::INSTITUTION.contains(&s))
            && let Some(v) = id.get("value").and_then(Value::as_str)
        {
            let v = ascii_digits(v);
            if is_digits(&v, 10) {
                return Some(v);
            }
        }
    }
    // JP Core's split form: prefecture, fee table, 7-digit number.
    // 電子処方箋 writes the parts as valueIdentifier, JP Core's own
    // examples the prefecture and fee table as valueCoding.
    let part = |url: &str| {
        let e = ext(org, url)?;
        e.get("valueIdentifier")
            .and_then(|i| i.get("value"))
            .or_else(|| e.get("valueCoding").and_then(|c| c.get("code")))
            .and_then(Value::as_str)
            .map(ascii_digits)
    };
    match (
        part(codes::ORG_PREFECTURE_EXT),
        part(codes::ORG_CATEGORY_EXT),
        part(codes::ORG_NUMBER_EXT),
    ) {
        (Some(p), Some(c), Some(n)) if is_digits(&p, 2) && is_digits(&c, 1) && is_digits(&n, 7) => {
            Some(format!("{p}{c}{n}"))
        }
        _ => None,
    }
}

/// The institution an acting resource points at: an Organization, a
/// PractitionerRole's organization, an Encounter's service provider.
fn acting_institution<'a>(idx: &Index<'a>, target: &'a Value, depth: u8) -> Option<String> {
    match rtype(target) {
        "Organization" => institution(target),
        "PractitionerRole" if depth > 0 => idx
            .refs(target, "organization")
            .into_iter()
            .find_map(|o| acting_institution(idx, o, depth - 1)),
        "Encounter" if depth > 0 => idx
            .refs(target, "serviceProvider")
            .into_iter()
            .find_map(|o| acting_institution(idx, o, depth - 1)),
        _ => None,
    }
}

/// Elements that name who acted for a resource, in order of preference.
const ACTORS: &[&str] = &[
    "performer",
    "requester",
    "recorder",
    "asserter",
    "serviceProvider",
    "author",
    "organization",
    "encounter",
    "context",
];

/// The bundle's context: the document's Composition, its patients.
struct Ctx<'a> {
    idx: Index<'a>,
    composition: Option<&'a Value>,
    patients: Vec<&'a Value>,
    /// Distinct institution codes of the bundle's Organizations.
    orgs: Vec<String>,
    /// Patients by (identifier system, value), for logical references.
    by_identifier: HashMap<(&'a str, &'a str), &'a Value>,
    /// The bundle's Coverages by the address of the Patient they cover
    /// (0: no beneficiary), found once: a lookup per entry would make a
    /// bundle of many patients quadratic.
    coverages: HashMap<usize, Vec<&'a Value>>,
    bundle_key: String,
}

impl<'a> Ctx<'a> {
    fn patient(&self, r: &'a Value) -> Result<&'a Value, (&'static str, &'static str)> {
        for key in ["subject", "patient", "beneficiary"] {
            // A logical reference (JP-CLINS: the insurance member id).
            if let Some(id) = r.get(key).and_then(|v| v.get("identifier"))
                && r.get(key).and_then(|v| v.get("reference")).is_none()
            {
                let key = (
                    id.get("system").and_then(Value::as_str).unwrap_or(""),
                    id.get("value").and_then(Value::as_str).unwrap_or(""),
                );
                return self.by_identifier.get(&key).copied().ok_or((
                    "a subject that is a Patient in the bundle",
                    "an identifier matching none of its Patients",
                ));
            }
            if let Some(s) = r
                .get(key)
                .and_then(|v| v.get("reference"))
                .and_then(Value::as_str)
            {
                return match self.idx.resolve(r, s) {
                    Some(p) if rtype(p) == "Patient" => Ok(p),
                    Some(_) => Err((
                        "a subject that is a Patient",
                        "a reference to another resource type",
                    )),
                    None => Err((
                        "a subject that is a Patient in the bundle",
                        "a reference to a resource not in the bundle",
                    )),
                };
            }
        }
        if let Some(p) = self
            .composition
            .and_then(|c| self.idx.refs(c, "subject").into_iter().next())
            .filter(|p| rtype(p) == "Patient")
        {
            return Ok(p);
        }
        match self.patients.as_slice() {
            [only] => Ok(only),
            [] => Err(("a Patient in the bundle", "none")),
            _ => Err((
                "a subject naming one of the bundle's Patients",
                "no subject, and several Patients",
            )),
        }
    }

    fn facility(
        &self,
        r: &'a Value,
        patient: &'a Value,
    ) -> Result<String, (&'static str, &'static str)> {
        for key in ACTORS {
            for t in self.idx.refs(r, key) {
                if let Some(code) = acting_institution(&self.idx, t, 2) {
                    return Ok(code);
                }
            }
        }
        if let Some(c) = self.composition {
            for key in ["custodian", "author", "encounter"] {
                for t in self.idx.refs(c, key) {
                    if let Some(code) = acting_institution(&self.idx, t, 2) {
                        return Ok(code);
                    }
                }
            }
        }
        // A patient id's namespace names the institution that issued it:
        // urn:oid:1.2.392.100495.20.3.51.1 + the 10-digit code.
        for id in patient
            .get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(code) = id
                .get("system")
                .and_then(Value::as_str)
                .and_then(|s| s.strip_prefix(codes::PATIENT_ID_OID))
                .filter(|c| is_digits(c, 10))
            {
                return Ok(code.to_owned());
            }
        }
        match self.orgs.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err((
                "an Organization with a medical institution number",
                "none in the bundle",
            )),
            _ => Err((
                "a reference to the Organization that acted",
                "none, and several Organizations with institution numbers",
            )),
        }
    }

    /// The patient's own insurance tuple.
    fn insurance(&self, patient: &'a Value) -> Option<Value> {
        let single = self.patients.len() == 1;
        let own = self.coverages.get(&(std::ptr::from_ref(patient) as usize));
        // A Coverage without beneficiary counts only in a one-patient bundle.
        let unnamed = self.coverages.get(&0).filter(|_| single);
        for &c in own.into_iter().chain(unnamed).flatten() {
            if let Some(t) = self.coverage_tuple(c) {
                return Some(t);
            }
        }
        // JP-CLINS: insurer:symbol:number:branch on the Patient.
        let member = patient
            .get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|i| i.get("system").and_then(Value::as_str) == Some(codes::CLINS_MEMBER_ID))?
            .get("value")?
            .as_str()?;
        let parts: Vec<&str> = member.split(':').collect();
        let [insurer, symbol, number, branch] = parts.as_slice() else {
            return None;
        };
        let insurer = ascii_digits(insurer);
        let mut out = json!({"insurer_number": insurer, "insured_number": number.trim()});
        if !symbol.trim().is_empty() {
            out["insured_symbol"] = symbol.trim().into();
        }
        let branch = ascii_digits(branch);
        if !branch.is_empty() {
            out["insured_branch"] = branch.into();
        }
        Some(out)
    }

    fn coverage_tuple(&self, c: &'a Value) -> Option<Value> {
        let number = ext_str(c, &format!("{}InsuredPersonNumber", codes::COVERAGE_EXT))?;
        let insurer = c
            .get("payor")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|p| {
                if let Some(v) = p
                    .get("identifier")
                    .and_then(|i| i.get("value"))
                    .and_then(Value::as_str)
                {
                    return Some(v.to_owned());
                }
                let org = self.idx.resolve(c, p.get("reference")?.as_str()?)?;
                org.get("identifier")?
                    .as_array()?
                    .iter()
                    .find(|i| {
                        i.get("system")
                            .and_then(Value::as_str)
                            .is_some_and(|s| codes::INSURER.contains(&s))
                    })?
                    .get("value")?
                    .as_str()
                    .map(str::to_owned)
            })?;
        let mut out =
            json!({"insurer_number": ascii_digits(&insurer), "insured_number": number.trim()});
        if let Some(s) = ext_str(c, &format!("{}InsuredPersonSymbol", codes::COVERAGE_EXT)) {
            out["insured_symbol"] = s.trim().into();
        }
        if let Some(s) = ext_str(c, &format!("{}InsuredPersonSubNumber", codes::COVERAGE_EXT))
            .or_else(|| c.get("dependent").and_then(Value::as_str))
        {
            out["insured_branch"] = ascii_digits(s).into();
        }
        Some(out)
    }

    /// A date for an entry without its own: its Encounter's start, the
    /// document's Encounter's start, the document's date.
    fn fallback_date(&self, r: &'a Value) -> Option<&'a str> {
        let start = |e: &'a Value| str_at(e, &["period", "start"]).filter(|d| full_date(d));
        self.idx
            .refs(r, "encounter")
            .into_iter()
            .find_map(start)
            .or_else(|| {
                let c = self.composition?;
                self.idx
                    .refs(c, "encounter")
                    .into_iter()
                    .find_map(start)
                    .or_else(|| {
                        c.get("date")
                            .and_then(Value::as_str)
                            .filter(|d| full_date(d))
                    })
            })
    }
}

/// The `YYYY-MM-DD` a FHIR date or dateTime starts with, if it has a day
/// (`2022-05` and `2018` do not). Checked byte by byte: slicing text a hub
/// sent at a fixed offset could cut a multibyte character.
fn day_of(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let ok = b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit);
    ok.then(|| &s[..10])
}

fn full_date(s: &str) -> bool {
    day_of(s).is_some()
}

fn first_date<'a>(r: &'a Value, keys: &[&[&str]]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| str_at(r, k).filter(|d| full_date(d)))
}

/// The identity block of a Patient.
fn patient_identity(p: &Value) -> Result<Value, (&'static str, &'static str)> {
    let ids: Vec<&Value> = p
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    // The institution's patient id, not an insurance member id.
    let local = ids
        .iter()
        .find(|i| {
            i.get("system")
                .and_then(Value::as_str)
                .is_some_and(|s| s.starts_with(codes::PATIENT_ID_OID))
        })
        .or_else(|| {
            ids.iter()
                .find(|i| i.get("system").and_then(Value::as_str) != Some(codes::CLINS_MEMBER_ID))
        })
        .and_then(|id| id.get("value"))
        .and_then(Value::as_str)
        .ok_or(("an identifier (the hub-local patient id)", "none"))?;
    let birth = p
        .get("birthDate")
        .and_then(Value::as_str)
        .ok_or(("a birthDate", "none"))?;
    let mut out = Map::new();
    out.insert("local_patient_id".into(), local.into());
    out.insert("birth_date".into(), birth.into());
    let sex = match p.get("gender").and_then(Value::as_str) {
        Some("male") => "male",
        Some("female") => "female",
        _ => "unknown",
    };
    out.insert("sex".into(), sex.into());
    for n in p
        .get("name")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let rep = ext(
            n,
            "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation",
        )
        .and_then(|x| x.get("valueCode"))
        .and_then(Value::as_str);
        let text = n
            .get("text")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                let family = n.get("family").and_then(Value::as_str)?;
                let given: Vec<&str> = n
                    .get("given")?
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                Some(format!("{family}\u{3000}{}", given.join(" ")))
            });
        match (rep, text) {
            (Some("IDE"), Some(t)) => {
                out.insert("name_kanji".into(), t.into());
            }
            (Some("SYL"), Some(t)) => {
                out.insert("name_kana".into(), t.into());
            }
            _ => {}
        }
    }
    if let Some(a) = p
        .get("address")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        if let Some(pc) = a.get("postalCode").and_then(Value::as_str) {
            out.insert("postal_code".into(), ascii_digits(pc).into());
        }
        let line = a
            .get("line")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .or_else(|| a.get("text").and_then(Value::as_str).map(str::to_owned));
        if let Some(l) = line {
            out.insert("address_line".into(), l.into());
        }
    }
    for t in p
        .get("telecom")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match (
            t.get("system").and_then(Value::as_str),
            t.get("value").and_then(Value::as_str),
        ) {
            (Some("phone"), Some(v)) if !out.contains_key("phone") => {
                out.insert("phone".into(), v.into());
            }
            (Some("email"), Some(v)) if !out.contains_key("email") => {
                out.insert("email".into(), v.into());
            }
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

/// Parses a Bundle, refusing duplicated keys (serde_json would keep the
/// last value silently).
fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    chitose_schemas::json::parse_strict(bytes).map_err(|mut e| {
        e.expected = "a FHIR Bundle (JSON)".into();
        e
    })
}

/// Maps a Bundle. An unreadable bundle is one error; otherwise one outcome
/// per entry, in order.
pub fn map_bundle(bytes: &[u8], hub_prefecture: &str) -> Result<Vec<(usize, Entry)>, JsonError> {
    let b = parse(bytes)?;
    if b.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(JsonError {
            path: "$".into(),
            expected: "a FHIR Bundle".into(),
            found: "another resource".into(),
            reason: RejectReason::Malformed,
        });
    }
    let empty = Vec::new();
    let entries = b.get("entry").and_then(Value::as_array).unwrap_or(&empty);
    let idx = Index::new(entries);
    let composition = idx.of_type("Composition").next();
    let patients: Vec<&Value> = idx.of_type("Patient").collect();
    let mut orgs: Vec<String> = idx
        .of_type("Organization")
        .filter_map(institution)
        .collect();
    orgs.sort();
    orgs.dedup();
    let bundle_key = match (
        str_at(&b, &["identifier", "system"]),
        str_at(&b, &["identifier", "value"]),
    ) {
        (s, Some(v)) => format!("{}|{v}", s.unwrap_or("")),
        _ => b.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
    };
    let mut by_identifier = HashMap::new();
    for &p in &patients {
        for i in p
            .get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = (
                i.get("system").and_then(Value::as_str).unwrap_or(""),
                i.get("value").and_then(Value::as_str).unwrap_or(""),
            );
            by_identifier.entry(key).or_insert(p);
        }
    }
    let mut coverages: HashMap<usize, Vec<&Value>> = HashMap::new();
    for c in idx.of_type("Coverage") {
        let to = match c
            .get("beneficiary")
            .and_then(|b| b.get("reference"))
            .and_then(Value::as_str)
        {
            // A beneficiary outside the bundle covers nobody here.
            Some(b) => match idx.resolve(c, b) {
                Some(p) => std::ptr::from_ref(p) as usize,
                None => continue,
            },
            None => 0,
        };
        coverages.entry(to).or_default().push(c);
    }
    let ctx = Ctx {
        idx,
        composition,
        patients,
        orgs,
        by_identifier,
        coverages,
        bundle_key,
    };

    // 特定健診 items: one checkup event per patient and day, at the
    // position of the first item. One pass, a map from (patient, day).
    let mut group_of: HashMap<usize, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_key: HashMap<(usize, String), usize> = HashMap::new();
    for (i, r) in ctx.idx.resources.iter().enumerate() {
        // A 特定健診 item code from the checkup report's own code system,
        // or under category exam; the same code from a hospital's
        // laboratory (an HbA1c) is a lab result.
        if rtype(r) != "Observation"
            || coding(r.get("code"), codes::JLAC10)
                .and_then(codes::checkup_field)
                .is_none()
            || !(has_category(r, "exam")
                || coding(r.get("code"), &[codes::ECHECKUP_JLAC10]).is_some())
        {
            continue;
        }
        let Ok(p) = ctx.patient(r) else { continue };
        let day = first_date(r, &[&["effectiveDateTime"], &["effectivePeriod", "start"]])
            .or_else(|| ctx.fallback_date(r))
            .and_then(day_of)
            .map(str::to_owned)
            .unwrap_or_default();
        // The patient by address: a position lookup would make this pass
        // quadratic again in bundles of many patients.
        let pi = std::ptr::from_ref(p) as usize;
        let g = *by_key.entry((pi, day)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
        group_of.insert(i, g);
    }

    let mut out: Vec<(usize, Entry)> = Vec::with_capacity(entries.len());
    let mut group_result: HashMap<usize, Result<(), JsonError>> = HashMap::new();
    for (i, r) in ctx.idx.resources.iter().enumerate() {
        let rt = rtype(r);
        let entry = if let Some(&g) = group_of.get(&i) {
            if groups[g][0] == i {
                let res = checkup(&ctx, i, r, &groups[g], hub_prefecture);
                group_result.insert(g, res.as_ref().map(|_| ()).map_err(Clone::clone));
                match res {
                    Ok(v) => Entry::Event(v),
                    Err(e) => Entry::Rejected(e),
                }
            } else {
                // Each item of a refused group gets the group's reason.
                match &group_result[&g] {
                    Ok(()) => Entry::Skipped(Skip::CheckupItem),
                    Err(e) => Entry::Rejected(e.clone()),
                }
            }
        } else if CONTEXT.contains(&rt) {
            Entry::Skipped(Skip::Context)
        } else {
            match map_one(&ctx, i, rt, r, hub_prefecture) {
                Ok(Some(v)) => Entry::Event(v),
                Ok(None) => Entry::Skipped(if rt == "Observation" {
                    Skip::ObservationGroup
                } else if rt == "Encounter" {
                    Skip::Context
                } else {
                    Skip::NotAnEvent
                }),
                Err(e) => Entry::Rejected(e),
            }
        };
        out.push((i, entry));
    }
    Ok(out)
}

fn checkup(
    ctx: &Ctx<'_>,
    i: usize,
    r: &Value,
    items: &[usize],
    hub: &str,
) -> Result<Value, JsonError> {
    let mut payload = Map::new();
    for &j in items {
        let o = ctx.idx.resources[j];
        let field = coding(o.get("code"), codes::JLAC10)
            .and_then(codes::checkup_field)
            .expect("grouped by field");
        if let Some(v) = o.get("valueQuantity").and_then(|q| q.get("value")) {
            payload.insert(field.into(), v.clone());
        }
    }
    let occurred = first_date(r, &[&["effectiveDateTime"], &["effectivePeriod", "start"]])
        .or_else(|| ctx.fallback_date(r));
    finish(
        ctx,
        i,
        "Observation",
        r,
        "checkup",
        occurred,
        Value::Object(payload),
        hub,
    )
}

/// Maps one clinical entry. `Ok(None)`: no event stands for it (an
/// observation group, a checkup visit, a resource type without a table).
fn map_one(
    ctx: &Ctx<'_>,
    i: usize,
    rt: &str,
    r: &Value,
    hub: &str,
) -> Result<Option<Value>, JsonError> {
    let unmappable = |expected: &str, found: &str| Err(reject(i, rt, expected, found));
    let own_id = r.get("id").and_then(Value::as_str).unwrap_or_default();
    let (event_type, occurred, payload) = match rt {
        "Encounter" => {
            let class = r.get("class");
            let class_code = str_at(r, &["class", "code"]);
            let system = str_at(r, &["class", "system"]);
            if system == Some("http://jpfhir.jp/fhir/eCheckup/CodeSystem/encounter-category") {
                // A checkup visit: its date and provider are read by the
                // checkup's observations; the visit itself is no encounter
                // row.
                return Ok(None);
            }
            let class = match class_code {
                Some("AMB") => "outpatient",
                Some("IMP" | "ACUTE" | "NONAC") => "inpatient",
                Some("EMER") => "emergency",
                Some("HH") => "home_visit",
                _ if class.is_none() => {
                    return unmappable("a class (AMB, IMP, EMER or HH)", "none");
                }
                _ => return unmappable("class AMB, IMP, EMER or HH", "another code"),
            };
            let mut p = json!({
                "encounter_id": short_id(own_id),
                "encounter_class": class,
            });
            put(
                &mut p,
                "ended_at",
                str_at(r, &["period", "end"]).filter(|d| full_date(d)),
            );
            let occurred = first_date(r, &[&["period", "start"]]).or_else(|| ctx.fallback_date(r));
            ("encounter", occurred, p)
        }
        "Condition" => {
            let code = r.get("code");
            let icd = coding(code, codes::ICD10);
            let exchange = coding(code, codes::MEDIS_EXCHANGE);
            let number = coding(code, codes::MEDIS_NUMBER);
            if icd.is_none() && exchange.is_none() && number.is_none() {
                return unmappable(
                    "a code in ICD-10, a MEDIS exchange code or a MEDIS management number",
                    "none of them",
                );
            }
            let mut p = json!({
                "is_suspected": coding(r.get("verificationStatus"), &["http://terminology.hl7.org/CodeSystem/condition-ver-status"])
                    .is_some_and(|s| matches!(s, "provisional" | "differential")),
                "outcome": match coding(r.get("clinicalStatus"), &["http://terminology.hl7.org/CodeSystem/condition-clinical"]) {
                    Some("resolved" | "remission") => "cured",
                    _ => "continuing",
                },
            });
            put(&mut p, "icd10_code", icd);
            put(&mut p, "medis_disease_code", exchange);
            put(&mut p, "medis_disease_number", number);
            put(&mut p, "disease_name", display(code, codes::MEDIS_NUMBER));
            if let Some(o) = r
                .get("onsetDateTime")
                .and_then(Value::as_str)
                .filter(|d| full_date(d))
            {
                p["onset_date"] = day_of(o).unwrap_or_default().into();
            }
            let occurred = first_date(
                r,
                &[
                    &["recordedDate"],
                    &["onsetDateTime"],
                    &["onsetPeriod", "start"],
                ],
            )
            .or_else(|| ctx.fallback_date(r));
            ("diagnosis", occurred, p)
        }
        "Observation" => {
            if r.get("hasMember").is_some()
                || coding(r.get("code"), codes::OBSERVATION_GROUP).is_some()
            {
                return Ok(None);
            }
            let Some(code) = coding(r.get("code"), codes::JLAC10) else {
                return unmappable(
                    "a code in JLAC10 (laboratory and checkup results)",
                    if has_category(r, "laboratory") {
                        "only local codes"
                    } else {
                        "none"
                    },
                );
            };
            let name = display(r.get("code"), codes::JLAC10).unwrap_or_else(|| code.to_owned());
            let mut p = json!({"jlac10_code": code, "test_name": name});
            if let Some(q) = r.get("valueQuantity") {
                if let Some(v) = q.get("value") {
                    p["value_numeric"] = v.clone();
                }
                if let Some(u) = q
                    .get("unit")
                    .or_else(|| q.get("code"))
                    .and_then(Value::as_str)
                {
                    p["unit"] = u.into();
                }
            } else if let Some(v) = r.get("valueInteger") {
                p["value_numeric"] = v.clone();
            } else if let Some(s) = r.get("valueString").and_then(Value::as_str) {
                p["value_text"] = s.into();
            } else if let Some(c) = r.get("valueCodeableConcept") {
                // A coded result: its display when short, else its code.
                let d = display(Some(c), &[]).filter(|d| d.chars().count() <= 32);
                let code = codings(Some(c)).find_map(|x| x.get("code").and_then(Value::as_str));
                put(&mut p, "value_text", d.as_deref().or(code));
            } else if let Some(b) = r.get("valueBoolean").and_then(Value::as_bool) {
                p["value_text"] = if b { "(+)" } else { "(-)" }.into();
            }
            if p.get("value_numeric").is_none() && p.get("value_text").is_none() {
                return unmappable(
                    "a result (valueQuantity, valueString, valueCodeableConcept, valueInteger or valueBoolean)",
                    if r.get("valueDateTime").is_some() {
                        "a date (valueDateTime), which is no result"
                    } else {
                        "none"
                    },
                );
            }
            if let Some(rr) = r
                .get("referenceRange")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
            {
                if let Some(v) = rr.get("low").and_then(|l| l.get("value")) {
                    p["reference_low"] = v.clone();
                }
                if let Some(v) = rr.get("high").and_then(|l| l.get("value")) {
                    p["reference_high"] = v.clone();
                }
            }
            // JP Core writes the flag as a v3 ObservationInterpretation.
            let flag = r
                .get("interpretation")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|c| {
                    coding(
                        Some(c),
                        &["http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"],
                    )
                });
            put(&mut p, "abnormal_flag", flag.and_then(codes::abnormal_flag));
            let occurred = first_date(
                r,
                &[
                    &["effectiveDateTime"],
                    &["effectivePeriod", "start"],
                    &["issued"],
                ],
            )
            .or_else(|| ctx.fallback_date(r));
            ("lab_result", occurred, p)
        }
        "MedicationRequest" => {
            let med = r.get("medicationCodeableConcept").or_else(|| {
                let m = ctx
                    .idx
                    .resolve(r, str_at(r, &["medicationReference", "reference"])?)?;
                m.get("code")
            });
            let yj = coding(med, codes::YJ);
            let hot = coding(med, codes::HOT);
            let generic = coding(med, codes::GENERIC_NAME);
            if yj.is_none() && hot.is_none() && generic.is_none() {
                return unmappable(
                    "a medication coded in YJ, HOT or the generic-name master",
                    "only other codes",
                );
            }
            let route = dosage_route(r);
            let mut p = json!({"route": route});
            put(&mut p, "yj_code", yj);
            put(&mut p, "hot_code", hot);
            put(&mut p, "generic_name_code", generic);
            put(&mut p, "drug_name", display(med, codes::YJ));
            if let Some(days) = r
                .get("dispenseRequest")
                .and_then(|d| d.get("expectedSupplyDuration"))
                .and_then(|d| d.get("value"))
                .and_then(Value::as_f64)
                .filter(|d| d.fract() == 0.0)
            {
                p["days_supply"] = (days as i64).into();
            }
            let occurred = first_date(r, &[&["authoredOn"]]).or_else(|| ctx.fallback_date(r));
            ("prescription", occurred, p)
        }
        "Immunization" => {
            let Some(code) = coding(r.get("vaccineCode"), codes::YJ) else {
                return unmappable("a vaccineCode in YJ", "none");
            };
            let mut p = json!({"vaccine_code": code});
            put(
                &mut p,
                "vaccine_name",
                display(r.get("vaccineCode"), codes::YJ),
            );
            put(
                &mut p,
                "lot_number",
                r.get("lotNumber").and_then(Value::as_str),
            );
            if let Some(site) = coding(
                r.get("site"),
                &["http://terminology.hl7.org/CodeSystem/v3-ActSite"],
            ) {
                p["site"] = match site {
                    "LA" | "LD" => "left_arm",
                    "RA" | "RD" => "right_arm",
                    "LT" => "left_thigh",
                    "RT" => "right_thigh",
                    _ => "other",
                }
                .into();
            }
            if let Some(n) = r
                .get("protocolApplied")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|a| a.get("doseNumberPositiveInt"))
            {
                p["dose_number"] = n.clone();
            }
            let occurred = first_date(r, &[&["occurrenceDateTime"], &["recorded"]])
                .or_else(|| ctx.fallback_date(r));
            ("vaccination", occurred, p)
        }
        "AllergyIntolerance" => {
            let code = r.get("code");
            let known = codings(code).find_map(|c| {
                let s = c.get("system")?.as_str()?;
                let sym = codes::ALLERGEN.iter().find(|(u, _)| *u == s)?.1;
                Some((sym, c.get("code")?.as_str()?))
            });
            let name = display(code, &[]);
            if known.is_none() && name.is_none() {
                return unmappable("an allergen code or text", "none");
            }
            let mut p = json!({
                "substance_system": known.map_or("other", |k| k.0),
                "clinical_status": match coding(r.get("clinicalStatus"), &["http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"]) {
                    Some("inactive") => "inactive",
                    Some("resolved") => "resolved",
                    _ => "active",
                },
                "is_confirmed": coding(r.get("verificationStatus"), &["http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"]) == Some("confirmed"),
            });
            if let Some((_, c)) = known {
                p["substance_code"] = c.into();
            }
            put(&mut p, "substance_name", name);
            if let Some(c) = r
                .get("category")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .filter(|c| matches!(*c, "food" | "medication" | "environment" | "biologic"))
            {
                p["category"] = c.into();
            }
            if let Some(c) = r.get("criticality").and_then(Value::as_str) {
                p["criticality"] = match c {
                    "low" => "low",
                    "high" => "high",
                    _ => "unable_to_assess",
                }
                .into();
            }
            if let Some(o) = r
                .get("onsetDateTime")
                .and_then(Value::as_str)
                .filter(|d| full_date(d))
            {
                p["onset_date"] = day_of(o).unwrap_or_default().into();
            }
            let reactions = r.get("reaction").and_then(Value::as_array);
            let worst = reactions
                .into_iter()
                .flatten()
                .filter_map(|x| x.get("severity").and_then(Value::as_str))
                .max_by_key(|s| match *s {
                    "severe" => 3,
                    "moderate" => 2,
                    _ => 1,
                });
            put(
                &mut p,
                "reaction_severity",
                worst.filter(|s| matches!(*s, "mild" | "moderate" | "severe")),
            );
            if let Some(m) = reactions
                .and_then(|a| a.first())
                .and_then(|x| x.get("manifestation"))
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|m| display(Some(m), &[]))
            {
                p["reaction"] = m.into();
            }
            let occurred = first_date(
                r,
                &[&["recordedDate"], &["onsetDateTime"], &["lastOccurrence"]],
            )
            .or_else(|| ctx.fallback_date(r));
            ("allergy", occurred, p)
        }
        _ => return Ok(None),
    };
    finish(ctx, i, rt, r, event_type, occurred, payload, hub).map(Some)
}

/// HL7 table 0162 routes (JP Core dosage) → the contract's.
fn dosage_route(r: &Value) -> &'static str {
    let code = r
        .get("dosageInstruction")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|d| d.get("route"))
        .and_then(|c| codings(Some(c)).find_map(|x| x.get("code").and_then(Value::as_str)));
    match code {
        Some("PO" | "SL" | "BUC") => "oral",
        Some("TP" | "OP" | "NS" | "OT" | "TD" | "EYE") => "topical",
        Some("IV" | "IM" | "SC" | "ID" | "IA" | "IVP" | "IVPB") => "injection",
        Some("IH" | "NB" | "RESP") => "inhalation",
        _ => "other",
    }
}

/// An id the contract can hold (≤ 64 characters): as sent when short,
/// else its hash. Dropped by every policy either way.
fn short_id(id: &str) -> String {
    if !id.is_empty() && id.len() <= 64 {
        id.to_owned()
    } else {
        letters(&Sha256::digest(id.as_bytes())[..16])
    }
}

/// Sets `key` of an event's payload when the source had it.
pub(crate) fn put<V: Into<Value>>(p: &mut Value, key: &str, v: Option<V>) {
    if let Some(v) = v {
        p[key] = v.into();
    }
}

/// Bytes as letters a–p, two per byte. Event ids made from hashes carry no
/// digits: in hex, a run of 12 digits with a valid check digit turns up
/// about once in a few thousand ids, and the edge rightly refuses it as a
/// My Number.
pub fn letters(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(char::from(b'a' + (x >> 4)));
        s.push(char::from(b'a' + (x & 15)));
    }
    s
}

/// Assembles an event around a payload: identity, insurance and facility
/// of *this* entry's patient and actor, times, a stable event id.
#[allow(clippy::too_many_arguments)]
fn finish(
    ctx: &Ctx<'_>,
    i: usize,
    rt: &str,
    r: &Value,
    event_type: &str,
    occurred: Option<&str>,
    payload: Value,
    hub: &str,
) -> Result<Value, JsonError> {
    let Some(occurred) = occurred else {
        return Err(reject(
            i,
            rt,
            "the resource's date and time (or its Encounter's, or the document's)",
            "none with a day",
        ));
    };
    // A date without a time (FHIR allows it) is taken as midnight JST.
    let occurred = if occurred.len() == 10 {
        format!("{occurred}T00:00:00+09:00")
    } else {
        occurred.to_owned()
    };
    let patient = ctx.patient(r).map_err(|(e, f)| reject(i, rt, e, f))?;
    let mut identity = patient_identity(patient).map_err(|(e, f)| reject(i, "Patient", e, f))?;
    if let Some(c) = ctx.insurance(patient) {
        identity["insurance"] = c;
    }
    let facility = ctx
        .facility(r, patient)
        .map_err(|(e, f)| reject(i, rt, e, f))?;
    // Stable across resends of the same bundle, distinct across bundles
    // made from one template (fullUrls like urn:uuid:e1 repeat there): the
    // bundle's identity, the entry's fullUrl and Type/id, its patient's id;
    // never the resource id in clear.
    let mut h = Sha256::new();
    for part in [
        "chitose-fhir-event-v1",
        &ctx.bundle_key,
        ctx.idx.urls[i].unwrap_or(""),
        rt,
        r.get("id").and_then(Value::as_str).unwrap_or(""),
        identity["local_patient_id"].as_str().unwrap_or(""),
        event_type,
    ] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    if ctx.idx.urls[i].is_none() && r.get("id").is_none() {
        h.update(format!("#{i}").as_bytes());
    }
    Ok(json!({
        "event_id": format!("fhir-{}", letters(&h.finalize()[..20])),
        "event_type": event_type,
        "hub_prefecture": hub,
        "facility_code": facility,
        "occurred_at": occurred,
        "recorded_at": occurred,
        "source_format": "fhir",
        "patient": identity,
        "payload": payload,
    }))
}
