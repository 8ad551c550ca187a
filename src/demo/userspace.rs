//! The demo without root: the registry and the nodes run in this process
//! on loopback, each node with the userspace host (no TUN device), which
//! answers pings to its address and pings other nodes through the overlay.
//! The nodes are the same code as `re6st node --no-tun`.

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use re6st::control::api::HostInfo;
use re6st::control::server::Source;
use re6st::identity::tls::Trust;
use re6st::identity::{Crl, NodeCert, NodeKey, ca_public_key, make_csr};
use re6st::node::host::echo::{self as echo_host, EchoCounters, EchoHost};
use re6st::node::program::options::DEFAULT_MTU;
use re6st::node::{HostConfig, HostSlot, Node, NodeConfig};
use re6st::registry::client::RegistryClient;
use re6st::registry::core::Registry;
use re6st::state_dir::NodeIdentity;

use super::{DemoArgs, DemoNode, Ping, step};

struct UserNode {
    source: Source,
    echo: EchoHost,
}

/// The running network (stopped when dropped).
pub(crate) struct UserNet {
    nodes: Vec<DemoNode>,
    running: Vec<UserNode>,
    registry: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for UserNet {
    fn drop(&mut self) {
        self.registry.abort();
    }
}

/// Enrols a new node with the in-process registry (what `re6st join`
/// does, without a state directory).
async fn enrol(url: &str, ca_der: &[u8]) -> anyhow::Result<NodeIdentity> {
    let key = NodeKey::generate()?;
    let client = RegistryClient::new(url, &Trust::new(ca_der, None), None)?;
    let resp = client.enrol(&make_csr(&key)?, None).await?;
    Ok(NodeIdentity {
        cert: NodeCert::from_pem(&resp.certificate)?,
        key,
        ca_der: ca_der.to_vec(),
        ca_key: ca_public_key(ca_der)?,
        crl: Some(Crl::from_pem(&resp.crl, ca_der)?),
        network: Some(resp.network),
    })
}

impl UserNet {
    pub(crate) async fn start(args: &DemoArgs) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a working directory")?;
        step(1, "underlay: loopback (127.0.0.1), one UDP port per node");
        step(
            2,
            "registry, then the nodes (each joins and starts, without a TUN device)",
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
        let now = SystemTime::now();
        let (k, refresh) = (args.tunnels, args.refresh.as_secs().max(1));
        let registry = Registry::open(
            &dir.path().join("registry"),
            None,
            url.clone(),
            |s| {
                s.open = true;
                s.network.tunnels = k;
                s.network.max_tunnels = k.saturating_mul(3);
                s.network.tunnel_refresh_secs = refresh;
                s.network.babel_hello_ms = 1000;
                s.network.babel_ihu_ms = 3000;
                s.network.babel_update_ms = 4000;
            },
            now,
        )?;
        let network = registry.network;
        let ca_der = registry.ca.cert_der().to_vec();
        let tls = re6st::registry::server::server_tls(&registry, &["127.0.0.1".into()], now)?;
        let registry = tokio::spawn(re6st::registry::server::serve(
            Arc::new(registry),
            listener,
            tls,
            Duration::from_secs(60),
            std::future::pending(),
        ));
        println!(
            "      registry {url} (in this process): network {network}, k = {k} tunnels per node, refresh every {refresh}s"
        );
        let mut nodes = Vec::new();
        let mut running = Vec::new();
        for i in 1..=args.nodes {
            let name = format!("node{i}");
            let identity = enrol(&url, &ca_der).await?;
            let counters = Arc::new(EchoCounters::default());
            let (host, queue) = echo_host::channel();
            let config = NodeConfig {
                listen: "127.0.0.1:0".parse()?,
                host: HostConfig::External(HostSlot::new(host)),
                ..NodeConfig::default()
            };
            let node = Arc::new(Node::start(config, identity).await?);
            let echo = EchoHost::start(node.address(), queue, counters.clone());
            println!(
                "      {name}: {} on UDP {}",
                node.address(),
                node.local_addr()
            );
            nodes.push(DemoNode {
                name,
                address: node.address(),
                prefix: node.prefix(),
            });
            let info = HostInfo {
                mode: "none".into(),
                device: None,
                offload: false,
                mtu: DEFAULT_MTU,
                queues: 0,
                route: "none".into(),
            };
            let source = Source::new(node, info, move || counters.snapshot());
            running.push(UserNode { source, echo });
        }
        Ok(Self {
            nodes,
            running,
            registry,
            _dir: dir,
        })
    }

    pub(crate) fn nodes(&self) -> &[DemoNode] {
        &self.nodes
    }

    pub(crate) fn source(&self, i: usize) -> &Source {
        &self.running[i].source
    }

    /// `count` userspace pings, `interval` apart.
    pub(crate) async fn ping(
        &self,
        from: usize,
        to: Ipv6Addr,
        count: u32,
        interval: Duration,
    ) -> Ping {
        let echo = &self.running[from].echo;
        let mut p = Ping {
            sent: count,
            ..Ping::default()
        };
        let mut total = 0.0;
        for k in 0..count {
            if k > 0 {
                tokio::time::sleep(interval).await;
            }
            if let Some(rtt) = echo.ping(to, Duration::from_secs(2)).await {
                p.received += 1;
                total += rtt.as_secs_f64() * 1000.0;
            }
        }
        if p.received > 0 {
            p.avg_ms = Some(total / f64::from(p.received));
        }
        p
    }
}
