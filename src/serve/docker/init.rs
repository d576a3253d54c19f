//! `GraphDriver.Init`: opening the store, making its root a private mount, and remembering
//! `Init`'s arguments so that a restarted plugin reopens the same store before dockerd calls
//! again (dockerd sends `Init` only when it starts).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{DockerPlugin, PluginError};
use crate::graph::{Graph, GraphConfig};
use crate::Driver;

/// The options that identify an opened store; a repeated `Init` with the same ones reuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OpenKey {
    root: PathBuf,
    options: Vec<String>,
}

/// The open store and what was done to open it.
pub(super) struct Opened {
    key: OpenKey,
    /// The store.
    pub(super) graph: Graph,
    /// The store root, made a private mount by this plugin (or by its previous run).
    pub(super) private_bind: Option<PathBuf>,
    /// `Init`'s arguments as dockerd sent them.
    saved: SavedInit,
    /// Whether applies `syncfs` before commit.
    pub(super) durable: bool,
    /// Writer threads of an apply.
    pub(super) writers: usize,
}

/// What the state file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct SavedInit {
    #[serde(rename = "Home")]
    home: String,
    #[serde(rename = "Opts", default)]
    opts: Vec<String>,
    /// The store root bind-mounted onto itself by the plugin (undone at `Cleanup`).
    #[serde(rename = "PrivateBind", default)]
    private_bind: Option<PathBuf>,
}

impl DockerPlugin {
    /// Reopens the store named by the state file of an earlier run (see
    /// [`super::PluginConfig::state_file`]), so that a plugin restarted while dockerd runs
    /// serves at once. Returns whether a store was opened; a missing state file is no error.
    pub fn restore(&self) -> Result<bool, PluginError> {
        let Some(file) = self.shared.config.state_file.clone() else {
            return Ok(false);
        };
        let text = match fs::read(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(state_err(&file, "reading", e)),
        };
        let saved: SavedInit = serde_json::from_slice(&text).map_err(|e| {
            PluginError::BadRequest(format!("the state file {} is damaged: {e}", file.display()))
        })?;
        info!(state = %file.display(), home = saved.home, "reopening the store of the last Init");
        self.open(
            &saved.home,
            &saved.opts,
            Restoring::Yes(saved.private_bind.clone()),
        )?;
        Ok(true)
    }

    /// `GraphDriver.Init`: opens the store (or keeps the one opened by an earlier `Init` with
    /// the same root and options), makes the store root a private mount and remembers the
    /// arguments.
    pub(super) fn init(&self, home: &str, opts: &[String]) -> Result<(), PluginError> {
        self.open(home, opts, Restoring::No)
    }

    fn open_key(&self, home: &str, opts: &[String]) -> Result<OpenKey, PluginError> {
        let config = &self.shared.config;
        let root = match &config.root {
            Some(r) => r.clone(),
            None if home.is_empty() => {
                return Err(PluginError::BadRequest(
                    "Init without Home, and the server was given no --root".into(),
                ))
            }
            None => PathBuf::from(home),
        };
        if !root.is_absolute() {
            return Err(PluginError::BadRequest(format!(
                "the store root {} is not an absolute path",
                root.display()
            )));
        }
        let prefix = format!("{}.", config.name);
        let mut options = config.options.clone();
        options.extend(opts.iter().map(|o| {
            // dockerd passes --storage-opt as given; `NAME.key=v` is the driver convention.
            o.strip_prefix(&prefix).unwrap_or(o).to_string()
        }));
        Ok(OpenKey { root, options })
    }

    /// The store's configuration: the plugin's settings over the store's defaults.
    pub(super) fn graph_config(&self, root: &Path, options: &[String]) -> GraphConfig {
        let config = &self.shared.config;
        let mut gc = GraphConfig::new(root);
        gc.driver = config.driver.clone();
        gc.options = options.to_vec();
        gc.apply_helper = config.apply_helper.clone();
        gc.durable = !config.no_sync;
        if let Some(w) = config.writers {
            gc.writers = w;
        }
        // dockerd waits on Remove; the files can go after the answer.
        gc.background_remove = true;
        gc
    }

