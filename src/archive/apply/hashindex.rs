//! A compact map from 64-bit keys to 32-bit values, for per-entry bookkeeping of applies
//! with millions of entries: 12 bytes an entry in sorted runs (binary searched), plus a small
//! hash table of recent insertions that is merged into the runs when it fills up. No growth
//! step ever doubles the memory held.

use std::collections::HashMap;

/// Recent insertions held before a merge.
const TAIL: usize = 1 << 16;

/// Value of a removed key in the sorted runs.
const GONE: u32 = u32::MAX;

/// A map from `u64` keys to `u32` values (`u32::MAX` is reserved).
#[derive(Default)]
pub struct HashIndex {
    keys: Vec<u64>,
    vals: Vec<u32>,
    tail: HashMap<u64, u32>,
}

impl HashIndex {
    /// The value of `key`.
    pub fn get(&self, key: u64) -> Option<u32> {
        if let Some(&v) = self.tail.get(&key) {
            return (v != GONE).then_some(v);
        }
        let i = self.keys.binary_search(&key).ok()?;
        let v = self.vals[i];
        (v != GONE).then_some(v)
    }

    /// Sets the value of `key` (`value` must not be `u32::MAX`).
    pub fn insert(&mut self, key: u64, value: u32) {
        if let Ok(i) = self.keys.binary_search(&key) {
            self.vals[i] = value;
            self.tail.remove(&key);
            return;
        }
        self.tail.insert(key, value);
        if self.tail.len() >= TAIL {
            self.merge();
        }
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: u64) {
        self.tail.remove(&key);
        if let Ok(i) = self.keys.binary_search(&key) {
            self.vals[i] = GONE;
        }
    }

    /// Moves the recent insertions into the sorted runs (one new allocation of the exact
    /// size; removed keys are dropped).
    fn merge(&mut self) {
        let mut tail: Vec<(u64, u32)> = self.tail.drain().collect();
        tail.sort_unstable_by_key(|&(k, _)| k);
        let n = self.keys.len() + tail.len();
        let mut keys = Vec::with_capacity(n);
        let mut vals = Vec::with_capacity(n);
        let (mut i, mut j) = (0, 0);
        while i < self.keys.len() || j < tail.len() {
            let take_old = j == tail.len() || (i < self.keys.len() && self.keys[i] < tail[j].0);
            let (k, v) = if take_old {
                i += 1;
                (self.keys[i - 1], self.vals[i - 1])
            } else {
                j += 1;
                tail[j - 1]
            };
            if v != GONE {
                keys.push(k);
                vals.push(v);
            }
        }
        self.keys = keys;
        self.vals = vals;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_map_across_merges() {
        let mut h = HashIndex::default();
        let mut m = HashMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..(3 * TAIL as u32 + 17) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = x % (2 * TAIL as u64);
            match i % 5 {
                0 => {
                    h.remove(k);
                    m.remove(&k);
                }
                _ => {
                    h.insert(k, i);
                    m.insert(k, i);
                }
            }
        }
        for k in 0..(2 * TAIL as u64) {
            assert_eq!(h.get(k), m.get(&k).copied(), "key {k}");
        }
    }
}
