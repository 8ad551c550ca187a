//! Replays the cargo-fuzz corpus of `fuzz/corpus/babel_packet/` on stable,
//! so every input the fuzzer kept (and every crash turned into a
//! regression seed) is checked by `cargo test`.
//!
//! `cargo test -p re6st-babel --test wire_fuzz_corpus -- --ignored`
//! regenerates the seeds from the tcpdump captures in data/babel-pcaps.

use std::path::{Path, PathBuf};

use re6st_babel::capture::{frames, udp_datagram};
use re6st_babel::fuzzing::babel_packet;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/babel_packet")
}

#[test]
fn replay_babel_packet_corpus() {
    let mut n = 0;
    for entry in std::fs::read_dir(corpus()).expect("fuzz corpus missing") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        babel_packet(&data);
        n += 1;
    }
    // The seeds from the captures are always there.
    assert!(n >= 150, "only {n} corpus files");
}

/// Writes every UDP payload of the captures in data/babel-pcaps and of
/// babel/tests/data/ as a seed.
#[test]
#[ignore = "regenerates fuzz/corpus/babel_packet from the captures"]
fn regenerate_seeds() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = here.join("../data/babel-pcaps");
    let out = corpus();
    std::fs::create_dir_all(&out).unwrap();
    let entries = std::fs::read_dir(shared)
        .unwrap()
        .chain(std::fs::read_dir(here.join("tests/data")).unwrap());
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "pcap") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let data = std::fs::read(&path).unwrap();
        for (i, frame) in frames(&data).unwrap().enumerate() {
            let Some(d) = frame
                .ok()
                .as_ref()
                .and_then(udp_datagram)
                .map(|d| d.payload.to_vec())
            else {
                continue;
            };
            std::fs::write(out.join(format!("{stem}-{:03}", i + 1)), d).unwrap();
        }
    }
}
