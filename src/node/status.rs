//! What a running node reports about itself: the types the control socket
//! serves as JSON and the CLI prints as tables.

use std::net::{Ipv6Addr, SocketAddr};

use ipnet::Ipv6Net;
use serde::Serialize;

use super::packet_loop::PathStats;
use crate::addresses::Candidate;
use crate::lan::DiscoveryStats;
use crate::peers::{ExchangeStats, PeerDbStats};
use crate::transport::TransportStats;
pub use crate::transport::engine::LinkStats;
use crate::tunnels::driver::DriverStats;
use crate::tunnels::policy::PolicyStats;
use crate::upnp::Mapping;

/// The node's IPv4 inside the overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Ipv4Status {
    /// Its address (the subnet's first host).
    pub address: std::net::Ipv4Addr,
    /// Its subnet (from its certificate).
    pub subnet: ipnet::Ipv4Net,
    /// The overlay's IPv4 network (from the network configuration).
    pub network: Option<ipnet::Ipv4Net>,
}

/// The whole status of a node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Overlay address.
    pub address: Ipv6Addr,
    /// Node prefix.
    pub prefix: Ipv6Net,
    /// Certificate serial.
    pub serial: u64,
    /// End of the certificate's validity (UNIX seconds).
    pub cert_not_after: u64,
    /// Where its renewal stands.
    pub renewal: super::renewal::Renewal,
    /// Network prefix.
    pub network: Ipv6Net,
    /// IPv4 inside the overlay, when the node has a subnet.
    pub ipv4: Option<Ipv4Status>,
    /// Bound UDP address.
    pub listen: Option<SocketAddr>,
    /// Addresses announced to peers.
    pub advertised: Vec<SocketAddr>,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Number of the CRL in force.
    pub crl_number: u64,
    /// Tunnels (up and draining).
    pub tunnels: Vec<TunnelStatus>,
    /// The latest best-of-n refreshes (`least-used-best-of-N` only).
    pub probe_rounds: Vec<ProbeRoundStatus>,
    /// Selected routes.
    pub routes: usize,
    /// Peer DB entries.
    pub peer_db: usize,
    /// Registry reachability.
    pub registry: RegistryStatus,
    /// Tunnel policy counters.
    pub policy: PolicyStats,
    /// Tunnel driver counters.
    pub driver: DriverStats,
    /// Handshake counters.
    pub transport: TransportStats,
    /// Tunnels over TCP (`None`: off).
    pub tcp: Option<crate::node::packet_loop::TcpStats>,
    /// Packet path counters.
    pub path: PathStats,
    /// Peer-exchange counters.
    pub exchange: ExchangeStats,
    /// Peer DB counters.
    pub peers: PeerDbStats,
    /// Babel input counters (`origin`: Updates dropped by route-origin
    /// authentication, per reason).
    pub babel: re6st_babel::engine::Counters,
    /// Route-origin authentication: keys held, claims checked, proofs
    /// verified and refused.
    pub origins: crate::identity::OriginStats,
    /// Origin certificates asked of and given by neighbours.
    pub cert_fetch: crate::node::core::CertFetchStats,
    /// Tunnel liveness: suspicions and recoveries.
    pub liveness: LivenessStats,
    /// Addresses, NAT, UPnP, LAN neighbours, gateway.
    pub edges: EdgesStatus,
}

/// One best-of-n refresh of this node (the latest 8 are kept).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeRoundStatus {
    /// The probes that were up when it was decided.
    pub probes: Vec<ProbeStatus>,
    /// Probes still dialling at the deadline (cancelled).
    pub cancelled: usize,
}

/// One probe of a best-of-n refresh.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeStatus {
    /// The peer's prefix.
    pub peer_prefix: Ipv6Net,
    /// The RTT it was ranked by (the QUIC handshake's), milliseconds.
    pub rtt_ms: Option<f64>,
    /// Whether it was kept (the lowest RTT).
    pub kept: bool,
}

