//! The `overlay` backend: kernel overlayfs plays the role of Windows' filter driver.
//!
//! ```text
//! layers/<id>/diff/    the layer's own changes, in overlay format (whiteouts are 0:0 devices,
//!                      opaque directories carry trusted.overlay.opaque=y)
//! layers/<id>/work/    overlay's work directory (layers with a parent)
//! layers/<id>/merged/  mount point while the layer is served through a mount
//! ```
//!
//! Serving (`get`): a layer without a parent is its `diff/` directly; a layer with parents is
//! an overlay mount with `diff/` as upper directory over the parents' `diff/`s. Once a layer
//! has children it is served read-only: its `diff/` becomes one more lower directory (or, with
//! no parents, a read-only bind mount). Mounts go through the new mount API, one `lowerdir+`
//! per layer, so depth is limited by the kernel rather than by a page of mount options.
//! Applies write straight into a staged copy of `diff/`: no mount is needed to apply a layer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::quota::Quotas;
use super::{copy_dir, mkdir_mode, ApplyTarget, Backend};
use std::os::fd::AsFd;

use crate::archive::apply::Format;
use crate::archive::overlay_changes::overlay_changes;
use crate::archive::ChangeSet;
use crate::error::{Error, IoContext, Result};
use crate::options::DriverOptions;
use crate::store::{LayerRecord, MountState, Store};
use crate::sys::mount::{self, OverlaySpec};

/// The overlay backend.
#[derive(Debug)]
pub struct Overlay {
    backing: String,
    options: Vec<(String, String)>,
    /// Changes and diffs are computed from `diff/` directly.
    native: bool,
    /// Why `native` is what it is, for `status`.
    native_reason: String,
    quota: Quotas,
}

/// The deepest chain overlay serves: the number of layers in a chain, the layer itself
/// included. It is the kernel's maximum number of lower directories (`OVL_MAX_STACK`), so every
/// layer of an accepted chain mounts both writable (at most 499 lower directories under its
/// own upper one) and read-only (one lower directory per layer). `create` refuses a deeper
/// layer.
pub const MAX_DEPTH: usize = 500;

fn has_param(name: &str) -> bool {
    Path::new("/sys/module/overlay/parameters")
        .join(name)
        .exists()
}

