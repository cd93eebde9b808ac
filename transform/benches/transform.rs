//! Transform throughput: `cargo bench -p chitose-transform --bench transform`.
//!
//! In one run, on the same generated raw records (SOE-framed Avro):
//! 1. the raw library floor: decode the raw record, HMAC its linkage key,
//!    encode a record back — what any de-identifying consumer pays;
//! 2. that floor with the work the contract makes every record cost,
//!    whatever the policy: the re-check of the raw contract (DESIGN.md's
//!    threat model: a producer may bypass ingest) and every keyed value the
//!    profile writes (pseudonym, event id, linkage pseudonyms, date shift),
//!    base32 included — how near the library floor a transform can get
//!    without dropping one of them;
//! 3. the pure transform (decode, checks, pseudonym, policy, enrichment,
//!    encode of the table record);
//! 4. the service through rdkafka's MockCluster with transactions: raw
//!    topic → transform → pseudo topics (the in-process broker thread's CPU
//!    is measured and left out), as deployed (LZ4 out) and with its output
//!    uncompressed, which prices the codec (the operator's setting).
//!
//! Per core = per CPU-second of this process. Compare ratios within a run.
//! The three pure measures run `CHITOSE_BENCH_RUNS` (5) times interleaved
//! and print median, min and max, with heap allocations per event counted
//! by a counting global allocator (the hot path should make none of its
//! own); then the service, both ways, as many times, each run on a fresh
//! MockCluster.

use chitose_ingest::simulate::{Generator, SimConfig};
use chitose_runtime::procstat::{Measure, Spread, measure, threads_cpu_seconds};
use chitose_runtime::shutdown::Shutdown;
use chitose_schemas::RawCodec;
use chitose_schemas::catalog::SchemaStore;
use chitose_schemas::codec::{AvroCodec, Timestamp};
use chitose_transform::config::TransformConfig;
use chitose_transform::core::{Coords, Scratch};
use chitose_transform::pseudonym;
use hmac::Mac;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::time::Duration;

