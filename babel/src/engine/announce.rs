//! From table changes to messages (RFC 8966 §3.7 updates, §3.8 requests;
//! babeld `send_triggered_update`, `route_lost`, `send_unfeasible_request`).
//!
//! Everything here only fills output buffers; `flush` encodes them.

use std::time::Instant;

use ipnet::IpNet;
use tracing::debug;

use super::neighbour::NeighbourId;
use super::origin::OriginAuth;
use super::resend::{PendingRequest, RequestTarget};
use super::route::{SelectParams, Selected, Selection};
use super::{Engine, IfaceId};
use crate::metric::{seqno_ge, seqno_gt};
use crate::wire::{INFINITY, Message, RouteRequestRepr, RouterId, SeqnoRequestRepr};

impl<A: OriginAuth> Engine<A> {
    fn select_params(&self) -> SelectParams {
        SelectParams {
            half_life: self.config.smoothing_half_life,
            hysteresis: self.config.hysteresis,
            jump: self.config.major_worsening,
        }
    }

    /// Runs route selection for `prefix` and announces the outcome.
    pub(super) fn reselect_prefix(&mut self, prefix: IpNet, now: Instant) {
        let sel = if self.xroutes.contains(&prefix) {
            self.routes.clear_selection(&prefix)
        } else {
            let params = self.select_params();
            self.routes.select(&prefix, &self.sources, params, now)
        };
        if sel.held_back {
            self.reselect.insert(prefix);
            if self.reselect_at.is_none() {
                self.reselect_at = Some(now + self.config.reselect_interval);
            }
        } else if !self.reselect.is_empty() {
            self.reselect.remove(&prefix);
        }
        self.selection_changed(prefix, sel, now);
        if sel.new.is_none() && !self.xroutes.contains(&prefix) {
            self.check_starvation(prefix, sel.old, now);
        }
        self.routes.prune(&prefix);
    }

    /// Triggered updates and requests after a selection (babeld
    /// `send_triggered_update` and `route_lost`, thresholds rescaled for
    /// 96-cost hops through `Config`).
    fn selection_changed(&mut self, prefix: IpNet, sel: Selection, now: Instant) {
        let Selection { old, new, .. } = sel;
        if old == new {
            return;
        }
        if old.map(|o| o.neighbour) != new.map(|n| n.neighbour) {
            self.fib_dirty = true;
        }
        if self.xroutes.contains(&prefix) {
            // Announced by add_xroute; learned routes are irrelevant.
            return;
        }
        match (old, new) {
            (None, None) => {}
            (Some(o), None) => {
                debug!(%prefix, "route lost");
                // A retraction may be the only way the neighbours learn about
                // a blackhole: urgent, and resent.
                self.schedule_urgent_with_resend(prefix, now);
                // The seqno request follows from check_starvation.
                let _ = o;
            }
            (None, Some(n)) => {
                let answers = self.resend.answers_forwarded(prefix, n.router_id, n.seqno);
                self.schedule_update(prefix, answers, None, now);
            }
            (Some(o), Some(n)) => {
                let diff = o.metric.abs_diff(n.metric);
                if o.router_id != n.router_id {
                    // Switching sources can cause transient loops elsewhere.
                    self.schedule_urgent_with_resend(prefix, now);
                } else if n.metric > o.metric && diff >= self.config.major_worsening {
                    self.schedule_update(prefix, true, None, now);
                } else if self.resend.answers_forwarded(prefix, n.router_id, n.seqno) {
                    // A request we forwarded is answered: relay it at once,
                    // everywhere (duplicates from other neighbours were
                    // suppressed and wait for the same answer).
                    self.schedule_update(prefix, true, None, now);
                } else if n.metric < o.metric && diff < self.config.minor_improvement {
                    // Might be a fluctuation; announcing it would lower the
                    // neighbours' FDs and make later routes unfeasible.
                } else if diff >= self.config.trivial_change {
                    self.schedule_update(prefix, false, None, now);
                }
                if n.metric >= o.metric.saturating_add(self.config.major_worsening) {
                    // Much worse: ask everyone for alternatives.
                    for id in self.interface_ids() {
                        self.send_route_request(id, None, Some(prefix), now);
                    }
                }
            }
        }
    }

