//! A container makes a 10,000-deep and a 100,000-deep chain of directories in its writable
//! layer (one `mkdirat` per level through its mount). `changes`, `diff`, `diff-size`, the
//! re-apply of the diff onto a sibling layer, and `remove` must each finish or refuse cleanly,
//! within their memory limits and time limit.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::kit::{chain_depth, for_each_line, make_chain, Hostile, APPLY_MIB, EXPORT_MIB};

crate::backend_tests!(container_tree_10000_deep, container_tree_100000_deep);

/// Time limit of one command.
const LIMIT: Duration = Duration::from_secs(180);

fn container_tree_10000_deep(backend: &str) {
    deep_case(backend, 10_000);
}

fn container_tree_100000_deep(backend: &str) {
    deep_case(backend, 100_000);
}

fn deep_case(backend: &str, depth: usize) {
    let Some(h) = Hostile::new(backend) else {
        return;
    };
    let s = h.s();
    s.create("base", None);
    s.create_rw("c", Some("base"));
    let top = s.get("c");
    make_chain(&top, "d", depth);
    s.put("c");

    let listed = h.scratch("changes.txt");
    if h.bounded(&["changes", "c"], Some(&listed), LIMIT, EXPORT_MIB) {
        let n = for_each_line(&listed, |l| {
            assert!(l.starts_with(b"A /d"), "unexpected change line");
            let path = &l[2..];
            assert!(
                path.split(|b| *b == b'/')
                    .skip(1)
                    .all(|c| c == b"d" || c == b"bottom"),
                "a change names something the container did not make"
            );
        });
        assert_eq!(n, depth + 1, "one Add per directory and the bottom file");
    }
    let _ = std::fs::remove_file(&listed);

    let size = h.scratch("diff-size.txt");
    if h.bounded(&["diff-size", "c"], Some(&size), LIMIT, EXPORT_MIB) {
        let text = std::fs::read_to_string(&size).unwrap();
        assert_eq!(
            text.trim(),
            "0",
            "directories and an empty file hold no bytes"
        );
    }

    let tar = h.scratch("c.tar");
    let tar_arg = tar.to_str().unwrap();
    if h.bounded(&["diff", "c", "-o", tar_arg], None, LIMIT, EXPORT_MIB) {
        reapply(&h, &tar, depth);
    }
    let _ = std::fs::remove_file(&tar);
    h.assert_victim("after the exports");

    if h.bounded(&["remove", "c"], None, LIMIT, EXPORT_MIB) {
        assert!(!s.exists("c"), "removed");
    } else {
        assert!(s.exists("c"), "a refused remove keeps the layer");
    }
    h.finish();
}

/// Applies the exported diff onto a new layer on the same parent: it holds the same chain,
/// or the apply refused and left the layer empty.
fn reapply(h: &Hostile, tar: &Path, depth: usize) {
    let s = h.s();
    s.create("r", Some("base"));
    let args = ["apply-diff", "r", tar.to_str().unwrap()];
    let m = h.run(&args, Stdio::null(), None, LIMIT);
    eprintln!(
        "apply-diff of the deep diff: exit {:?}, peak RSS {} MiB, {:?}",
        m.out.code,
        m.peak_mib(),
        m.elapsed
    );
    m.assert_bounded(APPLY_MIB, "apply-diff of the deep diff");
    let applied = m.ok_or_refused("apply-diff of the deep diff");
    let root = s.get("r");
    let got = chain_depth(&root, "d");
    s.put("r");
    if applied {
        assert_eq!(
            got,
            (depth, true),
            "the re-applied layer holds the whole chain"
        );
    } else {
        assert_eq!(
            got,
            (0, false),
            "a refused apply leaves the layer as it was"
        );
    }
    assert!(
        h.bounded(&["remove", "r"], None, LIMIT, EXPORT_MIB),
        "removing the re-applied layer"
    );
}
