//! Writing a layer tar: the changes of a tree, as Docker's `ExportChanges` does.
//!
//! A naive-diff driver turns the output of [`super::changes::changes_dirs`] into the layer
//! blob with [`export_changes`]. The format is PAX as Docker writes it, but deterministic: the
//! same tree and change set always produce the same bytes (no wall-clock timestamps, sorted
//! entries and records), so a re-exported layer keeps its digest.
//!
//! # Format
//!
//! * Uncompressed PAX-format tar ending with the two zero blocks.
//! * Entries in path-byte order; names relative (`etc/passwd`, directories with a trailing
//!   `/`).
//! * Delete → an empty regular-file entry `<dir>/.wh.<name>` (mode 0, size 0, mtime 0).
//! * Add/Modify → the entry read from `root`: regular files with content, directories,
//!   symlinks (target verbatim), fifos, char/block devices (major/minor); sockets are
//!   skipped. A second path to an already-emitted inode (nlink > 1, not a directory) is
//!   written as a hard link to the first name (with the inode's mode, owner and mtime, no
//!   xattr records).
//! * Header fields: mode (permission bits incl. setuid/setgid/sticky), uid, gid, mtime
//!   truncated to whole seconds, uname/gname empty, atime/ctime absent. Names, link targets,
//!   sizes, ids or mtimes that do not fit the ustar fields (names are split into
//!   prefix/name when possible) use PAX records (`path`, `linkpath`, `size`, `uid`, `gid`,
//!   `mtime`), and the ustar field then holds a truncated name or zero. PAX records are
//!   sorted by key; the extended header is named `<dir>/PaxHeaders.0/<base>` like Go's.
//! * Extended attributes are exported as `SCHILY.xattr.<name>` PAX records, except
//!   `security.selinux` and `trusted.overlay.*`/`user.overlay.*` (storage-internal).
//! * Bytes written for a regular file equal the size in its header; a file that changed size
//!   while being read is an error, not a corrupt tar.
//! * A regular file with holes (as `SEEK_HOLE` reports them) is written as a PAX GNU sparse
//!   1.0 entry carrying only its data extents (see `sparse_file`); a file without holes is
//!   written in full, so ordinary layers keep their bytes and digests.
//!
//! # Refused
//!
//! What apply would read as something else is refused, naming the path and the reason,
//! instead of being written into a layer that means something other than the tree:
//!
//! * a path with a component starting with `.wh.` (see [`refuse_whiteout_name`]): apply
//!   reads `.wh.<name>` as the deletion of `<name>` and `.wh..wh..opq` as an opaque
//!   directory;
//! * a `0:0` character device: overlayfs' deletion marker, which apply rejects (and other
//!   runtimes read as a deletion);
//! * regular files whose sizes (holes included) add up to more than apply's default
//!   `max_bytes` (1 TiB), which counts sparse files at their full size: the export stops at
//!   the file that crosses the limit, before reading it, instead of streaming what apply
//!   would reject (an 8 EiB sparse file would otherwise take centuries);
//! * a sparse map longer than apply's `max_meta` allows.
//!
//! # Safety
//!
//! The tree is never addressed by joined path strings: parent directories are opened one
//! component at a time with `O_NOFOLLOW | O_DIRECTORY` (reusing the previous entry's open
//! parents), entries are `lstat`-ed with `AT_SYMLINK_NOFOLLOW`, and file content is read
//! through a descriptor opened with `O_NOFOLLOW` whose `fstat` must match the `lstat`. Large
//! files are streamed through a fixed buffer.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::FileType;
use tar::EntryType;

use super::fsmeta::{self, Xattr};
use super::tarstream::Limits;
use super::walk::{self, DirCursor};
use super::{ChangeKind, ChangeSet, Error, Rule};
use header::{padding, write_header, Hdr};

