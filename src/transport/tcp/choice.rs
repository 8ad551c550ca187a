//! Which transport a dial takes: QUIC, TCP, or QUIC first with TCP as the
//! fallback (`--transport auto`).
//!
//! In auto mode a QUIC dial that fails without an answer (timeout,
//! unreachable: not a refusal, not another node) is tried again over TCP
//! at once, to the same addresses, before NodeCore hears of it. When
//! [`Chooser::STREAK`] QUIC dials in a row failed so while a TCP one
//! worked, UDP is taken not to get out: dials go straight to TCP for
//! `prefer_tcp`, then QUIC is tried again.
//!
//! Moving back: every `prefer_tcp`, each tunnel that fell back to TCP is
//! probed with a QUIC dial to the same peer (under a tunnel id of the
//! chooser's own, in [`PROBE_IDS`], that NodeCore never sees). Any
//! answer (a handshake, a refusal) says UDP gets through again: the TCP
//! tunnel is closed, NodeCore hears it closed and dials again, over QUIC
//! first. Sans-IO: time is a parameter.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::node::core::boundary::{DialError, TunnelId};
use crate::tunnels::policy::Failure;

/// How a node picks its tunnels' transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// QUIC only.
    Quic,
    /// TCP only.
    Tcp,
    /// QUIC first, TCP when QUIC does not get through.
    #[default]
    Auto,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "quic" => Ok(Mode::Quic),
            "tcp" => Ok(Mode::Tcp),
            "auto" => Ok(Mode::Auto),
            other => Err(format!("transport {other:?}: expected quic, tcp or auto")),
        }
    }
}

/// A tunnel's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// QUIC over UDP.
    Quic,
    /// TLS over TCP.
    Tcp,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Quic => "quic",
            Kind::Tcp => "tcp",
        })
    }
}

/// A QUIC dial that may fall back to TCP.
#[derive(Debug, Clone)]
struct Pending {
    peer: Ipv6Addr,
    addresses: Vec<SocketAddr>,
    tcp_port: Option<u16>,
    /// Already the TCP attempt.
    fallback: bool,
}

/// Tunnel ids of QUIC probes: between NodeCore's own (counted up from 0)
/// and its LAN links' (from 1 << 63, the driver's `LAN_ID`), so that
/// every event of a probe, its last included, is told from theirs.
pub const PROBE_IDS: std::ops::Range<u64> = 1 << 62..crate::tunnels::driver::LAN_ID;

/// A QUIC dial that checks whether a tunnel that fell back to TCP could
/// move back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The probe's own tunnel id.
    pub probe: TunnelId,
    /// The peer.
    pub peer: Ipv6Addr,
    /// Its addresses.
    pub addresses: Vec<SocketAddr>,
}

/// A dial to carry out over TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redial {
    /// The overlay address dialled.
    pub peer: Ipv6Addr,
    /// Its (UDP) addresses.
    pub addresses: Vec<SocketAddr>,
    /// Its announced TCP port.
    pub tcp_port: Option<u16>,
}

/// The transport choice. See the module documentation.
#[derive(Debug)]
pub struct Chooser {
    mode: Mode,
    tcp: bool,
    prefer_tcp: Duration,
    /// QUIC dials without an answer in a row.
    streak: u32,
    tcp_until: Option<Instant>,
    pending: HashMap<TunnelId, Pending>,
    /// Up tunnels that fell back to TCP: where to probe and when.
    fell_back: HashMap<TunnelId, (Redial, Instant)>,
    /// Probes in flight: the TCP tunnel each is for.
    probes: HashMap<TunnelId, TunnelId>,
    next_probe: u64,
}

/// Dials remembered for a fallback, at most (NodeCore has far fewer).
const MAX_PENDING: usize = 1024;

impl Chooser {
    /// QUIC dials without an answer in a row, with a TCP one that worked,
    /// before dials go straight to TCP.
    pub const STREAK: u32 = 2;

    /// A chooser in `mode`; `tcp`: whether TCP is enabled at all.
    pub fn new(mode: Mode, tcp: bool, prefer_tcp: Duration) -> Self {
        Self {
            mode: if tcp { mode } else { Mode::Quic },
            tcp,
            prefer_tcp,
            streak: 0,
            tcp_until: None,
            pending: HashMap::new(),
            fell_back: HashMap::new(),
            probes: HashMap::new(),
            next_probe: PROBE_IDS.start,
        }
    }

    /// The transport of a new dial.
    pub fn dial(
        &mut self,
        tunnel: TunnelId,
        peer: Ipv6Addr,
        addresses: &[SocketAddr],
        tcp_port: Option<u16>,
        now: Instant,
    ) -> Kind {
        let kind = match self.mode {
            Mode::Quic => Kind::Quic,
            Mode::Tcp => Kind::Tcp,
            Mode::Auto if self.tcp_until.is_some_and(|t| now < t) => Kind::Tcp,
            Mode::Auto => Kind::Quic,
        };
        if self.mode == Mode::Auto && self.pending.len() < MAX_PENDING {
            self.pending.insert(
                tunnel,
                Pending {
                    peer,
                    addresses: addresses.to_vec(),
                    tcp_port,
                    fallback: kind == Kind::Tcp,
                },
            );
        }
        kind
    }

