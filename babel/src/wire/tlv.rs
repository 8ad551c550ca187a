//! The TLV framing of a Babel packet body (RFC 8966 §4.3).
//!
//! Every TLV is `type u8 | length u8 | value[length]`, except Pad1, which is
//! a lone zero byte. [`Tlv`] is a zero-copy view over one TLV; [`TlvIter`]
//! walks a body (or a trailer) and always advances by the TLV's full size,
//! so a malformed value can never make it loop or read past the end.

use std::fmt;

use super::ParseError;

/// The type of a TLV. Codes we do not know stay available as `Unknown(u8)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlvType {
    /// 0: a single byte of padding.
    Pad1,
    /// 1: N bytes of padding.
    PadN,
    /// 2: Acknowledgment Request.
    AckRequest,
    /// 3: Acknowledgment.
    Ack,
    /// 4: Hello.
    Hello,
    /// 5: I Heard You.
    Ihu,
    /// 6: Router-Id (applies to the following Updates).
    RouterId,
    /// 7: Next Hop (applies to the following Updates of its family).
    NextHop,
    /// 8: Update.
    Update,
    /// 9: Route Request.
    RouteRequest,
    /// 10: Seqno Request.
    SeqnoRequest,
    /// 11: timestamp/packet counter of RFC 7298 (obsolete).
    TsPc,
    /// 12: HMAC of RFC 7298 (obsolete).
    Hmac,
    /// 13: source-specific Update of an early draft (obsolete).
    SourceSpecificUpdate,
    /// 14: source-specific Route Request of an early draft (obsolete).
    SourceSpecificRequest,
    /// 15: source-specific Seqno Request of an early draft (obsolete).
    SourceSpecificSeqnoRequest,
    /// 16: MAC (RFC 8967), normally in the trailer.
    Mac,
    /// 17: Packet Counter (RFC 8967).
    Pc,
    /// 18: Challenge Request (RFC 8967).
    ChallengeRequest,
    /// 19: Challenge Reply (RFC 8967).
    ChallengeReply,
    /// Any other code.
    Unknown(u8),
}

impl From<u8> for TlvType {
    fn from(code: u8) -> Self {
        match code {
            0 => TlvType::Pad1,
            1 => TlvType::PadN,
            2 => TlvType::AckRequest,
            3 => TlvType::Ack,
            4 => TlvType::Hello,
            5 => TlvType::Ihu,
            6 => TlvType::RouterId,
            7 => TlvType::NextHop,
            8 => TlvType::Update,
            9 => TlvType::RouteRequest,
            10 => TlvType::SeqnoRequest,
            11 => TlvType::TsPc,
            12 => TlvType::Hmac,
            13 => TlvType::SourceSpecificUpdate,
            14 => TlvType::SourceSpecificRequest,
            15 => TlvType::SourceSpecificSeqnoRequest,
            16 => TlvType::Mac,
            17 => TlvType::Pc,
            18 => TlvType::ChallengeRequest,
            19 => TlvType::ChallengeReply,
            other => TlvType::Unknown(other),
        }
    }
}

impl From<TlvType> for u8 {
    fn from(kind: TlvType) -> u8 {
        match kind {
            TlvType::Pad1 => 0,
            TlvType::PadN => 1,
            TlvType::AckRequest => 2,
            TlvType::Ack => 3,
            TlvType::Hello => 4,
            TlvType::Ihu => 5,
            TlvType::RouterId => 6,
            TlvType::NextHop => 7,
            TlvType::Update => 8,
            TlvType::RouteRequest => 9,
            TlvType::SeqnoRequest => 10,
            TlvType::TsPc => 11,
            TlvType::Hmac => 12,
            TlvType::SourceSpecificUpdate => 13,
            TlvType::SourceSpecificRequest => 14,
            TlvType::SourceSpecificSeqnoRequest => 15,
            TlvType::Mac => 16,
            TlvType::Pc => 17,
            TlvType::ChallengeRequest => 18,
            TlvType::ChallengeReply => 19,
            TlvType::Unknown(code) => code,
        }
    }
}

