//! Origin proofs in and out: the engine's side of [`super::origin`].
//!
//! The table remembers, per interface, which claim's proof last went out
//! for each prefix (so a proof travels once per claim and interface), and
//! when each neighbour was last asked for a proof of a prefix (so a
//! neighbour that cannot prove a claim is asked once per resend delay, not
//! once per Update).

use std::collections::BTreeMap;
use std::time::Instant;

use ipnet::IpNet;
use tracing::trace;

use super::input::PacketCtx;
use super::neighbour::NeighbourId;
use super::origin::{Claim, OriginAuth, Rejection, Sender, Verdict};
use super::{Engine, IfaceId};
use crate::wire::{Message, OriginProof, RouteRequestRepr, RouterId};

/// Proofs sent and asked for.
#[derive(Debug, Default)]
pub(crate) struct ProofTable {
    /// Per interface, per prefix: the (router-id, seqno) whose proof went
    /// out there last.
    sent: BTreeMap<IfaceId, BTreeMap<IpNet, (RouterId, u16)>>,
    /// (neighbour, prefix) asked for a proof, and until when it is not
    /// asked again.
    asked: BTreeMap<(NeighbourId, IpNet), Instant>,
}

impl ProofTable {
    /// Whether the proof of `claim` already went out on `iface`.
    fn was_sent(&self, iface: IfaceId, claim: &Claim) -> bool {
        self.sent
            .get(&iface)
            .and_then(|m| m.get(&claim.prefix))
            .is_some_and(|s| *s == (claim.router_id, claim.seqno))
    }

    /// Records that the proof of `claim` went out on `iface`. A map that
    /// reached `bound` entries is started afresh (proofs are sent again:
    /// correct, only wasteful, and never reached with `bound` the route
    /// table's).
    fn record(&mut self, iface: IfaceId, claim: &Claim, bound: usize) {
        let m = self.sent.entry(iface).or_default();
        if m.len() >= bound && !m.contains_key(&claim.prefix) {
            m.clear();
        }
        m.insert(claim.prefix, (claim.router_id, claim.seqno));
    }

    /// The next announcement of `prefix` on `iface` (all prefixes if
    /// `None`) carries its proof again.
    pub(crate) fn forget(&mut self, iface: IfaceId, prefix: Option<IpNet>) {
        match prefix {
            Some(p) => {
                if let Some(m) = self.sent.get_mut(&iface) {
                    m.remove(&p);
                }
            }
            None => {
                self.sent.remove(&iface);
            }
        }
    }

    pub(crate) fn drop_interface(&mut self, iface: IfaceId) {
        self.sent.remove(&iface);
    }

    /// Whether `n` may be asked for a proof of `prefix` now; if so, not
    /// again before `until`. The table holds at most `bound` entries:
    /// expired ones are purged when it is full, and if none is, nobody is
    /// asked.
    fn may_ask(
        &mut self,
        n: NeighbourId,
        prefix: IpNet,
        until: Instant,
        bound: usize,
        now: Instant,
    ) -> bool {
        if self.asked.get(&(n, prefix)).is_some_and(|t| *t > now) {
            return false;
        }
        if self.asked.len() >= bound {
            self.asked.retain(|_, t| *t > now);
            if self.asked.len() >= bound {
                return false;
            }
        }
        self.asked.insert((n, prefix), until);
        true
    }
}

impl<A: OriginAuth> Engine<A> {
    /// The origin check of a finite Update (see [`super::origin`]). `false`:
    /// the Update is dropped (counted; the proof asked for if missing).
    pub(super) fn origin_ok(
        &mut self,
        ctx: &PacketCtx,
        claim: &Claim,
        proof: Option<&OriginProof>,
        now: Instant,
    ) -> bool {
        if !self.auth.enabled() {
            return true;
        }
        let from = Sender {
            iface: ctx.iface,
            address: ctx.from,
        };
        match self.auth.check(claim, proof, from, now) {
            Verdict::Valid => true,
            Verdict::NeedProof => {
                self.counters.origin.missing_proof += 1;
                self.ask_proof(ctx, claim.prefix, now);
                false
            }
            Verdict::Rejected(why) => {
                trace!(prefix = %claim.prefix, neighbour = %ctx.from, ?why, "origin rejected");
                self.counters.origin.count(why);
                if why == Rejection::UnknownOrigin && proof.is_none() {
                    // The caller fetches the origin's key now; asking for
                    // the proof at once (a few ms behind that fetch) has
                    // the proof arrive just after the key, not one round
                    // trip later.
                    self.ask_proof(ctx, claim.prefix, now);
                }
                false
            }
        }
    }

