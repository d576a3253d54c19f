//! Snapshots for round-trip comparisons: everything a layer tar carries about an entry.
//!
//! Per path: type, content (length and hash), symlink target, device number, permission bits
//! (setuid/setgid/sticky included), owner, mtime in whole seconds (the tar export truncates
//! times to seconds, like Docker's), extended attributes other than storage-internal ones, and
//! the hard-link group (second and later names of an inode point at the first in path order).
//! The root directory's own times are left out: the layer root is not a tar entry.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::common::tree::{fnv64, xattrs};

/// What a layer tar preserves of one entry.
#[derive(Clone, PartialEq, Eq)]
pub struct Node {
    /// `d`, `f`, `l`, `p`, `c`, `b` or `s`.
    pub kind: char,
    /// Regular files: (length, FNV-1a 64 of the bytes).
    pub content: Option<(u64, u64)>,
    /// Symlink target bytes.
    pub target: Option<Vec<u8>>,
    /// Device number of char/block devices.
    pub rdev: u64,
    /// `mode & 0o7777`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, whole seconds (`None` for the root).
    pub mtime: Option<i64>,
    /// Extended attributes, storage-internal ones excluded.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// For the second and later names of an inode: its first name.
    pub link_of: Option<String>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:o} {}:{}", self.kind, self.mode, self.uid, self.gid)?;
        if let Some(m) = self.mtime {
            write!(f, " mtime {m}")?;
        }
        if let Some((len, h)) = self.content {
            write!(f, " {len} bytes fnv {h:016x}")?;
        }
        if let Some(t) = &self.target {
            write!(f, " -> {:?}", String::from_utf8_lossy(t))?;
        }
        if self.rdev != 0 {
            write!(f, " rdev {:#x}", self.rdev)?;
        }
        if !self.xattrs.is_empty() {
            write!(f, " xattrs {:?}", self.xattrs)?;
        }
        if let Some(l) = &self.link_of {
            write!(f, " link of {l}")?;
        }
        Ok(())
    }
}

/// A tree: `/` for the root, `/a/b` below it.
pub type Tree = BTreeMap<String, Node>;

fn internal(name: &str) -> bool {
    name.starts_with("trusted.overlay.")
        || name.starts_with("user.overlay.")
        || name == "security.selinux"
}

/// Snapshot of `root`, never following symlinks.
pub fn snapshot(root: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut inodes = HashMap::new();
    walk(root, "/".into(), &mut tree, &mut inodes);
    tree
}

fn walk(path: &Path, rel: String, tree: &mut Tree, inodes: &mut HashMap<(u64, u64), String>) {
    let md = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {path:?}: {e}"));
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        'd'
    } else if ft.is_file() {
        'f'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_fifo() {
        'p'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else {
        's'
    };
    let link_of = if kind != 'd' && md.nlink() > 1 {
        let key = (md.dev(), md.ino());
        match inodes.get(&key) {
            Some(first) => Some(first.clone()),
            None => {
                inodes.insert(key, rel.clone());
                None
            }
        }
    } else {
        None
    };
    let node = Node {
        kind,
        content: (kind == 'f').then(|| {
            let data = fs::read(path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
            (data.len() as u64, fnv64(&data))
        }),
        target: (kind == 'l').then(|| {
            use std::os::unix::ffi::OsStrExt;
            fs::read_link(path)
                .unwrap_or_else(|e| panic!("readlink {path:?}: {e}"))
                .as_os_str()
                .as_bytes()
                .to_vec()
        }),
        rdev: if kind == 'c' || kind == 'b' {
            md.rdev()
        } else {
            0
        },
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: (rel != "/").then(|| md.mtime()),
        xattrs: xattrs(path)
            .into_iter()
            .filter(|(k, _)| !internal(k))
            .collect(),
        link_of,
    };
    tree.insert(rel.clone(), node);
    if kind == 'd' {
        let mut names: Vec<_> = fs::read_dir(path)
            .unwrap_or_else(|e| panic!("readdir {path:?}: {e}"))
            .map(|e| e.expect("readdir entry").file_name())
            .collect();
        names.sort();
        for name in names {
            let child = if rel == "/" {
                format!("/{}", name.to_string_lossy())
            } else {
                format!("{rel}/{}", name.to_string_lossy())
            };
            walk(&path.join(&name), child, tree, inodes);
        }
    }
}

/// The differences between two trees, one line each (empty when equal).
pub fn differences(expected: &Tree, actual: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (p, n) in expected {
        match actual.get(p) {
            None => out.push(format!("missing {p}: {n:?}")),
            Some(m) if m != n => out.push(format!("{p}: expected {n:?}, got {m:?}")),
            _ => {}
        }
    }
    for (p, m) in actual {
        if !expected.contains_key(p) {
            out.push(format!("unexpected {p}: {m:?}"));
        }
    }
    out
}
