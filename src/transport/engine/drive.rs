//! Driving one connection after quinn changed it: its endpoint events,
//! its application events (handshake done, connection lost, control
//! stream, datagrams), and the liveness of the up tunnels.

use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, Dir, Event, StreamEvent};
use re6st_dataplane::fragment;
use re6st_dataplane::frame::{self, Frame};
use re6st_dataplane::nexthop::{NextHopError, NextHopId};

use super::conn::{Conn, Role, Stage, canonical, closed_with, refusal_of};
use super::liveness::Action;
use super::stream::Received;
use super::{Engine, MAX_EVENTS, MAX_PACKETS, MAX_PENDING, Packet};
use crate::node::core::boundary::{DialError, TunnelEvent, TunnelId};
use crate::transport::control::{self, Control, close};
use crate::tunnels::policy::Failure;

/// Whether an RTT moved enough to tell NodeCore (an eighth, and at least a
/// millisecond): the policy ranks tunnels by it, no finer.
fn rtt_moved(old: std::time::Duration, new: std::time::Duration) -> bool {
    old.abs_diff(new) > (old / 8).max(std::time::Duration::from_millis(1))
}

impl Engine {
    /// Processes everything quinn has for `ch` after an input.
    pub(super) fn process(&mut self, ch: ConnectionHandle, now: Instant) {
        let Some(mut c) = self.take(ch) else { return };
        let mut drained = false;
        while let Some(ev) = c.q.poll_endpoint_events() {
            drained |= ev.is_drained();
            if let Some(back) = self.endpoint.handle_event(ch, ev) {
                c.q.handle_event(back);
            }
        }
        while let Some(ev) = c.q.poll() {
            match ev {
                Event::Connected => self.on_connected(&mut c, now),
                Event::ConnectionLost { reason } => self.on_lost(&mut c, &reason, now),
                Event::Stream(StreamEvent::Writable { .. }) => c.ctl.flush(&mut c.q),
                _ => {}
            }
        }
        if drained {
            // quinn forgot the connection (and may reuse its handle).
            if let Role::Accept { id } = c.role {
                self.incoming.remove(&id);
            }
            return;
        }
        self.read_control(ch, &mut c, now);
        if let Stage::Up { tunnel, hop } = c.stage {
            self.drain_datagrams(&mut c, tunnel, hop, now);
        }
        c.timeout = c.q.poll_timeout();
        self.put(ch, c);
        self.queue_transmit(ch);
    }

    fn on_connected(&mut self, c: &mut Conn, now: Instant) {
        let peer = self.tls.peer_cert(&c.q);
        match c.role {
            Role::Dial { tunnel } => {
                let at = canonical(c.q.remote_address());
                let Some(checked) = self.dials.get_mut(&tunnel).map(|d| d.check_peer(at, peer))
                else {
                    c.close(now, close::DONE, "dial cancelled");
                    return;
                };
                match checked {
                    Ok(p) => {
                        c.peer = Some(p);
                        c.stage = Stage::Exchange;
                        let open = Control::Open {
                            version: control::VERSION,
                            crl_number: self.tls.crl_number(),
                        };
                        match c.q.streams().open(Dir::Bi) {
                            Some(id) => {
                                c.ctl.attach(id);
                                // A first message never exceeds the backlog.
                                let _ = c.ctl.send(&mut c.q, &open);
                            }
                            None => c.close(now, close::PROTOCOL, "no control stream"),
                        }
                        return;
                    }
                    // Valid for the CA and the CRL (the handshake checked),
                    // but another node's: close before sending anything.
                    Err(why) => c.close_after_flush(close::BAD_PEER, why),
                }
                self.try_next(tunnel, now);
            }
            Role::Accept { .. } => match peer {
                Ok(p) => {
                    c.peer = Some(p);
                    c.stage = Stage::Exchange;
                }
                Err(why) => {
                    c.close(now, close::BAD_PEER, &why);
                    self.stats.refused_bad_peer += 1;
                    self.count_refused_handshake(&why);
                    let from = canonical(c.q.remote_address());
                    tracing::info!(%from, reason = %why, "refused an incoming tunnel");
                }
            },
        }
    }

