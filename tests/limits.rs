//! Chains at the limits (graphtest `DeepLayerRead`, taken to the kernel's maximum).
//!
//! Each layer of a chain adds a file of its own (`layer-NNN`) with layer-specific content and
//! overwrites one shared file (`shared`), through its own `get` … `put`. The chain is built
//! in-process through the library (a CLI process per step would dominate the run time); the
//! reads from the top go through the `strata` binary.
//!
//! What is pinned here: overlayfs takes at most `overlay::MAX_LOWERS` (500, the kernel's
//! `OVL_MAX_STACK`) lower directories, plus an upper one when writable — probed on this
//! kernel. So a chain may be `overlay::MAX_DEPTH` (501) layers long: its top, without
//! children, is served writable (500 lowers under its own upper directory), and every layer
//! below it, having children, read-only with at most 500 lowers. A 502nd layer could never be
//! served and is refused at `create` with a message naming it and the limits. With
//! `STRATA_MOUNT_API=classic` (the `mount(2)` fallback for kernels without `lowerdir+`)
//! `status` reports, in layers, the deepest chain one page of mount options holds for the
//! longest ids — a chain that deep mounts, a deeper one is refused at `get`, naming the layer
//! and that limit.

mod common;

use std::path::{Path, PathBuf};

use common::tree::{read_file, write_file};
use common::{mounts_under, Store};
use strata::backend::overlay::{MAX_DEPTH, MAX_LOWERS};
use strata::graph::{Graph, GraphConfig};
use strata::sys::mount::{mount_overlay_in, unmount, OverlaySpec};
use strata::{CreateOpts, Driver};

fn id(i: usize) -> String {
    format!("layer-{i:03}")
}

/// What layer `i` writes into its own file and into `shared`.
fn content(i: usize) -> Vec<u8> {
    let mut v = format!("layer {i} of the chain\n").into_bytes();
    v.extend(common::graph::random_content(16 + i % 64, i as u64));
    v
}

/// The store, opened in-process (no syncfs: these layers are scratch).
fn open_graph(s: &Store) -> Graph {
    let mut config = GraphConfig::new(s.root());
    config.driver = Some(s.backend().to_string());
    config.durable = false;
    Graph::open(config).expect("open the store in-process")
}

/// Builds layers `0..n` as one chain, graphtest style.
fn build_chain(g: &Graph, n: usize) {
    build_chain_named(g, n, id)
}

/// Builds layers `0..n` as one chain, layer `i` with the id `name(i)` (its file is still
/// named `id(i)`).
fn build_chain_named(g: &Graph, n: usize, name: impl Fn(usize) -> String) {
    let started = std::time::Instant::now();
    for i in 0..n {
        let parent = (i > 0).then(|| name(i - 1));
        g.create(&name(i), parent.as_deref(), &CreateOpts::default())
            .unwrap_or_else(|e| panic!("create {} (depth {}): {e}", name(i), i + 1));
        let root = g
            .get(&name(i), "")
            .unwrap_or_else(|e| panic!("get {} (depth {}): {e}", name(i), i + 1));
        write_file(&root, &id(i), &content(i), 0o644);
        write_file(&root, "shared", &content(i), 0o644);
        g.put(&name(i)).expect("put");
    }
    eprintln!("built a {n}-layer chain in {:?}", started.elapsed());
}

/// Checks that the tree at `root` is layer `top` of the chain: every file of layers
/// `0..=top` with its own content, `shared` from `top`, nothing of deeper layers.
fn check_top(root: &Path, top: usize, what: &str) {
    for i in 0..=top {
        let got = read_file(root, &id(i));
        assert!(
            got == content(i),
            "{what}: file of layer {i} read from the top differs ({} bytes)",
            got.len()
        );
    }
    assert_eq!(
        read_file(root, "shared"),
        content(top),
        "{what}: `shared` must be the top layer's version"
    );
    assert!(
        !root.join(id(top + 1)).exists(),
        "{what}: a deeper layer's file shows through"
    );
}

