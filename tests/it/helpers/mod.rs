//! Shared helpers for the integration tests: where the real services are,
//! and the spine round trip used against MockCluster and nisshi alike.
#![allow(dead_code)]

use chitose_ingest::simulate::{Generator, SimConfig};
use chitose_runtime::kafka::KafkaSettings;
use chitose_schemas::RawCodec;
use chitose_schemas::catalog::SchemaStore;
use chitose_schemas::raw::RawEvent;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A service the test needs, from the environment `tests/run` sets up.
pub fn service(var: &str, how: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run ./tests/run, or start the service with {how} and export {var}"
        )
    })
}

/// nisshi's bootstrap address.
pub fn nisshi() -> String {
    service("CHITOSE_TEST_KAFKA", "tests/infra/nisshi.sh start")
}

/// The Python with fastavro, pyarrow, DuckDB and jsonschema.
pub fn promtool() -> String {
    service("CHITOSE_TEST_PROMTOOL", "tests/infra/promtool.sh install")
}

/// A tool installed beside the test Python (kubectl, kubernetes-validate,
/// check-jsonschema: tests/python/requirements.txt).
pub fn venv_tool(name: &str) -> PathBuf {
    Path::new(&python()).with_file_name(name)
}

pub fn python() -> String {
    service("CHITOSE_TEST_PYTHON", "tests/infra/python.sh install")
}

