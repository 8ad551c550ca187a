//! The simulated network: one [`crate::tunnels::Policy`] per node — the very
//! type the node runs, instantiated with node indices as peer ids — wired
//! to each other the way quinn-proto's test `Pair` wires two endpoints.
//! Dials are answered at once (the dialled node's policy decides), time is
//! a fake clock that jumps by refresh periods, and routing is recomputed
//! between refreshes as a converged Babel would have it
//! ([`super::routing`]).

use std::time::{Duration, Instant};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::data::LatencyMatrix;
use super::graph::Csr;
use super::routing::Converged;
use crate::tunnels::{Action, CloseReason, Direction, Failure, Policy, PolicyConfig, TunnelState};

/// The node's policy with simulator peer ids and a small seeded RNG.
pub type SimPolicy = Policy<u32, Xoshiro256PlusPlus>;

/// What each node's peer DB holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerDb {
    /// Every other node (the report's simulations).
    All,
    /// A uniform random sample of this many nodes (a bounded DB; picking
    /// uniformly from a uniform sample is still uniform).
    Sample(usize),
}

/// Splitmix64: independent seeds for every node and every restart.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The network of policies.
pub struct Overlay<'a> {
    nodes: Vec<SimPolicy>,
    config: PolicyConfig,
    latency: Option<&'a LatencyMatrix>,
    db: PeerDb,
    seed: u64,
    restarts: u64,
    rng: Xoshiro256PlusPlus,
    now: Instant,
    dirty: Vec<u32>,
    /// Stats of policies that were replaced by a restart.
    replaced_before: (u64, u64),
}

impl<'a> Overlay<'a> {
    /// `n` nodes, none started. With `latency`, a dial to a pair without RTT
    /// fails as unreachable and tunnels carry their RTT.
    pub fn new(
        n: usize,
        config: PolicyConfig,
        latency: Option<&'a LatencyMatrix>,
        db: PeerDb,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let now = Instant::now();
        let nodes = (0..n as u32)
            .map(|i| Self::fresh(&config, seed, i, 0, now))
            .collect::<anyhow::Result<_>>()?;
        Ok(Overlay {
            nodes,
            config,
            latency,
            db,
            seed,
            restarts: 0,
            rng: Xoshiro256PlusPlus::seed_from_u64(mix(seed ^ 0x5157)),
            now,
            dirty: Vec::new(),
            replaced_before: (0, 0),
        })
    }

    fn fresh(
        config: &PolicyConfig,
        seed: u64,
        i: u32,
        restart: u64,
        now: Instant,
    ) -> anyhow::Result<SimPolicy> {
        let rng = Xoshiro256PlusPlus::seed_from_u64(mix(
            mix(seed) ^ mix(u64::from(i) << 1 | restart << 33)
        ));
        Ok(Policy::new(i, config.clone(), rng, now)?)
    }

    /// The policy of node `i`.
    pub fn policy(&self, i: usize) -> &SimPolicy {
        &self.nodes[i]
    }

    /// Gives every node its peer DB, in order, each opening its tunnels as
    /// it starts (the report's graph construction). `tick` is called per
    /// node for progress.
    pub fn start(&mut self, mut tick: impl FnMut()) {
        for i in 0..self.nodes.len() {
            self.give_db(i);
            self.pump();
            tick();
        }
    }

    fn give_db(&mut self, i: usize) {
        let n = self.nodes.len();
        let now = self.now;
        match self.db {
            PeerDb::All => self.nodes[i].handle_candidates(0..n as u32, now),
            PeerDb::Sample(size) => {
                let size = size.min(n - 1);
                let mut peers = Vec::with_capacity(size);
                while peers.len() < size {
                    let p = self.rng.random_range(0..n as u32);
                    if p as usize != i && !peers.contains(&p) {
                        peers.push(p);
                    }
                }
                self.nodes[i].handle_candidates(peers, now);
            }
        }
        self.dirty.push(i as u32);
    }

    /// Applies every pending action, and those they cause, until quiet.
    fn pump(&mut self) {
        while let Some(i) = self.dirty.pop() {
            while let Some(action) = self.nodes[i as usize].poll_action() {
                self.apply(i, action);
            }
        }
    }

