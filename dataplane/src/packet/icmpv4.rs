//! ICMPv4 messages (RFC 792): a zero-copy view, the checksum over the
//! message, and a repr for the errors the forwarder emits plus Echo (used
//! by tests and tools).
//!
//! Contract: after [`Icmpv4Packet::check_len`] succeeded, no accessor
//! panics; [`Icmpv4Repr::emit`] into [`Icmpv4Repr::buffer_len`] bytes
//! never panics.

use super::{ParseError, checksum};

/// Length of the ICMPv4 header: type, code, checksum and the 4-byte
/// type-specific word (next-hop MTU, pointer, or identifier + sequence).
pub const HEADER_LEN: usize = 8;

/// ICMPv4 message types used here (RFC 792).
pub mod msg_type {
    /// Echo Reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination Unreachable.
    pub const DST_UNREACHABLE: u8 = 3;
    /// Source Quench (deprecated, RFC 6633; still an error message).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo Request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time Exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter Problem.
    pub const PARAM_PROBLEM: u8 = 12;
}

/// Destination Unreachable codes (RFC 792, RFC 1122 section 3.2.2.1,
/// RFC 1812 section 5.2.7.1).
pub mod dst_unreachable {
    /// Net unreachable.
    pub const NET: u8 = 0;
    /// Host unreachable.
    pub const HOST: u8 = 1;
    /// Port unreachable.
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set; the word carries the next-hop MTU
    /// (RFC 1191 section 4).
    pub const FRAG_NEEDED: u8 = 4;
    /// Communication administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// Time Exceeded codes (RFC 792).
pub mod time_exceeded {
    /// Time to live exceeded in transit.
    pub const TTL: u8 = 0;
    /// Fragment reassembly time exceeded.
    pub const REASSEMBLY: u8 = 1;
}

/// Is this message type an error message, never to be answered with an
/// error (RFC 1812 section 4.3.2.7)? Unlike ICMPv6, ICMPv4 has no bit
/// for it: the error types are listed.
pub const fn is_error(msg_type: u8) -> bool {
    matches!(
        msg_type,
        msg_type::DST_UNREACHABLE
            | msg_type::SOURCE_QUENCH
            | msg_type::REDIRECT
            | msg_type::TIME_EXCEEDED
            | msg_type::PARAM_PROBLEM
    )
}

mod field {
    use std::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const WORD: Range<usize> = 4..8;
}

/// A read/write view of an ICMPv4 message (the IPv4 payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps a buffer without any check.
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv4Packet { buffer }
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
                what: "ICMPv4 header",
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

    /// The type-specific 32-bit word: next-hop MTU of "fragmentation
    /// needed" in its low half, pointer of Parameter Problem in its high
    /// byte, identifier and sequence of an echo.
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

    /// The message body after the header: the quoted packet of an error,
    /// the data of an echo.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Does the checksum over the whole message match?
    pub fn verify_checksum(&self) -> bool {
        checksum::of(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
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
    pub fn fill_checksum(&mut self) {
        self.buffer.as_mut()[field::CHECKSUM].fill(0);
        let sum = checksum::of(self.buffer.as_ref());
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    }
}

/// The ICMPv4 messages this crate emits and understands, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Icmpv4Repr<'a> {
    /// Destination Unreachable with its code (but "fragmentation needed")
    /// and the quoted packet.
    DstUnreachable {
        /// Code ([`dst_unreachable`]).
        code: u8,
        /// The start of the invoking packet.
        invoking: &'a [u8],
    },
    /// Destination Unreachable, fragmentation needed and DF set, with the
    /// MTU of the next hop (RFC 1191).
    FragNeeded {
        /// MTU the sender must use.
        mtu: u16,
        /// The start of the invoking packet.
        invoking: &'a [u8],
    },
    /// Time Exceeded with its code.
    TimeExceeded {
        /// Code ([`time_exceeded`]).
        code: u8,
        /// The start of the invoking packet.
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

impl<'a> Icmpv4Repr<'a> {
    /// Parses a message, verifying its checksum.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Icmpv4Packet<&'a T>,
    ) -> Result<Self, ParseError> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(ParseError::BadChecksum);
        }
        let data = &packet.buffer.as_ref()[HEADER_LEN..];
        let code = packet.code();
        Ok(match packet.msg_type() {
            msg_type::DST_UNREACHABLE if code == dst_unreachable::FRAG_NEEDED => {
                Icmpv4Repr::FragNeeded {
                    mtu: packet.word() as u16,
                    invoking: data,
                }
            }
            msg_type::DST_UNREACHABLE => Icmpv4Repr::DstUnreachable {
                code,
                invoking: data,
            },
            msg_type::TIME_EXCEEDED => Icmpv4Repr::TimeExceeded {
                code,
                invoking: data,
            },
            msg_type::ECHO_REQUEST => Icmpv4Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            msg_type::ECHO_REPLY => Icmpv4Repr::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            other => return Err(ParseError::UnknownIcmpType(other)),
        })
    }

