//! NodeCore's outputs to the control loop ([`Command`]) and the inputs
//! that do not come from the packet loop: the clocks ([`Now`]) and the
//! registry's answers ([`RegistryReply`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use re6st_dataplane::fib::Route;

use super::boundary::TunnelCmd;
use crate::identity::tls::CaVerifier;
use crate::identity::{Crl, NetworkConfig, NodeCert, SignedAnnouncement, SignedNetworkConfig};
pub use crate::peers::PeerChange;

/// The two clocks, read once per wake-up by the loop that drives NodeCore.
///
/// `mono` orders everything NodeCore schedules; `wall` dates what is
/// signed or checked against certificates (announcements, validity,
/// status). The wall clock may jump either way; NodeCore never derives a
/// deadline from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub mono: Instant,
    /// Wall-clock time.
    pub wall: SystemTime,
}

impl Now {
    /// Both clocks, read now (the loops' single call site).
    pub fn read() -> Self {
        Self {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The wall clock since the Unix epoch (zero if it is set before it).
    pub fn since_unix(&self) -> Duration {
        self.wall.duration_since(UNIX_EPOCH).unwrap_or_default()
    }
}

/// The host's IPv4 side: what it should have on its TUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostIpv4 {
    /// The node's IPv4 subnet (from its certificate); the host takes its
    /// first address ([`crate::identity::ipv4::node_address_v4`]).
    pub subnet: Option<Ipv4Net>,
    /// The overlay's IPv4 network (from the signed network configuration),
    /// routed into the TUN.
    pub network: Option<Ipv4Net>,
}

impl HostIpv4 {
    /// The node's IPv4 address, if it has a subnet.
    pub fn address(&self) -> Option<std::net::Ipv4Addr> {
        self.subnet.map(crate::identity::ipv4::node_address_v4)
    }
}

/// What NodeCore asks of the code around it.
#[derive(Debug, Clone)]
pub enum Command {
    /// For the packet loop.
    Tunnel(TunnelCmd),
    /// The routes changed: build a FIB snapshot of these and swap it in.
    PublishFib(Vec<(IpNet, Route)>),
    /// IPv4 inside the overlay, given at start and whenever the
    /// certificate or the network configuration changes it: the host puts
    /// the node's IPv4 address on its TUN and routes the overlay's IPv4
    /// network into it.
    Ipv4(HostIpv4),
    /// Write a file of the state directory (atomically; a failure is
    /// logged and the node runs on from memory).
    Persist {
        /// The file name ([`crate::state_dir::files`], [`crate::node::SEQNO_FILE`]).
        file: &'static str,
        /// Its new contents.
        bytes: Vec<u8>,
    },
    /// Change the peer DB's durable copy the same way as the peer DB.
    PersistPeer(PeerChange),
    /// Ask the registry (HTTPS); the answer comes back as
    /// [`RegistryReply`]s, the last one [`RegistryReply::Done`],
    /// [`RegistryReply::RoundFailed`], [`RegistryReply::Bootstrapped`] or
    /// [`RegistryReply::BootstrapFailed`].
    Registry(RegistryRequest),
    /// Tell LAN discovery.
    Lan(LanNotice),
    /// List the local interface addresses now and give them to
    /// `NodeCore::handle_local_addresses`.
    ScanAddresses,
    /// Measure the underlay RTT to a peer that has no tunnel with us (at
    /// one of its addresses, tried in turn), and give it, or why not, to
    /// `NodeCore::handle_probe_rtt`: the shortcut replacement's estimate
    /// of a direct tunnel.
    ProbeRtt {
        /// The peer's prefix (the answer names it).
        peer: Ipv6Net,
        /// Its announced addresses.
        addresses: Vec<SocketAddr>,
    },
}

/// Why a [`Command::ProbeRtt`] gave no RTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// No answer at any address in time (lost, down, or unreachable
    /// from here).
    #[error("no answer")]
    Lost,
    /// This shell cannot probe: no more probes are asked.
    #[error("probing is not supported here")]
    Unsupported,
}

/// A request to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryRequest {
    /// Ask for up to `n` peers' announcements.
    Bootstrap {
        /// How many.
        n: u32,
    },
    /// The regular round: announce `announcement` (when we have an
    /// address), fetch the CRL and the network configuration, renew the
    /// certificate when it is due.
    Round {
        /// Our signed announcement.
        announcement: Option<SignedAnnouncement>,
    },
}

/// What the registry answered.
#[derive(Debug, Clone)]
pub enum RegistryReply {
    /// Signed announcements of other nodes (NodeCore verifies them).
    Bootstrapped(Vec<SignedAnnouncement>),
    /// The registry's CRL (checked against the CA).
    Crl(Box<Crl>),
    /// Our renewed certificate (checked: our key, our prefix, the CA).
    Renewed(Box<NodeCert>),
    /// From when the registry renews our current certificate.
    RenewAfter(std::time::SystemTime),
    /// The network configuration (verified against the CA), and its signed
    /// form to persist. NodeCore adopts it only if it is newer.
    Network {
        /// The configuration.
        config: Box<NetworkConfig>,
        /// As signed by the CA.
        signed: Box<SignedNetworkConfig>,
    },
    /// A round completed.
    Done,
    /// A round failed: the registry could not be reached, or refused a
    /// step; why.
    RoundFailed(String),
    /// A bootstrap request failed; why.
    BootstrapFailed(String),
}

/// What LAN discovery must know.
#[derive(Debug, Clone)]
pub enum LanNotice {
    /// A LAN link to this node is up.
    LinkUp(Ipv6Net),
    /// It went down; `failed`: our dial failed.
    LinkDown {
        /// The node.
        prefix: Ipv6Net,
        /// Whether it was a failed dial.
        failed: bool,
    },
    /// A new CRL is in force: check beacons with this verifier.
    Verifier(Arc<CaVerifier>),
    /// Our certificate was renewed: sign beacons with it.
    Identity(Box<NodeCert>),
}
