//! Policy configuration: the network parameters that shape the overlay
//! (`k`, the arity limit, the refresh period) and the timers of the policy.

use std::time::Duration;

/// How the tunnel replaced at each refresh is chosen, and what replaces it.
///
/// The report's rule (§5.1) is [`Replacement::LeastUsed`]. The others exist so
/// that `re6st sim` can compare them on the same code the node runs; the
/// measurements are in `docs/results.md` ("Beyond the report").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replacement {
    /// Never replace a working tunnel: only failed or closed ones are
    /// replaced. The network stays the random graph of §3.
    Never,
    /// §3.2: every refresh period replace a randomly chosen own tunnel.
    Random,
    /// §5.1 (the report's optimisation): replace the own tunnel through which
    /// the fewest destinations are routed (ties: the highest RTT), by a tunnel
    /// to a random peer.
    LeastUsed,
    /// As [`Replacement::LeastUsed`] for the victim, but the new peer is the
    /// one with the lowest RTT among `probes` random peers: the policy opens
    /// `probes` tunnels at once, keeps the fastest once they have all come up
    /// (or failed, or `probe_timeout` passed) and closes the others before
    /// they carry any route. Opening a QUIC connection measures its RTT, so
    /// the node needs no other probe.
    LeastUsedBestOf {
        /// How many candidate tunnels are opened per refresh (at least 2).
        probes: u8,
    },
    /// Replace the least used own tunnels by direct tunnels to the
    /// destinations they would shortcut most: those whose route metric
    /// (Babel's, RTT-based) exceeds the estimated direct RTT by the most
    /// (see [`super::Policy::handle_destinations`]). `random` own tunnels
    /// are kept to random peers (replaced as by [`Replacement::LeastUsed`]),
    /// for fault tolerance. Up to [`Replacement::MAX_SHORTCUTS`] tunnels are
    /// replaced per refresh while many destinations are routed at least
    /// twice their estimated direct RTT, one otherwise. No probe: the cost
    /// is one handshake per replaced tunnel (and NodeCore's probes of the
    /// direct RTT). Without destinations reported it behaves as
    /// [`Replacement::LeastUsed`].
    Shortcut {
        /// How many of the `k` own tunnels stay random.
        random: u8,
    },
}

impl Replacement {
    /// Most probes a network may ask for: each is a QUIC handshake at every
    /// refresh, and the simulator's gain flattens well before this.
    pub const MAX_PROBES: u8 = 16;

    /// Most tunnels [`Replacement::Shortcut`] replaces at one refresh.
    pub const MAX_SHORTCUTS: usize = 3;

    /// Most random tunnels [`Replacement::Shortcut`] may keep (as many as
    /// `k` makes it [`Replacement::LeastUsed`]).
    pub const MAX_RANDOM: u8 = 64;

    /// Whether a real node does what the name says. Every replacement
    /// runs on NodeCore, but [`Replacement::Shortcut`] needs the direct
    /// RTT to destinations it has no tunnel to, which NodeCore asks its
    /// shell to probe: the virtual network (`re6st sim network`) answers,
    /// the real node's shell answers "unsupported" (it has no probe yet),
    /// so on a real node shortcut-R would be least-used with extra steps.
    pub fn runs_on_real_nodes(self) -> bool {
        !matches!(self, Replacement::Shortcut { .. })
    }

    /// Parses a replacement a network may be given (`--tunnel-replacement`
    /// of the registry and the node): one that [runs on real
    /// nodes](Replacement::runs_on_real_nodes).
    pub fn parse_for_nodes(s: &str) -> Result<Replacement, String> {
        let r: Replacement = s
            .parse()
            .map_err(|e: ParseReplacementError| e.to_string())?;
        r.for_nodes()
    }

    /// Itself if it [runs on real nodes](Replacement::runs_on_real_nodes),
    /// or why not.
    pub fn for_nodes(self) -> Result<Replacement, String> {
        if !self.runs_on_real_nodes() {
            return Err(format!(
                "{self} runs in `re6st sim` only (the model and the virtual network): real \
                 nodes do not probe the direct RTT it needs yet (docs/results.md); use \
                 least-used or least-used-best-of-N"
            ));
        }
        Ok(self)
    }
}

/// The names used in the network configuration and on command lines:
/// `never`, `random`, `least-used`, `least-used-best-of-N`, `shortcut-R`.
impl std::fmt::Display for Replacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Replacement::Never => f.write_str("never"),
            Replacement::Random => f.write_str("random"),
            Replacement::LeastUsed => f.write_str("least-used"),
            Replacement::LeastUsedBestOf { probes } => write!(f, "least-used-best-of-{probes}"),
            Replacement::Shortcut { random } => write!(f, "shortcut-{random}"),
        }
    }
}

