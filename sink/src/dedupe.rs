//! Duplicate event ids: an HTTP client that retries after a 503 (the
//! broker may have taken the first attempt) sends one event twice; ingest
//! and the transform are stateless, so both copies reach a pseudonymized
//! topic with the same keyed `event_id` and different source coordinates.
//! Both land in the same Kafka partition (the key is the pseudonym).
//!
//! The rule is a function of the partition's log alone, so every run, and
//! every restart after a kill -9, decides the same: **a record is a
//! duplicate when a record with the same event id lies at most `window`
//! offsets before it in the same partition.** A restarted sink re-reads the
//! `window` offsets before `next_offset` (only their event ids) to rebuild
//! what it had seen. The default window of 50 000 records is ~10
//! minutes of a partition at 80 records/s (a busy hub's share); retries come
//! within seconds. Memory: ~50 bytes per remembered record and partition.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

/// 128 bits of an event id (two SipHash runs over distinct tags; std's
/// `DefaultHasher::new` has fixed keys, so the value is the same in every
/// process): ~50 bytes per remembered record instead of the id's string,
/// and a chance collision (which would drop a record) is ~2^-100 per window.
fn digest(id: &str) -> u128 {
    let h = |tag: u8| {
        let mut s = std::hash::DefaultHasher::new();
        (tag, id).hash(&mut s);
        s.finish()
    };
    (u128::from(h(1)) << 64) | u128::from(h(2))
}

/// The event ids seen in the last `window` offsets of one partition.
#[derive(Debug, Default)]
pub struct Window {
    window: i64,
    last: HashMap<u128, i64>,
    order: VecDeque<(i64, u128)>,
}

impl Window {
    /// A window of `window` offsets; 0 turns de-duplication off.
    pub fn new(window: i64) -> Self {
        Window {
            window,
            ..Default::default()
        }
    }

    /// Where a restarted reader must start for the window to be whole
    /// before `next_offset` (never below the partition's low watermark).
    pub fn rebuild_from(&self, next_offset: i64, low: i64) -> i64 {
        (next_offset - self.window).max(low).min(next_offset)
    }

    /// Records the event id at `offset` (offsets must rise); true when it
    /// is a duplicate of one seen within the window.
    pub fn see(&mut self, offset: i64, id: &str) -> bool {
        if self.window <= 0 {
            return false;
        }
        while let Some((o, _)) = self.order.front() {
            if *o >= offset - self.window {
                break;
            }
            let (o, old) = self.order.pop_front().expect("checked");
            if self.last.get(&old) == Some(&o) {
                self.last.remove(&old);
            }
        }
        let key = digest(id);
        let dup = self.last.get(&key).is_some_and(|o| *o < offset);
        self.last.insert(key, offset);
        self.order.push_back((offset, key));
        dup
    }

    /// Ids held (for tests and memory bounds).
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// The event id of a pseudonymized record from its bytes, without a full
/// decode: every pseudo table's first field is `event_id` (a string), so it
/// follows the framing (SOE: 10 bytes; Confluent: 5). Used to rebuild a
/// window; `None` for anything else.
pub fn event_id_of(msg: &[u8]) -> Option<&str> {
    let body = match msg {
        [0xC3, 0x01, rest @ ..] if rest.len() >= 8 => &rest[8..],
        [0x00, rest @ ..] if rest.len() >= 4 => &rest[4..],
        _ => return None,
    };
    // Avro long: zigzag varint.
    let (mut n, mut shift, mut i) = (0u64, 0u32, 0usize);
    loop {
        let b = *body.get(i)?;
        n |= u64::from(b & 0x7f) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let len = ((n >> 1) as i64) ^ -((n & 1) as i64);
    let len = usize::try_from(len).ok()?;
    std::str::from_utf8(body.get(i..i + len)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rule, by brute force over the whole log.
    fn oracle(log: &[u8], window: i64) -> Vec<bool> {
        (0..log.len())
            .map(|o| {
                let from = (o as i64 - window).max(0) as usize;
                log[from..o].contains(&log[o])
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Restarts anywhere (a kill -9 loses the window; the rebuild reads
        /// it back from the log) decide exactly as one run would.
        #[test]
        fn restarts_decide_as_one_run_does(
            log in proptest::collection::vec(0u8..40, 1..400),
            window in 1i64..60,
            restarts in proptest::collection::vec(0usize..400, 0..5),
        ) {
            let want = oracle(&log, window);
            let mut got = Vec::new();
            let mut w = Window::new(window);
            for (o, id) in log.iter().enumerate() {
                if restarts.contains(&o) {
                    w = Window::new(window);
                    for r in w.rebuild_from(o as i64, 0)..o as i64 {
                        w.see(r, &log[r as usize].to_string());
                    }
                }
                got.push(w.see(o as i64, &id.to_string()));
                prop_assert!(w.len() as i64 <= window + 1);
            }
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn every_shipped_pseudo_schema_starts_with_the_event_id() {
        // event_id_of reads the first field: the schemas must keep it there.
        let store = chitose_schemas::catalog::SchemaStore::embedded();
        let mut n = 0;
        for e in store
            .iter()
            .filter(|e| e.full_name.starts_with("chitose.pseudo."))
        {
            let v: serde_json::Value = serde_json::from_str(&e.text).unwrap();
            let first = &v["fields"][0];
            assert_eq!(first["name"], "event_id", "{} v{}", e.full_name, e.version);
            assert_eq!(first["type"], "string", "{} v{}", e.full_name, e.version);
            n += 1;
        }
        let shipped = chitose_schemas::catalog::EMBEDDED
            .iter()
            .filter(|(path, _)| path.starts_with("pseudo/"))
            .count();
        assert!(shipped >= 24, "every version of every table: {shipped}");
        assert_eq!(n, shipped);
    }

    #[test]
    fn zero_turns_it_off_and_ids_read_from_bytes() {
        let mut w = Window::new(0);
        assert!(!w.see(0, "a") && !w.see(1, "a"));
        let mut soe = vec![0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8];
        soe.push(6); // zigzag 3
        soe.extend_from_slice(b"abcrest");
        assert_eq!(event_id_of(&soe), Some("abc"));
        let mut cf = vec![0x00, 0, 0, 0, 7, 4];
        cf.extend_from_slice(b"xy");
        assert_eq!(event_id_of(&cf), Some("xy"));
        assert_eq!(event_id_of(b"junk"), None);
        assert_eq!(
            event_id_of(&[0xC3, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 40, b'a']),
            None
        );
    }
}
