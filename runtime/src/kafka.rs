//! Kafka client setup shared by every service.
//!
//! One place decides the settings the exactly-once design depends on
//! (idempotence, acks=all, read_committed), so a stage cannot quietly run
//! with weaker ones.

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use std::collections::BTreeMap;
use std::time::Duration;

/// Connection settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `host:port[,host:port]`.
    pub bootstrap_servers: String,
    /// Shown in broker logs and metrics.
    pub client_id: String,
    /// Producer compression codec.
    pub compression: String,
    /// Extra librdkafka properties (security, SASL, …), passed as they are.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            bootstrap_servers: "127.0.0.1:9092".into(),
            client_id: "chitose".into(),
            compression: "lz4".into(),
            properties: BTreeMap::new(),
        }
    }
}

/// Property names whose values are secrets: never printed.
pub const SECRET_PROPERTIES: &[&str] = &[
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "sasl.oauthbearer.client.secret",
];

impl KafkaSettings {
    /// Settings for a broker at `bootstrap`.
    pub fn at(bootstrap: impl Into<String>) -> Self {
        KafkaSettings {
            bootstrap_servers: bootstrap.into(),
            ..Default::default()
        }
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// A producer that never duplicates or reorders on retry: idempotent,
    /// acks=all. Tuning (linger, batch, timeouts) can be overridden in
    /// `properties`; the two safety settings cannot.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("compression.type", &self.compression)
            .set("linger.ms", "5")
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
