//! `chitose release` and `chitose lake audit` on a lake `chitose up`
//! wrote, with one patient planted that nobody else resembles (a rare
//! diagnosis in a small municipality). Every claim of the release report
//! is checked again by DuckDB (tests/python/check_release.py), not by the
//! code that made it.

use crate::helpers;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SPEC: &str = "release/specs/example.toml";

fn chitose(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chitose"))
        .args(args)
        .env("CHITOSE_LAKE", "lake")
        .current_dir(dir)
        .output()
        .unwrap()
}

fn spec() -> String {
    helpers::repo().join(SPEC).display().to_string()
}

/// A lake from `chitose up` in a fresh folder.
fn lake(name: &str, events: &str, seed: &str) -> PathBuf {
    let dir = helpers::scratch(name);
    let up = chitose(
        &dir,
        &[
            "up",
            "--events",
            events,
            "--quiet",
            "--seed",
            seed,
            "--ops-port",
            "0",
        ],
    );
    helpers::assert_ok(&up);
    dir
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn python(args: &[&str]) -> Value {
    let out = Command::new(helpers::python()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out)
}

/// The independent oracle's facts about a release made with `spec`
/// (tests/python/check_release.py: DuckDB and Python, people from the
/// planted ground truth in `truth` where given).
fn check_with(dir: &Path, release: &str, spec: &str, truth: Option<&Path>) -> Value {
    let script = helpers::repo().join("tests/python/check_release.py");
    let mut args = vec![
        script.to_str().unwrap().to_owned(),
        dir.join("lake").to_str().unwrap().to_owned(),
        release.to_owned(),
        spec.to_owned(),
    ];
    args.extend(truth.map(|t| t.to_str().unwrap().to_owned()));
    python(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn check(dir: &Path, release: &str) -> Value {
    check_with(dir, release, &spec(), None)
}

/// Every object of the lake with its size and modification time.
fn listing(root: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), (m.len(), m.modified().unwrap()));
            }
        }
    }
    out
}

fn release(dir: &Path, id: &str) -> Value {
    release_with(dir, id, &spec(), &[])
}

fn release_with(dir: &Path, id: &str, spec: &str, extra: &[&str]) -> Value {
    let mut args = vec!["release", "--spec", spec, "--release-id", id, "--json"];
    args.extend(extra);
    let out = chitose(dir, &args);
    helpers::assert_ok(&out);
    json(&out)
}

