//! Route table and route selection (RFC 8966 §3.2.6, §3.5.3, §3.6; RFC 9616
//! §4 hysteresis).
//!
//! One entry per (prefix, neighbour). Each route caches its metric
//! (refmetric + link cost) and a smoothed metric that decays towards it with
//! a configurable half-life. Selection takes the lowest metric among feasible
//! finite routes, but replaces a still-usable selected route only when the
//! newcomer is better both now and on the smoothed metric by more than the
//! hysteresis: RTT noise does not make routes flap.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::neighbour::NeighbourId;
use super::source::SourceTable;
use crate::wire::{INFINITY, RouterId};

/// One route.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) neighbour: NeighbourId,
    pub(crate) router_id: RouterId,
    pub(crate) seqno: u16,
    /// The metric the neighbour announced.
    pub(crate) refmetric: u16,
    /// refmetric + link cost, saturated; cached.
    pub(crate) metric: u16,
    pub(crate) next_hop: IpAddr,
    /// When a finite route expires (3.5 intervals after its last update).
    pub(crate) expires: Option<Instant>,
    /// When a route request goes out for the selected route, shortly before
    /// it expires (RFC 8966 §3.8.2.1).
    pub(crate) request_at: Option<Instant>,
    /// When an infinite route is flushed.
    pub(crate) flush_at: Option<Instant>,
    smoothed: f64,
    smoothed_at: Instant,
}

impl Route {
    /// A new route with its smoothed metric starting at `metric`.
    pub(crate) fn new(
        neighbour: NeighbourId,
        router_id: RouterId,
        seqno: u16,
        refmetric: u16,
        metric: u16,
        next_hop: IpAddr,
        now: Instant,
    ) -> Self {
        Route {
            neighbour,
            router_id,
            seqno,
            refmetric,
            metric,
            next_hop,
            expires: None,
            request_at: None,
            flush_at: None,
            smoothed: f64::from(metric),
            smoothed_at: now,
        }
    }

    /// The smoothed metric at `now`: exponential decay towards the current
    /// metric with the given half-life.
    pub(crate) fn smoothed(&self, half_life: Duration, now: Instant) -> f64 {
        let m = f64::from(self.metric);
        let dt = now
            .saturating_duration_since(self.smoothed_at)
            .as_secs_f64();
        let hl = half_life.as_secs_f64();
        if hl <= 0.0 {
            return m;
        }
        m + (self.smoothed - m) * (-dt / hl).exp2()
    }

    /// Changes the metric, first bringing the smoothed value up to `now`
    /// with the old one. A route coming back from infinity restarts its
    /// smoothing at the new metric.
    pub(crate) fn set_metric(&mut self, metric: u16, half_life: Duration, now: Instant) {
        if metric == self.metric {
            return;
        }
        self.smoothed = if self.metric == INFINITY || metric == INFINITY {
            f64::from(metric)
        } else {
            self.smoothed(half_life, now)
        };
        self.smoothed_at = now;
        self.metric = metric;
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [self.expires, self.request_at, self.flush_at]
            .into_iter()
            .flatten()
            .min()
    }
}

/// What selection needs to know about the selected route of a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Selected {
    pub(crate) neighbour: NeighbourId,
    pub(crate) router_id: RouterId,
    pub(crate) seqno: u16,
    pub(crate) metric: u16,
}

impl Selected {
    fn of(r: &Route) -> Self {
        Selected {
            neighbour: r.neighbour,
            router_id: r.router_id,
            seqno: r.seqno,
            metric: r.metric,
        }
    }
}

/// Routes to one prefix.
#[derive(Clone, Debug, Default)]
pub(crate) struct PrefixRoutes {
    pub(crate) routes: Vec<Route>,
    pub(crate) selected: Option<NeighbourId>,
    /// The selection as of the last call to `select`: what the rest of the
    /// network was told, give or take thresholds.
    last: Option<Selected>,
}

impl PrefixRoutes {
    pub(crate) fn find(&self, n: NeighbourId) -> Option<&Route> {
        self.routes.iter().find(|r| r.neighbour == n)
    }

    pub(crate) fn find_mut(&mut self, n: NeighbourId) -> Option<&mut Route> {
        self.routes.iter_mut().find(|r| r.neighbour == n)
    }

    pub(crate) fn selected(&self) -> Option<&Route> {
        self.selected.and_then(|n| self.find(n))
    }
}

/// Selection parameters, from the engine configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SelectParams {
    pub(crate) half_life: Duration,
    pub(crate) hysteresis: u16,
    /// A selected route this much worse than the best is left at once.
    pub(crate) jump: u16,
}

