//! A read-only report on a store (`strata check`): marker, database, each record's directory,
//! directories no record claims, interrupted applies, staging leftovers, quarantine contents
//! and mount state against the kernel's mount table. Nothing is changed: the database is
//! opened read-only and no lock is taken.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::open::{self, RootState};
use super::{id, Db, LayerRecord, QUARANTINE};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::sys::lock::DirLock;
use crate::sys::{self, mountinfo};

/// One thing `check` found wrong or worth knowing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// A short stable name of the kind of finding (`unknown-layer-dir`, `database`...).
    pub kind: &'static str,
    /// What was found, naming the path or layer.
    pub detail: String,
}

/// What `check` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// The store root.
    pub root: PathBuf,
    /// Whether the store marker is present.
    pub marker: bool,
    /// Whether the database could be opened and read.
    pub database_ok: bool,
    /// The recorded driver, when the database is readable.
    pub driver: Option<String>,
    /// Number of layer records.
    pub layers: usize,
    /// Everything found; empty for a clean store.
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    fn add(&mut self, kind: &'static str, detail: String) {
        self.findings.push(Finding { kind, detail });
    }
}

/// Names of the entries of `dir` (empty when it is missing), sorted.
fn names(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.ctx(|| format!("reading {}", dir.display()))?;
        out.push(entry.file_name().to_string_lossy().into_owned());
    }
    out.sort();
    Ok(out)
}

/// Kinds of findings that the recovery of a read-write open repairs (see the store's crash
/// story).
const REPAIRABLE: [&str; 7] = [
    "pending-apply",
    "removing-leftover",
    "staging-leftover",
    "unknown-layer-dir",
    "stale-refs",
    "stale-mount",
    "unclaimed-mount",
];

/// Whether the store at `root` (canonical), whose database `db` is open, holds anything the
/// recovery of a read-write open would repair. Reads only.
pub fn needs_repair(root: &Path, db: &Db) -> Result<bool> {
    let mut report = CheckReport::default();
    let records = db.list()?;
    check_mounts(root, db, &records, &mut report)?;
    check_dirs(root, &records, true, &mut report)?;
    Ok(report.findings.iter().any(|f| REPAIRABLE.contains(&f.kind)))
}

/// Checks the store at `root` without changing anything.
pub fn check(root: &Path) -> Result<CheckReport> {
    let mut report = CheckReport {
        root: root.to_path_buf(),
        ..CheckReport::default()
    };
    match open::inspect_root(root)? {
        RootState::Fresh => {
            report.add(
                "no-store",
                format!("{} holds no store (missing or empty)", root.display()),
            );
            return Ok(report);
        }
        RootState::Foreign { found } => {
            report.add(
                "foreign-directory",
                format!(
                    "{} is not a strata store: no marker ({}), found {}",
                    root.display(),
                    open::MARKER,
                    found.join(", ")
                ),
            );
            return Ok(report);
        }
        RootState::Marked => report.marker = true,
        RootState::Unmarked => report.add(
            "no-marker",
            format!(
                "no store marker ({}); the next read-write command adopts the store if its database is readable",
                open::MARKER
            ),
        ),
    }
    let root = fs::canonicalize(root).ctx(|| format!("resolving {}", root.display()))?;
    report.root = root.clone();
    let records = match read_records(&root) {
        Ok((db, records)) => {
            report.database_ok = true;
            report.driver = db.meta("driver")?;
            check_mounts(&root, &db, &records, &mut report)?;
            records
        }
        Err(e) => {
            report.add("database", e.to_string());
            Vec::new()
        }
    };
    report.layers = records.len();
    check_dirs(&root, &records, report.database_ok, &mut report)?;
    Ok(report)
}

fn read_records(root: &Path) -> Result<(Db, Vec<LayerRecord>)> {
    let db = Db::open_untouched(&root.join(open::DB_FILE))?;
    if db.meta("driver")?.is_none() {
        return Err(open::damaged(root, "the database records no driver"));
    }
    let records = db.list()?;
    Ok((db, records))
}

