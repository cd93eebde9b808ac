//! Chaos: the whole pipeline on nisshi (SQLite storage) and moto S3, with
//! workers killed with SIGKILL at random moments and the broker restarted
//! once. At the end the lake holds every accepted event exactly once,
//! checked with DuckDB against the generator's own ledger of what it sent.
//!
//! Short in the test suite (`CHITOSE_CHAOS_ROUNDS`, default 4); the long
//! form is `tests/chaos.sh` (20 rounds). `CHITOSE_CHAOS_SEED` replays a run.

use crate::helpers;

use chitose_ingest::simulate::{Generator, SimConfig, Verdict};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HUBS: [&str; 2] = ["27", "28"];

/// The pipeline's worker processes, restartable.
struct Workers {
    bootstrap: String,
    dir: PathBuf,
    lake: String,
    s3: String,
    ops: BTreeMap<&'static str, String>,
    running: BTreeMap<&'static str, Child>,
    starts: u32,
}

impl Workers {
    fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn spawn(&mut self, name: &'static str) {
        let mut c = Command::new(env!("CARGO_BIN_EXE_chitose"));
        let ops = self.ops[name].clone();
        match name {
            "ingest-27" | "ingest-28" => {
                let pref = &name[7..];
                c.args(["ingest", "--source", "files", "--prefecture", pref, "--dir"])
                    .arg(self.dir.join(format!("hub-{pref}")));
            }
            "transform" => {
                c.args(["transform", "--keys-dir"])
                    .arg(self.dir.join("keys"));
            }
            "sink" => {
                c.args(["sink", "--lake", &self.lake])
                    .envs(s3_env(&self.s3))
                    .env("CHITOSE_SINK__ROLL_AGE", "1500ms");
            }
            _ => unreachable!(),
        }
        if matches!(name, "transform" | "sink") {
            // A killed consumer's partitions move after 6 s, not 45 s.
            c.args([
                "-X",
                "session.timeout.ms=6000",
                "-X",
                "heartbeat.interval.ms=500",
            ]);
        }
        c.args(["--bootstrap", &self.bootstrap, "--ops-listen", &ops])
            .env("RUST_LOG", "info,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.log(name))
                    .unwrap(),
            );
        self.running.insert(name, c.spawn().unwrap());
        self.starts += 1;
    }

    fn kill9(&mut self, name: &str) {
        if let Some(mut c) = self.running.remove(name) {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    fn stop_all(&mut self) {
        for (name, c) in std::mem::take(&mut self.running) {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let mut c = c;
            let deadline = Instant::now() + Duration::from_secs(60);
            while c.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "{name} ignored SIGTERM");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.running) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// object_store's S3 settings for the moto server at `endpoint`.
fn s3_env(endpoint: &str) -> [(&'static str, String); 5] {
    [
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT", endpoint.into()),
        ("AWS_ALLOW_HTTP", "true".into()),
    ]
}

fn pending_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "ndjson"))
                .count()
        })
        .unwrap_or(0)
}

/// Rows the lake's Delta tables hold (`chitose lake verify`).
fn committed_rows(w: &Workers) -> Option<u64> {
    let out = Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args(["lake", "verify", "--json", "--lake", &w.lake])
        .envs(s3_env(&w.s3))
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        v["tables"]
            .as_object()?
            .values()
            .flat_map(|t| t["partitions"].as_object().unwrap().values())
            .map(|c| c["rows"].as_u64().unwrap_or(0))
            .sum(),
    )
}

