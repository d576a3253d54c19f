//! `apply-diff` and `diff`: input forms (plain, gzip, zstd; stdin, FILE), entry types and
//! whiteouts, diff → apply round trips, atomicity of failed applies, and tars that try to
//! write outside the layer.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::graph::random_content;
use common::tars::{gzip, list_tar, norm, zstd, Meta, TarBuilder};
use common::tree::{self, assert_trees_eq, read_file, write_file, Kind, Tree};
use common::{assert_mentions, sorted_changes, ChangeKind, Store};

backend_tests!(
    apply_diff_plain_gzip_zstd_agree,
    apply_diff_from_stdin_and_file_agree,
    apply_diff_entry_types_and_whiteouts,
    diff_then_apply_onto_sibling_reproduces_layer,
    failed_apply_truncated_mid_file_changes_nothing,
    failed_apply_invalid_entry_changes_nothing,
    failed_apply_garbage_changes_nothing,
    hostile_tar_stays_inside_layer,
    diff_of_unmodified_applied_layer_is_byte_identical,
    writable_get_ends_exact_reexport,
    digest_is_verified_before_commit,
);

/// A tar with a spread of entry kinds and sizes; returns it and the sum of its regular-file
/// sizes.
fn sample_tar(seed: u64) -> (Vec<u8>, u64) {
    let mut t = TarBuilder::new();
    let mut sum = 0u64;
    t.dir("etc", Meta::mode(0o755));
    t.dir("srv/data", Meta::mode(0o750).owner(33, 33));
    for (i, n) in [0usize, 1, 511, 512, 513, 100_000].iter().enumerate() {
        let content = random_content(*n, seed + i as u64);
        t.file(
            &format!("srv/data/f{i}"),
            &content,
            Meta::mode(0o640).owner(33, 33),
        );
        sum += *n as u64;
    }
    t.file("etc/motd", b"hello\n", Meta::mode(0o644));
    sum += 6;
    t.symlink("etc/motd.link", "motd");
    t.hardlink("etc/motd.hard", "etc/motd", Meta::mode(0o644));
    t.fifo("srv/pipe", Meta::mode(0o600));
    t.file_with_xattrs(
        "srv/tagged",
        b"tagged",
        Meta::mode(0o644),
        &[("user.origin", b"sample")],
    );
    sum += 6;
    (t.finish(), sum)
}

fn apply_diff_plain_gzip_zstd_agree(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    s.create("base", None);
    s.with_layer("base", |root| write_file(root, "base.txt", b"base", 0o644));
    let (tar, sum) = sample_tar(100);
    let mut snaps = Vec::new();
    for (id, data) in [
        ("plain", tar.clone()),
        ("gzip", gzip(&tar)),
        ("zstd", zstd(&tar)),
    ] {
        s.create(id, Some("base"));
        let size = s.apply_diff(id, None, &data);
        assert_eq!(
            size, sum,
            "{id}: apply-diff size = sum of regular-file sizes"
        );
        snaps.push((id, s.snapshot(id)));
    }
    let plain = &snaps[0].1;
    assert_eq!(
        plain["/srv/data/f5"].kind,
        Kind::File(tree::Content(random_content(100_000, 105)))
    );
    assert_eq!(plain["/etc/motd"].mtime, Some(common::tars::MTIME as i64));
    assert_eq!(plain["/srv/data"].uid, 33);
    assert_eq!(
        plain["/srv/tagged"]
            .xattrs
            .get("user.origin")
            .map(Vec::as_slice),
        Some(&b"sample"[..])
    );
    for (id, snap) in &snaps[1..] {
        assert_trees_eq(plain, snap, &format!("{id} vs plain"));
    }
}