    /// Asks the neighbour of `ctx` for the proof of `prefix` (a unicast
    /// Route Request with Proof Wanted), unless it was asked lately.
    fn ask_proof(&mut self, ctx: &PacketCtx, prefix: IpNet, now: Instant) {
        let until = now + self.config.resend_delay;
        let bound = self.config.max_routes;
        if !self
            .proofs
            .may_ask(ctx.neighbour, prefix, until, bound, now)
        {
            return;
        }
        let Some(dst) = self
            .interfaces
            .get(&ctx.iface)
            .map(|i| i.unicast_dst(ctx.from))
        else {
            return;
        };
        self.counters.origin.proofs_asked += 1;
        let msg = Message::RouteRequest(RouteRequestRepr {
            prefix: Some(prefix),
            proof_wanted: true,
        });
        let at = now + self.config.urgent_delay;
        self.output.buffer((ctx.iface, dst), at).messages.push(msg);
    }

    /// The proof to attach to an announcement of `claim` on `iface`: only
    /// if it did not go out there yet.
    pub(super) fn proof_to_send(
        &mut self,
        iface: IfaceId,
        claim: &Claim,
        now: Instant,
    ) -> Option<OriginProof> {
        if !self.auth.enabled() || self.proofs.was_sent(iface, claim) {
            return None;
        }
        let proof = self.auth.proof(claim, now)?;
        self.proofs.record(iface, claim, self.config.max_routes);
        self.counters.origin.proofs_sent += 1;
        Some(proof)
    }

    /// The proof of `claim`, whether or not it went out already (catch-up
    /// hints).
    pub(super) fn proof_anyway(&mut self, claim: &Claim, now: Instant) -> Option<OriginProof> {
        if !self.auth.enabled() {
            return None;
        }
        self.auth.proof(claim, now)
    }

    /// Drops every route whose claim no longer holds for the origin policy
    /// (call after a certificate was revoked or an authorisation
    /// withdrawn); alternatives are selected and announced at once.
    pub fn recheck_origins(&mut self, now: Instant) {
        if !self.auth.enabled() {
            return;
        }
        let mut gone = Vec::new();
        for (prefix, e) in self.routes.iter() {
            for r in &e.routes {
                let claim = Claim {
                    prefix: *prefix,
                    router_id: r.router_id,
                    seqno: r.seqno,
                };
                if !self.auth.holds(&claim, now) {
                    gone.push((*prefix, r.neighbour));
                }
            }
        }
        self.counters.origin.routes_rechecked_out += gone.len() as u64;
        let mut touched: Vec<IpNet> = Vec::new();
        for (prefix, n) in gone {
            self.routes.remove_route(&prefix, n);
            if touched.last() != Some(&prefix) {
                touched.push(prefix);
            }
        }
        for p in touched {
            self.reselect_prefix(p, now);
        }
        self.finish();
    }

    /// Asks the neighbours on `iface` for their route to `prefix` with its
    /// proof: the caller has learnt what it needed to check a claim it
    /// had to drop (the origin's key), and wants it again now rather than
    /// at the next periodic update.
    pub fn request_proof(&mut self, iface: IfaceId, prefix: IpNet, now: Instant) {
        if !self.interfaces.contains_key(&iface) {
            return;
        }
        self.counters.origin.proofs_asked += 1;
        let msg = Message::RouteRequest(RouteRequestRepr {
            prefix: Some(prefix.trunc()),
            proof_wanted: true,
        });
        let at = now + self.config.urgent_delay;
        self.output.buffer((iface, None), at).messages.push(msg);
        self.finish();
    }

    /// The origin policy.
    pub fn origin_auth(&self) -> &A {
        &self.auth
    }

    /// The origin policy, to change what it trusts (then call
    /// [`Engine::recheck_origins`] if trust was withdrawn).
    pub fn origin_auth_mut(&mut self) -> &mut A {
        &mut self.auth
    }
}
