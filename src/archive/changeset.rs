//! [`ChangeSet`]: the changes between two trees, stored compactly as a tree of names.
//!
//! A change list of full paths costs the sum of the paths' lengths, which grows with the
//! square of the depth (2,500 nested 250-byte names are 1.5 GB of paths). A change set
//! stores each name once, with a link to its parent, and materialises one path at a time
//! when it is read, in path-byte order.
//!
//! # Order
//!
//! Paths come out sorted by their bytes, as `docker diff` lists them. In one directory, a
//! child's own path sorts by its name, but the paths beneath it sort by `name/`: `a`, `a-b`,
//! `a/b`, `a0` (`-` < `/` < `0`). The reader therefore orders, per directory, each child's
//! own entry and its subtree as separate items, and the subtree of one child is always one
//! contiguous run.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use super::walk;
use super::{Change, ChangeKind, Error};

/// Parent index of a top-level name.
const TOP: usize = usize::MAX;

/// Most bytes of path names that one listing or export of a change set carries: 4 GiB. Every
/// path repeats all its parents' names, so a tree a container makes with a hundred thousand
/// `mkdir`s (a chain 100,000 deep) names ten gigabytes of paths; such a set is refused before
/// anything is written instead of streaming for hours. Real layers stay far below (ten
/// million entries with 100-byte paths are 1 GB).
pub const MAX_PATH_BYTES: u64 = 4 << 30;

/// One name of the tree.
#[derive(Debug, Clone, Copy)]
struct Node {
    parent: usize,
    /// Start of the name in `names`; it ends where the next node's starts.
    start: usize,
    /// The change at this path; `None` for a directory kept only for what is beneath it.
    kind: Option<ChangeKind>,
}

/// A set of changes between two trees, as a tree of names (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    nodes: Vec<Node>,
    names: Vec<u8>,
    changes: usize,
}

impl ChangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set from absolute paths (any order). A path listed twice is kept once, with
    /// the first kind in the order Modify, Add, Delete. Paths with `.`, `..` or NUL bytes, and
    /// the root itself, are refused.
    pub fn from_changes<'c>(list: impl IntoIterator<Item = &'c Change>) -> Result<Self, Error> {
        let mut set = ChangeSet::new();
        let mut index: HashMap<(usize, Vec<u8>), usize> = HashMap::new();
        for change in list {
            let comps = walk::components(&change.path)?;
            let mut parent = None;
            for comp in &comps {
                let key = (parent.unwrap_or(TOP), comp.to_vec());
                let node = match index.get(&key) {
                    Some(&node) => node,
                    None => {
                        let node = set.add(parent, comp, None);
                        index.insert(key, node);
                        node
                    }
                };
                parent = Some(node);
            }
            if let Some(node) = parent {
                let kind = match set.kind(node) {
                    Some(old) => old.min(change.kind),
                    None => change.kind,
                };
                set.set_kind(node, kind);
            }
        }
        Ok(set)
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.changes
    }

    /// Whether there are no changes.
    pub fn is_empty(&self) -> bool {
        self.changes == 0
    }

    /// Total bytes of the changes' full paths, each with its leading `/`: what a listing or
    /// an export writes in names alone. One pass over the tree, no path is built.
    pub fn path_bytes(&self) -> u64 {
        let mut lens: Vec<u64> = Vec::with_capacity(self.nodes.len());
        let mut total = 0u64;
        for (i, n) in self.nodes.iter().enumerate() {
            let own = self.name(i).len() as u64 + 1;
            // Parents are always added before their children.
            let above = lens.get(n.parent).copied().unwrap_or(0);
            let len = above.saturating_add(own);
            lens.push(len);
            if n.kind.is_some() {
                total = total.saturating_add(len);
            }
        }
        total
    }

    /// The changes in path-byte order, each path materialised as it is yielded.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            sorted: Sorted::new(self),
        }
    }

    /// Calls `f` for every change, in path-byte order, without building full paths; stops at
    /// the first error.
    pub fn try_for_each<E>(&self, mut f: impl FnMut(Step<'_>) -> Result<(), E>) -> Result<(), E> {
        let mut sorted = Sorted::new(self);
        while let Some((node, kind, kept)) = sorted.next_item() {
            sorted.comps.push(self.name(node));
            let r = f(Step {
                comps: &sorted.comps,
                kind,
                kept,
            });
            sorted.comps.pop();
            r?;
        }
        Ok(())
    }

    /// Adds `name` under `parent` (`None`: at the top) and returns its node. The caller
    /// guarantees that no sibling has the same name.
    pub(crate) fn add(
        &mut self,
        parent: Option<usize>,
        name: &[u8],
        kind: Option<ChangeKind>,
    ) -> usize {
        self.nodes.push(Node {
            parent: parent.unwrap_or(TOP),
            start: self.names.len(),
            kind,
        });
        self.names.extend_from_slice(name);
        if kind.is_some() {
            self.changes += 1;
        }
        self.nodes.len() - 1
    }

    /// The change recorded at `node`.
    pub(crate) fn kind(&self, node: usize) -> Option<ChangeKind> {
        self.nodes.get(node).and_then(|n| n.kind)
    }

    /// The parent of `node` (`None` at the top).
    pub(crate) fn parent(&self, node: usize) -> Option<usize> {
        self.nodes.get(node).map(|n| n.parent).filter(|&p| p != TOP)
    }

    /// Records `kind` at `node`.
    pub(crate) fn set_kind(&mut self, node: usize, kind: ChangeKind) {
        if let Some(n) = self.nodes.get_mut(node) {
            if n.kind.is_none() {
                self.changes += 1;
            }
            n.kind = Some(kind);
        }
    }

    /// Drops every node from `mark` on (a subtree just walked that holds nothing).
    pub(crate) fn truncate(&mut self, mark: usize) {
        if let Some(start) = self.nodes.get(mark).map(|n| n.start) {
            let dropped = self.nodes[mark..]
                .iter()
                .filter(|n| n.kind.is_some())
                .count();
            self.changes -= dropped;
            self.nodes.truncate(mark);
            self.names.truncate(start);
        }
    }

    fn name(&self, node: usize) -> &[u8] {
        let start = self.nodes[node].start;
        let end = self
            .nodes
            .get(node + 1)
            .map_or(self.names.len(), |n| n.start);
        &self.names[start..end]
    }
}

