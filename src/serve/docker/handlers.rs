//! The endpoints: each reads its whole request body (bounded, with the body timeout), runs
//! the store call on the blocking pool and answers in the protocol's shape.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tracing::{debug, warn};

use super::wire::{self, base, Args};
use super::{DockerPlugin, PluginError};
use crate::graph::Graph;
use crate::serve::stream;
use crate::{CreateOpts, Driver, Error};

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
pub(super) async fn log_request(req: Request, next: Next) -> Response {
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

/// Reads a whole JSON request body (see [`wire::read_body`]) and decodes it.
async fn read_args(p: &DockerPlugin, call: &str, body: Body) -> Result<Args, PluginError> {
    let bytes = wire::read_body(call, body, p.body_timeout()).await?;
    Args::parse(&bytes)
}

/// The common shape of `{"ID", "Parent", "MountLabel", "StorageOpt"}` requests.
struct LayerArgs {
    id: String,
    parent: String,
    mount_label: String,
    storage_opt: std::collections::BTreeMap<String, String>,
}

impl LayerArgs {
    async fn read(p: &DockerPlugin, call: &str, body: Body) -> Result<LayerArgs, PluginError> {
        let a = read_args(p, call, body).await?;
        Ok(LayerArgs {
            id: a.string("ID")?,
            parent: a.string("Parent")?,
            mount_label: a.string("MountLabel")?,
            storage_opt: a.string_map("StorageOpt")?,
        })
    }
}

/// Reads a layer request, runs `f` on the blocking pool and tags the reply.
async fn layer_call(
    p: DockerPlugin,
    call: &str,
    body: Body,
    f: impl FnOnce(&Graph, &LayerArgs) -> Result<Value, PluginError> + Send + 'static,
) -> Response {
    let args = match LayerArgs::read(&p, call, body).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let (id, parent) = (args.id.clone(), args.parent.clone());
    let reply = p.blocking(move |g| f(&g, &args)).await.and_then(ok);
    tagged(reply, &id, &parent)
}

/// Runs a call without arguments: its body (`{}` or empty) is read and ignored, so that the
/// connection stays usable for the next request.
async fn plain_call(
    p: &DockerPlugin,
    call: &str,
    body: Body,
    f: impl std::future::Future<Output = Reply>,
) -> Response {
    let reply = match wire::read_body(call, body, p.body_timeout()).await {
        Ok(_) => f.await,
        Err(e) => Err(e),
    };
    tagged(reply, "", "")
}

pub(super) async fn activate(State(p): State<DockerPlugin>, body: Body) -> Response {
    plain_call(&p, "Plugin.Activate", body, async {
        ok(json!({ "Implements": ["GraphDriver"] }))
    })
    .await
}

pub(super) async fn init(State(p): State<DockerPlugin>, body: Body) -> Response {
    let reply = async {
        let a = read_args(&p, "GraphDriver.Init", body).await?;
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

pub(super) async fn capabilities(State(p): State<DockerPlugin>, body: Body) -> Response {
    let caps = p.graph().map(|g| g.capabilities()).unwrap_or_default();
    plain_call(&p, "GraphDriver.Capabilities", body, async {
        ok(json!({ "Capabilities": { "ReproducesExactDiffs": caps.reproduces_exact_diffs } }))
    })
    .await
}

fn create_opts(a: &LayerArgs) -> CreateOpts {
    CreateOpts {
        mount_label: a.mount_label.clone(),
        storage_opt: a.storage_opt.clone(),
    }
}

/// The protocol's "no parent" for a new layer: the empty string.
fn new_parent(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

pub(super) async fn create(State(p): State<DockerPlugin>, body: Body) -> Response {
    layer_call(p, "GraphDriver.Create", body, |g, a| {
        g.create(&a.id, new_parent(&a.parent), &create_opts(a))?;
        Ok(json!({}))
    })
    .await
}

pub(super) async fn create_rw(State(p): State<DockerPlugin>, body: Body) -> Response {
    layer_call(p, "GraphDriver.CreateReadWrite", body, |g, a| {
        g.create_rw(&a.id, new_parent(&a.parent), &create_opts(a))?;
        Ok(json!({}))
    })
    .await
}

pub(super) async fn remove(State(p): State<DockerPlugin>, body: Body) -> Response {
    layer_call(p, "GraphDriver.Remove", body, |g, a| {
        match g.remove(&a.id) {
            // dockerd retries removals; like overlay2, a layer that is gone is removed.
            Ok(()) => Ok(json!({})),
            Err(e) if e.is_not_found() => Ok(json!({})),
            Err(e) => Err(e.into()),
        }
    })
    .await
}

pub(super) async fn get(State(p): State<DockerPlugin>, body: Body) -> Response {
    layer_call(p, "GraphDriver.Get", body, |g, a| {
        let dir = g.get(&a.id, &a.mount_label)?;
        Ok(json!({ "Dir": dir.to_string_lossy() }))
    })
    .await
}

pub(super) async fn put(State(p): State<DockerPlugin>, body: Body) -> Response {
    layer_call(p, "GraphDriver.Put", body, |g, a| match g.put(&a.id) {
        // dockerd may release a container's layer without having mounted it since it
        // started (cleaning up after a crash); overlay2 and vfs accept that, so do we.
        Ok(()) | Err(Error::NotMounted(_)) => Ok(json!({})),
        Err(e) => Err(e.into()),
    })
    .await
}

pub(super) async fn exists(State(p): State<DockerPlugin>, body: Body) -> Response {
    layer_call(p, "GraphDriver.Exists", body, |g, a| {
        Ok(json!({ "Exists": g.exists(&a.id)? }))
    })
    .await
}

pub(super) async fn status(State(p): State<DockerPlugin>, body: Body) -> Response {
    let settings = p.lock().as_ref().map(|o| (o.durable, o.writers));
    plain_call(&p, "GraphDriver.Status", body, async {
        let mut pairs = p.blocking(|g| Ok(g.status()?)).await?;
        if let Some((durable, writers)) = settings {
            pairs.push(("Sync Before Commit".into(), durable.to_string()));
            pairs.push(("Apply Writers".into(), writers.to_string()));
        }
        let list: Vec<[String; 2]> = pairs.into_iter().map(|(k, v)| [k, v]).collect();
        ok(json!({ "Status": list }))
    })
    .await
}

pub(super) async fn metadata(State(p): State<DockerPlugin>, body: Body) -> Response {
    layer_call(p, "GraphDriver.GetMetadata", body, |g, a| {
        Ok(json!({ "Metadata": g.metadata(&a.id)? }))
    })
    .await
}

/// `GraphDriver.Cleanup` (dockerd is shutting down): releases every mount, then undoes the
/// private bind of the store root, as overlay2 unmounts its home.
pub(super) async fn cleanup(State(p): State<DockerPlugin>, body: Body) -> Response {
    let plugin = p.clone();
    plain_call(&p, "GraphDriver.Cleanup", body, async {
        p.blocking(move |g| {
            g.cleanup()?;
            plugin.release();
            plugin.persist()
        })
        .await?;
        ok(json!({}))
    })
    .await
}

/// `GraphDriver.Changes`: the list is streamed, one change at a time.
pub(super) async fn changes(State(p): State<DockerPlugin>, body: Body) -> Response {
    let args = match LayerArgs::read(&p, "GraphDriver.Changes", body).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let (id, parent) = (args.id, args.parent);
    let reply = async {
        let (i, pa) = (id.clone(), parent.clone());
        let list = p
            .blocking(move |g| Ok(g.changes_against(&i, base(&pa))?))
            .await?;
        let listing = |e| PluginError::Store(Error::io(format!("listing layer {id:?}"), e));
        let json = stream::json_change_set(list).map_err(listing)?;
        let body = stream::stream_body(json).await.map_err(listing)?;
        Ok(wire::json_stream(body))
    }
    .await;
    tagged(reply, &id, &parent)
}

pub(super) async fn diff_size(State(p): State<DockerPlugin>, body: Body) -> Response {
    layer_call(p, "GraphDriver.DiffSize", body, |g, a| {
        Ok(json!({ "Size": g.diff_size_against(&a.id, base(&a.parent))? }))
    })
    .await
}

/// `GraphDriver.Diff`: the 200 body is the raw tar. Errors can only be reported before the
/// first byte, so the export is started (and its first chunk read) before answering.
pub(super) async fn diff(State(p): State<DockerPlugin>, body: Body) -> Response {
    let args = match LayerArgs::read(&p, "GraphDriver.Diff", body).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let (id, parent) = (args.id, args.parent);
    let reply = async {
        let (i, pa) = (id.clone(), parent.clone());
        let tar = p
            .blocking(move |g| Ok(g.diff_against(&i, base(&pa))?))
            .await?;
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
/// the store's apply as it arrives. A body that stalls for longer than the body timeout fails
/// the apply, which the store rolls back.
pub(super) async fn apply_diff(
    State(p): State<DockerPlugin>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Response {
    let (id, parent) = match wire::apply_query(q.as_deref()) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let mut reader = stream::body_reader(body, p.body_timeout());
    let (i, pa) = (id.clone(), parent.clone());
    let reply = p
        .blocking(move |g| {
            let applied = g.apply_diff(&i, new_parent(&pa), &mut reader);
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

pub(super) async fn unknown(State(p): State<DockerPlugin>, req: Request) -> Response {
    let msg = format!(
        "{} {} is not part of the graph-driver plugin protocol",
        req.method(),
        req.uri().path()
    );
    let call = req.uri().path().to_string();
    // Read the body all the same: the connection stays usable.
    if let Err(e) = wire::read_body(&call, req.into_body(), p.body_timeout()).await {
        return e.into_response();
    }
    let mut resp = wire::json(StatusCode::NOT_FOUND, &json!({ "Err": msg }));
    resp.extensions_mut().insert(CallInfo {
        error: Some(msg),
        ..CallInfo::default()
    });
    resp
}
