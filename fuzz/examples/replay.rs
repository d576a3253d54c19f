//! Runs the `apply` harness (and its oracle) on tar files outside libFuzzer and prints what
//! each did: `cargo run --example replay -- seeds/apply/*.tar` (from `fuzz/`). For looking at
//! seeds and findings with a debugger or plain prints; a violated oracle panics here too.

use strata_fuzz::{Harness, Outcome};

fn main() {
    let mut h = Harness::new();
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        match h.run(&data) {
            Outcome::Applied(size) => println!("{path}: applied, size {size}"),
            Outcome::Refused(why) => println!("{path}: refused: {why}"),
        }
    }
    std::fs::remove_dir_all(h.dir()).expect("remove the work directory");
}
