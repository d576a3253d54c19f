//! What every hostile case shares: a store with the breakout suite's victim beside it, CLI
//! runs under a time limit with their peak RSS measured, and the end-of-case checks (victim
//! untouched, no mount or loop device left, `cleanup` clean).
//!
//! Nothing here walks a hostile tree by path: trees are built and inspected with
//! descriptor-relative calls, and the store's temp dir is removed with `rm -rf`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, PipeWriter, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::fs::{Mode, OFlags};

use crate::common::rss::{run_measured_limited, Measured};
use crate::common::{mounts_under, Store};
use crate::oracle::{self, Env, Node};

/// Peak RSS allowed for `changes`, `diff` and `diff-size` (and `remove`).
pub const EXPORT_MIB: u64 = 256;
/// Peak RSS allowed for `apply-diff`.
pub const APPLY_MIB: u64 = 64;
/// Largest file a measured command may write (its stdout or `-o` file): `SIGXFSZ` beyond.
pub const MAX_OUTPUT: u64 = 2 << 30;

/// A store with a victim beside it, for one hostile case.
pub struct Hostile {
    /// The breakout suite's environment (store, victim directory and file).
    pub env: Env,
    victim: BTreeMap<PathBuf, Node>,
    victim_tmp: BTreeMap<PathBuf, Node>,
}

impl Hostile {
    /// A fresh environment for `backend`, or `None` when it cannot be tested here (skipped).
    pub fn new(backend: &str) -> Option<Hostile> {
        let env = Env::new(backend)?;
        env.s.expect_deep_trees();
        let victim = oracle::snap(&env.victim, true);
        let victim_tmp = oracle::snap(&env.s.scratch().join("tmp"), true);
        Some(Hostile {
            env,
            victim,
            victim_tmp,
        })
    }

    /// The store.
    pub fn s(&self) -> &Store {
        &self.env.s
    }

    /// A scratch file path (beside the store, not in it).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.s().scratch().join(name)
    }

    /// Runs `strata --no-sync <args>` with `stdin`, stdout into `out` (or discarded), a time
    /// limit and the output size limit; measures its peak RSS.
    pub fn run(
        &self,
        args: &[&str],
        stdin: Stdio,
        out: Option<&Path>,
        limit: Duration,
    ) -> Measured {
        let mut cmd = self.s().command(["--no-sync"]);
        cmd.args(args);
        let stdout = match out {
            Some(p) => Stdio::from(File::create(p).expect("create the output file")),
            None => Stdio::null(),
        };
        run_measured_limited(cmd, stdin, stdout, limit, Some(MAX_OUTPUT))
    }

    /// Like [`Hostile::run`] with stdin fed by `feed` from another thread (a generated tar);
    /// the feeder stops quietly when the command stops reading.
    pub fn run_fed(
        &self,
        args: &[&str],
        feed: impl FnOnce(&mut PipeWriter) -> std::io::Result<()> + Send,
        limit: Duration,
    ) -> Measured {
        let (rd, mut wr) = std::io::pipe().expect("pipe");
        let mut cmd = self.s().command(["--no-sync"]);
        cmd.args(args);
        std::thread::scope(|scope| {
            let feeder = scope.spawn(move || {
                // EPIPE when the command stops reading early; its exit status tells why.
                let _ = feed(&mut wr);
            });
            let m =
                run_measured_limited(cmd, Stdio::from(rd), Stdio::null(), limit, Some(MAX_OUTPUT));
            feeder.join().expect("tar feeder");
            m
        })
    }

    /// Runs `args` and asserts it finished in time within `limit_mib` and either succeeded or
    /// refused cleanly (exit 1, a `strata: ` line); returns whether it succeeded.
    pub fn bounded(
        &self,
        args: &[&str],
        out: Option<&Path>,
        limit: Duration,
        limit_mib: u64,
    ) -> bool {
        let what = args.join(" ");
        let m = self.run(args, Stdio::null(), out, limit);
        eprintln!(
            "{what}: exit {:?}, peak RSS {} MiB, {:?}",
            m.out.code,
            m.peak_mib(),
            m.elapsed
        );
        m.assert_bounded(limit_mib, &what);
        m.ok_or_refused(&what)
    }

    /// Asserts the victim directory and file are exactly as they were.
    pub fn assert_victim(&self, what: &str) {
        oracle::assert_same(
            &self.victim,
            &oracle::snap(&self.env.victim, true),
            &format!("{what}: victim directory changed"),
        );
        oracle::assert_same(
            &self.victim_tmp,
            &oracle::snap(&self.s().scratch().join("tmp"), true),
            &format!("{what}: victim file changed"),
        );
    }

    /// The end of a case: victim untouched, no mount under the root, no loop device backed
    /// by a file beside the store, and `cleanup` succeeds.
    pub fn finish(&self) {
        self.assert_victim("at the end");
        // A filesystem the case mounted at the root itself (a tmpfs) is not strata's.
        let left: Vec<_> = mounts_under(self.s().root())
            .into_iter()
            .filter(|m| m.mount_point != self.s().root())
            .collect();
        assert!(left.is_empty(), "mounts left under the store: {left:?}");
        let loops = loops_backed_under(self.s().scratch());
        assert!(loops.is_empty(), "loop devices left: {loops:?}");
        self.s().ok(["cleanup"]);
    }
}

