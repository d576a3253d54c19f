//! Storage backends (in progress).
