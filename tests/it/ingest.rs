//! `chitose ingest` end to end on nisshi: every source, kill -9 of the files
//! source mid-file, the HTTP contract with the broker down and back.

use crate::helpers;

use crate::helpers::{OwnBroker, chitose, free_port, read_topic, topic_size};
use chitose_ingest::simulate::{Generator, SimConfig, Verdict};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

fn lines(seed: u64, n: usize, bad_share: f64) -> Vec<chitose_ingest::simulate::GeneratedLine> {
    let mut g = Generator::new(SimConfig {
        seed,
        patients: 3_000,
        bad_share,
        hub: Some("27".into()),
        ..SimConfig::default()
    })
    .unwrap();
    (0..n).map(|_| g.next_line()).collect()
}

fn write_ndjson(path: &std::path::Path, ls: &[chitose_ingest::simulate::GeneratedLine]) {
    let mut b = Vec::new();
    for l in ls {
        b.extend_from_slice(&l.bytes);
        b.push(b'\n');
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn files_source_is_exactly_once_through_kill_9() {
    let bootstrap = helpers::nisshi();
    let dir = helpers::scratch("files");
    let topic = format!("health.raw.27.files-{}", uuid::Uuid::new_v4().simple());
    let ls = lines(31, 60_000, 0.05);
    // Written under another name and renamed, as hubs are told to.
    let tmp = dir.join("export-001.tmp");
    write_ndjson(&tmp, &ls);
    std::fs::rename(&tmp, dir.join("export-001.ndjson")).unwrap();
    let good: HashMap<String, usize> = ls
        .iter()
        .enumerate()
        .filter_map(|(i, l)| match &l.verdict {
            Verdict::Good { event_id } => Some((event_id.clone(), i + 1)),
            Verdict::Bad(_) => None,
        })
        .collect();
    let bad_lines: HashSet<usize> = ls
        .iter()
        .enumerate()
        .filter(|(_, l)| matches!(l.verdict, Verdict::Bad(_)))
        .map(|(i, _)| i + 1)
        .collect();

    let args = |ops: &str| {
        vec![
            "ingest".to_string(),
            "--source".into(),
            "files".into(),
            "--prefecture".into(),
            "27".into(),
            "--bootstrap".into(),
            bootstrap.clone(),
            "--dir".into(),
            dir.display().to_string(),
            "--exit-when-idle".into(),
            "--ops-listen".into(),
            ops.to_string(),
        ]
    };
    let env = [
        ("CHITOSE_INGEST__TOPIC", topic.as_str()),
        ("CHITOSE_INGEST__FILES__CHECKPOINT_EVERY_LINES", "500"),
    ];
    // Kill -9 three times, at growing progress, then let it finish.
    let (kills, mut logs) = kill_9_at(&bootstrap, &topic, &[3_000, 15_000, 35_000], || {
        let a = args(&format!("127.0.0.1:{}", free_port()));
        chitose(&a.iter().map(String::as_str).collect::<Vec<_>>(), &env)
    });
    assert!(
        kills >= 2,
        "the file finished before the kills: make it longer"
    );
    let a = args(&format!("127.0.0.1:{}", free_port()));
    let mut child = chitose(&a.iter().map(String::as_str).collect::<Vec<_>>(), &env);
    let status = child.0.wait().unwrap();
    logs.push_str(&child.log());
    assert!(status.success(), "final run failed: {logs}");
    // The restarts found records of the killed runs beyond the checkpoint,
    // so the read-back path (not luck) kept them from being sent twice.
    assert!(
        logs.contains("found lines already in the topic"),
        "recovery never ran: {logs}"
    );

    let records = read_topic(&bootstrap, &topic);
    let mut seen = HashSet::new();
    for r in &records {
        assert!(
            seen.insert(r.event.event_id.clone()),
            "duplicate after kill -9: {}",
            r.event.event_id
        );
        let line: usize = r.headers["chitose-source-line"].parse().unwrap();
        assert_eq!(
            good.get(&r.event.event_id),
            Some(&line),
            "record carries its line"
        );
        assert_eq!(r.headers["chitose-source-file"], "export-001.ndjson");
    }
    assert_eq!(
        records.len(),
        good.len(),
        "every good line exactly once ({kills} kills)"
    );

    // Rejected lines: each once, with its line number and reason.
    let rejects =
        std::fs::read_to_string(dir.join("rejects/export-001.ndjson.rejects.ndjson")).unwrap();
    let rej_lines: Vec<usize> = rejects
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["line"]
                .as_u64()
                .unwrap() as usize
        })
        .collect();
    assert_eq!(rej_lines.len(), bad_lines.len(), "every rejected line once");
    assert_eq!(rej_lines.iter().copied().collect::<HashSet<_>>(), bad_lines);
    // Kept for the hub's operator, but without what was refused: no My
    // Number (the generator's bad lines hold some), owner-only modes.
    assert!(
        rejects.contains("\"reason\":\"my_number\""),
        "the bad lines include My Numbers"
    );
    assert!(
        !chitose_schemas::mynumber::contains_my_number(&rejects),
        "a My Number was written to rejects/"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("rejects")), 0o700);
        assert_eq!(mode(&dir.join("done")), 0o700);
        assert_eq!(
            mode(&dir.join("rejects/export-001.ndjson.rejects.ndjson")),
            0o600
        );
    }
    assert_eq!(
        records.len() + rej_lines.len(),
        ls.len(),
        "accepted + rejected = read"
    );
    assert!(
        dir.join("done/export-001.ndjson").exists(),
        "moved to done/"
    );
    assert!(!dir.join("export-001.ndjson").exists());
    assert_eq!(
        std::fs::read_dir(dir.join(".chitose")).unwrap().count(),
        0,
        "checkpoint removed"
    );
}

