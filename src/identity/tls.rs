//! rustls configurations for mutual TLS inside the network: every peer
//! proves a certificate from the network CA that is not on the CRL.
//!
//! Only the ring provider is used (`builder_with_provider`), TLS 1.3 only.
//! The same [`rustls::ServerConfig`]/[`rustls::ClientConfig`] serve the
//! node's QUIC transport (wrap them with `quinn::crypto::rustls::QuicServerConfig`
//! / `QuicClientConfig`; set `alpn_protocols` first) and HTTPS to the
//! registry. A client dials a node by its overlay address as the server name
//! (`ServerName::IpAddress`), and webpki checks the certificate's IP SAN, so
//! the peer is authenticated as the owner of that address.
//!
//! Verifiers are immutable: when the CRL changes, build new configs from a
//! new [`Trust`] (quinn: `Endpoint::set_server_config`, `connect_with`).

use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};

use super::{Crl, IdentityError, NodeCert, NodeKey, unix_secs};

/// The ring crypto provider, the only one in the tree.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key, presented to the other side.
#[derive(Debug)]
pub struct TlsIdentity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
}

impl TlsIdentity {
    /// A node's identity (its certificate alone; the CA is the trust anchor).
    pub fn node(cert: &NodeCert, key: &NodeKey) -> Self {
        Self {
            chain: vec![cert.to_rustls()],
            key: key.to_rustls(),
        }
    }
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// What a peer must chain to: the CA, and the CRL to apply.
#[derive(Debug, Clone)]
pub struct Trust {
    ca: CertificateDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
}

fn tls_err(e: impl std::fmt::Display) -> IdentityError {
    IdentityError::Internal(format!("TLS configuration: {e}"))
}

impl Trust {
    /// Trust `ca_der`, applying `crl` when given. Without a CRL revocation is
    /// not checked, so nodes should always load one.
    pub fn new(ca_der: &[u8], crl: Option<&Crl>) -> Self {
        Self {
            ca: CertificateDer::from(ca_der.to_vec()),
            crls: crl.map(Crl::to_rustls).into_iter().collect(),
        }
    }

    /// The CA certificate.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    /// A root store holding only the CA.
    pub fn roots(&self) -> Result<Arc<RootCertStore>, IdentityError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).map_err(tls_err)?;
        Ok(Arc::new(roots))
    }

    /// Verifies client certificates: CA chain, validity, CRL; mandatory.
    pub fn client_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, IdentityError> {
        WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
            .with_crls(self.crls.clone())
            .build()
            .map_err(tls_err)
    }

    /// Verifies server certificates: CA chain, validity, CRL, name.
    pub fn server_verifier(&self) -> Result<Arc<WebPkiServerVerifier>, IdentityError> {
        WebPkiServerVerifier::builder_with_provider(self.roots()?, provider())
            .with_crls(self.crls.clone())
            .build()
            .map_err(tls_err)
    }

    /// A server config that requires a client certificate from the CA and
    /// refuses revoked ones. TLS 1.3 only.
    pub fn server_config(&self, me: TlsIdentity) -> Result<ServerConfig, IdentityError> {
        ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(self.client_verifier()?)
            .with_single_cert(me.chain, me.key)
            .map_err(tls_err)
    }

    /// A client config that checks the server against the CA and the CRL and
    /// presents `me` when asked. TLS 1.3 only.
    pub fn client_config(&self, me: Option<TlsIdentity>) -> Result<ClientConfig, IdentityError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_webpki_verifier(self.server_verifier()?);
        match me {
            Some(me) => builder
                .with_client_auth_cert(me.chain, me.key)
                .map_err(tls_err),
            None => Ok(builder.with_no_client_auth()),
        }
    }
}

