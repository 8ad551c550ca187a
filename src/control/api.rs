//! The control API's types: what the node's control socket serves as JSON,
//! what `re6st status/peers/tunnels/routes --json` print, and what the text
//! tables and the Prometheus metrics are views of.
//!
//! They are the API's own types, not the node's internal structs: internal
//! counters can be renamed or regrouped without breaking scripts, because
//! counter groups travel as `name -> value` maps built by serialising the
//! internal structs (new counters appear by themselves).
//!
//! Wire protocol on the Unix socket: the client writes one JSON
//! [`Request`] on one line, the node answers one JSON [`Response`] on one
//! line and closes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv6Net};
use serde::{Deserialize, Serialize};

/// Longest request line the node reads.
pub const MAX_REQUEST: usize = 4096;

/// File name of the control socket in the state directory.
pub const SOCKET_FILE: &str = "control.sock";

/// What a client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum Request {
    /// [`Status`].
    Status,
    /// The tunnels ([`TunnelInfo`] list).
    Tunnels,
    /// The routes ([`RouteView`] list).
    Routes,
    /// The peer DB ([`PeerView`] list).
    Peers,
    /// The Prometheus text exposition (as a JSON string).
    Metrics,
}

/// The node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(Box<Status>),
    /// Answer to [`Request::Tunnels`].
    Tunnels(Vec<TunnelInfo>),
    /// Answer to [`Request::Routes`].
    Routes(Vec<RouteView>),
    /// Answer to [`Request::Peers`].
    Peers(Vec<PeerView>),
    /// Answer to [`Request::Metrics`].
    Metrics(String),
    /// Answer to [`Request::Status`] while the node has not joined its
    /// network yet.
    Joining(JoiningInfo),
    /// The request could not be served.
    Error(String),
}

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Not enrolled yet: waiting for the registry ([`JoiningInfo`]).
    Joining,
    /// Enrolled and running ([`Status`]).
    #[default]
    Running,
}

/// A node that has no certificate yet and waits for its registry to
/// enrol it (`re6st node --registry URL` on an empty state directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoiningInfo {
    /// Always [`NodeState::Joining`].
    pub state: NodeState,
    /// The registry URL.
    pub registry: String,
    /// When the node started joining (UNIX seconds).
    pub since: u64,
    /// Since when every attempt failed (UNIX seconds); none while the
    /// first attempt runs.
    pub unreachable_since: Option<u64>,
    /// Attempts so far (the running one included).
    pub attempts: u64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Seconds until the next attempt; none while one runs.
    pub next_attempt_in_secs: Option<u64>,
}

/// The node as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Always [`NodeState::Running`] (absent from older nodes).
    #[serde(default)]
    pub state: NodeState,
    /// Overlay address (`prefix::1`).
    pub address: Ipv6Addr,
    /// Node prefix.
    pub prefix: Ipv6Net,
    /// Certificate serial.
    pub serial: u64,
    /// The certificate's end of validity and renewal (absent from older
    /// nodes).
    #[serde(default)]
    pub certificate: CertificateInfo,
    /// Network prefix.
    pub network: Ipv6Net,
    /// IPv4 inside the overlay (absent without, and from older nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<crate::node::Ipv4Status>,
    /// Bound UDP address of the QUIC endpoint.
    pub listen: Option<SocketAddr>,
    /// Addresses announced to peers.
    pub advertised: Vec<SocketAddr>,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Number of the CRL in force.
    pub crl_number: u64,
    /// The host side (TUN device or none).
    pub host: HostInfo,
    /// Tunnels that are up.
    pub tunnels_up: usize,
    /// Tunnels being drained before they close.
    pub tunnels_draining: usize,
    /// Tunnels that went silent: their routes moved away, the connection
    /// waits to be heard again (or to time out).
    #[serde(default)]
    pub tunnels_suspect: usize,
    /// Of the tunnels, those this node opened (its k).
    pub tunnels_outgoing: usize,
    /// Selected routes (destinations reachable).
    pub routes: usize,
    /// Peer DB entries.
    pub peer_db: usize,
    /// Registry reachability.
    pub registry: RegistryInfo,
    /// Counter groups (`path`, `policy`, `driver`, `transport`, `exchange`,
    /// `peers`, `babel`, `host`), each a map of counter name to value.
    pub counters: BTreeMap<String, BTreeMap<String, u64>>,
    /// Addresses, NAT, UPnP, LAN neighbours, gateway (absent from older
    /// nodes).
    #[serde(default)]
    pub edges: EdgesInfo,
    /// The latest best-of-n refreshes, oldest first (empty with the
    /// `least-used` policy; absent from older nodes).
    #[serde(default)]
    pub probe_rounds: Vec<ProbeRoundInfo>,
}

