//! The virtual network's packet loop: what the packet loop of each node
//! would do with its NodeCore's tunnel commands, for all nodes at once.
//! Handshakes take one and a half round trips to reach the acceptor and
//! half a round trip back; a dial to a node that is down or cut off fails
//! at the handshake timeout. Babel datagrams get the link's latency,
//! jitter and loss; control messages only its latency (a reliable stream);
//! packets a NodeCore originates are forwarded hop by hop by the FIBs.

use bytes::Bytes;

use super::Network;
use super::events::Ev;
use super::transport::{
    Conn, Dial, End, FIRST_PTO, Hop, PendingIncoming, delay, ipv6_dst, suspect_at, uniform_below,
};
use crate::node::core::boundary::{
    ConnId, DialError, Handshake, NextHopId, TunnelCmd, TunnelEvent, TunnelId, refusal_of_close,
};
use crate::peers::wire;
use crate::transport::control::Control;
use crate::tunnels::policy::Failure;

impl Network {
    pub(super) fn tunnel_cmd(&mut self, i: usize, cmd: TunnelCmd) {
        let epoch_i = self.nodes[i].epoch;
        match cmd {
            TunnelCmd::Dial {
                tunnel,
                peer,
                addresses,
                ..
            } => {
                self.stats.dials += 1;
                let to = addresses
                    .iter()
                    .find_map(|a| self.transport.by_addr.get(a).copied());
                // Nobody at the address (or ourselves): no answer, ever. A
                // node that is down or cut off may come back while the
                // Initial is retransmitted ([`Network::incoming`]).
                let Some(to) = to.filter(|&to| to != i) else {
                    let ev = TunnelEvent::Dialled {
                        tunnel,
                        result: Err(DialError::unreachable("no answer")),
                    };
                    self.schedule(self.config.handshake_timeout, epoch_i, Ev::Tunnel(i, ev));
                    return;
                };
                let started = self.now;
                self.transport.dials.insert(
                    (i, tunnel),
                    Dial {
                        to,
                        peer,
                        started,
                        sent: 0,
                    },
                );
                self.send_initial((i, tunnel));
            }
            TunnelCmd::CancelDial { tunnel } => {
                self.close_end(i, tunnel, "dial cancelled");
            }
            TunnelCmd::Accept {
                conn,
                tunnel,
                hop,
                reply,
            } => self.accept(i, conn, tunnel, hop, reply),
            TunnelCmd::Refuse { conn, code, reason } => {
                let Some(p) = self.transport.pending.remove(&(i, conn)) else {
                    return;
                };
                if self.transport.dials.remove(&p.from).is_none() {
                    return;
                }
                let failure = refusal_of_close(u64::from(code), reason.as_bytes())
                    .map_or(Failure::Unreachable, Failure::Refused);
                let ev = TunnelEvent::Dialled {
                    tunnel: p.from.1,
                    result: Err(DialError {
                        failure,
                        reason,
                        answered_by: None,
                    }),
                };
                let (d, e) = (self.rtt(i, p.from.0) / 2, self.nodes[p.from.0].epoch);
                self.schedule(d, e, Ev::Tunnel(p.from.0, ev));
            }
            TunnelCmd::Up { tunnel, hop } => {
                if let Some(c) = self.transport.conns.get_mut(&(i, tunnel)) {
                    c.hop = Some(hop);
                    self.transport.hops[i].insert(hop, tunnel);
                }
            }
            TunnelCmd::SendBabel { tunnel, bytes } => {
                self.stats.babel_datagrams += 1;
                self.stats.babel_bytes += bytes.len() as u64;
                if let Some(t) = self.traffic.get_mut(i) {
                    t.babel_bytes += bytes.len() as u64;
                }
                self.datagram(i, tunnel, bytes);
            }
            TunnelCmd::SendControl { tunnel, msg } => self.control(i, tunnel, msg),
            TunnelCmd::SendPacket { bytes } => {
                self.stats.packets += 1;
                if let Some(t) = self.traffic.get_mut(i) {
                    t.exchange_bytes += bytes.len() as u64;
                }
                self.route_packet(i, bytes, 64);
            }
            TunnelCmd::Close { tunnel, reason, .. } => self.close_end(i, tunnel, &reason),
            TunnelCmd::SetCrl(_) => {}
            TunnelCmd::SetIdentity(cert) => self.nodes[i].cert = *cert,
        }
    }
    pub(super) fn incoming(&mut self, from: End, to: usize, epoch: u64) {
        if !self.transport.dials.contains_key(&from) {
            return;
        }
        if !self.alive(to, epoch) || self.transport.is_cut(from.0, to) {
            // Lost: the dialler sends it again at its probe timeout.
            self.send_initial(from);
            return;
        }
        let dialled = self.transport.dials.get(&from).map(|d| d.peer);
        if dialled != Some(self.nodes[to].cert.address) {
            // Its certificate is not the one dialled: the dialler's TLS
            // fails, and says who answered.
            self.transport.dials.remove(&from);
            let ev = TunnelEvent::Dialled {
                tunnel: from.1,
                result: Err(DialError {
                    answered_by: Some(Box::new(self.nodes[to].cert.clone())),
                    ..DialError::unreachable("another node answered")
                }),
            };
            let (d, e) = (self.rtt(from.0, to) / 2, self.nodes[from.0].epoch);
            self.schedule(d, e, Ev::Tunnel(from.0, ev));
            return;
        }
        // Mutual TLS: either end's CRL fails the handshake.
        let revokes = |a: usize, b: usize| {
            let serial = self.nodes[b].cert.serial;
            self.nodes[a]
                .core
                .as_ref()
                .and_then(|c| c.crl())
                .is_some_and(|c| c.is_revoked(serial))
        };
        if revokes(to, from.0) || revokes(from.0, to) {
            self.dial_unanswered(from);
            return;
        }
        let conn = ConnId(self.transport.next_conn);
        self.transport.next_conn += 1;
        self.transport
            .pending
            .insert((to, conn), PendingIncoming { from });
        let dialler = &self.nodes[from.0];
        let handshake = Box::new(Handshake {
            peer: dialler.cert.clone(),
            peer_crl: dialler
                .core
                .as_ref()
                .and_then(|c| c.crl())
                .map_or(0, |c| c.number),
            remote: dialler.addr,
            local_ip: Some(self.nodes[to].addr.ip()),
            observed: None,
            rtt: self.rtt(from.0, to),
            max_datagram: Some(self.config.max_datagram),
        });
        let now = self.now_of(to);
        if let Some(core) = self.nodes[to].core.as_mut() {
            core.handle_tunnel_event(TunnelEvent::Incoming { conn, handshake }, now);
        }
        self.drain(to);
    }
    fn accept(&mut self, i: usize, conn: ConnId, tunnel: TunnelId, hop: NextHopId, reply: Control) {
        let Some(p) = self.transport.pending.remove(&(i, conn)) else {
            return;
        };
        let dialler = p.from;
        let rtt = self.rtt(i, dialler.0);
        if self.transport.dials.remove(&dialler).is_none() {
            // The dialler gave up meanwhile: it closes what arrives.
            let ev = TunnelEvent::Closed {
                tunnel,
                reason: "dialler gone".into(),
            };
            self.schedule(rtt / 2, self.nodes[i].epoch, Ev::Tunnel(i, ev));
            return;
        }
        let me = (i, tunnel);
        self.transport.conns.insert(
            me,
            Conn {
                peer: dialler,
                hop: Some(hop),
                silent: None,
            },
        );
        self.transport.hops[i].insert(hop, tunnel);
        self.transport.conns.insert(
            dialler,
            Conn {
                peer: me,
                hop: None,
                silent: None,
            },
        );
        let (peer_crl, observed) = match reply {
            Control::Accept {
                crl_number,
                observed,
            } => (crl_number, Some(observed)),
            _ => (0, None),
        };
        let ev = TunnelEvent::Dialled {
            tunnel: dialler.1,
            result: Ok(Box::new(Handshake {
                peer: self.nodes[i].cert.clone(),
                peer_crl,
                remote: self.nodes[i].addr,
                local_ip: None,
                observed,
                rtt,
                max_datagram: Some(self.config.max_datagram),
            })),
        };
        let epoch = self.nodes[dialler.0].epoch;
        self.schedule(rtt / 2, epoch, Ev::Tunnel(dialler.0, ev));
    }
    /// Closes node `i`'s end of `tunnel`; the peer hears of it a one-way
    /// delay later (unless they are cut off: its liveness clock tells).
    pub(super) fn close_end(&mut self, i: usize, tunnel: TunnelId, reason: &str) {
        let Some(peer) = self.transport.close((i, tunnel)) else {
            return;
        };
        if self.transport.is_cut(i, peer.0) {
            return;
        }
        let ev = TunnelEvent::Closed {
            tunnel: peer.1,
            reason: format!("closed by the peer: {reason}"),
        };
        let (d, e) = (
            self.config.latency.one_way(i, peer.0),
            self.nodes[peer.0].epoch,
        );
        self.schedule(d, e, Ev::Tunnel(peer.0, ev));
    }
    /// The peer end of `(i, tunnel)` if it can hear `i` now.
    pub(super) fn reachable_peer(&self, i: usize, tunnel: TunnelId) -> Option<End> {
        let peer = self.transport.peer_of((i, tunnel))?;
        (self.nodes[peer.0].core.is_some() && !self.transport.is_cut(i, peer.0)).then_some(peer)
    }
    pub(super) fn datagram(&mut self, i: usize, tunnel: TunnelId, bytes: Bytes) {
        let Some(peer) = self.reachable_peer(i, tunnel) else {
            self.stats.datagrams_lost += 1;
            return;
        };
        if bytes.len() > self.config.max_datagram {
            self.stats.datagrams_too_big += 1;
            self.stats.datagrams_lost += 1;
            return;
        }
        let base = self.config.latency.one_way(i, peer.0);
        let Some(d) = delay(base, self.config.jitter, self.config.loss, &mut self.rng) else {
            self.stats.datagrams_lost += 1;
            return;
        };
        let ev = TunnelEvent::Babel {
            tunnel: peer.1,
            bytes,
        };
        let e = self.nodes[peer.0].epoch;
        self.schedule(d, e, Ev::Tunnel(peer.0, ev));
    }
    pub(super) fn control(&mut self, i: usize, tunnel: TunnelId, msg: Control) {
        self.stats.control_messages += 1;
        let mut frame = Vec::new();
        msg.emit_frame(&mut frame);
        self.stats.control_bytes += frame.len() as u64;
        if let Some(t) = self.traffic.get_mut(i) {
            t.control_bytes += frame.len() as u64;
        }
        if matches!(msg, Control::WantCerts(_) | Control::Certs(_)) {
            self.stats.cert_messages += 1;
            self.stats.cert_bytes += frame.len() as u64;
        }
        let Some(peer) = self.reachable_peer(i, tunnel) else {
            return;
        };
        let ev = TunnelEvent::Control {
            tunnel: peer.1,
            msg,
        };
        let (d, e) = (
            self.config.latency.one_way(i, peer.0),
            self.nodes[peer.0].epoch,
        );
        self.schedule(d, e, Ev::Tunnel(peer.0, ev));
    }
    /// Forwards a packet at node `i` by its FIB; delivers a peer-exchange
    /// packet addressed to it.
    pub(super) fn route_packet(&mut self, i: usize, bytes: Bytes, ttl: u8) {
        let Some(dst) = ipv6_dst(&bytes) else {
            self.stats.packets_dropped += 1;
            return;
        };
        match self.transport.route(i, dst) {
            Hop::Local(_) => {
                let me = self.nodes[i].cert.address;
                let Ok(Some((from, payload))) = wire::match_packet(&bytes, me) else {
                    match probe_id(&bytes) {
                        Some(id) if dst == me => {
                            self.probes.insert(id);
                        }
                        _ => self.stats.packets_dropped += 1,
                    }
                    return;
                };
                let start = payload.as_ptr() as usize - bytes.as_ptr() as usize;
                let payload = bytes.slice(start..start + payload.len());
                let now = self.now_of(i);
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.handle_tunnel_event(TunnelEvent::Exchange { from, payload }, now);
                }
                self.drain(i);
            }
            Hop::Via(end) if ttl > 0 && !self.transport.is_cut(i, end.0) => {
                let base = self.config.latency.one_way(i, end.0);
                let Some(d) = delay(base, self.config.jitter, self.config.loss, &mut self.rng)
                else {
                    self.stats.packets_dropped += 1;
                    return;
                };
                let e = self.nodes[end.0].epoch;
                self.schedule(
                    d,
                    e,
                    Ev::Packet {
                        end,
                        bytes,
                        ttl: ttl - 1,
                    },
                );
            }
            _ => self.stats.packets_dropped += 1,
        }
    }
    /// `end` hears nothing from now on: its liveness clock reports it
    /// silent after the suspect time, and closes it at the idle timeout,
    /// both counted from the last packet it heard (up to
    /// `heard_spread` ago).
    pub(super) fn start_silence(&mut self, end: End) {
        self.transport.silence_gen += 1;
        let silence = self.transport.silence_gen;
        let Some(c) = self.transport.conns.get_mut(&end) else {
            return;
        };
        c.silent = Some(silence);
        let peer = c.peer.0;
        let rtt = self.rtt(end.0, peer);
        let epoch = self.nodes[end.0].epoch;
        // The last packet it heard came up to `heard_spread` before.
        let before = uniform_below(self.config.heard_spread, &mut self.rng);
        let heard = self.now.checked_sub(before).unwrap_or(self.now);
        let suspect = suspect_at(heard, self.config.suspect_after, rtt);
        let closed = heard + self.config.idle_timeout;
        for (at, closed) in [(suspect, false), (closed, true)] {
            self.schedule(
                at.saturating_duration_since(self.now),
                epoch,
                Ev::Liveness {
                    end,
                    silence,
                    closed,
                },
            );
        }
    }
    /// A dial that will get no answer: it fails at the handshake timeout.
    /// Sends the Initial of dial `end` (again): it reaches the target
    /// after the handshake's first one and a half round trips, if the
    /// target is up and not cut off then. Retransmissions follow QUIC's
    /// probe timeout ([`FIRST_PTO`], doubling) until the handshake
    /// timeout, when the dial fails.
    fn send_initial(&mut self, end: End) {
        let Some(d) = self.transport.dials.get_mut(&end) else {
            return;
        };
        let to = d.to;
        let pto = FIRST_PTO * 2u32.saturating_pow(d.sent.saturating_sub(1));
        let at = if d.sent == 0 {
            self.now
        } else {
            (self.now + pto).max(self.now)
        };
        d.sent += 1;
        let deadline = d.started + self.config.handshake_timeout;
        let rtt = self.rtt(end.0, to);
        if at + rtt + rtt / 2 >= deadline {
            self.dial_unanswered(end);
            return;
        }
        let epoch_to = self.nodes[to].epoch;
        let delay = at - self.now + rtt + rtt / 2;
        self.schedule(delay, epoch_to, Ev::Incoming { from: end, to });
    }
    /// Dial `end` gets no answer: it fails at its handshake timeout.
    pub(super) fn dial_unanswered(&mut self, end: End) {
        let Some(d) = self.transport.dials.remove(&end) else {
            return;
        };
        let ev = TunnelEvent::Dialled {
            tunnel: end.1,
            result: Err(DialError::unreachable("no answer")),
        };
        let epoch = self.nodes[end.0].epoch;
        let left = (d.started + self.config.handshake_timeout).saturating_duration_since(self.now);
        self.schedule(left, epoch, Ev::Tunnel(end.0, ev));
    }
}

/// UDP port of test probes (not the peer-exchange port).
const PROBE_PORT: u16 = 9;

/// An IPv6/UDP probe carrying `id`, from `src` to `dst`.
pub(super) fn probe_packet(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, id: u64) -> Bytes {
    let mut p = vec![0x60, 0, 0, 0, 0, 16, 17, 64];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&PROBE_PORT.to_be_bytes());
    p.extend_from_slice(&PROBE_PORT.to_be_bytes());
    p.extend_from_slice(&16u16.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&id.to_be_bytes());
    p.into()
}

/// The id of a probe packet.
fn probe_id(p: &[u8]) -> Option<u64> {
    if p.len() != 56 || p[6] != 17 || p[40..42] != PROBE_PORT.to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(p[48..56].try_into().ok()?))
}