/// Whether directory entries under `dir` report their type (overlayfs requires it).
fn supports_d_type(dir: &Path) -> Result<bool> {
    let probe = dir.join(format!(".d_type-probe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&probe);
    std::fs::create_dir(&probe).ctx(|| format!("creating {}", probe.display()))?;
    let result = (|| {
        std::fs::write(probe.join("f"), b"").ctx(|| "writing a probe file".into())?;
        let fd = crate::fsutil::open_dir(&probe).ctx(|| "opening the probe directory".into())?;
        for e in rustix::fs::Dir::read_from(&fd).ctx(|| "listing the probe directory".into())? {
            let e = e.ctx(|| "listing the probe directory".into())?;
            if e.file_name().to_bytes() == b"f" {
                return Ok(e.file_type() != rustix::fs::FileType::Unknown);
            }
        }
        Ok(false)
    })();
    let _ = std::fs::remove_dir_all(&probe);
    result
}

/// `p` relative to `root` when it lies below it (mounts resolve it from a thread whose working
/// directory is `root`).
fn relative_to(root: &Path, p: &Path) -> PathBuf {
    p.strip_prefix(root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| p.to_path_buf())
}

impl Overlay {
    /// Checks that overlay can work for a store at `root` (overlayfs available, backing
    /// filesystem not overlayfs and with `d_type`), picks mount options and probes quotas.
    pub fn open(root: &Path, driver_options: &DriverOptions) -> Result<Overlay> {
        if !mount::kernel_has_overlay() {
            return Err(Error::Unsupported(
                "the kernel has no overlayfs (modprobe overlay), use --driver vfs".into(),
            ));
        }
        let (backing, _) = super::backing_fs(root)?;
        if backing == "overlayfs" {
            return Err(Error::Unsupported(format!(
                "{} is on overlayfs, which cannot be an overlay upper layer; put the store on ext4/xfs/btrfs or use --driver vfs",
                root.display()
            )));
        }
        if !supports_d_type(root)? {
            return Err(Error::Unsupported(format!(
                "{} is on a {backing} filesystem without d_type support, which overlayfs requires; reformat (xfs: ftype=1) or use --driver vfs",
                root.display()
            )));
        }
        let mut options = Vec::new();
        // Features that make overlay's on-disk state depend on history are turned off, so
        // a layer's diff/ always means the same thing.
        for (param, key) in [
            ("index", "index"),
            ("redirect_dir", "redirect_dir"),
            ("metacopy", "metacopy"),
        ] {
            if has_param(param) {
                options.push((key.to_string(), "off".to_string()));
            }
        }
        // With no redirects and no metadata-only copy-ups a layer's diff/ is a complete
        // record of its changes, which is what makes native diff exact.
        let (native, native_reason) = match driver_options.native_diff {
            Some(false) => (false, "disabled by native_diff=false".to_string()),
            _ => (
                true,
                "redirect_dir and metacopy are off on strata's mounts; diffs are read from diff/"
                    .to_string(),
            ),
        };
        Ok(Overlay {
            backing,
            options,
            native,
            native_reason,
            quota: Quotas::open(root, "overlay", driver_options)?,
        })
    }

    fn diff(store: &Store, id: &str) -> PathBuf {
        store.layer_dir(id).join("diff")
    }

    /// `l/<26 characters>`: a short, stable name for a layer's `diff/` (base32 of the
    /// sha256 of its id), for the classic mount's one page of options.
    fn short_link(id: &str) -> String {
        use sha2::{Digest, Sha256};
        const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        let digest = Sha256::digest(id.as_bytes());
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = String::from("l/");
        for b in digest.iter() {
            bits = (bits << 8) | *b as u32;
            n += 8;
            while n >= 5 && out.len() < 28 {
                n -= 5;
                out.push(ALPHABET[((bits >> n) & 31) as usize] as char);
            }
        }
        out
    }

    /// Deepest chain the classic mount fits in a page (a writable top layer, the longest case).
    fn classic_max_depth(&self) -> usize {
        let page = rustix::param::page_size();
        let probe = |depth: usize| OverlaySpec {
            lowers: vec![PathBuf::from(Self::short_link("x")); depth],
            upper: Some((
                PathBuf::from(format!("layers/{}/diff", "x".repeat(128))),
                PathBuf::from(format!("layers/{}/work", "x".repeat(128))),
            )),
            options: self.options.clone(),
            ..OverlaySpec::default()
        };
        (1..MAX_DEPTH)
            .take_while(|d| mount::classic_options_len(&probe(*d)) < page)
            .last()
            .unwrap_or(1)
    }

    /// Mounts with classic `mount(2)`: lowers as `l/<short>` symlinks, every path relative to
    /// the store root.
    fn mount_classic(
        &self,
        store: &Store,
        chain: &[LayerRecord],
        merged: &Path,
        mut spec: OverlaySpec,
    ) -> Result<()> {
        let id = &chain[0].id;
        let links = store.root().join("l");
        mkdir_mode(&links, 0o700)?;
        let relative = |p: &Path| relative_to(store.root(), p);
        let mut lowers = Vec::with_capacity(spec.lowers.len());
        for lower in &spec.lowers {
            let lid = lower
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let short = Self::short_link(&lid);
            let link = store.root().join(&short);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("../layers/{lid}/diff"), &link)
                    .ctx(|| format!("creating {}", link.display()))?;
            }
            lowers.push(PathBuf::from(short));
        }
        spec.lowers = lowers;
        spec.upper = spec.upper.map(|(u, w)| (relative(&u), relative(&w)));
        let page = rustix::param::page_size();
        if mount::classic_options_len(&spec) >= page {
            let why = if mount::overlay_supports_lowerdir_plus() {
                "STRATA_MOUNT_API=classic forces mount(2)"
            } else {
                "this kernel has no lowerdir+ (Linux 6.8+)"
            };
            return Err(Error::Unsupported(format!(
                "layer {id} is {} layers deep; {why}, and mount(2) fits at most {} layers",
                chain.len(),
                self.classic_max_depth()
            )));
        }
        mount::mount_overlay_classic_in(store.root(), merged, &spec)
            .ctx(|| format!("mounting layer {id} ({} layers, mount(2))", chain.len()))
    }
}

impl Backend for Overlay {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn content_dir(&self, store: &Store, id: &str) -> PathBuf {
        Self::diff(store, id)
    }

    fn supports_size(&self) -> bool {
        true
    }