/// One tunnel.
#[derive(Debug, Clone, Serialize)]
pub struct TunnelStatus {
    /// Tunnel id (never reused while the node runs).
    pub id: u64,
    /// The peer's prefix.
    pub peer_prefix: Ipv6Net,
    /// The peer's certificate serial.
    pub peer_serial: u64,
    /// The peer's UDP address.
    pub peer_udp: SocketAddr,
    /// `outgoing` (ours, one of k), `incoming`, or `lan` (a LAN link,
    /// outside k).
    pub direction: &'static str,
    /// `up`, `probe` (a best-of-n candidate of the refresh, not chosen
    /// yet) or `draining`.
    pub state: &'static str,
    /// Babel interface / next-hop id.
    pub iface: Option<u32>,
    /// QUIC's smoothed RTT, milliseconds.
    pub rtt_ms: f64,
    /// The RTT the policy ranks tunnels by (Babel's when measured).
    pub babel_rtt_ms: Option<f64>,
    /// Seconds since it came up.
    pub age_secs: u64,
    /// Destinations routed through it.
    pub destinations: usize,
    /// Largest datagram it carries now.
    pub max_datagram_size: Option<usize>,
    /// Traffic.
    pub link: LinkStats,
    /// `quic` or `tcp`.
    pub transport: &'static str,
    /// QUIC's congestion window, losses, datagrams and ACKs.
    pub quic: crate::transport::engine::QuicStats,
}

/// Registry reachability.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RegistryStatus {
    /// The URL (none: running without a registry).
    pub url: Option<String>,
    /// Last successful exchange (UNIX seconds).
    pub last_ok: Option<u64>,
    /// Last error, if the last exchange failed.
    pub last_error: Option<String>,
    /// Bootstrap answers received.
    pub bootstraps: u64,
    /// Failed exchanges.
    pub failures: u64,
    /// Seconds until the next round (announce, CRL, configuration,
    /// renewal): the regular period, or the back-off after a failure.
    pub next_round_in_secs: Option<u64>,
}

/// Counters of the tunnel liveness detector
/// ([`crate::transport::engine::liveness`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LivenessStats {
    /// Tunnels suspected (silent for the suspect time): their routes were
    /// moved away without closing them.
    pub suspected: u64,
    /// Suspected tunnels heard again: their routes came back.
    pub recovered: u64,
}

/// What the edges report in `re6st status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EdgesStatus {
    /// Every address candidate, announced or not and why.
    pub addresses: Vec<Candidate>,
    /// Peers see us through a NAT (so we are reachable only through the
    /// announced addresses, if any).
    pub behind_nat: bool,
    /// Nothing to announce: the node dials out only.
    pub dial_out_only: bool,
    /// The UPnP mapping in force.
    pub upnp: Option<Mapping>,
    /// Nodes heard on a LAN: prefix and link-local address.
    pub lan_neighbours: Vec<(Ipv6Net, String)>,
    /// Prefixes we offer as a gateway.
    pub gateway: Vec<Ipv6Net>,
    /// LAN beacon counters, as of the last look (at most
    /// [`super::edges::LAN_STATUS_EVERY`] old; `None`: LAN discovery is off or has not
    /// answered yet).
    pub lan_beacons: Option<DiscoveryStats>,
}

impl EdgesStatus {
    /// The control API's view (`re6st status`).
    pub fn info(&self) -> crate::control::api::EdgesInfo {
        crate::control::api::EdgesInfo {
            addresses: self
                .addresses
                .iter()
                .map(|c| crate::control::api::AddressInfo {
                    addr: c.addr,
                    source: serde_json::to_value(c.source)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    announced: c.announced,
                    reason: c.reason.map(str::to_owned),
                })
                .collect(),
            behind_nat: self.behind_nat,
            dial_out_only: self.dial_out_only,
            upnp: self
                .upnp
                .map(|m| (SocketAddr::V4(m.external), SocketAddr::V4(m.internal))),
            lan_neighbours: self.lan_neighbours.clone(),
            lan_links: 0,
            gateway: self.gateway.clone(),
            lan_beacons: self
                .lan_beacons
                .as_ref()
                .and_then(|s| serde_json::from_value(serde_json::to_value(s).ok()?).ok())
                .unwrap_or_default(),
        }
    }
}