    /// No feasible route is selected (RFC 8966 §3.8.2.1): if unfeasible
    /// routes remain (starvation, a MUST), ask the neighbour of the best of
    /// them for its source's next seqno; if nothing remains but we just lost
    /// a route, ask everyone for the lost source's next seqno. Runs on every
    /// reselection without a result, so a request whose target went away is
    /// replaced by one to the next candidate; an identical active request is
    /// not repeated.
    fn check_starvation(&mut self, prefix: IpNet, old: Option<Selected>, now: Instant) {
        let unfeasible = self.routes.get(&prefix).and_then(|e| {
            e.routes
                .iter()
                .filter(|r| r.metric < INFINITY)
                .min_by_key(|r| (r.metric, r.neighbour))
                .map(|r| (r.neighbour, r.router_id, r.seqno))
        });
        let (target, rid, seqno) = match (unfeasible, old) {
            (Some((n, rid, s)), _) => (RequestTarget::Neighbour(n), rid, s),
            (None, Some(o)) if o.metric < INFINITY => {
                (RequestTarget::Everyone, o.router_id, o.seqno)
            }
            (None, _) => return,
        };
        let want = match self.sources.get(prefix, rid, now) {
            Some(fd) => fd.seqno.wrapping_add(1),
            None => seqno.wrapping_add(1),
        };
        if let Some(p) = self.resend.request(prefix, rid)
            && p.is_active()
            && seqno_ge(p.seqno, want)
            && (p.target == target || target == RequestTarget::Everyone)
        {
            return;
        }
        let hops = self.config.request_hop_count;
        self.send_seqno_request(prefix, rid, want, target, hops, None, now);
    }

