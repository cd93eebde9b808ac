//! `chitose lake verify`: each Delta table's log against its files (see
//! `chitose_lake::verify`); exits 1 on any problem, so it can gate a
//! deployment or a release. `chitose lake compact` / `vacuum`: upkeep
//! (`chitose_lake::upkeep`). `chitose lake audit`: the release's risk
//! measures on any table, changing nothing (see `chitose_release`).

use anyhow::{Context, Result, bail};
use chitose_lake::Lake;
use chitose_lake::tables::TableSchemas;
use chitose_release::core::Who;
use chitose_schemas::catalog::SchemaStore;
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the lake is, and the schemas that read it (shared by `lake` and
/// `release`).
#[derive(Args)]
pub struct LakeLocation {
    /// The lake: a folder, or s3://bucket/prefix (credentials from AWS_* etc.).
    #[arg(
        long,
        global = true,
        env = "CHITOSE_LAKE",
        default_value = "./.chitose/lake"
    )]
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
    pub fn open(&self) -> Result<(Lake, SchemaStore, TableSchemas)> {
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
        let schemas = chitose_lake::tables::versions(&store);
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
    /// Counts per table and partition from each Delta table's newest
    /// snapshot, every active file's footer against its add action, schema
    /// check; exits 1 on any problem.
    Verify {
        /// The report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rewrites each partition's small files as few large ones (a
    /// dataChange=false commit: safe while sinks write), then checkpoints.
    Compact {
        /// Tables (default: every table of the pseudonymized zone).
        #[arg(long, value_delimiter = ',')]
        table: Vec<String>,
        /// Files are packed up to this many MiB.
        #[arg(long, default_value_t = 128)]
        target_mib: u64,
        /// A partition is compacted from this many small files.
        #[arg(long, default_value_t = 2)]
        min_files: usize,
        /// The result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deletes data files the newest snapshot does not list (replaced by
    /// compaction, or a crashed writer's uploads) once older than --retain.
    Vacuum {
        /// Keep unlisted files younger than this (readers of older versions
        /// and commits in flight may need them): 7d, 24h, 30m, 0s.
        #[arg(long, default_value = "7d")]
        retain: String,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Tables (default: every table of the pseudonymized zone).
        #[arg(long, value_delimiter = ',')]
        table: Vec<String>,
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
        /// Index cells held in memory (bytes, or with KiB, MiB, GiB);
        /// beyond them the index spills to local files (TMPDIR).
        #[arg(long, default_value = "4GiB", value_parser = crate::release_cmd::parse_size)]
        index_memory: usize,
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
            index_memory,
            json,
        } => {
            let (qi, rare, spec_k, linked) = match &spec {
                None => (qi, vec![], None, true),
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
                    // A release is counted over its whole groups: every qi
                    // and every rare column as released.
                    let mut qi = t.qi_columns();
                    if release.is_some() {
                        qi.extend(t.rare_rules().into_iter().map(|(c, _)| c));
                    }
                    (qi, t.rare_rules(), Some(spec.k), t.pseudonym)
                }
            };
            let k = k.or(spec_k).unwrap_or(5);
            // A release without pseudonyms names no one: its records are
            // counted (the weaker reading).
            let patient = (!records && (release.is_none() || linked)).then_some(patient_column);
            let audit = rt.block_on(async {
                let (snap, who) = match (&release, patient) {
                    (_, None) => {
                        let snap = match &release {
                            None => chitose_release::run::snapshot(&lake, &table).await?,
                            Some(id) => chitose_release::run::released(&lake, id, &table).await?,
                        };
                        (snap, Who::Records)
                    }
                    // The lake's people: its pseudonyms joined across
                    // linkage bases and keys, over every table.
                    (None, Some(c)) if c == chitose_release::people::PSEUDONYM => {
                        let snap = chitose_release::run::snapshot(&lake, &table).await?;
                        let snaps = [(table.clone(), snap.clone())].into_iter().collect();
                        let (people, _) = chitose_release::run::people(&lake, &snaps, 8192).await?;
                        (snap, Who::People(std::sync::Arc::new(people)))
                    }
                    (None, Some(c)) => (
                        chitose_release::run::snapshot(&lake, &table).await?,
                        Who::Column(c),
                    ),
                    (Some(id), Some(c)) => (
                        chitose_release::run::released(&lake, id, &table).await?,
                        Who::Column(c),
                    ),
                };
                chitose_release::run::audit(
                    &lake,
                    snap,
                    &qi,
                    &rare,
                    who,
                    (k, 8192, index_memory.max(1)),
                )
                .await
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
                        "rare {:<22} {} of {} (class, value) groups below {} patients, {} records",
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
        LakeCommand::Verify { json } => {
            let report = rt
                .block_on(chitose_lake::verify::verify(&lake, &schemas))
                .with_context(|| format!("verifying {}", a.at.lake))?;
            if report.tables.is_empty() && report.problems.is_empty() {
                bail!(
                    "{}: expected a chitose lake, found no Delta table under pseudonymized/",
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
                for (table, t) in &report.tables {
                    for (key, c) in &t.partitions {
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
                for (table, t) in &report.tables {
                    println!(
                        "{table}: version {}, {} unreferenced files (invisible to readers; `chitose lake vacuum` removes them)",
                        t.version, t.unreferenced
                    );
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
        LakeCommand::Compact {
            table,
            target_mib,
            min_files,
            json,
        } => {
            let opts = chitose_lake::upkeep::CompactOptions {
                target_bytes: target_mib.max(1) << 20,
                min_files,
            };
            let done = rt.block_on(compact_all(&lake, &table, opts))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                for (t, c) in &done {
                    println!(
                        "{t:<14} {} files → {} ({} rewritten into {}, {} rows){}",
                        c.files_before,
                        c.files_after,
                        c.removed,
                        c.added,
                        c.rows,
                        c.version
                            .map(|v| format!(", version {v}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LakeCommand::Vacuum {
            retain,
            dry_run,
            table,
        } => {
            let retain = parse_duration(&retain)?;
            rt.block_on(async {
                let tables = tables_or_all(&lake, &table).await?;
                for t in tables {
                    let v = chitose_lake::upkeep::vacuum(
                        &lake.table(&chitose_lake::layout::table(&t)),
                        retain,
                        dry_run,
                    )
                    .await?;
                    println!(
                        "{t:<14} {} {} files ({} bytes); {} unlisted files younger than the retention kept",
                        if dry_run { "would delete" } else { "deleted" },
                        v.deleted.len(),
                        v.bytes,
                        v.kept_recent
                    );
                }
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The named tables, or every table of the pseudonymized zone.
async fn tables_or_all(lake: &Lake, named: &[String]) -> Result<Vec<String>> {
    Ok(if named.is_empty() {
        chitose_lake::verify::tables_in(lake, chitose_lake::layout::PSEUDONYMIZED).await?
    } else {
        named.to_vec()
    })
}

/// Compacts (and checkpoints) the named tables or all of them.
pub async fn compact_all(
    lake: &Lake,
    named: &[String],
    opts: chitose_lake::upkeep::CompactOptions,
) -> Result<BTreeMap<String, chitose_lake::upkeep::Compacted>> {
    let mut out = BTreeMap::new();
    for t in tables_or_all(lake, named).await? {
        let table = lake.table(&chitose_lake::layout::table(&t));
        let c = chitose_lake::upkeep::compact(&table, opts, || {
            chitose_lake::parquet::properties(128 * 1024, "chitose-compact")
        })
        .await
        .with_context(|| format!("compacting {t}"))?;
        if let Some(snap) = table.load().await? {
            table.checkpoint(&snap).await?;
        }
        out.insert(t, c);
    }
    Ok(out)
}

/// `7d`, `24h`, `30m`, `10s`.
fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let (n, unit) = s.split_at(s.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len());
    let n: u64 = n.parse().with_context(|| {
        format!("--retain: expected a number and a unit (7d, 24h, 30m, 10s), found {s:?}")
    })?;
    let secs = match unit {
        "d" => n * 86_400,
        "h" => n * 3_600,
        "m" => n * 60,
        "s" => n,
        _ => bail!("--retain: expected a unit of d, h, m or s, found {s:?}"),
    };
    Ok(std::time::Duration::from_secs(secs))
}
