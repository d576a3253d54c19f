//! Entry names: traversal, absolute names, NUL and empty names, PAX and GNU long-name
//! overrides, and entries naming the layer root (rules 1 and 2).

use super::oracle::{rule, *};
use super::raw::*;

crate::backend_tests!(
    dotdot_names_at_every_depth_are_refused,
    absolute_names_land_inside_the_layer,
    climbing_after_descending_is_refused,
    dotdot_inside_the_layer_is_cleaned,
    dotdot_as_part_of_a_component_is_a_plain_name,
    nul_in_a_pax_path_is_refused,
    empty_name_is_refused,
    pax_path_traversal_is_refused,
    gnu_long_name_traversal_is_refused,
    pax_linkpath_traversal_is_refused,
    gnu_long_link_to_a_host_file_is_refused,
    symlink_named_dotdot_is_refused,
    slash_dotdot_into_a_sibling_prefix_is_refused,
    root_as_file_is_refused,
    root_as_symlink_to_the_victim_is_refused,
    root_as_hardlink_or_device_is_refused,
    root_directory_entry_sets_root_metadata,
);

pub(crate) fn dotdot_names_at_every_depth_are_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    for depth in 1..=7 {
        let name = format!("{}{}", "../".repeat(depth), env.unique);
        let tar = Raw::new()
            .file(b"ok", b"fine")
            .file(name.as_bytes(), b"escaped")
            .finish();
        env.apply_err(&tar, Some(&name), rule::ESCAPE);
    }
}

fn absolute_names_land_inside_the_layer(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let hello = format!("{}/hello", env.v());
    let etc = format!("/etc/{}", env.unique);
    let tar = Raw::new()
        .file(etc.as_bytes(), b"abs")
        .file(hello.as_bytes(), b"overwritten?")
        .file(env.victim_file.to_str().unwrap().as_bytes(), b"tmp")
        .finish();
    env.apply_ok(&tar, |root| {
        file(root, &format!("etc/{}", env.unique), b"abs");
        file(root, &format!("{}/hello", env.v_rel()), b"overwritten?");
        file(
            root,
            env.victim_file.to_str().unwrap().trim_start_matches('/'),
            b"tmp",
        );
    });
}

fn climbing_after_descending_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let name = format!("a/../../{}", env.unique);
    let tar = Raw::new().dir(b"a").file(name.as_bytes(), b"x").finish();
    env.apply_err(&tar, Some(&name), rule::ESCAPE);
    let name = format!("a/b/../../../root-victim/{}", env.unique);
    let tar = Raw::new().file(name.as_bytes(), b"x").finish();
    env.apply_err(&tar, Some(&name), rule::ESCAPE);
}

fn dotdot_inside_the_layer_is_cleaned(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .file(b"a/b/../c", b"c")
        .file(b"./x//y/./z", b"z")
        .finish();
    env.apply_ok(&tar, |root| {
        file(root, "a/c", b"c");
        // Cleaning is lexical: "b" is never looked at, let alone created.
        absent(root, "a/b");
        file(root, "x/y/z", b"z");
    });
}

fn dotdot_as_part_of_a_component_is_a_plain_name(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .file(b"..a/b..", b"1")
        .file(b"...", b"2")
        .finish();
    env.apply_ok(&tar, |root| {
        file(root, "..a/b..", b"1");
        file(root, "...", b"2");
    });
}

fn nul_in_a_pax_path_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .pax(&[("path", b"good\0/../../x")])
        .file(b"placeholder", b"x")
        .finish();
    env.apply_err(&tar, None, rule::BAD_NAME);
}

fn empty_name_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new().file(b"ok", b"1").file(b"", b"nameless").finish();
    env.apply_err(&tar, Some(""), rule::BAD_NAME);
    let tar = Raw::new().pax(&[("path", b"")]).file(b"x", b"1").finish();
    env.apply_err(&tar, None, rule::BAD_NAME);
}

