//! Metric arithmetic: seqno comparison (RFC 8966 §3.2.1), link cost
//! (§3.4.3, Appendix A) and the RTT extension (RFC 9616 §3-4).
//!
//! Everything here is a pure function of its arguments so that the rules the
//! RFCs spell out can be tested one by one, away from the engine's tables.

use std::cmp::Ordering;
use std::time::Duration;

use crate::wire::INFINITY;

/// Compares two seqnos modulo 2^16 (RFC 8966 §3.2.1).
///
/// `a < b` iff `0 < (b - a) mod 2^16 < 32768`. Two seqnos exactly 32768 apart
/// are incomparable: `None`. babeld answers "greater" both ways there, which
/// would let a replayed seqno look newer; we refuse to order them, so such an
/// update is never feasible by seqno alone.
pub fn seqno_cmp(a: u16, b: u16) -> Option<Ordering> {
    match b.wrapping_sub(a) {
        0 => Some(Ordering::Equal),
        1..=0x7FFF => Some(Ordering::Less),
        0x8000 => None,
        _ => Some(Ordering::Greater),
    }
}

/// `a` is strictly newer than `b` (modulo 2^16).
pub fn seqno_gt(a: u16, b: u16) -> bool {
    seqno_cmp(a, b) == Some(Ordering::Greater)
}

/// `a` is newer than or equal to `b` (modulo 2^16).
pub fn seqno_ge(a: u16, b: u16) -> bool {
    matches!(seqno_cmp(a, b), Some(Ordering::Greater | Ordering::Equal))
}

/// Adds a link cost to a metric, saturating at [`INFINITY`] (§3.5.2: the
/// metric is strictly monotonic, and anything at or above infinity is
/// unreachable).
pub fn metric_add(metric: u16, cost: u16) -> u16 {
    metric.saturating_add(cost)
}

/// RTT-based cost parameters of one interface kind (RFC 9616 §4, babeld
/// `rtt-min`, `rtt-max`, `max-rtt-penalty`, `rtt-decay`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttParams {
    /// At or below this RTT the penalty is zero.
    pub min: Duration,
    /// At or above this RTT the penalty is `max_penalty`.
    pub max: Duration,
    /// The penalty at `max`; zero disables the RTT metric.
    pub max_penalty: u16,
    /// Weight of a new sample in the moving average, in 1/256 (1..=256).
    pub decay: u16,
}

impl RttParams {
    /// babeld's `type tunnel`: 10 ms, 120 ms, 96, 42/256.
    pub const TUNNEL: RttParams = RttParams {
        min: Duration::from_millis(10),
        max: Duration::from_millis(120),
        max_penalty: 96,
        decay: 42,
    };

    /// The penalty for a smoothed RTT of `rtt_us` microseconds: zero up to
    /// `min`, linear up to `max`, then flat. Never above `max_penalty`.
    pub fn penalty(&self, rtt_us: u32) -> u16 {
        let rtt = u64::from(rtt_us);
        let min = u64::try_from(self.min.as_micros()).unwrap_or(u64::MAX);
        let max = u64::try_from(self.max.as_micros()).unwrap_or(u64::MAX);
        let pmax = u64::from(self.max_penalty);
        if self.max_penalty == 0 || rtt <= min {
            0
        } else if rtt >= max || max <= min {
            self.max_penalty
        } else {
            // (rtt - min) < (max - min), so the result is < pmax <= u16::MAX.
            u16::try_from(pmax * (rtt - min) / (max - min)).unwrap_or(self.max_penalty)
        }
    }

    /// Folds `sample` into the running average `old` (RFC 9616 §4.1, babeld
    /// rounding: towards the sample). The first sample is doubled, as
    /// babeld does: a new neighbour is assumed slower until proven fast,
    /// which keeps a just-opened tunnel from attracting traffic on one lucky
    /// sample.
    pub fn smooth(&self, old: Option<u32>, sample: u32) -> u32 {
        let Some(old) = old else {
            return sample.saturating_mul(2);
        };
        let d = u64::from(self.decay.clamp(1, 256));
        let acc = d * u64::from(sample) + (256 - d) * u64::from(old);
        let v = if old >= sample {
            acc / 256
        } else {
            acc.div_ceil(256)
        };
        u32::try_from(v).unwrap_or(u32::MAX)
    }
}

/// Longest wait accepted on either side of an RTT measurement (babeld and
/// BIRD use 10 minutes): anything longer is a clock problem or a replay.
pub const RTT_MAX_WAIT_US: u32 = 600_000_000;

/// One RTT sample from RFC 9616 timestamps, in microseconds.
///
/// We sent a Hello stamped `origin` (t1); the neighbour received it at
/// `receive` (t2, its clock), later sent a Hello stamped `hello` (t3, its
/// clock) in the packet that carried the IHU echoing t1/t2, and we received
/// that packet at `now` (t4, our clock). RTT = (t4 − t1) − (t3 − t2), with
/// both differences taken modulo 2^32 so the 71-minute wrap is harmless.
/// `None` when a difference is "negative" or longer than
/// [`RTT_MAX_WAIT_US`]. The result is clamped at zero.
pub fn rtt_sample(origin: u32, receive: u32, hello: u32, now: u32) -> Option<u32> {
    let local = now.wrapping_sub(origin);
    let remote = hello.wrapping_sub(receive);
    if local > RTT_MAX_WAIT_US || remote > RTT_MAX_WAIT_US {
        return None;
    }
    Some(local.saturating_sub(remote))
}

