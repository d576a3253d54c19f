//! Attaching layer images: what a layer directory holds, mounting an image (on a mount point
//! or detached), and reconciling loop devices with the store.
//!
//! Every loop device is attached with autoclear and handed straight to a mount, so a
//! device lives exactly as long as the filesystem mounted from it. Attach-and-mount runs
//! under the store lock, which is also what [`release_unused`] runs under: a device it finds
//! unused really is a leftover, never one about to be mounted.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use tracing::{debug, info, warn};

use super::{image, vhd};
use crate::error::{Error, IoContext, Result};
use crate::sys::loopdev::{self, LO_FLAGS_AUTOCLEAR, LO_FLAGS_READ_ONLY};
use crate::sys::mount;

/// Name of a read-only layer image inside a layer directory.
pub const LAYER_IMG: &str = "layer.img";
/// Name of a writable sandbox image inside a layer directory.
pub const SANDBOX_IMG: &str = "sandbox.img";
/// An empty directory in every layer directory (serves empty layers, pads overlay lowers).
pub const EMPTY_DIR: &str = "empty";

/// What holds a layer's own content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A read-only ext4 image with the tree at its root.
    Image(PathBuf),
    /// A writable ext4 sandbox with the tree in `upper/` (and overlay's `work/`).
    Sandbox(PathBuf),
    /// Nothing yet: an empty tree.
    Empty,
}

impl Content {
    /// The content of the layer whose directory is `dir` (a sandbox wins over an image: it
    /// is made from the image and replaces it).
    ///
    /// Names are looked at without following symlinks: anything but a directory there counts
    /// as the image, so that a symlink planted in its place is refused when it is opened
    /// ([`attach`] opens with `O_NOFOLLOW`) instead of being silently taken for "no image".
    pub fn of(dir: &Path) -> Content {
        let present = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| !m.is_dir());
        let sandbox = dir.join(SANDBOX_IMG);
        if present(&sandbox) {
            return Content::Sandbox(sandbox);
        }
        let img = dir.join(LAYER_IMG);
        if present(&img) {
            return Content::Image(img);
        }
        Content::Empty
    }

    /// The image file, if any.
    pub fn image(&self) -> Option<&Path> {
        match self {
            Content::Image(p) | Content::Sandbox(p) => Some(p),
            Content::Empty => None,
        }
    }

    /// Where the tree is, relative to the root of the mounted image.
    pub fn tree_in_image(&self) -> &'static str {
        match self {
            Content::Sandbox(_) => "upper",
            _ => ".",
        }
    }
}

/// Attaches `image` to a loop device (read-only or not), bounded to the disk before a VHD
/// footer if it has one. A sandbox about to be mounted writable that was not cleanly
/// unmounted is checked and repaired first.
pub fn attach(image: &Path, readonly: bool) -> Result<loopdev::LoopDevice> {
    let md = std::fs::symlink_metadata(image).ctx(|| format!("inspecting {}", image.display()))?;
    if !md.is_file() {
        // Checked before anything opens or repairs the file by name.
        return Err(Error::io(
            format!("opening {}", image.display()),
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file (a symlink is never followed)",
            ),
        ));
    }
    if !readonly && image::needs_check(image)? {
        info!(image = %image.display(), "sandbox was not cleanly unmounted; running e2fsck");
        image::check_and_repair(image)?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!readonly)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(image)
        .ctx(|| format!("opening {} (never through a symlink)", image.display()))?;
    let md = file
        .metadata()
        .ctx(|| format!("inspecting {}", image.display()))?;
    if !md.is_file() {
        return Err(Error::io(
            format!("opening {}", image.display()),
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        ));
    }
    let limit = vhd::disk_size(&file)
        .ctx(|| format!("reading {}", image.display()))?
        .unwrap_or(0);
    let mut flags = LO_FLAGS_AUTOCLEAR;
    if readonly {
        flags |= LO_FLAGS_READ_ONLY;
    }
    loopdev::attach(&file, image.as_os_str().as_encoded_bytes(), flags, limit)
        .ctx(|| format!("attaching {} to a loop device", image.display()))
}

fn ext4_options(readonly: bool) -> &'static str {
    // Lazily initialised inode tables are never zeroed in the background: the image stays
    // sparse (a fresh sandbox's unused tables are marked as such in its group descriptors).
    if readonly {
        ""
    } else {
        "noinit_itable"
    }
}

