//! The Babel wire format (RFC 8966 §4, RFC 9616 timestamps, RFC 8967 TLVs
//! skipped).
//!
//! Two layers, as in smoltcp:
//! * zero-copy views over byte buffers that check lengths before any field
//!   access: [`Header`], [`Tlv`] (with [`TlvIter`]), [`SubTlvIter`]; and the
//!   per-TLV values with `parse`, `buffer_len` and `emit`: [`HelloRepr`],
//!   [`IhuRepr`], [`RouterIdRepr`], [`NextHopRepr`], [`UpdateTlv`],
//!   [`RouteRequestRepr`], [`SeqnoRequestRepr`], [`AckRequestRepr`],
//!   [`AckRepr`];
//! * plain values ([`Message`] and the `*Repr` types) produced by the
//!   stateful packet decoder and consumed by the packet builder.
//!
//! Contract used by the engine:
//! * [`parse_packet`] validates the header and returns a [`Packet`] whose
//!   [`Packet::messages`] yields one `Result<Message, ParseError>` per TLV
//!   that carries meaning. Router-Id and Next Hop TLVs are folded into the
//!   following Updates; pads are skipped; a TLV that must be ignored (unknown
//!   type, unknown mandatory sub-TLV, unknown AE, malformed body) yields an
//!   `Err` and iteration goes on, unless the error is fatal for the rest of
//!   the packet (a TLV overrunning the body), after which it ends.
//!   [`Packet::decode`] gives the same walk with every TLV, for tools.
//! * [`PacketBuilder`] appends messages until the byte budget is reached,
//!   emitting Router-Id TLVs and prefix compression as babeld does.
//!
//! Invariants: after a `new_checked`/`check_len`, no accessor panics; `emit`
//! into a buffer of `buffer_len()` bytes never panics; nothing in this module
//! panics on any input bytes (fuzzed, see `fuzz/`).
//!
//! ```
//! use std::time::Duration;
//! use re6st_babel::wire::*;
//!
//! // What the engine sends: a Hello and one Update, in one QUIC datagram.
//! let mut packet = PacketBuilder::new(1162);
//! packet.push(&Message::Hello(HelloRepr {
//!     unicast: true,
//!     seqno: 7,
//!     interval: Duration::from_secs(4),
//!     timestamp: Some(1_000_000),
//! }))?;
//! packet.push(&Message::Update(UpdateRepr {
//!     prefix: Some("fd00:1:2:3::/64".parse()?),
//!     interval: Duration::from_secs(16),
//!     seqno: 42,
//!     metric: 96,
//!     router_id: Some(RouterId([1, 2, 3, 4, 5, 6, 7, 8])),
//!     next_hop: None,
//!     proof: None,
//! }))?;
//! let bytes = packet.finish();
//!
//! // What the receiver gets back: the same messages (the Router-Id TLV is
//! // folded into the Update).
//! let messages: Vec<Message> = parse_packet(&bytes)?.messages().collect::<Result<_, _>>()?;
//! assert_eq!(messages.len(), 2);
//! assert!(matches!(&messages[1], Message::Update(u) if u.seqno == 42));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Intervals are centiseconds on the wire and [`Duration`]s everywhere else.
//! A `Duration` is rounded to the nearest centisecond, a non-zero one is at
//! least 1 cs (zero means "unscheduled" for Hellos and is invalid elsewhere),
//! and it saturates at 65535 cs (655.35 s).

mod ack;
pub(crate) mod address;
mod builder;
mod decoder;
mod hello;
mod ihu;
mod message;
mod request;
mod subtlv;
mod tlv;
mod update;

use std::time::Duration;

pub use address::Ae;
pub use builder::{BuildError, PacketBuilder};
pub use decoder::{Decoded, Decoder, Element, Messages, Packet, parse_packet};
pub use hello::UNICAST;
pub use message::*;
pub use subtlv::{MANDATORY, SubTlv, SubTlvIter, subtype};
pub use tlv::{TLV_HEADER_LEN, Tlv, TlvIter, TlvType};
pub use update::{NextHopRepr, RouterIdRepr, UpdateTlv, flags};

use thiserror::Error;

/// The first byte of every Babel packet.
pub const MAGIC: u8 = 42;
/// The only protocol version we speak (RFC 6126 and RFC 8966).
pub const VERSION: u8 = 2;
/// Size of the packet header: magic, version, body length.
pub const HEADER_LEN: usize = 4;
/// The IANA UDP port of Babel.
pub const PORT: u16 = 6696;
/// The largest packet the 16-bit body length can describe (without trailer).
pub const MAX_PACKET_LEN: usize = HEADER_LEN + u16::MAX as usize;

