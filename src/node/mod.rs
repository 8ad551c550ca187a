//! `re6st node`: the overlay router, as a library-level [`Node`] so that
//! tests run many in one process, and the thin `re6st node` command.
//!
//! A node is one sans-IO core and the loops around it
//! (`docs/architecture.md`):
//!
//! - [`core`]: **NodeCore**, every decision: the Babel engine, the tunnel
//!   policy and its staged removal ([`crate::tunnels`]), the peer DB and
//!   peer exchange ([`crate::peers`]), the CRL, registry rounds, live
//!   reconfiguration, suspicion of silent tunnels, LAN links and gateway
//!   routes. No clock, no socket, no task, no file.
//! - `control_loop`: the async shell that feeds NodeCore (tunnel events,
//!   registry answers, edge news, the operator's requests, deadlines) and
//!   carries out its commands.
//! - [`packet_loop`]: one thread that owns the UDP socket, every QUIC
//!   tunnel ([`crate::transport::engine`]) and the host side, and forwards
//!   by the lock-free FIB; it speaks NodeCore's tunnel boundary.
//! - [`host`]: the host side: TUN device, userspace ping responder, test
//!   sink.
//! - `edges`: the edge services with sockets of their own (UPnP, LAN
//!   discovery), and `registry_task`: the HTTPS requests to the registry.
//! - [`program`]: the `re6st node` command: its flags and file, joining,
//!   reloading on SIGHUP, the TUN modes.
//! - `config` ([`NodeConfig`], [`CoreConfig`]) and `status`
//!   ([`NodeStatus`]): what a node is started with and what it reports.
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
mod control_loop;
pub mod core;
mod edges;
pub mod host;
pub mod packet_loop;
pub mod program;
mod registry_task;
pub mod renewal;
mod status;

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use ipnet::Ipv6Net;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use re6st_dataplane::fib::{Fib, Route, SharedFib};
use re6st_dataplane::forward::ForwardConfig;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use self::core::{LiveOptions, SEQNO_FILE};
pub use config::{CoreConfig, DEFAULT_PORT, EdgesConfig, HostConfig, NodeConfig, TcpConfig};
pub use host::PacketSink;
pub use packet_loop::{Host, HostSlot, PathStats};
pub use program::joining::JoinProgress;
pub use program::options::{NodeArgs, NodeOptions};
pub use program::run;
pub use status::{
    EdgesStatus, Ipv4Status, LinkStats, LivenessStats, NodeStatus, ProbeRoundStatus, ProbeStatus,
    RegistryStatus, TunnelStatus,
};

