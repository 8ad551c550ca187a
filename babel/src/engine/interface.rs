//! Interfaces (RFC 8966 §3.1): what the caller plugs the engine into.
//!
//! A tunnel is one QUIC connection: exactly one neighbour, packets travel as
//! datagrams whose size limit can change. A LAN is a multicast link
//! (ff02::1:6, port 6696) with any number of neighbours.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::config::{Config, LinkParams};

/// A caller-chosen interface id. The node uses the same number as the
/// dataplane's next-hop id, so a FIB entry maps straight to a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct IfaceId(pub u32);

impl std::fmt::Display for IfaceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "if{}", self.0)
    }
}

/// What kind of link an interface is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterfaceKind {
    /// A point-to-point tunnel with exactly one neighbour. Costed as babeld
    /// `type tunnel` (96 + RTT penalty); one Hello is enough to consider
    /// the link up, since the transport already proved it bidirectional.
    /// IHUs are sent with AE 0 (no address), as RFC 8966 allows on such
    /// links, and every transmit has `dst: None`.
    Tunnel,
    /// A multicast link with several neighbours. `address` is our own
    /// link-local address on it: IHUs carrying another address are for
    /// other routers and are ignored.
    Lan {
        /// Our address on the link.
        address: IpAddr,
    },
}

/// Full dumps an interface sends at once in answer to wildcard Route
/// Requests, and the pace after that burst: a neighbour flooding requests
/// gets one dump per interval, never one per request.
const DUMP_BURST: u32 = 4;
const DUMP_INTERVAL: Duration = Duration::from_secs(1);

/// Smallest packet budget accepted: room for the largest single message
/// (an Update with a full IPv6 prefix and its Router-Id) plus a Hello.
pub const MIN_BUDGET: usize = 128;

/// One interface.
#[derive(Clone, Debug)]
pub(crate) struct Interface {
    pub(crate) kind: InterfaceKind,
    pub(crate) budget: usize,
    /// Seqno of the last multicast Hello sent.
    pub(crate) hello_seqno: u16,
    pub(crate) hellos_sent: u64,
    pub(crate) hello_due: Instant,
    /// Added to the cost of every neighbour on it
    /// ([`super::Engine::set_interface_cost`]).
    pub(crate) extra_cost: u16,
    pub(crate) update_due: Instant,
    /// The pace of full dumps answering requests (GCRA: the theoretical
    /// arrival time of the next one), and the one scheduled, if any.
    dump_tat: Instant,
    dump_pending: Option<Instant>,
}

impl Interface {
    pub(crate) fn new(kind: InterfaceKind, budget: usize, hello_seqno: u16, now: Instant) -> Self {
        Interface {
            kind,
            budget,
            hello_seqno,
            hellos_sent: 0,
            hello_due: now,
            extra_cost: 0,
            update_due: now + Duration::from_secs(1),
            dump_tat: now,
            dump_pending: None,
        }
    }

    /// When to send the full dump a wildcard Route Request received at
    /// `now` asks for: after `delay` within the burst, later beyond it.
    /// `None` when a dump answering an earlier request is still to go: it
    /// answers this one too.
    pub(crate) fn dump_slot(&mut self, delay: Duration, now: Instant) -> Option<Instant> {
        if self.dump_pending.is_some_and(|t| t > now) {
            return None;
        }
        let tat = self.dump_tat.max(now);
        let tolerance = DUMP_INTERVAL * (DUMP_BURST - 1);
        let at = if tat <= now + tolerance {
            now + delay
        } else {
            tat - tolerance
        };
        self.dump_tat = tat + DUMP_INTERVAL;
        self.dump_pending = Some(at);
        Some(at)
    }

    pub(crate) fn is_tunnel(&self) -> bool {
        matches!(self.kind, InterfaceKind::Tunnel)
    }

    pub(crate) fn params<'a>(&self, config: &'a Config) -> &'a LinkParams {
        match self.kind {
            InterfaceKind::Tunnel => &config.tunnel,
            InterfaceKind::Lan { .. } => &config.lan,
        }
    }

    /// Whether an IHU addressed to `address` (None: AE 0) is for us.
    pub(crate) fn ihu_is_for_us(&self, address: Option<IpAddr>) -> bool {
        match (self.kind, address) {
            (_, None) | (InterfaceKind::Tunnel, _) => true,
            (InterfaceKind::Lan { address: ours }, Some(a)) => a == ours,
        }
    }

    /// The address to put in an IHU for `neighbour`.
    pub(crate) fn ihu_address(&self, neighbour: IpAddr) -> Option<IpAddr> {
        match self.kind {
            InterfaceKind::Tunnel => None,
            InterfaceKind::Lan { .. } => Some(neighbour),
        }
    }

    /// The destination of a message meant for one neighbour only: on a
    /// tunnel there is only one, so it is the link itself.
    pub(crate) fn unicast_dst(&self, neighbour: IpAddr) -> Option<IpAddr> {
        match self.kind {
            InterfaceKind::Tunnel => None,
            InterfaceKind::Lan { .. } => Some(neighbour),
        }
    }

    pub(crate) fn next_hello_seqno(&mut self) -> u16 {
        self.hello_seqno = self.hello_seqno.wrapping_add(1);
        self.hellos_sent += 1;
        self.hello_seqno
    }
}
