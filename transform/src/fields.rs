//! The raw zone's leaf fields, each with a borrowed accessor.
//!
//! A policy names every one of these; [`crate::policy`] checks the list
//! against the raw `.avsc` so a field added to the schema cannot slip
//! through the transform without the privacy officer deciding its fate.

use chitose_schemas::codec::{Date, Timestamp};
use chitose_schemas::raw::{Payload, RawEvent};

/// One value read from a raw event, borrowed where it can be.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    /// Absent.
    Null,
    /// A string (enum symbols included).
    Str(&'a str),
    /// A short string computed by the transform (a month, an ICD-10 code),
    /// held inline: no allocation per record.
    Small(Small),
    /// int.
    Int(i32),
    /// long.
    Long(i64),
    /// double.
    Double(f64),
    /// boolean.
    Bool(bool),
    /// Days since 1970-01-01.
    Date(i32),
    /// Milliseconds since the epoch.
    TsMillis(i64),
}

/// A string of at most [`Small::CAP`] bytes, inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Small {
    buf: [u8; Small::CAP],
    len: u8,
}

impl Small {
    /// Capacity in bytes.
    pub const CAP: usize = 23;

    /// Formats `args`; `None` when the text does not fit.
    pub fn format(args: std::fmt::Arguments<'_>) -> Option<Small> {
        let mut s = Small::default();
        std::fmt::Write::write_fmt(&mut s, args).ok()?;
        Some(s)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).expect("written from str")
    }
}

impl std::fmt::Write for Small {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let at = usize::from(self.len);
        let end = at + s.len();
        if end > Small::CAP {
            return Err(std::fmt::Error);
        }
        self.buf[at..end].copy_from_slice(s.as_bytes());
        self.len = end as u8;
        Ok(())
    }
}

impl<'a> Val<'a> {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::Small(s) => Some(s.as_str()),
            _ => None,
        }
    }
    fn s(v: &'a str) -> Self {
        Val::Str(v)
    }
    fn os(v: &'a Option<String>) -> Self {
        v.as_deref().map_or(Val::Null, Val::Str)
    }
    fn od(v: Option<f64>) -> Self {
        v.map_or(Val::Null, Val::Double)
    }
    fn oi(v: Option<i32>) -> Self {
        v.map_or(Val::Null, Val::Int)
    }
    fn ob(v: Option<bool>) -> Self {
        v.map_or(Val::Null, Val::Bool)
    }
    fn date(v: Date) -> Self {
        Val::Date(v.0)
    }
    fn odate(v: Option<Date>) -> Self {
        v.map_or(Val::Null, |d| Val::Date(d.0))
    }
    fn ts(v: Timestamp) -> Self {
        Val::TsMillis(v.0)
    }
    fn ots(v: Option<Timestamp>) -> Self {
        v.map_or(Val::Null, |t| Val::TsMillis(t.0))
    }
    fn sym(v: &'static str) -> Self {
        Val::Str(v)
    }
    fn osym(v: Option<&'static str>) -> Self {
        v.map_or(Val::Null, Val::Str)
    }
}

/// Reads one field of a raw event.
pub type Get = for<'a> fn(&'a RawEvent) -> Val<'a>;

/// A leaf field: its policy section, its name there, and its accessor.
#[derive(Clone, Copy)]
pub struct RawField {
    /// `envelope`, `patient` or an event type.
    pub section: &'static str,
    /// Name inside the section (`insurance.insurer_number` for nested).
    pub name: &'static str,
    /// Accessor.
    pub get: Get,
}

impl std::fmt::Debug for RawField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.section, self.name)
    }
}

macro_rules! pay {
    ($variant:ident, $p:ident => $e:expr) => {
        |ev: &RawEvent| match &ev.payload {
            Payload::$variant($p) => $e,
            _ => Val::Null,
        }
    };
}

macro_rules! fields {
    ($( $section:literal $name:literal => $get:expr ),* $(,)?) => {
        /// Every leaf field of the current raw schema.
        pub const FIELDS: &[RawField] = &[
            $( RawField { section: $section, name: $name, get: $get } ),*
        ];
    };
}

