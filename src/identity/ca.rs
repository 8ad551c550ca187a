//! The network's certificate authority: issues node and registry-server
//! certificates, signs the CRL and the network configuration.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use ipnet::{Ipv4Net, Ipv6Net};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType, SerialNumber,
    SubjectPublicKeyInfo,
};

use super::cert::{cert_der_from_pem, der_to_pem};
use super::{IdentityError, NodeKey, PublicKey, node_address, to_offset};

/// Validity and serial of a certificate to issue.
#[derive(Debug, Clone, Copy)]
pub struct IssueParams {
    /// The certificate serial (unique; the caller keeps the counter).
    pub serial: u64,
    /// Start of validity (the caller backdates it a little for clock skew).
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

/// The CA: its key and certificate.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
    key_pem: String,
    public_key: PublicKey,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Makes a new self-signed CA for `network`, valid from `now` for
    /// `lifetime`.
    pub fn generate(
        network: Ipv6Net,
        serial: u64,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Self, IdentityError> {
        let key = NodeKey::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "re6st");
        dn.push(DnType::CommonName, format!("re6st CA {network}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before = to_offset(now - Duration::from_secs(3600).min(now_since_epoch(now)));
        params.not_after = to_offset(now + lifetime);
        let kp = key.into_key_pair();
        let cert = params
            .self_signed(&kp)
            .map_err(|e| IdentityError::Internal(format!("self-signing CA: {e}")))?;
        Self::from_parts(cert.der(), kp)
    }

    /// Loads a CA from its PEM certificate and PEM key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        let der = cert_der_from_pem(cert_pem)?;
        let kp = KeyPair::from_pem(key_pem).map_err(|e| IdentityError::Malformed {
            what: "CA key",
            detail: e.to_string(),
        })?;
        Self::from_parts(&der, kp)
    }

    fn from_parts(cert_der: &[u8], kp: KeyPair) -> Result<Self, IdentityError> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let key_pem = kp.serialize_pem();
        let (_, parsed) =
            X509Certificate::from_der(cert_der).map_err(|e| IdentityError::Malformed {
                what: "CA certificate",
                detail: e.to_string(),
            })?;
        let public_key = PublicKey::from_spki(parsed.public_key())?;
        if public_key.spki_der != rcgen::PublicKeyData::subject_public_key_info(&kp) {
            return Err(IdentityError::Invalid {
                field: "CA key",
                detail: "does not match the CA certificate".into(),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.to_vec().into(), kp).map_err(|e| {
            IdentityError::Malformed {
                what: "CA certificate",
                detail: e.to_string(),
            }
        })?;
        Ok(Self {
            issuer,
            cert_der: cert_der.to_vec(),
            key_pem,
            public_key,
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        der_to_pem("CERTIFICATE", &self.cert_der)
    }

    /// The CA key, PKCS#8 PEM (store with mode 0600).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA public key (verifies network configurations).
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// SHA-256 of the CA certificate DER: what `re6st join --ca-fingerprint` pins.
    pub fn fingerprint(&self) -> super::Fingerprint {
        super::Fingerprint::of(&self.cert_der)
    }

    /// Signs `msg` with the CA key.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, IdentityError> {
        rcgen::SigningKey::sign(self.issuer.key(), msg)
            .map_err(|e| IdentityError::Internal(format!("CA signing: {e}")))
    }

    /// Issues a node certificate for `prefix` over `spki_der` (the key taken
    /// from the node's CSR). CN = prefix, IP SAN = `prefix::1`.
    pub fn issue_node(
        &self,
        spki_der: &[u8],
        prefix: Ipv6Net,
        p: IssueParams,
    ) -> Result<Vec<u8>, IdentityError> {
        self.issue_node_with_ipv4(spki_der, prefix, None, p)
    }

    /// [`Self::issue_node`], and the node's IPv4 subnet in an IP address
    /// block extension ([`super::ipv4`]) when the network has IPv4.
    pub fn issue_node_with_ipv4(
        &self,
        spki_der: &[u8],
        prefix: Ipv6Net,
        ipv4: Option<Ipv4Net>,
        p: IssueParams,
    ) -> Result<Vec<u8>, IdentityError> {
        if prefix.prefix_len() > 127 {
            return Err(IdentityError::Invalid {
                field: "prefix",
                detail: format!("{prefix} is longer than /127"),
            });
        }
        let mut params = leaf_params(p);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, prefix.trunc().to_string());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::IpAddress(IpAddr::V6(node_address(prefix)))];
        if let Some(subnet) = ipv4 {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    super::ipv4::OID,
                    super::ipv4::encode(subnet),
                ));
        }
        self.sign_leaf(&params, spki_der)
    }

    /// Issues the registry's HTTPS server certificate for DNS names and IP
    /// addresses, so nodes can check the registry against the pinned CA.
    pub fn issue_server(
        &self,
        spki_der: &[u8],
        dns_names: &[String],
        ips: &[IpAddr],
        p: IssueParams,
    ) -> Result<Vec<u8>, IdentityError> {
        let mut params = leaf_params(p);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "re6st registry");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        for name in dns_names {
            let name = name
                .clone()
                .try_into()
                .map_err(|_| IdentityError::Invalid {
                    field: "hostname",
                    detail: format!("{name:?} is not a DNS name"),
                })?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        self.sign_leaf(&params, spki_der)
    }

    fn sign_leaf(
        &self,
        params: &CertificateParams,
        spki_der: &[u8],
    ) -> Result<Vec<u8>, IdentityError> {
        let spki =
            SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| IdentityError::Malformed {
                what: "public key",
                detail: e.to_string(),
            })?;
        params
            .signed_by(&spki, &self.issuer)
            .map(|c| c.der().to_vec())
            .map_err(|e| IdentityError::Internal(format!("signing certificate: {e}")))
    }

    /// Signs a CRL listing `revoked` (serial, revocation time). `number`
    /// must grow with every CRL issued; `next_update` tells verifiers when to
    /// expect a newer one.
    pub fn sign_crl(
        &self,
        number: u64,
        revoked: &[(u64, SystemTime)],
        now: SystemTime,
        next_update: SystemTime,
    ) -> Result<Vec<u8>, IdentityError> {
        let params = CertificateRevocationListParams {
            this_update: to_offset(now),
            next_update: to_offset(next_update),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, at)| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: to_offset(*at),
                    reason_code: Some(RevocationReason::Unspecified),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .map(|c| c.der().to_vec())
            .map_err(|e| IdentityError::Internal(format!("signing CRL: {e}")))
    }
}

