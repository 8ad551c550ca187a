//! Datagram demux by first byte (docs/design.md), and the registry of
//! our frame type codes.
//!
//! Every QUIC datagram between two nodes is one of:
//! - an IPv6 packet, sent bare: its first byte is `0x6_` (version 6);
//! - an IPv4 packet, sent bare: its first byte is `0x4_` (version 4);
//! - a Babel packet, sent bare: its first byte is the Babel magic, 42
//!   (RFC 8966 section 4.2);
//! - one of our control frames: `[code][body]`, where `code` is any other
//!   byte. [`code::FRAGMENT`] is the fragment framing of
//!   [`crate::fragment`]; [`code::PEER_EXCHANGE`] is reserved for the node's
//!   peer announcements; the others are free for the node
//!   ([`Frame::Control`]) and must be registered in [`code`].
//!
//! IP packets and Babel need no header of ours, so the common case costs
//! no byte and no copy.

/// The registry of first bytes. Add new codes here, never reuse one.
pub mod code {
    /// Babel magic number (RFC 8966 section 4.2): a Babel packet.
    pub const BABEL: u8 = 42;
    /// One fragment of a datagram too big for the tunnel
    /// ([`crate::fragment`]).
    pub const FRAGMENT: u8 = 0x01;
    /// A signed peer announcement (peer exchange, owned by the node).
    pub const PEER_EXCHANGE: u8 = 0x02;
    /// Code 0 is reserved: a zeroed buffer is never a valid frame.
    pub const RESERVED: u8 = 0x00;

    /// Is `first` the first byte of an IPv6 packet (version nibble 6)?
    #[inline]
    pub const fn is_ipv6(first: u8) -> bool {
        first >> 4 == 6
    }

    /// Is `first` the first byte of an IPv4 packet (version nibble 4)?
    #[inline]
    pub const fn is_ipv4(first: u8) -> bool {
        first >> 4 == 4
    }

    /// May `code` start a node control frame ([`super::Frame::Control`]):
    /// not IP, not Babel, not a fragment, not reserved?
    #[inline]
    pub const fn is_control(code: u8) -> bool {
        !is_ipv6(code) && !is_ipv4(code) && code != BABEL && code != FRAGMENT && code != RESERVED
    }
}

/// A classified datagram, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// An IPv6 packet (the whole datagram), not yet validated.
    Ipv6(&'a [u8]),
    /// An IPv4 packet (the whole datagram), not yet validated.
    Ipv4(&'a [u8]),
    /// A Babel packet (the whole datagram, magic included) for the engine.
    Babel(&'a [u8]),
    /// A fragment: the whole frame, for [`crate::fragment::Reassembler`].
    Fragment(&'a [u8]),
    /// Another control frame: its code and the bytes after it.
    Control {
        /// First byte.
        code: u8,
        /// The rest of the datagram.
        body: &'a [u8],
    },
}

/// Why a datagram was not classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A datagram of zero bytes.
    #[error("empty datagram")]
    Empty,
    /// The first byte is the reserved code 0.
    #[error("reserved frame code 0")]
    Reserved,
}

/// Classifies a received datagram by its first byte. Constant time, no copy.
#[inline]
pub fn demux(datagram: &[u8]) -> Result<Frame<'_>, FrameError> {
    let Some(&first) = datagram.first() else {
        return Err(FrameError::Empty);
    };
    Ok(match first {
        f if code::is_ipv6(f) => Frame::Ipv6(datagram),
        f if code::is_ipv4(f) => Frame::Ipv4(datagram),
        code::BABEL => Frame::Babel(datagram),
        code::FRAGMENT => Frame::Fragment(datagram),
        code::RESERVED => return Err(FrameError::Reserved),
        code => Frame::Control {
            code,
            body: &datagram[1..],
        },
    })
}

/// Builds a control frame `[code][body]` into `out` (cleared first).
/// Returns `false` and leaves `out` empty if `code` may not start a control
/// frame (see [`code::is_control`]).
pub fn emit_control(code: u8, body: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    if !code::is_control(code) {
        return false;
    }
    out.reserve(1 + body.len());
    out.push(code);
    out.extend_from_slice(body);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_first_byte_is_classified() {
        for first in 0..=255u8 {
            let datagram = [first, 0xaa, 0xbb];
            match demux(&datagram) {
                Ok(Frame::Ipv6(d)) => {
                    assert!((0x60..=0x6f).contains(&first));
                    assert_eq!(d, datagram);
                }
                Ok(Frame::Ipv4(d)) => {
                    assert!((0x40..=0x4f).contains(&first));
                    assert_eq!(d, datagram);
                }
                Ok(Frame::Babel(d)) => {
                    assert_eq!(first, 42);
                    assert_eq!(d, datagram);
                }
                Ok(Frame::Fragment(d)) => {
                    assert_eq!(first, code::FRAGMENT);
                    assert_eq!(d, datagram);
                }
                Ok(Frame::Control { code, body }) => {
                    assert!(code::is_control(first));
                    assert_eq!(code, first);
                    assert_eq!(body, [0xaa, 0xbb]);
                }
                Err(e) => {
                    assert_eq!(first, 0);
                    assert_eq!(e, FrameError::Reserved);
                }
            }
        }
    }

    #[test]
    fn empty() {
        assert_eq!(demux(&[]), Err(FrameError::Empty));
    }

    #[test]
    fn control_roundtrip() {
        let mut out = Vec::new();
        assert!(emit_control(code::PEER_EXCHANGE, b"hello", &mut out));
        assert_eq!(
            demux(&out),
            Ok(Frame::Control {
                code: code::PEER_EXCHANGE,
                body: b"hello"
            })
        );
        assert!(!emit_control(0x60, b"x", &mut out));
        assert!(!emit_control(0x45, b"x", &mut out));
        assert!(out.is_empty());
        assert!(!emit_control(code::BABEL, b"x", &mut out));
        assert!(!emit_control(code::RESERVED, b"x", &mut out));
        assert!(!emit_control(code::FRAGMENT, b"x", &mut out));
    }
}
