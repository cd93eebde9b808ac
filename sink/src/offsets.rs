//! Exactly once through the table itself: what is committed, where to
//! resume, and what is a replay — pure, no Kafka, no object store.
//!
//! Per Kafka partition of a table's topic the Delta table holds a `txn`
//! action (app id from group, topic and partition; version = the next
//! offset whose record is not in the table). A sink that is assigned the
//! partition resumes there. Each commit carries, for every partition it
//! read since its last commit, the version it started from (`expected`)
//! and the one it reached; the lake commits it only while the table still
//! has `expected` for all of them (`chitose_lake::delta::Table::commit`).
//! So two writers that read the same offsets (a zombie and the new owner,
//! an instance before and after a rebalance) can never both land them:
//! the second finds the version moved, drops those rows as replays and
//! resumes from the version the first one committed.

use std::collections::BTreeMap;

/// One Kafka partition's state in a sink instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// The version the table had when this instance last read or set it
    /// (`None`: the table has none for this partition).
    pub table: Option<i64>,
    /// Everything below this offset has been read and is buffered or was
    /// skipped; the next commit sets the table's version to it.
    pub position: i64,
    /// The position at assignment or at the last commit: a partition is
    /// due when it read past it.
    pub base: i64,
}

/// A `txn` to commit: (partition, expected, version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Kafka partition.
    pub partition: i32,
    /// What the table must still have.
    pub expected: Option<i64>,
    /// What the commit sets.
    pub version: i64,
}

/// Where to resume a partition: its table version, or the log start when
/// the table has none or retention already deleted past it.
pub fn resume_at(table: Option<i64>, log_start: i64) -> i64 {
    table.map_or(log_start, |v| v.max(log_start))
}

/// The partitions of one table's topic this instance owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offsets {
    parts: BTreeMap<i32, Part>,
}

impl Offsets {
    /// Takes a partition; returns the offset to read from.
    pub fn assign(&mut self, partition: i32, table: Option<i64>, log_start: i64) -> i64 {
        let at = resume_at(table, log_start);
        self.parts.insert(
            partition,
            Part {
                table,
                position: at,
                base: at,
            },
        );
        at
    }

    /// Gives a partition up (its buffered rows must be dropped too).
    pub fn revoke(&mut self, partition: i32) {
        self.parts.remove(&partition);
    }

    /// A partition's state.
    pub fn get(&self, partition: i32) -> Option<Part> {
        self.parts.get(&partition).copied()
    }

    /// Records that everything below `next` was read (landed or skipped).
    /// Offsets never go back: an older position is ignored.
    pub fn read(&mut self, partition: i32, next: i64) {
        if let Some(p) = self.parts.get_mut(&partition) {
            p.position = p.position.max(next);
        }
    }

    /// The record at `at` cannot be landed (found when the buffered
    /// records were decoded, after the position moved past it): the next
    /// commit stops there. Never below the table's version.
    pub fn stop_at(&mut self, partition: i32, at: i64) {
        if let Some(p) = self.parts.get_mut(&partition) {
            p.position = p.position.min(at).max(p.base);
        }
    }

    /// The txns the next commit carries: every partition read past the
    /// table's version.
    pub fn due(&self) -> Vec<Due> {
        self.parts
            .iter()
            .filter(|(_, p)| p.position > p.base)
            .map(|(k, p)| Due {
                partition: *k,
                expected: p.table,
                version: p.position,
            })
            .collect()
    }

    /// The commit carrying `due` went in.
    pub fn committed(&mut self, due: &[Due]) {
        for d in due {
            if let Some(p) = self.parts.get_mut(&d.partition) {
                p.table = Some(d.version);
                p.base = p.base.max(d.version);
            }
        }
    }

    /// Another writer moved `partition` to `now` first: what this instance
    /// read since its version is a replay. Returns where to read again.
    pub fn lost(&mut self, partition: i32, now: Option<i64>, log_start: i64) -> i64 {
        self.assign(partition, now, log_start)
    }

    /// Owned partitions.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.parts.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The table's side, as `Table::commit` behaves: versions per
    /// partition, and the offsets of every landed row.
    #[derive(Default)]
    struct Lake {
        versions: BTreeMap<i32, i64>,
        landed: Vec<(i32, i64)>,
    }

    impl Lake {
        /// Atomic: all or nothing, only while every expected version holds.
        fn commit(&mut self, due: &[Due], rows: &[(i32, i64)]) -> Result<(), Vec<i32>> {
            let moved: Vec<i32> = due
                .iter()
                .filter(|d| self.versions.get(&d.partition).copied() != d.expected)
                .map(|d| d.partition)
                .collect();
            if !moved.is_empty() {
                return Err(moved);
            }
            for d in due {
                self.versions.insert(d.partition, d.version);
            }
            self.landed.extend_from_slice(rows);
            Ok(())
        }
    }

    /// One sink instance: its offsets and buffered rows.
    #[derive(Default, Clone)]
    struct Instance {
        offsets: Offsets,
        rows: Vec<(i32, i64)>,
    }

