//! Removing layers: the record and directory leave the store under the lock at once; the
//! files are deleted afterwards — inline, on a background thread, or by a detached deleter
//! process that inherits the directory's lock (see [`super::GraphConfig`]).

use tracing::{info, warn};

use super::Graph;
use crate::error::Result;
use crate::fsutil;
use crate::store::id;

/// First argument that makes the `strata` binary a deleter of one removed layer directory.
pub const REAP_ARG: &str = "__reap";

/// Entry point of the deleter process started for [`super::GraphConfig::remove_helper`]: deletes
/// `dir` (a removed layer's directory in `staging/`), whose lock it inherited. Returns the
/// exit status. A deletion that fails is finished by the next sweep.
pub fn reap_main(dir: &std::path::Path) -> i32 {
    match fsutil::remove_tree(dir) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

impl Graph {
    /// [`Driver::remove`]: out of the store under the lock, then the files deleted here, on
    /// a thread, or by a detached process, as configured.
    pub(super) fn remove_layer(&self, id: &str) -> Result<()> {
        id::validate(id)?;
        let store = self.store();
        let removing = {
            let l = store.lock()?;
            let rec = store.record(id)?;
            self.ensure_idle(&rec)?;
            let guard = store.busy_guard(id, true, "remove")?;
            let removing = l.begin_remove(&rec)?;
            (removing, guard)
        };
        info!(layer = id, "removed layer");
        let id = id.to_string();
        // The flock taken above stays on the directory until its files are gone, so no sweep
        // mistakes the deletion for a leftover.
        let (path, guard) = removing;
        if let Some(exe) = &self.inner.remove_helper {
            match spawn_reaper(exe, &path, guard) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    warn!(layer = %id, error = %e, "could not start a deleter process; deleting here");
                    reap(&id, &path);
                    return Ok(());
                }
            }
        }
        if !self.inner.background_remove {
            reap(&id, &path);
            drop(guard);
            return Ok(());
        }
        let mut reapers = self.inner.reapers.lock().unwrap_or_else(|p| p.into_inner());
        reapers.retain(|r| !r.is_finished());
        match std::thread::Builder::new()
            .name("strata-reap".into())
            .spawn(move || {
                reap(&id, &path);
                drop(guard);
            }) {
            Ok(handle) => reapers.push(handle),
            // No thread: the directory stays, flock-free, in staging/ for the next sweep.
            Err(e) => warn!(error = %e, "could not start a deletion thread; cleanup will delete"),
        }
        Ok(())
    }

    /// Waits until the files of every layer removed so far are deleted (removals with
    /// [`super::GraphConfig::background_remove`] return before that).
    pub fn wait_removals(&self) {
        let reapers =
            std::mem::take(&mut *self.inner.reapers.lock().unwrap_or_else(|p| p.into_inner()));
        for r in reapers {
            let _ = r.join();
        }
    }
}

/// Deletes a removed layer's directory; a failure is left to the next sweep.
fn reap(id: &str, path: &std::path::Path) {
    if let Err(e) = fsutil::remove_tree(path) {
        warn!(layer = %id, error = %e, "could not delete the removed layer's files; cleanup will");
    }
}

/// Starts `<exe> __reap <path>` detached (own process group, no stdio), handing it the lock
/// on the directory so that no sweep takes the deletion for a leftover while it runs.
fn spawn_reaper(
    exe: &std::path::Path,
    path: &std::path::Path,
    guard: crate::sys::lock::DirLock,
) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let fd = guard.into_inheritable()?;
    let child = std::process::Command::new(exe)
        .arg(REAP_ARG)
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    // Our copy closes here; the child's copy keeps the lock until it exits.
    drop(fd);
    child.map(|_| ())
}
