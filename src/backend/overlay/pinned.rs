//! Reaching a layer's directories beneath the store root through no symlink: every directory
//! a backend mounts from or onto is pinned with `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`
//! right before use, and a path that is (or leads through) a symlink is refused, naming the
//! layer.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::store::{LayerRecord, MountState, Store};
use crate::sys::mount;

/// Refuses a store path that is a symlink, leads through one, or leaves the store.
pub(crate) fn refuse(id: &str, path: &Path, e: std::io::Error) -> Error {
    let why = match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EXDEV) => {
            "it is (or leads through) a symlink or leaves the store; refusing to follow it"
                .to_string()
        }
        _ => e.to_string(),
    };
    Error::Invalid {
        id: id.to_string(),
        reason: format!("{}: {why}", path.display()),
    }
}

/// Pins `layers/<id>/<sub>` beneath the store root (see [`fsutil::pin_dir_beneath`]).
pub(crate) fn pin_layer_dir(store: &Store, id: &str, sub: &str) -> Result<OwnedFd> {
    let rel = PathBuf::from("layers").join(id).join(sub);
    fsutil::pin_dir_beneath(store.root(), &rel).map_err(|e| refuse(id, &store.root().join(&rel), e))
}

/// Pins `layers/<lower>/<sub>`, where `lower` is a parent of `id` (see [`pin_layer_dir`]);
/// the error names both.
pub(crate) fn pin_lower(store: &Store, id: &str, lower: &str, sub: &str) -> Result<OwnedFd> {
    pin_layer_dir(store, lower, sub).map_err(|e| Error::Invalid {
        id: id.to_string(),
        reason: format!("its parent layer {lower:?}: {e}"),
    })
}

/// Creates (if missing) and pins `layers/<id>/<sub>` beneath the store root.
pub(crate) fn make_layer_dir(store: &Store, id: &str, sub: &str, mode: u32) -> Result<OwnedFd> {
    let rel = PathBuf::from("layers").join(id).join(sub);
    fsutil::mkdir_beneath(store.root(), &rel, mode)
        .map_err(|e| refuse(id, &store.root().join(&rel), e))
}

/// Unmounts what `state` says was mounted for `layer`, reaching the mount point beneath the
/// store root through no symlink, and removes the (then empty) mount point.
pub(crate) fn unmount_pinned(store: &Store, layer: &LayerRecord, state: &MountState) -> Result<()> {
    if !state.mounted {
        return Ok(());
    }
    let root = store.root();
    let rel = state.path.strip_prefix(root).map_err(|_| Error::Invalid {
        id: layer.id.clone(),
        reason: format!(
            "recorded mount point {} is outside the store",
            state.path.display()
        ),
    })?;
    let pinned = match fsutil::pin_dir_beneath(root, rel) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(refuse(&layer.id, &state.path, e)),
    };
    mount::unmount_at(pinned.as_fd()).ctx(|| format!("unmounting layer {}", layer.id))?;
    drop(pinned);
    if let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) {
        if let Ok(pfd) = fsutil::pin_dir_beneath(root, parent) {
            let _ = rustix::fs::unlinkat(&pfd, name, rustix::fs::AtFlags::REMOVEDIR);
        }
    }
    Ok(())
}

/// Copies the tree of `layers/<src>/<sub>` (opened beneath the store root through no
/// symlink) into the empty directory `dst`, for layer `id`.
pub(crate) fn copy_layer_dir(
    store: &Store,
    id: &str,
    src: &str,
    sub: &str,
    dst: &Path,
) -> Result<()> {
    let rel = PathBuf::from("layers").join(src).join(sub);
    let from = fsutil::open_beneath(
        store.root(),
        &rel,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
    )
    .map_err(|e| refuse(src, &store.root().join(&rel), e))?;
    let to = fsutil::open_dir(dst).ctx(|| format!("opening {}", dst.display()))?;
    crate::archive::copy::copy_tree(from.as_fd(), to.as_fd()).map_err(|source| Error::Archive {
        layer: id.to_string(),
        source,
    })?;
    Ok(())
}
