//! Storage backends: where a layer's bytes live and how a layer is served to `get`. Backends
//! never parse tar; the diff engine in [`crate::archive`] does, writing into the directories
//! backends hand it. The store ([`crate::store`]) owns the lifecycle (staging, commit,
//! removal); a backend only lays out and serves the content of one layer directory.

pub mod block;
pub mod overlay;
pub mod quota;
pub mod vfs;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::archive::apply::Format;
use crate::archive::ChangeSet;
use crate::error::{Error, IoContext, Result};
use crate::options::DriverOptions;
use crate::store::{LayerRecord, MountState, Store};

/// Where and how an apply writes.
#[derive(Debug)]
pub struct ApplyTarget {
    /// Directory the tar is applied into (inside the staging directory).
    pub root: PathBuf,
    /// How deletions are represented there.
    pub format: Format,
    /// Lower layers for overlay format, topmost first.
    pub lowers: Vec<PathBuf>,
    /// What keeps `lowers` readable until the apply is over (block: the parents' images,
    /// mounted); released when the target is dropped.
    pub hold: Option<Box<dyn std::any::Any + Send>>,
}

/// What a storage backend does. `chain` arguments hold the layer's record first, then its
/// ancestors, nearest first.
pub trait Backend: Send + Sync {
    /// The backend's name (`vfs`, `overlay`, `block`).
    fn name(&self) -> &'static str;

    /// Whether the backend handles `size` itself: enforces it, or refuses it in
    /// [`Backend::create`] with the reason (vfs and overlay: XFS project quotas, see
    /// [`quota`]). `false` makes the graph refuse every `size`.
    fn supports_size(&self) -> bool {
        false
    }

    /// The directory holding the layer's own content (vfs: its whole tree; overlay: `diff/`).
    fn content_dir(&self, store: &Store, id: &str) -> PathBuf;

    /// Lays out a new layer inside `dir`, a fresh staging directory.
    fn create(&self, store: &Store, dir: &Path, chain: &[LayerRecord]) -> Result<()>;

    /// Slow preparation that must happen before [`Backend::mount`] without the store lock
    /// held (vfs: materialise a layer that has not been copied from its parent yet).
    fn prepare(&self, _store: &Store, _chain: &[LayerRecord]) -> Result<()> {
        Ok(())
    }

    /// Fills the staging directory `staging` with the layer's current content, laid out like
    /// a layer directory, and says where to apply a tar into it.
    fn stage_apply(
        &self,
        store: &Store,
        chain: &[LayerRecord],
        staging: &Path,
    ) -> Result<ApplyTarget>;

    /// Turns the applied tree of a successful apply into the layer's stored form (block:
    /// an ext4 image), inside `staging`, before it is committed. Called without the store
    /// lock.
    fn finish_apply(
        &self,
        _store: &Store,
        _chain: &[LayerRecord],
        _staging: &Path,
        _target: &ApplyTarget,
    ) -> Result<()> {
        Ok(())
    }

    /// A directory descriptor of the layer's own content as last applied, for re-exporting
    /// it exactly; it stays readable as long as the descriptor is open.
    fn open_content(&self, store: &Store, id: &str) -> Result<OwnedFd> {
        let dir = self.content_dir(store, id);
        crate::fsutil::open_dir(&dir).ctx(|| format!("opening {}", dir.display()))
    }

    /// Brings backend state outside the store's records in line after a crash (block: loop
    /// devices nobody uses). Called when the store is opened, without the store lock.
    fn reconcile(&self, _store: &Store) -> Result<()> {
        Ok(())
    }

    /// Grows the writable layer `chain[0]` to `size` bytes, offline (it is idle).
    fn resize(&self, _store: &Store, chain: &[LayerRecord], _size: u64) -> Result<()> {
        Err(Error::Unsupported(format!(
            "cannot resize layer {:?}: resizing is not supported by the {} backend (use the block backend)",
            chain[0].id,
            self.name()
        )))
    }

    /// Serves the layer; `readonly` once it has children. Called with the store lock held.
    fn mount(
        &self,
        store: &Store,
        chain: &[LayerRecord],
        readonly: bool,
        label: &str,
    ) -> Result<MountState>;

    /// Stops serving the layer: unmounts what [`Backend::mount`] mounted and removes the
    /// mount point. Called with the store lock held.
    fn unmount(&self, _store: &Store, layer: &LayerRecord, state: &MountState) -> Result<()> {
        if state.mounted {
            crate::sys::mount::unmount(&state.path)
                .ctx(|| format!("unmounting layer {}", layer.id))?;
            let _ = std::fs::remove_dir(&state.path);
        }
        Ok(())
    }

    /// Facts about one layer for `docker inspect`.
    fn metadata(&self, store: &Store, chain: &[LayerRecord]) -> BTreeMap<String, String>;

    /// The changes of the layer `chain[0]` against its own parent, computed from the backend's
    /// layout without serving the layer, with a descriptor of the directory its changed files
    /// can be read from (kept readable while it is open); `None` when the backend has no such
    /// shortcut (the caller then compares mounted trees).
    fn native_changes(
        &self,
        _store: &Store,
        _chain: &[LayerRecord],
    ) -> Option<Result<(ChangeSet, OwnedFd)>> {
        None
    }

    /// Deletes backend bookkeeping that no layer needs any more (run by `cleanup`).
    fn sweep(&self, _store: &Store) -> Result<()> {
        Ok(())
    }

    /// Facts about the backend for `docker info`.
    fn status(&self, store: &Store) -> Vec<(String, String)>;
}

