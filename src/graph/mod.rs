//! [`Graph`]: the graph-driver interface implemented over a [`Store`] and a [`Backend`].
//!
//! Each operation validates its input, does the slow filesystem work (copies, applies) in a
//! staging directory without the store lock, and then takes the lock for one short step that
//! re-checks the preconditions, moves the result into place and commits the record. See the
//! store's crash story for what happens when a process dies in between.

mod against;
mod diff;
mod remove;
mod resize;

pub use against::DiffBase;
pub use remove::{reap_main, REAP_ARG};

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{debug, info, warn};

use crate::archive::apply::{self, ApplyOptions};
use crate::archive::confined::{self, Job};
use crate::archive::digest::Expected;
use crate::archive::tarstream::Limits;
use crate::backend::{self, Backend};
use crate::driver::{Capabilities, ChangeSet, CreateOpts, DiffStream, Driver};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::options::{DriverOptions, StorageOptions};
use crate::store::{self, id, LayerKind, LayerRecord, OpenRequest, Store};

/// How to open a [`Graph`].
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// Store root (created mode 0700 if missing).
    pub root: PathBuf,
    /// Backend to use; `None` means the store's recorded one, or the best available for a new
    /// store.
    pub driver: Option<String>,
    /// Driver options as `KEY=VALUE` strings.
    pub options: Vec<String>,
    /// `syncfs` the layer's filesystem before committing an apply (default true).
    pub durable: bool,
    /// Limits for applied layers.
    pub limits: Limits,
    /// Run applies in a confined helper process started from this binary (see
    /// [`crate::archive::confined`]); `None` applies in-process.
    pub apply_helper: Option<PathBuf>,
    /// Writer threads an apply uses for small files (0: none).
    pub writers: usize,
    /// Delete removed layers' files on a background thread, so `remove` returns once the
    /// layer is gone from the store (default false; the Docker plugin sets it). Dropping the
    /// last clone of the [`Graph`] waits for deletions still running.
    pub background_remove: bool,
    /// For short-lived processes (the CLI's `remove --background`): delete removed layers'
    /// files in a detached process started from this binary as `<binary> __reap <dir>`
    /// (see [`reap_main`]), which inherits the directory's lock. Takes precedence over
    /// `background_remove`.
    pub remove_helper: Option<PathBuf>,
    /// Open the store for reading only (`exists`, `ls`, `status`, `metadata`): nothing is
    /// written, synced or locked unless the store needs crash repair (see
    /// [`crate::store::OpenRequest::read_only`]).
    pub read_only: bool,
}

impl GraphConfig {
    /// Defaults for a store at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        GraphConfig {
            root: root.into(),
            driver: None,
            options: Vec::new(),
            durable: true,
            limits: Limits::default(),
            apply_helper: None,
            writers: 2,
            background_remove: false,
            remove_helper: None,
            read_only: false,
        }
    }
}

/// Per-call settings of an apply.
#[derive(Debug, Clone, Default)]
pub struct ApplyParams {
    /// Limits for this layer (default: the graph's).
    pub limits: Option<Limits>,
    /// Digest the uncompressed stream must have (`sha256:<hex>`), checked before commit.
    pub digest: Option<String>,
}

/// One layer, as listed by [`Graph::list`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayerInfo {
    /// Layer id.
    pub id: String,
    /// Parent id.
    pub parent: Option<String>,
    /// `ro` or `rw`.
    pub kind: &'static str,
    /// Size recorded by the last apply.
    pub size: Option<u64>,
    /// Outstanding `get` references.
    pub refs: u32,
    /// Creation time (seconds since the epoch).
    pub created: u64,
}

struct Inner {
    store: Store,
    backend: Box<dyn Backend>,
    options: DriverOptions,
    durable: bool,
    limits: Limits,
    apply_helper: Option<PathBuf>,
    writers: usize,
    background_remove: bool,
    remove_helper: Option<PathBuf>,
    /// Background deletions of removed layers still running.
    reapers: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let reapers = std::mem::take(self.reapers.get_mut().unwrap_or_else(|p| p.into_inner()));
        for r in reapers {
            let _ = r.join();
        }
    }
}

/// The strata driver. Cheap to clone; clones share one store.
#[derive(Clone)]
pub struct Graph {
    inner: Arc<Inner>,
}

