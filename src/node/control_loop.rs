//! The control loop: the thin async shell around NodeCore. It reads the
//! clocks once per wake-up, turns what arrives (tunnel events, registry
//! answers, edge news, the operator's requests, deadlines) into NodeCore's
//! `handle_*` calls, and carries out its commands: tunnel commands through
//! the packet loop's adapter, FIB snapshots, state files, the peer DB's
//! durable copy, registry requests, LAN notices. It holds no decision.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use re6st_dataplane::fib::{Fib, SharedFib};
use tokio::sync::{mpsc, oneshot};

use super::core::{
    Command, NodeCore, Now, ProbeError, RegistryReply, RegistryRequest, TunnelEvent,
};
use super::edges::{EdgeEvent, EdgeServices, scan_addresses};
use super::packet_loop::PacketLoop;
use super::status::NodeStatus;
use crate::peers::{PeerEntry, PeerStore};

/// How long a stopping node waits for its last Babel packets (the
/// retractions) to reach the peers before closing.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

/// What the node's handle asks.
pub(crate) enum Request {
    /// Status for the control API.
    Status(oneshot::Sender<NodeStatus>),
    /// Babel's routes.
    Routes(oneshot::Sender<Vec<re6st_babel::engine::RouteInfo>>),
    /// The peer DB.
    Peers(oneshot::Sender<Vec<PeerEntry>>),
    /// Run a registry round now.
    RegistryRound,
    /// Apply local options re-read from the configuration file; the reply
    /// names what changed.
    Reconfigure(
        super::core::LiveOptions,
        oneshot::Sender<Result<Vec<&'static str>, String>>,
    ),
    /// Retract routes, close tunnels, stop.
    Shutdown(oneshot::Sender<()>),
}

/// The registry task's two channels.
pub(crate) struct RegistryLink {
    pub(crate) requests: mpsc::Sender<RegistryRequest>,
    pub(crate) replies: mpsc::Receiver<RegistryReply>,
}

/// Everything the control loop owns.
pub(crate) struct ControlLoop {
    pub(crate) core: NodeCore,
    pub(crate) packets: PacketLoop,
    pub(crate) fib: Arc<SharedFib>,
    pub(crate) edges: EdgeServices,
    pub(crate) events: mpsc::Receiver<TunnelEvent>,
    pub(crate) requests: mpsc::Receiver<Request>,
    pub(crate) registry: Option<RegistryLink>,
    pub(crate) store: Option<PeerStore>,
    pub(crate) state_dir: Option<PathBuf>,
    /// The TUN's IPv4 side, if the node has a TUN.
    pub(crate) tun_ipv4: Option<super::host::ipv4::TunIpv4>,
}

/// A registry answer, or pending forever without a registry.
async fn registry_reply(r: &mut Option<RegistryLink>) -> Option<RegistryReply> {
    match r {
        Some(r) => r.replies.recv().await,
        None => std::future::pending().await,
    }
}

