//! The sans-IO half of LAN discovery: which nodes were heard on which
//! link, and when to dial them.
//!
//! Inputs: received beacons ([`Discovery::handle_beacon`]), the state of
//! the LAN links the node made ([`Discovery::handle_link_up`],
//! [`Discovery::handle_link_down`]) and time ([`Discovery::handle_timeout`]).
//! Outputs: [`Discovery::poll_event`] (found, dial, lost) and
//! [`Discovery::poll_timeout`].
//!
//! Who dials: both ends hear each other, so the node with the smaller
//! certificate serial dials at once and the other waits; if no link came
//! after [`DiscoveryConfig::fallback`] (a firewall one way), it dials too.
//! A failed dial is retried with exponential back-off while beacons keep
//! coming; a node not heard for [`DiscoveryConfig::lost_after`] is
//! forgotten.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::{Duration, Instant, SystemTime};

use ipnet::Ipv6Net;
use re6st_dataplane::ratelimit::TokenBucket;

use super::beacon::{BeaconError, BeaconRepr};
use crate::identity::tls::CaVerifier;

/// Timers of discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Beacon period.
    pub interval: Duration,
    /// A node not heard for this long is forgotten.
    pub lost_after: Duration,
    /// The larger-serial end dials after this if no link came.
    pub fallback: Duration,
    /// Longest wait between two dials of a node that keeps failing.
    pub max_backoff: Duration,
}

impl DiscoveryConfig {
    /// Timers derived from a beacon period.
    pub fn with_interval(interval: Duration) -> Self {
        Self {
            interval,
            lost_after: interval * 7 / 2,
            fallback: interval * 3,
            max_backoff: interval * 16,
        }
    }
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self::with_interval(Duration::from_secs(10))
    }
}

/// A node heard on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanPeer {
    /// Its prefix.
    pub prefix: Ipv6Net,
    /// Its certificate serial.
    pub serial: u64,
    /// Its overlay address (what the QUIC handshake must prove).
    pub address: Ipv6Addr,
    /// Where to dial it: its link-local address (with the interface as
    /// scope id) and QUIC port.
    pub addr: SocketAddrV6,
}

/// What the node should know or do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LanEvent {
    /// A node was heard for the first time (or at a new address).
    Found(LanPeer),
    /// Open a LAN link to it, then report up or down.
    Dial(LanPeer),
    /// Not heard for a while: forgotten (an open link stays until QUIC
    /// says it is dead).
    Lost(Ipv6Net),
}

/// Counters of beacons received, by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiscoveryStats {
    /// Verified beacons of other nodes.
    pub accepted: u64,
    /// Our own (multicast loop or two interfaces on one link).
    pub own: u64,
    /// Same bytes as the last verified one from that sender (not
    /// verified again).
    pub repeated: u64,
    /// From a source that is not link-local.
    pub not_link_local: u64,
    /// Malformed.
    pub malformed: u64,
    /// Certificate refused (other network, revoked, expired).
    pub bad_certificate: u64,
    /// Bad signature.
    pub bad_signature: u64,
    /// Timestamp too far from our clock.
    pub stale: u64,
    /// Dropped: too many different beacons from one sender, or too many
    /// signature checks in all.
    pub rate_limited: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Dial at this time unless a link comes first.
    DialAt(Instant),
    /// A dial is out.
    Dialling,
    /// A link is up.
    Linked,
}

#[derive(Debug, Clone)]
struct Entry {
    peer: LanPeer,
    last_seen: Instant,
    state: State,
    failures: u32,
}

/// The last verified beacon of a sender, so that repeats cost a compare
/// instead of a signature check.
#[derive(Debug, Clone)]
struct SenderCache {
    bytes: Vec<u8>,
    prefix: Ipv6Net,
    verified_at: Instant,
}

