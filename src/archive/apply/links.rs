//! Hard links: the target is resolved in-root and must exist already — in this layer, or
//! (overlay format) in a lower layer, from which it is copied up first (rule 4).

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{linkat, mknodat, openat, statat, symlinkat, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::tree::{is_whiteout, Dir, Lower};
use super::{fail, os, sys, Applier};
use crate::archive::fsmeta::{self, Meta};
use crate::archive::name;
use crate::archive::tarstream::Header;
use crate::archive::{Error, Rule};

impl Applier {
    pub(super) fn hardlink(
        &mut self,
        h: &Header,
        dir: &Dir,
        name: &[u8],
        meta: &Meta,
    ) -> Result<(), Error> {
        let target = name::clean(&h.link).map_err(|e| {
            fail(
                h,
                e.rule().unwrap_or(Rule::Hardlink),
                format!("target {:?}: {}", String::from_utf8_lossy(&h.link), e),
            )
        })?;
        let Some((&tname, tparent)) = target.split_last() else {
            return Err(fail(h, Rule::Hardlink, "the target is the layer root"));
        };
        let missing = || {
            fail(
                h,
                Rule::Hardlink,
                format!(
                    "target {:?} does not exist",
                    String::from_utf8_lossy(&h.link)
                ),
            )
        };
        let tdir = self.resolve_dir(h, tparent, false)?.ok_or_else(missing)?;
        self.names.occupy_all(self.tree.take_made());
        self.wait_for(tdir.key, tname)?;
        match statat(tdir.fd.as_fd(), os(tname), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(fail(h, Rule::Hardlink, "the target is a directory"));
            }
            Ok(st) if self.tree.is_overlay() && is_whiteout(&st) => return Err(missing()),
            Ok(_) => {}
            Err(Errno::NOENT) => match self.lower(h, &tdir, tname)? {
                Lower::Other(ldir, st) => {
                    self.copy_up(h, &ldir, &st, &tdir, tname)?;
                    self.names.occupy(tdir.key, tname);
                }
                _ => return Err(missing()),
            },
            Err(e) => return Err(sys(h, "inspecting the link target", e)),
        }
        if tdir.key == dir.key && tname == name {
            return Err(fail(h, Rule::Hardlink, "the entry links to itself"));
        }
        self.remove_existing(h, dir, name)?;
        linkat(
            tdir.fd.as_fd(),
            os(tname),
            dir.fd.as_fd(),
            os(name),
            AtFlags::empty(),
        )
        .map_err(|e| sys(h, "creating the hard link", e))?;
        let st = statat(dir.fd.as_fd(), os(name), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| sys(h, "inspecting the hard link", e))?;
        let symlink = FileType::from_raw_mode(st.st_mode) == FileType::Symlink;
        self.set_at(h, dir, name, meta, symlink, fsmeta::Needs::ALL)
    }

    /// Copies a lower layer's non-directory into the writable tree (for hard links to it).
    fn copy_up(
        &mut self,
        h: &Header,
        ldir: &OwnedFd,
        st: &rustix::fs::Stat,
        dir: &Dir,
        name: &[u8],
    ) -> Result<(), Error> {
        let ft = FileType::from_raw_mode(st.st_mode);
        let times = (
            fsmeta::Time {
                sec: st.st_atime,
                nsec: st.st_atime_nsec as u32,
            },
            fsmeta::Time {
                sec: st.st_mtime,
                nsec: st.st_mtime_nsec as u32,
            },
        );
        let xattrs = fsmeta::read_at(ldir.as_fd(), os(name))
            .map_err(|e| sys(h, "reading the lower target's xattrs", e))?;
        let meta = Meta {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            atime: times.0,
            mtime: times.1,
            xattrs: xattrs
                .into_iter()
                .filter(|(k, _)| !k.starts_with(b"trusted.overlay."))
                .collect(),
        };
        match ft {
            FileType::RegularFile => {
                let src = openat(
                    ldir.as_fd(),
                    os(name),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| sys(h, "opening the lower target", e))?;
                let dst = openat(
                    dir.fd.as_fd(),
                    os(name),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| sys(h, "copying up the lower target", e))?;
                let (mut src, mut dst) = (std::fs::File::from(src), std::fs::File::from(dst));
                std::io::copy(&mut src, &mut dst)
                    .map_err(|e| sys(h, "copying up the lower target", e))?;
                fsmeta::set_fd(dst.as_fd(), &meta).map_err(|e| sys(h, "copying up metadata", e))?;
                fsmeta::set_times_fd(dst.as_fd(), meta.atime, meta.mtime)
                    .map_err(|e| sys(h, "copying up times", e))?;
                Ok(())
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(ldir.as_fd(), os(name), Vec::new())
                    .map_err(|e| sys(h, "reading the lower symlink", e))?;
                symlinkat(target.as_c_str(), dir.fd.as_fd(), os(name))
                    .map_err(|e| sys(h, "copying up the lower symlink", e))?;
                self.set_at(h, dir, name, &meta, true, fsmeta::Needs::ALL)
            }
            FileType::Fifo
            | FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Socket => {
                mknodat(
                    dir.fd.as_fd(),
                    os(name),
                    ft,
                    Mode::from_raw_mode(0o600),
                    st.st_rdev,
                )
                .map_err(|e| sys(h, "copying up the lower node", e))?;
                self.set_at(h, dir, name, &meta, false, fsmeta::Needs::ALL)
            }
            _ => Err(fail(
                h,
                Rule::Hardlink,
                "the lower target has an unknown type",
            )),
        }
    }
}
