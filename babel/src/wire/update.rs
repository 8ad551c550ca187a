//! The TLVs that make up a route announcement (RFC 8966 §4.6.7-9):
//! Router-Id, Next Hop and Update, at the TLV level (no packet state).
//!
//! The packet decoder (`decoder.rs`) applies the per-packet state: default
//! prefixes, router-id and next hops.

use std::net::IpAddr;

use super::address::{Ae, encode_address, prefix_bytes, read_address};
use super::subtlv;
use super::{INFINITY, ParseError, RouterId, Tlv, TlvType, be16, need};

/// Update flags.
pub mod flags {
    /// The decoded prefix becomes the default prefix of its AE.
    pub const DEFAULT_PREFIX: u8 = 0x80;
    /// The router-id is the low 8 bytes of the prefix.
    pub const ROUTER_ID: u8 = 0x40;
}

impl RouterId {
    /// True unless all zeros or all ones (RFC 8966 §4.6.7).
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 8] && self.0 != [0xff; 8]
    }
}

/// Router-Id TLV: `reserved u16 | router-id [8] | sub-TLVs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterIdRepr {
    /// The router-id for the following Updates.
    pub router_id: RouterId,
}

impl RouterIdRepr {
    /// Parses the fixed part; returns the sub-TLV bytes unchecked, because
    /// the router-id takes effect even if they make the TLV ignored. An
    /// all-zeros or all-ones id is [`ParseError::BadRouterId`].
    pub fn parse_fixed<'a>(tlv: &Tlv<&'a [u8]>) -> Result<(Self, &'a [u8]), ParseError> {
        let v = tlv.value_bytes();
        need(TlvType::RouterId, v, 10)?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&v[2..10]);
        let router_id = RouterId(id);
        if !router_id.is_valid() {
            return Err(ParseError::BadRouterId(id));
        }
        Ok((RouterIdRepr { router_id }, &v[10..]))
    }

    /// Parses the TLV, sub-TLVs included.
    pub fn parse(tlv: &Tlv<&[u8]>) -> Result<Self, ParseError> {
        let (repr, subs) = Self::parse_fixed(tlv)?;
        subtlv::scan(TlvType::RouterId, subs)?;
        Ok(repr)
    }

    /// Size of the TLV, header included.
    pub fn buffer_len(&self) -> usize {
        12
    }

    /// Writes the TLV.
    pub fn emit(&self, tlv: &mut Tlv<&mut [u8]>) {
        tlv.set_header(TlvType::RouterId, 10);
        let v = tlv.value_mut();
        v[0..2].fill(0);
        v[2..10].copy_from_slice(&self.router_id.0);
    }
}

/// Next Hop TLV: `AE u8 | reserved u8 | address | sub-TLVs`; AE 1, 2 or 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHopRepr {
    /// The next hop for the following Updates of its address family.
    pub address: IpAddr,
}

impl NextHopRepr {
    /// Parses the fixed part and address; returns the sub-TLV bytes
    /// unchecked (the next hop takes effect even if they are bad).
    pub fn parse_fixed<'a>(tlv: &Tlv<&'a [u8]>) -> Result<(Self, &'a [u8]), ParseError> {
        let v = tlv.value_bytes();
        need(TlvType::NextHop, v, 2)?;
        let ae = Ae::from(v[0]);
        if matches!(ae, Ae::Wildcard | Ae::Ipv4ViaIpv6) {
            return Err(ParseError::BadAe {
                tlv: TlvType::NextHop,
                ae: v[0],
            });
        }
        match read_address(TlvType::NextHop, ae, &v[2..], 2)? {
            (Some(address), used) => Ok((NextHopRepr { address }, &v[2 + used..])),
            (None, _) => Err(ParseError::BadAe {
                tlv: TlvType::NextHop,
                ae: v[0],
            }),
        }
    }

    /// Parses the TLV, sub-TLVs included.
    pub fn parse(tlv: &Tlv<&[u8]>) -> Result<Self, ParseError> {
        let (repr, subs) = Self::parse_fixed(tlv)?;
        subtlv::scan(TlvType::NextHop, subs)?;
        Ok(repr)
    }

    /// Size of the TLV, header included.
    pub fn buffer_len(&self) -> usize {
        4 + encode_address(Some(self.address)).2
    }

    /// Writes the TLV (AE 3 for fe80::/64 addresses).
    pub fn emit(&self, tlv: &mut Tlv<&mut [u8]>) {
        let (ae, addr, alen) = encode_address(Some(self.address));
        // At most 18 bytes.
        tlv.set_header(TlvType::NextHop, (2 + alen) as u8);
        let v = tlv.value_mut();
        v[0] = ae.into();
        v[1] = 0;
        v[2..2 + alen].copy_from_slice(&addr[..alen]);
    }
}

