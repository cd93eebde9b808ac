//! The `chitose` binary as a user meets it.

use crate::helpers;

use chitose_ingest::simulate::{Generator, SimConfig};
use std::process::Command;

fn chitose() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chitose"))
}

#[test]
fn help_lists_every_subcommand() {
    let out = chitose().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let built = [
        "up",
        "ingest",
        "transform",
        "sink",
        "topics",
        "tail",
        "dlq",
        "lake",
        "release",
        "schemas",
        "bench",
        "version",
    ];
    for sub in built {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
            "--help lacks {sub}:\n{help}"
        );
    }
}

#[test]
fn committed_json_schema_is_the_generated_one() {
    let out = chitose().args(["schemas", "json-schema"]).output().unwrap();
    assert!(out.status.success());
    let committed =
        std::fs::read(helpers::repo().join("schemas/json/raw_event.schema.json")).unwrap();
    assert!(
        out.stdout == committed,
        "schemas/json/raw_event.schema.json is stale: regenerate with `chitose schemas json-schema`"
    );
}

#[test]
fn schemas_check_counts_and_names_rejects_without_values() {
    let dir = helpers::scratch("check");
    let mut g = Generator::new(SimConfig {
        seed: 8,
        patients: 500,
        bad_share: 0.25,
        prefectures: vec!["28".into()],
        ..SimConfig::default()
    })
    .unwrap();
    let lines: Vec<_> = (0..400).map(|_| g.next_line()).collect();
    let bad = lines
        .iter()
        .filter(|l| matches!(l.verdict, chitose_ingest::simulate::Verdict::Bad(_)))
        .count();
    let mut file = Vec::new();
    for l in &lines {
        file.extend_from_slice(&l.bytes);
        file.push(b'\n');
    }
    let path = dir.join("export.ndjson");
    std::fs::write(&path, &file).unwrap();
    let out = chitose()
        .args(["schemas", "check", "--prefecture", "28"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "rejects make the exit code 1");
    let stdout = String::from_utf8(out.stdout).unwrap();
    // WrongPrefecture lines are addressed to another hub: here they are
    // checked as prefecture 28 and still rejected, so counts hold.
    assert!(
        stdout.starts_with(&format!("accepted {}, rejected {bad}\n", 400 - bad)),
        "{stdout}"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), bad);
    assert!(
        stderr
            .lines()
            .all(|l| l.starts_with("line ") && l.contains(": expected ")),
        "{stderr}"
    );
    for p in g.patients() {
        for s in [
            p.identity.name_kanji.as_deref(),
            p.identity.phone.as_deref(),
            p.identity.address_line.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            assert!(!stderr.contains(s), "a reject line echoes a patient value");
        }
    }
}

