//! When a node sends its announcement, and to whom (report §6).
//!
//! Every `interval` the node sends its freshly signed announcement to
//! `fanout` random destinations of its routing table; receivers verify it
//! and store it in their peer DB. A node that just started sends it to as
//! many destinations as its peer DB holds (at least `fanout`), so that it
//! has as many chances as the others of being picked for a tunnel, and asks
//! those receivers to answer with their own, which fills its DB without the
//! registry. Answers are rate-limited: at most one per asking node per
//! `reply_hold`, and `reply_rate` per second in all, so one node asking
//! again and again can neither make us flood nor use up the answers owed to
//! the others.
//!
//! Sans-IO: the node passes the routing table's destinations and the DB
//! size in, and sends the returned round itself; it passes received
//! messages to [`Exchange::handle_message`], which stores what verifies in
//! the peer DB and says whether to answer.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant, SystemTime};

use rand::RngExt;
use rand::seq::SliceRandom;
use re6st_dataplane::ratelimit::TokenBucket;
use serde::Serialize;

use super::db::{Inserted, PeerDb};
use super::wire::{self, ExchangeError, ExchangeMessage};
use crate::identity::tls::CaVerifier;
use crate::identity::{PeerAnnouncement, SignedAnnouncement};

/// Peer-exchange timers and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeConfig {
    /// Period of the regular rounds (jittered by up to a quarter).
    pub interval: Duration,
    /// Destinations per regular round.
    pub fanout: usize,
    /// Delay before the first round after start (routes need a moment),
    /// and between retries while the routing table is still empty.
    pub first_round: Duration,
    /// Answers per second at most, and burst.
    pub reply_rate: u32,
    /// Burst of answers.
    pub reply_burst: u32,
    /// One answer per asking node in this time at most.
    pub reply_hold: Duration,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(600),
            fanout: 3,
            first_round: Duration::from_secs(10),
            reply_rate: 10,
            reply_burst: 50,
            reply_hold: Duration::from_secs(60),
        }
    }
}

/// Counters of peer exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExchangeStats {
    /// Rounds done.
    pub rounds: u64,
    /// Announcements sent (rounds and answers).
    pub sent: u64,
    /// Answers sent.
    pub replies: u64,
    /// Answers not sent because of the rate limit.
    pub replies_limited: u64,
    /// Answers not sent because that node was answered less than
    /// `reply_hold` ago.
    pub replies_repeated: u64,
    /// Messages received.
    pub received: u64,
    /// Messages that did not parse (or bad UDP).
    pub malformed: u64,
    /// Messages dropped because the node was busy.
    pub queue_full: u64,
}

/// Nodes remembered for the per-node answer limit (a few KiB).
const MAX_ANSWERED: usize = 1024;

/// One round: send our announcement to these nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// Overlay addresses to send to.
    pub targets: Vec<Ipv6Addr>,
    /// Ask them to answer (first round only).
    pub reply: bool,
}

/// What one received message did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// The peer DB gained a peer or a newer announcement.
    pub changed: bool,
    /// Answer the sender with our own announcement (it asked, its
    /// announcement verified, it is the owner of the announced prefix, and
    /// the rate limits allow).
    pub answer: bool,
}

/// The IPv6/UDP packet of our announcement from `from` to `to`; `reply`
/// asks the receiver to answer with its own.
pub fn packet(
    from: Ipv6Addr,
    to: Ipv6Addr,
    reply: bool,
    signed: SignedAnnouncement,
) -> Result<Vec<u8>, ExchangeError> {
    let mut msg = Vec::new();
    (ExchangeMessage::Announce { reply, signed }).emit(&mut msg)?;
    Ok(wire::build_packet(from, to, &msg))
}

/// The peer-exchange schedule of one node.
#[derive(Debug)]
pub struct Exchange<R> {
    config: ExchangeConfig,
    rng: R,
    next: Instant,
    first_done: bool,
    limiter: TokenBucket,
    /// When each recently answered node was answered; bounded by
    /// [`MAX_ANSWERED`].
    answered: HashMap<Ipv6Addr, Instant>,
    /// Counters (the node adds to them as it sends and receives).
    pub stats: ExchangeStats,
}

