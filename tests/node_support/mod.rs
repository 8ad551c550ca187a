//! Shared helpers of the node network tests: an in-process registry, many
//! nodes on loopback with short timers, packet sinks standing in for TUN
//! devices, and probes (UDP packets through the overlay).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use re6st::identity::{Crl, NodeCert, NodeKey};
use re6st::node::{HostConfig, Node, NodeConfig, NodeHandle, NodeStatus};
use re6st::peers::{ExchangeConfig, PeerDbConfig};
use re6st::state_dir::NodeIdentity;
use re6st::transport::TransportConfig;
use re6st::transport::socket::FaultSwitch;
use re6st::tunnels::driver::DriverConfig;
use tokio::sync::mpsc;

use crate::registry_support::TestRegistry;

/// UDP port of the probes (not the peer-exchange port).
pub const PROBE_PORT: u16 = 9;

/// Logs for failing tests: `RUST_LOG=re6st=debug cargo test ...`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Registry options of a test network: open enrolment, `k` tunnels, and
/// the given refresh period.
pub fn registry_args(k: u16, refresh: &str) -> Vec<String> {
    vec![
        "--enrolment".into(),
        "open".into(),
        "--tunnels".into(),
        k.to_string(),
        "--tunnel-refresh".into(),
        refresh.into(),
        "--babel-hello".into(),
        "2s".into(),
        "--babel-update".into(),
        "8s".into(),
    ]
}

/// Short timers for loopback in a debug build on a loaded 2-core machine.
/// The liveness timers (keep-alive, suspect time, idle timeout) are the
/// node's defaults: the reroute figures are the defaults' figures.
pub fn fast_config(seed: u64) -> NodeConfig {
    NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        transport: TransportConfig {
            handshake_timeout: Duration::from_secs(3),
            ..TransportConfig::default()
        },
        peer_db: PeerDbConfig::default(),
        exchange: ExchangeConfig {
            interval: Duration::from_secs(2),
            fanout: 3,
            first_round: Duration::from_millis(1500),
            ..ExchangeConfig::default()
        },
        driver: DriverConfig {
            linger: Duration::from_millis(200),
            peer_wait: Duration::from_secs(3),
            quarantine: Duration::from_secs(2),
        },
        backoff_min: Duration::from_millis(500),
        backoff_max: Duration::from_secs(4),
        drain_timeout: Duration::from_secs(5),
        registry_interval: Duration::from_secs(3600),
        bootstrap_retry: Duration::from_millis(500),
        host: HostConfig::Sink { capacity: 65536 },
        fault_switch: Some(FaultSwitch::new()),
        seed: Some(seed),
        ..NodeConfig::default()
    }
}

/// A node's enrolment and first documents, kept to restart it even when
/// the registry is down.
#[derive(Clone)]
pub struct Enrolled {
    pub cert: NodeCert,
    pub key_pem: String,
    pub crl_pem: String,
    pub network: re6st::identity::SignedNetworkConfig,
}

impl Enrolled {
    pub fn identity(&self, ca_der: &[u8]) -> NodeIdentity {
        NodeIdentity {
            key: NodeKey::from_pem(&self.key_pem).unwrap(),
            cert: self.cert.clone(),
            ca_der: ca_der.to_vec(),
            ca_key: re6st::identity::ca_public_key(ca_der).unwrap(),
            crl: Some(Crl::from_pem(&self.crl_pem, ca_der).unwrap()),
            network: Some(self.network.clone()),
        }
    }
}

/// What a probe packet carries: (from node, to node, sequence number).
pub type Probe = (u16, u16, u32);

/// A running test node and what its sink received.
pub struct TestNode {
    pub handle: NodeHandle,
    pub enrolled: Enrolled,
    pub state: tempfile::TempDir,
    /// Probes delivered to this node's host side, with their arrival time.
    pub received: Arc<Mutex<Vec<(Probe, Instant)>>>,
    /// Other packets delivered to the host side.
    pub other: Arc<Mutex<u64>>,
    reader: tokio::task::JoinHandle<()>,
    /// Packets to inject into this node.
    inject: mpsc::UnboundedSender<Vec<u8>>,
}

impl TestNode {
    /// Injects a packet as the host.
    pub fn send(&self, packet: Vec<u8>) {
        let _ = self.inject.send(packet);
    }
}

