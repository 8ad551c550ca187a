//! ICMP error messages the forwarder originates: ICMPv6 (RFC 4443 section
//! 2.4 and section 3) and ICMPv4 (RFC 792, RFC 1812 section 4.3): which
//! ones, when they are allowed, and how they are built.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::packet::icmpv4::{self, Icmpv4Packet, Icmpv4Repr};
use crate::packet::icmpv6::{self, Icmpv6Packet, Icmpv6Repr, dst_unreachable, time_exceeded};
use crate::packet::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::packet::ipv6::{self, Ipv6Packet, Ipv6Repr};
use crate::packet::{UpperLayer, upper_layer};

/// Largest ICMPv6 error packet, IPv6 header included: "as much of the
/// invoking packet as possible without the ICMPv6 packet exceeding the
/// minimum IPv6 MTU" (RFC 4443 section 2.4 c). Also the size of the
/// buffer errors of both families are built in.
pub const MAX_ERROR_LEN: usize = ipv6::MIN_MTU;

/// Largest ICMPv4 error packet, IPv4 header included: "as much of the
/// original datagram as possible without the length of the ICMP datagram
/// exceeding 576 bytes" (RFC 1812 section 4.3.2.3).
pub const MAX_ERROR_LEN_V4: usize = ipv4::MIN_MTU;

/// Hop Limit (IPv6) and TTL (IPv4) of the errors we originate.
pub const ERROR_HOP_LIMIT: u8 = 64;

/// An ICMP error the forwarder may answer a packet with. The names are
/// ICMPv6's; [`IcmpError::repr_v4`] says what each one is in ICMPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IcmpError {
    /// Destination Unreachable, no route to destination (code 0).
    NoRoute,
    /// Destination Unreachable, address unreachable (code 3): a packet from
    /// the TUN for one of our own prefixes (the kernel has no host there).
    AddressUnreachable,
    /// Destination Unreachable, reject route (code 6): a FIB
    /// [`crate::fib::Route::Unreachable`] entry.
    RejectRoute,
    /// Time Exceeded, hop limit exceeded in transit (code 0).
    HopLimitExceeded,
    /// Packet Too Big: the packet exceeds the overlay MTU, which TCP path
    /// MTU discovery learns from this message (in IPv4: fragmentation
    /// needed and DF set, only about packets with DF).
    PacketTooBig {
        /// The MTU to report.
        mtu: u32,
    },
}

impl IcmpError {
    fn repr<'a>(&self, invoking: &'a [u8]) -> Icmpv6Repr<'a> {
        match *self {
            IcmpError::NoRoute => Icmpv6Repr::DstUnreachable {
                code: dst_unreachable::NO_ROUTE,
                invoking,
            },
            IcmpError::AddressUnreachable => Icmpv6Repr::DstUnreachable {
                code: dst_unreachable::ADDR_UNREACHABLE,
                invoking,
            },
            IcmpError::RejectRoute => Icmpv6Repr::DstUnreachable {
                code: dst_unreachable::REJECT_ROUTE,
                invoking,
            },
            IcmpError::HopLimitExceeded => Icmpv6Repr::TimeExceeded {
                code: time_exceeded::HOP_LIMIT,
                invoking,
            },
            IcmpError::PacketTooBig { mtu } => Icmpv6Repr::PacketTooBig { mtu, invoking },
        }
    }

    /// The ICMPv4 message: Destination Unreachable "net unreachable" for
    /// no route, "host unreachable" for an address of ours or a reject
    /// route (what a Linux `unreachable` route answers), Time Exceeded
    /// "TTL exceeded in transit", and "fragmentation needed" with the MTU
    /// (RFC 1191).
    fn repr_v4<'a>(&self, invoking: &'a [u8]) -> Icmpv4Repr<'a> {
        use icmpv4::{dst_unreachable as du, time_exceeded as te};
        match *self {
            IcmpError::NoRoute => Icmpv4Repr::DstUnreachable {
                code: du::NET,
                invoking,
            },
            IcmpError::AddressUnreachable | IcmpError::RejectRoute => Icmpv4Repr::DstUnreachable {
                code: du::HOST,
                invoking,
            },
            IcmpError::HopLimitExceeded => Icmpv4Repr::TimeExceeded {
                code: te::TTL,
                invoking,
            },
            IcmpError::PacketTooBig { mtu } => Icmpv4Repr::FragNeeded {
                mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
                invoking,
            },
        }
    }
}

