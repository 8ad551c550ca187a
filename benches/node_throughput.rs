//! Throughput of the node's packet path over QUIC on loopback, as a ratio
//! to raw quinn datagrams measured in the same run (no TUN: packets enter
//! and leave through the nodes' packet sinks, channels to the packet loop).
//!
//! `cargo bench --bench node_throughput` prints, for 1400-byte packets:
//! - raw: one quinn connection, `send_datagram_wait` of one shared buffer;
//! - 1 hop: node A's packet path -> tunnel -> node B's host side;
//! - 2 hops: A -> X -> B, X forwarding between two tunnels.
//!
//! One process, two tokio worker threads, so sender, receiver (and relay)
//! share the 2 cores: a lower bound for separate machines. Set
//! `RE6ST_BENCH_SECS` to change the duration of each case (default 3).

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use re6st::identity::{
    NetworkConfig, NodeCert, NodeKey, PeerAnnouncement, SignedAnnouncement, unix_secs,
};
use re6st::node::{HostConfig, Node, NodeConfig, NodeHandle, PacketSink};
use re6st::state_dir::NodeIdentity;
use re6st::transport::{Transport, TransportConfig};

mod dataplane_util;

const PACKET: usize = 1400;

/// The bench's network: the shared test PKI for `fd00:be:ef::/48` and a
/// signed network configuration.
struct Pki {
    pki: re6st::test_pki::Pki,
    network: re6st::identity::SignedNetworkConfig,
}

impl Pki {
    fn new() -> Self {
        let pki = re6st::test_pki::Pki::with_network("fd00:be:ef::/48".parse().unwrap());
        let mut cfg = NetworkConfig::defaults(pki.network, String::new());
        // One own tunnel each: the bench chooses the topology.
        cfg.tunnels = 1;
        cfg.max_tunnels = 3;
        let network = cfg.sign(&pki.ca).unwrap();
        Self { pki, network }
    }

    /// Node `i`, prefix `fd00:be:ef:<i>::/64`, with its identity.
    fn node(&self, i: u16) -> (NodeCert, NodeKey, NodeIdentity) {
        let (cert, key) = self.pki.node(u64::from(i));
        let ca_der = self.pki.ca.cert_der();
        let id = NodeIdentity {
            key: NodeKey::from_pem(&key.to_pem()).unwrap(),
            cert: cert.clone(),
            ca_der: ca_der.to_vec(),
            ca_key: re6st::identity::ca_public_key(ca_der).unwrap(),
            crl: None,
            network: Some(self.network.clone()),
        };
        (cert, key, id)
    }
}

/// What a node's host received.
#[derive(Default)]
struct Counting {
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl Counting {
    /// Counts what `sink` receives, until the node stops.
    fn drain(mut sink: PacketSink) -> Arc<Self> {
        let c = Arc::new(Counting::default());
        let counting = c.clone();
        tokio::spawn(async move {
            while let Some(p) = sink.recv().await {
                counting.packets.fetch_add(1, Ordering::Relaxed);
                counting.bytes.fetch_add(p.len() as u64, Ordering::Relaxed);
            }
        });
        c
    }
}

/// A channel host side holding a few batches.
fn sink() -> HostConfig {
    HostConfig::Sink { capacity: 4096 }
}

fn config(host: HostConfig, seed: Vec<SignedAnnouncement>) -> NodeConfig {
    NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        registry_url: Some(String::new()),
        host,
        seed_peers: seed,
        ..NodeConfig::default()
    }
}

fn announce(cert: &NodeCert, key: &NodeKey, node: &NodeHandle) -> SignedAnnouncement {
    PeerAnnouncement {
        prefix: cert.prefix,
        addresses: vec![node.local_addr()],
        timestamp: unix_secs(SystemTime::now()),
        tcp_port: None,
        topology: None,
    }
    .sign(cert, key)
    .unwrap()
}

fn udp_packet(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut p = dataplane_util::packet(src, dst, PACKET);
    p[40..42].copy_from_slice(&9u16.to_be_bytes());
    p[42..44].copy_from_slice(&9u16.to_be_bytes());
    p[44..46].copy_from_slice(&((PACKET - 40) as u16).to_be_bytes());
    p
}

