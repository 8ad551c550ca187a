//! Babel's RTT metric on real kernels, with latency injected in userspace
//! (there is no netem here): nodes `a`, `b`, `d` in a triangle of veths,
//! where the direct tunnel a–d goes through a UDP relay that holds every
//! datagram for 40 ms each way. The network keeps the default RTT penalty
//! (up to 1000 at 300 ms, where a hop costs 96), so the two-hop path a–b–d,
//! fast, must win over the one-hop path a–d, slow; the pings prove the
//! traffic takes it. (With babeld's `type tunnel` values, 96 at 120 ms,
//! the direct path would stay.)
//!
//! The registry sits on a management bridge that only it uses.

mod realnet_support;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use realnet_support::{FAST, enter, lab_or_skip, start_node, start_registry, wait_until};

/// One-way delay of the relay.
const DELAY: Duration = Duration::from_millis(40);

/// Where a delayed datagram goes.
enum To {
    Back(Arc<UdpSocket>),
    Client(SocketAddr),
}

/// A UDP relay in a namespace: what reaches `front` goes to `back` after
/// [`DELAY`], from a socket of its own per client, and the answers go back
/// to the client after [`DELAY`] too. Stops when dropped.
struct DelayRelay {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl DelayRelay {
    fn start(ns: String, front: SocketAddr, back: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>, To)>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let s = stop.clone();
        let receiver = std::thread::spawn(move || {
            enter(&ns);
            let front = Arc::new(UdpSocket::bind(front).expect("relay front"));
            front
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            ready_tx.send(front.clone()).unwrap();
            let clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
            let mut buf = vec![0u8; 65536];
            let mut backs = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = front.recv_from(&mut buf) else {
                    continue;
                };
                let up = clients.lock().unwrap().get(&from).cloned();
                let up = match up {
                    Some(u) => u,
                    None => {
                        let u = Arc::new(UdpSocket::bind("[::]:0").unwrap());
                        u.connect(back).unwrap();
                        u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                        clients.lock().unwrap().insert(from, u.clone());
                        let (u2, tx2, s2) = (u.clone(), tx.clone(), s.clone());
                        // Answers from the back end, towards this client.
                        backs.push(std::thread::spawn(move || {
                            let mut buf = vec![0u8; 65536];
                            while !s2.load(Ordering::Relaxed) {
                                if let Ok(n) = u2.recv(&mut buf) {
                                    let due = Instant::now() + DELAY;
                                    let _ = tx2.send((due, buf[..n].to_vec(), To::Client(from)));
                                }
                            }
                        }));
                        u
                    }
                };
                let _ = tx.send((Instant::now() + DELAY, buf[..n].to_vec(), To::Back(up)));
            }
            for b in backs {
                let _ = b.join();
            }
        });
        let front = ready_rx.recv().expect("relay started");
        let s = stop.clone();
        // Sends each datagram when it is due (the same delay for all keeps
        // them in order).
        let sender = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((due, data, to)) = rx.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let _ = match to {
                    To::Back(u) => u.send(&data),
                    To::Client(c) => front.send_to(&data, c),
                };
            }
        });
        Self {
            stop,
            threads: vec![receiver, sender],
        }
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn rtt_metric_prefers_two_fast_hops_over_one_slow_hop() {
    let Some(mut lab) = lab_or_skip(
        "rtt_metric_prefers_two_fast_hops_over_one_slow_hop",
        "latency",
    ) else {
        return;
    };
    let mgmt: Vec<(&str, &str)> = vec![
        ("a", "fd00:ff::a/64"),
        ("b", "fd00:ff::b/64"),
        ("d", "fd00:ff::d/64"),
    ];
    lab.star("mgmt", "fd00:ff::ff/64", &mgmt).unwrap();
    for (x, y) in [("a", "b"), ("b", "d"), ("a", "d")] {
        lab.veth(
            (x, &format!("{x}{y}"), Some(&format!("fd00:{x}{y}::{x}/64"))),
            (y, &format!("{y}{x}"), Some(&format!("fd00:{x}{y}::{y}/64"))),
        )
        .unwrap();
    }
    let _relay = DelayRelay::start(
        lab.ns("d"),
        "[fd00:ad::d]:5000".parse().unwrap(),
        "[fd00:ad::d]:4326".parse().unwrap(),
    );
    let fp = start_registry(
        &mut lab,
        "mgmt",
        "[fd00:ff::ff]:8443",
        &["fd00:ff::ff"],
        2,
        &[],
    );
    let url = "https://[fd00:ff::ff]:8443";
    // a is reachable only from b (d cannot dial it); d is reachable from a
    // only through the relay.
    let a = start_node(&mut lab, "a", url, &fp, &["[fd00:ab::a]:4326"], FAST);
    let b = start_node(
        &mut lab,
        "b",
        url,
        &fp,
        &["[fd00:ab::b]:4326", "[fd00:bd::b]:4326"],
        FAST,
    );
    let d = start_node(
        &mut lab,
        "d",
        url,
        &fp,
        &["[fd00:bd::d]:4326", "[fd00:ad::d]:5000"],
        FAST,
    );

    let slow_rtt = || {
        a.tunnels()
            .iter()
            .find(|t| t.peer_prefix == d.prefix && t.state == "up")
            .and_then(|t| t.babel_rtt_ms)
    };
    let took = wait_until(
        "a has its slow tunnel to d measured, and routes to d through b",
        Duration::from_secs(90),
        || {
            slow_rtt().is_some_and(|r| r > 1.5 * DELAY.as_millis() as f64)
                && a.via(&d) == Some(b.prefix)
                && d.via(&a) == Some(b.prefix)
        },
    );
    let routes = a.routes();
    let to_d: Vec<String> = routes
        .iter()
        .filter(|r| r.prefix == ipnet::IpNet::V6(d.prefix))
        .map(|r| {
            format!(
                "via {:?} metric {} selected {}",
                r.via, r.metric, r.selected
            )
        })
        .collect();
    eprintln!(
        "after {took:?}: tunnel a-d Babel RTT {:?} ms; a's routes to d: {to_d:?}",
        slow_rtt()
    );
    // The direct route exists (an alternative), but the selected one, over
    // two hops, has the lower metric.
    let direct = routes
        .iter()
        .find(|r| r.prefix == ipnet::IpNet::V6(d.prefix) && r.via == Some(d.prefix))
        .expect("a keeps the direct route as an alternative");
    let chosen = routes
        .iter()
        .find(|r| r.prefix == ipnet::IpNet::V6(d.prefix) && r.selected)
        .unwrap();
    assert!(chosen.metric < direct.metric, "{chosen:?} vs {direct:?}");
    let ping = lab.ping("a", &d.address.to_string(), 10, Duration::from_millis(100));
    eprintln!("ping a -> d: {ping:?}");
    assert!(ping.received >= 8, "{ping:?}");
    let avg = ping.avg_ms.unwrap();
    assert!(
        avg < 2.0 * DELAY.as_millis() as f64 * 0.75,
        "pings took {avg} ms: they went through the slow direct tunnel"
    );
}
