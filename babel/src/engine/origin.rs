//! Route-origin authentication: who may originate a prefix, checked on
//! every finite Update before it becomes a route.
//!
//! Plain Babel trusts every neighbour with every route: any router may
//! announce any prefix under any router-id, at any seqno. The engine
//! leaves the *policy* to its caller through [`OriginAuth`] (the node
//! checks certificates; this crate knows nothing of them) and does the
//! *mechanics*:
//!
//! * every finite Update is a [`Claim`]: "router-id R originated prefix P
//!   at seqno S". Before it is used, [`OriginAuth::check`] says whether the
//!   claim holds, given the Origin Proof the Update carried, if any
//!   (sub-TLV 112, see [`crate::wire::OriginProof`]). A rejected Update is
//!   dropped and counted per reason in [`OriginCounters`]; one that needs a
//!   proof it did not carry is dropped too, and the sender is asked for
//!   the proof (a Route Request with Proof Wanted, at most once per prefix
//!   and neighbour per resend delay).
//! * an Update carrying our own router-id with a seqno newer than ours
//!   (the catch-up of [`super::seqno`]) moves our seqno only if its claim
//!   checks: a neighbour cannot push our seqno forward on its say-so.
//! * proofs travel once per claim and interface: an announcement carries
//!   [`OriginAuth::proof`] the first time its claim goes out on an
//!   interface (new seqno, new interface, new router-id), and again when
//!   the neighbour asks. In the steady state the seqno does not move and
//!   no proof is sent at all.
//! * when the caller's trust changes (a revoked certificate, a withdrawn
//!   authorisation), [`super::Engine::recheck_origins`] drops every route
//!   whose claim no longer holds ([`OriginAuth::holds`]).
//!
//! Retractions carry no proof and need none: a retraction only withdraws
//! the sender's own route. Metrics are not covered: a relay adds its link
//! cost, so an origin cannot sign them (see docs/security.md).

use std::net::IpAddr;
use std::time::Instant;

use ipnet::IpNet;
use serde::Serialize;

use super::IfaceId;
use crate::wire::{OriginProof, RouterId};

/// What a finite Update claims: `router_id` originated `prefix` at `seqno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Claim {
    /// The announced prefix (host bits cleared).
    pub prefix: IpNet,
    /// The origin's router-id.
    pub router_id: RouterId,
    /// The origin's seqno.
    pub seqno: u16,
}

/// The neighbour an Update came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sender {
    /// The interface it arrived on.
    pub iface: IfaceId,
    /// The neighbour's address.
    pub address: IpAddr,
}

/// What [`OriginAuth::check`] makes of a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The origin may announce the prefix at this seqno.
    Valid,
    /// It may, but only a proof can tell and the Update carried none (its
    /// seqno is newer than any checked so far): dropped, the proof is
    /// asked for.
    NeedProof,
    /// It may not: dropped and counted.
    Rejected(Rejection),
}

/// Why a claim was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Rejection {
    /// No key is known for the router-id (the caller may fetch one and ask
    /// again).
    UnknownOrigin,
    /// The origin is known but may not announce this prefix.
    NotAuthorised,
    /// The proof does not verify.
    BadProof,
    /// The proof is too old (or dated too far ahead) to be trusted: it
    /// could be a replay from before the origin's seqno went round.
    StaleProof,
    /// The sender sent more proofs than the caller checks per second, or
    /// the origin announces more prefixes than the caller keeps.
    Throttled,
}

/// The caller's origin policy (see the module docs). The node implements it
/// with certificates; [`NoOriginAuth`] is plain Babel.
pub trait OriginAuth {
    /// Whether origins are checked at all. When `false` the engine skips
    /// every other method and keeps no per-interface proof state: plain
    /// Babel.
    fn enabled(&self) -> bool {
        true
    }

    /// Checks a claim received from `from`, with the proof its Update
    /// carried. Called for every finite Update, so it must be cheap when
    /// the claim was checked before (a cache lookup); a proof is worth
    /// verifying once per claim.
    fn check(
        &mut self,
        claim: &Claim,
        proof: Option<&OriginProof>,
        from: Sender,
        now: Instant,
    ) -> Verdict;

    /// Whether a claim accepted earlier still holds with what the caller
    /// knows now (certificates, revocations, authorisations), without a
    /// proof. Used by [`super::Engine::recheck_origins`].
    fn holds(&mut self, claim: &Claim, now: Instant) -> bool;

    /// The proof to send with an announcement of `claim`: made for our own
    /// prefixes, kept from the check for relayed ones. `None`: send
    /// without (the receiver will ask).
    fn proof(&mut self, claim: &Claim, now: Instant) -> Option<OriginProof>;
}

/// Plain Babel: every origin is trusted, nothing is proved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoOriginAuth;

impl OriginAuth for NoOriginAuth {
    fn enabled(&self) -> bool {
        false
    }

    fn check(&mut self, _: &Claim, _: Option<&OriginProof>, _: Sender, _: Instant) -> Verdict {
        Verdict::Valid
    }

    fn holds(&mut self, _: &Claim, _: Instant) -> bool {
        true
    }

    fn proof(&mut self, _: &Claim, _: Instant) -> Option<OriginProof> {
        None
    }
}

/// Updates dropped by origin authentication, per reason, and what it cost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct OriginCounters {
    /// Claims whose router-id has no known key.
    pub unknown_origin: u64,
    /// Claims for a prefix the origin may not announce.
    pub not_authorised: u64,
    /// Claims whose proof does not verify.
    pub bad_proof: u64,
    /// Claims whose proof is too old or dated ahead.
    pub stale_proof: u64,
    /// Claims refused because the sender or the origin is over its budget.
    pub throttled: u64,
    /// Claims of a new seqno that came without a proof.
    pub missing_proof: u64,
    /// Route Requests with Proof Wanted we sent.
    pub proofs_asked: u64,
    /// Proofs asked for by neighbours (Route Requests with Proof Wanted).
    pub proofs_requested: u64,
    /// Announcements that carried a proof.
    pub proofs_sent: u64,
    /// Of the claims above, those carrying our own router-id with a seqno
    /// newer than ours: our seqno stayed put.
    pub own_unproven: u64,
    /// Routes dropped by [`super::Engine::recheck_origins`].
    pub routes_rechecked_out: u64,
}

impl OriginCounters {
    /// Counts one rejection.
    pub(crate) fn count(&mut self, r: Rejection) {
        match r {
            Rejection::UnknownOrigin => self.unknown_origin += 1,
            Rejection::NotAuthorised => self.not_authorised += 1,
            Rejection::BadProof => self.bad_proof += 1,
            Rejection::StaleProof => self.stale_proof += 1,
            Rejection::Throttled => self.throttled += 1,
        }
    }

    /// Every rejected or unproven claim.
    pub fn dropped(&self) -> u64 {
        self.unknown_origin
            + self.not_authorised
            + self.bad_proof
            + self.stale_proof
            + self.throttled
            + self.missing_proof
    }
}
