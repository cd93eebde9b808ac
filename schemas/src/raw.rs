//! Rust types of the raw zone: `chitose.raw.RawEvent`, current version.
//!
//! Field order here is the field order of `avro/raw/raw_event.v3.avsc`;
//! `tests/contract.rs` encodes generated events with these types and decodes
//! them with apache-avro and the `.avsc`, so a mismatch fails the build's tests.
//! `Serialize` gives the documented JSON form (docs/json-form.md).

use crate::codec::{AvroCodec, AvroRecord, Date, DecodeError, Reader, Timestamp, put_long};
use crate::{avro_enum, avro_record};
use serde::Serialize;

avro_enum! {
    /// The event types: the six of the first set, and allergy (v3).
    pub enum EventType {
        /// 受診・入院
        Encounter = "encounter",
        /// 病名
        Diagnosis = "diagnosis",
        /// 検体検査結果
        LabResult = "lab_result",
        /// 処方
        Prescription = "prescription",
        /// 特定健診
        Checkup = "checkup",
        /// 予防接種
        Vaccination = "vaccination",
        /// アレルギー・不耐性反応 (v3)
        Allergy = "allergy",
        /// A withdrawn event (v3)
        Correction = "correction",
    }
}

avro_enum! {
    /// Administrative sex.
    pub enum Sex {
        /// 男
        Male = "male",
        /// 女
        Female = "female",
        /// 不明
        Unknown = "unknown",
    }
}

avro_enum! {
    /// Kind of encounter.
    pub enum EncounterClass {
        /// 外来
        Outpatient = "outpatient",
        /// 入院
        Inpatient = "inpatient",
        /// 救急
        Emergency = "emergency",
        /// 在宅
        HomeVisit = "home_visit",
    }
}

avro_enum! {
    /// Outcome of a diagnosis (転帰).
    pub enum DiagnosisOutcome {
        /// 継続
        Continuing = "continuing",
        /// 治癒
        Cured = "cured",
        /// 死亡
        Died = "died",
        /// 中止
        Discontinued = "discontinued",
        /// 転医
        Transferred = "transferred",
    }
}

avro_enum! {
    /// Abnormality flag of a lab result.
    pub enum AbnormalFlag {
        /// Within the reference range.
        Normal = "normal",
        /// Below it.
        Low = "low",
        /// Above it.
        High = "high",
        /// Panic low.
        CriticalLow = "critical_low",
        /// Panic high.
        CriticalHigh = "critical_high",
        /// Abnormal, not graded.
        Abnormal = "abnormal",
    }
}

avro_enum! {
    /// Route of administration.
    pub enum Route {
        /// 内服
        Oral = "oral",
        /// 外用
        Topical = "topical",
        /// 注射
        Injection = "injection",
        /// 吸入
        Inhalation = "inhalation",
        /// その他
        Other = "other",
    }
}

avro_enum! {
    /// Urine dipstick grade.
    pub enum UrineDipstick {
        /// (−)
        Negative = "negative",
        /// (±)
        Trace = "trace",
        /// (+)
        Plus1 = "plus1",
        /// (2+)
        Plus2 = "plus2",
        /// (3+)
        Plus3 = "plus3",
        /// (4+)
        Plus4 = "plus4",
    }
}

avro_enum! {
    /// Injection site.
    pub enum InjectionSite {
        /// 左上腕
        LeftArm = "left_arm",
        /// 右上腕
        RightArm = "right_arm",
        /// 左大腿
        LeftThigh = "left_thigh",
        /// 右大腿
        RightThigh = "right_thigh",
        /// その他
        Other = "other",
    }
}

avro_record! {
    /// Insurance tuple (保険者番号・記号・番号・枝番).
    pub struct Insurance {
        /// 保険者番号
        pub insurer_number: String,
        /// 記号
        pub insured_symbol: Option<String>,
        /// 番号
        pub insured_number: String,
        /// 枝番
        pub insured_branch: Option<String>,
    }
}

avro_record! {
    /// Who the event is about, as the hub knows them.
    pub struct PatientIdentity {
        /// Hub-local patient id.
        pub local_patient_id: String,
        /// 漢字氏名
        pub name_kanji: Option<String>,
        /// カナ氏名
        pub name_kana: Option<String>,
        /// Date of birth.
        pub birth_date: Date,
        /// Sex.
        pub sex: Sex,
        /// 郵便番号
        pub postal_code: Option<String>,
        /// JIS X 0402 municipality.
        pub municipality_code: Option<String>,
        /// Street address below the municipality.
        pub address_line: Option<String>,
        /// Telephone.
        pub phone: Option<String>,
        /// E-mail.
        pub email: Option<String>,
        /// Insurance tuple.
        pub insurance: Option<Insurance>,
    }
}

