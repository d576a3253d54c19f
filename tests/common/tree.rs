//! Reading and writing inside a layer path, and whole-tree snapshots for equality checks.
//!
//! Modes are always set explicitly with `chmod` after creating (the umask is process-global
//! and tests run in parallel threads).

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// `chmod` (follows symlinks; never call it on one).
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, path.display()));
}

/// `lchown`.
pub fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {uid}:{gid} {}: {e}", path.display()));
}

/// Writes `content` to `root/rel` (parents created with mode 0755), then chmods it to `mode`.
pub fn write_file(root: &Path, rel: &str, content: &[u8], mode: u32) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        if !parent.exists() {
            mkdir_all(
                root,
                parent.strip_prefix(root).unwrap().to_str().unwrap(),
                0o755,
            );
        }
    }
    fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chmod(&path, mode);
}

/// Writes a file and sets its owner (chown first, then chmod, so setuid bits survive).
pub fn write_file_owned(root: &Path, rel: &str, content: &[u8], mode: u32, uid: u32, gid: u32) {
    write_file(root, rel, content, mode);
    let path = root.join(rel);
    chown(&path, uid, gid);
    chmod(&path, mode);
}

/// Reads `root/rel`.
pub fn read_file(root: &Path, rel: &str) -> Vec<u8> {
    let path = root.join(rel);
    fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `mkdir -p root/rel`, each created directory chmod-ed to `mode`.
pub fn mkdir_all(root: &Path, rel: &str, mode: u32) {
    let mut cur = root.to_path_buf();
    for comp in Path::new(rel).components() {
        cur.push(comp);
        match fs::create_dir(&cur) {
            Ok(()) => chmod(&cur, mode),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("mkdir {}: {e}", cur.display()),
        }
    }
}

/// Creates directory `root/rel` with `mode` and owner.
pub fn mkdir_owned(root: &Path, rel: &str, mode: u32, uid: u32, gid: u32) {
    let path = root.join(rel);
    fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    chown(&path, uid, gid);
    chmod(&path, mode);
}

/// `rm -rf root/rel` (must exist).
pub fn remove_all(root: &Path, rel: &str) {
    let path = root.join(rel);
    let md = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let r = if md.is_dir() {
        fs::remove_dir_all(&path)
    } else {
        fs::remove_file(&path)
    };
    r.unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
}

/// Asserts `root/rel` does not exist (ENOENT on lstat).
pub fn assert_absent(root: &Path, rel: &str) {
    let path = root.join(rel);
    match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => panic!("lstat {}: expected ENOENT, got {e}", path.display()),
        Ok(md) => panic!(
            "{} should not exist, found {:?}",
            path.display(),
            md.file_type()
        ),
    }
}

/// `symlink target root/rel`.
pub fn symlink(root: &Path, rel: &str, target: &str) {
    let path = root.join(rel);
    std::os::unix::fs::symlink(target, &path)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", path.display()));
}

/// `ln root/target root/rel`.
pub fn hardlink(root: &Path, rel: &str, target: &str) {
    fs::hard_link(root.join(target), root.join(rel))
        .unwrap_or_else(|e| panic!("link {rel} -> {target}: {e}"));
}

/// `mknod` (fifo, char or block device); mode includes the file type bits.
pub fn mknod(root: &Path, rel: &str, mode: u32, major: u32, minor: u32) {
    let path = root.join(rel);
    let c = cpath(&path);
    // SAFETY: valid NUL-terminated path; mknod does not retain it.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode, libc::makedev(major, minor)) };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
    chmod(&path, mode & 0o7777);
}

/// Sets atime and mtime (whole seconds) without following a final symlink.
pub fn set_mtime(path: &Path, secs: i64) {
    let c = cpath(path);
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    // SAFETY: valid path and a two-element timespec array, as utimensat requires.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        rc,
        0,
        "utimensat {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
}

/// `lsetxattr`.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let c = cpath(path);
    let n = CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a value buffer of the given length.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "lsetxattr {name} on {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
}

/// All extended attributes of `path` (not following symlinks).
pub fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = cpath(path);
    let mut out = BTreeMap::new();
    // SAFETY: size query with a null buffer.
    let len = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if len <= 0 {
        return out;
    }
    let mut names = vec![0u8; len as usize];
    // SAFETY: the buffer has the size passed.
    let len = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len < 0 {
        panic!(
            "llistxattr {}: {}",
            path.display(),
            io::Error::last_os_error()
        );
    }
    names.truncate(len as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap();
        // SAFETY: size query with a null buffer.
        let vlen = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if vlen < 0 {
            continue;
        }
        let mut value = vec![0u8; vlen as usize];
        // SAFETY: the buffer has the size passed.
        let vlen = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if vlen < 0 {
            continue;
        }
        value.truncate(vlen as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), value);
    }
    out
}

