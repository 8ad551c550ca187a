//! The node's route-origin policy ([`Origins`]): which certificate may
//! originate which prefix in Babel, the keys it has learnt to check origin
//! proofs with, and the claims it has checked.
//!
//! A claim (prefix P, router-id R, seqno S) holds when:
//! 1. R is the router-id of a certificate we hold ([`super::origin::router_id`]
//!    of its prefix): keys come from the certificates of tunnel peers
//!    (checked by the TLS handshake), of signed peer announcements, and of
//!    certificates fetched from a neighbour that relayed the claim (checked
//!    against the CA and the CRL by the caller before [`Origins::learn`]);
//! 2. P lies inside that certificate's prefix or IPv4 subnet, or, for a prefix outside
//!    the overlay (`::/0`, a site, IPv4), inside a prefix the signed
//!    network configuration grants it ([`super::GatewayGrant`]). Overlay
//!    space is never granted: only its owner announces it;
//! 3. S is at most the newest seqno already checked for (P, R) while the
//!    proof of that newest seqno is still fresh, or the Update carries the
//!    origin's valid proof of S, signed less than
//!    [`OriginsConfig::proof_lifetime`] ago. A proof is verified once per
//!    claim; older seqnos need none while the newest is fresh (Babel's
//!    seqno ordering makes a replayed old claim unfeasible wherever a newer
//!    one was seen). The lifetime stops a proof kept until the 16-bit
//!    seqno went round, or until the origin came back with a lower seqno
//!    (restarted without its state): once the newest proof is stale, the
//!    cache vouches for nothing, and the next fresh proof, of whatever
//!    seqno, becomes the newest.
//!
//! Our own proofs are signed when first announced and kept; the node moves
//! its seqno every half lifetime ([`Origins::poll_refresh`]) so that a
//! fresh proof of its newest seqno is always about.
//!
//! Everything is bounded: keys, checked claims, claims per origin (so an
//! origin cannot fill the route table with more-specifics of its own
//! prefix), router-ids waiting for a key (in all, and per neighbour's
//! interface), and the proofs each neighbour
//! may make us verify (a token bucket per interface: a neighbour sending
//! bad proofs costs at most that many signature checks per second).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnet::{IpNet, Ipv6Net};
use re6st_babel::engine::{Claim, IfaceId, OriginAuth, Rejection, Sender, Verdict};
use re6st_babel::metric::seqno_ge;
use re6st_babel::wire::{OriginProof, RouterId};
use serde::Serialize;

use super::origin::{router_id, sign, signed_at, verify};
use super::{GatewayGrant, NodeCert, NodeKey, unix_secs};

/// Bounds and budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginsConfig {
    /// Whether origins are checked at all; off, the engine runs plain
    /// Babel (no proofs, no certificate fetches, no re-signing). Only to
    /// measure what the checks cost: off, any member can hijack any
    /// prefix.
    pub enabled: bool,
    /// Origins (certificates) held.
    pub max_origins: usize,
    /// Checked claims held (one per prefix and router-id).
    pub max_claims: usize,
    /// Prefixes one origin may have checked claims for.
    pub prefixes_per_origin: usize,
    /// Proofs one neighbour may make us verify at once...
    pub verify_burst: u32,
    /// ...and per second after that.
    pub verify_rate: u32,
    /// Router-ids waiting for a certificate.
    pub max_wanted: usize,
    /// Of those, claimed by one interface's neighbour (one neighbour
    /// making up router-ids cannot crowd out the others' origins).
    pub wanted_per_iface: usize,
    /// How long to wait for a certificate asked for before asking again,
    /// and how many times.
    pub want_retry: Duration,
    /// See `want_retry`.
    pub want_tries: u8,
    /// Proofs signed longer ago are refused; the node moves its seqno (and
    /// signs afresh) every half of it. It must stay well below the time
    /// the seqno takes to go half-way round at its fastest (32,768 times
    /// the engine's `seqno_bump_interval`, 9 hours at 1 s).
    pub proof_lifetime: Duration,
    /// Proofs dated further ahead than this are refused (clock skew
    /// between nodes).
    pub max_skew: Duration,
}

impl Default for OriginsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_origins: 1 << 16,
            max_claims: 1 << 16,
            prefixes_per_origin: 16,
            verify_burst: 4096,
            verify_rate: 200,
            max_wanted: 4096,
            wanted_per_iface: 256,
            want_retry: Duration::from_secs(5),
            want_tries: 5,
            proof_lifetime: Duration::from_secs(2 * 3600),
            max_skew: Duration::from_secs(600),
        }
    }
}

