//! The node side of the control API: builds the [`api`] views from a
//! running node, and serves them on the Unix socket (and, through
//! [`super::metrics`], over HTTP). Before the node runs, while it waits
//! for its registry to enrol it, the socket already answers `status`
//! ([`Served::Joining`]).
//!
//! The socket lives in the state directory (mode 0700) and is itself made
//! 0600: only the node's user (and root) can ask. A request is one line of
//! at most [`api::MAX_REQUEST`] bytes, read within a few seconds; anything
//! else gets an error answer or a closed connection, never a stuck task.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::api::{
    self, HostInfo, PeerView, RegistryInfo, Request, Response, RouteView, Status, TunnelInfo,
};
use crate::node::{JoinProgress, NodeHandle, NodeStatus, TunnelStatus};

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Clients served at once; more are answered "busy" at once and closed
/// (past twice this, closed without an answer), so that clients that
/// connect and say nothing cannot pile up tasks (each holds one for at
/// most [`REQUEST_TIMEOUT`]).
pub const MAX_CLIENTS: usize = 32;

/// What the control socket answers from.
#[derive(Debug, Clone)]
pub enum Served {
    /// The node is loading its state and opening its devices.
    Starting,
    /// A node still waiting for its registry: `status` says so, the rest
    /// is an error.
    Joining(Arc<JoinProgress>),
    /// The running node.
    Node(Arc<Source>),
}

impl Served {
    /// The answer to `req`.
    pub async fn answer(&self, req: Request) -> Response {
        match self {
            Served::Node(source) => source.answer(req).await,
            Served::Starting => {
                Response::Error("the node is starting; ask again in a moment".into())
            }
            Served::Joining(j) => match req {
                Request::Status => Response::Joining(j.info()),
                _ => Response::Error(format!(
                    "the node has not joined its network yet (it waits for the registry {}): \
                     no tunnels, routes, peers or metrics before it runs; see `re6st status`",
                    j.registry()
                )),
            },
        }
    }
}

