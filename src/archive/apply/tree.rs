//! Resolving the parent directory of an entry, confined to the layer.
//!
//! * naive [`Tree`]s: one directory tree (vfs layers, staging copies). Parents are resolved by
//!   the kernel with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`, so a
//!   symlink — absolute or relative, however many hops — is followed as if the layer root were
//!   `/`, and never leaves it. Missing directories are created with mode 0755 — also behind a
//!   dangling symlink, at its in-root target, as Docker and containerd do. A path too long
//!   for the kernel (`PATH_MAX`) is walked like an overlay path instead (see [`super::walk`]),
//!   resuming from the deepest cached ancestor.
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

use rustix::fs::{fgetxattr, fstat, openat, statat, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::super::{name, Error, Rule};
use super::walk::{naive_dir, overlay_dir};

/// Paths at least this long are resolved by strata's own walk rather than one `openat2`
/// (the kernel refuses paths of `PATH_MAX` bytes and more).
const KERNEL_PATH_MAX: usize = 4000;

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

pub(super) fn open_dir_nofollow(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
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

pub(super) fn io_err(entry: &[u8], what: &str, e: Errno) -> Error {
    let rule = match e {
        Errno::NOTDIR => Rule::NotDirectory,
        Errno::LOOP | Errno::XDEV => Rule::Escape,
        _ => Rule::Io,
    };
    Error::entry(entry, rule, format!("{what}: {}", std::io::Error::from(e)))
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
