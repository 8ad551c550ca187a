//! The full per-packet forwarding decision: validate the header,
//! source/destination checks, FIB lookup (100k routes), hop limit or TTL,
//! MTU, and the action (`Forwarder::handle_packet`), for IPv6 and IPv4.
//!
//! `cargo bench --bench forward`. Packets are 1400-byte UDP packets to
//! 4096 destinations (5.7 MB: headers mostly miss the cache), and the
//! first 256 of them cache-hot, built outside the timed loop; throughput
//! is in packets, so criterion prints packets per second. After criterion,
//! the bench times both families in alternating rounds and prints the
//! IPv4/IPv6 ratio of the time per packet (median of the rounds).

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use re6st_dataplane::fib::{Fib, Route};
use re6st_dataplane::forward::{Action, ForwardConfig, Forwarder, Ingress};
use re6st_dataplane::icmp::MAX_ERROR_LEN;
use re6st_dataplane::nexthop::NextHopId;
use re6st_dataplane::packet::checksum;

mod dataplane_util;
use dataplane_util::{Rng, packet, packet_v4};

const ROUTES: usize = 100_000;

/// 100k routes of each family, our own prefixes local, and 4096 packets
/// of each family to random routed destinations.
struct Setup {
    fib: Fib,
    v6: Vec<Vec<u8>>,
    v4: Vec<Vec<u8>>,
    forwarder: Forwarder,
}

fn setup() -> Setup {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let mut routes: Vec<(IpNet, Route)> = Vec::new();
    let mut v6_nets = Vec::new();
    while v6_nets.len() < ROUTES {
        let bits = (0xfd00u128 << 112) | (u128::from(rng.next()) << 48);
        v6_nets.push(Ipv6Net::new(Ipv6Addr::from(bits), 64).unwrap());
    }
    let mut v4_nets = Vec::new();
    while v4_nets.len() < ROUTES {
        let bits = (10u32 << 24) | (rng.next() as u32 & 0x00ff_fff0);
        v4_nets.push(Ipv4Net::new(Ipv4Addr::from(bits), 28).unwrap().trunc());
    }
    for net in v6_nets
        .iter()
        .map(|n| IpNet::V6(*n))
        .chain(v4_nets.iter().map(|n| IpNet::V4(*n)))
    {
        routes.push((net, Route::Via(NextHopId((rng.next() % 30) as u32))));
    }
    let me: Ipv6Addr = "fd00:ffff::1".parse().unwrap();
    let me4 = Ipv4Addr::new(10, 255, 255, 1);
    routes.push(("fd00:ffff::/48".parse().unwrap(), Route::Local));
    routes.push(("10.255.255.0/24".parse().unwrap(), Route::Local));
    let fib = Fib::from_routes(routes.iter().copied());
    let v6 = (0..4096)
        .map(|_| {
            let net = v6_nets[(rng.next() as usize) % v6_nets.len()];
            let dst = Ipv6Addr::from(u128::from(net.network()) | u128::from(rng.next()));
            packet(me, dst, 1400)
        })
        .collect();
    let v4 = (0..4096)
        .map(|_| {
            let net = v4_nets[(rng.next() as usize) % v4_nets.len()];
            let dst = Ipv4Addr::from(u32::from(net.network()) | (rng.next() as u32 & 0xf));
            packet_v4(me4, dst, 1400)
        })
        .collect();
    let forwarder = Forwarder::new(ForwardConfig {
        mtu: 1400,
        icmp_source_v4: Some(me4),
        ..ForwardConfig::new(me)
    });
    let mut s = Setup {
        fib,
        v6,
        v4,
        forwarder,
    };
    // Every packet must take the full path to a next hop, not a drop.
    let mut icmp = [0u8; MAX_ERROR_LEN];
    for p in s.v6.iter_mut().chain(s.v4.iter_mut()) {
        let action = s
            .forwarder
            .handle_packet(&s.fib, Ingress::Tun, p, &mut icmp, Instant::now());
        assert!(matches!(action, Action::NextHop(..)), "{action:?}");
    }
    s
}

