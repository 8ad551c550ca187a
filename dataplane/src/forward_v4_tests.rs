//! Tests of the IPv4 forwarding decision: every verdict, every ICMPv4
//! error (parsed back and checked), TTL and its checksum, Don't Fragment,
//! malformed input, and that IPv6 and IPv4 share one FIB and one limiter.

use std::net::Ipv4Addr;

use ipnet::IpNet;

use super::*;
use crate::icmp::MAX_ERROR_LEN_V4;
use crate::packet::icmpv4::{Icmpv4Packet, Icmpv4Repr};
use crate::packet::ipv4::{Ipv4Packet, Ipv4Repr};

const ME: &str = "10.1.0.1";

fn fib() -> Fib {
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    Fib::from_routes([
        (net("10.1.0.0/24"), Route::Local),
        (net("10.2.0.0/24"), Route::Via(NextHopId(2))),
        (net("10.3.0.0/24"), Route::Via(NextHopId(3))),
        (net("10.0.0.0/8"), Route::Unreachable),
        (net("fd00:2::/48"), Route::Via(NextHopId(5))),
    ])
}

fn config() -> ForwardConfig {
    ForwardConfig {
        mtu: 1400,
        icmp_source_v4: Some(ME.parse().unwrap()),
        ..ForwardConfig::new("fd00:1::1".parse().unwrap())
    }
}

/// An IPv4 packet from `src` to `dst` with this TTL, DF and protocol,
/// carrying `payload`.
fn packet(src: &str, dst: &str, ttl: u8, df: bool, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: src.parse().unwrap(),
        dst_addr: dst.parse().unwrap(),
        protocol,
        payload_len: payload.len() as u16,
        ttl,
        dscp_ecn: 0,
        ident: 0x4242,
        dont_frag: df,
    };
    let mut buf = vec![0u8; ipv4::HEADER_LEN + payload.len()];
    repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
    buf[ipv4::HEADER_LEN..].copy_from_slice(payload);
    buf
}

fn udp(src: &str, dst: &str, ttl: u8, len: usize) -> Vec<u8> {
    packet(src, dst, ttl, true, 17, &vec![0x5a; len])
}

fn run(ingress: Ingress, pkt: &[u8]) -> Verdict {
    verdict(&mut pkt.to_vec(), ingress, &fib(), &config())
}

/// The output bytes of a packet, if any, with where they go (`None`: the
/// TUN).
type Out = Option<(Option<NextHopId>, Vec<u8>)>;

/// Runs a fresh forwarder on a copy of `packet`: its output and the
/// counters.
fn handle(ingress: Ingress, packet: &[u8]) -> (Out, ForwardStats) {
    let mut fwd = Forwarder::new(config());
    let mut pkt = packet.to_vec();
    let mut icmp = [0u8; MAX_ERROR_LEN];
    let out = match fwd.handle_packet(&fib(), ingress, &mut pkt, &mut icmp, Instant::now()) {
        Action::Tun(b) => Some((None, b.to_vec())),
        Action::NextHop(id, b) => Some((Some(id), b.to_vec())),
        Action::Drop => None,
    };
    (out, fwd.stats().clone())
}

/// Checks `reply` is a valid ICMPv4 error from `ME` to `to` of this type,
/// code and word, quoting the start of `invoking`.
fn assert_error(reply: &[u8], to: &str, msg_type: u8, code: u8, word: u32, invoking: &[u8]) {
    let ip = Ipv4Packet::new_checked(reply).unwrap();
    let repr = Ipv4Repr::parse(&ip).unwrap();
    assert_eq!(ip.total_len(), reply.len());
    assert_eq!(repr.src_addr, ME.parse::<Ipv4Addr>().unwrap());
    assert_eq!(repr.dst_addr, to.parse::<Ipv4Addr>().unwrap());
    assert_eq!(repr.protocol, 1);
    assert_eq!(repr.ttl, 64);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    Icmpv4Repr::parse(&icmp).unwrap();
    assert_eq!(
        (icmp.msg_type(), icmp.code(), icmp.word()),
        (msg_type, code, word)
    );
    assert_eq!(icmp.data(), &invoking[..invoking.len().min(576 - 28)]);
    assert!(reply.len() <= MAX_ERROR_LEN_V4);
}

#[test]
fn forwards_from_tun_without_touching_ttl() {
    let mut pkt = udp(ME, "10.2.0.5", 1, 100);
    let before = pkt.clone();
    assert_eq!(
        verdict(&mut pkt, Ingress::Tun, &fib(), &config()),
        Verdict::Forward(NextHopId(2))
    );
    assert_eq!(pkt, before);
}

