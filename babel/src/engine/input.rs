//! Received messages (RFC 8966 §3.4-3.8, RFC 9616 §3).
//!
//! A packet is decoded whole first, so that the Hello timestamp it carries
//! is known when its IHU is processed (RFC 9616 §3.2). Every fault is
//! counted and the message dropped; nothing here can panic on input.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tracing::trace;

use super::neighbour::{HelloOutcome, HelloStamp, NeighbourId};
use super::origin::{Claim, OriginAuth};
use super::route::Route;
use super::{Engine, IfaceId};
use crate::metric::{RttParams, metric_add, rtt_sample, seqno_ge};
use crate::wire::{
    self, AckRequestRepr, HelloRepr, INFINITY, IhuRepr, Message, RouteRequestRepr,
    SeqnoRequestRepr, UpdateRepr,
};

/// Per-packet context.
#[derive(Clone, Copy, Debug)]
pub(super) struct PacketCtx {
    pub(super) iface: IfaceId,
    pub(super) from: IpAddr,
    pub(super) neighbour: NeighbourId,
    /// The packet's Hello timestamp (RFC 9616 t3), if any.
    pub(super) hello_ts: Option<u32>,
    /// Our timestamp at reception (t2 for our next IHU, t4 for RTT).
    pub(super) rx_ts: u32,
}

impl<A: OriginAuth> Engine<A> {
    /// Processes one received Babel packet. `from` is the sender's address
    /// (link-local on a LAN; on a tunnel any stable address for the peer).
    pub fn handle_packet(&mut self, iface: IfaceId, from: IpAddr, bytes: &[u8], now: Instant) {
        self.counters.packets_received += 1;
        let packet = match wire::parse_packet(bytes) {
            Ok(p) => p,
            Err(e) => {
                trace!(neighbour = %from, %iface, error = %e, "bad packet");
                self.counters.bad_packets += 1;
                self.finish();
                return;
            }
        };
        let mut messages = Vec::new();
        for m in packet.messages() {
            match m {
                Ok(m) => messages.push(m),
                Err(e) => {
                    trace!(neighbour = %from, %iface, error = %e, "bad TLV");
                    self.counters.bad_tlvs += 1;
                }
            }
        }
        self.handle_messages(iface, from, &messages, now);
    }

    /// Processes the decoded messages of one packet, in order.
    pub(crate) fn handle_messages(
        &mut self,
        iface: IfaceId,
        from: IpAddr,
        messages: &[Message],
        now: Instant,
    ) {
        let Some(n) = self.neighbour_for(iface, from, now) else {
            self.finish();
            return;
        };
        let hello_ts = messages.iter().rev().find_map(|m| match m {
            Message::Hello(h) => h.timestamp,
            _ => None,
        });
        let ctx = PacketCtx {
            iface,
            from,
            neighbour: n,
            hello_ts,
            rx_ts: self.timestamp(now),
        };
        for m in messages {
            // A message may flush the neighbour (AE 0 retraction does not,
            // but the table bound can); stop if it is gone.
            if self.neighbours.get(n).is_none() {
                break;
            }
            match m {
                Message::Hello(h) => self.handle_hello(&ctx, h, now),
                Message::Ihu(i) => self.handle_ihu(&ctx, i, now),
                Message::Update(u) => self.handle_update(&ctx, u, now),
                Message::RouteRequest(r) => self.handle_route_request(&ctx, r, now),
                Message::SeqnoRequest(r) => self.handle_seqno_request(&ctx, r, now),
                Message::AckRequest(a) => self.handle_ack_request(&ctx, a, now),
                Message::Ack(_) => {}
            }
        }
        self.finish();
    }

    /// Finds or creates the neighbour for a packet. A new neighbour gets an
    /// IHU and a wildcard Route Request at once (RFC 8966 §3.8.2.1), so the
    /// link is bidirectional and synchronised within one round trip.
    fn neighbour_for(&mut self, iface: IfaceId, from: IpAddr, now: Instant) -> Option<NeighbourId> {
        let Some(ifc) = self.interfaces.get(&iface) else {
            self.counters.unknown_interface += 1;
            return None;
        };
        if let Some(n) = self.neighbours.find(iface, from) {
            return Some(n);
        }
        if matches!(ifc.kind, super::InterfaceKind::Lan { address } if address == from) {
            // Our own multicast looped back.
            self.counters.own_packets += 1;
            return None;
        }
        let limit = if ifc.is_tunnel() {
            1
        } else {
            self.config.max_neighbours
        };
        if self.neighbours.count_on(iface) >= limit {
            self.counters.neighbour_limit += 1;
            return None;
        }
        let tunnel = ifc.is_tunnel();
        let n = self.neighbours.insert(iface, from, tunnel);
        trace!(neighbour = %from, %iface, "new neighbour");
        let at = now + self.config.urgent_delay;
        self.output.buffer((iface, None), at).ihus.insert(n);
        self.send_route_request(iface, Some(n), None, now);
        Some(n)
    }

