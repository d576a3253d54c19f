//! Running a command under a watchdog and measuring its peak resident memory.
//!
//! [`run_measured`] starts the command, kills it (SIGKILL) when it outlives its time limit,
//! and reaps it with `wait4`, whose `ru_maxrss` is the peak RSS of the child (and of any
//! descendants it reaped, e.g. a confined apply helper). Standard output goes where the caller
//! says (a file, for tars and change lists far larger than a test should hold); standard error
//! is captured.

use std::io::Read;
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
/// reaps it with `wait4` for its peak RSS.
pub fn run_measured(mut cmd: Command, stdin: Stdio, stdout: Stdio, timeout: Duration) -> Measured {
    let cmdline = format!("{cmd:?}");
    cmd.stdin(stdin).stdout(stdout).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (status, rusage, timed_out, err_text) = std::thread::scope(|scope| {
        let watchdog = scope.spawn(move || match done_rx.recv_timeout(timeout) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // SAFETY: kill(2) of our own child, which is not reaped before `done` is sent.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                true
            }
            _ => false,
        });
        let reader = scope.spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        });
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: wait4 on our own unreaped child with valid out-pointers.
            let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
            if rc == pid {
                break;
            }
            let e = std::io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::EINTR), "wait4 {cmdline}: {e}");
        }
        drop(done_tx);
        let timed_out = watchdog.join().expect("watchdog thread");
        (
            status,
            rusage,
            timed_out,
            reader.join().expect("stderr reader"),
        )
    });
    // The child is reaped: std's handle must not wait for it again.
    drop(child);
    let elapsed = started.elapsed();
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
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
        peak_rss: rusage.ru_maxrss.max(0) as u64 * 1024,
        elapsed,
    }
}
