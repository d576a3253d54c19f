//! Whiteouts and opaque markers: malformed names, payloads, whiteouts through symlinks,
//! opaque ordering, and the opaque marker at the layer root (rule 5).

use super::oracle::{rule, *};
use super::raw::*;

crate::backend_tests!(
    malformed_whiteout_names_are_refused,
    whiteout_with_a_payload_takes_effect_and_reexports_exactly,
    whiteout_under_a_symlink_to_the_victim_stays_in_root,
    opaque_under_a_symlink_to_the_victim_stays_in_root,
    whiteout_through_a_dotdot_symlink_deletes_in_root,
    opaque_keeps_what_this_layer_wrote_before_it,
    opaque_at_the_root_hides_every_lower_entry,
    whiteout_then_recreate_hides_lower_content,
    aufs_metadata_entries_are_skipped,
    whiteout_deletes_a_lower_symlink_not_its_target,
    names_recreated_after_a_root_opaque_do_not_merge_with_lowers,
    entries_beneath_whiteout_names_are_refused,
    opaque_keeps_files_still_being_written,
);

fn malformed_whiteout_names_are_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(Raw::new().file(b"d/x", b"x").finish());
    for name in [".wh.", ".wh..", ".wh...", "d/.wh.", "d/.wh..", "d/.wh..."] {
        let tar = Raw::new()
            .file(b"before", b"b")
            .file(name.as_bytes(), b"")
            .finish();
        env.apply_err(&tar, Some(name), rule::WHITEOUT);
    }
}

/// A whiteout that carries data (some tools write them) works as Docker applies it: the
/// payload is skipped, never read as entries, and the whiteout takes effect; the exact
/// re-export gives back the input byte for byte.
pub(crate) fn whiteout_with_a_payload_takes_effect_and_reexports_exactly(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(
        Raw::new()
            .file(b"x", b"x")
            .file(b"d/old", b"old")
            .file(b"keep", b"keep")
            .finish(),
    );
    // Payloads that look like tar entries: a reader out of step would create them.
    let smuggled = Raw::new().file(b"smuggled", b"smuggled").0.clone();
    let mut big = Vec::new();
    while big.len() < 3 << 20 {
        big.extend_from_slice(&Raw::new().file(b"smuggled-big", b"big").0.clone());
    }
    let tar = Raw::new()
        .file(b".wh.x", &smuggled)
        .file(b"d/.wh..wh..opq", &smuggled)
        .file(b"d/new", b"new")
        .file(b".wh..wh.aufs", &smuggled)
        .file(b"after", b"after")
        .file(b".wh.after", &big)
        .file(b"last", b"last")
        .finish();
    env.apply_ok(&tar, |root| {
        absent(root, "x");
        absent(root, "after");
        absent(root, "smuggled");
        absent(root, "smuggled-big");
        assert_eq!(names(root, "d"), ["new"]);
        file(root, "keep", b"keep");
        file(root, "last", b"last");
    });
    // The same tar again on a layer nobody has opened: its diff is the exact re-export.
    env.s.create("exact", Some("lower0"));
    env.s.apply_diff("exact", None, &tar);
    assert!(
        env.s.diff("exact", None) == tar,
        "the re-export differs from the applied tar"
    );
}

fn whiteout_under_a_symlink_to_the_victim_stays_in_root(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .symlink(b"evil", env.v().as_bytes())
        .file(b"evil/.wh.hello", b"")
        .file(b"evil/.wh.sub", b"")
        .finish();
    env.apply_ok(&tar, |root| {
        symlink(root, "evil", &env.v());
        absent(root, &format!("{}/hello", env.v_rel()));
    });
}

fn opaque_under_a_symlink_to_the_victim_stays_in_root(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .symlink(b"evil", env.v().as_bytes())
        .file(b"evil/kept", b"mine")
        .file(b"evil/.wh..wh..opq", b"")
        .finish();
    env.apply_ok(&tar, |root| {
        symlink(root, "evil", &env.v());
        assert_eq!(names(root, &env.v_rel()), ["kept"]);
    });
}

fn whiteout_through_a_dotdot_symlink_deletes_in_root(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(
        Raw::new()
            .file(b"root-victim/hello", b"in-root copy")
            .finish(),
    );
    let tar = Raw::new()
        .symlink(b"up", b"../../..")
        .file(b"up/root-victim/.wh.hello", b"")
        .finish();
    env.apply_ok(&tar, |root| {
        dir(root, "root-victim");
        absent(root, "root-victim/hello");
    });
}

fn opaque_keeps_what_this_layer_wrote_before_it(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(
        Raw::new()
            .file(b"d/old", b"o")
            .file(b"d/sub/x", b"x")
            .finish(),
    );
    let tar = Raw::new()
        .file(b"d/new", b"n")
        .file(b"d/.wh..wh..opq", b"")
        .file(b"d/after", b"a")
        .finish();
    env.apply_ok(&tar, |root| {
        assert_eq!(names(root, "d"), ["after", "new"]);
    });
}

pub(crate) fn opaque_at_the_root_hides_every_lower_entry(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lowers(&[
        Raw::new()
            .file(b"a", b"a")
            .file(b"b/c", b"c")
            .symlink(b"slash", b"/")
            .finish(),
        Raw::new()
            .file(b"e", b"e")
            .symlink(b"up", b"..")
            .file(b".wh.a", b"")
            .finish(),
    ]);
    let tar = Raw::new()
        .file(b"early", b"kept")
        .file(b".wh..wh..opq", b"")
        .file(b"n", b"new")
        .finish();
    env.apply_ok(&tar, |root| {
        assert_eq!(names(root, ""), ["early", "n"]);
        file(root, "n", b"new");
    });
}

