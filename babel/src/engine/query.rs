//! Read-only views for the caller: the FIB feed, `re6st routes`, the
//! neighbour list, per-interface destination counts and input counters.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::Serialize;

use super::{Engine, IfaceId, OriginAuth};
use crate::wire::{INFINITY, RouterId};

/// One selected, reachable route: what the dataplane forwards by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FibEntry {
    /// Destination prefix.
    pub prefix: IpNet,
    /// Interface (the dataplane's next-hop id).
    pub iface: IfaceId,
    /// Next-hop address (the neighbour on a tunnel).
    pub next_hop: IpAddr,
}

/// One route, selected or not, for `re6st routes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteInfo {
    /// Destination prefix.
    pub prefix: IpNet,
    /// Our metric (refmetric + link cost), 0xFFFF when unreachable.
    pub metric: u16,
    /// The metric the neighbour announced.
    pub refmetric: u16,
    /// Originating router (hex in JSON).
    #[serde(serialize_with = "router_id_hex")]
    pub router_id: RouterId,
    /// Source seqno.
    pub seqno: u16,
    /// The neighbour it was learned from; `None` for our own prefixes.
    pub neighbour: Option<IpAddr>,
    /// The interface it was learned on; `None` for our own prefixes.
    pub iface: Option<IfaceId>,
    /// Whether it is the route in use.
    pub selected: bool,
    /// Whether it passes the feasibility condition against our source
    /// table right now (a selected route always does).
    pub feasible: bool,
    /// Whether it is one of our own prefixes.
    pub local: bool,
}

/// One neighbour, for `re6st status` and the tunnel manager.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NeighbourInfo {
    /// Its address.
    pub address: IpAddr,
    /// The interface it is on.
    pub iface: IfaceId,
    /// Cost of receiving from it, from our Hello history.
    pub rxcost: u16,
    /// Cost of sending to it, from its IHUs.
    pub txcost: u16,
    /// Smoothed RTT, once timestamps made a sample.
    pub rtt: Option<Duration>,
    /// The RTT part of the cost.
    pub rtt_penalty: u16,
    /// Link cost used for routes through it.
    pub cost: u16,
    /// Multicast Hello history (bit 15 = latest).
    pub reach: u16,
    /// Unicast Hello history.
    pub unicast_reach: u16,
}

/// Input the engine dropped or noticed, and a few totals. Bad input from
/// the network never produces an error or a panic: it lands here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Counters {
    /// Packets given to `handle_packet`.
    pub packets_received: u64,
    /// Packets returned by `poll_transmit`.
    pub packets_sent: u64,
    /// Packets with a bad header (magic, version, length).
    pub bad_packets: u64,
    /// TLVs that failed to parse or carried something we do not handle.
    pub bad_tlvs: u64,
    /// Packets for an interface we do not know.
    pub unknown_interface: u64,
    /// Packets from our own address on a LAN (multicast loopback).
    pub own_packets: u64,
    /// Packets from a new neighbour beyond the per-interface bound (on a
    /// tunnel, any second address).
    pub neighbour_limit: u64,
    /// Hellos whose seqno was too far from the expected one: a restart or
    /// a replay; the history was flushed.
    pub hello_resets: u64,
    /// IHUs addressed to another router.
    pub ihu_not_for_us: u64,
    /// IHUs announcing an rxcost of 0 (treated as 1).
    pub absurd_costs: u64,
    /// RTT samples rejected (negative or over 10 minutes).
    pub rtt_rejected: u64,
    /// Updates for martian prefixes.
    pub martian_updates: u64,
    /// Updates carrying our own router-id (echoes of our announcements,
    /// ignored, and the newer seqnos counted in `seqno_catch_ups`).
    pub own_router_id: u64,
    /// Times an Update carrying our router-id had a seqno newer than ours
    /// (we had lost it) and we continued from it.
    pub seqno_catch_ups: u64,
    /// Updates from a source behind a seqno we had announced for it,
    /// answered with what we know of that seqno (the sender may be the
    /// source, restarted without it).
    pub catch_up_hints: u64,
    /// Malformed Updates (finite without router-id, finite AE 0).
    pub bad_updates: u64,
    /// Updates that failed the feasibility condition (stale seqno,
    /// replayed or worse metric).
    pub unfeasible_updates: u64,
    /// Routes dropped because the table is full.
    pub route_limit: u64,
    /// Route Requests received.
    pub route_requests: u64,
    /// Seqno Requests received.
    pub seqno_requests: u64,
    /// Seqno Requests with a hop count of 0.
    pub bad_requests: u64,
    /// Seqno Requests dropped as duplicates of one being forwarded.
    pub duplicate_requests: u64,
    /// Seqno Requests sent or forwarded, resends included.
    pub seqno_requests_sent: u64,
    /// Seqno requests not sent because the pending table is full.
    pub request_limit: u64,
    /// Times our seqno was increased (seqno requests and catch-ups).
    pub seqno_bumps: u64,
    /// Messages that did not fit an empty packet (never expected).
    pub oversized_messages: u64,
    /// Full dumps asked for by wildcard Route Requests that were delayed
    /// or merged with one already scheduled (a neighbour asking too often).
    pub dumps_deferred: u64,
    /// Seqno Requests for ours whose bump was put off (at most one bump per
    /// `Config::seqno_bump_interval`).
    pub bumps_deferred: u64,
    /// Route-origin authentication.
    pub origin: super::OriginCounters,
}

