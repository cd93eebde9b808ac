//! The pure core: record batches in, an index of who is alike, a plan
//! (levels, suppressed classes, rare-value roll-ups), batches out. No I/O.
//!
//! The index holds one cell per distinct (quasi-identifier values, rare
//! values, patient), never the rows: a table larger than memory is read
//! twice, batch by batch — once to index, once to write — and only the
//! cells stay. Counts are of distinct patients: five diagnoses of one
//! person are one person in a class, not five.

use crate::hierarchy::{Dict, FxMap, FxSet, Hierarchy, Locator};
use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, BooleanArray, RecordBatch, new_null_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;

/// A core problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The patient column is missing or null.
    #[error("column {column}: expected a patient pseudonym in every row, found {found}")]
    Patient {
        /// Column.
        column: String,
        /// What was there.
        found: String,
    },
    /// A value not indexed in the first pass: the input changed between passes.
    #[error(
        "column {column}: expected a value the first pass indexed, found a new one (the input changed between passes)"
    )]
    Unindexed {
        /// Column.
        column: String,
    },
    /// No generalization satisfies k within the suppression budget.
    #[error(
        "expected a generalization with every class ≥ {k} patients suppressing at most {budget} of {rows} records, found none (the most general suppresses {best})"
    )]
    Infeasible {
        /// k.
        k: u32,
        /// Records allowed to be suppressed.
        budget: u64,
        /// Records.
        rows: u64,
        /// Fewest suppressed over all levels.
        best: u64,
    },
    /// Arrow refused a batch.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

/// Distinct (quasi-identifiers, rare values, patient) cells of a table.
#[derive(Debug)]
pub struct Index {
    /// Quasi-identifier dictionaries, in spec order.
    pub qis: Vec<Dict>,
    /// Rare-value dictionaries, in spec order.
    pub rares: Vec<Dict>,
    patient: Option<String>,
    /// Pseudonym hash → patient id. A 64-bit collision would merge two
    /// patients, which only makes classes look smaller (more suppression):
    /// it can never let a small class through.
    patients: FxMap<u64, u32>,
    hasher: std::hash::RandomState,
    /// cell (qi ids, rare ids, patient id) → records.
    cells: FxMap<Box<[u32]>, u64>,
    rows: u64,
}

/// Per-batch positions of the index's columns.
struct Located {
    qis: Vec<Locator>,
    rares: Vec<Locator>,
    patient: Option<usize>,
}

impl Index {
    /// An empty index; `patient` is the column naming the person (None:
    /// every record its own person).
    pub fn new(qis: Vec<Hierarchy>, rares: Vec<Hierarchy>, patient: Option<String>) -> Index {
        Index {
            qis: qis.into_iter().map(Dict::new).collect(),
            rares: rares.into_iter().map(Dict::new).collect(),
            patient,
            patients: FxMap::default(),
            hasher: std::hash::RandomState::new(),
            cells: FxMap::default(),
            rows: 0,
        }
    }

