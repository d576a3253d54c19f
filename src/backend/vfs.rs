//! The `vfs` backend: every layer is a complete directory tree (`layers/<id>/fs`), a copy of
//! its parent plus its own changes. It works on any filesystem and needs no mounts, except a
//! read-only bind mount to serve a layer that has children.
//!
//! Copies are lazy: a layer created on a parent gets its tree only when something needs it
//! (the first `get`, or an apply, which copies the parent straight into its staging
//! directory). `create` + `apply-diff` — what an image pull does — therefore copies the parent
//! once, not twice. A layer without `fs/` is identical to its nearest ancestor that has one:
//! ancestors are frozen once they have children.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rustix::fs::{renameat_with, RenameFlags, CWD};
use tracing::warn;

use std::os::fd::AsFd;

use super::overlay::pinned::{copy_layer_dir, make_layer_dir, pin_layer_dir, unmount_pinned};
use super::quota::Quotas;
use super::{mkdir_mode, ApplyTarget, Backend};
use crate::archive::apply::Format;
use crate::error::{Error, IoContext, Result};
use crate::options::DriverOptions;
use crate::store::{LayerRecord, MountState, Store};
use crate::sys::mount;

/// The vfs backend.
#[derive(Debug)]
pub struct Vfs {
    quota: Quotas,
}

impl Vfs {
    /// A vfs backend for the store at `root`.
    pub fn open(root: &Path, options: &DriverOptions) -> Result<Self> {
        Ok(Vfs {
            quota: Quotas::open(root, "vfs", options)?,
        })
    }

    fn fs_dir(store: &Store, id: &str) -> PathBuf {
        store.layer_dir(id).join("fs")
    }

    /// The layer whose tree the layer would have if it were materialised now: its own, or its
    /// nearest materialised ancestor's; `None` for an empty tree. A `fs` that is not a real
    /// directory (a symlink) counts as present, so that copying from it is refused.
    fn source<'a>(store: &Store, chain: &'a [LayerRecord]) -> Option<&'a str> {
        chain
            .iter()
            .find(|r| std::fs::symlink_metadata(Self::fs_dir(store, &r.id)).is_ok())
            .map(|r| r.id.as_str())
    }

    /// Fills `dst` (an empty directory) with the layer's current tree.
    fn fill(store: &Store, chain: &[LayerRecord], dst: &Path) -> Result<()> {
        match Self::source(store, chain) {
            Some(src) => copy_layer_dir(store, &chain[0].id, src, "fs", dst),
            None => mkdir_mode(dst, 0o755),
        }
    }
}

impl Backend for Vfs {
    fn name(&self) -> &'static str {
        "vfs"
    }

    fn content_dir(&self, store: &Store, id: &str) -> PathBuf {
        Self::fs_dir(store, id)
    }

    fn supports_size(&self) -> bool {
        true
    }

    fn create(&self, _store: &Store, dir: &Path, chain: &[LayerRecord]) -> Result<()> {
        self.quota.on_create(dir, &chain[0])?;
        if chain.len() == 1 {
            mkdir_mode(&dir.join("fs"), 0o755)?;
        }
        Ok(())
    }

    fn prepare(&self, store: &Store, chain: &[LayerRecord]) -> Result<()> {
        let id = &chain[0].id;
        let target = Self::fs_dir(store, id);
        if target.is_dir() {
            return Ok(());
        }
        let staging = store.stage(&format!("copy-{id}"))?;
        self.quota.inherit(&store.layer_dir(id), staging.path())?;
        let tree = staging.path().join("fs");
        mkdir_mode(&tree, 0o755)?;
        Self::fill(store, &chain[1..], &tree)?;
        let _l = store.lock()?;
        if target.is_dir() || !store.layer_dir(id).is_dir() {
            return Ok(()); // materialised meanwhile, or removed: the staging copy is dropped
        }
        renameat_with(CWD, &tree, CWD, &target, RenameFlags::NOREPLACE)
            .ctx(|| format!("moving the copy of layer {id} into place"))?;
        Ok(())
    }

    fn stage_apply(
        &self,
        store: &Store,
        chain: &[LayerRecord],
        staging: &Path,
    ) -> Result<ApplyTarget> {
        self.quota
            .inherit(&store.layer_dir(&chain[0].id), staging)?;
        let root = staging.join("fs");
        if Self::source(store, chain).is_some() {
            mkdir_mode(&root, 0o755)?;
        }
        Self::fill(store, chain, &root)?;
        Ok(ApplyTarget {
            root,
            format: Format::Naive,
            lowers: Vec::new(),
            hold: None,
        })
    }

    fn mount(
        &self,
        store: &Store,
        chain: &[LayerRecord],
        readonly: bool,
        _label: &str,
    ) -> Result<MountState> {
        let id = &chain[0].id;
        let fs = Self::fs_dir(store, id);
        // fs/ and merged/ are pinned beneath the root through no symlink before use.
        let fs_fd = match pin_layer_dir(store, id, "fs") {
            Ok(fd) => fd,
            Err(_) if std::fs::symlink_metadata(&fs).is_err() => {
                return Err(Error::Busy {
                    id: id.clone(),
                    what: "its tree is not copied yet; retry".into(),
                })
            }
            Err(e) => return Err(e),
        };
        if !readonly {
            return Ok(MountState {
                path: fs,
                mounted: false,
                readonly: false,
            });
        }
        let merged = store.layer_dir(id).join("merged");
        let merged_fd = make_layer_dir(store, id, "merged", 0o700)?;
        match mount::bind_readonly_at(fs_fd.as_fd(), merged_fd.as_fd()) {
            Ok(()) => Ok(MountState {
                path: merged,
                mounted: true,
                readonly: true,
            }),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                warn!(layer = %id, "cannot bind-mount here; serving the layer writable");
                Ok(MountState {
                    path: fs,
                    mounted: false,
                    readonly: false,
                })
            }
            Err(e) => Err(Error::io(format!("mounting layer {id} read-only"), e)),
        }
    }

    fn unmount(&self, store: &Store, layer: &LayerRecord, state: &MountState) -> Result<()> {
        unmount_pinned(store, layer, state)
    }

    fn metadata(&self, store: &Store, chain: &[LayerRecord]) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert(
            "Dir".into(),
            Self::fs_dir(store, &chain[0].id).display().to_string(),
        );
        self.quota.metadata(&store.layer_dir(&chain[0].id), &mut m);
        m
    }

    fn status(&self, store: &Store) -> Vec<(String, String)> {
        let fs = super::backing_fs(store.root())
            .map(|f| f.0)
            .unwrap_or_else(|_| "unknown".into());
        vec![("Backing Filesystem".into(), fs), self.quota.status()]
    }

    fn sweep(&self, _store: &Store) -> Result<()> {
        self.quota.sweep()
    }
}
