//! NodeCore: every decision a node takes, as a sans-IO state machine (what
//! `quinn-proto`'s `Connection` is to a QUIC connection). See
//! `docs/architecture.md`.
//!
//! Inputs are `handle_*(…, now)` calls, outputs are [`NodeCore::poll_command`]
//! and [`NodeCore::poll_timeout`]. It reads no clock ([`Now`] is given),
//! draws its randomness from the seeded RNG its caller gives, and does no
//! I/O: dials, sends, files, registry requests and FIB snapshots are
//! [`Command`]s. It never panics on any sequence of inputs.
//!
//! After every input it settles: Babel packets out on their tunnels, the
//! FIB published when Babel's selection changed (and the destination
//! counts given to the tunnel driver), the driver's commands applied, until
//! nothing moves.
//!
//! Its parts, one concern per file:
//! - [`boundary`]: what crosses between NodeCore and the packet loop
//!   ([`TunnelEvent`] in, [`TunnelCmd`] out);
//! - [`command`]: NodeCore's outputs to the control loop and its other
//!   inputs (clocks, registry answers);
//! - `tunnels`: the up tunnels, their bring-up, control messages,
//!   suspicion and removal (the tunnel policy and its staged removal are
//!   [`crate::tunnels`]);
//! - `lan`: LAN links (dial, accept, duplicates);
//! - `peers`: the peer DB and peer exchange (the tables are
//!   [`crate::peers`]), address discovery;
//! - `registry`: registry rounds and bootstrap back-off, the CRL in force
//!   and its flooding, certificate renewal;
//! - `network`: live reconfiguration from a newer network configuration;
//! - `reload`: live reconfiguration from the node's own options;
//! - `shortcuts`: the destinations and direct RTTs (tunnels', probed) the
//!   shortcut replacement ranks;
//! - `origins`: route-origin authentication fed with keys, grants and
//!   revocations;
//! - `status`: what `re6st status` shows of it.

pub mod boundary;
pub mod command;
pub mod fuzzing;
mod lan;
mod network;
mod origins;
mod peers;
mod registry;
mod reload;
mod shortcuts;
mod status;
mod tunnels;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use re6st_babel::engine::{Engine, EngineError, Event};
use re6st_babel::wire::RouterId;
use re6st_dataplane::fib::Route;

pub use boundary::{ConnId, DialError, Handshake, NextHopId, TunnelCmd, TunnelEvent, TunnelId};
pub use command::{
    Command, HostIpv4, LanNotice, Now, PeerChange, ProbeError, RegistryReply, RegistryRequest,
};
pub use origins::CertFetchStats;
pub use reload::LiveOptions;
pub use shortcuts::ProbeStats;

use super::config::{CoreConfig, babel_config};
use super::status::LivenessStats;
use crate::addresses::{AddressConfig, Addresses};
use crate::identity::tls::{CaVerifier, Trust};
use crate::identity::{Crl, IdentityError, NetworkConfig, NodeCert, NodeKey, Origins};
use crate::peers::store::StoredPeers;
use crate::peers::{Exchange, PeerDb};
use crate::tunnels::driver::{Driver, PeerKey};
use crate::tunnels::policy::ConfigError;
use registry::RegistrySchedule;
use tunnels::Tunnel;

/// File of the state directory holding the Babel router-id and seqno.
pub const SEQNO_FILE: &str = "babel-seqno";

/// How often the maintenance runs (RTTs, budgets, expiry, address book).
const MAINTENANCE: Duration = Duration::from_millis(500);

