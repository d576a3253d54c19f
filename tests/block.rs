//! The `block` backend through the CLI: the graphtest suite, size limits, VHD-footed images,
//! resizing, and that no loop device or mount outlives its use.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::graph::*;
use common::tars::{list_tar, norm, Meta, TarBuilder};
use common::tree::{read_dir_names, read_file, write_file};
use common::{mounts_under, sorted_changes, ChangeKind, Store};

/// Loop devices whose backing file lies under `dir`, from sysfs.
fn loops_under(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for e in fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(b) = fs::read_to_string(e.path().join("loop/backing_file")) {
            let b = b.trim_end().trim_end_matches(" (deleted)").to_string();
            if Path::new(&b).starts_with(dir) {
                out.push((name, PathBuf::from(b)));
            }
        }
    }
    out
}

/// Asserts that nothing of the store is attached or mounted (without running `cleanup`: what
/// `put` released must already be gone).
fn assert_released(s: &Store) {
    let loops = loops_under(s.scratch());
    assert!(loops.is_empty(), "loop devices left attached: {loops:?}");
    let mounts = mounts_under(s.scratch());
    assert!(
        mounts.is_empty(),
        "mounts left: {:?}",
        mounts.iter().map(|m| &m.mount_point).collect::<Vec<_>>()
    );
}

fn block() -> Option<Store> {
    Store::new("block")
}

#[test]
fn create_empty() {
    let Some(s) = block() else { return };
    s.create("empty", None);
    s.with_layer("empty", |root| {
        assert_eq!(read_dir_names(root), Vec::<String>::new());
        let md = fs::metadata(root).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o755);
        assert_eq!((md.uid(), md.gid()), (0, 0));
    });
    assert_released(&s);
    s.remove("empty");
    assert!(!s.exists("empty"));
}

#[test]
fn create_base_and_snap() {
    let Some(s) = block() else { return };
    common::graph::create_base(&s, "Base");
    verify_base(&s, "Base");
    s.create("Snap", Some("Base"));
    verify_base(&s, "Snap");
    verify_base(&s, "Base");
    assert_released(&s);
    s.remove("Snap");
    s.remove("Base");
    assert!(s.ids().is_empty());
}

/// DeepLayerRead(128): 128 image layers written through `get`, read from the top.
#[test]
fn deep_layer_read_128() {
    let Some(s) = block() else { return };
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
    assert_released(&s);
}

/// DiffApply(10) and Changes(21), as in graphtest.
#[test]
fn diff_apply_and_changes() {
    let Some(s) = block() else { return };
    let (base, upper, diff) = (layer_id(11), layer_id(12), layer_id(13));
    s.create(&base, None);
    add_many_files(&s, &base, 10, 3);
    add_file(&s, &base, "file-remove.txt", b"gone soon");
    s.create(&upper, Some(&base));
    add_many_files(&s, &upper, 10, 6);
    remove_all(&s, &upper, &["file-remove.txt"]);
    let size = s.diff_size(&upper, None);
    assert_eq!(size, 640, "diff-size of 10 rewritten 64-byte files");
    let tar = s.diff(&upper, Some(&base));
    let names: Vec<String> = list_tar(&tar).iter().map(|e| norm(&e.path)).collect();
    assert!(
        names.iter().any(|n| n == ".wh.file-remove.txt"),
        "{names:?}"
    );
    s.create(&diff, Some(&base));
    assert_eq!(s.apply_diff(&diff, Some(&base), &tar), size);
    check_many_files(&s, &diff, 10, 6);
    check_file_removed(&s, &diff, "file-remove.txt");
    check_many_files(&s, &base, 10, 3);

    let (b2, u2) = (layer_id(21), layer_id(22));
    s.create(&b2, None);
    add_many_files(&s, &b2, 20, 3);
    s.create(&u2, Some(&b2));
    let expected = sorted_changes(change_many_files(&s, &u2, 20, 6));
    assert_eq!(sorted_changes(s.changes(&u2, None)), expected);
    assert_eq!(sorted_changes(s.changes(&u2, Some(&b2))), expected);
    let all = s.changes(&b2, None);
    assert_eq!(all.len(), 21);
    assert!(all.iter().all(|c| c.1 == ChangeKind::Add));
    assert_released(&s);
}

