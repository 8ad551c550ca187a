//! ICMPv6 messages (RFC 4443): a zero-copy view, the checksum over the IPv6
//! pseudo-header (RFC 8200 section 8.1), and a repr for the error messages
//! the forwarder emits plus Echo (used by tests and tools).
//!
//! Contract: after [`Icmpv6Packet::check_len`] succeeded, no accessor panics;
//! [`Icmpv6Repr::emit`] into [`Icmpv6Repr::buffer_len`] bytes never panics.

use std::net::Ipv6Addr;

use super::ipv6::NEXT_HEADER_ICMPV6;
use super::{ParseError, checksum::add_words, checksum::finish};

/// Length of the ICMPv6 header: type, code, checksum and the 4-byte
/// type-specific word (MTU, pointer, or identifier + sequence).
pub const HEADER_LEN: usize = 8;

/// ICMPv6 message types used here (RFC 4443 section 2.1).
pub mod msg_type {
    /// Destination Unreachable.
    pub const DST_UNREACHABLE: u8 = 1;
    /// Packet Too Big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time Exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter Problem.
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo Request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo Reply.
    pub const ECHO_REPLY: u8 = 129;
}

/// Destination Unreachable codes (RFC 4443 section 3.1).
pub mod dst_unreachable {
    /// No route to destination.
    pub const NO_ROUTE: u8 = 0;
    /// Communication with destination administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 1;
    /// Beyond scope of source address.
    pub const BEYOND_SCOPE: u8 = 2;
    /// Address unreachable.
    pub const ADDR_UNREACHABLE: u8 = 3;
    /// Port unreachable.
    pub const PORT_UNREACHABLE: u8 = 4;
    /// Reject route to destination.
    pub const REJECT_ROUTE: u8 = 6;
}

/// Time Exceeded codes (RFC 4443 section 3.3).
pub mod time_exceeded {
    /// Hop limit exceeded in transit.
    pub const HOP_LIMIT: u8 = 0;
    /// Fragment reassembly time exceeded.
    pub const REASSEMBLY: u8 = 1;
}

/// Is this message type an error message (RFC 4443 section 2.1: the high
/// bit of the type is clear)? No error is ever sent in reply to one.
pub const fn is_error(msg_type: u8) -> bool {
    msg_type < 128
}

mod field {
    use std::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const WORD: Range<usize> = 4..8;
}

/// A read/write view of an ICMPv6 message (the IPv6 payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps a buffer without any check.
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// Wraps a buffer and checks it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds the 8-byte header. After `Ok`, no accessor
    /// panics.
    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(ParseError::Truncated {
                what: "ICMPv6 header",
                len,
                min: HEADER_LEN,
            });
        }
        Ok(())
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The type-specific 32-bit word: MTU of Packet Too Big, pointer of
    /// Parameter Problem, unused (zero) in the other errors.
    pub fn word(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::WORD];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Echo identifier (first half of the word).
    pub fn echo_ident(&self) -> u16 {
        (self.word() >> 16) as u16
    }

    /// Echo sequence number (second half of the word).
    pub fn echo_seq_no(&self) -> u16 {
        self.word() as u16
    }

    /// The message body after the header: the invoking packet of an error,
    /// the data of an echo.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Does the checksum match the IPv6 pseudo-header `src`, `dst`?
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        checksum(src, dst, self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Sets the message type.
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    /// Sets the code.
    pub fn set_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the type-specific word.
    pub fn set_word(&mut self, value: u32) {
        self.buffer.as_mut()[field::WORD].copy_from_slice(&value.to_be_bytes());
    }

    /// The body, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Computes and writes the checksum over the whole buffer.
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.buffer.as_mut()[field::CHECKSUM].fill(0);
        let sum = checksum(src, dst, self.buffer.as_ref());
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    }
}

