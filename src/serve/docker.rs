//! dockerd's legacy (v1) graph-driver plugin protocol, as dockerd 20.10 speaks it.
//!
//! Every call is `POST /<Method>` over a unix socket:
//!
//! | endpoint | request | response |
//! |---|---|---|
//! | `Plugin.Activate` | empty | `{"Implements": ["GraphDriver"]}` |
//! | `GraphDriver.Init` | `{"Home", "Opts", "UIDMaps", "GIDMaps"}` | `{}` |
//! | `GraphDriver.Capabilities` | `{}` | `{"Capabilities": {"ReproducesExactDiffs": b}}`, `b` as the store reports it |
//! | `.Create`, `.CreateReadWrite` | `{"ID", "Parent", "MountLabel", "StorageOpt"}` | `{}` |
//! | `.Remove`, `.Put` | `{"ID"}` | `{}` (removing a missing layer succeeds) |
//! | `.Get` | `{"ID", "MountLabel"}` | `{"Dir": "/abs/path"}` |
//! | `.Exists` | `{"ID"}` | `{"Exists": bool}` |
//! | `.Status` | `{}` | `{"Status": [["key", "value"], …]}` |
//! | `.GetMetadata` | `{"ID"}` | `{"Metadata": {…}}` |
//! | `.Cleanup` | `{}` | `{}` |
//! | `.Diff` | `{"ID", "Parent"}` | the raw tar stream |
//! | `.Changes` | `{"ID", "Parent"}` | `{"Changes": [{"Path": "/x", "Kind": 0}, …]}`, streamed |
//! | `.ApplyDiff?id=X&parent=Y` | the raw tar (chunked) | `{"Size": n}` |
//! | `.DiffSize` | `{"ID", "Parent"}` | `{"Size": n}` |
//!
//! Errors are `{"Err": "message"}` with a non-200 status. The empty string means "no parent",
//! as in dockerd's own drivers: `Diff(id, "")` is the whole layer, `Changes(id, "")` lists
//! every path as added and `DiffSize(id, "")` counts every file (dockerd itself always names
//! the parent it means).
//!
//! The store is opened at `Init`: at `Home` (`<data-root>/NAME`) unless the server was given
//! a root of its own. A second `Init` (dockerd restarted against a running plugin) is normal.
//! `Init`'s arguments are remembered in a state file, so that a plugin that restarts while
//! dockerd runs (dockerd sends `Init` only once) reopens the same store at start-up.
//! Requests are served concurrently: while `docker commit` streams a `Diff`, dockerd creates
//! and applies the new layer on another connection. Every request body is read in full (or
//! refused with a status), and a body that stops arriving for longer than the body timeout
//! fails its request; an apply fails and is rolled back.

mod handlers;
mod init;
#[cfg(test)]
mod tests;
mod wire;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::middleware;
use axum::routing::post;
use axum::Router;
use tracing::warn;

use self::init::Opened;
use crate::graph::Graph;
use crate::Error;

/// How long a request body may stop arriving before the request fails, unless configured.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(300);

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
    /// Skip the `syncfs` before an applied layer is committed (see
    /// [`crate::graph::GraphConfig::durable`]).
    pub no_sync: bool,
    /// Writer threads an apply uses for small files; `None` means the store's default.
    pub writers: Option<usize>,
    /// Where `Init`'s arguments are remembered (written atomically, mode 0600), and read back
    /// by [`DockerPlugin::restore`]; `None` remembers nothing.
    pub state_file: Option<PathBuf>,
    /// How long a request body may stop arriving; `None` means [`DEFAULT_BODY_TIMEOUT`].
    pub body_timeout: Option<Duration>,
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
    /// The request body is larger than the call accepts.
    #[error("the request body of {call} is larger than {limit} bytes")]
    TooLarge {
        /// The endpoint.
        call: String,
        /// The most bytes accepted.
        limit: usize,
    },
    /// The request body stopped arriving.
    #[error("the request body of {call} stalled: no data for {} s", .timeout.as_secs())]
    BodyTimeout {
        /// The endpoint.
        call: String,
        /// How long the plugin waited.
        timeout: Duration,
    },
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
            PluginError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            PluginError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            PluginError::NotInitialized => StatusCode::SERVICE_UNAVAILABLE,
            PluginError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
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
    /// A plugin that opens its store at the first `Init` (or at [`DockerPlugin::restore`]).
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
        use handlers as h;
        Router::new()
            .route("/Plugin.Activate", post(h::activate))
            .route("/GraphDriver.Init", post(h::init))
            .route("/GraphDriver.Capabilities", post(h::capabilities))
            .route("/GraphDriver.Create", post(h::create))
            .route("/GraphDriver.CreateReadWrite", post(h::create_rw))
            .route("/GraphDriver.Remove", post(h::remove))
            .route("/GraphDriver.Get", post(h::get))
            .route("/GraphDriver.Put", post(h::put))
            .route("/GraphDriver.Exists", post(h::exists))
            .route("/GraphDriver.Status", post(h::status))
            .route("/GraphDriver.GetMetadata", post(h::metadata))
            .route("/GraphDriver.Cleanup", post(h::cleanup))
            .route("/GraphDriver.Diff", post(h::diff))
            .route("/GraphDriver.Changes", post(h::changes))
            .route("/GraphDriver.ApplyDiff", post(h::apply_diff))
            .route("/GraphDriver.DiffSize", post(h::diff_size))
            .fallback(h::unknown)
            .layer(middleware::from_fn(h::log_request))
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

    fn body_timeout(&self) -> Duration {
        self.shared
            .config
            .body_timeout
            .unwrap_or(DEFAULT_BODY_TIMEOUT)
    }

    /// Undoes the private bind of the store root, if this plugin made it and no layer is
    /// mounted below it any more.
    fn release(&self) {
        let mut opened = self.lock();
        let Some(o) = opened.as_mut() else { return };
        if let Some(dir) = o.private_bind.clone() {
            match super::release_private_mount(&dir) {
                Ok(true) => o.private_bind = None,
                Ok(false) => {}
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "could not undo the private bind")
                }
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
}
