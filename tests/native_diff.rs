//! Native overlay changes and diffs equal the naive comparison of mounted trees.
//!
//! Random base layers are applied; a random top layer is then changed through its real
//! overlay mount (so the kernel makes the whiteouts, opaque directories and copy-ups) or by
//! applying a random tar; `changes` (native) must equal `changes_dirs` over the two mounted
//! trees (naive), and `diff` (native) must carry the same entries and bytes as the naive export
//! — except that the native method also reports every name in `diff/` of a hard-linked file
//! it reports (see `with_links`).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use proptest::prelude::*;
use strata::archive::{changes, export};
use strata::graph::{Graph, GraphConfig};
use strata::{ChangeKind, ChangeSet, CreateOpts, Driver};

#[path = "common/skip.rs"]
mod skip;

/// One operation on a mounted tree, over a small fixed namespace so that operations collide.
#[derive(Debug, Clone)]
enum Op {
    Write(usize, Vec<u8>),
    Mkdir(usize),
    Remove(usize),
    Chmod(usize, u32),
    Chown(usize, u32),
    Symlink(usize, usize),
    Hardlink(usize, usize),
    Touch(usize, i64),
    /// Delete a directory and make it again (the kernel marks the new one opaque).
    Recreate(usize, Vec<u8>),
}

const NAMES: [&str; 12] = [
    "a", "b", "d1", "d1/x", "d1/y", "d1/sub", "d1/sub/z", "d2", "d2/w", "e", "d3", "d3/q",
];

fn op() -> impl Strategy<Value = Op> {
    let n = 0..NAMES.len();
    prop_oneof![
        (n.clone(), prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(i, d)| Op::Write(i, d)),
        n.clone().prop_map(Op::Mkdir),
        n.clone().prop_map(Op::Remove),
        (
            n.clone(),
            prop::sample::select(vec![0o644u32, 0o600, 0o4755, 0o1777])
        )
            .prop_map(|(i, m)| Op::Chmod(i, m)),
        (n.clone(), 0u32..3).prop_map(|(i, u)| Op::Chown(i, u)),
        (n.clone(), n.clone()).prop_map(|(i, t)| Op::Symlink(i, t)),
        (n.clone(), n.clone()).prop_map(|(i, t)| Op::Hardlink(i, t)),
        (n.clone(), 0i64..3).prop_map(|(i, s)| Op::Touch(i, s)),
        (
            prop::sample::select(vec![2usize, 5, 7, 10]),
            prop::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(|(i, d)| Op::Recreate(i, d)),
    ]
}

/// Applies `op` under `root`, ignoring operations the current tree makes impossible.
fn run(root: &Path, op: &Op) {
    let p = |i: usize| root.join(NAMES[i]);
    let _ = match op {
        Op::Write(i, d) => fs::write(p(*i), d),
        Op::Mkdir(i) => fs::create_dir(p(*i)),
        Op::Remove(i) => {
            let path = p(*i);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
                Ok(_) => fs::remove_file(&path),
                Err(e) => Err(e),
            }
        }
        Op::Chmod(i, m) => fs::set_permissions(p(*i), fs::Permissions::from_mode(*m)),
        Op::Chown(i, u) => std::os::unix::fs::lchown(p(*i), Some(*u), Some(*u)),
        Op::Symlink(i, t) => symlink(NAMES[*t], p(*i)),
        Op::Hardlink(i, t) => fs::hard_link(p(*t), p(*i)),
        Op::Recreate(i, d) => {
            let _ = fs::remove_dir_all(p(*i));
            fs::create_dir(p(*i)).and_then(|()| fs::write(p(*i).join("new"), d))
        }
        Op::Touch(i, s) => {
            let t =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000 + *s as u64);
            fs::File::options()
                .write(true)
                .open(p(*i))
                .and_then(|f| f.set_modified(t))
        }
    };
}

struct Fixture {
    _tmp: tempfile::TempDir,
    graph: Graph,
}

fn fixture() -> Option<Fixture> {
    if !rustix::process::geteuid().is_root() {
        skip::skip("root", "needs root (overlay mounts)");
        return None;
    }
    let tmp = tempfile::tempdir().expect("temp dir for the fixture");
    let mut config = GraphConfig::new(tmp.path().join("root"));
    config.driver = Some("overlay".into());
    config.durable = false;
    let graph = Graph::open(config).expect("open an overlay store for the fixture");
    Some(Fixture { _tmp: tmp, graph })
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.graph.cleanup();
    }
}

