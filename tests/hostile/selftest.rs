//! The kit checked against known answers: the measured runner sees a child's peak RSS and
//! kills a child that outlives its limit; the skip helper logs one line per skip in the fixed
//! format, fails under `STRATA_TEST_NO_SKIP=1`, and lets an allowed key pass; the
//! `scripts/test` summary counts what cargo and the skip log say.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::rss::run_measured;

/// Set (by [`skip_helper_logs_fails_and_allows`], in a child run of this binary) to make
/// [`skips_when_asked`] skip.
const ASK: &str = "STRATA_TEST_SELFTEST_SKIP";

#[test]
fn measured_runs_see_peak_rss_and_time_limits() {
    // dd allocates and fills one 96 MiB block.
    let mut dd = Command::new("dd");
    dd.args(["if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"]);
    let m = run_measured(dd, Stdio::null(), Stdio::null(), Duration::from_secs(60));
    m.out.expect_code(0);
    assert!(
        (96..200).contains(&m.peak_mib()),
        "dd with a 96 MiB buffer: peak {} MiB",
        m.peak_mib()
    );
    m.assert_bounded(200, "dd");
    let small = run_measured(
        Command::new("true"),
        Stdio::null(),
        Stdio::null(),
        Duration::from_secs(60),
    );
    assert!(small.peak_mib() < 16, "true: {} MiB", small.peak_mib());

    let mut sleep = Command::new("sleep");
    sleep.arg("60");
    let m = run_measured(
        sleep,
        Stdio::null(),
        Stdio::null(),
        Duration::from_millis(300),
    );
    assert!(m.out.timed_out, "the watchdog fired");
    assert_eq!(m.out.signal, Some(libc::SIGKILL));
    assert!(m.elapsed < Duration::from_secs(30), "{:?}", m.elapsed);
    let caught = std::panic::catch_unwind(|| m.assert_bounded(1 << 20, "sleep"));
    assert!(caught.is_err(), "a timed-out run is not bounded");
}

/// Skips when [`ASK`] is set; otherwise checks nothing but that the variable is unset.
#[test]
fn skips_when_asked() {
    if std::env::var_os(ASK).is_some() {
        crate::common::skip("selftest", "asked to skip");
        return;
    }
    assert!(std::env::var_os(ASK).is_none());
}

#[test]
fn skip_helper_logs_fails_and_allows() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skips");
    let run = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "selftest::skips_when_asked", "--test-threads=1"])
            .env(ASK, "1")
            .env("STRATA_TEST_SKIP_LOG", &log)
            .env_remove("STRATA_TEST_NO_SKIP")
            .env_remove("STRATA_TEST_ALLOW_SKIP")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.status().unwrap().success()
    };
    assert!(run(&[]), "a skip passes by default");
    let line = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        line,
        "SKIPPED: hostile selftest::skips_when_asked [selftest]: asked to skip\n"
    );
    assert!(
        !run(&[("STRATA_TEST_NO_SKIP", "1")]),
        "STRATA_TEST_NO_SKIP=1 fails a skip"
    );
    assert!(
        !run(&[
            ("STRATA_TEST_NO_SKIP", "1"),
            ("STRATA_TEST_ALLOW_SKIP", "xfs-quota")
        ]),
        "an allow-list without the key still fails it"
    );
    assert!(
        run(&[
            ("STRATA_TEST_NO_SKIP", "1"),
            ("STRATA_TEST_ALLOW_SKIP", "xfs-quota,selftest")
        ]),
        "an allowed key skips"
    );
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        lines.lines().count(),
        2,
        "one line per skip that happened: {lines}"
    );
}

#[test]
fn test_summary_counts_runs_failures_and_skips() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("skips");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-summary");
    let summary = |output: &str, skips: &str| {
        std::fs::write(&out, output).unwrap();
        std::fs::write(&log, skips).unwrap();
        let o = Command::new("bash")
            .arg(script)
            .arg(&out)
            .arg(&log)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        (
            o.status.success(),
            text.lines().last().unwrap_or("").to_string(),
            text,
        )
    };
    let ok = "     Running tests/a.rs (target/debug/deps/a-0123456789abcdef)\n\
              test x ... ok\n\
              test result: ok. 7 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out\n\
              \x20    Running tests/b.rs (target/debug/deps/b-0123456789abcdef)\n\
              test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n";
    let skips = "SKIPPED: a vfs::t [root]: needs root\n\
                 SKIPPED: a vfs::t [root]: needs root\n\
                 SKIPPED: b u [xfs-quota]: no quotas\n";
    let (pass, last, text) = summary(ok, skips);
    assert!(pass, "{text}");
    assert_eq!(last, "8 passed, 0 failed, 3 skipped", "{text}");
    assert!(
        text.contains("[xfs-quota]: no quotas"),
        "reasons listed: {text}"
    );

    let failed = ok.replace("0 failed; 0 ignored", "2 failed; 0 ignored");
    let (pass, last, text) = summary(&failed, "");
    assert!(!pass, "a failure fails the run: {text}");
    assert_eq!(last, "10 passed, 2 failed, 1 skipped", "{text}");

    let crashed = format!("{ok}     Running tests/c.rs (target/debug/deps/c-0123456789abcdef)\n");
    let (pass, _, text) = summary(&crashed, "");
    assert!(!pass, "a binary that reports nothing fails the run: {text}");
}
