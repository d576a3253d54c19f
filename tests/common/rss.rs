//! Running a command under a watchdog and measuring its peak resident memory.
//!
//! [`run_measured`] runs the command under GNU `time`, which reaps it with `wait4` and reports
//! its `ru_maxrss`: the peak RSS of the command (and of any descendants it reaped, e.g. a
//! confined apply helper). The detour matters: a process's `ru_maxrss` also counts the memory
//! image it was forked from, so a command spawned straight from the test process would carry
//! the test process's own peak; forked from the small `time` process it carries ~2 MiB.
//! The watchdog kills the whole process group (SIGKILL) when the command outlives its time
//! limit. Standard output goes where the caller says (a file, for tars and change lists far
//! larger than a test should hold); standard error is captured.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Out;

/// One measured run.
#[derive(Debug)]
pub struct Measured {
    /// Exit status and stderr (`stdout` is empty: it went where the caller sent it).
    pub out: Out,
    /// Peak resident set size in bytes (`ru_maxrss`).
    pub peak_rss: u64,
    /// Wall-clock time until the child was reaped.
    pub elapsed: Duration,
}

impl Measured {
    /// Peak RSS in MiB, rounded up.
    pub fn peak_mib(&self) -> u64 {
        self.peak_rss.div_ceil(1 << 20)
    }

    /// Panics unless the run finished in time, by exiting (not by a signal), and its peak RSS
    /// stayed within `limit_mib`.
    pub fn assert_bounded(&self, limit_mib: u64, what: &str) {
        assert!(
            !self.out.timed_out,
            "{what}: did not finish within its time limit ({:?}): {}",
            self.elapsed,
            self.out.describe()
        );
        assert!(
            self.out.signal.is_none(),
            "{what}: killed by signal {:?}: {}",
            self.out.signal,
            self.out.describe()
        );
        assert!(
            self.peak_mib() <= limit_mib,
            "{what}: peak RSS {} MiB, over the {limit_mib} MiB limit: {}",
            self.peak_mib(),
            self.out.describe()
        );
    }

    /// Panics unless the run succeeded (exit 0) or refused cleanly (exit 1 with a
    /// `strata: ` line on stderr); returns whether it succeeded.
    pub fn ok_or_refused(&self, what: &str) -> bool {
        match self.out.code {
            Some(0) => true,
            Some(1) => {
                assert!(
                    self.out.stderr.lines().any(|l| l.starts_with("strata: ")),
                    "{what}: exit 1 without a `strata: ` message: {}",
                    self.out.describe()
                );
                false
            }
            _ => panic!(
                "{what}: neither success nor a clean refusal: {}",
                self.out.describe()
            ),
        }
    }
}

/// Runs `cmd` with the given stdin and stdout, a `timeout` watchdog, and stderr captured;
/// measures its peak RSS.
pub fn run_measured(cmd: Command, stdin: Stdio, stdout: Stdio, timeout: Duration) -> Measured {
    run_measured_limited(cmd, stdin, stdout, timeout, None)
}

/// [`run_measured`], and no file the command writes may grow beyond `max_file` bytes
/// (`RLIMIT_FSIZE`: `SIGXFSZ` beyond), so an unbounded export cannot fill the disk.
pub fn run_measured_limited(
    cmd: Command,
    stdin: Stdio,
    stdout: Stdio,
    timeout: Duration,
    max_file: Option<u64>,
) -> Measured {
    let cmdline = format!("{cmd:?}");
    let report = tempfile::NamedTempFile::new().expect("temp file for time's report");
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    timed
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(max) = max_file {
        // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
        unsafe {
            timed.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: max,
                    rlim_max: max,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let started = Instant::now();
    let mut child = timed
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start /usr/bin/time for {cmdline}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (status, timed_out, err_text) = std::thread::scope(|scope| {
        let watchdog = scope.spawn(move || match done_rx.recv_timeout(timeout) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // SAFETY: kill(2) of our own child's process group (the child leads it and is
                // not reaped before `done` is sent).
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                true
            }
            _ => false,
        });
        let reader = scope.spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        });
        let status = child.wait().expect("wait for /usr/bin/time");
        drop(done_tx);
        let timed_out = watchdog.join().expect("watchdog thread");
        (status, timed_out, reader.join().expect("stderr reader"))
    });
    let elapsed = started.elapsed();
    let report = std::fs::read_to_string(report.path()).unwrap_or_default();
    // `time` notes how the command ended, then prints %M (KiB) on the last line.
    let peak_kib: u64 = report
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    let by_signal = report.lines().find_map(|l| {
        l.strip_prefix("Command terminated by signal ")
            .and_then(|n| n.trim().parse::<i32>().ok())
    });
    use std::os::unix::process::ExitStatusExt;
    let (code, signal) = match (status.signal(), by_signal) {
        (Some(sig), _) => (None, Some(sig)),
        (None, Some(sig)) => (None, Some(sig)),
        (None, None) => (status.code(), None),
    };
    Measured {
        out: Out {
            cmdline,
            code,
            signal,
            timed_out,
            stdout: Vec::new(),
            stderr: err_text,
        },
        peak_rss: peak_kib * 1024,
        elapsed,
    }
}