impl<'a> IntoIterator for &'a ChangeSet {
    type Item = Change;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// One change as [`ChangeSet::try_for_each`] presents it.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// The path's components (never empty; the last is the changed entry's own name).
    pub comps: &'a [&'a [u8]],
    /// What happened to it.
    pub kind: ChangeKind,
    /// How many leading parent directories this path shares with the previous step's path
    /// (0 for the first), so a walker can keep them open without comparing names.
    pub kept: usize,
}

/// Iterator over a [`ChangeSet`] in path-byte order.
pub struct Iter<'a> {
    sorted: Sorted<'a>,
}

impl Iterator for Iter<'_> {
    type Item = Change;

    fn next(&mut self) -> Option<Change> {
        let (node, kind, _) = self.sorted.next_item()?;
        let name = self.sorted.set.name(node);
        let len = self.sorted.comps.iter().map(|c| c.len() + 1).sum::<usize>() + name.len() + 1;
        let mut path = Vec::with_capacity(len);
        for comp in self.sorted.comps.iter().chain([&name]) {
            path.push(b'/');
            path.extend_from_slice(comp);
        }
        Some(Change {
            path: PathBuf::from(OsString::from_vec(path)),
            kind,
        })
    }
}

/// One item of a directory's ordered listing: a child's own change, or its subtree.
#[derive(Clone, Copy)]
struct Item {
    node: usize,
    subtree: bool,
}

/// The ordered traversal behind [`Iter`] and [`ChangeSet::try_for_each`] (an explicit stack,
/// no recursion).
struct Sorted<'a> {
    set: &'a ChangeSet,
    /// All nodes, grouped by parent (top level first) and sorted by name within a group.
    by_parent: Vec<usize>,
    /// `groups[p + 1]..groups[p + 2]` is node `p`'s range of `by_parent`; `groups[0]..[1]`
    /// the top level's.
    groups: Vec<usize>,
    /// Per open directory: its ordered items and the next one to yield.
    stack: Vec<(Vec<Item>, usize)>,
    /// Names of the open directories below the root.
    comps: Vec<&'a [u8]>,
    /// The fewest open directories since the previous item was yielded.
    low: usize,
}

impl<'a> Sorted<'a> {
    fn new(set: &'a ChangeSet) -> Self {
        let group = |n: usize| set.nodes[n].parent.wrapping_add(1);
        let mut by_parent: Vec<usize> = (0..set.nodes.len()).collect();
        by_parent.sort_unstable_by(|&a, &b| {
            group(a)
                .cmp(&group(b))
                .then_with(|| set.name(a).cmp(set.name(b)))
        });
        let mut groups = vec![0usize; set.nodes.len() + 2];
        for &n in &by_parent {
            groups[group(n) + 1] += 1;
        }
        for i in 1..groups.len() {
            groups[i] += groups[i - 1];
        }
        let mut sorted = Sorted {
            set,
            by_parent,
            groups,
            stack: Vec::new(),
            comps: Vec::new(),
            low: 0,
        };
        let top = sorted.items(0);
        sorted.stack.push((top, 0));
        sorted
    }

