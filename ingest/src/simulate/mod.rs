//! A seeded, reproducible generator of realistic raw events for the Kansai
//! Union hubs (synthetic: no real person's data).
//!
//! - A stable population: every patient has kanji and kana names, a birth
//!   date, sex, an address, postal code and phone in their prefecture, and
//!   most an insurance tuple. A share of them is also seen by a hub in a
//!   neighbouring prefecture under another hub-local id, so linkage across
//!   prefectures can be tested.
//! - Clinical content with realistic shapes: weighted ICD-10 codes,
//!   JLAC10-shaped lab codes with value distributions and units, YJ-shaped
//!   drugs, correlated 特定健診 measurements, vaccinations.
//! - A bad-data mode that replaces a share of the lines with every kind of
//!   malformed record in [`BadKind`], each labelled with the field path and
//!   reason the edge must give.
//!
//! Everything, including event times and ids, comes from the seed: the
//! same config gives the same bytes (a golden test holds it to that).
//! Pacing (`--rate`) belongs to the async shell, not here.

pub mod names;
pub mod ssmix2;

use chitose_schemas::codec::{Date, Timestamp};
use chitose_schemas::json::RejectReason;
use chitose_schemas::mynumber;
use chitose_schemas::raw::*;
use chitose_schemas::reference::{Municipality, Reference};
use chrono::NaiveDate;
use names::*;
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// The eight Kansai Union prefectures (JIS X 0401).
pub const KANSAI_UNION: [&str; 8] = ["25", "26", "27", "28", "29", "30", "31", "36"];

/// Relative weights of the six event types.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMix {
    /// encounter
    pub encounter: u32,
    /// diagnosis
    pub diagnosis: u32,
    /// lab_result
    pub lab_result: u32,
    /// prescription
    pub prescription: u32,
    /// checkup
    pub checkup: u32,
    /// vaccination
    pub vaccination: u32,
    /// allergy (contract v3; absent from older mix files: 0)
    #[serde(default)]
    pub allergy: u32,
}

impl Default for EventMix {
    fn default() -> Self {
        EventMix {
            encounter: 25,
            diagnosis: 20,
            lab_result: 30,
            prescription: 15,
            checkup: 5,
            vaccination: 5,
            allergy: 3,
        }
    }
}

impl EventMix {
    fn weights(&self) -> [u32; 8] {
        [
            self.encounter,
            self.diagnosis,
            self.lab_result,
            self.prescription,
            self.checkup,
            self.vaccination,
            self.allergy,
            // Corrections withdraw earlier events; the stream generator
            // makes none (the SS-MIX2 tree writer makes cancelled orders).
            0,
        ]
    }
}

/// Generator settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Seed of everything.
    pub seed: u64,
    /// Size of the population.
    pub patients: usize,
    /// Hubs to generate for (JIS X 0401 codes).
    pub prefectures: Vec<String>,
    /// Event-type mix.
    pub mix: EventMix,
    /// Share of patients also seen by a hub in a second prefecture.
    pub cross_prefecture_share: f64,
    /// Share of lines replaced by bad records (0 = none).
    pub bad_share: f64,
    /// First day events can happen on.
    pub start_date: NaiveDate,
    /// Number of days events spread over.
    pub days: u32,
    /// Generate only the events this hub (prefecture) sends; the population
    /// still spans every prefecture, so cross-prefecture patients appear.
    pub hub: Option<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1000,
            patients: 20_000,
            prefectures: KANSAI_UNION.iter().map(|s| s.to_string()).collect(),
            mix: EventMix::default(),
            cross_prefecture_share: 0.1,
            bad_share: 0.0,
            start_date: NaiveDate::from_ymd_opt(2025, 4, 1).expect("valid date"),
            days: 365,
            hub: None,
        }
    }
}

/// Why a config cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

impl SimConfig {
    /// Checks the settings; the message names the key.
    pub fn validate(&self, reference: &Reference) -> Result<(), ConfigError> {
        let e = |s: String| Err(ConfigError(s));
        if self.patients == 0 {
            return e("simulate.patients: expected at least 1, found 0".into());
        }
        if self.prefectures.is_empty() {
            return e("simulate.prefectures: expected at least one prefecture, found none".into());
        }
        for p in &self.prefectures {
            if reference.municipalities_of(p).next().is_none() {
                return e(format!(
                    "simulate.prefectures: expected Kansai Union codes ({}), found {p:?}",
                    KANSAI_UNION.join(", ")
                ));
            }
        }
        for (key, v) in [
            ("cross_prefecture_share", self.cross_prefecture_share),
            ("bad_share", self.bad_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return e(format!(
                    "simulate.{key}: expected a share from 0 to 1, found {v}"
                ));
            }
        }
        if self.mix.weights().iter().all(|w| *w == 0) {
            return e("simulate.mix: expected at least one non-zero weight, found all zero".into());
        }
        if let Some(h) = &self.hub
            && !self.prefectures.contains(h)
        {
            return e(format!(
                "simulate.hub: expected one of simulate.prefectures, found {h:?}"
            ));
        }
        if self.days == 0 {
            return e("simulate.days: expected at least 1, found 0".into());
        }
        Ok(())
    }
}