avro_record! {
    /// A visit or admission.
    pub struct Encounter {
        /// Hub-local encounter id.
        pub encounter_id: String,
        /// Kind of encounter.
        pub encounter_class: EncounterClass,
        /// 診療科 code.
        pub department_code: Option<String>,
        /// Discharge.
        pub ended_at: Option<Timestamp>,
        /// Physician id.
        pub attending_physician_id: Option<String>,
        /// Free text.
        pub comment: Option<String>,
    }
}

avro_record! {
    /// A diagnosis.
    pub struct Diagnosis {
        /// ICD-10 code; null when only MEDIS codes it (v3).
        pub icd10_code: Option<String>,
        /// MEDIS exchange code.
        pub medis_disease_code: Option<String>,
        /// MEDIS management number (病名管理番号, v3).
        pub medis_disease_number: Option<String>,
        /// Disease name as sent.
        pub disease_name: Option<String>,
        /// 主病名
        pub is_primary: bool,
        /// 疑い
        pub is_suspected: bool,
        /// Onset.
        pub onset_date: Option<Date>,
        /// 転帰
        pub outcome: DiagnosisOutcome,
        /// Free text.
        pub comment: Option<String>,
    }
}

avro_record! {
    /// A laboratory result.
    pub struct LabResult {
        /// Specimen id.
        pub specimen_id: Option<String>,
        /// JLAC10, 17 characters.
        pub jlac10_code: String,
        /// Local test name.
        pub test_name: String,
        /// Numeric value.
        pub value_numeric: Option<f64>,
        /// Qualitative value.
        pub value_text: Option<String>,
        /// Unit.
        pub unit: Option<String>,
        /// Lower reference limit.
        pub reference_low: Option<f64>,
        /// Upper reference limit.
        pub reference_high: Option<f64>,
        /// Flag.
        pub abnormal_flag: Option<AbnormalFlag>,
        /// Free text.
        pub comment: Option<String>,
    }
}

avro_record! {
    /// A prescribed drug.
    pub struct Prescription {
        /// Prescription id.
        pub prescription_id: Option<String>,
        /// YJ code, 12 characters; null when only HOT or a generic-name code is sent (v3).
        pub yj_code: Option<String>,
        /// MEDIS HOT code, 9 or 13 digits (v3).
        pub hot_code: Option<String>,
        /// 一般名処方マスタ code (v3).
        pub generic_name_code: Option<String>,
        /// Drug name.
        pub drug_name: Option<String>,
        /// Daily dose.
        pub dose_per_day: Option<f64>,
        /// Unit of the daily dose.
        pub dose_unit: Option<String>,
        /// Days supplied.
        pub days_supply: Option<i32>,
        /// Route.
        pub route: Route,
        /// Prescriber id.
        pub prescriber_id: Option<String>,
        /// Free text.
        pub comment: Option<String>,
    }
}

avro_record! {
    /// Specific health checkup (特定健診) items.
    pub struct Checkup {
        /// Checkup id.
        pub checkup_id: Option<String>,
        /// cm
        pub height_cm: Option<f64>,
        /// kg
        pub weight_kg: Option<f64>,
        /// kg/m2
        pub bmi: Option<f64>,
        /// cm
        pub waist_cm: Option<f64>,
        /// mmHg
        pub systolic_bp: Option<f64>,
        /// mmHg
        pub diastolic_bp: Option<f64>,
        /// mg/dL
        pub triglycerides_mg_dl: Option<f64>,
        /// mg/dL
        pub hdl_mg_dl: Option<f64>,
        /// mg/dL
        pub ldl_mg_dl: Option<f64>,
        /// U/L
        pub ast_u_l: Option<f64>,
        /// U/L
        pub alt_u_l: Option<f64>,
        /// U/L
        pub ggt_u_l: Option<f64>,
        /// mg/dL
        pub fasting_glucose_mg_dl: Option<f64>,
        /// %
        pub hba1c_percent: Option<f64>,
        /// 尿糖
        pub urine_glucose: Option<UrineDipstick>,
        /// 尿蛋白
        pub urine_protein: Option<UrineDipstick>,
        /// Questionnaire: smoker.
        pub smoker: Option<bool>,
        /// Questionnaire 1.
        pub on_antihypertensives: Option<bool>,
        /// Questionnaire 2.
        pub on_diabetes_medication: Option<bool>,
        /// Questionnaire 3.
        pub on_lipid_medication: Option<bool>,
        /// Free text.
        pub comment: Option<String>,
    }
}

