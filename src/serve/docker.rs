//! dockerd's legacy (v1) graph-driver plugin protocol, as dockerd 20.10 speaks it.
//!
//! Every call is `POST /<Method>` over a unix socket:
//!
//! | endpoint | request | response |
//! |---|---|---|
//! | `Plugin.Activate` | empty | `{"Implements": ["GraphDriver"]}` |
//! | `GraphDriver.Init` | `{"Home", "Opts", "UIDMaps", "GIDMaps"}` | `{}` |
//! | `GraphDriver.Capabilities` | `{}` | `{"Capabilities": {"ReproducesExactDiffs": false}}` |
//! | `.Create`, `.CreateReadWrite` | `{"ID", "Parent", "MountLabel", "StorageOpt"}` | `{}` |
//! | `.Remove`, `.Put` | `{"ID"}` | `{}` (removing a missing layer succeeds) |
//! | `.Get` | `{"ID", "MountLabel"}` | `{"Dir": "/abs/path"}` |
//! | `.Exists` | `{"ID"}` | `{"Exists": bool}` |
//! | `.Status` | `{}` | `{"Status": [["key", "value"], …]}` |
//! | `.GetMetadata` | `{"ID"}` | `{"Metadata": {…}}` |
//! | `.Cleanup` | `{}` | `{}` |
//! | `.Diff` | `{"ID", "Parent"}` | the raw tar stream |
//! | `.Changes` | `{"ID", "Parent"}` | `{"Changes": [{"Path": "/x", "Kind": 0}, …]}` |
//! | `.ApplyDiff?id=X&parent=Y` | the raw tar (chunked) | `{"Size": n}` |
//! | `.DiffSize` | `{"ID", "Parent"}` | `{"Size": n}` |
//!
//! Errors are `{"Err": "message"}` with a non-200 status. The empty string means "no parent"
//! (and, for diff-like calls, the layer's own parent, which is what dockerd means by it).
//!
//! The store is opened at `Init`: at `Home` (`<data-root>/NAME`) unless the server was given
//! a root of its own. A second `Init` (dockerd restarted against a running plugin) is normal.
//! Requests are served concurrently: while `docker commit` streams a `Diff`, dockerd creates
//! and applies the new layer on another connection.

#[cfg(test)]
mod tests;
mod wire;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use self::wire::{opt, Args};
use super::stream;
use crate::graph::{Graph, GraphConfig};
use crate::{CreateOpts, Driver, Error};

/// How the plugin opens its store.
#[derive(Debug, Clone, Default)]
pub struct PluginConfig {
    /// The plugin's name (dockerd's `--storage-driver`); `NAME.key=value` options from dockerd
    /// are accepted as `key=value`.
    pub name: String,
    /// Store root; `None` means `Init`'s `Home`.
    pub root: Option<PathBuf>,
    /// Backend; `None` means the store's recorded one, or the best available for a new store.
    pub driver: Option<String>,
    /// Driver options (`KEY=VALUE`) given to the server; `Init`'s `Opts` are added after them.
    pub options: Vec<String>,
    /// Binary to run applies in, confined (see [`crate::archive::confined`]); `None` applies
    /// in the server process.
    pub apply_helper: Option<PathBuf>,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] Error),
    /// The request does not follow the protocol.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A request that needs the store came before `GraphDriver.Init`.
    #[error("the plugin has no store yet: dockerd must call GraphDriver.Init first")]
    NotInitialized,
    /// A worker task died (a bug); the message says how.
    #[error("internal error: {0}")]
    Internal(String),
}

