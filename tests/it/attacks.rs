//! Attacks on the pseudonymized zone, run against lakes the real pipeline
//! made (ingest → nisshi → transform → sink), with each shipped profile:
//! planted identifiers from a hand-written corpus
//! (`tests/corpus/identities/`), joins back through the hub's record ids,
//! birth-date narrowing and date-shift recovery (computed with DuckDB,
//! `tests/python/attacks.py`). docs/privacy.md states what each attack
//! shows.
//!
//! PII-leak scan: identifiers seeded through ingest — names in kanji and
//! kana, phone numbers, insurance tuples, addresses, hub-local ids, ids of
//! prescriptions and specimens, names typed into kept fields, and My Numbers
//! — must appear nowhere downstream of the transform: not in any lake file
//! (decoded, and as raw bytes), any record of the pseudonymized topics, any
//! log line of any service, or any metric. A positive control proves the
//! scanner finds them where they are allowed (the raw topic).

use crate::helpers;

use aho_corasick::AhoCorasick;
use chitose_ingest::simulate::{Generator, SimConfig, Verdict};
use chitose_schemas::catalog::{RAW_EVENT, SchemaStore};
use chitose_schemas::framing::put_soe_header;
use chitose_schemas::json::JsonToAvro;
use chitose_schemas::render::Renderer;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Every leaf that rendering with and without identifiers disagrees on:
/// the values of the fields the contract classes DI.
fn direct_identifiers(shown: &Value, masked: &Value, out: &mut BTreeSet<String>) {
    match (shown, masked) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                direct_identifiers(v, &b[k], out);
            }
        }
        (Value::String(a), b) if Value::String(a.clone()) != *b => {
            out.insert(a.clone());
        }
        _ => {}
    }
}

/// Needles worth searching for: long enough not to match by chance.
fn needles_of(value: &str, out: &mut BTreeSet<String>) {
    let mut forms = vec![value.to_owned()];
    // Names are also searched without their separating space (either width).
    let compact: String = value
        .chars()
        .filter(|c| *c != ' ' && *c != '\u{3000}')
        .collect();
    forms.push(compact);
    // Phone numbers and printed My Numbers, also as bare digits.
    let digits: String = value.chars().filter(char::is_ascii_digit).collect();
    if value
        .chars()
        .all(|c| c.is_ascii_digit() || c == '-' || c == ' ')
    {
        forms.push(digits);
    }
    for f in forms {
        let ascii = f.is_ascii();
        if (ascii && f.len() >= 6) || (!ascii && f.chars().count() >= 3) {
            out.insert(f);
        }
    }
}

