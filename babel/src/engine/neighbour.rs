//! Neighbour table (RFC 8966 §3.4, Appendix A; RFC 9616 §3).
//!
//! One entry per (interface, address): two Hello histories (multicast and
//! unicast, which have separate seqno spaces since RFC 8966), the txcost
//! learned from IHUs, and the RTT state. The link cost is cached here and
//! recomputed whenever one of its inputs changes, so the route table can read
//! it without recomputing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::IfaceId;
use super::config::LinkParams;
use crate::metric::link_cost;
use crate::wire::INFINITY;

/// Index of a neighbour in the table; stable for the neighbour's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NeighbourId(pub(crate) u32);

/// A Hello seqno further than this from the expected one resets the history
/// (RFC 8966 Appendix A.1): the neighbour restarted, or it is a replay.
const HELLO_RESET_DISTANCE: u16 = 16;

/// What receiving a Hello did to a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HelloOutcome {
    /// In sequence, early or slightly late.
    Accepted,
    /// Too far from the expected seqno: the history was flushed first.
    Reset,
}

/// A 16-Hello reception history for one Hello stream (RFC 8966 A.1).
///
/// Bit 15 is the most recent Hello. Missed Hellos are shifted in as zeros by
/// a timer that fires 1.5 intervals after the last Hello, then once per
/// interval (babeld uses 1.7, BIRD 1.5).
#[derive(Clone, Debug, Default)]
pub(crate) struct HelloHistory {
    reach: u16,
    expected: Option<u16>,
    interval: Option<Duration>,
    /// When the next missed Hello is counted.
    timeout: Option<Instant>,
}

impl HelloHistory {
    pub(crate) fn reach(&self) -> u16 {
        self.reach
    }

    pub(crate) fn timeout(&self) -> Option<Instant> {
        self.timeout
    }

    /// Records a Hello. `interval` zero marks an unscheduled Hello, which
    /// counts as received but moves no timer; `fallback` is used as the
    /// interval when the neighbour never announced one.
    pub(crate) fn receive(
        &mut self,
        seqno: u16,
        interval: Duration,
        fallback: Duration,
        now: Instant,
    ) -> HelloOutcome {
        let mut outcome = HelloOutcome::Accepted;
        if let Some(expected) = self.expected {
            // Signed distance modulo 2^16.
            let d = seqno.wrapping_sub(expected) as i16;
            if d.unsigned_abs() > HELLO_RESET_DISTANCE {
                self.reach = 0;
                outcome = HelloOutcome::Reset;
            } else if d < 0 {
                // Late: undo the zeros shifted in for Hellos counted missed.
                self.reach = self
                    .reach
                    .checked_shl(u32::from(d.unsigned_abs()))
                    .unwrap_or(0);
            } else if d > 0 {
                // Hellos we never saw and did not count yet.
                self.reach = self.reach.checked_shr(d.unsigned_abs().into()).unwrap_or(0);
            }
        }
        self.reach = (self.reach >> 1) | 0x8000;
        self.expected = Some(seqno.wrapping_add(1));
        if !interval.is_zero() {
            self.interval = Some(interval);
        }
        if !interval.is_zero() || self.timeout.is_none() {
            let i = self.interval.unwrap_or(fallback);
            self.timeout = Some(now + i + i / 2);
        }
        outcome
    }

    /// Counts the Hellos missed up to `now`. Returns whether the history
    /// changed.
    pub(crate) fn check(&mut self, fallback: Duration, now: Instant) -> bool {
        let mut changed = false;
        let step = self
            .interval
            .unwrap_or(fallback)
            .max(Duration::from_millis(10));
        while let Some(t) = self.timeout {
            if t > now {
                break;
            }
            self.reach >>= 1;
            self.expected = self.expected.map(|e| e.wrapping_add(1));
            changed = true;
            self.timeout = if self.reach == 0 {
                None
            } else {
                Some(t + step)
            };
        }
        changed
    }

    /// rxcost from this history alone (RFC 8966 A.2.1, babeld): on a LAN
    /// two of the last three Hellos; on a tunnel, which the transport already
    /// knows to be up and bidirectional, any one of the last three.
    fn rxcost(&self, nominal: u16, tunnel: bool) -> u16 {
        let r = self.reach;
        let ok = if tunnel {
            r & 0xE000 != 0
        } else {
            r & 0xC000 == 0xC000 || (r & 0xC000 != 0 && r & 0x2000 != 0)
        };
        if ok { nominal } else { INFINITY }
    }
}

/// The last timestamped Hello heard from a neighbour, echoed in our IHUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HelloStamp {
    /// The neighbour's origin timestamp (its t3, our future t1 echo).
    pub(crate) origin: u32,
    /// Our timestamp when it arrived.
    pub(crate) receive: u32,
    /// When it arrived.
    pub(crate) at: Instant,
}

/// An RFC 9616 echo older than this is not sent (babeld: 1000 s).
pub(crate) const STAMP_MAX_AGE: Duration = Duration::from_secs(1000);

