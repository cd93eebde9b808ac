//! De-identification policies: one TOML file per profile.
//!
//! A policy names every leaf field of the raw schema and says what happens
//! to it (an [`Op`]). Loading checks the file against the raw schema (no
//! field forgotten, none invented) and the operations against the field
//! types; [`crate::plan`] then checks what the operations produce against
//! the pseudonymized table schemas. Every error names the file and line.

use crate::fields::{Kind, Leaf};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// The profiles shipped with chitose: (name, file text).
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "pseudonymized",
        include_str!("../policies/pseudonymized.toml"),
    ),
    (
        "pseudonymized-shifted",
        include_str!("../policies/pseudonymized-shifted.toml"),
    ),
];

/// A policy that does not load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A problem at a line of the file.
    #[error("{file}:{line}: {message}")]
    At {
        /// File name or profile.
        file: String,
        /// 1-based line.
        line: usize,
        /// Expected vs found.
        message: String,
    },
    /// A problem of the file as a whole.
    #[error("{file}: {message}")]
    File {
        /// File name or profile.
        file: String,
        /// Expected vs found.
        message: String,
    },
}

/// How far a date is truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trunc {
    /// Kept to the day (an Avro date).
    Day,
    /// `YYYY-MM`.
    Month,
    /// `YYYY`.
    Year,
}

/// Finest ICD-10 level the output keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IcdLevel {
    /// The full code (E11.9).
    Code,
    /// 3-character category (E11).
    Category,
    /// Block (E10-E14).
    Block,
    /// Chapter (IV).
    Chapter,
}

/// Finest geography of residence the output keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoLevel {
    /// JIS X 0402 municipality.
    Municipality,
    /// Prefecture only.
    Prefecture,
}

/// What happens to one field.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Copied as it is (codes, enums, numbers; free text is refused).
    Keep,
    /// Free text copied as it is: an explicit, reviewed risk.
    KeepFreeText,
    /// Free text kept only when it is a value of a reference vocabulary
    /// (written in the list's spelling), else null.
    Vocabulary {
        /// Name of the list in `vocabularies.csv`.
        list: String,
    },
    /// The hub's event id as a keyed hash (HMAC under the event-id key).
    Hash,
    /// Not written.
    Drop,
    /// Free text: not written, because identifiers hide in it.
    DropFreeText,
    /// Input to the HMAC pseudonym (when its linkage basis applies); not written.
    Pseudonym,
    /// Prefecture code kept, name added.
    Prefecture,
    /// Facility code → facility prefecture and type; the code is not written.
    Facility,
    /// A date or time, shifted per patient or not, truncated per output.
    Date {
        /// Apply the per-patient shift.
        shift: bool,
        /// Output name → truncation.
        outputs: Vec<(String, Trunc)>,
    },
    /// Birth date → birth year, age at event, age band; top-coded.
    Age {
        /// Ages at or above this are written as this, band `N+`, no birth year.
        top_code: u32,
    },
    /// Postal code / municipality → residence municipality → prefecture.
    Residence {
        /// Finest level written.
        level: GeoLevel,
    },
    /// ICD-10 roll-up: code → 3 characters → block → chapter.
    Icd10 {
        /// Finest level written.
        finest: IcdLevel,
    },
    /// Numeric top and bottom coding.
    Numeric {
        /// Values below are written as this.
        bottom: Option<f64>,
        /// Values above are written as this.
        top: Option<f64>,
    },
    /// YJ code kept, therapeutic class code and name added.
    DrugClass,
    /// JLAC10 code kept, analyte (first 5 characters) added.
    Jlac10,
    /// An end time → whole days since the event.
    LengthOfStay,
}

impl Op {
    /// Short name, as written in the file.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Keep => "keep",
            Op::KeepFreeText => "keep_free_text",
            Op::Vocabulary { .. } => "vocabulary",
            Op::Hash => "hash",
            Op::Drop => "drop",
            Op::DropFreeText => "drop_free_text",
            Op::Pseudonym => "pseudonym",
            Op::Prefecture => "prefecture",
            Op::Facility => "facility",
            Op::Date { .. } => "date",
            Op::Age { .. } => "age",
            Op::Residence { .. } => "residence",
            Op::Icd10 { .. } => "icd10",
            Op::Numeric { .. } => "numeric",
            Op::DrugClass => "drug_class",
            Op::Jlac10 => "jlac10",
            Op::LengthOfStay => "length_of_stay",
        }
    }

    /// Field kinds the operation accepts.
    fn accepts(&self, kind: Kind) -> bool {
        match self {
            Op::Keep | Op::Drop | Op::Pseudonym => true,
            Op::DropFreeText
            | Op::KeepFreeText
            | Op::Vocabulary { .. }
            | Op::Hash
            | Op::Prefecture
            | Op::Facility
            | Op::Residence { .. }
            | Op::Icd10 { .. }
            | Op::DrugClass
            | Op::Jlac10 => kind == Kind::Str,
            Op::Date { .. } => matches!(kind, Kind::Date | Kind::TsMillis),
            Op::Age { .. } => kind == Kind::Date,
            Op::Numeric { .. } => matches!(kind, Kind::Double | Kind::Int),
            Op::LengthOfStay => kind == Kind::TsMillis,
        }
    }
}

