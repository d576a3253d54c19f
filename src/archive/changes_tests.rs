//! Tests of [`super`].

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::*;
use crate::archive::walk::testutil::*;
use crate::archive::Change;
use ChangeKind::{Add, Delete, Modify};

fn diff(new: &Path, old: Option<&Path>) -> Vec<(String, ChangeKind)> {
    let n = dirfd(new);
    let o = old.map(dirfd);
    changes_dirs(n.as_fd(), o.as_ref().map(|o| o.as_fd()))
        .unwrap()
        .iter()
        .map(|c| (c.path.to_string_lossy().into_owned(), c.kind))
        .collect()
}

fn expect(list: &[(&str, ChangeKind)]) -> Vec<(String, ChangeKind)> {
    list.iter().map(|(p, k)| (p.to_string(), *k)).collect()
}

/// A scratch directory with empty `old` and `new` trees.
fn pair() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
    fs::create_dir(&old).unwrap();
    fs::create_dir(&new).unwrap();
    (tmp, old, new)
}

/// Writes the same file into both trees.
fn both(old: &Path, new: &Path, rel: &str, content: &[u8]) {
    file(old, rel, content);
    file(new, rel, content);
}

#[test]
fn add_modify_delete() {
    let (_t, old, new) = pair();
    both(&old, &new, "same", b"1");
    file(&old, "b", b"2");
    file(&new, "b", b"22");
    file(&old, "c", b"3");
    file(&new, "d", b"4");
    assert_eq!(
        diff(&new, Some(&old)),
        expect(&[("/b", Modify), ("/c", Delete), ("/d", Add)])
    );
}

#[test]
fn identical_trees_have_no_changes() {
    let (_t, old, new) = pair();
    both(&old, &new, "a/b/c", b"x");
    both(&old, &new, "a/d", b"y");
    // Directory mtimes differ (created at different times) and never count.
    set_mtime(&old.join("a"), 1, 0);
    assert_eq!(diff(&new, Some(&old)), vec![]);
}

#[test]
fn directory_with_changed_child_is_modified() {
    let (_t, old, new) = pair();
    both(&old, &new, "d/x", b"x");
    both(&old, &new, "d/e/keep", b"k");
    both(&old, &new, "quiet/q", b"q");
    file(&new, "d/x", b"xx");
    file(&new, "d/e/f", b"new");
    assert_eq!(
        diff(&new, Some(&old)),
        expect(&[
            ("/d", Modify),
            ("/d/e", Modify),
            ("/d/e/f", Add),
            ("/d/x", Modify),
        ])
    );
}

#[test]
fn directory_attribute_change_is_reported_once() {
    let (_t, old, new) = pair();
    both(&old, &new, "d/x", b"x");
    lchown(&new.join("d"), 5, 5);
    file(&new, "d/y", b"y");
    assert_eq!(
        diff(&new, Some(&old)),
        expect(&[("/d", Modify), ("/d/y", Add)])
    );
}

#[test]
fn type_changes() {
    let (_t, old, new) = pair();
    // file -> directory: Modify, children Add.
    file(&old, "f", b"file");
    file(&new, "f/x", b"child");
    // directory -> file: Modify only, old children not listed.
    file(&old, "g/1", b"1");
    file(&old, "g/2", b"2");
    file(&new, "g", b"file");
    // file -> symlink.
    file(&old, "s", b"abc");
    std::os::unix::fs::symlink("abc", new.join("s")).unwrap();
    assert_eq!(
        diff(&new, Some(&old)),
        expect(&[
            ("/f", Modify),
            ("/f/x", Add),
            ("/g", Modify),
            ("/s", Modify)
        ])
    );
}

#[test]
fn symlink_retarget_with_same_length_and_mtime() {
    let (_t, old, new) = pair();
    for (tree, target) in [(&old, "aaaa"), (&new, "bbbb")] {
        std::os::unix::fs::symlink(target, tree.join("l")).unwrap();
        std::os::unix::fs::symlink("same", tree.join("k")).unwrap();
        set_mtime(&tree.join("l"), T.0, T.1);
        set_mtime(&tree.join("k"), T.0, T.1);
    }
    assert_eq!(diff(&new, Some(&old)), expect(&[("/l", Modify)]));
}

#[test]
fn symlinks_are_not_followed() {
    let (_t, old, new) = pair();
    // A symlink to a directory on both sides with different contents behind it.
    file(&old, "target/a", b"1");
    file(&new, "target/a", b"1");
    file(&new, "other/b", b"2");
    for (tree, target) in [(&old, "target"), (&new, "other")] {
        std::os::unix::fs::symlink(target, tree.join("l")).unwrap();
        set_mtime(&tree.join("l"), T.0, T.1);
    }
    // Only the retargeted link itself and the new directory: nothing behind `l`.
    assert_eq!(
        diff(&new, Some(&old)),
        expect(&[("/l", Modify), ("/other", Add), ("/other/b", Add)])
    );
}

