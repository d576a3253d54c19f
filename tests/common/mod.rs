//! Black-box harness for the `strata` binary.
//!
//! * [`Store`]: a store in its own temporary directory, driven through the CLI with
//!   `--root <tmp>/root --driver <backend>`; on drop it runs `strata cleanup`, detaches every
//!   mount left under the root (deepest first) and deletes the directory, also when the test
//!   panicked.
//! * [`tree`]: reading and writing files inside a layer path, and whole-tree snapshots.
//! * [`graph`]: the graphtest helpers (`random_content`, `add_many_files`, `create_base`...).
//! * [`tars`]: crafting layer tars (whiteouts, opaque markers, links, devices, xattrs, long
//!   names) and gzip/zstd wrapping.
//!
//! Every CLI call is a separate process with a watchdog (`STRATA_TEST_TIMEOUT` seconds,
//! default 180); a hung command is SIGKILLed and the test fails with what it printed.
//!
//! Environment knobs: `STRATA_TEST_KEEP=1` keeps the temporary directories (after unmounting).
//! A test that cannot run here skips through [`skip::skip`] (one line format, counted by
//! `scripts/test`); `STRATA_TEST_NO_SKIP=1` turns such skips into failures, except for the keys
//! `STRATA_TEST_ALLOW_SKIP` names.

#![allow(dead_code)]

pub mod graph;
pub mod mounts;
pub mod parse;
pub mod prereq;
pub mod rss;
pub mod run;
pub mod skip;
pub mod tars;
pub mod tree;

// Re-exported for the suites; each uses some of them.
#[allow(unused_imports)]
pub use mounts::{detach_mounts_under, mounts, mounts_under, MountEntry};
#[allow(unused_imports)]
pub use parse::{parse_changes, parse_ls, sorted_changes, Change, ChangeKind, LsEntry};
#[allow(unused_imports)]
pub use prereq::{require_root, skip_reason};
#[allow(unused_imports)]
pub use run::{clip, command_timeout, run_command, Out};
pub use skip::skip;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Path of the binary under test.
pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// Both backends, in the order the test macro generates them.
pub const BACKENDS: [&str; 2] = ["vfs", "overlay"];

/// The backend that is not `backend`.
pub fn other_backend(backend: &str) -> &'static str {
    if backend == "vfs" {
        "overlay"
    } else {
        "vfs"
    }
}

/// Generates `mod vfs { #[test] fn NAME() }` and `mod overlay { ... }` calling `NAME(backend)`
/// for every listed function, so a failure names the backend (`overlay::create_empty`).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod vfs {
            $(
                #[test]
                fn $name() {
                    super::$name("vfs");
                }
            )*
        }
        mod overlay {
            $(
                #[test]
                fn $name() {
                    super::$name("overlay");
                }
            )*
        }
    };
}
/// A store in its own temporary directory.
pub struct Store {
    tmp: Option<tempfile::TempDir>,
    /// Remove the temp dir with `rm -rf` (see [`Store::expect_deep_trees`]).
    deep: std::sync::atomic::AtomicBool,
    /// Canonical temp dir (parent of the root); scratch space for tars etc.
    dir: PathBuf,
    root: PathBuf,
    backend: &'static str,
}

