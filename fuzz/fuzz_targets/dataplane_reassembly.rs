//! Fuzz target: see `re6st_dataplane::fuzzing::reassembly`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    re6st_dataplane::fuzzing::reassembly(data);
});