/// Why no error may be sent about a packet (RFC 4443 section 2.4 e).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Ineligible {
    /// The invoking packet is itself an ICMPv6 error message (e.1), or its
    /// extension headers cannot be followed far enough to tell.
    #[error("invoking packet is an ICMPv6 error or cannot be classified")]
    ErrorMessage,
    /// The source is multicast or unspecified (e.5, e.6), so there is no
    /// one to answer.
    #[error("invoking packet has a multicast or unspecified source")]
    Source,
    /// The destination is multicast and the error is not Packet Too Big
    /// (e.3); in IPv4, any error about a multicast or broadcast
    /// destination (RFC 1812 section 4.3.2.7).
    #[error("invoking packet has a multicast destination")]
    MulticastDestination,
    /// An IPv4 fragment other than the first (RFC 1812 section 4.3.2.7).
    #[error("invoking packet is a later IPv4 fragment")]
    LaterFragment,
}

/// May `error` be sent about the checked packet `invoking`?
pub fn eligible(error: IcmpError, invoking: &Ipv6Packet<&[u8]>) -> Result<(), Ineligible> {
    let src = invoking.src_addr();
    if src.is_multicast() || src.is_unspecified() {
        return Err(Ineligible::Source);
    }
    if invoking.dst_addr().is_multicast() && !matches!(error, IcmpError::PacketTooBig { .. }) {
        return Err(Ineligible::MulticastDestination);
    }
    match upper_layer(invoking) {
        UpperLayer::Header {
            protocol: ipv6::NEXT_HEADER_ICMPV6,
            offset,
        } => match invoking.packet().get(offset) {
            Some(&t) if !icmpv6::is_error(t) => Ok(()),
            _ => Err(Ineligible::ErrorMessage),
        },
        UpperLayer::Header { .. } | UpperLayer::LaterFragment => Ok(()),
        UpperLayer::Unknown => Err(Ineligible::ErrorMessage),
    }
}

/// Builds `error` about the checked packet `invoking` into `out`, from
/// `source` (an address of this node) to the invoking packet's source;
/// returns the length of the packet written. The invoking packet is quoted
/// up to a total of [`MAX_ERROR_LEN`] bytes. Does not check
/// [`eligible`]: call it first.
pub fn emit_error(
    error: IcmpError,
    source: Ipv6Addr,
    invoking: &Ipv6Packet<&[u8]>,
    out: &mut [u8; MAX_ERROR_LEN],
) -> usize {
    const ROOM: usize = MAX_ERROR_LEN - ipv6::HEADER_LEN - icmpv6::HEADER_LEN;
    let quoted = invoking.packet();
    let quoted = &quoted[..quoted.len().min(ROOM)];
    let icmp = error.repr(quoted);
    let payload_len = icmp.buffer_len();
    let dst = invoking.src_addr();
    let ip = Ipv6Repr {
        src_addr: source,
        dst_addr: dst,
        next_header: ipv6::NEXT_HEADER_ICMPV6,
        // payload_len <= ROOM + 8 < 65536.
        payload_len: payload_len as u16,
        hop_limit: ERROR_HOP_LIMIT,
        traffic_class: 0,
        flow_label: 0,
    };
    let total = ipv6::HEADER_LEN + payload_len;
    let (header, body) = out[..total].split_at_mut(ipv6::HEADER_LEN);
    ip.emit(&mut Ipv6Packet::new_unchecked(header));
    icmp.emit(&source, &dst, &mut Icmpv6Packet::new_unchecked(body));
    total
}

