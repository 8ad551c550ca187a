//! The tunnel policy: which tunnels a node opens, accepts, replaces and
//! closes. It is sans-IO in the manner of quinn-proto: it does no I/O, reads
//! no clock and owns no task. The node's async driver (`tunnels::driver`) and
//! the simulator (`re6st sim`) run this same code, so the figures of
//! `docs/results.md` are produced by what nodes run.
//!
//! # What it does (report §3.2, §4.5, §5.1)
//! - keeps `k` own (outgoing) tunnels to random peers of the peer DB;
//! - accepts incoming tunnels while it has fewer than `max_tunnels - k`
//!   (2k) of them, so that its arity stays at most `max_tunnels` (3k), and
//!   refuses the others with a [`Refusal`]; the dialler then tries another
//!   peer;
//! - never keeps two tunnels to the same node: when two nodes dial each other,
//!   both keep the tunnel opened by the node with the smaller certificate
//!   serial (the [`PeerId`] order);
//! - backs off exponentially from peers that failed or refused, except
//!   from unreachable ones while it has no tunnel up at all: then the fault
//!   is probably its own (its link is down), those peers are only held back
//!   a few seconds, and every back-off is forgotten once a tunnel comes up
//!   again;
//! - every refresh period replaces one own tunnel, chosen by
//!   [`Replacement`] (the report's: the one through which the fewest
//!   destinations are routed, ties broken by the highest RTT), or up to
//!   [`Replacement::MAX_SHORTCUTS`] with [`Replacement::Shortcut`], whose
//!   new peers are the destinations a direct tunnel would shortcut most;
//! - removes a tunnel in two stages, [`Action::Drain`] (routes move away)
//!   then [`Action::Close`], so that no packet in flight is lost; the
//!   replacement is opened when the drain starts (make before break).
//!
//! # How to drive it
//! 1. Create it with [`Policy::new`], then give it the peer DB with
//!    [`Policy::handle_candidates`] (again whenever the DB changes).
//! 2. Report events as they happen: [`Policy::handle_incoming`] (answer the
//!    dialler with its result), [`Policy::handle_tunnel_up`],
//!    [`Policy::handle_tunnel_failed`], [`Policy::handle_tunnel_closed`],
//!    and the routing view: [`Policy::handle_routes`] (destinations routed
//!    through each tunnel, from Babel's table) and [`Policy::handle_rtt`];
//!    with [`Replacement::Shortcut`], also [`Policy::handle_destinations`]
//!    (route metric and estimated direct RTT of each destination).
//! 3. After any input, apply every [`Policy::poll_action`] until `None`.
//! 4. Sleep until [`Policy::poll_timeout`], then call
//!    [`Policy::handle_timeout`] and go to 3.
//!
//! Time is always the last parameter, `now`; randomness comes from the RNG
//! the caller seeds, so a run is reproducible.

mod backoff;
mod config;
#[cfg(test)]
mod tests;
mod types;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::RngExt;
use rand::rngs::StdRng;

use backoff::Backoff;
pub use config::{ConfigError, ParseReplacementError, PolicyConfig, Replacement};
pub use types::{
    Action, CloseReason, Direction, Failure, PeerId, PolicyStats, ProbeRound, Refusal, TunnelId,
    TunnelInfo, TunnelState,
};

/// How many decided best-of-n rounds [`Policy::probe_rounds`] keeps.
const PROBE_ROUNDS_KEPT: usize = 8;

/// How many shortcut destinations (the largest gains) the policy keeps
/// between two [`Policy::handle_destinations`]: enough for a few
/// refreshes' replacements and the refusals of full peers.
const SHORTCUTS_KEPT: usize = 32;

/// A destination is "far" when its route metric is at least this many
/// times its estimated direct RTT; the share of far destinations sets how
/// many tunnels [`Replacement::Shortcut`] replaces per refresh.
const FAR_RATIO: u64 = 2;

/// How long a peer is held back when a dial to it failed while the node had
/// no tunnel up at all: the node was probably cut off itself (its uplink
/// down), so the failure says nothing about the peer, and the node must
/// reconnect soon after its link comes back rather than after every
/// peer's exponential back-off.
const CUT_OFF_RETRY: Duration = Duration::from_secs(5);