impl TlvType {
    /// A short stable name (used by `babel-dump`'s JSON output).
    pub fn name(self) -> &'static str {
        match self {
            TlvType::Pad1 => "pad1",
            TlvType::PadN => "padn",
            TlvType::AckRequest => "ack-request",
            TlvType::Ack => "ack",
            TlvType::Hello => "hello",
            TlvType::Ihu => "ihu",
            TlvType::RouterId => "router-id",
            TlvType::NextHop => "next-hop",
            TlvType::Update => "update",
            TlvType::RouteRequest => "route-request",
            TlvType::SeqnoRequest => "seqno-request",
            TlvType::TsPc => "ts-pc",
            TlvType::Hmac => "hmac",
            TlvType::SourceSpecificUpdate => "ss-update",
            TlvType::SourceSpecificRequest => "ss-request",
            TlvType::SourceSpecificSeqnoRequest => "ss-seqno-request",
            TlvType::Mac => "mac",
            TlvType::Pc => "pc",
            TlvType::ChallengeRequest => "challenge-request",
            TlvType::ChallengeReply => "challenge-reply",
            TlvType::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for TlvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlvType::Unknown(code) => write!(f, "unknown TLV type {code}"),
            other => f.write_str(other.name()),
        }
    }
}

/// A zero-copy view over one TLV at the start of `buffer`.
///
/// Contract (as in smoltcp): after [`Tlv::new_checked`] or a successful
/// [`Tlv::check_len`], no accessor panics. The buffer may extend past the
/// TLV; [`Tlv::total_len`] says where it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<T: AsRef<[u8]>> {
    buffer: T,
}

/// Size of the `type | length` header of every TLV but Pad1.
pub const TLV_HEADER_LEN: usize = 2;

impl<T: AsRef<[u8]>> Tlv<T> {
    /// Wraps `buffer` without checking it; accessors may panic until
    /// [`Tlv::check_len`] has succeeded.
    pub const fn new_unchecked(buffer: T) -> Self {
        Tlv { buffer }
    }

    /// Wraps `buffer` and checks that it holds a whole TLV.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let tlv = Self::new_unchecked(buffer);
        tlv.check_len()?;
        Ok(tlv)
    }

    /// Checks that the buffer holds the type, the length and the whole value.
    pub fn check_len(&self) -> Result<(), ParseError> {
        let buf = self.buffer.as_ref();
        let Some(&code) = buf.first() else {
            return Err(ParseError::Truncated { need: 1, have: 0 });
        };
        if code == 0 {
            return Ok(());
        }
        let need = match buf.get(1) {
            Some(&len) => TLV_HEADER_LEN + usize::from(len),
            None => TLV_HEADER_LEN,
        };
        if buf.len() < need {
            return Err(ParseError::TlvOverrun {
                tlv: TlvType::from(code),
                need,
                have: buf.len(),
            });
        }
        Ok(())
    }

    /// The TLV type.
    pub fn kind(&self) -> TlvType {
        TlvType::from(self.buffer.as_ref()[0])
    }

    /// The length of the value (0 for Pad1).
    pub fn value_len(&self) -> usize {
        let buf = self.buffer.as_ref();
        if buf[0] == 0 { 0 } else { usize::from(buf[1]) }
    }

    /// The size of the whole TLV, header included (1 for Pad1).
    pub fn total_len(&self) -> usize {
        if self.buffer.as_ref()[0] == 0 {
            1
        } else {
            TLV_HEADER_LEN + self.value_len()
        }
    }

    /// The value (empty for Pad1).
    pub fn value(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        if buf[0] == 0 {
            &[]
        } else {
            &buf[TLV_HEADER_LEN..TLV_HEADER_LEN + usize::from(buf[1])]
        }
    }

    /// The whole TLV, header included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.total_len()]
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<'a> Tlv<&'a [u8]> {
    /// The value, borrowed for as long as the underlying buffer.
    pub fn value_bytes(&self) -> &'a [u8] {
        let buf: &'a [u8] = self.buffer;
        if buf[0] == 0 {
            &[]
        } else {
            &buf[TLV_HEADER_LEN..TLV_HEADER_LEN + usize::from(buf[1])]
        }
    }

    /// The whole TLV, header included, borrowed for as long as the buffer.
    pub fn tlv_bytes(&self) -> &'a [u8] {
        let buf: &'a [u8] = self.buffer;
        &buf[..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Tlv<T> {
    /// Writes the type and value length; the buffer must hold
    /// `TLV_HEADER_LEN + len` bytes.
    pub fn set_header(&mut self, kind: TlvType, len: u8) {
        let buf = self.buffer.as_mut();
        buf[0] = kind.into();
        buf[1] = len;
    }

    /// The value, for writing (after [`Tlv::set_header`]).
    pub fn value_mut(&mut self) -> &mut [u8] {
        let buf = self.buffer.as_mut();
        let len = usize::from(buf[1]);
        &mut buf[TLV_HEADER_LEN..TLV_HEADER_LEN + len]
    }
}

/// Walks the TLVs of a packet body or trailer.
///
/// Yields `Err(TlvOverrun)` once if a TLV announces more bytes than remain,
/// then stops: nothing after it can be delimited.
#[derive(Clone, Debug)]
pub struct TlvIter<'a> {
    rest: &'a [u8],
}

