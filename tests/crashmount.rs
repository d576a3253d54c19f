//! Processes that hold or change mounts die with SIGKILL; the next open of the store must
//! reconcile (see the crash story in `src/store/mod.rs`): reference counts match the kernel's
//! mount table, mounts a dead process left without a record are unmounted, mounts that records
//! still claim are adopted, and `get`/`put`/`remove`/`cleanup` work afterwards.
//!
//! The deaths are placed with failpoints (`STRATA_FAILPOINT=<step>` makes the process SIGKILL
//! itself at that step, see `src/failpoint.rs`) or by killing a `strata get` from outside at
//! random moments. Every scenario runs while another layer (`keeper`) is held mounted, which
//! the recovery must leave alone.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::graph::SplitMix64;
use common::tars::{Meta, TarBuilder};
use common::tree::{read_file, write_file};
use common::{mounts_under, Store};

fn tar(tag: &str) -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.dir("etc", Meta::mode(0o755));
    t.file("etc/tag", tag.as_bytes(), Meta::mode(0o644));
    t.file(&format!("{tag}.txt"), tag.as_bytes(), Meta::mode(0o644));
    t.finish()
}

/// A store with `base` (applied), `c` (a container layer on it holding `c.txt`) and `keeper`
/// (another container layer, held mounted, with `keeper.txt`). Returns the keeper's path.
fn setup() -> Option<(Store, PathBuf)> {
    let s = Store::new("overlay")?;
    s.create("base", None);
    s.apply_diff("base", None, &tar("base"));
    s.create_rw("c", Some("base"));
    s.with_layer("c", |root| write_file(root, "c.txt", b"c", 0o644));
    s.create_rw("keeper", Some("base"));
    let keeper = s.get("keeper");
    write_file(&keeper, "keeper.txt", b"keeper", 0o644);
    Some((s, keeper))
}

/// Runs `strata <args>` with `STRATA_FAILPOINT=step` and asserts it died of SIGKILL.
fn die_at(s: &Store, step: &str, args: &[&str], input: Option<&[u8]>) {
    let mut cmd = s.command(args);
    cmd.env("STRATA_FAILPOINT", step);
    let out = common::run_command(cmd, input);
    assert_eq!(
        out.signal,
        Some(libc::SIGKILL),
        "{step}: the process must kill itself there: {}",
        out.describe()
    );
}

/// `layers/<id>/merged`.
fn merged(s: &Store, id: &str) -> PathBuf {
    s.layers_dir().join(id).join("merged")
}

fn is_mounted(path: &Path) -> bool {
    common::mounts().iter().any(|m| m.mount_point == path)
}

/// Opens the store (through `ls`, which reconciles) and checks that reference counts and the
/// kernel's mount table agree: every layer with references and a parent is mounted once at
/// its `merged/`, every mount under the root belongs to a layer with references, and the
/// keeper is still held, mounted and readable.
fn assert_reconciled(s: &Store, keeper: &Path, what: &str) {
    let ls = s.ls();
    let mut points: Vec<PathBuf> = mounts_under(s.root())
        .into_iter()
        .map(|m| m.mount_point)
        .collect();
    points.sort();
    let n = points.len();
    points.dedup();
    assert_eq!(n, points.len(), "{what}: a mount point is mounted twice");
    for p in &points {
        let owner = ls
            .iter()
            .find(|e| &merged(s, &e.id) == p)
            .unwrap_or_else(|| panic!("{what}: {} belongs to no layer", p.display()));
        assert!(
            owner.is_mounted(),
            "{what}: {} is mounted but layer {} has no references",
            p.display(),
            owner.id
        );
    }
    for e in ls.iter().filter(|e| e.is_mounted() && e.parent.is_some()) {
        assert!(
            points.contains(&merged(s, &e.id)),
            "{what}: layer {} has references but is not mounted",
            e.id
        );
    }
    assert_eq!(
        s.ls_entry("keeper").mounted,
        "1",
        "{what}: the keeper's reference"
    );
    assert_eq!(
        read_file(keeper, "keeper.txt"),
        b"keeper",
        "{what}: the keeper"
    );
}

/// `c` is usable: get shows its content, put unmounts it, and it can be removed.
fn assert_c_usable_then_remove(s: &Store, expect: &[(&str, &[u8])], what: &str) {
    let root = s.get("c");
    for (rel, content) in expect {
        assert_eq!(read_file(&root, rel), *content, "{what}: c/{rel}");
    }
    s.put("c");
    assert!(!is_mounted(&merged(s, "c")), "{what}: put left c mounted");
    s.remove("c");
    assert!(!s.exists("c"));
}

/// The end of every scenario: the keeper is released, `cleanup` leaves no mounts and a
/// consistent layout.
fn finish(s: Store, keeper: &Path, what: &str) {
    assert_reconciled(&s, keeper, what);
    s.put("keeper");
    s.ok(["cleanup"]);
    assert!(
        mounts_under(s.root()).is_empty(),
        "{what}: mounts after cleanup: {:?}",
        mounts_under(s.root())
    );
    s.assert_clean_layout();
    assert!(s.ls().iter().all(|e| !e.is_mounted()));
}

#[test]
fn killed_after_mounting_in_get() {
    let Some((s, keeper)) = setup() else { return };
    die_at(&s, "get-after-mount", &["get", "c"], None);
    assert!(
        is_mounted(&merged(&s, "c")),
        "the dead get must have left its mount (else this test proves nothing)"
    );
    assert_reconciled(&s, &keeper, "after get-after-mount");
    assert!(!s.ls_entry("c").is_mounted(), "no reference was committed");
    assert!(
        !is_mounted(&merged(&s, "c")),
        "the unclaimed mount is cleaned"
    );
    assert_c_usable_then_remove(&s, &[("c.txt", b"c"), ("base.txt", b"base")], "get");
    finish(s, &keeper, "get-after-mount");
}

