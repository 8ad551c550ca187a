//! NodeCore's side of route-origin authentication: the Babel engine checks
//! every Update against [`Origins`] (the policy, in
//! [`crate::identity::origins`]); this file feeds it what NodeCore learns.
//!
//! - keys: our own certificate (at start and on renewal), each tunnel
//!   peer's (checked by the TLS handshake), each signed announcement the
//!   peer DB stores, and certificates fetched from a neighbour: a claim
//!   whose router-id has no known key is dropped and its router-id asked
//!   of the neighbour that relayed it ([`Control::WantCerts`]), which
//!   holds the certificate since it accepted the route. A certificate that
//!   comes back is checked against the CA and the CRL, learnt, and the
//!   neighbour asked for the route again with its proof, so a route is
//!   delayed by one round trip, not lost;
//! - gateway grants: from the signed network configuration, at start and
//!   on every newer one;
//! - revocation: a new CRL (and certificate expiry, hourly) forgets the
//!   origins it names and drops their routes at once
//!   ([`re6st_babel::engine::Engine::recheck_origins`]);
//! - freshness: our seqno moves every half proof lifetime, so that fresh
//!   proofs of our routes are always about.
//!
//! Certificates are taken only for router-ids we asked for, at most
//! [`MAX_CERTS`] per message, so a neighbour cannot make us verify more
//! than we asked. Answers are budgeted per tunnel
//! ([`CERT_ANSWERS_BURST`], then [`CERT_ANSWERS_RATE`] per second), so a
//! neighbour cannot turn a few bytes of `WantCerts` into a stream of
//! certificates; the requests over budget are dropped and counted.

use std::collections::BTreeSet;

use base64::Engine as _;
use bytes::Bytes;
use re6st_babel::engine::IfaceId;
use re6st_babel::wire::RouterId;
use re6st_dataplane::ratelimit::TokenBucket;
use serde::Serialize;

use super::boundary::TunnelCmd;
use super::{NodeCore, Now, TunnelId};
use crate::identity::origin::router_id;
use crate::identity::origins::Learnt;
use crate::identity::{Crl, GatewayGrant, NodeCert, Origins, SignedAnnouncement};
use crate::transport::control::{Control, MAX_CERTS, MAX_FRAME, MAX_WANT_CERTS};

/// `WantCerts` a tunnel's peer has answered at once: 64 messages of 32
/// router-ids cover every origin of a 2,048-node network, a neighbour's
/// cold start.
pub(super) const CERT_ANSWERS_BURST: u32 = 64;

/// `WantCerts` answered per second and tunnel once the burst is spent
/// (about 40 KB/s of certificates at most).
pub(super) const CERT_ANSWERS_RATE: u32 = 2;

pub(super) fn cert_answer_budget() -> TokenBucket {
    TokenBucket::new(CERT_ANSWERS_RATE, CERT_ANSWERS_BURST)
}

/// Certificate exchange for origin keys, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CertFetchStats {
    /// `WantCerts` messages sent.
    pub asked: u64,
    /// `WantCerts` messages answered.
    pub answered: u64,
    /// `WantCerts` messages over their tunnel's budget, not answered.
    pub throttled: u64,
    /// Certificates received and learnt.
    pub learnt: u64,
    /// Certificates received that did not parse or did not verify (CA,
    /// expiry, CRL).
    pub rejected: u64,
    /// Certificates received that nobody asked for (ignored unchecked).
    pub unsolicited: u64,
}

impl NodeCore {
    /// Learns an origin's certificate (already checked against the CA and
    /// the CRL); if claims of it were dropped for want of it, asks for
    /// them again.
    pub(super) fn learn_origin(&mut self, cert: &NodeCert, now: Now) -> Learnt {
        let origins = self.engine.origin_auth_mut();
        let learnt = origins.learn(cert);
        if learnt != Learnt::Refused
            && let Some((iface, prefixes)) = origins.take_wanted(router_id(cert.prefix))
        {
            for p in prefixes {
                self.engine.request_proof(iface, p, now.mono);
            }
        }
        learnt
    }

