//! The virtual-time network: N [`NodeCore`]s over a simulated transport,
//! in one thread, with time that jumps to the next event (quinn's test
//! `Pair`, for N nodes). Nodes run the node's own decisions (Babel, tunnel
//! policy, peer exchange, registry rounds, CRL, suspicion); only the
//! sockets are simulated ([`transport`]): per-pair latency, jitter, loss,
//! a datagram size limit, cuts between nodes, crashes and restarts with or
//! without the state directory, and a registry that answers after a delay.
//!
//! Every event is checked: the NodeCore it reached keeps its invariants
//! ([`NodeCore::check_invariants`]) and every route of its FIB goes through
//! an open connection. [`Network::check_loops`] and
//! [`Network::reachable_pairs`] walk all FIBs (costly: call them when a
//! test asks).
//!
//! ```
//! use std::time::Duration;
//! use re6st::vnet::{NetConfig, Network};
//! let mut net = Network::new(NetConfig { nodes: 6, ..NetConfig::default() });
//! net.run_for(Duration::from_secs(60));
//! let (reached, pairs) = net.reachable_pairs();
//! assert_eq!(reached, pairs);
//! ```

mod check;
mod events;
mod packet_loop;
mod registry;
mod transport;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnet::Ipv6Net;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::identity::{NetworkConfig, NodeCert, NodeKey, SignedAnnouncement};
use crate::node::core::boundary::TunnelEvent;
use crate::node::core::{NodeCore, Now};
use crate::node::{CoreConfig, NodeConfig};
use crate::test_pki::Pki;
pub use check::Reach;
use events::{Ev, Scheduled};
use registry::Registry;
use transport::{End, Transport};

/// One-way delays between nodes.
#[derive(Clone)]
pub enum Latency {
    /// The same between every pair.
    Fixed(Duration),
    /// By pair of node indexes (symmetric or not, as the data is).
    Matrix(Arc<dyn Fn(usize, usize) -> Duration + Send + Sync>),
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Latency::Fixed(d) => write!(f, "Fixed({d:?})"),
            Latency::Matrix(_) => f.write_str("Matrix"),
        }
    }
}

impl Latency {
    fn one_way(&self, a: usize, b: usize) -> Duration {
        match self {
            Latency::Fixed(d) => *d,
            Latency::Matrix(f) => f(a, b),
        }
    }
}

/// A change to one node's settings: `(node, settings)`.
pub type NodeTweak = Arc<dyn Fn(usize, &mut CoreConfig) + Send + Sync>;

/// What to simulate.
#[derive(Clone)]
pub struct NetConfig {
    /// Nodes.
    pub nodes: usize,
    /// The network configuration every node starts with (k, the arity
    /// limit, the refresh period, Babel timers).
    pub network: NetworkConfig,
    /// Every node's settings (a node's own address is set by the network).
    pub core: CoreConfig,
    /// Changes to some nodes' settings (a node's own replacement policy,
    /// ...).
    pub tweak: Option<NodeTweak>,
    /// One-way delays.
    pub latency: Latency,
    /// Extra one-way delay of a datagram, uniform in `[0, jitter)`.
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Largest datagram carried; larger ones are dropped.
    pub max_datagram: usize,
    /// The liveness clock's suspect time.
    pub suspect_after: Duration,
    /// How long before a silence an end may have last heard its peer:
    /// each end's last packet is drawn uniform in `[0, heard_spread)`
    /// before it, so the ends of a dead node suspect it at different
    /// instants, as real ends do between keep-alives. Zero: every end
    /// heard its peer at the instant the silence began.
    pub heard_spread: Duration,
    /// A connection that hears nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A dial that gets no answer fails after this.
    pub handshake_timeout: Duration,
    /// One-way delay to the registry (`None`: no registry; nodes then need
    /// `core.seed_peers`).
    pub registry_delay: Option<Duration>,
    /// Node `i` starts at `i * start_spread / nodes`.
    pub start_spread: Duration,
    /// Check the touched node's invariants after every event.
    pub check: bool,
    /// Seed of every random choice (nodes' and the network's).
    pub seed: u64,
}

