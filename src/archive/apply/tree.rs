//! Resolving the parent directory of an entry, confined to the layer.
//!
//! * naive [`Tree`]s: one directory tree (vfs layers, staging copies). Parents are resolved by
//!   the kernel with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`, so a
//!   symlink — absolute or relative, however many hops — is followed as if the layer root were
//!   `/`, and never leaves it. Missing directories are created with mode 0755 — also behind a
//!   dangling symlink, at its in-root target, as Docker and containerd do.
//! * overlay [`Tree`]s: an overlay `diff/` directory over read-only lower layers. Parents are
//!   resolved in the *merged* view, one component at a time with `O_NOFOLLOW` opens: the diff
//!   is consulted first, then the lowers (top first), honouring whiteout devices and opaque
//!   directories; a symlink found on the way is followed by strata itself, in-root (an
//!   absolute target restarts at the layer root, `..` stops at it). Directories that exist only
//!   in lowers are copied up into the diff with their metadata, as the kernel would. Entries
//!   therefore land where they would land on a mounted overlay — or on vfs.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;
use std::sync::Arc;

use rustix::fs::{
    fgetxattr, fstat, mkdirat, openat, openat2, readlinkat, statat, AtFlags, FileType, Mode,
    OFlags, ResolveFlags, Stat,
};
use rustix::io::Errno;

use super::super::fsmeta::{self, Meta, Time};
use super::super::{name, Error, Rule};

/// Most symlinks followed while resolving one path (the kernel's limit).
const MAX_HOPS: usize = 40;

/// Paths at least this long are resolved by strata's own walk rather than one `openat2`
/// (the kernel refuses paths of `PATH_MAX` bytes and more).
const KERNEL_PATH_MAX: usize = 4000;

/// Directories a walk keeps open at most (the deepest ones); an ancestor beyond them that a
/// `..` returns to is reached again from the start of the walk.
const OPEN_LEVELS: usize = 64;

/// Cached resolutions at most, and the most bytes of path keys they may hold.
const CACHE_ENTRIES: usize = 4096;
const CACHE_BYTES: usize = 4 << 20;

/// Ancestors looked up in the cache to resume a walk from (the nearest first).
const RESUME_PROBES: usize = 16;

/// The overlay xattr that marks a directory opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// A directory of the writable tree, with the lower directories merged under it.
#[derive(Clone)]
pub struct Dir {
    /// The directory in the writable tree (opened `O_RDONLY | O_DIRECTORY`).
    pub fd: Arc<OwnedFd>,
    /// The same directory in lower layers, topmost first, as far as they merge (empty for
    /// naive trees and opaque directories).
    pub lowers: Rc<Vec<Rc<OwnedFd>>>,
    /// (dev, ino) of `fd`: identifies the directory for the "unpacked by this layer" set.
    pub key: (u64, u64),
    /// Its group and whether it is setgid (new entries then take its group).
    pub gid: u32,
    /// Whether it is setgid.
    pub setgid: bool,
    /// Whether it has a default ACL (which then decides new entries' modes, not the umask).
    pub acl_default: bool,
    /// Whether this apply created it (so every name in it is one the apply made).
    pub fresh: bool,
}

/// A name in a directory: ((dev, ino) of the directory, name).
pub type Key = ((u64, u64), Vec<u8>);

impl Dir {
    /// Describes the open directory `fd` with lower merge list `lowers`.
    pub fn new(fd: Arc<OwnedFd>, lowers: Rc<Vec<Rc<OwnedFd>>>) -> rustix::io::Result<Dir> {
        let st = fstat(fd.as_fd())?;
        let mut probe = [0u8; 1];
        let acl_default = !matches!(
            fgetxattr(fd.as_fd(), "system.posix_acl_default", &mut probe),
            Err(Errno::NODATA) | Err(Errno::NOTSUP)
        );
        Ok(Dir {
            fd,
            lowers,
            key: (st.st_dev, st.st_ino),
            gid: st.st_gid,
            setgid: st.st_mode & 0o2000 != 0,
            acl_default,
            fresh: false,
        })
    }
}

/// What the lower layers show at a name inside a directory.
pub enum Lower {
    /// Nothing (or a whiteout).
    Absent,
    /// A directory.
    Dir,
    /// A non-directory: the lower directory that holds it and its stat.
    Other(Rc<OwnedFd>, Box<Stat>),
}

/// Whether `st` is an overlay whiteout (character device 0:0).
pub fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

