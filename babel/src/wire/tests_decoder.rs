//! Packet-level conformance tests of the decoder (RFC 8966 §4),
//! as byte arrays.

use std::net::IpAddr;
use std::time::Duration;

use super::*;

/// A packet with `body` and a correct header.
fn packet(body: &[u8]) -> Vec<u8> {
    let mut p = vec![42, 2];
    p.extend_from_slice(&(body.len() as u16).to_be_bytes());
    p.extend_from_slice(body);
    p
}

fn messages(body: &[u8]) -> Vec<Result<Message, ParseError>> {
    let p = packet(body);
    parse_packet(&p).unwrap().messages().collect()
}

fn update(m: &Result<Message, ParseError>) -> &UpdateRepr {
    match m {
        Ok(Message::Update(u)) => u,
        other => panic!("not an update: {other:?}"),
    }
}

const HELLO: [u8; 8] = [4, 6, 0, 0, 0, 1, 1, 144];
const ROUTER_ID: [u8; 12] = [6, 10, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
const ID: RouterId = RouterId([1, 2, 3, 4, 5, 6, 7, 8]);
/// Next Hop 192.0.2.1 (AE 1), which a finite AE 1 Update needs.
const NEXT_HOP_V4: [u8; 8] = [7, 6, 1, 0, 192, 0, 2, 1];

fn net(s: &str) -> Option<ipnet::IpNet> {
    Some(s.parse().unwrap())
}

#[test]
fn header_rules() {
    assert_eq!(
        parse_packet(&[42, 2, 0]).err(),
        Some(ParseError::Truncated { need: 4, have: 3 })
    );
    assert_eq!(
        parse_packet(&[43, 2, 0, 0]).err(),
        Some(ParseError::BadMagic(43))
    );
    assert_eq!(
        parse_packet(&[42, 1, 0, 0]).err(),
        Some(ParseError::BadVersion(1))
    );
    // Body length past the datagram: dropped.
    assert_eq!(
        parse_packet(&[42, 2, 0, 9, 4, 6, 0, 0, 0, 1, 1, 144]).err(),
        Some(ParseError::Truncated { need: 13, have: 12 })
    );
    // An empty body is fine.
    assert_eq!(parse_packet(&[42, 2, 0, 0]).unwrap().messages().count(), 0);
}

#[test]
fn trailer_is_set_apart_and_ignored() {
    // Hello, then a trailer holding a MAC TLV (16) and a Pad1.
    let mut p = packet(&HELLO);
    p.extend_from_slice(&[16, 4, 0xde, 0xad, 0xbe, 0xef, 0]);
    let pkt = parse_packet(&p).unwrap();
    assert_eq!(pkt.trailer(), &[16, 4, 0xde, 0xad, 0xbe, 0xef, 0]);
    let msgs: Vec<_> = pkt.messages().collect();
    assert_eq!(msgs.len(), 1);
    assert!(matches!(msgs[0], Ok(Message::Hello(_))));
}

#[test]
fn pads_are_skipped() {
    let mut body = vec![0, 1, 3, 0, 0, 0];
    body.extend_from_slice(&HELLO);
    body.extend_from_slice(&[0, 0]);
    let msgs = messages(&body);
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].is_ok());
    let p = packet(&body);
    let kinds: Vec<_> = parse_packet(&p)
        .unwrap()
        .decode()
        .map(|d| (d.kind, d.result.is_ok()))
        .collect();
    assert_eq!(kinds.len(), 5);
    assert_eq!(kinds[0], (TlvType::Pad1, true));
    assert_eq!(kinds[1], (TlvType::PadN, true));
}

#[test]
fn unknown_and_unsupported_tlvs_are_skipped() {
    let mut body = vec![200, 3, 1, 2, 3];
    body.extend_from_slice(&[11, 6, 0, 1, 0, 0, 0, 9]); // TS/PC
    body.extend_from_slice(&[17, 6, 0, 0, 0, 3, 0xaa, 0xbb]); // PC
    body.extend_from_slice(&[18, 2, 1, 2]); // Challenge Request
    body.extend_from_slice(&HELLO);
    let msgs = messages(&body);
    assert_eq!(
        msgs[..4],
        [
            Err(ParseError::UnknownTlv(200)),
            Err(ParseError::Unsupported(TlvType::TsPc)),
            Err(ParseError::Unsupported(TlvType::Pc)),
            Err(ParseError::Unsupported(TlvType::ChallengeRequest)),
        ]
    );
    assert!(matches!(msgs[4], Ok(Message::Hello(_))));
    assert!(
        msgs.iter()
            .take(4)
            .all(|m| !m.as_ref().unwrap_err().is_fatal())
    );
}

