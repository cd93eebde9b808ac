//! Other teams read our topics with stock tools: fastavro decodes our SOE
//! messages from the shipped `.avsc` alone, and the stock jsonschema package
//! agrees with our converter about the JSON form.

use crate::helpers;

use chitose_ingest::edge::Edge;
use chitose_ingest::simulate::{BadKind, Generator, SimConfig};
use chitose_schemas::RawCodec;
use chitose_schemas::catalog::SchemaStore;
use chitose_schemas::codec::Timestamp;
use serde_json::Value;
use std::process::Command;

/// Our JSON form with timestamps as epoch milliseconds (as the script prints).
fn normalized(ev: &chitose_schemas::raw::RawEvent) -> Value {
    let mut v = serde_json::to_value(ev).unwrap();
    fn walk(v: &mut Value) {
        if let Value::Object(o) = v {
            for (k, x) in o.iter_mut() {
                if matches!(k.as_str(), "occurred_at" | "recorded_at" | "ended_at")
                    && let Some(t) = x.as_str().and_then(Timestamp::parse)
                {
                    *x = Value::from(t.0);
                }
                walk(x);
            }
        }
    }
    walk(&mut v);
    v
}

#[test]
fn fastavro_decodes_our_soe_messages_from_the_avsc_alone() {
    let dir = helpers::scratch("fastavro");
    let codec = RawCodec::new(SchemaStore::embedded());
    let mut g = Generator::new(SimConfig {
        seed: 5,
        patients: 1_000,
        ..SimConfig::default()
    })
    .unwrap();
    let events: Vec<_> = (0..3_000).map(|_| g.next_event()).collect();
    let mut file = Vec::new();
    for ev in &events {
        let mut msg = Vec::new();
        codec.encode_soe(ev, &mut msg);
        file.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        file.extend_from_slice(&msg);
    }
    let path = dir.join("messages.bin");
    std::fs::write(&path, &file).unwrap();
    let out = Command::new(helpers::python())
        .arg(helpers::repo().join("tests/python/read_soe.py"))
        .arg(helpers::repo().join("schemas/avro"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fastavro failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), events.len());
    for (ev, got) in events.iter().zip(&lines) {
        assert_eq!(
            got,
            &normalized(ev),
            "fastavro's record differs for {}",
            ev.event_id
        );
    }
}

#[test]
fn stock_jsonschema_agrees_with_the_converter() {
    let dir = helpers::scratch("jsonschema");
    let store = SchemaStore::embedded();
    let mut g = Generator::new(SimConfig {
        seed: 6,
        patients: 1_000,
        ..SimConfig::default()
    })
    .unwrap();
    // Good events, then the bad kinds JSON Schema can express (My Number,
    // size and semantic checks are beyond it: docs/json-form.md says so).
    let mut lines: Vec<(Vec<u8>, bool)> = (0..500)
        .map(|_| (serde_json::to_vec(&g.next_event()).unwrap(), true))
        .collect();
    let expressible = BadKind::ALL.iter().copied().filter(|k| k.breaks_schema());
    let mut kinds = 0;
    for k in expressible {
        kinds += 1;
        for _ in 0..3 {
            lines.push((g.bad_line(k).bytes, false));
        }
    }
    assert!(kinds >= 14, "only {kinds} schema-level bad kinds");
    // Our converter's verdict on the same lines.
    let edge = Edge::new(&store, None);
    let now = Timestamp::parse("2026-06-01T00:00:00+09:00").unwrap();
    for (l, good) in &lines {
        assert_eq!(edge.accept(l, now).is_ok(), *good);
    }
    let path = dir.join("lines.ndjson");
    std::fs::write(
        &path,
        lines
            .iter()
            .flat_map(|(l, _)| l.iter().copied().chain([b'\n']))
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let out = Command::new(helpers::python())
        .arg(helpers::repo().join("tests/python/check_json_schema.py"))
        .arg(helpers::repo().join("schemas/json/raw_event.schema.json"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jsonschema failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(verdicts.len(), lines.len());
    for (i, ((_, good), v)) in lines.iter().zip(&verdicts).enumerate() {
        assert_eq!(*v == "valid", *good, "line {i}: jsonschema said {v}");
    }
}
