//! The FHIR mapping core against FHIR nobody here wrote: the published
//! JP-CLINS, 電子処方箋 and 自治体検診 examples (tests/corpus/fhir/,
//! SOURCES.md there), plus hand-written bundles for what the examples do
//! not show (several patients in one bundle).

use chitose_ingest::edge::Edge;
use chitose_ingest::fhir::{Entry, Skip, map_bundle};
use chitose_schemas::catalog::SchemaStore;
use chitose_schemas::codec::Timestamp;
use chitose_schemas::raw::{Payload, RawEvent};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/fhir")
}

/// The examples as a hub would send them: each published Bundle as it is;
/// the single-resource examples of a guide wrapped into one collection
/// Bundle (fullUrl = a server URL ending in Type/id), as a hub exporting
/// them would.
fn bundles() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|d| d.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        let mut singles = Vec::new();
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            let name = format!(
                "{}/{}",
                dir.file_name().unwrap().to_string_lossy(),
                f.file_name().unwrap().to_string_lossy()
            );
            if v["resourceType"] == "Bundle" {
                out.push((name, bytes));
            } else {
                singles.push(json!({
                    "fullUrl": format!("http://example.jp/fhir/{}/{}", v["resourceType"].as_str().unwrap(), v["id"].as_str().unwrap()),
                    "resource": v,
                }));
            }
        }
        if !singles.is_empty() {
            let b = json!({"resourceType": "Bundle", "type": "collection", "entry": singles});
            out.push((
                format!(
                    "{}/(single resources)",
                    dir.file_name().unwrap().to_string_lossy()
                ),
                serde_json::to_vec(&b).unwrap(),
            ));
        }
    }
    out
}

/// One line per entry: file, index, resource type, outcome.
fn outcomes(hub: &str) -> (Vec<String>, Vec<RawEvent>) {
    let edge = Edge::new(&SchemaStore::embedded(), Some(hub.into()));
    let now = Timestamp::parse("2026-06-01T00:00:00+09:00").unwrap();
    let mut lines = Vec::new();
    let mut events = Vec::new();
    for (name, bytes) in bundles() {
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let entries = map_bundle(&bytes, hub).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (i, e) in entries {
            let rt = v["entry"][i]["resource"]["resourceType"]
                .as_str()
                .unwrap_or("?");
            let outcome = match e {
                Entry::Event(ev) => match edge.accept(&serde_json::to_vec(&ev).unwrap(), now) {
                    Ok(a) => {
                        let t = a.event.event_type.symbol();
                        events.push(a.event);
                        format!("event {t}")
                    }
                    Err(e) => format!("rejected at the edge: {e}"),
                },
                Entry::Rejected(e) => format!("rejected: {e}"),
                Entry::Skipped(k) => format!("skipped {}", k.as_str()),
            };
            lines.push(format!("{name}\t{i}\t{rt}\t{outcome}"));
        }
    }
    (lines, events)
}

#[test]
fn published_examples_land_with_the_outcome_listed_per_entry() {
    let (lines, _) = outcomes("13");
    let got = lines.join("\n") + "\n";
    let path = corpus().join("expected.tsv");
    if std::env::var_os("CHITOSE_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        got, want,
        "outcomes differ from tests/corpus/fhir/expected.tsv"
    );
}

