//! The library's error type. Every variant names the layer (and where relevant the entry, path
//! or option) so that a message is actionable on its own.

use std::io;
use std::path::PathBuf;

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in strata's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A layer id that cannot be used as a directory name or collides with reserved names.
    #[error("invalid layer id {id:?}: {reason}")]
    InvalidId {
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The named layer does not exist.
    #[error("layer {0:?} does not exist")]
    NotFound(String),
    /// The named parent layer does not exist.
    #[error("cannot create layer {id:?}: parent layer {parent:?} does not exist")]
    ParentNotFound {
        /// Layer being created.
        id: String,
        /// The missing parent.
        parent: String,
    },
    /// A layer with that id exists already.
    #[error("layer {0:?} already exists")]
    AlreadyExists(String),
    /// The layer has children, so it cannot be removed or rewritten.
    #[error("layer {id:?} has {count} child layer(s) (e.g. {example:?}); remove them first")]
    HasChildren {
        /// The layer.
        id: String,
        /// How many children.
        count: usize,
        /// One of them, for the message.
        example: String,
    },
    /// The layer is mounted (has outstanding `get` references).
    #[error("layer {id:?} is mounted ({refs} reference(s)); put it first")]
    Mounted {
        /// The layer.
        id: String,
        /// Outstanding references.
        refs: u32,
    },
    /// `put` of a layer that has no outstanding `get`.
    #[error("layer {0:?} is not mounted")]
    NotMounted(String),
    /// Another operation (often in another process) is writing the layer right now.
    #[error("layer {id:?} is busy: {what}")]
    Busy {
        /// The layer.
        id: String,
        /// What holds it.
        what: String,
    },
    /// The store lock could not be taken in time.
    #[error("store {root} is locked by {holder}; gave up after {waited_secs}s")]
    Locked {
        /// Store root.
        root: PathBuf,
        /// Description of the process holding the lock.
        holder: String,
        /// How long we waited.
        waited_secs: u64,
    },
    /// A driver or storage option is unknown or malformed.
    #[error("invalid option {key:?}: {reason}")]
    InvalidOption {
        /// The option key.
        key: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A request that contradicts the layer's recorded state (wrong parent, wrong kind...).
    #[error("layer {id:?}: {reason}")]
    Invalid {
        /// The layer.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The backend or the machine cannot do what was asked.
    #[error("{0}")]
    Unsupported(String),
    /// The store was created for another backend.
    #[error(
        "store {root} was created with driver {stored:?}; refusing to open it as {requested:?}"
    )]
    DriverMismatch {
        /// Store root.
        root: PathBuf,
        /// Driver recorded in the store.
        stored: String,
        /// Driver requested now.
        requested: String,
    },
    /// Applying a layer tar failed; nothing of it was kept.
    #[error("apply to layer {layer:?} failed: {source}")]
    Apply {
        /// The layer being written.
        layer: String,
        /// What the diff engine reported (names the entry and the rule).
        #[source]
        source: crate::archive::Error,
    },
    /// A diff-engine failure outside apply (changes, export, copy).
    #[error("layer {layer:?}: {source}")]
    Archive {
        /// The layer being read or copied.
        layer: String,
        /// The engine's error.
        #[source]
        source: crate::archive::Error,
    },
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What strata was doing.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The metadata database failed.
    #[error("metadata store {path}: {message}")]
    Db {
        /// Database file.
        path: PathBuf,
        /// redb's message.
        message: String,
    },
}

impl Error {
    /// Wraps an I/O error with a description of what was being done.
    pub fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Whether this error means "no such layer" (front-ends map it to 404-like answers).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }
}

/// Adds context to `io::Result`s (and rustix results) in one call.
pub trait IoContext<T> {
    /// Converts the error into [`Error::Io`] with the context produced by `f`.
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T, E: Into<io::Error>> IoContext<T> for std::result::Result<T, E> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}