/// The overlay of simulated networks.
pub const NETWORK: &str = "fd00:77::/48";

impl std::fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetConfig")
            .field("nodes", &self.nodes)
            .field("latency", &self.latency)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl Default for NetConfig {
    fn default() -> Self {
        let network = NetworkConfig {
            tunnels: 3,
            max_tunnels: 9,
            tunnel_refresh_secs: 300,
            babel_hello_ms: 4000,
            babel_ihu_ms: 12_000,
            babel_update_ms: 16_000,
            ..NetworkConfig::defaults(NETWORK.parse().expect("prefix"), "sim://registry".into())
        };
        let mut core = NodeConfig::default().core(Some("sim://registry".into()));
        core.bootstrap_retry = Duration::from_secs(5);
        core.exchange.first_round = Duration::from_secs(5);
        core.exchange.interval = Duration::from_secs(120);
        Self {
            nodes: 10,
            network,
            core,
            tweak: None,
            latency: Latency::Fixed(Duration::from_millis(10)),
            jitter: Duration::ZERO,
            loss: 0.0,
            max_datagram: 1400,
            suspect_after: crate::transport::DEFAULT_SUSPECT_AFTER,
            heard_spread: Duration::ZERO,
            idle_timeout: crate::transport::DEFAULT_IDLE_TIMEOUT,
            handshake_timeout: Duration::from_secs(5),
            registry_delay: Some(Duration::from_millis(20)),
            start_spread: Duration::from_secs(2),
            check: true,
            seed: 1,
        }
    }
}

/// Counters of the simulated network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Events handled.
    pub events: u64,
    /// Babel datagrams sent, and their bytes.
    pub babel_datagrams: u64,
    /// Babel bytes sent.
    pub babel_bytes: u64,
    /// Control messages sent.
    pub control_messages: u64,
    /// Bytes of the control messages sent (their frames).
    pub control_bytes: u64,
    /// Of the control messages, certificate requests and answers
    /// (`WantCerts`, `Certs`)...
    pub cert_messages: u64,
    /// ...and their bytes (framed as on the wire; certificates of keys
    /// drawn afresh each run, so not fixed by the seed).
    pub cert_bytes: u64,
    /// Routes of live nodes' FIBs that appeared, vanished or changed next
    /// hop (one per node and prefix).
    pub route_changes: u64,
    /// Datagrams lost (the loss rate), cut off, or too large.
    pub datagrams_lost: u64,
    /// Datagrams larger than the limit.
    pub datagrams_too_big: u64,
    /// Dials started.
    pub dials: u64,
    /// Packets NodeCores originated (peer exchange), delivered or not.
    pub packets: u64,
    /// Such packets that found no route or looped.
    pub packets_dropped: u64,
    /// Registry requests.
    pub registry_requests: u64,
}

/// What one node sent, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeTraffic {
    /// Babel datagrams.
    pub babel_bytes: u64,
    /// Control message frames.
    pub control_bytes: u64,
    /// Packets the NodeCore originated (peer exchange), as sent.
    pub exchange_bytes: u64,
}

/// A node's state directory, as the harness keeps it.
#[derive(Debug, Clone, Default)]
struct StateCopy {
    seqno: Option<String>,
    peers: BTreeMap<Ipv6Net, (String, SignedAnnouncement)>,
}

/// One simulated node.
#[derive(Debug)]
struct SimNode {
    core: Option<NodeCore>,
    /// Incarnation: events for an older one are dropped.
    epoch: u64,
    cert: NodeCert,
    key: Arc<NodeKey>,
    addr: SocketAddr,
    state: StateCopy,
    /// The wake-up scheduled (a later one in the queue is stale).
    wake: Option<Instant>,
    /// Wall-clock offset of this node, in seconds (clock jumps).
    skew: i64,
}

