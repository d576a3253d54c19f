//! The CLI surface: refusals (exit 1, a clear message, nothing changed), get/put reference
//! counting across processes, driver memory, environment variables, `--json` shapes, the
//! read-only rule for image layers with children, and the on-disk layout after `cleanup`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::graph::is_errno;
use common::tree::{read_file, write_file};
use common::{assert_mentions, mounts_under, other_backend, parse_changes, ChangeKind, Store};
use serde_json::Value;

backend_tests!(
    store_root_is_created_mode_0700,
    exists_prints_true_or_false,
    refuses_missing_parent,
    refuses_duplicate_id,
    refuses_remove_with_children,
    refuses_remove_while_mounted_until_put,
    refuses_put_of_unmounted_layer,
    refuses_invalid_ids,
    refuses_unknown_storage_option,
    refuses_size_option,
    double_get_returns_same_path_and_needs_two_puts,
    get_in_one_process_put_in_another,
    store_refuses_other_driver,
    env_vars_select_root_and_driver,
    operations_on_missing_layer_fail,
    ls_columns_and_json,
    status_text_and_json,
    metadata_is_json_object_of_strings,
    changes_json_matches_text,
    image_layer_becomes_read_only_after_child,
    cleanup_unmounts_and_leaves_only_layer_dirs,
);

/// A base layer holding `base.txt`, and `child` on it (so overlay really mounts the child).
fn base_and_child(s: &Store, base: &str, child: &str) {
    s.create(base, None);
    s.with_layer(base, |root| {
        write_file(root, "base.txt", b"from the base", 0o644)
    });
    s.create(child, Some(base));
}

/// Asserts nothing is mounted at or below `path`.
fn assert_not_mounted(path: &Path, what: &str) {
    let m = mounts_under(path);
    assert!(m.is_empty(), "{what}: still mounted: {m:?}");
}

fn store_root_is_created_mode_0700(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    assert!(!s.root().exists());
    s.create("a", None);
    let md = fs::metadata(s.root()).expect("the store root must exist after create");
    assert!(md.is_dir());
    assert_eq!(md.mode() & 0o7777, 0o700, "store root mode");
    assert!(s.layers_dir().join("a").is_dir(), "layer dir ROOT/layers/a");
}

fn exists_prints_true_or_false(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let out = s.run(["exists", "nope"]);
    out.expect_code(0);
    assert_eq!(out.trimmed(), "false");
    s.create("yes", None);
    let out = s.run(["exists", "yes"]);
    out.expect_code(0);
    assert_eq!(out.trimmed(), "true");
    s.create_rw("rw", Some("yes"));
    assert!(s.exists("rw"));
    s.remove("rw");
    assert!(!s.exists("rw"));
    assert!(s.exists("yes"));
}

fn refuses_missing_parent(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    s.create("present", None);
    let before = s.state();
    let err = s.fail(["create", "orphan", "--parent", "no-such-parent"]);
    assert_mentions(&err, "no-such-parent", "create with missing parent");
    let err = s.fail(["create", "orphan", "--rw", "--parent", "no-such-parent"]);
    assert_mentions(&err, "no-such-parent", "create --rw with missing parent");
    s.assert_state(&before, "after refused creates");
    assert!(!s.exists("orphan"));
}

fn refuses_duplicate_id(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    s.create("dup-image", None);
    s.with_layer("dup-image", |root| {
        write_file(root, "keep.txt", b"original", 0o644)
    });
    s.create_rw("dup-container", None);
    let snap = s.snapshot("dup-image");
    let before = s.state();
    for args in [
        vec!["create", "dup-image"],
        vec!["create", "dup-image", "--rw"],
        vec!["create", "dup-image", "--parent", "dup-container"],
        vec!["create", "dup-container"],
        vec!["create", "dup-container", "--rw"],
    ] {
        let err = s.fail(&args);
        assert_mentions(&err, args[1], &format!("{args:?}"));
        assert_mentions(&err, "exist", &format!("{args:?}"));
    }
    s.assert_state(&before, "after refused duplicates");
    common::tree::assert_trees_eq(&snap, &s.snapshot("dup-image"), "dup-image content");
}

