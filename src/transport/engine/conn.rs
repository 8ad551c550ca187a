//! One QUIC connection of the engine and where it stands in a tunnel's
//! life: handshake, the `Open`/`Accept` exchange, NodeCore's answer, up,
//! closing.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use serde::Serialize;

use super::stream::ControlStream;
use crate::identity::NodeCert;
use crate::node::core::boundary::{ConnId, Handshake, NextHopId, TunnelId, refusal_of_close};
use crate::tunnels::policy::Refusal;

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// TLS handshake in progress.
    Handshake,
    /// Handshake done and the peer's certificate checked; the control
    /// stream's `Open`/`Accept` exchange is running.
    Exchange,
    /// Exchange done, NodeCore told (`Incoming` or `Dialled`): waiting for
    /// its answer. The control stream is not read meanwhile.
    Answer,
    /// Carries traffic as `tunnel`, routed as `hop`.
    Up {
        /// The tunnel.
        tunnel: TunnelId,
        /// Its next hop.
        hop: NextHopId,
    },
    /// Closed or lost: only draining, nothing is reported any more.
    Closing,
}

/// Who opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We dialled it for `tunnel`.
    Dial {
        /// The tunnel NodeCore named the dial.
        tunnel: TunnelId,
    },
    /// The peer did; NodeCore knows it as `id` until it accepts.
    Accept {
        /// The engine's name for it.
        id: ConnId,
    },
}

/// A tunnel's traffic counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Datagrams handed to QUIC.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Datagrams dropped on the way out: refused by QUIC (too large,
    /// connection lost) or pushed out of the full send queue by newer ones.
    pub tx_dropped: u64,
    /// Datagrams received.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
}

/// One connection.
pub struct Conn {
    /// quinn's state machine.
    pub q: quinn_proto::Connection,
    /// Who opened it.
    pub role: Role,
    /// Where it stands.
    pub stage: Stage,
    /// The control stream.
    pub ctl: ControlStream,
    /// The peer's certificate, once checked.
    pub peer: Option<NodeCert>,
    /// The peer's CRL number (from `Open` or `Accept`).
    pub peer_crl: u64,
    /// Our address as the peer saw it (dials, from `Accept`).
    pub observed: Option<SocketAddr>,
    /// Until when the handshake and exchange, or NodeCore's answer, may
    /// take.
    pub deadline: Option<Instant>,
    /// quinn's next timer, cached after every call that may change it.
    pub timeout: Option<Instant>,
    /// Queued for `poll_transmit`.
    pub queued: bool,
    /// Received packets since the last liveness update.
    pub received: bool,
    /// Authenticated frames counted at the last liveness update.
    pub authenticated: u64,
    /// What was last reported in a `Path` event: RTT and datagram size.
    pub reported: (std::time::Duration, Option<usize>),
    /// Traffic counters.
    pub link: LinkStats,
    /// A close to make once what is queued went out (the dialler's TLS
    /// Finished, so that the peer hears an application close).
    pub close_later: Option<(u32, String)>,
}

impl Conn {
    /// A connection just created by quinn.
    pub fn new(q: quinn_proto::Connection, role: Role, deadline: Instant) -> Self {
        Self {
            q,
            role,
            stage: Stage::Handshake,
            ctl: ControlStream::default(),
            peer: None,
            peer_crl: 0,
            observed: None,
            deadline: Some(deadline),
            timeout: None,
            queued: false,
            received: false,
            authenticated: 0,
            reported: (std::time::Duration::ZERO, None),
            link: LinkStats::default(),
            close_later: None,
        }
    }

    /// The tunnel this connection is for, if it has one yet.
    pub fn tunnel(&self) -> Option<TunnelId> {
        match (self.stage, self.role) {
            (Stage::Up { tunnel, .. }, _) | (_, Role::Dial { tunnel }) => Some(tunnel),
            _ => None,
        }
    }