/// Hits of any needle in `hay`; ASCII needles must stand alone (not inside
/// a longer run of letters or digits, such as a UUID or a pseudonym).
fn hits(ac: &AhoCorasick, needles: &[String], hay: &[u8]) -> Vec<String> {
    let alnum = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    let mut out = Vec::new();
    for m in ac.find_overlapping_iter(hay) {
        let n = &needles[m.pattern().as_usize()];
        if n.is_ascii()
            && (alnum(m.start().checked_sub(1).and_then(|i| hay.get(i))) || alnum(hay.get(m.end())))
        {
            continue;
        }
        out.push(n.clone());
    }
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Scrapes ingest, transform and sink every second until `done` holds for
/// their metrics (then returns them), failing after `secs`.
fn drained(
    p: &helpers::Pipeline,
    secs: u64,
    done: impl Fn(&str, &str, &str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if let [Some(i), Some(t), Some(k)] = &p.scrape()[..]
            && done(i, t, k)
        {
            return vec![i.clone(), t.clone(), k.clone()];
        }
        assert!(
            Instant::now() < deadline,
            "pipeline did not drain: {}",
            p.dir.display()
        );
    }
}

/// The generator as Osaka's hub (27) sends.
fn osaka_hub(seed: u64, patients: usize, bad_share: f64) -> Generator {
    Generator::new(SimConfig {
        seed,
        patients,
        bad_share,
        prefectures: vec!["27".into()],
        hub: Some("27".into()),
        ..SimConfig::default()
    })
    .unwrap()
}

/// The lake as analysts read it (pyarrow, DuckDB), every row dumped to
/// `dir/lake-dump.jsonl`; returns the dump and the row count.
fn dump_lake(dir: &Path, lake: &Path) -> (std::path::PathBuf, u64) {
    let dump = dir.join("lake-dump.jsonl");
    let out = Command::new(helpers::python())
        .arg(helpers::repo().join("tests/python/read_lake.py"))
        .arg(lake)
        .arg("--dump")
        .arg(&dump)
        .output()
        .unwrap();
    helpers::assert_ok(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows: u64 = report
        .as_object()
        .unwrap()
        .values()
        .map(|t| t["duckdb_rows"].as_u64().unwrap())
        .sum();
    (dump, rows)
}

/// Every place downstream of the transform a needle must not be: each
/// lake row (decoded) and file (bytes), each record of the pseudonymized
/// topics (value, key, header names and values), each service's log and
/// metrics. Returns the hits (where, needle) and the topic records read.
fn scan_downstream(
    p: &helpers::Pipeline,
    dump: &Path,
    scrapes: &[String],
    needles: &[String],
) -> (Vec<(String, String)>, u64) {
    let ac = AhoCorasick::new(needles).unwrap();
    let mut found: Vec<(String, String)> = Vec::new();
    let mut scan = |what: String, hay: &[u8]| {
        for h in hits(&ac, needles, hay) {
            found.push((what.clone(), h));
        }
    };
    scan("lake rows".into(), &std::fs::read(dump).unwrap());
    let mut lake_files = Vec::new();
    files(&p.lake, &mut lake_files);
    for f in &lake_files {
        scan(f.display().to_string(), &std::fs::read(f).unwrap());
    }
    let mut records = 0u64;
    for t in chitose_schemas::raw::EventType::ALL {
        let topic = format!("{}.pseudo.{}", p.prefix, t.symbol());
        for r in helpers::read_topic_bytes(&p.kafka, &topic) {
            records += 1;
            scan(format!("{topic} record"), &r.value);
            scan(format!("{topic} key"), &r.key.unwrap_or_default());
            for (k, v) in &r.headers {
                scan(format!("{topic} header {k}"), k.as_bytes());
                scan(format!("{topic} header {k}"), v.as_bytes());
            }
        }
    }
    for name in ["ingest", "transform", "sink"] {
        scan(format!("{name} log"), &p.log(name));
    }
    for (name, text) in ["ingest", "transform", "sink"].iter().zip(scrapes) {
        scan(format!("{name} metrics"), text.as_bytes());
    }
    (found, records)
}

#[test]
fn no_identifier_reaches_the_lake_the_pseudonymized_topics_the_logs_or_the_metrics() {
    let dir = helpers::scratch("pii-hub");
    let hub = dir.join("hub");
    std::fs::create_dir_all(&hub).unwrap();

    // What the hub sends, and the identifiers in it.
    let store = SchemaStore::embedded();
    let raw = store.latest(RAW_EVENT).unwrap().clone();
    let to_avro = JsonToAvro::new(raw.schema.clone()).unwrap();
    let shown = Renderer::new(store.clone(), true);
    let masked = Renderer::new(store, false);
    let mut g = osaka_hub(77, 800, 0.05);
    let mut identifiers = BTreeSet::new();
    let mut body = Vec::new();
    let (mut good, mut echoed, mut my_numbers) = (0u64, 0u64, 0u64);
    for i in 0..1500 {
        let line = g.next_line();
        let mut bytes = line.bytes.clone();
        if let Verdict::Good { .. } = line.verdict {
            let mut v: Value = serde_json::from_slice(&bytes).unwrap();
            let kana = v["patient"]["name_kana"].as_str().map(str::to_owned);
            if let Some(kana) = kana.filter(|_| i % 25 == 0 && v["event_type"] == "lab_result") {
                // A hub that typed the patient's name into a free-text field
                // (dropped by the shipped profiles).
                v["payload"]["test_name"] = Value::String(format!("HbA1c {kana}"));
                echoed += 1;
            } else if i % 40 == 1 && v["patient"].is_object() {
                // A My Number in a comment, printed 4-4-4: refused at the edge.
                let first: [u8; 11] = std::array::from_fn(|d| ((i + d * 7) % 10) as u8);
                let mn = chitose_schemas::mynumber::complete(&first);
                let printed = format!("{}-{}-{}", &mn[..4], &mn[4..8], &mn[8..]);
                v["payload"]["comment"] = Value::String(format!("マイナンバー {printed}"));
                identifiers.insert(mn);
                identifiers.insert(printed);
                my_numbers += 1;
            } else {
                good += 1;
            }
            bytes = serde_json::to_vec(&v).unwrap();
            // The record's direct identifiers, found by the contract's own
            // classification (render shown vs masked).
            let mut msg = Vec::new();
            put_soe_header(&mut msg, raw.fingerprint);
            if to_avro.convert(&bytes, &mut msg).is_ok() {
                let mut found = BTreeSet::new();
                direct_identifiers(
                    &shown.render(&msg).unwrap().value,
                    &masked.render(&msg).unwrap().value,
                    &mut found,
                );
                for f in found {
                    needles_of(&f, &mut identifiers);
                }
            }
        }
        body.extend_from_slice(&bytes);
        body.push(b'\n');
    }
    std::fs::write(hub.join("export.ndjson"), &body).unwrap();
    assert!(identifiers.len() > 1000, "{} needles", identifiers.len());

    // The pipeline, as deployed (debug logs: the most a log can say).
    let s = |x: &str| x.to_owned();
    let mut p = helpers::Pipeline::start(
        "pii",
        &[
            s("--source"),
            s("files"),
            s("--dir"),
            hub.display().to_string(),
        ],
        &[("RUST_LOG", "debug,rdkafka=info")],
        &[],
    );
    let scrapes = drained(&p, 180, |_, t, k| {
        helpers::metric_sum(k, chitose_sink::metrics::names::ROWS_TOTAL) as u64 >= good + echoed
            && helpers::metric_sum(t, chitose_transform::metrics::names::RECORDS_TOTAL) as u64
                >= good + echoed
    });
    p.stop();
    let needles: Vec<String> = identifiers.into_iter().collect();
    let (dump, rows) = dump_lake(&dir, &p.lake);
    assert_eq!(
        rows,
        good + echoed,
        "every clean record landed, and the echoed ones with their test name dropped"
    );
    let (found, records) = scan_downstream(&p, &dump, &scrapes, &needles);
    assert!(records >= good);
    assert!(
        found.is_empty(),
        "{} identifier(s) found, e.g. {:?}",
        found.len(),
        &found[..found.len().min(5)]
    );

    // Positive control: the scanner finds the identifiers where they may be.
    let ac = AhoCorasick::new(&needles).unwrap();
    let mut control = 0;
    for r in helpers::read_topic_bytes(&p.kafka, &format!("{}.raw.27", p.prefix)) {
        control += hits(&ac, &needles, &r.value).len();
    }
    assert!(
        control > 1000,
        "the raw topic holds identifiers: {control} hits"
    );
    assert!(
        my_numbers > 10 && echoed > 5,
        "{my_numbers} My Numbers, {echoed} echoes"
    );
}

// ---------------------------------------------------------------------------
// The hand-written corpus, the attacks, both profiles.

struct Person {
    key: String,
    patient: Value,
    my_number: String,
    needles: Vec<String>,
}

struct Plant {
    person: String,
    event_type: String,
    field: String,
    text: String,
    needles: Vec<String>,
    /// Spells a My Number: refused at the edge, never on the raw topic.
    my_number: bool,
}

fn corpus() -> (Vec<Person>, Vec<Plant>) {
    let dir = helpers::repo().join("tests/corpus/identities");
    let people: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir.join("people.json")).unwrap()).unwrap();
    let plants: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir.join("plants.json")).unwrap()).unwrap();
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect()
    };
    (
        people
            .iter()
            .map(|p| Person {
                key: p["key"].as_str().unwrap().into(),
                patient: p["patient"].clone(),
                my_number: p["my_number"].as_str().unwrap().into(),
                needles: strs(&p["needles"]),
            })
            .collect(),
        plants
            .iter()
            .map(|p| Plant {
                person: p["person"].as_str().unwrap().into(),
                event_type: p["event_type"].as_str().unwrap().into(),
                field: p["field"].as_str().unwrap().into(),
                text: p["text"].as_str().unwrap().into(),
                needles: strs(&p["needles"]),
                my_number: p["my_number"].as_bool().unwrap_or(false),
            })
            .collect(),
    )
}