/// Senders remembered for the repeat cache.
const MAX_SENDERS: usize = 256;
/// Signature checks per second, at most, and their burst: beacons from
/// new senders (a replayed beacon from spoofed addresses costs a check
/// each) beyond it are dropped until the next period. A node's beacon is
/// checked once per re-signing (a minute), so this serves a LAN of about
/// a thousand nodes.
const CHECKS_PER_SECOND: u32 = 20;
const CHECK_BURST: u32 = 64;

/// LAN discovery state of one node.
#[derive(Debug)]
pub struct Discovery {
    me: Ipv6Net,
    serial: u64,
    config: DiscoveryConfig,
    peers: BTreeMap<Ipv6Net, Entry>,
    senders: HashMap<SocketAddrV6, SenderCache>,
    events: VecDeque<LanEvent>,
    stats: DiscoveryStats,
    checks: TokenBucket,
}

impl Discovery {
    /// Discovery for the node `me` with certificate `serial`.
    pub fn new(me: Ipv6Net, serial: u64, config: DiscoveryConfig) -> Self {
        Self {
            me,
            serial,
            config,
            peers: BTreeMap::new(),
            senders: HashMap::new(),
            events: VecDeque::new(),
            stats: DiscoveryStats::default(),
            checks: TokenBucket::new(CHECKS_PER_SECOND, CHECK_BURST),
        }
    }

    /// Our certificate changed serial (renewal).
    pub fn set_serial(&mut self, serial: u64) {
        self.serial = serial;
    }

    /// Counters.
    pub fn stats(&self) -> &DiscoveryStats {
        &self.stats
    }

    /// Nodes heard, with whether a link is up.
    pub fn peers(&self) -> impl Iterator<Item = (&LanPeer, bool)> {
        self.peers
            .values()
            .map(|e| (&e.peer, e.state == State::Linked))
    }

    /// Whether `prefix` was heard on a link.
    pub fn is_lan_peer(&self, prefix: &Ipv6Net) -> bool {
        self.peers.contains_key(prefix)
    }

