//! `chitose lake verify` on a lake `chitose up` wrote: consistent as
//! written (and as delta-rs and DuckDB read it), every kind of damage found,
//! named by path, exit 1; `chitose lake vacuum` removes what no snapshot
//! lists, after its retention.

use crate::helpers;

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
        .env("CHITOSE_LAKE", "lake")
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
        .env("CHITOSE_LAKE", "lake")
        .current_dir(&dir)
        .output()
        .unwrap();
    helpers::assert_ok(&up);

    // As written: consistent, and its counts agree with DuckDB's.
    let (code, report, _) = verify(&dir, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    let lake = helpers::read_lake(dir.join("lake").to_str().unwrap(), None);
    for (table, t) in lake.as_object().unwrap() {
        let verified: u64 = report["tables"][table]["partitions"]
            .as_object()
            .unwrap()
            .values()
            .map(|c| c["rows"].as_u64().unwrap())
            .sum();
        assert_eq!(verified, t["duckdb_rows"].as_u64().unwrap(), "{table}");
        assert_eq!(
            report["tables"][table]["version"], t["version"],
            "delta-rs reads the version verify read: {table}"
        );
    }

    let mut data = Vec::new();
    files(&dir.join("lake/pseudonymized"), "parquet", &mut data);
    data.retain(|p| !p.display().to_string().contains("/_delta_log/"));
    data.sort();
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

    // A file no commit names (a crashed writer's upload): invisible to
    // readers, counted, not a problem.
    let stray =
        encounter[0].with_file_name("part-00000000-0000-0000-0000-000000000000.zstd.parquet");
    std::fs::copy(encounter[0], &stray).unwrap();
    // A missing file.
    std::fs::remove_file(encounter[1]).unwrap();
    // A file of another table (other columns, other row count) in its place.
    std::fs::copy(vaccination, encounter[2]).unwrap();
    // Not Parquet at all.
    std::fs::write(encounter[3], b"not parquet").unwrap();
    // The next commit of the diagnosis table, cut short (a writer that
    // lost its disk mid-put on a store without atomic puts).
    let mut log: Vec<PathBuf> = Vec::new();
    files(
        &dir.join("lake/pseudonymized/diagnosis/_delta_log"),
        "json",
        &mut log,
    );
    log.retain(|p| !p.file_name().unwrap().to_string_lossy().starts_with('_'));
    log.sort();
    let newest = log.last().unwrap();
    let version: u64 = newest
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .parse()
        .unwrap();
    let text = std::fs::read(newest).unwrap();
    std::fs::write(
        newest.with_file_name(format!("{:020}.json", version + 1)),
        &text[..text.len() / 2],
    )
    .unwrap();

    let (code, report, stdout) = verify(&dir, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    let path_of = |kind: &str| -> Vec<String> {
        problems(&report, kind)
            .iter()
            .map(|p| p["path"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        report["tables"]["encounter"]["unreferenced"], 1,
        "{report:#}"
    );
    assert_eq!(path_of("missing"), vec![rel(encounter[1])], "{report:#}");
    assert!(path_of("size").contains(&rel(encounter[2])), "{report:#}");
    assert!(
        path_of("rows").contains(&rel(encounter[2]))
            || path_of("schema").contains(&rel(encounter[2])),
        "{report:#}"
    );
    assert!(
        path_of("unreadable").contains(&rel(encounter[3])),
        "{report:#}"
    );
    let log_problems = problems(&report, "log");
    assert_eq!(log_problems.len(), 1, "{report:#}");
    assert_eq!(log_problems[0]["table"], "diagnosis");
    // The report names paths and counts, never a row's value.
    assert!(!stdout.contains("pseudonym\":"), "{stdout}");

    // Vacuum takes the unlisted file once it is past the retention, and
    // nothing a snapshot lists.
    let vacuum = |retain: &str| {
        Command::new(env!("CARGO_BIN_EXE_chitose"))
            .args(["lake", "vacuum", "--table", "encounter", "--retain", retain])
            .env("CHITOSE_LAKE", "lake")
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    let kept = vacuum("7d");
    helpers::assert_ok(&kept);
    assert!(stray.exists(), "younger than the retention: kept");
    helpers::assert_ok(&vacuum("0s"));
    assert!(!stray.exists());
    assert!(encounter[0].exists() && encounter[4].exists());
    let (_, report, _) = verify(&dir, &[]);
    assert_eq!(
        report["tables"]["encounter"]["unreferenced"], 0,
        "{report:#}"
    );
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
