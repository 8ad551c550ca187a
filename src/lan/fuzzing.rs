//! Entry point of the `lan_beacon` fuzz target and of its stable corpus
//! replay (`tests/edges_fuzz_corpus.rs`): parse, and on success encode
//! again and compare, then verify against the fuzzing CA (seeds signed by
//! it reach the success path). Must not panic on any input but a failed
//! round trip.

use super::beacon::BeaconRepr;
use crate::identity::fuzzing::{fuzz_ca, fuzz_now};
use crate::identity::tls::{CaVerifier, Trust};

/// One beacon datagram.
pub fn lan_beacon(data: &[u8]) {
    let Ok(repr) = BeaconRepr::parse(data) else {
        return;
    };
    let mut again = Vec::with_capacity(repr.buffer_len());
    repr.emit(&mut again);
    assert_eq!(again, data, "beacon round trip");
    if let Ok(v) = CaVerifier::new(&Trust::new(fuzz_ca().cert_der(), None)) {
        let _ = repr.verify(&v, fuzz_now());
    }
}