impl Graph {
    /// Opens the store described by `config` and its backend.
    pub fn open(config: GraphConfig) -> Result<Graph> {
        if let Some(d) = &config.driver {
            if !backend::KNOWN.contains(&d.as_str()) {
                return Err(Error::Unsupported(format!(
                    "unknown driver {d:?} (known: {})",
                    backend::KNOWN.join(", ")
                )));
            }
        }
        let given = &config.options;
        let store = Store::open_with(
            &config.root,
            OpenRequest {
                driver: config.driver.as_deref(),
                default_driver: Box::new(backend::default_for),
                options: Box::new(|driver| DriverOptions::canonical_for(driver, given)),
                check_new: Some(Box::new(|driver, root, opts| {
                    backend::check_new(driver, root, &DriverOptions::from_canonical(opts)?)
                })),
                read_only: config.read_only,
            },
        )?;
        let options = DriverOptions::from_canonical(store.options())?;
        let backend = backend::open_for(&store, &options)?;
        if !store.is_read_only() {
            backend.reconcile(&store)?;
        }
        backend::check_size(backend.as_ref(), &options)?;
        debug!(root = %store.root().display(), driver = backend.name(), "opened store");
        Ok(Graph {
            inner: Arc::new(Inner {
                store,
                backend,
                options,
                durable: config.durable,
                limits: config.limits,
                apply_helper: config.apply_helper,
                writers: config.writers,
                background_remove: config.background_remove,
                remove_helper: config.remove_helper,
                reapers: std::sync::Mutex::new(Vec::new()),
            }),
        })
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    fn backend(&self) -> &dyn Backend {
        self.inner.backend.as_ref()
    }

    /// Every layer, sorted by id.
    pub fn list(&self) -> Result<Vec<LayerInfo>> {
        Ok(self
            .store()
            .db()
            .list()?
            .into_iter()
            .map(|r| LayerInfo {
                kind: r.kind.as_str(),
                id: r.id,
                parent: r.parent,
                size: r.size,
                refs: r.refs,
                created: r.created,
            })
            .collect())
    }

    fn create_layer(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
        kind: LayerKind,
    ) -> Result<()> {
        id::validate(id)?;
        if let Some(p) = parent {
            id::validate(p)?;
        }
        let sopts = StorageOptions::parse(&opts.storage_opt)?;
        if sopts.size.is_some() {
            if kind == LayerKind::Ro {
                return Err(Error::InvalidOption {
                    key: "size".into(),
                    reason: "size applies to read-write layers only".into(),
                });
            }
            if !self.backend().supports_size() {
                return Err(Error::Unsupported(format!(
                    "cannot create layer {id:?} with size={}: the {} backend cannot enforce size limits on this filesystem yet (size needs XFS project quotas or the block backend)",
                    opts.storage_opt.iter().find(|(k, _)| k.eq_ignore_ascii_case("size")).map(|(_, v)| v.as_str()).unwrap_or(""),
                    self.backend().name()
                )));
            }
        }
        let store = self.store();
        if store.db().get(id)?.is_some() {
            return Err(Error::AlreadyExists(id.to_string()));
        }
        let mut chain = match parent {
            Some(p) => store.chain(p).map_err(|e| match e {
                Error::NotFound(_) => Error::ParentNotFound {
                    id: id.to_string(),
                    parent: p.to_string(),
                },
                other => other,
            })?,
            None => Vec::new(),
        };
        // The parent must not change (apply) or vanish (remove) while this layer is built.
        let _parent_guard = match parent {
            Some(p) => Some(store.busy_guard(p, false, "creating a child")?),
            None => None,
        };
        let mut rec = LayerRecord::new(id, parent, kind, self.backend().name());
        rec.storage_opt = opts.storage_opt.clone();
        chain.insert(0, rec.clone());
        let staging = store.stage(&format!("create-{id}"))?;
        self.backend().create(store, staging.path(), &chain)?;
        let l = store.lock()?;
        l.commit_new(staging, &rec)?;
        info!(
            layer = id,
            parent = parent.unwrap_or(""),
            kind = kind.as_str(),
            "created layer"
        );
        Ok(())
    }

    /// Applies a layer tar with per-call settings; [`Driver::apply_diff`] uses the graph's.
    pub fn apply_diff_with(
        &self,
        id: &str,
        parent: Option<&str>,
        input: &mut (dyn Read + Send),
        params: &ApplyParams,
    ) -> Result<u64> {
        id::validate(id)?;
        let digest = params
            .digest
            .as_deref()
            .map(Expected::parse)
            .transpose()
            .map_err(|reason| Error::InvalidOption {
                key: "digest".into(),
                reason,
            })?;
        let limits = params.limits.unwrap_or(self.inner.limits);
        let store = self.store();
        let rec = store.record(id)?;
        if let Some(p) = parent {
            if rec.parent.as_deref() != Some(p) {
                return Err(Error::Invalid {
                    id: id.to_string(),
                    reason: format!(
                        "its parent is {:?}, not {p:?}",
                        rec.parent.as_deref().unwrap_or("")
                    ),
                });
            }
        }
        self.ensure_idle(&rec)?;
        let _guard = store.busy_guard(id, true, "apply")?;
        let chain = store.chain(id)?;
        let staging = store.stage(&format!("apply-{id}"))?;
        let target = self.backend().stage_apply(store, &chain, staging.path())?;
        let root =
            fsutil::open_dir(&target.root).ctx(|| format!("opening {}", target.root.display()))?;
        let opts = ApplyOptions {
            format: target.format,
            lowers: target.lowers.clone(),
            limits,
            // Only an apply onto a pristine layer can be reproduced exactly.
            record_into: (rec.generation == 0 && !rec.dirty).then(|| staging.path().to_path_buf()),
            digest,
            writers: self.inner.writers,
        };
        let stats = match &self.inner.apply_helper {
            Some(exe) => {
                let job = Job::new(&target.root, &opts, vec![staging.path().to_path_buf()]);
                confined::run_in_helper(exe, &job, input)
            }
            None => apply::apply(root.as_fd(), input, &opts),
        }
        .map_err(|source| Error::Apply {
            layer: id.to_string(),
            source,
        })?;
        self.backend()
            .finish_apply(store, &chain, staging.path(), &target)?;
        store::write_applied_marker(staging.path(), rec.generation + 1)?;
        if self.inner.durable {
            rustix::fs::syncfs(&root).ctx(|| format!("syncing the filesystem of layer {id}"))?;
        }
        let l = store.lock()?;
        let now = store.record(id)?;
        self.ensure_idle(&now)?;
        if now.generation != rec.generation {
            return Err(Error::Busy {
                id: id.to_string(),
                what: "another apply committed first".into(),
            });
        }
        l.commit_apply(&staging, &now, stats.size, opts.record_into.is_some())?;
        drop(l);
        info!(
            layer = id,
            size = stats.size,
            entries = stats.entries,
            bytes = stats.bytes,
            "applied layer"
        );
        Ok(stats.size)
    }

    /// Refuses to rewrite or remove a layer that others build on or that is mounted.
    fn ensure_idle(&self, rec: &LayerRecord) -> Result<()> {
        let children = self.store().db().children(&rec.id)?;
        if let Some(c) = children.first() {
            return Err(Error::HasChildren {
                id: rec.id.clone(),
                count: children.len(),
                example: c.clone(),
            });
        }
        if rec.refs > 0 {
            return Err(Error::Mounted {
                id: rec.id.clone(),
                refs: rec.refs,
            });
        }
        Ok(())
    }

    /// Resolves the layer a diff-like call compares against: the given one, or the layer's own
    /// parent.
    fn base_of(&self, id: &str, parent: Option<&str>) -> Result<Option<String>> {
        id::validate(id)?;
        let rec = self.store().record(id)?;
        match parent {
            Some(p) => {
                id::validate(p)?;
                self.store().record(p)?;
                Ok(Some(p.to_string()))
            }
            None => Ok(rec.parent),
        }
    }
}

/// A `get` reference released on drop.
pub(crate) struct Mounted {
    graph: Graph,
    id: String,
    path: PathBuf,
}

impl Mounted {
    pub(crate) fn new(graph: &Graph, id: &str) -> Result<Mounted> {
        let path = graph.get(id, "")?;
        Ok(Mounted {
            graph: graph.clone(),
            id: id.to_string(),
            path,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.graph.put(&self.id) {
            warn!(layer = %self.id, error = %e, "releasing a diff mount failed");
        }
    }
}

impl Driver for Graph {
    fn name(&self) -> &str {
        self.backend().name()
    }

    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts, LayerKind::Ro)
    }

