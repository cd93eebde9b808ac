//! The async shell: a Delta snapshot of each lake table (its version is in
//! the report, so the release can be reproduced), two streamed passes over
//! its files, the released Delta tables and the report.
//!
//! ```text
//! <lake>/anonymized/<release_id>/<table>/_delta_log/… , part-….parquet
//! <lake>/anonymized/<release_id>/release-report.md
//! <lake>/anonymized/<release_id>/release-report.json   written last: the release is complete
//! ```
//!
//! A release interrupted before its JSON report is incomplete: running it
//! again under the same id deletes what it left (written under a key that
//! is gone) and starts over. A complete release is never overwritten.

use crate::core::{
    CoreError, Index, Output, Pass, Plan, RareRisk, ReleaseKey, Risk, Who, precision_loss,
};
use crate::hierarchy::Hierarchy;
use crate::people::People;
use crate::spec::{Contract, Spec, TableSpec};
use arrow_array::RecordBatch;
use bytes::Bytes;
use chitose_lake::delta::{DataFile, Operation, Outcome};
use chitose_lake::parquet::properties;
use chitose_lake::{Lake, LakeError, layout};
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutPayload};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::sync::Arc;

/// A release or audit problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The lake: a Delta log or the store.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// The object store.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// A file does not read or write as Parquet.
    #[error("{path}: {message}")]
    Parquet {
        /// Object path.
        path: String,
        /// Cause.
        message: String,
    },
    /// The core refused a table.
    #[error("table {table}")]
    Core {
        /// Table.
        table: String,
        /// Cause.
        source: CoreError,
    },
    /// A complete release of this id exists.
    #[error("expected a new release id, found a complete release {0} (its report exists)")]
    Exists(String),
    /// Nothing to read.
    #[error("{0}: expected committed data files, found none")]
    NoData(String),
    /// A count that must agree does not.
    #[error("table {table}: expected {expected} {what}, found {found}")]
    Count {
        /// Table.
        table: String,
        /// What was counted.
        what: &'static str,
        /// Expected.
        expected: u64,
        /// Found.
        found: u64,
    },
    /// The written files do not hold what the plan promised.
    #[error("table {table}: the written files, read back: {message}")]
    ReadBack {
        /// Table.
        table: String,
        /// What was expected and found.
        message: String,
    },
    /// A column no file has.
    #[error("column {column}: expected a column of {read}, found it in none of its {files} files")]
    NoColumn {
        /// Column.
        column: String,
        /// What was read.
        read: String,
        /// Files read.
        files: usize,
    },
    /// A release over records another release used, at another
    /// granularity.
    #[error(
        "table {table}: release {other} (Delta version {other_version}) released the same records at {theirs}; this release would at {ours}. \
         Two releases of one person's records at different granularities can be intersected to single them out (a composition attack): \
         release at the same levels, or pass --allow-composition to release anyway (the ledger records it)"
    )]
    Composition {
        /// Table.
        table: String,
        /// The earlier release.
        other: String,
        /// The version it read.
        other_version: u64,
        /// Its levels.
        theirs: String,
        /// This release's levels.
        ours: String,
    },
    /// Local spill files for the shuffle.
    #[error("spill file in {dir}: {message}")]
    Spill {
        /// Folder.
        dir: String,
        /// Cause.
        message: String,
    },
    /// A bad release id.
    #[error(
        "release id {0:?}: expected letters, digits, '-', '_' or '.', not starting with '.' or '_'"
    )]
    BadId(String),
}

/// Files read for a table: one Delta snapshot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// What was read (`pseudonymized/diagnosis`).
    pub source: String,
    /// Data files.
    #[serde(skip)]
    pub files: Vec<DataFile>,
    /// Data files read.
    pub file_count: usize,
    /// Rows the log says they hold.
    pub rows: u64,
    /// The table version read: the same version reads the same rows
    /// (`DeltaTable(path, version=…)`), so a release can be reproduced.
    pub version: u64,
}

/// The event ids a lake table's rows were withdrawn under: the
/// `correction` table's rows naming this table. Until the lake is a table
/// format with deletes, every reader drops them this way (an anti-join on
/// event_id); the release does it here.
pub async fn withdrawn(
    lake: &Lake,
    table: &str,
    batch_rows: usize,
) -> Result<HashSet<String>, ReleaseError> {
    let snap = match snapshot(lake, "correction").await {
        Ok(s) => s,
        Err(ReleaseError::NoData(_)) => return Ok(HashSet::new()),
        Err(e) => return Err(e),
    };
    let cols = ["event_id".to_owned(), "corrected_event_type".to_owned()];
    let mut out = HashSet::new();
    for f in &snap.files {
        let mut s = std::pin::pin!(read(lake, f, Some(&cols), batch_rows).await?);
        while let Some(b) = s.next().await {
            let b = b?;
            let (Some(ids), Some(types)) = (
                b.column_by_name("event_id")
                    .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>()),
                b.column_by_name("corrected_event_type")
                    .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>()),
            ) else {
                continue;
            };
            for i in 0..b.num_rows() {
                if types.value(i) == table {
                    out.insert(ids.value(i).to_owned());
                }
            }
        }
    }
    Ok(out)
}

/// `b` without the rows whose event_id is withdrawn; how many were dropped.
fn without_withdrawn(
    b: RecordBatch,
    withdrawn: &HashSet<String>,
) -> Result<(RecordBatch, u64), arrow_schema::ArrowError> {
    if withdrawn.is_empty() {
        return Ok((b, 0));
    }
    let Some(ids) = b
        .column_by_name("event_id")
        .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>())
    else {
        return Ok((b, 0));
    };
    let keep: arrow_array::BooleanArray = ids
        .iter()
        .map(|id| Some(!id.is_some_and(|id| withdrawn.contains(id))))
        .collect();
    let dropped = (b.num_rows() - keep.true_count()) as u64;
    let kept = arrow_select::filter::filter_record_batch(&b, &keep)?;
    // The index and the output never see event_id: drop it again.
    Ok((kept, dropped))
}

/// The newest snapshot of a lake table: files committed after this call
/// and files no commit names are not in it.
pub async fn snapshot(lake: &Lake, table: &str) -> Result<Snapshot, ReleaseError> {
    table_snapshot(lake, &layout::table(table)).await
}

async fn table_snapshot(lake: &Lake, source: &str) -> Result<Snapshot, ReleaseError> {
    let t = lake.table(source);
    let Some(snap) = t.load().await? else {
        return Err(ReleaseError::NoData(source.to_owned()));
    };
    let files = t.files(&snap).await?;
    let s = Snapshot {
        source: source.to_owned(),
        file_count: files.len(),
        rows: files.iter().map(|f| f.rows.unwrap_or(0)).sum(),
        version: snap.version(),
        files,
    };
    if s.files.is_empty() {
        return Err(ReleaseError::NoData(s.source));
    }
    Ok(s)
}

/// The files of a released table.
pub async fn released(
    lake: &Lake,
    release_id: &str,
    table: &str,
) -> Result<Snapshot, ReleaseError> {
    check_id(release_id)?;
    table_snapshot(lake, &layout::release_table(release_id, table)).await
}