fn refuses_remove_with_children(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    base_and_child(&s, "parent-layer", "child-layer");
    s.create_rw("grandchild-layer", Some("child-layer"));
    let snap = s.snapshot("parent-layer");
    let before = s.state();
    let err = s.fail(["remove", "parent-layer"]);
    assert_mentions(&err, "parent-layer", "remove with children");
    assert_mentions(&err, "child", "remove with children");
    let err = s.fail(["remove", "child-layer"]);
    assert_mentions(&err, "child-layer", "remove with a child");
    s.assert_state(&before, "after refused removes");
    common::tree::assert_trees_eq(&snap, &s.snapshot("parent-layer"), "parent content");
    s.with_layer("grandchild-layer", |root| {
        assert_eq!(read_file(root, "base.txt"), b"from the base")
    });
    s.remove("grandchild-layer");
    s.remove("child-layer");
    s.remove("parent-layer");
    assert!(s.ids().is_empty());
}

fn refuses_remove_while_mounted_until_put(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    base_and_child(&s, "base", "mounted-layer");
    let path = s.get("mounted-layer");
    let before = s.state();
    let err = s.fail(["remove", "mounted-layer"]);
    assert_mentions(&err, "mounted-layer", "remove while mounted");
    assert_mentions(&err, "mount", "remove while mounted");
    s.assert_state(&before, "after refused remove");
    assert_eq!(
        read_file(&path, "base.txt"),
        b"from the base",
        "the path stays valid after the refused remove"
    );
    s.put("mounted-layer");
    assert_not_mounted(&path, "after put");
    s.remove("mounted-layer");
    assert!(!s.exists("mounted-layer"));
    assert!(s.exists("base"));
}

fn refuses_put_of_unmounted_layer(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    base_and_child(&s, "base", "layer");
    let before = s.state();
    let err = s.fail(["put", "layer"]);
    assert_mentions(&err, "layer", "put of a never-mounted layer");
    s.assert_state(&before, "after refused put");
    s.get("layer");
    s.put("layer");
    let err = s.fail(["put", "layer"]);
    assert_mentions(&err, "layer", "put after the last put");
    s.assert_state(&before, "after refused second put");
    let err = s.fail(["put", "ghost-layer"]);
    assert_mentions(&err, "ghost-layer", "put of a missing layer");
}

fn refuses_invalid_ids(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    s.create("valid", None);
    let before = s.state();
    let root_entries = common::dir_names(s.root());
    let scratch_entries = common::dir_names(s.scratch());
    let long = "x".repeat(300);
    for bad in ["a/b", "..", ".", "", long.as_str()] {
        for args in [
            vec!["create", bad],
            vec!["create", bad, "--rw"],
            vec!["create", bad, "--parent", "valid"],
        ] {
            let err = s.fail(&args);
            assert_mentions(&err, "invalid", &format!("create with id {bad:?}"));
        }
    }
    s.assert_state(&before, "after invalid ids");
    assert!(!s.layers_dir().join("a").exists(), "ROOT/layers/a created");
    assert_eq!(common::dir_names(s.root()), root_entries, "ROOT entries");
    assert_eq!(
        common::dir_names(s.scratch()),
        scratch_entries,
        "entries next to ROOT"
    );
    assert!(s.exists("valid"));
}

fn refuses_unknown_storage_option(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    s.create("base", None);
    let before = s.state();
    for args in [
        vec!["create", "x", "--rw", "-s", "bogus.option=1"],
        vec!["create", "x", "--storage-opt", "bogus.option=1"],
        vec![
            "create",
            "x",
            "--rw",
            "--parent",
            "base",
            "-s",
            "bogus.option=1",
        ],
        // Driver-wide options are validated too.
        vec!["-o", "bogus.option=1", "create", "x", "--rw"],
    ] {
        let err = s.fail(&args);
        assert_mentions(&err, "bogus.option", &format!("{args:?}"));
    }
    s.assert_state(&before, "after unknown options");
    assert!(!s.exists("x"));
}

fn refuses_size_option(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    s.create("base", None);
    let before = s.state();
    for args in [
        vec!["create", "sized", "--rw", "-s", "size=10M"],
        vec![
            "create",
            "sized",
            "--rw",
            "--parent",
            "base",
            "--storage-opt",
            "size=10M",
        ],
        vec!["create", "sized", "-s", "size=10M"],
        vec!["-o", "size=10M", "create", "sized", "--rw"],
    ] {
        let err = s.fail(&args);
        assert_mentions(&err, "size", &format!("{args:?}"));
    }
    s.assert_state(&before, "after refused size options");
    assert!(!s.exists("sized"));
    // The store is still usable without the option.
    s.create_rw("sized", Some("base"));
    assert!(s.exists("sized"));
}

