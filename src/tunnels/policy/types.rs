//! The vocabulary of the policy: tunnel ids, the actions it asks for and the
//! reasons it gives.

use std::fmt;
use std::time::Duration;

/// What the policy needs of a peer's identity. `Ord` **must** be the order of
/// the peers' certificate serials: when two nodes open tunnels to each other
/// at the same time, both keep the one opened by the node whose serial is
/// smaller, and they agree only if they compare identities the same way.
/// The node uses its (serial, prefix) pair; the simulator uses node indices.
pub trait PeerId: Clone + Ord + fmt::Debug {}
impl<T: Clone + Ord + fmt::Debug> PeerId for T {}

/// A tunnel, named by the policy. Ids are never reused by one policy, so a
/// late event about a tunnel that is gone cannot hit another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TunnelId(pub u64);

impl fmt::Display for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// Who opened a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// This node opened it (one of its `k`); only these are ever replaced.
    Outgoing,
    /// The peer opened it; it counts toward the maximum arity.
    Incoming,
}

/// Where a tunnel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelState {
    /// Dialled, not up yet (outgoing only).
    Opening,
    /// Carrying traffic.
    Up,
    /// Being removed: its routes are moving to other tunnels; it is closed
    /// once no destination is routed through it any more.
    Draining,
}

/// What the policy asks its driver to do. The driver applies each action and
/// reports the outcome through the `handle_*` inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    /// Dial `peer`; then report [`super::Policy::handle_tunnel_up`] or
    /// [`super::Policy::handle_tunnel_failed`] for `tunnel`.
    Open {
        /// The id of the new tunnel.
        tunnel: TunnelId,
        /// Whom to dial.
        peer: P,
    },
    /// Move the routes away from `tunnel` (Babel: raise the neighbour's cost
    /// so that other routes win) but keep it open. The policy emits `Close`
    /// once no destination is routed through it (reported by
    /// [`super::Policy::handle_routes`]) or after `drain_timeout`.
    Drain {
        /// The tunnel to drain.
        tunnel: TunnelId,
        /// The node at its other end.
        peer: P,
    },
    /// Close `tunnel` now. The policy has already forgotten it: the driver
    /// need not report it closed.
    Close {
        /// The tunnel to close.
        tunnel: TunnelId,
        /// The node at its other end.
        peer: P,
        /// Why, for the logs and counters.
        reason: CloseReason,
    },
}

/// Why the policy closes a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// It was drained after being chosen for replacement.
    Replaced,
    /// The same two nodes have another tunnel and this is the one to drop
    /// (the survivor is the one opened by the smaller serial).
    Duplicate,
    /// The peer dialled again while its old tunnel was still open: the old
    /// one belongs to a previous run of the peer.
    Superseded,
    /// A best-of-n probe that was not the fastest.
    ProbeLost,
}

/// Why an incoming tunnel is refused. The dialler gets the reason and tries
/// another peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The node already has its maximum number of tunnels.
    #[error("full: {tunnels} tunnels of at most {max}")]
    Full {
        /// Tunnels open now.
        tunnels: usize,
        /// The maximum arity.
        max: usize,
    },
    /// The two nodes already have a tunnel (or are opening one) and the rule
    /// keeps the other one.
    #[error("a tunnel between us already exists")]
    Duplicate,
    /// A node does not tunnel to itself.
    #[error("refusing a tunnel to myself")]
    Loopback,
}

/// Why an outgoing tunnel did not come up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// The peer answered and refused.
    #[error("refused by the peer: {0}")]
    Refused(Refusal),
    /// No answer, a handshake or certificate failure: the peer is unusable
    /// for now.
    #[error("peer unreachable")]
    Unreachable,
}

/// A read-only view of one tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelInfo<P> {
    /// Its id.
    pub id: TunnelId,
    /// The node at the other end.
    pub peer: P,
    /// Who opened it.
    pub direction: Direction,
    /// Its state.
    pub state: TunnelState,
    /// Destinations routed through it, as last reported.
    pub destinations: u32,
    /// Its RTT, as last reported.
    pub rtt: Option<Duration>,
    /// A best-of-n candidate not chosen yet (not one of the `k`).
    pub probe: bool,
}

/// How one best-of-n refresh ([`super::Replacement::LeastUsedBestOf`])
/// was decided: what an operator (and a test) needs to see that the kept
/// peer is the fastest of those probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRound<P> {
    /// The probes that were up when the round was decided, with the RTT
    /// they were ranked by, in the order they were opened.
    pub up: Vec<(P, Option<Duration>)>,
    /// Probes still dialling at the deadline (cancelled). Probes that
    /// failed before are not listed.
    pub cancelled: usize,
    /// The probe kept: the lowest RTT of `up` (`None` if none came up).
    pub kept: Option<P>,
}

/// Counters, for the control API and the simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PolicyStats {
    /// Tunnels the policy asked to open (probes included).
    pub opened: u64,
    /// Incoming tunnels accepted.
    pub accepted: u64,
    /// Incoming tunnels refused because the node was full.
    pub refused_full: u64,
    /// Incoming tunnels refused as duplicates (or loopback).
    pub refused_duplicate: u64,
    /// Own tunnels that failed to come up.
    pub failed: u64,
    /// Tunnels closed under us (peer gone, idle timeout).
    pub lost: u64,
    /// Tunnels chosen for replacement at a refresh.
    pub replaced: u64,
    /// Sum of the destinations routed through each replaced tunnel when it
    /// was chosen (divide by `replaced` for the report's 1.85 figure).
    pub replaced_destinations: u64,
    /// Own tunnels drained without a replacement because the network
    /// lowered `k` ([`super::Policy::set_limits`]); not in `replaced`.
    pub surplus_drained: u64,
    /// Duplicate tunnels closed by the serial rule.
    pub duplicates_closed: u64,
    /// Best-of-n refreshes decided.
    pub probe_rounds: u64,
    /// Own tunnels opened to a shortcut destination
    /// ([`super::Replacement::Shortcut`]).
    pub shortcuts_opened: u64,
    /// Events about a tunnel id the policy does not know (a driver bug or a
    /// late event); they are ignored.
    pub unknown_tunnel: u64,
}
