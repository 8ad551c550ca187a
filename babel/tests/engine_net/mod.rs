//! `Net`: many sans-IO engines joined by simulated tunnels (quinn's test
//! `Pair`, for N nodes). Time is simulated and jumps to the next delivery or
//! engine deadline; links have a delay, jitter, loss and an up/down state;
//! everything random comes from one seeded `StdRng`, so a run is
//! reproducible. Packets go through the real codec.
//!
//! At every step the harness checks the two safety properties of Babel on
//! the nodes that changed: every selected route passes the feasibility
//! condition against its router's source table, and following next hops
//! from any router never revisits a router (no forwarding loop).

#![allow(dead_code)]

mod pcap;
mod topology;

#[allow(unused_imports)]
pub use pcap::pcap;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use re6st_babel::engine::{Config, Engine, Event, IfaceId, InterfaceKind};
use re6st_babel::wire::RouterId;

/// Budget of a tunnel datagram (quinn's default maximum at MTU 1200).
pub const BUDGET: usize = 1162;

/// `a` is newer than `b` modulo 2^16.
pub fn seqno_ahead(a: u16, b: u16) -> bool {
    re6st_babel::metric::seqno_gt(a, b)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A simulated tunnel between two nodes; the iface id on both ends is the
/// link index.
#[derive(Clone, Debug)]
pub struct Link {
    pub a: usize,
    pub b: usize,
    pub delay: Duration,
    pub jitter: Duration,
    pub loss: f64,
    pub up: bool,
}

pub struct Node {
    pub engine: Engine,
    pub up: bool,
    pub prefix: IpNet,
    fib: HashMap<IpNet, (usize, usize)>,
    fib_gen: u64,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Delivery {
    at: Instant,
    seq: u64,
    to: usize,
    link: usize,
    from: usize,
    bytes: Vec<u8>,
}

/// Where following next hops leads: `Ok(Some(owner))`, `Ok(None)` for a
/// blackhole, `Err(path)` for a loop.
pub type Walk = Result<Option<usize>, Vec<usize>>;

/// One packet sent, for captures.
#[derive(Clone, Debug)]
pub struct Sent {
    pub at: Duration,
    pub node: usize,
    pub link: usize,
    /// `None`: to every neighbour (multicast).
    pub dst: Option<IpAddr>,
    pub bytes: Vec<u8>,
}

/// Interface ids of LAN segments start here (below are tunnel links).
pub const LAN_BASE: u32 = 1000;

pub struct Net {
    pub start: Instant,
    pub now: Instant,
    pub nodes: Vec<Node>,
    pub links: Vec<Link>,
    /// LAN segments: their members (iface id `LAN_BASE + index`).
    pub lans: Vec<Vec<usize>>,
    queue: BinaryHeap<Reverse<Delivery>>,
    rng: StdRng,
    seq: u64,
    pub capture: Option<Vec<Sent>>,
    pub steps: u64,
    pub packets: u64,
    pub checks: u64,
}

/// The address node `i` uses on its tunnels.
pub fn node_addr(i: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, i as u16 + 1))
}

pub fn node_prefix(i: usize) -> IpNet {
    format!("fd00:{:x}::/64", i + 1).parse().unwrap()
}

fn router_id(i: usize) -> RouterId {
    let mut id = [0u8; 8];
    id[0] = 0x02;
    id[4..].copy_from_slice(&(i as u32 + 1).to_be_bytes());
    RouterId(id)
}

impl Net {
    /// `n` routers, each originating `node_prefix(i)`, and the given links
    /// (delays drawn in `delay`).
    pub fn new(n: usize, edges: &[(usize, usize)], seed: u64, config: Config) -> Net {
        let start = Instant::now();
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes = (0..n)
            .map(|i| {
                let seqno = rng.random();
                let mut engine = Engine::new(config.clone(), router_id(i), seqno, start).unwrap();
                engine.add_xroute(node_prefix(i), 0, start).unwrap();
                Node {
                    engine,
                    up: true,
                    prefix: node_prefix(i),
                    fib: HashMap::new(),
                    fib_gen: 0,
                }
            })
            .collect();
        let mut net = Net {
            start,
            now: start,
            nodes,
            links: Vec::new(),
            lans: Vec::new(),
            queue: BinaryHeap::new(),
            rng,
            seq: 0,
            capture: None,
            steps: 0,
            packets: 0,
            checks: 0,
        };
        for &(a, b) in edges {
            let delay = ms(net.rng.random_range(5..40));
            net.add_link(a, b, delay);
        }
        net
    }

    pub fn add_link(&mut self, a: usize, b: usize, delay: Duration) -> usize {
        let id = self.links.len();
        self.links.push(Link {
            a,
            b,
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
            up: true,
        });
        self.attach(id);
        id
    }

