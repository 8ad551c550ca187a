//! NodeCore's up tunnels: bringing a tunnel up (accepted or dialled),
//! what arrives on it (Babel, control messages, path changes, liveness),
//! and carrying out the tunnel driver's commands (dial, drain, close).
//!
//! Suspicion: a tunnel the packet loop reports silent has its Babel
//! interface taken down, exactly as when its connection closes (routes
//! retracted, alternatives selected at once), but the connection and the
//! next hop stay; heard again, the interface comes back (Hello, IHU and a
//! full dump within a round trip), with its drain cost if the tunnel is
//! being drained. A peer that dials again while its old tunnel is
//! suspected restarted: the old tunnel is closed at once, so the duplicate
//! rule does not refuse the new one.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use re6st_babel::engine::{IfaceId, InterfaceKind, MIN_BUDGET};
use re6st_dataplane::ratelimit::TokenBucket;

use super::boundary::{
    ConnId, DialError, Handshake, NextHopId, TunnelCmd, TunnelId, canonical, refusal_code,
};
use super::{NodeCore, Now};
use crate::identity::{Crl, NodeCert, node_address};
use crate::transport::control::{Control, close};
use crate::tunnels::driver::{Command as DriverCmd, Dialled, PeerKey};
use crate::tunnels::policy::{Direction, Failure};

/// Added to a draining tunnel's Babel cost: worse than any real path, so
/// every route leaves it as soon as an alternative is feasible, yet finite,
/// so a destination with no alternative keeps using it until it closes.
pub(super) const DRAIN_COST: u16 = 0x4000;

/// An up tunnel, as NodeCore knows it.
#[derive(Debug, Clone)]
pub(super) struct Tunnel {
    pub(super) peer: NodeCert,
    pub(super) direction: Direction,
    pub(super) since: Instant,
    /// The peer's CRL number, as last known.
    pub(super) peer_crl: u64,
    /// The Babel interface's datagram budget.
    pub(super) budget: usize,
    /// A LAN link, not one of the policy's tunnels.
    pub(super) lan: bool,
    /// Silent for the suspect time: its Babel interface is down.
    pub(super) suspected: bool,
    /// The peer's UDP address.
    pub(super) remote: SocketAddr,
    /// The transport's RTT estimate.
    pub(super) rtt: Duration,
    /// The largest datagram it carries now.
    pub(super) max_datagram: Option<usize>,
    /// `WantCerts` the peer may still have answered (see
    /// [`super::origins::CERT_ANSWERS_BURST`]).
    pub(super) cert_answers: TokenBucket,
}

fn budget_of(max_datagram: Option<usize>) -> usize {
    max_datagram.unwrap_or(MIN_BUDGET).max(MIN_BUDGET)
}

pub(super) fn key_of(cert: &NodeCert) -> PeerKey {
    PeerKey {
        serial: cert.serial,
        prefix: cert.prefix,
    }
}

impl NodeCore {
    /// The `Accept` message for a peer at `remote`.
    /// Accepts the incoming connection `conn` as `tunnel` on `iface`:
    /// the packet loop answers `Accept` (our CRL number, the address we saw
    /// it at) and routes through it at once.
    pub(super) fn accept(
        &mut self,
        conn: ConnId,
        tunnel: TunnelId,
        iface: IfaceId,
        h: Handshake,
        now: Now,
    ) {
        let reply = Control::Accept {
            crl_number: self.crl_number(),
            observed: canonical(h.remote),
        };
        self.tunnel_cmd(TunnelCmd::Accept {
            conn,
            tunnel,
            hop: NextHopId(iface.0),
            reply,
        });
        self.bring_up(tunnel, iface, h, Direction::Incoming, now);
    }

    pub(super) fn crl_number(&self) -> u64 {
        self.crl.as_ref().map_or(0, |c| c.number)
    }

    /// Whether the CRL in force revokes `cert` (the packet loop's TLS
    /// checks it too; a handshake that raced a new CRL is caught here).
    fn is_revoked(&self, cert: &NodeCert) -> bool {
        self.crl.as_ref().is_some_and(|c| c.is_revoked(cert.serial))
    }