fn open_dir_nofollow(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Whether an open directory carries `trusted.overlay.opaque=y`.
pub fn is_opaque(fd: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 4];
    matches!(fgetxattr(fd, OPAQUE_XATTR, &mut buf), Ok(1) if buf[0] == b'y')
}

fn io_err(entry: &[u8], what: &str, e: Errno) -> Error {
    let rule = match e {
        Errno::NOTDIR => Rule::NotDirectory,
        Errno::LOOP | Errno::XDEV => Rule::Escape,
        _ => Rule::Io,
    };
    Error::entry(entry, rule, format!("{what}: {}", std::io::Error::from(e)))
}

/// Creates directory `name` in `parent` with `meta` (mode 0755 root:root when `None`).
fn make_dir(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    meta: Option<&Meta>,
    entry: &[u8],
    made: &mut Vec<Key>,
) -> Result<OwnedFd, Error> {
    let default = Meta {
        mode: 0o755,
        ..Meta::default()
    };
    let m = meta.unwrap_or(&default);
    mkdirat(parent, name, Mode::from_raw_mode(m.mode & 0o777)).map_err(|e| {
        if e == Errno::EXIST {
            Error::entry(
                entry,
                Rule::NotDirectory,
                format!("{} exists and is not a directory", name.to_string_lossy()),
            )
        } else {
            io_err(
                entry,
                &format!("creating directory {}", name.to_string_lossy()),
                e,
            )
        }
    })?;
    let pst = fstat(parent).map_err(|e| io_err(entry, "inspecting a directory", e))?;
    made.push(((pst.st_dev, pst.st_ino), name.as_bytes().to_vec()));
    let fd =
        open_dir_nofollow(parent, name).map_err(|e| io_err(entry, "opening a new directory", e))?;
    // Only what the creation did not already get right (umask, setgid parent) is set.
    let st = fstat(fd.as_fd()).map_err(|e| io_err(entry, "inspecting a new directory", e))?;
    let needs = fsmeta::Needs {
        chown: (st.st_uid, st.st_gid) != (m.uid, m.gid),
        chmod: st.st_mode & 0o7777 != m.mode & 0o7777,
    };
    fsmeta::apply_fd(fd.as_fd(), m, needs).map_err(|e| {
        Error::entry(
            entry,
            Rule::Io,
            format!("setting metadata of a new directory: {e}"),
        )
    })?;
    if meta.is_some() {
        fsmeta::set_times_fd(fd.as_fd(), m.atime, m.mtime).map_err(|e| {
            Error::entry(
                entry,
                Rule::Io,
                format!("setting times of a new directory: {e}"),
            )
        })?;
    }
    Ok(fd)
}

/// Reads the metadata of a lower directory to copy it up (overlay's own xattrs excluded).
fn lower_meta(fd: BorrowedFd<'_>) -> std::io::Result<Meta> {
    let st = fstat(fd)?;
    let xattrs = fsmeta::read_fd(fd)?
        .into_iter()
        .filter(|(k, _)| !k.starts_with(b"trusted.overlay.") && !k.starts_with(b"user.overlay."))
        .collect();
    Ok(Meta {
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode & 0o7777,
        atime: Time {
            sec: st.st_atime,
            nsec: st.st_atime_nsec as u32,
        },
        mtime: Time {
            sec: st.st_mtime,
            nsec: st.st_mtime_nsec as u32,
        },
        xattrs,
    })
}

/// Looks `name` up in a merge list of lower directories (topmost first).
pub fn lower_lookup(
    lowers: &[Rc<OwnedFd>],
    name: &OsStr,
) -> Result<(Lower, Vec<Rc<OwnedFd>>), Errno> {
    let mut merged = Vec::new();
    for l in lowers {
        let st = match statat(l.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e),
        };
        if is_whiteout(&st) {
            break;
        }
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            if merged.is_empty() {
                return Ok((Lower::Other(l.clone(), Box::new(st)), merged));
            }
            break;
        }
        let fd = open_dir_nofollow(l.as_fd(), name)?;
        let opaque = is_opaque(fd.as_fd());
        merged.push(Rc::new(fd));
        if opaque {
            break;
        }
    }
    if merged.is_empty() {
        Ok((Lower::Absent, merged))
    } else {
        Ok((Lower::Dir, merged))
    }
}

