//! The three services running together on nisshi, seen as Prometheus and a
//! log shipper see them: /metrics accepted by `promtool check metrics`,
//! /healthz and /readyz answering, every metric the dashboard and the alert
//! rules use actually exported, and `--log-json` logs that are JSON lines.

use crate::helpers;

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
    let promtool = helpers::promtool();
    let s = |x: &str| x.to_owned();
    let mut p = helpers::Pipeline::start(
        "ops",
        &[
            s("--source"),
            s("simulate"),
            s("--rate"),
            s("300"),
            s("--bad-share"),
            s("0.05"),
        ],
        &[],
        &["--log-json"],
    );

    // Wait until records went all the way through.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut scrapes: Vec<String> = loop {
        assert!(
            Instant::now() < deadline,
            "no rows landed: see {}",
            p.dir.display()
        );
        std::thread::sleep(Duration::from_secs(1));
        if let [Some(i), Some(t), Some(k)] = &p.scrape()[..]
            && helpers::metric_sum(i, chitose_ingest::metrics::names::EVENTS_REJECTED_TOTAL) > 0.0
            && helpers::metric_sum(t, chitose_transform::metrics::names::RECORDS_TOTAL) > 0.0
            && helpers::metric_sum(k, chitose_sink::metrics::names::ROWS_TOTAL) > 0.0
            && k.lines().any(|l| {
                l.starts_with("chitose_sink_consumer_lag_records{")
                    && !l.contains("partition=\"-1\"")
            })
        {
            break vec![i.clone(), t.clone(), k.clone()];
        }
    };

    // librdkafka's own statistics reach every stage's metrics: what each
    // client asked the broker for, and how the producers batch. They
    // arrive with the statistics, every 5 s.
    use chitose_ingest::metrics::names as ingest;
    use chitose_sink::metrics::names as sink;
    use chitose_transform::metrics::names as transform;
    let wanted: [(usize, &str, &str); 7] = [
        (0, ingest::KAFKA_REQUESTS_TOTAL, r#"request="Produce""#),
        (0, ingest::KAFKA_PRODUCE_BATCH_MESSAGES, ""),
        (1, transform::KAFKA_REQUESTS_TOTAL, r#"request="Fetch""#),
        (1, transform::KAFKA_REQUESTS_TOTAL, r#"request="EndTxn""#),
        (1, transform::KAFKA_MESSAGES_TOTAL, r#"direction="sent""#),
        (2, sink::KAFKA_REQUESTS_TOTAL, r#"request="Fetch""#),
        (
            2,
            sink::KAFKA_MESSAGE_BYTES_TOTAL,
            r#"direction="received""#,
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let scrapes = loop {
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(i, name, labels)| helpers::metric(&scrapes[*i], name, labels) <= 0.0)
            .collect();
        if missing.is_empty() {
            break scrapes;
        }
        assert!(
            Instant::now() < deadline,
            "client statistics never arrived: {missing:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
        if let [Some(i), Some(t), Some(k)] = &p.scrape()[..] {
            scrapes = vec![i.clone(), t.clone(), k.clone()];
        }
    };

    // Prometheus' own checker accepts every scrape (names, help, types,
    // histogram buckets, label syntax).
    let mut exported = BTreeSet::new();
    for (name, text) in ["ingest", "transform", "sink"].iter().zip(&scrapes) {
        let mut c = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{name}: promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        exported.extend(families(text));
    }
    for o in &p.ops {
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
    p.stop();
    // Logs are JSON lines with a level and a message, nothing else mixed in.
    for name in ["ingest", "transform", "sink"] {
        let text = String::from_utf8(p.log(name)).unwrap();
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
