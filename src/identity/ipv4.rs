//! A node's IPv4 subnet in its certificate: the RFC 3779 IP address
//! delegation extension (`id-pe-ipAddrBlocks`) with one IPv4 prefix.
//!
//! A network with IPv4 inside the overlay gives every node an IPv4 subnet
//! with its certificate, so that whoever checks the certificate (a tunnel
//! peer, a route-origin check) knows which IPv4 space the node holds,
//! exactly as the subject CN says which IPv6 prefix it holds. The
//! extension is not critical, unlike what RFC 3779 recommends: TLS
//! libraries refuse certificates with critical extensions they do not
//! know, and nodes without IPv4 support must still accept these
//! certificates.
//!
//! The encoding is the smallest RFC 3779 allows for one prefix:
//!
//! ```text
//! IPAddrBlocks ::= SEQUENCE OF IPAddressFamily            -- one
//! IPAddressFamily ::= SEQUENCE {
//!     addressFamily   OCTET STRING,                       -- 00 01: IPv4
//!     ipAddressChoice SEQUENCE OF IPAddressOrRange }      -- one
//! IPAddressOrRange ::= addressPrefix BIT STRING           -- the prefix
//! ```

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::IdentityError;

/// `id-pe-ipAddrBlocks` (RFC 3779 section 2.2.1): 1.3.6.1.5.5.7.1.7.
pub const OID: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 7];

/// The OID as x509-parser prints it.
pub(crate) const OID_STR: &str = "1.3.6.1.5.5.7.1.7";

const SEQUENCE: u8 = 0x30;
const OCTET_STRING: u8 = 0x04;
const BIT_STRING: u8 = 0x03;
const AFI_IPV4: [u8; 2] = [0, 1];

/// The node's IPv4 address in its subnet: the first host, as the IPv6
/// address is the prefix's first host; for a /32, the subnet's only
/// address.
pub fn node_address_v4(subnet: Ipv4Net) -> Ipv4Addr {
    if subnet.prefix_len() == 32 {
        subnet.network()
    } else {
        Ipv4Addr::from(u32::from(subnet.network()) | 1)
    }
}

/// The extension's value (DER) for `subnet` (host bits ignored).
pub fn encode(subnet: Ipv4Net) -> Vec<u8> {
    let subnet = subnet.trunc();
    let len = subnet.prefix_len();
    let bytes = usize::from(len).div_ceil(8);
    let unused = (bytes * 8 - usize::from(len)) as u8;
    let mut bits = vec![BIT_STRING, (1 + bytes) as u8, unused];
    bits.extend_from_slice(&subnet.network().octets()[..bytes]);
    let mut choice = vec![SEQUENCE, bits.len() as u8];
    choice.extend(bits);
    let mut family = vec![SEQUENCE, (4 + choice.len()) as u8, OCTET_STRING, 2];
    family.extend(AFI_IPV4);
    family.extend(choice);
    let mut blocks = vec![SEQUENCE, family.len() as u8];
    blocks.extend(family);
    blocks
}

fn malformed(detail: &str) -> IdentityError {
    IdentityError::Malformed {
        what: "IP address block extension",
        detail: detail.into(),
    }
}

/// Splits one DER element of tag `tag` (short-form length only: every
/// element here is shorter than 128 bytes) off the front of `input`.
fn element(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), IdentityError> {
    match input {
        [t, len, rest @ ..] if *t == tag && *len < 0x80 && rest.len() >= usize::from(*len) => {
            Ok(rest.split_at(usize::from(*len)))
        }
        [t, ..] if *t != tag => Err(malformed("unexpected element")),
        _ => Err(malformed("truncated or long-form length")),
    }
}

