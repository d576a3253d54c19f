//! Deep trees: paths far longer than `PATH_MAX` (4096) apply on vfs and overlay — with
//! implicit parents 100,000 levels deep, with every level an entry (as `diff` exports a deep
//! tree), and with long names — their directory times are set, the exact re-export gives the
//! input back, and a deep layer's `diff` applies onto the same parent.
//!
//! The layers are not removed through strata here: its tree removal still recurses once per
//! level. Each test's temporary directory goes with `rm -rf`, which does not.

mod common;

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use common::tars::{Meta, TarBuilder, MTIME};
use common::Store;

/// A store whose temporary directory is removed with `rm -rf` (iterative, unlike the
/// temporary directory's own cleanup, which recurses once per level), even after a failure.
struct Deep(Store);

impl Drop for Deep {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rm")
            .arg("-rf")
            .arg(self.0.scratch())
            .status();
    }
}

impl std::ops::Deref for Deep {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.0
    }
}

backend_tests!(
    implicit_parents_100000_deep,
    every_level_an_entry_10000_deep,
    long_names_past_path_max,
);

/// On vfs only: on overlay, `diff` of this layer is the export's (tree comparison) to cope
/// with first.
#[test]
fn vfs_diff_of_a_deep_layer_applies_onto_its_parent() {
    diff_of_a_deep_layer_applies_onto_its_parent("vfs");
}

/// Opens `names` one level at a time from `root` (never following symlinks): std cannot open
/// paths this long.
fn open_deep(root: &std::path::Path, names: &[String]) -> OwnedFd {
    let c = CString::new(root.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    assert!(fd >= 0, "open {}", root.display());
    // SAFETY: fd was just opened and is owned by nobody else.
    let mut cur = unsafe { OwnedFd::from_raw_fd(fd) };
    for (i, n) in names.iter().enumerate() {
        let c = CString::new(n.as_bytes()).unwrap();
        // SAFETY: a valid directory fd and NUL-terminated name; the result is checked.
        let fd = unsafe {
            libc::openat(
                std::os::fd::AsRawFd::as_raw_fd(&cur),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        assert!(
            fd >= 0,
            "level {i} ({n}): {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: as above.
        cur = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    cur
}

/// Content of the regular file at the end of `names`.
fn read_deep(root: &std::path::Path, names: &[String]) -> (Vec<u8>, std::fs::Metadata) {
    use std::io::Read;
    let mut f = std::fs::File::from(open_deep(root, names));
    let md = f.metadata().unwrap();
    assert!(md.is_file(), "{} is not a file", names.last().unwrap());
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    (v, md)
}

/// Metadata of the directory at the end of `names`.
fn stat_deep(root: &std::path::Path, names: &[String]) -> std::fs::Metadata {
    let f = std::fs::File::from(open_deep(root, names));
    f.metadata().unwrap()
}

fn implicit_parents_100000_deep(backend: &str) {
    let Some(s) = Store::new(backend).map(Deep) else {
        return;
    };
    let depth = 100_000;
    let mut names: Vec<String> = vec!["d".to_string(); depth];
    let path = names.join("/");
    let mut t = TarBuilder::new();
    t.file(&format!("{path}/f"), b"deep", Meta::mode(0o644));
    t.file(
        &format!("{}/g", names[..depth / 2].join("/")),
        b"half",
        Meta::mode(0o644),
    );
    let tar = t.finish();
    s.create("deep", None);
    s.apply_diff("deep", None, &tar);
    // Before any `get`: a layer opened writable is exported by comparing trees instead.
    assert!(
        s.diff("deep", None) == tar,
        "exact re-export of the deep layer"
    );
    s.with_layer("deep", |root| {
        names.push("f".into());
        assert_eq!(read_deep(root, &names).0, b"deep");
        let mut half = names[..depth / 2].to_vec();
        half.push("g".into());
        assert_eq!(read_deep(root, &half).0, b"half");
    });
}

/// Every level a directory entry with its own mtime and a file, as `diff` writes a deep tree.
fn every_level_an_entry_10000_deep(backend: &str) {
    let Some(s) = Store::new(backend).map(Deep) else {
        return;
    };
    let depth = 10_000;
    let names: Vec<String> = (0..depth).map(|i| format!("{:x}", i % 16)).collect();
    let mut t = TarBuilder::new();
    let mut path = String::new();
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            path.push('/');
        }
        path.push_str(n);
        t.dir(&path, Meta::mode(0o755).mtime(MTIME + i as u64));
        if i % 1000 == 999 {
            t.file(&format!("{path}/f"), n.as_bytes(), Meta::mode(0o644));
        }
    }
    let tar = t.finish();
    s.create("deep", None);
    s.apply_diff("deep", None, &tar);
    assert!(
        s.diff("deep", None) == tar,
        "exact re-export of the deep layer"
    );
    s.with_layer("deep", |root| {
        for level in [0, 1, 4999, 9998, 9999] {
            let md = stat_deep(root, &names[..=level]);
            assert_eq!(
                md.mtime(),
                (MTIME + level as u64) as i64,
                "mtime of level {level}"
            );
        }
        let mut f = names[..1000].to_vec();
        f.push("f".into());
        assert_eq!(read_deep(root, &f).0, names[999].as_bytes());
    });
}

fn long_names_past_path_max(backend: &str) {
    let Some(s) = Store::new(backend).map(Deep) else {
        return;
    };
    let names: Vec<String> = (0..100)
        .map(|i| format!("{i:03}{}", "n".repeat(247)))
        .collect();
    let mut t = TarBuilder::new();
    let mut path = String::new();
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            path.push('/');
        }
        path.push_str(n);
        t.dir(&path, Meta::mode(0o750).mtime(MTIME + 7));
    }
    t.file(&format!("{path}/f"), b"long", Meta::mode(0o600));
    let tar = t.finish();
    s.create("long", None);
    s.apply_diff("long", None, &tar);
    assert!(s.diff("long", None) == tar, "exact re-export");
    s.with_layer("long", |root| {
        let md = stat_deep(root, &names);
        assert_eq!(md.mode() & 0o7777, 0o750);
        assert_eq!(md.mtime(), (MTIME + 7) as i64);
        let mut f = names.clone();
        f.push("f".into());
        assert_eq!(read_deep(root, &f).0, b"long");
    });
}

/// `diff` of a deep container layer (exported by comparing trees) applies onto the same
/// parent.
fn diff_of_a_deep_layer_applies_onto_its_parent(backend: &str) {
    let Some(s) = Store::new(backend).map(Deep) else {
        return;
    };
    s.create("base", None);
    s.create_rw("ctr", Some("base"));
    let names: Vec<String> = vec!["dd".to_string(); 3000];
    let mut t = TarBuilder::new();
    t.file(&format!("{}/f", names.join("/")), b"x", Meta::mode(0o644));
    s.apply_diff("ctr", None, &t.finish());
    let exported = s.diff("ctr", Some("base"));
    s.create("copy", Some("base"));
    s.apply_diff("copy", None, &exported);
    s.with_layer("copy", |root| {
        let mut f = names.clone();
        f.push("f".into());
        assert_eq!(read_deep(root, &f).0, b"x");
    });
}
