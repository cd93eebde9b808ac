//! `chitose tail <topic>`: a topic's records as JSON lines, decoded with
//! the contract's schemas (single-object encoding, or Confluent framing
//! through a registry). Direct identifiers are masked unless
//! `--show-identifiers`; message keys (a hub-local patient id on raw
//! topics) likewise.

use anyhow::{Context, Result};
use chitose_runtime::kafka::ErrorMemory;
use chitose_runtime::topic_read::{Start, assign, drain};
use chitose_schemas::catalog::SchemaStore;
use chitose_schemas::registry::SchemaRegistry;
use chitose_schemas::render::{MASK, Renderer};
use clap::Args;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{Headers, Message};
use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// `chitose tail` flags.
#[derive(Args)]
pub struct TailArgs {
    /// Topic, e.g. health.raw.27, health.pseudo.lab_result, health.dlq.
    topic: String,
    #[command(flatten)]
    kafka: crate::kafka_args::KafkaArgs,
    /// Keep reading new records until Ctrl-C.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Start this many records before the end of each partition (default:
    /// from the beginning).
    #[arg(long)]
    last: Option<i64>,
    /// Stop after printing this many records.
    #[arg(long)]
    limit: Option<u64>,
    /// Print direct identifiers (names, phone, address, insurance numbers,
    /// keys) instead of masking them. Raw topics only hold them; mind where
    /// the output goes.
    #[arg(long)]
    show_identifiers: bool,
    /// Confluent schema registry, for Confluent-framed records.
    #[arg(long, env = "CHITOSE_REGISTRY_URL")]
    registry_url: Option<url::Url>,
    /// Load `.avsc` files from this folder as well as the built-in ones.
    #[arg(long, env = "CHITOSE_SCHEMA_DIR")]
    schemas_dir: Option<PathBuf>,
}

/// Runs `chitose tail`.
pub fn run(a: TailArgs) -> Result<ExitCode> {
    let mut store = SchemaStore::embedded();
    if let Some(d) = &a.schemas_dir {
        store.add_dir(d)?;
    }
    let mut renderer = Renderer::new(store, a.show_identifiers);
    let registry = a
        .registry_url
        .clone()
        .map(chitose_runtime::registry::HttpRegistry::new);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let kafka = a.kafka.settings()?;
    let mut cfg = kafka.consumer_config(&format!("chitose-tail-{}", std::process::id()));
    cfg.set("isolation.level", "read_committed");
    let c: BaseConsumer<ErrorMemory> = cfg.create_with_context(ErrorMemory::default())?;
    let start = match a.last {
        Some(n) => Start::Last(n),
        None => Start::Beginning,
    };
    let ends = assign(&c, &a.topic, start)?;

    let stop = Arc::new(AtomicBool::new(false));
    if a.follow {
        let s = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let _ = tokio::signal::ctrl_c().await;
            });
            s.store(true, Ordering::Relaxed);
        });
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    let printed = std::cell::Cell::new(0u64);
    let mut failed = 0u64;
    let limit = a.limit.unwrap_or(u64::MAX);
    let done = |n: u64| n >= limit;
    let result = drain::<anyhow::Error>(
        &c,
        ends,
        a.follow,
        || stop.load(Ordering::Relaxed) || done(printed.get()),
        |m| {
            if done(printed.get()) {
                return Ok(());
            }
            let mut line = Map::new();
            line.insert("partition".into(), json!(m.partition()));
            line.insert("offset".into(), json!(m.offset()));
            if let Some(ts) = m.timestamp().to_millis() {
                line.insert(
                    "timestamp".into(),
                    json!(chitose_schemas::codec::Timestamp(ts).to_string()),
                );
            }
            if let Some(k) = m.key() {
                let k = if a.show_identifiers {
                    json!(String::from_utf8_lossy(k))
                } else {
                    json!(MASK)
                };
                line.insert("key".into(), k);
            }
            // DLQ coordinates and reasons (headers never hold a value).
            if let Some(h) = m.headers() {
                let mut dl = Map::new();
                for hd in h.iter() {
                    if let (Some(name), Some(v)) = (hd.key.strip_prefix("chitose.dlq."), hd.value) {
                        dl.insert(name.into(), json!(String::from_utf8_lossy(v)));
                    }
                }
                if !dl.is_empty() {
                    line.insert("dlq".into(), Value::Object(dl));
                }
            }
            let payload = m.payload().unwrap_or(&[]);
            if let (Some(id), Some(reg)) = (renderer.unknown_confluent_id(payload), &registry) {
                let text = rt
                    .block_on(reg.schema_by_id(id))
                    .with_context(|| format!("registry lookup of schema id {id}"))?;
                renderer
                    .add_registry_schema(id, &text)
                    .with_context(|| format!("registry schema {id}"))?;
            }
            match renderer.render(payload) {
                Ok(r) => {
                    line.insert(
                        "schema".into(),
                        json!(format!("{} v{}", r.schema.full_name, r.schema.version)),
                    );
                    line.insert("value".into(), r.value);
                }
                Err(e) => {
                    failed += 1;
                    line.insert("error".into(), json!(e.to_string()));
                    line.insert("bytes".into(), json!(payload.len()));
                }
            }
            serde_json::to_writer(&mut out, &Value::Object(line))?;
            writeln!(out)?;
            printed.set(printed.get() + 1);
            Ok(())
        },
    );
    // A closed pipe (`| head`) ends the tail quietly.
    if let Err(e) = result {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return Ok(ExitCode::SUCCESS);
        }
        return Err(e);
    }
    eprintln!("{} records, {failed} not decodable", printed.get());
    Ok(ExitCode::SUCCESS)
}