    /// Columns the index reads (a projection).
    pub fn columns(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .qis
            .iter()
            .chain(&self.rares)
            .flat_map(|d| d.hierarchy.columns())
            .map(str::to_owned)
            .chain(self.patient.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Records indexed.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Distinct patients.
    pub fn patients(&self) -> u64 {
        if self.patient.is_some() {
            self.patients.len() as u64
        } else {
            self.rows
        }
    }

    /// Cells held (the index's memory is about 60 bytes a cell, and twice
    /// that while a plan is searched).
    pub fn cells(&self) -> usize {
        self.cells.len()
    }

    fn locate(&self, batch: &RecordBatch) -> Result<Located, CoreError> {
        let patient = match &self.patient {
            None => None,
            Some(p) => Some(batch.schema().index_of(p).map_err(|_| CoreError::Patient {
                column: p.clone(),
                found: "no such column".into(),
            })?),
        };
        Ok(Located {
            qis: self.qis.iter().map(|d| d.locate(batch)).collect(),
            rares: self.rares.iter().map(|d| d.locate(batch)).collect(),
            patient,
        })
    }

    fn patient_of(
        &self,
        batch: &RecordBatch,
        at: &Located,
        row: usize,
        buf: &mut String,
    ) -> Result<(), CoreError> {
        buf.clear();
        if let Some(c) = at.patient
            && !crate::hierarchy::write_value(batch.column(c), row, buf)
        {
            return Err(CoreError::Patient {
                column: self.patient.clone().unwrap_or_default(),
                found: "null".into(),
            });
        }
        Ok(())
    }

    /// Indexes a batch.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), CoreError> {
        let at = self.locate(batch)?;
        let mut buf = String::new();
        let mut cell: Vec<u32> = Vec::with_capacity(self.qis.len() + self.rares.len() + 1);
        for row in 0..batch.num_rows() {
            cell.clear();
            for (d, l) in self.qis.iter_mut().zip(&at.qis) {
                d.key(batch, l, row, &mut buf);
                cell.push(d.intern(&buf));
            }
            for (d, l) in self.rares.iter_mut().zip(&at.rares) {
                d.key(batch, l, row, &mut buf);
                cell.push(d.intern(&buf));
            }
            let patient = if self.patient.is_some() {
                self.patient_of(batch, &at, row, &mut buf)?;
                let n = self.patients.len() as u32;
                let h = std::hash::BuildHasher::hash_one(&self.hasher, buf.as_str());
                *self.patients.entry(h).or_insert(n)
            } else {
                self.rows as u32
            };
            cell.push(patient);
            self.rows += 1;
            match self.cells.get_mut(cell.as_slice()) {
                Some(n) => *n += 1,
                None => {
                    self.cells.insert(cell.as_slice().into(), 1);
                }
            }
        }
        Ok(())
    }

    /// Class keys at `levels`: each quasi-identifier's label id, packed
    /// into one number (mixed radix), so classes sort instead of hashing.
    fn keys(&self, levels: &[usize]) -> Keys {
        let maps: Vec<Vec<u32>> = self
            .qis
            .iter()
            .zip(levels)
            .map(|(d, l)| d.level_ids(*l))
            .collect();
        let mut mult = Vec::with_capacity(maps.len());
        let mut m: u128 = 1;
        for map in &maps {
            mult.push(m);
            let labels = map.iter().max().map_or(1, |x| u128::from(*x) + 1);
            // 128 bits hold eight quasi-identifiers of 60 000 values each.
            m = m.checked_mul(labels).expect("class keys fit in 128 bits");
        }
        Keys { maps, mult }
    }

    /// Classes at `levels`, sorted by key: (key, distinct patients,
    /// records). Distinct patients come from sorting (class, patient) pairs
    /// — 32 bytes a cell — rather than from a set.
    fn classes(&self, keys: &Keys) -> Vec<(u128, u32, u64)> {
        let mut pairs: Vec<(u128, u32, u64)> = self
            .cells
            .iter()
            .map(|(cell, records)| (keys.of(cell), cell[cell.len() - 1], *records))
            .collect();
        pairs.sort_unstable_by_key(|(c, p, _)| (*c, *p));
        let mut out: Vec<(u128, u32, u64)> = Vec::new();
        let mut last_patient = None;
        for (c, p, r) in pairs {
            match out.last_mut() {
                Some(x) if x.0 == c => {
                    x.2 += r;
                    if last_patient != Some(p) {
                        x.1 += 1;
                    }
                }
                _ => out.push((c, 1, r)),
            }
            last_patient = Some(p);
        }
        out
    }

    /// Risk measures of the table at `levels`, leaving out classes below
    /// `suppress_below` patients (0: none left out); `k` counts the classes
    /// and records below it.
    pub fn risk(&self, levels: &[usize], suppress_below: u32, k: u32) -> Risk {
        let classes = self.classes(&self.keys(levels));
        Risk::of(
            classes
                .iter()
                .map(|(_, p, r)| (*p, *r))
                .filter(|(p, _)| *p >= suppress_below),
            k,
        )
    }

    /// Rare-value risk of rare rule `rule` with the quasi-identifiers at
    /// `levels`: (area, period, value) groups as they are, and those with
    /// fewer than `threshold` distinct patients (null values left out).
    pub fn rare_risk(
        &self,
        rule: usize,
        (area, period, threshold): (usize, usize, u32),
        levels: &[usize],
    ) -> RareRisk {
        let keys = self.keys(levels);
        let d = &self.rares[rule];
        let values = d.level_ids(0);
        let q = self.qis.len();
        let mut rows: Vec<(u32, u32, u32, u32, u64)> = self
            .cells
            .iter()
            .filter(|(cell, _)| d.label(cell[q + rule], 0).is_some())
            .map(|(cell, records)| {
                (
                    keys.maps[area][cell[area] as usize],
                    keys.maps[period][cell[period] as usize],
                    values[cell[q + rule] as usize],
                    cell[cell.len() - 1],
                    *records,
                )
            })
            .collect();
        rows.sort_unstable_by_key(|r| (r.0, r.1, r.2, r.3));
        let mut risk = RareRisk {
            column: d.hierarchy.column.clone(),
            threshold,
            ..RareRisk::default()
        };
        let mut i = 0;
        while i < rows.len() {
            let group = (rows[i].0, rows[i].1, rows[i].2);
            let (mut patients, mut records, mut last) = (0u32, 0u64, None);
            while i < rows.len() && (rows[i].0, rows[i].1, rows[i].2) == group {
                if last != Some(rows[i].3) {
                    patients += 1;
                    last = Some(rows[i].3);
                }
                records += rows[i].4;
                i += 1;
            }
            risk.groups += 1;
            if patients < threshold {
                risk.groups_below += 1;
                risk.records_below += records;
            }
        }
        risk
    }

    /// Finds the least general levels at which every class has at least
    /// `k` patients once classes below k are suppressed, suppressing at
    /// most `max_suppression` of the records. Ties in generalization go to
    /// fewer suppressed records.
    pub fn plan(&self, k: u32, max_suppression: f64) -> Result<Plan, CoreError> {
        let tops: Vec<usize> = self.qis.iter().map(|d| d.hierarchy.levels() - 1).collect();
        let mut nodes: Vec<Vec<usize>> = vec![vec![]];
        for t in &tops {
            nodes = nodes
                .into_iter()
                .flat_map(|n| {
                    (0..=*t).map(move |l| {
                        let mut m = n.clone();
                        m.push(l);
                        m
                    })
                })
                .collect();
        }
        let loss = |n: &[usize]| precision_loss(n, &tops);
        nodes.sort_by(|a, b| {
            loss(a)
                .total_cmp(&loss(b))
                .then(a.iter().sum::<usize>().cmp(&b.iter().sum()))
                .then(a.cmp(b))
        });
        let budget = (self.rows as f64 * max_suppression).floor() as u64;
        let mut best: Option<(Vec<usize>, u64, f64)> = None;
        let mut fewest = u64::MAX;
        let mut evaluated = 0;
        for n in &nodes {
            let l = loss(n);
            if let Some((_, _, bl)) = &best
                && l > *bl
            {
                break;
            }
            evaluated += 1;
            let suppressed: u64 = self
                .classes(&self.keys(n))
                .iter()
                .filter(|(_, p, _)| *p < k)
                .map(|(_, _, r)| r)
                .sum();
            fewest = fewest.min(suppressed);
            if suppressed <= budget && best.as_ref().is_none_or(|(_, s, _)| suppressed < *s) {
                best = Some((n.clone(), suppressed, l));
            }
        }
        let Some((levels, _, _)) = best else {
            return Err(CoreError::Infeasible {
                k,
                budget,
                rows: self.rows,
                best: fewest,
            });
        };
        let keys = self.keys(&levels);
        let classes = self.classes(&keys);
        let kept: FxSet<u128> = classes
            .iter()
            .filter(|(_, p, _)| *p >= k)
            .map(|(key, _, _)| *key)
            .collect();
        Ok(Plan {
            k,
            levels,
            keys,
            kept,
            classes,
            rare: Vec::new(),
            nodes: nodes.len(),
            evaluated,
        })
    }

    /// Decides rare-value roll-ups for `plan` (rules in the order of the
    /// index's rare dictionaries: area and period are quasi-identifier
    /// positions).
    pub fn plan_rare(&self, plan: &mut Plan, rules: &[(usize, usize, u32)]) {
        let q = self.qis.len();
        plan.rare.clear();
        for (r, (area, period, threshold)) in rules.iter().enumerate() {
            let d = &self.rares[r];
            let top = d.hierarchy.levels() - 1;
            let level_maps: Vec<Vec<u32>> = (0..top).map(|l| d.level_ids(l)).collect();
            // (area, period) → pending (value id, patient, records) of the
            // records the plan keeps.
            let mut groups: HashMap<(u32, u32), Vec<Pending>> = HashMap::new();
            let maps = &plan.keys.maps;
            let mut null_in_lake = 0u64;
            for (cell, records) in &self.cells {
                if !plan.kept.contains(&plan.keys.of(cell)) {
                    continue;
                }
                // A value null in the lake (a MEDIS-only diagnosis has no
                // ICD-10) is released null: counted with the suppressed,
                // never a group of its own.
                if d.label(cell[q + r], 0).is_none() {
                    null_in_lake += records;
                    continue;
                }
                let group = (
                    maps[*area][cell[*area] as usize],
                    maps[*period][cell[*period] as usize],
                );
                groups.entry(group).or_default().push((
                    cell[q + r],
                    cell[cell.len() - 1],
                    *records,
                ));
            }
            let mut decided = FxMap::default();
            let mut records_at = vec![0u64; top + 1];
            for ((a, p), mut pending) in groups {
                for (level, map) in level_maps.iter().enumerate() {
                    // Sorted by (label, patient): a label's distinct
                    // patients are the patient changes within its run.
                    pending.sort_unstable_by_key(|(v, patient, _)| (map[*v as usize], *patient));
                    let mut released = vec![false; pending.len()];
                    let mut start = 0;
                    while start < pending.len() {
                        let label = map[pending[start].0 as usize];
                        let mut end = start;
                        let mut patients = 0u32;
                        let mut last = None;
                        while end < pending.len() && map[pending[end].0 as usize] == label {
                            if last != Some(pending[end].1) {
                                patients += 1;
                                last = Some(pending[end].1);
                            }
                            end += 1;
                        }
                        if patients >= *threshold {
                            released[start..end].fill(true);
                        }
                        start = end;
                    }
                    let mut i = 0;
                    pending.retain(|(v, _, records)| {
                        let r = released[i];
                        i += 1;
                        if r {
                            decided.insert((a, p, *v), level as u8);
                            records_at[level] += records;
                        }
                        !r
                    });
                }
                records_at[top] += pending.iter().map(|(_, _, r)| r).sum::<u64>();
            }
            records_at[top] += null_in_lake;
            plan.rare.push(RarePlan {
                area: *area,
                period: *period,
                decided,
                records_at,
                null_in_lake,
            });
        }
    }

    fn lookup(
        &self,
        batch: &RecordBatch,
        at: &Located,
        row: usize,
        buf: &mut String,
        ids: &mut Vec<u32>,
    ) -> Result<(), CoreError> {
        ids.clear();
        for (d, l) in self
            .qis
            .iter()
            .zip(&at.qis)
            .chain(self.rares.iter().zip(&at.rares))
        {
            d.key(batch, l, row, buf);
            ids.push(d.get(buf).ok_or_else(|| CoreError::Unindexed {
                column: d.hierarchy.column.clone(),
            })?);
        }
        Ok(())
    }

    /// The released form of a batch: suppressed records left out,
    /// quasi-identifiers at the plan's levels, rare values rolled up or
    /// null, the pseudonym re-keyed, attributes as they are.
    pub fn apply(
        &self,
        plan: &Plan,
        out: &Output,
        batch: &RecordBatch,
    ) -> Result<RecordBatch, CoreError> {
        let at = self.locate(batch)?;
        let n = batch.num_rows();
        let q = self.qis.len();
        let mut keep = Vec::with_capacity(n);
        let mut qi_cols: Vec<StringBuilder> = (0..q).map(|_| StringBuilder::new()).collect();
        let mut rare_cols: Vec<(StringBuilder, StringBuilder)> = self
            .rares
            .iter()
            .map(|_| (StringBuilder::new(), StringBuilder::new()))
            .collect();
        let mut pseudonyms = StringBuilder::new();
        let level_names: Vec<Vec<String>> = self
            .rares
            .iter()
            .map(|d| {
                (0..d.hierarchy.levels())
                    .map(|l| d.hierarchy.level_name(l))
                    .collect()
            })
            .collect();
        let (mut buf, mut ids) = (String::new(), Vec::new());
        let mut rekeyed = String::new();
        for row in 0..n {
            self.lookup(batch, &at, row, &mut buf, &mut ids)?;
            let kept = plan.kept.contains(&plan.keys.of(&ids));
            keep.push(kept);
            if !kept {
                continue;
            }
            for (i, b) in qi_cols.iter_mut().enumerate() {
                b.append_option(self.qis[i].label(ids[i], plan.levels[i]));
            }
            for (r, (values, levels)) in rare_cols.iter_mut().enumerate() {
                let rp = &plan.rare[r];
                let v = ids[q + r];
                let d = &self.rares[r];
                let names = &level_names[r];
                let maps = &plan.keys.maps;
                let (a, p) = (
                    maps[rp.area][ids[rp.area] as usize],
                    maps[rp.period][ids[rp.period] as usize],
                );
                match rp.decided.get(&(a, p, v)) {
                    Some(l) => {
                        values.append_option(d.label(v, *l as usize));
                        levels.append_value(&names[*l as usize]);
                    }
                    None => {
                        values.append_null();
                        levels.append_value(&names[names.len() - 1]);
                    }
                }
            }
            if let Some(key) = &out.rekey {
                self.patient_of(batch, &at, row, &mut buf)?;
                key.rekey(&buf, &mut rekeyed);
                pseudonyms.append_value(&rekeyed);
            }
        }
        let mask = BooleanArray::from(keep);
        let kept_rows = mask.true_count();
        let mut columns: Vec<ArrayRef> = Vec::new();
        if out.rekey.is_some() {
            columns.push(Arc::new(pseudonyms.finish()));
        }
        columns.extend(qi_cols.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        for (values, levels) in &mut rare_cols {
            columns.push(Arc::new(values.finish()));
            columns.push(Arc::new(levels.finish()));
        }
        let s = batch.schema();
        for f in out.schema.fields().iter().skip(columns.len()) {
            let a = match s.index_of(f.name()) {
                Ok(i) => arrow_select::filter::filter(batch.column(i), &mask)?,
                Err(_) => new_null_array(f.data_type(), kept_rows),
            };
            columns.push(a);
        }
        Ok(RecordBatch::try_new(out.schema.clone(), columns)?)
    }
}

impl Plan {
    /// Risk of what the plan releases (classes of at least k patients).
    pub fn risk(&self) -> Risk {
        Risk::of(
            self.classes
                .iter()
                .map(|(_, p, r)| (*p, *r))
                .filter(|(p, _)| *p >= self.k),
            self.k,
        )
    }

    /// Σ records² over the released classes (the discernibility metric
    /// without its suppression term).
    pub fn discernibility(&self) -> u128 {
        self.classes
            .iter()
            .filter(|(_, p, _)| *p >= self.k)
            .map(|(_, _, r)| u128::from(*r) * u128::from(*r))
            .sum()
    }
}

/// Packs the quasi-identifier label ids of a cell (or row) into its class
/// key at a plan's levels.
#[derive(Debug)]
struct Keys {
    /// Per quasi-identifier: value id → label id at its level.
    maps: Vec<Vec<u32>>,
    mult: Vec<u128>,
}

impl Keys {
    /// The class key of `ids` (quasi-identifier value ids first).
    fn of(&self, ids: &[u32]) -> u128 {
        self.maps
            .iter()
            .zip(&self.mult)
            .enumerate()
            .map(|(i, (m, x))| u128::from(m[ids[i] as usize]) * x)
            .sum()
    }
}

/// A record group waiting for its rare-value decision: (value id, patient,
/// records).
type Pending = (u32, u32, u64);

/// A release key: HMAC-SHA256 of the lake pseudonym, base32 like the
/// stream zone's. Made fresh for each release and never written anywhere,
/// so no release links to the lake or to another release.
pub struct ReleaseKey(Hmac<Sha256>);

impl std::fmt::Debug for ReleaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReleaseKey(..)")
    }
}

