//! What the shortcut replacement needs from NodeCore: before each refresh
//! decision, every destination (a peer whose prefix has a selected Babel
//! route) with its route metric and the cost a direct tunnel to it would
//! have, both in Babel's units, so that the gain the policy ranks is the
//! metric Babel would save.
//!
//! The direct RTT is the RTT of our tunnel to the peer when we have one;
//! otherwise a measure kept in a bounded cache, refreshed by probing a
//! random sample of peers each refresh period ([`Command::ProbeRtt`],
//! answered by [`NodeCore::handle_probe_rtt`]). A measure expires after
//! [`CACHE_REFRESHES`] periods; a failed probe forgets the peer (a direct
//! tunnel to it would probably fail too). Destinations with no estimate
//! are not reported. A shell that cannot probe says so once and gets no
//! more probes: only the tunnels' RTTs are reported then.
//!
//! Units: a tunnel costs `rxcost` plus an RTT penalty linear between
//! `rtt-min` and `rtt-max` (`babel_config`), so one metric unit is worth
//! `(rtt-max - rtt-min) / max-penalty` of RTT; metrics and costs are given
//! to the policy as durations at that rate.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv6Net};
use rand::seq::SliceRandom;
use re6st_babel::wire::INFINITY;

use super::command::{Command, ProbeError};
use super::tunnels::key_of;
use super::{NodeCore, Now};
use crate::node::config::babel_config;
use crate::tunnels::driver::PeerKey;
use crate::tunnels::policy::Replacement;

/// Peers probed per refresh period, at most.
pub const PROBES_PER_REFRESH: usize = 32;

/// Direct RTTs kept, at most (the oldest measure goes first).
pub const CACHE_MAX: usize = 1024;

/// Refresh periods a measured RTT stays valid.
pub const CACHE_REFRESHES: u32 = 20;

/// Counters of the probes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProbeStats {
    /// Probes asked of the shell.
    pub sent: u64,
    /// Answered with an RTT.
    pub measured: u64,
    /// Answered with no RTT (lost).
    pub lost: u64,
    /// Answers for a peer not being probed (late, or never asked): ignored.
    pub unexpected: u64,
    /// Destinations reported at the latest refresh, and how many of them
    /// had their estimate from a probe (the others from a tunnel).
    pub reported: u64,
    /// See `reported`.
    pub reported_probed: u64,
}

/// The direct RTT cache and the probes out.
#[derive(Debug, Default)]
pub(super) struct DirectRtts {
    /// Measured RTT and when, by peer prefix.
    cache: BTreeMap<Ipv6Net, (Duration, Instant)>,
    /// Peers of the current round not answered yet.
    pending: BTreeSet<Ipv6Net>,
    /// The shell answered that it cannot probe.
    unsupported: bool,
    stats: ProbeStats,
}

impl DirectRtts {
    fn insert(&mut self, peer: Ipv6Net, rtt: Duration, now: Instant) {
        if !self.cache.contains_key(&peer)
            && self.cache.len() >= CACHE_MAX
            && let Some(oldest) = self
                .cache
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(p, _)| *p)
        {
            self.cache.remove(&oldest);
        }
        self.cache.insert(peer, (rtt, now));
    }

    fn expire(&mut self, max_age: Duration, now: Instant) {
        self.cache
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < max_age);
    }
}

impl NodeCore {
    /// The counters of the direct RTT probes.
    pub fn probe_stats(&self) -> &ProbeStats {
        &self.direct.stats
    }

    /// The RTT of a [`Command::ProbeRtt`] to `peer`, or why there is none.
    pub fn handle_probe_rtt(
        &mut self,
        peer: Ipv6Net,
        result: Result<Duration, ProbeError>,
        now: Now,
    ) {
        let now = self.clamp(now);
        match result {
            Err(ProbeError::Unsupported) => {
                if !self.direct.unsupported {
                    tracing::warn!(
                        "this node cannot probe direct RTTs: the shortcut replacement \
                         sees only its tunnels' RTTs"
                    );
                }
                self.direct.unsupported = true;
                self.direct.pending.clear();
            }
            _ if !self.direct.pending.remove(&peer) => self.direct.stats.unexpected += 1,
            Ok(rtt) => {
                self.direct.stats.measured += 1;
                self.direct.insert(peer, rtt, now.mono);
            }
            Err(ProbeError::Lost) => {
                self.direct.stats.lost += 1;
                self.direct.cache.remove(&peer);
            }
        }
        self.settle(now);
    }