// Counts heap allocations per event. stats_alloc wraps `System` only, but
// mimalloc's `override` makes `System`'s malloc mimalloc's once `describe`
// links it: the binary's allocator, counted.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    // As the `chitose` binary runs its services (runtime::alloc).
    chitose_runtime::alloc::without_huge_pages();
    println!("allocator: {}", chitose_runtime::alloc::describe());
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
    // The floor plus what no policy can drop (the same calls as
    // `Transformer::transform_event`, in its order): the transform can come
    // no nearer the floor than this row without dropping a check or a key.
    let (contract, keys, policy) = (t.contract(), t.keys(), t.policy());
    let links = t.writes_linkage_pseudonyms();
    let required = || {
        let mut out = Vec::new();
        let (mut link, mut pseudo, mut id) = (String::new(), String::new(), String::new());
        let (mut link_key, mut link_macs, mut all) = (String::new(), Vec::new(), String::new());
        for m in &msgs {
            let ev = codec.decode(m).unwrap();
            chitose_schemas::edge::check(&ev, None, now).unwrap();
            contract.check(&ev).unwrap();
            let basis = pseudonym::linkage_key(&ev, &policy.linkage, &mut link);
            let mac = pseudonym::pseudonym(keys, &link, &mut pseudo);
            pseudonym::event_id(keys, &ev, &mut id);
            if links {
                pseudonym::linkage_pseudonyms(
                    keys,
                    &ev,
                    &policy.linkage,
                    (basis, &link, mac),
                    (&mut link_key, &mut link_macs),
                    &mut all,
                );
            }
            std::hint::black_box(pseudonym::date_shift_days(
                keys,
                &link,
                policy.max_shift_days,
            ));
            std::hint::black_box((&pseudo, &id, &all));
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
    // (measure, allocations per event) per run: floor, the floor with the
    // required work, pure transform.
    let mut pure_runs: Vec<[(Measure, f64); 3]> = Vec::new();
    for _ in 0..runs {
        let counted = |name: &str, f: &mut dyn FnMut()| {
            let region = Region::new(GLOBAL);
            let m = measure(name, n as u64, f);
            let a = region.change();
            (m, (a.allocations + a.reallocations) as f64 / n as f64)
        };
        let f = counted("floor: Avro decode + HMAC + Avro encode", &mut { floor });
        let r = counted(
            "floor + what no policy drops: contract re-check, every keyed value",
            &mut { required },
        );
        let p = counted("pure transform (pseudonymized profile)", &mut pure);
        pure_runs.push([f, r, p]);
    }
    if std::env::var("CHITOSE_BENCH_PURE_ONLY").is_ok() {
        print_pure(n, bytes, &pure_runs, "");
        return;
    }
    // Through MockCluster, with transactions. MockCluster keeps at most 5 MiB
    // per partition (older records are deleted), so this part uses at most
    // 100 000 records over 12 raw partitions; each run gets a fresh cluster.
    let n_mock = n.min(100_000);
    // Interleaved: as deployed (LZ4), then with the output uncompressed.
    let service_runs: Vec<[(Measure, f64); 2]> = (0..runs)
        .map(|_| {
            [
                service(&msgs[..n_mock], None),
                service(&msgs[..n_mock], Some("none")),
            ]
        })
        .collect();
    let stats = |v: Vec<f64>| {
        let s = Spread::of(v);
        (s.median, s.min, s.max)
    };
    let mut rows = String::new();
    for (i, what) in ["", ", output uncompressed"].iter().enumerate() {
        let (a, b, c) = stats(service_runs.iter().map(|r| r[i].0.per_cpu()).collect());
        rows += &format!(
            "| transform service → MockCluster, exactly once{what} ({n_mock} events, {} runs) | {a:.0} | {b:.0} | {c:.0} | | | | |\n",
            service_runs.len()
        );
    }
    let (w, _, _) = stats(service_runs.iter().map(|r| r[0].0.per_wall()).collect());
    let (k, _, _) = stats(service_runs.iter().map(|r| r[0].1).collect());
    let (z, zl, zh) = stats(
        service_runs
            .iter()
            .map(|r| r[1].0.per_cpu() / r[0].0.per_cpu())
            .collect(),
    );
    print_pure(n, bytes, &pure_runs, &rows);
    println!(
        "the service: median {w:.0} events/s wall; MockCluster's broker thread (median {k:.2} CPU-s a run) runs in this process and is left out"
    );
    println!(
        "the service with its output uncompressed / as deployed (LZ4): {z:.2}x (median of the runs' ratios; min {zl:.2}, max {zh:.2})"
    );
}

/// One run of the service: a fresh MockCluster with the deployed topic
/// layout, `msgs` on one raw topic (compressed as deployed), the transform
/// with its deployed defaults (its output codec `compression` where given)
/// and exactly once, stopped once it has committed every record.
/// Returns the measure (the broker thread's CPU left out) and that CPU.
fn service(msgs: &[Vec<u8>], compression: Option<&str>) -> (Measure, f64) {
    let n_mock = msgs.len();
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    // Every topic of the deployed layout (one place: runtime::topics), so a
    // table added to the contract gets its topic here too (with six tables
    // listed by hand, allergy and correction records had nowhere to go
    // and the service step hung).
    let layout = chitose_runtime::topics::layout(
        chitose_runtime::topics::PREFIX,
        &["27".to_owned()],
        chitose_runtime::topics::Partitions {
            raw: 12,
            pseudo: 6,
            dlq: 6,
        },
        1,
        chitose_runtime::topics::RetentionDays {
            raw: 7,
            pseudo: 7,
            dlq: 7,
        },
        &Default::default(),
    );
    for t in &layout {
        mock.create_topic(&t.name, t.partitions, 1).unwrap();
    }
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
    // The loading producer's threads would go on polling (and billing this
    // process) through the measure.
    drop(p);
    if let Some(c) = compression {
        cfg.kafka.compression = c.into();
    }
    let transformer = chitose_transform::service::build(
        &cfg,
        vec![
            ("CHITOSE_KEY_PSEUDONYM_2026A".into(), "ab".repeat(32)),
            ("CHITOSE_KEY_EVENT_2026A".into(), "cd".repeat(32)),
        ],
    )
    .unwrap();
    let broker = threads_cpu_seconds("rdk:mock");
    let mut m = measure(
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
                let metrics = chitose_transform::metrics::TransformMetrics::new();
                let h = tokio::spawn(chitose_transform::service::run_with(
                    cfg.clone(),
                    transformer,
                    metrics.clone(),
                    shutdown,
                ));
                // Stop once the service has committed every record: it counts
                // written and dead-lettered records after each transaction's
                // commit (reading the outputs back would bill a consumer's
                // work to the service; MockCluster does not answer
                // OffsetFetch for transactional commits).
                let counted = |v: &prometheus::IntCounterVec| -> u64 {
                    use prometheus::core::Collector;
                    v.collect()
                        .iter()
                        .flat_map(|f| f.get_metric())
                        .map(|m| m.get_counter().get_value() as u64)
                        .sum()
                };
                while counted(&metrics.processed) + counted(&metrics.dlq) < n_mock as u64 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                trigger.trigger();
                let s = h.await.unwrap().unwrap();
                assert_eq!(s.written + s.dlq, n_mock as u64, "{s:?}");
            });
        },
    );

    // MockCluster's broker thread runs in this process; a deployed
    // transform's broker is elsewhere, so its CPU is not the service's.
    let broker = threads_cpu_seconds("rdk:mock") - broker;
    m.cpu -= broker;
    (m, broker)
}

/// The pure measures: per CPU-second, its ratio to the floor in the same
/// run, and allocations per event; median, min and max over the runs.
fn print_pure(n: usize, bytes: usize, runs: &[[(Measure, f64); 3]], more_rows: &str) {
    println!(
        "transform benchmark: {n} raw events, {:.0} bytes/event of Avro, {} cores, {} interleaved runs",
        bytes as f64 / n as f64,
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(0),
        runs.len()
    );
    let stats = |v: Vec<f64>| {
        let s = Spread::of(v);
        (s.median, s.min, s.max)
    };
    println!(
        "| what | events per CPU-s median | min | max | × floor median | min | max | allocations per event |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for i in 0..3 {
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
    print!("{more_rows}");
    let (p, _, _) = stats(runs.iter().map(|r| r[2].0.per_cpu()).collect());
    let ratio = |a: usize, b: usize| {
        stats(
            runs.iter()
                .map(|r| r[a].0.per_cpu() / r[b].0.per_cpu())
                .collect(),
        )
    };
    let (x, _, _) = ratio(2, 0);
    let (q, ql, qh) = ratio(2, 1);
    println!("pure transform per core: {p:.0} events/s = {x:.2}x the floor (medians)");
    println!(
        "pure transform / the floor with what no policy drops: {q:.2}x (median; min {ql:.2}, max {qh:.2})"
    );
}
