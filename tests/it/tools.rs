//! The operator tools against a real broker (nisshi): `topics create`,
//! `topics list`, `tail` (masked, `--show-identifiers`, `--limit`,
//! `--follow`).

use crate::helpers;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn chitose(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args(args)
        .output()
        .unwrap()
}

fn lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_then_tail_a_raw_topic() {
    let kafka = helpers::nisshi();
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let create = |extra: &[&str]| {
        let mut args = vec![
            "topics",
            "create",
            "--bootstrap",
            &kafka,
            "--prefix",
            &prefix,
            "--prefectures",
            "27",
            "--pseudo-partitions",
            "1",
            "--dlq-partitions",
            "1",
        ];
        args.extend_from_slice(extra);
        chitose(&args)
    };
    let out = create(&["--raw-partitions", "2"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // raw, dlq and one pseudonymized topic per event type.
    assert_eq!(
        text.matches("created").count(),
        2 + chitose_schemas::raw::EventType::ALL.len(),
        "{text}"
    );
    // Again: nothing to do, nothing altered.
    let out = create(&["--raw-partitions", "2"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("exists")
            .count(),
        2 + chitose_schemas::raw::EventType::ALL.len()
    );
    // Asking for more partitions than a topic has is reported, not applied.
    let out = create(&["--raw-partitions", "4"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(&format!("{prefix}.raw.27: expected 4 partitions, found 2")),
        "{text}"
    );

    // 30 raw events and one message that is not Avro.
    let raw = format!("{prefix}.raw.27");
    let rt = helpers::spine_round_trip(&kafka, &raw, 30).await;
    let producer: rdkafka::producer::FutureProducer =
        chitose_runtime::kafka::KafkaSettings::at(&kafka)
            .producer_config()
            .create()
            .unwrap();
    producer
        .send(
            rdkafka::producer::FutureRecord::<(), _>::to(&raw).payload(&b"{not avro"[..]),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();

    let out = chitose(&["topics", "list", "--bootstrap", &kafka, "--prefix", &prefix]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = text
        .lines()
        .find(|l| l.starts_with(&raw))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>()[1..],
        ["2", "31"],
        "{text}"
    );

    // Masked by default: no name, phone or key; payload values kept.
    let out = chitose(&["tail", &raw, "--bootstrap", &kafka]);
    helpers::assert_ok(&out);
    let got = lines(&out);
    assert_eq!(got.len(), 31);
    let bad: Vec<_> = got.iter().filter(|l| l.get("error").is_some()).collect();
    assert_eq!(bad.len(), 1);
    assert!(
        bad[0]["error"].as_str().unwrap().contains("message header"),
        "{}",
        bad[0]
    );
    assert_eq!(bad[0]["bytes"], 9);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for ev in &rt.sent {
        assert!(
            !text.contains(&ev.patient.local_patient_id),
            "key or id shown"
        );
        if let Some(k) = &ev.patient.name_kana {
            assert!(!text.contains(k.as_str()), "kana name shown");
        }
    }
    let good: Vec<_> = got.iter().filter(|l| l.get("value").is_some()).collect();
    assert!(
        good.iter()
            .all(|l| l["schema"] == "chitose.raw.RawEvent v3")
    );
    assert!(good.iter().all(|l| l["key"] == "<DI masked>"));
    let ids: std::collections::BTreeSet<&str> = good
        .iter()
        .map(|l| l["value"]["event_id"].as_str().unwrap())
        .collect();
    let sent: std::collections::BTreeSet<&str> =
        rt.sent.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, sent);

    // Shown on request.
    let out = chitose(&["tail", &raw, "--bootstrap", &kafka, "--show-identifiers"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let kana = rt
        .sent
        .iter()
        .find_map(|e| e.patient.name_kana.clone())
        .unwrap();
    assert!(text.contains(&kana));

    // --limit.
    let out = chitose(&["tail", &raw, "--bootstrap", &kafka, "--limit", "3"]);
    assert_eq!(lines(&out).len(), 3);

    // --follow: what exists, then what arrives, until Ctrl-C.
    let mut child = Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args(["tail", &raw, "--bootstrap", &kafka, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let _ = tx.send(l.unwrap());
        }
    });
    let mut seen = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen < 31 && std::time::Instant::now() < deadline {
        if rx.recv_timeout(std::time::Duration::from_secs(1)).is_ok() {
            seen += 1;
        }
    }
    assert_eq!(seen, 31);
    helpers::spine_round_trip(&kafka, &raw, 5).await;
    while seen < 36 && std::time::Instant::now() < deadline {
        if rx.recv_timeout(std::time::Duration::from_secs(1)).is_ok() {
            seen += 1;
        }
    }
    assert_eq!(seen, 36, "records produced after the start arrive");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "Ctrl-C ends --follow cleanly: {status}");
}
