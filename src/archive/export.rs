//! Writing a layer tar: the changes of a tree, as Docker's `ExportChanges` does.
//!
//! CONTRACT (to be implemented):
//! * Output is an uncompressed PAX-format tar ending with the two zero blocks.
//! * Entries in path order; names relative (`etc/passwd`, directories with a trailing `/`).
//! * Delete → an empty regular-file entry `<dir>/.wh.<name>` (mode 0, size 0, mtime 0).
//! * Add/Modify → the entry read from `root` (fd-relative, never following symlinks): regular
//!   files with content, directories, symlinks (target verbatim), fifos, char/block devices
//!   (major/minor), sockets skipped. A second path to an already-emitted inode (nlink > 1)
//!   is written as a hard link to the first name.
//! * Header fields: mode (perm bits incl. setuid/setgid/sticky), uid, gid, mtime truncated to
//!   whole seconds, uname/gname empty, atime/ctime absent. Names, link targets, sizes or ids
//!   that do not fit ustar fields use PAX records (`path`, `linkpath`, `size`, `uid`, `gid`).
//! * Extended attributes are exported as `SCHILY.xattr.<name>` PAX records, except
//!   `security.selinux` and `trusted.overlay.*`/`user.overlay.*` (storage-internal).
//! * Bytes written for a regular file must equal the size in its header; a file that changed
//!   size while being read is an error, not a corrupt tar.

use std::io::Write;
use std::os::fd::BorrowedFd;

use super::{Change, Error};

/// Writes a tar of `changes` (any order; sorted internally) read from the tree at `root`.
pub fn export_changes(
    root: BorrowedFd<'_>,
    changes: &[Change],
    out: &mut dyn Write,
) -> Result<(), Error> {
    let _ = (root, changes, out);
    todo!("export_changes")
}
