//! The victim-directory oracle (after moby's `testBreakout`), run through the CLI.
//!
//! Every [`Env`] has a store in its temporary directory and, beside the store root, a victim
//! directory `root-victim/` (a name the store root is a prefix of) and a `tmp/victim-file`,
//! all holding a unique marker in their bytes, with known modes, owners, xattrs and times
//! (atimes in the future, so reads cannot move them). An apply under test must leave:
//!
//! * everything outside the target layer exactly as it was: the victim trees (content, mode,
//!   owner, size, link count, inode, mtime, ctime, atime, xattrs, symlink targets), the
//!   other layers of the store (the same, atimes aside), the names beside the store, and no
//!   file named after the case's unique escape name anywhere but in the target layer;
//! * no file inside the target layer (its directory, and its merged view through `get`)
//!   holding the victim's marker;
//! * and either a success whose result the case pins, or a failure (exit 1, `strata: ...`)
//!   naming the entry and the rule, after which the layer directory is bit for bit what it
//!   was, `ls` unchanged, `exists` true and `staging/` empty.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::common::tree::xattrs;
use crate::common::{assert_mentions, Store};

thread_local! {
    /// Whether [`Env`]s made on this thread apply with `--confined-apply`.
    static CONFINED: Cell<bool> = const { Cell::new(false) };
}

/// Makes the [`Env`]s this thread creates from now on apply through the confined helper.
pub fn use_confined_apply() {
    CONFINED.with(|c| c.set(true));
}

/// The target layer's id.
pub const TARGET: &str = "t";

/// Rule texts as the CLI prints them.
pub mod rule {
    pub const ESCAPE: &str = "path escapes the layer root";
    pub const BAD_NAME: &str = "invalid name";
    pub const ROOT_TYPE: &str = "the layer root must stay a directory";
    pub const WHITEOUT: &str = "invalid whiteout";
    pub const HARDLINK: &str = "invalid hard link";
    pub const XATTR: &str = "forbidden extended attribute";
    pub const DEVICE: &str = "invalid device";
    pub const NOT_DIR: &str = "not a directory";
    pub const LIMIT: &str = "limit exceeded";
    pub const FORMAT: &str = "malformed";
}

/// What lstat and a read say about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    mode: u32,
    ino: u64,
    uid: u32,
    gid: u32,
    nlink: u64,
    size: u64,
    rdev: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    atime: Option<(i64, i64)>,
    xattrs: BTreeMap<String, Vec<u8>>,
    content: Option<u64>,
    link: Option<PathBuf>,
}

/// Opens a regular file for reading without following it or touching its atime.
fn open_quiet(p: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME | libc::O_NOFOLLOW)
        .open(p)
}

/// The data of a regular file (only its data regions, at most 64 MiB, so sparse giants are
/// cheap).
fn data_of(p: &Path) -> Vec<u8> {
    let mut f = open_quiet(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let len = f.metadata().unwrap().len();
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < len && out.len() < 64 << 20 {
        // SAFETY: lseek on an fd we own; no memory is involved.
        let data = unsafe {
            libc::lseek(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                pos as i64,
                libc::SEEK_DATA,
            )
        };
        if data < 0 {
            break;
        }
        // SAFETY: as above.
        let hole =
            unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&f), data, libc::SEEK_HOLE) };
        let end = if hole < 0 { len } else { hole as u64 };
        f.seek(SeekFrom::Start(data as u64)).unwrap();
        let want = (end - data as u64).min((64 << 20) as u64);
        let mut buf = Vec::new();
        (&mut f).take(want).read_to_end(&mut buf).unwrap();
        out.extend_from_slice(&buf);
        pos = end.max(data as u64 + 1);
    }
    out
}

fn fnv(data: &[u8]) -> u64 {
    crate::common::tree::fnv64(data)
}

/// Snapshot of `dir` and everything below it, not following symlinks.
pub fn snap(dir: &Path, atime: bool) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    walk(dir, dir, atime, &mut out);
    out
}