/// The tree an apply writes into: a plain tree, or an overlay `diff/` over lower layers.
pub struct Tree {
    overlay: bool,
    /// The root of the writable tree (for overlay: `diff/`, its lower roots merged under it).
    root: Dir,
    /// Resolved directories by cleaned path.
    cache: HashMap<Vec<u8>, Dir>,
    /// Bytes of path keys in `cache` and `fresh` (both are bounded by it).
    key_bytes: usize,
    /// Directories this layer created, not opened yet: resolving one is then a single open
    /// relative to its parent, with nothing to look up (it cannot be a symlink or opaque).
    fresh: HashMap<Vec<u8>, Fresh>,
    /// Directories created implicitly (missing parents, copy-ups) since the last
    /// [`Tree::take_made`].
    made: Vec<Key>,
    /// Lower-layer symlinks that cached resolutions went through, by the writable directory
    /// that shows them: an entry of this layer at one of those names hides the symlink
    /// without removing anything, so the caches must be dropped then.
    lower_links: HashSet<Key>,
}

/// A directory the apply created, with what its creation determined.
struct Fresh {
    parent: Dir,
    name: Vec<u8>,
    acl_default: bool,
}

impl Tree {
    /// A naive tree rooted at `root`.
    pub fn naive(root: OwnedFd) -> Result<Tree, Error> {
        let root = Dir::new(Arc::new(root), Rc::new(Vec::new()))
            .map_err(|e| Error::io("inspecting the layer root", e))?;
        Ok(Tree {
            overlay: false,
            root,
            cache: HashMap::new(),
            key_bytes: 0,
            fresh: HashMap::new(),
            made: Vec::new(),
            lower_links: HashSet::new(),
        })
    }

    /// An overlay tree: `diff` over `lowers` (topmost first).
    pub fn overlay(diff: OwnedFd, lowers: Vec<OwnedFd>) -> Result<Tree, Error> {
        let root = Dir::new(
            Arc::new(diff),
            Rc::new(lowers.into_iter().map(Rc::new).collect()),
        )
        .map_err(|e| Error::io("inspecting the layer root", e))?;
        Ok(Tree {
            overlay: true,
            root,
            cache: HashMap::new(),
            key_bytes: 0,
            fresh: HashMap::new(),
            made: Vec::new(),
            lower_links: HashSet::new(),
        })
    }

    /// Marks the root as created by this apply (the writable tree started empty).
    pub fn set_root_fresh(&mut self, fresh: bool) {
        self.root.fresh = fresh;
    }

    /// Names of directories created implicitly since the last call.
    pub fn take_made(&mut self) -> Vec<Key> {
        std::mem::take(&mut self.made)
    }

    /// The root of the writable tree.
    pub fn root(&self) -> &Dir {
        &self.root
    }

    /// Whether this is an overlay tree.
    pub fn is_overlay(&self) -> bool {
        self.overlay
    }

    /// Forgets resolved directories; called after anything is removed or made opaque.
    pub fn invalidate(&mut self) {
        self.cache.clear();
        self.fresh.clear();
        self.lower_links.clear();
        self.key_bytes = 0;
    }

    /// Makes room for a key of `len` bytes in the caches (dropping them when full).
    fn room(&mut self, len: usize) {
        if self.cache.len() >= CACHE_ENTRIES
            || self.fresh.len() >= CACHE_ENTRIES
            || self.key_bytes + len > CACHE_BYTES
        {
            self.cache.clear();
            self.fresh.clear();
            self.key_bytes = 0;
        }
        self.key_bytes += len;
    }

    /// Whether an entry named `name` in `dir` would hide a lower-layer symlink that a cached
    /// resolution followed (the caller must then [`Tree::invalidate`]).
    pub fn shadows_followed_link(&self, dir: &Dir, name: &[u8]) -> bool {
        !self.lower_links.is_empty() && self.lower_links.contains(&(dir.key, name.to_vec()))
    }

    /// Forgets what was cached about the directory `key` (also known as `name` in the
    /// directory `parent`), whose owner, mode or default ACL just changed.
    pub fn forget_dir(&mut self, key: (u64, u64), parent: (u64, u64), name: &[u8]) {
        self.cache.retain(|_, d| d.key != key);
        self.fresh
            .retain(|_, f| !(f.parent.key == parent && f.name == name));
    }

    /// Re-reads what the root passes on to new entries, after its metadata changed.
    pub fn refresh_root(&mut self) -> rustix::io::Result<()> {
        let fresh = self.root.fresh;
        self.root = Dir::new(self.root.fd.clone(), self.root.lowers.clone())?;
        self.root.fresh = fresh;
        self.invalidate();
        Ok(())
    }