/// May an error be sent about the checked IPv4 packet `invoking` (RFC
/// 1812 section 4.3.2.7)? Never about an ICMP error (or a message too short to
/// tell), a later fragment, a multicast or broadcast destination, or a
/// source that names no single host.
pub fn eligible_v4(invoking: &Ipv4Packet<&[u8]>) -> Result<(), Ineligible> {
    if ipv4::is_bad_source(&invoking.src_addr()) {
        return Err(Ineligible::Source);
    }
    let dst = invoking.dst_addr();
    if dst.is_multicast() || dst.is_broadcast() {
        return Err(Ineligible::MulticastDestination);
    }
    if invoking.frag_offset() != 0 {
        return Err(Ineligible::LaterFragment);
    }
    if invoking.protocol() == ipv4::PROTOCOL_ICMP {
        return match invoking.payload().first() {
            Some(&t) if !icmpv4::is_error(t) => Ok(()),
            _ => Err(Ineligible::ErrorMessage),
        };
    }
    Ok(())
}

/// Builds `error` about the checked IPv4 packet `invoking` into `out`,
/// from `source` (this node's IPv4 address) to the invoking packet's
/// source; returns the length written. The invoking packet is quoted up
/// to a total of [`MAX_ERROR_LEN_V4`] bytes. Does not check
/// [`eligible_v4`]: call it first.
pub fn emit_error_v4(
    error: IcmpError,
    source: Ipv4Addr,
    invoking: &Ipv4Packet<&[u8]>,
    out: &mut [u8; MAX_ERROR_LEN],
) -> usize {
    const ROOM: usize = MAX_ERROR_LEN_V4 - ipv4::HEADER_LEN - icmpv4::HEADER_LEN;
    let quoted = invoking.packet();
    let quoted = &quoted[..quoted.len().min(ROOM)];
    let icmp = error.repr_v4(quoted);
    let payload_len = icmp.buffer_len();
    let ip = Ipv4Repr {
        src_addr: source,
        dst_addr: invoking.src_addr(),
        protocol: ipv4::PROTOCOL_ICMP,
        // payload_len <= ROOM + 8 < 65536.
        payload_len: payload_len as u16,
        ttl: ERROR_HOP_LIMIT,
        dscp_ecn: 0,
        ident: 0,
        dont_frag: false,
    };
    let total = ipv4::HEADER_LEN + payload_len;
    let (header, body) = out[..total].split_at_mut(ipv4::HEADER_LEN);
    ip.emit(&mut Ipv4Packet::new_unchecked(header));
    icmp.emit(&mut Icmpv4Packet::new_unchecked(body));
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ParseError;

    const SOURCE: &str = "fd00:ff::1";

    fn packet(src: &str, dst: &str, next_header: u8, payload: &[u8]) -> Vec<u8> {
        crate::packet::test_packet(src, dst, 64, next_header, payload)
    }

    fn udp(len: usize) -> Vec<u8> {
        packet("fd00:1::1", "fd00:2::1", 17, &vec![0xab; len])
    }

    /// Parses an emitted error and returns (ip repr, icmp type, code, word,
    /// quoted bytes).
    fn parse(buf: &[u8]) -> Result<(Ipv6Repr, Icmpv6Repr<'_>), ParseError> {
        let ip = Ipv6Packet::new_checked(buf)?;
        let repr = Ipv6Repr::parse(&ip)?;
        assert_eq!(ip.total_len(), buf.len());
        let icmp = Icmpv6Packet::new_checked(&buf[ipv6::HEADER_LEN..])?;
        let icmp = Icmpv6Repr::parse(&repr.src_addr, &repr.dst_addr, &icmp)?;
        Ok((repr, icmp))
    }

    fn emit(error: IcmpError, invoking: &[u8]) -> Vec<u8> {
        let invoking = Ipv6Packet::new_checked(invoking).unwrap();
        assert_eq!(eligible(error, &invoking), Ok(()));
        let mut out = [0u8; MAX_ERROR_LEN];
        let n = emit_error(error, SOURCE.parse().unwrap(), &invoking, &mut out);
        out[..n].to_vec()
    }

    #[test]
    fn each_error_type_and_code() {
        let invoking = udp(100);
        let cases = [
            (IcmpError::NoRoute, 1, 0, 0),
            (IcmpError::AddressUnreachable, 1, 3, 0),
            (IcmpError::RejectRoute, 1, 6, 0),
            (IcmpError::HopLimitExceeded, 3, 0, 0),
            (IcmpError::PacketTooBig { mtu: 1400 }, 2, 0, 1400),
        ];
        for (error, msg_type, code, word) in cases {
            let out = emit(error, &invoking);
            let (ip, icmp) = parse(&out).unwrap();
            assert_eq!(ip.src_addr, SOURCE.parse::<Ipv6Addr>().unwrap());
            assert_eq!(ip.dst_addr, "fd00:1::1".parse::<Ipv6Addr>().unwrap());
            assert_eq!(ip.hop_limit, ERROR_HOP_LIMIT);
            assert_eq!(ip.next_header, 58);
            let raw = Icmpv6Packet::new_checked(&out[40..]).unwrap();
            assert_eq!(
                (raw.msg_type(), raw.code(), raw.word()),
                (msg_type, code, word)
            );
            // Quoted: the whole invoking packet, verbatim.
            assert_eq!(raw.data(), &invoking[..]);
            assert!(matches!(
                icmp,
                Icmpv6Repr::DstUnreachable { .. }
                    | Icmpv6Repr::TimeExceeded { .. }
                    | Icmpv6Repr::PacketTooBig { .. }
            ));
        }
    }

    #[test]
    fn quote_capped_at_minimum_mtu() {
        for len in [1192, 1193, 1400, 9000, 65000] {
            let invoking = udp(len);
            let out = emit(IcmpError::PacketTooBig { mtu: 1280 }, &invoking);
            assert_eq!(out.len(), (48 + invoking.len()).min(1280), "len {len}");
            let (_, icmp) = parse(&out).unwrap();
            let Icmpv6Repr::PacketTooBig { mtu, invoking: q } = icmp else {
                panic!("not a PTB: {icmp:?}");
            };
            assert_eq!(mtu, 1280);
            assert_eq!(q, &invoking[..q.len()]);
            assert_eq!(q.len(), invoking.len().min(1280 - 48));
        }
    }

    #[test]
    fn never_about_an_icmpv6_error() {
        for t in [1u8, 2, 3, 4, 100, 127] {
            let p = packet("fd00:1::1", "fd00:2::1", 58, &[t, 0, 0, 0, 0, 0, 0, 0]);
            let p = Ipv6Packet::new_checked(&p[..]).unwrap();
            assert_eq!(
                eligible(IcmpError::NoRoute, &p),
                Err(Ineligible::ErrorMessage)
            );
        }
        // Behind a Destination Options header too.
        let mut payload = vec![58, 0, 0, 0, 0, 0, 0, 0];
        payload.extend([3, 0, 0, 0, 0, 0, 0, 0]);
        let p = packet("fd00:1::1", "fd00:2::1", 60, &payload);
        let p = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(
            eligible(IcmpError::HopLimitExceeded, &p),
            Err(Ineligible::ErrorMessage)
        );
        // A truncated ICMPv6 header cannot be told apart: no error.
        let p = packet("fd00:1::1", "fd00:2::1", 58, &[]);
        let p = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(
            eligible(IcmpError::NoRoute, &p),
            Err(Ineligible::ErrorMessage)
        );
    }

    #[test]
    fn informational_icmpv6_is_answered() {
        let p = packet("fd00:1::1", "fd00:2::1", 58, &[128, 0, 0, 0, 0, 1, 0, 1]);
        let p = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(eligible(IcmpError::NoRoute, &p), Ok(()));
    }

    #[test]
    fn never_to_multicast_or_unspecified_source() {
        for src in ["ff02::1", "::"] {
            let p = packet(src, "fd00:2::1", 17, &[0; 8]);
            let p = Ipv6Packet::new_checked(&p[..]).unwrap();
            for e in [IcmpError::NoRoute, IcmpError::PacketTooBig { mtu: 1280 }] {
                assert_eq!(eligible(e, &p), Err(Ineligible::Source));
            }
        }
    }

    #[test]
    fn multicast_destination_only_packet_too_big() {
        let p = packet("fd00:1::1", "ff0e::1", 17, &[0; 8]);
        let p = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(
            eligible(IcmpError::NoRoute, &p),
            Err(Ineligible::MulticastDestination)
        );
        assert_eq!(eligible(IcmpError::PacketTooBig { mtu: 1280 }, &p), Ok(()));
    }
}
