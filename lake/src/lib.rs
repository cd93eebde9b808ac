//! # chitose-lake: the lake's Delta tables
//!
//! ```text
//! <lake>/pseudonymized/<table>/_delta_log/…                 the table's log (commits, checkpoints)
//! <lake>/pseudonymized/<table>/prefecture=27/event_month=2025-05/part-<uuid>.parquet
//! <lake>/anonymized/<release_id>/<table>/…                  a release: a Delta table too
//! ```
//!
//! One crate for one concept: where tables live ([`layout`]), how a table is
//! read and committed ([`delta`], on delta-kernel-rs), the Parquet settings
//! and readers ([`parquet`]), the tables' schemas from the pseudo contract
//! ([`tables`]), and the checks and upkeep a lake operator runs ([`verify`],
//! [`upkeep`]). The sink, the release and the `chitose lake` commands use
//! it; none of them reaches into another's internals.

pub mod delta;
pub mod layout;
pub mod parquet;
pub mod tables;
pub mod upkeep;
pub mod verify;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// A lake problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LakeError {
    /// The object store refused or failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// The Delta log could not be read or written.
    #[error("delta table {table}: {message}")]
    Delta {
        /// Table root (lake-relative).
        table: String,
        /// delta-kernel's message.
        message: String,
    },
    /// A Parquet file could not be written or read.
    #[error("parquet {path}: {message}")]
    Parquet {
        /// Object path.
        path: String,
        /// Cause.
        message: String,
    },
    /// The lake URL or options are invalid, or a table is not what the
    /// configuration expects.
    #[error("lake: {0}")]
    Config(String),
}

/// The lake: a store, the root prefix inside it, and the root's URL (what
/// Delta readers are given).
#[derive(Clone)]
pub struct Lake {
    /// The object store (for a local lake: the whole file system).
    pub store: Arc<dyn ObjectStore>,
    root: Path,
    url: url::Url,
    engine: Arc<OnceLock<Arc<delta::Engine>>>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake")
            .field("url", &self.url.as_str())
            .finish()
    }
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
            let abs =
                std::fs::canonicalize(dir).map_err(|e| LakeError::Config(format!("{dir}: {e}")))?;
            // The store is the whole file system, rooted like the URL, so
            // a path delta-kernel derives from a file:// URL is the same
            // object this crate writes.
            let fs = object_store::local::LocalFileSystem::new().with_automatic_cleanup(true);
            let root = Path::from_filesystem_path(&abs)
                .map_err(|e| LakeError::Config(format!("{dir}: {e}")))?;
            let url = url::Url::from_directory_path(&abs)
                .map_err(|()| LakeError::Config(format!("{dir}: not an absolute path")))?;
            return Ok(Lake {
                store: Arc::new(fs),
                root,
                url,
                engine: Arc::default(),
            });
        }
        let mut parsed =
            url::Url::parse(url).map_err(|e| LakeError::Config(format!("{url}: {e}")))?;
        let mut opts: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| {
                k.starts_with("AWS_") || k.starts_with("GOOGLE_") || k.starts_with("AZURE_")
            })
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        if parsed.scheme() == "s3" || parsed.scheme() == "s3a" {
            // Delta commits are create-only puts (If-None-Match): the writer
            // of version N+1 wins, every other one sees a conflict.
            opts.insert("aws_conditional_put".into(), "etag".into());
        }
        opts.extend(options.clone());
        let (store, root) =
            object_store::parse_url_opts(&parsed, opts).map_err(LakeError::Store)?;
        if !parsed.path().ends_with('/') {
            let p = format!("{}/", parsed.path());
            parsed.set_path(&p);
        }
        Ok(Lake {
            store: Arc::from(store),
            root,
            url: parsed,
            engine: Arc::default(),
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

    /// The lake-relative form of an object path (`pseudonymized/…`).
    pub fn relative(&self, p: &Path) -> String {
        p.prefix_match(&self.root)
            .map(|parts| {
                parts
                    .map(|x| x.as_ref().to_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_else(|| p.to_string())
    }

    /// The URL of a folder under the lake root (ends with `/`).
    pub fn url(&self, rel: &str) -> url::Url {
        let mut u = self.url.clone();
        let mut path = u.path().to_owned();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            path.push_str(part);
            path.push('/');
        }
        u.set_path(&path);
        u
    }

    /// The lake root's URL, as readers are given it.
    pub fn root_url(&self) -> &url::Url {
        &self.url
    }

    /// Deletes an object; absent is fine.
    pub async fn delete(&self, p: &Path) -> Result<(), LakeError> {
        match self.store.delete(p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A Delta table under the lake root (`pseudonymized/diagnosis`).
    pub fn table(&self, rel: &str) -> delta::Table {
        delta::Table::new(self.clone(), rel)
    }

    pub(crate) fn engine(&self) -> Arc<delta::Engine> {
        self.engine
            .get_or_init(|| delta::engine(self.store.clone()))
            .clone()
    }
}
