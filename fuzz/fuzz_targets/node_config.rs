//! `node.toml` as the node reads it (see `re6st::node::program::options::fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    re6st::node::program::options::fuzz(data);
});
