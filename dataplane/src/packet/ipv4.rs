//! IPv4 header (RFC 791 section 3.1): a zero-copy view and a plain repr.
//!
//! Contract (smoltcp's): after [`Ipv4Packet::check_len`] succeeded, no
//! accessor panics; [`Ipv4Repr::emit`] into a buffer of at least
//! [`Ipv4Repr::buffer_len`] bytes never panics. Options are carried but
//! not interpreted: [`Ipv4Packet::header_len`] skips them.

use std::net::Ipv4Addr;

use super::{ParseError, checksum};

/// Length of the header without options.
pub const HEADER_LEN: usize = 20;

/// Protocol number of ICMPv4 (RFC 792).
pub const PROTOCOL_ICMP: u8 = 1;

/// The MTU every IPv4 host must accept whole (RFC 791 section 3.1): the
/// cap on the errors this node originates (RFC 1812 section 4.3.2.3).
pub const MIN_MTU: usize = 576;

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// Don't Fragment, in the flags and fragment offset word.
const FLAG_DF: u16 = 0x4000;
/// More Fragments.
const FLAG_MF: u16 = 0x2000;
/// Fragment offset, in units of 8 bytes.
const OFFSET_MASK: u16 = 0x1fff;

/// A read/write view of an IPv4 packet in a buffer.
///
/// The buffer may be longer than the packet (trailing bytes are ignored by
/// [`Ipv4Packet::payload`] and [`Ipv4Packet::total_len`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without any check; accessors may panic until
    /// [`Ipv4Packet::check_len`] succeeded.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer and checks it (see [`Ipv4Packet::check_len`]).
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole header of version 4, options
    /// included, and the bytes its Total Length announces. After `Ok`, no
    /// accessor panics. The header checksum is checked apart
    /// ([`Ipv4Packet::verify_checksum`]).
    pub fn check_len(&self) -> Result<(), ParseError> {
        let buf = self.buffer.as_ref();
        if buf.len() < HEADER_LEN {
            return Err(ParseError::Truncated {
                what: "IPv4 header",
                len: buf.len(),
                min: HEADER_LEN,
            });
        }
        let version = buf[field::VER_IHL] >> 4;
        if version != 4 {
            return Err(ParseError::BadVersion(version));
        }
        let header_len = usize::from(buf[field::VER_IHL] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if header_len < HEADER_LEN || header_len > total {
            return Err(ParseError::HeaderLength { header_len, total });
        }
        if total > buf.len() {
            return Err(ParseError::TotalLength {
                declared: total,
                available: buf.len(),
            });
        }
        Ok(())
    }

    /// Consumes the view and returns the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (4 after `check_len`).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes, options included (IHL times 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP and ECN (the former Type of Service byte).
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total Length: header and payload.
    pub fn total_len(&self) -> usize {
        let b = &self.buffer.as_ref()[field::LENGTH];
        usize::from(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::IDENT];
        u16::from_be_bytes([b[0], b[1]])
    }

    fn flags_offset(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::FLG_OFF];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Don't Fragment: the sender does path MTU discovery (RFC 1191).
    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DF != 0
    }

    /// More Fragments.
    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }

    /// Fragment Offset in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(self.flags_offset() & OFFSET_MASK) * 8
    }

    /// Time to Live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header Checksum field.
    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Does the header (options included) carry a correct checksum?
    pub fn verify_checksum(&self) -> bool {
        checksum::of(&self.buffer.as_ref()[..self.header_len()]) == 0
    }

    /// Source Address.
    pub fn src_addr(&self) -> Ipv4Addr {
        addr_at(self.buffer.as_ref(), field::SRC_ADDR.start)
    }

    /// Destination Address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        addr_at(self.buffer.as_ref(), field::DST_ADDR.start)
    }

    /// The payload after the header and its options, up to Total Length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.total_len()]
    }

    /// The packet, header and payload, without trailing bytes.
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and a header length of `header_len` bytes (a
    /// multiple of 4, 20 to 60).
    pub fn set_version_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    /// Sets DSCP and ECN.
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    /// Sets Total Length.
    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets Identification.
    pub fn set_ident(&mut self, ident: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&ident.to_be_bytes());
    }

    /// Sets the flags (Don't Fragment, More Fragments) and the fragment
    /// offset (`offset` bytes, a multiple of 8).
    pub fn set_flags_offset(&mut self, dont_frag: bool, more_frags: bool, offset: usize) {
        let mut word = ((offset / 8) as u16) & OFFSET_MASK;
        if dont_frag {
            word |= FLAG_DF;
        }
        if more_frags {
            word |= FLAG_MF;
        }
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&word.to_be_bytes());
    }

    /// Sets Time to Live, leaving the checksum alone (see
    /// [`Ipv4Packet::decrement_ttl`] for forwarding).
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Forwards the packet one hop: TTL minus one and the checksum
    /// updated incrementally (RFC 1624), without summing the header again.
    /// TTL must be at least 1.
    pub fn decrement_ttl(&mut self) {
        let buf = self.buffer.as_mut();
        let old = u16::from_be_bytes([buf[field::TTL], buf[field::PROTOCOL]]);
        buf[field::TTL] = buf[field::TTL].saturating_sub(1);
        let new = u16::from_be_bytes([buf[field::TTL], buf[field::PROTOCOL]]);
        let sum = u16::from_be_bytes([buf[10], buf[11]]);
        buf[field::CHECKSUM].copy_from_slice(&checksum::update(sum, old, new).to_be_bytes());
    }

    /// Sets Protocol.
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    /// Sets Source Address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets Destination Address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes and writes the header checksum (options included).
    pub fn fill_checksum(&mut self) {
        let len = self.header_len();
        let buf = self.buffer.as_mut();
        buf[field::CHECKSUM].fill(0);
        let sum = checksum::of(&buf[..len]);
        buf[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), self.total_len());
        &mut self.buffer.as_mut()[start..end]
    }
}

