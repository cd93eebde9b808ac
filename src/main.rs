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
    Up(NotBuilt),
    /// Stream a hub's events into Kafka (files, HTTP, FHIR, simulate).
    Ingest(NotBuilt),
    /// De-identify raw events into the pseudonymized zone.
    Transform(NotBuilt),
    /// Land pseudonymized events as Parquet in object storage.
    Sink(NotBuilt),
    /// Produce an anonymized data set from the lake.
    Release(NotBuilt),
    /// Create and inspect chitose's topics.
    Topics(NotBuilt),
    /// Decode a topic's Avro records to JSON lines.
    Tail(NotBuilt),
    /// List and replay dead-lettered records.
    Dlq(NotBuilt),
    /// Verify and audit the lake.
    Lake(NotBuilt),
    /// The Avro contract: list, show and check schemas.
    Schemas {
        #[command(subcommand)]
        command: SchemasCommand,
    },
}

/// Arguments of a subcommand that is not built yet (accepted, ignored).
#[derive(Args)]
struct NotBuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<String>,
}

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
}

fn not_built(name: &str, issue: &str) -> ExitCode {
    eprintln!(
        "chitose {name}: not built yet. It lands with the {issue} issue; until then the \
         contract tools work: `chitose schemas --help`."
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(_) => return not_built("up", "\"chitose up, operations and deployment\""),
        Command::Ingest(_) => return not_built("ingest", "ingest"),
        Command::Transform(_) => return not_built("transform", "transform"),
        Command::Sink(_) => return not_built("sink", "sink"),
        Command::Release(_) => return not_built("release", "release"),
        Command::Topics(_) | Command::Tail(_) | Command::Dlq(_) | Command::Lake(_) => {
            return not_built("tools", "\"chitose up, operations and deployment\"");
        }
        Command::Schemas { command } => schemas(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chitose: {e:#}");
            ExitCode::FAILURE
        }
    }
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