impl Store {
    /// A fresh store for `backend` (`"vfs"` or `"overlay"`), or `None` (after a [`skip`])
    /// when this machine cannot run that backend's tests. The root directory itself is not
    /// created: the first command creates it.
    pub fn new(backend: &str) -> Option<Store> {
        let backend: &'static str = match backend {
            "vfs" => "vfs",
            "overlay" => "overlay",
            "block" => "block",
            other => panic!("unknown backend {other}"),
        };
        let tmp = tempfile::Builder::new()
            .prefix("strata-test-")
            .tempdir()
            .expect("create temp dir");
        let dir = tmp.path().canonicalize().expect("canonicalize temp dir");
        if let Some((key, why)) = skip_reason(backend, &dir) {
            skip(key, &format!("{backend}: {why}"));
            return None;
        }
        let root = dir.join("root");
        Some(Store {
            tmp: Some(tmp),
            deep: std::sync::atomic::AtomicBool::new(false),
            dir,
            root,
            backend,
        })
    }

    /// Like [`Store::new`] but the root path is `dir/<name>`; for tests that need an unusual
    /// root (e.g. one with a space). Same skipping rules.
    pub fn new_with_root_name(backend: &str, name: &str) -> Option<Store> {
        let mut s = Store::new(backend)?;
        s.root = s.dir.join(name);
        Some(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store will hold trees deeper than a recursive walk should go (std's
    /// `remove_dir_all` keeps a descriptor and a stack frame per level): teardown removes the
    /// temp dir with `rm -rf`, which handles any depth.
    pub fn expect_deep_trees(&self) {
        self.deep.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Scratch directory (the root's parent), for tar files and the like.
    pub fn scratch(&self) -> &Path {
        &self.dir
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// `ROOT/layers`.
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// `ROOT/staging`.
    pub fn staging_dir(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// A bare command for the binary with a clean environment (no `STRATA_*`, no `RUST_LOG`)
    /// and no arguments.
    pub fn bare_command() -> Command {
        let mut cmd = Command::new(STRATA);
        cmd.env_remove("STRATA_ROOT")
            .env_remove("STRATA_DRIVER")
            .env_remove("RUST_LOG")
            .env_remove("RUST_BACKTRACE");
        cmd
    }

    /// `strata --root ROOT --driver BACKEND <args>`, not yet started.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Self::bare_command();
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--driver")
            .arg(self.backend)
            .args(args);
        cmd
    }

    /// Runs `strata --root ROOT --driver BACKEND <args>`.
    pub fn run<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_command(self.command(args), None)
    }

    /// Like [`Store::run`] with `input` on stdin.
    pub fn run_stdin<I, S>(&self, args: I, input: &[u8]) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_command(self.command(args), Some(input))
    }

    /// Runs with this store's root but the given driver flag (`None`: no `--driver`) and extra
    /// environment variables.
    pub fn run_driver<I, S>(&self, driver: Option<&str>, env: &[(&str, &str)], args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Self::bare_command();
        cmd.arg("--root").arg(&self.root);
        if let Some(d) = driver {
            cmd.arg("--driver").arg(d);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(args);
        run_command(cmd, None)
    }

    /// Runs and asserts exit 0; returns trimmed stdout.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(args);
        out.expect_code(0);
        out.trimmed()
    }

    /// Runs and asserts exit 0; returns raw stdout.
    pub fn ok_bytes<I, S>(&self, args: I) -> Vec<u8>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(args);
        out.expect_code(0);
        out.stdout
    }

    /// Runs with stdin and asserts exit 0; returns trimmed stdout.
    pub fn ok_stdin<I, S>(&self, args: I, input: &[u8]) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run_stdin(args, input);
        out.expect_code(0);
        out.trimmed()
    }

    /// Runs and asserts the failure contract (exit 1, `strata: ` on stderr); returns stderr.
    pub fn fail<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(args).expect_failure()
    }

    /// Like [`Store::fail`] with stdin.
    pub fn fail_stdin<I, S>(&self, args: I, input: &[u8]) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_stdin(args, input).expect_failure()
    }

    /// Runs and asserts exit 2 (usage error); returns stderr.
    pub fn usage_error<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(args);
        out.expect_code(2);
        out.stderr
    }

    // ---- typed wrappers -------------------------------------------------------------------

    /// `create ID [--parent P]` (image layer).
    pub fn create(&self, id: &str, parent: Option<&str>) {
        let mut args = vec!["create", id];
        if let Some(p) = parent {
            args.extend(["--parent", p]);
        }
        self.ok(args);
    }

    /// `create ID [--parent P] --rw` (container layer).
    pub fn create_rw(&self, id: &str, parent: Option<&str>) {
        let mut args = vec!["create", id, "--rw"];
        if let Some(p) = parent {
            args.extend(["--parent", p]);
        }
        self.ok(args);
    }

    pub fn remove(&self, id: &str) {
        self.ok(["remove", id]);
    }

    /// `get ID`: asserts the printed path is absolute, lies under the root, and is a directory.
    pub fn get(&self, id: &str) -> PathBuf {
        let out = self.ok(["get", id]);
        let path = PathBuf::from(&out);
        assert!(
            path.is_absolute(),
            "get {id} must print an absolute path, got {out:?}"
        );
        assert!(
            path.starts_with(&self.root),
            "get {id} printed {out:?}, outside the store root {}",
            self.root.display()
        );
        let md = fs::metadata(&path).unwrap_or_else(|e| panic!("get {id} -> {out:?}: {e}"));
        assert!(md.is_dir(), "get {id} -> {out:?} is not a directory");
        path
    }

    pub fn put(&self, id: &str) {
        self.ok(["put", id]);
    }

    /// `exists ID` (asserting exit 0 and `true`/`false`).
    pub fn exists(&self, id: &str) -> bool {
        let out = self.ok(["exists", id]);
        match out.as_str() {
            "true" => true,
            "false" => false,
            other => panic!("exists {id} must print true or false, got {other:?}"),
        }
    }

    /// Raw `ls` output (for before/after equality).
    pub fn ls_raw(&self) -> String {
        let out = self.run(["ls"]);
        out.expect_code(0);
        out.stdout_str()
    }

    pub fn ls(&self) -> Vec<LsEntry> {
        parse_ls(&self.ls_raw())
    }

    /// The `ls` entry of `id` (panics when absent).
    pub fn ls_entry(&self, id: &str) -> LsEntry {
        let all = self.ls();
        all.iter()
            .find(|e| e.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("layer {id} not in ls: {all:?}"))
    }

    /// Layer ids according to `ls`.
    pub fn ids(&self) -> BTreeSet<String> {
        self.ls().into_iter().map(|e| e.id).collect()
    }

    /// `apply-diff ID` with the tar on stdin; returns the printed size.
    pub fn apply_diff(&self, id: &str, parent: Option<&str>, tar: &[u8]) -> u64 {
        let mut args = vec!["apply-diff", id];
        if let Some(p) = parent {
            args.extend(["--parent", p]);
        }
        parse_u64(&self.ok_stdin(args, tar), "apply-diff")
    }

    /// `apply-diff ID FILE`; returns the printed size.
    pub fn apply_diff_file(&self, id: &str, file: &Path) -> u64 {
        let out = self.ok([OsStr::new("apply-diff"), OsStr::new(id), file.as_os_str()]);
        parse_u64(&out, "apply-diff")
    }

    /// `diff ID [--parent P]` to stdout.
    pub fn diff(&self, id: &str, parent: Option<&str>) -> Vec<u8> {
        let mut args = vec!["diff", id];
        if let Some(p) = parent {
            args.extend(["--parent", p]);
        }
        self.ok_bytes(args)
    }

    /// `changes ID [--parent P]`, parsed; asserts the output is sorted by path.
    pub fn changes(&self, id: &str, parent: Option<&str>) -> Vec<Change> {
        let mut args = vec!["changes", id];
        if let Some(p) = parent {
            args.extend(["--parent", p]);
        }
        let out = self.run(args);
        out.expect_code(0);
        let changes = parse_changes(&out.stdout_str());
        let paths: Vec<&[u8]> = changes.iter().map(|c| c.0.as_bytes()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "changes output is not sorted by path");
        changes
    }

    /// `diff-size ID [--parent P]`.
    pub fn diff_size(&self, id: &str, parent: Option<&str>) -> u64 {
        let mut args = vec!["diff-size", id];
        if let Some(p) = parent {
            args.extend(["--parent", p]);
        }
        parse_u64(&self.ok(args), "diff-size")
    }

    /// `get`, run `f` on the path, `put`. (A panic inside `f` skips the `put`; the store's drop
    /// unmounts anyway.)
    pub fn with_layer<R>(&self, id: &str, f: impl FnOnce(&Path) -> R) -> R {
        let path = self.get(id);
        let r = f(&path);
        self.put(id);
        r
    }

    /// Snapshot of the layer's merged tree (through `get`/`put`).
    pub fn snapshot(&self, id: &str) -> tree::Tree {
        self.with_layer(id, tree::snapshot)
    }

    /// Entries of `ROOT/layers` (names).
    pub fn layer_dir_names(&self) -> BTreeSet<String> {
        dir_names(&self.layers_dir())
    }

    /// Entries of `ROOT/staging` (empty when it does not exist).
    pub fn staging_names(&self) -> BTreeSet<String> {
        dir_names(&self.staging_dir())
    }

    /// Asserts the "after cleanup" layout: `ROOT/staging` empty (or absent), `ROOT/layers`
    /// holding exactly one directory per layer `ls` lists.
    pub fn assert_clean_layout(&self) {
        let staging = self.staging_names();
        assert!(
            staging.is_empty(),
            "{} not empty after cleanup: {staging:?}",
            self.staging_dir().display()
        );
        let ids = self.ids();
        let dirs = self.layer_dir_names();
        assert_eq!(
            dirs,
            ids,
            "{} must hold exactly the layers ls lists",
            self.layers_dir().display()
        );
        for d in &dirs {
            let p = self.layers_dir().join(d);
            let md = fs::symlink_metadata(&p).unwrap();
            assert!(md.is_dir(), "{} is not a directory", p.display());
        }
    }
}