/// A hub's view of a patient.
#[derive(Debug, Clone, PartialEq)]
pub struct HubRecord {
    /// Prefecture of the hub.
    pub prefecture: String,
    /// The patient's id at that hub.
    pub local_patient_id: String,
    /// Facilities of that hub the patient visits.
    pub facility_code: String,
}

/// One synthetic person.
#[derive(Debug, Clone, PartialEq)]
pub struct Patient {
    /// Identity as the home hub knows it (local id of the home hub).
    pub identity: PatientIdentity,
    /// Hubs that see this patient: home first.
    pub hubs: Vec<HubRecord>,
    /// Age on the start date (drives content).
    pub age: u32,
}

/// Kinds of malformed record in the bad-data mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BadKind {
    /// JSON cut off mid-record.
    TruncatedJson,
    /// Bytes that are not UTF-8 inside a string.
    InvalidUtf8,
    /// A JSON array instead of an object.
    NotAnObject,
    /// A number where a date string belongs.
    WrongType,
    /// A numeric lab value sent as a string.
    NumberAsString,
    /// `event_id` missing.
    MissingField,
    /// `facility_code` null.
    NullRequired,
    /// A field the schema does not have.
    UnknownField,
    /// `event_type` not one of the six.
    UnknownEventType,
    /// `sex` not one of the symbols.
    UnknownSymbol,
    /// ICD-10 code of the wrong shape.
    InvalidIcd10,
    /// JLAC10 code of 16 characters.
    InvalidJlac10,
    /// YJ code of 11 characters.
    InvalidYj,
    /// A My Number in the free-text comment (printed 4-4-4).
    MyNumberInComment,
    /// A My Number as the hub-local id.
    MyNumberAsLocalId,
    /// A My Number in full-width digits in the address.
    MyNumberFullWidth,
    /// A record over the size limit.
    Oversized,
    /// A name over its length limit.
    TooLongField,
    /// A birth date that does not exist (Feb 30).
    ImpossibleDate,
    /// A timestamp without an offset.
    TimestampWithoutOffset,
    /// An integer over 32 bits.
    IntOverflow,
    /// An event in the future.
    FutureEvent,
    /// An event before the patient's birth.
    EventBeforeBirth,
    /// Another prefecture's record sent through this hub.
    WrongPrefecture,
    /// A lab result with neither a numeric nor a text value.
    EmptyLabResult,
}

impl BadKind {
    /// Every kind, in the order the generator cycles through them.
    pub const ALL: &'static [BadKind] = &[
        BadKind::TruncatedJson,
        BadKind::InvalidUtf8,
        BadKind::NotAnObject,
        BadKind::WrongType,
        BadKind::NumberAsString,
        BadKind::MissingField,
        BadKind::NullRequired,
        BadKind::UnknownField,
        BadKind::UnknownEventType,
        BadKind::UnknownSymbol,
        BadKind::InvalidIcd10,
        BadKind::InvalidJlac10,
        BadKind::InvalidYj,
        BadKind::MyNumberInComment,
        BadKind::MyNumberAsLocalId,
        BadKind::MyNumberFullWidth,
        BadKind::Oversized,
        BadKind::TooLongField,
        BadKind::ImpossibleDate,
        BadKind::TimestampWithoutOffset,
        BadKind::IntOverflow,
        BadKind::FutureEvent,
        BadKind::EventBeforeBirth,
        BadKind::WrongPrefecture,
        BadKind::EmptyLabResult,
    ];

    /// The reason and field path the edge must reject it with.
    pub fn expected(self) -> (RejectReason, &'static str) {
        use RejectReason as R;
        match self {
            BadKind::TruncatedJson => (R::Malformed, "$"),
            BadKind::InvalidUtf8 => (R::Malformed, "$"),
            BadKind::NotAnObject => (R::WrongType, "$"),
            BadKind::WrongType => (R::WrongType, "patient.birth_date"),
            BadKind::NumberAsString => (R::WrongType, "payload.value_numeric"),
            BadKind::MissingField => (R::MissingField, "event_id"),
            BadKind::NullRequired => (R::WrongType, "facility_code"),
            BadKind::UnknownField => (R::UnknownField, "patient.blood_type"),
            BadKind::UnknownEventType => (R::UnknownSymbol, "event_type"),
            BadKind::UnknownSymbol => (R::UnknownSymbol, "patient.sex"),
            BadKind::InvalidIcd10 => (R::InvalidCode, "payload.icd10_code"),
            BadKind::InvalidJlac10 => (R::InvalidCode, "payload.jlac10_code"),
            BadKind::InvalidYj => (R::InvalidCode, "payload.yj_code"),
            BadKind::MyNumberInComment => (R::MyNumber, "payload.comment"),
            BadKind::MyNumberAsLocalId => (R::MyNumber, "patient.local_patient_id"),
            BadKind::MyNumberFullWidth => (R::MyNumber, "patient.address_line"),
            BadKind::Oversized => (R::TooLarge, "$"),
            BadKind::TooLongField => (R::TooLong, "patient.name_kanji"),
            BadKind::ImpossibleDate => (R::InvalidDate, "patient.birth_date"),
            BadKind::TimestampWithoutOffset => (R::InvalidDate, "occurred_at"),
            BadKind::IntOverflow => (R::OutOfRange, "payload.days_supply"),
            BadKind::FutureEvent => (R::Semantic, "occurred_at"),
            BadKind::EventBeforeBirth => (R::Semantic, "occurred_at"),
            BadKind::WrongPrefecture => (R::Semantic, "hub_prefecture"),
            BadKind::EmptyLabResult => (R::Semantic, "payload.value_numeric"),
        }
    }

    /// True when the record breaks the schema itself, so the JSON Schema of
    /// the JSON form refuses it too (not JSON at all, a My Number, the
    /// record size and the semantic checks are beyond JSON Schema).
    pub fn breaks_schema(self) -> bool {
        !matches!(
            self.expected().0,
            RejectReason::Malformed
                | RejectReason::MyNumber
                | RejectReason::TooLarge
                | RejectReason::Semantic
        )
    }

    /// The event type a corruption needs, if any.
    fn needs(self) -> Option<EventType> {
        match self {
            BadKind::NumberAsString | BadKind::InvalidJlac10 | BadKind::EmptyLabResult => {
                Some(EventType::LabResult)
            }
            BadKind::InvalidIcd10 | BadKind::MyNumberInComment => Some(EventType::Diagnosis),
            BadKind::InvalidYj | BadKind::IntOverflow => Some(EventType::Prescription),
            _ => None,
        }
    }
}

