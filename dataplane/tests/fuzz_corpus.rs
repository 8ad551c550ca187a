//! Replays the checked-in fuzz corpora (`fuzz/corpus/dataplane_*`) through
//! the fuzz entry points on stable, and throws random bytes at them too.

use std::path::PathBuf;

use proptest::prelude::*;
use re6st_dataplane::fuzzing;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()));
    let mut count = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "{} panicked", path.display());
        count += 1;
    }
    assert!(count >= 5, "{target}: only {count} corpus entries");
}

#[test]
fn forward_corpus() {
    replay("dataplane_forward", fuzzing::forward);
}

#[test]
fn reassembly_corpus() {
    replay("dataplane_reassembly", fuzzing::reassembly);
}

#[test]
fn demux_corpus() {
    replay("dataplane_demux", fuzzing::demux);
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..1600)) {
        fuzzing::forward(&data);
        fuzzing::reassembly(&data);
        fuzzing::demux(&data);
    }

    /// Random bytes behind a valid IPv6 header reach deeper code.
    #[test]
    fn random_payloads_never_panic(
        selector in any::<u8>(),
        header in prop::collection::vec(any::<u8>(), 40),
        payload in prop::collection::vec(any::<u8>(), 0..1500),
    ) {
        let mut data = vec![selector];
        data.extend(&header);
        data[1] = 0x60 | (data[1] & 0x0f);
        data[5..7].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        data.extend(&payload);
        fuzzing::forward(&data);
    }

    /// Random bytes behind a valid IPv4 header (checksum included) reach
    /// the IPv4 forwarding and ICMPv4 code.
    #[test]
    fn random_ipv4_payloads_never_panic(
        selector in any::<u8>(),
        header in prop::collection::vec(any::<u8>(), 20),
        payload in prop::collection::vec(any::<u8>(), 0..1500),
    ) {
        let mut ip = header;
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        ip.extend(&payload);
        re6st_dataplane::packet::ipv4::Ipv4Packet::new_unchecked(&mut ip[..]).fill_checksum();
        let mut data = vec![selector];
        data.extend(&ip);
        fuzzing::forward(&data);
    }
}