/// A clean payload of each type, in the JSON form (docs/json-form.md).
fn payload(event_type: &str, k: usize) -> Value {
    match event_type {
        "lab_result" => {
            serde_json::json!({"jlac10_code": "3D046000001906202", "test_name": "HbA1c(NGSP)",
            "value_numeric": 5.6 + (k % 9) as f64 / 10.0, "unit": "%", "reference_low": 4.9, "reference_high": 6.0,
            "abnormal_flag": "normal", "value_text": null})
        }
        "diagnosis" => {
            serde_json::json!({"icd10_code": "E11.9", "medis_disease_code": "F3GN", "disease_name": "2型糖尿病",
            "is_primary": true, "is_suspected": false, "outcome": "continuing"})
        }
        "prescription" => {
            serde_json::json!({"yj_code": "3962002F1031", "drug_name": "メトホルミン塩酸塩錠250mg",
            "dose_per_day": 4.0, "dose_unit": "錠", "days_supply": 28, "route": "oral"})
        }
        "encounter" => {
            serde_json::json!({"encounter_id": format!("E{k:05}"), "encounter_class": "outpatient", "department_code": "01"})
        }
        "vaccination" => {
            serde_json::json!({"vaccine_code": "6313404A1024", "vaccine_name": "インフルエンザHAワクチン", "dose_number": 1, "site": "left_arm"})
        }
        _ => {
            serde_json::json!({"height_cm": 160.5, "weight_kg": 58.0, "systolic_bp": 124.0, "diastolic_bp": 78.0, "comment": null})
        }
    }
}

const TYPES: [&str; 6] = [
    "lab_result",
    "diagnosis",
    "prescription",
    "encounter",
    "vaccination",
    "checkup",
];

fn jst(t: chrono::DateTime<chrono::FixedOffset>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

fn event(
    p: &Person,
    ty: &str,
    id: &str,
    at: chrono::DateTime<chrono::FixedOffset>,
    k: usize,
) -> Value {
    serde_json::json!({
        "event_id": id, "event_type": ty, "hub_prefecture": "27", "facility_code": "2714560012",
        "occurred_at": jst(at), "recorded_at": jst(at + chrono::Duration::minutes(1)),
        "source_format": "json", "patient": p.patient, "payload": payload(ty, k),
    })
}

fn set_path(v: &mut Value, path: &str, text: &str) {
    let mut cur = v;
    let parts: Vec<&str> = path.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        cur = &mut cur[*part];
    }
    cur[parts[parts.len() - 1]] = Value::String(text.to_owned());
}

