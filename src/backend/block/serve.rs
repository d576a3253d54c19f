//! Serving a block layer: mounting its chain of images and stacking them with overlayfs.

use std::path::{Path, PathBuf};

use super::attach::{self, Content, MountGuard, EMPTY_DIR};
use super::Block;
use crate::backend::mkdir_mode;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::store::{LayerRecord, Store};
use crate::sys::mount::{self, OverlaySpec};

impl Block {
    /// Mounts the images of `layers` (index, record) read-only under `dir/<index>`; returns
    /// the guards and the overlay lower directories, nearest first. Empty layers are skipped.
    pub(super) fn mount_lowers<'a>(
        store: &Store,
        layers: impl Iterator<Item = (usize, &'a LayerRecord)>,
        dir: &Path,
    ) -> Result<(Vec<MountGuard>, Vec<PathBuf>)> {
        let mut guards = Vec::new();
        let mut lowers = Vec::new();
        for (i, r) in layers {
            // The image is opened by path: its layer directory must be reached through no
            // symlink.
            crate::backend::overlay::pinned::pin_layer_dir(store, &r.id, ".")?;
            let c = Content::of(&store.layer_dir(&r.id));
            let Some(img) = c.image() else { continue };
            let t = dir.join(i.to_string());
            let g = attach::mount_at(img, &t, true)?;
            lowers.push(match c {
                Content::Sandbox(_) => t.join("upper"),
                _ => t,
            });
            guards.push(g);
        }
        Ok((guards, lowers))
    }

    /// Unmounts and deletes what an interrupted `get` left in `mnt`.
    pub(super) fn clear_mnt(mnt: &Path) -> Result<()> {
        if std::fs::symlink_metadata(mnt).is_err() {
            return Ok(());
        }
        let table = crate::sys::mountinfo::read().ctx(|| "reading /proc/self/mountinfo".into())?;
        for m in crate::sys::mountinfo::mounts_under(&table, mnt) {
            mount::unmount(&m.mount_point)
                .ctx(|| format!("unmounting {}", m.mount_point.display()))?;
        }
        fsutil::remove_tree(mnt).ctx(|| format!("deleting {}", mnt.display()))
    }

    /// Serves a layer without parents at `merged`: its image mounted, its sandbox's `upper/`
    /// bound, or its empty directory bound read-only.
    pub(super) fn mount_single(
        &self,
        top: &Content,
        dir: &Path,
        merged: &Path,
        readonly: bool,
    ) -> Result<()> {
        match top {
            Content::Image(img) => attach::mount_at(img, merged, true).map(MountGuard::keep),
            Content::Empty => mount::bind_readonly(&dir.join(EMPTY_DIR), merged)
                .ctx(|| format!("mounting {} read-only", merged.display())),
            Content::Sandbox(img) => {
                let mnt = dir.join("mnt");
                mkdir_mode(&mnt, 0o700)?;
                let g = attach::mount_at(img, &mnt.join("0"), readonly)?;
                let upper = g.path().join("upper");
                let r = if readonly {
                    mount::bind_readonly(&upper, merged)
                } else {
                    mount::bind(&upper, merged)
                };
                r.ctx(|| format!("mounting {} at {}", upper.display(), merged.display()))
            }
        }
    }

    /// Serves a layer with parents at `merged`: the chain's images mounted under `mnt/`,
    /// overlayfs over them (with the top sandbox as upper layer when writable), then the
    /// image mounts detached.
    pub(super) fn mount_stack(
        &self,
        store: &Store,
        chain: &[LayerRecord],
        dir: &Path,
        merged: &Path,
        readonly: bool,
        label: &str,
    ) -> Result<()> {
        let mnt = dir.join("mnt");
        mkdir_mode(&mnt, 0o700)?;
        let skip = usize::from(!readonly);
        let (mut guards, mut lowers) =
            Self::mount_lowers(store, chain.iter().enumerate().skip(skip), &mnt)?;
        let mut upper = None;
        if !readonly {
            let Content::Sandbox(img) = Content::of(dir) else {
                return Err(Error::Busy {
                    id: chain[0].id.clone(),
                    what: "its sandbox is not ready yet; retry".into(),
                });
            };
            let g = attach::mount_at(&img, &mnt.join("0"), false)?;
            upper = Some((g.path().join("upper"), g.path().join("work")));
            guards.push(g);
        }
        let empty = dir.join(EMPTY_DIR);
        if lowers.is_empty() {
            lowers.push(empty.clone());
        }
        if upper.is_none() && lowers.len() == 1 {
            // overlayfs wants two lower layers when there is no upper one.
            lowers.push(empty);
        }
        let mut spec = OverlaySpec {
            lowers,
            upper,
            options: self.overlay_options.clone(),
            label: (!label.is_empty() && mount::selinux_enabled()).then(|| label.to_string()),
        };
        let id = &chain[0].id;
        // Paths relative to the store root: the kernel takes at most 255 bytes per option.
        let rel = |p: &PathBuf| {
            p.strip_prefix(dir)
                .map(Path::to_path_buf)
                .unwrap_or_else(|_| p.clone())
        };
        spec.lowers = spec.lowers.iter().map(rel).collect();
        spec.upper = spec.upper.as_ref().map(|(u, w)| (rel(u), rel(w)));
        let r = if mount::use_new_mount_api() {
            mount::mount_overlay_in(dir, merged, &spec)
        } else {
            mount::mount_overlay_classic_in(dir, merged, &spec)
        };
        r.ctx(|| format!("mounting layer {id} ({} layers)", chain.len()))?;
        // The overlay holds its own references to the image mounts; detach ours.
        drop(guards);
        Ok(())
    }
}
