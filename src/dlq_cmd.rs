//! `chitose dlq list | replay`: what was dead-lettered, and re-submitting it
//! to its source topic after the cause is fixed.

use anyhow::Result;
use chitose_runtime::dlq;
use chitose_runtime::kafka::ErrorMemory;
use chitose_runtime::topic_read::{Start, assign, drain};
use clap::{Args, Subcommand};
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use std::collections::BTreeMap;
use std::process::ExitCode;

/// `chitose dlq` arguments.
#[derive(Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
    #[command(flatten)]
    kafka: crate::kafka_args::KafkaArgs,
    /// The dead-letter topic.
    #[arg(long, global = true, default_value = chitose_runtime::topics::DLQ)]
    topic: String,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// One line per dead-lettered record (coordinates, stage, class, error —
    /// never the record), then counts per class.
    List {
        /// Show at most this many records (counts cover all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Re-submit dead-lettered records to their source topics, from where the
    /// last replay stopped (consumer group `chitose-dlq-replay`) to the end.
    /// Records that fail again come back to the DLQ at its end.
    Replay {
        /// Only records of this error class (decode, validation, policy);
        /// the others are passed over and not offered again.
        #[arg(long)]
        class: Option<String>,
        /// Only records of this stage.
        #[arg(long, default_value = "transform")]
        stage: String,
        /// Print what would be replayed; send and commit nothing.
        #[arg(long)]
        dry_run: bool,
        /// Records go back only to `<raw-prefix>NN` topics (a hub's raw
        /// topic): a DLQ record whose header names any other topic (a
        /// pseudonymized topic the sink lands unchecked) is refused.
        #[arg(long, default_value = chitose_runtime::topics::RAW_PREFIX)]
        raw_prefix: String,
    },
}

/// Runs `chitose dlq …`.
pub fn run(a: DlqArgs) -> Result<ExitCode> {
    let kafka = a.kafka.settings()?;
    match a.command {
        DlqCommand::List { limit } => {
            let mut cfg = kafka.consumer_config("chitose-dlq-list");
            // Reads from the start every time; nothing is committed.
            cfg.set("isolation.level", "read_committed");
            let c: BaseConsumer<ErrorMemory> = cfg.create_with_context(ErrorMemory::default())?;
            let ends = assign(&c, &a.topic, Start::Beginning)?;
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            let mut shown = 0;
            drain::<anyhow::Error>(
                &c,
                ends,
                false,
                || false,
                |m| {
                    let h = |k| dlq::header(m, k).unwrap_or("-");
                    let key = format!("{} {}", h(dlq::STAGE), h(dlq::ERROR_CLASS));
                    *counts.entry(key).or_default() += 1;
                    if shown < limit {
                        shown += 1;
                        println!(
                            "{}/{}\t{}\t{}\t{}/{}/{}\t{}",
                            m.partition(),
                            m.offset(),
                            h(dlq::STAGE),
                            h(dlq::ERROR_CLASS),
                            h(dlq::SOURCE_TOPIC),
                            h(dlq::SOURCE_PARTITION),
                            h(dlq::SOURCE_OFFSET),
                            h(dlq::ERROR)
                        );
                    }
                    Ok(())
                },
            )?;
            let total: u64 = counts.values().sum();
            println!("{total} dead-lettered records");
            for (k, n) in counts {
                println!("  {k}: {n}");
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay {
            class,
            stage,
            dry_run,
            raw_prefix,
        } => {
            let filter = dlq::ReplayFilter {
                stage,
                class,
                raw_prefix,
            };
            let sum = dlq::replay(&kafka, &a.topic, &filter, dry_run, |step| match step {
                dlq::ReplayStep::Refused { partition, offset } => eprintln!(
                    "refused {partition}/{offset}: expected a source topic {}NN, found another topic",
                    filter.raw_prefix
                ),
                dlq::ReplayStep::Replayed {
                    partition,
                    offset,
                    to,
                } if dry_run => println!("would replay {partition}/{offset} to {to}"),
                dlq::ReplayStep::Replayed { .. } => {}
            })?;
            println!(
                "{} {} records, passed over {}, refused {}",
                if dry_run { "would replay" } else { "replayed" },
                sum.replayed,
                sum.passed,
                sum.refused
            );
            Ok(if sum.refused > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
