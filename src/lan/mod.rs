//! LAN discovery: nodes on the same link find each other and connect
//! directly, without waiting for the tunnel policy to pick them by chance
//! and without a detour through other overlay nodes (report §7).
//!
//! # Why a signed beacon, not Babel on the LAN
//!
//! re6stnet runs babeld on LAN interfaces and lets the kernel route
//! between LAN neighbours. Here every packet path goes through the one TUN
//! and a QUIC connection (docs/design.md), and Babel on a raw multicast
//! socket would be unauthenticated: any host on the LAN could announce any
//! prefix and pull the overlay's traffic to itself (a weakness other
//! overlays that run routing on the LAN have had). So a node multicasts a
//! small **beacon** (its certificate, its QUIC port, a timestamp, signed
//! with its key; [`beacon`]) every
//! [`LanConfig::interval`] to `ff12::7265:3673` (transient link-local
//! scope, "re6s") on port [`DEFAULT_PORT`]; a node that hears one checks it
//! against the CA and CRL and opens a **LAN link**: an ordinary QUIC
//! connection with mutual TLS to the sender's link-local address. Babel
//! runs over it like over any tunnel, so routing, RTT metric, encryption
//! and revocation are the same, and the RTT of a LAN link makes it the
//! cheapest path. LAN links are not counted against `k` (the node keeps its
//! `k` random tunnels for the rest of the overlay) and are never replaced by
//! the refresh.
//!
//! Beacons go only to the interfaces the operator names (`--lan IFACE`, or
//! `--lan all`): announcing oneself on every network a laptop joins is a
//! choice, not a default (re6stnet's `-i` is explicit too).
//!
//! # Parts
//! - [`beacon`]: the wire format, signing and verification;
//! - [`discovery`]: sans-IO table of heard nodes and the dial decision;
//! - [`LanService`]: the task that owns the multicast socket and runs
//!   discovery; the node gets [`LanEvent`]s and reports its LAN links.

pub mod beacon;
pub mod discovery;
pub mod fuzzing;
mod socket;

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnet::Ipv6Net;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use beacon::{BeaconError, BeaconRepr};
pub use discovery::{Discovery, DiscoveryConfig, DiscoveryStats, LanEvent, LanPeer};
pub use socket::LanSocket;

use crate::identity::tls::CaVerifier;
use crate::identity::{NodeCert, NodeKey};

/// Default UDP port of beacons (the QUIC default plus one).
pub const DEFAULT_PORT: u16 = 4327;
/// The beacon group: transient, link-local scope.
pub const GROUP: Ipv6Addr = Ipv6Addr::new(0xff12, 0, 0, 0, 0, 0, 0x7265, 0x3673);

/// Which interfaces carry beacons.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LanInterfaces {
    /// None: LAN discovery is off.
    #[default]
    Off,
    /// Every interface that is up, multicast-capable, not loopback and not
    /// point-to-point (so not our TUN).
    All,
    /// These interfaces, by name.
    Named(Vec<String>),
}

impl LanInterfaces {
    /// From the `--lan` values: empty is off, `all` is every interface.
    pub fn from_args(names: &[String]) -> Self {
        if names.is_empty() {
            Self::Off
        } else if names.iter().any(|n| n == "all") {
            Self::All
        } else {
            Self::Named(names.to_vec())
        }
    }
}

/// LAN discovery settings.
#[derive(Debug, Clone)]
pub struct LanConfig {
    /// Where to send and hear beacons.
    pub interfaces: LanInterfaces,
    /// UDP port of beacons.
    pub port: u16,
    /// Beacon period (the other timers follow from it).
    pub interval: Duration,
}

impl Default for LanConfig {
    fn default() -> Self {
        Self {
            interfaces: LanInterfaces::Off,
            port: DEFAULT_PORT,
            interval: Duration::from_secs(10),
        }
    }
}

/// Inputs to a running [`LanService`].
#[derive(Debug)]
pub enum LanCmd {
    /// A LAN link to this node is up.
    LinkUp(Ipv6Net),
    /// It went down; `failed`: our dial failed.
    LinkDown {
        /// The node.
        prefix: Ipv6Net,
        /// Whether it was a failed dial.
        failed: bool,
    },
    /// A new CRL (or CA) is in force.
    Verifier(Arc<CaVerifier>),
    /// Our certificate was renewed.
    Identity(Box<NodeCert>, Arc<NodeKey>),
    /// Send the status.
    Status(tokio::sync::oneshot::Sender<LanStatus>),
}

/// What LAN discovery knows (`re6st status`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LanStatus {
    /// Interfaces beacons go to.
    pub interfaces: Vec<String>,
    /// Nodes heard: prefix, link-local address, whether a link is up.
    pub neighbours: Vec<(Ipv6Net, String, bool)>,
    /// Beacon counters.
    pub stats: DiscoveryStats,
}

