//! The pure core: record batches in, an index of who is alike, a plan
//! (levels, rare-value roll-ups, suppressed groups), batches out. No I/O.
//!
//! The index holds one cell per distinct (quasi-identifier values, rare
//! values, sensitive values, person), never the rows: a table larger than
//! memory is read twice, batch by batch — once to index, once to write —
//! and only the cells stay. Counts are of distinct **people**: five
//! diagnoses of one person are one person in a group, and so are the
//! records of one person under three pseudonyms ([`crate::people`]).
//!
//! What an attacker may know of a target is the quasi-identifiers and any
//! one released value of a rare rule (a diagnosis, a death): so a group is
//! the quasi-identifiers at the plan's levels **and** every rare column at
//! its released level, and every released group holds at least k people.

use crate::hierarchy::{Dict, FxMap, Hierarchy, Locator, write_value};
use crate::people::People;
use crate::spill::Cells;
use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, BooleanArray, RecordBatch, new_null_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::hash::{Hash, Hasher};
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
        "expected a generalization with every group ≥ {k} people suppressing at most {budget} of {rows} records, found none (the best suppresses {best})"
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
    /// The index's spill files (local, under TMPDIR).
    #[error("index spill files: {0}")]
    Spill(#[from] std::io::Error),
}

/// Who a record belongs to.
#[derive(Debug, Clone)]
pub enum Who {
    /// Each record is its own person (nothing names people: the weakest
    /// reading, used for a release without pseudonyms).
    Records,
    /// Distinct values of a column (a release's re-keyed pseudonym).
    Column(String),
    /// The lake's `pseudonym`, joined into people across linkage bases,
    /// insurance changes and key eras.
    People(Arc<People>),
}

/// Distinct (quasi-identifiers, rare values, sensitive values, person)
/// cells of a table.
#[derive(Debug)]
pub struct Index {
    /// Quasi-identifier dictionaries, in spec order.
    pub qis: Vec<Dict>,
    /// Rare-value dictionaries, in spec order.
    pub rares: Vec<Dict>,
    /// Sensitive attributes (ℓ-diversity), in spec order.
    pub sensitive: Vec<Dict>,
    who: Who,
    /// At most this many records per person (the rest are left out, the
    /// same ones in both passes: the first in snapshot order).
    cap: Option<u32>,
    /// Column value hash → id ([`Who::Column`]).
    local: FxMap<u64, u32>,
    hasher: std::hash::RandomState,
    /// Records indexed per person (for the cap).
    per_person: FxMap<u32, u32>,
    /// Lake pseudonyms seen, and the people they are.
    pseudonyms: FxMap<u32, u32>,
    /// cell (qi ids, rare ids, sensitive ids, person) → records, in memory
    /// up to a budget, spilled beyond it.
    cells: Cells,
    rows: u64,
    capped: u64,
}

/// Per-batch positions of the index's columns.
struct Located {
    qis: Vec<Locator>,
    rares: Vec<Locator>,
    sensitive: Vec<Locator>,
    patient: Option<usize>,
}

/// State of one pass over a table (the cap's counts; in the writing pass
/// the released rows' fingerprint per person).
#[derive(Debug, Default)]
pub struct Pass {
    per_person: FxMap<u32, u32>,
    /// Person → (sum of released row hashes, rows): the multiset of a
    /// person's released rows, for trajectory uniqueness.
    trajectories: FxMap<u32, (u64, u32)>,
}

impl Pass {
    /// People released, and those whose set of released rows no one else
    /// has (found by anyone who knows a few of their events).
    pub fn trajectories(&self) -> (u64, u64) {
        let mut seen: FxMap<(u64, u32), u32> = FxMap::default();
        for t in self.trajectories.values() {
            *seen.entry(*t).or_default() += 1;
        }
        let unique = self.trajectories.values().filter(|t| seen[*t] == 1).count();
        (self.trajectories.len() as u64, unique as u64)
    }
}

impl Index {
    /// An empty index. `cap`: at most that many records per person.
    pub fn new(
        qis: Vec<Hierarchy>,
        rares: Vec<Hierarchy>,
        sensitive: Vec<Hierarchy>,
        who: Who,
        cap: Option<u32>,
    ) -> Index {
        let width = qis.len() + rares.len() + sensitive.len() + 1;
        Index {
            qis: qis.into_iter().map(Dict::new).collect(),
            rares: rares.into_iter().map(Dict::new).collect(),
            sensitive: sensitive.into_iter().map(Dict::new).collect(),
            who,
            cap,
            local: FxMap::default(),
            hasher: std::hash::RandomState::new(),
            per_person: FxMap::default(),
            pseudonyms: FxMap::default(),
            cells: Cells::new(width, usize::MAX),
            rows: 0,
            capped: 0,
        }
    }

    /// At most `bytes` of cells in memory; the rest spill to local files
    /// and each plan is counted bucket by bucket (a bucket holds whole
    /// classes). Set before the first [`Index::add`].
    pub fn memory(mut self, bytes: usize) -> Index {
        self.cells = Cells::new(self.cells.width(), bytes);
        self
    }

    /// Whether cells were spilled.
    pub fn spilled(&self) -> bool {
        self.cells.spilled()
    }

    fn patient_column(&self) -> Option<&str> {
        match &self.who {
            Who::Records => None,
            Who::Column(c) => Some(c),
            Who::People(_) => Some(crate::people::PSEUDONYM),
        }
    }