use self::core::{CoreParts, NodeCore, Now};
use crate::identity::NetworkConfig;
use crate::identity::tls::{CaVerifier, Trust};
use crate::peers::{PeerEntry, PeerStore};
use crate::state_dir::NodeIdentity;
use crate::transport::engine::{Credentials, Engine};
use crate::transport::socket::FaultSwitch;
use control_loop::{ControlLoop, RegistryLink, Request};
use packet_loop::{LoopConfig, PacketLoop};

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
        let now = Now::read();
        let mut rng = match config.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => rand::make_rng(),
        };
        let socket = crate::transport::socket::bind(config.listen)
            .with_context(|| format!("binding UDP {}", config.listen))?;
        let local_addr = socket.local_addr().context("reading the bound address")?;
        let mut engine = Engine::new(
            Credentials {
                cert: cert.clone(),
                key: &identity.key,
                ca_der: &identity.ca_der,
                crl: identity.crl.clone(),
            },
            config.transport.clone(),
            local_addr,
            config.seed.map(|s| {
                let mut b = [0u8; 32];
                b[..8].copy_from_slice(&s.to_be_bytes());
                b
            }),
            now.mono,
        )
        .with_context(|| format!("starting the QUIC endpoint on {}", config.listen))?;
        engine.align_keep_alives(now.mono, now.since_unix());
        let (host, sink) = match &config.host {
            HostConfig::Sink { capacity } => {
                let (host, sink) = host::sink(*capacity);
                (host, Some(sink))
            }
            HostConfig::External(slot) => (
                slot.take()
                    .context("the host side was already taken by another node")?,
                None,
            ),
        };
        let fib = Arc::new(SharedFib::new(Fib::from_routes([
            (network.network, Route::Unreachable),
            (cert.prefix, Route::Local),
        ])));
        let tcp = tcp_setup(&config, &cert, &identity, local_addr, now)?;
        let tcp_port = tcp
            .as_ref()
            .and_then(|t| t.listener.as_ref())
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port());
        let (mut packets, events) = PacketLoop::start(
            engine,
            socket,
            LoopConfig {
                me: cert.address,
                forward: ForwardConfig {
                    mtu: config.mtu,
                    icmp_source_v4: cert.ipv4_address(),
                    ..ForwardConfig::new(cert.address)
                },
                fib: fib.clone(),
                host,
                switch: config.fault_switch.clone(),
                tcp,
            },
        )
        .await
        .context("starting the packet loop")?;
        let host_failure = packets.take_failure();

        let state = config.state_dir.clone();
        let seqno_file = state
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join(SEQNO_FILE)).ok());
        let (store, stored_peers) = match &state {
            Some(d) => {
                let (store, rows) = PeerStore::open(&d.join(crate::peers::store::FILE))
                    .context("opening the peer DB")?;
                (Some(store), rows)
            }
            None => (None, Vec::new()),
        };
        let url = match &config.registry_url {
            Some(u) => u.clone(),
            None => network.registry_url.clone(),
        };
        let key = Arc::new(identity.key);
        let core = NodeCore::new(
            CoreParts {
                config: CoreConfig {
                    tcp_port,
                    ..config.core((!url.is_empty()).then(|| url.clone()))
                },
                network,
                cert: cert.clone(),
                key: key.clone(),
                ca_der: identity.ca_der.clone(),
                crl: identity.crl.clone(),
                bound: local_addr,
                local_addresses: edges::scan_addresses(),
                seqno_file,
                stored_peers,
                rng: StdRng::seed_from_u64(rng.random()),
            },
            now,
        )
        .context("starting the node")?;
        let edges = edges::EdgeServices::start(
            &config.edges,
            local_addr,
            &cert,
            &key,
            Arc::new(CaVerifier::new(&Trust::new(
                &identity.ca_der,
                identity.crl.as_ref(),
            ))?),
            now.mono,
        )?;

        let mut tasks = Vec::new();
        let registry = if url.is_empty() {
            None
        } else {
            let (requests, rx) = mpsc::channel(8);
            let (replies_tx, replies) = mpsc::channel(8);
            let task = registry_task::RegistryTask {
                url,
                ca_der: identity.ca_der.clone(),
                ca_key: identity.ca_key.clone(),
                cert: cert.clone(),
                key: key.clone(),
                rx,
                replies: replies_tx,
            };
            tasks.push(tokio::spawn(task.run()));
            Some(RegistryLink { requests, replies })
        };

        let (requests_tx, requests) = mpsc::channel(64);
        let control = ControlLoop {
            core,
            packets,
            fib: fib.clone(),
            edges,
            events,
            requests,
            registry,
            store,
            state_dir: state,
            tun_ipv4: config.tun_ipv4.clone().map(host::ipv4::TunIpv4::new),
        };
        tasks.push(tokio::spawn(control.run()));

        tracing::info!(address = %cert.address, prefix = %cert.prefix, udp = %local_addr, "node started");
        Ok(NodeHandle {
            address: cert.address,
            prefix: cert.prefix,
            local_addr,
            requests: requests_tx,
            fib,
            switch: config.fault_switch.clone(),
            sink,
            host_failure,
            tasks,
        })
    }
}

/// A running node.
pub struct NodeHandle {
    address: Ipv6Addr,
    prefix: Ipv6Net,
    local_addr: SocketAddr,
    requests: mpsc::Sender<Request>,
    fib: Arc<SharedFib>,
    switch: Option<Arc<FaultSwitch>>,
    sink: Option<PacketSink>,
    host_failure: Option<oneshot::Receiver<std::io::Error>>,
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