/// A network of NodeCores in virtual time.
pub struct Network {
    config: NetConfig,
    pki: Pki,
    t0: Instant,
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: Vec<SimNode>,
    transport: Transport,
    registry: Registry,
    rng: StdRng,
    stats: NetStats,
    /// What each node sent.
    traffic: Vec<NodeTraffic>,
    /// The first invariant violation seen (the run goes on).
    violation: Option<String>,
    /// Ids of the test probes that arrived.
    probes: std::collections::BTreeSet<u64>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("nodes", &self.nodes.len())
            .field("now", &self.elapsed())
            .finish_non_exhaustive()
    }
}

/// Underlay address of node `i`.
fn underlay(i: usize) -> SocketAddr {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)), 4326)
}

/// Node `i`'s prefix in a network of `config`: the `i + 1`th /64 of the
/// overlay (its certificate serial is `i + 1`), known before the network
/// is made (for gateway grants in its configuration).
pub fn node_prefix(config: &NetConfig, i: usize) -> Ipv6Net {
    let net = config.network.network;
    let subnet = u128::from(net.network()) | ((i as u128 + 1) << 64);
    Ipv6Net::new(subnet.into(), 64).unwrap_or(net)
}

/// Node `i`'s IPv4 subnet when the network has IPv4: the /24 number
/// `i + 1` of it (the network must be a /23 or shorter, and hold them).
fn ipv4_subnet(network: &NetworkConfig, i: usize) -> Option<ipnet::Ipv4Net> {
    let net = network.ipv4?;
    let n = u32::try_from(i + 1).ok()?;
    let base = u32::from(net.network()).checked_add(n.checked_shl(8)?)?;
    let subnet = ipnet::Ipv4Net::new(Ipv4Addr::from(base), 24).ok()?;
    net.contains(&subnet).then_some(subnet)
}

impl Network {
    /// Makes the nodes (identities from a throwaway CA) and schedules
    /// their start.
    pub fn new(config: NetConfig) -> Self {
        let pki = Pki::with_validity(config.network.network, Duration::from_secs(30 * 86_400));
        let t0 = Instant::now();
        let mut transport = Transport::new(config.nodes);
        let mut nodes = Vec::with_capacity(config.nodes);
        for i in 0..config.nodes {
            let (cert, key) = pki.node_with_ipv4(i as u64 + 1, ipv4_subnet(&config.network, i));
            let addr = underlay(i);
            transport.by_addr.insert(addr, i);
            transport.by_overlay.insert(cert.address, i);
            nodes.push(SimNode {
                core: None,
                epoch: 0,
                cert,
                key: Arc::new(key),
                addr,
                state: StateCopy::default(),
                wake: None,
                skew: 0,
            });
        }
        let mut net = Self {
            rng: StdRng::seed_from_u64(config.seed ^ 0x5eed_0f6e),
            pki,
            t0,
            now: t0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            transport,
            registry: Registry::default(),
            stats: NetStats::default(),
            traffic: vec![NodeTraffic::default(); config.nodes],
            violation: None,
            probes: std::collections::BTreeSet::new(),
            config,
        };
        let n = net.nodes.len();
        for i in 0..n {
            let at = net.config.start_spread.mul_f64(i as f64 / n.max(1) as f64);
            net.schedule(at, 0, Ev::Start(i));
        }
        net
    }
    // ----- running -----

