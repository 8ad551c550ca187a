//! Replays the LAN beacon fuzz corpus (fuzz/corpus/lan_beacon) on stable.
//! `cargo test --test edges_fuzz_corpus -- --ignored` rewrites the seeds.

use std::path::PathBuf;
use std::time::Duration;

use re6st::identity::fuzzing::{fuzz_ca, fuzz_now};
use re6st::identity::tls::{CaVerifier, Trust};
use re6st::identity::{IssueParams, NodeCert, NodeKey};
use re6st::lan::BeaconRepr;
use re6st::lan::fuzzing::lan_beacon;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/lan_beacon")
}

#[test]
fn replay_lan_beacon_corpus() {
    let mut n = 0;
    for e in std::fs::read_dir(corpus()).expect("lan_beacon corpus") {
        lan_beacon(&std::fs::read(e.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n >= 5, "{n} seeds");
    // The main seed reaches the success path: signed by the fuzzing CA.
    let seed = std::fs::read(corpus().join("beacon")).unwrap();
    let v = CaVerifier::new(&Trust::new(fuzz_ca().cert_der(), None)).unwrap();
    let cert = BeaconRepr::parse(&seed)
        .unwrap()
        .verify(&v, fuzz_now())
        .expect("the seed beacon verifies");
    assert_eq!(cert.serial, 11);
}

#[test]
#[ignore = "writes the seed corpus"]
fn write_seeds() {
    let now = fuzz_now();
    let key = NodeKey::generate().unwrap();
    let der = fuzz_ca()
        .issue_node(
            &key.spki_der(),
            "fd00:f:0:b::/64".parse().unwrap(),
            IssueParams {
                serial: 11,
                not_before: now - Duration::from_secs(60),
                not_after: now + Duration::from_secs(86_400),
            },
        )
        .unwrap();
    let cert = NodeCert::from_der(&der).unwrap();
    let beacon = BeaconRepr::sign(4326, now, &cert, &key).unwrap();
    let mut trailing = beacon.clone();
    trailing.push(0);
    let mut tampered = beacon.clone();
    tampered[11] ^= 0x40;
    let mut version = beacon.clone();
    version[8] = 9;
    let seeds: [(&str, &[u8]); 6] = [
        ("beacon", &beacon),
        ("truncated", &beacon[..beacon.len() / 2]),
        ("trailing", &trailing),
        ("tampered", &tampered),
        ("version", &version),
        ("header-only", &beacon[..22]),
    ];
    std::fs::create_dir_all(corpus()).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(corpus().join(name), bytes).unwrap();
    }
}