impl Trust {
    /// The client config a node dials other nodes with: as
    /// [`Trust::client_config`], except that a server certificate that is
    /// valid (CA, validity, CRL) but for another overlay address completes
    /// the handshake ([`NodeServerVerifier`]); the dialler then sees whose
    /// it is and closes.
    pub fn node_client_config(&self, me: TlsIdentity) -> Result<ClientConfig, IdentityError> {
        let verifier = Arc::new(NodeServerVerifier {
            inner: self.server_verifier()?,
        });
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(me.chain, me.key)
            .map_err(tls_err)
    }
}

/// The server verifier of node-to-node dials: every check of webpki's
/// (chain to the CA, validity, CRL, signatures), and the name too, but a
/// certificate valid for *another* node's address is accepted as that
/// node's. The dialler compares the address it wanted with the
/// certificate's after the handshake, before it sends anything: so it
/// learns that the peer it dialled was replaced at that address (a node
/// restarted with a new identity, an address that moved to another node)
/// and forgets the stale entry, where a bare name mismatch would only say
/// "bad certificate" and the dial would be retried forever.
#[derive(Debug)]
pub struct NodeServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let error =
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(
                    e @ rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. },
                    ),
                ) => e,
                other => return other,
            };
        // Whose is it? A node certificate names its own overlay address:
        // verify everything again under that name.
        let own = NodeCert::from_der(end_entity)
            .map(|c| ServerName::IpAddress(std::net::IpAddr::V6(c.address).into()))
            .map_err(|_| error)?;
        self.inner
            .verify_server_cert(end_entity, intermediates, &own, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Checks node certificates outside a TLS handshake (e.g. the certificate in
/// a signed announcement), with the same rules as the TLS verifiers.
#[derive(Debug, Clone)]
pub struct CaVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl CaVerifier {
    /// A verifier for `trust`.
    pub fn new(trust: &Trust) -> Result<Self, IdentityError> {
        Ok(Self {
            inner: trust.client_verifier()?,
        })
    }

    /// Checks that `der` chains to the CA, is valid at `now` and is not
    /// revoked.
    pub fn verify(&self, der: &[u8], now: SystemTime) -> Result<(), IdentityError> {
        let cert = CertificateDer::from(der);
        let t = UnixTime::since_unix_epoch(std::time::Duration::from_secs(unix_secs(now)));
        self.inner
            .verify_client_cert(&cert, &[], t)
            .map(|_| ())
            .map_err(|e| IdentityError::CertificateRejected(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::identity::{Ca, IssueParams};

    #[test]
    fn verifier_checks_ca_expiry_and_crl() {
        let now = SystemTime::now();
        let ca = Ca::generate(
            "fd00:7::/48".parse().unwrap(),
            1,
            now,
            Duration::from_secs(86_400),
        )
        .unwrap();
        let k = NodeKey::generate().unwrap();
        let p = IssueParams {
            serial: 3,
            not_before: now,
            not_after: now + Duration::from_secs(60),
        };
        let der = ca
            .issue_node(&k.spki_der(), "fd00:7:0:1::/64".parse().unwrap(), p)
            .unwrap();
        let v = CaVerifier::new(&Trust::new(ca.cert_der(), None)).unwrap();
        v.verify(&der, now + Duration::from_secs(1)).unwrap();
        assert!(
            v.verify(&der, now + Duration::from_secs(3600)).is_err(),
            "expired"
        );
        let crl = Crl::from_der(
            &ca.sign_crl(1, &[(3, now)], now, now + Duration::from_secs(600))
                .unwrap(),
            ca.cert_der(),
        )
        .unwrap();
        let v = CaVerifier::new(&Trust::new(ca.cert_der(), Some(&crl))).unwrap();
        let err = v
            .verify(&der, now + Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Revoked") || err.contains("revoked"), "{err}");
        let other = Ca::generate(
            "fd00:7::/48".parse().unwrap(),
            1,
            now,
            Duration::from_secs(86_400),
        )
        .unwrap();
        let v = CaVerifier::new(&Trust::new(other.cert_der(), None)).unwrap();
        assert!(
            v.verify(&der, now + Duration::from_secs(1)).is_err(),
            "other CA"
        );
    }
}