fn now_since_epoch(now: SystemTime) -> Duration {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

fn leaf_params(p: IssueParams) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.serial_number = Some(SerialNumber::from(p.serial));
    params.not_before = to_offset(p.not_before);
    params.not_after = to_offset(p.not_after);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{CertificateRequest, NodeCert, make_csr};

    #[test]
    fn issue_and_parse_node_cert() {
        let now = SystemTime::now();
        let net: Ipv6Net = "fd00:aa::/48".parse().unwrap();
        let ca = Ca::generate(net, 1, now, Duration::from_secs(86400 * 3650)).unwrap();
        let k = NodeKey::generate().unwrap();
        let req = CertificateRequest::from_pem(&make_csr(&k).unwrap()).unwrap();
        let prefix: Ipv6Net = "fd00:aa:0:7::/64".parse().unwrap();
        let der = ca
            .issue_node(
                &req.public_key.spki_der,
                prefix,
                IssueParams {
                    serial: 42,
                    not_before: now,
                    not_after: now + Duration::from_secs(3600),
                },
            )
            .unwrap();
        let cert = NodeCert::from_der(&der).unwrap();
        assert_eq!(cert.serial, 42);
        assert_eq!(cert.prefix, prefix);
        assert_eq!(cert.address.to_string(), "fd00:aa:0:7::1");
        assert_eq!(cert.public_key, k.public_key().unwrap());
        assert_eq!(
            crate::identity::unix_secs(cert.not_after),
            crate::identity::unix_secs(now + Duration::from_secs(3600))
        );
        // Reload from PEM gives the same CA.
        let again = Ca::from_pem(&ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        // A key that is not the CA's is refused.
        let other = NodeKey::generate().unwrap();
        assert!(Ca::from_pem(&ca.cert_pem(), &other.to_pem()).is_err());
    }

    #[test]
    fn node_cert_with_an_ipv4_subnet() {
        let now = SystemTime::now();
        let net: Ipv6Net = "fd00:aa::/48".parse().unwrap();
        let ca = Ca::generate(net, 1, now, Duration::from_secs(86400)).unwrap();
        let k = NodeKey::generate().unwrap();
        let p = IssueParams {
            serial: 43,
            not_before: now,
            not_after: now + Duration::from_secs(3600),
        };
        let prefix: Ipv6Net = "fd00:aa:0:8::/64".parse().unwrap();
        let subnet: Ipv4Net = "10.42.3.0/24".parse().unwrap();
        let der = ca
            .issue_node_with_ipv4(&k.spki_der(), prefix, Some(subnet), p)
            .unwrap();
        let cert = NodeCert::from_der(&der).unwrap();
        assert_eq!(cert.ipv4, Some(subnet));
        assert_eq!(cert.ipv4_address(), Some("10.42.3.1".parse().unwrap()));
        assert_eq!(cert.prefix, prefix);
        // TLS accepts it: the extension is not critical.
        let trust = crate::identity::tls::Trust::new(ca.cert_der(), None);
        let verifier = crate::identity::tls::CaVerifier::new(&trust).unwrap();
        verifier.verify(&der, now + Duration::from_secs(1)).unwrap();
        // Without IPv4, no extension.
        let der = ca.issue_node(&k.spki_der(), prefix, p).unwrap();
        assert_eq!(NodeCert::from_der(&der).unwrap().ipv4, None);
    }
}
