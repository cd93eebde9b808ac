//! Policies are checked at start-up: every error names the file and line,
//! and `policy explain` is generated from what the transform will do.

use chitose_schemas::catalog::SchemaStore;
use chitose_transform::core::raw_leaves;
use chitose_transform::policy::{Policy, PolicyError, SHIPPED};

fn shipped() -> &'static str {
    SHIPPED[0].1
}

fn load(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse("test.toml", text, &raw_leaves(&SchemaStore::embedded()))
}

fn compile(text: &str) -> Result<(), PolicyError> {
    let store = SchemaStore::embedded();
    let p = load(text)?;
    chitose_transform::plan::compile(&p, &raw_leaves(&store), &store).map(|_| ())
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn shipped_profiles_load_and_compile_for_every_table() {
    let store = SchemaStore::embedded();
    for (name, _) in SHIPPED {
        let p = Policy::load(name, &raw_leaves(&store)).unwrap();
        assert_eq!(p.profile, *name);
        assert!(!p.version.is_empty());
        let plans = chitose_transform::plan::compile(&p, &raw_leaves(&store), &store).unwrap();
        assert_eq!(plans.len(), chitose_schemas::raw::EventType::ALL.len());
    }
}

#[test]
fn an_unknown_field_is_named_with_its_line() {
    let text = shipped().replace("sex = \"keep\"", "sex = \"keep\"\ngender = \"keep\"");
    let e = load(&text).unwrap_err().to_string();
    let line = line_of(&text, "gender");
    assert!(
        e.starts_with(&format!(
            "test.toml:{line}: [patient] gender: expected a field of the raw schema"
        )),
        "{e}"
    );
}

#[test]
fn a_missing_field_is_named() {
    let text = shipped().replace("phone = \"drop\"\n", "");
    let e = load(&text).unwrap_err().to_string();
    assert_eq!(
        e,
        "test.toml: [patient] phone: expected a rule for this field of the raw schema (DI), found none"
    );
}

#[test]
fn an_unknown_operation_is_named_with_its_line() {
    let text = shipped().replace("route = \"keep\"", "route = \"hush\"");
    let e = load(&text).unwrap_err().to_string();
    let line = line_of(&text, "route = \"hush\"");
    assert!(
        e.starts_with(&format!(
            "test.toml:{line}: [prescription] route: expected one of keep, keep_free_text"
        )),
        "{e}"
    );
    assert!(e.ends_with("found op \"hush\""), "{e}");
    // A keyed hash is for the event id only; the event id is never kept.
    let text = shipped().replace("route = \"keep\"", "route = \"hash\"");
    let e = load(&text).unwrap_err().to_string();
    assert!(
        e.contains("[prescription] route: op hash applies to [envelope] event_id only"),
        "{e}"
    );
    let text = shipped().replacen("event_id = \"hash\"", "event_id = \"keep\"", 1);
    let e = load(&text).unwrap_err().to_string();
    assert!(
        e.contains("[envelope] event_id: the hub's own record id joins the zone back"),
        "{e}"
    );
    // Every added column is declared; an unknown one is named.
    let text = shipped().replace("transformed_at = \"keep\"\n", "");
    let e = load(&text).unwrap_err().to_string();
    assert!(
        e.contains("[added] transformed_at: expected keep or drop"),
        "{e}"
    );
    let text = shipped().replace("transformed_at = \"keep\"", "transformed_at = \"day\"");
    let e = load(&text).unwrap_err().to_string();
    assert!(
        e.contains("[added] transformed_at: expected keep or drop, found \"day\""),
        "{e}"
    );
    // A vocabulary must exist.
    let text = shipped().replace("list = \"units\"", "list = \"unitz\"");
    let e = load(&text).unwrap_err().to_string();
    assert!(
        e.contains(
            "op vocabulary: list: expected one of qualitative_results, units, found \"unitz\""
        ),
        "{e}"
    );
}

#[test]
fn an_unknown_parameter_and_a_wrong_type_are_refused() {
    let text = shipped().replace(
        "{ op = \"age\", top_code = 90 }",
        "{ op = \"age\", top = 90 }",
    );
    let e = load(&text).unwrap_err().to_string();
    assert!(
        e.contains("op age: expected parameters top_code, found unknown parameter \"top\""),
        "{e}"
    );
    let text = shipped().replace(
        "test_name = \"drop_free_text\"",
        "test_name = { op = \"numeric\", top = 5 }",
    );
    let e = load(&text).unwrap_err().to_string();
    assert!(
        e.contains(
            "[lab_result] test_name: operation numeric does not apply to a field of type Str"
        ),
        "{e}"
    );
}

#[test]
fn a_direct_identifier_cannot_be_kept() {
    let text = shipped().replace("name_kanji = \"drop\"", "name_kanji = \"keep\"");
    let e = load(&text).unwrap_err().to_string();
    let line = line_of(&text, "name_kanji = \"keep\"");
    assert_eq!(
        e,
        format!(
            "test.toml:{line}: [patient] name_kanji: a direct identifier (DI in the raw schema) must be dropped or used for the pseudonym, found op keep"
        )
    );
}

#[test]
fn outputs_are_checked_against_the_table_schemas() {
    // Dropping a field whose column is required leaves the column without a source.
    let text = shipped().replace("encounter_class = \"keep\"", "encounter_class = \"drop\"");
    let e = compile(&text).unwrap_err().to_string();
    assert_eq!(
        e,
        "test.toml: column encounter_class of chitose.pseudo.Encounter is required, but no rule writes it"
    );
    // A date written to a column the table does not have.
    let text = shipped().replace(
        "outputs = { onset_month = \"month\" }",
        "outputs = { onset_year = \"year\" }",
    );
    let e = compile(&text).unwrap_err().to_string();
    let line = line_of(&text, "onset_year");
    assert_eq!(
        e,
        format!(
            "test.toml:{line}: [diagnosis] onset_date: writes column onset_year, which chitose.pseudo.Diagnosis does not have"
        )
    );
    // Keeping the onset date would write a date where the table has a month string.
    let text = shipped().replace(
        "outputs = { onset_month = \"month\" }",
        "outputs = { onset_month = \"day\" }",
    );
    let e = compile(&text).unwrap_err().to_string();
    assert!(
        e.contains(
            "writes column onset_month of chitose.pseudo.Diagnosis as Date, but the schema has Str"
        ),
        "{e}"
    );
    // The last linkage basis must always apply.
    let text = shipped().replace("\"kana_birth_sex\", \"hub_local\"]", "\"kana_birth_sex\"]");
    let e = load(&text).unwrap_err().to_string();
    assert!(e.contains("expected hub_local as the last basis"), "{e}");
}

#[test]
fn explain_lists_every_field_of_every_table_from_the_policy() {
    let store = SchemaStore::embedded();
    let raw = raw_leaves(&store);
    for (name, _) in SHIPPED {
        let p = Policy::load(name, &raw).unwrap();
        let plans = chitose_transform::plan::compile(&p, &raw, &store).unwrap();
        let md = chitose_transform::explain::explain(&p, &plans, &raw);
        for plan in &plans {
            assert!(md.contains(&format!(
                "## {} → health.pseudo.{}",
                plan.event_type.symbol(),
                plan.event_type.symbol()
            )));
            // Every output column appears in the table.
            for slot in &plan.slots {
                assert!(md.contains(&slot.name), "{name}: {} missing", slot.name);
            }
        }
        for leaf in &raw {
            assert!(
                md.contains(&format!("| {}", leaf.name))
                    || md.contains(&format!(".{} |", leaf.name)),
                "{}",
                leaf.name
            );
        }
        assert!(
            md.contains("| patient.name_kanji | DI | dropped | — |"),
            "{md}"
        );
    }
    // Changing the policy changes the explanation: it is not hand-written.
    let text = SHIPPED[0].1.replace(
        "height_cm = { op = \"numeric\", bottom = 130.0, top = 195.0 }",
        "height_cm = \"keep\"",
    );
    let p = Policy::parse("x", &text, &raw).unwrap();
    let plans = chitose_transform::plan::compile(&p, &raw, &store).unwrap();
    let md = chitose_transform::explain::explain(&p, &plans, &raw);
    assert!(
        md.contains("| height_cm | SA | kept as is | height_cm |"),
        "{md}"
    );
}

/// docs/privacy.md's table says, per profile, what happens to the columns
/// an attacker cares about; the compiled profiles must do exactly that.
#[test]
fn the_privacy_page_agrees_with_the_shipped_profiles() {
    use chitose_transform::policy::{GeoLevel, IcdLevel, Op};
    let page = include_str!("../../docs/privacy.md");
    let store = SchemaStore::embedded();
    let raw = raw_leaves(&store);
    let header = "| column | pseudonymized | pseudonymized-shifted |";
    let at = page.find(header).expect("the table");
    let rows: Vec<Vec<String>> = page[at..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect();
    assert!(rows.len() >= 12, "{rows:?}");
    for (i, profile) in ["pseudonymized", "pseudonymized-shifted"]
        .iter()
        .enumerate()
    {
        let p = Policy::load(profile, &raw).unwrap();
        let op = |field: &str| {
            &p.rules
                .iter()
                .find(|r| r.field == field)
                .unwrap_or_else(|| panic!("{field}"))
                .op
        };
        for row in &rows {
            let (column, says) = (row[0].as_str(), row[i + 1].as_str());
            let first = column.split(',').next().unwrap().trim().trim_matches('`');
            let ok = match (first, says) {
                ("event_id", "keyed hash") => *op("event_id") == Op::Hash,
                (c, "kept" | "dropped") => {
                    let kept = p
                        .added
                        .iter()
                        .find(|(n, _)| n == c)
                        .unwrap_or_else(|| panic!("{c}"))
                        .1;
                    kept == (says == "kept")
                }
                ("event_date", "exact") => {
                    matches!(op("occurred_at"), Op::Date { .. }) && p.max_shift_days == 0
                }
                ("event_date", s) if s.starts_with("shifted ±") => {
                    matches!(op("occurred_at"), Op::Date { shift: true, .. })
                        && s == format!("shifted ±{} days", p.max_shift_days)
                }
                ("age_at_event", "calendar year") => matches!(op("birth_date"), Op::Age { .. }),
                ("residence", "municipality") => {
                    *op("postal_code")
                        == Op::Residence {
                            level: GeoLevel::Municipality,
                        }
                }
                ("residence", "prefecture") => {
                    *op("postal_code")
                        == Op::Residence {
                            level: GeoLevel::Prefecture,
                        }
                }
                ("icd10", "full code") => {
                    *op("icd10_code")
                        == Op::Icd10 {
                            finest: IcdLevel::Code,
                        }
                }
                ("icd10", "3 characters") => {
                    *op("icd10_code")
                        == Op::Icd10 {
                            finest: IcdLevel::Category,
                        }
                }
                (c, "free text, dropped") => *op(c) == Op::DropFreeText,
                (c, s) if s.starts_with("vocabulary ") => {
                    *op(c)
                        == Op::Vocabulary {
                            list: s["vocabulary ".len()..].to_owned(),
                        }
                }
                (c, s) => panic!("docs/privacy.md: {c}: unknown statement {s:?}"),
            };
            assert!(
                ok,
                "docs/privacy.md says {column} is {says:?} in {profile}, the profile does otherwise"
            );
        }
        // And the explanation shows a risk wherever free text is kept.
        let plans = chitose_transform::plan::compile(&p, &raw, &store).unwrap();
        let md = chitose_transform::explain::explain(&p, &plans, &raw);
        assert_eq!(
            md.contains("RISK"),
            p.rules.iter().any(|r| r.op == Op::KeepFreeText),
            "{profile}"
        );
    }
}
