//! Replays the cargo-fuzz corpora of the node's own wire formats on stable:
//! `fuzz/corpus/control_frame/` (tunnel control stream) and
//! `fuzz/corpus/exchange_message/` (peer exchange).
//!
//! `cargo test --test node_fuzz_corpus -- --ignored` regenerates the seeds.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use re6st::identity::{Ca, IssueParams, NodeCert, NodeKey, PeerAnnouncement, unix_secs};
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
fn replay_exchange_message_corpus() {
    let n = replay("exchange_message", wire::fuzz);
    assert!(n >= 6, "only {n} corpus files");
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = corpus(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

#[test]
#[ignore = "regenerates fuzz/corpus/{control_frame,exchange_message}"]
fn regenerate_seeds() {
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
