//! What `diff` writes: failures of the export reach the reader, sparse files are exported
//! sparsely and bounded, names and devices that apply would misread are refused, `changes`
//! agrees with `diff`, the exact-diff promise is visible in `metadata`, and the CLI's text
//! output cannot be forged by file names.

mod common;

use std::fs;
use std::io::Read;

use common::graph::random_content;
use common::tars::{Meta, TarBuilder};
use common::tree::write_file;
use common::Store;
use strata::graph::{Graph, GraphConfig};
use strata::Driver;

backend_tests!(
    injected_export_faults_fail_the_cli,
    injected_export_faults_fail_the_library_stream,
);

/// A tar with a few files, large enough that an export fault fires after its first blocks.
fn some_tar(seed: u64) -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.dir("data", Meta::mode(0o755));
    for i in 0..4 {
        t.file(
            &format!("data/f{i}"),
            &random_content(3000, seed + i),
            Meta::mode(0o644),
        );
    }
    t.finish()
}

/// A store with an applied image layer `img` (exact diff) and a container layer `ctr` on it
/// with files written through `get` (naive diff).
fn layers_for_faults(s: &Store) {
    s.create("img", None);
    s.apply_diff("img", None, &some_tar(1));
    s.create_rw("ctr", Some("img"));
    let mnt = s.get("ctr");
    for i in 0..4 {
        write_file(
            &mnt,
            &format!("new{i}"),
            &random_content(3000, 50 + i),
            0o644,
        );
    }
    s.put("ctr");
}

/// `diff -o FILE` whose export fails or panics midway: exit 1 naming the layer, and neither
/// the file nor a temporary leftover; `diff` to stdout: exit 1 too (never a clean short tar).
fn injected_export_faults_fail_the_cli(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    layers_for_faults(&s);
    for layer in ["img", "ctr"] {
        for fault in ["export-error", "export-panic"] {
            let what = format!("{layer} with {fault}");
            let file = s.scratch().join(format!("{layer}-{fault}.tar"));
            let out = s.run_driver(
                Some(backend),
                &[("STRATA_FAILPOINT", fault)],
                ["diff", layer, "-o", file.to_str().unwrap()],
            );
            let err = out.expect_failure();
            assert!(err.contains(layer), "{what}: error names the layer: {err}");
            assert!(!file.exists(), "{what}: no file left behind");
            let leftovers: Vec<_> = fs::read_dir(s.scratch())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().contains("strata-tmp"))
                .collect();
            assert!(leftovers.is_empty(), "{what}: {leftovers:?}");

            let out = s.run_driver(
                Some(backend),
                &[("STRATA_FAILPOINT", fault)],
                ["diff", layer],
            );
            out.expect_failure();
            assert!(
                !out.stdout.is_empty(),
                "{what}: the fault fires midway, after part of the tar was written"
            );
        }
        // Without a fault the same diff succeeds.
        assert!(!s.diff(layer, None).is_empty());
    }
}

/// Through the library: the stream returned by `diff` fails on read when the export thread
/// fails or panics midway, for the exact (tar-split) and the naive (tree) export.
fn injected_export_faults_fail_the_library_stream(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    // Layer ids unique to this test: faults are armed per layer id in this process.
    let (img, ctr) = (format!("lib-img-{backend}"), format!("lib-ctr-{backend}"));
    let mut config = GraphConfig::new(s.root());
    config.driver = Some(backend.to_string());
    config.durable = false;
    let graph = Graph::open(config).unwrap();
    graph.create(&img, None, &Default::default()).unwrap();
    graph
        .apply_diff(&img, None, &mut some_tar(2).as_slice())
        .unwrap();
    graph
        .create_rw(&ctr, Some(&img), &Default::default())
        .unwrap();
    let mnt = graph.get(&ctr, "").unwrap();
    for i in 0..4 {
        write_file(
            &mnt,
            &format!("new{i}"),
            &random_content(3000, 60 + i),
            0o644,
        );
    }
    graph.put(&ctr).unwrap();

    for layer in [&img, &ctr] {
        for fault in ["export-error", "export-panic"] {
            strata::failpoint::arm(fault, layer);
            let mut stream = graph.diff(layer, None).unwrap();
            let mut got = Vec::new();
            let result = stream.read_to_end(&mut got);
            strata::failpoint::disarm(layer);
            let err = result.expect_err("a failed export must not end like a whole tar");
            assert!(
                err.to_string().contains(layer.as_str()),
                "{layer} {fault}: {err}"
            );
            assert!(
                !got.is_empty(),
                "{layer} {fault}: part of the tar came first"
            );
            drop(stream);
        }
        let mut whole = Vec::new();
        graph
            .diff(layer, None)
            .unwrap()
            .read_to_end(&mut whole)
            .unwrap();
        assert!(
            whole.len() > 4 * 3000,
            "{layer}: the unfaulted export is whole"
        );
    }
    // Every mount taken by the exports was released.
    for l in graph.list().unwrap() {
        assert_eq!(l.refs, 0, "{}: mount references left", l.id);
    }
}