fn two_layer_tars() -> (Vec<u8>, Vec<u8>) {
    let mut t = TarBuilder::new();
    t.dir("etc", Meta::mode(0o755))
        .file("etc/hello", b"hello\n", Meta::mode(0o644))
        .file("etc/keep", b"keep\n", Meta::mode(0o600).owner(7, 8))
        .dir("var", Meta::mode(0o755))
        .file("var/log", b"log", Meta::mode(0o644))
        .symlink("link", "etc/hello");
    let mut u = TarBuilder::new();
    u.whiteout("etc/hello")
        .file("etc/new", b"new", Meta::mode(0o644))
        .opaque("var")
        .file("var/other", b"other", Meta::mode(0o644));
    (t.finish(), u.finish())
}

/// Applied layers are ext4 images: the exact tar comes back, changes and sizes are read from
/// the images, whiteouts and opaque directories work through the stack.
#[test]
fn apply_images_diff_exact() {
    let Some(s) = block() else { return };
    let (t1, t2) = two_layer_tars();
    s.create("l1", None);
    s.apply_diff("l1", None, &t1);
    s.create("l2", Some("l1"));
    let size = s.apply_diff("l2", None, &t2);
    assert_eq!(size, 8);
    for l in ["l1", "l2"] {
        let img = s.layers_dir().join(l).join("layer.img");
        assert!(img.is_file(), "{} missing", img.display());
        let out = Command::new("e2fsck")
            .arg("-fn")
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "e2fsck -fn {}: {out:?}",
            img.display()
        );
    }
    assert_eq!(s.diff("l1", None), t1, "exact re-export of l1");
    assert_eq!(s.diff("l2", None), t2, "exact re-export of l2");
    let changes = sorted_changes(s.changes("l2", None));
    let want = sorted_changes(vec![
        ("/etc".into(), ChangeKind::Modify),
        ("/etc/hello".into(), ChangeKind::Delete),
        ("/etc/new".into(), ChangeKind::Add),
        ("/var".into(), ChangeKind::Modify),
        ("/var/log".into(), ChangeKind::Delete),
        ("/var/other".into(), ChangeKind::Add),
    ]);
    assert_eq!(changes, want);
    assert_eq!(s.diff_size("l2", None), 8);
    s.create("top", Some("l2"));
    s.with_layer("top", |root| {
        assert_eq!(read_dir_names(&root.join("etc")), ["keep", "new"]);
        assert_eq!(read_dir_names(&root.join("var")), ["other"]);
        let md = fs::symlink_metadata(root.join("etc/keep")).unwrap();
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (7, 8, 0o600));
        assert_eq!(
            fs::read_link(root.join("link")).unwrap(),
            Path::new("etc/hello")
        );
    });
    assert_released(&s);
}

fn write_zeros(path: &Path, mib: usize) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let buf = vec![0x5au8; 1 << 20];
    for _ in 0..mib {
        f.write_all(&buf)?;
    }
    f.sync_all()
}

/// SetQuota: a 50M sandbox takes 25 MiB, refuses 50 MiB more with ENOSPC, and the host
/// filesystem does not pay for it.
#[test]
fn set_quota_50m() {
    let Some(s) = block() else { return };
    s.ok(["create", "quota", "--rw", "-s", "size=50M"]);
    let img = s.layers_dir().join("quota/sandbox.img");
    assert_eq!(fs::metadata(&img).unwrap().len(), 50 << 20);
    s.with_layer("quota", |root| {
        write_zeros(&root.join("a"), 25).expect("25 MiB fit in a 50M sandbox");
        let err = write_zeros(&root.join("b"), 50).expect_err("75 MiB cannot fit in 50M");
        assert!(
            matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)),
            "{err}"
        );
    });
    // The image never grows past its size, and holds only what was written.
    let md = fs::metadata(&img).unwrap();
    assert_eq!(md.len(), 50 << 20);
    assert!(
        md.blocks() * 512 <= 51 << 20,
        "allocated {}",
        md.blocks() * 512
    );
    assert_released(&s);
    // Other backends refuse size instead of ignoring it.
    let other = Store::new("vfs").unwrap();
    other.create("x", None);
    let err = other.fail(["create", "y", "--rw", "-s", "size=50M"]);
    common::assert_mentions(&err, "block", "size on vfs");
}

