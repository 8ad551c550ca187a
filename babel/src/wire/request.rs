//! Route Request and Seqno Request TLVs (RFC 8966 §4.6.10-11).
//!
//! Route Request: `AE | plen | prefix | sub-TLVs`; AE 0 with plen 0 is the
//! wildcard request for a full dump.
//! Seqno Request: `AE | plen | seqno u16 | hop count | reserved |
//! router-id [8] | prefix | sub-TLVs`; AE 0 is not allowed and a hop count
//! of 0 is invalid. babeld puts a source-prefix length in the reserved
//! byte; it is ignored. Request prefixes are never compressed.

use ipnet::IpNet;

use super::address::{Ae, net_bytes, prefix_bytes, read_prefix};
use super::subtlv;
use super::{ParseError, RouteRequestRepr, RouterId, SeqnoRequestRepr, Tlv, TlvType, be16, need};

/// The AE of a request prefix: 1 for IPv4, 2 for IPv6, 0 for none.
fn prefix_ae(prefix: Option<&IpNet>) -> Ae {
    match prefix {
        None => Ae::Wildcard,
        Some(IpNet::V4(_)) => Ae::Ipv4,
        Some(IpNet::V6(_)) => Ae::Ipv6,
    }
}

impl RouteRequestRepr {
    /// Parses a Route Request TLV.
    pub fn parse(tlv: &Tlv<&[u8]>) -> Result<Self, ParseError> {
        let t = TlvType::RouteRequest;
        let v = tlv.value();
        need(t, v, 2)?;
        let (prefix, used) = read_prefix(t, v[0], v[1], &v[2..], 2)?;
        let found = subtlv::scan_all(t, &v[2 + used..])?;
        Ok(RouteRequestRepr {
            prefix,
            proof_wanted: found.proof_wanted,
        })
    }

    fn wanted_len(&self) -> usize {
        if self.proof_wanted {
            subtlv::PROOF_WANTED_LEN
        } else {
            0
        }
    }

    /// Size of the TLV, header included.
    pub fn buffer_len(&self) -> usize {
        4 + self.prefix.map_or(0, |p| prefix_bytes(p.prefix_len())) + self.wanted_len()
    }

    /// Writes the TLV (bits past the prefix length are not sent).
    pub fn emit(&self, tlv: &mut Tlv<&mut [u8]>) {
        let (bytes, plen) = self.prefix.as_ref().map_or(([0; 16], 0), net_bytes);
        let n = prefix_bytes(plen);
        // At most 20 bytes.
        tlv.set_header(TlvType::RouteRequest, (2 + n + self.wanted_len()) as u8);
        let v = tlv.value_mut();
        v[0] = prefix_ae(self.prefix.as_ref()).into();
        v[1] = plen;
        v[2..2 + n].copy_from_slice(&bytes[..n]);
        if self.proof_wanted {
            subtlv::emit_proof_wanted(&mut v[2 + n..]);
        }
    }
}

const SEQNO_FIXED_LEN: usize = 14;

