//! The diff engine: everything that reads or writes layer *content*.
//!
//! * [`apply`] — safe, streaming application of a layer tar (plain, gzip, zstd) into a directory,
//!   with Docker whiteout semantics, in either "naive" form (whiteouts delete) or overlay form
//!   (whiteouts become `0:0` character devices, opaque directories an xattr).
//! * [`changes`] — Docker's naive change detection between two trees, into a compact
//!   [`ChangeSet`].
//! * [`export`] — writing a PAX tar of a set of changes.
//! * [`copy`] — copying a whole tree with every attribute (the vfs backend's layer creation).
//!
//! Every filesystem call is relative to a directory file descriptor; names that come from a
//! tarball are never joined into path strings.

pub mod apply;
pub mod changes;
pub mod changeset;
pub mod compress;
pub mod confined;
pub mod copy;
pub mod digest;
mod error;
pub mod export;
pub mod fsmeta;
pub mod name;
pub mod overlay_changes;
pub mod pathfmt;
pub mod pipe;
pub mod sparse;
pub mod tarsplit;
pub mod tarstream;
mod walk;

pub use changeset::{ChangeSet, Step};
pub use error::{Error, Rule};

use std::path::PathBuf;

/// Kind of a change, with Docker's numeric codes (`archive.ChangeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    /// Code 0: the path exists on both sides and differs.
    Modify,
    /// Code 1: the path exists only in the newer tree.
    Add,
    /// Code 2: the path exists only in the older tree.
    Delete,
}

impl ChangeKind {
    /// Docker's numeric code (Modify 0, Add 1, Delete 2).
    pub fn code(self) -> u8 {
        match self {
            ChangeKind::Modify => 0,
            ChangeKind::Add => 1,
            ChangeKind::Delete => 2,
        }
    }

    /// The letter `docker diff` prints: `C`, `A` or `D`.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modify => 'C',
            ChangeKind::Add => 'A',
            ChangeKind::Delete => 'D',
        }
    }
}

/// One change between two trees: an absolute, `/`-separated path (arbitrary bytes allowed,
/// as on Linux) and its kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Change {
    /// Absolute path inside the layer, e.g. `/etc/passwd`.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}
