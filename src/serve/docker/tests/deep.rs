//! Docker's graphtest `DeepLayerRead(500)` through the plugin protocol: a base and 500 layers
//! on it, each made by `Create` + `Get` + a file written under `Dir` + `Put`, all 501 files
//! read through the top layer's `Get`, and a layer deeper than overlayfs can mount refused at
//! `Create` naming the limit.

use std::path::PathBuf;

use hyper::StatusCode;
use serde_json::json;

use super::Server;
use crate::sys::mount;

/// Layers above the base: Docker's `DeepLayerRead(500)`.
const DEPTH: usize = 500;

fn layer(i: usize) -> String {
    format!("l{i}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_layer_read_500_through_the_plugin() {
    assert!(
        mount::kernel_has_overlay(),
        "this test needs overlayfs (modprobe overlay)"
    );
    let s = Server::start_with(|_, c| {
        c.driver = Some("overlay".into());
        c.no_sync = true;
    })
    .await;
    s.init().await;
    for i in 0..=DEPTH {
        let parent = if i == 0 { String::new() } else { layer(i - 1) };
        let (status, v) = s
            .post_json(
                "/GraphDriver.Create",
                json!({"ID": layer(i), "Parent": parent, "MountLabel": "", "StorageOpt": null}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "create {}: {v}", layer(i));
        let (status, v) = s
            .post_json(
                "/GraphDriver.Get",
                json!({"ID": layer(i), "MountLabel": ""}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "get {}: {v}", layer(i));
        let dir = PathBuf::from(v["Dir"].as_str().expect("Dir"));
        std::fs::write(dir.join(format!("f{i}")), format!("layer {i}")).expect("write");
        let (status, v) = s
            .post_json("/GraphDriver.Put", json!({"ID": layer(i)}))
            .await;
        assert_eq!(status, StatusCode::OK, "put {}: {v}", layer(i));
    }

    let top = layer(DEPTH);
    let (status, v) = s
        .post_json("/GraphDriver.Get", json!({"ID": top, "MountLabel": ""}))
        .await;
    assert_eq!(status, StatusCode::OK, "get of the top: {v}");
    let dir = PathBuf::from(v["Dir"].as_str().expect("Dir"));
    for i in 0..=DEPTH {
        let got = std::fs::read_to_string(dir.join(format!("f{i}")))
            .unwrap_or_else(|e| panic!("f{i} through the top layer: {e}"));
        assert_eq!(got, format!("layer {i}"));
    }
    let (status, v) = s.post_json("/GraphDriver.Put", json!({"ID": top})).await;
    assert_eq!(status, StatusCode::OK, "put of the top: {v}");

    // One more layer could never mount (502 layers: 501 lowers under its upper).
    let (status, v) = s
        .post_json(
            "/GraphDriver.Create",
            json!({"ID": "too-deep", "Parent": top, "MountLabel": "", "StorageOpt": null}),
        )
        .await;
    assert_ne!(status, StatusCode::OK, "a 502-layer chain is refused: {v}");
    let err = v["Err"].as_str().unwrap_or_default();
    assert!(err.contains("too-deep") && err.contains("500"), "{err}");

    let (status, v) = s.post_json("/GraphDriver.Cleanup", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    s.stop().await;
}
