//! 2,500 nested directories with 250-byte names (paths of up to 627,500 bytes), applied from
//! a generated tar (PAX `path` records, streamed: nothing this size is held in memory), then
//! `changes`, `diff`, `diff-size` and `remove`. Each must finish or refuse cleanly within its
//! memory and time limits; a refused apply leaves the layer empty.

use std::io::Write;
use std::time::Duration;

use crate::kit::{chain_depth, end, entry, for_each_line, Hostile, APPLY_MIB, EXPORT_MIB};

crate::backend_tests!(nested_2500_directories_with_250_byte_names);

const DEPTH: usize = 2_500;
const LIMIT: Duration = Duration::from_secs(180);

fn name() -> String {
    "n".repeat(250)
}

/// The tar: every level as a directory entry, its full path each time.
fn feed(w: &mut impl Write) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(w);
    let seg = name();
    let mut path = Vec::with_capacity(DEPTH * 251);
    for _ in 0..DEPTH {
        path.extend_from_slice(seg.as_bytes());
        path.push(b'/');
        entry(&mut w, &path, b'5', 0o755)?;
    }
    end(&mut w)?;
    w.flush()
}

fn nested_2500_directories_with_250_byte_names(backend: &str) {
    let Some(h) = Hostile::new(backend) else {
        return;
    };
    let s = h.s();
    s.create("n", None);
    let m = h.run_fed(&["apply-diff", "n"], feed, LIMIT);
    eprintln!(
        "apply-diff of 2,500 long names: exit {:?}, peak RSS {} MiB, {:?}",
        m.out.code,
        m.peak_mib(),
        m.elapsed
    );
    m.assert_bounded(APPLY_MIB, "apply-diff of 2,500 long names");
    let applied = m.ok_or_refused("apply-diff of 2,500 long names");
    let root = s.get("n");
    let got = chain_depth(&root, &name());
    s.put("n");
    if applied {
        assert_eq!(got.0, DEPTH, "the applied layer holds every level");
    } else {
        assert_eq!(got.0, 0, "a refused apply leaves the layer empty");
        // The same shape made by a container, so the exports below meet it anyway.
        s.create_rw("c", Some("n"));
        let top = s.get("c");
        crate::kit::make_chain(&top, &name(), DEPTH);
        s.put("c");
    }
    let id = if applied { "n" } else { "c" };

    let listed = h.scratch("changes.txt");
    if h.bounded(&["changes", id], Some(&listed), LIMIT, EXPORT_MIB) {
        let n = for_each_line(&listed, |l| assert!(l.starts_with(b"A /nnn"), "bad line"));
        assert!(n >= DEPTH, "every level is an Add: {n} lines");
    }
    let _ = std::fs::remove_file(&listed);

    let size = h.scratch("size.txt");
    if h.bounded(&["diff-size", id], Some(&size), LIMIT, EXPORT_MIB) {
        assert_eq!(std::fs::read_to_string(&size).unwrap().trim(), "0");
    }
    let out = h.scratch("n.tar");
    h.bounded(
        &["diff", id, "-o", out.to_str().unwrap()],
        None,
        LIMIT,
        EXPORT_MIB,
    );
    let _ = std::fs::remove_file(&out);
    h.assert_victim("after the exports");

    for id in ["c", "n"] {
        if s.exists(id) {
            assert!(
                h.bounded(&["remove", id], None, LIMIT, EXPORT_MIB),
                "remove {id}"
            );
            assert!(!s.exists(id));
        }
    }
    h.finish();
}
