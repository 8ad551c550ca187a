//! Token bucket limiting the ICMPv6 errors a node originates (RFC 4443
//! section 2.4 f: "an IPv6 node MUST limit the rate of ICMPv6 error
//! messages it originates", and recommends a token bucket).
//!
//! Sans-IO: time is a parameter; the bucket never reads a clock.

use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens at most, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens in units of 1/`rate` seconds, scaled so that refilling is
    /// integer arithmetic: one token = `NANOS_PER_SEC` units.
    units: u128,
    capacity: u128,
    rate: u32,
    last: Option<Instant>,
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

impl TokenBucket {
    /// A full bucket holding `burst` tokens, refilled at `rate` tokens per
    /// second. A `rate` of 0 means the bucket never refills.
    pub fn new(rate: u32, burst: u32) -> Self {
        let capacity = u128::from(burst) * NANOS_PER_SEC;
        TokenBucket {
            units: capacity,
            capacity,
            rate,
            last: None,
        }
    }

    /// Takes one token if there is one; `false` means "rate limited".
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.units >= NANOS_PER_SEC {
            self.units -= NANOS_PER_SEC;
            true
        } else {
            false
        }
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Instant) -> u32 {
        self.refill(now);
        u32::try_from(self.units / NANOS_PER_SEC).unwrap_or(u32::MAX)
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            // Time going backwards (a caller bug) refills nothing.
            let elapsed: Duration = now.saturating_duration_since(last);
            let added = elapsed.as_nanos().saturating_mul(u128::from(self.rate));
            self.units = self.units.saturating_add(added).min(self.capacity);
            if now > last {
                self.last = Some(now);
            }
        } else {
            self.last = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited_then_refilled() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 3);
        assert!(bucket.try_take(t0));
        assert!(bucket.try_take(t0));
        assert!(bucket.try_take(t0));
        assert!(!bucket.try_take(t0));
        // 10 per second: one token every 100 ms.
        assert!(!bucket.try_take(t0 + Duration::from_millis(99)));
        assert!(bucket.try_take(t0 + Duration::from_millis(100)));
        assert!(!bucket.try_take(t0 + Duration::from_millis(150)));
        assert!(bucket.try_take(t0 + Duration::from_millis(200)));
        // A long pause refills up to the burst only.
        assert_eq!(bucket.available(t0 + Duration::from_secs(60)), 3);
    }

    #[test]
    fn fractional_refill_accumulates() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(3, 1);
        assert!(bucket.try_take(t0));
        // 1/3 s per token: three steps of 111 ms are not enough, 334 ms is.
        for ms in [111, 222, 333] {
            assert!(!bucket.try_take(t0 + Duration::from_millis(ms)));
        }
        assert!(bucket.try_take(t0 + Duration::from_millis(334)));
    }

    #[test]
    fn zero_rate_never_refills() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(0, 1);
        assert!(bucket.try_take(t0));
        assert!(!bucket.try_take(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(1, 1);
        assert!(bucket.try_take(t0));
        assert!(!bucket.try_take(t0 - Duration::from_secs(5)));
        assert!(bucket.try_take(t0 + Duration::from_secs(1)));
    }
}
