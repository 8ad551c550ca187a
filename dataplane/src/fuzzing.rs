//! Entry points of the fuzz targets (`fuzz/fuzz_targets/dataplane_*.rs`),
//! also replayed over the checked-in corpus by a stable `cargo test`
//! (`dataplane/tests/fuzz_corpus.rs`). Each one feeds untrusted bytes to a
//! parser or state machine and asserts the invariants that must hold for
//! any input; a panic is a bug.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::fib::{Fib, Route};
use crate::forward::{Action, ForwardConfig, Forwarder, Ingress};
use crate::fragment::{Reassembler, ReassemblyConfig};
use crate::frame::{self, Frame};
use crate::icmp::{MAX_ERROR_LEN, MAX_ERROR_LEN_V4};
use crate::nexthop::NextHopId;
use crate::packet::icmpv4::{Icmpv4Packet, Icmpv4Repr};
use crate::packet::icmpv6::{Icmpv6Packet, Icmpv6Repr};
use crate::packet::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::packet::ipv6::{self, Ipv6Packet, Ipv6Repr};
use crate::packet::upper_layer;

fn fib() -> Fib {
    let net = |s: &str| s.parse::<IpNet>().expect("static prefix");
    Fib::from_routes([
        (net("fd00:1::/48"), Route::Local),
        (net("fd00:2::/48"), Route::Via(NextHopId(2))),
        (net("fd00::/16"), Route::Unreachable),
        (net("2000::/3"), Route::Via(NextHopId(3))),
        (net("10.1.0.0/24"), Route::Local),
        (net("10.2.0.0/24"), Route::Via(NextHopId(2))),
        (net("10.0.0.0/8"), Route::Unreachable),
        (net("0.0.0.0/1"), Route::Via(NextHopId(3))),
    ])
}

/// Checks that `bytes` (an action's output) is a valid IPv6 or IPv4
/// packet of the family of the input and, if it is an ICMP error of ours,
/// that it parses with good checksums and respects the size cap.
fn check_output(bytes: &[u8], v4: bool, ours: bool) {
    if v4 {
        let ip = Ipv4Packet::new_checked(bytes).expect("output is valid IPv4");
        assert_eq!(ip.total_len(), bytes.len(), "output trimmed to its length");
        assert!(ip.verify_checksum(), "forwarding keeps the header checksum");
        if ours {
            assert!(bytes.len() <= MAX_ERROR_LEN_V4);
            Ipv4Repr::parse(&ip).expect("our header parses");
            let icmp = Icmpv4Packet::new_checked(ip.payload()).expect("ICMPv4 header");
            Icmpv4Repr::parse(&icmp).expect("our ICMPv4 parses");
        }
        return;
    }
    let ip = Ipv6Packet::new_checked(bytes).expect("output is valid IPv6");
    assert_eq!(ip.total_len(), bytes.len(), "output trimmed to its length");
    if ours {
        assert!(bytes.len() <= MAX_ERROR_LEN);
        let repr = Ipv6Repr::parse(&ip).expect("our header parses");
        let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("ICMPv6 header");
        Icmpv6Repr::parse(&repr.src_addr, &repr.dst_addr, &icmp).expect("our ICMPv6 parses");
    }
}

/// Views and reprs of IPv6 and ICMPv6: parse, emit, parse again.
fn roundtrip_v6(packet: &[u8]) {
    let Ok(ip) = Ipv6Packet::new_checked(packet) else {
        return;
    };
    let repr = Ipv6Repr::parse(&ip).expect("checked packet parses");
    let mut buf = [0u8; ipv6::HEADER_LEN];
    repr.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
    assert_eq!(buf[..], packet[..ipv6::HEADER_LEN]);
    let _ = upper_layer(&ip);
    if let Ok(icmp) = Icmpv6Packet::new_checked(ip.payload())
        && let Ok(r) = Icmpv6Repr::parse(&repr.src_addr, &repr.dst_addr, &icmp)
    {
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(
            &repr.src_addr,
            &repr.dst_addr,
            &mut Icmpv6Packet::new_unchecked(&mut out[..]),
        );
        let again = Icmpv6Packet::new_checked(&out[..]).expect("emitted header");
        let reparsed = Icmpv6Repr::parse(&repr.src_addr, &repr.dst_addr, &again);
        assert_eq!(reparsed, Ok(r));
    }
}

