//! Running one CLI command: a watchdog, captured output, and what it did ([`Out`]).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Per-command timeout.
pub fn command_timeout() -> Duration {
    let secs = std::env::var("STRATA_TEST_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(180);
    Duration::from_secs(secs)
}

/// What one CLI invocation did.
#[derive(Debug, Clone)]
pub struct Out {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Signal that killed it, if any.
    pub signal: Option<i32>,
    /// Whether the watchdog killed it.
    pub timed_out: bool,
    /// Raw standard output.
    pub stdout: Vec<u8>,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl Out {
    /// Standard output as (lossy) text.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Trimmed standard output.
    pub fn trimmed(&self) -> String {
        self.stdout_str().trim().to_string()
    }

    /// A full description for assertion messages (stdout and stderr clipped to 4,000 bytes
    /// each: a message naming a 100,000-deep path is not read whole).
    pub fn describe(&self) -> String {
        format!(
            "`{}`\n  exit code: {:?}, signal: {:?}, timed out: {}\n  stdout: {:?}\n  stderr: {:?}",
            self.cmdline,
            self.code,
            self.signal,
            self.timed_out,
            clip(&self.stdout_str(), 4000),
            clip(&self.stderr, 4000)
        )
    }

    /// Panics unless the exit status is exactly `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert!(!self.timed_out, "command timed out: {}", self.describe());
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit status: {}",
            self.describe()
        );
        self
    }

    /// The operation-failure contract: exit 1 and a line of stderr starting with `strata: `.
    /// Returns the whole of stderr.
    pub fn expect_failure(&self) -> String {
        self.expect_code(1);
        assert!(
            self.stderr.lines().any(|l| l.starts_with("strata: ")),
            "exit 1 but no stderr line starts with \"strata: \": {}",
            self.describe()
        );
        self.stderr.clone()
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), marked when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} bytes truncated]", &text[..end], text.len() - end)
}

/// Runs `cmd` with optional stdin bytes, a watchdog, and captured output.
pub fn run_command(mut cmd: Command, input: Option<&[u8]>) -> Out {
    let cmdline = format!("{cmd:?}");
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
    let pid = child.id() as libc::pid_t;
    let stdin = child.stdin.take();
    let timeout = command_timeout();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (output, timed_out) = std::thread::scope(|scope| {
        let watchdog = scope.spawn(move || match done_rx.recv_timeout(timeout) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // SAFETY: plain kill(2) of our own child; it cannot have been reaped yet because
                // the waiting thread signals `done` right after reaping.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                true
            }
            _ => false,
        });
        if let (Some(mut stdin), Some(data)) = (stdin, input) {
            scope.spawn(move || {
                // EPIPE when the child stops reading early; its exit status tells why.
                let _ = stdin.write_all(data);
            });
        }
        let output = child.wait_with_output();
        drop(done_tx);
        (output, watchdog.join().expect("watchdog thread"))
    });
    let output = output.unwrap_or_else(|e| panic!("waiting for {cmdline}: {e}"));
    use std::os::unix::process::ExitStatusExt;
    Out {
        cmdline,
        code: output.status.code(),
        signal: output.status.signal(),
        timed_out,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
