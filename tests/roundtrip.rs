//! Round-trip properties of the diff engine, through the `strata` CLI, on vfs and overlay:
//!
//! 1. **Trees**: a random tree built in a layer through `get` → `diff` → `apply-diff` onto a
//!    fresh layer gives the same tree (types, bytes, symlink targets, device numbers, modes,
//!    owners, mtimes in whole seconds, xattrs, hard-link groups), and the new layer's `diff`
//!    is the applied tar again.
//! 2. **Exact tars**: a random tar (see `roundtrip/tars.rs`) applied to a fresh layer comes
//!    back from `diff` byte for byte (same sha256).
//! 3. **Exact gzip**: the same with the tar gzip-compressed: `diff` is the uncompressed tar.
//!
//! Each property runs `PROPTEST_CASES` cases (default 24) on one store per backend. A failure
//! is shrunk and reported with the minimal input; `PROPTEST_RNG_SEED` reproduces a run.

mod common;

#[path = "roundtrip/snap.rs"]
mod snap;
#[path = "roundtrip/tars.rs"]
mod tars;
#[path = "roundtrip/trees.rs"]
mod trees;

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sha2::{Digest, Sha256};

use common::Store;

/// Cases per property: `PROPTEST_CASES`, default 24.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    Config {
        cases,
        // Every case runs CLI commands; shrinking a failure stays affordable.
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    }
}

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Asserts `actual` is byte for byte `expected`, saying where they part.
fn same_bytes(expected: &[u8], actual: &[u8], what: &str) -> Result<(), TestCaseError> {
    if expected != actual {
        let at = expected.iter().zip(actual).position(|(a, b)| a != b);
        return Err(TestCaseError::fail(format!(
            "{what}: {} bytes (sha256 {}) instead of {} (sha256 {}), first difference at {:?}",
            actual.len(),
            hex(actual),
            expected.len(),
            hex(expected),
            at.or(Some(expected.len().min(actual.len())))
        )));
    }
    Ok(())
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn fresh_id(prefix: &str) -> String {
    format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn tree_roundtrip(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let mut runner = TestRunner::new(config());
    let result = runner.run(&trees::spec(), |spec| {
        let (src, dst) = (fresh_id("src"), fresh_id("dst"));
        s.create(&src, None);
        let expected = s.with_layer(&src, |root| {
            trees::build(root, &spec);
            snap::snapshot(root)
        });
        let tar = s.diff(&src, None);
        s.create(&dst, None);
        s.apply_diff(&dst, None, &tar);
        let actual = s.with_layer(&dst, snap::snapshot);
        let diffs = snap::differences(&expected, &actual);
        prop_assert!(
            diffs.is_empty(),
            "{backend}: tree after diff | apply-diff differs in {} place(s):\n  {}",
            diffs.len(),
            diffs.join("\n  ")
        );
        same_bytes(&tar, &s.diff(&dst, None), "diff of the applied layer")?;
        s.remove(&src);
        s.remove(&dst);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{backend}: {e}");
    }
}

fn tar_exact(backend: &str, compress: bool) {
    let Some(s) = Store::new(backend) else { return };
    let mut runner = TestRunner::new(config());
    let result = runner.run(&tars::spec(), |(items, tail)| {
        let tar = tars::build(&items, &tail);
        let input = if compress {
            common::tars::gzip(&tar)
        } else {
            tar.clone()
        };
        let id = fresh_id("t");
        s.create(&id, None);
        s.apply_diff(&id, None, &input);
        same_bytes(&tar, &s.diff(&id, None), "diff of the applied layer")?;
        s.remove(&id);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{backend}: {e}");
    }
}

fn tar_roundtrip_exact(backend: &str) {
    tar_exact(backend, false);
}

fn gzip_roundtrip_exact(backend: &str) {
    tar_exact(backend, true);
}

backend_tests!(tree_roundtrip, tar_roundtrip_exact, gzip_roundtrip_exact);
