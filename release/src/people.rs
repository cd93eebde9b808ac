//! People, not pseudonyms: one person reaches the lake under several
//! pseudonyms (a feed without insurance falls back to another linkage
//! basis, an insurance change makes a new insurance key, a key rotation a
//! new key), and every record carries, in `linkage_pseudonyms`, the
//! pseudonyms of every basis its inputs allowed under every key loaded.
//! Two pseudonyms that ever appear on one record are one person: a
//! union–find over every table of the lake joins them before anything is
//! counted.
//!
//! Pseudonyms are held as 64-bit hashes (a random seed per run). A
//! collision would join two people into one, which only makes classes look
//! smaller — more generalization, more suppression — and can never let a
//! small class through.

use crate::hierarchy::{FxMap, write_value};
use arrow_array::RecordBatch;

/// The pseudonym column.
pub const PSEUDONYM: &str = "pseudonym";
/// The column of every basis's pseudonym (space-separated).
pub const LINKS: &str = "linkage_pseudonyms";

/// A union–find over pseudonyms.
#[derive(Debug)]
pub struct People {
    hasher: std::hash::RandomState,
    /// Pseudonym hash → id.
    ids: FxMap<u64, u32>,
    /// Union–find parent of each id (after [`People::freeze`]: its root).
    parent: Vec<u32>,
    /// Size of each root's set (union by size keeps paths short).
    size: Vec<u32>,
    /// Whether the id was seen as a record's own pseudonym (not only as a
    /// link).
    own: Vec<bool>,
    frozen: bool,
}

impl Default for People {
    fn default() -> Self {
        People::new()
    }
}

impl People {
    /// Nobody yet.
    pub fn new() -> People {
        People {
            hasher: std::hash::RandomState::new(),
            ids: FxMap::default(),
            parent: Vec::new(),
            size: Vec::new(),
            own: Vec::new(),
            frozen: false,
        }
    }

    fn hash(&self, pseudonym: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, pseudonym)
    }

    fn id(&mut self, pseudonym: &str) -> u32 {
        let h = self.hash(pseudonym);
        let n = self.parent.len() as u32;
        let id = *self.ids.entry(h).or_insert(n);
        if id == n {
            self.parent.push(n);
            self.size.push(1);
            self.own.push(false);
        }
        id
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            // Path halving.
            let up = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = up;
            x = up;
        }
        x
    }

    /// Joins two pseudonyms' people.
    pub fn join(&mut self, a: &str, b: &str) {
        let (a, b) = (self.id(a), self.id(b));
        self.union(a, b);
    }

    fn union(&mut self, a: u32, b: u32) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a as usize] < self.size[b as usize] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b as usize] = a;
        self.size[a as usize] += self.size[b as usize];
    }

    /// A record's pseudonym and its links (space-separated; may be empty).
    pub fn add_record(&mut self, pseudonym: &str, links: &str) {
        assert!(!self.frozen, "people are added before they are counted");
        let p = self.id(pseudonym);
        self.own[p as usize] = true;
        for l in links.split(' ').filter(|l| !l.is_empty()) {
            let q = self.id(l);
            self.union(p, q);
        }
    }

    /// Adds a batch's `pseudonym` and `linkage_pseudonyms` columns (the
    /// latter absent or null in records written before it existed).
    pub fn add(&mut self, batch: &RecordBatch) {
        let Some(p) = batch.column_by_name(PSEUDONYM) else {
            return;
        };
        let links = batch.column_by_name(LINKS);
        let (mut a, mut b) = (String::new(), String::new());
        for row in 0..batch.num_rows() {
            a.clear();
            if !write_value(p, row, &mut a) {
                continue;
            }
            b.clear();
            if let Some(l) = links {
                write_value(l, row, &mut b);
            }
            self.add_record(&a, &b);
        }
    }

    /// Ends the joining: every id points at its root, so lookups need no
    /// mutation.
    pub fn freeze(&mut self) {
        for x in 0..self.parent.len() as u32 {
            let r = self.find(x);
            self.parent[x as usize] = r;
        }
        self.frozen = true;
    }

    /// (pseudonym id, person id) of a pseudonym seen, after [`People::freeze`].
    pub fn lookup(&self, pseudonym: &str) -> Option<(u32, u32)> {
        debug_assert!(self.frozen);
        let id = *self.ids.get(&self.hash(pseudonym))?;
        Some((id, self.parent[id as usize]))
    }

    /// Distinct pseudonyms seen on records.
    pub fn pseudonyms(&self) -> u64 {
        self.own.iter().filter(|o| **o).count() as u64
    }

    /// Distinct people those pseudonyms are, after [`People::freeze`].
    pub fn people(&self) -> u64 {
        let mut roots: Vec<u32> = (0..self.parent.len())
            .filter(|x| self.own[*x])
            .map(|x| self.parent[x])
            .collect();
        roots.sort_unstable();
        roots.dedup();
        roots.len() as u64
    }

    /// Bytes held (about 29 a pseudonym).
    pub fn memory(&self) -> usize {
        self.ids.capacity() * 16 + self.parent.capacity() * 9
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The union–find agrees with a naive closure: two pseudonyms are one
        /// person exactly when a chain of records links them.
        #[test]
        fn joins_exactly_the_linked(edges in proptest::collection::vec((0u8..30, 0u8..30), 0..60)) {
            let mut p = People::new();
            let name = |x: u8| format!("p{x}");
            for (a, b) in &edges {
                p.add_record(&name(*a), &name(*b));
            }
            p.freeze();
            // Naive: labels propagated until nothing changes.
            let mut label: Vec<u8> = (0..30).collect();
            loop {
                let mut changed = false;
                for (a, b) in &edges {
                    let m = label[*a as usize].min(label[*b as usize]);
                    for x in [*a, *b] {
                        if label[x as usize] != m {
                            label[x as usize] = m;
                            changed = true;
                        }
                    }
                }
                if !changed {
                    break;
                }
            }
            for (a, _) in &edges {
                for (b, _) in &edges {
                    let same = p.lookup(&name(*a)).unwrap().1 == p.lookup(&name(*b)).unwrap().1;
                    prop_assert_eq!(same, label[*a as usize] == label[*b as usize]);
                }
            }
            let own: std::collections::BTreeSet<u8> = edges.iter().map(|e| e.0).collect();
            prop_assert_eq!(p.pseudonyms(), own.len() as u64);
            let people: std::collections::BTreeSet<u8> = own.iter().map(|x| label[*x as usize]).collect();
            prop_assert_eq!(p.people(), people.len() as u64);
        }
    }
}
