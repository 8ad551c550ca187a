//! The simulated transport: what the packet loop would do for N nodes at
//! once, with time as a parameter. It pairs the two ends of each
//! connection, delivers datagrams and control messages after the link's
//! latency (datagrams with jitter and loss, and only up to the datagram
//! size limit), routes the packets NodeCores originate hop by hop through
//! their published FIBs, and plays the liveness clock: an end whose peer
//! crashed or is cut off hears nothing, so it is reported `Silent` after
//! the suspect time and `Closed` at the idle timeout, both counted from
//! the last packet it heard (up to `NetConfig::heard_spread` before the
//! silence began), or `Heard` if the cut heals first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ipnet::IpNet;
use re6st_dataplane::fib::{Fib, Route};

use crate::node::core::boundary::{ConnId, NextHopId, TunnelId};

/// One end of a connection: a node and its tunnel id.
pub(crate) type End = (usize, TunnelId);

/// A connection between two ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conn {
    /// The peer end.
    pub(crate) peer: End,
    /// Whether this end has a next hop (accepted, or kept by `Up`).
    pub(crate) hop: Option<NextHopId>,
    /// When this end last started hearing nothing (suspicion pending or
    /// reported), with the generation of that silence.
    pub(crate) silent: Option<u64>,
}

/// A dial in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dial {
    pub(crate) to: usize,
    /// The overlay address dialled (the certificate TLS expects).
    pub(crate) peer: Ipv6Addr,
    /// When it started: it fails at this plus the handshake timeout.
    pub(crate) started: Instant,
    /// Initial packets sent so far.
    pub(crate) sent: u32,
}

/// The first retransmission of an unanswered Initial: QUIC's probe timeout
/// before any RTT sample (three times quinn's initial RTT of 333 ms); it
/// doubles at each retransmission.
pub(crate) const FIRST_PTO: Duration = Duration::from_secs(1);

/// An incoming connection the target has not answered yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingIncoming {
    pub(crate) from: End,
}

/// The transport state of the whole network.
#[derive(Debug, Default)]
pub(crate) struct Transport {
    /// Every open end, by node and tunnel.
    pub(crate) conns: BTreeMap<End, Conn>,
    /// Each node's next hops (what its FIB routes through).
    pub(crate) hops: Vec<BTreeMap<NextHopId, TunnelId>>,
    /// Each node's FIB snapshot.
    pub(crate) fibs: Vec<Fib>,
    /// The routes of each node's FIB, sorted by prefix (to count changes).
    pub(crate) published: Vec<Vec<(IpNet, Route)>>,
    /// Dials in flight, by dialling end.
    pub(crate) dials: BTreeMap<End, Dial>,
    /// Incoming connections waiting for an answer, by target node.
    pub(crate) pending: BTreeMap<(usize, ConnId), PendingIncoming>,
    pub(crate) next_conn: u64,
    /// Node pairs that cannot reach each other (smaller index first).
    pub(crate) cut: BTreeSet<(usize, usize)>,
    /// Underlay addresses to nodes.
    pub(crate) by_addr: BTreeMap<SocketAddr, usize>,
    /// Overlay addresses to nodes.
    pub(crate) by_overlay: BTreeMap<Ipv6Addr, usize>,
    /// Silences so far (so a heal cancels the reports of an older one).
    pub(crate) silence_gen: u64,
}

/// What became of a datagram or packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hop {
    /// Delivered to this node.
    Local(usize),
    /// Forwarded over this end to its peer.
    Via(End),
    /// Dropped (no route, unreachable).
    Drop,
}