/// Open-time probe results a store remembers (in its meta, see [`crate::store::db`]), so that
/// probes that write (overlay's `d_type` probe creates a directory) run once per store and
/// kernel, not on every command.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Probes {
    /// The kernel the results were taken under ([`kernel_id`]); results recorded under
    /// another one are probed again.
    pub kernel: String,
    /// Whether the store's filesystem reports directory entry types (overlayfs needs it).
    #[serde(default)]
    pub d_type: Option<bool>,
}

impl Probes {
    /// Empty results for the running kernel.
    pub fn current() -> Probes {
        Probes {
            kernel: kernel_id(),
            d_type: None,
        }
    }

    /// The recorded results (JSON) if they were taken under the running kernel, else empty
    /// ones.
    pub fn from_recorded(json: Option<&str>) -> Probes {
        let now = kernel_id();
        json.and_then(|j| serde_json::from_str::<Probes>(j).ok())
            .filter(|p| p.kernel == now)
            .unwrap_or_else(Probes::current)
    }
}

/// The running kernel: its release and boot id (a reboot, possibly into another kernel or
/// with the store's filesystem reformatted, probes again).
pub fn kernel_id() -> String {
    let uname = rustix::system::uname();
    format!(
        "{} {}",
        uname.release().to_string_lossy(),
        crate::sys::boot_id()
    )
}

/// Refuses a driver-wide `size` the backend cannot enforce.
pub fn check_size(backend: &dyn Backend, options: &DriverOptions) -> Result<()> {
    if options.size.is_some() && !backend.supports_size() {
        return Err(Error::Unsupported(format!(
            "the {} backend cannot enforce size= on this filesystem yet (size limits need XFS project quotas or the block backend)",
            backend.name()
        )));
    }
    Ok(())
}

/// Checks that a new store of driver `name` at `root` can honour `options`, before the store
/// is created and records them.
pub fn check_new(name: &str, root: &Path, options: &DriverOptions) -> Result<()> {
    let backend = open(name, root, options, &mut Probes::current(), true)?;
    check_size(backend.as_ref(), options)
}

/// The store meta key under which open-time probe results are recorded.
const PROBES_KEY: &str = "probe";

/// Opens the backend of `store` with the probe results it recorded under the running kernel;
/// results probed now are recorded (read-write opens only: a read-only one probes nothing).
pub fn open_for(store: &Store, options: &DriverOptions) -> Result<Box<dyn Backend>> {
    let recorded = store.db().meta(PROBES_KEY)?;
    let mut probes = Probes::from_recorded(recorded.as_deref());
    let before = probes.clone();
    let writable = !store.is_read_only();
    let backend = open(store.driver(), store.root(), options, &mut probes, writable)?;
    if writable && probes != before {
        let json = serde_json::to_string(&probes).map_err(|e| Error::Db {
            path: store.root().join(crate::store::DB_FILE),
            message: e.to_string(),
        })?;
        store.set_meta(PROBES_KEY, &json)?;
    }
    Ok(backend)
}

/// Opens the backend called `name` for the store at `root`, checking that it can work there.
/// Probes missing from `probes` are run and filled in when `may_probe` (a read-write open);
/// a read-only open runs none and skips the checks they serve.
pub fn open(
    name: &str,
    root: &Path,
    options: &DriverOptions,
    probes: &mut Probes,
    may_probe: bool,
) -> Result<Box<dyn Backend>> {
    if options.native_diff.is_some() && name != "overlay" {
        return Err(Error::InvalidOption {
            key: "native_diff".into(),
            reason: "applies to the overlay driver only".into(),
        });
    }
    if options.vhd.is_some() && name != "block" {
        return Err(Error::InvalidOption {
            key: "vhd".into(),
            reason: "applies to the block driver only".into(),
        });
    }
    match name {
        "vfs" => Ok(Box::new(vfs::Vfs::open(root, options)?)),
        "overlay" => Ok(Box::new(overlay::Overlay::open(
            root, options, probes, may_probe,
        )?)),
        "block" => Ok(Box::new(block::Block::open(root, options)?)),
        other => Err(Error::Unsupported(format!(
            "unknown driver {other:?} (known: {})",
            KNOWN.join(", ")
        ))),
    }
}

/// Every backend name, for messages and option lists.
pub const KNOWN: [&str; 3] = ["block", "overlay", "vfs"];

/// The backend to use for a new store at `root`: overlay where it works, else vfs.
pub fn default_for(root: &Path) -> String {
    match overlay::Overlay::open(
        root,
        &DriverOptions::default(),
        &mut Probes::current(),
        true,
    ) {
        Ok(_) => "overlay".into(),
        Err(_) => "vfs".into(),
    }
}

/// Docker's name for the filesystem type of `path` (`extfs`, `xfs`, ...).
pub fn backing_fs(path: &Path) -> Result<(String, i64)> {
    let st = rustix::fs::statfs(path).ctx(|| format!("statfs {}", path.display()))?;
    let magic = st.f_type as i64;
    let name = match magic as u32 {
        0xEF53 => "extfs",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x2FC1_2FC1 => "zfs",
        0xF2F5_2010 => "f2fs",
        0x6969 => "nfs",
        0x0102_1997 => "v9fs",
        0x6573_5546 => "fuse",
        _ => "unknown",
    };
    Ok((name.to_string(), magic))
}

/// Creates a directory with `mode`, tolerating one that exists.
pub(crate) fn mkdir_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .ctx(|| format!("chmod {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(format!("creating {}", path.display()), e)),
    }
}
