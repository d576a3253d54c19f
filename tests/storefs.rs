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

// ---- item: no symlink inside the store is followed ------------------------------------------

/// Everything under `dir` (names, types, modes, contents, link targets), to show a victim was
/// neither written nor had anything created or deleted in it.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).expect("read victim") {
            let p = e.expect("entry").path();
            let md = fs::symlink_metadata(&p).expect("stat victim entry");
            let content = if md.is_file() {
                fs::read(&p).expect("read")
            } else if md.file_type().is_symlink() {
                fs::read_link(&p)
                    .expect("readlink")
                    .into_os_string()
                    .into_vec()
            } else {
                todo.push(p.clone());
                Vec::new()
            };
            out.push((p, md.permissions().mode(), content));
        }
    }
    out.sort();
    out
}

use std::os::unix::ffi::OsStringExt;

/// A directory outside the store that looks like a layer directory, with a secret in every
/// place a layer could be served from.
fn make_victim(at: &Path) -> PathBuf {
    let v = at.join("victim");
    for d in ["diff", "work", "merged", "fs", "empty"] {
        fs::create_dir_all(v.join(d)).expect("victim dir");
        fs::write(v.join(d).join("secret"), b"victim data").expect("victim file");
    }
    fs::write(v.join("secret"), b"victim data").expect("victim file");
    std::os::unix::fs::symlink("/nonexistent", v.join("dangling")).expect("victim link");
    v
}

/// Replaces `root/rel` (file, directory or nothing) by a symlink to `target`.
fn plant(root: &Path, rel: &str, target: &Path) {
    let p = root.join(rel);
    match fs::symlink_metadata(&p) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(&p).expect("remove dir"),
        Ok(_) => fs::remove_file(&p).expect("remove file"),
        Err(_) => {}
    }
    std::os::unix::fs::symlink(target, &p).expect("plant symlink");
}

/// A store with layers `base` and `c` (writable, on base) and a victim beside it.
struct Planted {
    tmp: tempfile::TempDir,
    root: PathBuf,
    victim: PathBuf,
    before: Vec<(PathBuf, u32, Vec<u8>)>,
    driver: &'static str,
    env: Vec<(&'static str, &'static str)>,
}

impl Planted {
    fn new(driver: &'static str, classic: bool) -> Planted {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let victim = make_victim(tmp.path());
        let before = snapshot(&victim);
        let env = if classic {
            vec![("STRATA_MOUNT_API", "classic")]
        } else {
            vec![]
        };
        let p = Planted {
            tmp,
            root,
            victim,
            before,
            driver,
            env,
        };
        p.run(&["create", "base"]).ok("create base");
        p.run(&["create", "--rw", "c", "--parent", "base"])
            .ok("create c");
        p
    }

    fn run(&self, args: &[&str]) -> Run {
        strata_env(&self.root, self.driver, args, &self.env)
    }

    /// The victim is unchanged and nothing is mounted on it or in the store.
    fn check_victim(&self) {
        assert!(
            mounts_under(&self.victim).is_empty(),
            "a mount on the victim"
        );
        assert_eq!(snapshot(&self.victim), self.before, "the victim changed");
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        drop(Cleanup(self.tmp.path().to_path_buf()));
    }
}

/// `get layer` with `rel` replaced by a link to the victim: refused, naming the layer;
/// the victim untouched; nothing mounted.
fn get_refused_with_link(driver: &'static str, classic: bool, layer: &str, rel: &str) {
    let p = Planted::new(driver, classic);
    if driver != "vfs" || layer == "c" {
        // Materialise first so that every directory exists (vfs copies lazily).
        p.run(&["get", "c"]).ok("first get");
        p.run(&["put", "c"]).ok("first put");
    }
    let target = match Path::new(rel).file_name().and_then(|n| n.to_str()) {
        Some(n @ ("diff" | "work" | "merged" | "fs")) => p.victim.join(n),
        Some(n) if n.ends_with(".img") => p.victim.join("secret"),
        _ => p.victim.clone(),
    };
    plant(&p.root, rel, &target);
    let r = p.run(&["get", layer]);
    let mounted = mounts_under(&p.tmp.path().join("root"));
    let msg = r.refused(&format!("get {layer} with {rel} a symlink"));
    assert!(msg.contains(layer), "the error names the layer: {msg}");
    assert!(mounted.is_empty(), "nothing may be mounted: {mounted:?}");
    p.check_victim();
}

#[test]
fn overlay_symlinked_layer_dir_of_the_layer() {
    get_refused_with_link("overlay", false, "c", "layers/c");
}

#[test]
fn overlay_symlinked_layer_dir_of_a_parent() {
    get_refused_with_link("overlay", false, "c", "layers/base");
}

#[test]
fn overlay_symlinked_layer_dir_of_a_parent_classic() {
    get_refused_with_link("overlay", true, "c", "layers/base");
}