    fn create_rw(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts, LayerKind::Rw)
    }

    fn remove(&self, id: &str) -> Result<()> {
        self.remove_layer(id)
    }

    fn get(&self, id: &str, mount_label: &str) -> Result<PathBuf> {
        id::validate(id)?;
        if !mount_label.is_empty() {
            crate::sys::label::validate(mount_label).map_err(|why| Error::Invalid {
                id: id.to_string(),
                reason: format!("mount label {mount_label:?} is not an SELinux context: {why}"),
            })?;
        }
        let store = self.store();
        for attempt in 0..3 {
            // Already mounted (the common case under dockerd): one record read, no chain walk,
            // no preparation; the count is re-checked under the lock below.
            let first = store.record(id)?;
            if first.refs == 0 {
                let chain = store.chain(id)?;
                self.backend().prepare(store, &chain)?;
            }
            let l = store.lock()?;
            let mut rec = store.record(id)?;
            if rec.refs > 0 {
                if let Some(m) = &rec.mount {
                    let path = m.path.clone();
                    rec.refs = rec.refs.checked_add(1).ok_or_else(|| Error::Invalid {
                        id: id.to_string(),
                        reason: format!(
                            "it already has {} references, the most a layer can hold",
                            rec.refs
                        ),
                    })?;
                    l.db().put_mount_state(&rec)?;
                    return Ok(path);
                }
            }
            // An apply in progress holds the layer exclusively.
            drop(store.busy_guard(id, false, "get")?);
            let readonly = !store.db().children(id)?.is_empty();
            let chain = store.chain(id)?;
            let state = match self.backend().mount(store, &chain, readonly, mount_label) {
                Ok(s) => s,
                Err(Error::Busy { .. }) if attempt < 2 => continue, // not materialised yet
                Err(e) => return Err(e),
            };
            crate::failpoint::hit("get-after-mount");
            rec.refs = 1;
            rec.mount = Some(state.clone());
            // Anything may change through a writable mount: no exact re-export any more. That
            // must be durable (a database commit); a count alone need not be (see store::db).
            let saved = if !state.readonly && (!rec.dirty || rec.exact) {
                rec.dirty = true;
                rec.exact = false;
                l.db().write(|w| w.put(&rec))
            } else {
                l.db().put_mount_state(&rec)
            };
            if let Err(e) = saved {
                let _ = self.backend().unmount(store, &rec, &state);
                return Err(e);
            }
            debug!(layer = id, path = %state.path.display(), readonly, "mounted layer");
            return Ok(state.path);
        }
        Err(Error::Busy {
            id: id.to_string(),
            what: "could not be prepared for mounting".into(),
        })
    }

