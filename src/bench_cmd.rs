//! `chitose bench`: the pipeline end to end on a real broker against two
//! references on the same broker and messages, and the sink against two
//! Python consumers doing its job on the same topics (bench/python_sink.py:
//! confluent-kafka with fastavro and pyarrow, or with Polars). Each service runs as its own process, so its CPU time
//! and peak RSS are its own.
//!
//! The references move the same messages with no work:
//! - one hop: produce (idempotent, acks=all, lz4, as ingest does) while a
//!   read_committed consumer reads them back;
//! - a two-hop null pipeline, the shape of the real one: produce; a hop
//!   that consumes and produces in transactions of the transform's size,
//!   routing by the message's schema fingerprint to as many topics as the
//!   transform writes, offsets committed in the transaction; a
//!   read_committed consumer at the end.
//!
//! Consumers join their groups before the clock starts, in every phase.
//! The phases run in turn, `--runs` times (interleaved, so a slow minute of
//! the machine hits all of them); the report gives median, min and max of
//! each figure and of the per-run ratios, the broker's CPU per phase when
//! `--broker-pid` names it, and librdkafka's request counts of the last
//! run. `bench/run` adds the pure cores (`cargo bench`) and writes
//! docs/benchmarks.md.

use anyhow::{Context, Result, bail};
use chitose_ingest::simulate::{Generator, SimConfig, Verdict};
use chitose_runtime::batch_producer::BatchProducer;
use chitose_runtime::kafka::KafkaSettings;
use chitose_runtime::procstat::{Spread, cpu_seconds, cpu_seconds_of, peak_rss_bytes};
use chitose_schemas::catalog::SchemaStore;
use clap::Args;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `chitose bench` flags.
#[derive(Args)]
pub struct BenchArgs {
    /// A real Kafka-compatible broker (bench/run starts nisshi), and how to
    /// reach it (TLS, SASL: the same settings as every command).
    #[command(flatten)]
    kafka: crate::kafka_args::KafkaArgs,
    /// Events the simulated hub sends.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Interleaved runs of every phase (median, min and max are reported).
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// The broker's process id on this machine, for its CPU per phase
    /// (bench/run passes nisshi's).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Python with confluent-kafka, fastavro, pyarrow and polars, for the baselines
    /// (skipped when absent).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Scratch folder (keys, lake, baseline output).
    #[arg(long, default_value = "target/bench")]
    work: PathBuf,
    /// After the measured runs, one more pipeline run (not counted) with
    /// `perf record` (DWARF call graphs) attached to each service, writing
    /// `<service>.perf.data` here; bench/run turns them into flame graphs.
    #[arg(long)]
    profile: Option<PathBuf>,
}

struct Proc {
    name: &'static str,
    child: std::process::Child,
}

