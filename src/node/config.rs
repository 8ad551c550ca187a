//! Node settings. The network-wide parameters (k, the arity limit, the
//! refresh period, Babel timers) come from the CA-signed network
//! configuration; everything here is local. [`NodeConfig`] is what a node
//! is started with; [`CoreConfig`] is the part NodeCore decides with (no
//! socket address to bind, no host device, no directory).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use re6st_babel::engine::Config as BabelConfig;

use super::packet_loop::HostSlot;
use crate::identity::NetworkConfig;
use crate::peers::{ExchangeConfig, PeerDbConfig};
use crate::transport::TransportConfig;
use crate::transport::socket::FaultSwitch;
use crate::tunnels::driver::DriverConfig;
use crate::tunnels::policy::{PolicyConfig, Replacement};

/// Default UDP port of the QUIC endpoint.
pub const DEFAULT_PORT: u16 = 4326;

/// Where packets for this node's prefix go.
#[derive(Clone)]
pub enum HostConfig {
    /// An in-process channel pair standing in for a TUN device (tests,
    /// userspace demos): [`super::NodeHandle::take_sink`].
    Sink {
        /// Packets buffered each way before new ones are dropped.
        capacity: usize,
    },
    /// The caller's host side (a TUN device, or the channels of a host
    /// task such as the ping responder), taken by the packet loop.
    External(HostSlot),
}

impl std::fmt::Debug for HostConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostConfig::Sink { capacity } => write!(f, "Sink({capacity})"),
            HostConfig::External(_) => f.write_str("External"),
        }
    }
}

/// Local node settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// UDP address of the QUIC endpoint. `[::]:port` is dual-stack.
    pub listen: SocketAddr,
    /// Addresses announced to peers. Empty: the listen address when it is
    /// specific, otherwise the addresses peers report seeing us from.
    pub advertise: Vec<SocketAddr>,
    /// State directory for the peer DB, CRL updates, renewed certificates
    /// and the Babel seqno. `None`: nothing is persisted (tests).
    pub state_dir: Option<PathBuf>,
    /// Registry URL; `None`: the one in the network configuration. An
    /// empty string runs without a registry.
    pub registry_url: Option<String>,
    /// QUIC timers and sizes.
    pub transport: TransportConfig,
    /// Peer DB limits.
    pub peer_db: PeerDbConfig,
    /// Peer-exchange schedule.
    pub exchange: ExchangeConfig,
    /// Tunnel driver timers.
    pub driver: DriverConfig,
    /// First back-off of a peer that failed (doubles up to `backoff_max`).
    pub backoff_min: Duration,
    /// Longest back-off.
    pub backoff_max: Duration,
    /// A draining tunnel is closed after this even if routes still use it.
    pub drain_timeout: Duration,
    /// Period of the registry round (announce, CRL, configuration,
    /// renewal): twice a day.
    pub registry_interval: Duration,
    /// First wait before a failed registry round is tried again; it
    /// doubles (jittered) up to `registry_retry_max`, so a certificate due
    /// while the registry is down is renewed soon after it returns.
    pub registry_retry: Duration,
    /// Longest wait between two tries of a failing registry round (at most
    /// `registry_interval`).
    pub registry_retry_max: Duration,
    /// First delay before asking the registry again for peers when the DB
    /// is still too small (doubles up to an hour).
    pub bootstrap_retry: Duration,
    /// How many peers to ask the registry for (at most 64).
    pub bootstrap_peers: u32,
    /// Announcements to put in the peer DB at start (verified like any
    /// other): a DB "filled by hand" (report §3.3) for a node that cannot
    /// reach the registry, static peers, benchmarks.
    pub seed_peers: Vec<crate::identity::SignedAnnouncement>,
    /// Overlay MTU: larger packets get ICMPv6 Packet Too Big.
    pub mtu: u16,
    /// The local side of the packet path.
    pub host: HostConfig,
    /// The TUN device to give the node's IPv4 address and the overlay's
    /// IPv4 route (`None`: no TUN, or a test).
    pub tun_ipv4: Option<super::host::ipv4::TunIpv4Config>,
    /// A switch that can cut the node's socket (tests of crashes).
    pub fault_switch: Option<Arc<FaultSwitch>>,
    /// Replacement policy of this node instead of the network's
    /// (`tunnel_replacement`); for experiments and tests.
    pub replacement: Option<Replacement>,
    /// Seed of the node's random choices (`None`: from the OS).
    pub seed: Option<u64>,
    /// The edges of the network: address discovery, UPnP, LAN
    /// discovery, gateway.
    pub edges: EdgesConfig,
    /// Tunnels over TCP.
    pub tcp: TcpConfig,
}