    /// An unfeasible Update arrived from `n` (babeld
    /// `send_unfeasible_request`): if it is much better than what we use, or
    /// we have nothing, ask `n` for the source's next seqno. `force` is set
    /// when the selected route itself received it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn request_unfeasible(
        &mut self,
        n: NeighbourId,
        prefix: IpNet,
        rid: RouterId,
        seqno: u16,
        metric: u16,
        force: bool,
        now: Instant,
    ) {
        let Some(fd) = self.sources.get(prefix, rid, now).copied() else {
            return;
        };
        if seqno_gt(fd.seqno, seqno.wrapping_add(100)) {
            // The source restarted and lost its seqno (babeld's test): a
            // request would move it by one only. The catch-up hint sent
            // with this update tells it the seqno instead.
            return;
        }
        let current = self.routes.selected(&prefix).map(|r| r.metric);
        let wanted = force
            || current.is_none_or(|m| m >= metric.saturating_add(self.config.major_worsening));
        if wanted {
            let hops = self.config.request_hop_count;
            let want = fd.seqno.wrapping_add(1);
            self.send_seqno_request(
                prefix,
                rid,
                want,
                RequestTarget::Neighbour(n),
                hops,
                None,
                now,
            );
        }
    }

    /// Sends a seqno request and records it for resends and duplicate
    /// suppression. An identical request of ours still being resent is not
    /// sent again.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_seqno_request(
        &mut self,
        prefix: IpNet,
        rid: RouterId,
        seqno: u16,
        target: RequestTarget,
        hop_count: u8,
        requester: Option<(IfaceId, std::net::IpAddr)>,
        now: Instant,
    ) {
        let existing = self.resend.request(prefix, rid).copied();
        if let Some(p) = existing
            && requester.is_none()
            && p.is_active()
            && p.target == target
            && seqno_ge(p.seqno, seqno)
        {
            return;
        }
        if existing.is_none() && self.resend.request_count() >= self.config.max_pending_requests {
            self.counters.request_limit += 1;
            return;
        }
        let msg = Message::SeqnoRequest(SeqnoRequestRepr {
            prefix,
            seqno,
            hop_count,
            router_id: rid,
        });
        self.queue_request(msg, target, now);
        self.counters.seqno_requests_sent += 1;
        let delay = self.config.resend_delay;
        self.resend.record_request(
            prefix,
            rid,
            PendingRequest {
                seqno,
                hop_count,
                requester,
                target,
                resend_at: (self.config.resend_count > 0).then(|| now + delay),
                resends_left: self.config.resend_count,
                delay,
                forget_at: now + self.config.request_hold,
            },
        );
    }

    /// Queues a request message, urgently, for its target.
    pub(super) fn queue_request(&mut self, msg: Message, target: RequestTarget, now: Instant) {
        let at = now + self.config.urgent_delay;
        match target {
            RequestTarget::Neighbour(n) => {
                let Some(nb) = self.neighbours.get(n) else {
                    return;
                };
                let (iface, addr) = (nb.iface, nb.addr);
                let Some(dst) = self.interfaces.get(&iface).map(|i| i.unicast_dst(addr)) else {
                    return;
                };
                self.output.buffer((iface, dst), at).messages.push(msg);
            }
            RequestTarget::Everyone => {
                for id in self.interface_ids() {
                    self.output
                        .buffer((id, None), at)
                        .messages
                        .push(msg.clone());
                }
            }
        }
    }

    /// Sends a Route Request (wildcard if `prefix` is `None`) on `iface`,
    /// to one neighbour or to all.
    pub(super) fn send_route_request(
        &mut self,
        iface: IfaceId,
        neighbour: Option<NeighbourId>,
        prefix: Option<IpNet>,
        now: Instant,
    ) {
        let Some(ifc) = self.interfaces.get(&iface) else {
            return;
        };
        let dst = neighbour
            .and_then(|n| self.neighbours.get(n))
            .and_then(|nb| ifc.unicast_dst(nb.addr));
        let at = now + self.config.urgent_delay;
        let msg = Message::RouteRequest(RouteRequestRepr {
            prefix,
            proof_wanted: false,
        });
        self.output.buffer((iface, dst), at).messages.push(msg);
    }

    /// Queues the current state of `prefix` for every interface (or one).
    pub(super) fn schedule_update(
        &mut self,
        prefix: IpNet,
        urgent: bool,
        iface: Option<IfaceId>,
        now: Instant,
    ) {
        let at = now
            + if urgent {
                self.config.urgent_delay
            } else {
                self.config.triggered_delay
            };
        let ids = match iface {
            Some(id) => vec![id],
            None => self.interface_ids(),
        };
        for id in ids {
            if self.interfaces.contains_key(&id) {
                self.output.buffer((id, None), at).updates.insert(prefix);
            }
        }
    }

    /// An urgent update everywhere, resent a few times.
    pub(super) fn schedule_urgent_with_resend(&mut self, prefix: IpNet, now: Instant) {
        self.schedule_update(prefix, true, None, now);
        let (delay, count) = (self.config.resend_delay, self.config.resend_count);
        self.resend.schedule_update(prefix, delay, count, now);
    }

    pub(super) fn schedule_full_dump(&mut self, iface: IfaceId, at: Instant) {
        if self.interfaces.contains_key(&iface) {
            self.output.buffer((iface, None), at).full_dump = true;
        }
    }

    /// A scheduled Hello on `iface`, with IHUs: to every neighbour on a
    /// tunnel (each Hello round is an RTT sample), on a LAN to all every
    /// third Hello and to marginal neighbours otherwise (babeld).
    pub(super) fn send_hello(&mut self, iface: IfaceId, now: Instant) {
        let next = now + self.jitter(self.config.hello_interval);
        let Some(ifc) = self.interfaces.get_mut(&iface) else {
            return;
        };
        ifc.hello_due = next;
        let all = ifc.is_tunnel() || ifc.hellos_sent % 3 == 0;
        let ihus: Vec<NeighbourId> = self
            .neighbours
            .ids_on(iface)
            .into_iter()
            .filter(|n| all || self.neighbours.get(*n).is_some_and(|nb| nb.is_marginal()))
            .collect();
        let b = self.output.buffer((iface, None), now);
        b.hello = true;
        b.ihus.extend(ihus);
    }

    /// Something about a neighbour changed: recompute its link cost and,
    /// if it moved, the metrics of its routes.
    pub(super) fn neighbour_changed(&mut self, n: NeighbourId, now: Instant) {
        let Some(nb) = self.neighbours.get(n) else {
            return;
        };
        let Some(ifc) = self.interfaces.get(&nb.iface) else {
            return;
        };
        let params = *ifc.params(&self.config);
        let extra = ifc.extra_cost;
        let Some(nb) = self.neighbours.get_mut(n) else {
            return;
        };
        if !nb.update_cost(&params, extra) {
            return;
        }
        let cost = nb.cost;
        let touched = self
            .routes
            .set_neighbour_cost(n, cost, self.config.smoothing_half_life, now);
        for p in touched {
            self.reselect_prefix(p, now);
        }
    }

    /// Forgets a neighbour and every route through it, reselecting at once.
    /// The seqno requests we forwarded to it go on along what is left: it
    /// may have died a moment before we noticed, taking them with it, and
    /// they would otherwise wait for their requesters' resends.
    pub(super) fn flush_neighbour(&mut self, n: NeighbourId, now: Instant) {
        let touched = self.routes.remove_neighbour(n);
        let stranded = match self.neighbours.get(n) {
            Some(nb) => self.resend.forget_neighbour(n, nb.iface, nb.addr),
            None => Vec::new(),
        };
        for p in touched {
            self.reselect_prefix(p, now);
        }
        self.neighbours.remove(n);
        for (prefix, rid, request) in stranded {
            self.forward_again(prefix, rid, request, now);
        }
    }

    /// Forwards a request whose next hop went away to the successor left
    /// (unless a reselection has sent one meanwhile).
    fn forward_again(&mut self, prefix: IpNet, rid: RouterId, p: PendingRequest, now: Instant) {
        if self
            .resend
            .request(prefix, rid)
            .is_some_and(|q| q.is_active())
        {
            return;
        }
        let Some(requester) = p.requester.and_then(|(i, a)| self.neighbours.find(i, a)) else {
            return;
        };
        let Some(next) = self.request_successor(&prefix, requester, now) else {
            return;
        };
        self.send_seqno_request(
            prefix,
            rid,
            p.seqno,
            RequestTarget::Neighbour(next),
            p.hop_count,
            p.requester,
            now,
        );
    }

    /// AE 0 retraction: every route from `n` goes to infinity.
    pub(super) fn retract_neighbour_routes(&mut self, n: NeighbourId, now: Instant) {
        let touched = self.routes.retract_neighbour(n, self.config.route_gc, now);
        for p in touched {
            self.reselect_prefix(p, now);
        }
    }

    pub(super) fn interface_ids(&self) -> Vec<IfaceId> {
        self.interfaces.keys().copied().collect()
    }
}
