//! What the probes say, as a pure function of what happened: which pairs
//! were live, which probes they answered, how long each pair stayed
//! broken, and which fault each outage follows.
//!
//! A node is *live* while its process runs, is not frozen, isolated or
//! revoked, and the soak knows its address. A probe counts only when both
//! its ends were live over its whole window (sent, sent + timeout); a probe
//! cut by a fault on one of its ends says nothing about the network.
//!
//! An *outage* is a run of consecutive lost probes of one live pair. Its
//! length is from the first lost probe to the first answered one after it
//! (probes go every period, so `k` lost probes make about `k` periods):
//! the resolution is one probe period. A run that ends because the pair
//! stops being live ends there, marked `cut`.

use std::collections::HashMap;
use std::time::Duration;

use super::chaos::EventKind;

/// Whether a node counts, over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeState {
    /// Not running, frozen, isolated, or not yet known.
    Down,
    /// Running and expected to be reachable.
    Live,
    /// Its certificate was revoked: expected to be cut off.
    Revoked,
}

/// Every node's state changes, in time order.
#[derive(Debug, Default, Clone)]
pub(crate) struct Timeline {
    nodes: Vec<Vec<(Duration, NodeState)>>,
}

impl Timeline {
    /// `n` nodes, all down at time zero.
    pub(crate) fn new(n: usize) -> Self {
        Self {
            nodes: vec![vec![(Duration::ZERO, NodeState::Down)]; n],
        }
    }

    /// Node `node` is in `state` from `at` (not before its last change).
    pub(crate) fn set(&mut self, node: usize, at: Duration, state: NodeState) {
        let changes = &mut self.nodes[node];
        let at = at.max(changes.last().map_or(Duration::ZERO, |c| c.0));
        if changes.last().map(|c| c.1) != Some(state) {
            changes.push((at, state));
        }
    }

    /// The state of `node` at `t`.
    pub(crate) fn state_at(&self, node: usize, t: Duration) -> NodeState {
        let changes = &self.nodes[node];
        let i = changes.partition_point(|c| c.0 <= t);
        changes[i.saturating_sub(1)].1
    }

    /// The state of `node` now.
    pub(crate) fn state(&self, node: usize) -> NodeState {
        self.nodes[node].last().map_or(NodeState::Down, |c| c.1)
    }

    /// Whether `node` was live over all of `[from, to]`.
    pub(crate) fn live_over(&self, node: usize, from: Duration, to: Duration) -> bool {
        let changes = &self.nodes[node];
        let i = changes.partition_point(|c| c.0 <= from);
        changes[i.saturating_sub(1)].1 == NodeState::Live
            && changes[i..]
                .iter()
                .all(|c| c.0 > to || c.1 == NodeState::Live)
    }
}

/// One probe's fate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Probe {
    /// The node it was sent from.
    pub src: usize,
    /// The node it was sent to.
    pub dst: usize,
    /// When it was sent (since the soak started).
    pub sent: Duration,
    /// Its round-trip time, or `None` when no answer came in time.
    pub rtt: Option<Duration>,
}

/// A run of lost probes of one pair.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outage {
    /// The pair.
    pub src: usize,
    /// The pair.
    pub dst: usize,
    /// When the first lost probe was sent.
    pub start: Duration,
    /// When the first answered probe after it was sent (or when the pair
    /// stopped being live, or the end).
    pub end: Duration,
    /// Probes lost in a row.
    pub lost: u32,
    /// Ended by the pair leaving the live set (or by the end), not by an
    /// answer.
    pub cut: bool,
}

impl Outage {
    /// How long the pair stayed broken, to a probe period.
    pub(crate) fn length(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }
}

#[derive(Debug, Clone, Copy)]
struct Run {
    start: Duration,
    last: Duration,
    lost: u32,
}

/// Counted and answered probes over one bucket of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// Probes of live pairs.
    pub counted: u32,
    /// Of them, answered.
    pub answered: u32,
}