    /// A dial of `tunnel` over `kind` ended with `result`. `Some`: dial it
    /// again over TCP instead of reporting the failure.
    pub fn dialled(
        &mut self,
        tunnel: TunnelId,
        kind: Kind,
        result: Result<(), &DialError>,
        now: Instant,
    ) -> Option<Redial> {
        let p = self.pending.remove(&tunnel)?;
        match (kind, result) {
            (Kind::Quic, Ok(())) => {
                self.streak = 0;
                self.tcp_until = None;
                None
            }
            (Kind::Quic, Err(e)) if silent(e) && self.tcp && !p.fallback => {
                self.streak = self.streak.saturating_add(1);
                self.pending.insert(
                    tunnel,
                    Pending {
                        fallback: true,
                        ..p.clone()
                    },
                );
                Some(Redial {
                    peer: p.peer,
                    addresses: p.addresses,
                    tcp_port: p.tcp_port,
                })
            }
            (Kind::Tcp, Ok(())) => {
                if self.fell_back.len() < MAX_PENDING {
                    let r = Redial {
                        peer: p.peer,
                        addresses: p.addresses,
                        tcp_port: p.tcp_port,
                    };
                    self.fell_back.insert(tunnel, (r, now + self.prefer_tcp));
                }
                if self.streak >= Self::STREAK && self.tcp_until.is_none_or(|t| t <= now) {
                    tracing::info!(
                        prefer_for = ?self.prefer_tcp,
                        "QUIC dials get no answer while TCP works: dialling over TCP for a while"
                    );
                    self.tcp_until = Some(now + self.prefer_tcp);
                }
                None
            }
            _ => None,
        }
    }

    /// The dial was cancelled, or the tunnel closed.
    pub fn forget(&mut self, tunnel: TunnelId) {
        self.pending.remove(&tunnel);
        self.fell_back.remove(&tunnel);
    }

    /// Whether `tunnel` is one of the chooser's probes.
    pub fn is_probe(tunnel: TunnelId) -> bool {
        PROBE_IDS.contains(&tunnel.0)
    }

    /// The next QUIC probe to dial now.
    pub fn poll_probe(&mut self, now: Instant) -> Option<Probe> {
        let (&tunnel, (r, at)) = self
            .fell_back
            .iter_mut()
            .filter(|(_, (_, at))| *at <= now)
            .min_by_key(|(t, _)| **t)?;
        *at = now + self.prefer_tcp;
        let probe = TunnelId(self.next_probe);
        self.next_probe += 1;
        self.probes.insert(probe, tunnel);
        Some(Probe {
            probe,
            peer: r.peer,
            addresses: r.addresses.clone(),
        })
    }

    /// When [`Chooser::poll_probe`] has something.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.fell_back.values().map(|(_, at)| *at).min()
    }

    /// A probe ended with `result`; `Some`: UDP gets through again, the
    /// TCP tunnel it names moves back to QUIC (it is closed).
    pub fn probed(
        &mut self,
        probe: TunnelId,
        result: Result<(), &DialError>,
        now: Instant,
    ) -> Option<TunnelId> {
        let tunnel = self.probes.remove(&probe)?;
        if result.is_err_and(silent) {
            return None;
        }
        let _ = now;
        self.streak = 0;
        self.tcp_until = None;
        self.fell_back.remove(&tunnel).map(|_| tunnel)
    }

    /// Whether dials go straight to TCP now.
    pub fn prefers_tcp(&self, now: Instant) -> bool {
        self.mode == Mode::Tcp || self.tcp_until.is_some_and(|t| now < t)
    }
}