    pub(super) fn handle_incoming(&mut self, conn: ConnId, h: Handshake, now: Now) {
        if self.is_revoked(&h.peer) {
            self.tunnel_cmd(TunnelCmd::Refuse {
                conn,
                code: close::REVOKED,
                reason: "certificate revoked".into(),
            });
            return;
        }
        let peer = key_of(&h.peer);
        let Some(h) = self.accept_lan(conn, h, peer, now) else {
            return;
        };
        // A peer we hear nothing from dials us again: it restarted, its old
        // connection is dead. Close that one now rather than at the idle
        // timeout, so the duplicate rule does not refuse the new one.
        let silent: Vec<TunnelId> = self
            .tunnels
            .iter()
            .filter(|(_, up)| up.suspected && !up.lan && up.peer.prefix == peer.prefix)
            .map(|(t, _)| *t)
            .collect();
        for t in silent {
            tracing::info!(tunnel = %t, %peer, "a silent peer dialled again: closing its old tunnel");
            self.driver.close(
                t,
                close::DONE,
                "silent, and its peer dialled again",
                now.mono,
            );
        }
        match self.driver.handle_incoming(peer, now.mono) {
            Ok((tunnel, iface)) => {
                if let Some(ip) = h.local_ip {
                    self.addresses.handle_reached(ip, now.mono);
                    self.check_announced(now);
                }
                tracing::info!(%tunnel, %peer, %iface, from = %canonical(h.remote), "accepted a tunnel");
                self.accept(conn, tunnel, iface, h, now);
            }
            Err(refusal) => {
                tracing::info!(%peer, %refusal, "refused a tunnel");
                self.tunnel_cmd(TunnelCmd::Refuse {
                    conn,
                    code: refusal_code(&refusal),
                    reason: refusal.to_string(),
                });
            }
        }
    }

    pub(super) fn handle_dialled(
        &mut self,
        tunnel: TunnelId,
        result: Result<Box<Handshake>, DialError>,
        now: Now,
    ) {
        if self.lan.is_dialling(tunnel) {
            self.handle_lan_dialled(tunnel, result, now);
            return;
        }
        match result {
            Ok(h) if self.is_revoked(&h.peer) => {
                self.tunnel_cmd(TunnelCmd::Close {
                    tunnel,
                    code: close::REVOKED,
                    reason: "certificate revoked".into(),
                });
                self.driver
                    .handle_dialled(tunnel, Err(Failure::Unreachable), now.mono);
            }
            Ok(h) if self.dialled_wrong_peer(tunnel, &h) => {
                // The packet loop checks the certificate against the
                // address dialled; one that did not is refused here too.
                self.tunnel_cmd(TunnelCmd::Close {
                    tunnel,
                    code: close::BAD_PEER,
                    reason: "not the node dialled".into(),
                });
                self.driver
                    .handle_dialled(tunnel, Err(Failure::Unreachable), now.mono);
            }
            Ok(h) => match self
                .driver
                .handle_dialled(tunnel, Ok(Some(h.rtt)), now.mono)
            {
                Dialled::Up(iface) => {
                    if let Some(o) = h.observed {
                        self.addresses.handle_observed(o, now.mono);
                        self.check_announced(now);
                    }
                    tracing::info!(%tunnel, peer = %h.peer.prefix, %iface, "tunnel up");
                    self.tunnel_cmd(TunnelCmd::Up {
                        tunnel,
                        hop: NextHopId(iface.0),
                    });
                    self.bring_up(tunnel, iface, *h, Direction::Outgoing, now);
                }
                Dialled::Discard => self.tunnel_cmd(TunnelCmd::Close {
                    tunnel,
                    code: close::DONE,
                    reason: "not needed any more".into(),
                }),
            },
            Err(e) => {
                tracing::debug!(%tunnel, failure = %e.failure, reason = %e.reason, "dial failed");
                if let (Some(other), Some(peer)) = (&e.answered_by, self.driver.peer_of(tunnel)) {
                    self.handle_replaced(peer, other, now);
                }
                self.driver.handle_dialled(tunnel, Err(e.failure), now.mono);
            }
        }
    }

    /// A dial to `peer` reached `other` at its address, a valid node of
    /// the network: `peer` is gone from there (wiped and restarted with a
    /// new identity, or its address now someone else's). Its entry is
    /// forgotten at once, so it is not dialled again. The new node is
    /// learned from itself: it gets our announcement with a request for
    /// its own, over the overlay, and its answer is verified and stored
    /// like any other. A DB entry is never made from the certificate: the
    /// DB holds signed announcements, which it passes on to others, and
    /// only their owner can sign one.
    fn handle_replaced(&mut self, peer: PeerKey, other: &NodeCert, now: Now) {
        if self.db.forget_replaced(peer.prefix, peer.serial, now.wall) {
            tracing::info!(
                %peer,
                now = %other.prefix,
                "a peer's address answers as another node: forgetting the peer"
            );
            self.candidates_changed(now);
        }
        if other.prefix != self.cert.prefix && self.db.get(&other.prefix).is_none() {
            self.send_announcement(other.address, true, now);
        }
    }

    /// Whether a dial's handshake names another node than the one the
    /// driver dialled.
    fn dialled_wrong_peer(&self, tunnel: TunnelId, h: &Handshake) -> bool {
        self.driver
            .peer_of(tunnel)
            .is_some_and(|p| p.prefix != h.peer.prefix)
    }

