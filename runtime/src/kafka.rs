//! Kafka client setup shared by every service.
//!
//! One place decides the settings the exactly-once design depends on
//! (idempotence, acks=all, read_committed), so a stage cannot quietly run
//! with weaker ones.

use crate::secret::{Secret, is_secret_key, redact_message};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Connection settings, shared by every service and tool (`[kafka]` in a
/// config file; `CHITOSE_KAFKA_<PROPERTY>` and `CHITOSE_KAFKA_<PROPERTY>_FILE`
/// in the environment; see [`KafkaSettings::environment_table`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `host:port[,host:port]`.
    pub bootstrap_servers: String,
    /// Shown in broker logs and metrics.
    pub client_id: String,
    /// Producer compression codec.
    pub compression: String,
    /// Extra librdkafka properties (`security.protocol`, `ssl.ca.location`,
    /// `sasl.mechanism`, …), passed as they are. Secrets belong in
    /// `property_files`, not here.
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose values are read from files at start-up
    /// (`sasl.password = "/run/secrets/kafka-password"`), so a password
    /// lives in a Kubernetes or Docker Secret, never in a ConfigMap.
    pub property_files: BTreeMap<String, PathBuf>,
    /// Values read from `property_files` and the environment's `_FILE`
    /// variables: never serialized, printed or logged.
    #[serde(skip)]
    secrets: BTreeMap<String, Secret>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            bootstrap_servers: "127.0.0.1:9092".into(),
            client_id: "chitose".into(),
            compression: "lz4".into(),
            properties: BTreeMap::new(),
            property_files: BTreeMap::new(),
            secrets: BTreeMap::new(),
        }
    }
}

/// Environment prefix of librdkafka properties: `CHITOSE_KAFKA_SASL_PASSWORD_FILE`
/// reads `sasl.password` from a file, `CHITOSE_KAFKA_SECURITY_PROTOCOL=ssl`
/// sets `security.protocol` (underscores stand for the dots, which
/// environment names cannot carry).
pub const ENV_PREFIX: &str = "CHITOSE_KAFKA_";