    impl Instance {
        fn assign(&mut self, lake: &Lake, p: i32) {
            self.offsets.assign(p, lake.versions.get(&p).copied(), 0);
        }
        fn read(&mut self, p: i32, n: i64, log_end: i64, skip_every: i64) {
            let Some(part) = self.offsets.get(p) else {
                return;
            };
            let end = (part.position + n).min(log_end);
            for o in part.position..end {
                // Some records are skipped (duplicates), never buffered.
                if skip_every == 0 || o % skip_every != 0 {
                    self.rows.push((p, o));
                }
            }
            self.offsets.read(p, end);
        }
        /// A buffered record `back` before the position does not decode:
        /// it and the rows after it go, the position goes back to it (the
        /// sink's decode at a roll; fixed and read again after a restart).
        fn stop(&mut self, p: i32, back: i64) {
            let Some(part) = self.offsets.get(p) else {
                return;
            };
            let at = part.position - back;
            self.rows.retain(|(q, o)| *q != p || *o < at);
            self.offsets.stop_at(p, at);
            let now = self.offsets.get(p).expect("owned").position;
            assert!(now <= part.position && now >= part.base);
        }
        fn commit(&mut self, lake: &mut Lake) {
            let due = self.offsets.due();
            match lake.commit(&due, &self.rows) {
                Ok(()) => {
                    self.offsets.committed(&due);
                    self.rows.clear();
                }
                Err(moved) => {
                    for p in moved {
                        self.rows.retain(|(q, _)| *q != p);
                        self.offsets.lost(p, lake.versions.get(&p).copied(), 0);
                    }
                }
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Read(usize, i32, i64),
        Commit(usize),
        Stop(usize, i32, i64),
        Crash(usize),
        /// The group moves a partition; the old owner may not notice (a
        /// zombie keeps reading and committing).
        Move(i32, usize, bool),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..3usize, 0..3i32, 1..20i64).prop_map(|(i, p, n)| Step::Read(i, p, n)),
            3 => (0..3usize).prop_map(Step::Commit),
            1 => (0..3usize, 0..3i32, 0..25i64).prop_map(|(i, p, b)| Step::Stop(i, p, b)),
            1 => (0..3usize).prop_map(Step::Crash),
            2 => (0..3i32, 0..3usize, any::<bool>()).prop_map(|(p, i, z)| Step::Move(p, i, z)),
        ]
    }

    proptest! {
        /// Random crashes, moves and zombies: the rows in the table are
        /// every offset below each partition's version exactly once
        /// (minus the skipped), with no gap.
        #[test]
        fn offsets_landed_are_offsets_committed(steps in prop::collection::vec(step(), 1..120), skip in 0..5i64) {
            const LOG: i64 = 200;
            let mut lake = Lake::default();
            let mut inst = vec![Instance::default(); 3];
            for p in 0..3 {
                inst[0].assign(&lake, p);
            }
            for s in steps {
                match s {
                    Step::Read(i, p, n) => inst[i].read(p, n, LOG, skip),
                    Step::Commit(i) => inst[i].commit(&mut lake),
                    Step::Stop(i, p, back) => inst[i].stop(p, back),
                    Step::Crash(i) => {
                        let owned: Vec<i32> = inst[i].offsets.partitions().collect();
                        inst[i] = Instance::default();
                        for p in owned {
                            inst[i].assign(&lake, p);
                        }
                    }
                    Step::Move(p, to, zombie) => {
                        for (j, x) in inst.iter_mut().enumerate() {
                            if j != to && !zombie {
                                x.offsets.revoke(p);
                                x.rows.retain(|(q, _)| *q != p);
                            }
                        }
                        inst[to].assign(&lake, p);
                        inst[to].rows.retain(|(q, _)| *q != p);
                    }
                }
            }
            // Finally one healthy instance reads everything and commits.
            let mut last = Instance::default();
            for p in 0..3 {
                last.assign(&lake, p);
                last.read(p, LOG, LOG, skip);
            }
            last.commit(&mut lake);
            let mut seen = std::collections::BTreeSet::new();
            for r in &lake.landed {
                prop_assert!(seen.insert(*r), "landed twice: {r:?}");
            }
            for p in 0..3 {
                prop_assert_eq!(lake.versions.get(&p).copied(), Some(LOG));
                for o in 0..LOG {
                    let skipped = skip != 0 && o % skip == 0;
                    prop_assert_eq!(seen.contains(&(p, o)), !skipped, "partition {} offset {}", p, o);
                }
            }
        }
    }

    #[test]
    fn resume_skips_what_retention_deleted() {
        assert_eq!(resume_at(None, 5), 5);
        assert_eq!(resume_at(Some(3), 5), 5);
        assert_eq!(resume_at(Some(9), 5), 9);
    }

    #[test]
    fn nothing_read_is_nothing_due() {
        let mut o = Offsets::default();
        o.assign(0, Some(4), 0);
        o.assign(1, None, 0);
        assert!(o.due().is_empty());
        o.read(0, 7);
        o.read(1, 2);
        o.read(1, 1);
        assert_eq!(
            o.due(),
            vec![
                Due {
                    partition: 0,
                    expected: Some(4),
                    version: 7
                },
                Due {
                    partition: 1,
                    expected: None,
                    version: 2
                }
            ]
        );
        let d = o.due();
        o.committed(&d);
        assert!(o.due().is_empty());
    }

    #[test]
    fn a_stop_goes_back_but_never_below_the_table() {
        let mut o = Offsets::default();
        o.assign(0, Some(4), 0);
        o.read(0, 10);
        o.stop_at(0, 7);
        assert_eq!(o.get(0).unwrap().position, 7);
        o.stop_at(0, 9);
        assert_eq!(o.get(0).unwrap().position, 7, "a stop never moves forward");
        o.stop_at(0, 2);
        assert_eq!(o.get(0).unwrap().position, 4);
        assert!(
            o.due().is_empty(),
            "stopped at the table's version: nothing to commit"
        );
    }
}
