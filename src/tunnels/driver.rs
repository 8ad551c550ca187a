//! The tunnel driver: what the node adds around the sans-IO [`Policy`].
//!
//! It turns the policy's actions into node [`Command`]s and the node's
//! events into policy inputs, and owns the two things the policy does not
//! know about:
//!
//! - **Interface ids.** Each tunnel that carries traffic gets a small
//!   [`IfaceId`], used both as its Babel interface and as the dataplane's
//!   next-hop id. A freed id is reused only after a quarantine, so a FIB
//!   snapshot that still names it can never send into a newer tunnel.
//! - **The staged removal.** [`Action::Drain`] becomes [`Command::Drain`]:
//!   Babel raises the cost of the tunnel's interface, so routes move to
//!   alternatives as soon as those are feasible, while traffic keeps
//!   flowing through the tunnel until then (no blackhole, unlike a
//!   retraction); the peer is told and does the same, and answers
//!   [`Command::NotifyDrained`]'s message once nothing of its own is routed
//!   through the tunnel. Once nothing of ours is routed through it either,
//!   the policy asks to close it; the driver closes it `linger` after the
//!   peer's answer (packets already in flight still arrive), or after
//!   `peer_wait` if the answer never comes.
//! - **Losing best-of-n probes** ([`CloseReason::ProbeLost`]). The policy
//!   forgets them at once, but a probe that came up is a Babel neighbour
//!   like any tunnel and may already carry routes (a slow probe keeps the
//!   round open while the fast ones exchange Hellos). So an up loser is
//!   removed in the same stages as a refresh victim: drained (the peer is
//!   told), closed `linger` after both ends have moved their routes away,
//!   and at the latest after the policy's `drain_timeout`. A loser still
//!   dialling is just cancelled.
//! - **Superseded and duplicate tunnels** ([`CloseReason::Superseded`],
//!   [`CloseReason::Duplicate`]) go the same way when they are up: the
//!   demo lost 1 ping of 360 when a node dialled again a peer whose
//!   drained tunnel it still held (its policy had forgotten it), and the
//!   peer closed the old tunnel at once while its own routes still went
//!   through it. A superseded tunnel waits for our routes only (the peer
//!   dialled again: nothing of its own uses the old one).
//!
//! It is sans-IO like the policy: NodeCore feeds it events
//! and `now`, applies the commands, and calls
//! [`Driver::handle_timeout`] at [`Driver::poll_timeout`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use ipnet::Ipv6Net;
use rand::rngs::StdRng;
use re6st_babel::engine::IfaceId;

use super::policy::{
    Action, CloseReason, ConfigError, Direction, Failure, Policy, PolicyConfig, Refusal, TunnelId,
};
use crate::transport::control::close;

/// A node as the tunnel policy sees it.
///
/// Equality is by prefix: a node is its prefix, and its certificate serial
/// changes when it renews. The order is by serial first, which is the
/// duplicate rule of the report (§3.2: both ends keep the tunnel opened by
/// the node with the smaller serial); both ends compare the serials of the
/// certificates they just saw in the TLS handshake, so they agree. Within
/// one collection a prefix appears once (the peer DB and the policy's
/// tunnel list are keyed by it), which keeps this order total there.
#[derive(Debug, Clone, Copy)]
pub struct PeerKey {
    /// Certificate serial.
    pub serial: u64,
    /// Node prefix.
    pub prefix: Ipv6Net,
}

impl PartialEq for PeerKey {
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix
    }
}

impl Eq for PeerKey {}

impl PartialOrd for PeerKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PeerKey {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.prefix == other.prefix {
            Ordering::Equal
        } else {
            (self.serial, self.prefix).cmp(&(other.serial, other.prefix))
        }
    }
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (serial {})", self.prefix, self.serial)
    }
}

/// Driver timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverConfig {
    /// How long a drained tunnel stays open after both ends moved their
    /// routes away (packets in flight).
    pub linger: Duration,
    /// How long to wait for the peer to say it has drained too.
    pub peer_wait: Duration,
    /// How long a freed interface id is not reused.
    pub quarantine: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(500),
            peer_wait: Duration::from_secs(30),
            quarantine: Duration::from_secs(10),
        }
    }
}

