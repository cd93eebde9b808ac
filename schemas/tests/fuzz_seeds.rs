//! Writes the fuzz targets' seed corpora (`fuzz/corpus/<target>/`) from the
//! bad-input corpus (`tests/corpus/json/`). Run after changing either:
//!   cargo test -p chitose-schemas --test fuzz_seeds -- --ignored
//! Not ignored: a check that the committed seeds are there.

use chitose_schemas::catalog::{RAW_EVENT, SchemaStore};
use chitose_schemas::framing::{put_confluent_header, put_soe_header};
use chitose_schemas::json::JsonToAvro;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn corpus_lines() -> Vec<Vec<u8>> {
    let dir = repo().join("tests/corpus/json");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read(f)
                .unwrap()
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A valid record: the corpus' malformed line 3 is a valid record plus one `}`.
fn valid() -> Vec<u8> {
    let text = std::fs::read(repo().join("tests/corpus/json/malformed.ndjson")).unwrap();
    let mut line = text.split(|b| *b == b'\n').nth(2).unwrap().to_vec();
    line.pop();
    line
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_fuzz_seeds() {
    let json_dir = repo().join("fuzz/corpus/json_to_avro");
    let soe_dir = repo().join("fuzz/corpus/soe_decode");
    for d in [&json_dir, &soe_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut seeds = corpus_lines();
    seeds.push(valid());
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(json_dir.join(format!("seed-{i:03}")), s).unwrap();
    }
    let store = SchemaStore::embedded();
    let raw = store.latest(RAW_EVENT).unwrap();
    let conv = JsonToAvro::new(raw.schema.clone()).unwrap();
    let mut datum = Vec::new();
    conv.convert(&valid(), &mut datum).unwrap();
    let mut soe = Vec::new();
    put_soe_header(&mut soe, raw.fingerprint);
    soe.extend_from_slice(&datum);
    let mut confluent = Vec::new();
    put_confluent_header(&mut confluent, 1);
    confluent.extend_from_slice(&datum);
    let v1 = store.versions(RAW_EVENT)[0];
    let mut old = Vec::new();
    put_soe_header(&mut old, v1.fingerprint);
    old.extend_from_slice(&datum);
    let msgs = [
        soe.clone(),
        confluent,
        old,
        soe[..soe.len() / 2].to_vec(),
        soe[..10].to_vec(),
    ];
    for (i, m) in msgs.iter().enumerate() {
        std::fs::write(soe_dir.join(format!("seed-{i:03}")), m).unwrap();
    }
}

#[test]
fn seed_corpora_are_committed() {
    for t in ["json_to_avro", "soe_decode"] {
        let n = std::fs::read_dir(repo().join("fuzz/corpus").join(t))
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(
            n >= 5,
            "fuzz/corpus/{t}: {n} seeds; regenerate with --ignored write_fuzz_seeds"
        );
    }
}