fn check_id(id: &str) -> Result<(), ReleaseError> {
    let ok = !id.is_empty()
        && !id.starts_with('.')
        && !id.starts_with('_')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ReleaseError::BadId(id.to_owned()))
    }
}

/// Streams a file's batches, reading only `columns` (those it has), with
/// the requested partition columns added from the file's partition values
/// (Delta keeps them in the log, not in the file).
async fn read(
    lake: &Lake,
    f: &DataFile,
    columns: Option<&[String]>,
    batch_rows: usize,
) -> Result<impl Stream<Item = Result<RecordBatch, ReleaseError>> + use<>, ReleaseError> {
    let s =
        chitose_lake::parquet::stream(lake.store.clone(), &f.object, f.size, columns, batch_rows)
            .await?;
    let extra: Vec<(String, Option<String>)> = f
        .partition
        .iter()
        .filter(|(c, _)| columns.is_none_or(|cs| cs.contains(c)))
        .map(|(c, v)| (c.clone(), v.clone()))
        .collect();
    let path = f.object.to_string();
    Ok(s.map(move |b| {
        let perr = |message: String| ReleaseError::Parquet {
            path: path.clone(),
            message,
        };
        let b = b.map_err(|e| perr(e.to_string()))?;
        if extra.is_empty() {
            return Ok(b);
        }
        let mut fields: Vec<arrow_schema::FieldRef> = b.schema().fields().iter().cloned().collect();
        let mut cols = b.columns().to_vec();
        for (c, v) in &extra {
            fields.push(std::sync::Arc::new(arrow_schema::Field::new(
                c,
                arrow_schema::DataType::Utf8,
                true,
            )));
            cols.push(std::sync::Arc::new(arrow_array::StringArray::from(vec![
                v.as_deref();
                b.num_rows()
            ])));
        }
        RecordBatch::try_new_with_options(
            std::sync::Arc::new(arrow_schema::Schema::new(fields)),
            cols,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
        )
        .map_err(|e| perr(e.to_string()))
    }))
}

/// The lake's tables: the folders under `pseudonymized/` with a Delta log.
pub async fn lake_tables(lake: &Lake) -> Result<Vec<String>, ReleaseError> {
    let listed = lake
        .store
        .list_with_delimiter(Some(&lake.path(layout::PSEUDONYMIZED)))
        .await?;
    let mut out: Vec<String> = listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_owned))
        .collect();
    out.sort();
    Ok(out)
}

/// What the people pass found.
#[derive(Debug, Clone, Serialize)]
pub struct PeopleReport {
    /// Tables read (every table of the lake: a link can be on any).
    pub tables: Vec<(String, u64)>,
    /// Distinct lake pseudonyms on records.
    pub pseudonyms: u64,
    /// The people they are, once joined.
    pub people: u64,
    /// Seconds spent.
    pub seconds: f64,
    /// Bytes the union–find held.
    pub memory_bytes: usize,
}

/// The people pass: every table's `pseudonym` and `linkage_pseudonyms`
/// (at the snapshots given, newest for the others) into one union–find.
pub async fn people(
    lake: &Lake,
    snaps: &BTreeMap<String, Snapshot>,
    batch_rows: usize,
) -> Result<(People, PeopleReport), ReleaseError> {
    let clock = std::time::Instant::now();
    let mut people = People::new();
    let mut tables = Vec::new();
    let cols = [
        crate::people::PSEUDONYM.to_owned(),
        crate::people::LINKS.to_owned(),
    ];
    for table in lake_tables(lake).await? {
        let snap = match snaps.get(&table) {
            Some(s) => s.clone(),
            None => match snapshot(lake, &table).await {
                Ok(s) => s,
                Err(ReleaseError::NoData(_)) => continue,
                Err(e) => return Err(e),
            },
        };
        for f in &snap.files {
            let mut s = std::pin::pin!(read(lake, f, Some(&cols), batch_rows).await?);
            while let Some(b) = s.next().await {
                people.add(&b?);
            }
        }
        tables.push((table, snap.version));
    }
    people.freeze();
    let report = PeopleReport {
        tables,
        pseudonyms: people.pseudonyms(),
        people: people.people(),
        seconds: clock.elapsed().as_secs_f64(),
        memory_bytes: people.memory(),
    };
    tracing::info!(
        pseudonyms = report.pseudonyms,
        people = report.people,
        "people joined across linkage bases and keys"
    );
    Ok((people, report))
}

/// One release in the ledger: what it read and at which levels.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LedgerEntry {
    /// Release id.
    pub release_id: String,
    /// When.
    pub created_at: String,
    /// Per table.
    pub tables: Vec<LedgerTable>,
    /// Whether it was released over a composition risk on purpose.
    pub allowed_composition: bool,
}

/// One table of a ledger entry.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct LedgerTable {
    /// Table.
    pub table: String,
    /// The lake snapshot read.
    pub version: u64,
    /// Quasi-identifier → level released.
    pub levels: Vec<(String, String)>,
    /// Rare columns and their ladders.
    pub rare: Vec<(String, Vec<String>)>,
    /// k.
    pub k: u32,
}

impl LedgerTable {
    fn granularity(&self) -> String {
        let mut parts: Vec<String> = self
            .levels
            .iter()
            .map(|(c, l)| format!("{c} as {l}"))
            .collect();
        for (c, ladder) in &self.rare {
            parts.push(format!("{c} rolled up to [{}]", ladder.join(", ")));
        }
        parts.join("; ")
    }
}

/// The release ledger (`anonymized/_ledger/<release_id>.json`, one object
/// per complete release, created only).
pub async fn ledger(out: &Lake) -> Result<Vec<LedgerEntry>, ReleaseError> {
    let metas: Vec<_> = out
        .store
        .list(Some(&out.path("anonymized/_ledger")))
        .try_collect()
        .await?;
    let mut entries = Vec::new();
    for m in metas {
        let bytes = out.store.get(&m.location).await?.bytes().await?;
        let e: LedgerEntry = serde_json::from_slice(&bytes).map_err(|e| ReleaseError::Parquet {
            path: m.location.to_string(),
            message: format!("expected a ledger entry (JSON), found {e}"),
        })?;
        entries.push(e);
    }
    entries.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    Ok(entries)
}

/// The first earlier release of the same table at another granularity.
fn composition(
    ledger: &[LedgerEntry],
    release_id: &str,
    mine: &LedgerTable,
) -> Option<ReleaseError> {
    ledger
        .iter()
        .filter(|e| e.release_id != release_id)
        .flat_map(|e| e.tables.iter().map(move |t| (e, t)))
        .find(|(_, t)| t.table == mine.table && (t.levels != mine.levels || t.rare != mine.rare))
        .map(|(e, t)| ReleaseError::Composition {
            table: mine.table.clone(),
            other: e.release_id.clone(),
            other_version: t.version,
            theirs: t.granularity(),
            ours: mine.granularity(),
        })
}