/// The `security.protocol` values librdkafka knows.
const PROTOCOLS: &[&str] = &["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];

/// Why Kafka settings were refused at start-up. Messages name the key and
/// the file, never a secret's value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaConfigError {
    /// A `_FILE` property could not be read.
    #[error("kafka property {property}: cannot read the file {path}: {source}")]
    SecretFile {
        /// The librdkafka property.
        property: String,
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A value outside what is accepted.
    #[error("kafka {key}: expected {expected}, found {found}")]
    Value {
        /// The setting or environment variable.
        key: String,
        /// What is accepted.
        expected: String,
        /// What was given (never a secret).
        found: String,
    },
    /// librdkafka refused the configuration (an unknown property, a value
    /// it does not take, a feature this build lacks).
    #[error("kafka client configuration refused by librdkafka: {0}")]
    Librdkafka(String),
}

impl KafkaSettings {
    /// Settings for a broker at `bootstrap`.
    pub fn at(bootstrap: impl Into<String>) -> Self {
        KafkaSettings {
            bootstrap_servers: bootstrap.into(),
            ..Default::default()
        }
    }

    /// The `CHITOSE_KAFKA_<PROPERTY>[_FILE]` variables of `env` as a
    /// `[kafka]` table (`properties`, `property_files`), to be layered
    /// over a config file and under command-line flags.
    pub fn environment_table(
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<toml::Table, Vec<KafkaConfigError>> {
        let mut errors = Vec::new();
        let (mut properties, mut files) = (toml::Table::new(), toml::Table::new());
        for (k, v) in env {
            let Some(rest) = k.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if rest.is_empty() || rest.starts_with('_') || rest.contains("__") {
                errors.push(KafkaConfigError::Value {
                    key: k.clone(),
                    expected: format!(
                        "{ENV_PREFIX}<PROPERTY> with single underscores for dots \
                         (CHITOSE_KAFKA_SASL_PASSWORD_FILE)"
                    ),
                    found: "an empty part".into(),
                });
                continue;
            }
            let (name, file) = match rest.strip_suffix("_FILE") {
                Some(n) => (n, true),
                None => (rest, false),
            };
            let property = name.to_ascii_lowercase().replace('_', ".");
            let into = if file { &mut files } else { &mut properties };
            into.insert(property, toml::Value::String(v));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut t = toml::Table::new();
        if !properties.is_empty() {
            t.insert("properties".into(), toml::Value::Table(properties));
        }
        if !files.is_empty() {
            t.insert("property_files".into(), toml::Value::Table(files));
        }
        Ok(t)
    }

    /// Reads every property file and checks the result with librdkafka
    /// itself, so a misspelt property, a missing certificate or a feature
    /// this build lacks stops the process at start-up with every problem
    /// listed, not at the first connection.
    pub fn prepare(&mut self) -> Result<(), Vec<KafkaConfigError>> {
        let mut errors = Vec::new();
        for (property, path) in &self.property_files {
            match Secret::from_file(path) {
                Ok(s) => {
                    self.secrets.insert(property.clone(), s);
                }
                Err(source) => errors.push(KafkaConfigError::SecretFile {
                    property: property.clone(),
                    path: path.display().to_string(),
                    source,
                }),
            }
        }
        errors.extend(self.check());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Problems librdkafka or a file check finds in these settings.
    pub fn check(&self) -> Vec<KafkaConfigError> {
        let mut errors = Vec::new();
        if self.bootstrap_servers.trim().is_empty() {
            errors.push(KafkaConfigError::Value {
                key: "bootstrap_servers".into(),
                expected: "host:port[,host:port]".into(),
                found: "an empty string".into(),
            });
        }
        let protocol = self.security_protocol();
        if !PROTOCOLS.contains(&protocol.as_str()) {
            errors.push(KafkaConfigError::Value {
                key: "properties.security.protocol".into(),
                expected: PROTOCOLS.join(", "),
                found: format!("{protocol:?}"),
            });
        }
        for key in [
            "ssl.ca.location",
            "ssl.certificate.location",
            "ssl.key.location",
        ] {
            // `probe` asks librdkafka to find the system's CA bundle.
            if let Some(p) = self.properties.get(key)
                && p != "probe"
                && std::fs::metadata(p).is_err()
            {
                errors.push(KafkaConfigError::Value {
                    key: format!("properties.{key}"),
                    expected: "a readable file".into(),
                    found: format!("{p} (not found or not readable)"),
                });
            }
        }
        if errors.is_empty()
            && let Err(e) = self.base().create_native_config()
        {
            errors.push(KafkaConfigError::Librdkafka(redact_message(&e.to_string())));
        }
        errors
    }

    /// `security.protocol` as set (lower case), `plaintext` when unset.
    pub fn security_protocol(&self) -> String {
        self.properties
            .get("security.protocol")
            .map(|p| p.to_ascii_lowercase())
            .unwrap_or_else(|| "plaintext".into())
    }

    /// Whether records travel encrypted to the broker.
    pub fn is_encrypted(&self) -> bool {
        matches!(self.security_protocol().as_str(), "ssl" | "sasl_ssl")
    }

    /// Secret properties written in plain `properties` (and so in a config
    /// file or ConfigMap) instead of `property_files`: worth a warning.
    pub fn inline_secrets(&self) -> Vec<&str> {
        self.properties
            .keys()
            .filter(|k| is_secret_key(k))
            .map(String::as_str)
            .collect()
    }

    /// Turns on librdkafka's statistics (the lag gauges and the client
    /// metrics feed on them) every [`crate::lag::STATS_INTERVAL_MS`],
    /// unless the operator set `statistics.interval.ms` (a benchmark asks
    /// for 1 s).
    pub fn with_statistics<'c>(&self, c: &'c mut ClientConfig) -> &'c mut ClientConfig {
        if !self.properties.contains_key("statistics.interval.ms") {
            c.set("statistics.interval.ms", crate::lag::STATS_INTERVAL_MS);
        }
        c
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        for (k, v) in &self.secrets {
            c.set(k, v.expose());
        }
        c
    }

    /// A producer that never duplicates or reorders on retry: idempotent,
    /// acks=all. Tuning (linger, batch, timeouts) can be overridden in
    /// `properties`; the two safety settings cannot.
    ///
    /// `linger.ms` is 50: at 5 ms ingest sent 2–3 messages per batch to
    /// each of 36 partitions, so the broker handled a Produce request per
    /// few records. A hub's HTTP acknowledgement waits up to 50 ms longer;
    /// the transform's transactions flush at commit whatever the linger.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("compression.type", &self.compression)
            .set("linger.ms", "50")
            .set("batch.num.messages", "10000")
            .set("message.timeout.ms", "30000");
        for (k, v) in &self.base().config_map() {
            c.set(*k, *v);
        }
        c.set("enable.idempotence", "true").set("acks", "all");
        c
    }

    /// A consumer in `group` that reads only committed records and commits
    /// offsets itself (stages commit after their output is durable).
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed");
        c
    }

    /// Creates topics that do not exist yet; existing ones are left alone.
    pub async fn ensure_topics(
        &self,
        topics: &[(&str, i32)],
    ) -> Result<(), rdkafka::error::KafkaError> {
        let specs: Vec<TopicSpec> = topics
            .iter()
            .map(|(name, partitions)| TopicSpec {
                name: (*name).to_owned(),
                partitions: *partitions,
                replication: 1,
                configs: BTreeMap::new(),
            })
            .collect();
        self.create_topics(&specs).await.map(|_| ())
    }

    /// Creates the topics of `specs` that do not exist yet and says, per
    /// topic, what it found. Existing topics are never altered.
    pub async fn create_topics(
        &self,
        specs: &[TopicSpec],
    ) -> Result<Vec<(String, Created)>, rdkafka::error::KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.base().create()?;
        // Only missing topics get a CreateTopics request: production ACLs
        // often deny it, and rdkafka's MockCluster does not implement it.
        // Ask for every topic: a metadata request naming a missing topic
        // can auto-create it with the broker's defaults (nisshi does).
        let md = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))?;
        let existing = |name: &str| {
            md.topics()
                .iter()
                .find(|m| m.name() == name && m.error().is_none() && !m.partitions().is_empty())
                .map(|m| m.partitions().len() as i32)
        };
        let mut out: Vec<(String, Created)> = Vec::with_capacity(specs.len());
        let mut missing = Vec::new();
        for s in specs {
            match existing(&s.name) {
                Some(partitions) => out.push((s.name.clone(), Created::Exists { partitions })),
                None => missing.push(s),
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|s| {
                let mut t = NewTopic::new(
                    &s.name,
                    s.partitions,
                    TopicReplication::Fixed(s.replication),
                );
                for (k, v) in &s.configs {
                    t = t.set(k, v);
                }
                t
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for (r, s) in admin
            .create_topics(&new, &opts)
            .await?
            .into_iter()
            .zip(&missing)
        {
            match r {
                Ok(_) => out.push((s.name.clone(), Created::Created)),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => out.push((
                    s.name.clone(),
                    Created::Exists {
                        partitions: s.partitions,
                    },
                )),
                Err((topic, code)) => {
                    return Err(rdkafka::error::KafkaError::AdminOp(code)).inspect_err(|_| {
                        tracing::error!(topic, ?code, "creating topic failed");
                    });
                }
            }
        }
        Ok(out)
    }
}

/// A client context that remembers the connection errors librdkafka
/// reported (a refused TLS handshake, a failed SASL login), so a tool that
/// gives up can say *why* instead of "all brokers down".
#[derive(Debug, Clone, Default)]
pub struct ErrorMemory(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl ErrorMemory {
    /// `what` failed, with the connection errors behind it, if any: the
    /// specific ones, not the "brokers are down" that follows them.
    pub fn explain(&self, what: impl std::fmt::Display) -> String {
        let seen = self.0.lock().map(|g| g.clone()).unwrap_or_default();
        let specific: Vec<&String> = seen
            .iter()
            .filter(|m| !m.contains("brokers are down"))
            .collect();
        let shown: Vec<&String> = if specific.is_empty() {
            seen.iter().rev().take(1).collect()
        } else {
            specific
        };
        if shown.is_empty() {
            return what.to_string();
        }
        let list: Vec<&str> = shown.iter().map(|s| s.as_str()).collect();
        format!("{what}; connection errors: {}", list.join("; "))
    }

    /// Remembers a connection error seen elsewhere (a polled error event).
    pub fn note(&self, what: &str) {
        self.remember(what);
    }

    fn remember(&self, what: &str) {
        let what = redact_message(what);
        if let Ok(mut g) = self.0.lock()
            && !g.contains(&what)
            && g.len() < 8
        {
            g.push(what);
        }
    }
}

impl rdkafka::ClientContext for ErrorMemory {
    // Connection failures (TLS handshakes, SASL logins) reach the log
    // callback from librdkafka's own threads; the error callback only when
    // the client is polled, which a metadata request does not do.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
                tracing::debug!(fac, "librdkafka: {log_message}");
                self.remember(log_message);
            }
            _ => tracing::trace!(fac, "librdkafka: {log_message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "librdkafka error");
        self.remember(reason);
    }
}

impl rdkafka::consumer::ConsumerContext for ErrorMemory {}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication: i32,
    /// Topic configs (`retention.ms`, `min.insync.replicas`, …).
    pub configs: BTreeMap<String, String>,
}

