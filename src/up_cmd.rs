//! `chitose up`: the whole pipeline in one process, for a first look: an
//! embedded broker (rdkafka's MockCluster) or a real one, simulated hubs for
//! the eight Kansai Union prefectures, transform and sink, a local lake.

use anyhow::{Context, Result, bail};
use chitose_ingest::config::{IngestConfig, SourceKind};
use chitose_ingest::metrics::IngestMetrics;
use chitose_runtime::shutdown::Shutdown;
use chitose_runtime::topics;
use chitose_schemas::raw::EventType;
use chitose_sink::config::SinkConfig;
use chitose_sink::metrics::SinkMetrics;
use chitose_transform::config::TransformConfig;
use chitose_transform::metrics::TransformMetrics;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The Kansai Union prefectures (JIS X 0401).
const HUBS: [&str; 8] = ["25", "26", "27", "28", "29", "30", "31", "36"];

/// `chitose up` flags.
#[derive(Args)]
pub struct UpArgs {
    /// Events to generate over all hubs, then stop.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// A real Kafka (HOST:PORT) instead of the embedded broker (also
    /// `--bootstrap` / CHITOSE_BOOTSTRAP); reached with the Kafka
    /// connection settings (TLS, SASL), which the embedded broker
    /// (plaintext, loopback) does not use.
    #[arg(long)]
    broker: Option<String>,
    #[command(flatten)]
    kafka: crate::kafka_args::KafkaArgs,
    /// The lake: a folder, or s3://bucket/prefix (object_store options from
    /// the environment).
    #[arg(long, env = "CHITOSE_LAKE", default_value = "./.chitose/lake")]
    lake: String,
    /// Pseudonym and date-shift keys; a demo key is generated when empty.
    #[arg(long, default_value = ".chitose/keys")]
    keys_dir: PathBuf,
    /// De-identification profile (a shipped one: pseudonymized,
    /// pseudonymized-shifted; or a policy file). Look at both side by side
    /// with two lakes: `up --lake lake-a` and `up --policy
    /// pseudonymized-shifted --lake lake-b`.
    #[arg(long, default_value = "pseudonymized")]
    policy: String,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Share of malformed records the hubs send (rejected at ingest).
    #[arg(long, default_value_t = 0.01)]
    bad_share: f64,
    /// No progress bars: the summary only.
    #[arg(long)]
    quiet: bool,
    /// Logs in the terminal too (otherwise they go to a file under
    /// `--logs-dir`, whose path is printed once).
    #[arg(long, short)]
    verbose: bool,
    /// Where the run's log file goes unless `--verbose`.
    #[arg(long, default_value = ".chitose/logs")]
    logs_dir: PathBuf,
    /// /metrics, /healthz, /readyz of the transform on this port and of
    /// the sink on the next (0: any free ports).
    #[arg(long, default_value_t = 9465)]
    ops_port: u16,
}

fn ops_addr(base: u16, n: u16) -> std::net::SocketAddr {
    let port = if base == 0 { 0 } else { base.saturating_add(n) };
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// Makes each key the default configuration needs that `dir` lacks (a
/// demo folder from an older release gets its event-id key too). Returns
/// whether any was made.
fn ensure_demo_keys(dir: &std::path::Path) -> Result<bool> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut made = false;
    for (_, id) in chitose_transform::keys::KeysConfig::default().needed(true) {
        let path = dir.join(format!("{id}.key"));
        if !path.exists() {
            crate::transform_cmd::write_secret(&path, &chitose_transform::keys::generate_hex())?;
            made = true;
        }
    }
    Ok(made)
}

