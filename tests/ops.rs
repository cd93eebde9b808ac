//! The three services running together on nisshi, seen as Prometheus and a
//! log shipper see them: /metrics accepted by `promtool check metrics`,
//! /healthz and /readyz answering, every metric the dashboard and the alert
//! rules use actually exported, and `--log-json` logs that are JSON lines.

mod helpers;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn get(url: &str) -> Option<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::get(url).await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    })
}

fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Metric family names (`# TYPE` lines) of a scrape.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn services_expose_checked_metrics_and_json_logs() {
    let kafka = helpers::nisshi();
    let promtool = helpers::promtool();
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let dir = helpers::scratch("ops");
    let keys = dir.join("keys");
    for key in ["pseudonym-2026a", "date-2026a"] {
        let st = Command::new(env!("CARGO_BIN_EXE_chitose"))
            .args(["transform", "keygen", "--id", key, "--dir"])
            .arg(&keys)
            .status()
            .unwrap();
        assert!(st.success());
    }
    // Topics first, as in a deployment (pattern subscriptions only see
    // topics that exist when they start, until the next metadata refresh).
    let st = Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args([
            "topics",
            "create",
            "--bootstrap",
            &kafka,
            "--prefix",
            &format!("o{id}"),
        ])
        .args([
            "--prefectures",
            "27",
            "--raw-partitions",
            "2",
            "--pseudo-partitions",
            "2",
        ])
        .args(["--dlq-partitions", "1"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let ops: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", helpers::free_port()))
        .collect();
    let log = |name: &str| dir.join(format!("{name}.log"));
    let spawn = |name: &str, args: Vec<String>, envs: Vec<(&str, String)>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_chitose"));
        c.args(&args)
            .env("RUST_LOG", "info,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log(name)).unwrap());
        for (k, v) in envs {
            c.env(k, v);
        }
        c.spawn().unwrap()
    };
    let s = |x: &str| x.to_owned();
    let mut ingest = spawn(
        "ingest",
        vec![
            s("ingest"),
            s("--source"),
            s("simulate"),
            s("--prefecture"),
            s("27"),
            s("--rate"),
            s("300"),
            s("--bad-share"),
            s("0.05"),
            s("--bootstrap"),
            kafka.clone(),
            s("--ops-listen"),
            ops[0].clone(),
            s("--log-json"),
        ],
        vec![("CHITOSE_INGEST__TOPIC", format!("o{id}.raw.{{prefecture}}"))],
    );
    let mut transform = spawn(
        "transform",
        vec![
            s("transform"),
            s("--bootstrap"),
            kafka.clone(),
            s("--keys-dir"),
            keys.display().to_string(),
            s("--ops-listen"),
            ops[1].clone(),
            s("--log-json"),
        ],
        vec![
            (
                "CHITOSE_TRANSFORM__INPUT_PATTERN",
                format!(r"^o{id}\.raw\..+"),
            ),
            ("CHITOSE_TRANSFORM__OUTPUT_PREFIX", format!("o{id}.pseudo.")),
            ("CHITOSE_TRANSFORM__DLQ_TOPIC", format!("o{id}.dlq")),
            ("CHITOSE_TRANSFORM__GROUP_ID", format!("o{id}-transform")),
            ("CHITOSE_TRANSFORM__OUTPUT_PARTITIONS", s("2")),
        ],
    );
    let mut sink = spawn(
        "sink",
        vec![
            s("sink"),
            s("--bootstrap"),
            kafka.clone(),
            s("--lake"),
            dir.join("lake").display().to_string(),
            s("--ops-listen"),
            ops[2].clone(),
            s("--log-json"),
        ],
        vec![
            (
                "CHITOSE_SINK__INPUT_PATTERN",
                format!(r"^o{id}\.pseudo\..+"),
            ),
            ("CHITOSE_SINK__GROUP_ID", format!("o{id}-sink")),
            ("CHITOSE_SINK__ROLL_AGE_MS", s("1000")),
        ],
    );

    // Wait until records went all the way through.
    let deadline = Instant::now() + Duration::from_secs(120);
    let scrapes;
    loop {
        assert!(
            Instant::now() < deadline,
            "no rows landed: see {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_secs(1));
        let got: Vec<_> = ops
            .iter()
            .map(|o| get(&format!("http://{o}/metrics")).map(|(_, t)| t))
            .collect();
        if let [Some(i), Some(t), Some(k)] = &got[..]
            && sum(i, "chitose_ingest_events_rejected_total") > 0.0
            && sum(t, "chitose_transform_records_total") > 0.0
            && sum(k, "chitose_sink_rows_total") > 0.0
            && sum(k, "chitose_sink_consumer_lag_records") >= 0.0
            && k.contains("chitose_sink_consumer_lag_records")
        {
            scrapes = vec![i.clone(), t.clone(), k.clone()];
            break;
        }
    }

    // Prometheus' own checker accepts every scrape (names, help, types,
    // histogram buckets, label syntax).
    let mut exported = BTreeSet::new();
    for (name, text) in ["ingest", "transform", "sink"].iter().zip(&scrapes) {
        let mut p = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{name}: promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        exported.extend(families(text));
    }
    for o in &ops {
        assert_eq!(
            get(&format!("http://{o}/healthz")).map(|r| r.0),
            Some(200),
            "{o}"
        );
        assert_eq!(
            get(&format!("http://{o}/readyz")).map(|r| r.0),
            Some(200),
            "{o}"
        );
    }

    // Every metric the dashboard and the alerts use is exported live.
    let dashboard =
        std::fs::read_to_string(helpers::repo().join("deploy/grafana/chitose-dashboard.json"))
            .unwrap();
    let alerts =
        std::fs::read_to_string(helpers::repo().join("deploy/prometheus/alerts.yml")).unwrap();
    let mut used = BTreeSet::new();
    for text in [dashboard, alerts] {
        for tok in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if tok.starts_with("chitose_") && !tok.ends_with('_') {
                let fam = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| tok.strip_suffix(s))
                    .unwrap_or(tok);
                used.insert(fam.to_owned());
            }
        }
    }
    let missing: Vec<_> = used.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "used but not exported: {missing:?}\nexported: {exported:?}"
    );

    // SIGTERM: each service stops cleanly (flush, commit) and exits 0.
    for (name, child) in [
        ("ingest", &mut ingest),
        ("transform", &mut transform),
        ("sink", &mut sink),
    ] {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "{name} did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(status.success(), "{name}: {status}");
    }
    // Logs are JSON lines with a level and a message, nothing else mixed in.
    for name in ["ingest", "transform", "sink"] {
        let text = std::fs::read_to_string(log(name)).unwrap();
        let mut n = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {line}"));
            assert!(
                v["level"].is_string() && v["fields"]["message"].is_string(),
                "{line}"
            );
            n += 1;
        }
        assert!(n > 0, "{name} logged nothing");
    }
}