fn secs() -> Duration {
    Duration::from_secs(
        std::env::var("RE6ST_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    )
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64() / 1e9
}

/// Raw quinn: the ceiling the overlay is compared with.
async fn raw(pki: &Pki) -> f64 {
    let (ca, cb) = (pki.node(1), pki.node(2));
    let mk = |c: &(NodeCert, NodeKey, NodeIdentity)| {
        Arc::new(
            Transport::bind(
                "127.0.0.1:0".parse().unwrap(),
                c.0.clone(),
                &c.1,
                pki.pki.ca.cert_der(),
                None,
                TransportConfig::default(),
                None,
            )
            .unwrap(),
        )
    };
    let (a, b) = (mk(&ca), mk(&cb));
    let b2 = b.clone();
    let acc = tokio::spawn(async move {
        let inc = b2.accept().await.unwrap();
        b2.handshake(inc).await.unwrap()
    });
    let out = a
        .dial(&[b.local_addr().unwrap()], cb.0.address)
        .await
        .unwrap();
    let inc = acc.await.unwrap();
    let got = Arc::new(AtomicU64::new(0));
    let g = got.clone();
    let rx = tokio::spawn(async move {
        while let Ok(d) = inc.conn.read_datagram().await {
            g.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
    });
    let buf = Bytes::from(vec![0x60u8; PACKET]);
    let d = secs();
    let t0 = Instant::now();
    let start = got.load(Ordering::Relaxed);
    while t0.elapsed() < d {
        if out.conn.send_datagram_wait(buf.clone()).await.is_err() {
            break;
        }
    }
    let r = gbps(got.load(Ordering::Relaxed) - start, t0.elapsed());
    rx.abort();
    r
}

/// Sends through `path` to `dst` for the bench duration with at most
/// `window` packets in flight (packets QUIC dropped are written off after
/// 5 ms without progress), like a TCP sender over the overlay would.
async fn flood(node: &mut NodeHandle, dst: Ipv6Addr, sink: &Counting) -> f64 {
    let window: u64 = std::env::var("RE6ST_BENCH_WINDOW")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2048);
    let input = node.take_sink().expect("a sink host");
    let template = udp_packet(node.address(), dst);
    let mut big = BytesMut::new();
    let d = secs();
    let t0 = Instant::now();
    let start = sink.bytes.load(Ordering::Relaxed);
    let rx0 = sink.packets.load(Ordering::Relaxed);
    let (mut sent, mut written_off) = (0u64, 0u64);
    let (mut last_rx, mut last_progress) = (0u64, Instant::now());
    while t0.elapsed() < d {
        let rx = sink.packets.load(Ordering::Relaxed) - rx0;
        if rx != last_rx {
            last_rx = rx;
            last_progress = Instant::now();
        }
        // Packets written off as lost may still arrive later: never below 0.
        let in_flight = sent.saturating_sub(rx + written_off);
        if in_flight >= window {
            if last_progress.elapsed() > Duration::from_millis(5) {
                written_off += in_flight - window / 2;
                last_progress = Instant::now();
            }
            tokio::task::yield_now().await;
            continue;
        }
        // Packets are slices of one large buffer, as a TUN batch gives them.
        for _ in 0..64 {
            if big.len() < PACKET {
                big = BytesMut::with_capacity(PACKET * 256);
                for _ in 0..256 {
                    big.extend_from_slice(&template);
                }
            }
            if input.send(&big.split_to(PACKET)) {
                sent += 1;
            }
        }
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = gbps(sink.bytes.load(Ordering::Relaxed) - start, t0.elapsed());
    let delivered = sink.packets.load(Ordering::Relaxed);
    let st = node.status().await.unwrap();
    eprintln!(
        "    sent {sent}, delivered {delivered} ({:.1}% lost), tx dropped by QUIC {}, send failures {}",
        100.0 * (sent - delivered.min(sent)) as f64 / sent.max(1) as f64,
        st.tunnels.iter().map(|t| t.link.tx_dropped).sum::<u64>(),
        st.path.send_failed,
    );
    r
}

async fn wait_route(node: &NodeHandle, dst: Ipv6Addr) {
    let t0 = Instant::now();
    while node.next_hop(dst).await.is_none() {
        assert!(t0.elapsed() < Duration::from_secs(20), "no route");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn one_hop(pki: &Pki) -> f64 {
    let (ca, ka, ia) = pki.node(11);
    let (cb, kb, ib) = pki.node(12);
    let mut b = Node::start(config(sink(), vec![]), ib).await.unwrap();
    let received = Counting::drain(b.take_sink().unwrap());
    let seed = vec![announce(&cb, &kb, &b)];
    let mut a = Node::start(config(sink(), seed), ia).await.unwrap();
    let _ = (ca, ka);
    wait_route(&a, b.address()).await;
    let r = flood(&mut a, b.address(), &received).await;
    a.shutdown().await;
    b.shutdown().await;
    r
}

async fn two_hops(pki: &Pki) -> f64 {
    let (cx, kx, ix) = pki.node(21);
    let (_, _, ia) = pki.node(22);
    let (_, _, ib) = pki.node(23);
    let x = Node::start(config(sink(), vec![]), ix).await.unwrap();
    let via_x = vec![announce(&cx, &kx, &x)];
    let mut b = Node::start(config(sink(), via_x.clone()), ib)
        .await
        .unwrap();
    let received = Counting::drain(b.take_sink().unwrap());
    let mut a = Node::start(config(sink(), via_x), ia).await.unwrap();
    wait_route(&a, b.address()).await;
    assert_eq!(
        a.next_hop(b.address()).await,
        Some(x.prefix()),
        "A reaches B through X"
    );
    let r = flood(&mut a, b.address(), &received).await;
    a.shutdown().await;
    b.shutdown().await;
    x.shutdown().await;
    r
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pki = Pki::new();
        let raw = raw(&pki).await;
        let one = one_hop(&pki).await;
        let two = two_hops(&pki).await;
        println!(
            "node_throughput ({PACKET}-byte packets, loopback, 2 worker threads, {:?} each):",
            secs()
        );
        println!("  raw quinn datagrams   {raw:6.2} Gbit/s");
        println!(
            "  overlay, 1 hop        {one:6.2} Gbit/s  ratio to raw {:.2}",
            one / raw
        );
        println!(
            "  overlay, 2 hops       {two:6.2} Gbit/s  ratio to raw {:.2}",
            two / raw
        );
    });
}