    /// With the shortcut replacement, when the policy's refresh is due:
    /// reports the destinations, then probes the next sample of peers
    /// (measures for the refreshes to come).
    pub(super) fn before_refresh(&mut self, now: Now) {
        let policy = self.driver.policy();
        if !matches!(policy.config().replacement, Replacement::Shortcut { .. })
            || policy.next_refresh() > now.mono
        {
            return;
        }
        let refresh = policy.config().refresh;
        self.direct
            .expire(refresh.saturating_mul(CACHE_REFRESHES), now.mono);
        let destinations = self.shortcut_destinations(now);
        self.driver.handle_destinations(destinations, now.mono);
        self.probe_round();
    }

    /// Every destination with an estimate: (peer, route metric, direct
    /// cost), as durations (see the module docs).
    fn shortcut_destinations(&mut self, now: Now) -> Vec<(PeerKey, Duration, Duration)> {
        let babel = babel_config(&self.network);
        let rtt = babel.tunnel.rtt;
        let unit_ns = if rtt.max_penalty == 0 {
            // No RTT in the metric: every tunnel costs the same.
            1_000_000
        } else {
            let span = rtt.max.saturating_sub(rtt.min).as_nanos() / u128::from(rtt.max_penalty);
            u64::try_from(span).unwrap_or(u64::MAX).max(1)
        };
        let as_time = |metric: u16| Duration::from_nanos(unit_ns.saturating_mul(u64::from(metric)));
        let cost_of = |d: Duration| {
            let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
            re6st_babel::metric::link_cost(
                babel.tunnel.rxcost,
                babel.tunnel.rxcost,
                rtt.penalty(us),
            )
        };
        // Our tunnels' RTTs, as the policy gets them.
        let rtts = self.tunnel_rtts();
        let mut tunnel_rtt: BTreeMap<Ipv6Net, (PeerKey, Duration)> = BTreeMap::new();
        for (t, up) in &self.tunnels {
            if up.suspected {
                continue;
            }
            let r = rtts.get(t).copied().unwrap_or(up.rtt);
            tunnel_rtt.insert(up.peer.prefix, (key_of(&up.peer), r));
        }
        let (mut out, mut probed) = (Vec::new(), 0u64);
        for r in self.engine.routes(now.mono) {
            let IpNet::V6(prefix) = r.prefix else {
                continue;
            };
            if !r.selected || r.local || r.metric == INFINITY || prefix == self.cert.prefix {
                continue;
            }
            let (key, direct) = if let Some(&(key, rtt)) = tunnel_rtt.get(&prefix) {
                (key, rtt)
            } else if let (Some(e), Some(&(rtt, _))) =
                (self.db.get(&prefix), self.direct.cache.get(&prefix))
            {
                probed += 1;
                let key = PeerKey {
                    serial: e.serial,
                    prefix,
                };
                (key, rtt)
            } else {
                continue;
            };
            out.push((key, as_time(r.metric), as_time(cost_of(direct))));
        }
        self.direct.stats.reported = out.len() as u64;
        self.direct.stats.reported_probed = probed;
        out
    }

    /// Asks for the RTT of up to [`PROBES_PER_REFRESH`] random peers of
    /// the DB we have no tunnel with, those without a measure first.
    fn probe_round(&mut self) {
        // Answers still out belong to the previous round: forgotten.
        self.direct.pending.clear();
        if self.direct.unsupported {
            return;
        }
        let linked: BTreeSet<Ipv6Net> = self.tunnels.values().map(|u| u.peer.prefix).collect();
        let (mut unknown, mut known): (Vec<_>, Vec<_>) = self
            .db
            .iter()
            .filter(|e| !e.addresses.is_empty() && !linked.contains(&e.prefix))
            .map(|e| e.prefix)
            .partition(|p| !self.direct.cache.contains_key(p));
        unknown.shuffle(&mut self.rng);
        known.shuffle(&mut self.rng);
        let picked: Vec<Ipv6Net> = unknown
            .into_iter()
            .chain(known)
            .take(PROBES_PER_REFRESH)
            .collect();
        for peer in picked {
            let addresses = self
                .db
                .get(&peer)
                .map(|e| e.addresses.clone())
                .unwrap_or_default();
            self.direct.pending.insert(peer);
            self.direct.stats.sent += 1;
            self.push(Command::ProbeRtt { peer, addresses });
        }
    }
}
