//! `chitose dlq list | replay`: what was dead-lettered, and re-submitting it
//! to its source topic after the cause is fixed.

use crate::topic_read::{Start, assign, drain};
use anyhow::{Context, Result};
use chitose_runtime::dlq;
use chitose_runtime::kafka::ErrorMemory;
use clap::{Args, Subcommand};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
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
    #[arg(long, global = true, default_value = "health.dlq")]
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
        #[arg(long, default_value = "health.raw.")]
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
            drain(
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
            let c: BaseConsumer<ErrorMemory> = kafka
                .consumer_config("chitose-dlq-replay")
                .create_with_context(ErrorMemory::default())?;
            let ends = assign(&c, &a.topic, Start::Committed)?;
            let producer: FutureProducer = kafka.producer_config().create()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (mut replayed, mut passed, mut refused) = (0u64, 0u64, 0u64);
            let mut next: BTreeMap<i32, i64> = BTreeMap::new();
            let mut pending = Vec::new();
            drain(
                &c,
                ends,
                false,
                || false,
                |m| {
                    next.insert(m.partition(), m.offset() + 1);
                    let matches = dlq::header(m, dlq::STAGE) == Some(stage.as_str())
                        && class
                            .as_deref()
                            .is_none_or(|k| dlq::header(m, dlq::ERROR_CLASS) == Some(k));
                    let Some(source) = dlq::header(m, dlq::SOURCE_TOPIC).filter(|_| matches) else {
                        passed += 1;
                        return Ok(());
                    };
                    if !is_raw_topic(source, &raw_prefix) {
                        refused += 1;
                        eprintln!(
                            "refused {}/{}: expected a source topic {raw_prefix}NN, found another topic",
                            m.partition(),
                            m.offset()
                        );
                        return Ok(());
                    }
                    replayed += 1;
                    if dry_run {
                        println!("would replay {}/{} to {source}", m.partition(), m.offset());
                        return Ok(());
                    }
                    let mut rec = FutureRecord::to(source)
                        .payload(m.payload().unwrap_or(&[]))
                        .headers(dlq::replay_headers(m));
                    if let Some(k) = m.key() {
                        rec = rec.key(k);
                    }
                    pending.push(producer.send_result(rec).map_err(|(e, _)| {
                        anyhow::anyhow!("replaying {}/{}: {e}", m.partition(), m.offset())
                    })?);
                    Ok(())
                },
            )?;
            if !dry_run {
                // Commit the cursor only once every replayed record is acknowledged.
                for f in pending {
                    rt.block_on(f)
                        .context("delivery cancelled")?
                        .map_err(|(e, _)| anyhow::anyhow!("replay not acknowledged: {e}"))?;
                }
                let mut tpl = TopicPartitionList::new();
                for (p, o) in &next {
                    tpl.add_partition_offset(&a.topic, *p, Offset::Offset(*o))?;
                }
                if !next.is_empty() {
                    c.commit(&tpl, CommitMode::Sync)?;
                }
            }
            println!(
                "{} {replayed} records, passed over {passed}, refused {refused}",
                if dry_run { "would replay" } else { "replayed" }
            );
            Ok(if refused > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// Whether `topic` is a hub's raw topic, `<raw_prefix>NN`: the only place a
/// replay may write, since only the transform checks what it reads.
fn is_raw_topic(topic: &str, raw_prefix: &str) -> bool {
    topic
        .strip_prefix(raw_prefix)
        .is_some_and(|nn| nn.len() == 2 && nn.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::is_raw_topic;

    #[test]
    fn replay_goes_only_to_raw_topics() {
        assert!(is_raw_topic("health.raw.27", "health.raw."));
        for t in [
            "health.pseudo.diagnosis",
            "health.raw.27x",
            "health.raw.",
            "health.dlq",
            "other.raw.27",
            "health.raw.2",
        ] {
            assert!(!is_raw_topic(t, "health.raw."), "{t}");
        }
    }
}
