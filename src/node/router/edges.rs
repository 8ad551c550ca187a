//! The router's side of the edges: LAN links, address changes,
//! UPnP events. Kept apart from the tunnel logic of `router.rs`; the hooks
//! there call these.
//!
//! A LAN link is a QUIC connection like a tunnel, dialled to a link-local
//! address that LAN discovery heard a beacon from. The driver gives it an
//! interface outside the policy (not counted against `k` or the arity
//! limit, never refreshed away). An incoming connection from a link-local
//! address is a LAN link when LAN discovery runs. Two LAN links between the
//! same nodes (both dialled at once) resolve like tunnels: the one opened
//! by the smaller certificate serial stays, on both ends.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::super::core::DialError;
use super::super::edges::EdgeEvent;
use super::super::tunnel::{self, Established};
use super::{Router, RouterIn};
use crate::lan::{LanCmd, LanEvent, LanPeer};
use crate::transport::control::{Control, close};
use crate::tunnels::driver::PeerKey;
use crate::tunnels::policy::{Direction, TunnelId};

/// Shortest time between two registry rounds forced by address changes.
const FORCED_ROUND_GAP: Duration = Duration::from_secs(10);

fn is_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if a.is_unicast_link_local())
}

impl Router {
    /// An edge event: UPnP mapping, LAN discovery news.
    pub(super) fn handle_edge(&mut self, ev: EdgeEvent, now: Instant) {
        if self.edges.handle(&ev) {
            self.addresses_changed(now);
        }
        if let EdgeEvent::Lan(LanEvent::Dial(peer)) = ev {
            self.dial_lan(peer);
        }
    }

    /// The announced addresses changed: tell the registry soon (peers
    /// learn them from the next exchange rounds).
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

    fn dial_lan(&mut self, peer: LanPeer) {
        if self.lan_tunnel_of(peer.prefix).is_some() {
            self.edges.lan_cmd(LanCmd::LinkUp(peer.prefix));
            return;
        }
        tracing::debug!(prefix = %peer.prefix, at = %peer.addr, "dialling a LAN neighbour");
        let transport = self.transport.clone();
        let tx = self.tx.clone();
        let crl = transport.crl_number();
        tokio::spawn(async move {
            let result = tunnel::dial(&transport, &[SocketAddr::V6(peer.addr)], peer.address, crl)
                .await
                .map(Box::new);
            let _ = tx.send(RouterIn::LanDialled { peer, result }).await;
        });
    }

    fn lan_tunnel_of(&self, prefix: ipnet::Ipv6Net) -> Option<TunnelId> {
        self.tunnels
            .iter()
            .find(|(_, up)| up.lan && up.peer.prefix == prefix)
            .map(|(t, _)| *t)
    }

    /// Whether a new LAN link to `peer` dialled by us (`ours`) replaces the
    /// one we have: the link dialled by the smaller serial wins.
    fn keeps_new_lan_link(&self, existing: TunnelId, peer: PeerKey, ours: bool) -> bool {
        let Some(up) = self.tunnels.get(&existing) else {
            return true;
        };
        let dialler = |we_dialled: bool| {
            if we_dialled {
                self.cert.serial
            } else {
                peer.serial
            }
        };
        dialler(ours) < dialler(up.direction == Direction::Outgoing)
    }

    /// Makes room for a new LAN link to `peer`; `false` if the existing one
    /// stays.
    fn settle_lan_duplicate(&mut self, peer: PeerKey, ours: bool, now: Instant) -> bool {
        let Some(existing) = self.lan_tunnel_of(peer.prefix) else {
            return true;
        };
        if !self.keeps_new_lan_link(existing, peer, ours) {
            return false;
        }
        self.driver.close(
            existing,
            close::REFUSED_DUPLICATE,
            "duplicate LAN link (the smaller serial's is kept)",
            now,
        );
        true
    }

    pub(super) fn handle_lan_dialled(
        &mut self,
        peer: LanPeer,
        result: Result<Box<Established>, DialError>,
        now: Instant,
    ) {
        let e = match result {
            Ok(e) => e,
            Err(DialError { reason: why, .. }) => {
                tracing::info!(prefix = %peer.prefix, at = %peer.addr, reason = %why, "LAN link dial failed");
                self.edges.lan_cmd(LanCmd::LinkDown {
                    prefix: peer.prefix,
                    failed: true,
                });
                return;
            }
        };
        let key = PeerKey {
            serial: e.connected.peer.serial,
            prefix: e.connected.peer.prefix,
        };
        if !self.settle_lan_duplicate(key, true, now) {
            e.connected
                .conn
                .close(close::DONE.into(), b"a LAN link exists");
            return;
        }
        match self.driver.handle_lan_up(key, now) {
            Some((tunnel, iface)) => {
                tracing::info!(%tunnel, peer = %key, %iface, at = %peer.addr, "LAN link up");
                self.bring_up(tunnel, iface, *e, Direction::Outgoing, None, now);
                self.edges.lan_cmd(LanCmd::LinkUp(key.prefix));
                self.candidates_changed(now);
            }
            None => e
                .connected
                .conn
                .close(close::DONE.into(), b"a LAN link exists"),
        }
    }

    /// An incoming connection: takes it as a LAN link if it comes from a
    /// link-local address, refuses a tunnel from a node we have a LAN link
    /// with, and hands anything else back.
    pub(super) fn accept_lan(
        &mut self,
        e: Established,
        peer: PeerKey,
        now: Instant,
    ) -> Option<Established> {
        let remote = e.connected.conn.remote_address();
        let from_link = self.edges.lan_enabled() && is_link_local(remote.ip());
        if !from_link {
            if self.lan_tunnel_of(peer.prefix).is_some() {
                tracing::debug!(%peer, "refused a tunnel: a LAN link to this node exists");
                e.connected.conn.close(
                    close::REFUSED_DUPLICATE.into(),
                    b"duplicate: a LAN link to this node exists",
                );
                return None;
            }
            return Some(e);
        }
        if !self.settle_lan_duplicate(peer, false, now) {
            e.connected
                .conn
                .close(close::REFUSED_DUPLICATE.into(), b"a LAN link exists");
            return None;
        }
        let Some((tunnel, iface)) = self.driver.handle_lan_up(peer, now) else {
            e.connected
                .conn
                .close(close::REFUSED_DUPLICATE.into(), b"a LAN link exists");
            return None;
        };
        let accept = Control::Accept {
            crl_number: self.transport.crl_number(),
            observed: tunnel::canonical(remote),
        };
        tracing::info!(%tunnel, %peer, %iface, from = %remote, "accepted a LAN link");
        self.bring_up(tunnel, iface, e, Direction::Incoming, Some(accept), now);
        self.edges.lan_cmd(LanCmd::LinkUp(peer.prefix));
        self.candidates_changed(now);
        None
    }

    /// A connection ended: if it was a LAN link, LAN discovery may dial
    /// again (and the caller makes the node a tunnel candidate again once
    /// the driver forgot the link). Returns whether it was one.
    pub(super) fn lan_link_closed(&mut self, tunnel: TunnelId) -> bool {
        let Some(up) = self.tunnels.get(&tunnel).filter(|u| u.lan) else {
            return false;
        };
        let prefix = up.peer.prefix;
        tracing::info!(%tunnel, %prefix, "LAN link closed");
        self.edges.lan_cmd(LanCmd::LinkDown {
            prefix,
            failed: false,
        });
        true
    }
}