/// Where the views come from: the node, plus what the program knows about
/// its host side.
pub struct Source {
    node: Arc<NodeHandle>,
    host: HostInfo,
    host_counters: Box<dyn Fn() -> BTreeMap<String, u64> + Send + Sync>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("node", &self.node)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Source {
    /// Views of `node`, whose host side is described by `host` and counted
    /// by `host_counters`.
    pub fn new(
        node: Arc<NodeHandle>,
        host: HostInfo,
        host_counters: impl Fn() -> BTreeMap<String, u64> + Send + Sync + 'static,
    ) -> Self {
        Self {
            node,
            host,
            host_counters: Box::new(host_counters),
        }
    }

    async fn node_status(&self) -> anyhow::Result<NodeStatus> {
        self.node
            .status()
            .await
            .context("the node is shutting down")
    }

    /// The node as a whole.
    pub async fn status(&self) -> anyhow::Result<Status> {
        let s = self.node_status().await?;
        Ok(self.status_of(&s))
    }

    fn status_of(&self, s: &NodeStatus) -> Status {
        let mut counters = BTreeMap::new();
        counters.insert("path".into(), api::counter_map(&s.path));
        counters.insert("policy".into(), api::counter_map(&s.policy));
        counters.insert("driver".into(), api::counter_map(&s.driver));
        counters.insert("transport".into(), api::counter_map(&s.transport));
        if let Some(tcp) = &s.tcp {
            counters.insert("tcp".into(), api::counter_map(tcp));
        }
        counters.insert("exchange".into(), api::counter_map(&s.exchange));
        counters.insert("peers".into(), api::counter_map(&s.peers));
        counters.insert("babel".into(), api::counter_map(&s.babel));
        counters.insert("origins".into(), api::counter_map(&s.origins));
        counters.insert("cert_fetch".into(), api::counter_map(&s.cert_fetch));
        counters.insert("liveness".into(), api::counter_map(&s.liveness));
        let mut host = api::counter_map(&s.path.host);
        host.extend((self.host_counters)());
        counters.insert("host".into(), host);
        // Probes of a best-of-n refresh are up (they carry traffic).
        let in_state = |state: &str| s.tunnels.iter().filter(|t| t.state == state).count();
        let (draining, suspect) = (in_state("draining"), in_state("suspect"));
        let up = s.tunnels.len() - draining - suspect;
        Status {
            state: api::NodeState::Running,
            address: s.address,
            prefix: s.prefix,
            serial: s.serial,
            certificate: api::CertificateInfo {
                not_after: s.cert_not_after,
                renewal: s.renewal.to_string(),
            },
            network: s.network,
            ipv4: s.ipv4,
            listen: s.listen,
            advertised: s.advertised.clone(),
            uptime_secs: s.uptime_secs,
            crl_number: s.crl_number,
            host: self.host.clone(),
            tunnels_up: up,
            tunnels_draining: draining,
            tunnels_suspect: suspect,
            tunnels_outgoing: s
                .tunnels
                .iter()
                .filter(|t| t.direction == "outgoing")
                .count(),
            routes: s.routes,
            peer_db: s.peer_db,
            registry: RegistryInfo {
                url: s.registry.url.clone(),
                last_ok: s.registry.last_ok,
                last_error: s.registry.last_error.clone(),
                failures: s.registry.failures,
                next_round_in_secs: s.registry.next_round_in_secs,
            },
            counters,
            edges: crate::control::api::EdgesInfo {
                lan_links: s.tunnels.iter().filter(|t| t.direction == "lan").count(),
                ..s.edges.info()
            },
            probe_rounds: s
                .probe_rounds
                .iter()
                .map(|r| crate::control::api::ProbeRoundInfo {
                    probes: r
                        .probes
                        .iter()
                        .map(|p| crate::control::api::ProbeInfo {
                            peer: p.peer_prefix,
                            rtt_ms: p.rtt_ms,
                            kept: p.kept,
                        })
                        .collect(),
                    cancelled: r.cancelled,
                })
                .collect(),
        }
    }

    /// The tunnels.
    pub async fn tunnels(&self) -> anyhow::Result<Vec<TunnelInfo>> {
        let s = self.node_status().await?;
        Ok(s.tunnels.iter().map(tunnel_info).collect())
    }

    /// Babel's routes, selected first, with the tunnel each goes through.
    pub async fn routes(&self) -> anyhow::Result<Vec<RouteView>> {
        let s = self.node_status().await?;
        let routes = self
            .node
            .routes()
            .await
            .context("the node is shutting down")?;
        let mut out: Vec<RouteView> = routes
            .into_iter()
            .map(|r| {
                let tunnel = r
                    .iface
                    .and_then(|i| s.tunnels.iter().find(|t| t.iface == Some(i.0)));
                RouteView {
                    prefix: r.prefix,
                    metric: r.metric,
                    next_hop: r.neighbour,
                    via: tunnel.map(|t| t.peer_prefix),
                    tunnel: tunnel.map(|t| t.id),
                    selected: r.selected,
                    local: r.local,
                    router_id: r.router_id.0.iter().map(|b| format!("{b:02x}")).collect(),
                    seqno: r.seqno,
                }
            })
            .collect();
        out.sort_by_key(|r| (!r.selected, r.prefix, r.metric));
        Ok(out)
    }

    /// The peer DB.
    pub async fn peers(&self) -> anyhow::Result<Vec<PeerView>> {
        let peers = self
            .node
            .peers()
            .await
            .context("the node is shutting down")?;
        Ok(peers
            .into_iter()
            .map(|p| PeerView {
                prefix: p.prefix,
                serial: p.serial,
                addresses: p.addresses,
                timestamp: p.timestamp,
            })
            .collect())
    }

    /// The Prometheus text exposition.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let s = self.node_status().await?;
        let status = self.status_of(&s);
        let tunnels: Vec<TunnelInfo> = s.tunnels.iter().map(tunnel_info).collect();
        Ok(super::metrics::render(&status, &tunnels))
    }

    /// The answer to `req`.
    pub async fn answer(&self, req: Request) -> Response {
        let r = match req {
            Request::Status => self.status().await.map(|s| Response::Status(Box::new(s))),
            Request::Tunnels => self.tunnels().await.map(Response::Tunnels),
            Request::Routes => self.routes().await.map(Response::Routes),
            Request::Peers => self.peers().await.map(Response::Peers),
            Request::Metrics => self.metrics().await.map(Response::Metrics),
        };
        r.unwrap_or_else(|e| Response::Error(format!("{e:#}")))
    }
}

fn tunnel_info(t: &TunnelStatus) -> TunnelInfo {
    TunnelInfo {
        id: t.id,
        peer_prefix: t.peer_prefix,
        peer_serial: t.peer_serial,
        peer_udp: t.peer_udp,
        direction: t.direction.to_string(),
        state: t.state.to_string(),
        iface: t.iface,
        rtt_ms: t.rtt_ms,
        babel_rtt_ms: t.babel_rtt_ms,
        age_secs: t.age_secs,
        destinations: t.destinations,
        max_datagram_size: t.max_datagram_size,
        tx_packets: t.link.tx_packets,
        tx_bytes: t.link.tx_bytes,
        tx_dropped: t.link.tx_dropped,
        rx_packets: t.link.rx_packets,
        rx_bytes: t.link.rx_bytes,
        transport: t.transport.to_string(),
        quic: t.quic,
    }
}

