//! The graph-driver interface: the operations Docker's graph drivers (windowsfilter, lcow,
//! overlay2, vfs) offer to dockerd, expressed in Rust. Nothing else lives here.
//!
//! Conventions shared by every implementation:
//!
//! * A `parent` of `None` means "the layer's own parent" (for diff-like calls) or "no parent"
//!   (for create calls). Front-ends translate the wire protocol's empty string into `None`.
//! * Layers made by [`Driver::create`] are image layers: they stay writable through
//!   [`Driver::get`] until they have a child (dockerd and graphtest fill image layers that way),
//!   and are served read-only afterwards.
//! * A read-write layer may be the parent of another layer (dockerd's `<id>-init` layers).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

pub use crate::archive::{Change, ChangeKind, ChangeSet};
use crate::error::Result;

/// Options passed when a layer is created (Docker's `CreateOpts`).
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    /// SELinux mount label applied to the layer's mounts; ignored where SELinux is off.
    pub mount_label: String,
    /// Per-layer storage options, e.g. `size=10G` (validated by the driver; unknown keys fail).
    pub storage_opt: BTreeMap<String, String>,
}

/// What a driver can promise about its diffs (Docker's `graphdriver.Capabilities`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    /// `diff` against its own parent reproduces the applied tar byte for byte for every layer
    /// whose content came from exactly one `apply_diff` onto the freshly created layer (never
    /// served writable through `get`, before or after the apply): dockerd's image layers. For
    /// any other layer (a container layer, one served writable, one applied twice) `diff`
    /// compares trees instead and logs a warning for applied layers; the layer's `metadata`
    /// shows which case holds (`ExactDiff`: `true` or `false (<reason>)`).
    pub reproduces_exact_diffs: bool,
}

/// A readable tar stream of a layer's changes. Dropping it releases whatever the export held
/// (mount references, helper threads).
pub type DiffStream = Box<dyn Read + Send>;

/// The graph-driver interface (Docker's `ProtoDriver` + `DiffDriver` + `Capabilities`).
pub trait Driver: Send + Sync {
    /// The backend name, e.g. `overlay` or `vfs`.
    fn name(&self) -> &str;
    /// Creates a read-only (image) layer on `parent`.
    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()>;
    /// Creates a read-write (container) layer on `parent`.
    fn create_rw(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()>;
    /// Removes a layer. Refused while it has children or is mounted.
    fn remove(&self, id: &str) -> Result<()>;
    /// Mounts (or otherwise materialises) the layer's root filesystem and returns its absolute
    /// path, valid until the matching [`Driver::put`]. Reference-counted: a second `get`
    /// returns the same path.
    fn get(&self, id: &str, mount_label: &str) -> Result<PathBuf>;
    /// Releases one [`Driver::get`] reference; the last one unmounts.
    fn put(&self, id: &str) -> Result<()>;
    /// Whether a layer with this id exists.
    fn exists(&self, id: &str) -> Result<bool>;
    /// Key/value pairs describing the driver, as shown by `docker info`.
    fn status(&self) -> Result<Vec<(String, String)>>;
    /// Backend-specific facts about one layer, as shown by `docker inspect`.
    fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>>;
    /// Releases every mount and sweeps leftovers of interrupted operations (dockerd calls this
    /// at shutdown).
    fn cleanup(&self) -> Result<()>;
    /// An uncompressed tar of the changes of `id` relative to `parent`.
    fn diff(&self, id: &str, parent: Option<&str>) -> Result<DiffStream>;
    /// The changes of `id` relative to `parent`, as a compact set read in path order.
    fn changes(&self, id: &str, parent: Option<&str>) -> Result<ChangeSet>;
    /// Applies a layer tar (plain, gzip or zstd) to `id`, atomically; returns the applied size
    /// (the sum of the regular files' sizes in the tar).
    fn apply_diff(
        &self,
        id: &str,
        parent: Option<&str>,
        diff: &mut (dyn Read + Send),
    ) -> Result<u64>;
    /// Bytes of added or modified non-directories of `id` relative to `parent` (hard links
    /// counted once).
    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<u64>;
    /// What this driver promises about its diffs.
    fn capabilities(&self) -> Capabilities;
}