    fn handle_hello(&mut self, ctx: &PacketCtx, h: &HelloRepr, now: Instant) {
        let fallback = self.config.hello_interval;
        let Some(nb) = self.neighbours.get_mut(ctx.neighbour) else {
            return;
        };
        let history = if h.unicast {
            &mut nb.ucast
        } else {
            &mut nb.mcast
        };
        if history.receive(h.seqno, h.interval, fallback, now) == HelloOutcome::Reset {
            self.counters.hello_resets += 1;
        }
        if let Some(origin) = h.timestamp {
            nb.hello_stamp = Some(HelloStamp {
                origin,
                receive: ctx.rx_ts,
                at: now,
            });
        }
        self.neighbour_changed(ctx.neighbour, now);
    }

    fn handle_ihu(&mut self, ctx: &PacketCtx, i: &IhuRepr, now: Instant) {
        let Some(ifc) = self.interfaces.get(&ctx.iface) else {
            return;
        };
        if !ifc.ihu_is_for_us(i.address) {
            self.counters.ihu_not_for_us += 1;
            return;
        }
        let rtt: RttParams = ifc.params(&self.config).rtt;
        let interval = if i.interval.is_zero() {
            self.config.ihu_interval
        } else {
            i.interval
        };
        if i.rxcost == 0 {
            self.counters.absurd_costs += 1;
        }
        let Some(nb) = self.neighbours.get_mut(ctx.neighbour) else {
            return;
        };
        nb.txcost = i.rxcost;
        nb.ihu_expires = Some(now + interval * 7 / 2);
        if let (Some(ts), Some(t3)) = (i.timestamp, ctx.hello_ts) {
            match rtt_sample(ts.origin, ts.receive, t3, ctx.rx_ts) {
                Some(sample) => {
                    nb.rtt = Some(rtt.smooth(nb.rtt, sample));
                    nb.rtt_samples += 1;
                }
                None => self.counters.rtt_rejected += 1,
            }
        }
        self.neighbour_changed(ctx.neighbour, now);
    }