/// The Internet checksum (RFC 1071) of an ICMPv6 message with its
/// pseudo-header; 0 when `message` carries a correct checksum.
pub fn checksum(src: &Ipv6Addr, dst: &Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    sum = add_words(sum, &src.octets());
    sum = add_words(sum, &dst.octets());
    sum += message.len() as u64; // upper-layer length, 32 bits
    sum += u64::from(NEXT_HEADER_ICMPV6);
    sum = add_words(sum, message);
    finish(sum)
}

/// The ICMPv6 messages this crate emits and understands, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Icmpv6Repr<'a> {
    /// Destination Unreachable with its code and the invoking packet.
    DstUnreachable {
        /// Code ([`dst_unreachable`]).
        code: u8,
        /// As much of the invoking packet as fits.
        invoking: &'a [u8],
    },
    /// Packet Too Big with the MTU of the next hop.
    PacketTooBig {
        /// MTU the sender must use.
        mtu: u32,
        /// As much of the invoking packet as fits.
        invoking: &'a [u8],
    },
    /// Time Exceeded with its code.
    TimeExceeded {
        /// Code ([`time_exceeded`]).
        code: u8,
        /// As much of the invoking packet as fits.
        invoking: &'a [u8],
    },
    /// Parameter Problem.
    ParamProblem {
        /// Code.
        code: u8,
        /// Offset of the faulty octet in the invoking packet.
        pointer: u32,
        /// As much of the invoking packet as fits.
        invoking: &'a [u8],
    },
    /// Echo Request.
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// Echo Reply.
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
}

