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
    /// Release a pseudonym re-keyed with this release's key (records of a
    /// patient stay linked within the release, never to the lake or another
    /// release).
    #[serde(default)]
    pub pseudonym: bool,
    /// Sensitive attributes released as they are.
    #[serde(default)]
    pub attributes: Vec<String>,
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

/// A rare-value rule: in each area and period, a value held by fewer than
/// `threshold` patients is rolled up the ladder until its group is big
/// enough, or suppressed (null) at the top.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RareSpec {
    /// The sensitive column (`icd10_code`).
    pub column: String,
    /// Coarser columns, finest first (`["icd10_3char", "icd10_block", "icd10_chapter"]`).
    #[serde(default)]
    pub ladder: Vec<String>,
    /// The area: one of the table's `qi` columns (counted as released).
    pub area: String,
    /// The period: one of the table's `qi` columns (counted as released).
    pub period: String,
    /// Fewest patients a released value may have in an area and period.
    pub threshold: u32,
}

/// A column's contract: class and Arrow type.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// DI, QI, SA or OP (first word of the `.avsc` doc).
    pub class: String,
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
                let word = c.split_whitespace().next().unwrap_or("").to_owned();
                class.insert(f.name.clone(), word);
            }
        }
        let columns = arrow
            .fields()
            .iter()
            .map(|f| {
                let c = Column {
                    class: class.get(f.name()).cloned().unwrap_or_default(),
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
            for (what, a) in [("area", &r.area), ("period", &r.period)] {
                if !qi_names.contains(a.as_str()) {
                    return Err(format!(
                        "rare {}: {what} expected one of the qi columns, found {a}",
                        r.column
                    ));
                }
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
        if self.pseudonym {
            col("pseudonym", "pseudonym")?;
        }
        Ok(())
    }

    /// The quasi-identifier columns, in spec order.
    pub fn qi_columns(&self) -> Vec<String> {
        self.qi.iter().map(|q| q.column.clone()).collect()
    }

    /// The rare rules as (column, area, period, threshold).
    pub fn rare_rules(&self) -> Vec<(String, String, String, u32)> {
        self.rare
            .iter()
            .map(|r| {
                (
                    r.column.clone(),
                    r.area.clone(),
                    r.period.clone(),
                    r.threshold,
                )
            })
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
                r#"attributes = ["is_primary", "is_suspected", "outcome"]"#,
                r#"attributes = ["source_offset"]"#,
                "attribute source_offset: expected a sensitive attribute (SA), found class OP",
            ),
            (
                r#"attributes = ["is_primary", "is_suspected", "outcome"]"#,
                r#"attributes = ["event_date"]"#,
                "attribute event_date: expected a sensitive attribute (SA), found class QI",
            ),
            (
                r#"attributes = ["is_primary", "is_suspected", "outcome"]"#,
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
                r#"area = "residence_municipality_code""#,
                r#"area = "facility_prefecture""#,
                "area expected one of the qi columns, found facility_prefecture",
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