/// moto's S3 endpoint, `http://127.0.0.1:PORT`.
pub fn moto() -> String {
    service("CHITOSE_TEST_S3", "tests/infra/moto.sh start")
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh scratch directory under target/.
pub fn scratch(name: &str) -> PathBuf {
    let d = repo()
        .join("target/chitose-test/scratch")
        .join(format!("{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What a round trip saw.
pub struct RoundTrip {
    pub sent: Vec<RawEvent>,
    pub received: Vec<(i32, i64, RawEvent)>,
}

/// A fresh topic name.
pub fn test_topic() -> String {
    format!("health.raw.27.test-{}", uuid::Uuid::new_v4())
}

/// Produces `n` SOE-encoded synthetic events to `topic` (which exists) with
/// an idempotent acks=all producer keyed by hub-local patient id, then
/// consumes it from the start with read_committed and decodes every record.
pub async fn spine_round_trip(bootstrap: &str, topic: &str, n: usize) -> RoundTrip {
    let settings = KafkaSettings::at(bootstrap);
    let topic = topic.to_owned();

    let producer: FutureProducer = settings.producer_config().create().expect("producer");
    let codec = RawCodec::new(SchemaStore::embedded());
    let mut g = Generator::new(SimConfig {
        seed: 99,
        patients: 500,
        prefectures: vec!["27".into()],
        ..SimConfig::default()
    })
    .unwrap();
    let sent: Vec<RawEvent> = (0..n).map(|_| g.next_event()).collect();
    // Enqueue in order (the producer keeps per-partition order), then wait
    // for every acknowledgement.
    let mut acks = Vec::with_capacity(n);
    for ev in &sent {
        let mut msg = Vec::new();
        codec.encode_soe(ev, &mut msg);
        let key = ev.patient.local_patient_id.as_str();
        loop {
            match producer.send_result(FutureRecord::to(&topic).key(key).payload(&msg)) {
                Ok(f) => {
                    acks.push(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => panic!("enqueue failed: {e}"),
            }
        }
    }
    for a in acks {
        a.await
            .expect("delivery reported")
            .map_err(|(e, _)| e)
            .expect("broker acknowledged");
    }

    let consumer: StreamConsumer = settings
        .consumer_config(&format!("test-{}", uuid::Uuid::new_v4()))
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).unwrap();
    let mut received = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < n && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
            Ok(Ok(m)) => {
                let ev = codec
                    .decode(m.payload().expect("payload"))
                    .expect("decodes");
                assert_eq!(
                    m.key(),
                    Some(ev.patient.local_patient_id.as_bytes()),
                    "key is the hub-local id"
                );
                received.push((m.partition(), m.offset(), ev));
            }
            Ok(Err(e)) => panic!("consume failed: {e}"),
            Err(_) => {}
        }
    }
    RoundTrip { sent, received }
}

/// Asserts a round trip lost, duplicated, changed and reordered nothing.
pub fn assert_exactly_once(rt: &RoundTrip) {
    assert_eq!(rt.received.len(), rt.sent.len(), "every event arrived once");
    let sent: HashMap<&str, &RawEvent> = rt.sent.iter().map(|e| (e.event_id.as_str(), e)).collect();
    let mut seen = HashSet::new();
    for (_, _, ev) in &rt.received {
        assert!(
            seen.insert(ev.event_id.as_str()),
            "duplicate {}",
            ev.event_id
        );
        assert_eq!(
            sent.get(ev.event_id.as_str()).copied(),
            Some(ev),
            "decoded event equals the sent one"
        );
    }
    // One patient's events stay in one partition, in the order sent.
    let order: HashMap<&str, usize> = rt
        .sent
        .iter()
        .enumerate()
        .map(|(i, e)| (e.event_id.as_str(), i))
        .collect();
    let mut by_key: HashMap<&str, (i32, usize)> = HashMap::new();
    let mut rx = rt.received.iter().collect::<Vec<_>>();
    rx.sort_by_key(|(p, o, _)| (*p, *o));
    for (p, _, ev) in rx {
        let i = order[ev.event_id.as_str()];
        if let Some((pp, last)) = by_key.insert(&ev.patient.local_patient_id, (*p, i)) {
            assert_eq!(pp, *p, "one key, one partition");
            assert!(last < i, "per-key order kept");
        }
    }
}

/// One record read back from a topic.
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub headers: HashMap<String, String>,
    pub event: RawEvent,
}

/// One record as bytes.
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: HashMap<String, String>,
}

/// Reads a whole topic (every partition, start to current end) and decodes it.
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<Record> {
    let codec = RawCodec::new(SchemaStore::embedded());
    read_topic_bytes(bootstrap, topic)
        .into_iter()
        .map(|r| Record {
            partition: r.partition,
            offset: r.offset,
            event: codec
                .decode(&r.value)
                .expect("every record in a raw topic decodes"),
            headers: r.headers,
        })
        .collect()
}

/// Reads a whole topic (every partition, start to current end), read_committed.
pub fn read_topic_bytes(bootstrap: &str, topic: &str) -> Vec<RawRecord> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::message::Headers;
    use rdkafka::{Offset, TopicPartitionList};
    let settings = KafkaSettings::at(bootstrap);
    let c: BaseConsumer = settings
        .consumer_config(&format!("read-{}", uuid::Uuid::new_v4()))
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        let (lo, hi) = c
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .unwrap();
        if hi > lo {
            ends.insert(*p, hi);
            tpl.add_partition_offset(topic, *p, Offset::Offset(lo))
                .unwrap();
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    c.assign(&tpl).unwrap();
    let mut done = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut idle = 0;
    while done.len() < ends.len() {
        assert!(Instant::now() < deadline, "reading {topic} took over 120 s");
        let Some(m) = c.poll(Duration::from_millis(500)) else {
            // The high watermark counts transaction markers, which are not
            // delivered: a partition whose last offset is a marker never
            // shows its end record. Quiet for long enough means done.
            idle += 1;
            if idle > 6 {
                break;
            }
            continue;
        };
        idle = 0;
        let m = m.unwrap();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(RawRecord {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
        if m.offset() + 1 >= ends[&m.partition()] {
            done.insert(m.partition());
        }
    }
    out
}

/// Total records in a topic (sum of high minus low watermarks); 0 if absent.
pub fn topic_size(bootstrap: &str, topic: &str) -> i64 {
    use rdkafka::consumer::BaseConsumer;
    let c: BaseConsumer = KafkaSettings::at(bootstrap)
        .consumer_config("size")
        .create()
        .unwrap();
    let Ok(md) = c.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return 0;
    };
    let Some(t) = md.topics().first() else {
        return 0;
    };
    t.partitions()
        .iter()
        .map(|p| {
            c.fetch_watermarks(topic, p.id(), Duration::from_secs(5))
                .map(|(lo, hi)| hi - lo)
                .unwrap_or(0)
        })
        .sum()
}

/// A nisshi of the test's own (to stop and restart without disturbing
/// other tests), stopped on drop.
pub struct OwnBroker {
    state: PathBuf,
    pub bootstrap: String,
}

impl OwnBroker {
    pub fn start(name: &str) -> Self {
        let state = scratch(name);
        let out = std::process::Command::new(repo().join("tests/infra/nisshi.sh"))
            .arg("start")
            .env("CHITOSE_STATE", &state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nisshi start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bootstrap = String::from_utf8(out.stdout).unwrap().trim().to_string();
        OwnBroker { state, bootstrap }
    }
    fn run(&self, what: &str) {
        let out = std::process::Command::new(repo().join("tests/infra/nisshi.sh"))
            .arg(what)
            .env("CHITOSE_STATE", &self.state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nisshi {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    /// Stops the broker (its data stays).
    pub fn stop(&self) {
        self.run("stop");
    }
    /// Starts it again on the same port with the same data.
    pub fn restart(&self) {
        self.run("restart");
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = std::process::Command::new(repo().join("tests/infra/nisshi.sh"))
            .arg("stop")
            .env("CHITOSE_STATE", &self.state)
            .output();
    }
}

/// A running `chitose` child process, killed on drop; its stderr goes to
/// a log file (a pipe nobody reads could block it).
pub struct Child(pub std::process::Child, pub PathBuf);

impl Child {
    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `chitose` with `args`.
pub fn chitose(args: &[&str], envs: &[(&str, &str)]) -> Child {
    let log = scratch("log").join("stderr.log");
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_chitose"));
    c.args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in envs {
        c.env(k, v);
    }
    Child(c.spawn().unwrap(), log)
}

/// The value of `CHITOSE_INGEST__HTTP__TOKEN_SHA256` that lets `token`
/// write to `prefecture`'s ingest (hashed by `chitose ingest token`).
pub fn token_hashes(prefecture: &str, token: &str) -> String {
    use std::io::Write;
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args(["ingest", "token", "--prefecture", prefecture, "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(c.stdin.take().unwrap(), "{token}").unwrap();
    let out = c.wait_with_output().unwrap();
    assert_ok(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let hash = text
        .strip_prefix("token_sha256 ")
        .map(str::trim)
        .unwrap_or_else(|| panic!("expected `token_sha256 <hash>`, found {text:?}"));
    format!("[\"{hash}\"]")
}

/// Asserts a finished process succeeded, showing its stderr if not.
pub fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The keys in `keys_dir` (a pipeline's `keygen` folder).
pub fn keys_in(keys_dir: &Path) -> chitose_transform::keys::KeyRing {
    let cfg = chitose_transform::keys::KeysConfig {
        dir: Some(keys_dir.to_owned()),
        ..Default::default()
    };
    chitose_transform::keys::KeyRing::load(&cfg, Vec::new(), false).unwrap()
}

/// The event id as the lake holds it: the keyed hash made with the event-id
/// key of `keys`, from a JSON-form line.
pub fn lake_event_id(keys: &chitose_transform::keys::KeyRing, line: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(line).unwrap();
    let mut out = String::new();
    chitose_transform::pseudonym::event_id_of(
        keys,
        v["hub_prefecture"].as_str().unwrap(),
        v["facility_code"].as_str().unwrap(),
        v["event_id"].as_str().unwrap(),
        &mut out,
    );
    out
}

/// Pseudonymized records as the transform writes them: `n` generated events
/// through the pure transform (test key), produced to `<prefix><event_type>`.
/// Returns the event ids per table.
pub fn produce_pseudo(
    bootstrap: &str,
    prefix: &str,
    n: usize,
    seed: u64,
    partitions: i32,
) -> HashMap<String, Vec<String>> {
    produce_pseudo_with_retries(bootstrap, prefix, n, seed, partitions, 0)
}

/// As [`produce_pseudo`], and every `retry_every`-th event (0: none) a
/// second time, as a client's retry reaches the pipeline: the same event,
/// another raw record (other source coordinates), a few records later.
/// The ids returned are each event's once.
pub fn produce_pseudo_with_retries(
    bootstrap: &str,
    prefix: &str,
    n: usize,
    seed: u64,
    partitions: i32,
    retry_every: usize,
) -> HashMap<String, Vec<String>> {
    use chitose_transform::core::{Coords, Scratch};
    let t = chitose_transform::core::fixed_key_transformer("pseudonymized");
    let codec = RawCodec::new(SchemaStore::embedded());
    let mut g = Generator::new(SimConfig {
        seed,
        patients: 5_000,
        days: 60,
        ..SimConfig::default()
    })
    .unwrap();
    let settings = KafkaSettings::at(bootstrap);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topics: Vec<String> = chitose_schemas::raw::EventType::ALL
        .iter()
        .map(|e| format!("{prefix}{}", e.symbol()))
        .collect();
    let spec: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), partitions)).collect();
    rt.block_on(settings.ensure_topics(&spec)).unwrap();
    let p: FutureProducer = settings.producer_config().create().unwrap();
    let mut ids: HashMap<String, Vec<String>> = HashMap::new();
    let mut s = Scratch::default();
    let now = chitose_schemas::codec::Timestamp::now();
    // One raw event through the pure transform, produced to its table's
    // topic, from the given raw coordinates.
    let send =
        |ev: &chitose_schemas::raw::RawEvent, partition: i32, offset: i64, s: &mut Scratch| {
            let mut raw = Vec::new();
            codec.encode_soe(ev, &mut raw);
            let c = Coords {
                topic: "health.raw.test",
                partition,
                offset,
            };
            let o = t.transform(&raw, c, now, s).unwrap();
            let topic = format!("{prefix}{}", o.event_type.symbol());
            let f = p
                .send_result(
                    FutureRecord::to(&topic)
                        .key(s.pseudonym.as_bytes())
                        .payload(&s.value),
                )
                .unwrap();
            (o.event_type, f)
        };
    rt.block_on(async {
        let mut fs = Vec::with_capacity(n);
        let mut retries: Vec<(usize, chitose_schemas::raw::RawEvent)> = Vec::new();
        for i in 0..n {
            let ev = g.next_event();
            if retry_every > 0 && i % retry_every == 3 {
                retries.push((i + 7, ev.clone()));
            }
            // Due retries: transformed again from a raw record of their own.
            while retries.first().is_some_and(|(at, _)| *at <= i) {
                let (at, again) = retries.remove(0);
                fs.push(send(&again, 1, at as i64, &mut s).1);
            }
            let (event_type, f) = send(&ev, 0, i as i64, &mut s);
            fs.push(f);
            // The lake holds the keyed hash of the event id.
            let mut hashed = String::new();
            chitose_transform::pseudonym::event_id(t.keys(), &ev, &mut hashed);
            ids.entry(event_type.symbol().to_owned())
                .or_default()
                .push(hashed);
            if fs.len() >= 5_000 {
                for f in fs.drain(..) {
                    f.await.unwrap().unwrap();
                }
            }
        }
        for f in fs {
            f.await.unwrap().unwrap();
        }
    });
    ids
}

/// Reads a lake with DuckDB and pyarrow (tests/python/read_lake.py).
pub fn read_lake(root: &str, s3_endpoint: Option<&str>) -> serde_json::Value {
    let mut c = std::process::Command::new(python());
    c.arg(repo().join("tests/python/read_lake.py")).arg(root);
    if let Some(e) = s3_endpoint {
        c.arg(e);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "read_lake.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The three services on nisshi under a topic prefix of their own
/// (`<prefix>.raw.27`, `<prefix>.pseudo.*`, `<prefix>.dlq`), topics
/// created first, fresh keys, a local lake; logs in `dir/<service>.log`.
pub struct Pipeline {
    pub kafka: String,
    pub prefix: String,
    pub dir: PathBuf,
    pub lake: PathBuf,
    /// ops addresses of ingest, transform, sink.
    pub ops: [String; 3],
    pub procs: Vec<Child>,
}

impl Pipeline {
    /// Starts ingest (`source` flags, e.g. `["--source", "files", "--dir", …]`),
    /// transform and sink; `env` and `flags` (e.g. `--log-json`) go to every
    /// service.
    pub fn start(name: &str, source: &[String], env: &[(&str, &str)], flags: &[&str]) -> Pipeline {
        Self::start_on(&nisshi(), name, source, env, flags)
    }

    /// As [`Pipeline::start`], on the broker at `kafka`; `env` (e.g. the
    /// `CHITOSE_KAFKA_*` TLS settings) also goes to `topics create`.
    pub fn start_on(
        kafka: &str,
        name: &str,
        source: &[String],
        env: &[(&str, &str)],
        flags: &[&str],
    ) -> Pipeline {
        let kafka = kafka.to_owned();
        let prefix = format!("p{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let dir = scratch(name);
        let bin = env!("CARGO_BIN_EXE_chitose");
        let st = std::process::Command::new(bin)
            .args([
                "topics",
                "create",
                "--bootstrap",
                &kafka,
                "--prefix",
                &prefix,
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
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .output()
            .unwrap();
        assert_ok(&st);
        // Every key the default configuration needs (pseudonym, date
        // shift, event id).
        let st = std::process::Command::new(bin)
            .args(["transform", "keygen", "--dir"])
            .arg(dir.join("keys"))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let ops: [String; 3] = std::array::from_fn(|_| format!("127.0.0.1:{}", free_port()));
        let lake = dir.join("lake");
        let spawn = |service: &str, args: Vec<String>, vars: Vec<(String, String)>| {
            let log = dir.join(format!("{service}.log"));
            let mut c = std::process::Command::new(bin);
            c.args(args)
                .args(flags)
                .env("RUST_LOG", "info,rdkafka=warn")
                .envs(vars)
                .envs(env.iter().map(|(k, v)| (*k, *v)))
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            Child(c.spawn().unwrap(), log)
        };
        let s = |x: &str| x.to_owned();
        let v = |k: &str, val: String| (k.to_owned(), val);
        let mut ingest = vec![s("ingest"), s("--prefecture"), s("27")];
        ingest.extend(source.iter().cloned());
        ingest.extend([
            s("--bootstrap"),
            kafka.clone(),
            s("--ops-listen"),
            ops[0].clone(),
        ]);
        let procs = vec![
            spawn(
                "ingest",
                ingest,
                vec![v(
                    "CHITOSE_INGEST__TOPIC",
                    format!("{prefix}.raw.{{prefecture}}"),
                )],
            ),
            spawn(
                "transform",
                vec![
                    s("transform"),
                    s("--bootstrap"),
                    kafka.clone(),
                    s("--keys-dir"),
                    dir.join("keys").display().to_string(),
                    s("--ops-listen"),
                    ops[1].clone(),
                ],
                vec![
                    v(
                        "CHITOSE_TRANSFORM__INPUT_PATTERN",
                        format!(r"^{prefix}\.raw\..+"),
                    ),
                    v(
                        "CHITOSE_TRANSFORM__OUTPUT_PREFIX",
                        format!("{prefix}.pseudo."),
                    ),
                    v("CHITOSE_TRANSFORM__DLQ_TOPIC", format!("{prefix}.dlq")),
                    v("CHITOSE_TRANSFORM__GROUP_ID", format!("{prefix}-transform")),
                    v("CHITOSE_TRANSFORM__OUTPUT_PARTITIONS", s("2")),
                ],
            ),
            spawn(
                "sink",
                vec![
                    s("sink"),
                    s("--bootstrap"),
                    kafka.clone(),
                    s("--lake"),
                    lake.display().to_string(),
                    s("--ops-listen"),
                    ops[2].clone(),
                ],
                vec![
                    v(
                        "CHITOSE_SINK__INPUT_PATTERN",
                        format!(r"^{prefix}\.pseudo\..+"),
                    ),
                    v("CHITOSE_SINK__GROUP_ID", format!("{prefix}-sink")),
                    v("CHITOSE_SINK__ROLL_AGE", s("1s")),
                ],
            ),
        ];
        Pipeline {
            kafka,
            prefix,
            dir,
            lake,
            ops,
            procs,
        }
    }

    /// A service's log so far.
    pub fn log(&self, service: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(format!("{service}.log"))).unwrap_or_default()
    }

    /// The three /metrics texts (None for a service not answering).
    pub fn scrape(&self) -> Vec<Option<String>> {
        self.ops.iter().map(|o| scrape(o)).collect()
    }

    /// SIGTERM to every service, then waits: each must exit 0 within 60 s.
    pub fn stop(&mut self) {
        for p in &self.procs {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &p.0.id().to_string()])
                .status();
        }
        for p in &mut self.procs {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let status = loop {
                if let Some(st) = p.0.try_wait().unwrap() {
                    break st;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} ignored SIGTERM",
                    p.1.display()
                );
                std::thread::sleep(std::time::Duration::from_millis(200));
            };
            assert!(status.success(), "{}: {status}", p.1.display());
        }
    }
}

/// A service's /metrics text, from its ops address (`host:port`); None
/// while it does not answer. Every test scrapes through this.
pub fn scrape(ops: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::get(format!("http://{ops}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    })
}

/// The sum of a metric's samples in a scrape (every label set).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    metric(text, name, "")
}

/// The sum of a metric's samples whose label set contains `labels` (e.g.
/// `partition="0"`; "" for every sample).
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.is_empty() || l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A fresh bucket on the S3 test server (moto).
pub fn create_bucket(endpoint: &str) -> String {
    let bucket = format!("lake-{}", uuid::Uuid::new_v4().simple());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
            )
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success(), "create bucket: {status}");
    bucket
}

/// A binary installed by tests/infra (nisshi, stunnel), from the variable
/// `tests/run` exports.
pub fn tool(var: &str, how: &str) -> PathBuf {
    PathBuf::from(service(var, how))
}

/// Certificates made for one test: a CA, a server certificate for
/// 127.0.0.1/localhost, a client certificate, and an unrelated CA.
/// Private keys are written 0600.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// SHA-256 of the client certificate's DER, hex.
    pub client_sha256: String,
    /// Another client certificate from the same CA (not pinned anywhere).
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
    /// A CA that signed none of these.
    pub wrong_ca: PathBuf,
    /// A second server certificate and key (a renewal), and the SHA-256
    /// of that certificate's DER.
    pub renewed_server_cert: PathBuf,
    pub renewed_server_key: PathBuf,
    pub renewed_server_sha256: String,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        std::fs::create_dir_all(dir).unwrap();
        let ca_params = |name: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            p
        };
        let ca = CertifiedIssuer::self_signed(
            ca_params("chitose test CA"),
            KeyPair::generate().unwrap(),
        )
        .unwrap();
        let wrong = CertifiedIssuer::self_signed(
            ca_params("someone else's CA"),
            KeyPair::generate().unwrap(),
        )
        .unwrap();
        let leaf = |cn: &str, sans: Vec<String>| {
            let mut p = CertificateParams::new(sans).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &*ca).unwrap();
            (cert, key)
        };
        let (server, server_key) = leaf("127.0.0.1", vec!["127.0.0.1".into(), "localhost".into()]);
        let (client, client_key) = leaf("chitose-test-client", vec!["chitose-test-client".into()]);
        let (other, other_key) = leaf("another-client", vec!["another-client".into()]);
        let (renewed, renewed_key) =
            leaf("127.0.0.1", vec!["127.0.0.1".into(), "localhost".into()]);
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            p
        };
        let sha256 = |der: &[u8]| -> String {
            use sha2::Digest;
            sha2::Sha256::digest(der)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        let client_sha256 = sha256(client.der().as_ref());
        Pki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server.pem()),
            server_key: write("server.key", &server_key.serialize_pem()),
            client_cert: write("client.pem", &client.pem()),
            client_key: write("client.key", &client_key.serialize_pem()),
            client_sha256,
            other_client_cert: write("other-client.pem", &other.pem()),
            other_client_key: write("other-client.key", &other_key.serialize_pem()),
            wrong_ca: write("wrong-ca.pem", &wrong.pem()),
            renewed_server_cert: write("renewed-server.pem", &renewed.pem()),
            renewed_server_key: write("renewed-server.key", &renewed_key.serialize_pem()),
            renewed_server_sha256: sha256(renewed.der().as_ref()),
        }
    }
}

/// nisshi behind stunnel: clients reach only the TLS port, which nisshi
/// advertises, so every connection (bootstrap and broker) is TLS; with
/// `mtls`, stunnel requires a client certificate signed by the CA.
pub struct TlsBroker {
    pub bootstrap: String,
    pub dir: PathBuf,
    procs: Vec<Child>,
}

impl TlsBroker {
    pub fn start(name: &str, pki: &Pki, mtls: bool) -> TlsBroker {
        let dir = scratch(name);
        let (inner, outer) = (free_port(), free_port());
        let nisshi = std::process::Command::new(tool(
            "CHITOSE_TEST_NISSHI_BIN",
            "tests/infra/nisshi.sh install",
        ))
        .args(["broker", "--listener-url"])
        .arg(format!("tcp://127.0.0.1:{inner}"))
        .arg("--advertised-listener-url")
        .arg(format!("tcp://127.0.0.1:{outer}"))
        .args(["--storage-engine", "sqlite://nisshi.db"])
        .args(["--group-initial-rebalance-delay", "100ms"])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("nisshi.log")).unwrap())
        .spawn()
        .unwrap();
        let nisshi = Child(nisshi, dir.join("nisshi.log"));
        let verify = if mtls {
            format!(
                "CAfile = {}\nverifyChain = yes\nrequireCert = yes\n",
                pki.ca.display()
            )
        } else {
            String::new()
        };
        let conf = dir.join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\ndebug = notice\n[kafka]\naccept = 127.0.0.1:{outer}\n\
                 connect = 127.0.0.1:{inner}\ncert = {}\nkey = {}\n{verify}",
                pki.server_cert.display(),
                pki.server_key.display()
            ),
        )
        .unwrap();
        let stunnel = std::process::Command::new(tool(
            "CHITOSE_TEST_STUNNEL",
            "tests/infra/stunnel.sh install",
        ))
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("stunnel.log")).unwrap())
        .spawn()
        .unwrap();
        let stunnel = Child(stunnel, dir.join("stunnel.log"));
        for port in [inner, outer] {
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "port {port} not open: {} {}",
                    nisshi.log(),
                    stunnel.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        TlsBroker {
            bootstrap: format!("127.0.0.1:{outer}"),
            dir,
            procs: vec![nisshi, stunnel],
        }
    }

    /// What stunnel logged (connections, refused handshakes).
    pub fn stunnel_log(&self) -> String {
        self.procs[1].log()
    }
}
