//! How long a sink takes to find where to resume when a table has a long
//! history: a table of COMMITS commits (default 100 000), each one file
//! and one `txn` action per Kafka partition, as the sink writes them; a
//! checkpoint every `checkpoint_interval` (100) versions, as the sink
//! writes them. Measured: loading the newest snapshot and reading the
//! versions of 6 partitions, as an assignment does — with the
//! checkpoints, and from the bare JSON log for contrast.
//!
//! The history is written as delta-kernel would write it, but directly
//! (one JSON file per version), so making it takes seconds rather than
//! the hours 100 000 real commits would; the checkpoints are the kernel's.
//!
//!   cargo bench -p chitose-lake --bench recovery      (CHITOSE_BENCH_COMMITS=N)

use chitose_lake::Lake;
use std::io::Write;
use std::time::Instant;

const PARTITIONS: i64 = 6;

fn main() {
    let commits: u64 = std::env::var("CHITOSE_BENCH_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("chitose-recovery-{}", std::process::id()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let lake = Lake::open(dir.to_str().unwrap(), &Default::default()).unwrap();
    let table = lake.table("pseudonymized/t");
    let schema = std::sync::Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("event_id", arrow_schema::DataType::Utf8, true),
        arrow_schema::Field::new("prefecture", arrow_schema::DataType::Utf8, true),
    ]));
    rt.block_on(table.create_or_evolve(&schema, &["prefecture".to_owned()]))
        .unwrap();
    let log = dir.join("pseudonymized/t/_delta_log");
    let made = Instant::now();
    for v in 1..=commits {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(log.join(format!("{v:020}.json"))).unwrap(),
        );
        writeln!(
            f,
            r#"{{"commitInfo":{{"timestamp":{v},"operation":"WRITE","operationParameters":{{}},"engineInfo":"bench"}}}}"#
        )
        .unwrap();
        let p = (v as i64) % PARTITIONS;
        writeln!(
            f,
            r#"{{"txn":{{"appId":"chitose-sink:g:health.pseudo.t:{p}","version":{},"lastUpdated":{v}}}}}"#,
            v as i64 * 10
        )
        .unwrap();
        writeln!(
            f,
            r#"{{"add":{{"path":"prefecture=27/part-{v}.parquet","partitionValues":{{"prefecture":"27"}},"size":1000,"modificationTime":{v},"dataChange":true,"stats":"{{\"numRecords\":10}}"}}}}"#
        )
        .unwrap();
    }
    eprintln!(
        "recovery bench: {commits} commits written in {:.1} s",
        made.elapsed().as_secs_f64()
    );
    let ids: Vec<String> = (0..PARTITIONS)
        .map(|p| chitose_lake::layout::app_id("g", "health.pseudo.t", p as i32))
        .collect();
    let recover = || {
        rt.block_on(async {
            let t = Instant::now();
            let snap = table.load().await.unwrap().unwrap();
            let versions = table.app_versions(&snap, &ids).await.unwrap();
            assert!(versions.iter().all(Option::is_some));
            (t.elapsed().as_secs_f64(), snap.version())
        })
    };
    let (bare, v) = recover();
    assert_eq!(v, commits);
    // The sink's checkpoints: every 100 versions; the newest matters.
    let t = Instant::now();
    rt.block_on(async {
        let snap = table.load_at(commits - commits % 100).await.unwrap();
        table.checkpoint(&snap).await.unwrap();
    });
    let checkpoint = t.elapsed().as_secs_f64();
    let mut runs: Vec<f64> = (0..5).map(|_| recover().0).collect();
    runs.sort_by(f64::total_cmp);
    println!(
        "recovery of 6 partitions' versions from a log of {commits} commits: \
         with a checkpoint {:.3} s median (min {:.3}, max {:.3}, 5 runs); \
         from the bare JSON log {bare:.1} s (one run); writing the checkpoint {checkpoint:.1} s",
        runs[2], runs[0], runs[4]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
