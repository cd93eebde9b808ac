//! Sink throughput: `cargo bench -p chitose-sink --bench sink`.
//!
//! In one run, on the same pseudonymized records (SOE-framed Avro, all six
//! tables, as the transform writes them):
//! 1. raw: arrow-avro's Decoder into RecordBatches + parquet's ArrowWriter
//!    (zstd) into memory, one file per table — the library floor;
//! 2. the sink core: the same decode, plus lake partition keys, the split
//!    by partition, and the lake's writer settings (statistics,
//!    dictionaries, bloom filter) through object_store's in-memory store;
//! 3. the sink service catching up from MockCluster into a local Delta lake
//!    (and into moto S3 when `CHITOSE_TEST_S3` names one): buffers, rolls,
//!    commits, with the deployed defaults; stopped (its final roll
//!    included) once everything is read. MockCluster's broker thread is in
//!    this process; its CPU is measured and left out.
//!
//! `CHITOSE_BENCH_RUNS` (5) interleaved runs; rows per CPU-second ("per
//! core") with median, min and max, each as a ratio to raw in its own run.

use arrow_array::RecordBatch;
use chitose_lake::parquet::{FileWriter, properties};
use chitose_runtime::procstat::{measure, peak_rss_bytes, table, threads_cpu_seconds};
use chitose_schemas::catalog::SchemaStore;
use chitose_sink::core::{self, Schemas};
use std::collections::BTreeMap;
use std::sync::Arc;

/// (table, SOE bytes) of `n` generated events through the pure transform.
fn records(n: usize) -> Vec<(String, Vec<u8>)> {
    use chitose_transform::core::{Coords, Scratch};
    let t = chitose_transform::core::fixed_key_transformer("pseudonymized");
    let codec = chitose_schemas::RawCodec::new(SchemaStore::embedded());
    let mut g = chitose_ingest::simulate::Generator::new(chitose_ingest::simulate::SimConfig {
        seed: 7,
        patients: 20_000,
        days: 60,
        ..Default::default()
    })
    .unwrap();
    let now = chitose_schemas::codec::Timestamp::now();
    let mut s = Scratch::default();
    (0..n)
        .map(|i| {
            let mut raw = Vec::new();
            codec.encode_soe(&g.next_event(), &mut raw);
            let c = Coords {
                topic: "health.raw.27",
                partition: 0,
                offset: i as i64,
            };
            let o = t.transform(&raw, c, now, &mut s).unwrap();
            (o.event_type.symbol().to_owned(), s.value.clone())
        })
        .collect()
}

/// The sink service on a fresh lake, records already in the topics: from
/// start until every row is in the tables (catching up), stopped after.
/// Returns the measure (the mock broker's CPU excluded), the mean seconds
/// per roll (write + commit) and the broker's CPU seconds.
fn service(
    name: &str,
    n: usize,
    cfg: &chitose_sink::config::SinkConfig,
    lake_url: &str,
) -> (chitose_runtime::procstat::Measure, f64, f64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = cfg.clone();
    cfg.lake = lake_url.to_owned();
    cfg.group_id = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let metrics = chitose_sink::metrics::SinkMetrics::new();
    let broker = threads_cpu_seconds("rdk:mock");
    let mut m = measure(name, n as u64, || {
        rt.block_on(async {
            let (trigger, shutdown) = chitose_runtime::shutdown::Shutdown::new();
            let h = tokio::spawn(chitose_sink::service::run_with(
                cfg.clone(),
                metrics.clone(),
                shutdown,
            ));
            // Everything is read once the sink's buffers stop growing for
            // a second (its own gauge: reading the tables here would bill
            // snapshot loads to the service); the stop then rolls every
            // table, as a deployed sink does at its roll age. Stopped
            // early, the row count below fails.
            let (mut last, mut same) = (-1, 0);
            while same < 10 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                let b = metrics.buffered_bytes.get();
                same = if b > 0 && b == last { same + 1 } else { 0 };
                last = b;
            }
            trigger.trigger();
            let s = h.await.unwrap().unwrap();
            assert_eq!(s.rows, n as u64, "{s:?}");
        });
    });
    // MockCluster's broker thread serves the fetches in this process; a
    // deployed sink's broker runs elsewhere (bench/trickle's nisshi is
    // another process too), so its CPU is not the service's.
    let broker = threads_cpu_seconds("rdk:mock") - broker;
    m.cpu -= broker;
    let per_roll =
        metrics.flush.get_sample_sum() / (metrics.flush.get_sample_count().max(1) as f64);
    (m, per_roll, broker)
}

