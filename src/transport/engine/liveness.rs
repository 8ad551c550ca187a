//! Liveness of the up tunnels: one timer structure for all of them, that
//! sends keep-alives only on silent tunnels and suspects the ones silent
//! for too long.
//!
//! QUIC alone notices a dead peer only at its idle timeout, which must
//! stay long (a lossy path must not lose its connection to a few missing
//! packets), while the overlay wants its routes off a dead tunnel within a
//! second. So:
//!
//! - a tunnel **heard** (an authenticated packet: the engine tells
//!   [`Liveness::heard`] after the packets of a receive batch decrypted)
//!   needs nothing;
//! - one silent gets a QUIC PING ([`Action::Ping`]) at the next point of
//!   a grid of `keep_alive` once the silence has lasted half an
//!   interval, and another every `keep_alive` while it lasts; the peer's
//!   acknowledgement makes it heard again, and the PING makes *us* heard
//!   at the peer, so one side's keep-alive serves both, and a tunnel
//!   heard more often than every half interval sends none;
//! - only the side that **leads** (the dialler) pings that soon; the
//!   other waits for a whole interval of silence, so it pings only when
//!   the leader's keep-alives stop: without that, both ends would ping at
//!   once (four datagrams per interval instead of two);
//! - one silent for `suspect_after` plus two round trips is
//!   **suspected** ([`Action::Suspect`]): NodeCore moves its routes away
//!   but the connection stays; the next authenticated packet brings it
//!   back ([`Liveness::heard`] returns `true`).
//!
//! Suspicions fall on a finer grid of `keep_alive / 4`. Deadlines that
//! fall on one grid point share one wake-up, and an idle node wakes only
//! when some tunnel is really due: a packet heard moves the tunnel's
//! check (a new heap entry when the rounded time moves, so at most one
//! per grid step; the old one goes stale and is dropped when it reaches
//! the top, never woken for). A tunnel that is busy, or kept alive by its
//! peer, costs no timer wake-up at all. The heap holds at most one entry
//! per grid step of an interval per tunnel, and a node without tunnels
//! never wakes.
//!
//! The grids are aligned to the wall clock ([`Liveness::align`]): on
//! nodes whose clocks agree, every idle tunnel's keep-alive leaves at the
//! same instants, so a node sends its PINGs, receives its peers' and the
//! answers to its own in two or three wake-ups per interval, not in some
//! for each tunnel. Clocks that disagree only lose that sharing.

use std::cmp::Reverse;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::node::core::boundary::TunnelId;

/// What a check asks of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send a keep-alive on the tunnel (it has been silent for one
    /// interval).
    Ping(TunnelId),
    /// Nothing heard for the suspect time (plus two round trips).
    Suspect {
        /// The tunnel.
        tunnel: TunnelId,
        /// Its silence so far.
        silent_for: Duration,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    heard: Instant,
    last_ping: Option<Instant>,
    rtt: Duration,
    suspected: bool,
    /// Silence after which this side pings (at the next point of the
    /// keep-alive grid): half an interval on the side that leads (the
    /// dialler), a whole one on the other.
    ping_after: Duration,
    /// The check this tunnel waits for (heap items at another time are
    /// stale).
    next: Instant,
}

/// The liveness of every up tunnel of one engine.
#[derive(Debug)]
pub struct Liveness {
    clock: Clock,
    tunnels: HashMap<TunnelId, Entry>,
    due: BinaryHeap<Reverse<(Instant, TunnelId)>>,
    actions: VecDeque<Action>,
}

impl Liveness {
    /// Keep-alives every `keep_alive` of silence, suspicion after
    /// `suspect_after` (longer); grids start at `now` until
    /// [`Liveness::align`]ed.
    pub fn new(keep_alive: Duration, suspect_after: Duration, now: Instant) -> Self {
        let keep_alive = keep_alive.max(Duration::from_millis(4));
        Self {
            clock: Clock {
                keep_alive,
                suspect_after,
                grid: keep_alive / 4,
                epoch: now,
            },
            tunnels: HashMap::new(),
            due: BinaryHeap::new(),
            actions: VecDeque::new(),
        }
    }