    /// Runs until virtual time `t` after the start.
    pub fn run_until(&mut self, t: Duration) {
        let end = self.t0 + t;
        while let Some(Reverse(s)) = self.queue.peek() {
            if s.at > end {
                break;
            }
            let Some(Reverse(s)) = self.queue.pop() else {
                break;
            };
            self.now = s.at;
            self.stats.events += 1;
            self.handle(s.epoch, s.ev);
        }
        self.now = self.now.max(end);
    }
    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.elapsed() + d;
        self.run_until(t);
    }
    /// Runs until `done` holds (checked every `step`), at most `limit` more
    /// virtual time; returns how long it took, `None` if it never held.
    pub fn run_until_true(
        &mut self,
        step: Duration,
        limit: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Option<Duration> {
        let start = self.elapsed();
        while self.elapsed() - start <= limit {
            if done(self) {
                return Some(self.elapsed() - start);
            }
            self.run_for(step);
        }
        None
    }
    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }
    // ----- what tests do to it -----

    /// Node `i` dies at once: no goodbye; its peers notice by silence.
    pub fn crash(&mut self, i: usize) {
        let Some(node) = self.nodes.get_mut(i) else {
            return;
        };
        node.core = None;
        node.epoch += 1;
        node.wake = None;
        let (hanging, waiting) = self.transport.drop_node(i);
        for end in hanging {
            self.start_silence(end);
        }
        for end in waiting {
            self.dial_unanswered(end);
        }
    }
    /// Node `i` starts again, with its state directory (`keep_state`) or
    /// an empty one (same identity).
    pub fn restart(&mut self, i: usize, keep_state: bool) {
        self.crash(i);
        if let Some(node) = self.nodes.get_mut(i) {
            if !keep_state {
                node.state = StateCopy::default();
            }
            let epoch = node.epoch;
            self.schedule(Duration::ZERO, epoch, Ev::Start(i));
        }
    }
    /// Cuts (or heals) the underlay between `a` and `b`.
    pub fn cut(&mut self, a: usize, b: usize, cut: bool) {
        let key = (a.min(b), a.max(b));
        if cut {
            if !self.transport.cut.insert(key) {
                return;
            }
            let ends: Vec<End> = self
                .transport
                .conns
                .iter()
                .filter(|(e, c)| (e.0 == a && c.peer.0 == b) || (e.0 == b && c.peer.0 == a))
                .map(|(e, _)| *e)
                .collect();
            for e in ends {
                self.start_silence(e);
            }
        } else if self.transport.cut.remove(&key) {
            let ends: Vec<End> = self
                .transport
                .conns
                .iter()
                .filter(|(e, c)| {
                    c.silent.is_some()
                        && self.transport.peer_of(**e).is_some()
                        && ((e.0 == a && c.peer.0 == b) || (e.0 == b && c.peer.0 == a))
                })
                .map(|(e, _)| *e)
                .collect();
            for end in ends {
                if let Some(c) = self.transport.conns.get_mut(&end) {
                    c.silent = None;
                }
                let epoch = self.nodes[end.0].epoch;
                self.schedule(
                    Duration::ZERO,
                    epoch,
                    Ev::Tunnel(end.0, TunnelEvent::Heard { tunnel: end.1 }),
                );
            }
        }
    }
    /// Moves node `i`'s wall clock by `secs` (either way).
    pub fn skew_wall_clock(&mut self, i: usize, secs: i64) {
        if let Some(n) = self.nodes.get_mut(i) {
            n.skew = n.skew.saturating_add(secs);
        }
    }
    /// The registry stops (or resumes) answering.
    pub fn set_registry_down(&mut self, down: bool) {
        self.registry.down = down;
    }
    /// Asks node `i` for a registry round now.
    pub fn registry_round(&mut self, i: usize) {
        let now = self.now_of(i);
        if let Some(core) = self.nodes.get_mut(i).and_then(|n| n.core.as_mut()) {
            core.handle_registry_round_now(now);
            self.drain(i);
        }
    }
    /// Gives node `i` a tunnel event as its packet loop would (garbage,
    /// tests of bad input).
    pub fn inject(&mut self, i: usize, ev: TunnelEvent) {
        let epoch = self.nodes.get(i).map_or(0, |n| n.epoch);
        self.schedule(Duration::ZERO, epoch, Ev::Tunnel(i, ev));
    }
    /// Sends a test probe from node `from` to node `to`'s address, routed
    /// hop by hop by the FIBs like any packet; [`Network::arrived`] says
    /// whether it got there.
    pub fn probe(&mut self, from: usize, to: usize, id: u64) {
        if self.nodes.get(from).is_none_or(|n| n.core.is_none()) || to >= self.nodes.len() {
            return;
        }
        let bytes = packet_loop::probe_packet(
            self.nodes[from].cert.address,
            self.nodes[to].cert.address,
            id,
        );
        self.route_packet(from, bytes, 64);
    }

    /// Rewrites the Babel seqno in node `i`'s state directory (to start it
    /// again as if its seqno had gone round while it was away).
    #[cfg(test)]
    pub(crate) fn set_persisted_seqno(&mut self, i: usize, seqno: u16) {
        if let Some(n) = self.nodes.get_mut(i)
            && let Some(file) = n.state.seqno.as_mut()
            && let Some(rid) = file.split_whitespace().next()
        {
            *file = format!("{rid} {seqno}\n");
        }
    }

    /// Runs `f` on node `i`'s NodeCore (a rogue's misdeeds), then carries
    /// out its commands.
    #[cfg(test)]
    pub(crate) fn with_core(&mut self, i: usize, f: impl FnOnce(&mut NodeCore, Now)) {
        let now = self.now_of(i);
        if let Some(core) = self.nodes.get_mut(i).and_then(|n| n.core.as_mut()) {
            f(core, now);
            self.drain(i);
        }
    }

    /// Whether probe `id` arrived.
    pub fn arrived(&self, id: u64) -> bool {
        self.probes.contains(&id)
    }

    // ----- looking at it -----

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    /// Whether the network has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    /// Nodes running now.
    pub fn live(&self) -> usize {
        self.nodes.iter().filter(|n| n.core.is_some()).count()
    }
    /// Node `i`'s NodeCore (`None` while it is down).
    pub fn core(&self, i: usize) -> Option<&NodeCore> {
        self.nodes.get(i)?.core.as_ref()
    }
    /// Node `i`'s certificate.
    pub fn cert(&self, i: usize) -> &NodeCert {
        &self.nodes[i].cert
    }
    /// The node whose prefix is `prefix`.
    pub fn node_of(&self, prefix: Ipv6Net) -> Option<usize> {
        self.nodes.iter().position(|n| n.cert.prefix == prefix)
    }
    /// What node `i` sent so far (all its incarnations).
    pub fn traffic(&self, i: usize) -> NodeTraffic {
        self.traffic.get(i).copied().unwrap_or_default()
    }
    /// Routes of node `i`'s FIB (0 while it is down).
    pub fn routes(&self, i: usize) -> usize {
        self.transport.fibs.get(i).map_or(0, |f| f.len())
    }
    /// The one-way delay from node `a` to node `b`.
    pub fn one_way(&self, a: usize, b: usize) -> Duration {
        self.config.latency.one_way(a, b)
    }
    /// Counters.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }
    /// The first invariant violation seen, if any.
    pub fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }
    // ----- internals -----

    fn schedule(&mut self, after: Duration, epoch: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at: self.now + after,
            seq: self.seq,
            epoch,
            ev,
        }));
    }
    fn now_of(&self, i: usize) -> Now {
        let wall = self.pki.now + (self.now - self.t0);
        let skew = self.nodes.get(i).map_or(0, |n| n.skew);
        let d = Duration::from_secs(skew.unsigned_abs());
        let wall = if skew >= 0 {
            wall + d
        } else {
            wall.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH)
        };
        Now {
            mono: self.now,
            wall,
        }
    }
    fn rtt(&self, a: usize, b: usize) -> Duration {
        self.config.latency.one_way(a, b) + self.config.latency.one_way(b, a)
    }
    fn alive(&self, i: usize, epoch: u64) -> bool {
        self.nodes
            .get(i)
            .is_some_and(|n| n.core.is_some() && n.epoch == epoch)
    }
}

#[cfg(test)]
mod tests;
