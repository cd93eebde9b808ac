//! `chitose`: one binary, one subcommand per stage and tool.

use anyhow::{Context, Result, bail};
use chitose_ingest::edge::Edge;
use chitose_schemas::catalog::{RAW_EVENT, SchemaStore};
use chitose_schemas::codec::Timestamp;
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

mod bench_cmd;
mod dlq_cmd;
mod kafka_args;
mod lake_cmd;
mod release_cmd;
mod sink_cmd;
mod tail_cmd;
mod topics_cmd;
mod transform_cmd;
mod up_cmd;

// mimalloc, for Rust and librdkafka alike (chitose_runtime::alloc).
chitose_runtime::global_allocator!();

/// Event-streaming pipeline for regional health-data hubs.
#[derive(Parser)]
#[command(name = "chitose", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline locally: embedded broker, simulated hubs, transform, sink.
    Up(up_cmd::UpArgs),
    /// Stream a hub's events into Kafka (files, HTTP, simulate).
    Ingest(IngestArgs),
    /// De-identify raw events into the pseudonymized zone.
    Transform(transform_cmd::TransformArgs),
    /// Land pseudonymized events as Parquet in object storage.
    Sink(sink_cmd::SinkArgs),
    /// Produce an anonymized data set from the lake (k-anonymity, rare
    /// values, a fresh pseudonym key per release).
    Release(release_cmd::ReleaseArgs),
    /// Create and inspect chitose's topics.
    Topics(topics_cmd::TopicsArgs),
    /// Decode a topic's Avro records to JSON lines.
    Tail(tail_cmd::TailArgs),
    /// List and replay dead-lettered records.
    Dlq(dlq_cmd::DlqArgs),
    /// Measure the pipeline on a real broker against the broker alone and a
    /// Python consumer (bench/run writes docs/benchmarks.md).
    Bench(bench_cmd::BenchArgs),
    /// Verify and audit the lake.
    Lake(lake_cmd::LakeArgs),
    /// chitose's version, the linked librdkafka's version and its built-in
    /// features (ssl, sasl_scram, zstd…); exits 1 when one chitose needs is
    /// missing.
    Version,
    /// The Avro contract: list, show and check schemas.
    Schemas {
        #[command(subcommand)]
        command: SchemasCommand,
    },
}

/// `chitose ingest` flags; each overrides the config file and environment.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct IngestArgs {
    #[command(subcommand)]
    command: Option<IngestCommand>,
    /// TOML config file (see docs/ingest.md); env: CHITOSE_INGEST__<KEY>.
    #[arg(long, env = "CHITOSE_INGEST_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets hidden) and exit.
    #[arg(long)]
    print_config: bool,
    /// files, http, simulate or ssmix2.
    #[arg(long)]
    source: Option<String>,
    /// This hub's prefecture (JIS X 0401).
    #[arg(long)]
    prefecture: Option<String>,
    #[command(flatten)]
    kafka: crate::kafka_args::KafkaArgs,
    /// Watched directory (files source), or the storage root (ssmix2).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Stop when the directory is empty (files source).
    #[arg(long)]
    exit_when_idle: bool,
    /// Listen address (http source).
    #[arg(long)]
    listen: Option<String>,
    /// Address of /metrics, /healthz, /readyz.
    #[arg(long)]
    ops_listen: Option<String>,
    /// Events per second (simulate source; 0 = as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Number of events (simulate source; 0 = until stopped).
    #[arg(long)]
    events: Option<u64>,
    /// Generator seed (simulate source).
    #[arg(long)]
    seed: Option<u64>,
    /// Share of malformed records (simulate source).
    #[arg(long)]
    bad_share: Option<f64>,
    /// Logs as JSON lines.
    #[arg(long)]
    log_json: bool,
}

#[derive(Subcommand)]
enum IngestCommand {
    /// Make a bearer token for a hub's HTTP clients and the hash that the
    /// ingest instance of that prefecture stores (`http.token_sha256`).
    /// The hash binds the token to the prefecture.
    Token {
        /// The hub's prefecture (JIS X 0401).
        #[arg(long)]
        prefecture: String,
        /// Hash a token read from standard input instead of making one.
        #[arg(long)]
        stdin: bool,
    },
    /// Write a seeded SS-MIX2 standardized storage tree (HL7 v2.5,
    /// ISO-2022-JP) for trying `--source ssmix2`.
    Ssmix2Tree {
        /// Storage root to write into.
        #[arg(long)]
        dir: PathBuf,
        /// The hub's prefecture (JIS X 0401).
        #[arg(long, default_value = "27")]
        prefecture: String,
        /// Clinical messages to write (ADT-00 and cancellations come on top).
        #[arg(long, default_value_t = 1000)]
        events: usize,
        /// Generator seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Cancel every Nth order with a second file (0: none).
        #[arg(long, default_value_t = 20)]
        cancel_every: usize,
    },
}