/// The control socket, removed when dropped.
#[derive(Debug)]
pub struct ControlSocket {
    listener: Option<UnixListener>,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds the socket at `path` with mode 0600. A socket file left by a
    /// node that died is replaced; one that answers means another node runs
    /// with the same state directory, which is refused.
    pub async fn bind(path: &Path) -> anyhow::Result<Self> {
        if path.exists() {
            match UnixStream::connect(path).await {
                Ok(_) => anyhow::bail!(
                    "another node is running with this state directory (its control socket {} answers); stop it first",
                    path.display()
                ),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)
                        .with_context(|| format!("removing the stale socket {}", path.display()))?;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("checking {}", path.display()));
                }
            }
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("binding the control socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", path.display()))?;
        Ok(Self {
            listener: Some(listener),
            path: path.to_path_buf(),
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves requests from what `served` holds at each connection, until
    /// the task is aborted (the socket file is removed when `self` is
    /// dropped).
    pub async fn serve(mut self, served: watch::Receiver<Served>) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let mut clients = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    // Past twice the bound, not even a refusal.
                    Ok((stream, _)) if clients.len() >= 2 * MAX_CLIENTS => drop(stream),
                    Ok((stream, _)) if clients.len() >= MAX_CLIENTS => {
                        tracing::debug!(clients = clients.len(), "control socket busy");
                        clients.spawn(refuse_busy(stream));
                    }
                    Ok((stream, _)) => {
                        let now = served.borrow().clone();
                        clients.spawn(serve_client(stream, now));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = clients.join_next(), if !clients.is_empty() => {}
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A request line as the socket read it (at most one byte more than
/// [`api::MAX_REQUEST`], so that a longer one is seen): the request, or the
/// error answer.
pub fn parse_request(line: &[u8]) -> Result<Request, Response> {
    if line.len() > api::MAX_REQUEST {
        return Err(Response::Error(format!(
            "request longer than {} bytes",
            api::MAX_REQUEST
        )));
    }
    serde_json::from_slice::<Request>(line)
        .map_err(|e| Response::Error(format!("bad request: {e}")))
}

/// Encodes an answer as its line (a response that cannot be encoded
/// becomes an error answer).
pub fn encode_response(response: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(response).unwrap_or_else(|e| {
        serde_json::to_vec(&Response::Error(format!("cannot encode: {e}"))).unwrap_or_default()
    });
    out.push(b'\n');
    out
}

/// Answers a client over [`MAX_CLIENTS`] without reading its request.
async fn refuse_busy(stream: UnixStream) {
    let answer = Response::Error(format!(
        "the node is busy with {MAX_CLIENTS} other control clients; try again"
    ));
    let (read, mut write) = stream.into_split();
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        write.write_all(&encode_response(&answer)),
    )
    .await;
    let _ = write.shutdown().await;
    // Read what the client sent (closing on unread data would reset the
    // connection before it reads the answer), for a second at most.
    let mut sink = Vec::new();
    let mut read = read.take(api::MAX_REQUEST as u64);
    let _ = tokio::time::timeout(Duration::from_secs(1), read.read_to_end(&mut sink)).await;
}

async fn serve_client(stream: UnixStream, served: Served) {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(api::MAX_REQUEST as u64 + 1);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    let response = match read {
        Ok(Ok(_)) => match parse_request(&line) {
            Ok(req) => served.answer(req).await,
            Err(refusal) => refusal,
        },
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "control client read failed");
            return;
        }
        Err(_) => Response::Error("no request within 5 s".into()),
    };
    let _ = write.write_all(&encode_response(&response)).await;
    let _ = write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ask(path: &Path, line: &[u8]) -> String {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(line).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut out))
            .await
            .expect("an answer in time")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn silent_clients_are_bounded_and_the_socket_keeps_answering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let socket = ControlSocket::bind(&path).await.unwrap();
        let (_tx, rx) = watch::channel(Served::Starting);
        let server = tokio::spawn(socket.serve(rx));
        // A flood of clients that connect and say nothing.
        let mut silent = Vec::new();
        for _ in 0..MAX_CLIENTS {
            silent.push(UnixStream::connect(&path).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The next one is told at once.
        let busy = ask(&path, b"{\"query\":\"status\"}\n").await;
        assert!(busy.contains("busy"), "{busy}");
        // Past twice the bound, connections are closed at once.
        let mut more = Vec::new();
        for _ in 0..3 * MAX_CLIENTS {
            if let Ok(c) = UnixStream::connect(&path).await {
                more.push(c);
            }
        }
        drop(more);
        // The silent ones leave: the socket answers normally again.
        drop(silent);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let ok = ask(&path, b"{\"query\":\"status\"}\n").await;
        assert!(ok.contains("starting"), "{ok}");
        server.abort();
    }
}