/// A corpus person's JP Core bundle: the fixture with this person's
/// identity and resource ids of their own (the FHIR ids the lake must not
/// hold).
fn bundle(p: &Person) -> (String, Vec<String>) {
    let mut text = std::fs::read_to_string(
        helpers::repo().join("ingest/tests/fixtures/jp-core-bundle.fhir.json"),
    )
    .unwrap();
    let pt = &p.patient;
    let s = |k: &str| pt[k].as_str().unwrap().to_owned();
    let (fam, giv) = s("name_kanji")
        .split_once('\u{3000}')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    let (kfam, kgiv) = s("name_kana")
        .split_once('\u{3000}')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    let ins = &pt["insurance"];
    for (from, to) in [
        ("山田　太郎".to_owned(), s("name_kanji")),
        ("ヤマダ　タロウ".to_owned(), s("name_kana")),
        ("\"山田\"".into(), format!("\"{fam}\"")),
        ("\"太郎\"".into(), format!("\"{giv}\"")),
        ("\"ヤマダ\"".into(), format!("\"{kfam}\"")),
        ("\"タロウ\"".into(), format!("\"{kgiv}\"")),
        ("06-1234-5678".into(), s("phone")),
        ("1965-04-12".into(), s("birth_date")),
        ("530-0001".into(), s("postal_code")),
        ("本町1丁目2番3号".into(), s("address_line")),
        ("0001234567".into(), s("local_patient_id")),
        ("\"male\"".into(), format!("\"{}\"", s("sex"))),
        (
            "\"valueString\": \"1234\"".into(),
            format!(
                "\"valueString\": \"{}\"",
                ins["insured_symbol"].as_str().unwrap()
            ),
        ),
        (
            "\"valueString\": \"56789\"".into(),
            format!(
                "\"valueString\": \"{}\"",
                ins["insured_number"].as_str().unwrap()
            ),
        ),
        (
            "\"valueString\": \"00\"".into(),
            format!(
                "\"valueString\": \"{}\"",
                ins["insured_branch"].as_str().unwrap()
            ),
        ),
        (
            "06270011".into(),
            ins["insurer_number"].as_str().unwrap().to_owned(),
        ),
    ] {
        assert!(text.contains(&from), "the fixture has {from}");
        text = text.replace(&from, &to);
    }
    let mut ids = Vec::new();
    for id in [
        "e1", "c1", "lab1", "vs1", "rx1", "im1", "dr1", "hc1", "hc2", "hc3",
    ] {
        let new = format!("{id}-{}-kansai", p.key);
        text = text.replace(&format!("\"id\": \"{id}\""), &format!("\"id\": \"{new}\""));
        ids.push(new);
    }
    (text, ids)
}

/// Whether an ASCII needle is long enough to mean something, or a
/// non-ASCII one (names) at least two characters.
fn meaningful(n: &str) -> bool {
    if n.is_ascii() {
        n.len() >= 5
    } else {
        n.chars().count() >= 2
    }
}

struct Sent {
    /// JSON lines in the hub's folder (corpus, plants, generated).
    lines: Vec<Vec<u8>>,
    /// Lines of corpus people that are clean: (person, line index, real
    /// day, streamed).
    clean: Vec<(usize, usize, chrono::NaiveDate, bool)>,
    bundles: Vec<(usize, String)>,
    /// Every needle: identity forms, plants, the hub's record ids.
    needles: BTreeSet<String>,
    my_numbers: BTreeSet<String>,
    /// The needles of the plants that spell a My Number.
    my_number_plants: Vec<String>,
    generated_good: usize,
}

fn send_corpus(hub: &Path) -> Sent {
    let (people, plants) = corpus();
    let tz = chrono::FixedOffset::east_opt(9 * 3600).unwrap();
    let now = chrono::Utc::now().with_timezone(&tz);
    let mut sent = Sent {
        lines: Vec::new(),
        clean: Vec::new(),
        bundles: Vec::new(),
        needles: BTreeSet::new(),
        my_numbers: BTreeSet::new(),
        my_number_plants: Vec::new(),
        generated_good: 0,
    };
    for (i, p) in people.iter().enumerate() {
        sent.needles
            .extend(p.needles.iter().filter(|n| meaningful(n)).cloned());
        sent.my_numbers.insert(p.my_number.clone());
        // 40 visits over the last 400 days, and two streamed minutes ago.
        for k in 0..42usize {
            let (at, streamed) = if k < 40 {
                let days = ((k * 37 + i * 11) % 400 + 1) as i64;
                let day = (now - chrono::Duration::days(days)).date_naive();
                (
                    day.and_hms_opt(10, 0, 0)
                        .unwrap()
                        .and_local_timezone(tz)
                        .unwrap(),
                    false,
                )
            } else {
                (
                    now - chrono::Duration::minutes(15 - k as i64 * 5 + 200),
                    true,
                )
            };
            let id = format!("OSK-{}-{k:04}-visit", p.key);
            sent.needles.insert(id.clone());
            let v = event(p, TYPES[(k + i) % 6], &id, at, k);
            sent.clean
                .push((i, sent.lines.len(), at.date_naive(), streamed));
            sent.lines.push(serde_json::to_vec(&v).unwrap());
        }
        let (text, ids) = bundle(p);
        sent.needles.extend(ids);
        sent.bundles.push((i, text));
    }
    for (j, plant) in plants.iter().enumerate() {
        let p = people.iter().find(|p| p.key == plant.person).unwrap();
        let at = now - chrono::Duration::days(3 + j as i64);
        let mut v = event(p, &plant.event_type, &format!("OSK-plant-{j:03}"), at, j);
        set_path(&mut v, &plant.field, &plant.text);
        sent.needles
            .extend(plant.needles.iter().filter(|n| meaningful(n)).cloned());
        if plant.my_number {
            sent.my_number_plants.extend(plant.needles.iter().cloned());
        }
        sent.lines.push(serde_json::to_vec(&v).unwrap());
    }
    // Simulated hub traffic beside the corpus.
    let mut g = osaka_hub(515, 300, 0.02);
    for _ in 0..600 {
        let line = g.next_line();
        if let Verdict::Good { event_id } = &line.verdict {
            sent.generated_good += 1;
            sent.needles.insert(event_id.clone());
        }
        sent.lines.push(line.bytes);
    }
    let mut body = Vec::new();
    for l in &sent.lines {
        body.extend_from_slice(l);
        body.push(b'\n');
    }
    std::fs::write(hub.join(".corpus.ndjson"), &body).unwrap();
    std::fs::rename(hub.join(".corpus.ndjson"), hub.join("corpus.ndjson")).unwrap();
    for (i, text) in &sent.bundles {
        std::fs::write(hub.join(format!("{}.fhir.json", people[*i].key)), text).unwrap();
    }
    sent
}

