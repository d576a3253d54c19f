//! Fd-relative building blocks shared by the tree walkers ([`super::changes`],
//! [`super::export`], [`super::copy`]).
//!
//! Every lookup here is one path component relative to an open directory descriptor: entries
//! are stat-ed with `AT_SYMLINK_NOFOLLOW` and opened with `O_NOFOLLOW`, so a symlink anywhere
//! in a tree is only ever seen as a symlink, never traversed. Directory listings come from
//! `getdents` and are sorted by name bytes, which makes every walker's output deterministic.

use std::borrow::Cow;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, Dir, FileType, Mode, OFlags};

use super::fsmeta::{Meta, Time, Xattr};
use super::{Error, Rule};

/// Flags for opening a directory that must not be a symlink.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// The `lstat` fields the walkers use, normalised across architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Info {
    pub dev: u64,
    pub ino: u64,
    /// Full `st_mode`, type bits included.
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub atime: Time,
    pub mtime: Time,
}

impl Info {
    // Field widths differ between architectures (and are type aliases on some), so the
    // conversions below are spelled out once here.
    #[allow(clippy::unnecessary_cast)]
    fn from_stat(st: &rfs::Stat) -> Self {
        Info {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            nlink: st.st_nlink as u64,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            rdev: st.st_rdev as u64,
            // A negative size is impossible for the objects the walkers read.
            size: u64::try_from(st.st_size).unwrap_or(0),
            atime: Time {
                sec: st.st_atime as i64,
                nsec: st.st_atime_nsec as u32,
            },
            mtime: Time {
                sec: st.st_mtime as i64,
                nsec: st.st_mtime_nsec as u32,
            },
        }
    }

    /// The file type.
    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    /// Permission bits including setuid, setgid and sticky.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }

