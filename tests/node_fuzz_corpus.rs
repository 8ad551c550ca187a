//! Replays the cargo-fuzz corpora of the node on stable: its own wire
//! formats, `fuzz/corpus/control_frame/` (tunnel control stream),
//! `fuzz/corpus/tcp_frame/` (frames of tunnels over TCP) and
//! `fuzz/corpus/exchange_message/` (peer exchange), and
//! `fuzz/corpus/node_core/` (NodeCore driven by scripts of inputs).
//!
//! `cargo test --test node_fuzz_corpus -- --ignored` regenerates the seeds.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use re6st::identity::{Ca, IssueParams, NodeCert, NodeKey, PeerAnnouncement, unix_secs};
use re6st::node::core::fuzzing::node_core;
use re6st::peers::wire::{self, ExchangeMessage};
use re6st::transport::control::{self, Control};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(corpus(target)).expect("fuzz corpus missing") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        run(&data);
        n += 1;
    }
    n
}

#[test]
fn replay_control_frame_corpus() {
    let n = replay("control_frame", control::fuzz);
    assert!(n >= 8, "only {n} corpus files");
}

#[test]
fn replay_tcp_frame_corpus() {
    let n = replay("tcp_frame", re6st::transport::tcp::wire::fuzz);
    assert!(n >= 10, "only {n} corpus files");
}

#[test]
fn replay_exchange_message_corpus() {
    let n = replay("exchange_message", wire::fuzz);
    assert!(n >= 6, "only {n} corpus files");
}

#[test]
fn replay_node_core_corpus() {
    let mut n = 0;
    for entry in std::fs::read_dir(corpus("node_core")).expect("fuzz corpus missing") {
        let path = entry.unwrap().path();
        let reached = node_core(&std::fs::read(&path).unwrap());
        if path.ends_with("tunnel-life") {
            // The seed reaches the deep paths: a tunnel up with routes
            // through it, then suspected.
            assert!(reached.routes >= 1 && reached.suspected >= 1, "{reached:?}");
        }
        n += 1;
    }
    assert!(n >= 6, "only {n} corpus files");
}