/// Record directories, directories no record claims, pending applies, staging and quarantine.
fn check_dirs(
    root: &Path,
    records: &[LayerRecord],
    db_ok: bool,
    report: &mut CheckReport,
) -> Result<()> {
    let layers = root.join("layers");
    let known: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    for rec in records {
        if !fs::symlink_metadata(layers.join(&rec.id)).is_ok_and(|m| m.is_dir()) {
            report.add(
                "missing-layer-dir",
                format!(
                    "layer {:?} has a record but no directory layers/{}",
                    rec.id, rec.id
                ),
            );
        }
        if let Some(p) = rec.parent.as_deref().filter(|p| !known.contains(p)) {
            report.add(
                "missing-parent",
                format!("layer {:?} names parent {p:?}, which has no record", rec.id),
            );
        }
        if let Some(p) = &rec.pending {
            report.add(
                "pending-apply",
                format!(
                    "layer {:?} has an interrupted apply (generation {}); the next read-write command finishes or undoes it",
                    rec.id, p.generation
                ),
            );
        }
    }
    for name in names(&layers)? {
        if known.contains(name.as_str()) {
            continue;
        }
        if name.ends_with(id::REMOVING_SUFFIX) {
            report.add(
                "removing-leftover",
                format!("layers/{name} is an interrupted removal; the next read-write command deletes it"),
            );
        } else if db_ok {
            report.add(
                "unknown-layer-dir",
                format!("layers/{name} has no record; the next read-write command moves it to {QUARANTINE}/"),
            );
        } else {
            report.add(
                "unverified-layer-dir",
                format!("layers/{name} cannot be checked against the unreadable database"),
            );
        }
    }
    let staging = root.join("staging");
    for name in names(&staging)? {
        let path = staging.join(&name);
        let live = match fsutil::open_dir(&path) {
            Ok(fd) => DirLock::try_lock(fd, true)
                .ctx(|| format!("locking {}", path.display()))?
                .is_none(),
            Err(_) => false,
        };
        if !live {
            report.add(
                "staging-leftover",
                format!("staging/{name} is left over from an interrupted operation; the next read-write command deletes it"),
            );
        }
    }
    for name in names(&root.join(QUARANTINE))? {
        report.add(
            "quarantined",
            format!("{QUARANTINE}/{name} holds a layer directory no record claimed; inspect it, then delete or restore it by hand"),
        );
    }
    Ok(())
}

/// Recorded mount state against the kernel's mount table.
fn check_mounts(
    root: &Path,
    db: &Db,
    records: &[LayerRecord],
    report: &mut CheckReport,
) -> Result<()> {
    let same_boot = db.meta("boot_id")?.as_deref() == Some(sys::boot_id().as_str());
    let table = mountinfo::read().ctx(|| "reading /proc/self/mountinfo".into())?;
    let layers = root.join("layers");
    let live: HashSet<PathBuf> = mountinfo::mounts_under(&table, &layers)
        .into_iter()
        .map(|m| m.mount_point)
        .collect();
    let mut claimed = HashSet::new();
    for rec in records.iter().filter(|r| r.refs > 0 || r.mount.is_some()) {
        let Some(m) = &rec.mount else {
            report.add(
                "stale-refs",
                format!(
                    "layer {:?} has {} reference(s) but no mount state",
                    rec.id, rec.refs
                ),
            );
            continue;
        };
        claimed.insert(m.path.clone());
        if !same_boot {
            report.add(
                "stale-refs",
                format!(
                    "layer {:?} has {} reference(s) recorded under another boot",
                    rec.id, rec.refs
                ),
            );
        } else if m.mounted && !live.contains(&m.path) {
            report.add(
                "stale-mount",
                format!(
                    "layer {:?} is recorded as mounted at {} but the kernel has no mount there",
                    rec.id,
                    m.path.display()
                ),
            );
        }
    }
    for path in live.difference(&claimed) {
        report.add(
            "unclaimed-mount",
            format!(
                "{} is mounted but no layer reference claims it",
                path.display()
            ),
        );
    }
    Ok(())
}
