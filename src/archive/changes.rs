//! Docker's naive change detection (`archive.ChangesDirs`) between two directory trees.
//!
//! This is what `docker diff` shows and what a naive-diff driver exports as a layer: for a
//! layer stored as a full tree (vfs) or read through two mounts, the layer's content is the
//! set of paths that differ from its parent's tree.
//!
//! # Rules
//!
//! * [`changes_dirs`]`(new, Some(old))` compares the tree under `new` with the tree under
//!   `old`; `old == None` means an empty old tree (every path is an Add).
//! * Add: path only in new. Delete: path only in old (a deleted directory is reported once,
//!   its children are not). Modify: mode (incl. type), uid, gid or rdev differ; for
//!   non-directories also size or mtime (`sameFsTimeSpec`: equal seconds and equal nanos, or
//!   either nanos is 0 — and then, unlike Docker, regular files are compared byte for byte,
//!   so a same-size rewrite within the second a tar recorded is still seen); or the extended
//!   attributes the exporter writes differ (all but `security.selinux` and the overlay
//!   storage attributes: Docker compares only `security.capability`, but an entry whose
//!   only change is `user.x` would then never reach the layer); symlinks also when
//!   `readlink` differs (so a retargeted symlink of the same length and mtime is caught).
//! * When new is a non-directory and old was a directory, only Modify of the path is reported
//!   (old children are not listed as deleted). When new is a directory that was a file in
//!   old, the path is Modify and every child is Add.
//! * A directory not changed itself but with changes beneath it is reported as Modify, so its
//!   owner and mode travel with the layer. The root itself is never reported.
//! * Subtrees whose (dev, ino) are identical on both sides are pruned.
//! * The result is a [`ChangeSet`], read in path-byte order; paths are absolute (`/a/b`).
//!
//! # How
//!
//! Both trees are walked together, one directory pair at a time: each side's `getdents`
//! listing is sorted and merged, so the cost is O(entries) `lstat`s and no tree of metadata
//! is ever built. The walk is iterative (an explicit stack, so deep trees cannot overflow the
//! thread stack) and holds a bounded number of descriptors per tree (`walk::DirStack`:
//! levels left behind are reopened through `..` and checked). All access is fd-relative:
//! directories are opened with `O_NOFOLLOW`, entries stat-ed with `AT_SYMLINK_NOFOLLOW`;
//! a symlink is never followed.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::FileType;

use super::fsmeta::{self, Time, Xattr};
use super::walk::{self, DirCursor, DirStack, Info};
use super::{ChangeKind, ChangeSet, Error};

/// Computes the changes that turn the tree at `old` (or an empty tree) into the tree at `new`.
///
/// See the [module documentation](self) for the exact rules. Both descriptors must be
/// directories; the trees should not change during the walk (a path that disappears between
/// listing and `lstat` is treated as absent).
pub fn changes_dirs(new: BorrowedFd<'_>, old: Option<BorrowedFd<'_>>) -> Result<ChangeSet, Error> {
    let mut set = ChangeSet::new();
    let mut dirs = Dirs {
        new: DirStack::new(new),
        old: old.map(DirStack::new),
    };
    // The path of the directory on top of the stack ("" for the root).
    let mut path: Vec<u8> = Vec::new();
    let root = Descend {
        node: None,
        has_old: old.is_some(),
        reported: true,
    };
    let mut stack = vec![Frame::open(&dirs, root, 0, &set, &path)?];

    while let Some(frame) = stack.last_mut() {
        let Some(entry) = frame.entries.get_mut(frame.next) else {
            if let Some(done) = stack.pop() {
                done.finish(&mut set, &mut dirs, &path)?;
            }
            path.truncate(stack.last().map_or(0, |f| f.path_len));
            continue;
        };
        frame.next += 1;
        let name = std::mem::take(&mut entry.name);
        let (in_new, in_old) = (entry.in_new, entry.in_old);

        let dir_len = path.len();
        path.push(b'/');
        path.extend_from_slice(&name);
        let parent = frame.at.node;
        let has_old = frame.at.has_old;
        let seen = Seen { in_new, in_old };
        match visit(&dirs, has_old, parent, &name, seen, &path, &mut set)? {
            Some((fds, at)) => {
                dirs.enter(fds)
                    .map_err(|e| Error::io(format!("entering {}", walk::show(&path)), e))?;
                stack.push(Frame::open(&dirs, at, path.len(), &set, &path)?);
            }
            None => path.truncate(dir_len),
        }
    }
    Ok(set)
}

