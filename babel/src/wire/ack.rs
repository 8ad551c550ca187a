//! Acknowledgment Request and Acknowledgment TLVs (RFC 8966 §4.6.3-4).
//!
//! Request: `reserved u16 | opaque u16 | interval u16 | sub-TLVs`;
//! Ack: `opaque u16 | sub-TLVs`. babeld never sends requests; we parse both
//! so that the engine can answer.

use super::{
    AckRepr, AckRequestRepr, ParseError, Tlv, TlvType, be16, centis_to_duration, duration_to_centis,
};
use super::{need, subtlv};

fn check(tlv: TlvType, v: &[u8], min: usize) -> Result<(), ParseError> {
    need(tlv, v, min)?;
    subtlv::scan(tlv, &v[min..]).map(|_| ())
}

impl AckRequestRepr {
    /// Parses an Acknowledgment Request TLV.
    pub fn parse(tlv: &Tlv<&[u8]>) -> Result<Self, ParseError> {
        let v = tlv.value();
        check(TlvType::AckRequest, v, 6)?;
        let interval = be16(&v[4..6]);
        if interval == 0 {
            return Err(ParseError::ZeroInterval(TlvType::AckRequest));
        }
        Ok(AckRequestRepr {
            opaque: be16(&v[2..4]),
            interval: centis_to_duration(interval),
        })
    }

    /// Size of the TLV, header included.
    pub fn buffer_len(&self) -> usize {
        8
    }

    /// Writes the TLV (a zero interval is written as 1 cs).
    pub fn emit(&self, tlv: &mut Tlv<&mut [u8]>) {
        tlv.set_header(TlvType::AckRequest, 6);
        let v = tlv.value_mut();
        v[0..2].fill(0);
        v[2..4].copy_from_slice(&self.opaque.to_be_bytes());
        let interval = duration_to_centis(self.interval).max(1);
        v[4..6].copy_from_slice(&interval.to_be_bytes());
    }
}

impl AckRepr {
    /// Parses an Acknowledgment TLV.
    pub fn parse(tlv: &Tlv<&[u8]>) -> Result<Self, ParseError> {
        let v = tlv.value();
        check(TlvType::Ack, v, 2)?;
        Ok(AckRepr {
            opaque: be16(&v[0..2]),
        })
    }

    /// Size of the TLV, header included.
    pub fn buffer_len(&self) -> usize {
        4
    }

    /// Writes the TLV.
    pub fn emit(&self, tlv: &mut Tlv<&mut [u8]>) {
        tlv.set_header(TlvType::Ack, 2);
        tlv.value_mut().copy_from_slice(&self.opaque.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn test_ack_request() {
        let bytes = [2u8, 6, 0, 0, 0x12, 0x34, 0, 50];
        let r = AckRequestRepr::parse(&Tlv::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(
            r,
            AckRequestRepr {
                opaque: 0x1234,
                interval: Duration::from_millis(500)
            }
        );
        let mut buf = [0xffu8; 8];
        r.emit(&mut Tlv::new_unchecked(&mut buf[..]));
        assert_eq!(buf, bytes);
        let zero = [2u8, 6, 0, 0, 0x12, 0x34, 0, 0];
        assert_eq!(
            AckRequestRepr::parse(&Tlv::new_checked(&zero[..]).unwrap()),
            Err(ParseError::ZeroInterval(TlvType::AckRequest))
        );
    }

    #[test]
    fn test_ack() {
        let bytes = [3u8, 2, 0xab, 0xcd];
        let a = AckRepr::parse(&Tlv::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(a.opaque, 0xabcd);
        let mut buf = [0u8; 4];
        a.emit(&mut Tlv::new_unchecked(&mut buf[..]));
        assert_eq!(buf, bytes);
        let short = [3u8, 1, 0];
        assert_eq!(
            AckRepr::parse(&Tlv::new_checked(&short[..]).unwrap()),
            Err(ParseError::BadLength {
                tlv: TlvType::Ack,
                len: 1,
                min: 2
            })
        );
    }
}