/// Counters, for `re6st status` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OriginStats {
    /// Origins whose certificate we hold.
    pub origins: usize,
    /// Claims checked and held.
    pub claims: usize,
    /// Proofs verified (good or bad).
    pub verified: u64,
    /// Proofs that did not verify.
    pub bad_proofs: u64,
    /// Proofs refused unchecked: too old, or dated ahead.
    pub stale_proofs: u64,
    /// Seqno moves asked of the engine to sign afresh.
    pub refreshes: u64,
    /// Proofs of our own made.
    pub signed: u64,
    /// Certificates learnt (new origins).
    pub learnt: u64,
    /// Certificates refused: another prefix with the same router-id, or
    /// the table full.
    pub refused: u64,
    /// Origins forgotten (revoked, expired).
    pub forgotten: u64,
    /// Certificates asked of neighbours.
    pub certs_asked: u64,
    /// Claims refused because a bound was reached.
    pub over_bounds: u64,
}

/// What [`Origins::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learnt {
    /// A new origin.
    New,
    /// Known already (or replaced by a newer certificate of the same
    /// prefix).
    Known,
    /// Refused (see [`OriginStats::refused`]).
    Refused,
}

/// Proofs verified for one (prefix, router-id): the newest seqno, and the
/// last few proofs with their signing time (relays pass them on while
/// fresh; a relay whose route still has an older seqno can prove it).
#[derive(Debug, Clone)]
struct Checked {
    /// The newest seqno proved, and until when (monotonic: a jump of the
    /// wall clock neither ages nor refreshes it) its proof is fresh:
    /// seqnos up to it need no proof until then.
    newest: u16,
    newest_until: Instant,
    proofs: VecDeque<(u16, u32, OriginProof)>,
}

const PROOFS_KEPT: usize = 4;

/// A router-id waiting for its certificate.
#[derive(Debug, Clone)]
struct Wanted {
    iface: IfaceId,
    /// Prefixes claimed for it (a few, to ask for again once it is known).
    prefixes: Vec<IpNet>,
    asked: Option<Instant>,
    tries: u8,
}

const WANTED_PREFIXES: usize = 8;

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Budget {
    tokens: f64,
    at: Instant,
}

/// The node's origin policy; see the module docs.
#[derive(Debug)]
pub struct Origins {
    config: OriginsConfig,
    network: Ipv6Net,
    grants: Vec<GatewayGrant>,
    me: RouterId,
    cert: NodeCert,
    key: Arc<NodeKey>,
    /// Our proofs, per prefix: the newest, with its signing time.
    own: BTreeMap<IpNet, (u16, u32, OriginProof)>,
    /// The wall clock at a monotonic instant (proofs are dated).
    clock: (Instant, SystemTime),
    /// When our seqno is next moved to sign afresh.
    next_refresh: Instant,
    keys: BTreeMap<RouterId, Arc<NodeCert>>,
    checked: BTreeMap<(IpNet, RouterId), Checked>,
    per_origin: BTreeMap<RouterId, usize>,
    wanted: BTreeMap<RouterId, Wanted>,
    budgets: BTreeMap<IfaceId, Budget>,
    stats: OriginStats,
}

impl Origins {
    /// The policy of the node holding `cert` (and `key`) in the overlay
    /// `network`, with the network configuration's `grants`; `clock` is
    /// the wall clock at a monotonic instant ([`Origins::set_clock`]).
    pub fn new(
        config: OriginsConfig,
        network: Ipv6Net,
        grants: Vec<GatewayGrant>,
        cert: NodeCert,
        key: Arc<NodeKey>,
        clock: (Instant, SystemTime),
    ) -> Self {
        let me = router_id(cert.prefix);
        let mut o = Self {
            config,
            network,
            grants,
            me,
            cert: cert.clone(),
            key,
            own: BTreeMap::new(),
            clock,
            next_refresh: clock.0 + config.proof_lifetime / 2,
            keys: BTreeMap::new(),
            checked: BTreeMap::new(),
            per_origin: BTreeMap::new(),
            wanted: BTreeMap::new(),
            budgets: BTreeMap::new(),
            stats: OriginStats::default(),
        };
        o.learn(&cert);
        o
    }

    /// Our router-id.
    pub fn router_id(&self) -> RouterId {
        self.me
    }

