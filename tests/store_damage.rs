//! Damaged metadata databases, through the CLI: a zero-length, symlinked, truncated, FIFO,
//! missing or bit-flipped `meta.redb` is refused with a clear error (exit 1, never a panic),
//! and no layer directory is changed or quarantined.

mod common;

use std::fs;
use std::process::Command;

use common::tree::{self, read_file, write_file};
use common::{assert_mentions, Store};

/// A store of `backend` holding `base` (with a file) and `child` on it.
fn populated(backend: &str) -> Option<Store> {
    let s = Store::new(backend)?;
    s.create("base", None);
    s.with_layer("base", |root| {
        write_file(root, "hello.txt", b"hello", 0o644)
    });
    s.create("child", Some("base"));
    Some(s)
}

/// A store with two layers, the snapshot of its layer directories and its database bytes.
fn damaged_fixture() -> Option<(Store, tree::Tree, Vec<u8>)> {
    let s = populated("vfs")?;
    let layers = tree::snapshot(&s.layers_dir());
    let db = fs::read(s.root().join("meta.redb")).unwrap();
    Some((s, layers, db))
}

/// Runs read and write commands against the damaged store: each exits 1 with a message
/// naming the database (never a panic), and the layer directories stay byte-identical.
fn assert_damage_refused(s: &Store, layers: &tree::Tree, commands: &[&[&str]], what: &str) {
    for args in commands {
        let out = s.run(args.iter().copied());
        let err = out.expect_failure();
        assert_mentions(&err, "meta.redb", &format!("{what}: {args:?}"));
        assert!(
            !err.contains("panicked"),
            "{what}: {args:?}: {}",
            out.describe()
        );
        assert_eq!(
            &tree::snapshot(&s.layers_dir()),
            layers,
            "{what}: `strata {args:?}` changed the layer directories"
        );
        assert!(
            !s.root().join("quarantine").exists(),
            "{what}: {args:?} quarantined layers"
        );
    }
}

const ALL: &[&[&str]] = &[
    &["ls"],
    &["exists", "base"],
    &["create", "new"],
    &["cleanup"],
    &["get", "base"],
];

#[test]
fn empty_symlinked_or_truncated_database_is_refused() {
    let Some((s, layers, good)) = damaged_fixture() else {
        return;
    };
    let db = s.root().join("meta.redb");
    fs::write(&db, b"").unwrap();
    assert_damage_refused(&s, &layers, ALL, "zero-length meta.redb");
    let err = s.fail(["ls"]);
    assert_mentions(&err, "empty", "zero-length meta.redb");
    assert_mentions(&err, "backup", "the recovery advice");

    let empty = s.scratch().join("empty");
    fs::write(&empty, b"").unwrap();
    fs::remove_file(&db).unwrap();
    std::os::unix::fs::symlink(&empty, &db).unwrap();
    assert_damage_refused(&s, &layers, ALL, "meta.redb a symlink to an empty file");
    assert_mentions(&s.fail(["ls"]), "symbolic link", "symlinked meta.redb");
    assert_eq!(
        fs::read(&empty).unwrap(),
        b"",
        "the symlink's target was written"
    );
    assert!(fs::symlink_metadata(&db).unwrap().file_type().is_symlink());

    let good_copy = s.scratch().join("good.redb");
    fs::write(&good_copy, &good).unwrap();
    fs::remove_file(&db).unwrap();
    std::os::unix::fs::symlink(&good_copy, &db).unwrap();
    assert_damage_refused(&s, &layers, ALL, "meta.redb a symlink to a good database");

    fs::remove_file(&db).unwrap();
    fs::write(&db, &good[..good.len() / 2]).unwrap();
    assert_damage_refused(&s, &layers, ALL, "truncated meta.redb");

    fs::remove_file(&db).unwrap();
    let st = Command::new("mkfifo").arg(&db).status().expect("mkfifo");
    assert!(st.success());
    assert_damage_refused(&s, &layers, ALL, "meta.redb a FIFO");
    assert_mentions(&s.fail(["ls"]), "not a regular file", "FIFO meta.redb");

    fs::remove_file(&db).unwrap();
    assert_damage_refused(&s, &layers, ALL, "missing meta.redb");
    let check = s.run(["check"]);
    check.expect_code(1);
    assert_mentions(
        &check.stdout_str(),
        "database",
        "check of a missing database",
    );

    fs::write(&db, &good).unwrap();
    s.ok(["ls"]);
    assert_eq!(
        s.with_layer("base", |r| read_file(r, "hello.txt")),
        b"hello"
    );
}

/// Offsets of every occurrence of `needle` in `hay`.
fn occurrences(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn bit_flipped_database_is_refused() {
    let Some((s, layers, good)) = damaged_fixture() else {
        return;
    };
    let db = s.root().join("meta.redb");
    // Old copies of pages stay in the file, so every copy is damaged.
    let records = occurrences(&good, b"\"backend\"");
    assert!(!records.is_empty(), "layer records are stored as JSON");
    let driver_keys = occurrences(&good, b"driver");
    assert!(!driver_keys.is_empty(), "the driver is recorded");
    let cases: [(&str, Vec<usize>); 4] = [
        ("the magic number", vec![0]),
        ("the header", vec![9]),
        ("the layer records", records),
        ("the recorded driver", driver_keys),
    ];
    for (what, offsets) in cases {
        let mut bad = good.clone();
        for &offset in &offsets {
            for b in &mut bad[offset..(offset + 16).min(good.len())] {
                *b ^= 0xff;
            }
        }
        fs::write(&db, &bad).unwrap();
        let what = format!("16 bytes flipped in {what} (offsets {offsets:?})");
        assert_damage_refused(&s, &layers, ALL, &what);
        let check = s.run(["check"]);
        check.expect_code(1);
        assert!(
            !check.stderr.contains("panicked"),
            "{what}: {}",
            check.describe()
        );
        assert_mentions(&check.stdout_str(), "database: ", &what);
    }
    fs::write(&db, &good).unwrap();
    s.ok(["ls"]);
}

/// Damage anywhere in the file (16 bytes flipped at every KiB): a command either refuses
/// cleanly (exit 1, a `strata:` line, no panic) or works on intact metadata; the layer
/// directories are never changed.
#[test]
fn damage_anywhere_in_the_database_never_panics_or_touches_layers() {
    let Some((s, layers, good)) = damaged_fixture() else {
        return;
    };
    let db = s.root().join("meta.redb");
    let mut refused = 0;
    for offset in (0..good.len()).step_by(1024) {
        let mut bad = good.clone();
        for b in &mut bad[offset..(offset + 16).min(good.len())] {
            *b ^= 0xff;
        }
        fs::write(&db, &bad).unwrap();
        for args in [vec!["ls"], vec!["exists", "base"], vec!["cleanup"]] {
            let out = s.run(&args);
            let what = format!("16 bytes flipped at offset {offset}: {args:?}");
            match out.code {
                Some(0) => {}
                Some(1) => {
                    out.expect_failure();
                    refused += 1;
                }
                _ => panic!("{what}: {}", out.describe()),
            }
            assert!(
                !out.stderr.contains("panicked"),
                "{what}: {}",
                out.describe()
            );
            assert_eq!(tree::snapshot(&s.layers_dir()), layers, "{what}");
            assert!(
                !s.root().join("quarantine").exists(),
                "{what}: quarantined layers"
            );
        }
    }
    assert!(refused > 0, "no damage was ever detected");
    fs::write(&db, &good).unwrap();
    s.ok(["ls"]);
}
