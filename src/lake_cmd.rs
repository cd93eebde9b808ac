//! `chitose lake verify`: the lake against its ledger (see
//! `chitose_sink::verify`); exits 1 on any problem, so it can gate a
//! deployment or a release. `chitose lake audit`: the release's risk
//! measures on any table, changing nothing (see `chitose_release`).

use anyhow::{Context, Result, bail};
use chitose_schemas::catalog::SchemaStore;
use chitose_sink::core::Schemas;
use chitose_sink::lake::Lake;
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the lake is, and the schemas that read it (shared by `lake` and
/// `release`).
#[derive(Args)]
pub struct LakeLocation {
    /// The lake: a folder, or s3://bucket/prefix (credentials from AWS_* etc.).
    #[arg(long, global = true, env = "CHITOSE_LAKE", default_value = "./lake")]
    pub lake: String,
    /// object_store option KEY=VALUE (e.g. aws_endpoint=http://…); repeatable.
    #[arg(long = "lake-option", global = true, value_name = "KEY=VALUE")]
    lake_options: Vec<String>,
    /// Load `.avsc` files from this folder as well as the built-in ones.
    #[arg(long, global = true, env = "CHITOSE_SCHEMA_DIR")]
    schemas_dir: Option<PathBuf>,
}

impl LakeLocation {
    /// The lake, the schema store and the lake's table schemas.
    pub fn open(&self) -> Result<(Lake, SchemaStore, Schemas)> {
        let mut options = BTreeMap::new();
        for o in &self.lake_options {
            let (k, v) = o
                .split_once('=')
                .with_context(|| format!("--lake-option: expected KEY=VALUE, found {o:?}"))?;
            options.insert(k.to_owned(), v.to_owned());
        }
        let lake = Lake::open(&self.lake, &options)?;
        let mut store = SchemaStore::embedded();
        if let Some(d) = &self.schemas_dir {
            store.add_dir(d)?;
        }
        let schemas = Schemas::new(&store);
        Ok((lake, store, schemas))
    }
}

/// `chitose lake` arguments.
#[derive(Args)]
pub struct LakeArgs {
    #[command(subcommand)]
    command: LakeCommand,
    #[command(flatten)]
    at: LakeLocation,
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
    /// Re-identification risk of a table over its quasi-identifiers as they
    /// are (classes, smallest class, uniqueness); changes nothing.
    Audit {
        /// Table (diagnosis, lab_result, …).
        #[arg(long)]
        table: String,
        /// Quasi-identifier columns, comma-separated.
        #[arg(long, value_delimiter = ',', required_unless_present = "spec")]
        qi: Vec<String>,
        /// Take the quasi-identifiers and k from this release spec's entry
        /// for the table.
        #[arg(long, conflicts_with = "qi")]
        spec: Option<PathBuf>,
        /// Audit a release's table (anonymized/<ID>/<table>) instead of the
        /// pseudonymized one.
        #[arg(long, value_name = "ID")]
        release: Option<String>,
        /// Count classes below this many patients [default: the spec's k, else 5].
        #[arg(long)]
        k: Option<u32>,
        /// The column naming the patient.
        #[arg(long, default_value = "pseudonym")]
        patient_column: String,
        /// Count records, not patients (a table without a patient column).
        #[arg(long)]
        records: bool,
        /// Exit 1 when the smallest class is below k.
        #[arg(long)]
        check: bool,
        /// The result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `chitose lake …`.
pub fn run(a: LakeArgs) -> Result<ExitCode> {
    let (lake, store, schemas) = a.at.open()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match a.command {
        LakeCommand::Audit {
            table,
            qi,
            spec,
            release,
            k,
            patient_column,
            records,
            check,
            json,
        } => {
            let (qi, rare, spec_k) = match &spec {
                None => (qi, vec![], None),
                Some(path) => {
                    let spec = crate::release_cmd::load_spec(path, &store, &schemas)?;
                    let t = spec
                        .tables
                        .iter()
                        .find(|t| t.name == table)
                        .with_context(|| {
                            format!(
                                "{}: expected a [[table]] named {table}, found none",
                                path.display()
                            )
                        })?;
                    (t.qi_columns(), t.rare_rules(), Some(spec.k))
                }
            };
            let k = k.or(spec_k).unwrap_or(5);
            let patient = (!records).then_some(patient_column);
            let audit = rt.block_on(async {
                let snap = match &release {
                    None => chitose_release::run::snapshot(&lake, &table).await?,
                    Some(id) => chitose_release::run::released(&lake, id, &table).await?,
                };
                chitose_release::run::audit(&lake, snap, &qi, &rare, patient, k, 8192).await
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&audit)?);
            } else {
                let r = &audit.risk;
                println!(
                    "{} ({} files) over {}",
                    audit.snapshot.source,
                    audit.snapshot.file_count,
                    audit.qi.join(", ")
                );
                println!("records                     {}", r.records);
                println!(
                    "{:<27} {}",
                    if audit.patient.is_some() {
                        "patients"
                    } else {
                        "patients (= records)"
                    },
                    audit.patients
                );
                println!("equivalence classes         {}", r.classes);
                println!("smallest class (patients)   {}", r.k);
                println!(
                    "unique records              {} ({:.2}%), {} patients alone in a class",
                    r.unique_records,
                    r.uniqueness * 100.0,
                    r.unique_patients
                );
                println!(
                    "below k = {k:<17} {} records in {} classes",
                    r.records_below_k, r.classes_below_k
                );
                let sizes: Vec<String> = r
                    .class_sizes
                    .iter()
                    .map(|(b, n)| format!("{b}: {n}"))
                    .collect();
                println!("classes by patients         {}", sizes.join(", "));
                for r in &audit.rare {
                    println!(
                        "rare {:<22} {} of {} (area, period, value) groups below {} patients, {} records",
                        r.column, r.groups_below, r.groups, r.threshold, r.records_below
                    );
                }
            }
            let rare_ok = audit.rare.iter().all(|r| r.groups_below == 0);
            Ok(if check && (audit.risk.k < k || !rare_ok) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
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
                .with_context(|| format!("verifying {}", a.at.lake))?;
            if report.commits == 0 && report.tables.is_empty() && report.problems.is_empty() {
                bail!(
                    "{}: expected a chitose lake, found no ledger and no data files",
                    a.at.lake
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
