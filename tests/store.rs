//! Opening a store safely, through the CLI: read-only commands neither write nor sync
//! (checked with strace), driver options are remembered, foreign directories are refused
//! untouched, directories without a record are quarantined instead of deleted, and
//! `strata check` reports all of it without changing anything. Damaged databases:
//! `store_damage.rs`.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::tars::{Meta, TarBuilder};
use common::tree::{self, read_file, write_file};
use common::{assert_mentions, run_command, Out, Store, STRATA};
use serde_json::Value;

/// Syscalls that change a filesystem or force data to disk. `openat` is traced too and
/// kept only when it opens for writing or creates.
const WRITE_SYSCALLS: &str = "trace=fsync,fdatasync,syncfs,sync,sync_file_range,\
mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,rmdir,truncate,ftruncate,\
fallocate,pwrite64,pwritev,pwritev2,chmod,fchmod,fchmodat,link,linkat,symlink,symlinkat,\
setxattr,lsetxattr,fsetxattr,mknodat,open,openat,creat";

/// Runs `strata --root ROOT <args>` under `strace -f` and returns what it did and every
/// traced call that writes or syncs.
fn traced(s: &Store, args: &[&str]) -> (Out, Vec<String>) {
    let trace = s.scratch().join("strace.out");
    let _ = fs::remove_file(&trace);
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o"])
        .arg(&trace)
        .args(["-e", WRITE_SYSCALLS, STRATA, "--root"])
        .arg(s.root())
        .args(args);
    let out = run_command(cmd, None);
    let text = fs::read_to_string(&trace).unwrap_or_else(|e| {
        panic!(
            "strace wrote no trace ({e}); strace is needed (scripts/setup installs it): {}",
            out.describe()
        )
    });
    let writes = text
        .lines()
        .filter(|l| {
            let is_open = l.contains("open(") || l.contains("openat(");
            !is_open
                || ["O_CREAT", "O_WRONLY", "O_RDWR", "O_TRUNC"]
                    .iter()
                    .any(|f| l.contains(f))
        })
        .map(str::to_string)
        .collect();
    (out, writes)
}

/// A store of `backend` holding `base` (with a file) and `child` on it.
fn populated(backend: &str) -> Option<Store> {
    let s = Store::new(backend)?;
    s.create("base", None);
    s.with_layer("base", |root| {
        write_file(root, "hello.txt", b"hello", 0o644)
    });
    s.create("child", Some("base"));
    Some(s)
}

/// Path, type, mode, size and modification time of everything under `root` (contents are not
/// read: a block store holds sparse images of many GiB).
fn listing(root: &Path) -> Vec<(PathBuf, u32, u64, i64, i64)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), md.mode(), md.size(), md.mtime(), md.mtime_nsec()));
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

fn read_only_commands_do_not_write(backend: &str) {
    let Some(s) = populated(backend) else { return };
    let before = listing(s.root());
    for args in [
        vec!["exists", "base"],
        vec!["exists", "nope"],
        vec!["ls"],
        vec!["--json", "ls"],
        vec!["status"],
        vec!["metadata", "child"],
        vec!["check"],
        vec!["--json", "check"],
    ] {
        let (out, writes) = traced(&s, &args);
        out.expect_code(0);
        assert!(
            writes.is_empty(),
            "{backend}: `strata {args:?}` wrote or synced:\n{}",
            writes.join("\n")
        );
    }
    assert_eq!(listing(s.root()), before, "{backend}: the store changed");
}

#[test]
fn read_only_commands_do_not_write_vfs() {
    read_only_commands_do_not_write("vfs");
}

#[test]
fn read_only_commands_do_not_write_overlay() {
    read_only_commands_do_not_write("overlay");
}

#[test]
fn read_only_commands_do_not_write_block() {
    read_only_commands_do_not_write("block");
}

