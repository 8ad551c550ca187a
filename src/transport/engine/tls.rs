//! The engine's TLS: quinn-proto's server and client configurations, built
//! from the node's identity, the network CA and the CRL in force, and
//! rebuilt when the CRL or the certificate changes.
//!
//! The checks are [`crate::identity::tls`]'s: mutual TLS 1.3, both
//! certificates chained to the CA, valid now and not on the CRL. The
//! dialler names the peer by its overlay address; a certificate valid for
//! another node's address completes the handshake and the engine compares
//! addresses afterwards ([`crate::identity::tls::NodeServerVerifier`]).

use std::sync::Arc;

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;

use super::super::{ALPN, TransportConfig, TransportError};
use crate::identity::tls::{TlsIdentity, Trust};
use crate::identity::{Crl, IdentityError, NodeCert};

/// QUIC settings from the node's transport knobs. No QUIC keep-alive: the
/// engine sends its own, only on silent tunnels, all on one timer grid.
pub fn transport_config(
    c: &TransportConfig,
) -> Result<quinn_proto::TransportConfig, TransportError> {
    let mut t = quinn_proto::TransportConfig::default();
    let idle = quinn_proto::IdleTimeout::try_from(c.idle_timeout)
        .map_err(|_| TransportError::Config(format!("idle timeout {:?}", c.idle_timeout)))?;
    if c.initial_mtu < 1200 || c.mtu_upper_bound < c.initial_mtu {
        return Err(TransportError::Config(format!(
            "MTU: initial {} must be at least 1200 and at most the upper bound {}",
            c.initial_mtu, c.mtu_upper_bound
        )));
    }
    if c.suspect_after <= c.keep_alive {
        return Err(TransportError::Config(format!(
            "suspect time {:?} must be longer than the keep-alive interval {:?}",
            c.suspect_after, c.keep_alive
        )));
    }
    // The peer acknowledges every ack-eliciting packet at once instead of
    // after its ACK delay: a keep-alive is answered in the wake-up that
    // receives it, not in a second one 25 ms later. Under load nothing
    // changes: one ACK still covers a whole receive batch.
    let mut acks = quinn_proto::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(0u32.into());
    let mut mtud = quinn_proto::MtuDiscoveryConfig::default();
    mtud.upper_bound(c.mtu_upper_bound);
    t.max_idle_timeout(Some(idle))
        .initial_mtu(c.initial_mtu)
        .mtu_discovery_config(Some(mtud))
        .ack_frequency_config(Some(acks))
        .datagram_send_buffer_size(c.datagram_send_buffer)
        .datagram_receive_buffer_size(Some(c.datagram_receive_buffer))
        // One control stream per tunnel (and room for a newer protocol).
        .max_concurrent_bidi_streams(4u32.into())
        .max_concurrent_uni_streams(0u32.into());
    Ok(t)
}

/// What can change at run time: the CRL and our own certificate; the
/// configurations follow them.
pub(super) struct Tls {
    ca_der: Vec<u8>,
    identity: TlsIdentity,
    me: NodeCert,
    crl: Option<Crl>,
    quic: Arc<quinn_proto::TransportConfig>,
    max_incoming: usize,
    pub(super) server: Arc<quinn_proto::ServerConfig>,
    pub(super) client: quinn_proto::ClientConfig,
}

impl Tls {
    /// Configurations for `me` (whose key `identity` holds), trusting
    /// `ca_der` and applying `crl`.
    pub(super) fn new(
        me: NodeCert,
        identity: TlsIdentity,
        ca_der: &[u8],
        crl: Option<Crl>,
        quic: Arc<quinn_proto::TransportConfig>,
        max_incoming: usize,
    ) -> Result<Self, TransportError> {
        let trust = Trust::new(ca_der, crl.as_ref());
        let mut server = server_config(&trust, identity.clone(), &quic)?;
        server.max_incoming(max_incoming);
        let client = client_config(&trust, identity.clone(), &quic)?;
        Ok(Self {
            ca_der: ca_der.to_vec(),
            identity,
            me,
            crl,
            quic,
            max_incoming,
            server: Arc::new(server),
            client,
        })
    }