    /// Notes that the apply just created directory `name` in `parent` (path `comps`), with
    /// `acl` saying whether it carries a default ACL of its own.
    pub fn created(&mut self, comps: &[&[u8]], parent: &Dir, name: &[u8], acl: bool) {
        let key = name::join(comps);
        self.room(key.len());
        self.fresh.insert(
            key,
            Fresh {
                parent: parent.clone(),
                name: name.to_vec(),
                acl_default: acl || parent.acl_default,
            },
        );
    }

    fn open_fresh(&self, f: &Fresh, entry: &[u8]) -> Result<Dir, Error> {
        let fd = open_dir_nofollow(f.parent.fd.as_fd(), OsStr::from_bytes(&f.name))
            .map_err(|e| io_err(entry, "opening a directory", e))?;
        let st = fstat(fd.as_fd()).map_err(|e| io_err(entry, "inspecting a directory", e))?;
        let lowers = if self.overlay && !f.parent.lowers.is_empty() {
            lower_lookup(&f.parent.lowers, OsStr::from_bytes(&f.name))
                .map_err(|e| io_err(entry, "looking up lower layers", e))?
                .1
        } else {
            Vec::new()
        };
        Ok(Dir {
            fd: Arc::new(fd),
            lowers: Rc::new(lowers),
            key: (st.st_dev, st.st_ino),
            gid: st.st_gid,
            setgid: st.st_mode & 0o2000 != 0,
            acl_default: f.acl_default,
            fresh: true,
        })
    }

    /// Whether resolving `comps` would look at the filesystem (rather than at a directory
    /// already resolved or just created by this apply).
    pub fn will_walk(&self, comps: &[&[u8]]) -> bool {
        if comps.is_empty() {
            return false;
        }
        let key = name::join(comps);
        !self.cache.contains_key(&key) && !self.fresh.contains_key(&key)
    }

    /// Resolves the directory at `comps`, creating what is missing when `create`; `Ok(None)`
    /// when it does not exist and `create` is false. `entry` names the tar entry in errors.
    pub fn dir(
        &mut self,
        comps: &[&[u8]],
        create: bool,
        entry: &[u8],
    ) -> Result<Option<Dir>, Error> {
        if comps.is_empty() {
            return Ok(Some(self.root.clone()));
        }
        let key = name::join(comps);
        if let Some(d) = self.cache.get(&key) {
            return Ok(Some(d.clone()));
        }
        let found = if let Some(f) = self.fresh.remove(&key) {
            self.key_bytes = self.key_bytes.saturating_sub(key.len());
            Some(self.open_fresh(&f, entry)?)
        } else if !self.overlay && key.len() < KERNEL_PATH_MAX {
            naive_dir(
                &self.root,
                comps,
                create,
                entry,
                (&mut self.made, &mut self.lower_links),
            )?
        } else {
            self.walk(comps, &key, create, entry)?
        };
        if let Some(d) = &found {
            self.room(key.len());
            self.cache.insert(key, d.clone());
        }
        Ok(found)
    }

    /// Resolves `comps` (joined: `key`) with strata's own walk, resuming from the deepest
    /// cached ancestor among the nearest few: only the new components are walked. A symlink
    /// leading above that ancestor needs the walk from the root.
    fn walk(
        &mut self,
        comps: &[&[u8]],
        key: &[u8],
        create: bool,
        entry: &[u8],
    ) -> Result<Option<Dir>, Error> {
        // Where the path of the first k components ends in `key`.
        let mut ends = Vec::with_capacity(comps.len());
        let mut end = 0;
        for (i, c) in comps.iter().enumerate() {
            end += c.len() + usize::from(i > 0);
            ends.push(end);
        }
        let lowest = comps.len().saturating_sub(RESUME_PROBES).max(1);
        let start = (lowest..comps.len())
            .rev()
            .find_map(|k| self.cache.get(&key[..ends[k - 1]]).map(|d| (k, d.clone())));
        let resumed = match &start {
            Some((k, d)) => overlay_dir(
                d,
                &comps[*k..],
                create,
                entry,
                false,
                (&mut self.made, &mut self.lower_links),
            )?,
            None => None,
        };
        Ok(match resumed {
            Some(found) => found,
            None => overlay_dir(
                &self.root,
                comps,
                create,
                entry,
                true,
                (&mut self.made, &mut self.lower_links),
            )?
            .flatten(),
        })
    }
}

