//! How urgent the renewal of the node's own certificate is.
//!
//! The registry decides when a certificate is due (its renewal window,
//! 30 days of a year by default) and says from when in its answer to a
//! renewal request; the node asks at every registry round and takes the
//! new certificate when one comes. While the registry answers there is
//! nothing to watch. While it does not, the node keeps running on the
//! certificate it has and retries with back-off, and the closer the end
//! of validity, the louder it says so: peers refuse an expired
//! certificate, so an expired node is cut off until the registry renews it
//! (which it still does within its grace period).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::identity::NodeCert;

/// Where the node's certificate stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Renewal {
    /// The registry answers (it renews when due), or renewal is not due.
    #[default]
    Ok,
    /// Due, and the last registry round failed: renewal is being retried.
    Overdue,
    /// As `Overdue`, with less than a quarter of the renewal window left.
    Critical,
    /// Past its end of validity: peers refuse this node.
    Expired,
}

impl Renewal {
    /// Where `cert` stands at `now`: due from `due` (as the registry said;
    /// without it, for the last quarter of its validity), when the last
    /// registry round failed (`registry_failing`) or not.
    pub fn of(
        cert: &NodeCert,
        due: Option<SystemTime>,
        registry_failing: bool,
        now: SystemTime,
    ) -> Self {
        let Ok(left) = cert.not_after.duration_since(now) else {
            return Self::Expired;
        };
        if !registry_failing {
            return Self::Ok;
        }
        let window = match due {
            Some(due) => cert.not_after.duration_since(due).unwrap_or_default(),
            None => {
                cert.not_after
                    .duration_since(cert.not_before)
                    .unwrap_or_default()
                    / 4
            }
        };
        if left <= window / 4 {
            Self::Critical
        } else if left <= window {
            Self::Overdue
        } else {
            Self::Ok
        }
    }
}

impl std::fmt::Display for Renewal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Overdue => "overdue",
            Self::Critical => "critical",
            Self::Expired => "expired",
        })
    }
}

/// Logs a failed registry round at the level the certificate's state
/// calls for: information while there is time, a warning when renewal is
/// overdue, an error when expiry is close or past.
pub(crate) fn log_failed_round(
    cert: &NodeCert,
    due: Option<SystemTime>,
    why: &str,
    retry_in: Duration,
    now: SystemTime,
) {
    let left = cert.not_after.duration_since(now).unwrap_or_default();
    let left = humantime::format_duration(Duration::from_secs(left.as_secs()));
    let retry = humantime::format_duration(Duration::from_secs(retry_in.as_secs().max(1)));
    match Renewal::of(cert, due, true, now) {
        Renewal::Ok => tracing::info!(
            reason = %why,
            "registry unreachable; going on with what we know, next try in {retry}"
        ),
        Renewal::Overdue => tracing::warn!(
            reason = %why,
            "the certificate expires in {left} and the registry cannot renew it: \
             running on it, next try in {retry}"
        ),
        Renewal::Critical => tracing::error!(
            reason = %why,
            "the certificate expires in {left} and the registry cannot renew it: \
             peers will refuse this node when it does; next try in {retry}"
        ),
        Renewal::Expired => tracing::error!(
            reason = %why,
            "the certificate has expired and the registry cannot renew it: \
             peers refuse this node until it does; next try in {retry}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_pki::Pki;

    #[test]
    fn louder_as_the_end_of_validity_nears_but_only_while_failing() {
        let pki = Pki::new();
        // Valid for 61 minutes.
        let (cert, _) = pki.node(2);
        let at = |mins: u64| cert.not_before + Duration::from_secs(mins * 60);
        let life = cert.not_after.duration_since(cert.not_before).unwrap();
        assert_eq!(life, Duration::from_secs(61 * 60));
        // The registry said: due 21 minutes before the end (at 40).
        let due = Some(at(40));
        assert_eq!(Renewal::of(&cert, due, true, at(10)), Renewal::Ok);
        assert_eq!(Renewal::of(&cert, due, true, at(39)), Renewal::Ok);
        assert_eq!(Renewal::of(&cert, due, true, at(41)), Renewal::Overdue);
        assert_eq!(Renewal::of(&cert, due, false, at(41)), Renewal::Ok);
        assert_eq!(Renewal::of(&cert, due, true, at(56)), Renewal::Critical);
        assert_eq!(Renewal::of(&cert, due, true, at(62)), Renewal::Expired);
        assert_eq!(Renewal::of(&cert, due, false, at(62)), Renewal::Expired);
        // Not told: due for the last quarter of the validity.
        assert_eq!(Renewal::of(&cert, None, true, at(45)), Renewal::Ok);
        assert_eq!(Renewal::of(&cert, None, true, at(47)), Renewal::Overdue);
        assert_eq!(Renewal::of(&cert, None, true, at(58)), Renewal::Critical);
        assert_eq!(Renewal::Overdue.to_string(), "overdue");
    }
}
