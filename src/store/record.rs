//! The per-layer metadata record kept in the store's database.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Whether a layer was made as an image layer or a container layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// Made by `create`: an image layer (writable through `get` until it has a child).
    Ro,
    /// Made by `create_rw`: a container layer.
    Rw,
}

impl LayerKind {
    /// `ro` or `rw`.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerKind::Ro => "ro",
            LayerKind::Rw => "rw",
        }
    }
}

/// How a layer is currently served to `get` callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountState {
    /// The path handed out by `get`.
    pub path: PathBuf,
    /// Whether strata mounted something at `path` (as opposed to handing out a directory).
    pub mounted: bool,
    /// Whether it is served read-only.
    pub readonly: bool,
}

/// An apply that was being committed when the process stopped (see the store's crash story).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingApply {
    /// Generation the layer directory will carry once the apply is in place.
    pub generation: u64,
    /// Size the apply reported.
    pub size: u64,
    /// Whether the apply recorded an exact tar-split.
    #[serde(default)]
    pub exact: bool,
}

/// Everything the store knows about one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Layer id.
    pub id: String,
    /// Parent layer id.
    pub parent: Option<String>,
    /// Image or container layer.
    pub kind: LayerKind,
    /// Backend that stores it.
    pub backend: String,
    /// Storage options given at creation.
    #[serde(default)]
    pub storage_opt: BTreeMap<String, String>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Outstanding `get` references (kept in the store's mount-state files, not the database;
    /// see [`super::db`]).
    #[serde(default, skip_serializing)]
    pub refs: u32,
    /// How it is served while `refs > 0` (kept with `refs`).
    #[serde(default, skip_serializing)]
    pub mount: Option<MountState>,
    /// Size reported by the last apply (sum of the tar's regular-file sizes).
    #[serde(default)]
    pub size: Option<u64>,
    /// Bumped by every committed apply; the layer directory records the same number.
    #[serde(default)]
    pub generation: u64,
    /// Set while an apply is being swapped into place.
    #[serde(default)]
    pub pending: Option<PendingApply>,
    /// The layer holds exactly what one recorded apply wrote onto a pristine layer, so its
    /// tar-split record reproduces the applied tar byte for byte.
    #[serde(default)]
    pub exact: bool,
    /// The layer has been served writable: its content may differ from what applies wrote.
    #[serde(default)]
    pub dirty: bool,
}

impl LayerRecord {
    /// A fresh record.
    pub fn new(id: &str, parent: Option<&str>, kind: LayerKind, backend: &str) -> Self {
        LayerRecord {
            id: id.to_string(),
            parent: parent.map(str::to_string),
            kind,
            backend: backend.to_string(),
            storage_opt: BTreeMap::new(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            refs: 0,
            mount: None,
            size: None,
            generation: 0,
            pending: None,
            exact: false,
            dirty: false,
        }
    }
}
