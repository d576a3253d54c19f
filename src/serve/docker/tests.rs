//! Protocol tests without dockerd: an in-process server on a temporary unix socket and a
//! plain hyper HTTP/1 client sending what dockerd 20.10's Go client sends.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use super::{DockerPlugin, PluginConfig};
use crate::sys::{mount, mountinfo};

mod contract;
mod deep;

/// A plugin server in this process on a socket in a temporary directory.
struct Server {
    dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    async fn start() -> Server {
        Server::start_with(|_, _| {}).await
    }

    /// A server whose configuration (vfs, no state file) `adjust` may change; `dir` is the
    /// temporary directory it gets.
    async fn start_with(adjust: impl FnOnce(&Path, &mut PluginConfig)) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("plugin.sock");
        let (listener, _file) = crate::serve::bind_unix(&socket).expect("bind");
        let mut config = PluginConfig {
            name: "strata-test".into(),
            driver: Some("vfs".into()),
            ..PluginConfig::default()
        };
        adjust(dir.path(), &mut config);
        let plugin = DockerPlugin::new(config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            plugin
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
        });
        Server {
            dir,
            socket,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    async fn init(&self) {
        let (status, body) = self
            .post_json(
                "/GraphDriver.Init",
                json!({"Home": self.home(), "Opts": null, "UIDMaps": null, "GIDMaps": null}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// Signals shutdown without waiting for it.
    fn begin_stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    async fn stop(mut self) {
        self.begin_stop();
        if let Some(t) = self.task.take() {
            let done = tokio::time::timeout(Duration::from_secs(30), t).await;
            done.expect("server stops within 30 s")
                .expect("server task")
                .expect("serve");
        }
        let left = mountinfo::mounts_under(&mountinfo::read().unwrap(), self.dir.path());
        assert!(left.is_empty(), "mounts left behind: {left:?}");
    }

    async fn post(&self, path: &str, body: Full<Bytes>) -> (StatusCode, Bytes) {
        let resp = send(&self.socket, path, body).await;
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }

    async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        // Go's json.Encoder ends the document with a newline.
        let (status, bytes) = self
            .post(path, Full::new(Bytes::from(format!("{body}\n"))))
            .await;
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{path}: answer is not JSON ({e}): {bytes:?}"));
        (status, v)
    }

    /// `Diff` of `id` against `parent` (`""`: nothing): the response, body unread.
    async fn diff(&self, id: &str, parent: &str) -> hyper::Response<hyper::body::Incoming> {
        let body = Full::new(Bytes::from(format!(
            "{}\n",
            json!({ "ID": id, "Parent": parent })
        )));
        send(&self.socket, "/GraphDriver.Diff", body).await
    }

    /// `ApplyDiff` with a chunked body sent in pieces.
    async fn apply(&self, id: &str, parent: &str, tar: Vec<u8>) -> (StatusCode, Value) {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
        tokio::spawn(async move {
            for chunk in tar.chunks(10_000) {
                if tx
                    .send(Ok(Frame::data(Bytes::copy_from_slice(chunk))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|f| (f, rx))
        }));
        let resp = send(
            &self.socket,
            &format!("/GraphDriver.ApplyDiff?id={id}&parent={parent}"),
            body,
        )
        .await;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).expect("JSON answer"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only reached with mounts when a test failed before stop().
        if let Ok(table) = mountinfo::read() {
            for m in mountinfo::mounts_under(&table, self.dir.path()) {
                let _ = mount::unmount(&m.mount_point);
            }
        }
    }
}

async fn send<B>(socket: &Path, path: &str, body: B) -> hyper::Response<hyper::body::Incoming>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = UnixStream::connect(socket).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::post(path)
        .header("Host", "plugin.moby.localhost")
        .header("Accept", "application/vnd.docker.plugins.v1.2+json")
        .body(body)
        .unwrap();
    sender.send_request(req).await.expect("request")
}

/// A tar with `files` regular files of `size` bytes each, in a few directories.
fn sample_tar(files: usize, size: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for d in 0..4 {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, format!("dir{d}"), std::io::empty())
            .unwrap();
    }
    for i in 0..files {
        let data: Vec<u8> = (0..size).map(|j| (i * 31 + j * 7) as u8).collect();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(size as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, format!("dir{}/file{i}", i % 4), &data[..])
            .unwrap();
    }
    b.into_inner().unwrap()
}

/// Regular files of a tar: (path, content), sorted.
fn tar_files(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(tar);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type() == tar::EntryType::Regular {
            let p = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            out.push((p, v));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_and_answer_shapes() {
    let s = Server::start().await;
    // Activate: empty body, exactly this answer.
    let (status, body) = s.post("/Plugin.Activate", Full::new(Bytes::new())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"Implements": ["GraphDriver"]})
    );
    // Before Init there is no store: an error, in the protocol's error shape.
    let (status, v) = s.post_json("/GraphDriver.Status", json!({})).await;
    assert_ne!(status, StatusCode::OK);
    assert!(v["Err"].as_str().unwrap().contains("Init"), "{v}");
    s.init().await;
    // Capabilities are wrapped (the published docs show them unwrapped).
    let (status, v) = s.post_json("/GraphDriver.Capabilities", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({"Capabilities": {"ReproducesExactDiffs": true}}));
    // Status: a list of pairs.
    let (_, v) = s.post_json("/GraphDriver.Status", json!({})).await;
    let pairs = v["Status"].as_array().expect("Status list");
    assert!(pairs.iter().any(|p| p == &json!(["Driver", "vfs"])), "{v}");
    // A missing layer: Exists false, Remove succeeds, Get fails with {"Err"}.
    let (status, v) = s
        .post_json("/GraphDriver.Exists", json!({"ID": "nope"}))
        .await;
    assert_eq!((status, v), (StatusCode::OK, json!({"Exists": false})));
    let (status, _) = s
        .post_json("/GraphDriver.Remove", json!({"ID": "nope"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = s.post_json("/GraphDriver.Get", json!({"ID": "nope"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["Err"].as_str().unwrap().contains("does not exist"), "{v}");
    // Keys are case-insensitive; absent keys are empty (no parent).
    let (status, v) = s
        .post_json("/GraphDriver.Create", json!({"id": "base"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, v) = s
        .post_json("/GraphDriver.Exists", json!({"Id": "base"}))
        .await;
    assert_eq!(v, json!({"Exists": true}));
    let (status, v) = s
        .post_json(
            "/GraphDriver.CreateReadWrite",
            json!({"ID": "ctr", "Parent": "base", "MountLabel": "", "StorageOpt": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, v) = s.post_json("/GraphDriver.Get", json!({"ID": "ctr"})).await;
    let dir = PathBuf::from(v["Dir"].as_str().expect("Dir"));
    assert!(dir.is_absolute() && dir.is_dir(), "{v}");
    std::fs::write(dir.join("hello"), b"hi").unwrap();
    let (_, v) = s
        .post_json(
            "/GraphDriver.Changes",
            json!({"ID": "ctr", "Parent": "base"}),
        )
        .await;
    assert_eq!(v, json!({"Changes": [{"Path": "/hello", "Kind": 1}]}));
    let (_, v) = s
        .post_json(
            "/GraphDriver.DiffSize",
            json!({"ID": "ctr", "Parent": "base"}),
        )
        .await;
    assert_eq!(v, json!({"Size": 2}));
    let (_, v) = s
        .post_json("/GraphDriver.GetMetadata", json!({"ID": "ctr"}))
        .await;
    assert!(v["Metadata"].is_object(), "{v}");
    let (status, _) = s.post_json("/GraphDriver.Put", json!({"ID": "ctr"})).await;
    assert_eq!(status, StatusCode::OK);
    // A Put without a Get is accepted (as overlay2 and vfs do); of a missing layer it is not.
    let (status, _) = s.post_json("/GraphDriver.Put", json!({"ID": "ctr"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.post_json("/GraphDriver.Put", json!({"ID": "nope"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Errors: a refused removal, a malformed body, an unknown endpoint.
    let (status, v) = s
        .post_json("/GraphDriver.Remove", json!({"ID": "base"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(v["Err"].as_str().unwrap().contains("child"), "{v}");
    let (status, body) = s
        .post(
            "/GraphDriver.Create",
            Full::new(Bytes::from_static(b"{\"ID\":")),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["Err"].as_str().unwrap().contains("not JSON"), "{v}");
    let (status, v) = s.post_json("/GraphDriver.Frobnicate", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["Err"].is_string(), "{v}");
    // Init's Opts are driver options (`NAME.key` or `key`); one the backend cannot honour
    // fails Init with the store's message, and the open store stays in service.
    for (opt, named) in [("strata-test.size=1G", "size"), ("colour=blue", "colour")] {
        let init = json!({"Home": s.home(), "Opts": [opt]});
        let (status, v) = s.post_json("/GraphDriver.Init", init).await;
        assert_ne!(status, StatusCode::OK);
        assert!(v["Err"].as_str().unwrap().contains(named), "{v}");
    }
    let (_, v) = s
        .post_json("/GraphDriver.Exists", json!({"ID": "ctr"}))
        .await;
    assert_eq!(v, json!({"Exists": true}));
    // A second Init (dockerd restarted) keeps the store.
    s.init().await;
    let (_, v) = s
        .post_json("/GraphDriver.Exists", json!({"ID": "ctr"}))
        .await;
    assert_eq!(v, json!({"Exists": true}));
    for id in ["ctr", "base"] {
        let (status, v) = s.post_json("/GraphDriver.Remove", json!({"ID": id})).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    let (status, _) = s.post_json("/GraphDriver.Cleanup", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_diff_chunked_and_diff_streaming_round_trip() {
    let s = Server::start().await;
    s.init().await;
    let tar = sample_tar(300, 20_000);
    let (status, v) = s
        .post_json("/GraphDriver.Create", json!({"ID": "l1"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = s.apply("l1", "", tar.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"Size": 300 * 20_000}));
    // Diff: a 200 whose body is the raw tar.
    let resp = s.diff("l1", "").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(tar_files(&got), tar_files(&tar));
    // A child applied with its parent in the query; a wrong parent is refused.
    s.post_json("/GraphDriver.Create", json!({"ID": "l2", "Parent": "l1"}))
        .await;
    let (status, v) = s.apply("l2", "l0", sample_tar(1, 10)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = s.apply("l2", "l1", sample_tar(1, 10)).await;
    assert_eq!((status, v), (StatusCode::OK, json!({"Size": 10})));
    // An apply of garbage fails with a message and leaves the layer as it was.
    let (status, v) = s.apply("l2", "l1", vec![b'x'; 5000]).await;
    assert_ne!(status, StatusCode::OK);
    assert!(v["Err"].is_string(), "{v}");
    let kept = s
        .diff("l2", "l1")
        .await
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(tar_files(&kept.to_bytes()), tar_files(&sample_tar(1, 10)));
    // Diff errors come before the stream, as a status.
    let (status, v) = s
        .post_json("/GraphDriver.Diff", json!({"ID": "nope"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    s.stop().await;
}

/// `docker commit`: dockerd reads a Diff while it creates and applies the new layer on another
/// connection. A server that answers one request at a time deadlocks here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_served_while_a_diff_streams() {
    let s = Server::start().await;
    s.init().await;
    let tar = sample_tar(200, 50_000); // ~10 MB: far more than socket buffers hold
    s.post_json("/GraphDriver.Create", json!({"ID": "src"}))
        .await;
    let (status, v) = s.apply("src", "", tar.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let resp = s.diff("src", "").await;
    assert_eq!(resp.status(), StatusCode::OK);
    // The Diff body is not read yet; the other calls must go through regardless.
    let others = async {
        let (status, v) = s
            .post_json("/GraphDriver.Create", json!({"ID": "dst"}))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let (status, v) = s.apply("dst", "", sample_tar(3, 100)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let calls = (0..8).map(|_| s.post_json("/GraphDriver.Status", json!({})));
        for (status, _) in futures_util::future::join_all(calls).await {
            assert_eq!(status, StatusCode::OK);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), others)
        .await
        .expect("requests beside a streaming Diff must not wait for it");
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(tar_files(&got), tar_files(&tar));
    s.stop().await;
}

/// SIGTERM's path: once shutdown begins, no new connection is served, but an apply whose body
/// is still arriving completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_apply_in_flight_finish() {
    let mut s = Server::start().await;
    s.init().await;
    s.post_json("/GraphDriver.Create", json!({"ID": "slow"}))
        .await;
    let tar = sample_tar(50, 10_000);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|f| (f, rx))
    }));
    let socket = s.socket.clone();
    let call = tokio::spawn(async move {
        let resp = send(&socket, "/GraphDriver.ApplyDiff?id=slow&parent=", body).await;
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    });
    let (first, rest) = tar.split_at(tar.len() / 2);
    tx.send(Ok(Frame::data(Bytes::copy_from_slice(first))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.begin_stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = match UnixStream::connect(&s.socket).await {
        Err(_) => true,
        Ok(stream) => {
            // Accepted by the kernel's backlog at most: no answer comes.
            let probe = async {
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                let req = Request::post("/Plugin.Activate")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                sender.send_request(req).await
            };
            !matches!(
                tokio::time::timeout(Duration::from_secs(2), probe).await,
                Ok(Ok(_))
            )
        }
    };
    assert!(refused, "a new connection was served after shutdown began");
    tx.send(Ok(Frame::data(Bytes::copy_from_slice(rest))))
        .await
        .unwrap();
    drop(tx);
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the apply in flight finishes")
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"Size": 50 * 10_000})
    );
    s.stop().await;
}
