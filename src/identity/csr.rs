//! Certificate signing requests: made by `re6st join`, checked by the
//! registry. Only the key of a CSR is used; the names it asks for are
//! ignored (the registry chooses the prefix).

use rcgen::{CertificateParams, DistinguishedName, DnType};
use rustls::pki_types::CertificateSigningRequestDer;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use super::{IdentityError, NodeKey, PublicKey};

/// A CSR whose self-signature has been verified and whose key type is
/// accepted.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    /// The requested key.
    pub public_key: PublicKey,
}

impl CertificateRequest {
    /// Parses a PEM CSR (`CERTIFICATE REQUEST`), checks its signature and key
    /// type. Each failure has its own error variant.
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        use rustls::pki_types::pem::PemObject;
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
            IdentityError::BadPem {
                expected: "CERTIFICATE REQUEST",
            }
        })?;
        Self::from_der(der.as_ref())
    }

    /// Parses a DER CSR.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (rest, csr) =
            X509CertificationRequest::from_der(der).map_err(|e| IdentityError::Malformed {
                what: "certificate request",
                detail: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(IdentityError::Malformed {
                what: "certificate request",
                detail: "trailing bytes".into(),
            });
        }
        // Key type first: a CSR with an RSA key should say "unsupported key
        // type", not "bad signature".
        let public_key = PublicKey::from_spki(&csr.certification_request_info.subject_pki)?;
        csr.verify_signature()
            .map_err(|_| IdentityError::BadSignature {
                what: "certificate request",
            })?;
        Ok(Self { public_key })
    }
}

/// Makes a PEM CSR for `key`. The subject is informational only.
pub fn make_csr(key: &NodeKey) -> Result<String, IdentityError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "re6st node");
    params.distinguished_name = dn;
    params
        .serialize_request(key.key_pair())
        .and_then(|r| r.pem())
        .map_err(|e| IdentityError::Internal(format!("making CSR: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let k = NodeKey::generate().unwrap();
        let csr = make_csr(&k).unwrap();
        let req = CertificateRequest::from_pem(&csr).unwrap();
        assert_eq!(req.public_key, k.public_key().unwrap());
    }

    #[test]
    fn tampered_signature_is_refused() {
        let k = NodeKey::generate().unwrap();
        let csr = make_csr(&k).unwrap();
        use rustls::pki_types::pem::PemObject;
        let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        // The signature BIT STRING is last: flip its final byte.
        let n = der.len();
        der[n - 1] ^= 0x55;
        assert!(matches!(
            CertificateRequest::from_der(&der),
            Err(IdentityError::BadSignature { .. })
        ));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            CertificateRequest::from_pem(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            ),
            Err(IdentityError::Malformed { .. })
        ));
        assert!(matches!(
            CertificateRequest::from_pem("nothing"),
            Err(IdentityError::BadPem { .. })
        ));
    }
}