/// `status` as a map.
fn status(s: &Store, env: &[(&str, &str)]) -> Vec<(String, String)> {
    let out = s.run_driver(Some(s.backend()), env, ["status"]);
    out.expect_code(0);
    out.stdout_str()
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn status_value(st: &[(String, String)], key: &str) -> String {
    st.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("status has no {key:?} line: {st:?}"))
}

/// The number after "max depth " in a `Mount API` status value.
fn max_depth_in(api: &str) -> usize {
    let rest = api
        .split("max depth ")
        .nth(1)
        .unwrap_or_else(|| panic!("Mount API must report a max depth: {api:?}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after \"max depth\" in {api:?}"))
}

/// The kernel's own limit, probed with the mount call strata uses: 500 lower directories
/// under an upper one mount, and so do 500 read-only; 501 lower directories do not, with or
/// without an upper one.
#[test]
fn the_kernel_takes_500_lower_directories_and_an_upper_but_not_501() {
    let Some(s) = Store::new("overlay") else {
        return;
    };
    let dir = s.root().join("probe");
    for i in 0..=MAX_LOWERS {
        std::fs::create_dir_all(dir.join(format!("l{i}"))).unwrap();
    }
    std::fs::write(dir.join("l0/bottom"), b"b").unwrap();
    for d in ["upper", "work", "mnt"] {
        std::fs::create_dir(dir.join(d)).unwrap();
    }
    let mnt = dir.join("mnt");
    let spec = |lowers: usize, writable: bool| OverlaySpec {
        lowers: (0..lowers)
            .map(|i| PathBuf::from(format!("l{i}")))
            .collect(),
        upper: writable.then(|| (PathBuf::from("upper"), PathBuf::from("work"))),
        ..OverlaySpec::default()
    };
    for (lowers, writable) in [(MAX_LOWERS, true), (MAX_LOWERS, false)] {
        mount_overlay_in(&dir, &mnt, &spec(lowers, writable))
            .unwrap_or_else(|e| panic!("{lowers} lowers (writable: {writable}) must mount: {e}"));
        let read = std::fs::read(mnt.join("bottom"));
        unmount(&mnt).expect("unmount the probe");
        assert_eq!(read.expect("read through the probe"), b"b");
    }
    for writable in [true, false] {
        let r = mount_overlay_in(&dir, &mnt, &spec(MAX_LOWERS + 1, writable));
        if r.is_ok() {
            unmount(&mnt).expect("unmount the probe");
        }
        assert!(
            r.is_err(),
            "{} lowers (writable: {writable}) mounted: the limit is not the kernel's",
            MAX_LOWERS + 1
        );
    }
    assert!(mounts_under(s.root()).is_empty(), "the probe left a mount");
}

