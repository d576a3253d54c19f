//! The one way a test skips: [`skip`] (self-contained, so the library's unit tests include
//! this file too).
//!
//! A skipped test still "passes" for libtest, which also swallows what a passing test prints.
//! So every skip
//!
//! * prints one line in a fixed format to stderr (seen with `--nocapture`):
//!   `SKIPPED: <binary> <test> [<key>]: <reason>`;
//! * appends the same line to the file named by `STRATA_TEST_SKIP_LOG` when that is set
//!   (`scripts/test` sets it, counts the distinct `<binary> <test>` pairs, takes them off the
//!   passed count and lists the reasons in its summary);
//! * and fails the test instead under `STRATA_TEST_NO_SKIP=1`, unless `<key>` is named in
//!   `STRATA_TEST_ALLOW_SKIP` (comma-separated keys, e.g. `xfs-quota` where the kernel lacks
//!   `CONFIG_XFS_QUOTA`).
//!
//! Keys name the missing prerequisite: `root`, `overlay`, `loop`, `e2fsprogs`, `xfs-quota`,
//! `temp-fs-quota`.

use std::io::Write;

/// Whether `STRATA_TEST_NO_SKIP` asks for skips to fail (set, not empty, not `0`).
pub fn no_skip() -> bool {
    std::env::var("STRATA_TEST_NO_SKIP").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether `STRATA_TEST_ALLOW_SKIP` names `key`.
pub fn allowed(key: &str) -> bool {
    std::env::var("STRATA_TEST_ALLOW_SKIP")
        .is_ok_and(|v| v.split(',').any(|k| k.trim() == key || k.trim() == "all"))
}

/// The running test binary's name without cargo's hash (`graphtest`, `strata`).
fn binary() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_ref()
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "?".into());
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => stem,
    }
}

/// The skip line for the current test (libtest names each test's thread after the test).
pub fn line(key: &str, why: &str) -> String {
    let test = std::thread::current()
        .name()
        .unwrap_or("?")
        .replace(char::is_whitespace, "_");
    let why = why.replace('\n', " ");
    format!("SKIPPED: {} {test} [{key}]: {why}", binary())
}

/// Records that the current test cannot run here because `why` (prerequisite `key` is
/// missing), or panics under `STRATA_TEST_NO_SKIP=1` unless `key` is allowed. The caller
/// returns right after.
pub fn skip(key: &str, why: &str) {
    let line = line(key, why);
    if no_skip() && !allowed(key) {
        panic!(
            "{line}\n  STRATA_TEST_NO_SKIP=1 forbids this skip (STRATA_TEST_ALLOW_SKIP={key} \
             would allow it)"
        );
    }
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("STRATA_TEST_SKIP_LOG") {
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            panic!("cannot record the skip in {}: {e}", path.to_string_lossy());
        }
    }
}
