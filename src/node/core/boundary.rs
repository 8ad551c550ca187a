//! What crosses between NodeCore and the packet loop (the code that owns
//! the sockets and the connections): [`TunnelEvent`]s in, [`TunnelCmd`]s
//! out. Both sides speak in tunnels; see `docs/architecture.md`.
//!
//! A **tunnel** is a connection to one peer that carries IPv6 packets,
//! Babel packets and control messages. NodeCore names it with a
//! [`TunnelId`] when it decides to dial ([`TunnelCmd::Dial`]) or to accept
//! ([`TunnelCmd::Accept`]); ids are never reused. An incoming connection is
//! not a tunnel until NodeCore accepts it: until then the packet loop names
//! it by its own [`ConnId`]. A tunnel that carries traffic has a
//! [`NextHopId`] (small, reused only after a quarantine), the name the FIB
//! routes through; the packet loop maps it to the connection.
//!
//! Events are few per tunnel and second (the packet loop forwards IPv6
//! packets itself and never reports them); a late event about a tunnel
//! NodeCore no longer knows is ignored.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;

use crate::identity::{Crl, NodeCert};
use crate::transport::control::close;
use crate::transport::control::{Control, ControlError};
use crate::tunnels::policy::{Failure, Refusal};

pub use crate::tunnels::policy::TunnelId;
pub use re6st_dataplane::nexthop::NextHopId;

/// The packet loop's name for an incoming connection NodeCore has not
/// answered yet. Unique among the connections the packet loop holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// A completed handshake: mutual TLS with the CA and the CRL in force, then
/// the `Open`/`Accept` exchange on the control stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The peer's certificate, checked against the CA and the CRL. For a
    /// dial, it is the certificate of the overlay address dialled.
    pub peer: NodeCert,
    /// The number of the peer's CRL (0: none), from `Open` or `Accept`.
    pub peer_crl: u64,
    /// The peer's UDP address.
    pub remote: SocketAddr,
    /// Our local address the connection reached (incoming connections, when
    /// the socket tells it): address discovery learns which are reachable.
    pub local_ip: Option<IpAddr>,
    /// Our address as the peer saw it (dials: from the peer's `Accept`).
    pub observed: Option<SocketAddr>,
    /// The handshake's round-trip time.
    pub rtt: Duration,
    /// The largest datagram the connection carries now (`None`: datagrams
    /// are not available).
    pub max_datagram: Option<usize>,
}

/// Why a dial did not give a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialError {
    /// What the tunnel policy makes of it: the peer refused (with its
    /// reason), or it is unreachable for now (backed off).
    pub failure: Failure,
    /// What happened, for the logs.
    pub reason: String,
    /// The address answered with another node's certificate, valid for our
    /// CA: the peer-DB entry we dialled is stale (the node was replaced).
    pub answered_by: Option<Box<NodeCert>>,
}

impl DialError {
    /// An unreachable peer, for `reason`.
    pub fn unreachable(reason: impl Into<String>) -> Self {
        Self {
            failure: Failure::Unreachable,
            reason: reason.into(),
            answered_by: None,
        }
    }
}

/// Packet loop to NodeCore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelEvent {
    /// A peer completed the handshake and sent `Open`: NodeCore answers
    /// with [`TunnelCmd::Accept`] or [`TunnelCmd::Refuse`].
    Incoming {
        /// The connection.
        conn: ConnId,
        /// The handshake.
        handshake: Box<Handshake>,
    },
    /// A [`TunnelCmd::Dial`] finished. On success NodeCore answers with
    /// [`TunnelCmd::Up`] (the tunnel carries traffic from now on) or
    /// [`TunnelCmd::Close`] (no longer wanted).
    Dialled {
        /// The tunnel.
        tunnel: TunnelId,
        /// The handshake, or why not.
        result: Result<Box<Handshake>, DialError>,
    },
    /// A Babel packet arrived on an up tunnel.
    Babel {
        /// The tunnel.
        tunnel: TunnelId,
        /// The packet (Babel header and body).
        bytes: Bytes,
    },
    /// A control message arrived on the tunnel's control stream.
    Control {
        /// The tunnel.
        tunnel: TunnelId,
        /// The message.
        msg: Control,
    },
    /// The tunnel's control stream carried garbage (the stream is dead).
    ControlError {
        /// The tunnel.
        tunnel: TunnelId,
        /// What was wrong.
        error: ControlError,
    },
    /// A peer-exchange packet for this node's address (the UDP payload),
    /// from overlay address `from` (any node, not only a neighbour).
    Exchange {
        /// The sender's overlay address (from the IPv6 header).
        from: Ipv6Addr,
        /// The UDP payload.
        payload: Bytes,
    },
    /// The tunnel's round-trip time or datagram budget changed noticeably.
    Path {
        /// The tunnel.
        tunnel: TunnelId,
        /// The transport's RTT estimate.
        rtt: Duration,
        /// The largest datagram it carries now.
        max_datagram: Option<usize>,
    },
    /// The liveness clock: nothing authenticated heard on the tunnel for
    /// the suspect time (plus two round trips).
    Silent {
        /// The tunnel.
        tunnel: TunnelId,
        /// How long it has been silent.
        silent_for: Duration,
    },
    /// A silent tunnel was heard again.
    Heard {
        /// The tunnel.
        tunnel: TunnelId,
    },
    /// The connection ended (peer closed, idle timeout, transport error).
    /// One that follows a [`TunnelCmd::Close`] is ignored.
    Closed {
        /// The tunnel.
        tunnel: TunnelId,
        /// Why, for the logs.
        reason: String,
    },
}