fn apply_diff_from_stdin_and_file_agree(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let (tar, sum) = sample_tar(200);
    let file = s.scratch().join("layer.tar");
    fs::write(&file, &tar).unwrap();
    let gz_file = s.scratch().join("layer.tar.gz");
    fs::write(&gz_file, gzip(&tar)).unwrap();

    s.create("stdin", None);
    assert_eq!(s.apply_diff("stdin", None, &tar), sum);
    s.create("file", None);
    assert_eq!(s.apply_diff_file("file", &file), sum);
    s.create("gzfile", None);
    assert_eq!(s.apply_diff_file("gzfile", &gz_file), sum);
    // --parent naming the layer's own parent (here: none is given, so apply to a child).
    s.create("child", Some("file"));
    let extra = {
        let mut t = TarBuilder::new();
        t.file("extra", b"12345", Meta::mode(0o644));
        t.finish()
    };
    assert_eq!(s.apply_diff("child", Some("file"), &extra), 5);

    let a = s.snapshot("stdin");
    assert_trees_eq(&a, &s.snapshot("file"), "FILE vs stdin");
    assert_trees_eq(&a, &s.snapshot("gzfile"), "gzip FILE vs stdin");
    let mut with_extra = a.clone();
    let c = s.snapshot("child");
    with_extra.insert("/extra".into(), c["/extra"].clone());
    assert_trees_eq(&with_extra, &c, "child = parent + extra");
}

fn long_names() -> (String, String, String) {
    let dir = format!("long/{}", "d".repeat(150));
    let gnu = format!("{dir}/{}", "f".repeat(200));
    let pax = format!("{dir}/{}", "g".repeat(200));
    (dir, gnu, pax)
}