/// The lake's event id of every clean record (the test holds the key),
/// with what the attacks' evaluation needs.
fn truth(sent: &Sent, keys: &Path) -> BTreeMap<String, Value> {
    let (people, _) = corpus();
    let keys = helpers::keys_in(keys);
    let mut t = BTreeMap::new();
    for (i, line, day, streamed) in &sent.clean {
        let lake_id = helpers::lake_event_id(&keys, &sent.lines[*line]);
        t.insert(
            lake_id,
            serde_json::json!({"person": people[*i].key, "real_date": day.to_string(),
                "birth_date": people[*i].patient["birth_date"], "streamed": streamed}),
        );
    }
    // Generated patients too (their real dates and birth dates are in the lines).
    for l in &sent.lines[sent.lines.len() - 600..] {
        let Ok(v) = serde_json::from_slice::<Value>(l) else {
            continue;
        };
        let (Some(at), Some(birth), Some(local)) = (
            v["occurred_at"].as_str(),
            v["patient"]["birth_date"].as_str(),
            v["patient"]["local_patient_id"].as_str(),
        ) else {
            continue;
        };
        let Ok(at) = chrono::DateTime::parse_from_rfc3339(at) else {
            continue;
        };
        if v["event_id"].as_str().is_none()
            || v["facility_code"].as_str().is_none()
            || v["hub_prefecture"].as_str().is_none()
        {
            continue;
        }
        let tz = chrono::FixedOffset::east_opt(9 * 3600).unwrap();
        t.insert(
            helpers::lake_event_id(&keys, l),
            serde_json::json!({"person": format!("gen-{local}"), "birth_date": birth,
                "real_date": at.with_timezone(&tz).date_naive().to_string()}),
        );
    }
    t
}