#[test]
fn kill_9_rounds_and_a_broker_restart_lose_and_duplicate_nothing() {
    let rounds: u32 = std::env::var("CHITOSE_CHAOS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4);
    let files_per_hub: usize = (rounds as usize * 2).max(6);
    let seed: u64 = std::env::var("CHITOSE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("chaos: {rounds} rounds, seed {seed} (CHITOSE_CHAOS_SEED to replay)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);

    let broker = helpers::OwnBroker::start("chaos-broker");
    let s3 = helpers::moto();
    let bucket = helpers::create_bucket(&s3);
    let dir = helpers::scratch("chaos");
    for h in HUBS {
        std::fs::create_dir_all(dir.join(format!("hub-{h}"))).unwrap();
    }
    let st = Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args(["transform", "keygen", "--dir"])
        .arg(dir.join("keys"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let keys = helpers::keys_in(&dir.join("keys"));
    let st = Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args(["topics", "create", "--bootstrap", &broker.bootstrap])
        .args([
            "--prefectures",
            "27,28",
            "--raw-partitions",
            "3",
            "--pseudo-partitions",
            "3",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());

    let names: [&'static str; 4] = ["ingest-27", "ingest-28", "transform", "sink"];
    let mut w = Workers {
        bootstrap: broker.bootstrap.clone(),
        dir: dir.clone(),
        lake: format!("s3://{bucket}/lake"),
        s3: s3.clone(),
        ops: names
            .iter()
            .map(|n| (*n, format!("127.0.0.1:{}", helpers::free_port())))
            .collect(),
        running: BTreeMap::new(),
        starts: 0,
    };
    for n in names {
        w.spawn(n);
    }

    // The generator's ledger: every good event id it wrote, per hub.
    let mut gens: Vec<Generator> = HUBS
        .iter()
        .enumerate()
        .map(|(i, h)| {
            Generator::new(SimConfig {
                seed: seed ^ (i as u64 + 1),
                patients: 2_000,
                bad_share: 0.02,
                prefectures: HUBS.iter().map(|s| s.to_string()).collect(),
                hub: Some(h.to_string()),
                days: 60,
                ..SimConfig::default()
            })
            .unwrap()
        })
        .collect();
    let mut sent: BTreeSet<String> = BTreeSet::new();
    let mut bad = 0usize;
    let mut write_file = |n: usize, gens: &mut Vec<Generator>| {
        for (g, h) in gens.iter_mut().zip(HUBS) {
            let mut body = Vec::new();
            for _ in 0..400 {
                let line = g.next_line();
                match &line.verdict {
                    Verdict::Good { .. } => {
                        // The lake holds the keyed hash of the hub's id.
                        sent.insert(helpers::lake_event_id(&keys, &line.bytes));
                    }
                    Verdict::Bad(_) => bad += 1,
                }
                body.extend_from_slice(&line.bytes);
                body.push(b'\n');
            }
            // Written under a dot-name, then renamed: ingest reads whole files only.
            let hub = dir.join(format!("hub-{h}"));
            let tmp = hub.join(format!(".batch-{n:03}.ndjson"));
            std::fs::write(&tmp, &body).unwrap();
            std::fs::rename(&tmp, hub.join(format!("batch-{n:03}.ndjson"))).unwrap();
        }
    };

    // Files arrive while workers die.
    let mut written = 0;
    let broker_round = rounds / 2;
    for round in 0..rounds {
        while written < files_per_hub * (round as usize + 1) / rounds as usize {
            write_file(written, &mut gens);
            written += 1;
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(500..3000)));
        let victim = names[rng.random_range(0..names.len())];
        eprintln!("round {round}: kill -9 {victim}");
        w.kill9(victim);
        if round == broker_round {
            eprintln!("round {round}: broker restart");
            broker.stop();
            std::thread::sleep(Duration::from_millis(rng.random_range(500..2000)));
            broker.restart();
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1500)));
        w.spawn(victim);
    }
    while written < files_per_hub {
        write_file(written, &mut gens);
        written += 1;
    }

    // Drain: every file ingested, every accepted event committed in the lake.
    let expected = sent.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let pending: usize = HUBS
            .iter()
            .map(|h| pending_files(&dir.join(format!("hub-{h}"))))
            .sum();
        let rows = committed_rows(&w).unwrap_or(0);
        if pending == 0 && rows >= expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not drained: {pending} files pending, {rows} of {expected} rows committed; logs in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    w.stop_all();

    // The lake, as analysts read it.
    let lake = helpers::read_lake(&w.lake, Some(&s3));
    let mut ids: Vec<String> = Vec::new();
    for t in lake.as_object().unwrap().values() {
        ids.extend(
            t["event_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned()),
        );
    }
    let landed: BTreeSet<String> = ids.iter().cloned().collect();
    let duplicates = ids.len() - landed.len();
    let lost: Vec<_> = sent.difference(&landed).take(5).collect();
    let extra: Vec<_> = landed.difference(&sent).take(5).collect();
    eprintln!(
        "chaos: sent {} good + {bad} bad lines, {} worker starts; lake {} rows",
        sent.len(),
        w.starts,
        ids.len()
    );
    assert_eq!(duplicates, 0, "duplicates by event_id");
    assert!(
        lost.is_empty(),
        "lost {} events, e.g. {lost:?}",
        sent.len() - (landed.len() - extra.len())
    );
    assert!(extra.is_empty(), "events nobody sent: {extra:?}");
    assert_eq!(ids.len() as u64, expected);
    // Every Delta reader agrees: delta-rs (pyarrow), Polars, DuckDB.
    for (table, t) in lake.as_object().unwrap() {
        assert_eq!(t["pyarrow_rows"], t["duckdb_rows"], "{table}: {t}");
        assert_eq!(t["polars_rows"], t["duckdb_rows"], "{table}: {t}");
    }
    // Rejected lines were rejected, not lost: each is in a rejects file.
    let rejected: usize = HUBS
        .iter()
        .map(|h| {
            let r = dir.join(format!("hub-{h}/rejects"));
            std::fs::read_dir(&r)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
                        .sum::<usize>()
                })
                .unwrap_or(0)
        })
        .sum();
    assert!(rejected >= bad, "{rejected} rejects for {bad} bad lines");
    // And each table's log agrees with its files: nothing missing.
    let out = Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args(["lake", "verify", "--lake", &w.lake])
        .envs(s3_env(&s3))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lake verify: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