/// Arguments of a subcommand that is not built yet (accepted, ignored).
#[derive(Subcommand)]
enum SchemasCommand {
    /// Every schema version with its fingerprint.
    List {
        /// Load `.avsc` files from this folder instead of the built-in ones.
        #[arg(long, env = "CHITOSE_SCHEMA_DIR")]
        dir: Option<PathBuf>,
    },
    /// Print one schema's text.
    Show {
        /// Full name, e.g. chitose.raw.RawEvent.
        name: String,
        /// Version (default: newest).
        #[arg(long)]
        version: Option<u32>,
    },
    /// Check NDJSON raw events (a hub export) against the contract.
    ///
    /// Prints one line per rejected record (line number and reason, never a
    /// value) and a summary; exits 1 when any record is rejected.
    Check {
        /// NDJSON file (default: standard input).
        file: Option<PathBuf>,
        /// The hub's prefecture: records of another prefecture are rejected.
        #[arg(long)]
        prefecture: Option<String>,
    },
    /// Print the JSON Schema of the JSON form, generated from the .avsc.
    JsonSchema,
    /// Print the data dictionary (Markdown), generated from the .avsc.
    Docs {
        /// Load `.avsc` files from this folder instead of the built-in ones.
        #[arg(long, env = "CHITOSE_SCHEMA_DIR")]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // Before anything is created: lakes, rejects, checkpoints and keys are
    // the owner's alone.
    chitose_runtime::private::owner_only_umask();
    chitose_runtime::alloc::without_huge_pages();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up_cmd::run(args),
        Command::Ingest(args) => ingest(args),
        Command::Transform(args) => transform_cmd::run(args),
        Command::Sink(args) => sink_cmd::run(args),
        Command::Release(args) => release_cmd::run(args),
        Command::Dlq(args) => dlq_cmd::run(args),
        Command::Topics(args) => topics_cmd::run(args),
        Command::Tail(args) => tail_cmd::run(args),
        Command::Lake(args) => lake_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::Version => version(),
        Command::Schemas { command } => schemas(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chitose: {e:#}");
            exit_code(&e)
        }
    }
}

/// 2 for a configuration the command refused (as for bad arguments:
/// nothing ran), 1 for anything else.
fn exit_code(e: &anyhow::Error) -> ExitCode {
    if e.chain()
        .any(|c| c.is::<chitose_runtime::config::ConfigError>())
    {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

/// Loads a service's layered config; with `--print-config` prints it
/// (secrets hidden) and returns None.
pub(crate) fn load_config<T>(
    file: Option<&std::path::Path>,
    prefix: &str,
    flags: Vec<(&str, toml::Value)>,
    print: bool,
) -> Result<Option<T>>
where
    T: serde::de::DeserializeOwned + serde::Serialize + Default + chitose_runtime::config::Validate,
{
    if print {
        // The effective configuration as loaded, even one its service's
        // checks would refuse: that is when an operator looks at it.
        let cfg: T = chitose_runtime::config::load(file, prefix, std::env::vars(), flags)?;
        print!("{}", chitose_runtime::config::print_redacted(&cfg));
        return Ok(None);
    }
    // Every problem of the file, the environment, the flags and the
    // service's own checks, in one error (exit code 2).
    let cfg: T = chitose_runtime::config::load_checked(file, prefix, std::env::vars(), flags)?;
    Ok(Some(cfg))
}

/// Runs a service on a multi-threaded runtime until it ends or SIGTERM /
/// Ctrl-C asks it to stop.
pub(crate) fn serve<T, E, Fut>(
    service: impl FnOnce(chitose_runtime::shutdown::Shutdown) -> Fut,
) -> Result<T>
where
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(async { service(chitose_runtime::shutdown::Shutdown::on_signals()).await })?)
}

/// A service's last line: plain text for a person, or one more JSON log
/// line when logs are JSON (a log shipper reads every line as JSON).
pub(crate) fn report(json: bool, line: String) {
    if json {
        tracing::info!(target: "chitose", "{line}");
    } else {
        eprintln!("{line}");
    }
}

/// The filter every command logs with: INFO, librdkafka's warnings, and
/// `RUST_LOG` over both.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,rdkafka=warn".into());
    // delta-kernel narrates every snapshot at INFO (spans, no message):
    // its warnings are enough, unless RUST_LOG asks for it by name.
    if !std::env::var("RUST_LOG")
        .unwrap_or_default()
        .contains("delta_kernel")
    {
        for d in ["delta_kernel=warn", "delta_kernel_default_engine=warn"] {
            filter = filter.add_directive(d.parse().expect("a valid directive"));
        }
    }
    filter
}

