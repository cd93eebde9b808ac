//! A policy compiled against the pseudonymized table schemas: for each
//! event type, one [`Slot`] per output column in schema order, so encoding
//! is a straight walk that writes Avro bytes with no intermediate record.
//!
//! Compiling checks what the policy produces against each `.avsc`: every
//! column it writes must exist with a matching type, a column that may be
//! absent must be nullable, and a required column must have a source.

use crate::fields::{FIELDS, Get, Kind, Leaf, Val};
use crate::policy::{GeoLevel, IcdLevel, Op, Policy, PolicyError, Trunc};
use chitose_schemas::raw::EventType;
use std::collections::BTreeMap;

/// Columns every table gets from the transform itself, not from a field.
pub const ADDED: &[(&str, &str)] = &[
    (
        "pseudonym",
        "HMAC-SHA256 of the linkage key under the current key, base32",
    ),
    ("pseudonym_key_id", "id of the key that made the pseudonym"),
    ("event_id_key_id", "id of the key that hashed event_id"),
    (
        "date_shift_key_id",
        "id of the key that shifted the dates (null when not shifted)",
    ),
    ("linkage_basis", "which linkage basis made the pseudonym"),
    (
        "linkage_pseudonyms",
        "the pseudonyms of every basis the inputs allow, under every pseudonym key loaded",
    ),
    ("policy_profile", "this profile's name"),
    ("policy_version", "this profile's version"),
    (
        "source_topic",
        "Kafka topic of the raw record (for replay detection)",
    ),
    ("source_partition", "Kafka partition of the raw record"),
    ("source_offset", "Kafka offset of the raw record"),
    ("transformed_at", "when the transform wrote the record"),
];

/// An added column, resolved from its name in [`ADDED`] once, when the
/// plan is built: the transform matches this per record, not a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// `pseudonym`.
    Pseudonym,
    /// `pseudonym_key_id`.
    PseudonymKeyId,
    /// `event_id_key_id`.
    EventIdKeyId,
    /// `date_shift_key_id`.
    DateShiftKeyId,
    /// `linkage_basis`.
    LinkageBasis,
    /// `linkage_pseudonyms`.
    LinkagePseudonyms,
    /// `policy_profile`.
    PolicyProfile,
    /// `policy_version`.
    PolicyVersion,
    /// `source_topic`.
    SourceTopic,
    /// `source_partition`.
    SourcePartition,
    /// `source_offset`.
    SourceOffset,
    /// `transformed_at`.
    TransformedAt,
}

impl Added {
    /// Every added column, in [`ADDED`]'s order.
    pub const ALL: [Added; 12] = [
        Added::Pseudonym,
        Added::PseudonymKeyId,
        Added::EventIdKeyId,
        Added::DateShiftKeyId,
        Added::LinkageBasis,
        Added::LinkagePseudonyms,
        Added::PolicyProfile,
        Added::PolicyVersion,
        Added::SourceTopic,
        Added::SourcePartition,
        Added::SourceOffset,
        Added::TransformedAt,
    ];

    /// The column's name (from [`ADDED`], the one list of them).
    pub fn name(self) -> &'static str {
        ADDED[self as usize].0
    }

    /// What the column holds (from [`ADDED`]).
    pub fn what(self) -> &'static str {
        ADDED[self as usize].1
    }
}

/// Checkup judgement columns: (column, the checkup fields judged together).
pub const JUDGEMENTS: &[(&str, &[&str])] = &[
    ("bp_judgement", &["systolic_bp", "diastolic_bp"]),
    (
        "glucose_judgement",
        &["fasting_glucose_mg_dl", "hba1c_percent"],
    ),
    (
        "lipid_judgement",
        &["triglycerides_mg_dl", "hdl_mg_dl", "ldl_mg_dl"],
    ),
    ("liver_judgement", &["ast_u_l", "alt_u_l", "ggt_u_l"]),
];