fn walk(base: &Path, p: &Path, atime: bool, out: &mut BTreeMap<PathBuf, Node>) {
    let md = match fs::symlink_metadata(p) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => panic!("lstat {}: {e}", p.display()),
    };
    let ft = md.file_type();
    let node = Node {
        mode: md.mode(),
        ino: md.ino(),
        uid: md.uid(),
        gid: md.gid(),
        nlink: md.nlink(),
        size: md.size(),
        rdev: md.rdev(),
        mtime: (md.mtime(), md.mtime_nsec()),
        ctime: (md.ctime(), md.ctime_nsec()),
        atime: atime.then(|| (md.atime(), md.atime_nsec())),
        xattrs: xattrs(p),
        content: ft.is_file().then(|| fnv(&data_of(p))),
        link: ft.is_symlink().then(|| fs::read_link(p).unwrap()),
    };
    out.insert(p.strip_prefix(base).unwrap().to_path_buf(), node);
    if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            walk(base, &p.join(n), atime, out);
        }
    }
}

/// Panics with the differing paths of two snapshots.
pub fn assert_same(before: &BTreeMap<PathBuf, Node>, after: &BTreeMap<PathBuf, Node>, what: &str) {
    let mut diffs = Vec::new();
    for (p, n) in before {
        match after.get(p) {
            None => diffs.push(format!("lost {}", p.display())),
            Some(m) if m != n => diffs.push(format!(
                "changed {}:\n    before {n:?}\n    after  {m:?}",
                p.display()
            )),
            _ => {}
        }
    }
    for p in after.keys() {
        if !before.contains_key(p) {
            diffs.push(format!("gained {}", p.display()));
        }
    }
    assert!(diffs.is_empty(), "{what}:\n  {}", diffs.join("\n  "));
}

/// Whether `hay` contains `needle`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Everything that must not change: victim trees, other layers, names beside the store.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Outside {
    victim: BTreeMap<PathBuf, Node>,
    tmp: BTreeMap<PathBuf, Node>,
    layers: BTreeMap<PathBuf, Node>,
    beside: Vec<String>,
}

/// A store with a victim beside it and a target layer to apply to.
pub struct Env {
    pub s: Store,
    /// `<tmp>/root-victim`: a sibling of the store root sharing its prefix.
    pub victim: PathBuf,
    /// `<tmp>/tmp/victim-file`, for absolute paths to a host file.
    pub victim_file: PathBuf,
    /// Bytes every victim file contains.
    pub marker: Vec<u8>,
    /// A file name no one else uses, for `../` escapes.
    pub unique: String,
    created: Cell<bool>,
    /// Apply with `--confined-apply`.
    confined: bool,
}

fn set_times(p: &Path, atime: i64, mtime: i64) {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: atime,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid path and a two-element timespec array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", p.display());
}

impl Env {
    /// A store for `backend` with the victim beside it; `None` when the backend cannot be
    /// tested here.
    pub fn new(backend: &str) -> Option<Env> {
        let s = Store::new(backend)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let marker = format!("VICTIM-{}-{nanos:x}-BYTES", std::process::id()).into_bytes();
        let unique = format!("strata-escape-{}-{nanos:x}", std::process::id());
        let victim = s.scratch().join("root-victim");
        let tmp = s.scratch().join("tmp");
        fs::create_dir_all(victim.join("sub")).unwrap();
        fs::create_dir_all(victim.join("empty")).unwrap();
        fs::create_dir(&tmp).unwrap();
        let file = |p: &Path, what: &str, mode: u32| {
            let mut b = marker.clone();
            b.extend_from_slice(what.as_bytes());
            fs::write(p, b).unwrap();
            crate::common::tree::chmod(p, mode);
        };
        file(&victim.join("hello"), "hello", 0o640);
        std::os::unix::fs::lchown(victim.join("hello"), Some(1234), Some(5678)).unwrap();
        crate::common::tree::chmod(&victim.join("hello"), 0o640);
        crate::common::tree::set_xattr(&victim.join("hello"), "user.victim", b"v");
        file(&victim.join("sub/deep"), "deep", 0o600);
        std::os::unix::fs::symlink("hello", victim.join("link")).unwrap();
        let victim_file = tmp.join("victim-file");
        file(&victim_file, "tmpfile", 0o644);
        let future = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 2 * 86400;
        for p in [
            victim.join("hello"),
            victim.join("sub/deep"),
            victim.join("link"),
            victim.join("sub"),
            victim.join("empty"),
            victim.clone(),
            victim_file.clone(),
            tmp.clone(),
        ] {
            set_times(&p, future, 1_500_000_000);
        }
        Some(Env {
            s,
            victim,
            victim_file,
            marker,
            unique,
            created: Cell::new(false),
            confined: CONFINED.with(Cell::get),
        })
    }

