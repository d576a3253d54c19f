//! Whiteouts, opaque markers, and the end of an apply.
//!
//! An opaque marker removes from its directory everything this layer did not write there,
//! recursively: a directory this layer wrote is kept, but what it holds that this layer did
//! not write goes too (as Docker's walk of the directory does). In overlay format the
//! directory then gets `trusted.overlay.opaque=y` — except the layer root, where the kernel
//! ignores that xattr: there every name the lower layers show gets a whiteout device instead
//! (and a directory this layer kept there is made opaque), so the merged view shows only
//! this layer's entries, as it does on vfs.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;

use rustix::fs::{fsetxattr, mknodat, openat, statat, AtFlags, FileType, Mode, OFlags, XattrFlags};
use rustix::io::Errno;
use tracing::debug;

use super::tree::{lower_lookup, Dir, Lower, OPAQUE_XATTR};
use super::{fail, os, sys, Applier};
use crate::archive::tarstream::Header;
use crate::archive::{Error, Rule};

/// Lists a directory (without `.` and `..`): names and whether each is a directory.
fn list(h: &Header, dir: BorrowedFd<'_>) -> Result<Vec<(Vec<u8>, bool)>, Error> {
    let fd = openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| sys(h, "opening a directory to list it", e))?;
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(&fd).map_err(|e| sys(h, "listing a directory", e))? {
        let entry = entry.map_err(|e| sys(h, "listing a directory", e))?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push((n.to_vec(), entry.file_type() == FileType::Directory));
        }
    }
    Ok(out)
}

/// A directory [`Applier::prune`] still has to visit.
enum Pending {
    /// Already open.
    Open(Dir),
    /// A name in an open parent.
    Named(Arc<OwnedFd>, Vec<u8>),
}

impl Applier {
    pub(super) fn whiteout(
        &mut self,
        h: &Header,
        parent: &[&[u8]],
        target: &[u8],
    ) -> Result<(), Error> {
        if target == b".wh..opq" {
            return self.opaque(h, parent);
        }
        if target.starts_with(b".wh.") {
            debug!(entry = %String::from_utf8_lossy(&h.name), "skipping AUFS metadata");
            return Ok(());
        }
        if matches!(target, b"" | b"." | b"..") {
            return Err(fail(
                h,
                Rule::Whiteout,
                "whiteout of an empty, '.' or '..' name",
            ));
        }
        let dir = self.resolve(h, parent)?;
        if self.remove_existing(h, &dir, target)? {
            self.invalidate();
        }
        if self.tree.is_overlay() && !matches!(self.lower(h, &dir, target)?, Lower::Absent) {
            mknodat(
                dir.fd.as_fd(),
                os(target),
                FileType::CharacterDevice,
                Mode::empty(),
                0,
            )
            .map_err(|e| sys(h, "creating the whiteout device", e))?;
            self.names.occupy(dir.key, target);
            self.invalidate();
        }
        Ok(())
    }

    fn opaque(&mut self, h: &Header, parent: &[&[u8]]) -> Result<(), Error> {
        let dir = self.resolve(h, parent)?;
        self.prune(h, &dir)?;
        if self.tree.is_overlay() {
            // The root, also when reached through a symlink ("slash/.wh..wh..opq").
            if dir.key == self.tree.root().key {
                self.hide_lower_root(h, &dir)?;
            } else {
                fsetxattr(dir.fd.as_fd(), OPAQUE_XATTR, b"y", XattrFlags::empty())
                    .map_err(|e| sys(h, "marking the directory opaque", e))?;
            }
        }
        self.invalidate();
        Ok(())
    }

    /// Removes from `top`, recursively, everything this layer did not write.
    fn prune(&mut self, h: &Header, top: &Dir) -> Result<(), Error> {
        // Depth first; a kept directory is opened when its turn comes, so only the
        // directories with kept subdirectories pending are open at a time.
        let mut todo = vec![Pending::Open(top.clone())];
        while let Some(next) = todo.pop() {
            let dir = match next {
                Pending::Open(dir) => dir,
                Pending::Named(parent, n) => {
                    let fd = crate::fsutil::open_dir_at(parent.as_fd(), os(&n))
                        .map_err(|e| sys(h, "opening a kept directory", e))?;
                    Dir::new(Arc::new(fd), Rc::new(Vec::new()))
                        .map_err(|e| sys(h, "inspecting a kept directory", e))?
                }
            };
            for (n, is_dir) in list(h, dir.fd.as_fd())? {
                let ours = self.names.unpacked(dir.key, &n);
                if !ours {
                    self.remove(h, &dir, &n, is_dir)?;
                } else if is_dir {
                    todo.push(Pending::Named(dir.fd.clone(), n));
                }
            }
        }
        Ok(())
    }

    /// Overlay format, opaque marker at the layer root: whiteouts for what the lowers show.
    fn hide_lower_root(&mut self, h: &Header, root: &Dir) -> Result<(), Error> {
        let mut names = BTreeSet::new();
        for l in root.lowers.iter() {
            names.extend(list(h, l.as_fd())?.into_iter().map(|(n, _)| n));
        }
        for n in names {
            match statat(root.fd.as_fd(), os(&n), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                    // Kept by the marker: it must not merge with the lower directory.
                    let fd = crate::fsutil::open_dir_at(root.fd.as_fd(), os(&n))
                        .map_err(|e| sys(h, "opening a kept directory", e))?;
                    fsetxattr(fd.as_fd(), OPAQUE_XATTR, b"y", XattrFlags::empty())
                        .map_err(|e| sys(h, "marking a directory opaque", e))?;
                }
                Ok(_) => {} // this layer's own entry, or already a whiteout
                Err(Errno::NOENT) => {
                    let (lower, _) = lower_lookup(&root.lowers, os(&n))
                        .map_err(|e| sys(h, "looking up lower layers", e))?;
                    if matches!(lower, Lower::Absent) {
                        continue;
                    }
                    mknodat(
                        root.fd.as_fd(),
                        os(&n),
                        FileType::CharacterDevice,
                        Mode::empty(),
                        0,
                    )
                    .map_err(|e| sys(h, "creating a whiteout device", e))?;
                    self.names.occupy(root.key, &n);
                }
                Err(e) => return Err(sys(h, "inspecting the layer root", e)),
            }
        }
        Ok(())
    }

    /// Applies directory times once every file is written.
    pub(super) fn finish(&mut self) -> Result<(), Error> {
        self.barrier()?;
        std::mem::take(&mut self.dir_times).apply(&mut self.tree)
    }
}
