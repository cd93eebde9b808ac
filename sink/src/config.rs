//! `chitose sink` configuration: defaults that work locally, a TOML file,
//! `CHITOSE_SINK__<KEY>` environment overrides, and flags.

use chitose_runtime::config::{ConfigError, Problems, Validate};
use chitose_runtime::kafka::KafkaSettings;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The whole sink configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Pseudonymized topics to read, a regex; the table is the topic's last
    /// dot-separated part.
    pub input_pattern: String,
    /// Consumer group; instances of one deployment share it.
    pub group_id: String,
    /// This instance's id (in logs and commit info, for operators).
    pub instance_id: String,
    /// The lake: a local folder, or `s3://bucket/prefix`, `gs://…`, `az://…`.
    pub lake: String,
    /// object_store options for the lake (`aws_endpoint`, `aws_region`,
    /// `aws_allow_http`, …); credentials come from the environment.
    pub lake_options: BTreeMap<String, String>,
    /// Partition columns after prefecture and event_month, from
    /// facility_type, sex, age_band, residence_prefecture.
    pub partition_columns: Vec<String>,
    /// A table rolls (one file per lake partition, one Delta commit) when
    /// one of its lake partitions buffers this many rows.
    pub roll_rows: u64,
    /// … or this many bytes (Arrow, in memory: a file is ~5–10× smaller).
    pub roll_bytes: u64,
    /// … or when its oldest buffered row is this old (the lake's freshness).
    #[serde(with = "chitose_runtime::config::duration")]
    pub roll_age: Duration,
    /// Rows per Parquet row group at most.
    pub row_group_rows: usize,
    /// Multipart upload part size (S3 needs at least 5 MiB).
    pub upload_part_bytes: usize,
    /// Bytes buffered over all tables at most; over it, the table holding
    /// the most rolls first.
    pub max_buffered_bytes: usize,
    /// A Delta checkpoint every this many versions of a table (readers and
    /// a restarting sink then read one Parquet file, not every commit).
    pub checkpoint_interval: u64,
    /// Records handled per step at most.
    pub batch_max_records: usize,
    /// A step waits at most this long for more records.
    #[serde(with = "chitose_runtime::config::duration")]
    pub batch_max: Duration,
    /// Extra `.avsc` folder (table versions added after this release).
    pub schemas_dir: Option<PathBuf>,
    /// Confluent-compatible schema registry, for Confluent-framed records.
    pub registry_url: Option<url::Url>,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub ops_listen: std::net::SocketAddr,
    /// A record whose event id appeared at most this many offsets earlier
    /// in its partition is a duplicate (an HTTP client's retry) and is not
    /// landed; 0 lands every copy. ~50 bytes of memory per record and
    /// partition; a restart re-reads this many records.
    pub dedupe_window_records: i64,
    /// Kafka connection.
    pub kafka: KafkaSettings,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            input_pattern: chitose_runtime::topics::PSEUDO_PATTERN.into(),
            group_id: "chitose-sink".into(),
            instance_id: "0".into(),
            lake: "./.chitose/lake".into(),
            lake_options: BTreeMap::new(),
            partition_columns: Vec::new(),
            roll_rows: 1_000_000,
            roll_bytes: 512 * 1024 * 1024,
            roll_age: Duration::from_secs(60),
            row_group_rows: 128 * 1024,
            upload_part_bytes: 5 * 1024 * 1024,
            max_buffered_bytes: 192 * 1024 * 1024,
            checkpoint_interval: 100,
            batch_max_records: 10_000,
            batch_max: Duration::from_millis(200),
            schemas_dir: None,
            registry_url: None,
            ops_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9466)),
            dedupe_window_records: 50_000,
            kafka: KafkaSettings::default(),
        }
    }
}

impl SinkConfig {
    /// Checks values serde cannot; every problem, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Validate::validate(self)
    }
}

impl Validate for SinkConfig {
    fn problems(&self, p: &mut Problems) {
        for c in &self.partition_columns {
            if !chitose_lake::layout::EXTRA_PARTITION_COLUMNS.contains(&c.as_str()) {
                p.value(
                    "partition_columns",
                    &format!(
                        "columns from {}",
                        chitose_lake::layout::EXTRA_PARTITION_COLUMNS.join(", ")
                    ),
                    format!("{c:?}"),
                );
            }
        }
        if self.dedupe_window_records < 0 {
            p.value(
                "dedupe_window_records",
                "0 (off) or a positive number of records",
                self.dedupe_window_records.to_string(),
            );
        }
        if !self.input_pattern.starts_with('^') {
            p.value(
                "input_pattern",
                "a regex starting with ^",
                format!("{:?}", self.input_pattern),
            );
        }
        for (k, v) in [
            ("roll_rows", self.roll_rows),
            ("roll_bytes", self.roll_bytes),
            ("checkpoint_interval", self.checkpoint_interval),
            ("row_group_rows", self.row_group_rows as u64),
            ("batch_max_records", self.batch_max_records as u64),
        ] {
            if v == 0 {
                p.value(k, "at least 1", "0".to_owned());
            }
        }
        if let Some(u) = &self.registry_url
            && !matches!(u.scheme(), "http" | "https")
        {
            p.value(
                "registry_url",
                "an http:// or https:// URL",
                format!("a {}: URL", u.scheme()),
            );
        }
        if self.roll_age.is_zero() {
            p.value("roll_age", "a duration above zero", "0".to_owned());
        }
        if self.upload_part_bytes < 5 * 1024 * 1024 && self.lake.starts_with("s3") {
            p.value(
                "upload_part_bytes",
                "at least 5 MiB for S3",
                self.upload_part_bytes.to_string(),
            );
        }
        if self.lake.trim().is_empty() {
            p.value(
                "lake",
                "a folder or an object store URL",
                "an empty string".to_owned(),
            );
        }
    }
}
