//! `chitose sink`: land pseudonymized events as Parquet.

use anyhow::Result;
use chitose_sink::config::SinkConfig;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// `chitose sink` flags; each overrides the config file and environment.
#[derive(Args)]
pub struct SinkArgs {
    /// TOML config file; env: CHITOSE_SINK__<KEY>.
    #[arg(long, env = "CHITOSE_SINK_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets hidden) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    kafka: crate::kafka_args::KafkaArgs,
    /// The lake: a folder or s3://bucket/prefix (gs://, az://).
    #[arg(long)]
    lake: Option<String>,
    /// Instance id (in logs).
    #[arg(long)]
    instance_id: Option<String>,
    /// Address of /metrics, /healthz, /readyz.
    #[arg(long)]
    ops_listen: Option<String>,
    /// Logs as JSON lines.
    #[arg(long)]
    log_json: bool,
}

/// Runs `chitose sink`.
pub fn run(a: SinkArgs) -> Result<ExitCode> {
    use toml::Value as V;
    let mut flags: Vec<(&str, V)> = Vec::new();
    flags.extend(a.kafka.flag()?);
    if let Some(v) = a.lake {
        flags.push(("lake", V::String(v)));
    }
    if let Some(v) = a.instance_id {
        flags.push(("instance_id", V::String(v)));
    }
    if let Some(v) = a.ops_listen {
        flags.push(("ops_listen", V::String(v)));
    }
    let Some(mut cfg) =
        crate::load_config::<SinkConfig>(a.config.as_deref(), "sink", flags, a.print_config)?
    else {
        return Ok(ExitCode::SUCCESS);
    };
    crate::init_logs(a.log_json);
    cfg.validate()?;
    crate::kafka_args::prepare(&mut cfg.kafka)?;
    let summary = crate::serve(|shutdown| chitose_sink::service::run(cfg, shutdown))?;
    crate::report(
        a.log_json,
        format!(
            "landed {} rows in {} files; skipped {} replayed or already landed",
            summary.rows, summary.files, summary.skipped
        ),
    );
    Ok(ExitCode::SUCCESS)
}
