//! Tests of [`super`].

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::*;
use crate::archive::walk::testutil::*;

fn copy(src: &Path, dst: &Path) -> Result<CopyStats, Error> {
    let (s, d) = (dirfd(src), dirfd(dst));
    copy_tree(s.as_fd(), d.as_fd())
}

fn lmeta(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Asserts that `b` (the copy) has the type, owner, mode, times (ns), rdev and size of `a`
/// (the source, as it was before the copy read it and updated its atime).
fn same_attrs(rel: &str, a: &fs::Metadata, b: &fs::Metadata) {
    assert_eq!(a.file_type(), b.file_type(), "{rel}: type");
    assert_eq!(a.mode(), b.mode(), "{rel}: mode");
    assert_eq!((a.uid(), a.gid()), (b.uid(), b.gid()), "{rel}: owner");
    assert_eq!(a.rdev(), b.rdev(), "{rel}: rdev");
    assert_eq!(
        (a.mtime(), a.mtime_nsec()),
        (b.mtime(), b.mtime_nsec()),
        "{rel}: mtime"
    );
    assert_eq!(
        (a.atime(), a.atime_nsec()),
        (b.atime(), b.atime_nsec()),
        "{rel}: atime"
    );
    assert_eq!(a.len(), b.len(), "{rel}: size");
}

#[test]
fn copies_every_attribute() {
    use rustix::fs::FileType as F;
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();

    // A setuid file with an owner, ns times, and xattrs including a capability (which a
    // chown after setting it would clear).
    file(&src, "bin/ping", b"elf");
    let ping = src.join("bin/ping");
    lchown(&ping, 7, 8);
    chmod(&ping, 0o4711);
    set_xattr(&ping, "user.a", b"1");
    set_xattr(&ping, "trusted.t", b"2");
    set_xattr(&ping, "security.capability", &cap_value());
    set_times(&ping, (1_300_000_000, 5), (1_400_000_000, 987_654_321));
    // Hard links across directories.
    fs::hard_link(&ping, src.join("bin/ping2")).unwrap();
    fs::create_dir(src.join("other")).unwrap();
    fs::hard_link(&ping, src.join("other/ping3")).unwrap();
    // Directories: setgid, sticky, owned, with times set after their contents.
    fs::create_dir(src.join("tmp")).unwrap();
    file(&src, "shared/f", b"f");
    chmod(&src.join("shared"), 0o2750);
    lchown(&src.join("shared"), 5, 6);
    set_xattr(&src.join("shared"), "user.dir", b"d");
    chmod(&src.join("tmp"), 0o1777);
    // Symlinks, one pointing outside the tree, one to a directory outside.
    std::os::unix::fs::symlink("/etc/passwd", src.join("out")).unwrap();
    std::os::unix::fs::symlink("../../../..", src.join("up")).unwrap();
    std::os::unix::fs::symlink("t".repeat(300), src.join("long")).unwrap();
    lchown(&src.join("out"), 9, 10);
    set_times(&src.join("out"), (1_000_000_000, 1), (1_100_000_000, 2));
    // Special files.
    mknod(&src.join("fifo"), F::Fifo, 0o640, 0, 0);
    lchown(&src.join("fifo"), 11, 12);
    mknod(&src.join("null"), F::CharacterDevice, 0o666, 1, 3);
    mknod(&src.join("sda"), F::BlockDevice, 0o660, 8, 1);
    mknod(&src.join("sock"), F::Socket, 0o755, 0, 0);
    set_xattr(&src.join("fifo"), "trusted.f", b"fifo");
    // Content.
    file(&src, "empty", b"");
    let big = noise(3 << 20, 7);
    file(&src, "big", &big);
    // The root itself.
    chmod(&src, 0o751);
    lchown(&src, 12, 13);
    set_xattr(&src, "user.root", b"r");
    // Directory times last, once nothing will touch them any more.
    set_times(&src.join("shared"), (1_200_000_000, 7), (1_250_000_000, 8));
    set_times(&src.join("bin"), (1_200_000_000, 9), (1_260_000_000, 10));
    set_times(&src, (1_200_000_000, 11), (1_270_000_000, 12));

    let rels = [
        "",
        "bin",
        "bin/ping",
        "bin/ping2",
        "other/ping3",
        "tmp",
        "shared",
        "shared/f",
        "out",
        "up",
        "long",
        "fifo",
        "null",
        "sda",
        "sock",
        "empty",
        "big",
    ];
    let before: Vec<fs::Metadata> = rels.iter().map(|r| lmeta(&src.join(r))).collect();

    let stats = copy(&src, &dst).unwrap();

    for (rel, a) in rels.iter().zip(&before) {
        same_attrs(rel, a, &lmeta(&dst.join(rel)));
    }
    assert_eq!(lmeta(&dst).atime(), 1_200_000_000);
    let d = |rel: &str| dst.join(rel);
    assert_eq!(lmeta(&d("bin/ping")).mode() & 0o7777, 0o4711);
    assert_eq!(lmeta(&d("tmp")).mode() & 0o7777, 0o1777);
    assert_eq!(lmeta(&d("shared")).mode() & 0o7777, 0o2750);
    assert_eq!(lmeta(&dst).mode() & 0o7777, 0o751);
    assert_eq!(lmeta(&d("bin/ping")).mtime_nsec(), 987_654_321);

    for (name, value) in [
        ("user.a", &b"1"[..]),
        ("trusted.t", b"2"),
        ("security.capability", &cap_value()),
    ] {
        assert_eq!(
            get_xattr(&d("bin/ping"), name).as_deref(),
            Some(value),
            "{name}"
        );
    }
    assert_eq!(
        get_xattr(&d("shared"), "user.dir").as_deref(),
        Some(&b"d"[..])
    );
    assert_eq!(
        get_xattr(&d("fifo"), "trusted.f").as_deref(),
        Some(&b"fifo"[..])
    );
    assert_eq!(get_xattr(&dst, "user.root").as_deref(), Some(&b"r"[..]));

    // Hard links stay linked, to each other and not to the source.
    let ping_ino = ino(&d("bin/ping"));
    assert_eq!(ino(&d("bin/ping2")), ping_ino);
    assert_eq!(ino(&d("other/ping3")), ping_ino);
    assert_ne!(ino(&ping), ping_ino);
    assert_eq!(lmeta(&d("bin/ping")).nlink(), 3);

    // Symlinks are copied as symlinks, never followed.
    assert!(lmeta(&d("out")).file_type().is_symlink());
    assert_eq!(fs::read_link(d("out")).unwrap(), Path::new("/etc/passwd"));
    assert_eq!(fs::read_link(d("up")).unwrap(), Path::new("../../../.."));
    assert_eq!(
        fs::read_link(d("long")).unwrap(),
        Path::new(&"t".repeat(300))
    );

    assert!(lmeta(&d("fifo")).file_type().is_fifo());
    assert!(lmeta(&d("sock")).file_type().is_socket());
    let null = lmeta(&d("null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert!(lmeta(&d("sda")).file_type().is_block_device());

    assert_eq!(fs::read(d("big")).unwrap(), big);
    assert_eq!(fs::read(d("bin/ping")).unwrap(), b"elf");
    assert_eq!(fs::read(d("empty")).unwrap(), b"");

    // bin other tmp shared: 4 dirs; ping ping2 ping3 f out up long fifo null sda sock
    // empty big: 13 others.
    assert_eq!(stats.entries, 17);
    assert_eq!(stats.bytes, 3 + 1 + (3 << 20));
}

#[test]
fn symlinked_directories_are_not_entered() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, outside) = (
        tmp.path().join("src"),
        tmp.path().join("dst"),
        tmp.path().join("outside"),
    );
    file(&outside, "secret", b"s");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    std::os::unix::fs::symlink(&outside, src.join("l")).unwrap();
    let stats = copy(&src, &dst).unwrap();
    assert_eq!(
        stats,
        CopyStats {
            entries: 1,
            bytes: 0
        }
    );
    assert!(lmeta(&dst.join("l")).file_type().is_symlink());
    assert_eq!(fs::read_link(dst.join("l")).unwrap(), outside);
}

#[test]
fn o_path_roots_are_accepted() {
    use rustix::fs::{Mode, OFlags};
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    file(&src, "a/b", b"1");
    fs::create_dir(&dst).unwrap();
    set_xattr(&src, "user.root", b"r");
    let path_fd = |p: &Path| {
        rustix::fs::open(
            p,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    };
    let (s, d) = (path_fd(&src), path_fd(&dst));
    let stats = copy_tree(s.as_fd(), d.as_fd()).unwrap();
    assert_eq!(
        stats,
        CopyStats {
            entries: 2,
            bytes: 1
        }
    );
    assert_eq!(get_xattr(&dst, "user.root").as_deref(), Some(&b"r"[..]));
}

#[test]
fn destination_must_be_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    file(&src, "a", b"1");
    file(&dst, "b", b"2");
    assert!(copy(&src, &dst).is_err());
}

#[test]
fn copying_into_itself_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    file(&src, "a", b"1");
    fs::create_dir(src.join("sub")).unwrap();
    let err = copy(&src, &src.join("sub")).unwrap_err();
    assert!(err.to_string().contains("inside the source"), "{err}");
}

#[test]
fn deep_trees() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&dst).unwrap();
    let mut rel = std::path::PathBuf::new();
    for _ in 0..300 {
        rel.push("d");
    }
    file(&src, &rel.join("f").to_string_lossy(), b"deep");
    let stats = copy(&src, &dst).unwrap();
    assert_eq!(stats.entries, 301);
    assert_eq!(fs::read(dst.join(&rel).join("f")).unwrap(), b"deep");
}

#[test]
fn read_write_fallback_copies_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let data = noise((1 << 20) + 123, 9);
    fs::write(&a, &data).unwrap();
    let mut copier = Copier {
        stats: CopyStats::default(),
        links: HashMap::new(),
        link_dirs: DirCursor::new(rustix::fs::CWD),
        reflink: false,
        copy_range: false,
        buf: vec![0u8; 4096],
        dst_root: (0, 0),
    };
    let (src, dst) = (File::open(&a).unwrap(), File::create(&b).unwrap());
    let n = copier.copy_data(&src, &dst, data.len() as u64).unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(fs::read(&b).unwrap(), data);
}