    /// The ordered items of group `g` (0: top level, `p + 1`: children of node `p`).
    fn items(&self, g: usize) -> Vec<Item> {
        let children = &self.by_parent[self.groups[g]..self.groups[g + 1]];
        let mut items = Vec::with_capacity(children.len());
        for &c in children {
            if self.set.nodes[c].kind.is_some() {
                items.push(Item {
                    node: c,
                    subtree: false,
                });
            }
            if self.groups[c + 2] > self.groups[c + 1] {
                items.push(Item {
                    node: c,
                    subtree: true,
                });
            }
        }
        let key = |i: &Item| {
            let tail: &[u8] = if i.subtree { b"/" } else { b"" };
            self.set.name(i.node).iter().chain(tail)
        };
        items.sort_by(|a, b| key(a).cmp(key(b)));
        items
    }

    /// The next change and how many parent directories it shares with the previous one;
    /// `self.comps` then holds its parent directories' names.
    fn next_item(&mut self) -> Option<(usize, ChangeKind, usize)> {
        loop {
            let (items, pos) = self.stack.last_mut()?;
            let Some(&item) = items.get(*pos) else {
                self.stack.pop();
                self.comps.pop();
                self.low = self.low.min(self.comps.len());
                continue;
            };
            *pos += 1;
            if item.subtree {
                let children = self.items(item.node + 1);
                self.stack.push((children, 0));
                self.comps.push(self.set.name(item.node));
                continue;
            }
            if let Some(kind) = self.set.nodes[item.node].kind {
                let kept = self.low;
                self.low = self.comps.len();
                return Some((item.node, kind, kept));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChangeKind::{Add, Delete, Modify};

    fn change(path: &str, kind: ChangeKind) -> Change {
        Change {
            path: path.into(),
            kind,
        }
    }

    fn listed(set: &ChangeSet) -> Vec<(String, ChangeKind)> {
        set.iter()
            .map(|c| (c.path.to_string_lossy().into_owned(), c.kind))
            .collect()
    }

    #[test]
    fn path_bytes_counts_every_listed_path_whole() {
        let list = [
            change("/a", Add),
            change("/a/bb", Add),
            change("/a/bb/ccc", Delete),
            change("/x/y", Modify),
        ];
        let set = ChangeSet::from_changes(&list).unwrap();
        let listed: u64 = set.iter().map(|c| c.path.as_os_str().len() as u64).sum();
        assert_eq!(set.path_bytes(), listed);
        assert_eq!(set.path_bytes(), 2 + 5 + 9 + 4, "/x itself is not listed");
        assert_eq!(ChangeSet::new().path_bytes(), 0);
    }

    #[test]
    fn yields_path_byte_order_and_dedups() {
        let list = [
            change("/a0", Add),
            change("/a/b", Add),
            change("/a-b", Delete),
            change("/a", Modify),
            change("/a/b", Delete),
            change("/z/y/x", Add),
            change("/z/y/w", Add),
        ];
        let set = ChangeSet::from_changes(&list).unwrap();
        assert_eq!(set.len(), 6);
        let want = [
            ("/a", Modify),
            ("/a-b", Delete),
            ("/a/b", Add),
            ("/a0", Add),
            ("/z/y/w", Add),
            ("/z/y/x", Add),
        ];
        let want: Vec<_> = want.iter().map(|(p, k)| (p.to_string(), *k)).collect();
        assert_eq!(listed(&set), want);
        let mut seen = Vec::new();
        set.try_for_each(|step| {
            seen.push((walk::join(step.comps), step.kind, step.kept));
            Ok::<(), ()>(())
        })
        .unwrap();
        let kept = [0, 0, 0, 0, 0, 2];
        let joined: Vec<_> = want
            .iter()
            .zip(kept)
            .map(|((p, k), kept)| (p.as_bytes()[1..].to_vec(), *k, kept))
            .collect();
        assert_eq!(seen, joined);
    }

    #[test]
    fn refuses_bad_paths() {
        for bad in ["/", "/a/../b", "/a/./b"] {
            assert!(
                ChangeSet::from_changes(&[change(bad, Add)]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn truncate_forgets_nodes_and_counts() {
        let mut set = ChangeSet::new();
        let a = set.add(None, b"a", Some(Add));
        let mark = 1;
        let b = set.add(Some(a), b"b", None);
        set.set_kind(b, Modify);
        assert_eq!(set.len(), 2);
        set.truncate(mark);
        assert_eq!(set.len(), 1);
        assert_eq!(listed(&set), vec![("/a".to_string(), Add)]);
    }
}