/// The cost of a link (RFC 8966 §3.4.3 with RFC 9616 §4): unreachable if
/// either direction is, else `txcost` plus the RTT penalty, saturated below
/// infinity. A cost is never zero, so the metric stays strictly monotonic
/// even if a neighbour announces an rxcost of 0.
pub fn link_cost(rxcost: u16, txcost: u16, rtt_penalty: u16) -> u16 {
    if rxcost == INFINITY || txcost == INFINITY {
        return INFINITY;
    }
    txcost.max(1).saturating_add(rtt_penalty).min(INFINITY - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqno_order_and_wrap() {
        assert_eq!(seqno_cmp(1, 2), Some(Ordering::Less));
        assert_eq!(seqno_cmp(2, 1), Some(Ordering::Greater));
        assert_eq!(seqno_cmp(7, 7), Some(Ordering::Equal));
        // 65535 -> 0 is one step forward.
        assert!(seqno_gt(0, 65535));
        assert!(!seqno_gt(65535, 0));
        assert!(seqno_gt(10, 65530));
        // 32767 apart is still ordered.
        assert!(seqno_gt(32767, 0));
        assert!(seqno_gt(0, 32769));
        // Exactly 32768 apart: incomparable both ways.
        assert_eq!(seqno_cmp(0, 32768), None);
        assert_eq!(seqno_cmp(32768, 0), None);
        assert!(!seqno_gt(0, 32768) && !seqno_gt(32768, 0));
        assert!(!seqno_ge(0, 32768) && !seqno_ge(32768, 0));
        assert!(seqno_ge(5, 5));
    }

    #[test]
    fn metric_add_saturates() {
        assert_eq!(metric_add(100, 96), 196);
        assert_eq!(metric_add(INFINITY - 10, 96), INFINITY);
        assert_eq!(metric_add(INFINITY, 0), INFINITY);
    }

    #[test]
    fn penalty_endpoints() {
        let p = RttParams::TUNNEL;
        assert_eq!(p.penalty(0), 0);
        assert_eq!(p.penalty(10_000), 0);
        assert_eq!(p.penalty(10_001), 0); // 96 * 1 / 110000 rounds down
        assert_eq!(p.penalty(65_000), 48);
        assert_eq!(p.penalty(119_999), 95);
        assert_eq!(p.penalty(120_000), 96);
        assert_eq!(p.penalty(u32::MAX), 96);
        let off = RttParams {
            max_penalty: 0,
            ..RttParams::TUNNEL
        };
        assert_eq!(off.penalty(500_000), 0);
        let degenerate = RttParams {
            min: Duration::from_millis(50),
            max: Duration::from_millis(50),
            ..RttParams::TUNNEL
        };
        assert_eq!(degenerate.penalty(50_000), 0);
        assert_eq!(degenerate.penalty(50_001), 96);
    }

    #[test]
    fn ewma_seeds_double_and_rounds_towards_sample() {
        let p = RttParams::TUNNEL;
        assert_eq!(p.smooth(None, 20_000), 40_000);
        // (42 * 20000 + 214 * 40000) / 256 = 36718.75, rounded down towards
        // the (lower) sample.
        assert_eq!(p.smooth(Some(40_000), 20_000), 36_718);
        // Rising sample: rounded up.
        assert_eq!(p.smooth(Some(10_000), 20_000), 11_641);
        // Converges to a constant sample.
        let mut v = Some(100_000);
        for _ in 0..200 {
            v = Some(p.smooth(v, 30_000));
        }
        assert_eq!(v, Some(30_000));
        // Decay 256 follows the sample exactly.
        let fast = RttParams {
            decay: 256,
            ..RttParams::TUNNEL
        };
        assert_eq!(fast.smooth(Some(1), 77), 77);
        // No overflow at the extremes.
        assert_eq!(p.smooth(Some(u32::MAX), u32::MAX), u32::MAX);
        assert_eq!(p.smooth(None, u32::MAX), u32::MAX);
    }

    #[test]
    fn rtt_sample_rules() {
        // t1=1000 (ours), t2=5000 t3=5300 (theirs), t4=1800: 800 - 300.
        assert_eq!(rtt_sample(1000, 5000, 5300, 1800), Some(500));
        // Across the 2^32 wrap on both clocks.
        let t1 = u32::MAX - 100;
        assert_eq!(
            rtt_sample(t1, u32::MAX - 5, 20, t1.wrapping_add(700)),
            Some(674)
        );
        // Remote hold longer than the local wait: clamped to 0.
        assert_eq!(rtt_sample(0, 0, 900, 500), Some(0));
        // "Negative" differences look huge modulo 2^32: rejected.
        assert_eq!(rtt_sample(1000, 0, 0, 999), None);
        assert_eq!(rtt_sample(0, 1000, 999, 10), None);
        // Longer than 10 minutes: rejected.
        assert_eq!(rtt_sample(0, 0, 0, RTT_MAX_WAIT_US + 1), None);
        assert_eq!(rtt_sample(0, 0, 0, RTT_MAX_WAIT_US), Some(RTT_MAX_WAIT_US));
    }

    #[test]
    fn link_cost_rules() {
        assert_eq!(link_cost(96, 96, 0), 96);
        assert_eq!(link_cost(96, 96, 40), 136);
        assert_eq!(link_cost(INFINITY, 96, 0), INFINITY);
        assert_eq!(link_cost(96, INFINITY, 0), INFINITY);
        // A zero cost from a neighbour is raised to 1.
        assert_eq!(link_cost(96, 0, 0), 1);
        // Finite costs stay finite.
        assert_eq!(link_cost(96, INFINITY - 1, 96), INFINITY - 1);
    }
}