/// How one output column is computed.
#[derive(Debug, Clone)]
pub enum Source {
    /// Always null (no rule produces it; the column is nullable).
    Null,
    /// A column the transform adds (see [`ADDED`]).
    Added(Added),
    /// A free-text field kept only as a value of the named vocabulary.
    Vocabulary(Get, String),
    /// The event id, keyed-hashed.
    EventIdHash,
    /// A field copied; `true` when the value could carry one of the
    /// record's identifiers and is checked for them. An enum symbol cannot,
    /// and neither can a value of a code pattern (upper-case letters and
    /// digits only), which the contract has already matched before any
    /// column is written: a code, not text (long numeric codes contain a
    /// patient's digits by chance). Decided once here, not per record.
    Keep(Get, bool),
    /// Top/bottom coded number.
    Numeric(Get, Option<f64>, Option<f64>),
    /// Prefecture code, checked against the reference.
    PrefectureCode(Get),
    /// Prefecture name.
    PrefectureName(Get),
    /// Facility prefecture.
    FacilityPrefecture(Get),
    /// Facility type.
    FacilityType(Get),
    /// A date, maybe shifted, truncated.
    Date(Get, bool, Trunc),
    /// Birth year (null when top-coded).
    BirthYear(Get, u32),
    /// Age at the event.
    AgeAtEvent(Get, u32),
    /// Age band.
    AgeBand(Get, u32),
    /// Residence municipality.
    ResidenceMunicipality,
    /// Residence prefecture.
    ResidencePrefecture,
    /// An ICD-10 column at a level; null when finer than the profile keeps.
    Icd10(Get, IcdColumn, IcdLevel),
    /// YJ therapeutic class code.
    DrugClassCode(Get),
    /// YJ therapeutic class name.
    DrugClassName(Get),
    /// JLAC10 analyte.
    Jlac10Analyte(Get),
    /// Whole days from occurred_at to this time.
    LengthOfStay(Get),
    /// A checkup judgement over the listed fields.
    Judgement(&'static [&'static str]),
}

/// The ICD-10 columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcdColumn {
    /// icd10_code.
    Code,
    /// icd10_3char.
    Category,
    /// icd10_block.
    Block,
    /// icd10_block_name.
    BlockName,
    /// icd10_chapter.
    Chapter,
    /// icd10_chapter_name.
    ChapterName,
}

/// One output column.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Column name.
    pub name: String,
    /// Avro type.
    pub kind: Kind,
    /// Union with null.
    pub nullable: bool,
    /// How it is computed.
    pub source: Source,
    /// The raw field it comes from (`section.field`), if any.
    pub from: Option<String>,
}

/// The compiled plan of one event type.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// Which type.
    pub event_type: EventType,
    /// Full name of the output schema.
    pub full_name: String,
    /// SOE fingerprint of the output schema.
    pub fingerprint: u64,
    /// Columns, schema order.
    pub slots: Vec<Slot>,
}

struct Produced {
    kind: Kind,
    nullable: bool,
    source: Source,
    from: String,
    line: usize,
}

fn getter(section: &str, field: &str) -> Get {
    FIELDS
        .iter()
        .find(|f| f.section == section && f.name == field)
        .map(|f| f.get)
        .expect("policy fields are checked against the raw schema, FIELDS too (tested)")
}

