//! The confined apply helper: it applies what the in-process engine applies, and its mount
//! namespace really is read-only outside the directories it was given.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::tars::{gzip, Meta, TarBuilder};
use common::tree::assert_trees_eq;
use common::Store;

fn sample() -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.dir("etc", Meta::mode(0o755));
    t.file("etc/conf", b"setting=1\n", Meta::mode(0o640).owner(1, 2));
    t.symlink("etc/link", "conf");
    t.hardlink("etc/hard", "etc/conf", Meta::mode(0o640).owner(1, 2));
    t.file("bin/tool", b"\x7fELF", Meta::mode(0o4755));
    t.whiteout("gone");
    t.finish()
}

/// Runs `strata __apply-helper JOB` with `tar` on stdin; returns its JSON outcome.
fn helper(root: &Path, writable: &Path, tar: &[u8]) -> serde_json::Value {
    let job = serde_json::json!({
        "root": root, "overlay": false, "lowers": [], "limits": [1u64 << 30, 100000, 1 << 20],
        "record_into": null, "digest": null, "writable": [writable],
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["__apply-helper", &job.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start helper");
    let _ = child.stdin.take().expect("stdin").write_all(tar);
    let out = child.wait_with_output().expect("helper output");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("outcome {:?}: {e}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn helper_cannot_write_outside_its_writable_directory() {
    if !common::require_root("the helper chroots and drops capabilities") {
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let (inside, outside) = (t.path().join("inside"), t.path().join("outside"));
    std::fs::create_dir(&inside).expect("mkdir");
    std::fs::create_dir(&outside).expect("mkdir");
    let outcome = helper(&outside, &inside, &sample());
    let text = outcome.to_string();
    assert!(
        outcome.get("Entry").is_some() || outcome.get("Io").is_some(),
        "expected a refusal, got {text}"
    );
    assert!(
        text.contains("Read-only file system") || text.contains("os error 30"),
        "expected EROFS, got {text}"
    );
    assert_eq!(
        std::fs::read_dir(&outside).expect("read").count(),
        0,
        "nothing may be written outside"
    );
    let ok = helper(&inside, &inside, &sample());
    assert!(ok.get("Ok").is_some(), "{ok}");
    assert_eq!(
        std::fs::read(inside.join("etc/conf")).expect("applied"),
        b"setting=1\n"
    );
}

backend_tests!(confined_apply_matches_in_process);

fn confined_apply_matches_in_process(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let tar = gzip(&sample());
    s.create("plain", None);
    s.apply_diff("plain", None, &tar);
    s.create("confined", None);
    let size = s.ok_stdin(["--confined-apply", "apply-diff", "confined"], &tar);
    assert_eq!(size.trim(), "14");
    // Before any `get` (a writable get ends exact re-export).
    assert!(
        s.diff("confined", None) == sample(),
        "exact re-export after a confined apply"
    );
    assert_trees_eq(
        &s.snapshot("plain"),
        &s.snapshot("confined"),
        "confined vs in-process apply",
    );
    let err = s.fail_stdin(
        ["--confined-apply", "apply-diff", "plain"],
        b"not a tar, just bytes that go on and on and on",
    );
    assert!(err.contains("plain"), "{err}");
}