    /// Adds an accepted or dialled tunnel (already announced to the packet
    /// loop) to Babel and the tunnel table, and sends it our CRL if its is
    /// older.
    pub(super) fn bring_up(
        &mut self,
        tunnel: TunnelId,
        iface: IfaceId,
        h: Handshake,
        direction: Direction,
        now: Now,
    ) {
        let mut peer_crl = h.peer_crl;
        if let Some(crl) = &self.crl
            && crl.number > peer_crl
        {
            peer_crl = crl.number;
            let msg = Control::Crl(crl.der.clone().into());
            self.tunnel_cmd(TunnelCmd::SendControl { tunnel, msg });
        }
        self.learn_origin(&h.peer, now);
        let budget = budget_of(h.max_datagram);
        if let Err(err) = self
            .engine
            .add_interface(iface, InterfaceKind::Tunnel, budget, now.mono)
        {
            tracing::error!(%iface, %err, "Babel refused the interface");
        }
        self.tunnels.insert(
            tunnel,
            Tunnel {
                peer: h.peer,
                direction,
                since: now.mono,
                peer_crl,
                budget,
                lan: self.driver.is_lan(tunnel),
                suspected: false,
                remote: canonical(h.remote),
                rtt: h.rtt,
                max_datagram: h.max_datagram,
                cert_answers: super::origins::cert_answer_budget(),
            },
        );
        self.routes_dirty = true;
    }

    pub(super) fn handle_babel(&mut self, tunnel: TunnelId, bytes: &[u8], now: Now) {
        let Some(iface) = self.driver.iface_of(tunnel) else {
            return;
        };
        if let Some(up) = self.tunnels.get(&tunnel) {
            let from = IpAddr::V6(up.peer.address);
            self.engine.handle_packet(iface, from, bytes, now.mono);
        }
    }

    pub(super) fn handle_path(
        &mut self,
        tunnel: TunnelId,
        rtt: Duration,
        max_datagram: Option<usize>,
    ) {
        let Some(up) = self.tunnels.get_mut(&tunnel) else {
            return;
        };
        up.rtt = rtt;
        up.max_datagram = max_datagram;
        let budget = budget_of(max_datagram);
        if budget != up.budget {
            up.budget = budget;
            if let Some(iface) = self.driver.iface_of(tunnel)
                && !up.suspected
            {
                let _ = self.engine.set_interface_budget(iface, budget);
            }
        }
    }

    /// A tunnel fell silent (`alive: false`) or was heard again.
    pub(super) fn handle_liveness(
        &mut self,
        tunnel: TunnelId,
        alive: bool,
        silent: Duration,
        now: Now,
    ) {
        let Some(iface) = self.driver.iface_of(tunnel) else {
            return;
        };
        let Some(up) = self.tunnels.get_mut(&tunnel) else {
            return;
        };
        if up.suspected != alive {
            return;
        }
        up.suspected = !alive;
        let (peer, budget) = (up.peer.prefix, up.budget);
        if alive {
            tracing::info!(%tunnel, %peer, "tunnel heard again: its routes come back");
            self.liveness.recovered += 1;
            if let Err(err) =
                self.engine
                    .add_interface(iface, InterfaceKind::Tunnel, budget, now.mono)
            {
                tracing::error!(%iface, %err, "Babel refused the interface");
            }
            if self.driver.is_draining(tunnel) {
                let _ = self.engine.set_interface_cost(iface, DRAIN_COST, now.mono);
            }
        } else {
            tracing::info!(%tunnel, %peer, ?silent, "tunnel silent: suspected, its routes move away");
            self.liveness.suspected += 1;
            let _ = self.engine.interface_down(iface, now.mono);
        }
        self.routes_dirty = true;
    }

    pub(super) fn handle_control(&mut self, tunnel: TunnelId, msg: Control, now: Now) {
        if !self.tunnels.contains_key(&tunnel) {
            return;
        }
        match msg {
            Control::Drain => {
                tracing::debug!(%tunnel, "peer drains the tunnel");
                self.driver.handle_peer_drain(tunnel);
            }
            Control::Drained => self.driver.handle_peer_drained(tunnel, now.mono),
            Control::Crl(der) => match Crl::from_der(&der, &self.ca_der) {
                Ok(crl) => {
                    if let Some(up) = self.tunnels.get_mut(&tunnel) {
                        up.peer_crl = up.peer_crl.max(crl.number);
                    }
                    self.apply_crl(crl, now);
                }
                Err(e) => {
                    tracing::info!(%tunnel, error = %e, "a peer sent a bad CRL");
                    self.driver
                        .close(tunnel, close::PROTOCOL, "bad CRL", now.mono);
                }
            },
            Control::WantCerts(rids) => self.handle_want_certs(tunnel, &rids, now),
            Control::Certs(certs) => self.handle_certs(&certs, now),
            Control::Open { .. } | Control::Accept { .. } => {
                self.driver.close(
                    tunnel,
                    close::PROTOCOL,
                    "unexpected control message",
                    now.mono,
                );
            }
            Control::Unknown(_) => {}
        }
    }