#[test]
fn ingest_config_errors_name_the_key_and_print_config_hides_secrets() {
    let out = chitose()
        .args(["ingest", "--prefecture", "99"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config key prefecture: expected a JIS X 0401 code"),
        "{err}"
    );

    let dir = helpers::scratch("cfg");
    let file = dir.join("ingest.toml");
    std::fs::write(
        &file,
        "prefecture = \"26\"\n[http]\nlisten = \"127.0.0.1:9\"\nlisen = 1\n",
    )
    .unwrap();
    let out = chitose()
        .args(["ingest", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("unknown field `lisen`") && err.contains("line 4"),
        "{err}"
    );

    // librdkafka property names hold dots, so they are set in a file.
    let secret = dir.join("secret.toml");
    std::fs::write(
        &secret,
        "[kafka.properties]\n\"sasl.password\" = \"hunter2hunter2\"\n",
    )
    .unwrap();
    let out = chitose()
        .args([
            "ingest",
            "--print-config",
            "--source",
            "http",
            "--config",
            secret.to_str().unwrap(),
        ])
        .env(
            "CHITOSE_INGEST__HTTP__TOKEN_SHA256",
            "[\"5eb0a1c0ffee5eb0a1c0ffee5eb0a1c0ffee5eb0a1c0ffee5eb0a1c0ffee5eb0\"]",
        )
        .env("CHITOSE_KAFKA_SSL_KEY_PASSWORD", "pem-pass-phrase")
        .output()
        .unwrap();
    helpers::assert_ok(&out);
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("source = \"http\""), "{printed}");
    for secret in ["5eb0a1c0ffee", "hunter2", "pem-pass-phrase"] {
        assert!(!printed.contains(secret), "{secret} printed: {printed}");
    }
    assert!(printed.contains("token_sha256 = \"***\""), "{printed}");
    assert!(printed.contains("\"sasl.password\" = \"***\""), "{printed}");
}

/// Every kind of bad environment override and bad config value, in each
/// service at once: one error that lists them all, exit code 2, no panic.
#[test]
fn every_config_problem_is_reported_at_once_with_exit_code_2() {
    let dir = helpers::scratch("cfg-all");
    // (service, its file, its environment, what the error must name).
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: [Case; 3] = [
        (
            "sink",
            // Line 1: wrong type; line 2: unknown key; line 3 and 4: values
            // only the service's own checks refuse; line 5: a duration
            // without its unit.
            "roll_rows = \"ten\"\nrol_age = \"5s\"\nroll_age = \"0s\"\ninput_pattern = \"health\"\nbatch_max = 100\n",
            vec![
                // A key under a plain value (panicked on main).
                ("CHITOSE_SINK__ROLL_BYTES__X", "1"),
                // One level shallower: a value for a whole section
                // (silently ignored on main).
                ("CHITOSE_SINK__KAFKA", "x"),
                // A doubled separator.
                ("CHITOSE_SINK____LAKE", "y"),
                // A key the service does not have.
                ("CHITOSE_SINK__NO_SUCH_KEY", "1"),
                // The wrong type.
                ("CHITOSE_SINK__ROW_GROUP_ROWS", "many"),
                // Not an address (a typed field: host:port).
                ("CHITOSE_SINK__OPS_LISTEN", "not-an-address"),
                // Not a URL (a typed field).
                ("CHITOSE_SINK__REGISTRY_URL", "registry:8081"),
            ],
            vec![
                "line 1",
                "roll_rows",
                "line 2",
                "unknown field `rol_age`",
                "config key roll_age: expected a duration above zero",
                "line 5",
                "bare number 100",
                "config key input_pattern: expected a regex starting with ^",
                "CHITOSE_SINK__ROLL_BYTES__X: expected roll_bytes to be a section",
                "CHITOSE_SINK__KAFKA: expected a key inside section kafka",
                "CHITOSE_SINK____LAKE: expected KEY or SECTION__KEY",
                "CHITOSE_SINK__NO_SUCH_KEY: unknown field `no_such_key`",
                "CHITOSE_SINK__ROW_GROUP_ROWS: invalid type",
                "CHITOSE_SINK__OPS_LISTEN: invalid socket address",
                "config key registry_url: expected an http:// or https:// URL",
            ],
        ),
        (
            "ingest",
            // A CSV mapping whose paths collide (panicked at the first row
            // on main), an unknown encoding and an unknown prefecture.
            "prefecture = \"99\"\n[files]\nencoding = \"klingon\"\n[files.csv.columns]\n\"患者\" = \"patient\"\n\"性別\" = \"patient.sex\"\n",
            vec![
                ("CHITOSE_INGEST__MAX_IN_FLIGHT", "0"),
                // A duration whose unit is not one.
                ("CHITOSE_INGEST__HTTP__ACK_DEADLINE", "10 fortnights"),
            ],
            vec![
                "config key prefecture: expected a JIS X 0401 code",
                "config key files.encoding",
                "found patient.sex inside patient",
                "config key max_in_flight: expected at least 1",
                "CHITOSE_INGEST__HTTP__ACK_DEADLINE: expected a duration with its unit",
            ],
        ),
        (
            "transform",
            "batch_max_records = -3\ninstance_id = \" \"\nops_listen = \"localhost\"\n",
            vec![("CHITOSE_TRANSFORM__OUTPUT_PARTITIONS", "0")],
            vec![
                "line 1",
                "batch_max_records",
                "config key instance_id: expected a non-empty id",
                "line 3 column 14: ops_listen: invalid socket address",
                "config key output_partitions: expected at least 1",
            ],
        ),
    ];
    for (service, text, env, needles) in cases {
        let file = dir.join(format!("{service}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = chitose()
            .args([service, "--config", file.to_str().unwrap()])
            .envs(env)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{service}: {err}");
        assert!(!err.contains("panicked"), "{service}: {err}");
        // One error: one `chitose:` line, the count, then every problem.
        assert_eq!(err.matches("chitose:").count(), 1, "{service}: {err}");
        assert!(
            err.contains(&format!(
                "{} problems with the configuration",
                needles.len()
            )) || err.contains("problems with the configuration"),
            "{service}: {err}"
        );
        for n in needles {
            assert!(err.contains(n), "{service}: expected {n:?} in\n{err}");
        }
        // Nothing started: no log line, no topic, no lake.
        assert!(!err.contains("INFO"), "{service}: {err}");
    }
}

#[test]
fn committed_data_dictionary_is_the_generated_one() {
    let out = chitose().args(["schemas", "docs"]).output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read(helpers::repo().join("docs/data-dictionary.md")).unwrap();
    assert!(
        out.stdout == committed,
        "docs/data-dictionary.md is stale: regenerate with `chitose schemas docs > docs/data-dictionary.md`"
    );
}

/// Key paths (`a.b.c`) of a `--print-config` TOML output.
fn key_paths(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    if let toml::Value::Table(t) = v {
        for (k, v) in t {
            let path = format!("{prefix}{k}");
            match v {
                // Maps keyed by the user (tokens, csv columns, properties,
                // lake options) are documented as `<name>` entries.
                toml::Value::Table(inner) if inner.is_empty() => out.push(path),
                toml::Value::Table(_) => key_paths(v, &format!("{path}."), out),
                _ => out.push(path),
            }
        }
    }
}

#[test]
fn every_config_key_is_in_the_configuration_reference() {
    let doc = std::fs::read_to_string(helpers::repo().join("docs/configuration.md")).unwrap();
    for service in ["ingest", "transform", "sink"] {
        let out = chitose()
            .args([service, "--print-config"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{service}");
        let cfg: toml::Value = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
        let mut keys = Vec::new();
        key_paths(&cfg, "", &mut keys);
        assert!(keys.len() > 10, "{service}: {keys:?}");
        for k in keys {
            // `simulate.generator.mix.encounter` is documented as `mix.<event_type>`.
            let documented = doc.contains(&format!("`{k}`"))
                || doc.contains(&format!("`{k}.<"))
                || k.rsplit_once('.')
                    .is_some_and(|(parent, _)| doc.contains(&format!("`{parent}.<")));
            assert!(documented, "{service}: {k} is not in docs/configuration.md");
        }
    }
}

#[test]
fn release_refuses_a_spec_that_would_leak_before_reading_the_lake() {
    let dir = helpers::scratch("release-spec");
    let good = std::fs::read_to_string(helpers::repo().join("release/specs/example.toml")).unwrap();
    let from = r#"attributes = ["is_primary", "is_suspected"]"#;
    assert!(good.contains(from));
    let bad = good.replacen(from, r#"attributes = ["is_primary", "source_offset"]"#, 1);
    std::fs::write(dir.join("spec.toml"), bad).unwrap();
    let out = chitose()
        .args(["release", "--spec", "spec.toml", "--lake", "lake"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("release spec spec.toml: table diagnosis: attribute source_offset: expected a sensitive attribute (SA), found class OP"),
        "{err}"
    );
    assert!(
        !dir.join("lake/anonymized").exists(),
        "nothing written for a refused spec"
    );
}