impl Proc {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

/// A service of the bench stops with its handle, also when a phase fails
/// half-way (it would otherwise keep running and skew the next phase).
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` free loopback addresses for the services' ops endpoints.
fn ops_addresses(n: usize) -> Result<Vec<String>> {
    (0..n)
        .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
        .collect()
}

fn scrape(addr: &str, name: &str) -> f64 {
    metrics_text(addr).map_or(0.0, |t| sum_where(&t, name, ""))
}

/// A service's `/metrics` text (None when it is gone).
fn metrics_text(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    use std::io::{Read, Write};
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The sum of `name`'s samples whose labels contain `labels` ("" = all).
fn sum_where(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.is_empty() || l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `q` quantile of Prometheus histogram `name` in `text`, as
/// Prometheus' histogram_quantile computes it: linear within the bucket
/// the rank falls in (so no finer than the buckets).
fn histogram_quantile(text: &str, name: &str, q: f64) -> f64 {
    let bucket = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&bucket))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let Some(&(_, total)) = buckets.last() else {
        return 0.0;
    };
    let rank = q * total;
    let mut below = (0.0, 0.0);
    for &(le, count) in &buckets {
        if count >= rank {
            if le.is_infinite() {
                return below.0;
            }
            let span = count - below.1;
            return below.0
                + (le - below.0)
                    * if span > 0.0 {
                        (rank - below.1) / span
                    } else {
                        0.0
                    };
        }
        below = (le, count);
    }
    below.0
}

/// What a stage's clients asked the broker for, from librdkafka's
/// statistics in its `/metrics` text: a table row per request type sent,
/// with messages per request for Produce and Fetch.
fn kafka_requests(stage: &str, text: &str) -> String {
    use chitose_runtime::client_stats::REQUESTS;
    let requests = format!("chitose_{stage}_kafka_requests_total");
    let messages = format!("chitose_{stage}_kafka_messages_total");
    let mut out = String::new();
    for client in ["producer", "consumer"] {
        for r in REQUESTS.iter().chain(&["other"]) {
            let n = sum_where(
                text,
                &requests,
                &format!("client=\"{client}\",request=\"{r}\""),
            );
            if n <= 0.0 {
                continue;
            }
            let per = match *r {
                "Produce" | "Fetch" => {
                    let dir = if *r == "Produce" { "sent" } else { "received" };
                    let m = sum_where(
                        text,
                        &messages,
                        &format!("client=\"{client}\",direction=\"{dir}\""),
                    );
                    format!("{:.1}", m / n)
                }
                _ => String::new(),
            };
            out.push_str(&format!("| {stage} | {client} | {r} | {n:.0} | {per} |\n"));
        }
    }
    out
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The wall, CPU and broker CPU of one phase.
#[derive(Default, Clone, Copy)]
struct Phase {
    wall: f64,
    /// CPU seconds of the processes doing the phase's work (the broker's
    /// excluded).
    cpu: f64,
    /// The broker's CPU seconds over the phase (0 without `--broker-pid`).
    broker: f64,
}

/// A consumer landing the pseudonymized topics as Parquet.
#[derive(Default, Clone, Copy)]
struct Landing {
    rows: f64,
    cpu: f64,
    rss_mib: f64,
    files: f64,
}

impl Landing {
    fn per_cpu(&self) -> f64 {
        self.rows / self.cpu.max(1e-9)
    }
}

/// One run of every phase.
#[derive(Default)]
struct RunFigures {
    one_hop: Phase,
    two_hop: Phase,
    pipeline: Phase,
    landed: f64,
    service_cpu: BTreeMap<&'static str, f64>,
    service_rss: BTreeMap<&'static str, u64>,
    requests: String,
    sink_during: Landing,
    catchup: Landing,
    python: BTreeMap<&'static str, Landing>,
    steady: Steady,
}

/// The pipeline fed at a steady rate: how fresh the lake is.
#[derive(Default, Clone, Copy)]
struct Steady {
    /// Events per second ingest reached.
    rate: f64,
    /// Sink freshness quantiles (record written by the transform → row
    /// visible in the lake), seconds.
    p50: f64,
    p99: f64,
    /// The transform's latency quantiles (a batch's oldest raw record
    /// → the batch's commit), seconds: the leg before the sink's.
    t50: f64,
    t99: f64,
}

/// What every run shares.
struct Bench<'a> {
    a: &'a BenchArgs,
    exe: PathBuf,
    kafka: KafkaSettings,
    conn: Vec<String>,
    rt: tokio::runtime::Runtime,
    keys: PathBuf,
    /// The messages ingest would produce (key, single-object-encoded Avro).
    messages: Vec<(String, Vec<u8>)>,
    /// Event types among the messages: the null pipeline writes as many
    /// topics as the transform does.
    types: usize,
}

const PYTHON_MODES: [&str; 2] = ["naive", "columnar"];

/// The steady phase: a hub sending this many events a second …
const STEADY_RATE: u64 = 1_000;
/// … for this long, into a sink that rolls this often (the default, 60 s,
/// makes freshness about the roll age, and a phase of several minutes).
const STEADY_SECONDS: u64 = 30;
const STEADY_ROLL: &str = "5s";

/// Runs `chitose bench`.
pub fn run(a: BenchArgs) -> Result<ExitCode> {
    if a.runs == 0 {
        bail!("--runs: expected at least 1, found 0");
    }
    let id = uuid_like();
    let work = a.work.join(format!("bench{id}"));
    std::fs::create_dir_all(&work)?;

    // The messages ingest would produce: generated events, SOE-encoded.
    let mut generator = Generator::new(SimConfig {
        seed: 2026,
        prefectures: vec!["27".into()],
        hub: Some("27".into()),
        ..SimConfig::default()
    })?;
    let edge = chitose_ingest::edge::Edge::new(&SchemaStore::embedded(), Some("27".into()));
    let now = chitose_schemas::codec::Timestamp::now();
    let mut messages: Vec<(String, Vec<u8>)> = Vec::with_capacity(a.events as usize);
    let mut types = std::collections::BTreeSet::new();
    while messages.len() < a.events as usize {
        let line = generator.next_line();
        if let Verdict::Good { .. } = line.verdict
            && let Ok(acc) = edge.accept(&line.bytes, now)
        {
            types.insert(acc.event.event_type.symbol());
            messages.push((acc.event.patient.local_patient_id.clone(), acc.message));
        }
    }

    let keys = work.join("keys");
    let exe = std::env::current_exe()?;
    let st = Command::new(&exe)
        .args(["transform", "keygen", "--dir"])
        .arg(&keys)
        .stdout(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("keygen failed");
    }
    let b = Bench {
        a: &a,
        exe,
        kafka: a.kafka.settings()?,
        conn: a.kafka.child_args(),
        rt: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        keys,
        messages,
        types: types.len(),
    };
    let mut runs = Vec::with_capacity(a.runs as usize);
    for r in 0..a.runs {
        eprintln!("bench: run {} of {}", r + 1, a.runs);
        let dir = work.join(format!("run{r}"));
        std::fs::create_dir_all(&dir)?;
        runs.push(b.run_once(&format!("bench{id}r{r}"), &dir)?);
    }
    b.report(&runs);
    if let Some(out) = &a.profile {
        let dir = work.join("profile");
        std::fs::create_dir_all(&dir)?;
        b.profile(&format!("bench{id}p"), &dir, out)
            .context("the profiled run")?;
    }
    Ok(ExitCode::SUCCESS)
}

impl Bench<'_> {
    fn broker_cpu(&self) -> f64 {
        self.a
            .broker_pid
            .map_or(0.0, |p| cpu_seconds_of(&p.to_string()))
    }

    fn run_once(&self, prefix: &str, dir: &Path) -> Result<RunFigures> {
        let mut f = RunFigures {
            one_hop: self.null_pipeline(prefix, 1)?,
            two_hop: self.null_pipeline(prefix, 2)?,
            ..RunFigures::default()
        };
        self.pipeline(prefix, dir, &mut f)?;
        f.steady = self.steady(&format!("{prefix}s"), dir)?;
        if let Some(py) = &self.a.python {
            for mode in PYTHON_MODES {
                let l = self
                    .python(py, prefix, dir, f.landed, mode)
                    .with_context(|| format!("the {mode} Python baseline"))?;
                f.python.insert(mode, l);
            }
        }
        Ok(f)
    }

    /// The references: `hops` 1 is produce while a consumer reads; 2 adds
    /// a transactional consume → produce hop between them.
    fn null_pipeline(&self, prefix: &str, hops: u8) -> Result<Phase> {
        let n = self.messages.len();
        let input = format!("{prefix}.null{hops}.in");
        let outputs: Vec<String> = if hops == 1 {
            vec![input.clone()]
        } else {
            (0..self.types)
                .map(|i| format!("{prefix}.null2.out{i}"))
                .collect()
        };
        let mut topics: Vec<(&str, i32)> = vec![(input.as_str(), 6)];
        if hops == 2 {
            topics.extend(outputs.iter().map(|t| (t.as_str(), 6)));
        }
        self.rt
            .block_on(self.kafka.ensure_topics(&topics))
            .context("creating the reference topics")?;
        let ready = AtomicUsize::new(0);
        let consumers = usize::from(hops);
        let until = Until {
            deadline: Instant::now() + Duration::from_secs(900),
            abort: AtomicBool::new(false),
        };
        std::thread::scope(|s| -> Result<Phase> {
            let hop = (hops == 2).then(|| {
                s.spawn(|| {
                    until.on_error(null_hop(
                        &self.kafka,
                        &format!("{prefix}-null-hop"),
                        &input,
                        &outputs,
                        n,
                        &ready,
                        &until,
                    ))
                })
            });
            let reader = s.spawn(|| {
                until.on_error(read_all(
                    &self.kafka,
                    &format!("{prefix}-null{hops}-reader"),
                    &outputs,
                    n,
                    &ready,
                    &until,
                ))
            });
            let measured = (|| -> Result<(Instant, f64, f64)> {
                while ready.load(Ordering::SeqCst) < consumers {
                    if until.over() || reader.is_finished() {
                        bail!("the reference's consumers did not join their groups");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let (t0, c0, b0) = (Instant::now(), cpu_seconds(), self.broker_cpu());
                produce_all(&self.kafka, &input, &self.messages)?;
                Ok((t0, c0, b0))
            })();
            // On failure the threads stop now, not at the deadline (the
            // scope waits for them).
            let measured = until.on_error(measured);
            let end = reader
                .join()
                .map_err(|_| anyhow::anyhow!("the reference's reader panicked"))?;
            if let Some(h) = hop {
                h.join()
                    .map_err(|_| anyhow::anyhow!("the reference's hop panicked"))??;
            }
            let (t0, c0, b0) = measured?;
            Ok(Phase {
                wall: end?.duration_since(t0).as_secs_f64(),
                cpu: cpu_seconds() - c0,
                broker: self.broker_cpu() - b0,
            })
        })
    }

    fn spawn(
        &self,
        dir: &Path,
        name: &'static str,
        args: Vec<String>,
        env: Vec<(&str, String)>,
    ) -> Result<Proc> {
        let child = Command::new(&self.exe)
            .args(args)
            .args(&self.conn)
            .envs(env)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?)
            .spawn()?;
        Ok(Proc { name, child })
    }

    /// Creates the topics of `prefix` and starts a transform and a sink on
    /// them (the sink rolling at `roll_age`), named `names` (for logs).
    fn start_stages(
        &self,
        prefix: &str,
        dir: &Path,
        ops: [&str; 2],
        roll_age: &str,
        names: [&'static str; 2],
    ) -> Result<Vec<Proc>> {
        use chitose_runtime::topics;
        let specs = topics::layout(
            prefix,
            &["27".to_owned()],
            topics::Partitions {
                raw: 6,
                pseudo: 6,
                dlq: 1,
            },
            1,
            topics::RetentionDays {
                raw: 1,
                pseudo: 1,
                dlq: 1,
            },
            &BTreeMap::new(),
        );
        self.rt
            .block_on(self.kafka.create_topics(&specs))
            .context("creating the bench topics")?;
        let bootstrap = &self.kafka.bootstrap_servers;
        let s = |x: &str| x.to_owned();
        Ok(vec![
            self.spawn(
                dir,
                names[0],
                vec![
                    s("transform"),
                    s("--bootstrap"),
                    bootstrap.clone(),
                    s("--keys-dir"),
                    self.keys.display().to_string(),
                    s("--ops-listen"),
                    s(ops[0]),
                ],
                vec![
                    (
                        "CHITOSE_TRANSFORM__INPUT_PATTERN",
                        format!(r"^{prefix}\.raw\..+"),
                    ),
                    (
                        "CHITOSE_TRANSFORM__OUTPUT_PREFIX",
                        format!("{prefix}.pseudo."),
                    ),
                    ("CHITOSE_TRANSFORM__DLQ_TOPIC", format!("{prefix}.dlq")),
                    ("CHITOSE_TRANSFORM__GROUP_ID", format!("{prefix}-transform")),
                ],
            )?,
            self.start_sink(prefix, dir, ops[1], roll_age, names[1])?,
        ])
    }

    /// A sink of `prefix`'s pseudonymized topics into its own lake and
    /// group (both named after `name`), rolling at `roll_age`.
    fn start_sink(
        &self,
        prefix: &str,
        dir: &Path,
        ops: &str,
        roll_age: &str,
        name: &'static str,
    ) -> Result<Proc> {
        let s = |x: &str| x.to_owned();
        self.spawn(
            dir,
            name,
            vec![
                s("sink"),
                s("--bootstrap"),
                self.kafka.bootstrap_servers.clone(),
                s("--lake"),
                dir.join(format!("lake-{name}")).display().to_string(),
                s("--ops-listen"),
                s(ops),
            ],
            vec![
                (
                    "CHITOSE_SINK__INPUT_PATTERN",
                    format!(r"^{prefix}\.pseudo\..+"),
                ),
                ("CHITOSE_SINK__GROUP_ID", format!("{prefix}-{name}")),
                ("CHITOSE_SINK__ROLL_AGE", s(roll_age)),
            ],
        )
    }

    /// The hub's ingest: `events` simulated events at `rate` a second (0:
    /// as fast as it can) into `prefix`'s raw topic.
    fn start_ingest(
        &self,
        prefix: &str,
        dir: &Path,
        ops: &str,
        events: u64,
        rate: u64,
        name: &'static str,
    ) -> Result<Proc> {
        let s = |x: &str| x.to_owned();
        self.spawn(
            dir,
            name,
            vec![
                s("ingest"),
                s("--source"),
                s("simulate"),
                s("--prefecture"),
                s("27"),
                s("--events"),
                events.to_string(),
                s("--rate"),
                rate.to_string(),
                s("--seed"),
                s("2026"),
                s("--bootstrap"),
                self.kafka.bootstrap_servers.clone(),
                s("--ops-listen"),
                s(ops),
                // Ingest exits when it has sent --events: statistics every
                // second, so its last report is close to its end.
                s("-X"),
                s("statistics.interval.ms=1000"),
            ],
            vec![(
                "CHITOSE_INGEST__TOPIC",
                format!("{prefix}.raw.{{prefecture}}"),
            )],
        )
    }

    /// chitose itself: transform and sink running, then the hub sends;
    /// afterwards a second sink catches up on the same topics.
    fn pipeline(&self, prefix: &str, dir: &Path, f: &mut RunFigures) -> Result<()> {
        let ops = ops_addresses(3)?;
        let mut procs =
            self.start_stages(prefix, dir, [&ops[1], &ops[2]], "2s", ["transform", "sink"])?;
        // Give both time to join their groups before the clock starts.
        std::thread::sleep(Duration::from_secs(5));
        let (t0, b0) = (Instant::now(), self.broker_cpu());
        procs.insert(
            0,
            self.start_ingest(prefix, dir, &ops[0], self.a.events, 0, "ingest")?,
        );
        // CPU already spent by transform and sink while they joined.
        let idle: BTreeMap<&str, f64> = procs[1..]
            .iter()
            .map(|p| (p.name, cpu_seconds_of(&p.pid())))
            .collect();
        let mut accepted = 0.0;
        let mut ingest_metrics = String::new();
        let mut landed;
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            for p in &procs {
                if let Some(b) = peak_rss_bytes(&p.pid()) {
                    f.service_rss.insert(p.name, b);
                    f.service_cpu.insert(
                        p.name,
                        cpu_seconds_of(&p.pid()) - idle.get(p.name).copied().unwrap_or(0.0),
                    );
                }
            }
            // Ingest exits after --events, and its /metrics with it: its
            // client statistics are kept from its last scrape.
            if let Some(t) = metrics_text(&ops[0]) {
                accepted = sum_where(
                    &t,
                    chitose_ingest::metrics::names::EVENTS_ACCEPTED_TOTAL,
                    "",
                )
                .max(accepted);
                ingest_metrics = t;
            }
            // Ingest stops after --events: its last line has the final count.
            if let Some(st) = procs[0].child.try_wait()? {
                if !st.success() {
                    bail!("ingest failed: see {}", dir.join("ingest.log").display());
                }
                let log = std::fs::read_to_string(dir.join("ingest.log"))?;
                if let Some(n) = log.lines().rev().find_map(|l| {
                    l.split("accepted ")
                        .nth(1)?
                        .split(',')
                        .next()?
                        .trim()
                        .parse::<f64>()
                        .ok()
                }) {
                    accepted = n;
                }
            }
            landed = scrape(&ops[2], chitose_sink::metrics::names::ROWS_TOTAL);
            if accepted >= self.a.events as f64 && landed >= accepted {
                break;
            }
            if Instant::now() > deadline {
                bail!("pipeline did not land {accepted} events (landed {landed})");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        f.pipeline = Phase {
            wall: t0.elapsed().as_secs_f64(),
            cpu: f.service_cpu.values().sum(),
            broker: self.broker_cpu() - b0,
        };
        f.landed = landed;
        f.sink_during = Landing {
            rows: landed,
            cpu: f.service_cpu.get("sink").copied().unwrap_or(0.0),
            rss_mib: mib(f.service_rss.get("sink").copied().unwrap_or(0)),
            files: scrape(&ops[2], chitose_sink::metrics::names::FILES_TOTAL),
        };
        // librdkafka reports every 5 s: one more report covers the run's
        // end. (CPU was read above; the wait costs the figures nothing.)
        std::thread::sleep(Duration::from_millis(5_500));
        f.requests = format!(
            "{}{}{}",
            kafka_requests("ingest", &ingest_metrics),
            kafka_requests("transform", &metrics_text(&ops[1]).unwrap_or_default()),
            kafka_requests("sink", &metrics_text(&ops[2]).unwrap_or_default()),
        );
        drop(procs);

        // The sink again, catching up on the same topics in bulk (a fresh
        // group and lake): the conditions the Python baselines get.
        let catchup_ops = format!("127.0.0.1:{}", free_port()?);
        let catchup = self.start_sink(prefix, dir, &catchup_ops, "5s", "sink-catchup")?;
        let t3 = Instant::now();
        loop {
            if let Some(b) = peak_rss_bytes(&catchup.pid()) {
                f.catchup.rss_mib = mib(b);
                f.catchup.cpu = cpu_seconds_of(&catchup.pid());
            }
            if scrape(&catchup_ops, chitose_sink::metrics::names::ROWS_TOTAL) >= landed {
                break;
            }
            if t3.elapsed() > Duration::from_secs(600) {
                bail!("the catch-up sink did not land {landed} rows");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        f.catchup.rows = landed;
        f.catchup.files = scrape(&catchup_ops, chitose_sink::metrics::names::FILES_TOTAL);
        Ok(())
    }

    /// The pipeline at a steady `STEADY_RATE` events a second for
    /// `STEADY_SECONDS`, the sink rolling every `STEADY_ROLL`: the sink's
    /// freshness and the transform's latency histograms at the end.
    fn steady(&self, prefix: &str, dir: &Path) -> Result<Steady> {
        let ops = ops_addresses(3)?;
        let procs = self.start_stages(
            prefix,
            dir,
            [&ops[1], &ops[2]],
            STEADY_ROLL,
            ["transform-steady", "sink-steady"],
        )?;
        std::thread::sleep(Duration::from_secs(5));
        let events = STEADY_RATE * STEADY_SECONDS;
        let t0 = Instant::now();
        let mut ingest =
            self.start_ingest(prefix, dir, &ops[0], events, STEADY_RATE, "ingest-steady")?;
        let mut sent_s = 0.0;
        let deadline = Instant::now() + Duration::from_secs(STEADY_SECONDS * 4 + 120);
        let result = loop {
            if sent_s == 0.0 && ingest.child.try_wait()?.is_some() {
                sent_s = t0.elapsed().as_secs_f64();
            }
            let sink = metrics_text(&ops[2]).unwrap_or_default();
            if sent_s > 0.0
                && sum_where(&sink, chitose_sink::metrics::names::ROWS_TOTAL, "") >= events as f64
            {
                let q = |q| {
                    histogram_quantile(&sink, chitose_sink::metrics::names::FRESHNESS_SECONDS, q)
                };
                let transform = metrics_text(&ops[1]).unwrap_or_default();
                let t = |q| {
                    histogram_quantile(
                        &transform,
                        chitose_transform::metrics::names::LATENCY_SECONDS,
                        q,
                    )
                };
                break Ok(Steady {
                    rate: events as f64 / sent_s,
                    p50: q(0.5),
                    p99: q(0.99),
                    t50: t(0.5),
                    t99: t(0.99),
                });
            }
            if Instant::now() > deadline {
                break Err(anyhow::anyhow!(
                    "the steady phase did not land {events} events; see {}",
                    dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        drop((ingest, procs));
        result
    }

    /// The pipeline once more, each service under `perf record -p`
    /// (attached after start, so the CPU figures of the measured runs
    /// never include perf): `<service>.perf.data` in `out`.
    fn profile(&self, prefix: &str, dir: &Path, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out)?;
        let ops = ops_addresses(3)?;
        let mut procs =
            self.start_stages(prefix, dir, [&ops[1], &ops[2]], "2s", ["transform", "sink"])?;
        std::thread::sleep(Duration::from_secs(5));
        procs.insert(
            0,
            self.start_ingest(prefix, dir, &ops[0], self.a.events, 0, "ingest")?,
        );
        let mut perfs = Vec::new();
        for p in &procs {
            let child = Command::new("perf")
                .args(["record", "-F", "199", "--call-graph", "dwarf,16384", "-o"])
                .arg(out.join(format!("{}.perf.data", p.name)))
                .args(["-p", &p.pid()])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(
                    dir.join(format!("perf-{}.log", p.name)),
                )?)
                .spawn()
                .context("starting perf (is it installed and allowed: perf_event_paranoid?)")?;
            perfs.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(1800);
        let landed = loop {
            let landed = scrape(&ops[2], chitose_sink::metrics::names::ROWS_TOTAL);
            if landed >= self.messages.len() as f64 || Instant::now() > deadline {
                break landed;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        // perf writes its file when interrupted (or when its process ends,
        // as ingest's does).
        for perf in &mut perfs {
            let _ = Command::new("kill")
                .args(["-INT", &perf.id().to_string()])
                .status();
            let _ = perf.wait();
        }
        drop(procs);
        eprintln!(
            "bench: profiled run landed {landed} rows; perf data in {}",
            out.display()
        );
        Ok(())
    }

    /// bench/python_sink.py in `mode` on the run's pseudonymized topics.
    fn python(
        &self,
        py: &Path,
        prefix: &str,
        dir: &Path,
        rows: f64,
        mode: &str,
    ) -> Result<Landing> {
        let schema_dir = dir.join("pseudo-avsc");
        std::fs::create_dir_all(&schema_dir)?;
        for e in SchemaStore::embedded()
            .iter()
            .filter(|e| e.full_name.starts_with("chitose.pseudo."))
        {
            let table = chitose_sink::core::table_of(&e.full_name);
            std::fs::write(schema_dir.join(format!("{table}.avsc")), &e.text)?;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/python_sink.py");
        let out = Command::new(py)
            .arg(script)
            .args([
                &self.kafka.bootstrap_servers,
                &format!("{prefix}.pseudo."),
                &(rows as u64).to_string(),
            ])
            .arg(dir.join(format!("python-{mode}")))
            .arg(&schema_dir)
            .arg(mode)
            .output()?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr));
        }
        let p: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let num = |k: &str| p[k].as_f64().unwrap_or(0.0);
        if num("rows") < rows {
            bail!("read {} of {rows} rows", num("rows"));
        }
        Ok(Landing {
            rows: num("rows"),
            cpu: num("cpu_s"),
            rss_mib: num("peak_rss_mb"),
            files: num("files"),
        })
    }

    fn report(&self, runs: &[RunFigures]) {
        let n = self.messages.len() as f64;
        let bytes: usize = self.messages.iter().map(|(_, m)| m.len()).sum();
        let spread = |g: &dyn Fn(&RunFigures) -> f64| Spread::of(runs.iter().map(g));
        let broker = self.a.broker_pid.is_some();
        println!(
            "### End to end on the broker ({} events, {} B each, {} interleaved runs)\n",
            self.messages.len(),
            bytes / self.messages.len().max(1),
            runs.len()
        );
        println!(
            "Events per wall second from the first message produced to the last one read (or landed); CPU of the processes doing the work (the references run in one process); the broker's CPU over the same span{}.\n",
            if broker {
                ""
            } else {
                " (not measured: no --broker-pid)"
            }
        );
        println!(
            "| phase | events/s median | min | max | CPU s median | broker CPU s median | min | max | broker CPU µs per event |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        type Pick = fn(&RunFigures) -> Phase;
        let phases: [(&str, Pick); 3] = [
            ("one hop: produce while a consumer reads", |r| r.one_hop),
            (
                "two-hop null pipeline: produce → consume-produce in transactions → consume",
                |r| r.two_hop,
            ),
            ("chitose: ingest → transform → sink", |r| r.pipeline),
        ];
        for (name, pick) in phases {
            let events = |r: &RunFigures| {
                if name.starts_with("chitose") {
                    r.landed
                } else {
                    n
                }
            };
            let rate = spread(&|r| events(r) / pick(r).wall.max(1e-9));
            let b = spread(&|r| pick(r).broker);
            println!(
                "| {name} | {} | {:.1} | {} | {:.1} |",
                rate.cells(0),
                spread(&|r| pick(r).cpu).median,
                b.cells(1),
                spread(&|r| pick(r).broker * 1e6 / events(r).max(1.0)).median
            );
        }
        let vs = |pick: Pick| spread(&|r| (r.landed / r.pipeline.wall) / (n / pick(r).wall));
        let (two, one) = (vs(|r| r.two_hop), vs(|r| r.one_hop));
        println!(
            "\nchitose / two-hop null pipeline: **{:.2}×** (median of the runs' ratios; min {:.2}, max {:.2}). chitose / one hop: {:.2}× ({:.2}–{:.2}).\n",
            two.median, two.min, two.max, one.median, one.min, one.max
        );
        println!(
            "The null pipeline's hop batches as the transform does (up to {} records or {:?} a transaction) and writes {} topics, as many as the event types in the messages, taken in turn. It leaves out what chitose does besides moving bytes: ingest's generator and edge checks, the transform's work, the sink's Parquet and Delta commits; and it reads the messages from memory.\n",
            chitose_transform::config::TransformConfig::default().batch_max_records,
            chitose_transform::config::TransformConfig::default().batch_max,
            self.types
        );
        println!(
            "| service | CPU s median | events per CPU-second median | min | max | peak RSS MiB (max) |\n|---|---:|---:|---:|---:|---:|"
        );
        for name in ["ingest", "transform", "sink"] {
            let cpu = |r: &RunFigures| r.service_cpu.get(name).copied().unwrap_or(0.0);
            println!(
                "| {name} | {:.1} | {} | {:.0} |",
                spread(&cpu).median,
                spread(&|r| r.landed / cpu(r).max(1e-9)).cells(0),
                runs.iter()
                    .map(|r| mib(r.service_rss.get(name).copied().unwrap_or(0)))
                    .fold(0.0, f64::max)
            );
        }
        println!(
            "\nService CPU counts from the first event sent (the groups' join before it is left out); ingest's includes its generator.\n"
        );
        println!(
            "### Freshness at a steady {STEADY_RATE} events/s ({STEADY_SECONDS} s a run, sink roll age {STEADY_ROLL})\n"
        );
        println!("| figure | median | min | max |\n|---|---:|---:|---:|");
        type Pick1 = fn(&Steady) -> f64;
        let steady: [(&str, Pick1, usize); 5] = [
            ("events/s ingest sent", |s| s.rate, 0),
            (
                "transform latency p50, s (a batch's oldest raw record, accepted by ingest → the batch's commit)",
                |s| s.t50,
                2,
            ),
            ("transform latency p99, s", |s| s.t99, 2),
            (
                "sink freshness p50, s (the transform wrote the record → its row is visible in the lake)",
                |s| s.p50,
                2,
            ),
            ("sink freshness p99, s", |s| s.p99, 2),
        ];
        for (name, pick, d) in steady {
            println!("| {name} | {} |", spread(&|r| pick(&r.steady)).cells(d));
        }
        println!(
            "\nFrom the transform's `{}` and the sink's `{}` histograms (quantiles interpolated within a bucket, as Prometheus does). The transform observes each batch once, at its oldest record, which bounds the batch's other records. Event → lake is the two legs together: the sum of their p99s bounds its 98th percentile (a record above that sum is above one of them). At the default roll age (60 s) a row waits up to the roll age for its file.\n",
            chitose_transform::metrics::names::LATENCY_SECONDS,
            chitose_sink::metrics::names::FRESHNESS_SECONDS
        );
        if let Some(last) = runs.last() {
            println!(
                "Kafka requests during the last run (librdkafka statistics, `chitose_<stage>_kafka_*`; ingest's as of its last report, up to 1 s before it exited):\n\n| stage | client | request | requests | messages per request |\n|---|---|---|---:|---:|\n{}",
                last.requests
            );
        }
        if self.a.python.is_none() {
            println!("(Python baselines skipped: no --python)");
            return;
        }
        println!("### The sink vs Python consumers (bench/python_sink.py), same topics\n");
        println!(
            "| consumer | rows per CPU-second median | min | max | CPU s median | files | peak RSS MiB (max) |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        type Land = fn(&RunFigures) -> Landing;
        let mut rows: Vec<(String, Land)> = vec![
            (
                "chitose sink during the run (records trickling in, 2 s roll age)".into(),
                |r| r.sink_during,
            ),
            ("chitose sink catching up on the same topics".into(), |r| {
                r.catchup
            }),
        ];
        rows.push((
            "python_sink.py naive (fastavro dicts, pyarrow)".into(),
            |r| r.python.get("naive").copied().unwrap_or_default(),
        ));
        rows.push((
            "python_sink.py columnar (Polars' Avro reader and Parquet writer)".into(),
            |r| r.python.get("columnar").copied().unwrap_or_default(),
        ));
        for (name, pick) in &rows {
            println!(
                "| {name} | {} | {:.1} | {:.0} | {:.0} |",
                spread(&|r| pick(r).per_cpu()).cells(0),
                spread(&|r| pick(r).cpu).median,
                spread(&|r| pick(r).files).median,
                runs.iter().map(|r| pick(r).rss_mib).fold(0.0, f64::max)
            );
        }
        for mode in PYTHON_MODES {
            let x = spread(&|r| {
                r.catchup.per_cpu() / r.python.get(mode).copied().unwrap_or_default().per_cpu()
            });
            println!(
                "\nchitose sink catching up / Python {mode} per CPU-second: **{:.1}×** (median of the runs' ratios; min {:.1}, max {:.1}).",
                x.median, x.min, x.max
            );
        }
        println!(
            "\nThe Python consumers write unpartitioned files with no exactly-once, no ledger and no Delta log; the sink writes the partitioned lake and commits it."
        );
    }
}

/// When the reference's threads give up: at the deadline, or at once when
/// the phase failed.
struct Until {
    deadline: Instant,
    abort: AtomicBool,
}

impl Until {
    fn over(&self) -> bool {
        self.abort.load(Ordering::SeqCst) || Instant::now() > self.deadline
    }

    /// Passes `r` on, stopping the other threads if it failed.
    fn on_error<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.abort.store(true, Ordering::SeqCst);
        }
        r
    }
}

/// Produces every message as ingest does and waits for all acknowledgements.
fn produce_all(kafka: &KafkaSettings, topic: &str, messages: &[(String, Vec<u8>)]) -> Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = kafka.producer_config().create()?;
    for (key, m) in messages {
        send_retrying(
            &producer,
            BaseRecord::to(topic)
                .key(key.as_bytes())
                .payload(m.as_slice()),
        )?;
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(())
}

fn send_retrying(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut rec: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Counts one more joined consumer once `consumer` has partitions.
fn note_joined(consumer: &BaseConsumer, joined: &mut bool, ready: &AtomicUsize) {
    if !*joined && consumer.assignment().is_ok_and(|a| a.count() > 0) {
        *joined = true;
        ready.fetch_add(1, Ordering::SeqCst);
    }
}

/// The null pipeline's middle: consume, produce unchanged, offsets in the
/// transaction, batched as the transform batches. The transform writes
/// each event to its type's topic; without decoding, the hop takes the
/// topics in turn (by offset), so its transactions span as many topics
/// and partitions.
#[allow(clippy::too_many_arguments)]
fn null_hop(
    kafka: &KafkaSettings,
    group: &str,
    input: &str,
    outputs: &[String],
    n: usize,
    ready: &AtomicUsize,
    until: &Until,
) -> Result<()> {
    let cfg = chitose_transform::config::TransformConfig::default();
    let consumer: BaseConsumer = kafka.consumer_config(group).create()?;
    consumer.subscribe(&[input])?;
    // The transform's producer: failures-only delivery reports, drained
    // before each commit.
    let producer = BatchProducer::create(
        kafka
            .producer_config()
            .set("transactional.id", format!("{group}-txn"))
            .set("transaction.timeout.ms", "60000"),
        DefaultProducerContext,
    )?;
    producer.init_transactions(Duration::from_secs(30))?;
    let mut joined = false;
    let mut moved = 0;
    while moved < n {
        if until.over() {
            bail!("the null hop stopped after {moved} of {n} messages");
        }
        let batch_until = Instant::now() + cfg.batch_max;
        let mut batch = Vec::new();
        while batch.len() < cfg.batch_max_records {
            let left = batch_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match consumer.poll(left.min(Duration::from_millis(100))) {
                Some(Ok(m)) => batch.push(m),
                Some(Err(e)) => tracing::debug!(error = %e, "null hop consumer"),
                None if !batch.is_empty() && left < cfg.batch_max / 2 => break,
                None => note_joined(&consumer, &mut joined, ready),
            }
        }
        if batch.is_empty() {
            continue;
        }
        producer.begin_transaction()?;
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for m in &batch {
            let payload = m.payload().unwrap_or_default();
            let topic = &outputs[m.offset().unsigned_abs() as usize % outputs.len()];
            let mut rec = BaseRecord::to(topic).payload(payload);
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            producer.send(rec)?;
            next.insert(m.partition(), m.offset() + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for (p, off) in next {
            tpl.add_partition_offset(input, p, Offset::Offset(off))?;
        }
        let meta = consumer
            .group_metadata()
            .context("the null hop's group metadata")?;
        producer.send_offsets_to_transaction(&tpl, &meta, Duration::from_secs(30))?;
        producer.commit_transaction(Duration::from_secs(60))?;
        moved += batch.len();
    }
    Ok(())
}

/// Reads `n` messages from `topics` (read_committed), committing offsets
/// once a second as a sink would; returns when the last one arrived.
fn read_all(
    kafka: &KafkaSettings,
    group: &str,
    topics: &[String],
    n: usize,
    ready: &AtomicUsize,
    until: &Until,
) -> Result<Instant> {
    let consumer: BaseConsumer = kafka.consumer_config(group).create()?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    let mut joined = false;
    let mut got = 0;
    let mut next: Vec<BTreeMap<i32, i64>> = vec![BTreeMap::new(); topics.len()];
    let mut last_commit = Instant::now();
    let commit = |next: &[BTreeMap<i32, i64>], mode| -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (t, parts) in topics.iter().zip(next) {
            for (p, off) in parts {
                tpl.add_partition_offset(t, *p, Offset::Offset(*off))?;
            }
        }
        if tpl.count() > 0 {
            consumer.commit(&tpl, mode)?;
        }
        Ok(())
    };
    while got < n {
        if until.over() {
            bail!("the reference's reader stopped after {got} of {n} messages");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                got += usize::from(m.payload().is_some());
                if let Some(t) = topics.iter().position(|t| t == m.topic()) {
                    next[t].insert(m.partition(), m.offset() + 1);
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, "reference reader"),
            None => note_joined(&consumer, &mut joined, ready),
        }
        if last_commit.elapsed() > Duration::from_secs(1) {
            commit(&next, CommitMode::Async)?;
            last_commit = Instant::now();
        }
    }
    let end = Instant::now();
    commit(&next, CommitMode::Sync)?;
    Ok(end)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}", (t as u64) ^ u64::from(std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::histogram_quantile;

    #[test]
    fn a_quantile_interpolates_within_its_bucket_as_prometheus_does() {
        // 100 observations: 10 up to 1 s, 80 in (1, 2], 10 in (2, 5].
        let text = "\
# TYPE f histogram
f_bucket{le=\"1\"} 10
f_bucket{le=\"2\"} 90
f_bucket{le=\"5\"} 100
f_bucket{le=\"+Inf\"} 100
f_sum 170
f_count 100
";
        assert_eq!(histogram_quantile(text, "f", 0.05), 0.5);
        assert_eq!(histogram_quantile(text, "f", 0.5), 1.5);
        assert!((histogram_quantile(text, "f", 0.99) - 4.7).abs() < 1e-9);
        // Ranks past the last finite bucket report its bound.
        let inf = "f_bucket{le=\"1\"} 1\nf_bucket{le=\"+Inf\"} 2\n";
        assert_eq!(histogram_quantile(inf, "f", 0.99), 1.0);
        assert_eq!(histogram_quantile("", "f", 0.5), 0.0);
    }
}
