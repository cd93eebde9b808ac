//! `chitose release`: an anonymized data set from the lake (see
//! `chitose_release`).

use crate::lake_cmd::LakeLocation;
use anyhow::{Context, Result};
use chitose_lake::tables::TableSchemas as Schemas;
use chitose_release::run::{Options, ReleaseReport};
use chitose_release::spec::{Contract, Spec};
use chitose_schemas::catalog::SchemaStore;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `chitose release` arguments.
#[derive(Args)]
pub struct ReleaseArgs {
    /// The release spec (TOML): k, tables, quasi-identifiers and their
    /// hierarchies, rare-value rules, attributes (see docs/release.md).
    #[arg(long)]
    spec: PathBuf,
    /// Release id: the folder under anonymized/ [default: the UTC time,
    /// YYYYMMDDTHHMMSSZ].
    #[arg(long)]
    release_id: Option<String>,
    /// Plan and print the report; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON instead of Markdown.
    #[arg(long)]
    json: bool,
    /// Records per output file.
    #[arg(long, default_value_t = 1_000_000)]
    rows_per_file: usize,
    /// Records per batch read (memory: about this many rows of one table).
    #[arg(long, default_value_t = 8192)]
    batch_rows: usize,
    /// Released rows the shuffle holds in memory at once; more spill to
    /// local files (in TMPDIR) in buckets of this size.
    #[arg(long, default_value_t = 1_000_000)]
    shuffle_rows: usize,
    /// Index cells held in memory per table (bytes, or with KiB, MiB,
    /// GiB); beyond them the index spills to local files (TMPDIR) and is
    /// counted bucket by bucket of whole classes (memory then bounded by
    /// this and by the largest class at the chosen levels).
    #[arg(long, default_value = "4GiB", value_parser = parse_size)]
    index_memory: usize,
    /// Release even when an earlier release (in the ledger) used the same
    /// records at another granularity: the two can be intersected to
    /// single people out. Recorded in the ledger and the report.
    #[arg(long)]
    allow_composition: bool,
    /// Logs as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Where releases are written (`anonymized/<release_id>/…` under it): a
    /// folder or bucket of the anonymized zone, separate from the
    /// pseudonymized lake [default: the lake itself]. Its credentials come
    /// from `CHITOSE_RELEASE_AWS_*` (`_GOOGLE_*`, `_AZURE_*`), which take
    /// the place of the `AWS_*` the lake uses.
    #[arg(long, env = "CHITOSE_RELEASE_LAKE")]
    release_lake: Option<String>,
    /// object_store option KEY=VALUE for --release-lake; repeatable.
    #[arg(long = "release-lake-option", value_name = "KEY=VALUE")]
    release_lake_options: Vec<String>,
    #[command(flatten)]
    at: LakeLocation,
}

/// `4GiB`, `512MiB`, `64KiB`, `1000` (bytes).
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = [("GiB", 1usize << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        .iter()
        .find_map(|(u, m)| t.strip_suffix(u).map(|n| (n, *m)))
        .unwrap_or((t, 1));
    num.trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("expected a size such as 4GiB, 512MiB, 64KiB or bytes, found {s:?}"))
}

/// Reads a spec and checks it against the lake tables' contract.
pub fn load_spec(path: &Path, store: &SchemaStore, schemas: &Schemas) -> Result<Spec> {
    let (spec, _) = load_checked(path, store, schemas)?;
    Ok(spec)
}

fn load_checked(
    path: &Path,
    store: &SchemaStore,
    schemas: &Schemas,
) -> Result<(Spec, Vec<Contract>)> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
    let spec = Spec::parse(&text, &name)?;
    let contracts = spec.check(&name, |t| Contract::of(store, schemas, t))?;
    Ok((spec, contracts))
}

/// Runs `chitose release`.
pub fn run(a: ReleaseArgs) -> Result<ExitCode> {
    crate::init_logs(a.log_json);
    let (lake, store, schemas) = a.at.open()?;
    let (spec, contracts) = load_checked(&a.spec, &store, &schemas)?;
    let out = match &a.release_lake {
        None => None,
        Some(url) => Some(open_release_lake(url, &a.release_lake_options)?),
    };
    let opts = Options {
        release_id: a
            .release_id
            .unwrap_or_else(|| chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()),
        rows_per_file: a.rows_per_file.max(1),
        batch_rows: a.batch_rows.max(1),
        dry_run: a.dry_run,
        allow_composition: a.allow_composition,
        shuffle_rows: a.shuffle_rows.max(1),
        index_memory: a.index_memory.max(1),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report: ReleaseReport = rt
        .block_on(chitose_release::run::release(
            &lake,
            out.as_ref().unwrap_or(&lake),
            &spec,
            &contracts,
            &opts,
        ))
        .with_context(|| format!("release {}", opts.release_id))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", chitose_release::run::markdown(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The anonymized zone's root: `CHITOSE_RELEASE_AWS_*` (and GOOGLE_,
/// AZURE_) become its object_store options and take precedence over the
/// `AWS_*` the pseudonymized lake uses, so the two zones can have
/// different principals (give the whole set: a key id, its secret, and a
/// session token if there is one).
fn open_release_lake(url: &str, flags: &[String]) -> Result<chitose_lake::Lake> {
    let mut options: std::collections::BTreeMap<String, String> = std::env::vars()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("CHITOSE_RELEASE_")?;
            ["AWS_", "GOOGLE_", "AZURE_"]
                .iter()
                .any(|p| rest.starts_with(p))
                .then(|| (rest.to_ascii_lowercase(), v))
        })
        .collect();
    for o in flags {
        let (k, v) = o.split_once('=').with_context(|| {
            "--release-lake-option: expected KEY=VALUE, found no '='".to_owned()
        })?;
        options.insert(k.to_owned(), v.to_owned());
    }
    chitose_lake::Lake::open(url, &options).with_context(|| format!("--release-lake {url}"))
}