/// Starts `run` once per target and kills it -9 as soon as `topic` holds
/// that many records (a run that finishes first is not killed). Returns
/// the kills and the runs' logs.
fn kill_9_at(
    bootstrap: &str,
    topic: &str,
    targets: &[i64],
    run: impl Fn() -> helpers::Child,
) -> (usize, String) {
    let (mut kills, mut logs) = (0, String::new());
    for &target in targets {
        let mut child = run();
        let deadline = Instant::now() + Duration::from_secs(120);
        while topic_size(bootstrap, topic) < target {
            assert!(
                Instant::now() < deadline,
                "no progress to {target}: {}",
                child.log()
            );
            if child.0.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if child.0.try_wait().unwrap().is_none() {
            child.0.kill().unwrap(); // SIGKILL
            child.0.wait().unwrap();
            kills += 1;
        }
        logs.push_str(&child.log());
    }
    (kills, logs)
}

/// The files source in batch mode over `dir`.
fn files_run(bootstrap: &str, dir: &std::path::Path, env: &[(&str, &str)]) -> helpers::Child {
    files_run_with(bootstrap, dir, None, env)
}

/// As [`files_run`], with a config file.
fn files_run_with(
    bootstrap: &str,
    dir: &std::path::Path,
    config: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> helpers::Child {
    let ops = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "ingest",
        "--source",
        "files",
        "--prefecture",
        "27",
        "--bootstrap",
        bootstrap,
        "--dir",
        dir.to_str().unwrap(),
        "--exit-when-idle",
        "--ops-listen",
        &ops,
    ];
    if let Some(c) = config {
        args.extend(["--config", c.to_str().unwrap()]);
    }
    chitose(&args, env)
}

fn post(url: &str, token: &str, body: Vec<u8>) -> (u16, serde_json::Value, Option<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let body = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
            retry,
        )
    })
}

