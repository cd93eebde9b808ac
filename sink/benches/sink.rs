//! Sink throughput: `cargo bench -p chitose-sink --bench sink`.
//!
//! In one run, on the same pseudonymized records (SOE-framed Avro, all six
//! tables, as the transform writes them):
//! 1. raw: arrow-avro's Decoder into RecordBatches + parquet's ArrowWriter
//!    (zstd) into memory, one file per table — the library floor;
//! 2. the sink core: the same decode, plus lake partition keys, replay
//!    checks, the split by partition, and the lake's writer settings
//!    (statistics, dictionaries, bloom filter) through object_store's
//!    in-memory store with streaming uploads.
//!
//! Rows per CPU-second ("per core") and peak RSS. Compare within one run.

use arrow_array::RecordBatch;
use chitose_runtime::procstat::{measure, peak_rss_bytes, table};
use chitose_schemas::catalog::SchemaStore;
use chitose_sink::core::{self, Schemas};
use chitose_sink::writer::{FileWriter, properties};
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

/// Rows in committed files, from the ledger.
fn ledger_rows(lake: &std::path::Path) -> u64 {
    fn walk(d: &std::path::Path, total: &mut u64) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, total);
            } else if let Ok(Ok(v)) =
                std::fs::read(&p).map(|b| serde_json::from_slice::<serde_json::Value>(&b))
            {
                *total += v["files"]
                    .as_array()
                    .map_or(0, |f| f.iter().filter_map(|x| x["rows"].as_u64()).sum());
            }
        }
    }
    let mut total = 0;
    walk(&lake.join("_chitose/ledger"), &mut total);
    total
}

fn main() {
    let n: usize = std::env::var("CHITOSE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
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
    let mut results = Vec::new();
    let mut raw_out = 0usize;
    results.push(measure(
        "raw: arrow-avro decode + ArrowWriter zstd",
        n as u64,
        || {
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mem: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    results.push(measure(
        "sink core: decode, partition, split, lake Parquet → object_store",
        n as u64,
        || {
            rt.block_on(async {
                for (table, rows) in &by_table {
                    let mut d = schemas.decoder(8192);
                    let mut writers: BTreeMap<String, FileWriter> = BTreeMap::new();
                    for part in rows.chunks(8192) {
                        let (chunks, err) = core::decode(&schemas, &mut d, part);
                        assert!(err.is_none(), "{err:?}");
                        for c in chunks {
                            let keys = core::partition_keys(&c, &[]).unwrap();
                            let coords = core::source_coordinates(&c).unwrap();
                            let keep: Vec<bool> = coords.iter().map(|(_, o)| *o >= 0).collect();
                            for (k, b, _) in core::split(&c, &keys, &keep) {
                                if !writers.contains_key(&k) {
                                    let path = object_store::path::Path::from(format!(
                                        "{table}/{k}/part.parquet"
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
    // Through MockCluster: the sink service, records already in the topics.
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    let mut cfg = chitose_sink::config::SinkConfig {
        ops_listen: "127.0.0.1:0".into(),
        lake: std::env::temp_dir()
            .join(format!("chitose-sink-bench-{}", std::process::id()))
            .display()
            .to_string(),
        roll_age_ms: 2_000,
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
    let lake_dir = std::path::PathBuf::from(&cfg.lake);
    results.push(measure(
        "sink service ← MockCluster → local lake",
        n as u64,
        || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (trigger, shutdown) = chitose_runtime::shutdown::Shutdown::new();
                let h = tokio::spawn(chitose_sink::service::run(cfg.clone(), shutdown));
                // Every record is read once the rows landed plus the rows still
                // open reach n: stop then (SIGTERM-like), which commits the rest.
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    if ledger_rows(&lake_dir) >= n as u64 {
                        break;
                    }
                }
                trigger.trigger();
                let s = h.await.unwrap().unwrap();
                assert_eq!(s.rows, n as u64, "{s:?}");
            });
        },
    ));
    let _ = std::fs::remove_dir_all(&lake_dir);
    println!(
        "sink benchmark: {n} records, {:.0} bytes/record of Avro, raw Parquet {} bytes, {} cores",
        bytes as f64 / n as f64,
        raw_out,
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(0)
    );
    print!("{}", table(&results));
    println!(
        "sink core per core: {:.0} rows/s = {:.2}x raw arrow-avro + Parquet; peak RSS {} MiB",
        results[1].per_cpu(),
        results[1].per_cpu() / results[0].per_cpu(),
        peak_rss_bytes("self").unwrap_or(0) >> 20
    );
}
