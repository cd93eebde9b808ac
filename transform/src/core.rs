//! The pure transform: raw message bytes + source coordinates → one
//! pseudonymized record (SOE bytes) and its key. No Kafka, no clock: the
//! caller passes `now`, so the same input, keys and time give the same
//! bytes.

use crate::fields::{Kind, Leaf, Small, Val};
use crate::keys::KeyRing;
use crate::plan::{Added, IcdColumn, Slot, Source, TablePlan};
use crate::policy::{Basis, IcdLevel, Policy, PolicyError, Trunc};
use crate::pseudonym;
use chitose_schemas::RawCodec;
use chitose_schemas::catalog::SchemaStore;
use chitose_schemas::codec::{Date, Timestamp, put_bytes, put_double, put_long};
use chitose_schemas::framing::put_soe_header;
use chitose_schemas::json::JsonError;
use chitose_schemas::raw::{EventType, Payload, RawEvent};
use chitose_schemas::reference::{Icd10Range, Judgement, Reference};
use std::collections::HashMap;

/// Where a raw record was read.
#[derive(Debug, Clone, Copy)]
pub struct Coords<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Why one record could not be transformed. Messages name the field and
/// the shape found, never a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransformError {
    /// Not a raw event we can read.
    #[error("decode: {0}")]
    Decode(#[from] chitose_schemas::MessageError),
    /// Readable, but fails the contract's semantic checks.
    #[error("validation: {0}")]
    Validation(JsonError),
    /// A field breaks the contract's rules (a My Number, a control
    /// character, too long, not the code's pattern, not a finite number):
    /// a producer wrote to the raw topic without passing ingest.
    #[error("contract: {0}")]
    Contract(JsonError),
    /// The policy cannot be applied to this record.
    #[error("policy: {table}.{column}: expected {expected}, found {found}")]
    Policy {
        /// Event type.
        table: &'static str,
        /// Output column.
        column: String,
        /// What the policy needs.
        expected: String,
        /// The shape found.
        found: String,
    },
}

/// Every DLQ class the transform writes (metric label values).
pub const DLQ_CLASSES: &[&str] = &[
    "decode",
    "validation",
    "policy",
    "my_number",
    "control_character",
    "too_long",
    "invalid_code",
    "not_finite",
];

impl TransformError {
    /// Stable, low-cardinality class for metrics and DLQ headers: one of
    /// [`DLQ_CLASSES`].
    pub fn class(&self) -> &'static str {
        match self {
            TransformError::Decode(_) => "decode",
            TransformError::Validation(_) => "validation",
            TransformError::Contract(e) => e.reason.as_str(),
            TransformError::Policy { .. } => "policy",
        }
    }
}

/// Buffers reused across records, so the hot path does not allocate them.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The encoded output record (SOE framed).
    pub value: Vec<u8>,
    /// The pseudonym (also the output key).
    pub pseudonym: String,
    linkage: String,
    event_id: String,
    /// Every basis's pseudonym under every key (`linkage_pseudonyms`), and
    /// its buffers.
    links: String,
    link_key: String,
    link_macs: Vec<[u8; 32]>,
    ids: std::cell::RefCell<IdCache>,
    /// The last record decoded: the next is decoded over it, reusing its
    /// strings, and a spare payload of each type.
    event: Option<RawEvent>,
    spares: chitose_schemas::raw::PayloadSpares,
}

/// The current record's direct identifiers, normalized; buffers reused.
#[derive(Debug, Default)]
struct IdCache {
    built: bool,
    ids: Vec<(&'static str, String)>,
    used: usize,
    norm: String,
    kana: String,
}

/// What came out of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Output table.
    pub event_type: EventType,
    /// Basis of the pseudonym.
    pub basis: Basis,
    /// The record had an insurance tuple without its 枝番, so the insurance
    /// basis could not be used (counted: a hub that never sends it links
    /// its patients more weakly).
    pub insurance_without_branch: bool,
}

struct Icd {
    chapter: Icd10Range,
    block: Option<Icd10Range>,
    /// The block as written in the table ("E10-E14").
    block_range: Option<String>,
}

