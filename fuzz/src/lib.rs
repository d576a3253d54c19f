//! The harness of strata's fuzz targets: a vfs store in a work directory, a fixed parent
//! layer full of hostile symlinks, a victim directory of known bytes beside the store, and the
//! oracle checked after every input.
//!
//! ```text
//! $STRATA_FUZZ_WORK/h-<pid>/
//!   victim/          files, a hard link pair, a directory, a symlink; never to change
//!   store/           the strata store (vfs); layer `base` holds the hostile parent
//! ```
//!
//! For each input, [`Harness::run`] creates a fresh child of `base`, applies the input to it
//! through [`Graph::apply_diff_with`] (the path `strata apply-diff` takes), checks the oracle
//! and removes the child again. The oracle (a violation panics, which libFuzzer reports):
//!
//! * the victim tree is unchanged: bytes, modes, owners, times (mtime and ctime, to the
//!   nanosecond), inode numbers, link counts, xattrs, names;
//! * the parent layer's directory is unchanged in the same way, and so is the list of names
//!   in the store root;
//! * `staging/` is empty afterwards;
//! * on `Ok`: no file in the layer directory holds the victim's random marker bytes (unless
//!   the input itself carries them) or shares an inode with a victim file, the layer is marked
//!   exact, and its `diff` reproduces the uncompressed input byte for byte;
//! * on `Err`: the layer's record and directory are exactly as before the apply;
//! * and no panic anywhere.

#![warn(missing_docs)]

pub mod snapshot;
pub mod structured;

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use strata::archive::compress;
use strata::archive::tarstream::Limits;
use strata::graph::{ApplyParams, GraphConfig};
use strata::{CreateOpts, Driver, Graph};

use snapshot::{contains, differences, snapshot, Snapshot};

/// Id of the hostile parent layer.
pub const PARENT: &str = "base";

/// Limits for fuzzed applies: small, so a decompression bomb or a huge declared size fails
/// fast instead of filling the disk.
pub const LIMITS: Limits = Limits {
    max_bytes: 32 << 20,
    max_entries: 4096,
    max_meta: 1 << 20,
};

/// The store, the victim and what they looked like at the start.
pub struct Harness {
    dir: PathBuf,
    victim: PathBuf,
    graph: Graph,
    marker: Vec<u8>,
    victim_before: Snapshot,
    victim_inodes: HashSet<(u64, u64)>,
    parent_before: Snapshot,
    root_names: BTreeSet<OsString>,
    next: u64,
}

/// What one input did.
#[derive(Debug)]
pub enum Outcome {
    /// Applied; the layer's size.
    Applied(u64),
    /// Refused cleanly; the message.
    Refused(String),
}

fn random_marker() -> Vec<u8> {
    use std::hash::{BuildHasher, Hasher};
    let mut m = b"VICTIM-MARKER:".to_vec();
    for i in 0..4u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        m.extend_from_slice(format!("{:016x}", h.finish()).as_bytes());
    }
    m
}

fn set_times(path: &Path, secs: i64, nsecs: i64) {
    use rustix::fs::{utimensat, AtFlags, Timespec, Timestamps, CWD};
    let ts = Timespec {
        tv_sec: secs,
        tv_nsec: nsecs,
    };
    let times = Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .unwrap_or_else(|e| panic!("utimensat {path:?}: {e}"));
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {path:?}: {e}"));
}

/// Fills the victim directory: files holding the marker (one with a second hard link, one
/// setuid, one with an xattr), a private directory, a symlink.
fn build_victim(victim: &Path, marker: &[u8]) {
    fs::create_dir(victim).expect("mkdir victim");
    let body = [marker, b"\n", marker, b"\n"].concat();
    fs::write(victim.join("marker"), &body).expect("write marker");
    chmod(&victim.join("marker"), 0o644);
    fs::hard_link(victim.join("marker"), victim.join("marker-link")).expect("link marker");
    fs::write(victim.join("suid"), &body).expect("write suid");
    chmod(&victim.join("suid"), 0o4755);
    fs::create_dir(victim.join("dir")).expect("mkdir victim/dir");
    fs::write(victim.join("dir/secret"), &body).expect("write secret");
    chmod(&victim.join("dir/secret"), 0o600);
    chmod(&victim.join("dir"), 0o700);
    std::os::unix::fs::symlink("marker", victim.join("sym")).expect("symlink victim/sym");
    // Best effort: tmpfs before Linux 6.6 has no user.* xattrs.
    let _ = rustix::fs::setxattr(
        victim.join("marker"),
        "user.victim",
        marker,
        rustix::fs::XattrFlags::empty(),
    );
    for rel in ["marker", "suid", "dir/secret", "sym", "dir", ""] {
        set_times(&victim.join(rel), 1_000_000_000, 123_456_789);
    }
}

