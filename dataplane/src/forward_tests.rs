//! Tests of the forwarding decision: every verdict, every ICMPv6 error
//! (parsed back and checked), hop limits, malformed input, rate limiting.

use std::time::Duration;

use ipnet::Ipv6Net;

use super::*;
use crate::packet::icmpv6::{Icmpv6Packet, Icmpv6Repr};
use crate::packet::ipv6::{Ipv6Packet, Ipv6Repr};

const ME: &str = "fd00:1::1";

fn fib() -> Fib {
    let net = |s: &str| s.parse::<Ipv6Net>().unwrap();
    Fib::from_routes([
        (net("fd00:1::/48"), Route::Local),
        (net("fd00:2::/48"), Route::Via(NextHopId(2))),
        (net("fd00:3::/48"), Route::Via(NextHopId(3))),
        (net("fd00:9::/32"), Route::Unreachable),
    ])
}

fn config() -> ForwardConfig {
    ForwardConfig {
        mtu: 1400,
        ..ForwardConfig::new(ME.parse().unwrap())
    }
}

use crate::packet::test_packet as packet;

fn udp(src: &str, dst: &str, hop_limit: u8, len: usize) -> Vec<u8> {
    packet(src, dst, hop_limit, 17, &vec![0x5a; len])
}

fn run(ingress: Ingress, pkt: &[u8]) -> Verdict {
    verdict(&mut pkt.to_vec(), ingress, &fib(), &config())
}

/// Checks `reply` is a valid ICMPv6 error from `ME` to `to` of this type,
/// code and word, quoting `invoking`.
fn assert_error(reply: &[u8], to: &str, msg_type: u8, code: u8, word: u32, invoking: &[u8]) {
    let ip = Ipv6Packet::new_checked(reply).unwrap();
    let repr = Ipv6Repr::parse(&ip).unwrap();
    assert_eq!(ip.total_len(), reply.len());
    assert_eq!(repr.src_addr, ME.parse::<Ipv6Addr>().unwrap());
    assert_eq!(repr.dst_addr, to.parse::<Ipv6Addr>().unwrap());
    assert_eq!(repr.next_header, 58);
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(&repr.src_addr, &repr.dst_addr));
    Icmpv6Repr::parse(&repr.src_addr, &repr.dst_addr, &icmp).unwrap();
    assert_eq!(
        (icmp.msg_type(), icmp.code(), icmp.word()),
        (msg_type, code, word)
    );
    let quoted = icmp.data();
    assert_eq!(quoted, &invoking[..invoking.len().min(1280 - 48)]);
    assert!(reply.len() <= 1280);
}

#[test]
fn forwards_from_tun_without_touching_hop_limit() {
    let mut pkt = udp(ME, "fd00:2::5", 1, 100);
    let before = pkt.clone();
    assert_eq!(
        verdict(&mut pkt, Ingress::Tun, &fib(), &config()),
        Verdict::Forward(NextHopId(2))
    );
    assert_eq!(pkt, before);
}

#[test]
fn transit_decrements_hop_limit() {
    let mut pkt = udp("fd00:3::1", "fd00:2::5", 64, 100);
    let v = verdict(&mut pkt, Ingress::Tunnel(NextHopId(3)), &fib(), &config());
    assert_eq!(v, Verdict::Forward(NextHopId(2)));
    assert_eq!(Ipv6Packet::new_checked(&pkt[..]).unwrap().hop_limit(), 63);
    // Only the hop limit byte changed.
    let mut expected = udp("fd00:3::1", "fd00:2::5", 63, 100);
    expected[7] = 63;
    assert_eq!(pkt, expected);
}

#[test]
fn delivers_local_from_tunnel_even_with_hop_limit_zero_or_one() {
    for hl in [0, 1, 64] {
        let mut pkt = udp("fd00:2::1", "fd00:1::7", hl, 10);
        let v = verdict(&mut pkt, Ingress::Tunnel(NextHopId(2)), &fib(), &config());
        assert_eq!(v, Verdict::Deliver);
        assert_eq!(pkt[7], hl, "delivery leaves hop limit to the kernel");
    }
}

