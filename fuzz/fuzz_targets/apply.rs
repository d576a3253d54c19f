//! Fuzz target `apply`: the input is a layer tar (plain, or gzip/zstd if it starts so),
//! applied to a fresh child of a hostile parent layer in a vfs store; see the harness
//! (`strata_fuzz::Harness`) for the oracle.
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use strata_fuzz::Harness;

static HARNESS: Mutex<Option<Harness>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut h = HARNESS.lock().unwrap_or_else(|e| e.into_inner());
    h.get_or_insert_with(Harness::new).run(data);
});