/// The report's claims about one table against DuckDB's facts.
fn reconcile(spec: &Value, table: &Value, facts: &Value) {
    let name = table["table"].as_str().unwrap();
    let f = &facts[name];
    assert_eq!(
        f["classes_below_k"].as_array().unwrap().len(),
        0,
        "{name}: classes below k: {}",
        f["classes_below_k"]
    );
    assert!(f["k"].as_u64().unwrap() >= table["k_required"].as_u64().unwrap());
    // People, counted by the oracle from the lake side, agree with the
    // report's k; and the oracle's mapping of lake rows to released groups
    // is exact (else its counts would mean nothing).
    assert_eq!(
        f["mismatched"].as_array().unwrap().len(),
        0,
        "{name}: {}",
        f["mismatched"]
    );
    assert_eq!(f["k"], table["k_achieved"], "{name}: k");
    assert_eq!(table["read_back"]["records"], f["records"], "{name}");
    assert!(
        table["read_back"]["smallest_class"].as_u64().unwrap()
            >= table["k_required"].as_u64().unwrap(),
        "{name}"
    );
    assert_eq!(table["read_back"]["rare_groups_below"], 0, "{name}");
    assert_eq!(f["records"], table["records_out"], "{name}: records out");
    assert_eq!(f["records_in"], table["records_in"], "{name}: records in");
    let suppressed = table["suppressed_k_anonymity"].as_u64().unwrap();
    assert_eq!(
        f["records_in"].as_u64().unwrap() - f["records"].as_u64().unwrap(),
        suppressed,
        "{name}: suppressed records reconcile"
    );
    let written: u64 = table["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f[1].as_u64().unwrap())
        .sum();
    assert_eq!(written, f["records"].as_u64().unwrap(), "{name}: files");
    assert_eq!(table["after"]["unique_records"], 0, "{name}");
    // The lake is far from it: with the rare values in the group (what an
    // attacker who knows one diagnosis sees), people stand alone.
    assert!(
        table["before_with_rare"]["unique_records"]
            .as_u64()
            .unwrap()
            > 0,
        "{name}"
    );
    for r in table["rare_before"].as_array().unwrap() {
        assert!(r["groups_below"].as_u64().unwrap() > 0, "{name}: {r}");
    }
    for r in table["rare"].as_array().unwrap() {
        let c = r["column"].as_str().unwrap();
        let rf = &f["rare"][c];
        assert_eq!(
            rf["below"].as_array().unwrap().len(),
            0,
            "{name}.{c}: values below the threshold: {}",
            rf["below"]
        );
        assert_eq!(
            rf["nulls"], r["suppressed"],
            "{name}.{c}: suppressed values"
        );
        let mut total = 0;
        for level in r["records_at"].as_array().unwrap() {
            let (label, n) = (level[0].as_str().unwrap(), level[1].as_u64().unwrap());
            assert_eq!(
                rf["levels"][label].as_u64().unwrap_or(0),
                n,
                "{name}.{c}: records released as {label}"
            );
            total += n;
        }
        assert_eq!(total, f["records"].as_u64().unwrap(), "{name}.{c}");
        assert!(
            r["rolled_up"].as_u64().unwrap() + r["suppressed"].as_u64().unwrap() > 0,
            "{name}.{c}: the data must have rare values for the rule to prove anything"
        );
    }
    assert_eq!(
        f["lake_overlap"], 0,
        "{name}: a lake pseudonym was released"
    );
    // Shuffled: released rows keep none of the lake's order (prefecture
    // blocks, months), for every qi that varies.
    for (c, o) in f["order"].as_object().unwrap() {
        let (released, random) = (o["released"].as_f64(), o["random"].as_f64());
        if let (Some(r), Some(x)) = (released, random)
            && f["records"].as_u64().unwrap() > 100
        {
            assert!(
                (r - x).abs() < 0.1,
                "{name}.{c}: adjacent equal values {r:.3}, a random order gives {x:.3}"
            );
        }
    }
    // Exactly the allow-list leaves: no source coordinate, event id, key id
    // or finer view of a generalized column.
    let columns: Vec<&str> = f["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(columns, allowed(spec, name), "{name}");
    let dropped: Vec<&str> = table["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d[0].as_str().unwrap())
        .collect();
    for link in [
        "event_id",
        "source_offset",
        "pseudonym_key_id",
        "event_date",
    ] {
        assert!(
            dropped.contains(&link),
            "{name}: {link} not reported dropped"
        );
    }
}

/// The columns a spec lets out of `table`, in release order.
fn allowed(spec: &Value, table: &str) -> Vec<String> {
    let t = spec["table"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == table)
        .unwrap();
    let names = |key: &str, field: &str| -> Vec<String> {
        t[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        (if field.is_empty() { x } else { &x[field] })
                            .as_str()
                            .unwrap()
                            .to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    if t["pseudonym"] == true {
        out.push("pseudonym".to_owned());
    }
    out.extend(names("qi", "column"));
    for r in names("rare", "column") {
        out.push(format!("{r}_level"));
        out.insert(out.len() - 1, r);
    }
    out.extend(names("attributes", ""));
    out
}

fn pseudonyms(facts: &Value, table: &str) -> BTreeSet<String> {
    facts[table]["pseudonyms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_release_holds_k_reconciles_and_links_to_nothing() {
    let dir = lake("release", "12000", "21");
    let lake_dir = dir.join("lake");
    let planted = python(&[
        helpers::repo()
            .join("tests/python/plant_patient.py")
            .to_str()
            .unwrap(),
        lake_dir.to_str().unwrap(),
    ]);
    assert_eq!(planted["residence_municipality_code"], "29449");
    let verify = chitose(&dir, &["lake", "verify"]);
    assert!(
        verify.status.success(),
        "the planted lake must stay consistent: {}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // Before: the planted patient is the only one of the municipality, and
    // the stream zone is far from k-anonymous. The audit changes nothing.
    let before = listing(&lake_dir);
    let muni = json(&chitose(
        &dir,
        &[
            "lake",
            "audit",
            "--table",
            "diagnosis",
            "--qi",
            "residence_municipality_code",
            "--json",
        ],
    ));
    assert_eq!(muni["risk"]["unique_patients"], 1, "{muni}");
    let audit = chitose(
        &dir,
        &[
            "lake",
            "audit",
            "--table",
            "diagnosis",
            "--spec",
            &spec(),
            "--json",
            "--check",
        ],
    );
    assert_eq!(audit.status.code(), Some(1), "--check fails below k");
    let audit = json(&audit);
    assert_eq!(audit["risk"]["k"], 1);
    assert_eq!(audit["k"], 5, "k from the spec");
    assert!(
        audit["risk"]["uniqueness"].as_f64().unwrap() > 0.1,
        "{audit}"
    );
    assert!(
        audit["rare"][0]["groups_below"].as_u64().unwrap() > 0,
        "{audit}"
    );
    let typo = chitose(
        &dir,
        &[
            "lake",
            "audit",
            "--table",
            "diagnosis",
            "--qi",
            "sex,age_bnd",
        ],
    );
    assert_eq!(typo.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&typo.stderr).contains(
            "column age_bnd: expected a column of pseudonymized/diagnosis, found it in none of its"
        ),
        "{}",
        String::from_utf8_lossy(&typo.stderr)
    );
    assert_eq!(listing(&lake_dir), before, "lake audit changed the lake");

    // The attacks of docs/release.md, planted with their ground truth.
    let planted = python(&[
        helpers::repo()
            .join("tests/python/plant_people.py")
            .to_str()
            .unwrap(),
        lake_dir.to_str().unwrap(),
    ]);
    let truth = dir.join("truth.json");
    std::fs::write(&truth, planted.to_string()).unwrap();
    let r1 = release(&dir, "r1");
    let r2 = release(&dir, "r2");
    // Each table's report names the Delta version it read, the one delta-rs
    // reads now (the planted row is in it): the release can be reproduced.
    let read = helpers::read_lake(lake_dir.to_str().unwrap(), None);
    for t in r1["tables"].as_array().unwrap() {
        let name = t["table"].as_str().unwrap();
        assert_eq!(t["snapshot"]["version"], read[name]["version"], "{name}");
        assert_eq!(t["snapshot"]["rows"], read[name]["pyarrow_rows"], "{name}");
    }
    // A dry run plans the same and writes nothing.
    let dry = chitose(
        &dir,
        &[
            "release",
            "--spec",
            &spec(),
            "--release-id",
            "dry",
            "--dry-run",
            "--json",
        ],
    );
    assert!(dry.status.success());
    let dry = json(&dry);
    assert!(!lake_dir.join("anonymized/dry").exists());
    for (a, b) in dry["tables"]
        .as_array()
        .unwrap()
        .iter()
        .zip(r1["tables"].as_array().unwrap())
    {
        assert_eq!(a["generalization"], b["generalization"]);
        assert_eq!(a["records_out"], b["records_out"]);
        assert_eq!(a["rare"], b["rare"]);
    }
    let (f1, f2) = (
        check_with(&dir, "r1", &spec(), Some(&truth)),
        check_with(&dir, "r2", &spec(), Some(&truth)),
    );
    for (report, facts) in [(&r1, &f1), (&r2, &f2)] {
        for table in report["tables"].as_array().unwrap() {
            reconcile(&report["spec"], table, facts);
        }
    }
    // The planted patient: the rare code and the small municipality never
    // appear; the patient's record is suppressed or inside a class of ≥ k.
    let values = &f1["diagnosis"]["values"];
    let has = |col: &str, v: &str| values[col].as_array().unwrap().iter().any(|x| x == v);
    assert!(!has("residence_municipality_code", "29449"));
    assert!(!has("icd10_code", "A20.0") && !has("icd10_code", "A20"));

    // Strict by default: the open-data example releases no pseudonym.
    assert!(pseudonyms(&f1, "diagnosis").is_empty());
    // A linked release, for a named recipient: one pseudonym per person,
    // re-keyed per table and release. Releases do not link: same people,
    // other pseudonyms; nor do the tables of one release.
    let linked = dir.join("linked.toml");
    std::fs::write(
        &linked,
        std::fs::read_to_string(spec()).unwrap().replace(
            "attributes = [",
            "pseudonym = true\nrecipient = \"Univ. X, contract 2026-17\"\nattributes = [",
        )
        // ℓ-diversity on the diagnosis table's is_suspected, which needs
        // a larger suppression budget on this small lake.
        .replacen("max_suppression = 0.05", "max_suppression = 0.1", 1)
        .replacen(
            "attributes = [\"is_primary\", \"is_suspected\"]",
            "attributes = [\"is_primary\", \"is_suspected\"]\nsensitive = [\"is_suspected\"]\nl = 2",
            1,
        ),
    )
    .unwrap();
    let linked = linked.to_str().unwrap();
    // Their levels differ from r1's (ℓ changes the search): the ledger
    // would refuse them as a composition with r1 — asked for here on
    // purpose.
    let (l1, l2) = (
        release_with(&dir, "l1", linked, &["--allow-composition"]),
        release_with(&dir, "l2", linked, &["--allow-composition"]),
    );
    let (g1, g2) = (
        check_with(&dir, "l1", linked, Some(&truth)),
        check_with(&dir, "l2", linked, Some(&truth)),
    );
    for (report, facts) in [(&l1, &g1), (&l2, &g2)] {
        for table in report["tables"].as_array().unwrap() {
            reconcile(&report["spec"], table, facts);
            if table["table"] == "diagnosis" {
                // ℓ, by the oracle over the released rows.
                assert_eq!(table["l_diversity"][0], 2);
                let l = facts["diagnosis"]["l"]["is_suspected"].as_u64().unwrap();
                assert!(l >= 2, "a group with one is_suspected value: {l}");
                assert_eq!(table["l_achieved"][0][1], l, "the report's ℓ");
                assert!(
                    table["suppressed_l_diversity"].as_u64().unwrap() > 0,
                    "{table}"
                );
            }
            // What linking exposes is reported: people whose set of rows
            // is unique.
            let tr = &table["trajectories"];
            assert!(tr["people"].as_u64().unwrap() > 0, "{tr}");
            assert!(tr["unique_people"].as_u64().unwrap() <= tr["people"].as_u64().unwrap());
        }
    }
    for table in ["diagnosis", "prescription"] {
        let (a, b) = (pseudonyms(&g1, table), pseudonyms(&g2, table));
        assert!(!a.is_empty());
        assert_eq!(a.len(), b.len(), "{table}");
        assert!(a.is_disjoint(&b), "{table}: releases share pseudonyms");
    }
    assert!(pseudonyms(&g1, "diagnosis").is_disjoint(&pseudonyms(&g1, "prescription")));
    // People, not pseudonyms: P's four pseudonyms are one person.
    let people = &r1["people"];
    assert!(
        people["pseudonyms"].as_u64().unwrap() >= people["people"].as_u64().unwrap() + 3,
        "{people}"
    );

    // The report, as Markdown too, and a complete release never overwritten.
    let md = std::fs::read_to_string(lake_dir.join("anonymized/r1/release-report.md")).unwrap();
    assert!(md.contains("k achieved"), "{md}");
    let again = chitose(&dir, &["release", "--spec", &spec(), "--release-id", "r1"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("found a complete release r1"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // The released table audited: k holds, nobody unique.
    let after = chitose(
        &dir,
        &[
            "lake",
            "audit",
            "--table",
            "diagnosis",
            "--release",
            "r1",
            "--spec",
            &spec(),
            "--check",
            "--json",
        ],
    );
    helpers::assert_ok(&after);
    let after = json(&after);
    assert!(after["risk"]["k"].as_u64().unwrap() >= 5, "{after}");
    assert_eq!(after["risk"]["unique_records"], 0);
    assert_eq!(after["rare"][0]["column"], "icd10_code");
    assert_eq!(after["rare"][0]["groups_below"], 0, "{after}");
    assert_eq!(after["risk"]["records"], r1["tables"][0]["records_out"]);
    attacks(&dir, &truth, &planted);
    assert!(chitose(&dir, &["lake", "verify"]).status.success());
}

/// A spec whose classes are coarse enough that the planted groups are
/// released or suppressed on their own: (sex, residence prefecture, year),
/// a diagnosis and the outcome in the group.
const ATTACK_SPEC: &str = r#"
k = 5
max_suppression = 0.1

[[table]]
name = "diagnosis"
attributes = ["is_primary"]

[[table.qi]]
column = "sex"

[[table.qi]]
column = "residence_prefecture"

[[table.qi]]
column = "event_month"
periods = ["year"]

[[table.rare]]
column = "icd10_code"
ladder = ["icd10_3char", "icd10_block", "icd10_chapter"]
threshold = 5

[[table.rare]]
column = "outcome"
threshold = 5
"#;

/// The planted attacks against a release at (sex, prefecture, year). On
/// main each succeeds: the release counted P's four pseudonyms as four
/// patients (the first prefecture's class of three people passed k = 5),
/// counted the target's C50.9 per (prefecture, period) (six people) while
/// it is unique among the women, and released the outcome as it is. Here
/// each is caught, the oracle agrees on k in people, and a release over
/// the same records at another granularity than r1's is refused.
fn attacks(dir: &Path, truth: &Path, planted: &Value) {
    let spec = dir.join("attack.toml");
    std::fs::write(&spec, ATTACK_SPEC).unwrap();
    let spec = spec.to_str().unwrap();
    let refused = chitose(dir, &["release", "--spec", spec, "--release-id", "ra"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("table diagnosis: release ") && err.contains("composition attack"),
        "{err}"
    );
    let ra = release_with(dir, "ra", spec, &["--allow-composition"]);
    assert_eq!(ra["allowed_composition"], true);
    let f = check_with(dir, "ra", spec, Some(truth));
    let t = &ra["tables"][0];
    reconcile(&ra["spec"], t, &f);
    let d = &f["diagnosis"];
    let levels: Vec<u64> = t["generalization"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["level"].as_u64().unwrap())
        .collect();
    assert_eq!(
        levels[..2],
        [0, 0],
        "sex and prefecture as they are: {levels:?}"
    );
    let (first, second) = (
        planted["first"].as_str().unwrap(),
        planted["second"].as_str().unwrap(),
    );
    let prefs = d["values"]["residence_prefecture"].as_array().unwrap();
    // 1. Five pseudonyms, three people: not released.
    assert!(!prefs.iter().any(|p| p == first), "{prefs:?}");
    // 2 and 3. The second prefecture is released (the men, five women),
    // but not the target's diagnosis among the women, nor the death.
    assert!(prefs.iter().any(|p| p == second), "{prefs:?}");
    let released = released_rows(dir, "ra");
    let women: Vec<&Vec<Option<String>>> = released
        .iter()
        .filter(|r| r[0].as_deref() == Some("female") && r[1].as_deref() == Some(second))
        .collect();
    assert_eq!(women.len(), 5, "the five women with J06.9: {women:?}");
    assert!(
        women.iter().all(|r| r[3].as_deref() == Some("cured")),
        "{women:?}"
    );
    assert!(
        !released
            .iter()
            .any(|r| r[1].as_deref() == Some(second) && r[3].as_deref() == Some("died")),
        "a death is never a group of its own"
    );
    for r in released.iter().filter(|r| r[1].as_deref() == Some(second)) {
        if r[0].as_deref() == Some("female") {
            assert_ne!(r[2].as_deref(), Some("C50.9"), "the target's diagnosis");
        }
    }
    assert!(
        t["suppressed_rare_groups"].as_u64().unwrap() >= 2,
        "the target's and the dead woman's groups: {t}"
    );
    // The lake's order would have told the prefecture: its rows come in
    // prefecture blocks; the release's do not.
    let o = &d["order"]["residence_prefecture"];
    assert!(o["lake"].as_f64().unwrap() > 0.5, "{o}");
}

/// The released diagnosis rows of `release`: (sex, residence prefecture,
/// icd10_code, outcome), read by DuckDB.
fn released_rows(dir: &Path, release: &str) -> Vec<Vec<Option<String>>> {
    let code = format!(
        "import json, sys, duckdb; sys.path.insert(0, {:?}); import lakeio\n\
         src = lakeio.duckdb_source({:?})\n\
         print(json.dumps(duckdb.sql(f'select sex, residence_prefecture, icd10_code, outcome from {{src}}').fetchall()))",
        helpers::repo().join("tests/python").display().to_string(),
        dir.join(format!("lake/anonymized/{release}/diagnosis"))
            .display()
            .to_string(),
    );
    let v = python(&["-c", &code]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .collect()
}

#[test]
fn a_killed_release_reruns_clean_under_its_id() {
    let dir = lake("release-kill", "6000", "22");
    let lake_dir = dir.join("lake");
    let out_dir = lake_dir.join("anonymized/rk");
    let args = [
        "release",
        "--spec",
        &spec(),
        "--release-id",
        "rk",
        "--lake",
        lake_dir.to_str().unwrap(),
        "--rows-per-file",
        "10",
        "--batch-rows",
        "16",
    ];
    let mut child = helpers::chitose(&args, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let written = || {
        std::fs::read_dir(out_dir.join("diagnosis"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
                    .count()
            })
            .unwrap_or(0)
    };
    while written() < 4 {
        assert!(std::time::Instant::now() < deadline, "{}", child.log());
        assert!(child.0.try_wait().unwrap().is_none(), "{}", child.log());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    assert!(
        !out_dir.join("release-report.json").exists(),
        "killed before it finished"
    );
    let left = listing(&out_dir).len();
    assert!(left >= 3, "it left files behind: {left}");

    // Rerun with an index budget far below its cells: it spills, plans
    // bucket by bucket of whole classes and makes the decisions again in
    // pass two; the oracle must agree all the same.
    let rerun = chitose(
        &dir,
        &[
            "release",
            "--spec",
            &spec(),
            "--release-id",
            "rk",
            "--json",
            "--index-memory",
            "16KiB",
            "--shuffle-rows",
            "500",
        ],
    );
    helpers::assert_ok(&rerun);
    assert!(
        String::from_utf8_lossy(&rerun.stderr)
            .contains("an interrupted run of this release left objects"),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let report = json(&rerun);
    for t in report["tables"].as_array().unwrap() {
        assert_eq!(t["index_spilled"], true, "{}", t["table"]);
    }
    let facts = check(&dir, "rk");
    for table in report["tables"].as_array().unwrap() {
        reconcile(&report["spec"], table, &facts);
    }
    // Nothing of the killed run is left: the folder holds the report and
    // exactly the files it lists.
    let files: BTreeSet<PathBuf> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["files"].as_array().unwrap().clone())
        .map(|f| lake_dir.join(f[0].as_str().unwrap()))
        .collect();
    let present: BTreeSet<PathBuf> = listing(&out_dir)
        .into_keys()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .filter(|p| !p.display().to_string().contains("/_delta_log/"))
        .collect();
    assert_eq!(present, files);

    // The anonymized zone in a root of its own (another bucket in
    // production): the release lands there and nowhere in the lake.
    let zone = dir.join("releases");
    let other = chitose(
        &dir,
        &[
            "release",
            "--spec",
            &spec(),
            "--release-id",
            "rz",
            "--json",
            "--release-lake",
            zone.to_str().unwrap(),
        ],
    );
    helpers::assert_ok(&other);
    let zoned = json(&other);
    assert!(zone.join("anonymized/rz/release-report.json").exists());
    assert!(
        !lake_dir.join("anonymized/rz").exists(),
        "written into the lake"
    );
    let written: Vec<PathBuf> = zoned["tables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["files"].as_array().unwrap().clone())
        .map(|f| zone.join(f[0].as_str().unwrap()))
        .collect();
    assert!(
        !written.is_empty() && written.iter().all(|p| p.exists()),
        "{written:?}"
    );
    // The same plan over the same snapshot, under a fresh key.
    let out_of = |r: &Value| -> Vec<u64> {
        r["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["records_out"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(out_of(&zoned), out_of(&report));
    // Made by chitose, so its user's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(zone.join("anonymized/rz"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
}

/// Copies every file under `local` to the lake, or (`upload` false) every
/// object under `prefix` back into `local`.
fn s3_copy(lake: &chitose_lake::Lake, local: &Path, prefix: &str, upload: bool) {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if upload {
            for (path, _) in listing(local) {
                let rel = path
                    .strip_prefix(local)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                let body = std::fs::read(&path).unwrap();
                lake.store.put(&lake.path(&rel), body.into()).await.unwrap();
            }
        } else {
            let metas: Vec<_> = lake
                .store
                .list(Some(&lake.path(prefix)))
                .try_collect()
                .await
                .unwrap();
            assert!(!metas.is_empty(), "nothing under {prefix}");
            for m in metas {
                let rel = m.location.as_ref().to_owned();
                let bytes = lake
                    .store
                    .get(&m.location)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                let to = local.join(rel);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::write(to, bytes).unwrap();
            }
        }
    });
}

#[test]
fn a_release_on_s3_reads_the_tables_and_writes_its_own_there() {
    let dir = lake("release-s3", "5000", "23");
    let endpoint = helpers::moto();
    // The lake copied to the bucket's root, Delta logs and all (their
    // paths are relative to each table).
    let url = format!("s3://{}", helpers::create_bucket(&endpoint));
    let options: BTreeMap<String, String> = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let lake = chitose_lake::Lake::open(&url, &options).unwrap();
    s3_copy(&lake, &dir.join("lake"), "", true);
    let flags: Vec<String> = options
        .iter()
        .take(3)
        .flat_map(|(k, v)| ["--lake-option".to_owned(), format!("{k}={v}")])
        .collect();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_chitose"))
            .args(args)
            .args(["--lake", &url])
            .args(&flags)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .output()
            .unwrap()
    };
    let out = run(&["release", "--spec", &spec(), "--release-id", "s3", "--json"]);
    helpers::assert_ok(&out);
    let report = json(&out);
    // Nothing was written locally: the release lives on S3.
    assert!(!dir.join("lake/anonymized").exists());
    s3_copy(&lake, &dir.join("lake"), "anonymized/s3", false);
    let facts = check(&dir, "s3");
    for table in report["tables"].as_array().unwrap() {
        reconcile(&report["spec"], table, &facts);
    }
    let audit = run(&[
        "lake",
        "audit",
        "--table",
        "diagnosis",
        "--release",
        "s3",
        "--spec",
        &spec(),
        "--check",
    ]);
    helpers::assert_ok(&audit);
}

/// Rows a correction withdrew (a cancelled order) are left out of a
/// release, counted in its report, and the counts still reconcile with the
/// tables' logs.
#[test]
fn a_release_leaves_out_the_rows_a_correction_withdrew() {
    let dir = lake("release-withdrawn", "6000", "5");
    let lake_dir = dir.join("lake");
    let ids = python(&[
        helpers::repo()
            .join("tests/python/plant_corrections.py")
            .to_str()
            .unwrap(),
        lake_dir.to_str().unwrap(),
        "25",
    ]);
    assert_eq!(ids.as_array().unwrap().len(), 25);
    let r = release(&dir, "withdrawn-1");
    let d = r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "diagnosis")
        .unwrap();
    assert_eq!(d["withdrawn"], 25, "{d}");
    assert_eq!(
        d["records_in"].as_u64().unwrap() + 25,
        d["snapshot"]["rows"].as_u64().unwrap(),
        "read = committed − withdrawn"
    );
    let other = r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] != "diagnosis")
        .unwrap();
    assert_eq!(
        other["withdrawn"], 0,
        "a correction withdraws from its own table only"
    );
}