/// An Update TLV as transmitted, before the packet state is applied:
/// `AE | flags | plen | omitted | interval u16 | seqno u16 | metric u16 |
/// prefix[⌈plen/8⌉ − omitted] | sub-TLVs`.
///
/// `parse_fixed` checks what can be checked without state: the AE (0, 1, 2
/// or 4; AE 3 is refused as BIRD does), plen against the AE, omitted against
/// plen, the length, and the AE 0 rules (plen 0, nothing omitted, metric
/// infinite).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateTlv<'a> {
    /// Address encoding.
    pub ae: Ae,
    /// Flags ([`flags::DEFAULT_PREFIX`], [`flags::ROUTER_ID`]).
    pub flags: u8,
    /// Prefix length.
    pub plen: u8,
    /// Leading prefix bytes taken from the AE's default prefix.
    pub omitted: u8,
    /// Interval in centiseconds (0 is rejected by the decoder).
    pub interval: u16,
    /// Source seqno.
    pub seqno: u16,
    /// Metric ([`INFINITY`] for a retraction).
    pub metric: u16,
    /// The transmitted prefix bytes.
    pub prefix: &'a [u8],
}

const UPDATE_FIXED_LEN: usize = 10;

impl<'a> UpdateTlv<'a> {
    /// Parses the fixed part and the transmitted prefix; returns the
    /// sub-TLV bytes unchecked.
    #[inline]
    pub fn parse_fixed(tlv: &Tlv<&'a [u8]>) -> Result<(Self, &'a [u8]), ParseError> {
        let v = tlv.value_bytes();
        let t = TlvType::Update;
        need(t, v, UPDATE_FIXED_LEN)?;
        let (ae_code, flags, plen, omitted) = (v[0], v[1], v[2], v[3]);
        let ae = Ae::from(ae_code);
        let metric = be16(&v[8..10]);
        match ae {
            Ae::Unknown(code) => return Err(ParseError::UnknownAe { tlv: t, ae: code }),
            Ae::LinkLocal => {
                return Err(ParseError::BadAe {
                    tlv: t,
                    ae: ae_code,
                });
            }
            Ae::Wildcard if plen != 0 || omitted != 0 || metric != INFINITY => {
                return Err(ParseError::BadWildcardUpdate { plen, metric });
            }
            _ => {}
        }
        if plen > ae.max_plen() {
            return Err(ParseError::BadPlen {
                tlv: t,
                ae: ae_code,
                plen,
            });
        }
        let total = prefix_bytes(plen);
        if usize::from(omitted) > total {
            return Err(ParseError::BadOmitted { omitted, plen });
        }
        let sent = total - usize::from(omitted);
        let Some(prefix) = v.get(UPDATE_FIXED_LEN..UPDATE_FIXED_LEN + sent) else {
            return Err(ParseError::BadLength {
                tlv: t,
                len: v.len(),
                min: UPDATE_FIXED_LEN + sent,
            });
        };
        let update = UpdateTlv {
            ae,
            flags,
            plen,
            omitted,
            interval: be16(&v[4..6]),
            seqno: be16(&v[6..8]),
            metric,
            prefix,
        };
        Ok((update, &v[UPDATE_FIXED_LEN + sent..]))
    }