/// What the node must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Dial `peer` for `tunnel`, then report [`Driver::handle_dialled`].
    Dial {
        /// The tunnel.
        tunnel: TunnelId,
        /// Whom.
        peer: PeerKey,
    },
    /// Give up dialling `tunnel` (a connection that comes up anyway is
    /// discarded by [`Driver::handle_dialled`]).
    CancelDial {
        /// The tunnel.
        tunnel: TunnelId,
    },
    /// Drain `tunnel`: raise the Babel cost of its interface so that
    /// routes move away as alternatives become feasible; the tunnel keeps
    /// carrying traffic meanwhile. With `notify_peer`, tell the peer (a
    /// drain message) so it does the same.
    Drain {
        /// The tunnel.
        tunnel: TunnelId,
        /// Its interface.
        iface: IfaceId,
        /// Tell the peer.
        notify_peer: bool,
    },
    /// Tell the peer that nothing of ours is routed through `tunnel` any
    /// more (the answer to its drain message).
    NotifyDrained {
        /// The tunnel.
        tunnel: TunnelId,
    },
    /// The tunnel is gone: take its interface down in Babel and remove the
    /// next hop (if it was up); close the QUIC connection with `close`'s
    /// code and reason (`None`: it is closed already).
    Close {
        /// The tunnel.
        tunnel: TunnelId,
        /// Its interface, if it was up.
        iface: Option<IfaceId>,
        /// Close code and reason.
        close: Option<(u32, &'static str)>,
    },
}

/// What became of a dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialled {
    /// The tunnel is up on this interface.
    Up(IfaceId),
    /// The policy no longer wants it: close the connection (code DONE).
    Discard,
}

#[derive(Debug, Clone)]
struct Entry {
    peer: PeerKey,
    direction: Direction,
    /// Set once the tunnel is up, until it is closed.
    iface: Option<IfaceId>,
    /// Its Babel cost was raised (our refresh, or the peer's).
    draining: bool,
    /// The peer said nothing of its own is routed through it any more.
    peer_drained: bool,
    /// We said so to the peer.
    drained_sent: bool,
    /// Opening (outgoing, not up yet).
    opening: bool,
    /// An up tunnel the policy let go (losing probe, superseded,
    /// duplicate) that the driver drains on its own: the close code and
    /// reason it gets once drained.
    let_go: Option<(u32, &'static str)>,
    /// Some of our routes go through it (as of the last `handle_routes`).
    routed: bool,
    /// Nothing of ours is routed through it any more (and the policy no
    /// longer holds it): only the peer's answer or the deadline is awaited.
    own_drained: bool,
    /// A LAN link ([`Driver::handle_lan_up`]): the policy does not know it.
    lan: bool,
}

/// Tunnel ids of LAN links have this bit set, so they never meet the
/// policy's (which count up from 0).
pub(crate) const LAN_ID: u64 = 1 << 63;

fn is_lan_id(tunnel: TunnelId) -> bool {
    tunnel.0 & LAN_ID != 0
}

/// Whether the policy still holds this tunnel: not a LAN link, not one it
/// asked to close that the driver keeps until both ends have drained.
fn policy_holds(e: &Entry) -> bool {
    !e.lan && !e.own_drained && e.let_go.is_none()
}

impl Entry {
    fn new(peer: PeerKey, direction: Direction, iface: Option<IfaceId>, opening: bool) -> Self {
        Self {
            peer,
            direction,
            iface,
            draining: false,
            peer_drained: false,
            drained_sent: false,
            opening,
            let_go: None,
            routed: false,
            own_drained: false,
            lan: false,
        }
    }
}

/// Counters of the driver.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DriverStats {
    /// Tunnels drained before closing (our refresh or the peer's).
    pub drained: u64,
    /// Drained tunnels closed once both ends had moved their routes away.
    pub closed_drained: u64,
    /// Drained tunnels closed without the peer's answer (`peer_wait`).
    pub closed_unanswered: u64,
    /// Dials whose connection arrived after the policy dropped them.
    pub discarded_dials: u64,
    /// Refresh replacements (drains of own tunnels).
    pub replacements: u64,
    /// Replacements whose victim routed the fewest destinations of the
    /// node's own tunnels at that moment (a run-time check of report §5.1:
    /// it should equal `replacements`).
    pub replacements_least_used: u64,
    /// Destinations routed through the replaced tunnels when they were
    /// chosen (divide by `replacements`; the report found 1.85 against 75
    /// on average per tunnel).
    pub replaced_destinations: u64,
    /// Best-of-n probes that came up and lost: drained, then closed.
    pub probes_drained: u64,
    /// Best-of-n probes that lost while still dialling: cancelled.
    pub probes_cancelled: u64,
}

