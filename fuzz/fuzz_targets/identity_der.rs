//! Registry/identity parsers: see `re6st::identity::fuzzing::identity_der`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    re6st::identity::fuzzing::identity_der(data);
});
