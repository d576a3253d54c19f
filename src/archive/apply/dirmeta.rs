//! A directory entry over a directory that already exists (rule 6): the directory ends with
//! exactly the entry's metadata — its extended attributes included — and what the applier
//! remembers about the directory (the group and setgid bit new entries inherit, whether a
//! default ACL shapes their modes) is brought up to date.

use std::os::fd::BorrowedFd;

use rustix::fs::Stat;
use rustix::io::Errno;

use super::{os, sys, Applier};
use crate::archive::fsmeta::{self, Meta};
use crate::archive::tarstream::Header;
use crate::archive::Error;

const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

impl Applier {
    /// Applies `meta` to the existing directory `fd` (whose stat was `st`). Returns whether
    /// what new entries inherit from it changed, in which case every file in flight was
    /// written first and the caller must forget its cached view of the directory.
    pub(super) fn update_dir(
        &mut self,
        h: &Header,
        fd: BorrowedFd<'_>,
        st: &Stat,
        meta: &Meta,
    ) -> Result<bool, Error> {
        let existing =
            fsmeta::read_fd(fd).map_err(|e| sys(h, "reading the directory's xattrs", e))?;
        let had_acl = existing.iter().any(|(k, _)| k == ACL_DEFAULT);
        let has_acl = meta.xattrs.iter().any(|(k, _)| k == ACL_DEFAULT);
        let inherited =
            had_acl != has_acl || st.st_gid != meta.gid || (st.st_mode ^ meta.mode) & 0o2000 != 0;
        if inherited {
            // Files being written into it must not meet the new group or ACL half-way.
            self.barrier()?;
        }
        for (k, _) in existing {
            if k.starts_with(b"trusted.overlay.")
                || k.as_slice() == b"security.selinux"
                || meta.xattrs.iter().any(|(m, _)| *m == k)
            {
                continue;
            }
            match rustix::fs::fremovexattr(fd, os(&k)) {
                Ok(()) | Err(Errno::NODATA) => {}
                Err(e) => return Err(sys(h, "removing an xattr the entry does not have", e)),
            }
        }
        fsmeta::set_fd(fd, meta).map_err(|e| sys(h, "setting metadata", e))?;
        Ok(inherited)
    }
}