/// Outcome of selecting a route for one prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Selection {
    pub(crate) old: Option<Selected>,
    pub(crate) new: Option<Selected>,
    /// A better route is being held back by hysteresis: look again later.
    pub(crate) held_back: bool,
}

/// All routes, by prefix.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    prefixes: BTreeMap<IpNet, PrefixRoutes>,
    len: usize,
    /// A lower bound of the earliest route timer: a timer set earlier lowers
    /// it, a timer moved later or removed leaves it (an early wake-up is
    /// harmless), and `expire` recomputes it exactly. Keeps `poll_timeout`
    /// from scanning every route after every packet.
    deadline: Option<Instant>,
}

impl RouteTable {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, prefix: &IpNet) -> Option<&PrefixRoutes> {
        self.prefixes.get(prefix)
    }

    pub(crate) fn get_mut(&mut self, prefix: &IpNet) -> Option<&mut PrefixRoutes> {
        self.prefixes.get_mut(prefix)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&IpNet, &PrefixRoutes)> {
        self.prefixes.iter()
    }

    pub(crate) fn selected(&self, prefix: &IpNet) -> Option<&Route> {
        self.prefixes.get(prefix)?.selected()
    }

    pub(crate) fn insert(&mut self, prefix: IpNet, route: Route) {
        self.note_deadline(route.next_deadline());
        self.prefixes.entry(prefix).or_default().routes.push(route);
        self.len += 1;
    }

    /// Lowers the deadline bound to `t` (after a route's timers were set).
    pub(crate) fn note_deadline(&mut self, t: Option<Instant>) {
        if let Some(t) = t {
            self.deadline = Some(self.deadline.map_or(t, |d| d.min(t)));
        }
    }

    /// Removes every route through `n`; returns the prefixes touched.
    pub(crate) fn remove_neighbour(&mut self, n: NeighbourId) -> Vec<IpNet> {
        let mut touched = Vec::new();
        for (p, e) in self.prefixes.iter_mut() {
            let before = e.routes.len();
            e.routes.retain(|r| r.neighbour != n);
            if e.routes.len() != before {
                self.len -= before - e.routes.len();
                touched.push(*p);
            }
        }
        touched
    }

    /// Removes the route to `prefix` through `n`, if any.
    pub(crate) fn remove_route(&mut self, prefix: &IpNet, n: NeighbourId) {
        if let Some(e) = self.prefixes.get_mut(prefix) {
            let before = e.routes.len();
            e.routes.retain(|r| r.neighbour != n);
            self.len -= before - e.routes.len();
            if e.selected == Some(n) {
                // Reselection then announces the loss (from `last`).
                e.selected = None;
            }
        }
    }

    /// Drops prefixes left with no route at all. Their selection must have
    /// been cleared (and announced) before.
    pub(crate) fn prune(&mut self, prefix: &IpNet) {
        if self
            .prefixes
            .get(prefix)
            .is_some_and(|e| e.routes.is_empty() && e.last.is_none())
        {
            self.prefixes.remove(prefix);
        }
    }

    /// Recomputes the metric of every route through `n` after its link cost
    /// changed; returns the prefixes touched.
    pub(crate) fn set_neighbour_cost(
        &mut self,
        n: NeighbourId,
        cost: u16,
        half_life: Duration,
        now: Instant,
    ) -> Vec<IpNet> {
        let mut touched = Vec::new();
        for (p, e) in self.prefixes.iter_mut() {
            if let Some(r) = e.find_mut(n) {
                let m = crate::metric::metric_add(r.refmetric, cost);
                if m != r.metric {
                    r.set_metric(m, half_life, now);
                    touched.push(*p);
                }
            }
        }
        touched
    }

    /// Selects the route for `prefix` (RFC 8966 §3.6 with hysteresis).
    ///
    /// Candidates are finite, feasible routes. With no selected candidate
    /// the best one wins at once. Otherwise the best replaces the current
    /// one only if its metric is lower and its smoothed metric is lower by
    /// more than the hysteresis, or if the current one is worse by `jump`.
    pub(crate) fn select(
        &mut self,
        prefix: &IpNet,
        sources: &SourceTable,
        params: SelectParams,
        now: Instant,
    ) -> Selection {
        let Some(e) = self.prefixes.get_mut(prefix) else {
            return Selection {
                old: None,
                new: None,
                held_back: false,
            };
        };
        let old = e.last;
        let view = sources.view(prefix);
        let usable = |r: &Route| {
            r.metric < INFINITY && view.is_feasible(r.router_id, r.seqno, r.refmetric, now)
        };
        let current = e.selected().filter(|r| usable(r));
        // Lowest metric; among equals the current route, then the lowest
        // neighbour id (determinism). Smoothed metrics are only computed for
        // the two routes hysteresis compares.
        let best = e
            .routes
            .iter()
            .filter(|r| usable(r))
            .min_by_key(|r| (r.metric, Some(r.neighbour) != e.selected, r.neighbour))
            .map(|r| (r, r.smoothed(params.half_life, now)));
        let mut held_back = false;
        let chosen = match (current, best) {
            (_, None) => None,
            (None, Some((b, _))) => Some(b.neighbour),
            (Some(c), Some((b, bs))) => {
                if b.neighbour == c.neighbour {
                    Some(c.neighbour)
                } else {
                    let cs = c.smoothed(params.half_life, now);
                    let jump = c.metric >= b.metric.saturating_add(params.jump);
                    let wins = b.metric < c.metric && bs + f64::from(params.hysteresis) < cs;
                    if jump || wins {
                        Some(b.neighbour)
                    } else {
                        held_back = b.metric < c.metric;
                        Some(c.neighbour)
                    }
                }
            }
        };
        e.selected = chosen;
        let new = e.selected().map(Selected::of);
        e.last = new;
        Selection {
            old,
            new,
            held_back,
        }
    }

    /// Unselects everything for `prefix` (it became one of ours).
    pub(crate) fn clear_selection(&mut self, prefix: &IpNet) -> Selection {
        let old = self.prefixes.get_mut(prefix).and_then(|e| {
            e.selected = None;
            e.last.take()
        });
        Selection {
            old,
            new: None,
            held_back: false,
        }
    }

    /// Sets every route through `n` to infinity (an AE 0 retraction);
    /// returns the prefixes touched.
    pub(crate) fn retract_neighbour(
        &mut self,
        n: NeighbourId,
        route_gc: Duration,
        now: Instant,
    ) -> Vec<IpNet> {
        let mut touched = Vec::new();
        for (p, e) in self.prefixes.iter_mut() {
            if let Some(r) = e.find_mut(n).filter(|r| r.refmetric < INFINITY) {
                r.refmetric = INFINITY;
                r.metric = INFINITY;
                r.expires = None;
                r.request_at = None;
                r.flush_at = Some(now + route_gc);
                touched.push(*p);
            }
        }
        if !touched.is_empty() {
            self.note_deadline(Some(now + route_gc));
        }
        touched
    }

    /// Handles route timers up to `now`: finite routes past their expiry go
    /// to infinity (returned in `expired`), selected routes close to expiry
    /// ask for a refresh (`requests`), infinite routes past their hold are
    /// removed (`flushed`, whose prefix may be gone entirely).
    pub(crate) fn expire(&mut self, now: Instant, route_gc: Duration, out: &mut ExpiryOutput) {
        for (p, e) in self.prefixes.iter_mut() {
            let selected = e.selected;
            let mut touched = false;
            for r in e.routes.iter_mut() {
                if r.expires.is_some_and(|t| t <= now) {
                    r.expires = None;
                    r.request_at = None;
                    r.refmetric = INFINITY;
                    r.metric = INFINITY;
                    r.flush_at = Some(now + route_gc);
                    touched = true;
                }
                if r.request_at.is_some_and(|t| t <= now) {
                    r.request_at = None;
                    if Some(r.neighbour) == selected {
                        out.requests.push((*p, r.neighbour));
                    }
                }
            }
            let before = e.routes.len();
            e.routes.retain(|r| r.flush_at.is_none_or(|t| t > now));
            if e.routes.len() != before {
                self.len -= before - e.routes.len();
                touched = true;
                if e.selected.is_some_and(|n| e.find(n).is_none()) {
                    // Reselection then announces the loss (from `last`).
                    e.selected = None;
                }
            }
            if touched {
                out.touched.push(*p);
            }
        }
        self.deadline = self
            .prefixes
            .values()
            .flat_map(|e| e.routes.iter())
            .filter_map(Route::next_deadline)
            .min();
    }

    /// No later than the earliest route timer (possibly earlier).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// What [`RouteTable::expire`] found.