#[test]
fn transit_decrements_ttl_and_fixes_the_checksum() {
    let mut pkt = udp("10.3.0.1", "10.2.0.5", 64, 100);
    let v = verdict(&mut pkt, Ingress::Tunnel(NextHopId(3)), &fib(), &config());
    assert_eq!(v, Verdict::Forward(NextHopId(2)));
    // Exactly what a fresh header with TTL 63 would be.
    assert_eq!(pkt, udp("10.3.0.1", "10.2.0.5", 63, 100));
    assert!(Ipv4Packet::new_checked(&pkt[..]).unwrap().verify_checksum());
}

#[test]
fn delivers_local_from_tunnel_whatever_the_ttl() {
    for ttl in [0, 1, 64] {
        let mut pkt = udp("10.2.0.1", "10.1.0.7", ttl, 10);
        let v = verdict(&mut pkt, Ingress::Tunnel(NextHopId(2)), &fib(), &config());
        assert_eq!(v, Verdict::Deliver);
        assert_eq!(pkt[8], ttl, "delivery leaves TTL to the kernel");
    }
}

#[test]
fn ttl_expiry_answers_time_exceeded_through_the_source_route() {
    for ttl in [0u8, 1] {
        let invoking = udp("10.3.0.1", "10.2.0.5", ttl, 100);
        assert_eq!(
            run(Ingress::Tunnel(NextHopId(3)), &invoking),
            Verdict::Icmp(IcmpError::HopLimitExceeded)
        );
        let (out, stats) = handle(Ingress::Tunnel(NextHopId(3)), &invoking);
        let Some((Some(NextHopId(3)), reply)) = out else {
            panic!("error not routed back to nh3: {out:?}");
        };
        assert_error(&reply, "10.3.0.1", 11, 0, 0, &invoking);
        assert_eq!(stats.dropped_hop_limit, 1);
        assert_eq!((stats.icmp_sent, stats.ipv4), (1, 1));
    }
}

#[test]
fn unreachable_codes() {
    // No route: net unreachable; reject route and own subnet from the TUN:
    // host unreachable.
    for (dst, code) in [("192.0.2.1", 0), ("10.9.0.1", 1), ("10.1.0.99", 1)] {
        let invoking = udp(ME, dst, 64, 100);
        let (out, _) = handle(Ingress::Tun, &invoking);
        let Some((None, reply)) = out else {
            panic!("{dst}: expected an error to the TUN: {out:?}");
        };
        assert_error(&reply, ME, 3, code, 0, &invoking);
    }
}

#[test]
fn dont_fragment_above_the_mtu_answers_fragmentation_needed() {
    let invoking = udp(ME, "10.2.0.5", 64, 1400 - 20 + 1);
    let (out, stats) = handle(Ingress::Tun, &invoking);
    let Some((None, reply)) = out else {
        panic!("{out:?}");
    };
    // RFC 1191: the next-hop MTU in the low half of the word.
    assert_error(&reply, ME, 3, 4, 1400, &invoking);
    assert_eq!(reply.len(), 576, "quote capped at 576 bytes");
    assert_eq!(stats.dropped_too_big, 1);
    // Exactly the MTU passes; without DF a bigger one is carried whole.
    let ok = udp(ME, "10.2.0.5", 64, 1400 - 20);
    assert_eq!(run(Ingress::Tun, &ok), Verdict::Forward(NextHopId(2)));
    let big = packet(ME, "10.2.0.5", 64, false, 17, &[0; 3000]);
    assert_eq!(run(Ingress::Tun, &big), Verdict::Forward(NextHopId(2)));
}

