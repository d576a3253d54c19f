//! Names a container picks to look like something else.
//!
//! * An empty file `etc/.wh.passwd` and a directory `x/.wh..wh..opq` made in the container:
//!   its diff must not become a layer that deletes `/etc/passwd` or hides `x/`'s contents when
//!   applied — the diff is refused, or the names are carried so that they stay names.
//! * A directory named "x\nD " holding `etc` (the path "x\nD /etc"): `changes` prints no
//!   forged line.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use crate::common::tree::{read_file, write_file};
use crate::kit::{Hostile, APPLY_MIB, EXPORT_MIB};

crate::backend_tests!(
    whiteout_names_made_in_a_container_do_not_delete_on_apply,
    a_newline_in_a_name_forges_no_change_line
);

const LIMIT: Duration = Duration::from_secs(60);

/// The base: `etc/passwd` and `x/keep`.
fn base(h: &Hostile) {
    let s = h.s();
    s.create("base", None);
    s.with_layer("base", |root| {
        fs::create_dir(root.join("etc")).unwrap();
        write_file(root, "etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644);
        fs::create_dir(root.join("x")).unwrap();
        write_file(root, "x/keep", b"kept", 0o644);
    });
}

fn whiteout_names_made_in_a_container_do_not_delete_on_apply(backend: &str) {
    let Some(h) = Hostile::new(backend) else {
        return;
    };
    let s = h.s();
    base(&h);
    s.create_rw("c", Some("base"));
    s.with_layer("c", |root| {
        write_file(root, "etc/.wh.passwd", b"", 0o644);
        fs::create_dir(root.join("x/.wh..wh..opq")).unwrap();
        // The container's own view: names, nothing hidden.
        assert_eq!(
            read_file(root, "etc/passwd"),
            b"root:x:0:0::/root:/bin/sh\n"
        );
        assert_eq!(read_file(root, "x/keep"), b"kept");
    });
    let listed = h.scratch("changes.txt");
    if h.bounded(&["changes", "c"], Some(&listed), LIMIT, EXPORT_MIB) {
        let text = fs::read_to_string(&listed).unwrap();
        for forged in ["D /etc/passwd", "D /x/keep"] {
            assert!(
                !text.lines().any(|l| l == forged),
                "changes reports a deletion the container did not make: {text:?}"
            );
        }
    }

    let tar = h.scratch("c.tar");
    if !h.bounded(
        &["diff", "c", "-o", tar.to_str().unwrap()],
        None,
        LIMIT,
        EXPORT_MIB,
    ) {
        h.finish();
        return;
    }
    s.create("r", Some("base"));
    let m = h.run(
        &["apply-diff", "r", tar.to_str().unwrap()],
        Stdio::null(),
        None,
        LIMIT,
    );
    m.assert_bounded(APPLY_MIB, "apply-diff of the exported names");
    let applied = m.ok_or_refused("apply-diff of the exported names");
    s.with_layer("r", |root| {
        assert_eq!(
            read_file(root, "etc/passwd"),
            b"root:x:0:0::/root:/bin/sh\n",
            "the container's file named .wh.passwd deleted /etc/passwd (applied: {applied})"
        );
        assert_eq!(
            read_file(root, "x/keep"),
            b"kept",
            "the container's directory named .wh..wh..opq hid x/ (applied: {applied})"
        );
    });
    h.assert_victim("after the apply");
    h.finish();
}

fn a_newline_in_a_name_forges_no_change_line(backend: &str) {
    let Some(h) = Hostile::new(backend) else {
        return;
    };
    let s = h.s();
    base(&h);
    s.create_rw("c", Some("base"));
    s.with_layer("c", |root| {
        fs::create_dir_all(root.join("x\nD /etc")).unwrap();
    });
    let listed = h.scratch("changes.txt");
    assert!(
        h.bounded(&["changes", "c"], Some(&listed), LIMIT, EXPORT_MIB),
        "changes of a name with a newline"
    );
    let text = fs::read_to_string(&listed).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        !lines.iter().any(|l| l.starts_with("D ")),
        "a name forged a deletion: {text:?}"
    );
    // One Add line per new directory, each about them — nothing more.
    assert_eq!(lines.len(), 2, "one line per new directory: {text:?}");
    assert!(
        lines.iter().all(|l| l.starts_with("A /x")),
        "every line is an Add of a new directory: {text:?}"
    );
    h.finish();
}
