//! Ingest throughput: `cargo bench -p chitose-ingest --bench ingest`.
//!
//! Measures, in one run, on the same generated records:
//! 1. the pure edge (JSON → Avro, My Number scan, semantic checks, framing),
//!    against serde_json parsing alone (the floor any JSON ingest pays);
//! 2. the files source end to end into rdkafka's MockCluster (in-process:
//!    its broker thread's CPU is measured and left out, as a deployed
//!    broker's is elsewhere) and, with CHITOSE_BENCH_KAFKA=host:port, into
//!    a real broker such as nisshi (whose CPU is not counted);
//! 3. the simulate source (generator + edge + produce), same brokers;
//! 4. FHIR: one 特定健診 bundle of `CHITOSE_BENCH_FHIR_ENTRIES` entries
//!    (100 000 by default: 10 000 patients, each a Patient and nine exam
//!    Observations) mapped to events, against parsing the same bytes into a
//!    `serde_json::Value` alone; the process's peak RSS is printed after.
//!
//! Rates are events per second of wall time and per CPU-second of this
//! process ("per core"). The machines are shared and noisy: compare ratios
//! within one run, not absolute numbers across runs.

use chitose_ingest::config::{IngestConfig, SourceKind};
use chitose_ingest::edge::Edge;
use chitose_ingest::simulate::{Generator, SimConfig};
use chitose_runtime::procstat::{measure, table, threads_cpu_seconds};
use chitose_runtime::shutdown::Shutdown;
use chitose_schemas::catalog::SchemaStore;
use chitose_schemas::codec::Timestamp;

fn lines(n: usize) -> Vec<Vec<u8>> {
    let mut g = Generator::new(SimConfig {
        seed: 77,
        patients: 20_000,
        hub: Some("27".into()),
        ..SimConfig::default()
    })
    .unwrap();
    (0..n).map(|_| g.next_line().bytes).collect()
}

fn run_service(cfg: IngestConfig) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (_trigger, shutdown) = Shutdown::new();
        chitose_ingest::service::run(cfg, shutdown).await.unwrap();
    });
}

