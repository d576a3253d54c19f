//! The hostile suite: what a container (or a layer tar) can do to strata with shapes rather
//! than names — depth, count, name length, size, names that look like markers — through the
//! CLI, on vfs and overlay.
//!
//! Every case runs each command under a time limit with its peak RSS measured (its `ru_maxrss`
//! through GNU `time`, see `common/rss.rs`): `apply-diff` within 64 MiB, `changes`, `diff`,
//! `diff-size` and `remove` within 256 MiB. A command must either succeed or refuse cleanly
//! (exit 1 with a `strata: ` message) — never die by a signal, never run out its time. Each
//! case ends with the breakout suite's victim (a directory and a file beside the store,
//! `breakout/oracle.rs`) neither read nor written, and no mount or loop device left behind.

mod common;

#[allow(dead_code)]
#[path = "breakout/oracle.rs"]
mod oracle;

#[path = "hostile/kit.rs"]
mod kit;

#[path = "hostile/deep.rs"]
mod deep;
#[path = "hostile/long_names.rs"]
mod long_names;
#[path = "hostile/many.rs"]
mod many;
#[path = "hostile/mountinfo.rs"]
mod mountinfo;
#[path = "hostile/names.rs"]
mod names;
#[path = "hostile/selftest.rs"]
mod selftest;
#[path = "hostile/sparse.rs"]
mod sparse;
