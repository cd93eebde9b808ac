//! The files source: NDJSON exports dropped into a directory.
//!
//! Exactly once, through kill -9, with only an idempotent producer (no
//! transactions: nisshi and MockCluster do not honour read_committed):
//!
//! 1. Before the first record of a file is sent, its checkpoint is written
//!    with the topic's high watermarks ("start watermarks").
//! 2. Every record carries its file and line in headers.
//! 3. The checkpoint advances over lines whose records were all
//!    acknowledged, in order (plus the length of the rejects file so far).
//! 4. After a crash, the records of the file between the start watermarks
//!    and the topic's end are read back; lines found there are not sent
//!    again. Lines after the checkpoint that are not there are sent.
//!
//! Finished files move to `done/`; rejected lines go to
//! `rejects/<file>.rejects.ndjson` with line number, reason and message,
//! the offending value masked and any My Number withheld
//! ([`crate::rejects`]). Both folders are 0700, their files 0600, and kept
//! `files.retention_days` (30 by default).
//! Hubs should write a file under another name (e.g. `.tmp`) and rename it
//! when complete: only `*.ndjson` and `*.jsonl` files are read.

use crate::config::FilesConfig;
use crate::edge::{Edge, EdgeScratch};
use crate::inorder::InOrder;
use crate::metrics::IngestMetrics;
use crate::producer::{Delivery, RawProducer, Tracker};
use crate::records::{CsvMapping, Item, RecordReader};
use chitose_runtime::kafka::KafkaSettings;
use chitose_runtime::shutdown::Shutdown;
use chitose_schemas::codec::Timestamp;
use chitose_schemas::json::JsonError;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Header naming the source file of a record.
pub const HEADER_FILE: &str = "chitose-source-file";
/// Header with the record's line number in that file.
pub const HEADER_LINE: &str = "chitose-source-line";

