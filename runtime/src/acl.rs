//! Least privilege on the broker: the Kafka ACLs of each chitose role,
//! derived from the same topic layout the services use, so a principal
//! gets exactly what its role needs — a hub's ingest writes only its own
//! raw topic, the transform alone reads raw and writes pseudonymized
//! topics and the DLQ, the sink only reads pseudonymized topics, and only
//! named operators read the DLQ (which holds raw bytes).
//!
//! Pure: [`role_acls`] lists the bindings, [`kafka_acls_script`] renders
//! them as `kafka-acls.sh` commands (Apache Kafka, MSK, Confluent
//! Platform), which `deploy/` runs once against the cluster.

use std::fmt;

/// A Kafka resource type an ACL applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// A transactional id.
    TransactionalId,
}

/// Whether the name is one resource or a prefix of many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pattern {
    /// Exactly this name.
    Literal,
    /// Every name that starts with it.
    Prefixed,
}

/// A Kafka operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    /// Consume, join a group, commit its offsets.
    Read,
    /// Produce; on a transactional id, use it.
    Write,
    /// Metadata, offsets.
    Describe,
    /// Create topics.
    Create,
}

/// One "allow" binding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Acl {
    /// `User:<name>`.
    pub principal: String,
    /// What kind of resource.
    pub resource: Resource,
    /// Literal or prefixed.
    pub pattern: Pattern,
    /// Its name (or prefix).
    pub name: String,
    /// What may be done.
    pub operation: Operation,
}

/// The names the roles' ACLs are about: topic prefix, hubs, groups.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Topic prefix: `<prefix>.raw.NN`, `<prefix>.pseudo.*`, `<prefix>.dlq`.
    pub prefix: String,
    /// Hub prefectures, one ingest principal each.
    pub prefectures: Vec<String>,
    /// Principal names are `<principal_prefix><role>`.
    pub principal_prefix: String,
    /// The transform's consumer group (also its transactional id prefix).
    pub transform_group: String,
    /// The sink's consumer group.
    pub sink_group: String,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            prefix: "health".into(),
            prefectures: ["25", "26", "27", "28", "29", "30", "31", "36"]
                .map(String::from)
                .to_vec(),
            principal_prefix: "chitose-".into(),
            transform_group: "chitose-transform".into(),
            sink_group: "chitose-sink".into(),
        }
    }
}

/// The roles that hold Kafka credentials.
pub const ROLES: &[&str] = &[
    "ingest-NN",
    "transform",
    "sink",
    "dlq-operator",
    "topics-admin",
];

impl Layout {
    /// The principal of `role` (`ingest-27`, `transform`, …).
    pub fn principal(&self, role: &str) -> String {
        format!("User:{}{role}", self.principal_prefix)
    }
}

/// Every ACL binding of every role, sorted.
pub fn role_acls(l: &Layout) -> Vec<Acl> {
    use Operation::*;
    use Pattern::*;
    use Resource::*;
    let mut out = Vec::new();
    let mut add = |role: &str, resource, pattern, name: String, ops: &[Operation]| {
        for op in ops {
            out.push(Acl {
                principal: l.principal(role),
                resource,
                pattern,
                name: name.clone(),
                operation: *op,
            });
        }
    };
    let (raw, pseudo, dlq) = (
        format!("{}.raw.", l.prefix),
        format!("{}.pseudo.", l.prefix),
        format!("{}.dlq", l.prefix),
    );
    for p in &l.prefectures {
        // A hub writes its own raw topic and nothing else (idempotent
        // producer: Write on the topic is enough since Kafka 3.0).
        add(
            &format!("ingest-{p}"),
            Topic,
            Literal,
            format!("{raw}{p}"),
            &[Write, Describe],
        );
    }
    add("transform", Topic, Prefixed, raw.clone(), &[Read, Describe]);
    add(
        "transform",
        Group,
        Literal,
        l.transform_group.clone(),
        &[Read],
    );
    add(
        "transform",
        Topic,
        Prefixed,
        pseudo.clone(),
        &[Write, Describe],
    );
    add("transform", Topic, Literal, dlq.clone(), &[Write, Describe]);
    // transactional.id = <group>-<instance>.
    add(
        "transform",
        TransactionalId,
        Prefixed,
        format!("{}-", l.transform_group),
        &[Write, Describe],
    );
    add("sink", Topic, Prefixed, pseudo.clone(), &[Read, Describe]);
    add("sink", Group, Literal, l.sink_group.clone(), &[Read]);
    // Named operators: read the DLQ (raw bytes), replay to raw topics only.
    add("dlq-operator", Topic, Literal, dlq, &[Read, Describe]);
    add(
        "dlq-operator",
        Group,
        Literal,
        "chitose-dlq-list".into(),
        &[Read],
    );
    add(
        "dlq-operator",
        Group,
        Literal,
        "chitose-dlq-replay".into(),
        &[Read],
    );
    add("dlq-operator", Topic, Prefixed, raw, &[Write, Describe]);
    // `chitose topics create` (a one-off Job): create and describe topics.
    add(
        "topics-admin",
        Topic,
        Prefixed,
        format!("{}.", l.prefix),
        &[Create, Describe],
    );
    out.sort();
    out
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Read => "Read",
            Operation::Write => "Write",
            Operation::Describe => "Describe",
            Operation::Create => "Create",
        })
    }
}

