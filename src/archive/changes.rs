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
mod tests {
    use std::fs;
    use std::os::fd::AsFd;
    use std::path::Path;

    use std::path::PathBuf;

    use super::*;
    use crate::archive::walk::testutil::*;
    use crate::archive::Change;
    use ChangeKind::{Add, Delete, Modify};

    fn diff(new: &Path, old: Option<&Path>) -> Vec<(String, ChangeKind)> {
        let n = dirfd(new);
        let o = old.map(dirfd);
        changes_dirs(n.as_fd(), o.as_ref().map(|o| o.as_fd()))
            .unwrap()
            .iter()
            .map(|c| (c.path.to_string_lossy().into_owned(), c.kind))
            .collect()
    }

    fn expect(list: &[(&str, ChangeKind)]) -> Vec<(String, ChangeKind)> {
        list.iter().map(|(p, k)| (p.to_string(), *k)).collect()
    }

    /// A scratch directory with empty `old` and `new` trees.
    fn pair() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
        fs::create_dir(&old).unwrap();
        fs::create_dir(&new).unwrap();
        (tmp, old, new)
    }

    /// Writes the same file into both trees.
    fn both(old: &Path, new: &Path, rel: &str, content: &[u8]) {
        file(old, rel, content);
        file(new, rel, content);
    }

    #[test]
    fn add_modify_delete() {
        let (_t, old, new) = pair();
        both(&old, &new, "same", b"1");
        file(&old, "b", b"2");
        file(&new, "b", b"22");
        file(&old, "c", b"3");
        file(&new, "d", b"4");
        assert_eq!(
            diff(&new, Some(&old)),
            expect(&[("/b", Modify), ("/c", Delete), ("/d", Add)])
        );
    }

    #[test]
    fn identical_trees_have_no_changes() {
        let (_t, old, new) = pair();
        both(&old, &new, "a/b/c", b"x");
        both(&old, &new, "a/d", b"y");
        // Directory mtimes differ (created at different times) and never count.
        set_mtime(&old.join("a"), 1, 0);
        assert_eq!(diff(&new, Some(&old)), vec![]);
    }

    #[test]
    fn directory_with_changed_child_is_modified() {
        let (_t, old, new) = pair();
        both(&old, &new, "d/x", b"x");
        both(&old, &new, "d/e/keep", b"k");
        both(&old, &new, "quiet/q", b"q");
        file(&new, "d/x", b"xx");
        file(&new, "d/e/f", b"new");
        assert_eq!(
            diff(&new, Some(&old)),
            expect(&[
                ("/d", Modify),
                ("/d/e", Modify),
                ("/d/e/f", Add),
                ("/d/x", Modify),
            ])
        );
    }

    #[test]
    fn directory_attribute_change_is_reported_once() {
        let (_t, old, new) = pair();
        both(&old, &new, "d/x", b"x");
        lchown(&new.join("d"), 5, 5);
        file(&new, "d/y", b"y");
        assert_eq!(
            diff(&new, Some(&old)),
            expect(&[("/d", Modify), ("/d/y", Add)])
        );
    }

    #[test]
    fn type_changes() {
        let (_t, old, new) = pair();
        // file -> directory: Modify, children Add.
        file(&old, "f", b"file");
        file(&new, "f/x", b"child");
        // directory -> file: Modify only, old children not listed.
        file(&old, "g/1", b"1");
        file(&old, "g/2", b"2");
        file(&new, "g", b"file");
        // file -> symlink.
        file(&old, "s", b"abc");
        std::os::unix::fs::symlink("abc", new.join("s")).unwrap();
        assert_eq!(
            diff(&new, Some(&old)),
            expect(&[
                ("/f", Modify),
                ("/f/x", Add),
                ("/g", Modify),
                ("/s", Modify)
            ])
        );
    }

    #[test]
    fn symlink_retarget_with_same_length_and_mtime() {
        let (_t, old, new) = pair();
        for (tree, target) in [(&old, "aaaa"), (&new, "bbbb")] {
            std::os::unix::fs::symlink(target, tree.join("l")).unwrap();
            std::os::unix::fs::symlink("same", tree.join("k")).unwrap();
            set_mtime(&tree.join("l"), T.0, T.1);
            set_mtime(&tree.join("k"), T.0, T.1);
        }
        assert_eq!(diff(&new, Some(&old)), expect(&[("/l", Modify)]));
    }

    #[test]
    fn symlinks_are_not_followed() {
        let (_t, old, new) = pair();
        // A symlink to a directory on both sides with different contents behind it.
        file(&old, "target/a", b"1");
        file(&new, "target/a", b"1");
        file(&new, "other/b", b"2");
        for (tree, target) in [(&old, "target"), (&new, "other")] {
            std::os::unix::fs::symlink(target, tree.join("l")).unwrap();
            set_mtime(&tree.join("l"), T.0, T.1);
        }
        // Only the retargeted link itself and the new directory: nothing behind `l`.
        assert_eq!(
            diff(&new, Some(&old)),
            expect(&[("/l", Modify), ("/other", Add), ("/other/b", Add)])
        );
    }

    #[test]
    fn mtime_only_change() {
        let (_t, old, new) = pair();
        both(&old, &new, "f", b"same");
        set_mtime(&new.join("f"), T.0 + 1, T.1);
        assert_eq!(diff(&new, Some(&old)), expect(&[("/f", Modify)]));
    }

    #[test]
    fn zero_nanoseconds_match_any_time_in_the_same_second() {
        let (_t, old, new) = pair();
        for name in ["zero_old", "zero_new", "both_ns", "other_sec"] {
            both(&old, &new, name, b"x");
        }
        set_mtime(&old.join("zero_old"), 100, 0);
        set_mtime(&new.join("zero_old"), 100, 5);
        set_mtime(&old.join("zero_new"), 100, 7);
        set_mtime(&new.join("zero_new"), 100, 0);
        set_mtime(&old.join("both_ns"), 100, 3);
        set_mtime(&new.join("both_ns"), 100, 5);
        set_mtime(&old.join("other_sec"), 100, 0);
        set_mtime(&new.join("other_sec"), 101, 0);
        assert_eq!(
            diff(&new, Some(&old)),
            expect(&[("/both_ns", Modify), ("/other_sec", Modify)])
        );
    }

    #[test]
    fn same_second_rewrite_is_seen_by_content() {
        // A tar gave the old file whole seconds; a same-size rewrite in that second differs
        // only in its bytes. Identical bytes stay unchanged, as in Docker.
        let (_t, old, new) = pair();
        fs::write(old.join("conf"), b"setting=1\n").unwrap();
        fs::write(new.join("conf"), b"setting=2\n").unwrap();
        both(&old, &new, "same", b"setting=1\n");
        for f in ["conf", "same"] {
            set_mtime(&old.join(f), 100, 0);
            set_mtime(&new.join(f), 100, 42);
        }
        assert_eq!(diff(&new, Some(&old)), expect(&[("/conf", Modify)]));
    }

    #[test]
    fn capability_difference() {
        let (_t, old, new) = pair();
        both(&old, &new, "ping", b"elf");
        both(&old, &new, "other", b"elf");
        set_xattr(&new.join("ping"), "security.capability", &cap_value());
        // Setting an xattr does not touch mtime, so only the capability tells them apart.
        assert_eq!(diff(&new, Some(&old)), expect(&[("/ping", Modify)]));
    }

    #[test]
    fn xattr_only_change_is_a_change() {
        let (_t, old, new) = pair();
        for f in ["added", "changed", "removed", "internal"] {
            both(&old, &new, f, b"same");
        }
        fs::create_dir(old.join("d")).unwrap();
        fs::create_dir(new.join("d")).unwrap();
        set_xattr(&new.join("added"), "user.x", b"1");
        set_xattr(&old.join("changed"), "user.x", b"1");
        set_xattr(&new.join("changed"), "user.x", b"2");
        set_xattr(&old.join("removed"), "user.x", b"1");
        set_xattr(&new.join("d"), "trusted.note", b"dir");
        // Storage-internal attributes are not exported, so they are no change either.
        set_xattr(&new.join("internal"), "trusted.overlay.origin", b"x");
        assert_eq!(
            diff(&new, Some(&old)),
            expect(&[
                ("/added", Modify),
                ("/changed", Modify),
                ("/d", Modify),
                ("/removed", Modify)
            ])
        );
    }

    #[test]
    fn mode_uid_gid_and_rdev_changes() {
        let (_t, old, new) = pair();
        for name in ["m", "u", "g"] {
            both(&old, &new, name, b"x");
        }
        chmod(&new.join("m"), 0o4755);
        lchown(&new.join("u"), 1, 0);
        lchown(&new.join("g"), 0, 1);
        mknod(
            &old.join("dev"),
            rustix::fs::FileType::CharacterDevice,
            0o600,
            1,
            3,
        );
        mknod(
            &new.join("dev"),
            rustix::fs::FileType::CharacterDevice,
            0o600,
            1,
            5,
        );
        for tree in [&old, &new] {
            set_mtime(&tree.join("dev"), T.0, T.1);
        }
        assert_eq!(
            diff(&new, Some(&old)),
            expect(&[
                ("/dev", Modify),
                ("/g", Modify),
                ("/m", Modify),
                ("/u", Modify)
            ])
        );
    }

    #[test]
    fn deleted_directory_reports_only_itself() {
        let (_t, old, new) = pair();
        file(&old, "d/a/b", b"1");
        file(&old, "d/c", b"2");
        both(&old, &new, "keep", b"k");
        assert_eq!(diff(&new, Some(&old)), expect(&[("/d", Delete)]));
    }

    #[test]
    fn empty_old_tree_makes_everything_an_add() {
        let (_t, _old, new) = pair();
        file(&new, "d/e/f", b"1");
        file(&new, "g", b"2");
        std::os::unix::fs::symlink("/nowhere", new.join("l")).unwrap();
        assert_eq!(
            diff(&new, None),
            expect(&[
                ("/d", Add),
                ("/d/e", Add),
                ("/d/e/f", Add),
                ("/g", Add),
                ("/l", Add),
            ])
        );
    }

    #[test]
    fn sorted_by_path_bytes() {
        let (_t, old, new) = pair();
        fs::create_dir(old.join("a")).unwrap();
        file(&new, "a/b", b"1");
        file(&new, "a-b", b"2");
        file(&new, "a0", b"3");
        // '-' (0x2d) < '/' (0x2f) < '0' (0x30): byte order, not component order.
        assert_eq!(
            diff(&new, Some(&old)),
            expect(&[("/a", Modify), ("/a-b", Add), ("/a/b", Add), ("/a0", Add)])
        );
    }

    #[test]
    fn shared_inode_is_unchanged() {
        let (_t, old, new) = pair();
        file(&old, "f", b"1");
        fs::hard_link(old.join("f"), new.join("f")).unwrap();
        assert_eq!(diff(&new, Some(&old)), vec![]);
    }

    /// graphtest's `changeManyFiles(20, 6)` over `addManyFiles(20, 3)`.
    #[test]
    fn graphtest_change_many_files() {
        let (_t, old, new) = pair();
        let seed = 6;
        for j in 0..20u64 {
            let rel = format!("directory-0/file-{j}");
            both(&old, &new, &rel, &noise(64, 3 + j));
        }
        let mut want = vec![("/directory-0".to_string(), Modify)];
        for j in 0..20u64 {
            match j % 3 {
                0 => {
                    let rel = format!("directory-0/file-{j}");
                    fs::write(new.join(&rel), noise(64, seed + j)).unwrap();
                    want.push((format!("/{rel}"), Modify));
                }
                1 => {
                    let rel = format!("directory-0/file-{seed}-{j}");
                    fs::write(new.join(&rel), noise(64, seed + j)).unwrap();
                    want.push((format!("/{rel}"), Add));
                }
                _ => {
                    let rel = format!("directory-0/file-{j}");
                    fs::remove_file(new.join(&rel)).unwrap();
                    want.push((format!("/{rel}"), Delete));
                }
            }
        }
        let mut got = diff(&new, Some(&old));
        assert_eq!(got.len(), 21);
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn deep_trees_do_not_exhaust_the_stack() {
        let (_t, old, new) = pair();
        let mut rel = PathBuf::new();
        for _ in 0..400 {
            rel.push("d");
            both(&old, &new, &rel.join("f").to_string_lossy(), b"x");
        }
        file(&new, &rel.join("g").to_string_lossy(), b"y");
        let got = diff(&new, Some(&old));
        assert_eq!(got.len(), 401);
        assert_eq!(got[0], ("/d".to_string(), Modify));
        assert!(got.last().unwrap().0.ends_with("/d/g"));
    }

    #[test]
    fn changes_size_counts_hard_links_once() {
        let (_t, _old, new) = pair();
        file(&new, "f", &[7u8; 100]);
        fs::hard_link(new.join("f"), new.join("g")).unwrap();
        file(&new, "h", &[1u8; 10]);
        file(&new, "d/i", &[2u8; 5]);
        std::os::unix::fs::symlink("xyz", new.join("s")).unwrap();
        let mut changes: Vec<Change> = {
            let fd = dirfd(&new);
            changes_dirs(fd.as_fd(), None).unwrap().iter().collect()
        };
        // Deletes and vanished paths are ignored.
        changes.push(Change {
            path: "/gone".into(),
            kind: Delete,
        });
        changes.push(Change {
            path: "/vanished/x".into(),
            kind: Modify,
        });
        changes.reverse();
        let changes = ChangeSet::from_changes(&changes).unwrap();
        let fd = dirfd(&new);
        // f + h + d/i + the symlink's 3 bytes; g is f's inode; directories count 0.
        assert_eq!(
            changes_size(fd.as_fd(), &changes).unwrap(),
            100 + 10 + 5 + 3
        );
    }
}
