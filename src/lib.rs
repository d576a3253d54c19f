//! strata: a container layer store ("graph driver") for Linux.
//!
//! The crate is layered so that dependencies point one way:
//!
//! * [`driver`] — the graph-driver interface that Docker's drivers implement, nothing else;
//! * [`graph`] — [`graph::Graph`], the implementation of that interface over a store and a backend;
//! * [`backend`] — storage backends (`vfs`, `overlay`, `block`): where layer bytes live and how they mount;
//! * [`store`] — the crash-safe metadata store and layer directory lifecycle;
//! * [`archive`] — the diff engine: applying and exporting layer tars, changes, tree copies;
//! * [`sys`] — the only module that talks to the kernel below what `rustix` offers safely;
//! * `serve` (feature `docker-plugin`) — servers over a unix socket: dockerd's graph-driver
//!   plugin protocol.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod archive;
pub mod backend;
pub mod driver;
pub mod error;
pub mod failpoint;
pub mod fsutil;
pub mod graph;
pub mod options;
#[cfg(feature = "docker-plugin")]
pub mod serve;
pub mod store;
pub mod sys;
pub mod units;

pub use driver::{Capabilities, Change, ChangeKind, ChangeSet, CreateOpts, Driver};
pub use error::{Error, Result};
pub use graph::Graph;