    /// Puts the grids on the wall clock: `since_unix` is the wall-clock
    /// time at `now` (since the Unix epoch), and grid points fall on its
    /// multiples of `keep_alive`. Call it before the first tunnel.
    pub fn align(&mut self, now: Instant, since_unix: Duration) {
        let phase = since_unix.as_nanos() % self.clock.keep_alive.as_nanos();
        let phase = Duration::from_nanos(u64::try_from(phase).unwrap_or(0));
        self.clock.epoch = now.checked_sub(phase).unwrap_or(now);
    }

    /// Starts watching `tunnel`, heard at `now`; `lead`: this side dialled
    /// it and keeps it alive (the other side pings only if that stops).
    pub fn insert(&mut self, tunnel: TunnelId, rtt: Duration, now: Instant, lead: bool) {
        if let MapEntry::Vacant(v) = self.tunnels.entry(tunnel) {
            let mut e = Entry {
                heard: now,
                last_ping: None,
                rtt,
                suspected: false,
                ping_after: ping_after(lead, self.clock.keep_alive, self.clock.suspect_after),
                next: now,
            };
            e.next = self.clock.next_check(&e);
            self.due.push(Reverse((e.next, tunnel)));
            v.insert(e);
        }
    }

    /// Stops watching `tunnel`.
    pub fn remove(&mut self, tunnel: TunnelId) {
        self.tunnels.remove(&tunnel);
        if self.tunnels.is_empty() {
            self.due.clear();
        }
        self.drop_stale();
    }

    /// Pops the stale entries at the top of the heap, so that
    /// [`Liveness::poll_timeout`] names a check that has work.
    fn drop_stale(&mut self) {
        while let Some(Reverse((at, tunnel))) = self.due.peek().copied() {
            if self.tunnels.get(&tunnel).is_some_and(|e| e.next == at) {
                return;
            }
            self.due.pop();
        }
    }

    /// Tunnels watched.
    pub fn len(&self) -> usize {
        self.tunnels.len()
    }

    /// Whether no tunnel is watched.
    pub fn is_empty(&self) -> bool {
        self.tunnels.is_empty()
    }

    /// Whether `tunnel` is suspected now.
    pub fn is_suspected(&self, tunnel: TunnelId) -> bool {
        self.tunnels.get(&tunnel).is_some_and(|e| e.suspected)
    }

    /// An authenticated packet arrived on `tunnel` at `now`. Returns
    /// whether that ends a suspicion (tell NodeCore it is heard).
    pub fn heard(&mut self, tunnel: TunnelId, rtt: Duration, now: Instant) -> bool {
        let Some(e) = self.tunnels.get_mut(&tunnel) else {
            return false;
        };
        e.heard = e.heard.max(now);
        e.rtt = rtt;
        e.last_ping = None;
        let was = std::mem::replace(&mut e.suspected, false);
        // The planned check would find nothing due: move it (at most once
        // per grid step, when the rounded time moves).
        let next = self.clock.next_check(e);
        if next > e.next {
            e.next = next;
            self.due.push(Reverse((next, tunnel)));
            self.drop_stale();
        }
        was
    }

    /// When to call [`Liveness::handle_timeout`] next; `None` without
    /// tunnels.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((t, _))| *t)
    }

    /// Runs the checks due at `now`; their actions come out of
    /// [`Liveness::poll_action`].
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, tunnel))) = self.due.peek().copied() {
            if at > now {
                break;
            }
            self.due.pop();
            let clock = self.clock;
            let Some(e) = self.tunnels.get_mut(&tunnel) else {
                continue;
            };
            if e.next != at {
                continue;
            }
            if !e.suspected && now >= clock.suspect_at(e) {
                e.suspected = true;
                self.actions.push_back(Action::Suspect {
                    tunnel,
                    silent_for: now.saturating_duration_since(e.heard),
                });
            }
            if now >= clock.ping_at(e) {
                e.last_ping = Some(now);
                self.actions.push_back(Action::Ping(tunnel));
            }
            e.next = clock
                .next_check(e)
                .max(round_up(clock.epoch, clock.grid, now + clock.grid));
            self.due.push(Reverse((e.next, tunnel)));
        }
        self.drop_stale();
    }

    /// The next action, once.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
}