    /// Learns the certificate of an announcement the peer DB stored
    /// (verified there).
    pub(super) fn learn_announced(&mut self, signed: &SignedAnnouncement, now: Now) {
        let der = base64::engine::general_purpose::STANDARD.decode(&signed.certificate);
        match der.map(|d| NodeCert::from_der(&d)) {
            Ok(Ok(cert)) => {
                self.learn_origin(&cert, now);
            }
            _ => tracing::debug!("a stored announcement's certificate does not parse"),
        }
    }

    /// Asks neighbours for the certificates of origins they relayed and we
    /// have no key for.
    pub(super) fn ask_origin_certs(&mut self, now: Now) {
        let wanted = self.engine.origin_auth_mut().poll_wanted(now.mono);
        for (iface, rids) in wanted {
            let Some(tunnel) = self.up_tunnel_of(iface) else {
                continue;
            };
            for chunk in rids.chunks(MAX_WANT_CERTS) {
                self.cert_fetch.asked += 1;
                self.tunnel_cmd(TunnelCmd::SendControl {
                    tunnel,
                    msg: Control::WantCerts(chunk.to_vec()),
                });
            }
        }
    }

    fn up_tunnel_of(&self, iface: IfaceId) -> Option<TunnelId> {
        self.driver
            .tunnel_of(iface)
            .filter(|t| self.tunnels.contains_key(t))
    }

    /// A neighbour asks for origin certificates: those we hold go back (as
    /// many as fit one control frame).
    pub(super) fn handle_want_certs(&mut self, tunnel: TunnelId, rids: &[RouterId], now: Now) {
        let Some(up) = self.tunnels.get_mut(&tunnel) else {
            return;
        };
        if !up.cert_answers.try_take(now.mono) {
            self.cert_fetch.throttled += 1;
            return;
        }
        let origins = self.engine.origin_auth();
        let mut seen = BTreeSet::new();
        let mut room = MAX_FRAME - 1;
        let certs: Vec<Bytes> = rids
            .iter()
            .filter(|r| seen.insert(**r))
            .filter_map(|r| origins.cert_of(*r))
            .filter(|c| {
                let size = 2 + c.der.len();
                let fits = c.der.len() <= usize::from(u16::MAX) && size <= room;
                if fits {
                    room -= size;
                }
                fits
            })
            .map(|c| Bytes::from(c.der.clone()))
            .take(MAX_CERTS)
            .collect();
        self.cert_fetch.answered += 1;
        self.tunnel_cmd(TunnelCmd::SendControl {
            tunnel,
            msg: Control::Certs(certs),
        });
    }

