//! Writes a seeded SS-MIX2 standardized storage tree from the generator's
//! events: HL7 v2.5 messages in ISO-2022-JP, named and filed as the
//! standard lays out, with an ADT-00 (insurance in IN1) per patient and
//! some orders cancelled by a second file whose condition flag is 0.

use super::Generator;
use chitose_schemas::codec::Timestamp;
use chitose_schemas::raw::{Payload, RawEvent, Sex};
use std::collections::BTreeSet;
use std::path::Path;

/// What was written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TreeReport {
    /// Message files written (ADT-00 and cancellations included).
    pub messages: u64,
    /// Of which cancellations (condition flag 0).
    pub cancellations: u64,
}

/// HL7 escapes for a value.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\E\\"),
            '|' => o.push_str("\\F\\"),
            '^' => o.push_str("\\S\\"),
            '~' => o.push_str("\\R\\"),
            '&' => o.push_str("\\T\\"),
            '\r' | '\n' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

fn hl7_ts(t: Timestamp) -> String {
    // JST wall clock, minutes.
    let dt = chrono::DateTime::from_timestamp_millis(t.0 + 9 * 3_600_000)
        .expect("in range")
        .naive_utc();
    dt.format("%Y%m%d%H%M").to_string()
}

fn day(t: Timestamp) -> String {
    t.jst_date().expect("in range").format("%Y%m%d").to_string()
}

/// ISO-2022-JP bytes; a character JIS X 0208 lacks becomes 〓, as Japanese
/// systems write it.
fn jis(text: &str) -> Vec<u8> {
    let mut safe = String::with_capacity(text.len());
    for c in text.chars() {
        let mut b = [0u8; 4];
        let (_, _, bad) = encoding_rs::ISO_2022_JP.encode(c.encode_utf8(&mut b));
        safe.push(if bad { '〓' } else { c });
    }
    encoding_rs::ISO_2022_JP.encode(&safe).0.into_owned()
}

fn pid_segment(ev: &RawEvent, pid: &str) -> String {
    let p = &ev.patient;
    let name = |n: &Option<String>, rep: &str| {
        n.as_deref().map(|n| {
            let (f, g) = n.split_once('\u{3000}').unwrap_or((n, ""));
            format!("{}^{}^^^^^L^{rep}", esc(f), esc(g))
        })
    };
    let names: Vec<String> = [name(&p.name_kanji, "I"), name(&p.name_kana, "P")]
        .into_iter()
        .flatten()
        .collect();
    let birth = p
        .birth_date
        .to_naive()
        .expect("in range")
        .format("%Y%m%d")
        .to_string();
    let sex = match p.sex {
        Sex::Male => "M",
        Sex::Female => "F",
        Sex::Unknown => "U",
    };
    let addr = format!(
        "^^^^{}^JPN^H^{}",
        esc(p.postal_code.as_deref().unwrap_or("")),
        esc(p.address_line.as_deref().unwrap_or(""))
    );
    let phone = p
        .phone
        .as_deref()
        .map(|x| format!("^PRN^PH^^^^^^^^^{}", esc(x)))
        .unwrap_or_default();
    format!(
        "PID|0001||{pid}^^^^PI||{}||{birth}|{sex}|||{addr}||{phone}",
        names.join("~")
    )
}

/// A segment with `fields` at their HL7 positions (1-based), empty
/// between.
fn seg(name: &str, fields: &[(usize, &str)]) -> String {
    let last = fields.iter().map(|f| f.0).max().unwrap_or(0);
    let mut v = vec![""; last];
    for (i, f) in fields {
        v[i - 1] = f;
    }
    format!("{name}|{}", v.join("|"))
}

fn msh(ts: &str, kind: &str, ctl: u64) -> String {
    format!(
        "MSH|^~\\&|CHITOSE|SIM|||{ts}||{kind}|{ctl}|P|2.5||||||~ISO IR87||ISO 2022-1994|SS-MIX2_1.20^SS-MIX2^1.2.392.200250.2.1.100.1.2.120^ISO"
    )
}

/// Writes `events` generated events (of the types SS-MIX2 carries here:
/// diagnosis, lab result, prescription, allergy, inpatient admission) as
/// a storage tree under `root`; every `cancel_every`-th order is also
/// cancelled (0: none).
pub fn write_tree(
    g: &mut Generator,
    root: &Path,
    events: usize,
    cancel_every: usize,
) -> std::io::Result<TreeReport> {
    let mut w = TreeWriter::new(root);
    let mut written = 0usize;
    while written < events {
        let ev = g.next_event();
        let cancel = cancel_every > 0 && (written + 1).is_multiple_of(cancel_every);
        if w.write(&ev, cancel)? {
            written += 1;
        }
    }
    Ok(w.report)
}

