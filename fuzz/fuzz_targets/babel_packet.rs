//! Babel packets: parse, re-encode, re-parse, compare
//! (see `re6st_babel::fuzzing::babel_packet`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    re6st_babel::fuzzing::babel_packet(data);
});
