//! Tunnels over TCP, for where UDP does not get through: the same mutual
//! TLS identities (TLS 1.3 with rustls driven sans-IO, ALPN
//! [`ALPN_TCP`]), the same `Open`/`Accept` exchange and the same tunnel
//! semantics as over QUIC, with every packet, Babel packet and control
//! message framed on the stream ([`wire`]).
//!
//! [`TcpEngine`] is the TCP counterpart of the QUIC
//! [`crate::transport::engine::Engine`]: NodeCore's tunnel boundary on one
//! side, byte streams on the other; it reads no clock and owns no socket.
//! The packet loop owns the sockets (nonblocking, registered with its
//! runtime) and names each by a [`TcpHandle`]:
//!
//! - inputs: [`TcpEngine::handle_accepted`], [`TcpEngine::handle_connected`],
//!   [`TcpEngine::handle_read`], [`TcpEngine::handle_io_error`],
//!   [`TcpEngine::handle_command`], [`TcpEngine::send_datagram`],
//!   [`TcpEngine::handle_timeout`];
//! - outputs: [`TcpEngine::poll_connect`] (open a socket to an address),
//!   [`TcpEngine::transmit`]/[`TcpEngine::consume`] (bytes for a socket),
//!   [`TcpEngine::poll_release`] (a socket to drop), [`TcpEngine::poll_packet`],
//!   [`TcpEngine::poll_event`], [`TcpEngine::poll_timeout`].
//!
//! Connection ids of incoming TCP connections have [`CONN_BIT`] set, so
//! that the packet loop tells them from QUIC's.
//!
//! Bounds: connections ([`MAX_CONNS`]; incoming ones beyond are refused
//! at once), events ([`MAX_EVENTS`], Babel packets beyond are dropped),
//! received packets ([`MAX_PACKETS`]), each connection's output
//! ([`conn::MAX_TX`]) and received plaintext (one frame).

pub mod choice;
mod conn;
pub mod tls;
pub mod wire;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use re6st_dataplane::nexthop::NextHopError;

use super::dial::Dial;
use super::engine::liveness::{Action, Liveness};
use super::engine::{Credentials, FrameStats, Packet, TunnelInfo};
use super::{TransportConfig, TransportError, TransportStats};
use crate::identity::tls::TlsIdentity;
use crate::node::core::boundary::{
    ConnId, DialError, NextHopId, TunnelCmd, TunnelEvent, TunnelId, refusal_of_close,
};
use crate::transport::control::{self, Control, close};
use crate::tunnels::policy::Failure;
use conn::{Role, Stage, TcpConn};
pub use tls::ALPN_TCP;
use wire::{Frame, Repr};

/// TCP connections at most (any stage).
pub const MAX_CONNS: usize = 512;
/// Events waiting for NodeCore, at most (Babel packets beyond are dropped).
pub const MAX_EVENTS: usize = 4096;
/// Received packets waiting for the packet loop, at most.
pub const MAX_PACKETS: usize = 4096;
/// The bit set in the [`ConnId`]s of incoming TCP connections.
pub const CONN_BIT: u64 = 1 << 63;
/// Largest next-hop id mapped.
const MAX_HOP: u32 = 1 << 16;

/// The packet loop's name for one TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TcpHandle(pub usize);

/// Every TCP tunnel of a node. See the module documentation.
pub struct TcpEngine {
    tls: tls::Tls,
    config: TransportConfig,
    now: Instant,
    conns: Vec<Option<Box<TcpConn>>>,
    free: Vec<usize>,
    incoming: HashMap<ConnId, TcpHandle>,
    next_conn: u64,
    dials: HashMap<TunnelId, Dial<TcpHandle>>,
    tunnels: HashMap<TunnelId, TcpHandle>,
    hops: Vec<Option<TcpHandle>>,
    liveness: Liveness,
    connects: VecDeque<(TcpHandle, SocketAddr)>,
    release: VecDeque<TcpHandle>,
    events: VecDeque<TunnelEvent>,
    packets: VecDeque<Packet>,
    stats: TransportStats,
    frames: FrameStats,
}

impl std::fmt::Debug for TcpEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpEngine")
            .field("connections", &self.connections())
            .field("tunnels", &self.tunnels.len())
            .finish_non_exhaustive()
    }
}

impl TcpEngine {
    /// An engine for the node `me`.
    pub fn new(
        me: Credentials<'_>,
        config: TransportConfig,
        now: Instant,
    ) -> Result<Self, TransportError> {
        let identity = TlsIdentity::node(&me.cert, me.key);
        let tls = tls::Tls::new(me.cert, identity, me.ca_der, me.crl)?;
        Ok(Self {
            tls,
            liveness: Liveness::new(config.keep_alive, config.suspect_after, now),
            config,
            now,
            conns: Vec::new(),
            free: Vec::new(),
            incoming: HashMap::new(),
            next_conn: 0,
            dials: HashMap::new(),
            tunnels: HashMap::new(),
            hops: Vec::new(),
            connects: VecDeque::new(),
            release: VecDeque::new(),
            events: VecDeque::new(),
            packets: VecDeque::new(),
            stats: TransportStats::default(),
            frames: FrameStats::default(),
        })
    }

