//! `re6st node`: the overlay router, as a library-level [`Node`] so that
//! tests run many in one process, and the thin `re6st node` command.
//!
//! A running node is a handful of tokio tasks around one QUIC endpoint:
//!
//! - the **router** (`router.rs`): Babel engine, tunnel driver and policy,
//!   peer DB, peer exchange, CRL handling; the only owner of that state;
//! - per tunnel: a **datagram loop** (the packet path: forwarding by the
//!   lock-free FIB, Babel packets to the router) and the **control
//!   stream** reader and writer;
//! - the **accept loop** (handshakes, then the router decides) and one
//!   task per **dial**;
//! - the **host side**: a packet sink in tests, the TUN device
//!   ([`tun_host`]) or a userspace ping responder ([`echo_host`])
//!   ([`HostConfig`], [`NodeHandle::packet_path`]);
//! - the **registry task** (bootstrap, announce, CRL, renewal).
//!
//! ```no_run
//! # async fn demo(identity: re6st::state_dir::NodeIdentity) -> anyhow::Result<()> {
//! use re6st::node::{Node, NodeConfig};
//! let mut node = Node::start(NodeConfig::default(), identity).await?;
//! let sink = node.take_sink().expect("the default host is a sink");
//! sink.send(&[0x60; 40]); // an IPv6 packet from the "host"
//! println!("{:?}", node.status().await);
//! node.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
pub mod core;
pub mod echo_host;
mod edges;
pub mod joining;
pub mod kernel_route;
mod link;
pub mod options;
mod path;
mod program;
mod registry;
mod reload;
pub mod renewal;
mod router;
mod status;
pub mod tun_host;
mod tunnel;

use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use ipnet::Ipv6Net;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use re6st_babel::engine::Engine;
use re6st_babel::wire::RouterId;
use re6st_dataplane::fib::{Fib, Route, SharedFib};
use re6st_dataplane::forward::ForwardConfig;
use re6st_dataplane::fragment::Fragmenter;
use re6st_dataplane::nexthop::NextHops;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use config::{DEFAULT_PORT, EdgesConfig, HostConfig, NodeConfig};
pub use edges::EdgesStatus;
pub use joining::JoinProgress;
pub use link::LinkStats;
pub use options::{NodeArgs, NodeOptions};
pub use path::{Host, PacketPath, PathStats};
pub use program::run;
pub use router::reload::LiveOptions;
pub use status::{
    LivenessStats, NodeStatus, ProbeRoundStatus, ProbeStatus, RegistryStatus, TunnelStatus,
};

use crate::identity::NetworkConfig;
use crate::identity::tls::{CaVerifier, Trust};
use crate::peers::{Exchange, PeerDb, PeerEntry, db};
use crate::state_dir::NodeIdentity;
use crate::transport::Transport;
use crate::tunnels::driver::{Driver, PeerKey};
use path::{PathCounters, PathShared, StatsBoard};
use router::{Router, RouterIn, RouterParts};

/// File of the state directory holding the Babel router-id and seqno.
pub const SEQNO_FILE: &str = "babel-seqno";

/// Writes a state-directory file, if the node has one (errors are logged:
/// the node keeps running on what it has in memory).
pub(crate) fn persist(config: &NodeConfig, name: &str, contents: &[u8]) {
    if let Some(dir) = &config.state_dir
        && let Err(e) = crate::state_dir::write_atomic(&dir.join(name), contents, 0o644)
    {
        tracing::warn!(file = name, error = %e, "cannot write the state directory");
    }
}

/// The router-id: a hash of the prefix, so a node keeps it across restarts
/// and certificate renewals.
fn router_id(prefix: Ipv6Net) -> RouterId {
    let mut input = b"re6st router-id\0".to_vec();
    input.extend_from_slice(&prefix.network().octets());
    input.push(prefix.prefix_len());
    let d = ring::digest::digest(&ring::digest::SHA256, &input);
    let mut id = [0u8; 8];
    id.copy_from_slice(&d.as_ref()[..8]);
    if id == [0; 8] || id == [0xff; 8] {
        id[0] ^= 1;
    }
    RouterId(id)
}

