//! The full per-packet forwarding decision: validate the IPv6 header,
//! source/destination checks, FIB lookup (100k routes), hop limit, MTU, and
//! the action (`Forwarder::handle_packet`).
//!
//! `cargo bench --bench forward`. Packets are 1400-byte UDP packets to
//! 4096 destinations (5.7 MB: headers mostly miss the cache), and the
//! first 256 of them cache-hot, built outside the timed loop; throughput
//! is in packets, so criterion prints packets per second.

use std::hint::black_box;
use std::net::Ipv6Addr;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipnet::Ipv6Net;
use re6st_dataplane::fib::{Fib, Route};
use re6st_dataplane::forward::{Action, ForwardConfig, Forwarder, Ingress};
use re6st_dataplane::icmp::MAX_ERROR_LEN;
use re6st_dataplane::nexthop::NextHopId;

mod dataplane_util;
use dataplane_util::{Rng, packet};

fn bench_forward(c: &mut Criterion) {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let mut routes: Vec<(Ipv6Net, Route)> = Vec::new();
    while routes.len() < 100_000 {
        let bits = (0xfd00u128 << 112) | (u128::from(rng.next()) << 48);
        let net = Ipv6Net::new(Ipv6Addr::from(bits), 64).unwrap();
        routes.push((net, Route::Via(NextHopId((rng.next() % 30) as u32))));
    }
    let me: Ipv6Addr = "fd00:ffff::1".parse().unwrap();
    routes.push(("fd00:ffff::/48".parse().unwrap(), Route::Local));
    let fib = Fib::from_routes(routes.iter().copied());
    let mut packets: Vec<Vec<u8>> = (0..4096)
        .map(|_| {
            let (net, _) = routes[(rng.next() as usize) % (routes.len() - 1)];
            let dst = Ipv6Addr::from(u128::from(net.network()) | u128::from(rng.next()));
            packet(me, dst, 1400)
        })
        .collect();
    let mut forwarder = Forwarder::new(ForwardConfig {
        mtu: 1400,
        ..ForwardConfig::new(me)
    });
    let mut icmp = [0u8; MAX_ERROR_LEN];
    let now = Instant::now();

    // Every packet must take the full path to a next hop, not a drop.
    for p in packets.iter_mut() {
        let action = forwarder.handle_packet(&fib, Ingress::Tun, p, &mut icmp, now);
        assert!(matches!(action, Action::NextHop(..)), "{action:?}");
    }

    let mut group = c.benchmark_group("forward");
    group.throughput(Throughput::Elements(packets.len() as u64));
    group.bench_function("from_tun_100k_routes", |b| {
        b.iter(|| {
            for p in packets.iter_mut() {
                let action = forwarder.handle_packet(&fib, Ingress::Tun, p, &mut icmp, now);
                black_box(matches!(action, Action::NextHop(..)));
            }
        })
    });
    group.bench_function("transit_100k_routes", |b| {
        b.iter(|| {
            for p in packets.iter_mut() {
                p[7] = 64; // restore the hop limit the last pass decremented
                let action =
                    forwarder.handle_packet(&fib, Ingress::Tunnel(NextHopId(1)), p, &mut icmp, now);
                black_box(matches!(action, Action::NextHop(..)));
            }
        })
    });
    // Cache-hot packets, as right after a TUN read: 256 x 1400 B fit in L2.
    let hot = &mut packets[..256];
    group.throughput(Throughput::Elements(hot.len() as u64));
    group.bench_function("from_tun_100k_routes_hot", |b| {
        b.iter(|| {
            for p in hot.iter_mut() {
                let action = forwarder.handle_packet(&fib, Ingress::Tun, p, &mut icmp, now);
                black_box(matches!(action, Action::NextHop(..)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_forward);
criterion_main!(benches);