    /// Fires once if the host side fails for good (the TUN device was
    /// deleted); taken once.
    pub fn take_host_failure(&mut self) -> Option<oneshot::Receiver<std::io::Error>> {
        self.host_failure.take()
    }

    /// The fault switch the node was started with (tests cut the node off
    /// or make its paths lossy).
    pub fn fault_switch(&self) -> Option<&Arc<FaultSwitch>> {
        self.switch.as_ref()
    }

    /// The next hop of `dst` in the FIB: the prefix of the tunnel's peer,
    /// `None` if local, unreachable or unknown.
    pub async fn next_hop(&self, dst: Ipv6Addr) -> Option<Ipv6Net> {
        let route = self.fib.load().lookup(dst)?;
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

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Status, tunnels and counters.
    pub async fn status(&self) -> Option<NodeStatus> {
        self.ask(Request::Status).await
    }

    /// Babel's routes.
    pub async fn routes(&self) -> Option<Vec<re6st_babel::engine::RouteInfo>> {
        self.ask(Request::Routes).await
    }

    /// The peer DB.
    pub async fn peers(&self) -> Option<Vec<PeerEntry>> {
        self.ask(Request::Peers).await
    }

    /// Applies local options that need no restart (a reloaded
    /// configuration file); the names of those that changed.
    pub async fn reconfigure(&self, live: LiveOptions) -> anyhow::Result<Vec<&'static str>> {
        self.ask(|tx| Request::Reconfigure(live, tx))
            .await
            .context("the node is stopping")?
            .map_err(anyhow::Error::msg)
    }

    /// Runs a registry round (announce, CRL, configuration, renewal) now.
    pub async fn refresh_registry(&self) {
        let _ = self.requests.send(Request::RegistryRound).await;
    }

    /// Retracts our routes, closes every tunnel cleanly and stops.
    pub async fn shutdown(mut self) {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(Request::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        self.stop();
    }

    /// Stops dead, as a crash would: with a fault switch, nothing more
    /// leaves the socket, so peers only notice by their idle timeout.
    pub fn kill(mut self) {
        if let Some(s) = &self.switch {
            s.set_blackhole(true);
        }
        self.stop();
    }

    /// Ends the tasks; the packet loop, left without its control loop,
    /// closes its tunnels and ends.
    fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The TCP side of the packet loop: its engine and its listening socket
/// (`None`: `--no-tcp`). A default port (the QUIC port's number) that is
/// taken leaves the node dialling over TCP without listening; an explicit
/// one that cannot be bound is an error.
fn tcp_setup(
    config: &NodeConfig,
    cert: &crate::identity::NodeCert,
    identity: &NodeIdentity,
    udp: SocketAddr,
    now: Now,
) -> anyhow::Result<Option<packet_loop::TcpSetup>> {
    if !config.tcp.enabled {
        return Ok(None);
    }
    let addr = SocketAddr::new(udp.ip(), config.tcp.port.unwrap_or(udp.port()));
    let listener = match packet_loop::tcp_listen(addr) {
        Ok(l) => Some(l),
        Err(e) if config.tcp.port.is_none() => {
            tracing::warn!(%addr, error = %e, "cannot listen on TCP: tunnels over TCP are dialled only");
            None
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("listening on TCP {addr}"))),
    };
    let mut engine = crate::transport::tcp::TcpEngine::new(
        Credentials {
            cert: cert.clone(),
            key: &identity.key,
            ca_der: &identity.ca_der,
            crl: identity.crl.clone(),
        },
        config.transport.clone(),
        now.mono,
    )
    .context("starting the TCP tunnels")?;
    engine.align_keep_alives(now.mono, now.since_unix());
    Ok(Some(packet_loop::TcpSetup {
        engine,
        listener,
        mode: config.tcp.mode,
        prefer_tcp: config.tcp.prefer_tcp,
    }))
}
