//! The sans-IO Babel routing engine (RFC 8966 with RFC 9616 RTT costs).
//!
//! [`Engine`] owns the tables of one router. It never reads a clock and
//! never touches a socket: the caller feeds it packets and time and drains
//! packets, deadlines and events, in the quinn-proto shape.
//!
//! # Call order
//!
//! * Setup: [`Engine::new`], [`Engine::add_xroute`] for our prefixes,
//!   [`Engine::add_interface`] when a tunnel opens or a LAN comes up.
//! * Inputs: [`Engine::handle_packet`] for every Babel packet received,
//!   [`Engine::handle_timeout`] when [`Engine::poll_timeout`] is reached,
//!   [`Engine::interface_down`] when a tunnel closes (routes through it are
//!   withdrawn at once), [`Engine::set_interface_budget`] when a tunnel's
//!   datagram limit moves, [`Engine::retract_all`] before a clean shutdown.
//! * After every input, drain the outputs: [`Engine::poll_transmit`] until
//!   `None` (send each packet on its interface: to the peer on a tunnel, to
//!   ff02::1:6 port 6696 or the given neighbour on a LAN), then
//!   [`Engine::poll_event`] until `None` (publish [`Engine::fib`] on
//!   [`Event::FibChanged`], persist the seqno on [`Event::SeqnoChanged`]),
//!   then sleep until [`Engine::poll_timeout`].
//! * Queries at any time: [`Engine::fib`], [`Engine::routes`],
//!   [`Engine::neighbours`], [`Engine::destinations_per_interface`],
//!   [`Engine::counters`].
//!
//! Bad input from the network is counted in [`Counters`] and dropped; only
//! caller mistakes return an [`EngineError`].
//!
//! # Example: two routers over one tunnel
//!
//! ```
//! use std::time::{Duration, Instant};
//! use re6st_babel::engine::{Config, Engine, IfaceId, InterfaceKind};
//! use re6st_babel::wire::RouterId;
//!
//! let t0 = Instant::now();
//! let mut a = Engine::new(Config::default(), RouterId([2, 0, 0, 0, 0, 0, 0, 1]), 1, t0).unwrap();
//! let mut b = Engine::new(Config::default(), RouterId([2, 0, 0, 0, 0, 0, 0, 2]), 1, t0).unwrap();
//! a.add_xroute("fd00:a::/64".parse().unwrap(), 0, t0).unwrap();
//! b.add_xroute("fd00:b::/64".parse().unwrap(), 0, t0).unwrap();
//! let tun = IfaceId(7); // the same id as the dataplane's next hop
//! a.add_interface(tun, InterfaceKind::Tunnel, 1162, t0).unwrap();
//! b.add_interface(tun, InterfaceKind::Tunnel, 1162, t0).unwrap();
//! let (addr_a, addr_b) = ("fe80::a".parse().unwrap(), "fe80::b".parse().unwrap());
//!
//! // A tiny driver: a 1 ms clock tick, packets delivered at once.
//! let mut now = t0;
//! for _ in 0..1000 {
//!     now += Duration::from_millis(1);
//!     a.handle_timeout(now);
//!     b.handle_timeout(now);
//!     while let Some(t) = a.poll_transmit(now) {
//!         b.handle_packet(t.iface, addr_a, &t.bytes, now);
//!     }
//!     while let Some(t) = b.poll_transmit(now) {
//!         a.handle_packet(t.iface, addr_b, &t.bytes, now);
//!     }
//! }
//! assert_eq!(a.fib()[0].prefix.to_string(), "fd00:b::/64");
//! assert_eq!(a.fib()[0].iface, tun);
//! assert_eq!(b.fib()[0].prefix.to_string(), "fd00:a::/64");
//! ```
//!
//! One file per table (babeld's layout, without its global state):
//! `neighbour` (Hello histories, IHU, RTT, link cost), `source`
//! (feasibility distances), `route` (routes, selection, hysteresis),
//! `xroute` (our prefixes), `seqno` (our seqno and how a router that lost
//! it catches up), `resend` (pending seqno requests, update resends),
//! `output` (per-destination buffers). `input` handles received
//! messages, `announce` turns table changes into messages, `flush` encodes
//! buffers, `timer` runs the clocks, `query` answers the caller.

mod announce;
mod config;
mod flush;
mod input;
mod interface;
mod neighbour;
mod origin;
mod output;
mod proof;
mod query;
mod resend;
mod route;
mod seqno;
mod source;
mod timer;
mod xroute;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use ipnet::IpNet;
use rand::SeedableRng;
use rand::rngs::StdRng;
use thiserror::Error;

