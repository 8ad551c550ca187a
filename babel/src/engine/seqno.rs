//! Our own seqno (RFC 8966 §3.2.1, §3.8.1.2): when it moves, and how a
//! router that lost it catches up.
//!
//! It moves forward only, for two reasons:
//! * a seqno request for one of our prefixes asks for a newer seqno than
//!   ours: +1, never more for one request (a MUST of §3.8.1.2; babeld's
//!   `update_myseqno`);
//! * an Update carrying our router-id with a seqno strictly newer than ours:
//!   only we issue our seqnos, so we issued it before a restart that lost it
//!   (the persisted value was missing or stale). We continue from it + 1 at
//!   once, and every prefix of ours is announced again. With origin
//!   authentication ([`super::origin`]) only if the claim checks, that is
//!   if it carries our own proof of that seqno: otherwise any neighbour
//!   could push our seqno half-way round the circle, where every router
//!   would take our next announcements for old ones.
//!
//! Bumps in answer to requests are paced: at most one per
//! `Config::seqno_bump_interval`; a request within it is answered at its
//! end, with an Update of every prefix of ours everywhere.
//!
//! An Update carrying our router-id at our seqno or an older one is an echo
//! of our own announcement, which a neighbour without split horizon sends
//! back to us (split horizon is optional, §3.7.4): it is ignored, as babeld
//! ignores every Update carrying its own router-id. So in steady state the
//! seqno does not move at all.
//!
//! Catching up needs someone to tell the restarted router the seqno it lost.
//! Seqno requests carry it, but may move the seqno by one only; echoes carry
//! it, but split horizon stops them on tunnels. So a router that receives an
//! Update whose seqno is older than its own feasibility distance for that
//! source (the source is behind what we already announced for it) answers
//! the sender with what it knows: its current route if it announces one on
//! that interface, otherwise a retraction carrying the source's router-id
//! and our FD's seqno. If the sender is the source, it catches up within
//! one round trip; any other sender learns nothing it would not get from us
//! anyway (a retraction from a router that does not announce the prefix
//! there, or the update it announces there).

use std::time::Instant;

use ipnet::IpNet;

use super::input::PacketCtx;
use super::origin::{Claim, OriginAuth};
use super::{Engine, Event};
use crate::metric::seqno_gt;
use crate::wire::{INFINITY, Message, OriginProof, RouterId, UpdateRepr};

impl<A: OriginAuth> Engine<A> {
    /// An Update for `prefix` carrying our own router-id: an echo, ignored,
    /// unless its seqno is strictly newer than ours (see the module docs).
    pub(super) fn handle_own_update(
        &mut self,
        ctx: &PacketCtx,
        prefix: IpNet,
        seqno: u16,
        proof: Option<&OriginProof>,
        now: Instant,
    ) {
        self.counters.own_router_id += 1;
        if !self.xroutes.contains(&prefix) || !seqno_gt(seqno, self.seqno) {
            return;
        }
        let claim = Claim {
            prefix,
            router_id: self.router_id,
            seqno,
        };
        if self.auth.enabled() && !self.origin_ok(ctx, &claim, proof, now) {
            self.counters.origin.own_unproven += 1;
            return;
        }
        self.counters.seqno_catch_ups += 1;
        self.set_seqno(seqno.wrapping_add(1), now);
        let ours: Vec<IpNet> = self.xroutes.iter().map(|(p, _)| p).collect();
        for p in ours {
            self.schedule_update(p, true, None, now);
        }
    }

    /// A seqno request for `prefix`, one of ours, from the neighbour of
    /// `ctx`: +1 if it asks for a newer seqno of ours, then an urgent
    /// Update on its interface (RFC 8966 §3.8.1.2). A request for another
    /// router-id gets the Update alone (the router-ids differ).
    pub(super) fn answer_own_request(
        &mut self,
        ctx: &PacketCtx,
        prefix: IpNet,
        rid: RouterId,
        seqno: u16,
        now: Instant,
    ) {
        if rid == self.router_id && seqno_gt(seqno, self.seqno) {
            let next = self.last_bump.map(|t| t + self.config.seqno_bump_interval);
            if next.is_some_and(|t| t > now) {
                self.counters.bumps_deferred += 1;
                let wanted = match self.bump_wanted {
                    Some(w) if seqno_gt(w, seqno) => w,
                    _ => seqno,
                };
                self.bump_wanted = Some(wanted);
            } else {
                self.set_seqno(self.seqno.wrapping_add(1), now);
            }
        }
        self.schedule_update(prefix, true, Some(ctx.iface), now);
    }