    fn apply(&mut self, i: u32, action: Action<u32>) {
        let now = self.now;
        match action {
            Action::Open { tunnel, peer } => {
                let rtt = match self.latency {
                    Some(m) => match m.rtt_us(i as usize, peer as usize) {
                        Some(us) => Some(Duration::from_micros(u64::from(us))),
                        None => {
                            self.nodes[i as usize].handle_tunnel_failed(
                                tunnel,
                                Failure::Unreachable,
                                now,
                            );
                            return;
                        }
                    },
                    None => None,
                };
                match self.nodes[peer as usize].handle_incoming(i, now) {
                    Ok(_) => self.nodes[i as usize].handle_tunnel_up(tunnel, rtt, now),
                    Err(refusal) => self.nodes[i as usize].handle_tunnel_failed(
                        tunnel,
                        Failure::Refused(refusal),
                        now,
                    ),
                }
                self.dirty.push(peer);
            }
            // Routing stops using a draining tunnel at the next convergence.
            Action::Drain { .. } => {}
            Action::Close { peer, reason, .. } => {
                // A closed duplicate or superseded tunnel never reached the
                // other side as a tunnel of its own; the others did.
                if matches!(reason, CloseReason::Replaced | CloseReason::ProbeLost) {
                    self.tell_closed(peer, i);
                }
            }
        }
    }

    /// Tells `peer` that its tunnel with `gone` is closed.
    fn tell_closed(&mut self, peer: u32, gone: u32) {
        let other = self.nodes[peer as usize]
            .tunnels()
            .find(|t| t.peer == gone)
            .map(|t| t.id);
        if let Some(id) = other {
            self.nodes[peer as usize].handle_tunnel_closed(id, self.now);
            self.dirty.push(peer);
        }
    }

    /// The tunnels that carry routes: up (not draining), each listed once,
    /// as (opener, peer).
    pub fn edges(&self) -> Vec<(u32, u32)> {
        let mut edges = Vec::with_capacity(self.nodes.len() * self.config.outgoing);
        for (i, p) in self.nodes.iter().enumerate() {
            for t in p.tunnels() {
                if t.direction == Direction::Outgoing && t.state == TunnelState::Up {
                    edges.push((i as u32, t.peer));
                }
            }
        }
        edges
    }

    /// Reports the converged routing to every node: destinations per tunnel.
    /// Draining tunnels that route nothing are closed.
    pub fn feed_routes(&mut self, csr: &Csr, routing: &Converged) {
        let now = self.now;
        for i in 0..self.nodes.len() {
            let tunnels: Vec<(u32, crate::tunnels::TunnelId)> =
                self.nodes[i].tunnels().map(|t| (t.peer, t.id)).collect();
            let base = csr.offset(i);
            let counts: Vec<_> = csr
                .neighbours(i)
                .iter()
                .enumerate()
                .filter_map(|(j, w)| {
                    let id = tunnels.iter().find(|t| t.0 == *w)?.1;
                    Some((id, routing.routes[base + j]))
                })
                .collect();
            self.nodes[i].handle_routes(counts, now);
            self.dirty.push(i as u32);
        }
        self.pump();
    }

    /// Reports to node `i` the route metric and estimated direct RTT of
    /// each destination ([`crate::tunnels::Policy::handle_destinations`]).
    pub fn feed_destinations(
        &mut self,
        i: usize,
        destinations: impl IntoIterator<Item = (u32, Duration, Duration)>,
    ) {
        self.nodes[i].handle_destinations(destinations, self.now);
    }

    /// One refresh period passes: every node's timer fires, in node order,
    /// each node's replacements applied before the next node's (as in the
    /// report's simulator).
    pub fn refresh(&mut self) {
        self.now += self.config.refresh;
        for i in 0..self.nodes.len() {
            self.nodes[i].handle_timeout(self.now);
            self.dirty.push(i as u32);
            self.pump();
        }
    }

