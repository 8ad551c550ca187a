//! Tests of the packet builder: exact bytes for babeld-style encoding, and
//! the budget, Hello and IHU rules.

use std::net::IpAddr;
use std::time::Duration;

use super::*;

const ID: RouterId = RouterId([1, 2, 3, 4, 5, 6, 7, 8]);
const ID2: RouterId = RouterId([9, 9, 9, 9, 9, 9, 9, 9]);

fn upd(prefix: &str, id: Option<RouterId>, metric: u16) -> Message {
    Message::Update(UpdateRepr {
        prefix: Some(prefix.parse().unwrap()),
        interval: Duration::from_secs(16),
        seqno: 7,
        metric,
        router_id: id,
        next_hop: None,
        proof: None,
    })
}

fn hello(timestamp: Option<u32>) -> Message {
    Message::Hello(HelloRepr {
        unicast: false,
        seqno: 1,
        interval: Duration::from_secs(4),
        timestamp,
    })
}

fn ihu(timestamp: bool) -> Message {
    Message::Ihu(IhuRepr {
        rxcost: 96,
        interval: Duration::from_secs(12),
        address: Some("fe80::1".parse().unwrap()),
        timestamp: timestamp.then_some(IhuTimestamp {
            origin: 1,
            receive: 2,
        }),
    })
}

fn decode(bytes: &[u8]) -> Vec<Message> {
    parse_packet(bytes)
        .unwrap()
        .messages()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn test_emit_updates_babeld_style() {
    let msgs = [
        upd("2001:db8:1::/48", Some(ID), 96),
        upd("2001:db8:1:2::/64", Some(ID), 96),
        upd("2001:db8:1:2::/64", Some(ID2), 96),
    ];
    let mut b = PacketBuilder::new(1400);
    for m in &msgs {
        b.push(m).unwrap();
    }
    let bytes = b.finish();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        42, 2, 0, 67,
        6, 10, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
        // /48: no default yet (and plen >= 48): 0x80, nothing omitted.
        8, 16, 2, 0x80, 48, 0, 0x06, 0x40, 0, 7, 0, 96, 0x20, 0x01, 0x0d, 0xb8, 0, 1,
        // /64: plen >= 48 so 0x80 again; 7 bytes shared with the default.
        8, 11, 2, 0x80, 64, 7, 0x06, 0x40, 0, 7, 0, 96, 2,
        // Router-id changes: a new Router-Id TLV.
        6, 10, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9,
        8, 10, 2, 0x80, 64, 8, 0x06, 0x40, 0, 7, 0, 96,
    ];
    assert_eq!(bytes, expected);
    assert_eq!(decode(&bytes), msgs);
}

#[test]
fn short_prefixes_do_not_replace_the_default() {
    let msgs = [
        upd("2001:db8:1::/48", Some(ID), 96),
        upd("2001:db8::/32", Some(ID), 96),
        upd("2001:db8:1:5::/64", Some(ID), 96),
    ];
    let mut b = PacketBuilder::new(1400);
    for m in &msgs {
        b.push(m).unwrap();
    }
    let bytes = b.finish();
    // The /32 has no 0x80 and omits 4 bytes.
    assert_eq!(
        &bytes[34..46],
        &[8, 10, 2, 0, 32, 4, 0x06, 0x40, 0, 7, 0, 96]
    );
    // The /64 still omits 7 bytes of the /48.
    assert_eq!(&bytes[46..52], &[8, 11, 2, 0x80, 64, 7]);
    assert_eq!(decode(&bytes), msgs);
}

#[test]
fn router_id_flag_for_own_host_route() {
    let own = "fd00::102:304:506:708/128";
    let msgs = [upd(own, Some(ID), 0), upd("fd00:1::/64", Some(ID), 0)];
    let mut b = PacketBuilder::new(1400);
    for m in &msgs {
        b.push(m).unwrap();
    }
    let bytes = b.finish();
    // No Router-Id TLV: flags 0x80|0x40.
    assert_eq!(&bytes[4..8], &[8, 26, 2, 0xc0]);
    assert_eq!(decode(&bytes), msgs);
}

#[test]
fn ipv4_prefixes_and_next_hops() {
    let mut via_v4 = upd("10.0.0.0/8", Some(ID), 5);
    let Message::Update(u) = &mut via_v4 else {
        unreachable!()
    };
    u.next_hop = Some("192.168.1.1".parse().unwrap());
    let msgs = [upd("10.1.0.0/16", Some(ID), 5), via_v4];
    let mut b = PacketBuilder::new(1400);
    for m in &msgs {
        b.push(m).unwrap();
    }
    let bytes = b.finish();
    // The first uses AE 4 (no next hop), the second AE 1 after a Next Hop.
    assert_eq!(&bytes[16..19], &[8, 12, 4]);
    assert_eq!(&bytes[30..38], &[7, 6, 1, 0, 192, 168, 1, 1]);
    assert_eq!(&bytes[38..41], &[8, 11, 1]);
    assert_eq!(decode(&bytes), msgs);
}

#[test]
fn ipv4_prefix_via_the_sender_is_always_ae4() {
    let mut via_ll = upd("10.2.0.0/16", Some(ID), 5);
    let Message::Update(u) = &mut via_ll else {
        unreachable!()
    };
    u.next_hop = Some("fe80::7".parse().unwrap());
    let mut b = PacketBuilder::new(1400);
    b.push(&via_ll).unwrap();
    // The sender as next hop cannot follow an IPv6 Next Hop in the same
    // packet (AE 4 would take it, AE 1 has none): a new packet.
    assert_eq!(
        b.push(&upd("10.1.0.0/16", Some(ID), 5)),
        Err(BuildError::Full)
    );
    let mut b = PacketBuilder::new(1400);
    b.push(&upd("10.1.0.0/16", Some(ID), 5)).unwrap();
    let bytes = b.finish();
    assert_eq!(&bytes[16..19], &[8, 12, 4]);
}

