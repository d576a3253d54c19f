//! The `strata` command-line tool: every graph-driver operation on a local store.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