impl ControlLoop {
    /// Runs until shut down or until the node's handle is gone.
    pub(crate) async fn run(mut self) {
        self.carry_out(Now::read()).await;
        loop {
            let mut deadline = self.core.poll_timeout();
            if let Some(t) = self.edges.poll_lan_status(Now::read().mono) {
                deadline = deadline.min(t);
            }
            tokio::select! {
                ev = self.events.recv() => {
                    let now = Now::read();
                    match ev {
                        Some(ev) => self.core.handle_tunnel_event(ev, now),
                        // The packet loop is gone (its device failed).
                        None => return,
                    }
                    // Whatever else arrived, in the same wake-up.
                    while let Ok(ev) = self.events.try_recv() {
                        self.core.handle_tunnel_event(ev, now);
                    }
                }
                req = self.requests.recv() => {
                    let now = Now::read();
                    match req {
                        None => return,
                        Some(Request::Shutdown(done)) => {
                            self.shutdown().await;
                            let _ = done.send(());
                            return;
                        }
                        Some(req) => self.answer(req, now).await,
                    }
                }
                reply = registry_reply(&mut self.registry) => {
                    match reply {
                        Some(reply) => self.core.handle_registry(reply, Now::read()),
                        None => self.registry = None,
                    }
                }
                ev = self.edges.next() => {
                    let now = Now::read();
                    match ev {
                        EdgeEvent::Upnp(m) => self.core.handle_upnp(m, now),
                        EdgeEvent::Lan(ev) => self.core.handle_lan(ev, now),
                    }
                }
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Now::read();
            if self.core.poll_timeout() <= now.mono {
                self.core.handle_timeout(now);
            }
            self.carry_out(now).await;
        }
    }

    async fn answer(&mut self, req: Request, now: Now) {
        match req {
            Request::Status(reply) => {
                let mut s = self.core.status(now.mono);
                if let Some(l) = self.packets.status().await {
                    l.fill(&mut s);
                }
                s.edges.lan_beacons = self.edges.lan_beacons();
                let _ = reply.send(s);
            }
            Request::Routes(reply) => {
                let _ = reply.send(self.core.routes(now.mono));
            }
            Request::Peers(reply) => {
                let _ = reply.send(self.core.peers().iter().cloned().collect());
            }
            Request::RegistryRound => self.core.handle_registry_round_now(now),
            Request::Reconfigure(live, reply) => {
                let _ = reply.send(self.core.handle_reconfigure(live, now));
            }
            Request::Shutdown(_) => {}
        }
    }

    /// Carries out every command NodeCore has. Tunnel commands wait for
    /// room in the packet loop's queue (it never waits for us).
    async fn carry_out(&mut self, now: Now) {
        while let Some(cmd) = self.core.poll_command() {
            match cmd {
                Command::Tunnel(c) => {
                    self.packets.send(c).await;
                }
                Command::PublishFib(routes) => self.fib.publish(Fib::from_routes(routes)),
                Command::Ipv4(v4) => {
                    if let Some(t) = &mut self.tun_ipv4 {
                        t.apply(v4);
                    }
                }
                Command::Persist { file, bytes } => self.persist(file, &bytes),
                Command::PersistPeer(change) => {
                    if let Some(store) = &mut self.store
                        && let Err(e) = store.apply(&change)
                    {
                        tracing::warn!(error = %e, "cannot write the peer DB");
                    }
                }
                Command::Registry(req) => self.ask_registry(req, now),
                Command::Lan(n) => self.edges.lan_notice(n),
                Command::ScanAddresses => self.core.handle_local_addresses(scan_addresses(), now),
                // No underlay probe here yet: the shortcut replacement is
                // refused on real nodes (`Replacement::runs_on_real_nodes`).
                Command::ProbeRtt { peer, .. } => {
                    self.core
                        .handle_probe_rtt(peer, Err(ProbeError::Unsupported), now);
                }
            }
        }
    }

    fn ask_registry(&mut self, req: RegistryRequest, now: Now) {
        let failed = match &req {
            RegistryRequest::Round { .. } => RegistryReply::RoundFailed,
            RegistryRequest::Bootstrap { .. } => RegistryReply::BootstrapFailed,
        };
        let sent = self
            .registry
            .as_ref()
            .is_some_and(|r| r.requests.try_send(req).is_ok());
        if !sent {
            let why = "the registry task is busy or gone".to_string();
            self.core.handle_registry(failed(why), now);
        }
    }

    /// Writes a state-directory file, if the node has one (errors are
    /// logged: the node keeps running on what it has in memory).
    fn persist(&self, name: &str, contents: &[u8]) {
        if let Some(dir) = &self.state_dir
            && let Err(e) = crate::state_dir::write_atomic(&dir.join(name), contents, 0o644)
        {
            tracing::warn!(file = name, error = %e, "cannot write the state directory");
        }
    }

    async fn shutdown(&mut self) {
        self.edges.shutdown().await;
        let now = Now::read();
        self.core.handle_shutdown(now);
        self.carry_out(now).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        self.packets
            .stop(
                crate::transport::control::close::SHUTDOWN,
                "node shutting down",
            )
            .await;
    }
}
