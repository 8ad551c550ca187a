//! Frames of a TCP tunnel, inside its TLS stream: a type byte, a 16-bit
//! big-endian payload length, the payload. TCP gives no message
//! boundaries, so every packet, Babel packet and control message is one
//! frame; the receiver cuts the stream into frames with
//! [`Frame::check_len`] and a bounded buffer.
//!
//! ```text
//!  0        1        2        3
//! +--------+--------+--------+-----------
//! |  type  |  length (BE)    | payload...
//! +--------+--------+--------+-----------
//! ```
//!
//! Types: an IP packet, a Babel packet, a control message ([`Control`]
//! without its stream length prefix), a keep-alive and its answer (the
//! answer is what makes a silent peer heard and gives an RTT sample, as a
//! QUIC ping's ACK does), and a close with a code and a reason (QUIC's
//! `CONNECTION_CLOSE`: a refusal is read back from it).
//!
//! [`Control`]: crate::transport::control::Control

/// Bytes before the payload.
pub const HEADER_LEN: usize = 3;
/// The largest payload a frame carries.
pub const MAX_PAYLOAD: usize = u16::MAX as usize;
/// Longest close reason sent; a longer one is cut.
pub const MAX_REASON: usize = 256;

/// Frame types.
pub mod kind {
    /// An IP packet (IPv6 or IPv4).
    pub const PACKET: u8 = 1;
    /// A Babel packet.
    pub const BABEL: u8 = 2;
    /// A control message.
    pub const CONTROL: u8 = 3;
    /// A keep-alive: the peer answers with [`PONG`].
    pub const PING: u8 = 4;
    /// The answer to a keep-alive.
    pub const PONG: u8 = 5;
    /// The sender closes the tunnel: a 32-bit code, then a UTF-8 reason.
    pub const CLOSE: u8 = 6;
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the header, or than the length it gives.
    #[error("truncated frame: {have} bytes of {need}")]
    Truncated {
        /// Bytes there.
        have: usize,
        /// Bytes the frame needs.
        need: usize,
    },
    /// A type this version does not know.
    #[error("unknown frame type {0}")]
    UnknownKind(u8),
    /// A payload that does not fit its type (empty packet, non-empty
    /// keep-alive, close without its code).
    #[error("frame type {kind} with a {len}-byte payload")]
    BadPayload {
        /// The type.
        kind: u8,
        /// The payload's length.
        len: usize,
    },
    /// A payload above [`MAX_PAYLOAD`] (emit side).
    #[error("payload of {0} bytes above {MAX_PAYLOAD}")]
    TooLong(usize),
}

/// A view of one frame at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// A view without checks; accessors may panic until
    /// [`Frame::check_len`] passed.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view whose header and payload are all there.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Checks that the header and the whole payload are in the buffer.
    pub fn check_len(&self) -> Result<(), WireError> {
        let have = self.buffer.as_ref().len();
        if have < HEADER_LEN {
            return Err(WireError::Truncated {
                have,
                need: HEADER_LEN,
            });
        }
        let need = self.total_len();
        if have < need {
            return Err(WireError::Truncated { have, need });
        }
        Ok(())
    }

    /// The frame type.
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The payload length the header gives.
    pub fn payload_len(&self) -> usize {
        let b = self.buffer.as_ref();
        usize::from(u16::from_be_bytes([b[1], b[2]]))
    }

    /// Header and payload.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.total_len()]
    }

    /// The buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the type.
    pub fn set_kind(&mut self, kind: u8) {
        self.buffer.as_mut()[0] = kind;
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[1..3].copy_from_slice(&len.to_be_bytes());
    }

    /// The payload, to write.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr<'a> {
    /// An IP packet.
    Packet(&'a [u8]),
    /// A Babel packet.
    Babel(&'a [u8]),
    /// A control message (type byte and body).
    Control(&'a [u8]),
    /// A keep-alive.
    Ping,
    /// Its answer.
    Pong,
    /// A close.
    Close {
        /// Its code ([`crate::transport::control::close`]).
        code: u32,
        /// Its reason (UTF-8 from our nodes; not trusted to be).
        reason: &'a [u8],
    },
}

impl<'a> Repr<'a> {
    /// Reads a checked frame.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(frame: &Frame<&'a T>) -> Result<Self, WireError> {
        frame.check_len()?;
        let buffer: &'a T = frame.buffer;
        let payload = &buffer.as_ref()[HEADER_LEN..frame.total_len()];
        let bad = || WireError::BadPayload {
            kind: frame.kind(),
            len: payload.len(),
        };
        Ok(match frame.kind() {
            kind::PACKET if !payload.is_empty() => Repr::Packet(payload),
            kind::BABEL if !payload.is_empty() => Repr::Babel(payload),
            kind::CONTROL if !payload.is_empty() => Repr::Control(payload),
            kind::PING if payload.is_empty() => Repr::Ping,
            kind::PONG if payload.is_empty() => Repr::Pong,
            kind::CLOSE => {
                let (code, reason) = payload.split_first_chunk::<4>().ok_or_else(bad)?;
                Repr::Close {
                    code: u32::from_be_bytes(*code),
                    reason,
                }
            }
            kind::PACKET | kind::BABEL | kind::CONTROL | kind::PING | kind::PONG => {
                return Err(bad());
            }
            other => return Err(WireError::UnknownKind(other)),
        })
    }

    /// The frame's type.
    pub fn kind(&self) -> u8 {
        match self {
            Repr::Packet(_) => kind::PACKET,
            Repr::Babel(_) => kind::BABEL,
            Repr::Control(_) => kind::CONTROL,
            Repr::Ping => kind::PING,
            Repr::Pong => kind::PONG,
            Repr::Close { .. } => kind::CLOSE,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Repr::Packet(p) | Repr::Babel(p) | Repr::Control(p) => p.len(),
            Repr::Ping | Repr::Pong => 0,
            Repr::Close { reason, .. } => 4 + reason.len(),
        }
    }

    /// Bytes [`Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// Writes the frame at the front of `frame`'s buffer (at least
    /// [`Repr::buffer_len`] bytes).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        frame: &mut Frame<T>,
    ) -> Result<(), WireError> {
        let len = self.payload_len();
        let len16 = u16::try_from(len).map_err(|_| WireError::TooLong(len))?;
        let have = frame.buffer.as_ref().len();
        if have < HEADER_LEN + len {
            return Err(WireError::Truncated {
                have,
                need: HEADER_LEN + len,
            });
        }
        frame.set_kind(self.kind());
        frame.set_payload_len(len16);
        let out = frame.payload_mut();
        match self {
            Repr::Packet(p) | Repr::Babel(p) | Repr::Control(p) => out.copy_from_slice(p),
            Repr::Ping | Repr::Pong => {}
            Repr::Close { code, reason } => {
                out[..4].copy_from_slice(&code.to_be_bytes());
                out[4..].copy_from_slice(reason);
            }
        }
        Ok(())
    }

    /// Appends the frame to `out`.
    pub fn emit_to(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let start = out.len();
        out.resize(start + self.buffer_len(), 0);
        let r = self.emit(&mut Frame::new_unchecked(&mut out[start..]));
        if r.is_err() {
            out.truncate(start);
        }
        r
    }
}

