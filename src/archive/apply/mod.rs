//! Applying a layer tar to a directory: the part of strata that handles untrusted input.
//!
//! # Confinement
//!
//! Every filesystem call is relative to a directory fd obtained under the layer root:
//! parents are resolved in-root (see [`tree`]); leaves are created with
//! `openat(O_CREAT | O_EXCL | O_NOFOLLOW)`, `mkdirat`, `symlinkat`, `linkat` (by directory fd
//! and single name, never following), `mknodat`, and removed with `unlinkat`; metadata is set
//! through fds or `*at(AT_SYMLINK_NOFOLLOW)` in the order owner → xattrs → mode → times, with
//! directory times applied after everything else. No tar name is ever joined into a path
//! string that the kernel would resolve from outside the layer.
//!
//! # The rules
//!
//! 1. Names are cleaned (see [`super::name`]): `.` and empty components are dropped, a leading
//!    `/` means the layer root, `..` that would climb above the root is rejected, and empty
//!    names or names with NUL bytes are rejected.
//! 2. The root keeps its type: an entry for the root must be a directory (its metadata is
//!    applied to the root); any other type is rejected.
//! 3. Symlink targets are stored verbatim; whenever a later entry's *parent* path runs through
//!    a symlink, the symlink is resolved as if the layer root were `/`.
//! 4. A hard link's target is cleaned like a name (absolute targets are in-root), must exist
//!    already — in this layer, or in a lower layer for overlay trees (it is then copied up) —
//!    and must not be a directory or the link itself. The link shares the target's inode, so
//!    the entry's owner, xattrs, mode and times are applied to it, except that a symlink
//!    target is never chmod-ed.
//! 5. Whiteouts: `.wh.NAME` deletes NAME, `.wh..wh..opq` makes its directory opaque (entries
//!    this layer already wrote there are kept — a kept directory loses what this layer did not
//!    write in it, as with Docker), other `.wh..wh.*` names (AUFS bookkeeping) are
//!    skipped, and so is everything beneath a top-level `.wh..wh.*` directory (as Docker
//!    does). `.wh.`, `.wh..` and `.wh...` are rejected, and so is
//!    any other entry beneath a `.wh.*` name (a whiteout is never a directory). A whiteout
//!    that carries data takes effect like any other; its payload is skipped unread.
//!    Whiteouts act through in-root parents like any other entry.
//! 6. An existing path is replaced by a new entry unless both are directories, in which case
//!    the new metadata is applied to the existing directory (or the root), which ends with
//!    exactly the entry's extended attributes.
//! 7. Extended attributes: `trusted.overlay.*` and `user.overlay.*` are rejected (they would
//!    forge overlayfs state); `security.selinux` is dropped (the mount label decides it);
//!    `user.*` on fifos and devices, which the kernel refuses, are dropped (as Docker does).
//! 8. Devices: major < 4096 and minor < 2^20 (the kernel's limits); a character device 0:0 is
//!    an overlay whiteout in disguise and is rejected.
//! 9. A path component that exists and is not a directory (nor a symlink to one) cannot be a
//!    parent: the entry is rejected rather than the file silently replaced.
//! 10. Limits: `max_bytes` bounds the uncompressed stream and also the sum of the entries'
//!     sizes (a sparse file counts at its real size, so a tiny stream cannot declare a
//!     giant file); `max_entries` bounds the entry count.
//!
//! In overlay format (an apply straight into an overlay `diff/`), deletions become `0:0`
//! character devices (only where a lower layer has something to hide), opaque directories get
//! `trusted.overlay.opaque=y` (at the layer root, which the kernel never treats as opaque,
//! every name the lowers show gets a whiteout instead), and a directory that replaces a
//! non-directory over a lower directory is made opaque, so that the merged view equals what
//! the naive apply would give.

mod creds;
mod dirmeta;
mod dirtimes;
mod entries;
pub(crate) mod hashindex;
mod links;
mod names;
mod remove;
pub mod tree;
mod walk;
mod whiteout;
mod writers;

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{fsetxattr, openat, statat, AtFlags, FileType, Mode, OFlags, XattrFlags};
use rustix::io::Errno;
use tracing::debug;