/// Parses the extension's value: exactly one IPv4 family holding exactly
/// one prefix, in DER (no host bits set, no unused trailing byte).
pub fn parse(value: &[u8]) -> Result<Ipv4Net, IdentityError> {
    let (blocks, rest) = element(value, SEQUENCE)?;
    let (family, more) = element(blocks, SEQUENCE)?;
    if !rest.is_empty() || !more.is_empty() {
        return Err(malformed("more than one address family"));
    }
    let (afi, choice) = element(family, OCTET_STRING)?;
    if afi != AFI_IPV4 {
        return Err(malformed("not an IPv4 block (or a SAFI is given)"));
    }
    let (prefixes, rest) = element(choice, SEQUENCE)?;
    if !rest.is_empty() {
        return Err(malformed("trailing bytes"));
    }
    let (bits, more) = element(prefixes, BIT_STRING)?;
    if !more.is_empty() {
        return Err(malformed("more than one prefix"));
    }
    let Some((&unused, bytes)) = bits.split_first() else {
        return Err(malformed("empty bit string"));
    };
    if unused > 7 || bytes.len() > 4 || (bytes.is_empty() && unused != 0) {
        return Err(malformed("bad bit string length"));
    }
    let len = bytes.len() * 8 - usize::from(unused);
    if bytes.last().is_some_and(|b| b & ((1u8 << unused) - 1) != 0) {
        return Err(malformed("bits set past the prefix length"));
    }
    let mut octets = [0u8; 4];
    octets[..bytes.len()].copy_from_slice(bytes);
    Ipv4Net::new(Ipv4Addr::from(octets), len as u8).map_err(|_| malformed("prefix length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn rfc3779_example_encoding() {
        // RFC 3779 section 2.1.1: 10.5.0.0/23 is 03 04 01 0a 05 00... here
        // 10.42.3.0/24 is 03 04 00 0a 2a 03 (24 bits, none unused).
        assert_eq!(
            encode(net("10.42.3.0/24")),
            [
                0x30, 0x0e, 0x30, 0x0c, 0x04, 0x02, 0x00, 0x01, 0x30, 0x06, 0x03, 0x04, 0x00, 0x0a,
                0x2a, 0x03
            ]
        );
        // A /23: one unused bit in the last byte.
        let der = encode(net("10.5.0.0/23"));
        assert_eq!(&der[der.len() - 6..], [0x03, 0x04, 0x01, 0x0a, 0x05, 0x00]);
    }

    #[test]
    fn roundtrip_every_length() {
        for len in 0..=32u8 {
            let subnet = Ipv4Net::new(Ipv4Addr::new(10, 42, 255, 255), len)
                .unwrap()
                .trunc();
            assert_eq!(parse(&encode(subnet)).unwrap(), subnet, "/{len}");
        }
    }

    #[test]
    fn host_bits_are_dropped_when_encoding() {
        assert_eq!(
            parse(&encode(net("10.1.2.3/24"))).unwrap(),
            net("10.1.2.0/24")
        );
    }

    #[test]
    fn node_address() {
        assert_eq!(
            node_address_v4(net("10.42.3.0/24")),
            Ipv4Addr::new(10, 42, 3, 1)
        );
        assert_eq!(
            node_address_v4(net("10.42.3.4/31")),
            Ipv4Addr::new(10, 42, 3, 5)
        );
        assert_eq!(
            node_address_v4(net("10.42.3.7/32")),
            Ipv4Addr::new(10, 42, 3, 7)
        );
    }

    #[test]
    fn refuses_what_is_not_one_ipv4_prefix() {
        let good = encode(net("10.42.3.0/24"));
        let mut ipv6 = good.clone();
        ipv6[7] = 2;
        let mut host_bits = encode(net("10.5.0.0/23"));
        let last = host_bits.len() - 1;
        host_bits[last] = 1;
        let mut two = good.clone();
        two[1] += 2;
        two.extend([0x30, 0x00]);
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            good[..good.len() - 1].to_vec(),
            ipv6,
            host_bits,
            two,
            // unused bits count 8.
            vec![
                0x30, 0x0b, 0x30, 0x09, 0x04, 0x02, 0x00, 0x01, 0x30, 0x03, 0x03, 0x01, 0x08,
            ],
            // five address bytes.
            vec![
                0x30, 0x0f, 0x30, 0x0d, 0x04, 0x02, 0x00, 0x01, 0x30, 0x07, 0x03, 0x05, 0x00, 1, 2,
                3, 4, 5,
            ],
            // long-form length.
            vec![0x30, 0x81, 0x0e],
        ];
        for bad in cases {
            assert!(parse(&bad).is_err(), "{bad:02x?}");
        }
    }
}