/// Tunnels over TCP, for where UDP does not get through.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Listen on TCP and dial over it (`--no-tcp`: QUIC only).
    pub enabled: bool,
    /// The TCP port (`None`: the QUIC port's number; if that is taken,
    /// the node only dials over TCP).
    pub port: Option<u16>,
    /// QUIC, TCP, or QUIC first with TCP as the fallback.
    pub mode: crate::transport::tcp::choice::Mode,
    /// How long dials go straight to TCP once QUIC looks blocked.
    pub prefer_tcp: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            port: None,
            mode: crate::transport::tcp::choice::Mode::Auto,
            prefer_tcp: super::packet_loop::PREFER_TCP,
        }
    }
}

/// Settings of the parts at the edges of the network ([`super::edges`]).
#[derive(Debug, Clone)]
pub struct EdgesConfig {
    /// Private networks that every node can reach: local addresses in them
    /// are announced ([`crate::addresses::AddressConfig::routable`]).
    pub routable: Vec<ipnet::IpNet>,
    /// How often the interface addresses are scanned again.
    pub address_scan: Duration,
    /// Map the QUIC port on a UPnP router (`None`: off).
    pub upnp: Option<crate::upnp::UpnpConfig>,
    /// LAN discovery (off by default).
    pub lan: crate::lan::LanConfig,
    /// Prefixes offered to the overlay as a gateway (none by default).
    pub gateway: crate::gateway::GatewayConfig,
}

impl Default for EdgesConfig {
    fn default() -> Self {
        Self {
            routable: Vec::new(),
            address_scan: Duration::from_secs(30),
            upnp: None,
            lan: crate::lan::LanConfig::default(),
            gateway: crate::gateway::GatewayConfig::default(),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0u16; 8], DEFAULT_PORT)),
            advertise: Vec::new(),
            state_dir: None,
            registry_url: None,
            transport: TransportConfig::default(),
            peer_db: PeerDbConfig::default(),
            exchange: ExchangeConfig::default(),
            driver: DriverConfig::default(),
            backoff_min: Duration::from_secs(30),
            backoff_max: Duration::from_secs(3600),
            drain_timeout: Duration::from_secs(120),
            registry_interval: Duration::from_secs(12 * 3600),
            registry_retry: Duration::from_secs(30),
            registry_retry_max: Duration::from_secs(15 * 60),
            bootstrap_retry: Duration::from_secs(30),
            bootstrap_peers: crate::registry::api::MAX_BOOTSTRAP,
            seed_peers: Vec::new(),
            mtu: 1400,
            tun_ipv4: None,
            host: HostConfig::Sink { capacity: 4096 },
            fault_switch: None,
            replacement: None,
            seed: None,
            edges: EdgesConfig::default(),
            tcp: TcpConfig::default(),
        }
    }
}

impl NodeConfig {
    /// NodeCore's settings; `registry` is the registry URL in use (`None`:
    /// none).
    pub fn core(&self, registry: Option<String>) -> CoreConfig {
        CoreConfig {
            peer_db: self.peer_db,
            exchange: self.exchange,
            driver: self.driver,
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
            drain_timeout: self.drain_timeout,
            registry_interval: self.registry_interval,
            registry_retry: self.registry_retry,
            registry_retry_max: self.registry_retry_max,
            bootstrap_retry: self.bootstrap_retry,
            bootstrap_peers: self.bootstrap_peers,
            seed_peers: self.seed_peers.clone(),
            replacement: self.replacement,
            advertise: self.advertise.clone(),
            routable: self.edges.routable.clone(),
            address_scan: self.edges.address_scan,
            gateway: self.edges.gateway.clone(),
            lan: self.edges.lan.interfaces != crate::lan::LanInterfaces::Off,
            origins: crate::identity::OriginsConfig::default(),
            registry,
            tcp_port: None,
        }
    }
}

