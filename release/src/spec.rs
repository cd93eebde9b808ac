//! The release spec (a TOML file) and its checks against the lake tables'
//! contract.
//!
//! What leaves the lake is an allow-list: the quasi-identifiers named in
//! `qi` (generalized), the rare-value columns named in `rare` (rolled up),
//! the `attributes` (sensitive attributes, as they are) and, when asked, a
//! re-keyed `pseudonym`. Every other column is dropped. The classes come
//! from the `.avsc` docs (DI, QI, SA, OP), so the privacy officer's
//! classification — not this code — decides what an attribute may be.

use arrow_schema::DataType;
use chitose_lake::tables::{TableSchemas, lake_schema, table_of};
use chitose_schemas::catalog::SchemaStore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A spec the lake cannot release.
#[derive(Debug, thiserror::Error)]
#[error("release spec {file}: {message}")]
pub struct SpecError {
    /// Where the spec came from.
    pub file: String,
    /// What was expected and what was found.
    pub message: String,
}

/// A release spec.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Every equivalence class (records alike on all quasi-identifiers) must
    /// hold at least k patients.
    pub k: u32,
    /// Share of a table's records the generalization search may suppress
    /// (drop) to reach k; more general levels are chosen until it fits.
    #[serde(default = "default_max_suppression")]
    pub max_suppression: f64,
    /// The tables to release.
    #[serde(rename = "table")]
    pub tables: Vec<TableSpec>,
}

fn default_max_suppression() -> f64 {
    0.05
}

/// One table of a release.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// Lake table (`diagnosis`, `lab_result`, …).
    pub name: String,
    /// Release a pseudonym re-keyed with this release's key (one per
    /// person: a person's records stay linked within the release, never to
    /// the lake or another release). Needs `recipient`: linked records are
    /// a trajectory, for a named, contracted recipient only.
    #[serde(default)]
    pub pseudonym: bool,
    /// The named, contracted recipient a linked (pseudonym) release is for.
    pub recipient: Option<String>,
    /// Sensitive attributes released as they are.
    #[serde(default)]
    pub attributes: Vec<String>,
    /// Attributes held to ℓ-diversity: every released group has at least
    /// `l` distinct values of each.
    #[serde(default)]
    pub sensitive: Vec<String>,
    /// Distinct values each `sensitive` attribute needs per group.
    pub l: Option<u32>,
    /// At most this many records per person (the first in snapshot order).
    pub max_records_per_person: Option<u32>,
    /// Quasi-identifiers and their hierarchies.
    pub qi: Vec<QiSpec>,
    /// Rare-value rules.
    #[serde(default)]
    pub rare: Vec<RareSpec>,
}

/// A quasi-identifier and how it generalizes. At most one of `ladder`,
/// `age_bands`, `periods`; none means the value, then suppressed (`*`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QiSpec {
    /// The column.
    pub column: String,
    /// Coarser columns of the same table, finest first
    /// (`residence_municipality_code` → `["residence_prefecture"]`).
    #[serde(default)]
    pub ladder: Vec<String>,
    /// Widths of age bands over an integer age, narrowest first
    /// (`[5, 10, 20]`); ages at or above `top_age` stay one band.
    pub age_bands: Option<Vec<u32>>,
    /// The age the contract top-codes at (90: `90+`).
    #[serde(default = "default_top_age")]
    pub top_age: u32,
    /// Coarser periods of a `YYYY-MM` (or `YYYY-MM-DD`) column.
    pub periods: Option<Vec<Period>>,
}

fn default_top_age() -> u32 {
    90
}

/// A calendar period a month generalizes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// `2025-Q2`.
    Quarter,
    /// `2025-H1`.
    Half,
    /// `2025`.
    Year,
}

/// A rare-value rule: within each class (every quasi-identifier as
/// released), a value held by fewer than `threshold` people (and never
/// fewer than k) is rolled up the ladder until its group is big enough, or
/// suppressed (null) at the top. The released value is part of the class:
/// whoever knows one value of the target finds at least k people.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RareSpec {
    /// The sensitive column (`icd10_code`).
    pub column: String,
    /// Coarser columns, finest first (`["icd10_3char", "icd10_block", "icd10_chapter"]`).
    #[serde(default)]
    pub ladder: Vec<String>,
    /// No longer used (values are counted within the whole class); refused
    /// with a message saying so.
    #[serde(default, skip_serializing)]
    pub area: Option<String>,
    /// No longer used, as `area`.
    #[serde(default, skip_serializing)]
    pub period: Option<String>,
    /// Fewest people a released value may have in its class.
    pub threshold: u32,
}