/// `-o vhd=true`: the image carries a fixed-VHD footer `qemu-img` reads with the right
/// virtual size, e2fsck finds it clean, and it still mounts.
#[test]
fn vhd_footer() {
    let Some(s) = block() else { return };
    let (t1, _) = two_layer_tars();
    s.ok(["-o", "vhd=true", "create", "v"]);
    s.ok_stdin(["-o", "vhd=true", "apply-diff", "v"], &t1);
    let img = s.layers_dir().join("v/layer.img");
    let len = fs::metadata(&img).unwrap().len();
    assert_eq!(len % 4096, 512, "a footer follows the filesystem");
    let out = Command::new("qemu-img")
        .args(["info", "-f", "vpc", "--output", "json"])
        .arg(&img)
        .output()
        .expect("qemu-img (scripts/setup installs qemu-utils)");
    assert!(out.status.success(), "qemu-img info: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["virtual-size"].as_u64(), Some(len - 512), "{v}");
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&img)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "e2fsck -fn: {fsck:?}");
    s.create("child", Some("v"));
    s.with_layer("child", |root| {
        assert_eq!(read_file(root, "etc/hello"), b"hello\n");
    });
    assert_eq!(s.diff("v", None), t1);
    assert_released(&s);
    let vfs = Store::new("vfs").unwrap();
    let err = vfs.fail(["-o", "vhd=true", "ls"]);
    common::assert_mentions(&err, "vhd", "vhd on vfs");
}

fn fs_total(path: &Path) -> u64 {
    let st = rustix::fs::statvfs(path).unwrap();
    st.f_blocks * st.f_frsize
}

/// `resize` grows an idle sandbox (the filesystem inside shows it) and refuses to shrink,
/// to resize a mounted layer, or on another backend.
#[test]
fn resize_grows_only() {
    let Some(s) = block() else { return };
    s.ok(["create", "r", "--rw", "-s", "size=64M"]);
    let before = s.with_layer("r", |root| {
        write_file(root, "data", b"survives", 0o644);
        fs_total(root)
    });
    s.get("r");
    let err = s.fail(["resize", "r", "128M"]);
    common::assert_mentions(&err, "mounted", "resize while mounted");
    s.put("r");
    s.ok(["resize", "r", "128M"]);
    let after = s.with_layer("r", |root| {
        assert_eq!(read_file(root, "data"), b"survives");
        fs_total(root)
    });
    assert!(
        after > before + (50 << 20),
        "df before {before}, after {after}"
    );
    let err = s.fail(["resize", "r", "32M"]);
    common::assert_mentions(&err, "shrink", "shrinking");
    s.create("ro", None);
    s.ok_stdin(["apply-diff", "ro"], &two_layer_tars().0);
    let err = s.fail(["resize", "ro", "1G"]);
    common::assert_mentions(&err, "read-only image", "resizing an image layer");
    assert_released(&s);
    let vfs = Store::new("vfs").unwrap();
    vfs.create_rw("x", None);
    let err = vfs.fail(["resize", "x", "1G"]);
    common::assert_mentions(&err, "not supported by the vfs backend", "resize on vfs");
}

