//! The metadata database: a redb file opened once per process in redb's multi-process mode,
//! so the plugin server and CLI invocations can use one store at the same time. Cross-process
//! ordering of "read, decide, change the filesystem, write" steps is the store lock's job
//! (see [`super::Locked`]); redb only guarantees each transaction is atomic and durable.
//!
//! Tables:
//! * `layers`: id → JSON [`LayerRecord`];
//! * `children`: `"<parent>/<child>"` → `()` (ids never contain `/`, so the children of `p`
//!   are exactly the keys in `["p/", "p0")`);
//! * `meta`: store-wide facts (`driver`, `format`, `boot_id`, `options`: the driver options
//!   recorded at creation as a JSON object, `probe`: open-time probe results and the kernel
//!   they were taken under).
//!
//! A database is created once, with its tables and first facts in one commit
//! ([`Db::create`]); every later open ([`Db::open_existing`]) refuses a missing, empty,
//! symlinked or unreadable file instead of initialising it, and every call into the database
//! engine turns a panic (a damaged file can cause one) into [`Error::Db`]. A read-only open
//! writes nothing at all.
//!
//! Mount state (a record's `refs` and `mount`) is kept beside the database, one small JSON
//! file per mounted layer in `<root>/mounts/<id>`, replaced by rename and never fsync-ed: it
//! describes kernel mounts, which no power cut preserves, and every open reconciles it with
//! the kernel's mount table anyway (see the store's crash story). So `get`/`put` cost a file
//! rename instead of a durable commit (two `fdatasync`s), and reads see the newest state
//! because the page cache is shared by every process. Records read from the database always
//! carry the mount state from these files (none if a file is missing or unreadable).

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use redb::backends::FileBackend;
use redb::{
    ConcurrencyMode, Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, WriteTransaction,
};
use rustix::fs::{openat, renameat, unlinkat, AtFlags, Dir, FileType, Mode, OFlags};
use tracing::warn;

use super::record::LayerRecord;
use crate::error::{Error, Result};
use crate::fsutil;

const LAYERS: TableDefinition<&str, &[u8]> = TableDefinition::new("layers");
const CHILDREN: TableDefinition<&str, ()> = TableDefinition::new("children");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// Names a layer's mount point may have inside its directory (`merged/` for mounts; `diff/`
/// and `fs/` for layers handed out as their directory).
const MOUNT_POINTS: [&str; 3] = ["merged", "diff", "fs"];

/// Largest mount-state file read (a real one is about a hundred bytes).
const MAX_MOUNT_FILE: u64 = 64 * 1024;

/// The open database.
pub struct Db {
    db: Handle,
    path: PathBuf,
    mounts: PathBuf,
}

/// How the database file is held: for writing, or only for reading (nothing is ever written,
/// not even redb's "open" flag, so read-only commands cost no sync).
enum Handle {
    Rw(Database),
    Ro(ReadOnlyDatabase),
}

/// What `<root>/mounts/<id>` holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct MountFile {
    refs: u32,
    mount: Option<super::record::MountState>,
}

/// Opens the database file itself: never through a symlink (`O_NOFOLLOW`), never a FIFO or
/// device (`O_NONBLOCK`, then a regular-file check on the descriptor), never an empty file
/// (which redb would initialise as a new database). The error says why, for the message.
fn open_file(path: &Path, write: bool) -> std::result::Result<std::fs::File, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => "the database file is missing".to_string(),
            Some(libc::ELOOP) => {
                "the database file is a symbolic link, which strata never follows".to_string()
            }
            _ => format!("the database file cannot be opened ({e})"),
        })?;
    let md = file
        .metadata()
        .map_err(|e| format!("the database file cannot be inspected ({e})"))?;
    if !md.is_file() {
        return Err("the database file is not a regular file".into());
    }
    if md.len() == 0 {
        return Err("the database file is empty (zero bytes)".into());
    }
    Ok(file)
}

fn backend(file: std::fs::File) -> std::result::Result<FileBackend, redb::DatabaseError> {
    FileBackend::new(file)
}

thread_local! {
    /// How many [`no_panic`] calls this thread is inside; their panics are reported as errors,
    /// so the panic hook stays silent for them.
    static QUIET: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Installs (once) a panic hook that stays silent for panics [`no_panic`] catches and defers
/// to the previous hook for every other panic.
fn quiet_panics_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| q.get()) == 0 {
                previous(info);
            } else {
                tracing::debug!(%info, "the database engine panicked");
            }
        }));
    });
}