fn get(url: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        match reqwest::get(url).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap()),
            Err(_) => (0, String::new()),
        }
    })
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn http_source_answers_202_only_after_ack_and_503_while_the_broker_is_down() {
    let broker = OwnBroker::start("http-broker");
    let topic = "health.raw.27";
    let (port, ops) = (free_port(), free_port());
    let token = "token-for-osaka-0123456789-0123456789";
    let other = "token-for-kyoto-0123456789-0123456789";
    let osaka_hash = helpers::token_hashes("27", token);
    let _child = chitose(
        &[
            "ingest",
            "--source",
            "http",
            "--prefecture",
            "27",
            "--bootstrap",
            &broker.bootstrap,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--ops-listen",
            &format!("127.0.0.1:{ops}"),
        ],
        &[
            ("CHITOSE_INGEST__HTTP__TOKEN_SHA256", &osaka_hash),
            ("CHITOSE_INGEST__HTTP__ACK_DEADLINE", "3s"),
            ("CHITOSE_INGEST__HTTP__MAX_BODY_BYTES", "2000000"),
        ],
    );
    let url = format!("http://127.0.0.1:{port}/v1/events");
    let ready = format!("http://127.0.0.1:{ops}/readyz");
    wait_for("readyz", 60, || get(&ready).0 == 200);

    let ls = lines(41, 3_000, 0.0);
    let ndjson = |ls: &[chitose_ingest::simulate::GeneratedLine]| {
        ls.iter()
            .flat_map(|l| l.bytes.iter().copied().chain([b'\n']))
            .collect::<Vec<u8>>()
    };
    let mut acked: HashSet<String> = HashSet::new();
    let ids = |ls: &[chitose_ingest::simulate::GeneratedLine]| {
        ls.iter()
            .filter_map(|l| match &l.verdict {
                Verdict::Good { event_id } => Some(event_id.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };

    // 202 after ack: the records are in the topic when the answer comes.
    let (s, body, _) = post(&url, token, ndjson(&ls[..1000]));
    assert_eq!(s, 202, "{body}");
    assert_eq!(body["accepted"], 1000);
    acked.extend(ids(&ls[..1000]));
    assert_eq!(
        topic_size(&broker.bootstrap, topic),
        1000,
        "acknowledged before 202"
    );

    // A JSON array works too.
    let arr = format!(
        "[{}]",
        ls[1000..1100]
            .iter()
            .map(|l| String::from_utf8(l.bytes.clone()).unwrap())
            .collect::<Vec<_>>()
            .join(",")
    );
    let (s, body, _) = post(&url, token, arr.into_bytes());
    assert_eq!((s, body["accepted"].as_u64()), (202, Some(100)), "{body}");
    acked.extend(ids(&ls[1000..1100]));

    // Unknown token: 401. Kyoto's token is refused by Osaka's instance,
    // even with Kyoto's hash configured here by mistake.
    assert_eq!(post(&url, "nope", ndjson(&ls[1100..1101])).0, 401);
    let (s, body, _) = post(&url, other, ndjson(&ls[1100..1105]));
    assert_eq!(s, 401, "{body}");

    // Mixed batch: valid records go in, bad ones are listed by index.
    let mut g = Generator::new(SimConfig {
        seed: 42,
        patients: 500,
        hub: Some("27".into()),
        ..SimConfig::default()
    })
    .unwrap();
    let mut mixed = ls[1100..1110].to_vec();
    mixed.insert(
        3,
        g.bad_line(chitose_ingest::simulate::BadKind::MyNumberInComment),
    );
    let (s, body, _) = post(&url, token, ndjson(&mixed));
    assert_eq!(s, 202, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(10), Some(1))
    );
    assert_eq!(body["errors"][0]["index"], 3);
    assert_eq!(body["errors"][0]["reason"], "my_number");
    assert!(
        !body
            .to_string()
            .contains(&String::from_utf8_lossy(&mixed[3].bytes)[40..60]),
        "no value echoed"
    );
    acked.extend(ids(&ls[1100..1110]));

    // Over the size limit: 413.
    assert_eq!(post(&url, token, vec![b' '; 2_100_000]).0, 413);

    // Broker down: 503 with Retry-After, never 202.
    broker.stop();
    wait_for("readyz to turn 503", 30, || get(&ready).0 == 503);
    let (s, _, retry) = post(&url, token, ndjson(&ls[1110..1200]));
    assert_eq!(s, 503);
    assert!(retry.is_some(), "Retry-After set");

    // Broker back with its data: what was acknowledged is still there, and
    // the client's retry goes through.
    broker.restart();
    wait_for("readyz after restart", 60, || get(&ready).0 == 200);
    let mut status = 0;
    for _ in 0..20 {
        status = post(&url, token, ndjson(&ls[1110..1200])).0;
        if status == 202 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(status, 202);
    acked.extend(ids(&ls[1110..1200]));
    let got: HashSet<String> = read_topic(&broker.bootstrap, topic)
        .into_iter()
        .map(|r| r.event.event_id)
        .collect();
    assert!(
        acked.is_subset(&got),
        "{} acknowledged records missing after the broker restart",
        acked.difference(&got).count()
    );

    // The metrics reconcile: read = accepted + rejected.
    let (s, m) = get(&format!("http://127.0.0.1:{ops}/metrics"));
    assert_eq!(s, 200);
    let value = |name: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let (read, accepted, rejected) = (
        value(chitose_ingest::metrics::names::EVENTS_READ_TOTAL),
        value(chitose_ingest::metrics::names::EVENTS_ACCEPTED_TOTAL),
        value(chitose_ingest::metrics::names::EVENTS_REJECTED_TOTAL),
    );
    assert!(
        accepted >= acked.len() as f64,
        "accepted {accepted} < acked {}",
        acked.len()
    );
    // The My Number record; requests with a refused token are not read.
    assert_eq!(rejected, 1.0);
    assert!(
        read >= accepted + rejected - 1e-9,
        "read {read}, accepted {accepted}, rejected {rejected}"
    );
    assert!(m.contains("chitose_ingest_produce_latency_seconds_bucket"));
    assert!(m.contains("prefecture=\"27\""));
}

#[test]
fn simulate_source_counts_reconcile() {
    let bootstrap = helpers::nisshi();
    let topic = format!("health.raw.27.sim-{}", uuid::Uuid::new_v4().simple());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args([
            "ingest",
            "--source",
            "simulate",
            "--prefecture",
            "27",
            "--bootstrap",
            &bootstrap,
            "--events",
            "5000",
            "--bad-share",
            "0.1",
            "--seed",
            "7",
            "--ops-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env("CHITOSE_INGEST__TOPIC", &topic)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary = stderr.lines().last().unwrap();
    let nums: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let (read, accepted, rejected) = (nums[0], nums[1], nums[2]);
    assert_eq!(read, 5000, "{summary}");
    assert_eq!(accepted + rejected, read, "{summary}");
    assert!(rejected > 300 && rejected < 700, "{summary}");
    let records = read_topic(&bootstrap, &topic);
    assert_eq!(records.len() as u64, accepted);
    assert!(records.iter().all(|r| r.event.hub_prefecture == "27"));
    let ids: HashSet<_> = records.iter().map(|r| r.event.event_id.clone()).collect();
    assert_eq!(ids.len(), records.len(), "no duplicates");
}

/// A lab export's Japanese headers → the JSON form.
const LAB_CSV_COLUMNS: &str = r#"
[files.csv.columns]
"イベントID" = "event_id"
"発生日時" = "occurred_at"
"記録日時" = "recorded_at"
"施設コード" = "facility_code"
"患者ID" = "patient.local_patient_id"
"生年月日" = "patient.birth_date"
"性別" = "patient.sex"
"JLAC10" = "payload.jlac10_code"
"検査名" = "payload.test_name"
"結果値" = "payload.value_numeric:number"
"単位" = "payload.unit"
"#;

#[test]
fn files_source_reads_csv_through_a_header_mapping() {
    let bootstrap = helpers::nisshi();
    let dir = helpers::scratch("csv");
    let topic = format!("health.raw.27.csv-{}", uuid::Uuid::new_v4().simple());
    // A lab export with Japanese headers, one quoted field with a comma,
    // one row with a non-numeric value and one with a column missing.
    let csv = "\u{feff}イベントID,発生日時,記録日時,施設コード,患者ID,生年月日,性別,JLAC10,検査名,結果値,単位\n\
        e-0001,2026-03-01T09:00:00+09:00,2026-03-01T10:00:00+09:00,2710000001,P0001,1960-01-02,female,3D046000001906202,\"HbA1c, NGSP\",6.1,%\n\
        e-0002,2026-03-01T09:05:00+09:00,2026-03-01T10:00:00+09:00,2710000001,P0002,1971-05-06,male,3D010000001926101,血糖,高い,mg/dL\n\
        e-0003,2026-03-01T09:10:00+09:00,2026-03-01T10:00:00+09:00,2710000001,P0003,1980-07-08,male,3F070000002327101,HDL,55\n\
        e-0004,2026-03-01T09:15:00+09:00,2026-03-01T10:00:00+09:00,2710000001,P0004,1990-09-10,female,3F077000002327101,LDL,128,mg/dL\n";
    std::fs::write(dir.join("labs.csv"), csv).unwrap();
    let env: Vec<(String, String)> = [
        ("TOPIC", topic.as_str()),
        ("FILES__CSV__CONSTANTS__EVENT_TYPE", "lab_result"),
        ("FILES__CSV__CONSTANTS__HUB_PREFECTURE", "27"),
        ("FILES__CSV__CONSTANTS__SOURCE_FORMAT", "csv"),
    ]
    .iter()
    .map(|(k, v)| (format!("CHITOSE_INGEST__{k}"), v.to_string()))
    .collect();
    let config = dir.join("ingest.toml");
    std::fs::write(&config, LAB_CSV_COLUMNS).unwrap();
    let mut child = files_run_with(
        &bootstrap,
        &dir,
        Some(&config),
        &env.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    );
    assert!(child.0.wait().unwrap().success(), "{}", child.log());
    let records = read_topic(&bootstrap, &topic);
    let mut ids: Vec<String> = records.iter().map(|r| r.event.event_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["e-0001", "e-0004"]);
    let first = records
        .iter()
        .find(|r| r.event.event_id == "e-0001")
        .unwrap();
    match &first.event.payload {
        chitose_schemas::raw::Payload::LabResult(l) => {
            assert_eq!(l.test_name, "HbA1c, NGSP");
            assert_eq!(l.value_numeric, Some(6.1));
        }
        other => panic!("expected a lab result, found {other:?}"),
    }
    assert_eq!(first.headers["chitose-source-line"], "2");
    let rejects = std::fs::read_to_string(dir.join("rejects/labs.csv.rejects.ndjson")).unwrap();
    let rej: Vec<serde_json::Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rej.len(), 2, "{rejects}");
    assert_eq!(
        (rej[0]["line"].as_u64(), rej[0]["reason"].as_str()),
        (Some(3), Some("wrong_type"))
    );
    assert!(
        rej[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("payload.value_numeric: expected a number in CSV column 結果値")
    );
    assert_eq!(
        (rej[1]["line"].as_u64(), rej[1]["reason"].as_str()),
        (Some(4), Some("malformed"))
    );
    assert!(dir.join("done/labs.csv").exists());
}

#[test]
fn fhir_bundles_arrive_through_post_and_as_files() {
    let bootstrap = helpers::nisshi();
    let bundle =
        std::fs::read(helpers::repo().join("ingest/tests/fixtures/jp-core-bundle.fhir.json"))
            .unwrap();
    // Six events (encounter, diagnosis, lab result, prescription,
    // vaccination, checkup); the ids are keyed hashes of the bundle and
    // entry, the same whichever way the bundle comes.
    let expected_events = 6;
    // POST /fhir
    let topic = format!("health.raw.27.fhir-http-{}", uuid::Uuid::new_v4().simple());
    let (port, ops) = (free_port(), free_port());
    let token = "token-for-osaka-0123456789-0123456789";
    let hashes = helpers::token_hashes("27", token);
    let _child = chitose(
        &[
            "ingest",
            "--source",
            "http",
            "--prefecture",
            "27",
            "--bootstrap",
            &bootstrap,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--ops-listen",
            &format!("127.0.0.1:{ops}"),
        ],
        &[
            ("CHITOSE_INGEST__HTTP__TOKEN_SHA256", &hashes),
            ("CHITOSE_INGEST__TOPIC", &topic),
        ],
    );
    wait_for("readyz", 60, || {
        get(&format!("http://127.0.0.1:{ops}/readyz")).0 == 200
    });
    let (s, body, _) = post(
        &format!("http://127.0.0.1:{port}/fhir"),
        token,
        bundle.clone(),
    );
    assert_eq!(s, 202, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(expected_events), Some(1)),
        "{body}"
    );
    assert!(
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["reason"] == "unmappable")
    );
    // A published 電子処方箋 document bundle, as an Osaka hub would POST
    // it (its Tokyo institution number moved to Osaka): its encounter and
    // two prescriptions are accepted; Composition, Patient, Coverages,
    // Organizations, Practitioner(Role) and Communication are context.
    let published = std::fs::read_to_string(helpers::repo().join(
        "tests/corpus/fhir/eprescription/Bundle-Bundle-for-JP-MedReq-ePreData-Example01.json",
    ))
    .unwrap()
    .replace("1311234567", "2711234567");
    let (s, body, _) = post(
        &format!("http://127.0.0.1:{port}/fhir"),
        token,
        published.into_bytes(),
    );
    assert_eq!(s, 202, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(3), Some(0)),
        "{body}"
    );
    let published_ids: HashSet<String> = read_topic(&bootstrap, &topic)
        .into_iter()
        .filter(|r| {
            r.event
                .patient
                .insurance
                .as_ref()
                .is_some_and(|i| i.insurer_number == "06123456")
        })
        .map(|r| r.event.event_id)
        .collect();
    assert_eq!(
        published_ids.len(),
        3,
        "linked by the bundle's own Coverage"
    );
    let mut ids: Vec<String> = read_topic(&bootstrap, &topic)
        .into_iter()
        .map(|r| r.event.event_id)
        .filter(|i| !published_ids.contains(i))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, expected_events);
    assert!(ids.iter().all(|i| i.starts_with("fhir-") && i.len() == 45));
    let want = ids;

    // As a file.
    let topic = format!("health.raw.27.fhir-file-{}", uuid::Uuid::new_v4().simple());
    let dir = helpers::scratch("fhir-files");
    std::fs::write(dir.join("bundle-001.fhir.json"), &bundle).unwrap();
    let mut child = files_run(&bootstrap, &dir, &[("CHITOSE_INGEST__TOPIC", &topic)]);
    assert!(child.0.wait().unwrap().success(), "{}", child.log());
    let records = read_topic(&bootstrap, &topic);
    let mut ids: Vec<String> = records.iter().map(|r| r.event.event_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, want);
    assert!(
        records
            .iter()
            .all(|r| r.headers["chitose-source-file"] == "bundle-001.fhir.json")
    );
    let rejects =
        std::fs::read_to_string(dir.join("rejects/bundle-001.fhir.json.rejects.ndjson")).unwrap();
    assert_eq!(rejects.lines().count(), 1);
    assert!(
        rejects
            .lines()
            .all(|l| l.contains("\"reason\":\"unmappable\""))
    );
    assert!(dir.join("done/bundle-001.fhir.json").exists());
}

#[test]
fn sigterm_flushes_and_checkpoints_so_a_restart_resends_nothing() {
    let bootstrap = helpers::nisshi();
    let dir = helpers::scratch("sigterm");
    let topic = format!("health.raw.27.term-{}", uuid::Uuid::new_v4().simple());
    let ls = lines(51, 40_000, 0.0);
    write_ndjson(&dir.join("export.ndjson"), &ls);
    let run = || files_run(&bootstrap, &dir, &[("CHITOSE_INGEST__TOPIC", &topic)]);
    let mut child = run();
    wait_for("first records", 60, || {
        topic_size(&bootstrap, &topic) > 5_000
    });
    let pid = child.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.0.wait().unwrap();
    assert!(status.success(), "SIGTERM is a clean stop: {}", child.log());
    let ckpt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(".chitose/export.ndjson.ckpt")).unwrap())
            .unwrap();
    let line = ckpt["line"].as_u64().unwrap();
    assert!(line > 0 && line < 40_000, "stopped mid-file at line {line}");
    assert_eq!(
        topic_size(&bootstrap, &topic) as u64,
        line,
        "everything sent was acknowledged and checkpointed"
    );

    let mut child = run();
    assert!(child.0.wait().unwrap().success());
    assert!(
        !child.log().contains("found lines already in the topic"),
        "a clean stop leaves nothing to recover"
    );
    let records = read_topic(&bootstrap, &topic);
    let ids: HashSet<String> = records.iter().map(|r| r.event.event_id.clone()).collect();
    assert_eq!((records.len(), ids.len()), (40_000, 40_000));
}

