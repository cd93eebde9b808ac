//! The generator: reproducible, realistic, and its bad mode covered.

use chitose_ingest::edge::Edge;
use chitose_ingest::simulate::{
    BadKind, GeneratedLine, Generator, SimConfig, Verdict, insurer_check_digit,
};
use chitose_schemas::RawCodec;
use chitose_schemas::catalog::{RAW_EVENT, SchemaStore};
use chitose_schemas::codec::{AvroRecord, Timestamp};
use chitose_schemas::json::JsonToAvro;
use chitose_schemas::raw::{EventType, Payload, RawEvent};
use chitose_schemas::reference::Reference;
use std::collections::{HashMap, HashSet};
use std::path::Path;

fn now() -> Timestamp {
    // A fixed "now" after the default event window, so results do not
    // depend on the day the tests run.
    Timestamp::parse("2026-06-01T00:00:00+09:00").unwrap()
}

fn lines(cfg: SimConfig, n: usize) -> Vec<GeneratedLine> {
    let mut g = Generator::new(cfg).unwrap();
    (0..n).map(|_| g.next_line()).collect()
}

fn small(seed: u64, bad_share: f64) -> SimConfig {
    SimConfig {
        seed,
        patients: 2_000,
        bad_share,
        ..SimConfig::default()
    }
}

#[test]
fn golden_output_for_a_fixed_seed_is_stable() {
    let got: Vec<u8> = lines(small(42, 0.2), 60)
        .into_iter()
        .flat_map(|l| {
            let mut b = l.bytes;
            b.push(b'\n');
            b
        })
        .collect();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/simulate-seed42.ndjson");
    if std::env::var_os("CHITOSE_BLESS").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read(&golden).expect("golden file (CHITOSE_BLESS=1 writes it)");
    assert!(
        got == want,
        "generator output for seed 42 changed; if on purpose, re-bless with CHITOSE_BLESS=1 and say why in the commit"
    );
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let a = lines(small(7, 0.1), 500);
    let b = lines(small(7, 0.1), 500);
    let c = lines(small(8, 0.1), 500);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn good_lines_are_accepted_and_all_three_encodings_agree() {
    let store = SchemaStore::embedded();
    let edge = Edge::new(&store, None);
    let codec = RawCodec::new(store.clone());
    let current = store.latest(RAW_EVENT).unwrap();
    let mut g = Generator::new(small(11, 0.0)).unwrap();
    let mut types = HashMap::new();
    for _ in 0..5_000 {
        let ev = g.next_event();
        let json = serde_json::to_vec(&ev).unwrap();
        let accepted = edge
            .accept(&json, now())
            .unwrap_or_else(|e| panic!("a good event was rejected: {e}"));
        // JSON → Avro (schema-driven) and the Rust codec write the same bytes…
        assert_eq!(&accepted.message[10..], ev.to_datum().as_slice());
        // …which decode back to the same event, through the framing…
        assert_eq!(codec.decode(&accepted.message).unwrap(), ev);
        assert_eq!(accepted.event, ev);
        // …and which apache-avro reads with the shipped .avsc alone.
        let mut datum = &accepted.message[10..];
        apache_avro::from_avro_datum(&current.schema, &mut datum, None).unwrap();
        assert!(datum.is_empty(), "apache-avro left bytes unread");
        *types.entry(ev.event_type).or_insert(0) += 1;
    }
    // Every type but corrections, which only SS-MIX2 cancellations make.
    assert_eq!(
        types.len(),
        EventType::ALL.len() - 1,
        "every event type appears: {types:?}"
    );
}

#[test]
fn every_bad_kind_is_rejected_with_its_field_and_reason() {
    let store = SchemaStore::embedded();
    let mut g = Generator::new(small(3, 0.0)).unwrap();
    for &kind in BadKind::ALL {
        for _ in 0..5 {
            let line = g.bad_line(kind);
            let edge = Edge::new(&store, Some(line.hub_prefecture.clone()));
            let err = edge
                .accept(&line.bytes, now())
                .err()
                .unwrap_or_else(|| panic!("{kind:?} was accepted"));
            let (reason, path) = kind.expected();
            assert_eq!(
                (err.reason, err.path.as_str()),
                (reason, path),
                "{kind:?}: {err}"
            );
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("{path}: expected ")),
                "{kind:?}: {msg}"
            );
            assert!(msg.contains(", found "), "{kind:?}: {msg}");
        }
    }
}

