//! NodeCore and the registry: when to ask it (the regular round, and
//! bootstrap with back-off while the peer DB is too small), what to do
//! with its answers, and the CRL in force (from the registry or flooded by
//! peers).
//!
//! The registry is needed only to enter the network: every failure is
//! counted and the node goes on with what it knows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::boundary::{TunnelCmd, TunnelId};
use super::command::{Command, LanNotice, RegistryReply, RegistryRequest};
use super::{NodeCore, Now};
use crate::identity::tls::{CaVerifier, Trust};
use crate::identity::{Crl, NodeCert, unix_secs};
use crate::identity::{LinkKind, LinkReport, SignedAnnouncement, Topology};
use crate::node::config::CoreConfig;
use crate::node::status::RegistryStatus;
use crate::registry::backoff::Backoff;
use crate::state_dir::files;
use crate::transport::control::{Control, close};
use crate::tunnels::driver::PeerKey;
use crate::tunnels::policy::Direction;

/// Shortest time between two registry rounds forced by address changes.
const FORCED_ROUND_GAP: Duration = Duration::from_secs(10);

/// Longest delay between two bootstrap requests.
const MAX_BOOTSTRAP_DELAY: Duration = Duration::from_secs(3600);

/// When to ask the registry what.
#[derive(Debug)]
pub(super) struct RegistrySchedule {
    enabled: bool,
    pub(super) status: RegistryStatus,
    interval: Duration,
    retry: Duration,
    next_round: Instant,
    /// A round is with the registry.
    round_busy: bool,
    /// Waits between tries of a failing round.
    round_backoff: Backoff,
    /// From when the registry renews our certificate, as it said last.
    pub(super) renew_after: Option<std::time::SystemTime>,
    /// The last round forced by an address change.
    forced_round: Option<Instant>,
    /// When to ask for peers next (`None`: not wanted until the DB is too
    /// small again).
    next_bootstrap: Option<Instant>,
    bootstrap_delay: Duration,
    /// A bootstrap request is out.
    bootstrap_busy: bool,
    /// Peers were wanted at the last look (the peer DB is too small, or
    /// the node has no tunnel).
    wanted: bool,
}

impl RegistrySchedule {
    pub(super) fn new(config: &CoreConfig, now: Instant) -> Self {
        Self {
            enabled: config.registry.is_some(),
            status: RegistryStatus {
                url: config.registry.clone(),
                ..RegistryStatus::default()
            },
            interval: config.registry_interval,
            retry: config.bootstrap_retry,
            next_round: now,
            round_busy: false,
            round_backoff: Backoff::new(
                config.registry_retry,
                config.registry_retry_max.min(config.registry_interval),
            ),
            renew_after: None,
            forced_round: None,
            next_bootstrap: Some(now),
            bootstrap_delay: config.bootstrap_retry,
            bootstrap_busy: false,
            wanted: true,
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        if !self.enabled {
            return None;
        }
        let bootstrap = self
            .next_bootstrap
            .filter(|_| self.wanted && !self.bootstrap_busy);
        let round = (!self.round_busy).then_some(self.next_round);
        bootstrap.into_iter().chain(round).min()
    }

    pub(super) fn round_now(&mut self, now: Instant) {
        self.next_round = now;
    }

    /// Seconds until the next round (`None`: no registry); 0 while a round
    /// is with the registry, whose outcome sets the next one (a failure
    /// brings it closer than the regular period).
    pub(super) fn next_round_in(&self, now: Instant) -> Option<u64> {
        self.enabled.then(|| {
            if self.round_busy {
                0
            } else {
                self.next_round.saturating_duration_since(now).as_secs()
            }
        })
    }

    /// Whether the last exchange with the registry failed.
    pub(super) fn failing(&self) -> bool {
        self.status.last_error.is_some()
    }

    /// The announced addresses changed: a round soon, at most one per
    /// [`FORCED_ROUND_GAP`].
    pub(super) fn addresses_changed(&mut self, now: Instant) {
        let due = match self.forced_round {
            Some(t) => (t + FORCED_ROUND_GAP).max(now),
            None => now,
        };
        if due < self.next_round {
            self.next_round = due;
            self.forced_round = Some(due);
        }
    }

    fn ok(&mut self, wall: std::time::SystemTime) {
        self.status.last_ok = Some(unix_secs(wall));
        self.status.last_error = None;
    }

    fn failed(&mut self, why: String) {
        self.status.last_error = Some(why);
        self.status.failures += 1;
    }
}

impl NodeCore {
    /// Asks the registry what is due.
    pub(super) fn registry_timers(&mut self, now: Now) {
        if !self.registry.enabled {
            return;
        }
        if now.mono >= self.registry.next_round && !self.registry.round_busy {
            self.registry.next_round = now.mono + self.registry.interval;
            self.registry.round_busy = true;
            let announcement = self.registry_announcement(now);
            self.push(Command::Registry(RegistryRequest::Round { announcement }));
        }
        let wanted = self.db.len() < usize::from(self.network.tunnels)
            || (self.tunnels.is_empty() && self.driver.policy().own_count() == 0);
        let r = &mut self.registry;
        r.wanted = wanted;
        if !wanted || r.bootstrap_busy {
            return;
        }
        let due = *r.next_bootstrap.get_or_insert(now.mono);
        if now.mono >= due {
            r.bootstrap_busy = true;
            r.next_bootstrap = Some(now.mono + r.bootstrap_delay);
            r.bootstrap_delay = (r.bootstrap_delay * 2).min(MAX_BOOTSTRAP_DELAY);
            let n = self
                .config
                .bootstrap_peers
                .clamp(1, crate::registry::api::MAX_BOOTSTRAP);
            self.push(Command::Registry(RegistryRequest::Bootstrap { n }));
        }
    }