/// Runs `strata --root ROOT [-o opt]... <args>` without `--driver`.
fn run_opts(s: &Store, opts: &[&str], args: &[&str]) -> Out {
    let mut cmd = Store::bare_command();
    cmd.arg("--root").arg(s.root());
    for o in opts {
        cmd.args(["-o", o]);
    }
    cmd.args(args);
    run_command(cmd, None)
}

#[test]
fn overlay_store_remembers_native_diff_and_refuses_vhd() {
    let Some(s) = Store::new("overlay") else {
        return;
    };
    // An option the overlay driver does not know is refused before anything is created.
    let err = s
        .run_driver(Some("overlay"), &[], ["-o", "vhd=true", "ls"])
        .expect_failure();
    assert_mentions(&err, "\"vhd\"", "vhd on overlay");
    assert_mentions(&err, "known: size, native_diff)", "overlay's option list");
    assert!(
        !s.root().exists(),
        "a refused creation left {}",
        s.root().display()
    );

    s.run_driver(
        Some("overlay"),
        &[],
        ["-o", "native_diff=false", "create", "a"],
    )
    .expect_code(0);
    // Later calls omit it and still get it.
    let status = run_opts(&s, &[], &["status"]);
    status.expect_code(0);
    assert!(
        status.stdout_str().contains("Native Overlay Diff: false"),
        "native_diff=false was not remembered: {}",
        status.describe()
    );
    s.run_driver(Some("overlay"), &[], ["create", "b", "--parent", "a"])
        .expect_code(0);
    // The same value again is fine; another value is refused naming both.
    run_opts(&s, &["NATIVE_DIFF=no"], &["ls"]).expect_code(0);
    let err = run_opts(&s, &["native_diff=true"], &["ls"]).expect_failure();
    for word in ["native_diff", "=false", "=true"] {
        assert_mentions(&err, word, "conflicting native_diff");
    }
    let err = run_opts(&s, &["vhd=true"], &["ls"]).expect_failure();
    assert_mentions(&err, "\"vhd\"", "vhd on an overlay store");
}

#[test]
fn vfs_store_refuses_options_of_other_drivers() {
    let Some(s) = Store::new("vfs") else { return };
    for opt in ["vhd=true", "native_diff=false"] {
        let err = s
            .run_driver(Some("vfs"), &[], ["-o", opt, "create", "a"])
            .expect_failure();
        assert_mentions(&err, opt.split('=').next().unwrap(), opt);
        assert_mentions(&err, "known: size)", "vfs's option list");
        assert!(
            !s.root().exists(),
            "{opt}: a refused creation left the root"
        );
    }
    s.create("a", None);
    let err = run_opts(&s, &["native_diff=false"], &["ls"]).expect_failure();
    assert_mentions(&err, "native_diff", "native_diff on a vfs store");
}

#[test]
fn block_store_remembers_vhd() {
    let Some(s) = Store::new("block") else { return };
    s.ok(["-o", "vhd=true", "create", "v"]);
    let mut t = TarBuilder::new();
    t.file("hello", b"hello\n", Meta::mode(0o644));
    // No -o this time: the store remembers vhd=true.
    let out = common::run_command(
        {
            let mut c = s.command(["apply-diff", "v"]);
            c.stdin(std::process::Stdio::piped());
            c
        },
        Some(&t.finish()),
    );
    out.expect_code(0);
    let len = fs::metadata(s.layers_dir().join("v/layer.img"))
        .unwrap()
        .len();
    assert_eq!(
        len % 4096,
        512,
        "vhd=true was not remembered: no VHD footer"
    );
    let err = s.fail(["-o", "vhd=false", "ls"]);
    for word in ["vhd", "=true", "=false"] {
        assert_mentions(&err, word, "conflicting vhd");
    }
    let err = s.fail(["-o", "size=1G", "ls"]);
    assert_mentions(&err, "size", "size given after creation");
    assert_mentions(&err, "without size", "size given after creation");
    let err = s.fail(["-o", "native_diff=true", "ls"]);
    assert_mentions(&err, "known: size, vhd)", "block's option list");
}

