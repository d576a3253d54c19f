//! Size limits for the `vfs` and `overlay` backends: XFS project quotas, as in Docker's
//! overlay2 (`quota.Control`).
//!
//! A layer created with a `size` (per layer, or the driver's `-o size=` default for read-write
//! layers) gets a project id of its own: its layer directory is tagged with the id and
//! `PROJINHERIT`, so everything created below it (overlay's `diff/` and `work/`, vfs's tree)
//! is charged to the project, and the project's hard block limit is the size. Writes beyond it
//! fail with `EDQUOT`. Copies strata makes for a layer (a vfs tree materialised from its
//! parent, the staging copy of an apply) are built in directories tagged with the same id
//! before they are moved in, so they count against the limit and XFS accepts the rename
//! (it refuses, with `EXDEV`, to move entries of another project into a `PROJINHERIT` tree).
//!
//! ```text
//! quota/projects/<projid>   one per id handed out, holding the layer id (created O_EXCL,
//!                           so concurrent processes never share an id)
//! quota/probe/              tagged with the store's reserved id at open, to check support
//! quota/backingFsBlockDev   device node for quotactl(2), only on kernels without quotactl_fd
//! ```
//!
//! Ids start above the store root's own project id (usually 0: the first reserved id is 1,
//! handed-out ids from 2), and an id whose project already owns inodes (another store or
//! Docker on the same filesystem) is skipped. A removed layer's id is released by `cleanup`
//! once its project owns nothing any more (the limit is cleared and the entry deleted).
//!
//! Anywhere else — not XFS, or XFS mounted without `pquota`/`prjquota` — `size` is refused
//! with a message naming the filesystem and pointing to the `block` backend.

use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::open_dir;
use crate::options::{DriverOptions, StorageOptions};
use crate::store::{LayerKind, LayerRecord};
use crate::sys::quota::{self as sys, QuotaDev};

/// Project quotas of one store: available (with the means to set them) or not (with why).
#[derive(Debug)]
pub struct Quotas {
    root: PathBuf,
    backend: &'static str,
    default_size: Option<u64>,
    state: std::result::Result<Active, String>,
}

#[derive(Debug)]
struct Active {
    dev: QuotaDev,
    /// Reserved for the probe directory; handed-out ids are above it.
    reserved: u32,
}

fn projects_dir(root: &Path) -> PathBuf {
    root.join("quota").join("projects")
}

fn dir_project(dir: &Path) -> Result<(u32, bool)> {
    let fd = open_dir(dir).ctx(|| format!("opening {}", dir.display()))?;
    sys::project_id(fd.as_fd()).ctx(|| format!("reading the project id of {}", dir.display()))
}

fn set_dir_project(dir: &Path, projid: u32) -> Result<()> {
    let fd = open_dir(dir).ctx(|| format!("opening {}", dir.display()))?;
    sys::set_project_id(fd.as_fd(), projid)
        .ctx(|| format!("setting project id {projid} on {}", dir.display()))
}

impl Quotas {
    /// Finds out whether `size` can be enforced for a store at `root` (probing project quotas
    /// on XFS), and refuses a driver default size (`-o size=`) when it cannot.
    pub fn open(root: &Path, backend: &'static str, options: &DriverOptions) -> Result<Quotas> {
        let state = Self::probe(root);
        let q = Quotas {
            root: root.to_path_buf(),
            backend,
            default_size: options.size.filter(|s| *s > 0),
            state,
        };
        if let (Some(size), Err(_)) = (options.size, &q.state) {
            return Err(q.refusal(&format!("cannot use the driver option size={size}")));
        }
        Ok(q)
    }

