//! Opening a store: telling a store from a foreign directory, creating a new one, and
//! remembering its driver and driver options.
//!
//! A directory is opened as a store only when it is missing, empty (or holds nothing but the
//! empty skeleton an interrupted creation leaves: `lock`, empty `staging/`, `layers/`,
//! `mounts/`), or carries the store marker [`MARKER`]. A directory with a `meta.redb` but no
//! marker (made by an earlier strata) is adopted if that database is readable and records a
//! driver; the marker is then written. Anything else is refused before a single byte of it is
//! changed. A marked store whose database is missing, empty, a symlink or unreadable is
//! refused too: without its records strata cannot tell layers from leftovers.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::{info, warn};

use super::{mkdir_0700, Db, Store, SweepReport, DEFAULT_LOCK_TIMEOUT, FORMAT};
use crate::error::{Error, IoContext, Result};

/// Name of the file that marks a directory as a strata store.
pub const MARKER: &str = "strata-store";

/// What the marker file holds.
const MARKER_TEXT: &str = "strata layer store; do not delete (see `strata check`)\n";

/// Name of the metadata database inside the root.
pub const DB_FILE: &str = "meta.redb";

/// The meta key holding the driver options recorded at creation (a JSON object).
pub const OPTIONS_KEY: &str = "options";

/// What a root directory holds, looked at without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootState {
    /// Missing, empty, or only an empty skeleton: a new store may be created there.
    Fresh,
    /// Carries the store marker.
    Marked,
    /// No marker, but a `meta.redb`: possibly a store made by an earlier strata.
    Unmarked,
    /// Anything else; `found` names (some of) what is there.
    Foreign {
        /// Entries found, for the message.
        found: Vec<String>,
    },
}