    /// Size of the TLV, header included (no sub-TLVs).
    pub fn buffer_len(&self) -> usize {
        self.buffer_len_with(None)
    }

    /// Size of the TLV followed by an Origin Proof sub-TLV carrying
    /// `proof` (none if `None`).
    pub fn buffer_len_with(&self, proof: Option<&[u8]>) -> usize {
        2 + UPDATE_FIXED_LEN + self.prefix.len() + proof.map_or(0, subtlv::proof_len)
    }

    /// Writes the TLV; `prefix` holds at most 16 bytes.
    pub fn emit(&self, tlv: &mut Tlv<&mut [u8]>) {
        self.emit_with(tlv, None);
    }

    /// Writes the TLV followed by an Origin Proof sub-TLV carrying `proof`
    /// (at most [`super::OriginProof::MAX_LEN`] bytes); the buffer is
    /// [`UpdateTlv::buffer_len_with`] long.
    pub fn emit_with(&self, tlv: &mut Tlv<&mut [u8]>, proof: Option<&[u8]>) {
        // At most 255 bytes: the prefix is at most 16 bytes, the proof at
        // most OriginProof::MAX_LEN.
        let len = self.buffer_len_with(proof) - 2;
        tlv.set_header(TlvType::Update, u8::try_from(len).unwrap_or(u8::MAX));
        let v = tlv.value_mut();
        v[0] = self.ae.into();
        v[1] = self.flags;
        v[2] = self.plen;
        v[3] = self.omitted;
        v[4..6].copy_from_slice(&self.interval.to_be_bytes());
        v[6..8].copy_from_slice(&self.seqno.to_be_bytes());
        v[8..10].copy_from_slice(&self.metric.to_be_bytes());
        let end = UPDATE_FIXED_LEN + self.prefix.len();
        v[UPDATE_FIXED_LEN..end].copy_from_slice(self.prefix);
        if let Some(p) = proof {
            subtlv::emit_proof(&mut v[end..], p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(bytes: &[u8]) -> Result<UpdateTlv<'_>, ParseError> {
        UpdateTlv::parse_fixed(&Tlv::new_checked(bytes).unwrap()).map(|(u, _)| u)
    }

    #[test]
    fn test_router_id() {
        let bytes = [6u8, 10, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        let r = RouterIdRepr::parse(&Tlv::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(r.router_id, RouterId([1, 2, 3, 4, 5, 6, 7, 8]));
        let mut buf = [0u8; 12];
        r.emit(&mut Tlv::new_unchecked(&mut buf[..]));
        assert_eq!(buf, bytes);
    }

    #[test]
    fn router_id_all_zeros_or_ones() {
        for b in [0u8, 0xff] {
            let bytes = [6u8, 10, 0, 0, b, b, b, b, b, b, b, b];
            assert_eq!(
                RouterIdRepr::parse(&Tlv::new_checked(&bytes[..]).unwrap()),
                Err(ParseError::BadRouterId([b; 8]))
            );
        }
    }

    #[test]
    fn test_next_hop() {
        // babel.pcap: Next Hop 192.168.4.25.
        let bytes = [7u8, 6, 1, 0, 192, 168, 4, 25];
        let nh = NextHopRepr::parse(&Tlv::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(nh.address, "192.168.4.25".parse::<IpAddr>().unwrap());
        let mut buf = [0u8; 8];
        nh.emit(&mut Tlv::new_unchecked(&mut buf[..]));
        assert_eq!(buf, bytes);
    }

    #[test]
    fn next_hop_rejects_ae0_and_ae4() {
        for ae in [0u8, 4] {
            let bytes = [7u8, 6, ae, 0, 1, 2, 3, 4];
            assert_eq!(
                NextHopRepr::parse(&Tlv::new_checked(&bytes[..]).unwrap()),
                Err(ParseError::BadAe {
                    tlv: TlvType::NextHop,
                    ae
                })
            );
        }
    }

    #[test]
    fn test_update_fixed() {
        // AE 2, flags 0x80, plen 64, omitted 2, interval 400, seqno 7,
        // metric 96, 6 prefix bytes, then a PadN sub-TLV.
        let bytes = [
            8u8, 18, 2, 0x80, 64, 2, 1, 144, 0, 7, 0, 96, 0, 1, 0, 2, 0, 3, 1, 0,
        ];
        let tlv = Tlv::new_checked(&bytes[..]).unwrap();
        let (u, subs) = UpdateTlv::parse_fixed(&tlv).unwrap();
        assert_eq!(u.ae, Ae::Ipv6);
        assert_eq!((u.flags, u.plen, u.omitted), (0x80, 64, 2));
        assert_eq!((u.interval, u.seqno, u.metric), (400, 7, 96));
        assert_eq!(u.prefix, &[0, 1, 0, 2, 0, 3]);
        assert_eq!(subs, &[1, 0]);
        let mut buf = [0u8; 18];
        u.emit(&mut Tlv::new_unchecked(&mut buf[..]));
        // Same TLV without its sub-TLV: two bytes shorter.
        assert_eq!(buf[1], 16);
        assert_eq!(&buf[2..], &bytes[2..18]);
    }

    #[test]
    fn update_limits() {
        // plen 33 for IPv4.
        assert_eq!(
            update(&[8, 14, 1, 0, 33, 0, 1, 144, 0, 7, 0, 96, 1, 2, 3, 4]),
            Err(ParseError::BadPlen {
                tlv: TlvType::Update,
                ae: 1,
                plen: 33
            })
        );
        // plen 129 for IPv6.
        assert!(matches!(
            update(&[8, 10, 2, 0, 129, 0, 1, 144, 0, 7, 0, 96]),
            Err(ParseError::BadPlen { plen: 129, .. })
        ));
        // omitted 3 of a /16.
        assert_eq!(
            update(&[8, 10, 2, 0, 16, 3, 1, 144, 0, 7, 0, 96]),
            Err(ParseError::BadOmitted {
                omitted: 3,
                plen: 16
            })
        );
        // /64 with only 7 of its 8 bytes.
        assert_eq!(
            update(&[8, 17, 2, 0, 64, 0, 1, 144, 0, 7, 0, 96, 1, 2, 3, 4, 5, 6, 7]),
            Err(ParseError::BadLength {
                tlv: TlvType::Update,
                len: 17,
                min: 18
            })
        );
        // Fixed part short.
        assert!(matches!(
            update(&[8, 9, 2, 0, 0, 0, 1, 144, 0, 7, 0]),
            Err(ParseError::BadLength { min: 10, .. })
        ));
        // AE 3 and unknown AE.
        assert!(matches!(
            update(&[8, 10, 3, 0, 0, 0, 1, 144, 0, 7, 0, 96]),
            Err(ParseError::BadAe { ae: 3, .. })
        ));
        assert!(matches!(
            update(&[8, 10, 7, 0, 0, 0, 1, 144, 0, 7, 0, 96]),
            Err(ParseError::UnknownAe { ae: 7, .. })
        ));
    }

    #[test]
    fn wildcard_update_rules() {
        // The retraction babeld sends at boot: AE 0, plen 0, metric infinite.
        let u = update(&[8, 10, 0, 0x40, 0, 0, 0xff, 0xff, 0, 7, 0xff, 0xff]).unwrap();
        assert_eq!((u.ae, u.metric), (Ae::Wildcard, INFINITY));
        assert_eq!(
            update(&[8, 10, 0, 0, 0, 0, 1, 144, 0, 7, 0, 96]),
            Err(ParseError::BadWildcardUpdate {
                plen: 0,
                metric: 96
            })
        );
        assert_eq!(
            update(&[8, 10, 0, 0, 8, 0, 1, 144, 0, 7, 0xff, 0xff]),
            Err(ParseError::BadWildcardUpdate {
                plen: 8,
                metric: INFINITY
            })
        );
    }
}