    pub(super) fn handle_closed(&mut self, tunnel: TunnelId, reason: &str, now: Now) {
        let lan = self.lan_link_closed(tunnel);
        if let Some(up) = self.tunnels.get(&tunnel) {
            tracing::info!(%tunnel, peer = %up.peer.prefix, reason, "tunnel closed");
            self.driver.handle_closed(tunnel, now.mono);
        }
        if lan {
            self.candidates_changed(now);
        }
    }

    /// Carries out one tunnel-driver command.
    pub(super) fn apply(&mut self, cmd: DriverCmd, now: Now) {
        match cmd {
            DriverCmd::Dial { tunnel, peer } => {
                let (addresses, tcp_port) = self
                    .db
                    .get(&peer.prefix)
                    .map(|e| (e.addresses.clone(), e.tcp_port))
                    .unwrap_or_default();
                if addresses.is_empty() {
                    self.driver
                        .handle_dialled(tunnel, Err(Failure::Unreachable), now.mono);
                    return;
                }
                self.tunnel_cmd(TunnelCmd::Dial {
                    tunnel,
                    peer: node_address(peer.prefix),
                    addresses,
                    tcp_port,
                });
            }
            DriverCmd::CancelDial { tunnel } => self.tunnel_cmd(TunnelCmd::CancelDial { tunnel }),
            DriverCmd::Drain {
                tunnel,
                iface,
                notify_peer,
            } => {
                // A suspected tunnel has no interface now: it gets the drain
                // cost when it is heard again.
                let suspected = self.tunnels.get(&tunnel).is_some_and(|u| u.suspected);
                if !suspected
                    && let Err(e) = self.engine.set_interface_cost(iface, DRAIN_COST, now.mono)
                {
                    tracing::warn!(%iface, error = %e, "cannot drain the interface");
                }
                if notify_peer && self.tunnels.contains_key(&tunnel) {
                    self.tunnel_cmd(TunnelCmd::SendControl {
                        tunnel,
                        msg: Control::Drain,
                    });
                }
                tracing::debug!(%tunnel, %iface, notify_peer, "draining the tunnel");
                self.routes_dirty = true;
            }
            DriverCmd::NotifyDrained { tunnel } => {
                if self.tunnels.contains_key(&tunnel) {
                    self.tunnel_cmd(TunnelCmd::SendControl {
                        tunnel,
                        msg: Control::Drained,
                    });
                }
            }
            DriverCmd::Close {
                tunnel,
                iface,
                close,
            } => {
                if let Some(iface) = iface {
                    let _ = self.engine.interface_down(iface, now.mono);
                    self.engine.origin_auth_mut().forget_interface(iface);
                }
                let up = self.tunnels.remove(&tunnel);
                if let Some((code, reason)) = close {
                    if let Some(up) = &up {
                        tracing::info!(%tunnel, peer = %up.peer.prefix, reason, "closing the tunnel");
                    }
                    self.tunnel_cmd(TunnelCmd::Close {
                        tunnel,
                        code,
                        reason: reason.into(),
                    });
                }
                self.routes_dirty = true;
            }
        }
    }

    /// Each up tunnel's RTT as the policy gets it: Babel's when it has
    /// one, the transport's otherwise.
    pub(super) fn tunnel_rtts(&self) -> BTreeMap<TunnelId, Duration> {
        let babel_rtt: BTreeMap<IfaceId, Duration> = self
            .engine
            .neighbours()
            .into_iter()
            .filter_map(|n| Some((n.iface, n.rtt?)))
            .collect();
        self.tunnels
            .iter()
            .map(|(t, up)| {
                let rtt = self
                    .driver
                    .iface_of(*t)
                    .and_then(|i| babel_rtt.get(&i).copied());
                (*t, rtt.unwrap_or(up.rtt))
            })
            .collect()
    }

    /// RTTs to the policy; expired peer certificates closed.
    pub(super) fn tunnel_maintenance(&mut self, now: Now) {
        let rtts = self.tunnel_rtts();
        let mut expired = Vec::new();
        for (t, up) in &self.tunnels {
            let Some(iface) = self.driver.iface_of(*t) else {
                continue;
            };
            let rtt = rtts.get(t).copied().unwrap_or(up.rtt);
            self.driver.handle_rtt(iface, rtt, now.mono);
            if up.peer.is_expired(now.wall) {
                expired.push(*t);
            }
        }
        for t in expired {
            self.driver
                .close(t, close::BAD_PEER, "certificate expired", now.mono);
        }
    }
}
