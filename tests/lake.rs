//! `chitose lake verify` on a lake `chitose up` wrote: consistent as
//! written, and every kind of damage found, named by path, exit 1.

mod helpers;

use std::path::{Path, PathBuf};
use std::process::Command;

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
}

fn verify(dir: &Path, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args(["lake", "verify", "--json"])
        .args(extra)
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), json, stdout)
}

fn problems<'a>(report: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == kind)
        .collect()
}

#[test]
fn verify_passes_a_written_lake_and_names_every_kind_of_damage() {
    let dir = helpers::scratch("lake-verify");
    let up = Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args([
            "up",
            "--events",
            "2000",
            "--quiet",
            "--seed",
            "5",
            "--ops-port",
            "0",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    helpers::assert_ok(&up);

    // As written: consistent, and its counts agree with DuckDB's.
    let (code, report, _) = verify(&dir, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    let lake = helpers::read_lake(dir.join("lake").to_str().unwrap(), None);
    for (table, t) in lake.as_object().unwrap() {
        let verified: u64 = report["tables"][table]
            .as_object()
            .unwrap()
            .values()
            .map(|c| c["rows"].as_u64().unwrap())
            .sum();
        assert_eq!(verified, t["duckdb_rows"].as_u64().unwrap(), "{table}");
    }

    let mut data = Vec::new();
    files(&dir.join("lake/pseudonymized"), "parquet", &mut data);
    data.sort();
    let mut ledger = Vec::new();
    files(&dir.join("lake/_chitose/ledger"), "json", &mut ledger);
    ledger.sort();
    let rel = |p: &Path| {
        p.strip_prefix(dir.join("lake"))
            .unwrap()
            .display()
            .to_string()
    };
    let encounter: Vec<&PathBuf> = data
        .iter()
        .filter(|p| rel(p).contains("/encounter/"))
        .collect();
    let vaccination = data
        .iter()
        .find(|p| rel(p).contains("/vaccination/"))
        .unwrap();

    // An orphan: a copy of a committed file under a name no commit has.
    let orphan = encounter[0].with_file_name("part-000-00000000000099999999-e99.parquet");
    std::fs::copy(encounter[0], &orphan).unwrap();
    // A missing file.
    std::fs::remove_file(encounter[1]).unwrap();
    // A file of another table (other columns, other row count) in its place.
    std::fs::copy(vaccination, encounter[2]).unwrap();
    // Not Parquet at all.
    std::fs::write(encounter[3], b"not parquet").unwrap();
    // A ledger object cut short.
    let cut = ledger
        .iter()
        .find(|p| rel(p).contains("/diagnosis/"))
        .unwrap();
    let text = std::fs::read(cut).unwrap();
    std::fs::write(cut, &text[..text.len() / 2]).unwrap();

    let (code, report, stdout) = verify(&dir, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    let path_of = |kind: &str| -> Vec<String> {
        problems(&report, kind)
            .iter()
            .map(|p| p["path"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(path_of("orphan"), vec![rel(&orphan)], "{report:#}");
    assert_eq!(path_of("missing"), vec![rel(encounter[1])], "{report:#}");
    assert!(path_of("schema").contains(&rel(encounter[2])), "{report:#}");
    assert!(
        path_of("rows").contains(&rel(encounter[2]))
            || path_of("schema").contains(&rel(encounter[2]))
    );
    assert_eq!(path_of("unreadable"), vec![rel(encounter[3])], "{report:#}");
    let ledger_problems = problems(&report, "ledger");
    assert_eq!(ledger_problems.len(), 1, "{report:#}");
    assert_eq!(ledger_problems[0]["table"], "diagnosis");
    // Files of the damaged ledger's partition are not taken for orphans
    // (which --delete-orphans would delete).
    assert!(
        path_of("unverified")
            .iter()
            .all(|p| p.contains("/diagnosis/")),
        "{report:#}"
    );
    // The report names paths and counts, never a row's value.
    assert!(!stdout.contains("pseudonym\":"), "{stdout}");

    // Repair what can be repaired: orphans go, the rest stays reported.
    let (code, report, _) = verify(&dir, &["--delete-orphans"]);
    assert_eq!(code, Some(1));
    assert_eq!(problems(&report, "orphan")[0]["deleted"], true);
    assert!(!orphan.exists());
    let (_, report, _) = verify(&dir, &[]);
    assert!(problems(&report, "orphan").is_empty(), "{report:#}");
}

#[test]
fn verify_refuses_a_folder_that_is_no_lake() {
    let dir = helpers::scratch("lake-empty");
    let out = Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args(["lake", "verify", "--lake"])
        .arg(dir.join("nothing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected a chitose lake"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
