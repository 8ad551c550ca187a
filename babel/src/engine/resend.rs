//! Pending seqno requests and urgent-update resends (RFC 8966 §3.8.2,
//! §3.7.2; babeld resend.c).
//!
//! Seqno requests are keyed by (prefix, router-id): a request for one source
//! must not be suppressed by a pending request for another (FRR PR #22892).
//! An entry remembers who asked (for forwarded requests, so the answer is
//! relayed promptly), where it went, and its resend schedule (first delay,
//! doubling, a fixed number of times). It is satisfied by an Update with
//! another router-id or a seqno at least as new as requested.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Bound;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::IfaceId;
use super::neighbour::NeighbourId;
use crate::metric::seqno_ge;
use crate::wire::RouterId;

/// Where a seqno request was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestTarget {
    /// Unicast to one neighbour.
    Neighbour(NeighbourId),
    /// Multicast on every interface.
    Everyone,
}

/// One pending seqno request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PendingRequest {
    pub(crate) seqno: u16,
    pub(crate) hop_count: u8,
    /// The neighbour that asked, for a forwarded request.
    pub(crate) requester: Option<(IfaceId, IpAddr)>,
    pub(crate) target: RequestTarget,
    pub(crate) resend_at: Option<Instant>,
    pub(crate) resends_left: u8,
    pub(crate) delay: Duration,
    pub(crate) forget_at: Instant,
}

impl PendingRequest {
    /// Still being (re)sent: a duplicate arriving now is redundant.
    pub(crate) fn is_active(&self) -> bool {
        self.resend_at.is_some()
    }
}

/// An urgent update being resent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct UpdateResend {
    at: Instant,
    left: u8,
    delay: Duration,
}

/// What became due.
#[derive(Debug, Default)]
pub(crate) struct DueResends {
    /// Requests to send again: (prefix, router-id, entry).
    pub(crate) requests: Vec<(IpNet, RouterId, PendingRequest)>,
    /// Prefixes whose current state to announce again, urgently.
    pub(crate) updates: Vec<IpNet>,
}

/// The resend table.
#[derive(Debug, Default)]
pub(crate) struct ResendTable {
    requests: BTreeMap<(IpNet, RouterId), PendingRequest>,
    updates: BTreeMap<IpNet, UpdateResend>,
}

impl ResendTable {
    pub(crate) fn request(&self, prefix: IpNet, rid: RouterId) -> Option<&PendingRequest> {
        self.requests.get(&(prefix, rid))
    }

    /// Updates being resent.
    #[cfg(test)]
    pub(crate) fn update_count(&self) -> usize {
        self.updates.len()
    }

    pub(crate) fn request_count(&self) -> usize {
        self.requests.len()
    }

    /// Records a request just sent, replacing any older one for the key.
    pub(crate) fn record_request(&mut self, prefix: IpNet, rid: RouterId, entry: PendingRequest) {
        self.requests.insert((prefix, rid), entry);
    }

    /// Whether a request for (`prefix`, `rid`, `seqno`) that we would
    /// forward to `next` is redundant: one at least as new is still being
    /// resent to that same neighbour. If so, and the pending one is our
    /// own, `requester` becomes the neighbour its answer is relayed to.
    pub(crate) fn join_pending(
        &mut self,
        prefix: IpNet,
        rid: RouterId,
        seqno: u16,
        next: NeighbourId,
        requester: (IfaceId, IpAddr),
    ) -> bool {
        let Some(p) = self.requests.get_mut(&(prefix, rid)) else {
            return false;
        };
        if !(p.is_active()
            && seqno_ge(p.seqno, seqno)
            && p.target == RequestTarget::Neighbour(next))
        {
            return false;
        }
        p.requester.get_or_insert(requester);
        true
    }

    /// Removes and returns the requests for `prefix` that an Update with
    /// (`rid`, `seqno`) satisfies. Called when we announce such an Update
    /// (babeld `satisfy_request` in `flushupdates`): a request is answered
    /// once we tell our neighbours, not when we merely hear of a newer
    /// seqno on a route we do not use.
    pub(crate) fn satisfy(
        &mut self,
        prefix: IpNet,
        rid: RouterId,
        seqno: u16,
    ) -> Vec<(RouterId, PendingRequest)> {
        let lo = Bound::Included((prefix, RouterId([0; 8])));
        let hi = Bound::Included((prefix, RouterId([0xFF; 8])));
        let done: Vec<(IpNet, RouterId)> = self
            .requests
            .range((lo, hi))
            .filter(|((_, r), e)| *r != rid || seqno_ge(seqno, e.seqno))
            .map(|(k, _)| *k)
            .collect();
        done.into_iter()
            .filter_map(|k| Some((k.1, self.requests.remove(&k)?)))
            .collect()
    }

    /// Whether announcing (`rid`, `seqno`) for `prefix` would answer a
    /// request we forwarded for someone else.
    pub(crate) fn answers_forwarded(&self, prefix: IpNet, rid: RouterId, seqno: u16) -> bool {
        let lo = Bound::Included((prefix, RouterId([0; 8])));
        let hi = Bound::Included((prefix, RouterId([0xFF; 8])));
        self.requests
            .range((lo, hi))
            .any(|((_, r), e)| e.requester.is_some() && (*r != rid || seqno_ge(seqno, e.seqno)))
    }