#[test]
fn hop_limit_expiry_answers_time_exceeded_through_the_source_route() {
    for hl in [0u8, 1] {
        let invoking = udp("fd00:3::1", "fd00:2::5", hl, 100);
        assert_eq!(
            run(Ingress::Tunnel(NextHopId(3)), &invoking),
            Verdict::Icmp(IcmpError::HopLimitExceeded)
        );
        let (out, stats) = handle(Ingress::Tunnel(NextHopId(3)), &invoking);
        let Out::NextHop(NextHopId(3), reply) = out else {
            panic!("error not routed back to nh3: {out:?}");
        };
        assert_error(&reply, "fd00:3::1", 3, 0, 0, &invoking);
        assert_eq!(stats.dropped_hop_limit, 1);
        assert_eq!(stats.icmp_sent, 1);
    }
    // Two hops left: forwarded with one.
    let mut pkt = udp("fd00:3::1", "fd00:2::5", 2, 100);
    assert_eq!(
        verdict(&mut pkt, Ingress::Tunnel(NextHopId(3)), &fib(), &config()),
        Verdict::Forward(NextHopId(2))
    );
    assert_eq!(pkt[7], 1);
}

/// An [`Action`] with owned bytes.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    Tun(Vec<u8>),
    NextHop(NextHopId, Vec<u8>),
    Drop,
}

/// Runs a fresh forwarder on a copy of `packet`; returns the action and
/// the counters.
fn handle(ingress: Ingress, packet: &[u8]) -> (Out, ForwardStats) {
    let mut fwd = Forwarder::new(config());
    let mut pkt = packet.to_vec();
    let mut icmp = [0u8; MAX_ERROR_LEN];
    let out = match fwd.handle_packet(&fib(), ingress, &mut pkt, &mut icmp, Instant::now()) {
        Action::Tun(b) => Out::Tun(b.to_vec()),
        Action::NextHop(id, b) => Out::NextHop(id, b.to_vec()),
        Action::Drop => Out::Drop,
    };
    (out, fwd.stats().clone())
}

fn from_tun(invoking: &[u8]) -> (Vec<u8>, ForwardStats) {
    let (out, stats) = handle(Ingress::Tun, invoking);
    let Out::Tun(reply) = out else {
        panic!("expected an error to the TUN: {out:?}");
    };
    (reply, stats)
}

#[test]
fn no_route_answers_destination_unreachable_code_0() {
    let invoking = udp(ME, "2001:db8::1", 64, 100);
    let (reply, stats) = from_tun(&invoking);
    assert_error(&reply, ME, 1, 0, 0, &invoking);
    assert_eq!(stats.dropped_no_route, 1);
}

#[test]
fn reject_route_answers_code_6() {
    let invoking = udp(ME, "fd00:9:1::1", 64, 100);
    let (reply, _) = from_tun(&invoking);
    assert_error(&reply, ME, 1, 6, 0, &invoking);
}

#[test]
fn own_prefix_from_tun_answers_address_unreachable() {
    let invoking = udp(ME, "fd00:1::99", 64, 100);
    let (reply, _) = from_tun(&invoking);
    assert_error(&reply, ME, 1, 3, 0, &invoking);
}

#[test]
fn packet_too_big_from_tun_and_in_transit() {
    let invoking = udp(ME, "fd00:2::5", 64, 1400 - 40 + 1);
    let (reply, stats) = from_tun(&invoking);
    assert_error(&reply, ME, 2, 0, 1400, &invoking);
    assert_eq!(reply.len(), 1280, "quote capped at the minimum MTU");
    assert_eq!(stats.dropped_too_big, 1);
    // Exactly the MTU passes.
    let ok = udp(ME, "fd00:2::5", 64, 1400 - 40);
    assert_eq!(run(Ingress::Tun, &ok), Verdict::Forward(NextHopId(2)));
    // In transit: PTB goes back through the source's tunnel.
    let invoking = udp("fd00:3::1", "fd00:2::5", 64, 1500);
    assert_eq!(
        run(Ingress::Tunnel(NextHopId(3)), &invoking),
        Verdict::Icmp(IcmpError::PacketTooBig { mtu: 1400 })
    );
}