const BLOCK: usize = 512;
/// Largest value of an 8-byte octal field (uid, gid, devmajor, devminor): 7 digits.
const MAX_OCTAL_8: u64 = 0o7_777_777;
/// Largest value of a 12-byte octal field (size, mtime): 11 digits, 8 GiB - 1.
const MAX_OCTAL_12: u64 = 0o77_777_777_777;
/// Read buffer for file content.
const COPY_BUF: usize = 256 * 1024;

/// Writes a tar of `changes` read from the tree at `root`, one entry at a time in the set's
/// path-byte order (no full path list is ever built).
///
/// Output is buffered internally and flushed before returning. On error the stream is left
/// incomplete (no end-of-archive blocks), so it cannot be mistaken for a whole layer.
pub fn export_changes(
    root: BorrowedFd<'_>,
    changes: &ChangeSet,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let mut ex = Exporter::new(root, out);
    changes.try_for_each(|step| {
        ex.cursor.hint(step.kept);
        match step.kind {
            ChangeKind::Delete => ex.whiteout(step.comps),
            ChangeKind::Add | ChangeKind::Modify => ex.add(step.comps),
        }
    })?;
    ex.out
        .write_all(&[0u8; 2 * BLOCK])
        .and_then(|()| ex.out.flush())
        .map_err(|e| Error::io("writing the end of the layer tar", e))
}

/// State of one export.
struct Exporter<'w, 'r> {
    out: BufWriter<&'w mut dyn Write>,
    cursor: DirCursor<'r>,
    /// First emitted name of each multiply-linked inode.
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
    /// Sum of the (real) sizes of the regular files written so far.
    declared: u64,
    /// What apply accepts (its default limits): the export refuses what it would reject.
    limits: Limits,
}

impl<'w, 'r> Exporter<'w, 'r> {
    fn new(root: BorrowedFd<'r>, out: &'w mut dyn Write) -> Self {
        Exporter {
            out: BufWriter::with_capacity(64 * 1024, out),
            cursor: DirCursor::new(root),
            links: HashMap::new(),
            buf: vec![0u8; COPY_BUF],
            declared: 0,
            limits: Limits::default(),
        }
    }
}

/// Refuses a path that apply would read as a whiteout: one with a component starting with
/// `.wh.` (`.wh.<name>` deletes `<name>` wherever the layer is applied, `.wh..wh..opq` makes a
/// directory opaque). Such names can only come from a container; exporting them would turn
/// an added file into a deletion. `changes` and `diff` both refuse with this error.
pub fn refuse_whiteout_name(path: &[u8]) -> Result<(), Error> {
    let whiteout = path
        .split(|b| *b == b'/')
        .any(|c| c.starts_with(WHITEOUT_PREFIX));
    if !whiteout {
        return Ok(());
    }
    let mut shown = Vec::with_capacity(path.len() + 1);
    if !path.starts_with(b"/") {
        shown.push(b'/');
    }
    shown.extend_from_slice(path);
    Err(Error::entry(
        shown,
        Rule::Whiteout,
        "a name starting with \".wh.\" cannot be exported: applying the layer would read it as \
         a whiteout (deleting or hiding files of the layers below) instead of adding it",
    ))
}

/// Prefix of Docker's whiteout names.
pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";

impl Exporter<'_, '_> {
    fn whiteout(&mut self, comps: &[&[u8]]) -> Result<(), Error> {
        let Some((name, dirs)) = comps.split_last() else {
            return Ok(());
        };
        refuse_whiteout_name(&walk::join(comps))?;
        let mut wh = walk::join(dirs);
        if !wh.is_empty() {
            wh.push(b'/');
        }
        wh.extend_from_slice(b".wh.");
        wh.extend_from_slice(name);
        let hdr = Hdr {
            name: &wh,
            kind: EntryType::Regular,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            link: b"",
            dev: (0, 0),
            xattrs: &[],
            extra: &[],
        };
        write_header(&mut self.out, &hdr, &format!("/{}", walk::show(&wh)))
    }

