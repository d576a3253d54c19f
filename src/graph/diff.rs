//! Diff, changes and diff size. Naive ones serve both layers through `get`, compare their
//! trees with the diff engine, and release the references afterwards (for a diff stream, when
//! the export finishes or the reader goes away); a layer whose exact record holds is diffed
//! from its tar-split record instead (see [`exact_state`]).
//!
//! A diff stream is produced on a helper thread; any failure of it (error or panic) reaches
//! the reader as a read error naming the layer, never as the clean end of a short tar.

use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;

use super::{Graph, Mounted};
use crate::archive::{self, changes, changeset, export, pipe, tarsplit, ChangeSet};
use crate::driver::DiffStream;
use crate::error::{Error, IoContext, Result};
use crate::store::LayerRecord;
use crate::sys::lock::DirLock;
use crate::{failpoint, fsutil};

/// What keeps the tree a change list was computed from readable: the layer held busy (native)
/// or its `get` reference (naive).
pub(super) enum Hold {
    Native(#[allow(dead_code)] DirLock),
    Mounted(#[allow(dead_code)] Mounted),
}

/// Computes the changes of `id` against `base` and returns them with a descriptor of the tree
/// the changed files can be read from, kept valid by the returned hold. Against the layer's own
/// parent the backend's native method is used when it has one (no mount); otherwise both
/// layers are served through `get` and compared.
pub(super) fn changes(
    graph: &Graph,
    id: &str,
    base: Option<&str>,
) -> Result<(ChangeSet, Hold, OwnedFd)> {
    let store = graph.store();
    let chain = store.chain(id)?;
    if base == chain[0].parent.as_deref() {
        let guard = store.busy_guard(id, false, "diff")?;
        if let Some(native) = graph.backend().native_changes(store, &chain) {
            let (list, fd) = native?;
            return Ok((list, Hold::Native(guard), fd));
        }
    }
    let new = Mounted::new(graph, id)?;
    let old = base.map(|b| Mounted::new(graph, b)).transpose()?;
    let new_fd =
        fsutil::open_dir(new.path()).ctx(|| format!("opening {}", new.path().display()))?;
    let old_fd = match &old {
        Some(m) => {
            Some(fsutil::open_dir(m.path()).ctx(|| format!("opening {}", m.path().display()))?)
        }
        None => None,
    };
    let list = changes::changes_dirs(new_fd.as_fd(), old_fd.as_ref().map(|f| f.as_fd())).map_err(
        |source| Error::Archive {
            layer: id.to_string(),
            source,
        },
    )?;
    drop(old);
    Ok((list, Hold::Mounted(new), new_fd))
}

/// Refuses a change list `diff` would refuse to export, before anything is written, so that
/// `changes` never lists what the exported layer could not carry:
/// * paths that add up to more than [`changeset::MAX_PATH_BYTES`] of names (a hostile chain
///   of directories makes that grow with the square of its depth);
/// * a path apply would read as a whiteout (see [`export::refuse_whiteout_name`]): an
///   addition the exported layer would turn into a deletion. Each component is looked at
///   once: the parents a path shares with the previous one were checked with it.
pub(super) fn refuse_unexportable(id: &str, list: &ChangeSet) -> Result<()> {
    let names = list.path_bytes();
    if names > changeset::MAX_PATH_BYTES {
        return Err(Error::Archive {
            layer: id.to_string(),
            source: archive::Error::entry(
                "/",
                archive::Rule::Limit,
                format!(
                    "the changed paths add up to {names} bytes of names (every path repeats its \
                     parents: a tree that deep cannot be listed or exported); the limit is {} bytes",
                    changeset::MAX_PATH_BYTES
                ),
            ),
        });
    }
    list.try_for_each(|step| {
        let fresh = &step.comps[step.kept.min(step.comps.len())..];
        if fresh
            .iter()
            .all(|c| !c.starts_with(export::WHITEOUT_PREFIX))
        {
            return Ok(());
        }
        let path = step.comps.join(&b'/');
        export::refuse_whiteout_name(&path)
    })
    .map_err(|source| Error::Archive {
        layer: id.to_string(),
        source,
    })
}

/// Bytes of added and modified non-directories.
pub(super) fn size(graph: &Graph, id: &str, base: Option<&str>) -> Result<u64> {
    let (list, _mount, fd) = changes(graph, id, base)?;
    changes::changes_size(fd.as_fd(), &list).map_err(|source| Error::Archive {
        layer: id.to_string(),
        source,
    })
}

/// A tar of the changes, produced on a helper thread while the caller reads it.
pub(super) fn export(graph: &Graph, id: &str, base: Option<&str>) -> Result<DiffStream> {
    let (list, mount, fd) = changes(graph, id, base)?;
    // Refused before any byte is streamed, with the error `changes` gives.
    refuse_unexportable(id, &list)?;
    spawn_producer("diff", id, move |out| {
        let outcome = export::export_changes(fd.as_fd(), &list, out);
        drop(fd);
        drop(mount);
        outcome
    })
}

/// Whether `rec`'s tar-split record reproduces its content exactly, so that `diff` against
/// its own parent re-exports the applied tar byte for byte; if not, why.
///
/// Valid only for a layer whose whole content came from one recorded apply onto the freshly
/// created (never served writable) layer, and which has not been served writable since.
pub(super) fn exact_state(rec: &LayerRecord) -> std::result::Result<(), &'static str> {
    if rec.exact {
        Ok(())
    } else if rec.dirty {
        Err("served writable since its last apply")
    } else if rec.generation == 0 {
        Err("never applied")
    } else if rec.generation > 1 {
        Err("applied more than once")
    } else {
        Err("applied onto content written through a writable mount")
    }
}

/// `metadata`'s `ExactDiff` value: `true`, or `false (<reason>)`.
pub(super) fn exact_label(rec: &LayerRecord) -> String {
    match exact_state(rec) {
        Ok(()) => "true".to_string(),
        Err(why) => format!("false ({why})"),
    }
}

/// `diff` against `base`: the applied tar again when the layer's exact record holds and `base`
/// is its own parent, else the changes exported from the trees.
pub(super) fn stream(graph: &Graph, id: &str, base: Option<&str>) -> Result<DiffStream> {
    let rec = graph.store().record(id)?;
    if base == rec.parent.as_deref() {
        match exact_state(&rec) {
            Ok(()) => return exact(graph, id),
            // An applied layer whose record no longer holds: the tar may differ from the one
            // applied (a caller relying on ReproducesExactDiffs should know).
            Err(why) if rec.generation > 0 => tracing::warn!(
                layer = id,
                reason = why,
                "no valid exact-diff record: comparing trees, the tar may differ from the applied one"
            ),
            Err(why) => tracing::debug!(layer = id, reason = why, "diff compares trees"),
        }
    }
    export(graph, id, base)
}

/// The applied tar, reassembled from the layer's tar-split record (no mount needed). The
/// layer is held busy (shared) while the stream is read, so it cannot be removed meanwhile.
pub(super) fn exact(graph: &Graph, id: &str) -> Result<DiffStream> {
    let store = graph.store();
    let guard = store.busy_guard(id, false, "exact diff")?;
    let layer_dir = store.layer_dir(id);
    let root = graph.backend().open_content(store, id)?;
    spawn_producer("exact", id, move |out| {
        let outcome = tarsplit::reassemble(&layer_dir, root.as_fd(), out);
        drop(guard);
        outcome
    })
}

/// Runs `produce` on a helper thread writing into a pipe whose reading end is returned.
/// Whatever stops the producer early — an error, a panic — reaches the reader as an error
/// naming the layer, never as a clean end of a short tar.
fn spawn_producer<F>(what: &'static str, id: &str, produce: F) -> Result<DiffStream>
where
    F: FnOnce(&mut dyn Write) -> std::result::Result<(), archive::Error> + Send + 'static,
{
    let (writer, reader) = pipe::pipe();
    let layer = id.to_string();
    std::thread::Builder::new()
        .name(format!("{what}-{id}"))
        .spawn(move || {
            let mut out = Faulty::new(writer, &layer);
            let run = std::panic::catch_unwind(AssertUnwindSafe(|| produce(&mut out)));
            let outcome = match run {
                Ok(Ok(())) => Ok(()),
                Ok(Err(archive::Error::Io { source, .. }))
                    if source.kind() == io::ErrorKind::BrokenPipe =>
                {
                    // The reader went away (a client that stopped reading): nobody to tell.
                    tracing::debug!(layer = %layer, "diff export stopped: the reader went away");
                    Err(source)
                }
                Ok(Err(e)) => {
                    let e = io::Error::other(format!("exporting layer {layer:?}: {e}"));
                    tracing::error!(layer = %layer, error = %e, "diff export failed");
                    Err(e)
                }
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown cause".into());
                    let e = io::Error::other(format!(
                        "exporting layer {layer:?}: the export thread panicked: {msg}"
                    ));
                    tracing::error!(layer = %layer, error = %e, "diff export failed");
                    Err(e)
                }
            };
            out.inner.finish(outcome);
        })
        .ctx(|| "starting the export thread".into())?;
    Ok(Box::new(reader))
}

/// Bytes let through before an injected export fault fires: past the first entry's header,
/// so the reader has already received part of a tar.
const FAULT_AFTER: usize = 1024;

/// The pipe's writing end, with the `export-error`/`export-panic` faults of
/// [`crate::failpoint`] applied (looked up once per export).
struct Faulty {
    inner: pipe::PipeWriter,
    fault: Option<&'static str>,
    written: usize,
}

impl Faulty {
    fn new(inner: pipe::PipeWriter, layer: &str) -> Self {
        let fault = ["export-error", "export-panic"]
            .into_iter()
            .find(|f| failpoint::fault(f, layer));
        Faulty {
            inner,
            fault,
            written: 0,
        }
    }
}

impl Write for Faulty {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(fault) = self.fault else {
            return self.inner.write(data);
        };
        if self.written >= FAULT_AFTER {
            if fault == "export-panic" {
                panic!("injected fault export-panic");
            }
            return Err(io::Error::other("injected fault export-error"));
        }
        let n = self
            .inner
            .write(&data[..data.len().min(FAULT_AFTER - self.written)])?;
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
