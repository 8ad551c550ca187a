//! Hostile input never panics the engine and never breaks its invariants:
//! random bytes, bit-flipped copies of valid packets, and random sequences
//! of well-formed but arbitrary messages (absurd metrics, wrapped seqnos,
//! replays, our own router-id, martians) from several neighbours.

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv6Net};
use proptest::prelude::*;
use re6st_babel::engine::{Config, Engine, IfaceId, InterfaceKind};
use re6st_babel::wire::{
    HelloRepr, IhuRepr, IhuTimestamp, Message, PacketBuilder, RouteRequestRepr, RouterId,
    SeqnoRequestRepr, UpdateRepr,
};

const ME: RouterId = RouterId([2, 0, 0, 0, 0, 0, 0, 1]);

fn engine(t0: Instant) -> Engine {
    let mut e = Engine::new(Config::default(), ME, 100, t0).unwrap();
    e.add_xroute("fd00:1::/64".parse().unwrap(), 0, t0).unwrap();
    e.add_interface(IfaceId(1), InterfaceKind::Tunnel, 1162, t0)
        .unwrap();
    e.add_interface(IfaceId(2), InterfaceKind::Tunnel, 1162, t0)
        .unwrap();
    let lan = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
    e.add_interface(IfaceId(3), InterfaceKind::Lan { address: lan }, 1400, t0)
        .unwrap();
    e
}

/// Drives the engine for `d` and checks the invariants.
fn settle(e: &mut Engine, now: &mut Instant, d: Duration) {
    let end = *now + d;
    loop {
        while let Some(t) = e.poll_transmit(*now) {
            assert!(t.bytes.len() <= 1400);
            // Whatever we send must parse.
            re6st_babel::wire::parse_packet(&t.bytes).unwrap();
        }
        while e.poll_event().is_some() {}
        check(e, *now);
        match e.poll_timeout() {
            Some(t) if t <= end => {
                *now = (*now).max(t);
                e.handle_timeout(*now);
            }
            _ => break,
        }
    }
    *now = end;
}

fn check(e: &Engine, now: Instant) {
    for r in e.routes(now) {
        assert!(!r.selected || r.feasible, "unfeasible selected route {r:?}");
        assert!(
            !r.selected || r.local || r.metric < 0xFFFF,
            "infinite selected {r:?}"
        );
    }
    for f in e.fib() {
        assert!(
            e.routes(now)
                .iter()
                .any(|r| r.prefix == f.prefix && r.selected)
        );
    }
}

fn prefix() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        // A small space so that messages collide on the same prefixes.
        (0u16..4, prop_oneof![Just(48u8), Just(64), Just(128)]).prop_map(|(n, len)| {
            IpNet::V6(
                Ipv6Net::new(Ipv6Addr::new(0xfd00, n, 0, 0, 0, 0, 0, 1), len)
                    .unwrap()
                    .trunc(),
            )
        }),
        // Martians, the default route, our own prefix.
        prop_oneof![
            Just("ff02::/16"),
            Just("fe80::/64"),
            Just("::/0"),
            Just("::1/128"),
            Just("fd00:1::/64"),
            Just("10.0.0.0/8"),
        ]
        .prop_map(|s| s.parse::<IpNet>().unwrap()),
    ]
}

fn router_id() -> impl Strategy<Value = RouterId> {
    prop_oneof![
        Just(ME),
        (2u8..5).prop_map(|n| RouterId([2, 0, 0, 0, 0, 0, 0, n]))
    ]
}

fn metric() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(0u16),
        Just(0xFFFF),
        Just(0xFFFE),
        0u16..2000,
        any::<u16>()
    ]
}

fn seqno() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(0u16),
        Just(0xFFFF),
        Just(0x8000),
        95u16..110,
        any::<u16>()
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<bool>(),
            seqno(),
            0u64..70_000,
            proptest::option::of(any::<u32>())
        )
            .prop_map(|(unicast, seqno, cs, timestamp)| Message::Hello(HelloRepr {
                unicast,
                seqno,
                interval: Duration::from_millis(cs * 10 % 655_360),
                timestamp,
            })),
        (
            metric(),
            1u64..1000,
            proptest::option::of((any::<u32>(), any::<u32>()))
        )
            .prop_map(|(rxcost, cs, ts)| Message::Ihu(IhuRepr {
                rxcost,
                interval: Duration::from_millis(cs * 10),
                address: None,
                timestamp: ts.map(|(origin, receive)| IhuTimestamp { origin, receive }),
            })),
        (prefix(), seqno(), metric(), router_id(), 1u64..5000).prop_map(
            |(p, seqno, metric, rid, cs)| Message::Update(UpdateRepr {
                prefix: Some(p),
                interval: Duration::from_millis(cs * 10),
                seqno,
                metric,
                router_id: Some(rid),
                next_hop: None,
                proof: None,
            })
        ),
        proptest::option::of(prefix()).prop_map(|prefix| Message::RouteRequest(RouteRequestRepr {
            prefix,
            proof_wanted: false
        })),
        (prefix(), seqno(), 1u8..=255, router_id()).prop_map(
            |(prefix, seqno, hop_count, router_id)| {
                Message::SeqnoRequest(SeqnoRequestRepr {
                    prefix,
                    seqno,
                    hop_count,
                    router_id,
                })
            }
        ),
    ]
}