fn pax_path_traversal_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let name = format!("../../../../{}", env.unique);
    let tar = Raw::new()
        .pax(&[("path", name.as_bytes())])
        .file(b"harmless", b"x")
        .finish();
    env.apply_err(&tar, Some(&name), rule::ESCAPE);
}

fn gnu_long_name_traversal_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let name = format!("{}{}{}", "d/".repeat(60), "../".repeat(64), env.unique);
    let tar = Raw::new()
        .gnu_long(b'L', name.as_bytes())
        .file(b"harmless", b"x")
        .finish();
    env.apply_err(&tar, None, rule::ESCAPE);
}

fn pax_linkpath_traversal_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .file(b"inside", b"in")
        .pax(&[("linkpath", b"../../../../root-victim/hello")])
        .hardlink(b"stolen", b"inside")
        .finish();
    env.apply_err(&tar, Some("stolen"), rule::ESCAPE);
}

fn gnu_long_link_to_a_host_file_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let target = format!("{}/hello", env.v());
    let tar = Raw::new()
        .gnu_long(b'K', target.as_bytes())
        .hardlink(b"stolen", b"placeholder")
        .finish();
    let err = env.apply_err(&tar, Some("stolen"), rule::HARDLINK);
    assert_mentions_str(&err, "does not exist");
}

fn assert_mentions_str(err: &str, what: &str) {
    crate::common::assert_mentions(err, what, "detail");
}

fn symlink_named_dotdot_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new().symlink(b"..", env.v().as_bytes()).finish();
    env.apply_err(&tar, Some(".."), rule::ESCAPE);
    let tar = Raw::new().symlink(b"", env.v().as_bytes()).finish();
    env.apply_err(&tar, Some(""), rule::BAD_NAME);
}

fn slash_dotdot_into_a_sibling_prefix_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    // The store root is a prefix of "root-victim": a string-prefix containment check would
    // let these through.
    for name in [
        "/../root-victim/hello",
        "/../../root-victim/hello",
        "./../root-victim",
    ] {
        let tar = Raw::new().file(name.as_bytes(), b"pwned").finish();
        env.apply_err(&tar, Some(name), rule::ESCAPE);
    }
}

fn root_as_file_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    for name in [".", "./", "/", "a/.."] {
        let tar = Raw::new()
            .file(b"before", b"b")
            .file(name.as_bytes(), b"root?")
            .finish();
        env.apply_err(&tar, Some(name), rule::ROOT_TYPE);
    }
}

pub(crate) fn root_as_symlink_to_the_victim_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    // umoci CVE-2021-29136: the root replaced by a symlink, later entries land on the target.
    let tar = Raw::new()
        .symlink(b"./", env.v().as_bytes())
        .file(b"hello", b"pwned")
        .finish();
    env.apply_err(&tar, Some("./"), rule::ROOT_TYPE);
    let tar = Raw::new()
        .symlink(b".", b"..")
        .file(b"x", b"pwned")
        .finish();
    env.apply_err(&tar, Some("."), rule::ROOT_TYPE);
}

fn root_as_hardlink_or_device_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new().file(b"f", b"f").hardlink(b"./", b"f").finish();
    env.apply_err(&tar, Some("./"), rule::ROOT_TYPE);
    let tar = Raw::new().device(b".", CHR, 1, 3).finish();
    env.apply_err(&tar, Some("."), rule::ROOT_TYPE);
    let tar = Raw::new().device(b"/", FIFO, 0, 0).finish();
    env.apply_err(&tar, Some("/"), rule::ROOT_TYPE);
}

fn root_directory_entry_sets_root_metadata(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let mut h = Hdr::new(b"./", DIR);
    h.mode = 0o750;
    h.uid = 42;
    let tar = Raw::new().entry(&h, b"").file(b"inside", b"in").finish();
    env.apply_ok(&tar, |root| {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(root).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o750, "root mode from the ./ entry");
        assert_eq!(md.uid(), 42, "root owner from the ./ entry");
        file(root, "inside", b"in");
    });
}
