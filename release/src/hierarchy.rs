//! Generalization hierarchies and the dictionaries of values seen.
//!
//! Level 0 is the value as the lake holds it; each level above is coarser;
//! the last level says nothing (`*` for a quasi-identifier, null for a rare
//! value). A value's labels at every level are computed once, when the
//! value is first seen, and rows afterwards carry only its id.

use crate::spec::{Period, QiSpec, RareSpec};
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Int8Type, Int16Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use std::collections::HashMap;
use std::fmt::Write;

/// A fast, unkeyed hash (FxHash's multiply-rotate) for the release's
/// maps: their keys are lake values and ids, not attacker-chosen input,
/// and hashing every row of a table twice is most of an index pass.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fx(u64);

impl Fx {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits weak; hash tables use the high
        // ones for their tags and the low ones for buckets.
        self.0.rotate_left(26)
    }
}

/// A HashMap with [`Fx`].
pub type FxMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fx>>;
/// A HashSet with [`Fx`].
pub type FxSet<K> = std::collections::HashSet<K, std::hash::BuildHasherDefault<Fx>>;

/// What the top level of a quasi-identifier shows.
pub const ANY: &str = "*";

/// How one column generalizes.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Coarser columns of the same row, finest first.
    Ladder(Vec<String>),
    /// Age bands of these widths; ages at or above `top` form one band.
    Age {
        /// Widths, narrowest first.
        widths: Vec<u32>,
        /// Top-coding age.
        top: u32,
    },
    /// Calendar periods of a `YYYY-MM…` value.
    Periods(Vec<Period>),
    /// The value, then nothing.
    Flat,
}

/// A column, its hierarchy, and whether its top level is `*` (a
/// quasi-identifier) or null (a rare value that is suppressed).
#[derive(Debug, Clone, PartialEq)]
pub struct Hierarchy {
    /// The column.
    pub column: String,
    /// How it generalizes.
    pub kind: Kind,
    /// Top level shows `*` (true) or null (false).
    pub top_is_any: bool,
}

impl Hierarchy {
    /// A quasi-identifier's hierarchy from the spec.
    pub fn of_qi(q: &QiSpec) -> Hierarchy {
        let kind = if let Some(w) = &q.age_bands {
            Kind::Age {
                widths: w.clone(),
                top: q.top_age,
            }
        } else if let Some(p) = &q.periods {
            Kind::Periods(p.clone())
        } else if !q.ladder.is_empty() {
            Kind::Ladder(q.ladder.clone())
        } else {
            Kind::Flat
        };
        Hierarchy {
            column: q.column.clone(),
            kind,
            top_is_any: true,
        }
    }

    /// A rare-value rule's hierarchy from the spec.
    pub fn of_rare(r: &RareSpec) -> Hierarchy {
        Hierarchy {
            column: r.column.clone(),
            kind: if r.ladder.is_empty() {
                Kind::Flat
            } else {
                Kind::Ladder(r.ladder.clone())
            },
            top_is_any: false,
        }
    }

    /// A column audited as it is (no generalization).
    pub fn flat(column: &str) -> Hierarchy {
        Hierarchy {
            column: column.to_owned(),
            kind: Kind::Flat,
            top_is_any: true,
        }
    }

    /// Number of levels, the value and the top included.
    pub fn levels(&self) -> usize {
        2 + match &self.kind {
            Kind::Ladder(l) => l.len(),
            Kind::Age { widths, .. } => widths.len(),
            Kind::Periods(p) => p.len(),
            Kind::Flat => 0,
        }
    }

    /// What level `l` shows, for reports.
    pub fn level_name(&self, l: usize) -> String {
        if l + 1 == self.levels() {
            return if self.top_is_any {
                "* (suppressed)".into()
            } else {
                "suppressed".into()
            };
        }
        if l == 0 {
            return self.column.clone();
        }
        match &self.kind {
            Kind::Ladder(c) => c[l - 1].clone(),
            Kind::Age { widths, .. } => format!("{}-year bands", widths[l - 1]),
            Kind::Periods(p) => format!("{:?}", p[l - 1]).to_lowercase(),
            Kind::Flat => unreachable!("a flat hierarchy has two levels"),
        }
    }