/// What [`KafkaSettings::create_topics`] did with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// Created now.
    Created,
    /// Was there already, with this many partitions; left as it is.
    Exists {
        /// Partitions it has.
        partitions: i32,
    },
}

/// What this build of librdkafka is and can do: operators ask exactly this
/// before they point a client at a TLS or SASL listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibrdkafkaBuild {
    /// librdkafka's version string.
    pub version: String,
    /// `builtin.features`: `ssl`, `sasl_scram`, `zstd`, …
    pub features: Vec<String>,
}

/// Features chitose's transport and storage settings need from librdkafka.
pub const REQUIRED_FEATURES: &[&str] = &["ssl", "sasl_scram", "sasl_oauthbearer", "zstd", "lz4"];

/// Reads the linked librdkafka's version and built-in features.
pub fn librdkafka_build() -> Result<LibrdkafkaBuild, rdkafka::error::KafkaError> {
    let (_, version) = rdkafka::util::get_rdkafka_version();
    let native = ClientConfig::new().create_native_config()?;
    let features = native
        .get("builtin.features")?
        .split(',')
        .map(str::to_owned)
        .collect();
    Ok(LibrdkafkaBuild { version, features })
}

#[cfg(test)]
mod tests {
    use super::*;

    impl KafkaSettings {
        /// What the binary does with the environment, without a file:
        /// [`KafkaSettings::environment_table`] over these settings, then
        /// [`KafkaSettings::prepare`].
        fn apply_environment(
            &mut self,
            env: impl IntoIterator<Item = (String, String)>,
        ) -> Result<(), Vec<KafkaConfigError>> {
            let t = Self::environment_table(env)?;
            for (k, v) in t {
                for (name, value) in v.as_table().cloned().unwrap_or_default() {
                    let value = value.as_str().unwrap_or_default().to_owned();
                    if k == "properties" {
                        self.properties.insert(name, value);
                    } else {
                        self.property_files.insert(name, PathBuf::from(value));
                    }
                }
            }
            self.prepare()
        }
    }