/// A running LAN discovery task.
#[derive(Debug)]
pub struct LanService {
    /// Commands in.
    pub cmd: mpsc::Sender<LanCmd>,
    task: JoinHandle<()>,
}

impl LanService {
    /// Binds the beacon socket and starts the task on the current runtime.
    /// `quic_port` is the port announced in beacons; events go to `events`.
    pub fn spawn(
        config: LanConfig,
        cert: NodeCert,
        key: Arc<NodeKey>,
        verifier: Arc<CaVerifier>,
        quic_port: u16,
        events: mpsc::Sender<LanEvent>,
    ) -> std::io::Result<Self> {
        let socket = LanSocket::bind(config.port)?;
        let (cmd, rx) = mpsc::channel(64);
        let task = tokio::spawn(run(Run {
            discovery: Discovery::new(
                cert.prefix,
                cert.serial,
                DiscoveryConfig::with_interval(config.interval),
            ),
            config,
            socket,
            cert,
            key,
            verifier,
            quic_port,
            events,
            rx,
            signed: None,
        }));
        Ok(Self { cmd, task })
    }
}

impl Drop for LanService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Run {
    config: LanConfig,
    socket: LanSocket,
    discovery: Discovery,
    cert: NodeCert,
    key: Arc<NodeKey>,
    verifier: Arc<CaVerifier>,
    quic_port: u16,
    events: mpsc::Sender<LanEvent>,
    rx: mpsc::Receiver<LanCmd>,
    /// Our signed beacon and when it was signed: the same bytes go out
    /// until [`RESIGN`], so receivers compare bytes instead of checking a
    /// signature every period (ECDSA signatures differ at each signing).
    signed: Option<(Vec<u8>, Instant)>,
}

/// How long one signed beacon is re-sent (well inside the receivers'
/// timestamp tolerance, [`beacon::MAX_SKEW`]).
const RESIGN: Duration = Duration::from_secs(60);

async fn run(mut r: Run) {
    let mut buf = vec![0u8; 2048];
    let mut next_beacon = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_beacon {
            r.beacon();
            next_beacon = now + r.config.interval;
        }
        r.discovery.handle_timeout(now);
        while let Some(ev) = r.discovery.poll_event() {
            if r.events.send(ev).await.is_err() {
                return; // the node is gone
            }
        }
        let wake = r
            .discovery
            .poll_timeout()
            .map_or(next_beacon, |t| t.min(next_beacon));
        tokio::select! {
            got = r.socket.recv(&mut buf) => match got {
                Ok((n, from)) => {
                    let (wall, now) = (SystemTime::now(), Instant::now());
                    r.discovery.handle_beacon(from, &buf[..n], &r.verifier, wall, now);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "LAN socket receive error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            cmd = r.rx.recv() => match cmd {
                Some(c) => r.handle(c),
                None => return,
            },
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

impl Run {
    /// Rescans the interfaces (they come and go) and sends our beacon on
    /// each.
    fn beacon(&mut self) {
        self.socket.refresh_interfaces(&self.config.interfaces);
        let now = Instant::now();
        if self
            .signed
            .as_ref()
            .is_none_or(|(_, at)| now.saturating_duration_since(*at) >= RESIGN)
        {
            match BeaconRepr::sign(self.quic_port, SystemTime::now(), &self.cert, &self.key) {
                Ok(b) => self.signed = Some((b, now)),
                Err(e) => tracing::warn!(error = %e, "cannot sign our LAN beacon"),
            }
        }
        if let Some((b, _)) = &self.signed {
            self.socket.send_all(b, self.config.port);
        }
    }

    fn handle(&mut self, cmd: LanCmd) {
        let now = Instant::now();
        match cmd {
            LanCmd::LinkUp(p) => self.discovery.handle_link_up(&p),
            LanCmd::LinkDown { prefix, failed } => {
                self.discovery.handle_link_down(&prefix, failed, now);
            }
            LanCmd::Verifier(v) => self.verifier = v,
            LanCmd::Identity(cert, key) => {
                self.discovery.set_serial(cert.serial);
                self.cert = *cert;
                self.key = key;
                self.signed = None;
            }
            LanCmd::Status(reply) => {
                let _ = reply.send(LanStatus {
                    interfaces: self.socket.interface_names(),
                    neighbours: self
                        .discovery
                        .peers()
                        .map(|(p, up)| (p.prefix, p.addr.to_string(), up))
                        .collect(),
                    stats: self.discovery.stats().clone(),
                });
            }
        }
    }
}
