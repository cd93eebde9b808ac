//! `chitose bench`: the pipeline end to end on a real broker, against the
//! broker's own produce → consume rate for the same messages, and against a
//! Python consumer (confluent-kafka + fastavro + pyarrow) doing the sink's
//! job on the same topics. Each service runs as its own process, so its
//! CPU time and peak RSS are its own. Prints a Markdown section;
//! `bench/run` adds the pure-core ratios (`cargo bench`) and writes
//! docs/benchmarks.md.

use anyhow::{Context, Result, bail};
use chitose_ingest::simulate::{Generator, SimConfig, Verdict};
use chitose_runtime::procstat::{cpu_seconds_of, peak_rss_bytes};
use chitose_schemas::catalog::SchemaStore;
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
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
    /// Python with confluent-kafka, fastavro and pyarrow, for the baseline
    /// (skipped when absent).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Scratch folder (keys, lake, baseline output).
    #[arg(long, default_value = "target/bench")]
    work: PathBuf,
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

/// Runs `chitose bench`.
pub fn run(a: BenchArgs) -> Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let id = uuid_like();
    let prefix = format!("bench{id}");
    let work = a.work.join(&prefix);
    std::fs::create_dir_all(&work)?;
    let kafka = a.kafka.settings()?;
    // The services get the same connection arguments (and inherit the
    // CHITOSE_KAFKA_* environment).
    let conn = a.kafka.child_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    use chitose_runtime::topics;
    let specs = topics::layout(
        &prefix,
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
    rt.block_on(kafka.create_topics(&specs))
        .context("creating the bench topics")?;

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
    while messages.len() < a.events as usize {
        let line = generator.next_line();
        if let Verdict::Good { .. } = line.verdict
            && let Ok(acc) = edge.accept(&line.bytes, now)
        {
            messages.push((acc.event.patient.local_patient_id.clone(), acc.message));
        }
    }
    let bytes: usize = messages.iter().map(|(_, m)| m.len()).sum();
    let avg = bytes / messages.len().max(1);

    // 1. The broker alone: produce every message (idempotent, acks=all,
    // lz4, as ingest does), then consume them all back (read_committed).
    let topic = format!("{prefix}.baseline");
    rt.block_on(kafka.ensure_topics(&[(topic.as_str(), 6)]))?;
    let producer: FutureProducer = kafka.producer_config().create()?;
    let t0 = Instant::now();
    rt.block_on(async {
        let mut pending = Vec::with_capacity(messages.len());
        for (key, m) in &messages {
            loop {
                match producer.send_result(FutureRecord::to(&topic).key(key).payload(m)) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err((e, _)) => {
                        // Queue full: wait for acknowledgements.
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
        for f in pending {
            let _ = f.await;
        }
    });
    let produce_s = t0.elapsed().as_secs_f64();
    let consumer: BaseConsumer = kafka
        .consumer_config(&format!("{prefix}-baseline"))
        .create()?;
    consumer.subscribe(&[&topic])?;
    let t1 = Instant::now();
    let mut got = 0u64;
    let mut idle = Instant::now();
    while got < a.events && idle.elapsed() < Duration::from_secs(30) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            got += u64::from(m.payload().is_some());
            idle = Instant::now();
        }
    }
    let consume_s = t1.elapsed().as_secs_f64();
    if got < a.events {
        bail!("broker baseline: consumed {got} of {} messages", a.events);
    }
    drop(consumer);

    // 2. The pipeline: transform and sink running, then the hub sends.
    let st = Command::new(&exe)
        .args(["transform", "keygen", "--dir"])
        .arg(work.join("keys"))
        .stdout(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("keygen failed");
    }
    let ops: Vec<String> = (0..3)
        .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
        .collect::<Result<_>>()?;
    let spawn = |name: &'static str, args: Vec<String>, env: Vec<(&str, String)>| -> Result<Proc> {
        let child = Command::new(&exe)
            .args(args)
            .args(&conn)
            .envs(env)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join(format!("{name}.log")))?)
            .spawn()?;
        Ok(Proc { name, child })
    };
    let s = |x: &str| x.to_owned();
    let mut procs = vec![
        spawn(
            "transform",
            vec![
                s("transform"),
                s("--bootstrap"),
                kafka.bootstrap_servers.clone(),
                s("--keys-dir"),
                work.join("keys").display().to_string(),
                s("--ops-listen"),
                ops[1].clone(),
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
        spawn(
            "sink",
            vec![
                s("sink"),
                s("--bootstrap"),
                kafka.bootstrap_servers.clone(),
                s("--lake"),
                work.join("lake").display().to_string(),
                s("--ops-listen"),
                ops[2].clone(),
            ],
            vec![
                (
                    "CHITOSE_SINK__INPUT_PATTERN",
                    format!(r"^{prefix}\.pseudo\..+"),
                ),
                ("CHITOSE_SINK__GROUP_ID", format!("{prefix}-sink")),
                ("CHITOSE_SINK__ROLL_AGE", s("2s")),
            ],
        )?,
    ];
    // Give both time to join their groups before the clock starts.
    std::thread::sleep(Duration::from_secs(5));
    let t2 = Instant::now();
    procs.insert(
        0,
        spawn(
            "ingest",
            vec![
                s("ingest"),
                s("--source"),
                s("simulate"),
                s("--prefecture"),
                s("27"),
                s("--events"),
                a.events.to_string(),
                s("--rate"),
                s("0"),
                s("--seed"),
                s("2026"),
                s("--bootstrap"),
                kafka.bootstrap_servers.clone(),
                s("--ops-listen"),
                ops[0].clone(),
                // Ingest exits when it has sent --events: statistics every
                // second, so its last report is close to its end.
                s("-X"),
                s("statistics.interval.ms=1000"),
            ],
            vec![(
                "CHITOSE_INGEST__TOPIC",
                format!("{prefix}.raw.{{prefecture}}"),
            )],
        )?,
    );
    let mut peak: BTreeMap<&str, u64> = BTreeMap::new();
    let mut cpu: BTreeMap<&str, f64> = BTreeMap::new();
    let mut accepted = 0.0;
    let mut ingest_metrics = String::new();
    let mut landed;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        for p in &procs {
            if let Some(b) = peak_rss_bytes(&p.pid()) {
                peak.insert(p.name, b);
                cpu.insert(p.name, cpu_seconds_of(&p.pid()));
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
                bail!("ingest failed: see {}", work.join("ingest.log").display());
            }
            let log = std::fs::read_to_string(work.join("ingest.log"))?;
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
        if accepted >= a.events as f64 && landed >= accepted {
            break;
        }
        if Instant::now() > deadline {
            bail!("pipeline did not land {accepted} events (landed {landed})");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let e2e_s = t2.elapsed().as_secs_f64();
    // librdkafka reports every 5 s: one more report covers the run's end.
    // (CPU was read above; the wait costs the figures nothing.)
    std::thread::sleep(Duration::from_millis(5_500));
    let requests = format!(
        "| stage | client | request | requests | messages per request |\n|---|---|---|---:|---:|\n{}{}{}",
        kafka_requests("ingest", &ingest_metrics),
        kafka_requests("transform", &metrics_text(&ops[1]).unwrap_or_default()),
        kafka_requests("sink", &metrics_text(&ops[2]).unwrap_or_default()),
    );
    for p in &mut procs {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }

    // 3. The sink again, catching up on the same topics in bulk (a fresh
    // group and lake): the conditions the Python baseline gets.
    let catchup_ops = format!("127.0.0.1:{}", free_port()?);
    let mut catchup = spawn(
        "sink-catchup",
        vec![
            s("sink"),
            s("--bootstrap"),
            kafka.bootstrap_servers.clone(),
            s("--lake"),
            work.join("lake-catchup").display().to_string(),
            s("--ops-listen"),
            catchup_ops.clone(),
        ],
        vec![
            (
                "CHITOSE_SINK__INPUT_PATTERN",
                format!(r"^{prefix}\.pseudo\..+"),
            ),
            ("CHITOSE_SINK__GROUP_ID", format!("{prefix}-sink-catchup")),
            ("CHITOSE_SINK__ROLL_AGE", s("5s")),
        ],
    )?;
    let (mut catchup_cpu, mut catchup_rss) = (0.0, 0u64);
    let t3 = Instant::now();
    loop {
        if let Some(b) = peak_rss_bytes(&catchup.pid()) {
            catchup_rss = b;
            catchup_cpu = cpu_seconds_of(&catchup.pid());
        }
        if scrape(&catchup_ops, chitose_sink::metrics::names::ROWS_TOTAL) >= landed {
            break;
        }
        if t3.elapsed() > Duration::from_secs(600) {
            bail!("the catch-up sink did not land {landed} rows");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = catchup.child.kill();
    let _ = catchup.child.wait();

    // 4. The Python baseline on the same pseudonymized topics.
    let python = a.python.as_ref().map(|py| -> Result<serde_json::Value> {
        let schema_dir = work.join("pseudo-avsc");
        std::fs::create_dir_all(&schema_dir)?;
        for e in SchemaStore::embedded()
            .iter()
            .filter(|e| e.full_name.starts_with("chitose.pseudo."))
        {
            let table = chitose_sink::core::table_of(&e.full_name);
            std::fs::write(schema_dir.join(format!("{table}.avsc")), &e.text)?;
        }
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/python_sink.py");
        let out = Command::new(py)
            .arg(script)
            .args([
                &kafka.bootstrap_servers,
                &format!("{prefix}.pseudo."),
                &(landed as u64).to_string(),
            ])
            .arg(work.join("python-out"))
            .arg(&schema_dir)
            .output()?;
        if !out.status.success() {
            bail!("python baseline: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    });

    let n = a.events as f64;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "### End to end on the broker ({} events, {avg} B each)\n",
        a.events
    );
    println!("| run | wall s | events/s (wall) |\n|---|---|---|");
    println!(
        "| broker alone: produce then consume | {:.1} | {:.0} |",
        produce_s + consume_s,
        n / (produce_s + consume_s)
    );
    println!(
        "| chitose ingest → transform → sink (landed {landed:.0}) | {e2e_s:.1} | {:.0} |",
        landed / e2e_s
    );
    println!(
        "\nPipeline / broker alone: **{:.2}×** (the pipeline moves each event through the broker twice).\n",
        (landed / e2e_s) / (n / (produce_s + consume_s))
    );
    println!("| service | CPU s | events per CPU-second | peak RSS MiB |\n|---|---|---|---|");
    for name in ["ingest", "transform", "sink"] {
        let c = cpu.get(name).copied().unwrap_or(0.0);
        println!(
            "| {name} | {c:.1} | {:.0} | {:.0} |",
            if c > 0.0 { landed / c } else { 0.0 },
            mib(peak.get(name).copied().unwrap_or(0))
        );
    }
    println!(
        "\nKafka requests during the run (librdkafka statistics, `chitose_<stage>_kafka_*`; ingest's as of its last report, up to 1 s before it exited):\n\n{requests}"
    );
    match python {
        Some(Ok(p)) => {
            let rows = p["rows"].as_f64().unwrap_or(0.0);
            let py_cpu = p["cpu_s"].as_f64().unwrap_or(0.0);
            let sink_cpu = cpu.get("sink").copied().unwrap_or(0.0);
            println!(
                "\n### Sink vs a Python consumer (confluent-kafka + fastavro + pyarrow), same topics\n"
            );
            println!(
                "| | rows | CPU s | rows per CPU-second | peak RSS MiB |\n|---|---|---|---|---|"
            );
            println!(
                "| chitose sink during the run (records trickling in, 2 s roll age) | {landed:.0} | {sink_cpu:.1} | {:.0} | {:.0} |",
                landed / sink_cpu,
                mib(peak.get("sink").copied().unwrap_or(0))
            );
            println!(
                "| chitose sink catching up on the same topics | {landed:.0} | {catchup_cpu:.1} | {:.0} | {:.0} |",
                landed / catchup_cpu,
                mib(catchup_rss)
            );
            println!(
                "| python_sink.py | {rows:.0} | {py_cpu:.1} | {:.0} | {:.0} |",
                rows / py_cpu,
                p["peak_rss_mb"].as_f64().unwrap_or(0.0)
            );
            println!(
                "\nchitose sink / Python per core: **{:.1}×** catching up (the conditions the Python consumer had), {:.1}× during the run.",
                (landed / catchup_cpu) / (rows / py_cpu),
                (landed / sink_cpu) / (rows / py_cpu)
            );
        }
        Some(Err(e)) => println!("\nPython baseline failed: {e:#}"),
        None => println!("\n(Python baseline skipped: no --python)"),
    }
    Ok(ExitCode::SUCCESS)
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}", (t as u64) ^ u64::from(std::process::id()))
}
