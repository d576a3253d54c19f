//! Bridges between HTTP bodies (async) and the library's blocking [`Read`] streams, with
//! memory bounded by a few chunks whatever the size of the layer.
//!
//! * Request body → `Read`: [`body_reader`] wraps the body's data stream in a
//!   [`StreamReader`] and a [`SyncIoBridge`]; it is read on the blocking pool, and the body is
//!   pulled from the socket only as fast as the reader consumes it.
//! * `Read` → response body: [`stream_body`] reads on the blocking pool into a bounded
//!   channel whose receiving end is the body. A read error aborts the body (the client sees a
//!   truncated chunked response, never a short but well-formed one); a client that goes away
//!   closes the channel, which stops the reader and drops the stream (releasing its mounts).

use std::io::{self, Read};

use axum::body::Body;
use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

/// Bytes read from a stream per chunk.
const CHUNK: usize = 64 * 1024;
/// Chunks buffered between the reading thread and the socket.
const DEPTH: usize = 8;

/// A blocking reader over a request body. Must be created inside the tokio runtime and read
/// outside of it (on the blocking pool).
pub(crate) fn body_reader(body: Body) -> impl Read + Send + 'static {
    let data = body.into_data_stream().map_err(io::Error::other);
    SyncIoBridge::new(StreamReader::new(data))
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
