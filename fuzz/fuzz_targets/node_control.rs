//! Both ends of the node's control socket on arbitrary lines (see
//! `re6st::control::fuzzing::control_socket`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    re6st::control::fuzzing::control_socket(data);
});
