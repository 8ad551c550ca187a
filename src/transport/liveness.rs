//! Tunnel liveness: a tunnel that has heard nothing for a while is
//! *suspected* long before QUIC's idle timeout closes it.
//!
//! QUIC alone notices a dead peer only at the idle timeout, which must stay
//! long (a lossy or congested path must not lose its connection to a few
//! missing packets). But the overlay wants its routes off a dead tunnel
//! within a second. So the two are split:
//!
//! - **suspect** (this detector): nothing received on the connection for
//!   `suspect_after` plus two round trips. Keep-alives guarantee traffic on
//!   a live tunnel: quinn sends a PING when it has received nothing for one
//!   keep-alive interval and the peer acknowledges it, so a live tunnel is
//!   heard at least every keep-alive + RTT. The node takes the tunnel's
//!   interface down in Babel (routes retracted, alternatives selected at
//!   once) but keeps the connection; the first datagram heard again brings
//!   the interface back up.
//! - **dead** (quinn's idle timeout, much longer): the connection closes.
//!
//! Sans-IO: the caller reads the connection's received-datagram counter
//! (`quinn::Connection::stats().udp_rx.datagrams`, which counts every
//! datagram of the connection, ACKs and PINGs included) at
//! [`Liveness::poll_timeout`] and passes it to [`Liveness::handle_rx`], then
//! applies every [`Liveness::poll_verdict`].

use std::time::{Duration, Instant};

/// A change of a tunnel's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing heard for the suspect time: move the routes away.
    Suspect,
    /// Heard again after a suspicion: bring the routes back.
    Alive,
}

/// How often the counter is read, as a fraction of the suspect time: a
/// silence is suspected between `suspect_after` and `suspect_after * 13/12`
/// after the last datagram (plus two round trips).
const SAMPLES_PER_SUSPECT: u32 = 12;

/// The detector of one tunnel.
#[derive(Debug, Clone)]
pub struct Liveness {
    suspect_after: Duration,
    sample_every: Duration,
    /// The received-datagram count last read.
    rx: u64,
    /// When that count last moved (as sampled).
    heard: Instant,
    /// The round trip time last given (stretches the suspect time).
    rtt: Duration,
    next_sample: Instant,
    suspected: bool,
    verdict: Option<Verdict>,
}

impl Liveness {
    /// A detector for a connection that has received `rx` datagrams so far
    /// (heard at `now`), suspected after `suspect_after` of silence.
    pub fn new(suspect_after: Duration, rx: u64, now: Instant) -> Self {
        let sample_every = (suspect_after / SAMPLES_PER_SUSPECT).max(Duration::from_millis(1));
        Self {
            suspect_after,
            sample_every,
            rx,
            heard: now,
            rtt: Duration::ZERO,
            next_sample: now + sample_every,
            suspected: false,
            verdict: None,
        }
    }

    /// The connection's received-datagram counter read at `now`, and its
    /// current RTT estimate.
    pub fn handle_rx(&mut self, rx: u64, rtt: Duration, now: Instant) {
        self.rtt = rtt;
        self.next_sample = now + self.sample_every;
        if rx != self.rx {
            self.rx = rx;
            self.heard = now;
            if self.suspected {
                self.suspected = false;
                self.verdict = Some(Verdict::Alive);
            }
        } else if !self.suspected && now >= self.deadline() {
            self.suspected = true;
            self.verdict = Some(Verdict::Suspect);
        }
    }

    /// The latest change, once.
    pub fn poll_verdict(&mut self) -> Option<Verdict> {
        self.verdict.take()
    }

    /// When to read the counter next.
    pub fn poll_timeout(&self) -> Instant {
        if self.suspected {
            self.next_sample
        } else {
            self.next_sample.min(self.deadline())
        }
    }

    /// Whether the tunnel is suspected now.
    pub fn is_suspected(&self) -> bool {
        self.suspected
    }