#[test]
fn nine_in_ten_clinical_entries_of_the_published_bundles_land() {
    let (lines, events) = outcomes("13");
    let clinical = [
        "Encounter",
        "Condition",
        "Observation",
        "MedicationRequest",
        "Immunization",
        "AllergyIntolerance",
    ];
    let (mut landed, mut total) = (0, 0);
    for l in lines.iter().filter(|l| !l.contains("(single resources)")) {
        let f: Vec<&str> = l.split('\t').collect();
        if !clinical.contains(&f[2])
            || f[3].starts_with("skipped context")
            || f[3].starts_with("skipped observation_group")
        {
            continue;
        }
        total += 1;
        if f[3].starts_with("event") || f[3] == "skipped checkup_item" {
            landed += 1;
        }
    }
    assert!(total >= 50, "{total}");
    assert!(
        landed * 10 >= total * 9,
        "{landed} of {total} clinical entries landed"
    );
    // MEDIS-only diagnoses land with their number and no ICD-10; HOT-only
    // prescriptions with their HOT code; allergies with their JFAGY code.
    assert!(events.iter().any(|e| matches!(&e.payload, Payload::Diagnosis(d) if d.icd10_code.is_none() && d.medis_disease_number.as_deref() == Some("20065011"))));
    assert!(events.iter().any(|e| matches!(&e.payload, Payload::Prescription(p) if p.yj_code.is_none() && p.hot_code.is_some())));
    assert!(events.iter().any(|e| matches!(&e.payload, Payload::Allergy(a) if a.substance_code.as_deref() == Some("J9FC11310000"))));
    // The 電子処方箋 Coverage (payor by reference, full-width number) is
    // read: its prescriptions link by insurance.
    let insured: Vec<_> = events
        .iter()
        .filter(|e| e.event_type.symbol() == "prescription")
        .filter_map(|e| e.patient.insurance.as_ref())
        .map(|i| (i.insurer_number.as_str(), i.insured_branch.as_deref()))
        .collect();
    assert!(insured.contains(&("06123456", Some("01"))), "{insured:?}");
}

fn patient(id: &str, local: &str, kana: &str, birth: &str) -> Value {
    json!({"fullUrl": format!("urn:uuid:00000000-0000-4000-8000-00000000000{id}"), "resource": {
        "resourceType": "Patient", "id": id,
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.11319999999", "value": local}],
        "name": [{"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation", "valueCode": "SYL"}], "text": kana}],
        "gender": "female", "birthDate": birth}})
}

