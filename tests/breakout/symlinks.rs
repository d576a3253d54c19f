//! Symlinks in the layer being applied: writing through them, chains, loops, replacement,
//! and metadata aimed through them (rule 3).

use super::oracle::{rule, *};
use super::raw::*;

crate::backend_tests!(
    write_through_symlink_to_slash_stays_in_root,
    write_through_symlink_to_dotdot_stays_in_root,
    write_through_relative_symlink_to_the_victim_stays_in_root,
    write_through_absolute_symlink_to_the_victim_stays_in_root,
    two_hop_symlink_chain_stays_in_root,
    symlink_loops_and_long_chains_are_refused,
    file_replaces_symlink_to_a_host_file,
    directory_replaces_symlink_to_a_host_directory,
    directory_replaced_by_symlink_mid_stream,
    dangling_symlink_parent_creates_inside,
    symlink_created_through_a_symlinked_parent,
    empty_or_nul_symlink_targets_are_refused,
    hardlink_to_a_symlink_never_chmods_the_host_file,
    devices_and_fifos_created_through_a_symlink_stay_in_root,
    overlong_component_fails_naming_the_entry,
);

pub(crate) fn write_through_symlink_to_slash_stays_in_root(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let name = format!("evil/{}/hello", env.v_rel());
    let tar = Raw::new()
        .symlink(b"evil", b"/")
        .file(name.as_bytes(), b"pwned")
        .file(format!("evil/{}", env.unique).as_bytes(), b"top")
        .finish();
    env.apply_ok(&tar, |root| {
        symlink(root, "evil", "/");
        file(root, &format!("{}/hello", env.v_rel()), b"pwned");
        file(root, &env.unique, b"top");
    });
}

fn write_through_symlink_to_dotdot_stays_in_root(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let name = format!("up/up/up/up/up/{}", env.unique);
    let tar = Raw::new()
        .symlink(b"up", b"..")
        .dir(b"up/up/up/d")
        .file(name.as_bytes(), b"x")
        .finish();
    env.apply_ok(&tar, |root| {
        symlink(root, "up", "..");
        dir(root, "d");
        file(root, &env.unique, b"x");
    });
}

fn write_through_relative_symlink_to_the_victim_stays_in_root(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .symlink(b"v", b"../../../../../../../../root-victim")
        .file(b"v/hello", b"pwned")
        .file(b"v/sub/deep", b"pwned")
        .finish();
    env.apply_ok(&tar, |root| {
        file(root, "root-victim/hello", b"pwned");
        file(root, "root-victim/sub/deep", b"pwned");
    });
}

fn write_through_absolute_symlink_to_the_victim_stays_in_root(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let mut h = Hdr::new(b"v/empty", DIR);
    h.mode = 0o777;
    let tar = Raw::new()
        .symlink(b"v", env.v().as_bytes())
        .file(b"v/hello", b"pwned")
        .entry(&h, b"")
        .symlink(b"v/link", b"/etc/shadow")
        .finish();
    env.apply_ok(&tar, |root| {
        symlink(root, "v", &env.v());
        file(root, &format!("{}/hello", env.v_rel()), b"pwned");
        dir(root, &format!("{}/empty", env.v_rel()));
        symlink(root, &format!("{}/link", env.v_rel()), "/etc/shadow");
    });
}

pub(crate) fn two_hop_symlink_chain_stays_in_root(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    // Each link looks harmless alone; together they reach ../../root-victim.
    let tar = Raw::new()
        .dir(b"sub")
        .symlink(b"sub/l2", b"../..")
        .symlink(b"l1", b"sub/l2/root-victim")
        .file(b"l1/hello", b"pwned")
        .finish();
    env.apply_ok(&tar, |root| {
        file(root, "root-victim/hello", b"pwned");
        symlink(root, "l1", "sub/l2/root-victim");
    });
}

fn symlink_loops_and_long_chains_are_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .symlink(b"loop1", b"loop2")
        .symlink(b"loop2", b"/loop1")
        .file(b"loop1/x", b"x")
        .finish();
    env.apply_err(&tar, Some("loop1/x"), rule::ESCAPE);
    let mut r = Raw::new();
    r.dir(b"end");
    for i in 0..50 {
        let next = if i == 49 {
            "end".to_string()
        } else {
            format!("s{}", i + 1)
        };
        r.symlink(format!("s{i}").as_bytes(), next.as_bytes());
    }
    r.file(b"s0/x", b"x");
    env.apply_err(&r.finish(), Some("s0/x"), rule::ESCAPE);
}

