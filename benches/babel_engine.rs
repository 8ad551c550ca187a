//! Babel engine hot paths: processing one full Update packet
//! (new routes, and a periodic refresh of known ones), recomputing every
//! route of a 1,000-prefix table after a link cost change, and encoding a
//! full dump of that table. Inputs are built outside the timed part.
//!
//! cargo bench --bench babel_engine

use std::hint::black_box;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ipnet::IpNet;
use re6st_babel::engine::{Config, Engine, IfaceId, InterfaceKind};
use re6st_babel::wire::{
    HelloRepr, IhuRepr, Message, PacketBuilder, RouteRequestRepr, RouterId, UpdateRepr,
};

const BUDGET: usize = 1162;
const PREFIXES: usize = 1000;

fn rid(n: u8) -> RouterId {
    RouterId([2, 0, 0, 0, 0, 0, 0, n])
}

fn addr(n: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, n as u16 + 1))
}

fn prefixes(n: usize) -> Vec<IpNet> {
    (0..n)
        .map(|i| {
            format!("fd00:{:x}:{:x}::/64", i / 256 + 1, i % 256)
                .parse()
                .unwrap()
        })
        .collect()
}

/// Messages packed into packets of at most BUDGET bytes.
fn packets(msgs: &[Message]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = PacketBuilder::new(BUDGET);
    for m in msgs {
        if b.push(m).is_err() {
            out.push(std::mem::replace(&mut b, PacketBuilder::new(BUDGET)).finish());
            b.push(m).unwrap();
        }
    }
    if !b.is_empty() {
        out.push(b.finish());
    }
    out
}

fn hello_ihu(seqno: u16, rxcost: u16) -> Vec<u8> {
    packets(&[
        Message::Hello(HelloRepr {
            unicast: false,
            seqno,
            interval: Duration::from_secs(4),
            timestamp: None,
        }),
        Message::Ihu(IhuRepr {
            rxcost,
            interval: Duration::from_secs(12),
            address: None,
            timestamp: None,
        }),
    ])
    .remove(0)
}

/// Updates for `prefixes`, all from one source (router-id `src`).
fn updates(src: RouterId, prefixes: &[IpNet], metric: u16) -> Vec<Vec<u8>> {
    let msgs: Vec<Message> = prefixes
        .iter()
        .map(|p| {
            Message::Update(UpdateRepr {
                prefix: Some(*p),
                interval: Duration::from_secs(16),
                seqno: 7,
                metric,
                router_id: Some(src),
                next_hop: None,
                proof: None,
            })
        })
        .collect();
    packets(&msgs)
}

fn drain(e: &mut Engine, now: Instant) {
    while e.poll_transmit(now).is_some() {}
    while e.poll_event().is_some() {}
}

/// An engine with `n` tunnels, each with a neighbour that sent Hello + IHU.
fn engine(n: u32, t0: Instant) -> Engine {
    let mut e = Engine::new(Config::default(), rid(1), 1, t0).unwrap();
    for i in 0..n {
        e.add_interface(IfaceId(i), InterfaceKind::Tunnel, BUDGET, t0)
            .unwrap();
        e.handle_packet(IfaceId(i), addr(i), &hello_ihu(1, 96), t0);
    }
    drain(&mut e, t0);
    e
}

fn bench(c: &mut Criterion) {
    let t0 = Instant::now();
    let all = prefixes(PREFIXES);
    let full = updates(rid(9), &all, 100);
    let first = full[0].clone();
    let per_packet = re6st_babel::wire::parse_packet(&first)
        .unwrap()
        .messages()
        .filter(|m| matches!(m, Ok(Message::Update(_))))
        .count();
    println!(
        "a full Update packet: {} bytes, {per_packet} updates; {PREFIXES} prefixes = {} packets",
        first.len(),
        full.len()
    );

    let mut g = c.benchmark_group("babel_engine");
    g.throughput(Throughput::Elements(per_packet as u64));
    g.bench_function("update_packet_new_routes", |b| {
        b.iter_batched(
            || engine(4, t0),
            |mut e| {
                e.handle_packet(IfaceId(0), addr(0), black_box(&first), t0);
                e
            },
            BatchSize::SmallInput,
        )
    });
    let mut known = engine(4, t0);
    for p in &full {
        known.handle_packet(IfaceId(0), addr(0), p, t0);
    }
    drain(&mut known, t0);
    let mut now = t0;
    g.bench_function("update_packet_refresh", |b| {
        b.iter(|| {
            now += Duration::from_micros(1);
            known.handle_packet(IfaceId(0), addr(0), black_box(&first), now);
        })
    });

    // 1,000 prefixes through two of three neighbours; neighbour 0's link cost
    // toggles, so every route's metric changes and every prefix is
    // reselected (half the time switching neighbour).
    g.throughput(Throughput::Elements(PREFIXES as u64));
    let mut e = engine(3, t0);
    for p in &full {
        e.handle_packet(IfaceId(0), addr(0), p, t0);
    }
    for p in &updates(rid(9), &all, 150) {
        e.handle_packet(IfaceId(1), addr(1), p, t0);
    }
    drain(&mut e, t0);
    assert_eq!(e.fib().len(), PREFIXES);
    let costly = hello_ihu(2, 700);
    let cheap = hello_ihu(3, 96);
    let mut now = t0;
    let mut flip = false;
    g.bench_function("recompute_1000_routes", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                now += Duration::from_millis(1);
                flip = !flip;
                let p = if flip { &costly } else { &cheap };
                let start = Instant::now();
                e.handle_packet(IfaceId(0), addr(0), black_box(p), now);
                spent += start.elapsed();
                drain(&mut e, now + Duration::from_secs(1));
            }
            spent
        })
    });

    // Encoding a full dump of the table (a wildcard request's answer) for
    // the third neighbour, which no route goes through (split horizon).
    let wildcard = packets(&[Message::RouteRequest(RouteRequestRepr {
        prefix: None,
        proof_wanted: false,
    })])
    .remove(0);
    g.bench_function("full_dump_1000_routes", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                now += Duration::from_secs(1);
                e.handle_packet(IfaceId(2), addr(2), &wildcard, now);
                let later = now + Duration::from_millis(50);
                let start = Instant::now();
                let mut n = 0;
                while let Some(t) = e.poll_transmit(later) {
                    n += black_box(t.bytes.len());
                }
                spent += start.elapsed();
                assert!(n > PREFIXES * 10);
            }
            spent
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