    fn create(&self, _store: &Store, dir: &Path, chain: &[LayerRecord]) -> Result<()> {
        if chain.len() > MAX_DEPTH {
            return Err(Error::Unsupported(format!(
                "layer {} would be {} layers deep; overlayfs stacks at most {MAX_DEPTH} layers",
                chain[0].id,
                chain.len()
            )));
        }
        self.quota.on_create(dir, &chain[0])?;
        mkdir_mode(&dir.join("diff"), 0o755)?;
        if chain.len() > 1 {
            mkdir_mode(&dir.join("work"), 0o700)?;
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
        self.quota.inherit(&store.layer_dir(id), staging)?;
        let root = staging.join("diff");
        mkdir_mode(&root, 0o755)?;
        copy_dir(id, &Self::diff(store, id), &root)?;
        if chain.len() > 1 {
            mkdir_mode(&staging.join("work"), 0o700)?;
        }
        Ok(ApplyTarget {
            root,
            format: Format::Overlay,
            lowers: chain[1..]
                .iter()
                .map(|r| Self::diff(store, &r.id))
                .collect(),
            hold: None,
        })
    }

    fn mount(
        &self,
        store: &Store,
        chain: &[LayerRecord],
        readonly: bool,
        label: &str,
    ) -> Result<MountState> {
        let id = &chain[0].id;
        let diff = Self::diff(store, id);
        if !readonly && chain.len() == 1 {
            return Ok(MountState {
                path: diff,
                mounted: false,
                readonly: false,
            });
        }
        let merged = store.layer_dir(id).join("merged");
        mkdir_mode(&merged, 0o700)?;
        if chain.len() == 1 {
            mount::bind_readonly(&diff, &merged)
                .ctx(|| format!("mounting layer {id} read-only"))?;
        } else {
            let parents = chain[1..].iter().map(|r| Self::diff(store, &r.id));
            let mut spec = OverlaySpec {
                options: self.options.clone(),
                label: (!label.is_empty() && mount::selinux_enabled()).then(|| label.to_string()),
                ..OverlaySpec::default()
            };
            if readonly {
                spec.lowers = std::iter::once(diff).chain(parents).collect();
            } else {
                spec.lowers = parents.collect();
                let work = store.layer_dir(id).join("work");
                mkdir_mode(&work, 0o700)?;
                spec.upper = Some((diff, work));
            }
            if mount::use_new_mount_api() {
                // Relative to the root: fsconfig takes at most 255 bytes per path.
                let rel = |p: &Path| relative_to(store.root(), p);
                spec.lowers = spec.lowers.iter().map(|p| rel(p)).collect();
                spec.upper = spec.upper.map(|(u, w)| (rel(&u), rel(&w)));
                mount::mount_overlay_in(store.root(), &merged, &spec)
                    .ctx(|| format!("mounting layer {id} ({} layers)", chain.len()))?;
            } else {
                self.mount_classic(store, chain, &merged, spec)?;
            }
        }
        Ok(MountState {
            path: merged,
            mounted: true,
            readonly,
        })
    }

    fn sweep(&self, store: &Store) -> Result<()> {
        self.quota.sweep()?;
        // Short links of removed layers (classic mounts) point nowhere now.
        let links = store.root().join("l");
        let Ok(entries) = std::fs::read_dir(&links) else {
            return Ok(());
        };
        for e in entries.flatten() {
            if std::fs::metadata(e.path()).is_err() {
                std::fs::remove_file(e.path())
                    .ctx(|| format!("removing {}", e.path().display()))?;
            }
        }
        Ok(())
    }

    fn native_changes(
        &self,
        store: &Store,
        chain: &[LayerRecord],
    ) -> Option<Result<(ChangeSet, std::os::fd::OwnedFd)>> {
        if !self.native {
            return None;
        }
        let run = || -> Result<(ChangeSet, std::os::fd::OwnedFd)> {
            let id = &chain[0].id;
            let diff = Self::diff(store, id);
            let upper =
                crate::fsutil::open_dir(&diff).ctx(|| format!("opening {}", diff.display()))?;
            let mut lowers = Vec::with_capacity(chain.len() - 1);
            for r in &chain[1..] {
                let p = Self::diff(store, &r.id);
                lowers
                    .push(crate::fsutil::open_dir(&p).ctx(|| format!("opening {}", p.display()))?);
            }
            let fds: Vec<_> = lowers.iter().map(|f| f.as_fd()).collect();
            let list = overlay_changes(upper.as_fd(), &fds).map_err(|source| Error::Archive {
                layer: id.clone(),
                source,
            })?;
            Ok((list, upper))
        };
        Some(run())
    }

    fn metadata(&self, store: &Store, chain: &[LayerRecord]) -> BTreeMap<String, String> {
        let id = &chain[0].id;
        let dir = store.layer_dir(id);
        let mut m = BTreeMap::new();
        m.insert("UpperDir".into(), dir.join("diff").display().to_string());
        if chain.len() > 1 {
            let lowers: Vec<String> = chain[1..]
                .iter()
                .map(|r| Self::diff(store, &r.id).display().to_string())
                .collect();
            m.insert("LowerDir".into(), lowers.join(":"));
            m.insert("WorkDir".into(), dir.join("work").display().to_string());
            m.insert("MergedDir".into(), dir.join("merged").display().to_string());
        }
        self.quota.metadata(&dir, &mut m);
        m
    }

    fn status(&self, _store: &Store) -> Vec<(String, String)> {
        let api = if mount::use_new_mount_api() {
            format!("fsopen/fsconfig lowerdir+ (max depth {MAX_DEPTH})")
        } else {
            format!(
                "mount(2) with short paths (max depth {})",
                self.classic_max_depth()
            )
        };
        vec![
            ("Backing Filesystem".into(), self.backing.clone()),
            ("Supports d_type".into(), "true".into()),
            (
                "Native Overlay Diff".into(),
                format!("{} ({})", self.native, self.native_reason),
            ),
            ("Using metacopy".into(), "false".into()),
            ("Mount API".into(), api),
            self.quota.status(),
        ]
    }
}