avro_record! {
    /// A vaccine dose.
    pub struct Vaccination {
        /// YJ code of the product.
        pub vaccine_code: String,
        /// Name.
        pub vaccine_name: Option<String>,
        /// Lot number.
        pub lot_number: Option<String>,
        /// Dose number.
        pub dose_number: Option<i32>,
        /// Site.
        pub site: Option<InjectionSite>,
        /// Performer id.
        pub performer_id: Option<String>,
        /// Free text.
        pub comment: Option<String>,
    }
}

avro_enum! {
    /// Code system of an allergen.
    pub enum AllergenSystem {
        /// JFAGY food allergen list.
        JfagyFood = "jfagy_food",
        /// JFAGY medication allergen list.
        JfagyMedication = "jfagy_medication",
        /// JFAGY non-food, non-medication list.
        JfagyOther = "jfagy_other",
        /// YJ code.
        Yj = "yj",
        /// HOT code.
        Hot = "hot",
        /// Anything else.
        Other = "other",
    }
}

avro_enum! {
    /// Category of an allergy.
    pub enum AllergyCategory {
        /// 食物
        Food = "food",
        /// 薬剤
        Medication = "medication",
        /// 環境
        Environment = "environment",
        /// 生物
        Biologic = "biologic",
    }
}

avro_enum! {
    /// Criticality of an allergy.
    pub enum AllergyCriticality {
        /// Low.
        Low = "low",
        /// High.
        High = "high",
        /// Unable to assess.
        UnableToAssess = "unable_to_assess",
    }
}

avro_enum! {
    /// Clinical status of an allergy.
    pub enum AllergyStatus {
        /// Active.
        Active = "active",
        /// Inactive.
        Inactive = "inactive",
        /// Resolved.
        Resolved = "resolved",
    }
}

avro_enum! {
    /// Severity of a reaction.
    pub enum ReactionSeverity {
        /// Mild.
        Mild = "mild",
        /// Moderate.
        Moderate = "moderate",
        /// Severe.
        Severe = "severe",
    }
}

avro_record! {
    /// An allergy or intolerance (v3).
    pub struct Allergy {
        /// Record id.
        pub allergy_id: Option<String>,
        /// Code system of the allergen.
        pub substance_system: AllergenSystem,
        /// Allergen code.
        pub substance_code: Option<String>,
        /// Allergen as written.
        pub substance_name: Option<String>,
        /// Category.
        pub category: Option<AllergyCategory>,
        /// Criticality.
        pub criticality: Option<AllergyCriticality>,
        /// Clinical status.
        pub clinical_status: AllergyStatus,
        /// Confirmed.
        pub is_confirmed: bool,
        /// Onset.
        pub onset_date: Option<Date>,
        /// Worst reaction's severity.
        pub reaction_severity: Option<ReactionSeverity>,
        /// Reaction as written.
        pub reaction: Option<String>,
        /// Free text.
        pub comment: Option<String>,
    }
}

avro_enum! {
    /// The table of a withdrawn event.
    pub enum CorrectedType {
        /// encounter
        Encounter = "encounter",
        /// diagnosis
        Diagnosis = "diagnosis",
        /// lab_result
        LabResult = "lab_result",
        /// prescription
        Prescription = "prescription",
        /// checkup
        Checkup = "checkup",
        /// vaccination
        Vaccination = "vaccination",
        /// allergy
        Allergy = "allergy",
    }
}

avro_enum! {
    /// Why an event is withdrawn.
    pub enum CorrectionReason {
        /// The order or record was cancelled at the source.
        Cancelled = "cancelled",
        /// It was entered in error.
        EnteredInError = "entered_in_error",
    }
}

avro_record! {
    /// Withdraws the event whose id is this event's id (v3).
    pub struct Correction {
        /// Table of the withdrawn event.
        pub corrected_event_type: CorrectedType,
        /// Why.
        pub reason: CorrectionReason,
    }
}

