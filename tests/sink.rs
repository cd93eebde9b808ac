//! `chitose sink` on nisshi: what lands is what analysts read with DuckDB
//! and pyarrow, exactly once through kill -9 and rebalances, on a local
//! folder and on S3 (moto).

mod helpers;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

struct Setup {
    bootstrap: String,
    prefix: String,
    lake: String,
    config: std::path::PathBuf,
    ops: String,
}

fn setup(name: &str, lake: Option<String>, extra: &str) -> Setup {
    let bootstrap = helpers::nisshi();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = helpers::scratch(name);
    let lake = lake.unwrap_or_else(|| dir.join("lake").display().to_string());
    let prefix = format!("health.pseudo.s{id}.");
    let ops = format!("127.0.0.1:{}", helpers::free_port());
    let config = dir.join("sink.toml");
    std::fs::write(
        &config,
        format!(
            r#"input_pattern = '^health\.pseudo\.s{id}\..+'
group_id = "sink-{id}"
lake = "{lake}"
roll_age_ms = 1500
batch_max_ms = 100
ops_listen = "{ops}"
{extra}

[kafka]
bootstrap_servers = "{bootstrap}"
"#
        ),
    )
    .unwrap();
    Setup {
        bootstrap,
        prefix,
        lake,
        config,
        ops,
    }
}

fn run(s: &Setup, instance: &str, ops: &str) -> helpers::Child {
    helpers::chitose(
        &[
            "sink",
            "--config",
            s.config.to_str().unwrap(),
            "--instance-id",
            instance,
            "--ops-listen",
            ops,
        ],
        &[
            ("RUST_LOG", "info,rdkafka=warn"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    )
}

fn scrape(ops: &str) -> Option<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        reqwest::get(format!("http://{ops}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    })
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Rows committed in the lake, from the ledger (what the sink says counts).
fn ledger_rows(lake: &str) -> u64 {
    let mut total = 0;
    let root = Path::new(lake).join("_chitose/ledger");
    let Ok(tables) = std::fs::read_dir(&root) else {
        return 0;
    };
    for t in tables.flatten() {
        for p in std::fs::read_dir(t.path()).unwrap().flatten() {
            for c in std::fs::read_dir(p.path()).unwrap().flatten() {
                let Ok(text) = std::fs::read_to_string(c.path()) else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                total += v["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["rows"].as_u64().unwrap())
                    .sum::<u64>();
            }
        }
    }
    total
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn check_lake(lake: &serde_json::Value, ids: &HashMap<String, Vec<String>>) {
    let mut total = 0;
    for (table, want) in ids {
        let t = &lake[table];
        assert_eq!(
            t["duckdb_rows"].as_u64().unwrap(),
            want.len() as u64,
            "{table}: {t}"
        );
        assert_eq!(
            t["distinct_event_ids"].as_u64().unwrap(),
            want.len() as u64,
            "{table}"
        );
        assert_eq!(
            t["pyarrow_rows"].as_u64().unwrap(),
            want.len() as u64,
            "{table}"
        );
        total += want.len();
    }
    assert!(total > 0);
}

#[test]
fn n_events_land_once_with_the_right_types_for_duckdb_and_pyarrow() {
    let s = setup("sink-basic", None, "");
    let ids = helpers::produce_pseudo(&s.bootstrap, &s.prefix, 6_000, 61, 3);
    let n: usize = ids.values().map(Vec::len).sum();
    let child = run(&s, "a", &s.ops);
    wait_until("all rows committed", 120, || {
        ledger_rows(&s.lake) == n as u64
    });
    let text = scrape(&s.ops).unwrap();
    assert_eq!(metric(&text, "chitose_sink_rows_total"), n as f64, "{text}");
    assert!(metric(&text, "chitose_sink_files_total") >= 6.0);
    drop(child);
    let lake = helpers::read_lake(&s.lake, None);
    check_lake(&lake, &ids);
    let enc = &lake["encounter"]["arrow_types"];
    assert_eq!(enc["event_date"], "date32[day]", "{enc}");
    assert_eq!(enc["age_at_event"], "int32");
    assert_eq!(enc["source_offset"], "int64");
    assert!(
        enc["transformed_at"]
            .as_str()
            .unwrap()
            .starts_with("timestamp[ms"),
        "{enc}"
    );
    assert_eq!(lake["lab_result"]["arrow_types"]["value_numeric"], "double");
    assert_eq!(lake["diagnosis"]["arrow_types"]["is_primary"], "bool");
    // Hive partitions and a deterministic name.
    let f = walk(Path::new(&s.lake).join("pseudonymized/encounter").as_path());
    assert!(
        f.iter().all(|p| {
            let p = p.display().to_string();
            p.contains("/prefecture=") && p.contains("/event_month=") && p.contains("/part-")
        }),
        "{f:?}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn kill_9_ten_times_during_one_run_lands_every_event_exactly_once() {
    let s = setup("sink-kill", None, "roll_rows = 700");
    let ids = helpers::produce_pseudo(&s.bootstrap, &s.prefix, 30_000, 62, 3);
    let n: usize = ids.values().map(Vec::len).sum();
    let mut child = run(&s, "a", "127.0.0.1:0");
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut kills = 0;
    while kills < 10 && ledger_rows(&s.lake) < n as u64 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(400 + rng % 1200));
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        kills += 1;
        child = run(&s, "a", "127.0.0.1:0");
    }
    assert!(
        kills >= 5,
        "the run finished after {kills} kills: make it longer"
    );
    wait_until("all rows committed", 240, || {
        ledger_rows(&s.lake) >= n as u64
    });
    drop(child);
    assert_eq!(
        ledger_rows(&s.lake),
        n as u64,
        "ledger rows after {kills} kills"
    );
    check_lake(&helpers::read_lake(&s.lake, None), &ids);
}

#[test]
fn two_instances_with_a_rebalance_in_the_middle_still_land_exactly_once() {
    let s = setup("sink-rebalance", None, "roll_rows = 1000");
    let ids = helpers::produce_pseudo(&s.bootstrap, &s.prefix, 24_000, 63, 4);
    let n: usize = ids.values().map(Vec::len).sum();
    let a = run(&s, "a", "127.0.0.1:0");
    wait_until("some rows", 60, || ledger_rows(&s.lake) > 0);
    let b = run(&s, "b", "127.0.0.1:0");
    std::thread::sleep(Duration::from_secs(3));
    // A leaves: B takes every partition over from the ledger.
    drop(a);
    wait_until("all rows committed", 240, || {
        ledger_rows(&s.lake) >= n as u64
    });
    drop(b);
    assert_eq!(ledger_rows(&s.lake), n as u64);
    check_lake(&helpers::read_lake(&s.lake, None), &ids);
}
