//! The layer store: a root directory, its metadata database, and the lifecycle of layer
//! directories.
//!
//! ```text
//! <root>/                 0700
//!   strata-store          store marker: only a directory carrying it (or an empty one) is
//!                         opened as a store (see [`open`])
//!   meta.redb             layer records, driver and driver options (see [`db`])
//!   mounts/<id>           mount state of a mounted layer (not fsync-ed; see [`db`])
//!   lock                  store lock; its content names the current holder
//!   staging/<tag>-…/      work in progress, each flock-ed by the process building it
//!   layers/<id>/          one directory per layer, backend-specific content
//!   layers/<id>-removing  a layer being deleted
//!   quarantine/<name>-<s> layer directories no record claimed, moved aside (never deleted)
//! ```
//!
//! # Opening
//!
//! A missing or empty directory becomes a new store: database (driver, format, driver
//! options in one commit), then the marker. A directory that is neither empty nor marked is
//! refused untouched; a marked store whose database is missing, empty, a symlink or
//! unreadable is refused untouched too (its records are what tells layers from leftovers).
//! A read-only open ([`OpenRequest::read_only`]) opens the database without writing, takes
//! no lock and runs no recovery: it reads one consistent snapshot of the last commit. Only
//! when a dead process left something the recovery below would repair (found by reading
//! alone, see [`check::needs_repair`]) does it open read-write and repair first.
//!
//! # Crash story
//!
//! Every change is one short step taken under the store lock ([`Store::lock`]): a database
//! transaction plus at most one `rename` (or `RENAME_EXCHANGE`) of a directory that was built
//! beforehand in `staging/`. A process can die at any instant; the next [`Store::open`] (and
//! `cleanup`) puts the store back into a consistent state:
//!
//! * **Create**: the layer is built in `staging/`, then renamed to `layers/<id>` and its record
//!   committed. Died before the rename: a staging leftover, swept. Died between rename and
//!   commit: a layer directory with no record, moved to `quarantine/` with a warning (a
//!   directory the database does not know is never deleted: it may be a layer whose record
//!   was lost). After the commit: the layer exists.
//! * **Apply**: the new content is built in `staging/`; the record is marked `pending` with the
//!   new generation, the staging directory is exchanged with `layers/<id>`, and the record is
//!   committed with the new generation and size. Died before the exchange: the layer is as
//!   before, pending is cleared. Died after it: the directory's `applied` file carries the
//!   pending generation, so the record is rolled forward. Either way the layer is whole.
//! * **Remove**: `layers/<id>` is renamed to `layers/<id>-removing`, the record deleted, then the
//!   directory moved to `staging/removed-<id>-…` and deleted outside the lock (by a background
//!   thread when [`crate::graph::GraphConfig::background_remove`] is set), flock-ed until it is
//!   gone. Died after the rename but before the commit: the record has no directory but a
//!   `-removing` one, so the removal is finished. Later: `-removing` directories and unlocked
//!   staging leftovers are swept.
//! * **Get/Put**: mount and record change happen under the lock. Reference counts recorded under
//!   another boot, or for mounts that are gone from the kernel's table, are reset; mounts under
//!   `layers/` that no record claims are unmounted.
//! * Staging directories are swept only when their flock can be taken, so a sweep never
//!   deletes work another live process is doing.
//! * **Create store**: died before the database's first commit: an empty skeleton (and maybe
//!   an empty `meta.redb`, which is refused with a message); after it but before the marker:
//!   an unmarked store with a readable database, adopted (marker written) at the next open.

pub mod check;
pub mod db;
pub mod id;
pub mod open;
pub mod record;
mod recover;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rustix::fs::{renameat_with, RenameFlags, CWD};
use tracing::warn;

use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::sys::lock::{describe_self, DirLock, LockError, StoreLock};
pub use db::Db;
pub use open::{inspect_root, OpenRequest, RootState, DB_FILE, MARKER};
pub use record::{LayerKind, LayerRecord, MountState, PendingApply};
pub use recover::QUARANTINE;

