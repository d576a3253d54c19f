//! Tree walks on hostile shapes: very deep trees on small thread stacks with a small
//! descriptor limit, xattr-only changes, and hard links to lower-layer files.
//!
//! Every walker (naive and overlay-native changes, diff size, export, the vfs copy) must run
//! on a thread with a 256 KiB stack (recursion over 10,000 levels would overflow it and abort
//! the test process) and with `RLIMIT_NOFILE` at 1024 (one descriptor per level would run
//! out).

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};
use strata::archive::{changes, copy, export, overlay_changes};
use strata::graph::{Graph, GraphConfig};
use strata::{Change, ChangeKind, ChangeSet, CreateOpts, Driver};

#[path = "common/skip.rs"]
mod skip;

/// Stack of the threads the walkers run on.
const SMALL_STACK: usize = 256 * 1024;
/// Descriptor limit while walking.
const FD_LIMIT: u64 = 1024;

fn root() -> bool {
    if !rustix::process::geteuid().is_root() {
        skip::skip("root", "needs root (mounts, owners)");
        return false;
    }
    true
}

/// Lowers the soft descriptor limit of this test process to [`FD_LIMIT`].
fn limit_fds() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let old = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(FD_LIMIT),
            maximum: old.maximum,
        },
    )
    .expect("setrlimit");
}

/// Runs `f` on a thread with a [`SMALL_STACK`] stack.
fn small<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(SMALL_STACK)
            .spawn_scoped(s, f)
            .expect("spawn")
            .join()
            .expect("walker thread panicked")
    })
}

/// A scratch directory removed with `rm -rf` (which handles any depth).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        Scratch(tempfile::tempdir().expect("tempdir").keep())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rm")
            .arg("-rf")
            .arg(&self.0)
            .status();
    }
}

/// A graph on `driver` in its own scratch directory; cleaned up (unmounted) before removal.
struct Fixture {
    graph: Graph,
    _scratch: Scratch,
}