fn files_cfg(bootstrap: &str, dir: &std::path::Path, topic: &str) -> IngestConfig {
    let mut cfg = IngestConfig {
        source: SourceKind::Files,
        prefecture: "27".into(),
        topic: topic.into(),
        ops_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Default::default()
    };
    cfg.kafka.bootstrap_servers = bootstrap.into();
    cfg.files.dir = dir.to_path_buf();
    cfg.files.exit_when_idle = true;
    cfg.files.checkpoint_every_lines = 10_000;
    cfg
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let n: usize = std::env::var("CHITOSE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let data = lines(n);
    let bytes: usize = data.iter().map(Vec::len).sum();
    let store = SchemaStore::embedded();
    let edge = Edge::new(&store, Some("27".into()));
    let now = Timestamp::now();
    let mut results = Vec::new();

    results.push(measure("serde_json parse only (floor)", n as u64, || {
        for l in &data {
            std::hint::black_box(serde_json::from_slice::<serde_json::Value>(l).unwrap());
        }
    }));
    results.push(measure(
        "edge: JSON → checked, framed Avro",
        n as u64,
        || {
            for l in &data {
                std::hint::black_box(edge.accept(l, now).unwrap());
            }
        },
    ));

    let mut brokers: Vec<(
        String,
        String,
        Option<rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    )> = Vec::new();
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    brokers.push(("MockCluster".into(), mock.bootstrap_servers(), Some(mock)));
    if let Ok(k) = std::env::var("CHITOSE_BENCH_KAFKA") {
        brokers.push(("nisshi".into(), k, None));
    }
    for (label, bootstrap, mock) in &brokers {
        let topic = format!("health.raw.27.bench-{}", std::process::id());
        if let Some(m) = mock {
            m.create_topic(&topic, 6, 1).unwrap();
        }
        let dir =
            std::env::temp_dir().join(format!("chitose-bench-{}-{label}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut file = Vec::with_capacity(bytes + n);
        for l in &data {
            file.extend_from_slice(l);
            file.push(b'\n');
        }
        std::fs::write(dir.join("bench.ndjson"), &file).unwrap();
        let broker = threads_cpu_seconds("rdk:mock");
        let mut m = measure(&format!("files source → {label}"), n as u64, || {
            run_service(files_cfg(bootstrap, &dir, &topic));
        });
        let broker = threads_cpu_seconds("rdk:mock") - broker;
        m.cpu -= broker;
        if mock.is_some() {
            eprintln!("files source: MockCluster's broker thread {broker:.2} CPU-s, left out");
        }
        results.push(m);
        assert!(
            dir.join("done/bench.ndjson").exists(),
            "the file was fully sent"
        );
        let _ = std::fs::remove_dir_all(&dir);

        let mut cfg = files_cfg(bootstrap, &dir, &format!("{topic}-sim"));
        if let Some(m) = mock {
            m.create_topic(&format!("{topic}-sim"), 6, 1).unwrap();
        }
        cfg.source = SourceKind::Simulate;
        cfg.simulate.events = n as u64;
        cfg.simulate.generator.patients = 20_000;
        let broker = threads_cpu_seconds("rdk:mock");
        let mut m = measure(&format!("simulate source → {label}"), n as u64, || {
            run_service(cfg)
        });
        m.cpu -= threads_cpu_seconds("rdk:mock") - broker;
        results.push(m);
    }

    let entries: usize = std::env::var("CHITOSE_BENCH_FHIR_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let bundle = exam_bundle(entries / 10);
    let fhir_floor = measure(
        "FHIR: serde_json parse of the bundle (floor)",
        entries as u64,
        || {
            std::hint::black_box(serde_json::from_slice::<serde_json::Value>(&bundle).unwrap());
        },
    );
    let mut mapped = 0;
    let fhir = measure("FHIR: bundle → checkup events", entries as u64, || {
        mapped = chitose_ingest::fhir::map_bundle(&bundle, "27")
            .unwrap()
            .iter()
            .filter(|(_, e)| matches!(e, chitose_ingest::fhir::Entry::Event(_)))
            .count();
    });
    assert_eq!(mapped, entries / 10, "one checkup per patient");
    println!(
        "ingest benchmark: {n} events, {:.0} bytes/event of JSON, {} cores",
        bytes as f64 / n as f64,
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(0)
    );
    print!("{}", table(&results));
    let floor = &results[0];
    let edge_m = &results[1];
    println!(
        "edge cost relative to parsing alone: {:.2}x the CPU time",
        edge_m.cpu.max(1e-9) / floor.cpu.max(1e-9)
    );
    print!("{}", table(&[fhir_floor.clone(), fhir.clone()]));
    println!(
        "FHIR bundle of {entries} entries ({:.1} MiB): mapping {:.2}x the CPU time of parsing alone; peak RSS of this process {}",
        bundle.len() as f64 / (1 << 20) as f64,
        fhir.cpu.max(1e-9) / fhir_floor.cpu.max(1e-9),
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM")).map(|l| l
                .split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ")))
            .unwrap_or_default()
    );
}

/// A 特定健診 collection bundle: per patient a Patient and nine exam
/// Observations (height, weight, BMI, waist, blood pressure, lipids).
fn exam_bundle(patients: usize) -> Vec<u8> {
    use serde_json::json;
    let items = [
        ("9N001000000000001", 170.2),
        ("9N006000000000001", 65.1),
        ("9N011000000000001", 22.5),
        ("9N016160100000001", 80.0),
        ("9A751000000000001", 128.0),
        ("9A761000000000001", 80.0),
        ("3F015000002327101", 110.0),
        ("3F070000002327101", 55.0),
        ("3F077000002327101", 120.0),
    ];
    let mut entry = vec![
        json!({"fullUrl": "urn:uuid:org", "resource": {"resourceType": "Organization", "id": "org",
        "identifier": [{"system": "http://jpfhir.jp/fhir/core/IdSystem/insurance-medical-institution-no", "value": "2710000001"}]}}),
    ];
    for p in 0..patients {
        entry.push(json!({"fullUrl": format!("urn:uuid:p{p}"), "resource": {"resourceType": "Patient", "id": format!("p{p}"),
            "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.12710000001", "value": format!("P{p:07}")}],
            "birthDate": "1970-01-01", "gender": "female"}}));
        for (k, (code, v)) in items.iter().enumerate() {
            entry.push(json!({"fullUrl": format!("urn:uuid:o{p}-{k}"), "resource": {"resourceType": "Observation", "id": format!("o{p}-{k}"),
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "exam"}]}],
                "code": {"coding": [{"system": "http://jpfhir.jp/fhir/eCheckup/CodeSystem/jlac10", "code": code}]},
                "subject": {"reference": format!("urn:uuid:p{p}")},
                "effectiveDateTime": "2026-05-01",
                "valueQuantity": {"value": v}}}));
        }
    }
    serde_json::to_vec(&json!({"resourceType": "Bundle", "type": "collection", "entry": entry}))
        .unwrap()
}