/// Two patients, two Coverages, two facilities in one collection, with
/// every reference form: on main both patients' records took the first
/// Coverage (one pseudonym for two people) and the first Organization.
#[test]
fn a_bundle_of_two_patients_links_each_record_to_its_own_patient_insurance_and_facility() {
    let cov_ext = "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_";
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        patient("1", "A-001", "ヤマダ　ハナコ", "1960-04-01"),
        patient("2", "B-002", "スズキ　ユミ", "1975-09-30"),
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000a1", "resource": {"resourceType": "Organization", "id": "ins1",
            "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.61", "value": "06131111"}]}},
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000c1", "resource": {"resourceType": "Coverage", "id": "c1",
            "extension": [{"url": format!("{cov_ext}InsuredPersonSymbol"), "valueString": "あ１"},
                          {"url": format!("{cov_ext}InsuredPersonNumber"), "valueString": "１２３"},
                          {"url": format!("{cov_ext}InsuredPersonSubNumber"), "valueString": "01"}],
            "beneficiary": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"},
            "payor": [{"reference": "urn:uuid:00000000-0000-4000-8000-0000000000a1"}]}},
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000c2", "resource": {"resourceType": "Coverage", "id": "c2",
            "extension": [{"url": format!("{cov_ext}InsuredPersonNumber"), "valueString": "987"},
                          {"url": format!("{cov_ext}InsuredPersonSubNumber"), "valueString": "02"}],
            "beneficiary": {"reference": "Patient/2"},
            "payor": [{"identifier": {"system": "urn:oid:1.2.392.100495.20.3.61", "value": "138222"}}]}},
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000f1", "resource": {"resourceType": "Organization", "id": "hospital",
            "identifier": [{"system": "http://jpfhir.jp/fhir/core/IdSystem/insurance-medical-institution-no", "value": "1311111111"}]}},
        {"fullUrl": "http://hub.example.jp/fhir/Organization/clinic", "resource": {"resourceType": "Organization", "id": "clinic",
            "extension": [
                {"url": "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Organization_PrefectureNo", "valueCoding": {"system": "http://jpfhir.jp/fhir/core/mhlw/CodeSystem/PrefectureNo-2digits", "code": "13"}},
                {"url": "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Organization_InsuranceOrganizationCategory", "valueIdentifier": {"value": "6"}},
                {"url": "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Organization_InsuranceOrganizationNo", "valueIdentifier": {"value": "2222222"}}]}},
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000e1", "resource": {"resourceType": "Encounter", "id": "e1",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"},
            "serviceProvider": {"reference": "urn:uuid:00000000-0000-4000-8000-0000000000f1"},
            "period": {"start": "2025-05-01T09:00:00+09:00"}}},
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000d1", "resource": {"resourceType": "Condition", "id": "d1",
            "code": {"coding": [{"system": "http://jpfhir.jp/fhir/core/mhlw/CodeSystem/ICD10-2013-full", "code": "E11.9"}]},
            "subject": {"reference": "Patient/1"},
            "encounter": {"reference": "urn:uuid:00000000-0000-4000-8000-0000000000e1"}}},
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000d2", "resource": {"resourceType": "Condition", "id": "d2",
            "contained": [{"resourceType": "PractitionerRole", "id": "role", "organization": {"reference": "http://hub.example.jp/fhir/Organization/clinic/_history/3"}}],
            "code": {"coding": [{"system": "http://medis.or.jp/CodeSystem/master-disease-keyNumber", "code": "20061593"}]},
            "subject": {"reference": "http://hub.example.jp/fhir/Patient/2"},
            "asserter": {"reference": "#role"},
            "recordedDate": "2025-05-02"}},
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000m1", "resource": {"resourceType": "MedicationRequest", "id": "m1",
            "contained": [{"resourceType": "Medication", "id": "med", "code": {"coding": [{"system": "http://capstandard.jp/iyaku.info/CodeSystem/YJ-code", "code": "3962002F1031"}]}}],
            "medicationReference": {"reference": "#med"},
            "subject": {"reference": "Patient/2"},
            "requester": {"reference": "Organization/clinic"},
            "authoredOn": "2025-05-02"}},
    ]});
    let mapped = map_bundle(&serde_json::to_vec(&bundle).unwrap(), "13").unwrap();
    let edge = Edge::new(&SchemaStore::embedded(), Some("13".into()));
    let now = Timestamp::parse("2026-06-01T00:00:00+09:00").unwrap();
    let events: Vec<RawEvent> = mapped
        .into_iter()
        .filter_map(|(i, e)| match e {
            Entry::Event(v) => Some(
                edge.accept(&serde_json::to_vec(&v).unwrap(), now)
                    .unwrap_or_else(|e| panic!("entry {i}: {e}"))
                    .event,
            ),
            Entry::Rejected(e) => panic!("entry {i}: {e}"),
            Entry::Skipped(k) => {
                assert_eq!(k, Skip::Context, "entry {i}");
                None
            }
        })
        .collect();
    let seen: Vec<(&str, &str, &str, &str, Option<&str>)> = events
        .iter()
        .map(|e| {
            let ins = e
                .patient
                .insurance
                .as_ref()
                .expect("each patient's own Coverage");
            (
                e.event_type.symbol(),
                e.patient.local_patient_id.as_str(),
                e.facility_code.as_str(),
                ins.insurer_number.as_str(),
                ins.insured_branch.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("encounter", "A-001", "1311111111", "06131111", Some("01")),
            ("diagnosis", "A-001", "1311111111", "06131111", Some("01")),
            ("diagnosis", "B-002", "1362222222", "138222", Some("02")),
            ("prescription", "B-002", "1362222222", "138222", Some("02")),
        ]
    );
    // Event ids are stable and say nothing of the resource ids.
    assert!(events.iter().all(|e| e.event_id.starts_with("fhir-")
        && !e.event_id.contains("d1")
        && e.event_id.len() == 45));
}

