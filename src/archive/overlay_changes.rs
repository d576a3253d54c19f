//! Native change detection for overlay layers: the changes of a layer against its direct
//! parent, computed from the layer's own `diff/` directory and lookups into the lower layers,
//! without mounting anything and without walking what did not change.
//!
//! The result is, by construction, what [`super::changes::changes_dirs`] reports for the two
//! mounted trees (the layer over its parent, and the parent): at each directory of `diff/`
//! two lists of lower directories are carried — OLD, the parent's merged view of that
//! directory, and NEW, the lower directories still showing through in the layer (the same as
//! OLD, or nothing for an opaque or freshly replaced directory). Every entry of `diff/` is
//! compared with the topmost OLD entry by the same rules as the naive walk (`differs`); a
//! whiteout is a deletion where OLD has something to delete; where nothing shows through,
//! names only in OLD are deletions. Directories that exist only in lower layers are never
//! opened: they cannot have changed.
//!
//! One deliberate difference from the naive walk: hard links. Linking to a lower file through
//! the mount copies it up, and every name of that inode in `diff/` then belongs to the layer
//! (overlay2 exports the whole `diff/`, so all of them travel). A multiply-linked
//! non-directory of `diff/` that compares unchanged is therefore still reported (as Modify,
//! with its directories) when another name of its inode is reported, so the exporter writes
//! them as one file and its links instead of a lone copy.
//!
//! The walk is iterative (an explicit stack of directories, so any depth runs on any thread)
//! and holds a bounded number of descriptors per layer (`walk::DirStack`).