#[test]
fn files_source_pauses_while_the_broker_is_down_and_loses_nothing() {
    let broker = OwnBroker::start("files-broker-down");
    let dir = helpers::scratch("files-down");
    let topic = "health.raw.27";
    // The source must still be sending when the broker stops: 40 000
    // lines were sometimes all sent before the stop took effect, and on a
    // faster machine 120 000 were. A bound of 1 000 unacknowledged records
    // paces it by acknowledgements (a 50 ms linger each), whatever the CPU:
    // about 20 000 lines a second, six seconds for all of them.
    let n = 120_000;
    let ls = lines(61, n, 0.0);
    write_ndjson(&dir.join("export.ndjson"), &ls);
    let cfg = helpers::scratch("files-down-cfg").join("ingest.toml");
    std::fs::write(
        &cfg,
        "max_in_flight = 1000\n[kafka.properties]\n\"message.timeout.ms\" = \"3000\"\n",
    )
    .unwrap();
    let mut child = chitose(
        &[
            "ingest",
            "--config",
            cfg.to_str().unwrap(),
            "--source",
            "files",
            "--prefecture",
            "27",
            "--bootstrap",
            &broker.bootstrap,
            "--dir",
            dir.to_str().unwrap(),
            "--exit-when-idle",
            "--ops-listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        &[],
    );
    wait_for("first records", 60, || {
        topic_size(&broker.bootstrap, topic) > 3_000
    });
    broker.stop();
    // Long enough for deliveries to time out (3 s): the pass stops and the
    // source waits for the broker.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the source waits for the broker instead of exiting"
    );
    broker.restart();
    wait_for("the source to finish after the outage", 120, || {
        child.0.try_wait().unwrap().is_some()
    });
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{}", child.log());
    let records = read_topic(&broker.bootstrap, topic);
    let ids: HashSet<String> = records.iter().map(|r| r.event.event_id.clone()).collect();
    assert_eq!(
        (records.len(), ids.len()),
        (n, n),
        "every line exactly once across the outage"
    );
}

