//! How a tunnel is carried: QUIC with mutual TLS on one UDP socket.
//!
//! - [`engine`]: every tunnel of a node as sans-IO quinn-proto state
//!   machines behind one endpoint, NodeCore's tunnel boundary on one side,
//!   UDP datagrams on the other: mutual TLS with the network CA and the
//!   CRL in force ([`crate::identity::tls`]; the dialler checks that the
//!   certificate holds the overlay address it dialled), the control
//!   stream's `Open`/`Accept`, datagram frames, keep-alives only on silent
//!   tunnels and their suspicion ([`engine::liveness`]). The node's packet
//!   loop drives it.
//! - [`udp`]: the packet loop's socket (quinn-udp: GRO, GSO, ECN), and
//!   [`socket`]: binding it, and the switch tests cut it with.
//! - [`control`]: the control stream's messages.
//! - [`Transport`]: the same protocol on quinn's own tasks, a peer that
//!   tests and benchmarks hold in their hands (a rogue node, a prober, a
//!   raw-datagram baseline); the node does not use it.

pub mod control;
mod dial;
pub mod engine;
pub mod socket;
pub mod tcp;
pub mod udp;

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::identity::tls::{TlsIdentity, Trust};
use crate::identity::{Crl, IdentityError, NodeCert, NodeKey};
use engine::tls::{client_config, server_config};
use socket::{FaultSwitch, SwitchedSocket};

/// ALPN of the tunnel protocol; a peer speaking anything else is refused.
pub const ALPN: &[u8] = b"re6st/1";

/// Transport knobs. The defaults suit real networks; tests shorten the
/// timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// QUIC PING interval on idle tunnels (quinn sends one when it has
    /// received nothing for this long; the peer's acknowledgement keeps a
    /// live tunnel heard). Short, so a silence means something; a PING is
    /// a ~50-byte datagram.
    pub keep_alive: Duration,
    /// A tunnel that hears nothing for this long (plus two round trips) is
    /// suspected ([`engine::liveness`]): its routes move away at once, but the
    /// connection stays, and the routes come back with the next datagram.
    pub suspect_after: Duration,
    /// A tunnel that hears nothing for this long is dead and closed (the
    /// effective value is the smaller of both sides'). Long, so a lossy
    /// path is not torn down: suspicion already moved the routes.
    pub idle_timeout: Duration,
    /// A dial that has not completed the handshake after this is abandoned.
    pub handshake_timeout: Duration,
    /// Initial UDP payload size: 1452 fits a 1500-byte IPv6 underlay and
    /// gives 1414-byte datagrams, so a 1280-byte packet always fits.
    pub initial_mtu: u16,
    /// Upper bound of MTU discovery (UDP payload).
    pub mtu_upper_bound: u16,
    /// Bytes of datagrams quinn queues for sending before it drops the
    /// oldest.
    pub datagram_send_buffer: usize,
    /// Bytes of received datagrams quinn buffers before the node reads them.
    pub datagram_receive_buffer: usize,
}

/// Default keep-alive: 5 PINGs a second on an idle tunnel at most.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_millis(200);
/// Default suspect time: three keep-alives heard nothing (routes move away
/// within about 0.65 s of a crash).
pub const DEFAULT_SUSPECT_AFTER: Duration = Duration::from_millis(600);
/// Default idle timeout: the connection of a silent tunnel is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

impl TransportConfig {
    /// The suspect time for a keep-alive interval when none is configured:
    /// three intervals.
    pub fn suspect_after_for(keep_alive: Duration) -> Duration {
        keep_alive * 3
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            keep_alive: DEFAULT_KEEP_ALIVE,
            suspect_after: DEFAULT_SUSPECT_AFTER,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            handshake_timeout: Duration::from_secs(5),
            initial_mtu: 1452,
            mtu_upper_bound: 1452,
            datagram_send_buffer: 2 << 20,
            datagram_receive_buffer: 4 << 20,
        }
    }
}

/// Why the transport could not start or reconfigure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Binding the UDP socket failed.
    #[error("binding UDP {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A transport parameter is out of range.
    #[error("invalid transport setting: {0}")]
    Config(String),
}