/// What a rule writes: (column, kind, nullable, source).
fn outputs(op: &Op, leaf: &Leaf, get: Get) -> Vec<(String, Kind, bool, Source)> {
    let last = leaf
        .name
        .rsplit('.')
        .next()
        .unwrap_or(&leaf.name)
        .to_owned();
    let n = leaf.nullable;
    let is_code = leaf.pattern.as_deref().is_some_and(|p| !p.contains("a-z"));
    let checked = leaf.kind == Kind::Str && !leaf.is_enum && !is_code;
    match op {
        Op::Keep | Op::KeepFreeText => vec![(last, leaf.kind, n, Source::Keep(get, checked))],
        Op::Vocabulary { list } => {
            vec![(last, leaf.kind, true, Source::Vocabulary(get, list.clone()))]
        }
        Op::Hash => vec![(last, Kind::Str, false, Source::EventIdHash)],
        Op::Drop | Op::DropFreeText | Op::Pseudonym => vec![],
        Op::Numeric { bottom, top } => {
            vec![(last, leaf.kind, n, Source::Numeric(get, *bottom, *top))]
        }
        Op::Prefecture => vec![
            (
                "prefecture".into(),
                Kind::Str,
                n,
                Source::PrefectureCode(get),
            ),
            (
                "prefecture_name".into(),
                Kind::Str,
                n,
                Source::PrefectureName(get),
            ),
        ],
        Op::Facility => vec![
            (
                "facility_prefecture".into(),
                Kind::Str,
                n,
                Source::FacilityPrefecture(get),
            ),
            (
                "facility_type".into(),
                Kind::Str,
                n,
                Source::FacilityType(get),
            ),
        ],
        Op::Date { shift, outputs } => outputs
            .iter()
            .map(|(col, t)| {
                let kind = if *t == Trunc::Day {
                    Kind::Date
                } else {
                    Kind::Str
                };
                (col.clone(), kind, n, Source::Date(get, *shift, *t))
            })
            .collect(),
        Op::Age { top_code } => vec![
            (
                "birth_year".into(),
                Kind::Int,
                true,
                Source::BirthYear(get, *top_code),
            ),
            (
                "age_at_event".into(),
                Kind::Int,
                n,
                Source::AgeAtEvent(get, *top_code),
            ),
            (
                "age_band".into(),
                Kind::Str,
                n,
                Source::AgeBand(get, *top_code),
            ),
        ],
        Op::Residence { level } => {
            let mut v = vec![(
                "residence_prefecture".into(),
                Kind::Str,
                true,
                Source::ResidencePrefecture,
            )];
            if *level == GeoLevel::Municipality {
                v.insert(
                    0,
                    (
                        "residence_municipality_code".into(),
                        Kind::Str,
                        true,
                        Source::ResidenceMunicipality,
                    ),
                );
            }
            v
        }
        Op::Icd10 { finest } => [
            ("icd10_code", IcdColumn::Code, IcdLevel::Code),
            ("icd10_3char", IcdColumn::Category, IcdLevel::Category),
            ("icd10_block", IcdColumn::Block, IcdLevel::Block),
            ("icd10_block_name", IcdColumn::BlockName, IcdLevel::Block),
            ("icd10_chapter", IcdColumn::Chapter, IcdLevel::Chapter),
            (
                "icd10_chapter_name",
                IcdColumn::ChapterName,
                IcdLevel::Chapter,
            ),
        ]
        .into_iter()
        .map(|(col, c, level)| {
            // Columns finer than the profile keeps are null; blocks can be
            // missing from the reference table, so they are nullable; and
            // every column is when the code itself may be (contract v3:
            // MEDIS-only diagnoses).
            let nullable =
                n || level < *finest || matches!(c, IcdColumn::Block | IcdColumn::BlockName);
            (
                col.to_owned(),
                Kind::Str,
                nullable,
                Source::Icd10(get, c, *finest),
            )
        })
        .collect(),
        Op::DrugClass => vec![
            (last, Kind::Str, n, Source::Keep(get, checked)),
            (
                "drug_class_code".into(),
                Kind::Str,
                n,
                Source::DrugClassCode(get),
            ),
            (
                "drug_class_name".into(),
                Kind::Str,
                true,
                Source::DrugClassName(get),
            ),
        ],
        Op::Jlac10 => vec![
            (last, Kind::Str, n, Source::Keep(get, checked)),
            (
                "jlac10_analyte".into(),
                Kind::Str,
                n,
                Source::Jlac10Analyte(get),
            ),
        ],
        Op::LengthOfStay => vec![(
            "length_of_stay_days".into(),
            Kind::Int,
            true,
            Source::LengthOfStay(get),
        )],
    }
}