/// One pass over `packets` from the TUN.
fn from_tun(fwd: &mut Forwarder, fib: &Fib, packets: &mut [Vec<u8>], now: Instant) {
    let mut icmp = [0u8; MAX_ERROR_LEN];
    for p in packets.iter_mut() {
        let action = fwd.handle_packet(fib, Ingress::Tun, p, &mut icmp, now);
        black_box(matches!(action, Action::NextHop(..)));
    }
}

/// One pass over `packets` in transit, hop limit or TTL restored first
/// (an IPv4 header's checksum with it).
fn transit(fwd: &mut Forwarder, fib: &Fib, packets: &mut [Vec<u8>], now: Instant) {
    let mut icmp = [0u8; MAX_ERROR_LEN];
    for p in packets.iter_mut() {
        if p[0] >> 4 == 4 {
            if p[8] != 64 {
                let old = u16::from_be_bytes([p[8], p[9]]);
                p[8] = 64;
                let sum = u16::from_be_bytes([p[10], p[11]]);
                let sum = checksum::update(sum, old, u16::from_be_bytes([p[8], p[9]]));
                p[10..12].copy_from_slice(&sum.to_be_bytes());
            }
        } else {
            p[7] = 64;
        }
        let action = fwd.handle_packet(fib, Ingress::Tunnel(NextHopId(1)), p, &mut icmp, now);
        black_box(matches!(action, Action::NextHop(..)));
    }
}

fn bench_forward(c: &mut Criterion) {
    let Setup {
        fib,
        mut v6,
        mut v4,
        mut forwarder,
    } = setup();
    let now = Instant::now();
    let mut group = c.benchmark_group("forward");
    group.throughput(Throughput::Elements(v6.len() as u64));
    group.bench_function("from_tun_100k_routes", |b| {
        b.iter(|| from_tun(&mut forwarder, &fib, &mut v6, now))
    });
    group.bench_function("transit_100k_routes", |b| {
        b.iter(|| transit(&mut forwarder, &fib, &mut v6, now))
    });
    group.bench_function("from_tun_v4_100k_routes", |b| {
        b.iter(|| from_tun(&mut forwarder, &fib, &mut v4, now))
    });
    group.bench_function("transit_v4_100k_routes", |b| {
        b.iter(|| transit(&mut forwarder, &fib, &mut v4, now))
    });
    // Cache-hot packets, as right after a TUN read: 256 x 1400 B fit in L2.
    group.throughput(Throughput::Elements(256));
    group.bench_function("from_tun_100k_routes_hot", |b| {
        b.iter(|| from_tun(&mut forwarder, &fib, &mut v6[..256], now))
    });
    group.bench_function("from_tun_v4_100k_routes_hot", |b| {
        b.iter(|| from_tun(&mut forwarder, &fib, &mut v4[..256], now))
    });
    group.finish();
}

/// Median time per packet of `pass` over `rounds` rounds.
fn median_per_packet(times: &mut [Duration], packets: usize) -> f64 {
    times.sort();
    times[times.len() / 2].as_nanos() as f64 / packets as f64
}

/// IPv4 against IPv6 in the same run: alternating rounds, so that both
/// see the same machine load.
fn ratio() {
    let Setup {
        fib,
        mut v6,
        mut v4,
        mut forwarder,
    } = setup();
    let now = Instant::now();
    let rounds = 101;
    for (name, pass) in [
        (
            "from the TUN",
            from_tun as fn(&mut Forwarder, &Fib, &mut [Vec<u8>], Instant),
        ),
        ("in transit", transit),
    ] {
        let (mut t6, mut t4) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = Instant::now();
            pass(&mut forwarder, &fib, &mut v6, now);
            t6.push(t.elapsed());
            let t = Instant::now();
            pass(&mut forwarder, &fib, &mut v4, now);
            t4.push(t.elapsed());
        }
        let (n6, n4) = (
            median_per_packet(&mut t6, v6.len()),
            median_per_packet(&mut t4, v4.len()),
        );
        println!(
            "forward {name}, 100k routes: IPv6 {n6:.1} ns/packet, IPv4 {n4:.1} ns/packet, IPv4/IPv6 = {:.2}",
            n4 / n6
        );
    }
}

criterion_group!(benches, bench_forward);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratio();
}
