//! `chitose sink` on nisshi: what lands is what analysts read with DuckDB
//! and pyarrow, exactly once through kill -9 and rebalances, on a local
//! folder and on S3 (moto).

use crate::helpers;
use chitose_sink::metrics::names;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

struct Setup {
    bootstrap: String,
    group: String,
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
    let roll = if extra.contains("roll_age") {
        ""
    } else {
        "roll_age = \"1500ms\"\n"
    };
    std::fs::write(
        &config,
        format!(
            r#"input_pattern = '^health\.pseudo\.s{id}\..+'
group_id = "sink-{id}"
lake = "{lake}"
{roll}batch_max = "100ms"
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
        group: format!("sink-{id}"),
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

/// Rows in the lake's Delta tables, from their logs (what readers count).
fn lake_rows(lake: &str) -> u64 {
    lake_rows_with(lake, &Default::default())
}

fn lake_rows_with(lake: &str, opts: &std::collections::BTreeMap<String, String>) -> u64 {
    let Ok(l) = chitose_lake::Lake::open(lake, opts) else {
        return 0;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(chitose_lake::verify::census(&l, "pseudonymized"))
        .map_or(0, |c| c.iter().map(|t| t.rows).sum())
}

/// Every commit of every table adds at most one file per lake partition
/// (the sink's rolls); returns (commits with adds, files added, most
/// files one commit added).
fn one_file_per_partition_per_commit(lake: &str) -> (u64, u64, u64) {
    let (mut commits, mut files, mut widest) = (0, 0, 0);
    for table in std::fs::read_dir(Path::new(lake).join("pseudonymized"))
        .unwrap()
        .flatten()
    {
        for c in std::fs::read_dir(table.path().join("_delta_log"))
            .unwrap()
            .flatten()
        {
            let name = c.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".json") || name.starts_with('_') {
                continue;
            }
            let text = std::fs::read_to_string(c.path()).unwrap();
            let mut seen = std::collections::HashSet::new();
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                if let Some(add) = v.get("add") {
                    let key = add["partitionValues"].to_string();
                    assert!(
                        seen.insert(key.clone()),
                        "{}: two files of {key} in one commit",
                        c.path().display()
                    );
                    files += 1;
                }
            }
            commits += u64::from(!seen.is_empty());
            widest = widest.max(seen.len() as u64);
        }
    }
    (commits, files, widest)
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
    let before_produce = Instant::now();
    let ids = helpers::produce_pseudo(&s.bootstrap, &s.prefix, 6_000, 61, 3);
    let produced = before_produce.elapsed();
    let n: usize = ids.values().map(Vec::len).sum();
    // Every record is at least this old when the sink starts: a floor for
    // the freshness it reports.
    std::thread::sleep(Duration::from_secs(2));
    let child = run(&s, "a", &s.ops);
    wait_until("all rows committed", 120, || lake_rows(&s.lake) == n as u64);
    let text = helpers::scrape(&s.ops).unwrap();
    let landed = before_produce.elapsed();
    assert_eq!(
        helpers::metric_sum(&text, names::ROWS_TOTAL),
        n as f64,
        "{text}"
    );
    // The intake counter: every record read once and kept (one sink, no
    // rebalance, no duplicates), so it meets rows_total at the last commit.
    assert_eq!(
        helpers::metric_sum(&text, names::RECORDS_READ_TOTAL),
        n as f64,
        "{text}"
    );
    // Freshness: one observation per row, each between the 2 s the
    // records waited for the sink and the test's whole span since they
    // were written (by this test's clock, not the sink's); 0.1 s for the
    // sink's 100 ms steps.
    let fresh =
        |suffix: &str| helpers::metric_sum(&text, &format!("{}{suffix}", names::FRESHNESS_SECONDS));
    assert_eq!(fresh("_count"), n as f64, "{text}");
    let mean = fresh("_sum") / n as f64;
    assert!(
        mean >= 2.0 - 0.1 && mean <= landed.as_secs_f64() + 0.1,
        "mean freshness {mean:.2} s outside 1.9..{:.2} s (producing took {produced:?})",
        landed.as_secs_f64() + 0.1
    );
    assert!(helpers::metric_sum(&text, names::FILES_TOTAL) >= 6.0);
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
            .starts_with("timestamp[us, tz=UTC"),
        "{enc}"
    );
    assert_eq!(lake["lab_result"]["arrow_types"]["value_numeric"], "double");
    assert_eq!(lake["diagnosis"]["arrow_types"]["is_primary"], "bool");
    // Partition values are strings, as the contract has them ('01' keeps
    // its zero), for Delta readers and for DuckDB over the file list.
    assert_eq!(enc["prefecture"], "string", "{enc}");
    assert!(
        lake["encounter"]["duckdb_columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "prefecture:VARCHAR"),
        "{}",
        lake["encounter"]
    );
    // Hive-style folders, a Delta log, nothing a reader cannot see.
    let f = walk(Path::new(&s.lake).join("pseudonymized/encounter").as_path());
    assert!(
        f.iter().all(|p| {
            let p = p.display().to_string();
            p.contains("/_delta_log/")
                || (p.contains("/prefecture=")
                    && p.contains("/event_month=")
                    && p.contains("/part-"))
        }),
        "{f:?}"
    );
    assert_eq!(lake["encounter"]["unreferenced_files"], 0);
    one_file_per_partition_per_commit(&s.lake);
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
    // With a client's retry of every 20th event (the same event id from
    // another raw record): each lands once, across every restart.
    // A killed instance's partitions move after 6 s, not 45 s.
    let s = setup(
        "sink-kill",
        None,
        "roll_rows = 700\n\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"",
    );
    let ids = helpers::produce_pseudo_with_retries(&s.bootstrap, &s.prefix, 30_000, 62, 3, 20);
    let n: usize = ids.values().map(Vec::len).sum();
    let mut child = run(&s, "a", "127.0.0.1:0");
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut kills = 0;
    while kills < 10 && lake_rows(&s.lake) < n as u64 {
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
    wait_until("all rows committed", 240, || lake_rows(&s.lake) >= n as u64);
    drop(child);
    assert_eq!(lake_rows(&s.lake), n as u64, "rows after {kills} kills");
    check_lake(&helpers::read_lake(&s.lake, None), &ids);
}

#[test]
fn two_instances_with_a_rebalance_in_the_middle_still_land_exactly_once() {
    let s = setup("sink-rebalance", None, "roll_rows = 1000");
    let ids = helpers::produce_pseudo(&s.bootstrap, &s.prefix, 24_000, 63, 4);
    let n: usize = ids.values().map(Vec::len).sum();
    let a = run(&s, "a", "127.0.0.1:0");
    wait_until("some rows", 60, || lake_rows(&s.lake) > 0);
    let b = run(&s, "b", "127.0.0.1:0");
    std::thread::sleep(Duration::from_secs(3));
    // A leaves: B takes every partition over from the tables' versions.
    drop(a);
    wait_until("all rows committed", 240, || lake_rows(&s.lake) >= n as u64);
    drop(b);
    assert_eq!(lake_rows(&s.lake), n as u64);
    check_lake(&helpers::read_lake(&s.lake, None), &ids);
}

fn s3_options(endpoint: &str) -> String {
    format!(
        "[lake_options]\naws_endpoint = \"{endpoint}\"\naws_allow_http = \"true\"\naws_region = \"us-east-1\"\n"
    )
}

#[test]
fn on_s3_the_lake_lands_once_and_a_create_only_commit_fences_a_second_writer() {
    let endpoint = helpers::moto();
    let bucket = helpers::create_bucket(&endpoint);
    let url = format!("s3://{bucket}/lake");
    // Two writers commit on the same snapshot through object_store's S3
    // client: the Delta log's create-only put (If-None-Match) lets one in;
    // the other re-reads, finds its txn moved and lands nothing.
    let opts = std::collections::BTreeMap::from([
        ("aws_endpoint".to_owned(), endpoint.clone()),
        ("aws_allow_http".to_owned(), "true".to_owned()),
        ("aws_region".to_owned(), "us-east-1".to_owned()),
        ("aws_access_key_id".to_owned(), "test".to_owned()),
        ("aws_secret_access_key".to_owned(), "test".to_owned()),
    ]);
    let lake = chitose_lake::Lake::open(&format!("s3://{bucket}/fence"), &opts).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use chitose_lake::delta::{Operation, Outcome, Txn};
        let schema = std::sync::Arc::new(arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("event_id", arrow_schema::DataType::Utf8, true),
            arrow_schema::Field::new("prefecture", arrow_schema::DataType::Utf8, true),
        ]));
        let t = lake.table("pseudonymized/t");
        let snap = t
            .create_or_evolve(&schema, &["prefecture".to_owned()])
            .await
            .unwrap();
        let rows = |id: &str| {
            arrow_array::RecordBatch::try_new(
                std::sync::Arc::new(arrow_schema::Schema::new(vec![schema.field(0).clone()])),
                vec![std::sync::Arc::new(arrow_array::StringArray::from(vec![
                    id,
                ]))],
            )
            .unwrap()
        };
        let part = [("prefecture".to_owned(), Some("27".to_owned()))];
        let props = || chitose_lake::parquet::properties(1024, "test");
        let a = t
            .write(&snap, &part, rows("a"), props(), 5 << 20)
            .await
            .unwrap();
        let z = t
            .write(&snap, &part, rows("a"), props(), 5 << 20)
            .await
            .unwrap();
        let txn = |version| Txn {
            app_id: "p0".into(),
            expected: None,
            version,
        };
        let first = t
            .commit(&snap, &[a], &[], &[txn(10)], true, Operation::Write)
            .await
            .unwrap();
        assert!(
            matches!(first, Outcome::Committed(ref s) if s.version() == 1),
            "{first:?}"
        );
        let second = t
            .commit(&snap, &[z], &[], &[txn(10)], true, Operation::Write)
            .await
            .unwrap();
        assert!(
            matches!(second, Outcome::Lost { ref now, .. } if now == &[Some(10)]),
            "{second:?}"
        );
        let latest = t.load().await.unwrap().unwrap();
        assert_eq!(latest.version(), 1);
        assert_eq!(t.files(&latest).await.unwrap().len(), 1);
    });

    let s = setup("sink-s3", Some(url.clone()), &s3_options(&endpoint));
    let ids = helpers::produce_pseudo(&s.bootstrap, &s.prefix, 4_000, 64, 2);
    let n: usize = ids.values().map(Vec::len).sum();
    let child = run(&s, "a", &s.ops);
    wait_until("all rows committed", 120, || {
        helpers::scrape(&s.ops)
            .is_some_and(|t| helpers::metric_sum(&t, names::ROWS_TOTAL) >= n as f64)
    });
    drop(child);
    check_lake(&helpers::read_lake(&url, Some(&endpoint)), &ids);
}

