//! The `block` backend: LCOW's design native on Linux. Layers are ext4 images attached to
//! loop devices and stacked with overlayfs; writable layers are sized sandboxes, so `size`
//! is enforced on any backing filesystem.
//!
//! ```text
//! layers/<id>/layer.img    read-only layer: ext4 (no journal, `read-only` feature) with the
//!                          layer's own tree at its root, in overlay format (whiteouts are
//!                          0:0 devices, opaque directories carry trusted.overlay.opaque=y);
//!                          with `-o vhd=true` a fixed-VHD footer follows the filesystem
//! layers/<id>/sandbox.img  writable layer: sparse ext4 of the layer's size holding upper/
//!                          and work/ (replaces layer.img once an image layer is written)
//! layers/<id>/empty/       an empty directory (serves empty layers, pads overlay lowers)
//! layers/<id>/merged/      mount point while served
//! layers/<id>/mnt/<n>/     images mounted while `get` builds the overlay (unmounted
//!                          right after: the overlay keeps its own references)
//! cache/sandbox-<size>.img blank sandboxes, formatted once and copied sparse per layer
//! ```
//!
//! Serving (`get`): every image in the chain is attached (read-only for everything but the
//! writable top sandbox) and mounted, overlayfs is mounted over them, and the image mounts
//! are detached again, so the overlay is the only mount left and its teardown at the last
//! `put` releases the superblocks and, through autoclear, the loop devices. A single layer
//! is served as its mounted image (or its sandbox's `upper/`). An image layer written
//! through `get` is first turned into a sandbox of the default size (`prepare`).
//!
//! Applying: the parents' images are mounted read-only in a staging directory of their own
//! (the overlay-format lowers the diff engine consults), the layer's current tree is copied
//! out of its image into the apply's staging tree, the tar is applied there, and the tree is
//! turned into a new `layer.img` (`mkfs.ext4 -d`), or, for a container layer, copied into a
//! fresh sandbox. Changes, diffs and sizes against the own parent read the images through
//! detached mounts (nothing appears in the mount table) with the overlay diff engine.

mod attach;
mod image;
mod serve;
mod vhd;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{renameat_with, RenameFlags, CWD};
use tracing::{debug, warn};

use self::attach::{Content, MountGuard, EMPTY_DIR, LAYER_IMG, SANDBOX_IMG};
use super::overlay::pinned::{make_layer_dir, pin_layer_dir, pin_lower, unmount_pinned};
use super::{mkdir_mode, ApplyTarget, Backend};
use crate::archive::apply::Format;
use crate::archive::overlay_changes::overlay_changes;
use crate::archive::ChangeSet;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::options::{DriverOptions, StorageOptions};
use crate::store::{LayerKind, LayerRecord, MountState, Staging, Store};
use crate::sys::mount;

pub use self::image::{DEFAULT_SANDBOX, MIN_SANDBOX};

/// Deepest chain overlayfs stacks.
const MAX_DEPTH: usize = super::overlay::MAX_DEPTH;

/// The block backend.
#[derive(Debug)]
pub struct Block {
    backing: String,
    default_size: u64,
    vhd: bool,
    overlay_options: Vec<(String, String)>,
}

/// The parents' images mounted for an apply; unmounted (then their staging directory
/// removed) when the apply is over.
struct LowerMounts {
    _mounts: Vec<MountGuard>,
    _staging: Staging,
}

fn copy_err(layer: &str) -> impl Fn(crate::archive::Error) -> Error + '_ {
    move |source| Error::Archive {
        layer: layer.to_string(),
        source,
    }
}

fn round_size(size: u64) -> u64 {
    size.div_ceil(4096) * 4096
}

