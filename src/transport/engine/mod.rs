//! The QUIC tunnel engine: every tunnel of a node as quinn-proto state
//! machines behind one [`quinn_proto::Endpoint`], sans-IO.
//!
//! The engine speaks NodeCore's language ([`TunnelCmd`] in,
//! [`TunnelEvent`] out) and the packet loop's (UDP datagrams in and out,
//! IPv6 packets of up tunnels out, datagrams to a next hop in). It reads
//! no clock, owns no socket and spawns nothing, like quinn-proto's
//! `Connection` one level up:
//!
//! - inputs: [`Engine::handle_datagram`] (one UDP datagram, or one GRO
//!   segment), [`Engine::handle_command`], [`Engine::send_datagram`] (an
//!   IPv6 packet the packet loop routes to a next hop),
//!   [`Engine::handle_timeout`];
//! - outputs: [`Engine::poll_transmit`] (UDP datagrams to send, GSO
//!   batches), [`Engine::poll_packet`] (IPv6 packets received on up
//!   tunnels, for the FIB), [`Engine::poll_event`] (for NodeCore),
//!   [`Engine::poll_timeout`].
//!
//! Call order, each wake-up: feed what arrived (datagrams, commands,
//! packets to send, the timeout when due), then drain
//! [`Engine::poll_packet`] (routing may call [`Engine::send_datagram`]),
//! then [`Engine::poll_event`], then [`Engine::poll_transmit`] until
//! `None`, and sleep until [`Engine::poll_timeout`].
//!
//! What it does for each tunnel:
//!
//! - **Handshake**: mutual TLS ([`tls`]); the dialler checks that the
//!   certificate is the overlay address it dialled (another node's valid
//!   certificate: the dial fails naming it, [`DialError::answered_by`]),
//!   the acceptor that it is a node's and not revoked; then the control
//!   stream's `Open`/`Accept` exchange ([`stream`]) and NodeCore's answer.
//! - **Datagrams**: the first byte says what they carry (the dataplane's
//!   [`re6st_dataplane::frame`] demux): IP packets go to the packet loop,
//!   Babel packets to NodeCore, fragments are reassembled, anything else
//!   is counted and dropped. Datagrams above the tunnel's size are sent as
//!   fragments.
//! - **Liveness** ([`liveness`]): keep-alives only on silent tunnels,
//!   `Silent`/`Heard` transitions, counted from authenticated packets.
//!
//! Bounds: incoming connections not yet answered ([`MAX_PENDING`]),
//! events ([`MAX_EVENTS`]: Babel packets beyond it are dropped; a control
//! stream is not read while it is full), received packets waiting for the
//! packet loop ([`MAX_PACKETS`]), endpoint responses ([`MAX_RESPONSES`]),
//! each tunnel's datagram send queue (`datagram_send_buffer` bytes, the
//! oldest dropped first) and control backlog ([`stream::MAX_BACKLOG`]).

mod commands;
mod conn;
mod drive;
pub mod liveness;
mod quic_stats;
pub mod stream;
pub mod tls;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{ConnectionHandle, DatagramEvent, EcnCodepoint, Transmit};
use re6st_dataplane::fragment::{Reassembler, ReassemblyStats};
use re6st_dataplane::nexthop::NextHopError;
use serde::Serialize;

use super::dial::Dial;
use super::{TransportConfig, TransportError, TransportStats};
use crate::identity::tls::TlsIdentity;
use crate::identity::{Crl, NodeCert, NodeKey};
use crate::node::core::boundary::{ConnId, DialError, NextHopId, TunnelEvent, TunnelId};
use conn::Conn;
pub use conn::{LinkStats, authenticated};
use liveness::Liveness;
pub use quic_stats::QuicStats;

/// Incoming connections in handshake or waiting for NodeCore, at most;
/// beyond, new ones are refused.
pub const MAX_PENDING: usize = 256;
/// Events waiting for NodeCore, at most (Babel packets beyond are
/// dropped; state changes are always kept, a few per connection).
pub const MAX_EVENTS: usize = 4096;
/// Received IPv6 packets waiting for the packet loop, at most.
pub const MAX_PACKETS: usize = 4096;
/// Stateless responses (resets, refusals) waiting to be sent, at most.
pub const MAX_RESPONSES: usize = 64;
/// Largest next-hop id the engine maps (NodeCore's ids are small).
pub const MAX_HOP: u32 = 1 << 16;
/// Bytes of one GSO batch, at most: the kernel sends a batch as one UDP
/// datagram before it cuts it, so its payload must fit a UDP length
/// (65535, less the UDP and IPv4 headers). A larger batch fails with
/// `EMSGSIZE` and all its datagrams are lost.
pub const MAX_GSO_BYTES: usize = 65_535 - 8 - 20;