/// The payload union; branch order is the schema's, and matches [`EventType`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Payload {
    /// Branch 0.
    Encounter(Encounter),
    /// Branch 1.
    Diagnosis(Diagnosis),
    /// Branch 2.
    LabResult(LabResult),
    /// Branch 3.
    Prescription(Prescription),
    /// Branch 4.
    Checkup(Checkup),
    /// Branch 5.
    Vaccination(Vaccination),
    /// Branch 6 (v3).
    Allergy(Allergy),
    /// Branch 7 (v3).
    Correction(Correction),
}

impl Payload {
    /// The event type this payload belongs to.
    pub fn event_type(&self) -> EventType {
        match self {
            Payload::Encounter(_) => EventType::Encounter,
            Payload::Diagnosis(_) => EventType::Diagnosis,
            Payload::LabResult(_) => EventType::LabResult,
            Payload::Prescription(_) => EventType::Prescription,
            Payload::Checkup(_) => EventType::Checkup,
            Payload::Vaccination(_) => EventType::Vaccination,
            Payload::Allergy(_) => EventType::Allergy,
            Payload::Correction(_) => EventType::Correction,
        }
    }

    /// Free-text comment, whichever the type.
    pub fn comment(&self) -> Option<&str> {
        match self {
            Payload::Encounter(p) => p.comment.as_deref(),
            Payload::Diagnosis(p) => p.comment.as_deref(),
            Payload::LabResult(p) => p.comment.as_deref(),
            Payload::Prescription(p) => p.comment.as_deref(),
            Payload::Checkup(p) => p.comment.as_deref(),
            Payload::Vaccination(p) => p.comment.as_deref(),
            Payload::Allergy(p) => p.comment.as_deref(),
            Payload::Correction(_) => None,
        }
    }
}

impl AvroCodec for Payload {
    fn encode(&self, out: &mut Vec<u8>) {
        let branch = EventType::ALL
            .iter()
            .position(|t| *t == self.event_type())
            .expect("every payload has an event type");
        put_long(out, branch as i64);
        match self {
            Payload::Encounter(p) => p.encode(out),
            Payload::Diagnosis(p) => p.encode(out),
            Payload::LabResult(p) => p.encode(out),
            Payload::Prescription(p) => p.encode(out),
            Payload::Checkup(p) => p.encode(out),
            Payload::Vaccination(p) => p.encode(out),
            Payload::Allergy(p) => p.encode(out),
            Payload::Correction(p) => p.encode(out),
        }
    }

    fn decode(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        Ok(
            match EventType::ALL[r.index(field, EventType::ALL.len())?] {
                EventType::Encounter => Payload::Encounter(AvroCodec::decode(r, field)?),
                EventType::Diagnosis => Payload::Diagnosis(AvroCodec::decode(r, field)?),
                EventType::LabResult => Payload::LabResult(AvroCodec::decode(r, field)?),
                EventType::Prescription => Payload::Prescription(AvroCodec::decode(r, field)?),
                EventType::Checkup => Payload::Checkup(AvroCodec::decode(r, field)?),
                EventType::Vaccination => Payload::Vaccination(AvroCodec::decode(r, field)?),
                EventType::Allergy => Payload::Allergy(AvroCodec::decode(r, field)?),
                EventType::Correction => Payload::Correction(AvroCodec::decode(r, field)?),
            },
        )
    }

    fn decode_into(&mut self, r: &mut Reader<'_>, field: &'static str) -> Result<(), DecodeError> {
        self.decode_sparing(r, field, &mut PayloadSpares::default())
    }
}

/// One payload of each type put aside by [`RawEvent::decode_sparing`]: a
/// stream mixes types, and a record of another type than the last is
/// decoded over the spare of its own type instead of a fresh one.
#[derive(Debug, Default)]
pub struct PayloadSpares([Option<Payload>; 8]);

impl Payload {
    fn branch(&self) -> usize {
        EventType::ALL
            .iter()
            .position(|t| *t == self.event_type())
            .expect("every payload has an event type")
    }