pub(crate) fn init_logs(json: bool) {
    let b = tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

/// Logs to a new file `<dir>/<name>-<UTC time>.log` instead of the
/// terminal; returns its path.
pub(crate) fn init_logs_to_file(dir: &std::path::Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!(
        "{name}-{}.log",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    let file = std::fs::File::create(&path)
        .with_context(|| format!("creating the log file {}", path.display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .init();
    Ok(path)
}

fn ingest(a: IngestArgs) -> Result<ExitCode> {
    use chitose_ingest::config::IngestConfig;
    if let Some(IngestCommand::Token { prefecture, stdin }) = a.command {
        let token = if stdin {
            let mut t = String::new();
            std::io::stdin().read_line(&mut t)?;
            t.trim_end_matches(['\n', '\r']).to_owned()
        } else {
            chitose_ingest::token::generate()
        };
        if token.len() < 32 {
            bail!(
                "ingest token: expected a token of at least 32 characters, found {}",
                token.len()
            );
        }
        if !stdin {
            println!("token        {token}");
        }
        println!(
            "token_sha256 {}",
            chitose_ingest::token::hash_hex(&prefecture, &token)
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(IngestCommand::Ssmix2Tree {
        dir,
        prefecture,
        events,
        seed,
        cancel_every,
    }) = a.command
    {
        let mut g =
            chitose_ingest::simulate::Generator::new(chitose_ingest::simulate::SimConfig {
                seed,
                prefectures: vec![prefecture.clone()],
                hub: Some(prefecture),
                ..Default::default()
            })?;
        let r = chitose_ingest::simulate::ssmix2::write_tree(&mut g, &dir, events, cancel_every)?;
        println!(
            "wrote {} messages ({} cancellations) under {}",
            r.messages,
            r.cancellations,
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    use toml::Value as V;
    let mut flags: Vec<(&str, V)> = Vec::new();
    let is_ssmix2 = a.source.as_deref() == Some("ssmix2");
    if let Some(v) = a.source {
        flags.push(("source", V::String(v)));
    }
    if let Some(v) = a.prefecture {
        flags.push(("prefecture", V::String(v)));
    }
    flags.extend(a.kafka.flag()?);
    if let Some(v) = a.dir {
        // The SS-MIX2 source reads a storage root; the others a drop folder.
        let key = if is_ssmix2 {
            "ssmix2.root"
        } else {
            "files.dir"
        };
        flags.push((key, V::String(v.display().to_string())));
    }
    if a.exit_when_idle {
        flags.push(("files.exit_when_idle", V::Boolean(true)));
    }
    if let Some(v) = a.listen {
        flags.push(("http.listen", V::String(v)));
    }
    if let Some(v) = a.ops_listen {
        flags.push(("ops_listen", V::String(v)));
    }
    if let Some(v) = a.rate {
        flags.push(("simulate.rate", V::Float(v)));
    }
    if let Some(v) = a.events {
        flags.push((
            "simulate.events",
            V::Integer(i64::try_from(v).context("--events too large")?),
        ));
    }
    if let Some(v) = a.seed {
        flags.push((
            "simulate.generator.seed",
            V::Integer(i64::try_from(v).context("--seed too large")?),
        ));
    }
    if let Some(v) = a.bad_share {
        flags.push(("simulate.generator.bad_share", V::Float(v)));
    }
    let Some(mut cfg) =
        load_config::<IngestConfig>(a.config.as_deref(), "ingest", flags, a.print_config)?
    else {
        return Ok(ExitCode::SUCCESS);
    };
    init_logs(a.log_json);
    cfg.validate()?;
    kafka_args::prepare(&mut cfg.kafka)?;
    let summary = serve(|shutdown| chitose_ingest::service::run(cfg, shutdown))?;
    report(
        a.log_json,
        format!(
            "read {}, accepted {}, rejected {}",
            summary.read, summary.accepted, summary.rejected
        ),
    );
    Ok(ExitCode::SUCCESS)
}

fn version() -> Result<ExitCode> {
    use chitose_runtime::kafka::{REQUIRED_FEATURES, librdkafka_build};
    let b = librdkafka_build()?;
    println!("chitose {}", env!("CARGO_PKG_VERSION"));
    println!("librdkafka {}", b.version);
    println!("librdkafka builtin.features {}", b.features.join(","));
    let missing: Vec<&str> = REQUIRED_FEATURES
        .iter()
        .filter(|f| !b.features.iter().any(|x| x == *f))
        .copied()
        .collect();
    if missing.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "chitose: expected librdkafka with {}, found it built without {}",
        REQUIRED_FEATURES.join(", "),
        missing.join(", ")
    );
    Ok(ExitCode::from(1))
}

fn schemas(cmd: SchemasCommand) -> Result<ExitCode> {
    let out = std::io::stdout();
    let mut out = out.lock();
    match cmd {
        SchemasCommand::List { dir } => {
            let store = match dir {
                Some(d) => SchemaStore::from_dir(&d)?,
                None => SchemaStore::embedded(),
            };
            writeln!(
                out,
                "{:<32} {:>7}  {:<16}  path",
                "name", "version", "fingerprint"
            )?;
            for e in store.iter() {
                writeln!(
                    out,
                    "{:<32} {:>7}  {:016x}  {}",
                    e.full_name, e.version, e.fingerprint, e.path
                )?;
            }
        }
        SchemasCommand::Show { name, version } => {
            let store = SchemaStore::embedded();
            let versions = store.versions(&name);
            let e = match version {
                Some(v) => versions.into_iter().find(|e| e.version == v),
                None => versions.last().copied(),
            };
            let Some(e) = e else {
                bail!(
                    "schemas show: expected one of {}, found {name}{}",
                    store.names().collect::<Vec<_>>().join(", "),
                    version.map(|v| format!(" version {v}")).unwrap_or_default()
                );
            };
            out.write_all(e.text.as_bytes())?;
            writeln!(out)?;
        }
        SchemasCommand::Docs { dir } => {
            let store = match dir {
                Some(d) => SchemaStore::from_dir(&d)?,
                None => SchemaStore::embedded(),
            };
            out.write_all(chitose_schemas::docs::data_dictionary(&store).as_bytes())?;
        }
        SchemasCommand::JsonSchema => {
            let store = SchemaStore::embedded();
            let raw = store.latest(RAW_EVENT).context("built-in raw schema")?;
            let js = chitose_schemas::json_schema::generate(
                &raw.schema,
                "https://chitose.invalid/schemas/raw_event.schema.json",
            );
            serde_json::to_writer_pretty(&mut out, &js)?;
            writeln!(out)?;
        }
        SchemasCommand::Check { file, prefecture } => {
            let store = SchemaStore::embedded();
            let edge = Edge::new(&store, prefecture);
            let reader: Box<dyn BufRead> = match &file {
                Some(p) => Box::new(std::io::BufReader::new(
                    std::fs::File::open(p)
                        .with_context(|| format!("cannot open {}", p.display()))?,
                )),
                None => Box::new(std::io::stdin().lock()),
            };
            let now = Timestamp::now();
            let (mut accepted, mut rejected) = (0u64, 0u64);
            let mut reasons: BTreeMap<&'static str, u64> = BTreeMap::new();
            let mut err = std::io::stderr().lock();
            for (i, line) in reader.split(b'\n').enumerate() {
                let mut line = line?;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match edge.accept(&line, now) {
                    Ok(_) => accepted += 1,
                    Err(e) => {
                        rejected += 1;
                        *reasons.entry(e.reason.as_str()).or_default() += 1;
                        writeln!(err, "line {}: {e}", i + 1)?;
                    }
                }
            }
            writeln!(out, "accepted {accepted}, rejected {rejected}")?;
            for (r, n) in reasons {
                writeln!(out, "  {r}: {n}")?;
            }
            if rejected > 0 {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