/// Pass one: the index of a table's files.
async fn index(
    lake: &Lake,
    table: &str,
    snap: &Snapshot,
    mut ix: Index,
    batch_rows: usize,
    withdrawn: &HashSet<String>,
) -> Result<(Index, u64), ReleaseError> {
    let mut columns = ix.columns();
    let mut dropped = 0;
    if !withdrawn.is_empty() {
        columns.push("event_id".into());
    }
    // A column absent from one file is an older schema version (read as
    // null); absent from every file, it is a mistake.
    let mut seen = std::collections::BTreeSet::new();
    for f in &snap.files {
        let mut s = std::pin::pin!(read(lake, f, Some(&columns), batch_rows).await?);
        while let Some(b) = s.next().await {
            let b = b?;
            seen.extend(b.schema().fields().iter().map(|f| f.name().clone()));
            let (b, d) = without_withdrawn(b, withdrawn).map_err(|e| ReleaseError::Parquet {
                path: f.object.to_string(),
                message: e.to_string(),
            })?;
            dropped += d;
            ix.add(&b).map_err(|source| ReleaseError::Core {
                table: table.to_owned(),
                source,
            })?;
        }
    }
    if let Some(missing) = columns.iter().find(|c| !seen.contains(*c)) {
        return Err(ReleaseError::NoColumn {
            column: missing.clone(),
            read: snap.source.clone(),
            files: snap.file_count,
        });
    }
    Ok((ix, dropped))
}

/// How to run a release.
#[derive(Debug, Clone)]
pub struct Options {
    /// The release id (folder name).
    pub release_id: String,
    /// Rows per output file.
    pub rows_per_file: usize,
    /// Rows per batch read.
    pub batch_rows: usize,
    /// Plan and report only; write nothing.
    pub dry_run: bool,
    /// Release even when an earlier release used the same records at
    /// another granularity (recorded in the ledger).
    pub allow_composition: bool,
    /// Rows the shuffle holds in memory at once (one spill bucket).
    pub shuffle_rows: usize,
    /// Bytes of index cells held in memory; beyond them the index spills
    /// to local files and is counted bucket by bucket.
    pub index_memory: usize,
}

/// The release report.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseReport {
    /// Release id.
    pub release_id: String,
    /// When it was made (UTC, RFC 3339).
    pub created_at: String,
    /// Where the output is.
    pub output: String,
    /// What happened to the pseudonym key.
    pub key: String,
    /// Whether anything was written.
    pub dry_run: bool,
    /// The spec, as read.
    pub spec: Spec,
    /// Pseudonyms joined into people, over the whole lake.
    pub people: PeopleReport,
    /// Whether it was released over a composition risk on purpose.
    pub allowed_composition: bool,
    /// Per table.
    pub tables: Vec<TableReport>,
    /// The process's peak resident memory (VmHWM) when the report was made.
    pub peak_memory_bytes: Option<u64>,
}

/// One table's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    /// Table.
    pub table: String,
    /// What was read.
    pub snapshot: Snapshot,
    /// k asked.
    pub k_required: u32,
    /// Smallest released class, in patients.
    pub k_achieved: u32,
    /// Records read.
    pub records_in: u64,
    /// Records left out because a correction withdrew them.
    pub withdrawn: u64,
    /// Records released.
    pub records_out: u64,
    /// People read (pseudonyms joined).
    pub patients_in: u64,
    /// Lake pseudonyms read (≥ people: a person can have several).
    pub pseudonyms_in: u64,
    /// Records left out by `max_records_per_person`.
    pub capped: u64,
    /// Level chosen per quasi-identifier.
    pub generalization: Vec<Generalized>,
    /// Records suppressed, all rules (= records in − records out).
    pub suppressed_k_anonymity: u64,
    /// Of those: quasi-identifier classes below k people.
    pub suppressed_classes: u64,
    /// Of those: (class, rare labels) groups still below k people once
    /// rare values were rolled up.
    pub suppressed_rare_groups: u64,
    /// Of those: groups with fewer than ℓ distinct values of a sensitive
    /// attribute.
    pub suppressed_l_diversity: u64,
    /// ℓ asked, and the sensitive attributes it holds for.
    pub l_diversity: Option<(u32, Vec<String>)>,
    /// Per sensitive attribute, the fewest distinct values in a released
    /// group (the ℓ the release has).
    pub l_achieved: Vec<(String, u32)>,
    /// With a pseudonym released: people released, and those whose set of
    /// released rows nobody else has (a trajectory singles them out to
    /// whoever knows a few of their events).
    pub trajectories: Option<Trajectories>,
    /// Rare-value rules' outcomes.
    pub rare: Vec<RareOutcome>,
    /// Risk over the quasi-identifiers as the lake holds them.
    pub before: Risk,
    /// Risk over the quasi-identifiers and every rare column as the lake
    /// holds them (an attacker who knows one value of the target).
    pub before_with_rare: Risk,
    /// Risk over the released groups (quasi-identifiers and rare labels).
    pub after: Risk,
    /// Per rare rule, (class, value) groups below its threshold as
    /// the lake holds them (none are released: step 4 rolls them up).
    pub rare_before: Vec<RareRisk>,
    /// Information loss.
    pub information_loss: Loss,
    /// Lattice nodes evaluated, of all.
    pub search: (usize, usize),
    /// Whether the index went past `--index-memory` and was counted
    /// bucket by bucket from local spill files.
    pub index_spilled: bool,
    /// Seconds spent indexing (pass one), planning, and writing (pass two).
    pub seconds: (f64, f64, f64),
    /// Columns left out, with their class.
    pub dropped: Vec<(String, String)>,
    /// Files written: path, rows.
    pub files: Vec<(String, u64)>,
    /// The files read back after writing (None in a dry run).
    pub read_back: Option<ReadBack>,
}

/// What linked records expose.
#[derive(Debug, Clone, Serialize)]
pub struct Trajectories {
    /// People released.
    pub people: u64,
    /// People whose multiset of released rows is unique.
    pub unique_people: u64,
    /// Their share.
    pub uniqueness: f64,
}

/// The written files, read back and counted again.
#[derive(Debug, Clone, Serialize)]
pub struct ReadBack {
    /// Records in the files.
    pub records: u64,
    /// Smallest class.
    pub smallest_class: u32,
    /// What the smallest class counts: patients (pseudonym released) or
    /// records (not released: a class of k records has at most k patients,
    /// so this is the weaker check).
    pub counted_in: &'static str,
    /// Rare (class, value) groups below their threshold.
    pub rare_groups_below: u64,
}

/// A quasi-identifier's level.
#[derive(Debug, Clone, Serialize)]
pub struct Generalized {
    /// Column.
    pub column: String,
    /// Level chosen (0: as in the lake).
    pub level: usize,
    /// Levels above the value.
    pub of: usize,
    /// What the level shows.
    pub shows: String,
}

