//! Exponential back-off per peer: a peer that failed or refused is not dialled
//! again before its delay has passed; the delay doubles at each further
//! failure and is forgotten when a tunnel to the peer comes up. A failure
//! that says nothing about the peer (we were cut off) only holds it for a
//! short fixed time ([`Backoff::hold`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One peer's back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Not dialled before this.
    until: Instant,
    /// The delay that was applied; the next failure doubles it.
    delay: Duration,
}

/// Back-off table. A `BTreeMap` so that iteration (and therefore every
/// decision) is deterministic.
#[derive(Debug, Clone)]
pub(super) struct Backoff<P> {
    entries: BTreeMap<P, Entry>,
    min: Duration,
    max: Duration,
}

impl<P: Ord + Clone> Backoff<P> {
    pub(super) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            entries: BTreeMap::new(),
            min,
            max,
        }
    }

    /// Records a failure of `peer` at `now`; returns the delay applied.
    pub(super) fn failed(&mut self, peer: &P, now: Instant) -> Duration {
        let delay = match self.entries.get(peer) {
            Some(e) => (e.delay * 2).clamp(self.min, self.max),
            None => self.min,
        };
        self.entries.insert(
            peer.clone(),
            Entry {
                until: now + delay,
                delay,
            },
        );
        delay
    }

    /// Holds `peer` back for `delay` without counting a failure (its delay
    /// does not double).
    pub(super) fn hold(&mut self, peer: &P, now: Instant, delay: Duration) {
        let e = self.entries.entry(peer.clone()).or_insert(Entry {
            until: now,
            delay: Duration::ZERO,
        });
        e.until = e.until.max(now + delay);
    }

    /// Forgets every peer's failures.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }

    /// A tunnel to `peer` works: forget its failures.
    pub(super) fn succeeded(&mut self, peer: &P) {
        self.entries.remove(peer);
    }

    /// Whether `peer` may not be dialled at `now`.
    pub(super) fn is_blocked(&self, peer: &P, now: Instant) -> bool {
        self.entries.get(peer).is_some_and(|e| now < e.until)
    }

    /// The earliest time after `now` at which a blocked peer is released.
    pub(super) fn next_release(&self, now: Instant) -> Option<Instant> {
        self.entries
            .values()
            .map(|e| e.until)
            .filter(|&t| t > now)
            .min()
    }

    /// Forgets peers for which `keep` is false (gone from the peer DB), so
    /// the table stays as small as the DB.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&P) -> bool) {
        self.entries.retain(|p, _| keep(p));
    }

    #[cfg(test)]
    pub(super) fn delay_of(&self, peer: &P) -> Option<Duration> {
        self.entries.get(peer).map(|e| e.delay)
    }
}
