//! FIB properties: lookups equal a naive longest-prefix oracle on random
//! tables, also after random update batches; concurrent readers only ever
//! see whole snapshots.

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ipnet::Ipv6Net;
use proptest::prelude::*;
use re6st_dataplane::fib::{Fib, FibBuilder, Route, SharedFib};
use re6st_dataplane::nexthop::NextHopId;

/// The oracle: scan every prefix, keep the longest that contains `addr`.
fn naive(routes: &[(Ipv6Net, Route)], addr: Ipv6Addr) -> Option<Route> {
    let mut best: Option<(u8, Route)> = None;
    for (net, route) in routes {
        if net.contains(&addr) && best.is_none_or(|(len, _)| net.prefix_len() >= len) {
            best = Some((net.prefix_len(), *route));
        }
    }
    best.map(|(_, r)| r)
}

/// Addresses clustered in a few /32s so that prefixes nest and overlap.
fn addr() -> impl Strategy<Value = Ipv6Addr> {
    (0u128..4, 0u128..8, any::<u128>(), prop::bool::weighted(0.1)).prop_map(
        |(a, b, low, random)| {
            if random {
                Ipv6Addr::from(low)
            } else {
                Ipv6Addr::from((0xfd00u128 << 112) | (a << 96) | (b << 80) | (low >> 48))
            }
        },
    )
}

fn route() -> impl Strategy<Value = Route> {
    prop_oneof![
        1 => Just(Route::Local),
        1 => Just(Route::Unreachable),
        6 => (0u32..20).prop_map(|i| Route::Via(NextHopId(i))),
    ]
}

fn prefix() -> impl Strategy<Value = Ipv6Net> {
    let len = prop_oneof![
        Just(0u8),
        Just(16),
        Just(32),
        Just(48),
        Just(64),
        Just(128),
        0u8..=128
    ];
    (addr(), len).prop_map(|(a, l)| Ipv6Net::new(a, l).unwrap().trunc())
}

/// The table as the oracle sees it: last write per prefix wins.
fn dedup(routes: &[(Ipv6Net, Route)]) -> Vec<(Ipv6Net, Route)> {
    let mut map = std::collections::BTreeMap::new();
    for (n, r) in routes {
        map.insert(n.trunc(), *r);
    }
    map.into_iter().collect()
}

#[derive(Debug, Clone)]
enum Update {
    Set(Ipv6Net, Route),
    Withdraw(usize),
    LinkDown(u32),
}

fn update() -> impl Strategy<Value = Update> {
    prop_oneof![
        4 => (prefix(), route()).prop_map(|(n, r)| Update::Set(n, r)),
        3 => any::<usize>().prop_map(Update::Withdraw),
        1 => (0u32..20).prop_map(Update::LinkDown),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn lookup_equals_naive_lpm(
        routes in prop::collection::vec((prefix(), route()), 0..300),
        probes in prop::collection::vec(addr(), 200),
    ) {
        let fib = Fib::from_routes(routes.iter().copied());
        let table = dedup(&routes);
        prop_assert_eq!(fib.len(), table.len());
        for a in probes.iter().copied().chain(table.iter().map(|(n, _)| n.network())) {
            prop_assert_eq!(fib.lookup(a), naive(&table, a), "address {}", a);
        }
    }

    #[test]
    fn lookup_equals_naive_lpm_after_update_batches(
        initial in prop::collection::vec((prefix(), route()), 0..100),
        batches in prop::collection::vec(prop::collection::vec(update(), 1..30), 1..6),
        probes in prop::collection::vec(addr(), 100),
    ) {
        let mut builder = FibBuilder::new();
        let mut model: Vec<(Ipv6Net, Route)> = Vec::new();
        for (n, r) in &initial {
            builder.insert(*n, *r);
            model.retain(|(m, _)| m != n);
            model.push((*n, *r));
        }
        let shared = SharedFib::new(builder.build());
        for batch in batches {
            for u in batch {
                match u {
                    Update::Set(n, r) => {
                        builder.insert(n, r);
                        model.retain(|(m, _)| *m != n);
                        model.push((n, r));
                    }
                    Update::Withdraw(i) if !model.is_empty() => {
                        let (n, _) = model.remove(i % model.len());
                        builder.remove(n);
                    }
                    Update::Withdraw(_) => {}
                    Update::LinkDown(id) => {
                        builder.remove_next_hop(NextHopId(id));
                        model.retain(|(_, r)| *r != Route::Via(NextHopId(id)));
                    }
                }
            }
            shared.publish(builder.build());
            let fib = shared.load();
            prop_assert_eq!(fib.len(), model.len());
            for a in probes.iter().copied().chain(model.iter().map(|(n, _)| n.network())) {
                prop_assert_eq!(fib.lookup(a), naive(&model, a), "address {}", a);
            }
        }
    }
}

/// A writer publishes generation after generation; every route of
/// generation `g` points to `NextHopId(g)`. Readers must never see two
/// generations in one snapshot, nor a generation go backwards.
#[test]
fn concurrent_readers_see_whole_snapshots() {
    let prefixes: Vec<Ipv6Net> = (0..512u128)
        .map(|i| Ipv6Net::new(Ipv6Addr::from((0xfd00u128 << 112) | (i << 64)), 64).unwrap())
        .collect();
    let build = |g: u32| Fib::from_routes(prefixes.iter().map(|n| (*n, Route::Via(NextHopId(g)))));
    let shared = Arc::new(SharedFib::new(build(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (shared, stop, prefixes) = (shared.clone(), stop.clone(), prefixes.clone());
            std::thread::spawn(move || {
                let mut last = 0;
                let mut snapshots = 0u64;
                loop {
                    let done = stop.load(Ordering::Relaxed);
                    let fib = shared.load();
                    let Some(Route::Via(NextHopId(g))) = fib.lookup(prefixes[0].network()) else {
                        panic!("missing route");
                    };
                    assert!(g >= last, "generation went back from {last} to {g}");
                    for n in &prefixes {
                        assert_eq!(
                            fib.lookup(n.network()),
                            Some(Route::Via(NextHopId(g))),
                            "mixed snapshot"
                        );
                    }
                    last = g;
                    snapshots += 1;
                    if done {
                        break;
                    }
                }
                (snapshots, last)
            })
        })
        .collect();
    for g in 1..=200 {
        shared.publish(build(g));
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let (snapshots, last) = r.join().unwrap();
        assert!(snapshots > 0);
        assert!(last <= 200);
    }
    assert_eq!(
        shared.load().lookup(prefixes[7].network()),
        Some(Route::Via(NextHopId(200)))
    );
}