impl Fixture {
    fn new(driver: &str) -> Self {
        let scratch = Scratch::new();
        let mut config = GraphConfig::new(scratch.0.join("root"));
        config.driver = Some(driver.into());
        config.durable = false;
        let graph = Graph::open(config).expect("open graph");
        Fixture {
            graph,
            _scratch: scratch,
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.graph.cleanup();
    }
}

fn open_dir(path: &Path) -> OwnedFd {
    rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open dir")
}

/// Makes `depth` nested directories named `d` under `dir` and a file `f` (content `leaf`)
/// at the bottom, holding two descriptors at a time.
fn chain(dir: &Path, depth: usize, leaf: &[u8]) {
    let mut fd = open_dir(dir);
    for _ in 0..depth {
        match rfs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => panic!("mkdir: {e}"),
        }
        fd = rfs::openat(
            &fd,
            "d",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .expect("open d");
    }
    let f = rfs::openat(
        &fd,
        "f",
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .expect("create leaf");
    fs::File::from(f).write_all(leaf).expect("write leaf");
}

/// Reads a stream to its end, returning its length and last 1024 bytes.
fn drain(mut r: impl Read) -> (u64, Vec<u8>) {
    let mut buf = vec![0u8; 1 << 20];
    let (mut total, mut tail) = (0u64, Vec::new());
    loop {
        let n = r.read(&mut buf).expect("read stream");
        if n == 0 {
            return (total, tail);
        }
        total += n as u64;
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 1024 {
            tail.drain(..tail.len() - 1024);
        }
    }
}

/// Counts of Modify, Add and Delete (without materialising the deep paths).
fn kinds(set: &ChangeSet) -> (usize, usize, usize) {
    let mut k = (0, 0, 0);
    set.try_for_each(|step| {
        match step.kind {
            ChangeKind::Modify => k.0 += 1,
            ChangeKind::Add => k.1 += 1,
            ChangeKind::Delete => k.2 += 1,
        }
        Ok::<(), ()>(())
    })
    .expect("count");
    k
}

/// The archive-level walkers on plain directories: naive changes, overlay-native changes with
/// the same deep chain in a lower layer, diff size, export and copy.
fn walk_plain(depth: usize, export_too: bool) {
    limit_fds();
    let s = Scratch::new();
    let (new, empty, lower, copy_dst) = (
        s.0.join("new"),
        s.0.join("empty"),
        s.0.join("lower"),
        s.0.join("copy"),
    );
    for d in [&new, &empty, &lower, &copy_dst] {
        fs::create_dir(d).expect("mkdir");
    }
    chain(&new, depth, b"leaf");
    chain(&lower, depth, b"old leaf, longer");
    let (new_fd, empty_fd, lower_fd, copy_fd) = (
        open_dir(&new),
        open_dir(&empty),
        open_dir(&lower),
        open_dir(&copy_dst),
    );
    small(|| {
        let all = changes::changes_dirs(new_fd.as_fd(), Some(empty_fd.as_fd())).expect("changes");
        assert_eq!(all.len(), depth + 1);
        assert_eq!(kinds(&all), (0, depth + 1, 0));
        let size = changes::changes_size(new_fd.as_fd(), &all).expect("size");
        assert_eq!(size, 4);
        if export_too {
            let mut tar = Counter::default();
            export::export_changes(new_fd.as_fd(), &all, &mut tar).expect("export");
            assert_eq!(tar.tail, vec![0u8; 1024]);
        }

        // The leaf differs from the lower's: every directory above it is Modify.
        let native =
            overlay_changes::overlay_changes(new_fd.as_fd(), &[lower_fd.as_fd()]).expect("native");
        assert_eq!(kinds(&native), (depth + 1, 0, 0));
        let naive = changes::changes_dirs(new_fd.as_fd(), Some(lower_fd.as_fd())).expect("naive");
        assert_eq!(kinds(&naive), (depth + 1, 0, 0));

        let stats = copy::copy_tree(new_fd.as_fd(), copy_fd.as_fd()).expect("copy");
        assert_eq!(stats.entries, depth as u64 + 1);
        let same = changes::changes_dirs(copy_fd.as_fd(), Some(new_fd.as_fd())).expect("compare");
        assert!(same.is_empty(), "the copy differs from its source");
    });
}

/// Counts what is written and keeps the last 1024 bytes.
#[derive(Default)]
struct Counter {
    bytes: u64,
    tail: Vec<u8>,
}

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        self.tail.extend_from_slice(buf);
        if self.tail.len() > 1024 {
            self.tail.drain(..self.tail.len() - 1024);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn ten_thousand_levels_walk_on_a_small_stack() {
    if root() {
        walk_plain(10_000, true);
    }
}

#[test]
fn hundred_thousand_levels_walk_on_a_small_stack() {
    if root() {
        // The export of this tree is 10 GB of path names; the 10,000-level test exports.
        walk_plain(100_000, false);
    }
}

/// A deep tree made in a container layer through the driver; changes, diff size and diff of
/// it, and a child layer on it (vfs: a copy of it), all on small stacks. With `whole_diff`
/// false the tree is too deep to list: its paths add up to more than
/// `changeset::MAX_PATH_BYTES` of names (a 100,000-level chain names 10 GB), so `changes` and
/// `diff` refuse it at once, naming the layer and the limit, while diff size and a child
/// layer still work.
fn deep_layer(driver: &str, depth: usize, whole_diff: bool) {
    limit_fds();
    let f = Fixture::new(driver);
    let g = &f.graph;
    g.create("base", None, &CreateOpts::default())
        .expect("create base");
    g.create_rw("c", Some("base"), &CreateOpts::default())
        .expect("create c");
    let mnt = g.get("c", "").expect("get");
    chain(&mnt, depth, b"leaf");
    g.put("c").expect("put");
    small(|| {
        assert_eq!(g.diff_size("c", None).expect("diff size"), 4);
        if whole_diff {
            let set = g.changes("c", None).expect("changes");
            assert_eq!(kinds(&set), (0, depth + 1, 0));
            let (len, tail) = drain(g.diff("c", None).expect("diff"));
            assert!(len > (depth * 1024) as u64, "diff of {len} bytes");
            assert_eq!(tail, vec![0u8; 1024], "the diff tar is not complete");
        } else {
            for (what, err) in [
                ("changes", g.changes("c", None).err()),
                ("diff", g.diff("c", None).err()),
            ] {
                let msg = err.map(|e| e.to_string()).unwrap_or_default();
                assert!(
                    msg.contains("\"c\"") || msg.contains(" c"),
                    "{what} refused naming the layer: {msg:?}"
                );
                assert!(msg.contains("bytes of names"), "{what}: {msg:?}");
            }
        }
        g.create("child", Some("c"), &CreateOpts::default())
            .expect("create on a deep parent");
        let set = g.changes("child", None).expect("changes of the child");
        assert!(set.is_empty(), "{} changes", set.len());
    });
}

#[test]
fn deep_overlay_layer() {
    if root() {
        deep_layer("overlay", 10_000, true);
    }
}

#[test]
fn deep_vfs_layer() {
    if root() {
        deep_layer("vfs", 10_000, true);
    }
}

#[test]
fn deeper_overlay_layer() {
    if root() {
        deep_layer("overlay", 100_000, false);
    }
}

#[test]
fn deeper_vfs_layer() {
    if root() {
        deep_layer("vfs", 100_000, false);
    }
}

fn listed(set: &ChangeSet) -> Vec<(String, ChangeKind)> {
    set.iter()
        .map(|c: Change| (c.path.to_string_lossy().into_owned(), c.kind))
        .collect()
}

/// A base layer with `/etc/issue` and `/usr/bin/perl`, and a container layer on it.
fn base_and_container(g: &Graph) -> PathBuf {
    g.create("base", None, &CreateOpts::default())
        .expect("create base");
    let b = g.get("base", "").expect("get base");
    for d in ["etc", "usr/bin", "root"] {
        fs::create_dir_all(b.join(d)).expect("mkdir");
    }
    fs::write(b.join("etc/issue"), b"Debian\n").expect("write");
    fs::write(b.join("usr/bin/perl"), b"#!perl binary").expect("write");
    g.put("base").expect("put base");
    g.create_rw("c", Some("base"), &CreateOpts::default())
        .expect("create c");
    g.get("c", "").expect("get c")
}

fn xattr_only_change(driver: &str) {
    let f = Fixture::new(driver);
    let g = &f.graph;
    let mnt = base_and_container(g);
    rustix::fs::lsetxattr(
        mnt.join("etc/issue"),
        "user.x",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("setfattr through the mount");
    g.put("c").expect("put");
    let set = g.changes("c", None).expect("changes");
    assert_eq!(
        listed(&set),
        vec![
            ("/etc".to_string(), ChangeKind::Modify),
            ("/etc/issue".to_string(), ChangeKind::Modify)
        ]
    );
    let mut tar = Vec::new();
    g.diff("c", None)
        .expect("diff")
        .read_to_end(&mut tar)
        .expect("read diff");
    let mut ar = tar::Archive::new(&tar[..]);
    let mut found = false;
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        if e.path_bytes().as_ref() != b"etc/issue" {
            continue;
        }
        for ext in e.pax_extensions().expect("pax").into_iter().flatten() {
            let ext = ext.expect("record");
            found |= ext.key_bytes() == b"SCHILY.xattr.user.x" && ext.value_bytes() == b"1";
        }
    }
    assert!(found, "etc/issue with its user.x is not in the diff");
}

#[test]
fn xattr_only_change_on_overlay() {
    if root() {
        xattr_only_change("overlay");
    }
}

#[test]
fn xattr_only_change_on_vfs() {
    if root() {
        xattr_only_change("vfs");
    }
}

/// `(st_ino, st_nlink)` of a file.
type Inode = (u64, u64);

/// `ln /usr/bin/perl /root/perl-hard` in a container, committed and applied onto the same
/// base; returns the applied layer's inode of both names and the container's changes.
fn link_to_lower(driver: &str) -> (Inode, Inode, Vec<(String, ChangeKind)>) {
    let f = Fixture::new(driver);
    let g = &f.graph;
    let mnt = base_and_container(g);
    fs::hard_link(mnt.join("usr/bin/perl"), mnt.join("root/perl-hard")).expect("ln");
    g.put("c").expect("put");
    let changes = listed(&g.changes("c", None).expect("changes"));
    let mut tar = Vec::new();
    g.diff("c", None)
        .expect("diff")
        .read_to_end(&mut tar)
        .expect("read diff");
    g.create("applied", Some("base"), &CreateOpts::default())
        .expect("create applied");
    g.apply_diff("applied", None, &mut &tar[..])
        .expect("apply the diff");
    let a = g.get("applied", "").expect("get applied");
    let stat = |rel: &str| {
        let m = fs::symlink_metadata(a.join(rel)).expect("lstat");
        assert_eq!(fs::read(a.join(rel)).expect("read"), b"#!perl binary");
        (m.ino(), m.nlink())
    };
    let (perl, hard) = (stat("usr/bin/perl"), stat("root/perl-hard"));
    g.put("applied").expect("put applied");
    (perl, hard, changes)
}

#[test]
fn hard_link_to_a_lower_file_travels_on_overlay() {
    if !root() {
        return;
    }
    let (perl, hard, changes) = link_to_lower("overlay");
    assert_eq!(perl, hard, "the two names are not one file after apply");
    assert_eq!(perl.1, 2);
    let has = |p: &str| changes.iter().any(|(q, _)| q == p);
    assert!(
        has("/usr/bin/perl") && has("/root/perl-hard"),
        "{changes:?}"
    );
}

#[test]
fn hard_link_to_a_lower_file_on_vfs_is_a_copy_as_in_docker() {
    if !root() {
        return;
    }
    // Docker's vfs compares trees: the old name is unchanged, so only the new name travels,
    // as a file of its own.
    let (perl, hard, changes) = link_to_lower("vfs");
    assert_ne!(perl.0, hard.0);
    assert_eq!((perl.1, hard.1), (1, 1));
    assert_eq!(
        changes,
        vec![
            ("/root".to_string(), ChangeKind::Modify),
            ("/root/perl-hard".to_string(), ChangeKind::Add)
        ]
    );
}