    pub(super) fn handle_registry_reply(&mut self, reply: RegistryReply, now: Now) {
        match reply {
            RegistryReply::Bootstrapped(list) => {
                self.registry.bootstrap_busy = false;
                self.registry.status.bootstraps += 1;
                self.registry.ok(now.wall);
                let mut changed = false;
                for s in list
                    .iter()
                    .take(crate::registry::api::MAX_BOOTSTRAP as usize)
                {
                    changed |= self.insert_announcement(s, now);
                }
                tracing::info!(
                    received = list.len(),
                    db = self.db.len(),
                    "bootstrap from the registry"
                );
                if changed {
                    self.candidates_changed(now);
                }
                if self.db.len() >= usize::from(self.network.tunnels) {
                    // Enough peers; a node that still has no tunnel (its
                    // peers are down) asks again after the retry period,
                    // not as soon as this answer is in.
                    let r = &mut self.registry;
                    r.next_bootstrap = Some(now.mono + r.retry);
                    r.bootstrap_delay = r.retry;
                }
            }
            RegistryReply::Crl(crl) => self.apply_crl(*crl, now),
            RegistryReply::Renewed(cert) => {
                let old = self.cert.ipv4;
                self.adopt_cert(*cert);
                self.change_ipv4_subnet(old, now);
                // The registry says when the new one is due, next.
                self.registry.renew_after = None;
            }
            RegistryReply::RenewAfter(t) => self.registry.renew_after = Some(t),
            RegistryReply::Network { config, signed } => {
                if config.version > self.network.version {
                    if let Ok(json) = serde_json::to_string_pretty(&signed) {
                        self.push(Command::Persist {
                            file: files::NETWORK,
                            bytes: json.into_bytes(),
                        });
                    }
                    self.adopt_network(*config, now);
                }
            }
            RegistryReply::Done => {
                let r = &mut self.registry;
                r.round_busy = false;
                r.round_backoff.reset();
                r.ok(now.wall);
            }
            RegistryReply::RoundFailed(why) => {
                // Keep running on what we have; try again soon (a
                // certificate may be due), then less and less often.
                let r = &mut self.registry;
                r.round_busy = false;
                let delay = r.round_backoff.next_delay(&mut self.rng);
                r.next_round = now.mono + delay;
                crate::node::renewal::log_failed_round(
                    &self.cert,
                    r.renew_after,
                    &why,
                    delay,
                    now.wall,
                );
                r.failed(why);
            }
            RegistryReply::BootstrapFailed(why) => {
                self.registry.bootstrap_busy = false;
                tracing::info!(reason = %why, "registry unreachable; going on with what we know");
                self.registry.failed(why);
            }
        }
    }