impl SeqnoRequestRepr {
    /// Parses a Seqno Request TLV.
    pub fn parse(tlv: &Tlv<&[u8]>) -> Result<Self, ParseError> {
        let t = TlvType::SeqnoRequest;
        let v = tlv.value();
        need(t, v, SEQNO_FIXED_LEN)?;
        let (prefix, used) = read_prefix(t, v[0], v[1], &v[SEQNO_FIXED_LEN..], SEQNO_FIXED_LEN)?;
        let Some(prefix) = prefix else {
            return Err(ParseError::BadAe { tlv: t, ae: 0 });
        };
        let hop_count = v[4];
        if hop_count == 0 {
            return Err(ParseError::ZeroHopCount);
        }
        subtlv::scan(t, &v[SEQNO_FIXED_LEN + used..])?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&v[6..14]);
        Ok(SeqnoRequestRepr {
            prefix,
            seqno: be16(&v[2..4]),
            hop_count,
            router_id: RouterId(id),
        })
    }

    /// Size of the TLV, header included.
    pub fn buffer_len(&self) -> usize {
        2 + SEQNO_FIXED_LEN + prefix_bytes(self.prefix.prefix_len())
    }

    /// Writes the TLV (bits past the prefix length are not sent).
    pub fn emit(&self, tlv: &mut Tlv<&mut [u8]>) {
        let (bytes, plen) = net_bytes(&self.prefix);
        let n = prefix_bytes(plen);
        // At most 30 bytes.
        tlv.set_header(TlvType::SeqnoRequest, (SEQNO_FIXED_LEN + n) as u8);
        let v = tlv.value_mut();
        v[0] = prefix_ae(Some(&self.prefix)).into();
        v[1] = plen;
        v[2..4].copy_from_slice(&self.seqno.to_be_bytes());
        v[4] = self.hop_count;
        v[5] = 0;
        v[6..14].copy_from_slice(&self.router_id.0);
        v[SEQNO_FIXED_LEN..SEQNO_FIXED_LEN + n].copy_from_slice(&bytes[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(bytes: &[u8]) -> Result<RouteRequestRepr, ParseError> {
        RouteRequestRepr::parse(&Tlv::new_checked(bytes).unwrap())
    }

    fn seqno(bytes: &[u8]) -> Result<SeqnoRequestRepr, ParseError> {
        SeqnoRequestRepr::parse(&Tlv::new_checked(bytes).unwrap())
    }

    #[test]
    fn test_wildcard_route_request() {
        let r = route(&[9, 2, 0, 0]).unwrap();
        assert_eq!(r.prefix, None);
        let mut buf = [0u8; 4];
        r.emit(&mut Tlv::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [9, 2, 0, 0]);
        // AE 0 with a prefix length is not a wildcard.
        assert!(matches!(
            route(&[9, 2, 0, 8]),
            Err(ParseError::BadPlen { ae: 0, plen: 8, .. })
        ));
    }

    #[test]
    fn test_route_request_prefix_masked() {
        // 10.1.2.3/20 is sent as 3 bytes and read back masked: 10.1.0.0/20.
        let r = route(&[9, 5, 1, 20, 10, 1, 2]).unwrap();
        assert_eq!(r.prefix, Some("10.1.0.0/20".parse().unwrap()));
        let mut buf = [0u8; 7];
        r.emit(&mut Tlv::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [9, 5, 1, 20, 10, 1, 0]);
        assert!(matches!(
            route(&[9, 4, 1, 20, 10, 1]),
            Err(ParseError::BadLength { min: 5, .. })
        ));
    }

    #[test]
    fn requests_for_ipv4_prefixes_take_ae1_or_ae4() {
        // A request carries no next hop: AE 4 (RFC 9229) means the same
        // IPv4 prefix as AE 1, and we send AE 1.
        let r = route(&[9, 5, 4, 24, 10, 1, 2]).unwrap();
        assert_eq!(r.prefix, Some("10.1.2.0/24".parse().unwrap()));
        let mut buf = [0u8; 7];
        r.emit(&mut Tlv::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [9, 5, 1, 24, 10, 1, 2]);
        let s = seqno(&[10, 17, 4, 24, 0, 9, 5, 0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 1, 2]).unwrap();
        assert_eq!(s.prefix, "10.1.2.0/24".parse().unwrap());
        let mut buf = [0u8; 19];
        s.emit(&mut Tlv::new_unchecked(&mut buf[..]));
        assert_eq!(buf[2], 1);
    }

    // babel.pcap packet 11: Seqno Request (127 hops) for
    // 2001:660:3301:8063:218:f3ff:fea9:914e/128 seqno 40150
    // id 02:18:f3:ff:fe:a9:91:4e.
    static SEQNO_REQ: [u8; 32] = [
        10, 30, 2, 128, 0x9c, 0xd6, 127, 0, 2, 0x18, 0xf3, 0xff, 0xfe, 0xa9, 0x91, 0x4e, 0x20,
        0x01, 0x06, 0x60, 0x33, 0x01, 0x80, 0x63, 0x02, 0x18, 0xf3, 0xff, 0xfe, 0xa9, 0x91, 0x4e,
    ];

    #[test]
    fn test_seqno_request() {
        let r = seqno(&SEQNO_REQ).unwrap();
        assert_eq!(
            r,
            SeqnoRequestRepr {
                prefix: "2001:660:3301:8063:218:f3ff:fea9:914e/128".parse().unwrap(),
                seqno: 40150,
                hop_count: 127,
                router_id: RouterId([2, 0x18, 0xf3, 0xff, 0xfe, 0xa9, 0x91, 0x4e]),
            }
        );
        assert_eq!(r.buffer_len(), 32);
        let mut buf = [0u8; 32];
        r.emit(&mut Tlv::new_unchecked(&mut buf[..]));
        assert_eq!(buf, SEQNO_REQ);
    }

    #[test]
    fn seqno_request_rules() {
        let mut hop0 = SEQNO_REQ;
        hop0[6] = 0;
        assert_eq!(seqno(&hop0), Err(ParseError::ZeroHopCount));
        // The reserved byte (babeld's source plen) is ignored.
        let mut rsv = SEQNO_REQ;
        rsv[7] = 48;
        assert!(seqno(&rsv).is_ok());
        // AE 0 is not allowed.
        let ae0 = [10u8, 14, 0, 0, 0, 1, 5, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            seqno(&ae0),
            Err(ParseError::BadAe {
                tlv: TlvType::SeqnoRequest,
                ae: 0
            })
        );
        // AE 3 is not allowed for prefixes.
        let mut ae3 = SEQNO_REQ;
        ae3[2] = 3;
        assert!(matches!(seqno(&ae3), Err(ParseError::BadAe { ae: 3, .. })));
    }
}