/// One neighbour.
#[derive(Clone, Debug)]
pub(crate) struct Neighbour {
    pub(crate) iface: IfaceId,
    pub(crate) addr: IpAddr,
    pub(crate) tunnel: bool,
    pub(crate) mcast: HelloHistory,
    pub(crate) ucast: HelloHistory,
    /// Cost announced by the neighbour for receiving from us.
    pub(crate) txcost: u16,
    pub(crate) ihu_expires: Option<Instant>,
    pub(crate) hello_stamp: Option<HelloStamp>,
    /// Smoothed RTT in microseconds, once a sample arrived. Kept when
    /// samples stop (babeld drops it to zero after 180 s, which makes a link
    /// whose timestamps broke look fast).
    pub(crate) rtt: Option<u32>,
    pub(crate) rtt_samples: u64,
    /// Cached link cost (`metric::link_cost` of the fields above).
    pub(crate) cost: u16,
}

impl Neighbour {
    pub(crate) fn rxcost(&self, params: &LinkParams) -> u16 {
        self.mcast
            .rxcost(params.rxcost, self.tunnel)
            .min(self.ucast.rxcost(params.rxcost, self.tunnel))
    }

    pub(crate) fn rtt_penalty(&self, params: &LinkParams) -> u16 {
        self.rtt.map_or(0, |rtt| params.rtt.penalty(rtt))
    }

    /// Recomputes the cached cost, plus the interface's `extra` (a finite
    /// cost stays finite); returns whether it changed.
    pub(crate) fn update_cost(&mut self, params: &LinkParams, extra: u16) -> bool {
        let mut cost = link_cost(self.rxcost(params), self.txcost, self.rtt_penalty(params));
        if cost < INFINITY {
            cost = cost.saturating_add(extra).min(INFINITY - 1);
        }
        let changed = cost != self.cost;
        self.cost = cost;
        changed
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [self.mcast.timeout(), self.ucast.timeout(), self.ihu_expires]
            .into_iter()
            .flatten()
            .min()
    }

    /// Both histories are empty: nothing heard for 16 Hello intervals.
    pub(crate) fn is_dead(&self) -> bool {
        self.mcast.reach() == 0 && self.ucast.reach() == 0
    }

    /// Applies missed Hellos and IHU expiry up to `now`; returns whether
    /// anything changed.
    pub(crate) fn check(&mut self, fallback: Duration, now: Instant) -> bool {
        let mut changed = self.mcast.check(fallback, now);
        changed |= self.ucast.check(fallback, now);
        if self.ihu_expires.is_some_and(|t| t <= now) {
            self.ihu_expires = None;
            self.txcost = INFINITY;
            changed = true;
        }
        changed
    }

    /// Marginal neighbours get an IHU with every Hello (babeld): the link
    /// is lossy or the neighbour does not hear us well.
    pub(crate) fn is_marginal(&self) -> bool {
        self.txcost >= 384 || self.mcast.reach() & 0xF000 != 0xF000
    }
}

/// Neighbours by id, and by (interface, address).
#[derive(Debug, Default)]
pub(crate) struct NeighbourTable {
    slots: Vec<Option<Neighbour>>,
    free: Vec<u32>,
    index: HashMap<(IfaceId, IpAddr), NeighbourId>,
}

impl NeighbourTable {
    pub(crate) fn find(&self, iface: IfaceId, addr: IpAddr) -> Option<NeighbourId> {
        self.index.get(&(iface, addr)).copied()
    }

    pub(crate) fn get(&self, id: NeighbourId) -> Option<&Neighbour> {
        self.slots.get(id.0 as usize).and_then(Option::as_ref)
    }

    pub(crate) fn get_mut(&mut self, id: NeighbourId) -> Option<&mut Neighbour> {
        self.slots.get_mut(id.0 as usize).and_then(Option::as_mut)
    }

    /// Cost of the link to `id`; infinite for an unknown id.
    pub(crate) fn cost(&self, id: NeighbourId) -> u16 {
        self.get(id).map_or(INFINITY, |n| n.cost)
    }

    pub(crate) fn count_on(&self, iface: IfaceId) -> usize {
        self.index.keys().filter(|(i, _)| *i == iface).count()
    }

