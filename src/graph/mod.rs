//! The driver implementation (in progress).
/// The driver (in progress).
pub struct Graph;