use self::creds::Creds;
use self::dirtimes::DirTimes;
use self::names::Names;
use self::tree::{lower_lookup, Dir, Lower, Tree, OPAQUE_XATTR};
use self::writers::Pool;
use super::fsmeta::{self, Meta};
use super::name;
use super::tarsplit::Recorder;
use super::tarstream::{Header, Kind, Limits, TarReader};
use super::{compress, digest};
use super::{Error, Rule};
use crate::fsutil;

/// How deletions and opaque directories are represented in the target tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A complete tree: whiteouts delete, opaque markers empty the directory.
    Naive,
    /// An overlay upper directory over read-only lowers.
    Overlay,
}

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Target representation.
    pub format: Format,
    /// Overlay format only: lower layer directories, topmost first.
    pub lowers: Vec<PathBuf>,
    /// Resource limits.
    pub limits: Limits,
    /// Record the stream for exact re-export into this directory (see [`super::tarsplit`]).
    pub record_into: Option<PathBuf>,
    /// Writer threads for small files (0: write everything on the applying thread).
    pub writers: usize,
    /// Digest the uncompressed stream must have (checked before the apply succeeds).
    pub digest: Option<digest::Expected>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            format: Format::Naive,
            lowers: Vec::new(),
            limits: Limits::default(),
            record_into: None,
            digest: None,
            writers: 2,
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Sum of the entries' declared sizes: Docker's `ApplyDiff` size.
    pub size: u64,
    /// Entries applied (whiteouts included).
    pub entries: u64,
    /// Uncompressed bytes read.
    pub bytes: u64,
    /// The compression the stream used.
    pub compression: Option<compress::Compression>,
}

/// Applies the layer tar read from `input` (plain, gzip or zstd) to the tree at `root`.
///
/// On error the tree may hold part of the layer: callers apply into a staging copy and discard
/// it (the store's job), so a failed apply changes nothing that anyone can see.
pub fn apply(
    root: BorrowedFd<'_>,
    input: &mut (dyn Read + Send),
    opts: &ApplyOptions,
) -> Result<ApplyStats, Error> {
    let (compression, decoded) = compress::decoder(Box::new(input))?;
    let mut hashing = digest::HashingReader::new(decoded, opts.digest.as_ref().map(|d| d.hasher()));
    let (writer, pipe) = super::pipe::pipe();
    let (stats, actual) = std::thread::scope(|s| {
        let producer = s.spawn(move || {
            writer.copy_from(&mut hashing);
            hashing.finish()
        });
        let stats = run(root, pipe, opts);
        (stats, producer.join())
    });
    let mut stats = stats?;
    if let Some(expected) = &opts.digest {
        // The consumer read to the end of the stream, so the producer hashed every byte.
        let actual = actual.ok().flatten().unwrap_or_default();
        expected.check(&actual)?;
    }
    stats.compression = Some(compression);
    Ok(stats)
}

fn run(root: BorrowedFd<'_>, input: impl Read, opts: &ApplyOptions) -> Result<ApplyStats, Error> {
    let root = root
        .try_clone_to_owned()
        .map_err(|e| Error::io("duplicating the root fd", e))?;
    let rec = match &opts.record_into {
        Some(dir) => Some(Recorder::create(dir, root.as_fd())?),
        None => None,
    };
    let tree =
        match opts.format {
            Format::Naive => Tree::naive(root)?,
            Format::Overlay => {
                let mut lowers = Vec::new();
                for l in &opts.lowers {
                    lowers.push(fsutil::open_dir(l).map_err(|e| {
                        Error::io(format!("opening lower layer {}", l.display()), e)
                    })?);
                }
                Tree::overlay(root, lowers)?
            }
        };
    std::thread::scope(|scope| {
        let pool = (opts.writers > 0).then(|| Pool::spawn(scope, opts.writers));
        apply_entries(tree, rec, pool, input, opts)
    })
}

