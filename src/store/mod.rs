//! The layer store (in progress).