/// A network: one registry, nodes indexed by their position.
pub struct Net {
    pub registry: Option<TestRegistry>,
    pub ca_der: Vec<u8>,
    pub nodes: Vec<Option<TestNode>>,
    pub k: u16,
    pub config: Box<dyn Fn(u64) -> NodeConfig + Send>,
}

/// Builds an IPv6/UDP probe packet from node `a` to node `b`.
pub fn probe_packet(src: Ipv6Addr, dst: Ipv6Addr, p: Probe) -> Vec<u8> {
    let mut payload = Vec::with_capacity(10);
    payload.extend_from_slice(&p.0.to_be_bytes());
    payload.extend_from_slice(&p.1.to_be_bytes());
    payload.extend_from_slice(&p.2.to_be_bytes());
    let udp_len = 8 + payload.len();
    let mut pkt = vec![0x60, 0, 0, 0];
    pkt.extend_from_slice(&(udp_len as u16).to_be_bytes());
    pkt.push(17);
    pkt.push(64);
    pkt.extend_from_slice(&src.octets());
    pkt.extend_from_slice(&dst.octets());
    pkt.extend_from_slice(&PROBE_PORT.to_be_bytes());
    pkt.extend_from_slice(&PROBE_PORT.to_be_bytes());
    pkt.extend_from_slice(&(udp_len as u16).to_be_bytes());
    pkt.extend_from_slice(&[0, 0]); // no checksum needed by the overlay
    pkt.extend_from_slice(&payload);
    pkt
}

fn parse_probe(p: &[u8]) -> Option<Probe> {
    if p.len() != 40 + 8 + 8 || p[6] != 17 || p[42..44] != PROBE_PORT.to_be_bytes() {
        return None;
    }
    let d = &p[48..];
    Some((
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
        u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
    ))
}

impl Net {
    /// A registry with `args` and no node yet.
    pub async fn new(k: u16, args: &[String]) -> Self {
        init_tracing();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let registry = TestRegistry::start(&args).await;
        let ca_der = registry.ca_der.clone();
        Self {
            registry: Some(registry),
            ca_der,
            nodes: Vec::new(),
            k,
            config: Box::new(fast_config),
        }
    }

    pub fn registry(&self) -> &TestRegistry {
        self.registry.as_ref().expect("registry running")
    }