    /// When a put-off bump is due.
    pub(super) fn bump_deadline(&self) -> Option<Instant> {
        self.bump_wanted?;
        Some(self.last_bump? + self.config.seqno_bump_interval)
    }

    /// Makes the bump put off by [`Self::answer_own_request`], if still
    /// wanted, and announces every prefix of ours everywhere.
    pub(super) fn bump_timer(&mut self, now: Instant) {
        if self.bump_deadline().is_none_or(|t| t > now) {
            return;
        }
        let Some(wanted) = self.bump_wanted.take() else {
            return;
        };
        if !seqno_gt(wanted, self.seqno) {
            return;
        }
        self.set_seqno(self.seqno.wrapping_add(1), now);
        let ours: Vec<IpNet> = self.xroutes.iter().map(|(p, _)| p).collect();
        for p in ours {
            self.schedule_update(p, true, None, now);
        }
    }

    /// The neighbour of `ctx` announced `rid` for `prefix` at `seqno`. If
    /// that is older than our FD's seqno for the source, tell the neighbour
    /// what we know (see the module docs): it may be the source itself,
    /// restarted without its seqno.
    pub(super) fn send_catch_up_hint(
        &mut self,
        ctx: &PacketCtx,
        prefix: IpNet,
        rid: RouterId,
        seqno: u16,
        now: Instant,
    ) {
        let Some(fd) = self.sources.get(prefix, rid, now).copied() else {
            return;
        };
        if !seqno_gt(fd.seqno, seqno) {
            return;
        }
        self.counters.catch_up_hints += 1;
        let Some(ifc) = self.interfaces.get(&ctx.iface) else {
            return;
        };
        let split_horizon = ifc.params(&self.config).split_horizon;
        let dst = ifc.unicast_dst(ctx.from);
        let announced_here = self
            .routes
            .selected(&prefix)
            .filter(|r| r.metric < INFINITY)
            .and_then(|r| self.neighbours.get(r.neighbour))
            .is_some_and(|nb| !split_horizon || nb.iface != ctx.iface);
        if announced_here {
            // With its proof, even if it went out there before: the
            // source needs it to trust the seqno.
            self.proofs.forget(ctx.iface, Some(prefix));
            self.schedule_update(prefix, true, Some(ctx.iface), now);
            return;
        }
        let at = now + self.config.urgent_delay;
        let claim = Claim {
            prefix,
            router_id: rid,
            seqno: fd.seqno,
        };
        let hint = Message::Update(UpdateRepr {
            prefix: Some(prefix),
            interval: self.config.update_interval,
            seqno: fd.seqno,
            metric: INFINITY,
            router_id: Some(rid),
            next_hop: None,
            proof: self.proof_anyway(&claim, now),
        });
        self.output.buffer((ctx.iface, dst), at).messages.push(hint);
    }

    /// Moves our seqno forward by one and announces every prefix of ours
    /// everywhere. The caller does it when its origin proofs need signing
    /// afresh (they expire, see [`super::origin`]); it is paced like the
    /// bumps requests ask for, and none is made within
    /// `Config::seqno_bump_interval` of the last.
    pub fn bump_seqno(&mut self, now: Instant) {
        if self
            .last_bump
            .is_some_and(|t| t + self.config.seqno_bump_interval > now)
        {
            self.bump_wanted = Some(self.seqno.wrapping_add(1));
            return;
        }
        self.set_seqno(self.seqno.wrapping_add(1), now);
        let ours: Vec<IpNet> = self.xroutes.iter().map(|(p, _)| p).collect();
        for p in ours {
            self.schedule_update(p, true, None, now);
        }
        self.finish();
    }

    /// Our seqno changed: tell the caller to persist it.
    pub(super) fn set_seqno(&mut self, seqno: u16, now: Instant) {
        self.seqno = seqno;
        self.last_bump = Some(now);
        self.counters.seqno_bumps += 1;
        self.events.push_back(Event::SeqnoChanged(seqno));
    }
}