    // ---- which commands are ours ----

    /// Whether `tunnel` (a dial, or a connection) is a TCP one.
    pub fn has_tunnel(&self, tunnel: TunnelId) -> bool {
        self.dials.contains_key(&tunnel) || self.tunnels.contains_key(&tunnel)
    }

    /// Whether next hop `hop` is a TCP tunnel.
    pub fn has_hop(&self, hop: NextHopId) -> bool {
        self.hops.get(hop.0 as usize).is_some_and(Option::is_some)
    }

    /// Whether `conn` names a TCP connection.
    pub fn is_ours(conn: ConnId) -> bool {
        conn.0 & CONN_BIT != 0
    }

    // ---- socket inputs ----

    /// A socket was accepted from `remote` on our `local` address; `None`:
    /// too many connections, drop it.
    pub fn handle_accepted(
        &mut self,
        remote: SocketAddr,
        local: Option<IpAddr>,
        now: Instant,
    ) -> Option<TcpHandle> {
        self.now = now;
        if self.connections() >= MAX_CONNS {
            self.stats.refused_handshakes += 1;
            return None;
        }
        let tls = match self.tls.server() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "TLS server session");
                return None;
            }
        };
        let id = ConnId(CONN_BIT | self.next_conn);
        self.next_conn += 1;
        let mut c = TcpConn::new(
            tls.into(),
            Role::Accept { id },
            Stage::Handshake,
            remote,
            now,
            now + self.config.handshake_timeout,
        );
        c.local_ip = local.map(|ip| ip.to_canonical());
        Some(self.put(c))
    }

    /// A dial's socket is connected.
    pub fn handle_connected(&mut self, h: TcpHandle, now: Instant) {
        self.now = now;
        if let Some(c) = self.conn_mut(h)
            && c.stage == Stage::Connecting
        {
            c.stage = Stage::Handshake;
        }
    }

    /// Bytes read from a socket.
    pub fn handle_read(&mut self, h: TcpHandle, data: &[u8], now: Instant) {
        self.now = now;
        let Some(mut c) = self.take(h) else { return };
        self.feed(h, &mut c, data, now);
        self.put_back(h, c);
    }

    /// Whether `h`'s socket should be read now: not while a dial connects,
    /// nor while ciphertext waits (NodeCore has not answered, and the
    /// peer's frames wait in the socket meanwhile).
    pub fn wants_read(&self, h: TcpHandle) -> bool {
        self.conns
            .get(h.0)
            .and_then(|c| c.as_deref())
            .is_some_and(|c| c.stage != Stage::Connecting && c.stashed.is_empty())
    }

    /// Decrypts `data` and takes the frames out, as long as something
    /// takes them; the rest is stashed.
    fn feed(&mut self, h: TcpHandle, c: &mut TcpConn, data: &[u8], now: Instant) {
        let mut data = data;
        loop {
            let was_handshaking = c.tls.is_handshaking();
            let result = c.receive(&mut data);
            if was_handshaking && !c.tls.is_handshaking() && c.stage == Stage::Handshake {
                self.on_handshake(c, now);
            }
            self.read_frames(h, c, now);
            match result {
                Ok(true) if matches!(c.stage, Stage::Exchange | Stage::Up { .. }) => {}
                Ok(true) => {
                    if c.stage != Stage::Closing {
                        c.stashed.extend_from_slice(data);
                    }
                    break;
                }
                Ok(false) => break,
                Err(e) => {
                    self.lost(h, c, &e, now);
                    break;
                }
            }
        }
    }

    /// The socket failed, was refused, or the peer closed it.
    pub fn handle_io_error(&mut self, h: TcpHandle, error: &str, now: Instant) {
        self.now = now;
        let Some(mut c) = self.take(h) else { return };
        self.lost(h, &mut c, error, now);
        self.put_back(h, c);
    }

    /// Runs what is due: handshake deadlines, closing sockets, keep-alives
    /// and suspicions.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.update_heard(now);
        for i in 0..self.conns.len() {
            let h = TcpHandle(i);
            let Some(mut c) = self.take(h) else { continue };
            if c.deadline.is_some_and(|d| d <= now) {
                self.on_deadline(h, &mut c, now);
            }
            self.put_back(h, c);
        }
        if self.liveness.poll_timeout().is_some_and(|t| t <= now) {
            self.liveness.handle_timeout(now);
            while let Some(a) = self.liveness.poll_action() {
                match a {
                    Action::Ping(tunnel) => {
                        let Some(&h) = self.tunnels.get(&tunnel) else {
                            self.liveness.remove(tunnel);
                            continue;
                        };
                        if let Some(c) = self.conn_mut(h)
                            && c.send(&Repr::Ping).is_ok()
                        {
                            c.ping_sent.get_or_insert(now);
                            self.frames.keep_alives += 1;
                        }
                    }
                    Action::Suspect { tunnel, silent_for } => {
                        self.emit(TunnelEvent::Silent { tunnel, silent_for });
                    }
                }
            }
        }
    }

    /// Sends `datagram` (an IP or Babel packet) on the tunnel routed as
    /// `hop`; dropped (and counted) when its output is full.
    pub fn send_datagram(&mut self, hop: NextHopId, datagram: Bytes) -> Result<(), NextHopError> {
        let h = self
            .hops
            .get(hop.0 as usize)
            .copied()
            .flatten()
            .ok_or(NextHopError::Unknown)?;
        let c = self.conn_mut(h).ok_or(NextHopError::Unknown)?;
        if datagram.len() > wire::MAX_PAYLOAD {
            c.link.tx_dropped += 1;
            return Err(NextHopError::TooLarge {
                len: datagram.len(),
                max: wire::MAX_PAYLOAD,
            });
        }
        match c.send(&Repr::Packet(&datagram)) {
            Ok(()) => {
                c.link.tx_packets += 1;
                c.link.tx_bytes += datagram.len() as u64;
            }
            // A full tunnel drops, as a link does.
            Err(_) => c.link.tx_dropped += 1,
        }
        Ok(())
    }

    /// Closes every connection (the node stops).
    pub fn close_all(&mut self, now: Instant, code: u32, reason: &str) {
        self.now = now;
        for c in self.conns.iter_mut().flatten() {
            c.close(now, code, reason);
        }
        for (tunnel, _) in std::mem::take(&mut self.tunnels) {
            self.liveness.remove(tunnel);
        }
        self.hops.clear();
        self.dials.clear();
        self.incoming.clear();
        self.events.clear();
        self.packets.clear();
    }

    // ---- socket outputs ----

    /// The next socket to open: connect `handle` to the address, then call
    /// [`TcpEngine::handle_connected`] or [`TcpEngine::handle_io_error`].
    pub fn poll_connect(&mut self) -> Option<(TcpHandle, SocketAddr)> {
        self.connects.pop_front()
    }

    /// Bytes to write on `h`'s socket (empty: nothing now).
    pub fn transmit(&mut self, h: TcpHandle) -> &[u8] {
        match self.conns.get_mut(h.0).and_then(|c| c.as_deref_mut()) {
            Some(c) if c.stage != Stage::Connecting => c.transmit(),
            _ => &[],
        }
    }

    /// Whether `h` has nothing to write (without sealing what waits).
    pub fn output_empty(&self, h: TcpHandle) -> bool {
        self.conns
            .get(h.0)
            .and_then(|c| c.as_deref())
            .is_none_or(|c| c.backlog() == 0 && !c.tls.wants_write())
    }

    /// The socket took `n` bytes of [`TcpEngine::transmit`].
    pub fn consume(&mut self, h: TcpHandle, n: usize) {
        let done = match self.conn_mut(h) {
            Some(c) => {
                c.consume(n);
                c.finished()
            }
            None => false,
        };
        if done {
            self.forget(h);
        }
    }

    /// A socket to close and drop (its connection is over).
    pub fn poll_release(&mut self) -> Option<TcpHandle> {
        self.release.pop_front()
    }

    /// The next received packet to route.
    pub fn poll_packet(&mut self) -> Option<Packet> {
        self.packets.pop_front()
    }

    /// The next event for NodeCore.
    pub fn poll_event(&mut self) -> Option<TunnelEvent> {
        self.update_heard(self.now);
        self.events.pop_front()
    }

    /// Whether [`TcpEngine::poll_event`] may have something.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty() || self.conns.iter().flatten().any(|c| c.heard)
    }

    /// Puts the keep-alive grid on the wall clock, as
    /// [`Engine::align_keep_alives`](crate::transport::engine::Engine::align_keep_alives).
    pub fn align_keep_alives(&mut self, now: Instant, since_unix: Duration) {
        self.liveness.align(now, since_unix);
    }

    /// When [`TcpEngine::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns
            .iter()
            .flatten()
            .filter_map(|c| c.deadline)
            .chain(self.liveness.poll_timeout())
            .min()
    }

    // ---- getters ----

    /// Handshake counters.
    pub fn stats(&self) -> TransportStats {
        self.stats.clone()
    }

    /// Frame counters.
    pub fn frame_stats(&self) -> FrameStats {
        self.frames.clone()
    }

    /// Connections open (any stage).
    pub fn connections(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    /// Every up tunnel's counters and path.
    pub fn tunnel_infos(&self) -> Vec<(TunnelId, TunnelInfo)> {
        let mut v: Vec<_> = self
            .tunnels
            .iter()
            .filter_map(|(&t, &h)| {
                let c = self.conns.get(h.0)?.as_deref()?;
                matches!(c.stage, Stage::Up { .. }).then(|| {
                    (
                        t,
                        TunnelInfo {
                            link: c.link,
                            rtt: c.rtt,
                            max_datagram: Some(wire::MAX_PAYLOAD),
                            suspected: self.liveness.is_suspected(t),
                            // Not QUIC: no congestion window of ours.
                            quic: Default::default(),
                        },
                    )
                })
            })
            .collect();
        v.sort_by_key(|(t, _)| *t);
        v
    }

    /// The sockets the packet loop holds for this engine.
    pub fn handles(&self) -> impl Iterator<Item = TcpHandle> + '_ {
        self.conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
            .map(|(i, _)| TcpHandle(i))
    }

    // ---- NodeCore's commands ----

    /// Carries out a command about a TCP tunnel or connection (the packet
    /// loop passes only those, and the CRL and identity to both engines).
    pub fn handle_command(&mut self, cmd: TunnelCmd, now: Instant) {
        self.now = now;
        match cmd {
            TunnelCmd::Dial {
                tunnel,
                peer,
                addresses,
                tcp_port,
            } => self.dial(tunnel, peer, tcp_addresses(&addresses, tcp_port), now),
            TunnelCmd::CancelDial { tunnel } => {
                self.close_tunnel(tunnel, close::DONE, "dial cancelled", now);
            }
            TunnelCmd::Accept {
                conn,
                tunnel,
                hop,
                reply,
            } => match self.incoming.remove(&conn) {
                Some(h) if !self.tunnels.contains_key(&tunnel) => {
                    self.tunnels.insert(tunnel, h);
                    self.up(tunnel, hop, Some(reply), now);
                }
                Some(h) => {
                    if let Some(c) = self.conn_mut(h) {
                        c.close(now, close::PROTOCOL, "duplicate tunnel id");
                    }
                }
                None => self.emit(TunnelEvent::Closed {
                    tunnel,
                    reason: format!("{conn} closed before it was accepted"),
                }),
            },
            TunnelCmd::Refuse { conn, code, reason } => {
                if let Some(h) = self.incoming.remove(&conn)
                    && let Some(c) = self.conn_mut(h)
                {
                    c.close(now, code, &reason);
                }
            }
            TunnelCmd::Up { tunnel, hop } => self.up(tunnel, hop, None, now),
            TunnelCmd::SendBabel { tunnel, bytes } => {
                if let Some(&h) = self.tunnels.get(&tunnel)
                    && let Some(c) = self.conn_mut(h)
                    && matches!(c.stage, Stage::Up { .. })
                    && bytes.len() <= wire::MAX_PAYLOAD
                {
                    // Lost when the tunnel is full, as on a link.
                    let _ = c.send(&Repr::Babel(&bytes));
                }
            }
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
            TunnelCmd::SetCrl(crl) => {
                if let Err(e) = self.tls.set_crl(*crl) {
                    tracing::error!(error = %e, "cannot apply the CRL to TCP tunnels");
                }
            }
            TunnelCmd::SetIdentity(cert) => {
                if let Err(e) = self.tls.set_identity(*cert) {
                    tracing::error!(error = %e, "cannot use the renewed certificate over TCP");
                }
            }
        }
    }

    /// Dials `peer` at `addresses` (already TCP ones: [`tcp_addresses`]).
    fn dial(&mut self, tunnel: TunnelId, peer: Ipv6Addr, addresses: Vec<SocketAddr>, now: Instant) {
        self.stats.dials += 1;
        if self.has_tunnel(tunnel) {
            tracing::warn!(%tunnel, "TCP dial for a tunnel that exists; ignored");
            return;
        }
        self.dials.insert(tunnel, Dial::new(peer, addresses));
        self.try_next(tunnel, now);
    }

    /// Connects to the next address of a dial, or reports its failure.
    fn try_next(&mut self, tunnel: TunnelId, now: Instant) {
        let Some(d) = self.dials.get_mut(&tunnel) else {
            return;
        };
        d.conn = None;
        if let Some(addr) = d.next_address() {
            let peer = d.peer;
            if self.connections() >= MAX_CONNS {
                self.fail_dial(tunnel, DialError::unreachable("too many TCP connections"));
                return;
            }
            match self.tls.client(peer) {
                Ok(tls) => {
                    let c = TcpConn::new(
                        tls.into(),
                        Role::Dial { tunnel },
                        Stage::Connecting,
                        addr,
                        now,
                        now + self.config.handshake_timeout,
                    );
                    let h = self.put(c);
                    if let Some(d) = self.dials.get_mut(&tunnel) {
                        d.conn = Some(h);
                    }
                    self.connects.push_back((h, addr));
                }
                Err(e) => self.fail_dial(tunnel, DialError::unreachable(format!("TLS: {e}"))),
            }
            return;
        }
        let error = d.failure("TCP");
        self.fail_dial(tunnel, error);
    }

    fn fail_dial(&mut self, tunnel: TunnelId, error: DialError) {
        let Some(d) = self.dials.remove(&tunnel) else {
            return;
        };
        let now = self.now;
        if let Some(h) = d.conn
            && let Some(c) = self.conn_mut(h)
        {
            c.close(now, close::DONE, &error.reason);
        }
        self.stats.dials_failed += 1;
        if error.answered_by.is_some() {
            self.stats.dials_other_node += 1;
        }
        tracing::debug!(%tunnel, peer = %d.peer, reason = %error.reason, "TCP dial failed");
        self.emit(TunnelEvent::Dialled {
            tunnel,
            result: Err(error),
        });
    }

    fn up(&mut self, tunnel: TunnelId, hop: NextHopId, first: Option<Control>, now: Instant) {
        let Some(h) = self.tunnels.get(&tunnel).copied() else {
            self.emit(TunnelEvent::Closed {
                tunnel,
                reason: "no connection to take up".into(),
            });
            return;
        };
        let taken = self.hops.get(hop.0 as usize).copied().flatten().is_some();
        let Some(mut c) = self.take(h) else {
            self.tunnels.remove(&tunnel);
            return;
        };
        if c.stage != Stage::Answer || hop.0 >= MAX_HOP || taken {
            let why = if c.stage != Stage::Answer {
                "connection gone before it was taken up"
            } else {
                "next hop id unusable"
            };
            c.close(now, close::PROTOCOL, why);
            self.put_back(h, c);
            self.tunnels.remove(&tunnel);
            self.emit(TunnelEvent::Closed {
                tunnel,
                reason: why.into(),
            });
            return;
        }
        c.stage = Stage::Up { tunnel, hop };
        c.deadline = None;
        c.reported_rtt = c.rtt;
        if let Some(m) = first {
            let mut buf = Vec::new();
            m.emit_frame(&mut buf);
            let _ = c.send_control(&buf);
        }
        let slot = hop.0 as usize;
        if self.hops.len() <= slot {
            self.hops.resize(slot + 1, None);
        }
        self.hops[slot] = Some(h);
        let lead = matches!(c.role, Role::Dial { .. });
        self.liveness.insert(tunnel, c.rtt, now, lead);
        // What arrived meanwhile.
        let stashed = std::mem::take(&mut c.stashed);
        self.feed(h, &mut c, &stashed, now);
        self.put_back(h, c);
    }

    fn send_control(&mut self, tunnel: TunnelId, msg: &Control, now: Instant) {
        let Some(&h) = self.tunnels.get(&tunnel) else {
            return;
        };
        let Some(c) = self.conn_mut(h) else { return };
        let Stage::Up { hop, .. } = c.stage else {
            return;
        };
        let mut buf = Vec::new();
        msg.emit_frame(&mut buf);
        if c.send_control(&buf).is_err() {
            let why = "control backlog above its bound: the peer does not read";
            c.close(now, close::PROTOCOL, why);
            self.unroute(tunnel, hop);
            self.emit(TunnelEvent::Closed {
                tunnel,
                reason: why.into(),
            });
        }
    }

    fn close_tunnel(&mut self, tunnel: TunnelId, code: u32, reason: &str, now: Instant) {
        let dialling = self.dials.remove(&tunnel).and_then(|d| d.conn);
        let h = self.tunnels.get(&tunnel).copied().or(dialling);
        if let Some(h) = h
            && let Some(c) = self.conn_mut(h)
        {
            let hop = match c.stage {
                Stage::Up { hop, .. } => Some(hop),
                _ => None,
            };
            c.close(now, code, reason);
            if let Some(hop) = hop {
                self.unroute(tunnel, hop);
            }
        }
        self.tunnels.remove(&tunnel);
    }

    // ---- the connection's life ----

    fn on_handshake(&mut self, c: &mut TcpConn, now: Instant) {
        c.rtt = now.saturating_duration_since(c.started);
        let peer = c.peer_cert(self.tls.crl());
        match c.role {
            Role::Dial { tunnel } => {
                // Connect and TLS 1.3 take two round trips.
                c.rtt /= 2;
                let at = c.remote;
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
                        let mut buf = Vec::new();
                        open.emit_frame(&mut buf);
                        let _ = c.send_control(&buf);
                        return;
                    }
                    Err(why) => c.close(now, close::BAD_PEER, &why),
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
                    self.stats.refused_handshakes += 1;
                    tracing::info!(from = %c.remote, reason = %why, "refused an incoming TCP tunnel");
                }
            },
        }
    }

    /// Reads the whole frames received.
    fn read_frames(&mut self, h: TcpHandle, c: &mut TcpConn, now: Instant) {
        while matches!(c.stage, Stage::Exchange | Stage::Up { .. }) {
            if let Stage::Up { tunnel, hop } = c.stage
                && self.events.len() >= 2 * MAX_EVENTS
            {
                // NodeCore is far behind and the peer keeps sending
                // control messages: a stream cannot skip them.
                let why = "control messages beyond the event bound";
                c.close(now, close::PROTOCOL, why);
                self.unroute(tunnel, hop);
                self.emit(TunnelEvent::Closed {
                    tunnel,
                    reason: why.into(),
                });
                return;
            }
            let Some(bytes) = c.next_frame() else { return };
            c.heard = true;
            let frame = Frame::new_unchecked(&bytes[..]);
            let repr = match Repr::parse(&frame) {
                Ok(r) => r,
                Err(wire::WireError::UnknownKind(_)) => {
                    self.frames.unknown_frames += 1;
                    continue;
                }
                Err(_) => {
                    self.frames.bad_frames += 1;
                    continue;
                }
            };
            let payload = || bytes.slice(wire::HEADER_LEN..);
            match (c.stage, repr) {
                (Stage::Up { hop, .. }, Repr::Packet(p)) => {
                    c.link.rx_packets += 1;
                    c.link.rx_bytes += p.len() as u64;
                    if self.packets.len() >= MAX_PACKETS {
                        self.frames.packets_dropped += 1;
                    } else {
                        self.packets.push_back(Packet {
                            from: Some(hop),
                            bytes: payload(),
                        });
                    }
                }
                (Stage::Up { tunnel, .. }, Repr::Babel(p)) => {
                    c.link.rx_packets += 1;
                    c.link.rx_bytes += p.len() as u64;
                    self.emit(TunnelEvent::Babel {
                        tunnel,
                        bytes: payload(),
                    });
                }
                (_, Repr::Ping) => {
                    let _ = c.send(&Repr::Pong);
                }
                (_, Repr::Pong) => {
                    if let Some(t) = c.ping_sent.take() {
                        let sample = now.saturating_duration_since(t);
                        c.rtt = if c.rtt.is_zero() {
                            sample
                        } else {
                            (c.rtt * 7 + sample) / 8
                        };
                    }
                }
                (_, Repr::Control(p)) => {
                    c.ctl_rx.extend_from_slice(p);
                    self.read_control(h, c, now);
                }
                (_, Repr::Close { code, reason }) => {
                    let text = String::from_utf8_lossy(reason).into_owned();
                    self.closed_by_peer(c, code, reason, &text, now);
                    return;
                }
                // Packets before the tunnel is up.
                (_, Repr::Packet(_) | Repr::Babel(_)) => self.frames.bad_frames += 1,
            }
        }
    }

    /// Takes the whole control messages received.
    fn read_control(&mut self, h: TcpHandle, c: &mut TcpConn, now: Instant) {
        loop {
            let Some(l) = c.ctl_rx.get(..4) else { return };
            let len = match Control::check_length(u32::from_be_bytes([l[0], l[1], l[2], l[3]])) {
                Ok(len) => len,
                Err(e) => {
                    c.ctl_rx = Vec::new();
                    self.control_error(h, c, e, now);
                    return;
                }
            };
            let Some(frame) = c.ctl_rx.get(4..4 + len) else {
                return;
            };
            let parsed = Control::parse(frame);
            c.ctl_rx.drain(..4 + len);
            match parsed {
                Ok(m) => self.on_control(h, c, m, now),
                Err(e) => self.control_error(h, c, e, now),
            }
            if !matches!(c.stage, Stage::Exchange | Stage::Answer | Stage::Up { .. }) {
                return;
            }
        }
    }

    fn control_error(
        &mut self,
        _h: TcpHandle,
        c: &mut TcpConn,
        error: control::ControlError,
        now: Instant,
    ) {
        match (c.stage, c.role) {
            (Stage::Up { tunnel, .. }, _) => self.emit(TunnelEvent::ControlError { tunnel, error }),
            (_, Role::Dial { tunnel }) => {
                c.close(now, close::PROTOCOL, "expected Accept");
                self.fail_dial(
                    tunnel,
                    DialError::unreachable(format!("protocol: expected Accept: {error}")),
                );
            }
            (_, Role::Accept { .. }) => c.close(now, close::PROTOCOL, "expected Open"),
        }
    }

    fn on_control(&mut self, h: TcpHandle, c: &mut TcpConn, msg: Control, now: Instant) {
        match (c.stage, c.role, msg) {
            (Stage::Up { tunnel, .. }, _, msg) => self.emit(TunnelEvent::Control { tunnel, msg }),
            (Stage::Exchange, Role::Dial { tunnel }, Control::Accept { crl_number, .. }) => {
                c.peer_crl = crl_number;
                c.stage = Stage::Answer;
                c.deadline = Some(now + self.config.handshake_timeout);
                self.dials.remove(&tunnel);
                self.tunnels.insert(tunnel, h);
                let result = c
                    .handshake()
                    .map(Box::new)
                    .ok_or_else(|| DialError::unreachable("handshake without a peer certificate"));
                self.emit(TunnelEvent::Dialled { tunnel, result });
            }
            (Stage::Exchange, Role::Dial { tunnel }, other) => {
                c.close(now, close::PROTOCOL, "expected Accept");
                self.fail_dial(
                    tunnel,
                    DialError::unreachable(format!("protocol: expected Accept, got {other:?}")),
                );
            }
            (Stage::Exchange, Role::Accept { id }, Control::Open { crl_number, .. }) => {
                c.peer_crl = crl_number;
                c.stage = Stage::Answer;
                c.deadline = Some(now + self.config.handshake_timeout);
                self.incoming.insert(id, h);
                if let Some(hs) = c.handshake() {
                    self.stats.accepted_handshakes += 1;
                    self.emit(TunnelEvent::Incoming {
                        conn: id,
                        handshake: Box::new(hs),
                    });
                }
            }
            (Stage::Exchange, Role::Accept { .. }, _) => {
                c.close(now, close::PROTOCOL, "expected Open");
            }
            // Anything while NodeCore decides: the protocol has nothing
            // there.
            _ => c.close(now, close::PROTOCOL, "control message out of turn"),
        }
    }

    /// The peer sent its close.
    fn closed_by_peer(
        &mut self,
        c: &mut TcpConn,
        code: u32,
        reason: &[u8],
        text: &str,
        now: Instant,
    ) {
        let stage = c.stage;
        c.stage = Stage::Closing;
        c.deadline = Some(now + conn::CLOSE_LINGER);
        match (stage, c.role) {
            (Stage::Exchange, Role::Dial { tunnel }) => {
                match refusal_of_close(u64::from(code), reason) {
                    Some(r) => self.fail_dial(
                        tunnel,
                        DialError {
                            failure: Failure::Refused(r),
                            reason: r.to_string(),
                            answered_by: None,
                        },
                    ),
                    None => self.fail_dial(
                        tunnel,
                        DialError::unreachable(format!("closed by the peer: {text}")),
                    ),
                }
            }
            (Stage::Handshake | Stage::Exchange, Role::Accept { .. })
                if code == close::BAD_PEER =>
            {
                self.stats.refused_by_dialler += 1;
            }
            (Stage::Answer, Role::Dial { tunnel }) => {
                self.tunnels.remove(&tunnel);
                self.emit(TunnelEvent::Closed {
                    tunnel,
                    reason: format!("closed by the peer: {text}"),
                });
            }
            (Stage::Answer, Role::Accept { id }) => {
                self.incoming.remove(&id);
            }
            (Stage::Up { tunnel, hop }, _) => {
                self.unroute(tunnel, hop);
                self.emit(TunnelEvent::Closed {
                    tunnel,
                    reason: format!("closed by the peer: {text}"),
                });
            }
            _ => {}
        }
    }

    /// The connection is lost (socket or TLS error, end of stream).
    fn lost(&mut self, h: TcpHandle, c: &mut TcpConn, why: &str, now: Instant) {
        let stage = std::mem::replace(&mut c.stage, Stage::Closing);
        // Nothing more can be written that matters; the socket goes.
        c.deadline = Some(now);
        match (stage, c.role) {
            (Stage::Closing, _) => {}
            (Stage::Connecting | Stage::Handshake, Role::Dial { tunnel }) => {
                if let Some(d) = self.dials.get_mut(&tunnel)
                    && d.conn == Some(h)
                {
                    d.attempt_failed(format!("{}: {why}", c.remote));
                    self.try_next(tunnel, now);
                }
            }
            (Stage::Exchange, Role::Dial { tunnel }) => {
                self.fail_dial(tunnel, DialError::unreachable(format!("TCP: {why}")));
            }
            (Stage::Handshake, Role::Accept { .. }) => {
                self.stats.refused_handshakes += 1;
                if why.contains("evoked") {
                    self.stats.refused_revoked += 1;
                }
                tracing::info!(from = %c.remote, reason = %why, "refused an incoming TCP tunnel");
            }
            (Stage::Exchange | Stage::Connecting, Role::Accept { .. }) => {}
            (Stage::Answer, Role::Dial { tunnel }) => {
                self.tunnels.remove(&tunnel);
                self.emit(TunnelEvent::Closed {
                    tunnel,
                    reason: why.into(),
                });
            }
            (Stage::Answer, Role::Accept { id }) => {
                self.incoming.remove(&id);
            }
            (Stage::Up { tunnel, hop }, _) => {
                self.unroute(tunnel, hop);
                self.emit(TunnelEvent::Closed {
                    tunnel,
                    reason: why.into(),
                });
            }
        }
    }

    fn on_deadline(&mut self, h: TcpHandle, c: &mut TcpConn, now: Instant) {
        let timeout = self.config.handshake_timeout;
        match (c.stage, c.role) {
            // Its close had its time: `put_back` lets the socket go.
            (Stage::Closing, _) => {}
            (Stage::Connecting | Stage::Handshake, Role::Dial { tunnel }) => {
                c.close(now, close::DONE, "no answer");
                c.deadline = Some(now);
                if let Some(d) = self.dials.get_mut(&tunnel)
                    && d.conn == Some(h)
                {
                    d.attempt_failed(format!("{}: no answer within {timeout:?}", c.remote));
                    self.try_next(tunnel, now);
                }
            }
            (Stage::Exchange, Role::Dial { tunnel }) => {
                c.close(now, close::PROTOCOL, "no answer to Open");
                self.fail_dial(
                    tunnel,
                    DialError::unreachable(format!("TCP: no answer to Open within {timeout:?}")),
                );
            }
            (Stage::Handshake, Role::Accept { .. }) => {
                c.close(now, close::PROTOCOL, "handshake timed out");
                c.deadline = Some(now);
                self.stats.refused_handshakes += 1;
            }
            (Stage::Exchange | Stage::Connecting, Role::Accept { .. }) => {
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
            (Stage::Up { .. }, _) => c.deadline = None,
        }
    }

    /// Liveness and path changes from the frames heard since last time.
    fn update_heard(&mut self, now: Instant) {
        let mut heard = Vec::new();
        for c in self.conns.iter_mut().flatten() {
            if !std::mem::take(&mut c.heard) {
                continue;
            }
            let Stage::Up { tunnel, .. } = c.stage else {
                continue;
            };
            let moved =
                c.rtt.abs_diff(c.reported_rtt) > (c.reported_rtt / 8).max(Duration::from_millis(1));
            if moved {
                c.reported_rtt = c.rtt;
            }
            heard.push((tunnel, c.rtt, moved));
        }
        for (tunnel, rtt, moved) in heard {
            if self.liveness.heard(tunnel, rtt, now) {
                self.emit(TunnelEvent::Heard { tunnel });
            }
            if moved {
                self.emit(TunnelEvent::Path {
                    tunnel,
                    rtt,
                    max_datagram: Some(wire::MAX_PAYLOAD),
                });
            }
        }
    }

    fn unroute(&mut self, tunnel: TunnelId, hop: NextHopId) {
        self.tunnels.remove(&tunnel);
        if let Some(slot) = self.hops.get_mut(hop.0 as usize) {
            *slot = None;
        }
        self.liveness.remove(tunnel);
    }

    // ---- slots ----

    fn conn_mut(&mut self, h: TcpHandle) -> Option<&mut TcpConn> {
        self.conns.get_mut(h.0).and_then(|c| c.as_deref_mut())
    }

    fn take(&mut self, h: TcpHandle) -> Option<Box<TcpConn>> {
        self.conns.get_mut(h.0).and_then(Option::take)
    }

    fn put(&mut self, c: TcpConn) -> TcpHandle {
        let c = Some(Box::new(c));
        match self.free.pop() {
            Some(i) => {
                self.conns[i] = c;
                TcpHandle(i)
            }
            None => {
                self.conns.push(c);
                TcpHandle(self.conns.len() - 1)
            }
        }
    }

    /// Puts a taken connection back; a finished one is released instead.
    fn put_back(&mut self, h: TcpHandle, mut c: Box<TcpConn>) {
        if c.stage == Stage::Closing && c.deadline.is_some_and(|d| d <= self.now) {
            self.conns[h.0] = Some(c);
            self.forget(h);
            return;
        }
        let _ = c.transmit();
        self.conns[h.0] = Some(c);
    }

    /// Drops a connection's state; its socket is released.
    fn forget(&mut self, h: TcpHandle) {
        if let Some(slot) = self.conns.get_mut(h.0)
            && slot.take().is_some()
        {
            // A socket not opened yet never will be.
            self.connects.retain(|(c, _)| *c != h);
            self.release.push_back(h);
        }
    }

    /// The slot of a released socket may be reused.
    pub fn released(&mut self, h: TcpHandle) {
        if self.conns.get(h.0).is_some_and(Option::is_none) && !self.free.contains(&h.0) {
            self.free.push(h.0);
        }
    }

    fn emit(&mut self, ev: TunnelEvent) {
        if self.events.len() >= MAX_EVENTS && matches!(ev, TunnelEvent::Babel { .. }) {
            self.frames.babel_dropped += 1;
            return;
        }
        self.events.push_back(ev);
    }
}

/// Where to dial a peer over TCP: its announced UDP addresses' IPs at its
/// announced TCP port, or at the addresses' own ports when it announces
/// none (older nodes, LAN beacons).
pub fn tcp_addresses(addresses: &[SocketAddr], tcp_port: Option<u16>) -> Vec<SocketAddr> {
    addresses
        .iter()
        .map(|a| SocketAddr::new(a.ip(), tcp_port.unwrap_or(a.port())))
        .collect()
}