    fn parts(&self) -> (u8, u8, u32, &'a [u8]) {
        let echo = |ident: u16, seq_no: u16| (u32::from(ident) << 16) | u32::from(seq_no);
        match *self {
            Icmpv4Repr::DstUnreachable { code, invoking } => {
                (msg_type::DST_UNREACHABLE, code, 0, invoking)
            }
            Icmpv4Repr::FragNeeded { mtu, invoking } => (
                msg_type::DST_UNREACHABLE,
                dst_unreachable::FRAG_NEEDED,
                u32::from(mtu),
                invoking,
            ),
            Icmpv4Repr::TimeExceeded { code, invoking } => {
                (msg_type::TIME_EXCEEDED, code, 0, invoking)
            }
            Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => (msg_type::ECHO_REQUEST, 0, echo(ident, seq_no), data),
            Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => (msg_type::ECHO_REPLY, 0, echo(ident, seq_no), data),
        }
    }

    /// Bytes [`Icmpv4Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.parts().3.len()
    }

    /// Writes the message and its checksum; `packet` must be exactly
    /// `buffer_len()` bytes long.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Icmpv4Packet<T>) {
        let (msg_type, code, word, data) = self.parts();
        packet.set_msg_type(msg_type);
        packet.set_code(code);
        packet.set_word(word);
        packet.data_mut()[..data.len()].copy_from_slice(data);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Echo request, ident 0x1234, seq 1, data 1 2 3 4; checksum computed
    // independently (python, RFC 1071) = 0xe1c4.
    static ECHO: [u8; 12] = [8, 0, 0xe1, 0xc4, 0x12, 0x34, 0, 1, 1, 2, 3, 4];

    #[test]
    fn test_parse_echo() {
        let packet = Icmpv4Packet::new_checked(&ECHO[..]).unwrap();
        assert!(packet.verify_checksum());
        assert_eq!(
            Icmpv4Repr::parse(&packet).unwrap(),
            Icmpv4Repr::EchoRequest {
                ident: 0x1234,
                seq_no: 1,
                data: &[1, 2, 3, 4]
            }
        );
    }

    #[test]
    fn test_emit_echo() {
        let repr = Icmpv4Repr::EchoRequest {
            ident: 0x1234,
            seq_no: 1,
            data: &[1, 2, 3, 4],
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, ECHO);
    }

    #[test]
    fn rejects_bad_checksum_and_short() {
        let mut buf = ECHO;
        buf[11] ^= 1;
        let packet = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&packet), Err(ParseError::BadChecksum));
        assert!(matches!(
            Icmpv4Packet::new_checked(&ECHO[..7]),
            Err(ParseError::Truncated { min: 8, .. })
        ));
    }

    #[test]
    fn errors_roundtrip() {
        let invoking = [0x45u8, 1, 2, 3, 4, 5, 6];
        for repr in [
            Icmpv4Repr::DstUnreachable {
                code: dst_unreachable::NET,
                invoking: &invoking,
            },
            Icmpv4Repr::FragNeeded {
                mtu: 1400,
                invoking: &invoking,
            },
            Icmpv4Repr::TimeExceeded {
                code: time_exceeded::TTL,
                invoking: &invoking,
            },
            Icmpv4Repr::EchoReply {
                ident: 7,
                seq_no: 9,
                data: &invoking,
            },
        ] {
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[..]));
            let packet = Icmpv4Packet::new_checked(&buf[..]).unwrap();
            assert_eq!(Icmpv4Repr::parse(&packet).unwrap(), repr);
        }
    }

    #[test]
    fn frag_needed_wire_format() {
        // RFC 1191 section 4: type 3, code 4, 16 unused bits, next-hop MTU.
        let repr = Icmpv4Repr::FragNeeded {
            mtu: 1400,
            invoking: &[],
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[..]));
        assert_eq!(&buf[..2], [3, 4]);
        assert_eq!(&buf[4..], [0, 0, 0x05, 0x78]);
    }

    #[test]
    fn error_types() {
        for t in [3u8, 4, 5, 11, 12] {
            assert!(is_error(t), "{t}");
        }
        for t in [0u8, 8, 9, 10, 13, 14] {
            assert!(!is_error(t), "{t}");
        }
    }

    #[test]
    fn unknown_type() {
        let mut buf = [13u8, 0, 0, 0, 0, 0, 0, 0];
        Icmpv4Packet::new_unchecked(&mut buf[..]).fill_checksum();
        let packet = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            Icmpv4Repr::parse(&packet),
            Err(ParseError::UnknownIcmpType(13))
        );
    }
}
