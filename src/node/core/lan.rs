//! NodeCore's LAN links: what it does with LAN discovery's news.
//!
//! A LAN link is a connection like a tunnel, dialled to a link-local
//! address that LAN discovery heard a beacon from. The driver gives it an
//! interface outside the policy (not counted against `k` or the arity
//! limit, never refreshed away). An incoming connection from a link-local
//! address is a LAN link when LAN discovery runs. Two LAN links between the
//! same nodes (both dialled at once) resolve like tunnels: the one opened
//! by the smaller certificate serial stays, on both ends. A node with a LAN
//! link is no tunnel candidate, and a tunnel it dials is refused.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::Ipv6Net;

use super::boundary::{ConnId, DialError, Handshake, NextHopId, TunnelCmd, TunnelId};
use super::command::{Command, LanNotice};
use super::{NodeCore, Now};
use crate::lan::{LanEvent, LanPeer};
use crate::transport::control::close;
use crate::tunnels::driver::PeerKey;
use crate::tunnels::policy::Direction;

/// LAN neighbours remembered at most (discovery bounds its own table; this
/// is the status copy).
const MAX_NEIGHBOURS: usize = 256;

/// LAN dials in flight at most (discovery asks for one per neighbour).
const MAX_DIALS: usize = 64;

/// What NodeCore knows of the LAN.
#[derive(Debug)]
pub(super) struct LanLinks {
    /// LAN discovery runs.
    pub(super) enabled: bool,
    /// Nodes heard on a LAN.
    pub(super) neighbours: BTreeMap<Ipv6Net, LanPeer>,
    /// LAN links being dialled.
    dialling: BTreeMap<TunnelId, LanPeer>,
}

impl LanLinks {
    pub(super) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            neighbours: BTreeMap::new(),
            dialling: BTreeMap::new(),
        }
    }

    pub(super) fn is_dialling(&self, tunnel: TunnelId) -> bool {
        self.dialling.contains_key(&tunnel)
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.neighbours.len() > MAX_NEIGHBOURS || self.dialling.len() > MAX_DIALS {
            return Err(format!(
                "LAN tables: {} neighbours, {} dials",
                self.neighbours.len(),
                self.dialling.len()
            ));
        }
        Ok(())
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if a.is_unicast_link_local())
}

impl NodeCore {
    fn lan_notice(&mut self, n: LanNotice) {
        if self.lan.enabled {
            self.push(Command::Lan(n));
        }
    }

    pub(super) fn handle_lan_event(&mut self, ev: LanEvent) {
        match ev {
            LanEvent::Found(p) => self.lan_heard(p),
            LanEvent::Dial(p) => {
                self.lan_heard(p);
                self.dial_lan(p);
            }
            LanEvent::Lost(prefix) => {
                self.lan.neighbours.remove(&prefix);
            }
        }
    }

    fn lan_heard(&mut self, p: LanPeer) {
        if self.lan.neighbours.len() < MAX_NEIGHBOURS || self.lan.neighbours.contains_key(&p.prefix)
        {
            self.lan.neighbours.insert(p.prefix, p);
        }
    }

    fn dial_lan(&mut self, peer: LanPeer) {
        if self.lan_tunnel_of(peer.prefix).is_some() {
            self.lan_notice(LanNotice::LinkUp(peer.prefix));
            return;
        }
        if self.lan.dialling.len() >= MAX_DIALS
            || self.lan.dialling.values().any(|d| d.prefix == peer.prefix)
        {
            return;
        }
        let tunnel = self.driver.new_lan_id();
        tracing::debug!(prefix = %peer.prefix, at = %peer.addr, "dialling a LAN neighbour");
        self.lan.dialling.insert(tunnel, peer);
        self.tunnel_cmd(TunnelCmd::Dial {
            tunnel,
            peer: peer.address,
            addresses: vec![SocketAddr::V6(peer.addr)],
            // Beacons carry the QUIC port only.
            tcp_port: None,
        });
    }