/// Feeds on probes in send order and keeps the tallies.
#[derive(Debug)]
pub(crate) struct Analyzer {
    period: Duration,
    timeout: Duration,
    bucket: Duration,
    runs: HashMap<(usize, usize), Run>,
    /// Probes of live pairs.
    pub(crate) counted: u64,
    /// Of them, answered.
    pub(crate) answered: u64,
    /// Round-trip times of answered probes, in microseconds.
    pub(crate) rtts_us: Vec<u32>,
    /// Finished outages.
    pub(crate) outages: Vec<Outage>,
    /// Counted and answered probes per bucket of time.
    pub(crate) buckets: Vec<Bucket>,
    /// Probes answered by a revoked node (or sent from one): the node and
    /// when the probe was sent.
    pub(crate) revoked_answers: Vec<(usize, Duration)>,
    /// Answered probes whose pair was not live (a revoked node still
    /// reachable is one; a node that froze just after is another).
    pub(crate) answered_not_live: u64,
}

impl Analyzer {
    /// Probes go every `period` per pair and wait `timeout` for an answer;
    /// the time series has one `bucket` per entry.
    pub(crate) fn new(period: Duration, timeout: Duration, bucket: Duration) -> Self {
        Self {
            period,
            timeout,
            bucket,
            runs: HashMap::new(),
            counted: 0,
            answered: 0,
            rtts_us: Vec::new(),
            outages: Vec::new(),
            buckets: Vec::new(),
            revoked_answers: Vec::new(),
            answered_not_live: 0,
        }
    }

    /// One probe (probes come in the order they were sent, at least per
    /// pair), judged against `timeline`.
    pub(crate) fn handle_probe(&mut self, p: Probe, timeline: &Timeline) {
        let window_end = p.sent + self.timeout;
        let live = timeline.live_over(p.src, p.sent, window_end)
            && timeline.live_over(p.dst, p.sent, window_end);
        let key = (p.src, p.dst);
        if !live {
            if p.rtt.is_some() {
                self.answered_not_live += 1;
                for n in [p.src, p.dst] {
                    if timeline.state_at(n, p.sent) == NodeState::Revoked {
                        self.revoked_answers.push((n, p.sent));
                    }
                }
            }
            if let Some(run) = self.runs.remove(&key) {
                let end = p.sent.min(run.last + self.period);
                self.close(key, run, end, true);
            }
            return;
        }
        self.counted += 1;
        let b = usize::try_from(p.sent.as_millis() / self.bucket.as_millis().max(1))
            .unwrap_or(usize::MAX);
        if b < 1_000_000 {
            if self.buckets.len() <= b {
                self.buckets.resize(b + 1, Bucket::default());
            }
            self.buckets[b].counted += 1;
        }
        match p.rtt {
            Some(rtt) => {
                self.answered += 1;
                self.rtts_us
                    .push(u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX));
                if let Some(bucket) = self.buckets.get_mut(b) {
                    bucket.answered += 1;
                }
                if let Some(run) = self.runs.remove(&key) {
                    self.close(key, run, p.sent, false);
                }
            }
            None => {
                let run = self.runs.entry(key).or_insert(Run {
                    start: p.sent,
                    last: p.sent,
                    lost: 0,
                });
                run.last = p.sent;
                run.lost += 1;
            }
        }
    }

    fn close(&mut self, (src, dst): (usize, usize), run: Run, end: Duration, cut: bool) {
        self.outages.push(Outage {
            src,
            dst,
            start: run.start,
            end: end.max(run.last),
            lost: run.lost,
            cut,
        });
    }

    /// Ends the runs still open at `end`.
    pub(crate) fn finish(&mut self, end: Duration) {
        let mut open: Vec<((usize, usize), Run)> = self.runs.drain().collect();
        open.sort_by_key(|(k, _)| *k);
        for (key, run) in open {
            let e = end.min(run.last + self.period);
            self.close(key, run, e, true);
        }
        self.outages.sort_by_key(|o| (o.start, o.src, o.dst));
    }

    /// Answered share of the probes of live pairs, in percent.
    pub(crate) fn reachability(&self) -> f64 {
        if self.counted == 0 {
            return 0.0;
        }
        100.0 * self.answered as f64 / self.counted as f64
    }
}

/// Something the soak did, as the report sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    /// When.
    pub at: Duration,
    /// What.
    pub kind: EventKind,
    /// To which nodes.
    pub nodes: Vec<usize>,
}