/// An IP packet (IPv6 or IPv4) for the packet loop to route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The tunnel it came from; `None`: this node originates it
    /// ([`TunnelCmd::SendPacket`]).
    pub from: Option<NextHopId>,
    /// The packet.
    pub bytes: Bytes,
}

/// A tunnel as the status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelInfo {
    /// Traffic counters.
    pub link: LinkStats,
    /// QUIC's RTT estimate.
    pub rtt: Duration,
    /// The largest datagram it carries now.
    pub max_datagram: Option<usize>,
    /// Whether the liveness clock suspects it.
    pub suspected: bool,
    /// Congestion window, losses, datagrams and ACKs.
    pub quic: QuicStats,
}

/// Datagram counters of all tunnels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FrameStats {
    /// Empty datagrams or datagrams starting with the reserved code 0.
    pub bad_frames: u64,
    /// Datagrams with a control code we do not know.
    pub unknown_frames: u64,
    /// Babel packets dropped because NodeCore's queue was full.
    pub babel_dropped: u64,
    /// Received IPv6 packets dropped because the packet loop's queue was
    /// full.
    pub packets_dropped: u64,
    /// Keep-alives sent.
    pub keep_alives: u64,
    /// Fragment reassembly.
    #[serde(skip)]
    pub reassembly: ReassemblyStats,
}

/// Who the node is and whom it trusts.
#[derive(Debug)]
pub struct Credentials<'a> {
    /// Its certificate.
    pub cert: NodeCert,
    /// Its key.
    pub key: &'a NodeKey,
    /// The network CA (DER).
    pub ca_der: &'a [u8],
    /// The CRL in force.
    pub crl: Option<Crl>,
}

/// Every QUIC tunnel of a node. See the module documentation.
pub struct Engine {
    endpoint: quinn_proto::Endpoint,
    tls: tls::Tls,
    config: TransportConfig,
    local: SocketAddr,
    now: Instant,
    conns: Vec<Option<Box<Conn>>>,
    incoming: HashMap<ConnId, ConnectionHandle>,
    next_conn: u64,
    dials: HashMap<TunnelId, Dial<ConnectionHandle>>,
    tunnels: HashMap<TunnelId, ConnectionHandle>,
    hops: Vec<Option<ConnectionHandle>>,
    liveness: Liveness,
    reassembler: Reassembler,
    next_ident: u32,
    transmit: VecDeque<ConnectionHandle>,
    responses: VecDeque<(Transmit, Vec<u8>)>,
    events: VecDeque<TunnelEvent>,
    packets: VecDeque<Packet>,
    heard: Vec<ConnectionHandle>,
    /// Up tunnels whose control stream waits for room in `events`.
    stalled: Vec<ConnectionHandle>,
    stats: TransportStats,
    frames: FrameStats,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("local", &self.local)
            .field("connections", &self.conns.iter().flatten().count())
            .field("tunnels", &self.tunnels.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine for the node `me` on a socket bound at `local`. `seed`
    /// makes quinn's choices (connection ids, tokens) reproducible in
    /// tests.
    pub fn new(
        me: Credentials<'_>,
        config: TransportConfig,
        local: SocketAddr,
        seed: Option<[u8; 32]>,
        now: Instant,
    ) -> Result<Self, TransportError> {
        let Credentials {
            cert,
            key,
            ca_der,
            crl,
        } = me;
        let quic = std::sync::Arc::new(tls::transport_config(&config)?);
        let identity = TlsIdentity::node(&cert, key);
        let tls = tls::Tls::new(cert, identity, ca_der, crl, quic, MAX_PENDING)?;
        let endpoint = quinn_proto::Endpoint::new(
            std::sync::Arc::new(quinn_proto::EndpointConfig::default()),
            Some(tls.server.clone()),
            true,
            seed,
        );
        let next_ident = match seed {
            Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
            None => rand::random(),
        };
        Ok(Self {
            endpoint,
            tls,
            liveness: Liveness::new(config.keep_alive, config.suspect_after, now),
            config,
            local,
            now,
            conns: Vec::new(),
            incoming: HashMap::new(),
            next_conn: 0,
            dials: HashMap::new(),
            tunnels: HashMap::new(),
            hops: Vec::new(),
            reassembler: Reassembler::default(),
            next_ident,
            transmit: VecDeque::new(),
            responses: VecDeque::new(),
            events: VecDeque::new(),
            packets: VecDeque::new(),
            heard: Vec::new(),
            stalled: Vec::new(),
            stats: TransportStats::default(),
            frames: FrameStats::default(),
            scratch: Vec::new(),
        })
    }

    // ---- inputs ----

    /// One UDP datagram (or one GRO segment) from `remote`, received on our
    /// address `local_ip` when the socket tells it.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
    ) {
        self.now = now;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        match self
            .endpoint
            .handle(now, remote, local_ip, ecn, data, &mut buf)
        {
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(c) = self.conn_mut(ch) {
                    c.q.handle_event(ev);
                    let first = !std::mem::replace(&mut c.received, true);
                    if first {
                        self.heard.push(ch);
                    }
                    self.process(ch, now);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.accept(incoming, now, &mut buf),
            Some(DatagramEvent::Response(t)) => self.respond(t, &buf),
            None => {}
        }
        self.scratch = buf;
    }

    /// Runs whatever is due at `now`: QUIC timers, handshake deadlines,
    /// keep-alives and suspicions, reassembly timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.update_heard(now);
        for i in 0..self.conns.len() {
            let ch = ConnectionHandle(i);
            let Some(c) = self.conn_mut(ch) else { continue };
            if c.timeout.is_some_and(|t| t <= now) {
                c.q.handle_timeout(now);
                self.process(ch, now);
            }
            if self
                .conn_mut(ch)
                .is_some_and(|c| c.deadline.is_some_and(|t| t <= now))
            {
                self.on_deadline(ch, now);
            }
        }
        if self.liveness.poll_timeout().is_some_and(|t| t <= now) {
            self.liveness.handle_timeout(now);
            self.apply_liveness(now);
        }
        if self.reassembler.poll_timeout().is_some_and(|t| t <= now) {
            self.reassembler.handle_timeout(now);
        }
    }