use std::collections::{BTreeMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::FileType;

use super::apply::tree::is_opaque;
use super::changes::differs;
use super::walk::{self, DirStack, Info};
use super::{ChangeKind, ChangeSet, Error};

fn is_whiteout(i: &Info) -> bool {
    i.file_type() == FileType::CharacterDevice && i.rdev == 0
}

/// The topmost lower entry at a name: the lower layer holding it, its stat, and (for a
/// directory) the lower layers merged at it, topmost first, with their opened directories.
struct Hit {
    holder: usize,
    info: Info,
    merged: Vec<(usize, OwnedFd)>,
}

/// Looks `name` up in the merged view of the lower layers `old` (indices into `lowers`, whose
/// tops are the directories being walked).
fn lookup(lowers: &[DirStack<'_>], old: &[usize], name: &[u8]) -> std::io::Result<Option<Hit>> {
    for (i, &j) in old.iter().enumerate() {
        let dir = lowers[j].top();
        let Some(info) = walk::lstat_opt(dir, name)? else {
            continue;
        };
        if is_whiteout(&info) {
            return Ok(None);
        }
        if !info.is_dir() {
            let merged = Vec::new();
            return Ok(Some(Hit {
                holder: j,
                info,
                merged,
            }));
        }
        let first = walk::open_dir(dir, name)?;
        let opaque = is_opaque(first.as_fd());
        let mut merged = vec![(j, first)];
        if !opaque {
            for &k in &old[i + 1..] {
                let below = lowers[k].top();
                match walk::lstat_opt(below, name)? {
                    None => continue,
                    Some(b) if b.is_dir() => {
                        let fd = walk::open_dir(below, name)?;
                        let opaque = is_opaque(fd.as_fd());
                        merged.push((k, fd));
                        if opaque {
                            break;
                        }
                    }
                    Some(_) => break, // a whiteout or a non-directory hides what is below
                }
            }
        }
        return Ok(Some(Hit {
            holder: j,
            info,
            merged,
        }));
    }
    Ok(None)
}

/// The names visible in the merged view of the lower layers `old`.
fn lower_names(lowers: &[DirStack<'_>], old: &[usize]) -> std::io::Result<Vec<Vec<u8>>> {
    let mut seen: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
    for &j in old {
        let dir = lowers[j].top();
        for name in walk::read_names(dir)? {
            if seen.contains_key(&name) {
                continue;
            }
            let present = match walk::lstat_opt(dir, &name)? {
                Some(info) => !is_whiteout(&info),
                None => false,
            };
            seen.insert(name, present);
        }
    }
    Ok(seen
        .into_iter()
        .filter(|(_, p)| *p)
        .map(|(n, _)| n)
        .collect())
}

/// How a directory of `diff/` is walked.
struct Descend {
    /// Its node in the change set (`None` for the root).
    node: Option<usize>,
    /// OLD: the lower layers merged at this directory in the parent's view, topmost first.
    old: Vec<usize>,
    /// NEW is OLD (the lower directories still show through in the layer); otherwise nothing.
    shows_through: bool,
    /// The directory itself is already reported, or is the root.
    reported: bool,
}

/// A directory of `diff/` being walked (its descriptors are the stacks' tops).
struct Frame {
    at: Descend,
    names: Vec<Vec<u8>>,
    next: usize,
    /// Length of this directory's path in the shared path buffer.
    path_len: usize,
    /// Changes recorded before entering this directory.
    mark: usize,
    /// Hard-link candidates recorded before entering this directory.
    candidates: usize,
}

/// A directory to descend into: how, and its descriptors in `diff/` and the merged lowers.
type Child = (Descend, OwnedFd, Vec<(usize, OwnedFd)>);

/// State of one walk.
struct Walk<'a> {
    set: ChangeSet,
    upper: DirStack<'a>,
    /// One stack per lower layer, as deep as the walk is inside that layer.
    lowers: Vec<DirStack<'a>>,
    path: Vec<u8>,
    /// Inodes of multiply-linked non-directories reported as changed.
    linked: HashSet<(u64, u64)>,
    /// Unchanged multiply-linked non-directories of `diff/`: their inode and node.
    candidates: Vec<((u64, u64), usize)>,
}

impl Walk<'_> {
    fn err(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(format!("{what} {}", walk::show(&self.path)), e)
    }

    /// Lists the directory on top of the stacks (path `self.path`) and records the deletions
    /// of what only OLD had when nothing of it shows through.
    fn open(&mut self, at: Descend) -> Result<Frame, Error> {
        let mark = self.set.len();
        let names = walk::read_names(self.upper.top()).map_err(|e| self.err("listing", e))?;
        if !at.shows_through && !at.old.is_empty() {
            let gone = lower_names(&self.lowers, &at.old)
                .map_err(|e| self.err("listing lower layers of", e))?;
            for name in gone {
                if names.binary_search(&name).is_err() {
                    self.set.add(at.node, &name, Some(ChangeKind::Delete));
                }
            }
        }
        Ok(Frame {
            at,
            names,
            next: 0,
            path_len: self.path.len(),
            mark,
            candidates: self.candidates.len(),
        })
    }

    /// Enters `child`: its descriptors go on the stacks.
    fn enter(&mut self, (at, upper, merged): Child) -> Result<Descend, Error> {
        let r = self.upper.push(upper).and_then(|()| {
            merged
                .into_iter()
                .try_for_each(|(j, fd)| self.lowers[j].push(fd))
        });
        r.map_err(|e| self.err("entering", e))?;
        Ok(at)
    }

    /// Leaves the finished directory `done` (path `self.path`).
    fn finish(&mut self, done: Frame) -> Result<(), Error> {
        let Some(node) = done.at.node else {
            return Ok(());
        };
        if self.set.len() > done.mark {
            if !done.at.reported {
                self.set.set_kind(node, ChangeKind::Modify);
            }
        } else if self.set.kind(node).is_none() && self.candidates.len() == done.candidates {
            self.set.truncate(node);
        }
        let mut r = self.upper.pop();
        for &j in &done.at.old {
            r = r.and(self.lowers[j].pop());
        }
        r.map_err(|e| self.err("leaving", e))
    }

    /// Compares entry `name` of the current directory (walked as `at`) with the lower layers,
    /// records its change, and returns the directory to descend into, if any.
    fn entry(&mut self, at: &Descend, name: &[u8]) -> Result<Option<Child>, Error> {
        let upper = self.upper.top();
        let Some(n) = walk::lstat_opt(upper, name).map_err(|e| self.err("lstat", e))? else {
            return Ok(None); // vanished while walking
        };
        let hit = lookup(&self.lowers, &at.old, name)
            .map_err(|e| self.err("looking up lower layers for", e))?;
        if is_whiteout(&n) {
            if hit.is_some() {
                self.set.add(at.node, name, Some(ChangeKind::Delete));
            }
            return Ok(None);
        }
        let open = |w: &Walk| walk::open_dir(w.upper.top(), name).map_err(|e| w.err("opening", e));
        let Some(hit) = hit else {
            let node = self.set.add(at.node, name, Some(ChangeKind::Add));
            if !n.is_dir() {
                self.note_link(&n, node, true);
                return Ok(None);
            }
            let child = Descend {
                node: Some(node),
                old: Vec::new(),
                shows_through: false,
                reported: true,
            };
            return Ok(Some((child, open(self)?, Vec::new())));
        };
        let holder = self.lowers[hit.holder].top();
        let modified =
            differs(&n, &hit.info, upper, holder, name).map_err(|e| self.err("comparing", e))?;
        let node = self
            .set
            .add(at.node, name, modified.then_some(ChangeKind::Modify));
        if !n.is_dir() {
            self.note_link(&n, node, modified);
            if !modified && self.candidates.last().map(|c| c.1) != Some(node) {
                self.set.truncate(node);
            }
            return Ok(None);
        }
        let upper_child = open(self)?;
        let child = if hit.info.is_dir() {
            Descend {
                node: Some(node),
                old: hit.merged.iter().map(|(j, _)| *j).collect(),
                shows_through: at.shows_through && !is_opaque(upper_child.as_fd()),
                reported: modified,
            }
        } else {
            Descend {
                node: Some(node),
                old: Vec::new(),
                shows_through: false,
                reported: true,
            }
        };
        let merged = if hit.info.is_dir() {
            hit.merged
        } else {
            Vec::new()
        };
        Ok(Some((child, upper_child, merged)))
    }

    /// Remembers a multiply-linked non-directory of `diff/`: a changed one makes every name of
    /// its inode part of the layer, an unchanged one may become part of it that way.
    fn note_link(&mut self, n: &Info, node: usize, changed: bool) {
        if n.nlink <= 1 {
            return;
        }
        if changed {
            self.linked.insert(n.id());
        } else {
            self.candidates.push((n.id(), node));
        }
    }

    /// Reports every unchanged name of an inode that also has a changed name (and the
    /// directories above it), so the link travels with the layer.
    fn promote_links(&mut self) {
        for &(id, node) in &self.candidates {
            if !self.linked.contains(&id) {
                continue;
            }
            let mut at = Some(node);
            while let Some(n) = at {
                if self.set.kind(n).is_some() {
                    break;
                }
                self.set.set_kind(n, ChangeKind::Modify);
                at = self.set.parent(n);
            }
        }
    }
}

/// The changes of the overlay layer whose `diff/` is `upper`, against the merged view of
/// `lowers` (its parent's `diff/` and the parent's lowers, topmost first).
pub fn overlay_changes(
    upper: BorrowedFd<'_>,
    lowers: &[BorrowedFd<'_>],
) -> Result<ChangeSet, Error> {
    let roots: Vec<OwnedFd> = lowers
        .iter()
        .map(|l| walk::reopen_dir(*l))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::io("opening lower layers", e))?;
    let mut w = Walk {
        set: ChangeSet::new(),
        upper: DirStack::new(upper),
        lowers: roots.iter().map(|r| DirStack::new(r.as_fd())).collect(),
        path: Vec::new(),
        linked: HashSet::new(),
        candidates: Vec::new(),
    };
    let root = Descend {
        node: None,
        old: (0..roots.len()).collect(),
        shows_through: true,
        reported: true,
    };
    let mut stack = vec![w.open(root)?];
    while let Some(frame) = stack.last_mut() {
        let Some(slot) = frame.names.get_mut(frame.next) else {
            if let Some(done) = stack.pop() {
                w.finish(done)?;
            }
            w.path.truncate(stack.last().map_or(0, |f| f.path_len));
            continue;
        };
        frame.next += 1;
        let name = std::mem::take(slot);
        let dir_len = w.path.len();
        w.path.push(b'/');
        w.path.extend_from_slice(&name);
        match w.entry(&frame.at, &name)? {
            Some(child) => {
                let at = w.enter(child)?;
                stack.push(w.open(at)?);
            }
            None => w.path.truncate(dir_len),
        }
    }
    w.promote_links();
    Ok(w.set)
}