    /// The wall clock at monotonic `now` (given with every input: proofs
    /// are dated with it and their age checked against it).
    pub fn set_clock(&mut self, now: Instant, wall: SystemTime) {
        self.clock = (now, wall);
    }

    /// The wall clock at `now`, in Unix seconds.
    fn wall_secs(&self, now: Instant) -> u64 {
        let (at, wall) = self.clock;
        let wall = match now.checked_duration_since(at) {
            Some(d) => wall + d,
            None => wall - at.duration_since(now),
        };
        unix_secs(wall)
    }

    /// The monotonic instant at which a proof signed at `at` goes stale.
    fn fresh_until(&self, at: u32, now: Instant) -> Instant {
        let end = u64::from(at) + self.config.proof_lifetime.as_secs();
        let left = end.saturating_sub(self.wall_secs(now));
        now.checked_add(Duration::from_secs(left)).unwrap_or(now)
    }

    /// Whether a proof signed at `at` is too old, or dated too far ahead,
    /// at `now`.
    fn stale(&self, at: u32, now: Instant) -> bool {
        let now = self.wall_secs(now);
        let at = u64::from(at);
        at + self.config.proof_lifetime.as_secs() < now || at > now + self.config.max_skew.as_secs()
    }

    /// Whether the node should move its Babel seqno now (the engine's
    /// `bump_seqno`) so that its routes are proved afresh: every half
    /// proof lifetime.
    pub fn poll_refresh(&mut self, now: Instant) -> bool {
        if now < self.next_refresh {
            return false;
        }
        self.next_refresh = now + self.config.proof_lifetime / 2;
        if !self.config.enabled {
            return false;
        }
        self.stats.refreshes += 1;
        true
    }

    /// When [`Origins::poll_refresh`] next says yes.
    pub fn refresh_deadline(&self) -> Instant {
        self.next_refresh
    }

    /// Our renewed certificate (same key, same prefix).
    pub fn set_identity(&mut self, cert: NodeCert) {
        self.learn(&cert);
        self.cert = cert;
    }

    /// Takes the certificate of an origin, which the caller checked against
    /// the CA and the CRL. A certificate of the same prefix replaces an
    /// older one (a renewal); one whose router-id is another prefix's is
    /// refused.
    pub fn learn(&mut self, cert: &NodeCert) -> Learnt {
        let rid = router_id(cert.prefix);
        let learnt = match self.keys.get(&rid) {
            Some(known) if known.prefix != cert.prefix => {
                tracing::warn!(
                    prefix = %cert.prefix,
                    other = %known.prefix,
                    "two prefixes with one router-id: the second is refused"
                );
                self.stats.refused += 1;
                return Learnt::Refused;
            }
            Some(known) if known.serial >= cert.serial => return Learnt::Known,
            Some(_) => Learnt::Known,
            None if self.keys.len() >= self.config.max_origins => {
                self.stats.refused += 1;
                return Learnt::Refused;
            }
            None => {
                self.stats.learnt += 1;
                Learnt::New
            }
        };
        self.keys.insert(rid, Arc::new(cert.clone()));
        self.stats.origins = self.keys.len();
        learnt
    }

    /// The certificate of router-id `rid`, if held (to answer a
    /// neighbour's request).
    pub fn cert_of(&self, rid: RouterId) -> Option<&NodeCert> {
        self.keys.get(&rid).map(|c| c.as_ref())
    }

    /// Forgets the origins whose certificate `gone` says is no longer good
    /// (revoked, expired), with their claims; returns how many. Then call
    /// the engine's `recheck_origins`.
    pub fn forget(&mut self, gone: impl Fn(&NodeCert) -> bool) -> usize {
        let rids: Vec<RouterId> = self
            .keys
            .iter()
            .filter(|(rid, c)| **rid != self.me && gone(c))
            .map(|(rid, _)| *rid)
            .collect();
        for rid in &rids {
            self.keys.remove(rid);
            self.per_origin.remove(rid);
            self.wanted.remove(rid);
        }
        if !rids.is_empty() {
            self.checked.retain(|(_, rid), _| !rids.contains(rid));
        }
        self.stats.forgotten += rids.len() as u64;
        self.stats.origins = self.keys.len();
        self.stats.claims = self.checked.len();
        rids.len()
    }

    /// The network configuration's gateway authorisations; `true` if they
    /// changed (if some were withdrawn, call the engine's
    /// `recheck_origins`).
    pub fn set_grants(&mut self, grants: Vec<GatewayGrant>) -> bool {
        if grants == self.grants {
            return false;
        }
        self.grants = grants;
        true
    }

