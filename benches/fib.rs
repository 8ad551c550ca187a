//! FIB longest-prefix-match lookups at 1k and 100k routes.
//!
//! `cargo bench --bench fib`. IPv6 routes are random /48 and /64 prefixes
//! (the shapes a re6st network allocates) under fd00::/16 plus a default
//! route; IPv4 routes (`fib_lookup_v4`) random /24 and /28 node subnets
//! under 10.0.0.0/8 plus a default route. Probes are 4096 addresses, three
//! quarters inside a route, built outside the timed loop. Throughput is in
//! lookups, so criterion prints the time per lookup.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipnet::{Ipv4Net, Ipv6Net};
use re6st_dataplane::fib::{Fib, Route, SharedFib};
use re6st_dataplane::nexthop::NextHopId;

mod dataplane_util;
use dataplane_util::Rng;

fn table(n: usize, rng: &mut Rng) -> Vec<(Ipv6Net, Route)> {
    let mut routes = vec![("::/0".parse().unwrap(), Route::Via(NextHopId(0)))];
    while routes.len() < n {
        let bits = (0xfd00u128 << 112) | (u128::from(rng.next()) << 48);
        let len = if rng.next().is_multiple_of(4) { 48 } else { 64 };
        let net = Ipv6Net::new(Ipv6Addr::from(bits), len).unwrap().trunc();
        routes.push((net, Route::Via(NextHopId((rng.next() % 30) as u32))));
    }
    routes
}

fn probes(routes: &[(Ipv6Net, Route)], rng: &mut Rng) -> Vec<Ipv6Addr> {
    (0..4096)
        .map(|_| {
            let (net, _) = routes[(rng.next() as usize) % routes.len()];
            let host = u128::from(rng.next()) | (u128::from(rng.next()) << 64);
            if rng.next().is_multiple_of(4) {
                Ipv6Addr::from((0xfd00u128 << 112) | (host >> 16))
            } else {
                let mask = u128::MAX
                    .checked_shr(u32::from(net.prefix_len()))
                    .unwrap_or(0);
                Ipv6Addr::from(u128::from(net.network()) | (host & mask))
            }
        })
        .collect()
}

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("fib_lookup");
    for n in [1_000usize, 100_000] {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
        let routes = table(n, &mut rng);
        let addrs = probes(&routes, &mut rng);
        let fib = Fib::from_routes(routes.iter().copied());
        group.throughput(Throughput::Elements(addrs.len() as u64));
        group.bench_function(format!("{n}_routes"), |b| {
            b.iter(|| {
                for a in &addrs {
                    black_box(fib.lookup(black_box(*a)));
                }
            })
        });
        // As a packet task uses it: one ArcSwap load per 64-packet batch.
        let shared = SharedFib::new(Fib::from_routes(routes.iter().copied()));
        group.bench_function(format!("{n}_routes_shared_batch64"), |b| {
            b.iter(|| {
                for chunk in addrs.chunks(64) {
                    let fib = shared.load();
                    for a in chunk {
                        black_box(fib.lookup(black_box(*a)));
                    }
                }
            })
        });
    }
    group.finish();
}

fn table_v4(n: usize, rng: &mut Rng) -> Vec<(Ipv4Net, Route)> {
    let mut routes = vec![("0.0.0.0/0".parse().unwrap(), Route::Via(NextHopId(0)))];
    while routes.len() < n {
        let len = if rng.next().is_multiple_of(4) { 24 } else { 28 };
        let bits = (10u32 << 24) | (rng.next() as u32 & 0x00ff_fff0);
        let net = Ipv4Net::new(Ipv4Addr::from(bits), len).unwrap().trunc();
        routes.push((net, Route::Via(NextHopId((rng.next() % 30) as u32))));
    }
    routes
}

fn bench_lookup_v4(c: &mut Criterion) {
    let mut group = c.benchmark_group("fib_lookup_v4");
    for n in [1_000usize, 100_000] {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
        let routes = table_v4(n, &mut rng);
        let addrs: Vec<Ipv4Addr> = (0..4096)
            .map(|_| {
                let (net, _) = routes[(rng.next() as usize) % routes.len()];
                let host = rng.next() as u32;
                if rng.next().is_multiple_of(4) {
                    Ipv4Addr::from((10u32 << 24) | (host >> 8))
                } else {
                    let mask = u32::MAX
                        .checked_shr(u32::from(net.prefix_len()))
                        .unwrap_or(0);
                    Ipv4Addr::from(u32::from(net.network()) | (host & mask))
                }
            })
            .collect();
        let fib = Fib::from_routes(routes.iter().copied());
        group.throughput(Throughput::Elements(addrs.len() as u64));
        group.bench_function(format!("{n}_routes"), |b| {
            b.iter(|| {
                for a in &addrs {
                    black_box(fib.lookup_v4(black_box(*a)));
                }
            })
        });
    }
    group.finish();
}

fn bench_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("fib_build");
    group.sample_size(10);
    for n in [1_000usize, 100_000] {
        let mut rng = Rng(0x1234_5678 ^ n as u64);
        let routes = table(n, &mut rng);
        group.bench_function(format!("{n}_routes"), |b| {
            b.iter(|| Fib::from_routes(black_box(&routes).iter().copied()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_lookup, bench_lookup_v4, bench_build);
criterion_main!(benches);