    fn handle_update(&mut self, ctx: &PacketCtx, u: &UpdateRepr, now: Instant) {
        let Some(prefix) = u.prefix else {
            // AE 0: only a wildcard retraction is meaningful.
            if u.metric < INFINITY {
                self.counters.bad_updates += 1;
            } else {
                self.retract_neighbour_routes(ctx.neighbour, now);
            }
            return;
        };
        if is_martian(&prefix) {
            self.counters.martian_updates += 1;
            return;
        }
        let prefix = prefix.trunc();
        if u.router_id == Some(self.router_id) {
            self.handle_own_update(ctx, prefix, u.seqno, u.proof.as_ref(), now);
            return;
        }
        let rid = match u.router_id {
            Some(rid) => rid,
            // A retraction needs no source: the route keeps the one it had
            // (with no route, there is nothing to retract).
            None if u.metric == INFINITY => {
                match self.routes.get(&prefix).and_then(|e| e.find(ctx.neighbour)) {
                    Some(r) => r.router_id,
                    None => return,
                }
            }
            None => {
                self.counters.bad_updates += 1;
                return;
            }
        };
        if u.metric < INFINITY {
            let claim = Claim {
                prefix,
                router_id: rid,
                seqno: u.seqno,
            };
            if !self.origin_ok(ctx, &claim, u.proof.as_ref(), now) {
                return;
            }
        }
        let interval = if u.interval.is_zero() {
            self.config.update_interval
        } else {
            u.interval
        };
        let next_hop = u.next_hop.unwrap_or(ctx.from);
        let cost = self.neighbours.cost(ctx.neighbour);
        let metric = metric_add(u.metric, cost);
        let feasible = self
            .sources
            .is_feasible(prefix, rid, u.seqno, u.metric, now);
        let half_life = self.config.smoothing_half_life;
        let entry = self.routes.get(&prefix);
        let selected_n = entry.and_then(|e| e.selected);
        let existing = entry
            .and_then(|e| e.find(ctx.neighbour))
            .map(|r| (r.router_id, r.metric));
        match existing {
            None => {
                if u.metric == INFINITY {
                    return;
                }
                if self.routes.len() >= self.config.max_routes {
                    self.counters.route_limit += 1;
                    return;
                }
                let mut r =
                    Route::new(ctx.neighbour, rid, u.seqno, u.metric, metric, next_hop, now);
                set_timers(&mut r, interval, self.config.route_gc, now);
                self.routes.insert(prefix, r);
            }
            Some((old_rid, _)) => {
                if Some(ctx.neighbour) == selected_n && !feasible && old_rid == rid {
                    // RFC 8966 §3.5.3: an unfeasible update for the selected
                    // route from the same source is ignored (the route keeps
                    // its last feasible state and will expire if not
                    // refreshed); ask the source for a new seqno instead.
                    self.counters.unfeasible_updates += 1;
                    self.send_catch_up_hint(ctx, prefix, rid, u.seqno, now);
                    self.request_unfeasible(ctx.neighbour, prefix, rid, u.seqno, metric, true, now);
                    return;
                }
                let route_gc = self.config.route_gc;
                let mut deadline = None;
                if let Some(r) = self
                    .routes
                    .get_mut(&prefix)
                    .and_then(|e| e.find_mut(ctx.neighbour))
                {
                    r.router_id = rid;
                    r.seqno = u.seqno;
                    r.refmetric = u.metric;
                    r.next_hop = next_hop;
                    r.set_metric(metric, half_life, now);
                    set_timers(r, interval, route_gc, now);
                    deadline = r.next_deadline();
                }
                self.routes.note_deadline(deadline);
            }
        }
        if u.metric < INFINITY && !feasible {
            self.counters.unfeasible_updates += 1;
            self.send_catch_up_hint(ctx, prefix, rid, u.seqno, now);
            self.request_unfeasible(ctx.neighbour, prefix, rid, u.seqno, metric, false, now);
        }
        self.reselect_prefix(prefix, now);
    }

    fn handle_route_request(&mut self, ctx: &PacketCtx, r: &RouteRequestRepr, now: Instant) {
        self.counters.route_requests += 1;
        if r.proof_wanted {
            self.counters.origin.proofs_requested += 1;
            self.proofs.forget(ctx.iface, r.prefix.map(|p| p.trunc()));
        }
        let at = now + self.config.triggered_delay;
        match r.prefix {
            None => {
                // babeld also answers a wildcard request with an IHU.
                self.output
                    .buffer((ctx.iface, None), at)
                    .ihus
                    .insert(ctx.neighbour);
                // A full dump per request, but a flood of requests gets
                // one dump per interval after a short burst.
                let trigger = self.config.triggered_delay;
                let Some(slot) = self
                    .interfaces
                    .get_mut(&ctx.iface)
                    .and_then(|i| i.dump_slot(trigger, now))
                else {
                    self.counters.dumps_deferred += 1;
                    return;
                };
                if slot > at {
                    self.counters.dumps_deferred += 1;
                }
                self.schedule_full_dump(ctx.iface, slot);
            }
            Some(p) => {
                self.output
                    .buffer((ctx.iface, None), at)
                    .updates
                    .insert(p.trunc());
            }
        }
    }

    fn handle_seqno_request(&mut self, ctx: &PacketCtx, r: &SeqnoRequestRepr, now: Instant) {
        self.counters.seqno_requests += 1;
        if r.hop_count == 0 {
            self.counters.bad_requests += 1;
            return;
        }
        let prefix = r.prefix.trunc();
        if self.xroutes.contains(&prefix) {
            self.answer_own_request(ctx, prefix, r.router_id, r.seqno, now);
            return;
        }
        // Without a selected route (lost a moment ago, as the requester's
        // was when the same neighbour died) the request still goes on to
        // the best route left, unfeasible or not (§3.8.1.2, babeld).
        if let Some(sel) = self
            .routes
            .selected(&prefix)
            .filter(|s| s.metric < INFINITY)
            && (sel.router_id != r.router_id || seqno_ge(sel.seqno, r.seqno))
        {
            self.schedule_update(prefix, true, Some(ctx.iface), now);
            return;
        }
        if r.hop_count < 2 {
            return;
        }
        let Some(next) = self.request_successor(&prefix, ctx.neighbour, now) else {
            return;
        };
        // Redundant only if what is pending already went where this one
        // would go: a request of ours to another neighbour (the one of an
        // unfeasible route, say) may be answered on a route we do not
        // select, and would then never be relayed.
        let requester = (ctx.iface, ctx.from);
        if self
            .resend
            .join_pending(prefix, r.router_id, r.seqno, next, requester)
        {
            self.counters.duplicate_requests += 1;
            return;
        }
        self.send_seqno_request(
            prefix,
            r.router_id,
            r.seqno,
            super::resend::RequestTarget::Neighbour(next),
            r.hop_count - 1,
            Some(requester),
            now,
        );
    }

