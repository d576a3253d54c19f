//! Random trees, built inside a layer's mounted path: files (empty, small, > 1 MiB, holey),
//! directories, symlinks (to entries, dangling, absolute, long), hard links, fifos, character
//! devices; modes with setuid/setgid/sticky, owners beyond the ustar range, mtimes with
//! nanoseconds (also negative and past the 12-digit octal range), `user.*` and `trusted.*`
//! extended attributes.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use proptest::prelude::*;

use crate::common::graph::random_content;
use crate::common::tree;

/// Content of a regular file.
#[derive(Debug, Clone)]
pub enum Content {
    Empty,
    Small(Vec<u8>),
    /// `len` pseudo-random bytes from `seed` (over 1 MiB).
    Big {
        len: usize,
        seed: u64,
    },
    /// Data at the start and after a 2 MiB hole.
    Holey {
        seed: u64,
    },
}

/// What an entry is.
#[derive(Debug, Clone)]
pub enum What {
    Dir,
    File(Content),
    Symlink(Target),
    /// A second name for an earlier regular file (the n-th, modulo their number); a plain
    /// empty file if there is none yet.
    Hardlink(usize),
    Fifo,
    CharDev(u32, u32),
}

/// A symlink target.
#[derive(Debug, Clone)]
pub enum Target {
    /// The n-th earlier entry (relative from the root), or `.` if none.
    Entry(usize),
    Verbatim(String),
}

/// Metadata of an entry (hard links share their target's).
#[derive(Debug, Clone)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// One entry: under the n-th directory made so far (0: the root).
#[derive(Debug, Clone)]
pub struct Entry {
    pub parent: usize,
    pub name: String,
    pub what: What,
    pub meta: Meta,
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        4 => Just(Content::Empty),
        20 => prop::collection::vec(any::<u8>(), 1..300).prop_map(Content::Small),
        1 => ((1usize << 20)..(1usize << 20) + 70_000, any::<u64>())
            .prop_map(|(len, seed)| Content::Big { len, seed }),
        1 => any::<u64>().prop_map(|seed| Content::Holey { seed }),
    ]
}

fn what() -> impl Strategy<Value = What> {
    prop_oneof![
        6 => Just(What::Dir),
        10 => content().prop_map(What::File),
        2 => (0usize..50).prop_map(|i| What::Symlink(Target::Entry(i))),
        2 => prop::sample::select(vec![
            "dangling/nowhere", "/etc/passwd", "../../../outside", "..", "/",
            "a target with spaces", "tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt/tttttttttttttttttttttttttttttttttttttttttttttttttt/long",
        ])
        .prop_map(|t| What::Symlink(Target::Verbatim(t.to_string()))),
        3 => (0usize..50).prop_map(What::Hardlink),
        1 => Just(What::Fifo),
        1 => (1u32..300, 0u32..3000).prop_map(|(a, b)| What::CharDev(a, b)),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z]{1,6}",
        2 => "[a-zA-Z0-9 ._,=+üé€-]{1,12}",
        1 => (90usize..140).prop_map(|n| "L".repeat(n)),
    ]
}

fn meta() -> impl Strategy<Value = Meta> {
    let mode = prop::sample::select(vec![
        0o644u32, 0o600, 0o755, 0o444, 0o4755, 0o2755, 0o6711, 0o1777, 0o7777, 0o000,
    ]);
    let id = prop::sample::select(vec![
        0u32,
        0,
        1,
        1000,
        65534,
        2_097_151,
        2_097_152,
        4_000_000_000,
    ]);
    let secs = prop::sample::select(vec![
        1_600_000_000i64,
        0,
        1,
        1_000_000_000,
        2_147_483_648,
        9_000_000_000,
        -1,
        -100_000_000,
    ]);
    let nsec = prop_oneof![Just(0i64), 0i64..1_000_000_000];
    let xattr = (
        prop::sample::select(vec!["user.a", "user.mime_type", "trusted.t", "trusted.x.y"]),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(k, v)| (k.to_string(), v));
    (
        mode,
        id.clone(),
        id,
        secs,
        nsec,
        prop::collection::vec(xattr, 0..3),
    )
        .prop_map(|(mode, uid, gid, s, ns, xattrs)| Meta {
            mode,
            uid,
            gid,
            mtime: (s, ns),
            xattrs,
        })
}

