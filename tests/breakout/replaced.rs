//! A path that later entries use as a parent is replaced or removed mid-stream (a symlink
//! by a directory, a file, a hard link or another symlink; a lower layer's symlink shadowed
//! by this layer): every later entry must land where the path leads *now*, never through a
//! directory resolved earlier through the old symlink.

use super::oracle::{rule, *};
use super::raw::*;

crate::backend_tests!(
    directory_replaces_symlink_used_as_parent,
    file_replaces_symlink_used_as_parent,
    hardlink_replaces_symlink_used_as_parent,
    symlink_retargeted_after_use_as_parent,
    many_small_files_after_symlink_replaced_by_directory,
    directory_replaces_lower_symlink_used_as_parent,
    file_replaces_lower_symlink_used_as_parent,
);

/// `D x; D x/t; D foo; L foo -> x; F foo/t/a; D foo; D foo/t; F foo/t/b`: the second `D foo`
/// replaces the symlink, so `b` is in a real `foo/t` (as with Docker, containerd, GNU tar).
pub(crate) fn directory_replaces_symlink_used_as_parent(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .dir(b"x")
        .dir(b"x/t")
        .dir(b"foo")
        .symlink(b"foo", b"x")
        .file(b"foo/t/a", b"a")
        .dir(b"foo")
        .dir(b"foo/t")
        .file(b"foo/t/b", b"b")
        .finish();
    env.apply_ok(&tar, |root| {
        dir(root, "foo");
        dir(root, "foo/t");
        file(root, "foo/t/b", b"b");
        assert_eq!(names(root, "foo/t"), ["b"]);
        assert_eq!(names(root, "x/t"), ["a"]);
    });
}

fn file_replaces_symlink_used_as_parent(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .dir(b"x")
        .dir(b"x/t")
        .symlink(b"foo", b"x")
        .file(b"foo/t/a", b"a")
        .file(b"foo", b"now a file")
        .file(b"foo/t/b", b"b")
        .finish();
    env.apply_err(&tar, Some("foo/t/b"), rule::NOT_DIR);
}

fn hardlink_replaces_symlink_used_as_parent(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .dir(b"x")
        .dir(b"x/t")
        .file(b"other", b"other")
        .symlink(b"foo", b"x")
        .file(b"foo/t/a", b"a")
        .hardlink(b"foo", b"other")
        .file(b"foo/t/b", b"b")
        .finish();
    env.apply_err(&tar, Some("foo/t/b"), rule::NOT_DIR);
}

fn symlink_retargeted_after_use_as_parent(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .dir(b"x")
        .dir(b"x/t")
        .dir(b"y")
        .dir(b"y/t")
        .symlink(b"foo", b"x")
        .file(b"foo/t/a", b"a")
        .symlink(b"foo", b"y")
        .file(b"foo/t/b", b"b")
        .finish();
    env.apply_ok(&tar, |root| {
        symlink(root, "foo", "y");
        assert_eq!(names(root, "x/t"), ["a"]);
        assert_eq!(names(root, "y/t"), ["b"]);
    });
}

/// Enough small files for the writer threads to take them, before and after the symlink
/// gives way to a directory.
pub(crate) fn many_small_files_after_symlink_replaced_by_directory(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let mut raw = Raw::new();
    raw.dir(b"x").dir(b"x/t").symlink(b"foo", b"x");
    for i in 0..200 {
        raw.file(format!("foo/t/a{i}").as_bytes(), b"a");
    }
    raw.dir(b"foo").dir(b"foo/t");
    for i in 0..200 {
        raw.file(format!("foo/t/b{i}").as_bytes(), b"b");
    }
    let tar = raw.finish();
    env.apply_ok(&tar, |root| {
        dir(root, "foo/t");
        let (x, replaced) = (names(root, "x/t"), names(root, "foo/t"));
        assert_eq!(x.len(), 200, "x/t: {x:?}");
        assert!(x.iter().all(|n| n.starts_with('a')), "x/t: {x:?}");
        assert_eq!(replaced.len(), 200, "foo/t: {replaced:?}");
        assert!(
            replaced.iter().all(|n| n.starts_with('b')),
            "foo/t: {replaced:?}"
        );
    });
}

fn lower_with_symlink() -> Vec<u8> {
    Raw::new()
        .dir(b"x")
        .dir(b"x/t")
        .symlink(b"foo", b"x")
        .finish()
}

/// The symlink comes from a lower layer: on overlay, this layer's directory shadows it
/// without anything being removed from the layer itself.
pub(crate) fn directory_replaces_lower_symlink_used_as_parent(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(lower_with_symlink());
    let tar = Raw::new()
        .file(b"foo/t/a", b"a")
        .dir(b"foo")
        .dir(b"foo/t")
        .file(b"foo/t/b", b"b")
        .finish();
    env.apply_ok(&tar, |root| {
        dir(root, "foo");
        assert_eq!(names(root, "foo/t"), ["b"]);
        assert_eq!(names(root, "x/t"), ["a"]);
    });
}

fn file_replaces_lower_symlink_used_as_parent(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(lower_with_symlink());
    let tar = Raw::new()
        .file(b"foo/t/a", b"a")
        .file(b"foo", b"now a file")
        .file(b"foo/t/b", b"b")
        .finish();
    env.apply_err(&tar, Some("foo/t/b"), rule::NOT_DIR);
}
