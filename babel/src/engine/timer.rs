//! Timers. Each table owns its deadlines; [`Engine::poll_timeout`] is their
//! minimum (what babeld's main loop computes by hand before `select`), and
//! [`Engine::handle_timeout`] runs whatever is due, table by table.

use std::time::Instant;

use super::Engine;
use super::origin::OriginAuth;
use super::resend::RequestTarget;
use super::route::ExpiryOutput;
use crate::wire::{Message, SeqnoRequestRepr};

impl<A: OriginAuth> Engine<A> {
    /// Runs every timer due at `now`: Hellos, periodic updates, missed
    /// Hellos and IHU expiry, route expiry, source GC, resends, held-back
    /// reselections.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.interface_timers(now);
        self.neighbour_timers(now);
        self.route_timers(now);
        if self.sources.next_deadline().is_some_and(|t| t <= now) {
            self.sources.expire(now);
        }
        self.resend_timers(now);
        self.bump_timer(now);
        if self.reselect_at.is_some_and(|t| t <= now) {
            self.reselect_at = None;
            let pending: Vec<_> = std::mem::take(&mut self.reselect).into_iter().collect();
            for p in pending {
                self.reselect_prefix(p, now);
            }
        }
        self.flush_due(now);
        self.finish();
    }

    fn interface_timers(&mut self, now: Instant) {
        for id in self.interface_ids() {
            let Some(ifc) = self.interfaces.get(&id) else {
                continue;
            };
            let (hello_due, update_due) = (ifc.hello_due, ifc.update_due);
            if hello_due <= now {
                self.send_hello(id, now);
            }
            if update_due <= now {
                let next = now + self.jitter(self.config.update_interval);
                if let Some(ifc) = self.interfaces.get_mut(&id) {
                    ifc.update_due = next;
                }
                self.schedule_full_dump(id, now);
            }
        }
    }

    fn neighbour_timers(&mut self, now: Instant) {
        let fallback = self.config.hello_interval;
        for n in self.neighbours.ids() {
            let Some(nb) = self.neighbours.get_mut(n) else {
                continue;
            };
            if nb.next_deadline().is_none_or(|t| t > now) {
                continue;
            }
            if !nb.check(fallback, now) {
                continue;
            }
            if nb.is_dead() {
                self.flush_neighbour(n, now);
            } else {
                self.neighbour_changed(n, now);
            }
        }
    }

    fn route_timers(&mut self, now: Instant) {
        if self.routes.next_deadline().is_none_or(|t| t > now) {
            return;
        }
        let mut out = ExpiryOutput::default();
        self.routes.expire(now, self.config.route_gc, &mut out);
        for (prefix, n) in out.requests {
            // The selected route is about to expire: ask its neighbour.
            if let Some(iface) = self.neighbours.get(n).map(|nb| nb.iface) {
                self.send_route_request(iface, Some(n), Some(prefix), now);
            }
        }
        for p in out.touched {
            self.reselect_prefix(p, now);
        }
    }

    fn resend_timers(&mut self, now: Instant) {
        if self.resend.next_deadline().is_none_or(|t| t > now) {
            return;
        }
        let due = self.resend.due(now);
        for (prefix, rid, e) in due.requests {
            let msg = Message::SeqnoRequest(SeqnoRequestRepr {
                prefix,
                seqno: e.seqno,
                hop_count: e.hop_count,
                router_id: rid,
            });
            let target = match e.target {
                RequestTarget::Neighbour(n) if self.neighbours.get(n).is_none() => continue,
                t => t,
            };
            self.queue_request(msg, target, now);
            self.counters.seqno_requests_sent += 1;
        }
        for prefix in due.updates {
            self.schedule_update(prefix, true, None, now);
        }
    }

    /// The earliest deadline of all tables.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let ifaces = self
            .interfaces
            .values()
            .map(|i| i.hello_due.min(i.update_due))
            .min();
        let ready =
            (!self.output.ready.is_empty() || !self.packed.is_empty()).then_some(self.epoch);
        [
            ifaces,
            self.neighbours.next_deadline(),
            self.routes.next_deadline(),
            self.sources.next_deadline(),
            self.resend.next_deadline(),
            self.reselect_at,
            self.bump_deadline(),
            self.output.next_deadline(),
            ready,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
