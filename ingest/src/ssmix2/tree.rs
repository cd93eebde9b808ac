//! Walks an SS-MIX2 storage root and queues new messages for the files
//! source, exactly once across kill -9.
//!
//! The storage belongs to the hospital (often a read-only share), so
//! nothing is moved there. Progress lives in `state_dir`:
//! - `ssmix2.ledger`: one line `<batch>\t<relative path>` per message taken,
//!   written and fsynced *before* the batch file exists, then a line
//!   `written\t<batch>` once it does;
//! - `queue/<batch>.ndjson`: the batch's events in the JSON form, read by
//!   the files source (its checkpoint and read-back make the topic exactly
//!   once; its Kafka headers carry the batch name, never a storage path,
//!   which holds the patient id and order number);
//! - `queue/rejects/<batch>.ssmix2.rejects.ndjson`: messages that could not
//!   be mapped, named by batch and position, data type, segment and field.
//!
//! A restart re-creates a batch whose paths are in the ledger without its
//! `written` line: mapping is a pure function of the files, so it is the
//! same batch.

use super::{FileName, map_message};
use crate::metrics::IngestMetrics;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Counts of one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    /// Messages taken.
    pub messages: u64,
    /// Events queued (corrections included).
    pub events: u64,
    /// Of which corrections.
    pub corrections: u64,
    /// Messages rejected.
    pub rejected: u64,
    /// Messages of data types not mapped (counted).
    pub skipped: u64,
    /// Messages that only withdraw earlier events (cancelled files,
    /// deleted diagnoses).
    pub correction_messages: u64,
    /// Files left for a later pass: modified too recently (the EHR may
    /// still be writing them).
    pub deferred: u64,
}

/// The walker.
pub struct Walker {
    root: PathBuf,
    state: PathBuf,
    facility: String,
    hub: String,
    batch_messages: usize,
    min_age: std::time::Duration,
    taken: HashSet<String>,
    next_batch: u64,
    metrics: Option<IngestMetrics>,
}

fn io_err(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

fn sync_append(path: &Path, text: &str) -> Result<(), String> {
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| io_err(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))
}