#[test]
fn errors_never_echo_patient_values() {
    let store = SchemaStore::embedded();
    let mut g = Generator::new(small(5, 0.0)).unwrap();
    for &kind in BadKind::ALL {
        let line = g.bad_line(kind);
        let edge = Edge::new(&store, Some(line.hub_prefecture.clone()));
        let msg = edge.accept(&line.bytes, now()).unwrap_err().to_string();
        // Every string value of the record, as sent, must be absent from
        // the message (short generic ones aside: "male", "01", …).
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line.bytes) {
            let mut strings = Vec::new();
            collect_strings(&v, &mut strings);
            for s in strings.iter().filter(|s| s.chars().count() >= 5) {
                assert!(
                    !msg.contains(s.as_str()),
                    "{kind:?}: message echoes a value: {msg}"
                );
            }
        }
    }
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

#[test]
fn bad_mode_counts_reconcile() {
    let store = SchemaStore::embedded();
    let ls = lines(small(9, 0.3), 3_000);
    let (mut ok, mut rejected) = (0, 0);
    let mut kinds = HashSet::new();
    let mut edges: HashMap<String, Edge> = HashMap::new();
    for l in &ls {
        let edge = edges
            .entry(l.hub_prefecture.clone())
            .or_insert_with(|| Edge::new(&store, Some(l.hub_prefecture.clone())));
        match (edge.accept(&l.bytes, now()), &l.verdict) {
            (Ok(a), Verdict::Good { event_id }) => {
                assert_eq!(&a.event.event_id, event_id);
                ok += 1;
            }
            (Err(_), Verdict::Bad(k)) => {
                kinds.insert(*k);
                rejected += 1;
            }
            (r, v) => panic!(
                "verdict {v:?} but edge said {:?}",
                r.map(|a| a.event.event_id)
            ),
        }
    }
    assert_eq!(ok + rejected, ls.len());
    assert!(
        rejected > 700 && rejected < 1100,
        "bad share 0.3 gave {rejected} of 3000"
    );
    assert_eq!(
        kinds.len(),
        BadKind::ALL.len(),
        "every kind appears in a long run"
    );
}

#[test]
fn population_is_realistic_and_linkable_across_prefectures() {
    let r = Reference::load().unwrap();
    let g = Generator::new(SimConfig {
        patients: 5_000,
        ..SimConfig::default()
    })
    .unwrap();
    let mut cross = 0;
    let mut homes = HashSet::new();
    for p in g.patients() {
        let id = &p.identity;
        let muni = r
            .municipality(id.municipality_code.as_deref().unwrap())
            .unwrap();
        assert_eq!(
            muni.prefecture, p.hubs[0].prefecture,
            "lives in the home hub's prefecture"
        );
        let postal = id.postal_code.as_deref().unwrap();
        assert!(
            muni.postal_prefixes
                .iter()
                .any(|x| postal.starts_with(x.as_str())),
            "postal code of the municipality"
        );
        assert!(
            id.name_kana
                .as_deref()
                .unwrap()
                .chars()
                .all(|c| ('\u{30A0}'..='\u{30FF}').contains(&c) || c == '\u{3000}')
        );
        if let Some(ins) = &id.insurance {
            let (body, check) = ins.insurer_number.split_at(ins.insurer_number.len() - 1);
            assert_eq!(
                insurer_check_digit(body).to_string(),
                check,
                "insurer number check digit"
            );
        }
        for h in &p.hubs {
            assert!(h.facility_code.starts_with(&h.prefecture));
        }
        if p.hubs.len() > 1 {
            assert_ne!(p.hubs[0].prefecture, p.hubs[1].prefecture);
            assert_ne!(p.hubs[0].local_patient_id, p.hubs[1].local_patient_id);
            cross += 1;
        }
        homes.insert(p.hubs[0].prefecture.clone());
    }
    assert_eq!(
        homes.len(),
        8,
        "all eight Kansai Union prefectures have patients"
    );
    assert!(
        (350..650).contains(&cross),
        "about 10% seen in two prefectures, got {cross}"
    );
    let ids: HashSet<_> = g
        .patients()
        .iter()
        .flat_map(|p| p.hubs.iter().map(|h| h.local_patient_id.clone()))
        .collect();
    assert_eq!(
        ids.len(),
        g.patients().iter().map(|p| p.hubs.len()).sum::<usize>(),
        "local ids are unique"
    );
}