    fn on_lost(&mut self, c: &mut Conn, reason: &quinn_proto::ConnectionError, now: Instant) {
        let stage = std::mem::replace(&mut c.stage, Stage::Closing);
        c.deadline = None;
        let text = reason.to_string();
        match (stage, c.role) {
            (Stage::Closing, _) => {}
            (Stage::Handshake, Role::Dial { tunnel }) => {
                if let Some(d) = self.dials.get_mut(&tunnel) {
                    d.attempt_failed(format!("handshake: {text}"));
                    self.try_next(tunnel, now);
                }
            }
            (Stage::Exchange, Role::Dial { tunnel }) => match refusal_of(reason) {
                Some(r) => self.fail_dial(
                    tunnel,
                    DialError {
                        failure: Failure::Refused(r),
                        reason: r.to_string(),
                        answered_by: None,
                    },
                ),
                None => self.unreachable_dial(tunnel, format!("control stream: {text}")),
            },
            (Stage::Handshake | Stage::Exchange, Role::Accept { .. })
                if closed_with(reason, close::BAD_PEER) =>
            {
                // It dialled a previous identity of this address; it
                // forgets it now (one handshake per dialler).
                self.stats.refused_by_dialler += 1;
                tracing::info!(
                    from = %canonical(c.q.remote_address()),
                    "a peer dialled a node that is no longer at this address, and gave up on it"
                );
            }
            (Stage::Handshake, Role::Accept { .. }) => {
                self.count_refused_handshake(&text);
                let from = canonical(c.q.remote_address());
                tracing::info!(%from, reason = %text, "refused an incoming tunnel");
            }
            (Stage::Exchange, Role::Accept { .. }) => {
                tracing::debug!(error = %text, "incoming tunnel lost before Open");
            }
            (Stage::Answer, Role::Dial { tunnel }) => {
                self.tunnels.remove(&tunnel);
                self.emit(TunnelEvent::Closed {
                    tunnel,
                    reason: text,
                });
            }
            (Stage::Answer, Role::Accept { id }) => {
                self.incoming.remove(&id);
            }
            (Stage::Up { tunnel, hop }, _) => {
                self.unroute(tunnel, hop);
                self.emit(TunnelEvent::Closed {
                    tunnel,
                    reason: text,
                });
            }
        }
    }

    /// A handshake or exchange ran out of time, or NodeCore did not answer.
    pub(super) fn on_deadline(&mut self, ch: ConnectionHandle, now: Instant) {
        let Some(mut c) = self.take(ch) else { return };
        let timeout = self.config.handshake_timeout;
        match (c.stage, c.role) {
            (Stage::Handshake, Role::Dial { tunnel }) => {
                c.close(now, close::DONE, "no answer");
                if let Some(d) = self.dials.get_mut(&tunnel) {
                    d.attempt_failed(format!("no answer within {timeout:?}"));
                    self.try_next(tunnel, now);
                }
            }
            (Stage::Exchange, Role::Dial { tunnel }) => {
                c.close(now, close::PROTOCOL, "no answer to Open");
                self.unreachable_dial(tunnel, format!("no answer to Open within {timeout:?}"));
            }
            (Stage::Handshake, Role::Accept { .. }) => {
                c.close(now, close::PROTOCOL, "handshake timed out");
                self.count_refused_handshake("handshake timed out");
            }
            (Stage::Exchange, Role::Accept { .. }) => {
                c.close(now, close::PROTOCOL, "no Open in time");
            }
            (Stage::Answer, role) => {
                c.close(now, close::DONE, "no answer from the node");
                match role {
                    Role::Dial { tunnel } => {
                        self.tunnels.remove(&tunnel);
                        self.emit(TunnelEvent::Closed {
                            tunnel,
                            reason: "not taken up in time".into(),
                        });
                    }
                    Role::Accept { id } => {
                        self.incoming.remove(&id);
                    }
                }
            }
            (Stage::Up { .. } | Stage::Closing, _) => c.deadline = None,
        }
        c.timeout = c.q.poll_timeout();
        self.put(ch, c);
        self.queue_transmit(ch);
    }

