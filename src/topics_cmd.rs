//! `chitose topics create | list`: chitose's topics with the partitions and
//! configs the design expects, so a new cluster is not left to the broker's
//! auto-create defaults (one partition, the broker's retention).

use anyhow::{Context, Result, bail};
use chitose_runtime::kafka::{Created, ErrorMemory};
use chitose_runtime::topics;
use clap::{Args, Subcommand};
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

/// `chitose topics` arguments.
#[derive(Args)]
pub struct TopicsArgs {
    #[command(subcommand)]
    command: TopicsCommand,
    #[command(flatten)]
    kafka: crate::kafka_args::KafkaArgs,
    /// Topic name prefix: <prefix>.raw.NN, <prefix>.pseudo.<type>, <prefix>.dlq
    /// (the services' defaults use "health").
    #[arg(long, global = true, default_value = topics::PREFIX)]
    prefix: String,
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create every chitose topic that does not exist yet: health.raw.<NN>
    /// per prefecture, health.pseudo.<event type> per lake table, health.dlq.
    /// Existing topics are never altered; one with fewer partitions than
    /// asked is reported and the command exits 1.
    Create {
        /// Hub prefectures (JIS X 0401), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "25,26,27,28,29,30,31,36")]
        prefectures: Vec<String>,
        /// Partitions of each raw topic (the transform's parallelism).
        #[arg(long, default_value_t = 6)]
        raw_partitions: i32,
        /// Partitions of each pseudonymized topic (the sink's parallelism).
        #[arg(long, default_value_t = 6)]
        pseudo_partitions: i32,
        /// Partitions of the dead-letter topic.
        #[arg(long, default_value_t = 3)]
        dlq_partitions: i32,
        /// Replication factor (3 in production; 1 on a single broker).
        #[arg(long, default_value_t = 1)]
        replication: i32,
        /// Days raw events are kept (the replay window after a transform bug).
        #[arg(long, default_value_t = 7)]
        raw_retention_days: u64,
        /// Days pseudonymized events are kept (the sink's catch-up window).
        #[arg(long, default_value_t = 3)]
        pseudo_retention_days: u64,
        /// Days dead-lettered records are kept (time to fix and replay);
        /// the DLQ holds raw bytes, so never longer than the raw topics
        /// (the default: the same).
        #[arg(long)]
        dlq_retention_days: Option<u64>,
        /// Extra topic config for every topic, KEY=VALUE (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Print what would be created; create nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Every <prefix>.* topic with its partitions and record count.
    List,
    /// The Kafka ACLs of each role (one principal per hub's ingest, the
    /// transform, the sink, DLQ operators, the topics job), as
    /// `kafka-acls.sh` commands to run once against the cluster.
    Acls {
        /// Hub prefectures (JIS X 0401), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "25,26,27,28,29,30,31,36")]
        prefectures: Vec<String>,
        /// Principals are User:<principal-prefix><role>.
        #[arg(long, default_value = "chitose-")]
        principal_prefix: String,
        /// The transform's consumer group (its transactional ids start with it).
        #[arg(long, default_value = "chitose-transform")]
        transform_group: String,
        /// The sink's consumer group.
        #[arg(long, default_value = "chitose-sink")]
        sink_group: String,
    },
}

/// Runs `chitose topics …`.
pub fn run(a: TopicsArgs) -> Result<ExitCode> {
    match a.command {
        TopicsCommand::Acls {
            prefectures,
            principal_prefix,
            transform_group,
            sink_group,
        } => {
            let layout = chitose_runtime::acl::Layout {
                prefix: a.prefix.clone(),
                prefectures,
                principal_prefix,
                transform_group,
                sink_group,
            };
            print!("{}", chitose_runtime::acl::kafka_acls_script(&layout));
            Ok(ExitCode::SUCCESS)
        }
        TopicsCommand::Create {
            prefectures,
            raw_partitions,
            pseudo_partitions,
            dlq_partitions,
            replication,
            raw_retention_days,
            pseudo_retention_days,
            dlq_retention_days,
            configs,
            dry_run,
        } => {
            for p in &prefectures {
                let valid = p.len() == 2 && p.parse::<u8>().is_ok_and(|n| (1..=47).contains(&n));
                if !valid {
                    bail!("--prefectures: expected JIS X 0401 codes (01–47), found {p:?}");
                }
            }
            let dlq_retention_days = dlq_retention_days.unwrap_or(raw_retention_days);
            if dlq_retention_days > raw_retention_days {
                bail!(
                    "--dlq-retention-days: expected at most the raw topics' {raw_retention_days} \
                     (the DLQ holds raw bytes), found {dlq_retention_days}"
                );
            }
            for (flag, n) in [
                ("--raw-partitions", raw_partitions),
                ("--pseudo-partitions", pseudo_partitions),
                ("--dlq-partitions", dlq_partitions),
                ("--replication", replication),
            ] {
                if n < 1 {
                    bail!("{flag}: expected at least 1, found {n}");
                }
            }
            let mut extra = BTreeMap::new();
            for c in configs {
                let (k, v) = c
                    .split_once('=')
                    .with_context(|| format!("--config: expected KEY=VALUE, found {c:?}"))?;
                extra.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            let specs = topics::layout(
                &a.prefix,
                &prefectures,
                topics::Partitions {
                    raw: raw_partitions,
                    pseudo: pseudo_partitions,
                    dlq: dlq_partitions,
                },
                replication,
                topics::RetentionDays {
                    raw: raw_retention_days,
                    pseudo: pseudo_retention_days,
                    dlq: dlq_retention_days,
                },
                &extra,
            );
            if dry_run {
                for s in &specs {
                    println!(
                        "{}\t{} partitions\treplication {}\t{}",
                        s.name,
                        s.partitions,
                        s.replication,
                        configs_line(&s.configs)
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            let kafka = a.kafka.settings()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let outcome = rt
                .block_on(kafka.create_topics(&specs))
                .with_context(|| format!("creating topics on {}", kafka.bootstrap_servers))?;
            let mut short = 0;
            for (name, what) in &outcome {
                let want = specs
                    .iter()
                    .find(|s| &s.name == name)
                    .map_or(0, |s| s.partitions);
                match what {
                    Created::Created => println!("created  {name} ({want} partitions)"),
                    Created::Exists { partitions } if *partitions < want => {
                        short += 1;
                        println!(
                            "SHORT    {name}: expected {want} partitions, found {partitions}; not changed \
                             (add partitions with your Kafka tools: keys then move between partitions)"
                        );
                    }
                    Created::Exists { partitions } => {
                        println!("exists   {name} ({partitions} partitions)")
                    }
                }
            }
            Ok(if short > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        TopicsCommand::List => {
            let kafka = a.kafka.settings()?;
            let c: BaseConsumer<ErrorMemory> = kafka
                .consumer_config("chitose-topics-list")
                .create_with_context(ErrorMemory::default())?;
            let md = c
                .fetch_metadata(None, Duration::from_secs(10))
                .map_err(|e| {
                    chitose_runtime::topic_read::why(
                        &c,
                        format!("fetching metadata from {}: {e}", kafka.bootstrap_servers),
                    )
                })?;
            let mut topics: Vec<_> = md
                .topics()
                .iter()
                .filter(|t| t.name().starts_with(&format!("{}.", a.prefix)))
                .collect();
            topics.sort_by_key(|t| t.name());
            println!("{:<32} {:>10} {:>12}", "topic", "partitions", "records");
            for t in topics {
                let mut records = 0i64;
                for p in t.partitions() {
                    let (low, high) =
                        c.fetch_watermarks(t.name(), p.id(), Duration::from_secs(10))?;
                    records += high - low;
                }
                println!(
                    "{:<32} {:>10} {:>12}",
                    t.name(),
                    t.partitions().len(),
                    records
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn configs_line(c: &BTreeMap<String, String>) -> String {
    c.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
