//! The index's cells, in memory up to a budget and spilled to local files
//! beyond it, and their partition by class.
//!
//! Every count a release makes — people per class, the roll-up of a rare
//! value within its class, ℓ per group — is a function of one class's
//! cells alone. So a table whose cells do not fit in memory is planned
//! bucket by bucket: the cells are written out once per evaluated node,
//! partitioned by a hash of their class at that node, and each bucket (a
//! set of whole classes) is counted in memory on its own. A cell written
//! twice (once per spilled run) is harmless: people are counted as distinct
//! (class, person) pairs and records are summed.
//!
//! Files are fixed-width little-endian records (`width` u32s, then the
//! records as u64) under a private temporary folder, removed on drop.

use crate::hierarchy::FxMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

/// Bytes one in-memory cell costs (the boxed key, its count, the map's
/// slot and control bytes).
pub fn cell_bytes(width: usize) -> usize {
    width * 4 + 8 + 16 + 24
}

/// Cells, in memory and in spilled runs.
#[derive(Debug)]
pub struct Cells {
    width: usize,
    mem: FxMap<Box<[u32]>, u64>,
    budget: usize,
    dir: Option<tempfile::TempDir>,
    runs: Vec<PathBuf>,
    spilled: u64,
}

fn tmp() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("chitose-release-index-")
        .tempdir()
}

impl Cells {
    /// No cells; at most `budget` bytes of them in memory.
    pub fn new(width: usize, budget: usize) -> Cells {
        Cells {
            width,
            mem: FxMap::default(),
            budget,
            dir: None,
            runs: Vec::new(),
            spilled: 0,
        }
    }

    /// u32s per cell.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Bytes of cells held in memory before they spill.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes the in-memory cells hold (an estimate).
    pub fn memory(&self) -> usize {
        self.mem.capacity() * cell_bytes(self.width)
    }

    /// Adds `records` to a cell.
    pub fn add(&mut self, cell: &[u32], records: u64) -> std::io::Result<()> {
        match self.mem.get_mut(cell) {
            Some(n) => *n += records,
            None => {
                self.mem.insert(cell.into(), records);
                if self.memory() > self.budget {
                    self.spill()?;
                }
            }
        }
        Ok(())
    }

    fn spill(&mut self) -> std::io::Result<()> {
        if self.dir.is_none() {
            self.dir = Some(tmp()?);
        }
        let path = self
            .dir
            .as_ref()
            .expect("made above")
            .path()
            .join(format!("run-{}", self.runs.len()));
        let mut w = BufWriter::new(std::fs::File::create(&path)?);
        for (cell, records) in self.mem.drain() {
            write_cell(&mut w, &cell, records)?;
            self.spilled += 1;
        }
        w.flush()?;
        self.runs.push(path);
        // Give the memory back: the next run starts small.
        self.mem = FxMap::default();
        Ok(())
    }

    /// Whether any cell was spilled.
    pub fn spilled(&self) -> bool {
        !self.runs.is_empty()
    }

    /// Cells held, a cell spilled twice counted twice.
    pub fn len(&self) -> u64 {
        self.mem.len() as u64 + self.spilled
    }

    /// Whether there is no cell.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The in-memory cells, when nothing was spilled.
    pub fn in_memory(&self) -> Option<Vec<(&[u32], u64)>> {
        (!self.spilled()).then(|| self.mem.iter().map(|(c, r)| (&**c, *r)).collect())
    }

    /// Every cell, in memory and spilled.
    pub fn for_each(&self, mut f: impl FnMut(&[u32], u64)) -> std::io::Result<()> {
        for (c, r) in &self.mem {
            f(c, *r);
        }
        let mut cell = vec![0u32; self.width];
        for run in &self.runs {
            let mut r = BufReader::new(std::fs::File::open(run)?);
            while let Some(records) = read_cell(&mut r, &mut cell)? {
                f(&cell, records);
            }
        }
        Ok(())
    }