    /// Columns a row's labels come from: the column, then its ladder.
    pub fn columns(&self) -> Vec<&str> {
        let mut v = vec![self.column.as_str()];
        if let Kind::Ladder(l) = &self.kind {
            v.extend(l.iter().map(String::as_str));
        }
        v
    }

    /// Labels at every level for one row's values (`values[i]` is
    /// `columns()[i]`, None when null).
    fn labels(&self, values: &[Option<&str>]) -> Vec<Option<String>> {
        let v0 = values[0];
        let mut out = vec![v0.map(str::to_owned)];
        match &self.kind {
            Kind::Ladder(_) => out.extend(values[1..].iter().map(|v| v.map(str::to_owned))),
            Kind::Age { widths, top } => {
                let age = v0.and_then(|v| v.parse::<i64>().ok());
                for w in widths {
                    out.push(age.map(|a| age_band(a, *w, *top)));
                }
            }
            Kind::Periods(ps) => {
                for p in ps {
                    out.push(v0.and_then(|v| period(v, *p)));
                }
            }
            Kind::Flat => {}
        }
        out.push(self.top_is_any.then(|| ANY.to_owned()));
        out
    }
}

/// `43` in bands of 10 → `40-49`; at or above the top-coding age → `90+`;
/// a band reaching the top starts the open band (`80+` for width 20).
pub fn age_band(age: i64, width: u32, top: u32) -> String {
    let (w, top) = (i64::from(width), i64::from(top));
    if age >= top {
        return format!("{top}+");
    }
    let lo = age.max(0) / w * w;
    if lo + w > top {
        format!("{lo}+")
    } else {
        format!("{lo}-{}", lo + w - 1)
    }
}

/// `2025-05` → `2025-Q2`, `2025-H1`, `2025`; None when not `YYYY-MM…`.
pub fn period(v: &str, p: Period) -> Option<String> {
    let (y, rest) = v.split_once('-')?;
    let m: u32 = rest.get(..2)?.parse().ok()?;
    if y.len() != 4 || !(1..=12).contains(&m) {
        return None;
    }
    Some(match p {
        Period::Quarter => format!("{y}-Q{}", (m - 1) / 3 + 1),
        Period::Half => format!("{y}-H{}", (m - 1) / 6 + 1),
        Period::Year => y.to_owned(),
    })
}

/// Where a hierarchy's columns are in a batch (None: not in this file's
/// schema version — read as null).
#[derive(Debug, Clone)]
pub struct Locator(Vec<Option<usize>>);

/// The values of one hierarchy seen so far, and their labels.
#[derive(Debug, Clone)]
pub struct Dict {
    /// The hierarchy.
    pub hierarchy: Hierarchy,
    ids: FxMap<String, u32>,
    /// `labels[id][level]`.
    labels: Vec<Vec<Option<String>>>,
}

// Separators in a dictionary key: a value never holds them (the transform
// writes printable text), and a null is told apart from "".
const SEP: char = '\u{0}';
const NULL: char = '\u{1}';

impl Dict {
    /// An empty dictionary.
    pub fn new(hierarchy: Hierarchy) -> Dict {
        Dict {
            hierarchy,
            ids: FxMap::default(),
            labels: Vec::new(),
        }
    }

    /// Where this hierarchy's columns are in `batch`.
    pub fn locate(&self, batch: &RecordBatch) -> Locator {
        let s = batch.schema();
        Locator(
            self.hierarchy
                .columns()
                .iter()
                .map(|c| s.index_of(c).ok())
                .collect(),
        )
    }

    /// The key of row `row` in `buf` (cleared first).
    pub fn key(&self, batch: &RecordBatch, at: &Locator, row: usize, buf: &mut String) {
        buf.clear();
        for (i, col) in at.0.iter().enumerate() {
            if i > 0 {
                buf.push(SEP);
            }
            match col {
                Some(c) if write_value(batch.column(*c), row, buf) => {}
                _ => buf.push(NULL),
            }
        }
    }