impl Walker {
    /// Opens the state (creating it) and finishes a batch a crash left
    /// half made.
    pub fn open(
        root: &Path,
        state: &Path,
        facility: &str,
        hub: &str,
        batch_messages: usize,
        metrics: Option<IngestMetrics>,
    ) -> Result<Walker, String> {
        for d in [
            state.to_path_buf(),
            state.join("queue"),
            state.join("queue/rejects"),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| io_err(&d, e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| io_err(&d, e))?;
            }
        }
        let mut w = Walker {
            root: root.to_path_buf(),
            state: state.to_path_buf(),
            facility: facility.to_owned(),
            hub: hub.to_owned(),
            batch_messages: batch_messages.max(1),
            min_age: std::time::Duration::ZERO,
            taken: HashSet::new(),
            next_batch: 0,
            metrics,
        };
        let ledger = w.state.join("ssmix2.ledger");
        let text = match std::fs::read_to_string(&ledger) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err(&ledger, e)),
        };
        let mut batches: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let mut written: HashSet<u64> = HashSet::new();
        for line in text.lines() {
            // A torn last line (crash mid-append) is ignored: its batch
            // file does not exist yet, and the path is taken again.
            let Some((a, b)) = line.split_once('\t') else {
                continue;
            };
            if a == "written" {
                if let Ok(n) = b.parse() {
                    written.insert(n);
                }
            } else if let Ok(n) = a.parse::<u64>() {
                batches.entry(n).or_default().push(b.to_owned());
            }
        }
        w.next_batch = batches.keys().next_back().map_or(0, |n| n + 1);
        for (n, paths) in &batches {
            w.taken.extend(paths.iter().cloned());
            if !written.contains(n) {
                w.write_batch(*n, paths)?;
                sync_append(&ledger, &format!("written\t{n}\n"))?;
            }
        }
        Ok(w)
    }

    /// Leaves files modified less than `age` ago for a later pass: a file
    /// taken while the EHR is still writing it would be rejected for good.
    pub fn with_min_age(mut self, age: std::time::Duration) -> Self {
        self.min_age = age;
        self
    }

    /// Every message file under the root not taken yet, in order (by path:
    /// patient, date, data type, then the name's timestamp), and how many
    /// were too young to take.
    fn new_files(&self) -> Result<(Vec<String>, u64), String> {
        let mut out = Vec::new();
        let mut deferred = 0;
        let now = std::time::SystemTime::now();
        let mut stack = vec![(self.root.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            let rd = match std::fs::read_dir(&dir) {
                Ok(r) => r,
                Err(e) if depth > 0 && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&dir, e)),
            };
            for e in rd {
                let e = e.map_err(|e| io_err(&dir, e))?;
                let ft = e.file_type().map_err(|x| io_err(&e.path(), x))?;
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with('.') || ft.is_symlink() {
                    continue;
                }
                // <root>/<3>/<3>/<patient>/<date>/<data type>/<file>
                if depth < 5 && ft.is_dir() {
                    stack.push((e.path(), depth + 1));
                } else if depth == 5 && ft.is_file() {
                    let rel = e
                        .path()
                        .strip_prefix(&self.root)
                        .expect("under the root")
                        .to_string_lossy()
                        .to_string();
                    if self.taken.contains(&rel) {
                        continue;
                    }
                    let young = !self.min_age.is_zero()
                        && e.metadata()
                            .and_then(|m| m.modified())
                            .ok()
                            .and_then(|m| now.duration_since(m).ok())
                            .is_none_or(|age| age < self.min_age);
                    if young {
                        deferred += 1;
                    } else {
                        out.push(rel);
                    }
                }
            }
        }
        out.sort();
        Ok((out, deferred))
    }

    /// Queues every new message, in batches. Returns what was queued.
    pub fn pass(&mut self) -> Result<PassReport, String> {
        let (files, deferred) = self.new_files()?;
        let mut total = PassReport {
            deferred,
            ..PassReport::default()
        };
        let ledger = self.state.join("ssmix2.ledger");
        for chunk in files.chunks(self.batch_messages) {
            let n = self.next_batch;
            let mut text = String::new();
            for p in chunk {
                text.push_str(&format!("{n}\t{p}\n"));
            }
            sync_append(&ledger, &text)?;
            let r = self.write_batch(n, chunk)?;
            sync_append(&ledger, &format!("written\t{n}\n"))?;
            self.taken.extend(chunk.iter().cloned());
            self.next_batch += 1;
            total.messages += r.messages;
            total.events += r.events;
            total.corrections += r.corrections;
            total.rejected += r.rejected;
            total.skipped += r.skipped;
            total.correction_messages += r.correction_messages;
        }
        Ok(total)
    }

    /// The latest valid ADT-00 insurance of a patient folder.
    fn insurance(&self, patient_dir: &Path) -> Option<serde_json::Value> {
        let dir = patient_dir.join("-").join("ADT-00");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| FileName::parse(n).is_ok_and(|f| !f.cancelled))
            .collect();
        names.sort_by_key(|n| FileName::parse(n).map(|f| f.timestamp).unwrap_or_default());
        let latest = names.pop()?;
        super::insurance_of(&std::fs::read(dir.join(latest)).ok()?)
    }

    fn write_batch(&self, n: u64, paths: &[String]) -> Result<PassReport, String> {
        let name = format!("{n:012}.ndjson");
        let queue = self.state.join("queue");
        let mut body = Vec::new();
        let mut rejects = Vec::new();
        let mut report = PassReport::default();
        let mut insurance: HashMap<PathBuf, Option<serde_json::Value>> = HashMap::new();
        for (i, rel) in paths.iter().enumerate() {
            report.messages += 1;
            let path = self.root.join(rel);
            let file_name = path
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default();
            let outcome = match FileName::parse(&file_name) {
                Err(expected) => Err(chitose_schemas::json::JsonError {
                    path: "file name".into(),
                    expected: expected.into(),
                    found: "another shape".into(),
                    reason: chitose_schemas::json::RejectReason::Malformed,
                }),
                // The folders must agree with the name: <patient>/<date>/<type>.
                Ok(f) if !folders_agree(rel, &f) => Err(chitose_schemas::json::JsonError {
                    path: "file name".into(),
                    expected: "the patient, date and data type of the folders it is in".into(),
                    found: "a file in another's folder".into(),
                    reason: chitose_schemas::json::RejectReason::Malformed,
                }),
                Ok(f) => {
                    let patient_dir = path
                        .parent()
                        .and_then(Path::parent)
                        .and_then(Path::parent)
                        .map(Path::to_path_buf)
                        .unwrap_or_default();
                    let ins = insurance
                        .entry(patient_dir.clone())
                        .or_insert_with(|| self.insurance(&patient_dir))
                        .clone();
                    match std::fs::read(&path) {
                        Ok(bytes) => {
                            map_message(&f, &bytes, &self.facility, &self.hub, ins.as_ref())
                        }
                        Err(e) => Err(chitose_schemas::json::JsonError {
                            path: "file".into(),
                            expected: "a readable file".into(),
                            found: e.kind().to_string(),
                            reason: chitose_schemas::json::RejectReason::Malformed,
                        }),
                    }
                }
            };
            match outcome {
                Ok(m) if m.skipped => report.skipped += 1,
                Ok(m) => {
                    if m.corrections == m.events.len() {
                        report.correction_messages += 1;
                    }
                    report.events += m.events.len() as u64;
                    report.corrections += m.corrections as u64;
                    for e in m.events {
                        body.extend(serde_json::to_vec(&e).expect("serializes"));
                        body.push(b'\n');
                    }
                }
                Err(e) => {
                    report.rejected += 1;
                    rejects.push(serde_json::json!({
                        "file": name,
                        "message": i + 1,
                        "reason": e.reason.as_str(),
                        "error": e.to_string(),
                    }));
                }
            }
        }
        if let Some(m) = &self.metrics {
            m.ssmix2_messages.with_label_values(&["event"]).inc_by(
                report.messages - report.rejected - report.skipped - report.correction_messages,
            );
            m.ssmix2_messages
                .with_label_values(&["correction"])
                .inc_by(report.correction_messages);
            m.ssmix2_messages
                .with_label_values(&["rejected"])
                .inc_by(report.rejected);
            m.ssmix2_messages
                .with_label_values(&["skipped"])
                .inc_by(report.skipped);
        }
        if !rejects.is_empty() {
            let p = queue
                .join("rejects")
                .join(format!("{n:012}.ssmix2.rejects.ndjson"));
            let mut text = Vec::new();
            for r in rejects {
                text.extend(serde_json::to_vec(&r).expect("serializes"));
                text.push(b'\n');
            }
            write_atomic(&p, &text)?;
        }
        // An empty batch (only rejects or skips) still gets its file, so
        // "written" always means the file exists or was consumed.
        write_atomic(&queue.join(&name), &body)?;
        Ok(report)
    }
}

/// `<a>/<b>/<patient>/<date or ->/<data type>/<name>` agrees with the name.
fn folders_agree(rel: &str, f: &FileName) -> bool {
    let parts: Vec<&str> = rel.split(['/', '\\']).collect();
    let [a, b, pid, date, dt, _] = parts.as_slice() else {
        return false;
    };
    *pid == f.patient_id
        && pid.get(..3) == Some(*a)
        && pid.get(3..6).is_none_or(|x| x == *b)
        && *date == f.date.as_deref().unwrap_or("-")
        && *dt == f.data_type
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    crate::files::write_atomic(path, bytes).map_err(|e| e.to_string())
}