/// What a generated line is supposed to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A valid event with this id.
    Good {
        /// The event id.
        event_id: String,
    },
    /// A malformed record of this kind.
    Bad(BadKind),
}

/// One NDJSON line (without the newline) and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedLine {
    /// The hub that sends it.
    pub hub_prefecture: String,
    /// The bytes, as a hub would export them.
    pub bytes: Vec<u8>,
    /// Good or bad, and how.
    pub verdict: Verdict,
}

/// The generator.
#[derive(Debug, Clone)]
pub struct Generator {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    patients: Vec<Patient>,
    patient_weights: WeightedIndex<u32>,
    type_weights: WeightedIndex<u32>,
    diagnosis_weights: WeightedIndex<u32>,
    lab_weights: WeightedIndex<u32>,
    drug_weights: WeightedIndex<u32>,
    vaccine_weights: WeightedIndex<u32>,
    start_ms: i64,
    seq: u64,
    bad_seq: usize,
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, list: &'a [T]) -> &'a T {
    list.choose(rng).expect("non-empty list")
}

fn digits(rng: &mut ChaCha8Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// 保険者番号 check digit: weights 2,1,2,… from the right, digit sums.
pub fn insurer_check_digit(body: &str) -> u8 {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let p = u32::from(b - b'0') * if i % 2 == 0 { 2 } else { 1 };
            p / 10 + p % 10
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

fn normal(rng: &mut ChaCha8Rng, mean: f64, sd: f64) -> f64 {
    // Box–Muller; enough for synthetic data and stable across platforms.
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    mean + sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

fn uuid_like(rng: &mut ChaCha8Rng) -> String {
    let a: u128 = rng.random();
    let h = format!("{a:032x}");
    // RFC 9562 version 4 layout: version nibble 4, variant bits 10xx.
    let variant = ['8', '9', 'a', 'b'][(a >> 126) as usize & 3];
    format!(
        "{}-{}-4{}-{variant}{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

impl Generator {
    /// Builds the population; panics only on a config [`SimConfig::validate`] refuses.
    pub fn new(cfg: SimConfig) -> Result<Self, ConfigError> {
        let reference = Reference::load().map_err(|e| ConfigError(e.to_string()))?;
        cfg.validate(&reference)?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut patients = Vec::with_capacity(cfg.patients);
        for i in 0..cfg.patients {
            patients.push(Self::make_patient(&cfg, &reference, &mut rng, i));
        }
        // A few patients visit often (chronic care), most rarely.
        let patient_weights = WeightedIndex::new(patients.iter().map(|p| {
            if cfg
                .hub
                .as_ref()
                .is_some_and(|h| p.hubs.iter().all(|x| &x.prefecture != h))
            {
                0
            } else if p.age >= 65 {
                6
            } else if p.age >= 40 {
                3
            } else {
                1
            }
        }))
        .expect("positive weights");
        let start_ms = Timestamp::parse(&format!("{}T00:00:00+09:00", cfg.start_date))
            .expect("valid start")
            .0;
        Ok(Generator {
            type_weights: WeightedIndex::new(cfg.mix.weights()).expect("validated mix"),
            diagnosis_weights: WeightedIndex::new(DIAGNOSES.iter().map(|d| d.2)).expect("weights"),
            lab_weights: WeightedIndex::new(LAB_TESTS.iter().map(|t| t.weight)).expect("weights"),
            drug_weights: WeightedIndex::new(DRUGS.iter().map(|d| d.6)).expect("weights"),
            vaccine_weights: WeightedIndex::new(VACCINES.iter().map(|v| v.3)).expect("weights"),
            start_ms,
            cfg,
            rng,
            patients,
            patient_weights,
            seq: 0,
            bad_seq: 0,
        })
    }

    /// The population.
    pub fn patients(&self) -> &[Patient] {
        &self.patients
    }

    /// The config it runs with.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    fn make_patient(cfg: &SimConfig, r: &Reference, rng: &mut ChaCha8Rng, i: usize) -> Patient {
        let home = pick(rng, &cfg.prefectures).clone();
        let munis: Vec<&Municipality> = r.municipalities_of(&home).collect();
        let muni = *pick(rng, &munis);
        let sex = if rng.random_bool(0.5) {
            Sex::Male
        } else {
            Sex::Female
        };
        let (sk, skana) = *pick(rng, SURNAMES);
        let (gk, gkana) = *pick(
            rng,
            if sex == Sex::Male {
                GIVEN_MALE
            } else {
                GIVEN_FEMALE
            },
        );
        let age = normal(rng, 55.0, 22.0).clamp(0.0, 104.0) as u32;
        let start = cfg.start_date;
        let birth = start
            - chrono::Days::new(
                u64::from(age) * 365 + u64::from(age / 4) + rng.random_range(0..365u64),
            );
        let postal = format!("{}-{}", pick(rng, &muni.postal_prefixes), digits(rng, 4));
        let mut address = format!(
            "{}{}丁目{}番{}号",
            pick(rng, TOWNS),
            rng.random_range(1..=5),
            rng.random_range(1..=30),
            rng.random_range(1..=20)
        );
        if rng.random_bool(0.3) {
            address.push_str(&format!(
                " {}{}{}",
                pick(rng, SURNAMES).0,
                pick(rng, BUILDINGS),
                rng.random_range(101..=905)
            ));
        }
        let phone = if rng.random_bool(0.6) {
            format!(
                "{}-{}-{}",
                pick(rng, &["090", "080", "070"]),
                digits(rng, 4),
                digits(rng, 4)
            )
        } else {
            let area = &muni.phone_area;
            let local_len = 10 - area.len();
            let d = digits(rng, local_len);
            let split = local_len - 4;
            format!("{area}-{}-{}", &d[..split], &d[split..])
        };
        let email = rng.random_bool(0.3).then(|| {
            let user: String = (0..8)
                .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
                .collect();
            format!("{user}{}@example.jp", rng.random_range(1..100))
        });
        let insurance = rng.random_bool(0.92).then(|| {
            let (insurer_number, symbol) = if age >= 75 {
                let body = format!("39{home}{}", digits(rng, 3));
                (format!("{body}{}", insurer_check_digit(&body)), None)
            } else if rng.random_bool(0.25) {
                // 国民健康保険: 6 digits, symbol often names the ward.
                let body = format!("{home}{}", digits(rng, 3));
                (
                    format!("{body}{}", insurer_check_digit(&body)),
                    Some(format!("{}{}", muni.name_ja, digits(rng, 2))),
                )
            } else {
                let law = *pick(rng, &["01", "06", "31", "32", "34"]);
                let body = format!("{law}{home}{}", digits(rng, 3));
                (format!("{body}{}", insurer_check_digit(&body)), {
                    let n = rng.random_range(3..=8);
                    Some(digits(rng, n))
                })
            };
            Insurance {
                insurer_number,
                insured_symbol: symbol,
                insured_number: {
                    let n = rng.random_range(4..=8);
                    digits(rng, n)
                },
                insured_branch: Some(format!("{:02}", rng.random_range(0..4))),
            }
        });
        let facility = |rng: &mut ChaCha8Rng, pref: &str| {
            // 2 digits prefecture, 1 score table (1 = 医科), 7 digits.
            format!("{pref}1{}", digits(rng, 7))
        };
        let mut hubs = vec![HubRecord {
            prefecture: home.clone(),
            local_patient_id: format!("{}{:07}", rng.random_range(10..99), i),
            facility_code: facility(rng, &home),
        }];
        if cfg.prefectures.len() > 1 && rng.random_bool(cfg.cross_prefecture_share) {
            let others: Vec<&String> = cfg.prefectures.iter().filter(|p| **p != home).collect();
            let second = (*pick(rng, &others)).clone();
            hubs.push(HubRecord {
                local_patient_id: format!("K{}{:06}", rng.random_range(100..999), i),
                facility_code: facility(rng, &second),
                prefecture: second,
            });
        }
        Patient {
            identity: PatientIdentity {
                local_patient_id: hubs[0].local_patient_id.clone(),
                name_kanji: Some(format!("{sk}\u{3000}{gk}")),
                name_kana: Some(format!("{skana}\u{3000}{gkana}")),
                birth_date: Date::from_naive(birth),
                sex,
                postal_code: Some(postal),
                municipality_code: Some(muni.code.clone()),
                address_line: Some(address),
                phone: Some(phone),
                email,
                insurance,
            },
            hubs,
            age,
        }
    }

    /// The next valid event.
    pub fn next_event(&mut self) -> RawEvent {
        let t = EventType::ALL[self.type_weights.sample(&mut self.rng)];
        self.event_of(t)
    }

    fn event_of(&mut self, event_type: EventType) -> RawEvent {
        self.seq += 1;
        let pi = self.patient_weights.sample(&mut self.rng);
        let hub_i = match &self.cfg.hub {
            Some(h) => self.patients[pi]
                .hubs
                .iter()
                .position(|x| &x.prefecture == h)
                .expect("patients are drawn among the hub's"),
            None if self.patients[pi].hubs.len() > 1 && self.rng.random_bool(0.35) => 1,
            None => 0,
        };
        let p = &self.patients[pi];
        let hub = p.hubs[hub_i].clone();
        let mut identity = p.identity.clone();
        identity.local_patient_id = hub.local_patient_id.clone();
        let age = p.age;
        let sex = p.identity.sex;
        // Events fall in working hours, Japan time.
        let day = self.rng.random_range(0..i64::from(self.cfg.days));
        let occurred = Timestamp(
            self.start_ms
                + day * 86_400_000
                + self.rng.random_range(8 * 3_600_000..19 * 3_600_000i64),
        );
        let recorded = Timestamp(occurred.0 + self.rng.random_range(60_000..6 * 3_600_000i64));
        let (name, phone) = (identity.name_kanji.clone(), identity.phone.clone());
        let comment = self.comment(name.as_deref(), phone.as_deref());
        let payload = self.payload(event_type, age, sex, identity.birth_date, occurred, comment);
        RawEvent {
            event_id: uuid_like(&mut self.rng),
            event_type,
            hub_prefecture: hub.prefecture,
            facility_code: hub.facility_code,
            occurred_at: occurred,
            recorded_at: recorded,
            source_format: "simulate".into(),
            patient: identity,
            payload,
        }
    }

    fn comment(&mut self, name: Option<&str>, phone: Option<&str>) -> Option<String> {
        let r: f64 = self.rng.random();
        if r < 0.04 {
            // Identifiers hide in free text: the transform must drop it.
            Some(format!(
                "{}様より電話あり 連絡先{}",
                name.unwrap_or("本人"),
                phone.unwrap_or("不明")
            ))
        } else if r < 0.2 {
            Some(pick(&mut self.rng, COMMENTS).to_string())
        } else {
            None
        }
    }

    fn payload(
        &mut self,
        t: EventType,
        age: u32,
        sex: Sex,
        birth: Date,
        at: Timestamp,
        comment: Option<String>,
    ) -> Payload {
        let idx = self.seq;
        let rng = &mut self.rng;
        match t {
            EventType::Encounter => {
                let class = *pick(
                    rng,
                    &[
                        EncounterClass::Outpatient,
                        EncounterClass::Outpatient,
                        EncounterClass::Outpatient,
                        EncounterClass::Outpatient,
                        EncounterClass::Outpatient,
                        EncounterClass::Outpatient,
                        EncounterClass::Outpatient,
                        EncounterClass::Inpatient,
                        EncounterClass::Emergency,
                        EncounterClass::HomeVisit,
                    ],
                );
                let ended = match class {
                    EncounterClass::Inpatient => rng
                        .random_bool(0.9)
                        .then(|| Timestamp(at.0 + rng.random_range(1..30i64) * 86_400_000)),
                    _ => Some(Timestamp(at.0 + rng.random_range(10..180i64) * 60_000)),
                };
                Payload::Encounter(Encounter {
                    encounter_id: format!("E{idx:010}"),
                    encounter_class: class,
                    department_code: Some(
                        pick(rng, &["01", "02", "03", "10", "13", "22", "24", "27"]).to_string(),
                    ),
                    ended_at: ended,
                    attending_physician_id: Some(format!("D{}", digits(rng, 5))),
                    comment,
                })
            }
            EventType::Diagnosis => {
                let (code, name, _) = DIAGNOSES[self.diagnosis_weights.sample(rng)];
                let onset_days = rng.random_range(0..3650);
                let onset = Date(
                    (at.jst_date().map(Date::from_naive).expect("in range").0 - onset_days)
                        .max(birth.0),
                );
                // One in ten is coded the JP-CLINS way: a MEDIS management
                // number only, no ICD-10 (numbers shaped, not the master's).
                let medis_only = rng.random_bool(0.1);
                Payload::Diagnosis(Diagnosis {
                    icd10_code: (!medis_only).then(|| code.into()),
                    medis_disease_code: (!medis_only).then(|| medis_shaped(code)),
                    medis_disease_number: medis_only.then(|| format!("2{}", digits(rng, 7))),
                    disease_name: Some(name.into()),
                    is_primary: rng.random_bool(0.4),
                    is_suspected: rng.random_bool(0.1),
                    onset_date: rng.random_bool(0.7).then_some(onset),
                    outcome: *pick(
                        rng,
                        &[
                            DiagnosisOutcome::Continuing,
                            DiagnosisOutcome::Continuing,
                            DiagnosisOutcome::Continuing,
                            DiagnosisOutcome::Cured,
                        ],
                    ),
                    comment,
                })
            }
            EventType::LabResult => {
                if rng.random_bool(0.08) {
                    let v = *pick(rng, &["(-)", "(-)", "(-)", "(±)", "(+)", "(2+)"]);
                    return Payload::LabResult(LabResult {
                        specimen_id: Some(format!("S{}", digits(rng, 9))),
                        jlac10_code: URINE_PROTEIN.0.into(),
                        test_name: URINE_PROTEIN.1.into(),
                        value_numeric: None,
                        value_text: Some(v.into()),
                        unit: None,
                        reference_low: None,
                        reference_high: None,
                        abnormal_flag: Some(if v == "(-)" || v == "(±)" {
                            AbnormalFlag::Normal
                        } else {
                            AbnormalFlag::Abnormal
                        }),
                        comment,
                    });
                }
                let t = &LAB_TESTS[self.lab_weights.sample(rng)];
                let raw = normal(rng, t.mean, t.sd);
                let v = round(
                    if t.mean < t.sd {
                        raw.abs()
                    } else {
                        raw.max(t.mean * 0.2)
                    },
                    t.decimals,
                );
                let flag = if v < t.low {
                    AbnormalFlag::Low
                } else if v > t.high * 2.0 {
                    AbnormalFlag::CriticalHigh
                } else if v > t.high {
                    AbnormalFlag::High
                } else {
                    AbnormalFlag::Normal
                };
                Payload::LabResult(LabResult {
                    specimen_id: Some(format!("S{}", digits(rng, 9))),
                    jlac10_code: t.jlac10.into(),
                    test_name: t.name.into(),
                    value_numeric: Some(v),
                    value_text: None,
                    unit: Some(t.unit.into()),
                    reference_low: Some(t.low),
                    reference_high: Some(t.high),
                    abnormal_flag: Some(flag),
                    comment,
                })
            }
            EventType::Prescription => {
                let (yj, name, unit, dose, days, route, _) = DRUGS[self.drug_weights.sample(rng)];
                // One in ten coded in HOT only, as 電子処方箋 may (HOT9
                // shaped, not the master's).
                let hot_only = rng.random_bool(0.1);
                Payload::Prescription(Prescription {
                    prescription_id: Some(format!("R{}", digits(rng, 10))),
                    yj_code: (!hot_only).then(|| yj.into()),
                    hot_code: hot_only.then(|| digits(rng, 9)),
                    generic_name_code: None,
                    drug_name: Some(name.into()),
                    dose_per_day: Some(dose),
                    dose_unit: Some(unit.into()),
                    days_supply: Some(days * rng.random_range(1..=3)),
                    route: Route::from_symbol(route).expect("known route"),
                    prescriber_id: Some(format!("D{}", digits(rng, 5))),
                    comment,
                })
            }
            EventType::Checkup => Payload::Checkup(checkup(rng, age, sex, comment)),
            EventType::Vaccination => {
                let (code, name, doses, _) = VACCINES[self.vaccine_weights.sample(rng)];
                Payload::Vaccination(Vaccination {
                    vaccine_code: code.into(),
                    vaccine_name: Some(name.into()),
                    lot_number: Some(format!(
                        "{}{}",
                        pick(rng, &["A", "B", "H", "K"]),
                        digits(rng, 3)
                    )),
                    dose_number: Some(rng.random_range(1..=doses)),
                    site: Some(*pick(
                        rng,
                        &[
                            InjectionSite::LeftArm,
                            InjectionSite::LeftArm,
                            InjectionSite::RightArm,
                        ],
                    )),
                    performer_id: Some(format!("N{}", digits(rng, 5))),
                    comment,
                })
            }
            EventType::Correction => Payload::Correction(Correction {
                corrected_event_type: CorrectedType::Prescription,
                reason: CorrectionReason::Cancelled,
            }),
            EventType::Allergy => {
                let (system, code, name, category) =
                    ALLERGENS[rng.random_range(0..ALLERGENS.len())];
                let onset_days = rng.random_range(0..7300);
                let onset = Date(
                    (at.jst_date().map(Date::from_naive).expect("in range").0 - onset_days)
                        .max(birth.0),
                );
                Payload::Allergy(Allergy {
                    allergy_id: Some(format!("A{}", digits(rng, 9))),
                    substance_system: AllergenSystem::from_symbol(system).expect("known system"),
                    substance_code: Some(code.into()),
                    substance_name: Some(name.into()),
                    category: AllergyCategory::from_symbol(category),
                    criticality: Some(*pick(
                        rng,
                        &[
                            AllergyCriticality::Low,
                            AllergyCriticality::Low,
                            AllergyCriticality::High,
                        ],
                    )),
                    clinical_status: AllergyStatus::Active,
                    is_confirmed: rng.random_bool(0.7),
                    onset_date: rng.random_bool(0.5).then_some(onset),
                    reaction_severity: rng.random_bool(0.6).then(|| {
                        *pick(
                            rng,
                            &[
                                ReactionSeverity::Mild,
                                ReactionSeverity::Moderate,
                                ReactionSeverity::Severe,
                            ],
                        )
                    }),
                    reaction: None,
                    comment,
                })
            }
        }
    }

    /// The next NDJSON line: a valid event, or with probability
    /// `bad_share` a malformed record (kinds in turn, so all appear).
    pub fn next_line(&mut self) -> GeneratedLine {
        if self.cfg.bad_share > 0.0 && self.rng.random_bool(self.cfg.bad_share) {
            let kind = BadKind::ALL[self.bad_seq % BadKind::ALL.len()];
            self.bad_seq += 1;
            return self.bad_line(kind);
        }
        let ev = self.next_event();
        GeneratedLine {
            hub_prefecture: ev.hub_prefecture.clone(),
            bytes: serde_json::to_vec(&ev).expect("events serialize"),
            verdict: Verdict::Good {
                event_id: ev.event_id,
            },
        }
    }

    /// A malformed line of one kind.
    pub fn bad_line(&mut self, kind: BadKind) -> GeneratedLine {
        let ev = match kind.needs() {
            Some(t) => self.event_of(t),
            None => self.next_event(),
        };
        let hub = ev.hub_prefecture.clone();
        let mut v = serde_json::to_value(&ev).expect("events serialize");
        let set = |v: &mut Value, path: &[&str], x: Value| {
            let mut cur = v;
            for p in &path[..path.len() - 1] {
                cur = cur.get_mut(*p).expect("path exists");
            }
            cur[path[path.len() - 1]] = x;
        };
        let my_number = {
            let mut d = [0u8; 11];
            for x in d.iter_mut() {
                *x = self.rng.random_range(0..10);
            }
            d[0] = self.rng.random_range(1..10);
            mynumber::complete(&d)
        };
        let bytes = match kind {
            BadKind::TruncatedJson => {
                let b = serde_json::to_vec(&v).expect("serialize");
                b[..b.len() / 2].to_vec()
            }
            BadKind::InvalidUtf8 => {
                let b = serde_json::to_vec(&v).expect("serialize");
                let s = String::from_utf8(b).expect("utf8");
                let at = s.find("\"name_kanji\":\"").map_or(1, |i| i + 14);
                let mut out = s.as_bytes()[..at].to_vec();
                out.extend_from_slice(&[0xff, 0xfe]);
                out.extend_from_slice(&s.as_bytes()[at..]);
                out
            }
            BadKind::NotAnObject => serde_json::to_vec(&Value::Array(vec![v])).expect("serialize"),
            other => {
                match other {
                    BadKind::WrongType => {
                        set(&mut v, &["patient", "birth_date"], Value::from(19_800_101))
                    }
                    BadKind::NumberAsString => {
                        set(&mut v, &["payload", "value_numeric"], Value::from("5.8"))
                    }
                    BadKind::MissingField => {
                        v.as_object_mut().expect("object").remove("event_id");
                    }
                    BadKind::NullRequired => set(&mut v, &["facility_code"], Value::Null),
                    BadKind::UnknownField => {
                        set(&mut v, &["patient", "blood_type"], Value::from("A"))
                    }
                    BadKind::UnknownEventType => set(&mut v, &["event_type"], Value::from("xray")),
                    BadKind::UnknownSymbol => set(&mut v, &["patient", "sex"], Value::from("M")),
                    BadKind::InvalidIcd10 => {
                        set(&mut v, &["payload", "icd10_code"], Value::from("E1"))
                    }
                    BadKind::InvalidJlac10 => set(
                        &mut v,
                        &["payload", "jlac10_code"],
                        Value::from("3D04600000190620"),
                    ),
                    BadKind::InvalidYj => {
                        set(&mut v, &["payload", "yj_code"], Value::from("2171022F102"))
                    }
                    BadKind::MyNumberInComment => set(
                        &mut v,
                        &["payload", "comment"],
                        Value::from(format!(
                            "個人番号 {} {} {} 確認済",
                            &my_number[..4],
                            &my_number[4..8],
                            &my_number[8..]
                        )),
                    ),
                    BadKind::MyNumberAsLocalId => set(
                        &mut v,
                        &["patient", "local_patient_id"],
                        Value::from(my_number.clone()),
                    ),
                    BadKind::MyNumberFullWidth => {
                        let wide: String = my_number
                            .chars()
                            .map(|c| {
                                char::from_u32(c as u32 - '0' as u32 + 0xFF10)
                                    .expect("full-width digit")
                            })
                            .collect();
                        set(
                            &mut v,
                            &["patient", "address_line"],
                            Value::from(format!("本町1丁目 {wide}")),
                        )
                    }
                    BadKind::Oversized => set(
                        &mut v,
                        &["patient", "address_line"],
                        Value::from("あ".repeat(30_000)),
                    ),
                    BadKind::TooLongField => set(
                        &mut v,
                        &["patient", "name_kanji"],
                        Value::from("山".repeat(500)),
                    ),
                    BadKind::ImpossibleDate => set(
                        &mut v,
                        &["patient", "birth_date"],
                        Value::from("1980-02-30"),
                    ),
                    BadKind::TimestampWithoutOffset => {
                        set(&mut v, &["occurred_at"], Value::from("2025-05-01T10:00:00"))
                    }
                    BadKind::IntOverflow => set(
                        &mut v,
                        &["payload", "days_supply"],
                        Value::from(99_999_999_999i64),
                    ),
                    BadKind::FutureEvent => set(
                        &mut v,
                        &["occurred_at"],
                        Value::from("2099-01-01T10:00:00+09:00"),
                    ),
                    BadKind::EventBeforeBirth => set(
                        &mut v,
                        &["occurred_at"],
                        Value::from("1889-06-01T10:00:00+09:00"),
                    ),
                    BadKind::WrongPrefecture => {
                        // Another prefecture's record, sent through this hub.
                        let other = KANSAI_UNION
                            .iter()
                            .find(|p| **p != hub)
                            .expect("eight prefectures");
                        set(&mut v, &["hub_prefecture"], Value::from(*other));
                    }
                    BadKind::EmptyLabResult => {
                        set(&mut v, &["payload", "value_numeric"], Value::Null);
                        set(&mut v, &["payload", "value_text"], Value::Null);
                    }
                    _ => unreachable!("handled above"),
                }
                serde_json::to_vec(&v).expect("serialize")
            }
        };
        GeneratedLine {
            hub_prefecture: hub,
            bytes,
            verdict: Verdict::Bad(kind),
        }
    }
}

/// A stable 4-character MEDIS-shaped exchange code for an ICD-10 code
/// (synthetic: the real MEDIS master is licensed separately).
fn medis_shaped(icd10: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";
    let mut h: u32 = 2166136261;
    for b in icd10.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(16777619);
    }
    (0..4)
        .map(|i| char::from(ALPHABET[((h >> (i * 8)) % ALPHABET.len() as u32) as usize]))
        .collect()
}

fn checkup(rng: &mut ChaCha8Rng, age: u32, sex: Sex, comment: Option<String>) -> Checkup {
    let male = sex == Sex::Male;
    let height = round(normal(rng, if male { 170.0 } else { 157.0 }, 6.0), 1);
    let bmi = normal(rng, if male { 24.0 } else { 22.0 }, 3.5).clamp(14.0, 45.0);
    let weight = round(bmi * (height / 100.0).powi(2), 1);
    let bmi = round(weight / (height / 100.0).powi(2), 1);
    let waist = round(
        bmi * 3.3 + normal(rng, 5.0, 4.0) + if male { 3.0 } else { 0.0 },
        1,
    );
    let sbp = round(
        100.0 + 0.5 * f64::from(age) + (bmi - 22.0) * 1.5 + normal(rng, 0.0, 13.0),
        0,
    );
    let dbp = round(sbp * 0.62 + normal(rng, 0.0, 7.0), 0);
    let glucose = round(
        (85.0 + (bmi - 22.0) * 2.0 + f64::from(age) * 0.2 + normal(rng, 0.0, 15.0)).max(60.0),
        0,
    );
    let hba1c = round(3.3 + glucose * 0.022 + normal(rng, 0.0, 0.25), 1);
    let tg = round(
        (normal(rng, 4.7, 0.5).exp() + (bmi - 22.0) * 5.0).max(25.0),
        0,
    );
    let hdl = round(
        (normal(rng, if male { 55.0 } else { 65.0 }, 13.0) - (bmi - 22.0)).max(20.0),
        0,
    );
    let ldl = round(normal(rng, 122.0, 30.0).max(40.0), 0);
    let alt = round((normal(rng, 2.9, 0.45).exp() + (bmi - 22.0)).max(5.0), 0);
    let ast = round((alt * 0.7 + normal(rng, 8.0, 4.0)).max(8.0), 0);
    let ggt = round(
        normal(rng, 3.3, 0.6).exp() * if male { 1.5 } else { 1.0 },
        0,
    );
    let mut maybe = |v: f64| rng.random_bool(0.96).then_some(v);
    let c = Checkup {
        checkup_id: None,
        height_cm: Some(height),
        weight_kg: Some(weight),
        bmi: Some(bmi),
        waist_cm: maybe(waist),
        systolic_bp: Some(sbp),
        diastolic_bp: Some(dbp),
        triglycerides_mg_dl: maybe(tg),
        hdl_mg_dl: maybe(hdl),
        ldl_mg_dl: maybe(ldl),
        ast_u_l: maybe(ast),
        alt_u_l: maybe(alt),
        ggt_u_l: maybe(ggt),
        fasting_glucose_mg_dl: maybe(glucose),
        hba1c_percent: maybe(hba1c),
        urine_glucose: None,
        urine_protein: None,
        smoker: None,
        on_antihypertensives: None,
        on_diabetes_medication: None,
        on_lipid_medication: None,
        comment,
    };
    let dip = |rng: &mut ChaCha8Rng, p_pos: f64| {
        Some(if rng.random_bool(p_pos) {
            *pick(
                rng,
                &[
                    UrineDipstick::Trace,
                    UrineDipstick::Plus1,
                    UrineDipstick::Plus2,
                ],
            )
        } else {
            UrineDipstick::Negative
        })
    };
    Checkup {
        checkup_id: Some(format!("H{}", digits(rng, 10))),
        urine_glucose: dip(rng, if glucose >= 126.0 { 0.4 } else { 0.02 }),
        urine_protein: dip(rng, 0.06),
        smoker: Some(rng.random_bool(if male { 0.27 } else { 0.07 })),
        on_antihypertensives: Some(sbp >= 140.0 && rng.random_bool(0.6)),
        on_diabetes_medication: Some(hba1c >= 6.5 && rng.random_bool(0.6)),
        on_lipid_medication: Some(ldl >= 140.0 && rng.random_bool(0.4)),
        ..c
    }
}