/// Views and reprs of IPv4 and ICMPv4: parse, emit, parse again.
fn roundtrip_v4(packet: &[u8]) {
    let Ok(ip) = Ipv4Packet::new_checked(packet) else {
        return;
    };
    let _ = (ip.dscp_ecn(), ip.ident(), ip.more_frags(), ip.frag_offset());
    if let Ok(repr) = Ipv4Repr::parse(&ip) {
        let mut buf = [0u8; ipv4::HEADER_LEN];
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
        // The repr drops options and the reserved flag: compare what it
        // keeps, with the payload behind the emitted header.
        let mut whole = buf.to_vec();
        whole.extend_from_slice(ip.payload());
        let again = Ipv4Packet::new_checked(&whole[..]).expect("emitted header");
        assert_eq!(Ipv4Repr::parse(&again), Ok(repr));
    }
    if let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload())
        && let Ok(r) = Icmpv4Repr::parse(&icmp)
    {
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut Icmpv4Packet::new_unchecked(&mut out[..]));
        let again = Icmpv4Packet::new_checked(&out[..]).expect("emitted header");
        assert_eq!(Icmpv4Repr::parse(&again), Ok(r));
    }
}

/// IPv6, IPv4 and ICMP handling: the first byte picks the ingress and the
/// MTU, the rest is the packet. Runs the parsers and the forwarder.
pub fn forward(data: &[u8]) {
    let Some((&selector, packet)) = data.split_first() else {
        return;
    };
    roundtrip_v6(packet);
    roundtrip_v4(packet);
    let ingress = match selector % 3 {
        0 => Ingress::Tun,
        1 => Ingress::Tunnel(NextHopId(u32::from(selector))),
        _ => Ingress::Local,
    };
    let config = ForwardConfig {
        mtu: 1280 + u16::from(selector),
        icmp_source_v4: (selector & 0x80 == 0).then_some(Ipv4Addr::new(10, 1, 0, 1)),
        ..ForwardConfig::new(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1))
    };
    let mut forwarder = Forwarder::new(config);
    let mut buf = packet.to_vec();
    let mut icmp = [0u8; MAX_ERROR_LEN];
    let fib = fib();
    let v4 = packet.first().is_some_and(|b| b >> 4 == 4);
    let action = forwarder.handle_packet(&fib, ingress, &mut buf, &mut icmp, Instant::now());
    let sent = forwarder.stats().icmp_sent == 1;
    match action {
        Action::Tun(bytes) | Action::NextHop(_, bytes) => check_output(bytes, v4, sent),
        Action::Drop => {}
    }
}

/// Fragment reassembly: the input is a sequence of records
/// `[len][sender][delay][frame bytes (len)]` fed to one reassembler with a
/// small memory cap; every completed datagram must match its announced
/// length and the memory accounting must stay within the cap.
pub fn reassembly(data: &[u8]) {
    let config = ReassemblyConfig {
        timeout: Duration::from_millis(500),
        memory_cap: 8192,
    };
    let mut r = Reassembler::new(config);
    let mut now = Instant::now();
    let mut rest = data;
    while let [len, sender, delay, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(u64::from(*delay) * 8);
        let before = r.pending();
        if let Ok(Some(whole)) = r.handle_fragment(NextHopId(u32::from(sender % 4)), frame, now) {
            assert!(!whole.is_empty());
            assert!(whole.len() <= config.memory_cap);
            assert!(r.pending() <= before);
        }
        assert!(r.memory_used() <= config.memory_cap);
        if delay % 16 == 15 {
            r.handle_timeout(now);
            assert!(r.poll_timeout().is_none_or(|t| t > now));
        }
    }
}

/// Datagram demux, then the parser each frame kind goes to.
pub fn demux(data: &[u8]) {
    match frame::demux(data) {
        Ok(Frame::Ipv6(p)) => {
            assert_eq!(p, data);
            let _ = Ipv6Packet::new_checked(p);
        }
        Ok(Frame::Ipv4(p)) => {
            assert_eq!(p, data);
            let _ = Ipv4Packet::new_checked(p);
        }
        Ok(Frame::Babel(p)) => assert_eq!(p[0], frame::code::BABEL),
        Ok(Frame::Fragment(f)) => {
            let _ = crate::fragment::FragmentRepr::parse(f);
        }
        Ok(Frame::Control { code, body }) => {
            let mut out = Vec::new();
            assert!(frame::emit_control(code, body, &mut out));
            assert_eq!(out, data);
        }
        Err(_) => assert!(data.first().is_none_or(|b| *b == frame::code::RESERVED)),
    }
}