/// Sum of `lstat` sizes of the non-directory paths of `changes` that are Add or Modify, read
/// from the tree at `root`; hard-linked inodes are counted once (Docker's `ChangesSize`).
///
/// Paths are resolved component by component without following symlinks. A path that no
/// longer exists (or now lies under a non-directory) is skipped, as Docker does; any other
/// error is returned.
pub fn changes_size(root: BorrowedFd<'_>, changes: &ChangeSet) -> Result<u64, Error> {
    let mut cursor = DirCursor::new(root);
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut size = 0u64;
    changes.try_for_each(|step| {
        let Some((name, parents)) = step.comps.split_last() else {
            return Ok(());
        };
        if step.kind == ChangeKind::Delete {
            return Ok(());
        }
        let shown = || format!("/{}", walk::show(&walk::join(step.comps)));
        cursor.hint(step.kept);
        let dir = match cursor.enter(parents) {
            Ok(dir) => dir,
            Err(e) if walk::is_absent(&e) => return Ok(()),
            Err(e) => return Err(Error::io(format!("opening the parent of {}", shown()), e)),
        };
        let info = match walk::lstat_at(dir, name) {
            Ok(info) => info,
            Err(e) if walk::is_absent(&e) => return Ok(()),
            Err(e) => return Err(Error::io(format!("lstat {}", shown()), e)),
        };
        if !info.is_dir() && (info.nlink <= 1 || seen.insert(info.id())) {
            size = size.saturating_add(info.size);
        }
        Ok(())
    })?;
    Ok(size)
}

/// The directory stacks of the two trees.
struct Dirs<'a> {
    new: DirStack<'a>,
    /// `None` when the old tree is empty.
    old: Option<DirStack<'a>>,
}

impl Dirs<'_> {
    /// The top directory of the old tree, when the current directory exists there.
    fn old_top(&self, has_old: bool) -> Option<BorrowedFd<'_>> {
        self.old.as_ref().filter(|_| has_old).map(|o| o.top())
    }

    fn enter(&mut self, (new, old): (OwnedFd, Option<OwnedFd>)) -> io::Result<()> {
        self.new.push(new)?;
        match (old, self.old.as_mut()) {
            (Some(fd), Some(stack)) => stack.push(fd),
            _ => Ok(()),
        }
    }
}

/// How a directory to walk is entered.
#[derive(Clone, Copy)]
struct Descend {
    /// Its node in the change set (`None` for the root).
    node: Option<usize>,
    /// The old side is a directory too (and on the old stack).
    has_old: bool,
    /// The directory itself is already reported (Add or Modify), or is the root.
    reported: bool,
}

/// The sides a name was listed on.
#[derive(Clone, Copy)]
struct Seen {
    in_new: bool,
    in_old: bool,
}

/// One name of a merged directory listing and the sides it appears on.
struct Entry {
    name: Vec<u8>,
    in_new: bool,
    in_old: bool,
}

/// A directory pair being walked (its descriptors are the tops of the [`Dirs`] stacks).
struct Frame {
    at: Descend,
    entries: Vec<Entry>,
    next: usize,
    /// Length of this directory's path in the shared path buffer.
    path_len: usize,
    /// Number of changes recorded before entering this directory.
    mark: usize,
}

