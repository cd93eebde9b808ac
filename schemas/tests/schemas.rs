//! The contract's own rules, checked over every shipped `.avsc`.

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use chitose_schemas::catalog::{EMBEDDED, RAW_EVENT, SchemaStore};
use chitose_schemas::json::JsonToAvro;
use std::path::Path;

fn fields_of<'a>(
    s: &'a Schema,
    out: &mut Vec<(String, &'a apache_avro::schema::RecordField)>,
    prefix: &str,
) {
    match s {
        Schema::Record(r) => {
            for f in &r.fields {
                let path = format!("{prefix}{}.{}", r.name.name, f.name);
                out.push((path.clone(), f));
                fields_of(&f.schema, out, &format!("{path}/"));
            }
        }
        Schema::Union(u) => u.variants().iter().for_each(|v| fields_of(v, out, prefix)),
        Schema::Array(a) => fields_of(&a.items, out, prefix),
        _ => {}
    }
}

#[test]
fn every_field_says_its_class_and_what_happens_to_it() {
    let mut checked = 0;
    for e in SchemaStore::embedded().iter() {
        let mut fields = Vec::new();
        fields_of(&e.schema, &mut fields, "");
        for (path, f) in fields {
            let doc = f.doc.as_deref().unwrap_or("");
            let class = doc.split([':', ' ']).next().unwrap_or("");
            assert!(
                matches!(class, "DI" | "QI" | "SA" | "OP" | "DI/QI" | "SA/DI"),
                "{}: {path}: doc must start with DI, QI, SA or OP, found {doc:?}",
                e.path
            );
            assert!(
                doc.len() > class.len() + 4,
                "{}: {path}: doc says nothing beyond the class",
                e.path
            );
            // In the raw zone the class alone is not enough: the privacy
            // officer reads what the transform does with the field.
            const ACTIONS: &[&str] = &[
                "kept",
                "dropped",
                "generalized",
                "used",
                "turned",
                "replaced",
                "shifted",
                "rolled",
                "see ",
            ];
            if e.full_name == RAW_EVENT {
                assert!(
                    ACTIONS.iter().any(|a| doc.contains(a)),
                    "{}: {path}: doc must say what the transform does with the field, found {doc:?}",
                    e.path
                );
            }
            if class == "DI" && e.full_name == RAW_EVENT {
                assert!(
                    doc.contains("dropped"),
                    "{}: {path}: a direct identifier must say it is dropped",
                    e.path
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 150, "only {checked} fields checked");
}

#[test]
fn shipped_folder_and_embedded_copies_are_the_same_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("avro");
    let from_dir = SchemaStore::from_dir(&dir).unwrap();
    assert_eq!(
        from_dir.iter().count(),
        EMBEDDED.len(),
        "a .avsc in avro/ is missing from catalog::EMBEDDED"
    );
    for e in SchemaStore::embedded().iter() {
        let d = from_dir
            .by_fingerprint(e.fingerprint)
            .unwrap_or_else(|| panic!("{} differs on disk", e.path));
        assert_eq!(d.text, e.text);
    }
}

#[test]
fn each_version_reads_data_written_with_the_previous_one() {
    let store = SchemaStore::embedded();
    let mut pairs = 0;
    for name in store.names() {
        let versions = store.versions(name);
        for w in versions.windows(2) {
            let (old, new) = (&w[0], &w[1]);
            assert_eq!(
                new.version,
                old.version + 1,
                "{name}: versions must be consecutive"
            );
            SchemaCompatibility::can_read(&old.schema, &new.schema).unwrap_or_else(|e| {
                panic!("{name} v{} cannot read v{}: {e}", new.version, old.version)
            });
            pairs += 1;
        }
    }
    assert!(
        pairs >= 1,
        "no schema has two versions: the compatibility check ran on nothing"
    );
}

#[test]
fn an_incompatible_change_is_caught_by_the_same_check() {
    // Guard against a check that passes everything: adding a required
    // field without a default must fail.
    let store = SchemaStore::embedded();
    let v2 = store.latest(RAW_EVENT).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&v2.text).unwrap();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "required_new", "type": "string", "doc": "OP: test"}));
    let v3 = Schema::parse_str(&json.to_string()).unwrap();
    assert!(SchemaCompatibility::can_read(&v2.schema, &v3).is_err());
}