pub use config::{Config, LinkParams};
pub use interface::{IfaceId, InterfaceKind, MIN_BUDGET};
pub use origin::{Claim, NoOriginAuth, OriginAuth, OriginCounters, Rejection, Sender, Verdict};
pub use query::{Counters, FibEntry, NeighbourInfo, RouteInfo};

use interface::Interface;
use neighbour::NeighbourTable;
use output::Output;
use proof::ProofTable;
use resend::ResendTable;
use route::RouteTable;
use source::SourceTable;
use xroute::XrouteTable;

use crate::wire::{INFINITY, RouterId};

/// A caller mistake (the rustls `ApiMisuse` split: peer faults are counted
/// in [`Counters`], never returned).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// All-zeros and all-ones router-ids are invalid (RFC 8966 §4.6.7).
    #[error("router-id {0:02x?} is reserved (all zeros or all ones)")]
    InvalidRouterId([u8; 8]),
    /// `add_interface` with an id already in use.
    #[error("interface {0} already exists")]
    DuplicateInterface(IfaceId),
    /// An interface id that was never added or is already down.
    #[error("no interface {0}")]
    UnknownInterface(IfaceId),
    /// A packet budget too small for the largest message.
    #[error("packet budget {budget} is below the minimum {min}")]
    BudgetTooSmall {
        /// The budget given.
        budget: usize,
        /// [`MIN_BUDGET`].
        min: usize,
    },
    /// A configuration value the engine cannot run with.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// An exported route with an infinite metric.
    #[error("metric {0} is not finite")]
    InfiniteMetric(u16),
}

/// A packet to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The interface to send it on.
    pub iface: IfaceId,
    /// `None`: to every neighbour on the link (multicast ff02::1:6 on a LAN,
    /// the peer on a tunnel). `Some`: unicast to that neighbour.
    pub dst: Option<IpAddr>,
    /// The Babel packet (header and body), at most the interface budget.
    pub bytes: Vec<u8>,
}

/// Something the caller must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The set of selected routes changed: publish [`Engine::fib`] (its
    /// generation is given).
    FibChanged(u64),
    /// Our seqno changed (in answer to a seqno request, or catching up
    /// with one we had lost): persist it with the router-id, so that a
    /// restart does not go back in time.
    SeqnoChanged(u16),
}

/// One Babel router. See the crate docs for the call order. `A` checks
/// route origins ([`OriginAuth`]); the default, [`NoOriginAuth`], is plain
/// Babel.
#[derive(Debug)]
pub struct Engine<A: OriginAuth = NoOriginAuth> {
    config: Config,
    router_id: RouterId,
    seqno: u16,
    /// When our seqno last moved, and the newest seqno a request asked for
    /// that we have not given yet (at most one bump per
    /// `Config::seqno_bump_interval`).
    last_bump: Option<Instant>,
    bump_wanted: Option<u16>,
    auth: A,
    proofs: ProofTable,
    /// Origin of RFC 9616 timestamps, with a random offset so that the
    /// 2^32 wrap is exercised in every long run rather than never.
    epoch: Instant,
    ts_offset: u32,
    rng: StdRng,
    interfaces: BTreeMap<IfaceId, Interface>,
    neighbours: NeighbourTable,
    sources: SourceTable,
    routes: RouteTable,
    xroutes: XrouteTable,
    resend: ResendTable,
    output: Output,
    packed: VecDeque<Transmit>,
    /// Prefixes whose better route is held back by hysteresis.
    reselect: BTreeSet<IpNet>,
    reselect_at: Option<Instant>,
    events: VecDeque<Event>,
    fib_generation: u64,
    fib_dirty: bool,
    counters: Counters,
    timeout: Option<Instant>,
}

impl Engine {
    /// A router with no interface yet, trusting every origin (plain
    /// Babel). `seqno` is the one persisted with `router_id` (random on
    /// first start); the engine reports every change with
    /// [`Event::SeqnoChanged`].
    pub fn new(
        config: Config,
        router_id: RouterId,
        seqno: u16,
        now: Instant,
    ) -> Result<Self, EngineError> {
        Engine::with_origin_auth(NoOriginAuth, config, router_id, seqno, now)
    }
}