/// NodeCore to the packet loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelCmd {
    /// Connect to the node whose overlay address is `peer`, at the first of
    /// `addresses` that answers; report [`TunnelEvent::Dialled`]. The
    /// peer's certificate must be the one of `peer`.
    Dial {
        /// The tunnel.
        tunnel: TunnelId,
        /// The overlay address (`prefix::1`) the certificate must hold.
        peer: Ipv6Addr,
        /// Its UDP addresses, best first.
        addresses: Vec<SocketAddr>,
        /// The port it listens on over TCP, at the same IPs (`None`: the
        /// addresses' own ports).
        tcp_port: Option<u16>,
    },
    /// Give up a dial (a connection that completes anyway is closed).
    CancelDial {
        /// The tunnel.
        tunnel: TunnelId,
    },
    /// Accept an incoming connection as `tunnel`, routed as `hop`: send
    /// `reply` (a [`Control::Accept`]) first on its control stream.
    Accept {
        /// The connection.
        conn: ConnId,
        /// Its tunnel id from now on.
        tunnel: TunnelId,
        /// Its next-hop id.
        hop: NextHopId,
        /// The first control message.
        reply: Control,
    },
    /// Refuse an incoming connection: close it with `code` and `reason`
    /// (the dialler reports the refusal from them).
    Refuse {
        /// The connection.
        conn: ConnId,
        /// A close code ([`crate::transport::control::close`]).
        code: u32,
        /// Human-readable reason.
        reason: String,
    },
    /// A dialled tunnel is kept: it carries traffic from now on, routed as
    /// `hop`.
    Up {
        /// The tunnel.
        tunnel: TunnelId,
        /// Its next-hop id.
        hop: NextHopId,
    },
    /// Send a Babel packet as a datagram (dropped if it cannot be sent).
    SendBabel {
        /// The tunnel.
        tunnel: TunnelId,
        /// The packet.
        bytes: Bytes,
    },
    /// Send a control message on the tunnel's reliable stream, in order.
    SendControl {
        /// The tunnel.
        tunnel: TunnelId,
        /// The message.
        msg: Control,
    },
    /// An IPv6 packet this node originates (peer exchange): route it by the
    /// FIB like a packet from the host.
    SendPacket {
        /// The packet.
        bytes: Bytes,
    },
    /// Close the tunnel's connection (or cancel its dial) with `code` and
    /// `reason`; its next hop is gone at once.
    Close {
        /// The tunnel.
        tunnel: TunnelId,
        /// A close code ([`crate::transport::control::close`]).
        code: u32,
        /// Human-readable reason.
        reason: String,
    },
    /// A newer CRL: new handshakes check it. (NodeCore closes the tunnels
    /// of revoked peers itself.)
    SetCrl(Box<Crl>),
    /// Our renewed certificate (same key, same prefix) for new handshakes.
    SetIdentity(Box<NodeCert>),
}

/// The close code of a refusal (the dialler reads the refusal back from
/// it, [`refusal_of_close`]).
pub fn refusal_code(r: &Refusal) -> u32 {
    match r {
        Refusal::Full { .. } => close::REFUSED_FULL,
        Refusal::Duplicate => close::REFUSED_DUPLICATE,
        _ => close::REFUSED_LOOPBACK,
    }
}

/// The refusal a close code and reason stand for (the dialler's side).
pub fn refusal_of_close(code: u64, reason: &[u8]) -> Option<Refusal> {
    match u32::try_from(code).ok()? {
        close::REFUSED_FULL => {
            // The reason is the refusal's text: "full: T tunnels of at most M".
            let text = String::from_utf8_lossy(reason);
            let mut nums = text
                .split(|ch: char| !ch.is_ascii_digit())
                .filter_map(|s| s.parse::<usize>().ok());
            Some(Refusal::Full {
                tunnels: nums.next().unwrap_or(0),
                max: nums.next().unwrap_or(0),
            })
        }
        close::REFUSED_DUPLICATE => Some(Refusal::Duplicate),
        close::REFUSED_LOOPBACK => Some(Refusal::Loopback),
        _ => None,
    }
}

/// IPv4-mapped IPv6 addresses (seen on a dual-stack socket) as IPv4.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}