fn whiteout_then_recreate_hides_lower_content(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(Raw::new().file(b"d/x", b"x").file(b"d/y", b"y").finish());
    let tar = Raw::new().file(b".wh.d", b"").file(b"d/z", b"z").finish();
    env.apply_ok(&tar, |root| {
        assert_eq!(names(root, "d"), ["z"]);
    });
}

fn aufs_metadata_entries_are_skipped(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .dir(b".wh..wh.plnk")
        .file(b".wh..wh.plnk/1234.5", b"aufs hard-link payload")
        .file(b".wh..wh.aufs", b"")
        .file(b"d/.wh..wh.orph", b"")
        .file(b"f", b"f")
        .finish();
    env.apply_ok(&tar, |root| {
        absent(root, ".wh..wh.plnk");
        absent(root, ".wh..wh.aufs");
        absent(root, "d/.wh..wh.orph");
        file(root, "f", b"f");
    });
    // Skipped payloads are still part of the exact re-export.
    env.s.create("t2", None);
    env.s.apply_diff("t2", None, &tar);
    assert!(
        env.s.diff("t2", None) == tar,
        "diff reproduces the applied tar"
    );
}

fn entries_beneath_whiteout_names_are_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(Raw::new().file(b"d/x", b"x").finish());
    for name in [".wh.d/y", "d/.wh.x/y", "d/.wh..wh..opq/y", "a/.wh.b/c/d"] {
        let tar = Raw::new()
            .file(b"before", b"b")
            .file(name.as_bytes(), b"y")
            .finish();
        let err = env.apply_err(&tar, Some(name), rule::WHITEOUT);
        crate::common::assert_mentions(&err, "cannot be a parent", "whiteout as a parent");
    }
    let tar = Raw::new().dir(b"d/.wh.x/sub").finish();
    env.apply_err(&tar, Some("d/.wh.x/sub"), rule::WHITEOUT);
}

fn whiteout_deletes_a_lower_symlink_not_its_target(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let hello = format!("{}/hello", env.v());
    env.lower(
        Raw::new()
            .symlink(b"evil", hello.as_bytes())
            .symlink(b"dir", env.v().as_bytes())
            .finish(),
    );
    let tar = Raw::new()
        .file(b".wh.evil", b"")
        .file(b".wh.dir", b"")
        .finish();
    env.apply_ok(&tar, |root| {
        absent(root, "evil");
        absent(root, "dir");
    });
}

fn names_recreated_after_a_root_opaque_do_not_merge_with_lowers(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(
        Raw::new()
            .file(b"a", b"lower a")
            .file(b"b/old", b"o")
            .file(b"c/old", b"o")
            .file(b"keep/old", b"o")
            .finish(),
    );
    let tar = Raw::new()
        .dir(b"keep")
        .file(b"keep/mine", b"m")
        .file(b".wh..wh..opq", b"")
        .file(b"a", b"new a")
        .dir(b"b")
        .file(b"b/new", b"n")
        .file(b"c/new", b"n")
        .finish();
    env.apply_ok(&tar, |root| {
        assert_eq!(names(root, ""), ["a", "b", "c", "keep"]);
        file(root, "a", b"new a");
        assert_eq!(names(root, "b"), ["new"]);
        assert_eq!(names(root, "c"), ["new"]);
        assert_eq!(names(root, "keep"), ["mine"]);
    });
    // A sibling never served writable re-exports the tar byte for byte.
    env.s.create("t2", Some("lower0"));
    env.s.apply_diff("t2", None, &tar);
    assert!(
        env.s.diff("t2", None) == tar,
        "diff reproduces the applied tar"
    );
    use crate::common::ChangeKind::{Add, Delete, Modify};
    let expected: Vec<(String, crate::common::ChangeKind)> = [
        ("/a", Modify),
        ("/b", Modify),
        ("/b/new", Add),
        ("/b/old", Delete),
        ("/c", Modify),
        ("/c/new", Add),
        ("/c/old", Delete),
        ("/keep", Modify),
        ("/keep/mine", Add),
        ("/keep/old", Delete),
    ]
    .into_iter()
    .map(|(p, k)| (p.to_string(), k))
    .collect();
    assert_eq!(
        env.s.changes(TARGET, None),
        expected,
        "changes of the layer"
    );
}

fn opaque_keeps_files_still_being_written(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(
        Raw::new()
            .file(b"d/old", b"o")
            .file(b"d/sub/old", b"o")
            .finish(),
    );
    // Small files in fresh directories go to writer threads; the marker must wait for them
    // or at least keep them.
    let mut r = Raw::new();
    r.dir(b"n");
    for i in 0..300 {
        r.file(format!("n/f{i}").as_bytes(), format!("{i}").as_bytes());
        r.file(format!("d/f{i}").as_bytes(), format!("{i}").as_bytes());
    }
    r.file(b"n/.wh..wh..opq", b"").file(b"d/.wh..wh..opq", b"");
    r.file(b"n/.wh.f7", b"").file(b"d/.wh.f8", b"");
    env.apply_ok(&r.finish(), |root| {
        let n = names(root, "n");
        assert_eq!(n.len(), 299, "n keeps all but f7");
        assert!(!n.contains(&"f7".to_string()));
        let d = names(root, "d");
        assert_eq!(d.len(), 299, "d keeps its new files only: {d:?}");
        assert!(!d.contains(&"old".to_string()) && !d.contains(&"sub".to_string()));
        file(root, "n/f299", b"299");
        file(root, "d/f0", b"0");
    });
}