/// A loop device left attached to a store image (a crash) is detached when the store is
/// opened again; a sandbox of 20G stays sparse.
#[test]
fn stale_loop_devices_are_reconciled() {
    let Some(s) = block() else { return };
    s.create_rw("c", None);
    let img = s.layers_dir().join("c/sandbox.img");
    let md = fs::metadata(&img).unwrap();
    assert_eq!(md.len(), 20 << 30, "default sandbox size");
    assert!(
        md.blocks() * 512 < 16 << 20,
        "sandbox allocates {}",
        md.blocks() * 512
    );
    let out = Command::new("losetup")
        .args(["-f", "--show", "-r"])
        .arg(&img)
        .output()
        .expect("losetup");
    assert!(out.status.success(), "{out:?}");
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(loops_under(s.scratch()).len(), 1, "{dev} attached");
    // A command that writes: a clean store is opened read-only by `status` and the like.
    s.create_rw("d", None);
    let left = loops_under(s.scratch());
    if !left.is_empty() {
        let _ = Command::new("losetup").args(["-d", &dev]).status();
    }
    assert!(left.is_empty(), "still attached after open: {left:?}");
}

/// An applied image layer written through `get` becomes a sandbox holding the same tree,
/// root attributes included; changes and sizes of a layer served writable are read through
/// its mount.
#[test]
fn image_layer_written_through_get() {
    let Some(s) = block() else { return };
    let mut t = TarBuilder::new();
    t.dir(".", Meta::mode(0o750).owner(5, 6))
        .file("keep", b"kept", Meta::mode(0o644))
        .file("drop", b"dropped", Meta::mode(0o644));
    s.create("img", None);
    s.apply_diff("img", None, &t.finish());
    assert!(s.layers_dir().join("img/layer.img").is_file());
    let root = s.get("img");
    let md = fs::metadata(&root).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o750, 5, 6));
    assert_eq!(read_file(&root, "keep"), b"kept");
    fs::remove_file(root.join("drop")).unwrap();
    write_file(&root, "new", b"12345", 0o644);
    assert!(s.layers_dir().join("img/sandbox.img").is_file());
    assert!(!s.layers_dir().join("img/layer.img").exists());
    // Read while mounted writable: through the mount, not the image.
    assert_eq!(s.diff_size("img", None), 9);
    s.put("img");
    let changes = sorted_changes(s.changes("img", None));
    assert_eq!(
        changes.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["/keep", "/new"]
    );
    s.create("child", Some("img"));
    s.with_layer("child", |root| {
        assert_eq!(read_dir_names(root), ["keep", "new"]);
    });
    assert_released(&s);
}

/// A process killed after mounting a chain, or in the middle of an apply (parents' images
/// mounted for it), leaves mounts and loop devices that the next open of the store releases.
#[test]
fn crash_leftovers_are_released_on_open() {
    let Some(s) = block() else { return };
    let (t1, t2) = two_layer_tars();
    s.create("l1", None);
    s.apply_diff("l1", None, &t1);
    s.create("l2", Some("l1"));
    s.apply_diff("l2", None, &t2);
    s.create_rw("top", Some("l2"));
    let out = s.run_driver(
        Some("block"),
        &[("STRATA_FAILPOINT", "get-after-mount")],
        ["get", "top"],
    );
    assert_eq!(out.signal, Some(libc::SIGKILL), "{}", out.describe());
    assert!(
        !loops_under(s.scratch()).is_empty(),
        "the killed get left its chain attached"
    );
    s.ok(["status"]);
    assert_released(&s);

    s.create("l3", Some("l2"));
    let tar = s.scratch().join("t1.tar");
    fs::write(&tar, &t1).unwrap();
    let out = s.run_driver(
        Some("block"),
        &[("STRATA_FAILPOINT", "apply-after-pending")],
        [
            std::ffi::OsStr::new("apply-diff"),
            std::ffi::OsStr::new("l3"),
            tar.as_os_str(),
        ],
    );
    assert_eq!(out.signal, Some(libc::SIGKILL), "{}", out.describe());
    assert!(
        !loops_under(s.scratch()).is_empty(),
        "the killed apply left its lowers mounted"
    );
    s.ok(["status"]);
    assert_released(&s);
    // The store is whole: the interrupted apply was rolled back, the chain still serves.
    s.with_layer("top", |root| {
        assert_eq!(read_dir_names(&root.join("etc")), ["keep", "new"]);
    });
    assert_released(&s);
}