    /// A regular file: its content in full, or only its data extents (PAX GNU sparse 1.0)
    /// when it has holes. Refused when the layer's files would add up to more than apply
    /// accepts.
    fn regular(
        &mut self,
        fd: OwnedFd,
        rel: &[u8],
        info: &walk::Info,
        shown: &str,
    ) -> Result<(), Error> {
        self.declared = self.declared.saturating_add(info.size);
        if self.declared > self.limits.max_bytes {
            return Err(Error::entry(
                shown,
                Rule::Limit,
                format!(
                    "the file is {} bytes long (holes included), which brings the layer's files \
                     to {} bytes; apply accepts at most {} (its --max-bytes default), so the \
                     layer cannot be exported",
                    info.size, self.declared, self.limits.max_bytes
                ),
            ));
        }
        let xattrs = exported(
            fsmeta::read_fd(fd.as_fd())
                .map_err(|e| Error::io(format!("reading xattrs of {shown}"), e))?,
        );
        let map = sparse_file::data_extents(fd.as_fd(), info.size, &self.limits, shown)?;
        let mut file = File::from(fd);
        if let Some(segments) = map {
            let ctx = sparse_file::Entry {
                rel,
                info,
                xattrs: &xattrs,
                shown,
            };
            return sparse_file::write(&mut self.out, &mut file, &ctx, &segments, &mut self.buf);
        }
        let hdr = Hdr {
            kind: EntryType::Regular,
            size: info.size,
            xattrs: &xattrs,
            ..Hdr::new(rel, info)
        };
        write_header(&mut self.out, &hdr, shown)?;
        copy_exact(&mut file, info.size, &mut self.out, &mut self.buf, shown)
    }

    fn add(&mut self, comps: &[&[u8]]) -> Result<(), Error> {
        let Some((name, dirs)) = comps.split_last() else {
            return Ok(());
        };
        let rel = walk::join(comps);
        refuse_whiteout_name(&rel)?;
        let shown = format!("/{}", walk::show(&rel));
        let dir = self
            .cursor
            .enter(dirs)
            .map_err(|e| Error::io(format!("opening the parent of {shown}"), e))?;
        let info = walk::lstat_at(dir, name).map_err(|e| Error::io(format!("lstat {shown}"), e))?;
        let ft = info.file_type();
        if ft == FileType::Socket {
            return Ok(());
        }
        let linked = ft != FileType::Directory && info.nlink > 1;
        if linked {
            if let Some(first) = self.links.get(&info.id()) {
                let hdr = Hdr {
                    kind: EntryType::Link,
                    link: first,
                    ..Hdr::new(&rel, &info)
                };
                return write_header(&mut self.out, &hdr, &shown);
            }
        }

        let xattr_err = |e| Error::io(format!("reading xattrs of {shown}"), e);
        match ft {
            FileType::Directory => {
                let mut dname = rel.clone();
                dname.push(b'/');
                let xattrs =
                    exported(fsmeta::read_at(dir, OsStr::from_bytes(name)).map_err(xattr_err)?);
                let hdr = Hdr {
                    kind: EntryType::Directory,
                    xattrs: &xattrs,
                    ..Hdr::new(&dname, &info)
                };
                write_header(&mut self.out, &hdr, &shown)?;
            }
            FileType::RegularFile => {
                let (fd, info) = walk::open_regular(dir, name, &info)
                    .map_err(|e| Error::io(format!("opening {shown}"), e))?;
                self.regular(fd, &rel, &info, &shown)?
            }
            FileType::Symlink => {
                let target = walk::read_link(dir, name)
                    .map_err(|e| Error::io(format!("readlink {shown}"), e))?;
                let xattrs =
                    exported(fsmeta::read_at(dir, OsStr::from_bytes(name)).map_err(xattr_err)?);
                let hdr = Hdr {
                    kind: EntryType::Symlink,
                    link: &target,
                    xattrs: &xattrs,
                    ..Hdr::new(&rel, &info)
                };
                write_header(&mut self.out, &hdr, &shown)?;
            }
            FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                let kind = match ft {
                    FileType::Fifo => EntryType::Fifo,
                    FileType::CharacterDevice => EntryType::Char,
                    _ => EntryType::Block,
                };
                let dev = if kind == EntryType::Fifo {
                    (0, 0)
                } else {
                    (rustix::fs::major(info.rdev), rustix::fs::minor(info.rdev))
                };
                if kind == EntryType::Char && dev == (0, 0) {
                    return Err(Error::entry(
                        format!("/{}", walk::show(&rel)),
                        Rule::Device,
                        "a 0:0 character device cannot be exported: it is overlayfs' deletion \
                         marker, which apply rejects and other runtimes read as a whiteout",
                    ));
                }
                let xattrs =
                    exported(fsmeta::read_at(dir, OsStr::from_bytes(name)).map_err(xattr_err)?);
                let hdr = Hdr {
                    kind,
                    dev,
                    xattrs: &xattrs,
                    ..Hdr::new(&rel, &info)
                };
                write_header(&mut self.out, &hdr, &shown)?;
            }
            _ => {
                return Err(Error::io(
                    format!("exporting {shown}"),
                    io::Error::other(format!("unsupported file type (mode {:o})", info.mode)),
                ))
            }
        }
        if linked {
            self.links.insert(info.id(), rel);
        }
        Ok(())
    }
}

