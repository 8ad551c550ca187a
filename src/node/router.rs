//! The router task: the one owner of the node's control state — the Babel
//! engine, the tunnel driver (and its policy), the peer DB and the
//! peer-exchange schedule. Everything else talks to it through
//! [`RouterIn`] messages; the packet path never waits for it.
//!
//! The loop: wait for a message or the earliest deadline (engine, driver,
//! exchange, maintenance), handle it, then flush: Babel packets out on
//! their tunnels, FIB published on change (and destination counts to the
//! driver), driver commands applied, until nothing moves.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ipnet::{IpNet, Ipv6Net};
use rand::SeedableRng;
use rand::rngs::StdRng;
use re6st_babel::engine::{Engine, Event, IfaceId, InterfaceKind, MIN_BUDGET};
use re6st_dataplane::fib::{Fib, Route};
use re6st_dataplane::nexthop::{NextHop, NextHopId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::core::DialError;
use super::edges::Edges;
use super::link::TunnelLink;
use super::path::{PacketPath, PathShared};
use super::registry::{RegistryCmd, RegistryEvent};
use super::status::{
    LivenessStats, NodeStatus, ProbeRoundStatus, ProbeStatus, RegistryStatus, TunnelStatus,
};
use super::tunnel::{self, Established};
use super::{NodeConfig, persist};
use crate::identity::tls::{CaVerifier, Trust};
use crate::identity::{
    Crl, NetworkConfig, NodeCert, NodeKey, PROTOCOL_VERSION, PeerAnnouncement, SignedAnnouncement,
    node_address, unix_secs,
};
use crate::peers::wire::{self, ExchangeMessage};
use crate::peers::{Exchange, Inserted, PeerDb, PeerEntry};
use crate::registry::backoff::Backoff;
use crate::transport::Transport;
use crate::transport::control::{self, Control, ControlError, close};
use crate::tunnels::driver::{Command, Dialled, Driver, PeerKey};
use crate::tunnels::policy::{Direction, TunnelId};

/// Messages to the router.
pub(crate) enum RouterIn {
    /// A Babel packet received on a tunnel.
    Babel { iface: IfaceId, bytes: Bytes },
    /// A peer-exchange message for us (UDP payload).
    Exchange { from: Ipv6Addr, payload: Bytes },
    /// A peer dialled us and sent `Open`.
    Incoming(Box<Established>),
    /// One of our dials finished.
    Dialled {
        tunnel: TunnelId,
        result: Result<Box<Established>, DialError>,
    },
    /// A control message on a tunnel.
    Control { tunnel: TunnelId, msg: Control },
    /// A tunnel's control stream carried garbage.
    ControlError {
        tunnel: TunnelId,
        error: ControlError,
    },
    /// A tunnel fell silent (`alive: false`) or was heard again
    /// ([`tunnel::liveness`]).
    Liveness {
        tunnel: TunnelId,
        alive: bool,
        silent: Duration,
    },
    /// A tunnel's connection ended.
    Closed {
        tunnel: TunnelId,
        error: quinn::ConnectionError,
    },
    /// What the registry task learned.
    Registry(RegistryEvent),
    /// Run a registry round now.
    RegistryRound,
    /// Status for the control API.
    Status(oneshot::Sender<NodeStatus>),
    /// Babel's routes.
    Routes(oneshot::Sender<Vec<re6st_babel::engine::RouteInfo>>),
    /// The peer DB.
    Peers(oneshot::Sender<Vec<PeerEntry>>),
    /// Retract routes, close tunnels, stop.
    Shutdown(oneshot::Sender<()>),
    /// Apply local options re-read from the configuration file
    /// ([`reload`]); the reply names what changed.
    Reconfigure(
        reload::LiveOptions,
        oneshot::Sender<Result<Vec<&'static str>, String>>,
    ),
    /// A LAN link dial finished ([`edges`]).
    LanDialled {
        peer: crate::lan::LanPeer,
        result: Result<Box<Established>, DialError>,
    },
}

mod edges;
pub(crate) mod reload;

/// An up tunnel's runtime objects.
struct Up {
    link: Arc<TunnelLink>,
    control: mpsc::Sender<Control>,
    peer: NodeCert,
    direction: Direction,
    since: Instant,
    /// The peer's CRL number, as last known.
    peer_crl: u64,
    budget: usize,
    /// A LAN link, not one of the policy's tunnels.
    lan: bool,
    /// Silent for the suspect time: its Babel interface is down (routes
    /// moved away), the connection is kept.
    suspected: bool,
}

/// Added to a draining tunnel's Babel cost: worse than any real path, so
/// every route leaves it as soon as an alternative is feasible, yet finite,
/// so a destination with no alternative keeps using it until it closes.
const DRAIN_COST: u16 = 0x4000;

/// How often the maintenance runs (RTTs, budgets, expiry, retries).
const MAINTENANCE: Duration = Duration::from_millis(500);

/// Fixed inputs of the router.
pub(crate) struct RouterParts {
    pub(crate) config: NodeConfig,
    pub(crate) network: NetworkConfig,
    pub(crate) cert: NodeCert,
    pub(crate) key: Arc<NodeKey>,
    pub(crate) ca_der: Vec<u8>,
    pub(crate) transport: Arc<Transport>,
    pub(crate) shared: Arc<PathShared>,
    pub(crate) engine: Engine,
    pub(crate) driver: Driver,
    pub(crate) db: PeerDb,
    pub(crate) exchange: Exchange<rand::rngs::StdRng>,
    pub(crate) rx: mpsc::Receiver<RouterIn>,
    pub(crate) tx: mpsc::Sender<RouterIn>,
    pub(crate) registry: Option<(String, mpsc::Sender<RegistryCmd>)>,
    pub(crate) edges: Edges,
}

pub(crate) struct Router {
    config: NodeConfig,
    network: NetworkConfig,
    cert: NodeCert,
    key: Arc<NodeKey>,
    ca_der: Vec<u8>,
    verifier: CaVerifier,
    transport: Arc<Transport>,
    shared: Arc<PathShared>,
    path: PacketPath,
    engine: Engine,
    driver: Driver,
    db: PeerDb,
    exchange: Exchange<rand::rngs::StdRng>,
    rx: mpsc::Receiver<RouterIn>,
    tx: mpsc::Sender<RouterIn>,
    registry: Option<(String, mpsc::Sender<RegistryCmd>)>,
    registry_status: RegistryStatus,
    next_round: Instant,
    /// A round is with the registry task.
    round_busy: bool,
    /// Waits between tries of a failing round.
    registry_backoff: Backoff,
    /// The router's own random choices (the back-off's jitter).
    rng: StdRng,
    /// From when the registry renews our certificate, as it said last.
    renew_after: Option<SystemTime>,
    next_bootstrap: Option<Instant>,
    bootstrap_delay: Duration,
    bootstrap_busy: bool,
    tunnels: HashMap<TunnelId, Up>,
    dials: HashMap<TunnelId, AbortHandle>,
    /// Address discovery, UPnP, LAN discovery, gateway.
    edges: Edges,
    /// The last registry round forced by an address change.
    forced_round: Option<Instant>,
    liveness: LivenessStats,
    fib_dirty: bool,
    routes_dirty: bool,
    next_maintenance: Instant,
    next_purge: Instant,
    started: Instant,
}

impl Router {
    pub(crate) fn new(p: RouterParts) -> anyhow::Result<Self> {
        let now = Instant::now();
        let verifier = CaVerifier::new(&Trust::new(&p.ca_der, p.transport.crl().as_ref()))?;
        let path = PacketPath::new(p.shared.clone());
        let bootstrap_delay = p.config.bootstrap_retry;
        Ok(Self {
            verifier,
            path,
            registry_status: RegistryStatus {
                url: p.registry.as_ref().map(|(u, _)| u.clone()),
                ..RegistryStatus::default()
            },
            next_round: now,
            round_busy: false,
            registry_backoff: Backoff::new(
                p.config.registry_retry,
                p.config.registry_retry_max.min(p.config.registry_interval),
            ),
            rng: match p.config.seed {
                Some(s) => StdRng::seed_from_u64(s ^ 0x0072_656e_6577),
                None => rand::make_rng(),
            },
            renew_after: None,
            next_bootstrap: Some(now),
            bootstrap_delay,
            bootstrap_busy: false,
            tunnels: HashMap::new(),
            dials: HashMap::new(),
            forced_round: None,
            liveness: LivenessStats::default(),
            fib_dirty: true,
            routes_dirty: true,
            next_maintenance: now,
            next_purge: now + Duration::from_secs(3600),
            started: now,
            config: p.config,
            network: p.network,
            cert: p.cert,
            key: p.key,
            ca_der: p.ca_der,
            transport: p.transport,
            shared: p.shared,
            engine: p.engine,
            driver: p.driver,
            db: p.db,
            exchange: p.exchange,
            rx: p.rx,
            tx: p.tx,
            registry: p.registry,
            edges: p.edges,
        })
    }

    fn me(&self) -> Ipv6Addr {
        self.cert.address
    }

    /// The router's loop; returns when shut down or when every sender is
    /// gone.
    pub(crate) async fn run(mut self) {
        let now = Instant::now();
        self.candidates_changed(now);
        self.flush(now);
        loop {
            let deadline = self.deadline();
            let (msg, edge) = tokio::select! {
                m = self.rx.recv() => (m, None),
                ev = self.edges.next() => (None, Some(ev)),
                () = tokio::time::sleep_until(deadline.into()) => (None, None),
            };
            let now = Instant::now();
            if let Some(ev) = edge {
                self.handle_edge(ev, now);
            }
            if let Some(msg) = msg {
                if let RouterIn::Shutdown(done) = msg {
                    self.shutdown().await;
                    let _ = done.send(());
                    return;
                }
                self.handle(msg, now);
            } else if self.rx.is_closed() && self.rx.is_empty() {
                return;
            }
            self.timers(now);
            self.flush(now);
        }
    }

    fn deadline(&self) -> Instant {
        [
            self.engine.poll_timeout(),
            self.driver.poll_timeout(),
            Some(self.exchange.poll_timeout()),
            Some(self.next_maintenance),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.next_maintenance)
    }

    fn timers(&mut self, now: Instant) {
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
        }
        if self.driver.poll_timeout().is_some_and(|t| t <= now) {
            self.driver.handle_timeout(now);
        }
        if self.exchange.poll_timeout() <= now {
            let dests = self.destinations();
            if let Some(round) = self.exchange.handle_timeout(&dests, self.db.len(), now) {
                tracing::debug!(
                    targets = round.targets.len(),
                    reply = round.reply,
                    "peer exchange round"
                );
                for t in round.targets {
                    self.send_announcement(t, round.reply, now);
                }
            }
        }
        if now >= self.next_maintenance {
            self.next_maintenance = now + MAINTENANCE;
            self.maintenance(now);
        }
    }

    fn handle(&mut self, msg: RouterIn, now: Instant) {
        match msg {
            RouterIn::Babel { iface, bytes } => {
                let Some(t) = self.driver.tunnel_of(iface) else {
                    return;
                };
                if let Some(up) = self.tunnels.get(&t) {
                    let from = IpAddr::V6(up.peer.address);
                    self.engine.handle_packet(iface, from, &bytes, now);
                }
            }
            RouterIn::Exchange { from, payload } => self.handle_exchange(from, &payload, now),
            RouterIn::Incoming(e) => self.handle_incoming(*e, now),
            RouterIn::Dialled { tunnel, result } => self.handle_dialled(tunnel, result, now),
            RouterIn::Control { tunnel, msg } => self.handle_control(tunnel, msg, now),
            RouterIn::ControlError { tunnel, error } => {
                tracing::info!(%tunnel, %error, "bad control frame, closing the tunnel");
                self.driver
                    .close(tunnel, close::PROTOCOL, "bad control frame", now);
            }
            RouterIn::Liveness {
                tunnel,
                alive,
                silent,
            } => self.handle_liveness(tunnel, alive, silent, now),
            RouterIn::Closed { tunnel, error } => {
                let lan = self.lan_link_closed(tunnel);
                if self.tunnels.contains_key(&tunnel) {
                    tracing::info!(%tunnel, peer = %self.tunnels[&tunnel].peer.prefix, reason = %error, "tunnel closed");
                    self.driver.handle_closed(tunnel, now);
                }
                if lan {
                    self.candidates_changed(now);
                }
            }
            RouterIn::Registry(ev) => self.handle_registry(ev, now),
            RouterIn::RegistryRound => self.next_round = now,
            RouterIn::Status(reply) => {
                let _ = reply.send(self.status(now));
            }
            RouterIn::Routes(reply) => {
                let _ = reply.send(self.engine.routes(now));
            }
            RouterIn::Peers(reply) => {
                let _ = reply.send(self.db.iter().cloned().collect());
            }
            RouterIn::Shutdown(_) => {}
            RouterIn::Reconfigure(live, reply) => {
                let _ = reply.send(self.reconfigure(live, now));
            }
            RouterIn::LanDialled { peer, result } => self.handle_lan_dialled(peer, result, now),
        }
    }

    // ----- tunnels -----

    fn handle_incoming(&mut self, e: Established, now: Instant) {
        let peer = PeerKey {
            serial: e.connected.peer.serial,
            prefix: e.connected.peer.prefix,
        };
        let Some(e) = self.accept_lan(e, peer, now) else {
            return;
        };
        // A peer we hear nothing from dials us again: it restarted, its old
        // connection is dead. Close that one now rather than at the idle
        // timeout, so the duplicate rule does not refuse the new one.
        let silent: Vec<TunnelId> = self
            .tunnels
            .iter()
            .filter(|(_, up)| up.suspected && !up.lan && up.peer.prefix == peer.prefix)
            .map(|(t, _)| *t)
            .collect();
        for t in silent {
            tracing::info!(tunnel = %t, %peer, "a silent peer dialled again: closing its old tunnel");
            self.driver
                .close(t, close::DONE, "silent, and its peer dialled again", now);
        }
        match self.driver.handle_incoming(peer, now) {
            Ok((tunnel, iface)) => {
                if self.edges.handle_reached(e.connected.conn.local_ip(), now) {
                    self.addresses_changed(now);
                }
                let observed = tunnel::canonical(e.connected.conn.remote_address());
                let accept = Control::Accept {
                    crl_number: self.transport.crl_number(),
                    observed,
                };
                tracing::info!(%tunnel, %peer, %iface, from = %observed, "accepted a tunnel");
                self.bring_up(tunnel, iface, e, Direction::Incoming, Some(accept), now);
            }
            Err(refusal) => {
                tracing::info!(%peer, %refusal, "refused a tunnel");
                e.connected.conn.close(
                    tunnel::code_of(&refusal).into(),
                    refusal.to_string().as_bytes(),
                );
            }
        }
    }

    fn handle_dialled(
        &mut self,
        tunnel: TunnelId,
        result: Result<Box<Established>, DialError>,
        now: Instant,
    ) {
        self.dials.remove(&tunnel);
        match result {
            Ok(e) => {
                let rtt = e.connected.conn.rtt();
                match self.driver.handle_dialled(tunnel, Ok(Some(rtt)), now) {
                    Dialled::Up(iface) => {
                        if let Some(o) = e.observed
                            && self.edges.handle_observed(o, now)
                        {
                            self.addresses_changed(now);
                        }
                        tracing::info!(%tunnel, peer = %e.connected.peer.prefix, %iface, "tunnel up");
                        self.bring_up(tunnel, iface, *e, Direction::Outgoing, None, now);
                    }
                    Dialled::Discard => e
                        .connected
                        .conn
                        .close(close::DONE.into(), b"not needed any more"),
                }
            }
            Err(e) => {
                tracing::debug!(%tunnel, failure = %e.failure, reason = %e.reason, "dial failed");
                if let (Some(other), Some(peer)) = (&e.answered_by, self.driver.peer_of(tunnel)) {
                    self.handle_replaced(peer, other, now);
                }
                self.driver.handle_dialled(tunnel, Err(e.failure), now);
            }
        }
    }

    /// Starts the tasks of an accepted or dialled tunnel and adds it to
    /// Babel and the next-hop table. `first` is sent first on the control
    /// stream.
    fn bring_up(
        &mut self,
        tunnel: TunnelId,
        iface: IfaceId,
        e: Established,
        direction: Direction,
        first: Option<Control>,
        now: Instant,
    ) {
        let conn = e.connected.conn.clone();
        let link = Arc::new(TunnelLink::new(conn.clone()));
        let (ctl_tx, ctl_rx) = mpsc::channel(64);
        if let Some(m) = first {
            let _ = ctl_tx.try_send(m);
        }
        let mut peer_crl = e.peer_crl;
        if let Some(crl) = self.transport.crl()
            && crl.number > peer_crl
        {
            let _ = ctl_tx.try_send(Control::Crl(Bytes::from(crl.der.clone())));
            peer_crl = crl.number;
        }
        self.shared.hops.insert(NextHopId(iface.0), link.clone());
        let budget = conn
            .max_datagram_size()
            .unwrap_or(MIN_BUDGET)
            .max(MIN_BUDGET);
        if let Err(err) = self
            .engine
            .add_interface(iface, InterfaceKind::Tunnel, budget, now)
        {
            tracing::error!(%iface, %err, "Babel refused the interface");
        }
        tokio::spawn(tunnel::datagrams(
            link.clone(),
            iface,
            tunnel,
            self.path.clone(),
            self.tx.clone(),
        ));
        tokio::spawn(tunnel::liveness(
            conn.clone(),
            tunnel,
            self.transport.config().suspect_after,
            self.tx.clone(),
        ));
        tokio::spawn(tunnel::control_reader(e.recv, tunnel, self.tx.clone()));
        tokio::spawn(tunnel::control_writer(e.send, ctl_rx));
        self.tunnels.insert(
            tunnel,
            Up {
                link,
                control: ctl_tx,
                peer: e.connected.peer,
                direction,
                since: now,
                peer_crl,
                budget,
                lan: self.driver.is_lan(tunnel),
                suspected: false,
            },
        );
        self.routes_dirty = true;
    }

    /// A tunnel fell silent or was heard again. A suspected tunnel's
    /// interface goes down in Babel, exactly as when its connection closes
    /// (routes retracted, alternatives selected at once), but the
    /// connection and the next hop stay; heard again, the interface comes
    /// back (Hello, IHU and a full dump within a round trip), with its drain
    /// cost if the tunnel is being drained.
    fn handle_liveness(&mut self, tunnel: TunnelId, alive: bool, silent: Duration, now: Instant) {
        let Some(iface) = self.driver.iface_of(tunnel) else {
            return;
        };
        let Some(up) = self.tunnels.get_mut(&tunnel) else {
            return;
        };
        if up.suspected != alive {
            return;
        }
        up.suspected = !alive;
        let peer = up.peer.prefix;
        if alive {
            tracing::info!(%tunnel, %peer, "tunnel heard again: its routes come back");
            self.liveness.recovered += 1;
            if let Err(err) =
                self.engine
                    .add_interface(iface, InterfaceKind::Tunnel, up.budget, now)
            {
                tracing::error!(%iface, %err, "Babel refused the interface");
            }
            if self.driver.is_draining(tunnel) {
                let _ = self.engine.set_interface_cost(iface, DRAIN_COST, now);
            }
        } else {
            tracing::info!(%tunnel, %peer, ?silent, "tunnel silent: suspected, its routes move away");
            self.liveness.suspected += 1;
            let _ = self.engine.interface_down(iface, now);
        }
        self.routes_dirty = true;
    }

    fn handle_control(&mut self, tunnel: TunnelId, msg: Control, now: Instant) {
        match msg {
            Control::Drain => {
                tracing::debug!(%tunnel, "peer drains the tunnel");
                self.driver.handle_peer_drain(tunnel);
            }
            Control::Drained => self.driver.handle_peer_drained(tunnel, now),
            Control::Crl(der) => match Crl::from_der(&der, &self.ca_der) {
                Ok(crl) => {
                    if let Some(up) = self.tunnels.get_mut(&tunnel) {
                        up.peer_crl = up.peer_crl.max(crl.number);
                    }
                    self.apply_crl(crl, now);
                }
                Err(e) => {
                    tracing::info!(%tunnel, error = %e, "a peer sent a bad CRL");
                    self.driver.close(tunnel, close::PROTOCOL, "bad CRL", now);
                }
            },
            Control::Open { .. } | Control::Accept { .. } => {
                self.driver
                    .close(tunnel, close::PROTOCOL, "unexpected control message", now);
            }
            Control::Unknown(_) => {}
        }
    }

    /// Applies one driver command.
    fn apply(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Dial { tunnel, peer } => {
                let addrs = self
                    .db
                    .get(&peer.prefix)
                    .map(|e| e.addresses.clone())
                    .unwrap_or_default();
                if addrs.is_empty() {
                    self.driver.handle_dialled(
                        tunnel,
                        Err(crate::tunnels::policy::Failure::Unreachable),
                        now,
                    );
                    return;
                }
                let transport = self.transport.clone();
                let tx = self.tx.clone();
                let crl = transport.crl_number();
                let address = node_address(peer.prefix);
                let h = tokio::spawn(async move {
                    let result = tunnel::dial(&transport, &addrs, address, crl)
                        .await
                        .map(Box::new);
                    let _ = tx.send(RouterIn::Dialled { tunnel, result }).await;
                });
                self.dials.insert(tunnel, h.abort_handle());
            }
            Command::CancelDial { tunnel } => {
                if let Some(h) = self.dials.remove(&tunnel) {
                    h.abort();
                }
            }
            Command::Drain {
                tunnel,
                iface,
                notify_peer,
            } => {
                // A suspected tunnel has no interface now: it gets the drain
                // cost when it is heard again.
                let suspected = self.tunnels.get(&tunnel).is_some_and(|u| u.suspected);
                if !suspected && let Err(e) = self.engine.set_interface_cost(iface, DRAIN_COST, now)
                {
                    tracing::warn!(%iface, error = %e, "cannot drain the interface");
                }
                if notify_peer && let Some(up) = self.tunnels.get(&tunnel) {
                    let _ = up.control.try_send(Control::Drain);
                }
                tracing::debug!(%tunnel, %iface, notify_peer, "draining the tunnel");
                self.routes_dirty = true;
            }
            Command::NotifyDrained { tunnel } => {
                if let Some(up) = self.tunnels.get(&tunnel) {
                    let _ = up.control.try_send(Control::Drained);
                }
            }
            Command::Close {
                tunnel,
                iface,
                close,
            } => {
                if let Some(iface) = iface {
                    let _ = self.engine.interface_down(iface, now);
                    self.shared.hops.remove(NextHopId(iface.0));
                }
                if let Some(up) = self.tunnels.remove(&tunnel)
                    && let Some((code, reason)) = close
                {
                    tracing::info!(%tunnel, peer = %up.peer.prefix, reason, "closing the tunnel");
                    up.link.conn().close(code.into(), reason.as_bytes());
                }
                self.routes_dirty = true;
            }
        }
    }

    /// Drains every output until nothing moves.
    fn flush(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(t) = self.engine.poll_transmit(now) {
                moved = true;
                if let Some(up) = self
                    .driver
                    .tunnel_of(t.iface)
                    .and_then(|id| self.tunnels.get(&id))
                {
                    let _ = up.link.send_datagram(Bytes::from(t.bytes));
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
                self.driver.handle_routes(&counts, now);
            }
            while let Some(cmd) = self.driver.poll_command() {
                moved = true;
                self.apply(cmd, now);
            }
            if !moved && !self.fib_dirty && !self.routes_dirty {
                break;
            }
        }
    }

    fn publish_fib(&mut self) {
        let mut routes: Vec<(Ipv6Net, Route)> = self
            .engine
            .fib()
            .into_iter()
            .filter_map(|e| match e.prefix {
                IpNet::V6(p) => Some((p, Route::Via(NextHopId(e.iface.0)))),
                IpNet::V4(_) => None,
            })
            .collect();
        // Unknown overlay addresses get "reject route", never a detour
        // through a shorter (default) route; our own prefix is local.
        routes.insert(0, (self.network.network, Route::Unreachable));
        routes.push((self.cert.prefix, Route::Local));
        routes.extend(self.edges.gateway.fib_routes());
        self.shared.fib.publish(Fib::from_routes(routes));
    }

    // ----- peers -----

    /// Nodes of the routing table (their addresses), without us.
    fn destinations(&self) -> Vec<Ipv6Addr> {
        self.engine
            .fib()
            .into_iter()
            .filter_map(|e| match e.prefix {
                IpNet::V6(p) if self.network.network.contains(&p) && p != self.cert.prefix => {
                    Some(node_address(p))
                }
                _ => None,
            })
            .collect()
    }

    fn candidates_changed(&mut self, now: Instant) {
        let peers: Vec<PeerKey> = self
            .db
            .iter()
            .map(|e| PeerKey {
                serial: e.serial,
                prefix: e.prefix,
            })
            .filter(|p| !self.driver.lan_peers().any(|l| l == *p))
            .collect();
        self.driver.handle_candidates(peers, now);
    }

    /// A dial to `peer` reached `other` at its address, a valid node of
    /// the network: `peer` is gone from there (wiped and restarted with a
    /// new identity, or its address now someone else's). Its entry is
    /// forgotten at once, so it is not dialled again. The new node is
    /// learned from itself: it gets our announcement with a request for
    /// its own, over the overlay, and its answer is verified and stored
    /// like any other. A DB entry is never made from the certificate: the
    /// DB holds signed announcements, which it passes on to others, and
    /// only their owner can sign one.
    fn handle_replaced(&mut self, peer: PeerKey, other: &NodeCert, now: Instant) {
        match self
            .db
            .forget_replaced(peer.prefix, peer.serial, SystemTime::now())
        {
            Ok(true) => {
                tracing::info!(
                    %peer,
                    now = %other.prefix,
                    "a peer's address answers as another node: forgetting the peer"
                );
                self.candidates_changed(now);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "peer DB"),
        }
        if other.prefix != self.cert.prefix && self.db.get(&other.prefix).is_none() {
            self.send_announcement(other.address, true, now);
        }
    }

    fn insert_announcement(&mut self, signed: &SignedAnnouncement) -> bool {
        match self.db.insert(signed, &self.verifier, SystemTime::now()) {
            Ok(Inserted::New | Inserted::Updated) => true,
            Ok(Inserted::Unchanged) => false,
            Err(e) => {
                tracing::debug!(error = %e, "announcement not stored");
                false
            }
        }
    }

    /// Addresses we announce ([`crate::addresses`]): configured first,
    /// then UPnP, then routable local addresses; none behind a NAT.
    fn advertised(&self) -> Vec<SocketAddr> {
        self.edges.addresses.announce()
    }

    /// Our announcement, signed now.
    fn announcement(&self) -> Option<SignedAnnouncement> {
        self.sign_announcement(None)
    }

    /// Our announcement for the registry: with our links, gateway prefixes
    /// and version, from which the registry draws the network.
    fn registry_announcement(&self) -> Option<SignedAnnouncement> {
        use crate::identity::{LinkKind, LinkReport, Topology};
        let links = self
            .tunnels
            .values()
            .filter(|up| !up.suspected)
            .map(|up| LinkReport {
                peer: up.peer.prefix,
                kind: match (up.lan, up.direction) {
                    (true, _) => LinkKind::Lan,
                    (_, Direction::Outgoing) => LinkKind::Out,
                    (_, Direction::Incoming) => LinkKind::In,
                },
                rtt_ms: u32::try_from(up.link.conn().rtt().as_millis()).ok(),
            })
            .collect();
        let gateways = self.edges.gateway.fib_routes().map(|(p, _)| p).collect();
        self.sign_announcement(Some(Topology::new(
            env!("CARGO_PKG_VERSION"),
            links,
            gateways,
        )))
    }

    fn sign_announcement(
        &self,
        topology: Option<crate::identity::Topology>,
    ) -> Option<SignedAnnouncement> {
        let mut addresses = self.advertised();
        if addresses.is_empty() {
            return None;
        }
        addresses.truncate(crate::identity::MAX_ADDRESSES);
        let a = PeerAnnouncement {
            prefix: self.cert.prefix,
            addresses,
            timestamp: unix_secs(SystemTime::now()),
            topology,
        };
        match a.sign(&self.cert, &self.key) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot sign our announcement");
                None
            }
        }
    }

    fn send_announcement(&mut self, to: Ipv6Addr, reply: bool, now: Instant) {
        let Some(signed) = self.announcement() else {
            tracing::debug!("no address to announce yet");
            return;
        };
        let mut msg = Vec::new();
        if let Err(e) = (ExchangeMessage::Announce { reply, signed }).emit(&mut msg) {
            tracing::warn!(error = %e, "cannot encode our announcement");
            return;
        }
        let packet = wire::build_packet(self.me(), to, &msg);
        self.path.handle_local_packet(packet.as_slice().into(), now);
    }

    fn handle_exchange(&mut self, from: Ipv6Addr, payload: &[u8], now: Instant) {
        self.exchange.stats.received += 1;
        let (reply, signed) = match ExchangeMessage::parse(payload) {
            Ok(ExchangeMessage::Announce { reply, signed }) => (reply, signed),
            Ok(ExchangeMessage::Unknown(_)) => return,
            Err(e) => {
                self.exchange.stats.malformed += 1;
                tracing::debug!(%from, error = %e, "bad peer-exchange message");
                return;
            }
        };
        let stored = self.db.insert(&signed, &self.verifier, SystemTime::now());
        if matches!(stored, Ok(Inserted::New | Inserted::Updated)) {
            self.candidates_changed(now);
        }
        if let Err(e) = &stored {
            tracing::debug!(%from, error = %e, "announcement not stored");
        }
        // Answer only a verified announcement, and only to the owner of the
        // announced prefix (no reflection towards a third party).
        if reply && stored.is_ok() {
            let prefix = serde_json::from_str::<PeerAnnouncement>(&signed.payload)
                .map(|a| a.prefix)
                .ok();
            if prefix.is_some_and(|p| p.contains(&from)) && self.exchange.may_reply(from, now) {
                self.send_announcement(from, false, now);
            }
        }
    }

    // ----- CRL and registry -----

    fn apply_crl(&mut self, crl: Crl, now: Instant) {
        let number = crl.number;
        match self.transport.set_crl(crl.clone()) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot apply the CRL");
                return;
            }
        }
        tracing::info!(number, revoked = crl.entries().count(), "new CRL");
        match CaVerifier::new(&Trust::new(&self.ca_der, Some(&crl))) {
            Ok(v) => {
                self.verifier = v;
                if let Ok(lan) = CaVerifier::new(&Trust::new(&self.ca_der, Some(&crl))) {
                    self.edges
                        .lan_cmd(crate::lan::LanCmd::Verifier(Arc::new(lan)));
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot build the CRL verifier"),
        }
        let revoked: Vec<TunnelId> = self
            .tunnels
            .iter()
            .filter(|(_, up)| crl.is_revoked(up.peer.serial))
            .map(|(t, _)| *t)
            .collect();
        for t in revoked {
            tracing::warn!(tunnel = %t, "closing a tunnel to a revoked node");
            self.driver
                .close(t, close::REVOKED, "certificate revoked", now);
        }
        match self.db.purge(&self.verifier, SystemTime::now()) {
            Ok(dropped) if !dropped.is_empty() => self.candidates_changed(now),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "peer DB"),
        }
        // Flood it to the peers that have an older one.
        let der = Bytes::from(crl.der.clone());
        for up in self.tunnels.values_mut() {
            if up.peer_crl < number {
                let _ = up.control.try_send(Control::Crl(der.clone()));
                up.peer_crl = number;
            }
        }
        persist(
            &self.config,
            crate::state_dir::files::CRL,
            crl.to_pem().as_bytes(),
        );
    }

    fn handle_registry(&mut self, ev: RegistryEvent, now: Instant) {
        match ev {
            RegistryEvent::Bootstrapped(list) => {
                self.bootstrap_busy = false;
                self.registry_status.bootstraps += 1;
                self.registry_ok();
                let mut changed = false;
                for s in &list {
                    changed |= self.insert_announcement(s);
                }
                tracing::info!(
                    received = list.len(),
                    db = self.db.len(),
                    "bootstrap from the registry"
                );
                if changed {
                    self.candidates_changed(now);
                }
                if self.db.len() >= usize::from(self.network.tunnels) {
                    self.next_bootstrap = None;
                    self.bootstrap_delay = self.config.bootstrap_retry;
                }
            }
            RegistryEvent::Crl(crl) => self.apply_crl(crl, now),
            RegistryEvent::Renewed(cert) => {
                tracing::info!(serial = cert.serial, "certificate renewed");
                self.edges.lan_cmd(crate::lan::LanCmd::Identity(
                    Box::new(cert.clone()),
                    self.key.clone(),
                ));
                self.cert = cert;
                // The registry says when the new one is due, next.
                self.renew_after = None;
            }
            RegistryEvent::Network(cfg) => self.adopt_network(*cfg, now),
            RegistryEvent::RenewAfter(t) => self.renew_after = Some(t),
            RegistryEvent::Done => {
                self.round_busy = false;
                self.registry_backoff.reset();
                self.registry_ok();
            }
            RegistryEvent::RoundFailed(why) => {
                // Keep running on what we have; try again soon (a
                // certificate may be due), then less and less often.
                self.round_busy = false;
                let delay = self.registry_backoff.next_delay(&mut self.rng);
                self.next_round = now + delay;
                super::renewal::log_failed_round(
                    &self.cert,
                    self.renew_after,
                    &why,
                    delay,
                    SystemTime::now(),
                );
                self.registry_failed(why);
            }
            RegistryEvent::BootstrapFailed(why) => {
                self.bootstrap_busy = false;
                tracing::info!(reason = %why, "registry unreachable; going on with what we know");
                self.registry_failed(why);
            }
        }
    }

    fn registry_failed(&mut self, why: String) {
        self.registry_status.last_error = Some(why);
        self.registry_status.failures += 1;
    }

    /// A newer network configuration, applied live where it can be (the
    /// registry has saved it already):
    /// - `tunnel_replacement` from the next refresh (unless this node
    ///   overrides it);
    /// - `tunnels` (k), `max_tunnels`, `tunnel_refresh_secs`: a larger k
    ///   opens tunnels at once, a smaller one drains one surplus tunnel per
    ///   refresh, a lower maximum refuses new incoming tunnels and cuts
    ///   none ([`crate::tunnels::policy::Policy::set_limits`]);
    /// - the Babel intervals and RTT metric: every tunnel, existing or new,
    ///   from now on ([`Engine::reconfigure`]);
    /// - `min_protocol`: a node older than it says so loudly and keeps
    ///   running (its peers decide whether to talk to it).
    ///
    /// The overlay prefix, the node prefix length and the registry URL are
    /// built into the certificate, the FIB and the registry task: they wait
    /// for a restart, and the log names them.
    fn adopt_network(&mut self, cfg: NetworkConfig, now: Instant) {
        let replacement = cfg.tunnel_replacement;
        if self.config.replacement.is_none() && replacement != self.network.tunnel_replacement {
            match self.driver.set_replacement(replacement) {
                Ok(()) => {
                    tracing::info!(%replacement, "the network changed the tunnel replacement");
                    self.network.tunnel_replacement = replacement;
                }
                Err(e) => {
                    tracing::warn!(%replacement, error = %e, "cannot use the network's tunnel replacement")
                }
            }
        }
        let limits = |n: &NetworkConfig| (n.tunnels, n.max_tunnels, n.tunnel_refresh_secs);
        if limits(&cfg) != limits(&self.network) {
            let (k, max, refresh) = limits(&cfg);
            match self.driver.set_limits(
                usize::from(k),
                usize::from(max),
                cfg.tunnel_refresh(),
                now,
            ) {
                Ok(()) => {
                    tracing::info!(
                        k,
                        max,
                        refresh_secs = refresh,
                        "the network changed its tunnel limits"
                    );
                    self.network.tunnels = k;
                    self.network.max_tunnels = max;
                    self.network.tunnel_refresh_secs = refresh;
                }
                Err(e) => {
                    tracing::warn!(k, max, error = %e, "cannot use the network's tunnel limits")
                }
            }
        }
        let babel = |n: &NetworkConfig| {
            (
                n.babel_hello_ms,
                n.babel_ihu_ms,
                n.babel_update_ms,
                n.babel_rtt_max_penalty,
                n.babel_rtt_max_ms,
            )
        };
        if babel(&cfg) != babel(&self.network) {
            match self.engine.reconfigure(self.config.babel(&cfg), now) {
                Ok(()) => {
                    tracing::info!(
                        hello_ms = cfg.babel_hello_ms,
                        update_ms = cfg.babel_update_ms,
                        rtt_max_penalty = cfg.babel_rtt_max_penalty,
                        rtt_max_ms = cfg.babel_rtt_max_ms,
                        "the network changed its Babel parameters"
                    );
                    self.network.babel_hello_ms = cfg.babel_hello_ms;
                    self.network.babel_ihu_ms = cfg.babel_ihu_ms;
                    self.network.babel_update_ms = cfg.babel_update_ms;
                    self.network.babel_rtt_max_penalty = cfg.babel_rtt_max_penalty;
                    self.network.babel_rtt_max_ms = cfg.babel_rtt_max_ms;
                }
                Err(e) => tracing::warn!(error = %e, "cannot use the network's Babel parameters"),
            }
        }
        if cfg.min_protocol > PROTOCOL_VERSION {
            tracing::error!(
                min_protocol = cfg.min_protocol,
                ours = PROTOCOL_VERSION,
                "the network requires a newer protocol than this node speaks: upgrade re6st"
            );
        }
        self.network.min_protocol = cfg.min_protocol;
        let waiting: Vec<&str> = [
            ("network", cfg.network != self.network.network),
            (
                "node_prefix_len",
                cfg.node_prefix_len != self.network.node_prefix_len,
            ),
            (
                "registry_url",
                cfg.registry_url != self.network.registry_url,
            ),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect();
        if !waiting.is_empty() {
            tracing::warn!(
                version = cfg.version,
                parameters = waiting.join(", "),
                "the network configuration changed parameters that apply only at the next start; restart the node to apply them"
            );
        }
    }

    fn registry_ok(&mut self) {
        self.registry_status.last_ok = Some(unix_secs(SystemTime::now()));
        self.registry_status.last_error = None;
    }

    fn maintenance(&mut self, now: Instant) {
        // RTTs (Babel's when it has one, QUIC's otherwise) and datagram
        // budgets (they follow path MTU discovery).
        let babel_rtt: BTreeMap<IfaceId, Duration> = self
            .engine
            .neighbours()
            .into_iter()
            .filter_map(|n| Some((n.iface, n.rtt?)))
            .collect();
        let mut expired = Vec::new();
        let wall = SystemTime::now();
        for (t, up) in &mut self.tunnels {
            let Some(iface) = self.driver.iface_of(*t) else {
                continue;
            };
            let rtt = babel_rtt
                .get(&iface)
                .copied()
                .unwrap_or_else(|| up.link.conn().rtt());
            self.driver.handle_rtt(iface, rtt, now);
            let budget = up
                .link
                .conn()
                .max_datagram_size()
                .unwrap_or(MIN_BUDGET)
                .max(MIN_BUDGET);
            if budget != up.budget {
                up.budget = budget;
                let _ = self.engine.set_interface_budget(iface, budget);
            }
            if up.peer.is_expired(wall) {
                expired.push(*t);
            }
        }
        for t in expired {
            self.driver
                .close(t, close::BAD_PEER, "certificate expired", now);
        }
        if now >= self.next_purge {
            self.next_purge = now + Duration::from_secs(3600);
            if let Ok(d) = self.db.purge(&self.verifier, wall)
                && !d.is_empty()
            {
                self.candidates_changed(now);
            }
        }
        if self.edges.handle_timeout(now) {
            self.addresses_changed(now);
        }
        self.registry_timers(now);
    }

    fn registry_timers(&mut self, now: Instant) {
        let Some((_, reg)) = &self.registry else {
            return;
        };
        if now >= self.next_round && !self.round_busy {
            self.next_round = now + self.config.registry_interval;
            let announcement = self.registry_announcement();
            self.round_busy = reg.try_send(RegistryCmd::Round { announcement }).is_ok();
        }
        let wanted = self.db.len() < usize::from(self.network.tunnels)
            || (self.tunnels.is_empty() && self.driver.policy().own_count() == 0);
        if !wanted || self.bootstrap_busy {
            return;
        }
        let due = self.next_bootstrap.get_or_insert(now);
        if now >= *due {
            self.bootstrap_busy = true;
            let n = self
                .config
                .bootstrap_peers
                .clamp(1, crate::registry::api::MAX_BOOTSTRAP);
            if reg.try_send(RegistryCmd::Bootstrap { n }).is_err() {
                self.bootstrap_busy = false;
            }
            self.next_bootstrap = Some(now + self.bootstrap_delay);
            self.bootstrap_delay = (self.bootstrap_delay * 2).min(Duration::from_secs(3600));
        }
    }

    fn persist_seqno(&self, seqno: u16) {
        let rid: String = self
            .engine
            .router_id()
            .0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        persist(
            &self.config,
            super::SEQNO_FILE,
            format!("{rid} {seqno}\n").as_bytes(),
        );
    }

    // ----- control API -----

    fn status(&self, now: Instant) -> NodeStatus {
        let counts = self.engine.destinations_per_interface();
        let mut tunnels: Vec<TunnelStatus> = self
            .tunnels
            .iter()
            .map(|(t, up)| {
                let iface = self.driver.iface_of(*t);
                let info = self.driver.policy().tunnel(*t);
                TunnelStatus {
                    id: t.0,
                    peer_prefix: up.peer.prefix,
                    peer_serial: up.peer.serial,
                    peer_udp: tunnel::canonical(up.link.conn().remote_address()),
                    direction: match (up.lan, up.direction) {
                        (true, _) => "lan",
                        (_, Direction::Outgoing) => "outgoing",
                        (_, Direction::Incoming) => "incoming",
                    },
                    state: if self.driver.is_draining(*t) {
                        "draining"
                    } else if up.suspected {
                        "suspect"
                    } else if info.as_ref().is_some_and(|i| i.probe) {
                        "probe"
                    } else {
                        "up"
                    },
                    iface: iface.map(|i| i.0),
                    rtt_ms: up.link.conn().rtt().as_secs_f64() * 1000.0,
                    babel_rtt_ms: info
                        .as_ref()
                        .and_then(|i| i.rtt)
                        .map(|r| r.as_secs_f64() * 1000.0),
                    age_secs: now.saturating_duration_since(up.since).as_secs(),
                    destinations: iface.and_then(|i| counts.get(&i)).copied().unwrap_or(0),
                    max_datagram_size: up.link.conn().max_datagram_size(),
                    link: up.link.stats(),
                }
            })
            .collect();
        tunnels.sort_by_key(|t| t.id);
        NodeStatus {
            address: self.cert.address,
            prefix: self.cert.prefix,
            serial: self.cert.serial,
            cert_not_after: unix_secs(self.cert.not_after),
            renewal: super::renewal::Renewal::of(
                &self.cert,
                self.renew_after,
                self.registry_status.last_error.is_some(),
                SystemTime::now(),
            ),
            network: self.network.network,
            listen: self.transport.local_addr().ok(),
            advertised: self.advertised(),
            uptime_secs: now.saturating_duration_since(self.started).as_secs(),
            crl_number: self.transport.crl_number(),
            tunnels,
            probe_rounds: self
                .driver
                .policy()
                .probe_rounds()
                .map(|r| ProbeRoundStatus {
                    probes: r
                        .up
                        .iter()
                        .map(|(peer, rtt)| ProbeStatus {
                            peer_prefix: peer.prefix,
                            rtt_ms: rtt.map(|r| r.as_secs_f64() * 1000.0),
                            kept: r.kept.as_ref() == Some(peer),
                        })
                        .collect(),
                    cancelled: r.cancelled,
                })
                .collect(),
            routes: self.engine.fib().len(),
            peer_db: self.db.len(),
            registry: RegistryStatus {
                next_round_in_secs: self
                    .registry
                    .as_ref()
                    .map(|_| self.next_round.saturating_duration_since(now).as_secs()),
                ..self.registry_status.clone()
            },
            policy: self.driver.policy().stats().clone(),
            driver: self.driver.stats().clone(),
            transport: self.transport.stats(),
            path: self.shared.stats(),
            exchange: self.exchange.stats.clone(),
            peers: self.db.stats().clone(),
            babel: self.engine.counters().clone(),
            liveness: self.liveness.clone(),
            edges: self.edges.status(),
        }
    }

    async fn shutdown(&mut self) {
        let now = Instant::now();
        self.edges.shutdown().await;
        self.engine.retract_all(now);
        self.flush(now);
        tokio::time::sleep(tunnel::SHUTDOWN_GRACE).await;
        self.transport
            .close(control::close::SHUTDOWN, b"node shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.transport.wait_idle()).await;
    }
}