    /// Node `i` leaves and comes back at once with a fresh state (report
    /// §5.2's churn): its peers see their tunnels close and replace their
    /// own ones; it opens `k` new tunnels.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let old: Vec<u32> = self.nodes[i].tunnels().map(|t| t.peer).collect();
        let s = self.nodes[i].stats();
        self.replaced_before.0 += s.replaced;
        self.replaced_before.1 += s.replaced_destinations;
        self.restarts += 1;
        self.nodes[i] = Self::fresh(&self.config, self.seed, i as u32, self.restarts, self.now)?;
        for peer in old {
            self.tell_closed(peer, i as u32);
        }
        self.pump();
        self.give_db(i);
        self.pump();
        Ok(())
    }

    /// Arity (tunnels in both directions) of every node.
    pub fn arities(&self) -> Vec<usize> {
        self.nodes.iter().map(|p| p.tunnel_count()).collect()
    }

    /// (tunnels replaced at refreshes, sum of their destinations) so far.
    pub fn replaced(&self) -> (u64, u64) {
        self.nodes.iter().fold(self.replaced_before, |acc, p| {
            let s = p.stats();
            (acc.0 + s.replaced, acc.1 + s.replaced_destinations)
        })
    }

    /// Random source for churn decisions, derived from the seed.
    pub fn rng(&mut self) -> &mut Xoshiro256PlusPlus {
        &mut self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The simulator runs the node's policy, not a copy: the type of each
    /// simulated node *is* `crate::tunnels::Policy` (this does not compile
    /// otherwise), and changing the policy's configuration changes the
    /// simulated network.
    #[test]
    fn the_simulator_runs_the_nodes_policy() {
        fn node_policy<'o>(
            o: &'o Overlay<'_>,
            i: usize,
        ) -> &'o crate::tunnels::Policy<u32, Xoshiro256PlusPlus> {
            o.policy(i)
        }
        for k in [2usize, 3] {
            let mut o =
                Overlay::new(50, PolicyConfig::with_k(k), None, PeerDb::All, 1).expect("valid");
            o.start(|| {});
            for i in 0..50 {
                assert_eq!(node_policy(&o, i).own_count(), k);
                assert!(node_policy(&o, i).tunnel_count() <= 3 * k);
            }
            assert_eq!(o.edges().len(), 50 * k);
        }
    }

    /// Invariants of the whole network under refreshes and restarts: both
    /// ends agree on every tunnel, no pair has two tunnels, arity stays in
    /// [k, 3k] (a node can be short of k only if every candidate refused).
    #[test]
    fn network_invariants_hold_under_refresh_and_churn() {
        let n = 60;
        let config = PolicyConfig {
            refresh: Duration::from_secs(10),
            ..PolicyConfig::with_k(3)
        };
        let mut o = Overlay::new(n, config, None, PeerDb::All, 9).expect("valid");
        o.start(|| {});
        for round in 0..30 {
            let edges = o.edges();
            let csr = Csr::from_edges(n, &edges);
            // A fake routing view: every tunnel carries as many destinations
            // as the peer index modulo 5.
            let routes: Vec<u32> = (0..n)
                .flat_map(|v| csr.neighbours(v).iter().map(|w| w % 5).collect::<Vec<_>>())
                .collect();
            let conv = Converged {
                mean_ms: 0.0,
                unreachable_pairs: 0,
                routes,
            };
            // Drained tunnels are closed here, so the limits hold exactly
            // (a refresh may exceed 3k by one while its drain is running).
            o.feed_routes(&csr, &conv);
            for i in 0..n {
                let p = o.policy(i);
                assert!(p.tunnel_count() <= 9, "node {i} over 3k");
                assert_eq!(p.own_count(), 3, "node {i} has k own tunnels");
                let mut peers: Vec<u32> = p.tunnels().map(|t| t.peer).collect();
                peers.sort();
                let len = peers.len();
                peers.dedup();
                assert_eq!(peers.len(), len, "node {i}: two tunnels to one node");
                for t in p.tunnels() {
                    let back = o
                        .policy(t.peer as usize)
                        .tunnels()
                        .find(|b| b.peer == i as u32);
                    let back = back.expect("the other end knows the tunnel");
                    assert_ne!(back.direction, t.direction);
                }
            }
            o.refresh();
            if round % 3 == 0 {
                o.restart(round % n).expect("restart");
            }
        }
        assert!(o.replaced().0 > 0);
    }
}