fn apply_entries(
    mut tree: Tree,
    rec: Option<Recorder>,
    pool: Option<Pool>,
    input: impl Read,
    opts: &ApplyOptions,
) -> Result<ApplyStats, Error> {
    // A writable tree that starts empty is, entirely, what this apply makes.
    let empty = walk_is_empty(tree.root().fd.as_fd())
        .map_err(|e| Error::io("listing the layer root", e))?;
    tree.set_root_fresh(empty);
    let mut a = Applier {
        tree,
        names: Names::default(),
        dir_times: DirTimes::default(),
        buf: vec![0u8; 256 * 1024],
        stats: ApplyStats::default(),
        rec,
        creds: Creds::current(),
        pool,
    };
    let mut tr = TarReader::new(input, opts.limits);
    tr.set_recording(a.rec.is_some());
    while let Some(h) = tr.next_entry()? {
        if let Some(r) = &mut a.rec {
            r.meta(&tr.take_meta())?;
        }
        a.stats.entries += 1;
        a.stats.size = a
            .stats
            .size
            .saturating_add(h.sparse.as_ref().map_or(h.size, |s| s.real_size));
        if a.stats.size > opts.limits.max_bytes {
            return Err(fail(
                &h,
                Rule::Limit,
                format!(
                    "the entries' sizes add up to more than {} bytes",
                    opts.limits.max_bytes
                ),
            ));
        }
        a.entry(&h, &mut tr)?;
    }
    a.finish()?;
    a.stats.bytes = tr.position();
    let mut failed = None;
    match &mut a.rec {
        Some(r) => {
            tr.finish(&mut |b| {
                if failed.is_none() {
                    failed = r.meta(b).err();
                }
            })?;
        }
        None => {
            tr.finish(&mut |_| {})?;
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if let Some(r) = a.rec.take() {
        r.finish()?;
    }
    Ok(a.stats)
}

struct Applier {
    tree: Tree,
    /// Names this apply wrote or occupied, by directory.
    names: Names,
    /// Directories whose times are set at the end.
    dir_times: DirTimes,
    buf: Vec<u8>,
    stats: ApplyStats,
    /// The tar-split recorder, when recording for exact re-export.
    rec: Option<Recorder>,
    /// Who new entries belong to and how the umask shapes their modes.
    creds: Creds,
    /// Writer threads for small files, when enabled.
    pool: Option<Pool>,
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn has_user(meta: &Meta) -> bool {
    meta.xattrs.iter().any(|(k, _)| k.starts_with(b"user."))
}

fn fail(h: &Header, rule: Rule, detail: impl Into<String>) -> Error {
    Error::entry(&h.name, rule, detail)
}

fn sys(h: &Header, what: &str, e: impl Into<std::io::Error>) -> Error {
    let e: std::io::Error = e.into();
    let rule = match e.raw_os_error() {
        Some(libc::ENOTDIR) => Rule::NotDirectory,
        Some(libc::ELOOP) | Some(libc::EXDEV) => Rule::Escape,
        _ => Rule::Io,
    };
    fail(h, rule, format!("{what}: {e}"))
}

/// The metadata an entry asks for, with Docker's atime rule (never before mtime) and the
/// xattr rules applied.
fn entry_meta(h: &Header) -> Result<Meta, Error> {
    let mut xattrs = Vec::with_capacity(h.xattrs.len());
    for (k, v) in &h.xattrs {
        if k.starts_with(b"trusted.overlay.") || k.starts_with(b"user.overlay.") {
            return Err(fail(
                h,
                Rule::Xattr,
                format!("{} would forge overlayfs state", String::from_utf8_lossy(k)),
            ));
        }
        if k.as_slice() == b"security.selinux" {
            continue;
        }
        if k.is_empty() || k.contains(&0) {
            return Err(fail(h, Rule::Xattr, "empty xattr name or NUL in it"));
        }
        xattrs.push((k.clone(), v.clone()));
    }
    let atime = match h.atime {
        Some(a) if a >= h.mtime => a,
        _ => h.mtime,
    };
    Ok(Meta {
        uid: h.uid,
        gid: h.gid,
        mode: h.mode,
        atime,
        mtime: h.mtime,
        xattrs,
    })
}

impl Applier {
    fn entry<R: Read>(&mut self, h: &Header, tr: &mut TarReader<R>) -> Result<(), Error> {
        let comps = name::clean(&h.name).map_err(|e| match e {
            Error::Entry { rule, detail, .. } => fail(h, rule, detail),
            other => other,
        })?;
        let Some((&last, parent)) = comps.split_last() else {
            return self.root_entry(h);
        };
        if parent.iter().any(|c| c.starts_with(b".wh.")) {
            if parent[0].starts_with(b".wh..wh.") {
                debug!(entry = %String::from_utf8_lossy(&h.name), "skipping AUFS metadata");
                return self.skip_payload(tr);
            }
            // It would be written as a directory whose name a re-export turns into a
            // whiteout.
            return Err(fail(
                h,
                Rule::Whiteout,
                "a whiteout name cannot be a parent directory",
            ));
        }
        if let Some(target) = last.strip_prefix(b".wh.") {
            // Some tools give whiteouts data; Docker skips it, and so does strata (it is
            // never looked at, only kept in the record for exact re-export).
            self.skip_payload(tr)?;
            return self.whiteout(h, parent, target);
        }
        let meta = entry_meta(h)?;
        let dir = self.resolve(h, parent)?;
        self.wait_for(dir.key, last)?;
        if self.tree.shadows_followed_link(&dir, last) {
            // This entry hides a lower layer's symlink that resolved parents went through.
            self.invalidate();
        }
        match h.kind {
            Kind::Regular => self.regular(h, &dir, last, &meta, tr)?,
            Kind::Dir => self.directory(h, &dir, &comps, &meta)?,
            Kind::Symlink => self.symlink(h, &dir, last, &meta)?,
            Kind::Hardlink => self.hardlink(h, &dir, last, &meta)?,
            Kind::Char | Kind::Block | Kind::Fifo => self.node(h, &dir, last, &meta)?,
        }
        self.names.unpack(dir.key, last);
        Ok(())
    }

    /// Reads past the current entry's payload without interpreting it; when recording, the
    /// bytes go to the record as they are read, so a large payload is never held in memory.
    fn skip_payload<R: Read>(&mut self, tr: &mut TarReader<R>) -> Result<(), Error> {
        loop {
            let n = tr.read_payload(&mut self.buf)?;
            if let Some(r) = &mut self.rec {
                r.meta(&tr.take_meta())?;
            }
            if n == 0 {
                return Ok(());
            }
        }
    }

    /// Resolves (creating) the parent directory `parent`.
    fn resolve(&mut self, h: &Header, parent: &[&[u8]]) -> Result<Dir, Error> {
        self.resolve_dir(h, parent, true)?
            .ok_or_else(|| fail(h, Rule::Io, "parent directory vanished"))
    }

    /// Resolves the directory `comps` (creating it when `create`), noting what was created
    /// implicitly. A walk of the filesystem first waits for files in flight: the path could
    /// run through one of them.
    fn resolve_dir(
        &mut self,
        h: &Header,
        comps: &[&[u8]],
        create: bool,
    ) -> Result<Option<Dir>, Error> {
        if self.tree.will_walk(comps) {
            self.barrier()?;
        }
        let dir = self.tree.dir(comps, create, &h.name)?;
        self.names.occupy_all(self.tree.take_made());
        Ok(dir)
    }

    /// Waits until `dir/name` is no longer being written by a writer thread.
    fn wait_for(&mut self, dir: (u64, u64), name: &[u8]) -> Result<(), Error> {
        match &mut self.pool {
            Some(p) => {
                let key = (dir, name.to_vec());
                if p.busy(&key) {
                    p.wait_for(&key)?;
                }
                p.poll()
            }
            None => Ok(()),
        }
    }

    /// Waits until no file is being written.
    fn barrier(&mut self) -> Result<(), Error> {
        match &mut self.pool {
            Some(p) => p.barrier(),
            None => Ok(()),
        }
    }

    fn root_entry(&mut self, h: &Header) -> Result<(), Error> {
        if h.kind != Kind::Dir {
            return Err(fail(
                h,
                Rule::RootType,
                format!("a {:?} entry names the layer root", h.kind),
            ));
        }
        let meta = entry_meta(h)?;
        let root = self.tree.root().fd.clone();
        let st = rustix::fs::fstat(&*root).map_err(|e| sys(h, "inspecting the layer root", e))?;
        if self.update_dir(h, root.as_fd(), &st, &meta)? {
            self.tree
                .refresh_root()
                .map_err(|e| sys(h, "inspecting the layer root", e))?;
        }
        self.dir_times.root(meta.atime, meta.mtime);
        Ok(())
    }

    /// Forgets resolved directories (after removals, or when opaque markers change merging).
    fn invalidate(&mut self) {
        self.tree.invalidate();
    }

    fn directory(
        &mut self,
        h: &Header,
        dir: &Dir,
        comps: &[&[u8]],
        meta: &Meta,
    ) -> Result<(), Error> {
        let name = comps[comps.len() - 1];
        match rustix::fs::mkdirat(
            dir.fd.as_fd(),
            os(name),
            Mode::from_raw_mode(meta.mode & 0o777),
        ) {
            Ok(()) => {
                // Fresh (in overlay format, merging with any lower directory there).
                fsmeta::apply_at(
                    dir.fd.as_fd(),
                    os(name),
                    meta,
                    self.needs(dir, meta, true),
                    false,
                )
                .map_err(|e| sys(h, "setting metadata", e))?;
                let acl = meta
                    .xattrs
                    .iter()
                    .any(|(k, _)| k == b"system.posix_acl_default");
                self.tree.created(comps, dir, name, acl);
                let st = statat(dir.fd.as_fd(), os(name), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| sys(h, "inspecting the new directory", e))?;
                self.note_times(dir, comps, &st, meta);
                return Ok(());
            }
            Err(Errno::EXIST) => {}
            Err(e) => return Err(sys(h, "creating the directory", e)),
        }
        let existing = match statat(dir.fd.as_fd(), os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(sys(h, "inspecting the existing entry", e)),
        };
        let is_dir =
            |st: &rustix::fs::Stat| FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        let mut opaque = false;
        match &existing {
            Some(st) if is_dir(st) => {}
            Some(_) => {
                self.remove_existing(h, dir, name)?;
                // Replacing a non-directory of this layer: a lower directory must stay hidden.
                opaque = self.tree.is_overlay() && matches!(self.lower(h, dir, name)?, Lower::Dir);
                self.mkdir(h, dir, name)?;
            }
            None => self.mkdir(h, dir, name)?,
        }
        let fd = openat(
            dir.fd.as_fd(),
            os(name),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| sys(h, "opening the directory", e))?;
        match &existing {
            Some(st) if is_dir(st) => {
                if self.update_dir(h, fd.as_fd(), st, meta)? {
                    self.tree.forget_dir((st.st_dev, st.st_ino), dir.key, name);
                }
            }
            _ => fsmeta::set_fd(fd.as_fd(), meta).map_err(|e| sys(h, "setting metadata", e))?,
        }
        if opaque {
            fsetxattr(fd.as_fd(), OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(|e| sys(h, "marking the directory opaque", e))?;
            self.invalidate();
        }
        let st = rustix::fs::fstat(&fd).map_err(|e| sys(h, "inspecting the directory", e))?;
        self.note_times(dir, comps, &st, meta);
        Ok(())
    }

    /// Notes the times directory `comps` (in `dir`, stat `st`) gets at the end.
    fn note_times(&mut self, dir: &Dir, comps: &[&[u8]], st: &rustix::fs::Stat, meta: &Meta) {
        let root = self.tree.root().key;
        let key = (st.st_dev, st.st_ino);
        self.dir_times
            .note(dir, root, comps, key, meta.atime, meta.mtime);
    }

    fn mkdir(&mut self, h: &Header, dir: &Dir, name: &[u8]) -> Result<(), Error> {
        rustix::fs::mkdirat(dir.fd.as_fd(), os(name), Mode::from_raw_mode(0o700))
            .map_err(|e| sys(h, "creating the directory", e))
    }

    fn lower(&self, h: &Header, dir: &Dir, name: &[u8]) -> Result<Lower, Error> {
        if dir.lowers.is_empty() {
            return Ok(Lower::Absent);
        }
        Ok(lower_lookup(&dir.lowers, os(name))
            .map_err(|e| sys(h, "looking up lower layers", e))?
            .0)
    }
}

#[cfg(test)]
mod tests;

/// Whether the directory `dir` has no entries.
fn walk_is_empty(dir: BorrowedFd<'_>) -> std::io::Result<bool> {
    let fd = openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for entry in rustix::fs::Dir::read_from(&fd)? {
        let n = entry?.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}
