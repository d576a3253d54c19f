//! Reading and setting file metadata through file descriptors.
//!
//! The order is fixed because each step can undo an earlier one: owner first (chown clears
//! setuid/setgid and `security.capability`), then extended attributes, then the mode, then
//! times (any change above bumps them). Directory times are set last of all by the callers.
//! Symlinks are never chmod-ed; objects that cannot be opened safely (symlinks, fifos,
//! devices) are addressed as (parent directory fd, single-component name) with
//! `AT_SYMLINK_NOFOLLOW`.

use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{
    chownat, fchmod, fchown, fgetxattr, flistxattr, fsetxattr, futimens, lgetxattr, llistxattr,
    lsetxattr, utimensat, AtFlags, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags,
};

use crate::sys;

/// A timestamp with nanosecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time {
    /// Seconds since the epoch (may be negative).
    pub sec: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nsec: u32,
}

impl Time {
    fn timespec(self) -> Timespec {
        Timespec {
            tv_sec: self.sec,
            tv_nsec: self.nsec as _,
        }
    }
}

/// An extended attribute: raw name and value bytes.
pub type Xattr = (Vec<u8>, Vec<u8>);

/// The metadata strata preserves for every file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// Access time.
    pub atime: Time,
    /// Modification time.
    pub mtime: Time,
    /// Extended attributes to set, in order.
    pub xattrs: Vec<Xattr>,
}

fn timestamps(atime: Time, mtime: Time) -> Timestamps {
    Timestamps {
        last_access: atime.timespec(),
        last_modification: mtime.timespec(),
    }
}

/// Which of the owner and mode steps an object still needs: a freshly created object may
/// already have the right ones (see `apply::creds`). Extended attributes are always set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The owner must be set.
    pub chown: bool,
    /// The mode must be set.
    pub chmod: bool,
}

impl Needs {
    /// Every step.
    pub const ALL: Needs = Needs {
        chown: true,
        chmod: true,
    };
}

/// Sets owner, xattrs and mode (in that order) on an open regular file or directory.
pub fn set_fd(fd: BorrowedFd<'_>, m: &Meta) -> io::Result<()> {
    apply_fd(fd, m, Needs::ALL)
}

/// [`set_fd`], skipping the owner and mode steps `needs` says are already right.
pub fn apply_fd(fd: BorrowedFd<'_>, m: &Meta, needs: Needs) -> io::Result<()> {
    if needs.chown {
        fchown(fd, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)))?;
    }
    for (k, v) in &m.xattrs {
        fsetxattr(fd, OsStr::from_bytes(k), v, XattrFlags::empty())?;
    }
    if needs.chmod {
        fchmod(fd, Mode::from_raw_mode(m.mode & 0o7777))?;
    }
    Ok(())
}

/// Sets atime and mtime on an open file or directory.
pub fn set_times_fd(fd: BorrowedFd<'_>, atime: Time, mtime: Time) -> io::Result<()> {
    futimens(fd, &timestamps(atime, mtime))?;
    Ok(())
}

/// Sets owner, xattrs and (unless `symlink`) mode on `parent/name` without following a final
/// symlink. `name` must be a single path component.
pub fn set_at(parent: BorrowedFd<'_>, name: &OsStr, m: &Meta, symlink: bool) -> io::Result<()> {
    apply_at(parent, name, m, Needs::ALL, symlink)
}

/// [`set_at`], skipping the owner and mode steps `needs` says are already right.
pub fn apply_at(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    m: &Meta,
    needs: Needs,
    symlink: bool,
) -> io::Result<()> {
    if needs.chown {
        chownat(
            parent,
            name,
            Some(Uid::from_raw(m.uid)),
            Some(Gid::from_raw(m.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    if !m.xattrs.is_empty() {
        let path = sys::proc_fd_path(parent, name);
        for (k, v) in &m.xattrs {
            lsetxattr(&path, OsStr::from_bytes(k), v, XattrFlags::empty())?;
        }
    }
    if needs.chmod && !symlink {
        sys::fchmodat_nofollow(parent, name, m.mode & 0o7777)?;
    }
    Ok(())
}

/// Sets atime and mtime on `parent/name` without following a final symlink.
pub fn set_times_at(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    atime: Time,
    mtime: Time,
) -> io::Result<()> {
    utimensat(
        parent,
        name,
        &timestamps(atime, mtime),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// Splits a NUL-separated xattr name list.
fn split_names(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|b| *b == 0).filter(|n| !n.is_empty())
}

/// Reads every extended attribute of an open file or directory, sorted by name.
pub fn read_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<Xattr>> {
    let list = read_sized(|buf| flistxattr(fd, buf))?;
    let mut out = Vec::new();
    for name in split_names(&list) {
        let n = OsStr::from_bytes(name);
        match read_sized(|buf| fgetxattr(fd, n, buf)) {
            Ok(v) => out.push((name.to_vec(), v)),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every extended attribute of `parent/name` without following a final symlink.
pub fn read_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<Xattr>> {
    let path = sys::proc_fd_path(parent, name);
    let list = read_sized(|buf| llistxattr(&path, buf))?;
    let mut out = Vec::new();
    for xname in split_names(&list) {
        let n = OsStr::from_bytes(xname);
        match read_sized(|buf| lgetxattr(&path, n, buf)) {
            Ok(v) => out.push((xname.to_vec(), v)),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Calls a size-returning xattr syscall with a growing buffer. Filesystems without xattr
/// support yield an empty result.
fn read_sized(mut f: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < (1 << 20) => {
                let len = buf.len() * 4;
                buf.resize(len, 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    }
}
