//! `chitose up` end to end: embedded broker, eight simulated hubs,
//! transform, sink; the lake then holds every accepted event once.

use crate::helpers;

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
        .env("CHITOSE_LAKE", "lake")
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
    assert_eq!(lake.as_object().unwrap().len(), 8, "eight tables: {lake}");
    assert_eq!(
        lake["correction"]["duckdb_rows"], 0,
        "the stream generator withdraws nothing"
    );
    // A demo key was generated, and it is not printed.
    let key = std::fs::read_to_string(dir.join(".chitose/keys/pseudonym-2026a.key")).unwrap();
    assert!(!stdout.contains(key.trim()));
    assert!(stdout.contains("delta_scan("), "{stdout}");
    assert!(stdout.contains("median rows/file"), "{stdout}");
    // Each table's log agrees with its files, and counts the same rows.
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args(["lake", "verify", "--json"])
        .env("CHITOSE_LAKE", "lake")
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
        .flat_map(|t| t["partitions"].as_object().unwrap().values())
        .map(|c| c["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(verified, rows);
    // After up's final compaction: one file per (table, prefecture, month),
    // and none a reader cannot see.
    for (table, t) in report["tables"].as_object().unwrap() {
        for (key, c) in t["partitions"].as_object().unwrap() {
            assert_eq!(c["files"], 1, "{table} {key}: {c}");
        }
        assert_eq!(lake[table]["unreferenced_files"], 0, "{table}");
    }
}

/// `up --policy pseudonymized-shifted`: the demo with the other shipped
/// profile, so the two can be looked at side by side.
#[test]
fn up_runs_either_shipped_profile() {
    let dir = helpers::scratch("up-shifted");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args([
            "up",
            "--events",
            "3000",
            "--quiet",
            "--seed",
            "4",
            "--ops-port",
            "0",
        ])
        .args([
            "--policy",
            "pseudonymized-shifted",
            "--lake",
            "lake-shifted",
        ])
        .env("CHITOSE_LAKE", "lake")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // What DuckDB sees: every row made by the shifted profile, with the
    // date-shift key named and no transform clock.
    // Every table's snapshot files, as one DuckDB source.
    let q = format!(
        "import sys, os, json, duckdb; sys.path.insert(0, {py:?}); import lakeio; \
         base = {base:?}; fs = [f for t in sorted(os.listdir(base)) for f in lakeio.files(os.path.join(base, t))]; \
         print(duckdb.sql(f\"select count(*), count(*) filter (where policy_profile = 'pseudonymized-shifted'), \
         count(transformed_at), count(date_shift_key_id), count(distinct event_id) from read_parquet({{json.dumps(fs)}}, union_by_name = true)\").fetchall()[0])",
        py = helpers::repo().join("tests/python").display().to_string(),
        base = dir.join("lake-shifted/pseudonymized").display().to_string(),
    );
    let out = std::process::Command::new(helpers::python())
        .args(["-c", &q])
        .output()
        .unwrap();
    helpers::assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let n: Vec<u64> = text
        .trim()
        .trim_matches(['(', ')'])
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    assert!(n[0] > 2500, "{text}");
    assert_eq!(n[1], n[0], "every row from the shifted profile: {text}");
    assert_eq!(n[2], 0, "transformed_at dropped: {text}");
    assert_eq!(n[3], n[0], "date_shift_key_id set: {text}");
    assert_eq!(n[4], n[0], "one row per event: {text}");
}

/// `chitose up` in a real terminal (tmux), as a newcomer sees it: the
/// path of the log file once, one set of bars with human rates, the
/// summary, and no log line, no ERROR (on main: ~30 INFO lines before the
/// bars, raw-float rates, bars drawn twice, and a wall of librdkafka
/// "all brokers down" errors after the summary).
#[test]
fn up_in_a_terminal_shows_bars_once_the_summary_and_no_log_line() {
    let tmux = helpers::tool("CHITOSE_TEST_TMUX", "tests/infra/tmux.sh install");
    let dir = helpers::scratch("up-tty");
    // A tmux server of the test's own (its own socket), so nothing else
    // on the machine is touched.
    let socket = dir.join("tmux.sock");
    let run = |args: &[&str]| {
        std::process::Command::new(&tmux)
            .arg("-S")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap()
    };
    let script = format!(
        "cd '{}' && CHITOSE_LAKE=lake '{}' up --events 20000 --ops-port 0 --seed 3; \
         echo CHITOSE-UP-EXIT=$?; sleep 600",
        dir.display(),
        env!("CARGO_BIN_EXE_chitose"),
    );
    let out = run(&[
        "new-session",
        "-d",
        "-s",
        "up",
        "-x",
        "200",
        "-y",
        "60",
        &script,
    ]);
    helpers::assert_ok(&out);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let screen = loop {
        // The whole history, wrapped lines joined.
        let cap = run(&["capture-pane", "-p", "-J", "-S", "-", "-t", "up"]);
        let text = String::from_utf8_lossy(&cap.stdout).into_owned();
        if text.contains("CHITOSE-UP-EXIT=") {
            break text;
        }
        if std::time::Instant::now() > deadline {
            let _ = run(&["kill-server"]);
            panic!("up did not finish in 300 s; the terminal:\n{text}");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let _ = run(&["kill-server"]);
    assert!(screen.contains("CHITOSE-UP-EXIT=0"), "{screen}");
    // No log line and no error of any level.
    for level in [
        "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "rdkafka", "panicked",
    ] {
        assert!(
            !screen.contains(level),
            "{level} in the terminal:\n{screen}"
        );
    }
    // One set of bars, finished.
    for bar in ["produced [", "transformed [", "landed ["] {
        let n = screen.lines().filter(|l| l.contains(bar)).count();
        assert_eq!(n, 1, "{bar} drawn {n} times:\n{screen}");
    }
    // Rates a person reads (`1.7 k/s`), not indicatif's raw float.
    let bars: Vec<&str> = screen.lines().filter(|l| l.contains(" [")).collect();
    for b in &bars {
        assert!(b.contains("/s"), "no rate on {b:?}");
        assert!(
            !b.split_whitespace()
                .any(|w| w.ends_with("/s") && w.split('.').nth(1).is_some_and(|f| f.len() > 3)),
            "a raw float rate on {b:?}"
        );
    }
    // The log file is named once and holds the services' logs.
    assert_eq!(
        screen.matches("logs in .chitose/logs/").count(),
        1,
        "{screen}"
    );
    let logs: Vec<_> = std::fs::read_dir(dir.join(".chitose/logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let log = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(
        log.contains("INFO"),
        "the services logged to the file: {log}"
    );
    // And the summary, with files, median rows per file and where to look
    // next, comes after the bars.
    let summary_at = screen.find("sent by 8 hubs").expect("the summary");
    assert!(screen.find("landed [").unwrap() < summary_at, "{screen}");
    for s in [
        "median rows/file",
        "chitose lake verify",
        "delta_scan(",
        "chitose release",
    ] {
        assert!(screen[summary_at..].contains(s), "{s}:\n{screen}");
    }
}