    fn handle_ack_request(&mut self, ctx: &PacketCtx, a: &AckRequestRepr, now: Instant) {
        let Some(ifc) = self.interfaces.get(&ctx.iface) else {
            return;
        };
        let dst = ifc.unicast_dst(ctx.from);
        let at = now + (a.interval / 2).min(Duration::from_millis(100));
        self.output
            .buffer((ctx.iface, dst), at)
            .messages
            .push(Message::Ack(wire::AckRepr { opaque: a.opaque }));
    }

    /// The neighbour to forward a seqno request to: not the requester; the
    /// selected route's neighbour first, then a feasible route's, then any
    /// finite route's (RFC 8966 §3.8.1.2, FRR PR #18581).
    pub(super) fn request_successor(
        &self,
        prefix: &IpNet,
        requester: NeighbourId,
        now: Instant,
    ) -> Option<NeighbourId> {
        let e = self.routes.get(prefix)?;
        let candidates = e
            .routes
            .iter()
            .filter(|r| r.neighbour != requester && r.metric < INFINITY);
        let mut best: Option<(u8, u16, NeighbourId)> = None;
        for r in candidates {
            let rank = if Some(r.neighbour) == e.selected {
                0
            } else if self
                .sources
                .is_feasible(*prefix, r.router_id, r.seqno, r.refmetric, now)
            {
                1
            } else {
                2
            };
            let key = (rank, r.metric, r.neighbour);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        best.map(|b| b.2)
    }
}

/// Expiry (3.5 intervals, RFC 8966 Appendix B), the pre-expiry request
/// (at 3 intervals) and, for retractions, the flush time.
fn set_timers(r: &mut Route, interval: Duration, route_gc: Duration, now: Instant) {
    if r.refmetric < INFINITY {
        r.expires = Some(now + interval * 7 / 2);
        r.request_at = Some(now + interval * 3);
        r.flush_at = None;
    } else {
        r.expires = None;
        r.request_at = None;
        r.flush_at = Some(now + route_gc);
    }
}

/// Prefixes no router may announce (babeld `martian_prefix`): multicast,
/// link-local, loopback and unspecified host routes, and IPv4 loopback,
/// "this network" and multicast/reserved space.
pub(crate) fn is_martian(p: &IpNet) -> bool {
    match p {
        IpNet::V6(p) => {
            let a = p.addr().octets();
            let len = p.prefix_len();
            (len >= 8 && a[0] == 0xFF)
                || (len >= 10 && a[0] == 0xFE && a[1] & 0xC0 == 0x80)
                || (len == 128 && a[..15] == [0; 15] && a[15] <= 1)
        }
        IpNet::V4(p) => {
            let a = p.addr().octets();
            let len = p.prefix_len();
            (len >= 8 && (a[0] == 127 || a[0] == 0)) || (len >= 4 && a[0] & 0xF0 >= 0xE0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_martian;

    #[test]
    fn martians() {
        for m in [
            "ff02::/16",
            "fe80::/64",
            "febf::/16",
            "::1/128",
            "::/128",
            "127.0.0.0/8",
            "0.0.0.0/8",
            "224.0.0.0/4",
            "240.0.0.0/8",
        ] {
            assert!(is_martian(&m.parse().unwrap()), "{m}");
        }
        for ok in [
            "::/0",
            "fd00::/8",
            "2001:db8::/32",
            "fec0::/10",
            "0.0.0.0/0",
            "10.0.0.0/8",
        ] {
            assert!(!is_martian(&ok.parse().unwrap()), "{ok}");
        }
    }
}