/// Name of the file inside a layer directory that records the apply generation it holds.
pub const APPLIED_FILE: &str = "applied";

/// Store format written into new stores.
const FORMAT: &str = "1";

/// How long to wait for the store lock before giving up with a message naming the holder.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// An open store.
pub struct Store {
    root: PathBuf,
    db: Db,
    driver: String,
    options: BTreeMap<String, String>,
    read_only: bool,
    process_lock: Mutex<()>,
    lock_timeout: Duration,
}

/// What a sweep removed or repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Staging leftovers deleted.
    pub staging: usize,
    /// `-removing` directories deleted.
    pub removing: usize,
    /// Layer directories without a record deleted.
    pub orphans: usize,
    /// Records repaired (interrupted removals finished, applies rolled forward or back).
    pub repaired: usize,
    /// Reference counts reset or stale mounts unmounted.
    pub mounts: usize,
}

fn mkdir_0700(path: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let md = fs::symlink_metadata(path).ctx(|| format!("inspecting {}", path.display()))?;
            if md.is_dir() {
                Ok(())
            } else {
                Err(Error::io(
                    format!("{} exists and is not a directory", path.display()),
                    io::Error::from_raw_os_error(libc::ENOTDIR),
                ))
            }
        }
        Err(e) => Err(Error::io(format!("creating {}", path.display()), e)),
    }
}

/// Takes the cross-process store lock of the store at `root`.
fn lock_root(root: &Path, timeout: Duration) -> Result<StoreLock> {
    StoreLock::acquire(&root.join("lock"), timeout, &describe_self()).map_err(|e| match e {
        LockError::Timeout { holder } => Error::Locked {
            root: root.to_path_buf(),
            holder,
            waited_secs: timeout.as_secs(),
        },
        LockError::Io(e) => Error::io(format!("locking store {}", root.display()), e),
    })
}

fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{tag}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Store {
    /// Sets how long [`Store::lock`] waits before failing.
    pub fn set_lock_timeout(&mut self, timeout: Duration) {
        self.lock_timeout = timeout;
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The driver this store was created for.
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// The driver options this store was created with (canonical `key` → value).
    pub fn options(&self) -> &BTreeMap<String, String> {
        &self.options
    }

    /// Whether the store was opened read-only (see [`OpenRequest::read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Records a store-wide fact under the store lock.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        let l = self.lock()?;
        l.db().write(|w| w.set_meta(key, value))
    }

    /// `<root>/layers`.
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// `<root>/layers/<id>`.
    pub fn layer_dir(&self, id: &str) -> PathBuf {
        self.layers_dir().join(id)
    }

    /// The database, for reads that need no lock (each read is one consistent snapshot).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The record of `id`, or [`Error::NotFound`].
    pub fn record(&self, id: &str) -> Result<LayerRecord> {
        self.db
            .get(id)?
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// The records of `id` and its ancestors, `id` first; only `id`'s record carries its
    /// mount state (see [`Db::chain`]).
    pub fn chain(&self, id: &str) -> Result<Vec<LayerRecord>> {
        self.db
            .chain(id)?
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// Takes the store lock: the in-process mutex, then the cross-process `flock`. Everything
    /// that reads the database, decides, changes the filesystem and writes the database back
    /// must hold it.
    pub fn lock(&self) -> Result<Locked<'_>> {
        if self.read_only {
            return Err(Error::Db {
                path: self.root.join(DB_FILE),
                message: "the store was opened read-only; nothing may be changed".into(),
            });
        }
        let guard = self.process_lock.lock().unwrap_or_else(|p| p.into_inner());
        let flock = lock_root(&self.root, self.lock_timeout)?;
        Ok(Locked {
            store: self,
            _flock: flock,
            _guard: guard,
        })
    }

    /// Creates a fresh, locked directory in `staging/`. It is deleted when the returned value
    /// is dropped, unless it was committed into place.
    pub fn stage(&self, tag: &str) -> Result<Staging> {
        let _l = self.lock()?;
        let path = self.root.join("staging").join(unique_name(tag));
        mkdir_0700(&path)?;
        let fd = fsutil::open_dir(&path).ctx(|| format!("opening {}", path.display()))?;
        let lock = DirLock::try_lock(fd, true)
            .ctx(|| format!("locking {}", path.display()))?
            .ok_or_else(|| {
                Error::io(
                    format!("locking {}", path.display()),
                    io::Error::from_raw_os_error(libc::EWOULDBLOCK),
                )
            })?;
        Ok(Staging {
            path,
            lock,
            armed: true,
        })
    }

    /// Marks layer `id` as in use by a long operation (an apply) for as long as the returned
    /// guard lives; `exclusive` excludes every other user, shared ones only exclusive ones.
    pub fn busy_guard(&self, id: &str, exclusive: bool, what: &str) -> Result<DirLock> {
        let dir = self.layer_dir(id);
        let fd = fsutil::open_dir(&dir).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                Error::NotFound(id.to_string())
            } else {
                Error::io(format!("opening {}", dir.display()), e)
            }
        })?;
        DirLock::try_lock(fd, exclusive)
            .ctx(|| format!("locking {}", dir.display()))?
            .ok_or_else(|| Error::Busy {
                id: id.to_string(),
                what: format!("{what} refused: another operation is writing or reading it"),
            })
    }
}