#[test]
fn mtime_only_change() {
    let (_t, old, new) = pair();
    both(&old, &new, "f", b"same");
    set_mtime(&new.join("f"), T.0 + 1, T.1);
    assert_eq!(diff(&new, Some(&old)), expect(&[("/f", Modify)]));
}

#[test]
fn zero_nanoseconds_match_any_time_in_the_same_second() {
    let (_t, old, new) = pair();
    for name in ["zero_old", "zero_new", "both_ns", "other_sec"] {
        both(&old, &new, name, b"x");
    }
    set_mtime(&old.join("zero_old"), 100, 0);
    set_mtime(&new.join("zero_old"), 100, 5);
    set_mtime(&old.join("zero_new"), 100, 7);
    set_mtime(&new.join("zero_new"), 100, 0);
    set_mtime(&old.join("both_ns"), 100, 3);
    set_mtime(&new.join("both_ns"), 100, 5);
    set_mtime(&old.join("other_sec"), 100, 0);
    set_mtime(&new.join("other_sec"), 101, 0);
    assert_eq!(
        diff(&new, Some(&old)),
        expect(&[("/both_ns", Modify), ("/other_sec", Modify)])
    );
}

#[test]
fn same_second_rewrite_is_seen_by_content() {
    // A tar gave the old file whole seconds; a same-size rewrite in that second differs
    // only in its bytes. Identical bytes stay unchanged, as in Docker.
    let (_t, old, new) = pair();
    fs::write(old.join("conf"), b"setting=1\n").unwrap();
    fs::write(new.join("conf"), b"setting=2\n").unwrap();
    both(&old, &new, "same", b"setting=1\n");
    for f in ["conf", "same"] {
        set_mtime(&old.join(f), 100, 0);
        set_mtime(&new.join(f), 100, 42);
    }
    assert_eq!(diff(&new, Some(&old)), expect(&[("/conf", Modify)]));
}

#[test]
fn capability_difference() {
    let (_t, old, new) = pair();
    both(&old, &new, "ping", b"elf");
    both(&old, &new, "other", b"elf");
    set_xattr(&new.join("ping"), "security.capability", &cap_value());
    // Setting an xattr does not touch mtime, so only the capability tells them apart.
    assert_eq!(diff(&new, Some(&old)), expect(&[("/ping", Modify)]));
}

#[test]
fn xattr_only_change_is_a_change() {
    let (_t, old, new) = pair();
    for f in ["added", "changed", "removed", "internal"] {
        both(&old, &new, f, b"same");
    }
    fs::create_dir(old.join("d")).unwrap();
    fs::create_dir(new.join("d")).unwrap();
    set_xattr(&new.join("added"), "user.x", b"1");
    set_xattr(&old.join("changed"), "user.x", b"1");
    set_xattr(&new.join("changed"), "user.x", b"2");
    set_xattr(&old.join("removed"), "user.x", b"1");
    set_xattr(&new.join("d"), "trusted.note", b"dir");
    // Storage-internal attributes are not exported, so they are no change either.
    set_xattr(&new.join("internal"), "trusted.overlay.origin", b"x");
    assert_eq!(
        diff(&new, Some(&old)),
        expect(&[
            ("/added", Modify),
            ("/changed", Modify),
            ("/d", Modify),
            ("/removed", Modify)
        ])
    );
}

#[test]
fn mode_uid_gid_and_rdev_changes() {
    let (_t, old, new) = pair();
    for name in ["m", "u", "g"] {
        both(&old, &new, name, b"x");
    }
    chmod(&new.join("m"), 0o4755);
    lchown(&new.join("u"), 1, 0);
    lchown(&new.join("g"), 0, 1);
    mknod(
        &old.join("dev"),
        rustix::fs::FileType::CharacterDevice,
        0o600,
        1,
        3,
    );
    mknod(
        &new.join("dev"),
        rustix::fs::FileType::CharacterDevice,
        0o600,
        1,
        5,
    );
    for tree in [&old, &new] {
        set_mtime(&tree.join("dev"), T.0, T.1);
    }
    assert_eq!(
        diff(&new, Some(&old)),
        expect(&[
            ("/dev", Modify),
            ("/g", Modify),
            ("/m", Modify),
            ("/u", Modify)
        ])
    );
}