#[derive(Debug, Default)]
pub(crate) struct ExpiryOutput {
    /// Prefixes whose routes changed: reselect them.
    pub(crate) touched: Vec<IpNet>,
    /// (prefix, neighbour) pairs to send a unicast route request to.
    pub(crate) requests: Vec<(IpNet, NeighbourId)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: RouterId = RouterId([0, 0, 0, 0, 0, 0, 0, 0xA]);
    const B: RouterId = RouterId([0, 0, 0, 0, 0, 0, 0, 0xB]);
    const HL: Duration = Duration::from_secs(4);
    const P: SelectParams = SelectParams {
        half_life: HL,
        hysteresis: 24,
        jump: 192,
    };

    fn pfx() -> IpNet {
        "fd00:5::/64".parse().unwrap()
    }

    fn nh() -> IpAddr {
        "fe80::1".parse().unwrap()
    }

    fn route(
        n: u32,
        rid: RouterId,
        seqno: u16,
        refmetric: u16,
        metric: u16,
        now: Instant,
    ) -> Route {
        Route::new(NeighbourId(n), rid, seqno, refmetric, metric, nh(), now)
    }

    fn sources() -> SourceTable {
        SourceTable::new(Duration::from_secs(180))
    }

    #[test]
    fn picks_lowest_metric_first() {
        let t = Instant::now();
        let mut rt = RouteTable::default();
        rt.insert(pfx(), route(1, A, 1, 100, 196, t));
        rt.insert(pfx(), route(2, A, 1, 50, 146, t));
        let s = rt.select(&pfx(), &sources(), P, t);
        assert_eq!(s.old, None);
        assert_eq!(s.new.map(|s| s.neighbour), Some(NeighbourId(2)));
    }

