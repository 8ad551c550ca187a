//! Peer-exchange messages and packets: parse, re-emit, re-parse
//! (see `re6st::peers::wire::fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    re6st::peers::wire::fuzz(data);
});