fields! {
    "envelope" "event_id" => |e| Val::s(&e.event_id),
    "envelope" "event_type" => |e| Val::sym(e.event_type.symbol()),
    "envelope" "hub_prefecture" => |e| Val::s(&e.hub_prefecture),
    "envelope" "facility_code" => |e| Val::s(&e.facility_code),
    "envelope" "occurred_at" => |e| Val::ts(e.occurred_at),
    "envelope" "recorded_at" => |e| Val::ts(e.recorded_at),
    "envelope" "source_format" => |e| Val::s(&e.source_format),
    "patient" "local_patient_id" => |e| Val::s(&e.patient.local_patient_id),
    "patient" "name_kanji" => |e| Val::os(&e.patient.name_kanji),
    "patient" "name_kana" => |e| Val::os(&e.patient.name_kana),
    "patient" "birth_date" => |e| Val::date(e.patient.birth_date),
    "patient" "sex" => |e| Val::sym(e.patient.sex.symbol()),
    "patient" "postal_code" => |e| Val::os(&e.patient.postal_code),
    "patient" "municipality_code" => |e| Val::os(&e.patient.municipality_code),
    "patient" "address_line" => |e| Val::os(&e.patient.address_line),
    "patient" "phone" => |e| Val::os(&e.patient.phone),
    "patient" "email" => |e| Val::os(&e.patient.email),
    "patient" "insurance.insurer_number" => |e| e.patient.insurance.as_ref().map_or(Val::Null, |i| Val::s(&i.insurer_number)),
    "patient" "insurance.insured_symbol" => |e| e.patient.insurance.as_ref().map_or(Val::Null, |i| Val::os(&i.insured_symbol)),
    "patient" "insurance.insured_number" => |e| e.patient.insurance.as_ref().map_or(Val::Null, |i| Val::s(&i.insured_number)),
    "patient" "insurance.insured_branch" => |e| e.patient.insurance.as_ref().map_or(Val::Null, |i| Val::os(&i.insured_branch)),
    "encounter" "encounter_id" => pay!(Encounter, p => Val::s(&p.encounter_id)),
    "encounter" "encounter_class" => pay!(Encounter, p => Val::sym(p.encounter_class.symbol())),
    "encounter" "department_code" => pay!(Encounter, p => Val::os(&p.department_code)),
    "encounter" "ended_at" => pay!(Encounter, p => Val::ots(p.ended_at)),
    "encounter" "attending_physician_id" => pay!(Encounter, p => Val::os(&p.attending_physician_id)),
    "encounter" "comment" => pay!(Encounter, p => Val::os(&p.comment)),
    "diagnosis" "icd10_code" => pay!(Diagnosis, p => Val::os(&p.icd10_code)),
    "diagnosis" "medis_disease_code" => pay!(Diagnosis, p => Val::os(&p.medis_disease_code)),
    "diagnosis" "medis_disease_number" => pay!(Diagnosis, p => Val::os(&p.medis_disease_number)),
    "diagnosis" "disease_name" => pay!(Diagnosis, p => Val::os(&p.disease_name)),
    "diagnosis" "is_primary" => pay!(Diagnosis, p => Val::Bool(p.is_primary)),
    "diagnosis" "is_suspected" => pay!(Diagnosis, p => Val::Bool(p.is_suspected)),
    "diagnosis" "onset_date" => pay!(Diagnosis, p => Val::odate(p.onset_date)),
    "diagnosis" "outcome" => pay!(Diagnosis, p => Val::sym(p.outcome.symbol())),
    "diagnosis" "comment" => pay!(Diagnosis, p => Val::os(&p.comment)),
    "lab_result" "specimen_id" => pay!(LabResult, p => Val::os(&p.specimen_id)),
    "lab_result" "jlac10_code" => pay!(LabResult, p => Val::s(&p.jlac10_code)),
    "lab_result" "test_name" => pay!(LabResult, p => Val::s(&p.test_name)),
    "lab_result" "value_numeric" => pay!(LabResult, p => Val::od(p.value_numeric)),
    "lab_result" "value_text" => pay!(LabResult, p => Val::os(&p.value_text)),
    "lab_result" "unit" => pay!(LabResult, p => Val::os(&p.unit)),
    "lab_result" "reference_low" => pay!(LabResult, p => Val::od(p.reference_low)),
    "lab_result" "reference_high" => pay!(LabResult, p => Val::od(p.reference_high)),
    "lab_result" "abnormal_flag" => pay!(LabResult, p => Val::osym(p.abnormal_flag.map(|f| f.symbol()))),
    "lab_result" "comment" => pay!(LabResult, p => Val::os(&p.comment)),
    "prescription" "prescription_id" => pay!(Prescription, p => Val::os(&p.prescription_id)),
    "prescription" "yj_code" => pay!(Prescription, p => Val::os(&p.yj_code)),
    "prescription" "hot_code" => pay!(Prescription, p => Val::os(&p.hot_code)),
    "prescription" "generic_name_code" => pay!(Prescription, p => Val::os(&p.generic_name_code)),
    "prescription" "drug_name" => pay!(Prescription, p => Val::os(&p.drug_name)),
    "prescription" "dose_per_day" => pay!(Prescription, p => Val::od(p.dose_per_day)),
    "prescription" "dose_unit" => pay!(Prescription, p => Val::os(&p.dose_unit)),
    "prescription" "days_supply" => pay!(Prescription, p => Val::oi(p.days_supply)),
    "prescription" "route" => pay!(Prescription, p => Val::sym(p.route.symbol())),
    "prescription" "prescriber_id" => pay!(Prescription, p => Val::os(&p.prescriber_id)),
    "prescription" "comment" => pay!(Prescription, p => Val::os(&p.comment)),
    "checkup" "checkup_id" => pay!(Checkup, p => Val::os(&p.checkup_id)),
    "checkup" "height_cm" => pay!(Checkup, p => Val::od(p.height_cm)),
    "checkup" "weight_kg" => pay!(Checkup, p => Val::od(p.weight_kg)),
    "checkup" "bmi" => pay!(Checkup, p => Val::od(p.bmi)),
    "checkup" "waist_cm" => pay!(Checkup, p => Val::od(p.waist_cm)),
    "checkup" "systolic_bp" => pay!(Checkup, p => Val::od(p.systolic_bp)),
    "checkup" "diastolic_bp" => pay!(Checkup, p => Val::od(p.diastolic_bp)),
    "checkup" "triglycerides_mg_dl" => pay!(Checkup, p => Val::od(p.triglycerides_mg_dl)),
    "checkup" "hdl_mg_dl" => pay!(Checkup, p => Val::od(p.hdl_mg_dl)),
    "checkup" "ldl_mg_dl" => pay!(Checkup, p => Val::od(p.ldl_mg_dl)),
    "checkup" "ast_u_l" => pay!(Checkup, p => Val::od(p.ast_u_l)),
    "checkup" "alt_u_l" => pay!(Checkup, p => Val::od(p.alt_u_l)),
    "checkup" "ggt_u_l" => pay!(Checkup, p => Val::od(p.ggt_u_l)),
    "checkup" "fasting_glucose_mg_dl" => pay!(Checkup, p => Val::od(p.fasting_glucose_mg_dl)),
    "checkup" "hba1c_percent" => pay!(Checkup, p => Val::od(p.hba1c_percent)),
    "checkup" "urine_glucose" => pay!(Checkup, p => Val::osym(p.urine_glucose.map(|u| u.symbol()))),
    "checkup" "urine_protein" => pay!(Checkup, p => Val::osym(p.urine_protein.map(|u| u.symbol()))),
    "checkup" "smoker" => pay!(Checkup, p => Val::ob(p.smoker)),
    "checkup" "on_antihypertensives" => pay!(Checkup, p => Val::ob(p.on_antihypertensives)),
    "checkup" "on_diabetes_medication" => pay!(Checkup, p => Val::ob(p.on_diabetes_medication)),
    "checkup" "on_lipid_medication" => pay!(Checkup, p => Val::ob(p.on_lipid_medication)),
    "checkup" "comment" => pay!(Checkup, p => Val::os(&p.comment)),
    "vaccination" "vaccine_code" => pay!(Vaccination, p => Val::s(&p.vaccine_code)),
    "vaccination" "vaccine_name" => pay!(Vaccination, p => Val::os(&p.vaccine_name)),
    "vaccination" "lot_number" => pay!(Vaccination, p => Val::os(&p.lot_number)),
    "vaccination" "dose_number" => pay!(Vaccination, p => Val::oi(p.dose_number)),
    "vaccination" "site" => pay!(Vaccination, p => Val::osym(p.site.map(|s| s.symbol()))),
    "vaccination" "performer_id" => pay!(Vaccination, p => Val::os(&p.performer_id)),
    "vaccination" "comment" => pay!(Vaccination, p => Val::os(&p.comment)),
    "allergy" "allergy_id" => pay!(Allergy, p => Val::os(&p.allergy_id)),
    "allergy" "substance_system" => pay!(Allergy, p => Val::sym(p.substance_system.symbol())),
    "allergy" "substance_code" => pay!(Allergy, p => Val::os(&p.substance_code)),
    "allergy" "substance_name" => pay!(Allergy, p => Val::os(&p.substance_name)),
    "allergy" "category" => pay!(Allergy, p => Val::osym(p.category.map(|c| c.symbol()))),
    "allergy" "criticality" => pay!(Allergy, p => Val::osym(p.criticality.map(|c| c.symbol()))),
    "allergy" "clinical_status" => pay!(Allergy, p => Val::sym(p.clinical_status.symbol())),
    "allergy" "is_confirmed" => pay!(Allergy, p => Val::Bool(p.is_confirmed)),
    "allergy" "onset_date" => pay!(Allergy, p => Val::odate(p.onset_date)),
    "allergy" "reaction_severity" => pay!(Allergy, p => Val::osym(p.reaction_severity.map(|s| s.symbol()))),
    "allergy" "reaction" => pay!(Allergy, p => Val::os(&p.reaction)),
    "allergy" "comment" => pay!(Allergy, p => Val::os(&p.comment)),
    "correction" "corrected_event_type" => pay!(Correction, p => Val::sym(p.corrected_event_type.symbol())),
    "correction" "reason" => pay!(Correction, p => Val::sym(p.reason.symbol())),
}