fn attack_profile(profile: &str) {
    let dir = helpers::scratch(&format!("attacks-{profile}"));
    let hub = dir.join("hub");
    std::fs::create_dir_all(&hub).unwrap();
    let sent = send_corpus(&hub);
    let s = |x: &str| x.to_owned();
    let mut p = helpers::Pipeline::start(
        &format!("attacks-{profile}"),
        &[
            s("--source"),
            s("files"),
            s("--dir"),
            hub.display().to_string(),
        ],
        &[
            ("RUST_LOG", "debug,rdkafka=info"),
            ("CHITOSE_TRANSFORM__POLICY", profile),
        ],
        &[],
    );
    // Drained: every file done, every accepted record transformed or
    // dead-lettered, every transformed one landed.
    let scrapes = drained(&p, 240, |i, t, k| {
        let pending = std::fs::read_dir(&hub)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .count();
        let accepted =
            helpers::metric_sum(i, chitose_ingest::metrics::names::EVENTS_ACCEPTED_TOTAL) as u64;
        let transformed =
            helpers::metric_sum(t, chitose_transform::metrics::names::RECORDS_TOTAL) as u64;
        let dlq = helpers::metric_sum(t, chitose_transform::metrics::names::DLQ_TOTAL) as u64;
        let rows = helpers::metric_sum(k, chitose_sink::metrics::names::ROWS_TOTAL) as u64;
        pending == 0 && accepted > 0 && transformed + dlq >= accepted && rows >= transformed
    });
    p.stop();
    let read = |t: &str, m: &str| helpers::metric_sum(t, m) as u64;
    let (accepted, rejected) = (
        read(
            &scrapes[0],
            chitose_ingest::metrics::names::EVENTS_ACCEPTED_TOTAL,
        ),
        read(
            &scrapes[0],
            chitose_ingest::metrics::names::EVENTS_REJECTED_TOTAL,
        ),
    );
    let (transformed, dlq) = (
        read(
            &scrapes[1],
            chitose_transform::metrics::names::RECORDS_TOTAL,
        ),
        read(&scrapes[1], chitose_transform::metrics::names::DLQ_TOTAL),
    );

    // 1. Nothing lost: every record is landed, rejected or dead-lettered.
    let (dump, rows) = dump_lake(&dir, &p.lake);
    assert_eq!(rows, transformed, "landed = transformed");
    assert_eq!(
        accepted,
        transformed + dlq,
        "accepted = transformed + dead-lettered"
    );
    // The corpus's clean records, every entry of the 8 bundles that maps
    // (6 each) and the generator's good lines were all accepted.
    assert!(
        accepted as usize >= sent.clean.len() + 8 * 6 + sent.generated_good,
        "accepted {accepted}"
    );
    assert!(
        rejected >= 8,
        "the plants with My Numbers and bad codes are refused at the edge: {rejected}"
    );
    eprintln!(
        "{profile}: {} lines + {} bundles; accepted {accepted}, rejected {rejected}, dead-lettered {dlq}, landed {rows}",
        sent.lines.len(),
        sent.bundles.len()
    );

    // 2. No needle anywhere downstream: lake rows and file bytes, the
    //    pseudonymized topics (values, keys, headers), logs, metrics; and no
    //    My Number in rejects/.
    let needles: Vec<String> = sent.needles.iter().cloned().collect();
    let (found, records) = scan_downstream(&p, &dump, &scrapes, &needles);
    assert_eq!(records, transformed, "every transformed record scanned");
    assert!(
        found.is_empty(),
        "{profile}: {} needle(s) found downstream, e.g. {:?}",
        found.len(),
        &found[..found.len().min(8)]
    );
    let mut rejects = String::new();
    for e in std::fs::read_dir(hub.join("rejects")).unwrap() {
        rejects.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap());
    }
    assert!(
        rejects.contains("my_number"),
        "My Number plants were refused"
    );
    assert!(
        !chitose_schemas::mynumber::contains_my_number(&rejects),
        "a My Number was kept in rejects/"
    );
    for mn in &sent.my_numbers {
        assert!(!rejects.contains(mn.as_str()));
    }
    // Positive control: the scanner finds the needles on the raw topic.
    let ac = AhoCorasick::new(&needles).unwrap();
    let mut control = BTreeSet::new();
    for r in helpers::read_topic_bytes(&p.kafka, &format!("{}.raw.27", p.prefix)) {
        control.extend(hits(&ac, &needles, &r.value));
    }
    // A My Number never enters the pipeline, in any spelling: not even
    // the raw zone holds one (the circled-number plant passed the edge
    // while its scan counted numeric characters, not digits after NFKC).
    assert!(sent.my_number_plants.len() >= 6);
    let on_raw: Vec<&String> = sent
        .my_number_plants
        .iter()
        .filter(|n| control.contains(*n))
        .collect();
    assert!(
        on_raw.is_empty(),
        "{profile}: My Number plants on the raw topic: {on_raw:?}"
    );
    assert!(
        control.len() > 100,
        "the raw topic holds the corpus: {} distinct needles",
        control.len()
    );

    // 3. The re-identification attacks, computed with DuckDB.
    let truth = truth(&sent, &p.dir.join("keys"));
    let truth_path = dir.join("truth.json");
    std::fs::write(&truth_path, serde_json::to_vec(&truth).unwrap()).unwrap();
    let out = Command::new(helpers::python())
        .arg(helpers::repo().join("tests/python/attacks.py"))
        .arg(&p.lake)
        .arg(&truth_path)
        .output()
        .unwrap();
    helpers::assert_ok(&out);
    let a: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        a["persons"].as_u64().unwrap() > 100,
        "corpus and generated patients: {}",
        a["persons"]
    );
    let shifted = profile == "pseudonymized-shifted";
    let (mut exact_narrowed, mut control_shift) = (0usize, 0usize);
    for (person, sh) in a["shift"].as_object().unwrap() {
        let b = &a["birth"][person];
        let c = &a["control"][person];
        let offsets: Vec<i64> = sh["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        // One offset per person (as the lake holds them), zero unless shifted.
        assert_eq!(offsets.len(), 1, "{person}: offsets {offsets:?}");
        if !shifted {
            assert_eq!(offsets[0], 0, "{person}");
        }
        // Birth dates: the ages follow the calendar year only, so the
        // documented rule leaves the whole birth year (or the top-coded
        // range), truth included.
        assert_eq!(b["ages_follow_the_year_only"], true, "{person}: {b}");
        assert!(
            b["documented_rule"].as_u64().unwrap() >= 365,
            "{person}: birth date narrowed: {b}"
        );
        assert_eq!(b["documented_rule_has_truth"], true, "{person}: {b}");
        // Shift, given the target's birth date: every offset fits.
        if shifted {
            assert_eq!(
                sh["age_step_candidates_documented_rule"], 61,
                "{person}: {sh}"
            );
            // Old values: the age steps at birthday + offset, so a visit on
            // each side of the birthday pins the offset to the gap between them.
            if c["age_step_candidates"].as_u64().unwrap() <= 20 {
                control_shift += 1;
            }
        } else if c["birth_exact_rule"].as_u64().is_some_and(|n| n < 60) {
            exact_narrowed += 1;
        }
        // The transform's clock is not in the shifted zone.
        if shifted {
            assert!(sh["transformed_at_estimate"].is_null(), "{person}: {sh}");
        }
    }
    eprintln!(
        "{profile}: {} needles; {} persons attacked; controls on the old values: birth narrowed below 60 days for {exact_narrowed}, offset to ≤ 20 days for {control_shift}",
        needles.len(),
        a["persons"]
    );
    if shifted {
        let cols = &a["columns"];
        assert!(cols.get("date_shift_key_id").is_some());
        // Controls: the same attacks on the values chitose wrote before
        // recover the offset (age step with a known birth date; the wall
        // clock of streamed records).
        assert!(
            control_shift >= 4,
            "the age-step attack narrows the offset to 20 of 61 days on the old values for corpus people: {control_shift}"
        );
        for p in ["p1", "p2", "p3"] {
            let c = &a["control"][p];
            assert_eq!(
                c["transformed_at_estimate"].as_i64(),
                a["shift"][p]["offsets"][0].as_i64(),
                "{p}: {c}"
            );
        }
    } else {
        assert!(
            exact_narrowed >= 4,
            "the birth-date attack works on the old values: {exact_narrowed}"
        );
    }
}

#[test]
fn attacks_fail_against_the_pseudonymized_zone() {
    attack_profile("pseudonymized");
}