/// A compiled policy with its keys and reference tables.
pub struct Transformer {
    codec: RawCodec,
    plans: Vec<TablePlan>,
    policy: Policy,
    keys: KeyRing,
    contract: crate::contract::Contract,
    reference: Reference,
    municipalities: HashMap<String, String>,
    postal: HashMap<String, Vec<(String, String)>>,
    icd: HashMap<String, Icd>,
    /// The policy keeps `linkage_pseudonyms` (else they are not computed).
    links: bool,
}

impl std::fmt::Debug for Transformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformer")
            .field("profile", &self.policy.profile)
            .field("version", &self.policy.version)
            .field("keys", &self.keys)
            .finish()
    }
}

/// The raw schema's leaves (what a policy must cover).
pub fn raw_leaves(store: &SchemaStore) -> Vec<Leaf> {
    let raw = store
        .latest(chitose_schemas::catalog::RAW_EVENT)
        .expect("the raw schema is embedded");
    crate::fields::raw_leaves(&raw.schema)
}

impl Transformer {
    /// Compiles `policy` against `store`'s pseudo schemas.
    pub fn new(
        policy: Policy,
        keys: KeyRing,
        store: SchemaStore,
        reference: Reference,
    ) -> Result<Self, PolicyError> {
        let leaves = raw_leaves(&store);
        let plans = crate::plan::compile(&policy, &leaves, &store)?;
        let contract = crate::contract::Contract::new(&leaves);
        if policy.max_shift_days > 0 && keys.date_id().is_none() {
            return Err(PolicyError::File {
                file: policy.source.clone(),
                message:
                    "date_shift.max_days > 0 needs a date-shift key (keys.date_shift), found none"
                        .into(),
            });
        }
        let mut municipalities = HashMap::new();
        let mut postal: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for p in reference
            .kansai_union()
            .map(|p| p.code.clone())
            .collect::<Vec<_>>()
        {
            for m in reference.municipalities_of(&p) {
                municipalities.insert(m.code.clone(), m.prefecture.clone());
                for pre in &m.postal_prefixes {
                    postal
                        .entry(pre.clone())
                        .or_default()
                        .push((m.code.clone(), m.prefecture.clone()));
                }
            }
        }
        let mut icd = HashMap::new();
        for letter in 'A'..='Z' {
            for n in 0..100 {
                let cat = format!("{letter}{n:02}");
                if let Some(chapter) = reference.icd10_chapter(&cat) {
                    let block = reference.icd10_block(&cat).cloned();
                    icd.insert(
                        cat,
                        Icd {
                            chapter: chapter.clone(),
                            block_range: block.as_ref().map(Icd10Range::range),
                            block,
                        },
                    );
                }
            }
        }
        let links = plans.iter().any(|p| {
            p.slots
                .iter()
                .any(|s| matches!(s.source, Source::Added(Added::LinkagePseudonyms)))
        });
        Ok(Transformer {
            links,
            codec: RawCodec::new(store),
            plans,
            policy,
            keys,
            contract,
            reference,
            municipalities,
            postal,
            icd,
        })
    }

