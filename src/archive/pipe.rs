//! A bounded in-process pipe of byte chunks between two threads. Unlike an OS pipe, a failure
//! on the writing side reaches the reader as an error instead of a silently short stream, and
//! buffers are recycled so steady-state streaming allocates nothing.

use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Bytes per chunk.
pub const CHUNK: usize = 1024 * 1024;
/// Chunks in flight.
pub const DEPTH: usize = 4;

/// Creates a connected writer/reader pair.
pub fn pipe() -> (PipeWriter, PipeReader) {
    let (tx, rx) = sync_channel(DEPTH);
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
        },
    )
}

/// The writing end. Data is sent in [`CHUNK`]-sized pieces; call [`PipeWriter::finish`] with
/// the outcome so the reader learns about failures.
pub struct PipeWriter {
    tx: SyncSender<io::Result<Vec<u8>>>,
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
            .send(Ok(full))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away"))
    }

    /// Ends the stream: flushes on success, or hands the error to the reader.
    pub fn finish(mut self, outcome: io::Result<()>) {
        match outcome.and_then(|()| self.send_buf()) {
            Ok(()) => {}
            Err(e) => {
                let _ = self.tx.send(Err(e));
            }
        }
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
    rx: Receiver<io::Result<Vec<u8>>>,
    free: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(buf)) => {
                    let old = std::mem::replace(&mut self.current, buf);
                    let _ = self.free.try_send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
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

    #[test]
    fn writer_stops_when_reader_leaves() {
        let (mut w, r) = pipe();
        drop(r);
        let big = vec![0u8; CHUNK * 2];
        assert!(w.write_all(&big).is_err());
    }
}