/// What must not change when an operation is refused: `ls` output and `ROOT/layers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreState {
    pub ls: String,
    pub layer_dirs: BTreeSet<String>,
}

impl Store {
    /// Captures `ls` and the `ROOT/layers` listing.
    pub fn state(&self) -> StoreState {
        StoreState {
            ls: self.ls_raw(),
            layer_dirs: self.layer_dir_names(),
        }
    }

    /// Asserts `ls` and `ROOT/layers` are as captured in `before`.
    pub fn assert_state(&self, before: &StoreState, what: &str) {
        let now = self.state();
        assert_eq!(now.ls, before.ls, "{what}: ls output changed");
        assert_eq!(
            now.layer_dirs, before.layer_dirs,
            "{what}: ROOT/layers changed"
        );
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.root.exists() {
            let out = run_command_quiet(self.command(["cleanup"]));
            if let Some(msg) = out {
                eprintln!("note: cleanup during teardown: {msg}");
            }
            let left = detach_mounts_under(&self.root);
            if !left.is_empty() {
                eprintln!("warning: could not unmount {left:?}");
            }
        }
        if std::env::var_os("STRATA_TEST_KEEP").is_some() {
            if let Some(tmp) = self.tmp.take() {
                eprintln!("keeping {}", tmp.keep().display());
            }
            return;
        }
        if let Some(tmp) = self.tmp.take() {
            let path = tmp.path().to_path_buf();
            if self.deep.load(std::sync::atomic::Ordering::Relaxed) {
                let rm = Command::new("rm")
                    .args(["-rf", "--one-file-system", "--"])
                    .arg(&path)
                    .status();
                if !matches!(rm, Ok(st) if st.success()) || path.exists() {
                    eprintln!("warning: rm -rf {} failed: {rm:?}", path.display());
                }
                let _ = tmp.keep();
                return;
            }
            if let Err(e) = tmp.close() {
                eprintln!("warning: removing {}: {e}", path.display());
            }
        }
    }
}

/// Runs a command without panicking (for teardown); `Some(description)` unless it exited 0.
fn run_command_quiet(cmd: Command) -> Option<String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_command(cmd, None))) {
        Ok(out) if out.code == Some(0) => None,
        Ok(out) => Some(out.describe()),
        Err(_) => Some("could not run".into()),
    }
}

/// Names in a directory (empty set when it does not exist).
pub fn dir_names(dir: &Path) -> BTreeSet<String> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => panic!("read_dir {}: {e}", dir.display()),
    }
}

/// Parses a decimal byte count printed by the CLI.
pub fn parse_u64(s: &str, what: &str) -> u64 {
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{what} must print a byte count, got {s:?}"))
}

/// Asserts `haystack` contains `needle`, case-insensitively.
pub fn assert_mentions(haystack: &str, needle: &str, what: &str) {
    assert!(
        haystack.to_lowercase().contains(&needle.to_lowercase()),
        "{what}: message should mention {needle:?}, got: {haystack:?}"
    );
}
