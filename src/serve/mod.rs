//! Servers that expose a store to other programs over a unix socket.
//!
//! * [`docker`]: dockerd 20.10's legacy (v1) graph-driver plugin protocol, so that dockerd runs
//!   with `--experimental --storage-driver NAME` on a strata store.
//!
//! This module holds what every server shares: binding the socket with its final mode (and
//! removing it again), waiting for a shutdown signal, and keeping the store root out of mount
//! propagation (a private bind of its own, undone when nothing is mounted below it). Request
//! handlers run the blocking [`crate::Graph`] calls on tokio's blocking pool, so one slow
//! call (an apply, a diff) never holds up another.

pub mod docker;
mod stream;

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::mount::UnmountFlags;
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
/// its parent directory. The socket is bound and given its mode inside a private directory
/// (mode 0700) and then renamed into place, so nobody can connect to it before its mode is
/// final. A stale socket file left by a dead server is replaced; a live one is an error.
pub fn bind_unix(path: &Path) -> Result<(tokio::net::UnixListener, SocketFile), ServeError> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServeError::SocketInUse(path.to_path_buf()));
            }
            info!(socket = %path.display(), "replacing a stale socket file");
        }
        Ok(_) => return Err(ServeError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("inspecting {}", path.display()))(e)),
    }
    let private = parent.join(format!(".{}.sock-tmp", std::process::id()));
    remove_private_dir(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(io_err(format!("creating {}", private.display())))?;
    let bound = bind_in(&private, path);
    remove_private_dir(&private);
    let listener = bound?;
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

/// Binds `private/s`, sets mode 0600 and renames it to `path`.
fn bind_in(private: &Path, path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    let tmp = private.join("s");
    let listener = tokio::net::UnixListener::bind(&tmp)
        .map_err(io_err(format!("binding {}", tmp.display())))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(format!("chmod 0600 {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io_err(format!(
        "moving the socket into place at {}",
        path.display()
    )))?;
    Ok(listener)
}

/// Removes the private directory of [`bind_unix`] and a socket left in it.
fn remove_private_dir(dir: &Path) {
    let _ = std::fs::remove_file(dir.join("s"));
    let _ = std::fs::remove_dir(dir);
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
///
/// The bind is not recursive: a recursive one would copy the layers mounted below `dir`
/// already (by the command line, sharing the store), and releasing a layer then unmounts one
/// copy only. Those mounts are moved into the bind instead: each is bound again at its place
/// and the original, hidden under the bind, is detached.
pub fn make_private_mount(dir: &Path) -> io::Result<bool> {
    if is_mount_root(dir)? {
        mount::make_private(dir)?;
        return Ok(false);
    }
    let table = mountinfo::read()?;
    let below = mountinfo::mounts_under(&table, dir);
    let mut outer: Vec<PathBuf> = Vec::new();
    for m in below.iter().rev() {
        // Shallowest first; a mount below another one travels with it.
        if !outer.iter().any(|o| m.mount_point.starts_with(o)) {
            outer.push(m.mount_point.clone());
        }
    }
    let mut held = Vec::new();
    for p in outer {
        match rustix::fs::open(&p, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => held.push((p, fd)),
            Err(e) => {
                warn!(mount = %p.display(), error = %e, "cannot hold a mount below the store root")
            }
        }
    }
    rustix::mount::mount_bind(dir, dir)?;
    mount::make_private(dir)?;
    for (p, fd) in held {
        let old = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let moved = rustix::mount::mount_bind_recursive(old.as_str(), &p)
            .and_then(|()| rustix::mount::unmount(old.as_str(), UnmountFlags::DETACH));
        match moved {
            Ok(()) => info!(mount = %p.display(), "moved a mount into the private bind"),
            Err(e) => {
                warn!(mount = %p.display(), error = %e, "could not move a mount into the private bind")
            }
        }
    }
    Ok(true)
}

/// Whether `dir`, as the path resolves now, is the root of a mount. (The mount table also
/// lists mounts hidden under a later mount at the same place, e.g. under dockerd's bind of
/// its data-root, which do not count.)
pub fn is_mount_root(dir: &Path) -> io::Result<bool> {
    use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags, CWD};
    let st = statx(CWD, dir, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::BASIC_STATS)?;
    if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
        return Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
    }
    // Kernels before 5.8: the mount table, and the path's device against its parent's.
    let table = mountinfo::read()?;
    Ok(table.iter().any(|m| m.mount_point == dir))
}

/// Undoes [`make_private_mount`]'s bind when nothing is mounted below `dir` any more (with
/// layers still mounted, e.g. containers still running, the bind stays so that their mounts
/// stay where dockerd expects them). Returns whether `dir` is no bind any more.
pub fn release_private_mount(dir: &Path) -> io::Result<bool> {
    let table = mountinfo::read()?;
    let under = mountinfo::mounts_under(&table, dir);
    if under.iter().any(|m| m.mount_point != dir) {
        info!(dir = %dir.display(), "layers are still mounted; keeping the private bind");
        return Ok(false);
    }
    if under.iter().any(|m| m.mount_point == dir) {
        mount::unmount(dir)?;
    }
    Ok(true)
}
