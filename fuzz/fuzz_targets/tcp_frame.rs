//! TCP tunnel frames: cut, parse, re-emit, compare
//! (see `re6st::transport::tcp::wire::fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    re6st::transport::tcp::wire::fuzz(data);
});
