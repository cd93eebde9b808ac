//! The bad-input corpus against the running pipeline: every bad record gets
//! a clear error naming the field (ingest) or goes to the DLQ with its
//! reason (transform), good records sent after them still land, and the
//! counts reconcile: landed + rejected + dead-lettered (+ empty messages,
//! counted as dropped: nothing to dead-letter) = sent.

use crate::helpers;

use chitose_ingest::simulate::{Generator, SimConfig};
use chitose_schemas::catalog::{RAW_EVENT, SchemaStore};
use chitose_schemas::framing::{put_confluent_header, put_soe_header};
use chitose_schemas::json::JsonToAvro;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use std::time::{Duration, Instant};

const TOKEN: &str = "corpus-hub-token-0123456789-0123456789";

async fn post(url: &str, body: Vec<u8>) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_is_named_or_dead_lettered_and_the_counts_reconcile() {
    let port = helpers::free_port();
    let listen = format!("127.0.0.1:{port}");
    let s = |x: &str| x.to_owned();
    let hashes = helpers::token_hashes("27", TOKEN);
    let mut p = helpers::Pipeline::start(
        "bad-input",
        &[s("--source"), s("http"), s("--listen"), listen.clone()],
        &[("CHITOSE_INGEST__HTTP__TOKEN_SHA256", &hashes)],
        &[],
    );
    let url = format!("http://{listen}/v1/events");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://{}/readyz", p.ops[0]))
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(Instant::now() < deadline, "ingest not ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut sent, mut rejected, mut good) = (0u64, 0u64, 0u64);

    // 1. The JSON corpus: each line rejected, the error naming its field.
    let corpus = helpers::repo().join("tests/corpus/json");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    files.sort();
    assert!(files.len() >= 6);
    for f in &files {
        let body = std::fs::read(f).unwrap();
        let lines = body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64;
        let (status, answer) = post(&url, body).await;
        assert!(
            status == 400 || status == 202,
            "{}: {status} {answer}",
            f.display()
        );
        assert_eq!(answer["accepted"], 0, "{}: {answer}", f.display());
        assert_eq!(
            answer["rejected"].as_u64(),
            Some(lines),
            "{}: {answer}",
            f.display()
        );
        for e in answer["errors"].as_array().unwrap() {
            let msg = e["error"].as_str().unwrap();
            assert!(msg.contains("expected"), "{msg}");
            assert!(e["reason"].is_string(), "{e}");
            // Never a value: the corpus names and phone number stay out.
            for secret in ["山田", "ヤマダ", "06-1234-5678", "430001689", "surgery"] {
                assert!(!msg.contains(secret), "{msg}");
            }
        }
        sent += lines;
        rejected += lines;
    }
    // An oversized record (a 70 KiB comment).
    let mut big: Value = serde_json::from_slice(
        std::fs::read(corpus.join("unknown_event_types.ndjson"))
            .unwrap()
            .split(|b| *b == b'\n')
            .next()
            .unwrap(),
    )
    .unwrap();
    big["event_type"] = Value::String("lab_result".into());
    big["payload"]["comment"] = Value::String("x".repeat(70 * 1024));
    let (status, answer) = post(&url, serde_json::to_vec(&big).unwrap()).await;
    assert!(status == 400 || status == 202, "{status}");
    assert_eq!(answer["errors"][0]["reason"], "too_large", "{answer}");
    sent += 1;
    rejected += 1;

    // 2. Broken Avro straight onto the raw topic (a misbehaving producer):
    // truncated, unknown fingerprint, unknown magic, empty, another
    // schema's record, an unregistered Confluent id.
    let store = SchemaStore::embedded();
    let raw = store.latest(RAW_EVENT).unwrap();
    let mut generator = Generator::new(SimConfig {
        seed: 5,
        patients: 300,
        prefectures: vec!["27".into()],
        hub: Some("27".into()),
        ..SimConfig::default()
    })
    .unwrap();
    let conv = JsonToAvro::new(raw.schema.clone()).unwrap();
    let mut valid = Vec::new();
    put_soe_header(&mut valid, raw.fingerprint);
    conv.convert(&generator.next_line().bytes, &mut valid)
        .unwrap();
    let pseudo = store.latest("chitose.pseudo.Vaccination").unwrap();
    let mut other = Vec::new();
    put_soe_header(&mut other, pseudo.fingerprint);
    other.extend_from_slice(&valid[10..]);
    let mut unknown_fp = valid.clone();
    unknown_fp[2..10].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]);
    let mut confluent = Vec::new();
    put_confluent_header(&mut confluent, 987_654);
    confluent.extend_from_slice(&valid[10..]);
    let broken: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", valid[..valid.len() / 2].to_vec()),
        ("unknown fingerprint", unknown_fp),
        (
            "unknown magic",
            b"{\"event_id\": \"json on an Avro topic\"}".to_vec(),
        ),
        ("empty", Vec::new()),
        ("another schema", other),
        ("unregistered Confluent id", confluent),
    ];
    let producer: FutureProducer = chitose_runtime::kafka::KafkaSettings::at(&p.kafka)
        .producer_config()
        .create()
        .unwrap();
    let raw_topic = format!("{}.raw.27", p.prefix);
    for (_, bytes) in &broken {
        producer
            .send(
                FutureRecord::<(), _>::to(&raw_topic).payload(bytes),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        sent += 1;
    }
    // An empty value carries nothing to dead-letter (a tombstone): it is
    // counted as dropped ("empty"); everything else goes to the DLQ.
    let dead = broken.len() as u64 - 1;
    let empty = 1u64;

    // 3. Good records after all that: the pipeline kept going.
    for _ in 0..5 {
        let mut body = Vec::new();
        for _ in 0..100 {
            body.extend_from_slice(&generator.next_line().bytes);
            body.push(b'\n');
        }
        let (status, answer) = post(&url, body).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["rejected"], 0, "{answer}");
        good += 100;
        sent += 100;
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    let m = loop {
        // Pipeline::scrape blocks: off the async runtime.
        let scraped = std::thread::scope(|s| s.spawn(|| p.scrape()).join().unwrap());
        if let [Some(i), Some(t), Some(k)] = &scraped[..]
            && helpers::metric_sum(k, chitose_sink::metrics::names::ROWS_TOTAL) as u64 >= good
            && helpers::metric_sum(t, chitose_transform::metrics::names::DLQ_TOTAL) as u64 >= dead
        {
            break [i.clone(), t.clone(), k.clone()];
        }
        if Instant::now() > deadline {
            let sums: Vec<String> = scraped
                .iter()
                .flatten()
                .flat_map(|t| {
                    t.lines()
                        .filter(|l| l.contains("_total") && !l.starts_with('#'))
                })
                .map(str::to_owned)
                .collect();
            panic!("not drained: {}\n{}", p.dir.display(), sums.join("\n"));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let [i, t, k] = &m;
    let ingest_rejected =
        helpers::metric_sum(i, chitose_ingest::metrics::names::EVENTS_REJECTED_TOTAL) as u64;
    let ingest_accepted =
        helpers::metric_sum(i, chitose_ingest::metrics::names::EVENTS_ACCEPTED_TOTAL) as u64;
    let transformed =
        helpers::metric_sum(t, chitose_transform::metrics::names::RECORDS_TOTAL) as u64;
    let dlq = helpers::metric_sum(t, chitose_transform::metrics::names::DLQ_TOTAL) as u64;
    let landed = helpers::metric_sum(k, chitose_sink::metrics::names::ROWS_TOTAL) as u64;
    let dropped = helpers::metric_sum(t, chitose_transform::metrics::names::DROPPED_TOTAL) as u64;
    assert_eq!(ingest_rejected, rejected);
    assert_eq!(ingest_accepted, good);
    assert_eq!(dlq, dead, "every broken Avro message dead-lettered");
    assert_eq!(transformed, good);
    assert_eq!(landed, good);
    assert_eq!(dropped, empty);
    assert_eq!(
        landed + ingest_rejected + dlq + dropped,
        sent,
        "the counts reconcile"
    );

    // Each dead letter names its stage, class and error; never the record.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args([
            "dlq",
            "list",
            "--bootstrap",
            &p.kafka,
            "--topic",
            &format!("{}.dlq", p.prefix),
        ])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{list}");
    assert!(
        list.contains(&format!("{dead} dead-lettered records")),
        "{list}"
    );
    assert!(
        list.contains(&format!("transform decode: {dead}")),
        "{list}"
    );
    for line in list.lines().filter(|l| l.contains("\ttransform\t")) {
        assert!(
            line.contains("expected"),
            "an error that says what was expected: {line}"
        );
        assert!(!line.contains("json on an Avro topic"), "{line}");
    }
    p.stop();
}
