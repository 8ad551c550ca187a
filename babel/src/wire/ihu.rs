//! IHU TLV (RFC 8966 §4.6.6) with the RTT timestamps (RFC 9616 §3.2).
//!
//! `AE u8 | reserved u8 | rxcost u16 | interval u16 | address | sub-TLVs`.
//! The address is never compressed; AE 0 means "whoever receives this",
//! AE 3 a link-local address, AE 4 is not allowed.

use std::net::IpAddr;

use super::address::{Ae, encode_address, read_address};
use super::subtlv::{self, emit_timestamp, timestamp_len};
use super::{
    IhuRepr, IhuTimestamp, ParseError, Tlv, TlvType, be16, centis_to_duration, duration_to_centis,
    need,
};

const FIXED_LEN: usize = 6;

impl IhuRepr {
    /// Parses an IHU TLV (the caller checked its type).
    pub fn parse(tlv: &Tlv<&[u8]>) -> Result<Self, ParseError> {
        let v = tlv.value();
        need(TlvType::Ihu, v, FIXED_LEN)?;
        let ae = Ae::from(v[0]);
        if ae == Ae::Ipv4ViaIpv6 {
            return Err(ParseError::BadAe {
                tlv: TlvType::Ihu,
                ae: v[0],
            });
        }
        let (address, used) = read_address(TlvType::Ihu, ae, &v[FIXED_LEN..], FIXED_LEN)?;
        let interval = be16(&v[4..6]);
        if interval == 0 {
            return Err(ParseError::ZeroInterval(TlvType::Ihu));
        }
        let ts = subtlv::scan(TlvType::Ihu, &v[FIXED_LEN + used..])?;
        Ok(IhuRepr {
            rxcost: be16(&v[2..4]),
            interval: centis_to_duration(interval),
            address,
            timestamp: subtlv::timestamps::<2>(ts)
                .map(|[origin, receive]| IhuTimestamp { origin, receive }),
        })
    }

    /// True when this IHU is meant for a node with address `ours` (AE 0
    /// IHUs are for everyone). An IHU for someone else must be ignored.
    pub fn is_for(&self, ours: IpAddr) -> bool {
        self.address.is_none_or(|a| a == ours)
    }

    /// Size of the TLV, header included.
    pub fn buffer_len(&self) -> usize {
        let (_, _, alen) = encode_address(self.address);
        2 + FIXED_LEN + alen + self.timestamp.map_or(0, |_| timestamp_len(2))
    }

    /// Writes the TLV; the buffer is [`IhuRepr::buffer_len`] long. A zero
    /// interval is written as 1 cs (the parser rejects 0).
    pub fn emit(&self, tlv: &mut Tlv<&mut [u8]>) {
        let (ae, addr, alen) = encode_address(self.address);
        // At most 34 bytes: the length always fits.
        tlv.set_header(TlvType::Ihu, (self.buffer_len() - 2) as u8);
        let v = tlv.value_mut();
        v[0] = ae.into();
        v[1] = 0;
        v[2..4].copy_from_slice(&self.rxcost.to_be_bytes());
        let interval = duration_to_centis(self.interval).max(1);
        v[4..6].copy_from_slice(&interval.to_be_bytes());
        v[FIXED_LEN..FIXED_LEN + alen].copy_from_slice(&addr[..alen]);
        if let Some(ts) = self.timestamp {
            emit_timestamp(&mut v[FIXED_LEN + alen..], &[ts.origin, ts.receive]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(bytes: &[u8]) -> Result<IhuRepr, ParseError> {
        IhuRepr::parse(&Tlv::new_checked(bytes).unwrap())
    }

    // babel_rtt.pcap, packet 2: IHU fe80::5054:ff:fe85:5da9 rxcost 96
    // interval 12 s, timestamps 2222.954827 s | 91.378052 s.
    static IHU_TS: [u8; 26] = [
        5, 24, 3, 0, 0, 96, 4, 176, 0x50, 0x54, 0x00, 0xff, 0xfe, 0x85, 0x5d, 0xa9, 3, 8, 0x84,
        0x7f, 0x99, 0x4b, 0x05, 0x72, 0x51, 0x84,
    ];

    #[test]
    fn test_parse_and_emit_timestamped() {
        let ihu = parse(&IHU_TS).unwrap();
        assert_eq!(
            ihu,
            IhuRepr {
                rxcost: 96,
                interval: Duration::from_secs(12),
                address: Some("fe80::5054:ff:fe85:5da9".parse().unwrap()),
                timestamp: Some(IhuTimestamp {
                    origin: 2_222_954_827,
                    receive: 91_378_052,
                }),
            }
        );
        assert_eq!(ihu.buffer_len(), IHU_TS.len());
        let mut buf = [0u8; 26];
        ihu.emit(&mut Tlv::new_unchecked(&mut buf[..]));
        assert_eq!(buf, IHU_TS);
    }

    #[test]
    fn wildcard_and_ipv4_addresses() {
        let any = parse(&[5, 6, 0, 0, 1, 0, 0, 10]).unwrap();
        assert_eq!(any.address, None);
        assert!(any.is_for("fe80::1".parse().unwrap()));
        let v4 = parse(&[5, 10, 1, 0, 0, 96, 0, 10, 10, 0, 0, 1]).unwrap();
        assert_eq!(v4.address, Some("10.0.0.1".parse().unwrap()));
        assert!(!v4.is_for("10.0.0.2".parse().unwrap()));
        assert!(v4.is_for("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn rejects_ae4_unknown_ae_zero_interval_short_address() {
        assert_eq!(
            parse(&[5, 10, 4, 0, 0, 96, 0, 10, 10, 0, 0, 1]),
            Err(ParseError::BadAe {
                tlv: TlvType::Ihu,
                ae: 4
            })
        );
        assert_eq!(
            parse(&[5, 6, 9, 0, 0, 96, 0, 10]),
            Err(ParseError::UnknownAe {
                tlv: TlvType::Ihu,
                ae: 9
            })
        );
        assert_eq!(
            parse(&[5, 6, 0, 0, 0, 96, 0, 0]),
            Err(ParseError::ZeroInterval(TlvType::Ihu))
        );
        assert_eq!(
            parse(&[5, 9, 1, 0, 0, 96, 0, 10, 10, 0, 0]),
            Err(ParseError::BadLength {
                tlv: TlvType::Ihu,
                len: 9,
                min: 10
            })
        );
    }

    #[test]
    fn short_timestamp_keeps_the_ihu() {
        let ihu = parse(&[5, 12, 0, 0, 0, 96, 0, 10, 3, 4, 0, 0, 0, 1]).unwrap();
        assert_eq!(ihu.timestamp, None);
        assert_eq!(ihu.rxcost, 96);
    }
}
