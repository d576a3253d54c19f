//! The `strata` command-line tool: every graph-driver operation on a local store.

mod cli;

fn main() {
    // The confined apply helper must take over before anything starts a thread.
    let args: Vec<std::ffi::OsString> = std::env::args_os().take(3).collect();
    if args.len() == 3 && args[1] == strata::archive::confined::HELPER_ARG {
        std::process::exit(strata::archive::confined::helper_main(
            &args[2].to_string_lossy(),
        ));
    }
    if args.len() == 3 && args[1] == strata::graph::REAP_ARG {
        std::process::exit(strata::graph::reap_main(std::path::Path::new(&args[2])));
    }
    std::process::exit(cli::main());
}