/// Whether an xattr is storage-internal (hidden from comparisons).
fn internal_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.")
        || name.starts_with("user.overlay.")
        || name == "security.selinux"
}

/// Regular-file bytes with a compact `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Content(pub Vec<u8>);

/// FNV-1a 64 of `data` (for short, comparable descriptions).
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len().min(24);
        write!(
            f,
            "{} bytes, fnv {:016x}, starts {:?}",
            self.0.len(),
            fnv64(&self.0),
            String::from_utf8_lossy(&self.0[..n])
        )
    }
}

/// File type (and what identifies its payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Content),
    Symlink(PathBuf),
    Fifo,
    CharDev(u64),
    BlockDev(u64),
    Socket,
}

/// One entry of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// mtime in whole seconds, regular files only (directory and symlink times are not
    /// compared).
    pub mtime: Option<i64>,
    /// Extended attributes except storage-internal ones (`trusted.overlay.*`,
    /// `user.overlay.*`, `security.selinux`).
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// For the second and later names of one inode: the first name (in path order).
    pub hardlink_of: Option<String>,
}

/// A whole tree: `/` for the root, `/a/b` for entries. `lost+found` at the top is ignored
/// (like graphtest's `readDir`).
pub type Tree = BTreeMap<String, Node>;

/// Snapshot of everything under `root`, never following symlinks.
pub fn snapshot(root: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    walk(root, "/".to_string(), &mut tree, &mut inodes, true);
    tree
}

fn walk(
    path: &Path,
    rel: String,
    tree: &mut Tree,
    inodes: &mut HashMap<(u64, u64), String>,
    top: bool,
) {
    let md = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File(Content(
            fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
        ))
    } else if ft.is_symlink() {
        Kind::Symlink(fs::read_link(path).unwrap())
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() {
        Kind::CharDev(md.rdev())
    } else if ft.is_block_device() {
        Kind::BlockDev(md.rdev())
    } else {
        Kind::Socket
    };
    let hardlink_of = if !ft.is_dir() && md.nlink() > 1 {
        match inodes.get(&(md.dev(), md.ino())) {
            Some(first) => Some(first.clone()),
            None => {
                inodes.insert((md.dev(), md.ino()), rel.clone());
                None
            }
        }
    } else {
        None
    };
    let node = Node {
        mtime: ft.is_file().then(|| md.mtime()),
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        xattrs: xattrs(path)
            .into_iter()
            .filter(|(k, _)| !internal_xattr(k))
            .collect(),
        hardlink_of,
    };
    tree.insert(rel.clone(), node);
    if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(path)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", path.display()))
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            if top && name == "lost+found" {
                continue;
            }
            let child_rel = if rel == "/" {
                format!("/{}", name.to_string_lossy())
            } else {
                format!("{rel}/{}", name.to_string_lossy())
            };
            walk(&path.join(&name), child_rel, tree, inodes, false);
        }
    }
}

/// Asserts two snapshots are equal, listing the differing paths (not two huge dumps).
pub fn assert_trees_eq(expected: &Tree, actual: &Tree, what: &str) {
    let mut diffs = Vec::new();
    for (p, n) in expected {
        match actual.get(p) {
            None => diffs.push(format!("missing {p}: {n:?}")),
            Some(m) if m != n => diffs.push(format!(
                "differs {p}:\n    expected {n:?}\n    actual   {m:?}"
            )),
            _ => {}
        }
    }
    for (p, m) in actual {
        if !expected.contains_key(p) {
            diffs.push(format!("unexpected {p}: {m:?}"));
        }
    }
    if !diffs.is_empty() {
        let total = diffs.len();
        diffs.truncate(40);
        panic!(
            "{what}: trees differ in {total} place(s):\n  {}",
            diffs.join("\n  ")
        );
    }
}

/// Top-level names of a directory, ignoring `lost+found`, sorted.
pub fn read_dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lost+found")
        .collect();
    v.sort();
    v
}

/// The raw OS error of an I/O result that must have failed.
pub fn expect_errno<T: fmt::Debug>(r: io::Result<T>, what: &str) -> i32 {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: error without errno: {e}")),
    }
}
