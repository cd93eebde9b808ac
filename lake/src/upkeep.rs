//! Upkeep of a Delta table: compaction (many small files of a partition
//! rewritten as few large ones) and vacuum (files no snapshot needs any
//! more, past a retention).
//!
//! Compaction is a `dataChange = false` commit that removes the small files
//! and adds their rows rewritten: the sink appends while it runs (appends
//! never conflict with it), and a second compaction that removed the same
//! files first makes this one stale, not wrong.

use crate::delta::{DataFile, Outcome, Table};
use crate::{LakeError, tables};
use delta_kernel::transaction::UpdateTableOperation;
use futures::TryStreamExt;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// What compaction did to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    /// Files removed.
    pub removed: u64,
    /// Files written.
    pub added: u64,
    /// Rows rewritten.
    pub rows: u64,
    /// The table version of the rewrite (none when nothing was due).
    pub version: Option<u64>,
    /// Files before, files after.
    pub files_before: u64,
    /// Files after.
    pub files_after: u64,
}

/// Compaction settings.
#[derive(Debug, Clone, Copy)]
pub struct CompactOptions {
    /// Files are packed up to this size (bytes).
    pub target_bytes: u64,
    /// A partition is compacted when it has at least this many files
    /// smaller than half the target.
    pub min_files: usize,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            target_bytes: 128 * 1024 * 1024,
            min_files: 2,
        }
    }
}

/// Bins of files to rewrite together: per partition, the files under half
/// the target, packed first-fit by size up to the target; bins of one
/// file are left alone.
pub fn plan(files: &[DataFile], columns: &[String], opts: CompactOptions) -> Vec<Vec<DataFile>> {
    let mut by_key: BTreeMap<String, Vec<&DataFile>> = BTreeMap::new();
    for f in files {
        by_key.entry(f.key(columns)).or_default().push(f);
    }
    let mut bins = Vec::new();
    for (_, mut fs) in by_key {
        fs.retain(|f| f.size < opts.target_bytes / 2);
        if fs.len() < opts.min_files.max(2) {
            continue;
        }
        fs.sort_by(|a, b| b.size.cmp(&a.size).then(a.path.cmp(&b.path)));
        let mut open: Vec<(u64, Vec<DataFile>)> = Vec::new();
        for f in fs {
            match open
                .iter_mut()
                .find(|(size, _)| size + f.size <= opts.target_bytes)
            {
                Some((size, bin)) => {
                    *size += f.size;
                    bin.push(f.clone());
                }
                None => open.push((f.size, vec![f.clone()])),
            }
        }
        bins.extend(open.into_iter().map(|(_, b)| b).filter(|b| b.len() > 1));
    }
    bins
}

/// Compacts `table` once (one commit for every bin).
pub async fn compact(
    table: &Table,
    opts: CompactOptions,
    props: impl Fn() -> parquet::file::properties::WriterProperties,
) -> Result<Compacted, LakeError> {
    let Some(snap) = table.load().await? else {
        return Ok(Compacted::default());
    };
    let files = table.files(&snap).await?;
    let columns = snap.partition_columns();
    let mut report = Compacted {
        files_before: files.len() as u64,
        files_after: files.len() as u64,
        ..Default::default()
    };
    let bins = plan(&files, &columns, opts);
    if bins.is_empty() {
        return Ok(report);
    }
    // Files are written without the partition columns, in the table's
    // current column order (older files may lack newer columns).
    let logical = snap.schema()?;
    let physical = tables::physical_schema(&logical, &columns);
    let mut adds = Vec::new();
    let mut removes = Vec::new();
    for bin in &bins {
        let mut batches = Vec::new();
        for f in bin {
            for b in
                crate::parquet::read_file(table.lake().store.clone(), &f.object, f.size).await?
            {
                batches.push(
                    tables::conform(&b, &physical).map_err(|m| LakeError::Parquet {
                        path: f.object.to_string(),
                        message: m,
                    })?,
                );
            }
        }
        let batch = arrow_select::concat::concat_batches(&physical, &batches).map_err(|e| {
            LakeError::Parquet {
                path: table.rel().to_owned(),
                message: e.to_string(),
            }
        })?;
        let partition: Vec<(String, Option<String>)> = columns
            .iter()
            .map(|c| (c.clone(), bin[0].partition.get(c).cloned().flatten()))
            .collect();
        report.rows += batch.num_rows() as u64;
        adds.push(
            table
                .write(&snap, &partition, batch, props(), 8 * 1024 * 1024)
                .await?,
        );
        removes.extend(bin.iter().map(|f| f.path.clone()));
    }
    match table
        .commit(
            &snap,
            &adds,
            &removes,
            &[],
            false,
            UpdateTableOperation::Optimize,
        )
        .await?
    {
        Outcome::Committed(s) => {
            report.removed = removes.len() as u64;
            report.added = adds.len() as u64;
            report.version = Some(s.version());
            report.files_after = report.files_before - report.removed + report.added;
            Ok(report)
        }
        Outcome::Stale(_) | Outcome::Lost { .. } => {
            // Another compaction went first: what we wrote is garbage.
            for a in &adds {
                table.lake().delete(&a.object).await?;
            }
            report.rows = 0;
            Ok(report)
        }
    }
}

/// What vacuum found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Vacuumed {
    /// Data files no longer in the snapshot and older than the retention.
    pub deleted: Vec<String>,
    /// Bytes they held.
    pub bytes: u64,
    /// Files not in the snapshot but younger than the retention (kept:
    /// a reader of an older version, or a commit in flight, may need them).
    pub kept_recent: u64,
}

/// Deletes data files of `table` that its newest snapshot does not list
/// and that are older than `retain` (a crashed writer's uploads, files
/// compaction replaced). With `dry_run` only lists them.
pub async fn vacuum(table: &Table, retain: Duration, dry_run: bool) -> Result<Vacuumed, LakeError> {
    let Some(snap) = table.load().await? else {
        return Ok(Vacuumed::default());
    };
    let active: HashSet<String> = table
        .files(&snap)
        .await?
        .into_iter()
        .map(|f| f.object.to_string())
        .collect();
    let root = table.lake().path(table.rel());
    let log = table.lake().path(&format!("{}/_delta_log", table.rel()));
    let cutoff =
        chrono::Utc::now() - chrono::Duration::from_std(retain).unwrap_or(chrono::Duration::MAX);
    let mut out = Vacuumed::default();
    let mut objects: Vec<_> = table.lake().store.list(Some(&root)).try_collect().await?;
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    for m in objects {
        if m.location.prefix_matches(&log) || active.contains(m.location.as_ref()) {
            continue;
        }
        if !m.location.as_ref().ends_with(".parquet") {
            continue;
        }
        if m.last_modified > cutoff {
            out.kept_recent += 1;
            continue;
        }
        if !dry_run {
            table.lake().delete(&m.location).await?;
        }
        out.bytes += m.size;
        out.deleted.push(m.location.to_string());
    }
    Ok(out)
}