#[test]
fn overlay_symlinked_diff_of_the_layer() {
    get_refused_with_link("overlay", false, "c", "layers/c/diff");
}

#[test]
fn overlay_symlinked_diff_of_the_layer_classic() {
    get_refused_with_link("overlay", true, "c", "layers/c/diff");
}

#[test]
fn overlay_symlinked_diff_of_a_parent() {
    get_refused_with_link("overlay", false, "c", "layers/base/diff");
}

#[test]
fn overlay_symlinked_diff_of_a_single_layer() {
    get_refused_with_link("overlay", false, "base", "layers/base/diff");
}

#[test]
fn overlay_symlinked_work() {
    get_refused_with_link("overlay", false, "c", "layers/c/work");
}

#[test]
fn overlay_symlinked_merged() {
    get_refused_with_link("overlay", false, "c", "layers/c/merged");
}

#[test]
fn overlay_symlinked_merged_classic() {
    get_refused_with_link("overlay", true, "c", "layers/c/merged");
}

#[test]
fn vfs_symlinked_fs() {
    get_refused_with_link("vfs", false, "base", "layers/base/fs");
}

#[test]
fn vfs_symlinked_fs_of_the_layer() {
    get_refused_with_link("vfs", false, "c", "layers/c/fs");
}

/// A read-only get (the layer has a child) binds onto merged/.
#[test]
fn vfs_symlinked_merged() {
    let p = Planted::new("vfs", false);
    plant(&p.root, "layers/c/merged", &p.victim.join("merged"));
    // base has a child, so it is served read-only through merged/.
    plant(&p.root, "layers/base/merged", &p.victim.join("merged"));
    let r = p.run(&["get", "base"]);
    r.refused("read-only get with merged/ a symlink");
    p.check_victim();
}

#[test]
fn block_symlinked_layer_dir_of_a_parent() {
    get_refused_with_link("block", false, "c", "layers/base");
}

#[test]
fn block_symlinked_sandbox_image() {
    get_refused_with_link("block", false, "c", "layers/c/sandbox.img");
}

#[test]
fn block_symlinked_merged() {
    get_refused_with_link("block", false, "c", "layers/c/merged");
}

#[test]
fn symlinked_lock_file_is_refused() {
    let p = Planted::new("vfs", false);
    plant(&p.root, "lock", &p.victim.join("secret"));
    // A read-only command takes no lock, so it never opens the file at all.
    p.run(&["ls"]).ok("ls beside a symlinked lock");
    p.check_victim();
    let msg = p
        .run(&["create", "other"])
        .refused("a writing command with a symlinked lock");
    assert!(msg.contains("lock"), "{msg}");
    p.check_victim();
}