    /// Bootstrap requests the registry answered so far.
    pub fn bootstraps(&self) -> u64 {
        self.registry()
            .registry
            .bootstrap_requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A new identity from the registry.
    pub async fn enrol(&self) -> Enrolled {
        let r = self.registry();
        let node = r.enrol(None).await;
        Enrolled {
            key_pem: node.key.to_pem(),
            cert: node.cert,
            crl_pem: r.anon().crl().await.unwrap(),
            network: r.anon().network().await.unwrap(),
        }
    }

    /// Enrols and starts `n` more nodes.
    pub async fn add_nodes(&mut self, n: usize) {
        for _ in 0..n {
            let enrolled = self.enrol().await;
            let state = tempfile::tempdir().unwrap();
            let i = self.nodes.len();
            let t = self.start(i, enrolled, state).await;
            self.nodes.push(Some(t));
        }
    }

    /// Starts node `i` (again) from its enrolment and state directory.
    pub async fn start(&self, i: usize, enrolled: Enrolled, state: tempfile::TempDir) -> TestNode {
        let id = enrolled.identity(&self.ca_der);
        let mut config = (self.config)(i as u64);
        config.state_dir = Some(state.path().to_path_buf());
        self.start_with(i, enrolled, state, id, config).await
    }

    /// Starts node `i` from an identity, without asking the registry
    /// anything here (the node itself may).
    pub async fn start_with(
        &self,
        _i: usize,
        enrolled: Enrolled,
        state: tempfile::TempDir,
        id: NodeIdentity,
        config: NodeConfig,
    ) -> TestNode {
        let mut handle = Node::start(config, id).await.unwrap();
        let mut sink = handle.take_sink().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let other = Arc::new(Mutex::new(0u64));
        let (inject, mut inject_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let (rcv, oth) = (received.clone(), other.clone());
        let reader = tokio::spawn(async move {
            loop {
                tokio::select! {
                    p = sink.recv() => {
                        let Some(p) = p else { return };
                        match parse_probe(&p) {
                            Some(probe) => rcv.lock().unwrap().push((probe, Instant::now())),
                            None => *oth.lock().unwrap() += 1,
                        }
                    }
                    p = inject_rx.recv() => {
                        let Some(p) = p else { return };
                        sink.send(&p);
                    }
                }
            }
        });
        TestNode {
            handle,
            enrolled,
            state,
            received,
            other,
            reader,
            inject,
        }
    }

    pub fn node(&self, i: usize) -> &TestNode {
        self.nodes[i].as_ref().expect("node running")
    }

    pub fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// Statuses of the running nodes.
    pub async fn statuses(&self) -> BTreeMap<usize, NodeStatus> {
        let mut out = BTreeMap::new();
        for i in self.alive() {
            if let Some(s) = self.node(i).handle.status().await {
                out.insert(i, s);
            }
        }
        out
    }

    /// Sends a probe from `a` to `b`.
    pub fn probe(&self, a: usize, b: usize, seq: u32) {
        let (na, nb) = (self.node(a), self.node(b));
        na.send(probe_packet(
            na.handle.address(),
            nb.handle.address(),
            (a as u16, b as u16, seq),
        ));
    }

    /// Whether `b` received probe `seq` from `a`.
    pub fn got(&self, a: usize, b: usize, seq: u32) -> bool {
        self.node(b)
            .received
            .lock()
            .unwrap()
            .iter()
            .any(|((x, y, s), _)| (*x, *y, *s) == (a as u16, b as u16, seq))
    }

    /// Probes every ordered pair of running nodes until each one got
    /// through; returns how long it took, or the pairs still missing.
    pub async fn all_pairs_reach(
        &self,
        seq: u32,
        timeout: Duration,
    ) -> Result<Duration, Vec<(usize, usize)>> {
        let t0 = Instant::now();
        let alive = self.alive();
        let mut missing: BTreeSet<(usize, usize)> = alive
            .iter()
            .flat_map(|a| alive.iter().filter(move |b| *b != a).map(move |b| (*a, *b)))
            .collect();
        let mut round = 0u32;
        loop {
            for (a, b) in &missing {
                self.probe(*a, *b, seq + round);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            missing.retain(|(a, b)| !(0..=round).any(|r| self.got(*a, *b, seq + r)));
            round += 1;
            if missing.is_empty() {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > timeout {
                return Err(missing.into_iter().collect());
            }
        }
    }

    /// Waits until `cond` holds on the statuses, polling.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&BTreeMap<usize, NodeStatus>) -> bool,
    ) -> Duration {
        let t0 = Instant::now();
        loop {
            let s = self.statuses().await;
            if cond(&s) {
                return t0.elapsed();
            }
            if t0.elapsed() > timeout {
                let summary: Vec<String> = s
                    .iter()
                    .map(|(i, st)| {
                        let mut states = BTreeMap::<String, usize>::new();
                        for t in &st.tunnels {
                            *states
                                .entry(format!("{} {}", t.direction, t.state))
                                .or_default() += 1;
                        }
                        format!(
                            "n{i}: {} tunnels {states:?}, db {}, routes {}",
                            st.tunnels.len(),
                            st.peer_db,
                            st.routes
                        )
                    })
                    .collect();
                panic!("timed out waiting for {what}:\n{}", summary.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops node `i` dead (no goodbye on the wire); returns what it
    /// takes to start it again.
    pub fn kill(&mut self, i: usize) -> (Enrolled, tempfile::TempDir) {
        let n = self.nodes[i].take().expect("running");
        let TestNode {
            handle,
            enrolled,
            reader,
            state,
            ..
        } = n;
        handle.kill();
        reader.abort();
        (enrolled, state)
    }
}

/// Tunnels that are up (not draining).
pub fn up_tunnels(s: &NodeStatus) -> usize {
    s.tunnels.iter().filter(|t| t.state == "up").count()
}

/// Own (outgoing) tunnels that are up.
pub fn own_tunnels(s: &NodeStatus) -> usize {
    s.tunnels
        .iter()
        .filter(|t| t.state == "up" && t.direction == "outgoing")
        .count()
}

pub fn now_unix() -> u64 {
    re6st::identity::unix_secs(SystemTime::now())
}
