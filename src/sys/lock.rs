//! Advisory locks (`flock`) that die with their process.
//!
//! * [`StoreLock`]: the store-wide lock serialising every "metadata transaction + filesystem
//!   step". The holder writes a description of itself into the lock file, so that a process
//!   that gives up waiting can name who is in the way.
//! * [`DirLock`]: a lock on a directory's own fd, used to mark a staging directory or a layer
//!   as in use by a long operation (an apply, a copy). A crashed holder releases it
//!   automatically, which is what lets startup sweeps tell live work from leftovers.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};

/// Holds the store lock until dropped.
#[derive(Debug)]
pub struct StoreLock {
    file: File,
}

/// Why the store lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process held it for the whole wait; `holder` is its self-description.
    Timeout {
        /// What the holder wrote about itself.
        holder: String,
    },
    /// The lock file could not be opened or locked.
    Io(io::Error),
}

impl StoreLock {
    /// Takes the exclusive lock on `path` (created 0600 if missing), waiting up to `timeout`.
    /// Once held, `me` is written into the file for others to read. A symlink at `path` is
    /// never followed (`ELOOP`), and anything but a regular file there is refused before it
    /// is locked or written.
    pub fn acquire(path: &Path, timeout: Duration, me: &str) -> Result<StoreLock, LockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(LockError::Io)?;
        let md = file.metadata().map_err(LockError::Io)?;
        if !md.is_file() {
            return Err(LockError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            )));
        }
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR) => {
                    if start.elapsed() >= timeout {
                        let mut holder = String::new();
                        let _ = file.rewind();
                        let _ = file.read_to_string(&mut holder);
                        let holder = holder.trim();
                        return Err(LockError::Timeout {
                            holder: if holder.is_empty() {
                                "another process".to_string()
                            } else {
                                holder.to_string()
                            },
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(LockError::Io(e.into())),
            }
        }
        // Best effort: the description only improves a later error message.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = file.write_all(me.as_bytes());
        Ok(StoreLock { file })
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = flock(self.file.as_fd(), FlockOperation::Unlock);
    }
}

/// A lock held on an open directory (or file) descriptor; released when dropped.
#[derive(Debug)]
pub struct DirLock {
    fd: OwnedFd,
}

impl DirLock {
    /// Tries to lock `fd` without waiting: `Ok(None)` if someone else holds a conflicting lock.
    pub fn try_lock(fd: OwnedFd, exclusive: bool) -> io::Result<Option<DirLock>> {
        let op = if exclusive {
            FlockOperation::NonBlockingLockExclusive
        } else {
            FlockOperation::NonBlockingLockShared
        };
        match flock(&fd, op) {
            Ok(()) => Ok(Some(DirLock { fd })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The locked descriptor.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Hands the lock over to a child process: clears `FD_CLOEXEC` so a process spawned next
    /// inherits the descriptor, and returns it without unlocking. The flock belongs to the
    /// open file description, so it stays held for as long as the child keeps its copy, even
    /// after this process closes the returned descriptor.
    pub fn into_inheritable(self) -> io::Result<OwnedFd> {
        rustix::io::fcntl_setfd(&self.fd, rustix::io::FdFlags::empty())?;
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never dropped (ManuallyDrop), so the descriptor is moved out exactly
        // once and closed exactly once, by the returned OwnedFd.
        Ok(unsafe { std::ptr::read(&me.fd) })
    }
}

impl Drop for DirLock {
    /// Unlocks explicitly: an flock belongs to the open file description, which a forked child
    /// (a spawned helper, a mount program) shares until it exits or execs, so merely closing
    /// our fd would leave the layer looking busy for as long as that child lives.
    fn drop(&mut self) {
        let _ = flock(&self.fd, FlockOperation::Unlock);
    }
}

/// Describes this process for lock files: pid and command line.
pub fn describe_self() -> String {
    let cmd = std::env::args().collect::<Vec<_>>().join(" ");
    format!("pid {} ({})", std::process::id(), cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_names_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let held =
            StoreLock::acquire(&p, Duration::from_secs(1), "pid 42 (strata apply-diff x)").unwrap();
        // flock is per open file description, so a second open in this process conflicts.
        match StoreLock::acquire(&p, Duration::from_millis(30), "me") {
            Err(LockError::Timeout { holder }) => {
                assert_eq!(holder, "pid 42 (strata apply-diff x)")
            }
            other => panic!("expected timeout, got {other:?}"),
        }
        drop(held);
        StoreLock::acquire(&p, Duration::from_millis(30), "me").unwrap();
    }

    #[test]
    fn never_follows_a_symlinked_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let p = dir.path().join("lock");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        match StoreLock::acquire(&p, Duration::from_millis(30), "me") {
            Err(LockError::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}"),
            other => panic!("a symlinked lock file must be refused, got {other:?}"),
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        std::fs::remove_file(&p).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(matches!(
            StoreLock::acquire(&p, Duration::from_millis(30), "me"),
            Err(LockError::Io(_))
        ));
    }

    #[test]
    fn dir_lock_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            rustix::fs::open(
                dir.path(),
                rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .unwrap()
        };
        let a = DirLock::try_lock(open(), false).unwrap().unwrap();
        let b = DirLock::try_lock(open(), false).unwrap();
        assert!(b.is_some(), "shared locks coexist");
        assert!(DirLock::try_lock(open(), true).unwrap().is_none());
        drop((a, b));
        assert!(DirLock::try_lock(open(), true).unwrap().is_some());
    }

    #[test]
    fn dir_lock_released_on_drop_even_if_a_child_shares_the_fd() {
        let dir = tempfile::tempdir().unwrap();
        // No O_CLOEXEC: the child inherits the open file description, as a forked process
        // that has not exec-ed yet would.
        let fd = rustix::fs::open(
            dir.path(),
            rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let lock = DirLock::try_lock(fd, true).unwrap().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        drop(lock);
        let again = rustix::fs::open(
            dir.path(),
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let got = DirLock::try_lock(again, true).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(got.is_some(), "the lock must not outlive its DirLock");
    }
}
