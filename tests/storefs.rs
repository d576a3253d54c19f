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

/// What one `strata` invocation did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the `strata` binary on the store at `root` with a hang guard (killed after 300 s).
fn strata(root: &Path, driver: &str, args: &[&str]) -> Run {
    strata_env(root, driver, args, &[])
}

/// [`strata`] with extra environment variables.
fn strata_env(root: &Path, driver: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    use std::io::{Read, Seek};
    use std::process::{Command, Stdio};
    let mut out = tempfile::tempfile().expect("stdout file");
    let mut err = tempfile::tempfile().expect("stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(root)
        .arg("--driver")
        .arg(driver)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .spawn()
        .expect("start strata");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for strata") {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("strata {args:?} hung for 300 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let read = |f: &mut fs::File| {
        let mut s = String::new();
        f.rewind().expect("rewind");
        let mut b = Vec::new();
        f.read_to_end(&mut b).expect("read output");
        s.push_str(&String::from_utf8_lossy(&b));
        s
    };
    Run {
        code: status.code(),
        stdout: read(&mut out),
        stderr: read(&mut err),
    }
}

impl Run {
    fn ok(&self, what: &str) -> &Self {
        assert_eq!(self.code, Some(0), "{what} failed: {}", self.stderr);
        self
    }

    /// Exit 1 with a `strata:` message (never a signal); returns the message.
    fn refused(&self, what: &str) -> String {
        assert_eq!(
            self.code,
            Some(1),
            "{what} should be refused: {}",
            self.stderr
        );
        assert!(
            self.stderr.contains("strata: "),
            "{what}: no message: {}",
            self.stderr
        );
        self.stderr.clone()
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

// ---- item: deletes of any depth --------------------------------------------------------------

/// Builds `depth` nested directories under `dir`, fd-relative (no path could name the bottom).
fn deep_tree(dir: &Path, depth: usize) {
    use rustix::fs::{mkdirat, openat, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut cur = openat(rustix::fs::CWD, dir, flags, Mode::empty()).expect("open");
    for i in 0..depth {
        mkdirat(&cur, "d", Mode::from_raw_mode(0o755)).expect("mkdir");
        if i % 997 == 0 {
            let f = openat(
                &cur,
                "f",
                OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .expect("file");
            drop(f);
        }
        cur = openat(&cur, "d", flags, Mode::empty()).expect("open");
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Waits (up to 300 s) until `dir` is empty.
fn wait_empty(dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !entries(dir).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never emptied: {:?}",
            dir.display(),
            entries(dir)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A store in a tmpfs of its own (deep trees are about the walk, not the disk's speed).
struct DeepStore {
    _cleanup: Cleanup,
    _fs: TestMount,
    root: PathBuf,
    _tmp: tempfile::TempDir,
}

fn deep_store() -> DeepStore {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fs = TestMount::tmpfs(tmp.path());
    DeepStore {
        _cleanup: Cleanup(tmp.path().to_path_buf()),
        _fs: fs,
        root: tmp.path().join("root"),
        _tmp: tmp,
    }
}

/// A container layer `c` on `base` whose writable layer holds a `depth`-deep tree, made
/// through the CLI and the mounted path.
fn container_with_deep_tree(root: &Path, driver: &str, depth: usize) {
    strata(root, driver, &["create", "base"]).ok("create base");
    strata(root, driver, &["create", "--rw", "c", "--parent", "base"]).ok("create c");
    let got = strata(root, driver, &["get", "c"]);
    got.ok("get");
    deep_tree(Path::new(got.stdout.trim()), depth);
    strata(root, driver, &["put", "c"]).ok("put");
}

fn cli_remove_deep(driver: &str, depth: usize, background: bool) {
    let s = deep_store();
    container_with_deep_tree(&s.root, driver, depth);
    let args: &[&str] = if background {
        &["remove", "--background", "c"]
    } else {
        &["remove", "c"]
    };
    strata(&s.root, driver, args).ok("remove");
    wait_empty(&s.root.join("staging"));
    assert_eq!(entries(&s.root.join("layers")), vec!["base".to_string()]);
    strata(&s.root, driver, &["remove", "base"]).ok("remove base");
}

#[test]
fn vfs_cli_remove_10000_deep() {
    cli_remove_deep("vfs", 10_000, false);
}

#[test]
fn vfs_cli_remove_100000_deep() {
    cli_remove_deep("vfs", 100_000, false);
}

#[test]
fn overlay_cli_remove_100000_deep() {
    cli_remove_deep("overlay", 100_000, false);
}

#[test]
fn vfs_cli_background_remove_100000_deep() {
    cli_remove_deep("vfs", 100_000, true);
}

/// `background_remove` deletes on a thread with the default 2 MiB stack.
fn library_background_remove(driver: &str, depth: usize) {
    let s = deep_store();
    container_with_deep_tree(&s.root, driver, depth);
    let mut c = GraphConfig::new(&s.root);
    c.driver = Some(driver.into());
    c.background_remove = true;
    let g = Graph::open(c).expect("open");
    g.remove("c").expect("remove");
    g.wait_removals();
    assert_eq!(entries(&s.root.join("staging")), Vec::<String>::new());
    g.remove("base").expect("remove base");
}

#[test]
fn vfs_background_thread_remove_10000_deep() {
    library_background_remove("vfs", 10_000);
}

#[test]
fn overlay_background_thread_remove_100000_deep() {
    library_background_remove("overlay", 100_000);
}

/// A deletion that died half-way leaves its tree in staging/; opening the store sweeps it.
fn sweep_deep_leftover(driver: &str, depth: usize) {
    let s = deep_store();
    strata(&s.root, driver, &["create", "base"]).ok("create base");
    let leftover = s.root.join("staging").join("removed-x-1-2-3");
    fs::create_dir(&leftover).expect("leftover");
    deep_tree(&leftover, depth);
    strata(&s.root, driver, &["ls"]).ok("open with a deep leftover");
    assert_eq!(entries(&s.root.join("staging")), Vec::<String>::new());
    strata(&s.root, driver, &["ls"]).ok("open again");
}

#[test]
fn vfs_open_sweeps_a_10000_deep_leftover() {
    sweep_deep_leftover("vfs", 10_000);
}

#[test]
fn overlay_open_sweeps_a_100000_deep_leftover() {
    sweep_deep_leftover("overlay", 100_000);
}

// ---- item: mount labels --------------------------------------------------------------------

const HOSTILE_LABELS: [&str; 5] = [
    "system_u:object_r:container_file_t:s0\",lowerdir=/,upperdir=/tmp",
    "system_u:object_r:container_file_t:s0,upperdir=/tmp",
    "system_u:object_r:container_file_t:s0:c1,lowerdir=/",
    "system_u:object_r:container_file_t:s0\nx",
    "a:b",
];

fn hostile_labels_refused(driver: &str, api: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let _c = Cleanup(tmp.path().to_path_buf());
    let root = tmp.path().join("root");
    let env = [("STRATA_MOUNT_API", api)];
    strata_env(&root, driver, &["create", "base"], &env).ok("create");
    strata_env(
        &root,
        driver,
        &["create", "--rw", "c", "--parent", "base"],
        &env,
    )
    .ok("create");
    for label in HOSTILE_LABELS {
        let r = strata_env(&root, driver, &["get", "--mount-label", label, "c"], &env);
        let msg = r.refused("get with a hostile label");
        assert!(msg.contains("\"c\"") && msg.contains("SELinux"), "{msg}");
        assert_eq!(
            mounts_under(&root),
            Vec::<PathBuf>::new(),
            "nothing mounted"
        );
    }
    let good = "system_u:object_r:container_file_t:s0:c1,c2";
    let r = strata_env(&root, driver, &["get", "--mount-label", good, "c"], &env);
    r.ok("get with a well-formed label");
    strata_env(&root, driver, &["put", "c"], &env).ok("put");
}

#[test]
fn overlay_hostile_labels_refused_new_api() {
    hostile_labels_refused("overlay", "new");
}

#[test]
fn overlay_hostile_labels_refused_classic() {
    hostile_labels_refused("overlay", "classic");
}

#[test]
fn vfs_hostile_labels_refused() {
    hostile_labels_refused("vfs", "new");
}
