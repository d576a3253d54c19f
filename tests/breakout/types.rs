//! The same path repeated with changing types, files used as parents, and what a directory
//! entry over an existing directory leaves behind (rules 6 and 9).

use super::oracle::{rule, *};
use super::raw::*;

crate::backend_tests!(
    file_then_directory_of_the_same_name,
    directory_with_subdirectories_then_file_of_the_same_name,
    directory_then_symlink_then_write_under_it,
    symlink_replaced_by_directory_then_written_under,
    file_as_a_parent_in_the_same_tar_is_refused,
    file_as_a_parent_in_a_lower_layer_is_refused,
    directory_over_a_directory_ends_with_exactly_its_xattrs,
    file_over_a_lower_directory_then_directory_hides_lower_content,
    opaque_after_a_removed_directory_is_still_exact,
    the_last_of_repeated_entries_wins,
    default_acl_set_on_an_existing_directory_does_not_mask_later_modes,
    setgid_set_on_an_existing_directory_does_not_regroup_later_entries,
);

fn file_then_directory_of_the_same_name(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .file(b"x", b"file")
        .dir(b"x")
        .file(b"x/in", b"in")
        .finish();
    env.apply_ok(&tar, |root| {
        dir(root, "x");
        file(root, "x/in", b"in");
    });
}

pub(crate) fn directory_with_subdirectories_then_file_of_the_same_name(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(Raw::new().dir(b"low").dir(b"low/sub").finish());
    let tar = Raw::new()
        .dir(b"d")
        .dir(b"d/sub")
        .dir(b"d/sub/deeper")
        .file(b"d/sub/x", b"x")
        .file(b"d", b"now a file")
        .dir(b"low/sub/new")
        .file(b"low", b"low file")
        .finish();
    env.apply_ok(&tar, |root| {
        file(root, "d", b"now a file");
        file(root, "low", b"low file");
    });
}

fn directory_then_symlink_then_write_under_it(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .dir(b"d")
        .symlink(b"d", env.v().as_bytes())
        .file(b"d/x", b"x")
        .finish();
    env.apply_ok(&tar, |root| {
        symlink(root, "d", &env.v());
        file(root, &format!("{}/x", env.v_rel()), b"x");
    });
}

fn symlink_replaced_by_directory_then_written_under(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .symlink(b"s", env.v().as_bytes())
        .dir(b"s")
        .file(b"s/hello", b"mine")
        .finish();
    env.apply_ok(&tar, |root| {
        file(root, "s/hello", b"mine");
        absent(root, &env.v_rel());
    });
}

fn file_as_a_parent_in_the_same_tar_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new().file(b"f", b"f").file(b"f/x", b"x").finish();
    env.apply_err(&tar, Some("f/x"), rule::NOT_DIR);
    let tar = Raw::new().file(b"f", b"f").dir(b"f/d").finish();
    env.apply_err(&tar, Some("f/d"), rule::NOT_DIR);
}

fn file_as_a_parent_in_a_lower_layer_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(Raw::new().file(b"f", b"lower").symlink(b"l", b"f").finish());
    let tar = Raw::new().file(b"f/x", b"x").finish();
    env.apply_err(&tar, Some("f/x"), rule::NOT_DIR);
    let tar = Raw::new().file(b"l/x", b"x").finish();
    env.apply_err(&tar, Some("l/x"), rule::NOT_DIR);
    let tar = Raw::new().file(b"f/.wh.x", b"").finish();
    env.apply_err(&tar, Some("f/.wh.x"), rule::NOT_DIR);
}

fn dir_with_xattrs(name: &[u8], xattrs: &[(&str, &[u8])]) -> Raw {
    let keys: Vec<String> = xattrs
        .iter()
        .map(|(k, _)| format!("SCHILY.xattr.{k}"))
        .collect();
    let recs: Vec<(&str, &[u8])> = keys
        .iter()
        .zip(xattrs)
        .map(|(k, (_, v))| (k.as_str(), *v))
        .collect();
    let mut r = Raw::new();
    r.pax(&recs).dir(name);
    r
}