    /// Certificates from a neighbour: each one asked for is checked
    /// against the CA and the CRL, then learnt.
    pub(super) fn handle_certs(&mut self, certs: &[Bytes], now: Now) {
        for der in certs.iter().take(MAX_CERTS) {
            let cert = match NodeCert::from_der(der) {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "a neighbour sent a bad certificate");
                    self.cert_fetch.rejected += 1;
                    continue;
                }
            };
            if !self.engine.origin_auth().is_wanted(router_id(cert.prefix)) {
                self.cert_fetch.unsolicited += 1;
                continue;
            }
            if let Err(e) = self.verifier.verify(der, now.wall) {
                tracing::info!(prefix = %cert.prefix, error = %e, "a neighbour sent a certificate we refuse");
                self.cert_fetch.rejected += 1;
                continue;
            }
            if self.learn_origin(&cert, now) != Learnt::Refused {
                self.cert_fetch.learnt += 1;
            }
        }
    }

    /// A new CRL: its revoked origins are forgotten and their routes
    /// dropped now.
    pub(super) fn revoke_origins(&mut self, crl: &Crl, now: Now) {
        let n = self
            .engine
            .origin_auth_mut()
            .forget(|c| crl.is_revoked(c.serial));
        if n > 0 {
            tracing::info!(
                origins = n,
                "revoked origins forgotten, their routes dropped"
            );
            self.engine.recheck_origins(now.mono);
        }
    }

    /// Expired origin certificates are forgotten, with their routes (the
    /// hourly purge); the claims of routes Babel no longer holds too.
    pub(super) fn purge_origins(&mut self, now: Now) {
        let n = self
            .engine
            .origin_auth_mut()
            .forget(|c| c.is_expired(now.wall));
        if n > 0 {
            self.engine.recheck_origins(now.mono);
        }
        let held: BTreeSet<_> = self
            .engine
            .routes(now.mono)
            .into_iter()
            .map(|r| (r.prefix, r.router_id))
            .collect();
        self.engine
            .origin_auth_mut()
            .retain_claims(|p, rid| held.contains(&(*p, rid)));
    }

    /// The network configuration's gateway grants changed: withdrawn ones
    /// take their routes with them.
    pub(super) fn set_grants(&mut self, grants: Vec<GatewayGrant>, now: Now) {
        if self.engine.origin_auth_mut().set_grants(grants) {
            tracing::info!("the network changed its gateway authorisations");
            self.engine.recheck_origins(now.mono);
        }
    }

    /// Moves our seqno when our proofs need signing afresh.
    pub(super) fn refresh_proofs(&mut self, now: Now) {
        if self.engine.origin_auth_mut().poll_refresh(now.mono) {
            self.engine.bump_seqno(now.mono);
        }
    }

    /// The origin policy (its keys, claims and counters).
    pub fn origins(&self) -> &Origins {
        self.engine.origin_auth()
    }

    /// Counters of the certificate exchange.
    pub fn cert_fetch_stats(&self) -> &CertFetchStats {
        &self.cert_fetch
    }
}

/// What tests make a rogue member do: a node with a valid certificate
/// whose Babel lies.
#[cfg(test)]
impl NodeCore {
    /// Originates `prefix` as if it were ours.
    pub(crate) fn rogue_announce(&mut self, prefix: ipnet::IpNet, now: Now) {
        let now = self.clamp(now);
        if let Err(e) = self.engine.add_xroute(prefix, 0, now.mono) {
            tracing::warn!(%prefix, error = %e, "the rogue cannot announce");
        }
        self.settle(now);
    }

    /// The origin proof this node holds for `claim`, as it would relay it
    /// (what a rogue can keep to replay later).
    pub(crate) fn rogue_keep_proof(
        &mut self,
        claim: &re6st_babel::engine::Claim,
        now: Now,
    ) -> Option<re6st_babel::wire::OriginProof> {
        use re6st_babel::engine::OriginAuth;
        let now = self.clamp(now);
        self.engine.origin_auth_mut().proof(claim, now.mono)
    }

    /// Sends a control message on every up tunnel.
    pub(crate) fn rogue_send_control(&mut self, msg: &Control) {
        self.rogue_on_every_tunnel(|tunnel| TunnelCmd::SendControl {
            tunnel,
            msg: msg.clone(),
        });
    }

    /// Sends a hand-made Babel packet on every up tunnel.
    pub(crate) fn rogue_send_babel(&mut self, bytes: &[u8]) {
        let bytes = Bytes::copy_from_slice(bytes);
        self.rogue_on_every_tunnel(|tunnel| TunnelCmd::SendBabel {
            tunnel,
            bytes: bytes.clone(),
        });
    }

    fn rogue_on_every_tunnel(&mut self, cmd: impl Fn(TunnelId) -> TunnelCmd) {
        let tunnels: Vec<TunnelId> = self.tunnels.keys().copied().collect();
        for tunnel in tunnels {
            self.tunnel_cmd(cmd(tunnel));
        }
    }
}