impl Transport {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            hops: vec![BTreeMap::new(); n],
            fibs: (0..n).map(|_| Fib::empty()).collect(),
            published: vec![Vec::new(); n],
            ..Self::default()
        }
    }

    /// Whether `a` and `b` can reach each other.
    pub(crate) fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }

    /// Forgets every end of `node` (it crashed or stopped); returns the
    /// peer ends that are left hanging, and the dials of other nodes that
    /// were waiting for it.
    pub(crate) fn drop_node(&mut self, node: usize) -> (Vec<End>, Vec<End>) {
        let mine: Vec<End> = self
            .conns
            .keys()
            .filter(|(n, _)| *n == node)
            .copied()
            .collect();
        let mut peers = Vec::new();
        for end in mine {
            if let Some(c) = self.conns.remove(&end) {
                peers.push(c.peer);
            }
        }
        self.hops[node].clear();
        self.fibs[node] = Fib::empty();
        self.published[node] = Vec::new();
        self.dials.retain(|(n, _), _| *n != node);
        let waiting: Vec<End> = self
            .dials
            .iter()
            .filter(|(_, d)| d.to == node)
            .map(|(e, _)| *e)
            .collect();
        self.pending
            .retain(|(n, _), p| *n != node && p.from.0 != node);
        (peers, waiting)
    }

    /// The peer of `end`, if that end is still its peer: an end whose
    /// peer crashed hangs until its idle timeout and must reach nothing,
    /// not even the end of the same tunnel id in the peer's next life
    /// (ids start again there).
    pub(crate) fn peer_of(&self, end: End) -> Option<End> {
        let peer = self.conns.get(&end)?.peer;
        (self.conns.get(&peer)?.peer == end).then_some(peer)
    }

    /// Closes `end` (its node asked); returns the peer end, if any is
    /// left to hear of it.
    pub(crate) fn close(&mut self, end: End) -> Option<End> {
        self.dials.remove(&end);
        let peer = self.peer_of(end);
        let c = self.conns.remove(&end)?;
        if let Some(h) = c.hop {
            self.hops[end.0].remove(&h);
        }
        peer
    }

    /// Forgets an end the transport reported closed.
    pub(crate) fn closed(&mut self, end: End) {
        if let Some(c) = self.conns.remove(&end)
            && let Some(h) = c.hop
        {
            self.hops[end.0].remove(&h);
        }
    }

    /// Where a packet for `dst` goes from `node`.
    pub(crate) fn route(&self, node: usize, dst: Ipv6Addr) -> Hop {
        self.hop(node, self.fibs[node].lookup(dst))
    }

    /// Where node `node`'s FIB sends an IPv4 packet to `dst`.
    pub(crate) fn route_v4(&self, node: usize, dst: std::net::Ipv4Addr) -> Hop {
        self.hop(node, self.fibs[node].lookup_v4(dst))
    }

    fn hop(&self, node: usize, route: Option<Route>) -> Hop {
        match route {
            Some(Route::Local) => Hop::Local(node),
            Some(Route::Via(h)) => match self.hops[node].get(&h) {
                Some(t) => match self.peer_of((node, *t)) {
                    Some(peer) => Hop::Via(peer),
                    None => Hop::Drop,
                },
                None => Hop::Drop,
            },
            _ => Hop::Drop,
        }
    }
}

/// Routes that differ between two route lists sorted by prefix: added,
/// removed, or with another next hop.
pub(crate) fn route_changes(old: &[(IpNet, Route)], new: &[(IpNet, Route)]) -> u64 {
    let (mut a, mut b, mut n) = (0, 0, 0u64);
    while a < old.len() && b < new.len() {
        match old[a].0.cmp(&new[b].0) {
            std::cmp::Ordering::Less => (a, n) = (a + 1, n + 1),
            std::cmp::Ordering::Greater => (b, n) = (b + 1, n + 1),
            std::cmp::Ordering::Equal => {
                n += u64::from(old[a].1 != new[b].1);
                (a, b) = (a + 1, b + 1);
            }
        }
    }
    n + (old.len() - a) as u64 + (new.len() - b) as u64
}

/// A datagram's one-way delay: the base, plus jitter, or `None` if lost.
pub(crate) fn delay(
    base: Duration,
    jitter: Duration,
    loss: f64,
    rng: &mut impl rand::Rng,
) -> Option<Duration> {
    use rand::RngExt;
    if loss > 0.0 && rng.random_bool(loss.clamp(0.0, 1.0)) {
        return None;
    }
    Some(base + uniform_below(jitter, rng))
}

/// A duration uniform in `[0, max)` (zero, drawing nothing, if `max` is).
pub(crate) fn uniform_below(max: Duration, rng: &mut impl rand::Rng) -> Duration {
    use rand::RngExt;
    if max.is_zero() {
        return Duration::ZERO;
    }
    max.mul_f64(rng.random_range(0.0..1.0))
}

/// The destination address of an IPv6 packet.
pub(crate) fn ipv6_dst(packet: &Bytes) -> Option<Ipv6Addr> {
    let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
    Some(Ipv6Addr::from(b))
}

/// When the liveness clock of an end reports a silence that began at
/// `since`: the suspect time plus two round trips.
pub(crate) fn suspect_at(since: Instant, suspect_after: Duration, rtt: Duration) -> Instant {
    since + suspect_after + 2 * rtt
}
