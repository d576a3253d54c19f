//! The plugin process alone (no dockerd): its command line, and deep trees.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustix::fs::{Mode, OFlags};

use crate::docker::{self, Plugin};

/// Runs `strata ARGS` and waits up to 20 s; returns (exit code, stderr). A command that
/// keeps running (a server that should have refused its options) fails the test.
fn strata(args: &[&str], env: &[(&str, &str)], dir: &Path) -> (i32, String) {
    let err = dir.join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("STRATA_ROOT")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let code = status.code().unwrap_or(-1);
            return (code, std::fs::read_to_string(&err).unwrap_or_default());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("strata {args:?} kept running: its options were not refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Global options that mean nothing to the server are refused as usage errors; the help
/// shows no store root the server would not use; --no-sync and --writers reach the store.
#[test]
fn serve_refuses_or_applies_every_global_option() {
    let dir = tempfile::Builder::new()
        .prefix("strata-serve-opts-")
        .tempdir_in("/tmp")
        .unwrap();
    let sock = dir.path().join("p.sock");
    let sock = sock.to_str().unwrap();
    let (code, err) = strata(
        &["--json", "serve", "docker-plugin", "--socket", sock],
        &[],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--json"), "{err}");
    let (code, err) = strata(
        &[
            "serve",
            "docker-plugin",
            "--in-process-apply",
            "--socket",
            sock,
        ],
        &[("STRATA_CONFINED_APPLY", "1")],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--in-process-apply"), "{err}");
    let help = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["serve", "docker-plugin", "--help"])
        .env_remove("STRATA_ROOT")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        !help.contains("[default: /var/lib/strata]"),
        "the help shows a root the plugin does not use:\n{help}"
    );

    let _unmount = docker::UnmountGuard(dir.path().to_path_buf());
    let mut plugin = Plugin::new(
        "strata-opts",
        "vfs",
        Some(dir.path().join("plugin.sock")),
        dir.path().join("plugin.log"),
    )
    .with_root(&dir.path().join("store"))
    .with_globals(&["--no-sync", "--writers", "3"]);
    plugin.start();
    let socket = plugin.socket.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        call(&socket, "/GraphDriver.Init", "{\"Home\":\"/ignored\"}\n").await;
        call(&socket, "/GraphDriver.Status", "{}\n").await
    });
    plugin.stop();
    let v: serde_json::Value = serde_json::from_slice(&status).unwrap();
    let pairs = v["Status"].as_array().unwrap();
    assert!(
        pairs.contains(&serde_json::json!(["Sync Before Commit", "false"])),
        "{v}"
    );
    assert!(
        pairs.contains(&serde_json::json!(["Apply Writers", "3"])),
        "{v}"
    );
}

/// One call; asserts a 200 and returns the whole body.
async fn call(socket: &Path, path: &str, body: &str) -> Bytes {
    let r = docker::http_post(socket, path, Full::new(Bytes::from(body.to_string()))).await;
    let status = r.status();
    let body = r.into_body().collect().await.expect("answer").to_bytes();
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    body
}

/// Makes `depth` nested directories `d/d/…` below `dir`, one directory fd at a time.
fn nest(dir: &Path, depth: usize) {
    let mut fd = rustix::fs::open(dir, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .expect("open the layer root");
    for _ in 0..depth {
        rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).expect("mkdir");
        fd = rustix::fs::openat(
            &fd,
            "d",
            OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .expect("open the new directory");
    }
}

/// How deep the test tree is.
const DEPTH: usize = 10_000;

/// A container can nest directories 10,000 deep. Changes, Diff, DiffSize and Remove of that
/// layer answer (or refuse) without taking the plugin down, on overlay and vfs.
#[test]
fn plugin_survives_a_ten_thousand_deep_layer() {
    for backend in ["overlay", "vfs"] {
        deep_layer(backend);
    }
}

fn deep_layer(backend: &str) {
    let dir = tempfile::Builder::new()
        .prefix("strata-deep-")
        .tempdir_in("/tmp")
        .unwrap();
    let _unmount = docker::UnmountGuard(dir.path().to_path_buf());
    let mut plugin = Plugin::new(
        &format!("strata-deep-{backend}"),
        backend,
        Some(dir.path().join("plugin.sock")),
        dir.path().join("plugin.log"),
    )
    .with_root(&dir.path().join("store"));
    plugin.start();
    let socket = plugin.socket.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let layer = "{\"ID\":\"deep\",\"Parent\":\"base\"}\n";
    rt.block_on(async {
        call(&socket, "/GraphDriver.Init", "{\"Home\":\"/ignored\"}\n").await;
        call(&socket, "/GraphDriver.Create", "{\"ID\":\"base\"}\n").await;
        call(&socket, "/GraphDriver.CreateReadWrite", layer).await;
        let got = call(&socket, "/GraphDriver.Get", "{\"ID\":\"deep\"}\n").await;
        let v: serde_json::Value = serde_json::from_slice(&got).unwrap();
        nest(Path::new(v["Dir"].as_str().unwrap()), DEPTH);
        call(&socket, "/GraphDriver.Put", "{\"ID\":\"deep\"}\n").await;
    });
    let steps: [(&str, &str); 4] = [
        ("/GraphDriver.Changes", layer),
        ("/GraphDriver.DiffSize", layer),
        ("/GraphDriver.Diff", layer),
        ("/GraphDriver.Remove", "{\"ID\":\"deep\"}\n"),
    ];
    for (path, body) in steps {
        let answer = rt.block_on(async {
            let r = tokio::time::timeout(
                Duration::from_secs(600),
                docker::try_http_post(&socket, path, Full::new(Bytes::from(body))),
            )
            .await
            .unwrap_or_else(|_| panic!("{backend}: {path} of a {DEPTH}-deep layer hung"));
            match r {
                Ok(r) => {
                    let status = r.status();
                    let body = r.into_body().collect().await.map(|b| b.to_bytes().len());
                    Ok((status, body.map_err(|e| e.to_string())))
                }
                Err(e) => Err(e),
            }
        });
        if answer.is_err() {
            // A crashing process may still be on its way out.
            let until = Instant::now() + Duration::from_secs(5);
            while plugin.alive() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if !plugin.alive() {
            docker::print_tail("strata plugin", &dir.path().join("plugin.log"), 20);
        }
        assert!(
            plugin.alive(),
            "{backend}: the plugin died during {path} of a {DEPTH}-deep layer (answer: {answer:?}); see {}",
            dir.path().join("plugin.log").display()
        );
        let (status, body) = answer.unwrap_or_else(|e| panic!("{backend}: {path}: {e}"));
        assert!(
            body.is_ok(),
            "{backend}: {path}: the answer broke off: {body:?}"
        );
        eprintln!("{backend}: {path} of a {DEPTH}-deep layer: {status}");
    }
    rt.block_on(async {
        call(&socket, "/GraphDriver.Status", "{}\n").await;
        call(&socket, "/GraphDriver.Remove", "{\"ID\":\"base\"}\n").await;
    });
    plugin.stop();
}