#[test]
fn short_tlv_is_skipped_but_overrun_ends_the_walk() {
    // A 5-byte Hello value (too short), then a good Hello.
    let mut body = vec![4, 5, 0, 0, 0, 1, 0];
    body.extend_from_slice(&HELLO);
    let msgs = messages(&body);
    assert_eq!(msgs.len(), 2);
    assert!(matches!(msgs[0], Err(ParseError::BadLength { min: 6, .. })));
    assert!(msgs[1].is_ok());
    // A Hello, then a TLV claiming 200 bytes: the walk ends after it.
    let mut body = HELLO.to_vec();
    body.extend_from_slice(&[4, 200, 0, 0]);
    let msgs = messages(&body);
    assert_eq!(msgs.len(), 2);
    assert!(msgs[0].is_ok());
    assert!(
        matches!(&msgs[1], Err(e @ ParseError::TlvOverrun { need: 202, have: 4, .. }) if e.is_fatal())
    );
}

#[test]
fn unknown_ae_skips_one_tlv() {
    let mut body = vec![8, 10, 9, 0, 0, 0, 1, 144, 0, 1, 0xff, 0xff];
    body.extend_from_slice(&HELLO);
    let msgs = messages(&body);
    assert_eq!(
        msgs[0],
        Err(ParseError::UnknownAe {
            tlv: TlvType::Update,
            ae: 9
        })
    );
    assert!(msgs[1].is_ok());
}

#[test]
fn compression_with_default_prefix_per_ae() {
    let mut body = ROUTER_ID.to_vec();
    // AE 2, 0x80, 2001:db8:1::/48: sets the IPv6 default.
    body.extend_from_slice(&[8, 16, 2, 0x80, 48, 0, 1, 144, 0, 5, 0, 96]);
    body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1]);
    // AE 2, /64 omitting 6 bytes: 2001:db8:1:2::/64.
    body.extend_from_slice(&[8, 12, 2, 0, 64, 6, 1, 144, 0, 5, 0, 96, 0, 2]);
    // AE 1, 0x80, 10.1.2.0/24 (after its IPv4 next hop): sets the IPv4
    // default only.
    body.extend_from_slice(&NEXT_HOP_V4);
    body.extend_from_slice(&[8, 13, 1, 0x80, 24, 0, 1, 144, 0, 5, 0, 96, 10, 1, 2]);
    // AE 1, /32 omitting 3 bytes: 10.1.2.7/32.
    body.extend_from_slice(&[8, 11, 1, 0, 32, 3, 1, 144, 0, 5, 0, 96, 7]);
    // AE 4 has its own slot, still empty: omitting is an error.
    body.extend_from_slice(&[8, 11, 4, 0, 32, 3, 1, 144, 0, 5, 0, 96, 7]);
    let msgs = messages(&body);
    assert_eq!(update(&msgs[0]).prefix, net("2001:db8:1::/48"));
    assert_eq!(update(&msgs[1]).prefix, net("2001:db8:1:2::/64"));
    assert_eq!(update(&msgs[2]).prefix, net("10.1.2.0/24"));
    assert_eq!(update(&msgs[3]).prefix, net("10.1.2.7/32"));
    assert_eq!(msgs[4], Err(ParseError::NoDefaultPrefix { ae: 4 }));
    for m in &msgs[..4] {
        assert_eq!(update(m).router_id, Some(ID));
        assert_eq!(update(m).interval, Duration::from_secs(4));
    }
}

#[test]
fn state_is_reset_for_every_packet() {
    let mut first = ROUTER_ID.to_vec();
    first.extend_from_slice(&[8, 16, 2, 0x80, 48, 0, 1, 144, 0, 5, 0, 96]);
    first.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1]);
    assert!(messages(&first)[0].is_ok());
    // Same decoder type, new packet: no router-id, no default prefix.
    let second = [8, 12, 2, 0, 64, 6, 1, 144, 0, 5, 0, 96, 0, 2];
    assert_eq!(
        messages(&second)[0],
        Err(ParseError::NoDefaultPrefix { ae: 2 })
    );
    let third = [
        8, 18, 2, 0, 64, 0, 1, 144, 0, 5, 0, 96, 1, 2, 3, 4, 5, 6, 7, 8,
    ];
    assert_eq!(messages(&third)[0], Err(ParseError::MissingRouterId));
}

#[test]
fn host_bits_are_zeroed() {
    let mut body = ROUTER_ID.to_vec();
    body.extend_from_slice(&NEXT_HOP_V4);
    // 10.1.15.0/20 transmitted with its host bits.
    body.extend_from_slice(&[8, 13, 1, 0, 20, 0, 1, 144, 0, 5, 0, 96, 10, 1, 0x0f]);
    assert_eq!(update(&messages(&body)[0]).prefix, net("10.1.0.0/20"));
}