impl<'a> TlvIter<'a> {
    /// An iterator over the TLVs of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        TlvIter { rest: bytes }
    }

    /// The bytes not yet consumed.
    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<&'a [u8]>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match Tlv::new_checked(self.rest) {
            Ok(tlv) => {
                let (this, rest) = self.rest.split_at(tlv.total_len());
                self.rest = rest;
                Some(Ok(Tlv::new_unchecked(this)))
            }
            Err(err) => {
                self.rest = &[];
                Some(Err(err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_codes_round_trip() {
        for code in 0..=255u8 {
            assert_eq!(u8::from(TlvType::from(code)), code);
        }
        assert_eq!(TlvType::from(42), TlvType::Unknown(42));
        assert_eq!(TlvType::from(19), TlvType::ChallengeReply);
    }

    #[test]
    fn iter_pads_and_values() {
        // Pad1, PadN(2), Hello-shaped TLV with a 6-byte value.
        let bytes = [0u8, 1, 2, 0, 0, 4, 6, 0, 0, 0, 1, 1, 144];
        let tlvs: Vec<_> = TlvIter::new(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(tlvs.len(), 3);
        assert_eq!(tlvs[0].kind(), TlvType::Pad1);
        assert_eq!(tlvs[0].total_len(), 1);
        assert_eq!(tlvs[0].value(), &[] as &[u8]);
        assert_eq!(tlvs[1].kind(), TlvType::PadN);
        assert_eq!(tlvs[1].value(), &[0, 0]);
        assert_eq!(tlvs[2].kind(), TlvType::Hello);
        assert_eq!(tlvs[2].value(), &[0, 0, 0, 1, 1, 144]);
    }

    #[test]
    fn overrun_ends_iteration() {
        // An unknown TLV of length 5 with only 2 value bytes, then garbage.
        let bytes = [0u8, 200, 5, 1, 2];
        let mut it = TlvIter::new(&bytes);
        assert!(matches!(it.next(), Some(Ok(t)) if t.kind() == TlvType::Pad1));
        assert_eq!(
            it.next(),
            Some(Err(ParseError::TlvOverrun {
                tlv: TlvType::Unknown(200),
                need: 7,
                have: 4
            }))
        );
        assert_eq!(it.next(), None);
    }

    #[test]
    fn lone_type_byte_is_an_overrun() {
        let bytes = [4u8];
        let mut it = TlvIter::new(&bytes);
        assert!(matches!(
            it.next(),
            Some(Err(ParseError::TlvOverrun {
                need: 2,
                have: 1,
                ..
            }))
        ));
        assert_eq!(it.next(), None);
    }

    #[test]
    fn emit_header() {
        let mut buf = [0u8; 5];
        let mut tlv = Tlv::new_unchecked(&mut buf[..]);
        tlv.set_header(TlvType::Ack, 3);
        tlv.value_mut().copy_from_slice(&[7, 8, 9]);
        assert_eq!(buf, [3, 3, 7, 8, 9]);
    }
}
