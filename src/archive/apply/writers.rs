//! Writer threads for small regular files, so that the kernel work of creating and filling
//! files (most of an apply's time) runs on more than one core.
//!
//! The applier hands a file to the pool only when the result cannot depend on order: the file
//! goes into a directory this apply created, under a name nothing of this apply occupies, so
//! it is certainly absent and `O_EXCL` cannot meet anything. Everything else stays on the
//! applier's thread, in stream order. Before an operation that depends on a file in flight —
//! the same name again, a hard link to it, a whiteout or preservation of it — the applier
//! waits for that file; before removing a directory, and before setting directory times, it
//! waits for all of them. A failure in a writer fails the apply with the entry's name.
//!
//! Each directory's files go to one writer (chosen by the directory's identity), so the
//! writers work in different directories at once instead of queueing on one directory's
//! lock; the queues are bounded by bytes and files in flight, not per writer, so one
//! directory's run of files can queue up while another writer drains the previous one.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::Scope;

use rustix::fs::{openat, Mode, OFlags};
use rustix::io::Errno;

use super::super::fsmeta::{self, Meta, Needs};
use super::super::{Error, Rule};
use super::tree::Key;

/// Largest file handed to a writer; bigger ones are streamed by the applier itself.
pub const MAX_JOB: u64 = 1 << 20;

/// Content bytes in flight at most (bounds the apply's memory).
const MAX_BYTES_IN_FLIGHT: usize = 16 << 20;

/// Files in flight at most.
const MAX_FILES_IN_FLIGHT: usize = 1024;

/// One file to create.
pub struct Job {
    /// Directory to create it in.
    pub dir: Arc<OwnedFd>,
    /// Its name there, with the directory's identity.
    pub key: Key,
    /// Its whole content.
    pub data: Vec<u8>,
    /// Owner, mode, xattrs and times.
    pub meta: Meta,
    /// Which owner/mode steps are still needed after creation.
    pub needs: Needs,
    /// The tar entry, for messages.
    pub entry: Vec<u8>,
}

struct Done {
    key: Key,
    data: Vec<u8>,
    result: Result<(), Error>,
}

/// The pool, as the applier sees it.
pub struct Pool {
    jobs: Vec<Sender<Job>>,
    done: Receiver<Done>,
    in_flight: HashSet<Key>,
    bytes_in_flight: usize,
    free: Vec<Vec<u8>>,
    failed: Option<Error>,
}

fn write(job: &Job) -> Result<(), Error> {
    let fail =
        |what: &str, e: std::io::Error| Error::entry(&job.entry, Rule::Io, format!("{what}: {e}"));
    let fd = openat(
        job.dir.as_fd(),
        OsStr::from_bytes(&job.key.1),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(job.meta.mode & 0o777),
    )
    .map_err(|e| match e {
        // Cannot happen when the applier's bookkeeping is right; never silently replace.
        Errno::EXIST => Error::entry(
            &job.entry,
            Rule::Io,
            "creating the file: it unexpectedly exists",
        ),
        e => fail("creating the file", e.into()),
    })?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&job.data)
        .map_err(|e| fail("writing the file", e))?;
    fsmeta::apply_fd(file.as_fd(), &job.meta, job.needs)
        .map_err(|e| fail("setting metadata", e))?;
    fsmeta::set_times_fd(file.as_fd(), job.meta.atime, job.meta.mtime)
        .map_err(|e| fail("setting times", e))
}

impl Pool {
    /// Starts `n` writer threads in `scope`.
    pub fn spawn<'scope>(scope: &'scope Scope<'scope, '_>, n: usize) -> Pool {
        let (done_tx, done_rx) = channel::<Done>();
        let mut jobs = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            let (tx, rx) = channel::<Job>();
            jobs.push(tx);
            let done: Sender<Done> = done_tx.clone();
            scope.spawn(move || {
                while let Ok(job) = rx.recv() {
                    let result = write(&job);
                    let finished = Done {
                        key: job.key,
                        data: job.data,
                        result,
                    };
                    if done.send(finished).is_err() {
                        return;
                    }
                }
            });
        }
        Pool {
            jobs,
            done: done_rx,
            in_flight: HashSet::new(),
            bytes_in_flight: 0,
            free: Vec::new(),
            failed: None,
        }
    }

    /// An empty buffer for a job's content (recycled from finished jobs).
    pub fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.free.pop().unwrap_or_default();
        b.clear();
        b
    }

    fn finish(&mut self, d: Done) {
        self.in_flight.remove(&d.key);
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(d.data.len());
        if self.free.len() < 8 {
            self.free.push(d.data);
        }
        if let (Err(e), None) = (d.result, &self.failed) {
            self.failed = Some(e);
        }
    }

    fn check(&mut self) -> Result<(), Error> {
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Collects finished jobs without waiting; the first failure, if any.
    pub fn poll(&mut self) -> Result<(), Error> {
        while let Ok(d) = self.done.try_recv() {
            self.finish(d);
        }
        self.check()
    }

    fn wait_one(&mut self) -> Result<(), Error> {
        match self.done.recv() {
            Ok(d) => {
                self.finish(d);
                Ok(())
            }
            Err(_) => Err(Error::io(
                "waiting for writer threads",
                std::io::Error::other("they stopped"),
            )),
        }
    }

    /// Whether the file `key` is still being written.
    pub fn busy(&self, key: &Key) -> bool {
        self.in_flight.contains(key)
    }

    /// Waits until the file `key` is written (if it is in flight).
    pub fn wait_for(&mut self, key: &Key) -> Result<(), Error> {
        while self.in_flight.contains(key) {
            self.wait_one()?;
        }
        self.check()
    }

    /// Waits until every file in flight is written.
    pub fn barrier(&mut self) -> Result<(), Error> {
        while !self.in_flight.is_empty() {
            self.wait_one()?;
        }
        self.check()
    }

    /// Hands a file to the writers: to the one that takes its directory's files.
    pub fn submit(&mut self, job: Job) -> Result<(), Error> {
        self.poll()?;
        while !self.in_flight.is_empty()
            && (self.in_flight.len() >= MAX_FILES_IN_FLIGHT
                || self.bytes_in_flight + job.data.len() > MAX_BYTES_IN_FLIGHT)
        {
            self.wait_one()?;
        }
        self.check()?;
        if self.jobs.is_empty() {
            return Err(Error::io(
                "submitting a file",
                std::io::Error::other("pool closed"),
            ));
        }
        let (dev, ino) = job.key.0;
        // Fibonacci hashing of the directory's identity: consecutive inode numbers spread.
        let mix = (dev ^ ino).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let writer = (mix % self.jobs.len() as u64) as usize;
        self.in_flight.insert(job.key.clone());
        self.bytes_in_flight += job.data.len();
        self.jobs[writer].send(job).map_err(|_| {
            Error::io(
                "submitting a file",
                std::io::Error::other("writer threads stopped"),
            )
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queues lets the writers finish what they hold and exit.
        self.jobs.clear();
    }
}