impl Block {
    /// Checks that the block backend can work here (overlayfs, loop devices) and reads its
    /// options: `size` (default sandbox size, 20 GiB without it) and `vhd`.
    pub fn open(root: &Path, options: &DriverOptions) -> Result<Block> {
        if !mount::kernel_has_overlay() {
            return Err(Error::Unsupported(
                "the kernel has no overlayfs (modprobe overlay), which the block backend stacks images with".into(),
            ));
        }
        if !Path::new("/dev/loop-control").exists() {
            return Err(Error::Unsupported(
                "/dev/loop-control is missing (modprobe loop); the block backend attaches images to loop devices".into(),
            ));
        }
        let default_size = round_size(options.size.unwrap_or(DEFAULT_SANDBOX));
        if default_size < MIN_SANDBOX {
            return Err(Error::InvalidOption {
                key: "size".into(),
                reason: format!("a block sandbox needs at least {MIN_SANDBOX} bytes"),
            });
        }
        let mut overlay_options = Vec::new();
        for param in ["index", "redirect_dir", "metacopy"] {
            if Path::new("/sys/module/overlay/parameters")
                .join(param)
                .exists()
            {
                overlay_options.push((param.to_string(), "off".to_string()));
            }
        }
        let (backing, _) = super::backing_fs(root)?;
        Ok(Block {
            backing,
            default_size,
            vhd: options.vhd.unwrap_or(false),
            overlay_options,
        })
    }

    /// The sandbox size of a layer: its `size` storage option, else the driver's default.
    fn sandbox_size(&self, rec: &LayerRecord) -> Result<u64> {
        let size = StorageOptions::parse(&rec.storage_opt)?
            .size
            .map(round_size)
            .unwrap_or(self.default_size);
        if size < MIN_SANDBOX {
            return Err(Error::InvalidOption {
                key: "size".into(),
                reason: format!("a block sandbox needs at least {MIN_SANDBOX} bytes, not {size}"),
            });
        }
        Ok(size)
    }

    /// The cached blank sandbox of `size` bytes, formatted on first use under the store lock
    /// (built aside, then renamed into place). Called without the lock.
    fn template(&self, store: &Store, size: u64) -> Result<PathBuf> {
        let cache = store.root().join("cache");
        let path = image::template_path(&cache, size);
        if path.is_file() {
            return Ok(path);
        }
        let _l = store.lock()?;
        if path.is_file() {
            return Ok(path);
        }
        mkdir_mode(&cache, 0o700)?;
        let work = cache.join(format!(".build-{size}"));
        // Only a crashed build can have left this: builds run under the store lock.
        fsutil::remove_tree(&work).ctx(|| format!("deleting {}", work.display()))?;
        mkdir_mode(&work, 0o700)?;
        let tmp = work.join("sandbox.img");
        let skel = work.join("skel");
        mkdir_mode(&skel, 0o755)?;
        image::format_sandbox(&tmp, size, &skel)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .ctx(|| format!("syncing {}", tmp.display()))?;
        renameat_with(CWD, &tmp, CWD, &path, RenameFlags::NOREPLACE)
            .ctx(|| format!("moving {} into place", path.display()))?;
        let _ = fsutil::remove_tree(&work);
        debug!(size, "formatted a sandbox template");
        Ok(path)
    }

    /// A new blank sandbox of `size` bytes at `dst` (a sparse copy of the template).
    fn new_sandbox(&self, store: &Store, size: u64, dst: &Path) -> Result<()> {
        let template = self.template(store, size)?;
        image::sparse_copy(&template, dst)
    }
}