    fn decode_sparing(
        &mut self,
        r: &mut Reader<'_>,
        field: &'static str,
        spares: &mut PayloadSpares,
    ) -> Result<(), DecodeError> {
        let at = r.position();
        let branch = r.index(field, EventType::ALL.len())?;
        let old = self.branch();
        if branch != old {
            let spare = match spares.0[branch].take() {
                Some(p) => p,
                None => {
                    // The first of its type: decoded fresh, and done.
                    r.rewind(at);
                    let fresh = Payload::decode(r, field)?;
                    spares.0[old] = Some(std::mem::replace(self, fresh));
                    return Ok(());
                }
            };
            spares.0[old] = Some(std::mem::replace(self, spare));
        }
        match self {
            Payload::Encounter(p) => p.decode_into(r, field),
            Payload::Diagnosis(p) => p.decode_into(r, field),
            Payload::LabResult(p) => p.decode_into(r, field),
            Payload::Prescription(p) => p.decode_into(r, field),
            Payload::Checkup(p) => p.decode_into(r, field),
            Payload::Vaccination(p) => p.decode_into(r, field),
            Payload::Allergy(p) => p.decode_into(r, field),
            Payload::Correction(p) => p.decode_into(r, field),
        }
    }
}

/// A health event as a hub sends it (raw zone).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RawEvent {
    /// The hub's unique event id.
    pub event_id: String,
    /// Which payload this is.
    pub event_type: EventType,
    /// JIS X 0401 code of the sending hub.
    pub hub_prefecture: String,
    /// 10-digit medical institution code.
    pub facility_code: String,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// When the hub recorded it.
    pub recorded_at: Timestamp,
    /// Export format of the hub (v2).
    pub source_format: String,
    /// Identity block.
    pub patient: PatientIdentity,
    /// Clinical content.
    pub payload: Payload,
}

impl AvroCodec for RawEvent {
    fn encode(&self, out: &mut Vec<u8>) {
        self.event_id.encode(out);
        self.event_type.encode(out);
        self.hub_prefecture.encode(out);
        self.facility_code.encode(out);
        self.occurred_at.encode(out);
        self.recorded_at.encode(out);
        self.source_format.encode(out);
        self.patient.encode(out);
        self.payload.encode(out);
    }

    fn decode_into(&mut self, r: &mut Reader<'_>, _field: &'static str) -> Result<(), DecodeError> {
        self.decode_sparing(r, &mut PayloadSpares::default())
    }

    fn decode(r: &mut Reader<'_>, _field: &'static str) -> Result<Self, DecodeError> {
        let ev = RawEvent {
            event_id: AvroCodec::decode(r, "event_id")?,
            event_type: AvroCodec::decode(r, "event_type")?,
            hub_prefecture: AvroCodec::decode(r, "hub_prefecture")?,
            facility_code: AvroCodec::decode(r, "facility_code")?,
            occurred_at: AvroCodec::decode(r, "occurred_at")?,
            recorded_at: AvroCodec::decode(r, "recorded_at")?,
            source_format: AvroCodec::decode(r, "source_format")?,
            patient: AvroCodec::decode(r, "patient")?,
            payload: AvroCodec::decode(r, "payload")?,
        };
        ev.check_branch()?;
        Ok(ev)
    }
}

impl RawEvent {
    /// [`AvroCodec::decode_into`] with a spare payload of each type kept in
    /// `spares` (no allocation once each type has been seen). On error
    /// `self` must be decoded over again before it is used.
    pub fn decode_sparing(
        &mut self,
        r: &mut Reader<'_>,
        spares: &mut PayloadSpares,
    ) -> Result<(), DecodeError> {
        self.event_id.decode_into(r, "event_id")?;
        self.event_type.decode_into(r, "event_type")?;
        self.hub_prefecture.decode_into(r, "hub_prefecture")?;
        self.facility_code.decode_into(r, "facility_code")?;
        self.occurred_at.decode_into(r, "occurred_at")?;
        self.recorded_at.decode_into(r, "recorded_at")?;
        self.source_format.decode_into(r, "source_format")?;
        self.patient.decode_into(r, "patient")?;
        self.payload.decode_sparing(r, "payload", spares)?;
        self.check_branch()
    }

    /// The JSON converter derives the branch from event_type, so a
    /// mismatch means a foreign producer wrote the record: refuse it.
    fn check_branch(&self) -> Result<(), DecodeError> {
        if self.payload.event_type() != self.event_type {
            return Err(DecodeError::PayloadMismatch {
                expected: self.event_type.symbol(),
                found: self.payload.event_type().symbol(),
            });
        }
        Ok(())
    }
}

impl AvroRecord for RawEvent {
    const FULL_NAME: &'static str = "chitose.raw.RawEvent";
}
