//! `chitose transform` on nisshi: kill -9 mid-batch and restart loses
//! nothing, bad records reach the DLQ with their reason, `chitose dlq`
//! lists and replays them, and the metrics reconcile.

use crate::helpers;
use chitose_transform::metrics::names;

use apache_avro::types::Value;
use chitose_ingest::simulate::{Generator, SimConfig};
use chitose_runtime::kafka::KafkaSettings;
use chitose_schemas::RawCodec;
use chitose_schemas::catalog::SchemaStore;
use chitose_schemas::codec::Timestamp;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Every output table (allergy and correction included, contract v3).
fn types() -> impl Iterator<Item = &'static str> {
    chitose_schemas::raw::EventType::ALL
        .iter()
        .map(|t| t.symbol())
}

struct Setup {
    bootstrap: String,
    raw: String,
    prefix: String,
    dlq: String,
    config: PathBuf,
}

fn setup(name: &str, exactly_once: bool) -> Setup {
    let bootstrap = helpers::nisshi();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = helpers::scratch(name);
    let keys = dir.join("keys");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args(["transform", "keygen", "--dir", keys.to_str().unwrap()])
        .output()
        .unwrap();
    helpers::assert_ok(&out);
    let key_text = std::fs::read_to_string(keys.join("pseudonym-2026a.key")).unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(key_text.trim()),
        "keygen printed the key"
    );
    let s = Setup {
        bootstrap: bootstrap.clone(),
        raw: format!("t{id}.raw.27"),
        prefix: format!("health.pseudo.t{id}."),
        dlq: format!("health.dlq.t{id}"),
        config: dir.join("transform.toml"),
    };
    std::fs::write(
        &s.config,
        format!(
            r#"input_pattern = '^t{id}\.raw\.27$'
output_prefix = "{}"
dlq_topic = "{}"
group_id = "transform-{id}"
exactly_once = {exactly_once}
batch_max_records = 500
batch_max = "100ms"
ops_listen = "127.0.0.1:0"

[keys]
dir = "{}"

[kafka]
bootstrap_servers = "{bootstrap}"

# A killed instance's partitions move after 6 s, not librdkafka's 45 s
# (what is tested is the same; the kill tests wait less).
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"#,
            s.prefix,
            s.dlq,
            keys.display()
        ),
    )
    .unwrap();
    s
}

/// My Number written into records that bypass ingest (digits of π).
const BYPASS_MY_NUMBER: &str = "3141.5926.5352";

/// Produces `n` raw events (every 50th a garbage record, every 97th from
/// the future, every 61st valid Avro that breaks the contract as a producer
/// bypassing ingest would write it: a My Number in a drug name, NaN, an
/// over-long ICD-10 suffix, a control character) and returns how many are
/// good.
fn produce(s: &Setup, n: usize) -> usize {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let settings = KafkaSettings::at(&s.bootstrap);
    rt.block_on(settings.ensure_topics(&[(&s.raw, 4)])).unwrap();
    let p: FutureProducer = settings.producer_config().create().unwrap();
    let codec = RawCodec::new(SchemaStore::embedded());
    let mut g = Generator::new(SimConfig {
        seed: 404,
        patients: 2_000,
        ..SimConfig::default()
    })
    .unwrap();
    let mut good = 0;
    rt.block_on(async {
        let mut fs = Vec::new();
        for i in 0..n {
            let mut ev = g.next_event();
            let mut bytes = Vec::new();
            if i % 50 == 7 {
                bytes = b"\xC3\x01not an avro record".to_vec();
            } else {
                use chitose_schemas::raw::Payload;
                if i % 97 == 5 {
                    ev.occurred_at = Timestamp(Timestamp::now().0 + 86_400_000);
                } else if i % 61 == 13 {
                    match &mut ev.payload {
                        Payload::Prescription(p) => {
                            p.drug_name = Some(format!("錠 {BYPASS_MY_NUMBER}"));
                        }
                        Payload::LabResult(l) => l.value_numeric = Some(f64::NAN),
                        Payload::Diagnosis(d) => d.icd10_code = Some("E11.9ABCDE".into()),
                        _ => ev.patient.name_kana = Some("ヤマダ\u{1f}タロウ".into()),
                    }
                } else {
                    good += 1;
                }
                codec.encode_soe(&ev, &mut bytes);
            }
            let key = ev.patient.local_patient_id.clone();
            fs.push(
                p.send_result(FutureRecord::to(&s.raw).key(&key).payload(&bytes))
                    .unwrap(),
            );
        }
        for f in fs {
            f.await.unwrap().unwrap();
        }
    });
    good
}

fn run(s: &Setup) -> helpers::Child {
    helpers::chitose(
        &["transform", "--config", s.config.to_str().unwrap()],
        &[("RUST_LOG", "info,rdkafka=warn")],
    )
}

/// An output record's fields, transformed_at left out.
type Fields = Vec<(String, Value)>;