/// A directory under `staging/`, flock-ed while this value lives.
pub struct Staging {
    path: PathBuf,
    lock: DirLock,
    armed: bool,
}

impl Staging {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An fd of the directory.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.lock.fd().as_fd()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = fsutil::remove_tree(&self.path) {
                warn!(path = %self.path.display(), error = %e, "could not delete staging directory; the next sweep will");
            }
        }
    }
}

/// The store lock, held. All multi-step state changes are methods here.
pub struct Locked<'a> {
    store: &'a Store,
    _flock: StoreLock,
    _guard: MutexGuard<'a, ()>,
}

impl Locked<'_> {
    /// The database.
    pub fn db(&self) -> &Db {
        &self.store.db
    }

    /// The store.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// Moves a layer built in `staging` to `layers/<id>` and commits its record, checking again
    /// (under the lock) that the id is free and the parent exists.
    pub fn commit_new(&self, mut staging: Staging, rec: &LayerRecord) -> Result<()> {
        let db = self.db();
        if db.get(&rec.id)?.is_some() {
            return Err(Error::AlreadyExists(rec.id.clone()));
        }
        if let Some(p) = &rec.parent {
            if db.get(p)?.is_none() {
                return Err(Error::ParentNotFound {
                    id: rec.id.clone(),
                    parent: p.clone(),
                });
            }
        }
        let target = self.store.layer_dir(&rec.id);
        // No record, so whatever sits there is an orphan: kept aside, never deleted.
        if fs::symlink_metadata(&target).is_ok() {
            let to = self.quarantine(&target)?;
            warn!(id = %rec.id, moved_to = %to.display(), "a directory without a record was in the way of a new layer; moved it to quarantine");
        }
        renameat_with(CWD, &staging.path, CWD, &target, RenameFlags::NOREPLACE)
            .ctx(|| format!("moving {} into place", staging.path.display()))?;
        crate::failpoint::hit("create-after-rename");
        if let Err(e) = db.write(|w| w.put(rec)) {
            if let Err(back) =
                renameat_with(CWD, &target, CWD, &staging.path, RenameFlags::NOREPLACE)
            {
                warn!(error = %back, "could not move a layer back to staging; the next sweep deletes it");
            }
            return Err(e);
        }
        staging.armed = false;
        Ok(())
    }

    /// Swaps the content built in `staging` with `layers/<id>` and commits the new generation
    /// and size. Afterwards `staging` holds the old content (deleted when it is dropped).
    /// `staging` must contain an [`APPLIED_FILE`] with the generation `rec.generation + 1`.
    pub fn commit_apply(
        &self,
        staging: &Staging,
        rec: &LayerRecord,
        size: u64,
        exact: bool,
    ) -> Result<LayerRecord> {
        let db = self.db();
        let generation = rec.generation + 1;
        let mut pending = rec.clone();
        pending.pending = Some(PendingApply {
            generation,
            size,
            exact,
        });
        db.write(|w| w.put(&pending))?;
        crate::failpoint::hit("apply-after-pending");
        let target = self.store.layer_dir(&rec.id);
        if let Err(e) = renameat_with(CWD, &staging.path, CWD, &target, RenameFlags::EXCHANGE) {
            let _ = db.write(|w| w.put(rec));
            return Err(Error::io(
                format!("swapping new content into {}", target.display()),
                e,
            ));
        }
        crate::failpoint::hit("apply-after-exchange");
        let mut done = rec.clone();
        done.generation = generation;
        done.size = Some(size);
        done.pending = None;
        done.exact = exact;
        done.dirty = false;
        if let Err(e) = db.write(|w| w.put(&done)) {
            // Put the old content back so record and directory agree again.
            if renameat_with(CWD, &staging.path, CWD, &target, RenameFlags::EXCHANGE).is_ok() {
                let _ = db.write(|w| w.put(rec));
            }
            return Err(e);
        }
        Ok(done)
    }

    /// Renames `layers/<id>` to `layers/<id>-removing`, deletes the record, then moves the
    /// directory into `staging/`. The caller checks children and references first, holds a
    /// [`DirLock`] on the layer directory across the call, and deletes the returned directory
    /// afterwards (after releasing the store lock, possibly on another thread).
    pub fn begin_remove(&self, rec: &LayerRecord) -> Result<PathBuf> {
        let dir = self.store.layer_dir(&rec.id);
        let removing = self
            .store
            .layers_dir()
            .join(format!("{}{}", rec.id, id::REMOVING_SUFFIX));
        self.remove_dir_unmounting(&removing)?;
        match renameat_with(CWD, &dir, CWD, &removing, RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOENT) => {
                warn!(id = %rec.id, "layer directory already missing; removing the record only");
            }
            Err(e) => {
                return Err(Error::io(
                    format!("renaming {} for removal", dir.display()),
                    e,
                ))
            }
        }
        crate::failpoint::hit("remove-after-rename");
        if let Err(e) = self.db().write(|w| w.delete(rec)) {
            let _ = renameat_with(CWD, &removing, CWD, &dir, RenameFlags::NOREPLACE);
            return Err(e);
        }
        // Out of layers/ at once, so that the id can be used again while the files are still
        // being deleted; in staging/ the caller's flock on the directory marks it as live
        // work, and a deleter that dies leaves an unlocked staging leftover for the sweep.
        let trash = self
            .store
            .root
            .join("staging")
            .join(unique_name(&format!("removed-{}", rec.id)));
        match renameat_with(CWD, &removing, CWD, &trash, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(trash),
            Err(rustix::io::Errno::NOENT) => Ok(removing),
            Err(e) => {
                warn!(id = %rec.id, error = %e, "could not move a removed layer to staging; deleting it in place");
                Ok(removing)
            }
        }
    }
}

/// Writes the [`APPLIED_FILE`] marker into a staged layer directory.
pub fn write_applied_marker(dir: &Path, generation: u64) -> Result<()> {
    let p = dir.join(APPLIED_FILE);
    fs::write(&p, format!("{generation}\n")).ctx(|| format!("writing {}", p.display()))
}

/// Whether `name` is a layer directory name that belongs to no layer (`-removing`).
pub fn is_removing_name(name: &OsStr) -> bool {
    name.to_string_lossy().ends_with(id::REMOVING_SUFFIX)
}

#[cfg(test)]
mod tests;
