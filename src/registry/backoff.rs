//! Capped, jittered exponential back-off for calls to the registry: a node
//! that waits to join, and a node whose registry round failed.
//!
//! Each delay is drawn between half and all of the current step, and the
//! step doubles up to the cap: nodes that lost the registry together (it
//! restarted, the network split) do not come back in lockstep, and an
//! outage of hours costs one request per node every `max` at most. Sans-IO:
//! the caller gives the randomness and keeps the clock.

use std::time::Duration;

use rand::RngExt;

/// The back-off state of one kind of call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    attempts: u32,
}

impl Backoff {
    /// Starts at `min` and doubles up to `max` (`max` is raised to `min`
    /// when smaller; `min` is at least a millisecond).
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            step: min,
            attempts: 0,
        }
    }

    /// The delay before the next attempt, after a failure: between half
    /// and all of the current step. The step then doubles, up to the cap.
    pub fn next_delay(&mut self, rng: &mut impl rand::Rng) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        step.mul_f64(rng.random_range(0.5..=1.0))
    }

    /// A success: the next failure starts from `min` again.
    pub fn reset(&mut self) {
        self.step = self.min;
        self.attempts = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.attempts
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_then_resets() {
        let mut rng = StdRng::seed_from_u64(1);
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let mut b = Backoff::new(min, max);
        let mut step = min;
        for _ in 0..12 {
            let d = b.next_delay(&mut rng);
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} not in [{:?}, {step:?}]",
                step / 2
            );
            step = (step * 2).min(max);
        }
        assert_eq!(b.failures(), 12);
        assert!(b.next_delay(&mut rng) <= max);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_delay(&mut rng) <= min);
    }

    #[test]
    fn the_jitter_spreads_nodes_apart() {
        let delays: Vec<Duration> = (0..20)
            .map(|seed| {
                let mut b = Backoff::new(Duration::from_secs(8), Duration::from_secs(8));
                b.next_delay(&mut StdRng::seed_from_u64(seed))
            })
            .collect();
        let (lo, hi) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(*hi - *lo > Duration::from_secs(2), "{lo:?}..{hi:?}");
    }

    #[test]
    fn degenerate_bounds_are_sane() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(1));
        assert_eq!(b.max(), Duration::from_millis(1));
    }
}