/// Avro type of a leaf, as the policy compiler needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// string or enum.
    Str,
    /// int.
    Int,
    /// long.
    Long,
    /// double.
    Double,
    /// boolean.
    Bool,
    /// int, logicalType date.
    Date,
    /// long, logicalType timestamp-millis.
    TsMillis,
}

/// A leaf of an Avro record schema: its type, nullability and doc.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Section (`envelope`, `patient`, event type) — raw side only.
    pub section: String,
    /// Name within the section, dotted for nested records.
    pub name: String,
    /// Type.
    pub kind: Kind,
    /// A union with null.
    pub nullable: bool,
    /// The schema's doc (starts with DI/QI/SA/OP).
    pub doc: String,
    /// `chitose.pattern`, where the schema gives one.
    pub pattern: Option<String>,
    /// `chitose.max_length`, where the schema gives one.
    pub max_length: Option<usize>,
    /// An enum (its symbols are the schema's, never free text).
    pub is_enum: bool,
}

impl Leaf {
    /// A string the hub types freely: not an enum, no code pattern. Names,
    /// phone numbers and My Numbers hide in such fields, so keeping one
    /// takes an explicit `keep_free_text` in a policy.
    pub fn is_free_text(&self) -> bool {
        self.kind == Kind::Str && !self.is_enum && self.pattern.is_none()
    }
}