/// The seqno persisted with `rid`, plus one; otherwise a random one.
fn initial_seqno(config: &NodeConfig, rid: RouterId, rng: &mut StdRng) -> u16 {
    let hex: String = rid.0.iter().map(|b| format!("{b:02x}")).collect();
    config
        .state_dir
        .as_ref()
        .and_then(|d| std::fs::read_to_string(d.join(SEQNO_FILE)).ok())
        .and_then(|s| {
            let mut it = s.split_whitespace();
            (it.next()? == hex).then_some(())?;
            it.next()?.parse::<u16>().ok()
        })
        .map_or_else(|| rng.random(), |s| s.wrapping_add(1))
}

/// The test stand-in for a TUN device: packets in and out of the node's
/// host side through channels.
#[derive(Debug)]
pub struct PacketSink {
    to_node: mpsc::Sender<BytesMut>,
    from_node: mpsc::Receiver<Bytes>,
}

impl PacketSink {
    /// Injects an IPv6 packet as if the host had written it to the TUN.
    /// `false` if the node's queue is full (the packet is dropped).
    pub fn send(&self, packet: &[u8]) -> bool {
        self.to_node.try_send(BytesMut::from(packet)).is_ok()
    }

    /// The next packet the node delivered to the host.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.from_node.recv().await
    }

    /// A delivered packet, if one is waiting.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.from_node.try_recv().ok()
    }
}

/// The host side of a sink.
#[derive(Debug)]
struct SinkHost {
    tx: mpsc::Sender<Bytes>,
    dropped: AtomicU64,
}

