//! Hello TLV (RFC 8966 §4.6.5) with the RTT origin timestamp (RFC 9616 §3.1).
//!
//! `flags u16 | seqno u16 | interval u16 | sub-TLVs`. Flag 0x8000 (U) marks
//! a unicast Hello, with its own seqno space; other flag bits are ignored.
//! An interval of 0 marks an unscheduled Hello (it does not move timers).

use super::subtlv::{self, emit_timestamp, timestamp_len};
use super::{
    HelloRepr, ParseError, Tlv, TlvType, be16, centis_to_duration, duration_to_centis, need,
};

/// The U flag of a Hello.
pub const UNICAST: u16 = 0x8000;
const FIXED_LEN: usize = 6;

impl HelloRepr {
    /// Parses a Hello TLV (the caller checked its type).
    pub fn parse(tlv: &Tlv<&[u8]>) -> Result<Self, ParseError> {
        let v = tlv.value();
        need(TlvType::Hello, v, FIXED_LEN)?;
        let ts = subtlv::scan(TlvType::Hello, &v[FIXED_LEN..])?;
        Ok(HelloRepr {
            unicast: be16(&v[0..2]) & UNICAST != 0,
            seqno: be16(&v[2..4]),
            interval: centis_to_duration(be16(&v[4..6])),
            timestamp: subtlv::timestamps::<1>(ts).map(|[t]| t),
        })
    }

    /// Size of the TLV, header included.
    pub fn buffer_len(&self) -> usize {
        2 + FIXED_LEN + self.timestamp.map_or(0, |_| timestamp_len(1))
    }

    /// Writes the TLV; the buffer is [`HelloRepr::buffer_len`] long.
    pub fn emit(&self, tlv: &mut Tlv<&mut [u8]>) {
        // At most 14 bytes: the length always fits.
        tlv.set_header(TlvType::Hello, (self.buffer_len() - 2) as u8);
        let v = tlv.value_mut();
        let flags = if self.unicast { UNICAST } else { 0 };
        v[0..2].copy_from_slice(&flags.to_be_bytes());
        v[2..4].copy_from_slice(&self.seqno.to_be_bytes());
        v[4..6].copy_from_slice(&duration_to_centis(self.interval).to_be_bytes());
        if let Some(t) = self.timestamp {
            emit_timestamp(&mut v[FIXED_LEN..], &[t]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(bytes: &[u8]) -> Result<HelloRepr, ParseError> {
        HelloRepr::parse(&Tlv::new_checked(bytes).unwrap())
    }

    // babel_rtt.pcap, packet 1: seqno 58805, interval 4 s, timestamp.
    static HELLO_TS: [u8; 14] = [
        4, 12, 0, 0, 0xe5, 0xb5, 0x01, 0x90, 3, 4, 0x84, 0x7f, 0x99, 0x4b,
    ];

    #[test]
    fn test_parse_timestamped() {
        let h = parse(&HELLO_TS).unwrap();
        assert_eq!(
            h,
            HelloRepr {
                unicast: false,
                seqno: 58805,
                interval: Duration::from_secs(4),
                timestamp: Some(2_222_954_827),
            }
        );
    }

    #[test]
    fn test_emit_timestamped() {
        let h = parse(&HELLO_TS).unwrap();
        assert_eq!(h.buffer_len(), HELLO_TS.len());
        let mut buf = [0u8; 14];
        h.emit(&mut Tlv::new_unchecked(&mut buf[..]));
        assert_eq!(buf, HELLO_TS);
    }

    #[test]
    fn unicast_unscheduled_and_other_flags() {
        // U flag plus a reserved flag bit (ignored), interval 0.
        let h = parse(&[4, 6, 0x80, 0x01, 0, 7, 0, 0]).unwrap();
        assert!(h.unicast);
        assert_eq!(h.seqno, 7);
        assert_eq!(h.interval, Duration::ZERO);
        let mut buf = [0u8; 8];
        h.emit(&mut Tlv::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [4, 6, 0x80, 0, 0, 7, 0, 0]);
    }

    #[test]
    fn short_hello() {
        assert_eq!(
            parse(&[4, 5, 0, 0, 0, 1, 0]),
            Err(ParseError::BadLength {
                tlv: TlvType::Hello,
                len: 5,
                min: 6
            })
        );
    }

    #[test]
    fn short_timestamp_keeps_the_hello() {
        let h = parse(&[4, 11, 0, 0, 0, 1, 0, 100, 3, 3, 1, 2, 3]).unwrap();
        assert_eq!(h.timestamp, None);
        assert_eq!(h.seqno, 1);
    }

    #[test]
    fn mandatory_sub_tlv_rejects_the_hello() {
        assert_eq!(
            parse(&[4, 8, 0, 0, 0, 1, 0, 100, 0x85, 0]),
            Err(ParseError::UnknownMandatorySubTlv {
                tlv: TlvType::Hello,
                subtype: 0x85
            })
        );
    }
}