fn max_length_of(f: &apache_avro::schema::RecordField) -> Option<usize> {
    f.custom_attributes
        .get("chitose.max_length")
        .and_then(|v| v.as_u64())
        .map(|n| n as usize)
}

fn is_enum(s: &apache_avro::Schema) -> bool {
    use apache_avro::Schema as S;
    match s {
        S::Enum(_) | S::Ref { .. } => true,
        S::Union(u) => u.variants().iter().any(is_enum),
        _ => false,
    }
}

fn pattern_of(f: &apache_avro::schema::RecordField) -> Option<String> {
    f.custom_attributes
        .get("chitose.pattern")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

fn kind_of(s: &apache_avro::Schema) -> Option<(Kind, bool)> {
    use apache_avro::Schema as S;
    Some(match s {
        S::String | S::Enum(_) => (Kind::Str, false),
        S::Int => (Kind::Int, false),
        S::Long => (Kind::Long, false),
        S::Double => (Kind::Double, false),
        S::Boolean => (Kind::Bool, false),
        S::Date => (Kind::Date, false),
        S::TimestampMillis => (Kind::TsMillis, false),
        S::Union(u) => {
            let v = u.variants();
            if v.len() == 2 && matches!(v[0], S::Null) {
                (kind_of(&v[1])?.0, true)
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

/// The leaves of a flat record (the pseudo tables): name → leaf.
pub fn record_leaves(schema: &apache_avro::Schema) -> Vec<Leaf> {
    let apache_avro::Schema::Record(r) = schema else {
        return Vec::new();
    };
    r.fields
        .iter()
        .filter_map(|f| {
            let (kind, nullable) = kind_of(&f.schema)?;
            Some(Leaf {
                section: String::new(),
                name: f.name.clone(),
                kind,
                nullable,
                doc: f.doc.clone().unwrap_or_default(),
                pattern: pattern_of(f),
                max_length: max_length_of(f),
                is_enum: is_enum(&f.schema),
            })
        })
        .collect()
}

/// The raw schema's leaves, sectioned as a policy names them.
pub fn raw_leaves(schema: &apache_avro::Schema) -> Vec<Leaf> {
    use apache_avro::Schema as S;
    let mut names = std::collections::HashMap::new();
    chitose_schemas::catalog::named_types(schema, &mut names);
    let resolve = |s: &S| -> S {
        match s {
            S::Ref { name } => names.get(&name.fullname(None)).cloned().unwrap_or(S::Null),
            other => other.clone(),
        }
    };
    let mut out = Vec::new();
    fn walk(out: &mut Vec<Leaf>, section: &str, prefix: &str, s: &S, resolve: &dyn Fn(&S) -> S) {
        let S::Record(r) = resolve(s) else { return };
        for f in &r.fields {
            let fs = resolve(&f.schema);
            let inner = match &fs {
                S::Union(u) if u.variants().len() == 2 && matches!(u.variants()[0], S::Null) => {
                    resolve(&u.variants()[1])
                }
                other => other.clone(),
            };
            if let S::Record(_) = inner {
                walk(
                    out,
                    section,
                    &format!("{prefix}{}.", f.name),
                    &inner,
                    resolve,
                );
                continue;
            }
            if let Some((kind, nullable)) = kind_of(&fs).or_else(|| kind_of(&inner)) {
                out.push(Leaf {
                    section: section.to_owned(),
                    name: format!("{prefix}{}", f.name),
                    kind,
                    nullable,
                    doc: f.doc.clone().unwrap_or_default(),
                    pattern: pattern_of(f),
                    max_length: max_length_of(f),
                    is_enum: is_enum(&fs) || is_enum(&inner),
                });
            }
        }
    }
    let S::Record(r) = schema else { return out };
    for f in &r.fields {
        match f.name.as_str() {
            "patient" => walk(&mut out, "patient", "", &f.schema, &resolve),
            "payload" => {
                if let S::Union(u) = resolve(&f.schema) {
                    for v in u.variants() {
                        let rec = resolve(v);
                        if let S::Record(rr) = &rec {
                            let section = event_section(&rr.name.name);
                            walk(&mut out, &section, "", &rec, &resolve);
                        }
                    }
                }
            }
            _ => {
                if let Some((kind, nullable)) = kind_of(&resolve(&f.schema)) {
                    out.push(Leaf {
                        section: "envelope".into(),
                        name: f.name.clone(),
                        kind,
                        nullable,
                        doc: f.doc.clone().unwrap_or_default(),
                        pattern: pattern_of(f),
                        max_length: max_length_of(f),
                        is_enum: is_enum(&resolve(&f.schema)),
                    });
                }
            }
        }
    }
    out
}

/// `LabResult` → `lab_result`.
fn event_section(record_name: &str) -> String {
    let mut s = String::new();
    for (i, c) in record_name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            s.push('_');
        }
        s.push(c.to_ascii_lowercase());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use chitose_schemas::catalog::{RAW_EVENT, SchemaStore};

    #[test]
    fn the_accessor_table_covers_exactly_the_raw_schema() {
        let store = SchemaStore::embedded();
        let raw = store.latest(RAW_EVENT).expect("raw schema");
        let leaves: Vec<(String, String)> = raw_leaves(&raw.schema)
            .into_iter()
            .map(|l| (l.section, l.name))
            .collect();
        let table: Vec<(String, String)> = FIELDS
            .iter()
            .map(|f| (f.section.to_owned(), f.name.to_owned()))
            .collect();
        assert_eq!(leaves, table);
        assert!(leaves.len() > 70, "{}", leaves.len());
    }
}