fn double_get_returns_same_path_and_needs_two_puts(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    base_and_child(&s, "base", "layer");
    assert!(!s.ls_entry("layer").is_mounted(), "not mounted before get");
    let p1 = s.get("layer");
    let p2 = s.get("layer");
    assert_eq!(p1, p2, "a second get returns the same path");
    assert!(s.ls_entry("layer").is_mounted(), "mounted after two gets");
    s.put("layer");
    assert!(
        s.ls_entry("layer").is_mounted(),
        "still mounted after the first of two puts"
    );
    assert_eq!(
        read_file(&p1, "base.txt"),
        b"from the base",
        "the path stays valid until the last put"
    );
    s.put("layer");
    assert!(
        !s.ls_entry("layer").is_mounted(),
        "not mounted after the second put"
    );
    assert_not_mounted(&p1, "after the last put");
    let err = s.fail(["put", "layer"]);
    assert_mentions(&err, "layer", "third put");
    assert!(!s.ls_entry("base").is_mounted());
}

fn get_in_one_process_put_in_another(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    base_and_child(&s, "base", "layer");
    let path = s.get("layer"); // that process has exited
    if backend == "overlay" {
        assert!(
            mounts_under(&path)
                .iter()
                .any(|m| m.mount_point == path && m.fstype == "overlay"),
            "overlay: a layer with a parent is served by an overlay mount at {}; mounts: {:?}",
            path.display(),
            mounts_under(s.root())
        );
    }
    assert_eq!(read_file(&path, "base.txt"), b"from the base");
    write_file(&path, "written.txt", b"written between get and put", 0o600);
    s.put("layer");
    assert_not_mounted(&path, "after put from another process");
    s.with_layer("layer", |root| {
        assert_eq!(
            read_file(root, "written.txt"),
            b"written between get and put"
        );
        assert_eq!(read_file(root, "base.txt"), b"from the base");
    });
    // The parent did not receive the write.
    s.with_layer("base", |root| {
        common::tree::assert_absent(root, "written.txt")
    });
}

fn store_refuses_other_driver(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    s.create("layer", None);
    let before = s.state();
    let other = other_backend(backend);
    for args in [vec!["ls"], vec!["create", "other"], vec!["exists", "layer"]] {
        let out = s.run_driver(Some(other), &[], &args);
        let err = out.expect_failure();
        assert_mentions(&err, backend, &format!("--driver {other} {args:?}"));
    }
    let out = s.run_driver(None, &[("STRATA_DRIVER", other)], ["ls"]);
    let err = out.expect_failure();
    assert_mentions(&err, backend, &format!("STRATA_DRIVER={other} ls"));
    s.assert_state(&before, "after refused driver");
    assert!(!s.exists("other"));
}

fn env_vars_select_root_and_driver(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let root = s.root().to_str().unwrap().to_string();
    let env = [("STRATA_ROOT", root.as_str()), ("STRATA_DRIVER", backend)];
    let mut cmd = Store::bare_command();
    cmd.envs(env).args(["create", "via-env"]);
    common::run_command(cmd, None).expect_code(0);
    // The flags see the same store, recorded with the driver from the environment.
    assert!(s.exists("via-env"));
    let out = s.run_driver(Some(other_backend(backend)), &[], ["ls"]);
    out.expect_failure();
    let mut cmd = Store::bare_command();
    cmd.envs(env).args(["exists", "via-env"]);
    let out = common::run_command(cmd, None);
    out.expect_code(0);
    assert_eq!(out.trimmed(), "true");
}

fn operations_on_missing_layer_fail(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    s.create("present", None);
    let before = s.state();
    let empty_tar = common::tars::TarBuilder::new().finish();
    for args in [
        vec!["get", "ghost"],
        vec!["put", "ghost"],
        vec!["metadata", "ghost"],
        vec!["diff", "ghost"],
        vec!["changes", "ghost"],
        vec!["diff-size", "ghost"],
        vec!["diff", "present", "--parent", "ghost"],
        vec!["changes", "present", "--parent", "ghost"],
    ] {
        let err = s.fail(&args);
        assert_mentions(&err, "ghost", &format!("{args:?}"));
    }
    let err = s.fail_stdin(["apply-diff", "ghost"], &empty_tar);
    assert_mentions(&err, "ghost", "apply-diff ghost");
    s.assert_state(&before, "after operations on a missing layer");
    assert!(!s.exists("ghost"));
}