    /// A LAN segment (multicast link, 1 ms delay) joining `members`.
    pub fn add_lan(&mut self, members: &[usize]) -> IfaceId {
        let iface = IfaceId(LAN_BASE + self.lans.len() as u32);
        self.lans.push(members.to_vec());
        for &n in members {
            let kind = InterfaceKind::Lan {
                address: node_addr(n),
            };
            self.nodes[n]
                .engine
                .add_interface(iface, kind, BUDGET, self.now)
                .unwrap();
        }
        self.drain_all();
        iface
    }

    fn attach(&mut self, l: usize) {
        let (a, b) = (self.links[l].a, self.links[l].b);
        let iface = IfaceId(l as u32);
        for n in [a, b] {
            if self.nodes[n].up {
                self.nodes[n]
                    .engine
                    .add_interface(iface, InterfaceKind::Tunnel, BUDGET, self.now)
                    .unwrap();
            }
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The link down. `notify`: both ends learn it at once (the QUIC
    /// connection closed); otherwise packets are silently lost and only the
    /// Hello timers notice.
    pub fn link_down(&mut self, l: usize, notify: bool) {
        self.links[l].up = false;
        if notify {
            let (a, b) = (self.links[l].a, self.links[l].b);
            for n in [a, b] {
                if self.nodes[n].up {
                    let _ = self.nodes[n]
                        .engine
                        .interface_down(IfaceId(l as u32), self.now);
                    self.check(n);
                }
            }
        }
        self.drain_all();
    }

    pub fn link_up(&mut self, l: usize) {
        self.links[l].up = true;
        self.attach(l);
        self.drain_all();
    }

    /// Sets a link's delay, jitter (uniform, added per packet) and loss.
    pub fn shape(&mut self, l: usize, delay: Duration, jitter: Duration, loss: f64) {
        let link = &mut self.links[l];
        link.delay = delay;
        link.jitter = jitter;
        link.loss = loss;
    }

    /// A router restarts with the same router-id and `seqno` (what it
    /// persisted, or less if it lost it); its tunnels reopen. `silent`: the
    /// neighbours never noticed it was gone (their tunnel state is kept).
    pub fn restart(&mut self, n: usize, seqno: u16, config: Config, silent: bool) {
        let mut engine = Engine::new(config, router_id(n), seqno, self.now).unwrap();
        engine.add_xroute(node_prefix(n), 0, self.now).unwrap();
        self.nodes[n].engine = engine;
        self.nodes[n].up = true;
        self.nodes[n].fib.clear();
        self.nodes[n].fib_gen = u64::MAX;
        // Its LAN segments: the neighbours there only notice from Hellos.
        for (k, members) in self.lans.iter().enumerate() {
            if members.contains(&n) {
                let kind = InterfaceKind::Lan {
                    address: node_addr(n),
                };
                let iface = IfaceId(LAN_BASE + k as u32);
                self.nodes[n]
                    .engine
                    .add_interface(iface, kind, BUDGET, self.now)
                    .unwrap();
            }
        }
        for l in 0..self.links.len() {
            let link = &self.links[l];
            let other = if link.a == n {
                link.b
            } else if link.b == n {
                link.a
            } else {
                continue;
            };
            if !self.nodes[other].up {
                continue;
            }
            if silent {
                self.links[l].up = true;
                self.nodes[n]
                    .engine
                    .add_interface(IfaceId(l as u32), InterfaceKind::Tunnel, BUDGET, self.now)
                    .unwrap();
            } else if !self.links[l].up {
                self.link_up(l);
            }
        }
        self.drain_all();
    }

    /// A router crashes without its neighbours noticing (its tunnels stay
    /// "open" on their side and silently drop everything).
    pub fn crash(&mut self, n: usize) {
        self.nodes[n].up = false;
        self.nodes[n].fib.clear();
        for l in self.links.iter_mut() {
            if l.a == n || l.b == n {
                l.up = false;
            }
        }
    }

    /// The neighbour router `i` forwards to for router `j`'s prefix.
    pub fn next_hop(&self, i: usize, j: usize) -> Option<usize> {
        self.next_hop_for(i, self.nodes[j].prefix)
    }

    /// The neighbour router `i` forwards to for `p`.
    pub fn next_hop_for(&self, i: usize, p: IpNet) -> Option<usize> {
        let e = self.nodes[i]
            .engine
            .fib()
            .into_iter()
            .find(|e| e.prefix == p)?;
        Some(self.peer(i, e.iface, e.next_hop))
    }

    /// A router dies: its tunnels close (its neighbours are told at once).
    pub fn node_down(&mut self, n: usize) {
        for l in 0..self.links.len() {
            if (self.links[l].a == n || self.links[l].b == n) && self.links[l].up {
                self.link_down(l, true);
            }
        }
        self.nodes[n].up = false;
        self.nodes[n].fib.clear();
    }

    /// The router behind a FIB entry: the other end of a tunnel, or the
    /// LAN member with the next-hop address.
    fn peer(&self, node: usize, iface: IfaceId, next_hop: IpAddr) -> usize {
        if iface.0 >= LAN_BASE {
            return (0..self.nodes.len())
                .find(|j| node_addr(*j) == next_hop)
                .unwrap();
        }
        let l = &self.links[iface.0 as usize];
        if l.a == node { l.b } else { l.a }
    }

    fn iface_up(&self, iface: usize) -> bool {
        iface >= LAN_BASE as usize || self.links[iface].up
    }

    /// Drains every node's transmits into the delivery queue.
    fn drain_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.drain(i);
        }
    }

    fn drain(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        while let Some(t) = self.nodes[i].engine.poll_transmit(self.now) {
            let l = t.iface.0 as usize;
            self.packets += 1;
            if t.iface.0 >= LAN_BASE {
                let members = &self.lans[(t.iface.0 - LAN_BASE) as usize];
                let to: Vec<usize> = members
                    .iter()
                    .copied()
                    .filter(|&m| m != i && t.dst.is_none_or(|d| d == node_addr(m)))
                    .collect();
                for m in to {
                    self.seq += 1;
                    self.queue.push(Reverse(Delivery {
                        at: self.now + ms(1),
                        seq: self.seq,
                        to: m,
                        link: l,
                        from: i,
                        bytes: t.bytes.clone(),
                    }));
                }
                continue;
            }
            if let Some(c) = self.capture.as_mut() {
                c.push(Sent {
                    at: self.now - self.start,
                    node: i,
                    link: l,
                    dst: t.dst,
                    bytes: t.bytes.clone(),
                });
            }
            let link = &self.links[l];
            if !link.up || (link.loss > 0.0 && self.rng.random::<f64>() < link.loss) {
                continue;
            }
            let jitter = if link.jitter.is_zero() {
                Duration::ZERO
            } else {
                link.jitter.mul_f64(self.rng.random::<f64>())
            };
            let to = if link.a == i { link.b } else { link.a };
            self.seq += 1;
            self.queue.push(Reverse(Delivery {
                at: self.now + link.delay + jitter,
                seq: self.seq,
                to,
                link: l,
                from: i,
                bytes: t.bytes,
            }));
        }
    }

    /// Advances to the next event. Returns false when nothing is left.
    pub fn step(&mut self) -> bool {
        let Some(t) = self.next_event() else {
            return false;
        };
        self.now = self.now.max(t);
        self.steps += 1;
        let mut touched = vec![false; self.nodes.len()];
        while self.queue.peek().is_some_and(|d| d.0.at <= self.now) {
            let Reverse(d) = self.queue.pop().unwrap();
            if !self.iface_up(d.link) || !self.nodes[d.to].up {
                continue;
            }
            let iface = IfaceId(d.link as u32);
            self.nodes[d.to]
                .engine
                .handle_packet(iface, node_addr(d.from), &d.bytes, self.now);
            touched[d.to] = true;
        }
        for (node, t) in self.nodes.iter_mut().zip(touched.iter_mut()) {
            if node.up && node.engine.poll_timeout().is_some_and(|d| d <= self.now) {
                node.engine.handle_timeout(self.now);
                *t = true;
            }
        }
        for (i, &t) in touched.iter().enumerate() {
            if t {
                self.drain(i);
                self.check(i);
            }
        }
        true
    }

    /// Runs until `done` holds (checked after every step) or `max` of
    /// simulated time passes; returns the time it took.
    pub fn run_until(
        &mut self,
        max: Duration,
        mut done: impl FnMut(&Net) -> bool,
    ) -> Option<Duration> {
        let t0 = self.now;
        loop {
            if done(self) {
                return Some(self.now - t0);
            }
            if self.now - t0 > max || !self.step() {
                return None;
            }
        }
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.next_event().is_some_and(|t| t <= end) {
            self.step();
        }
        self.now = end;
    }

    fn next_event(&self) -> Option<Instant> {
        let next_delivery = self.queue.peek().map(|d| d.0.at);
        let next_timer = self
            .nodes
            .iter()
            .filter(|n| n.up)
            .filter_map(|n| n.engine.poll_timeout())
            .min();
        [next_delivery, next_timer].into_iter().flatten().min()
    }

    /// Safety checks on node `i` after it handled input.
    fn check(&mut self, i: usize) {
        self.checks += 1;
        let node = &mut self.nodes[i];
        while let Some(ev) = node.engine.poll_event() {
            let _ = matches!(ev, Event::FibChanged(_));
        }
        for r in node.engine.routes(self.now) {
            assert!(
                !r.selected || r.feasible,
                "node {i} selected an unfeasible route at {:?}: {r:?}",
                self.now - self.start
            );
        }
        let generation = node.engine.fib_generation();
        if generation == node.fib_gen {
            return;
        }
        node.fib_gen = generation;
        let fib: HashMap<IpNet, (usize, usize)> = node
            .engine
            .fib()
            .into_iter()
            .map(|e| {
                let peer = self.peer(i, e.iface, e.next_hop);
                (e.prefix, (peer, e.iface.0 as usize))
            })
            .collect();
        self.nodes[i].fib = fib;
        // A new loop must go through a router whose FIB changed.
        let prefixes: Vec<IpNet> = self.nodes[i].fib.keys().copied().collect();
        for p in prefixes {
            if let Err(path) = self.walk(i, p) {
                panic!(
                    "forwarding loop for {p} at {:?}: {path:?}",
                    self.now - self.start
                );
            }
        }
    }

    /// Follows next hops from `from` towards `p`. Ok(Some(owner)) when it
    /// arrives, Ok(None) on a blackhole (no route, or a route over a dead
    /// link), Err(path) on a loop.
    pub fn walk(&self, from: usize, p: IpNet) -> Walk {
        let mut path = vec![from];
        let mut cur = from;
        loop {
            if self.nodes[cur].prefix == p {
                return Ok(Some(cur));
            }
            let Some(&(next, link)) = self.nodes[cur].fib.get(&p) else {
                return Ok(None);
            };
            if !self.iface_up(link) {
                return Ok(None);
            }
            if path.contains(&next) {
                path.push(next);
                return Err(path);
            }
            path.push(next);
            cur = next;
        }
    }

    /// Nodes reachable from `from` over up links between up nodes.
    pub fn component(&self, from: usize) -> Vec<usize> {
        let mut seen = vec![false; self.nodes.len()];
        let mut stack = vec![from];
        seen[from] = true;
        while let Some(n) = stack.pop() {
            let tunnels = self.links.iter().filter(|l| l.up).filter_map(|l| {
                if l.a == n {
                    Some(l.b)
                } else if l.b == n {
                    Some(l.a)
                } else {
                    None
                }
            });
            let lans = self
                .lans
                .iter()
                .filter(|m| m.contains(&n))
                .flat_map(|m| m.iter().copied());
            let others: Vec<usize> = tunnels.chain(lans).collect();
            for other in others {
                if self.nodes[other].up && !seen[other] {
                    seen[other] = true;
                    stack.push(other);
                }
            }
        }
        (0..self.nodes.len()).filter(|i| seen[*i]).collect()
    }

    /// Every up router forwards to the prefix of every router of its
    /// component along next hops that arrive, and has no route to routers
    /// outside it.
    pub fn converged(&self) -> bool {
        for i in (0..self.nodes.len()).filter(|i| self.nodes[*i].up) {
            let comp = self.component(i);
            for j in 0..self.nodes.len() {
                let p = self.nodes[j].prefix;
                let reach = self.walk(i, p);
                let expect = comp.contains(&j);
                match reach {
                    Ok(Some(owner)) if expect && owner == j => {}
                    // Unreachable: the retraction must have arrived too.
                    Ok(None) if !expect && !self.nodes[i].fib.contains_key(&p) => {}
                    _ => return false,
                }
            }
        }
        true
    }

    /// (router, destination) pairs that do not work yet, for diagnostics.
    pub fn broken(&self) -> Vec<(usize, usize, Walk)> {
        let mut out = Vec::new();
        for i in (0..self.nodes.len()).filter(|i| self.nodes[*i].up) {
            let comp = self.component(i);
            for j in 0..self.nodes.len() {
                let reach = self.walk(i, self.nodes[j].prefix);
                let ok = match reach {
                    Ok(Some(owner)) => comp.contains(&j) && owner == j,
                    Ok(None) => {
                        !comp.contains(&j) && !self.nodes[i].fib.contains_key(&self.nodes[j].prefix)
                    }
                    Err(_) => false,
                };
                if !ok {
                    out.push((i, j, reach));
                }
            }
        }
        out
    }

    /// FIB sizes by node, for diagnostics.
    pub fn fib_sizes(&self) -> BTreeMap<usize, usize> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (i, n.fib.len()))
            .collect()
    }

    /// The path of next hops from `from` to the prefix of `to`.
    pub fn path(&self, from: usize, to: usize) -> Vec<usize> {
        let mut out = vec![from];
        let mut cur = from;
        while cur != to && out.len() <= self.nodes.len() {
            match self.nodes[cur].fib.get(&self.nodes[to].prefix) {
                Some(&(n, _)) => {
                    out.push(n);
                    cur = n;
                }
                None => break,
            }
        }
        out
    }
}
