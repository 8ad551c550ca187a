//! Babel wire codec: parse and encode of a full ~1400-byte packet of
//! Updates (the size of a QUIC datagram on a 1500-byte path).
//!
//! `cargo bench --bench babel_wire`; criterion reports the time per packet
//! and, through `Throughput::Elements`, TLVs per second (ns per TLV =
//! 1e9 / that rate). Inputs are built outside the timed loop.

use std::hint::black_box;
use std::net::Ipv6Addr;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipnet::{IpNet, Ipv6Net};
use re6st_babel::wire::{BuildError, Message, PacketBuilder, RouterId, UpdateRepr, parse_packet};

const BUDGET: usize = 1414;

/// Updates for /64s of one /48, four per router-id (as a re6st full dump
/// would carry: one prefix per node, a few routes per source), until the
/// packet is full.
fn updates() -> Vec<Message> {
    (0u16..)
        .map(|i| {
            let addr = Ipv6Addr::new(0xfd00, 0x1234, 0x5678, i, 0, 0, 0, 0);
            let mut id = [0x52u8, 0x65, 0x36, 0x73, 0x74, 0, 0, 0];
            id[6..].copy_from_slice(&(i / 4).to_be_bytes());
            Message::Update(UpdateRepr {
                prefix: Some(IpNet::V6(Ipv6Net::new(addr, 64).unwrap())),
                interval: Duration::from_secs(16),
                seqno: 1000 + i,
                metric: 96 * (1 + i % 7),
                router_id: Some(RouterId(id)),
                next_hop: None,
                proof: None,
            })
        })
        .take(200)
        .collect()
}

/// The messages that fit in one packet, and the packet.
fn full_packet() -> (Vec<Message>, Vec<u8>) {
    let mut b = PacketBuilder::new(BUDGET);
    let mut pushed = Vec::new();
    for m in updates() {
        match b.push(&m) {
            Ok(()) => pushed.push(m),
            Err(BuildError::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    (pushed, b.finish())
}

fn bench(c: &mut Criterion) {
    let (msgs, bytes) = full_packet();
    // Router-Id TLVs are part of the packet but not messages: count TLVs.
    let tlvs = parse_packet(&bytes).unwrap().decode().count() as u64;
    eprintln!(
        "babel_wire: packet of {} bytes, {} updates, {tlvs} TLVs",
        bytes.len(),
        msgs.len()
    );
    let mut g = c.benchmark_group("babel_wire");
    g.throughput(Throughput::Elements(tlvs));
    g.bench_function("parse_full_packet", |b| {
        b.iter(|| {
            let packet = parse_packet(black_box(&bytes)).unwrap();
            let mut n = 0u32;
            for m in packet.messages() {
                n += u32::from(m.is_ok());
            }
            n
        })
    });
    g.bench_function("encode_full_packet", |b| {
        b.iter(|| {
            let mut builder = PacketBuilder::new(BUDGET);
            for m in black_box(&msgs) {
                builder.push(m).unwrap();
            }
            builder.finish()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
