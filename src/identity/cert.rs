//! Parsing node certificates: the prefix (CN), the overlay address (IP SAN),
//! the serial, the validity and the key.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use ipnet::{Ipv4Net, Ipv6Net};
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{IdentityError, PublicKey, from_unix_secs};

/// The overlay address of the node that holds `prefix`: its first host
/// (`prefix::1`). Node prefixes are at most /127, so it is inside.
pub fn node_address(prefix: Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(prefix.network()) | 1)
}

/// A parsed, shape-checked re6st node certificate. Parsing does not check
/// the signature chain: do that with [`super::tls::CaVerifier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCert {
    /// The DER encoding.
    pub der: Vec<u8>,
    /// The certificate serial (unique per CA; the registry's counter).
    pub serial: u64,
    /// The node's prefix (from the subject CN).
    pub prefix: Ipv6Net,
    /// The node's overlay address (the IP SAN), always `prefix::1`.
    pub address: Ipv6Addr,
    /// The node's IPv4 subnet in the overlay, in networks with IPv4 (an
    /// IP address block extension, [`super::ipv4`]).
    pub ipv4: Option<Ipv4Net>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The certified key.
    pub public_key: PublicKey,
}

impl NodeCert {
    /// Parses PEM (`CERTIFICATE`).
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        Self::from_der(&cert_der_from_pem(pem)?)
    }

    /// Parses DER and checks the shape of a node certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| IdentityError::Malformed {
                what: "certificate",
                detail: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(IdentityError::Malformed {
                what: "certificate",
                detail: "trailing bytes".into(),
            });
        }
        let serial = serial_u64(cert.raw_serial())?;
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or(IdentityError::NotNodeCertificate("no subject CN"))?;
        let prefix: Ipv6Net = cn
            .parse()
            .map_err(|_| IdentityError::NotNodeCertificate("subject CN is not an IPv6 prefix"))?;
        if prefix != prefix.trunc() || prefix.prefix_len() > 127 {
            return Err(IdentityError::NotNodeCertificate(
                "subject CN is not a node prefix (host bits set or longer than /127)",
            ));
        }
        let san = cert
            .subject_alternative_name()
            .map_err(|_| IdentityError::NotNodeCertificate("malformed subjectAltName"))?
            .ok_or(IdentityError::NotNodeCertificate("no subjectAltName"))?;
        let mut ips = san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::IPAddress(b) => Some(*b),
            _ => None,
        });
        let address = match (ips.next(), ips.next()) {
            (Some(b), None) => <[u8; 16]>::try_from(b)
                .map(Ipv6Addr::from)
                .map_err(|_| IdentityError::NotNodeCertificate("IP SAN is not IPv6"))?,
            _ => {
                return Err(IdentityError::NotNodeCertificate(
                    "needs exactly one IP SAN",
                ));
            }
        };
        if address != node_address(prefix) {
            return Err(IdentityError::NotNodeCertificate(
                "IP SAN is not the prefix's first host",
            ));
        }
        let ipv4 = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == super::ipv4::OID_STR)
            .map(|e| super::ipv4::parse(e.value))
            .transpose()?;
        let public_key = PublicKey::from_spki(cert.public_key())?;
        let validity = cert.validity();
        Ok(Self {
            der: der.to_vec(),
            serial,
            prefix,
            address,
            ipv4,
            not_before: from_unix_secs(u64::try_from(validity.not_before.timestamp()).unwrap_or(0)),
            not_after: from_unix_secs(u64::try_from(validity.not_after.timestamp()).unwrap_or(0)),
            public_key,
        })
    }

    /// PEM encoding.
    pub fn to_pem(&self) -> String {
        der_to_pem("CERTIFICATE", &self.der)
    }

    /// The DER as rustls wants it.
    pub fn to_rustls(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.der.clone())
    }

    /// The overlay address as an `IpAddr` (handy for `ServerName`).
    pub fn ip(&self) -> IpAddr {
        IpAddr::V6(self.address)
    }

    /// The node's IPv4 address in the overlay: its subnet's first host.
    pub fn ipv4_address(&self) -> Option<Ipv4Addr> {
        self.ipv4.map(super::ipv4::node_address_v4)
    }

    /// Whether `now` is past the end of validity.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now > self.not_after
    }
}

/// Reads the serial as a u64 (our serials are positive counters); larger
/// serials are not ours.
pub(crate) fn serial_u64(raw: &[u8]) -> Result<u64, IdentityError> {
    let trimmed: &[u8] = {
        let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
        &raw[start..]
    };
    if trimmed.len() > 8 {
        return Err(IdentityError::NotNodeCertificate(
            "serial larger than 64 bits",
        ));
    }
    let mut buf = [0u8; 8];
    buf[8 - trimmed.len()..].copy_from_slice(trimmed);
    Ok(u64::from_be_bytes(buf))
}

/// Extracts the DER of the first `CERTIFICATE` PEM block.
pub(crate) fn cert_der_from_pem(pem: &str) -> Result<Vec<u8>, IdentityError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|_| IdentityError::BadPem {
            expected: "CERTIFICATE",
        })
}

/// PEM-encodes DER under `label`.
pub(crate) fn der_to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_conversion() {
        assert_eq!(serial_u64(&[0, 1, 2]).unwrap(), 0x0102);
        assert_eq!(serial_u64(&[]).unwrap(), 0);
        assert!(serial_u64(&[1; 9]).is_err());
        assert_eq!(
            serial_u64(&[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap(),
            u64::MAX
        );
    }

    #[test]
    fn address_is_first_host() {
        let p: Ipv6Net = "fd00:1:2:3::/64".parse().unwrap();
        assert_eq!(
            node_address(p),
            "fd00:1:2:3::1".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn garbage_is_malformed_not_panic() {
        assert!(NodeCert::from_der(b"\x30\x03\x02\x01").is_err());
        assert!(matches!(
            NodeCert::from_pem("hello"),
            Err(IdentityError::BadPem { .. })
        ));
    }
}