impl<'a> Icmpv6Repr<'a> {
    /// Parses a message, verifying its checksum against the pseudo-header.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
        packet: &Icmpv6Packet<&'a T>,
    ) -> Result<Self, ParseError> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(ParseError::BadChecksum);
        }
        let data = &packet.buffer.as_ref()[HEADER_LEN..];
        let (code, word) = (packet.code(), packet.word());
        Ok(match packet.msg_type() {
            msg_type::DST_UNREACHABLE => Icmpv6Repr::DstUnreachable {
                code,
                invoking: data,
            },
            msg_type::PACKET_TOO_BIG => Icmpv6Repr::PacketTooBig {
                mtu: word,
                invoking: data,
            },
            msg_type::TIME_EXCEEDED => Icmpv6Repr::TimeExceeded {
                code,
                invoking: data,
            },
            msg_type::PARAM_PROBLEM => Icmpv6Repr::ParamProblem {
                code,
                pointer: word,
                invoking: data,
            },
            msg_type::ECHO_REQUEST => Icmpv6Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            msg_type::ECHO_REPLY => Icmpv6Repr::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            other => return Err(ParseError::UnknownIcmpType(other)),
        })
    }

    fn parts(&self) -> (u8, u8, u32, &'a [u8]) {
        match *self {
            Icmpv6Repr::DstUnreachable { code, invoking } => {
                (msg_type::DST_UNREACHABLE, code, 0, invoking)
            }
            Icmpv6Repr::PacketTooBig { mtu, invoking } => {
                (msg_type::PACKET_TOO_BIG, 0, mtu, invoking)
            }
            Icmpv6Repr::TimeExceeded { code, invoking } => {
                (msg_type::TIME_EXCEEDED, code, 0, invoking)
            }
            Icmpv6Repr::ParamProblem {
                code,
                pointer,
                invoking,
            } => (msg_type::PARAM_PROBLEM, code, pointer, invoking),
            Icmpv6Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => (
                msg_type::ECHO_REQUEST,
                0,
                (u32::from(ident) << 16) | u32::from(seq_no),
                data,
            ),
            Icmpv6Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => (
                msg_type::ECHO_REPLY,
                0,
                (u32::from(ident) << 16) | u32::from(seq_no),
                data,
            ),
        }
    }

    /// Bytes [`Icmpv6Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.parts().3.len()
    }

    /// Writes the message and its checksum; `packet` must be exactly
    /// `buffer_len()` bytes long.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
        packet: &mut Icmpv6Packet<T>,
    ) {
        let (msg_type, code, word, data) = self.parts();
        packet.set_msg_type(msg_type);
        packet.set_code(code);
        packet.set_word(word);
        packet.data_mut()[..data.len()].copy_from_slice(data);
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (Ipv6Addr, Ipv6Addr) {
        ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap())
    }

    // Echo request fd00::1 -> fd00::2, ident 0x1234, seq 1, data 1 2 3 4;
    // checksum computed independently (python, RFC 1071 over the
    // pseudo-header) = 0x6f79.
    static ECHO: [u8; 12] = [0x80, 0, 0x6f, 0x79, 0x12, 0x34, 0, 1, 1, 2, 3, 4];

    #[test]
    fn test_parse_echo() {
        let (src, dst) = addrs();
        let packet = Icmpv6Packet::new_checked(&ECHO[..]).unwrap();
        assert!(packet.verify_checksum(&src, &dst));
        assert_eq!(
            Icmpv6Repr::parse(&src, &dst, &packet).unwrap(),
            Icmpv6Repr::EchoRequest {
                ident: 0x1234,
                seq_no: 1,
                data: &[1, 2, 3, 4]
            }
        );
    }

    #[test]
    fn test_emit_echo() {
        let (src, dst) = addrs();
        let repr = Icmpv6Repr::EchoRequest {
            ident: 0x1234,
            seq_no: 1,
            data: &[1, 2, 3, 4],
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, ECHO);
    }

    #[test]
    fn rejects_bad_checksum() {
        let (src, dst) = addrs();
        let mut buf = ECHO;
        buf[11] ^= 1;
        let packet = Icmpv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            Icmpv6Repr::parse(&src, &dst, &packet),
            Err(ParseError::BadChecksum)
        );
        // The pseudo-header counts: the right bytes with other addresses fail.
        let packet = Icmpv6Packet::new_checked(&ECHO[..]).unwrap();
        assert!(!packet.verify_checksum(&dst, &src.to_bits().wrapping_add(1).into()));
    }

    #[test]
    fn rejects_short() {
        assert!(matches!(
            Icmpv6Packet::new_checked(&ECHO[..7]),
            Err(ParseError::Truncated { min: 8, .. })
        ));
    }

    #[test]
    fn errors_roundtrip() {
        let (src, dst) = addrs();
        let invoking = [0x60u8, 1, 2, 3, 4, 5, 6];
        for repr in [
            Icmpv6Repr::DstUnreachable {
                code: dst_unreachable::NO_ROUTE,
                invoking: &invoking,
            },
            Icmpv6Repr::PacketTooBig {
                mtu: 1280,
                invoking: &invoking,
            },
            Icmpv6Repr::TimeExceeded {
                code: time_exceeded::HOP_LIMIT,
                invoking: &invoking,
            },
            Icmpv6Repr::ParamProblem {
                code: 0,
                pointer: 6,
                invoking: &invoking,
            },
            Icmpv6Repr::EchoReply {
                ident: 7,
                seq_no: 9,
                data: &invoking,
            },
        ] {
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(&mut buf[..]));
            let packet = Icmpv6Packet::new_checked(&buf[..]).unwrap();
            assert_eq!(Icmpv6Repr::parse(&src, &dst, &packet).unwrap(), repr);
        }
    }

    #[test]
    fn unknown_type() {
        let (src, dst) = addrs();
        let mut buf = [135u8, 0, 0, 0, 0, 0, 0, 0];
        Icmpv6Packet::new_unchecked(&mut buf[..]).fill_checksum(&src, &dst);
        let packet = Icmpv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            Icmpv6Repr::parse(&src, &dst, &packet),
            Err(ParseError::UnknownIcmpType(135))
        );
    }

    #[test]
    fn odd_length_checksum() {
        let (src, dst) = addrs();
        let repr = Icmpv6Repr::EchoRequest {
            ident: 1,
            seq_no: 2,
            data: &[0xff; 5],
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(&mut buf[..]));
        assert!(Icmpv6Packet::new_unchecked(&buf[..]).verify_checksum(&src, &dst));
    }
}