/// What a rare-value rule did.
#[derive(Debug, Clone, Serialize)]
pub struct RareOutcome {
    /// Column.
    pub column: String,
    /// Threshold (people per class and value).
    pub threshold: u32,
    /// Records per level the value was released at (`suppressed` last).
    pub records_at: Vec<(String, u64)>,
    /// Records whose value was rolled up (released above level 0).
    pub rolled_up: u64,
    /// Records whose value is null in the release: suppressed, or null in
    /// the lake already (`null_in_lake`).
    pub suppressed: u64,
    /// Of those, records whose value was null in the lake (a diagnosis
    /// coded in MEDIS only has no ICD-10).
    pub null_in_lake: u64,
}

/// Information loss measures.
#[derive(Debug, Clone, Serialize)]
pub struct Loss {
    /// Mean generalization height (0 as in the lake, 1 all `*`).
    pub precision: f64,
    /// Share of records suppressed.
    pub suppression: f64,
    /// Discernibility (Σ class records², suppressed records count as the
    /// whole table), normalized by records²: 1/records at best, 1 at worst.
    pub discernibility: f64,
    /// Mean class size over k (1 is as tight as k allows).
    pub avg_class_size_over_k: f64,
    /// Share of rare-rule values released above level 0 or suppressed.
    pub rare_values_changed: f64,
}