/// The liveness clock's timers and the origin of its grids.
#[derive(Debug, Clone, Copy)]
struct Clock {
    keep_alive: Duration,
    suspect_after: Duration,
    /// The checks' grid: a quarter of `keep_alive`.
    grid: Duration,
    epoch: Instant,
}

impl Clock {
    /// When the tunnel is suspected if nothing is heard: the suspect time
    /// plus two round trips (a keep-alive's acknowledgement takes one; a
    /// slow path must not look dead).
    fn suspect_at(&self, e: &Entry) -> Instant {
        e.heard + self.suspect_after + 2 * e.rtt
    }

    /// When the next keep-alive is due if nothing is heard: the first
    /// point of the keep-alive grid once the tunnel has been silent for
    /// `ping_after`, or the next one after the last keep-alive. The leader
    /// of a path shorter than half an interval thus pings exactly once per
    /// interval.
    fn ping_at(&self, e: &Entry) -> Instant {
        let silent_enough = match e.last_ping {
            Some(ping) => ping + self.keep_alive / 2,
            None => e.heard + e.ping_after,
        };
        round_up(self.epoch, self.keep_alive, silent_enough)
    }

    /// The check the tunnel waits for, on the grid.
    fn next_check(&self, e: &Entry) -> Instant {
        let ping = self.ping_at(e);
        if e.suspected {
            ping
        } else {
            ping.min(round_up(self.epoch, self.grid, self.suspect_at(e)))
        }
    }
}

/// How long a tunnel stays silent before this side pings it: half an
/// interval on the side that leads, a whole one on the other.
fn ping_after(lead: bool, keep_alive: Duration, suspect_after: Duration) -> Duration {
    if lead {
        keep_alive / 2
    } else {
        keep_alive.min(suspect_after)
    }
}

