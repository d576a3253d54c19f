//! Runs the fuzz harness (and its oracle) on inputs outside libFuzzer and prints what each
//! did and how long it took: `cargo run --example replay -- [--structured] FILE...` (from
//! `fuzz/`). Plain files are tars (the `apply` target); with `--structured` they are decoded
//! as `apply_structured` inputs and the decoded entries are printed too. For looking at seeds
//! and findings; a violated oracle panics here as well.

use arbitrary::{Arbitrary, Unstructured};
use strata_fuzz::structured::TarSpec;
use strata_fuzz::{Harness, Outcome};

fn main() {
    let mut h = Harness::new();
    let mut structured = false;
    for arg in std::env::args().skip(1) {
        if arg == "--structured" {
            structured = true;
            continue;
        }
        let mut data = std::fs::read(&arg).unwrap_or_else(|e| panic!("read {arg}: {e}"));
        if structured {
            let spec = TarSpec::arbitrary_take_rest(Unstructured::new(&data))
                .unwrap_or_else(|e| panic!("decode {arg}: {e}"));
            println!("{arg}: {spec:?}");
            let victim = h
                .victim()
                .to_str()
                .expect("UTF-8 work directory")
                .to_string();
            data = spec.to_tar(&victim);
        }
        let start = std::time::Instant::now();
        let outcome = h.run(&data);
        let took = start.elapsed();
        match outcome {
            Outcome::Applied(size) => println!("{arg}: applied, size {size} ({took:?})"),
            Outcome::Refused(why) => println!("{arg}: refused: {why} ({took:?})"),
        }
    }
    std::fs::remove_dir_all(h.dir()).expect("remove the work directory");
}
