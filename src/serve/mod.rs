//! Servers that expose a store to other programs over a unix socket.
//!
//! * [`docker`]: dockerd 20.10's legacy (v1) graph-driver plugin protocol, so that dockerd runs
//!   with `--experimental --storage-driver NAME` on a strata store.
//!
//! This module holds what every server shares: binding the socket (and removing it again),
//! waiting for a shutdown signal, and keeping the store's mount directory out of mount
//! propagation. Request handlers run the blocking [`crate::Graph`] calls on tokio's blocking
//! pool, so one slow call (an apply, a diff) never holds up another.

pub mod docker;
mod stream;

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::sys::{mount, mountinfo};

/// What can go wrong while setting a server up.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another live process serves the socket path already.
    #[error("{0} is in use by another running server; stop it first or choose another --socket")]
    SocketInUse(PathBuf),
    /// Something other than a socket is in the way.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// An I/O step failed; `context` says which.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ServeError {
    let context = context.into();
    move |source| ServeError::Io { context, source }
}

/// A unix socket bound by this process. [`SocketFile::remove`] deletes the socket file, but
/// only while it is still the one this process bound (a successor may have replaced it).
#[derive(Debug, Clone)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the socket file if it is still ours.
    pub fn remove(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(md) if md.dev() == self.dev && md.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    warn!(socket = %self.path.display(), error = %e, "could not remove the socket file");
                }
            }
            _ => {}
        }
    }
}

/// Binds a unix socket at `path` (mode 0600: whoever can connect can mount layers), creating
/// its parent directory. A stale socket file left by a dead server is replaced; a live one is
/// an error.
pub fn bind_unix(path: &Path) -> Result<(tokio::net::UnixListener, SocketFile), ServeError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(io_err(format!("creating {}", parent.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServeError::SocketInUse(path.to_path_buf()));
            }
            info!(socket = %path.display(), "replacing a stale socket file");
            std::fs::remove_file(path)
                .map_err(io_err(format!("removing stale socket {}", path.display())))?;
        }
        Ok(_) => return Err(ServeError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("inspecting {}", path.display()))(e)),
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(io_err(format!("binding {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(format!("chmod 0600 {}", path.display())))?;
    let md = std::fs::symlink_metadata(path)
        .map_err(io_err(format!("inspecting {}", path.display())))?;
    Ok((
        listener,
        SocketFile {
            path: path.to_path_buf(),
            dev: md.dev(),
            ino: md.ino(),
        },
    ))
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(
        signal = name,
        "shutting down: no new connections, finishing requests in flight"
    );
}

/// Makes `dir` a private mount point of its own (a bind of itself, if it is not a mount point
/// yet), as overlay2 does with its home: mounts made below it then neither propagate to peer
/// mounts nor receive theirs. dockerd bind-mounts its data-root onto itself as *shared*, and
/// the store usually lives inside it. Use it on the store root: the store renames between
/// `staging/` and `layers/`, which must stay on one mount. Returns whether a bind was added.
pub fn make_private_mount(dir: &Path) -> io::Result<bool> {
    let table = mountinfo::read()?;
    let added = if table.iter().any(|m| m.mount_point == dir) {
        false
    } else {
        mount::bind_self(dir)?;
        true
    };
    mount::make_private(dir)?;
    Ok(added)
}

/// Undoes [`make_private_mount`]'s bind when nothing is mounted below `dir` any more (with
/// layers still mounted, e.g. containers still running, the bind stays so that their mounts
/// stay where dockerd expects them).
pub fn release_private_mount(dir: &Path) -> io::Result<()> {
    let table = mountinfo::read()?;
    let under = mountinfo::mounts_under(&table, dir);
    if under.iter().any(|m| m.mount_point != dir) {
        info!(dir = %dir.display(), "layers are still mounted; keeping the private bind");
        return Ok(());
    }
    if under.iter().any(|m| m.mount_point == dir) {
        mount::unmount(dir)?;
    }
    Ok(())
}
