//! The lake on an object store: where files go, and the ledger that says
//! which of them count.
//!
//! ```text
//! <lake>/pseudonymized/<table>/prefecture=NN/event_month=YYYY-MM/part-<p>-<first>-e<epoch>.parquet
//! <lake>/_chitose/ledger/<table>/p<p>/<seq>.json     commit records, one per flush (and per claim)
//! <lake>/_chitose/intents/<table>/p<p>/<epoch>-<first>.json  files being written
//! ```
//!
//! Commit records are written with a conditional put (create only): the
//! writer that claims sequence number N+1 first wins, and a zombie that
//! still believes it owns the partition fails its next commit and stops.
//! The file name carries the claim's epoch, so a zombie and the new owner
//! never write the same object.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A lake problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LakeError {
    /// The object store refused or failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Another writer committed this sequence number first.
    #[error(
        "ledger {table} partition {partition}: sequence {seq} was committed by another writer (this one is fenced)"
    )]
    Fenced {
        /// Table.
        table: String,
        /// Kafka partition.
        partition: i32,
        /// Sequence.
        seq: u64,
    },
    /// A ledger object does not parse.
    #[error("ledger object {path}: {message}")]
    Corrupt {
        /// Path.
        path: String,
        /// Cause.
        message: String,
    },
    /// The lake URL or options are invalid.
    #[error("lake: {0}")]
    Config(String),
}

/// A file a commit made count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Landed {
    /// Partition key (`prefecture=27/event_month=2025-05`).
    pub key: String,
    /// Object path.
    pub path: String,
    /// First Kafka offset in it.
    pub first: i64,
    /// Last Kafka offset in it.
    pub last: i64,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One commit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Sequence number (the object name).
    pub seq: u64,
    /// `claim` or `flush`.
    pub kind: String,
    /// Who wrote it (instance id + process token).
    pub owner: String,
    /// Sequence of the owner's claim (in its file names).
    pub epoch: u64,
    /// Every record below this offset is in a committed file (or was dropped
    /// as a replay): a new owner starts here.
    pub next_offset: i64,
    /// Committed files holding offsets at or above `next_offset`: their rows
    /// are skipped when those offsets are read again.
    pub landed: Vec<Landed>,
    /// Highest source offset per raw partition (`topic/partition`) among the
    /// records below `next_offset`: a record at or below it is a replay.
    pub watermarks: BTreeMap<String, i64>,
    /// Files this commit made count.
    pub files: Vec<Landed>,
    /// Wall clock, ms (operations only).
    pub at_ms: i64,
}

/// The lake: a store and a root prefix.
#[derive(Debug, Clone)]
pub struct Lake {
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    root: Path,
}