impl<R: rand::Rng> Exchange<R> {
    /// A schedule whose first round is `config.first_round` after `now`.
    pub fn new(config: ExchangeConfig, rng: R, now: Instant) -> Self {
        Self {
            next: now + config.first_round,
            limiter: TokenBucket::new(config.reply_rate, config.reply_burst),
            answered: HashMap::new(),
            config,
            rng,
            first_done: false,
            stats: ExchangeStats::default(),
        }
    }

    /// When [`Exchange::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next
    }

    /// Time passed. If a round is due, returns it: random `destinations`
    /// (the routing table's nodes, without us), `fanout` of them, or for
    /// the first round as many as `db_len`.
    pub fn handle_timeout(
        &mut self,
        destinations: &[Ipv6Addr],
        db_len: usize,
        now: Instant,
    ) -> Option<Round> {
        if now < self.next {
            return None;
        }
        if destinations.is_empty() {
            // Nobody to tell yet: try again soon.
            self.next = now + self.config.first_round;
            return None;
        }
        let first = !self.first_done;
        let count = if first {
            db_len.max(self.config.fanout)
        } else {
            self.config.fanout
        };
        let mut targets = destinations.to_vec();
        targets.shuffle(&mut self.rng);
        targets.truncate(count);
        self.first_done = true;
        let jitter = self.rng.random_range(0.75..=1.0);
        self.next = now + self.config.interval.mul_f64(jitter);
        self.stats.rounds += 1;
        self.stats.sent += targets.len() as u64;
        Some(Round {
            targets,
            reply: first,
        })
    }

    /// A peer-exchange message from overlay address `from`: a verified
    /// announcement goes into `db` (checked with `verifier` at `wall`);
    /// garbage is counted and dropped.
    pub fn handle_message(
        &mut self,
        from: Ipv6Addr,
        payload: &[u8],
        db: &mut PeerDb,
        verifier: &CaVerifier,
        wall: SystemTime,
        now: Instant,
    ) -> Received {
        self.stats.received += 1;
        let (reply, signed) = match ExchangeMessage::parse(payload) {
            Ok(ExchangeMessage::Announce { reply, signed }) => (reply, signed),
            Ok(ExchangeMessage::Unknown(_)) => return Received::default(),
            Err(e) => {
                self.stats.malformed += 1;
                tracing::debug!(%from, error = %e, "bad peer-exchange message");
                return Received::default();
            }
        };
        let stored = db.insert(&signed, verifier, wall);
        if let Err(e) = &stored {
            tracing::debug!(%from, error = %e, "announcement not stored");
        }
        let changed = matches!(stored, Ok(Inserted::New | Inserted::Updated));
        // Answer only a verified announcement, and only to the owner of the
        // announced prefix (no reflection towards a third party).
        let answer = reply
            && stored.is_ok()
            && serde_json::from_str::<PeerAnnouncement>(&signed.payload)
                .is_ok_and(|a| a.prefix.contains(&from))
            && self.may_reply(from, now);
        Received { changed, answer }
    }

    /// Whether an answer to `to` may be sent now (rate limits).
    pub fn may_reply(&mut self, to: Ipv6Addr, now: Instant) -> bool {
        let hold = self.config.reply_hold;
        if self
            .answered
            .get(&to)
            .is_some_and(|&at| now.saturating_duration_since(at) < hold)
        {
            self.stats.replies_repeated += 1;
            return false;
        }
        if self.answered.len() >= MAX_ANSWERED {
            self.answered
                .retain(|_, at| now.saturating_duration_since(*at) < hold);
        }
        if !self.limiter.try_take(now) {
            self.stats.replies_limited += 1;
            return false;
        }
        // Still full: more distinct askers than answers we would give in a
        // hold anyway; the global limit decides, unrecorded.
        if self.answered.len() < MAX_ANSWERED {
            self.answered.insert(to, now);
        }
        self.stats.replies += 1;
        self.stats.sent += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn addrs(n: u16) -> Vec<Ipv6Addr> {
        (1..=n)
            .map(|i| Ipv6Addr::new(0xfd00, i, 0, 0, 0, 0, 0, 1))
            .collect()
    }

    #[test]
    fn first_round_reaches_db_size_then_fanout() {
        let t0 = Instant::now();
        let cfg = ExchangeConfig {
            interval: Duration::from_secs(100),
            fanout: 3,
            first_round: Duration::from_secs(5),
            ..ExchangeConfig::default()
        };
        let mut x = Exchange::new(cfg, StdRng::seed_from_u64(1), t0);
        assert_eq!(x.poll_timeout(), t0 + Duration::from_secs(5));
        assert_eq!(x.handle_timeout(&addrs(30), 12, t0), None, "not due");
        // Due but no destinations yet: retried a little later.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(x.handle_timeout(&[], 12, t1), None);
        assert_eq!(x.poll_timeout(), t1 + Duration::from_secs(5));
        let t2 = x.poll_timeout();
        let r = x.handle_timeout(&addrs(30), 12, t2).unwrap();
        assert!(r.reply);
        assert_eq!(r.targets.len(), 12);
        let mut uniq = r.targets.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 12, "no destination twice");
        let next = x.poll_timeout();
        assert!(next >= t2 + Duration::from_secs(75) && next <= t2 + Duration::from_secs(100));
        let r = x.handle_timeout(&addrs(30), 12, next).unwrap();
        assert!(!r.reply);
        assert_eq!(r.targets.len(), 3);
        // Fewer destinations than asked: all of them.
        let r = x.handle_timeout(&addrs(2), 12, x.poll_timeout()).unwrap();
        assert_eq!(r.targets.len(), 2);
        assert_eq!(x.stats.rounds, 3);
        assert_eq!(x.stats.sent, 17);
    }

    #[test]
    fn answers_are_rate_limited() {
        let t0 = Instant::now();
        let cfg = ExchangeConfig {
            reply_rate: 1,
            reply_burst: 2,
            ..ExchangeConfig::default()
        };
        let mut x = Exchange::new(cfg, StdRng::seed_from_u64(1), t0);
        let a = addrs(4);
        assert!(x.may_reply(a[0], t0));
        assert!(x.may_reply(a[1], t0));
        assert!(!x.may_reply(a[2], t0));
        assert!(x.may_reply(a[2], t0 + Duration::from_millis(1100)));
        assert_eq!((x.stats.replies, x.stats.replies_limited), (3, 1));
    }

    #[test]
    fn a_node_asking_again_is_answered_once_per_hold() {
        let t0 = Instant::now();
        let cfg = ExchangeConfig {
            reply_hold: Duration::from_secs(60),
            ..ExchangeConfig::default()
        };
        let mut x = Exchange::new(cfg, StdRng::seed_from_u64(1), t0);
        let a = addrs(2);
        assert!(x.may_reply(a[0], t0));
        for s in 1..30 {
            assert!(!x.may_reply(a[0], t0 + Duration::from_secs(s)));
        }
        // The others are still answered: the repeats used no budget.
        assert!(x.may_reply(a[1], t0 + Duration::from_secs(30)));
        assert!(x.may_reply(a[0], t0 + Duration::from_secs(61)));
        assert_eq!((x.stats.replies, x.stats.replies_repeated), (3, 29));
    }

    #[test]
    fn the_memory_of_answered_nodes_is_bounded() {
        let t0 = Instant::now();
        let cfg = ExchangeConfig {
            reply_rate: 1_000_000,
            reply_burst: 1_000_000,
            ..ExchangeConfig::default()
        };
        let mut x = Exchange::new(cfg, StdRng::seed_from_u64(1), t0);
        for i in 0..(3 * MAX_ANSWERED as u32) {
            let to = Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i));
            assert!(x.may_reply(to, t0));
        }
        assert!(x.answered.len() <= MAX_ANSWERED);
        // After the hold, the memory is reclaimed for new askers.
        let later = t0 + Duration::from_secs(61);
        assert!(x.may_reply(Ipv6Addr::LOCALHOST, later));
        assert!(x.answered.len() <= 1);
    }
}