/// A column's contract: class and Arrow type.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// DI, QI, SA or OP (first word of the `.avsc` doc).
    pub class: String,
    /// What else the class says: `code` (a code: leaves only through a
    /// rare rule), `text` (free text: never), `public` (can be public
    /// knowledge, like a death: a rare rule or a qi, never a plain
    /// attribute), `(derived)`.
    pub tag: String,
    /// Arrow type in the lake.
    pub data_type: DataType,
}

/// A lake table's columns, from its newest schema version.
#[derive(Debug, Clone)]
pub struct Contract {
    /// Table.
    pub table: String,
    /// Column → contract.
    pub columns: BTreeMap<String, Column>,
}

impl Contract {
    /// The contract of a lake table, if the schema store has it: columns
    /// and types as the lake holds them (every version's columns).
    pub fn of(store: &SchemaStore, schemas: &TableSchemas, table: &str) -> Option<Contract> {
        let arrow = lake_schema(schemas.get(table)?)?;
        let name = store.names().find(|n| table_of(n) == table)?;
        let latest = store.latest(name)?;
        let mut class = BTreeMap::new();
        if let apache_avro::Schema::Record(r) = &latest.schema {
            for f in &r.fields {
                let (c, _) = chitose_schemas::docs::field_class(f.doc.as_deref().unwrap_or(""));
                let (word, tag) = c.split_once(' ').unwrap_or((c, ""));
                class.insert(f.name.clone(), (word.to_owned(), tag.trim().to_owned()));
            }
        }
        let columns = arrow
            .fields()
            .iter()
            .map(|f| {
                let (class, tag) = class.get(f.name()).cloned().unwrap_or_default();
                let c = Column {
                    class,
                    tag,
                    data_type: f.data_type().clone(),
                };
                (f.name().clone(), c)
            })
            .collect();
        Some(Contract {
            table: table.to_owned(),
            columns,
        })
    }
}