/// DeepLayerRead(500) at the kernel's limit: a base and 500 layers on it (501 layers); the
/// top mounts writable (500 lowers and its own upper directory) and reads every layer; the
/// one below, with a child, mounts read-only (500 lowers); a 502nd layer is refused at
/// `create`, naming it and the limits, and leaves nothing behind.
#[test]
fn overlay_501_layer_chain_reads_every_layer_from_the_top() {
    let Some(s) = Store::new("overlay") else {
        return;
    };
    // A base and the 500 layers of DeepLayerRead(500).
    const CHAIN: usize = 501;
    let g = open_graph(&s);
    build_chain(&g, CHAIN);
    assert_eq!(MAX_DEPTH, CHAIN, "500 lower directories and an upper one");

    let st = status(&s, &[]);
    let api = status_value(&st, "Mount API");
    assert!(
        api.contains("lowerdir+"),
        "a kernel with lowerdir+ must use it: {api:?}"
    );
    assert_eq!(max_depth_in(&api), CHAIN, "status: {api:?}");

    // The top (500 lower directories and its own upper one), through the CLI.
    let top = CHAIN - 1;
    let path = s.get(&id(top));
    let m = mounts_under(&path);
    assert!(
        m.iter()
            .any(|m| m.mount_point == path && m.fstype == "overlay"),
        "the top of the chain must be an overlay mount at {}: {m:?}",
        path.display()
    );
    check_top(&path, top, "depth 501");
    write_file(&path, "written-at-the-top", b"x", 0o644);
    s.put(&id(top));
    assert!(mounts_under(s.root()).is_empty(), "put left a mount");
    s.with_layer(&id(top), |root| {
        assert_eq!(read_file(root, "written-at-the-top"), b"x");
    });

    // One below: it has a child, so it is served read-only, one lower directory per layer.
    let path = s.get(&id(top - 1));
    check_top(&path, top - 1, "depth 500, read-only");
    assert!(
        std::fs::write(path.join("new"), b"x").is_err(),
        "a layer with children must be served read-only"
    );
    s.put(&id(top - 1));

    // A 502nd layer could never mount: refused at create, naming the layer and the limit.
    let before = s.state();
    let (next, parent) = (id(CHAIN), id(top));
    for rw in [false, true] {
        let mut args = vec!["create", &next, "--parent", &parent];
        if rw {
            args.push("--rw");
        }
        let err = s.fail(args);
        common::assert_mentions(&err, &next, "create beyond the limit");
        common::assert_mentions(&err, "502 layers", "create beyond the limit");
        common::assert_mentions(&err, "500 lower", "create beyond the limit");
        common::assert_mentions(&err, "at most 501 layers", "create beyond the limit");
        s.assert_state(&before, "refused create");
    }
    let lib = g
        .create_rw(&next, Some(&id(top)), &CreateOpts::default())
        .expect_err("the library refuses a 502nd layer too");
    assert!(
        matches!(lib, strata::Error::Unsupported(_)),
        "refusal kind: {lib:?}"
    );
    assert!(!s.exists(&next));
    // The top is still served writable: it got no child.
    s.with_layer(&id(top), |root| write_file(root, "again", b"y", 0o644));
    drop(g);
    s.ok(["cleanup"]);
    s.assert_clean_layout();
    assert!(mounts_under(s.root()).is_empty());
}

/// The classic limit is counted in layers: with the longest ids (the case `status` sizes
/// for), a chain exactly as deep as `status` reports mounts writable — its top's own directory
/// is the upper one, not a lower — and one layer deeper is refused at `get`, naming the limit.
#[test]
fn classic_mount_limit_counts_the_top_layer_as_the_upper() {
    let Some(s) = Store::new("overlay") else {
        return;
    };
    let classic = [("STRATA_MOUNT_API", "classic")];
    let long = |i: usize| format!("{i:03}{}", "c".repeat(125));
    let g = open_graph(&s);
    let limit = max_depth_in(&status_value(&status(&s, &classic), "Mount API"));
    build_chain_named(&g, limit, long);

    // The top has no child: served writable, `limit - 1` lowers under its own directory.
    let top = limit - 1;
    let out = s.run_driver(Some("overlay"), &classic, ["get", &long(top)]);
    out.expect_code(0);
    let path = PathBuf::from(out.trimmed());
    check_top(&path, top, "the reported classic limit");
    write_file(&path, "top", b"t", 0o644);
    let out = s.run_driver(Some("overlay"), &classic, ["put", &long(top)]);
    out.expect_code(0);

    // One layer more cannot be served by mount(2) with these ids.
    let deeper = long(limit);
    g.create(&deeper, Some(&long(top)), &CreateOpts::default())
        .expect("create one layer deeper (lowerdir+ serves it)");
    drop(g);
    let err = s
        .run_driver(Some("overlay"), &classic, ["get", &deeper])
        .expect_failure();
    common::assert_mentions(&err, &deeper, "classic get beyond the limit");
    common::assert_mentions(&err, &format!("at most {limit} layers"), "classic refusal");
    assert!(
        mounts_under(s.root()).is_empty(),
        "a refused get left a mount"
    );
    // The layer below, now with a child, is served read-only within the limit.
    let out = s.run_driver(Some("overlay"), &classic, ["get", &long(top)]);
    out.expect_code(0);
    check_top(&PathBuf::from(out.trimmed()), top, "read-only at the limit");
    s.run_driver(Some("overlay"), &classic, ["put", &long(top)])
        .expect_code(0);
    s.ok(["cleanup"]);
    s.assert_clean_layout();
}