/// Mode, owner, content and mtime of everything under `root`, and `root`'s own mode.
fn whole(root: &Path) -> (tree::Tree, u32) {
    (tree::snapshot(root), fs::metadata(root).unwrap().mode())
}

/// Every command, read-only or not, must refuse `root` with exit 1 and leave it as it was.
fn assert_refused_untouched(root: &Path, must_mention: &[&str], what: &str) {
    let before = whole(root);
    for args in [
        vec!["ls"],
        vec!["exists", "x"],
        vec!["status"],
        vec!["create", "new"],
        vec!["cleanup"],
        vec!["check"],
    ] {
        let mut cmd = Store::bare_command();
        cmd.arg("--root").arg(root).args(&args);
        let out = run_command(cmd, None);
        out.expect_failure();
        // check prints its findings on stdout.
        let err = format!("{}{}", out.stdout_str(), out.stderr);
        for word in must_mention {
            assert_mentions(&err, word, &format!("{what}: {args:?}"));
        }
        assert_eq!(
            whole(root),
            before,
            "{what}: `strata {args:?}` changed the directory"
        );
    }
}

#[test]
fn foreign_directories_are_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let with_file = tmp.path().join("with-file");
    fs::create_dir(&with_file).unwrap();
    fs::set_permissions(&with_file, fs::Permissions::from_mode(0o755)).unwrap();
    write_file(&with_file, "notes.txt", b"my notes", 0o644);
    assert_refused_untouched(
        &with_file,
        &["notes.txt", "marker"],
        "a directory with a file",
    );

    let lookalike = tmp.path().join("lookalike");
    fs::create_dir(&lookalike).unwrap();
    fs::set_permissions(&lookalike, fs::Permissions::from_mode(0o751)).unwrap();
    write_file(&lookalike, "layers/x/data", b"x", 0o600);
    write_file(&lookalike, "staging/y/data", b"y", 0o600);
    write_file(&lookalike, "mounts/z", b"z", 0o600);
    assert_refused_untouched(
        &lookalike,
        &["layers", "marker"],
        "layers/staging/mounts, no meta",
    );
}

#[test]
fn unknown_layer_directories_are_quarantined_not_deleted() {
    let Some(s) = populated("vfs") else { return };
    write_file(&s.layers_dir(), "ghost/fs/precious", b"only copy", 0o600);
    // check names it and leaves it alone.
    let out = s.run(["check"]);
    out.expect_code(1);
    assert_mentions(
        &out.stdout_str(),
        "unknown-layer-dir: layers/ghost",
        "check",
    );
    assert!(s.layers_dir().join("ghost").exists());
    // The next open that recovers (a reader's too) moves it aside, content intact.
    s.ok(["ls"]);
    assert!(!s.layers_dir().join("ghost").exists());
    let q: Vec<PathBuf> = fs::read_dir(s.root().join("quarantine"))
        .expect("a quarantine directory")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(q[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("ghost-"));
    assert_eq!(read_file(&q[0], "fs/precious"), b"only copy");
    let out = s.run(["--json", "check"]);
    out.expect_code(1);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["quarantined"], "{v}");
}

#[test]
fn check_reports_leftovers_without_changing_anything() {
    let Some(s) = populated("vfs") else { return };
    let out = s.run(["check"]);
    out.expect_code(0);
    assert_mentions(&out.stdout_str(), "marker: present", "clean check");
    let v: Value = serde_json::from_slice(&s.run(["--json", "check"]).stdout).unwrap();
    assert_eq!(v["findings"], Value::Array(vec![]), "{v}");
    assert_eq!(
        (v["layers"].as_u64(), v["database_ok"].as_bool()),
        (Some(2), Some(true))
    );

    write_file(&s.staging_dir(), "dead-1/x", b"x", 0o600);
    write_file(&s.layers_dir(), "old-removing/x", b"x", 0o600);
    fs::remove_dir_all(s.layers_dir().join("child")).unwrap();
    let before = tree::snapshot(s.root());
    let (out, writes) = traced(&s, &["--json", "check"]);
    out.expect_failure();
    assert!(writes.is_empty(), "check wrote:\n{}", writes.join("\n"));
    assert_eq!(tree::snapshot(s.root()), before, "check changed the store");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut kinds: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["missing-layer-dir", "removing-leftover", "staging-leftover"],
        "{v}"
    );
}

