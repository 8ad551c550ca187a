//! LAN beacon parser: see `re6st::lan::fuzzing::lan_beacon`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    re6st::lan::fuzzing::lan_beacon(data);
});