/// Looks at `root` and says what it is, without changing anything.
pub fn inspect_root(root: &Path) -> Result<RootState> {
    let md = match fs::metadata(root) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RootState::Fresh),
        Err(e) => return Err(Error::io(format!("inspecting {}", root.display()), e)),
    };
    if !md.is_dir() {
        return Err(Error::Unsupported(format!(
            "refusing to use {} as a strata store: it is not a directory",
            root.display()
        )));
    }
    match fs::symlink_metadata(root.join(MARKER)) {
        Ok(m) if m.is_file() => return Ok(RootState::Marked),
        Ok(_) => {
            return Ok(RootState::Foreign {
                found: vec![format!("{MARKER} (not a regular file)")],
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("inspecting {}", root.display()), e)),
    }
    if fs::symlink_metadata(root.join(DB_FILE)).is_ok() {
        return Ok(RootState::Unmarked);
    }
    let mut found = Vec::new();
    let entries = fs::read_dir(root).ctx(|| format!("reading {}", root.display()))?;
    for entry in entries {
        let entry = entry.ctx(|| format!("reading {}", root.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_skeleton(&entry.path(), &name) {
            found.push(name);
        }
    }
    if found.is_empty() {
        return Ok(RootState::Fresh);
    }
    found.sort();
    Ok(RootState::Foreign { found })
}

/// Whether `name` is part of the empty skeleton an interrupted store creation leaves (or
/// one in progress makes before the store exists).
fn is_skeleton(path: &Path, name: &str) -> bool {
    let Ok(md) = fs::symlink_metadata(path) else {
        return false;
    };
    match name {
        "lock" => md.is_file(),
        "staging" | "layers" | "mounts" => {
            md.is_dir() && fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
        }
        // What choosing a new store's driver leaves or works in: the quota probe's directory
        // (XFS) and a d_type probe running right now.
        "quota" => md.is_dir(),
        _ => name.starts_with(".d_type-probe-") && md.is_dir(),
    }
}

/// The refusal of a directory that is not a store.
fn foreign(root: &Path, found: &[String]) -> Error {
    let mut list: Vec<String> = found.iter().take(8).map(|n| format!("{n:?}")).collect();
    if found.len() > 8 {
        list.push(format!("and {} more", found.len() - 8));
    }
    Error::Unsupported(format!(
        "refusing to open {} as a strata store: it is not empty and carries no store marker \
         ({MARKER}); found {}. Nothing was changed. Use an empty or new directory as the root, \
         or move its contents away",
        root.display(),
        list.join(", ")
    ))
}

/// The refusal of a marked store whose database cannot be used.
pub fn damaged(root: &Path, reason: &str) -> Error {
    Error::Db {
        path: root.join(DB_FILE),
        message: format!(
            "the store is damaged: {reason}. strata refuses to open it so that no layer data \
             is lost (no layer directory was touched). Run `strata --root {root} check` for a full report. \
             To recover, restore {db} from a backup; strata has no command that rebuilds the \
             database from the layer directories, so without a backup move the store aside \
             and pull its images again",
            root = root.display(),
            db = root.join(DB_FILE).display(),
        ),
    }
}

/// The refusal of an unmarked directory whose `meta.redb` is not a usable strata database.
fn unmarked_unusable(root: &Path, reason: &str) -> Error {
    Error::Unsupported(format!(
        "refusing to open {} as a strata store: it has a {DB_FILE} but no store marker \
         ({MARKER}), and {reason}. Nothing was changed. Use an empty or new directory as the \
         root, or restore the store from a backup",
        root.display()
    ))
}

/// Checks the driver options given for a store of the named driver and returns them in
/// canonical form (see [`OpenRequest::options`]).
pub type OptionsFn<'a> = Box<dyn FnOnce(&str) -> Result<BTreeMap<String, String>> + 'a>;

/// Checks, before a new store is created, that its driver can work at the root with the
/// given canonical options (see [`OpenRequest::check_new`]).
pub type CheckFn<'a> = Box<dyn FnOnce(&str, &Path, &BTreeMap<String, String>) -> Result<()> + 'a>;

/// What [`Store::open_with`] is asked to do.
pub struct OpenRequest<'a> {
    /// The driver the caller asked for, if any.
    pub driver: Option<&'a str>,
    /// The driver of a new store when none was asked for (given the root directory).
    pub default_driver: Box<dyn FnOnce(&Path) -> String + 'a>,
    /// The driver options the caller gave, checked against the store's driver and returned
    /// in canonical form (`key` → value); an unknown option for that driver is an error.
    pub options: OptionsFn<'a>,
    /// Run before a new store is created (driver, root, canonical options): a refusal leaves
    /// no store behind that would remember options its driver cannot honour. Also run for an
    /// existing store given options other than its own, so that an option the driver cannot
    /// honour is refused for that reason.
    pub check_new: Option<CheckFn<'a>>,
    /// Open an existing store without writing anything: no lock, no recovery, no sync. A root
    /// with no store yet is created as usual, and a store an interrupted operation left
    /// needing repair (see [`super::check::needs_repair`]) is repaired first, as a
    /// read-write open would.
    pub read_only: bool,
}

impl OpenRequest<'_> {
    /// A read-write request with no driver options.
    pub fn plain<'a>(
        driver: Option<&'a str>,
        default_driver: impl FnOnce() -> String + 'a,
    ) -> OpenRequest<'a> {
        OpenRequest {
            driver,
            default_driver: Box::new(move |_| default_driver()),
            options: Box::new(|_| Ok(BTreeMap::new())),
            check_new: None,
            read_only: false,
        }
    }
}

fn absolute(root: &Path) -> Result<PathBuf> {
    Ok(if root.is_absolute() {
        root.to_path_buf()
    } else {
        std::env::current_dir()
            .ctx(|| "reading the current directory".into())?
            .join(root)
    })
}