#[test]
fn a_duplicated_key_refuses_the_bundle_and_a_byte_order_mark_does_not() {
    let dup =
        br#"{"resourceType": "Bundle", "type": "collection", "entry": [], "type": "document"}"#;
    let e = map_bundle(dup, "13").unwrap_err();
    assert!(e.to_string().contains("a key given twice at line 1"), "{e}");
    let mut bom = "\u{feff}".as_bytes().to_vec();
    bom.extend_from_slice(br#"{"resourceType": "Bundle", "type": "collection", "entry": []}"#);
    assert_eq!(map_bundle(&bom, "13").unwrap(), vec![]);
}

#[test]
fn the_hand_written_fixture_maps_as_the_spine_tests_expect() {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jp-core-bundle.fhir.json"),
    )
    .unwrap();
    let got: Vec<String> = map_bundle(&bytes, "27")
        .unwrap()
        .into_iter()
        .map(|(i, e)| match e {
            Entry::Event(v) => format!("{i} {}", v["event_type"].as_str().unwrap()),
            Entry::Rejected(e) => format!("{i} rejected {}", e.path),
            Entry::Skipped(k) => format!("{i} {}", k.as_str()),
        })
        .collect();
    assert_eq!(
        got,
        [
            "0 context",
            "1 context",
            "2 context",
            "3 encounter",
            "4 diagnosis",
            "5 lab_result",
            "6 rejected entry[6].resource(Observation)",
            "7 prescription",
            "8 vaccination",
            "9 not_an_event",
            "10 checkup",
            "11 checkup_item",
            "12 checkup_item",
        ]
    );
}

// ---------------------------------------------------------------- SS-MIX2

use chitose_ingest::ssmix2::tree::Walker;
use chitose_ingest::ssmix2::{FileName, map_message};