impl ReleaseKey {
    /// A fresh random 256-bit key.
    pub fn fresh() -> ReleaseKey {
        use rand::RngCore;
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        ReleaseKey::from_bytes(&k)
    }

    /// A key from bytes (tests).
    pub fn from_bytes(k: &[u8]) -> ReleaseKey {
        ReleaseKey(Hmac::new_from_slice(k).expect("HMAC takes any key length"))
    }

    /// The release pseudonym of a lake pseudonym, into `out` (cleared).
    pub fn rekey(&self, pseudonym: &str, out: &mut String) {
        let mut m = self.0.clone();
        m.update(pseudonym.as_bytes());
        out.clear();
        chitose_schemas::base32::encode(&m.finalize().into_bytes(), out);
    }
}

/// What a released table holds: its schema and the key, if the pseudonym
/// is released.
#[derive(Debug)]
pub struct Output {
    /// Schema: pseudonym, quasi-identifiers, (rare value, its level) per
    /// rule, attributes.
    pub schema: SchemaRef,
    /// The release key, when the pseudonym is released.
    pub rekey: Option<ReleaseKey>,
}

impl Output {
    /// The output of `index` with `attributes` (name, lake type).
    pub fn new(
        index: &Index,
        attributes: &[(String, DataType)],
        rekey: Option<ReleaseKey>,
    ) -> Self {
        let mut fields = Vec::new();
        if rekey.is_some() {
            fields.push(Field::new("pseudonym", DataType::Utf8, false));
        }
        for d in &index.qis {
            fields.push(Field::new(&d.hierarchy.column, DataType::Utf8, true));
        }
        for d in &index.rares {
            fields.push(Field::new(&d.hierarchy.column, DataType::Utf8, true));
            fields.push(Field::new(
                format!("{}_level", d.hierarchy.column),
                DataType::Utf8,
                false,
            ));
        }
        for (name, t) in attributes {
            fields.push(Field::new(name, t.clone(), true));
        }
        Output {
            schema: Arc::new(Schema::new(fields)),
            rekey,
        }
    }
}

