//! `chitose transform`: run the worker, explain or check a policy, make keys.

use anyhow::{Context, Result, bail};
use chitose_transform::config::TransformConfig;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// `chitose transform` flags; each overrides the config file and environment.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TransformArgs {
    #[command(subcommand)]
    command: Option<TransformCommand>,
    /// TOML config file; env: CHITOSE_TRANSFORM__<KEY>.
    #[arg(long, env = "CHITOSE_TRANSFORM_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets hidden) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    kafka: crate::kafka_args::KafkaArgs,
    /// Shipped profile name or policy file.
    #[arg(long)]
    policy: Option<String>,
    /// Folder of `<key_id>.key` files.
    #[arg(long)]
    keys_dir: Option<PathBuf>,
    /// Instance id, unique in the consumer group (transactional.id suffix).
    #[arg(long)]
    instance_id: Option<String>,
    /// At-least-once instead of Kafka transactions (brokers without them).
    #[arg(long)]
    at_least_once: bool,
    /// Address of /metrics, /healthz, /readyz.
    #[arg(long)]
    ops_listen: Option<String>,
    /// Logs as JSON lines.
    #[arg(long)]
    log_json: bool,
}

#[derive(Subcommand)]
enum TransformCommand {
    /// Policies: what happens to every field.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Write fresh random 32-byte keys to `<dir>/<id>.key` (mode 0600):
    /// without --id, each key the default configuration needs (pseudonym,
    /// date shift, event id) that the folder does not have yet.
    Keygen {
        /// Key id (the file name; written with every pseudonym).
        #[arg(long)]
        id: Option<String>,
        /// Folder.
        #[arg(long, default_value = "keys")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print, per event type, what happens to each field (Markdown table),
    /// generated from the policy as the transform compiles it.
    Explain {
        /// Shipped profile name or policy file.
        #[arg(long, default_value = "pseudonymized")]
        policy: String,
    },
    /// Load and compile a policy; exit 1 with the error (file:line) if it is invalid.
    Check {
        /// Shipped profile name or policy file.
        policy: String,
    },
}

fn compile(
    policy: &str,
) -> Result<(
    chitose_transform::policy::Policy,
    Vec<chitose_transform::plan::TablePlan>,
)> {
    let store = chitose_schemas::catalog::SchemaStore::embedded();
    let raw = chitose_transform::core::raw_leaves(&store);
    let p = chitose_transform::policy::Policy::load(policy, &raw)?;
    let plans = chitose_transform::plan::compile(&p, &raw, &store)?;
    Ok((p, plans))
}

/// Runs `chitose transform …`.
pub fn run(a: TransformArgs) -> Result<ExitCode> {
    match a.command {
        Some(TransformCommand::Policy {
            command: PolicyCommand::Explain { policy },
        }) => {
            let (p, plans) = compile(&policy)?;
            let raw = chitose_transform::core::raw_leaves(
                &chitose_schemas::catalog::SchemaStore::embedded(),
            );
            print!("{}", chitose_transform::explain::explain(&p, &plans, &raw));
            return Ok(ExitCode::SUCCESS);
        }
        Some(TransformCommand::Policy {
            command: PolicyCommand::Check { policy },
        }) => {
            let (p, plans) = compile(&policy)?;
            println!(
                "{}: profile {} version {}: {} rules, {} tables: ok",
                policy,
                p.profile,
                p.version,
                p.rules.len(),
                plans.len()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Some(TransformCommand::Keygen { id, dir }) => {
            let defaults = chitose_transform::keys::KeysConfig::default();
            let ids: Vec<String> = match &id {
                Some(id) => vec![id.clone()],
                None => defaults
                    .needed(true)
                    .into_iter()
                    .map(|(_, id)| id.to_owned())
                    .collect(),
            };
            for id in &ids {
                if id.is_empty()
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    bail!("--id: expected letters, digits, - or _, found {id:?}");
                }
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for id in &ids {
                let path = dir.join(format!("{id}.key"));
                if path.exists() {
                    if id.as_str() == ids[0] && ids.len() == 1 {
                        bail!(
                            "{}: exists; a key is never overwritten (pseudonyms depend on it)",
                            path.display()
                        );
                    }
                    println!("kept {} (exists; never overwritten)", path.display());
                    continue;
                }
                write_secret(&path, &chitose_transform::keys::generate_hex())?;
                // The path only: key material is never printed.
                println!("wrote {}", path.display());
            }
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    use toml::Value as V;
    let mut flags: Vec<(&str, V)> = Vec::new();
    flags.extend(a.kafka.flag()?);
    if let Some(v) = a.policy {
        flags.push(("policy", V::String(v)));
    }
    if let Some(v) = a.keys_dir {
        flags.push(("keys.dir", V::String(v.display().to_string())));
    }
    if let Some(v) = a.instance_id {
        flags.push(("instance_id", V::String(v)));
    }
    if a.at_least_once {
        flags.push(("exactly_once", V::Boolean(false)));
    }
    if let Some(v) = a.ops_listen {
        flags.push(("ops_listen", V::String(v)));
    }
    let Some(mut cfg) = crate::load_config::<TransformConfig>(
        a.config.as_deref(),
        "transform",
        flags,
        a.print_config,
    )?
    else {
        return Ok(ExitCode::SUCCESS);
    };
    let log_json = a.log_json;
    crate::init_logs(log_json);
    crate::kafka_args::prepare(&mut cfg.kafka)?;
    // Every start-up check (config, policy, keys) before touching Kafka.
    let transformer = chitose_transform::service::build(&cfg, std::env::vars())?;
    let summary =
        crate::serve(|shutdown| chitose_transform::service::run(cfg, transformer, shutdown))?;
    crate::report(
        log_json,
        format!(
            "written {}, dead-lettered {}, aborted batches {}",
            summary.written, summary.dlq, summary.aborted
        ),
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn write_secret(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{text}")?;
    Ok(())
}
