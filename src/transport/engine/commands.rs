//! NodeCore's tunnel commands, and the dials they start.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;

use super::conn::{Conn, Role, Stage, on_socket, usable};
use super::{Engine, MAX_HOP, MAX_PACKETS, Packet, drive};
use crate::node::core::boundary::{ConnId, DialError, NextHopId, TunnelCmd, TunnelEvent, TunnelId};
use crate::transport::control::{Control, close};
use crate::transport::dial::Dial;

impl Engine {
    /// Carries out one of NodeCore's commands. [`TunnelCmd::SendPacket`]
    /// comes back out of [`Engine::poll_packet`], for the FIB.
    pub fn handle_command(&mut self, cmd: TunnelCmd, now: Instant) {
        self.now = now;
        match cmd {
            TunnelCmd::Dial {
                tunnel,
                peer,
                addresses,
                ..
            } => self.dial(tunnel, peer, addresses, now),
            TunnelCmd::CancelDial { tunnel } => {
                self.close_tunnel(tunnel, close::DONE, "dial cancelled", now);
            }
            TunnelCmd::Accept {
                conn,
                tunnel,
                hop,
                reply,
            } => self.accept_tunnel(conn, tunnel, hop, reply, now),
            TunnelCmd::Refuse { conn, code, reason } => {
                if let Some(ch) = self.incoming.remove(&conn) {
                    if let Some(c) = self.conn_mut(ch) {
                        c.close(now, code, &reason);
                    }
                    self.queue_transmit(ch);
                }
            }
            TunnelCmd::Up { tunnel, hop } => self.up(tunnel, hop, None, now),
            TunnelCmd::SendBabel { tunnel, bytes } => self.send_babel(tunnel, bytes),
            TunnelCmd::SendControl { tunnel, msg } => self.send_control(tunnel, &msg, now),
            TunnelCmd::SendPacket { bytes } => {
                if self.packets.len() < MAX_PACKETS {
                    self.packets.push_back(Packet { from: None, bytes });
                } else {
                    self.frames.packets_dropped += 1;
                }
            }
            TunnelCmd::Close {
                tunnel,
                code,
                reason,
            } => self.close_tunnel(tunnel, code, &reason, now),
            TunnelCmd::SetCrl(crl) => match self.tls.set_crl(*crl) {
                Ok(true) => self
                    .endpoint
                    .set_server_config(Some(self.tls.server.clone())),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "cannot apply the CRL"),
            },
            TunnelCmd::SetIdentity(cert) => match self.tls.set_identity(*cert) {
                Ok(()) => self
                    .endpoint
                    .set_server_config(Some(self.tls.server.clone())),
                Err(e) => tracing::error!(error = %e, "cannot use the renewed certificate"),
            },
        }
    }

    fn dial(&mut self, tunnel: TunnelId, peer: Ipv6Addr, addresses: Vec<SocketAddr>, now: Instant) {
        self.stats.dials += 1;
        if self.dials.contains_key(&tunnel) || self.tunnels.contains_key(&tunnel) {
            // Ids are never reused: a second dial is NodeCore's mistake.
            tracing::warn!(%tunnel, "dial for a tunnel that exists; ignored");
            return;
        }
        self.dials.insert(tunnel, Dial::new(peer, addresses));
        self.try_next(tunnel, now);
    }

    /// Connects to the next usable address of a dial, or reports its
    /// failure when none is left.
    pub(super) fn try_next(&mut self, tunnel: TunnelId, now: Instant) {
        loop {
            let Some(d) = self.dials.get_mut(&tunnel) else {
                return;
            };
            let Some(addr) = d.next_address() else {
                break;
            };
            if !usable(self.local, addr) {
                continue;
            }
            let name = d.peer.to_string();
            let client = self.tls.client.clone();
            match self
                .endpoint
                .connect(now, client, on_socket(self.local, addr), &name)
            {
                Ok((ch, q)) => {
                    d.conn = Some(ch);
                    let deadline = now + self.config.handshake_timeout;
                    self.put(ch, Box::new(Conn::new(q, Role::Dial { tunnel }, deadline)));
                    self.process(ch, now);
                    return;
                }
                Err(e) => d.attempt_failed(format!("connecting to {addr}: {e}")),
            }
        }
        let Some(d) = self.dials.get(&tunnel) else {
            return;
        };
        let error = d.failure("");
        self.fail_dial(tunnel, error);
    }

    /// Ends a dial with `error`: NodeCore hears `Dialled` with it.
    pub(super) fn fail_dial(&mut self, tunnel: TunnelId, error: DialError) {
        let Some(d) = self.dials.remove(&tunnel) else {
            return;
        };
        let now = self.now;
        if let Some(ch) = d.conn
            && let Some(c) = self.conn_mut(ch)
            && c.stage != Stage::Closing
        {
            c.close(now, close::DONE, &error.reason);
            self.queue_transmit(ch);
        }
        self.stats.dials_failed += 1;
        if error.answered_by.is_some() {
            self.stats.dials_other_node += 1;
        } else if error.reason.contains("evoked") {
            self.stats.refused_revoked += 1;
        } else if error.reason.starts_with("wrong peer") {
            self.stats.refused_bad_peer += 1;
        }
        tracing::debug!(%tunnel, peer = %d.peer, reason = %error.reason, "dial failed");
        self.emit(TunnelEvent::Dialled {
            tunnel,
            result: Err(error),
        });
    }

    fn accept_tunnel(
        &mut self,
        conn: ConnId,
        tunnel: TunnelId,
        hop: NextHopId,
        reply: Control,
        now: Instant,
    ) {
        match self.incoming.remove(&conn) {
            Some(ch) if self.tunnels.contains_key(&tunnel) => {
                tracing::warn!(%tunnel, "accept as a tunnel that exists; refused");
                if let Some(c) = self.conn_mut(ch) {
                    c.close(now, close::PROTOCOL, "duplicate tunnel id");
                }
                self.queue_transmit(ch);
            }
            Some(ch) => {
                self.tunnels.insert(tunnel, ch);
                self.up(tunnel, hop, Some(reply), now);
            }
            None => self.emit(TunnelEvent::Closed {
                tunnel,
                reason: format!("{conn} closed before it was accepted"),
            }),
        }
    }

    /// Makes the answered connection of `tunnel` carry traffic as `hop`,
    /// sending `first` on its control stream first.
    fn up(&mut self, tunnel: TunnelId, hop: NextHopId, first: Option<Control>, now: Instant) {
        let Some(ch) = self.tunnels.get(&tunnel).copied() else {
            self.emit(TunnelEvent::Closed {
                tunnel,
                reason: "no connection to take up".into(),
            });
            return;
        };
        let Some(mut c) = self.take(ch) else {
            self.tunnels.remove(&tunnel);
            self.emit(TunnelEvent::Closed {
                tunnel,
                reason: "connection gone before it was taken up".into(),
            });
            return;
        };
        let taken = self.hops.get(hop.0 as usize).copied().flatten().is_some();
        if c.stage != Stage::Answer || hop.0 >= MAX_HOP || taken {
            let why = if c.stage != Stage::Answer {
                "connection gone before it was taken up"
            } else {
                "next hop id unusable"
            };
            if c.stage != Stage::Closing {
                c.close(now, close::PROTOCOL, why);
            }
            self.put(ch, c);
            self.queue_transmit(ch);
            self.tunnels.remove(&tunnel);
            self.emit(TunnelEvent::Closed {
                tunnel,
                reason: why.into(),
            });
            return;
        }
        c.stage = Stage::Up { tunnel, hop };
        c.deadline = None;
        c.reported = (c.q.rtt(), c.q.datagrams().max_size());
        c.authenticated = c.authenticated_frames();
        if let Some(m) = first {
            // A first message never exceeds the backlog.
            let _ = c.ctl.send(&mut c.q, &m);
        }
        let slot = hop.0 as usize;
        if self.hops.len() <= slot {
            self.hops.resize(slot + 1, None);
        }
        self.hops[slot] = Some(ch);
        let lead = matches!(c.role, Role::Dial { .. });
        self.liveness.insert(tunnel, c.q.rtt(), now, lead);
        self.put(ch, c);
        // Datagrams and control messages that arrived meanwhile.
        self.process(ch, now);
    }

    fn send_babel(&mut self, tunnel: TunnelId, bytes: Bytes) {
        let Some(&ch) = self.tunnels.get(&tunnel) else {
            return;
        };
        let mut ident = self.next_ident;
        if let Some(c) = self.conn_mut(ch)
            && matches!(c.stage, Stage::Up { .. })
        {
            // A Babel packet that cannot be sent is lost, as on a link.
            let _ = drive::send_on(c, bytes, &mut ident);
        }
        self.next_ident = ident;
        self.queue_transmit(ch);
    }

    fn send_control(&mut self, tunnel: TunnelId, msg: &Control, now: Instant) {
        let Some(&ch) = self.tunnels.get(&tunnel) else {
            return;
        };
        let Some(c) = self.conn_mut(ch) else { return };
        if !matches!(c.stage, Stage::Up { .. }) {
            return;
        }
        if let Err(e) = c.ctl.send(&mut c.q, msg) {
            let Stage::Up { hop, .. } = c.stage else {
                return;
            };
            c.close(now, close::PROTOCOL, &e.to_string());
            self.unroute(tunnel, hop);
            self.emit(TunnelEvent::Closed {
                tunnel,
                reason: e.to_string(),
            });
        }
        self.queue_transmit(ch);
    }

    /// Closes whatever `tunnel` is: a dial, a connection waiting for `Up`,
    /// an up tunnel. Its next hop is gone at once; nothing is reported.
    fn close_tunnel(&mut self, tunnel: TunnelId, code: u32, reason: &str, now: Instant) {
        let dialling = self.dials.remove(&tunnel).and_then(|d| d.conn);
        let ch = self.tunnels.get(&tunnel).copied().or(dialling);
        if let Some(ch) = ch
            && let Some(c) = self.conn_mut(ch)
        {
            let hop = match c.stage {
                Stage::Up { hop, .. } => Some(hop),
                _ => None,
            };
            if c.stage != Stage::Closing {
                c.close(now, code, reason);
            }
            if let Some(hop) = hop {
                self.unroute(tunnel, hop);
            }
            self.queue_transmit(ch);
        }
        self.tunnels.remove(&tunnel);
    }
}