/// One tunnel as the policy sees it.
#[derive(Debug, Clone)]
struct Tunnel<P> {
    id: TunnelId,
    peer: P,
    direction: Direction,
    state: TunnelState,
    destinations: u32,
    rtt: Option<Duration>,
    /// When a draining tunnel is closed even if routes still use it.
    drain_deadline: Option<Instant>,
    /// A best-of-n candidate that is not one of the `k` yet.
    probe: bool,
    /// An own tunnel to a randomly picked peer (not a shortcut).
    random: bool,
}

impl<P> Tunnel<P> {
    /// One of the `k` own tunnels that keep the node connected.
    fn is_active_own(&self) -> bool {
        self.direction == Direction::Outgoing && self.state != TunnelState::Draining && !self.probe
    }

    fn info(&self) -> TunnelInfo<P>
    where
        P: Clone,
    {
        TunnelInfo {
            id: self.id,
            peer: self.peer.clone(),
            direction: self.direction,
            state: self.state,
            destinations: self.destinations,
            rtt: self.rtt,
            probe: self.probe,
        }
    }
}

/// The tunnel policy of one node. `P` names peers (see [`PeerId`]); `R` is
/// the caller-seeded RNG.
#[derive(Debug, Clone)]
pub struct Policy<P: PeerId, R = StdRng> {
    me: P,
    config: PolicyConfig,
    rng: R,
    tunnels: Vec<Tunnel<P>>,
    /// The peer DB: sorted, without `me`.
    candidates: Vec<P>,
    backoff: Backoff<P>,
    actions: VecDeque<Action<P>>,
    next_id: u64,
    next_refresh: Instant,
    /// Set while best-of-n probes are out.
    probe_deadline: Option<Instant>,
    /// The latest decided best-of-n rounds, oldest first.
    probe_rounds: VecDeque<ProbeRound<P>>,
    /// The latest `now` seen, for `poll_timeout`.
    now: Instant,
    stats: PolicyStats,
    /// Shortcut destinations, largest gain (µs) first, at most
    /// `SHORTCUTS_KEPT`; consumed as they are dialled.
    shortcuts: Vec<(P, u64)>,
    /// From the latest destinations report: (far destinations, all).
    far: (usize, usize),
}