impl Frame {
    fn open(
        dirs: &Dirs<'_>,
        at: Descend,
        path_len: usize,
        set: &ChangeSet,
        path: &[u8],
    ) -> Result<Self, Error> {
        let list = |fd: BorrowedFd<'_>| {
            walk::read_names(fd).map_err(|e| Error::io(format!("listing {}", walk::show(path)), e))
        };
        let new_names = list(dirs.new.top())?;
        let old_names = match dirs.old_top(at.has_old) {
            Some(old) => list(old)?,
            None => Vec::new(),
        };
        Ok(Frame {
            at,
            entries: merge(new_names, old_names),
            next: 0,
            path_len,
            mark: set.len(),
        })
    }

    /// Leaves the finished directory: reports it if something beneath it changed, forgets its
    /// node if nothing did. `path` still holds this directory's path.
    fn finish(self, set: &mut ChangeSet, dirs: &mut Dirs<'_>, path: &[u8]) -> Result<(), Error> {
        if let Some(node) = self.at.node {
            if set.len() > self.mark {
                if !self.at.reported {
                    set.set_kind(node, ChangeKind::Modify);
                }
            } else if set.kind(node).is_none() {
                set.truncate(node);
            }
            let leave = |e| Error::io(format!("leaving {}", walk::show(&path[..self.path_len])), e);
            dirs.new.pop().map_err(leave)?;
            if let Some(old) = dirs.old.as_mut().filter(|_| self.at.has_old) {
                old.pop().map_err(leave)?;
            }
        }
        Ok(())
    }
}
/// Merges two sorted name lists into one sorted list of unique names.
fn merge(new: Vec<Vec<u8>>, old: Vec<Vec<u8>>) -> Vec<Entry> {
    let mut out = Vec::with_capacity(new.len().max(old.len()));
    let mut new = new.into_iter().peekable();
    let mut old = old.into_iter().peekable();
    loop {
        let (in_new, in_old) = match (new.peek(), old.peek()) {
            (None, None) => break,
            (Some(_), None) => (true, false),
            (None, Some(_)) => (false, true),
            (Some(n), Some(o)) => match n.cmp(o) {
                std::cmp::Ordering::Less => (true, false),
                std::cmp::Ordering::Greater => (false, true),
                std::cmp::Ordering::Equal => (true, true),
            },
        };
        let name = match (in_new, in_old) {
            (true, true) => {
                old.next();
                new.next()
            }
            (true, false) => new.next(),
            _ => old.next(),
        };
        if let Some(name) = name {
            out.push(Entry {
                name,
                in_new,
                in_old,
            });
        }
    }
    out
}

/// The descriptors and frame of a directory to descend into.
type Child = ((OwnedFd, Option<OwnedFd>), Descend);