/// One best-of-n refresh: the probes that came up, the one kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeRoundInfo {
    /// The probes that were up when the round was decided.
    pub probes: Vec<ProbeInfo>,
    /// Probes still dialling at the deadline (cancelled).
    pub cancelled: usize,
}

/// One probe of a best-of-n refresh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeInfo {
    /// The peer's prefix.
    pub peer: Ipv6Net,
    /// The RTT it was ranked by (the QUIC handshake's), milliseconds.
    pub rtt_ms: Option<f64>,
    /// Kept: the lowest RTT of the round.
    pub kept: bool,
}

/// The edges of a node: how it can be reached and what it offers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EdgesInfo {
    /// Every address candidate, in announcement order.
    pub addresses: Vec<AddressInfo>,
    /// Peers see the node through a NAT.
    pub behind_nat: bool,
    /// Nothing is announced: the node only dials out.
    pub dial_out_only: bool,
    /// The UPnP mapping: external address and where it points.
    pub upnp: Option<(SocketAddr, SocketAddr)>,
    /// Nodes heard on a LAN: prefix and link-local address.
    pub lan_neighbours: Vec<(Ipv6Net, String)>,
    /// LAN links among the tunnels (not counted against k).
    pub lan_links: usize,
    /// Prefixes the node offers as a gateway.
    pub gateway: Vec<Ipv6Net>,
    /// Beacons LAN discovery received, by outcome (`accepted`, `own`,
    /// `repeated`, `malformed`, `bad_signature`, ...), since the node
    /// started; empty when LAN discovery is off.
    pub lan_beacons: BTreeMap<String, u64>,
}

/// One address candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressInfo {
    /// The UDP address.
    pub addr: SocketAddr,
    /// `configured`, `upnp`, `local` or `observed`.
    pub source: String,
    /// Whether it is announced.
    pub announced: bool,
    /// Why not, when it is not.
    pub reason: Option<String>,
}

/// How the node meets its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// `created`, `attached`, `fd` or `none` (userspace, transit only).
    pub mode: String,
    /// TUN device name.
    pub device: Option<String>,
    /// Whether Linux offload (GSO in, GRO out) is on.
    pub offload: bool,
    /// Overlay MTU (larger packets get ICMPv6 Packet Too Big).
    pub mtu: u16,
    /// Packet queues read in parallel.
    pub queues: usize,
    /// The kernel route to the network through the device, as installed by
    /// the node (`installed`), found in place (`present`) or `missing`.
    pub route: String,
}

/// The node's certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// End of validity (UNIX seconds).
    pub not_after: u64,
    /// `ok`; `overdue`: due for renewal and the registry does not answer
    /// (renewal is retried with back-off); `critical`: the same, with less
    /// than a quarter of the renewal window left; `expired`: peers refuse
    /// the node.
    pub renewal: String,
}

/// Registry reachability.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryInfo {
    /// The URL; none when the node runs without a registry.
    pub url: Option<String>,
    /// Last successful exchange (UNIX seconds).
    pub last_ok: Option<u64>,
    /// Error of the last exchange, if it failed.
    pub last_error: Option<String>,
    /// Failed exchanges so far.
    pub failures: u64,
    /// Seconds until the next round (the back-off while it fails).
    #[serde(default)]
    pub next_round_in_secs: Option<u64>,
}

