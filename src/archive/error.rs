//! Errors of the diff engine. An entry error always names the tar entry and the rule it broke.

use std::fmt;
use std::io;

/// The rule an entry broke. Each one is documented in [`crate::archive::apply`] and pinned by
/// a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The name (or link target) leaves the layer root after cleaning, or is absolute where
    /// that is not allowed.
    Escape,
    /// The name is empty, or contains a NUL byte.
    BadName,
    /// The entry would change the type of the layer root.
    RootType,
    /// A malformed whiteout (`.wh.`, `.wh..`, `.wh...`) or a whiteout with a payload.
    Whiteout,
    /// A hard link whose target is missing, a directory, or outside the layer.
    Hardlink,
    /// A forbidden extended attribute.
    Xattr,
    /// A device entry with invalid numbers, or a raw overlay whiteout device.
    Device,
    /// A path component that must be a directory is not one.
    NotDirectory,
    /// A configured limit (bytes, entries, header sizes) was exceeded.
    Limit,
    /// The stream ended early or a header is malformed.
    Format,
    /// An entry type strata does not apply.
    Unsupported,
    /// The operating system refused an operation for this entry.
    Io,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::Escape => "path escapes the layer root",
            Rule::BadName => "invalid name",
            Rule::RootType => "the layer root must stay a directory",
            Rule::Whiteout => "invalid whiteout",
            Rule::Hardlink => "invalid hard link",
            Rule::Xattr => "forbidden extended attribute",
            Rule::Device => "invalid device",
            Rule::NotDirectory => "not a directory",
            Rule::Limit => "limit exceeded",
            Rule::Format => "malformed tar",
            Rule::Unsupported => "unsupported entry",
            Rule::Io => "I/O error",
        })
    }
}

/// An error of the diff engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tar entry broke a rule; nothing of the apply is kept.
    #[error("entry {entry:?}: {rule}: {detail}")]
    Entry {
        /// The entry's name as it appears in the tar (lossy UTF-8).
        entry: String,
        /// The rule.
        rule: Rule,
        /// Specifics (the offending target, the limit, the OS error...).
        detail: String,
    },
    /// The stream itself is malformed (not tied to one entry).
    #[error("malformed layer stream at byte {offset}: {detail}")]
    Stream {
        /// Offset in the uncompressed stream.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// The stream's digest is not the expected one.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    Digest {
        /// The digest that was asked for.
        expected: String,
        /// The digest of the bytes read.
        actual: String,
    },
    /// An I/O error outside any single entry (reading the input, walking a tree...).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, including the path inside the layer where relevant.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Builds an entry error.
    pub fn entry(entry: impl AsRef<[u8]>, rule: Rule, detail: impl Into<String>) -> Self {
        Error::Entry {
            entry: String::from_utf8_lossy(entry.as_ref()).into_owned(),
            rule,
            detail: detail.into(),
        }
    }

    /// Builds an I/O error with context.
    pub fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    /// The rule broken, for entry errors.
    pub fn rule(&self) -> Option<Rule> {
        match self {
            Error::Entry { rule, .. } => Some(*rule),
            Error::Stream { .. } => Some(Rule::Format),
            _ => None,
        }
    }
}
