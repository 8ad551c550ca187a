//! What NodeCore shows of itself in `re6st status`.

use std::time::Instant;

use super::NodeCore;
use crate::node::packet_loop::PathStats;
use crate::node::status::{
    EdgesStatus, Ipv4Status, LinkStats, NodeStatus, ProbeRoundStatus, ProbeStatus, TunnelStatus,
};
use crate::transport::TransportStats;
use crate::tunnels::policy::Direction;

impl NodeCore {
    /// The status, as far as NodeCore knows it. The I/O parts (bound
    /// address, transport and packet-path counters, each tunnel's traffic,
    /// LAN beacon counters) are left empty for the control loop to fill.
    pub fn status(&self, now: Instant) -> NodeStatus {
        let counts = self.engine.destinations_per_interface();
        let mut tunnels: Vec<TunnelStatus> = self
            .tunnels
            .iter()
            .map(|(t, up)| {
                let iface = self.driver.iface_of(*t);
                let info = self.driver.policy().tunnel(*t);
                TunnelStatus {
                    id: t.0,
                    peer_prefix: up.peer.prefix,
                    peer_serial: up.peer.serial,
                    peer_udp: up.remote,
                    direction: match (up.lan, up.direction) {
                        (true, _) => "lan",
                        (_, Direction::Outgoing) => "outgoing",
                        (_, Direction::Incoming) => "incoming",
                    },
                    state: if self.driver.is_draining(*t) {
                        "draining"
                    } else if up.suspected {
                        "suspect"
                    } else if info.as_ref().is_some_and(|i| i.probe) {
                        "probe"
                    } else {
                        "up"
                    },
                    iface: iface.map(|i| i.0),
                    rtt_ms: up.rtt.as_secs_f64() * 1000.0,
                    babel_rtt_ms: info
                        .as_ref()
                        .and_then(|i| i.rtt)
                        .map(|r| r.as_secs_f64() * 1000.0),
                    age_secs: now.saturating_duration_since(up.since).as_secs(),
                    destinations: iface.and_then(|i| counts.get(&i)).copied().unwrap_or(0),
                    max_datagram_size: up.max_datagram,
                    link: LinkStats::default(),
                    transport: "quic",
                    quic: Default::default(),
                }
            })
            .collect();
        tunnels.sort_by_key(|t| t.id);
        NodeStatus {
            address: self.cert.address,
            prefix: self.cert.prefix,
            serial: self.cert.serial,
            cert_not_after: crate::identity::unix_secs(self.cert.not_after),
            renewal: crate::node::renewal::Renewal::of(
                &self.cert,
                self.registry.renew_after,
                self.registry.failing(),
                self.last_wall,
            ),
            network: self.network.network,
            ipv4: self.cert.ipv4.map(|subnet| Ipv4Status {
                address: crate::identity::ipv4::node_address_v4(subnet),
                subnet,
                network: self.network.ipv4,
            }),
            listen: None,
            advertised: self.advertised(),
            uptime_secs: now.saturating_duration_since(self.started).as_secs(),
            crl_number: self.crl_number(),
            tunnels,
            probe_rounds: self
                .driver
                .policy()
                .probe_rounds()
                .map(|r| ProbeRoundStatus {
                    probes: r
                        .up
                        .iter()
                        .map(|(peer, rtt)| ProbeStatus {
                            peer_prefix: peer.prefix,
                            rtt_ms: rtt.map(|r| r.as_secs_f64() * 1000.0),
                            kept: r.kept.as_ref() == Some(peer),
                        })
                        .collect(),
                    cancelled: r.cancelled,
                })
                .collect(),
            routes: self.engine.fib().len(),
            peer_db: self.db.len(),
            registry: crate::node::status::RegistryStatus {
                next_round_in_secs: self.registry.next_round_in(now),
                ..self.registry.status.clone()
            },
            policy: self.driver.policy().stats().clone(),
            driver: self.driver.stats().clone(),
            transport: TransportStats::default(),
            tcp: None,
            path: PathStats::default(),
            exchange: self.exchange.stats.clone(),
            peers: self.db.stats().clone(),
            babel: self.engine.counters().clone(),
            origins: self.engine.origin_auth().stats().clone(),
            cert_fetch: self.cert_fetch.clone(),
            liveness: self.liveness.clone(),
            edges: self.edges_status(),
        }
    }

    fn edges_status(&self) -> EdgesStatus {
        let addresses = self.addresses.candidates();
        EdgesStatus {
            dial_out_only: !addresses.iter().any(|c| c.announced),
            addresses,
            behind_nat: self.addresses.behind_nat(),
            upnp: self.upnp,
            lan_neighbours: self
                .lan
                .neighbours
                .values()
                .map(|p| (p.prefix, p.addr.to_string()))
                .collect(),
            gateway: self.config.gateway.prefixes.clone(),
            lan_beacons: None,
        }
    }
}