/// A failure with no answer from the peer: what a blocked UDP looks like.
fn silent(e: &DialError) -> bool {
    e.failure == Failure::Unreachable && e.answered_by.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(60);

    fn peer() -> (Ipv6Addr, Vec<SocketAddr>) {
        (
            "fd00::1".parse().unwrap(),
            vec!["192.0.2.1:326".parse().unwrap()],
        )
    }

    fn timeout() -> DialError {
        DialError::unreachable("no answer within 5s")
    }

    #[test]
    fn auto_falls_back_to_tcp_after_a_silent_quic_dial() {
        let now = Instant::now();
        let mut c = Chooser::new(Mode::Auto, true, T);
        let (p, a) = peer();
        assert_eq!(c.dial(TunnelId(1), p, &a, Some(443), now), Kind::Quic);
        let r = c.dialled(TunnelId(1), Kind::Quic, Err(&timeout()), now);
        // The TCP dial keeps the peer's announced TCP port.
        assert_eq!(
            r,
            Some(Redial {
                peer: p,
                addresses: a.clone(),
                tcp_port: Some(443),
            })
        );
        // The TCP attempt's own failure is reported, not retried.
        assert_eq!(
            c.dialled(TunnelId(1), Kind::Tcp, Err(&timeout()), now),
            None
        );
    }

    #[test]
    fn refusals_and_other_nodes_do_not_fall_back() {
        let now = Instant::now();
        let mut c = Chooser::new(Mode::Auto, true, T);
        let (p, a) = peer();
        c.dial(TunnelId(1), p, &a, None, now);
        let refused = DialError {
            failure: Failure::Refused(crate::tunnels::policy::Refusal::Duplicate),
            reason: "duplicate".into(),
            answered_by: None,
        };
        assert_eq!(c.dialled(TunnelId(1), Kind::Quic, Err(&refused), now), None);
    }

    #[test]
    fn quic_only_and_no_tcp_never_fall_back() {
        let now = Instant::now();
        let (p, a) = peer();
        for mut c in [
            Chooser::new(Mode::Quic, true, T),
            Chooser::new(Mode::Auto, false, T),
        ] {
            assert_eq!(c.dial(TunnelId(1), p, &a, None, now), Kind::Quic);
            assert_eq!(
                c.dialled(TunnelId(1), Kind::Quic, Err(&timeout()), now),
                None
            );
        }
        let mut c = Chooser::new(Mode::Tcp, true, T);
        assert_eq!(c.dial(TunnelId(1), p, &a, None, now), Kind::Tcp);
    }

    #[test]
    fn a_streak_prefers_tcp_for_a_while_then_quic_again() {
        let now = Instant::now();
        let mut c = Chooser::new(Mode::Auto, true, T);
        let (p, a) = peer();
        for i in 0..u64::from(Chooser::STREAK) {
            assert_eq!(c.dial(TunnelId(i), p, &a, None, now), Kind::Quic);
            assert!(
                c.dialled(TunnelId(i), Kind::Quic, Err(&timeout()), now)
                    .is_some()
            );
            assert_eq!(c.dialled(TunnelId(i), Kind::Tcp, Ok(()), now), None);
        }
        assert!(c.prefers_tcp(now));
        assert_eq!(c.dial(TunnelId(10), p, &a, None, now + T / 2), Kind::Tcp);
        // Straight to TCP: its failure is not retried.
        assert_eq!(
            c.dialled(TunnelId(10), Kind::Tcp, Err(&timeout()), now + T / 2),
            None
        );
        assert_eq!(c.dial(TunnelId(11), p, &a, None, now + T), Kind::Quic);
        // A QUIC success ends the streak.
        assert_eq!(c.dialled(TunnelId(11), Kind::Quic, Ok(()), now + T), None);
        assert!(!c.prefers_tcp(now + T));
        assert_eq!(c.dial(TunnelId(12), p, &a, None, now + T), Kind::Quic);
    }

    #[test]
    fn a_fallen_back_tunnel_is_probed_and_moves_back_on_an_answer() {
        let now = Instant::now();
        let mut c = Chooser::new(Mode::Auto, true, T);
        let (p, a) = peer();
        c.dial(TunnelId(1), p, &a, None, now);
        assert!(
            c.dialled(TunnelId(1), Kind::Quic, Err(&timeout()), now)
                .is_some()
        );
        c.dialled(TunnelId(1), Kind::Tcp, Ok(()), now);
        assert_eq!(c.poll_probe(now), None);
        assert_eq!(c.poll_timeout(), Some(now + T));
        let probe = c.poll_probe(now + T).expect("a probe");
        assert!(Chooser::is_probe(probe.probe));
        // A LAN link's tunnel is not.
        assert!(!Chooser::is_probe(TunnelId(crate::tunnels::driver::LAN_ID)));
        assert_eq!((probe.peer, &probe.addresses), (p, &a));
        assert_eq!(c.poll_probe(now + T), None, "one probe per period");
        // No answer: stays on TCP, probed again a period later.
        assert_eq!(c.probed(probe.probe, Err(&timeout()), now + T), None);
        let probe = c.poll_probe(now + 2 * T).expect("probed again");
        // A refusal is an answer: UDP gets through.
        let dup = DialError {
            failure: Failure::Refused(crate::tunnels::policy::Refusal::Duplicate),
            reason: "duplicate".into(),
            answered_by: None,
        };
        assert_eq!(
            c.probed(probe.probe, Err(&dup), now + 2 * T),
            Some(TunnelId(1))
        );
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn a_closed_tunnel_is_not_probed() {
        let now = Instant::now();
        let mut c = Chooser::new(Mode::Auto, true, T);
        let (p, a) = peer();
        c.dial(TunnelId(1), p, &a, None, now);
        c.dialled(TunnelId(1), Kind::Quic, Err(&timeout()), now);
        c.dialled(TunnelId(1), Kind::Tcp, Ok(()), now);
        c.forget(TunnelId(1));
        assert_eq!(c.poll_probe(now + T), None);
    }

    #[test]
    fn one_silent_dial_is_not_a_streak() {
        let now = Instant::now();
        let mut c = Chooser::new(Mode::Auto, true, T);
        let (p, a) = peer();
        c.dial(TunnelId(1), p, &a, None, now);
        assert!(
            c.dialled(TunnelId(1), Kind::Quic, Err(&timeout()), now)
                .is_some()
        );
        c.dialled(TunnelId(1), Kind::Tcp, Ok(()), now);
        assert!(!c.prefers_tcp(now));
    }
}