fn resolve_in_root(root: BorrowedFd<'_>, path: &[u8]) -> rustix::io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match openat2(
            root,
            OsStr::from_bytes(path),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
        ) {
            // The kernel asks for a retry when a rename raced with the lookup.
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            r => return r,
        }
    }
}

fn naive_dir(
    root: &Dir,
    comps: &[&[u8]],
    create: bool,
    entry: &[u8],
    notes: Notes<'_>,
) -> Result<Option<Dir>, Error> {
    let wrap = |fd: OwnedFd| -> Result<Dir, Error> {
        Dir::new(Arc::new(fd), root.lowers.clone())
            .map_err(|e| io_err(entry, "inspecting a directory", e))
    };
    let path = name::join(comps);
    match resolve_in_root(root.fd.as_fd(), &path) {
        Ok(fd) => return Ok(Some(wrap(fd)?)),
        Err(Errno::NOENT) if create => {}
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => {
            return Err(io_err(
                entry,
                &format!("resolving {}", String::from_utf8_lossy(&path)),
                e,
            ))
        }
    }
    // Something is missing, possibly behind a dangling symlink: walk it one component at a
    // time (the merged-view walker with no lowers), creating directories in-root.
    Ok(overlay_dir(root, comps, true, entry, true, notes)?.flatten())
}

/// What a walk notes for the [`Tree`]: directories it created, lower symlinks it followed.
type Notes<'a> = (&'a mut Vec<Key>, &'a mut HashSet<Key>);

/// One step of the merged-view walk.
struct Pos {
    diff: Arc<OwnedFd>,
    lowers: Vec<Rc<OwnedFd>>,
}

/// A directory on a walk's way: its name in the one before, and its [`Pos`] while it is
/// among the [`OPEN_LEVELS`] deepest (the first one, where the walk started, stays open).
struct Level {
    name: Vec<u8>,
    pos: Option<Pos>,
}

/// Goes one level up; when the level reached was closed, the walk starts over from its
/// first level along the names on the way (queued in front of what remains to walk).
fn level_up(stack: &mut Vec<Level>, queue: &mut std::collections::VecDeque<Vec<u8>>) {
    stack.pop();
    if stack.last().is_some_and(|l| l.pos.is_none()) {
        for l in stack.drain(1..).rev() {
            queue.push_front(l.name);
        }
    }
}

/// Enters `pos` (named `name`), closing the level that falls out of the open window.
fn level_down(stack: &mut Vec<Level>, name: Vec<u8>, pos: Pos) {
    stack.push(Level {
        name,
        pos: Some(pos),
    });
    if stack.len() > OPEN_LEVELS + 1 {
        let i = stack.len() - OPEN_LEVELS - 1;
        if i > 0 {
            stack[i].pos = None;
        }
    }
}

