//! The names an apply wrote or occupied, in 12 bytes each.

use std::collections::HashMap;

use super::hashindex;
use super::tree::Key;

/// The names this apply wrote (entries: kept by opaque markers) or occupied (entries,
/// implicit directories, copy-ups, whiteouts: never handed to writer threads), by directory.
///
/// Each (directory, generation, name) is kept as a 64-bit hash with a per-apply random key,
/// 12 bytes an entry whatever the name's length; the generation of a directory changes when
/// it is removed, since its inode number may come back as another directory. A chance
/// collision (about one in 2^64 per lookup, not steerable without the key) would at worst
/// keep one name an opaque marker should remove, or write one file in stream order.
#[derive(Default)]
pub(super) struct Names {
    index: hashindex::HashIndex,
    generations: HashMap<(u64, u64), u32>,
    hasher: std::collections::hash_map::RandomState,
    unpacked: u64,
}

/// Values in [`Names::index`].
const OCCUPIED: u32 = 0;
const UNPACKED: u32 = 1;

impl Names {
    fn place(&self, dir: (u64, u64), name: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        let generation = self.generations.get(&dir).copied().unwrap_or(0);
        self.hasher.hash_one((dir, generation, name))
    }

    /// Notes that this layer's entry `name` is in `dir`.
    pub(super) fn unpack(&mut self, dir: (u64, u64), name: &[u8]) {
        self.unpacked += 1;
        self.index.insert(self.place(dir, name), UNPACKED);
    }

    /// Notes that this apply made `name` in `dir` (not as an entry of its own).
    pub(super) fn occupy(&mut self, dir: (u64, u64), name: &[u8]) {
        let k = self.place(dir, name);
        if self.index.get(k).is_none() {
            self.index.insert(k, OCCUPIED);
        }
    }

    pub(super) fn occupy_all(&mut self, made: Vec<Key>) {
        for (dir, name) in made {
            self.occupy(dir, &name);
        }
    }

    pub(super) fn occupied(&self, dir: (u64, u64), name: &[u8]) -> bool {
        self.index.get(self.place(dir, name)).is_some()
    }

    pub(super) fn unpacked(&self, dir: (u64, u64), name: &[u8]) -> bool {
        self.index.get(self.place(dir, name)) == Some(UNPACKED)
    }

    pub(super) fn any_unpacked(&self) -> bool {
        self.unpacked > 0
    }

    /// Forgets every name in directory `dir`, which is being removed.
    pub(super) fn forget_dir(&mut self, dir: (u64, u64)) {
        *self.generations.entry(dir).or_insert(0) += 1;
    }
}
