//! The FHIR mapping core: a JP Core bundle → events that pass the edge.

use chitose_ingest::edge::Edge;
use chitose_ingest::fhir::map_bundle;
use chitose_schemas::catalog::SchemaStore;
use chitose_schemas::codec::Timestamp;
use chitose_schemas::json::RejectReason;
use chitose_schemas::raw::{EncounterClass, EventType, Payload};

const BUNDLE: &[u8] = include_bytes!("fixtures/jp-core-bundle.fhir.json");

#[test]
fn a_jp_core_bundle_maps_to_events_and_unmappable_resources_are_named() {
    let mapped = map_bundle(BUNDLE, "27").unwrap();
    let edge = Edge::new(&SchemaStore::embedded(), Some("27".into()));
    let now = Timestamp::parse("2026-06-01T00:00:00+09:00").unwrap();
    let mut events = Vec::new();
    let mut rejected = Vec::new();
    for (i, m) in mapped {
        match m {
            Ok(v) => events.push(
                edge.accept(&serde_json::to_vec(&v).unwrap(), now)
                    .unwrap_or_else(|e| panic!("entry {i}: {e}"))
                    .event,
            ),
            Err(e) => rejected.push((i, e)),
        }
    }
    let types: Vec<EventType> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        [
            EventType::Encounter,
            EventType::Diagnosis,
            EventType::LabResult,
            EventType::Prescription,
            EventType::Vaccination,
            EventType::Checkup
        ]
    );
    for ev in &events {
        assert_eq!(ev.facility_code, "2712345678");
        assert_eq!(ev.patient.local_patient_id, "0001234567");
        assert_eq!(ev.patient.name_kana.as_deref(), Some("ヤマダ　タロウ"));
        let ins = ev
            .patient
            .insurance
            .as_ref()
            .expect("insurance from Coverage");
        assert_eq!(
            (ins.insurer_number.as_str(), ins.insured_number.as_str()),
            ("06270011", "56789")
        );
        assert_eq!(ev.source_format, "fhir");
    }
    match &events[0].payload {
        Payload::Encounter(e) => {
            assert_eq!(e.encounter_class, EncounterClass::Outpatient);
            assert!(e.ended_at.is_some());
        }
        p => panic!("{p:?}"),
    }
    match &events[1].payload {
        Payload::Diagnosis(d) => assert_eq!(
            (d.icd10_code.as_str(), d.medis_disease_code.as_deref()),
            ("E11.9", Some("F3GN"))
        ),
        p => panic!("{p:?}"),
    }
    match &events[2].payload {
        Payload::LabResult(l) => assert_eq!(
            (l.jlac10_code.as_str(), l.value_numeric, l.reference_high),
            ("3D046000001906202", Some(7.2), Some(6.0))
        ),
        p => panic!("{p:?}"),
    }
    match &events[3].payload {
        Payload::Prescription(p) => assert_eq!(
            (p.yj_code.as_str(), p.days_supply),
            ("3962002F1031", Some(28))
        ),
        p => panic!("{p:?}"),
    }
    match &events[5].payload {
        Payload::Checkup(c) => {
            assert_eq!(
                (c.height_cm, c.weight_kg, c.systolic_bp),
                (Some(171.2), Some(70.4), Some(138.0))
            );
            assert_eq!(c.hba1c_percent, None);
        }
        p => panic!("{p:?}"),
    }
    assert_eq!(events[5].event_id, "fhir-Checkup-hc1");
    assert_eq!(rejected.len(), 2);
    assert!(
        rejected
            .iter()
            .all(|(_, e)| e.reason == RejectReason::Unmappable)
    );
    assert_eq!(rejected[0].1.path, "entry[6].resource(Observation)");
    assert_eq!(rejected[1].1.path, "entry[9].resource(DiagnosticReport)");
}

#[test]
fn a_bundle_without_an_institution_number_rejects_every_event() {
    let mut v: serde_json::Value = serde_json::from_slice(BUNDLE).unwrap();
    v["entry"].as_array_mut().unwrap().remove(1);
    let mapped = map_bundle(&serde_json::to_vec(&v).unwrap(), "27").unwrap();
    assert!(mapped.iter().all(|(_, m)| {
        m.as_ref().is_err_and(|e| {
            e.expected.contains("medical institution number")
                || e.reason == RejectReason::Unmappable
        })
    }));
}

#[test]
fn not_a_bundle_is_one_clear_error() {
    assert!(
        map_bundle(b"{\"resourceType\":\"Patient\"}", "27")
            .unwrap_err()
            .to_string()
            .starts_with("$: expected a FHIR Bundle")
    );
    assert!(
        map_bundle(b"{", "27")
            .unwrap_err()
            .to_string()
            .contains("invalid JSON")
    );
}