    /// The gateway authorisations in force.
    pub fn grants(&self) -> &[GatewayGrant] {
        &self.grants
    }

    /// Whether the node holding `cert` may originate `prefix`.
    pub fn authorised(&self, prefix: &IpNet, cert: &NodeCert) -> bool {
        if IpNet::V6(cert.prefix).contains(prefix)
            || cert
                .ipv4
                .is_some_and(|v4| IpNet::V4(v4.trunc()).contains(prefix))
        {
            return true;
        }
        if let IpNet::V6(p) = prefix
            && self.network.contains(p)
        {
            return false;
        }
        self.grants
            .iter()
            .any(|g| g.node == cert.prefix && g.prefix.contains(prefix))
    }

    /// Forgets checked claims `keep` says the engine no longer holds a
    /// route for (periodic housekeeping).
    pub fn retain_claims(&mut self, keep: impl Fn(&IpNet, RouterId) -> bool) {
        self.checked.retain(|(p, rid), _| keep(p, *rid));
        self.per_origin.clear();
        for (_, rid) in self.checked.keys() {
            *self.per_origin.entry(*rid).or_default() += 1;
        }
        self.stats.claims = self.checked.len();
    }

    /// Forgets the verification budget of an interface that went away.
    pub fn forget_interface(&mut self, iface: IfaceId) {
        self.budgets.remove(&iface);
    }

    /// The router-ids to ask a certificate for, per interface (each at most
    /// `want_tries` times, `want_retry` apart).
    pub fn poll_wanted(&mut self, now: Instant) -> Vec<(IfaceId, Vec<RouterId>)> {
        let mut out: BTreeMap<IfaceId, Vec<RouterId>> = BTreeMap::new();
        let (retry, tries) = (self.config.want_retry, self.config.want_tries);
        self.wanted
            .retain(|_, w| w.tries < tries || w.asked.is_some_and(|t| now < t + retry));
        for (rid, w) in &mut self.wanted {
            if w.asked.is_some_and(|t| now < t + retry) || w.tries >= tries {
                continue;
            }
            w.asked = Some(now);
            w.tries += 1;
            out.entry(w.iface).or_default().push(*rid);
        }
        self.stats.certs_asked += out.values().map(|v| v.len() as u64).sum::<u64>();
        out.into_iter().collect()
    }

    /// After [`Origins::learn`] of `rid`'s certificate: the interface its
    /// claims came from and the prefixes claimed, to ask for again.
    pub fn take_wanted(&mut self, rid: RouterId) -> Option<(IfaceId, Vec<IpNet>)> {
        self.wanted.remove(&rid).map(|w| (w.iface, w.prefixes))
    }

    /// Whether claims of `rid` wait for its certificate (a certificate a
    /// neighbour sends unasked is not worth checking).
    pub fn is_wanted(&self, rid: RouterId) -> bool {
        self.wanted.contains_key(&rid)
    }

    /// The counters.
    pub fn stats(&self) -> &OriginStats {
        &self.stats
    }

    fn want(&mut self, rid: RouterId, prefix: IpNet, iface: IfaceId) {
        if let Some(w) = self.wanted.get_mut(&rid) {
            if w.prefixes.len() < WANTED_PREFIXES && !w.prefixes.contains(&prefix) {
                w.prefixes.push(prefix);
            }
            return;
        }
        let per_iface = self.config.wanted_per_iface;
        if self.wanted.len() >= self.config.max_wanted
            || (self.wanted.len() >= per_iface
                && self.wanted.values().filter(|w| w.iface == iface).count() >= per_iface)
        {
            self.stats.over_bounds += 1;
            return;
        }
        self.wanted.insert(
            rid,
            Wanted {
                iface,
                prefixes: vec![prefix],
                asked: None,
                tries: 0,
            },
        );
    }