/// The event an outage follows:
/// 1. the latest event that hit an end of the pair, if the outage began
///    near it or within its `recovery` (plus a period): a node that just
///    started, thawed or rejoined is not reachable at once, and one under
///    netem stays lossy until the netem ends;
/// 2. otherwise, among the events from one period (plus half a second)
///    before the first lost probe to one timeout after it, the latest that
///    can break paths between other nodes;
/// 3. otherwise a netem still in force (the pair's path may cross it):
///    a lossy link explains lost probes better than a nearby event that
///    breaks no path;
/// 4. otherwise the latest event of that window.
///
/// `None`: no fault explains it.
pub(crate) fn blame(
    outage: &Outage,
    events: &[Event],
    period: Duration,
    timeout: Duration,
    recovery: impl Fn(EventKind) -> Duration,
) -> Option<usize> {
    let from = outage
        .start
        .saturating_sub(period + Duration::from_millis(500));
    let to = outage.start + timeout;
    let hi = events.partition_point(|e| e.at <= to);
    let touches = |e: &Event| e.nodes.contains(&outage.src) || e.nodes.contains(&outage.dst);
    if let Some(i) = (0..hi).rev().find(|&i| touches(&events[i])) {
        let e = &events[i];
        if e.at >= from
            || e.at.saturating_add(recovery(e.kind)).saturating_add(period) >= outage.start
        {
            return Some(i);
        }
    }
    let window = events.partition_point(|e| e.at < from)..hi;
    window
        .clone()
        .rev()
        .find(|&i| events[i].kind.breaks_transit())
        .or_else(|| {
            // A netem not ended yet.
            (0..hi).rev().find(|&i| {
                let e = &events[i];
                e.kind == EventKind::NetemOn
                    && !events[i + 1..hi]
                        .iter()
                        .any(|x| x.kind == EventKind::NetemOff && x.nodes == e.nodes)
            })
        })
        .or_else(|| window.clone().next_back())
}

/// Whether `outage`, too long for the event it is blamed on (`blamed`),
/// is within the allowance of an earlier fault that hit one of its ends
/// and was still recovering when it began: a node still rejoining after
/// an isolation when one of its links is cut is allowed the rejoin's time,
/// not only the cut's. `allowed` gives the longest outage allowed after an
/// event of a kind (its bar and resolution), `recovery` how long after it
/// an outage of its nodes may still be its doing.
pub(crate) fn allowed_by_earlier_fault(
    outage: &Outage,
    events: &[Event],
    blamed: usize,
    period: Duration,
    allowed: impl Fn(EventKind) -> Duration,
    recovery: impl Fn(EventKind) -> Duration,
) -> bool {
    events[..blamed.min(events.len())].iter().any(|e| {
        (e.nodes.contains(&outage.src) || e.nodes.contains(&outage.dst))
            && e.at.saturating_add(recovery(e.kind)).saturating_add(period) >= outage.start
            && outage.length() <= allowed(e.kind)
    })
}