    /// A beacon `bytes` from `from` (the sender's link-local address with
    /// the receiving interface as scope id), checked with `verifier` at
    /// `wall` (the wall clock, for the certificate and timestamp).
    pub fn handle_beacon(
        &mut self,
        from: SocketAddrV6,
        bytes: &[u8],
        verifier: &CaVerifier,
        wall: SystemTime,
        now: Instant,
    ) {
        if !from.ip().is_unicast_link_local() {
            self.stats.not_link_local += 1;
            return;
        }
        if let Some(c) = self.senders.get(&from)
            && c.bytes == bytes
            && now.saturating_duration_since(c.verified_at) < self.config.lost_after
        {
            self.stats.repeated += 1;
            let prefix = c.prefix;
            if let Some(e) = self.peers.get_mut(&prefix) {
                e.last_seen = now;
            }
            return;
        }
        if let Some(c) = self.senders.get(&from)
            && now.saturating_duration_since(c.verified_at) < self.config.interval / 2
        {
            // A different beacon from the same sender within half a
            // period: a node re-signs its beacon once a minute, so this is
            // noise or an attack on our CPU; skip the signature check.
            self.stats.rate_limited += 1;
            return;
        }
        let beacon = match BeaconRepr::parse(bytes) {
            Ok(b) => b,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        if !self.checks.try_take(now) {
            self.stats.rate_limited += 1;
            return;
        }
        let cert = match beacon.verify(verifier, wall) {
            Ok(c) => c,
            Err(e) => {
                match e {
                    BeaconError::BadSignature => self.stats.bad_signature += 1,
                    BeaconError::Stale { .. } => self.stats.stale += 1,
                    BeaconError::Certificate(_) => self.stats.bad_certificate += 1,
                    _ => self.stats.malformed += 1,
                }
                tracing::debug!(%from, error = %e, "LAN beacon dropped");
                return;
            }
        };
        if self.senders.len() >= MAX_SENDERS && !self.senders.contains_key(&from) {
            let oldest = self
                .senders
                .iter()
                .min_by_key(|(_, c)| c.verified_at)
                .map(|(a, _)| *a);
            if let Some(a) = oldest {
                self.senders.remove(&a);
            }
        }
        self.senders.insert(
            from,
            SenderCache {
                bytes: bytes.to_vec(),
                prefix: cert.prefix,
                verified_at: now,
            },
        );
        if cert.prefix == self.me {
            self.stats.own += 1;
            return;
        }
        self.stats.accepted += 1;
        let peer = LanPeer {
            prefix: cert.prefix,
            serial: cert.serial,
            address: cert.address,
            addr: SocketAddrV6::new(*from.ip(), beacon.port, 0, from.scope_id()),
        };
        let first_dial = self.first_dial(peer.serial, now);
        match self.peers.get_mut(&cert.prefix) {
            Some(e) => {
                e.last_seen = now;
                if e.peer != peer {
                    e.peer = peer;
                    self.events.push_back(LanEvent::Found(peer));
                }
            }
            None => {
                tracing::info!(prefix = %peer.prefix, at = %peer.addr, "LAN neighbour found");
                self.peers.insert(
                    cert.prefix,
                    Entry {
                        peer,
                        last_seen: now,
                        state: State::DialAt(first_dial),
                        failures: 0,
                    },
                );
                self.events.push_back(LanEvent::Found(peer));
                self.handle_timeout(now);
            }
        }
    }

    /// When to dial a newly heard node: at once if our serial is smaller,
    /// else after the fallback delay.
    fn first_dial(&self, serial: u64, now: Instant) -> Instant {
        if self.serial < serial {
            now
        } else {
            now + self.config.fallback
        }
    }

    /// A LAN link to `prefix` is up (ours or theirs).
    pub fn handle_link_up(&mut self, prefix: &Ipv6Net) {
        if let Some(e) = self.peers.get_mut(prefix) {
            e.state = State::Linked;
            e.failures = 0;
        }
    }

    /// The LAN link to `prefix` went down, or our dial failed (`failed`).
    pub fn handle_link_down(&mut self, prefix: &Ipv6Net, failed: bool, now: Instant) {
        let (interval, max) = (self.config.interval, self.config.max_backoff);
        let first = self
            .peers
            .get(prefix)
            .map(|e| self.first_dial(e.peer.serial, now));
        if let (Some(e), Some(first)) = (self.peers.get_mut(prefix), first) {
            if failed {
                e.failures = e.failures.saturating_add(1);
                let backoff = interval.saturating_mul(1u32 << e.failures.min(16)).min(max);
                e.state = State::DialAt(now + backoff);
            } else {
                e.state = State::DialAt(first.max(now + interval / 2));
            }
        }
    }

    /// Runs the clocks: dials that are due, nodes that went quiet.
    pub fn handle_timeout(&mut self, now: Instant) {
        let lost_after = self.config.lost_after;
        let mut lost = Vec::new();
        for (prefix, e) in &mut self.peers {
            if now.saturating_duration_since(e.last_seen) >= lost_after {
                lost.push(*prefix);
                continue;
            }
            if let State::DialAt(t) = e.state
                && t <= now
            {
                e.state = State::Dialling;
                self.events.push_back(LanEvent::Dial(e.peer));
            }
        }
        for prefix in lost {
            self.peers.remove(&prefix);
            self.senders.retain(|_, c| c.prefix != prefix);
            tracing::info!(%prefix, "LAN neighbour lost");
            self.events.push_back(LanEvent::Lost(prefix));
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<LanEvent> {
        self.events.pop_front()
    }

    /// When [`Discovery::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(|e| {
                let dial = match e.state {
                    State::DialAt(t) => Some(t),
                    _ => None,
                };
                [Some(e.last_seen + self.config.lost_after), dial]
            })
            .flatten()
            .min()
    }
}

#[cfg(test)]
#[path = "discovery_tests.rs"]
mod tests;
