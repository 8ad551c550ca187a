//! The Babel wire format (RFC 8966 §4, RFC 9616 timestamps).
//!
//! Two layers, as in smoltcp:
//! * views over byte buffers that check lengths before any field access;
//! * plain values ([`Message`] and the `*Repr` types) produced by the
//!   stateful packet decoder and consumed by the packet builder.
//!
//! Contract used by the engine (the signatures below are stable; the bodies
//! are filled in by the codec work):
//! * [`parse_packet`] validates the header and returns a [`Packet`] whose
//!   [`Packet::messages`] yields one `Result<Message, ParseError>` per TLV
//!   that carries meaning. Router-Id and Next Hop TLVs are folded into the
//!   following Updates; pads are skipped; a TLV that must be ignored (unknown
//!   type, unknown mandatory sub-TLV, unknown AE, malformed body) yields an
//!   `Err` and iteration goes on, unless the error is fatal for the rest of
//!   the packet (a TLV overrunning the body), after which it ends.
//! * [`PacketBuilder`] appends messages until the byte budget is reached,
//!   emitting Router-Id TLVs and prefix compression as babeld does.

mod message;

pub use message::*;

use thiserror::Error;

/// Why a packet, or one TLV of it, was rejected.
///
/// The codec work refines these variants; the engine only counts them.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The buffer is shorter than what its length fields announce.
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
}

/// A Babel packet whose header has been validated.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    body: &'a [u8],
}

/// Validates the packet header and bounds the body.
pub fn parse_packet(bytes: &[u8]) -> Result<Packet<'_>, ParseError> {
    let _ = bytes;
    todo!("filled in by the codec work")
}

impl<'a> Packet<'a> {
    /// The decoded messages, in order. See the module docs for error handling.
    pub fn messages(&self) -> Messages<'a> {
        Messages { body: self.body }
    }
}

/// Iterator over the messages of a packet; see [`Packet::messages`].
#[derive(Clone, Debug)]
pub struct Messages<'a> {
    body: &'a [u8],
}

impl Iterator for Messages<'_> {
    type Item = Result<Message, ParseError>;
    fn next(&mut self) -> Option<Self::Item> {
        let _ = self.body;
        todo!("filled in by the codec work")
    }
}

/// Why a message could not be appended to a packet.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The message does not fit in the remaining budget: send this packet
    /// and push the message into a new one.
    #[error("packet full")]
    Full,
}

/// Builds one Babel packet of at most `budget` bytes.
#[derive(Clone, Debug)]
pub struct PacketBuilder {
    budget: usize,
    buf: Vec<u8>,
}

impl PacketBuilder {
    /// An empty packet that will never exceed `budget` bytes.
    pub fn new(budget: usize) -> Self {
        PacketBuilder {
            budget,
            buf: Vec::new(),
        }
    }

    /// Appends `msg`, with whatever Router-Id or Next Hop TLV it needs.
    pub fn push(&mut self, msg: &Message) -> Result<(), BuildError> {
        let _ = (msg, self.budget);
        todo!("filled in by the codec work")
    }

    /// True when no message has been pushed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The finished packet: header, body, no trailer.
    pub fn finish(self) -> Vec<u8> {
        todo!("filled in by the codec work")
    }
}
