//! `chitose transform` configuration: defaults that work locally, a TOML
//! file, `CHITOSE_TRANSFORM__<KEY>` environment overrides, and flags.

use crate::keys::KeysConfig;
use chitose_runtime::config::{ConfigError, Problems, Validate};
use chitose_runtime::kafka::KafkaSettings;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The whole transform configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformConfig {
    /// Raw topics to read, a regex (librdkafka pattern subscription).
    pub input_pattern: String,
    /// Output topic prefix; the event type is appended.
    pub output_prefix: String,
    /// Partitions when an output topic has to be created.
    pub output_partitions: i32,
    /// Dead-letter topic.
    pub dlq_topic: String,
    /// Consumer group; instances of one deployment share it.
    pub group_id: String,
    /// This instance's id, unique in the group: the transactional.id is
    /// `<group_id>-<instance_id>`, so a restarted instance fences its zombie.
    pub instance_id: String,
    /// Kafka transactions (exactly once). false: at-least-once, for
    /// brokers without transactions; the sink drops the replays.
    pub exactly_once: bool,
    /// A shipped profile name or a policy file path.
    pub policy: String,
    /// Extra `.avsc` folder (schemas added after this release).
    pub schemas_dir: Option<PathBuf>,
    /// Keys.
    pub keys: KeysConfig,
    /// Records per transaction at most.
    pub batch_max_records: usize,
    /// A transaction waits at most this long for more records.
    #[serde(with = "chitose_runtime::config::duration")]
    pub batch_max: std::time::Duration,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub ops_listen: std::net::SocketAddr,
    /// Kafka connection.
    pub kafka: KafkaSettings,
}

impl Default for TransformConfig {
    fn default() -> Self {
        TransformConfig {
            input_pattern: chitose_runtime::topics::RAW_PATTERN.into(),
            output_prefix: chitose_runtime::topics::PSEUDO_PREFIX.into(),
            output_partitions: 6,
            dlq_topic: chitose_runtime::topics::DLQ.into(),
            group_id: "chitose-transform".into(),
            instance_id: "0".into(),
            exactly_once: true,
            policy: "pseudonymized".into(),
            schemas_dir: None,
            keys: KeysConfig::default(),
            // A transaction costs a commit marker per partition it wrote
            // and a round of AddPartitions/EndTxn/TxnOffsetCommit requests:
            // at 250 ms a trickle made four a second over every output
            // partition. One a second, or 50 000 records catching up.
            batch_max_records: 50_000,
            batch_max: std::time::Duration::from_secs(1),
            ops_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9465)),
            kafka: KafkaSettings::default(),
        }
    }
}

impl TransformConfig {
    /// Checks values serde cannot; every problem, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Validate::validate(self)
    }

    /// The transactional.id of this instance.
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.group_id, self.instance_id)
    }
}

impl Validate for TransformConfig {
    fn problems(&self, p: &mut Problems) {
        if !self.input_pattern.starts_with('^') {
            p.value(
                "input_pattern",
                "a regex starting with ^ (librdkafka treats only those as patterns)",
                format!("{:?}", self.input_pattern),
            );
        }
        if self.batch_max_records == 0 {
            p.value("batch_max_records", "at least 1", "0".to_owned());
        }
        if self.output_partitions < 1 {
            p.value(
                "output_partitions",
                "at least 1",
                self.output_partitions.to_string(),
            );
        }
        if self.instance_id.trim().is_empty() {
            p.value(
                "instance_id",
                "a non-empty id unique in the group",
                "an empty string".to_owned(),
            );
        }
        if self.output_prefix.is_empty() || self.dlq_topic.is_empty() {
            p.value(
                "output_prefix / dlq_topic",
                "topic names",
                "an empty string".to_owned(),
            );
        }
    }
}