/// `encounter.v12.avsc`: the shipped (latest) encounter plus a nullable
/// column; `v13` changes a type.
fn evolved_schemas(dir: &Path) -> (u64, u64) {
    // The shipped latest, whichever version that is.
    let shipped = chitose_schemas::catalog::SchemaStore::embedded();
    let v1: serde_json::Value =
        serde_json::from_str(&shipped.latest("chitose.pseudo.Encounter").unwrap().text).unwrap();
    let mut v2 = v1.clone();
    v2["chitose.version"] = 12.into();
    v2["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "name": "visit_channel", "type": ["null", "string"], "default": null,
            "doc": "SA: in person or online (added in v2)."
        }));
    let mut v3 = v2.clone();
    v3["chitose.version"] = 13.into();
    for f in v3["fields"].as_array_mut().unwrap() {
        if f["name"] == "age_at_event" {
            f["type"] = "string".into();
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    let mut store = chitose_schemas::catalog::SchemaStore::default();
    let mut fps = Vec::new();
    for (v, s) in [(12, &v2), (13, &v3)] {
        let text = serde_json::to_string_pretty(s).unwrap();
        std::fs::write(dir.join(format!("encounter.v{v}.avsc")), &text).unwrap();
        fps.push(
            store
                .add(&format!("encounter.v{v}.avsc"), &text)
                .unwrap()
                .fingerprint,
        );
    }
    (fps[0], fps[1])
}

/// Re-encodes a v1 encounter record with a later schema.
fn reencode(v1_msg: &[u8], fingerprint: u64, version: u32, dir: &Path) -> Vec<u8> {
    use apache_avro::types::Value;
    let store = chitose_schemas::catalog::SchemaStore::embedded();
    let v1 = store.latest("chitose.pseudo.Encounter").unwrap();
    let text = std::fs::read_to_string(dir.join(format!("encounter.v{version}.avsc"))).unwrap();
    let schema = apache_avro::Schema::parse_str(&text).unwrap();
    let mut body = &v1_msg[10..];
    let Value::Record(mut fields) =
        apache_avro::from_avro_datum(&v1.schema, &mut body, None).unwrap()
    else {
        panic!()
    };
    fields.push((
        "visit_channel".into(),
        Value::Union(1, Box::new(Value::String("online".into()))),
    ));
    // Another event from another raw record: not a replay of the v1 one.
    for (n, v) in fields.iter_mut() {
        match (n.as_str(), v) {
            ("event_id", Value::String(id)) => id.push_str(&format!("-v{version}")),
            ("source_offset", Value::Long(o)) => *o += 1_000_000,
            _ => {}
        }
    }
    if version == 13 {
        for (n, v) in fields.iter_mut() {
            if n == "age_at_event" {
                *v = Value::String("40".into());
            }
        }
    }
    let mut out = vec![0xC3, 0x01];
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend(apache_avro::to_avro_datum(&schema, Value::Record(fields)).unwrap());
    out
}

#[test]
fn a_compatible_version_adds_columns_and_an_incompatible_one_pauses_its_partition() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let dir = helpers::scratch("schemas");
    let (fp2, fp3) = evolved_schemas(&dir);
    let s = setup(
        "sink-evolve",
        None,
        &format!("schemas_dir = \"{}\"\nroll_age = \"500ms\"", dir.display()),
    );
    // v1 records of every table, then v2 and v3 encounters on partition 0.
    let ids = helpers::produce_pseudo(&s.bootstrap, &s.prefix, 2_000, 65, 1);
    let enc_topic = format!("{}encounter", s.prefix);
    let v1_msgs: Vec<Vec<u8>> = helpers::read_topic_bytes(&s.bootstrap, &enc_topic)
        .into_iter()
        .map(|r| r.value)
        .collect();
    let p: FutureProducer = chitose_runtime::kafka::KafkaSettings::at(&s.bootstrap)
        .producer_config()
        .create()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let send_to = |topic: &str, bytes: Vec<u8>| {
        rt.block_on(p.send(
            FutureRecord::<(), _>::to(topic).payload(&bytes),
            Duration::from_secs(10),
        ))
        .unwrap();
    };
    let send = |bytes: Vec<u8>| send_to(&enc_topic, bytes);
    for m in &v1_msgs[..50] {
        send(reencode(m, fp2, 12, &dir));
    }
    let v3_offset = (v1_msgs.len() + 50) as i64;
    for m in &v1_msgs[..5] {
        send(reencode(m, fp3, 13, &dir));
    }
    // A diagnosis whose body is cut short (header and fingerprint intact,
    // so it is admitted as read), then good ones: the sink decodes
    // buffered records in bulk at a roll, finds it there, lands the rows
    // before it and stops the partition at it.
    let diag_topic = format!("{}diagnosis", s.prefix);
    let diag: Vec<Vec<u8>> = helpers::read_topic_bytes(&s.bootstrap, &diag_topic)
        .into_iter()
        .map(|r| r.value)
        .collect();
    let bad_offset = diag.len() as i64;
    send_to(&diag_topic, diag[0][..14].to_vec());
    for m in &diag[..3] {
        send_to(&diag_topic, m.clone());
    }
    let child = run(&s, "a", &s.ops);
    let n: usize = ids.values().map(Vec::len).sum();
    let paused = |t: &str, table: &str, reason: &str| {
        t.lines().any(|l| {
            l.starts_with("chitose_sink_paused_partitions{")
                && l.contains(&format!("reason=\"{reason}\""))
                && l.contains(&format!("table=\"{table}\""))
                && l.ends_with(" 1")
        })
    };
    wait_until("v1 and v2 rows committed, partitions paused", 120, || {
        helpers::scrape(&s.ops).is_some_and(|t| {
            helpers::metric_sum(&t, names::ROWS_TOTAL) >= (n + 50) as f64
                && paused(&t, "encounter", "incompatible_schema")
                && paused(&t, "diagnosis", "undecodable")
        })
    });
    drop(child);
    // The table's version of partition 0 stops at the first v3 record:
    // nothing after it was skipped, everything before it landed.
    let group = &s.group;
    let lake_handle = chitose_lake::Lake::open(&s.lake, &Default::default()).unwrap();
    let version = |table: &str, topic: &str| {
        rt.block_on(async {
            let t = lake_handle.table(&format!("pseudonymized/{table}"));
            let snap = t.load().await.unwrap().unwrap();
            t.app_versions(&snap, &[chitose_lake::layout::app_id(group, topic, 0)])
                .await
                .unwrap()[0]
        })
    };
    assert_eq!(version("encounter", &enc_topic), Some(v3_offset));
    assert_eq!(version("diagnosis", &diag_topic), Some(bad_offset));
    let lake = helpers::read_lake(&s.lake, None);
    let enc = &lake["encounter"];
    assert_eq!(
        enc["duckdb_rows"].as_u64().unwrap(),
        (ids["encounter"].len() + 50) as u64,
        "{enc}"
    );
    assert!(
        enc["duckdb_columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "visit_channel:VARCHAR"),
        "{enc}"
    );
    // Every diagnosis before the bad one, none after it (not yet read).
    assert_eq!(
        lake["diagnosis"]["duckdb_rows"].as_u64().unwrap(),
        ids["diagnosis"].len() as u64
    );
    // The other tables were not held up.
    assert_eq!(
        lake["lab_result"]["duckdb_rows"].as_u64().unwrap(),
        ids["lab_result"].len() as u64
    );
}

#[test]
fn two_hundred_active_partitions_make_one_file_each_per_roll_in_bounded_memory() {
    // age_band as an extra partition column: 8 prefectures x 3 months x ~18
    // bands per table, far over 200 lake partitions active at once. Each
    // roll writes one file per lake partition and one commit per table.
    let s = setup(
        "sink-memory",
        None,
        "partition_columns = [\"age_band\"]\nroll_age = \"5s\"",
    );
    let ids = helpers::produce_pseudo(&s.bootstrap, &s.prefix, 40_000, 66, 2);
    let n: usize = ids.values().map(Vec::len).sum();
    let mut child = run(&s, "a", &s.ops);
    let pid = child.0.id().to_string();
    wait_until("every row committed", 240, || {
        lake_rows(&s.lake) >= n as u64
    });
    let rss = chitose_runtime::procstat::peak_rss_bytes(&pid).unwrap();
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let lake = helpers::read_lake(&s.lake, None);
    let files: u64 = lake
        .as_object()
        .unwrap()
        .values()
        .map(|t| t["files"].as_u64().unwrap())
        .sum();
    // The widest commit wrote every lake partition it held at once.
    let (commits, added, peak_partitions) = one_file_per_partition_per_commit(&s.lake);
    eprintln!(
        "{files} files from {commits} commits, at most {peak_partitions} lake partitions in one roll, peak RSS {} MiB",
        rss >> 20
    );
    assert_eq!(
        files, added,
        "no file was removed: every add is still there"
    );
    assert!(
        peak_partitions >= 200,
        "at most {peak_partitions} lake partitions were held and written at once"
    );
    assert!(rss < 256 << 20, "peak RSS {} MiB", rss >> 20);
    assert_eq!(lake_rows(&s.lake), n as u64);
    check_lake(&lake, &ids);
}

/// A zombie: the sink is stopped (SIGSTOP) with rows buffered, its
/// partitions move to another instance, which lands them; then it wakes
/// (SIGCONT) and tries to commit what it read. Readers never see a row twice
/// nor a file that no commit names.
#[test]
fn a_zombie_sink_that_wakes_after_its_partitions_moved_lands_nothing_twice() {
    let s = setup(
        "sink-zombie",
        None,
        "roll_age = \"2500ms\"\n\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"",
    );
    let ids = helpers::produce_pseudo(&s.bootstrap, &s.prefix, 30_000, 67, 3);
    let n: usize = ids.values().map(Vec::len).sum();
    let a = run(&s, "a", &s.ops);
    wait_until("some rows", 60, || lake_rows(&s.lake) > 0);
    let pid = a.0.id().to_string();
    let signal = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    let b = run(&s, "b", "127.0.0.1:0");
    wait_until("B lands everything", 240, || lake_rows(&s.lake) >= n as u64);
    signal("-CONT");
    // A wakes with stale buffers: give it two rolls to try.
    std::thread::sleep(Duration::from_secs(8));
    let text = helpers::scrape(&s.ops).unwrap_or_default();
    let (lost, replays) = (
        helpers::metric(&text, names::COMMITS_TOTAL, "outcome=\"lost\""),
        helpers::metric(&text, names::SKIPPED_ROWS_TOTAL, "reason=\"replay\""),
    );
    eprintln!("zombie: {lost} commits lost, {replays} rows dropped as replays");
    // It did try: its commits found the versions moved and were dropped.
    assert!(lost >= 1.0 && replays >= 1.0, "{text}");
    drop(a);
    drop(b);
    assert_eq!(lake_rows(&s.lake), n as u64);
    let lake = helpers::read_lake(&s.lake, None);
    check_lake(&lake, &ids);
}