impl Backend for Block {
    fn name(&self) -> &'static str {
        "block"
    }

    fn supports_size(&self) -> bool {
        true
    }

    fn content_dir(&self, store: &Store, id: &str) -> PathBuf {
        store.layer_dir(id)
    }

    fn create(&self, store: &Store, dir: &Path, chain: &[LayerRecord]) -> Result<()> {
        if chain.len() > MAX_DEPTH {
            return Err(Error::Unsupported(format!(
                "layer {} would be {} layers deep; overlayfs stacks at most {MAX_DEPTH}",
                chain[0].id,
                chain.len()
            )));
        }
        mkdir_mode(&dir.join(EMPTY_DIR), 0o755)?;
        if chain[0].kind == LayerKind::Rw {
            let size = self.sandbox_size(&chain[0])?;
            self.new_sandbox(store, size, &dir.join(SANDBOX_IMG))?;
        }
        Ok(())
    }

    fn prepare(&self, store: &Store, chain: &[LayerRecord]) -> Result<()> {
        let id = &chain[0].id;
        if !store.db().children(id)?.is_empty() {
            return Ok(()); // served read-only: images are fine as they are
        }
        let dir = store.layer_dir(id);
        let content = Content::of(&dir);
        if matches!(content, Content::Sandbox(_)) {
            return Ok(());
        }
        // An image layer about to be written: give it a sandbox holding its tree.
        let _busy = store.busy_guard(id, false, "get")?;
        let staging = store.stage(&format!("sandbox-{id}"))?;
        let sbx = staging.path().join(SANDBOX_IMG);
        self.new_sandbox(store, self.sandbox_size(&chain[0])?, &sbx)?;
        if let Content::Image(_) = &content {
            let (src, dst) = {
                let _l = store.lock()?;
                let src = attach::open_tree_detached(&content, &dir.join(EMPTY_DIR))?;
                (src, attach::open_sandbox_upper(&sbx)?)
            };
            crate::archive::copy::copy_tree(src.as_fd(), dst.as_fd()).map_err(copy_err(id))?;
        }
        std::fs::File::open(&sbx)
            .and_then(|f| f.sync_all())
            .ctx(|| format!("syncing {}", sbx.display()))?;
        let _l = store.lock()?;
        if !dir.is_dir() || dir.join(SANDBOX_IMG).exists() {
            return Ok(()); // removed, or prepared by someone else meanwhile
        }
        renameat_with(
            CWD,
            &sbx,
            CWD,
            dir.join(SANDBOX_IMG),
            RenameFlags::NOREPLACE,
        )
        .ctx(|| format!("moving the sandbox of layer {id} into place"))?;
        if let Content::Image(img) = content {
            if let Err(e) = std::fs::remove_file(&img) {
                warn!(layer = %id, error = %e, "could not delete the image replaced by a sandbox");
            }
        }
        Ok(())
    }

    fn stage_apply(
        &self,
        store: &Store,
        chain: &[LayerRecord],
        staging: &Path,
    ) -> Result<ApplyTarget> {
        let id = &chain[0].id;
        let dir = store.layer_dir(id);
        let lower_staging = store.stage(&format!("lowers-{id}"))?;
        let (mounts, lowers) = {
            let _l = store.lock()?;
            Self::mount_lowers(
                store,
                chain.iter().enumerate().skip(1),
                lower_staging.path(),
            )?
        };
        let tree = staging.join("tree");
        mkdir_mode(&tree, 0o755)?;
        let top = Content::of(&dir);
        if top.image().is_some() {
            let src = {
                let _l = store.lock()?;
                attach::open_tree_detached(&top, &dir.join(EMPTY_DIR))?
            };
            let dst = fsutil::open_dir(&tree).ctx(|| format!("opening {}", tree.display()))?;
            crate::archive::copy::copy_tree(src.as_fd(), dst.as_fd()).map_err(copy_err(id))?;
        }
        Ok(ApplyTarget {
            root: tree,
            format: Format::Overlay,
            lowers,
            hold: Some(Box::new(LowerMounts {
                _mounts: mounts,
                _staging: lower_staging,
            })),
        })
    }

    fn finish_apply(
        &self,
        store: &Store,
        chain: &[LayerRecord],
        staging: &Path,
        target: &ApplyTarget,
    ) -> Result<()> {
        let rec = &chain[0];
        let tree = &target.root;
        if rec.kind == LayerKind::Rw {
            let size = match Content::of(&store.layer_dir(&rec.id)) {
                Content::Sandbox(p) => std::fs::metadata(&p)
                    .ctx(|| format!("stat {}", p.display()))?
                    .len(),
                _ => self.sandbox_size(rec)?,
            };
            let sbx = staging.join(SANDBOX_IMG);
            self.new_sandbox(store, size, &sbx)?;
            let upper = {
                let _l = store.lock()?;
                attach::open_sandbox_upper(&sbx)?
            };
            let src = fsutil::open_dir(tree).ctx(|| format!("opening {}", tree.display()))?;
            crate::archive::copy::copy_tree(src.as_fd(), upper.as_fd()).map_err(|e| {
                Error::Invalid {
                    id: rec.id.clone(),
                    reason: format!("the applied layer does not fit its {size}-byte sandbox: {e}"),
                }
            })?;
            drop(upper);
            std::fs::File::open(&sbx)
                .and_then(|f| f.sync_all())
                .ctx(|| format!("syncing {}", sbx.display()))?;
        } else {
            let scratch = staging.join("mkfs");
            mkdir_mode(&scratch, 0o700)?;
            image::build_layer_image(&rec.id, tree, &staging.join(LAYER_IMG), &scratch, self.vhd)?;
            fsutil::remove_tree(&scratch).ctx(|| format!("deleting {}", scratch.display()))?;
        }
        fsutil::remove_tree(tree).ctx(|| format!("deleting {}", tree.display()))?;
        mkdir_mode(&staging.join(EMPTY_DIR), 0o755)
    }

    fn open_content(&self, store: &Store, id: &str) -> Result<OwnedFd> {
        let dir = store.layer_dir(id);
        let _l = store.lock()?;
        pin_layer_dir(store, id, ".")?;
        attach::open_tree_detached(&Content::of(&dir), &dir.join(EMPTY_DIR))
    }

    fn mount(
        &self,
        store: &Store,
        chain: &[LayerRecord],
        readonly: bool,
        label: &str,
    ) -> Result<MountState> {
        let id = &chain[0].id;
        let dir = store.layer_dir(id);
        let merged = dir.join("merged");
        let mnt = dir.join("mnt");
        // Every layer directory of the chain, and merged/ and empty/, are checked to be
        // reached through no symlink right before they are used (a symlinked image file is
        // refused when it is opened).
        pin_layer_dir(store, id, ".")?;
        for r in &chain[1..] {
            pin_lower(store, id, &r.id, ".")?;
        }
        Self::clear_mnt(&mnt)?;
        make_layer_dir(store, id, EMPTY_DIR, 0o755)?;
        make_layer_dir(store, id, "merged", 0o755)?;
        let top = Content::of(&dir);
        if !readonly && !matches!(top, Content::Sandbox(_)) {
            return Err(Error::Busy {
                id: id.clone(),
                what: "its sandbox is not ready yet; retry".into(),
            });
        }
        let r = if chain.len() == 1 {
            self.mount_single(&top, &dir, &merged, readonly)
        } else {
            self.mount_stack(store, chain, &dir, &merged, readonly, label)
        };
        let _ = std::fs::remove_dir(&mnt);
        r?;
        Ok(MountState {
            path: merged,
            mounted: true,
            readonly,
        })
    }

    fn unmount(&self, store: &Store, layer: &LayerRecord, state: &MountState) -> Result<()> {
        unmount_pinned(store, layer, state)?;
        // Autoclear detaches the devices with the last superblock; this catches stragglers.
        if let Err(e) = attach::release_unused(store.root()) {
            warn!(layer = %layer.id, error = %e, "could not release unused loop devices");
        }
        Ok(())
    }

    fn native_changes(
        &self,
        store: &Store,
        chain: &[LayerRecord],
    ) -> Option<Result<(ChangeSet, OwnedFd)>> {
        let id = &chain[0].id;
        let dir = store.layer_dir(id);
        let top = Content::of(&dir);
        if chain[0].refs > 0 && matches!(top, Content::Sandbox(_)) {
            // Served writable right now: read it through its mount instead.
            return None;
        }
        let run = || -> Result<(ChangeSet, OwnedFd)> {
            let (upper, lowers) = {
                let _l = store.lock()?;
                pin_layer_dir(store, id, ".")?;
                for r in &chain[1..] {
                    pin_lower(store, id, &r.id, ".")?;
                }
                let upper = attach::open_tree_detached(&top, &dir.join(EMPTY_DIR))?;
                let mut lowers = Vec::new();
                for r in &chain[1..] {
                    let d = store.layer_dir(&r.id);
                    let c = Content::of(&d);
                    if c.image().is_some() {
                        lowers.push(attach::open_tree_detached(&c, &d.join(EMPTY_DIR))?);
                    }
                }
                (upper, lowers)
            };
            let fds: Vec<_> = lowers.iter().map(|f| f.as_fd()).collect();
            let list = overlay_changes(upper.as_fd(), &fds).map_err(copy_err(id))?;
            Ok((list, upper))
        };
        Some(run())
    }

    fn reconcile(&self, store: &Store) -> Result<()> {
        let _l = store.lock()?;
        attach::release_unused(store.root())?;
        Ok(())
    }

    fn sweep(&self, store: &Store) -> Result<()> {
        attach::release_unused(store.root())?;
        Ok(())
    }

    fn resize(&self, store: &Store, chain: &[LayerRecord], size: u64) -> Result<()> {
        let id = &chain[0].id;
        let Content::Sandbox(img) = Content::of(&store.layer_dir(id)) else {
            return Err(Error::Unsupported(format!(
                "cannot resize layer {id:?}: it is a read-only image layer; only writable layers (create --rw, or image layers written through get) have a sandbox to grow"
            )));
        };
        let current = std::fs::metadata(&img)
            .ctx(|| format!("stat {}", img.display()))?
            .len();
        let size = round_size(size);
        if size < current {
            return Err(Error::Invalid {
                id: id.clone(),
                reason: format!(
                    "shrinking a sandbox is not supported: it is {current} bytes and {size} were asked for; sandboxes can only grow"
                ),
            });
        }
        if size == current {
            return Ok(());
        }
        image::check_and_repair(&img)?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&img)
            .ctx(|| format!("opening {}", img.display()))?;
        f.set_len(size)
            .ctx(|| format!("growing {}", img.display()))?;
        if let Err(e) = image::grow_fs(&img) {
            let _ = f.set_len(current);
            return Err(e);
        }
        f.sync_all().ctx(|| format!("syncing {}", img.display()))
    }

    fn metadata(&self, store: &Store, chain: &[LayerRecord]) -> BTreeMap<String, String> {
        let dir = store.layer_dir(&chain[0].id);
        let mut m = BTreeMap::new();
        let content = Content::of(&dir);
        let format = match &content {
            Content::Image(_) => "ext4 image",
            Content::Sandbox(_) => "ext4 sandbox",
            Content::Empty => "empty",
        };
        m.insert("Format".into(), format.into());
        if let Some(img) = content.image() {
            m.insert("Image".into(), img.display().to_string());
            if let Ok(f) = std::fs::File::open(img) {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let disk = vhd::disk_size(&f).ok().flatten();
                m.insert("Size".into(), disk.unwrap_or(len).to_string());
                m.insert("VHD".into(), disk.is_some().to_string());
            }
        }
        m.insert("MergedDir".into(), dir.join("merged").display().to_string());
        m
    }

    fn status(&self, store: &Store) -> Vec<(String, String)> {
        let cache = store.root().join("cache");
        let mut templates: Vec<String> = std::fs::read_dir(&cache)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.strip_prefix("sandbox-")
                            .and_then(|s| s.strip_suffix(".img"))
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        templates.sort();
        vec![
            ("Backing Filesystem".into(), self.backing.clone()),
            (
                "Layer Format".into(),
                "ext4 images on loop devices, overlayfs".into(),
            ),
            ("Default Sandbox Size".into(), self.default_size.to_string()),
            ("VHD Footers".into(), self.vhd.to_string()),
            ("Sandbox Templates".into(), templates.join(",")),
            (
                "Attached Loop Devices".into(),
                attach::count_attached(store.root()).to_string(),
            ),
        ]
    }
}