/// The generalization chosen for a table.
#[derive(Debug)]
pub struct Plan {
    /// k.
    pub k: u32,
    /// Level per quasi-identifier.
    pub levels: Vec<usize>,
    keys: Keys,
    kept: FxSet<u128>,
    /// The classes at `levels`: (key, patients, records).
    classes: Vec<(u128, u32, u64)>,
    /// Rare-value decisions, per rule.
    pub rare: Vec<RarePlan>,
    /// Generalization lattice size.
    pub nodes: usize,
    /// Nodes evaluated.
    pub evaluated: usize,
}

/// Rare-value decisions of one rule.
#[derive(Debug)]
pub struct RarePlan {
    area: usize,
    period: usize,
    /// (area label, period label, value id) → released level; absent: suppressed.
    decided: FxMap<(u32, u32, u32), u8>,
    /// Records released at each level (the last: suppressed, including
    /// the values null in the lake).
    pub records_at: Vec<u64>,
    /// Records whose value was null in the lake already.
    pub null_in_lake: u64,
}

/// Mean generalization height over the quasi-identifiers, 0 (as in the
/// lake) to 1 (all suppressed): the precision loss of Sweeney's Prec.
pub fn precision_loss(levels: &[usize], tops: &[usize]) -> f64 {
    if levels.is_empty() {
        return 0.0;
    }
    levels
        .iter()
        .zip(tops)
        .map(|(l, t)| *l as f64 / (*t).max(1) as f64)
        .sum::<f64>()
        / levels.len() as f64
}