fn addr_at(buf: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3])
}

/// The header without options, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source Address.
    pub src_addr: Ipv4Addr,
    /// Destination Address.
    pub dst_addr: Ipv4Addr,
    /// Protocol.
    pub protocol: u8,
    /// Bytes after the header.
    pub payload_len: u16,
    /// Time to Live.
    pub ttl: u8,
    /// DSCP and ECN.
    pub dscp_ecn: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment.
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Parses a checked view whose header checksum is correct. Options
    /// are skipped; fragments are refused (the repr has no offset).
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Self, ParseError> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(ParseError::BadChecksum);
        }
        if packet.more_frags() || packet.frag_offset() != 0 {
            return Err(ParseError::Fragmented);
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: (packet.total_len() - packet.header_len()) as u16,
            ttl: packet.ttl(),
            dscp_ecn: packet.dscp_ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        })
    }

    /// Bytes [`Ipv4Repr::emit`] writes: the header without options.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header and its checksum; `packet` must hold at least
    /// `buffer_len()` bytes. `payload_len` must leave the total within
    /// 65535 bytes (it is clamped).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>) {
        packet.set_version_header_len(HEADER_LEN);
        packet.set_dscp_ecn(self.dscp_ecn);
        let total = usize::from(self.payload_len) + HEADER_LEN;
        packet.set_total_len(total.min(usize::from(u16::MAX)) as u16);
        packet.set_ident(self.ident);
        packet.set_flags_offset(self.dont_frag, false, 0);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

/// Is `addr` an address no packet may come from: unspecified
/// (`0.0.0.0/8`), loopback, multicast, limited broadcast or the reserved
/// `240.0.0.0/4` (RFC 1812 section 5.3.7)?
pub fn is_bad_source(addr: &Ipv4Addr) -> bool {
    let first = addr.octets()[0];
    first == 0 || addr.is_loopback() || first >= 224
}

/// Is `addr` link-local (`169.254.0.0/16`, RFC 3927)? Routers never
/// forward packets with such a source or destination.
pub fn is_link_local(addr: &Ipv4Addr) -> bool {
    addr.is_link_local()
}

#[cfg(test)]
mod tests {
    use super::*;