fn apply_diff_entry_types_and_whiteouts(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    s.create("base", None);
    s.with_layer("base", |root| {
        write_file(root, "keep.txt", b"keep", 0o644);
        write_file(root, "gone.txt", b"gone", 0o644);
        write_file(root, "opq/old1", b"old1", 0o644);
        write_file(root, "opq/sub/old2", b"old2", 0o644);
        write_file(root, "was-file", b"file content", 0o644);
        write_file(root, "gone-dir/inner", b"x", 0o644);
    });
    let base_before = s.snapshot("base");
    s.create("child", Some("base"));

    let (long_dir, gnu_name, pax_name) = long_names();
    let file_content = random_content(100, 42);
    let mut t = TarBuilder::new();
    let mut sum = 0u64;
    t.dir("opq", Meta::mode(0o755));
    t.opaque("opq");
    t.file("opq/new", b"new", Meta::mode(0o644));
    sum += 3;
    t.whiteout("gone.txt");
    t.whiteout("gone-dir");
    t.dir("dir", Meta::mode(0o750).owner(1000, 1000));
    let file_meta = Meta::mode(0o640).owner(1000, 1001).mtime(1_500_000_000);
    t.file("dir/file", &file_content, file_meta);
    sum += 100;
    t.hardlink("dir/hard", "dir/file", file_meta);
    t.symlink("dir/sym", "file");
    t.fifo("dir/fifo", Meta::mode(0o600));
    t.char_dev("dir/null", 1, 3, Meta::mode(0o666));
    t.block_dev("dir/loop", 7, 0, Meta::mode(0o660));
    t.file_with_xattrs(
        "dir/xattr",
        b"x",
        Meta::mode(0o644),
        &[("user.test", b"value"), ("user.bin", &[0, 1, 2, 255])],
    );
    sum += 1;
    t.file("dir/empty", b"", Meta::mode(0o644));
    t.dir("long", Meta::mode(0o755));
    t.dir(&long_dir, Meta::mode(0o755));
    t.file(&gnu_name, b"gnu long name", Meta::mode(0o644));
    sum += 13;
    t.file_pax_path(&pax_name, b"pax long name", Meta::mode(0o644));
    sum += 13;
    t.file("setuid", b"#!/bin/true\n", Meta::mode(0o4755));
    sum += 12;
    t.symlink("was-file", "keep.txt");
    let tar = t.finish();

    assert_eq!(s.apply_diff("child", None, &tar), sum, "apply-diff size");

    let snap = s.snapshot("child");
    let get = |p: &str| {
        snap.get(p)
            .unwrap_or_else(|| panic!("{p} missing from the child; it has {:?}", snap.keys()))
    };
    assert_eq!(
        get("/keep.txt").kind,
        Kind::File(tree::Content(b"keep".to_vec()))
    );
    for absent in [
        "/gone.txt",
        "/gone-dir",
        "/gone-dir/inner",
        "/opq/old1",
        "/opq/sub",
    ] {
        assert!(!snap.contains_key(absent), "{absent} must be gone");
    }
    let opq: Vec<&String> = snap.keys().filter(|k| k.starts_with("/opq/")).collect();
    assert_eq!(
        opq,
        vec!["/opq/new"],
        "opaque directory holds only the new entry"
    );
    let d = get("/dir");
    assert_eq!(
        (d.kind.clone(), d.mode, d.uid, d.gid),
        (Kind::Dir, 0o750, 1000, 1000)
    );
    let f = get("/dir/file");
    assert_eq!(f.kind, Kind::File(tree::Content(file_content.clone())));
    assert_eq!((f.mode, f.uid, f.gid), (0o640, 1000, 1001));
    assert_eq!(f.mtime, Some(1_500_000_000), "mtime from the header");
    let h = get("/dir/hard");
    assert_eq!(h.hardlink_of.as_deref(), Some("/dir/file"), "hard link");
    assert_eq!(get("/dir/sym").kind, Kind::Symlink("file".into()));
    let fifo = get("/dir/fifo");
    assert_eq!((fifo.kind.clone(), fifo.mode), (Kind::Fifo, 0o600));
    let null = get("/dir/null");
    assert_eq!(
        (null.kind.clone(), null.mode),
        (Kind::CharDev(libc::makedev(1, 3)), 0o666)
    );
    let lp = get("/dir/loop");
    assert_eq!(
        (lp.kind.clone(), lp.mode),
        (Kind::BlockDev(libc::makedev(7, 0)), 0o660)
    );
    let x = get("/dir/xattr");
    assert_eq!(
        x.xattrs.get("user.test").map(Vec::as_slice),
        Some(&b"value"[..])
    );
    assert_eq!(
        x.xattrs.get("user.bin").map(Vec::as_slice),
        Some(&[0u8, 1, 2, 255][..])
    );
    assert_eq!(
        get("/dir/empty").kind,
        Kind::File(tree::Content(Vec::new()))
    );
    assert_eq!(
        get(&format!("/{gnu_name}")).kind,
        Kind::File(tree::Content(b"gnu long name".to_vec()))
    );
    assert_eq!(
        get(&format!("/{pax_name}")).kind,
        Kind::File(tree::Content(b"pax long name".to_vec()))
    );
    assert_eq!(get("/setuid").mode, 0o4755);
    assert_eq!(get("/was-file").kind, Kind::Symlink("keep.txt".into()));
    for p in snap.keys() {
        assert!(
            !p.split('/').any(|c| c.starts_with(".wh.")),
            "whiteout marker {p} must not be visible"
        );
    }
    assert!(
        !snap.keys().any(|p| p.contains("pax-placeholder")),
        "the PAX path record must override the header name"
    );

    let mut expected: Vec<(String, ChangeKind)> = [
        ("/dir", 'A'),
        ("/dir/empty", 'A'),
        ("/dir/fifo", 'A'),
        ("/dir/file", 'A'),
        ("/dir/hard", 'A'),
        ("/dir/loop", 'A'),
        ("/dir/null", 'A'),
        ("/dir/sym", 'A'),
        ("/dir/xattr", 'A'),
        ("/gone-dir", 'D'),
        ("/gone.txt", 'D'),
        ("/long", 'A'),
        ("/opq", 'C'),
        ("/opq/new", 'A'),
        ("/opq/old1", 'D'),
        ("/opq/sub", 'D'),
        ("/setuid", 'A'),
        ("/was-file", 'C'),
    ]
    .iter()
    .map(|(p, k)| (p.to_string(), ChangeKind::from_letter(*k).unwrap()))
    .collect();
    expected.push((format!("/{long_dir}"), ChangeKind::Add));
    expected.push((format!("/{gnu_name}"), ChangeKind::Add));
    expected.push((format!("/{pax_name}"), ChangeKind::Add));
    assert_eq!(
        sorted_changes(s.changes("child", None)),
        sorted_changes(expected),
        "changes after apply"
    );
    // Non-directory Add/Modify lstat sizes, the hard-linked inode once: regular files plus the
    // two symlink targets ("file", "keep.txt").
    assert_eq!(
        s.diff_size("child", None),
        sum + 4 + 8,
        "diff-size after apply"
    );

    assert_trees_eq(
        &base_before,
        &s.snapshot("base"),
        "base after applying to child",
    );
}

