//! The plugin's contract with dockerd beyond the message shapes: what `""` means, what
//! `Cleanup` leaves, stalled and unread bodies, the socket's mode, restarts, streamed
//! `Changes`, and the mounts of a store shared with the command line.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::StatusCode;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{sample_tar, send, tar_files, Server};
use crate::archive::{Change, ChangeKind};
use crate::graph::{Graph, GraphConfig};
use crate::serve::docker::{DockerPlugin, PluginConfig};
use crate::sys::{mount, mountinfo};
use crate::Driver;

/// A tar of one regular file.
fn one_file_tar(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, name, data).unwrap();
    b.into_inner().unwrap()
}

/// Paths and kinds of a `Changes` answer, sorted.
fn change_list(v: &Value) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = v["Changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no Changes list: {v}"))
        .iter()
        .map(|c| {
            (
                c["Path"].as_str().unwrap().to_string(),
                c["Kind"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// moby's contract: `""` is no parent, so `Diff`, `Changes` and `DiffSize` of a child cover
/// its parent's files too; a named parent limits them to the child's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_parent_means_no_parent() {
    let s = Server::start().await;
    s.init().await;
    s.post_json("/GraphDriver.Create", json!({"ID": "base"}))
        .await;
    let (status, v) = s.apply("base", "", one_file_tar("a", b"12345")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    s.post_json(
        "/GraphDriver.Create",
        json!({"ID": "top", "Parent": "base"}),
    )
    .await;
    let (status, v) = s.apply("top", "base", one_file_tar("x", b"xyz")).await;
    assert_eq!(status, StatusCode::OK, "{v}");

    let (_, v) = s
        .post_json("/GraphDriver.Changes", json!({"ID": "top", "Parent": ""}))
        .await;
    assert_eq!(change_list(&v), [("/a".into(), 1), ("/x".into(), 1)], "{v}");
    let (_, v) = s
        .post_json("/GraphDriver.Changes", json!({"ID": "top"}))
        .await;
    assert_eq!(change_list(&v), [("/a".into(), 1), ("/x".into(), 1)], "{v}");
    let (_, v) = s
        .post_json(
            "/GraphDriver.Changes",
            json!({"ID": "top", "Parent": "base"}),
        )
        .await;
    assert_eq!(change_list(&v), [("/x".into(), 1)], "{v}");

    let (_, v) = s
        .post_json("/GraphDriver.DiffSize", json!({"ID": "top", "Parent": ""}))
        .await;
    assert_eq!(v, json!({"Size": 8}));
    let (_, v) = s
        .post_json(
            "/GraphDriver.DiffSize",
            json!({"ID": "top", "Parent": "base"}),
        )
        .await;
    assert_eq!(v, json!({"Size": 3}));

    let whole = s.diff("top", "").await.into_body().collect().await.unwrap();
    let names: Vec<String> = tar_files(&whole.to_bytes())
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(names, ["a", "x"]);
    let own = s.diff("top", "base").await.into_body().collect().await;
    let names: Vec<String> = tar_files(&own.unwrap().to_bytes())
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(names, ["x"]);
    s.stop().await;
}

/// Whether `dir` is a mount point.
fn is_mount_point(dir: &Path) -> bool {
    mountinfo::read()
        .unwrap()
        .iter()
        .any(|m| m.mount_point == dir)
}

/// dockerd's `Cleanup` at shutdown: like overlay2, the plugin unmounts what it mounted on
/// its home, including the private bind of the store root made at `Init`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_the_private_bind() {
    let s = Server::start().await;
    s.init().await;
    assert!(
        is_mount_point(&s.home()),
        "Init did not make the store root a private mount"
    );
    let (status, v) = s.post_json("/GraphDriver.Cleanup", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(
        !is_mount_point(&s.home()),
        "the private bind of the store root outlived Cleanup"
    );
    // A later Init (dockerd started again) makes it again and serves the same store.
    s.init().await;
    assert!(is_mount_point(&s.home()));
    let (status, _) = s.post_json("/GraphDriver.Status", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}

/// The command line and the plugin on one store: a layer the command line mounted before
/// the plugin's `Init` is released by the command line's `put`, and after the plugin's
/// `Cleanup` nothing is mounted under the store root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_mounts_survive_the_plugin_private_bind_without_copies() {
    assert!(
        mount::kernel_has_overlay(),
        "this test needs overlayfs (modprobe overlay)"
    );
    let s = Server::start_with(|_, c| c.driver = Some("overlay".into())).await;
    let home = s.home();
    let cli = Graph::open({
        let mut gc = GraphConfig::new(&home);
        gc.driver = Some("overlay".into());
        gc
    })
    .expect("opening the store like the command line");
    cli.create("base", None, &Default::default()).unwrap();
    let mut tar = std::io::Cursor::new(one_file_tar("f", b"data"));
    cli.apply_diff("base", None, &mut tar).unwrap();
    cli.create_rw("ctr", Some("base"), &Default::default())
        .unwrap();
    let dir = cli.get("ctr", "").unwrap();
    assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"data");
    let before = mountinfo::mounts_under(&mountinfo::read().unwrap(), &home).len();
    assert!(before >= 1, "the layer is not mounted");

    s.init().await;
    // The layer is still there at the same path, once.
    assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"data");
    let at_dir = mountinfo::read()
        .unwrap()
        .into_iter()
        .filter(|m| m.mount_point == dir)
        .count();
    assert_eq!(
        at_dir, 1,
        "the layer's mount was duplicated by the plugin's bind"
    );

    cli.put("ctr").unwrap();
    let (status, v) = s.post_json("/GraphDriver.Cleanup", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let left = mountinfo::mounts_under(&mountinfo::read().unwrap(), &home);
    assert!(
        left.is_empty(),
        "mounts left under the store root: {left:?}"
    );
    drop(cli);
    s.stop().await;
}

/// An `ApplyDiff` whose body stops arriving fails after the body timeout with a clear error;
/// the layer is left as it was and can be applied again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_apply_times_out_and_rolls_back() {
    let s = Server::start_with(|_, c| c.body_timeout = Some(Duration::from_secs(1))).await;
    s.init().await;
    s.post_json("/GraphDriver.Create", json!({"ID": "l"})).await;
    let tar = sample_tar(20, 10_000);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|f| (f, rx))
    }));
    let socket = s.socket.clone();
    let call = tokio::spawn(async move {
        let resp = send(&socket, "/GraphDriver.ApplyDiff?id=l&parent=", body).await;
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    });
    tx.send(Ok(Frame::data(Bytes::copy_from_slice(
        &tar[..tar.len() / 2],
    ))))
    .await
    .unwrap();
    // Keep the body open but silent.
    let (status, body) = tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("a stalled apply must fail, not hang")
        .unwrap();
    drop(tx);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    let msg = v["Err"].as_str().unwrap();
    assert!(msg.contains("stalled") && msg.contains("\"l\""), "{msg}");
    let empty = s.diff("l", "").await.into_body().collect().await.unwrap();
    assert!(
        tar_files(&empty.to_bytes()).is_empty(),
        "a partial apply was kept"
    );
    let (status, v) = s.apply("l", "", tar.clone()).await;
    assert_eq!((status, v), (StatusCode::OK, json!({"Size": 20 * 10_000})));
    s.stop().await;
}

