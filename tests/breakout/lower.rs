//! Escapes through symlinks that lower layers left behind: the child layer writes, whites
//! out, hard-links and marks opaque through them (merged-view semantics: a parent path is
//! resolved in the merged tree, in-root).

use super::oracle::{rule, *};
use super::raw::*;

crate::backend_tests!(
    write_through_lower_symlink_to_the_victim_stays_in_root,
    write_through_lower_dotdot_symlink_lands_at_the_root,
    whiteout_through_lower_symlink_stays_in_root,
    opaque_through_lower_symlink_stays_in_root,
    hardlink_through_lower_symlink_is_refused,
    hardlink_to_lower_symlink_to_a_host_file_never_chmods_it,
    chain_across_two_lower_layers_stays_in_root,
    directory_replaces_lower_symlink_to_the_victim,
    file_replaces_lower_symlink_to_a_host_file,
    lower_symlink_into_the_store_does_not_reach_other_layers,
    write_through_lower_alias_of_a_whited_out_directory,
);

/// A parent layer with the usual suspects.
fn evil_lower(env: &Env) -> Vec<u8> {
    Raw::new()
        .symlink(b"evil", env.v().as_bytes())
        .symlink(b"up", b"../../..")
        .symlink(b"slash", b"/")
        .symlink(b"rel", b"../root-victim")
        .finish()
}

pub(crate) fn write_through_lower_symlink_to_the_victim_stays_in_root(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(evil_lower(&env));
    let tar = Raw::new()
        .file(b"evil/hello", b"pwned")
        .file(b"evil/sub/deep", b"pwned")
        .file(b"rel/x", b"x")
        .file(
            format!("slash/{}/link", env.v_rel()).as_bytes(),
            b"not through the link",
        )
        .finish();
    env.apply_ok(&tar, |root| {
        symlink(root, "evil", &env.v());
        file(root, &format!("{}/hello", env.v_rel()), b"pwned");
        file(root, &format!("{}/sub/deep", env.v_rel()), b"pwned");
        file(root, "root-victim/x", b"x");
        file(
            root,
            &format!("{}/link", env.v_rel()),
            b"not through the link",
        );
    });
}

fn write_through_lower_dotdot_symlink_lands_at_the_root(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(evil_lower(&env));
    let name = format!("up/up/{}", env.unique);
    let tar = Raw::new()
        .file(name.as_bytes(), b"top")
        .dir(b"up/newdir")
        .finish();
    env.apply_ok(&tar, |root| {
        file(root, &env.unique, b"top");
        dir(root, "newdir");
        symlink(root, "up", "../../..");
    });
}

pub(crate) fn whiteout_through_lower_symlink_stays_in_root(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(evil_lower(&env));
    let tar = Raw::new()
        .file(b"evil/.wh.hello", b"")
        .file(b"evil/.wh.sub", b"")
        .file(b"up/.wh.slash", b"")
        .file(b"rel/.wh.hello", b"")
        .finish();
    env.apply_ok(&tar, |root| {
        symlink(root, "evil", &env.v());
        absent(root, "slash");
    });
}

pub(crate) fn opaque_through_lower_symlink_stays_in_root(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(evil_lower(&env));
    let tar = Raw::new()
        .file(b"evil/mine", b"m")
        .file(b"evil/.wh..wh..opq", b"")
        .file(b"slash/.wh..wh..opq", b"")
        .file(b"after", b"a")
        .finish();
    env.apply_ok(&tar, |root| {
        // The root opaque through "slash" hides everything before it, "evil" included.
        assert_eq!(names(root, ""), ["after"]);
    });
}

fn hardlink_through_lower_symlink_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(evil_lower(&env));
    for target in [
        "evil/hello",
        "rel/hello",
        "up/root-victim/hello",
        "slash/etc/passwd",
    ] {
        let tar = Raw::new().hardlink(b"stolen", target.as_bytes()).finish();
        env.apply_err(&tar, Some("stolen"), rule::HARDLINK);
    }
}

fn hardlink_to_lower_symlink_to_a_host_file_never_chmods_it(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let hello = format!("{}/hello", env.v());
    env.lower(Raw::new().symlink(b"s", hello.as_bytes()).finish());
    let mut h = Hdr::new(b"h", LNK);
    h.link = b"s".to_vec();
    h.mode = 0o777;
    h.uid = 5;
    let tar = Raw::new().entry(&h, b"").finish();
    env.apply_ok(&tar, |root| {
        symlink(root, "h", &hello);
        symlink(root, "s", &hello);
    });
}

fn chain_across_two_lower_layers_stays_in_root(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lowers(&[
        Raw::new().dir(b"d").symlink(b"d/hop", b"../..").finish(),
        Raw::new().symlink(b"entry", b"d/hop/root-victim").finish(),
    ]);
    let tar = Raw::new().file(b"entry/hello", b"pwned").finish();
    env.apply_ok(&tar, |root| file(root, "root-victim/hello", b"pwned"));
}

fn directory_replaces_lower_symlink_to_the_victim(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(evil_lower(&env));
    let mut h = Hdr::new(b"evil", DIR);
    h.mode = 0o777;
    let tar = Raw::new().entry(&h, b"").file(b"evil/in", b"in").finish();
    env.apply_ok(&tar, |root| {
        dir(root, "evil");
        assert_eq!(names(root, "evil"), ["in"]);
    });
}

fn file_replaces_lower_symlink_to_a_host_file(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let hello = format!("{}/hello", env.v());
    env.lower(Raw::new().symlink(b"f", hello.as_bytes()).finish());
    let tar = Raw::new().file(b"f", b"replaced").finish();
    env.apply_ok(&tar, |root| file(root, "f", b"replaced"));
}

fn lower_symlink_into_the_store_does_not_reach_other_layers(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let layers = env.s.layers_dir();
    let other = layers.join("lower0");
    env.lower(
        Raw::new()
            .file(b"own", b"lower file")
            .symlink(b"store", layers.to_str().unwrap().as_bytes())
            .symlink(b"sib", other.to_str().unwrap().as_bytes())
            .finish(),
    );
    let tar = Raw::new()
        .file(b"store/lower0/diff/own", b"overwritten?")
        .file(b"store/lower0/fs/own", b"overwritten?")
        .file(b"sib/.wh.diff", b"")
        .file(b"sib/.wh.fs", b"")
        .finish();
    env.apply_ok(&tar, |root| {
        file(root, "own", b"lower file");
        let rel = layers.to_str().unwrap().trim_start_matches('/');
        // Written in-root, then whited out in-root through "sib".
        dir(root, &format!("{rel}/lower0"));
        absent(root, &format!("{rel}/lower0/diff"));
        absent(root, &format!("{rel}/lower0/fs"));
    });
}

fn write_through_lower_alias_of_a_whited_out_directory(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lowers(&[
        Raw::new().file(b"real/x", b"x").finish(),
        Raw::new()
            .file(b".wh.real", b"")
            .symlink(b"alias", b"real")
            .finish(),
    ]);
    let tar = Raw::new().file(b"alias/y", b"y").finish();
    env.apply_ok(&tar, |root| {
        // The deleted directory comes back holding only the new entry.
        assert_eq!(names(root, "real"), ["y"]);
        symlink(root, "alias", "real");
    });
}