    #[test]
    fn never_selects_an_unfeasible_route() {
        let t = Instant::now();
        let mut src = sources();
        // We announced (seqno 5, metric 150): a refmetric of 150 is not
        // strictly better, even though the route is the only one.
        src.update_on_send(pfx(), A, 5, 150, t);
        let mut rt = RouteTable::default();
        rt.insert(pfx(), route(1, A, 5, 150, 246, t));
        assert_eq!(rt.select(&pfx(), &src, P, t).new, None);
        // A newer seqno makes it feasible.
        rt.get_mut(&pfx())
            .unwrap()
            .find_mut(NeighbourId(1))
            .unwrap()
            .seqno = 6;
        assert!(rt.select(&pfx(), &src, P, t).new.is_some());
    }

    #[test]
    fn selected_route_that_became_unfeasible_is_dropped_at_once() {
        let t = Instant::now();
        let mut src = sources();
        // We once announced source B at (seqno 9, metric 100).
        src.update_on_send(pfx(), B, 9, 100, t);
        let mut rt = RouteTable::default();
        rt.insert(pfx(), route(1, A, 5, 100, 196, t));
        rt.insert(pfx(), route(2, B, 9, 10_000, 10_096, t));
        let s = rt.select(&pfx(), &src, P, t);
        assert_eq!(s.new.map(|s| s.neighbour), Some(NeighbourId(1)));
        // Neighbour 1 switches to source B with a metric above our FD for B.
        {
            let r = rt
                .get_mut(&pfx())
                .unwrap()
                .find_mut(NeighbourId(1))
                .unwrap();
            r.router_id = B;
            r.seqno = 9;
            r.refmetric = 300;
        }
        let s = rt.select(&pfx(), &src, P, t);
        assert_eq!(s.old.map(|s| s.neighbour), Some(NeighbourId(1)));
        // Route 2 is unfeasible as well: nothing is selected.
        assert_eq!(s.new, None);
    }

    #[test]
    fn hysteresis_holds_then_switches() {
        let t0 = Instant::now();
        let mut rt = RouteTable::default();
        rt.insert(pfx(), route(1, A, 1, 100, 300, t0));
        rt.select(&pfx(), &sources(), P, t0);
        // A slightly better route appears: held back.
        rt.insert(pfx(), route(2, A, 1, 100, 290, t0));
        let s = rt.select(&pfx(), &sources(), P, t0);
        assert_eq!(s.new.map(|s| s.neighbour), Some(NeighbourId(1)));
        assert!(s.held_back);
        // Route 1 gets worse by 50: the newcomer is better by 60 but the
        // smoothed metric of route 1 still has to climb past 290 + 24.
        rt.get_mut(&pfx())
            .unwrap()
            .find_mut(NeighbourId(1))
            .unwrap()
            .set_metric(350, HL, t0);
        let s = rt.select(&pfx(), &sources(), P, t0);
        assert_eq!(s.new.map(|s| s.neighbour), Some(NeighbourId(1)));
        assert!(s.held_back);
        // Smoothed(1) = 350 - 50 * 2^(-t/4) > 314 needs t > 1.9 s.
        let s = rt.select(&pfx(), &sources(), P, t0 + Duration::from_secs(1));
        assert_eq!(s.new.map(|s| s.neighbour), Some(NeighbourId(1)));
        let s = rt.select(&pfx(), &sources(), P, t0 + Duration::from_secs(2));
        assert_eq!(s.new.map(|s| s.neighbour), Some(NeighbourId(2)));
        assert!(!s.held_back);
    }

