//! The breakout suite: hostile layer tars applied through the CLI on vfs and overlay, each
//! judged by the victim-directory oracle (see `breakout/oracle.rs`): nothing outside the
//! target layer changes, no victim bytes end up inside it, and the apply either succeeds
//! with the result the case pins or fails naming the entry and the rule, atomically.
//!
//! Case groups, one module each, cover the categories of the layer-security reference and
//! the rules in `src/archive/apply/mod.rs`.

mod common;

#[path = "breakout/oracle.rs"]
mod oracle;
#[path = "breakout/raw.rs"]
mod raw;

#[path = "breakout/confined.rs"]
mod confined;
#[path = "breakout/hardlinks.rs"]
mod hardlinks;
#[path = "breakout/lower.rs"]
mod lower;
#[path = "breakout/names.rs"]
mod names;
#[path = "breakout/parser.rs"]
mod parser;
#[path = "breakout/replaced.rs"]
mod replaced;
#[path = "breakout/selftest.rs"]
mod selftest;
#[path = "breakout/special.rs"]
mod special;
#[path = "breakout/symlinks.rs"]
mod symlinks;
#[path = "breakout/types.rs"]
mod types;
#[path = "breakout/whiteouts.rs"]
mod whiteouts;
