//! Copying a whole directory tree with every attribute: the vfs backend's layer creation.
//!
//! A vfs layer starts as a full copy of its parent's tree, so the copy must be exact: any
//! attribute lost here would show up as a spurious change (or a silently dropped one) in the
//! next diff.
//!
//! # Rules
//!
//! * [`copy_tree`]`(src, dst)`: `dst` is an existing empty directory; afterwards it holds a
//!   copy of everything under `src`, and `dst` itself carries `src`'s owner, mode, xattrs and
//!   times.
//! * Regular files: `FICLONE` reflink, falling back to `copy_file_range`, then a read/write
//!   loop; sparse holes need not be preserved. A method the filesystem does not support is
//!   not retried for later files.
//! * Preserved: type, owner, mode incl. setuid/setgid/sticky, atime/mtime (ns), every xattr,
//!   hard links (same inode set → linked in the copy, for every non-directory type),
//!   symlinks (target verbatim), fifos, char/block devices, sockets (re-created as the same
//!   type via mknod).
//! * Metadata is set with [`super::fsmeta`] (owner → xattrs → mode → times), directory
//!   metadata and times after their contents; symlinks are never followed nor chmod-ed.
//! * fd-relative throughout (`openat` with `O_NOFOLLOW`, `mkdirat`, `symlinkat`, `linkat`,
//!   `mknodat`); an iterative depth-first walk (any depth, on any thread) holding a bounded
//!   number of descriptors (`walk::DirStack`: levels left behind are reopened through `..`).
//! * A source directory that is `dst` itself (copying a tree into itself) is an error rather
//!   than an endless copy.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::fsmeta;
use super::walk::{self, DirCursor, DirStack, Info};
use super::Error;

/// Counters from a copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Entries created (files, dirs, links, nodes), not counting the root.
    pub entries: u64,
    /// Bytes of regular-file content copied (reflinked bytes included).
    pub bytes: u64,
}

/// Largest single `copy_file_range` request.
const CFR_CHUNK: usize = 1 << 30;
/// Buffer of the read/write fallback.
const COPY_BUF: usize = 256 * 1024;