    /// Reads the control stream of a connection in exchange or up.
    fn read_control(&mut self, ch: ConnectionHandle, c: &mut Conn, now: Instant) {
        if c.stage == Stage::Exchange
            && c.ctl.id().is_none()
            && let Some(id) = c.q.streams().accept(Dir::Bi)
        {
            c.ctl.attach(id);
        }
        while matches!(c.stage, Stage::Exchange | Stage::Up { .. }) {
            if matches!(c.stage, Stage::Up { .. }) && self.events.len() >= MAX_EVENTS {
                // NodeCore is behind: leave the rest to QUIC flow control.
                if !self.stalled.contains(&ch) {
                    self.stalled.push(ch);
                }
                return;
            }
            let Some(r) = c.ctl.poll_read(&mut c.q) else {
                return;
            };
            match (c.stage, c.role, r) {
                (Stage::Up { tunnel, .. }, _, Received::Message(msg)) => {
                    self.emit(TunnelEvent::Control { tunnel, msg });
                }
                (Stage::Up { tunnel, .. }, _, Received::Bad(error)) => {
                    self.emit(TunnelEvent::ControlError { tunnel, error });
                }
                (Stage::Up { .. }, _, Received::End) => {}
                (
                    _,
                    Role::Dial { tunnel },
                    Received::Message(Control::Accept {
                        crl_number,
                        observed,
                    }),
                ) => {
                    c.peer_crl = crl_number;
                    c.observed = Some(canonical(observed));
                    c.stage = Stage::Answer;
                    c.deadline = Some(now + self.config.handshake_timeout);
                    self.dials.remove(&tunnel);
                    self.tunnels.insert(tunnel, ch);
                    let result = c.handshake().map(Box::new).ok_or_else(|| {
                        DialError::unreachable("handshake without a peer certificate")
                    });
                    self.emit(TunnelEvent::Dialled { tunnel, result });
                }
                (_, Role::Dial { tunnel }, other) => {
                    c.close(now, close::PROTOCOL, "expected Accept");
                    self.unreachable_dial(
                        tunnel,
                        format!("protocol: expected Accept, got {other:?}"),
                    );
                }
                (_, Role::Accept { id }, Received::Message(Control::Open { crl_number, .. })) => {
                    if self.incoming.len() >= MAX_PENDING {
                        c.close(now, close::DONE, "busy");
                        return;
                    }
                    c.peer_crl = crl_number;
                    c.stage = Stage::Answer;
                    c.deadline = Some(now + self.config.handshake_timeout);
                    self.incoming.insert(id, ch);
                    if let Some(h) = c.handshake() {
                        self.stats.accepted_handshakes += 1;
                        self.emit(TunnelEvent::Incoming {
                            conn: id,
                            handshake: Box::new(h),
                        });
                    }
                }
                (_, Role::Accept { .. }, _) => c.close(now, close::PROTOCOL, "expected Open"),
            }
        }
    }

    /// Takes the received datagrams of an up tunnel.
    pub(super) fn drain_datagrams(
        &mut self,
        c: &mut Conn,
        tunnel: TunnelId,
        hop: NextHopId,
        now: Instant,
    ) {
        while let Some(d) = c.q.datagrams().recv() {
            c.link.rx_packets += 1;
            c.link.rx_bytes += d.len() as u64;
            self.demux(tunnel, hop, d, now, true);
        }
    }

    fn demux(&mut self, tunnel: TunnelId, hop: NextHopId, d: Bytes, now: Instant, whole: bool) {
        match frame::demux(&d) {
            Ok(Frame::Ipv6(_) | Frame::Ipv4(_)) => {
                if self.packets.len() >= MAX_PACKETS {
                    self.frames.packets_dropped += 1;
                } else {
                    self.packets.push_back(Packet {
                        from: Some(hop),
                        bytes: d,
                    });
                }
            }
            Ok(Frame::Babel(_)) => self.emit(TunnelEvent::Babel { tunnel, bytes: d }),
            Ok(Frame::Fragment(f)) if whole => {
                if let Ok(Some(d)) = self.reassembler.handle_fragment(hop, f, now) {
                    self.demux(tunnel, hop, d, now, false);
                }
            }
            // A fragment of fragments (the reassembler refuses those), or
            // garbage.
            Ok(Frame::Fragment(_)) | Err(_) => self.frames.bad_frames += 1,
            Ok(Frame::Control { .. }) => self.frames.unknown_frames += 1,
        }
    }

    /// Tells the liveness clock about the tunnels that received
    /// authenticated packets since the last call, and NodeCore about
    /// noticeable path changes.
    pub(super) fn update_heard(&mut self, now: Instant) {
        for ch in std::mem::take(&mut self.heard) {
            let Some(c) = self.conn_mut(ch) else { continue };
            c.received = false;
            let count = c.authenticated_frames();
            if count == c.authenticated {
                continue;
            }
            c.authenticated = count;
            let Stage::Up { tunnel, .. } = c.stage else {
                continue;
            };
            let rtt = c.q.rtt();
            let max = c.q.datagrams().max_size();
            let (old_rtt, old_max) = c.reported;
            let path = rtt_moved(old_rtt, rtt) || old_max != max;
            if path {
                c.reported = (rtt, max);
            }
            if self.liveness.heard(tunnel, rtt, now) {
                self.emit(TunnelEvent::Heard { tunnel });
            }
            if path {
                self.emit(TunnelEvent::Path {
                    tunnel,
                    rtt,
                    max_datagram: max,
                });
            }
        }
    }

