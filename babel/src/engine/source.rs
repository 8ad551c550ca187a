//! Source table: feasibility distances (RFC 8966 §3.2.5, §3.5.1, §3.7.3).
//!
//! For every (prefix, router-id) we have announced, the best (seqno, metric)
//! pair we ever announced: the feasibility distance (FD). A received route
//! is feasible only if it is strictly better than the FD, which is what makes
//! Babel loop-free at all times, even while updates are in flight.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::metric::seqno_cmp;
use crate::wire::{INFINITY, RouterId};

/// A feasibility distance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Source {
    pub(crate) seqno: u16,
    pub(crate) metric: u16,
    refreshed: Instant,
}

/// The feasibility condition on a (seqno, metric) pair against an FD
/// (`None`: no entry). RFC 8966 §3.5.1: feasible iff it is a retraction, or
/// there is no entry, or the seqno is newer, or the seqno is the same and
/// the metric strictly smaller. Incomparable seqnos (32768 apart) are not
/// feasible.
pub(crate) fn feasible(fd: Option<(u16, u16)>, seqno: u16, metric: u16) -> bool {
    if metric == INFINITY {
        return true;
    }
    let Some((fd_seqno, fd_metric)) = fd else {
        return true;
    };
    match seqno_cmp(seqno, fd_seqno) {
        Some(Ordering::Greater) => true,
        Some(Ordering::Equal) => metric < fd_metric,
        Some(Ordering::Less) | None => false,
    }
}

/// FDs by prefix, then router-id (a prefix rarely has more than one
/// source, so the inner list is scanned). Ordered maps rather than hashes:
/// keys come from the network and must not be able to degrade lookups.
#[derive(Debug)]
pub(crate) struct SourceTable {
    entries: BTreeMap<IpNet, Vec<(RouterId, Source)>>,
    gc: Duration,
    /// A lower bound of the next GC deadline (refreshes only move entries'
    /// deadlines later, so it stays a bound until `expire` recomputes it).
    deadline: Option<Instant>,
}

/// The FDs of one prefix, for checking several routes at once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SourceView<'a> {
    sources: &'a [(RouterId, Source)],
    gc: Duration,
}

impl SourceView<'_> {
    /// The live FD for `rid`; an entry older than the GC time counts as
    /// absent even before the timer removes it.
    pub(crate) fn get(&self, rid: RouterId, now: Instant) -> Option<&Source> {
        self.sources
            .iter()
            .find(|(r, _)| *r == rid)
            .map(|(_, s)| s)
            .filter(|s| now.saturating_duration_since(s.refreshed) < self.gc)
    }

    pub(crate) fn is_feasible(&self, rid: RouterId, seqno: u16, metric: u16, now: Instant) -> bool {
        let fd = self.get(rid, now).map(|s| (s.seqno, s.metric));
        feasible(fd, seqno, metric)
    }
}

impl SourceTable {
    pub(crate) fn new(gc: Duration) -> Self {
        SourceTable {
            entries: BTreeMap::new(),
            gc,
            deadline: None,
        }
    }

