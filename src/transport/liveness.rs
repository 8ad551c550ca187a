//! Tunnel liveness: a tunnel that has heard nothing for a while is
//! *suspected* long before QUIC's idle timeout closes it.
//!
//! QUIC alone notices a dead peer only at the idle timeout, which must stay
//! long (a lossy or congested path must not lose its connection to a few
//! missing packets). But the overlay wants its routes off a dead tunnel
//! within a second. So the two are split:
//!
//! - **suspect** (this clock): nothing *authenticated* received on the
//!   connection for `suspect_after` plus two round trips. Keep-alives
//!   guarantee traffic on a live tunnel: quinn sends a PING only when it
//!   has received nothing authenticated for one keep-alive interval (its
//!   timer restarts with every authenticated packet, so a busy tunnel sends
//!   none), and the peer acknowledges it. The node takes the tunnel's
//!   interface down in Babel (routes retracted, alternatives selected at
//!   once) but keeps the connection; the first packet heard again brings
//!   the interface back up.
//! - **dead** (quinn's idle timeout, much longer): the connection closes.
//!
//! Only authenticated packets count: [`authenticated`] sums the frames
//! quinn decoded, which it does only after a packet decrypted. Counting
//! received UDP datagrams instead would let an on-path attacker who knows a
//! connection id keep a dead tunnel alive with garbage.
//!
//! One [`Clock`] keeps every tunnel of a node, with one timer: the tunnels'
//! next checks sit in one heap of deadlines rounded up to a common grid of
//! `suspect_after / CHECKS_PER_SUSPECT`, so all tunnels due together are
//! checked in one wake-up, and a node with no tunnel never wakes.
//!
//! Sans-IO: the caller sleeps until [`Clock::poll_timeout`], calls
//! [`Clock::handle_timeout`] with a way to read a tunnel's authenticated
//! count and RTT, then applies every [`Clock::poll_transition`].

use std::cmp::Reverse;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A change of a tunnel's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing heard for the suspect time: move the routes away.
    Suspect,
    /// Heard again after a suspicion: bring the routes back.
    Alive,
}

/// A tunnel's verdict and how long it had been silent when it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition<K> {
    /// The tunnel.
    pub tunnel: K,
    /// The new state.
    pub verdict: Verdict,
    /// Silence so far (as sampled).
    pub silent: Duration,
}

/// What the caller reads from a tunnel's connection at a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Authenticated frames received so far ([`authenticated`]).
    pub authenticated: u64,
    /// The current RTT estimate (stretches the suspect time).
    pub rtt: Duration,
}

/// Checks per suspect time: a silence is suspected between `suspect_after`
/// and `suspect_after * 13/12` after the last authenticated packet (plus
/// two round trips): 650 ms at most with the defaults, so a crashed
/// neighbour's routes move within a second.
pub const CHECKS_PER_SUSPECT: u32 = 12;

/// The frames a connection has decoded, all kinds together: they are only
/// decoded once their packet decrypted, so this count moves only with
/// authenticated packets (ACKs and PINGs included).
pub fn authenticated(s: &quinn::FrameStats) -> u64 {
    s.acks
        + s.ack_frequency
        + s.crypto
        + s.connection_close
        + s.data_blocked
        + s.datagram
        + u64::from(s.handshake_done)
        + s.immediate_ack
        + s.max_data
        + s.max_stream_data
        + s.max_streams_bidi
        + s.max_streams_uni
        + s.new_connection_id
        + s.new_token
        + s.path_challenge
        + s.path_response
        + s.ping
        + s.reset_stream
        + s.retire_connection_id
        + s.stream_data_blocked
        + s.streams_blocked_bidi
        + s.streams_blocked_uni
        + s.stop_sending
        + s.stream
}

#[derive(Debug, Clone)]
struct Entry {
    /// The authenticated count last read.
    count: u64,
    /// When that count last moved (as sampled).
    heard: Instant,
    rtt: Duration,
    suspected: bool,
    /// The check this tunnel waits for (heap items with another time are
    /// stale).
    next: Instant,
}

impl Entry {
    /// The silence after which the tunnel is suspected: the configured
    /// time plus two round trips (an acknowledgement of a keep-alive takes
    /// one; a slow path must not look dead).
    fn deadline(&self, suspect_after: Duration) -> Instant {
        self.heard + suspect_after + 2 * self.rtt
    }
}

/// The liveness of all tunnels of a node, keyed by `K`.
#[derive(Debug)]
pub struct Clock<K> {
    suspect_after: Duration,
    grid: Duration,
    epoch: Instant,
    tunnels: HashMap<K, Entry>,
    due: BinaryHeap<Reverse<(Instant, K)>>,
    transitions: VecDeque<Transition<K>>,
}

