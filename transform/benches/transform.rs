//! Transform throughput: `cargo bench -p chitose-transform --bench transform`.
//!
//! In one run, on the same generated raw records (SOE-framed Avro):
//! 1. the raw library floor: decode the raw record, HMAC its linkage key,
//!    encode a record back — what any de-identifying consumer pays;
//! 2. the pure transform (decode, checks, pseudonym, policy, enrichment,
//!    encode of the table record);
//! 3. the service through rdkafka's MockCluster with transactions: raw
//!    topic → transform → pseudo topics (the in-process broker's CPU counts).
//!
//! Per core = per CPU-second of this process. Compare ratios within a run.
//! The two pure measures run `CHITOSE_BENCH_RUNS` (5) times interleaved and
//! print median, min and max, with heap allocations per event counted by a
//! counting global allocator (the hot path should make none of its own).

use chitose_ingest::simulate::{Generator, SimConfig};
use chitose_runtime::procstat::{Measure, measure, table};
use chitose_runtime::shutdown::Shutdown;
use chitose_schemas::RawCodec;
use chitose_schemas::catalog::SchemaStore;
use chitose_schemas::codec::{AvroCodec, Timestamp};
use chitose_transform::config::TransformConfig;
use chitose_transform::core::{Coords, Scratch};
use hmac::Mac;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::time::Duration;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

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
    let store = SchemaStore::embedded();
    let codec = RawCodec::new(store.clone());
    let mut g = Generator::new(SimConfig {
        seed: 99,
        patients: 20_000,
        ..SimConfig::default()
    })
    .unwrap();
    let msgs: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let mut out = Vec::new();
            codec.encode_soe(&g.next_event(), &mut out);
            out
        })
        .collect();
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    let t = chitose_transform::core::fixed_key_transformer("pseudonymized");
    let now = Timestamp::now();
    let runs: usize = std::env::var("CHITOSE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let floor = || {
        let key = hmac::Hmac::<sha2::Sha256>::new_from_slice(&[1; 32]).unwrap();
        let mut out = Vec::new();
        for m in &msgs {
            let ev = codec.decode(m).unwrap();
            let mut h = key.clone();
            h.update(ev.patient.local_patient_id.as_bytes());
            std::hint::black_box(h.finalize());
            out.clear();
            ev.encode(&mut out);
            std::hint::black_box(&out);
        }
    };
    // The scratch buffers live across runs, as in the service.
    let mut s = Scratch::default();
    let mut pure = || {
        for (i, m) in msgs.iter().enumerate() {
            let c = Coords {
                topic: "health.raw.27",
                partition: 0,
                offset: i as i64,
            };
            std::hint::black_box(t.transform(m, c, now, &mut s).unwrap());
        }
    };
    pure(); // warm the scratch buffers once
    // (measure, allocations per event) per run: floor, pure transform.
    let mut pure_runs: Vec<[(Measure, f64); 2]> = Vec::new();
    for _ in 0..runs {
        let counted = |name: &str, f: &mut dyn FnMut()| {
            let region = Region::new(GLOBAL);
            let m = measure(name, n as u64, f);
            let a = region.change();
            (m, (a.allocations + a.reallocations) as f64 / n as f64)
        };
        let f = counted("floor: Avro decode + HMAC + Avro encode", &mut { floor });
        let p = counted("pure transform (pseudonymized profile)", &mut pure);
        pure_runs.push([f, p]);
    }
    let mut results: Vec<Measure> = pure_runs[pure_runs.len() / 2]
        .iter()
        .map(|(m, _)| m.clone())
        .collect();

    if std::env::var("CHITOSE_BENCH_PURE_ONLY").is_ok() {
        print_pure(n, bytes, &pure_runs);
        return;
    }
    // Through MockCluster, with transactions. MockCluster keeps at most 5 MiB
    // per partition (older records are deleted), so this part uses at most
    // 100 000 records over 12 raw partitions.
    let n_mock = n.min(100_000);
    let msgs = &msgs[..n_mock];
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    mock.create_topic("health.raw.27", 12, 1).unwrap();
    for t in [
        "encounter",
        "diagnosis",
        "lab_result",
        "prescription",
        "checkup",
        "vaccination",
    ] {
        mock.create_topic(&format!("health.pseudo.{t}"), 6, 1)
            .unwrap();
    }
    mock.create_topic("health.dlq", 6, 1).unwrap();
    let mut cfg = TransformConfig {
        ops_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Default::default()
    };
    cfg.kafka.bootstrap_servers = bootstrap.clone();
    let p: ThreadedProducer<_> = cfg.kafka.producer_config().create().unwrap();
    for (i, m) in msgs.iter().enumerate() {
        let key = i.to_string();
        loop {
            match p.send(BaseRecord::to("health.raw.27").key(&key).payload(m)) {
                Ok(()) => break,
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }
    p.flush(Duration::from_secs(60)).unwrap();
    let transformer = chitose_transform::service::build(
        &cfg,
        vec![
            ("CHITOSE_KEY_PSEUDONYM_2026A".into(), "ab".repeat(32)),
            ("CHITOSE_KEY_EVENT_2026A".into(), "cd".repeat(32)),
        ],
    )
    .unwrap();
    results.push(measure(
        "transform service → MockCluster (transactions)",
        n_mock as u64,
        || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (trigger, shutdown) = Shutdown::new();
                let h = tokio::spawn(chitose_transform::service::run(
                    cfg.clone(),
                    transformer,
                    shutdown,
                ));
                // Stop once every output can be read back (read_committed).
                let c: rdkafka::consumer::BaseConsumer =
                    cfg.kafka.consumer_config("bench-verify").create().unwrap();
                use rdkafka::consumer::Consumer;
                let topics: Vec<String> = [
                    "encounter",
                    "diagnosis",
                    "lab_result",
                    "prescription",
                    "checkup",
                    "vaccination",
                ]
                .iter()
                .map(|t| format!("health.pseudo.{t}"))
                .chain(["health.dlq".to_owned()])
                .collect();
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                c.subscribe(&names).unwrap();
                let mut seen = 0usize;
                while seen < n_mock {
                    match tokio::task::block_in_place(|| c.poll(Duration::from_millis(100))) {
                        Some(Ok(_)) => seen += 1,
                        Some(Err(e)) => eprintln!("verify: {e}"),
                        None => {}
                    }
                }
                trigger.trigger();
                let s = h.await.unwrap().unwrap();
                assert_eq!(s.written + s.dlq, n_mock as u64, "{s:?}");
            });
        },
    ));

    print_pure(n, bytes, &pure_runs);
    println!("the service, one run:");
    print!("{}", table(&results[2..]));
}