/// How often the peer DB is verified again (ages, expiries).
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Commands waiting to be polled, at most: beyond, datagrams (Babel,
/// peer exchange) are dropped and counted; the others always queue (there
/// are at most a few per tunnel).
pub const MAX_COMMANDS: usize = 1 << 16;

/// Rounds of settling after one input, at most (each round moves
/// something; a cycle would be a bug, cut and counted).
const MAX_SETTLE_ROUNDS: usize = 64;

/// Why NodeCore could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The Babel engine refused its configuration.
    #[error("Babel: {0}")]
    Babel(#[from] EngineError),
    /// The tunnel policy refused its configuration.
    #[error("tunnel policy: {0}")]
    Policy(#[from] ConfigError),
    /// The CA or the CRL cannot make a verifier.
    #[error("trust: {0}")]
    Trust(#[from] IdentityError),
    /// A gateway prefix is not usable.
    #[error("--gateway: {0}")]
    Gateway(#[from] crate::gateway::GatewayError),
}

/// What NodeCore starts from.
#[derive(Debug)]
pub struct CoreParts {
    /// Settings.
    pub config: CoreConfig,
    /// The network configuration in force (verified).
    pub network: NetworkConfig,
    /// Our certificate.
    pub cert: NodeCert,
    /// Our key (signs announcements).
    pub key: Arc<NodeKey>,
    /// The CA certificate (DER).
    pub ca_der: Vec<u8>,
    /// The CRL in force, if any.
    pub crl: Option<Crl>,
    /// The UDP address the packet loop is bound to (address discovery).
    pub bound: SocketAddr,
    /// The local interface addresses, listed at start.
    pub local_addresses: Vec<std::net::IpAddr>,
    /// The state directory's seqno file, if there was one.
    pub seqno_file: Option<String>,
    /// The peer DB's durable copy, as read.
    pub stored_peers: StoredPeers,
    /// The RNG every random choice comes from.
    pub rng: StdRng,
}

/// Counters of NodeCore itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CoreStats {
    /// Datagram commands dropped because [`MAX_COMMANDS`] were waiting.
    pub commands_dropped: u64,
    /// Settling cut after [`MAX_SETTLE_ROUNDS`] rounds.
    pub settle_cut: u64,
    /// Inputs given a monotonic time earlier than a previous one (taken as
    /// the previous one).
    pub clock_backwards: u64,
}

/// Every decision of one node.
#[derive(Debug)]
pub struct NodeCore {
    config: CoreConfig,
    network: NetworkConfig,
    cert: NodeCert,
    key: Arc<NodeKey>,
    ca_der: Vec<u8>,
    crl: Option<Crl>,
    verifier: CaVerifier,
    /// Babel, with route origins checked against certificates.
    engine: Engine<Origins>,
    cert_fetch: CertFetchStats,
    driver: Driver,
    db: PeerDb,
    exchange: Exchange<StdRng>,
    addresses: Addresses,
    /// The addresses last announced (to notice changes).
    announced: Vec<SocketAddr>,
    upnp: Option<crate::upnp::Mapping>,
    lan: lan::LanLinks,
    /// Up tunnels and LAN links (also while draining and suspected).
    tunnels: BTreeMap<TunnelId, Tunnel>,
    registry: RegistrySchedule,
    liveness: LivenessStats,
    /// Direct RTTs for the shortcut replacement.
    direct: shortcuts::DirectRtts,
    stats: CoreStats,
    /// NodeCore's own random choices (back-off jitter).
    rng: StdRng,
    fib_dirty: bool,
    routes_dirty: bool,
    next_maintenance: Instant,
    next_purge: Instant,
    next_scan: Instant,
    started: Instant,
    last_now: Instant,
    /// The wall clock of the latest input (for the status).
    last_wall: std::time::SystemTime,
    commands: VecDeque<Command>,
}

fn hex(rid: RouterId) -> String {
    rid.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// The seqno persisted with `rid` in `file` (`"<router-id> <seqno>"`),
/// plus one.
fn persisted_seqno(file: Option<&str>, rid: RouterId) -> Option<u16> {
    let mut it = file?.split_whitespace();
    (it.next()? == hex(rid)).then_some(())?;
    Some(it.next()?.parse::<u16>().ok()?.wrapping_add(1))
}

impl NodeCore {
    /// A node that has just started: no tunnel yet; it asks for what it
    /// needs from its first [`NodeCore::poll_command`].
    pub fn new(p: CoreParts, now: Now) -> Result<Self, CoreError> {
        let CoreParts {
            config,
            network,
            cert,
            key,
            ca_der,
            crl,
            bound,
            local_addresses,
            seqno_file,
            stored_peers,
            mut rng,
        } = p;
        config.gateway.validate(network.network)?;
        let rid = crate::identity::origin::router_id(cert.prefix);
        let seqno = persisted_seqno(seqno_file.as_deref(), rid).unwrap_or_else(|| rng.random());
        let origins = Origins::new(
            config.origins,
            network.network,
            network.gateways.clone(),
            cert.clone(),
            key.clone(),
            (now.mono, now.wall),
        );
        let mut engine =
            Engine::with_origin_auth(origins, babel_config(&network), rid, seqno, now.mono)?;
        engine.add_xroute(cert.prefix.into(), 0, now.mono)?;
        if let Some(subnet) = cert.ipv4 {
            engine.add_xroute(subnet.trunc().into(), 0, now.mono)?;
        }
        for (prefix, metric) in config.gateway.xroutes() {
            engine.add_xroute(prefix, metric, now.mono)?;
        }
        let me = PeerKey {
            serial: cert.serial,
            prefix: cert.prefix,
        };
        let driver = Driver::new(
            me,
            config.policy(&network),
            StdRng::seed_from_u64(rng.random()),
            config.driver,
            now.mono,
        )?;
        let verifier = CaVerifier::new(&Trust::new(&ca_der, crl.as_ref()))?;
        let mut db = PeerDb::new(cert.prefix, config.peer_db);
        db.restore(stored_peers, &verifier, now.wall);
        for signed in &config.seed_peers {
            if let Err(e) = db.insert(signed, &verifier, now.wall) {
                tracing::warn!(error = %e, "a seed peer was refused");
            }
        }
        let exchange = Exchange::new(
            config.exchange,
            StdRng::seed_from_u64(rng.random()),
            now.mono,
        );
        let mut addresses = Addresses::new(
            AddressConfig {
                configured: config.advertise.clone(),
                routable: config.routable.clone(),
                overlay: Some(network.network),
            },
            bound,
        );
        addresses.set_local(local_addresses);
        let registry = RegistrySchedule::new(&config, now.mono);
        let mut core = Self {
            announced: addresses.announce(),
            addresses,
            upnp: None,
            lan: lan::LanLinks::new(config.lan),
            tunnels: BTreeMap::new(),
            registry,
            liveness: LivenessStats::default(),
            direct: shortcuts::DirectRtts::default(),
            stats: CoreStats::default(),
            rng: StdRng::seed_from_u64(rng.random()),
            fib_dirty: true,
            routes_dirty: true,
            next_maintenance: now.mono,
            next_purge: now.mono + PURGE_EVERY,
            next_scan: now.mono + config.address_scan,
            started: now.mono,
            last_now: now.mono,
            last_wall: now.wall,
            commands: VecDeque::new(),
            config,
            network,
            cert,
            key,
            ca_der,
            crl,
            verifier,
            engine,
            cert_fetch: CertFetchStats::default(),
            driver,
            db,
            exchange,
        };
        core.persist_seqno(seqno);
        let stored: Vec<_> = core.db.iter().map(|e| e.signed.clone()).collect();
        for signed in &stored {
            core.learn_announced(signed, now);
        }
        core.push_ipv4();
        core.candidates_changed(now);
        core.settle(now);
        Ok(core)
    }

    // ----- inputs -----

    /// Something the packet loop reports.
    pub fn handle_tunnel_event(&mut self, ev: TunnelEvent, now: Now) {
        let now = self.clamp(now);
        match ev {
            TunnelEvent::Incoming { conn, handshake } => {
                self.handle_incoming(conn, *handshake, now)
            }
            TunnelEvent::Dialled { tunnel, result } => self.handle_dialled(tunnel, result, now),
            TunnelEvent::Babel { tunnel, bytes } => self.handle_babel(tunnel, &bytes, now),
            TunnelEvent::Control { tunnel, msg } => self.handle_control(tunnel, msg, now),
            TunnelEvent::ControlError { tunnel, error } => {
                tracing::info!(%tunnel, %error, "bad control frame, closing the tunnel");
                self.driver.close(
                    tunnel,
                    crate::transport::control::close::PROTOCOL,
                    "bad control frame",
                    now.mono,
                );
            }
            TunnelEvent::Exchange { from, payload } => self.handle_exchange(from, &payload, now),
            TunnelEvent::Path {
                tunnel,
                rtt,
                max_datagram,
            } => self.handle_path(tunnel, rtt, max_datagram),
            TunnelEvent::Silent { tunnel, silent_for } => {
                self.handle_liveness(tunnel, false, silent_for, now);
            }
            TunnelEvent::Heard { tunnel } => {
                self.handle_liveness(tunnel, true, Duration::ZERO, now);
            }
            TunnelEvent::Closed { tunnel, reason } => self.handle_closed(tunnel, &reason, now),
        }
        self.settle(now);
    }

    /// Time passed: call at [`NodeCore::poll_timeout`] (earlier is
    /// harmless).
    pub fn handle_timeout(&mut self, now: Now) {
        let now = self.clamp(now);
        if self.engine.poll_timeout().is_some_and(|t| t <= now.mono) {
            self.engine.handle_timeout(now.mono);
        }
        if self.driver.poll_timeout().is_some_and(|t| t <= now.mono) {
            self.before_refresh(now);
            self.driver.handle_timeout(now.mono);
        }
        self.refresh_proofs(now);
        if self.exchange.poll_timeout() <= now.mono {
            self.exchange_round(now);
        }
        if now.mono >= self.next_maintenance {
            self.next_maintenance = now.mono + MAINTENANCE;
            self.maintenance(now);
        }
        self.registry_timers(now);
        self.settle(now);
    }

    /// What the registry answered to a [`RegistryRequest`].
    pub fn handle_registry(&mut self, reply: RegistryReply, now: Now) {
        let now = self.clamp(now);
        self.handle_registry_reply(reply, now);
        self.settle(now);
    }

    /// Run a registry round now (operator's request).
    pub fn handle_registry_round_now(&mut self, now: Now) {
        let now = self.clamp(now);
        self.registry.round_now(now.mono);
        self.registry_timers(now);
        self.settle(now);
    }

    /// The local interface addresses, as listed after
    /// [`Command::ScanAddresses`].
    pub fn handle_local_addresses(&mut self, ips: Vec<std::net::IpAddr>, now: Now) {
        let now = self.clamp(now);
        self.addresses.set_local(ips);
        self.check_announced(now);
        self.settle(now);
    }

    /// The UPnP mapping changed (`None`: gone).
    pub fn handle_upnp(&mut self, mapping: Option<crate::upnp::Mapping>, now: Now) {
        let now = self.clamp(now);
        self.upnp = mapping;
        self.addresses
            .set_upnp(mapping.map(|m| SocketAddr::V4(m.external)));
        self.check_announced(now);
        self.settle(now);
    }

    /// LAN discovery has news.
    pub fn handle_lan(&mut self, ev: crate::lan::LanEvent, now: Now) {
        let now = self.clamp(now);
        self.handle_lan_event(ev);
        self.settle(now);
    }

    /// The node is stopping: retract every route (the Babel packets that
    /// say so are the last commands), then the caller closes everything.
    pub fn handle_shutdown(&mut self, now: Now) {
        let now = self.clamp(now);
        self.engine.retract_all(now.mono);
        self.settle(now);
    }

    // ----- outputs -----

    /// The next command.
    #[must_use]
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`NodeCore::handle_timeout`] is due next.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        [
            self.engine.poll_timeout(),
            self.driver.poll_timeout(),
            Some(self.exchange.poll_timeout()),
            self.registry.poll_timeout(),
            Some(self.engine.origin_auth().refresh_deadline()),
        ]
        .into_iter()
        .flatten()
        .fold(self.next_maintenance, Instant::min)
    }

    // ----- queries -----

    /// Babel's routes.
    pub fn routes(&self, now: Instant) -> Vec<re6st_babel::engine::RouteInfo> {
        self.engine.routes(now.max(self.last_now))
    }

    /// The peer DB.
    pub fn peers(&self) -> &PeerDb {
        &self.db
    }

    /// The tunnel driver (its policy, its counters).
    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    /// The Babel engine.
    pub fn engine(&self) -> &Engine<Origins> {
        &self.engine
    }

    /// Our certificate (the renewed one once renewed).
    pub fn cert(&self) -> &NodeCert {
        &self.cert
    }

    /// The network configuration in force.
    pub fn network(&self) -> &NetworkConfig {
        &self.network
    }

    /// The CRL in force.
    pub fn crl(&self) -> Option<&Crl> {
        self.crl.as_ref()
    }

    /// NodeCore's own counters.
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// The up tunnels: id, peer prefix, next hop (`None` while its Babel
    /// interface is down: suspected), whether it is a LAN link.
    pub fn tunnels(&self) -> impl Iterator<Item = (TunnelId, Ipv6Net, Option<NextHopId>, bool)> {
        self.tunnels.iter().map(|(t, up)| {
            let hop = (!up.suspected)
                .then(|| self.driver.iface_of(*t))
                .flatten()
                .map(|i| NextHopId(i.0));
            (*t, up.peer.prefix, hop, up.lan)
        })
    }

    /// Checks what must hold between any two inputs: every selected
    /// route goes through an up tunnel whose Babel interface is up (not
    /// suspected, not closed); every up tunnel has its interface; the peer
    /// DB, the LAN tables and the command queue are within their bounds.
    /// `Err` says what broke (a bug).
    pub fn check_invariants(&self) -> Result<(), String> {
        for e in self.engine.fib() {
            let Some(t) = self.driver.tunnel_of(e.iface) else {
                return Err(format!("route {} via {} of no tunnel", e.prefix, e.iface));
            };
            match self.tunnels.get(&t) {
                None => return Err(format!("route {} via {t}, not up", e.prefix)),
                Some(up) if up.suspected => {
                    return Err(format!("route {} via {t}, suspected", e.prefix));
                }
                Some(_) => {}
            }
        }
        if let Some(t) = self
            .tunnels
            .keys()
            .find(|t| self.driver.iface_of(**t).is_none())
        {
            return Err(format!("up tunnel {t} has no interface"));
        }
        if self.db.len() > self.db.config().capacity {
            return Err(format!("peer DB holds {} entries", self.db.len()));
        }
        self.lan.check()?;
        let bound = MAX_COMMANDS + 16 * (self.tunnels.len() + 64);
        if self.commands.len() > bound {
            return Err(format!("{} commands waiting", self.commands.len()));
        }
        Ok(())
    }

    // ----- internals -----

    /// `now`, never earlier than a previous input's.
    fn clamp(&mut self, mut now: Now) -> Now {
        if now.mono < self.last_now {
            self.stats.clock_backwards += 1;
            now.mono = self.last_now;
        }
        self.last_now = now.mono;
        self.last_wall = now.wall;
        self.engine.origin_auth_mut().set_clock(now.mono, now.wall);
        now
    }

    fn push(&mut self, cmd: Command) {
        let droppable = matches!(
            cmd,
            Command::Tunnel(TunnelCmd::SendBabel { .. } | TunnelCmd::SendPacket { .. })
        );
        if droppable && self.commands.len() >= MAX_COMMANDS {
            self.stats.commands_dropped += 1;
            return;
        }
        self.commands.push_back(cmd);
    }

    fn tunnel_cmd(&mut self, cmd: TunnelCmd) {
        self.push(Command::Tunnel(cmd));
    }

    /// Drains every output of the parts until nothing moves.
    fn settle(&mut self, now: Now) {
        self.ask_origin_certs(now);
        for _ in 0..MAX_SETTLE_ROUNDS {
            let mut moved = false;
            while let Some(t) = self.engine.poll_transmit(now.mono) {
                moved = true;
                if let Some(tunnel) = self.driver.tunnel_of(t.iface)
                    && self.tunnels.contains_key(&tunnel)
                {
                    self.tunnel_cmd(TunnelCmd::SendBabel {
                        tunnel,
                        bytes: t.bytes.into(),
                    });
                }
            }
            while let Some(ev) = self.engine.poll_event() {
                match ev {
                    Event::FibChanged(_) => self.fib_dirty = true,
                    Event::SeqnoChanged(s) => self.persist_seqno(s),
                    _ => {}
                }
            }
            if self.fib_dirty {
                self.fib_dirty = false;
                self.routes_dirty = true;
                self.publish_fib();
            }
            if self.routes_dirty {
                self.routes_dirty = false;
                let counts = self.engine.destinations_per_interface();
                self.driver.handle_routes(&counts, now.mono);
            }
            while let Some(cmd) = self.driver.poll_command() {
                moved = true;
                self.apply(cmd, now);
            }
            for change in self.db.take_changes() {
                if let PeerChange::Store { signed, .. } = &change {
                    self.learn_announced(signed, now);
                    moved = true;
                }
                self.push(Command::PersistPeer(change));
            }
            if !moved && !self.fib_dirty && !self.routes_dirty {
                return;
            }
        }
        self.stats.settle_cut += 1;
        tracing::error!("NodeCore did not settle: cut (a bug; please report it)");
    }

    fn publish_fib(&mut self) {
        // Unknown overlay addresses (IPv6 and IPv4) get "reject route",
        // never a detour through a shorter (default) route; our own
        // prefix and IPv4 subnet are local.
        let mut routes: Vec<(IpNet, Route)> =
            vec![(self.network.network.into(), Route::Unreachable)];
        routes.extend(
            self.network
                .ipv4
                .map(|n| (n.trunc().into(), Route::Unreachable)),
        );
        routes.extend(
            self.engine
                .fib()
                .into_iter()
                .map(|e| (e.prefix, Route::Via(NextHopId(e.iface.0)))),
        );
        routes.push((self.cert.prefix.into(), Route::Local));
        routes.extend(self.cert.ipv4.map(|s| (s.trunc().into(), Route::Local)));
        routes.extend(
            self.config
                .gateway
                .fib_routes()
                .map(|(p, r)| (IpNet::V6(p), r)),
        );
        self.push(Command::PublishFib(routes));
    }

    /// Tells the host what IPv4 it has in the overlay (nothing when the
    /// network has no IPv4).
    fn push_ipv4(&mut self) {
        let v4 = HostIpv4 {
            subnet: self.cert.ipv4,
            network: self.network.ipv4,
        };
        if v4.subnet.is_some() || v4.network.is_some() {
            self.push(Command::Ipv4(v4));
        }
    }

    /// Our certificate's IPv4 subnet changed (a renewal from a registry
    /// that gained or changed `--ipv4`): announce the new one, retract
    /// the old one, and tell the host.
    fn change_ipv4_subnet(&mut self, old: Option<Ipv4Net>, now: Now) {
        let new = self.cert.ipv4;
        if old == new {
            return;
        }
        if let Some(o) = old {
            self.engine.remove_xroute(o.trunc().into(), now.mono);
        }
        if let Some(n) = new
            && let Err(e) = self.engine.add_xroute(n.trunc().into(), 0, now.mono)
        {
            tracing::warn!(subnet = %n, error = %e, "cannot announce our IPv4 subnet");
        }
        tracing::info!(old = ?old, new = ?new, "our IPv4 subnet changed");
        self.fib_dirty = true;
        self.push_ipv4();
    }

    fn persist_seqno(&mut self, seqno: u16) {
        let rid = hex(self.engine.router_id());
        self.push(Command::Persist {
            file: SEQNO_FILE,
            bytes: format!("{rid} {seqno}\n").into_bytes(),
        });
    }

    fn maintenance(&mut self, now: Now) {
        self.tunnel_maintenance(now);
        if now.mono >= self.next_purge {
            self.next_purge = now.mono + PURGE_EVERY;
            if !self.db.purge(&self.verifier, now.wall).is_empty() {
                self.candidates_changed(now);
            }
            self.purge_origins(now);
        }
        if now.mono >= self.next_scan {
            self.next_scan = now.mono + self.config.address_scan;
            self.push(Command::ScanAddresses);
        }
        self.addresses.handle_timeout(now.mono);
        self.check_announced(now);
    }
}