/// Compares `name` of the current directory pair (the tops of `dirs`; `has_old` says whether
/// the old side exists), records its change under `parent`, and returns the child to descend
/// into when the new side is a directory that needs walking. `path` is the entry's path.
fn visit(
    dirs: &Dirs<'_>,
    has_old: bool,
    parent: Option<usize>,
    name: &[u8],
    seen: Seen,
    path: &[u8],
    set: &mut ChangeSet,
) -> Result<Option<Child>, Error> {
    let shown = || walk::show(path);
    let new_dir = dirs.new.top();
    let old_dir = dirs.old_top(has_old);
    let lstat = |dir: BorrowedFd<'_>| {
        walk::lstat_opt(dir, name).map_err(|e| Error::io(format!("lstat {}", shown()), e))
    };
    let new_info = if seen.in_new { lstat(new_dir)? } else { None };
    let old_info = match old_dir {
        Some(dir) if seen.in_old => lstat(dir)?,
        _ => None,
    };
    let open = |dir: BorrowedFd<'_>| {
        walk::open_dir(dir, name)
            .map_err(|e| Error::io(format!("opening directory {}", shown()), e))
    };

    match (new_info, old_info) {
        (None, None) => Ok(None),
        (None, Some(_)) => {
            set.add(parent, name, Some(ChangeKind::Delete));
            Ok(None)
        }
        (Some(n), None) => {
            let node = set.add(parent, name, Some(ChangeKind::Add));
            if !n.is_dir() {
                return Ok(None);
            }
            let at = Descend {
                node: Some(node),
                has_old: false,
                reported: true,
            };
            Ok(Some(((open(new_dir)?, None), at)))
        }
        (Some(n), Some(o)) => {
            if n.id() == o.id() {
                return Ok(None);
            }
            let Some(old_dir) = old_dir else {
                return Ok(None);
            };
            let modified = differs(&n, &o, new_dir, old_dir, name)
                .map_err(|e| Error::io(format!("comparing {}", shown()), e))?;
            if !n.is_dir() {
                if modified {
                    set.add(parent, name, Some(ChangeKind::Modify));
                }
                return Ok(None);
            }
            let kind = modified.then_some(ChangeKind::Modify);
            let old_child = if o.is_dir() {
                Some(open(old_dir)?)
            } else {
                None
            };
            let new_child = open(new_dir)?;
            let at = Descend {
                node: Some(set.add(parent, name, kind)),
                has_old: old_child.is_some(),
                reported: modified,
            };
            Ok(Some(((new_child, old_child), at)))
        }
    }
}

/// Docker's `statDifferent`, plus the xattr and symlink-target checks.
pub(super) fn differs(
    n: &Info,
    o: &Info,
    new_dir: BorrowedFd<'_>,
    old_dir: BorrowedFd<'_>,
    name: &[u8],
) -> io::Result<bool> {
    if n.mode != o.mode || n.uid != o.uid || n.gid != o.gid || n.rdev != o.rdev {
        return Ok(true);
    }
    // Equal modes: both sides have the same type from here on.
    if !n.is_dir() && (!same_fs_time(n.mtime, o.mtime) || n.size != o.size) {
        return Ok(true);
    }
    if n.file_type() == FileType::Symlink
        && walk::read_link(new_dir, name)? != walk::read_link(old_dir, name)?
    {
        return Ok(true);
    }
    // Same size and "the same" time only because one side has no sub-second part (it came
    // from a tar): Docker would call this unchanged. A rewrite within that second is real,
    // so in this ambiguous case only, compare the bytes.
    if n.file_type() == FileType::RegularFile
        && n.mtime != o.mtime
        && !same_content(new_dir, old_dir, name)?
    {
        return Ok(true);
    }
    Ok(xattrs(new_dir, name)? != xattrs(old_dir, name)?)
}

/// Whether `name` has the same bytes in both directories (regular files, not following links).
fn same_content(new_dir: BorrowedFd<'_>, old_dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    use std::io::Read;
    let open = |d: BorrowedFd<'_>| crate::fsutil::open_regular_at(d, OsStr::from_bytes(name));
    let (mut a, mut b) = (open(new_dir)?, open(old_dir)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut a, &mut ba)?;
        let nb = read_full(&mut b, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
    fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match f.read(&mut buf[got..])? {
                0 => break,
                n => got += n,
            }
        }
        Ok(got)
    }
}

/// Docker's `sameFsTimeSpec`: a timestamp with 0 ns (from a filesystem or archive without
/// sub-second precision) equals any time in the same second.
fn same_fs_time(a: Time, b: Time) -> bool {
    a.sec == b.sec && (a.nsec == b.nsec || a.nsec == 0 || b.nsec == 0)
}

/// The extended attributes of `dir/name` (not following a symlink) that a layer tar carries,
/// sorted by name: an attribute the exporter writes is part of the entry, so a change to it
/// alone is a change.
fn xattrs(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<Xattr>> {
    let mut all = fsmeta::read_at(dir, OsStr::from_bytes(name))?;
    all.retain(|(n, _)| super::export::travels(n));
    Ok(all)
}

#[cfg(test)]
#[path = "changes_tests.rs"]
mod tests;
