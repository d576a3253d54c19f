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
//!
//! Nothing in the store is reached through a symlink: every directory a mount uses (the layer
//! directories, `diff/`, `work/`, `merged/`, the parents' `diff/`) is pinned beneath the root
//! with `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)` right before the mount and handed to
//! the kernel as its descriptor (see `pinned.rs`); classic mounts check each `l/` link first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::quota::Quotas;
use super::{mkdir_mode, ApplyTarget, Backend};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::archive::apply::Format;
use crate::archive::overlay_changes::overlay_changes;
use crate::archive::ChangeSet;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::options::DriverOptions;
use crate::store::{LayerRecord, MountState, Store};
use crate::sys::mount::{self, OverlaySpec};

pub(crate) mod pinned;

use self::pinned::{
    copy_layer_dir, make_layer_dir, pin_layer_dir, pin_lower, refuse, unmount_pinned,
};

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

/// The most lower directories one overlay mount takes: the kernel's `OVL_MAX_STACK`. A writable
/// mount's upper directory is not one of them.
pub const MAX_LOWERS: usize = 500;

/// The deepest chain overlay serves: the number of layers in a chain, the layer itself
/// included. A layer without children is served writable, its own `diff/` the upper directory
/// over [`MAX_LOWERS`] parents; a layer with children is served read-only, every layer of its
/// chain a lower directory — and its chain is at most [`MAX_LOWERS`] long, because its child's
/// is at most this. So every layer of an accepted chain mounts; `create` refuses a deeper layer
/// (it could never be served: it would need more lower directories than the kernel takes).
pub const MAX_DEPTH: usize = MAX_LOWERS + 1;

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