#[test]
fn router_id_from_prefix_flag() {
    // AE 2 /128 with 0x40: router-id = low 8 bytes, and it sticks.
    let mut body = vec![8, 26, 2, 0xc0, 128, 0, 1, 144, 0, 5, 0, 0];
    body.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 1, 9, 8, 7, 6, 5, 4, 3, 2]);
    body.extend_from_slice(&[8, 12, 2, 0, 64, 6, 1, 144, 0, 5, 0, 96, 0, 1]);
    let msgs = messages(&body);
    let id = Some(RouterId([9, 8, 7, 6, 5, 4, 3, 2]));
    assert_eq!(update(&msgs[0]).router_id, id);
    assert_eq!(
        update(&msgs[0]).prefix,
        net("fd00:0:0:1:908:706:504:302/128")
    );
    assert_eq!(update(&msgs[1]).router_id, id);
    assert_eq!(update(&msgs[1]).prefix, net("fd00:0:0:1::/64"));
    // AE 1 with 0x40 (babeld): 4 zero bytes then the address.
    let mut body = NEXT_HOP_V4.to_vec();
    body.extend_from_slice(&[8, 14, 1, 0x40, 32, 0, 1, 144, 0, 5, 0, 0, 10, 0, 0, 1]);
    assert_eq!(
        update(&messages(&body)[0]).router_id,
        Some(RouterId([0, 0, 0, 0, 10, 0, 0, 1]))
    );
    // 0x40 on a /64 gives an all-zeros id: rejected, router-id cleared.
    let mut body = ROUTER_ID.to_vec();
    body.extend_from_slice(&[
        8, 18, 2, 0x40, 64, 0, 1, 144, 0, 5, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
    ]);
    body.extend_from_slice(&[
        8, 18, 2, 0, 64, 0, 1, 144, 0, 5, 0, 0, 1, 2, 3, 4, 5, 6, 7, 9,
    ]);
    let msgs = messages(&body);
    assert_eq!(msgs[0], Err(ParseError::BadRouterId([0; 8])));
    assert_eq!(msgs[1], Err(ParseError::MissingRouterId));
}

#[test]
fn invalid_router_id_tlv_clears_the_router_id() {
    let mut body = ROUTER_ID.to_vec();
    body.extend_from_slice(&[6, 10, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    body.extend_from_slice(&[
        8, 18, 2, 0, 64, 0, 1, 144, 0, 5, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
    ]);
    // A retraction still goes through, without router-id.
    body.extend_from_slice(&[
        8, 18, 2, 0, 64, 0, 1, 144, 0, 5, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8,
    ]);
    let msgs = messages(&body);
    assert_eq!(msgs[0], Err(ParseError::BadRouterId([0xff; 8])));
    assert_eq!(msgs[1], Err(ParseError::MissingRouterId));
    assert_eq!(update(&msgs[2]).router_id, None);
    assert_eq!(update(&msgs[2]).metric, INFINITY);
}

#[test]
fn wildcard_update() {
    // babeld's boot retraction (flag 0x40 on AE 0 is meaningless).
    let body = [8, 10, 0, 0x40, 0, 0, 0xff, 0xff, 0xa1, 0xaf, 0xff, 0xff];
    let msgs = messages(&body);
    let u = update(&msgs[0]);
    assert_eq!(u.prefix, None);
    assert_eq!(u.metric, INFINITY);
    assert_eq!(u.seqno, 41391);
    assert_eq!(u.router_id, None);
    let finite = [8, 10, 0, 0, 0, 0, 0xff, 0xff, 0xa1, 0xaf, 0, 1];
    assert_eq!(
        messages(&finite)[0],
        Err(ParseError::BadWildcardUpdate { plen: 0, metric: 1 })
    );
}

#[test]
fn mandatory_sub_tlv_ignores_the_tlv_but_keeps_its_state() {
    let mut body = vec![6, 12, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x80, 0];
    // Update with 0x80 and a mandatory sub-TLV (source prefix, 128).
    body.extend_from_slice(&[8, 21, 2, 0x80, 64, 0, 1, 144, 0, 5, 0, 96]);
    body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 128, 1, 0]);
    // Uses both the router-id and the default prefix set above.
    body.extend_from_slice(&[8, 11, 2, 0, 64, 7, 1, 144, 0, 5, 0, 96, 3]);
    // Next Hop with a mandatory sub-TLV still sets the next hop.
    body.extend_from_slice(&[
        7, 20, 2, 0, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    ]);
    body.extend_from_slice(&[0x99, 0]);
    body.extend_from_slice(&[8, 11, 2, 0, 64, 7, 1, 144, 0, 5, 0, 96, 4]);
    let p = packet(&body);
    let decoded: Vec<_> = parse_packet(&p).unwrap().decode().collect();
    assert_eq!(
        decoded[0].result,
        Err(ParseError::UnknownMandatorySubTlv {
            tlv: TlvType::RouterId,
            subtype: 0x80
        })
    );
    assert_eq!(
        decoded[1].result,
        Err(ParseError::UnknownMandatorySubTlv {
            tlv: TlvType::Update,
            subtype: 128
        })
    );
    let Ok(Element::Message(Message::Update(u))) = &decoded[2].result else {
        panic!("{:?}", decoded[2]);
    };
    assert_eq!(u.prefix, net("2001:db8:1:3::/64"));
    assert_eq!(u.router_id, Some(ID));
    assert_eq!(u.next_hop, None);
    assert!(matches!(
        decoded[3].result,
        Err(ParseError::UnknownMandatorySubTlv {
            tlv: TlvType::NextHop,
            ..
        })
    ));
    let Ok(Element::Message(Message::Update(u))) = &decoded[4].result else {
        panic!("{:?}", decoded[4]);
    };
    assert_eq!(u.next_hop, Some("fd00::1".parse().unwrap()));
}