/// Builds base + upper with every kind of change; returns nothing, leaves `base`, `upper`.
fn build_upper(s: &Store) {
    s.create("base", None);
    s.with_layer("base", |root| {
        write_file(root, "etc/config", b"config v1", 0o644);
        write_file(root, "bin/tool", b"#!/bin/sh\n", 0o755);
        write_file(root, "data/big", &random_content(100_000, 9), 0o644);
        write_file(root, "data/remove-me", b"remove me", 0o644);
        write_file(root, "data/dir-remove/x", b"x", 0o644);
        tree::symlink(root, "link-to-config", "etc/config");
        tree::write_file_owned(root, "owned", b"owned", 0o640, 1000, 1000);
        write_file(root, "hl1", b"linked", 0o644);
        tree::hardlink(root, "hl2", "hl1");
    });
    s.create("upper", Some("base"));
    s.with_layer("upper", |root| {
        write_file(root, "etc/config", b"config v2, longer", 0o644);
        tree::chmod(&root.join("bin/tool"), 0o4755);
        tree::chown(&root.join("owned"), 2000, 2000);
        tree::chmod(&root.join("owned"), 0o640);
        write_file(root, "new/dir/file", b"new file", 0o600);
        tree::set_xattr(&root.join("new/dir/file"), "user.note", b"hello");
        tree::set_mtime(&root.join("new/dir/file"), 1_234_567_890);
        tree::mknod(root, "new/fifo", libc::S_IFIFO | 0o640, 0, 0);
        tree::mknod(root, "new/null", libc::S_IFCHR | 0o666, 1, 3);
        fs::remove_file(root.join("data/remove-me")).unwrap();
        fs::remove_dir_all(root.join("data/dir-remove")).unwrap();
        fs::remove_file(root.join("link-to-config")).unwrap();
        write_file(root, "link-to-config", b"now a file", 0o644);
        write_file(root, "new/h1", b"hard", 0o644);
        tree::hardlink(root, "new/h2", "new/h1");
        tree::symlink(root, "new/sym", "../etc/config");
        write_file(root, &format!("new/{}", "n".repeat(200)), b"long", 0o644);
        tree::mkdir_owned(root, "new/empty", 0o700, 3, 4);
    });
}

fn diff_then_apply_onto_sibling_reproduces_layer(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    build_upper(&s);
    let upper = s.snapshot("upper");

    let from_stdout = s.diff("upper", None);
    let file = s.scratch().join("upper.tar");
    let file_arg = file.to_str().unwrap();
    s.ok(["diff", "upper", "--parent", "base", "-o", file_arg]);
    let from_file = fs::read(&file).expect("diff -o FILE writes the file");

    let names = |t: &[u8]| {
        let mut v: Vec<String> = list_tar(t).iter().map(|e| norm(&e.path)).collect();
        v.sort();
        v
    };
    let listed = names(&from_stdout);
    assert_eq!(
        listed,
        names(&from_file),
        "diff to stdout and to FILE list the same entries"
    );
    for wh in ["data/.wh.remove-me", "data/.wh.dir-remove"] {
        assert!(
            listed.iter().any(|n| n == wh),
            "diff must carry {wh}: {listed:?}"
        );
    }
    assert!(
        !listed
            .iter()
            .any(|n| n == "data/big" || n == "hl1" || n == "hl2"),
        "unchanged files must not be in the diff: {listed:?}"
    );
    assert!(
        !listed.iter().any(|n| n.starts_with("data/dir-remove/")),
        "a deleted directory is one whiteout: {listed:?}"
    );

    s.create("sibling-stdin", Some("base"));
    let size1 = s.apply_diff("sibling-stdin", None, &from_stdout);
    s.create("sibling-file", Some("base"));
    let size2 = s.apply_diff_file("sibling-file", &file);
    assert_eq!(size1, size2);
    let regular: u64 = list_tar(&from_stdout)
        .iter()
        .filter(|e| e.kind == tar::EntryType::Regular || e.kind == tar::EntryType::Continuous)
        .map(|e| e.size)
        .sum();
    assert_eq!(
        size1, regular,
        "applied size = sum of regular-file sizes in the diff"
    );

    assert_trees_eq(
        &upper,
        &s.snapshot("sibling-stdin"),
        "sibling (stdin) vs upper",
    );
    assert_trees_eq(
        &upper,
        &s.snapshot("sibling-file"),
        "sibling (FILE) vs upper",
    );
    assert_eq!(
        s.changes("sibling-stdin", None),
        s.changes("upper", None),
        "changes of the sibling and of upper"
    );
    assert_eq!(
        s.diff_size("sibling-stdin", None),
        s.diff_size("upper", None),
        "diff-size of the sibling and of upper"
    );
}