#[test]
fn clinical_content_has_realistic_shapes() {
    let r = Reference::load().unwrap();
    let mut g = Generator::new(small(21, 0.0)).unwrap();
    let (mut hypertension, mut diagnoses, mut high_hba1c, mut hba1c) = (0, 0, 0, 0);
    for _ in 0..20_000 {
        let ev: RawEvent = g.next_event();
        match &ev.payload {
            // The JP-CLINS way: a MEDIS management number only.
            Payload::Diagnosis(d) if d.icd10_code.is_none() => {
                assert_eq!(d.medis_disease_number.as_ref().map(String::len), Some(8));
            }
            Payload::Diagnosis(d) => {
                let code = d.icd10_code.as_ref().expect("guarded");
                diagnoses += 1;
                hypertension += usize::from(code == "I10");
                assert!(r.icd10_chapter(code).is_some());
                assert!(
                    r.icd10_block(code).is_some(),
                    "generator codes have blocks: {code}"
                );
            }
            Payload::LabResult(l) => {
                assert_eq!(l.jlac10_code.len(), 17);
                if l.jlac10_code.starts_with("3D046") {
                    hba1c += 1;
                    let v = l.value_numeric.unwrap();
                    assert!((3.0..15.0).contains(&v), "HbA1c {v}");
                    high_hba1c += usize::from(v >= 6.5);
                }
            }
            Payload::Prescription(p) => match &p.yj_code {
                Some(yj) => {
                    assert_eq!(yj.len(), 12);
                    assert!(r.yj_category(yj).is_some(), "{yj}");
                }
                None => assert_eq!(p.hot_code.as_ref().map(String::len), Some(9)),
            },
            Payload::Checkup(c) => {
                let bmi = c.bmi.unwrap();
                let implied = c.weight_kg.unwrap() / (c.height_cm.unwrap() / 100.0).powi(2);
                assert!(
                    (bmi - implied).abs() < 0.1,
                    "BMI agrees with height and weight"
                );
                assert!(c.systolic_bp.unwrap() > c.diastolic_bp.unwrap());
            }
            Payload::Vaccination(v) => assert!(v.vaccine_code.starts_with("631")),
            Payload::Allergy(a) => {
                assert!(a.substance_code.as_ref().is_some_and(|c| c.len() == 12));
            }
            Payload::Correction(_) => panic!("the stream generator makes no corrections"),
            Payload::Encounter(e) => {
                if let Some(end) = e.ended_at {
                    assert!(end > ev.occurred_at);
                }
            }
        }
        assert_eq!(ev.payload.event_type(), ev.event_type);
        let day = ev.occurred_at.jst_date().unwrap();
        assert!(day >= g.config().start_date && day >= ev.patient.birth_date.to_naive().unwrap());
    }
    // Hypertension is the commonest diagnosis in Japanese outpatient care.
    let share = hypertension as f64 / diagnoses as f64;
    assert!((0.1..0.25).contains(&share), "I10 share {share}");
    let high = high_hba1c as f64 / hba1c as f64;
    assert!((0.03..0.35).contains(&high), "HbA1c ≥ 6.5 share {high}");
}

#[test]
fn event_mix_is_configurable() {
    let mut cfg = small(4, 0.0);
    cfg.mix = chitose_ingest::simulate::EventMix {
        encounter: 0,
        diagnosis: 0,
        lab_result: 1,
        prescription: 0,
        checkup: 1,
        vaccination: 0,
        allergy: 0,
    };
    let mut g = Generator::new(cfg).unwrap();
    let types: HashSet<EventType> = (0..500).map(|_| g.next_event().event_type).collect();
    assert_eq!(
        types,
        HashSet::from([EventType::LabResult, EventType::Checkup])
    );
}