fn ssmix2_corpus() -> PathBuf {
    corpus().join("../ssmix2/nho-sample")
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// What one message becomes, as a line: the event types the edge accepted,
/// `skipped`, or the reject.
fn outcome_of(edge: &Edge, now: Timestamp, f: &FileName, bytes: &[u8]) -> String {
    match map_message(f, bytes, "2210000001", "22", None) {
        Ok(m) if m.skipped => "skipped".to_owned(),
        Ok(m) => m
            .events
            .iter()
            .map(
                |e| match edge.accept(&serde_json::to_vec(e).unwrap(), now) {
                    Ok(a) => a.event.event_type.symbol().to_owned(),
                    Err(e) => format!("edge: {e}"),
                },
            )
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => format!("rejected: {e}"),
    }
}

/// The published sample storage (SSMIX2DataTestingTool, SOURCES.md): one
/// line per message with what it became.
#[test]
fn the_published_ss_mix2_sample_maps_with_the_outcome_listed_per_message() {
    let root = ssmix2_corpus();
    let edge = Edge::new(&SchemaStore::embedded(), Some("22".into()));
    let now = Timestamp::parse("2026-06-01T00:00:00+09:00").unwrap();
    let mut lines = Vec::new();
    for p in files_under(&root) {
        let rel = p.strip_prefix(&root).unwrap().to_string_lossy().to_string();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let outcome = match FileName::parse(&name) {
            Err(e) => format!("bad name: {e}"),
            Ok(f) => outcome_of(&edge, now, &f, &std::fs::read(&p).unwrap()),
        };
        lines.push(format!("{rel}\t{outcome}"));
    }
    // The sample files several messages under a folder whose patient id
    // their PID-3 does not carry, which the walker refuses (it would merge
    // two people). Filed under their own PID-3, every mapping is
    // exercised on the published messages.
    for p in files_under(&root) {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&p).unwrap();
        let (Ok(mut f), Some(text)) = (
            FileName::parse(&name),
            chitose_ingest::ssmix2::decode(&bytes),
        ) else {
            continue;
        };
        let Some(pid3) = text
            .split(['\r', '\n'])
            .find(|l| l.starts_with("PID|"))
            .and_then(|l| l.split('|').nth(3))
            .and_then(|f| f.split('^').next())
        else {
            continue;
        };
        if pid3 == f.patient_id {
            continue;
        }
        f.patient_id = pid3.to_owned();
        let outcome = outcome_of(&edge, now, &f, &bytes);
        lines.push(format!("(filed under PID-3) {}\t{outcome}", f.data_type));
    }
    let got = lines.join("\n") + "\n";
    let path = root.join("../expected.tsv");
    if std::env::var_os("CHITOSE_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    assert_eq!(got, std::fs::read_to_string(&path).unwrap());
}

fn sample(data_type: &str) -> (FileName, Vec<u8>) {
    let p = files_under(&ssmix2_corpus())
        .into_iter()
        .find(|p| {
            p.to_string_lossy().contains("/9999013/") && p.parent().unwrap().ends_with(data_type)
        })
        .unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let mut f = FileName::parse(&p.file_name().unwrap().to_string_lossy()).unwrap();
    let text = chitose_ingest::ssmix2::decode(&bytes).unwrap();
    let pid3 = text
        .split('\r')
        .find(|l| l.starts_with("PID|"))
        .unwrap()
        .split('|')
        .nth(3)
        .unwrap()
        .split('^')
        .next()
        .unwrap()
        .to_owned();
    f.patient_id = pid3;
    (f, bytes)
}

fn payloads(data_type: &str, insurance: Option<&Value>) -> Vec<RawEvent> {
    let (f, bytes) = sample(data_type);
    let edge = Edge::new(&SchemaStore::embedded(), Some("22".into()));
    let now = Timestamp::parse("2026-06-01T00:00:00+09:00").unwrap();
    map_message(&f, &bytes, "2210000001", "22", insurance)
        .unwrap()
        .events
        .iter()
        .map(|e| {
            edge.accept(&serde_json::to_vec(e).unwrap(), now)
                .unwrap()
                .event
        })
        .collect()
}

#[test]
fn ss_mix2_fields_land_where_the_contract_puts_them() {
    let ins =
        json!({"insurer_number": "06131111", "insured_number": "１２３", "insured_symbol": "あ"});
    let d = payloads("PPR-01", Some(&ins));
    let Payload::Diagnosis(x) = &d[0].payload else {
        panic!()
    };
    assert_eq!(
        (
            x.icd10_code.as_deref(),
            x.medis_disease_number.as_deref(),
            x.medis_disease_code.as_deref(),
            x.is_primary
        ),
        (Some("K29.7"), Some("20054174"), Some("TSQF"), true)
    );
    assert_eq!(
        d[0].patient.name_kana.as_deref(),
        Some("カンジャ\u{3000}タロウ")
    );
    assert_eq!(
        d[0].patient.insurance.as_ref().unwrap().insurer_number,
        "06131111"
    );
    assert_eq!(d[0].source_format, "ssmix2");
    let l = payloads("OML-11", None);
    let Payload::LabResult(x) = &l[0].payload else {
        panic!()
    };
    assert_eq!(
        (
            x.jlac10_code.as_str(),
            x.value_numeric,
            x.reference_low,
            x.reference_high
        ),
        ("3A016000002327102", Some(1.7), Some(1.2), Some(2.0))
    );
    let Payload::Encounter(v) = &l[3].payload else {
        panic!()
    };
    assert_eq!(v.encounter_class.symbol(), "outpatient");
    let r = payloads("OMP-01", None);
    let Payload::Prescription(x) = &r[0].payload else {
        panic!()
    };
    assert_eq!(
        (
            x.hot_code.as_deref(),
            x.yj_code.as_deref(),
            x.days_supply,
            x.route.symbol()
        ),
        (Some("108665201"), None, Some(5), "oral")
    );
    let a = payloads("ADT-61", None);
    let Payload::Allergy(x) = &a[3].payload else {
        panic!()
    };
    assert_eq!(
        (
            x.substance_system.symbol(),
            x.substance_code.as_deref(),
            x.category.map(|c| c.symbol()),
            x.reaction_severity.map(|s| s.symbol())
        ),
        (
            "hot",
            Some("106824501"),
            Some("medication"),
            Some("moderate")
        )
    );
    // Event ids are keyed on facility, patient, kind and order, never the
    // timestamp or flag of the file: a cancellation withdraws the same id.
    let (mut f, bytes) = sample("OMP-01");
    let first = map_message(&f, &bytes, "2210000001", "22", None).unwrap();
    f.cancelled = true;
    f.timestamp = "20991231235959999".into();
    let cancelled = map_message(&f, &bytes, "2210000001", "22", None).unwrap();
    assert_eq!(
        cancelled.corrections, 3,
        "the three prescriptions, not the day's visit"
    );
    let ids = |m: &chitose_ingest::ssmix2::Mapped, t: &str| -> Vec<String> {
        m.events
            .iter()
            .filter(|e| e["event_type"] == t)
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&first, "prescription"), ids(&cancelled, "correction"));
    assert!(
        ids(&first, "prescription")
            .iter()
            .all(|i| !i.contains("9999013") && !i.contains("000000011000185"))
    );
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("chitose-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The generator's tree through the walker: every message is accounted
/// for (events + corrections + rejects + skips), cancellations withdraw
/// exactly the ids their orders made, a walker reopened on the same state
/// takes nothing twice, and a batch a crash left unwritten is re-made.
#[test]
fn the_walker_accounts_for_every_message_of_a_generated_tree_and_takes_each_once() {
    use chitose_ingest::simulate::{Generator, SimConfig, ssmix2::write_tree};
    let dir = scratch("walker");
    let (root, state) = (dir.join("storage"), dir.join("state"));
    let mut g = Generator::new(SimConfig {
        seed: 9,
        hub: Some("27".into()),
        prefectures: vec!["27".into()],
        ..SimConfig::default()
    })
    .unwrap();
    let written = write_tree(&mut g, &root, 400, 10).unwrap();
    assert!(written.cancellations >= 10);
    // Files younger than the minimum age (the EHR may still be writing
    // them) are left for a later pass, not taken half-written.
    let mut young = Walker::open(&root, &dir.join("young"), "2710000001", "27", 150, None)
        .unwrap()
        .with_min_age(std::time::Duration::from_secs(3600));
    let r = young.pass().unwrap();
    assert_eq!((r.messages, r.deferred), (0, written.messages));
    let mut w = Walker::open(&root, &state, "2710000001", "27", 150, None).unwrap();
    let r = w.pass().unwrap();
    assert_eq!(r.deferred, 0);
    assert_eq!(r.messages, written.messages);
    assert_eq!(r.rejected, 0);
    assert!(
        r.messages > r.skipped + r.correction_messages,
        "most messages make events"
    );
    assert_eq!(r.correction_messages, written.cancellations);
    // ADT-00s are the skipped ones.
    assert_eq!(
        r.skipped,
        files_under(&root)
            .iter()
            .filter(|p| p.to_string_lossy().contains("ADT-00"))
            .count() as u64
    );
    let queue = state.join("queue");
    let mut events = Vec::new();
    for p in files_under(&queue).into_iter().filter(|p| {
        p.extension().is_some_and(|e| e == "ndjson") && p.parent() == Some(queue.as_path())
    }) {
        for l in std::fs::read_to_string(&p).unwrap().lines() {
            events.push(serde_json::from_str::<Value>(l).unwrap());
        }
    }
    assert_eq!(events.len() as u64, r.events);
    let corrected: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e["event_type"] == "correction")
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let made: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e["event_type"] != "correction")
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert!(
        !corrected.is_empty() && corrected.is_subset(&made),
        "every correction withdraws an event the tree made"
    );
    // Nothing in the queue's headers-to-be or names says who: the batch
    // files are numbered.
    assert!(
        files_under(&queue).iter().all(|p| p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("0000"))
    );
    // Reopened: nothing new.
    let mut w = Walker::open(&root, &state, "2710000001", "27", 150, None).unwrap();
    assert_eq!(w.pass().unwrap().messages, 0);
    // A crash after the ledger took a batch and before its file was made:
    // reopening makes the same file again.
    let last = files_under(&queue)
        .into_iter()
        .rfind(|p| {
            p.extension().is_some_and(|e| e == "ndjson") && p.parent() == Some(queue.as_path())
        })
        .unwrap();
    let before = std::fs::read(&last).unwrap();
    std::fs::remove_file(&last).unwrap();
    let ledger = state.join("ssmix2.ledger");
    let text = std::fs::read_to_string(&ledger).unwrap();
    let cut = text.trim_end().rfind('\n').unwrap() + 1;
    assert!(text[cut..].starts_with("written\t"));
    std::fs::write(&ledger, &text[..cut]).unwrap();
    Walker::open(&root, &state, "2710000001", "27", 150, None).unwrap();
    assert_eq!(std::fs::read(&last).unwrap(), before);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Elements as JP Core's own examples write them (FSH in jp-core-v1x:
/// jp-immunization-example-1, jp-observation-labresult-example-1; no JSON
/// rendering is published): a YJ vaccine with an ActSite, a lab result
/// with a local code beside JLAC10 and a v3 interpretation flag.
#[test]
fn jp_core_shapes_of_immunization_and_lab_flags_are_read() {
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        patient("1", "A-001", "ヤマダ　ハナコ", "1960-04-01"),
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000f1", "resource": {"resourceType": "Organization", "id": "h",
            "identifier": [{"system": "http://jpfhir.jp/fhir/core/IdSystem/insurance-medical-institution-no", "value": "1311111111"}]}},
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000i1", "resource": {"resourceType": "Immunization", "id": "jp-immunization-example-1",
            "vaccineCode": {"coding": [{"system": "http://capstandard.jp/iyaku.info/CodeSystem/YJ-code", "code": "6311400A1010", "display": "肺炎球菌ワクチン"}]},
            "patient": {"reference": "Patient/1"},
            "occurrenceDateTime": "2021-07-01T10:30:00+09:00",
            "site": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActSite", "code": "LA", "display": "left arm"}]}}},
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000l1", "resource": {"resourceType": "Observation", "id": "jp-observation-labresult-example-1",
            "category": [{"coding": [{"system": "http://jpfhir.jp/fhir/core/CodeSystem/JP_SimpleObservationCategory_CS", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://abc-hospital.local/fhir/Observation/localcode", "code": "05104", "display": "尿酸"},
                                {"system": "http://medis.or.jp/CodeSystem/master-JLAC10-17digits", "code": "3C020000002327101"}], "text": "尿酸"},
            "subject": {"reference": "Patient/1"},
            "effectiveDateTime": "2021-07-01T10:30:00+09:00",
            "valueQuantity": {"value": 8.1, "unit": "mg/dL"},
            "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "H"}]}]}},
    ]});
    let edge = Edge::new(&SchemaStore::embedded(), Some("13".into()));
    let now = Timestamp::parse("2026-06-01T00:00:00+09:00").unwrap();
    let events: Vec<RawEvent> = map_bundle(&serde_json::to_vec(&bundle).unwrap(), "13")
        .unwrap()
        .into_iter()
        .filter_map(|(_, e)| match e {
            Entry::Event(v) => Some(
                edge.accept(&serde_json::to_vec(&v).unwrap(), now)
                    .unwrap()
                    .event,
            ),
            _ => None,
        })
        .collect();
    let Payload::Vaccination(v) = &events[0].payload else {
        panic!()
    };
    assert_eq!(
        (v.vaccine_code.as_str(), v.site.map(|s| s.symbol())),
        ("6311400A1010", Some("left_arm"))
    );
    let Payload::LabResult(l) = &events[1].payload else {
        panic!()
    };
    assert_eq!(
        (
            l.jlac10_code.as_str(),
            l.test_name.as_str(),
            l.abnormal_flag.map(|f| f.symbol())
        ),
        ("3C020000002327101", "尿酸", Some("high"))
    );
}

