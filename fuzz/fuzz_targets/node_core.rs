//! NodeCore driven by a script of arbitrary inputs: see
//! `re6st::node::core::fuzzing::node_core`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    re6st::node::core::fuzzing::node_core(data);
});