/// An image mounted on a directory; unmounted (and the directory removed) on drop unless
/// [`MountGuard::keep`] is called.
#[derive(Debug)]
pub struct MountGuard {
    path: PathBuf,
    armed: bool,
}

impl MountGuard {
    /// Guards an existing mount at `path`.
    pub fn new(path: PathBuf) -> Self {
        MountGuard { path, armed: true }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the mount in place.
    pub fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = mount::unmount(&self.path) {
                warn!(path = %self.path.display(), error = %e, "could not unmount");
            }
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// Mounts `image` (ext4) at `target`, creating the directory. The caller holds the store lock.
pub fn mount_at(image: &Path, target: &Path, readonly: bool) -> Result<MountGuard> {
    super::super::mkdir_mode(target, 0o700)?;
    let dev = match attach(image, readonly) {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_dir(target);
            return Err(e);
        }
    };
    if let Err(e) = mount::mount_block(
        &dev.path(),
        target,
        "ext4",
        readonly,
        ext4_options(readonly),
    ) {
        let _ = std::fs::remove_dir(target);
        return Err(Error::io(
            format!("mounting {} at {}", image.display(), target.display()),
            e,
        ));
    }
    debug!(image = %image.display(), target = %target.display(), dev = dev.number(), "mounted image");
    // The mount now holds the device; closing ours leaves it as the only user (autoclear).
    drop(dev);
    Ok(MountGuard::new(target.to_path_buf()))
}

/// Mounts the content of a layer read-only without a mount point and returns a directory
/// descriptor of its tree (`upper/` for a sandbox). The mount, its superblock and its loop
/// device go away when the descriptor (and everything opened through it) is closed. The
/// caller holds the store lock.
pub fn open_tree_detached(content: &Content, empty: &Path) -> Result<OwnedFd> {
    let Some(img) = content.image() else {
        return crate::fsutil::open_dir(empty).ctx(|| format!("opening {}", empty.display()));
    };
    let dev = attach(img, true)?;
    let mnt = mount::mount_block_detached(&dev.path(), "ext4", true, &[])
        .ctx(|| format!("mounting {}", img.display()))?;
    drop(dev);
    let tree = rustix::fs::openat(
        mnt.as_fd(),
        content.tree_in_image(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("opening the tree in {}", img.display()))?;
    Ok(tree)
}

/// Mounts the writable sandbox `img` without a mount point and returns a descriptor of its
/// `upper/` directory. The caller holds the store lock.
pub fn open_sandbox_upper(img: &Path) -> Result<OwnedFd> {
    let dev = attach(img, false)?;
    let mnt = mount::mount_block_detached(&dev.path(), "ext4", false, &["noinit_itable"])
        .ctx(|| format!("mounting {}", img.display()))?;
    drop(dev);
    rustix::fs::openat(
        mnt.as_fd(),
        "upper",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("opening upper/ in {}", img.display()))
}

/// Detaches every loop device backed by a file under `root` that nothing uses (no mount,
/// no exclusive opener), checking with `LOOP_GET_STATUS64` that the device still has the
/// file it was listed with. Returns how many were detached. The caller holds the store lock.
pub fn release_unused(root: &Path) -> Result<usize> {
    let bound = loopdev::list_bound().ctx(|| "listing loop devices".into())?;
    let mut n = 0;
    for b in bound.iter().filter(|b| b.backing.starts_with(root)) {
        let identity = if b.deleted {
            None
        } else {
            match loopdev::file_identity(&b.backing) {
                Ok(i) => Some(i),
                Err(_) => continue, // renamed or removed meanwhile; the next pass sees it
            }
        };
        let prefix = b.backing.as_os_str().as_encoded_bytes();
        let matches = |st: &loopdev::LoopStatus| match identity {
            Some(id) => (st.backing_dev, st.backing_ino) == id,
            None => !st.file_name.is_empty() && prefix.starts_with(&st.file_name),
        };
        match loopdev::detach_if_unused(b.number, matches) {
            Ok(true) => {
                info!(dev = b.number, file = %b.backing.display(), "detached an unused loop device");
                n += 1;
            }
            Ok(false) => {}
            Err(e) => {
                return Err(Error::io(
                    format!("detaching loop{} ({})", b.number, b.backing.display()),
                    e,
                ))
            }
        }
    }
    Ok(n)
}

/// Loop devices backed by files under `root` (for `status`).
pub fn count_attached(root: &Path) -> usize {
    loopdev::list_bound()
        .map(|v| v.iter().filter(|b| b.backing.starts_with(root)).count())
        .unwrap_or(0)
}
