//! `chitose up` end to end: embedded broker, eight simulated hubs,
//! transform, sink; the lake then holds every accepted event once.

mod helpers;

#[test]
fn up_lands_every_accepted_event_once() {
    let dir = helpers::scratch("up");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args([
            "up",
            "--events",
            "20000",
            "--quiet",
            "--seed",
            "9",
            "--ops-port",
            "0",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let number = |label: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("{label}: {stdout}"));
        line.split_whitespace()
            .nth(label.split_whitespace().count())
            .unwrap()
            .parse()
            .unwrap()
    };
    let sent = number("sent by 8 hubs");
    let rejected: u64 = stdout
        .split("rejected at ingest: ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(sent, 20000);
    // Counts reconcile: every record sent was rejected at the edge or transformed.
    assert_eq!(number("transformed"), sent - rejected, "{stdout}");
    assert_eq!(number("landed"), sent - rejected, "{stdout}");
    assert!(rejected > 0, "the hubs send some malformed records");
    let lake = helpers::read_lake(dir.join("lake").to_str().unwrap(), None);
    let rows: u64 = lake
        .as_object()
        .unwrap()
        .values()
        .map(|t| t["duckdb_rows"].as_u64().unwrap())
        .sum();
    let distinct: u64 = lake
        .as_object()
        .unwrap()
        .values()
        .map(|t| t["distinct_event_ids"].as_u64().unwrap())
        .sum();
    assert_eq!(rows, sent - rejected, "{stdout}");
    assert_eq!(distinct, rows);
    assert_eq!(lake.as_object().unwrap().len(), 6, "six tables");
    // A demo key was generated, and it is not printed.
    let key = std::fs::read_to_string(dir.join(".chitose/keys/pseudonym-2026a.key")).unwrap();
    assert!(!stdout.contains(key.trim()));
    assert!(stdout.contains("Query it with DuckDB"));
    // The ledger agrees with the files, and counts the same rows.
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args(["lake", "verify", "--json"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    let verified: u64 = report["tables"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|t| t.as_object().unwrap().values())
        .map(|c| c["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(verified, rows);
}