impl Host for SinkHost {
    fn deliver(&self, packet: Bytes) {
        if self.tx.try_send(packet).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A host that has no device (a transit-only node): local packets are
/// dropped and counted.
#[derive(Debug, Default)]
pub struct NoHost {
    dropped: AtomicU64,
}

impl Host for NoHost {
    fn deliver(&self, _packet: Bytes) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// A sink and the receiver of what its user injects.
type SinkParts = Option<(PacketSink, mpsc::Receiver<BytesMut>)>;

/// Starts nodes.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Starts a node with `identity` (from its state directory, or made by
    /// a test) on the current tokio runtime. The network configuration
    /// must be present in `identity` and signed by its CA.
    pub async fn start(config: NodeConfig, identity: NodeIdentity) -> anyhow::Result<NodeHandle> {
        let network: NetworkConfig = identity
            .network
            .as_ref()
            .context("no network configuration (run `re6st join` first)")?
            .verify(&identity.ca_key)
            .context("the network configuration does not verify against the CA")?;
        let cert = identity.cert.clone();
        let now = Instant::now();
        let mut rng = match config.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => rand::make_rng(),
        };
        let transport = Arc::new(
            Transport::bind(
                config.listen,
                cert.clone(),
                &identity.key,
                &identity.ca_der,
                identity.crl.clone(),
                config.transport.clone(),
                config.fault_switch.clone(),
            )
            .with_context(|| format!("starting the QUIC endpoint on {}", config.listen))?,
        );
        let local_addr = transport
            .local_addr()
            .context("reading the bound address")?;

        let (tx, rx) = mpsc::channel(4096);
        let (watch_tx, watch_rx) = mpsc::channel(tunnel::WATCH_QUEUE);
        let (host, sink): (Arc<dyn Host>, SinkParts) = match &config.host {
            HostConfig::Sink { capacity } => {
                let (to_host, from_node) = mpsc::channel(*capacity);
                let (to_node, from_host) = mpsc::channel(*capacity);
                let host = Arc::new(SinkHost {
                    tx: to_host,
                    dropped: AtomicU64::new(0),
                });
                let sink = PacketSink { to_node, from_node };
                (host, Some((sink, from_host)))
            }
            HostConfig::External(h) => (h.clone(), None),
        };
        let shared = Arc::new(PathShared {
            fib: SharedFib::new(Fib::from_routes([
                (network.network, Route::Unreachable),
                (cert.prefix, Route::Local),
            ])),
            hops: NextHops::new(),
            fragmenter: Fragmenter::new(rng.random()),
            host,
            me: cert.address,
            router: tx.clone(),
            forward: ForwardConfig {
                mtu: config.mtu,
                ..ForwardConfig::new(cert.address)
            },
            counters: PathCounters::default(),
            board: Arc::new(StatsBoard::default()),
            liveness: watch_tx,
        });

        let rid = router_id(cert.prefix);
        let seqno = initial_seqno(&config, rid, &mut rng);
        let mut engine = Engine::new(config.babel(&network), rid, seqno, now)
            .context("starting the Babel engine")?;
        engine.add_xroute(cert.prefix.into(), 0, now)?;
        let me = PeerKey {
            serial: cert.serial,
            prefix: cert.prefix,
        };
        let driver = Driver::new(
            me,
            config.policy(&network),
            StdRng::seed_from_u64(rng.random()),
            config.driver,
            now,
        )
        .context("invalid tunnel policy")?;
        let verifier = CaVerifier::new(&Trust::new(&identity.ca_der, identity.crl.as_ref()))?;
        let db_path: Option<PathBuf> = config.state_dir.as_ref().map(|d| d.join(db::FILE));
        let db = PeerDb::open(
            db_path.as_deref(),
            cert.prefix,
            config.peer_db,
            &verifier,
            SystemTime::now(),
        )
        .context("opening the peer DB")?;
        let mut db = db;
        for signed in &config.seed_peers {
            if let Err(e) = db.insert(signed, &verifier, SystemTime::now()) {
                tracing::warn!(error = %e, "a seed peer was refused");
            }
        }
        let exchange = Exchange::new(config.exchange, StdRng::seed_from_u64(rng.random()), now);
        let key = Arc::new(identity.key);
        let edges = edges::Edges::start(
            &config.edges,
            &config.advertise,
            local_addr,
            network.network,
            &cert,
            &key,
            Arc::new(CaVerifier::new(&Trust::new(
                &identity.ca_der,
                identity.crl.as_ref(),
            ))?),
            now,
        )?;
        for (prefix, metric) in edges.gateway.xroutes() {
            engine.add_xroute(prefix, metric, now)?;
        }

        let url = match &config.registry_url {
            Some(u) => u.clone(),
            None => network.registry_url.clone(),
        };
        let mut tasks = vec![tokio::spawn(tunnel::liveness_clock(
            watch_rx,
            config.transport.suspect_after,
            tx.clone(),
        ))];
        let registry = if url.is_empty() {
            None
        } else {
            let (rtx, rrx) = mpsc::channel(8);
            let task = registry::RegistryTask {
                url: url.clone(),
                ca_der: identity.ca_der.clone(),
                ca_key: identity.ca_key.clone(),
                cert: cert.clone(),
                key: key.clone(),
                transport: transport.clone(),
                config: config.clone(),
                network_version: network.version,
                rx: rrx,
                router: tx.clone(),
            };
            tasks.push(tokio::spawn(task.run()));
            Some((url, rtx))
        };

        let router = Router::new(RouterParts {
            config: config.clone(),
            network,
            cert: cert.clone(),
            key,
            ca_der: identity.ca_der,
            transport: transport.clone(),
            shared: shared.clone(),
            engine,
            driver,
            db,
            exchange,
            rx,
            tx: tx.clone(),
            registry,
            edges,
        })?;
        tasks.push(tokio::spawn(router.run()));

        let t = transport.clone();
        let atx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(incoming) = t.accept().await {
                tokio::spawn(tunnel::accept(t.clone(), incoming, atx.clone()));
            }
        }));

        let sink = match sink {
            Some((sink, mut from_host)) => {
                let mut path = PacketPath::new(shared.clone());
                tasks.push(tokio::spawn(async move {
                    while let Some(p) = from_host.recv().await {
                        path.handle_host_packet(p, Instant::now());
                    }
                }));
                Some(sink)
            }
            None => None,
        };
        tracing::info!(address = %cert.address, prefix = %cert.prefix, udp = %local_addr, "node started");
        Ok(NodeHandle {
            address: cert.address,
            prefix: cert.prefix,
            local_addr,
            router: tx,
            shared,
            transport,
            sink,
            tasks,
        })
    }
}