/// A random tree of 1 to 24 entries.
pub fn spec() -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::vec(
        (0usize..8, name(), what(), meta()).prop_map(|(parent, name, what, meta)| Entry {
            parent,
            name,
            what,
            meta,
        }),
        1..24,
    )
}

fn set_times(path: &Path, (secs, nsec): (i64, i64)) {
    use rustix::fs::{utimensat, AtFlags, Timespec, Timestamps, CWD};
    let ts = Timespec {
        tv_sec: secs,
        tv_nsec: nsec,
    };
    let times = Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .unwrap_or_else(|e| panic!("utimensat {path:?}: {e}"));
}

fn write_content(path: &Path, c: &Content) {
    match c {
        Content::Empty => fs::write(path, b"").expect("write"),
        Content::Small(d) => fs::write(path, d).expect("write"),
        Content::Big { len, seed } => fs::write(path, random_content(*len, *seed)).expect("write"),
        Content::Holey { seed } => {
            let mut f = fs::File::create(path).expect("create");
            f.write_all(&random_content(5000, *seed)).expect("write");
            f.seek(SeekFrom::Start(2 << 20)).expect("seek");
            f.write_all(&random_content(3000, seed ^ 1)).expect("write");
        }
    }
}

/// Builds `spec` under `root` (which must be empty); returns the names it made.
pub fn build(root: &Path, spec: &[Entry]) -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    let mut files: Vec<String> = Vec::new();
    let mut made: Vec<(String, &Entry, bool)> = Vec::new(); // (path, entry, owns its metadata)
    for (i, e) in spec.iter().enumerate() {
        let parent = match e.parent % (dirs.len() + 1) {
            0 => String::new(),
            n => format!("{}/", dirs[n - 1]),
        };
        let rel = format!("{parent}{}{i}", e.name);
        let path = root.join(&rel);
        let mut owns = true;
        match &e.what {
            What::Dir => {
                fs::create_dir(&path).expect("mkdir");
                dirs.push(rel.clone());
            }
            What::File(c) => {
                write_content(&path, c);
                files.push(rel.clone());
            }
            What::Symlink(t) => {
                let target = match t {
                    Target::Verbatim(s) => s.clone(),
                    Target::Entry(_) if made.is_empty() => ".".into(),
                    Target::Entry(n) => made[n % made.len()].0.clone(),
                };
                std::os::unix::fs::symlink(&target, &path).expect("symlink");
            }
            What::Hardlink(n) if !files.is_empty() => {
                fs::hard_link(root.join(&files[n % files.len()]), &path).expect("link");
                owns = false;
            }
            What::Hardlink(_) => {
                fs::write(&path, b"").expect("write");
                files.push(rel.clone());
            }
            What::Fifo => tree::mknod(root, &rel, libc::S_IFIFO | 0o644, 0, 0),
            What::CharDev(a, b) => tree::mknod(root, &rel, libc::S_IFCHR | 0o644, *a, *b),
        }
        made.push((rel, e, owns));
    }
    for (rel, e, owns) in &made {
        if !owns {
            continue;
        }
        let path = root.join(rel);
        let symlink = matches!(e.what, What::Symlink(_));
        tree::chown(&path, e.meta.uid, e.meta.gid);
        if !symlink {
            tree::chmod(&path, e.meta.mode);
        }
        let special = !matches!(e.what, What::Dir | What::File(_) | What::Hardlink(_));
        for (k, v) in &e.meta.xattrs {
            // The kernel refuses user.* attributes on symlinks and special files.
            if special && k.starts_with("user.") {
                continue;
            }
            tree::set_xattr(&path, k, v);
        }
    }
    for (rel, e, owns) in &made {
        if *owns {
            set_times(&root.join(rel), e.meta.mtime);
        }
    }
    made.into_iter().map(|(r, _, _)| r).collect()
}
