//! Driver options (in progress).