/// (interface, sender) pairs: two tunnels and three LAN neighbours.
fn sender() -> impl Strategy<Value = (u32, u16)> {
    prop_oneof![Just((1u32, 2u16)), Just((2, 3)), (Just(3u32), 4u16..7)]
}

fn encode(msgs: &[Message]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = PacketBuilder::new(1400);
    for m in msgs {
        if b.push(m).is_err() {
            if !b.is_empty() {
                out.push(std::mem::replace(&mut b, PacketBuilder::new(1400)).finish());
            }
            // Messages the builder refuses (e.g. an IHU timestamp without a
            // Hello) are left out: this test is about the engine.
            let _ = b.push(m);
        }
    }
    if !b.is_empty() {
        out.push(b.finish());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..20)) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut e = engine(t0);
        for (i, p) in packets.iter().enumerate() {
            let mut p = p.clone();
            // Half of them with a valid header so the TLV walk is exercised.
            if i % 2 == 0 && p.len() >= 4 {
                p[0] = 42;
                p[1] = 2;
                let body = (p.len() - 4) as u16;
                p[2..4].copy_from_slice(&body.to_be_bytes());
            }
            e.handle_packet(IfaceId(1), "fe80::2".parse().unwrap(), &p, now);
            settle(&mut e, &mut now, Duration::from_millis(50));
        }
        prop_assert!(e.counters().packets_received == packets.len() as u64);
    }

    #[test]
    fn arbitrary_messages_keep_the_invariants(
        script in proptest::collection::vec((sender(), proptest::collection::vec(message(), 1..8), 0u64..3000), 1..40)
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut e = engine(t0);
        for ((iface, host), msgs, gap_ms) in script {
            let from = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, host));
            for p in encode(&msgs) {
                e.handle_packet(IfaceId(iface), from, &p, now);
                check(&e, now);
            }
            settle(&mut e, &mut now, Duration::from_millis(gap_ms));
        }
        // Long enough for every timer to run out.
        settle(&mut e, &mut now, Duration::from_secs(400));
        prop_assert!(e.fib().is_empty(), "silent neighbours leave no route: {:?}", e.fib());
    }

    #[test]
    fn bit_flips_of_valid_traffic_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..16)) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut e = engine(t0);
        let msgs = vec![
            Message::Hello(HelloRepr { unicast: false, seqno: 1, interval: Duration::from_secs(4), timestamp: Some(5) }),
            Message::Ihu(IhuRepr { rxcost: 96, interval: Duration::from_secs(12), address: None, timestamp: Some(IhuTimestamp { origin: 1, receive: 2 }) }),
            Message::Update(UpdateRepr { prefix: Some("fd00:2::/64".parse().unwrap()), interval: Duration::from_secs(16), seqno: 3, metric: 96, router_id: Some(RouterId([2, 0, 0, 0, 0, 0, 0, 2])), next_hop: None, proof: None }),
            Message::Update(UpdateRepr { prefix: Some("fd00:3::/48".parse().unwrap()), interval: Duration::from_secs(16), seqno: 3, metric: 96, router_id: Some(RouterId([2, 0, 0, 0, 0, 0, 0, 2])), next_hop: None, proof: None }),
            Message::SeqnoRequest(SeqnoRequestRepr { prefix: "fd00:1::/64".parse().unwrap(), seqno: 101, hop_count: 3, router_id: ME }),
        ];
        let good = encode(&msgs).remove(0);
        for (pos, x) in flips {
            let mut p = good.clone();
            let i = pos % p.len();
            p[i] ^= x | 1;
            e.handle_packet(IfaceId(1), "fe80::2".parse().unwrap(), &p, now);
            settle(&mut e, &mut now, Duration::from_millis(20));
        }
    }
}