/// The value of a JSON object's key, matched case-insensitively.
fn key_ci<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn ls_columns_and_json(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    assert!(s.ls().is_empty(), "ls of an empty store");
    s.create("image", None);
    s.create_rw("container", Some("image"));
    let ls = s.ls();
    assert_eq!(ls.len(), 2, "{ls:?}");
    let image = s.ls_entry("image");
    let container = s.ls_entry("container");
    assert_eq!(image.parent, None, "parent column of a base layer is -");
    assert_eq!(container.parent.as_deref(), Some("image"));
    assert_ne!(
        image.kind, container.kind,
        "kind column must tell image and container layers apart"
    );
    assert!(!image.is_mounted() && !container.is_mounted());
    s.get("container");
    assert!(s.ls_entry("container").is_mounted());
    assert!(!s.ls_entry("image").is_mounted());
    s.put("container");
    assert!(!s.ls_entry("container").is_mounted());

    let out = s.ok(["--json", "ls"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("ls --json: {e}: {out}"));
    let arr = v
        .as_array()
        .unwrap_or_else(|| panic!("ls --json must be an array: {out}"));
    let ids: BTreeSet<String> = arr
        .iter()
        .map(|e| {
            let obj = e
                .as_object()
                .unwrap_or_else(|| panic!("ls --json element: {e}"));
            key_ci(obj, "id")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("ls --json element without a string id: {e}"))
                .to_string()
        })
        .collect();
    assert_eq!(ids, s.ids(), "ls --json ids");
}

/// `Key: Value` lines (leading indentation allowed, as in `docker info`).
fn parse_status(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l
                .trim_start()
                .split_once(':')
                .unwrap_or_else(|| panic!("status line without \"Key: Value\": {l:?}"));
            assert!(!k.trim().is_empty(), "status line with an empty key: {l:?}");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

fn status_text_and_json(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    s.create("a", None);
    let text = s.ok(["status"]);
    let pairs = parse_status(&text);
    assert!(
        !pairs.is_empty(),
        "status prints at least one Key: Value line"
    );
    let out = s.ok(["--json", "status"]);
    let v: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}: {out}"));
    // Either an object of strings or Docker's [["key","value"],...].
    let json_pairs: Vec<(String, String)> = match &v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let v = v
                    .as_str()
                    .unwrap_or_else(|| panic!("status --json value for {k}: {v}"));
                (k.clone(), v.to_string())
            })
            .collect(),
        Value::Array(a) => a
            .iter()
            .map(|p| match p.as_array().map(Vec::as_slice) {
                Some([Value::String(k), Value::String(v)]) => (k.clone(), v.clone()),
                _ => panic!("status --json element must be [key, value]: {p}"),
            })
            .collect(),
        other => panic!("status --json must be an object or an array of pairs: {other}"),
    };
    // Same keys, except that the text may open with a "Storage Driver: NAME" heading as
    // `docker info` does.
    let text_keys: BTreeSet<&str> = pairs
        .iter()
        .map(|p| p.0.as_str())
        .filter(|k| *k != "Storage Driver")
        .collect();
    let json_keys: BTreeSet<&str> = json_pairs
        .iter()
        .map(|p| p.0.as_str())
        .filter(|k| *k != "Storage Driver")
        .collect();
    assert_eq!(text_keys, json_keys, "status text and --json keys");
    for (k, v) in &json_pairs {
        if let Some((_, tv)) = pairs.iter().find(|(tk, _)| tk == k) {
            assert_eq!(tv, v, "status {k}: text and --json values");
        }
    }
}

fn assert_object_of_strings(text: &str, what: &str) -> BTreeMap<String, String> {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what} must be a JSON object: {text}"));
    obj.iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .unwrap_or_else(|| panic!("{what}: value of {k} must be a string: {v}"));
            (k.clone(), v.to_string())
        })
        .collect()
}

fn metadata_is_json_object_of_strings(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    base_and_child(&s, "base", "child");
    s.create_rw("container", Some("child"));
    for id in ["base", "child", "container"] {
        let plain = assert_object_of_strings(&s.ok(["metadata", id]), &format!("metadata {id}"));
        let json = assert_object_of_strings(
            &s.ok(["--json", "metadata", id]),
            &format!("--json metadata {id}"),
        );
        assert_eq!(plain, json, "metadata {id}: plain and --json agree");
    }
}