#[test]
fn killed_after_unmounting_in_put() {
    let Some((s, keeper)) = setup() else { return };
    s.get("c");
    die_at(&s, "put-after-unmount", &["put", "c"], None);
    assert!(!is_mounted(&merged(&s, "c")), "the dead put unmounted c");
    assert_reconciled(&s, &keeper, "after put-after-unmount");
    assert!(
        !s.ls_entry("c").is_mounted(),
        "a reference to a mount that is gone is reset"
    );
    assert_c_usable_then_remove(&s, &[("c.txt", b"c")], "put");
    finish(s, &keeper, "put-after-unmount");
}

#[test]
fn killed_after_renaming_in_create() {
    let Some((s, keeper)) = setup() else { return };
    die_at(
        &s,
        "create-after-rename",
        &["create", "d", "--parent", "c"],
        None,
    );
    assert!(
        s.layers_dir().join("d").is_dir(),
        "the dead create renamed d into place"
    );
    assert_reconciled(&s, &keeper, "after create-after-rename");
    assert!(!s.exists("d"), "an uncommitted layer does not exist");
    assert!(!s.layers_dir().join("d").exists(), "its directory is swept");
    s.create("d", Some("c"));
    s.with_layer("d", |root| assert_eq!(read_file(root, "c.txt"), b"c"));
    s.remove("d");
    assert_c_usable_then_remove(&s, &[("c.txt", b"c")], "create");
    finish(s, &keeper, "create-after-rename");
}

#[test]
fn killed_around_the_exchange_in_apply() {
    let Some((s, keeper)) = setup() else { return };
    // Before the exchange: rolled back, c is as it was.
    die_at(
        &s,
        "apply-after-pending",
        &["apply-diff", "c"],
        Some(&tar("one")),
    );
    assert_reconciled(&s, &keeper, "after apply-after-pending");
    s.with_layer("c", |root| {
        assert!(!root.join("one.txt").exists(), "rolled back");
        assert_eq!(read_file(root, "c.txt"), b"c");
    });
    // After the exchange: rolled forward, c has the new content and its size.
    let t = tar("two");
    die_at(&s, "apply-after-exchange", &["apply-diff", "c"], Some(&t));
    assert_reconciled(&s, &keeper, "after apply-after-exchange");
    assert_eq!(s.ls_entry("c").size, "6", "the applied size is committed");
    assert_c_usable_then_remove(
        &s,
        &[("two.txt", b"two"), ("etc/tag", b"two"), ("c.txt", b"c")],
        "apply",
    );
    finish(s, &keeper, "apply-after-exchange");
}

#[test]
fn killed_after_renaming_in_remove() {
    let Some((s, keeper)) = setup() else { return };
    die_at(&s, "remove-after-rename", &["remove", "c"], None);
    assert!(
        s.layers_dir().join("c-removing").is_dir(),
        "the dead remove renamed c"
    );
    assert_reconciled(&s, &keeper, "after remove-after-rename");
    assert!(!s.exists("c"), "the removal is finished");
    assert!(!s.layers_dir().join("c-removing").exists(), "and swept");
    s.create_rw("c", Some("base"));
    s.with_layer("c", |root| assert!(!root.join("c.txt").exists()));
    finish(s, &keeper, "remove-after-rename");
}

/// A `get` killed from outside at random moments: afterwards `c` is either held and mounted
/// or neither, never half of it; a held reference outlives its process (it is adopted) and
/// is released by `put`.
#[test]
fn get_killed_from_outside() {
    let Some((s, keeper)) = setup() else { return };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    let mut rng = SplitMix64::new(seed);
    // Kill points spread over the life of a get: from a third of its run time to past its end.
    let started = std::time::Instant::now();
    s.get("c");
    let took = started.elapsed().as_micros() as u64;
    s.put("c");
    let (mut held, mut not_held) = (0, 0);
    for round in 0..12 {
        let mut child = s
            .command(["get", "c"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start strata get");
        std::thread::sleep(Duration::from_micros(rng.range(took / 3, took * 6 / 5 + 1)));
        let _ = child.kill();
        let status = child.wait().expect("wait for strata get");
        let what = format!("round {round} ({status:?})");
        assert_reconciled(&s, &keeper, &what);
        let e = s.ls_entry("c");
        if e.is_mounted() {
            assert_eq!(e.mounted, "1", "{what}: one get, one reference");
            assert!(is_mounted(&merged(&s, "c")), "{what}: adopted mount");
            assert_eq!(read_file(&merged(&s, "c"), "c.txt"), b"c");
            s.put("c");
            held += 1;
        } else {
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "{what}: a get that was not killed holds a reference"
            );
            not_held += 1;
        }
        assert!(!is_mounted(&merged(&s, "c")), "{what}: after put");
    }
    eprintln!("a get takes {took} µs; {held} completed before the kill, {not_held} did not");
    // A reference taken by a process that has exited is adopted by the next one.
    let path = s.get("c");
    assert_reconciled(&s, &keeper, "after a completed get");
    assert_eq!(s.ls_entry("c").mounted, "1");
    assert!(is_mounted(&path));
    s.put("c");
    assert!(!is_mounted(&path));
    assert_c_usable_then_remove(&s, &[("c.txt", b"c")], "after external kills");
    finish(s, &keeper, "external kills");
}
