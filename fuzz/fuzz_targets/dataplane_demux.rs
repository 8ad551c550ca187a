//! Fuzz target: see `re6st_dataplane::fuzzing::demux`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    re6st_dataplane::fuzzing::demux(data);
});
