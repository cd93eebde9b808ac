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
use std::path::PathBuf;
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