#[test]
fn a_bad_config_names_the_key() {
    let mut cfg = small(1, 1.5);
    let e = Generator::new(cfg.clone()).unwrap_err().to_string();
    assert!(
        e.starts_with("simulate.bad_share: expected a share from 0 to 1"),
        "{e}"
    );
    cfg.bad_share = 0.0;
    cfg.prefectures = vec!["13".into()];
    let e = Generator::new(cfg).unwrap_err().to_string();
    assert!(
        e.starts_with("simulate.prefectures: expected Kansai Union codes"),
        "{e}"
    );
}

#[test]
fn old_writer_version_is_resolved_to_the_current_one() {
    // A hub still on raw_event v1: its data must decode with v2 readers,
    // source_format taking its default.
    let store = SchemaStore::embedded();
    let v1 = store.versions(RAW_EVENT)[0].clone();
    assert_eq!(v1.version, 1);
    let conv = JsonToAvro::new(v1.schema.clone()).unwrap();
    let codec = RawCodec::new(store.clone());
    let mut g = Generator::new(small(12, 0.0)).unwrap();
    let mut tried = 0;
    while tried < 200 {
        let ev = g.next_event();
        // What v1 could say: no allergies, no MEDIS-only diagnoses, no
        // HOT-only prescriptions (contract v3).
        let v1_can = match &ev.payload {
            chitose_schemas::raw::Payload::Allergy(_) => false,
            chitose_schemas::raw::Payload::Diagnosis(d) => d.icd10_code.is_some(),
            chitose_schemas::raw::Payload::Prescription(p) => p.yj_code.is_some(),
            _ => true,
        };
        if !v1_can {
            continue;
        }
        tried += 1;
        let mut json = serde_json::to_value(&ev).unwrap();
        json.as_object_mut().unwrap().remove("source_format");
        for k in ["medis_disease_number", "hot_code", "generic_name_code"] {
            json["payload"].as_object_mut().unwrap().remove(k);
        }
        let mut msg = Vec::new();
        chitose_schemas::framing::put_soe_header(&mut msg, v1.fingerprint);
        conv.convert_value(&json, &mut msg).unwrap();
        let back = codec.decode(&msg).unwrap();
        assert_eq!(back.source_format, "unspecified");
        assert_eq!(
            RawEvent {
                source_format: ev.source_format.clone(),
                ..back
            },
            ev
        );
    }
}

#[test]
fn truncated_and_foreign_messages_are_errors_not_panics() {
    let store = SchemaStore::embedded();
    let codec = RawCodec::new(store.clone());
    let mut g = Generator::new(small(13, 0.0)).unwrap();
    let mut msg = Vec::new();
    codec.encode_soe(&g.next_event(), &mut msg);
    for cut in 0..msg.len() {
        assert!(
            codec.decode(&msg[..cut]).is_err(),
            "a message cut at {cut} decoded"
        );
    }
    let mut wrong = msg.clone();
    wrong[2] ^= 0xff;
    assert!(
        codec
            .decode(&wrong)
            .unwrap_err()
            .to_string()
            .contains("expected the fingerprint of a known schema")
    );
    let pseudo = store.latest("chitose.pseudo.Encounter").unwrap();
    let mut foreign = msg.clone();
    foreign[2..10].copy_from_slice(&pseudo.fingerprint.to_le_bytes());
    assert!(
        codec
            .decode(&foreign)
            .unwrap_err()
            .to_string()
            .contains("expected a chitose.raw.RawEvent schema")
    );
}