    /// Creates a neighbour that has not been heard yet.
    pub(crate) fn insert(&mut self, iface: IfaceId, addr: IpAddr, tunnel: bool) -> NeighbourId {
        let n = Neighbour {
            iface,
            addr,
            tunnel,
            mcast: HelloHistory::default(),
            ucast: HelloHistory::default(),
            txcost: INFINITY,
            ihu_expires: None,
            hello_stamp: None,
            rtt: None,
            rtt_samples: 0,
            cost: INFINITY,
        };
        let id = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(n);
                NeighbourId(slot)
            }
            None => {
                let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Some(n));
                NeighbourId(slot)
            }
        };
        self.index.insert((iface, addr), id);
        id
    }

    /// Removes a neighbour. The caller has removed its routes first.
    pub(crate) fn remove(&mut self, id: NeighbourId) -> Option<Neighbour> {
        let n = self.slots.get_mut(id.0 as usize)?.take()?;
        self.index.remove(&(n.iface, n.addr));
        self.free.push(id.0);
        Some(n)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (NeighbourId, &Neighbour)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((NeighbourId(i as u32), n.as_ref()?)))
    }

    pub(crate) fn ids(&self) -> Vec<NeighbourId> {
        self.iter().map(|(id, _)| id).collect()
    }

    pub(crate) fn ids_on(&self, iface: IfaceId) -> Vec<NeighbourId> {
        self.iter()
            .filter(|(_, n)| n.iface == iface)
            .map(|(id, _)| id)
            .collect()
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.iter().filter_map(|(_, n)| n.next_deadline()).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_secs(4);

    fn hist(seqnos: &[u16]) -> (HelloHistory, Instant) {
        let t0 = Instant::now();
        let mut h = HelloHistory::default();
        for (k, s) in seqnos.iter().enumerate() {
            h.receive(*s, I, I, t0 + I * k as u32);
        }
        (h, t0)
    }

    #[test]
    fn in_sequence_hellos_fill_the_history() {
        let (h, _) = hist(&[10, 11, 12]);
        assert_eq!(h.reach(), 0xE000);
        assert_eq!(h.rxcost(96, false), 96);
    }

    #[test]
    fn gap_in_seqnos_counts_missing_hellos() {
        // 11 and 12 never arrived.
        let (h, _) = hist(&[10, 13]);
        assert_eq!(h.reach(), 0b1001 << 12);
        assert_eq!(h.rxcost(96, false), INFINITY);
        // A tunnel accepts one Hello out of the last three.
        assert_eq!(h.rxcost(96, true), 96);
    }

    #[test]
    fn two_of_three_rule() {
        assert_eq!(hist(&[1, 2]).0.rxcost(96, false), 96);
        assert_eq!(hist(&[1, 3]).0.rxcost(96, false), 96); // 101
        // 1011: the newest, a miss, then two: still two of the last three.
        assert_eq!(hist(&[1, 2, 4]).0.rxcost(96, false), 96);
        // 1001: one of the last three.
        assert_eq!(hist(&[1, 4]).0.rxcost(96, false), INFINITY);
    }

    #[test]
    fn first_hello_is_enough_on_a_tunnel_not_on_a_lan() {
        let (h, _) = hist(&[500]);
        assert_eq!(h.rxcost(96, true), 96);
        assert_eq!(h.rxcost(96, false), INFINITY);
    }

    #[test]
    fn missed_hellos_are_counted_by_the_timer() {
        let (mut h, t0) = hist(&[1, 2, 3]);
        // Last Hello at t0 + 8 s; first miss at +1.5 I.
        assert_eq!(h.timeout(), Some(t0 + I * 2 + I + I / 2));
        assert!(!h.check(I, t0 + I * 3));
        assert!(h.check(I, t0 + I * 3 + I / 2));
        assert_eq!(h.reach(), 0x7000);
        // Two more intervals.
        assert!(h.check(I, t0 + I * 5 + I / 2));
        assert_eq!(h.reach(), 0x1C00);
        assert_eq!(h.rxcost(96, true), INFINITY);
        // Late arrival of seqno 4 (counted missed): undone, not double-counted.
        let mut late = hist(&[1, 2, 3]).0;
        late.check(I, t0 + I * 3 + I / 2); // 4 counted missed, expected 5
        late.receive(4, I, I, t0 + I * 3 + I * 3 / 4);
        assert_eq!(late.reach(), 0xF000);
    }

    #[test]
    fn all_missed_empties_and_stops_the_timer() {
        let (mut h, t0) = hist(&[1]);
        assert!(h.check(I, t0 + I * 100));
        assert_eq!(h.reach(), 0);
        assert_eq!(h.timeout(), None);
    }

    #[test]
    fn restart_or_replay_resets_the_history() {
        let (mut h, t0) = hist(&[100, 101, 102, 103]);
        // A neighbour that restarted with seqno 7.
        assert_eq!(h.receive(7, I, I, t0 + I * 5), HelloOutcome::Reset);
        assert_eq!(h.reach(), 0x8000);
        // 16 ahead is still a gap, 17 resets.
        let (mut g, _) = hist(&[0]);
        assert_eq!(g.receive(17, I, I, t0), HelloOutcome::Accepted);
        assert_eq!(g.reach(), 0x8000);
        let (mut r, _) = hist(&[0]);
        assert_eq!(r.receive(18, I, I, t0), HelloOutcome::Reset);
    }

    #[test]
    fn seqno_wrap_is_in_sequence() {
        let (h, _) = hist(&[65534, 65535, 0, 1]);
        assert_eq!(h.reach(), 0xF000);
    }

    #[test]
    fn unscheduled_hello_does_not_move_the_timer() {
        let (mut h, t0) = hist(&[1]);
        let before = h.timeout();
        h.receive(2, Duration::ZERO, I, t0 + I / 2);
        assert_eq!(h.timeout(), before);
        assert_eq!(h.reach(), 0xC000);
    }
}
