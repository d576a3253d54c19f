//! The oracle itself must be able to fail: each kind of damage it claims to see, done by
//! hand, makes it panic.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::oracle::Env;

fn must_panic(what: &str, f: impl FnOnce()) {
    let r = catch_unwind(AssertUnwindSafe(f));
    assert!(r.is_err(), "the oracle did not notice: {what}");
}

fn damage(what: &str, act: impl FnOnce(&Env)) {
    let Some(env) = Env::new("vfs") else { return };
    env.plain();
    let before = env.outside();
    act(&env);
    must_panic(what, || env.assert_outside(&before, what));
}

#[test]
fn oracle_sees_every_kind_of_outside_damage() {
    damage("content", |e| {
        fs::write(e.victim.join("hello"), b"other").unwrap()
    });
    damage("mode", |e| {
        crate::common::tree::chmod(&e.victim.join("hello"), 0o644)
    });
    damage("owner", |e| {
        crate::common::tree::chown(&e.victim.join("sub/deep"), 1, 1)
    });
    damage("xattr", |e| {
        crate::common::tree::set_xattr(&e.victim.join("hello"), "user.victim", b"w")
    });
    damage("link count", |e| {
        fs::hard_link(e.victim.join("hello"), e.s.scratch().join("root/extra")).unwrap()
    });
    damage("new entry", |e| {
        fs::write(e.victim.join("new"), b"").unwrap()
    });
    damage("removed entry", |e| {
        fs::remove_file(e.victim.join("link")).unwrap()
    });
    damage("symlink target", |e| {
        fs::remove_file(e.victim.join("link")).unwrap();
        std::os::unix::fs::symlink("sub", e.victim.join("link")).unwrap();
    });
    damage("victim file", |e| fs::write(&e.victim_file, b"x").unwrap());
    damage("name beside the store", |e| {
        fs::write(e.s.scratch().join("dropped"), b"").unwrap()
    });
    damage("escape by unique name", |e| {
        fs::write(e.s.scratch().join("root").join(&e.unique), b"").unwrap()
    });
    damage("atime", |e| {
        let f = fs::File::open(e.victim.join("hello")).unwrap();
        f.set_times(fs::FileTimes::new().set_accessed(std::time::SystemTime::now()))
            .unwrap();
    });
}

#[test]
fn oracle_sees_victim_bytes_inside_the_layer() {
    let Some(env) = Env::new("vfs") else { return };
    env.plain();
    let layer = env.s.layers_dir().join(super::oracle::TARGET);
    env.assert_no_marker(&layer, "clean layer");
    fs::create_dir_all(layer.join("fs/deep")).unwrap();
    let mut stolen = b"prefix ".to_vec();
    stolen.extend_from_slice(&env.marker);
    fs::write(layer.join("fs/deep/copy"), stolen).unwrap();
    must_panic("victim bytes in the layer", || {
        env.assert_no_marker(&layer, "layer")
    });
}