/// Builds a layer by running `ops` through its own mount.
fn layer(g: &Graph, id: &str, parent: Option<&str>, ops: &[Op]) {
    g.create(id, parent, &CreateOpts::default())
        .expect("create");
    let mnt = g.get(id, "").expect("get");
    for o in ops {
        run(&mnt, o);
    }
    g.put(id).expect("put");
}

/// The naive answer: both layers mounted and compared; with `links`, widened by
/// [`with_links`] as the native method is.
fn naive(g: &Graph, id: &str, parent: &str, links: bool) -> (Vec<strata::Change>, Vec<u8>) {
    let new = g.get(id, "").expect("get");
    let old = g.get(parent, "").expect("get parent");
    let nfd = strata::fsutil::open_dir(&new).expect("open");
    let ofd = strata::fsutil::open_dir(&old).expect("open");
    let mut set = changes::changes_dirs(nfd.as_fd(), Some(ofd.as_fd())).expect("naive changes");
    if links {
        set = with_links(g, id, &set);
    }
    let mut tar = Vec::new();
    export::export_changes(nfd.as_fd(), &set, &mut tar).expect("naive export");
    g.put(parent).expect("put");
    g.put(id).expect("put");
    (set.iter().collect(), tar)
}

/// The one place the native method deliberately differs from the naive one: every other name
/// in the layer's `diff/` of a multiply-linked file the changes report is reported too (as
/// Modify, with its directories), so the link travels with the layer.
fn with_links(g: &Graph, id: &str, naive: &ChangeSet) -> ChangeSet {
    fn names(dir: &Path, rel: &str, out: &mut HashMap<u64, Vec<String>>) {
        for e in fs::read_dir(dir).expect("read diff/") {
            let e = e.expect("entry");
            let rel = format!("{rel}/{}", e.file_name().to_string_lossy());
            let md = e.metadata().expect("lstat");
            if md.is_dir() {
                names(&e.path(), &rel, out);
            } else if md.nlink() > 1 {
                out.entry(md.ino()).or_default().push(rel);
            }
        }
    }
    let mut by_ino = HashMap::new();
    names(&g.store().layer_dir(id).join("diff"), "", &mut by_ino);
    let mut list: Vec<strata::Change> = naive.iter().collect();
    let listed: HashSet<String> = list
        .iter()
        .map(|c| c.path.to_string_lossy().into_owned())
        .collect();
    let reported = |p: &String| {
        list.iter()
            .any(|c| c.kind != ChangeKind::Delete && c.path.to_string_lossy() == p.as_str())
    };
    let mut extra = Vec::new();
    for group in by_ino.values() {
        if !group.iter().any(reported) {
            continue;
        }
        for p in group {
            let mut at = Path::new(p);
            while at != Path::new("/") && !listed.contains(at.to_string_lossy().as_ref()) {
                extra.push(strata::Change {
                    path: at.to_path_buf(),
                    kind: ChangeKind::Modify,
                });
                at = at.parent().expect("absolute path");
            }
        }
    }
    list.extend(extra);
    ChangeSet::from_changes(&list).expect("valid paths")
}

