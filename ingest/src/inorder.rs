//! Records acknowledged out of order, released in order.
//!
//! The files source may only checkpoint line N once every line up to N is
//! settled (produced, rejected or skipped); the broker acknowledges
//! partitions independently, so acknowledgements arrive out of line order.
//! This window holds each line until it and all before it are settled.
//! It decides what the checkpoint says, so it is pure and property-tested;
//! the source feeds it the producer's deliveries
//! ([`crate::producer::Tracker`]).

use std::collections::VecDeque;

/// Entries in the order they were pushed, each pending until settled with
/// its result; [`InOrder::pop_ready`] releases the settled prefix.
#[derive(Debug)]
pub struct InOrder<T, R> {
    /// Sequence number of the front entry.
    base: u64,
    q: VecDeque<(T, Option<R>)>,
}

impl<T, R> Default for InOrder<T, R> {
    fn default() -> Self {
        InOrder {
            base: 0,
            q: VecDeque::new(),
        }
    }
}

impl<T, R> InOrder<T, R> {
    /// Appends an entry whose result is to come; returns its sequence
    /// number, for [`InOrder::settle`].
    pub fn push_pending(&mut self, t: T) -> u64 {
        self.q.push_back((t, None));
        self.base + self.q.len() as u64 - 1
    }

    /// Appends an entry already settled (a blank line, a reject).
    pub fn push_settled(&mut self, t: T, r: R) {
        self.q.push_back((t, Some(r)));
    }

    /// Settles entry `seq`. Returns false, and changes nothing, for a
    /// number that is not pending (never pushed, released, or settled
    /// already), so a repeated acknowledgement cannot settle another line.
    pub fn settle(&mut self, seq: u64, r: R) -> bool {
        let Some(i) = seq.checked_sub(self.base) else {
            return false;
        };
        match self.q.get_mut(i as usize) {
            Some((_, slot @ None)) => {
                *slot = Some(r);
                true
            }
            _ => false,
        }
    }

    /// The front entry and its result, once it is settled.
    pub fn pop_ready(&mut self) -> Option<(T, R)> {
        if !matches!(self.q.front(), Some((_, Some(_)))) {
            return None;
        }
        let (t, r) = self.q.pop_front().expect("a front entry");
        self.base += 1;
        Some((t, r.expect("settled")))
    }

    /// Entries not yet released.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether every entry has been released.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Entries are released in push order, each once, only after
        /// they and everything before them are settled; a stray or
        /// repeated settle changes nothing; settling all releases all.
        #[test]
        fn released_in_order_once_and_only_when_settled(
            kinds in prop::collection::vec(any::<bool>(), 1..200),
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..200),
            strays in prop::collection::vec(0u64..400, 0..20),
        ) {
            let mut w: InOrder<usize, usize> = InOrder::default();
            let mut pending = Vec::new();
            let mut settled = vec![false; kinds.len()];
            for (i, already) in kinds.iter().enumerate() {
                if *already {
                    w.push_settled(i, i);
                    settled[i] = true;
                } else {
                    let seq = w.push_pending(i);
                    prop_assert_eq!(seq, i as u64);
                    pending.push(i);
                }
            }
            let mut released = Vec::new();
            // Settles entry i (when i is Some) and releases what is ready.
            let mut step = |w: &mut InOrder<usize, usize>, i: Option<usize>, settled: &mut Vec<bool>| {
                if let Some(i) = i {
                    let first = !settled[i];
                    prop_assert_eq!(w.settle(i as u64, i), first && released_le(&released, i));
                    settled[i] = true;
                }
                while let Some((t, r)) = w.pop_ready() {
                    prop_assert_eq!(t, r);
                    // Everything up to it is settled, and it comes next.
                    prop_assert!(settled[..=t].iter().all(|s| *s));
                    prop_assert_eq!(t, released.len());
                    released.push(t);
                }
                Ok(())
            };
            step(&mut w, None, &mut settled)?;
            for ix in &order {
                if pending.is_empty() {
                    break;
                }
                let i = pending.remove(ix.index(pending.len()));
                step(&mut w, Some(i), &mut settled)?;
            }
            for s in &strays {
                let before = w.len();
                if (*s as usize) >= kinds.len() || settled[*s as usize] {
                    prop_assert!(!w.settle(*s, 0));
                    prop_assert_eq!(w.len(), before);
                }
            }
            for i in pending.clone() {
                step(&mut w, Some(i), &mut settled)?;
            }
            step(&mut w, None, &mut settled)?;
            prop_assert!(w.is_empty());
            prop_assert_eq!(released, (0..kinds.len()).collect::<Vec<_>>());
        }
    }

    /// Whether entry `i` is still held (not yet released).
    fn released_le(released: &[usize], i: usize) -> bool {
        released.len() <= i
    }
}