/// Output records: (event type, source partition, source offset, fields).
fn outputs(s: &Setup) -> Vec<(String, i32, i64, Fields)> {
    let store = SchemaStore::embedded();
    let mut out = Vec::new();
    for t in types() {
        for r in helpers::read_topic_bytes(&s.bootstrap, &format!("{}{t}", s.prefix)) {
            // The writer's schema, by the fingerprint in the SOE header.
            let fp = u64::from_le_bytes(r.value[2..10].try_into().unwrap());
            let entry = store.by_fingerprint(fp).expect("a shipped pseudo schema");
            assert!(
                entry
                    .text
                    .contains(&format!("\"chitose.event_type\": \"{t}\""))
            );
            let mut body = &r.value[10..];
            let Value::Record(fields) =
                apache_avro::from_avro_datum(&entry.schema, &mut body, None).unwrap()
            else {
                panic!()
            };
            let get = |k: &str| fields.iter().find(|(n, _)| n == k).unwrap().1.clone();
            let (Value::Int(p), Value::Long(o)) = (get("source_partition"), get("source_offset"))
            else {
                panic!()
            };
            assert_eq!(get("source_topic"), Value::String(s.raw.clone()));
            let stable: Vec<(String, Value)> = fields
                .into_iter()
                .filter(|(n, _)| n != "transformed_at")
                .collect();
            out.push((t.to_owned(), p, o, stable));
        }
    }
    out
}