/// A running node.
pub struct NodeHandle {
    address: Ipv6Addr,
    prefix: Ipv6Net,
    local_addr: SocketAddr,
    router: mpsc::Sender<RouterIn>,
    shared: Arc<PathShared>,
    transport: Arc<Transport>,
    sink: Option<PacketSink>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("address", &self.address)
            .field("udp", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// The overlay address (`prefix::1`).
    pub fn address(&self) -> Ipv6Addr {
        self.address
    }

    /// The node prefix.
    pub fn prefix(&self) -> Ipv6Net {
        self.prefix
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The packet sink (with [`HostConfig::Sink`]), once.
    pub fn take_sink(&mut self) -> Option<PacketSink> {
        self.sink.take()
    }

    /// A packet path for the caller's host-side task (with
    /// [`HostConfig::External`]: feed it what the TUN reads).
    pub fn packet_path(&self) -> PacketPath {
        PacketPath::new(self.shared.clone())
    }

    /// The transport (fault switch, CRL in force).
    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// The next hop of `dst` in the FIB: the prefix of the tunnel's peer,
    /// `None` if local, unreachable or unknown.
    pub async fn next_hop(&self, dst: Ipv6Addr) -> Option<Ipv6Net> {
        let route = self.shared.fib.load().lookup(dst)?;
        let Route::Via(id) = route else {
            return None;
        };
        let status = self.status().await?;
        status
            .tunnels
            .iter()
            .find(|t| t.iface == Some(id.0) && t.state == "up")
            .map(|t| t.peer_prefix)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> RouterIn) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.router.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Status, tunnels and counters.
    pub async fn status(&self) -> Option<NodeStatus> {
        self.ask(RouterIn::Status).await
    }

    /// Babel's routes.
    pub async fn routes(&self) -> Option<Vec<re6st_babel::engine::RouteInfo>> {
        self.ask(RouterIn::Routes).await
    }

    /// The peer DB.
    pub async fn peers(&self) -> Option<Vec<PeerEntry>> {
        self.ask(RouterIn::Peers).await
    }

    /// Applies local options that need no restart (a reloaded
    /// configuration file); the names of those that changed.
    pub async fn reconfigure(&self, live: LiveOptions) -> anyhow::Result<Vec<&'static str>> {
        self.ask(|tx| RouterIn::Reconfigure(live, tx))
            .await
            .context("the node is stopping")?
            .map_err(anyhow::Error::msg)
    }

    /// Runs a registry round (announce, CRL, configuration, renewal) now.
    pub async fn refresh_registry(&self) {
        let _ = self.router.send(RouterIn::RegistryRound).await;
    }

    /// Retracts our routes, closes every tunnel cleanly and stops.
    pub async fn shutdown(mut self) {
        let (tx, rx) = oneshot::channel();
        if self.router.send(RouterIn::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        self.stop();
    }

    /// Stops dead, as a crash would: with a fault switch, nothing more
    /// leaves the socket, so peers only notice by their idle timeout.
    pub fn kill(mut self) {
        if let Some(s) = self.transport.fault_switch() {
            s.set_blackhole(true);
        }
        self.stop();
    }

    fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.transport
            .close(crate::transport::control::close::SHUTDOWN, b"node stopped");
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