fn changes_json_matches_text(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    s.create("base", None);
    s.with_layer("base", |root| {
        write_file(root, "modified", b"old", 0o644);
        write_file(root, "deleted", b"gone soon", 0o644);
        write_file(root, "same", b"unchanged", 0o644);
    });
    s.create("child", Some("base"));
    s.with_layer("child", |root| {
        write_file(root, "modified", b"new and longer", 0o644);
        fs::remove_file(root.join("deleted")).unwrap();
        write_file(root, "added", b"added", 0o644);
    });
    let text = s.changes("child", None);
    assert_eq!(
        text,
        vec![
            ("/added".to_string(), ChangeKind::Add),
            ("/deleted".to_string(), ChangeKind::Delete),
            ("/modified".to_string(), ChangeKind::Modify),
        ],
        "changes child"
    );
    let out = s.ok(["--json", "changes", "child"]);
    let v: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("changes --json: {e}: {out}"));
    let arr = v
        .as_array()
        .unwrap_or_else(|| panic!("changes --json must be an array: {out}"));
    let json: Vec<(String, ChangeKind)> = arr
        .iter()
        .map(|e| {
            let obj = e.as_object().unwrap_or_else(|| panic!("element: {e}"));
            let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                BTreeSet::from(["Kind", "Path"]),
                "changes --json keys: {e}"
            );
            let path = obj["Path"].as_str().expect("Path is a string").to_string();
            let kind = obj["Kind"]
                .as_u64()
                .and_then(ChangeKind::from_code)
                .unwrap_or_else(|| panic!("Kind must be 0, 1 or 2: {e}"));
            (path, kind)
        })
        .collect();
    assert_eq!(json, text, "changes --json equals the text output");
    // Empty output for a layer without changes.
    s.create("empty-child", Some("base"));
    assert!(s.changes("empty-child", None).is_empty());
    let out = s.ok(["--json", "changes", "empty-child"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        Value::Array(vec![])
    );
    assert!(parse_changes(&s.ok(["changes", "empty-child"])).is_empty());
}

fn image_layer_becomes_read_only_after_child(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    s.create("image", None);
    // Writable through get while it has no child.
    s.with_layer("image", |root| {
        write_file(root, "existing.txt", b"before the child", 0o644)
    });
    s.create("child", Some("image"));
    s.with_layer("image", |root| {
        let r = fs::write(root.join("new.txt"), b"x");
        assert!(
            is_errno(&r, libc::EROFS),
            "creating a file in an image layer with a child must fail with EROFS, got {r:?}"
        );
        let r = fs::OpenOptions::new()
            .write(true)
            .open(root.join("existing.txt"));
        assert!(
            is_errno(&r, libc::EROFS),
            "opening a file of an image layer with a child for writing must fail with EROFS, got {r:?}"
        );
        let r = fs::create_dir(root.join("dir"));
        assert!(is_errno(&r, libc::EROFS), "mkdir: EROFS expected, got {r:?}");
        let r = fs::remove_file(root.join("existing.txt"));
        assert!(is_errno(&r, libc::EROFS), "unlink: EROFS expected, got {r:?}");
        assert_eq!(read_file(root, "existing.txt"), b"before the child");
    });
    // The child itself is writable (it has no child of its own) and sees the parent.
    s.with_layer("child", |root| {
        assert_eq!(read_file(root, "existing.txt"), b"before the child");
        write_file(root, "child.txt", b"child", 0o644);
    });
    s.with_layer("image", |root| {
        common::tree::assert_absent(root, "child.txt")
    });
}

fn cleanup_unmounts_and_leaves_only_layer_dirs(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    base_and_child(&s, "base", "child");
    let tar = {
        let mut t = common::tars::TarBuilder::new();
        t.file("applied.txt", b"applied", common::tars::Meta::mode(0o644));
        t.finish()
    };
    s.apply_diff("child", None, &tar);
    s.create_rw("container", Some("child"));
    s.create("removed", Some("base"));
    s.remove("removed");
    let path = s.get("container");
    let other = s.get("child");
    s.ok(["cleanup"]);
    assert_not_mounted(&path, "container after cleanup");
    assert_not_mounted(&other, "child after cleanup");
    s.assert_clean_layout();
    assert_eq!(
        s.ids(),
        BTreeSet::from([
            "base".to_string(),
            "child".to_string(),
            "container".to_string()
        ])
    );
    // The store works after cleanup.
    s.with_layer("container", |root| {
        assert_eq!(read_file(root, "applied.txt"), b"applied");
        assert_eq!(read_file(root, "base.txt"), b"from the base");
    });
}

/// Usage errors exit 2 (clap-style), independent of the backend.
#[test]
fn usage_errors_exit_2() {
    let Some(s) = Store::new("vfs") else { return };
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["create"],
        vec!["exists"],
        vec!["create", "x", "--no-such-flag"],
        vec!["apply-diff"],
    ] {
        let err = s.usage_error(&args);
        assert!(
            !err.trim().is_empty(),
            "{args:?}: usage errors explain themselves"
        );
    }
}
