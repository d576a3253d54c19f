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
//!   so a same-size rewrite within the second a tar recorded is still seen); or the
//!   `security.capability` xattr differs; symlinks also when
//!   `readlink` differs (so a retargeted symlink of the same length and mtime is caught).
//! * When new is a non-directory and old was a directory, only Modify of the path is reported
//!   (old children are not listed as deleted). When new is a directory that was a file in
//!   old, the path is Modify and every child is Add.
//! * A directory not changed itself but with changes beneath it is reported as Modify, so its
//!   owner and mode travel with the layer. The root itself is never reported.
//! * Subtrees whose (dev, ino) are identical on both sides are pruned.
//! * The result is sorted by path bytes; paths are absolute (`/a/b`).
//!
//! # How
//!
//! Both trees are walked together, one directory pair at a time: each side's `getdents`
//! listing is sorted and merged, so the cost is O(entries) `lstat`s and no tree of metadata
//! is ever built. The walk is iterative (an explicit stack, so deep trees cannot overflow the
//! thread stack) and holds one descriptor per depth level per tree. All access is fd-relative:
//! directories are opened with `O_NOFOLLOW`, entries stat-ed with `AT_SYMLINK_NOFOLLOW`;
//! a symlink is never followed.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use rustix::fs::FileType;
use rustix::io::Errno;

use super::fsmeta::Time;
use super::walk::{self, DirCursor, DirFd, Info};
use super::{Change, ChangeKind, Error};
use crate::sys;

/// The only extended attribute that takes part in change detection.
const CAPABILITY: &str = "security.capability";

/// Computes the changes that turn the tree at `old` (or an empty tree) into the tree at `new`.
///
/// See the [module documentation](self) for the exact rules. Both descriptors must be
/// directories; the trees should not change during the walk (a path that disappears between
/// listing and `lstat` is treated as absent).
pub fn changes_dirs(
    new: BorrowedFd<'_>,
    old: Option<BorrowedFd<'_>>,
) -> Result<Vec<Change>, Error> {
    let mut out: Vec<(Vec<u8>, ChangeKind)> = Vec::new();
    // The path of the directory on top of the stack ("" for the root).
    let mut path: Vec<u8> = Vec::new();
    let mut stack = vec![Frame::open(
        DirFd::Borrowed(new),
        old.map(DirFd::Borrowed),
        0,
        0,
        true,
        &path,
    )?];

    while let Some(frame) = stack.last_mut() {
        let Some(entry) = frame.entries.get_mut(frame.next) else {
            // Directory finished: report it if something beneath it changed.
            if let Some(done) = stack.pop() {
                if !done.reported && out.len() > done.mark {
                    out.push((path[..done.path_len].to_vec(), ChangeKind::Modify));
                }
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
        let child = visit(frame, &name, in_new, in_old, &path, &mut out)?;
        match child {
            Some(child) => stack.push(child),
            None => path.truncate(dir_len),
        }
    }

    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out
        .into_iter()
        .map(|(p, kind)| Change {
            path: PathBuf::from(OsString::from_vec(p)),
            kind,
        })
        .collect())
}

/// Sum of `lstat` sizes of the non-directory paths of `changes` that are Add or Modify, read
/// from the tree at `root`; hard-linked inodes are counted once (Docker's `ChangesSize`).
///
/// Paths are resolved component by component without following symlinks. A path that no
/// longer exists (or now lies under a non-directory) is skipped, as Docker does; any other
/// error is returned.
pub fn changes_size(root: BorrowedFd<'_>, changes: &[Change]) -> Result<u64, Error> {
    let mut sorted: Vec<&Change> = changes
        .iter()
        .filter(|c| c.kind != ChangeKind::Delete)
        .collect();
    sorted.sort_unstable_by(|a, b| {
        a.path
            .as_os_str()
            .as_bytes()
            .cmp(b.path.as_os_str().as_bytes())
    });

    let mut cursor = DirCursor::new(root);
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut size = 0u64;
    for change in sorted {
        let comps = walk::components(&change.path)?;
        let Some((name, dirs)) = comps.split_last() else {
            continue;
        };
        let shown = change.path.display();
        let dir = match cursor.enter(dirs) {
            Ok(dir) => dir,
            Err(e) if walk::is_absent(&e) => continue,
            Err(e) => return Err(Error::io(format!("opening the parent of {shown}"), e)),
        };
        let info = match walk::lstat_at(dir, name) {
            Ok(info) => info,
            Err(e) if walk::is_absent(&e) => continue,
            Err(e) => return Err(Error::io(format!("lstat {shown}"), e)),
        };
        if info.is_dir() || (info.nlink > 1 && !seen.insert(info.id())) {
            continue;
        }
        size = size.saturating_add(info.size);
    }
    Ok(size)
}

/// One name of a merged directory listing and the sides it appears on.
struct Entry {
    name: Vec<u8>,
    in_new: bool,
    in_old: bool,
}

/// A directory pair being walked.
struct Frame<'a> {
    new: DirFd<'a>,
    /// The old side, when it exists and is a directory.
    old: Option<DirFd<'a>>,
    entries: Vec<Entry>,
    next: usize,
    /// Length of this directory's path in the shared path buffer.
    path_len: usize,
    /// Number of changes recorded before entering this directory.
    mark: usize,
    /// The directory itself is already reported (Add or Modify), or is the root.
    reported: bool,
}

