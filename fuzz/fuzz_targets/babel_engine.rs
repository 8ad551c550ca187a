//! A Babel engine fed a sequence of packets, clock steps and caller inputs,
//! its invariants checked after each (see
//! `re6st_babel::fuzzing::engine_sequence`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    re6st_babel::fuzzing::engine_sequence(data);
});