    #[test]
    fn the_build_has_tls_scram_and_zstd() {
        let b = librdkafka_build().unwrap();
        for f in REQUIRED_FEATURES {
            assert!(
                b.features.iter().any(|x| x == f),
                "{f} missing from {:?}",
                b.features
            );
        }
    }

    #[test]
    fn environment_sets_properties_and_reads_secret_files() {
        let dir = std::env::temp_dir().join(format!("chitose-kafka-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("password");
        std::fs::write(&pw, "hunter2-from-file\n").unwrap();
        let mut k = KafkaSettings::default();
        k.apply_environment([
            (
                "CHITOSE_KAFKA_SECURITY_PROTOCOL".to_owned(),
                "SASL_SSL".to_owned(),
            ),
            (
                "CHITOSE_KAFKA_SASL_MECHANISM".to_owned(),
                "SCRAM-SHA-512".to_owned(),
            ),
            (
                "CHITOSE_KAFKA_SASL_USERNAME".to_owned(),
                "chitose-transform".to_owned(),
            ),
            (
                "CHITOSE_KAFKA_SASL_PASSWORD_FILE".to_owned(),
                pw.display().to_string(),
            ),
            (
                "CHITOSE_TRANSFORM__KAFKA__X".to_owned(),
                "ignored".to_owned(),
            ),
        ])
        .unwrap();
        assert_eq!(k.properties["security.protocol"], "SASL_SSL");
        assert!(k.is_encrypted());
        let c = k.consumer_config("g");
        assert_eq!(c.get("sasl.password"), Some("hunter2-from-file"));
        // The secret is in the client, not in anything printed.
        let printed = format!("{k:?} {}", toml::to_string(&k).unwrap());
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut k = KafkaSettings::default();
        k.properties
            .insert("ssl.ca.location".into(), "/nonexistent/ca.pem".into());
        k.properties
            .insert("security.protocol".into(), "tls".into());
        let errs = k
            .apply_environment([
                (
                    "CHITOSE_KAFKA_SASL_PASSWORD_FILE".to_owned(),
                    "/nonexistent/pw".to_owned(),
                ),
                ("CHITOSE_KAFKA__BAD".to_owned(), "x".to_owned()),
            ])
            .unwrap_err();
        let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let text = all.join("\n");
        assert_eq!(errs.len(), 1, "{text}");
        assert!(text.contains("CHITOSE_KAFKA__BAD"), "{text}");
        let errs = k
            .apply_environment([(
                "CHITOSE_KAFKA_SASL_PASSWORD_FILE".to_owned(),
                "/nonexistent/pw".to_owned(),
            )])
            .unwrap_err();
        let text = errs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(errs.len(), 3, "{text}");
        assert!(
            text.contains("sasl.password") && text.contains("/nonexistent/pw"),
            "{text}"
        );
        assert!(text.contains("security.protocol"), "{text}");
        assert!(text.contains("ssl.ca.location"), "{text}");
    }

    #[test]
    fn librdkafka_names_an_unknown_property() {
        let mut k = KafkaSettings::default();
        k.properties.insert("sasl.passwrod".into(), "x".into());
        let errs = k.check();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().contains("sasl.passwrod"), "{}", errs[0]);
    }
}