#[test]
fn attacks_fail_against_the_shifted_zone() {
    attack_profile("pseudonymized-shifted");
}

// ---------------------------------------------------------------------------
// Hospital exports as they come: an SS-MIX2 storage filed with the
// hand-written corpus's people, and the published JP-CLINS and 電子処方箋
// bundles, through the real pipeline.

/// Every string of the published bundles' Patients (names, ids, member
/// ids, phones, addresses), every resource id and fullUrl, and each file
/// name: none may pass the transform.
fn fhir_needles(bundle: &Value, out: &mut BTreeSet<String>) {
    fn leaves(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| leaves(x, out)),
            Value::Object(o) => o
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "system"
                            | "url"
                            | "use"
                            | "gender"
                            | "birthDate"
                            | "valueCode"
                            | "country"
                            | "profile"
                            | "resourceType"
                            | "status"
                    )
                })
                .for_each(|(_, x)| leaves(x, out)),
            _ => {}
        }
    }
    for e in bundle["entry"].as_array().into_iter().flatten() {
        let r = &e["resource"];
        if let Some(u) = e["fullUrl"].as_str() {
            out.insert(u.to_owned());
        }
        if let Some(id) = r["id"].as_str().filter(|i| i.len() >= 6) {
            out.insert(id.to_owned());
        }
        if r["resourceType"] == "Patient" {
            let mut l = Vec::new();
            leaves(r, &mut l);
            for s in l {
                needles_of(&s, out);
            }
        }
    }
}

