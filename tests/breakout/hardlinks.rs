//! Hard links: targets that escape, that are missing, directories or the link itself,
//! legitimate absolute targets, lower-layer targets, and overwriting through a link (rule 4).

use super::oracle::{rule, *};
use super::raw::*;

crate::backend_tests!(
    hardlink_to_dotdot_victim_is_refused,
    hardlink_to_absolute_host_paths_is_refused,
    hardlink_through_a_symlinked_parent_is_refused,
    hardlink_to_a_directory_or_the_root_is_refused,
    hardlink_to_itself_or_missing_is_refused,
    absolute_hardlink_target_inside_the_layer_is_allowed,
    hardlink_to_a_lower_layer_file_copies_it_up,
    overwriting_a_hardlink_leaves_its_target_alone,
    hardlink_named_through_a_symlink_stays_in_root,
    hardlink_to_a_whited_out_lower_file_is_refused,
    hardlink_to_a_lower_file_through_a_lower_alias,
    hardlink_replacing_its_own_parent_fails_cleanly,
    hardlink_to_an_in_root_symlink_named_like_a_host_path,
);

fn hardlink_to_dotdot_victim_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    for target in [
        "../root-victim/hello",
        "a/../../../../../../root-victim/hello",
        "/../x",
    ] {
        let tar = Raw::new().hardlink(b"stolen", target.as_bytes()).finish();
        env.apply_err(&tar, Some("stolen"), rule::ESCAPE);
    }
}

pub(crate) fn hardlink_to_absolute_host_paths_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let hello = format!("{}/hello", env.v());
    for target in [
        hello.as_str(),
        env.victim_file.to_str().unwrap(),
        "/etc/passwd",
    ] {
        let tar = Raw::new().hardlink(b"stolen", target.as_bytes()).finish();
        let err = env.apply_err(&tar, Some("stolen"), rule::HARDLINK);
        crate::common::assert_mentions(&err, "does not exist", "hard link to a host path");
    }
}

fn hardlink_through_a_symlinked_parent_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .symlink(b"p", env.v().as_bytes())
        .hardlink(b"stolen", b"p/hello")
        .finish();
    env.apply_err(&tar, Some("stolen"), rule::HARDLINK);
    let tar = Raw::new()
        .symlink(b"up", b"../../../..")
        .hardlink(b"stolen", b"up/root-victim/hello")
        .finish();
    env.apply_err(&tar, Some("stolen"), rule::HARDLINK);
}

fn hardlink_to_a_directory_or_the_root_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new().dir(b"d").hardlink(b"h", b"d").finish();
    let err = env.apply_err(&tar, Some("h"), rule::HARDLINK);
    crate::common::assert_mentions(&err, "directory", "hard link to a directory");
    let tar = Raw::new().hardlink(b"h", b"/").finish();
    env.apply_err(&tar, Some("h"), rule::HARDLINK);
    // "s/" cleans to "s": the link shares the symlink's inode, it does not follow it.
    let tar = Raw::new()
        .symlink(b"s", b"/")
        .hardlink(b"h", b"s/")
        .finish();
    env.apply_ok(&tar, |root| symlink(root, "h", "/"));
}

fn hardlink_to_itself_or_missing_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new().file(b"f", b"f").hardlink(b"f", b"f").finish();
    env.apply_err(&tar, Some("f"), rule::HARDLINK);
    let tar = Raw::new().hardlink(b"h", b"nowhere").finish();
    env.apply_err(&tar, Some("h"), rule::HARDLINK);
}

fn absolute_hardlink_target_inside_the_layer_is_allowed(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    // kaniko writes absolute targets; they are in-root.
    let tar = Raw::new()
        .file(b"a", b"shared")
        .hardlink(b"b", b"/a")
        .hardlink(b"c", b"./x/../a")
        .finish();
    env.apply_ok(&tar, |root| {
        use std::os::unix::fs::MetadataExt;
        let ino = |n: &str| std::fs::metadata(root.join(n)).unwrap().ino();
        assert_eq!(ino("a"), ino("b"));
        assert_eq!(ino("a"), ino("c"));
        file(root, "b", b"shared");
    });
}

pub(crate) fn hardlink_to_a_lower_layer_file_copies_it_up(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(Raw::new().file(b"etc/passwd", b"root:x:0:0").finish());
    let mut h = Hdr::new(b"copy", LNK);
    h.link = b"etc/passwd".to_vec();
    h.mode = 0o600;
    let tar = Raw::new().entry(&h, b"").finish();
    env.apply_ok(&tar, |root| {
        file(root, "copy", b"root:x:0:0");
        file(root, "etc/passwd", b"root:x:0:0");
    });
}

fn overwriting_a_hardlink_leaves_its_target_alone(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(Raw::new().file(b"etc/passwd", b"root:x:0:0").finish());
    let tar = Raw::new()
        .hardlink(b"x", b"etc/passwd")
        .file(b"x", b"evil")
        .finish();
    env.apply_ok(&tar, |root| {
        file(root, "etc/passwd", b"root:x:0:0");
        file(root, "x", b"evil");
    });
}

fn hardlink_named_through_a_symlink_stays_in_root(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .symlink(b"evil", env.v().as_bytes())
        .file(b"a", b"mine")
        .hardlink(b"evil/hello", b"a")
        .finish();
    env.apply_ok(&tar, |root| {
        file(root, &format!("{}/hello", env.v_rel()), b"mine");
    });
}

fn hardlink_to_a_whited_out_lower_file_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(Raw::new().file(b"f", b"lower").finish());
    let tar = Raw::new().file(b".wh.f", b"").hardlink(b"h", b"f").finish();
    env.apply_err(&tar, Some("h"), rule::HARDLINK);
}

fn hardlink_to_a_lower_file_through_a_lower_alias(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(
        Raw::new()
            .file(b"real/f", b"lower f")
            .symlink(b"alias", b"/real")
            .finish(),
    );
    let tar = Raw::new().hardlink(b"h", b"alias/f").finish();
    env.apply_ok(&tar, |root| {
        use std::os::unix::fs::MetadataExt;
        file(root, "h", b"lower f");
        let ino = |n: &str| std::fs::metadata(root.join(n)).unwrap().ino();
        assert_eq!(
            ino("h"),
            ino("real/f"),
            "linked to the (copied-up) real file"
        );
    });
}

fn hardlink_replacing_its_own_parent_fails_cleanly(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    // The link's name is the target's parent: replacing it removes the target first.
    let tar = Raw::new()
        .file(b"d/f", b"f")
        .hardlink(b"d", b"d/f")
        .finish();
    env.apply_err(&tar, Some("d"), "");
}

fn hardlink_to_an_in_root_symlink_named_like_a_host_path(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    // containerd CVE-2021-32760: the absolute target resolves in-root to a symlink that
    // points at the host file; the link's mode must not be applied through it.
    let hello = format!("{}/hello", env.v());
    let mut h = Hdr::new(b"h", LNK);
    h.link = hello.as_bytes().to_vec();
    h.mode = 0o777;
    h.uid = 3;
    let tar = Raw::new()
        .symlink(hello.as_bytes(), hello.as_bytes())
        .entry(&h, b"")
        .finish();
    env.apply_ok(&tar, |root| {
        symlink(root, "h", &hello);
        symlink(root, hello.trim_start_matches('/'), &hello);
    });
}
