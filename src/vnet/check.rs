//! What tests look at in the virtual network: paths through the FIBs,
//! reachability, loops, and the per-event check that every route goes
//! through an open connection.

use std::time::Duration;

use super::Network;
use super::transport::Hop;

/// Reachability of the whole network at one instant, from its FIBs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reach {
    /// Ordered pairs of live nodes whose packets arrive.
    pub reached: usize,
    /// Ordered pairs of live nodes.
    pub pairs: usize,
    /// Sum over the reached pairs of the one-way delays of the links their
    /// packets cross.
    pub delay_sum: Duration,
}

impl Reach {
    /// The mean one-way delay of the reached pairs' paths.
    pub fn mean_delay(&self) -> Option<Duration> {
        u32::try_from(self.reached)
            .ok()
            .filter(|r| *r > 0)
            .map(|r| self.delay_sum / r)
    }
}

/// What is known of a node's path to the destination being walked.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Walk {
    Unknown,
    /// On the path being followed now.
    Open,
    Dropped,
    Arrives(Duration),
}

impl Network {
    /// Whether every node runs and reaches every other.
    pub fn converged(&self) -> bool {
        let (reached, pairs) = self.reachable_pairs();
        self.live() == self.len() && reached == pairs
    }
    /// The next node a packet from `from` to node `to` goes to (`None`:
    /// delivered, dropped, or `from` is down).
    pub fn next_hop(&self, from: usize, to: usize) -> Option<usize> {
        match self.transport.route(from, self.nodes[to].cert.address) {
            Hop::Via(end) => Some(end.0),
            _ => None,
        }
    }
    /// The path of a packet from `from` to `to`, node by node (the last is
    /// where it was delivered or dropped); `None` if it loops.
    pub fn path(&self, from: usize, to: usize) -> Option<Vec<usize>> {
        self.path_to(from, self.nodes[to].cert.address)
    }
    /// The path of a packet from `from` to any address `dst` (a gateway's
    /// prefix, say), node by node as [`Network::path`].
    pub fn path_to(&self, from: usize, dst: std::net::Ipv6Addr) -> Option<Vec<usize>> {
        self.walk(from, |at| self.transport.route(at, dst))
    }
    /// The path of an IPv4 packet from `from` to `dst`, node by node as
    /// [`Network::path`].
    pub fn path_v4(&self, from: usize, dst: std::net::Ipv4Addr) -> Option<Vec<usize>> {
        self.walk(from, |at| self.transport.route_v4(at, dst))
    }
    /// Follows `hop` (a node's next hop for the packet) from `from` until
    /// it is delivered or dropped; `None` if it loops.
    fn walk(&self, from: usize, hop: impl Fn(usize) -> Hop) -> Option<Vec<usize>> {
        let mut path = vec![from];
        let mut at = from;
        for _ in 0..=self.nodes.len() {
            match hop(at) {
                Hop::Via(end) if self.nodes[end.0].core.is_some() => {
                    at = end.0;
                    if path.contains(&at) {
                        return None;
                    }
                    path.push(at);
                }
                _ => return Some(path),
            }
        }
        None
    }
    /// (pairs of live nodes whose IPv4 packets, between their IPv4
    /// addresses, arrive; pairs of live nodes with an IPv4 address).
    pub fn reachable_pairs_v4(&self) -> (usize, usize) {
        let live: Vec<(usize, std::net::Ipv4Addr)> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].core.is_some())
            .filter_map(|i| Some((i, self.nodes[i].cert.ipv4_address()?)))
            .collect();
        let mut ok = 0;
        for &(s, _) in &live {
            for &(d, a) in &live {
                if s != d && self.path_v4(s, a).is_some_and(|p| p.last() == Some(&d)) {
                    ok += 1;
                }
            }
        }
        (ok, live.len() * live.len().saturating_sub(1))
    }
    /// (pairs of live nodes whose packets arrive, pairs of live nodes).
    pub fn reachable_pairs(&self) -> (usize, usize) {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].core.is_some())
            .collect();
        let mut ok = 0;
        for &s in &live {
            for &d in &live {
                if s != d && self.path(s, d).is_some_and(|p| p.last() == Some(&d)) {
                    ok += 1;
                }
            }
        }
        (ok, live.len() * live.len().saturating_sub(1))
    }
    /// [`Network::reachable_pairs`] with the delay of each path, in one
    /// FIB lookup per pair: each destination's paths are walked once,
    /// sharing their tails.
    pub fn reach(&self) -> Reach {
        let n = self.nodes.len();
        let live: Vec<usize> = (0..n).filter(|i| self.nodes[*i].core.is_some()).collect();
        let mut r = Reach {
            pairs: live.len() * live.len().saturating_sub(1),
            ..Reach::default()
        };
        let mut walk = vec![Walk::Unknown; n];
        let mut stack = Vec::new();
        for &d in &live {
            let dst = self.nodes[d].cert.address;
            walk.fill(Walk::Unknown);
            walk[d] = Walk::Arrives(Duration::ZERO);
            for &s in &live {
                let mut at = s;
                // Follow the FIBs until a node whose fate is known.
                let end = loop {
                    match walk[at] {
                        Walk::Unknown => {}
                        Walk::Open => break Walk::Dropped, // a loop
                        known => break known,
                    }
                    walk[at] = Walk::Open;
                    stack.push(at);
                    match self.transport.route(at, dst) {
                        Hop::Via(e) if self.nodes[e.0].core.is_some() => at = e.0,
                        _ => break Walk::Dropped,
                    }
                };
                let mut fate = end;
                let mut next = at;
                while let Some(u) = stack.pop() {
                    if let Walk::Arrives(d) = fate {
                        fate = Walk::Arrives(d + self.config.latency.one_way(u, next));
                    }
                    walk[u] = fate;
                    next = u;
                }
                if let Walk::Arrives(delay) = walk[s]
                    && s != d
                {
                    r.reached += 1;
                    r.delay_sum += delay;
                }
            }
        }
        r
    }
    /// A forwarding loop between live nodes, if any: `(from, to)`.
    pub fn check_loops(&self) -> Result<(), String> {
        for s in 0..self.nodes.len() {
            for d in 0..self.nodes.len() {
                if s != d && self.nodes[s].core.is_some() && self.path(s, d).is_none() {
                    return Err(format!("forwarding loop from n{s} to n{d}"));
                }
            }
        }
        Ok(())
    }
    /// Every route of node `i`'s FIB goes through an open connection.
    pub(super) fn check_hops(&self, i: usize) -> Result<(), String> {
        let Some(core) = self.nodes[i].core.as_ref() else {
            return Ok(());
        };
        for (t, prefix, hop, _) in core.tunnels() {
            let Some(hop) = hop else { continue };
            if self.transport.hops[i].get(&hop) != Some(&t) {
                return Err(format!("tunnel {t} to {prefix}: next hop {hop} unknown"));
            }
        }
        for e in core.engine().fib() {
            let hop = re6st_dataplane::nexthop::NextHopId(e.iface.0);
            if !self.transport.hops[i].contains_key(&hop) {
                return Err(format!(
                    "route {} via next hop {hop}: no connection",
                    e.prefix
                ));
            }
        }
        Ok(())
    }
}