    #[test]
    fn large_jump_switches_at_once() {
        let t0 = Instant::now();
        let mut rt = RouteTable::default();
        rt.insert(pfx(), route(1, A, 1, 100, 300, t0));
        rt.insert(pfx(), route(2, A, 1, 200, 400, t0));
        rt.select(&pfx(), &sources(), P, t0);
        rt.get_mut(&pfx())
            .unwrap()
            .find_mut(NeighbourId(1))
            .unwrap()
            .set_metric(600, HL, t0);
        let s = rt.select(&pfx(), &sources(), P, t0);
        assert_eq!(s.new.map(|s| s.neighbour), Some(NeighbourId(2)));
    }

    #[test]
    fn equal_metrics_keep_the_current_route() {
        let t0 = Instant::now();
        let mut rt = RouteTable::default();
        rt.insert(pfx(), route(2, A, 1, 100, 300, t0));
        rt.select(&pfx(), &sources(), P, t0);
        rt.insert(pfx(), route(1, A, 1, 100, 300, t0));
        let s = rt.select(&pfx(), &sources(), P, t0 + Duration::from_secs(60));
        assert_eq!(s.new.map(|s| s.neighbour), Some(NeighbourId(2)));
        assert!(!s.held_back);
    }

    #[test]
    fn infinite_selected_route_is_replaced_immediately() {
        let t0 = Instant::now();
        let mut rt = RouteTable::default();
        rt.insert(pfx(), route(1, A, 1, 100, 196, t0));
        rt.insert(pfx(), route(2, A, 1, 5000, 5096, t0));
        rt.select(&pfx(), &sources(), P, t0);
        rt.get_mut(&pfx())
            .unwrap()
            .find_mut(NeighbourId(1))
            .unwrap()
            .set_metric(INFINITY, HL, t0);
        let s = rt.select(&pfx(), &sources(), P, t0);
        assert_eq!(s.new.map(|s| s.neighbour), Some(NeighbourId(2)));
    }

    #[test]
    fn expiry_then_flush() {
        let t0 = Instant::now();
        let mut rt = RouteTable::default();
        let mut r = route(1, A, 1, 100, 196, t0);
        r.expires = Some(t0 + Duration::from_secs(56));
        r.request_at = Some(t0 + Duration::from_secs(48));
        rt.insert(pfx(), r);
        rt.select(&pfx(), &sources(), P, t0);
        assert_eq!(rt.next_deadline(), Some(t0 + Duration::from_secs(48)));
        let mut out = ExpiryOutput::default();
        rt.expire(
            t0 + Duration::from_secs(48),
            Duration::from_secs(60),
            &mut out,
        );
        assert_eq!(out.requests, vec![(pfx(), NeighbourId(1))]);
        assert!(out.touched.is_empty());
        let mut out = ExpiryOutput::default();
        rt.expire(
            t0 + Duration::from_secs(56),
            Duration::from_secs(60),
            &mut out,
        );
        assert_eq!(out.touched, vec![pfx()]);
        assert_eq!(rt.selected(&pfx()).map(|r| r.metric), Some(INFINITY));
        // Reselection drops it; then the flush removes it.
        assert_eq!(
            rt.select(&pfx(), &sources(), P, t0 + Duration::from_secs(56))
                .new,
            None
        );
        let mut out = ExpiryOutput::default();
        rt.expire(
            t0 + Duration::from_secs(116),
            Duration::from_secs(60),
            &mut out,
        );
        assert_eq!(rt.len(), 0);
        rt.prune(&pfx());
        assert!(rt.get(&pfx()).is_none());
    }

    #[test]
    fn smoothing_decays_with_half_life() {
        let t0 = Instant::now();
        let mut r = route(1, A, 1, 0, 100, t0);
        r.set_metric(200, HL, t0);
        assert!((r.smoothed(HL, t0) - 100.0).abs() < 1e-9);
        assert!((r.smoothed(HL, t0 + HL) - 150.0).abs() < 1e-9);
        assert!((r.smoothed(HL, t0 + HL * 2) - 175.0).abs() < 1e-9);
    }
}