    fn put(&self, id: &str) -> Result<()> {
        id::validate(id)?;
        let store = self.store();
        let l = store.lock()?;
        let mut rec = store.record(id)?;
        if rec.refs == 0 {
            return Err(Error::NotMounted(id.to_string()));
        }
        rec.refs -= 1;
        if rec.refs == 0 {
            if let Some(state) = rec.mount.take() {
                self.backend().unmount(store, &rec, &state)?;
                crate::failpoint::hit("put-after-unmount");
            }
        }
        l.db().put_mount_state(&rec)?;
        Ok(())
    }

    fn exists(&self, id: &str) -> Result<bool> {
        if id::validate(id).is_err() {
            return Ok(false);
        }
        Ok(self.store().db().get(id)?.is_some())
    }

    fn status(&self) -> Result<Vec<(String, String)>> {
        let layers = self.store().db().list()?;
        let mut out = vec![
            ("Driver".to_string(), self.backend().name().to_string()),
            (
                "Root Dir".to_string(),
                self.store().root().display().to_string(),
            ),
        ];
        out.extend(self.backend().status(self.store()));
        out.push(("Layers".into(), layers.len().to_string()));
        out.push((
            "Mounted Layers".into(),
            layers.iter().filter(|r| r.refs > 0).count().to_string(),
        ));
        if let Some(size) = self.inner.options.size {
            out.push(("Default Size".into(), size.to_string()));
        }
        Ok(out)
    }

    fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>> {
        id::validate(id)?;
        let chain = self.store().chain(id)?;
        let mut m = self.backend().metadata(self.store(), &chain);
        m.insert("ExactDiff".into(), diff::exact_label(&chain[0]));
        Ok(m)
    }

    fn cleanup(&self) -> Result<()> {
        let l = self.store().lock()?;
        let report = l.release_all()?;
        self.backend().sweep(self.store())?;
        info!(?report, "cleanup");
        Ok(())
    }

    fn diff(&self, id: &str, parent: Option<&str>) -> Result<DiffStream> {
        let base = self.base_of(id, parent)?;
        diff::stream(self, id, base.as_deref())
    }

    fn changes(&self, id: &str, parent: Option<&str>) -> Result<ChangeSet> {
        let base = self.base_of(id, parent)?;
        let (list, _, _) = diff::changes(self, id, base.as_deref())?;
        diff::refuse_unexportable(id, &list)?;
        Ok(list)
    }

    fn apply_diff(
        &self,
        id: &str,
        parent: Option<&str>,
        diff: &mut (dyn Read + Send),
    ) -> Result<u64> {
        self.apply_diff_with(id, parent, diff, &ApplyParams::default())
    }

    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<u64> {
        let base = self.base_of(id, parent)?;
        let rec = self.store().record(id)?;
        // A layer that holds exactly what its apply wrote: the size accounted then (what
        // ApplyDiff returned, which is what dockerd records for image layers), no tree walk.
        if let (true, Some(size)) = (rec.exact && base == rec.parent, rec.size) {
            return Ok(size);
        }
        diff::size(self, id, base.as_deref())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            reproduces_exact_diffs: true,
        }
    }
}