impl PluginError {
    fn status(&self) -> StatusCode {
        match self {
            PluginError::Store(e) => match e {
                Error::NotFound(_) | Error::ParentNotFound { .. } => StatusCode::NOT_FOUND,
                Error::AlreadyExists(_)
                | Error::HasChildren { .. }
                | Error::Mounted { .. }
                | Error::Busy { .. }
                | Error::Locked { .. } => StatusCode::CONFLICT,
                Error::InvalidId { .. }
                | Error::InvalidOption { .. }
                | Error::Invalid { .. }
                | Error::NotMounted(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            PluginError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PluginError::NotInitialized => StatusCode::SERVICE_UNAVAILABLE,
            PluginError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What the request log line says about a call, attached to its response.
#[derive(Debug, Clone, Default)]
struct CallInfo {
    id: String,
    parent: String,
    error: Option<String>,
}

impl IntoResponse for PluginError {
    fn into_response(self) -> Response {
        let msg = self.to_string();
        let mut resp = wire::json(self.status(), &json!({ "Err": msg }));
        resp.extensions_mut().insert(CallInfo {
            error: Some(msg),
            ..CallInfo::default()
        });
        resp
    }
}

/// The options that identify an opened store; a repeated `Init` with the same ones reuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OpenKey {
    root: PathBuf,
    options: Vec<String>,
}

struct Opened {
    key: OpenKey,
    graph: Graph,
    /// The store root, made a private mount by us.
    private_bind: Option<PathBuf>,
}

struct Shared {
    config: PluginConfig,
    opened: Mutex<Option<Opened>>,
    init: Mutex<()>,
}

/// The plugin server. Cheap to clone; clones share one store.
#[derive(Clone)]
pub struct DockerPlugin {
    shared: Arc<Shared>,
}

impl DockerPlugin {
    /// A plugin that opens its store at the first `Init`.
    pub fn new(config: PluginConfig) -> DockerPlugin {
        DockerPlugin {
            shared: Arc::new(Shared {
                config,
                opened: Mutex::new(None),
                init: Mutex::new(()),
            }),
        }
    }

    /// The HTTP routes of the protocol.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/Plugin.Activate", post(activate))
            .route("/GraphDriver.Init", post(init))
            .route("/GraphDriver.Capabilities", post(capabilities))
            .route("/GraphDriver.Create", post(create))
            .route("/GraphDriver.CreateReadWrite", post(create_rw))
            .route("/GraphDriver.Remove", post(remove))
            .route("/GraphDriver.Get", post(get))
            .route("/GraphDriver.Put", post(put))
            .route("/GraphDriver.Exists", post(exists))
            .route("/GraphDriver.Status", post(status))
            .route("/GraphDriver.GetMetadata", post(metadata))
            .route("/GraphDriver.Cleanup", post(cleanup))
            .route("/GraphDriver.Diff", post(diff))
            .route("/GraphDriver.Changes", post(changes))
            .route("/GraphDriver.ApplyDiff", post(apply_diff))
            .route("/GraphDriver.DiffSize", post(diff_size))
            .fallback(unknown)
            .layer(middleware::from_fn(log_request))
            .with_state(self.clone())
    }

    /// Serves `listener` until `shutdown` resolves, then stops accepting connections and
    /// waits for the requests in flight (an apply either completes or is rolled back by the
    /// store's staging). Afterwards the private bind of the store root is undone if no layer
    /// is mounted any more.
    pub async fn serve(
        &self,
        listener: tokio::net::UnixListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await;
        self.release();
        result
    }

    /// The opened store, if `Init` has been called.
    pub fn graph(&self) -> Option<Graph> {
        self.lock().as_ref().map(|o| o.graph.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Opened>> {
        self.shared.opened.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self) {
        if let Some(dir) = self.lock().as_ref().and_then(|o| o.private_bind.clone()) {
            if let Err(e) = super::release_private_mount(&dir) {
                warn!(dir = %dir.display(), error = %e, "could not undo the private bind");
            }
        }
    }

    /// Runs `f` with the store on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Graph) -> Result<T, PluginError> + Send + 'static,
    ) -> Result<T, PluginError> {
        let graph = self.graph().ok_or(PluginError::NotInitialized)?;
        tokio::task::spawn_blocking(move || f(graph))
            .await
            .map_err(|e| PluginError::Internal(format!("worker task failed: {e}")))?
    }

    /// `GraphDriver.Init`: opens the store (or keeps the one opened by an earlier `Init` with
    /// the same root and options) and makes the store root a private mount.
    fn init(&self, home: &str, opts: &[String]) -> Result<(), PluginError> {
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
        let key = OpenKey { root, options };
        // Inits are serialised; `opened` itself is only ever held for a moment, because
        // request handlers read it from async context.
        let _one_init = self.shared.init.lock().unwrap_or_else(|p| p.into_inner());
        // Requests keep being served by the current store until the new one replaces it.
        let reuse = self
            .lock()
            .as_ref()
            .filter(|o| o.key == key)
            .map(|o| (o.graph.clone(), o.private_bind.clone()));
        let reused = reuse.is_some();
        let (graph, mut private_bind) = match reuse {
            Some(open) => {
                info!(root = %key.root.display(), "Init again: keeping the open store");
                open
            }
            None => {
                let mut gc = GraphConfig::new(&key.root);
                gc.driver = config.driver.clone();
                gc.options = key.options.clone();
                gc.apply_helper = config.apply_helper.clone();
                // dockerd waits on Remove; the files can go after the answer.
                gc.background_remove = true;
                let graph = Graph::open(gc)?;
                info!(root = %graph.store().root().display(), driver = graph.name(), "store opened");
                // Same root, other options: the bind made for the previous store stays ours.
                let inherited = self
                    .lock()
                    .as_ref()
                    .and_then(|o| o.private_bind.clone())
                    .filter(|d| d == graph.store().root());
                (graph, inherited)
            }
        };
        // The whole root, not just layers/: staging/ and layers/ must stay on one mount, or
        // moving a staged layer into place fails with EXDEV. dockerd detaches its data-root
        // (and with it this bind) when it stops, so check again at every Init.
        let root = graph.store().root().to_path_buf();
        match super::make_private_mount(&root) {
            Ok(true) => private_bind = Some(root),
            Ok(false) => {}
            Err(e) => {
                warn!(dir = %root.display(), error = %e, "could not make the store root a private mount")
            }
        }
        let previous = self.lock().replace(Opened {
            key,
            graph,
            private_bind: private_bind.clone(),
        });
        if let Some(dir) = previous
            .filter(|_| !reused)
            .and_then(|o| o.private_bind)
            .filter(|d| Some(d) != private_bind.as_ref())
        {
            if let Err(e) = super::release_private_mount(&dir) {
                warn!(dir = %dir.display(), error = %e, "could not undo the private bind");
            }
        }
        Ok(())
    }
}

type Reply = Result<Response, PluginError>;

fn ok(body: Value) -> Reply {
    Ok(wire::json(StatusCode::OK, &body))
}

/// Tags a reply with the layer it was about, for the request log.
fn tagged(reply: Reply, id: &str, parent: &str) -> Response {
    let mut resp = reply.into_response();
    match resp.extensions_mut().get_mut::<CallInfo>() {
        Some(info) => {
            info.id = id.to_string();
            info.parent = parent.to_string();
        }
        None => {
            resp.extensions_mut().insert(CallInfo {
                id: id.to_string(),
                parent: parent.to_string(),
                error: None,
            });
        }
    }
    resp
}

/// One log line per request: debug when it succeeded, warn when it failed.
async fn log_request(req: Request, next: Next) -> Response {
    let call = req.uri().path().trim_start_matches('/').to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let info = resp
        .extensions()
        .get::<CallInfo>()
        .cloned()
        .unwrap_or_default();
    let ms = start.elapsed().as_millis() as u64;
    let status = resp.status().as_u16();
    match &info.error {
        None => debug!(
            call,
            id = info.id,
            parent = info.parent,
            status,
            ms,
            "request"
        ),
        Some(e) => {
            warn!(call, id = info.id, parent = info.parent, status, ms, error = %e, "request failed")
        }
    }
    resp
}

/// The common shape of `{"ID", "Parent", "MountLabel", "StorageOpt"}` requests.
struct LayerArgs {
    id: String,
    parent: String,
    mount_label: String,
    storage_opt: std::collections::BTreeMap<String, String>,
}

impl LayerArgs {
    fn parse(body: &[u8]) -> Result<LayerArgs, PluginError> {
        let a = Args::parse(body)?;
        Ok(LayerArgs {
            id: a.string("ID")?,
            parent: a.string("Parent")?,
            mount_label: a.string("MountLabel")?,
            storage_opt: a.string_map("StorageOpt")?,
        })
    }
}

/// Parses a layer request, runs `f` on the blocking pool and tags the reply.
async fn layer_call(
    p: DockerPlugin,
    body: Bytes,
    f: impl FnOnce(&Graph, &LayerArgs) -> Result<Value, PluginError> + Send + 'static,
) -> Response {
    let args = match LayerArgs::parse(&body) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let (id, parent) = (args.id.clone(), args.parent.clone());
    let reply = p.blocking(move |g| f(&g, &args)).await.and_then(ok);
    tagged(reply, &id, &parent)
}

async fn activate() -> Response {
    wire::json(StatusCode::OK, &json!({ "Implements": ["GraphDriver"] }))
}

async fn init(State(p): State<DockerPlugin>, body: Bytes) -> Response {
    let reply = async {
        let a = Args::parse(&body)?;
        let home = a.string("Home")?;
        let opts = a.strings("Opts")?;
        if a.list_len("UIDMaps")? > 0 || a.list_len("GIDMaps")? > 0 {
            return Err(PluginError::Store(Error::Unsupported(
                "strata does not support user-namespace remapping (dockerd --userns-remap)".into(),
            )));
        }
        let plugin = p.clone();
        tokio::task::spawn_blocking(move || plugin.init(&home, &opts))
            .await
            .map_err(|e| PluginError::Internal(format!("worker task failed: {e}")))??;
        ok(json!({}))
    }
    .await;
    tagged(reply, "", "")
}

async fn capabilities(State(p): State<DockerPlugin>) -> Response {
    let caps = p.graph().map(|g| g.capabilities()).unwrap_or_default();
    wire::json(
        StatusCode::OK,
        &json!({ "Capabilities": { "ReproducesExactDiffs": caps.reproduces_exact_diffs } }),
    )
}

fn create_opts(a: &LayerArgs) -> CreateOpts {
    CreateOpts {
        mount_label: a.mount_label.clone(),
        storage_opt: a.storage_opt.clone(),
    }
}

async fn create(State(p): State<DockerPlugin>, body: Bytes) -> Response {
    layer_call(p, body, |g, a| {
        g.create(&a.id, opt(&a.parent), &create_opts(a))?;
        Ok(json!({}))
    })
    .await
}

async fn create_rw(State(p): State<DockerPlugin>, body: Bytes) -> Response {
    layer_call(p, body, |g, a| {
        g.create_rw(&a.id, opt(&a.parent), &create_opts(a))?;
        Ok(json!({}))
    })
    .await
}

async fn remove(State(p): State<DockerPlugin>, body: Bytes) -> Response {
    layer_call(p, body, |g, a| match g.remove(&a.id) {
        // dockerd retries removals; like overlay2, a layer that is gone is removed.
        Ok(()) => Ok(json!({})),
        Err(e) if e.is_not_found() => Ok(json!({})),
        Err(e) => Err(e.into()),
    })
    .await
}

async fn get(State(p): State<DockerPlugin>, body: Bytes) -> Response {
    layer_call(p, body, |g, a| {
        let dir = g.get(&a.id, &a.mount_label)?;
        Ok(json!({ "Dir": dir.to_string_lossy() }))
    })
    .await
}

async fn put(State(p): State<DockerPlugin>, body: Bytes) -> Response {
    layer_call(p, body, |g, a| match g.put(&a.id) {
        // dockerd may release a container's layer without having mounted it since it
        // started (cleaning up after a crash); overlay2 and vfs accept that, so do we.
        Ok(()) | Err(Error::NotMounted(_)) => Ok(json!({})),
        Err(e) => Err(e.into()),
    })
    .await
}

async fn exists(State(p): State<DockerPlugin>, body: Bytes) -> Response {
    layer_call(p, body, |g, a| Ok(json!({ "Exists": g.exists(&a.id)? }))).await
}

async fn status(State(p): State<DockerPlugin>) -> Response {
    let reply = p.blocking(|g| Ok(g.status()?)).await.and_then(|pairs| {
        let list: Vec<[String; 2]> = pairs.into_iter().map(|(k, v)| [k, v]).collect();
        ok(json!({ "Status": list }))
    });
    tagged(reply, "", "")
}

async fn metadata(State(p): State<DockerPlugin>, body: Bytes) -> Response {
    layer_call(p, body, |g, a| {
        Ok(json!({ "Metadata": g.metadata(&a.id)? }))
    })
    .await
}

async fn cleanup(State(p): State<DockerPlugin>) -> Response {
    let reply = p
        .blocking(|g| Ok(g.cleanup()?))
        .await
        .and_then(|()| ok(json!({})));
    tagged(reply, "", "")
}

async fn changes(State(p): State<DockerPlugin>, body: Bytes) -> Response {
    layer_call(p, body, |g, a| {
        let list: Vec<Value> = g
            .changes(&a.id, opt(&a.parent))?
            .iter()
            .map(|c| json!({ "Path": c.path.to_string_lossy(), "Kind": c.kind.code() }))
            .collect();
        Ok(json!({ "Changes": list }))
    })
    .await
}

async fn diff_size(State(p): State<DockerPlugin>, body: Bytes) -> Response {
    layer_call(p, body, |g, a| {
        Ok(json!({ "Size": g.diff_size(&a.id, opt(&a.parent))? }))
    })
    .await
}

/// `GraphDriver.Diff`: the 200 body is the raw tar. Errors can only be reported before the
/// first byte, so the export is started (and its first chunk read) before answering.
async fn diff(State(p): State<DockerPlugin>, body: Bytes) -> Response {
    let args = match LayerArgs::parse(&body) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let (id, parent) = (args.id, args.parent);
    let reply = async {
        let (i, pa) = (id.clone(), parent.clone());
        let tar = p.blocking(move |g| Ok(g.diff(&i, opt(&pa))?)).await?;
        let body = stream::stream_body(tar)
            .await
            .map_err(|e| PluginError::Store(Error::io(format!("exporting layer {id:?}"), e)))?;
        Ok(Response::new(body))
    }
    .await;
    tagged(reply, &id, &parent)
}

/// Bytes of trailing padding after a tar's end that are read and discarded.
const DRAIN_LIMIT: u64 = 1 << 20;

/// `GraphDriver.ApplyDiff?id=X&parent=Y`: the body (the raw tar, usually chunked) flows into
/// the store's apply as it arrives.
async fn apply_diff(State(p): State<DockerPlugin>, RawQuery(q): RawQuery, body: Body) -> Response {
    let (id, parent) = match wire::apply_query(q.as_deref()) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let mut reader = stream::body_reader(body);
    let (i, pa) = (id.clone(), parent.clone());
    let reply = p
        .blocking(move |g| {
            let applied = g.apply_diff(&i, opt(&pa), &mut reader);
            // Read what is left so that the answer reaches a client still sending (bounded:
            // a failed apply of a huge tar just closes the connection).
            if !stream::drain(&mut reader, DRAIN_LIMIT) && applied.is_ok() {
                warn!(layer = %i, "more than 1 MiB of data after the end of the tar; ignored");
            }
            Ok(applied?)
        })
        .await
        .and_then(|size| ok(json!({ "Size": size })));
    tagged(reply, &id, &parent)
}

async fn unknown(req: Request) -> Response {
    let msg = format!(
        "{} {} is not part of the graph-driver plugin protocol",
        req.method(),
        req.uri().path()
    );
    let mut resp = wire::json(StatusCode::NOT_FOUND, &json!({ "Err": msg }));
    resp.extensions_mut().insert(CallInfo {
        error: Some(msg),
        ..CallInfo::default()
    });
    resp
}