    /// The id of a key, adding it on first sight.
    pub fn intern(&mut self, key: &str) -> u32 {
        if let Some(id) = self.ids.get(key) {
            return *id;
        }
        let values: Vec<Option<&str>> = key
            .split(SEP)
            .map(|v| (v != NULL.to_string()).then_some(v))
            .collect();
        let id = self.labels.len() as u32;
        self.labels.push(self.hierarchy.labels(&values));
        self.ids.insert(key.to_owned(), id);
        id
    }

    /// The id of a key already seen.
    pub fn get(&self, key: &str) -> Option<u32> {
        self.ids.get(key).copied()
    }

    /// The label of value `id` at `level`.
    pub fn label(&self, id: u32, level: usize) -> Option<&str> {
        self.labels[id as usize][level].as_deref()
    }

    /// Values seen.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether no value was seen.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// For each value id, the id of its label at `level` (equal labels,
    /// equal ids).
    pub fn level_ids(&self, level: usize) -> Vec<u32> {
        let mut seen: FxMap<Option<&str>, u32> = FxMap::default();
        self.labels
            .iter()
            .map(|l| {
                let n = seen.len() as u32;
                *seen.entry(l[level].as_deref()).or_insert(n)
            })
            .collect()
    }
}

/// Appends the text form of `a[row]` to `buf`; false when null. Dates are
/// `YYYY-MM-DD`, numbers and booleans as Rust prints them.
pub fn write_value(a: &ArrayRef, row: usize, buf: &mut String) -> bool {
    if a.is_null(row) {
        return false;
    }
    let _ = match a.data_type() {
        DataType::Utf8 => {
            buf.push_str(a.as_string::<i32>().value(row));
            Ok(())
        }
        DataType::LargeUtf8 => {
            buf.push_str(a.as_string::<i64>().value(row));
            Ok(())
        }
        DataType::Utf8View => {
            buf.push_str(a.as_string_view().value(row));
            Ok(())
        }
        DataType::Int8 => write!(buf, "{}", a.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => write!(buf, "{}", a.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => write!(buf, "{}", a.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => write!(buf, "{}", a.as_primitive::<Int64Type>().value(row)),
        DataType::Boolean => write!(buf, "{}", a.as_boolean().value(row)),
        DataType::Date32 => {
            let d = a.as_primitive::<Date32Type>().value(row);
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163);
            match date {
                Some(d) => write!(buf, "{}", d.format("%Y-%m-%d")),
                None => write!(buf, "{d}"),
            }
        }
        other => write!(buf, "<{other}>"),
    };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_bands_respect_the_top_code() {
        assert_eq!(age_band(43, 5, 90), "40-44");
        assert_eq!(age_band(43, 10, 90), "40-49");
        assert_eq!(age_band(43, 20, 90), "40-59");
        assert_eq!(age_band(85, 20, 90), "80+");
        assert_eq!(age_band(90, 5, 90), "90+");
        assert_eq!(age_band(0, 5, 90), "0-4");
    }

    #[test]
    fn periods_of_a_month() {
        assert_eq!(period("2025-05", Period::Quarter).unwrap(), "2025-Q2");
        assert_eq!(period("2025-12-31", Period::Half).unwrap(), "2025-H2");
        assert_eq!(period("2025-01", Period::Year).unwrap(), "2025");
        assert_eq!(period("2025-13", Period::Year), None);
        assert_eq!(period("garbage", Period::Year), None);
    }

    #[test]
    fn a_ladder_reads_its_columns_and_ends_in_any() {
        let h = Hierarchy {
            column: "m".into(),
            kind: Kind::Ladder(vec!["p".into()]),
            top_is_any: true,
        };
        let mut d = Dict::new(h);
        let a = d.intern(&format!("27100{SEP}27"));
        let b = d.intern(&format!("{NULL}{SEP}27"));
        assert_ne!(a, b);
        assert_eq!(d.intern(&format!("27100{SEP}27")), a);
        assert_eq!(d.label(a, 0), Some("27100"));
        assert_eq!(d.label(b, 0), None);
        assert_eq!(d.label(b, 1), Some("27"));
        assert_eq!(d.label(b, 2), Some(ANY));
        assert_eq!(d.level_ids(1), vec![0, 0]);
        assert_eq!(d.level_ids(0), vec![0, 1]);
    }
}
