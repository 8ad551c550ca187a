//! Joining on the way: `re6st node --registry URL` on a state directory
//! without a certificate enrols first. A daemon must not give up because
//! the registry is down when the host boots (or restarts at the same time
//! as the registry): an unreachable registry is waited for, with a capped,
//! jittered back-off and a log line per attempt, while the control socket
//! already answers `re6st status` with where the node stands
//! ([`JoinProgress`]). A refusal (token, prefix space), a wrong CA or an
//! answer that does not check out ends the program at once, with the
//! reason ([`JoinError::is_final`]).

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::control::api::{JoiningInfo, NodeState};
use crate::identity::unix_secs;
use crate::join::{JoinArgs, JoinError};
use crate::registry::backoff::Backoff;

/// First wait after a failed attempt.
pub const JOIN_RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
pub const JOIN_RETRY_MAX: Duration = Duration::from_secs(60);

/// Where a joining node stands, for the control socket.
#[derive(Debug)]
pub struct JoinProgress {
    registry: String,
    state: Mutex<Progress>,
}

#[derive(Debug)]
struct Progress {
    since: SystemTime,
    unreachable_since: Option<SystemTime>,
    attempts: u64,
    last_error: Option<String>,
    next_attempt: Option<Instant>,
}

impl JoinProgress {
    /// A node that starts joining `registry` at `now`.
    pub fn new(registry: &str, now: SystemTime) -> Self {
        Self {
            registry: registry.to_string(),
            state: Mutex::new(Progress {
                since: now,
                unreachable_since: None,
                attempts: 0,
                last_error: None,
                next_attempt: None,
            }),
        }
    }

    /// The registry URL.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn with<T>(&self, f: impl FnOnce(&mut Progress) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// An attempt starts.
    pub fn handle_attempt(&self) {
        self.with(|p| {
            p.attempts += 1;
            p.next_attempt = None;
        });
    }

    /// The attempt failed with `error` at `wall`; the next is at `next`.
    pub fn handle_unreachable(&self, error: String, next: Instant, wall: SystemTime) {
        self.with(|p| {
            p.unreachable_since.get_or_insert(wall);
            p.last_error = Some(error);
            p.next_attempt = Some(next);
        });
    }

    /// The control API's view at `now`.
    pub fn info(&self) -> JoiningInfo {
        let now = Instant::now();
        self.with(|p| JoiningInfo {
            state: NodeState::Joining,
            registry: self.registry.clone(),
            since: unix_secs(p.since),
            unreachable_since: p.unreachable_since.map(unix_secs),
            attempts: p.attempts,
            last_error: p.last_error.clone(),
            next_attempt_in_secs: p
                .next_attempt
                .map(|t| t.saturating_duration_since(now).as_secs_f64().ceil() as u64),
        })
    }
}

/// Enrols the state directory `args.dir`, waiting for the registry as
/// long as it is unreachable. Returns the first final error.
pub async fn join_until_enrolled(
    args: &JoinArgs,
    progress: &JoinProgress,
    mut backoff: Backoff,
) -> Result<(), JoinError> {
    let mut rng: rand::rngs::StdRng = rand::make_rng();
    loop {
        progress.handle_attempt();
        let e = match crate::join::enrol(args).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_final() => return Err(e),
            Err(e) => e,
        };
        let delay = backoff.next_delay(&mut rng);
        tracing::warn!(
            registry = %args.registry,
            attempts = backoff.failures(),
            error = %e,
            "cannot join yet: waiting for the registry; next attempt in {}",
            humantime::format_duration(Duration::from_secs(delay.as_secs().max(1)))
        );
        progress.handle_unreachable(e.to_string(), Instant::now() + delay, SystemTime::now());
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_says_since_when_and_when_next() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let p = JoinProgress::new("https://r", t0);
        p.handle_attempt();
        let i = p.info();
        assert_eq!(
            (i.attempts, i.unreachable_since, i.next_attempt_in_secs),
            (1, None, None)
        );
        p.handle_unreachable(
            "refused".into(),
            Instant::now() + Duration::from_secs(5),
            t0 + Duration::from_secs(2),
        );
        p.handle_attempt();
        p.handle_unreachable(
            "refused again".into(),
            Instant::now() + Duration::from_secs(9),
            t0 + Duration::from_secs(9),
        );
        let i = p.info();
        assert_eq!(i.state, NodeState::Joining);
        assert_eq!(i.since, 1_000);
        assert_eq!(i.unreachable_since, Some(1_002), "the first failure");
        assert_eq!(i.attempts, 2);
        assert_eq!(i.last_error.as_deref(), Some("refused again"));
        assert!(matches!(i.next_attempt_in_secs, Some(8 | 9)), "{i:?}");
    }
}