/// Why a packet, or one TLV of it, was rejected.
///
/// Errors about the header reject the whole packet. [`ParseError::TlvOverrun`]
/// ends the walk of the body. Every other variant names one TLV that is
/// ignored while the rest of the packet is still used. The engine only counts
/// them; `babel-dump` prints them.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The datagram is shorter than the header, or than the body length it
    /// announces (babeld clamps; BIRD and we drop).
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The magic byte is not 42.
    #[error("bad magic {0}")]
    BadMagic(u8),
    /// The version is not 2.
    #[error("unsupported version {0}")]
    BadVersion(u8),
    /// A TLV announces more bytes than remain in the body: the rest of the
    /// body cannot be delimited and is dropped.
    #[error("{tlv} overruns the body: needs {need} bytes, {have} remain")]
    TlvOverrun {
        /// The TLV's type.
        tlv: TlvType,
        /// Bytes the TLV needs, header included.
        need: usize,
        /// Bytes left in the body.
        have: usize,
    },
    /// A TLV is shorter than its fixed fields plus its address or prefix.
    #[error("{tlv} too short: length {len}, need at least {min}")]
    BadLength {
        /// The TLV's type.
        tlv: TlvType,
        /// Its value length.
        len: usize,
        /// The length its fields need.
        min: usize,
    },
    /// A TLV type we do not know: skipped.
    #[error("unknown TLV type {0}")]
    UnknownTlv(u8),
    /// A TLV we recognise but do not act on: the obsolete types 11-15, and
    /// the RFC 8967 MAC, PC and challenge TLVs (we do not run Babel-MAC).
    #[error("{0} not supported, skipped")]
    Unsupported(TlvType),
    /// An address encoding we do not know.
    #[error("{tlv} with unknown address encoding {ae}")]
    UnknownAe {
        /// The TLV's type.
        tlv: TlvType,
        /// The AE code.
        ae: u8,
    },
    /// A known address encoding that this TLV may not use (AE 0 in a Next
    /// Hop or Seqno Request, AE 3 in a prefix, AE 4 in an IHU or Next Hop).
    #[error("{tlv} may not use address encoding {ae}")]
    BadAe {
        /// The TLV's type.
        tlv: TlvType,
        /// The AE code.
        ae: u8,
    },
    /// A prefix length larger than the address (32 or 128), or non-zero for
    /// a wildcard.
    #[error("{tlv} with prefix length {plen} for address encoding {ae}")]
    BadPlen {
        /// The TLV's type.
        tlv: TlvType,
        /// The AE code.
        ae: u8,
        /// The prefix length.
        plen: u8,
    },
    /// An Update omits more bytes than its prefix has.
    #[error("update omits {omitted} bytes of a /{plen} prefix")]
    BadOmitted {
        /// The Omitted field.
        omitted: u8,
        /// The prefix length.
        plen: u8,
    },
    /// An Update omits bytes but no earlier Update of this packet set a
    /// default prefix for its address encoding.
    #[error("update omits bytes but AE {ae} has no default prefix")]
    NoDefaultPrefix {
        /// The AE code.
        ae: u8,
    },
    /// A finite Update with no router-id in force.
    #[error("finite update without a router-id")]
    MissingRouterId,
    /// A finite AE 1 Update with no IPv4 Next Hop in force. Babel runs over
    /// IPv6 here, so the sender's address cannot be its next hop (an IPv4
    /// prefix reached through an IPv6 next hop is AE 4, RFC 9229); babeld
    /// refuses it as well.
    #[error("finite IPv4 update without an IPv4 next hop")]
    MissingIpv4NextHop,
    /// A router-id that is all zeros or all ones (RFC 8966 §4.6.7); the
    /// packet's router-id is cleared.
    #[error("invalid router-id {0:02x?}")]
    BadRouterId([u8; 8]),
    /// An AE 0 Update that is not a plen-0 retraction.
    #[error("wildcard update with plen {plen} and metric {metric}")]
    BadWildcardUpdate {
        /// The prefix length.
        plen: u8,
        /// The metric.
        metric: u16,
    },
    /// An interval of zero where the RFC forbids it (IHU, Update,
    /// Acknowledgment Request).
    #[error("{0} with a zero interval")]
    ZeroInterval(TlvType),
    /// A Seqno Request with a hop count of zero.
    #[error("seqno request with hop count 0")]
    ZeroHopCount,
    /// A sub-TLV with the mandatory bit that we do not understand: the
    /// enclosing TLV is ignored (its effect on the parser state is kept).
    #[error("{tlv} with unknown mandatory sub-TLV {subtype}")]
    UnknownMandatorySubTlv {
        /// The enclosing TLV.
        tlv: TlvType,
        /// The sub-TLV type.
        subtype: u8,
    },
    /// A sub-TLV overruns its TLV: the TLV is ignored.
    #[error("{tlv} has a sub-TLV overrunning it")]
    SubTlvOverrun {
        /// The enclosing TLV.
        tlv: TlvType,
    },
}

impl ParseError {
    /// True when the error rejects the whole packet or ends the walk of its
    /// body, rather than one TLV.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ParseError::Truncated { .. }
                | ParseError::BadMagic(_)
                | ParseError::BadVersion(_)
                | ParseError::TlvOverrun { .. }
        )
    }
}

