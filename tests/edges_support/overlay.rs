//! An overlay inside namespaces: a registry bound to a namespace address,
//! nodes enrolled with it and run in-process on namespace runtimes, and
//! probes (IPv6/UDP packets through the overlay's packet sinks).

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;

use re6st::identity::tls::Trust;
use re6st::identity::{Crl, NodeCert, NodeKey, make_csr};
use re6st::node::{HostConfig, Node, NodeConfig, NodeHandle, NodeStatus, PacketSink};
use re6st::peers::ExchangeConfig;
use re6st::registry::client::RegistryClient;
use re6st::state_dir::NodeIdentity;
use re6st::transport::TransportConfig;
use re6st::tunnels::driver::DriverConfig;

use super::{NsRuntime, registry_support};

/// A registry serving on `ip` inside a namespace: the registry tests' one,
/// started on the namespace's runtime.
pub struct TestRegistry {
    pub url: String,
    pub ca_der: Vec<u8>,
    _inner: registry_support::TestRegistry,
}

impl TestRegistry {
    /// Starts on `rt` (its namespace) at `ip`: open enrolment, `k` tunnels,
    /// no refresh during a test, quick Babel.
    pub fn start(rt: &NsRuntime, ip: &str, k: u16) -> TestRegistry {
        let ip = ip.to_string();
        let k = k.to_string();
        let inner = rt.run(async move {
            let extra = [
                "--enrolment",
                "open",
                "--tunnels",
                &k,
                "--tunnel-refresh",
                "1h",
                "--babel-hello",
                "1s",
                "--babel-update",
                "4s",
            ];
            registry_support::TestRegistry::start_at(&ip, tempfile::tempdir().unwrap(), &extra)
                .await
        });
        TestRegistry {
            url: inner.url.clone(),
            ca_der: inner.ca_der.clone(),
            _inner: inner,
        }
    }

    /// Enrols a new node from `rt` (its namespace) and returns its
    /// identity with the CRL and network configuration.
    pub fn enrol(&self, rt: &NsRuntime) -> NodeIdentity {
        let (url, ca_der) = (self.url.clone(), self.ca_der.clone());
        rt.run(async move {
            let anon = RegistryClient::new(&url, &Trust::new(&ca_der, None), None).unwrap();
            let key = NodeKey::generate().unwrap();
            let resp = anon.enrol(&make_csr(&key).unwrap(), None).await.unwrap();
            NodeIdentity {
                cert: NodeCert::from_pem(&resp.certificate).unwrap(),
                key,
                ca_key: re6st::identity::ca_public_key(&ca_der).unwrap(),
                crl: Some(Crl::from_pem(&anon.crl().await.unwrap(), &ca_der).unwrap()),
                network: Some(anon.network().await.unwrap()),
                ca_der,
            }
        })
    }
}

/// Node settings for namespace tests: dual-stack port 4326, short timers.
pub fn node_config(seed: u64) -> NodeConfig {
    NodeConfig {
        listen: "[::]:4326".parse().unwrap(),
        transport: TransportConfig {
            keep_alive: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(3),
            ..TransportConfig::default()
        },
        exchange: ExchangeConfig {
            interval: Duration::from_secs(2),
            fanout: 3,
            first_round: Duration::from_millis(1000),
            ..ExchangeConfig::default()
        },
        driver: DriverConfig {
            linger: Duration::from_millis(300),
            quarantine: Duration::from_secs(2),
            ..DriverConfig::default()
        },
        backoff_min: Duration::from_millis(500),
        backoff_max: Duration::from_secs(2),
        registry_interval: Duration::from_secs(3600),
        bootstrap_retry: Duration::from_millis(500),
        host: HostConfig::Sink { capacity: 1024 },
        seed: Some(seed),
        ..NodeConfig::default()
    }
}

/// A node running on a namespace runtime.
pub struct TestNode {
    pub rt: NsRuntime,
    pub handle: Option<Arc<NodeHandle>>,
    pub sink: Option<PacketSink>,
}

impl TestNode {
    pub fn start(rt: NsRuntime, config: NodeConfig, id: NodeIdentity) -> TestNode {
        let mut handle = rt.run(async move { Node::start(config, id).await.unwrap() });
        let sink = handle.take_sink();
        TestNode {
            rt,
            handle: Some(Arc::new(handle)),
            sink,
        }
    }

    pub fn handle(&self) -> &Arc<NodeHandle> {
        self.handle.as_ref().unwrap()
    }

    pub fn address(&self) -> Ipv6Addr {
        self.handle().address()
    }

    pub fn status(&self) -> NodeStatus {
        let h = self.handle().clone();
        self.rt.run(async move { h.status().await.unwrap() })
    }

    /// Prefixes in the node's peer DB.
    pub fn peer_prefixes(&self) -> Vec<ipnet::Ipv6Net> {
        let h = self.handle().clone();
        self.rt
            .run(async move { h.peers().await.unwrap() })
            .into_iter()
            .map(|e| e.prefix)
            .collect()
    }

    /// Polls the status until `f` holds (then returns it) or `timeout`.
    pub fn wait_status(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&NodeStatus) -> bool,
    ) -> Result<NodeStatus, Box<NodeStatus>> {
        let end = std::time::Instant::now() + timeout;
        loop {
            let s = self.status();
            if f(&s) {
                return Ok(s);
            }
            if std::time::Instant::now() > end {
                return Err(Box::new(s));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Injects `packet` as this node's host.
    pub fn send(&self, packet: &[u8]) {
        assert!(self.sink.as_ref().unwrap().send(packet));
    }

    /// Waits for a packet delivered to this node's host that `f` accepts.
    pub fn recv_matching(&mut self, timeout: Duration, f: impl Fn(&[u8]) -> bool) -> bool {
        let end = std::time::Instant::now() + timeout;
        let sink = self.sink.as_mut().unwrap();
        while std::time::Instant::now() < end {
            match sink.try_recv() {
                Some(p) if f(&p) => return true,
                Some(_) => {}
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        false
    }

    /// Shuts the node down cleanly (UPnP mapping removed, routes
    /// retracted).
    pub fn shutdown(mut self) {
        let h = Arc::into_inner(self.handle.take().unwrap()).expect("no other handle");
        self.rt.run(async move { h.shutdown().await });
    }
}

/// An IPv6/UDP packet from `src` to `dst` carrying `tag` (port 9).
pub fn probe(src: Ipv6Addr, dst: Ipv6Addr, tag: u32) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0, 0, 12, 17, 64];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, 9, 0, 9, 0, 12, 0, 0]);
    p.extend_from_slice(&tag.to_be_bytes());
    p
}

/// Whether `p` is the probe `tag`.
pub fn is_probe(p: &[u8], tag: u32) -> bool {
    p.len() == 52 && p[6] == 17 && p[48..52] == tag.to_be_bytes()
}