    /// Opens (or keeps) the store for `Init(home, opts)`, or for the state file's record of
    /// it when `restoring`.
    fn open(&self, home: &str, opts: &[String], restoring: Restoring) -> Result<(), PluginError> {
        let adopted_bind = match &restoring {
            Restoring::Yes(bind) => bind.clone(),
            Restoring::No => None,
        };
        let key = self.open_key(home, opts)?;
        // Inits are serialised; `opened` itself is only ever held for a moment, because
        // request handlers read it from async context.
        let _one_init = self.shared.init.lock().unwrap_or_else(|p| p.into_inner());
        // Requests keep being served by the current store until the new one replaces it.
        let reuse = self.lock().as_ref().filter(|o| o.key == key).map(|o| {
            (
                o.graph.clone(),
                o.private_bind.clone(),
                o.durable,
                o.writers,
            )
        });
        let reused = reuse.is_some();
        let (graph, mut private_bind, durable, writers) = match reuse {
            Some(open) => {
                info!(root = %key.root.display(), "Init again: keeping the open store");
                open
            }
            None => {
                let gc = self.graph_config(&key.root, &key.options);
                let (durable, writers) = (gc.durable, gc.writers);
                let graph = Graph::open(gc)?;
                info!(
                    root = %graph.store().root().display(),
                    driver = graph.name(),
                    durable,
                    writers,
                    "store opened"
                );
                // Same root, other options: the bind made for the previous store stays ours.
                let inherited = self
                    .lock()
                    .as_ref()
                    .and_then(|o| o.private_bind.clone())
                    .or(adopted_bind)
                    .filter(|d| d == graph.store().root());
                (graph, inherited, durable, writers)
            }
        };
        // The whole root, not just layers/: staging/ and layers/ must stay on one mount, or
        // moving a staged layer into place fails with EXDEV. dockerd detaches its data-root
        // (and with it this bind) when it stops, so check again at every Init.
        //
        // At start-up no bind is made: dockerd may not run yet, and its bind of the data-root
        // would hide ours. The bind of an earlier run that dockerd still sees (the plugin
        // restarted under a running dockerd) is taken over; otherwise Init makes one.
        let root = graph.store().root().to_path_buf();
        let made = match restoring {
            Restoring::No => super::super::make_private_mount(&root),
            Restoring::Yes(_) => adopt_private_mount(&root, &mut private_bind),
        };
        match made {
            Ok(true) => private_bind = Some(root),
            Ok(false) => {}
            Err(e) => {
                warn!(dir = %root.display(), error = %e, "could not make the store root a private mount")
            }
        }
        let saved = SavedInit {
            home: home.to_string(),
            opts: opts.to_vec(),
            private_bind: private_bind.clone(),
        };
        let previous = self.lock().replace(Opened {
            key,
            graph,
            private_bind: private_bind.clone(),
            saved,
            durable,
            writers,
        });
        if let Some(dir) = previous
            .filter(|_| !reused)
            .and_then(|o| o.private_bind)
            .filter(|d| Some(d) != private_bind.as_ref())
        {
            if let Err(e) = super::super::release_private_mount(&dir) {
                warn!(dir = %dir.display(), error = %e, "could not undo the private bind");
            }
        }
        self.persist()
    }

    /// Writes the state file from the open store (atomically, mode 0600).
    pub(super) fn persist(&self) -> Result<(), PluginError> {
        let Some(file) = &self.shared.config.state_file else {
            return Ok(());
        };
        let Some(mut saved) = self.lock().as_ref().map(|o| o.saved.clone()) else {
            return Ok(());
        };
        saved.private_bind = self.lock().as_ref().and_then(|o| o.private_bind.clone());
        let text = serde_json::to_vec(&saved)
            .map_err(|e| PluginError::Internal(format!("encoding the state: {e}")))?;
        write_atomically(file, &text).map_err(|e| state_err(file, "writing", e))
    }
}

/// Whether an open comes from the state file (with the private bind it recorded) or `Init`.
enum Restoring {
    Yes(Option<PathBuf>),
    No,
}

/// Keeps the recorded private bind of `root` if it is still in place (made private again),
/// and forgets it otherwise. Never makes a new bind; returns `Ok(false)`.
fn adopt_private_mount(root: &Path, private_bind: &mut Option<PathBuf>) -> io::Result<bool> {
    if private_bind.as_deref() == Some(root) && super::super::is_mount_root(root)? {
        crate::sys::mount::make_private(root)?;
    } else {
        *private_bind = None;
    }
    Ok(false)
}

fn state_err(file: &Path, doing: &str, e: io::Error) -> PluginError {
    PluginError::Store(crate::Error::io(
        format!("{doing} the plugin state file {}", file.display()),
        e,
    ))
}

/// Replaces `file` with `data`: a temporary file (mode 0600) in the same directory (created
/// mode 0700 if missing), synced, then renamed over it.
fn write_atomically(file: &Path, data: &[u8]) -> io::Result<()> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut tmp_name = file.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = f.write_all(data).and_then(|()| f.sync_all());
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, file)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}
