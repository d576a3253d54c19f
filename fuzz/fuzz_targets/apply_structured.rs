//! Fuzz target `apply_structured`: the input is decoded (with `arbitrary`) into a list of tar
//! entries whose names and link targets come from a vocabulary aimed at the hostile parent
//! layer, serialised to a well-formed tar and applied like the `apply` target's inputs, with
//! the same oracle (see `strata_fuzz::Harness`).
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use strata_fuzz::structured::TarSpec;
use strata_fuzz::Harness;

static HARNESS: Mutex<Option<Harness>> = Mutex::new(None);

fuzz_target!(|spec: TarSpec| {
    let mut h = HARNESS.lock().unwrap_or_else(|e| e.into_inner());
    let h = h.get_or_insert_with(Harness::new);
    let victim = h
        .victim()
        .to_str()
        .expect("UTF-8 work directory")
        .to_string();
    h.run(&spec.to_tar(&victim));
});