#[test]
fn store_of_an_earlier_version_is_adopted() {
    let Some(s) = populated("vfs") else { return };
    let marker = s.root().join("strata-store");
    fs::remove_file(&marker).expect("a new store carries the marker");
    // Readers use it as it is, writers write the marker.
    assert_eq!(s.ok(["exists", "base"]), "true");
    assert!(!marker.exists(), "a read-only command wrote the marker");
    s.create("new", Some("child"));
    assert!(marker.is_file(), "the marker was not written");
    assert_eq!(
        s.with_layer("base", |r| read_file(r, "hello.txt")),
        b"hello"
    );
}

/// A writer killed in the middle of an apply: `check` reports it without repairing anything
/// (not even the database redb left open), and the next reader repairs the store first.
#[test]
fn check_leaves_a_crash_alone_and_the_next_reader_repairs_it() {
    let Some(s) = populated("vfs") else { return };
    s.create("leaf", None);
    let mut t = TarBuilder::new();
    t.file("new.txt", b"new", Meta::mode(0o644));
    let tar = s.scratch().join("layer.tar");
    fs::write(&tar, t.finish()).unwrap();
    let out = s.run_driver(
        Some("vfs"),
        &[("STRATA_FAILPOINT", "apply-after-pending")],
        [
            std::ffi::OsStr::new("apply-diff"),
            std::ffi::OsStr::new("leaf"),
            tar.as_os_str(),
        ],
    );
    assert_eq!(out.signal, Some(libc::SIGKILL), "{}", out.describe());
    let before = tree::snapshot(s.root());
    let (out, writes) = traced(&s, &["check"]);
    out.expect_failure();
    assert!(writes.is_empty(), "check wrote:\n{}", writes.join("\n"));
    assert_eq!(tree::snapshot(s.root()), before, "check changed the store");
    assert!(
        !out.stdout_str().contains("findings: 0"),
        "{}",
        out.describe()
    );
    // A reader repairs first, then answers from the repaired store.
    assert_eq!(s.ok(["exists", "leaf"]), "true");
    let out = s.run(["--json", "check"]);
    out.expect_code(0);
    assert!(
        s.staging_names().is_empty(),
        "the dead apply's staging was swept"
    );
    s.with_layer("leaf", |root| {
        assert!(!root.join("new.txt").exists(), "rolled back")
    });
}

/// A driver option the backend cannot honour is refused before the store exists, so the
/// store does not remember it and later calls without it work.
#[test]
fn refused_driver_option_leaves_no_store_behind() {
    for backend in ["vfs", "overlay"] {
        let Some(s) = Store::new(backend) else {
            continue;
        };
        let err = s.fail(["-o", "size=10M", "create", "a", "--rw"]);
        assert_mentions(&err, "size", "driver size= without quotas");
        assert!(
            !s.root().exists(),
            "{backend}: a refused creation left the root"
        );
        s.create_rw("a", None);
        let status = s.ok(["status"]);
        assert!(!status.contains("Default Size"), "{backend}: {status}");
    }
}

/// `check` after ordinary use: exit 0, nothing found, in text and JSON.
#[test]
fn check_is_clean_after_normal_use() {
    for backend in ["vfs", "overlay", "block"] {
        let Some(s) = populated(backend) else {
            continue;
        };
        s.get("child");
        s.put("child");
        s.remove("child");
        let text = s.ok(["check"]);
        assert!(text.contains("marker: present"), "{backend}: {text}");
        let v: Value = serde_json::from_str(&s.ok(["--json", "check"])).unwrap();
        assert_eq!(v["findings"], Value::Array(vec![]), "{backend}: {v}");
        assert_eq!(v["layers"].as_u64(), Some(1), "{backend}: {v}");
    }
}