/// Writes the marker file (temporary file, fsync, rename, fsync of the root).
fn write_marker(root: &Path) -> Result<()> {
    let tmp = root.join(format!(".{MARKER}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .ctx(|| format!("creating {}", tmp.display()))?;
    f.write_all(MARKER_TEXT.as_bytes())
        .and_then(|()| f.sync_all())
        .ctx(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, root.join(MARKER))
        .ctx(|| format!("writing the store marker in {}", root.display()))?;
    fs::File::open(root)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing {}", root.display()))
}

/// The stored options checked against the given ones: a given option must equal the one the
/// store was created with.
fn merge_options(
    root: &Path,
    stored: &BTreeMap<String, String>,
    given: &BTreeMap<String, String>,
) -> Result<()> {
    for (key, value) in given {
        match stored.get(key) {
            Some(s) if s == value => {}
            Some(s) => {
                return Err(Error::InvalidOption {
                    key: key.clone(),
                    reason: format!(
                        "the store at {} was created with {key}={s}; refusing {key}={value} \
                         (a store keeps the driver options it was created with; omit the option)",
                        root.display()
                    ),
                })
            }
            None => {
                return Err(Error::InvalidOption {
                    key: key.clone(),
                    reason: format!(
                        "the store at {} was created without {key} (the driver's default); \
                         refusing {key}={value} (driver options are fixed when a store is \
                         created; omit the option)",
                        root.display()
                    ),
                })
            }
        }
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store at `root`, as [`Store::open_with`] does with no
    /// driver options.
    pub fn open(
        root: &Path,
        requested: Option<&str>,
        default_driver: impl FnOnce() -> String,
    ) -> Result<Store> {
        Store::open_with(root, OpenRequest::plain(requested, default_driver))
    }

    /// Opens the store at `root`, or creates one where there is none (see the module doc for
    /// which directories are refused). A store remembers the driver and driver options it was
    /// created with and refuses others. A read-write open then sweeps leftovers and
    /// reconciles mount references (see the crash story); a read-only one changes nothing.
    pub fn open_with(root: &Path, req: OpenRequest<'_>) -> Result<Store> {
        let root = absolute(root)?;
        match inspect_root(&root)? {
            RootState::Foreign { found } => Err(foreign(&root, &found)),
            RootState::Fresh => Store::create(&root, req),
            state => Store::open_existing(&root, state == RootState::Marked, req),
        }
    }

    fn create(root: &Path, req: OpenRequest<'_>) -> Result<Store> {
        let made_root = !root.exists();
        fs::create_dir_all(root).ctx(|| format!("creating store root {}", root.display()))?;
        // The kernel's mount table shows canonical paths; so must we.
        let root =
            fs::canonicalize(root).ctx(|| format!("resolving store root {}", root.display()))?;
        let result = Store::create_in(&root, req);
        if result.is_err() && made_root {
            let _ = fs::remove_dir(&root);
        }
        result
    }

    fn create_in(root: &Path, req: OpenRequest<'_>) -> Result<Store> {
        let driver = match req.driver {
            Some(d) => d.to_string(),
            None => (req.default_driver)(root),
        };
        let options = (req.options)(&driver)?;
        let options_json = serde_json::to_string(&options).map_err(|e| Error::Db {
            path: root.join(DB_FILE),
            message: e.to_string(),
        })?;
        if let Some(check) = req.check_new {
            check(&driver, root, &options)?;
        }
        let flock = super::lock_root(root, DEFAULT_LOCK_TIMEOUT)?;
        // Under the lock, so that of two processes creating the store one creates it and the
        // other opens what the first made.
        match inspect_root(root)? {
            RootState::Fresh => {}
            RootState::Foreign { found } => return Err(foreign(root, &found)),
            state => {
                drop(flock);
                return Store::open_existing(
                    root,
                    state == RootState::Marked,
                    OpenRequest {
                        driver: Some(&driver),
                        default_driver: Box::new(|_| String::new()),
                        options: Box::new(move |_| Ok(options)),
                        check_new: None,
                        read_only: false,
                    },
                );
            }
        }
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .ctx(|| format!("setting mode 0700 on {}", root.display()))?;
        mkdir_0700(&root.join("staging"))?;
        mkdir_0700(&root.join("layers"))?;
        let db_path = root.join(DB_FILE);
        let db = Db::create(&db_path, |w| {
            w.set_meta("driver", &driver)?;
            w.set_meta("format", FORMAT)?;
            w.set_meta("boot_id", &crate::sys::boot_id())?;
            w.set_meta(OPTIONS_KEY, &options_json)
        })?;
        write_marker(root)?;
        drop(flock);
        let store = Store::unopened(root, db, driver, options, false);
        info!(root = %root.display(), driver = %store.driver, "created a new store");
        Ok(store)
    }

    fn open_existing(root: &Path, marked: bool, req: OpenRequest<'_>) -> Result<Store> {
        let root =
            fs::canonicalize(root).ctx(|| format!("resolving store root {}", root.display()))?;
        let db_path = root.join(DB_FILE);
        let unusable = |reason: &str| {
            if marked {
                damaged(&root, reason)
            } else {
                unmarked_unusable(&root, reason)
            }
        };
        let open_db = |read_only: bool| {
            Db::open_existing(&db_path, read_only).map_err(|e| match e {
                Error::Db { message, .. } => unusable(&message),
                other => other,
            })
        };
        let mut db = open_db(req.read_only)?;
        let stored = db
            .meta("driver")
            .map_err(|e| unusable(&e.to_string()))?
            .ok_or_else(|| unusable("the database records no driver"))?;
        if let Some(r) = req.driver.filter(|r| *r != stored) {
            return Err(Error::DriverMismatch {
                root,
                stored,
                requested: r.to_string(),
            });
        }
        let given = (req.options)(&stored)?;
        let recorded = match db.meta(OPTIONS_KEY)? {
            Some(json) => Some(
                serde_json::from_str::<BTreeMap<String, String>>(&json).map_err(|e| {
                    unusable(&format!("its recorded driver options are unreadable ({e})"))
                })?,
            ),
            None => None,
        };
        if let Some(stored_opts) = &recorded {
            // An option the driver cannot honour here is refused for that reason first: it
            // says more than "options are fixed at creation".
            let differs = given.iter().any(|(k, v)| stored_opts.get(k) != Some(v));
            if let (true, Some(check)) = (differs, req.check_new) {
                check(&stored, &root, &given)?;
            }
            merge_options(&root, stored_opts, &given)?;
        }
        let options = recorded.clone().unwrap_or_else(|| given.clone());
        let mut read_only = req.read_only;
        // A reader must see the state the crash story promises; if a dead process left work
        // to finish or undo, this open repairs it first (and only then writes).
        if read_only && super::check::needs_repair(&root, &db)? {
            info!(root = %root.display(), "an interrupted operation left the store needing repair; repairing before reading");
            drop(db);
            db = open_db(false)?;
            read_only = false;
        }
        let store = Store::unopened(&root, db, stored, options, read_only);
        if read_only {
            return Ok(store);
        }
        let l = store.lock()?;
        if !marked {
            warn!(root = %root.display(), "adopting a store made by an earlier strata: writing its marker");
            write_marker(&root)?;
        }
        if recorded.is_none() {
            let json = serde_json::to_string(&given).map_err(|e| Error::Db {
                path: db_path.clone(),
                message: e.to_string(),
            })?;
            l.db().write(|w| w.set_meta(OPTIONS_KEY, &json))?;
        }
        mkdir_0700(&root.join("staging"))?;
        mkdir_0700(&root.join("layers"))?;
        let report = l.recover()?;
        if report != SweepReport::default() {
            info!(?report, "recovered store state at open");
        }
        drop(l);
        Ok(store)
    }

    fn unopened(
        root: &Path,
        db: Db,
        driver: String,
        options: BTreeMap<String, String>,
        read_only: bool,
    ) -> Store {
        Store {
            root: root.to_path_buf(),
            db,
            driver,
            options,
            read_only,
            process_lock: Mutex::new(()),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}