    /// `(st_dev, st_ino)`: the identity of the inode.
    pub fn id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// The metadata to reproduce this inode with `fsmeta`.
    pub fn meta(&self, xattrs: Vec<Xattr>) -> Meta {
        Meta {
            uid: self.uid,
            gid: self.gid,
            mode: self.perm(),
            atime: self.atime,
            mtime: self.mtime,
            xattrs,
        }
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub(super) fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Info> {
    let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(Info::from_stat(&st))
}

/// Like [`lstat_at`], but a missing entry is `None`.
pub(super) fn lstat_opt(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Info>> {
    match lstat_at(dir, name) {
        Ok(info) => Ok(Some(info)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `fstat(fd)`.
pub(super) fn fstat(fd: BorrowedFd<'_>) -> io::Result<Info> {
    let st = rfs::fstat(fd)?;
    Ok(Info::from_stat(&st))
}

/// Opens the directory `parent/name`; fails (`ELOOP`/`ENOTDIR`) if it is a symlink or not a
/// directory.
pub(super) fn open_dir(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    Ok(rfs::openat(parent, name, DIR_FLAGS, Mode::empty())?)
}

/// Opens `parent/name` for reading without following a final symlink and checks, through the
/// new descriptor, that it is still the regular file `expect` describes.
pub(super) fn open_regular(
    parent: BorrowedFd<'_>,
    name: &[u8],
    expect: &Info,
) -> io::Result<(OwnedFd, Info)> {
    // Pinned with O_PATH and type-checked before it is opened for reading: a device or fifo
    // swapped in by a running container is never opened at all.
    let fd = OwnedFd::from(crate::fsutil::open_regular_at(
        parent,
        std::os::unix::ffi::OsStrExt::from_bytes(name),
    )?);
    let info = fstat(fd.as_fd())?;
    if info.file_type() != FileType::RegularFile || info.id() != expect.id() {
        return Err(io::Error::other("file was replaced while being read"));
    }
    Ok((fd, info))
}

/// Whether an error from resolving a path means "there is no such (non-symlinked) path".
pub(super) fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
    )
}

/// A new read-only descriptor for the directory `dir` (which may be an `O_PATH` one).
pub(super) fn reopen_dir(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    Ok(rfs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The names in directory `dir` (without `.` and `..`), sorted by bytes.
pub(super) fn read_names(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    // A fresh descriptor, so the caller's file position is untouched and `dir` may be O_PATH.
    let fd = reopen_dir(dir)?;
    let mut names = Vec::new();
    for entry in Dir::new(fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// `readlinkat(dir, name)`: a symlink's target, verbatim.
pub(super) fn read_link(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<u8>> {
    Ok(rfs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// Descriptors a [`DirStack`] keeps open at its deep end. Shallower levels are closed and
/// reopened through `..` when the walk climbs back to them, so a walk holds a fixed number of
/// descriptors however deep the tree is.
const DIR_WINDOW: usize = 16;

/// The open directories along one path from a root: the walkers' replacement for recursion.
///
/// Every level's identity `(st_dev, st_ino)` is kept, but only the deepest [`DIR_WINDOW`]
/// levels hold a descriptor. Popping back to a level whose descriptor was closed reopens it
/// as `..` of the level just left, and checks it is still the same directory: a directory
/// moved by a running container during the walk is an error, never a walk of the wrong tree.
pub(super) struct DirStack<'a> {
    root: BorrowedFd<'a>,
    /// Identity of every level below the root, shallowest first.
    ids: Vec<(u64, u64)>,
    /// Descriptors of the deepest levels, shallowest first (the last is the top).
    held: std::collections::VecDeque<OwnedFd>,
}

impl<'a> DirStack<'a> {
    /// A stack holding only `root`.
    pub fn new(root: BorrowedFd<'a>) -> Self {
        DirStack {
            root,
            ids: Vec::new(),
            held: std::collections::VecDeque::new(),
        }
    }

    /// The deepest directory (the root when nothing is pushed).
    pub fn top(&self) -> BorrowedFd<'_> {
        // `pop` refills `held` whenever levels remain, so it is empty only at the root.
        debug_assert!(self.ids.is_empty() || !self.held.is_empty());
        self.held.back().map_or(self.root, |fd| fd.as_fd())
    }

    /// Enters the directory `fd` (a child of the current top).
    pub fn push(&mut self, fd: OwnedFd) -> io::Result<()> {
        let id = fstat(fd.as_fd())?.id();
        self.ids.push(id);
        self.held.push_back(fd);
        if self.held.len() > DIR_WINDOW {
            self.held.pop_front();
        }
        Ok(())
    }

    /// Opens `name` in the top directory and enters it.
    pub fn push_name(&mut self, name: &[u8]) -> io::Result<()> {
        let fd = open_dir(self.top(), name)?;
        self.push(fd)
    }

    /// Leaves the top directory. On error the stack is reset to the root.
    pub fn pop(&mut self) -> io::Result<()> {
        let Some(child) = self.held.pop_back() else {
            self.ids.clear();
            return Ok(());
        };
        self.ids.pop();
        let Some(&want) = self.ids.last() else {
            return Ok(());
        };
        if !self.held.is_empty() {
            return Ok(());
        }
        let reopened = open_dir(child.as_fd(), b"..").and_then(|fd| {
            if fstat(fd.as_fd())?.id() == want {
                Ok(fd)
            } else {
                Err(io::Error::other(
                    "a directory was moved while the tree was being walked",
                ))
            }
        });
        match reopened {
            Ok(fd) => {
                self.held.push_back(fd);
                Ok(())
            }
            Err(e) => {
                self.ids.clear();
                Err(e)
            }
        }
    }
}

/// Resolves parent directories of a sorted sequence of paths, reusing the directories the
/// previous path opened: each component is opened once per run of paths that share it, and
/// the open descriptors are bounded as in [`DirStack`].
pub(super) struct DirCursor<'a> {
    stack: DirStack<'a>,
    /// The names of the stack's levels.
    names: Vec<Vec<u8>>,
    /// Leading levels the next [`DirCursor::enter`] may keep without comparing names (`None`:
    /// no promise, compare them all).
    trusted: Option<usize>,
}

impl<'a> DirCursor<'a> {
    /// A cursor at `root`.
    pub fn new(root: BorrowedFd<'a>) -> Self {
        DirCursor {
            stack: DirStack::new(root),
            names: Vec::new(),
            trusted: None,
        }
    }

    /// Promises that the next path shares its first `kept` directories with the previous one
    /// in the sequence (entered or not), so [`DirCursor::enter`] need not compare them (which
    /// would cost the depth per path). Promises since the last `enter` accumulate.
    pub fn hint(&mut self, kept: usize) {
        let bound = self.trusted.unwrap_or(self.names.len());
        self.trusted = Some(bound.min(kept));
    }

    /// Opens (or reuses) `root/dirs[0]/dirs[1]/…` component by component, never following a
    /// symlink, and returns the deepest directory.
    pub fn enter(&mut self, dirs: &[&[u8]]) -> io::Result<BorrowedFd<'_>> {
        let trusted = self
            .trusted
            .take()
            .unwrap_or(0)
            .min(self.names.len())
            .min(dirs.len());
        let common = trusted
            + self.names[trusted..]
                .iter()
                .zip(&dirs[trusted..])
                .take_while(|(open, want)| open.as_slice() == **want)
                .count();
        while self.names.len() > common {
            self.names.pop();
            if let Err(e) = self.stack.pop() {
                self.names.clear();
                return Err(e);
            }
        }
        for name in &dirs[common..] {
            self.stack.push_name(name)?;
            self.names.push(name.to_vec());
        }
        Ok(self.stack.top())
    }
}

/// Splits an absolute in-layer path (`/a/b`) into its components, rejecting `.`, `..`, NUL
/// bytes and the root itself (which is never a change).
pub(super) fn components(path: &Path) -> Result<Vec<&[u8]>, Error> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.contains(&0) {
        return Err(Error::entry(bytes, Rule::BadName, "NUL byte in path"));
    }
    let mut out = Vec::new();
    for c in bytes.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
        match c {
            b".." => return Err(Error::entry(bytes, Rule::Escape, "`..` component")),
            b"." => return Err(Error::entry(bytes, Rule::BadName, "`.` component")),
            _ => out.push(c),
        }
    }
    if out.is_empty() {
        return Err(Error::entry(
            bytes,
            Rule::BadName,
            "the layer root is not a change",
        ));
    }
    Ok(out)
}

/// An in-layer path for messages: `/` for the root, lossy UTF-8.
pub(super) fn show(path: &[u8]) -> Cow<'_, str> {
    if path.is_empty() {
        Cow::Borrowed("/")
    } else {
        String::from_utf8_lossy(path)
    }
}

/// An in-layer path shown like [`show`], but only when it is formatted: building the text
/// eagerly would cost the path's length for every entry of a deep tree.
#[derive(Clone, Copy)]
pub(super) struct Shown<'a>(pub &'a [u8]);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&show(self.0))
    }
}