    /// The FDs of `prefix`.
    pub(crate) fn view(&self, prefix: &IpNet) -> SourceView<'_> {
        SourceView {
            sources: self.entries.get(prefix).map_or(&[], Vec::as_slice),
            gc: self.gc,
        }
    }

    pub(crate) fn get(&self, prefix: IpNet, rid: RouterId, now: Instant) -> Option<&Source> {
        let gc = self.gc;
        self.entries
            .get(&prefix)?
            .iter()
            .find(|(r, _)| *r == rid)
            .map(|(_, s)| s)
            .filter(|s| now.saturating_duration_since(s.refreshed) < gc)
    }

    pub(crate) fn is_feasible(
        &self,
        prefix: IpNet,
        rid: RouterId,
        seqno: u16,
        metric: u16,
        now: Instant,
    ) -> bool {
        self.view(&prefix).is_feasible(rid, seqno, metric, now)
    }

    /// Records that we announced (seqno, metric) for (prefix, router-id)
    /// (RFC 8966 §3.7.3): the FD moves only towards "better", and the entry
    /// is refreshed. Retractions do not touch it.
    pub(crate) fn update_on_send(
        &mut self,
        prefix: IpNet,
        rid: RouterId,
        seqno: u16,
        metric: u16,
        now: Instant,
    ) {
        if metric == INFINITY {
            return;
        }
        let gc = self.gc;
        let list = self.entries.entry(prefix).or_default();
        let Some((_, e)) = list.iter_mut().find(|(r, _)| *r == rid) else {
            list.push((
                rid,
                Source {
                    seqno,
                    metric,
                    refreshed: now,
                },
            ));
            let t = now + gc;
            self.deadline = Some(self.deadline.map_or(t, |d| d.min(t)));
            return;
        };
        let stale = now.saturating_duration_since(e.refreshed) >= gc;
        let better = match seqno_cmp(seqno, e.seqno) {
            Some(Ordering::Greater) => true,
            Some(Ordering::Equal) => metric < e.metric,
            _ => false,
        };
        if stale || better {
            e.seqno = seqno;
            e.metric = metric;
        }
        e.refreshed = now;
    }

    /// Drops entries not refreshed for the GC time.
    pub(crate) fn expire(&mut self, now: Instant) {
        let gc = self.gc;
        let mut deadline: Option<Instant> = None;
        self.entries.retain(|_, list| {
            list.retain(|(_, s)| now.saturating_duration_since(s.refreshed) < gc);
            for (_, s) in list.iter() {
                let t = s.refreshed + gc;
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
            !list.is_empty()
        });
        self.deadline = deadline;
    }

    /// No later than the next GC deadline (possibly earlier).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RID: RouterId = RouterId([1, 2, 3, 4, 5, 6, 7, 8]);

    fn p() -> IpNet {
        "fd00:1::/64".parse().unwrap()
    }

    #[test]
    fn feasibility_truth_table() {
        // No entry: anything is feasible.
        assert!(feasible(None, 5, 100));
        // Retraction: always feasible.
        assert!(feasible(Some((5, 100)), 1, INFINITY));
        // Newer seqno, any metric.
        assert!(feasible(Some((5, 100)), 6, 60000));
        // Same seqno: strictly smaller metric only.
        assert!(feasible(Some((5, 100)), 5, 99));
        assert!(!feasible(Some((5, 100)), 5, 100));
        assert!(!feasible(Some((5, 100)), 5, 101));
        // Older seqno: never, even with a tiny metric.
        assert!(!feasible(Some((5, 100)), 4, 0));
        // Across the wrap.
        assert!(feasible(Some((65535, 100)), 0, 500));
        assert!(!feasible(Some((0, 100)), 65535, 0));
        // Incomparable (32768 apart): not feasible.
        assert!(!feasible(Some((0, 100)), 32768, 0));
        assert!(!feasible(Some((32768, 100)), 0, 0));
    }

    #[test]
    fn fd_moves_only_towards_better_and_is_refreshed() {
        let t0 = Instant::now();
        let mut s = SourceTable::new(Duration::from_secs(180));
        s.update_on_send(p(), RID, 5, 300, t0);
        s.update_on_send(p(), RID, 5, 400, t0); // worse: FD stays
        assert_eq!(
            s.get(p(), RID, t0).map(|s| (s.seqno, s.metric)),
            Some((5, 300))
        );
        s.update_on_send(p(), RID, 5, 200, t0); // better
        assert_eq!(s.get(p(), RID, t0).map(|s| s.metric), Some(200));
        s.update_on_send(p(), RID, 4, 10, t0); // older seqno: ignored
        assert_eq!(
            s.get(p(), RID, t0).map(|s| (s.seqno, s.metric)),
            Some((5, 200))
        );
        s.update_on_send(p(), RID, 6, 900, t0); // newer seqno, worse metric
        assert_eq!(
            s.get(p(), RID, t0).map(|s| (s.seqno, s.metric)),
            Some((6, 900))
        );
        s.update_on_send(p(), RID, 6, INFINITY, t0); // retraction: no effect
        assert_eq!(s.get(p(), RID, t0).map(|s| s.metric), Some(900));
        assert!(!s.is_feasible(p(), RID, 6, 900, t0));
        assert!(s.is_feasible(p(), RID, 6, 899, t0));
        // Refreshing keeps it alive past the first GC deadline.
        s.update_on_send(p(), RID, 6, 1000, t0 + Duration::from_secs(100));
        // The deadline is a lower bound until a GC pass recomputes it.
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(180)));
        s.expire(t0 + Duration::from_secs(200));
        assert_eq!(s.len(), 1);
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(280)));
    }

    #[test]
    fn source_gc() {
        let t0 = Instant::now();
        let mut s = SourceTable::new(Duration::from_secs(180));
        s.update_on_send(p(), RID, 5, 300, t0);
        // Stale entries count as absent before the timer runs...
        assert!(s.is_feasible(p(), RID, 1, 60000, t0 + Duration::from_secs(180)));
        // ...and a stale entry is overwritten even by a worse announcement.
        s.update_on_send(p(), RID, 1, 60000, t0 + Duration::from_secs(181));
        assert_eq!(
            s.get(p(), RID, t0 + Duration::from_secs(181))
                .map(|s| (s.seqno, s.metric)),
            Some((1, 60000))
        );
        s.expire(t0 + Duration::from_secs(400));
        assert_eq!(s.len(), 0);
        assert_eq!(s.next_deadline(), None);
    }
}