/// Why a dial failed. The policy backs the peer off in every case but a
/// refusal, whose reason the dialler reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// None of the peer's addresses can be used from our socket.
    #[error("no usable address among {0:?}")]
    NoUsableAddress(Vec<SocketAddr>),
    /// quinn refused to start the connection.
    #[error("connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The handshake failed or the connection was closed.
    #[error("handshake: {0}")]
    Handshake(#[from] quinn::ConnectionError),
    /// No answer within the handshake timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The peer's certificate is not the one expected.
    #[error("wrong peer: {0}")]
    BadPeer(String),
    /// None of the addresses answered as the node dialled, and at `addr`
    /// another node of the network answered, with a valid certificate:
    /// the node dialled is no longer there (it was replaced, or its
    /// address moved to `found`).
    #[error("{addr} is now {} ({}), not {expected}", found.address, found.prefix)]
    OtherNode {
        /// The address that answered.
        addr: SocketAddr,
        /// The overlay address dialled.
        expected: Ipv6Addr,
        /// The certificate presented there (checked against the CA and
        /// the CRL).
        found: Box<NodeCert>,
    },
}

/// Counters of the transport (handshakes and their failures).
#[derive(Debug, Default)]
pub struct TransportCounters {
    dials: AtomicU64,
    dials_failed: AtomicU64,
    accepted_handshakes: AtomicU64,
    refused_handshakes: AtomicU64,
    refused_revoked: AtomicU64,
    refused_bad_peer: AtomicU64,
    dials_other_node: AtomicU64,
    refused_by_dialler: AtomicU64,
}

/// A snapshot of [`TransportCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TransportStats {
    /// Outgoing handshakes started.
    pub dials: u64,
    /// Outgoing handshakes that failed (any reason).
    pub dials_failed: u64,
    /// Incoming handshakes completed with a valid node certificate.
    pub accepted_handshakes: u64,
    /// Incoming handshakes that failed (TLS, timeout, bad certificate).
    pub refused_handshakes: u64,
    /// Handshakes (either way) refused because a certificate is revoked.
    pub refused_revoked: u64,
    /// Handshakes refused because the certificate is not a node's or not
    /// the expected node's.
    pub refused_bad_peer: u64,
    /// Dials that reached another node of the network at the peer's
    /// address: the peer-DB entry was stale (the node dialled was
    /// replaced there), and is forgotten.
    pub dials_other_node: u64,
    /// Incoming handshakes the dialler closed at once because it wanted
    /// another node at this address (a previous identity of this node):
    /// each such dialler forgets that identity.
    pub refused_by_dialler: u64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What can change at run time: the CRL (and so the TLS configs) and our
/// own certificate (renewal).
struct Tls {
    me: NodeCert,
    identity: TlsIdentity,
    crl: Option<Crl>,
    client: quinn::ClientConfig,
}

