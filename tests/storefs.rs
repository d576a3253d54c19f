//! The store's own files and mounts against a hostile machine: mount points strata did not make
//! (non-UTF-8, with spaces and newlines), trees deep enough to overflow a recursive delete,
//! SELinux labels that try to end the overlay option string, and symlinks planted inside the
//! store that point at a victim directory outside it.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use strata::graph::{Graph, GraphConfig};
use strata::{CreateOpts, Driver};

/// A mount made by a test, detached when dropped (also when the test panics).
struct TestMount(PathBuf);

impl TestMount {
    fn tmpfs(at: &Path) -> TestMount {
        fs::create_dir_all(at).expect("mount point");
        rustix::mount::mount(
            "tmpfs",
            at,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .expect("mount tmpfs");
        TestMount(at.to_path_buf())
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

fn open(root: &Path, driver: &str) -> strata::Result<Graph> {
    let mut c = GraphConfig::new(root);
    c.driver = Some(driver.into());
    Graph::open(c)
}

/// Every mount point at or under `dir`, from the kernel's table read as bytes.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let table = fs::read("/proc/self/mountinfo").expect("mountinfo");
    let mut out = Vec::new();
    for line in table.split(|c| *c == b'\n') {
        let Some(field) = line.split(|c| *c == b' ').nth(4) else {
            continue;
        };
        let p = PathBuf::from(OsStr::from_bytes(field));
        if p.starts_with(dir) {
            out.push(p);
        }
    }
    out
}

/// Unmounts everything strata left under `root` (deepest first), so a failing test leaves no
/// mount behind.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut left = mounts_under(&self.0);
        left.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in left {
            let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

// ---- item: the mount table is bytes -------------------------------------------------------

fn store_opens_beside_odd_mount_points(driver: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let _c = Cleanup(tmp.path().to_path_buf());
    let odd = tmp.path().join(OsStr::from_bytes(b"not-utf8-\xff\xfe"));
    let _m1 = TestMount::tmpfs(&odd);
    let spaced = tmp.path().join("a b\tc\nd\\e");
    let _m2 = TestMount::tmpfs(&spaced);
    let root = tmp.path().join("root");
    let g = open(&root, driver).expect("a store opens while non-UTF-8 mount points exist");
    g.create("base", None, &CreateOpts::default())
        .expect("create");
    g.create("top", Some("base"), &CreateOpts::default())
        .expect("create");
    let p = g.get("top", "").expect("get");
    fs::write(p.join("f"), b"x").expect("write");
    g.put("top").expect("put");
    drop(g);
    // Reopening reconciles mounts against the table, odd lines and all.
    let g = open(&root, driver).expect("reopen");
    g.remove("top").expect("remove");
    g.remove("base").expect("remove");
}

#[test]
fn vfs_store_opens_beside_odd_mount_points() {
    store_opens_beside_odd_mount_points("vfs");
}

#[test]
fn overlay_store_opens_beside_odd_mount_points() {
    store_opens_beside_odd_mount_points("overlay");
}