#[test]
fn failed_default_prefix_update_clears_defaults() {
    let mut body = ROUTER_ID.to_vec();
    body.extend_from_slice(&[8, 16, 2, 0x80, 48, 0, 1, 144, 0, 5, 0, 96]);
    body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1]);
    // 0x80 Update with plen 129: fails, and clears the defaults.
    body.extend_from_slice(&[8, 10, 2, 0x80, 129, 0, 1, 144, 0, 5, 0, 96]);
    body.extend_from_slice(&[8, 12, 2, 0, 64, 6, 1, 144, 0, 5, 0, 96, 0, 2]);
    let msgs = messages(&body);
    assert!(msgs[0].is_ok());
    assert!(matches!(
        msgs[1],
        Err(ParseError::BadPlen { plen: 129, .. })
    ));
    assert_eq!(msgs[2], Err(ParseError::NoDefaultPrefix { ae: 2 }));
}

#[test]
fn next_hops_per_family() {
    let mut body = ROUTER_ID.to_vec();
    body.extend_from_slice(&[7, 6, 1, 0, 192, 168, 4, 25]);
    body.extend_from_slice(&[7, 10, 3, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    body.extend_from_slice(&[8, 14, 1, 0x80, 32, 0, 1, 144, 0, 5, 0, 96, 10, 0, 0, 1]);
    body.extend_from_slice(&[8, 14, 4, 0x80, 32, 0, 1, 144, 0, 5, 0, 96, 10, 0, 0, 2]);
    body.extend_from_slice(&[8, 12, 2, 0x80, 16, 0, 1, 144, 0, 5, 0, 96, 0xfd, 0]);
    let msgs = messages(&body);
    let v4: IpAddr = "192.168.4.25".parse().unwrap();
    let ll: IpAddr = "fe80::7".parse().unwrap();
    assert_eq!(update(&msgs[0]).next_hop, Some(v4));
    assert_eq!(update(&msgs[1]).next_hop, Some(ll));
    assert_eq!(update(&msgs[1]).prefix, net("10.0.0.2/32"));
    assert_eq!(update(&msgs[2]).next_hop, Some(ll));
}

#[test]
fn ipv4_update_needs_an_ipv4_next_hop() {
    let mut body = ROUTER_ID.to_vec();
    // Finite AE 1 with no IPv4 next hop: refused (babeld does too).
    body.extend_from_slice(&[8, 14, 1, 0, 32, 0, 1, 144, 0, 5, 0, 96, 10, 0, 0, 1]);
    // Its retraction needs no next hop.
    body.extend_from_slice(&[8, 14, 1, 0, 32, 0, 1, 144, 0, 5, 255, 255, 10, 0, 0, 1]);
    // AE 4 (RFC 9229): the sender is the next hop.
    body.extend_from_slice(&[8, 14, 4, 0, 32, 0, 1, 144, 0, 5, 0, 96, 10, 0, 0, 2]);
    let msgs = messages(&body);
    assert_eq!(msgs[0], Err(ParseError::MissingIpv4NextHop));
    assert_eq!(update(&msgs[1]).metric, INFINITY);
    assert_eq!(update(&msgs[1]).next_hop, None);
    assert_eq!(update(&msgs[2]).prefix, net("10.0.0.2/32"));
    assert_eq!(update(&msgs[2]).next_hop, None);
}

#[test]
fn zero_intervals() {
    // Hello interval 0 = unscheduled: fine.
    let msgs = messages(&[4, 6, 0, 0, 0, 1, 0, 0]);
    assert!(matches!(&msgs[0], Ok(Message::Hello(h)) if h.interval.is_zero()));
    let mut body = ROUTER_ID.to_vec();
    body.extend_from_slice(&[8, 12, 2, 0x80, 16, 0, 0, 0, 0, 5, 0, 96, 0xfd, 0]);
    assert_eq!(
        messages(&body)[0],
        Err(ParseError::ZeroInterval(TlvType::Update))
    );
}