impl Spec {
    /// Parses a spec; `file` names it in errors (with the line).
    pub fn parse(text: &str, file: &str) -> Result<Spec, SpecError> {
        toml::from_str(text).map_err(|e| SpecError {
            file: file.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }

    /// Checks the spec against the tables' contracts; `contract` looks a
    /// table up.
    pub fn check(
        &self,
        file: &str,
        contract: impl Fn(&str) -> Option<Contract>,
    ) -> Result<Vec<Contract>, SpecError> {
        let err = |message: String| SpecError {
            file: file.to_owned(),
            message,
        };
        if self.k < 2 {
            return Err(err(format!("k: expected 2 or more, found {}", self.k)));
        }
        if !(0.0..1.0).contains(&self.max_suppression) {
            return Err(err(format!(
                "max_suppression: expected a share in [0, 1), found {}",
                self.max_suppression
            )));
        }
        if self.tables.is_empty() {
            return Err(err("expected at least one [[table]], found none".into()));
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for t in &self.tables {
            if !seen.insert(&t.name) {
                return Err(err(format!("table {}: expected once, found twice", t.name)));
            }
            let c = contract(&t.name).ok_or_else(|| {
                err(format!(
                    "table {}: expected a lake table, found no schema for it",
                    t.name
                ))
            })?;
            t.check(&c)
                .map_err(|m| err(format!("table {}: {m}", t.name)))?;
            out.push(c);
        }
        Ok(out)
    }
}

impl TableSpec {
    fn check(&self, c: &Contract) -> Result<(), String> {
        let col = |name: &str, what: &str| -> Result<&Column, String> {
            c.columns
                .get(name)
                .ok_or_else(|| format!("{what} {name}: expected a column of the table, found none"))
        };
        let not_link = |name: &str, what: &str| -> Result<&Column, String> {
            let k = col(name, what)?;
            match k.class.as_str() {
                "OP" | "DI" => Err(format!(
                    "{what} {name}: expected a QI or SA column, found class {} (never released)",
                    k.class
                )),
                _ if k.tag == "text" => Err(format!(
                    "{what} {name}: expected a coded or bounded value, found free text \
                     ({} text: it can carry a name, a place, anything; never released)",
                    k.class
                )),
                _ => Ok(k),
            }
        };
        if self.qi.is_empty() {
            return Err("qi: expected at least one quasi-identifier, found none".into());
        }
        // Every column a hierarchy uses: none of them may also leave as an
        // attribute (it would undo the generalization).
        let mut used: BTreeSet<&str> = BTreeSet::new();
        for q in &self.qi {
            let k = not_link(&q.column, "qi")?;
            let kinds = [
                !q.ladder.is_empty(),
                q.age_bands.is_some(),
                q.periods.is_some(),
            ];
            if kinds.iter().filter(|x| **x).count() > 1 {
                return Err(format!(
                    "qi {}: expected at most one of ladder, age_bands, periods, found several",
                    q.column
                ));
            }
            if let Some(w) = &q.age_bands {
                if !matches!(
                    k.data_type,
                    DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
                ) {
                    return Err(format!(
                        "qi {}: age_bands expected an integer column, found {}",
                        q.column, k.data_type
                    ));
                }
                if w.is_empty() || w.contains(&0) || w.windows(2).any(|p| p[1] <= p[0]) {
                    return Err(format!(
                        "qi {}: age_bands expected widening widths above 0, found {w:?}",
                        q.column
                    ));
                }
            }
            if q.periods.is_some() && k.data_type != DataType::Utf8 {
                return Err(format!(
                    "qi {}: periods expected a YYYY-MM text column, found {}",
                    q.column, k.data_type
                ));
            }
            for l in &q.ladder {
                not_link(l, &format!("qi {} ladder", q.column))?;
            }
            if !used.insert(&q.column) {
                return Err(format!("qi {}: expected once, found twice", q.column));
            }
            used.extend(q.ladder.iter().map(String::as_str));
        }
        let qi_names: BTreeSet<&str> = self.qi.iter().map(|q| q.column.as_str()).collect();
        for r in &self.rare {
            not_link(&r.column, "rare")?;
            if qi_names.contains(r.column.as_str()) {
                return Err(format!(
                    "rare {}: expected a sensitive column, found it among the qi",
                    r.column
                ));
            }
            for l in &r.ladder {
                not_link(l, &format!("rare {} ladder", r.column))?;
            }
            if r.area.is_some() || r.period.is_some() {
                return Err(format!(
                    "rare {}: area and period are no longer used: a value is counted within \
                     its whole class (every qi as released), which holds an area and a \
                     period and more; remove them",
                    r.column
                ));
            }
            if r.threshold < 2 {
                return Err(format!(
                    "rare {}: threshold expected 2 or more, found {}",
                    r.column, r.threshold
                ));
            }
            if !used.insert(&r.column) {
                return Err(format!("rare {}: expected once, found twice", r.column));
            }
            used.extend(r.ladder.iter().map(String::as_str));
        }
        let families: BTreeSet<&str> = used.iter().map(|u| family(u)).collect();
        for a in &self.attributes {
            let k = col(a, "attribute")?;
            if k.class != "SA" {
                return Err(format!(
                    "attribute {a}: expected a sensitive attribute (SA), found class {}; \
                     a QI leaves only through qi, with a hierarchy",
                    if k.class.is_empty() { "none" } else { &k.class }
                ));
            }
            not_link(a, "attribute")?;
            match k.tag.as_str() {
                "public" => {
                    return Err(format!(
                        "attribute {a}: expected a value an attacker cannot know, found one that \
                         can be public knowledge (SA public: a death is published); release it \
                         through a [[table.rare]] rule or a qi, so it is part of the class"
                    ));
                }
                "code" => {
                    return Err(format!(
                        "attribute {a}: expected a bounded value, found a code (SA code) with no \
                         rare rule; a code leaves only through a [[table.rare]] rule, which rolls \
                         rare codes up within their class"
                    ));
                }
                _ => {}
            }
            if used.contains(a.as_str()) || families.contains(family(a)) {
                return Err(format!(
                    "attribute {a}: expected a column outside the hierarchies, found it \
                     shares the {}_ family of a generalized column",
                    family(a)
                ));
            }
            if a == "pseudonym" {
                return Err(
                    "attribute pseudonym: set pseudonym = true to release it re-keyed".into(),
                );
            }
        }
        for s in &self.sensitive {
            if !self.attributes.contains(s) {
                return Err(format!(
                    "sensitive {s}: expected one of the attributes, found it is not released"
                ));
            }
        }
        match (self.sensitive.is_empty(), self.l) {
            (true, Some(_)) => {
                return Err(
                    "l: expected sensitive = [attributes] to hold to it, found none".into(),
                );
            }
            (false, None) => {
                return Err(
                    "sensitive: expected l = <distinct values per group>, found none".into(),
                );
            }
            (false, Some(l)) if l < 2 => {
                return Err(format!("l: expected 2 or more, found {l}"));
            }
            _ => {}
        }
        if self.max_records_per_person == Some(0) {
            return Err("max_records_per_person: expected 1 or more, found 0".into());
        }
        if self.pseudonym {
            col("pseudonym", "pseudonym")?;
            if self
                .recipient
                .as_deref()
                .is_none_or(|r| r.trim().is_empty())
            {
                return Err(
                    "pseudonym = true: expected recipient = \"<the named, contracted \
                            recipient>\", found none; linked records are a trajectory (every \
                            diagnosis of one person follows from finding one), so a linked \
                            release is never open data"
                        .into(),
                );
            }
        } else if self.recipient.is_some() {
            return Err(
                "recipient: expected pseudonym = true (a recipient is named only for a \
                        linked release), found pseudonym = false"
                    .into(),
            );
        }
        Ok(())
    }

    /// The quasi-identifier columns, in spec order.
    pub fn qi_columns(&self) -> Vec<String> {
        self.qi.iter().map(|q| q.column.clone()).collect()
    }

    /// The rare rules as (column, threshold).
    pub fn rare_rules(&self) -> Vec<(String, u32)> {
        self.rare
            .iter()
            .map(|r| (r.column.clone(), r.threshold))
            .collect()
    }

    /// Columns this release leaves out of the table, with their class.
    pub fn dropped(&self, c: &Contract) -> Vec<(String, String)> {
        let kept: BTreeSet<&str> = self
            .qi
            .iter()
            .map(|q| q.column.as_str())
            .chain(self.rare.iter().map(|r| r.column.as_str()))
            .chain(self.attributes.iter().map(String::as_str))
            .chain(self.pseudonym.then_some("pseudonym"))
            .collect();
        c.columns
            .iter()
            .filter(|(n, _)| !kept.contains(n.as_str()))
            .map(|(n, k)| (n.clone(), k.class.clone()))
            .collect()
    }
}

/// `icd10_block_name` → `icd10`: columns of one family are views of one
/// value at different grains.
fn family(column: &str) -> &str {
    column.split('_').next().unwrap_or(column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract() -> Contract {
        let store = SchemaStore::embedded();
        let schemas = chitose_lake::tables::versions(&store);
        Contract::of(&store, &schemas, "diagnosis").unwrap()
    }

    /// The shipped example: the tests keep it valid.
    const GOOD: &str = include_str!("../specs/example.toml");

    fn check(text: &str) -> Result<(), String> {
        let spec = Spec::parse(text, "spec.toml").map_err(|e| e.to_string())?;
        let store = SchemaStore::embedded();
        let schemas = chitose_lake::tables::versions(&store);
        spec.check("spec.toml", |t| Contract::of(&store, &schemas, t))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn classes_come_from_the_contract() {
        let c = contract();
        assert_eq!(c.columns["event_id"].class, "OP");
        assert_eq!(c.columns["pseudonym"].class, "DI");
        assert_eq!(c.columns["age_at_event"].class, "QI");
        assert_eq!(c.columns["icd10_code"].class, "SA");
        assert_eq!(c.columns["icd10_code"].tag, "code");
        assert_eq!(c.columns["outcome"].tag, "public");
        assert_eq!(c.columns["is_primary"].tag, "");
    }

    #[test]
    fn a_good_spec_passes_and_drops_every_link_code() {
        check(GOOD).unwrap();
        let spec = Spec::parse(GOOD, "s").unwrap();
        let dropped: Vec<String> = spec.tables[0]
            .dropped(&contract())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for link in [
            "event_id",
            "pseudonym_key_id",
            "source_topic",
            "source_partition",
            "source_offset",
            "transformed_at",
            "event_date",
            "birth_year",
            "icd10_block_name",
        ] {
            assert!(dropped.contains(&link.to_owned()), "{link} kept");
        }
        assert!(!dropped.contains(&"outcome".to_owned()));
        assert!(dropped.contains(&"linkage_pseudonyms".to_owned()));
        assert!(
            dropped.contains(&"pseudonym".to_owned()),
            "strict by default"
        );
        // A linked release for a named recipient, with ℓ and a cap.
        let linked = GOOD.replacen(
            r#"name = "diagnosis""#,
            r#"name = "diagnosis"
pseudonym = true
recipient = "Univ. X, contract 2026-17"
sensitive = ["is_suspected"]
l = 2
max_records_per_person = 20"#,
            1,
        );
        check(&linked).unwrap();
    }

    #[test]
    fn each_mistake_is_named() {
        let cases: &[(&str, &str, &str)] = &[
            ("k = 5", "k = 1", "k: expected 2 or more, found 1"),
            (
                r#"attributes = ["days_supply", "route"]"#,
                r#"attributes = ["drug_class_name"]"#,
                "table prescription: attribute drug_class_name: expected a column outside the hierarchies",
            ),
            (
                r#"attributes = ["is_primary", "is_suspected"]"#,
                r#"attributes = ["source_offset"]"#,
                "attribute source_offset: expected a sensitive attribute (SA), found class OP",
            ),
            (
                r#"attributes = ["is_primary", "is_suspected"]"#,
                r#"attributes = ["event_date"]"#,
                "attribute event_date: expected a sensitive attribute (SA), found class QI",
            ),
            (
                r#"attributes = ["is_primary", "is_suspected"]"#,
                r#"attributes = ["icd10_block_name"]"#,
                "attribute icd10_block_name: expected a column outside the hierarchies",
            ),
            (
                r#"column = "sex""#,
                r#"column = "event_id""#,
                "qi event_id: expected a QI or SA column, found class OP",
            ),
            (
                r#"column = "sex""#,
                r#"column = "sexx""#,
                "qi sexx: expected a column of the table, found none",
            ),
            (
                "age_bands = [5, 10, 20]",
                "age_bands = [10, 5]",
                "age_bands expected widening widths",
            ),
            (
                r#"periods = ["quarter", "year"]"#,
                r#"periods = ["decade"]"#,
                "unknown variant `decade`",
            ),
            (
                "threshold = 5",
                "threshold = 5\narea = \"residence_municipality_code\"",
                "area and period are no longer used",
            ),
            (
                r#"attributes = ["is_primary", "is_suspected"]"#,
                r#"attributes = ["is_primary", "outcome"]"#,
                "attribute outcome: expected a value an attacker cannot know, found one that can be public knowledge",
            ),
            (
                r#"attributes = ["is_primary", "is_suspected"]"#,
                r#"attributes = ["medis_disease_code"]"#,
                "attribute medis_disease_code: expected a bounded value, found a code (SA code) with no rare rule",
            ),
            (
                r#"attributes = ["days_supply", "route"]"#,
                r#"attributes = ["drug_name"]"#,
                "attribute drug_name: expected a coded or bounded value, found free text",
            ),
            (
                r#"name = "diagnosis""#,
                "name = \"diagnosis\"\npseudonym = true",
                "pseudonym = true: expected recipient = ",
            ),
            (
                r#"name = "diagnosis""#,
                "name = \"diagnosis\"\nrecipient = \"Univ. X\"",
                "recipient: expected pseudonym = true",
            ),
            (
                r#"name = "diagnosis""#,
                "name = \"diagnosis\"\nsensitive = [\"is_primary\"]",
                "sensitive: expected l = <distinct values per group>, found none",
            ),
            (
                r#"name = "diagnosis""#,
                "name = \"diagnosis\"\nsensitive = [\"route\"]\nl = 2",
                "sensitive route: expected one of the attributes",
            ),
            (
                "threshold = 5",
                "threshold = 5\ncolour = 1",
                "unknown field `colour`",
            ),
            (
                r#"name = "diagnosis""#,
                r#"name = "diagnoses""#,
                "table diagnoses: expected a lake table",
            ),
        ];
        for (from, to, want) in cases {
            assert!(GOOD.contains(from), "{from}");
            let got = check(&GOOD.replacen(from, to, 1)).unwrap_err();
            assert!(got.contains(want), "{to}: {got}");
            assert!(got.starts_with("release spec spec.toml: "), "{got}");
        }
    }
}