/// Hub folders as they really are: a Shift_JIS CSV, BOMs, UTF-16, a
/// duplicated key, symlinks, a visiting-nurse station. Every good file
/// lands, every bad one is moved aside with a reason, and none stops the
/// folder; with `files.encoding = "shift_jis"` the CSV lands too.
#[test]
fn hub_files_as_they_are_come_through_and_one_bad_file_never_stops_the_folder() {
    let bootstrap = helpers::nisshi();
    let dir = helpers::scratch("as-they-are");
    let topic = format!("health.raw.27.real-{}", uuid::Uuid::new_v4().simple());
    let csv = "イベントID,発生日時,記録日時,施設コード,患者ID,生年月日,性別,JLAC10,検査名,結果値,単位\n\
        s-0001,2026-03-01T09:00:00+09:00,2026-03-01T10:00:00+09:00,2710000001,P0001,1960-01-02,female,3D046000001906202,ＨｂＡ１ｃ,6.1,%\n\
        s-0002,2026-03-01T09:15:00+09:00,2026-03-01T10:00:00+09:00,2710000001,P0004,1990-09-10,female,3F077000002327101,ＬＤＬコレステロール,128,mg/dL\n";
    let (sjis, _, lossy) = encoding_rs::SHIFT_JIS.encode(csv);
    assert!(!lossy && std::str::from_utf8(&sjis).is_err());
    std::fs::write(dir.join("a-sjis.csv"), &sjis).unwrap();
    let ls = lines(77, 12, 0.0);
    let ids = |r: std::ops::Range<usize>| -> Vec<String> {
        ls[r]
            .iter()
            .map(|l| {
                serde_json::from_slice::<serde_json::Value>(&l.bytes).unwrap()["event_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let join = |r: std::ops::Range<usize>| -> Vec<u8> {
        ls[r]
            .iter()
            .flat_map(|l| l.bytes.iter().copied().chain([b'\n']))
            .collect()
    };
    let mut bom = "\u{feff}".as_bytes().to_vec();
    bom.extend(join(0..3));
    std::fs::write(dir.join("b-bom.ndjson"), bom).unwrap();
    // The first line repeats a key (two readers could read two records);
    // the second is clean.
    let mut dup = ls[3].bytes.clone();
    dup.pop();
    dup.extend_from_slice(b",\"event_type\":\"diagnosis\"}\n");
    dup.extend(join(4..5));
    std::fs::write(dir.join("c-dup.ndjson"), dup).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.join("b-bom.ndjson"), dir.join("d-link.ndjson")).unwrap();
        std::os::unix::fs::symlink(dir.join("e-loop.ndjson"), dir.join("e-loop.ndjson")).unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("f-dangling.ndjson")).unwrap();
    }
    let text16 = String::from_utf8(join(5..7)).unwrap();
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(text16.encode_utf16().flat_map(u16::to_le_bytes));
    std::fs::write(dir.join("g-utf16.ndjson"), utf16).unwrap();
    let mut nurse: serde_json::Value = serde_json::from_slice(&ls[7].bytes).unwrap();
    let fc = nurse["facility_code"].as_str().unwrap().to_owned();
    nurse["facility_code"] = format!("{}6{}", &fc[..2], &fc[3..]).into();
    std::fs::write(dir.join("h-nurse.ndjson"), format!("{nurse}\n")).unwrap();
    std::fs::write(dir.join("z-last.ndjson"), join(8..12)).unwrap();
    let config = dir.join("ingest.toml");
    std::fs::write(
        &config,
        format!(
            "[files.csv.constants]\nevent_type = \"lab_result\"\nhub_prefecture = \"27\"\nsource_format = \"csv\"\n{LAB_CSV_COLUMNS}"
        ),
    )
    .unwrap();
    let run = |encoding: &str| {
        let mut child = files_run_with(
            &bootstrap,
            &dir,
            Some(&config),
            &[
                ("CHITOSE_INGEST__TOPIC", topic.as_str()),
                ("CHITOSE_INGEST__FILES__ENCODING", encoding),
            ],
        );
        assert!(child.0.wait().unwrap().success(), "{}", child.log());
        child.log()
    };
    let log = run("utf-8");
    let mut got: Vec<String> = read_topic(&bootstrap, &topic)
        .into_iter()
        .map(|r| r.event.event_id)
        .collect();
    got.sort();
    let mut want: Vec<String> = [ids(0..3), ids(4..5), ids(5..7), ids(7..8), ids(8..12)].concat();
    want.sort();
    assert_eq!(got, want, "{log}");
    let rejects = |f: &str| {
        std::fs::read_to_string(dir.join("rejects").join(format!("{f}.rejects.ndjson")))
            .unwrap_or_default()
    };
    assert!(
        rejects("a-sjis.csv").contains("\"reason\":\"encoding\""),
        "{}",
        rejects("a-sjis.csv")
    );
    assert!(dir.join("rejects/a-sjis.csv").exists());
    let dup_rejects = rejects("c-dup.ndjson");
    assert_eq!(dup_rejects.lines().count(), 1);
    assert!(
        dup_rejects.contains("a key given twice at line 1"),
        "{dup_rejects}"
    );
    for link in ["d-link.ndjson", "e-loop.ndjson", "f-dangling.ndjson"] {
        assert!(
            rejects(link).contains("\"reason\":\"symlink\""),
            "{link}: {}",
            rejects(link)
        );
        assert!(
            std::fs::symlink_metadata(dir.join("rejects").join(link)).is_ok(),
            "{link}"
        );
        assert!(std::fs::symlink_metadata(dir.join(link)).is_err(), "{link}");
    }
    // The hub's file as sent stays in done/; the UTF-8 copy is gone.
    assert!(dir.join("done/g-utf16.ndjson").exists());
    assert!(
        std::fs::read_dir(dir.join(".chitose"))
            .unwrap()
            .next()
            .is_none()
    );

    // The same CSV with the hub's encoding declared.
    std::fs::rename(dir.join("rejects/a-sjis.csv"), dir.join("a-sjis.csv")).unwrap();
    run("shift_jis");
    let records = read_topic(&bootstrap, &topic);
    let csv_rows: Vec<_> = records
        .iter()
        .filter(|r| r.event.event_id.starts_with("s-"))
        .collect();
    assert_eq!(csv_rows.len(), 2);
    assert!(csv_rows.iter().any(|r| matches!(&r.event.payload, chitose_schemas::raw::Payload::LabResult(l) if l.test_name == "ＨｂＡ１ｃ")));
}