#[test]
fn deleted_directory_reports_only_itself() {
    let (_t, old, new) = pair();
    file(&old, "d/a/b", b"1");
    file(&old, "d/c", b"2");
    both(&old, &new, "keep", b"k");
    assert_eq!(diff(&new, Some(&old)), expect(&[("/d", Delete)]));
}

#[test]
fn empty_old_tree_makes_everything_an_add() {
    let (_t, _old, new) = pair();
    file(&new, "d/e/f", b"1");
    file(&new, "g", b"2");
    std::os::unix::fs::symlink("/nowhere", new.join("l")).unwrap();
    assert_eq!(
        diff(&new, None),
        expect(&[
            ("/d", Add),
            ("/d/e", Add),
            ("/d/e/f", Add),
            ("/g", Add),
            ("/l", Add),
        ])
    );
}

#[test]
fn sorted_by_path_bytes() {
    let (_t, old, new) = pair();
    fs::create_dir(old.join("a")).unwrap();
    file(&new, "a/b", b"1");
    file(&new, "a-b", b"2");
    file(&new, "a0", b"3");
    // '-' (0x2d) < '/' (0x2f) < '0' (0x30): byte order, not component order.
    assert_eq!(
        diff(&new, Some(&old)),
        expect(&[("/a", Modify), ("/a-b", Add), ("/a/b", Add), ("/a0", Add)])
    );
}

#[test]
fn shared_inode_is_unchanged() {
    let (_t, old, new) = pair();
    file(&old, "f", b"1");
    fs::hard_link(old.join("f"), new.join("f")).unwrap();
    assert_eq!(diff(&new, Some(&old)), vec![]);
}

/// graphtest's `changeManyFiles(20, 6)` over `addManyFiles(20, 3)`.
#[test]
fn graphtest_change_many_files() {
    let (_t, old, new) = pair();
    let seed = 6;
    for j in 0..20u64 {
        let rel = format!("directory-0/file-{j}");
        both(&old, &new, &rel, &noise(64, 3 + j));
    }
    let mut want = vec![("/directory-0".to_string(), Modify)];
    for j in 0..20u64 {
        match j % 3 {
            0 => {
                let rel = format!("directory-0/file-{j}");
                fs::write(new.join(&rel), noise(64, seed + j)).unwrap();
                want.push((format!("/{rel}"), Modify));
            }
            1 => {
                let rel = format!("directory-0/file-{seed}-{j}");
                fs::write(new.join(&rel), noise(64, seed + j)).unwrap();
                want.push((format!("/{rel}"), Add));
            }
            _ => {
                let rel = format!("directory-0/file-{j}");
                fs::remove_file(new.join(&rel)).unwrap();
                want.push((format!("/{rel}"), Delete));
            }
        }
    }
    let mut got = diff(&new, Some(&old));
    assert_eq!(got.len(), 21);
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn deep_trees_do_not_exhaust_the_stack() {
    let (_t, old, new) = pair();
    let mut rel = PathBuf::new();
    for _ in 0..400 {
        rel.push("d");
        both(&old, &new, &rel.join("f").to_string_lossy(), b"x");
    }
    file(&new, &rel.join("g").to_string_lossy(), b"y");
    let got = diff(&new, Some(&old));
    assert_eq!(got.len(), 401);
    assert_eq!(got[0], ("/d".to_string(), Modify));
    assert!(got.last().unwrap().0.ends_with("/d/g"));
}

#[test]
fn changes_size_counts_hard_links_once() {
    let (_t, _old, new) = pair();
    file(&new, "f", &[7u8; 100]);
    fs::hard_link(new.join("f"), new.join("g")).unwrap();
    file(&new, "h", &[1u8; 10]);
    file(&new, "d/i", &[2u8; 5]);
    std::os::unix::fs::symlink("xyz", new.join("s")).unwrap();
    let mut changes: Vec<Change> = {
        let fd = dirfd(&new);
        changes_dirs(fd.as_fd(), None).unwrap().iter().collect()
    };
    // Deletes and vanished paths are ignored.
    changes.push(Change {
        path: "/gone".into(),
        kind: Delete,
    });
    changes.push(Change {
        path: "/vanished/x".into(),
        kind: Modify,
    });
    changes.reverse();
    let changes = ChangeSet::from_changes(&changes).unwrap();
    let fd = dirfd(&new);
    // f + h + d/i + the symlink's 3 bytes; g is f's inode; directories count 0.
    assert_eq!(
        changes_size(fd.as_fd(), &changes).unwrap(),
        100 + 10 + 5 + 3
    );
}
