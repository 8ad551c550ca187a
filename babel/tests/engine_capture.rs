//! Captures of our own engine's traffic decode cleanly: a simulated
//! network's packets are written as a pcap and read back with the same
//! decoder `re6st babel-dump` uses, and with the `re6st babel-dump` binary
//! itself when it has been built next to this test (`cargo test
//! --workspace` builds it).

mod engine_net;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use engine_net::*;
use re6st_babel::capture::{frames, udp_datagram};
use re6st_babel::describe::describe;
use re6st_babel::wire::parse_packet;

/// Three routers in a line, a failure and a recovery: Hellos with
/// timestamps, IHUs, Updates, retractions, Route and Seqno Requests.
fn traffic() -> Vec<u8> {
    let mut net = Net::ring(4, 11);
    net.capture = Some(Vec::new());
    net.run_until(secs(30), Net::converged).unwrap();
    net.run_for(secs(20));
    net.link_down(0, true);
    net.run_until(secs(30), Net::converged).unwrap();
    net.link_up(0);
    net.run_for(secs(10));
    pcap(net.capture.as_ref().unwrap())
}

#[test]
fn our_traffic_decodes_with_the_babel_dump_decoder() {
    let data = traffic();
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut packets = 0;
    let mut timestamped_hellos = 0;
    let mut timestamped_ihus = 0;
    for frame in frames(&data).unwrap() {
        let frame = frame.unwrap();
        let d = udp_datagram(&frame).expect("a UDP datagram");
        assert_eq!(d.dst.port(), 6696);
        let packet = parse_packet(d.payload).expect("valid Babel header");
        let desc = describe(&packet);
        packets += 1;
        for t in &desc.tlvs {
            assert!(t.error.is_none(), "{t:?} in {desc:?}");
            *kinds.entry(t.kind).or_default() += 1;
            let stamped = t.sub_tlvs.iter().any(|s| !s.timestamps.is_empty());
            match t.kind {
                k if k.contains("hello") && stamped => timestamped_hellos += 1,
                k if k.contains("ihu") && stamped => timestamped_ihus += 1,
                _ => {}
            }
        }
    }
    println!("{packets} packets, TLVs by kind: {kinds:?}");
    assert!(packets > 50);
    assert!(timestamped_hellos > 10, "{kinds:?}");
    assert!(timestamped_ihus > 10, "{kinds:?}");
    for k in ["update", "router-id", "request"] {
        assert!(kinds.keys().any(|x| x.contains(k)), "no {k} TLV: {kinds:?}");
    }

    // The binary, when built alongside (target/<profile>/re6st).
    let exe = std::env::current_exe().unwrap();
    let bin: Option<PathBuf> = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("re6st"))
        .filter(|p| p.exists());
    let Some(bin) = bin else {
        println!("re6st binary not built next to this test: babel-dump run skipped");
        return;
    };
    let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("engine-capture.pcap");
    std::fs::write(&file, &data).unwrap();
    let out = Command::new(&bin)
        .arg("babel-dump")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains("malformed") && !text.contains("fatal"),
        "{text}"
    );
    let lines = text.lines().filter(|l| !l.starts_with('\t')).count();
    assert_eq!(lines, packets, "one header line per packet");
    println!(
        "re6st babel-dump {}: first lines:\n{}",
        file.display(),
        text.lines().take(12).collect::<Vec<_>>().join("\n")
    );
}