/// `/`-joins components (no leading slash).
pub(super) fn join(comps: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(comps.iter().map(|c| c.len() + 1).sum());
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    out
}

/// Helpers for the walkers' tests (which run as root).
#[cfg(test)]
pub(super) mod testutil {
    use std::os::fd::OwnedFd;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Timespec, Timestamps, XattrFlags};

    /// Opens a directory by path (tests only).
    pub fn dirfd(path: &Path) -> OwnedFd {
        rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    /// Sets atime and mtime of `path` without following a symlink.
    pub fn set_times(path: &Path, atime: (i64, u32), mtime: (i64, u32)) {
        let ts = |(s, n): (i64, u32)| Timespec {
            tv_sec: s,
            tv_nsec: n.into(),
        };
        rfs::utimensat(
            rfs::CWD,
            path,
            &Timestamps {
                last_access: ts(atime),
                last_modification: ts(mtime),
            },
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }

    /// Sets mtime (and atime to the same value).
    pub fn set_mtime(path: &Path, sec: i64, nsec: u32) {
        set_times(path, (sec, nsec), (sec, nsec));
    }

    /// A fixed timestamp the tree builders give to every file.
    pub const T: (i64, u32) = (1_600_000_000, 123_456_789);

    /// Writes `content` to `root/rel` (creating parents) and sets mtime [`T`].
    pub fn file(root: &Path, rel: &str, content: &[u8]) {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, content).unwrap();
        set_mtime(&p, T.0, T.1);
    }

    /// Sets an xattr without following a symlink.
    pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
        rfs::lsetxattr(path, name, value, XattrFlags::empty()).unwrap();
    }

    /// Reads an xattr without following a symlink.
    pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        match rfs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                Some(buf)
            }
            Err(rustix::io::Errno::NODATA) => None,
            Err(e) => panic!("lgetxattr {}: {e}", path.display()),
        }
    }

    /// A valid v2 `security.capability` value granting CAP_NET_BIND_SERVICE (effective).
    pub fn cap_value() -> Vec<u8> {
        let mut v = Vec::new();
        for word in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
            v.extend_from_slice(&word.to_le_bytes());
        }
        v
    }

    /// `lchown`.
    pub fn lchown(path: &Path, uid: u32, gid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    }

    /// `chmod` (follows; never use on symlinks).
    pub fn chmod(path: &Path, mode: u32) {
        rfs::chmod(path, Mode::from_raw_mode(mode)).unwrap();
    }

    /// `mknod` of a special file, with exactly `mode`.
    pub fn mknod(path: &Path, ft: rfs::FileType, mode: u32, major: u32, minor: u32) {
        rfs::mknodat(
            rfs::CWD,
            path,
            ft,
            Mode::from_raw_mode(mode),
            rfs::makedev(major, minor),
        )
        .unwrap();
        // Exact mode, whatever the umask.
        chmod(path, mode);
    }

    /// The inode number of `path` (not following a symlink).
    pub fn ino(path: &Path) -> u64 {
        std::fs::symlink_metadata(path).unwrap().ino()
    }

    /// Deterministic pseudo-random bytes (xorshift).
    pub fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }
}