impl<'a> Frame<'a> {
    fn open(
        new: DirFd<'a>,
        old: Option<DirFd<'a>>,
        path_len: usize,
        mark: usize,
        reported: bool,
        path: &[u8],
    ) -> Result<Self, Error> {
        let list = |fd: BorrowedFd<'_>| {
            walk::read_names(fd).map_err(|e| Error::io(format!("listing {}", walk::show(path)), e))
        };
        let new_names = list(new.fd())?;
        let old_names = match &old {
            Some(old) => list(old.fd())?,
            None => Vec::new(),
        };
        Ok(Frame {
            entries: merge(new_names, old_names),
            new,
            old,
            next: 0,
            path_len,
            mark,
            reported,
        })
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

/// Compares one name of the directory pair `frame`, records its change, and returns the frame
/// to descend into when the new side is a directory that needs walking. `path` is the
/// entry's in-layer path.
fn visit<'a>(
    frame: &Frame<'_>,
    name: &[u8],
    in_new: bool,
    in_old: bool,
    path: &[u8],
    out: &mut Vec<(Vec<u8>, ChangeKind)>,
) -> Result<Option<Frame<'a>>, Error> {
    let shown = || walk::show(path);
    let new_dir = frame.new.fd();
    let old_dir = frame.old.as_ref().map(|o| o.fd());
    let lstat = |dir: BorrowedFd<'_>| {
        walk::lstat_opt(dir, name).map_err(|e| Error::io(format!("lstat {}", shown()), e))
    };
    let new_info = if in_new { lstat(new_dir)? } else { None };
    let old_info = match old_dir {
        Some(dir) if in_old => lstat(dir)?,
        _ => None,
    };
    let open = |dir: BorrowedFd<'_>| {
        walk::open_dir(dir, name)
            .map(DirFd::Owned)
            .map_err(|e| Error::io(format!("opening directory {}", shown()), e))
    };

    match (new_info, old_info) {
        (None, None) => Ok(None),
        (None, Some(_)) => {
            out.push((path.to_vec(), ChangeKind::Delete));
            Ok(None)
        }
        (Some(n), None) => {
            out.push((path.to_vec(), ChangeKind::Add));
            if !n.is_dir() {
                return Ok(None);
            }
            let mark = out.len();
            Frame::open(open(new_dir)?, None, path.len(), mark, true, path).map(Some)
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
            if modified {
                out.push((path.to_vec(), ChangeKind::Modify));
            }
            if !n.is_dir() {
                return Ok(None);
            }
            let old_child = if o.is_dir() {
                Some(open(old_dir)?)
            } else {
                None
            };
            let mark = out.len();
            Frame::open(open(new_dir)?, old_child, path.len(), mark, modified, path).map(Some)
        }
    }
}

/// Docker's `statDifferent`, plus the capability and symlink-target checks.
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
    Ok(capability(new_dir, name)? != capability(old_dir, name)?)
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

/// The `security.capability` xattr of `dir/name` (not following a symlink), if any.
///
/// A single named attribute is read directly rather than through `fsmeta::read_at`, which
/// lists and reads every attribute: this runs for every entry present on both sides.
fn capability(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let path = sys::proc_fd_path(dir.as_fd(), OsStr::from_bytes(name));
    let mut buf = vec![0u8; 64];
    loop {
        match walk::retry(|| rustix::fs::lgetxattr(&path, CAPABILITY, &mut buf[..])) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(Some(buf));
            }
            Err(Errno::NODATA) | Err(Errno::NOTSUP) => return Ok(None),
            Err(Errno::RANGE) if buf.len() < (1 << 16) => {
                let len = buf.len() * 4;
                buf.resize(len, 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::fd::AsFd;
    use std::path::Path;

    use super::*;
    use crate::archive::walk::testutil::*;
    use ChangeKind::{Add, Delete, Modify};

    fn diff(new: &Path, old: Option<&Path>) -> Vec<(String, ChangeKind)> {
        let n = dirfd(new);
        let o = old.map(dirfd);
        changes_dirs(n.as_fd(), o.as_ref().map(|o| o.as_fd()))
            .unwrap()
            .into_iter()
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
        // Other xattrs are not part of the comparison.
        set_xattr(&new.join("other"), "user.note", b"x");
        // Setting an xattr does not touch mtime, so only the capability tells them apart.
        assert_eq!(diff(&new, Some(&old)), expect(&[("/ping", Modify)]));
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
            changes_dirs(fd.as_fd(), None).unwrap()
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
        let fd = dirfd(&new);
        // f + h + d/i + the symlink's 3 bytes; g is f's inode; directories count 0.
        assert_eq!(
            changes_size(fd.as_fd(), &changes).unwrap(),
            100 + 10 + 5 + 3
        );
    }

    #[test]
    fn changes_size_rejects_escaping_paths() {
        let (_t, _old, new) = pair();
        let fd = dirfd(&new);
        let bad = [Change {
            path: "/../etc/passwd".into(),
            kind: Add,
        }];
        assert!(changes_size(fd.as_fd(), &bad).is_err());
    }
}