    /// Our announcement for the registry: with our links, gateway prefixes
    /// and version, from which the registry draws the network.
    fn registry_announcement(&self, now: Now) -> Option<SignedAnnouncement> {
        let links = self
            .tunnels
            .values()
            .filter(|up| !up.suspected)
            .map(|up| LinkReport {
                peer: up.peer.prefix,
                kind: match (up.lan, up.direction) {
                    (true, _) => LinkKind::Lan,
                    (_, Direction::Outgoing) => LinkKind::Out,
                    (_, Direction::Incoming) => LinkKind::In,
                },
                rtt_ms: u32::try_from(up.rtt.as_millis()).ok(),
            })
            .collect();
        let gateways = self.config.gateway.fib_routes().map(|(p, _)| p).collect();
        let topology = Topology::new(env!("CARGO_PKG_VERSION"), links, gateways);
        self.sign_announcement(Some(topology), now)
    }

    /// Our renewed certificate (checked by the registry client: our key,
    /// our prefix, the CA): new handshakes, beacons and announcements use
    /// it, and the duplicate rule compares its serial.
    fn adopt_cert(&mut self, cert: NodeCert) {
        if cert.prefix != self.cert.prefix || cert.public_key != self.cert.public_key {
            tracing::warn!(
                serial = cert.serial,
                "a renewed certificate for another prefix or key: ignored"
            );
            return;
        }
        tracing::info!(serial = cert.serial, "certificate renewed");
        self.push(Command::Persist {
            file: files::CERT,
            bytes: cert.to_pem().into_bytes(),
        });
        self.tunnel_cmd(TunnelCmd::SetIdentity(Box::new(cert.clone())));
        self.lan_notice_identity(&cert);
        self.driver.set_me(PeerKey {
            serial: cert.serial,
            prefix: cert.prefix,
        });
        self.engine.origin_auth_mut().set_identity(cert.clone());
        self.cert = cert;
    }

    fn lan_notice_identity(&mut self, cert: &NodeCert) {
        if self.lan.enabled {
            self.push(Command::Lan(LanNotice::Identity(Box::new(cert.clone()))));
        }
    }

    /// A CRL from the registry or a peer: adopted if newer than ours, then
    /// revoked peers' tunnels are closed, the peer DB is verified again,
    /// and the CRL floods to the peers that have an older one.
    pub(super) fn apply_crl(&mut self, crl: Crl, now: Now) {
        if self.crl.as_ref().is_some_and(|c| c.number >= crl.number) {
            return;
        }
        let verifier = match CaVerifier::new(&Trust::new(&self.ca_der, Some(&crl))) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the CRL verifier");
                return;
            }
        };
        let number = crl.number;
        tracing::info!(number, revoked = crl.entries().count(), "new CRL");
        self.verifier = verifier;
        self.tunnel_cmd(TunnelCmd::SetCrl(Box::new(crl.clone())));
        if self.lan.enabled {
            let v = Arc::new(self.verifier.clone());
            self.push(Command::Lan(LanNotice::Verifier(v)));
        }
        let revoked: Vec<TunnelId> = self
            .tunnels
            .iter()
            .filter(|(_, up)| crl.is_revoked(up.peer.serial))
            .map(|(t, _)| *t)
            .collect();
        for t in revoked {
            tracing::warn!(tunnel = %t, "closing a tunnel to a revoked node");
            self.driver
                .close(t, close::REVOKED, "certificate revoked", now.mono);
        }
        if !self.db.purge(&self.verifier, now.wall).is_empty() {
            self.candidates_changed(now);
        }
        self.revoke_origins(&crl, now);
        // Flood it to the peers that have an older one (not to those it
        // revokes: they are being closed).
        let der = bytes::Bytes::from(crl.der.clone());
        let older: Vec<TunnelId> = self
            .tunnels
            .iter_mut()
            .filter(|(_, up)| up.peer_crl < number && !crl.is_revoked(up.peer.serial))
            .map(|(t, up)| {
                up.peer_crl = number;
                *t
            })
            .collect();
        for tunnel in older {
            let msg = Control::Crl(der.clone());
            self.tunnel_cmd(TunnelCmd::SendControl { tunnel, msg });
        }
        self.push(Command::Persist {
            file: files::CRL,
            bytes: crl.to_pem().into_bytes(),
        });
        self.crl = Some(crl);
    }
}