/// Writes one raw HTTP/1.1 request with a body of `len` bytes on `conn` and reads the
/// answer's status line and body (Content-Length framed). With `refused`, the server may
/// stop reading the body (writing it fails) but must still answer.
fn raw_call(
    conn: &mut std::os::unix::net::UnixStream,
    path: &str,
    len: usize,
    refused: bool,
) -> (u16, String) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: plugin.moby.localhost\r\nContent-Length: {len}\r\n\r\n"
    );
    conn.write_all(head.as_bytes())
        .expect("writing the request");
    let body = vec![b' '; len];
    match conn.write_all(&body) {
        Ok(()) => {}
        Err(_) if refused => {}
        Err(e) => panic!("{path}: writing a body of {len} bytes: {e}"),
    }
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            conn.read(&mut byte).expect("reading the answer"),
            1,
            "connection closed"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .expect("content-length")
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).to_string())
}

/// Calls without arguments still read their request body: a client that sends one (even a
/// large one) gets its answer and can use the connection again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_calls_without_arguments_are_read() {
    let s = Server::start().await;
    s.init().await;
    let socket = s.socket.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        conn.set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        for path in [
            "/Plugin.Activate",
            "/GraphDriver.Status",
            "/GraphDriver.Capabilities",
            "/GraphDriver.Nope",
            "/GraphDriver.Cleanup",
        ] {
            for len in [2, 300_000] {
                let (status, body) = raw_call(&mut conn, path, len, false);
                assert!(status == 200 || status == 404, "{path}: {status} {body}");
            }
        }
        // Too large for a JSON call: refused with a status, not a reset.
        let (status, body) = raw_call(&mut conn, "/GraphDriver.Status", 2 << 20, true);
        assert_eq!(status, 413, "{body}");
        assert!(body.contains("larger than"), "{body}");
    })
    .await
    .unwrap();
    s.stop().await;
}

/// The socket appears at its path with its final mode: it is never chmodded there (an
/// inotify watch on its directory sees it moved in, not created and then changed).
#[test]
fn socket_appears_with_its_final_mode() {
    use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("plugin.sock");
    let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).unwrap();
    inotify::add_watch(
        &fd,
        dir.path(),
        WatchFlags::CREATE | WatchFlags::ATTRIB | WatchFlags::MOVED_TO,
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _bound = rt.block_on(async { crate::serve::bind_unix(&socket).expect("bind") });
    let md = std::fs::metadata(&socket).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    let mut reader = inotify::Reader::new(&fd, &mut buf);
    let mut seen = Vec::new();
    while let Ok(ev) = reader.next() {
        if ev.file_name().map(|n| n.to_bytes()) == Some(b"plugin.sock") {
            seen.push(ev.events());
        }
    }
    let _ = ReadFlags::empty();
    assert!(
        !seen
            .iter()
            .any(|e| e.contains(ReadFlags::ATTRIB) || e.contains(ReadFlags::CREATE)),
        "the socket was created or changed at its final path: {seen:?}"
    );
    assert!(
        seen.iter().any(|e| e.contains(ReadFlags::MOVED_TO)),
        "{seen:?}"
    );
}

