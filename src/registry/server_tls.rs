//! The registry's own HTTPS identity: a certificate from the network CA
//! for its host names, replaced before it expires, and the client
//! certificate check that lets the handlers decide.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::DigitallySignedStruct;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tracing::info;

use super::core::Registry;
use crate::identity::tls::{TlsIdentity, Trust, provider};
use crate::identity::{IssueParams, NodeCert, NodeKey};

/// Accepts any CA-signed client certificate, also an expired one (checked
/// at its own `notAfter`), and none at all; the handlers decide.
#[derive(Debug)]
struct LenientClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for LenientClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) => {
                let not_after = NodeCert::from_der(end_entity)
                    .map_err(|_| Error::InvalidCertificate(CertificateError::Expired))?
                    .not_after;
                let at = UnixTime::since_unix_epoch(Duration::from_secs(
                    crate::identity::unix_secs(not_after),
                ));
                self.inner.verify_client_cert(end_entity, intermediates, at)
            }
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Lifetime of the registry's own HTTPS certificate...
pub const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(90 * 86_400);
/// ...which is replaced (without a restart) when it has less than this left.
pub const SERVER_CERT_RENEW: Duration = Duration::from_secs(30 * 86_400);

/// The registry's HTTPS identity: a CA-signed certificate for its host
/// names, replaced before it expires.
#[derive(Debug)]
pub struct ServerTls {
    hostnames: Vec<String>,
    current: RwLock<(Arc<rustls::ServerConfig>, SystemTime)>,
}

impl ServerTls {
    /// The TLS config for new connections.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Issues a new certificate if the current one expires within
    /// [`SERVER_CERT_RENEW`].
    pub fn refresh_if_due(&self, registry: &Registry, now: SystemTime) -> anyhow::Result<bool> {
        let not_after = self.current.read().unwrap_or_else(|p| p.into_inner()).1;
        if not_after > now + SERVER_CERT_RENEW {
            return Ok(false);
        }
        let fresh = issue_server_config(registry, &self.hostnames, now)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        info!("registry HTTPS certificate renewed");
        Ok(true)
    }
}

/// Issues the registry's own HTTPS certificate (fresh key, CA-signed, valid
/// [`SERVER_CERT_LIFETIME`]) for `hostnames` (DNS names or IPs).
pub fn server_tls(
    registry: &Registry,
    hostnames: &[String],
    now: SystemTime,
) -> anyhow::Result<ServerTls> {
    Ok(ServerTls {
        hostnames: hostnames.to_vec(),
        current: RwLock::new(issue_server_config(registry, hostnames, now)?),
    })
}

fn issue_server_config(
    registry: &Registry,
    hostnames: &[String],
    now: SystemTime,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, SystemTime)> {
    let key = NodeKey::generate()?;
    let (mut dns, mut ips) = (vec![], vec![]);
    for h in hostnames {
        match h.parse::<std::net::IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(h.clone()),
        }
    }
    let serial = super::core::off_runtime(|| registry.store.take_serials(1))?;
    let p = IssueParams {
        serial,
        not_before: now - Duration::from_secs(300),
        not_after: now + SERVER_CERT_LIFETIME,
    };
    let spki = key.spki_der();
    let der = registry.ca.issue_server(&spki, &dns, &ips, p)?;
    super::core::off_runtime(|| {
        registry
            .store
            .record_server_cert(serial, &der, &spki, p.not_before, p.not_after, now)
    })?;
    let trust = Trust::new(registry.ca.cert_der(), None);
    let verifier = Arc::new(LenientClientVerifier {
        inner: trust.client_verifier()?,
    });
    let me = TlsIdentity {
        chain: vec![der.into()],
        key: key.to_rustls(),
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(me.chain, me.key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), p.not_after))
}