/// A base with content and a child `target` holding its own file; returns the snapshot.
fn target_layer(s: &Store) -> Tree {
    s.create("base", None);
    s.with_layer("base", |root| {
        write_file(root, "keep.txt", b"keep", 0o644);
        write_file(root, "gone.txt", b"gone", 0o644);
        write_file(root, "dir/inner", b"inner", 0o644);
    });
    s.create("target", Some("base"));
    s.with_layer("target", |root| {
        write_file(root, "mine.txt", b"mine", 0o644)
    });
    s.snapshot("target")
}

/// Entries that would visibly change `target` if any of them were kept; returns the sum of
/// their regular-file sizes.
fn good_prefix(t: &mut TarBuilder) -> u64 {
    let changed: &[u8] = b"changed by the failed apply";
    t.dir("newdir", Meta::mode(0o755));
    t.file("newdir/a", &random_content(1000, 5), Meta::mode(0o644));
    t.file("keep.txt", b"overwritten", Meta::mode(0o644));
    t.whiteout("gone.txt");
    t.whiteout("dir");
    t.file("mine.txt", changed, Meta::mode(0o600));
    1000 + 11 + changed.len() as u64
}

fn assert_target_unchanged(s: &Store, before: &Tree, state: &common::StoreState, what: &str) {
    s.assert_state(state, what);
    assert_trees_eq(before, &s.snapshot("target"), what);
}

fn failed_apply_truncated_mid_file_changes_nothing(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let before = target_layer(&s);
    let state = s.state();

    let mut t = TarBuilder::new();
    let prefix_size = good_prefix(&mut t);
    let start = t.len();
    t.file("broken.bin", &random_content(100_000, 6), Meta::mode(0o644));
    let full = t.finish();
    // Header (512) + 5000 of the 100 000 data bytes, then EOF.
    let truncated = full[..start + 512 + 5000].to_vec();

    let err = s.fail_stdin(["apply-diff", "target"], &truncated);
    assert_mentions(&err, "broken.bin", "truncated tar");
    assert_target_unchanged(&s, &before, &state, "after a truncated plain tar");

    let err = s.fail_stdin(["apply-diff", "target"], &gzip(&truncated));
    assert_mentions(&err, "broken.bin", "truncated tar inside gzip");
    assert_target_unchanged(&s, &before, &state, "after a truncated tar in gzip");

    let file = s.scratch().join("truncated.tar");
    fs::write(&file, &truncated).unwrap();
    let err = s.fail(["apply-diff", "target", file.to_str().unwrap()]);
    assert_mentions(&err, "broken.bin", "truncated tar from FILE");
    assert_target_unchanged(&s, &before, &state, "after a truncated tar FILE");

    // Nothing is left locked or half-done: the complete tar applies.
    assert_eq!(s.apply_diff("target", None, &full), prefix_size + 100_000);
    s.with_layer("target", |root| {
        assert_eq!(read_file(root, "keep.txt"), b"overwritten");
        tree::assert_absent(root, "gone.txt");
        tree::assert_absent(root, "dir");
        assert_eq!(read_file(root, "broken.bin"), random_content(100_000, 6));
    });
}

fn failed_apply_invalid_entry_changes_nothing(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let before = target_layer(&s);
    let state = s.state();
    let mut t = TarBuilder::new();
    good_prefix(&mut t);
    t.hardlink("bad-link", "does/not/exist", Meta::mode(0o644));
    t.file("after", b"after", Meta::mode(0o644));
    let tar = t.finish();
    let err = s.fail_stdin(["apply-diff", "target"], &tar);
    assert_mentions(&err, "bad-link", "hard link to a missing target");
    assert_target_unchanged(&s, &before, &state, "after an invalid hard link");
}

