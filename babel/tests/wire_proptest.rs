//! Property tests of the codec: arbitrary message sequences round-trip
//! through the builder and the parser, within any budget; random bytes
//! never make the parser panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use re6st_babel::fuzzing::{babel_packet, decode_all, encode_all};
use re6st_babel::wire::*;

fn interval() -> impl Strategy<Value = Duration> {
    (0u16..=u16::MAX).prop_map(centis_to_duration)
}

fn nonzero_interval() -> impl Strategy<Value = Duration> {
    (1u16..=u16::MAX).prop_map(centis_to_duration)
}

/// Addresses drawn from a few prefixes so that compression kicks in.
fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        any::<u128>().prop_map(Ipv6Addr::from),
        (0u16..4, any::<u64>()).prop_map(|(n, low)| Ipv6Addr::from(
            (0x2001_0db8_u128 << 96) | (u128::from(n) << 64) | u128::from(low)
        )),
        any::<u64>().prop_map(|low| Ipv6Addr::from((0xfe80_u128 << 112) | u128::from(low))),
    ]
}

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        any::<u32>().prop_map(Ipv4Addr::from),
        any::<u8>().prop_map(|b| Ipv4Addr::new(10, 1, 2, b)),
    ]
}

fn prefix() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        3 => (ipv6(), 0u8..=128).prop_map(|(a, l)| IpNet::V6(Ipv6Net::new(a, l).unwrap().trunc())),
        1 => (ipv4(), 0u8..=32).prop_map(|(a, l)| IpNet::V4(Ipv4Net::new(a, l).unwrap().trunc())),
    ]
}

fn router_id() -> impl Strategy<Value = RouterId> {
    prop_oneof![
        any::<[u8; 8]>(),
        (0u8..3).prop_map(|b| [1, 2, 3, 4, 5, 6, 7, b]),
    ]
    .prop_filter("valid", |id| *id != [0; 8] && *id != [0xff; 8])
    .prop_map(RouterId)
}

fn update() -> impl Strategy<Value = Message> {
    (
        prefix(),
        nonzero_interval(),
        any::<u16>(),
        prop_oneof![Just(INFINITY), any::<u16>()],
        router_id(),
        prop::option::of(prop_oneof![
            ipv6().prop_map(IpAddr::V6),
            ipv4().prop_map(IpAddr::V4)
        ]),
        any::<bool>(),
        prop::option::of(prop::collection::vec(any::<u8>(), 1..=OriginProof::MAX_LEN)),
    )
        .prop_map(|(net, interval, seqno, metric, id, nh, host_id, proof)| {
            // Sometimes a /128 whose low bytes are the router-id (flag 0x40).
            let net = match net {
                IpNet::V6(n) if host_id => {
                    let mut o = n.addr().octets();
                    o[8..].copy_from_slice(&id.0);
                    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(o), 128).unwrap())
                }
                other => other,
            };
            let next_hop = match (net, nh) {
                (IpNet::V6(_), Some(IpAddr::V4(_))) => None,
                (_, nh) => nh,
            };
            let router_id = (metric != INFINITY || seqno % 3 != 0).then_some(id);
            Message::Update(UpdateRepr {
                prefix: Some(net),
                interval,
                seqno,
                metric,
                router_id,
                next_hop,
                proof: proof.and_then(|p| OriginProof::new(&p)),
            })
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        4 => update(),
        1 => (any::<bool>(), any::<u16>(), interval(), any::<Option<u32>>()).prop_map(
            |(unicast, seqno, interval, timestamp)| Message::Hello(HelloRepr {
                unicast,
                seqno,
                interval,
                timestamp
            })
        ),
        1 => (
            any::<u16>(),
            nonzero_interval(),
            prop::option::of(prop_oneof![ipv6().prop_map(IpAddr::V6), ipv4().prop_map(IpAddr::V4)]),
            any::<Option<(u32, u32)>>()
        )
            .prop_map(|(rxcost, interval, address, ts)| Message::Ihu(IhuRepr {
                rxcost,
                interval,
                address,
                timestamp: ts.map(|(origin, receive)| IhuTimestamp { origin, receive }),
            })),
        1 => (prop::option::of(prefix()), any::<bool>())
            .prop_map(|(prefix, proof_wanted)| Message::RouteRequest(RouteRequestRepr { prefix, proof_wanted })),
        1 => (prefix(), any::<u16>(), 1u8..=255, router_id()).prop_map(
            |(prefix, seqno, hop_count, router_id)| Message::SeqnoRequest(SeqnoRequestRepr {
                prefix,
                seqno,
                hop_count,
                router_id
            })
        ),
        1 => (any::<u16>(), nonzero_interval())
            .prop_map(|(opaque, interval)| Message::AckRequest(AckRequestRepr { opaque, interval })),
        1 => any::<u16>().prop_map(|opaque| Message::Ack(AckRepr { opaque })),
        1 => (nonzero_interval(), any::<u16>()).prop_map(|(interval, seqno)| {
            Message::Update(UpdateRepr {
                prefix: None,
                interval,
                seqno,
                metric: INFINITY,
                router_id: None,
                next_hop: None,
                proof: None,
            })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// What the builder accepts comes back unchanged from the parser.
    #[test]
    fn messages_round_trip(msgs in prop::collection::vec(message(), 0..60)) {
        let (expected, packets) = encode_all(&msgs, MAX_PACKET_LEN);
        // Only IHU timestamps without a Hello may be dropped.
        prop_assert_eq!(expected.len(), msgs.len());
        prop_assert_eq!(decode_all(&packets), expected);
    }

    /// Within any budget of at least 64 bytes (the largest message: Router-Id,
    /// Next Hop and Update with header) plus the largest Origin Proof
    /// sub-TLV, packets never exceed it and nothing is lost.
    #[test]
    fn budgets_are_respected(
        msgs in prop::collection::vec(message(), 0..60),
        budget in 64usize..1500,
    ) {
        let proofs = msgs.iter().filter_map(|m| match m {
            Message::Update(u) => u.proof.as_ref().map(|p| 2 + p.as_bytes().len()),
            _ => None,
        });
        let budget = budget.max(64 + proofs.max().unwrap_or(0));
        let (expected, packets) = encode_all(&msgs, budget);
        prop_assert_eq!(expected.len(), msgs.len());
        for p in &packets {
            prop_assert!(p.len() <= budget);
        }
        prop_assert_eq!(decode_all(&packets), expected);
    }

    /// Random bytes behind a valid header never panic and re-encode to the
    /// same messages.
    #[test]
    fn random_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut p = vec![42, 2];
        p.extend_from_slice(&(body.len() as u16).to_be_bytes());
        p.extend_from_slice(&body);
        babel_packet(&p);
    }

    /// Random bytes of any shape never panic.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
        babel_packet(&bytes);
    }

    /// Structured packets with some bytes flipped never panic.
    #[test]
    fn mutated_packets_never_panic(
        msgs in prop::collection::vec(message(), 1..20),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let (_, packets) = encode_all(&msgs, MAX_PACKET_LEN);
        for mut p in packets {
            for (i, b) in &flips {
                let i = i.index(p.len());
                if i >= 4 {
                    p[i] ^= b;
                }
            }
            babel_packet(&p);
        }
    }
}