/// An SS-MIX2 storage tree (the generator's, with cancelled orders) through
/// `--source ssmix2`, killed -9 twice mid-tree: every message's events
/// reach the topic exactly once, corrections included; the storage is
/// left as it was; no header names a storage path (it holds the patient id
/// and the order number).
#[test]
fn ssmix2_storage_lands_every_message_once_through_kill_9() {
    use chitose_ingest::ssmix2::{FileName, map_message};
    let bootstrap = helpers::nisshi();
    let dir = helpers::scratch("ssmix2");
    let (root, state) = (dir.join("storage"), dir.join("state"));
    let topic = format!("health.raw.27.ssmix2-{}", uuid::Uuid::new_v4().simple());
    let mut g = Generator::new(SimConfig {
        seed: 31,
        patients: 2_000,
        hub: Some("27".into()),
        prefectures: vec!["27".into()],
        ..SimConfig::default()
    })
    .unwrap();
    let tree = chitose_ingest::simulate::ssmix2::write_tree(&mut g, &root, 6_000, 20).unwrap();
    // What each message makes, by the pure core (the shell's oracle).
    let mut want: std::collections::BTreeMap<String, usize> = Default::default();
    let mut files = 0;
    let mut stack = vec![root.clone()];
    let mut listing = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            files += 1;
            listing.push((p.clone(), std::fs::metadata(&p).unwrap().len()));
            let f = FileName::parse(&p.file_name().unwrap().to_string_lossy()).unwrap();
            // Insurance does not change ids; the oracle leaves it out.
            let m = map_message(&f, &std::fs::read(&p).unwrap(), "2710000001", "27", None).unwrap();
            for e in m.events {
                *want
                    .entry(format!(
                        "{} {}",
                        e["event_id"].as_str().unwrap(),
                        e["event_type"].as_str().unwrap()
                    ))
                    .or_default() += 1;
            }
        }
    }
    assert_eq!(files, tree.messages);
    let total: usize = want.values().sum();
    let env = [
        ("CHITOSE_INGEST__TOPIC", topic.as_str()),
        ("CHITOSE_INGEST__SSMIX2__STATE_DIR", state.to_str().unwrap()),
        ("CHITOSE_INGEST__SSMIX2__FACILITY_CODE", "2710000001"),
        ("CHITOSE_INGEST__SSMIX2__BATCH_MESSAGES", "500"),
        ("CHITOSE_INGEST__FILES__CHECKPOINT_EVERY_LINES", "200"),
    ];
    let run = || {
        chitose(
            &[
                "ingest",
                "--source",
                "ssmix2",
                "--prefecture",
                "27",
                "--bootstrap",
                &bootstrap,
                "--dir",
                root.to_str().unwrap(),
                "--exit-when-idle",
                "--ops-listen",
                &format!("127.0.0.1:{}", free_port()),
            ],
            &env,
        )
    };
    let (kills, mut logs) = kill_9_at(
        &bootstrap,
        &topic,
        &[total as i64 / 4, total as i64 * 2 / 3],
        run,
    );
    assert!(
        kills >= 1,
        "the tree finished before the kills: make it larger"
    );
    let mut child = run();
    assert!(child.0.wait().unwrap().success(), "{}", child.log());
    logs.push_str(&child.log());
    let records = read_topic(&bootstrap, &topic);
    let mut got: std::collections::BTreeMap<String, usize> = Default::default();
    for r in &records {
        *got.entry(format!(
            "{} {}",
            r.event.event_id,
            r.event.event_type.symbol()
        ))
        .or_default() += 1;
        assert_eq!(r.event.source_format, "ssmix2");
        let file = &r.headers["chitose-source-file"];
        assert!(file.len() == 19 && file.ends_with(".ndjson"), "{file}");
    }
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want, "every message's events once");
    assert!(got.keys().any(|k| k.ends_with(" correction")));
    // The hospital's storage is untouched.
    for (p, len) in &listing {
        assert_eq!(std::fs::metadata(p).unwrap().len(), *len);
    }
    // Logs say counts, never a name from the storage.
    for (p, _) in listing.iter().take(50) {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(!logs.contains(&name), "a storage file name in the logs");
        let pid = name.split('_').next().unwrap();
        assert!(!logs.contains(pid), "a patient id in the logs");
    }
}