fn committed(s: &Setup) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let group = std::fs::read_to_string(&s.config)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("group_id = \"")
                .map(|g| g.trim_end_matches('"').to_owned())
        })
        .unwrap();
    let c: BaseConsumer = KafkaSettings::at(&s.bootstrap)
        .consumer_config(&group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition(&s.raw, p);
    }
    c.committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .filter_map(|e| e.offset().to_raw())
        .filter(|o| *o >= 0)
        .sum()
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn kill_9_run(exactly_once: bool) {
    let s = setup(
        if exactly_once {
            "transform-eos"
        } else {
            "transform-alo"
        },
        exactly_once,
    );
    let n = 12_000;
    let good = produce(&s, n);
    let mut child = run(&s);
    let mut kills = 0;
    let mut last = 0;
    // kill -9 whenever progress was made, three times, at moments that
    // fall inside batches (500 records each, 100 ms).
    while kills < 3 {
        std::thread::sleep(Duration::from_millis(700 + 300 * kills));
        let c = committed(&s);
        if c > last && c < n as i64 {
            child.0.kill().unwrap(); // SIGKILL
            child.0.wait().unwrap();
            kills += 1;
            last = c;
            child = run(&s);
        }
        assert!(
            c < n as i64 || kills > 0,
            "finished before any kill: make the input longer"
        );
        if c >= n as i64 {
            break;
        }
    }
    wait_until("every raw record committed", 180, || {
        committed(&s) >= n as i64
    });
    let log = child.log();
    drop(child);

    let outs = outputs(&s);
    let dlq = helpers::read_topic_bytes(&s.bootstrap, &s.dlq);
    let mut by_coords: HashMap<(i32, i64), Vec<&Fields>> = HashMap::new();
    for (_, p, o, rec) in &outs {
        by_coords.entry((*p, *o)).or_default().push(rec);
    }
    // Nothing lost: every good record has an output.
    assert_eq!(
        by_coords.len(),
        good,
        "distinct outputs vs good inputs ({kills} kills)"
    );
    // Duplicates carry identical source coordinates and identical content.
    let dups: usize = by_coords.values().map(|v| v.len() - 1).sum();
    for v in by_coords.values() {
        assert!(
            v.iter().all(|r| *r == v[0]),
            "a replayed record differs from the first"
        );
    }
    let dlq_coords: HashSet<(String, String)> = dlq
        .iter()
        .map(|r| {
            assert_eq!(r.headers["chitose.dlq.stage"], "transform");
            assert!(
                [
                    "decode",
                    "validation",
                    "my_number",
                    "not_finite",
                    "invalid_code",
                    "control_character"
                ]
                .contains(&r.headers["chitose.dlq.error_class"].as_str()),
                "{:?}",
                r.headers
            );
            (
                r.headers["chitose.dlq.source_partition"].clone(),
                r.headers["chitose.dlq.source_offset"].clone(),
            )
        })
        .collect();
    assert_eq!(dlq_coords.len(), n - good, "every bad record dead-lettered");
    // Each kind of contract breach was among them, and none reached a
    // pseudonymized topic.
    let classes: HashSet<&str> = dlq
        .iter()
        .map(|r| r.headers["chitose.dlq.error_class"].as_str())
        .collect();
    for c in [
        "my_number",
        "not_finite",
        "invalid_code",
        "control_character",
    ] {
        assert!(classes.contains(c), "{c} not seen: {classes:?}");
    }
    for t in types() {
        for r in helpers::read_topic_bytes(&s.bootstrap, &format!("{}{t}", s.prefix)) {
            let text = String::from_utf8_lossy(&r.value);
            assert!(!text.contains(BYPASS_MY_NUMBER) && !text.contains("E11.9ABCDE"));
            assert!(!text.contains("ヤマダ\u{1f}タロウ"));
        }
    }
    eprintln!(
        "{} mode: {kills} kills, {} outputs for {good} good records ({dups} replays), {} DLQ records for {} bad",
        if exactly_once {
            "exactly-once"
        } else {
            "at-least-once"
        },
        outs.len(),
        dlq.len(),
        n - good
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn exactly_once_mode_through_kill_9_loses_nothing() {
    kill_9_run(true);
}

#[test]
fn at_least_once_mode_through_kill_9_loses_nothing_and_replays_keep_coordinates() {
    kill_9_run(false);
}

fn chitose_out(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dead_letters_are_listed_and_replayed_and_metrics_reconcile() {
    let s = setup("transform-dlq", true);
    let n = 1_000;
    let good = produce(&s, n);
    let port = helpers::free_port();
    let ops = format!("127.0.0.1:{port}");
    let child = helpers::chitose(
        &[
            "transform",
            "--config",
            s.config.to_str().unwrap(),
            "--ops-listen",
            &ops,
        ],
        &[],
    );
    wait_until("all committed", 120, || committed(&s) >= n as i64);
    let scrape = || helpers::scrape(&ops).expect("the transform serves /metrics");
    // Lag comes from librdkafka's statistics, every 5 s: it drains to 0.
    wait_until("lag gauges at 0", 30, || {
        let text = scrape();
        // A real partition's series, not the zero shown before any is assigned.
        text.lines().any(|l| {
            l.starts_with(&format!("{}{{", names::CONSUMER_LAG_RECORDS))
                && !l.contains("partition=\"-1\"")
        }) && helpers::metric(&text, names::CONSUMER_LAG_RECORDS, "partition") == 0.0
    });
    let text = scrape();
    assert_eq!(
        helpers::metric(&text, names::RECORDS_TOTAL, "event_type"),
        good as f64,
        "{text}"
    );
    let bad = (n - good) as f64;
    // Every class the transform writes adds up to the bad records (decode,
    // validation, and the contract's classes for the bypassing producer).
    assert_eq!(
        chitose_transform::core::DLQ_CLASSES
            .iter()
            .map(|c| helpers::metric(&text, names::DLQ_TOTAL, &format!("reason=\"{c}\"")))
            .sum::<f64>(),
        bad
    );
    assert!(helpers::metric(&text, names::DLQ_TOTAL, "reason=\"my_number\"") > 0.0);

    let (ok, list, err) = chitose_out(&[
        "dlq",
        "list",
        "--bootstrap",
        &s.bootstrap,
        "--topic",
        &s.dlq,
    ]);
    assert!(ok, "{err}");
    assert!(
        list.contains(&format!("{} dead-lettered records", n - good)),
        "{list}"
    );
    assert!(list.contains("transform decode: 20"), "{list}");
    assert!(
        list.contains(
            "validation: occurred_at: expected a time not in the future, found a future time"
        ),
        "{list}"
    );

    // Replay the decode failures: they go back to the raw topic with a
    // replayed_from header, fail again (nothing was fixed) and return to the
    // DLQ; a second replay finds nothing new to replay.
    let replay = |extra: &[&str]| {
        let mut args = vec![
            "dlq",
            "replay",
            "--bootstrap",
            &s.bootstrap,
            "--topic",
            &s.dlq,
            "--class",
            "decode",
        ];
        args.extend_from_slice(extra);
        chitose_out(&args)
    };
    // A replay goes only to raw topics of the expected prefix: with the
    // default `health.raw.` these records (from `t….raw.27`) are refused.
    let (ok, out, _) = replay(&["--dry-run"]);
    assert!(!ok && out.contains("refused 20"), "{out}");
    let raw_prefix = s.raw.trim_end_matches("27");
    let (ok, out, err) = replay(&["--raw-prefix", raw_prefix]);
    assert!(ok, "{err}");
    assert!(out.contains("replayed 20 records"), "{out}");
    let replayed: Vec<_> = helpers::read_topic_bytes(&s.bootstrap, &s.raw)
        .into_iter()
        .filter(|r| r.headers.contains_key("chitose.dlq.replayed_from"))
        .collect();
    assert_eq!(replayed.len(), 20);
    assert!(
        replayed
            .iter()
            .all(|r| r.value == b"\xC3\x01not an avro record")
    );
    wait_until("replays dead-lettered again", 60, || {
        helpers::read_topic_bytes(&s.bootstrap, &s.dlq).len() == n - good + 20
    });
    let (ok, out, _) = replay(&["--raw-prefix", raw_prefix]);
    assert!(ok);
    // Only the 20 that came back after the first replay's cursor.
    assert!(out.contains("replayed 20 records"), "{out}");
    drop(child);
}

#[test]
fn a_missing_key_stops_the_start_with_a_clear_error() {
    let s = setup("transform-nokey", true);
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace("[keys]\n", "[keys]\ncurrent = \"absent\"\n"),
    )
    .unwrap();
    let (ok, _, err) = chitose_out(&["transform", "--config", s.config.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("keys.current: expected key \"absent\""),
        "{err}"
    );
}