    /// The victim directory's absolute path.
    pub fn v(&self) -> String {
        self.victim.to_str().unwrap().to_string()
    }

    /// The victim directory's path relative to `/` (where an in-root resolution puts it).
    pub fn v_rel(&self) -> String {
        self.v().trim_start_matches('/').to_string()
    }

    /// The target layer without a parent.
    pub fn plain(&self) -> &Self {
        assert!(!self.created.replace(true), "target created twice");
        self.s.create(TARGET, None);
        self
    }

    /// Parent layers applied from `tars` (bottom first), the target a child of the last.
    pub fn lowers(&self, tars: &[Vec<u8>]) -> &Self {
        assert!(!self.created.replace(true), "target created twice");
        let mut parent: Option<String> = None;
        for (i, tar) in tars.iter().enumerate() {
            let id = format!("lower{i}");
            self.s.create(&id, parent.as_deref());
            self.s.apply_diff(&id, None, tar);
            parent = Some(id);
        }
        self.s.create(TARGET, parent.as_deref());
        self
    }

    /// One parent layer applied from `tar`.
    pub fn lower(&self, tar: Vec<u8>) -> &Self {
        self.lowers(&[tar])
    }

    fn ensure_target(&self) {
        if !self.created.get() {
            self.plain();
        }
    }

    fn target_dir(&self) -> PathBuf {
        self.s.layers_dir().join(TARGET)
    }

    /// Snapshot of everything an apply must not change.
    pub(crate) fn outside(&self) -> Outside {
        let mut layers = BTreeMap::new();
        for id in self.s.layer_dir_names() {
            if id != TARGET {
                let dir = self.s.layers_dir().join(&id);
                for (p, n) in snap(&dir, false) {
                    layers.insert(Path::new(&id).join(p), n);
                }
            }
        }
        let mut beside: Vec<String> = fs::read_dir(self.s.scratch())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        beside.sort();
        Outside {
            victim: snap(&self.victim, true),
            tmp: snap(&self.s.scratch().join("tmp"), true),
            layers,
            beside,
        }
    }

    /// Panics if anything [`Env::outside`] covers changed since `before`.
    pub(crate) fn assert_outside(&self, before: &Outside, what: &str) {
        let after = self.outside();
        assert_same(
            &before.victim,
            &after.victim,
            &format!("{what}: victim directory changed"),
        );
        assert_same(
            &before.tmp,
            &after.tmp,
            &format!("{what}: victim file changed"),
        );
        assert_same(
            &before.layers,
            &after.layers,
            &format!("{what}: another layer changed"),
        );
        assert_eq!(
            before.beside, after.beside,
            "{what}: names beside the store changed"
        );
        let mut found = Vec::new();
        find_named(self.s.scratch(), &self.unique, &mut found);
        let own = self.target_dir();
        found.retain(|p| !p.starts_with(&own));
        let tmp_parent = self.s.scratch().parent().unwrap().to_path_buf();
        for d in [Path::new("/"), Path::new("/tmp"), tmp_parent.as_path()] {
            if fs::symlink_metadata(d.join(&self.unique)).is_ok() {
                found.push(d.join(&self.unique));
            }
        }
        assert!(found.is_empty(), "{what}: escaped entries: {found:?}");
    }

    /// Asserts no regular file under `dir` holds the victim's marker.
    pub(crate) fn assert_no_marker(&self, dir: &Path, what: &str) {
        for (p, _) in snap(dir, false) {
            let full = dir.join(&p);
            let md = fs::symlink_metadata(&full).unwrap();
            if md.file_type().is_file() && contains(&data_of(&full), &self.marker) {
                panic!("{what}: {} holds the victim's bytes", full.display());
            }
        }
    }