    /// Columns the index reads (a projection).
    pub fn columns(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .qis
            .iter()
            .chain(&self.rares)
            .chain(&self.sensitive)
            .flat_map(|d| d.hierarchy.columns())
            .map(str::to_owned)
            .chain(self.patient_column().map(str::to_owned))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Records indexed (after the cap).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Records left out by the cap of records per person.
    pub fn capped(&self) -> u64 {
        self.capped
    }

    /// Distinct people.
    pub fn patients(&self) -> u64 {
        match &self.who {
            Who::Records => self.rows,
            Who::Column(_) => self.local.len() as u64,
            Who::People(_) => {
                let mut v: Vec<u32> = self.pseudonyms.values().copied().collect();
                v.sort_unstable();
                v.dedup();
                v.len() as u64
            }
        }
    }

    /// Distinct lake pseudonyms (equal to [`Index::patients`] unless people
    /// are joined).
    pub fn pseudonyms(&self) -> u64 {
        match &self.who {
            Who::People(_) => self.pseudonyms.len() as u64,
            _ => self.patients(),
        }
    }

    /// Cells held (the index's memory is about 70 bytes a cell, and twice
    /// that while a plan is searched; beyond the budget they spill).
    pub fn cells(&self) -> usize {
        self.cells.len() as usize
    }

    /// Runs `f` on every bucket of whole classes at `keys`: all cells at
    /// once when nothing spilled, else the cells partitioned on disk, one
    /// bucket in memory at a time.
    fn buckets<T>(
        &self,
        keys: &Keys,
        f: impl FnMut(&[(&[u32], u64)]) -> T,
    ) -> Result<Vec<T>, CoreError> {
        self.buckets_in(self.cells.in_memory().as_deref(), keys, f)
    }

    /// [`Index::buckets`] with the in-memory cells already listed (`mem`:
    /// None when they spilled), so a search lists them once, not per node.
    fn buckets_in<T>(
        &self,
        mem: Option<&[(&[u32], u64)]>,
        keys: &Keys,
        mut f: impl FnMut(&[(&[u32], u64)]) -> T,
    ) -> Result<Vec<T>, CoreError> {
        if let Some(cells) = mem {
            return Ok(vec![f(cells)]);
        }
        // A bucket, loaded and sorted, costs about three times its cells'
        // bytes; aim at a third of the budget.
        let per = (self.cells.width() * 4 + 32) * 3;
        let n = (self.cells.len() as usize * per)
            .div_ceil((self.cells.budget() / 3).max(1))
            .max(1);
        let parts = self.cells.partition(n, |c| keys.of(c))?;
        let mut out = Vec::with_capacity(n);
        for i in 0..parts.len() {
            let loaded = parts.load(i)?;
            out.push(f(&loaded.cells()));
        }
        Ok(out)
    }

    fn locate(&self, batch: &RecordBatch) -> Result<Located, CoreError> {
        let patient = match self.patient_column() {
            None => None,
            Some(p) => Some(batch.schema().index_of(p).map_err(|_| CoreError::Patient {
                column: p.to_owned(),
                found: "no such column".into(),
            })?),
        };
        Ok(Located {
            qis: self.qis.iter().map(|d| d.locate(batch)).collect(),
            rares: self.rares.iter().map(|d| d.locate(batch)).collect(),
            sensitive: self.sensitive.iter().map(|d| d.locate(batch)).collect(),
            patient,
        })
    }

    /// The person of a row; `intern` adds a new column value (pass one).
    fn person(
        &mut self,
        batch: &RecordBatch,
        at: &Located,
        row: usize,
        buf: &mut String,
    ) -> Result<u32, CoreError> {
        let Some(c) = at.patient else {
            return Ok(self.rows as u32);
        };
        buf.clear();
        if !write_value(batch.column(c), row, buf) {
            return Err(CoreError::Patient {
                column: self.patient_column().unwrap_or_default().to_owned(),
                found: "null".into(),
            });
        }
        match &self.who {
            Who::People(people) => {
                let (id, person) = people.lookup(buf).ok_or_else(|| CoreError::Patient {
                    column: crate::people::PSEUDONYM.into(),
                    found: "a pseudonym the people pass did not see (the snapshot changed)".into(),
                })?;
                self.pseudonyms.insert(id, person);
                Ok(person)
            }
            _ => {
                let n = self.local.len() as u32;
                let h = std::hash::BuildHasher::hash_one(&self.hasher, buf.as_str());
                Ok(*self.local.entry(h).or_insert(n))
            }
        }
    }

    /// The person of a row in pass two (no new values).
    fn person_of(
        &self,
        batch: &RecordBatch,
        at: &Located,
        row: usize,
        buf: &mut String,
    ) -> Result<Option<u32>, CoreError> {
        let Some(c) = at.patient else {
            return Ok(None);
        };
        buf.clear();
        if !write_value(batch.column(c), row, buf) {
            return Err(CoreError::Patient {
                column: self.patient_column().unwrap_or_default().to_owned(),
                found: "null".into(),
            });
        }
        Ok(match &self.who {
            Who::People(people) => people.lookup(buf).map(|(_, p)| p),
            _ => self
                .local
                .get(&std::hash::BuildHasher::hash_one(
                    &self.hasher,
                    buf.as_str(),
                ))
                .copied(),
        })
    }

    /// Whether the cap lets one more record of `person` through.
    fn within_cap(cap: Option<u32>, counts: &mut FxMap<u32, u32>, person: u32) -> bool {
        let Some(cap) = cap else {
            return true;
        };
        let n = counts.entry(person).or_default();
        if *n >= cap {
            return false;
        }
        *n += 1;
        true
    }

    /// Indexes a batch.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), CoreError> {
        let at = self.locate(batch)?;
        let mut buf = String::new();
        let width = self.qis.len() + self.rares.len() + self.sensitive.len() + 1;
        let mut cell: Vec<u32> = Vec::with_capacity(width);
        for row in 0..batch.num_rows() {
            let person = self.person(batch, &at, row, &mut buf)?;
            if at.patient.is_some() && !Self::within_cap(self.cap, &mut self.per_person, person) {
                self.capped += 1;
                continue;
            }
            cell.clear();
            for (d, l) in self
                .qis
                .iter_mut()
                .zip(&at.qis)
                .chain(self.rares.iter_mut().zip(&at.rares))
                .chain(self.sensitive.iter_mut().zip(&at.sensitive))
            {
                d.key(batch, l, row, &mut buf);
                cell.push(d.intern(&buf));
            }
            cell.push(person);
            self.rows += 1;
            self.cells.add(&cell, 1)?;
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

    /// Risk measures of the table at `levels` over the quasi-identifiers,
    /// leaving out classes below `suppress_below` people (0: none left
    /// out); `k` counts the classes and records below it.
    pub fn risk(&self, levels: &[usize], suppress_below: u32, k: u32) -> Result<Risk, CoreError> {
        let keys = self.keys(levels);
        let parts = self.buckets(&keys, |cells| {
            Risk::of(
                classes(cells, &keys)
                    .iter()
                    .map(|(_, p, r)| (*p, *r))
                    .filter(|(p, _)| *p >= suppress_below),
                k,
            )
        })?;
        Ok(Risk::combine(parts))
    }

    /// Risk over the quasi-identifiers at `levels` and every rare column as
    /// it is: what an attacker who knows one of the target's values sees.
    pub fn risk_with_rares(&self, levels: &[usize], k: u32) -> Result<Risk, CoreError> {
        let keys = self.keys(levels);
        let q = self.qis.len();
        let r = self.rares.len();
        let parts = self.buckets(&keys, |cells| {
            let mut dense: FxMap<(u128, &[u32]), u32> = FxMap::default();
            let mut pairs: Vec<(u128, u32, u64)> = cells
                .iter()
                .map(|(cell, records)| {
                    let n = dense.len() as u32;
                    let g = *dense.entry((keys.of(cell), &cell[q..q + r])).or_insert(n);
                    (u128::from(g), cell[cell.len() - 1], *records)
                })
                .collect();
            pairs.sort_unstable_by_key(|(c, p, _)| (*c, *p));
            Risk::of(count_groups(pairs).iter().map(|(_, p, r)| (*p, *r)), k)
        })?;
        Ok(Risk::combine(parts))
    }

    /// Rare-value risk of rare rule `rule` with the quasi-identifiers at
    /// `levels`: (class, value) groups, and those with fewer than
    /// `threshold` distinct people (null values left out).
    pub fn rare_risk(
        &self,
        rule: usize,
        threshold: u32,
        levels: &[usize],
    ) -> Result<RareRisk, CoreError> {
        let keys = self.keys(levels);
        let d = &self.rares[rule];
        let q = self.qis.len();
        let mut risk = RareRisk {
            column: d.hierarchy.column.clone(),
            threshold,
            ..RareRisk::default()
        };
        for (groups, below, records_below) in self.buckets(&keys, |cells| {
            let mut rows: Vec<(u128, u32, u32, u64)> = cells
                .iter()
                .filter(|(cell, _)| d.label(cell[q + rule], 0).is_some())
                .map(|(cell, records)| {
                    (
                        keys.of(cell),
                        cell[q + rule],
                        cell[cell.len() - 1],
                        *records,
                    )
                })
                .collect();
            rows.sort_unstable_by_key(|r| (r.0, r.1, r.2));
            let (mut groups, mut below, mut records_below) = (0u64, 0u64, 0u64);
            let mut i = 0;
            while i < rows.len() {
                let group = (rows[i].0, rows[i].1);
                let (mut people, mut records, mut last) = (0u32, 0u64, None);
                while i < rows.len() && (rows[i].0, rows[i].1) == group {
                    if last != Some(rows[i].2) {
                        people += 1;
                        last = Some(rows[i].2);
                    }
                    records += rows[i].3;
                    i += 1;
                }
                groups += 1;
                if people < threshold {
                    below += 1;
                    records_below += records;
                }
            }
            (groups, below, records_below)
        })? {
            risk.groups += groups;
            risk.groups_below += below;
            risk.records_below += records_below;
        }
        Ok(risk)
    }

    /// Finds the least general levels at which, once classes below k are
    /// suppressed, rare values are rolled up within each class and the
    /// groups still below k (or below ℓ distinct values of a sensitive
    /// attribute) are suppressed, at most `max_suppression` of the records
    /// are suppressed. Ties in generalization go to fewer suppressed
    /// records. `thresholds` per rare rule; `ell` for the sensitive
    /// attributes.
    pub fn plan(
        &self,
        k: u32,
        max_suppression: f64,
        thresholds: &[u32],
        ell: Option<u32>,
    ) -> Result<Plan, CoreError> {
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
        let mem = self.cells.in_memory();
        let in_memory = mem.is_some();
        let mut best: Option<(Plan, f64)> = None;
        let mut fewest = u64::MAX;
        let mut evaluated = 0;
        for n in &nodes {
            let l = loss(n);
            if let Some((_, bl)) = &best
                && l > *bl
            {
                break;
            }
            evaluated += 1;
            let keys = self.keys(n);
            let by_k: u64 = self
                .buckets_in(mem.as_deref(), &keys, |cells| {
                    classes(cells, &keys)
                        .iter()
                        .filter(|(_, p, _)| *p < k)
                        .map(|(_, _, r)| r)
                        .sum::<u64>()
                })?
                .into_iter()
                .sum();
            if by_k > budget {
                fewest = fewest.min(by_k);
                continue;
            }
            let mut released = None;
            let mut stats = Stats::default();
            for d in self.buckets_in(mem.as_deref(), &keys, |cells| {
                self.decide(cells, &keys, k, thresholds, ell, in_memory)
            })? {
                stats.merge(d.stats);
                released = Some(d.released);
            }
            let plan = Plan {
                k,
                ell,
                levels: n.clone(),
                thresholds: thresholds.to_vec(),
                released: if in_memory { released } else { None },
                stats,
                nodes: 0,
                evaluated: 0,
            };
            let total = plan.suppressed();
            fewest = fewest.min(total);
            if total <= budget && best.as_ref().is_none_or(|(b, _)| total < b.suppressed()) {
                best = Some((plan, l));
            }
        }
        let Some((mut plan, _)) = best else {
            return Err(CoreError::Infeasible {
                k,
                budget,
                rows: self.rows,
                best: fewest,
            });
        };
        plan.nodes = nodes.len();
        plan.evaluated = evaluated;
        Ok(plan)
    }

    /// The full plan at one node: classes below k suppressed; each rare
    /// rule, in order, rolled up within (class, labels of the rules before
    /// it) until a label has ≥ max(threshold, k) people, else null; then
    /// every group (class, every rare label) below k people, or below ℓ
    /// distinct values of a sensitive attribute, suppressed.
    ///
    /// `cells` hold whole classes (all of them, or one bucket); with
    /// `map`, the decision for every released row key is kept.
    fn decide(
        &self,
        cells: &[(&[u32], u64)],
        keys: &Keys,
        k: u32,
        thresholds: &[u32],
        ell: Option<u32>,
        map: bool,
    ) -> Decision {
        let classes = classes(cells, keys);
        let q = self.qis.len();
        let r_count = self.rares.len();
        let kept: FxMap<u128, u32> = classes
            .iter()
            .filter(|(_, p, _)| *p >= k)
            .enumerate()
            .map(|(i, (key, _, _))| (*key, i as u32))
            .collect();
        let suppressed_k: u64 = classes
            .iter()
            .filter(|(_, p, _)| *p < k)
            .map(|(_, _, r)| r)
            .sum();
        // Cells of kept classes: their group, and each rule's decided level.
        let mut entries: Vec<usize> = Vec::new();
        let mut group: Vec<u32> = Vec::new();
        for (i, (cell, _)) in cells.iter().enumerate() {
            if let Some(g) = kept.get(&keys.of(cell)) {
                entries.push(i);
                group.push(*g);
            }
        }
        let mut decided: Vec<u8> = vec![0; entries.len() * r_count];
        for (r, threshold) in thresholds.iter().enumerate().take(r_count) {
            let d = &self.rares[r];
            let top = d.hierarchy.levels() - 1;
            let thr = (*threshold).max(k);
            let labels: Vec<Vec<Option<u32>>> = (0..top).map(|l| level_ids_opt(d, l)).collect();
            // Entries sorted by group: each group rolls up alone.
            let mut order: Vec<usize> = (0..entries.len()).collect();
            order.sort_unstable_by_key(|e| group[*e]);
            let mut next: FxMap<(u32, u8, u32), u32> = FxMap::default();
            let mut new_group = vec![0u32; entries.len()];
            let mut start = 0;
            while start < order.len() {
                let g = group[order[start]];
                let mut end = start;
                while end < order.len() && group[order[end]] == g {
                    end += 1;
                }
                // (entry, value id, person)
                let mut pending: Vec<(usize, u32, u32)> = order[start..end]
                    .iter()
                    .map(|e| {
                        let cell = cells[entries[*e]].0;
                        (*e, cell[q + r], cell[cell.len() - 1])
                    })
                    .collect();
                // A value null in the lake (a MEDIS-only diagnosis has no
                // ICD-10) is released null, never a label of its own.
                pending.retain(|(e, v, _)| {
                    let null = d.label(*v, 0).is_none();
                    if null {
                        decided[e * r_count + r] = top as u8;
                    }
                    !null
                });
                for (level, map) in labels.iter().enumerate() {
                    pending.sort_unstable_by_key(|(_, v, p)| (map[*v as usize], *p));
                    let mut released = vec![false; pending.len()];
                    let mut s = 0;
                    while s < pending.len() {
                        let label = map[pending[s].1 as usize];
                        let mut e = s;
                        let (mut people, mut last) = (0u32, None);
                        while e < pending.len() && map[pending[e].1 as usize] == label {
                            if last != Some(pending[e].2) {
                                people += 1;
                                last = Some(pending[e].2);
                            }
                            e += 1;
                        }
                        if label.is_some() && people >= thr {
                            released[s..e].fill(true);
                        }
                        s = e;
                    }
                    let mut i = 0;
                    pending.retain(|(e, _, _)| {
                        let done = released[i];
                        i += 1;
                        if done {
                            decided[e * r_count + r] = level as u8;
                        }
                        !done
                    });
                }
                for (e, _, _) in pending {
                    decided[e * r_count + r] = top as u8;
                }
                for e in &order[start..end] {
                    let level = decided[e * r_count + r];
                    let cell = cells[entries[*e]].0;
                    let label = if usize::from(level) == top {
                        u32::MAX
                    } else {
                        labels[usize::from(level)][cell[q + r] as usize].unwrap_or(u32::MAX)
                    };
                    let n = next.len() as u32;
                    new_group[*e] = *next.entry((g, level, label)).or_insert(n);
                }
                start = end;
            }
            group = new_group;
        }
        // Groups: people, records, and distinct sensitive values.
        let groups_n = group.iter().max().map_or(0, |g| *g as usize + 1);
        let mut pairs: Vec<(u32, u32, u64)> = entries
            .iter()
            .zip(&group)
            .map(|(e, g)| {
                let (cell, records) = cells[*e];
                (*g, cell[cell.len() - 1], records)
            })
            .collect();
        pairs.sort_unstable_by_key(|(g, p, _)| (*g, *p));
        let mut people = vec![0u32; groups_n];
        let mut records = vec![0u64; groups_n];
        let mut last = None;
        for (g, p, r) in pairs {
            if last != Some((g, p)) {
                people[g as usize] += 1;
                last = Some((g, p));
            }
            records[g as usize] += r;
        }
        let mut diverse = vec![true; groups_n];
        // Distinct values of each sensitive attribute per group.
        let mut distincts: Vec<Vec<u32>> = Vec::new();
        if let Some(ell) = ell {
            let s0 = q + r_count;
            for (s, d) in self.sensitive.iter().enumerate() {
                let mut vals: Vec<(u32, u32)> = entries
                    .iter()
                    .zip(&group)
                    .map(|(e, g)| (*g, cells[*e].0[s0 + s]))
                    .filter(|(_, v)| d.label(*v, 0).is_some())
                    .collect();
                vals.sort_unstable();
                vals.dedup();
                let mut distinct = vec![0u32; groups_n];
                for (g, _) in vals {
                    distinct[g as usize] += 1;
                }
                for (g, n) in distinct.iter().enumerate() {
                    if *n < ell {
                        diverse[g] = false;
                    }
                }
                distincts.push(distinct);
            }
        }
        let (mut suppressed_rare, mut suppressed_l) = (0u64, 0u64);
        let mut kept_groups = Vec::new();
        for g in 0..groups_n {
            if people[g] < k {
                suppressed_rare += records[g];
            } else if !diverse[g] {
                suppressed_l += records[g];
            } else {
                kept_groups.push((people[g], records[g]));
            }
        }
        let mut released: FxMap<Box<[u32]>, Box<[u8]>> = FxMap::default();
        let mut rare: Vec<RarePlan> = self
            .rares
            .iter()
            .map(|d| RarePlan {
                records_at: vec![0; d.hierarchy.levels()],
                null_in_lake: 0,
            })
            .collect();
        for (i, (e, g)) in entries.iter().zip(&group).enumerate() {
            let g = *g as usize;
            if people[g] < k || !diverse[g] {
                continue;
            }
            let (cell, recs) = cells[*e];
            let dec = &decided[i * r_count..(i + 1) * r_count];
            for (r, l) in dec.iter().enumerate() {
                rare[r].records_at[usize::from(*l)] += recs;
                if self.rares[r].label(cell[q + r], 0).is_none() {
                    rare[r].null_in_lake += recs;
                }
            }
            if map {
                released
                    .entry(cell[..cell.len() - 1].into())
                    .or_insert_with(|| dec.into());
            }
        }
        let discern = kept_groups
            .iter()
            .map(|(_, r)| u128::from(*r) * u128::from(*r))
            .sum();
        let l_achieved = distincts
            .iter()
            .map(|d| {
                (0..groups_n)
                    .filter(|g| people[*g] >= k && diverse[*g])
                    .map(|g| d[g])
                    .min()
                    .unwrap_or(u32::MAX)
            })
            .collect();
        Decision {
            released,
            stats: Stats {
                risk: Risk::of(kept_groups.into_iter(), k),
                discern,
                rare,
                l_achieved,
                suppressed_k,
                suppressed_rare,
                suppressed_l,
            },
        }
    }

    /// The decisions of `plan` for `cells` (whole classes at its levels):
    /// released row key → the level of each rare rule.
    pub fn decisions(&self, plan: &Plan, cells: &[(&[u32], u64)]) -> Released {
        let keys = self.keys(&plan.levels);
        self.decide(cells, &keys, plan.k, &plan.thresholds, plan.ell, true)
            .released
    }

    /// The class key of each row of `batch` at the plan's levels (rows
    /// are sent to buckets of whole classes by it).
    pub fn class_keys(&self, plan: &Plan, batch: &RecordBatch) -> Result<Vec<u128>, CoreError> {
        let keys = self.keys(&plan.levels);
        let at = self.locate(batch)?;
        let (mut buf, mut ids) = (String::new(), Vec::new());
        (0..batch.num_rows())
            .map(|row| {
                self.lookup(batch, &at, row, &mut buf, &mut ids)?;
                Ok(keys.of(&ids))
            })
            .collect()
    }

    /// The cells of some rows (pass two, for a bucket of whole classes).
    pub fn cells_of(&self, batches: &[RecordBatch]) -> Result<Vec<OwnedCell>, CoreError> {
        let mut cells: FxMap<Box<[u32]>, u64> = FxMap::default();
        let (mut buf, mut ids) = (String::new(), Vec::new());
        let mut n = 0u32;
        for batch in batches {
            let at = self.locate(batch)?;
            for row in 0..batch.num_rows() {
                let person = match self.person_of(batch, &at, row, &mut buf)? {
                    Some(p) => p,
                    None if at.patient.is_none() => {
                        n += 1;
                        n
                    }
                    None => {
                        return Err(CoreError::Unindexed {
                            column: self.patient_column().unwrap_or_default().to_owned(),
                        });
                    }
                };
                self.lookup(batch, &at, row, &mut buf, &mut ids)?;
                ids.push(person);
                *cells.entry(ids.as_slice().into()).or_default() += 1;
            }
        }
        Ok(cells.into_iter().collect())
    }

    /// `batch` without the records beyond the cap of records per person
    /// (the same ones in both passes: `pass` counts in read order).
    pub fn cap_filter(
        &self,
        batch: RecordBatch,
        pass: &mut Pass,
    ) -> Result<RecordBatch, CoreError> {
        if self.cap.is_none() {
            return Ok(batch);
        }
        let at = self.locate(&batch)?;
        let mut buf = String::new();
        let mut keep = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            keep.push(match self.person_of(&batch, &at, row, &mut buf)? {
                Some(p) => Self::within_cap(self.cap, &mut pass.per_person, p),
                None => true,
            });
        }
        Ok(arrow_select::filter::filter_record_batch(
            &batch,
            &BooleanArray::from(keep),
        )?)
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
            .chain(self.sensitive.iter().zip(&at.sensitive))
        {
            d.key(batch, l, row, buf);
            ids.push(d.get(buf).ok_or_else(|| CoreError::Unindexed {
                column: d.hierarchy.column.clone(),
            })?);
        }
        Ok(())
    }

    /// The released form of a batch: capped and suppressed records left
    /// out, quasi-identifiers at the plan's levels, rare values rolled up
    /// or null, the person re-keyed, attributes as they are. `pass` carries
    /// the cap's counts from batch to batch (one per table).
    pub fn apply(
        &self,
        plan: &Plan,
        released: &Released,
        out: &Output,
        batch: &RecordBatch,
        pass: &mut Pass,
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
        let attrs: Vec<Option<&ArrayRef>> = out
            .attributes
            .iter()
            .map(|a| batch.column_by_name(a))
            .collect();
        let (mut buf, mut ids) = (String::new(), Vec::new());
        let mut rekeyed = String::new();
        for row in 0..n {
            let person = self.person_of(batch, &at, row, &mut buf)?;
            self.lookup(batch, &at, row, &mut buf, &mut ids)?;
            let Some(levels) = released.get(ids.as_slice()) else {
                keep.push(false);
                continue;
            };
            keep.push(true);
            let mut h = std::hash::DefaultHasher::new();
            for (i, b) in qi_cols.iter_mut().enumerate() {
                let label = self.qis[i].label(ids[i], plan.levels[i]);
                label.hash(&mut h);
                b.append_option(label);
            }
            for (r, (values, names)) in rare_cols.iter_mut().enumerate() {
                let l = usize::from(levels[r]);
                let d = &self.rares[r];
                let label = if l + 1 == d.hierarchy.levels() {
                    None
                } else {
                    d.label(ids[q + r], l)
                };
                (label, l).hash(&mut h);
                values.append_option(label);
                names.append_value(&level_names[r][l]);
            }
            if let (Some(key), Some(p)) = (&out.rekey, person) {
                for a in attrs.iter().flatten() {
                    buf.clear();
                    write_value(a, row, &mut buf).hash(&mut h);
                    buf.hash(&mut h);
                }
                let t = pass.trajectories.entry(p).or_default();
                t.0 = t.0.wrapping_add(h.finish());
                t.1 += 1;
                key.rekey_person(p, &mut rekeyed);
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

/// Classes of `cells` at `keys`, sorted by key: (key, distinct people,
/// records). Distinct people come from sorting (class, person) pairs
/// rather than from a set.
fn classes(cells: &[(&[u32], u64)], keys: &Keys) -> Vec<(u128, u32, u64)> {
    let mut pairs: Vec<(u128, u32, u64)> = cells
        .iter()
        .map(|(cell, records)| (keys.of(cell), cell[cell.len() - 1], *records))
        .collect();
    pairs.sort_unstable_by_key(|(c, p, _)| (*c, *p));
    count_groups(pairs)
}

/// Counts sorted (group, person, records) triples into (group, distinct
/// people, records).
fn count_groups<G: PartialEq + Copy>(pairs: Vec<(G, u32, u64)>) -> Vec<(G, u32, u64)> {
    let mut out: Vec<(G, u32, u64)> = Vec::new();
    let mut last_person = None;
    for (c, p, r) in pairs {
        match out.last_mut() {
            Some(x) if x.0 == c => {
                x.2 += r;
                if last_person != Some(p) {
                    x.1 += 1;
                }
            }
            _ => out.push((c, 1, r)),
        }
        last_person = Some(p);
    }
    out
}

/// For each value id of `d`, the id of its label at `level`, None when the
/// label is null (a code outside the reference table has no block).
fn level_ids_opt(d: &Dict, level: usize) -> Vec<Option<u32>> {
    let ids = d.level_ids(level);
    (0..d.len())
        .map(|v| d.label(v as u32, level).map(|_| ids[v]))
        .collect()
}

/// A cell (quasi-identifier, rare and sensitive value ids, person) and
/// its records.
pub type OwnedCell = (Box<[u32]>, u64);

/// Released row keys (quasi-identifier, rare and sensitive value ids)
/// → the level each rare rule releases them at; absent: suppressed.
pub type Released = FxMap<Box<[u32]>, Box<[u8]>>;

/// One bucket's decisions and counts.
struct Decision {
    released: Released,
    stats: Stats,
}

/// What a plan releases and suppresses, summed over buckets.
#[derive(Debug, Default)]
pub struct Stats {
    /// Risk of the released groups, in people.
    pub risk: Risk,
    discern: u128,
    /// Rare-value outcomes, per rule.
    pub rare: Vec<RarePlan>,
    /// Per sensitive attribute (with ℓ), the fewest distinct values in a
    /// released group (`u32::MAX`: no group released).
    pub l_achieved: Vec<u32>,
    /// Records of quasi-identifier classes below k.
    pub suppressed_k: u64,
    /// Records of (class, rare labels) groups below k after the roll-up.
    pub suppressed_rare: u64,
    /// Records of groups with fewer than ℓ distinct values of a sensitive
    /// attribute.
    pub suppressed_l: u64,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.risk = Risk::combine([std::mem::take(&mut self.risk), o.risk]);
        self.discern += o.discern;
        if self.rare.is_empty() {
            self.rare = o.rare;
        } else {
            for (a, b) in self.rare.iter_mut().zip(o.rare) {
                for (x, y) in a.records_at.iter_mut().zip(b.records_at) {
                    *x += y;
                }
                a.null_in_lake += b.null_in_lake;
            }
        }
        if self.l_achieved.is_empty() {
            self.l_achieved = o.l_achieved;
        } else {
            for (a, b) in self.l_achieved.iter_mut().zip(o.l_achieved) {
                *a = (*a).min(b);
            }
        }
        self.suppressed_k += o.suppressed_k;
        self.suppressed_rare += o.suppressed_rare;
        self.suppressed_l += o.suppressed_l;
    }
}

impl Plan {
    /// Risk of what the plan releases: groups of quasi-identifiers and
    /// rare labels, in people.
    pub fn risk(&self) -> Risk {
        self.stats.risk.clone()
    }

    /// Records suppressed, all rules.
    pub fn suppressed(&self) -> u64 {
        self.stats.suppressed_k + self.stats.suppressed_rare + self.stats.suppressed_l
    }

    /// Σ records² over the released groups (the discernibility metric
    /// without its suppression term).
    pub fn discernibility(&self) -> u128 {
        self.stats.discern
    }

    /// The decisions for every row, when the index fit in memory (else
    /// they are made bucket by bucket in pass two: [`Index::decisions`]).
    pub fn released(&self) -> Option<&Released> {
        self.released.as_ref()
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

    /// The release pseudonym of a person (an id of this run's union–find),
    /// into `out` (cleared): one per person, whatever their lake
    /// pseudonyms.
    pub fn rekey_person(&self, person: u32, out: &mut String) {
        let mut m = self.0.clone();
        m.update(b"chitose/release-person/v1\0");
        m.update(&person.to_le_bytes());
        out.clear();
        chitose_schemas::base32::encode(&m.finalize().into_bytes(), out);
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
    /// The attributes' names.
    pub attributes: Vec<String>,
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
            attributes: attributes.iter().map(|(n, _)| n.clone()).collect(),
        }
    }
}

/// The generalization chosen for a table.
#[derive(Debug)]
pub struct Plan {
    /// k.
    pub k: u32,
    /// ℓ asked of the sensitive attributes.
    pub ell: Option<u32>,
    /// Level per quasi-identifier.
    pub levels: Vec<usize>,
    /// Threshold per rare rule.
    pub thresholds: Vec<u32>,
    /// The decisions, when the index fit in memory.
    released: Option<Released>,
    /// What it releases and suppresses.
    pub stats: Stats,
    /// Generalization lattice size.
    pub nodes: usize,
    /// Nodes evaluated.
    pub evaluated: usize,
}

/// What one rare rule released.
#[derive(Debug, Clone)]
pub struct RarePlan {
    /// Records released at each level (the last: null, including the
    /// values null in the lake).
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

/// Rare-value risk of one sensitive column: how many (class, value) groups
/// fewer than `threshold` people share.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RareRisk {
    /// The column.
    pub column: String,
    /// Patients a group needs.
    pub threshold: u32,
    /// (class, value) groups, null values left out.
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
    /// The risk of several buckets' classes together.
    pub fn combine(parts: impl IntoIterator<Item = Risk>) -> Risk {
        let mut r = Risk::default();
        let mut any = false;
        for p in parts {
            if p.classes == 0 {
                continue;
            }
            r.k = if any { r.k.min(p.k) } else { p.k };
            any = true;
            r.records += p.records;
            r.classes += p.classes;
            r.unique_records += p.unique_records;
            r.unique_patients += p.unique_patients;
            r.records_below_k += p.records_below_k;
            r.classes_below_k += p.classes_below_k;
            if r.class_sizes.is_empty() {
                r.class_sizes = p.class_sizes;
            } else {
                for (a, b) in r.class_sizes.iter_mut().zip(p.class_sizes) {
                    a.1 += b.1;
                }
            }
        }
        if r.classes > 0 {
            r.uniqueness = r.unique_records as f64 / r.records as f64;
            r.mean_class_records = r.records as f64 / r.classes as f64;
        } else {
            r.class_sizes = Risk::of(std::iter::empty(), 0).class_sizes;
        }
        r
    }

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
    use std::collections::{HashMap, HashSet};

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

    fn people_of(rows: &[(&str, &str)]) -> Arc<People> {
        let mut p = People::new();
        for (a, links) in rows {
            p.add_record(a, links);
        }
        p.freeze();
        Arc::new(p)
    }

    /// Pass two as the shell runs it: the cap, then the plan's decisions
    /// (made again from the rows' cells when the index spilled).
    fn released(ix: &Index, plan: &Plan, out: &Output, batches: &[RecordBatch]) -> RecordBatch {
        let mut pass = Pass::default();
        let batches: Vec<RecordBatch> = batches
            .iter()
            .map(|b| ix.cap_filter(b.clone(), &mut pass).unwrap())
            .collect();
        let map = match plan.released() {
            Some(m) => m.clone(),
            None => {
                let cells = ix.cells_of(&batches).unwrap();
                let refs: Vec<(&[u32], u64)> = cells.iter().map(|(c, r)| (&**c, *r)).collect();
                ix.decisions(plan, &refs)
            }
        };
        let parts: Vec<RecordBatch> = batches
            .iter()
            .map(|b| ix.apply(plan, &map, out, b, &mut pass).unwrap())
            .collect();
        arrow_select::concat::concat_batches(&out.schema, &parts).unwrap()
    }

    #[test]
    fn every_released_group_holds_k_with_its_rare_value_and_the_counts_reconcile() {
        let mut rolled = 0;
        for seed in 0..5 {
            let b = batch(seed, 3000);
            let mut ix = Index::new(
                qis(),
                vec![rare()],
                vec![],
                Who::Column("pseudonym".into()),
                None,
            );
            // Two batches, as files would come.
            ix.add(&b.slice(0, 1000)).unwrap();
            ix.add(&b.slice(1000, 2000)).unwrap();
            let before = ix.risk(&[0, 0, 0, 0], 0, 5).unwrap();
            assert!(before.unique_records > 0, "the data must start risky");
            let plan = ix.plan(5, 0.05, &[3], None).unwrap();
            let out = Output::new(
                &ix,
                &[("extra".into(), DataType::Utf8)],
                Some(ReleaseKey::fresh()),
            );
            let released = released(&ix, &plan, &out, &[b.slice(0, 1000), b.slice(1000, 2000)]);
            // The group is every qi and the rare value as released: each
            // holds ≥ k (not only ≥ threshold) distinct people.
            let groups = recount(&released, &["age", "sex", "muni", "month", "code"]);
            assert!(groups.values().all(|p| p.len() >= 5), "seed {seed}");
            let after = plan.risk();
            assert_eq!(after.records, released.num_rows() as u64);
            assert_eq!(after.classes, groups.len() as u64);
            assert!(after.k >= 5);
            let rare_before = ix.rare_risk(0, 3, &[0, 0, 0, 0]).unwrap();
            assert!(rare_before.groups_below > 0 && rare_before.records_below > 0);
            let suppressed = 3000 - released.num_rows() as u64;
            assert_eq!(suppressed, plan.suppressed());
            assert!(suppressed <= 150, "within the budget: {suppressed}");
            assert_eq!(
                plan.stats.rare[0].records_at.iter().sum::<u64>(),
                released.num_rows() as u64
            );
            let nulls = released.column_by_name("code").unwrap().null_count() as u64;
            assert_eq!(nulls, *plan.stats.rare[0].records_at.last().unwrap());
            rolled += plan.stats.rare[0].records_at[1..].iter().sum::<u64>();
        }
        assert!(
            rolled > 0,
            "the data must make the rare rule roll values up"
        );
    }

    /// With a memory budget far below its cells, the index spills and
    /// counts bucket by bucket of whole classes: the same plan, the same
    /// counts, the same released rows as in memory.
    #[test]
    fn a_spilled_index_plans_and_releases_as_one_in_memory() {
        let b = batch(3, 4000);
        let run = |memory: usize| {
            let mut ix = Index::new(
                qis(),
                vec![rare()],
                vec![Hierarchy::flat("extra")],
                Who::Column("pseudonym".into()),
                Some(3),
            )
            .memory(memory);
            ix.add(&b.slice(0, 2500)).unwrap();
            ix.add(&b.slice(2500, 1500)).unwrap();
            let plan = ix.plan(5, 0.1, &[3], Some(2)).unwrap();
            let out = Output::new(&ix, &[("extra".into(), DataType::Utf8)], None);
            let r = released(&ix, &plan, &out, &[b.slice(0, 2500), b.slice(2500, 1500)]);
            let mut rows: Vec<Vec<Option<String>>> = (0..r.num_rows())
                .map(|i| {
                    r.columns()
                        .iter()
                        .map(|c| {
                            let mut s = String::new();
                            crate::hierarchy::write_value(c, i, &mut s).then_some(s)
                        })
                        .collect()
                })
                .collect();
            rows.sort();
            let before = ix.risk(&[0, 0, 0, 0], 0, 5).unwrap();
            let rare = ix.rare_risk(0, 3, &[1, 0, 1, 1]).unwrap();
            let with = ix.risk_with_rares(&[2, 1, 1, 2], 5).unwrap();
            (ix.spilled(), plan, rows, before, rare, with, ix.capped())
        };
        let (spilled_a, a, rows_a, before_a, rare_a, with_a, capped_a) = run(usize::MAX);
        let (spilled_b, b2, rows_b, before_b, rare_b, with_b, capped_b) = run(4096);
        assert!(!spilled_a && spilled_b, "the small budget spills");
        assert!(
            b2.released().is_none(),
            "decisions are made again in pass two"
        );
        assert_eq!(a.levels, b2.levels);
        assert_eq!(a.suppressed(), b2.suppressed());
        assert_eq!(a.risk(), b2.risk());
        assert_eq!(a.discernibility(), b2.discernibility());
        assert_eq!(a.stats.rare[0].records_at, b2.stats.rare[0].records_at);
        assert_eq!((before_a, rare_a, with_a), (before_b, rare_b, with_b));
        assert_eq!(capped_a, capped_b);
        assert!(capped_a > 0, "the cap of 3 per person bites");
        assert!(!rows_a.is_empty());
        assert_eq!(rows_a, rows_b);
    }

    #[test]
    fn the_least_general_node_wins_and_k_too_high_is_refused() {
        let b = batch(9, 600);
        let mut ix = Index::new(qis(), vec![], vec![], Who::Column("pseudonym".into()), None);
        ix.add(&b).unwrap();
        let plan = ix.plan(2, 0.5, &[], None).unwrap();
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
                            let r = ix.risk(&n, 0, 2).unwrap();
                            assert!(r.records_below_k > budget, "{n:?} was better");
                        }
                    }
                }
            }
        }
        let e = ix.plan(1000, 0.0, &[], None).unwrap_err().to_string();
        assert!(e.contains("every group ≥ 1000 people"), "{e}");
    }

    fn strings(cols: &[(&str, Vec<&str>)]) -> RecordBatch {
        RecordBatch::try_from_iter(
            cols.iter()
                .map(|(n, v)| (*n, Arc::new(StringArray::from(v.clone())) as ArrayRef)),
        )
        .unwrap()
    }

    #[test]
    fn patients_not_records_make_a_class() {
        // One patient with five records is a class of one.
        let b = strings(&[
            ("pseudonym", vec!["a", "a", "a", "a", "a", "b", "c"]),
            ("sex", vec!["m", "m", "m", "m", "m", "f", "f"]),
        ]);
        let mut ix = Index::new(
            vec![Hierarchy::flat("sex")],
            vec![],
            vec![],
            Who::Column("pseudonym".into()),
            None,
        );
        ix.add(&b).unwrap();
        let r = ix.risk(&[0], 0, 2).unwrap();
        assert_eq!((r.k, r.unique_records, r.unique_patients), (1, 5, 1));
        assert_eq!(r.records_below_k, 5);
        let plan = ix.plan(2, 0.0, &[], None).unwrap();
        assert_eq!(plan.levels, vec![1], "only * keeps everyone");
    }

    /// Five pseudonyms, three people: counted as pseudonyms the class
    /// passes k = 5 (the attack on main); counted as people it does not.
    #[test]
    fn people_not_pseudonyms_make_a_class() {
        let b = strings(&[
            (
                "pseudonym",
                vec!["a1", "a2", "a3", "b", "c", "x1", "x2", "x3", "x4", "x5"],
            ),
            (
                "linkage_pseudonyms",
                vec![
                    "a1 ka", "a2 ka", "a3 a2", "b", "c", "x1", "x2", "x3", "x4", "x5",
                ],
            ),
            (
                "area",
                vec!["A", "A", "A", "A", "A", "B", "B", "B", "B", "B"],
            ),
        ]);
        let people = people_of(&[
            ("a1", "a1 ka"),
            ("a2", "a2 ka"),
            ("a3", "a3 a2"),
            ("b", "b"),
            ("c", "c"),
            ("x1", ""),
            ("x2", ""),
            ("x3", ""),
            ("x4", ""),
            ("x5", ""),
        ]);
        assert_eq!((people.pseudonyms(), people.people()), (10, 8));
        let run = |who: Who| {
            let mut ix = Index::new(vec![Hierarchy::flat("area")], vec![], vec![], who, None);
            ix.add(&b).unwrap();
            let plan = ix.plan(5, 0.5, &[], None).unwrap();
            (
                ix.patients(),
                ix.pseudonyms(),
                plan.levels.clone(),
                plan.suppressed(),
            )
        };
        let (_, _, levels, suppressed) = run(Who::Column("pseudonym".into()));
        assert_eq!(
            (levels, suppressed),
            (vec![0], 0),
            "pseudonyms: area A looks like 5"
        );
        let (patients, pseudonyms, levels, suppressed) = run(Who::People(people));
        assert_eq!((patients, pseudonyms), (8, 10));
        assert_eq!(
            (levels, suppressed),
            (vec![0], 5),
            "people: area A is 3, suppressed"
        );
    }

    /// (class, diagnosis) can be unique while the class holds k and the
    /// diagnosis is common elsewhere: the value is rolled up within the
    /// class, and the null group still below k is suppressed.
    #[test]
    fn a_rare_value_is_counted_within_its_class() {
        let mut p = Vec::new();
        let (mut sex, mut code, mut block) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..6 {
            // Six men with X01, six women with Y01 — and one woman with X01.
            p.push(format!("m{i}"));
            sex.push("m");
            code.push("X01");
            block.push("X");
            p.push(format!("f{i}"));
            sex.push("f");
            code.push("Y01");
            block.push("Y");
        }
        p.push("target".into());
        sex.push("f");
        code.push("X01");
        block.push("X");
        let b = strings(&[
            ("pseudonym", p.iter().map(String::as_str).collect()),
            ("sex", sex),
            ("code", code),
            ("block", block),
        ]);
        let mut ix = Index::new(
            vec![Hierarchy::flat("sex")],
            vec![Hierarchy {
                column: "code".into(),
                kind: Kind::Ladder(vec!["block".into()]),
                top_is_any: false,
            }],
            vec![],
            Who::Column("pseudonym".into()),
            None,
        );
        ix.add(&b).unwrap();
        // Counted per (area = all, value), X01 has 7 people: main released it.
        let plan = ix.plan(5, 0.2, &[5], None).unwrap();
        assert_eq!(plan.levels, vec![0], "sex stays");
        let out = Output::new(&ix, &[], None);
        let r = released(&ix, &plan, &out, std::slice::from_ref(&b));
        let groups = recount_records(&r, &["sex", "code"]);
        assert!(
            !groups.contains_key(&vec![Some("f".into()), Some("X01".into())]),
            "the target's diagnosis is not released in the women's class: {groups:?}"
        );
        assert!(groups.values().all(|n| *n >= 5), "{groups:?}");
        assert_eq!(
            plan.stats.suppressed_rare, 1,
            "the target's null group of one"
        );
    }

    fn recount_records(out: &RecordBatch, names: &[&str]) -> HashMap<Vec<Option<String>>, usize> {
        let mut m = HashMap::new();
        for row in 0..out.num_rows() {
            let key = names
                .iter()
                .map(|n| {
                    let mut s = String::new();
                    crate::hierarchy::write_value(out.column_by_name(n).unwrap(), row, &mut s)
                        .then_some(s)
                })
                .collect();
            *m.entry(key).or_default() += 1;
        }
        m
    }

    #[test]
    fn l_diversity_suppresses_a_group_with_one_sensitive_value_and_the_cap_holds() {
        let n = 12;
        let b = strings(&[
            (
                "pseudonym",
                (0..n)
                    .map(|i| ["p0", "p1", "p2", "p3", "p4", "p5"][i % 6])
                    .collect(),
            ),
            (
                "sex",
                (0..n).map(|i| if i % 6 < 3 { "m" } else { "f" }).collect(),
            ),
            ("age", vec!["40"; n]),
            // The men all died; the women did not all.
            (
                "outcome",
                (0..n)
                    .map(|i| {
                        if i % 6 < 3 {
                            "died"
                        } else {
                            ["cured", "continuing"][i % 2]
                        }
                    })
                    .collect(),
            ),
        ]);
        let ix_of = |cap| {
            let mut ix = Index::new(
                vec![Hierarchy::flat("age")],
                vec![],
                vec![Hierarchy::flat("outcome")],
                Who::Column("pseudonym".into()),
                cap,
            );
            ix.add(&b).unwrap();
            ix
        };
        let ix = ix_of(None);
        let plan = ix.plan(2, 0.0, &[], Some(2)).unwrap();
        assert_eq!(
            plan.stats.suppressed_l, 0,
            "one class of 6 people, 3 outcomes"
        );
        let ix2 = {
            let mut ix = Index::new(
                vec![Hierarchy::flat("sex")],
                vec![],
                vec![Hierarchy::flat("outcome")],
                Who::Column("pseudonym".into()),
                None,
            );
            ix.add(&b).unwrap();
            ix
        };
        let plan = ix2.plan(3, 0.6, &[], Some(2)).unwrap();
        assert_eq!(plan.levels, vec![0]);
        assert_eq!(plan.stats.suppressed_l, 6, "the men's class: everyone died");
        assert_eq!(
            plan.stats.l_achieved,
            vec![2],
            "the women's: cured, continuing"
        );
        let out = Output::new(&ix2, &[("outcome".into(), DataType::Utf8)], None);
        let r = released(&ix2, &plan, &out, std::slice::from_ref(&b));
        assert_eq!(r.num_rows(), 6);
        // At most one record per person.
        let ix = ix_of(Some(1));
        assert_eq!((ix.rows(), ix.capped()), (6, 6));
        let plan = ix.plan(2, 0.0, &[], None).unwrap();
        let out = Output::new(&ix, &[], Some(ReleaseKey::fresh()));
        let mut pass = Pass::default();
        let capped = ix.cap_filter(b.clone(), &mut pass).unwrap();
        let r = ix
            .apply(&plan, plan.released().unwrap(), &out, &capped, &mut pass)
            .unwrap();
        assert_eq!(r.num_rows(), 6);
        assert_eq!(recount(&r, &["age"]).values().next().unwrap().len(), 6);
        // Each person's one released row is the same (40, no rare): no
        // trajectory is unique.
        assert_eq!(pass.trajectories(), (6, 0));
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
        a.rekey_person(7, &mut x);
        a.rekey_person(7, &mut y);
        b.rekey_person(7, &mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
    }
}