/// The `q` quantile (0..=1) of sorted `v`.
pub(crate) fn quantile<T: Copy>(v: &[T], q: f64) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v.get(i.min(v.len() - 1)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    fn ev(at: f64, kind: EventKind, nodes: &[usize]) -> Event {
        Event {
            at: s(at),
            kind,
            nodes: nodes.to_vec(),
        }
    }

    fn probe(src: usize, dst: usize, sent: f64, ok: bool) -> Probe {
        Probe {
            src,
            dst,
            sent: s(sent),
            rtt: ok.then(|| Duration::from_millis(2)),
        }
    }

    fn all_live(n: usize) -> Timeline {
        let mut t = Timeline::new(n);
        for i in 0..n {
            t.set(i, Duration::ZERO, NodeState::Live);
        }
        t
    }

    #[test]
    fn timeline_answers_over_windows() {
        let mut t = Timeline::new(2);
        t.set(0, s(1.0), NodeState::Live);
        t.set(0, s(5.0), NodeState::Down);
        t.set(0, s(7.0), NodeState::Live);
        assert_eq!(t.state_at(0, s(0.5)), NodeState::Down);
        assert_eq!(t.state_at(0, s(1.0)), NodeState::Live);
        assert_eq!(t.state_at(0, s(6.0)), NodeState::Down);
        assert!(t.live_over(0, s(1.0), s(4.9)));
        assert!(!t.live_over(0, s(4.5), s(5.5)));
        assert!(!t.live_over(0, s(6.5), s(7.5)));
        assert!(t.live_over(0, s(7.0), s(100.0)));
        assert!(!t.live_over(1, s(0.0), s(1.0)));
        // A change in the past is recorded at the last change's time.
        t.set(0, s(3.0), NodeState::Revoked);
        assert_eq!(t.state_at(0, s(7.0)), NodeState::Revoked);
        assert_eq!(t.state(0), NodeState::Revoked);
    }

    #[test]
    fn a_run_of_lost_probes_is_one_outage() {
        let t = all_live(2);
        let mut a = Analyzer::new(s(1.0), s(1.0), s(10.0));
        for (k, ok) in [true, true, false, false, false, true, true]
            .iter()
            .enumerate()
        {
            a.handle_probe(probe(0, 1, k as f64, *ok), &t);
        }
        a.finish(s(10.0));
        assert_eq!((a.counted, a.answered), (7, 4));
        assert_eq!(a.outages.len(), 1);
        let o = &a.outages[0];
        assert_eq!((o.start, o.end, o.lost, o.cut), (s(2.0), s(5.0), 3, false));
        assert_eq!(o.length(), s(3.0));
        assert!((a.reachability() - 400.0 / 7.0).abs() < 1e-9);
        assert_eq!(
            a.buckets,
            vec![Bucket {
                counted: 7,
                answered: 4
            }]
        );
    }

    #[test]
    fn probes_of_pairs_that_are_not_live_do_not_count() {
        let mut t = all_live(3);
        // Node 1 dies at 3.5 s and is back at 6 s.
        t.set(1, s(3.5), NodeState::Down);
        t.set(1, s(6.0), NodeState::Live);
        let mut a = Analyzer::new(s(1.0), s(1.0), s(10.0));
        for k in 0..9 {
            let ok = !(3..7).contains(&k);
            a.handle_probe(probe(0, 1, k as f64, ok), &t);
            a.handle_probe(probe(0, 2, k as f64, true), &t);
        }
        a.finish(s(10.0));
        // Pair 0-1: probe 3 (window to 4 s) is not counted (1 died in it),
        // nor 4 and 5; 6 (lost: the node is back but not reachable yet)
        // starts an outage that probe 7 ends.
        assert_eq!(a.counted, 9 + 6);
        assert_eq!(a.outages.len(), 1);
        assert_eq!((a.outages[0].start, a.outages[0].end), (s(6.0), s(7.0)));
    }

    #[test]
    fn an_outage_cut_by_a_fault_ends_there() {
        let mut t = all_live(2);
        t.set(1, s(4.5), NodeState::Down);
        let mut a = Analyzer::new(s(1.0), s(1.0), s(10.0));
        for k in 0..8 {
            a.handle_probe(probe(0, 1, k as f64, k < 2), &t);
        }
        a.finish(s(8.0));
        assert_eq!(a.outages.len(), 1);
        let o = &a.outages[0];
        assert!(o.cut);
        // Lost at 2 and 3; 4 is not counted (1 died in its window).
        assert_eq!((o.start, o.end, o.lost), (s(2.0), s(4.0), 2));
    }

    #[test]
    fn revoked_nodes_that_still_answer_are_seen() {
        let mut t = all_live(2);
        t.set(1, s(2.0), NodeState::Revoked);
        let mut a = Analyzer::new(s(1.0), s(1.0), s(10.0));
        for k in 0..6 {
            a.handle_probe(probe(0, 1, k as f64, k < 4), &t);
        }
        a.finish(s(6.0));
        assert_eq!(a.revoked_answers, vec![(1, s(2.0)), (1, s(3.0))]);
        assert!(a.outages.is_empty());
    }

    #[test]
    fn outages_are_blamed_on_the_fault_before_them() {
        let events = vec![
            ev(10.0, EventKind::Kill, &[5]),
            ev(10.2, EventKind::RegistryKill, &[]),
            ev(20.0, EventKind::Start, &[5]),
            ev(20.1, EventKind::NetemOn, &[7]),
        ];
        let out = |src, dst, start: f64| Outage {
            src,
            dst,
            start: s(start),
            end: s(start + 1.0),
            lost: 1,
            cut: false,
        };
        let (p, t) = (s(1.0), s(1.0));
        let recovery = |k| match k {
            EventKind::Start => s(16.0),
            EventKind::NetemOn => Duration::MAX,
            _ => s(1.0),
        };
        let b = |o: &Outage| blame(o, &events, p, t, recovery);
        // Between two others after the kill: the kill (it breaks transit;
        // the registry does not).
        assert_eq!(b(&out(1, 2, 10.4)), Some(0));
        // To the node that just started: its start, not the netem after,
        // and still while it may be rejoining.
        assert_eq!(b(&out(1, 5, 20.3)), Some(2));
        assert_eq!(b(&out(1, 5, 36.0)), Some(2));
        // After that, only the netem in force may explain it.
        assert_eq!(b(&out(1, 5, 38.0)), Some(3));
        // Between others then: the netem.
        assert_eq!(b(&out(1, 2, 20.3)), Some(3));
        // Later, to the node under netem: the netem, as long as it lasts.
        assert_eq!(b(&out(7, 1, 60.0)), Some(3));
        // Between others, nothing near but a netem in force: the netem.
        assert_eq!(b(&out(1, 2, 40.0)), Some(3));
        // Nothing near, no netem: no fault explains it.
        assert_eq!(b(&out(1, 2, 8.0)), None);
        let mut ended = events.clone();
        ended.push(ev(30.0, EventKind::NetemOff, &[7]));
        assert_eq!(blame(&out(1, 2, 40.0), &ended, p, t, recovery), None);
        assert_eq!(blame(&out(7, 1, 60.0), &ended, p, t, recovery), None);
        // Between others, next to a registry start (which breaks no
        // path) while a netem is in force: the netem.
        let mut registry = events.clone();
        registry.push(ev(50.0, EventKind::RegistryStart, &[]));
        assert_eq!(blame(&out(1, 2, 50.2), &registry, p, t, recovery), Some(3));
        // With the netem over, the registry start is all there is.
        ended.push(ev(50.0, EventKind::RegistryStart, &[]));
        assert_eq!(blame(&out(1, 2, 50.2), &ended, p, t, recovery), Some(5));
    }

    #[test]
    fn an_outage_may_take_the_time_of_an_earlier_fault_still_recovering() {
        // Node 19 rejoins at 100 s; one of its links is cut at 111 s.
        let events = vec![
            ev(100.0, EventKind::Rejoin, &[19]),
            ev(111.0, EventKind::LinkDown, &[15, 19]),
            ev(200.0, EventKind::LinkDown, &[15, 19]),
        ];
        let out = |src, start: f64, len: f64| Outage {
            src,
            dst: 19,
            start: s(start),
            end: s(start + len),
            lost: len as u32,
            cut: false,
        };
        let allowed = |k| match k {
            EventKind::Rejoin => s(28.0),
            _ => s(2.0),
        };
        let recovery = allowed;
        let ok = |o: &Outage, blamed| {
            allowed_by_earlier_fault(o, &events, blamed, s(1.0), allowed, recovery)
        };
        // 3 s after the cut, 11 s into the rejoin: the rejoin allows it.
        assert!(ok(&out(21, 111.1, 3.0), 1));
        // Longer than the rejoin allows: no.
        assert!(!ok(&out(21, 111.1, 29.0), 1));
        // The same cut long after the rejoin: only the cut's bar counts.
        assert!(!ok(&out(21, 200.1, 3.0), 2));
        // A pair that is not the rejoining node's: no.
        let other = Outage {
            dst: 4,
            ..out(21, 111.1, 3.0)
        };
        assert!(!ok(&other, 1));
    }

    #[test]
    fn quantiles() {
        let v = [1, 2, 3, 4, 5];
        assert_eq!(quantile(&v, 0.5), Some(3));
        assert_eq!(quantile(&v, 1.0), Some(5));
        assert_eq!(quantile(&v, 0.0), Some(1));
        assert_eq!(quantile::<u32>(&[], 0.5), None);
    }
}