/// The pure measures: per CPU-second, its ratio to the floor in the same
/// run, and allocations per event; median, min and max over the runs.
fn print_pure(n: usize, bytes: usize, runs: &[[(Measure, f64); 2]]) {
    println!(
        "transform benchmark: {n} raw events, {:.0} bytes/event of Avro, {} cores, {} interleaved runs",
        bytes as f64 / n as f64,
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(0),
        runs.len()
    );
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    println!(
        "| what | events per CPU-s median | min | max | × floor median | min | max | allocations per event |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for i in 0..2 {
        let (a, b, c) = stats(runs.iter().map(|r| r[i].0.per_cpu()).collect());
        let (d, e, f) = stats(
            runs.iter()
                .map(|r| r[i].0.per_cpu() / r[0].0.per_cpu())
                .collect(),
        );
        let (al, _, _) = stats(runs.iter().map(|r| r[i].1).collect());
        println!(
            "| {} | {a:.0} | {b:.0} | {c:.0} | {d:.2} | {e:.2} | {f:.2} | {al:.2} |",
            runs[0][i].0.name
        );
    }
    let (p, _, _) = stats(runs.iter().map(|r| r[1].0.per_cpu()).collect());
    let (x, _, _) = stats(
        runs.iter()
            .map(|r| r[1].0.per_cpu() / r[0].0.per_cpu())
            .collect(),
    );
    println!("pure transform per core: {p:.0} events/s = {x:.2}x the floor (medians)");
}