#[test]
fn budget_is_respected_and_tlvs_never_split() {
    let mut b = PacketBuilder::new(100);
    let mut pushed = 0;
    loop {
        let net = format!("2001:db8:{pushed:x}::/48");
        match b.push(&upd(&net, Some(ID), 96)) {
            Ok(()) => pushed += 1,
            Err(BuildError::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let len = b.len();
    let bytes = b.finish();
    assert_eq!(bytes.len(), len);
    assert!(bytes.len() <= 100);
    // Header 4 + Router-Id 12 + a full /48 (18) + 5 compressed ones
    // omitting 5 bytes (13 each) = 99; a seventh would need 112.
    assert_eq!(pushed, 6);
    assert_eq!(bytes.len(), 99);
    assert_eq!(decode(&bytes).len(), 6);
}

#[test]
fn too_big_for_an_empty_packet() {
    let mut b = PacketBuilder::new(10);
    assert_eq!(
        b.push(&upd("2001:db8::/32", Some(ID), 1)),
        Err(BuildError::TooBig {
            need: 4 + 12 + 16,
            budget: 10
        })
    );
    assert!(b.is_empty());
    assert_eq!(b.finish(), [42, 2, 0, 0]);
}

#[test]
fn one_hello_per_packet() {
    let mut b = PacketBuilder::new(1400);
    b.push(&hello(None)).unwrap();
    assert_eq!(b.push(&hello(None)), Err(BuildError::Full));
}

#[test]
fn ihu_timestamp_needs_a_timestamped_hello_first() {
    let mut b = PacketBuilder::new(1400);
    assert_eq!(
        b.push(&ihu(true)),
        Err(BuildError::IhuTimestampWithoutHello)
    );
    b.push(&ihu(false)).unwrap();
    b.push(&hello(None)).unwrap();
    assert_eq!(
        b.push(&ihu(true)),
        Err(BuildError::IhuTimestampWithoutHello)
    );
    let mut b = PacketBuilder::new(1400);
    b.push(&hello(Some(5))).unwrap();
    b.push(&ihu(true)).unwrap();
    let bytes = b.finish();
    assert_eq!(decode(&bytes), [hello(Some(5)), ihu(true)]);
}

#[test]
fn state_that_cannot_be_undone_needs_a_new_packet() {
    let mut b = PacketBuilder::new(1400);
    b.push(&upd("2001:db8::/32", Some(ID), 1)).unwrap();
    // A retraction without router-id cannot follow one with a router-id.
    assert_eq!(
        b.push(&upd("2001:db8::/32", None, INFINITY)),
        Err(BuildError::Full)
    );
    let mut nh = upd("2001:db8::/32", Some(ID), 1);
    let Message::Update(u) = &mut nh else {
        unreachable!()
    };
    u.next_hop = Some("fe80::9".parse::<IpAddr>().unwrap());
    b.push(&nh).unwrap();
    // Back to "the sender is the next hop": impossible in this packet.
    assert_eq!(
        b.push(&upd("2001:db8::/32", Some(ID), 1)),
        Err(BuildError::Full)
    );
    let bytes = b.finish();
    assert_eq!(decode(&bytes).len(), 2);
}

#[test]
fn invalid_messages_are_refused() {
    let mut b = PacketBuilder::new(1400);
    assert!(matches!(
        b.push(&upd("2001:db8::/32", None, 1)),
        Err(BuildError::Invalid(_))
    ));
    assert!(matches!(
        b.push(&upd("2001:db8::/32", Some(RouterId([0; 8])), 1)),
        Err(BuildError::Invalid(_))
    ));
    let seqno = Message::SeqnoRequest(SeqnoRequestRepr {
        prefix: "2001:db8::/32".parse().unwrap(),
        seqno: 1,
        hop_count: 0,
        router_id: ID,
    });
    assert!(matches!(b.push(&seqno), Err(BuildError::Invalid(_))));
    let wildcard_finite = Message::Update(UpdateRepr {
        prefix: None,
        interval: Duration::from_secs(1),
        seqno: 1,
        metric: 5,
        router_id: Some(ID),
        next_hop: None,
        proof: None,
    });
    assert!(matches!(
        b.push(&wildcard_finite),
        Err(BuildError::Invalid(_))
    ));
    assert!(b.is_empty());
}

#[test]
fn intervals_are_rounded_and_saturated() {
    let mut b = PacketBuilder::new(1400);
    let mut m = upd("2001:db8::/32", Some(ID), 1);
    let Message::Update(u) = &mut m else {
        unreachable!()
    };
    u.interval = Duration::from_secs(100_000);
    b.push(&m).unwrap();
    let ack = Message::AckRequest(AckRequestRepr {
        opaque: 1,
        interval: Duration::ZERO,
    });
    b.push(&ack).unwrap();
    let msgs = decode(&b.finish());
    let Message::Update(u) = &msgs[0] else {
        unreachable!()
    };
    assert_eq!(u.interval, Duration::from_millis(655_350));
    let Message::AckRequest(a) = &msgs[1] else {
        unreachable!()
    };
    assert_eq!(a.interval, Duration::from_millis(10));
}