    /// Sends `datagram` (an IPv6 packet, or a Babel packet) on the tunnel
    /// routed as `hop`, as fragments if it is above the tunnel's datagram
    /// size. A full send queue drops its oldest datagrams.
    pub fn send_datagram(&mut self, hop: NextHopId, datagram: Bytes) -> Result<(), NextHopError> {
        let ch = self
            .hops
            .get(hop.0 as usize)
            .copied()
            .flatten()
            .ok_or(NextHopError::Unknown)?;
        let mut ident = self.next_ident;
        let Some(c) = self.conn_mut(ch) else {
            return Err(NextHopError::Unknown);
        };
        let result = drive::send_on(c, datagram, &mut ident);
        self.next_ident = ident;
        self.queue_transmit(ch);
        result
    }

    /// Closes every connection with `code` and `reason` (the node stops):
    /// nothing is reported any more, and each connection is forgotten once
    /// its close is sent and drained ([`Engine::connections`] falls to 0).
    pub fn close_all(&mut self, now: Instant, code: u32, reason: &str) {
        self.now = now;
        for i in 0..self.conns.len() {
            let ch = ConnectionHandle(i);
            let Some(c) = self.conn_mut(ch) else { continue };
            if c.stage != conn::Stage::Closing {
                c.close(now, code, reason);
            }
            self.queue_transmit(ch);
        }
        for (tunnel, _) in std::mem::take(&mut self.tunnels) {
            self.liveness.remove(tunnel);
        }
        self.hops.clear();
        self.dials.clear();
        self.incoming.clear();
        self.events.clear();
        self.packets.clear();
        self.stalled.clear();
    }

    // ---- outputs ----