    /// How long the tunnel has been silent at `now` (as sampled).
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.heard)
    }

    /// The silence after which the tunnel is suspected: the configured
    /// time plus two round trips (an acknowledgement of a keep-alive takes
    /// one; a slow path must not look dead).
    fn deadline(&self) -> Instant {
        self.heard + self.suspect_after + 2 * self.rtt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Drives `l` like the node does: reads `count(t)` at every
    /// `poll_timeout` until `until`; returns the verdicts with their times.
    fn run(
        l: &mut Liveness,
        t0: Instant,
        until: Duration,
        rtt: Duration,
        count: impl Fn(Duration) -> u64,
    ) -> Vec<(Duration, Verdict)> {
        let mut out = Vec::new();
        loop {
            let now = l.poll_timeout();
            assert!(now > t0, "time moves on");
            if now - t0 > until {
                return out;
            }
            l.handle_rx(count(now - t0), rtt, now);
            if let Some(v) = l.poll_verdict() {
                out.push((now - t0, v));
            }
        }
    }

    #[test]
    fn a_tunnel_heard_every_keep_alive_is_never_suspected() {
        let t0 = Instant::now();
        let mut l = Liveness::new(600 * MS, 0, t0);
        // A datagram every 250 ms (keep-alive 200 ms + RTT and ACK delay).
        let v = run(&mut l, t0, 60_000 * MS, 20 * MS, |t| {
            (t.as_millis() / 250) as u64
        });
        assert_eq!(v, vec![]);
        assert!(!l.is_suspected());
    }

    #[test]
    fn silence_is_suspected_after_the_suspect_time_and_cleared_by_the_next_datagram() {
        let t0 = Instant::now();
        let mut l = Liveness::new(600 * MS, 7, t0);
        // Heard every 100 ms until 1 s, silent until 3 s, then heard again.
        let v = run(&mut l, t0, 5_000 * MS, MS, |t| {
            let ms = t.as_millis() as u64;
            if ms < 1_000 {
                7 + ms / 100
            } else if ms < 3_000 {
                7 + 10
            } else {
                7 + 10 + (ms - 3_000) / 100 + 1
            }
        });
        assert_eq!(v.len(), 2, "{v:?}");
        let (at, first) = v[0];
        assert_eq!(first, Verdict::Suspect);
        // Last datagram at 1.0 s (seen by the sample at most 50 ms later),
        // suspect time 600 ms + 2 RTT.
        assert!(at >= 1_600 * MS && at <= 1_700 * MS, "suspected at {at:?}");
        let (at, second) = v[1];
        assert_eq!(second, Verdict::Alive);
        assert!(
            at >= 3_000 * MS && at <= 3_050 * MS,
            "alive again at {at:?}"
        );
        assert!(!l.is_suspected());
    }

    #[test]
    fn a_slow_path_gets_two_round_trips_more() {
        let t0 = Instant::now();
        let mut l = Liveness::new(600 * MS, 0, t0);
        let v = run(&mut l, t0, 3_000 * MS, 300 * MS, |_| 0);
        assert_eq!(v.len(), 1);
        assert!(v[0].0 >= 1_200 * MS && v[0].0 <= 1_250 * MS, "{v:?}");
    }

    #[test]
    fn one_verdict_per_change() {
        let t0 = Instant::now();
        let mut l = Liveness::new(600 * MS, 0, t0);
        l.handle_rx(0, MS, t0 + 700 * MS);
        assert_eq!(l.poll_verdict(), Some(Verdict::Suspect));
        assert_eq!(l.silent_for(t0 + 700 * MS), 700 * MS);
        l.handle_rx(0, MS, t0 + 800 * MS);
        assert_eq!(l.poll_verdict(), None, "still suspected, nothing new");
        l.handle_rx(1, MS, t0 + 900 * MS);
        assert_eq!(l.poll_verdict(), Some(Verdict::Alive));
        l.handle_rx(2, MS, t0 + 950 * MS);
        assert_eq!(l.poll_verdict(), None);
    }
}
