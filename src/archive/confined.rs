//! Applying a layer in a separate helper process: strata re-executes itself as the layer writer.
//!
//! The parent re-executes its own binary as `<exe> __apply-helper <job>`, pipes the layer
//! stream to the helper's stdin and reads one JSON outcome from its stdout. Before reading a
//! byte, the helper confines itself ([`crate::sys::jail`]): a private mount namespace in which
//! every mount is read-only except the staging directory it writes, and no new privileges.
//! It still runs as root with its capabilities (it must create devices and set owners), so
//! this limits where a defect can write, not what a compromised helper could do with
//! syscalls; dropping capabilities, seccomp and Landlock are not applied yet.
//!
//! Trade-off: a spawn costs a few milliseconds and the stream crosses one more pipe (an extra
//! copy at memory speed), negligible next to writing a layer. In return, a parser crash, abort
//! or runaway allocation kills the helper instead of the server that asked for the apply, and
//! a defect in the engine's own confinement still could not write outside the staging
//! directory. Servers (the Docker plugin) use it by default; the CLI with
//! `--confined-apply`.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::apply::{apply, ApplyOptions, ApplyStats, Format};
use super::compress::Compression;
use super::digest::Expected;
use super::tarstream::Limits;
use super::{Error, Rule};
use crate::fsutil;

/// The argument that makes the strata binary act as the helper.
pub const HELPER_ARG: &str = "__apply-helper";

/// What the helper is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Directory to apply into.
    pub root: PathBuf,
    /// `naive` or `overlay`.
    pub overlay: bool,
    /// Lower layers (overlay format).
    pub lowers: Vec<PathBuf>,
    /// Limits: total bytes, entries, extension record size.
    pub limits: (u64, u64, u64),
    /// Where to record the tar-split, if anywhere.
    pub record_into: Option<PathBuf>,
    /// Expected digest.
    pub digest: Option<String>,
    /// The only directories the helper may write (everything else is read-only to it).
    pub writable: Vec<PathBuf>,
    /// Writer threads for small files.
    #[serde(default)]
    pub writers: usize,
}

impl Job {
    /// Describes an apply of `opts` into `root`, writable only within `writable`.
    pub fn new(root: &Path, opts: &ApplyOptions, writable: Vec<PathBuf>) -> Job {
        Job {
            root: root.to_path_buf(),
            overlay: opts.format == Format::Overlay,
            lowers: opts.lowers.clone(),
            limits: (
                opts.limits.max_bytes,
                opts.limits.max_entries,
                opts.limits.max_meta,
            ),
            record_into: opts.record_into.clone(),
            digest: opts.digest.as_ref().map(|d| d.to_string()),
            writable,
            writers: opts.writers,
        }
    }

    fn options(&self) -> Result<ApplyOptions, Error> {
        let digest = match &self.digest {
            Some(d) => Some(
                Expected::parse(d)
                    .map_err(|e| Error::io("reading the apply job", io::Error::other(e)))?,
            ),
            None => None,
        };
        Ok(ApplyOptions {
            format: if self.overlay {
                Format::Overlay
            } else {
                Format::Naive
            },
            lowers: self.lowers.clone(),
            limits: Limits {
                max_bytes: self.limits.0,
                max_entries: self.limits.1,
                max_meta: self.limits.2,
            },
            record_into: self.record_into.clone(),
            digest,
            writers: self.writers,
        })
    }
}

/// An outcome as it crosses the pipe.
#[derive(Debug, Serialize, Deserialize)]
enum Outcome {
    Ok {
        size: u64,
        entries: u64,
        bytes: u64,
        compression: Option<String>,
    },
    Entry {
        entry: String,
        rule: String,
        detail: String,
    },
    Stream {
        offset: u64,
        detail: String,
    },
    Digest {
        expected: String,
        actual: String,
    },
    Io {
        context: String,
        message: String,
        errno: Option<i32>,
    },
}

const RULES: [(Rule, &str); 12] = [
    (Rule::Escape, "escape"),
    (Rule::BadName, "bad-name"),
    (Rule::RootType, "root-type"),
    (Rule::Whiteout, "whiteout"),
    (Rule::Hardlink, "hardlink"),
    (Rule::Xattr, "xattr"),
    (Rule::Device, "device"),
    (Rule::NotDirectory, "not-directory"),
    (Rule::Limit, "limit"),
    (Rule::Format, "format"),
    (Rule::Unsupported, "unsupported"),
    (Rule::Io, "io"),
];

fn compression_name(c: Option<Compression>) -> Option<String> {
    c.map(|c| format!("{c:?}").to_lowercase())
}