/// Loop devices whose backing file lies under `dir`.
pub fn loops_backed_under(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let backing = e.path().join("loop/backing_file");
        if let Ok(b) = std::fs::read_to_string(&backing) {
            if Path::new(b.trim()).starts_with(dir) {
                out.push(format!("/dev/{name} -> {}", b.trim()));
            }
        }
    }
    out
}

// ---- descriptor-relative trees -------------------------------------------------------------

/// Opens the directory `path` (not following a final symlink).
pub fn open_dir(path: &Path) -> OwnedFd {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Opens the directory `name` inside `dir`.
pub fn open_at(dir: &OwnedFd, name: &str) -> OwnedFd {
    rustix::fs::openat(
        dir.as_fd(),
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("openat {name:?}: {e}"))
}

/// Makes a chain of `depth` directories named `name` under `top`, one `mkdirat` and one
/// `openat` per level (no path strings); puts an empty file `bottom` in the deepest.
pub fn make_chain(top: &Path, name: &str, depth: usize) {
    let mut fd = open_dir(top);
    for level in 0..depth {
        rustix::fs::mkdirat(fd.as_fd(), name, Mode::from_raw_mode(0o755))
            .unwrap_or_else(|e| panic!("mkdirat at depth {level}: {e}"));
        fd = open_at(&fd, name);
    }
    rustix::fs::openat(
        fd.as_fd(),
        "bottom",
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .expect("create the bottom file");
}

/// The depth of the chain of `name` directories under `top` and whether its deepest holds
/// `bottom`, walked by descriptor.
pub fn chain_depth(top: &Path, name: &str) -> (usize, bool) {
    let mut fd = open_dir(top);
    let mut depth = 0;
    while let Ok(next) = rustix::fs::openat(
        fd.as_fd(),
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        fd = next;
        depth += 1;
    }
    let bottom = rustix::fs::statat(fd.as_fd(), "bottom", rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
    (depth, bottom.is_ok())
}

// ---- generated tars ------------------------------------------------------------------------

/// Writes one ustar header (no payload) for `name` (≤ 100 bytes), type `kind` (`b'0'` file,
/// `b'5'` directory), size `size`.
pub fn ustar_header(
    w: &mut impl Write,
    name: &[u8],
    kind: u8,
    mode: u32,
    size: u64,
) -> std::io::Result<()> {
    assert!(name.len() <= 100, "ustar name too long");
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    let octal = |field: &mut [u8], v: u64| {
        let s = format!("{v:0w$o}", w = field.len() - 1);
        field[..s.len()].copy_from_slice(s.as_bytes());
    };
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_600_000_000);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| *b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    w.write_all(&h)
}

/// Writes an entry whose name may be any length: a PAX `path` record first when it does not
/// fit ustar's 100 bytes.
pub fn entry(w: &mut impl Write, name: &[u8], kind: u8, mode: u32) -> std::io::Result<()> {
    if name.len() <= 100 {
        return ustar_header(w, name, kind, mode, 0);
    }
    let body_len = " path=".len() + name.len() + 1;
    // The record's length counts its own digits.
    let mut len = body_len + 1;
    while len != body_len + len.to_string().len() {
        len = body_len + len.to_string().len();
    }
    let mut rec = format!("{len} path=").into_bytes();
    rec.extend_from_slice(name);
    rec.push(b'\n');
    assert_eq!(rec.len(), len, "PAX record length");
    ustar_header(w, b"pax-header", b'x', 0o644, rec.len() as u64)?;
    w.write_all(&rec)?;
    w.write_all(&vec![0u8; (512 - rec.len() % 512) % 512])?;
    ustar_header(w, &name[..100], kind, mode, 0)
}

/// Ends a tar (two zero blocks).
pub fn end(w: &mut impl Write) -> std::io::Result<()> {
    w.write_all(&[0u8; 1024])
}

/// Counts lines of a (possibly huge) text file and checks each with `check`, streaming.
pub fn for_each_line(path: &Path, mut check: impl FnMut(&[u8])) -> usize {
    let mut r = BufReader::new(File::open(path).expect("open the output"));
    let mut line = Vec::new();
    let mut n = 0;
    loop {
        line.clear();
        let got = r.read_until(b'\n', &mut line).expect("read the output");
        if got == 0 {
            return n;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        check(&line);
        n += 1;
    }
}