#[test]
fn no_error_about_an_icmp_error_a_later_fragment_or_broadcast() {
    // A Destination Unreachable travelling to an unroutable address.
    let err = packet(ME, "192.0.2.1", 64, false, 1, &[3, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(run(Ingress::Tun, &err), Verdict::Drop(DropReason::NoRoute));
    // A truncated ICMP header cannot be told apart: no error either.
    let err = packet(ME, "192.0.2.1", 64, false, 1, &[]);
    assert_eq!(run(Ingress::Tun, &err), Verdict::Drop(DropReason::NoRoute));
    // An echo request is answered.
    let echo = packet(ME, "192.0.2.1", 64, false, 1, &[8, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(run(Ingress::Tun, &echo), Verdict::Icmp(IcmpError::NoRoute));
    // A later fragment is not.
    let mut frag = udp(ME, "192.0.2.1", 64, 8);
    let mut view = Ipv4Packet::new_unchecked(&mut frag[..]);
    view.set_flags_offset(false, false, 1480);
    view.fill_checksum();
    assert_eq!(run(Ingress::Tun, &frag), Verdict::Drop(DropReason::NoRoute));
}

#[test]
fn without_an_ipv4_address_errors_are_dropped() {
    let cfg = ForwardConfig {
        icmp_source_v4: None,
        ..config()
    };
    let mut fwd = Forwarder::new(cfg);
    let mut pkt = udp("10.2.0.9", "192.0.2.1", 64, 8);
    let mut icmp = [0u8; MAX_ERROR_LEN];
    let action = fwd.handle_packet(&fib(), Ingress::Tun, &mut pkt, &mut icmp, Instant::now());
    assert_eq!(action, Action::Drop);
    assert_eq!(fwd.stats().dropped_no_route, 1);
    assert_eq!(fwd.stats().icmp_sent, 0);
}

#[test]
fn bad_addresses_are_dropped_without_error() {
    let cases = [
        ("0.0.0.0", "10.2.0.5", DropReason::BadSource),
        ("127.0.0.1", "10.2.0.5", DropReason::BadSource),
        ("224.0.0.5", "10.2.0.5", DropReason::BadSource),
        ("255.255.255.255", "10.2.0.5", DropReason::BadSource),
        (ME, "224.0.0.5", DropReason::Multicast),
        (ME, "255.255.255.255", DropReason::Multicast),
        ("169.254.0.1", "10.2.0.5", DropReason::Scope),
        (ME, "169.254.0.1", DropReason::Scope),
        (ME, "127.0.0.1", DropReason::Scope),
    ];
    for (src, dst, reason) in cases {
        for ingress in [Ingress::Tun, Ingress::Tunnel(NextHopId(2))] {
            assert_eq!(
                run(ingress, &udp(src, dst, 64, 8)),
                Verdict::Drop(reason),
                "{src} -> {dst}"
            );
        }
    }
}

#[test]
fn malformed_packets_are_dropped_and_counted() {
    let good = udp(ME, "10.2.0.5", 64, 20);
    let mut bad_sum = good.clone();
    bad_sum[10] ^= 0xff;
    let mut long = good.clone();
    long[3] += 1; // total length one past the buffer
    let mut ihl = good.clone();
    ihl[0] = 0x44;
    let cases: [&[u8]; 5] = [&[0x45], &good[..19], &bad_sum, &long, &ihl];
    let mut fwd = Forwarder::new(config());
    for bytes in cases {
        let mut pkt = bytes.to_vec();
        let mut icmp = [0u8; MAX_ERROR_LEN];
        let v = verdict(
            &mut pkt.clone(),
            Ingress::Tunnel(NextHopId(3)),
            &fib(),
            &config(),
        );
        assert!(
            matches!(v, Verdict::Drop(DropReason::Malformed(_))),
            "{v:?}"
        );
        let action = fwd.handle_packet(&fib(), Ingress::Tun, &mut pkt, &mut icmp, Instant::now());
        assert_eq!(action, Action::Drop);
    }
    assert_eq!(fwd.stats().dropped_malformed, 5);
    assert_eq!(fwd.stats().ipv4, 5);
    assert_eq!(fwd.stats().icmp_sent, 0);
}

#[test]
fn trailing_bytes_are_trimmed() {
    let mut pkt = udp(ME, "10.2.0.5", 64, 20);
    let expected = pkt.clone();
    pkt.extend([0xee; 7]);
    let mut fwd = Forwarder::new(config());
    let mut icmp = [0u8; MAX_ERROR_LEN];
    let action = fwd.handle_packet(&fib(), Ingress::Tun, &mut pkt, &mut icmp, Instant::now());
    assert_eq!(action, Action::NextHop(NextHopId(2), &expected[..]));
}

#[test]
fn both_families_share_the_fib_and_the_rate_limit() {
    let cfg = ForwardConfig {
        icmp_burst: 2,
        icmp_rate: 1,
        ..config()
    };
    let mut fwd = Forwarder::new(cfg);
    let now = Instant::now();
    let mut icmp = [0u8; MAX_ERROR_LEN];
    let mut v6 = crate::packet::test_packet("fd00:1::1", "fd00:2::5", 64, 17, &[0; 8]);
    let action = fwd.handle_packet(&fib(), Ingress::Tun, &mut v6, &mut icmp, now);
    assert!(matches!(action, Action::NextHop(NextHopId(5), _)));
    let mut outcomes = Vec::new();
    for dst in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        let mut pkt = udp(ME, dst, 64, 8);
        let action = fwd.handle_packet(&fib(), Ingress::Tun, &mut pkt, &mut icmp, now);
        outcomes.push(matches!(action, Action::Tun(_)));
    }
    let mut v6 = crate::packet::test_packet("fd00:1::1", "2001:db8::1", 64, 17, &[0; 8]);
    let action = fwd.handle_packet(&fib(), Ingress::Tun, &mut v6, &mut icmp, now);
    assert_eq!(outcomes, [true, true, false]);
    assert_eq!(action, Action::Drop, "the IPv4 errors used the burst");
    assert_eq!(fwd.stats().ipv4, 3);
    assert_eq!(fwd.stats().icmp_rate_limited, 2);
}