fn check(g: &Graph, id: &str, parent: &str) -> Result<(), TestCaseError> {
    let native: Vec<_> = g
        .changes(id, None)
        .expect("native changes")
        .iter()
        .collect();
    let mut native_tar = Vec::new();
    std::io::copy(&mut g.diff(id, None).expect("native diff"), &mut native_tar).expect("read diff");
    let (naive_list, naive_tar) = naive(g, id, parent, true);
    prop_assert_eq!(&native, &naive_list);
    prop_assert!(native_tar == naive_tar, "diff tars differ for {:?}", native);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Two lower layers and a top layer, all changed through their mounts.
    #[test]
    fn native_equals_naive_through_mounts(
        base in prop::collection::vec(op(), 4..24),
        mid in prop::collection::vec(op(), 0..16),
        top in prop::collection::vec(op(), 1..24),
    ) {
        let Some(f) = fixture() else { return Ok(()) };
        layer(&f.graph, "base", None, &base);
        layer(&f.graph, "mid", Some("base"), &mid);
        layer(&f.graph, "top", Some("mid"), &top);
        check(&f.graph, "top", "mid")?;
        check(&f.graph, "mid", "base")?;
    }

    /// The top layer made by applying the naive diff of a mounted change: the applied
    /// overlay-format diff/ (engine-made whiteouts and opaque directories) must also agree.
    #[test]
    fn native_equals_naive_for_applied_layers(
        base in prop::collection::vec(op(), 4..24),
        top in prop::collection::vec(op(), 1..24),
    ) {
        let Some(f) = fixture() else { return Ok(()) };
        let g = &f.graph;
        layer(g, "base", None, &base);
        layer(g, "scratch", Some("base"), &top);
        let (_, tar) = naive(g, "scratch", "base", false);
        g.create("applied", Some("base"), &CreateOpts::default()).expect("create");
        let mut input: &[u8] = &tar;
        g.apply_diff("applied", None, &mut input).expect("apply");
        // Exact re-export first (an unmodified applied layer), then the native comparison.
        let mut again = Vec::new();
        std::io::copy(&mut g.diff("applied", None).expect("diff"), &mut again).expect("read");
        prop_assert!(again == tar, "exact re-export differs");
        let native: Vec<_> = g.changes("applied", None).expect("native changes").iter().collect();
        let (naive_list, _) = naive(g, "applied", "base", true);
        prop_assert_eq!(native, naive_list);
    }
}

/// An entry of a hand-made layer tar.
#[derive(Debug, Clone)]
enum TarOp {
    File(usize, Vec<u8>),
    Dir(usize),
    Opaque(usize),
    Whiteout(usize),
}

fn tar_op() -> impl Strategy<Value = TarOp> {
    let n = 0..NAMES.len();
    let dirs = prop::sample::select(vec![2usize, 5, 7, 10]);
    prop_oneof![
        (n.clone(), prop::collection::vec(any::<u8>(), 0..16)).prop_map(|(i, d)| TarOp::File(i, d)),
        dirs.clone().prop_map(TarOp::Dir),
        dirs.prop_map(TarOp::Opaque),
        n.prop_map(TarOp::Whiteout),
    ]
}

fn build_tar(ops: &[TarOp]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, ty: tar::EntryType, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(ty);
        h.set_mode(if ty == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).expect("tar entry");
    };
    for o in ops {
        match o {
            TarOp::File(i, d) => add(NAMES[*i], tar::EntryType::Regular, d),
            TarOp::Dir(i) => add(NAMES[*i], tar::EntryType::Directory, b""),
            TarOp::Opaque(i) => {
                add(NAMES[*i], tar::EntryType::Directory, b"");
                add(
                    &format!("{}/.wh..wh..opq", NAMES[*i]),
                    tar::EntryType::Regular,
                    b"",
                );
            }
            TarOp::Whiteout(i) => {
                let (dir, base) = NAMES[*i]
                    .rsplit_once('/')
                    .map_or(("", NAMES[*i]), |(d, b)| (d, b));
                let name = if dir.is_empty() {
                    format!(".wh.{base}")
                } else {
                    format!("{dir}/.wh.{base}")
                };
                add(&name, tar::EntryType::Regular, b"");
            }
        }
    }
    b.into_inner().expect("tar")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Layers applied from tars with opaque markers, directory whiteouts and re-creations.
    #[test]
    fn native_equals_naive_for_opaque_tars(
        base in prop::collection::vec(op(), 4..24),
        top in prop::collection::vec(tar_op(), 1..16),
    ) {
        let Some(f) = fixture() else { return Ok(()) };
        let g = &f.graph;
        layer(g, "base", None, &base);
        g.create("t", Some("base"), &CreateOpts::default()).expect("create");
        let tar = build_tar(&top);
        let mut input: &[u8] = &tar;
        if g.apply_diff("t", None, &mut input).is_err() {
            return Ok(()); // e.g. a file used as a parent directory: refused, nothing to compare
        }
        let mut again = Vec::new();
        std::io::copy(&mut g.diff("t", None).expect("diff"), &mut again).expect("read");
        prop_assert!(again == tar, "exact re-export differs");
        // Served writable once, the layer's diff is computed again, natively.
        g.get("t", "").expect("get");
        g.put("t").expect("put");
        check(g, "t", "base")?;
    }
}