    /// The next UDP datagram (or GSO batch of `segment_size` datagrams, at
    /// most `max_segments` and at most [`MAX_GSO_BYTES`]) to send, written
    /// into `buf`.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        max_segments: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        buf.clear();
        if let Some((t, bytes)) = self.responses.pop_front() {
            buf.extend_from_slice(&bytes);
            return Some(t);
        }
        while let Some(&ch) = self.transmit.front() {
            let Some(c) = self.conn_mut(ch) else {
                self.transmit.pop_front();
                continue;
            };
            let fit = MAX_GSO_BYTES / usize::from(c.q.current_mtu()).max(1);
            let t = c.q.poll_transmit(now, max_segments.min(fit).max(1), buf);
            if t.is_none()
                && let Some((code, reason)) = c.close_later.take()
            {
                c.close(now, code, &reason);
                continue;
            }
            c.timeout = c.q.poll_timeout();
            match t {
                Some(t) => return Some(t),
                None => {
                    c.queued = false;
                    self.transmit.pop_front();
                }
            }
        }
        None
    }

    /// The next IPv6 packet to route: received on an up tunnel, or
    /// originated by this node.
    pub fn poll_packet(&mut self) -> Option<Packet> {
        self.packets.pop_front()
    }

    /// The next event for NodeCore.
    pub fn poll_event(&mut self) -> Option<TunnelEvent> {
        self.update_heard(self.now);
        if self.events.len() < MAX_EVENTS / 2 && !self.stalled.is_empty() {
            let now = self.now;
            for ch in std::mem::take(&mut self.stalled) {
                self.process(ch, now);
            }
        }
        self.events.pop_front()
    }

    /// Whether [`Engine::poll_event`] may have something (for a caller
    /// that pulls events only when it has room for them).
    pub fn has_events(&self) -> bool {
        !self.events.is_empty() || !self.heard.is_empty() || !self.stalled.is_empty()
    }

    /// Puts the keep-alive grid on the wall clock (`since_unix`: the
    /// wall-clock time at `now`), so that nodes whose clocks agree send
    /// their keep-alives at the same instants. Call it before the first
    /// tunnel.
    pub fn align_keep_alives(&mut self, now: Instant, since_unix: Duration) {
        self.liveness.align(now, since_unix);
    }

    /// When [`Engine::handle_timeout`] is due; `None`: nothing to wait for.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conns = self
            .conns
            .iter()
            .flatten()
            .flat_map(|c| [c.timeout, c.deadline])
            .flatten();
        conns
            .chain(self.liveness.poll_timeout())
            .chain(self.reassembler.poll_timeout())
            .min()
    }

    // ---- getters ----

    /// Our certificate.
    pub fn me(&self) -> &NodeCert {
        self.tls.me()
    }

    /// The CRL in force.
    pub fn crl(&self) -> Option<&Crl> {
        self.tls.crl()
    }

    /// Handshake counters.
    pub fn stats(&self) -> TransportStats {
        self.stats.clone()
    }

    /// Datagram counters.
    pub fn frame_stats(&self) -> FrameStats {
        FrameStats {
            reassembly: self.reassembler.stats().clone(),
            ..self.frames.clone()
        }
    }

    /// An up tunnel's counters and path.
    pub fn tunnel_info(&mut self, tunnel: TunnelId) -> Option<TunnelInfo> {
        let ch = *self.tunnels.get(&tunnel)?;
        let suspected = self.liveness.is_suspected(tunnel);
        let c = self.conn_mut(ch)?;
        Some(TunnelInfo {
            link: c.link,
            rtt: c.q.rtt(),
            max_datagram: c.q.datagrams().max_size(),
            suspected,
            quic: QuicStats::of(&c.q),
        })
    }

    /// Every up tunnel's counters and path.
    pub fn tunnel_infos(&mut self) -> Vec<(TunnelId, TunnelInfo)> {
        let mut ids: Vec<TunnelId> = self.tunnels.keys().copied().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|t| Some((t, self.tunnel_info(t)?)))
            .collect()
    }

    /// Connections open (any stage).
    pub fn connections(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    /// The address the engine's socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    // ---- internals shared by the sub-modules ----

    fn conn_mut(&mut self, ch: ConnectionHandle) -> Option<&mut Conn> {
        self.conns.get_mut(ch.0).and_then(|c| c.as_deref_mut())
    }

    fn take(&mut self, ch: ConnectionHandle) -> Option<Box<Conn>> {
        self.conns.get_mut(ch.0).and_then(Option::take)
    }

    fn put(&mut self, ch: ConnectionHandle, c: Box<Conn>) {
        if self.conns.len() <= ch.0 {
            self.conns.resize_with(ch.0 + 1, || None);
        }
        self.conns[ch.0] = Some(c);
    }

    fn queue_transmit(&mut self, ch: ConnectionHandle) {
        if let Some(c) = self.conn_mut(ch)
            && !std::mem::replace(&mut c.queued, true)
        {
            self.transmit.push_back(ch);
        }
    }

    fn respond(&mut self, t: Transmit, bytes: &[u8]) {
        if self.responses.len() < MAX_RESPONSES {
            let len = t.size.min(bytes.len());
            self.responses.push_back((t, bytes[..len].to_vec()));
        }
    }

    fn emit(&mut self, ev: TunnelEvent) {
        if self.events.len() >= MAX_EVENTS && matches!(ev, TunnelEvent::Babel { .. }) {
            self.frames.babel_dropped += 1;
            return;
        }
        self.events.push_back(ev);
    }

    fn unreachable_dial(&mut self, tunnel: TunnelId, reason: String) {
        self.fail_dial(tunnel, DialError::unreachable(reason));
    }
}