impl Overlay {
    /// Checks that overlay can work for a store at `root` (overlayfs available, backing
    /// filesystem not overlayfs and with `d_type`), picks mount options and probes quotas.
    /// The `d_type` result comes from `probes` when it holds one; otherwise it is probed
    /// (which creates and deletes a directory) and recorded there when `may_probe`, and not
    /// checked at all otherwise (a read-only open mounts nothing).
    pub fn open(
        root: &Path,
        driver_options: &DriverOptions,
        probes: &mut super::Probes,
        may_probe: bool,
    ) -> Result<Overlay> {
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
        if probes.d_type.is_none() && may_probe {
            probes.d_type = Some(supports_d_type(root)?);
        }
        if probes.d_type == Some(false) {
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

    /// Why strata's mounts never use metacopy: what was probed at open, not an assumption.
    fn metacopy_status(&self) -> String {
        if self
            .options
            .iter()
            .any(|(k, v)| k == "metacopy" && v == "off")
        {
            "false (metacopy=off on every mount)".into()
        } else {
            "false (this kernel's overlayfs has no metacopy)".into()
        }
    }

    /// Deepest chain, in layers, that the classic mount fits in a page for any ids: a writable
    /// top layer (its upper and work directories) over one short lower link per parent. (Served read-only, the same chain needs less: no upper, no work.)
    fn classic_max_depth(&self) -> usize {
        let page = rustix::param::page_size();
        let probe = |lowers: usize| OverlaySpec {
            lowers: vec![PathBuf::from(Self::short_link("x")); lowers],
            // Upper and work are passed as the `/proc/self/fd` paths of pinned descriptors
            // (see `mount_classic`), whatever the ids: the widest descriptor number sizes it.
            upper: Some((
                PathBuf::from(format!("/proc/self/fd/{}", i32::MAX)),
                PathBuf::from(format!("/proc/self/fd/{}", i32::MAX)),
            )),
            options: self.options.clone(),
            ..OverlaySpec::default()
        };
        let lowers = (1..=MAX_LOWERS)
            .take_while(|n| mount::classic_options_len(&probe(*n)) < page)
            .last()
            .unwrap_or(1);
        lowers + 1
    }

    /// Mounts with classic `mount(2)` on `merged`: lowers as `l/<short>` links (one page of
    /// options must hold them all), upper and work (when writable) as the `/proc/self/fd`
    /// paths of their pinned directories. Every link is
    /// checked right before the mount to point at its layer's `diff/`, itself reached through
    /// no symlink; `l/` itself must be a real directory.
    fn mount_classic(
        &self,
        store: &Store,
        chain: &[LayerRecord],
        merged: BorrowedFd<'_>,
        upper: Option<(OwnedFd, OwnedFd)>,
        mut spec: OverlaySpec,
    ) -> Result<()> {
        let id = &chain[0].id;
        let root = store.root();
        let links = fsutil::mkdir_beneath(root, Path::new("l"), 0o700)
            .map_err(|e| refuse(id, &root.join("l"), e))?;
        let mut lowers = Vec::with_capacity(chain.len());
        let own = upper.is_none().then_some(id);
        for lid in own.into_iter().chain(chain[1..].iter().map(|r| &r.id)) {
            let link =
                Self::checked_link(root, links.as_fd(), lid).map_err(|e| match lid == id {
                    true => e,
                    false => Error::Invalid {
                        id: id.to_string(),
                        reason: format!("its parent layer {lid:?}: {e}"),
                    },
                })?;
            lowers.push(PathBuf::from(link));
        }
        spec.lowers = lowers;
        if let Some((diff, work)) = &upper {
            spec.upper = Some((fsutil::fd_path(diff.as_fd()), fsutil::fd_path(work.as_fd())));
        }
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
        mount::mount_overlay_classic_at(root, merged, &spec)
            .ctx(|| format!("mounting layer {id} ({} layers, mount(2))", chain.len()))
    }

    /// Mounts with the new mount API on `merged`, every layer directory passed as the
    /// `/proc/self/fd` path of a descriptor pinned beneath the root.
    fn mount_pinned(
        &self,
        store: &Store,
        chain: &[LayerRecord],
        merged: BorrowedFd<'_>,
        diff: OwnedFd,
        work: Option<OwnedFd>,
        mut spec: OverlaySpec,
    ) -> Result<()> {
        let id = &chain[0].id;
        let mut pinned = Vec::with_capacity(chain.len());
        for r in &chain[1..] {
            pinned.push(pin_lower(store, id, &r.id, "diff")?);
        }
        let paths = |fds: &[OwnedFd]| -> Vec<PathBuf> {
            fds.iter().map(|f| fsutil::fd_path(f.as_fd())).collect()
        };
        match &work {
            Some(work) => {
                spec.lowers = paths(&pinned);
                spec.upper = Some((fsutil::fd_path(diff.as_fd()), fsutil::fd_path(work.as_fd())));
            }
            None => {
                pinned.insert(0, diff);
                spec.lowers = paths(&pinned);
            }
        }
        mount::mount_overlay_at(merged, &spec)
            .ctx(|| format!("mounting layer {id} ({} layers)", chain.len()))
    }

    /// `l/<short>` of layer `lid`, created if missing, after checking that it is a symlink to
    /// exactly `../layers/<lid>/diff` and that this directory is reached through no symlink.
    fn checked_link(root: &Path, links: BorrowedFd<'_>, lid: &str) -> Result<String> {
        let short = Self::short_link(lid);
        let name = &short["l/".len()..];
        let want = format!("../layers/{lid}/diff");
        let diff = PathBuf::from("layers").join(lid).join("diff");
        fsutil::pin_dir_beneath(root, &diff).map_err(|e| refuse(lid, &root.join(&diff), e))?;
        match rustix::fs::readlinkat(links, name, Vec::new()) {
            Ok(t) if t.as_bytes() == want.as_bytes() => return Ok(short),
            Ok(_) | Err(rustix::io::Errno::INVAL) => {
                // Not ours (another target, or not a link at all): replace it.
                rustix::fs::unlinkat(links, name, rustix::fs::AtFlags::empty())
                    .ctx(|| format!("replacing {}", root.join(&short).display()))?;
            }
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => {
                return Err(Error::io(
                    format!("reading {}", root.join(&short).display()),
                    e,
                ))
            }
        }
        rustix::fs::symlinkat(want.as_str(), links, name)
            .ctx(|| format!("creating {}", root.join(&short).display()))?;
        Ok(short)
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
                "layer {} would be {} layers deep; overlayfs mounts at most {MAX_LOWERS} lower \
                 directories under a layer's own, so a chain holds at most {MAX_DEPTH} layers",
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
        copy_layer_dir(store, id, id, "diff", &root)?;
        if chain.len() > 1 {
            mkdir_mode(&staging.join("work"), 0o700)?;
        }
        // The diff engine opens the parents' diff/ by path: check them first.
        for r in &chain[1..] {
            pin_lower(store, id, &r.id, "diff")?;
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
        // Every directory is pinned beneath the root through no symlink before it is used:
        // a layer directory, diff/, work/ or merged/ replaced by a link is refused.
        let diff_fd = pin_layer_dir(store, id, "diff")?;
        if !readonly && chain.len() == 1 {
            return Ok(MountState {
                path: diff,
                mounted: false,
                readonly: false,
            });
        }
        let merged = store.layer_dir(id).join("merged");
        let merged_fd = make_layer_dir(store, id, "merged", 0o700)?;
        if chain.len() == 1 {
            mount::bind_readonly_at(diff_fd.as_fd(), merged_fd.as_fd())
                .ctx(|| format!("mounting layer {id} read-only"))?;
            return Ok(MountState {
                path: merged,
                mounted: true,
                readonly,
            });
        }
        let spec = OverlaySpec {
            options: self.options.clone(),
            label: (!label.is_empty() && mount::selinux_enabled()).then(|| label.to_string()),
            ..OverlaySpec::default()
        };
        let work_fd = if readonly {
            None
        } else {
            Some(make_layer_dir(store, id, "work", 0o700)?)
        };
        if mount::use_new_mount_api() {
            self.mount_pinned(store, chain, merged_fd.as_fd(), diff_fd, work_fd, spec)?;
        } else {
            let upper = work_fd.map(|w| (diff_fd, w));
            self.mount_classic(store, chain, merged_fd.as_fd(), upper, spec)?;
        }
        Ok(MountState {
            path: merged,
            mounted: true,
            readonly,
        })
    }

    fn unmount(&self, store: &Store, layer: &LayerRecord, state: &MountState) -> Result<()> {
        unmount_pinned(store, layer, state)
    }

    fn sweep(&self, store: &Store) -> Result<()> {
        self.quota.sweep()?;
        // Short links of removed layers (classic mounts) point nowhere now. l/ is reached
        // through no symlink, and only symlinks in it that no longer resolve to a directory
        // beneath the root are deleted.
        let root = store.root();
        let links = match fsutil::open_beneath(
            root,
            Path::new("l"),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        ) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(refuse("-", &root.join("l"), e)),
        };
        let root_fd = fsutil::open_dir(root).ctx(|| format!("opening {}", root.display()))?;
        let dir = rustix::fs::Dir::read_from(&links)
            .ctx(|| format!("listing {}", root.join("l").display()))?;
        for e in dir {
            let e = e.ctx(|| format!("listing {}", root.join("l").display()))?;
            let name = e.file_name();
            if name.to_bytes().starts_with(b".") || e.file_type() != rustix::fs::FileType::Symlink {
                continue;
            }
            let mut rel = b"l/".to_vec();
            rel.extend_from_slice(name.to_bytes());
            let live = rustix::fs::openat2(
                &root_fd,
                std::ffi::OsStr::from_bytes(&rel),
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
                rustix::fs::ResolveFlags::IN_ROOT.union(rustix::fs::ResolveFlags::NO_MAGICLINKS),
            )
            .is_ok();
            if !live {
                rustix::fs::unlinkat(&links, name, rustix::fs::AtFlags::empty()).ctx(|| {
                    format!(
                        "removing {}/{}",
                        root.join("l").display(),
                        name.to_string_lossy()
                    )
                })?;
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
            ("Using metacopy".into(), self.metacopy_status()),
            ("Mount API".into(), api),
            self.quota.status(),
        ]
    }
}