/// Scripts for `node_core` (see `re6st::node::core::fuzzing`): one op byte
/// and its arguments each.
fn node_core_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let second = |ms: u16| [9, (ms >> 8) as u8, ms as u8];
    let mut life = vec![1u8, 0, 1, 0, 10];
    for _ in 0..12 {
        life.extend_from_slice(&[2, 1]);
        life.extend_from_slice(&second(1000));
    }
    life.extend_from_slice(&[7, 1, 0]);
    life.extend_from_slice(&second(500));
    life.extend_from_slice(&[7, 1, 1, 2, 1, 3, 1, 0]);
    life.extend_from_slice(&second(2000));
    life.extend_from_slice(&[3, 1, 1, 3, 1, 2, 1, 8, 1]);
    let mut registry = Vec::new();
    for kind in 0u8..7 {
        registry.extend_from_slice(&[12, kind, 3, 1, 2]);
        registry.extend_from_slice(&second(3000));
    }
    let mut lan = vec![1u8];
    lan.extend_from_slice(&[13, 1, 13, 0, 0, 0x40, 0, 5, 1, 0, 2, 0, 5, 13, 2]);
    let mut exchange = Vec::new();
    for b in [0u8, 1, 2, 3, 0x81, 6] {
        exchange.extend_from_slice(&[5, b, 4, 0xde, 0xad, 0xbe, 0xef]);
    }
    let mut clocks = Vec::new();
    for (dir, amount) in [(0u8, 0xffffu16), (1, 0xffff), (1, 0xffff), (0, 200)] {
        clocks.extend_from_slice(&[11, dir, (amount >> 8) as u8, amount as u8, 15]);
        clocks.extend_from_slice(&second(60_000));
    }
    let mut random = Vec::new();
    let mut x: u32 = 0x2545_f491;
    for _ in 0..1200 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        random.push(x as u8);
    }
    vec![
        ("empty", Vec::new()),
        ("tunnel-life", life),
        ("registry", registry),
        ("lan", lan),
        ("exchange", exchange),
        ("clocks", clocks),
        ("random", random),
    ]
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = corpus(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

#[test]
#[ignore = "regenerates fuzz/corpus/{control_frame,exchange_message,node_core}"]
fn regenerate_seeds() {
    for (name, script) in node_core_seeds() {
        write("node_core", name, &script);
    }
    let frame = |m: Control| {
        let mut out = Vec::new();
        m.emit_frame(&mut out);
        out
    };
    let open = frame(Control::Open {
        version: 1,
        crl_number: 3,
    });
    let accept4 = frame(Control::Accept {
        crl_number: 7,
        observed: "192.0.2.1:4433".parse().unwrap(),
    });
    let accept6 = frame(Control::Accept {
        crl_number: 0,
        observed: "[2001:db8::5]:4433".parse().unwrap(),
    });
    let crl = frame(Control::Crl(Bytes::from_static(&[0x30, 0x82, 0x01, 0x00])));
    let drain = frame(Control::Drain);
    let drained = frame(Control::Drained);
    let unknown = frame(Control::Unknown(0x42));
    let want_certs = frame(Control::WantCerts(vec![
        re6st_babel::wire::RouterId([1; 8]),
        re6st_babel::wire::RouterId([2; 8]),
    ]));
    let certs = frame(Control::Certs(vec![
        Bytes::from_static(&[0x30, 0x03, 0x02, 0x01, 0x00]),
        Bytes::new(),
    ]));
    let mut stream = open.clone();
    stream.extend_from_slice(&accept6);
    stream.extend_from_slice(&drain);
    for (name, data) in [
        ("open", open),
        ("accept-v4", accept4),
        ("accept-v6", accept6),
        ("crl", crl),
        ("drain", drain),
        ("drained", drained),
        ("unknown", unknown),
        ("want-certs", want_certs),
        ("certs", certs),
        ("stream", stream),
        ("bad-length", vec![0xff, 0xff, 0xff, 0xff, 1]),
        ("truncated-open", vec![0, 0, 0, 3, 1, 1, 0]),
    ] {
        write("control_frame", name, &data);
    }

    let now = SystemTime::now();
    let ca = Ca::generate(
        "fd00:f::/48".parse().unwrap(),
        1,
        now,
        Duration::from_secs(86_400),
    )
    .unwrap();
    let key = NodeKey::generate().unwrap();
    let der = ca
        .issue_node(
            &key.spki_der(),
            "fd00:f:0:2::/64".parse().unwrap(),
            IssueParams {
                serial: 2,
                not_before: now,
                not_after: now + Duration::from_secs(3600),
            },
        )
        .unwrap();
    let cert = NodeCert::from_der(&der).unwrap();
    let signed = PeerAnnouncement {
        prefix: cert.prefix,
        addresses: vec![
            "192.0.2.1:4433".parse().unwrap(),
            "[2001:db8::1]:4433".parse().unwrap(),
        ],
        timestamp: unix_secs(now),
        tcp_port: None,
        topology: None,
    }
    .sign(&cert, &key)
    .unwrap();
    let mut msg = Vec::new();
    ExchangeMessage::Announce {
        reply: true,
        signed,
    }
    .emit(&mut msg)
    .unwrap();
    let packet = wire::build_packet(
        "fd00:f:0:3::1".parse().unwrap(),
        "fd00::1".parse().unwrap(),
        &msg,
    );
    let mut unknown = Vec::new();
    ExchangeMessage::Unknown(7).emit(&mut unknown).unwrap();
    for (name, data) in [
        ("announce", msg.clone()),
        ("announce-packet", packet),
        ("unknown", unknown),
        ("truncated", msg[..msg.len() / 2].to_vec()),
        ("bad-magic", b"xx\x01\x01".to_vec()),
        ("bad-version", b"r6\x09\x01".to_vec()),
    ] {
        write("exchange_message", name, &data);
    }
}