fn failed_apply_garbage_changes_nothing(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let before = target_layer(&s);
    let state = s.state();

    let garbage = random_content(64 * 1024, 77);
    s.fail_stdin(["apply-diff", "target"], &garbage);
    assert_target_unchanged(&s, &before, &state, "after garbage");

    // A valid prefix followed by garbage where the next header should be.
    let mut t = TarBuilder::new();
    good_prefix(&mut t);
    t.raw_bytes(&random_content(4096, 78));
    let tar = t.unfinished();
    s.fail_stdin(["apply-diff", "target"], &tar);
    assert_target_unchanged(&s, &before, &state, "after entries followed by garbage");

    // A gzip stream cut short.
    let mut t = TarBuilder::new();
    good_prefix(&mut t);
    let gz = gzip(&t.finish());
    s.fail_stdin(["apply-diff", "target"], &gz[..gz.len() / 2]);
    assert_target_unchanged(&s, &before, &state, "after a truncated gzip stream");

    // A zstd frame cut short.
    let mut t = TarBuilder::new();
    good_prefix(&mut t);
    let zs = zstd(&t.finish());
    s.fail_stdin(["apply-diff", "target"], &zs[..zs.len() / 2]);
    assert_target_unchanged(&s, &before, &state, "after a truncated zstd stream");
}

/// Every file called `name` at or below `dir` (not following symlinks).
fn find_named(dir: &Path, name: &str, found: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name() == name {
            found.push(p.clone());
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            find_named(&p, name, found);
        }
    }
}

fn hostile_tar_stays_inside_layer(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    target_layer(&s);
    let outside = s.scratch().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    let unique = format!("escape-{}-{backend}.txt", std::process::id());

    let mut tars: Vec<(String, Vec<u8>)> = Vec::new();
    for depth in 1..=6 {
        let name = format!("{}{unique}", "../".repeat(depth));
        let mut t = TarBuilder::new();
        t.file_raw_name(name.as_bytes(), b"escaped", Meta::mode(0o644));
        tars.push((name, t.finish()));
    }
    let mut t = TarBuilder::new();
    t.file_raw_name(format!("/{unique}").as_bytes(), b"abs", Meta::mode(0o644));
    tars.push(("absolute name".into(), t.finish()));
    let mut t = TarBuilder::new();
    t.symlink("evil", outside.to_str().unwrap());
    t.file("evil/pwned", b"pwned", Meta::mode(0o644));
    tars.push(("write through an absolute symlink".into(), t.finish()));
    let mut t = TarBuilder::new();
    t.symlink("evil2", "../../../../../../../..");
    t.file(
        &format!("evil2{}/pwned", outside.to_str().unwrap()),
        b"pwned",
        Meta::mode(0o644),
    );
    tars.push(("write through a ../ symlink".into(), t.finish()));
    let mut t = TarBuilder::new();
    t.hardlink(
        "stolen",
        outside.join("secret").to_str().unwrap(),
        Meta::mode(0o644),
    );
    tars.push(("hard link to an absolute host path".into(), t.finish()));
    let mut t = TarBuilder::new();
    t.hardlink(
        "stolen2",
        "../../../../../../../../etc/passwd",
        Meta::mode(0o644),
    );
    tars.push(("hard link with ../".into(), t.finish()));

    let passwd_links = fs::metadata("/etc/passwd").map(|m| m.nlink()).ok();
    for (what, tar) in &tars {
        let before = s.snapshot("target");
        let state = s.state();
        let out = s.run_stdin(["apply-diff", "target"], tar);
        match out.code {
            Some(0) => {}
            Some(1) => {
                out.expect_failure();
                assert_target_unchanged(&s, &before, &state, what);
            }
            _ => panic!(
                "{what}: apply-diff must succeed or refuse: {}",
                out.describe()
            ),
        }
        // Inside the layer's own directory (or staging) is fine; anywhere else is an escape.
        let mut found = Vec::new();
        find_named(s.scratch(), &unique, &mut found);
        let own = s.layers_dir().join("target");
        found.retain(|p| !p.starts_with(&own) && !p.starts_with(s.staging_dir()));
        for dir in [s.scratch().parent().unwrap(), Path::new("/")] {
            if dir.join(&unique).exists() {
                found.push(dir.join(&unique));
            }
        }
        assert!(
            found.is_empty(),
            "{what}: wrote outside the layer: {found:?}"
        );
        tree::assert_absent(&outside, "pwned");
        let secret = fs::metadata(outside.join("secret")).unwrap();
        assert_eq!(secret.nlink(), 1, "{what}: host file gained a hard link");
        assert_eq!(fs::read(outside.join("secret")).unwrap(), b"secret");
        assert_eq!(
            fs::metadata("/etc/passwd").map(|m| m.nlink()).ok(),
            passwd_links,
            "{what}: /etc/passwd gained a hard link"
        );
    }
}