    pub(super) fn lan_tunnel_of(&self, prefix: Ipv6Net) -> Option<TunnelId> {
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
    fn settle_lan_duplicate(&mut self, peer: PeerKey, ours: bool, now: Now) -> bool {
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
            now.mono,
        );
        true
    }

    pub(super) fn handle_lan_dialled(
        &mut self,
        tunnel: TunnelId,
        result: Result<Box<Handshake>, DialError>,
        now: Now,
    ) {
        let Some(peer) = self.lan.dialling.remove(&tunnel) else {
            return;
        };
        let h = match result {
            Ok(h) if h.peer.prefix == peer.prefix => h,
            Ok(_) => {
                self.tunnel_cmd(TunnelCmd::Close {
                    tunnel,
                    code: close::BAD_PEER,
                    reason: "not the node dialled".into(),
                });
                self.lan_notice(LanNotice::LinkDown {
                    prefix: peer.prefix,
                    failed: true,
                });
                return;
            }
            Err(e) => {
                tracing::info!(prefix = %peer.prefix, at = %peer.addr, reason = %e.reason, "LAN link dial failed");
                self.lan_notice(LanNotice::LinkDown {
                    prefix: peer.prefix,
                    failed: true,
                });
                return;
            }
        };
        let key = PeerKey {
            serial: h.peer.serial,
            prefix: h.peer.prefix,
        };
        let iface = if self.settle_lan_duplicate(key, true, now) {
            self.driver.handle_lan_up(key, tunnel, now.mono)
        } else {
            None
        };
        let Some(iface) = iface else {
            self.tunnel_cmd(TunnelCmd::Close {
                tunnel,
                code: close::DONE,
                reason: "a LAN link exists".into(),
            });
            return;
        };
        tracing::info!(%tunnel, peer = %key, %iface, at = %peer.addr, "LAN link up");
        self.tunnel_cmd(TunnelCmd::Up {
            tunnel,
            hop: NextHopId(iface.0),
        });
        self.bring_up(tunnel, iface, *h, Direction::Outgoing, now);
        self.lan_notice(LanNotice::LinkUp(key.prefix));
        self.candidates_changed(now);
    }

    /// An incoming connection: takes it as a LAN link if it comes from a
    /// link-local address, refuses a tunnel from a node we have a LAN link
    /// with, and hands anything else back.
    pub(super) fn accept_lan(
        &mut self,
        conn: ConnId,
        h: Handshake,
        peer: PeerKey,
        now: Now,
    ) -> Option<Handshake> {
        let refuse = |core: &mut Self, reason: &str| {
            core.tunnel_cmd(TunnelCmd::Refuse {
                conn,
                code: close::REFUSED_DUPLICATE,
                reason: reason.into(),
            });
        };
        let from_link = self.lan.enabled && is_link_local(h.remote.ip());
        if !from_link {
            if self.lan_tunnel_of(peer.prefix).is_some() {
                tracing::debug!(%peer, "refused a tunnel: a LAN link to this node exists");
                refuse(self, "duplicate: a LAN link to this node exists");
                return None;
            }
            return Some(h);
        }
        if !self.settle_lan_duplicate(peer, false, now) {
            refuse(self, "a LAN link exists");
            return None;
        }
        let tunnel = self.driver.new_lan_id();
        let Some(iface) = self.driver.handle_lan_up(peer, tunnel, now.mono) else {
            refuse(self, "a LAN link exists");
            return None;
        };
        tracing::info!(%tunnel, %peer, %iface, from = %h.remote, "accepted a LAN link");
        self.accept(conn, tunnel, iface, h, now);
        self.lan_notice(LanNotice::LinkUp(peer.prefix));
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
        self.lan_notice(LanNotice::LinkDown {
            prefix,
            failed: false,
        });
        true
    }
}