/// Compiles `policy` for every event type against the shipped (or given)
/// pseudo schemas.
pub fn compile(
    policy: &Policy,
    raw: &[Leaf],
    store: &chitose_schemas::catalog::SchemaStore,
) -> Result<Vec<TablePlan>, PolicyError> {
    let file_err = |message: String| PolicyError::File {
        file: policy.source.clone(),
        message,
    };
    let mut plans = Vec::new();
    for &t in EventType::ALL.iter() {
        let entry = store
            .iter()
            .filter(|e| e.full_name.starts_with("chitose.pseudo."))
            .filter(|e| {
                e.text
                    .contains(&format!("\"chitose.event_type\": \"{}\"", t.symbol()))
            })
            .max_by_key(|e| e.version)
            .ok_or_else(|| {
                file_err(format!(
                    "expected a pseudo schema for {}, found none",
                    t.symbol()
                ))
            })?;
        let columns = crate::fields::record_leaves(&entry.schema);
        let mut produced: BTreeMap<String, Produced> = BTreeMap::new();
        for rule in &policy.rules {
            if !(rule.section == "envelope"
                || rule.section == "patient"
                || rule.section == t.symbol())
            {
                continue;
            }
            let leaf = raw
                .iter()
                .find(|l| l.section == rule.section && l.name == rule.field)
                .expect("rules come from the raw leaves");
            let get = getter(&rule.section, &rule.field);
            for (col, kind, nullable, source) in outputs(&rule.op, leaf, get) {
                let from = format!("[{}] {}", rule.section, rule.field);
                if let Some(prev) = produced.get(&col) {
                    // postal_code and municipality_code share the residence columns.
                    if matches!(rule.op, Op::Residence { .. }) {
                        continue;
                    }
                    return Err(PolicyError::At {
                        file: policy.source.clone(),
                        line: rule.line,
                        message: format!(
                            "{from}: op {} writes column {col} of {}, which {} (line {}) writes already",
                            rule.op.name(),
                            entry.full_name,
                            prev.from,
                            prev.line
                        ),
                    });
                }
                produced.insert(
                    col,
                    Produced {
                        kind,
                        nullable,
                        source,
                        from,
                        line: rule.line,
                    },
                );
            }
        }
        for a in Added::ALL {
            let col = a.name();
            let kept = policy.added.iter().any(|(c, keep)| c == col && *keep);
            if !kept {
                continue;
            }
            produced.insert(
                col.to_owned(),
                Produced {
                    kind: match a {
                        Added::SourcePartition => Kind::Int,
                        Added::SourceOffset => Kind::Long,
                        Added::TransformedAt => Kind::TsMillis,
                        _ => Kind::Str,
                    },
                    nullable: a == Added::DateShiftKeyId,
                    source: Source::Added(a),
                    from: "the transform".into(),
                    line: 0,
                },
            );
        }
        if t == EventType::Checkup {
            for (col, fields) in JUDGEMENTS {
                produced.insert(
                    (*col).to_owned(),
                    Produced {
                        kind: Kind::Str,
                        nullable: false,
                        source: Source::Judgement(fields),
                        from: "the reference thresholds".into(),
                        line: 0,
                    },
                );
            }
        }
        let mut slots = Vec::new();
        for c in &columns {
            match produced.remove(&c.name) {
                Some(p) => {
                    let at = |message: String| PolicyError::At {
                        file: policy.source.clone(),
                        line: p.line,
                        message,
                    };
                    if p.kind != c.kind {
                        return Err(at(format!(
                            "{}: writes column {} of {} as {:?}, but the schema has {:?}",
                            p.from, c.name, entry.full_name, p.kind, c.kind
                        )));
                    }
                    if p.nullable && !c.nullable {
                        return Err(at(format!(
                            "{}: column {} of {} is required, but this rule can leave it empty",
                            p.from, c.name, entry.full_name
                        )));
                    }
                    slots.push(Slot {
                        name: c.name.clone(),
                        kind: c.kind,
                        nullable: c.nullable,
                        source: p.source,
                        from: (p.line > 0).then_some(p.from),
                    });
                }
                None if c.nullable => slots.push(Slot {
                    name: c.name.clone(),
                    kind: c.kind,
                    nullable: true,
                    source: Source::Null,
                    from: None,
                }),
                None => {
                    return Err(file_err(format!(
                        "column {} of {} is required, but no rule writes it",
                        c.name, entry.full_name
                    )));
                }
            }
        }
        if let Some((col, p)) = produced.into_iter().next() {
            return Err(PolicyError::At {
                file: policy.source.clone(),
                line: p.line,
                message: format!(
                    "{}: writes column {col}, which {} does not have",
                    p.from, entry.full_name
                ),
            });
        }
        plans.push(TablePlan {
            event_type: t,
            full_name: entry.full_name.clone(),
            fingerprint: entry.fingerprint,
            slots,
        });
    }
    Ok(plans)
}

impl Val<'_> {
    /// The kind a value has, for debug checks.
    pub fn fits(&self, kind: Kind) -> bool {
        matches!(
            (self, kind),
            (Val::Null, _)
                | (Val::Str(_) | Val::Small(_), Kind::Str)
                | (Val::Int(_), Kind::Int)
                | (Val::Long(_), Kind::Long)
                | (Val::Double(_), Kind::Double)
                | (Val::Bool(_), Kind::Bool)
                | (Val::Date(_), Kind::Date)
                | (Val::TsMillis(_), Kind::TsMillis)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{ADDED, Added};

    // `Added::name` indexes ADDED by discriminant: the enum, ALL and ADDED
    // must list the columns in one order, each once.
    #[test]
    fn added_columns_follow_the_one_list() {
        assert_eq!(Added::ALL.len(), ADDED.len());
        for (i, a) in Added::ALL.into_iter().enumerate() {
            assert_eq!(a as usize, i, "{a:?} out of order in Added::ALL");
            assert_eq!(a.name(), ADDED[i].0);
        }
        let expect = [
            (Added::Pseudonym, "pseudonym"),
            (Added::LinkagePseudonyms, "linkage_pseudonyms"),
            (Added::SourcePartition, "source_partition"),
            (Added::TransformedAt, "transformed_at"),
        ];
        for (a, name) in expect {
            assert_eq!(a.name(), name);
        }
    }
}