/// Walks `comps` from `root` in the merged view. With `is_root` false, `root` is a resolved
/// ancestor rather than the layer root, and `Ok(None)` means a symlink led above it or to an
/// absolute path: the caller must walk from the real root. Otherwise `Ok(Some(found))`.
fn overlay_dir(
    root: &Dir,
    comps: &[&[u8]],
    create: bool,
    entry: &[u8],
    is_root: bool,
    (made, lower_links): Notes<'_>,
) -> Result<Option<Option<Dir>>, Error> {
    // Whether the directory on top of the stack was created by this walk.
    let mut last_made = false;
    let mut stack = vec![Level {
        name: Vec::new(),
        pos: Some(Pos {
            diff: root.fd.clone(),
            lowers: root.lowers.to_vec(),
        }),
    }];
    let mut queue: std::collections::VecDeque<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        let made_before_step = made.len();
        match c.as_slice() {
            b"" | b"." => continue,
            b".." => {
                last_made = false;
                if stack.len() > 1 {
                    level_up(&mut stack, &mut queue);
                } else if !is_root {
                    return Ok(None);
                }
                continue;
            }
            _ => {}
        }
        let name = OsStr::from_bytes(&c);
        let cur = stack
            .last()
            .and_then(|l| l.pos.as_ref())
            .ok_or_else(|| Error::entry(entry, Rule::Io, "empty resolution stack"))?;
        let here = match statat(cur.diff.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(io_err(entry, "looking up a parent directory", e)),
        };
        let mut follow: Option<Vec<u8>> = None;
        let next = match here {
            Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                let fd = open_dir_nofollow(cur.diff.as_fd(), name)
                    .map_err(|e| io_err(entry, "opening a parent directory", e))?;
                let lowers = if is_opaque(fd.as_fd()) {
                    Vec::new()
                } else {
                    lower_lookup(&cur.lowers, name)
                        .map_err(|e| io_err(entry, "looking up lower layers", e))?
                        .1
                };
                Some(Pos {
                    diff: Arc::new(fd),
                    lowers,
                })
            }
            Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                follow = Some(
                    readlinkat(cur.diff.as_fd(), name, Vec::new())
                        .map_err(|e| io_err(entry, "reading a symlink", e))?
                        .into_bytes(),
                );
                None
            }
            Some(st) if is_whiteout(&st) => {
                if !create {
                    return Ok(Some(None));
                }
                // Deleted in this layer, re-created now: hide whatever the lowers had.
                rustix::fs::unlinkat(cur.diff.as_fd(), name, AtFlags::empty())
                    .map_err(|e| io_err(entry, "removing a whiteout", e))?;
                let fd = make_dir(cur.diff.as_fd(), name, None, entry, made)?;
                rustix::fs::fsetxattr(
                    fd.as_fd(),
                    OPAQUE_XATTR,
                    b"y",
                    rustix::fs::XattrFlags::empty(),
                )
                .map_err(|e| io_err(entry, "marking a directory opaque", e))?;
                Some(Pos {
                    diff: Arc::new(fd),
                    lowers: Vec::new(),
                })
            }
            Some(_) => {
                return Err(Error::entry(
                    entry,
                    Rule::NotDirectory,
                    format!("{} is not a directory", String::from_utf8_lossy(&c)),
                ))
            }
            None => match lower_lookup(&cur.lowers, name)
                .map_err(|e| io_err(entry, "looking up lower layers", e))?
            {
                (Lower::Dir, merged) => {
                    let meta = lower_meta(merged[0].as_fd()).map_err(|e| {
                        Error::entry(entry, Rule::Io, format!("reading a lower directory: {e}"))
                    })?;
                    let fd = make_dir(cur.diff.as_fd(), name, Some(&meta), entry, made)?;
                    Some(Pos {
                        diff: Arc::new(fd),
                        lowers: merged,
                    })
                }
                (Lower::Other(dir, st), _)
                    if FileType::from_raw_mode(st.st_mode) == FileType::Symlink =>
                {
                    let at = fstat(cur.diff.as_fd())
                        .map_err(|e| io_err(entry, "inspecting a directory", e))?;
                    lower_links.insert(((at.st_dev, at.st_ino), c.clone()));
                    follow = Some(
                        readlinkat(dir.as_fd(), name, Vec::new())
                            .map_err(|e| io_err(entry, "reading a symlink", e))?
                            .into_bytes(),
                    );
                    None
                }
                (Lower::Other(..), _) => {
                    return Err(Error::entry(
                        entry,
                        Rule::NotDirectory,
                        format!("{} is not a directory", String::from_utf8_lossy(&c)),
                    ))
                }
                (Lower::Absent, _) => {
                    if !create {
                        return Ok(Some(None));
                    }
                    let fd = make_dir(cur.diff.as_fd(), name, None, entry, made)?;
                    Some(Pos {
                        diff: Arc::new(fd),
                        lowers: Vec::new(),
                    })
                }
            },
        };
        if let Some(p) = next {
            last_made = made.len() > made_before_step;
            level_down(&mut stack, c, p);
            continue;
        }
        if let Some(target) = follow {
            hops += 1;
            if hops > MAX_HOPS {
                return Err(Error::entry(
                    entry,
                    Rule::Escape,
                    "too many levels of symbolic links",
                ));
            }
            if target.is_empty() {
                return Err(Error::entry(
                    entry,
                    Rule::NotDirectory,
                    "empty symlink target in a parent path",
                ));
            }
            if target.starts_with(b"/") {
                if !is_root {
                    return Ok(None);
                }
                last_made = false;
                stack.truncate(1);
            }
            for part in target.split(|b| *b == b'/').rev() {
                queue.push_front(part.to_vec());
            }
        }
    }
    let top = stack
        .pop()
        .and_then(|l| l.pos)
        .ok_or_else(|| Error::entry(entry, Rule::Io, "empty resolution stack"))?;
    let fresh = last_made;
    Dir::new(top.diff, Rc::new(top.lowers))
        .map(|mut d| {
            d.fresh = fresh;
            Some(Some(d))
        })
        .map_err(|e| io_err(entry, "inspecting a directory", e))
}