fn directory_over_a_directory_ends_with_exactly_its_xattrs(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let mut lower = dir_with_xattrs(b"d", &[("user.old", b"1"), ("user.both", b"old")]);
    lower.file(b"d/f", b"f");
    env.lower(lower.finish());
    let mut tar = dir_with_xattrs(b"d", &[("user.new", b"2"), ("user.both", b"new")]);
    tar.0
        .extend_from_slice(&dir_with_xattrs(b"e", &[("user.first", b"1")]).0);
    tar.0
        .extend_from_slice(&dir_with_xattrs(b"e", &[("user.second", b"2")]).0);
    env.apply_ok(&tar.finish(), |root| {
        let get = |rel: &str| {
            crate::common::tree::xattrs(&root.join(rel))
                .into_iter()
                .filter(|(k, _)| k.starts_with("user."))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            get("d"),
            [
                ("user.both".to_string(), b"new".to_vec()),
                ("user.new".to_string(), b"2".to_vec())
            ]
        );
        assert_eq!(get("e"), [("user.second".to_string(), b"2".to_vec())]);
        file(root, "d/f", b"f");
    });
}

fn file_over_a_lower_directory_then_directory_hides_lower_content(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(Raw::new().file(b"d/x", b"x").finish());
    let tar = Raw::new()
        .file(b"d", b"file")
        .dir(b"d")
        .file(b"d/y", b"y")
        .finish();
    env.apply_ok(&tar, |root| assert_eq!(names(root, "d"), ["y"]));
}

fn opaque_after_a_removed_directory_is_still_exact(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(
        Raw::new()
            .file(b"b/x/keep", b"k")
            .file(b"b/y", b"y")
            .finish(),
    );
    // "a" is removed, freeing inodes the next directories (b's copy-up on overlay) may
    // reuse; the opaque marker must still remove everything this layer did not write in b.
    let mut r = Raw::new();
    for i in 0..8 {
        r.dir(format!("a{i}").as_bytes())
            .file(format!("a{i}/x").as_bytes(), b"a");
        r.file(format!("a{i}/y").as_bytes(), b"a");
    }
    for i in 0..8 {
        r.file(format!(".wh.a{i}").as_bytes(), b"");
    }
    let tar = r
        .file(b"b/x/new", b"n")
        .file(b"b/.wh..wh..opq", b"")
        .finish();
    env.apply_ok(&tar, |root| {
        assert_eq!(names(root, "b"), Vec::<String>::new());
        absent(root, "a0");
    });
}

fn the_last_of_repeated_entries_wins(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .file(b"x", b"first")
        .file(b"x", b"second")
        .symlink(b"y", b"x")
        .file(b"y", b"file now")
        .dir(b"z")
        .symlink(b"z", b"x")
        .finish();
    env.apply_ok(&tar, |root| {
        file(root, "x", b"second");
        file(root, "y", b"file now");
        symlink(root, "z", "x");
    });
}

/// A POSIX ACL xattr value (version 2): (tag, perm) entries, ids unused.
fn acl(entries: &[(u16, u16)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    v
}

fn default_acl_set_on_an_existing_directory_does_not_mask_later_modes(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(Raw::new().dir(b"d").finish());
    // user rwx, group r-x, mask r--, other r--: a new file would come out 0744.
    let value = acl(&[(0x01, 7), (0x04, 5), (0x10, 4), (0x20, 4)]);
    let mut tar = Raw::new();
    tar.file(b"d/early", b"e");
    tar.0
        .extend_from_slice(&dir_with_xattrs(b"d", &[("system.posix_acl_default", &value)]).0);
    let mut f = Hdr::new(b"d/f", REG);
    f.mode = 0o755;
    f.size = 1;
    tar.entry(&f, b"f");
    env.apply_ok(&tar.finish(), |root| {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::symlink_metadata(root.join("d/f")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o755, "the entry's mode, not the ACL's");
    });
}

fn setgid_set_on_an_existing_directory_does_not_regroup_later_entries(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(Raw::new().dir(b"d").finish());
    let mut d = Hdr::new(b"d", DIR);
    d.mode = 0o2775;
    d.gid = 50;
    let mut root = Hdr::new(b"./", DIR);
    root.mode = 0o2755;
    root.gid = 60;
    let tar = Raw::new()
        .file(b"d/early", b"e")
        .entry(&d, b"")
        .file(b"d/f", b"f")
        .dir(b"d/sub")
        .entry(&root, b"")
        .file(b"top", b"t")
        .finish();
    env.apply_ok(&tar, |root| {
        use std::os::unix::fs::MetadataExt;
        let md = |rel: &str| std::fs::symlink_metadata(root.join(rel)).unwrap();
        assert_eq!(md("d").gid(), 50);
        assert_eq!(md("d/f").gid(), 0, "the entry's group, not the directory's");
        assert_eq!(
            md("d/sub").gid(),
            0,
            "the entry's group, not the directory's"
        );
        assert_eq!(
            md("d/sub").mode() & 0o7777,
            0o755,
            "the entry's mode, no inherited setgid"
        );
        assert_eq!(md("top").gid(), 0, "the entry's group, not the root's");
    });
}