impl Lake {
    /// Opens `url` (a local path, `file://`, `s3://`, `gs://`, `az://`…) with
    /// object_store `options` (endpoint, region, …; credentials come from
    /// the environment).
    pub fn open(url: &str, options: &BTreeMap<String, String>) -> Result<Lake, LakeError> {
        let is_remote = url.contains("://") && !url.starts_with("file://");
        if !is_remote {
            let dir = url.strip_prefix("file://").unwrap_or(url);
            std::fs::create_dir_all(dir).map_err(|e| LakeError::Config(format!("{dir}: {e}")))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                .map_err(LakeError::Store)?
                .with_automatic_cleanup(true);
            return Ok(Lake {
                store: Arc::new(fs),
                root: Path::default(),
            });
        }
        let parsed = url::Url::parse(url).map_err(|e| LakeError::Config(format!("{url}: {e}")))?;
        let mut opts: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| {
                k.starts_with("AWS_") || k.starts_with("GOOGLE_") || k.starts_with("AZURE_")
            })
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        if parsed.scheme() == "s3" || parsed.scheme() == "s3a" {
            // The ledger's fencing needs create-only puts (If-None-Match).
            opts.insert("aws_conditional_put".into(), "etag".into());
        }
        opts.extend(options.clone());
        let (store, root) =
            object_store::parse_url_opts(&parsed, opts).map_err(LakeError::Store)?;
        Ok(Lake {
            store: Arc::from(store),
            root,
        })
    }

    /// A path under the lake root.
    pub fn path(&self, rel: &str) -> Path {
        let mut p = self.root.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// Path of a data file.
    pub fn data_file(
        &self,
        table: &str,
        key: &str,
        partition: i32,
        first: i64,
        epoch: u64,
    ) -> Path {
        self.path(&format!(
            "pseudonymized/{table}/{key}/part-{partition:03}-{first:020}-e{epoch}.parquet"
        ))
    }

    fn ledger_dir(&self, table: &str, partition: i32) -> Path {
        self.path(&format!("_chitose/ledger/{table}/p{partition:03}"))
    }

    fn intent_dir(&self, table: &str, partition: i32) -> Path {
        self.path(&format!("_chitose/intents/{table}/p{partition:03}"))
    }

    /// Every commit record of a partition, oldest first.
    pub async fn commits(&self, table: &str, partition: i32) -> Result<Vec<Commit>, LakeError> {
        let dir = self.ledger_dir(table, partition);
        let mut metas: Vec<_> = self.store.list(Some(&dir)).try_collect().await?;
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        let mut out = Vec::with_capacity(metas.len());
        for m in metas {
            let bytes = self.store.get(&m.location).await?.bytes().await?;
            let c: Commit = serde_json::from_slice(&bytes).map_err(|e| LakeError::Corrupt {
                path: m.location.to_string(),
                message: e.to_string(),
            })?;
            out.push(c);
        }
        Ok(out)
    }

    /// The newest commit record of a partition.
    pub async fn latest(&self, table: &str, partition: i32) -> Result<Option<Commit>, LakeError> {
        let dir = self.ledger_dir(table, partition);
        let metas: Vec<_> = self.store.list(Some(&dir)).try_collect().await?;
        let Some(newest) = metas.into_iter().max_by(|a, b| a.location.cmp(&b.location)) else {
            return Ok(None);
        };
        let bytes = self.store.get(&newest.location).await?.bytes().await?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LakeError::Corrupt {
                path: newest.location.to_string(),
                message: e.to_string(),
            })
    }

    /// Writes commit `c` if its sequence number is free.
    pub async fn commit(&self, table: &str, partition: i32, c: &Commit) -> Result<(), LakeError> {
        let path = self
            .ledger_dir(table, partition)
            .join(format!("{:020}.json", c.seq));
        let body = serde_json::to_vec_pretty(c).expect("serializable");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(Bytes::from(body)), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Err(LakeError::Fenced {
                table: table.to_owned(),
                partition,
                seq: c.seq,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Records that `file` is about to be written (before its first byte).
    pub async fn intend(
        &self,
        table: &str,
        partition: i32,
        epoch: u64,
        first: i64,
        file: &Path,
    ) -> Result<Path, LakeError> {
        let p = self
            .intent_dir(table, partition)
            .join(format!("{epoch:020}-{first:020}.json"));
        let body = serde_json::json!({ "path": file.to_string() }).to_string();
        self.store
            .put(&p, PutPayload::from(Bytes::from(body)))
            .await?;
        Ok(p)
    }

    /// Every intent of a partition: (intent path, file path).
    pub async fn intents(
        &self,
        table: &str,
        partition: i32,
    ) -> Result<Vec<(Path, String)>, LakeError> {
        let dir = self.intent_dir(table, partition);
        let metas: Vec<_> = self.store.list(Some(&dir)).try_collect().await?;
        let mut out = Vec::new();
        for m in metas {
            let bytes = self.store.get(&m.location).await?.bytes().await?;
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| LakeError::Corrupt {
                    path: m.location.to_string(),
                    message: e.to_string(),
                })?;
            let file = v["path"].as_str().unwrap_or_default().to_owned();
            out.push((m.location, file));
        }
        Ok(out)
    }

    /// Deletes an object; absent is fine.
    pub async fn delete(&self, p: &Path) -> Result<(), LakeError> {
        match self.store.delete(p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