    /// The cells partitioned into `n` buckets by `class` (a bucket holds
    /// whole classes), written to files.
    pub fn partition(&self, n: usize, class: impl Fn(&[u32]) -> u128) -> std::io::Result<Buckets> {
        let dir = tmp()?;
        let mut writers: Vec<BufWriter<std::fs::File>> = (0..n)
            .map(|i| std::fs::File::create(dir.path().join(format!("{i}"))).map(BufWriter::new))
            .collect::<Result<_, _>>()?;
        let mut err = None;
        self.for_each(|cell, records| {
            if err.is_some() {
                return;
            }
            let b = bucket_of(class(cell), n);
            if let Err(e) = write_cell(&mut writers[b], cell, records) {
                err = Some(e);
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        for w in &mut writers {
            w.flush()?;
        }
        Ok(Buckets {
            dir,
            n,
            width: self.width,
        })
    }
}

/// Which of `n` buckets a class goes to (a mixing hash: class keys are
/// packed label ids, far from uniform).
pub fn bucket_of(class: u128, n: usize) -> usize {
    let x = (class as u64) ^ ((class >> 64) as u64).rotate_left(29);
    let x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    let x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    ((x ^ (x >> 33)) % n as u64) as usize
}

fn write_cell(w: &mut impl Write, cell: &[u32], records: u64) -> std::io::Result<()> {
    for x in cell {
        w.write_all(&x.to_le_bytes())?;
    }
    w.write_all(&records.to_le_bytes())
}

fn read_cell(r: &mut impl Read, cell: &mut [u32]) -> std::io::Result<Option<u64>> {
    let mut b4 = [0u8; 4];
    for (i, x) in cell.iter_mut().enumerate() {
        match r.read_exact(&mut b4) {
            Ok(()) => *x = u32::from_le_bytes(b4),
            Err(e) if i == 0 && e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    let mut b8 = [0u8; 8];
    r.read_exact(&mut b8)?;
    Ok(Some(u64::from_le_bytes(b8)))
}

/// Cells partitioned by class, on disk.
#[derive(Debug)]
pub struct Buckets {
    dir: tempfile::TempDir,
    n: usize,
    width: usize,
}

/// One bucket's cells, loaded: `flat[i*width..]` and `records[i]`.
#[derive(Debug, Default)]
pub struct Loaded {
    flat: Vec<u32>,
    records: Vec<u64>,
    width: usize,
}

impl Loaded {
    /// The cells as (cell, records).
    pub fn cells(&self) -> Vec<(&[u32], u64)> {
        self.records
            .iter()
            .enumerate()
            .map(|(i, r)| (&self.flat[i * self.width..(i + 1) * self.width], *r))
            .collect()
    }
}

impl Buckets {
    /// Buckets.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bucket `i`'s cells.
    pub fn load(&self, i: usize) -> std::io::Result<Loaded> {
        let mut r = BufReader::new(std::fs::File::open(self.dir.path().join(format!("{i}")))?);
        let mut out = Loaded {
            width: self.width,
            ..Loaded::default()
        };
        let mut cell = vec![0u32; self.width];
        while let Some(records) = read_cell(&mut r, &mut cell)? {
            out.flat.extend_from_slice(&cell);
            out.records.push(records);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_cells_read_back_and_partition_by_class() {
        let mut c = Cells::new(3, 1000);
        for i in 0..500u32 {
            c.add(&[i % 7, i % 11, i], 1).unwrap();
            c.add(&[i % 7, i % 11, i], 2).unwrap();
        }
        assert!(c.spilled(), "a 1000-byte budget spills");
        let mut total = 0;
        let mut seen = std::collections::BTreeSet::new();
        c.for_each(|cell, r| {
            total += r;
            seen.insert(cell.to_vec());
        })
        .unwrap();
        assert_eq!(total, 1500);
        assert_eq!(seen.len(), 500);
        let b = c.partition(4, |cell| u128::from(cell[0])).unwrap();
        let mut classes_seen = std::collections::BTreeMap::new();
        let mut records = 0;
        for i in 0..b.len() {
            for (cell, r) in b.load(i).unwrap().cells() {
                records += r;
                // A class is in one bucket only.
                assert_eq!(*classes_seen.entry(cell[0]).or_insert(i), i);
            }
        }
        assert_eq!(records, 1500);
        assert_eq!(classes_seen.len(), 7);
    }
}
