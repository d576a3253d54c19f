//! A bounded in-process pipe of byte chunks between two threads. Unlike an OS pipe, a failure
//! on the writing side reaches the reader as an error instead of a silently short stream, and
//! buffers are recycled so steady-state streaming allocates nothing.
//!
//! The reader sees a clean end of stream only after the writer called
//! [`PipeWriter::finish`] with success. A writer that fails, or that is dropped without
//! finishing (its thread panicked or returned early), makes the reader's next `read` fail, so
//! a consumer never mistakes a truncated stream for a whole one.

use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Bytes per chunk.
pub const CHUNK: usize = 1024 * 1024;
/// Chunks in flight.
pub const DEPTH: usize = 4;

/// Creates a connected writer/reader pair.
pub fn pipe() -> (PipeWriter, PipeReader) {
    let (tx, rx) = sync_channel(DEPTH + 1);
    let (free_tx, free_rx) = sync_channel(DEPTH + 2);
    (
        PipeWriter {
            tx,
            free: free_rx,
            buf: Vec::with_capacity(CHUNK),
        },
        PipeReader {
            rx,
            free: free_tx,
            current: Vec::new(),
            pos: 0,
            done: false,
            failed: false,
        },
    )
}

/// What travels through the pipe.
enum Msg {
    /// A chunk of data.
    Data(Vec<u8>),
    /// The writer finished successfully: the stream is complete.
    End,
    /// The writer failed.
    Fail(io::Error),
}

/// The writing end. Data is sent in [`CHUNK`]-sized pieces; call [`PipeWriter::finish`] with
/// the outcome so the reader learns about failures. Dropping it unfinished fails the reader.
pub struct PipeWriter {
    tx: SyncSender<Msg>,
    free: Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

impl PipeWriter {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut next = self
            .free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        next.clear();
        let full = std::mem::replace(&mut self.buf, next);
        self.tx
            .send(Msg::Data(full))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away"))
    }

    /// Ends the stream: flushes on success, or hands the error to the reader (after the data
    /// written before it, so the reader sees exactly where the stream broke off).
    pub fn finish(mut self, outcome: io::Result<()>) {
        let last = match outcome {
            Ok(()) => match self.send_buf() {
                Ok(()) => Msg::End,
                Err(e) => Msg::Fail(e),
            },
            Err(e) => {
                let _ = self.send_buf();
                Msg::Fail(e)
            }
        };
        let _ = self.tx.send(last);
    }

    /// Copies `source` into the pipe until it ends, then finishes with the outcome.
    pub fn copy_from(mut self, source: &mut dyn Read) {
        let outcome = (|| loop {
            if self.buf.capacity() < CHUNK {
                self.buf.reserve(CHUNK - self.buf.len());
            }
            let len = self.buf.len();
            self.buf.resize(CHUNK, 0);
            match source.read(&mut self.buf[len..]) {
                Ok(0) => {
                    self.buf.truncate(len);
                    return Ok(());
                }
                Ok(n) => {
                    self.buf.truncate(len + n);
                    if self.buf.len() == CHUNK {
                        self.send_buf()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.buf.truncate(len),
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(e);
                }
            }
        })();
        self.finish(outcome);
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reading end.
pub struct PipeReader {
    rx: Receiver<Msg>,
    free: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
    /// The stream ended in an error: every further read fails too.
    failed: bool,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return if self.failed {
                    Err(io::Error::other(
                        "the stream failed earlier and is incomplete",
                    ))
                } else {
                    Ok(0)
                };
            }
            match self.rx.recv() {
                Ok(Msg::Data(buf)) => {
                    let old = std::mem::replace(&mut self.current, buf);
                    let _ = self.free.try_send(old);
                    self.pos = 0;
                }
                Ok(Msg::End) => {
                    self.done = true;
                    return Ok(0);
                }
                Ok(Msg::Fail(e)) => {
                    self.done = true;
                    self.failed = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    self.failed = true;
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the producer of the stream stopped without finishing it (it failed or panicked); the data is incomplete",
                    ));
                }
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_propagates_errors() {
        let data: Vec<u8> = (0..CHUNK * 3 + 5).map(|i| i as u8).collect();
        let (w, mut r) = pipe();
        let src = data.clone();
        let t = std::thread::spawn(move || w.copy_from(&mut src.as_slice()));
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        t.join().unwrap();
        assert_eq!(out, data);

        let (mut w, mut r) = pipe();
        let t = std::thread::spawn(move || {
            w.write_all(b"partial").unwrap();
            w.finish(Err(io::Error::other("export failed")));
        });
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert!(err.to_string().contains("export failed"));
        t.join().unwrap();
    }

    /// A writer dropped without `finish` (its thread panicked or returned early) must not look
    /// like a complete stream, neither on the first read after the data nor on later ones.
    #[test]
    fn unfinished_writer_is_an_error() {
        let (mut w, mut r) = pipe();
        let t = std::thread::spawn(move || {
            w.write_all(&[7u8; CHUNK + 10]).unwrap();
            panic!("injected panic in the producer");
        });
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert!(
            err.to_string().contains("stopped without finishing"),
            "{err}"
        );
        assert!(t.join().is_err());
        assert!(
            r.read(&mut [0u8; 8]).is_err(),
            "a failed stream stays failed"
        );

        let (w, mut r) = pipe();
        drop(w);
        assert!(r.read_to_end(&mut Vec::new()).is_err());

        let (w, mut r) = pipe();
        w.finish(Ok(()));
        assert_eq!(
            r.read_to_end(&mut Vec::new()).unwrap(),
            0,
            "empty but finished"
        );
    }

    #[test]
    fn writer_stops_when_reader_leaves() {
        let (mut w, r) = pipe();
        drop(r);
        let big = vec![0u8; CHUNK * 2];
        assert!(w.write_all(&big).is_err());
    }
}
