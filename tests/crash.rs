//! SIGKILL during `apply-diff`: the layer must be exactly as before (or absent), `cleanup`
//! must leave no stray staging or layer directories, and the same tar must apply afterwards.
//!
//! The kill point is chosen by how much of a ~50 MB tar has been written into the child's
//! stdin pipe: once `write_all` of N bytes returns, the child has consumed all but at most one
//! pipe buffer of them, and it cannot have finished because the rest of the stream was never
//! sent (and stdin stays open until after the kill). Offsets are randomised per iteration
//! within strata of the stream; set `STRATA_CRASH_SEED` to replay a run (the seed is printed).

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Instant;

use common::graph::{random_content, SplitMix64};
use common::tars::{Meta, TarBuilder};
use common::tree::{assert_trees_eq, read_file, write_file};
use common::Store;

backend_tests!(sigkill_during_apply_diff);

const ITERATIONS: u64 = 4;
const BIG_FILES: usize = 48;
const BIG_SIZE: usize = 1 << 20;
const SMALL_PER_BIG: usize = 5;
const SMALL_SIZE: usize = 4096;

/// One regular file of the big tar: path, length, content seed.
struct Planned {
    path: String,
    len: usize,
    seed: u64,
}

/// A ~50 MB tar: 48 × 1 MiB files interleaved with directories of small files.
fn big_tar() -> (Vec<u8>, Vec<Planned>) {
    let mut t = TarBuilder::new();
    let mut files = Vec::new();
    t.dir("big", Meta::mode(0o755));
    t.dir("small", Meta::mode(0o755));
    for i in 0..BIG_FILES {
        let path = format!("big/file-{i:03}");
        let seed = 10_000 + i as u64;
        t.file(&path, &random_content(BIG_SIZE, seed), Meta::mode(0o644));
        files.push(Planned {
            path,
            len: BIG_SIZE,
            seed,
        });
        t.dir(&format!("small/d{i:03}"), Meta::mode(0o755));
        for j in 0..SMALL_PER_BIG {
            let path = format!("small/d{i:03}/s{j}");
            let seed = 20_000 + (i * SMALL_PER_BIG + j) as u64;
            t.file(&path, &random_content(SMALL_SIZE, seed), Meta::mode(0o600));
            files.push(Planned {
                path,
                len: SMALL_SIZE,
                seed,
            });
        }
    }
    (t.finish(), files)
}

fn crash_seed() -> u64 {
    match std::env::var("STRATA_CRASH_SEED") {
        Ok(v) => v.parse().expect("STRATA_CRASH_SEED must be a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// Starts `apply-diff ID` reading stdin, writes `data[..offset]`, checks the child is still
/// running, SIGKILLs it, and only then closes its stdin.
fn kill_mid_stream(s: &Store, id: &str, data: &[u8], offset: usize) {
    let mut cmd = s.command(["apply-diff", id]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start strata apply-diff");
    let mut stdin = child.stdin.take().unwrap();
    let pid = child.id() as libc::pid_t;

    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (written, stalled) = std::thread::scope(|scope| {
        let watchdog = scope.spawn(move || {
            match done_rx.recv_timeout(common::command_timeout()) {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // SAFETY: kill(2) of our own, not yet reaped child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    true
                }
                _ => false,
            }
        });
        let written = stdin.write_all(&data[..offset]);
        drop(done_tx);
        (written, watchdog.join().unwrap())
    });
    assert!(
        !stalled,
        "apply-diff stopped reading its stdin before byte {offset}"
    );
    if let Err(e) = written {
        let out = child.wait_with_output().unwrap();
        panic!(
            "apply-diff stopped reading before byte {offset} ({e}): {:?}, stderr {:?}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Some(status) = child.try_wait().unwrap() {
        let mut err = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        panic!(
            "apply-diff exited ({status}) although its input stream is incomplete; stderr {err:?}"
        );
    }
    child.kill().expect("SIGKILL apply-diff");
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "apply-diff must have died from SIGKILL: {:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sigkill_during_apply_diff(backend: &str) {
    let Some(s) = Store::new(backend) else { return };
    let started = Instant::now();
    let (tar, files) = big_tar();
    let expected_size: u64 = files.iter().map(|f| f.len as u64).sum();
    let tar_path = s.scratch().join("big.tar");
    fs::write(&tar_path, &tar).unwrap();

    s.create("base", None);
    s.with_layer("base", |root| write_file(root, "base.txt", b"base", 0o644));
    s.create("sibling", Some("base"));

    let seed = crash_seed();
    eprintln!("{backend}: STRATA_CRASH_SEED={seed}");
    let mut rng = SplitMix64::new(seed);
    let lo = 256 * 1024;
    let hi = tar.len() - 4 * BIG_SIZE;
    let span = (hi - lo) as u64 / ITERATIONS;

    for iter in 0..ITERATIONS {
        let id = format!("target-{iter}");
        s.create(&id, Some("base"));
        // Content the tar would overwrite, so a partial apply is visible.
        s.with_layer(&id, |root| {
            write_file(root, "big/file-000", b"pre-existing", 0o644);
            write_file(root, "pre.txt", b"pre", 0o644);
        });
        let before_ls = s.ls_raw();
        let before = s.snapshot(&id);
        let offset = (lo as u64 + iter * span + rng.range(0, span)) as usize;
        eprintln!(
            "{backend}: iteration {iter}: SIGKILL after {offset} of {} bytes",
            tar.len()
        );

        kill_mid_stream(&s, &id, &tar, offset);

        let exists = s.exists(&id);
        if exists {
            assert_eq!(
                s.ls_raw(),
                before_ls,
                "iteration {iter} (offset {offset}): ls after SIGKILL"
            );
            assert_trees_eq(
                &before,
                &s.snapshot(&id),
                &format!("iteration {iter} (offset {offset}): layer after SIGKILL"),
            );
        } else {
            let expected: Vec<&str> = before_ls
                .lines()
                .filter(|l| l.split_whitespace().next() != Some(id.as_str()))
                .collect();
            let now = s.ls_raw();
            assert_eq!(
                now.lines().collect::<Vec<_>>(),
                expected,
                "iteration {iter}: the killed layer vanished, nothing else may change"
            );
        }

        s.ok(["cleanup"]);
        s.assert_clean_layout();
        assert!(s.exists("base") && s.exists("sibling"));

        if !exists {
            s.create(&id, Some("base"));
        }
        let size = s.apply_diff_file(&id, &tar_path);
        assert_eq!(
            size, expected_size,
            "re-apply after the crash: applied size"
        );
        s.with_layer(&id, |root| {
            for f in &files {
                let got = read_file(root, &f.path);
                assert!(
                    got.len() == f.len && got == random_content(f.len, f.seed),
                    "iteration {iter}: {} differs after re-apply ({} bytes)",
                    f.path,
                    got.len()
                );
            }
            assert_eq!(read_file(root, "base.txt"), b"base");
            if exists {
                assert_eq!(read_file(root, "pre.txt"), b"pre");
            }
        });
        s.remove(&id);
        s.ok(["cleanup"]);
        s.assert_clean_layout();
    }
    eprintln!("{backend}: crash test took {:?}", started.elapsed());
}
