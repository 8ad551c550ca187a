//! Shared helpers of the real-network tests: `re6st registry` and
//! `re6st node` processes (the binary under test) in network namespaces of
//! a [`Lab`], real TUN devices, and queries of the nodes' control sockets.
//!
//! Everything the lab made (namespaces, processes) is removed when it is
//! dropped, also when a test panics. Without root the tests print SKIPPED
//! and return.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv6Net};
use re6st::control::api::{Request, Response, RouteView, SOCKET_FILE, Status, TunnelInfo};
use re6st::netns::Lab;

/// The binary under test.
pub fn exe() -> String {
    env!("CARGO_BIN_EXE_re6st").to_string()
}

/// Enters network namespace `ns` (full name) on the calling thread.
pub fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("namespace file");
    // SAFETY: setns only changes this thread's network namespace; the fd is
    // open for the duration of the call.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// A lab, or `None` (with a message) when not root.
pub fn lab_or_skip(test: &str, tag: &str) -> Option<Lab> {
    if !re6st::netns::is_root() {
        eprintln!("SKIPPED {test}: needs root for network namespaces and TUN devices");
        return None;
    }
    Some(Lab::new(tag).expect("creating the lab"))
}

/// Starts `re6st registry run` in namespace `ns` listening on `listen`
/// (certificate names `hostnames`), open enrolment, `k` tunnels, fast
/// Babel timers, plus `extra`. Returns the CA fingerprint.
pub fn start_registry(
    lab: &mut Lab,
    ns: &str,
    listen: &str,
    hostnames: &[&str],
    k: u16,
    extra: &[&str],
) -> String {
    let dir = lab.dir().join("registry");
    let mut args: Vec<String> = vec![
        "registry".into(),
        "run".into(),
        "--dir".into(),
        dir.display().to_string(),
        "--listen".into(),
        listen.into(),
        "--enrolment".into(),
        "open".into(),
        "--tunnels".into(),
        k.to_string(),
        "--babel-hello".into(),
        "1s".into(),
        "--babel-update".into(),
        "4s".into(),
    ];
    for h in hostnames {
        args.extend(["--hostname".into(), h.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    lab.start_registry(ns, &exe(), &args)
        .expect("starting the registry")
        .fingerprint
}

/// A running node process.
#[derive(Debug, Clone)]
pub struct TestNode {
    /// Process name in the lab (also its namespace's name).
    pub name: String,
    /// Its state directory.
    pub dir: PathBuf,
    /// Its control socket.
    pub socket: PathBuf,
    /// Overlay address.
    pub address: Ipv6Addr,
    /// Node prefix.
    pub prefix: Ipv6Net,
}

/// Fast timers for tests: dead tunnels are noticed within 2 s even on a
/// loaded machine.
pub const FAST: &[&str] = &["--keep-alive", "300ms", "--idle-timeout", "2s"];

/// Starts `re6st node` in namespace `name` (joining `registry` on the
/// way), announcing `advertise`, with `extra` flags; waits until it runs.
/// `setup` can wrap the command (another user, an inherited fd).
pub fn start_node_with(
    lab: &mut Lab,
    name: &str,
    registry: &str,
    fingerprint: &str,
    advertise: &[&str],
    extra: &[&str],
    setup: impl FnOnce(&mut std::process::Command),
) -> TestNode {
    let dir = lab.dir().join(name);
    let mut args: Vec<String> = vec![
        "node".into(),
        "--dir".into(),
        dir.display().to_string(),
        "--registry".into(),
        registry.into(),
        "--ca-fingerprint".into(),
        fingerprint.into(),
        "--listen".into(),
        "[::]:4326".into(),
    ];
    for a in advertise {
        args.extend(["--advertise".into(), a.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    lab.spawn(Some(name), name, &exe(), &args, |c| {
        c.env("RUST_LOG", "re6st=info");
        setup(c);
    })
    .unwrap()
    .wait_for_line("control socket", Duration::from_secs(60))
    .unwrap();
    let socket = dir.join(SOCKET_FILE);
    let s = status_at(&socket);
    TestNode {
        name: name.into(),
        dir,
        socket,
        address: s.address,
        prefix: s.prefix,
    }
}

/// [`start_node_with`] without a wrapper.
pub fn start_node(
    lab: &mut Lab,
    name: &str,
    registry: &str,
    fingerprint: &str,
    advertise: &[&str],
    extra: &[&str],
) -> TestNode {
    start_node_with(lab, name, registry, fingerprint, advertise, extra, |_| {})
}

/// Asks a node's control socket.
pub fn query(socket: &std::path::Path, req: Request) -> anyhow::Result<Response> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(re6st::control::query(socket, req))
}

fn status_at(socket: &std::path::Path) -> Status {
    match query(socket, Request::Status) {
        Ok(Response::Status(s)) => *s,
        other => panic!("status of {}: {other:?}", socket.display()),
    }
}

impl TestNode {
    /// Its status.
    pub fn status(&self) -> Status {
        status_at(&self.socket)
    }

    /// Its routes (empty if it does not answer).
    pub fn routes(&self) -> Vec<RouteView> {
        match query(&self.socket, Request::Routes) {
            Ok(Response::Routes(r)) => r,
            _ => Vec::new(),
        }
    }

    /// Its tunnels (empty if it does not answer).
    pub fn tunnels(&self) -> Vec<TunnelInfo> {
        match query(&self.socket, Request::Tunnels) {
            Ok(Response::Tunnels(t)) => t,
            _ => Vec::new(),
        }
    }

    /// The selected route to `dst`'s prefix: the prefix of the peer it
    /// goes through.
    pub fn via(&self, dst: &TestNode) -> Option<Ipv6Net> {
        self.routes()
            .into_iter()
            .find(|r| r.selected && r.metric != u16::MAX && r.prefix == IpNet::V6(dst.prefix))
            .and_then(|r| r.via)
    }

    /// Whether it has an up tunnel to `other`.
    pub fn has_tunnel_to(&self, other: &TestNode) -> bool {
        self.tunnels()
            .iter()
            .any(|t| t.peer_prefix == other.prefix && t.state == "up")
    }

    /// A counter of its status (`group`, `name`).
    pub fn counter(&self, group: &str, name: &str) -> u64 {
        self.status()
            .counters
            .get(group)
            .and_then(|g| g.get(name))
            .copied()
            .unwrap_or(0)
    }
}

/// Polls `cond` every 200 ms until it holds; panics after `timeout`.
/// Returns how long it took.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An `iperf3` TCP transfer of `secs` seconds from namespace `client` to
/// `dst` (an `iperf3 -s` runs in namespace `server`, one per address
/// family); the bytes the server received and the rate in Gbit/s.
pub fn iperf3(lab: &mut Lab, client: &str, server: &str, dst: IpAddr, secs: u32) -> (u64, f64) {
    // IPv6 servers listen on every address; IPv4 ones on `dst` alone.
    let (family, bind, name): (&[&str], String, String) = match dst {
        IpAddr::V6(_) => (&[], "::".into(), format!("iperf3-{server}")),
        IpAddr::V4(v4) => (&["-4"], v4.to_string(), format!("iperf3-v4-{server}")),
    };
    if lab.proc(&name).is_none() {
        let mut args: Vec<String> = vec!["-s".into()];
        args.extend(family.iter().map(|f| f.to_string()));
        args.extend(["-B".into(), bind]);
        lab.spawn(Some(server), &name, "iperf3", &args, |_| {})
            .unwrap();
    }
    let start = Instant::now();
    loop {
        let out = lab
            .command(client, "iperf3")
            .args(family)
            .args(["-c", &dst.to_string(), "-t", &secs.to_string(), "-J"])
            .output()
            .expect("running iperf3");
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let sum = &json["end"]["sum_received"];
        if let (Some(bytes), Some(bps)) = (sum["bytes"].as_u64(), sum["bits_per_second"].as_f64()) {
            return (bytes, bps / 1e9);
        }
        // iperf3 3.12 -J exits 0 even when the server is not listening yet.
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "iperf3 to {dst} failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Namespaces `a`, `b`, `c` joined by veths in a line (a–b on
/// fd00:ab::/64, b–c on fd00:bc::/64, no forwarding in `b`'s kernel), a
/// registry in `b` reachable from both sides (given `registry_args`), and
/// one node in each: `a` and `c` can reach each other only through node
/// `b`. Returns the nodes a, b, c.
pub fn line_of_three(lab: &mut Lab, registry_args: &[&str]) -> (TestNode, TestNode, TestNode) {
    line_of_three_with(lab, registry_args, &[], |_| {})
}

/// [`line_of_three`], with `node_args` for every node besides [`FAST`],
/// and `setup` run on the namespaces before the registry and the nodes
/// start (firewall rules, ...).
pub fn line_of_three_with(
    lab: &mut Lab,
    registry_args: &[&str],
    node_args: &[&str],
    setup: impl FnOnce(&Lab),
) -> (TestNode, TestNode, TestNode) {
    let flags: Vec<&str> = FAST.iter().chain(node_args).copied().collect();
    let flags = &flags[..];
    for ns in ["a", "b", "c"] {
        lab.add_ns(ns).unwrap();
    }
    lab.veth(
        ("a", "ab", Some("fd00:ab::1/64")),
        ("b", "ba", Some("fd00:ab::2/64")),
    )
    .unwrap();
    lab.veth(
        ("b", "bc", Some("fd00:bc::2/64")),
        ("c", "cb", Some("fd00:bc::3/64")),
    )
    .unwrap();
    setup(lab);
    let fp = start_registry(
        lab,
        "b",
        "[::]:8443",
        &["fd00:ab::2", "fd00:bc::2"],
        2,
        registry_args,
    );
    let b = start_node(
        lab,
        "b",
        "https://[fd00:ab::2]:8443",
        &fp,
        &["[fd00:ab::2]:4326", "[fd00:bc::2]:4326"],
        flags,
    );
    let a = start_node(
        lab,
        "a",
        "https://[fd00:ab::2]:8443",
        &fp,
        &["[fd00:ab::1]:4326"],
        flags,
    );
    let c = start_node(
        lab,
        "c",
        "https://[fd00:bc::2]:8443",
        &fp,
        &["[fd00:bc::3]:4326"],
        flags,
    );
    (a, b, c)
}
