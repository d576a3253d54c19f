//! Naive diff, changes and diff size: both layers are served through `get`, their trees are
//! compared by the diff engine, and the references are released afterwards (for a diff
//! stream, when the export finishes or the reader goes away).

use std::os::fd::{AsFd, OwnedFd};

use super::{Graph, Mounted};
use crate::archive::{changes, export, pipe, tarsplit, ChangeSet};
use crate::driver::DiffStream;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::sys::lock::DirLock;

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
    let (mut writer, reader) = pipe::pipe();
    let layer = id.to_string();
    std::thread::Builder::new()
        .name(format!("diff-{id}"))
        .spawn(move || {
            let outcome = export::export_changes(fd.as_fd(), &list, &mut writer)
                .map_err(|e| std::io::Error::other(format!("exporting layer {layer:?}: {e}")));
            drop(fd);
            drop(mount);
            writer.finish(outcome);
        })
        .ctx(|| "starting the export thread".into())?;
    Ok(Box::new(reader))
}

/// The applied tar, reassembled from the layer's tar-split record (no mount needed). The
/// layer is held busy (shared) while the stream is read, so it cannot be removed meanwhile.
pub(super) fn exact(graph: &Graph, id: &str) -> Result<DiffStream> {
    let store = graph.store();
    let guard = store.busy_guard(id, false, "exact diff")?;
    let layer_dir = store.layer_dir(id);
    let root = graph.backend().open_content(store, id)?;
    let (mut writer, reader) = pipe::pipe();
    let layer = id.to_string();
    std::thread::Builder::new()
        .name(format!("exact-{id}"))
        .spawn(move || {
            let outcome = tarsplit::reassemble(&layer_dir, root.as_fd(), &mut writer)
                .map_err(|e| std::io::Error::other(format!("re-exporting layer {layer:?}: {e}")));
            drop(guard);
            writer.finish(outcome);
        })
        .ctx(|| "starting the export thread".into())?;
    Ok(Box::new(reader))
}