    /// Takes one verification from `iface`'s budget.
    fn spend(&mut self, iface: IfaceId, now: Instant) -> bool {
        let (burst, rate) = (
            f64::from(self.config.verify_burst),
            f64::from(self.config.verify_rate),
        );
        if !self.budgets.contains_key(&iface) && self.budgets.len() >= self.config.max_wanted {
            // Interfaces come and go; the full ones are forgotten.
            self.budgets.retain(|_, b| b.tokens < burst);
        }
        let b = self.budgets.entry(iface).or_insert(Budget {
            tokens: burst,
            at: now,
        });
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + dt * rate).min(burst);
        b.at = now;
        if b.tokens < 1.0 {
            return false;
        }
        b.tokens -= 1.0;
        true
    }

    /// Records a verified proof, signed at `at`.
    fn remember(&mut self, claim: &Claim, at: u32, proof: &OriginProof, now: Instant) -> bool {
        let key = (claim.prefix, claim.router_id);
        let until = self.fresh_until(at, now);
        if let Some(c) = self.checked.get_mut(&key) {
            if c.newest_until <= now || seqno_ge(claim.seqno, c.newest) {
                c.newest = claim.seqno;
                c.newest_until = until;
            }
            c.proofs.retain(|(s, _, _)| *s != claim.seqno);
            if c.proofs.len() >= PROOFS_KEPT {
                c.proofs.pop_front();
            }
            c.proofs.push_back((claim.seqno, at, proof.clone()));
            return true;
        }
        let count = self.per_origin.get(&claim.router_id).copied().unwrap_or(0);
        if count >= self.config.prefixes_per_origin || self.checked.len() >= self.config.max_claims
        {
            self.stats.over_bounds += 1;
            return false;
        }
        self.per_origin.insert(claim.router_id, count + 1);
        self.checked.insert(
            key,
            Checked {
                newest: claim.seqno,
                newest_until: until,
                proofs: VecDeque::from([(claim.seqno, at, proof.clone())]),
            },
        );
        self.stats.claims = self.checked.len();
        true
    }
}

impl OriginAuth for Origins {
    fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn check(
        &mut self,
        claim: &Claim,
        proof: Option<&OriginProof>,
        from: Sender,
        now: Instant,
    ) -> Verdict {
        let Some(cert) = self.keys.get(&claim.router_id).cloned() else {
            self.want(claim.router_id, claim.prefix, from.iface);
            return Verdict::Rejected(Rejection::UnknownOrigin);
        };
        if !self.authorised(&claim.prefix, &cert) {
            return Verdict::Rejected(Rejection::NotAuthorised);
        }
        if let Some(c) = self.checked.get(&(claim.prefix, claim.router_id))
            && seqno_ge(c.newest, claim.seqno)
            && now < c.newest_until
        {
            return Verdict::Valid;
        }
        let Some(proof) = proof else {
            return Verdict::NeedProof;
        };
        let Some(at) = signed_at(proof) else {
            self.stats.bad_proofs += 1;
            return Verdict::Rejected(Rejection::BadProof);
        };
        if self.stale(at, now) {
            self.stats.stale_proofs += 1;
            return Verdict::Rejected(Rejection::StaleProof);
        }
        if !self.spend(from.iface, now) {
            return Verdict::Rejected(Rejection::Throttled);
        }
        self.stats.verified += 1;
        if !verify(&cert.public_key, claim, proof) {
            self.stats.bad_proofs += 1;
            return Verdict::Rejected(Rejection::BadProof);
        }
        if !self.remember(claim, at, proof, now) {
            return Verdict::Rejected(Rejection::Throttled);
        }
        Verdict::Valid
    }

    fn holds(&mut self, claim: &Claim, _now: Instant) -> bool {
        self.keys
            .get(&claim.router_id)
            .is_some_and(|c| self.authorised(&claim.prefix, c))
    }

    fn proof(&mut self, claim: &Claim, now: Instant) -> Option<OriginProof> {
        if claim.router_id == self.me {
            let half = self.config.proof_lifetime.as_secs() / 2;
            let wall = self.wall_secs(now);
            if let Some((s, at, p)) = self.own.get(&claim.prefix)
                && *s == claim.seqno
                && u64::from(*at) + half >= wall
            {
                return Some(p.clone());
            }
            let at = u32::try_from(wall).unwrap_or(u32::MAX);
            let p = match sign(&self.key, self.cert.public_key.kind, claim, at) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(prefix = %claim.prefix, error = %e, "cannot sign our route");
                    return None;
                }
            };
            self.stats.signed += 1;
            self.own.insert(claim.prefix, (claim.seqno, at, p.clone()));
            return Some(p);
        }
        let (_, at, p) = self
            .checked
            .get(&(claim.prefix, claim.router_id))?
            .proofs
            .iter()
            .find(|(s, _, _)| *s == claim.seqno)?;
        (!self.stale(*at, now)).then(|| p.clone())
    }
}

#[cfg(test)]
mod tests;