fn file_replaces_symlink_to_a_host_file(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    // tar-rs RUSTSEC-2018-0002: a link then a file of the same name must not write through.
    let target = format!("{}/hello", env.v());
    let tar = Raw::new()
        .symlink(b"evil", target.as_bytes())
        .file(b"evil", b"replaced")
        .symlink(b"evil2", b"../../../../../../root-victim/hello")
        .file(b"evil2", b"replaced2")
        .finish();
    env.apply_ok(&tar, |root| {
        file(root, "evil", b"replaced");
        file(root, "evil2", b"replaced2");
    });
}

pub(crate) fn directory_replaces_symlink_to_a_host_directory(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    // RUSTSEC-2026-0067: the directory entry must not chmod the link's target.
    let mut h = Hdr::new(b"evil", DIR);
    h.mode = 0o777;
    h.uid = 99;
    let tar = Raw::new()
        .symlink(b"evil", env.v().as_bytes())
        .entry(&h, b"")
        .file(b"evil/inside", b"in")
        .finish();
    env.apply_ok(&tar, |root| {
        dir(root, "evil");
        assert_eq!(names(root, "evil"), ["inside"]);
    });
}

fn directory_replaced_by_symlink_mid_stream(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .dir(b"d")
        .file(b"d/a", b"a")
        .symlink(b"d", env.v().as_bytes())
        .file(b"d/hello", b"pwned")
        .finish();
    env.apply_ok(&tar, |root| {
        symlink(root, "d", &env.v());
        file(root, &format!("{}/hello", env.v_rel()), b"pwned");
    });
}

fn dangling_symlink_parent_creates_inside(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .symlink(b"d", format!("{}/not-there/deeper", env.v()).as_bytes())
        .file(b"d/f", b"f")
        .finish();
    env.apply_ok(&tar, |root| {
        file(root, &format!("{}/not-there/deeper/f", env.v_rel()), b"f");
    });
}

fn symlink_created_through_a_symlinked_parent(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .symlink(b"a", b"/")
        .symlink(b"a/b", env.v().as_bytes())
        .file(b"b/hello", b"pwned")
        .finish();
    env.apply_ok(&tar, |root| {
        symlink(root, "b", &env.v());
        file(root, &format!("{}/hello", env.v_rel()), b"pwned");
    });
}

fn empty_or_nul_symlink_targets_are_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new().symlink(b"empty", b"").finish();
    env.apply_err(&tar, Some("empty"), rule::BAD_NAME);
    let tar = Raw::new()
        .pax(&[("linkpath", b"/etc\0/../root-victim")])
        .symlink(b"nul", b"x")
        .finish();
    env.apply_err(&tar, Some("nul"), rule::BAD_NAME);
}

fn hardlink_to_a_symlink_never_chmods_the_host_file(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    // containerd CVE-2021-32760.
    let target = format!("{}/hello", env.v());
    let mut h = Hdr::new(b"h", LNK);
    h.link = b"s".to_vec();
    h.mode = 0o6777;
    h.uid = 7;
    let tar = Raw::new()
        .symlink(b"s", target.as_bytes())
        .entry(&h, b"")
        .finish();
    env.apply_ok(&tar, |root| {
        symlink(root, "h", &target);
        symlink(root, "s", &target);
    });
}

fn devices_and_fifos_created_through_a_symlink_stay_in_root(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .symlink(b"evil", env.v().as_bytes())
        .device(b"evil/null", CHR, 1, 3)
        .device(b"evil/fifo", FIFO, 0, 0)
        .finish();
    env.apply_ok(&tar, |root| {
        use std::os::unix::fs::FileTypeExt;
        let md = std::fs::symlink_metadata(root.join(format!("{}/null", env.v_rel()))).unwrap();
        assert!(md.file_type().is_char_device());
        let md = std::fs::symlink_metadata(root.join(format!("{}/fifo", env.v_rel()))).unwrap();
        assert!(md.file_type().is_fifo());
    });
}

fn overlong_component_fails_naming_the_entry(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let name = format!("d/{}", "n".repeat(300));
    let tar = Raw::new()
        .pax(&[("path", name.as_bytes())])
        .file(b"placeholder", b"x")
        .finish();
    let err = env.apply_err(&tar, Some(&name), "");
    crate::common::assert_mentions(&err, "name too long", "an over-long component");
}
