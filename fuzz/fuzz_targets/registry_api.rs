//! Requests to the registry's API, answered by its router over a real
//! store (see `re6st::registry::fuzzing::ApiFuzzer`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use re6st::registry::fuzzing::ApiFuzzer;

static REGISTRY: OnceLock<ApiFuzzer> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    REGISTRY
        .get_or_init(|| ApiFuzzer::new().expect("a registry in a temporary directory"))
        .request(data);
});
