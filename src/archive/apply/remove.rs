//! Removing what an entry replaces or deletes, and forgetting what was known about it.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{openat, statat, unlinkat, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::tree::Dir;
use super::{os, sys, Applier};
use crate::archive::tarstream::Header;
use crate::archive::Error;
use crate::fsutil;

impl Applier {
    /// Removes whatever `dir/name` is in the writable tree, if anything; true if it existed.
    pub(super) fn remove_existing(
        &mut self,
        h: &Header,
        dir: &Dir,
        name: &[u8],
    ) -> Result<bool, Error> {
        self.wait_for(dir.key, name)?;
        let st = match statat(dir.fd.as_fd(), os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(sys(h, "inspecting the existing entry", e)),
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        self.remove(h, dir, name, ft == FileType::Directory)?;
        if ft == FileType::Symlink {
            // Directories resolved through the symlink (by path, in the tree's caches) are
            // no longer where that path leads.
            self.invalidate();
        }
        Ok(true)
    }

    /// Removes `dir/name`, first moving payloads this layer recorded there out of the way.
    pub(super) fn remove(
        &mut self,
        h: &Header,
        dir: &Dir,
        name: &[u8],
        is_dir: bool,
    ) -> Result<(), Error> {
        // A removed directory may hold files still being written; a file may be one.
        if is_dir {
            self.barrier()?;
        } else {
            self.wait_for(dir.key, name)?;
        }
        if let Some(r) = &mut self.rec {
            if r.preserve(dir.fd.as_fd(), dir.key, name, is_dir)? {
                return Ok(());
            }
        }
        if is_dir {
            self.forget_tree(h, dir, name)?;
            fsutil::remove_tree_at(dir.fd.as_fd(), os(name))
                .map_err(|e| sys(h, "removing the existing directory", e))?;
            self.invalidate();
        } else {
            unlinkat(dir.fd.as_fd(), os(name), AtFlags::empty())
                .map_err(|e| sys(h, "removing the existing entry", e))?;
        }
        Ok(())
    }

    /// Drops what [`Applier::names`] knows about the directory `dir/name` and the
    /// directories below it, which are about to be removed: their inodes may be reused.
    pub(super) fn forget_tree(&mut self, h: &Header, dir: &Dir, name: &[u8]) -> Result<(), Error> {
        if !self.names.any_unpacked() {
            return Ok(());
        }
        // Depth first, holding open only the directories whose subdirectories are pending.
        let mut todo: Vec<(std::rc::Rc<OwnedFd>, Vec<u8>)> = vec![(
            std::rc::Rc::new(
                dir.fd
                    .try_clone()
                    .map_err(|e| sys(h, "duplicating a directory fd", e))?,
            ),
            name.to_vec(),
        )];
        while let Some((parent, n)) = todo.pop() {
            let fd = match fsutil::open_dir_at(parent.as_fd(), os(&n)) {
                Ok(fd) => std::rc::Rc::new(fd),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(sys(h, "opening a removed directory", e)),
            };
            let st =
                rustix::fs::fstat(&*fd).map_err(|e| sys(h, "inspecting a removed directory", e))?;
            self.names.forget_dir((st.st_dev, st.st_ino));
            let listing = openat(
                &*fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| sys(h, "listing a removed directory", e))?;
            for entry in rustix::fs::Dir::read_from(&listing)
                .map_err(|e| sys(h, "listing a removed directory", e))?
            {
                let entry = entry.map_err(|e| sys(h, "listing a removed directory", e))?;
                let c = entry.file_name().to_bytes();
                if c != b"." && c != b".." && entry.file_type() == FileType::Directory {
                    todo.push((fd.clone(), c.to_vec()));
                }
            }
        }
        Ok(())
    }
}