// Measured with the allocator the binary ships with.
chitose_runtime::global_allocator!();

fn main() {
    // As the `chitose` binary runs its services (runtime::alloc).
    chitose_runtime::alloc::without_huge_pages();
    let n: usize = std::env::var("CHITOSE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let runs: usize = std::env::var("CHITOSE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let msgs = records(n);
    let store = SchemaStore::embedded();
    let schemas = Schemas::new(&store);
    let mut by_table: BTreeMap<String, Vec<(i64, &[u8])>> = BTreeMap::new();
    for (i, (t, m)) in msgs.iter().enumerate() {
        by_table
            .entry(t.clone())
            .or_default()
            .push((i as i64, m.as_slice()));
    }
    let bytes: usize = msgs.iter().map(|(_, m)| m.len()).sum();
    // The records in MockCluster's topics, once, for every service run.
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    // The deployed defaults (roll 60 s, 192 MiB of buffers): catching up
    // writes one file per lake partition per roll, as in production.
    let mut cfg = chitose_sink::config::SinkConfig {
        ops_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Default::default()
    };
    cfg.kafka.bootstrap_servers = mock.bootstrap_servers();
    for t in by_table.keys() {
        mock.create_topic(&format!("health.pseudo.{t}"), 6, 1)
            .unwrap();
    }
    {
        use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
        let p: ThreadedProducer<_> = cfg.kafka.producer_config().create().unwrap();
        for (i, (t, m)) in msgs.iter().enumerate() {
            let topic = format!("health.pseudo.{t}");
            let key = (i % 1000).to_string();
            while p.send(BaseRecord::to(&topic).key(&key).payload(m)).is_err() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        p.flush(std::time::Duration::from_secs(60)).unwrap();
    }
    let s3 = std::env::var("CHITOSE_TEST_S3").ok();
    let mut raw_out = 0usize;
    let mut all: Vec<Vec<chitose_runtime::procstat::Measure>> = Vec::new();
    let mut rolls: Vec<(f64, f64)> = Vec::new();
    let mut brokers: Vec<f64> = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mem: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    // Interleaved: each run measures every variant once, so a slow minute
    // of the machine hits them alike.
    for run in 0..runs {
        let mut results = Vec::new();
        results.push(measure(
            "raw: arrow-avro decode + ArrowWriter zstd",
            n as u64,
            || {
                raw_out = 0;
                for rows in by_table.values() {
                    let mut d = schemas.decoder(8192);
                    let mut batches: Vec<RecordBatch> = Vec::new();
                    for (_, m) in rows {
                        d.decode(m).unwrap();
                        if d.batch_is_full() {
                            batches.extend(d.flush().unwrap());
                        }
                    }
                    batches.extend(d.flush().unwrap());
                    let props = parquet::file::properties::WriterProperties::builder()
                        .set_compression(parquet::basic::Compression::ZSTD(
                            parquet::basic::ZstdLevel::try_new(3).unwrap(),
                        ))
                        .build();
                    let mut w = parquet::arrow::ArrowWriter::try_new(
                        Vec::new(),
                        batches[0].schema(),
                        Some(props),
                    )
                    .unwrap();
                    for b in &batches {
                        w.write(b).unwrap();
                    }
                    raw_out += w.into_inner().unwrap().len();
                }
            },
        ));
        results.push(measure(
            "sink core: decode, partition, regroup, lake Parquet → object_store",
            n as u64,
            || {
                rt.block_on(async {
                    for (table, rows) in &by_table {
                        let mut d = schemas.decoder(8192);
                        let mut writers: BTreeMap<core::PartKey, FileWriter> = BTreeMap::new();
                        for part in rows.chunks(8192) {
                            let (chunks, err) = core::decode(&schemas, &mut d, part);
                            assert!(err.is_none(), "{err:?}");
                            // Grouped as the service does: all chunks of a
                            // decode at once, one interleave per lake partition.
                            let keys: Vec<_> = chunks
                                .iter()
                                .map(|c| core::key_columns(c, &[]).unwrap())
                                .collect();
                            let batches: Vec<RecordBatch> =
                                chunks.iter().map(|c| c.batch.clone()).collect();
                            {
                                for (k, b, _) in core::regroup(&batches, &keys) {
                                    if !writers.contains_key(&k) {
                                        let folder: Vec<&str> = k
                                            .iter()
                                            .map(|v| v.as_deref().unwrap_or("null"))
                                            .collect();
                                        let path = object_store::path::Path::from(format!(
                                            "{run}/{table}/{}/part.parquet",
                                            folder.join("/")
                                        ));
                                        writers.insert(
                                            k.clone(),
                                            FileWriter::create(
                                                mem.clone(),
                                                path,
                                                b.schema(),
                                                properties(128 * 1024, "chitose-bench"),
                                                5 << 20,
                                            )
                                            .unwrap(),
                                        );
                                    }
                                    writers.get_mut(&k).unwrap().write(&b).await.unwrap();
                                }
                            }
                        }
                        for (_, w) in writers {
                            w.close().await.unwrap();
                        }
                    }
                });
            },
        ));
        let local =
            std::env::temp_dir().join(format!("chitose-sink-bench-{}-{run}", std::process::id()));
        let (m, per_roll, broker) = service(
            "sink service ← MockCluster → local Delta lake (catching up)",
            n,
            &cfg,
            local.to_str().unwrap(),
        );
        results.push(m);
        let _ = std::fs::remove_dir_all(&local);
        let mut s3_roll = f64::NAN;
        if let Some(endpoint) = &s3 {
            // moto: a bucket per run, the roll's puts over HTTP.
            let bucket = format!("bench-{}", uuid::Uuid::new_v4().simple());
            let status = std::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
                .arg(format!("{endpoint}/{bucket}"))
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            assert_eq!(status, "200", "creating bucket {bucket} on {endpoint}");
            let mut c = cfg.clone();
            c.lake_options = [
                ("aws_endpoint", endpoint.as_str()),
                ("aws_allow_http", "true"),
                ("aws_region", "us-east-1"),
                ("aws_access_key_id", "test"),
                ("aws_secret_access_key", "test"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            let (m, r, _) = service(
                "sink service ← MockCluster → moto S3 Delta lake",
                n,
                &c,
                &format!("s3://{bucket}/lake"),
            );
            results.push(m);
            s3_roll = r;
        }
        rolls.push((per_roll, s3_roll));
        brokers.push(broker);
        all.push(results);
    }
    println!(
        "sink benchmark: {n} records, {:.0} bytes/record of Avro, raw Parquet {} bytes, {} cores, {runs} interleaved runs",
        bytes as f64 / n as f64,
        raw_out,
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(0)
    );
    // Per variant: rows per CPU-second and its ratio to raw in the same run.
    println!("| what | rows per CPU-s median | min | max | × raw median | min | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    for i in 0..all[0].len() {
        let per: Vec<f64> = all.iter().map(|r| r[i].per_cpu()).collect();
        let ratio: Vec<f64> = all
            .iter()
            .map(|r| r[i].per_cpu() / r[0].per_cpu())
            .collect();
        let (a, b, c) = stats(per);
        let (d, e, f) = stats(ratio);
        println!(
            "| {} | {a:.0} | {b:.0} | {c:.0} | {d:.2} | {e:.2} | {f:.2} |",
            all[0][i].name
        );
    }
    print!("{}", table(&all[all.len() / 2]));
    let (lr, _, _) = stats(rolls.iter().map(|r| r.0).collect());
    print!(
        "seconds per roll (one table: write every lake partition's file, commit): local median {lr:.3}"
    );
    if s3.is_some() {
        let (sr, smin, smax) = stats(rolls.iter().map(|r| r.1).collect());
        print!(", moto S3 median {sr:.3} (min {smin:.3}, max {smax:.3})");
    }
    println!();
    println!(
        "the service figures exclude MockCluster's broker thread (in this process; median {:.2} CPU-s a local run); peak RSS {} MiB",
        stats(brokers).0,
        peak_rss_bytes("self").unwrap_or(0) >> 20
    );
}