/// Copies the tree under `src` into the empty directory `dst`.
///
/// On error the copy stops and `dst` is left partially filled; the caller owns its cleanup.
pub fn copy_tree(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> Result<CopyStats, Error> {
    // Own read-only descriptors for the roots: the callers' may be O_PATH, which cannot carry
    // xattr or ownership calls.
    let src = walk::reopen_dir(src).map_err(|e| Error::io("opening the source root", e))?;
    let dst = walk::reopen_dir(dst).map_err(|e| Error::io("opening the destination root", e))?;
    let src_info =
        walk::fstat(src.as_fd()).map_err(|e| Error::io("fstat of the source root", e))?;
    let dst_info =
        walk::fstat(dst.as_fd()).map_err(|e| Error::io("fstat of the destination root", e))?;
    if !src_info.is_dir() || !dst_info.is_dir() {
        return Err(Error::io(
            "copying a tree",
            io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    let dst_names =
        walk::read_names(dst.as_fd()).map_err(|e| Error::io("listing the destination root", e))?;
    if !dst_names.is_empty() {
        return Err(Error::io(
            "copying a tree",
            io::Error::other("the destination directory is not empty"),
        ));
    }

    let mut copier = Copier {
        stats: CopyStats::default(),
        links: HashMap::new(),
        link_dirs: DirCursor::new(dst.as_fd()),
        reflink: true,
        copy_range: true,
        buf: vec![0u8; COPY_BUF],
        dst_root: dst_info.id(),
    };
    let mut dirs = Dirs {
        src: DirStack::new(src.as_fd()),
        dst: DirStack::new(dst.as_fd()),
    };
    // The path of the directory on top of the stack ("" for the root).
    let mut path: Vec<u8> = Vec::new();
    let mut stack = vec![Frame::new(&dirs, src_info, &path)?];

    while let Some(frame) = stack.last_mut() {
        let Some(slot) = frame.names.get_mut(frame.next) else {
            if let Some(done) = stack.pop() {
                done.finish(&mut dirs, &path, !stack.is_empty())?;
            }
            path.truncate(stack.last().map_or(0, |f| f.path_len));
            continue;
        };
        frame.next += 1;
        let name = std::mem::take(slot);
        let dir_len = path.len();
        path.push(b'/');
        path.extend_from_slice(&name);
        match copier.entry(&dirs, &name, &path, dir_len)? {
            Some((info, src, dst)) => {
                dirs.src
                    .push(src)
                    .and_then(|()| dirs.dst.push(dst))
                    .map_err(|e| Error::io(format!("entering {}", walk::show(&path)), e))?;
                stack.push(Frame::new(&dirs, info, &path)?);
            }
            None => path.truncate(dir_len),
        }
    }
    Ok(copier.stats)
}

/// The directory stacks of the source and the copy.
struct Dirs<'a> {
    src: DirStack<'a>,
    dst: DirStack<'a>,
}

/// A directory being copied (its descriptors are the tops of the [`Dirs`] stacks).
struct Frame {
    /// The source directory's metadata, taken before its listing was read (so its atime is
    /// the original one).
    info: Info,
    names: Vec<Vec<u8>>,
    next: usize,
    /// Length of this directory's path in the shared path buffer.
    path_len: usize,
}

impl Frame {
    fn new(dirs: &Dirs<'_>, info: Info, path: &[u8]) -> Result<Self, Error> {
        let names = walk::read_names(dirs.src.top())
            .map_err(|e| Error::io(format!("listing {}", walk::show(path)), e))?;
        Ok(Frame {
            info,
            names,
            next: 0,
            path_len: path.len(),
        })
    }

    /// Sets the copied directory's metadata, now that its contents are complete, and leaves
    /// it (`pop`: false for the root). `path` is the shared buffer, still holding this
    /// directory's path.
    fn finish(self, dirs: &mut Dirs<'_>, path: &[u8], pop: bool) -> Result<(), Error> {
        let shown = walk::Shown(&path[..self.path_len]);
        let (src, dst) = (dirs.src.top(), dirs.dst.top());
        let xattrs =
            fsmeta::read_fd(src).map_err(|e| Error::io(format!("reading xattrs of {shown}"), e))?;
        let meta = self.info.meta(xattrs);
        fsmeta::set_fd(dst, &meta)
            .and_then(|()| fsmeta::set_times_fd(dst, meta.atime, meta.mtime))
            .map_err(|e| Error::io(format!("setting metadata of {shown}"), e))?;
        if pop {
            dirs.src
                .pop()
                .and_then(|()| dirs.dst.pop())
                .map_err(|e| Error::io(format!("leaving {shown}"), e))?;
        }
        Ok(())
    }
}

/// Where the first copy of a multiply-linked inode was made, relative to the destination
/// root.
struct LinkSrc {
    /// Parent directory path (`/a/b`, empty for the root).
    dir: Vec<u8>,
    name: Vec<u8>,
}

/// State of one copy.
struct Copier<'r> {
    stats: CopyStats,
    /// Source (dev, ino) of every multiply-linked non-directory copied so far.
    links: HashMap<(u64, u64), LinkSrc>,
    /// Resolves `LinkSrc::dir` under the destination root.
    link_dirs: DirCursor<'r>,
    /// `FICLONE` may work on this filesystem pair.
    reflink: bool,
    /// `copy_file_range` may work on this filesystem pair.
    copy_range: bool,
    buf: Vec<u8>,
    dst_root: (u64, u64),
}

impl Copier<'_> {
    /// Copies `name` of the current directory (the tops of `dirs`); for a directory, returns
    /// its metadata and the source and copy descriptors to descend into. `path` is the entry's
    /// in-layer path, `dir_len` its parent's length.
    fn entry(
        &mut self,
        dirs: &Dirs<'_>,
        name: &[u8],
        path: &[u8],
        dir_len: usize,
    ) -> Result<Option<(Info, OwnedFd, OwnedFd)>, Error> {
        let shown = walk::Shown(path);
        let (src_dir, dst_dir) = (dirs.src.top(), dirs.dst.top());
        let create_err = |e: io::Error| Error::io(format!("creating {shown}"), e);
        let info =
            walk::lstat_at(src_dir, name).map_err(|e| Error::io(format!("lstat {shown}"), e))?;

        if info.is_dir() {
            let src = walk::open_dir(src_dir, name)
                .map_err(|e| Error::io(format!("opening directory {shown}"), e))?;
            let info =
                walk::fstat(src.as_fd()).map_err(|e| Error::io(format!("fstat {shown}"), e))?;
            if info.id() == self.dst_root {
                return Err(Error::io(
                    format!("copying {shown}"),
                    io::Error::other("the destination directory lies inside the source tree"),
                ));
            }
            rfs::mkdirat(dst_dir, name, Mode::from_raw_mode(0o700))
                .map_err(|e| create_err(e.into()))?;
            let dst = walk::open_dir(dst_dir, name).map_err(create_err)?;
            self.stats.entries += 1;
            return Ok(Some((info, src, dst)));
        }

        let linked = info.nlink > 1;
        if linked {
            if let Some(first) = self.links.get(&info.id()) {
                let comps: Vec<&[u8]> = first
                    .dir
                    .split(|b| *b == b'/')
                    .filter(|c| !c.is_empty())
                    .collect();
                let first_dir = self.link_dirs.enter(&comps).map_err(|e| {
                    Error::io(format!("opening the hard-link source of {shown}"), e)
                })?;
                rfs::linkat(
                    first_dir,
                    first.name.as_slice(),
                    dst_dir,
                    name,
                    AtFlags::empty(),
                )
                .map_err(|e| Error::io(format!("linking {shown}"), e))?;
                self.stats.entries += 1;
                return Ok(None);
            }
        }

        let os_name = std::ffi::OsStr::from_bytes(name);
        let meta_err = |e| Error::io(format!("setting metadata of {shown}"), e);
        let xattr_err = |e| Error::io(format!("reading xattrs of {shown}"), e);
        match info.file_type() {
            FileType::RegularFile => {
                let (src, _) = walk::open_regular(src_dir, name, &info)
                    .map_err(|e| Error::io(format!("opening {shown}"), e))?;
                let dst = rfs::openat(
                    dst_dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| create_err(e.into()))?;
                let (src, dst) = (File::from(src), File::from(dst));
                let bytes = self
                    .copy_data(&src, &dst, info.size)
                    .map_err(|e| Error::io(format!("copying {shown}"), e))?;
                self.stats.bytes += bytes;
                // Times from the lstat taken before reading, so the original atime survives.
                let meta = info.meta(fsmeta::read_fd(src.as_fd()).map_err(xattr_err)?);
                fsmeta::set_fd(dst.as_fd(), &meta)
                    .and_then(|()| fsmeta::set_times_fd(dst.as_fd(), meta.atime, meta.mtime))
                    .map_err(meta_err)?;
            }
            FileType::Symlink => {
                let target = walk::read_link(src_dir, name)
                    .map_err(|e| Error::io(format!("readlink {shown}"), e))?;
                rfs::symlinkat(target.as_slice(), dst_dir, name)
                    .map_err(|e| create_err(e.into()))?;
                let meta = info.meta(fsmeta::read_at(src_dir, os_name).map_err(xattr_err)?);
                fsmeta::set_at(dst_dir, os_name, &meta, true)
                    .and_then(|()| fsmeta::set_times_at(dst_dir, os_name, meta.atime, meta.mtime))
                    .map_err(meta_err)?;
            }
            ft @ (FileType::Fifo
            | FileType::Socket
            | FileType::CharacterDevice
            | FileType::BlockDevice) => {
                let dev = match ft {
                    FileType::CharacterDevice | FileType::BlockDevice => info.rdev,
                    _ => 0,
                };
                rfs::mknodat(dst_dir, name, ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| create_err(e.into()))?;
                let meta = info.meta(fsmeta::read_at(src_dir, os_name).map_err(xattr_err)?);
                fsmeta::set_at(dst_dir, os_name, &meta, false)
                    .and_then(|()| fsmeta::set_times_at(dst_dir, os_name, meta.atime, meta.mtime))
                    .map_err(meta_err)?;
            }
            _ => {
                return Err(Error::io(
                    format!("copying {shown}"),
                    io::Error::other(format!("unsupported file type (mode {:o})", info.mode)),
                ))
            }
        }
        if linked {
            self.links.insert(
                info.id(),
                LinkSrc {
                    dir: path[..dir_len].to_vec(),
                    name: name.to_vec(),
                },
            );
        }
        self.stats.entries += 1;
        Ok(None)
    }

    /// Copies the content of `src` (positioned at 0) into the empty `dst`; returns the bytes
    /// copied. `size` is the expected size, used only to spot a `copy_file_range` that
    /// reports end-of-file on a file that has data (pseudo filesystems).
    fn copy_data(&mut self, src: &File, dst: &File, size: u64) -> io::Result<u64> {
        if self.reflink {
            match rfs::ioctl_ficlone(dst, src) {
                Ok(()) => return Ok(walk::fstat(dst.as_fd())?.size),
                // Unsupported by the filesystem: stop trying. Anything else (EXDEV between
                // mounts, a busy file...) falls back for this file only.
                Err(
                    Errno::OPNOTSUPP | Errno::NOTTY | Errno::INVAL | Errno::NOSYS | Errno::BADF,
                ) => self.reflink = false,
                Err(_) => {}
            }
        }
        let mut total = 0u64;
        if self.copy_range {
            loop {
                match rfs::copy_file_range(src, None, dst, None, CFR_CHUNK) {
                    Ok(0) if total == 0 && size > 0 => break,
                    Ok(0) => return Ok(total),
                    Ok(n) => total += n as u64,
                    Err(Errno::INTR) => {}
                    Err(Errno::NOSYS | Errno::OPNOTSUPP) => {
                        self.copy_range = false;
                        break;
                    }
                    // Cross-filesystem or otherwise refused: finish with read/write from the
                    // current offsets.
                    Err(Errno::XDEV | Errno::INVAL | Errno::BADF) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let (mut src, mut dst) = (src, dst);
        loop {
            let n = match src.read(&mut self.buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            dst.write_all(&self.buf[..n])?;
            total += n as u64;
        }
    }
}

#[cfg(test)]
#[path = "copy_tests.rs"]
mod tests;
