//! A container truncates a file to 8 EiB (the largest size the kernel allows; the store lives
//! on a tmpfs for this, since ext4 stops at 16 TiB). `changes` and `diff-size` answer at
//! once; `diff` refuses quickly naming the file, or writes it sparse (a small tar).

use std::os::fd::AsFd;
use std::time::Duration;

use rustix::fs::{Mode, OFlags};

use crate::common::{assert_mentions, mounts_under};
use crate::kit::{open_dir, Hostile, EXPORT_MIB};

crate::backend_tests!(a_file_of_8_eib);

/// `diff` of a hole must not take long.
const LIMIT: Duration = Duration::from_secs(60);

fn a_file_of_8_eib(backend: &str) {
    let Some(h) = Hostile::new(backend) else {
        return;
    };
    let s = h.s();
    std::fs::create_dir(s.root()).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256m,mode=0700", "tmpfs"])
        .arg(s.root())
        .status()
        .expect("run mount");
    assert!(st.success(), "mounting a tmpfs for the store: {st:?}");
    let mounted = mounts_under(s.root());
    assert!(!mounted.is_empty(), "the tmpfs is mounted");

    s.create("base", None);
    s.create_rw("c", Some("base"));
    let top = s.get("c");
    let dir = open_dir(&top);
    let f = rustix::fs::openat(
        dir.as_fd(),
        "huge",
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .expect("create the file");
    let size = i64::MAX as u64;
    rustix::fs::ftruncate(&f, size).expect("truncate to 8 EiB on tmpfs");
    drop(f);
    drop(dir);
    s.put("c");

    let listed = h.scratch("changes.txt");
    assert!(
        h.bounded(&["changes", "c"], Some(&listed), LIMIT, EXPORT_MIB),
        "changes of a huge sparse file"
    );
    assert_eq!(std::fs::read_to_string(&listed).unwrap(), "A /huge\n");
    let got = h.scratch("size.txt");
    if h.bounded(&["diff-size", "c"], Some(&got), LIMIT, EXPORT_MIB) {
        assert_eq!(
            std::fs::read_to_string(&got).unwrap().trim(),
            size.to_string()
        );
    }

    let tar = h.scratch("c.tar");
    let m = h.run(
        &["diff", "c", "-o", tar.to_str().unwrap()],
        std::process::Stdio::null(),
        None,
        LIMIT,
    );
    eprintln!(
        "diff of an 8 EiB file: exit {:?}, peak RSS {} MiB, {:?}",
        m.out.code,
        m.peak_mib(),
        m.elapsed
    );
    m.assert_bounded(EXPORT_MIB, "diff of an 8 EiB file");
    if m.ok_or_refused("diff of an 8 EiB file") {
        let len = std::fs::metadata(&tar).map(|m| m.len()).unwrap_or(0);
        assert!(
            len < 1 << 20,
            "an exported hole must be written sparse: {len} bytes"
        );
    } else {
        assert_mentions(&m.out.stderr, "huge", "the refusal names the file");
    }
    let _ = std::fs::remove_file(&tar);
    s.remove("c");
    s.remove("base");
    h.finish();
}