    /// The handshake as NodeCore sees it (once the exchange is done).
    pub fn handshake(&mut self) -> Option<Handshake> {
        let peer = self.peer.clone()?;
        let local_ip = match self.role {
            Role::Accept { .. } => self.q.local_ip().map(|ip| ip.to_canonical()),
            Role::Dial { .. } => None,
        };
        Some(Handshake {
            peer,
            peer_crl: self.peer_crl,
            remote: canonical(self.q.remote_address()),
            local_ip,
            observed: self.observed,
            rtt: self.q.rtt(),
            max_datagram: self.q.datagrams().max_size(),
        })
    }

    /// The authenticated frames received so far ([`authenticated`]).
    pub fn authenticated_frames(&self) -> u64 {
        authenticated(&self.q.stats().frame_rx)
    }

    /// Closes once what is queued is sent; reports nothing from now on.
    pub fn close_after_flush(&mut self, code: u32, reason: String) {
        self.close_later = Some((code, reason));
        self.stage = Stage::Closing;
        self.deadline = None;
    }

    /// Closes the connection with `code` and `reason`; it only drains from
    /// now on.
    pub fn close(&mut self, now: Instant, code: u32, reason: &str) {
        self.q.close(
            now,
            code.into(),
            bytes::Bytes::copy_from_slice(reason.as_bytes()),
        );
        self.stage = Stage::Closing;
        self.deadline = None;
    }
}

/// The frames a connection has decoded, all kinds together: quinn decodes
/// frames only from packets that decrypted, so this count moves only with
/// authenticated packets (ACKs and PINGs included), never with garbage
/// sent to our connection id.
pub fn authenticated(s: &quinn_proto::FrameStats) -> u64 {
    s.acks
        + s.ack_frequency
        + s.crypto
        + s.connection_close
        + s.data_blocked
        + s.datagram
        + u64::from(s.handshake_done)
        + s.immediate_ack
        + s.max_data
        + s.max_stream_data
        + s.max_streams_bidi
        + s.max_streams_uni
        + s.new_connection_id
        + s.new_token
        + s.path_challenge
        + s.path_response
        + s.ping
        + s.reset_stream
        + s.retire_connection_id
        + s.stream_data_blocked
        + s.streams_blocked_bidi
        + s.streams_blocked_uni
        + s.stop_sending
        + s.stream
}

/// IPv4-mapped IPv6 addresses (seen on a dual-stack socket) as IPv4.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Whether a socket bound at `local` can send to `remote`: an IPv4 socket
/// reaches IPv4 peers, an IPv6 socket IPv6 peers, and IPv4 ones too when it
/// is the dual-stack wildcard.
pub fn usable(local: SocketAddr, remote: SocketAddr) -> bool {
    match local.ip() {
        IpAddr::V4(_) => remote.is_ipv4(),
        IpAddr::V6(ip) => remote.is_ipv6() || ip.is_unspecified(),
    }
}

/// The address to give quinn for `remote` on a socket bound at `local`:
/// IPv4 peers of an IPv6 socket become IPv4-mapped.
pub fn on_socket(local: SocketAddr, remote: SocketAddr) -> SocketAddr {
    match (local.ip(), remote.ip()) {
        (IpAddr::V6(_), IpAddr::V4(v4)) => {
            SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), remote.port())
        }
        _ => remote,
    }
}

/// The refusal a close code stands for (the dialler's side).
pub fn refusal_of(e: &quinn_proto::ConnectionError) -> Option<Refusal> {
    let quinn_proto::ConnectionError::ApplicationClosed(c) = e else {
        return None;
    };
    refusal_of_close(c.error_code.into_inner(), &c.reason)
}

/// Whether the peer closed with `code`.
pub fn closed_with(e: &quinn_proto::ConnectionError, code: u32) -> bool {
    matches!(e, quinn_proto::ConnectionError::ApplicationClosed(c)
        if c.error_code == code.into())
}