#[test]
fn classic_mount_fallback_serves_128_layers_and_reports_its_limit() {
    let Some(s) = Store::new("overlay") else {
        return;
    };
    const CHAIN: usize = 140;
    let g = open_graph(&s);
    build_chain(&g, CHAIN);
    drop(g);
    let classic = [("STRATA_MOUNT_API", "classic")];

    let api = status_value(&status(&s, &classic), "Mount API");
    assert!(api.contains("mount(2)"), "classic status: {api:?}");
    let limit = max_depth_in(&api);
    assert!(
        (128..MAX_DEPTH).contains(&limit),
        "a page of short paths holds at least 128 layers, fewer than lowerdir+: {api:?}"
    );

    let top = 127;
    let out = s.run_driver(Some("overlay"), &classic, ["get", &id(top)]);
    out.expect_code(0);
    let path = std::path::PathBuf::from(out.trimmed());
    let m = mounts_under(&path);
    let mine = m
        .iter()
        .find(|m| m.mount_point == path)
        .unwrap_or_else(|| panic!("no mount at {}: {m:?}", path.display()));
    assert_eq!(mine.fstype, "overlay");
    assert!(
        mine.options.contains("lowerdir=l/"),
        "a classic mount names its lowers by short relative links: {}",
        mine.options
    );
    check_top(&path, top, "128 layers, mount(2)");
    s.put(&id(top));
    assert!(mounts_under(s.root()).is_empty(), "put left a mount");

    // Deeper than a page of options holds: refused at get, naming the layer and the limit.
    let deepest = id(CHAIN - 1);
    let out = s.run_driver(Some("overlay"), &classic, ["get", &deepest]);
    let err = out.expect_failure();
    common::assert_mentions(&err, &deepest, "classic get beyond the limit");
    common::assert_mentions(&err, &format!("at most {limit} layers"), "classic refusal");
    if status_value(&status(&s, &[]), "Mount API").contains("lowerdir+") {
        common::assert_mentions(&err, "STRATA_MOUNT_API=classic", "why mount(2) is used");
    }
    assert!(
        !s.ls_entry(&deepest).is_mounted(),
        "a refused get holds no reference"
    );
    assert!(
        mounts_under(s.root()).is_empty(),
        "a refused get left a mount"
    );

    // The same chain mounts with lowerdir+.
    let path = s.get(&deepest);
    check_top(&path, CHAIN - 1, "140 layers, lowerdir+");
    s.put(&deepest);
    s.ok(["cleanup"]);
    s.assert_clean_layout();
}

/// Layer paths longer than the 255 bytes `fsconfig` takes per string (a long store root and
/// 128-character ids) still mount: strata passes them relative to the root.
#[test]
fn overlay_mounts_below_a_long_root_with_the_longest_ids() {
    let Some(s) = Store::new_with_root_name("overlay", &"r".repeat(200)) else {
        return;
    };
    let (a, b) = ("a".repeat(128), "b".repeat(128));
    let path_len = s.layers_dir().join(&a).join("diff").as_os_str().len();
    assert!(
        path_len > 255,
        "the lower path must be too long for fsconfig: {path_len}"
    );
    s.create(&a, None);
    s.with_layer(&a, |root| write_file(root, "a.txt", b"a", 0o644));
    s.create_rw(&b, Some(&a));
    let root = s.get(&b);
    assert_eq!(read_file(&root, "a.txt"), b"a");
    write_file(&root, "b.txt", b"b", 0o644);
    s.put(&b);
    let root = s.get(&a);
    assert!(
        std::fs::write(root.join("x"), b"x").is_err(),
        "a layer with children is read-only"
    );
    s.put(&a);
    s.with_layer(&b, |root| assert_eq!(read_file(root, "b.txt"), b"b"));
    s.ok(["cleanup"]);
    s.assert_clean_layout();
}