impl<P: PeerId, R: rand::Rng> Policy<P, R> {
    /// A policy for node `me`. The first refresh is one period after `now`.
    pub fn new(me: P, config: PolicyConfig, rng: R, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Policy {
            me,
            backoff: Backoff::new(config.backoff_min, config.backoff_max),
            next_refresh: now + config.refresh,
            config,
            rng,
            tunnels: Vec::new(),
            candidates: Vec::new(),
            actions: VecDeque::new(),
            next_id: 0,
            probe_deadline: None,
            probe_rounds: VecDeque::new(),
            now,
            stats: PolicyStats::default(),
            shortcuts: Vec::new(),
            far: (0, 0),
        })
    }

    // ----- getters -----

    /// This node.
    pub fn me(&self) -> &P {
        &self.me
    }

    /// This node's identity changed order (the node renewed its certificate
    /// and got a new serial, which the duplicate rule compares): later
    /// decisions use `me`.
    pub fn set_me(&mut self, me: P) {
        self.me = me;
    }

    /// The configuration in force.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// When the next refresh is due: a caller that reports
    /// [`Policy::handle_destinations`] does it just before.
    pub fn next_refresh(&self) -> Instant {
        self.next_refresh
    }

    /// The network changed its replacement policy: it applies from the
    /// next refresh (a best-of-n round already out is decided as it
    /// started). Refused, and nothing changes, if it cannot work.
    pub fn set_replacement(&mut self, replacement: Replacement) -> Result<(), ConfigError> {
        PolicyConfig {
            replacement,
            ..self.config.clone()
        }
        .validate()?;
        self.config.replacement = replacement;
        Ok(())
    }

    /// The network changed `k`, the arity limit or the refresh period
    /// (the registry signed a new configuration). Refused, and nothing
    /// changes, if they cannot work together. The least disruptive way:
    /// - a larger `k` opens the missing own tunnels at once (as after a
    ///   lost tunnel; the caller polls the actions);
    /// - a smaller `k` closes nothing now: each refresh drains one surplus
    ///   own tunnel (the least used) through the usual two stages without
    ///   opening a replacement, until `k` are left; this happens even with
    ///   [`Replacement::Never`];
    /// - a lower `max_tunnels` refuses new incoming tunnels beyond it, but
    ///   cuts none: an incoming tunnel is another node's own tunnel, and
    ///   closing it would make that node lose routes and dial again. They
    ///   go as their owners replace them at their refreshes;
    /// - a new refresh period counts from the refresh already scheduled,
    ///   except that a shorter one moves that refresh forward to at most
    ///   one new period from `now` (a node never waits an old, long period
    ///   for a network that asked for a short one).
    pub fn set_limits(
        &mut self,
        outgoing: usize,
        max_tunnels: usize,
        refresh: Duration,
        now: Instant,
    ) -> Result<(), ConfigError> {
        self.now = now;
        PolicyConfig {
            outgoing,
            max_tunnels,
            refresh,
            ..self.config.clone()
        }
        .validate()?;
        self.config.outgoing = outgoing;
        self.config.max_tunnels = max_tunnels;
        self.config.refresh = refresh;
        self.next_refresh = self.next_refresh.min(now + refresh);
        self.fill(now);
        Ok(())
    }

    /// Counters.
    pub fn stats(&self) -> &PolicyStats {
        &self.stats
    }

    /// The latest best-of-n rounds (at most 8), oldest first.
    pub fn probe_rounds(&self) -> impl Iterator<Item = &ProbeRound<P>> + '_ {
        self.probe_rounds.iter()
    }

    /// Every tunnel the policy knows, in every state.
    pub fn tunnels(&self) -> impl Iterator<Item = TunnelInfo<P>> + '_ {
        self.tunnels.iter().map(Tunnel::info)
    }

    /// One tunnel.
    pub fn tunnel(&self, id: TunnelId) -> Option<TunnelInfo<P>> {
        self.tunnels.iter().find(|t| t.id == id).map(Tunnel::info)
    }

    /// Number of tunnels in every state and direction (the arity that the
    /// maximum applies to).
    pub fn tunnel_count(&self) -> usize {
        self.tunnels.len()
    }

    /// Number of tunnels opened by peers.
    pub fn incoming_count(&self) -> usize {
        self.tunnels
            .iter()
            .filter(|t| t.direction == Direction::Incoming)
            .count()
    }

    /// Number of own tunnels that count toward `k` (opening or up, not
    /// draining, not probes).
    pub fn own_count(&self) -> usize {
        self.tunnels.iter().filter(|t| t.is_active_own()).count()
    }

    // ----- inputs -----

    /// The peers this node may dial: the peer DB, whole. Replaces the
    /// previous set. `me` and repeats are ignored.
    pub fn handle_candidates(&mut self, peers: impl IntoIterator<Item = P>, now: Instant) {
        self.now = now;
        let mut peers: Vec<P> = peers.into_iter().filter(|p| *p != self.me).collect();
        peers.sort();
        peers.dedup();
        self.candidates = peers;
        let candidates = &self.candidates;
        self.backoff.retain(|p| candidates.binary_search(p).is_ok());
        self.fill(now);
    }

    /// `peer` dials this node. Returns the id of the accepted tunnel, or why
    /// it is refused (the driver tells the dialler the reason). An accepted
    /// tunnel is up at once.
    pub fn handle_incoming(&mut self, peer: P, now: Instant) -> Result<TunnelId, Refusal> {
        self.now = now;
        if peer == self.me {
            self.stats.refused_duplicate += 1;
            return Err(Refusal::Loopback);
        }
        let full = self.incoming_count() >= self.config.max_tunnels - self.config.outgoing;
        if let Some(i) = self.index_of_peer(&peer) {
            let existing = &self.tunnels[i];
            match existing.direction {
                // The peer dials again while we hold its previous tunnel: it
                // has lost that one (restart, new address); keep the new one.
                Direction::Incoming => {
                    let old = self.tunnels.swap_remove(i);
                    self.close(old, CloseReason::Superseded);
                }
                Direction::Outgoing => {
                    if existing.state == TunnelState::Draining || self.me < peer {
                        // Ours survives (or we are leaving this peer anyway).
                        self.stats.refused_duplicate += 1;
                        return Err(Refusal::Duplicate);
                    }
                    if full {
                        // Taking the peer's tunnel for ours would free a
                        // slot that `fill` dials again: one incoming tunnel
                        // past the maximum. Refuse as any full node does;
                        // both dials fail and each side dials another peer.
                        return Err(self.refuse_full());
                    }
                    // The peer has the smaller serial: its tunnel survives.
                    let old = self.tunnels.swap_remove(i);
                    self.stats.duplicates_closed += 1;
                    let was_probe = old.probe;
                    self.close(old, CloseReason::Duplicate);
                    let id = self.accept(peer);
                    if was_probe {
                        self.resolve_probes(false, now);
                    }
                    self.fill(now);
                    return Ok(id);
                }
            }
        } else if full {
            // Room is kept for the node's own `k` (the report's simulator
            // does the same), so that arity never exceeds the maximum, even
            // for a node that accepted tunnels before opening its own.
            return Err(self.refuse_full());
        }
        let cut_off = self.cut_off();
        let id = self.accept(peer);
        if cut_off {
            self.reconnected(now);
        }
        Ok(id)
    }

    /// Counts a refusal for want of room, and says so to the dialler.
    fn refuse_full(&mut self) -> Refusal {
        self.stats.refused_full += 1;
        Refusal::Full {
            tunnels: self.tunnels.len(),
            max: self.config.max_tunnels,
        }
    }

    /// An own tunnel came up; `rtt` is the handshake's estimate if known.
    pub fn handle_tunnel_up(&mut self, tunnel: TunnelId, rtt: Option<Duration>, now: Instant) {
        self.now = now;
        let Some(i) = self.index_of(tunnel) else {
            return;
        };
        let t = &self.tunnels[i];
        if t.direction != Direction::Outgoing || t.state != TunnelState::Opening {
            return;
        }
        let cut_off = self.cut_off();
        let t = &mut self.tunnels[i];
        t.state = TunnelState::Up;
        if rtt.is_some() {
            t.rtt = rtt;
        }
        let (peer, probe) = (t.peer.clone(), t.probe);
        self.backoff.succeeded(&peer);
        if probe {
            self.resolve_probes(false, now);
        }
        if cut_off {
            self.reconnected(now);
        }
    }

    /// An own tunnel could not be opened. The peer is backed off and another
    /// one is dialled.
    pub fn handle_tunnel_failed(&mut self, tunnel: TunnelId, failure: Failure, now: Instant) {
        self.now = now;
        let Some(i) = self.index_of(tunnel) else {
            return;
        };
        if self.tunnels[i].direction != Direction::Outgoing {
            self.stats.unknown_tunnel += 1;
            return;
        }
        let t = self.tunnels.swap_remove(i);
        self.stats.failed += 1;
        if failure == Failure::Unreachable && self.cut_off() {
            let delay = CUT_OFF_RETRY.min(self.config.backoff_min);
            self.backoff.hold(&t.peer, now, delay);
            tracing::debug!(peer = ?t.peer, %failure, ?delay, "tunnel failed while cut off, retrying soon");
        } else {
            let delay = self.backoff.failed(&t.peer, now);
            tracing::debug!(peer = ?t.peer, %failure, ?delay, "tunnel failed, backing off");
        }
        if t.probe {
            self.resolve_probes(false, now);
        }
        self.fill(now);
    }

    /// A tunnel went down without the policy asking (peer closed, idle
    /// timeout). A lost own tunnel is replaced at once (report §3.2).
    pub fn handle_tunnel_closed(&mut self, tunnel: TunnelId, now: Instant) {
        self.now = now;
        let Some(i) = self.index_of(tunnel) else {
            return;
        };
        let t = self.tunnels.swap_remove(i);
        if t.state != TunnelState::Draining {
            self.stats.lost += 1;
        }
        if t.probe {
            self.resolve_probes(false, now);
        }
        self.fill(now);
    }

    /// The number of destinations routed through each tunnel, from the
    /// routing table (Babel's selected routes per neighbour). Tunnels not
    /// listed route none. A draining tunnel that routes none is closed.
    pub fn handle_routes(
        &mut self,
        counts: impl IntoIterator<Item = (TunnelId, u32)>,
        now: Instant,
    ) {
        self.now = now;
        for t in &mut self.tunnels {
            t.destinations = 0;
        }
        for (id, n) in counts {
            if let Some(t) = self.find_mut(id) {
                t.destinations = n;
            }
        }
        let drained: Vec<TunnelId> = self
            .tunnels
            .iter()
            .filter(|t| t.state == TunnelState::Draining && t.destinations == 0)
            .map(|t| t.id)
            .collect();
        for id in drained {
            self.remove_and_close(id, CloseReason::Replaced);
        }
    }

    /// The measured RTT of a tunnel (Babel's RTT extension or QUIC's).
    /// Ignored for a best-of-n probe until its round is decided: probes are
    /// ranked by the RTT they came up with, measured the same way for all
    /// of them (a probe that came up early would otherwise be ranked by
    /// another estimator, e.g. Babel's, than the others).
    pub fn handle_rtt(&mut self, tunnel: TunnelId, rtt: Duration, now: Instant) {
        self.now = now;
        if let Some(t) = self.find_mut(tunnel)
            && !t.probe
        {
            t.rtt = Some(rtt);
        }
    }

    /// What the node knows of every destination, for
    /// [`Replacement::Shortcut`]: its route metric (Babel's selected
    /// route) and the cost of a direct tunnel to it, in the same units
    /// (NodeCore: from its tunnel's RTT or a probe; the simulator: the
    /// true RTT, coordinates or pings). The gain of a
    /// direct tunnel is `metric - estimate`; the largest gains are kept
    /// (at most 32) and replace the previous report. Destinations without
    /// a route are not listed (a tunnel to them is no shortcut: the
    /// random tunnels keep the graph connected).
    pub fn handle_destinations(
        &mut self,
        destinations: impl IntoIterator<Item = (P, Duration, Duration)>,
        now: Instant,
    ) {
        self.now = now;
        let (mut far, mut all) = (0, 0);
        let mut gains: Vec<(P, u64)> = Vec::new();
        for (peer, metric, estimate) in destinations {
            if peer == self.me {
                continue;
            }
            all += 1;
            let m = u64::try_from(metric.as_micros()).unwrap_or(u64::MAX);
            let e = u64::try_from(estimate.as_micros()).unwrap_or(u64::MAX);
            if m >= e.saturating_mul(FAR_RATIO) {
                far += 1;
            }
            if m > e {
                gains.push((peer, m - e));
                // Bounded however many destinations are reported.
                if gains.len() >= 4 * SHORTCUTS_KEPT {
                    Self::keep_largest(&mut gains);
                }
            }
        }
        Self::keep_largest(&mut gains);
        self.shortcuts = gains;
        self.far = (far, all);
    }

    /// Keeps the `SHORTCUTS_KEPT` largest gains, largest first (ties: the
    /// smaller peer, so that a run is reproducible).
    fn keep_largest(gains: &mut Vec<(P, u64)>) {
        gains.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        gains.truncate(SHORTCUTS_KEPT);
    }

    /// Time passed: refresh, drain deadlines, probe deadline, back-off
    /// expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        let overdue: Vec<TunnelId> = self
            .tunnels
            .iter()
            .filter(|t| t.drain_deadline.is_some_and(|d| d <= now))
            .map(|t| t.id)
            .collect();
        for id in overdue {
            self.remove_and_close(id, CloseReason::Replaced);
        }
        if self.probe_deadline.is_some_and(|d| d <= now) {
            self.resolve_probes(true, now);
        }
        if now >= self.next_refresh {
            // From `now`, not `+= refresh`: after a suspend, one refresh, not
            // a burst of them.
            self.next_refresh = now + self.config.refresh;
            self.refresh(now);
        }
        self.fill(now);
    }

    // ----- outputs -----

    /// The next thing the driver must do.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action<P>> {
        self.actions.pop_front()
    }

    /// When [`Policy::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let refresh = (self.config.replacement != Replacement::Never
            || self.own_count() > self.config.outgoing)
            .then_some(self.next_refresh);
        let drains = self.tunnels.iter().filter_map(|t| t.drain_deadline);
        let backoff = if self.own_count() < self.config.outgoing {
            self.backoff.next_release(self.now)
        } else {
            None
        };
        refresh
            .into_iter()
            .chain(drains)
            .chain(self.probe_deadline)
            .chain(backoff)
            .min()
    }

    // ----- internals -----

    fn index_of(&mut self, id: TunnelId) -> Option<usize> {
        let i = self.tunnels.iter().position(|t| t.id == id);
        if i.is_none() {
            // A late event for a tunnel the policy closed is possible; count
            // them so that a driver bug shows.
            self.stats.unknown_tunnel += 1;
            tracing::trace!(tunnel = %id, "event for an unknown tunnel");
        }
        i
    }

    fn find_mut(&mut self, id: TunnelId) -> Option<&mut Tunnel<P>> {
        self.tunnels.iter_mut().find(|t| t.id == id)
    }

    fn index_of_peer(&self, peer: &P) -> Option<usize> {
        self.tunnels.iter().position(|t| t.peer == *peer)
    }

    fn new_id(&mut self) -> TunnelId {
        let id = TunnelId(self.next_id);
        self.next_id += 1;
        id
    }

    /// No tunnel is up: the node reaches nobody.
    fn cut_off(&self) -> bool {
        !self.tunnels.iter().any(|t| t.state == TunnelState::Up)
    }

    /// The first tunnel is up after none was: the failures seen meanwhile
    /// were ours, so every back-off is forgotten and the missing own
    /// tunnels are dialled at once.
    fn reconnected(&mut self, now: Instant) {
        self.backoff.clear();
        self.fill(now);
    }

    fn accept(&mut self, peer: P) -> TunnelId {
        let id = self.new_id();
        self.tunnels.push(Tunnel {
            id,
            peer,
            direction: Direction::Incoming,
            state: TunnelState::Up,
            destinations: 0,
            rtt: None,
            drain_deadline: None,
            probe: false,
            random: false,
        });
        self.stats.accepted += 1;
        id
    }

    fn open(&mut self, peer: P, probe: bool, random: bool) {
        let id = self.new_id();
        self.tunnels.push(Tunnel {
            id,
            peer: peer.clone(),
            direction: Direction::Outgoing,
            state: TunnelState::Opening,
            destinations: 0,
            rtt: None,
            drain_deadline: None,
            probe,
            random,
        });
        self.stats.opened += 1;
        self.actions.push_back(Action::Open { tunnel: id, peer });
    }

    fn close(&mut self, tunnel: Tunnel<P>, reason: CloseReason) {
        self.actions.push_back(Action::Close {
            tunnel: tunnel.id,
            peer: tunnel.peer,
            reason,
        });
    }

    fn remove_and_close(&mut self, id: TunnelId, reason: CloseReason) {
        if let Some(i) = self.tunnels.iter().position(|t| t.id == id) {
            let t = self.tunnels.swap_remove(i);
            self.close(t, reason);
        }
    }

    /// Whether `peer` may be dialled now.
    fn eligible(&self, peer: &P, now: Instant) -> bool {
        !self.tunnels.iter().any(|t| t.peer == *peer) && !self.backoff.is_blocked(peer, now)
    }

    /// A uniformly random eligible candidate. Rejection sampling first (the
    /// DB is usually much larger than the node's arity), then an exact
    /// fallback over the eligible ones.
    fn pick(&mut self, now: Instant) -> Option<P> {
        if self.candidates.is_empty() {
            return None;
        }
        for _ in 0..32 {
            let i = self.rng.random_range(0..self.candidates.len());
            if self.eligible(&self.candidates[i], now) {
                return Some(self.candidates[i].clone());
            }
        }
        let eligible: Vec<usize> = (0..self.candidates.len())
            .filter(|&i| self.eligible(&self.candidates[i], now))
            .collect();
        if eligible.is_empty() {
            return None;
        }
        let i = eligible[self.rng.random_range(0..eligible.len())];
        Some(self.candidates[i].clone())
    }

    /// Opens own tunnels until there are `k` (unless probes are out: their
    /// outcome decides).
    fn fill(&mut self, now: Instant) {
        if self.probe_deadline.is_some() {
            return;
        }
        let mut missing = self.config.outgoing.saturating_sub(self.own_count());
        while missing > 0 {
            if self.wants_shortcut()
                && let Some(peer) = self.pick_shortcut(now)
            {
                self.stats.shortcuts_opened += 1;
                self.open(peer, false, false);
            } else {
                let Some(peer) = self.pick(now) else { break };
                self.open(peer, false, true);
            }
            missing -= 1;
        }
    }

    /// With [`Replacement::Shortcut`], whether the next own tunnel may be a
    /// shortcut: the random ones asked for are all there.
    fn wants_shortcut(&self) -> bool {
        let Replacement::Shortcut { random } = self.config.replacement else {
            return false;
        };
        let randoms = self
            .tunnels
            .iter()
            .filter(|t| t.is_active_own() && t.random)
            .count();
        randoms >= usize::from(random)
    }

    /// The eligible shortcut destination with the largest gain, taken off
    /// the list with those before it that cannot be dialled (a tunnel
    /// exists, backed off, not in the peer DB).
    fn pick_shortcut(&mut self, now: Instant) -> Option<P> {
        while !self.shortcuts.is_empty() {
            let (peer, _) = self.shortcuts.remove(0);
            if self.candidates.binary_search(&peer).is_ok() && self.eligible(&peer, now) {
                return Some(peer);
            }
        }
        None
    }

    /// How many own tunnels [`Replacement::Shortcut`] replaces now: more
    /// while many destinations are routed far above their direct RTT (early,
    /// on a random overlay), one once few are.
    fn shortcut_count(&self) -> usize {
        let (far, all) = self.far;
        if all == 0 {
            return 1;
        }
        let share = far as f64 / all as f64;
        if share >= 0.10 {
            Replacement::MAX_SHORTCUTS
        } else if share >= 0.02 {
            2
        } else {
            1
        }
    }

    /// The refresh of §3.2/§5.1: drain one own tunnel and replace it; or,
    /// with more than `k` (the network lowered it), drain the least used
    /// one without replacing it.
    fn refresh(&mut self, now: Instant) {
        let surplus = self.own_count() > self.config.outgoing;
        if (self.config.replacement == Replacement::Never && !surplus)
            || self.probe_deadline.is_some()
            || self
                .tunnels
                .iter()
                .any(|t| t.state == TunnelState::Draining)
        {
            return;
        }
        let own: Vec<usize> = (0..self.tunnels.len())
            .filter(|&i| {
                self.tunnels[i].is_active_own() && self.tunnels[i].state == TunnelState::Up
            })
            .collect();
        // Only a node that has all its tunnels replaces one (re6stnet does
        // the same): a node still filling up has nothing to optimise yet.
        if own.is_empty() || own.len() < self.config.outgoing {
            return;
        }
        if let Replacement::Shortcut { .. } = self.config.replacement
            && !surplus
        {
            self.replace_shortcuts(own, now);
            return;
        }
        let victim = match self.config.replacement {
            Replacement::Random if !surplus => own[self.rng.random_range(0..own.len())],
            _ => self.least_used(&own),
        };
        let t = &mut self.tunnels[victim];
        t.state = TunnelState::Draining;
        t.drain_deadline = Some(now + self.config.drain_timeout);
        let (id, peer, destinations) = (t.id, t.peer.clone(), t.destinations);
        self.actions.push_back(Action::Drain { tunnel: id, peer });
        if surplus {
            self.stats.surplus_drained += 1;
            return;
        }
        self.stats.replaced += 1;
        self.stats.replaced_destinations += u64::from(destinations);
        if let Replacement::LeastUsedBestOf { probes } = self.config.replacement {
            let mut opened = 0;
            for _ in 0..probes {
                let Some(peer) = self.pick(now) else { break };
                self.open(peer, true, true);
                opened += 1;
            }
            if opened > 0 {
                self.probe_deadline = Some(now + self.config.probe_timeout);
                return;
            }
        }
        self.fill(now);
    }

    /// [`Replacement::Shortcut`]'s refresh: drain the least used own
    /// tunnels (as many as [`Policy::shortcut_count`]) and open their
    /// replacements at once: shortcuts, or random peers for the random
    /// tunnels among the victims.
    fn replace_shortcuts(&mut self, mut own: Vec<usize>, now: Instant) {
        let count = self.shortcut_count().min(own.len());
        for _ in 0..count {
            let pos = {
                let victim = self.least_used(&own);
                own.iter().position(|&i| i == victim).expect("from own")
            };
            let victim = own.swap_remove(pos);
            let t = &mut self.tunnels[victim];
            t.state = TunnelState::Draining;
            t.drain_deadline = Some(now + self.config.drain_timeout);
            let (id, peer, destinations) = (t.id, t.peer.clone(), t.destinations);
            self.actions.push_back(Action::Drain { tunnel: id, peer });
            self.stats.replaced += 1;
            self.stats.replaced_destinations += u64::from(destinations);
        }
        self.fill(now);
    }

    /// The own tunnel with the fewest destinations; ties: the highest RTT
    /// (unknown counts as highest); remaining ties: a random one.
    fn least_used(&mut self, own: &[usize]) -> usize {
        let key = |t: &Tunnel<P>| {
            (
                t.destinations,
                std::cmp::Reverse(t.rtt.unwrap_or(Duration::MAX)),
            )
        };
        let best = own
            .iter()
            .map(|&i| key(&self.tunnels[i]))
            .min()
            .expect("own is not empty");
        let ties: Vec<usize> = own
            .iter()
            .copied()
            .filter(|&i| key(&self.tunnels[i]) == best)
            .collect();
        ties[self.rng.random_range(0..ties.len())]
    }

    /// Keeps the outcome of the round being decided (`winner` among the
    /// probes) for [`Policy::probe_rounds`].
    fn record_round(&mut self, winner: Option<TunnelId>) {
        let mut probes: Vec<&Tunnel<P>> = self.tunnels.iter().filter(|t| t.probe).collect();
        probes.sort_by_key(|t| t.id);
        let round = ProbeRound {
            up: probes
                .iter()
                .filter(|t| t.state == TunnelState::Up)
                .map(|t| (t.peer.clone(), t.rtt))
                .collect(),
            cancelled: probes
                .iter()
                .filter(|t| t.state == TunnelState::Opening)
                .count(),
            kept: probes
                .iter()
                .find(|t| Some(t.id) == winner)
                .map(|t| t.peer.clone()),
        };
        if self.probe_rounds.len() == PROBE_ROUNDS_KEPT {
            self.probe_rounds.pop_front();
        }
        self.probe_rounds.push_back(round);
        self.stats.probe_rounds += 1;
    }

    /// Best-of-n: once no probe is still opening (or `force`, at the
    /// deadline), keep the up probe with the lowest RTT and close the rest.
    fn resolve_probes(&mut self, force: bool, now: Instant) {
        if self.probe_deadline.is_none() {
            return;
        }
        let pending = self
            .tunnels
            .iter()
            .any(|t| t.probe && t.state == TunnelState::Opening);
        if pending && !force {
            return;
        }
        let winner = self
            .tunnels
            .iter()
            .filter(|t| t.probe && t.state == TunnelState::Up)
            .min_by_key(|t| (t.rtt.unwrap_or(Duration::MAX), t.id))
            .map(|t| t.id);
        let losers: Vec<TunnelId> = self
            .tunnels
            .iter()
            .filter(|t| t.probe && Some(t.id) != winner)
            .map(|t| t.id)
            .collect();
        self.record_round(winner);
        for id in losers {
            self.remove_and_close(id, CloseReason::ProbeLost);
        }
        if let Some(id) = winner
            && let Some(t) = self.find_mut(id)
        {
            t.probe = false;
        }
        self.probe_deadline = None;
        self.fill(now);
    }
}