/// Runs `f`, turning a panic inside redb (a damaged file can trigger one) into an error.
fn no_panic<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    quiet_panics_hook();
    QUIET.with(|q| q.set(q.get() + 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(q.get() - 1));
    result.unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Error::Db {
            path: path.to_path_buf(),
            message: format!("the database is damaged (the database engine failed: {what})"),
        })
    })
}

fn builder() -> redb::Builder {
    let mut b = Database::builder();
    b.set_concurrency_mode(ConcurrencyMode::MultiWriter);
    b
}

fn child_key(parent: &str, child: &str) -> String {
    format!("{parent}/{child}")
}

impl Db {
    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn begin_read(&self) -> Result<ReadTransaction> {
        match &self.db {
            Handle::Rw(d) => d.begin_read(),
            Handle::Ro(d) => d.begin_read(),
        }
        .map_err(|e| self.err(e))
    }

    fn make_mounts_dir(path: &Path) -> Result<PathBuf> {
        let mounts = path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("mounts");
        match std::fs::DirBuilder::new().mode(0o700).create(&mounts) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Error::io(format!("creating {}", mounts.display()), e));
            }
        }
        Ok(mounts)
    }

    /// Creates a new database at `path` (which must not exist) with its tables, running `init`
    /// in the same first commit.
    pub fn create(path: &Path, init: impl FnOnce(&mut Writer<'_>) -> Result<()>) -> Result<Db> {
        let dberr = |message: String| Error::Db {
            path: path.to_path_buf(),
            message,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o600)
            .open(path)
            .map_err(|e| dberr(format!("creating the database file: {e}")))?;
        let db = no_panic(path, || {
            builder()
                .create_with_backend(
                    redb::backends::FileBackend::new(file).map_err(|e| dberr(e.to_string()))?,
                )
                .map_err(|e| dberr(e.to_string()))
        })?;
        let me = Db {
            db: Handle::Rw(db),
            path: path.to_path_buf(),
            mounts: Self::make_mounts_dir(path)?,
        };
        me.write(|w| {
            w.txn.open_table(LAYERS).map_err(|e| w.db.err(e))?;
            w.txn.open_table(CHILDREN).map_err(|e| w.db.err(e))?;
            w.txn.open_table(META).map_err(|e| w.db.err(e))?;
            init(w)
        })?;
        Ok(me)
    }

    /// Opens the existing database at `path`: never a symlink, never an empty or missing file
    /// (those are refused, not initialised), and every table must be there. `read_only` opens
    /// it without writing anything (no lock file, no sync, no mount-state directory), unless a
    /// writer died with it open: then redb's crash repair needs one writable open.
    pub fn open_existing(path: &Path, read_only: bool) -> Result<Db> {
        Db::open_inner(path, read_only, true)
    }

    /// Opens the existing database at `path` for reading only, even when a crashed writer
    /// left it needing repair (that is reported as an error instead): for `check`.
    pub fn open_untouched(path: &Path) -> Result<Db> {
        Db::open_inner(path, true, false)
    }

    fn open_inner(path: &Path, read_only: bool, may_repair: bool) -> Result<Db> {
        let dberr = |message: String| Error::Db {
            path: path.to_path_buf(),
            message,
        };
        let file = open_file(path, !read_only).map_err(dberr)?;
        let unreadable = |e: redb::DatabaseError| dberr(format!("the database is unreadable: {e}"));
        let handle = no_panic(path, || {
            if !read_only {
                // The file is not empty, so this opens it (redb initialises only empty files).
                return builder()
                    .create_with_backend(backend(file).map_err(unreadable)?)
                    .map(Handle::Rw)
                    .map_err(unreadable);
            }
            match builder().open_read_only_with_backend(backend(file).map_err(unreadable)?) {
                Ok(db) => Ok(Handle::Ro(db)),
                // A writer died with the database open: only a writable open repairs it
                // (redb's own crash recovery), so this one open writes.
                Err(redb::DatabaseError::RepairAborted) if may_repair => {
                    tracing::info!(path = %path.display(), "the database needs redb's crash repair; opening it writable once");
                    let file = open_file(path, true).map_err(dberr)?;
                    builder()
                        .create_with_backend(backend(file).map_err(unreadable)?)
                        .map(Handle::Rw)
                        .map_err(unreadable)
                }
                Err(redb::DatabaseError::RepairAborted) => Err(dberr(
                    "a writer died with the database open; the next command that writes \
                     repairs it"
                        .into(),
                )),
                Err(e) => Err(unreadable(e)),
            }
        })?;
        let mounts = if read_only {
            path.parent()
                .unwrap_or_else(|| Path::new("."))
                .join("mounts")
        } else {
            Self::make_mounts_dir(path)?
        };
        let me = Db {
            db: handle,
            path: path.to_path_buf(),
            mounts,
        };
        no_panic(path, || {
            let r = me.begin_read()?;
            for name in ["layers", "children", "meta"] {
                let found = match name {
                    "layers" => r.open_table(LAYERS).map(|_| ()),
                    "children" => r.open_table(CHILDREN).map(|_| ()),
                    _ => r.open_table(META).map(|_| ()),
                };
                found.map_err(|e| {
                    me.err(format!("the database has no readable {name} table: {e}"))
                })?;
            }
            Ok(())
        })?;
        Ok(me)
    }

    /// Whether this handle was opened read-only (a read-only open of a database a crashed
    /// writer left needing repair opens it writable, to repair it).
    pub fn is_read_only(&self) -> bool {
        matches!(self.db, Handle::Ro(_))
    }

    /// The layer record of `id`, if any.
    pub fn get(&self, id: &str) -> Result<Option<LayerRecord>> {
        no_panic(&self.path, || {
            let r = self.begin_read()?;
            let t = r.open_table(LAYERS).map_err(|e| self.err(e))?;
            let v = t.get(id).map_err(|e| self.err(e))?;
            match v {
                Some(bytes) => Ok(Some(self.decode(id, bytes.value())?)),
                None => Ok(None),
            }
        })
    }

    /// The records of `id` and its ancestors, `id` first, read in one snapshot (one read
    /// transaction for the whole chain: a 500-layer chain costs one transaction, not 500).
    /// Only the first record carries its mount state; the ancestors' `refs`/`mount` are
    /// left empty (nothing that walks a chain needs them, and reading them would cost a
    /// file lookup per layer). `Ok(None)` if `id` has no record; a missing ancestor is named
    /// in the error.
    pub fn chain(&self, id: &str) -> Result<Option<Vec<LayerRecord>>> {
        no_panic(&self.path, || {
            let r = self.begin_read()?;
            let t = r.open_table(LAYERS).map_err(|e| self.err(e))?;
            let read = |key: &str| -> Result<Option<LayerRecord>> {
                match t.get(key).map_err(|e| self.err(e))? {
                    Some(bytes) => Ok(Some(self.decode_bare(key, bytes.value())?)),
                    None => Ok(None),
                }
            };
            let Some(mut first) = read(id)? else {
                return Ok(None);
            };
            self.load_mount_state(&mut first);
            let mut out = vec![first];
            let mut seen = std::collections::HashSet::new();
            seen.insert(id.to_string());
            while let Some(p) = out.last().and_then(|r| r.parent.clone()) {
                if out.len() > 4096 || !seen.insert(p.clone()) {
                    return Err(Error::Invalid {
                        id: id.to_string(),
                        reason: "parent chain is cyclic or absurdly deep".into(),
                    });
                }
                match read(&p)? {
                    Some(rec) => out.push(rec),
                    None => return Err(Error::NotFound(p)),
                }
            }
            Ok(Some(out))
        })
    }

    fn decode(&self, id: &str, bytes: &[u8]) -> Result<LayerRecord> {
        let mut rec = self.decode_bare(id, bytes)?;
        self.load_mount_state(&mut rec);
        Ok(rec)
    }

    /// The record without its mount state (`refs` 0, `mount` none).
    fn decode_bare(&self, id: &str, bytes: &[u8]) -> Result<LayerRecord> {
        let mut rec: LayerRecord = serde_json::from_slice(bytes)
            .map_err(|e| self.err(format!("record of layer {id:?} is unreadable: {e}")))?;
        rec.refs = 0;
        rec.mount = None;
        Ok(rec)
    }

    fn load_mount_state(&self, rec: &mut LayerRecord) {
        (rec.refs, rec.mount) = match self.read_mount_state(&rec.id) {
            Ok(Some(m)) => (m.refs, m.mount),
            Ok(None) => (0, None),
            Err(why) => {
                warn!(layer = %rec.id, "ignoring its mount state: {why}");
                (0, None)
            }
        };
    }

    /// `mounts/`, opened without following a symlink (the store root is canonical, so the
    /// directory is reached through no link at all).
    fn mounts_dir(&self) -> std::io::Result<OwnedFd> {
        fsutil::open_dir(&self.mounts)
    }

    /// The mount state recorded for `id`: `None` if there is none; an error (the caller
    /// ignores the state) if the file is not a regular file, does not parse, or records a
    /// mount point other than the layer's own.
    fn read_mount_state(&self, id: &str) -> std::result::Result<Option<MountFile>, String> {
        let dir = match self.mounts_dir() {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("opening {}: {e}", self.mounts.display())),
        };
        let mut f = match fsutil::open_regular_at(dir.as_fd(), OsStr::new(id)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("opening {}: {e}", self.mounts.join(id).display())),
        };
        let mut bytes = Vec::new();
        (&mut f)
            .take(MAX_MOUNT_FILE)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("reading {}: {e}", self.mounts.join(id).display()))?;
        let m: MountFile = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is unreadable: {e}", self.mounts.join(id).display()))?;
        if let Some(state) = &m.mount {
            let layer = self.root().join("layers").join(id);
            let own = state.path.parent() == Some(layer.as_path())
                && state
                    .path
                    .file_name()
                    .is_some_and(|n| MOUNT_POINTS.iter().any(|p| n == *p));
            if !own {
                return Err(format!(
                    "it records {} as the mount point, which is not the layer's own ({}/{{{}}})",
                    state.path.display(),
                    layer.display(),
                    MOUNT_POINTS.join(",")
                ));
            }
        }
        Ok(Some(m))
    }

    /// The store root (the directory holding the database).
    fn root(&self) -> &Path {
        self.mounts.parent().unwrap_or_else(|| Path::new("/"))
    }

    /// Records `rec.refs` and `rec.mount` (and nothing else of `rec`) without a database
    /// commit. Callers hold the store lock, as for every write. The file is written beside
    /// its final name and renamed over it, all relative to `mounts/` opened without following
    /// links; a stale temporary file (or a symlink planted in its place) is unlinked first
    /// and the new one created exclusively.
    pub fn put_mount_state(&self, rec: &LayerRecord) -> Result<()> {
        let file = self.mounts.join(&rec.id);
        let ctx =
            |what: &str, e: std::io::Error| Error::io(format!("{what} {}", file.display()), e);
        let dir = self
            .mounts_dir()
            .map_err(|e| ctx("opening the directory of", e))?;
        let name = OsStr::new(&rec.id);
        if rec.refs == 0 && rec.mount.is_none() {
            return match unlinkat(&dir, name, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                Err(e) => Err(ctx("removing", e.into())),
            };
        }
        let bytes = serde_json::to_vec(&MountFile {
            refs: rec.refs,
            mount: rec.mount.clone(),
        })
        .map_err(|e| self.err(e))?;
        let tmp = format!(".{}.tmp", rec.id);
        match unlinkat(&dir, tmp.as_str(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(ctx("removing a stale temporary file of", e.into())),
        }
        let fd = openat(
            &dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| ctx("writing", e.into()))?;
        std::fs::File::from(fd)
            .write_all(&bytes)
            .map_err(|e| ctx("writing", e))?;
        renameat(&dir, tmp.as_str(), &dir, name).map_err(|e| ctx("writing", e.into()))
    }

    /// Ids that have a mount-state file (regular files whose name is not hidden).
    pub fn mount_state_ids(&self) -> Result<Vec<String>> {
        let ctx = |e: std::io::Error| Error::io(format!("reading {}", self.mounts.display()), e);
        let dir = self.mounts_dir().map_err(ctx)?;
        let mut out = Vec::new();
        for e in Dir::read_from(&dir).map_err(|e| ctx(e.into()))? {
            let e = e.map_err(|e| ctx(e.into()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && e.file_type() == FileType::RegularFile {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Deletes the mount-state file of `id` (a layer that no longer has a record).
    pub fn forget_mount_state(&self, id: &str) -> Result<()> {
        let mut rec = LayerRecord::new(id, None, super::record::LayerKind::Ro, "");
        rec.refs = 0;
        rec.mount = None;
        self.put_mount_state(&rec)
    }

    /// Ids of the children of `id`, sorted.
    pub fn children(&self, id: &str) -> Result<Vec<String>> {
        no_panic(&self.path, || {
            let r = self.begin_read()?;
            let t = r.open_table(CHILDREN).map_err(|e| self.err(e))?;
            let (lo, hi) = (format!("{id}/"), format!("{id}0"));
            let mut out = Vec::new();
            for item in t.range(lo.as_str()..hi.as_str()).map_err(|e| self.err(e))? {
                let (k, _) = item.map_err(|e| self.err(e))?;
                out.push(k.value()[lo.len()..].to_string());
            }
            Ok(out)
        })
    }

    /// Every layer record, sorted by id.
    pub fn list(&self) -> Result<Vec<LayerRecord>> {
        no_panic(&self.path, || {
            let r = self.begin_read()?;
            let t = r.open_table(LAYERS).map_err(|e| self.err(e))?;
            // One directory listing instead of a failed file lookup per unmounted layer.
            let mounted: std::collections::HashSet<String> =
                self.mount_state_ids()?.into_iter().collect();
            let mut out = Vec::new();
            for item in t.iter().map_err(|e| self.err(e))? {
                let (k, v) = item.map_err(|e| self.err(e))?;
                let mut rec = self.decode_bare(k.value(), v.value())?;
                if mounted.contains(k.value()) {
                    self.load_mount_state(&mut rec);
                }
                out.push(rec);
            }
            Ok(out)
        })
    }

    /// A store-wide fact.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        no_panic(&self.path, || {
            let r = self.begin_read()?;
            let t = r.open_table(META).map_err(|e| self.err(e))?;
            let v = t
                .get(key)
                .map_err(|e| self.err(e))?
                .map(|v| v.value().to_string());
            Ok(v)
        })
    }

    /// Runs `f` in one write transaction, committed if `f` succeeds and aborted otherwise.
    pub fn write<R>(&self, f: impl FnOnce(&mut Writer<'_>) -> Result<R>) -> Result<R> {
        no_panic(&self.path, || {
            let Handle::Rw(db) = &self.db else {
                return Err(self.err("the store was opened read-only; nothing may be written"));
            };
            let txn = db.begin_write().map_err(|e| self.err(e))?;
            let mut w = Writer {
                txn: &txn,
                db: self,
            };
            match f(&mut w) {
                Ok(r) => {
                    txn.commit().map_err(|e| self.err(e))?;
                    Ok(r)
                }
                Err(e) => {
                    let _ = txn.abort();
                    Err(e)
                }
            }
        })
    }
}

/// Changes made inside one write transaction.
pub struct Writer<'a> {
    txn: &'a WriteTransaction,
    db: &'a Db,
}

impl Writer<'_> {
    /// Reads a record inside the transaction.
    pub fn get(&self, id: &str) -> Result<Option<LayerRecord>> {
        let t = self.txn.open_table(LAYERS).map_err(|e| self.db.err(e))?;
        let v = t.get(id).map_err(|e| self.db.err(e))?;
        match v {
            Some(bytes) => Ok(Some(self.db.decode(id, bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Inserts or replaces a record; a new record is also indexed under its parent.
    pub fn put(&mut self, rec: &LayerRecord) -> Result<()> {
        let bytes = serde_json::to_vec(rec).map_err(|e| self.db.err(e))?;
        let mut t = self.txn.open_table(LAYERS).map_err(|e| self.db.err(e))?;
        t.insert(rec.id.as_str(), bytes.as_slice())
            .map_err(|e| self.db.err(e))?;
        self.db.put_mount_state(rec)?;
        if let Some(p) = &rec.parent {
            let mut c = self.txn.open_table(CHILDREN).map_err(|e| self.db.err(e))?;
            c.insert(child_key(p, &rec.id).as_str(), ())
                .map_err(|e| self.db.err(e))?;
        }
        Ok(())
    }

    /// Deletes a record and its entry in its parent's children.
    pub fn delete(&mut self, rec: &LayerRecord) -> Result<()> {
        let mut t = self.txn.open_table(LAYERS).map_err(|e| self.db.err(e))?;
        t.remove(rec.id.as_str()).map_err(|e| self.db.err(e))?;
        self.db.forget_mount_state(&rec.id)?;
        if let Some(p) = &rec.parent {
            let mut c = self.txn.open_table(CHILDREN).map_err(|e| self.db.err(e))?;
            c.remove(child_key(p, &rec.id).as_str())
                .map_err(|e| self.db.err(e))?;
        }
        Ok(())
    }

    /// Sets a store-wide fact.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        let mut t = self.txn.open_table(META).map_err(|e| self.db.err(e))?;
        t.insert(key, value).map_err(|e| self.db.err(e))?;
        Ok(())
    }
}