const OP_NAMES: &str = "keep, keep_free_text, vocabulary, hash, drop, drop_free_text, pseudonym, prefecture, facility, date, age, \
                        residence, icd10, numeric, drug_class, jlac10, length_of_stay";

/// Linkage bases, most specific first (DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// Normalized insurance tuple.
    Insurance,
    /// Normalized kana name + birth date + sex.
    KanaBirthSex,
    /// Facility code + hub-local id.
    HubLocal,
}

impl Basis {
    /// Name in files and in `linkage_basis`.
    pub fn name(self) -> &'static str {
        match self {
            Basis::Insurance => "insurance",
            Basis::KanaBirthSex => "kana_birth_sex",
            Basis::HubLocal => "hub_local",
        }
    }

    /// Raw fields (section, name) the basis reads.
    pub fn inputs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Basis::Insurance => &[
                ("patient", "insurance.insurer_number"),
                ("patient", "insurance.insured_symbol"),
                ("patient", "insurance.insured_number"),
                ("patient", "insurance.insured_branch"),
            ],
            Basis::KanaBirthSex => &[
                ("patient", "name_kana"),
                ("patient", "birth_date"),
                ("patient", "sex"),
            ],
            Basis::HubLocal => &[
                ("envelope", "facility_code"),
                ("patient", "local_patient_id"),
            ],
        }
    }
}

/// One field's rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Section and name.
    pub section: String,
    /// Field name in the section.
    pub field: String,
    /// What happens.
    pub op: Op,
    /// Line in the file.
    pub line: usize,
}