impl<K: Copy + Eq + Hash + Ord> Clock<K> {
    /// A clock that suspects a tunnel after `suspect_after` of silence.
    pub fn new(suspect_after: Duration, now: Instant) -> Self {
        let grid = (suspect_after / CHECKS_PER_SUSPECT).max(Duration::from_millis(1));
        Self {
            suspect_after,
            grid,
            epoch: now,
            tunnels: HashMap::new(),
            due: BinaryHeap::new(),
            transitions: VecDeque::new(),
        }
    }

    /// Starts watching `tunnel`, heard at `now` with `authenticated`
    /// frames so far. Watching it already: nothing changes.
    pub fn insert(&mut self, tunnel: K, authenticated: u64, now: Instant) {
        if let MapEntry::Vacant(v) = self.tunnels.entry(tunnel) {
            let next = round_up(self.epoch, self.grid, now + self.grid);
            v.insert(Entry {
                count: authenticated,
                heard: now,
                rtt: Duration::ZERO,
                suspected: false,
                next,
            });
            self.due.push(Reverse((next, tunnel)));
        }
    }

    /// Stops watching `tunnel` (its connection ended).
    pub fn remove(&mut self, tunnel: K) {
        self.tunnels.remove(&tunnel);
        if self.tunnels.is_empty() {
            self.due.clear();
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

    /// Whether `tunnel` is watched.
    pub fn contains(&self, tunnel: K) -> bool {
        self.tunnels.contains_key(&tunnel)
    }

    /// Whether `tunnel` is suspected now.
    pub fn is_suspected(&self, tunnel: K) -> bool {
        self.tunnels.get(&tunnel).is_some_and(|e| e.suspected)
    }

    /// When to call [`Clock::handle_timeout`] next; `None` with no tunnel.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((t, _))| *t)
    }

    /// Checks the tunnels due at `now`: `sample` reads one tunnel's
    /// connection, or says it is gone (`None`: the tunnel is forgotten).
    pub fn handle_timeout(&mut self, now: Instant, mut sample: impl FnMut(K) -> Option<Sample>) {
        while let Some(Reverse((at, tunnel))) = self.due.peek().copied() {
            if at > now {
                break;
            }
            self.due.pop();
            let Some(entry) = self.tunnels.get_mut(&tunnel) else {
                continue;
            };
            if entry.next != at {
                continue;
            }
            let Some(s) = sample(tunnel) else {
                self.tunnels.remove(&tunnel);
                continue;
            };
            entry.rtt = s.rtt;
            if s.authenticated != entry.count {
                entry.count = s.authenticated;
                entry.heard = now;
                if entry.suspected {
                    entry.suspected = false;
                    self.transitions.push_back(Transition {
                        tunnel,
                        verdict: Verdict::Alive,
                        silent: Duration::ZERO,
                    });
                }
            } else if !entry.suspected && now >= entry.deadline(self.suspect_after) {
                entry.suspected = true;
                self.transitions.push_back(Transition {
                    tunnel,
                    verdict: Verdict::Suspect,
                    silent: now.saturating_duration_since(entry.heard),
                });
            }
            // Every tunnel is read once per grid step: a live one so that
            // its last-heard time stays within one step, a suspected one so
            // that it comes back within one step of being heard.
            let next = round_up(self.epoch, self.grid, now + self.grid);
            entry.next = next;
            self.due.push(Reverse((next, tunnel)));
        }
    }

    /// The next change, once.
    pub fn poll_transition(&mut self) -> Option<Transition<K>> {
        self.transitions.pop_front()
    }
}

/// `t` rounded up to the grid `epoch + n * step`: checks due within one
/// step of each other share one wake-up.
fn round_up(epoch: Instant, step: Duration, t: Instant) -> Instant {
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

    /// Drives `c` as the node does until `until`, reading `count(tunnel,
    /// t)`; returns the transitions with their times and the wake-ups.
    fn run(
        c: &mut Clock<u32>,
        t0: Instant,
        until: Duration,
        rtt: Duration,
        count: impl Fn(u32, Duration) -> u64,
    ) -> (Vec<(Duration, u32, Verdict)>, usize) {
        let mut out = Vec::new();
        let mut wakes = 0;
        while let Some(now) = c.poll_timeout() {
            assert!(now > t0, "time moves on");
            if now - t0 > until {
                break;
            }
            wakes += 1;
            c.handle_timeout(now, |k| {
                Some(Sample {
                    authenticated: count(k, now - t0),
                    rtt,
                })
            });
            while let Some(t) = c.poll_transition() {
                out.push((now - t0, t.tunnel, t.verdict));
            }
        }
        (out, wakes)
    }

    #[test]
    fn a_tunnel_heard_every_keep_alive_is_never_suspected() {
        let t0 = Instant::now();
        let mut c = Clock::new(600 * MS, t0);
        c.insert(1, 0, t0);
        // A packet every 250 ms (keep-alive 200 ms + RTT and ACK delay).
        let (v, _) = run(&mut c, t0, 60_000 * MS, 20 * MS, |_, t| {
            (t.as_millis() / 250) as u64
        });
        assert_eq!(v, vec![]);
        assert!(!c.is_suspected(1));
    }

    #[test]
    fn silence_is_suspected_after_the_suspect_time_and_cleared_by_the_next_packet() {
        let t0 = Instant::now();
        let mut c = Clock::new(600 * MS, t0);
        c.insert(1, 7, t0);
        // Heard every 100 ms until 1 s, silent until 3 s, then heard again.
        let (v, _) = run(&mut c, t0, 5_000 * MS, MS, |_, t| {
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
        let (at, _, first) = v[0];
        assert_eq!(first, Verdict::Suspect);
        // Last packet at 1.0 s (seen by the check at most 50 ms later),
        // suspect time 600 ms + 2 RTT.
        assert!(at >= 1_600 * MS && at <= 1_660 * MS, "suspected at {at:?}");
        let (at, _, second) = v[1];
        assert_eq!(second, Verdict::Alive);
        assert!(
            at >= 3_000 * MS && at <= 3_050 * MS,
            "alive again at {at:?}"
        );
        assert!(!c.is_suspected(1));
    }

    #[test]
    fn a_slow_path_gets_two_round_trips_more() {
        let t0 = Instant::now();
        let mut c = Clock::new(600 * MS, t0);
        c.insert(1, 0, t0);
        let (v, _) = run(&mut c, t0, 3_000 * MS, 300 * MS, |_, _| 0);
        assert_eq!(v.len(), 1);
        assert!(v[0].0 >= 1_200 * MS && v[0].0 <= 1_250 * MS, "{v:?}");
    }

    #[test]
    fn one_transition_per_change() {
        let t0 = Instant::now();
        let mut c = Clock::new(600 * MS, t0);
        c.insert(1, 0, t0);
        let sample = |n| {
            move |_| {
                Some(Sample {
                    authenticated: n,
                    rtt: MS,
                })
            }
        };
        c.handle_timeout(t0 + 700 * MS, sample(0));
        let t = c.poll_transition().unwrap();
        assert_eq!(
            (t.tunnel, t.verdict, t.silent),
            (1, Verdict::Suspect, 700 * MS)
        );
        c.handle_timeout(t0 + 900 * MS, sample(0));
        assert_eq!(c.poll_transition(), None, "still suspected, nothing new");
        c.handle_timeout(t0 + 1_000 * MS, sample(1));
        assert_eq!(c.poll_transition().unwrap().verdict, Verdict::Alive);
        c.handle_timeout(t0 + 1_200 * MS, sample(2));
        assert_eq!(c.poll_transition(), None);
    }

    #[test]
    fn many_tunnels_share_one_wake_up_per_step_and_an_empty_clock_sleeps() {
        let t0 = Instant::now();
        let mut c = Clock::new(600 * MS, t0);
        // 30 tunnels inserted at scattered times within the first step.
        for k in 0..30u32 {
            c.insert(k, 0, t0 + Duration::from_micros(u64::from(k) * 1_609));
        }
        let (v, wakes) = run(&mut c, t0, 10_000 * MS, MS, |k, t| {
            (t.as_millis() as u64 / 150) + u64::from(k)
        });
        assert_eq!(v, vec![]);
        // One wake-up per 50 ms step, whatever the number of tunnels.
        assert!((199..=201).contains(&wakes), "{wakes} wake-ups in 10 s");
        for k in 0..30 {
            c.remove(k);
        }
        assert!(c.is_empty());
        assert_eq!(c.poll_timeout(), None, "nothing to watch: no wake-up");
    }

    #[test]
    fn a_gone_tunnel_is_forgotten() {
        let t0 = Instant::now();
        let mut c = Clock::new(600 * MS, t0);
        c.insert(1, 0, t0);
        c.insert(2, 0, t0);
        let at = c.poll_timeout().unwrap();
        c.handle_timeout(at, |k| {
            (k == 2).then_some(Sample {
                authenticated: 1,
                rtt: MS,
            })
        });
        assert_eq!(c.len(), 1);
        assert!(!c.is_suspected(1));
        // A removed tunnel's stale check does nothing.
        c.remove(2);
        c.insert(3, 0, at);
        let at = c.poll_timeout().unwrap();
        c.handle_timeout(at + 700 * MS, |k| {
            assert_eq!(k, 3, "only live tunnels are read");
            Some(Sample {
                authenticated: 0,
                rtt: MS,
            })
        });
        assert_eq!(c.poll_transition().unwrap().tunnel, 3);
    }
}