/// `diff` of a layer that was only applied reproduces the applied (uncompressed) tar byte for
/// byte, whatever its oddities: vendor PAX records, the same name twice, a file added then
/// whited out, trailing bytes after the end-of-archive marker; compressed input too.
fn diff_of_unmodified_applied_layer_is_byte_identical(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let (base, _) = sample_tar(11);
    s.create("base", None);
    s.apply_diff("base", None, &gzip(&base));
    assert_eq!(s.diff("base", None), base, "base layer re-export");
    let mut t = TarBuilder::new();
    t.pax(&[
        ("MSWINDOWS.rawsd", b"AQAEgBQ="),
        ("LIBARCHIVE.creationtime", b"1600000000.25"),
    ]);
    t.file("vendor", b"vendor records kept", Meta::mode(0o644));
    t.file("twice", b"first", Meta::mode(0o644));
    t.file("twice", b"second, longer", Meta::mode(0o600));
    t.file("fleeting", b"added then deleted", Meta::mode(0o644));
    t.whiteout("fleeting");
    let mut layer = t.finish();
    layer.extend_from_slice(&[0u8; 2048]);
    layer.extend_from_slice(b"trailing bytes are part of the diffID");
    s.create("top", Some("base"));
    s.apply_diff("top", Some("base"), &zstd(&layer));
    assert_eq!(s.diff("top", None), layer, "top layer re-export");
    assert_eq!(s.diff("top", Some("base")), layer, "explicit own parent");
    let status = s.ok(["status"]);
    assert!(!status.is_empty());
}

/// A layer served writable may have changed: `diff` then compares trees instead.
fn writable_get_ends_exact_reexport(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let (base, _) = sample_tar(12);
    s.create("base", None);
    s.apply_diff("base", None, &base);
    let mut t = TarBuilder::new();
    t.file("added", b"through apply", Meta::mode(0o644));
    let layer = t.finish();
    s.create("top", Some("base"));
    s.apply_diff("top", None, &layer);
    let mnt = s.get("top");
    write_file(&mnt, "written-through-get", b"new", 0o644);
    s.put("top");
    let names: Vec<String> = list_tar(&s.diff("top", None))
        .into_iter()
        .map(|e| norm(&e.path))
        .collect();
    assert!(
        names.contains(&"added".to_string()) && names.contains(&"written-through-get".to_string()),
        "{names:?}"
    );
}

/// `--digest` is checked over the whole uncompressed stream before the layer is committed; a
/// mismatch leaves the layer exactly as before.
fn digest_is_verified_before_commit(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let (tar, _) = sample_tar(13);
    let hex: String = {
        use sha2::{Digest, Sha256};
        Sha256::digest(&tar)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    s.create("good", None);
    s.ok_stdin(
        ["apply-diff", "good", "--digest", &format!("sha256:{hex}")],
        &gzip(&tar),
    );
    s.create("bad", None);
    let before = s.snapshot("bad");
    let wrong = format!("sha256:{}", "1".repeat(64));
    let err = s.fail_stdin(["apply-diff", "bad", "--digest", &wrong], &gzip(&tar));
    assert_mentions(&err, "digest", "digest mismatch error");
    assert_mentions(&err, &hex, "digest mismatch error");
    assert_trees_eq(&before, &s.snapshot("bad"), "layer after a digest mismatch");
}
