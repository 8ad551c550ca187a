//! Sub-TLVs (RFC 8966 §4.4): TLV framing inside the trailing bytes of a TLV.
//!
//! Type 0 is Pad1, 1 PadN, 2 Diversity (an old babeld extension), 3 the RTT
//! Timestamp (RFC 9616). Bit 0x80 marks a *mandatory* sub-TLV: a TLV that
//! carries a mandatory sub-TLV we do not understand must be ignored as a
//! whole; unknown non-mandatory ones are skipped.
//!
//! Two of ours, in the range RFC 8966 §6 leaves for experiments (112-126,
//! not mandatory, so other implementations skip them): the Origin Proof of
//! an Update (112), opaque bytes by which the caller proves who originated
//! the route, and Proof Wanted in a Route Request (113, empty), which asks
//! for the answer to carry its Origin Proof.

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
    /// Origin Proof of an Update (ours; experimental range, not
    /// mandatory).
    pub const ORIGIN_PROOF: u8 = 112;
    /// Proof Wanted in a Route Request (ours; experimental range, not
    /// mandatory, empty).
    pub const PROOF_WANTED: u8 = 113;
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
            subtype::PAD1
                | subtype::PADN
                | subtype::DIVERSITY
                | subtype::TIMESTAMP
                | subtype::ORIGIN_PROOF
                | subtype::PROOF_WANTED
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

/// What the sub-TLVs of one TLV carried that the codec uses (the first of
/// each kind).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Found<'a> {
    /// The value of a Timestamp sub-TLV.
    pub(crate) timestamp: Option<&'a [u8]>,
    /// The value of an Origin Proof sub-TLV.
    pub(crate) proof: Option<&'a [u8]>,
    /// A Proof Wanted sub-TLV was there.
    pub(crate) proof_wanted: bool,
}

/// Checks the sub-TLVs of a TLV: an overrun or an unknown mandatory one is
/// an error (the TLV must be ignored). Returns the value of the first
/// Timestamp sub-TLV, if any.
#[inline]
pub(crate) fn scan(tlv: TlvType, bytes: &[u8]) -> Result<Option<&[u8]>, ParseError> {
    scan_all(tlv, bytes).map(|f| f.timestamp)
}

/// [`scan`], returning every sub-TLV the codec uses.
#[inline]
pub(crate) fn scan_all(tlv: TlvType, bytes: &[u8]) -> Result<Found<'_>, ParseError> {
    let mut found = Found::default();
    for sub in SubTlvIter::new(tlv, bytes) {
        let sub = sub?;
        match sub.kind {
            subtype::TIMESTAMP => found.timestamp = found.timestamp.or(Some(sub.value)),
            subtype::ORIGIN_PROOF => found.proof = found.proof.or(Some(sub.value)),
            subtype::PROOF_WANTED => found.proof_wanted = true,
            _ if sub.is_mandatory() && !sub.is_known() => {
                return Err(ParseError::UnknownMandatorySubTlv {
                    tlv,
                    subtype: sub.kind,
                });
            }
            _ => {}
        }
    }
    Ok(found)
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

/// Size of an Origin Proof sub-TLV carrying `proof`.
pub(crate) const fn proof_len(proof: &[u8]) -> usize {
    2 + proof.len()
}

/// Writes an Origin Proof sub-TLV; `buf` is [`proof_len`] long and the
/// proof at most [`super::OriginProof::MAX_LEN`] bytes.
pub(crate) fn emit_proof(buf: &mut [u8], proof: &[u8]) {
    buf[0] = subtype::ORIGIN_PROOF;
    buf[1] = u8::try_from(proof.len()).unwrap_or(u8::MAX);
    buf[2..2 + proof.len()].copy_from_slice(proof);
}

/// Size of a Proof Wanted sub-TLV.
pub(crate) const PROOF_WANTED_LEN: usize = 2;

/// Writes a Proof Wanted sub-TLV; `buf` is [`PROOF_WANTED_LEN`] long.
pub(crate) fn emit_proof_wanted(buf: &mut [u8]) {
    buf[0] = subtype::PROOF_WANTED;
    buf[1] = 0;
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
    fn proofs_are_found_and_not_mandatory() {
        // PadN, Origin Proof (3 bytes), Proof Wanted, a second proof.
        let bytes = [1u8, 0, 112, 3, 7, 8, 9, 113, 0, 112, 1, 1];
        let f = scan_all(TlvType::Update, &bytes).unwrap();
        assert_eq!(f.proof, Some(&[7u8, 8, 9][..]));
        assert!(f.proof_wanted);
        assert_eq!(f.timestamp, None);
        let mut buf = [0u8; 5];
        emit_proof(&mut buf, &[7, 8, 9]);
        assert_eq!(buf, bytes[2..7]);
        let mut buf = [0u8; PROOF_WANTED_LEN];
        emit_proof_wanted(&mut buf);
        assert_eq!(buf, [113, 0]);
        const {
            assert!(
                subtype::ORIGIN_PROOF & MANDATORY == 0 && subtype::PROOF_WANTED & MANDATORY == 0
            )
        };
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