    /// The compiled plans, one per event type.
    pub fn plans(&self) -> &[TablePlan] {
        &self.plans
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The key ring (ids only are visible).
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The raw contract every record is re-checked against.
    pub fn contract(&self) -> &crate::contract::Contract {
        &self.contract
    }

    /// Whether some table keeps `linkage_pseudonyms` (each record then
    /// makes one per basis and loaded key).
    pub fn writes_linkage_pseudonyms(&self) -> bool {
        self.links
    }

    /// The raw decoder (registers Confluent ids).
    pub fn codec_mut(&mut self) -> &mut RawCodec {
        &mut self.codec
    }

    /// Transforms one raw message into `s.value` (key in `s.pseudonym`).
    pub fn transform(
        &self,
        msg: &[u8],
        src: Coords<'_>,
        now: Timestamp,
        s: &mut Scratch,
    ) -> Result<Outcome, TransformError> {
        let ev = match s.event.take() {
            Some(mut ev) => match self.codec.decode_into(msg, &mut ev, &mut s.spares) {
                Ok(()) => ev,
                // A half-overwritten event is not kept.
                Err(e) => return Err(e.into()),
            },
            None => self.codec.decode(msg)?,
        };
        let out = chitose_schemas::edge::check(&ev, None, now)
            .map_err(TransformError::Validation)
            .and_then(|()| self.transform_event(&ev, src, now, s));
        s.event = Some(ev);
        out
    }

    /// Transforms an already decoded event.
    pub fn transform_event(
        &self,
        ev: &RawEvent,
        src: Coords<'_>,
        now: Timestamp,
        s: &mut Scratch,
    ) -> Result<Outcome, TransformError> {
        self.contract.check(ev).map_err(TransformError::Contract)?;
        let basis = pseudonym::linkage_key(ev, &self.policy.linkage, &mut s.linkage);
        let mac = pseudonym::pseudonym(&self.keys, &s.linkage, &mut s.pseudonym);
        pseudonym::event_id(&self.keys, ev, &mut s.event_id);
        if self.links {
            pseudonym::linkage_pseudonyms(
                &self.keys,
                ev,
                &self.policy.linkage,
                (basis, &s.linkage, mac),
                (&mut s.link_key, &mut s.link_macs),
                &mut s.links,
            );
        }
        let shift = pseudonym::date_shift_days(&self.keys, &s.linkage, self.policy.max_shift_days);
        let plan = &self.plans[EventType::ALL
            .iter()
            .position(|t| *t == ev.event_type)
            .expect("every type has a plan")];
        let ctx = Ctx {
            ev,
            ids: &s.ids,
            t: self,
            table: ev.event_type.symbol(),
            pseudonym: &s.pseudonym,
            event_id: &s.event_id,
            links: &s.links,
            basis,
            shift,
            event_day: jst_day(ev.occurred_at.0),
            src,
            now,
        };
        s.ids.borrow_mut().built = false;
        let mut value = std::mem::take(&mut s.value);
        value.clear();
        put_soe_header(&mut value, plan.fingerprint);
        let mut result = Ok(());
        for slot in &plan.slots {
            match ctx.eval(slot) {
                Ok(v) => {
                    debug_assert!(v.fits(slot.kind), "{} {:?} {:?}", slot.name, slot.kind, v);
                    if write(&mut value, slot, v).is_err() {
                        result = Err(ctx.err(&slot.name, "a value", "none"));
                        break;
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        s.value = value;
        result?;
        Ok(Outcome {
            event_type: ev.event_type,
            basis,
            insurance_without_branch: basis != Basis::Insurance
                && self.policy.linkage.contains(&Basis::Insurance)
                && pseudonym::insurance_without_branch(ev),
        })
    }
}

fn jst_day(ms: i64) -> i32 {
    (ms + 9 * 3_600_000).div_euclid(86_400_000) as i32
}

fn write(out: &mut Vec<u8>, slot: &Slot, v: Val<'_>) -> Result<(), ()> {
    if slot.nullable {
        if v == Val::Null {
            put_long(out, 0);
            return Ok(());
        }
        put_long(out, 1);
    }
    match v {
        Val::Null => return Err(()),
        Val::Str(s) => put_bytes(out, s.as_bytes()),
        Val::Small(s) => put_bytes(out, s.as_str().as_bytes()),
        Val::Int(i) | Val::Date(i) => put_long(out, i64::from(i)),
        Val::Long(l) | Val::TsMillis(l) => put_long(out, l),
        Val::Double(d) => put_double(out, d),
        Val::Bool(b) => out.push(u8::from(b)),
    }
    Ok(())
}

struct Ctx<'a> {
    ev: &'a RawEvent,
    /// The record's own direct identifiers, normalized, built on first use.
    ids: &'a std::cell::RefCell<IdCache>,
    t: &'a Transformer,
    table: &'static str,
    pseudonym: &'a str,
    event_id: &'a str,
    links: &'a str,
    basis: Basis,
    shift: i32,
    event_day: i32,
    src: Coords<'a>,
    now: Timestamp,
}

fn shape(s: &str) -> String {
    let n = s.chars().count();
    format!("a string of {n} character{}", if n == 1 { "" } else { "s" })
}

impl<'a> Ctx<'a> {
    fn err(&self, column: &str, expected: &str, found: &str) -> TransformError {
        TransformError::Policy {
            table: self.table,
            column: column.to_owned(),
            expected: expected.to_owned(),
            found: found.to_owned(),
        }
    }

    /// A kept string must not carry one of the record's own direct
    /// identifiers (a hub that types a name into a test name or an id into
    /// the event id): the record goes to the DLQ instead.
    fn no_identifier(&self, col: &str, text: &str) -> Result<(), TransformError> {
        if text.len() < 3 {
            return Ok(());
        }
        let mut cache = self.ids.borrow_mut();
        let c = &mut *cache;
        if !c.built {
            identifiers(self.ev, c);
        }
        if c.used == 0 {
            return Ok(());
        }
        c.norm.clear();
        pseudonym::normalize_id(text, &mut c.norm);
        c.kana.clear();
        for (what, id) in &c.ids[..c.used] {
            let hay = if *what == "kana name" {
                if c.kana.is_empty() {
                    pseudonym::normalize_kana(text, &mut c.kana);
                }
                &c.kana
            } else {
                &c.norm
            };
            if hay.contains(id.as_str()) {
                return Err(self.err(
                    col,
                    "no direct identifier of the record in a kept field",
                    &format!("the patient's {what}"),
                ));
            }
        }
        Ok(())
    }

    /// The age reached in the calendar year of the event as written (the
    /// shifted date where the profile shifts): event year − birth year. An
    /// age that steps on the birthday tells, next to exact dates, the
    /// birthday to within days and, in a shifted profile, the shift; one
    /// that steps on 1 January tells neither.
    fn age(&self, birth: i32) -> u32 {
        let (b, _, _) = Date(birth).ymd();
        let (e, _, _) = Date(self.event_day.saturating_add(self.shift)).ymd();
        (e - b).max(0) as u32
    }

    fn residence(&self) -> (Option<&'a str>, Option<&'a str>) {
        let p = &self.ev.patient;
        if let Some(code) = p.municipality_code.as_deref().and_then(|c| c.get(..5))
            && let Some((k, pref)) = self.t.municipalities.get_key_value(code)
        {
            return (Some(k.as_str()), Some(pref.as_str()));
        }
        if let Some(postal) = p.postal_code.as_deref() {
            let mut digits = String::with_capacity(8);
            pseudonym::normalize_id(postal, &mut digits);
            if let Some(cands) = digits.get(..3).and_then(|pre| self.t.postal.get(pre)) {
                let pref = cands[0].1.as_str();
                if cands.len() == 1 {
                    return (Some(cands[0].0.as_str()), Some(pref));
                }
                if cands.iter().all(|(_, p)| p == pref) {
                    return (None, Some(pref));
                }
            }
        }
        (None, None)
    }

    fn eval(&self, slot: &Slot) -> Result<Val<'a>, TransformError> {
        let ev = self.ev;
        let col = slot.name.as_str();
        Ok(match &slot.source {
            Source::Null => Val::Null,
            Source::Added(a) => match a {
                Added::Pseudonym => Val::Str(self.pseudonym),
                Added::PseudonymKeyId => Val::Str(self.t.keys.current_id()),
                Added::EventIdKeyId => Val::Str(self.t.keys.event_id_key()),
                Added::DateShiftKeyId => match self.t.keys.date_id() {
                    Some(id) if self.t.policy.max_shift_days > 0 => Val::Str(id),
                    _ => Val::Null,
                },
                Added::LinkageBasis => Val::Str(self.basis.name()),
                Added::LinkagePseudonyms => Val::Str(self.links),
                Added::PolicyProfile => Val::Str(&self.t.policy.profile),
                Added::PolicyVersion => Val::Str(&self.t.policy.version),
                Added::SourceTopic => Val::Str(self.src.topic),
                Added::SourcePartition => Val::Int(self.src.partition),
                Added::SourceOffset => Val::Long(self.src.offset),
                Added::TransformedAt => Val::TsMillis(self.now.0),
            },
            Source::EventIdHash => Val::Str(self.event_id),
            Source::Vocabulary(get, list) => match get(ev) {
                Val::Str(text) => self
                    .t
                    .reference
                    .vocabulary_value(list, text)
                    .map_or(Val::Null, Val::Str),
                _ => Val::Null,
            },
            Source::Keep(get, checked) => {
                let v = get(ev);
                if *checked && let Some(text) = v.as_str() {
                    self.no_identifier(col, text)?;
                }
                v
            }
            Source::Numeric(get, bottom, top) => match get(ev) {
                Val::Double(d) => {
                    let mut d = d;
                    if let Some(b) = bottom {
                        d = d.max(*b);
                    }
                    if let Some(t) = top {
                        d = d.min(*t);
                    }
                    Val::Double(d)
                }
                Val::Int(i) => {
                    let mut d = f64::from(i);
                    if let Some(b) = bottom {
                        d = d.max(*b);
                    }
                    if let Some(t) = top {
                        d = d.min(*t);
                    }
                    Val::Int(d.round() as i32)
                }
                other => other,
            },
            Source::PrefectureCode(get)
            | Source::PrefectureName(get)
            | Source::FacilityPrefecture(get) => {
                let v = get(ev);
                let code = v.as_str().unwrap_or("");
                let code = if matches!(slot.source, Source::FacilityPrefecture(_)) {
                    code.get(..2).unwrap_or("")
                } else {
                    code
                };
                let Some(pref) = self.t.reference.prefecture(code) else {
                    return Err(self.err(col, "a JIS X 0401 prefecture code", &shape(code)));
                };
                if matches!(slot.source, Source::PrefectureName(_)) {
                    Val::Str(pref_name(self.t, pref))
                } else {
                    Val::Str(pref_code(self.t, pref))
                }
            }
            Source::FacilityType(get) => {
                let v = get(ev);
                let code = v.as_str().unwrap_or("");
                if code.len() != 10 || !code.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(self.err(col, "a 10-digit medical institution code", &shape(code)));
                }
                // The third digit is the fee table; one function decides at
                // the edge and here.
                match chitose_schemas::edge::facility_kind(code) {
                    Some(kind) => Val::Str(kind),
                    None => {
                        return Err(self.err(
                            col,
                            "a medical institution code whose third digit is 1, 3, 4 or 6",
                            "another digit",
                        ));
                    }
                }
            }
            Source::Date(get, shift, trunc) => {
                let day = match get(ev) {
                    Val::Date(d) => d,
                    Val::TsMillis(ms) => jst_day(ms),
                    _ => return Ok(Val::Null),
                };
                let day = if *shift { day + self.shift } else { day };
                match trunc {
                    Trunc::Day => Val::Date(day),
                    Trunc::Month | Trunc::Year => {
                        let (year, month, _) = Date(day).ymd();
                        if !(0..=9999).contains(&year) {
                            return Err(self.err(
                                col,
                                "a date in the years 0000 to 9999",
                                "one out of range",
                            ));
                        }
                        let text = if *trunc == Trunc::Month {
                            Small::format(format_args!("{year:04}-{month:02}"))
                        } else {
                            Small::format(format_args!("{year:04}"))
                        };
                        Val::Small(text.expect("a four-digit year and a month fit"))
                    }
                }
            }
            Source::BirthYear(get, top)
            | Source::AgeAtEvent(get, top)
            | Source::AgeBand(get, top) => {
                let Val::Date(birth) = get(ev) else {
                    return Ok(Val::Null);
                };
                let age = self.age(birth);
                let capped = age.min(*top);
                match slot.source {
                    Source::BirthYear(..) if age >= *top => Val::Null,
                    Source::BirthYear(..) => Val::Int(Date(birth).ymd().0),
                    Source::AgeAtEvent(..) => Val::Int(capped as i32),
                    _ if age >= *top => Val::Small(
                        Small::format(format_args!("{top}+")).expect("a u32 and '+' fit"),
                    ),
                    _ => Val::Str(band(self.t, capped)),
                }
            }
            Source::ResidenceMunicipality => self.residence().0.map_or(Val::Null, Val::Str),
            Source::ResidencePrefecture => self.residence().1.map_or(Val::Null, Val::Str),
            Source::Icd10(get, column, finest) => {
                let v = get(ev);
                let Some(raw) = v.as_str() else {
                    // A MEDIS-only diagnosis: no ICD-10 column to fill.
                    return Ok(Val::Null);
                };
                let mut norm = Small::default();
                pseudonym::normalize_id_to(raw, &mut norm).map_err(|_| {
                    self.err(col, "an ICD-10 code of at most 23 characters", &shape(raw))
                })?;
                let norm = norm.as_str();
                let cat = norm.get(..3).unwrap_or("");
                let Some(icd) = self.t.icd.get(cat) else {
                    return Err(self.err(
                        col,
                        "an ICD-10 code in a chapter of the reference table",
                        &shape(raw),
                    ));
                };
                let level = match column {
                    IcdColumn::Code => IcdLevel::Code,
                    IcdColumn::Category => IcdLevel::Category,
                    IcdColumn::Block | IcdColumn::BlockName => IcdLevel::Block,
                    IcdColumn::Chapter | IcdColumn::ChapterName => IcdLevel::Chapter,
                };
                if level < *finest {
                    return Ok(Val::Null);
                }
                let text = |args| {
                    Small::format(args).ok_or_else(|| {
                        self.err(col, "an ICD-10 code of at most 22 characters", &shape(raw))
                    })
                };
                match column {
                    IcdColumn::Code if norm.len() > 3 => {
                        Val::Small(text(format_args!("{cat}.{}", &norm[3..]))?)
                    }
                    IcdColumn::Code | IcdColumn::Category => {
                        Val::Small(text(format_args!("{cat}"))?)
                    }
                    IcdColumn::Block => icd.block_range.as_deref().map_or(Val::Null, Val::Str),
                    IcdColumn::BlockName => icd
                        .block
                        .as_ref()
                        .map_or(Val::Null, |b| Val::Str(&b.title_en)),
                    IcdColumn::Chapter => Val::Str(&icd.chapter.chapter),
                    IcdColumn::ChapterName => Val::Str(
                        icd.chapter
                            .title_ja
                            .as_deref()
                            .unwrap_or(&icd.chapter.title_en),
                    ),
                }
            }
            Source::DrugClassCode(get) => match get(ev) {
                Val::Str(code) => match code.get(..3) {
                    Some(c) if c.bytes().all(|b| b.is_ascii_digit()) => Val::Str(c),
                    _ => {
                        return Err(self.err(
                            col,
                            "a YJ code starting with 3 digits",
                            &shape(code),
                        ));
                    }
                },
                other => other,
            },
            Source::DrugClassName(get) => match get(ev) {
                Val::Str(code) => self
                    .t
                    .reference
                    .yj_category(code)
                    .map_or(Val::Null, |c| Val::Str(c.name_ja.as_str())),
                _ => Val::Null,
            },
            Source::Jlac10Analyte(get) => match get(ev) {
                Val::Str(code) => match code.get(..5) {
                    Some(a) => Val::Str(a),
                    None => {
                        return Err(self.err(col, "a JLAC10 code of 17 characters", &shape(code)));
                    }
                },
                other => other,
            },
            Source::LengthOfStay(get) => match get(ev) {
                Val::TsMillis(end) => Val::Int((jst_day(end) - self.event_day).max(0)),
                _ => Val::Null,
            },
            Source::Judgement(fields) => {
                let Payload::Checkup(_) = &ev.payload else {
                    return Ok(Val::Str(Judgement::Unknown.as_str()));
                };
                let sex = ev.patient.sex.symbol();
                let mut worst = Judgement::Unknown;
                for f in *fields {
                    let get = crate::fields::FIELDS
                        .iter()
                        .find(|x| x.section == "checkup" && x.name == *f)
                        .map(|x| x.get);
                    if let (Some(get), Some(th)) = (get, self.t.reference.threshold(f, sex))
                        && let Val::Double(v) = get(ev)
                    {
                        worst = worst.max(th.judge(v));
                    }
                }
                Val::Str(worst.as_str())
            }
        })
    }
}

/// The direct identifiers of an event worth searching for, normalized as
/// kept strings are: long enough not to match by chance.
fn identifiers(ev: &RawEvent, c: &mut IdCache) {
    let p = &ev.patient;
    c.built = true;
    c.used = 0;
    let mut add = |what: &'static str, v: Option<&str>, min_chars: usize| {
        let Some(v) = v else { return };
        if c.used == c.ids.len() {
            c.ids.push((what, String::new()));
        }
        let slot = &mut c.ids[c.used];
        slot.0 = what;
        slot.1.clear();
        if what == "kana name" {
            pseudonym::normalize_kana(v, &mut slot.1);
        } else {
            pseudonym::normalize_id(v, &mut slot.1);
        }
        if slot.1.chars().count() >= min_chars {
            c.used += 1;
        }
    };
    add("name", p.name_kanji.as_deref(), 2);
    add("kana name", p.name_kana.as_deref(), 3);
    add("local id", Some(&p.local_patient_id), 5);
    add("phone number", p.phone.as_deref(), 7);
    add("e-mail address", p.email.as_deref(), 5);
    add("address", p.address_line.as_deref(), 4);
    if let Some(i) = &p.insurance {
        add("insured number", Some(&i.insured_number), 6);
        add("insured symbol", i.insured_symbol.as_deref(), 4);
        add("insurer number", Some(&i.insurer_number), 6);
    }
    // The hub's own ids of the event (DI in the raw schema): a kept value
    // that quotes one joins the zone back to the hub's records.
    add("event id", Some(&ev.event_id), 6);
    let ids: [Option<&str>; 2] = match &ev.payload {
        Payload::Encounter(e) => [
            Some(e.encounter_id.as_str()),
            e.attending_physician_id.as_deref(),
        ],
        Payload::LabResult(l) => [l.specimen_id.as_deref(), None],
        Payload::Prescription(r) => [r.prescription_id.as_deref(), r.prescriber_id.as_deref()],
        Payload::Checkup(c) => [c.checkup_id.as_deref(), None],
        Payload::Vaccination(v) => [v.lot_number.as_deref(), v.performer_id.as_deref()],
        Payload::Allergy(a) => [a.allergy_id.as_deref(), None],
        Payload::Correction(_) => [None, None],
        Payload::Diagnosis(_) => [None, None],
    };
    for id in ids {
        add("record id", id, 5);
    }
}

fn pref_name<'t>(t: &'t Transformer, p: &chitose_schemas::reference::Prefecture) -> &'t str {
    // Borrow from the transformer's table, which outlives every context.
    t.reference
        .prefecture(&p.code)
        .map_or("", |x| x.name_ja.as_str())
}

