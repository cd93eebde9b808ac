//! `chitose ingest` configuration: defaults that work locally, a TOML file,
//! `CHITOSE_INGEST__<SECTION>__<KEY>` environment overrides, and flags.

use crate::simulate::SimConfig;
use chitose_runtime::kafka::KafkaSettings;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Which source feeds the hub's topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// NDJSON file drops in a directory.
    #[default]
    Files,
    /// `POST /v1/events`.
    Http,
    /// The synthetic generator.
    Simulate,
}

/// The whole ingest configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// This hub's prefecture (JIS X 0401, two digits).
    pub prefecture: String,
    /// Topic name; `{prefecture}` is replaced.
    pub topic: String,
    /// Partitions when the topic has to be created.
    pub topic_partitions: i32,
    /// Which source runs.
    pub source: SourceKind,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub ops_listen: String,
    /// Bound on records produced but not yet acknowledged (backpressure).
    pub max_in_flight: usize,
    /// Kafka connection.
    pub kafka: KafkaSettings,
    /// Files source.
    pub files: FilesConfig,
    /// HTTP source.
    pub http: HttpConfig,
    /// Simulate source.
    pub simulate: SimulateConfig,
}

/// Files source settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Watched directory; `done/`, `rejects/` and `.chitose/` live inside it.
    pub dir: PathBuf,
    /// How often to look for new files.
    pub poll_interval_ms: u64,
    /// Write the checkpoint after this many acknowledged lines.
    pub checkpoint_every_lines: u64,
    /// Stop when the directory has no more files (batch mode, for tests
    /// and one-shot loads) instead of watching.
    pub exit_when_idle: bool,
    /// CSV header mapping; CSV files are read only when it maps columns.
    pub csv: crate::records::CsvConfig,
}

/// HTTP source settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address.
    pub listen: String,
    /// Request body limit; larger requests get 413.
    pub max_body_bytes: usize,
    /// How long a request waits for the broker's acknowledgements before
    /// answering 503.
    pub ack_deadline_ms: u64,
    /// Bearer token per prefecture (secret: hidden by `--print-config`).
    pub tokens: BTreeMap<String, String>,
}

/// Simulate source settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulateConfig {
    /// Events per second; 0 = as fast as the broker takes them.
    pub rate: f64,
    /// Stop after this many lines; 0 = run until stopped.
    pub events: u64,
    /// The generator.
    pub generator: SimConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            prefecture: "27".into(),
            topic: "health.raw.{prefecture}".into(),
            topic_partitions: 6,
            source: SourceKind::Files,
            ops_listen: "127.0.0.1:9464".into(),
            max_in_flight: 20_000,
            kafka: KafkaSettings::default(),
            files: FilesConfig::default(),
            http: HttpConfig::default(),
            simulate: SimulateConfig::default(),
        }
    }
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            dir: PathBuf::from("./incoming"),
            poll_interval_ms: 500,
            checkpoint_every_lines: 1_000,
            exit_when_idle: false,
            csv: Default::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 8 * 1024 * 1024,
            ack_deadline_ms: 10_000,
            tokens: BTreeMap::new(),
        }
    }
}

impl Default for SimulateConfig {
    fn default() -> Self {
        SimulateConfig {
            rate: 0.0,
            events: 0,
            generator: SimConfig::default(),
        }
    }
}

/// Keys whose values `--print-config` hides.
pub const SECRETS: &[&str] = &[
    "http.tokens",
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
];

impl IngestConfig {
    /// The topic for this hub.
    pub fn topic_name(&self) -> String {
        self.topic.replace("{prefecture}", &self.prefecture)
    }

    /// Checks values serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), chitose_runtime::config::ConfigError> {
        let bad = |key: &str, expected: &str, found: String| {
            chitose_runtime::config::ConfigError::value(key, expected, found)
        };
        let reference = chitose_schemas::reference::Reference::load().expect("shipped tables load");
        if reference.prefecture(&self.prefecture).is_none() {
            return bad(
                "prefecture",
                "a JIS X 0401 code 01-47",
                format!("{:?}", self.prefecture),
            );
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "at least 1", "0".into());
        }
        if self.topic_partitions < 1 {
            return bad(
                "topic_partitions",
                "at least 1",
                self.topic_partitions.to_string(),
            );
        }
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return bad(
                "kafka.bootstrap_servers",
                "host:port",
                "an empty string".into(),
            );
        }
        if self.source == SourceKind::Http {
            if self.http.tokens.is_empty() {
                return bad(
                    "http.tokens",
                    "a bearer token per prefecture",
                    "none".into(),
                );
            }
            for (p, t) in &self.http.tokens {
                if t.len() < 16 {
                    return bad(
                        &format!("http.tokens.{p}"),
                        "a token of at least 16 characters",
                        format!("{} characters", t.len()),
                    );
                }
            }
        }
        if !(self.simulate.rate >= 0.0 && self.simulate.rate.is_finite()) {
            return bad(
                "simulate.rate",
                "events per second, 0 or more",
                self.simulate.rate.to_string(),
            );
        }
        Ok(())
    }
}