/// The tunnel driver of one node.
#[derive(Debug)]
pub struct Driver {
    policy: Policy<PeerKey, StdRng>,
    config: DriverConfig,
    entries: BTreeMap<TunnelId, Entry>,
    by_iface: BTreeMap<IfaceId, TunnelId>,
    /// Freed ids and when they may be reused.
    quarantined: VecDeque<(Instant, IfaceId)>,
    free: Vec<IfaceId>,
    next_iface: u32,
    next_lan: u64,
    /// Tunnels to close at a deadline, and whether the peer answered.
    lingering: Vec<(Instant, TunnelId)>,
    commands: VecDeque<Command>,
    stats: DriverStats,
    /// The peer DB as last given; the policy gets it without the peers of
    /// tunnels it has let go that are still closing.
    candidates: Vec<PeerKey>,
    /// The set of such closing peers changed: feed the policy again.
    refeed: bool,
}

impl Driver {
    /// A driver for node `me`.
    pub fn new(
        me: PeerKey,
        policy: PolicyConfig,
        rng: StdRng,
        config: DriverConfig,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            policy: Policy::new(me, policy, rng, now)?,
            config,
            entries: BTreeMap::new(),
            by_iface: BTreeMap::new(),
            quarantined: VecDeque::new(),
            free: Vec::new(),
            next_iface: 0,
            next_lan: 0,
            lingering: Vec::new(),
            commands: VecDeque::new(),
            stats: DriverStats::default(),
            candidates: Vec::new(),
            refeed: false,
        })
    }

    /// The policy (read-only: tunnels, stats).
    pub fn policy(&self) -> &Policy<PeerKey, StdRng> {
        &self.policy
    }

    /// Our certificate was renewed: the duplicate rule must compare the new
    /// serial, the one peers see in TLS from now on.
    pub fn set_me(&mut self, me: PeerKey) {
        self.policy.set_me(me);
    }

    /// The network changed its replacement policy (from the next refresh).
    pub fn set_replacement(
        &mut self,
        replacement: super::policy::Replacement,
    ) -> Result<(), ConfigError> {
        self.policy.set_replacement(replacement)
    }

    /// The network changed `k`, the arity limit or the refresh period:
    /// see [`Policy::set_limits`] (more tunnels open at once, fewer drain
    /// one per refresh). Refused, and nothing changes, if they cannot work.
    pub fn set_limits(
        &mut self,
        outgoing: usize,
        max_tunnels: usize,
        refresh: Duration,
        now: Instant,
    ) -> Result<(), ConfigError> {
        self.policy
            .set_limits(outgoing, max_tunnels, refresh, now)?;
        self.drain_actions(now);
        Ok(())
    }

    /// Counters.
    pub fn stats(&self) -> &DriverStats {
        &self.stats
    }

    /// The tunnel on `iface`.
    pub fn tunnel_of(&self, iface: IfaceId) -> Option<TunnelId> {
        self.by_iface.get(&iface).copied()
    }

    /// The interface of `tunnel`, if it is up (also while draining).
    pub fn iface_of(&self, tunnel: TunnelId) -> Option<IfaceId> {
        self.entries.get(&tunnel).and_then(|e| e.iface)
    }

    /// Whether `tunnel` is being drained (it is closing).
    pub fn is_draining(&self, tunnel: TunnelId) -> bool {
        self.entries.get(&tunnel).is_some_and(|e| e.draining)
    }

    /// The peer of `tunnel`.
    pub fn peer_of(&self, tunnel: TunnelId) -> Option<PeerKey> {
        self.entries.get(&tunnel).map(|e| e.peer)
    }

    // ----- inputs -----

    /// The peer DB changed.
    pub fn handle_candidates(&mut self, peers: impl IntoIterator<Item = PeerKey>, now: Instant) {
        self.candidates = peers.into_iter().collect();
        self.refeed = true;
        self.drain_actions(now);
    }

    /// Gives the policy the peer DB without the peers whose tunnel it let
    /// go but the driver still drains (a refresh victim waiting for its
    /// peer, a losing probe): dialling one again now would make that peer
    /// supersede the old tunnel while its routes are still moving.
    fn feed_candidates(&mut self, now: Instant) {
        self.refeed = false;
        let closing: Vec<PeerKey> = self
            .entries
            .values()
            .filter(|e| !e.lan && !policy_holds(e))
            .map(|e| e.peer)
            .collect();
        let peers: Vec<PeerKey> = self
            .candidates
            .iter()
            .filter(|p| !closing.contains(p))
            .copied()
            .collect();
        self.policy.handle_candidates(peers, now);
    }

    /// `peer` dialled us and finished the handshake. Accepted tunnels are
    /// up at once, on the returned interface.
    pub fn handle_incoming(
        &mut self,
        peer: PeerKey,
        now: Instant,
    ) -> Result<(TunnelId, IfaceId), Refusal> {
        let r = self.policy.handle_incoming(peer, now);
        // The policy may close an older tunnel of the same peer first.
        self.drain_actions(now);
        let tunnel = r?;
        let iface = self.alloc_iface(now);
        self.entries.insert(
            tunnel,
            Entry::new(peer, Direction::Incoming, Some(iface), false),
        );
        self.by_iface.insert(iface, tunnel);
        Ok((tunnel, iface))
    }

    /// A dial finished: `Ok` with the peer's handshake RTT, or why not.
    pub fn handle_dialled(
        &mut self,
        tunnel: TunnelId,
        result: Result<Option<Duration>, Failure>,
        now: Instant,
    ) -> Dialled {
        let opening = self.entries.get(&tunnel).is_some_and(|e| e.opening);
        match result {
            Ok(_) if !opening => {
                self.stats.discarded_dials += 1;
                Dialled::Discard
            }
            Ok(rtt) => {
                self.policy.handle_tunnel_up(tunnel, rtt, now);
                let iface = self.alloc_iface(now);
                if let Some(e) = self.entries.get_mut(&tunnel) {
                    e.opening = false;
                    e.iface = Some(iface);
                }
                self.by_iface.insert(iface, tunnel);
                self.drain_actions(now);
                Dialled::Up(iface)
            }
            Err(failure) => {
                if opening {
                    self.entries.remove(&tunnel);
                    self.policy.handle_tunnel_failed(tunnel, failure, now);
                    self.drain_actions(now);
                }
                Dialled::Discard
            }
        }
    }

    /// The connection of `tunnel` ended without us asking (peer closed,
    /// idle timeout, peer revoked).
    pub fn handle_closed(&mut self, tunnel: TunnelId, now: Instant) {
        if self
            .remove(tunnel, None, now)
            .is_some_and(|e| policy_holds(&e))
        {
            self.policy.handle_tunnel_closed(tunnel, now);
        }
        self.drain_actions(now);
    }

    /// The node itself must drop `tunnel` now (its peer was revoked, or it
    /// broke the protocol): closed with `code`.
    pub fn close(&mut self, tunnel: TunnelId, code: u32, reason: &'static str, now: Instant) {
        if self
            .remove(tunnel, Some((code, reason)), now)
            .is_some_and(|e| policy_holds(&e))
        {
            self.policy.handle_tunnel_closed(tunnel, now);
        }
        self.drain_actions(now);
    }

    /// Forgets `tunnel` and emits its `Close`; `None` if it was unknown.
    fn remove(
        &mut self,
        tunnel: TunnelId,
        close: Option<(u32, &'static str)>,
        now: Instant,
    ) -> Option<Entry> {
        let e = self.entries.remove(&tunnel)?;
        if !e.lan && !policy_holds(&e) {
            // Its peer may be dialled again.
            self.refeed = true;
        }
        self.lingering.retain(|(_, t)| *t != tunnel);
        if e.opening {
            self.commands.push_back(Command::CancelDial { tunnel });
            return Some(e);
        }
        if let Some(i) = e.iface {
            self.free_iface(i, now);
        }
        self.commands.push_back(Command::Close {
            tunnel,
            iface: e.iface,
            close,
        });
        Some(e)
    }

    /// A fresh tunnel id for a LAN link (never one of the policy's), for
    /// [`Driver::handle_lan_up`]; a LAN link being dialled has it already.
    pub fn new_lan_id(&mut self) -> TunnelId {
        let tunnel = TunnelId(LAN_ID | self.next_lan);
        self.next_lan += 1;
        tunnel
    }

    /// A LAN link to `peer` is up as `tunnel` (from
    /// [`Driver::new_lan_id`]; LAN discovery: a node heard on a shared
    /// link, dialled or dialling us at a link-local address). It gets an
    /// interface like a tunnel, but the policy never sees it: it does not
    /// count against `k` nor the arity limit and the refresh never replaces
    /// it. `None` if `peer` has a LAN link already (keep that one), or if
    /// `tunnel` is no fresh LAN link id.
    pub fn handle_lan_up(
        &mut self,
        peer: PeerKey,
        tunnel: TunnelId,
        now: Instant,
    ) -> Option<IfaceId> {
        if !is_lan_id(tunnel)
            || self.entries.contains_key(&tunnel)
            || self.entries.values().any(|e| e.lan && e.peer == peer)
        {
            return None;
        }
        let iface = self.alloc_iface(now);
        let mut entry = Entry::new(peer, Direction::Incoming, Some(iface), false);
        entry.lan = true;
        self.entries.insert(tunnel, entry);
        self.by_iface.insert(iface, tunnel);
        Some(iface)
    }

    /// Whether `tunnel` is a LAN link.
    pub fn is_lan(&self, tunnel: TunnelId) -> bool {
        is_lan_id(tunnel)
    }

    /// Peers with a LAN link (the node keeps them out of the policy's
    /// candidates: no random tunnel to a node next door).
    pub fn lan_peers(&self) -> impl Iterator<Item = PeerKey> + '_ {
        self.entries.values().filter(|e| e.lan).map(|e| e.peer)
    }

    /// The peer is draining `tunnel` (its refresh replaced it): drain it
    /// here too; we answer once our routes moved away, and the peer closes
    /// it.
    pub fn handle_peer_drain(&mut self, tunnel: TunnelId) {
        self.drain(tunnel, false);
    }

    /// The peer has nothing routed through `tunnel` any more: if we are
    /// only waiting for that, close it after `linger`.
    pub fn handle_peer_drained(&mut self, tunnel: TunnelId, now: Instant) {
        let Some(e) = self.entries.get_mut(&tunnel) else {
            return;
        };
        e.peer_drained = true;
        if !e.own_drained {
            // Still carrying our routes (a losing probe): handle_routes
            // schedules the close once they moved.
            return;
        }
        let soon = now + self.config.linger;
        for (at, t) in &mut self.lingering {
            if *t == tunnel && *at > soon {
                *at = soon;
            }
        }
    }

    fn drain(&mut self, tunnel: TunnelId, notify_peer: bool) {
        let Some(e) = self.entries.get_mut(&tunnel) else {
            return;
        };
        if let (Some(iface), false) = (e.iface, e.draining) {
            e.draining = true;
            self.stats.drained += 1;
            self.commands.push_back(Command::Drain {
                tunnel,
                iface,
                notify_peer,
            });
        }
    }

    /// Destinations routed through each interface (Babel's
    /// `destinations_per_interface`).
    pub fn handle_routes(&mut self, counts: &BTreeMap<IfaceId, usize>, now: Instant) {
        let mapped: Vec<(TunnelId, u32)> = counts
            .iter()
            .filter_map(|(i, n)| {
                let t = self.by_iface.get(i).filter(|t| !is_lan_id(**t))?;
                Some((*t, u32::try_from(*n).unwrap_or(u32::MAX)))
            })
            .collect();
        // A tunnel the peer drains: answer once nothing of ours uses it.
        let mut probes_drained = Vec::new();
        for (t, e) in &mut self.entries {
            let routed = e.iface.and_then(|i| counts.get(&i)).is_some_and(|n| *n > 0);
            e.routed = routed;
            if e.let_go.is_some() && !e.own_drained && !routed {
                e.own_drained = true;
                probes_drained.push((*t, e.peer_drained));
            }
            if e.draining && e.direction == Direction::Incoming && !e.drained_sent && !routed {
                e.drained_sent = true;
                self.commands
                    .push_back(Command::NotifyDrained { tunnel: *t });
            }
        }
        for (t, peer_drained) in probes_drained {
            self.close_after(t, peer_drained, now);
        }
        self.policy.handle_routes(mapped, now);
        self.drain_actions(now);
    }

    /// Closes `tunnel`, whose routes have moved away, `linger` after the
    /// peer's routes have too (or `peer_wait` without its answer); an
    /// earlier deadline already set stays.
    fn close_after(&mut self, tunnel: TunnelId, peer_drained: bool, now: Instant) {
        let wait = if peer_drained {
            self.config.linger
        } else {
            self.config.peer_wait.max(self.config.linger)
        };
        let at = now + wait;
        match self.lingering.iter_mut().find(|(_, t)| *t == tunnel) {
            Some((old, _)) => *old = (*old).min(at),
            None => self.lingering.push((at, tunnel)),
        }
    }

    /// The RTT measured on `iface`.
    pub fn handle_rtt(&mut self, iface: IfaceId, rtt: Duration, now: Instant) {
        if let Some(t) = self.by_iface.get(&iface).copied()
            && !is_lan_id(t)
        {
            self.policy.handle_rtt(t, rtt, now);
        }
    }

    /// Route metric and direct cost of each destination, for the
    /// shortcut replacement ([`Policy::handle_destinations`]).
    pub fn handle_destinations(
        &mut self,
        destinations: impl IntoIterator<Item = (PeerKey, Duration, Duration)>,
        now: Instant,
    ) {
        self.policy.handle_destinations(destinations, now);
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<TunnelId> = self
            .lingering
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, t)| *t)
            .collect();
        self.lingering.retain(|(at, _)| *at > now);
        for tunnel in due {
            let Some(e) = self.entries.get(&tunnel) else {
                continue;
            };
            let answered = e.peer_drained;
            let why = e
                .let_go
                .unwrap_or((close::REPLACED, "replaced by the tunnel refresh"));
            if self.remove(tunnel, Some(why), now).is_some() {
                if answered {
                    self.stats.closed_drained += 1;
                } else {
                    self.stats.closed_unanswered += 1;
                }
            }
        }
        self.policy.handle_timeout(now);
        self.drain_actions(now);
    }

    // ----- outputs -----

    /// The next command.
    #[must_use]
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`Driver::handle_timeout`] is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lingering
            .iter()
            .map(|(at, _)| *at)
            .chain(self.policy.poll_timeout())
            .min()
    }

    // ----- internals -----

    fn drain_actions(&mut self, now: Instant) {
        loop {
            self.apply_actions(now);
            if !self.refeed {
                return;
            }
            self.feed_candidates(now);
        }
    }

    fn apply_actions(&mut self, now: Instant) {
        while let Some(a) = self.policy.poll_action() {
            match a {
                Action::Open { tunnel, peer } => {
                    self.entries
                        .insert(tunnel, Entry::new(peer, Direction::Outgoing, None, true));
                    self.commands.push_back(Command::Dial { tunnel, peer });
                }
                Action::Drain { tunnel, .. } => {
                    self.check_victim(tunnel);
                    self.drain(tunnel, true);
                }
                Action::Close { tunnel, reason, .. } => self.close_action(tunnel, reason, now),
            }
        }
    }

    /// Records whether the tunnel chosen for replacement was the least
    /// used of the node's own tunnels.
    fn check_victim(&mut self, victim: TunnelId) {
        let own: Vec<_> = self
            .policy
            .tunnels()
            .filter(|t| t.direction == Direction::Outgoing)
            .filter(|t| t.id == victim || t.state == super::policy::TunnelState::Up)
            .collect();
        let Some(v) = own.iter().find(|t| t.id == victim) else {
            return;
        };
        let min = own.iter().map(|t| t.destinations).min();
        self.stats.replacements += 1;
        self.stats.replaced_destinations += u64::from(v.destinations);
        if Some(v.destinations) == min {
            self.stats.replacements_least_used += 1;
        }
    }

    fn close_action(&mut self, tunnel: TunnelId, reason: CloseReason, now: Instant) {
        let Some(e) = self.entries.get_mut(&tunnel) else {
            return;
        };
        if e.draining && e.direction == Direction::Outgoing && e.let_go.is_none() {
            // Our routes moved away. Close once the peer's did too (plus
            // `linger` for packets in flight), or when it never says so.
            e.own_drained = true;
            let peer_drained = e.peer_drained;
            self.refeed = true;
            self.close_after(tunnel, peer_drained, now);
            return;
        }
        let why = match reason {
            CloseReason::Replaced => (close::REPLACED, "replaced by the tunnel refresh"),
            CloseReason::Duplicate => (
                close::DONE,
                "duplicate tunnel (the smaller serial's is kept)",
            ),
            CloseReason::Superseded => (
                close::DONE,
                "superseded by a newer tunnel from the same node",
            ),
            CloseReason::ProbeLost => (close::REPLACED, "probe tunnel not kept"),
        };
        if reason == CloseReason::ProbeLost && e.iface.is_none() {
            self.stats.probes_cancelled += 1;
        }
        let staged = match reason {
            CloseReason::ProbeLost => !e.draining,
            CloseReason::Superseded | CloseReason::Duplicate => true,
            CloseReason::Replaced => false,
        };
        if staged && e.iface.is_some() && e.let_go.is_none() {
            // Up, maybe carrying routes: the staged removal, bounded by the
            // policy's drain timeout.
            if reason == CloseReason::ProbeLost {
                self.stats.probes_drained += 1;
            }
            e.let_go = Some(why);
            // The policy forgot it: its peer is no candidate until it closes.
            self.refeed = true;
            // The peer dialled again: nothing of its own goes through the
            // old tunnel, only our routes are waited for.
            if reason == CloseReason::Superseded {
                e.peer_drained = true;
            }
            let (routed, peer_drained) = (e.routed, e.peer_drained);
            if !routed {
                e.own_drained = true;
            }
            let bound = now + self.policy.config().drain_timeout;
            self.drain(tunnel, reason != CloseReason::Superseded);
            self.lingering.push((bound, tunnel));
            if !routed {
                self.close_after(tunnel, peer_drained, now);
            }
            return;
        }
        self.remove(tunnel, Some(why), now);
    }

    fn alloc_iface(&mut self, now: Instant) -> IfaceId {
        while let Some(&(at, id)) = self.quarantined.front() {
            if at > now {
                break;
            }
            self.quarantined.pop_front();
            self.free.push(id);
        }
        // Lowest free id first: keeps the next-hop table small.
        self.free.sort_by(|a, b| b.cmp(a));
        if let Some(id) = self.free.pop() {
            return id;
        }
        let id = IfaceId(self.next_iface);
        self.next_iface += 1;
        id
    }

    fn free_iface(&mut self, id: IfaceId, now: Instant) {
        self.by_iface.remove(&id);
        self.quarantined
            .push_back((now + self.config.quarantine, id));
    }
}

#[cfg(test)]
mod tests;
