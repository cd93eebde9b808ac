//! PII-leak scan: identifiers seeded through ingest — names in kanji and
//! kana, phone numbers, insurance tuples, addresses, hub-local ids, ids of
//! prescriptions and specimens, names typed into kept fields, and My Numbers
//! — must appear nowhere downstream of the transform: not in any lake file
//! (decoded, and as raw bytes), any record of the pseudonymized topics, any
//! log line of any service, or any metric. A positive control proves the
//! scanner finds them where they are allowed (the raw topic).

mod helpers;

use aho_corasick::AhoCorasick;
use chitose_ingest::simulate::{Generator, SimConfig, Verdict};
use chitose_schemas::catalog::{RAW_EVENT, SchemaStore};
use chitose_schemas::framing::put_soe_header;
use chitose_schemas::json::JsonToAvro;
use chitose_schemas::render::Renderer;
use serde_json::Value;
use std::collections::BTreeSet;
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
    let mut g = Generator::new(SimConfig {
        seed: 77,
        patients: 800,
        bad_share: 0.05,
        prefectures: vec!["27".into()],
        hub: Some("27".into()),
        ..SimConfig::default()
    })
    .unwrap();
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
                // A hub that typed the patient's name into a kept field.
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
    let deadline = Instant::now() + Duration::from_secs(180);
    let scrapes: Vec<String> = loop {
        std::thread::sleep(Duration::from_secs(1));
        if let [Some(i), Some(t), Some(k)] = &p.scrape()[..]
            && helpers::metric_sum(k, "chitose_sink_rows_total") as u64 >= good
            && helpers::metric_sum(t, "chitose_transform_dlq_total") as u64 >= echoed
        {
            break vec![i.clone(), t.clone(), k.clone()];
        }
        assert!(
            Instant::now() < deadline,
            "pipeline did not drain: {}",
            p.dir.display()
        );
    };
    p.stop();
    let (kafka, prefix, lake) = (p.kafka.clone(), p.prefix.clone(), p.lake.clone());

    let needles: Vec<String> = identifiers.into_iter().collect();
    let ac = AhoCorasick::new(&needles).unwrap();
    let mut found: Vec<(String, String)> = Vec::new();
    let mut scan = |what: String, hay: &[u8]| {
        for h in hits(&ac, &needles, hay) {
            found.push((what.clone(), h));
        }
    };

    // The lake: every value of every row (decoded), and every file's bytes.
    let dump = dir.join("lake-dump.jsonl");
    let out = Command::new(helpers::python())
        .arg(helpers::repo().join("tests/python/read_lake.py"))
        .arg(&lake)
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
    assert_eq!(
        rows, good,
        "every clean record landed; the echoed ones did not"
    );
    scan("lake rows".into(), &std::fs::read(&dump).unwrap());
    let mut lake_files = Vec::new();
    files(&lake, &mut lake_files);
    for f in &lake_files {
        scan(f.display().to_string(), &std::fs::read(f).unwrap());
    }
    // Every record of the pseudonymized topics: key, value, headers.
    let mut records = 0;
    for t in chitose_schemas::raw::EventType::ALL {
        let topic = format!("{prefix}.pseudo.{}", t.symbol());
        for r in helpers::read_topic_bytes(&kafka, &topic) {
            records += 1;
            scan(format!("{topic} record"), &r.value);
            scan(format!("{topic} key"), &r.key.unwrap_or_default());
            for (k, v) in &r.headers {
                scan(format!("{topic} header {k}"), v.as_bytes());
            }
        }
    }
    assert!(records as u64 >= good);
    // Every log line of every service (debug level), every metric.
    for name in ["ingest", "transform", "sink"] {
        scan(format!("{name} log"), &p.log(name));
    }
    for (name, text) in ["ingest", "transform", "sink"].iter().zip(&scrapes) {
        scan(format!("{name} metrics"), text.as_bytes());
    }
    assert!(
        found.is_empty(),
        "{} identifier(s) found, e.g. {:?}",
        found.len(),
        &found[..found.len().min(5)]
    );

    // Positive control: the scanner finds the identifiers where they may be.
    let mut control = 0;
    for r in helpers::read_topic_bytes(&kafka, &format!("{prefix}.raw.27")) {
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