/// A loaded, checked policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Profile name, stamped into every record.
    pub profile: String,
    /// Version, stamped into every record.
    pub version: String,
    /// What the profile is for.
    pub description: String,
    /// Linkage bases, first applicable wins.
    pub linkage: Vec<Basis>,
    /// Date shift range R: offsets in [−R, R] days; 0 = no shift.
    pub max_shift_days: u32,
    /// One rule per raw leaf, in schema order.
    pub rules: Vec<Rule>,
    /// The columns the transform adds, each kept or dropped: (column, kept).
    pub added: Vec<(String, bool)>,
    /// File name or profile, for later error messages.
    pub source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    profile: String,
    version: String,
    description: String,
    pseudonym: PseudonymForm,
    date_shift: DateShiftForm,
    added: BTreeMap<Spanned<String>, Spanned<String>>,
    envelope: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    patient: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    encounter: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    diagnosis: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    lab_result: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    prescription: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    checkup: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    vaccination: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    /// Added in contract v3; a policy written before it is told which
    /// allergy fields it leaves uncovered rather than that the table is
    /// unknown.
    #[serde(default)]
    allergy: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    /// Added in contract v3, like allergy.
    #[serde(default)]
    correction: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PseudonymForm {
    linkage: Spanned<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DateShiftForm {
    max_days: Spanned<u32>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Policy {
    /// A shipped profile by name, or a file by path.
    pub fn load(name_or_path: &str, raw: &[Leaf]) -> Result<Policy, PolicyError> {
        if let Some((_, text)) = SHIPPED.iter().find(|(n, _)| *n == name_or_path) {
            return Policy::parse(name_or_path, text, raw);
        }
        let text = std::fs::read_to_string(name_or_path).map_err(|e| PolicyError::File {
            file: name_or_path.to_owned(),
            message: format!(
                "expected a policy file or one of the shipped profiles ({}), found {e}",
                SHIPPED
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        Policy::parse(name_or_path, &text, raw)
    }

    /// Parses and checks a policy text against the raw schema's leaves.
    pub fn parse(file: &str, text: &str, raw: &[Leaf]) -> Result<Policy, PolicyError> {
        let at = |offset: usize, message: String| PolicyError::At {
            file: file.to_owned(),
            line: line_of(text, offset),
            message,
        };
        let form: FileForm = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => at(span.start, e.message().to_owned()),
            None => PolicyError::File {
                file: file.to_owned(),
                message: e.message().to_owned(),
            },
        })?;
        let mut linkage = Vec::new();
        for name in form.pseudonym.linkage.get_ref() {
            let b = match name.as_str() {
                "insurance" => Basis::Insurance,
                "kana_birth_sex" => Basis::KanaBirthSex,
                "hub_local" => Basis::HubLocal,
                other => {
                    return Err(at(
                        form.pseudonym.linkage.span().start,
                        format!(
                            "pseudonym.linkage: expected insurance, kana_birth_sex or hub_local, found {other:?}"
                        ),
                    ));
                }
            };
            if linkage.contains(&b) {
                return Err(at(
                    form.pseudonym.linkage.span().start,
                    format!("pseudonym.linkage: {name} is listed twice"),
                ));
            }
            linkage.push(b);
        }
        if linkage.last() != Some(&Basis::HubLocal) {
            // Every event has a facility and a local id; without this last
            // resort some events would have no pseudonym at all.
            return Err(at(
                form.pseudonym.linkage.span().start,
                "pseudonym.linkage: expected hub_local as the last basis (every event has one)"
                    .into(),
            ));
        }
        if form.version.trim().is_empty() || form.profile.trim().is_empty() {
            return Err(PolicyError::File {
                file: file.to_owned(),
                message: "expected a non-empty profile and version".into(),
            });
        }
        let sections = [
            ("envelope", &form.envelope),
            ("patient", &form.patient),
            ("encounter", &form.encounter),
            ("diagnosis", &form.diagnosis),
            ("lab_result", &form.lab_result),
            ("prescription", &form.prescription),
            ("checkup", &form.checkup),
            ("vaccination", &form.vaccination),
            ("allergy", &form.allergy),
            ("correction", &form.correction),
        ];
        // Unknown fields first: a typo is likelier than a forgotten field.
        for (section, table) in &sections {
            for key in table.keys() {
                if !raw
                    .iter()
                    .any(|l| l.section == *section && l.name == *key.get_ref())
                {
                    let known: Vec<&str> = raw
                        .iter()
                        .filter(|l| l.section == *section)
                        .map(|l| l.name.as_str())
                        .collect();
                    return Err(at(
                        key.span().start,
                        format!(
                            "[{section}] {}: expected a field of the raw schema ({}), found an unknown field",
                            key.get_ref(),
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
        let mut rules = Vec::new();
        for leaf in raw {
            let Some((_, table)) = sections.iter().find(|(s, _)| *s == leaf.section) else {
                return Err(PolicyError::File {
                    file: file.to_owned(),
                    message: format!("expected a [{}] section, found none", leaf.section),
                });
            };
            let Some((key, value)) = table.iter().find(|(k, _)| *k.get_ref() == leaf.name) else {
                return Err(PolicyError::File {
                    file: file.to_owned(),
                    message: format!(
                        "[{}] {}: expected a rule for this field of the raw schema ({}), found none",
                        leaf.section,
                        leaf.name,
                        leaf.doc.split(':').next().unwrap_or("")
                    ),
                });
            };
            let line = line_of(text, key.span().start);
            let where_ = format!("[{}] {}", leaf.section, leaf.name);
            let op = parse_op(value.get_ref())
                .map_err(|m| at(value.span().start, format!("{where_}: {m}")))?;
            if !op.accepts(leaf.kind) {
                return Err(at(
                    value.span().start,
                    format!(
                        "{where_}: operation {} does not apply to a field of type {:?}",
                        op.name(),
                        leaf.kind
                    ),
                ));
            }
            if op == Op::Pseudonym
                && !linkage.iter().any(|b| {
                    b.inputs()
                        .iter()
                        .any(|(s, n)| *s == leaf.section && *n == leaf.name)
                })
            {
                return Err(at(
                    value.span().start,
                    format!(
                        "{where_}: op pseudonym, but no basis in pseudonym.linkage reads this field"
                    ),
                ));
            }
            if matches!(op, Op::Residence { .. })
                && !(leaf.section == "patient"
                    && (leaf.name == "postal_code" || leaf.name == "municipality_code"))
            {
                return Err(at(
                    value.span().start,
                    format!(
                        "{where_}: op residence applies to patient postal_code or municipality_code only"
                    ),
                ));
            }
            if leaf.section == "envelope"
                && leaf.name == "event_id"
                && !matches!(op, Op::Hash | Op::Drop)
            {
                // The hub's record id (a FHIR resource id, a hospital's
                // record number) joins the zone back to the hub's export.
                return Err(at(
                    value.span().start,
                    format!(
                        "{where_}: the hub's own record id joins the zone back to its export; expected hash or drop, found op {}",
                        op.name()
                    ),
                ));
            }
            if op == Op::Hash && !(leaf.section == "envelope" && leaf.name == "event_id") {
                return Err(at(
                    value.span().start,
                    format!("{where_}: op hash applies to [envelope] event_id only"),
                ));
            }
            if leaf.doc.starts_with("DI")
                && !matches!(
                    op,
                    Op::Drop | Op::DropFreeText | Op::Pseudonym | Op::Facility
                )
            {
                // The raw schema marks direct identifiers; the pseudonymized
                // zone never carries one, whatever a profile says.
                return Err(at(
                    value.span().start,
                    format!(
                        "{where_}: a direct identifier (DI in the raw schema) must be dropped or used for the pseudonym, found op {}",
                        op.name()
                    ),
                ));
            }
            if op == Op::Keep && leaf.is_free_text() {
                return Err(at(
                    value.span().start,
                    format!(
                        "{where_}: free text (no code pattern in the raw schema), where names and numbers hide; expected drop_free_text, vocabulary, or keep_free_text to keep it as a stated risk, found op keep"
                    ),
                ));
            }
            rules.push(Rule {
                section: leaf.section.clone(),
                field: leaf.name.clone(),
                op,
                line,
            });
        }
        let mut added = Vec::new();
        for key in form.added.keys() {
            if !crate::plan::ADDED.iter().any(|(c, _)| c == key.get_ref()) {
                return Err(at(
                    key.span().start,
                    format!(
                        "[added] {}: expected a column the transform adds ({}), found an unknown column",
                        key.get_ref(),
                        crate::plan::ADDED
                            .iter()
                            .map(|(c, _)| *c)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        for (col, _) in crate::plan::ADDED {
            let Some((_, v)) = form.added.iter().find(|(k, _)| k.get_ref() == col) else {
                return Err(PolicyError::File {
                    file: file.to_owned(),
                    message: format!(
                        "[added] {col}: expected keep or drop for this column the transform adds, found none"
                    ),
                });
            };
            let keep = match v.get_ref().as_str() {
                "keep" => true,
                "drop" => false,
                other => {
                    return Err(at(
                        v.span().start,
                        format!("[added] {col}: expected keep or drop, found {other:?}"),
                    ));
                }
            };
            added.push(((*col).to_owned(), keep));
        }
        let residence: Vec<&Op> = rules
            .iter()
            .filter(|r| matches!(r.op, Op::Residence { .. }))
            .map(|r| &r.op)
            .collect();
        if residence.windows(2).any(|w| w[0] != w[1]) {
            return Err(PolicyError::File {
                file: file.to_owned(),
                message:
                    "postal_code and municipality_code: expected the same residence level on both"
                        .into(),
            });
        }
        Ok(Policy {
            profile: form.profile,
            version: form.version,
            description: form.description,
            linkage,
            max_shift_days: *form.date_shift.max_days.get_ref(),
            rules,
            added,
            source: file.to_owned(),
        })
    }
}

/// The reference vocabularies' names, loaded once for every policy.
fn vocabulary_names() -> &'static [String] {
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        chitose_schemas::reference::Reference::load()
            .map(|r| r.vocabulary_names().map(str::to_owned).collect())
            .unwrap_or_default()
    })
}

fn parse_op(v: &toml::Value) -> Result<Op, String> {
    let (name, params) = match v {
        toml::Value::String(s) => (s.as_str(), None),
        toml::Value::Table(t) => match t.get("op") {
            Some(toml::Value::String(s)) => (s.as_str(), Some(t)),
            _ => return Err("expected a table with op = \"<operation>\"".into()),
        },
        other => {
            return Err(format!(
                "expected an operation name or a table {{ op = ... }}, found a {}",
                other.type_str()
            ));
        }
    };
    let allowed: &[&str] = match name {
        "date" => &["shift", "outputs"],
        "age" => &["top_code"],
        "residence" => &["level"],
        "icd10" => &["finest"],
        "numeric" => &["bottom", "top"],
        "vocabulary" => &["list"],
        "keep" | "keep_free_text" | "hash" | "drop" | "drop_free_text" | "pseudonym"
        | "prefecture" | "facility" | "drug_class" | "jlac10" | "length_of_stay" => &[],
        other => return Err(format!("expected one of {OP_NAMES}, found op {other:?}")),
    };
    if let Some(t) = params {
        for k in t.keys() {
            if k != "op" && !allowed.contains(&k.as_str()) {
                return Err(format!(
                    "op {name}: expected parameters {}, found unknown parameter {k:?}",
                    if allowed.is_empty() {
                        "none".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ));
            }
        }
    }
    let get = |k: &str| params.and_then(|t| t.get(k));
    let str_param = |k: &str, default: &str| -> Result<String, String> {
        match get(k) {
            None => Ok(default.to_owned()),
            Some(toml::Value::String(s)) => Ok(s.clone()),
            Some(o) => Err(format!(
                "op {name}: {k}: expected a string, found a {}",
                o.type_str()
            )),
        }
    };
    let num_param = |k: &str| -> Result<Option<f64>, String> {
        match get(k) {
            None => Ok(None),
            Some(toml::Value::Float(f)) => Ok(Some(*f)),
            Some(toml::Value::Integer(i)) => Ok(Some(*i as f64)),
            Some(o) => Err(format!(
                "op {name}: {k}: expected a number, found a {}",
                o.type_str()
            )),
        }
    };
    Ok(match name {
        "keep" => Op::Keep,
        "keep_free_text" => Op::KeepFreeText,
        "hash" => Op::Hash,
        "vocabulary" => {
            let list = str_param("list", "")?;
            let known = vocabulary_names();
            if !known.contains(&list) {
                return Err(format!(
                    "op vocabulary: list: expected one of {}, found {list:?}",
                    known.join(", ")
                ));
            }
            Op::Vocabulary { list }
        }
        "drop" => Op::Drop,
        "drop_free_text" => Op::DropFreeText,
        "pseudonym" => Op::Pseudonym,
        "prefecture" => Op::Prefecture,
        "facility" => Op::Facility,
        "drug_class" => Op::DrugClass,
        "jlac10" => Op::Jlac10,
        "length_of_stay" => Op::LengthOfStay,
        "age" => Op::Age {
            top_code: match num_param("top_code")? {
                None => 90,
                Some(n) if (1.0..=120.0).contains(&n) && n.fract() == 0.0 => n as u32,
                Some(n) => {
                    return Err(format!(
                        "op age: top_code: expected a whole age 1-120, found {n}"
                    ));
                }
            },
        },
        "residence" => Op::Residence {
            level: match str_param("level", "municipality")?.as_str() {
                "municipality" => GeoLevel::Municipality,
                "prefecture" => GeoLevel::Prefecture,
                o => {
                    return Err(format!(
                        "op residence: level: expected municipality or prefecture, found {o:?}"
                    ));
                }
            },
        },
        "icd10" => Op::Icd10 {
            finest: match str_param("finest", "code")?.as_str() {
                "code" => IcdLevel::Code,
                "category" => IcdLevel::Category,
                "block" => IcdLevel::Block,
                "chapter" => IcdLevel::Chapter,
                o => {
                    return Err(format!(
                        "op icd10: finest: expected code, category, block or chapter, found {o:?}"
                    ));
                }
            },
        },
        "numeric" => {
            let (bottom, top) = (num_param("bottom")?, num_param("top")?);
            if bottom.is_none() && top.is_none() {
                return Err("op numeric: expected bottom, top or both".into());
            }
            if let (Some(b), Some(t)) = (bottom, top)
                && b > t
            {
                return Err(format!(
                    "op numeric: expected bottom <= top, found {b} > {t}"
                ));
            }
            Op::Numeric { bottom, top }
        }
        "date" => {
            let shift = match get("shift") {
                None => false,
                Some(toml::Value::Boolean(b)) => *b,
                Some(o) => {
                    return Err(format!(
                        "op date: shift: expected true or false, found a {}",
                        o.type_str()
                    ));
                }
            };
            let Some(toml::Value::Table(outs)) = get("outputs") else {
                return Err(
                    "op date: expected outputs = { <column> = \"day\" | \"month\" | \"year\" }"
                        .into(),
                );
            };
            let mut outputs = Vec::new();
            for (col, t) in outs {
                let trunc = match t.as_str() {
                    Some("day") => Trunc::Day,
                    Some("month") => Trunc::Month,
                    Some("year") => Trunc::Year,
                    _ => {
                        return Err(format!(
                            "op date: outputs.{col}: expected day, month or year, found {t}"
                        ));
                    }
                };
                outputs.push((col.clone(), trunc));
            }
            if outputs.is_empty() {
                return Err("op date: expected at least one output column".into());
            }
            Op::Date { shift, outputs }
        }
        _ => unreachable!("names checked above"),
    })
}