    // ping 10.0.0.1 -> 10.0.0.2: echo request with 4 bytes of data, DF,
    // TTL 64; header checksum computed independently (python, RFC 1071)
    // = 0x14a7.
    static PACKET: [u8; 32] = [
        0x45, 0x00, 0x00, 0x20, 0x12, 0x34, 0x40, 0x00, // ver/ihl, tos, len 32, id, DF
        0x40, 0x01, 0x14, 0xa7, // ttl 64, icmp, checksum
        10, 0, 0, 1, 10, 0, 0, 2, // src, dst
        0x08, 0x00, 0x00, 0x00, 0x12, 0x34, 0x00, 0x01, 1, 2, 3, 4,
    ];

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2),
            protocol: PROTOCOL_ICMP,
            payload_len: 12,
            ttl: 64,
            dscp_ecn: 0,
            ident: 0x1234,
            dont_frag: true,
        }
    }

    #[test]
    fn test_parse() {
        let packet = Ipv4Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.total_len(), 32);
        assert!(packet.verify_checksum());
        assert!(packet.dont_frag() && !packet.more_frags());
        assert_eq!(packet.payload().len(), 12);
        assert_eq!(Ipv4Repr::parse(&packet).unwrap(), repr());
    }

    #[test]
    fn test_emit() {
        let mut buf = PACKET;
        buf[..HEADER_LEN].fill(0);
        repr().emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn decrement_ttl_keeps_checksum_right() {
        let mut buf = PACKET;
        for expected in (0..64).rev() {
            let mut packet = Ipv4Packet::new_unchecked(&mut buf[..]);
            packet.decrement_ttl();
            assert_eq!(packet.ttl(), expected);
            assert!(packet.verify_checksum(), "ttl {expected}");
        }
    }

    #[test]
    fn rejects_short_header() {
        assert_eq!(
            Ipv4Packet::new_checked(&PACKET[..19]).unwrap_err(),
            ParseError::Truncated {
                what: "IPv4 header",
                len: 19,
                min: 20
            }
        );
    }

    #[test]
    fn rejects_bad_version_and_lengths() {
        let mut buf = PACKET;
        buf[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..]).unwrap_err(),
            ParseError::BadVersion(6)
        );
        // IHL below 5, or options running past Total Length.
        for (ihl, total) in [(4u8, 32u16), (9, 32), (5, 19)] {
            let mut buf = PACKET;
            buf[0] = 0x40 | ihl;
            buf[2..4].copy_from_slice(&total.to_be_bytes());
            assert!(
                matches!(
                    Ipv4Packet::new_checked(&buf[..]),
                    Err(ParseError::HeaderLength { .. })
                ),
                "ihl {ihl} total {total}"
            );
        }
        assert_eq!(
            Ipv4Packet::new_checked(&PACKET[..31]).unwrap_err(),
            ParseError::TotalLength {
                declared: 32,
                available: 31
            }
        );
    }

    #[test]
    fn options_are_skipped() {
        // IHL 6: one 4-byte option (four No-Operation), then the payload.
        let mut buf = [0u8; 36];
        buf[..12].copy_from_slice(&PACKET[..12]);
        buf[0] = 0x46;
        buf[2..4].copy_from_slice(&36u16.to_be_bytes());
        buf[12..20].copy_from_slice(&PACKET[12..20]);
        buf[20..24].fill(1);
        buf[24..].copy_from_slice(&PACKET[20..]);
        let mut packet = Ipv4Packet::new_unchecked(&mut buf[..]);
        packet.fill_checksum();
        let packet = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.payload(), &PACKET[20..]);
        assert_eq!(Ipv4Repr::parse(&packet).unwrap().payload_len, 12);
    }

    #[test]
    fn bad_checksum_and_fragments_do_not_parse() {
        let mut buf = PACKET;
        buf[11] ^= 1;
        let packet = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(!packet.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&packet), Err(ParseError::BadChecksum));
        let mut buf = PACKET;
        let mut packet = Ipv4Packet::new_unchecked(&mut buf[..]);
        packet.set_flags_offset(false, false, 1480);
        packet.fill_checksum();
        assert_eq!(packet.frag_offset(), 1480);
        assert_eq!(Ipv4Repr::parse(&packet), Err(ParseError::Fragmented));
    }

    #[test]
    fn ignores_trailing_bytes() {
        let mut buf = [0u8; 40];
        buf[..32].copy_from_slice(&PACKET);
        let packet = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.packet(), &PACKET[..]);
    }

    #[test]
    fn address_classes() {
        for bad in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "224.0.0.1",
            "239.1.1.1",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_bad_source(&bad.parse().unwrap()), "{bad}");
        }
        for good in ["10.0.0.1", "172.16.0.1", "100.64.0.1", "1.1.1.1"] {
            assert!(!is_bad_source(&good.parse().unwrap()), "{good}");
        }
        assert!(is_link_local(&"169.254.1.1".parse().unwrap()));
        assert!(!is_link_local(&"169.253.1.1".parse().unwrap()));
    }
}
