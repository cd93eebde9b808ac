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
//! process ("per core"). The machines are shared and noisy: every measure
//! runs `CHITOSE_BENCH_RUNS` times (5), interleaved, and the table gives
//! median, min and max, with each ratio to its floor taken within a run.

use chitose_ingest::config::{IngestConfig, SourceKind};
use chitose_ingest::edge::{Edge, EdgeScratch};
use chitose_ingest::simulate::{Generator, SimConfig};
use chitose_runtime::procstat::{Measure, Spread, measure, spread_table, threads_cpu_seconds};
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

// Measured with the allocator the binary ships with.
chitose_runtime::global_allocator!();

fn main() {
    // As the `chitose` binary runs its services (runtime::alloc).
    chitose_runtime::alloc::without_huge_pages();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("CHITOSE_BENCH_EVENTS", 200_000);
    let runs = env("CHITOSE_BENCH_RUNS", 5).max(1);
    let entries = env("CHITOSE_BENCH_FHIR_ENTRIES", 100_000);
    let data = lines(n);
    let bytes: usize = data.iter().map(Vec::len).sum();
    let bundle = exam_bundle(entries / 10);
    let store = SchemaStore::embedded();
    let edge = Edge::new(&store, Some("27".into()));
    let now = Timestamp::now();

    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    let mut brokers = vec![("MockCluster", mock.bootstrap_servers(), true)];
    let nisshi = std::env::var("CHITOSE_BENCH_KAFKA").ok();
    if let Some(k) = &nisshi {
        brokers.push(("nisshi", k.clone(), false));
    }
    let dir = std::env::temp_dir().join(format!("chitose-bench-{}", std::process::id()));
    let mut file = Vec::with_capacity(bytes + n);
    for l in &data {
        file.extend_from_slice(l);
        file.push(b'\n');
    }

    // Every measure once per run, the runs one after another, so a slow
    // minute of the machine slows all of them.
    let mut all: Vec<Vec<Measure>> = Vec::with_capacity(runs);
    let mut mock_cpu = Vec::with_capacity(runs);
    for run in 0..runs {
        eprintln!("ingest bench: run {} of {runs}", run + 1);
        let mut results = Vec::new();
        results.push(measure("serde_json parse only (floor)", n as u64, || {
            for l in &data {
                std::hint::black_box(serde_json::from_slice::<serde_json::Value>(l).unwrap());
            }
        }));
        // As the sources call it: one scratch for the stream.
        let mut scratch = EdgeScratch::default();
        results.push(measure(
            "edge: JSON → checked, framed Avro",
            n as u64,
            || {
                for l in &data {
                    std::hint::black_box(edge.accept_with(l, now, &mut scratch).unwrap());
                }
            },
        ));
        let mut broker_cpu = 0.0;
        for (label, bootstrap, is_mock) in &brokers {
            let topic = format!("health.raw.27.bench-{}-{run}", std::process::id());
            if *is_mock {
                mock.create_topic(&topic, 6, 1).unwrap();
                mock.create_topic(&format!("{topic}-sim"), 6, 1).unwrap();
            }
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("bench.ndjson"), &file).unwrap();
            // MockCluster's broker thread runs in this process; a deployed
            // broker is elsewhere, so its CPU is not the service's.
            let broker = threads_cpu_seconds("rdk:mock");
            let mut m = measure(&format!("files source → {label}"), n as u64, || {
                run_service(files_cfg(bootstrap, &dir, &topic));
            });
            let broker = threads_cpu_seconds("rdk:mock") - broker;
            m.cpu -= broker;
            broker_cpu += broker;
            results.push(m);
            assert!(
                dir.join("done/bench.ndjson").exists(),
                "the file was fully sent"
            );
            let _ = std::fs::remove_dir_all(&dir);

            let mut cfg = files_cfg(bootstrap, &dir, &format!("{topic}-sim"));
            cfg.source = SourceKind::Simulate;
            cfg.simulate.events = n as u64;
            cfg.simulate.generator.patients = 20_000;
            let broker = threads_cpu_seconds("rdk:mock");
            let mut m = measure(&format!("simulate source → {label}"), n as u64, || {
                run_service(cfg)
            });
            let broker = threads_cpu_seconds("rdk:mock") - broker;
            m.cpu -= broker;
            broker_cpu += broker;
            results.push(m);
        }
        mock_cpu.push(broker_cpu);
        results.push(measure(
            "FHIR: serde_json parse of the bundle (floor)",
            entries as u64,
            || {
                std::hint::black_box(serde_json::from_slice::<serde_json::Value>(&bundle).unwrap());
            },
        ));
        let mut mapped = 0;
        results.push(measure(
            "FHIR: bundle → checkup events",
            entries as u64,
            || {
                mapped = chitose_ingest::fhir::map_bundle(&bundle, "27")
                    .unwrap()
                    .iter()
                    .filter(|(_, e)| matches!(e, chitose_ingest::fhir::Entry::Event(_)))
                    .count();
            },
        ));
        assert_eq!(mapped, entries / 10, "one checkup per patient");
        all.push(results);
    }

    println!(
        "ingest benchmark: {n} events, {:.0} bytes/event of JSON, {} cores, {runs} interleaved runs",
        bytes as f64 / n as f64,
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(0)
    );
    // Each row's floor: the edge's is the JSON parse, the FHIR mapping's
    // the bundle's parse; the services are compared to the edge's floor.
    let rows = all[0].len();
    let floors: Vec<Option<usize>> = (0..rows)
        .map(|i| match i {
            0 => None,
            i if i == rows - 2 => None,
            i if i == rows - 1 => Some(rows - 2),
            _ => Some(0),
        })
        .collect();
    print!("{}", spread_table(&all, &floors));
    let edge_x = Spread::of(all.iter().map(|r| r[1].per_cpu() / r[0].per_cpu()));
    println!(
        "edge per CPU-second / serde_json Value parse: {:.2}x (median; min {:.2}, max {:.2})",
        edge_x.median, edge_x.min, edge_x.max
    );
    println!(
        "MockCluster's broker thread (median {:.2} CPU-s a run) runs in this process and is left out of the services' CPU",
        Spread::of(mock_cpu).median
    );
    println!(
        "FHIR bundle of {entries} entries ({:.1} MiB); peak RSS of this process {}",
        bundle.len() as f64 / (1 << 20) as f64,
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