    fn probe(root: &Path) -> std::result::Result<Active, String> {
        let fs = super::backing_fs(root)
            .map(|f| f.0)
            .map_err(|e| format!("a filesystem strata cannot identify ({e})"))?;
        if fs != "xfs" {
            return Err(format!("{fs}, which has no project quotas strata can use"));
        }
        let dir = root.join("quota");
        super::mkdir_mode(&dir, 0o700).map_err(|e| e.to_string())?;
        let dev = QuotaDev::open(&dir, &dir.join("backingFsBlockDev"))
            .map_err(|e| format!("xfs whose quotas strata cannot reach ({e})"))?;
        let state = match dev.get_state() {
            Ok(s) => s,
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                return Err(if Path::new("/proc/fs/xfs/xqmstat").exists() {
                    "xfs mounted without quotas (mount it with -o pquota)".into()
                } else {
                    "xfs, but this kernel has no XFS quota support (CONFIG_XFS_QUOTA)".into()
                });
            }
            Err(e) => return Err(format!("xfs whose quota state is unreadable ({e})")),
        };
        if !state.accounting || !state.enforced {
            return Err(
                "xfs mounted without enforced project quotas (mount it with -o pquota)".into(),
            );
        }
        let (base, _) = dir_project(root).map_err(|e| e.to_string())?;
        let reserved = base
            .checked_add(1)
            .ok_or("xfs, but the store root's project id is the largest there is")?;
        let probe = dir.join("probe");
        super::mkdir_mode(&probe, 0o700).map_err(|e| e.to_string())?;
        // The full probe (set a limit, tag a directory) runs until it succeeds once; later
        // opens find the probe tagged and only check the quota state above.
        if dir_project(&probe).map_err(|e| e.to_string())? != (reserved, true) {
            dev.set_limit(reserved, 0)
                .map_err(|e| format!("xfs refusing project quota limits ({e})"))?;
            set_dir_project(&probe, reserved)
                .map_err(|e| format!("xfs refusing project ids ({e})"))?;
        }
        Ok(Active { dev, reserved })
    }

    fn refusal(&self, what: &str) -> Error {
        let why = self.state.as_ref().err().map(String::as_str).unwrap_or("");
        Error::Unsupported(format!(
            "{what}: the store at {} is on {why}; the {} backend limits size only with XFS project quotas (an XFS filesystem mounted with -o pquota); the block backend (--driver block) limits size on any filesystem",
            self.root.display(),
            self.backend
        ))
    }

    /// The limit a new layer gets: its own `size`, else the driver default for read-write
    /// layers; 0 means none.
    fn size_of(&self, rec: &LayerRecord) -> Result<Option<(u64, String)>> {
        let own = StorageOptions::parse(&rec.storage_opt)?.size;
        let given = rec
            .storage_opt
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("size"))
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        let size = match own {
            Some(s) => Some((s, format!("size={given}"))),
            None if rec.kind == LayerKind::Rw => self
                .default_size
                .map(|s| (s, format!("the default size={s}"))),
            None => None,
        };
        Ok(size.filter(|(s, _)| *s > 0))
    }

    /// Applies the layer's size limit to `dir`, its new (still empty) layer directory: tags it
    /// with a fresh project id and sets the id's limit. Refuses a size it cannot enforce.
    pub fn on_create(&self, dir: &Path, rec: &LayerRecord) -> Result<()> {
        let Some((size, named)) = self.size_of(rec)? else {
            return Ok(());
        };
        let active = match &self.state {
            Ok(a) => a,
            Err(_) => {
                return Err(self.refusal(&format!("cannot create layer {:?} with {named}", rec.id)))
            }
        };
        let projid = self.allocate(active, dir, &rec.id)?;
        active.dev.set_limit(projid, size).ctx(|| {
            format!(
                "setting the size limit of layer {} (project {projid})",
                rec.id
            )
        })
    }

    /// Tags `dir` with a project id no layer of this store (nor anything else on the
    /// filesystem) uses, and records it.
    fn allocate(&self, active: &Active, dir: &Path, id: &str) -> Result<u32> {
        let projects = projects_dir(&self.root);
        super::mkdir_mode(&projects, 0o700)?;
        let mut next = active.reserved;
        for e in fs::read_dir(&projects).ctx(|| format!("reading {}", projects.display()))? {
            let e = e.ctx(|| format!("reading {}", projects.display()))?;
            if let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                next = next.max(n);
            }
        }
        for _ in 0..100_000 {
            next = next.checked_add(1).ok_or_else(|| {
                Error::Unsupported("no free XFS project id is left for this store".into())
            })?;
            let used = active
                .dev
                .get(next)
                .ctx(|| format!("reading the quota of project {next}"))?;
            if used.inodes > 0 {
                continue; // another store's, or someone else's
            }
            // Tag first, then claim: a claimed id always owns at least its directory, which
            // is what `sweep` checks before releasing one.
            set_dir_project(dir, next)?;
            let marker = projects.join(next.to_string());
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
            {
                Ok(mut f) => {
                    f.write_all(id.as_bytes())
                        .ctx(|| format!("writing {}", marker.display()))?;
                    return Ok(next);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("creating {}", marker.display()), e)),
            }
        }
        Err(Error::Unsupported(
            "found no free XFS project id after 100000 tries".into(),
        ))
    }

    /// Tags `staging` with the project of `layer_dir` (when it has one) before a copy of the
    /// layer's content is built there, so the copy is charged to the layer and may be moved
    /// into it.
    pub fn inherit(&self, layer_dir: &Path, staging: &Path) -> Result<()> {
        if self.state.is_err() {
            return Ok(());
        }
        let (projid, inherits) = dir_project(layer_dir)?;
        if inherits && dir_project(staging)?.0 != projid {
            set_dir_project(staging, projid)?;
        }
        Ok(())
    }

    /// Adds the layer's limit and usage (bytes) to its metadata, when it has a limit.
    pub fn metadata(&self, layer_dir: &Path, m: &mut std::collections::BTreeMap<String, String>) {
        let Ok(active) = &self.state else { return };
        let Ok((projid, true)) = dir_project(layer_dir) else {
            return;
        };
        if projid <= active.reserved {
            return;
        }
        if let Ok(q) = active.dev.get(projid) {
            m.insert("SizeLimit".into(), q.limit.to_string());
            m.insert("SizeUsed".into(), q.used.to_string());
        }
    }

    /// Releases the ids of removed layers: a claimed id whose project owns nothing any more
    /// gets its limit cleared and its record deleted.
    pub fn sweep(&self) -> Result<()> {
        let Ok(active) = &self.state else {
            return Ok(());
        };
        let projects = projects_dir(&self.root);
        let Ok(entries) = fs::read_dir(&projects) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let used = active
                .dev
                .get(n)
                .ctx(|| format!("reading the quota of project {n}"))?;
            if used.inodes == 0 {
                active
                    .dev
                    .set_limit(n, 0)
                    .ctx(|| format!("clearing the limit of project {n}"))?;
                fs::remove_file(e.path()).ctx(|| format!("removing {}", e.path().display()))?;
            }
        }
        Ok(())
    }

    /// The `status` line.
    pub fn status(&self) -> (String, String) {
        let v = match &self.state {
            Ok(_) => "true (xfs project quotas; size= is enforced)".to_string(),
            Err(why) => format!("false ({why}; size= is refused)"),
        };
        ("Supports Quota".into(), v)
    }
}