/// A restarted plugin reopens the store of the last `Init` from its state file (mode 0600)
/// and serves without a new `Init`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_plugin_reopens_the_last_store() {
    let s = Server::start_with(|dir, c| c.state_file = Some(dir.join("run/state.json"))).await;
    let state: PathBuf = s.dir.path().join("run/state.json");
    let home: PathBuf = s.home();
    s.init().await;
    s.post_json("/GraphDriver.Create", json!({"ID": "kept"}))
        .await;
    let mode = std::fs::metadata(&state)
        .expect("state file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The process dies (no Cleanup); a new one starts with the same state file.
    let again = DockerPlugin::new(PluginConfig {
        name: "strata-test".into(),
        driver: Some("vfs".into()),
        state_file: Some(state.clone()),
        ..PluginConfig::default()
    });
    let restored = tokio::task::spawn_blocking({
        let p = again.clone();
        move || p.restore()
    })
    .await
    .unwrap()
    .expect("restore");
    assert!(restored);
    let graph = again.graph().expect("a store without Init");
    assert_eq!(graph.store().root(), home);
    assert!(graph.exists("kept").unwrap());
    drop(again);
    // After Cleanup (dockerd stopped) a plugin starting up opens the store but makes no
    // bind: dockerd, when it starts, binds its data-root over the home and would hide it.
    let (status, _) = s.post_json("/GraphDriver.Cleanup", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!is_mount_point(&home));
    let third = DockerPlugin::new(PluginConfig {
        name: "strata-test".into(),
        driver: Some("vfs".into()),
        state_file: Some(state.clone()),
        ..PluginConfig::default()
    });
    assert!(third.restore().expect("restore"));
    assert!(third.graph().expect("store").exists("kept").unwrap());
    assert!(
        !is_mount_point(&home),
        "a plugin starting up bound the store root before dockerd's Init"
    );
    drop(third);
    // Without a state file there is nothing to restore.
    let fresh = DockerPlugin::new(PluginConfig {
        state_file: Some(s.dir.path().join("none.json")),
        ..PluginConfig::default()
    });
    assert!(!fresh.restore().unwrap());
    s.stop().await;
}

/// `--no-sync` and `--writers` reach the store the plugin opens; `Status` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_writer_settings_reach_the_store() {
    let s = Server::start_with(|_, c| {
        c.no_sync = true;
        c.writers = Some(3);
    })
    .await;
    s.init().await;
    let (_, v) = s.post_json("/GraphDriver.Status", json!({})).await;
    let pairs = v["Status"].as_array().unwrap();
    assert!(
        pairs.contains(&json!(["Sync Before Commit", "false"])),
        "{v}"
    );
    assert!(pairs.contains(&json!(["Apply Writers", "3"])), "{v}");
    s.stop().await;
}

/// `Changes` is streamed (no length known up front) and is valid JSON whatever the paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_answer_is_streamed_json() {
    let s = Server::start().await;
    s.init().await;
    s.post_json("/GraphDriver.Create", json!({"ID": "l"})).await;
    let (status, v) = s.apply("l", "", sample_tar(2_000, 1)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let body = Full::new(Bytes::from("{\"ID\":\"l\"}\n"));
    let resp = send(&s.socket, "/GraphDriver.Changes", body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers().get("content-length").is_none(),
        "the Changes answer was built in memory before it was sent"
    );
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(v["Changes"].as_array().unwrap().len(), 2_004);
    s.stop().await;
}

#[test]
fn json_changes_encodes_any_path_one_change_at_a_time() {
    use std::os::unix::ffi::OsStrExt;
    let odd = std::ffi::OsStr::from_bytes(b"/bad\xff\"quote\\\n");
    let changes = vec![
        Change {
            path: "/a".into(),
            kind: ChangeKind::Add,
        },
        Change {
            path: odd.into(),
            kind: ChangeKind::Delete,
        },
        Change {
            path: "/c".into(),
            kind: ChangeKind::Modify,
        },
    ];
    let mut r = crate::serve::stream::json_changes(changes);
    let mut out = Vec::new();
    let mut one = [0u8; 1];
    while r.read(&mut one).unwrap() == 1 {
        out.push(one[0]);
    }
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v,
        json!({"Changes": [
            {"Path": "/a", "Kind": 1},
            // Lossless: the CLI's escaping (`\xff`, `\\`, `\n`); a quote is JSON's business.
            {"Path": "/bad\\xff\"quote\\\\\\n", "Kind": 2},
            {"Path": "/c", "Kind": 0},
        ]})
    );
    let mut empty = crate::serve::stream::json_changes(Vec::<Change>::new());
    let mut s = String::new();
    empty.read_to_string(&mut s).unwrap();
    assert_eq!(s, "{\"Changes\":[]}");
}
