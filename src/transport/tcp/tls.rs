//! The TCP tunnels' TLS: rustls configurations from the same identity,
//! CA, CRL and verifiers as the QUIC tunnels' ([`crate::identity::tls`]),
//! with an ALPN of their own so that neither transport's peer is taken for
//! the other's. Rebuilt when the CRL or the certificate changes.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

use crate::identity::tls::{TlsIdentity, Trust};
use crate::identity::{Crl, NodeCert};
use crate::transport::TransportError;

/// ALPN of tunnels over TCP.
pub const ALPN_TCP: &[u8] = b"re6st-tcp/1";

/// What can change at run time, and the configurations that follow.
pub(super) struct Tls {
    ca_der: Vec<u8>,
    identity: TlsIdentity,
    me: NodeCert,
    crl: Option<Crl>,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn build(
    trust: &Trust,
    identity: &TlsIdentity,
) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), TransportError> {
    let mut server = trust.server_config(identity.clone())?;
    server.alpn_protocols = vec![ALPN_TCP.to_vec()];
    // Plaintext beyond what the engine bounds itself is refused.
    server.send_half_rtt_data = false;
    let mut client = trust.node_client_config(identity.clone())?;
    client.alpn_protocols = vec![ALPN_TCP.to_vec()];
    Ok((Arc::new(server), Arc::new(client)))
}

impl Tls {
    pub(super) fn new(
        me: NodeCert,
        identity: TlsIdentity,
        ca_der: &[u8],
        crl: Option<Crl>,
    ) -> Result<Self, TransportError> {
        let (server, client) = build(&Trust::new(ca_der, crl.as_ref()), &identity)?;
        Ok(Self {
            ca_der: ca_der.to_vec(),
            identity,
            me,
            crl,
            server,
            client,
        })
    }

    fn rebuild(&mut self) -> Result<(), TransportError> {
        let trust = Trust::new(&self.ca_der, self.crl.as_ref());
        (self.server, self.client) = build(&trust, &self.identity)?;
        Ok(())
    }

    pub(super) fn crl(&self) -> Option<&Crl> {
        self.crl.as_ref()
    }

    pub(super) fn crl_number(&self) -> u64 {
        self.crl.as_ref().map_or(0, |c| c.number)
    }

    /// Adopts `crl` if newer; new handshakes check it.
    pub(super) fn set_crl(&mut self, crl: Crl) -> Result<(), TransportError> {
        if self.crl.as_ref().is_some_and(|c| c.number >= crl.number) {
            return Ok(());
        }
        let old = self.crl.replace(crl);
        if let Err(e) = self.rebuild() {
            self.crl = old;
            return Err(e);
        }
        Ok(())
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

    /// A client session to the node whose overlay address is `peer`.
    pub(super) fn client(&self, peer: std::net::Ipv6Addr) -> Result<ClientConnection, String> {
        let name = ServerName::IpAddress(std::net::IpAddr::V6(peer).into());
        ClientConnection::new(self.client.clone(), name).map_err(|e| e.to_string())
    }

    /// A server session for an accepted socket.
    pub(super) fn server(&self) -> Result<ServerConnection, String> {
        ServerConnection::new(self.server.clone()).map_err(|e| e.to_string())
    }
}