/// Mount-state files are not followed, and a recorded path other than the layer's own is
/// ignored instead of handed out or unmounted.
#[test]
fn mount_state_file_links_and_foreign_paths_are_ignored() {
    let p = Planted::new("overlay", false);
    let victim = p.victim.display().to_string();
    // "mounted": false: a layer handed out as a plain directory, which the open-time
    // reconciliation keeps as it is (no kernel mount to check it against).
    let state =
        format!(r#"{{"refs":5,"mount":{{"path":"{victim}","mounted":false,"readonly":false}}}}"#);
    // A link to a file that looks like a mount state for the victim.
    let fake = p.tmp.path().join("fake-state");
    fs::write(&fake, &state).expect("fake state");
    plant(&p.root, "mounts/c", &fake);
    let got = p.run(&["get", "c"]);
    got.ok("get with a symlinked mount-state file");
    assert_eq!(
        got.stdout.trim(),
        p.root.join("layers/c/merged").display().to_string()
    );
    p.run(&["put", "c"]).ok("put");
    // A regular file recording the victim as the mount point.
    let _ = fs::remove_file(p.root.join("mounts/c"));
    fs::write(p.root.join("mounts/c"), &state).expect("state file");
    let got = p.run(&["get", "c"]);
    got.ok("get with a foreign recorded path");
    assert_eq!(
        got.stdout.trim(),
        p.root.join("layers/c/merged").display().to_string()
    );
    p.run(&["put", "c"]).ok("put");
    assert_eq!(fs::read(&fake).expect("fake"), state.as_bytes());
    p.check_victim();
}

/// A stale temporary file of a mount state planted as a link to the victim is replaced, not
/// written through.
#[test]
fn mount_state_tmp_link_is_not_written_through() {
    let p = Planted::new("overlay", false);
    plant(&p.root, "mounts/.c.tmp", &p.victim.join("secret"));
    p.run(&["get", "c"]).ok("get");
    p.run(&["put", "c"]).ok("put");
    p.check_victim();
}

/// `mounts/` itself a link to the victim: refused, nothing written there.
#[test]
fn symlinked_mounts_dir_is_refused() {
    let p = Planted::new("overlay", false);
    plant(&p.root, "mounts", &p.victim);
    let r = p.run(&["get", "c"]);
    r.refused("get with mounts/ a symlink");
    p.check_victim();
}

/// A reference count at its maximum is an error, not a wrap to 0.
#[test]
fn refcount_at_u32_max_is_an_error() {
    let p = Planted::new("overlay", false);
    p.run(&["get", "c"]).ok("get");
    let merged = p.root.join("layers/c/merged");
    let state = format!(
        r#"{{"refs":{},"mount":{{"path":"{}","mounted":true,"readonly":false}}}}"#,
        u32::MAX,
        merged.display()
    );
    fs::write(p.root.join("mounts/c"), &state).expect("state");
    let msg = p.run(&["get", "c"]).refused("get at u32::MAX references");
    assert!(msg.contains("references"), "{msg}");
    assert_eq!(
        fs::read_to_string(p.root.join("mounts/c")).expect("state"),
        state
    );
    p.run(&["put", "c"]).ok("put one reference");
}

/// Classic mounts: `l/` a link to the victim is refused; a short link planted to the victim
/// is replaced by the layer's own before mounting.
#[test]
fn classic_short_links_are_checked() {
    let p = Planted::new("overlay", true);
    p.run(&["get", "c"]).ok("get");
    p.run(&["put", "c"]).ok("put");
    let links = entries(&p.root.join("l"));
    assert_eq!(links.len(), 1, "one short link for base: {links:?}");
    plant(&p.root, &format!("l/{}", links[0]), &p.victim.join("diff"));
    let got = p.run(&["get", "c"]);
    got.ok("get with a planted short link");
    let merged = PathBuf::from(got.stdout.trim());
    assert!(
        !merged.join("secret").exists(),
        "the victim was used as a lower"
    );
    p.run(&["put", "c"]).ok("put");
    assert_eq!(
        fs::read_link(p.root.join("l").join(&links[0])).expect("link"),
        PathBuf::from("../layers/base/diff")
    );
    plant(&p.root, "l", &p.victim);
    p.run(&["get", "c"]).refused("get with l/ a symlink");
    p.run(&["cleanup"]).refused("cleanup with l/ a symlink");
    p.check_victim();
}

/// Staging entries that are links are removed (or skipped), never followed.
#[test]
fn staging_links_are_not_followed() {
    for driver in ["vfs", "overlay"] {
        let p = Planted::new(driver, false);
        plant(&p.root, "staging/removed-x-1-2-3", &p.victim);
        plant(&p.root, "staging/copy-y-1-2-3", &p.victim.join("secret"));
        p.run(&["ls"]).ok("open with staging links");
        p.run(&["cleanup"]).ok("cleanup with staging links");
        p.check_victim();
    }
}

/// vfs copies a layer's tree from its parent's `fs/` when it is first served: a parent whose
/// layer directory or `fs/` is a link to the victim is refused, not copied.
#[test]
fn vfs_copy_from_a_symlinked_parent_is_refused() {
    for rel in ["layers/base", "layers/base/fs"] {
        copy_from_symlinked_parent(rel);
    }
}

fn copy_from_symlinked_parent(rel: &str) {
    let p = Planted::new("vfs", false);
    let target = if rel.ends_with("fs") {
        p.victim.join("fs")
    } else {
        p.victim.clone()
    };
    plant(&p.root, rel, &target);
    let r = p.run(&["get", "c"]);
    let msg = r.refused("get c copying from a symlinked parent fs/");
    assert!(msg.contains("base"), "{msg}");
    assert!(
        fs::symlink_metadata(p.root.join("layers/c/fs")).is_err(),
        "nothing of the victim may become the layer's tree"
    );
    p.check_victim();
}

/// An apply stages a copy of the layer's own `diff/` and consults its parents' `diff/`s: one
/// that is (or lies in) a link to the victim is refused, not copied or read.
#[test]
fn overlay_apply_with_symlinked_dirs_is_refused() {
    for (rel, target) in [
        ("layers/c/diff", "diff"),
        ("layers/base", ""),
        ("layers/base/diff", "diff"),
    ] {
        apply_with_symlinked("overlay", rel, target);
    }
}

/// Block applies mount the parents' images by path: a parent layer directory that is a link
/// to the victim is refused.
#[test]
fn block_apply_with_a_symlinked_parent_is_refused() {
    apply_with_symlinked("block", "layers/base", "");
}

fn apply_with_symlinked(driver: &'static str, rel: &str, target: &str) {
    let p = Planted::new(driver, false);
    plant(&p.root, rel, &p.victim.join(target));
    let empty_tar = vec![0u8; 1024];
    let out = {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("--root")
            .arg(&p.root)
            .arg("--driver")
            .arg(driver)
            .args(["apply-diff", "c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start strata");
        let mut stdin = child.stdin.take().expect("stdin");
        let _ = stdin.write_all(&empty_tar);
        drop(stdin);
        child.wait_with_output().expect("wait")
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "apply must be refused: {err}");
    assert!(err.contains("strata: "), "{err}");
    p.check_victim();
}
