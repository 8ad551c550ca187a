//! Wire formats of the packet path, smoltcp style: a zero-copy view
//! (`FooPacket<T: AsRef<[u8]>>`, with `new_unchecked`, `check_len`,
//! `new_checked`) and a repr of plain values (`FooRepr` with `parse`,
//! `buffer_len`, `emit`) per protocol.
//!
//! Contract: after `check_len` succeeded no accessor panics, and `emit`
//! into a buffer of `buffer_len()` bytes never panics.

pub mod checksum;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;

/// Why bytes are not a valid packet. Every variant is a fault of the
/// sender (the network or the local kernel), never of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The buffer is shorter than the fixed part of a header.
    #[error("{what} truncated: {len} bytes, at least {min} needed")]
    Truncated {
        /// Which header.
        what: &'static str,
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        min: usize,
    },
    /// The IP version field is not the one of the view (4 or 6).
    #[error("unexpected IP version {0}")]
    BadVersion(u8),
    /// Payload Length announces more bytes than the buffer holds.
    #[error("IPv6 payload length {declared} exceeds the {available} bytes received")]
    PayloadLength {
        /// Payload Length field.
        declared: usize,
        /// Bytes after the fixed header.
        available: usize,
    },
    /// The IPv4 header length (IHL) is below 20 bytes or beyond Total
    /// Length.
    #[error("IPv4 header length {header_len} with total length {total}")]
    HeaderLength {
        /// IHL times 4.
        header_len: usize,
        /// Total Length field.
        total: usize,
    },
    /// IPv4 Total Length announces more bytes than the buffer holds.
    #[error("IPv4 total length {declared} exceeds the {available} bytes received")]
    TotalLength {
        /// Total Length field.
        declared: usize,
        /// Bytes received.
        available: usize,
    },
    /// An IPv4 header or ICMP checksum does not match.
    #[error("bad checksum")]
    BadChecksum,
    /// An IPv4 fragment where a whole packet is needed.
    #[error("IPv4 fragment")]
    Fragmented,
    /// An ICMP type this crate has no repr for.
    #[error("unsupported ICMP type {0}")]
    UnknownIcmpType(u8),
}

/// What follows the IPv6 extension headers, as far as can be seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpperLayer {
    /// The upper-layer protocol and the offset of its header in the packet.
    Header {
        /// Next Header value of the upper-layer protocol.
        protocol: u8,
        /// Offset of its header from the start of the IPv6 packet.
        offset: usize,
    },
    /// A non-first fragment: the upper-layer header is in another packet.
    LaterFragment,
    /// The extension header chain is truncated or too long to follow.
    Unknown,
}

/// Extension headers followed before giving up; a legitimate packet has
/// far fewer (RFC 8200 section 4.1 recommends an order with each at most
/// twice).
const MAX_EXTENSION_HEADERS: usize = 8;

/// Walks the extension headers of a checked IPv6 packet (RFC 8200 section
/// 4) to find the upper-layer header. Used to tell ICMPv6 error messages,
/// which must never be answered with an error (RFC 4443 section 2.4 e.1).
pub fn upper_layer(packet: &ipv6::Ipv6Packet<&[u8]>) -> UpperLayer {
    let bytes = packet.packet();
    let mut next = packet.next_header();
    let mut offset = ipv6::HEADER_LEN;
    for _ in 0..MAX_EXTENSION_HEADERS {
        let len = match next {
            // Hop-by-Hop, Routing, Destination Options: (len + 1) * 8.
            0 | 43 | 60 => match bytes.get(offset + 1) {
                Some(&l) => (usize::from(l) + 1) * 8,
                None => return UpperLayer::Unknown,
            },
            // Fragment: fixed 8 bytes; only the first one carries the
            // upper-layer header.
            44 => {
                let Some(frag) = bytes.get(offset..offset + 8) else {
                    return UpperLayer::Unknown;
                };
                if u16::from_be_bytes([frag[2], frag[3]]) & 0xfff8 != 0 {
                    return UpperLayer::LaterFragment;
                }
                8
            }
            // Authentication Header: (len + 2) * 4.
            51 => match bytes.get(offset + 1) {
                Some(&l) => (usize::from(l) + 2) * 4,
                None => return UpperLayer::Unknown,
            },
            protocol => return UpperLayer::Header { protocol, offset },
        };
        if offset + len > bytes.len() {
            return UpperLayer::Unknown;
        }
        let Some(&following) = bytes.get(offset) else {
            return UpperLayer::Unknown;
        };
        next = following;
        offset += len;
    }
    UpperLayer::Unknown
}

/// Builds test packets (used by the unit tests of several modules).
#[cfg(test)]
pub(crate) fn test_packet(
    src: &str,
    dst: &str,
    hop_limit: u8,
    next_header: u8,
    payload: &[u8],
) -> Vec<u8> {
    let repr = ipv6::Ipv6Repr {
        src_addr: src.parse().unwrap(),
        dst_addr: dst.parse().unwrap(),
        next_header,
        payload_len: payload.len() as u16,
        hop_limit,
        traffic_class: 0,
        flow_label: 0,
    };
    let mut buf = vec![0u8; ipv6::HEADER_LEN + payload.len()];
    repr.emit(&mut ipv6::Ipv6Packet::new_unchecked(&mut buf[..]));
    buf[ipv6::HEADER_LEN..].copy_from_slice(payload);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipv6::Ipv6Packet;

    fn packet(next_header: u8, payload: &[u8]) -> Vec<u8> {
        test_packet("fd00::1", "fd00::2", 64, next_header, payload)
    }

    fn walk(buf: &[u8]) -> UpperLayer {
        upper_layer(&Ipv6Packet::new_checked(buf).unwrap())
    }

    #[test]
    fn no_extension_headers() {
        assert_eq!(
            walk(&packet(58, &[1, 0, 0, 0])),
            UpperLayer::Header {
                protocol: 58,
                offset: 40
            }
        );
    }

    #[test]
    fn hop_by_hop_then_destination_options_then_icmpv6() {
        let mut payload = vec![60, 0, 0, 0, 0, 0, 0, 0]; // HBH, 8 bytes
        payload.extend([58, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // DO, 16
        payload.extend([1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            walk(&packet(0, &payload)),
            UpperLayer::Header {
                protocol: 58,
                offset: 64
            }
        );
    }

    #[test]
    fn fragments() {
        let first = [58, 0, 0, 1, 0, 0, 0, 7, 1, 0, 0, 0];
        assert_eq!(
            walk(&packet(44, &first)),
            UpperLayer::Header {
                protocol: 58,
                offset: 48
            }
        );
        let later = [58, 0, 0, 0x11, 0, 0, 0, 7, 1, 0, 0, 0];
        assert_eq!(walk(&packet(44, &later)), UpperLayer::LaterFragment);
    }

    #[test]
    fn truncated_chain() {
        assert_eq!(walk(&packet(0, &[])), UpperLayer::Unknown);
        assert_eq!(walk(&packet(44, &[58, 0, 0])), UpperLayer::Unknown);
        // A header whose length runs past the end: the next one is missing.
        assert_eq!(walk(&packet(60, &[58, 4, 0, 0])), UpperLayer::Unknown);
    }

    #[test]
    fn endless_chain() {
        let payload: Vec<u8> = [60u8, 0, 0, 0, 0, 0, 0, 0].repeat(20);
        assert_eq!(walk(&packet(60, &payload)), UpperLayer::Unknown);
    }
}