/// Files events into a storage tree, one message each (and the patient's
/// ADT-00 the first time).
pub struct TreeWriter {
    root: std::path::PathBuf,
    patients: BTreeSet<String>,
    seq: u64,
    /// What was written so far.
    pub report: TreeReport,
}

impl TreeWriter {
    /// A writer into `root`.
    pub fn new(root: &Path) -> Self {
        TreeWriter {
            root: root.to_path_buf(),
            patients: BTreeSet::new(),
            seq: 0,
            report: TreeReport::default(),
        }
    }

    /// Writes `ev` as its message; with `cancel`, also its cancellation
    /// (admissions are not cancelled). False: SS-MIX2 carries no such
    /// event here (checkups, vaccinations, other encounters).
    pub fn write(&mut self, ev: &RawEvent, cancel: bool) -> std::io::Result<bool> {
        let root = self.root.clone();
        let root = root.as_path();
        let seq = self.seq + 1;
        let pid: String = ev
            .patient
            .local_patient_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        if pid.len() < 6 {
            return Ok(false);
        }
        let ts = hl7_ts(ev.recorded_at);
        let date = day(ev.occurred_at);
        let at = hl7_ts(ev.occurred_at);
        let pidseg = pid_segment(ev, &pid);
        let (data_type, kind, body, dated) = match &ev.payload {
            Payload::Diagnosis(d) => {
                let mut code = String::new();
                if let Some(n) = &d.medis_disease_number {
                    code = format!(
                        "{n}^{}^MDCDX2",
                        esc(d.disease_name.as_deref().unwrap_or(""))
                    );
                }
                let icd = d
                    .icd10_code
                    .as_deref()
                    .map(|c| format!("{}^^I10", c.replace('.', "")))
                    .unwrap_or_default();
                if code.is_empty() && icd.is_empty() {
                    return Ok(false);
                }
                let onset = d
                    .onset_date
                    .and_then(|o| o.to_naive())
                    .map(|o| o.format("%Y%m%d").to_string())
                    .unwrap_or_default();
                let primary = if d.is_primary {
                    "1^主診断^JHSD0007"
                } else {
                    ""
                };
                let outcome = if d.outcome.symbol() == "cured" {
                    "R^回復^HL70241"
                } else {
                    ""
                };
                let key = format!("{seq:015}");
                let prb = seg(
                    "PRB",
                    &[
                        (1, "AD"),
                        (2, &at),
                        (3, &code),
                        (4, &key),
                        (10, &icd),
                        (14, outcome),
                        (16, &onset),
                        (18, primary),
                    ],
                );
                ("PPR-01", "PPR^ZD1^PPR_ZD1", prb, false)
            }
            Payload::LabResult(l) => {
                let (ty, v) = match (l.value_numeric, &l.value_text) {
                    (Some(x), _) => ("NM", x.to_string()),
                    (None, Some(t)) => ("ST", esc(t)),
                    _ => return Ok(false),
                };
                let range = match (l.reference_low, l.reference_high) {
                    (Some(a), Some(b)) => format!("{a}-{b}"),
                    _ => String::new(),
                };
                let obx = format!(
                    "PV1|0001|O\rORC|SC|{seq:015}\rOBR|1|{seq:015}||||{at}\rOBX|1|{ty}|{}^{}^JC10||{v}|{}|{range}||||F|||{at}",
                    l.jlac10_code,
                    esc(&l.test_name),
                    esc(l.unit.as_deref().unwrap_or(""))
                );
                ("OML-11", "OUL^R22^OUL_R22", obx, true)
            }
            Payload::Prescription(p) => {
                let code = match (&p.yj_code, &p.hot_code) {
                    (Some(y), _) => format!("{y}^{}^YJ", esc(p.drug_name.as_deref().unwrap_or(""))),
                    (None, Some(h)) => {
                        format!("{h}^{}^HOT9", esc(p.drug_name.as_deref().unwrap_or("")))
                    }
                    _ => return Ok(false),
                };
                let days = p.days_supply.map(|d| format!("{d}^d")).unwrap_or_default();
                let route = match p.route.symbol() {
                    "oral" => "PO^口^HL70162",
                    "injection" => "IV^静脈内^HL70162",
                    "topical" => "TP^局所^HL70162",
                    _ => "",
                };
                let rxe = format!(
                    "PV1|0001|O\rORC|NW|{seq:015}||1|||||{at}\rRXE||{code}|1\rTQ1|1|||||{days}\rRXR|{route}"
                );
                ("OMP-01", "RDE^O11^RDE_O11", rxe, true)
            }
            Payload::Allergy(a) => {
                let cat = match a.category.map(|c| c.symbol()) {
                    Some("food") => "FA^食物アレルギー^HL70127",
                    Some("medication") => "DA^薬剤アレルギー^HL70127",
                    _ => "EA^環境アレルギー^HL70127",
                };
                let code = a.substance_code.as_deref().unwrap_or("");
                let sys = match a.substance_system.symbol() {
                    "yj" => "YJ",
                    "hot" => "HOT9",
                    _ => "99JFAGY",
                };
                let sev = match a.reaction_severity.map(|s| s.symbol()) {
                    Some("severe") => "SV^重度^HL70128",
                    Some("moderate") => "MO^中等度^HL70128",
                    Some("mild") => "MI^軽度^HL70128",
                    _ => "",
                };
                let iam = format!(
                    "EVN||{at}\rIAM|1|{cat}|{code}^{}^{sys}|{sev}||A^追加^HL70323",
                    esc(a.substance_name.as_deref().unwrap_or(""))
                );
                ("ADT-61", "ADT^A60^ADT_A60", iam, false)
            }
            Payload::Encounter(e) if e.encounter_class.symbol() == "inpatient" => {
                let pv1 = format!(
                    "EVN||{at}\r{}",
                    seg("PV1", &[(1, "0001"), (2, "I"), (44, &at)])
                );
                ("ADT-22", "ADT^A01^ADT_A01", pv1, true)
            }
            _ => return Ok(false),
        };
        let order = if matches!(data_type, "OMP-01" | "OML-11") {
            format!("{seq:015}")
        } else {
            "999999999999999".into()
        };
        let date_dir = if dated { date.clone() } else { "-".to_owned() };
        let dir = root
            .join(&pid[..3])
            .join(&pid[3..6])
            .join(&pid)
            .join(&date_dir)
            .join(data_type);
        std::fs::create_dir_all(&dir)?;
        if self.patients.insert(pid.clone()) {
            // The patient's ADT-00, with insurance where the hub has it.
            let in1 = ev
                .patient
                .insurance
                .as_ref()
                .map(|i| {
                    let symbol = esc(i.insured_symbol.as_deref().unwrap_or(""));
                    format!(
                        "\r{}",
                        seg(
                            "IN1",
                            &[
                                (1, "1"),
                                (3, &esc(&i.insurer_number)),
                                (10, &symbol),
                                (11, &esc(&i.insured_number))
                            ]
                        )
                    )
                })
                .unwrap_or_default();
            let adt00_dir = root
                .join(&pid[..3])
                .join(&pid[3..6])
                .join(&pid)
                .join("-")
                .join("ADT-00");
            std::fs::create_dir_all(&adt00_dir)?;
            let text = format!(
                "{}\rEVN||{ts}\r{pidseg}{in1}\r",
                msh(&ts, "ADT^A08^ADT_A01", seq * 10)
            );
            std::fs::write(
                adt00_dir.join(format!("{pid}_-_ADT-00_999999999999999_{ts}00000_-_1")),
                jis(&text),
            )?;
            self.report.messages += 1;
        }
        let text = format!("{}\r{pidseg}\r{body}\r", msh(&ts, kind, seq * 10 + 1));
        let bytes = jis(&text);
        std::fs::write(
            dir.join(format!(
                "{pid}_{date_dir}_{data_type}_{order}_{ts}{:05}_01_1",
                seq % 100_000
            )),
            &bytes,
        )?;
        self.report.messages += 1;
        if cancel && data_type != "ADT-22" {
            std::fs::write(
                dir.join(format!(
                    "{pid}_{date_dir}_{data_type}_{order}_{ts}{:05}_01_0",
                    seq % 100_000 + 1
                )),
                &bytes,
            )?;
            self.report.messages += 1;
            self.report.cancellations += 1;
        }
        self.seq = seq;
        Ok(true)
    }
}