/// Drops the attributes that never leave the store: SELinux labels are host policy, overlay
/// attributes are the storage format itself (and dangerous in someone else's overlay).
///
/// Also dropped, with a warning: names containing `=`. A PAX record is split at its first
/// `=`, so such a name would be read back as a different attribute with a mangled value
/// (Go's reader, which Docker uses, has no escaping for it).
fn exported(mut xattrs: Vec<Xattr>) -> Vec<Xattr> {
    xattrs.retain(|(name, _)| {
        if name.contains(&b'=') {
            tracing::warn!(
                xattr = %String::from_utf8_lossy(name),
                "xattr name contains '=' and cannot be exported in a PAX record; skipped"
            );
            return false;
        }
        travels(name)
    });
    xattrs
}

/// Whether the exporter writes the extended attribute `name` into a layer tar (the rule of
/// [`exported`], without the warning); change detection compares exactly these.
pub(super) fn travels(name: &[u8]) -> bool {
    !name.contains(&b'=')
        && name != b"security.selinux"
        && !name.starts_with(b"trusted.overlay.")
        && !name.starts_with(b"user.overlay.")
}

/// Copies exactly `size` bytes of `src` to `out`, then the padding to a whole block. A file
/// that ends early or still has bytes after `size` is an error.
fn copy_exact(
    src: &mut impl Read,
    size: u64,
    out: &mut impl Write,
    buf: &mut [u8],
    shown: &str,
) -> Result<(), Error> {
    copy_n(src, size, out, buf, shown)?;
    let mut probe = [0u8; 1];
    loop {
        match src.read(&mut probe) {
            Ok(0) => break,
            Ok(_) => {
                return Err(Error::io(
                    format!("reading {shown}"),
                    io::Error::other(format!(
                        "file grew while being exported (beyond {size} bytes)"
                    )),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(format!("reading {shown}"), e)),
        }
    }
    out.write_all(&[0u8; BLOCK][..padding(size)])
        .map_err(|e| Error::io(format!("writing {shown} to the layer tar"), e))
}

/// Copies exactly `size` bytes of `src` to `out`; a source that ends early is an error.
fn copy_n(
    src: &mut impl Read,
    size: u64,
    out: &mut impl Write,
    buf: &mut [u8],
    shown: &str,
) -> Result<(), Error> {
    let read_err = |e| Error::io(format!("reading {shown}"), e);
    let write_err = |e| Error::io(format!("writing {shown} to the layer tar"), e);
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(read_err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "file shrank while being exported ({} of {size} bytes)",
                        size - left
                    ),
                )))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        out.write_all(&buf[..n]).map_err(write_err)?;
        left -= n as u64;
    }
    Ok(())
}

mod header;
mod sparse_file;
#[cfg(test)]
mod tests;