#[test]
fn every_pattern_attribute_compiles_for_every_schema() {
    for e in SchemaStore::embedded().iter() {
        JsonToAvro::new(e.schema.clone()).unwrap_or_else(|err| panic!("{}: {err}", e.path));
    }
}

/// A random string in the language of `hir` (a class's member, a repeat
/// count within its bounds, one branch of an alternation).
fn sample(hir: &regex_syntax::hir::Hir, rng: &mut impl rand::Rng, out: &mut String) {
    use regex_syntax::hir::{Class, HirKind};
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(l) => out.push_str(std::str::from_utf8(&l.0).unwrap()),
        HirKind::Class(Class::Unicode(c)) => {
            let r = &c.ranges()[rng.random_range(0..c.ranges().len())];
            let n = rng.random_range(u32::from(r.start())..=u32::from(r.end()));
            out.push(char::from_u32(n).unwrap_or(r.start()));
        }
        HirKind::Class(Class::Bytes(c)) => {
            let r = &c.ranges()[rng.random_range(0..c.ranges().len())];
            out.push(char::from(rng.random_range(r.start()..=r.end().min(0x7f))));
        }
        HirKind::Repetition(r) => {
            let max = r.max.unwrap_or(r.min + 3);
            for _ in 0..rng.random_range(r.min..=max) {
                sample(&r.sub, rng, out);
            }
        }
        HirKind::Capture(c) => sample(&c.sub, rng, out),
        HirKind::Concat(v) => v.iter().for_each(|h| sample(h, rng, out)),
        HirKind::Alternation(v) => sample(&v[rng.random_range(0..v.len())], rng, out),
    }
}

/// The code patterns are matched by walking their DFA byte by byte
/// (`CodePattern::is_match`); `regex` is the referee. Every pattern of
/// every shipped schema, on strings drawn from its own language and on
/// near misses (one character replaced, inserted or removed, from an
/// alphabet with control characters, full-width digits and kana).
#[test]
fn the_code_pattern_walk_agrees_with_regex_on_every_schema_pattern() {
    use chitose_schemas::json::CodePattern;
    use rand::{Rng, SeedableRng};
    let mut patterns = std::collections::BTreeSet::new();
    for e in SchemaStore::embedded().iter() {
        let mut fields = Vec::new();
        fields_of(&e.schema, &mut fields, "");
        for (_, f) in fields {
            if let Some(serde_json::Value::String(p)) = f.custom_attributes.get("chitose.pattern") {
                patterns.insert(p.clone());
            }
        }
    }
    assert!(patterns.len() >= 10, "found {} patterns", patterns.len());
    // Neither the patterns nor the alphabet are the code under test's.
    let alphabet: Vec<char> = "09AZaz-._: \t\n\u{7f}\u{85}１Ａｱア山é\u{0}"
        .chars()
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(19);
    for p in &patterns {
        let cp = CodePattern::new(p).unwrap();
        assert!(cp.walks(), "{p}: its DFA builds, so the walk serves it");
        let hir = regex_syntax::Parser::new().parse(p).unwrap();
        let (mut yes, mut no) = (0, 0);
        for i in 0..4000 {
            let mut s = String::new();
            sample(&hir, &mut rng, &mut s);
            if i % 2 == 1 {
                let mut c: Vec<char> = s.chars().collect();
                let at = rng.random_range(0..=c.len());
                let x = alphabet[rng.random_range(0..alphabet.len())];
                match rng.random_range(0..3) {
                    0 if at < c.len() => c[at] = x,
                    1 if at < c.len() => {
                        c.remove(at);
                    }
                    _ => c.insert(at, x),
                }
                s = c.into_iter().collect();
            }
            let want = cp.is_match_by_regex(&s);
            assert_eq!(cp.is_match(&s), want, "{p} on {s:?}");
            if want { yes += 1 } else { no += 1 }
        }
        assert!(yes > 1000 && no > 500, "{p}: {yes} matches, {no} misses");
    }
    // And a pattern that is not anchored, where the walk must find a match
    // in the middle, and one anchored at one end only.
    for p in ["[0-9]{3}", "^A[0-9]", "[0-9]$", "(?i)ab|cd"] {
        let cp = CodePattern::new(p).unwrap();
        for s in [
            "", "x123y", "12", "A1", "xA1", "9", "9x", "AB", "xcD", "a\u{0}b",
        ] {
            assert_eq!(cp.is_match(s), cp.is_match_by_regex(s), "{p} on {s:?}");
        }
    }
}