#[test]
fn hospital_exports_leak_nothing_and_a_cancelled_order_is_withdrawn_from_the_lake() {
    use chitose_ingest::simulate::ssmix2::TreeWriter;
    let dir = helpers::scratch("hospital-exports");
    let (storage, hub) = (dir.join("storage"), dir.join("hub"));
    std::fs::create_dir_all(&hub).unwrap();
    let (people, _) = corpus();
    let edge = chitose_ingest::edge::Edge::new(&SchemaStore::embedded(), Some("27".into()));
    let now = chitose_schemas::codec::Timestamp::now();
    let mut g = osaka_hub(505, 200, 0.0);
    let mut w = TreeWriter::new(&storage);
    let mut needles = BTreeSet::new();
    let mut orders = 0;
    for (i, person) in people.iter().enumerate() {
        person
            .needles
            .iter()
            .for_each(|n| needles_of(n, &mut needles));
        let stripped: String = person.patient["local_patient_id"]
            .as_str()
            .unwrap()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        needles_of(&stripped, &mut needles);
        let mut made = 0;
        while made < 12 {
            let mut v = serde_json::to_value(g.next_event()).unwrap();
            v["patient"] = person.patient.clone();
            let Ok(a) = edge.accept(&serde_json::to_vec(&v).unwrap(), now) else {
                continue;
            };
            if w.write(&a.event, (i * 12 + made) % 4 == 0).unwrap() {
                made += 1;
                orders += 1;
            }
        }
    }
    assert!(w.report.cancellations >= 10, "{:?}", w.report);
    // The storage's own names: file names and order numbers.
    let mut tree = Vec::new();
    files(&storage, &mut tree);
    for f in &tree {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let order = name.split('_').nth(3).unwrap().to_owned();
        if order != "999999999999999" {
            needles.insert(order);
        }
        needles.insert(name);
    }
    // Published bundles, as an Osaka hub would send them (their Tokyo
    // institution numbers moved to Osaka).
    let corpus_fhir = helpers::repo().join("tests/corpus/fhir");
    let mut fhir_files = 0;
    for sub in ["jp-clins", "eprescription"] {
        for e in std::fs::read_dir(corpus_fhir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if !name.starts_with("Bundle-") {
                continue;
            }
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("1311234567", "2711234567")
                .replace("1319876543", "2719876543")
                .replace("1318814790", "2718814790");
            fhir_needles(&serde_json::from_str(&text).unwrap(), &mut needles);
            // The hub names its own export files; the files source keeps
            // the name in the raw zone (its exactly-once read-back) and in
            // the hub's rejects/. Storage names (which hold the patient id)
            // are needles; these are not.
            let file = format!("{}.fhir.json", name.trim_end_matches(".json"));
            std::fs::write(hub.join(file), text).unwrap();
            fhir_files += 1;
        }
    }
    assert_eq!(fhir_files, 6);
    let needles: Vec<String> = needles
        .into_iter()
        .filter(|n| n.chars().count() >= 3)
        .collect();
    assert!(needles.len() > 300, "{}", needles.len());

    let s = |x: &str| x.to_owned();
    let state = dir.join("ssmix2-state");
    let mut p = helpers::Pipeline::start(
        "hospital-pipeline",
        &[
            s("--source"),
            s("ssmix2"),
            s("--dir"),
            storage.display().to_string(),
        ],
        &[
            ("RUST_LOG", "debug,rdkafka=info"),
            ("CHITOSE_INGEST__SSMIX2__STATE_DIR", state.to_str().unwrap()),
            ("CHITOSE_INGEST__SSMIX2__FACILITY_CODE", "2710000001"),
            ("CHITOSE_INGEST__SSMIX2__POLL_INTERVAL", "500ms"),
        ],
        &[],
    );
    // The FHIR files through a files-source ingest beside it.
    let mut files_ingest = helpers::chitose(
        &[
            "ingest",
            "--source",
            "files",
            "--prefecture",
            "27",
            "--bootstrap",
            &p.kafka,
            "--dir",
            hub.to_str().unwrap(),
            "--exit-when-idle",
            "--log-json",
            "--ops-listen",
            &format!("127.0.0.1:{}", helpers::free_port()),
        ],
        &[
            ("CHITOSE_INGEST__TOPIC", &format!("{}.raw.27", p.prefix)),
            ("RUST_LOG", "debug,rdkafka=info"),
        ],
    );
    assert!(
        files_ingest.0.wait().unwrap().success(),
        "{}",
        files_ingest.log()
    );
    let ingest_log = files_ingest.log();
    let produced: u64 = ingest_log
        .lines()
        .filter(|l| l.contains("file done"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["fields"]["produced"].as_u64())
        .sum();
    assert!(
        produced >= 20,
        "the published bundles' events were sent: {produced}\n{ingest_log}"
    );
    // Everything in the raw topic reaches the lake or is dropped as a
    // duplicate (an outpatient visit made by two orders of one day).
    let raw_topic = format!("{}.raw.27", p.prefix);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = 0;
    loop {
        let n = helpers::topic_size(&p.kafka, &raw_topic);
        if n > 0 && n == last {
            break;
        }
        last = n;
        assert!(Instant::now() < deadline, "ingest did not settle");
        std::thread::sleep(Duration::from_secs(3));
    }
    let scrapes = drained(&p, 180, |_, t, k| {
        helpers::metric_sum(t, chitose_transform::metrics::names::RECORDS_TOTAL) as i64 >= last
            && (helpers::metric_sum(k, chitose_sink::metrics::names::ROWS_TOTAL)
                + helpers::metric_sum(k, chitose_sink::metrics::names::SKIPPED_ROWS_TOTAL))
                as i64
                >= helpers::metric_sum(t, chitose_transform::metrics::names::RECORDS_TOTAL) as i64
                    - helpers::metric_sum(t, chitose_transform::metrics::names::DLQ_TOTAL) as i64
    });
    p.stop();
    let (dump, rows) = dump_lake(&dir, &p.lake);
    assert!(
        rows as usize >= orders,
        "{rows} rows for {orders} clinical messages"
    );
    let (mut found, _) = scan_downstream(&p, &dump, &scrapes, &needles);
    // Rejects, the ingest's own log, the raw topic's headers.
    let ac = AhoCorasick::new(&needles).unwrap();
    let mut rejects = Vec::new();
    for d in [state.join("queue/rejects"), hub.join("rejects")] {
        if d.exists() {
            files(&d, &mut rejects);
        }
    }
    for f in rejects
        .iter()
        .filter(|f| f.to_string_lossy().ends_with(".ndjson"))
    {
        for h in hits(&ac, &needles, &std::fs::read(f).unwrap()) {
            found.push((f.display().to_string(), h));
        }
    }
    for h in hits(&ac, &needles, ingest_log.as_bytes()) {
        found.push(("files ingest log".into(), h));
    }
    let raw = helpers::read_topic_bytes(&p.kafka, &raw_topic);
    for r in &raw {
        for (k, v) in &r.headers {
            for h in hits(&ac, &needles, format!("{k}={v}").as_bytes()) {
                found.push(("raw topic header".into(), h));
            }
        }
    }
    assert!(
        found.is_empty(),
        "{} hit(s), e.g. {:?}",
        found.len(),
        &found[..found.len().min(5)]
    );
    // Positive control: the raw topic's values hold the people.
    let control: usize = raw
        .iter()
        .map(|r| hits(&ac, &needles, &r.value).len())
        .sum();
    assert!(
        control > 100,
        "the scanner finds the identifiers where they may be: {control}"
    );

    // A cancelled order's correction carries the withdrawn row's event_id:
    // an anti-join (what every reader does until the lake deletes) drops
    // exactly the cancelled rows.
    let out = Command::new(helpers::python())
        .arg("-c")
        .arg(
            r#"
import duckdb, json, sys
sys.path.insert(0, sys.argv[2])
import lakeio
lake = sys.argv[1]
con = duckdb.connect()
def t(name):
    return lakeio.duckdb_source(f"{lake}/pseudonymized/{name}")
corr = con.sql(f"select event_id, corrected_event_type from {t('correction')}").fetchall()
withdrawn = 0
for table in ['diagnosis','lab_result','prescription','allergy','encounter']:
    ids = [e for e, ty in corr if ty == table]
    if not ids:
        continue
    n = con.sql(f"select count(*) from {t(table)} where event_id in (select event_id from {t('correction')} where corrected_event_type = '{table}')").fetchall()[0][0]
    withdrawn += n
print(json.dumps({"corrections": len(corr), "withdrawn_rows": withdrawn}))
"#,
        )
        .arg(&p.lake)
        .arg(helpers::repo().join("tests/python"))
        .output()
        .unwrap();
    helpers::assert_ok(&out);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let corrections = r["corrections"].as_u64().unwrap();
    // Two cancellations of one allergy (same patient, same allergen) are
    // one id: the sink keeps one correction, as it keeps one row.
    assert!(
        corrections > 10 && corrections <= w.report.cancellations,
        "{r} {:?}",
        w.report
    );
    assert_eq!(
        r["withdrawn_rows"].as_u64().unwrap(),
        corrections,
        "each cancelled order withdraws its one row: {r} {:?}",
        w.report
    );
}