impl std::str::FromStr for Replacement {
    type Err = ParseReplacementError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseReplacementError(s.to_string());
        Ok(match s {
            "never" => Replacement::Never,
            "random" => Replacement::Random,
            "least-used" => Replacement::LeastUsed,
            _ if s.starts_with("shortcut-") => {
                let n = &s["shortcut-".len()..];
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let random: u8 = n.parse().map_err(|_| bad())?;
                if random > Replacement::MAX_RANDOM {
                    return Err(bad());
                }
                Replacement::Shortcut { random }
            }
            _ => {
                let n = s.strip_prefix("least-used-best-of-").ok_or_else(bad)?;
                // Digits only: no sign, no spaces.
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let probes: u8 = n.parse().map_err(|_| bad())?;
                if !(2..=Replacement::MAX_PROBES).contains(&probes) {
                    return Err(bad());
                }
                Replacement::LeastUsedBestOf { probes }
            }
        })
    }
}

/// A replacement name that is not one of [`Replacement`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown tunnel replacement {0:?}: expected never, random, least-used or \
     least-used-best-of-N with N from 2 to 16, or shortcut-R with R from 0 to 64"
)]
pub struct ParseReplacementError(pub String);

/// Parameters of [`super::Policy`]. `outgoing`, `max_tunnels` and `refresh`
/// come from the network configuration signed by the registry; the rest are
/// local timers with sane defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// `k`: how many tunnels this node opens itself (re6stnet's
    /// `client_count`, default 10). 0 makes a node that only accepts.
    pub outgoing: usize,
    /// Maximum arity: tunnels in both directions together (default `3k`).
    /// Incoming tunnels are refused once there are `max_tunnels - outgoing`
    /// of them, which keeps room for the node's own `k` (a refresh may
    /// exceed the maximum by one while its drain runs, by up to
    /// [`Replacement::MAX_SHORTCUTS`] with [`Replacement::Shortcut`]).
    pub max_tunnels: usize,
    /// Refresh period (re6stnet's `tunnel_refresh`, default 300 s).
    pub refresh: Duration,
    /// How the refresh chooses what to replace.
    pub replacement: Replacement,
    /// First back-off after a peer failed or refused; it doubles at each
    /// further failure up to `backoff_max`, and a working tunnel resets it.
    pub backoff_min: Duration,
    /// Longest back-off.
    pub backoff_max: Duration,
    /// Longest time a draining tunnel waits for its routes to move away
    /// before it is closed anyway (re6stnet waits at most 2 × 4 × hello).
    pub drain_timeout: Duration,
    /// With [`Replacement::LeastUsedBestOf`]: how long to wait for all
    /// probes before choosing among those that are up.
    pub probe_timeout: Duration,
}

impl PolicyConfig {
    /// The network defaults with `k` own tunnels and a maximum arity of `3k`.
    pub fn with_k(outgoing: usize) -> Self {
        PolicyConfig {
            outgoing,
            max_tunnels: 3 * outgoing,
            ..PolicyConfig::default()
        }
    }

    /// Checks the invariants [`super::Policy::new`] relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_tunnels < self.outgoing {
            return Err(ConfigError::MaxBelowOutgoing {
                max_tunnels: self.max_tunnels,
                outgoing: self.outgoing,
            });
        }
        if self.refresh.is_zero() {
            return Err(ConfigError::ZeroDuration("refresh"));
        }
        if self.backoff_min.is_zero() {
            return Err(ConfigError::ZeroDuration("backoff_min"));
        }
        if self.backoff_max < self.backoff_min {
            return Err(ConfigError::BackoffRange);
        }
        if let Replacement::LeastUsedBestOf { probes } = self.replacement
            && probes < 2
        {
            return Err(ConfigError::TooFewProbes(probes));
        }
        Ok(())
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            outgoing: 10,
            max_tunnels: 30,
            refresh: Duration::from_secs(300),
            replacement: Replacement::LeastUsed,
            backoff_min: Duration::from_secs(30),
            backoff_max: Duration::from_secs(3600),
            drain_timeout: Duration::from_secs(120),
            probe_timeout: Duration::from_secs(10),
        }
    }
}

/// A [`PolicyConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The maximum arity must leave room for the node's own tunnels.
    #[error("max_tunnels ({max_tunnels}) is below the number of own tunnels ({outgoing})")]
    MaxBelowOutgoing {
        /// The configured maximum arity.
        max_tunnels: usize,
        /// The configured `k`.
        outgoing: usize,
    },
    /// A period that must be positive is zero.
    #[error("{0} must not be zero")]
    ZeroDuration(&'static str),
    /// `backoff_max` is below `backoff_min`.
    #[error("backoff_max is below backoff_min")]
    BackoffRange,
    /// Best-of-n replacement needs at least two probes to choose from.
    #[error("LeastUsedBestOf needs at least 2 probes, got {0}")]
    TooFewProbes(u8),
}