/// The ACLs as `kafka-acls.sh` commands, one binding per line, for a
/// client configuration `$ADMIN_CONFIG` with the right to alter ACLs and a
/// bootstrap `$BOOTSTRAP`. Re-running it is harmless (adding an existing
/// binding changes nothing).
pub fn kafka_acls_script(l: &Layout) -> String {
    let mut s = String::from(
        "#!/bin/sh\n# Generated by `chitose topics acls`: the Kafka ACLs of each chitose role.\n\
         # Run with BOOTSTRAP and ADMIN_CONFIG (a client config allowed to alter ACLs).\n\
         set -eu\nacl() { \"${KAFKA_ACLS:-kafka-acls.sh}\" --bootstrap-server \"$BOOTSTRAP\" \
         --command-config \"$ADMIN_CONFIG\" --add \"$@\"; }\n",
    );
    for a in role_acls(l) {
        let (flag, name) = match a.resource {
            Resource::Topic => ("--topic", a.name.as_str()),
            Resource::Group => ("--group", a.name.as_str()),
            Resource::TransactionalId => ("--transactional-id", a.name.as_str()),
        };
        let pattern = match a.pattern {
            Pattern::Literal => "literal",
            Pattern::Prefixed => "prefixed",
        };
        s.push_str(&format!(
            "acl --allow-principal '{}' --operation {} {flag} '{name}' --resource-pattern-type {pattern}\n",
            a.principal, a.operation
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn may(acls: &[Acl], principal: &str, op: Operation, resource: Resource, name: &str) -> bool {
        acls.iter().any(|a| {
            a.principal == principal
                && a.operation == op
                && a.resource == resource
                && match a.pattern {
                    Pattern::Literal => a.name == name,
                    Pattern::Prefixed => name.starts_with(&a.name),
                }
        })
    }

    #[test]
    fn each_role_can_do_its_job_and_nothing_else() {
        use Operation::*;
        use Resource::*;
        let l = Layout::default();
        let acls = role_acls(&l);
        let osaka = "User:chitose-ingest-27";
        assert!(may(&acls, osaka, Write, Topic, "health.raw.27"));
        assert!(!may(&acls, osaka, Write, Topic, "health.raw.26"));
        assert!(!may(&acls, osaka, Read, Topic, "health.raw.27"));
        assert!(!may(&acls, osaka, Write, Topic, "health.pseudo.diagnosis"));
        let t = "User:chitose-transform";
        assert!(may(&acls, t, Read, Topic, "health.raw.26"));
        assert!(may(&acls, t, Write, Topic, "health.pseudo.lab_result"));
        assert!(may(&acls, t, Write, Topic, "health.dlq"));
        assert!(!may(&acls, t, Read, Topic, "health.dlq"));
        assert!(may(&acls, t, Write, TransactionalId, "chitose-transform-0"));
        let s = "User:chitose-sink";
        assert!(may(&acls, s, Read, Topic, "health.pseudo.vaccination"));
        assert!(!may(&acls, s, Read, Topic, "health.raw.27"));
        assert!(!may(&acls, s, Read, Topic, "health.dlq"));
        assert!(!may(&acls, s, Write, Topic, "health.pseudo.vaccination"));
        // Only the operator reads the DLQ, and replays only to raw topics.
        let readers: Vec<&str> = acls
            .iter()
            .filter(|a| {
                a.operation == Read && a.resource == Topic && "health.dlq".starts_with(&a.name)
            })
            .map(|a| a.principal.as_str())
            .collect();
        assert_eq!(readers, ["User:chitose-dlq-operator"]);
        let op = "User:chitose-dlq-operator";
        assert!(may(&acls, op, Write, Topic, "health.raw.27"));
        assert!(!may(&acls, op, Write, Topic, "health.pseudo.diagnosis"));
        // Nobody but the transform writes pseudonymized topics.
        let writers: Vec<&str> = acls
            .iter()
            .filter(|a| {
                a.operation == Write
                    && a.resource == Topic
                    && "health.pseudo.x".starts_with(&a.name)
            })
            .map(|a| a.principal.as_str())
            .collect();
        assert_eq!(writers, ["User:chitose-transform"]);
    }

    #[test]
    fn the_script_has_one_line_per_binding() {
        let l = Layout::default();
        let s = kafka_acls_script(&l);
        assert_eq!(
            s.lines().filter(|x| x.starts_with("acl ")).count(),
            role_acls(&l).len()
        );
        assert!(s.contains("--allow-principal 'User:chitose-ingest-27' --operation Write --topic 'health.raw.27' --resource-pattern-type literal"));
    }
}