fn router_id_hex<S: serde::Serializer>(rid: &RouterId, s: S) -> Result<S::Ok, S::Error> {
    let hex: String = rid.0.iter().map(|b| format!("{b:02x}")).collect();
    s.serialize_str(&hex)
}

impl<A: OriginAuth> Engine<A> {
    /// Selected reachable routes, sorted by prefix: the FIB feed. Our own
    /// prefixes are not in it (the node delivers them locally).
    pub fn fib(&self) -> Vec<FibEntry> {
        self.routes
            .iter()
            .filter_map(|(p, e)| {
                let r = e.selected().filter(|r| r.metric < INFINITY)?;
                let nb = self.neighbours.get(r.neighbour)?;
                Some(FibEntry {
                    prefix: *p,
                    iface: nb.iface,
                    next_hop: r.next_hop,
                })
            })
            .collect()
    }

    /// Incremented every time the FIB changes ([`super::Event::FibChanged`]).
    pub fn fib_generation(&self) -> u64 {
        self.fib_generation
    }

    /// Every route we hold, our own prefixes first.
    pub fn routes(&self, now: Instant) -> Vec<RouteInfo> {
        let mut out: Vec<RouteInfo> = self
            .xroutes
            .iter()
            .map(|(prefix, metric)| RouteInfo {
                prefix,
                metric,
                refmetric: metric,
                router_id: self.router_id,
                seqno: self.seqno,
                neighbour: None,
                iface: None,
                selected: true,
                feasible: true,
                local: true,
            })
            .collect();
        for (p, e) in self.routes.iter() {
            for r in &e.routes {
                let nb = self.neighbours.get(r.neighbour);
                out.push(RouteInfo {
                    prefix: *p,
                    metric: r.metric,
                    refmetric: r.refmetric,
                    router_id: r.router_id,
                    seqno: r.seqno,
                    neighbour: nb.map(|n| n.addr),
                    iface: nb.map(|n| n.iface),
                    selected: e.selected == Some(r.neighbour),
                    feasible: self
                        .sources
                        .is_feasible(*p, r.router_id, r.seqno, r.refmetric, now),
                    local: false,
                });
            }
        }
        out
    }

    /// Every neighbour.
    pub fn neighbours(&self) -> Vec<NeighbourInfo> {
        self.neighbours
            .iter()
            .filter_map(|(_, n)| {
                let params = self.interfaces.get(&n.iface)?.params(&self.config);
                Some(NeighbourInfo {
                    address: n.addr,
                    iface: n.iface,
                    rxcost: n.rxcost(params),
                    txcost: n.txcost,
                    rtt: n.rtt.map(|us| Duration::from_micros(u64::from(us))),
                    rtt_penalty: n.rtt_penalty(params),
                    cost: n.cost,
                    reach: n.mcast.reach(),
                    unicast_reach: n.ucast.reach(),
                })
            })
            .collect()
    }

    /// How many destinations each interface is the selected next hop for
    /// (every up interface is listed, with 0 if it carries nothing). The
    /// tunnel manager replaces the tunnel that reaches the fewest.
    pub fn destinations_per_interface(&self) -> BTreeMap<IfaceId, usize> {
        let mut out: BTreeMap<IfaceId, usize> = self.interfaces.keys().map(|id| (*id, 0)).collect();
        for e in self.fib() {
            *out.entry(e.iface).or_default() += 1;
        }
        out
    }

    /// Our own prefixes and their metrics.
    pub fn xroutes(&self) -> Vec<(IpNet, u16)> {
        self.xroutes.iter().collect()
    }

    /// Input counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}