/// A zero-copy view over a packet: header, body and trailer.
///
/// After [`Header::new_checked`] no accessor panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 1;
    pub const BODY_LEN: std::ops::Range<usize> = 2..4;
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps `buffer` without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Header { buffer }
    }

    /// Wraps `buffer`, checking that it holds the header and the announced
    /// body (see [`Header::check_len`]).
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Checks the buffer holds the header and `body_len` bytes of body.
    pub fn check_len(&self) -> Result<(), ParseError> {
        let have = self.buffer.as_ref().len();
        if have < HEADER_LEN {
            return Err(ParseError::Truncated {
                need: HEADER_LEN,
                have,
            });
        }
        let need = HEADER_LEN + usize::from(self.body_len());
        if have < need {
            return Err(ParseError::Truncated { need, have });
        }
        Ok(())
    }

    /// The magic byte (42).
    pub fn magic(&self) -> u8 {
        self.buffer.as_ref()[field::MAGIC]
    }

    /// The version (2).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// The body length.
    pub fn body_len(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::BODY_LEN])
    }

    /// The body: the TLVs the packet is about.
    pub fn body(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.body_len());
        &self.buffer.as_ref()[HEADER_LEN..end]
    }

    /// The trailer: what follows the body (RFC 8967 MAC TLVs and padding).
    pub fn trailer(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.body_len());
        &self.buffer.as_ref()[end..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    /// Writes magic, version and body length.
    pub fn emit(&mut self, body_len: u16) {
        let buf = self.buffer.as_mut();
        buf[field::MAGIC] = MAGIC;
        buf[field::VERSION] = VERSION;
        buf[field::BODY_LEN].copy_from_slice(&body_len.to_be_bytes());
    }
}

/// `Err(BadLength)` unless a TLV value holds at least `min` bytes.
#[inline]
pub(crate) fn need(tlv: TlvType, value: &[u8], min: usize) -> Result<(), ParseError> {
    if value.len() < min {
        return Err(ParseError::BadLength {
            tlv,
            len: value.len(),
            min,
        });
    }
    Ok(())
}

/// Reads a big-endian u16 from the first two bytes (callers check lengths).
pub(crate) fn be16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

/// Reads a big-endian u32 from the first four bytes (callers check lengths).
pub(crate) fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// A wire interval (centiseconds) as a [`Duration`].
pub fn centis_to_duration(centis: u16) -> Duration {
    // u16 arithmetic: cheaper than Duration::from_millis' u64 division.
    Duration::new(
        u64::from(centis / 100),
        u32::from(centis % 100) * 10_000_000,
    )
}

/// A [`Duration`] as a wire interval: rounded to the nearest centisecond,
/// at least 1 when non-zero, saturating at 65535 (655.35 s).
pub fn duration_to_centis(d: Duration) -> u16 {
    if d.is_zero() {
        return 0;
    }
    // No u128 division (Duration::as_nanos): seconds and a u32 remainder.
    let secs = d.as_secs();
    if secs > u64::from(u16::MAX) / 100 + 1 {
        return u16::MAX;
    }
    let centis = secs * 100 + u64::from((d.subsec_nanos() + 5_000_000) / 10_000_000);
    u16::try_from(centis.max(1)).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_view() {
        let bytes = [42u8, 2, 0, 2, 0, 0, 16, 0];
        let h = Header::new_checked(&bytes[..]).unwrap();
        assert_eq!(h.magic(), 42);
        assert_eq!(h.version(), 2);
        assert_eq!(h.body_len(), 2);
        assert_eq!(h.body(), &[0, 0]);
        assert_eq!(h.trailer(), &[16, 0]);
    }

    #[test]
    fn header_too_short() {
        assert_eq!(
            Header::new_checked(&[42u8, 2, 0][..]),
            Err(ParseError::Truncated { need: 4, have: 3 })
        );
        assert_eq!(
            Header::new_checked(&[42u8, 2, 0, 3, 0][..]),
            Err(ParseError::Truncated { need: 7, have: 5 })
        );
    }

    #[test]
    fn header_emit() {
        let mut buf = [0u8; 4];
        Header::new_unchecked(&mut buf[..]).emit(258);
        assert_eq!(buf, [42, 2, 1, 2]);
    }

    #[test]
    fn interval_rounding() {
        assert_eq!(duration_to_centis(Duration::ZERO), 0);
        assert_eq!(duration_to_centis(Duration::from_nanos(1)), 1);
        assert_eq!(duration_to_centis(Duration::from_millis(4)), 1);
        assert_eq!(duration_to_centis(Duration::from_millis(14)), 1);
        assert_eq!(duration_to_centis(Duration::from_millis(15)), 2);
        assert_eq!(duration_to_centis(Duration::from_secs(4)), 400);
        assert_eq!(duration_to_centis(Duration::from_millis(655_350)), 65535);
        assert_eq!(duration_to_centis(Duration::from_secs(3600)), 65535);
        assert_eq!(duration_to_centis(Duration::MAX), 65535);
        assert_eq!(centis_to_duration(400), Duration::from_secs(4));
        for cs in [0u16, 1, 7, 400, 65535] {
            assert_eq!(duration_to_centis(centis_to_duration(cs)), cs);
        }
    }
}

#[cfg(test)]
mod tests_builder;
#[cfg(test)]
mod tests_decoder;