/// The parent layer: symlinks out of the layer in every spelling, symlink loops, a hard link
/// pair and directories for whiteouts and opaque markers to act on. Layer trees live at
/// `store/{layers,staging}/<name>/fs`, so `../../../../victim` is the victim seen from a
/// layer root, if a symlink were followed from outside.
fn parent_tar(victim: &Path) -> Vec<u8> {
    use tar::{EntryType, Header};
    let victim = victim.to_str().expect("UTF-8 work directory");
    let mut b = tar::Builder::new(Vec::new());
    let mut append = |kind: EntryType, name: &str, target: Option<&str>, data: &[u8]| {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        if let Some(t) = target {
            h.set_link_name(t).expect("link name");
        }
        b.append_data(&mut h, name, data).expect("parent tar");
    };
    let sym = EntryType::Symlink;
    append(sym, "evil", Some("/"), b"");
    append(sym, "up", Some("../../.."), b"");
    append(sym, "abs", Some(victim), b"");
    append(sym, "absmarker", Some(&format!("{victim}/marker")), b"");
    append(sym, "upv", Some("../../../../victim"), b"");
    append(sym, "upm", Some("../../../../victim/marker"), b"");
    append(sym, "loop", Some("loop"), b"");
    append(sym, "ping", Some("pong"), b"");
    append(sym, "pong", Some("ping"), b"");
    append(EntryType::Directory, "d", None, b"");
    append(sym, "d/evil", Some("/"), b"");
    append(sym, "d/upv", Some("../../../../../victim"), b"");
    append(sym, "d/abs", Some(victim), b"");
    append(EntryType::Regular, "d/f", None, b"parent file\n");
    append(EntryType::Link, "d/f2", Some("d/f"), b"");
    append(EntryType::Directory, "o", None, b"");
    append(EntryType::Regular, "o/x", None, b"x\n");
    append(sym, "o/up", Some(".."), b"");
    b.into_inner().expect("finish parent tar")
}

impl Harness {
    /// A fresh work directory: under `$STRATA_FUZZ_WORK` if set, else the temp directory.
    /// The caller (scripts/fuzz) deletes it: libFuzzer exits without running destructors.
    pub fn new() -> Harness {
        let base = std::env::var_os("STRATA_FUZZ_WORK")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("h-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).expect("remove old work dir");
        }
        fs::create_dir_all(&dir).expect("create work dir");
        let dir = dir.canonicalize().expect("canonical work dir");
        let victim = dir.join("victim");
        let marker = random_marker();
        build_victim(&victim, &marker);

        let mut config = GraphConfig::new(dir.join("store"));
        config.driver = Some("vfs".into());
        config.durable = false;
        config.limits = LIMITS;
        let graph = Graph::open(config).expect("open store");
        graph
            .create(PARENT, None, &CreateOpts::default())
            .expect("create parent");
        graph
            .apply_diff(PARENT, None, &mut Cursor::new(parent_tar(&victim)))
            .expect("apply parent");

        let victim_before = snapshot(&victim);
        let victim_inodes = victim_before
            .values()
            .filter(|e| e.content.is_some())
            .map(|e| e.inode)
            .collect();
        let parent_before = snapshot(&graph.store().layer_dir(PARENT));
        let root_names = names(graph.store().root());
        Harness {
            dir,
            victim,
            graph,
            marker,
            victim_before,
            victim_inodes,
            parent_before,
            root_names,
            next: 0,
        }
    }

    /// The work directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The victim directory (absolute).
    pub fn victim(&self) -> &Path {
        &self.victim
    }