/// Hub input is untrusted: thousands of mutations of the published
/// bundles and SS-MIX2 messages (full-width digits in dates, multibyte
/// characters inside values, HL7 delimiters in fields, cut text, swapped
/// references) never make the mappers panic — a panic would stop a hub's
/// ingest on one file. Seeded, so a failure replays.
#[test]
fn mutated_hospital_inputs_never_panic_the_mappers() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
    let inserts = [
        "１", "あ", "\u{3000}", "é", "🙂", "\"", "\\", ":", "#", "/", "-", "0",
    ];
    let mutate = |text: &str, rng: &mut rand_chacha::ChaCha8Rng, extra: &[&str]| -> String {
        let mut t = text.to_owned();
        for _ in 0..rng.random_range(1..6) {
            let bounds: Vec<usize> = t.char_indices().map(|(i, _)| i).collect();
            if bounds.is_empty() {
                break;
            }
            let at = bounds[rng.random_range(0..bounds.len())];
            // Dates and codes are where fixed-offset slicing lives: a
            // full-width digit inside one crosses a byte boundary.
            let dates: Vec<usize> = t.match_indices("\"20").map(|(i, _)| i + 1).collect();
            if !dates.is_empty() && rng.random_bool(0.3) {
                let d = dates[rng.random_range(0..dates.len())];
                let off = rng.random_range(5..10);
                if t.is_char_boundary(d + off) && t.is_char_boundary(d + off + 1) {
                    t.replace_range(d + off..d + off + 1, "１");
                }
                continue;
            }
            match rng.random_range(0..4) {
                0 => {
                    let pool: Vec<&str> = inserts.iter().chain(extra).copied().collect();
                    t.insert_str(at, pool[rng.random_range(0..pool.len())]);
                }
                1 => {
                    let end = t[at..]
                        .char_indices()
                        .nth(rng.random_range(1..8))
                        .map_or(t.len(), |(i, _)| at + i);
                    t.replace_range(at..end, "");
                }
                2 => t = t.replacen(char::from(b'0' + rng.random_range(0..10u8)), "９", 1),
                _ => t.truncate(at),
            }
        }
        t
    };
    let mut runs = 0;
    for (name, bytes) in bundles() {
        let text = String::from_utf8(bytes).unwrap();
        for _ in 0..120 {
            let m = mutate(&text, &mut rng, &["urn:uuid:", "Patient/", "T"]);
            let r = std::panic::catch_unwind(|| map_bundle(m.as_bytes(), "13"));
            assert!(
                r.is_ok(),
                "{name}: a mutated bundle panicked the FHIR mapper"
            );
            runs += 1;
        }
    }
    for p in files_under(&ssmix2_corpus()) {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let (Ok(f), Some(text)) = (
            FileName::parse(&name),
            chitose_ingest::ssmix2::decode(&std::fs::read(&p).unwrap()),
        ) else {
            continue;
        };
        for _ in 0..200 {
            let m = mutate(
                &text,
                &mut rng,
                &["|", "^", "~", "&", "\r", "PRB|", "OBX|1|NM|"],
            );
            let bytes = encoding_rs::ISO_2022_JP.encode(&m).0.into_owned();
            let r = std::panic::catch_unwind(|| map_message(&f, &bytes, "2210000001", "22", None));
            assert!(
                r.is_ok(),
                "{name}: a mutated message panicked the SS-MIX2 mapper"
            );
            runs += 1;
        }
    }
    assert!(runs > 3000, "{runs}");
}
