//! One layer of many empty files (a generated tar, 100 directories): `apply-diff`, then
//! `changes`, `diff`, `diff-size` and `remove`, each within its memory limit. The test uses
//! 100,000 files to stay within a minute; `scripts/bench-memory` measures the 1,000,000 case.

use std::fs::File;
use std::io::BufWriter;
use std::process::Stdio;
use std::time::Duration;

use crate::kit::{end, for_each_line, ustar_header, Hostile, APPLY_MIB, EXPORT_MIB};

crate::backend_tests!(a_layer_of_100000_empty_files);

const DIRS: usize = 100;
const PER_DIR: usize = 1_000;
const LIMIT: Duration = Duration::from_secs(180);

fn a_layer_of_100000_empty_files(backend: &str) {
    let Some(h) = Hostile::new(backend) else {
        return;
    };
    let s = h.s();
    let tar = h.scratch("many.tar");
    {
        let mut w = BufWriter::new(File::create(&tar).unwrap());
        for d in 0..DIRS {
            ustar_header(&mut w, format!("d{d:03}/").as_bytes(), b'5', 0o755, 0).unwrap();
            for f in 0..PER_DIR {
                let name = format!("d{d:03}/f{f:04}");
                ustar_header(&mut w, name.as_bytes(), b'0', 0o644, 0).unwrap();
            }
        }
        end(&mut w).unwrap();
        std::io::Write::flush(&mut w).unwrap();
    }
    s.create("m", None);
    let m = h.run(
        &["apply-diff", "m", tar.to_str().unwrap()],
        Stdio::null(),
        None,
        LIMIT,
    );
    eprintln!(
        "apply-diff of {} files: exit {:?}, peak RSS {} MiB, {:?}",
        DIRS * PER_DIR,
        m.out.code,
        m.peak_mib(),
        m.elapsed
    );
    m.assert_bounded(APPLY_MIB, "apply-diff of many files");
    m.out.expect_code(0);
    let _ = std::fs::remove_file(&tar);

    let listed = h.scratch("changes.txt");
    assert!(
        h.bounded(&["changes", "m"], Some(&listed), LIMIT, EXPORT_MIB),
        "changes of many files"
    );
    let n = for_each_line(&listed, |l| assert!(l.starts_with(b"A /d"), "{l:?}"));
    assert_eq!(n, DIRS * (PER_DIR + 1), "one Add per file and directory");
    let _ = std::fs::remove_file(&listed);

    let size = h.scratch("size.txt");
    assert!(h.bounded(&["diff-size", "m"], Some(&size), LIMIT, EXPORT_MIB));
    assert_eq!(std::fs::read_to_string(&size).unwrap().trim(), "0");

    let out = h.scratch("m.tar");
    assert!(
        h.bounded(
            &["diff", "m", "-o", out.to_str().unwrap()],
            None,
            LIMIT,
            EXPORT_MIB
        ),
        "diff of many files"
    );
    let _ = std::fs::remove_file(&out);

    assert!(h.bounded(&["remove", "m"], None, LIMIT, EXPORT_MIB));
    assert!(!s.exists("m"));
    h.finish();
}