/// Runs a release: reads the pseudonymized tables from `lake`, writes the
/// release under `anonymized/<release_id>/` of `out` — the same lake, or
/// another root (bucket) with credentials of its own, so the zone analysts
/// read never shares a principal with the pseudonymized one. With
/// `dry_run`, plans and reports without writing.
pub async fn release(
    lake: &Lake,
    out: &Lake,
    spec: &Spec,
    contracts: &[Contract],
    opts: &Options,
) -> Result<ReleaseReport, ReleaseError> {
    check_id(&opts.release_id)?;
    let root = format!("{}/{}", layout::ANONYMIZED, opts.release_id);
    let report_json = out.path(&format!("{root}/release-report.json"));
    if !opts.dry_run {
        match out.store.head(&report_json).await {
            Ok(_) => return Err(ReleaseError::Exists(opts.release_id.clone())),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let left: Vec<_> = out.store.list(Some(&out.path(&root))).try_collect().await?;
        if !left.is_empty() {
            tracing::warn!(
                release = %opts.release_id,
                objects = left.len(),
                "an interrupted run of this release left objects; deleting them and starting over"
            );
            for m in left {
                out.delete(&m.location).await?;
            }
        }
    }
    // One snapshot per released table, read by the people pass and both
    // passes of its release alike.
    let mut snaps = BTreeMap::new();
    for t in &spec.tables {
        snaps.insert(t.name.clone(), snapshot(lake, &t.name).await?);
    }
    let (people, people_report) = people(lake, &snaps, opts.batch_rows).await?;
    let people = Arc::new(people);
    let history = ledger(out).await?;
    let mut tables = Vec::new();
    let mut entry = LedgerEntry {
        release_id: opts.release_id.clone(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        tables: Vec::new(),
        allowed_composition: false,
    };
    for (t, c) in spec.tables.iter().zip(contracts) {
        let key = (t.pseudonym && !opts.dry_run).then(ReleaseKey::fresh);
        let snap = snaps.remove(&t.name).expect("snapshot taken above");
        let ctx = TableRun {
            lake,
            dest: out,
            spec,
            t,
            c,
            root: &root,
            opts,
            people: &people,
            history: &history,
        };
        let (report, ledger_table, composed) = release_table(&ctx, snap, key).await?;
        entry.allowed_composition |= composed;
        entry.tables.push(ledger_table);
        tables.push(report);
    }
    let report = ReleaseReport {
        release_id: opts.release_id.clone(),
        created_at: entry.created_at.clone(),
        output: out.path(&root).to_string(),
        key: "one release pseudonym per person (pseudonyms joined first), HMAC-SHA256 under a fresh random 256-bit key per table and release, held in memory only and never written; none unless the spec names a recipient".into(),
        dry_run: opts.dry_run,
        spec: spec.clone(),
        people: people_report,
        allowed_composition: entry.allowed_composition,
        tables,
        peak_memory_bytes: chitose_runtime::procstat::peak_rss_bytes("self"),
    };
    if !opts.dry_run {
        // The ledger first: a complete release (its report) is always in it.
        let at = out.path(&format!(
            "{}/_ledger/{}.json",
            layout::ANONYMIZED,
            opts.release_id
        ));
        out.store
            .put(
                &at,
                PutPayload::from(Bytes::from(
                    serde_json::to_vec_pretty(&entry).expect("serializable"),
                )),
            )
            .await?;
        let md = markdown(&report);
        out.store
            .put(
                &out.path(&format!("{root}/release-report.md")),
                PutPayload::from(Bytes::from(md)),
            )
            .await?;
        let json = serde_json::to_vec_pretty(&report).expect("serializable");
        out.store
            .put(&report_json, PutPayload::from(Bytes::from(json)))
            .await?;
    }
    Ok(report)
}

/// What every table of one release shares.
struct TableRun<'a> {
    lake: &'a Lake,
    dest: &'a Lake,
    spec: &'a Spec,
    t: &'a TableSpec,
    c: &'a Contract,
    root: &'a str,
    opts: &'a Options,
    people: &'a Arc<People>,
    history: &'a [LedgerEntry],
}

async fn release_table(
    x: &TableRun<'_>,
    snap: Snapshot,
    key: Option<ReleaseKey>,
) -> Result<(TableReport, LedgerTable, bool), ReleaseError> {
    let (spec, t, opts) = (x.spec, x.t, x.opts);
    let table = t.name.as_str();
    let core = |source| ReleaseError::Core {
        table: table.to_owned(),
        source,
    };
    let qis: Vec<Hierarchy> = t.qi.iter().map(Hierarchy::of_qi).collect();
    let rares: Vec<Hierarchy> = t.rare.iter().map(Hierarchy::of_rare).collect();
    let sensitive: Vec<Hierarchy> = t.sensitive.iter().map(|c| Hierarchy::flat(c)).collect();
    let ix = Index::new(
        qis,
        rares,
        sensitive,
        Who::People(x.people.clone()),
        t.max_records_per_person,
    )
    .memory(opts.index_memory);
    let clock = std::time::Instant::now();
    let gone = withdrawn(x.lake, table, opts.batch_rows).await?;
    let (ix, dropped) = index(x.lake, table, &snap, ix, opts.batch_rows, &gone).await?;
    let index_s = clock.elapsed().as_secs_f64();
    tracing::info!(
        table,
        rows = ix.rows(),
        withdrawn = dropped,
        capped = ix.capped(),
        cells = ix.cells(),
        "indexed"
    );
    if ix.rows() + ix.capped() + dropped != snap.rows {
        return Err(ReleaseError::Count {
            table: table.to_owned(),
            what: "rows in the snapshot's files (the log's count; run chitose lake verify)",
            expected: snap.rows,
            found: ix.rows() + ix.capped(),
        });
    }
    let q = ix.qis.len();
    let before = ix.risk(&vec![0; q], 0, spec.k).map_err(core)?;
    let before_with_rare = ix.risk_with_rares(&vec![0; q], spec.k).map_err(core)?;
    let thresholds: Vec<u32> = t.rare.iter().map(|r| r.threshold).collect();
    let plan = ix
        .plan(spec.k, spec.max_suppression, &thresholds, t.l)
        .map_err(core)?;
    let after = plan.risk();
    // The ledger: an earlier release of these records at another
    // granularity can be intersected with this one.
    let mine = LedgerTable {
        table: table.to_owned(),
        version: snap.version,
        levels: ix
            .qis
            .iter()
            .zip(&plan.levels)
            .map(|(d, l)| (d.hierarchy.column.clone(), d.hierarchy.level_name(*l)))
            .collect(),
        rare: t
            .rare
            .iter()
            .map(|r| (r.column.clone(), r.ladder.clone()))
            .collect(),
        k: spec.k,
    };
    let mut composed = false;
    if let Some(e) = composition(x.history, &opts.release_id, &mine) {
        if !opts.allow_composition {
            return Err(e);
        }
        tracing::warn!(table, "{e}");
        composed = true;
    }
    let attributes: Vec<(String, arrow_schema::DataType)> = t
        .attributes
        .iter()
        .map(|a| (a.clone(), x.c.columns[a].data_type.clone()))
        .collect();
    let out = Output::new(&ix, &attributes, key);
    let plan_s = clock.elapsed().as_secs_f64() - index_s;
    let (files, trajectories) = if opts.dry_run {
        (Vec::new(), None)
    } else {
        let (files, pass) = write(x, &snap, &ix, &plan, &out, &gone, after.records).await?;
        let traj = out.rekey.is_some().then(|| {
            let (people, unique) = pass.trajectories();
            Trajectories {
                people,
                unique_people: unique,
                uniqueness: unique as f64 / people.max(1) as f64,
            }
        });
        (files, traj)
    };
    let written: u64 = files.iter().map(|(_, r)| r).sum();
    if !opts.dry_run && written != after.records {
        return Err(ReleaseError::Count {
            table: table.to_owned(),
            what: "records written",
            expected: after.records,
            found: written,
        });
    }
    let seconds = (
        index_s,
        plan_s,
        clock.elapsed().as_secs_f64() - index_s - plan_s,
    );
    let records_in = ix.rows();
    let spilled = ix.spilled();
    let mut report = report_of(
        spec, t, x.c, snap, &ix, &plan, before, after, files, seconds,
    )?;
    report.withdrawn = dropped;
    report.before_with_rare = before_with_rare;
    report.index_spilled = spilled;
    report.trajectories = trajectories;
    // The index is no longer needed: free it before the read-back builds
    // its own.
    drop((ix, plan, out));
    // Read the written files back and count again, with the audit's code
    // path rather than the plan's: a release that does not hold is never
    // given its report. The group is every qi and every rare column.
    if !opts.dry_run {
        let rare = t.rare_rules();
        let mut qi = t.qi_columns();
        qi.extend(rare.iter().map(|(c, _)| c.clone()));
        let snap = released(x.dest, &opts.release_id, table).await?;
        let who = if t.pseudonym {
            Who::Column(crate::people::PSEUDONYM.to_owned())
        } else {
            Who::Records
        };
        let a = audit(
            x.dest,
            snap,
            &qi,
            &rare,
            who,
            (spec.k, opts.batch_rows, opts.index_memory),
        )
        .await?;
        let below = a.rare.iter().map(|r| r.groups_below).sum::<u64>();
        let records = report.records_out;
        if a.risk.records != records || (records > 0 && a.risk.k < spec.k) || below > 0 {
            return Err(ReleaseError::ReadBack {
                table: table.to_owned(),
                message: format!(
                    "expected {records} records, every group ≥ {} and no rare group below its threshold; \
                     found {} records, smallest group {}, {below} rare groups below",
                    spec.k, a.risk.records, a.risk.k
                ),
            });
        }
        report.read_back = Some(ReadBack {
            records: a.risk.records,
            smallest_class: a.risk.k,
            counted_in: if t.pseudonym { "people" } else { "records" },
            rare_groups_below: below,
        });
    }
    tracing::info!(
        table,
        records_in,
        records_out = report.records_out,
        k = report.k_achieved,
        files = report.files.len(),
        "released"
    );
    Ok((report, mine, composed))
}

/// Rows in numbered buckets: local Arrow IPC files under a private
/// temporary folder (removed on drop; a run killed by kill -9 leaves it in
/// `TMPDIR/chitose-release-*`).
struct SpillFiles {
    dir: tempfile::TempDir,
    writers: Vec<Option<arrow_ipc::writer::FileWriter<std::io::BufWriter<std::fs::File>>>>,
    schema: arrow_schema::SchemaRef,
}

impl SpillFiles {
    fn new(schema: arrow_schema::SchemaRef, buckets: usize) -> Result<Self, ReleaseError> {
        let dir = tempfile::Builder::new()
            .prefix("chitose-release-")
            .tempdir()
            .map_err(|e| ReleaseError::Spill {
                dir: std::env::temp_dir().display().to_string(),
                message: e.to_string(),
            })?;
        Ok(SpillFiles {
            dir,
            writers: (0..buckets.max(1)).map(|_| None).collect(),
            schema,
        })
    }

    fn len(&self) -> usize {
        self.writers.len()
    }

    fn err(&self, e: impl std::fmt::Display) -> ReleaseError {
        ReleaseError::Spill {
            dir: self.dir.path().display().to_string(),
            message: e.to_string(),
        }
    }

    /// Rows of `b` to buckets: `bucket[i]` for row i.
    fn scatter(&mut self, b: &RecordBatch, bucket: &[u32]) -> Result<(), ReleaseError> {
        let n = self.len();
        if n == 1 {
            return self.write(0, b);
        }
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (r, x) in bucket.iter().enumerate() {
            rows[*x as usize].push(r as u32);
        }
        for (i, idx) in rows.into_iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let idx = arrow_array::UInt32Array::from(idx);
            let part = arrow_select::take::take_record_batch(b, &idx).map_err(|e| self.err(e))?;
            self.write(i, &part)?;
        }
        Ok(())
    }

    fn write(&mut self, i: usize, b: &RecordBatch) -> Result<(), ReleaseError> {
        if self.writers[i].is_none() {
            let f = std::fs::File::create(self.dir.path().join(format!("{i}.arrow")))
                .map_err(|e| self.err(e))?;
            let w =
                arrow_ipc::writer::FileWriter::try_new(std::io::BufWriter::new(f), &self.schema)
                    .map_err(|e| self.err(e))?;
            self.writers[i] = Some(w);
        }
        let r = self.writers[i].as_mut().expect("opened above").write(b);
        r.map_err(|e| self.err(e))
    }

    fn finish(&mut self) -> Result<(), ReleaseError> {
        for i in 0..self.len() {
            if let Some(w) = self.writers[i].as_mut() {
                let r = w.finish();
                r.map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    /// Bucket `i`'s batches (after [`SpillFiles::finish`]); the file is
    /// removed once read.
    fn read(&self, i: usize) -> Result<Vec<RecordBatch>, ReleaseError> {
        let path = self.dir.path().join(format!("{i}.arrow"));
        if !path.exists() {
            return Ok(Vec::new());
        }
        let f = std::fs::File::open(&path).map_err(|e| self.err(e))?;
        let reader = arrow_ipc::reader::FileReader::try_new(std::io::BufReader::new(f), None)
            .map_err(|e| self.err(e))?;
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        let _ = std::fs::remove_file(&path);
        Ok(batches)
    }
}

/// The released rows, shuffled: each row goes to a random bucket, and each
/// bucket — at most about `shuffle_rows` rows — is permuted in memory and
/// written in turn. The lake's order (prefecture blocks, months, Kafka
/// partitions keyed by pseudonym) would otherwise tell what the release
/// leaves out and align its tables.
struct Shuffle {
    files: SpillFiles,
    rng: rand::rngs::ThreadRng,
}

impl Shuffle {
    fn new(
        schema: arrow_schema::SchemaRef,
        rows: u64,
        bucket_rows: usize,
    ) -> Result<Self, ReleaseError> {
        let buckets = (rows as usize).div_ceil(bucket_rows.max(1)).max(1);
        Ok(Shuffle {
            files: SpillFiles::new(schema, buckets)?,
            rng: rand::rng(),
        })
    }

    fn push(&mut self, b: &RecordBatch) -> Result<(), ReleaseError> {
        use rand::Rng;
        let n = self.files.len() as u32;
        if n == 1 {
            return self.files.write(0, b);
        }
        let bucket: Vec<u32> = (0..b.num_rows())
            .map(|_| self.rng.random_range(0..n))
            .collect();
        self.files.scatter(b, &bucket)
    }

    /// Each bucket's rows, permuted.
    fn buckets(
        mut self,
    ) -> Result<impl Iterator<Item = Result<RecordBatch, ReleaseError>>, ReleaseError> {
        use rand::seq::SliceRandom;
        self.files.finish()?;
        let n = self.files.len();
        Ok((0..n).filter_map(move |i| {
            let r = (|| {
                let batches = self.files.read(i)?;
                if batches.is_empty() {
                    return Ok(None);
                }
                let all = arrow_select::concat::concat_batches(&self.files.schema, &batches)
                    .map_err(|e| self.files.err(e))?;
                drop(batches);
                let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
                order.shuffle(&mut self.rng);
                arrow_select::take::take_record_batch(&all, &arrow_array::UInt32Array::from(order))
                    .map(Some)
                    .map_err(|e| self.files.err(e))
            })();
            r.transpose()
        }))
    }
}

/// Writes the released rows, shuffled, as a Delta table
/// (`<root>/<table>`): files of `rows_per_file` rows, one commit at the
/// end, so a reader sees all of the table or none of it.
async fn write(
    x: &TableRun<'_>,
    snap: &Snapshot,
    ix: &Index,
    plan: &Plan,
    out: &Output,
    withdrawn: &HashSet<String>,
    expected_rows: u64,
) -> Result<(Vec<(String, u64)>, Pass), ReleaseError> {
    let (lake, dest, opts, table) = (x.lake, x.dest, x.opts, x.t.name.as_str());
    let row_group = opts.rows_per_file.clamp(1, 65_536);
    // The release's columns in the types Delta readers share.
    let schema: arrow_schema::SchemaRef = std::sync::Arc::new(arrow_schema::Schema::new(
        out.schema
            .fields()
            .iter()
            .map(|f| {
                arrow_schema::Field::new(
                    f.name(),
                    chitose_lake::tables::lake_type(f.data_type()),
                    true,
                )
            })
            .collect::<Vec<_>>(),
    ));
    let dest_table = dest.table(&format!("{}/{table}", x.root));
    let dsnap = dest_table.create_or_evolve(&schema, &[]).await?;
    let mut staged = Vec::new();
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0usize;
    async fn put(
        t: &chitose_lake::delta::Table,
        snap: &chitose_lake::delta::Snap,
        schema: &arrow_schema::SchemaRef,
        pending: &mut Vec<RecordBatch>,
        row_group: usize,
    ) -> Result<chitose_lake::delta::Staged, ReleaseError> {
        let batch = arrow_select::concat::concat_batches(schema, pending.iter()).map_err(|e| {
            ReleaseError::Parquet {
                path: t.rel().to_owned(),
                message: e.to_string(),
            }
        })?;
        pending.clear();
        Ok(t.write(
            snap,
            &[],
            batch,
            properties(row_group, "chitose-release"),
            8 << 20,
        )
        .await?)
    }
    // Only what the index and the output read: a lake row has some 30
    // columns, a release a dozen.
    let mut columns = ix.columns();
    columns.extend(out.schema.fields().iter().map(|f| f.name().clone()));
    if !withdrawn.is_empty() {
        columns.push("event_id".into());
    }
    let mut shuffle = Shuffle::new(schema.clone(), expected_rows, opts.shuffle_rows)?;
    let mut pass = Pass::default();
    let core = |source| ReleaseError::Core {
        table: table.to_owned(),
        source,
    };
    let released_batch = |pass: &mut Pass,
                          shuffle: &mut Shuffle,
                          map: &crate::core::Released,
                          b: &RecordBatch|
     -> Result<(), ReleaseError> {
        let released = ix.apply(plan, map, out, b, pass).map_err(core)?;
        if released.num_rows() == 0 {
            return Ok(());
        }
        let released = chitose_lake::tables::conform(&released, &schema).map_err(|message| {
            ReleaseError::Parquet {
                path: dest_table.rel().to_owned(),
                message,
            }
        })?;
        shuffle.push(&released)
    };
    let mut spill_columns = columns.clone();
    spill_columns.sort();
    spill_columns.dedup();
    let spill_schema: arrow_schema::SchemaRef = Arc::new(arrow_schema::Schema::new(
        spill_columns
            .iter()
            .map(|c| {
                let t =
                    x.c.columns
                        .get(c)
                        .map_or(arrow_schema::DataType::Utf8, |k| k.data_type.clone());
                arrow_schema::Field::new(c, t, true)
            })
            .collect::<Vec<_>>(),
    ));
    // When the index spilled, the decisions are made again bucket by
    // bucket: the rows go to buckets of whole classes first (local files),
    // and each bucket's cells are counted as in planning.
    let mut by_class: Option<SpillFiles> = None;
    for f in &snap.files {
        let mut s = std::pin::pin!(read(lake, f, Some(&columns), opts.batch_rows).await?);
        while let Some(b) = s.next().await {
            let b: RecordBatch = b?;
            // The same rows as the index saw, in the same order.
            let (b, _) = without_withdrawn(b, withdrawn).map_err(|e| ReleaseError::Parquet {
                path: f.object.to_string(),
                message: e.to_string(),
            })?;
            let b = ix.cap_filter(b, &mut pass).map_err(core)?;
            match plan.released() {
                Some(map) => released_batch(&mut pass, &mut shuffle, map, &b)?,
                None => {
                    // One schema for every file's rows (an older file
                    // lacks a newer column: null, as the index read it).
                    let b =
                        chitose_lake::tables::conform(&b, &spill_schema).map_err(|message| {
                            ReleaseError::Parquet {
                                path: f.object.to_string(),
                                message,
                            }
                        })?;
                    if by_class.is_none() {
                        let n = (ix.rows() as usize).div_ceil(opts.shuffle_rows.max(1));
                        by_class = Some(SpillFiles::new(spill_schema.clone(), n)?);
                    }
                    let files = by_class.as_mut().expect("made above");
                    let n = files.len();
                    let bucket: Vec<u32> = ix
                        .class_keys(plan, &b)
                        .map_err(core)?
                        .into_iter()
                        .map(|k| crate::spill::bucket_of(k, n) as u32)
                        .collect();
                    files.scatter(&b, &bucket)?;
                }
            }
        }
    }
    if let Some(mut files) = by_class {
        files.finish()?;
        for i in 0..files.len() {
            let batches = files.read(i)?;
            let map = {
                let cells = ix.cells_of(&batches).map_err(core)?;
                let refs: Vec<(&[u32], u64)> = cells.iter().map(|(c, r)| (&**c, *r)).collect();
                ix.decisions(plan, &refs)
            };
            for b in &batches {
                released_batch(&mut pass, &mut shuffle, &map, b)?;
            }
        }
    }
    for bucket in shuffle.buckets()? {
        let released = bucket?;
        let mut at = 0;
        while at < released.num_rows() {
            let n = (opts.rows_per_file - pending_rows).min(released.num_rows() - at);
            pending.push(released.slice(at, n));
            pending_rows += n;
            at += n;
            if pending_rows >= opts.rows_per_file {
                staged.push(put(&dest_table, &dsnap, &schema, &mut pending, row_group).await?);
                pending_rows = 0;
            }
        }
    }
    if pending_rows > 0 {
        staged.push(put(&dest_table, &dsnap, &schema, &mut pending, row_group).await?);
    }
    let files = staged
        .iter()
        .map(|s| (dest.relative(&s.object), s.rows))
        .collect();
    match dest_table
        .commit(&dsnap, &staged, &[], &[], true, Operation::Write)
        .await?
    {
        Outcome::Committed(_) => Ok((files, pass)),
        other => Err(ReleaseError::ReadBack {
            table: table.to_owned(),
            message: format!(
                "expected to commit the release table, found {other:?} (another writer?)"
            ),
        }),
    }
}

#[allow(clippy::too_many_arguments)]
fn report_of(
    spec: &Spec,
    t: &TableSpec,
    c: &Contract,
    snapshot: Snapshot,
    ix: &Index,
    plan: &Plan,
    before: Risk,
    after: Risk,
    files: Vec<(String, u64)>,
    seconds: (f64, f64, f64),
) -> Result<TableReport, ReleaseError> {
    let rows = ix.rows();
    let suppressed = rows - after.records;
    let finest = vec![0; ix.qis.len()];
    let rare_before = t
        .rare
        .iter()
        .enumerate()
        .map(|(i, r)| {
            ix.rare_risk(i, r.threshold, &finest)
                .map_err(|source| ReleaseError::Core {
                    table: t.name.clone(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let generalization = ix
        .qis
        .iter()
        .zip(&plan.levels)
        .map(|(d, l)| Generalized {
            column: d.hierarchy.column.clone(),
            level: *l,
            of: d.hierarchy.levels() - 1,
            shows: d.hierarchy.level_name(*l),
        })
        .collect();
    let rare: Vec<RareOutcome> = ix
        .rares
        .iter()
        .zip(&plan.stats.rare)
        .zip(&t.rare)
        .map(|((d, p), r)| {
            let top = p.records_at.len() - 1;
            RareOutcome {
                column: d.hierarchy.column.clone(),
                threshold: r.threshold,
                records_at: p
                    .records_at
                    .iter()
                    .enumerate()
                    .map(|(l, n)| (d.hierarchy.level_name(l), *n))
                    .collect(),
                rolled_up: p.records_at[1..top].iter().sum(),
                suppressed: p.records_at[top],
                null_in_lake: p.null_in_lake,
            }
        })
        .collect();
    let changed: u64 = rare.iter().map(|r| r.rolled_up + r.suppressed).sum();
    let tops: Vec<usize> = ix.qis.iter().map(|d| d.hierarchy.levels() - 1).collect();
    let squares = plan.discernibility() as f64;
    let n = rows.max(1) as f64;
    Ok(TableReport {
        table: t.name.clone(),
        snapshot,
        k_required: spec.k,
        k_achieved: after.k,
        records_in: rows,
        withdrawn: 0,
        records_out: after.records,
        patients_in: ix.patients(),
        pseudonyms_in: ix.pseudonyms(),
        capped: ix.capped(),
        generalization,
        suppressed_k_anonymity: suppressed,
        suppressed_classes: plan.stats.suppressed_k,
        suppressed_rare_groups: plan.stats.suppressed_rare,
        suppressed_l_diversity: plan.stats.suppressed_l,
        index_spilled: false,
        l_diversity: t.l.map(|l| (l, t.sensitive.clone())),
        l_achieved: t
            .sensitive
            .iter()
            .cloned()
            .zip(plan.stats.l_achieved.iter().copied())
            .collect(),
        trajectories: None,
        before_with_rare: Risk::default(),
        information_loss: Loss {
            precision: precision_loss(&plan.levels, &tops),
            suppression: suppressed as f64 / n,
            discernibility: (squares + suppressed as f64 * n) / (n * n),
            avg_class_size_over_k: if after.classes == 0 {
                0.0
            } else {
                after.mean_class_records / f64::from(spec.k)
            },
            rare_values_changed: if t.rare.is_empty() || after.records == 0 {
                0.0
            } else {
                changed as f64 / (after.records as f64 * t.rare.len() as f64)
            },
        },
        rare,
        before,
        after,
        rare_before,
        search: (plan.evaluated, plan.nodes),
        seconds,
        dropped: t.dropped(c),
        files,
        read_back: None,
    })
}

/// The report as Markdown, for the privacy officer.
pub fn markdown(r: &ReleaseReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Release {}\n", r.release_id);
    let _ = writeln!(
        s,
        "Created {} at `{}`{}. k = {}, at most {:.1}% of records suppressed per table.\n",
        r.created_at,
        r.output,
        if r.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        },
        r.spec.k,
        r.spec.max_suppression * 100.0
    );
    let _ = writeln!(s, "Pseudonyms: {}.\n", r.key);
    let _ = writeln!(
        s,
        "People: {} lake pseudonyms are {} people once joined across linkage bases, insurance changes and key eras ({} tables read).\n",
        r.people.pseudonyms,
        r.people.people,
        r.people.tables.len()
    );
    if let Some(m) = r.peak_memory_bytes {
        let _ = writeln!(s, "Peak memory: {} MiB.\n", m >> 20);
    }
    if r.allowed_composition {
        s.push_str("**Released over a composition risk** (--allow-composition): an earlier release used these records at another granularity; see the ledger.\n\n");
    }
    for t in &r.tables {
        let _ = writeln!(s, "## {}\n", t.table);
        let _ = writeln!(
            s,
            "Read {} records of {} people ({} lake pseudonyms) from {} files of `{}` (Delta version {}). \
             Released {} records; **k achieved: {}** people (required {}).\n",
            t.records_in,
            t.patients_in,
            t.pseudonyms_in,
            t.snapshot.file_count,
            t.snapshot.source,
            t.snapshot.version,
            t.records_out,
            t.k_achieved,
            t.k_required
        );
        if t.withdrawn > 0 {
            let _ = writeln!(
                s,
                "Left out {} records a correction withdrew (cancelled at the source).\n",
                t.withdrawn
            );
        }
        s.push_str("| quasi-identifier | released as | level |\n|---|---|---|\n");
        for g in &t.generalization {
            let _ = writeln!(s, "| `{}` | {} | {}/{} |", g.column, g.shows, g.level, g.of);
        }
        s.push_str("\n| suppression rule | records |\n|---|---|\n");
        let _ = writeln!(
            s,
            "| k-anonymity: quasi-identifier classes below {} people | {} |",
            t.k_required, t.suppressed_classes
        );
        let _ = writeln!(
            s,
            "| k-anonymity: (class, rare labels) groups below {} people after the roll-up | {} |",
            t.k_required, t.suppressed_rare_groups
        );
        if let Some((l, attrs)) = &t.l_diversity {
            let _ = writeln!(
                s,
                "| ℓ-diversity: groups with fewer than {l} distinct {} | {} |",
                attrs.join(", "),
                t.suppressed_l_diversity
            );
            for (a, n) in &t.l_achieved {
                let _ = writeln!(
                    s,
                    "| ℓ achieved: fewest distinct `{a}` in a released group | {n} |"
                );
            }
        }
        if t.capped > 0 {
            let _ = writeln!(s, "| records beyond the cap per person | {} |", t.capped);
        }
        for rr in &t.rare {
            for (level, n) in &rr.records_at {
                let _ = writeln!(
                    s,
                    "| rare `{}` (< {} people in its class): released as {level} | {n} |",
                    rr.column, rr.threshold
                );
            }
        }
        s.push_str("\n| risk | before | after |\n|---|---|---|\n");
        let (b, a) = (&t.before, &t.after);
        let rows = [
            ("records", b.records.to_string(), a.records.to_string()),
            ("classes", b.classes.to_string(), a.classes.to_string()),
            (
                "smallest class (patients)",
                b.k.to_string(),
                a.k.to_string(),
            ),
            (
                "records in unique classes",
                b.unique_records.to_string(),
                a.unique_records.to_string(),
            ),
            (
                "uniqueness",
                format!("{:.4}", b.uniqueness),
                format!("{:.4}", a.uniqueness),
            ),
            (
                "records in classes below k",
                b.records_below_k.to_string(),
                a.records_below_k.to_string(),
            ),
        ];
        for (name, x, y) in rows {
            let _ = writeln!(s, "| {name} | {x} | {y} |");
        }
        let _ = writeln!(
            s,
            "| smallest group with the rare columns (people) | {} | {} |",
            t.before_with_rare.k, a.k
        );
        for r in &t.rare_before {
            let _ = writeln!(
                s,
                "| `{}` (class, value) groups below {} people | {} ({} records) | 0 |",
                r.column, r.threshold, r.groups_below, r.records_below
            );
        }
        if let Some(tr) = &t.trajectories {
            let _ = writeln!(
                s,
                "\nLinked records: {} of {} people ({:.1}%) have a set of released rows no one else has: \
                 whoever knows a few of their events finds all of them.",
                tr.unique_people,
                tr.people,
                tr.uniqueness * 100.0
            );
        }
        let l = &t.information_loss;
        let _ = writeln!(
            s,
            "\nInformation loss: precision {:.3}, suppression {:.4}, discernibility {:.4}, \
             mean class size / k {:.2}, rare values changed {:.4}. Lattice: {} of {} nodes evaluated.\n",
            l.precision,
            l.suppression,
            l.discernibility,
            l.avg_class_size_over_k,
            l.rare_values_changed,
            t.search.0,
            t.search.1
        );
        let dropped: Vec<String> = t
            .dropped
            .iter()
            .map(|(c, k)| format!("`{c}` ({k})"))
            .collect();
        let _ = writeln!(s, "Dropped: {}.\n", dropped.join(", "));
        if let Some(rb) = &t.read_back {
            let _ = writeln!(
                s,
                "Read back from the written files: {} records, smallest class {} {}, \
                 {} rare groups below their threshold.\n",
                rb.records, rb.smallest_class, rb.counted_in, rb.rare_groups_below
            );
        }
        for (p, rows) in &t.files {
            let _ = writeln!(s, "- `{p}`: {rows} records");
        }
        s.push('\n');
    }
    s
}

/// An audit's result.
#[derive(Debug, Clone, Serialize)]
pub struct Audit {
    /// What was read.
    pub snapshot: Snapshot,
    /// Quasi-identifiers, as they are.
    pub qi: Vec<String>,
    /// What a person is: `people` (lake pseudonyms joined), a column's
    /// values, or `records`.
    pub patient: Option<String>,
    /// Distinct pseudonyms (≥ patients when people are joined).
    pub pseudonyms: u64,
    /// k the classes are held against.
    pub k: u32,
    /// Patients.
    pub patients: u64,
    /// The risk.
    pub risk: Risk,
    /// Rare-value risk per rule of the spec (with `--spec`).
    pub rare: Vec<RareRisk>,
}

/// Risk measures of `snap`'s files over `qi` (as they are), changing
/// nothing, with at most `memory` bytes of index cells in memory.
///
/// `rare` rules are (column, threshold): each column is counted as it is
/// (a release's labels, or the lake's finest values) within its class of
/// every `qi` column.
pub async fn audit(
    lake: &Lake,
    snap: Snapshot,
    qi: &[String],
    rare: &[(String, u32)],
    who: Who,
    (k, batch_rows, memory): (u32, usize, usize),
) -> Result<Audit, ReleaseError> {
    let patient = match &who {
        Who::Records => None,
        Who::Column(c) => Some(c.clone()),
        Who::People(_) => Some("people (lake pseudonyms joined)".to_owned()),
    };
    let ix = Index::new(
        qi.iter().map(|c| Hierarchy::flat(c)).collect(),
        rare.iter().map(|(c, _)| Hierarchy::flat(c)).collect(),
        Vec::new(),
        who,
        None,
    )
    .memory(memory);
    let (ix, _) = index(lake, &snap.source, &snap, ix, batch_rows, &HashSet::new()).await?;
    let levels = vec![0; qi.len()];
    let core = |source| ReleaseError::Core {
        table: snap.source.clone(),
        source,
    };
    let risk = ix.risk(&levels, 0, k).map_err(core)?;
    let rare = rare
        .iter()
        .enumerate()
        .map(|(i, (_, t))| ix.rare_risk(i, *t, &levels).map_err(core))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Audit {
        rare,
        patients: ix.patients(),
        pseudonyms: ix.pseudonyms(),
        snapshot: snap,
        qi: qi.to_vec(),
        patient,
        k,
        risk,
    })
}
