//! Recovery at open and `cleanup`: finishing interrupted removals and applies, resetting stale
//! mount references, sweeping leftovers, and moving layer directories the database does not
//! know into `quarantine/` (never deleting them: a directory without a record may be the only
//! copy of a layer whose record was lost).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use rustix::fs::{renameat_with, RenameFlags, CWD};
use tracing::{debug, info, warn};

use super::{id, mkdir_0700, Locked, SweepReport, APPLIED_FILE};
use crate::error::{IoContext, Result};
use crate::fsutil;
use crate::sys::lock::DirLock;
use crate::sys::{self, mountinfo};

/// Name of the directory unknown layer directories are moved into.
pub const QUARANTINE: &str = "quarantine";

impl Locked<'_> {
    /// Unmounts anything mounted at or below `dir`, then deletes it.
    pub(super) fn remove_dir_unmounting(&self, dir: &Path) -> Result<()> {
        if fs::symlink_metadata(dir).is_err() {
            return Ok(());
        }
        let table = mountinfo::read().ctx(|| "reading /proc/self/mountinfo".into())?;
        for m in mountinfo::mounts_under(&table, dir) {
            sys::mount::unmount(&m.mount_point)
                .ctx(|| format!("unmounting {}", m.mount_point.display()))?;
        }
        fsutil::remove_tree(dir).ctx(|| format!("deleting {}", dir.display()))
    }

    /// Brings the store back to a consistent state after crashes: finishes interrupted
    /// removals and applies, resets stale mount references, and deletes leftovers.
    pub fn recover(&self) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        self.repair_records(&mut report)?;
        self.reconcile_mounts(&mut report)?;
        self.sweep(&mut report)?;
        Ok(report)
    }

    fn repair_records(&self, report: &mut SweepReport) -> Result<()> {
        for rec in self.db().list()? {
            let dir = self.store.layer_dir(&rec.id);
            let removing =
                self.store
                    .layers_dir()
                    .join(format!("{}{}", rec.id, id::REMOVING_SUFFIX));
            if fs::symlink_metadata(&dir).is_err() && fs::symlink_metadata(&removing).is_ok() {
                info!(id = %rec.id, "finishing an interrupted removal");
                self.db().write(|w| w.delete(&rec))?;
                report.repaired += 1;
                continue;
            }
            if let Some(p) = &rec.pending {
                let on_disk = fs::read_to_string(dir.join(APPLIED_FILE))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok());
                let mut fixed = rec.clone();
                fixed.pending = None;
                if on_disk == Some(p.generation) {
                    info!(id = %rec.id, "rolling an interrupted apply forward");
                    fixed.generation = p.generation;
                    fixed.size = Some(p.size);
                    fixed.exact = p.exact;
                    fixed.dirty = false;
                } else {
                    info!(id = %rec.id, "rolling an interrupted apply back");
                }
                self.db().write(|w| w.put(&fixed))?;
                report.repaired += 1;
            }
        }
        Ok(())
    }

    fn reconcile_mounts(&self, report: &mut SweepReport) -> Result<()> {
        let boot = sys::boot_id();
        let same_boot = self.db().meta("boot_id")?.as_deref() == Some(boot.as_str());
        let table = mountinfo::read().ctx(|| "reading /proc/self/mountinfo".into())?;
        let layers = self.store.layers_dir();
        let live: HashSet<PathBuf> = mountinfo::mounts_under(&table, &layers)
            .into_iter()
            .map(|m| m.mount_point)
            .collect();
        let mut claimed = HashSet::new();
        for rec in self.db().list()? {
            let keep = match &rec.mount {
                Some(m) if rec.refs > 0 => same_boot && (!m.mounted || live.contains(&m.path)),
                Some(_) | None => rec.refs == 0 && rec.mount.is_none(),
            };
            if keep {
                if let Some(m) = &rec.mount {
                    claimed.insert(m.path.clone());
                }
                continue;
            }
            debug!(id = %rec.id, refs = rec.refs, "resetting stale mount references");
            let mut fixed = rec.clone();
            fixed.refs = 0;
            fixed.mount = None;
            self.db().write(|w| w.put(&fixed))?;
            report.mounts += 1;
        }
        for path in live.difference(&claimed) {
            info!(path = %path.display(), "unmounting a mount no layer reference claims");
            sys::mount::unmount(path).ctx(|| format!("unmounting {}", path.display()))?;
            report.mounts += 1;
        }
        if !same_boot {
            self.db().write(|w| w.set_meta("boot_id", &boot))?;
        }
        Ok(())
    }

    fn sweep(&self, report: &mut SweepReport) -> Result<()> {
        let staging = self.store.root.join("staging");
        for entry in fs::read_dir(&staging).ctx(|| format!("reading {}", staging.display()))? {
            let entry = entry.ctx(|| format!("reading {}", staging.display()))?;
            let path = entry.path();
            let lock = match fsutil::open_dir(&path) {
                Ok(fd) => {
                    DirLock::try_lock(fd, true).ctx(|| format!("locking {}", path.display()))?
                }
                // Not a directory (or gone): nobody's live work.
                Err(_) => None,
            };
            if lock.is_none() && path.is_dir() {
                continue; // a live process is building it
            }
            self.remove_dir_unmounting(&path)?;
            report.staging += 1;
        }
        let layers = self.store.layers_dir();
        let known: HashSet<String> = self.db().list()?.into_iter().map(|r| r.id).collect();
        for id in self.db().mount_state_ids()? {
            if !known.contains(&id) {
                self.db().forget_mount_state(&id)?;
            }
        }
        for entry in fs::read_dir(&layers).ctx(|| format!("reading {}", layers.display()))? {
            let entry = entry.ctx(|| format!("reading {}", layers.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if known.contains(name.as_ref()) {
                continue;
            }
            if name.ends_with(id::REMOVING_SUFFIX) {
                report.removing += 1;
                self.remove_dir_unmounting(&entry.path())?;
            } else {
                let to = self.quarantine(&entry.path())?;
                warn!(dir = %name, moved_to = %to.display(), "a layer directory has no record; moved it to quarantine (delete it once you know it is not needed)");
                report.orphans += 1;
            }
        }
        Ok(())
    }

    /// Unmounts every mount under `layers/` and resets every reference count (Docker's
    /// `Cleanup` at daemon shutdown), then sweeps.
    pub fn release_all(&self) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let table = mountinfo::read().ctx(|| "reading /proc/self/mountinfo".into())?;
        for m in mountinfo::mounts_under(&table, &self.store.layers_dir()) {
            sys::mount::unmount(&m.mount_point)
                .ctx(|| format!("unmounting {}", m.mount_point.display()))?;
            let _ = fs::remove_dir(&m.mount_point);
            report.mounts += 1;
        }
        for rec in self.db().list()? {
            if rec.refs > 0 || rec.mount.is_some() {
                let mut fixed = rec.clone();
                fixed.refs = 0;
                fixed.mount = None;
                self.db().write(|w| w.put(&fixed))?;
            }
        }
        let rest = self.recover()?;
        report.staging = rest.staging;
        report.removing = rest.removing;
        report.orphans = rest.orphans;
        report.repaired = rest.repaired;
        Ok(report)
    }

    /// Moves `dir` (unmounting anything below it first) to `quarantine/<name>-<seconds>`,
    /// returning where it went.
    pub(super) fn quarantine(&self, dir: &Path) -> Result<PathBuf> {
        let table = mountinfo::read().ctx(|| "reading /proc/self/mountinfo".into())?;
        for m in mountinfo::mounts_under(&table, dir) {
            sys::mount::unmount(&m.mount_point)
                .ctx(|| format!("unmounting {}", m.mount_point.display()))?;
        }
        let qdir = self.store.root.join(QUARANTINE);
        mkdir_0700(&qdir)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut n = 0u32;
        loop {
            let target = if n == 0 {
                qdir.join(format!("{name}-{secs}"))
            } else {
                qdir.join(format!("{name}-{secs}.{n}"))
            };
            match renameat_with(CWD, dir, CWD, &target, RenameFlags::NOREPLACE) {
                Ok(()) => return Ok(target),
                Err(rustix::io::Errno::EXIST) if n < 1000 => n += 1,
                Err(e) => {
                    return Err(crate::error::Error::io(
                        format!("moving {} to {}", dir.display(), qdir.display()),
                        e,
                    ))
                }
            }
        }
    }
}