    fn run(&self, args: &[&str], tar: &[u8]) -> crate::common::Out {
        self.ensure_target();
        let mut all = vec!["apply-diff", TARGET];
        if self.confined {
            all.push("--confined-apply");
        }
        all.extend_from_slice(args);
        crate::common::run_command(self.s.command(all), Some(tar))
    }

    /// Applies `tar`; it must succeed, `check` runs on the merged view, and the oracle holds.
    pub fn apply_ok(&self, tar: &[u8], check: impl FnOnce(&Path)) {
        self.apply_ok_args(&[], tar, check)
    }

    /// [`Env::apply_ok`] with extra `apply-diff` arguments.
    pub fn apply_ok_args(&self, args: &[&str], tar: &[u8], check: impl FnOnce(&Path)) {
        self.ensure_target();
        let before = self.outside();
        let out = self.run(args, tar);
        out.expect_code(0);
        self.assert_outside(&before, "after a successful apply");
        self.assert_no_marker(&self.target_dir(), "layer directory");
        assert!(self.s.exists(TARGET));
        assert!(self.s.staging_names().is_empty(), "staging leftovers");
        self.s.with_layer(TARGET, |root| {
            self.assert_no_marker(root, "merged view");
            check(root);
        });
        self.assert_outside(&before, "after get/put");
    }

    /// Applies `tar`; it must fail naming `entry` (when given) and `rule`, leaving the layer
    /// exactly as it was. Returns stderr.
    pub fn apply_err(&self, tar: &[u8], entry: Option<&str>, rule: &str) -> String {
        self.apply_err_args(&[], tar, entry, rule)
    }

    /// [`Env::apply_err`] with extra `apply-diff` arguments.
    pub fn apply_err_args(
        &self,
        args: &[&str],
        tar: &[u8],
        entry: Option<&str>,
        rule: &str,
    ) -> String {
        self.ensure_target();
        let before = self.outside();
        let layer = snap(&self.target_dir(), false);
        let state = self.s.state();
        let out = self.run(args, tar);
        let err = out.expect_failure();
        if let Some(e) = entry {
            assert_mentions(&err, &format!("{e:?}"), "the failing entry");
        }
        assert_mentions(&err, rule, "the broken rule");
        self.assert_outside(&before, "after a failed apply");
        assert_same(
            &layer,
            &snap(&self.target_dir(), false),
            "a failed apply changed the layer",
        );
        self.s.assert_state(&state, "after a failed apply");
        assert!(self.s.exists(TARGET));
        assert!(
            self.s.staging_names().is_empty(),
            "staging leftovers after a failure"
        );
        err
    }
}

/// Every path named `name` at or below `dir`, not following symlinks.
fn find_named(dir: &Path, name: &str, found: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name() == name {
            found.push(p.clone());
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            find_named(&p, name, found);
        }
    }
}

// ---- checks on a merged view --------------------------------------------------------------

/// `root/rel` is a regular file holding `data`.
pub fn file(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert!(
        md.file_type().is_file(),
        "{rel} should be a regular file: {md:?}"
    );
    assert_eq!(fs::read(&p).unwrap(), data, "content of {rel}");
}

/// `root/rel` is a directory.
pub fn dir(root: &Path, rel: &str) {
    let md = fs::symlink_metadata(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert!(md.is_dir(), "{rel} should be a directory");
}

/// `root/rel` is a symlink to `target`.
pub fn symlink(root: &Path, rel: &str, target: &str) {
    let l = fs::read_link(root.join(rel)).unwrap_or_else(|e| panic!("readlink {rel}: {e}"));
    assert_eq!(l, Path::new(target), "target of {rel}");
}

/// `root/rel` does not exist.
pub fn absent(root: &Path, rel: &str) {
    crate::common::tree::assert_absent(root, rel)
}

/// The sorted names in `root/rel`.
pub fn names(root: &Path, rel: &str) -> Vec<String> {
    crate::common::tree::read_dir_names(&root.join(rel))
}
