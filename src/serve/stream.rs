//! Bridges between HTTP bodies (async) and the library's blocking [`Read`] streams, with
//! memory bounded by a few chunks whatever the size of the layer.
//!
//! * Request body → `Read`: [`body_reader`] wraps the body's data stream in a
//!   [`StreamReader`] and a [`SyncIoBridge`]; it is read on the blocking pool, and the body is
//!   pulled from the socket only as fast as the reader consumes it. A body that sends nothing
//!   for the timeout fails the read (the apply reading it then rolls back).
//! * `Read` → response body: [`stream_body`] reads on the blocking pool into a bounded
//!   channel whose receiving end is the body. A read error aborts the body (the client sees a
//!   truncated chunked response, never a short but well-formed one); a client that goes away
//!   closes the channel, which stops the reader and drops the stream (releasing its mounts).
//! * A change list → JSON response body: [`json_changes`] encodes `{"Changes": […]}` one
//!   change at a time as the body is read, so no document is built in memory.

use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::archive::{Change, ChangeSet};

/// Bytes read from a stream per chunk.
const CHUNK: usize = 64 * 1024;
/// Chunks buffered between the reading thread and the socket.
const DEPTH: usize = 8;

/// A blocking reader over a request body. Must be created inside the tokio runtime and read
/// outside of it (on the blocking pool). A body that sends nothing for `timeout` fails the
/// read with [`io::ErrorKind::TimedOut`], and ends there.
pub(crate) fn body_reader(body: Body, timeout: Duration) -> impl Read + Send + 'static {
    let data = body.into_data_stream().map_err(io::Error::other);
    let timed = stream::unfold(Some(data), move |state| async move {
        let mut data = state?;
        match tokio::time::timeout(timeout, data.next()).await {
            Ok(Some(item)) => Some((item, Some(data))),
            Ok(None) => None,
            Err(_) => {
                let e = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the request body stalled: no data for {} s",
                        timeout.as_secs()
                    ),
                );
                Some((Err(e), None))
            }
        }
    });
    SyncIoBridge::new(StreamReader::new(Box::pin(timed)))
}

/// Reads and discards what is left of `reader`, up to `limit` bytes; returns whether it
/// reached the end. Used after an apply, which stops at the tar's end-of-archive marker while
/// writers often pad the stream further: an unread request body would make the connection
/// unusable for the response.
pub(crate) fn drain(reader: &mut dyn Read, limit: u64) -> bool {
    matches!(io::copy(&mut reader.take(limit + 1), &mut io::sink()), Ok(n) if n <= limit)
}

/// Streams `reader` as a response body. Waits for the first chunk, so that a failure before
/// any byte was produced is returned here (and can become an error status) instead of
/// breaking the body.
pub(crate) async fn stream_body(reader: Box<dyn Read + Send>) -> io::Result<Body> {
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(DEPTH);
    tokio::task::spawn_blocking(move || pump(reader, tx));
    let first = match rx.recv().await {
        None => return Ok(Body::empty()),
        Some(Err(e)) => return Err(e),
        Some(Ok(b)) => b,
    };
    let rest = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Ok(Body::from_stream(
        stream::once(async move { Ok::<_, io::Error>(first) }).chain(rest),
    ))
}

fn pump(mut reader: Box<dyn Read + Send>, tx: mpsc::Sender<io::Result<Bytes>>) {
    loop {
        let mut buf = vec![0u8; CHUNK];
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return; // the client went away
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

/// A path as a JSON string, escaped losslessly like the CLI's output
/// ([`crate::archive::pathfmt::escape`]): JSON strings cannot carry bytes that are not UTF-8,
/// and a name must not be able to pass for another path.
fn json_path(path: &Path) -> String {
    crate::archive::pathfmt::escape(path.as_os_str().as_encoded_bytes())
}

/// Bytes of JSON produced per refill of a [`JsonChanges`] buffer.
const JSON_BATCH: usize = 32 * 1024;

/// `{"Changes":[{"Path":…,"Kind":…},…]}` produced as it is read.
pub(crate) struct JsonChanges<I> {
    changes: Option<I>,
    started: bool,
    first: bool,
    buf: Vec<u8>,
    pos: usize,
}

/// The `Changes` answer for a whole change set, as a reader. The set yields paths by borrowing
/// it, so a producer thread owns the set and encodes it into a bounded pipe
/// ([`crate::archive::pipe`]); memory stays at the set itself plus a few chunks.
pub(crate) fn json_change_set(set: ChangeSet) -> io::Result<Box<dyn Read + Send>> {
    let (w, r) = crate::archive::pipe::pipe();
    std::thread::Builder::new()
        .name("changes-json".into())
        .spawn(move || w.copy_from(&mut json_changes(set.iter())))?;
    Ok(Box::new(r))
}

/// Encodes `changes` as the plugin protocol's `Changes` answer, lazily.
pub(crate) fn json_changes<C>(changes: C) -> JsonChanges<C::IntoIter>
where
    C: IntoIterator<Item = Change>,
{
    JsonChanges {
        changes: Some(changes.into_iter()),
        started: false,
        first: true,
        buf: Vec::with_capacity(JSON_BATCH + 4096),
        pos: 0,
    }
}

impl<I: Iterator<Item = Change>> JsonChanges<I> {
    /// Encodes the next batch; false at the end of the document.
    fn refill(&mut self) -> io::Result<bool> {
        self.buf.clear();
        self.pos = 0;
        if !self.started {
            self.started = true;
            self.buf.extend_from_slice(b"{\"Changes\":[");
        }
        let Some(iter) = self.changes.as_mut() else {
            return Ok(false);
        };
        while self.buf.len() < JSON_BATCH {
            let Some(c) = iter.next() else {
                self.changes = None;
                self.buf.extend_from_slice(b"]}");
                break;
            };
            if !self.first {
                self.buf.push(b',');
            }
            self.first = false;
            self.buf.extend_from_slice(b"{\"Path\":");
            serde_json::to_writer(&mut self.buf, &json_path(&c.path)).map_err(io::Error::other)?;
            self.buf.extend_from_slice(b",\"Kind\":");
            self.buf
                .extend_from_slice(c.kind.code().to_string().as_bytes());
            self.buf.push(b'}');
        }
        Ok(true)
    }
}

impl<I: Iterator<Item = Change>> Read for JsonChanges<I> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if !self.refill()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
