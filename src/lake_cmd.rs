//! `chitose lake verify`: the lake against its ledger (see
//! `chitose_sink::verify`); exits 1 on any problem, so it can gate a
//! deployment or a release.

use anyhow::{Context, Result, bail};
use chitose_schemas::catalog::SchemaStore;
use chitose_sink::core::Schemas;
use chitose_sink::lake::Lake;
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// `chitose lake` arguments.
#[derive(Args)]
pub struct LakeArgs {
    #[command(subcommand)]
    command: LakeCommand,
    /// The lake: a folder, or s3://bucket/prefix (credentials from AWS_* etc.).
    #[arg(long, global = true, env = "CHITOSE_LAKE", default_value = "./lake")]
    lake: String,
    /// object_store option KEY=VALUE (e.g. aws_endpoint=http://…); repeatable.
    #[arg(long = "lake-option", global = true, value_name = "KEY=VALUE")]
    lake_options: Vec<String>,
    /// Load `.avsc` files from this folder as well as the built-in ones.
    #[arg(long, global = true, env = "CHITOSE_SCHEMA_DIR")]
    schemas_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum LakeCommand {
    /// Counts per table and partition, schema check, ledger consistency;
    /// exits 1 on any problem.
    Verify {
        /// Delete orphan files (no commit and no intent names them).
        #[arg(long)]
        delete_orphans: bool,
        /// The report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `chitose lake …`.
pub fn run(a: LakeArgs) -> Result<ExitCode> {
    let mut options = BTreeMap::new();
    for o in &a.lake_options {
        let (k, v) = o
            .split_once('=')
            .with_context(|| format!("--lake-option: expected KEY=VALUE, found {o:?}"))?;
        options.insert(k.to_owned(), v.to_owned());
    }
    let lake = Lake::open(&a.lake, &options)?;
    let mut store = SchemaStore::embedded();
    if let Some(d) = &a.schemas_dir {
        store.add_dir(d)?;
    }
    let schemas = Schemas::new(&store);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match a.command {
        LakeCommand::Verify {
            delete_orphans,
            json,
        } => {
            let report = rt
                .block_on(chitose_sink::verify::verify(
                    &lake,
                    &schemas,
                    delete_orphans,
                ))
                .with_context(|| format!("verifying {}", a.lake))?;
            if report.commits == 0 && report.tables.is_empty() && report.problems.is_empty() {
                bail!(
                    "{}: expected a chitose lake, found no ledger and no data files",
                    a.lake
                );
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{:<14} {:<40} {:>6} {:>10} {:>12}",
                    "table", "partition", "files", "rows", "bytes"
                );
                let (mut files, mut rows, mut bytes) = (0, 0, 0);
                for (table, parts) in &report.tables {
                    for (key, c) in parts {
                        println!(
                            "{table:<14} {key:<40} {:>6} {:>10} {:>12}",
                            c.files, c.rows, c.bytes
                        );
                        files += c.files;
                        rows += c.rows;
                        bytes += c.bytes;
                    }
                }
                println!(
                    "{:<14} {:<40} {files:>6} {rows:>10} {bytes:>12}",
                    "total", ""
                );
                println!("{} commit records", report.commits);
                for f in &report.in_flight {
                    println!("in flight (an intent, no commit yet): {f}");
                }
                for p in &report.problems {
                    println!("PROBLEM {p}");
                }
                println!(
                    "{}",
                    if report.problems.is_empty() {
                        "lake consistent".to_owned()
                    } else {
                        format!("{} problems", report.problems.len())
                    }
                );
            }
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