/// The node's QUIC endpoint. Cheap to share (`Arc`).
pub struct Transport {
    endpoint: quinn::Endpoint,
    ca_der: Vec<u8>,
    tls: ArcSwap<Tls>,
    quic: Arc<quinn::TransportConfig>,
    config: TransportConfig,
    counters: TransportCounters,
    switch: Option<Arc<FaultSwitch>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// A connection whose handshake completed, with the peer's certificate.
#[derive(Debug, Clone)]
pub struct Connected {
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// The peer's node certificate (checked against the CA and our CRL).
    pub peer: NodeCert,
}

impl Transport {
    /// Binds `addr` and starts the endpoint (server and client). With
    /// `switch`, the socket can be cut off by tests.
    pub fn bind(
        addr: SocketAddr,
        cert: NodeCert,
        key: &NodeKey,
        ca_der: &[u8],
        crl: Option<Crl>,
        config: TransportConfig,
        switch: Option<Arc<FaultSwitch>>,
    ) -> Result<Self, TransportError> {
        let quic = Arc::new(quic_transport(&config)?);
        let identity = TlsIdentity::node(&cert, key);
        let trust = Trust::new(ca_der, crl.as_ref());
        let server = server_config(&trust, identity.clone(), &quic)?;
        let client = client_config(&trust, identity.clone(), &quic)?;
        let std_socket =
            socket::bind(addr).map_err(|source| TransportError::Bind { addr, source })?;
        let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
        let inner = runtime
            .wrap_udp_socket(std_socket)
            .map_err(|source| TransportError::Bind { addr, source })?;
        let sock: Arc<dyn quinn::AsyncUdpSocket> = match &switch {
            Some(s) => Arc::new(SwitchedSocket::new(inner, s.clone())),
            None => inner,
        };
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server),
            sock,
            runtime,
        )
        .map_err(|source| TransportError::Bind { addr, source })?;
        Ok(Self {
            endpoint,
            ca_der: ca_der.to_vec(),
            tls: ArcSwap::from_pointee(Tls {
                me: cert,
                identity,
                crl,
                client,
            }),
            quic,
            config,
            counters: TransportCounters::default(),
            switch,
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Our current certificate.
    pub fn me(&self) -> NodeCert {
        self.tls.load().me.clone()
    }

    /// The settings.
    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// The fault switch, when the transport was built with one.
    pub fn fault_switch(&self) -> Option<&Arc<FaultSwitch>> {
        self.switch.as_ref()
    }

    /// The CRL in force.
    pub fn crl(&self) -> Option<Crl> {
        self.tls.load().crl.clone()
    }

    /// Number of the CRL in force (0: none).
    pub fn crl_number(&self) -> u64 {
        self.tls.load().crl.as_ref().map_or(0, |c| c.number)
    }

    /// Whether `serial` is on the CRL in force.
    pub fn is_revoked(&self, serial: u64) -> bool {
        self.tls
            .load()
            .crl
            .as_ref()
            .is_some_and(|c| c.is_revoked(serial))
    }

    /// Counters.
    pub fn stats(&self) -> TransportStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransportStats {
            dials: get(&c.dials),
            dials_failed: get(&c.dials_failed),
            accepted_handshakes: get(&c.accepted_handshakes),
            refused_handshakes: get(&c.refused_handshakes),
            refused_revoked: get(&c.refused_revoked),
            refused_bad_peer: get(&c.refused_bad_peer),
            dials_other_node: get(&c.dials_other_node),
            refused_by_dialler: get(&c.refused_by_dialler),
        }
    }

    /// Counts an incoming connection that the dialler closed because our
    /// certificate is not the node it wanted ([`control::close::BAD_PEER`]).
    pub fn count_refused_by_dialler(&self) {
        bump(&self.counters.refused_by_dialler);
    }

    /// Adopts `crl` if it is newer than the one in force (by CRL number):
    /// new handshakes apply it at once. Returns whether it changed; the
    /// caller then closes tunnels to revoked nodes. The CRL must already
    /// be checked against the CA ([`Crl::from_der`] does).
    pub fn set_crl(&self, crl: Crl) -> Result<bool, TransportError> {
        let cur = self.tls.load_full();
        if cur.crl.as_ref().is_some_and(|c| c.number >= crl.number) {
            return Ok(false);
        }
        let trust = Trust::new(&self.ca_der, Some(&crl));
        self.endpoint.set_server_config(Some(server_config(
            &trust,
            cur.identity.clone(),
            &self.quic,
        )?));
        let client = client_config(&trust, cur.identity.clone(), &self.quic)?;
        self.tls.store(Arc::new(Tls {
            me: cur.me.clone(),
            identity: cur.identity.clone(),
            crl: Some(crl),
            client,
        }));
        Ok(true)
    }

    /// Uses a renewed certificate (same prefix) for new handshakes.
    pub fn set_identity(&self, cert: NodeCert, key: &NodeKey) -> Result<(), TransportError> {
        let cur = self.tls.load_full();
        let identity = TlsIdentity::node(&cert, key);
        let trust = Trust::new(&self.ca_der, cur.crl.as_ref());
        self.endpoint
            .set_server_config(Some(server_config(&trust, identity.clone(), &self.quic)?));
        let client = client_config(&trust, identity.clone(), &self.quic)?;
        self.tls.store(Arc::new(Tls {
            me: cert,
            identity,
            crl: cur.crl.clone(),
            client,
        }));
        Ok(())
    }

    /// Dials the node that owns `prefix`'s address, trying `addrs` in
    /// order, and checks that the certificate is that node's.
    pub async fn dial(
        &self,
        addrs: &[SocketAddr],
        address: Ipv6Addr,
    ) -> Result<Connected, DialError> {
        bump(&self.counters.dials);
        let result = self.dial_inner(addrs, address).await;
        if let Err(e) = &result {
            bump(&self.counters.dials_failed);
            self.count_failure(e);
        }
        result
    }

    async fn dial_inner(
        &self,
        addrs: &[SocketAddr],
        address: Ipv6Addr,
    ) -> Result<Connected, DialError> {
        let local_v6 = self.local_addr().is_ok_and(|a| a.is_ipv6());
        let dual = self
            .local_addr()
            .is_ok_and(|a| a.is_ipv6() && a.ip().is_unspecified());
        let mut last = None;
        let mut other = None;
        for addr in addrs {
            // An IPv4 socket cannot reach IPv6 peers; an IPv6 socket reaches
            // IPv4 peers only when dual-stack.
            let usable = if local_v6 {
                addr.is_ipv6() || dual
            } else {
                addr.is_ipv4()
            };
            if !usable {
                continue;
            }
            match self.dial_one(*addr, address).await {
                Ok(c) => return Ok(c),
                Err(e @ DialError::OtherNode { .. }) => {
                    tracing::debug!(%addr, peer = %address, error = %e, "dial failed");
                    other.get_or_insert(e);
                }
                Err(e) => {
                    tracing::debug!(%addr, peer = %address, error = %e, "dial failed");
                    last = Some(e);
                }
            }
        }
        // Another node at one address, nothing of the one dialled at the
        // others: it is gone from there.
        Err(other
            .or(last)
            .unwrap_or_else(|| DialError::NoUsableAddress(addrs.to_vec())))
    }

    async fn dial_one(&self, addr: SocketAddr, address: Ipv6Addr) -> Result<Connected, DialError> {
        let client = self.tls.load().client.clone();
        let connecting = self
            .endpoint
            .connect_with(client, addr, &address.to_string())?;
        let conn = tokio::time::timeout(self.config.handshake_timeout, connecting)
            .await
            .map_err(|_| DialError::Timeout(self.config.handshake_timeout))??;
        let peer = match self.peer_cert(&conn) {
            Ok(p) if p.address == address => p,
            Ok(p) => {
                // Valid for the CA and the CRL (the handshake checked), but
                // another node's: close before sending anything.
                let why = format!("expected {address}, got {} ({})", p.address, p.prefix);
                conn.close(control::close::BAD_PEER.into(), why.as_bytes());
                return Err(DialError::OtherNode {
                    addr,
                    expected: address,
                    found: Box::new(p),
                });
            }
            Err(why) => {
                conn.close(control::close::BAD_PEER.into(), why.as_bytes());
                return Err(DialError::BadPeer(why));
            }
        };
        Ok(Connected { conn, peer })
    }

    fn count_failure(&self, e: &DialError) {
        let text = e.to_string();
        if text.contains("evoked") {
            bump(&self.counters.refused_revoked);
        } else if matches!(e, DialError::BadPeer(_)) {
            bump(&self.counters.refused_bad_peer);
        } else if matches!(e, DialError::OtherNode { .. }) {
            bump(&self.counters.dials_other_node);
        }
    }

    /// The next incoming connection attempt; `None` once the endpoint is
    /// closed.
    pub async fn accept(&self) -> Option<quinn::Incoming> {
        self.endpoint.accept().await
    }

    /// Completes an incoming handshake and checks the peer's certificate.
    /// Failures are logged with their reason and counted.
    pub async fn handshake(&self, incoming: quinn::Incoming) -> Option<Connected> {
        let from = incoming.remote_address();
        let result = async {
            let connecting = incoming.accept().map_err(|e| e.to_string())?;
            let conn = tokio::time::timeout(self.config.handshake_timeout, connecting)
                .await
                .map_err(|_| "handshake timed out".to_string())?
                .map_err(|e| e.to_string())?;
            match self.peer_cert(&conn) {
                Ok(peer) => Ok(Connected { conn, peer }),
                Err(why) => {
                    conn.close(control::close::BAD_PEER.into(), why.as_bytes());
                    bump(&self.counters.refused_bad_peer);
                    Err(why)
                }
            }
        }
        .await;
        match result {
            Ok(c) => {
                bump(&self.counters.accepted_handshakes);
                Some(c)
            }
            Err(why) => {
                bump(&self.counters.refused_handshakes);
                if why.contains("evoked") {
                    bump(&self.counters.refused_revoked);
                }
                tracing::info!(%from, reason = %why, "refused an incoming tunnel");
                None
            }
        }
    }

    /// The peer's node certificate, re-checked against the CRL in force
    /// (it may have changed during the handshake).
    fn peer_cert(&self, conn: &quinn::Connection) -> Result<NodeCert, String> {
        engine::tls::peer_node_cert(conn.peer_identity(), self.tls.load().crl.as_ref())
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self, code: u32, reason: &[u8]) {
        self.endpoint.close(code.into(), reason);
    }

    /// Waits until every connection is closed (after [`Transport::close`]).
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

fn quic_transport(c: &TransportConfig) -> Result<quinn::TransportConfig, TransportError> {
    let mut t = engine::tls::transport_config(c)?;
    t.keep_alive_interval(Some(c.keep_alive));
    Ok(t)
}

#[cfg(test)]
mod tests;