impl Outcome {
    fn from_result(r: Result<ApplyStats, Error>) -> Outcome {
        match r {
            Ok(s) => Outcome::Ok {
                size: s.size,
                entries: s.entries,
                bytes: s.bytes,
                compression: compression_name(s.compression),
            },
            Err(Error::Entry {
                entry,
                rule,
                detail,
            }) => Outcome::Entry {
                entry,
                rule: RULES
                    .iter()
                    .find(|(r, _)| *r == rule)
                    .map(|(_, n)| n.to_string())
                    .unwrap_or_default(),
                detail,
            },
            Err(Error::Stream { offset, detail }) => Outcome::Stream { offset, detail },
            Err(Error::Digest { expected, actual }) => Outcome::Digest { expected, actual },
            Err(Error::Io { context, source }) => Outcome::Io {
                context,
                errno: source.raw_os_error(),
                message: source.to_string(),
            },
        }
    }

    fn into_result(self) -> Result<ApplyStats, Error> {
        match self {
            Outcome::Ok {
                size,
                entries,
                bytes,
                compression,
            } => Ok(ApplyStats {
                size,
                entries,
                bytes,
                compression: match compression.as_deref() {
                    Some("gzip") => Some(Compression::Gzip),
                    Some("zstd") => Some(Compression::Zstd),
                    Some(_) => Some(Compression::None),
                    None => None,
                },
            }),
            Outcome::Entry {
                entry,
                rule,
                detail,
            } => Err(Error::Entry {
                entry,
                rule: RULES
                    .iter()
                    .find(|(_, n)| *n == rule)
                    .map(|(r, _)| *r)
                    .unwrap_or(Rule::Io),
                detail,
            }),
            Outcome::Stream { offset, detail } => Err(Error::Stream { offset, detail }),
            Outcome::Digest { expected, actual } => Err(Error::Digest { expected, actual }),
            Outcome::Io {
                context,
                message,
                errno,
            } => Err(Error::Io {
                context,
                source: match errno {
                    Some(n) => io::Error::from_raw_os_error(n),
                    None => io::Error::other(message),
                },
            }),
        }
    }
}

/// Runs `job` in a helper process started from `exe`, feeding it `input`.
pub fn run_in_helper(
    exe: &Path,
    job: &Job,
    input: &mut (dyn Read + Send),
) -> Result<ApplyStats, Error> {
    let spec = serde_json::to_string(job)
        .map_err(|e| Error::io("encoding the apply job", io::Error::other(e)))?;
    let mut child = Command::new(exe)
        .arg(HELPER_ARG)
        .arg(spec)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("starting the apply helper {}", exe.display()), e))?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        return Err(Error::io(
            "starting the apply helper",
            io::Error::other("missing pipes"),
        ));
    };
    let (pumped, out, err) = std::thread::scope(|s| {
        let pump = s.spawn(move || {
            let r = io::copy(input, &mut stdin);
            drop(stdin);
            r
        });
        let errs = s.spawn(move || {
            let mut e = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut e);
            e
        });
        let mut out = Vec::new();
        let read = (&mut stdout).take(1 << 20).read_to_end(&mut out);
        (
            pump.join()
                .unwrap_or_else(|_| Err(io::Error::other("the input pump panicked"))),
            read.map(|_| out),
            errs.join().unwrap_or_default(),
        )
    });
    let status = child
        .wait()
        .map_err(|e| Error::io("waiting for the apply helper", e))?;
    let outcome = out
        .ok()
        .and_then(|o| serde_json::from_slice::<Outcome>(&o).ok());
    match outcome {
        Some(o) => {
            let result = o.into_result();
            // The helper stopped reading early because the input itself failed: say so.
            if let (Err(_), Err(e)) = (&result, &pumped) {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    return Err(Error::io(
                        "reading the layer",
                        io::Error::new(e.kind(), e.to_string()),
                    ));
                }
            }
            result
        }
        None => Err(Error::io(
            "the apply helper failed",
            io::Error::other(format!(
                "{status}; stderr: {}",
                String::from_utf8_lossy(&err).trim()
            )),
        )),
    }
}

/// The helper's entry point: call it from `main` when the first argument is [`HELPER_ARG`],
/// before any thread is started. Returns the process exit status.
pub fn helper_main(job_spec: &str) -> i32 {
    let result = (|| {
        let job: Job = serde_json::from_str(job_spec)
            .map_err(|e| Error::io("reading the apply job", io::Error::other(e)))?;
        let writable: Vec<&Path> = job.writable.iter().map(PathBuf::as_path).collect();
        crate::sys::jail::confine_writes_to(&writable)
            .map_err(|e| Error::io("confining the apply helper", e))?;
        let opts = job.options()?;
        let root = fsutil::open_dir(&job.root)
            .map_err(|e| Error::io(format!("opening {}", job.root.display()), e))?;
        apply(std::os::fd::AsFd::as_fd(&root), &mut io::stdin(), &opts)
    })();
    let outcome = Outcome::from_result(result);
    let mut out = io::stdout().lock();
    match serde_json::to_writer(&mut out, &outcome)
        .and_then(|()| out.flush().map_err(serde_json::Error::io))
    {
        Ok(()) => 0,
        Err(_) => 3,
    }
}