/// Fuzzing entry: cut `data` into frames; every frame that parses is
/// emitted again, identical, and parses to the same thing.
pub fn fuzz(mut data: &[u8]) {
    while let Ok(frame) = Frame::new_checked(data) {
        let total = frame.total_len();
        let bytes = &data[..total];
        let view = Frame::new_unchecked(bytes);
        if let Ok(repr) = Repr::parse(&view) {
            assert_eq!(repr.buffer_len(), total);
            let mut out = Vec::new();
            repr.emit_to(&mut out).expect("a parsed frame emits");
            assert_eq!(&out[..], bytes);
            let again = Frame::new_unchecked(&out[..]);
            assert_eq!(Repr::parse(&again), Ok(repr));
        }
        data = &data[total..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(r: Repr<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        r.emit_to(&mut out).unwrap();
        let f = Frame::new_checked(&out[..]).unwrap();
        assert_eq!(Repr::parse(&f).unwrap(), r);
        out
    }

    #[test]
    fn every_type_roundtrips() {
        assert_eq!(
            roundtrip(Repr::Packet(&[0x60, 1, 2])),
            [1, 0, 3, 0x60, 1, 2]
        );
        roundtrip(Repr::Babel(&[42, 2, 0, 0]));
        roundtrip(Repr::Control(&[4]));
        assert_eq!(roundtrip(Repr::Ping), [4, 0, 0]);
        roundtrip(Repr::Pong);
        assert_eq!(
            roundtrip(Repr::Close {
                code: 7,
                reason: b"bye"
            }),
            [6, 0, 7, 0, 0, 0, 7, b'b', b'y', b'e']
        );
    }

    #[test]
    fn short_buffers_are_truncated() {
        assert_eq!(
            Frame::new_checked(&[1u8, 0][..]).unwrap_err(),
            WireError::Truncated { have: 2, need: 3 }
        );
        assert_eq!(
            Frame::new_checked(&[1u8, 0, 4, 1, 2][..]).unwrap_err(),
            WireError::Truncated { have: 5, need: 7 }
        );
    }

    #[test]
    fn bad_payloads_and_types_are_refused() {
        fn parse(b: &[u8]) -> Result<Repr<'_>, WireError> {
            Repr::parse(&Frame::new_unchecked(b))
        }
        assert_eq!(
            parse(&[1, 0, 0]),
            Err(WireError::BadPayload { kind: 1, len: 0 })
        );
        assert_eq!(
            parse(&[4, 0, 1, 9]),
            Err(WireError::BadPayload { kind: 4, len: 1 })
        );
        assert_eq!(
            parse(&[6, 0, 3, 0, 0, 0]),
            Err(WireError::BadPayload { kind: 6, len: 3 })
        );
        assert_eq!(parse(&[0, 0, 0]), Err(WireError::UnknownKind(0)));
        assert_eq!(parse(&[200, 0, 1, 1]), Err(WireError::UnknownKind(200)));
    }

    #[test]
    fn oversized_payloads_are_not_emitted() {
        let big = vec![0u8; MAX_PAYLOAD + 1];
        let mut out = vec![9];
        assert_eq!(
            Repr::Packet(&big).emit_to(&mut out),
            Err(WireError::TooLong(MAX_PAYLOAD + 1))
        );
        assert_eq!(out, [9]);
    }

    #[test]
    fn fuzz_entry_takes_garbage() {
        fuzz(&[1, 0, 1, 0x60, 4, 0, 0, 6, 0, 4, 0, 0, 0, 1, 9, 9]);
        fuzz(&[]);
        fuzz(&[255; 64]);
    }
}