impl<A: OriginAuth> Engine<A> {
    /// [`Engine::new`] with route origins checked by `auth`.
    pub fn with_origin_auth(
        auth: A,
        config: Config,
        router_id: RouterId,
        seqno: u16,
        now: Instant,
    ) -> Result<Self, EngineError> {
        if router_id.0 == [0; 8] || router_id.0 == [0xFF; 8] {
            return Err(EngineError::InvalidRouterId(router_id.0));
        }
        config.validate().map_err(EngineError::InvalidConfig)?;
        let seed = u64::from_be_bytes(router_id.0) ^ u64::from(seqno).rotate_left(48);
        let mut rng = StdRng::seed_from_u64(seed);
        let ts_offset = rand::RngExt::random(&mut rng);
        let sources = SourceTable::new(config.source_gc);
        let mut engine = Engine {
            config,
            router_id,
            seqno,
            last_bump: None,
            bump_wanted: None,
            auth,
            proofs: ProofTable::default(),
            epoch: now,
            ts_offset,
            rng,
            interfaces: BTreeMap::new(),
            neighbours: NeighbourTable::default(),
            sources,
            routes: RouteTable::default(),
            xroutes: XrouteTable::default(),
            resend: ResendTable::default(),
            output: Output::default(),
            packed: VecDeque::new(),
            reselect: BTreeSet::new(),
            reselect_at: None,
            events: VecDeque::new(),
            fib_generation: 0,
            fib_dirty: false,
            counters: Counters::default(),
            timeout: None,
        };
        engine.finish();
        Ok(engine)
    }

    /// Our router-id.
    pub fn router_id(&self) -> RouterId {
        self.router_id
    }

    /// Our current seqno.
    pub fn seqno(&self) -> u16 {
        self.seqno
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Brings up an interface. A Hello, and a wildcard Route Request go out
    /// at once (RFC 8966 §3.8.2.1: a new interface asks for a full dump),
    /// so a tunnel is usable one round trip after it opens.
    pub fn add_interface(
        &mut self,
        id: IfaceId,
        kind: InterfaceKind,
        budget: usize,
        now: Instant,
    ) -> Result<(), EngineError> {
        if self.interfaces.contains_key(&id) {
            return Err(EngineError::DuplicateInterface(id));
        }
        check_budget(budget)?;
        let seqno = rand::RngExt::random(&mut self.rng);
        let mut iface = Interface::new(kind, budget, seqno, now);
        iface.update_due = now + self.jitter(self.config.update_interval);
        self.interfaces.insert(id, iface);
        self.send_hello(id, now);
        self.send_route_request(id, None, None, now);
        // Our prefixes right away: the neighbour's wildcard request may have
        // been sent before this side of the tunnel existed.
        self.schedule_full_dump(id, now + self.config.triggered_delay);
        self.finish();
        Ok(())
    }

    /// Changes the packet budget of an interface (a tunnel's datagram size
    /// limit moves with path MTU discovery).
    pub fn set_interface_budget(&mut self, id: IfaceId, budget: usize) -> Result<(), EngineError> {
        check_budget(budget)?;
        let iface = self
            .interfaces
            .get_mut(&id)
            .ok_or(EngineError::UnknownInterface(id))?;
        iface.budget = budget;
        Ok(())
    }

    /// Adds `extra` to the cost of every link on interface `id` (0 removes
    /// it), and reselects at once. Routes through it get worse but stay
    /// usable, so traffic moves to alternatives only as they become
    /// feasible (the worsened routes trigger route and seqno requests):
    /// this drains an interface before it is taken down, without the
    /// blackhole of a retraction. Local only, like babeld's per-neighbour
    /// cost multiplier; the peer is told by other means.
    pub fn set_interface_cost(
        &mut self,
        id: IfaceId,
        extra: u16,
        now: Instant,
    ) -> Result<(), EngineError> {
        let iface = self
            .interfaces
            .get_mut(&id)
            .ok_or(EngineError::UnknownInterface(id))?;
        if iface.extra_cost != extra {
            iface.extra_cost = extra;
            for n in self.neighbours.ids_on(id) {
                self.neighbour_changed(n, now);
            }
        }
        self.finish();
        Ok(())
    }

    /// Takes a new configuration in which only the intervals
    /// (`hello_interval`, `ihu_interval`, `update_interval`) and the link
    /// parameters (`tunnel`, `lan`: rxcost, RTT metric, split horizon)
    /// differ: the ones a network may change while nodes run. Every
    /// interface, existing or added later, uses them from now on: the
    /// Hellos, IHUs and updates already scheduled go out on time and carry
    /// the new intervals (each TLV says its interval, RFC 8966 §4.6.5-7, so
    /// neighbours follow); every link is costed again and routes reselected
    /// at once, as when an RTT moves. Any other field would need state
    /// built at start (source table, bounds): refused, nothing changes.
    pub fn reconfigure(&mut self, config: Config, now: Instant) -> Result<(), EngineError> {
        config.validate().map_err(EngineError::InvalidConfig)?;
        let live = Config {
            hello_interval: self.config.hello_interval,
            ihu_interval: self.config.ihu_interval,
            update_interval: self.config.update_interval,
            tunnel: self.config.tunnel,
            lan: self.config.lan,
            ..config.clone()
        };
        if live != self.config {
            return Err(EngineError::InvalidConfig(
                "only the intervals and link parameters can change on a running engine",
            ));
        }
        if config == self.config {
            return Ok(());
        }
        self.config = config;
        let ifaces: Vec<IfaceId> = self.interfaces.keys().copied().collect();
        for id in ifaces {
            for n in self.neighbours.ids_on(id) {
                self.neighbour_changed(n, now);
            }
        }
        self.finish();
        Ok(())
    }

    /// The interface is gone (the QUIC connection closed): its neighbours
    /// are flushed, every route through them is withdrawn, alternatives are
    /// selected and announced at once, without waiting for any timer. The
    /// id may be reused by a later [`add_interface`](Self::add_interface).
    pub fn interface_down(&mut self, id: IfaceId, now: Instant) -> Result<(), EngineError> {
        if !self.interfaces.contains_key(&id) {
            return Err(EngineError::UnknownInterface(id));
        }
        for n in self.neighbours.ids_on(id) {
            self.flush_neighbour(n, now);
        }
        self.interfaces.remove(&id);
        self.proofs.drop_interface(id);
        self.output.drop_interface(id);
        self.packed.retain(|t| t.iface != id);
        self.finish();
        Ok(())
    }

    /// Originates `prefix` with `metric` (usually 0), announced at once.
    pub fn add_xroute(
        &mut self,
        prefix: IpNet,
        metric: u16,
        now: Instant,
    ) -> Result<(), EngineError> {
        if metric == INFINITY {
            return Err(EngineError::InfiniteMetric(metric));
        }
        let prefix = prefix.trunc();
        let old = self.xroutes.insert(prefix, metric);
        if old != Some(metric) {
            // Learned routes to our own prefix are never selected.
            self.reselect_prefix(prefix, now);
            self.resend.cancel_update(&prefix);
            self.schedule_update(prefix, true, None, now);
        }
        self.finish();
        Ok(())
    }

    /// Stops originating `prefix`: a retraction goes out urgently and is
    /// resent; a learned route to it may now be selected.
    pub fn remove_xroute(&mut self, prefix: IpNet, now: Instant) {
        let prefix = prefix.trunc();
        if self.xroutes.remove(&prefix).is_some() {
            self.reselect_prefix(prefix, now);
            self.schedule_urgent_with_resend(prefix, now);
        }
        self.finish();
    }

    /// Retracts everything we announce on every interface (call before a
    /// clean shutdown, then drain [`poll_transmit`](Self::poll_transmit)):
    /// neighbours switch away at once instead of waiting for expiry.
    pub fn retract_all(&mut self, now: Instant) {
        let prefixes: Vec<IpNet> = self.xroutes.iter().map(|(p, _)| p).collect();
        for p in prefixes {
            self.xroutes.remove(&p);
            self.reselect_prefix(p, now);
            self.schedule_update(p, true, None, now);
        }
        for (id, _) in self.interfaces.clone() {
            let b = self.output.buffer((id, None), now);
            b.messages
                .push(crate::wire::Message::Update(crate::wire::UpdateRepr {
                    prefix: None,
                    interval: self.config.update_interval,
                    seqno: self.seqno,
                    metric: INFINITY,
                    router_id: None,
                    next_hop: None,
                    proof: None,
                }));
        }
        self.finish();
    }

    /// Returns the next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest time [`handle_timeout`](Self::handle_timeout) must be
    /// called, or `poll_transmit` has something to flush.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timeout
    }