/// Why a file pass stopped early (it is retried; nothing is skipped).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    /// Reading or writing the directory failed.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The broker did not acknowledge a record.
    #[error("{file} line {line}: broker did not acknowledge: {source}")]
    Delivery {
        /// File.
        file: String,
        /// Line.
        line: u64,
        /// Cause.
        source: rdkafka::error::KafkaError,
    },
    /// Reading back the topic after a restart failed.
    #[error("recovering {file}: {message}")]
    Recovery {
        /// File.
        file: String,
        /// Cause.
        message: String,
    },
    /// A checkpoint that does not parse: refuse to guess.
    #[error("{path}: expected a chitose checkpoint, found {found}")]
    Checkpoint {
        /// Path.
        path: PathBuf,
        /// What was there.
        found: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FilesError + '_ {
    move |source| FilesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Progress through one file, persisted in `.chitose/<file>.ckpt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Size of the file when first seen (a changed size means a new file).
    pub file_size: u64,
    /// Lines 1..=line are all acknowledged or rejected.
    pub line: u64,
    /// Byte offset just after `line`.
    pub byte_offset: u64,
    /// Length of the rejects file covering lines up to `line`.
    pub rejects_len: u64,
    /// Topic high watermarks before the first record of the file was sent.
    pub start_watermarks: BTreeMap<i32, i64>,
}

/// Counts of one file pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileReport {
    /// Lines read (blank lines excluded).
    pub read: u64,
    /// Records acknowledged by the broker in this pass.
    pub produced: u64,
    /// Lines found already in the topic after a restart.
    pub recovered: u64,
    /// Lines rejected.
    pub rejected: u64,
    /// FHIR entries read as context or merged (no record of their own).
    pub skipped: u64,
}

/// The files source.
pub struct FilesSource {
    cfg: FilesConfig,
    kafka: KafkaSettings,
    producer: RawProducer,
    edge: Edge,
    metrics: IngestMetrics,
    csv: Option<CsvMapping>,
    prefecture: String,
}

/// Settles in `window` the lines whose deliveries `tracker` noted since
/// the last call (a produced record counts as `Ok(true)`).
fn take_deliveries(
    tracker: &Tracker,
    delivered: &mut Vec<Delivery>,
    window: &mut InOrder<(u64, u64, u64), Result<bool, rdkafka::error::KafkaError>>,
) {
    tracker.take(delivered);
    for (seq, r) in delivered.drain(..) {
        window.settle(seq, r.map(|_| true));
    }
}

/// Writes `bytes` to `path` all or nothing: a temporary file (owner-only:
/// checkpoints, queued SS-MIX2 batches), synced, renamed, its folder synced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FilesError> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).truncate(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

impl FilesSource {
    /// A source over `cfg.dir`.
    pub fn new(
        cfg: FilesConfig,
        kafka: KafkaSettings,
        producer: RawProducer,
        edge: Edge,
        metrics: IngestMetrics,
        prefecture: String,
    ) -> Result<Self, FilesError> {
        for d in ["done", "rejects", ".chitose"] {
            let p = cfg.dir.join(d);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
            // Patients' records (done/) and what the hub got wrong
            // (rejects/): only chitose's user may list or read them.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
                    .map_err(io(&p))?;
            }
        }
        let csv = CsvMapping::new(&cfg.csv).map_err(|found| FilesError::Checkpoint {
            path: PathBuf::from("files.csv"),
            found,
        })?;
        let csv = (!csv.is_empty()).then_some(csv);
        Ok(FilesSource {
            prefecture,
            csv,
            cfg,
            kafka,
            producer,
            edge,
            metrics,
        })
    }

    fn pending_files(&self) -> Result<Vec<PathBuf>, FilesError> {
        // By name only: a symlink or a directory with a record file's name
        // is refused with a reason, not passed over without a word.
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.cfg.dir)
            .map_err(io(&self.cfg.dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                (p.extension().is_some_and(|e| {
                    e == "ndjson" || e == "jsonl" || (e == "csv" && self.csv.is_some())
                }) || RecordReader::is_fhir(p))
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Why a file cannot be read at all, if it cannot.
    fn refusal(path: &Path) -> Option<(&'static str, String)> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => return Some(("unreadable", format!("a readable file, found {}", e.kind()))),
        };
        if meta.file_type().is_symlink() {
            return Some((
                "symlink",
                "a regular file, found a symbolic link (it may loop, dangle or point outside the folder); place the file itself in the folder".into(),
            ));
        }
        if !meta.is_file() {
            return Some((
                "not_a_file",
                "a regular file, found a directory or a special file".into(),
            ));
        }
        if let Err(e) = std::fs::File::open(path) {
            return Some(("unreadable", format!("a readable file, found {}", e.kind())));
        }
        None
    }

    /// Moves a file that cannot be read to `rejects/` with an entry naming
    /// it and why: one bad file never stops the hub's other files.
    fn refuse(&self, path: &Path, reason: &'static str, expected: &str) -> Result<(), FilesError> {
        let name = path
            .file_name()
            .expect("a file")
            .to_string_lossy()
            .to_string();
        let rejects = self.cfg.dir.join("rejects");
        let mut to = rejects.join(&name);
        if std::fs::symlink_metadata(&to).is_ok() {
            to = rejects.join(format!("{name}.{}", Timestamp::now().0));
        }
        std::fs::rename(path, &to).map_err(io(path))?;
        #[cfg(unix)]
        if !std::fs::symlink_metadata(&to).is_ok_and(|m| m.file_type().is_symlink()) {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600));
        }
        let entry = serde_json::json!({
            "file": name,
            "line": 0,
            "reason": reason,
            "error": format!("{name}: expected {expected}"),
        });
        let log = rejects.join(format!("{name}.rejects.ndjson"));
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&log).map_err(io(&log))?;
        let mut text = serde_json::to_vec(&entry).expect("serializes");
        text.push(b'\n');
        f.write_all(&text).map_err(io(&log))?;
        for stale in [
            self.cfg.dir.join(".chitose").join(format!("{name}.ckpt")),
            self.decoded_path(&name),
        ] {
            let _ = std::fs::remove_file(stale);
        }
        self.metrics
            .files_refused
            .with_label_values(&[reason])
            .inc();
        tracing::warn!(file = %name, reason, "file refused and moved to rejects/");
        Ok(())
    }

    fn decoded_path(&self, name: &str) -> PathBuf {
        self.cfg.dir.join(".chitose").join(format!("utf8-{name}"))
    }

    /// The path to read `path` from: itself when it is UTF-8, else a UTF-8
    /// copy in `.chitose/` (made once, atomically; the same bytes on every
    /// run, so checkpoints into it stay valid). `Err`: the bytes are not
    /// text in the encoding.
    fn readable(&self, path: &Path, name: &str) -> Result<Result<PathBuf, String>, FilesError> {
        let mut head = [0u8; 2];
        let n = {
            let mut f = std::fs::File::open(path).map_err(io(path))?;
            std::io::Read::read(&mut f, &mut head).map_err(io(path))?
        };
        let bom16 = match &head[..n] {
            [0xFF, 0xFE] => Some(encoding_rs::UTF_16LE),
            [0xFE, 0xFF] => Some(encoding_rs::UTF_16BE),
            _ => None,
        };
        let enc = bom16.unwrap_or_else(|| {
            encoding_rs::Encoding::for_label(self.cfg.encoding.as_bytes())
                .expect("validated at start-up")
        });
        if enc == encoding_rs::UTF_8 {
            return Ok(Ok(path.to_path_buf()));
        }
        let out = self.decoded_path(name);
        if out.exists() {
            return Ok(Ok(out));
        }
        let mut src = std::io::BufReader::new(std::fs::File::open(path).map_err(io(path))?);
        let tmp = out.with_extension("part");
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).truncate(true).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut dst = std::io::BufWriter::new(opts.open(&tmp).map_err(io(&tmp))?);
        let mut decoder = enc.new_decoder_with_bom_removal();
        let (mut inb, mut outb) = (vec![0u8; 64 * 1024], vec![0u8; 256 * 1024]);
        let mut at = 0u64;
        loop {
            let k = std::io::Read::read(&mut src, &mut inb).map_err(io(path))?;
            let last = k == 0;
            let mut input = &inb[..k];
            loop {
                let (r, read, written) =
                    decoder.decode_to_utf8_without_replacement(input, &mut outb, last);
                dst.write_all(&outb[..written]).map_err(io(&tmp))?;
                input = &input[read..];
                at += read as u64;
                match r {
                    encoding_rs::DecoderResult::InputEmpty => break,
                    encoding_rs::DecoderResult::OutputFull => continue,
                    encoding_rs::DecoderResult::Malformed(_, _) => {
                        drop(dst);
                        let _ = std::fs::remove_file(&tmp);
                        return Ok(Err(format!(
                            "text in {} (files.encoding), found a byte sequence that is not near byte {at}",
                            enc.name()
                        )));
                    }
                }
            }
            if last {
                break;
            }
        }
        dst.flush().map_err(io(&tmp))?;
        dst.get_ref().sync_all().map_err(io(&tmp))?;
        drop(dst);
        std::fs::rename(&tmp, &out).map_err(io(&tmp))?;
        Ok(Ok(out))
    }

    /// Deletes checkpoints whose file is gone (a crash after the move to
    /// `done/` and before the checkpoint was removed).
    fn clean_stale_checkpoints(&self) -> Result<(), FilesError> {
        let dir = self.cfg.dir.join(".chitose");
        for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let p = e.map_err(io(&dir))?.path();
            if let Some(name) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ckpt"))
                && !self.cfg.dir.join(name).exists()
            {
                std::fs::remove_file(&p).map_err(io(&p))?;
            }
        }
        Ok(())
    }

    /// Watches the directory until shutdown (or until idle, in batch mode).
    /// A failed pass (broker down) pauses and retries the same file.
    pub async fn run(&self, mut shutdown: Shutdown) -> Result<u64, FilesError> {
        let mut total = 0;
        let mut backoff = Duration::from_millis(500);
        self.clean_stale_checkpoints()?;
        let mut pruned_at: Option<Instant> = None;
        loop {
            if pruned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                for d in ["done", "rejects"] {
                    let p = self.cfg.dir.join(d);
                    match crate::rejects::prune(&p, self.cfg.retention_days) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            folder = d,
                            files = n,
                            days = self.cfg.retention_days,
                            "deleted files past retention"
                        ),
                        Err(e) => {
                            tracing::warn!(folder = d, error = %e, "retention: could not prune")
                        }
                    }
                }
                pruned_at = Some(Instant::now());
            }
            let files = self.pending_files()?;
            if files.is_empty() && self.cfg.exit_when_idle {
                return Ok(total);
            }
            for f in files {
                if shutdown.is_triggered() {
                    return Ok(total);
                }
                if let Some((reason, expected)) = Self::refusal(&f) {
                    self.refuse(&f, reason, &expected)?;
                    continue;
                }
                match self.process(&f, &shutdown).await {
                    Ok(Some(r)) => {
                        total += r.read;
                        backoff = Duration::from_millis(500);
                    }
                    Ok(None) => return Ok(total),
                    Err(e @ (FilesError::Delivery { .. } | FilesError::Recovery { .. })) => {
                        tracing::warn!(error = %e, "pausing the files source; the file resumes from its checkpoint");
                        // Let every outstanding record resolve (delivered or
                        // timed out) before the retry reads the topic back,
                        // so none lands after that read.
                        let p = self.producer.clone();
                        let _ =
                            tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(60)))
                                .await;
                        if matches!(e, FilesError::Delivery { .. })
                            && let Err(err) = self.producer.reset()
                        {
                            tracing::error!(error = %err, "could not recreate the producer");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.wait() => return Ok(total),
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                _ = shutdown.wait() => return Ok(total),
            }
        }
    }

    fn watermarks(&self) -> Result<BTreeMap<i32, i64>, String> {
        let c: BaseConsumer = self
            .kafka
            .consumer_config("chitose-ingest-recovery")
            .create()
            .map_err(|e| e.to_string())?;
        let md = c
            .fetch_metadata(Some(self.producer.topic()), Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let t = md.topics().first().ok_or("no topic metadata")?;
        let mut out = BTreeMap::new();
        for p in t.partitions() {
            let (_, high) = c
                .fetch_watermarks(self.producer.topic(), p.id(), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            out.insert(p.id(), high);
        }
        Ok(out)
    }

    /// Lines of `file` after `after` that are already in the topic.
    fn recover(&self, file: &str, ckpt: &Checkpoint) -> Result<HashSet<u64>, String> {
        let end = self.watermarks()?;
        let c: BaseConsumer = self
            .kafka
            .consumer_config("chitose-ingest-recovery")
            .set("isolation.level", "read_uncommitted")
            .create()
            .map_err(|e| e.to_string())?;
        let mut tpl = TopicPartitionList::new();
        let mut remaining = 0;
        for (p, start) in &ckpt.start_watermarks {
            let stop = end.get(p).copied().unwrap_or(*start);
            if stop > *start {
                tpl.add_partition_offset(self.producer.topic(), *p, Offset::Offset(*start))
                    .map_err(|e| e.to_string())?;
                remaining += 1;
            }
        }
        let mut found = HashSet::new();
        if remaining == 0 {
            return Ok(found);
        }
        c.assign(&tpl).map_err(|e| e.to_string())?;
        let mut done: HashSet<i32> = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while done.len() < remaining {
            if Instant::now() > deadline {
                return Err("reading back the topic took over 120 s".into());
            }
            let Some(m) = c.poll(Duration::from_millis(500)) else {
                continue;
            };
            let m = m.map_err(|e| e.to_string())?;
            if let Some(h) = m.headers() {
                let (mut f, mut l) = (None, None);
                for h in h.iter() {
                    match h.key {
                        HEADER_FILE => f = h.value,
                        HEADER_LINE => {
                            l = h
                                .value
                                .and_then(|v| std::str::from_utf8(v).ok())
                                .and_then(|v| v.parse::<u64>().ok())
                        }
                        _ => {}
                    }
                }
                if f == Some(file.as_bytes())
                    && let Some(l) = l
                    && l > ckpt.line
                {
                    found.insert(l);
                }
            }
            if m.offset() + 1 >= end[&m.partition()] {
                done.insert(m.partition());
            }
        }
        Ok(found)
    }

    /// Sends one file. `Ok(None)`: stopped by shutdown (checkpoint written).
    pub async fn process(
        &self,
        path: &Path,
        shutdown: &Shutdown,
    ) -> Result<Option<FileReport>, FilesError> {
        let name = path
            .file_name()
            .expect("a file")
            .to_string_lossy()
            .to_string();
        let ckpt_path = self.cfg.dir.join(".chitose").join(format!("{name}.ckpt"));
        let rejects_path = self
            .cfg
            .dir
            .join("rejects")
            .join(format!("{name}.rejects.ndjson"));
        let source = match self.readable(path, &name)? {
            Ok(p) => p,
            Err(expected) => {
                self.refuse(path, "encoding", &expected)?;
                return Ok(Some(FileReport {
                    rejected: 1,
                    ..FileReport::default()
                }));
            }
        };
        let size = std::fs::metadata(path).map_err(io(path))?.len();

        let mut ckpt = match std::fs::read(&ckpt_path) {
            Ok(b) => {
                let c: Checkpoint =
                    serde_json::from_slice(&b).map_err(|e| FilesError::Checkpoint {
                        path: ckpt_path.clone(),
                        found: e.to_string(),
                    })?;
                if c.file_size != size {
                    return Err(FilesError::Checkpoint {
                        path: ckpt_path,
                        found: format!(
                            "a checkpoint for a file of {} bytes; this one has {size}: files must not change once dropped",
                            c.file_size
                        ),
                    });
                }
                c
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let start_watermarks =
                    tokio::task::block_in_place(|| self.watermarks()).map_err(|message| {
                        FilesError::Recovery {
                            file: name.clone(),
                            message,
                        }
                    })?;
                let c = Checkpoint {
                    file_size: size,
                    line: 0,
                    byte_offset: 0,
                    rejects_len: 0,
                    start_watermarks,
                };
                write_atomic(&ckpt_path, &serde_json::to_vec(&c).expect("serializes"))?;
                c
            }
            Err(e) => return Err(io(&ckpt_path)(e)),
        };
        let already =
            tokio::task::block_in_place(|| self.recover(&name, &ckpt)).map_err(|message| {
                FilesError::Recovery {
                    file: name.clone(),
                    message,
                }
            })?;
        if !already.is_empty() {
            tracing::info!(file = %name, lines = already.len(), "found lines already in the topic; not sending them again");
        }

        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut rejects = opts.open(&rejects_path).map_err(io(&rejects_path))?;
        // Rejects of lines after the checkpoint are written again below.
        rejects
            .set_len(ckpt.rejects_len)
            .map_err(io(&rejects_path))?;
        rejects
            .seek(std::io::SeekFrom::End(0))
            .map_err(io(&rejects_path))?;
        let mut rejects = std::io::BufWriter::new(rejects);
        let mut rejects_len = ckpt.rejects_len;

        let mut reader = match RecordReader::open(
            &source,
            self.csv.as_ref(),
            &self.prefecture,
            ckpt.line,
            ckpt.byte_offset,
        ) {
            Ok(r) => r,
            // A CSV header that is not text in the encoding: the file is
            // moved aside, the folder goes on.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                drop(rejects);
                self.refuse(
                    path,
                    "encoding",
                    &format!(
                        "a header row in {} (files.encoding), found invalid bytes",
                        self.cfg.encoding
                    ),
                )?;
                return Ok(Some(FileReport {
                    rejected: 1,
                    ..FileReport::default()
                }));
            }
            Err(e) => return Err(io(path)(e)),
        };
        let mut report = FileReport::default();
        // Lines in order: (line, end offset, rejects length) with whether a
        // record was produced; the producer settles sent lines through the
        // tracker, in whatever order the partitions answer.
        let mut window: InOrder<(u64, u64, u64), Result<bool, rdkafka::error::KafkaError>> =
            InOrder::default();
        let tracker = Tracker::default();
        let mut delivered = Vec::new();
        let mut ln_text = String::new();
        let mut last_ckpt = Instant::now();
        let mut last_written = ckpt.line;
        let now = Timestamp::now();
        let mut scratch = EdgeScratch::default();

        type Done = ((u64, u64, u64), Result<bool, rdkafka::error::KafkaError>);
        let settle =
            |d: Done, ckpt: &mut Checkpoint, report: &mut FileReport| -> Result<(), FilesError> {
                let ((line, end, rj), r) = d;
                match r {
                    Ok(produced) => {
                        report.produced += u64::from(produced);
                        ckpt.line = line;
                        ckpt.byte_offset = end;
                        ckpt.rejects_len = rj;
                        Ok(())
                    }
                    Err(source) => Err(FilesError::Delivery {
                        file: name.clone(),
                        line,
                        source,
                    }),
                }
            };

        loop {
            if shutdown.is_triggered() {
                break;
            }
            let Some(next) = reader.next_item().map_err(io(path))? else {
                break;
            };
            let (ln, end) = (next.line, next.end);
            let (line, invalid): (Cow<'_, [u8]>, Option<JsonError>) = match next.item {
                Item::Blank => {
                    window.push_settled((ln, end, rejects_len), Ok(false));
                    continue;
                }
                Item::Skipped(k) => {
                    report.skipped += 1;
                    self.metrics
                        .fhir_skipped
                        .with_label_values(&[k.as_str()])
                        .inc();
                    window.push_settled((ln, end, rejects_len), Ok(false));
                    continue;
                }
                Item::Record(r) => (r, None),
                Item::Invalid(e, raw) => (Cow::Owned(raw), Some(e)),
            };
            report.read += 1;
            self.metrics.read.inc();
            if already.contains(&ln) {
                report.recovered += 1;
                window.push_settled((ln, end, rejects_len), Ok(false));
                continue;
            }
            let verdict = match invalid {
                Some(e) => Err(e),
                None => self.edge.accept_with(&line, now, &mut scratch),
            };
            match verdict {
                Ok(message) => {
                    ln_text.clear();
                    std::fmt::Write::write_fmt(&mut ln_text, format_args!("{ln}"))
                        .expect("writes to a String");
                    let seq = window.push_pending((ln, end, rejects_len));
                    let sent = self
                        .producer
                        .send_tracked(
                            &scratch.event().patient.local_patient_id,
                            &message,
                            &[
                                (HEADER_FILE, name.as_bytes()),
                                (HEADER_LINE, ln_text.as_bytes()),
                            ],
                            &tracker,
                            seq,
                        )
                        .await;
                    if let Err(e) = sent {
                        window.settle(seq, Err(e));
                    }
                }
                Err(e) => {
                    report.rejected += 1;
                    self.metrics
                        .rejected
                        .with_label_values(&[e.reason.as_str()])
                        .inc();
                    let entry = serde_json::json!({
                        "file": name,
                        "line": ln,
                        "reason": e.reason.as_str(),
                        "error": e.to_string(),
                        "record": crate::rejects::masked_record(&line, &e),
                    });
                    let mut text = serde_json::to_vec(&entry).expect("serializes");
                    text.push(b'\n');
                    rejects.write_all(&text).map_err(io(&rejects_path))?;
                    rejects_len += text.len() as u64;
                    window.push_settled((ln, end, rejects_len), Ok(false));
                }
            }
            // Settle what is already acknowledged, in order.
            take_deliveries(&tracker, &mut delivered, &mut window);
            while let Some(d) = window.pop_ready() {
                settle(d, &mut ckpt, &mut report)?;
            }
            let advanced = ckpt.line - last_written;
            if advanced >= self.cfg.checkpoint_every_lines
                || (advanced > 0 && last_ckpt.elapsed() > Duration::from_secs(1))
            {
                rejects.flush().map_err(io(&rejects_path))?;
                write_atomic(&ckpt_path, &serde_json::to_vec(&ckpt).expect("serializes"))?;
                last_ckpt = Instant::now();
                last_written = ckpt.line;
            }
        }
        while !window.is_empty() {
            while let Some(d) = window.pop_ready() {
                settle(d, &mut ckpt, &mut report)?;
            }
            if window.is_empty() {
                break;
            }
            tracker.noted().await;
            take_deliveries(&tracker, &mut delivered, &mut window);
        }
        rejects.flush().map_err(io(&rejects_path))?;
        rejects.get_ref().sync_all().map_err(io(&rejects_path))?;
        write_atomic(&ckpt_path, &serde_json::to_vec(&ckpt).expect("serializes"))?;
        if shutdown.is_triggered() && ckpt.byte_offset < size {
            tracing::info!(file = %name, line = ckpt.line, "stopped mid-file; checkpoint written");
            return Ok(None);
        }
        let mut done = self.cfg.dir.join("done").join(&name);
        if done.exists() {
            done = self
                .cfg
                .dir
                .join("done")
                .join(format!("{name}.{}", Timestamp::now().0));
        }
        std::fs::rename(path, &done).map_err(io(path))?;
        // The hub wrote the file with its own mode; kept here it holds
        // patients' records, so only chitose's user may read it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&done, std::fs::Permissions::from_mode(0o600))
                .map_err(io(&done))?;
        }
        if rejects_len == 0 {
            let _ = std::fs::remove_file(&rejects_path);
        }
        std::fs::remove_file(&ckpt_path).map_err(io(&ckpt_path))?;
        if source != path {
            let _ = std::fs::remove_file(&source);
        }
        tracing::info!(file = %name, read = report.read, produced = report.produced, recovered = report.recovered, rejected = report.rejected, "file done");
        Ok(Some(report))
    }
}