/// Rare-value risk of one sensitive column: how many (area, period, value)
/// groups fewer than `threshold` patients share.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RareRisk {
    /// The column.
    pub column: String,
    /// Patients a group needs.
    pub threshold: u32,
    /// (area, period, value) groups, null values left out.
    pub groups: u64,
    /// Groups below the threshold.
    pub groups_below: u64,
    /// Records in them.
    pub records_below: u64,
}

/// Re-identification risk of a table over a set of quasi-identifiers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Risk {
    /// Records.
    pub records: u64,
    /// Equivalence classes.
    pub classes: u64,
    /// Smallest class, in patients (the k the data has).
    pub k: u32,
    /// Records in classes of one patient.
    pub unique_records: u64,
    /// Patients alone in a class.
    pub unique_patients: u64,
    /// Share of records in classes of one patient.
    pub uniqueness: f64,
    /// Records in classes below the k asked.
    pub records_below_k: u64,
    /// Classes below the k asked.
    pub classes_below_k: u64,
    /// Classes by size in patients: `1`, `2-4`, `5-9`, `10-99`, `100+`.
    pub class_sizes: Vec<(String, u64)>,
    /// Mean records per class.
    pub mean_class_records: f64,
}

impl Risk {
    fn of(classes: impl Iterator<Item = (u32, u64)>, k: u32) -> Risk {
        let mut r = Risk {
            k: u32::MAX,
            ..Risk::default()
        };
        const BUCKETS: [&str; 5] = ["1", "2-4", "5-9", "10-99", "100+"];
        r.class_sizes = BUCKETS.iter().map(|b| (b.to_string(), 0)).collect();
        for (patients, records) in classes {
            r.records += records;
            r.classes += 1;
            r.k = r.k.min(patients);
            if patients == 1 {
                r.unique_records += records;
                r.unique_patients += 1;
            }
            if patients < k {
                r.records_below_k += records;
                r.classes_below_k += 1;
            }
            let bucket = match patients {
                0..=1 => 0,
                2..=4 => 1,
                5..=9 => 2,
                10..=99 => 3,
                _ => 4,
            };
            r.class_sizes[bucket].1 += 1;
        }
        if r.classes == 0 {
            r.k = 0;
        } else {
            r.uniqueness = r.unique_records as f64 / r.records as f64;
            r.mean_class_records = r.records as f64 / r.classes as f64;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hierarchy::Kind;
    use crate::spec::Period;
    use arrow_array::{Int32Array, StringArray};
    use rand::{Rng, SeedableRng};
    use std::collections::HashSet;

    fn qis() -> Vec<Hierarchy> {
        vec![
            Hierarchy {
                column: "age".into(),
                kind: Kind::Age {
                    widths: vec![5, 10, 20],
                    top: 90,
                },
                top_is_any: true,
            },
            Hierarchy::flat("sex"),
            Hierarchy {
                column: "muni".into(),
                kind: Kind::Ladder(vec!["pref".into()]),
                top_is_any: true,
            },
            Hierarchy {
                column: "month".into(),
                kind: Kind::Periods(vec![Period::Quarter, Period::Year]),
                top_is_any: true,
            },
        ]
    }

    fn rare() -> Hierarchy {
        Hierarchy {
            column: "code".into(),
            kind: Kind::Ladder(vec!["block".into()]),
            top_is_any: false,
        }
    }

    /// Random records: (patient, age, sex, municipality, month, code) with
    /// a skew, so some classes are small.
    fn batch(seed: u64, rows: usize) -> RecordBatch {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut cols: [Vec<String>; 7] = Default::default();
        let mut ages = Vec::new();
        for _ in 0..rows {
            let p = rng.random_range(0..rows / 3);
            cols[0].push(format!("p{p}"));
            ages.push(20 + (p % 60) as i32);
            cols[1].push(["male", "female"][p % 2].into());
            let pref = ["27", "26"][p % 2];
            cols[2].push(format!(
                "{pref}{:03}",
                rng.random_range(0..8) * rng.random_range(0..3)
            ));
            cols[3].push(pref.into());
            cols[4].push(format!("2025-{:02}", rng.random_range(1..=12)));
            let block = rng.random_range(0..4);
            cols[5].push(format!(
                "B{block}.{}",
                rng.random_range(0..(2 + block * 10))
            ));
            cols[6].push(format!("B{block}"));
        }
        let s = |i: usize| Arc::new(StringArray::from(cols[i].clone())) as ArrayRef;
        RecordBatch::try_from_iter([
            ("pseudonym", s(0)),
            ("age", Arc::new(Int32Array::from(ages)) as ArrayRef),
            ("sex", s(1)),
            ("muni", s(2)),
            ("pref", s(3)),
            ("month", s(4)),
            ("code", s(5)),
            ("block", s(6)),
            ("extra", s(4)),
        ])
        .unwrap()
    }

    /// k, counted afresh from the released batch: distinct pseudonyms per
    /// combination of quasi-identifier values.
    fn recount(out: &RecordBatch, names: &[&str]) -> HashMap<Vec<Option<String>>, HashSet<String>> {
        let mut m: HashMap<Vec<Option<String>>, HashSet<String>> = HashMap::new();
        let col = |n: &str| out.column_by_name(n).unwrap().clone();
        let p = col("pseudonym");
        for row in 0..out.num_rows() {
            let key = names
                .iter()
                .map(|n| {
                    let mut s = String::new();
                    crate::hierarchy::write_value(&col(n), row, &mut s).then_some(s)
                })
                .collect();
            let mut s = String::new();
            crate::hierarchy::write_value(&p, row, &mut s);
            m.entry(key).or_default().insert(s);
        }
        m
    }

    #[test]
    fn every_released_class_holds_k_and_the_counts_reconcile() {
        let mut rolled = 0;
        for seed in 0..5 {
            let b = batch(seed, 3000);
            let mut ix = Index::new(qis(), vec![rare()], Some("pseudonym".into()));
            // Two batches, as files would come.
            ix.add(&b.slice(0, 1000)).unwrap();
            ix.add(&b.slice(1000, 2000)).unwrap();
            let before = ix.risk(&[0, 0, 0, 0], 0, 5);
            assert!(before.unique_records > 0, "the data must start risky");
            let mut plan = ix.plan(5, 0.05).unwrap();
            ix.plan_rare(&mut plan, &[(2, 3, 3)]);
            let out = Output::new(
                &ix,
                &[("extra".into(), DataType::Utf8)],
                Some(ReleaseKey::fresh()),
            );
            let a = ix.apply(&plan, &out, &b.slice(0, 1000)).unwrap();
            let c = ix.apply(&plan, &out, &b.slice(1000, 2000)).unwrap();
            let released = arrow_select::concat::concat_batches(&out.schema, [&a, &c]).unwrap();
            let classes = recount(&released, &["age", "sex", "muni", "month"]);
            assert!(classes.values().all(|p| p.len() >= 5), "seed {seed}");
            let after = plan.risk();
            assert_eq!(after, ix.risk(&plan.levels, 5, 5));
            let rare_before = ix.rare_risk(0, (2, 3, 3), &[0, 0, 0, 0]);
            assert!(rare_before.groups_below > 0 && rare_before.records_below > 0);
            assert_eq!(after.records, released.num_rows() as u64);
            assert_eq!(after.classes, classes.len() as u64);
            assert!(after.k >= 5);
            let suppressed = 3000 - released.num_rows() as u64;
            assert!(suppressed <= 150, "within the budget: {suppressed}");
            assert_eq!(before.records, 3000);
            // Rare values: every released (area, period, value) has ≥ 3
            // patients; counts per level add up to the records released.
            let rare = recount(&released, &["muni", "month", "code"]);
            for (k, p) in &rare {
                assert!(k[2].is_none() || p.len() >= 3, "{k:?} has {}", p.len());
            }
            assert_eq!(
                plan.rare[0].records_at.iter().sum::<u64>(),
                released.num_rows() as u64
            );
            let nulls = released.column_by_name("code").unwrap().null_count() as u64;
            assert_eq!(nulls, *plan.rare[0].records_at.last().unwrap());
            rolled += plan.rare[0].records_at[1..].iter().sum::<u64>();
        }
        assert!(
            rolled > 0,
            "the data must make the rare rule roll values up"
        );
    }

    #[test]
    fn the_least_general_node_wins_and_k_too_high_is_refused() {
        let b = batch(9, 600);
        let mut ix = Index::new(qis(), vec![], Some("pseudonym".into()));
        ix.add(&b).unwrap();
        let plan = ix.plan(2, 0.5).unwrap();
        let tops = [4, 2, 2, 3];
        let chosen = precision_loss(&plan.levels, &tops);
        // No node with less loss keeps suppression in budget.
        let budget = 300;
        for a in 0..=4 {
            for s in 0..=2 {
                for m in 0..=2 {
                    for t in 0..=3 {
                        let n = [a, s, m, t];
                        if precision_loss(&n, &tops) < chosen - 1e-12 {
                            let r = ix.risk(&n, 0, 2);
                            assert!(r.records_below_k > budget, "{n:?} was better");
                        }
                    }
                }
            }
        }
        let e = ix.plan(1000, 0.0).unwrap_err().to_string();
        assert!(e.contains("every class ≥ 1000 patients"), "{e}");
    }

    #[test]
    fn patients_not_records_make_a_class() {
        // One patient with five records is a class of one.
        let s = |v: Vec<&str>| Arc::new(StringArray::from(v)) as ArrayRef;
        let b = RecordBatch::try_from_iter([
            ("pseudonym", s(vec!["a", "a", "a", "a", "a", "b", "c"])),
            ("sex", s(vec!["m", "m", "m", "m", "m", "f", "f"])),
        ])
        .unwrap();
        let mut ix = Index::new(
            vec![Hierarchy::flat("sex")],
            vec![],
            Some("pseudonym".into()),
        );
        ix.add(&b).unwrap();
        let r = ix.risk(&[0], 0, 2);
        assert_eq!((r.k, r.unique_records, r.unique_patients), (1, 5, 1));
        assert_eq!(r.records_below_k, 5);
        let plan = ix.plan(2, 0.0).unwrap();
        assert_eq!(plan.levels, vec![1], "only * keeps everyone");
    }

    #[test]
    fn rekeying_is_consistent_within_a_key_and_differs_across_keys() {
        let (a, b) = (ReleaseKey::fresh(), ReleaseKey::fresh());
        let (mut x, mut y, mut z) = (String::new(), String::new(), String::new());
        a.rekey("p1", &mut x);
        a.rekey("p1", &mut y);
        b.rekey("p1", &mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_ne!(x, "p1");
        assert_eq!(x.len(), 52);
    }
}
