//! Every table has a bound, and a neighbour that floods one is cut at the
//! bound, counted, and does not stop the engine: the route table
//! (`max_routes`), the neighbours of an interface (`max_neighbours`, in
//! `neighbours`) and the pending seqno requests (`max_pending_requests`).
//! Sources, output buffers and update resends are keyed by what these hold
//! (a source per announced prefix and router-id, a buffer per interface
//! and neighbour, a resend per prefix), so they are bounded with them;
//! sources outlive their routes by the source GC time, which a churning
//! neighbour tests.

use super::*;
use crate::engine::*;

fn prefix(i: u32) -> IpNet {
    pfx(&format!("fd00:{:x}:{:x}::/64", i >> 16, i & 0xffff))
}

#[test]
fn a_route_flood_stops_at_max_routes_and_routing_goes_on() {
    let mut t = T::new();
    t.e = Engine::new(
        Config {
            max_routes: 500,
            ..Config::default()
        },
        ME,
        100,
        t.now,
    )
    .unwrap();
    t.tunnel(T1, "fe80::2");
    t.tunnel(T2, "fe80::3");
    // 2,000 prefixes in packets of 50 updates.
    for chunk in 0..40 {
        let msgs: Vec<Message> = (0..50)
            .map(|k| update(prefix(chunk * 50 + k), SRC, 1, 100))
            .collect();
        t.rx(T1, "fe80::2", &msgs);
    }
    t.sent(ms(50));
    let routes = t.e.routes(t.now).iter().filter(|r| !r.local).count();
    assert_eq!(routes, 500);
    assert_eq!(t.e.counters().route_limit, 1500);
    // Known routes still update; the other neighbour's routes to known
    // prefixes are refused as well (the bound is on routes, not prefixes),
    // and the engine keeps forwarding what it has.
    t.rx(T1, "fe80::2", &[update(prefix(0), SRC, 2, 50)]);
    assert_eq!(t.selected(prefix(0)).unwrap().seqno, 2);
    assert_eq!(t.e.fib().len(), 500);
    // Once the flood is retracted, room comes back.
    let retract: Vec<Message> = (0..500)
        .map(|k| update(prefix(k), SRC, 3, INFINITY))
        .collect();
    for c in retract.chunks(50) {
        t.rx(T1, "fe80::2", c);
    }
    t.sent(Config::default().route_gc + secs(200));
    t.rx(
        T2,
        "fe80::3",
        &[hello(2, None), ihu(96), update(prefix(1999), SRC2, 1, 100)],
    );
    assert!(t.selected(prefix(1999)).is_some());
}

#[test]
fn pending_seqno_requests_stop_at_their_bound() {
    let mut t = T::new();
    t.e = Engine::new(
        Config {
            max_pending_requests: 16,
            ..Config::default()
        },
        ME,
        100,
        t.now,
    )
    .unwrap();
    t.tunnel(T1, "fe80::2");
    t.tunnel(T2, "fe80::3");
    let msgs: Vec<Message> = (0..64).map(|k| update(prefix(k), SRC, 7, 100)).collect();
    t.rx(T1, "fe80::2", &msgs);
    t.sent(ms(50));
    // The other neighbour asks a newer seqno for every prefix: each would
    // be forwarded and remembered; only 16 are.
    let reqs: Vec<Message> = (0..64)
        .map(|k| seqno_request(prefix(k), SRC, 8, 10))
        .collect();
    t.rx(T2, "fe80::3", &reqs);
    let forwarded = seqno_requests(&t.sent(ms(5)));
    assert_eq!(forwarded.len(), 16);
    assert_eq!(t.e.counters().request_limit, 48);
    assert_eq!(t.e.resend.request_count(), 16);
    // Answered requests free their slots.
    let answers: Vec<Message> = (0..16).map(|k| update(prefix(k), SRC, 8, 100)).collect();
    t.rx(T1, "fe80::2", &answers);
    t.sent(ms(50));
    assert!(t.e.resend.request_count() < 16);
}

#[test]
fn the_default_bounds() {
    let c = Config::default();
    assert_eq!(
        (c.max_routes, c.max_neighbours, c.max_pending_requests),
        (65_536, 256, 1024)
    );
}

/// A neighbour that churns prefixes and router-ids (announces a fresh set
/// every 30 s, retracts the last) cannot grow the tables that outlive a
/// route: a retracted route holds its slot for the route GC time (60 s)
/// and a source stays for the source GC time (180 s), so sources are
/// bounded by `max_routes` times (1 + 180 / 60).
#[test]
fn prefix_churn_keeps_sources_and_resends_bounded() {
    let mut t = T::new();
    let max_routes = 200;
    t.e = Engine::new(
        Config {
            max_routes,
            ..Config::default()
        },
        ME,
        100,
        t.now,
    )
    .unwrap();
    t.tunnel(T1, "fe80::2");
    t.tunnel(T2, "fe80::3");
    let mut most_sources = 0;
    let mut most_routes = 0;
    let mut most_resends = 0;
    let mut rounds_in = 0;
    let mut hellos = 1;
    for round in 0..40u32 {
        let rid = RouterId([9, 0, 0, 0, 0, 0, (round >> 8) as u8, round as u8]);
        let fresh: Vec<Message> = (0..max_routes as u32)
            .map(|k| update(prefix(round * 1000 + k), rid, 1, 100))
            .collect();
        let old: Vec<Message> = (0..max_routes as u32)
            .filter(|_| round > 0)
            .map(|k| update(prefix((round - 1) * 1000 + k), rid, 1, INFINITY))
            .collect();
        for c in fresh.chunks(50).chain(old.chunks(50)) {
            t.rx(T1, "fe80::2", c);
        }
        if t.selected(prefix(round * 1000)).is_some() {
            rounds_in += 1;
        }
        // 30 s, the neighbours' Hellos every 4 s.
        for _ in 0..7 {
            hellos += 1;
            t.rx(T1, "fe80::2", &[hello(hellos, None), ihu(96)]);
            t.rx(T2, "fe80::3", &[hello(hellos, None), ihu(96)]);
            t.sent(ms(4285));
        }
        most_sources = most_sources.max(t.e.sources.len());
        most_routes = most_routes.max(t.e.routes.len());
        most_resends = most_resends.max(t.e.resend.update_count());
    }
    // The churn got through: a fresh set every two minutes (the retracted
    // set holds its slots until its routes are collected).
    assert!(rounds_in >= 8, "{rounds_in} rounds let in");
    assert!(most_routes <= max_routes, "{most_routes} routes");
    assert!(most_sources <= 4 * max_routes, "{most_sources} sources");
    assert!(most_resends <= max_routes, "{most_resends} update resends");
}