    /// Forgets requests sent to or asked by a neighbour that went away.
    /// Returns the forwarded ones that were still being sent to it, to be
    /// forwarded elsewhere.
    pub(crate) fn forget_neighbour(
        &mut self,
        n: NeighbourId,
        iface: IfaceId,
        addr: IpAddr,
    ) -> Vec<(IpNet, RouterId, PendingRequest)> {
        let mut stranded = Vec::new();
        for ((prefix, rid), e) in self.requests.iter_mut() {
            if e.requester == Some((iface, addr)) {
                e.requester = None;
            }
            if e.target == RequestTarget::Neighbour(n) {
                if e.is_active() && e.requester.is_some() {
                    stranded.push((*prefix, *rid, *e));
                }
                e.resend_at = None;
            }
        }
        stranded
    }

    /// Starts (or restarts) the resends of an urgent update for `prefix`.
    pub(crate) fn schedule_update(
        &mut self,
        prefix: IpNet,
        delay: Duration,
        count: u8,
        now: Instant,
    ) {
        if count == 0 {
            return;
        }
        self.updates.insert(
            prefix,
            UpdateResend {
                at: now + delay,
                left: count,
                delay,
            },
        );
    }

    /// Stops resending updates for `prefix` (it came back, for instance).
    pub(crate) fn cancel_update(&mut self, prefix: &IpNet) {
        self.updates.remove(prefix);
    }

    /// Takes what is due at `now`, rescheduling with a doubled delay, and
    /// forgets requests past their hold time.
    pub(crate) fn due(&mut self, now: Instant) -> DueResends {
        let mut out = DueResends::default();
        self.requests.retain(|_, e| e.forget_at > now);
        for ((p, rid), e) in self.requests.iter_mut() {
            if e.resend_at.is_some_and(|t| t <= now) {
                out.requests.push((*p, *rid, *e));
                if e.resends_left > 1 {
                    e.resends_left -= 1;
                    e.delay = e.delay.saturating_mul(2);
                    e.resend_at = Some(now + e.delay);
                } else {
                    e.resends_left = 0;
                    e.resend_at = None;
                }
            }
        }
        self.updates.retain(|p, u| {
            if u.at > now {
                return true;
            }
            out.updates.push(*p);
            if u.left > 1 {
                u.left -= 1;
                u.delay = u.delay.saturating_mul(2);
                u.at = now + u.delay;
                true
            } else {
                false
            }
        });
        out
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let r = self
            .requests
            .values()
            .map(|e| e.resend_at.unwrap_or(e.forget_at).min(e.forget_at))
            .min();
        let u = self.updates.values().map(|u| u.at).min();
        [r, u].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: RouterId = RouterId([0xA; 8]);
    const B: RouterId = RouterId([0xB; 8]);

    fn p() -> IpNet {
        "fd00:7::/64".parse().unwrap()
    }

    fn entry(seqno: u16, now: Instant) -> PendingRequest {
        PendingRequest {
            seqno,
            hop_count: 10,
            requester: None,
            target: RequestTarget::Everyone,
            resend_at: Some(now + Duration::from_secs(2)),
            resends_left: 3,
            delay: Duration::from_secs(2),
            forget_at: now + Duration::from_secs(65),
        }
    }

    #[test]
    fn keyed_by_router_id() {
        let t = Instant::now();
        let mut r = ResendTable::default();
        r.record_request(p(), A, entry(10, t));
        r.record_request(p(), B, entry(20, t));
        assert_eq!(r.request_count(), 2);
        // An older seqno from A satisfies nothing of A, but does satisfy
        // the request for B (another router-id is a valid answer).
        let done = r.satisfy(p(), A, 9);
        assert_eq!(done.iter().map(|d| d.0).collect::<Vec<_>>(), vec![B]);
        assert!(r.request(p(), A).is_some());
        let done = r.satisfy(p(), A, 10);
        assert_eq!(done.len(), 1);
        assert_eq!(r.request_count(), 0);
    }

    #[test]
    fn satisfied_across_seqno_wrap() {
        let t = Instant::now();
        let mut r = ResendTable::default();
        r.record_request(p(), A, entry(65535, t));
        assert!(r.satisfy(p(), A, 65534).is_empty());
        assert_eq!(r.satisfy(p(), A, 0).len(), 1);
    }

    #[test]
    fn resends_double_then_stop_then_forget() {
        let t = Instant::now();
        let mut r = ResendTable::default();
        r.record_request(p(), A, entry(1, t));
        let s = Duration::from_secs;
        assert!(r.due(t + s(1)).requests.is_empty());
        assert_eq!(r.due(t + s(2)).requests.len(), 1); // next at +4 s
        assert!(r.due(t + s(5)).requests.is_empty());
        assert_eq!(r.due(t + s(6)).requests.len(), 1); // next at +8 s
        assert!(r.request(p(), A).unwrap().is_active());
        assert_eq!(r.due(t + s(14)).requests.len(), 1); // third and last
        assert!(!r.request(p(), A).unwrap().is_active());
        assert!(r.due(t + s(60)).requests.is_empty());
        assert!(r.request(p(), A).is_some());
        assert_eq!(r.next_deadline(), Some(t + s(65)));
        r.due(t + s(65));
        assert!(r.request(p(), A).is_none());
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn update_resends() {
        let t = Instant::now();
        let mut r = ResendTable::default();
        let s = Duration::from_secs;
        r.schedule_update(p(), s(2), 2, t);
        assert_eq!(r.due(t + s(2)).updates, vec![p()]);
        assert!(r.due(t + s(5)).updates.is_empty());
        assert_eq!(r.due(t + s(6)).updates, vec![p()]);
        assert_eq!(r.next_deadline(), None);
        r.schedule_update(p(), s(2), 2, t);
        r.cancel_update(&p());
        assert_eq!(r.next_deadline(), None);
    }
}