#[test]
fn no_error_about_an_icmpv6_error() {
    // A Destination Unreachable travelling to an unroutable address.
    let err = packet(ME, "2001:db8::1", 64, 58, &[1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(run(Ingress::Tun, &err), Verdict::Drop(DropReason::NoRoute));
    let err = packet("fd00:3::1", "fd00:2::5", 1, 58, &[3, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        run(Ingress::Tunnel(NextHopId(3)), &err),
        Verdict::Drop(DropReason::HopLimit)
    );
    // An echo request is answered.
    let echo = packet(ME, "2001:db8::1", 64, 58, &[128, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(run(Ingress::Tun, &echo), Verdict::Icmp(IcmpError::NoRoute));
}

#[test]
fn bad_addresses_are_dropped_without_error() {
    let cases = [
        ("ff02::1", "fd00:2::5", DropReason::BadSource),
        ("::", "fd00:2::5", DropReason::BadSource),
        ("::1", "fd00:2::5", DropReason::BadSource),
        (ME, "ff02::1:ff00:1", DropReason::Multicast),
        (ME, "ff0e::1", DropReason::Multicast),
        ("fe80::1", "fd00:2::5", DropReason::Scope),
        (ME, "fe80::2", DropReason::Scope),
        (ME, "::1", DropReason::Scope),
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
    let good = udp(ME, "fd00:2::5", 64, 20);
    let mut v4 = good.clone();
    v4[0] = 0x45;
    let mut long = good.clone();
    long[5] += 1; // payload length one past the buffer
    let cases: [&[u8]; 5] = [&[], &[0x60], &good[..39], &v4, &long];
    let mut fwd = Forwarder::new(config());
    for bytes in cases {
        let mut pkt = bytes.to_vec();
        let mut icmp = [0u8; MAX_ERROR_LEN];
        let v = verdict(&mut pkt.clone(), Ingress::Tun, &fib(), &config());
        assert!(
            matches!(v, Verdict::Drop(DropReason::Malformed(_))),
            "{v:?}"
        );
        let action = fwd.handle_packet(&fib(), Ingress::Tun, &mut pkt, &mut icmp, Instant::now());
        assert_eq!(action, Action::Drop);
    }
    assert_eq!(fwd.stats().dropped_malformed, 5);
    assert_eq!(fwd.stats().icmp_sent, 0);
}

#[test]
fn trailing_bytes_are_trimmed() {
    let mut pkt = udp(ME, "fd00:2::5", 64, 20);
    let expected = pkt.clone();
    pkt.extend([0xee; 7]);
    let mut fwd = Forwarder::new(config());
    let mut icmp = [0u8; MAX_ERROR_LEN];
    let action = fwd.handle_packet(&fib(), Ingress::Tun, &mut pkt, &mut icmp, Instant::now());
    assert_eq!(action, Action::NextHop(NextHopId(2), &expected[..]));
}

#[test]
fn errors_are_rate_limited() {
    let cfg = ForwardConfig {
        icmp_rate: 10,
        icmp_burst: 3,
        ..config()
    };
    let mut fwd = Forwarder::new(cfg);
    let t0 = Instant::now();
    let sent = |fwd: &mut Forwarder, at: Duration| {
        let mut pkt = udp(ME, "2001:db8::1", 64, 8);
        let mut icmp = [0u8; MAX_ERROR_LEN];
        matches!(
            fwd.handle_packet(&fib(), Ingress::Tun, &mut pkt, &mut icmp, t0 + at),
            Action::Tun(_)
        )
    };
    let burst: Vec<bool> = (0..5).map(|_| sent(&mut fwd, Duration::ZERO)).collect();
    assert_eq!(burst, [true, true, true, false, false]);
    assert!(!sent(&mut fwd, Duration::from_millis(50)));
    assert!(sent(&mut fwd, Duration::from_millis(100)));
    assert_eq!(fwd.stats().icmp_sent, 4);
    assert_eq!(fwd.stats().icmp_rate_limited, 3);
    assert_eq!(fwd.stats().dropped_no_route, 7);
}

#[test]
fn undeliverable_error_is_counted() {
    // From a tunnel, source without a route: the error cannot go anywhere.
    let pkt = udp("2001:db8::7", "fd00:2::5", 1, 8);
    let (out, stats) = handle(Ingress::Tunnel(NextHopId(3)), &pkt);
    assert_eq!(out, Out::Drop);
    assert_eq!(stats.icmp_undeliverable, 1);
}

#[test]
fn error_for_local_source_from_tunnel_is_delivered() {
    // Our own kernel's packet came back with an expired hop limit (a loop):
    // the Time Exceeded goes to the TUN.
    let invoking = udp("fd00:1::5", "fd00:2::5", 1, 8);
    let (out, _) = handle(Ingress::Tunnel(NextHopId(3)), &invoking);
    let Out::Tun(reply) = out else {
        panic!("{out:?}");
    };
    assert_error(&reply, "fd00:1::5", 3, 0, 0, &invoking);
}

#[test]
fn stats_merge_adds() {
    let mut a = ForwardStats {
        forwarded: 2,
        dropped_scope: 1,
        ..Default::default()
    };
    let b = ForwardStats {
        forwarded: 3,
        icmp_sent: 4,
        ..Default::default()
    };
    a.merge(&b);
    assert_eq!(
        a,
        ForwardStats {
            forwarded: 5,
            dropped_scope: 1,
            icmp_sent: 4,
            ..Default::default()
        }
    );
}
