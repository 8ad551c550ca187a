//! IPv6 fixed header (RFC 8200 section 3): a zero-copy view and a plain repr.
//!
//! Contract (smoltcp's): after [`Ipv6Packet::check_len`] succeeded, no
//! accessor panics; [`Ipv6Repr::emit`] into a buffer of at least
//! [`Ipv6Repr::buffer_len`] bytes never panics.

use std::net::Ipv6Addr;

use super::ParseError;

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// The IPv6 minimum link MTU (RFC 8200 section 5): every link, the overlay
/// included, must carry packets of this size.
pub const MIN_MTU: usize = 1280;

/// Next Header value of ICMPv6 (RFC 4443).
pub const NEXT_HEADER_ICMPV6: u8 = 58;

mod field {
    use std::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
}

/// A read/write view of an IPv6 packet in a buffer.
///
/// The buffer may be longer than the packet (trailing bytes are ignored by
/// [`Ipv6Packet::payload`] and [`Ipv6Packet::total_len`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without any check; accessors may panic until
    /// [`Ipv6Packet::check_len`] succeeded.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer and checks it (see [`Ipv6Packet::check_len`]).
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole header of version 6 and the
    /// payload its Payload Length announces. After `Ok`, no accessor panics.
    pub fn check_len(&self) -> Result<(), ParseError> {
        let buf = self.buffer.as_ref();
        if buf.len() < HEADER_LEN {
            return Err(ParseError::Truncated {
                what: "IPv6 header",
                len: buf.len(),
                min: HEADER_LEN,
            });
        }
        let version = buf[0] >> 4;
        if version != 6 {
            return Err(ParseError::BadVersion(version));
        }
        let declared = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
        if HEADER_LEN + declared > buf.len() {
            return Err(ParseError::PayloadLength {
                declared,
                available: buf.len() - HEADER_LEN,
            });
        }
        Ok(())
    }

    /// Consumes the view and returns the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (6 after `check_len`).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic Class.
    pub fn traffic_class(&self) -> u8 {
        let b = &self.buffer.as_ref()[field::VER_TC_FLOW];
        (b[0] << 4) | (b[1] >> 4)
    }

    /// Flow Label (20 bits).
    pub fn flow_label(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VER_TC_FLOW];
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }

    /// Payload Length.
    pub fn payload_len(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Length of the packet: header plus announced payload.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// Next Header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop Limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source Address.
    pub fn src_addr(&self) -> Ipv6Addr {
        addr_at(self.buffer.as_ref(), field::SRC_ADDR.start)
    }

    /// Destination Address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr_at(self.buffer.as_ref(), field::DST_ADDR.start)
    }

    /// The payload, exactly Payload Length bytes.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.total_len()]
    }

    /// The packet, header and payload, without trailing bytes.
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, Traffic Class and Flow Label.
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let word = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
    }

    /// Sets Payload Length.
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets Next Header.
    pub fn set_next_header(&mut self, next_header: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = next_header;
    }

    /// Sets Hop Limit. No checksum covers it, so forwarding only writes
    /// this byte.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Sets Source Address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets Destination Address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The payload, mutable (exactly Payload Length bytes).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

fn addr_at(buf: &[u8], at: usize) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&buf[at..at + 16]);
    Ipv6Addr::from(octets)
}

/// The fixed header as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    /// Source Address.
    pub src_addr: Ipv6Addr,
    /// Destination Address.
    pub dst_addr: Ipv6Addr,
    /// Next Header.
    pub next_header: u8,
    /// Payload Length.
    pub payload_len: u16,
    /// Hop Limit.
    pub hop_limit: u8,
    /// Traffic Class.
    pub traffic_class: u8,
    /// Flow Label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Parses a checked view.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Result<Self, ParseError> {
        packet.check_len()?;
        Ok(Ipv6Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: packet.payload_len(),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// Bytes [`Ipv6Repr::emit`] writes: the fixed header only.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header; `packet` must hold at least `buffer_len()` bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv6Packet<T>) {
        packet.set_version_tc_flow(self.traffic_class, self.flow_label);
        packet.set_payload_len(self.payload_len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

/// Is `addr` link-local unicast (`fe80::/10`)? Routers never forward
/// packets with such a source or destination (RFC 4291 section 2.5.6).
pub fn is_link_local(addr: &Ipv6Addr) -> bool {
    addr.segments()[0] & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    // ping6 fd00::1 -> fd00::2, echo request with 4 bytes of data.
    static PACKET: [u8; 52] = [
        0x60, 0x0a, 0xbc, 0xde, 0x00, 0x0c, 0x3a,
        0x40, // ver, tc, flow, len 12, icmpv6, hl 64
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // src
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // dst
        0x80, 0x00, 0x00, 0x00, 0x12, 0x34, 0x00, 0x01, 1, 2, 3, 4,
    ];

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src_addr: "fd00::1".parse().unwrap(),
            dst_addr: "fd00::2".parse().unwrap(),
            next_header: NEXT_HEADER_ICMPV6,
            payload_len: 12,
            hop_limit: 64,
            traffic_class: 0x00,
            flow_label: 0xabcde,
        }
    }

    #[test]
    fn test_parse() {
        let packet = Ipv6Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.total_len(), 52);
        assert_eq!(packet.payload().len(), 12);
        assert_eq!(Ipv6Repr::parse(&packet).unwrap(), repr());
    }

    #[test]
    fn test_emit() {
        let mut buf = PACKET;
        buf[..HEADER_LEN].fill(0);
        let mut packet = Ipv6Packet::new_unchecked(&mut buf[..]);
        repr().emit(&mut packet);
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn traffic_class_roundtrip() {
        let mut buf = PACKET;
        let mut packet = Ipv6Packet::new_unchecked(&mut buf[..]);
        packet.set_version_tc_flow(0xb8, 0xfffff);
        assert_eq!(packet.traffic_class(), 0xb8);
        assert_eq!(packet.flow_label(), 0xfffff);
        assert_eq!(packet.version(), 6);
    }

    #[test]
    fn rejects_short_header() {
        assert_eq!(
            Ipv6Packet::new_checked(&PACKET[..39]).unwrap_err(),
            ParseError::Truncated {
                what: "IPv6 header",
                len: 39,
                min: 40
            }
        );
    }

    #[test]
    fn rejects_bad_version() {
        let mut buf = PACKET;
        buf[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&buf[..]).unwrap_err(),
            ParseError::BadVersion(4)
        );
    }

    #[test]
    fn rejects_payload_longer_than_buffer() {
        assert_eq!(
            Ipv6Packet::new_checked(&PACKET[..51]).unwrap_err(),
            ParseError::PayloadLength {
                declared: 12,
                available: 11
            }
        );
    }

    #[test]
    fn ignores_trailing_bytes() {
        let mut buf = [0u8; 60];
        buf[..52].copy_from_slice(&PACKET);
        let packet = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.packet(), &PACKET[..]);
    }

    #[test]
    fn link_local() {
        assert!(is_link_local(&"fe80::1".parse().unwrap()));
        assert!(is_link_local(&"febf::1".parse().unwrap()));
        assert!(!is_link_local(&"fec0::1".parse().unwrap()));
        assert!(!is_link_local(&"fd00::1".parse().unwrap()));
    }
}
