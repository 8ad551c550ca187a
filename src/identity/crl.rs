//! The certificate revocation list: parsed, signature-checked against the
//! CA, and queried by serial.
//!
//! The registry lists only revoked certificates that have not expired yet:
//! an expired certificate is refused anyway, so the CRL stays small (unlike
//! re6stnet's, which never shrank).

use std::collections::BTreeMap;
use std::time::SystemTime;

use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::cert::{der_to_pem, serial_u64};
use super::{IdentityError, from_unix_secs};

/// One revoked serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrlEntry {
    /// The revoked certificate's serial.
    pub serial: u64,
    /// When it was revoked.
    pub revoked_at: SystemTime,
}

/// A CRL whose signature was checked against the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    /// DER encoding (what rustls/webpki consume).
    pub der: Vec<u8>,
    /// The CRL number: a newer CRL has a larger one.
    pub number: u64,
    /// Issue time.
    pub this_update: SystemTime,
    /// When a newer CRL is due.
    pub next_update: Option<SystemTime>,
    revoked: BTreeMap<u64, SystemTime>,
}

impl Crl {
    /// Parses a PEM CRL (`X509 CRL`) and checks it was signed by the CA
    /// whose DER certificate is `ca_der`.
    pub fn from_pem(pem: &str, ca_der: &[u8]) -> Result<Self, IdentityError> {
        use rustls::pki_types::CertificateRevocationListDer;
        use rustls::pki_types::pem::PemObject;
        let der = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
            IdentityError::BadPem {
                expected: "X509 CRL",
            }
        })?;
        Self::from_der(der.as_ref(), ca_der)
    }

    /// Parses a DER CRL and checks its signature against the CA.
    pub fn from_der(der: &[u8], ca_der: &[u8]) -> Result<Self, IdentityError> {
        let malformed = |detail: String| IdentityError::Malformed {
            what: "CRL",
            detail,
        };
        let (rest, crl) =
            CertificateRevocationList::from_der(der).map_err(|e| malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(malformed("trailing bytes".into()));
        }
        let (_, ca) = x509_parser::certificate::X509Certificate::from_der(ca_der).map_err(|e| {
            IdentityError::Malformed {
                what: "CA certificate",
                detail: e.to_string(),
            }
        })?;
        if crl.issuer() != ca.subject() {
            return Err(IdentityError::BadSignature {
                what: "CRL (issuer is not the CA)",
            });
        }
        crl.verify_signature(ca.public_key())
            .map_err(|_| IdentityError::BadSignature { what: "CRL" })?;
        let mut revoked = BTreeMap::new();
        for r in crl.iter_revoked_certificates() {
            let serial = serial_u64(r.raw_serial())
                .map_err(|_| malformed("revoked serial larger than 64 bits".into()))?;
            let at = from_unix_secs(u64::try_from(r.revocation_date.timestamp()).unwrap_or(0));
            revoked.insert(serial, at);
        }
        let number = match crl.crl_number() {
            Some(n) => {
                u64::try_from(n).map_err(|_| malformed("CRL number larger than 64 bits".into()))?
            }
            None => 0,
        };
        let ts = |t: x509_parser::time::ASN1Time| {
            from_unix_secs(u64::try_from(t.timestamp()).unwrap_or(0))
        };
        Ok(Self {
            der: der.to_vec(),
            number,
            this_update: ts(crl.last_update()),
            next_update: crl.next_update().map(ts),
            revoked,
        })
    }

    /// PEM encoding (`X509 CRL`).
    pub fn to_pem(&self) -> String {
        der_to_pem("X509 CRL", &self.der)
    }

    /// Whether `serial` is revoked.
    pub fn is_revoked(&self, serial: u64) -> bool {
        self.revoked.contains_key(&serial)
    }

    /// Every revoked serial, ascending.
    pub fn entries(&self) -> impl Iterator<Item = CrlEntry> + '_ {
        self.revoked.iter().map(|(s, t)| CrlEntry {
            serial: *s,
            revoked_at: *t,
        })
    }

    /// The DER as rustls wants it.
    pub fn to_rustls(&self) -> rustls::pki_types::CertificateRevocationListDer<'static> {
        self.der.clone().into()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::identity::Ca;

    #[test]
    fn sign_parse_and_check() {
        let now = SystemTime::now();
        let ca = Ca::generate(
            "fd00:1::/48".parse().unwrap(),
            1,
            now,
            Duration::from_secs(99_999),
        )
        .unwrap();
        let der = ca
            .sign_crl(
                7,
                &[(5, now), (9, now)],
                now,
                now + Duration::from_secs(600),
            )
            .unwrap();
        let crl = Crl::from_der(&der, ca.cert_der()).unwrap();
        assert_eq!(crl.number, 7);
        assert!(crl.is_revoked(5) && crl.is_revoked(9) && !crl.is_revoked(6));
        assert_eq!(crl.entries().count(), 2);
        let again = Crl::from_pem(&crl.to_pem(), ca.cert_der()).unwrap();
        assert_eq!(again, crl);
        // Another CA's CRL is refused.
        let other = Ca::generate(
            "fd00:1::/48".parse().unwrap(),
            1,
            now,
            Duration::from_secs(99_999),
        )
        .unwrap();
        assert!(matches!(
            Crl::from_der(&der, other.cert_der()),
            Err(IdentityError::BadSignature { .. })
        ));
        assert!(Crl::from_der(&der[..der.len() - 3], ca.cert_der()).is_err());
    }
}