/// `t` rounded up to the grid `epoch + n * step`: checks due within one
/// step of each other share one wake-up.
pub(crate) fn round_up(epoch: Instant, step: Duration, t: Instant) -> Instant {
    let since = t.saturating_duration_since(epoch).as_nanos();
    let step_ns = step.as_nanos().max(1);
    let n = since.div_ceil(step_ns);
    let ns = u64::try_from(n * step_ns).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs the checks every millisecond until `until`, hearing tunnel `k`
    /// when `heard(k, t)` says so; returns the actions with their times.
    fn run(
        l: &mut Liveness,
        t0: Instant,
        until: Duration,
        heard: impl Fn(u64, Duration) -> bool,
    ) -> Vec<(Duration, Action)> {
        let mut out = Vec::new();
        let mut t = Duration::ZERO;
        while t <= until {
            let now = t0 + t;
            for k in 0..64 {
                if heard(k, t) {
                    l.heard(TunnelId(k), MS, now);
                }
            }
            if l.poll_timeout().is_some_and(|d| d <= now) {
                l.handle_timeout(now);
                while let Some(a) = l.poll_action() {
                    out.push((t, a));
                }
            }
            t += MS;
        }
        out
    }

    /// When the keep-alives of a [`run`] were sent.
    fn ping_times(actions: &[(Duration, Action)]) -> Vec<Duration> {
        actions
            .iter()
            .filter(|(_, a)| matches!(a, Action::Ping(_)))
            .map(|(t, _)| *t)
            .collect()
    }

    #[test]
    fn a_busy_tunnel_sends_no_keep_alive() {
        let t0 = Instant::now();
        let mut l = Liveness::new(200 * MS, 600 * MS, t0);
        l.insert(TunnelId(1), MS, t0, true);
        // Heard more often than every half interval.
        let actions = run(&mut l, t0, 10_000 * MS, |_, t| t.as_millis() % 90 == 0);
        assert_eq!(actions, vec![]);
    }

    #[test]
    fn a_tunnel_heard_often_enough_costs_no_wake_up() {
        let t0 = Instant::now();
        let mut l = Liveness::new(200 * MS, 600 * MS, t0);
        l.insert(TunnelId(1), MS, t0, true);
        let mut wakes = 0;
        let mut t = Duration::ZERO;
        while t <= 10_000 * MS {
            let now = t0 + t;
            if t.as_millis().is_multiple_of(90) {
                l.heard(TunnelId(1), MS, now);
            }
            if l.poll_timeout().is_some_and(|d| d <= now) {
                wakes += 1;
                l.handle_timeout(now);
                assert_eq!(l.poll_action(), None);
            }
            t += MS;
        }
        assert_eq!(wakes, 0, "checks that had nothing to do");
        assert!(l.due.len() <= 6, "{} heap entries", l.due.len());
    }

    #[test]
    fn the_side_that_does_not_lead_pings_only_when_the_leader_stops() {
        let t0 = Instant::now();
        let mut l = Liveness::new(200 * MS, 600 * MS, t0);
        l.insert(TunnelId(1), MS, t0, false);
        // The leader's keep-alive arrives 1 ms after each point of the
        // 200 ms grid, until 2 s.
        let actions = run(&mut l, t0, 3_000 * MS, |_, t| {
            t < 2_000 * MS && t.as_millis() % 200 == 1
        });
        let pings = ping_times(&actions);
        // Last heard at 1.801 s: its own keep-alive on the second grid
        // point after the first one missed, and the suspicion at the
        // usual time.
        assert_eq!(pings.first(), Some(&(2_200 * MS)), "{pings:?}");
        let at = actions
            .iter()
            .find_map(|(t, a)| matches!(a, Action::Suspect { .. }).then_some(*t))
            .unwrap();
        assert!(at >= 2_403 * MS && at <= 2_450 * MS, "suspected at {at:?}");
    }

    #[test]
    fn a_silent_tunnel_is_pinged_every_interval_then_suspected_then_heard() {
        let t0 = Instant::now();
        let mut l = Liveness::new(200 * MS, 600 * MS, t0);
        l.insert(TunnelId(1), MS, t0, true);
        // Heard until 1 s, then silent.
        let actions = run(&mut l, t0, 2_000 * MS, |_, t| t < 1_000 * MS);
        let pings = ping_times(&actions);
        // Last heard at 999 ms: pings at 1.2 s, 1.4 s, ... (the 200 ms
        // keep-alive grid).
        assert_eq!(pings.first(), Some(&(1_200 * MS)), "{pings:?}");
        for w in pings.windows(2) {
            assert_eq!(w[1] - w[0], 200 * MS, "{pings:?}");
        }
        let suspects: Vec<_> = actions
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Suspect { silent_for, .. } => Some((*t, *silent_for)),
                _ => None,
            })
            .collect();
        assert_eq!(suspects.len(), 1, "one suspicion per silence: {actions:?}");
        let (at, silent) = suspects[0];
        assert!(at >= 1_601 * MS && at <= 1_651 * MS, "suspected at {at:?}");
        assert!(silent >= 600 * MS, "{silent:?}");
        assert!(l.is_suspected(TunnelId(1)));
        assert!(l.heard(TunnelId(1), MS, t0 + 2_001 * MS), "heard again");
        assert!(!l.is_suspected(TunnelId(1)));
        assert!(!l.heard(TunnelId(1), MS, t0 + 2_002 * MS), "once");
    }

    #[test]
    fn a_slow_path_gets_two_round_trips_more() {
        let t0 = Instant::now();
        let mut l = Liveness::new(200 * MS, 600 * MS, t0);
        l.insert(TunnelId(1), 300 * MS, t0, true);
        let actions = run(&mut l, t0, 3_000 * MS, |_, _| false);
        let at = actions
            .iter()
            .find_map(|(t, a)| matches!(a, Action::Suspect { .. }).then_some(*t))
            .unwrap();
        assert!(at >= 1_200 * MS && at <= 1_250 * MS, "{at:?}");
    }

    #[test]
    fn idle_tunnels_share_wake_ups_and_an_empty_clock_sleeps() {
        let t0 = Instant::now();
        let mut l = Liveness::new(200 * MS, 600 * MS, t0);
        for k in 0..30 {
            l.insert(TunnelId(k), MS, t0 + Duration::from_micros(k * 1_609), true);
        }
        // Every peer acknowledges a keep-alive 20 ms after it is sent.
        let mut answer: HashMap<u64, Duration> = HashMap::new();
        let (mut pings, mut wakes) = (0, 0);
        let mut t = Duration::ZERO;
        while t <= 10_000 * MS {
            let now = t0 + t;
            answer.retain(|k, at| {
                let due = *at == t;
                if due {
                    l.heard(TunnelId(*k), MS, now);
                }
                !due
            });
            if l.poll_timeout().is_some_and(|d| d <= now) {
                wakes += 1;
                l.handle_timeout(now);
                while let Some(a) = l.poll_action() {
                    let Action::Ping(k) = a else {
                        panic!("answered tunnels are never suspected: {a:?}");
                    };
                    pings += 1;
                    answer.insert(k.0, t + 20 * MS);
                }
            }
            t += MS;
        }
        // One keep-alive per tunnel every 200 ms, all of them on the
        // keep-alive grid although the tunnels came up at scattered
        // instants: one wake-up per interval.
        assert!((30 * 49..=30 * 50).contains(&pings), "{pings} pings");
        assert!(wakes <= 51, "{wakes} wake-ups in 10 s");
        for k in 0..30 {
            l.remove(TunnelId(k));
        }
        assert!(l.is_empty());
        assert_eq!(l.poll_timeout(), None, "nothing to watch: no wake-up");
    }

    #[test]
    fn clocks_on_the_wall_clock_grid_ping_at_the_same_instants() {
        // Two nodes started 113 ms apart, 37 ms past a wall-clock
        // multiple of the interval: every keep-alive of both falls on a
        // wall-clock multiple.
        let t0 = Instant::now();
        let wall0 = Duration::from_secs(1_700_000_000) + 37 * MS;
        let later = t0 + 113 * MS;
        let mut a = Liveness::new(200 * MS, 600 * MS, t0);
        a.align(t0, wall0);
        let mut b = Liveness::new(200 * MS, 600 * MS, later);
        b.align(later, wall0 + 113 * MS);
        a.insert(TunnelId(1), MS, t0, true);
        b.insert(TunnelId(1), MS, later, true);
        let silent = |_, _| false;
        let pings_a = ping_times(&run(&mut a, t0, 2_000 * MS, silent));
        let pings_b = ping_times(&run(&mut b, t0, 2_000 * MS, silent));
        assert!(
            pings_a.len() >= 9 && pings_b.len() >= 9,
            "{pings_a:?} {pings_b:?}"
        );
        for t in pings_a.iter().chain(&pings_b) {
            assert_eq!((wall0 + *t).as_millis() % 200, 0, "{pings_a:?} {pings_b:?}");
        }
    }

    #[test]
    fn a_removed_tunnel_is_not_checked() {
        let t0 = Instant::now();
        let mut l = Liveness::new(200 * MS, 600 * MS, t0);
        l.insert(TunnelId(1), MS, t0, true);
        l.insert(TunnelId(2), MS, t0, true);
        l.remove(TunnelId(1));
        l.handle_timeout(t0 + 10_000 * MS);
        let mut seen = Vec::new();
        while let Some(a) = l.poll_action() {
            seen.push(a);
        }
        assert!(seen.iter().all(|a| match a {
            Action::Ping(t) => *t == TunnelId(2),
            Action::Suspect { tunnel, .. } => *tunnel == TunnelId(2),
        }));
        assert_eq!(seen.len(), 2);
    }
}