/// One tunnel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelInfo {
    /// Tunnel id (never reused while the node runs).
    pub id: u64,
    /// The peer's prefix.
    pub peer_prefix: Ipv6Net,
    /// The peer's certificate serial.
    pub peer_serial: u64,
    /// The peer's UDP address.
    pub peer_udp: SocketAddr,
    /// `outgoing` (one of our k) or `incoming`.
    pub direction: String,
    /// `up` or `draining`.
    pub state: String,
    /// Babel interface (and next-hop) id.
    pub iface: Option<u32>,
    /// QUIC's smoothed RTT, milliseconds.
    pub rtt_ms: f64,
    /// Babel's smoothed RTT (Hello/IHU timestamps), milliseconds.
    pub babel_rtt_ms: Option<f64>,
    /// Seconds since it came up.
    pub age_secs: u64,
    /// Destinations routed through it.
    pub destinations: usize,
    /// Largest datagram it carries now.
    pub max_datagram_size: Option<usize>,
    /// Datagrams sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Datagrams QUIC refused to send (too large, connection lost).
    pub tx_dropped: u64,
    /// Datagrams received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// `quic` or `tcp`.
    #[serde(default = "quic")]
    pub transport: String,
    /// QUIC's congestion window, losses, datagrams and ACKs.
    #[serde(default)]
    pub quic: crate::transport::engine::QuicStats,
}

fn quic() -> String {
    "quic".into()
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    /// Destination prefix.
    pub prefix: IpNet,
    /// Metric (0xFFFF: unreachable, being retracted).
    pub metric: u16,
    /// Babel next hop (the neighbour's overlay address); none for our own.
    pub next_hop: Option<IpAddr>,
    /// Prefix of the peer at the other end of the tunnel it goes through.
    pub via: Option<Ipv6Net>,
    /// Tunnel id it goes through.
    pub tunnel: Option<u64>,
    /// Whether it is the route in use (the others are alternatives).
    pub selected: bool,
    /// Whether it is one of our own prefixes.
    pub local: bool,
    /// Originating router id (hex).
    pub router_id: String,
    /// Source seqno.
    pub seqno: u16,
}

/// One peer DB entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// Its prefix.
    pub prefix: Ipv6Net,
    /// Its certificate serial.
    pub serial: u64,
    /// Where its QUIC endpoint listens.
    pub addresses: Vec<SocketAddr>,
    /// When it signed its announcement (UNIX seconds).
    pub timestamp: u64,
}

/// Flattens the numeric fields of a serialisable struct (nested structs
/// with a `_` joined name) into a counter map. Non-numbers are skipped.
pub fn counter_map<T: Serialize>(value: &T) -> BTreeMap<String, u64> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, u64>) {
        match v {
            serde_json::Value::Number(n) => {
                if let Some(x) = n.as_u64() {
                    out.insert(prefix.to_string(), x);
                }
            }
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}_{k}")
                    };
                    walk(&name, v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(v) = serde_json::to_value(value) {
        walk("", &v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_json_is_one_tagged_object() {
        let s = serde_json::to_string(&Request::Tunnels).unwrap();
        assert_eq!(s, r#"{"query":"tunnels"}"#);
        let back: Request = serde_json::from_str(r#"{"query":"routes"}"#).unwrap();
        assert_eq!(back, Request::Routes);
        assert!(serde_json::from_str::<Request>(r#"{"query":"reboot"}"#).is_err());
    }

    #[test]
    fn counters_flatten_nested_numbers_only() {
        #[derive(Serialize)]
        struct Inner {
            a: u64,
            b: &'static str,
        }
        #[derive(Serialize)]
        struct Outer {
            x: u32,
            inner: Inner,
            f: f64,
            neg: i64,
        }
        let m = counter_map(&Outer {
            x: 3,
            inner: Inner { a: 7, b: "no" },
            f: 1.5,
            neg: -1,
        });
        let want: BTreeMap<String, u64> = [("x".into(), 3), ("inner_a".into(), 7)].into();
        assert_eq!(m, want);
    }

    #[test]
    fn response_round_trips() {
        let r = Response::Peers(vec![PeerView {
            prefix: "fd00:1:2:3::/64".parse().unwrap(),
            serial: 4,
            addresses: vec!["[fd00::1]:4326".parse().unwrap()],
            timestamp: 1_700_000_000,
        }]);
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.starts_with(r#"{"peers":[{"prefix":"fd00:1:2:3::/64","serial":4"#));
        let back: Response = serde_json::from_str(&s).unwrap();
        let Response::Peers(p) = back else {
            panic!("not peers")
        };
        assert_eq!(p[0].serial, 4);
    }
}