    fn rebuild(&mut self) -> Result<(), TransportError> {
        let trust = Trust::new(&self.ca_der, self.crl.as_ref());
        let mut server = server_config(&trust, self.identity.clone(), &self.quic)?;
        server.max_incoming(self.max_incoming);
        self.client = client_config(&trust, self.identity.clone(), &self.quic)?;
        self.server = Arc::new(server);
        Ok(())
    }

    /// Our certificate.
    pub(super) fn me(&self) -> &NodeCert {
        &self.me
    }

    /// The CRL in force.
    pub(super) fn crl(&self) -> Option<&Crl> {
        self.crl.as_ref()
    }

    /// Number of the CRL in force (0: none).
    pub(super) fn crl_number(&self) -> u64 {
        self.crl.as_ref().map_or(0, |c| c.number)
    }

    /// Adopts `crl` if it is newer than the one in force; returns whether
    /// it changed. New handshakes check it at once.
    pub(super) fn set_crl(&mut self, crl: Crl) -> Result<bool, TransportError> {
        if self.crl.as_ref().is_some_and(|c| c.number >= crl.number) {
            return Ok(false);
        }
        let old = self.crl.replace(crl);
        if let Err(e) = self.rebuild() {
            self.crl = old;
            return Err(e);
        }
        Ok(true)
    }

    /// Presents `cert` (renewed: same key) in new handshakes.
    pub(super) fn set_identity(&mut self, cert: NodeCert) -> Result<(), TransportError> {
        let identity = TlsIdentity {
            chain: vec![cert.to_rustls()],
            key: self.identity.key.clone_key(),
        };
        let old = std::mem::replace(&mut self.identity, identity);
        if let Err(e) = self.rebuild() {
            self.identity = old;
            return Err(e);
        }
        self.me = cert;
        Ok(())
    }

    /// The peer's node certificate on a completed handshake, checked again
    /// against the CRL in force (it may have changed during the
    /// handshake).
    pub(super) fn peer_cert(&self, conn: &quinn_proto::Connection) -> Result<NodeCert, String> {
        peer_node_cert(conn.crypto_session().peer_identity(), self.crl.as_ref())
    }
}

/// The node certificate a completed handshake's peer presented (rustls
/// gives its chain as `identity`), checked again against `crl`: it may
/// have changed during the handshake.
pub(crate) fn peer_node_cert(
    identity: Option<Box<dyn std::any::Any>>,
    crl: Option<&Crl>,
) -> Result<NodeCert, String> {
    let certs = identity
        .and_then(|a| a.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| "no peer certificate".to_string())?;
    let leaf = certs
        .first()
        .ok_or_else(|| "empty certificate chain".to_string())?;
    let cert = NodeCert::from_der(leaf).map_err(|e| e.to_string())?;
    if crl.is_some_and(|c| c.is_revoked(cert.serial)) {
        return Err(format!("certificate serial {} is revoked", cert.serial));
    }
    Ok(cert)
}

pub(crate) fn server_config(
    trust: &Trust,
    me: TlsIdentity,
    quic: &Arc<quinn_proto::TransportConfig>,
) -> Result<quinn_proto::ServerConfig, IdentityError> {
    let mut tls = trust.server_config(me)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls)
        .map_err(|e| IdentityError::Internal(format!("QUIC server config: {e}")))?;
    let mut s = quinn_proto::ServerConfig::with_crypto(Arc::new(crypto));
    s.transport_config(quic.clone());
    Ok(s)
}

pub(crate) fn client_config(
    trust: &Trust,
    me: TlsIdentity,
    quic: &Arc<quinn_proto::TransportConfig>,
) -> Result<quinn_proto::ClientConfig, IdentityError> {
    let mut tls = trust.node_client_config(me)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls)
        .map_err(|e| IdentityError::Internal(format!("QUIC client config: {e}")))?;
    let mut c = quinn_proto::ClientConfig::new(Arc::new(crypto));
    c.transport_config(quic.clone());
    Ok(c)
}