fn pref_code<'t>(t: &'t Transformer, p: &chitose_schemas::reference::Prefecture) -> &'t str {
    t.reference
        .prefecture(&p.code)
        .map_or("", |x| x.code.as_str())
}

fn band(t: &Transformer, age: u32) -> &str {
    t.reference.age_band(age)
}

/// Whether a value kind is what the column holds (used by tests).
pub fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Str => "string",
        Kind::Int => "int",
        Kind::Long => "long",
        Kind::Double => "double",
        Kind::Bool => "boolean",
        Kind::Date => "date",
        Kind::TsMillis => "timestamp-millis",
    }
}

/// A transformer for `profile` keyed with fixed, public bytes: for tests and
/// benchmarks only (its pseudonyms protect nothing). Key id `fixed-test-key`.
#[doc(hidden)]
pub fn fixed_key_transformer(profile: &str) -> Transformer {
    use crate::keys::{KeyRing, KeysConfig};
    let store = SchemaStore::embedded();
    let keys = KeyRing::from_bytes(
        std::collections::BTreeMap::from([
            ("fixed-test-key".to_owned(), vec![5u8; 32]),
            ("fixed-date-key".to_owned(), vec![6u8; 32]),
            ("fixed-event-key".to_owned(), vec![7u8; 32]),
        ]),
        &KeysConfig {
            dir: None,
            current: "fixed-test-key".into(),
            date_shift: "fixed-date-key".into(),
            event_id: "fixed-event-key".into(),
        },
        true,
    )
    .expect("fixed keys are long enough");
    let policy = Policy::load(profile, &raw_leaves(&store)).expect("a shipped profile");
    Transformer::new(
        policy,
        keys,
        store,
        Reference::load().expect("shipped tables load"),
    )
    .expect("shipped profiles compile")
}
