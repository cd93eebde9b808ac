//! chitose's topic layout, in one place: a raw topic per hub
//! (`<prefix>.raw.NN`), a pseudonymized topic per lake table
//! (`<prefix>.pseudo.<table>`), one dead-letter topic (`<prefix>.dlq`),
//! and the partitions and configs `chitose topics create` gives them.

use crate::kafka::TopicSpec;
use chitose_schemas::raw::EventType;
use std::collections::BTreeMap;

/// The prefix the services' defaults use.
pub const PREFIX: &str = "health";
/// The hubs' raw topics' prefix under [`PREFIX`].
pub const RAW_PREFIX: &str = "health.raw.";
/// A hub's raw topic under [`PREFIX`], `{prefecture}` filled per hub.
pub const RAW_TEMPLATE: &str = "health.raw.{prefecture}";
/// The pseudonymized topics' prefix under [`PREFIX`].
pub const PSEUDO_PREFIX: &str = "health.pseudo.";
/// The dead-letter topic under [`PREFIX`].
pub const DLQ: &str = "health.dlq";
/// What the transform subscribes to under [`PREFIX`]: every hub's raw topic.
pub const RAW_PATTERN: &str = r"^health\.raw\..+";
/// What the sink subscribes to under [`PREFIX`]: every table's topic.
pub const PSEUDO_PATTERN: &str = r"^health\.pseudo\..+";

const DAY_MS: u64 = 24 * 3600 * 1000;

/// A hub's raw topic.
pub fn raw(prefix: &str, prefecture: &str) -> String {
    format!("{prefix}.raw.{prefecture}")
}

/// A lake table's pseudonymized topic.
pub fn pseudo(prefix: &str, table: &str) -> String {
    format!("{prefix}.pseudo.{table}")
}

/// The dead-letter topic.
pub fn dlq(prefix: &str) -> String {
    format!("{prefix}.dlq")
}

/// Whether `topic` is a hub's raw topic, `<raw_prefix>NN`: the only place a
/// DLQ replay may write, since only the transform checks what it reads.
pub fn is_raw_topic(topic: &str, raw_prefix: &str) -> bool {
    topic
        .strip_prefix(raw_prefix)
        .is_some_and(|nn| nn.len() == 2 && nn.bytes().all(|b| b.is_ascii_digit()))
}

/// Partitions of each kind of topic.
#[derive(Debug, Clone, Copy)]
pub struct Partitions {
    /// Each raw topic (the transform's parallelism).
    pub raw: i32,
    /// Each pseudonymized topic (the sink's parallelism).
    pub pseudo: i32,
    /// The dead-letter topic.
    pub dlq: i32,
}

/// Days each kind of topic keeps records.
#[derive(Debug, Clone, Copy)]
pub struct RetentionDays {
    /// Raw topics (the replay window after a transform bug).
    pub raw: u64,
    /// Pseudonymized topics (the sink's catch-up window).
    pub pseudo: u64,
    /// The DLQ (holds raw bytes: never longer than the raw topics).
    pub dlq: u64,
}

/// Every topic for these hubs, with partitions, replication, retention and
/// `extra` configs on each.
pub fn layout(
    prefix: &str,
    prefectures: &[String],
    partitions: Partitions,
    replication: i32,
    days: RetentionDays,
    extra: &BTreeMap<String, String>,
) -> Vec<TopicSpec> {
    let spec = |name: String, partitions: i32, days: u64| {
        let mut configs = BTreeMap::from([
            ("cleanup.policy".to_owned(), "delete".to_owned()),
            ("retention.ms".to_owned(), (days * DAY_MS).to_string()),
            // acks=all means "all in-sync replicas": with three replicas,
            // two must hold a record before the producer hears yes.
            (
                "min.insync.replicas".to_owned(),
                replication.clamp(1, 2).to_string(),
            ),
        ]);
        configs.extend(extra.clone());
        TopicSpec {
            name,
            partitions,
            replication,
            configs,
        }
    };
    let mut out: Vec<TopicSpec> = prefectures
        .iter()
        .map(|p| spec(raw(prefix, p), partitions.raw, days.raw))
        .collect();
    out.extend(
        EventType::ALL
            .iter()
            .map(|t| spec(pseudo(prefix, t.symbol()), partitions.pseudo, days.pseudo)),
    );
    out.push(spec(dlq(prefix), partitions.dlq, days.dlq));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_one_topic_per_hub_table_and_the_dlq() {
        let specs = layout(
            PREFIX,
            &["27".into(), "28".into()],
            Partitions {
                raw: 6,
                pseudo: 4,
                dlq: 3,
            },
            3,
            RetentionDays {
                raw: 7,
                pseudo: 3,
                dlq: 30,
            },
            &BTreeMap::from([("compression.type".into(), "lz4".into())]),
        );
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.len(), 2 + EventType::ALL.len() + 1);
        assert!(names.contains(&"health.raw.27") && names.contains(&DLQ));
        let raw = &specs[0];
        assert_eq!((raw.partitions, raw.replication), (6, 3));
        assert_eq!(raw.configs["retention.ms"], (7 * DAY_MS).to_string());
        assert_eq!(raw.configs["min.insync.replicas"], "2");
        assert_eq!(raw.configs["compression.type"], "lz4");
        assert_eq!(specs[2].partitions, 4);
        let dlq = specs.last().unwrap();
        assert_eq!(dlq.configs["retention.ms"], (30 * DAY_MS).to_string());
    }

    #[test]
    fn the_constants_are_the_layout_under_the_default_prefix() {
        assert_eq!(
            raw(PREFIX, "27"),
            RAW_TEMPLATE.replace("{prefecture}", "27")
        );
        assert!(raw(PREFIX, "27").starts_with(RAW_PREFIX));
        assert!(pseudo(PREFIX, "diagnosis").starts_with(PSEUDO_PREFIX));
        assert_eq!(dlq(PREFIX), DLQ);
        let raw_re = regex::Regex::new(RAW_PATTERN).unwrap();
        let pseudo_re = regex::Regex::new(PSEUDO_PATTERN).unwrap();
        assert!(raw_re.is_match(&raw(PREFIX, "27")) && !raw_re.is_match(DLQ));
        assert!(pseudo_re.is_match(&pseudo(PREFIX, "diagnosis")) && !pseudo_re.is_match(DLQ));
    }

    #[test]
    fn only_a_hubs_raw_topic_is_a_replay_target() {
        assert!(is_raw_topic("health.raw.27", RAW_PREFIX));
        for t in [
            "health.pseudo.diagnosis",
            "health.raw.27x",
            "health.raw.",
            "health.dlq",
            "health.raw.2",
        ] {
            assert!(!is_raw_topic(t, RAW_PREFIX), "{t}");
        }
    }
}