    pub(super) fn apply_liveness(&mut self, now: Instant) {
        while let Some(a) = self.liveness.poll_action() {
            match a {
                Action::Ping(tunnel) => {
                    let Some(&ch) = self.tunnels.get(&tunnel) else {
                        self.liveness.remove(tunnel);
                        continue;
                    };
                    if let Some(c) = self.conn_mut(ch) {
                        c.q.ping();
                        c.timeout = c.q.poll_timeout();
                        self.frames.keep_alives += 1;
                        self.queue_transmit(ch);
                    }
                }
                Action::Suspect { tunnel, silent_for } => {
                    self.emit(TunnelEvent::Silent { tunnel, silent_for });
                }
            }
        }
        let _ = now;
    }

    /// Starts an incoming connection, unless too many are pending.
    pub(super) fn accept(
        &mut self,
        incoming: quinn_proto::Incoming,
        now: Instant,
        buf: &mut Vec<u8>,
    ) {
        let pending = self
            .conns
            .iter()
            .flatten()
            .filter(|c| matches!(c.role, Role::Accept { .. }))
            .filter(|c| matches!(c.stage, Stage::Handshake | Stage::Exchange | Stage::Answer))
            .count();
        if pending >= MAX_PENDING {
            self.stats.refused_handshakes += 1;
            let t = self.endpoint.refuse(incoming, buf);
            self.respond(t, buf);
            return;
        }
        match self.endpoint.accept(incoming, now, buf, None) {
            Ok((ch, q)) => {
                let id = crate::node::core::boundary::ConnId(self.next_conn);
                self.next_conn += 1;
                let deadline = now + self.config.handshake_timeout;
                self.put(ch, Box::new(Conn::new(q, Role::Accept { id }, deadline)));
                self.process(ch, now);
            }
            Err(e) => {
                self.count_refused_handshake(&e.cause.to_string());
                if let Some(t) = e.response {
                    self.respond(t, buf);
                }
            }
        }
    }

    fn count_refused_handshake(&mut self, why: &str) {
        self.stats.refused_handshakes += 1;
        if why.contains("evoked") {
            self.stats.refused_revoked += 1;
        }
    }

    /// Forgets an up tunnel's routing (its connection is closing or gone).
    pub(super) fn unroute(&mut self, tunnel: TunnelId, hop: NextHopId) {
        self.tunnels.remove(&tunnel);
        if let Some(slot) = self.hops.get_mut(hop.0 as usize) {
            *slot = None;
        }
        self.liveness.remove(tunnel);
        self.reassembler.forget(hop);
        self.stalled.retain(|ch| {
            self.conns
                .get(ch.0)
                .and_then(|c| c.as_ref())
                .is_some_and(|c| c.tunnel() != Some(tunnel))
        });
    }
}

/// Queues `datagram` on `c`, as fragments if it is too big.
pub(super) fn send_on(c: &mut Conn, datagram: Bytes, ident: &mut u32) -> Result<(), NextHopError> {
    let Some(max) = c.q.datagrams().max_size() else {
        c.link.tx_dropped += 1;
        return Err(NextHopError::Unsupported);
    };
    if datagram.len() <= max {
        return push(c, datagram);
    }
    let id = *ident;
    *ident = ident.wrapping_add(1);
    fragment::split(&datagram, id, max, |f| push(c, f)).map(|_| ())
}

fn push(c: &mut Conn, d: Bytes) -> Result<(), NextHopError> {
    let len = d.len();
    if c.q.datagrams().send_buffer_space() < len {
        // quinn makes room by dropping the oldest queued datagrams.
        c.link.tx_dropped += 1;
    }
    match c.q.datagrams().send(d, true) {
        Ok(()) => {
            c.link.tx_packets += 1;
            c.link.tx_bytes += len as u64;
            Ok(())
        }
        Err(e) => {
            c.link.tx_dropped += 1;
            Err(match e {
                quinn_proto::SendDatagramError::TooLarge => NextHopError::TooLarge {
                    len,
                    max: c.q.datagrams().max_size().unwrap_or(0),
                },
                _ => NextHopError::Unsupported,
            })
        }
    }
}