/// `value` as JSON text with every object's keys in `order`.
fn reordered(value: &serde_json::Value, reverse: bool, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            out.push('{');
            let entries: Vec<_> = if reverse {
                map.iter().rev().collect()
            } else {
                map.iter().collect()
            };
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                reordered(v, reverse, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                reordered(v, reverse, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The converter streams JSON straight to Avro and falls back to the
/// `Value` tree for what it does not take; both must give the same bytes
/// and the same error for every record: generated good and bad ones, the
/// same with keys sorted (fields out of the schema's order), reversed (a
/// payload before its event_type), without their null fields (defaults),
/// and the hand-written bad-input corpus. The fast path must carry the
/// exporters' order and the sorted one, or the agreement proves nothing.
#[test]
fn the_streaming_converter_agrees_with_the_tree_on_every_record() {
    let store = SchemaStore::embedded();
    let conv = JsonToAvro::new(store.latest(RAW_EVENT).unwrap().schema.clone()).unwrap();
    let mut inputs: Vec<(&str, Vec<u8>)> = Vec::new();
    for l in lines(small(7, 0.3), 4_000) {
        let good = matches!(l.verdict, Verdict::Good { .. });
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&l.bytes) {
            for (label, reverse) in [("sorted", false), ("reversed", true)] {
                let mut s = String::new();
                reordered(&v, reverse, &mut s);
                inputs.push((if good { label } else { "bad" }, s.into_bytes()));
            }
            if let serde_json::Value::Object(mut m) = v.clone() {
                m.retain(|_, x| !x.is_null());
                inputs.push(("bad", serde_json::to_vec(&m).unwrap()));
            }
        }
        inputs.push((if good { "generated" } else { "bad" }, l.bytes));
    }
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/json");
    for f in std::fs::read_dir(&corpus).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "ndjson") {
            for l in std::fs::read(&f).unwrap().split(|b| *b == b'\n') {
                inputs.push(("bad", l.to_vec()));
            }
        }
    }
    let mut streamed: HashMap<&str, (usize, usize)> = HashMap::new();
    let (mut accepted, mut refused) = (0, 0);
    for (label, input) in &inputs {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let got = conv.convert(input, &mut a);
        let want = conv.convert_tree(input, &mut b);
        assert_eq!(got, want, "{label}: {}", String::from_utf8_lossy(input));
        if got.is_ok() {
            assert_eq!(a, b, "{label}: {}", String::from_utf8_lossy(input));
            accepted += 1;
        } else {
            refused += 1;
        }
        let e = streamed.entry(label).or_default();
        e.0 += usize::from(conv.streams(input));
        e.1 += 1;
    }
    assert!(
        accepted > 5_000 && refused > 500,
        "{accepted} accepted, {refused} refused"
    );
    for label in ["generated", "sorted"] {
        let (fast, all) = streamed[label];
        assert_eq!(fast, all, "{label}: {fast} of {all} on the fast path");
    }
    // A payload before its event_type is the tree's to convert.
    let (fast, all) = streamed["reversed"];
    assert!(
        fast == 0 && all > 1_000,
        "reversed: {fast} of {all} streamed"
    );
}

/// A source decodes each accepted record over the last one; what it sends
/// and what it checked must be what a fresh decode gives, through bad
/// records and every event type.
#[test]
fn an_edge_reusing_its_scratch_accepts_what_a_fresh_one_accepts() {
    let edge = Edge::new(&SchemaStore::embedded(), Some("27".into()));
    let mut scratch = chitose_ingest::edge::EdgeScratch::default();
    let mut cfg = small(11, 0.3);
    cfg.hub = Some("27".into());
    cfg.prefectures = vec!["27".into()];
    let (mut accepted, mut types) = (0, HashSet::new());
    for l in lines(cfg, 3_000) {
        let fresh = edge.accept(&l.bytes, now());
        let reused = edge.accept_with(&l.bytes, now(), &mut scratch);
        match (fresh, reused) {
            (Ok(a), Ok(message)) => {
                assert_eq!(a.message, message);
                assert_eq!(&a.event, scratch.event());
                types.insert(a.event.event_type.symbol());
                accepted += 1;
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            (a, b) => panic!("fresh {a:?}, reused {b:?}"),
        }
    }
    assert!(
        accepted > 1_500 && types.len() >= 6,
        "{accepted} accepted, types {types:?}"
    );
}
