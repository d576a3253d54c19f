//! Unit tests for the edges the breakout suite found: opaque markers at the root and over
//! kept directories, directory entries over directories, replaced directories in the times
//! pass, user xattrs on special files, and declared sizes beyond the byte limit.

use super::*;

#[test]
fn overlay_root_opaque_whites_out_every_lower_name() {
    let (e, lower, diff) = overlay_env();
    std::os::unix::fs::symlink("/", lower.join("slash")).unwrap();
    let mut t = T::new();
    t.dir("etc/")
        .file("kept", b"k")
        .file(".wh..wh..opq", b"")
        .file("after", b"a");
    e.apply_with(&diff, &t.bytes(), &overlay_opts(&lower))
        .unwrap();
    for name in ["bin", "usr", "slash"] {
        assert!(is_whiteout_at(&diff.join(name)), "{name} whited out");
    }
    // A directory this layer wrote before the marker stays, without the lower's content.
    let fd = fsutil::open_dir(&diff.join("etc")).unwrap();
    assert!(
        tree::is_opaque(fd.as_fd()),
        "a kept root directory is opaque"
    );
    assert_eq!(fs::read(diff.join("kept")).unwrap(), b"k");
    assert_eq!(fs::read(diff.join("after")).unwrap(), b"a");
    let root = fsutil::open_dir(&diff).unwrap();
    assert!(
        !tree::is_opaque(root.as_fd()),
        "no xattr the kernel would ignore"
    );
}

#[test]
fn opaque_prunes_inside_directories_it_keeps() {
    let e = Env::new();
    fs::create_dir_all(e.root.join("d/sub")).unwrap();
    fs::write(e.root.join("d/sub/old"), b"old").unwrap();
    fs::write(e.root.join("d/gone"), b"gone").unwrap();
    let mut t = T::new();
    t.dir("d/sub/")
        .file("d/sub/new", b"new")
        .file("d/.wh..wh..opq", b"");
    e.apply(&t.bytes()).unwrap();
    assert!(!e.root.join("d/gone").exists());
    assert!(
        !e.root.join("d/sub/old").exists(),
        "kept directory pruned too"
    );
    assert_eq!(fs::read(e.root.join("d/sub/new")).unwrap(), b"new");
}

#[test]
fn directory_over_directory_ends_with_exactly_its_xattrs() {
    let e = Env::new();
    fs::create_dir(e.root.join("d")).unwrap();
    rustix::fs::setxattr(e.root.join("d"), "user.old", b"1", XattrFlags::empty()).unwrap();
    let mut t = T::new();
    t.pax(&[("SCHILY.xattr.user.new", b"2")]).dir("d/");
    e.apply(&t.bytes()).unwrap();
    let fd = fsutil::open_dir(&e.root.join("d")).unwrap();
    let names: Vec<_> = fsmeta::read_fd(fd.as_fd())
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(names, vec![b"user.new".to_vec()]);
}

#[test]
fn times_pass_skips_directories_replaced_by_files() {
    let e = Env::new();
    let mut t = T::new();
    t.dir("d/")
        .dir("d/sub/")
        .dir("d/sub/deeper/")
        .file("d", b"file now");
    e.apply(&t.bytes()).unwrap();
    assert_eq!(fs::read(e.root.join("d")).unwrap(), b"file now");
}

#[test]
fn user_xattrs_on_special_files_are_dropped() {
    let e = Env::new();
    let mut t = T::new();
    t.pax(&[("SCHILY.xattr.user.tag", b"1")])
        .raw("fifo", tar::EntryType::Fifo, 0o644, None, b"");
    e.apply(&t.bytes()).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(e.root.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn declared_sizes_count_against_the_byte_limit() {
    let e = Env::new();
    let mut t = T::new();
    t.file("a", &[1u8; 3000]);
    let opts = ApplyOptions {
        limits: Limits {
            max_bytes: 1 << 20,
            ..Limits::default()
        },
        ..ApplyOptions::default()
    };
    e.apply_with(&e.root, &t.bytes(), &opts).unwrap();
    let mut t = T::new();
    t.pax(&[
        ("GNU.sparse.major", b"1"),
        ("GNU.sparse.minor", b"0"),
        ("GNU.sparse.name", b"huge"),
        ("GNU.sparse.realsize", b"2097152"),
    ]);
    let mut data = b"1\n2097148\n4\n".to_vec();
    data.resize(512, 0);
    data.extend_from_slice(b"tail");
    t.raw(
        "GNUSparseFile.0/huge",
        tar::EntryType::Regular,
        0o644,
        None,
        &data,
    );
    assert_eq!(rule(e.apply_with(&e.root, &t.bytes(), &opts)), Rule::Limit);
}
