//! deploy/ checked with the tools that can run here (no Docker engine, no
//! cluster): promtool on the alert rules and their unit tests, kustomize +
//! Kubernetes schemas on the manifests, the compose spec on the compose
//! file, chitose's own config loader on the shipped configs, and the
//! dashboard's and alerts' metric names against what the services export
//! (tests/it/ops.rs scrapes them live; here, each stage's `metrics::names`).

use crate::helpers;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let promtool = helpers::promtool();
    let dir = helpers::repo().join("deploy/prometheus");
    let (ok, out) = run(Command::new(&promtool)
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir));
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 11 rules found"), "{out}");
    let (ok, out) = run(Command::new(&promtool)
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&dir));
    assert!(ok, "{out}");
    // The unit tests can fail: an alert that fires with another summary does.
    let scratch = helpers::scratch("alerts");
    std::fs::copy(dir.join("alerts.yml"), scratch.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts.test.yml")).unwrap();
    std::fs::write(
        scratch.join("alerts.test.yml"),
        tests.replace("lag is 40k records", "lag is 41k records"),
    )
    .unwrap();
    let (ok, out) = run(Command::new(&promtool)
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&scratch));
    assert!(!ok && out.contains("ChitoseTransformLagGrowing"), "{out}");
}

/// Copies deploy/k8s, fills the overlay's secret files with throwaway
/// values, and renders it with `kubectl kustomize`.
fn render_k8s(edit: impl Fn(&Path)) -> (bool, String, std::path::PathBuf) {
    let dir = helpers::scratch("k8s");
    let status = Command::new("cp")
        .args(["-r"])
        .arg(helpers::repo().join("deploy/k8s"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let k8s = dir.join("k8s");
    let ex = k8s.join("overlays/example");
    for (key, byte) in [
        ("pseudonym-2026a", "ab"),
        ("date-2026a", "cd"),
        ("event-2026a", "ef"),
    ] {
        std::fs::write(ex.join(format!("keys/{key}.key")), byte.repeat(32)).unwrap();
    }
    std::fs::copy(ex.join("lake.env.example"), ex.join("lake.env")).unwrap();
    // Throwaway stand-ins for the files an operator makes (the overlay's
    // comment lists them).
    let put = |rel: &str, text: &str| {
        let p = ex.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    put("hub-token/token.sha256", &"ab".repeat(32));
    put("tls/ingest/tls.crt", "cert");
    put("tls/ingest/tls.key", "key");
    for role in ["ingest-27", "transform", "sink", "topics-admin"] {
        for f in ["ca.crt", "tls.crt", "tls.key"] {
            put(&format!("tls/kafka-{role}/{f}"), f);
        }
    }
    for f in ["admin.properties", "ca.crt", "admin.pem"] {
        put(&format!("tls/kafka-admin/{f}"), f);
    }
    edit(&k8s);
    let out = Command::new(helpers::venv_tool("kubectl"))
        .args(["kustomize"])
        .arg(&ex)
        .output()
        .unwrap();
    let rendered = dir.join("rendered.yaml");
    std::fs::write(&rendered, &out.stdout).unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        rendered,
    )
}

/// Runs a Python script (with PyYAML) on `file`; it prints one JSON object.
fn python_facts(script: &str, file: &Path) -> serde_json::Value {
    let out = Command::new(helpers::python())
        .args(["-c", script])
        .arg(file)
        .output()
        .unwrap();
    helpers::assert_ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn validate(rendered: &Path) -> (bool, String) {
    run(Command::new(helpers::venv_tool("kubernetes-validate"))
        .args(["--strict", "--no-warn"])
        .arg(rendered))
}

#[test]
fn kubernetes_manifests_render_and_validate() {
    let (ok, err, rendered) = render_k8s(|_| {});
    assert!(ok, "{err}");
    let (ok, out) = validate(&rendered);
    assert!(ok, "{out}");

    // What the issue asks for is there, as the cluster would receive it.
    let py = r#"
import sys, yaml, json
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {}
for d in docs: kinds.setdefault(d["kind"], []).append(d["metadata"]["name"])
workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]
workloads += [dict(d, spec=d["spec"]["jobTemplate"]["spec"]) for d in docs if d["kind"] == "CronJob"]
nonroot = all(w["spec"]["template"]["spec"]["securityContext"].get("runAsNonRoot") for w in workloads)
readonly = all(c["securityContext"].get("readOnlyRootFilesystem") for w in workloads for c in w["spec"]["template"]["spec"]["containers"])
external = sorted(m["external"]["metric"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler" for m in d["spec"]["metrics"] if m["type"] == "External")
mounts = {v.get("secret", {}).get("secretName", "") for d in docs if d["kind"] == "StatefulSet" for v in d["spec"]["template"]["spec"]["volumes"]}
refs = set()
for w in workloads:
    ps = w["spec"]["template"]["spec"]
    refs |= {v["secret"]["secretName"] for v in ps.get("volumes", []) if "secret" in v}
    for c in ps["containers"]:
        refs |= {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
        refs |= {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
dangling = sorted(refs - set(kinds.get("Secret", [])))
print(json.dumps({"kinds": kinds, "nonroot": nonroot, "readonly": readonly, "external": external, "secret_mounts": sorted(mounts), "secret_refs": len(refs), "dangling": dangling}))
"#;
    let facts = python_facts(py, &rendered);
    let count = |k: &str| facts["kinds"][k].as_array().map_or(0, |a| a.len());
    assert_eq!(count("Deployment"), 2, "{facts}");
    assert_eq!(count("StatefulSet"), 1, "{facts}");
    assert_eq!(count("Job"), 2, "{facts}");
    assert_eq!(count("CronJob"), 2, "{facts}");
    assert_eq!(count("PodDisruptionBudget"), 3, "{facts}");
    assert_eq!(count("HorizontalPodAutoscaler"), 3, "{facts}");
    assert_eq!(count("NetworkPolicy"), 6, "{facts}");
    assert_eq!(count("Secret"), 9, "{facts}");
    // Every Secret a workload names exists under its generated name.
    assert_eq!(facts["secret_refs"], 9, "{facts}");
    assert_eq!(facts["dangling"], serde_json::json!([]), "{facts}");
    assert_eq!(facts["nonroot"], true);
    assert_eq!(facts["readonly"], true);
    assert_eq!(
        facts["external"],
        serde_json::json!([
            "chitose_sink_consumer_lag_records",
            "chitose_transform_consumer_lag_records"
        ])
    );
    // The transform mounts the generated keys Secret (name with its hash).
    assert!(
        facts["secret_mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().starts_with("chitose-keys-")),
        "{facts}"
    );

    // The validator is not a rubber stamp: a misspelt field fails it.
    let (ok, err, rendered) = render_k8s(|k8s| {
        let p = k8s.join("base/sink.yaml");
        let t = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, t.replace("containerPort", "containerPrt")).unwrap();
    });
    assert!(ok, "{err}");
    let (ok, out) = validate(&rendered);
    assert!(!ok, "a misspelt field passed: {out}");
}

#[test]
fn compose_file_matches_the_compose_spec_and_its_references_exist() {
    let compose = helpers::repo().join("deploy/compose/docker-compose.yml");
    let (ok, out) = run(Command::new(helpers::venv_tool("check-jsonschema"))
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(&compose));
    assert!(ok, "{out}");
    // Bind mounts, dependencies and chitose commands that resolve.
    let py = r#"
import sys, yaml, json, os
c = yaml.safe_load(open(sys.argv[1]))
base = os.path.dirname(sys.argv[1])
services = c["services"]
missing_mounts = [v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if v.startswith(".") and not os.path.exists(os.path.join(base, v.split(":")[0]))]
bad_deps = [d for s in services.values() for d in (s.get("depends_on") or {}) if d not in services]
chitose = [s["command"] for s in services.values() if s.get("image") == "chitose:dev" and "entrypoint" not in s and isinstance(s.get("command"), list)]
print(json.dumps({"services": sorted(services), "missing_mounts": missing_mounts, "bad_deps": bad_deps, "chitose": chitose}))
"#;
    let facts = python_facts(py, &compose);
    assert_eq!(facts["missing_mounts"], serde_json::json!([]), "{facts}");
    assert_eq!(facts["bad_deps"], serde_json::json!([]), "{facts}");
    for s in [
        "kafka",
        "minio",
        "prometheus",
        "grafana",
        "ingest",
        "transform",
        "sink",
    ] {
        assert!(
            facts["services"].as_array().unwrap().iter().any(|x| x == s),
            "{s} missing: {facts}"
        );
    }
    // Every chitose command in the stack parses (with the config paths
    // pointed at the repository's copies).
    let commands = facts["chitose"].as_array().unwrap();
    assert!(commands.len() >= 4, "{facts}");
    let config = helpers::repo().join("deploy/k8s/base/config");
    for c in commands {
        let mut args: Vec<String> = c
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                a.as_str()
                    .unwrap()
                    .replace("/etc/chitose", config.to_str().unwrap())
            })
            .collect();
        if args[0] == "topics" {
            args.push("--dry-run".into());
        } else {
            args.push("--print-config".into());
        }
        let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_chitose")).args(&args));
        assert!(ok, "{args:?}: {out}");
    }
}

#[test]
fn shipped_configs_load_without_unknown_keys() {
    let config = helpers::repo().join("deploy/k8s/base/config");
    for stage in ["ingest", "transform", "sink"] {
        let file = config.join(format!("{stage}.toml"));
        let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_chitose"))
            .args([stage, "--print-config", "--config"])
            .arg(&file));
        assert!(ok, "{stage}: {out}");
        assert!(out.contains("kafka:9093"), "{stage}: {out}");
        assert!(
            out.contains("\"security.protocol\" = \"ssl\""),
            "{stage}: {out}"
        );
    }
    // A typo in one is refused with its name.
    let bad = helpers::scratch("bad-config").join("sink.toml");
    let text = std::fs::read_to_string(config.join("sink.toml")).unwrap();
    std::fs::write(&bad, text.replace("roll_age", "rol_age")).unwrap();
    let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args(["sink", "--print-config", "--config"])
        .arg(&bad));
    assert!(!ok && out.contains("rol_age"), "{out}");
}

/// Metric names an expression uses (histogram series folded to their family).
pub fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("chitose_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        let prev_ok = start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let name = &text[start..end];
        if prev_ok && !name.ends_with('_') {
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(family.to_owned());
        }
        i = end.max(start + 1);
    }
    out
}

#[test]
fn dashboard_is_sane_and_uses_only_exported_metrics() {
    let text =
        std::fs::read_to_string(helpers::repo().join("deploy/grafana/chitose-dashboard.json"))
            .unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(d["uid"], "chitose-pipeline");
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut exprs = String::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{p}"
        );
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            exprs.push_str(t["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let used = metric_names(&exprs);
    let alerts =
        std::fs::read_to_string(helpers::repo().join("deploy/prometheus/alerts.yml")).unwrap();
    let alert_metrics = metric_names(
        &alerts
            .lines()
            .filter(|l| {
                !l.trim_start().starts_with('#')
                    && !l.contains("summary")
                    && !l.contains("description")
            })
            .collect::<Vec<_>>()
            .join("\n"),
    );
    // Every name is one a service registers (each stage spells its names
    // once, in `metrics::names`).
    let exported: BTreeSet<String> = chitose_ingest::metrics::names::ALL
        .iter()
        .chain(chitose_transform::metrics::names::ALL)
        .chain(chitose_sink::metrics::names::ALL)
        .map(|n| n.to_string())
        .collect();
    let unknown: Vec<_> = used
        .union(&alert_metrics)
        .filter(|m| !exported.contains(*m))
        .collect();
    assert!(
        unknown.is_empty(),
        "not exported by any service: {unknown:?}"
    );
    // The dashboard covers every stage.
    for stage in ["ingest", "transform", "sink"] {
        assert!(
            used.iter()
                .any(|m| m.starts_with(&format!("chitose_{stage}_"))),
            "{stage}"
        );
    }
}

/// Parses `kafka-acls.sh` lines into principal → {"Op Resource pattern name"}.
fn acl_table(script: &str) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let mut out: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for line in script.lines().filter(|l| l.starts_with("acl ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let arg = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .map(|i| words[i + 1].trim_matches('\'').to_owned())
        };
        let principal = arg("--allow-principal").unwrap();
        let op = arg("--operation").unwrap();
        let (kind, name) = [
            ("--topic", "Topic"),
            ("--group", "Group"),
            ("--transactional-id", "TransactionalId"),
        ]
        .iter()
        .find_map(|(f, k)| arg(f).map(|n| (*k, n)))
        .unwrap();
        let pattern = arg("--resource-pattern-type").unwrap();
        out.entry(principal)
            .or_default()
            .insert(format!("{op} {kind} {pattern} {name}"));
    }
    out
}

#[test]
fn every_workload_has_its_own_kafka_principal_with_exactly_its_acls() {
    // The shipped script is what the tool generates today.
    let script_path = helpers::repo().join("deploy/k8s/base/acls/kafka-acls.sh");
    let shipped = std::fs::read_to_string(&script_path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args(["topics", "acls"])
        .output()
        .unwrap();
    helpers::assert_ok(&out);
    assert!(
        out.stdout == shipped.as_bytes(),
        "deploy/k8s/base/acls/kafka-acls.sh is stale: chitose topics acls > it"
    );
    // What each role needs, written out by hand from the data flow (not
    // from the code that generates the script).
    let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let mut want: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for p in ["25", "26", "27", "28", "29", "30", "31", "36"] {
        want.insert(
            format!("User:chitose-ingest-{p}"),
            set(&[
                &format!("Write Topic literal health.raw.{p}"),
                &format!("Describe Topic literal health.raw.{p}"),
            ]),
        );
    }
    want.insert(
        "User:chitose-transform".into(),
        set(&[
            "Read Topic prefixed health.raw.",
            "Describe Topic prefixed health.raw.",
            "Read Group literal chitose-transform",
            "Write Topic prefixed health.pseudo.",
            "Describe Topic prefixed health.pseudo.",
            "Write Topic literal health.dlq",
            "Describe Topic literal health.dlq",
            "Write TransactionalId prefixed chitose-transform-",
            "Describe TransactionalId prefixed chitose-transform-",
        ]),
    );
    want.insert(
        "User:chitose-sink".into(),
        set(&[
            "Read Topic prefixed health.pseudo.",
            "Describe Topic prefixed health.pseudo.",
            "Read Group literal chitose-sink",
        ]),
    );
    want.insert(
        "User:chitose-dlq-operator".into(),
        set(&[
            "Read Topic literal health.dlq",
            "Describe Topic literal health.dlq",
            "Read Group literal chitose-dlq-list",
            "Read Group literal chitose-dlq-replay",
            "Write Topic prefixed health.raw.",
            "Describe Topic prefixed health.raw.",
        ]),
    );
    want.insert(
        "User:chitose-topics-admin".into(),
        set(&[
            "Create Topic prefixed health.",
            "Describe Topic prefixed health.",
        ]),
    );
    assert_eq!(acl_table(&shipped), want);

    // Kubernetes: each workload mounts one Kafka identity, its role's.
    let (ok, err, rendered) = render_k8s(|_| {});
    assert!(ok, "{err}");
    let py = r#"
import sys, yaml, json, re
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
out = {}
for d in docs:
    if d["kind"] not in ("Deployment", "StatefulSet", "Job"): continue
    vols = d["spec"]["template"]["spec"].get("volumes", [])
    kafka = sorted(re.sub(r"-[a-z0-9]{10}$", "", v["secret"]["secretName"]) for v in vols if "secret" in v and v["secret"]["secretName"].startswith("chitose-kafka-"))
    modes = sorted({v["secret"].get("defaultMode") for v in vols if "secret" in v})
    out[d["metadata"]["name"]] = {"kafka": kafka, "modes": modes}
pols = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
print(json.dumps({"workloads": out, "policies": pols}))
"#;
    let facts = python_facts(py, &rendered);
    let w = &facts["workloads"];
    for (workload, secret) in [
        ("chitose-ingest-27", "chitose-kafka-ingest-27"),
        ("chitose-transform", "chitose-kafka-transform"),
        ("chitose-sink", "chitose-kafka-sink"),
        ("chitose-topics", "chitose-kafka-topics-admin"),
        ("chitose-kafka-acls", "chitose-kafka-admin"),
    ] {
        assert_eq!(
            w[workload]["kafka"],
            serde_json::json!([secret]),
            "{workload}: {facts}"
        );
        // Secrets are mounted owner-read-only (0400 = 256).
        assert_eq!(
            w[workload]["modes"],
            serde_json::json!([256]),
            "{workload}: {facts}"
        );
        let principal = format!("User:{}", secret.trim_start_matches("chitose-kafka-"));
        let principal = principal.replace("User:", "User:chitose-");
        assert!(
            workload == "chitose-kafka-acls" || want.contains_key(&principal),
            "{workload} runs as {principal}, which has no ACLs"
        );
    }
    // Default deny, then only what the data flow needs.
    let p = &facts["policies"];
    assert_eq!(
        p["chitose-default-deny"]["podSelector"],
        serde_json::json!({})
    );
    assert_eq!(
        p["chitose-default-deny"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    assert_eq!(
        p["chitose-hubs-to-ingest"]["ingress"][0]["ports"],
        serde_json::json!([{"protocol": "TCP", "port": 8443}])
    );
    assert_eq!(
        p["chitose-to-kafka"]["egress"][0]["ports"],
        serde_json::json!([{"protocol": "TCP", "port": 9093}])
    );

    // Compose: the broker speaks only TLS with client certificates and an
    // authorizer; each chitose service presents its role's certificate.
    let compose = helpers::repo().join("deploy/compose/docker-compose.yml");
    let py = r#"
import sys, yaml, json
c = yaml.safe_load(open(sys.argv[1]))
s = c["services"]
certs = {}
for name, svc in s.items():
    for sec in svc.get("secrets", []):
        if isinstance(sec, dict) and sec.get("target") == "/var/run/chitose/kafka-tls/tls.crt":
            certs[name] = sec["source"]
env = s["kafka"]["environment"]
print(json.dumps({"certs": certs, "listeners": env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"], "auth": env["KAFKA_SSL_CLIENT_AUTH"], "authorizer": env.get("KAFKA_AUTHORIZER_CLASS_NAME", ""), "everyone": env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"], "secrets": sorted(c["secrets"])}))
"#;
    let facts = python_facts(py, &compose);
    assert_eq!(
        facts["certs"],
        serde_json::json!({
            "topics": "chitose-topics-admin.crt",
            "ingest": "chitose-ingest-27.crt",
            "hub-sim": "chitose-ingest-28.crt",
            "transform": "chitose-transform.crt",
            "sink": "chitose-sink.crt",
        })
    );
    for cert in facts["certs"].as_object().unwrap().values() {
        let principal = format!("User:{}", cert.as_str().unwrap().trim_end_matches(".crt"));
        assert!(want.contains_key(&principal), "{principal} has no ACLs");
    }
    assert!(
        !facts["listeners"].as_str().unwrap().contains("PLAINTEXT"),
        "{facts}"
    );
    assert_eq!(facts["auth"], "required");
    assert_eq!(facts["everyone"], "false");
    assert!(
        facts["authorizer"]
            .as_str()
            .unwrap()
            .ends_with("StandardAuthorizer")
    );
    // Every secret compose names is one make-secrets.sh makes.
    let maker =
        std::fs::read_to_string(helpers::repo().join("deploy/compose/make-secrets.sh")).unwrap();
    for name in facts["secrets"].as_array().unwrap() {
        let stem = name.as_str().unwrap().split('.').next().unwrap();
        assert!(
            maker.contains(stem) || stem.starts_with("chitose-"),
            "{name} is not made by make-secrets.sh"
        );
    }
}