/// What NodeCore decides with: [`NodeConfig`] without its I/O.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Peer DB limits.
    pub peer_db: PeerDbConfig,
    /// Peer-exchange schedule.
    pub exchange: ExchangeConfig,
    /// Tunnel driver timers.
    pub driver: DriverConfig,
    /// First back-off of a peer that failed.
    pub backoff_min: Duration,
    /// Longest back-off.
    pub backoff_max: Duration,
    /// A draining tunnel is closed after this even if routes still use it.
    pub drain_timeout: Duration,
    /// Period of the registry round.
    pub registry_interval: Duration,
    /// First wait before a failed registry round is tried again.
    pub registry_retry: Duration,
    /// Longest wait between two tries of a failing round.
    pub registry_retry_max: Duration,
    /// First delay before asking the registry again for peers.
    pub bootstrap_retry: Duration,
    /// How many peers to ask the registry for.
    pub bootstrap_peers: u32,
    /// Announcements put in the peer DB at start.
    pub seed_peers: Vec<crate::identity::SignedAnnouncement>,
    /// This node's replacement policy instead of the network's.
    pub replacement: Option<Replacement>,
    /// Addresses announced first ([`crate::addresses::AddressConfig`]).
    pub advertise: Vec<SocketAddr>,
    /// Private networks every node reaches.
    pub routable: Vec<ipnet::IpNet>,
    /// How often the interface addresses are listed again.
    pub address_scan: Duration,
    /// Prefixes offered to the overlay as a gateway.
    pub gateway: crate::gateway::GatewayConfig,
    /// LAN discovery runs: link-local incoming connections are LAN links.
    pub lan: bool,
    /// Route-origin authentication's bounds (and its off switch, for
    /// measurements).
    pub origins: crate::identity::OriginsConfig,
    /// The registry URL (`None`: the node runs without one).
    pub registry: Option<String>,
    /// The port the node's TCP tunnels listen on, announced to peers
    /// (`None`: not listening on TCP).
    pub tcp_port: Option<u16>,
}

impl CoreConfig {
    /// The tunnel policy for `net`.
    pub fn policy(&self, net: &NetworkConfig) -> PolicyConfig {
        PolicyConfig {
            outgoing: usize::from(net.tunnels),
            max_tunnels: usize::from(net.max_tunnels),
            refresh: net.tunnel_refresh(),
            replacement: self.replacement.unwrap_or(net.tunnel_replacement),
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
            drain_timeout: self.drain_timeout,
            ..PolicyConfig::default()
        }
    }
}

/// The Babel engine's configuration for `net`.
pub fn babel_config(net: &NetworkConfig) -> BabelConfig {
    let ms = Duration::from_millis;
    let d = BabelConfig::default();
    BabelConfig {
        hello_interval: ms(net.babel_hello_ms),
        ihu_interval: ms(net.babel_ihu_ms),
        update_interval: ms(net.babel_update_ms),
        tunnel: re6st_babel::engine::LinkParams {
            rtt: re6st_babel::metric::RttParams {
                max_penalty: net.babel_rtt_max_penalty,
                max: ms(net.babel_rtt_max_ms).max(d.tunnel.rtt.min + ms(1)),
                ..d.tunnel.rtt
            },
            ..d.tunnel
        },
        ..d
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Metric of a path of tunnels with these RTTs (96 per hop plus the
    /// RTT penalty), as the Babel engine costs them.
    fn metric(c: &BabelConfig, rtts_ms: &[u64]) -> u32 {
        rtts_ms
            .iter()
            .map(|&r| {
                let us = u32::try_from(Duration::from_millis(r).as_micros()).unwrap();
                u32::from(c.tunnel.rxcost) + u32::from(c.tunnel.rtt.penalty(us))
            })
            .sum()
    }

    #[test]
    fn the_network_defaults_make_latency_outweigh_hops() {
        let net = NetworkConfig::defaults("fd00:5::/48".parse().unwrap(), String::new());
        let babel = babel_config(&net);
        // tests/realnet_latency.rs: an 80 ms direct tunnel against two
        // hops of 5 ms. The new networks' defaults take the two hops, by
        // more than the engine's hysteresis.
        let (direct, two_hops) = (metric(&babel, &[80]), metric(&babel, &[5, 5]));
        assert!(
            two_hops + u32::from(babel.hysteresis) < direct,
            "{two_hops} vs {direct}"
        );
        // babeld's `type tunnel` (what configurations signed without the
        // RTT fields mean) keeps the direct tunnel: one hop is worth more
        // than any RTT.
        let old = NetworkConfig {
            babel_rtt_max_penalty: 96,
            babel_rtt_max_ms: 120,
            ..net
        };
        let babeld = babel_config(&old);
        assert!(metric(&babeld, &[80]) < metric(&babeld, &[5, 5]));
        assert!(metric(&babeld, &[500]) <= metric(&babeld, &[5, 5]));
    }
}