/// Runs `chitose up`.
pub fn run(a: UpArgs) -> Result<ExitCode> {
    if a.events == 0 {
        bail!("--events: expected at least 1, found 0");
    }
    let generated = ensure_demo_keys(&a.keys_dir)?;
    // A first look is the bars and the summary: the services' logs go to a
    // file (named once) unless asked for.
    if a.verbose {
        crate::init_logs(false);
    } else {
        let path = crate::init_logs_to_file(&a.logs_dir, "up")?;
        eprintln!("chitose up: logs in {}", path.display());
    }
    if generated {
        eprintln!(
            "chitose up: generated demo keys in {} (keep them to get the same pseudonyms next time)",
            a.keys_dir.display()
        );
    }
    // The embedded broker outlives the runtime: every client (the
    // services', and the lag watchers' in their tasks) is gone before the
    // broker stops, so the end of a run is not a burst of librdkafka
    // "all brokers down" errors.
    let external = a.broker.clone().or_else(|| a.kafka.bootstrap.clone());
    let mock = match &external {
        Some(_) => None,
        None => {
            Some(rdkafka::mocking::MockCluster::new(1).context("starting the embedded broker")?)
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(up(a, external, mock.as_ref()));
    rt.shutdown_timeout(Duration::from_secs(10));
    drop(mock);
    out
}

/// A rate for a person: `850/s`, `3.4 k/s`, `1.2 M/s`.
fn human_rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec < 0.0 {
        return "-".to_owned();
    }
    if per_sec < 1_000.0 {
        format!("{per_sec:.0}/s")
    } else if per_sec < 1_000_000.0 {
        format!("{:.1} k/s", per_sec / 1e3)
    } else {
        format!("{:.1} M/s", per_sec / 1e6)
    }
}

/// A count for a person: `850`, `3.4 k`, `1.2 M`.
fn human_count(n: u64) -> String {
    if n < 10_000 {
        n.to_string()
    } else if n < 1_000_000 {
        format!("{:.1} k", n as f64 / 1e3)
    } else {
        format!("{:.1} M", n as f64 / 1e6)
    }
}

async fn up<C: rdkafka::ClientContext>(
    a: UpArgs,
    external: Option<String>,
    mock: Option<&rdkafka::mocking::MockCluster<'static, C>>,
) -> Result<ExitCode> {
    let started = Instant::now();
    // `--bootstrap` (the shared Kafka flag) means the same as `--broker`.
    let kafka = match (&external, mock) {
        (Some(b), _) => {
            let mut k = a.kafka.settings()?;
            k.bootstrap_servers = b.clone();
            k
        }
        (None, Some(m)) => chitose_runtime::kafka::KafkaSettings::at(m.bootstrap_servers()),
        _ => unreachable!("one of them"),
    };
    if let Some(m) = mock {
        // MockCluster has no CreateTopics: make every topic up front.
        for h in HUBS {
            m.create_topic(&topics::raw(topics::PREFIX, h), 3, 1)?;
        }
        for t in EventType::ALL {
            m.create_topic(&topics::pseudo(topics::PREFIX, t.symbol()), 3, 1)?;
        }
        m.create_topic(topics::DLQ, 3, 1)?;
    }
    // Ctrl-C (or SIGTERM) ends the run early; either way the services stop
    // together through `trigger`, which flushes and commits.
    let user = Shutdown::on_signals();
    let (trigger, shutdown) = Shutdown::new();

    // Hubs: one simulate source per prefecture, the events shared out.
    let mut hubs = Vec::new();
    let mut hub_metrics = Vec::new();
    for (i, h) in HUBS.iter().enumerate() {
        let mut cfg = IngestConfig {
            prefecture: (*h).into(),
            source: SourceKind::Simulate,
            ops_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            topic_partitions: 3,
            ..Default::default()
        };
        cfg.kafka = kafka.clone();
        cfg.simulate.events = a.events / 8 + u64::from((i as u64) < a.events % 8);
        cfg.simulate.generator.hub = Some((*h).into());
        cfg.simulate.generator.seed = a.seed + i as u64;
        cfg.simulate.generator.bad_share = a.bad_share;
        cfg.simulate.generator.patients = 5_000;
        // A recent quarter: the lake gets a few months per prefecture.
        cfg.simulate.generator.days = 90;
        let m = IngestMetrics::new(h, "simulate");
        hub_metrics.push(m.clone());
        let sd = shutdown.clone();
        hubs.push(tokio::spawn(chitose_ingest::service::run_with(cfg, m, sd)));
    }

    let mut tcfg = TransformConfig {
        ops_listen: ops_addr(a.ops_port, 0),
        ..Default::default()
    };
    tcfg.kafka = kafka.clone();
    tcfg.keys.dir = Some(a.keys_dir.clone());
    tcfg.policy = a.policy.clone();
    tcfg.output_partitions = 3;
    let transformer = chitose_transform::service::build(&tcfg, std::env::vars())?;
    let tm = TransformMetrics::new();
    let transform = tokio::spawn(chitose_transform::service::run_with(
        tcfg,
        transformer,
        tm.clone(),
        shutdown.clone(),
    ));

    let mut scfg = SinkConfig {
        lake: a.lake.clone(),
        ops_listen: ops_addr(a.ops_port, 1),
        roll_age: std::time::Duration::from_secs(5),
        ..Default::default()
    };
    scfg.kafka = kafka.clone();
    let sm = SinkMetrics::new();
    let sink = tokio::spawn(chitose_sink::service::run_with(
        scfg,
        sm.clone(),
        shutdown.clone(),
    ));

    let bars = MultiProgress::new();
    if a.quiet {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    // indicatif's own {per_sec} prints a raw float ("3,405.799588547894/s").
    let style =
        ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos:>7}/{len:7} {rate:>10}  {msg}")
            .expect("valid template")
            .with_key(
                "rate",
                |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&human_rate(s.per_sec()));
                },
            )
            .progress_chars("=> ");
    let bar = |name: &str, len: u64| {
        let b = bars.add(ProgressBar::new(len));
        b.set_style(style.clone());
        b.set_prefix(name.to_owned());
        b
    };
    let produced = bar("produced", a.events);
    let transformed = bar("transformed", a.events);
    let landed = bar("landed", a.events);
    let sum = |f: &dyn Fn(&IngestMetrics) -> u64| hub_metrics.iter().map(f).sum::<u64>();
    let rejected_of = |m: &IngestMetrics| {
        chitose_schemas::json::RejectReason::ALL
            .iter()
            .map(|r| {
                m.rejected
                    .get_metric_with_label_values(&[r.as_str()])
                    .map_or(0, |c| c.get())
            })
            .sum::<u64>()
    };
    let table_rows = |t: &str| {
        sm.rows
            .get_metric_with_label_values(&[t])
            .map_or(0, |c| c.get())
    };
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let accepted = sum(&|m| m.accepted.get());
        let rejected = sum(&rejected_of);
        let written: u64 = EventType::ALL
            .iter()
            .map(|t| {
                tm.processed
                    .get_metric_with_label_values(&[t.symbol()])
                    .map_or(0, |c| c.get())
            })
            .sum();
        let dlq: u64 = chitose_transform::core::DLQ_CLASSES
            .iter()
            .map(|r| {
                tm.dlq
                    .get_metric_with_label_values(&[r])
                    .map_or(0, |c| c.get())
            })
            .sum();
        let rows: u64 = EventType::ALL.iter().map(|t| table_rows(t.symbol())).sum();
        produced.set_position(accepted + rejected);
        produced.set_message(format!("{} rejected at the edge", human_count(rejected)));
        transformed.set_length(accepted.max(1));
        transformed.set_position(written + dlq);
        // One screen says what the services' /metrics say: each stage's
        // rate, how far it is behind the one before, and the DLQ.
        transformed.set_message(format!(
            "{} behind, {} to the DLQ",
            human_count(accepted.saturating_sub(written + dlq)),
            human_count(dlq)
        ));
        landed.set_length(written.max(1));
        landed.set_position(rows);
        landed.set_message(format!(
            "{} behind",
            human_count(written.saturating_sub(rows))
        ));
        let hubs_done = hubs.iter().all(|h| h.is_finished());
        if user.is_triggered() || (hubs_done && written + dlq >= accepted && rows >= written) {
            break;
        }
        if transform.is_finished() || sink.is_finished() {
            break;
        }
    }
    trigger.trigger();
    for h in hubs {
        h.await?.context("ingest")?;
    }
    let t = transform.await?.context("transform")?;
    let s = sink.await?.context("sink")?;
    produced.finish();
    transformed.finish();
    landed.finish();
    let rejected = sum(&rejected_of);
    println!();
    println!("chitose up: {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "  sent by 8 hubs   {:>8}  (rejected at ingest: {rejected})",
        sum(&|m| m.read.get())
    );
    println!(
        "  transformed      {:>8}  (dead-lettered: {})",
        t.written, t.dlq
    );
    // The sink rolled every few seconds: compact what that left, as the
    // shipped CronJob does in production, then count from the tables' logs.
    let lake = chitose_lake::Lake::open(&a.lake, &Default::default())?;
    let before = chitose_lake::verify::census(&lake, chitose_lake::layout::PSEUDONYMIZED).await?;
    crate::lake_cmd::compact_all(&lake, &[], Default::default()).await?;
    // A demo lake has no other reader: the replaced files can go now (in
    // production `chitose lake vacuum` keeps them for --retain).
    for t in &before {
        chitose_lake::upkeep::vacuum(
            &lake.table(&chitose_lake::layout::table(&t.table)),
            Duration::ZERO,
            false,
        )
        .await?;
    }
    let after = chitose_lake::verify::census(&lake, chitose_lake::layout::PSEUDONYMIZED).await?;
    let files_before: u64 = before.iter().map(|c| c.files).sum();
    let files_after: u64 = after.iter().map(|c| c.files).sum();
    println!(
        "  landed           {:>8}  in {} Delta commits; {files_before} files, compacted to {files_after} ({:.1} MiB), lake {}",
        s.rows,
        s.commits,
        after.iter().map(|c| c.bytes).sum::<u64>() as f64 / 1048576.0,
        a.lake
    );
    println!(
        "    {:<14} {:>8} {:>11} {:>7} {:>15}",
        "table", "rows", "partitions", "files", "median rows/file"
    );
    for c in &after {
        let was = before.iter().find(|b| b.table == c.table);
        println!(
            "    {:<14} {:>8} {:>11} {:>7} {:>15}   (before compaction: {} files, median {})",
            c.table,
            c.rows,
            c.partitions,
            c.files,
            c.median_rows,
            was.map_or(0, |b| b.files),
            was.map_or(0, |b| b.median_rows),
        );
    }
    let root = lake.root_url().as_str().trim_end_matches('/').to_owned();
    println!();
    println!("Each table is a Delta table. Check it, and read it:");
    println!("  chitose lake verify --lake {}", a.lake);
    println!(
        "  duckdb -c \"INSTALL delta; LOAD delta; select prefecture, count(*) from delta_scan('{root}/pseudonymized/diagnosis') group by 1 order by 1\""
    );
    println!(
        "  python -c \"import polars as pl; print(pl.scan_delta('{root}/pseudonymized/diagnosis').group_by('prefecture').len().collect())\""
    );
    println!(
        "  chitose release --spec release/specs/example.toml --lake {} --release-id first",
        a.lake
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::{human_count, human_rate};

    #[test]
    fn rates_and_counts_read_as_a_person_would_say_them() {
        // indicatif's own {per_sec} printed "3,405.799588547894/s".
        assert_eq!(human_rate(3_405.799_588_547_894), "3.4 k/s");
        assert_eq!(human_rate(850.4), "850/s");
        assert_eq!(human_rate(1_250_000.0), "1.2 M/s");
        assert_eq!(human_rate(f64::NAN), "-");
        assert_eq!(human_count(9_999), "9999");
        assert_eq!(human_count(19_815), "19.8 k");
        assert_eq!(human_count(2_500_000), "2.5 M");
    }
}