    /// Bookkeeping after every input: FIB event, next deadline.
    fn finish(&mut self) {
        if self.fib_dirty {
            self.fib_dirty = false;
            self.fib_generation += 1;
            self.events.retain(|e| !matches!(e, Event::FibChanged(_)));
            self.events
                .push_back(Event::FibChanged(self.fib_generation));
        }
        self.timeout = self.next_deadline();
    }

    /// A duration uniformly in [0.75 d, d]: periodic timers never exceed
    /// the interval they announce, and routers do not synchronise.
    fn jitter(&mut self, d: std::time::Duration) -> std::time::Duration {
        let f: f64 = rand::RngExt::random_range(&mut self.rng, 0.75..=1.0);
        d.mul_f64(f)
    }

    /// Our RFC 9616 clock: microseconds since construction plus a random
    /// offset, modulo 2^32. Never 0, which babeld reads as "no timestamp".
    fn timestamp(&self, now: Instant) -> u32 {
        let us = now.saturating_duration_since(self.epoch).as_micros();
        let t = (us as u32).wrapping_add(self.ts_offset);
        t.max(1)
    }
}

fn check_budget(budget: usize) -> Result<(), EngineError> {
    if budget < MIN_BUDGET {
        return Err(EngineError::BudgetTooSmall {
            budget,
            min: MIN_BUDGET,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
