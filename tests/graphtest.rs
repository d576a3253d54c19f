//! moby's graphtest conformance suite (`daemon/graphdriver/graphtest`), test by test, against
//! the `strata` CLI, for both backends.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::graph::*;
use common::tars::{list_tar, norm};
use common::tree::{read_dir_names, read_file, write_file};
use common::{sorted_changes, ChangeKind, Store};

backend_tests!(
    create_empty,
    create_base,
    create_snap,
    deep_layer_read_128,
    diff_apply_10,
    changes_21,
);

/// CreateEmpty: `create empty`; exists; `get` is an empty directory, mode 0755, owned 0:0;
/// put; remove; gone.
fn create_empty(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    assert!(!s.exists("empty"), "exists before create");
    s.create("empty", None);
    assert!(s.exists("empty"), "exists after create");
    s.with_layer("empty", |root| {
        assert_eq!(
            read_dir_names(root),
            Vec::<String>::new(),
            "empty layer entries"
        );
        let md = fs::metadata(root).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o755, "mode of the empty layer root");
        assert_eq!(
            (md.uid(), md.gid()),
            (0, 0),
            "owner of the empty layer root"
        );
    });
    s.remove("empty");
    assert!(!s.exists("empty"), "exists after remove");
    assert!(s.ids().is_empty(), "ls after remove: {:?}", s.ls());
}

/// CreateBase: createBase + verifyBase + remove.
fn create_base(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    common::graph::create_base(&s, "Base");
    verify_base(&s, "Base");
    s.remove("Base");
    assert!(!s.exists("Base"));
}

/// CreateSnap: createBase; `create Snap --parent Base`; verifyBase on Snap.
fn create_snap(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    common::graph::create_base(&s, "Base");
    s.create("Snap", Some("Base"));
    verify_base(&s, "Snap");
    // The parent is untouched by reading the child.
    verify_base(&s, "Base");
    s.remove("Snap");
    s.remove("Base");
    assert!(s.ids().is_empty());
}

/// DeepLayerRead(128): base with `testfile.txt`; 128 image layers on top, each written
/// through `get`; the chain is checked from the top, and the base file read through it.
fn deep_layer_read_128(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let base = layer_id(1);
    s.create(&base, None);
    s.with_layer(&base, |root| {
        write_file(root, "testfile.txt", b"test content", 0o755)
    });
    let top = add_many_layers(&s, &base, 128, 7);
    check_many_layers(&s, &top, 128, &base);
    s.with_layer(&top, |root| {
        assert_eq!(read_file(root, "testfile.txt"), b"test content");
    });
    assert_eq!(s.ls().len(), 129, "ls lists base + 128 layers");
}

/// DeepLayerRead(500), as moby's conformance suite runs it: a base and 500 image layers on it
/// (a chain of 501, every layer written through its own `get`), read from the top through the
/// CLI — the deepest chain overlayfs mounts (500 lower directories under the top's own).
/// Overlay only: vfs has no depth limit, and copying every parent makes its 500-layer chain
/// take minutes.
#[test]
fn overlay_deep_layer_read_500() {
    let Some(s) = Store::new("overlay") else {
        return;
    };
    let base = layer_id(2);
    s.create(&base, None);
    s.with_layer(&base, |root| {
        write_file(root, "testfile.txt", b"test content", 0o755)
    });
    let top = add_many_layers(&s, &base, 500, 8);
    check_many_layers(&s, &top, 500, &base);
    s.with_layer(&top, |root| {
        assert_eq!(read_file(root, "testfile.txt"), b"test content");
    });
    assert_eq!(s.ls().len(), 501, "ls lists base + 500 layers");
}

/// DiffApply(10): `diff-size upper` (own parent) equals what `apply-diff` of `diff upper
/// --parent base` onto a fresh sibling returns: 640.
fn diff_apply_10(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let n = 10;
    let base = layer_id(11);
    let upper = layer_id(12);
    let diff = layer_id(13);
    let delete_file = "file-remove.txt";
    let delete_content = b"This file should get removed in upper!";
    let delete_dir = "var/lib";

    s.create(&base, None);
    add_many_files(&s, &base, n, 3);
    add_file(&s, &base, delete_file, delete_content);
    add_directory(&s, &base, delete_dir);

    s.create(&upper, Some(&base));
    add_many_files(&s, &upper, n, 6);
    remove_all(&s, &upper, &[delete_file, delete_dir]);

    let diff_size = s.diff_size(&upper, None);
    assert_eq!(
        diff_size, 640,
        "diff-size of upper (10 rewritten 64-byte files)"
    );
    assert_eq!(
        s.diff_size(&upper, Some(&base)),
        diff_size,
        "diff-size with --parent = own parent"
    );

    s.create(&diff, Some(&base));
    check_many_files(&s, &diff, n, 3);
    check_file(&s, &diff, delete_file, delete_content);

    let tar = s.diff(&upper, Some(&base));
    let names: Vec<String> = list_tar(&tar).iter().map(|e| norm(&e.path)).collect();
    for wh in [".wh.file-remove.txt", "var/.wh.lib"] {
        assert!(
            names.iter().any(|n| n == wh),
            "diff must carry whiteout {wh}; entries: {names:?}"
        );
    }

    let applied = s.apply_diff(&diff, Some(&base), &tar);
    assert_eq!(applied, diff_size, "apply-diff size must equal diff-size");

    check_many_files(&s, &diff, n, 6);
    check_file_removed(&s, &diff, delete_file);
    check_file_removed(&s, &diff, delete_dir);
    // The base is untouched.
    check_many_files(&s, &base, n, 3);
    check_file(&s, &base, delete_file, delete_content);
}

/// Changes: base addManyFiles(20, 3); upper changeManyFiles(20, 6): 21 expected changes
/// (1 directory Modify + 7 Modify + 7 Add + 6 Delete).
fn changes_21(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let base = layer_id(21);
    let upper = layer_id(22);
    s.create(&base, None);
    add_many_files(&s, &base, 20, 3);
    s.create(&upper, Some(&base));
    let expected = sorted_changes(change_many_files(&s, &upper, 20, 6));
    assert_eq!(expected.len(), 21);
    let count = |k: ChangeKind| expected.iter().filter(|c| c.1 == k).count();
    assert_eq!(
        (
            count(ChangeKind::Modify),
            count(ChangeKind::Add),
            count(ChangeKind::Delete)
        ),
        (8, 7, 6)
    );

    let got = sorted_changes(s.changes(&upper, Some(&base)));
    assert_eq!(got, expected, "changes upper --parent base");
    let got_default = sorted_changes(s.changes(&upper, None));
    assert_eq!(got_default, expected, "changes upper (own parent)");

    // With no parent at all, everything in the base layer is an Add.
    let base_changes = s.changes(&base, None);
    assert_eq!(base_changes.len(), 21, "base: 1 directory + 20 files");
    assert!(
        base_changes.iter().all(|c| c.1 == ChangeKind::Add),
        "base changes must all be Adds: {base_changes:?}"
    );
}