    /// Applies `data` to a fresh child of the parent layer, checks the oracle (panicking on a
    /// violation) and removes the child.
    pub fn run(&mut self, data: &[u8]) -> Outcome {
        let store = self.graph.store();
        let id = format!("c{}", self.next);
        self.next += 1;
        self.graph
            .create(&id, Some(PARENT), &CreateOpts::default())
            .expect("create child");
        let layer_dir = store.layer_dir(&id);
        let record_before = store.record(&id).expect("child record");
        let dir_before = snapshot(&layer_dir);

        let params = ApplyParams {
            limits: Some(LIMITS),
            digest: None,
        };
        let result = self
            .graph
            .apply_diff_with(&id, None, &mut Cursor::new(data), &params);

        self.expect_same("victim", &self.victim_before, &snapshot(&self.victim));
        self.expect_same(
            "parent layer",
            &self.parent_before,
            &snapshot(&store.layer_dir(PARENT)),
        );
        assert_eq!(names(store.root()), self.root_names, "store root names");
        let staging = names(&store.root().join("staging"));
        assert!(staging.is_empty(), "staging leftovers: {staging:?}");

        let outcome = match result {
            Ok(size) => {
                self.check_applied(&id, &layer_dir, data);
                Outcome::Applied(size)
            }
            Err(e) => {
                let record = store
                    .record(&id)
                    .expect("child record after a failed apply");
                assert_eq!(
                    record, record_before,
                    "record changed by a failed apply: {e}"
                );
                self.expect_same(
                    "layer after a failed apply",
                    &dir_before,
                    &snapshot(&layer_dir),
                );
                Outcome::Refused(format!("{e:#}"))
            }
        };
        self.graph.remove(&id).expect("remove child");
        let layers = names(&store.layers_dir());
        assert_eq!(
            layers,
            BTreeSet::from([OsString::from(PARENT)]),
            "layers/ after removing {id}"
        );
        outcome
    }

    fn check_applied(&self, id: &str, layer_dir: &Path, data: &[u8]) {
        let plain = decompressed(data);
        let input_has_marker = plain.as_deref().is_none_or(|p| contains(p, &self.marker));
        for (rel, e) in snapshot(layer_dir) {
            assert!(
                !self.victim_inodes.contains(&e.inode),
                "{rel:?} in layer {id} is a hard link to a victim file"
            );
            if let Some(c) = &e.content {
                assert!(
                    input_has_marker || !contains(c, &self.marker),
                    "{rel:?} in layer {id} holds the victim's bytes"
                );
            }
            if !input_has_marker {
                for v in e.xattrs.values() {
                    assert!(
                        !contains(v, &self.marker),
                        "xattr of {rel:?} holds victim bytes"
                    );
                }
            }
        }
        let record = self.graph.store().record(id).expect("record after apply");
        assert!(
            record.exact,
            "an apply onto a pristine layer must be exactly reproducible"
        );
        let plain = plain.expect("an applied stream decompresses");
        let mut diff = Vec::new();
        self.graph
            .diff(id, None)
            .expect("diff of an applied layer")
            .read_to_end(&mut diff)
            .expect("reading the exact diff");
        assert!(
            diff == plain,
            "exact diff differs from the applied stream ({} vs {} bytes, first difference at {:?})",
            diff.len(),
            plain.len(),
            diff.iter().zip(&plain).position(|(a, b)| a != b)
        );
    }

    fn expect_same(&self, what: &str, before: &Snapshot, after: &Snapshot) {
        let d = differences(before, after);
        assert!(
            d.is_empty(),
            "{what} changed ({}):\n{}",
            self.victim.display(),
            d.join("\n")
        );
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// The uncompressed stream, as strata would read it; `None` when it does not decompress
/// within the limits.
pub fn decompressed(data: &[u8]) -> Option<Vec<u8>> {
    let (_, r) = compress::decoder(Box::new(Cursor::new(data.to_vec()))).ok()?;
    let mut out = Vec::new();
    r.take(LIMITS.max_bytes + 1).read_to_end(&mut out).ok()?;
    (out.len() as u64 <= LIMITS.max_bytes).then_some(out)
}

fn names(dir: &Path) -> BTreeSet<OsString> {
    match fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.expect("readdir").file_name()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => panic!("readdir {dir:?}: {e}"),
    }
}
