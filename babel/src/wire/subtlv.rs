//! Sub-TLVs (RFC 8966 §4.4): TLV framing inside the trailing bytes of a TLV.
//!
//! Type 0 is Pad1, 1 PadN, 2 Diversity (an old babeld extension), 3 the RTT
//! Timestamp (RFC 9616). Bit 0x80 marks a *mandatory* sub-TLV: a TLV that
//! carries a mandatory sub-TLV we do not understand must be ignored as a
//! whole; unknown non-mandatory ones are skipped.

use super::{ParseError, TlvType, be32};

/// Sub-TLV type codes.
pub mod subtype {
    /// One byte of padding.
    pub const PAD1: u8 = 0;
    /// N bytes of padding.
    pub const PADN: u8 = 1;
    /// Diversity (channels), babeld before 1.13.
    pub const DIVERSITY: u8 = 2;
    /// RTT timestamp(s), RFC 9616.
    pub const TIMESTAMP: u8 = 3;
    /// Source prefix (RFC 9079), mandatory; we do not do source-specific
    /// routing, so a TLV carrying it is ignored.
    pub const SOURCE_PREFIX: u8 = 128;
}

/// The mandatory bit of a sub-TLV type.
pub const MANDATORY: u8 = 0x80;

/// One sub-TLV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubTlv<'a> {
    /// The type code.
    pub kind: u8,
    /// The value (empty for Pad1).
    pub value: &'a [u8],
}

impl SubTlv<'_> {
    /// True when the mandatory bit is set.
    pub fn is_mandatory(&self) -> bool {
        self.kind & MANDATORY != 0
    }

    /// True for the types this codec understands.
    pub fn is_known(&self) -> bool {
        matches!(
            self.kind,
            subtype::PAD1 | subtype::PADN | subtype::DIVERSITY | subtype::TIMESTAMP
        )
    }
}

/// Walks the sub-TLVs of a TLV; yields `Err(SubTlvOverrun)` once and stops
/// if one overruns the TLV.
#[derive(Clone, Debug)]
pub struct SubTlvIter<'a> {
    tlv: TlvType,
    rest: &'a [u8],
}

impl<'a> SubTlvIter<'a> {
    /// The sub-TLVs in `bytes`, the trailing bytes of a TLV of type `tlv`.
    pub fn new(tlv: TlvType, bytes: &'a [u8]) -> Self {
        SubTlvIter { tlv, rest: bytes }
    }
}

impl<'a> Iterator for SubTlvIter<'a> {
    type Item = Result<SubTlv<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&kind, after) = self.rest.split_first()?;
        if kind == subtype::PAD1 {
            self.rest = after;
            return Some(Ok(SubTlv { kind, value: &[] }));
        }
        let parsed = after.split_first().and_then(|(&len, value)| {
            let len = usize::from(len);
            (value.len() >= len).then(|| value.split_at(len))
        });
        match parsed {
            Some((value, rest)) => {
                self.rest = rest;
                Some(Ok(SubTlv { kind, value }))
            }
            None => {
                self.rest = &[];
                Some(Err(ParseError::SubTlvOverrun { tlv: self.tlv }))
            }
        }
    }
}

/// Checks the sub-TLVs of a TLV: an overrun or an unknown mandatory one is
/// an error (the TLV must be ignored). Returns the value of the first
/// Timestamp sub-TLV, if any.
#[inline]
pub(crate) fn scan(tlv: TlvType, bytes: &[u8]) -> Result<Option<&[u8]>, ParseError> {
    let mut timestamp = None;
    for sub in SubTlvIter::new(tlv, bytes) {
        let sub = sub?;
        if sub.kind == subtype::TIMESTAMP {
            timestamp = timestamp.or(Some(sub.value));
        } else if sub.is_mandatory() && !sub.is_known() {
            return Err(ParseError::UnknownMandatorySubTlv {
                tlv,
                subtype: sub.kind,
            });
        }
    }
    Ok(timestamp)
}

/// Reads `N` timestamps from a Timestamp sub-TLV value; a short one is
/// ignored (RFC 9616: keep the TLV, drop the timestamp).
pub(crate) fn timestamps<const N: usize>(value: Option<&[u8]>) -> Option<[u32; N]> {
    let value = value?;
    if value.len() < 4 * N {
        return None;
    }
    let mut out = [0u32; N];
    for (i, t) in out.iter_mut().enumerate() {
        *t = be32(&value[4 * i..]);
    }
    Some(out)
}

/// Size of a Timestamp sub-TLV carrying `n` timestamps.
pub(crate) const fn timestamp_len(n: usize) -> usize {
    2 + 4 * n
}

/// Writes a Timestamp sub-TLV; `buf` is [`timestamp_len`] long.
pub(crate) fn emit_timestamp(buf: &mut [u8], stamps: &[u32]) {
    buf[0] = subtype::TIMESTAMP;
    // At most two stamps: the length always fits.
    buf[1] = (4 * stamps.len()) as u8;
    for (i, t) in stamps.iter().enumerate() {
        buf[2 + 4 * i..6 + 4 * i].copy_from_slice(&t.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_pads_known_and_unknown() {
        let bytes = [0u8, 1, 1, 0, 2, 1, 6, 3, 4, 0, 0, 0, 9, 0x42, 0];
        let subs: Vec<_> = SubTlvIter::new(TlvType::Update, &bytes)
            .collect::<Result<_, _>>()
            .unwrap();
        let kinds: Vec<u8> = subs.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [0, 1, 2, 3, 0x42]);
        assert_eq!(subs[3].value, &[0, 0, 0, 9]);
        assert_eq!(scan(TlvType::Update, &bytes), Ok(Some(&[0u8, 0, 0, 9][..])));
    }

    #[test]
    fn unknown_mandatory_is_an_error() {
        let bytes = [1u8, 0, 0x80, 1, 7];
        assert_eq!(
            scan(TlvType::Hello, &bytes),
            Err(ParseError::UnknownMandatorySubTlv {
                tlv: TlvType::Hello,
                subtype: 0x80
            })
        );
        // The same type without the mandatory bit is skipped.
        assert_eq!(scan(TlvType::Hello, &[0x7f, 1, 7]), Ok(None));
    }

    #[test]
    fn overrun_is_an_error() {
        assert_eq!(
            scan(TlvType::Ihu, &[3, 8, 0, 0, 0, 1]),
            Err(ParseError::SubTlvOverrun { tlv: TlvType::Ihu })
        );
        // A lone type byte (not Pad1) has no length: overrun.
        assert_eq!(
            scan(TlvType::Ihu, &[1]),
            Err(ParseError::SubTlvOverrun { tlv: TlvType::Ihu })
        );
    }

    #[test]
    fn short_timestamps_are_ignored() {
        assert_eq!(timestamps::<1>(Some(&[0, 0, 1])), None);
        assert_eq!(timestamps::<1>(Some(&[0, 0, 1, 0])), Some([256]));
        assert_eq!(timestamps::<2>(Some(&[0, 0, 0, 1])), None);
        assert_eq!(
            timestamps::<2>(Some(&[0, 0, 0, 1, 0, 0, 0, 2])),
            Some([1, 2])
        );
    }
}
