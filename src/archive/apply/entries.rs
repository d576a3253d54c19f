//! Creating the leaves: regular files (streamed, or handed to the writer threads), symlinks
//! and special files, with their metadata.

use std::io::{Read, Write};
use std::os::fd::AsFd;

use rustix::fs::{mknodat, openat, statat, symlinkat, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use tracing::debug;

use super::tree::Dir;
use super::writers::{self, Job};
use super::{fail, has_user, os, sys, Applier};
use crate::archive::fsmeta::{self, Meta};
use crate::archive::tarstream::{Header, Kind, TarReader};
use crate::archive::{Error, Rule};

impl Applier {
    pub(super) fn regular<R: Read>(
        &mut self,
        h: &Header,
        dir: &Dir,
        name: &[u8],
        meta: &Meta,
        tr: &mut TarReader<R>,
    ) -> Result<(), Error> {
        if let Some(done) = self.dispatch(h, dir, name, meta, tr)? {
            return Ok(done);
        }
        let fd = self.create(h, dir, name, |d| {
            openat(
                d.fd.as_fd(),
                os(name),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(meta.mode & 0o777),
            )
        })?;
        tr.claim_payload();
        let mut file = std::fs::File::from(fd);
        match &h.sparse {
            None => loop {
                let n = tr.read_payload(&mut self.buf)?;
                if n == 0 {
                    break;
                }
                file.write_all(&self.buf[..n])
                    .map_err(|e| sys(h, "writing the file", e))?;
            },
            Some(sp) => {
                use std::os::unix::fs::FileExt;
                for &(off, len) in &sp.segments {
                    let mut done = 0u64;
                    while done < len {
                        let want = (len - done).min(self.buf.len() as u64) as usize;
                        let n = tr.read_payload(&mut self.buf[..want])?;
                        file.write_all_at(&self.buf[..n], off + done)
                            .map_err(|e| sys(h, "writing the sparse file", e))?;
                        done += n as u64;
                    }
                }
                tr.read_payload(&mut self.buf)?; // consumes the padding
                file.set_len(sp.real_size)
                    .map_err(|e| sys(h, "sizing the sparse file", e))?;
            }
        }
        fsmeta::apply_fd(file.as_fd(), meta, self.needs(dir, meta, false))
            .map_err(|e| sys(h, "setting metadata", e))?;
        fsmeta::set_times_fd(file.as_fd(), meta.atime, meta.mtime)
            .map_err(|e| sys(h, "setting times", e))?;
        if let Some(r) = &mut self.rec {
            r.file(
                &h.name,
                h.size,
                h.sparse.as_ref().map(|s| s.segments.as_slice()),
                dir.fd.as_fd(),
                dir.key,
                name,
            )?;
        }
        Ok(())
    }

    pub(super) fn symlink(
        &mut self,
        h: &Header,
        dir: &Dir,
        name: &[u8],
        meta: &Meta,
    ) -> Result<(), Error> {
        if h.link.is_empty() {
            return Err(fail(h, Rule::BadName, "empty symlink target"));
        }
        if h.link.contains(&0) {
            return Err(fail(h, Rule::BadName, "symlink target contains a NUL byte"));
        }
        self.create(h, dir, name, |d| {
            symlinkat(os(&h.link), d.fd.as_fd(), os(name))
        })?;
        let needs = self.needs(dir, meta, false);
        self.set_at(h, dir, name, meta, true, needs)
    }

    /// Runs `make` to create `dir/name`; if something is already there, removes it (with the
    /// layer's own rules: merges, preserved payloads) and tries once more. Checking first
    /// would cost a `stat` for every entry; collisions are rare.
    pub(super) fn create<T>(
        &mut self,
        h: &Header,
        dir: &Dir,
        name: &[u8],
        make: impl Fn(&Dir) -> rustix::io::Result<T>,
    ) -> Result<T, Error> {
        match make(dir) {
            Err(Errno::EXIST) => {
                self.remove_existing(h, dir, name)?;
                make(dir).map_err(|e| sys(h, "creating the entry", e))
            }
            r => r.map_err(|e| sys(h, "creating the entry", e)),
        }
    }

    /// Hands a small file to the writer threads when its outcome cannot depend on order (see
    /// [`writers`]); `Ok(None)` when the caller must write it itself.
    pub(super) fn dispatch<R: Read>(
        &mut self,
        h: &Header,
        dir: &Dir,
        name: &[u8],
        meta: &Meta,
        tr: &mut TarReader<R>,
    ) -> Result<Option<()>, Error> {
        let key = (dir.key, name.to_vec());
        if self.pool.is_none()
            || !dir.fresh
            || h.sparse.is_some()
            || h.size > writers::MAX_JOB
            || self.names.occupied(dir.key, name)
        {
            return Ok(None);
        }
        let needs = self.needs(dir, meta, false);
        let Some(pool) = self.pool.as_mut() else {
            return Ok(None);
        };
        let mut data = pool.buffer();
        tr.claim_payload();
        data.resize(h.size as usize, 0);
        let mut got = 0;
        while got < data.len() {
            let n = tr.read_payload(&mut data[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        tr.read_payload(&mut self.buf)?; // consumes the padding
        if let Some(r) = &mut self.rec {
            r.file(&h.name, h.size, None, dir.fd.as_fd(), dir.key, name)?;
        }
        pool.submit(Job {
            dir: dir.fd.clone(),
            key,
            data,
            meta: meta.clone(),
            needs,
            entry: h.name.clone(),
        })?;
        Ok(Some(()))
    }

    /// Which metadata steps an entry just created in `dir` still needs.
    pub(super) fn needs(&self, dir: &Dir, meta: &Meta, is_dir: bool) -> fsmeta::Needs {
        fsmeta::Needs {
            chown: !self.creds.owner_ok(dir, meta.uid, meta.gid),
            chmod: !self.creds.mode_ok(dir, meta.mode, is_dir),
        }
    }

    /// Sets metadata on `dir/name` without following it (symlinks: never chmod, no times
    /// through the link).
    pub(super) fn set_at(
        &self,
        h: &Header,
        dir: &Dir,
        name: &[u8],
        meta: &Meta,
        symlink: bool,
        needs: fsmeta::Needs,
    ) -> Result<(), Error> {
        match fsmeta::apply_at(dir.fd.as_fd(), os(name), meta, needs, symlink) {
            Ok(()) => {}
            Err(e)
                if symlink && e.raw_os_error() == Some(libc::EPERM) && !meta.xattrs.is_empty() =>
            {
                // user.* xattrs cannot be set on symlinks; Docker drops them too.
                debug!(entry = %String::from_utf8_lossy(&h.name), "dropping xattrs a symlink cannot carry");
                let bare = Meta {
                    xattrs: Vec::new(),
                    ..meta.clone()
                };
                fsmeta::apply_at(dir.fd.as_fd(), os(name), &bare, needs, true)
                    .map_err(|e| sys(h, "setting metadata", e))?;
            }
            Err(e) if !symlink && e.raw_os_error() == Some(libc::EPERM) && has_user(meta) => {
                // The kernel refuses user.* xattrs on fifos and devices; Docker ignores that.
                let st = statat(dir.fd.as_fd(), os(name), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| sys(h, "inspecting the entry", e))?;
                if matches!(
                    FileType::from_raw_mode(st.st_mode),
                    FileType::RegularFile | FileType::Directory
                ) {
                    return Err(sys(h, "setting metadata", e));
                }
                debug!(entry = %String::from_utf8_lossy(&h.name), "dropping user xattrs a special file cannot carry");
                let bare = Meta {
                    xattrs: meta
                        .xattrs
                        .iter()
                        .filter(|(k, _)| !k.starts_with(b"user."))
                        .cloned()
                        .collect(),
                    ..meta.clone()
                };
                fsmeta::apply_at(dir.fd.as_fd(), os(name), &bare, needs, false)
                    .map_err(|e| sys(h, "setting metadata", e))?;
            }
            Err(e) => return Err(sys(h, "setting metadata", e)),
        }
        fsmeta::set_times_at(dir.fd.as_fd(), os(name), meta.atime, meta.mtime)
            .map_err(|e| sys(h, "setting times", e))
    }

    pub(super) fn node(
        &mut self,
        h: &Header,
        dir: &Dir,
        name: &[u8],
        meta: &Meta,
    ) -> Result<(), Error> {
        let ft = match h.kind {
            Kind::Char => FileType::CharacterDevice,
            Kind::Block => FileType::BlockDevice,
            _ => FileType::Fifo,
        };
        let dev = if ft == FileType::Fifo {
            0
        } else {
            if h.dev_major >= 1 << 12 || h.dev_minor >= 1 << 20 {
                return Err(fail(
                    h,
                    Rule::Device,
                    format!(
                        "device {}:{} is out of the kernel's range",
                        h.dev_major, h.dev_minor
                    ),
                ));
            }
            if ft == FileType::CharacterDevice && h.dev_major == 0 && h.dev_minor == 0 {
                return Err(fail(
                    h,
                    Rule::Device,
                    "a 0:0 character device is an overlay whiteout, not a layer entry",
                ));
            }
            rustix::fs::makedev(h.dev_major, h.dev_minor)
        };
        self.create(h, dir, name, |d| {
            mknodat(
                d.fd.as_fd(),
                os(name),
                ft,
                Mode::from_raw_mode(meta.mode & 0o777),
                dev,
            )
        })?;
        let needs = self.needs(dir, meta, false);
        self.set_at(h, dir, name, meta, false, needs)
    }
}
