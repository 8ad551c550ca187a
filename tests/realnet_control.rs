//! The node program and its control API, as an operator meets them (no root
//! needed: the nodes run without a TUN device on loopback): joining on
//! first start, the control socket (0600, one node per state directory),
//! `re6st status/tunnels/routes/peers` in JSON and as tables, the
//! Prometheus metrics, the error for a directory that is not enrolled, and
//! a clean stop on SIGTERM.

mod registry_support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use re6st::control::api::{PeerView, RouteView, Status, TunnelInfo};
use re6st::netns::Proc;
use registry_support::{re6st, run, spawn_registry};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn start(dir: &Path, log: &Path, registry: &str, extra: &[&str]) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let child = re6st()
        .args(["node", "--dir", s(dir), "--registry", registry, "--no-tun"])
        .args([
            "--listen",
            "127.0.0.1:0",
            // A dead peer would only be noticed after 10 s: the clean
            // close at the end must be much faster.
            "--keep-alive",
            "1s",
            "--idle-timeout",
            "10s",
        ])
        .args(extra)
        .env("RUST_LOG", "re6st=info")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut p = Proc {
        child,
        name: dir.display().to_string(),
        log: log.to_path_buf(),
    };
    p.wait_for_line("control socket", Duration::from_secs(60))
        .unwrap();
    p
}

fn json<T: serde::de::DeserializeOwned>(cmd: &str, dir: &Path) -> T {
    let (ok, out, err) = run(&[cmd, "--dir", s(dir), "--json"]);
    assert!(ok, "re6st {cmd}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("re6st {cmd} --json: {e}: {out}"))
}

#[test]
fn operator_commands_against_running_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = spawn_registry(
        &tmp.path().join("registry"),
        &[
            "--enrolment",
            "open",
            "--tunnels",
            "1",
            "--babel-hello",
            "1s",
        ],
    );
    let (d1, d2) = (tmp.path().join("n1"), tmp.path().join("n2"));

    // Not enrolled and no registry: the error says what to run.
    let (ok, _, err) = run(&["node", "--dir", s(&d1), "--no-tun"]);
    assert!(!ok);
    assert!(
        err.contains("is not enrolled") && err.contains("re6st join --registry URL"),
        "{err}"
    );

    let mut n1 = start(
        &d1,
        &tmp.path().join("n1.log"),
        &reg.url,
        &["--metrics", "127.0.0.1:0"],
    );
    let n2 = start(&d2, &tmp.path().join("n2.log"), &reg.url, &[]);
    assert!(n1.log_text().contains("not enrolled yet: joining"));

    // The socket is private, and a second node on the same directory is
    // refused.
    let sock = d1.join("control.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (ok, _, err) = run(&[
        "node",
        "--dir",
        s(&d1),
        "--no-tun",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok && err.contains("another node is running"), "{err}");

    let s2: Status = json("status", &d2);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let routes: Vec<RouteView> = json("routes", &d1);
        let tunnels: Vec<TunnelInfo> = json("tunnels", &d1);
        let reached = routes.iter().any(|r| {
            r.selected && r.prefix == ipnet::IpNet::V6(s2.prefix) && r.via == Some(s2.prefix)
        });
        // n2 came second: n1 learns it by peer exchange or a later
        // bootstrap.
        let peers: Vec<PeerView> = json("peers", &d1);
        let known = peers.iter().any(|p| p.prefix == s2.prefix);
        if reached
            && known
            && tunnels
                .iter()
                .any(|t| t.peer_prefix == s2.prefix && t.rx_packets > 0)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no route: {routes:?} {tunnels:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let s1: Status = json("status", &d1);
    assert_eq!(s1.host.mode, "none");
    assert_eq!(s1.tunnels_up, 1);
    assert!(s1.registry.last_ok.is_some() && s1.registry.last_error.is_none());
    assert!(s1.counters["babel"].values().sum::<u64>() > 0);

    // Tables: the same data for a terminal.
    let (ok, text, _) = run(&["tunnels", "--dir", s(&d1)]);
    assert!(ok && text.starts_with("ID  PEER") && text.contains(&s2.prefix.to_string()));
    let (ok, text, _) = run(&["routes", "--dir", s(&d1)]);
    assert!(ok && text.contains(&format!("*  {}", s2.prefix)), "{text}");
    let (ok, text, _) = run(&["status", "--dir", s(&d1)]);
    assert!(
        ok && text.contains("no TUN") && text.contains("1 up"),
        "{text}"
    );
    // A directory without a node says so.
    let (ok, _, err) = run(&["status", "--dir", s(tmp.path())]);
    assert!(!ok && err.contains("is `re6st node` running"), "{err}");

    // Prometheus metrics on the loopback address from the banner.
    let line = n1
        .wait_for_line("metrics: http://", Duration::from_secs(5))
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.strip_suffix("/metrics"))
        .unwrap()
        .to_string();
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    tcp.read_to_string(&mut body).unwrap();
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    assert!(body.contains("re6st_tunnels{state=\"up\"} 1"), "{body}");
    assert!(
        body.contains("re6st_tunnel_rx_packets_total{peer="),
        "{body}"
    );

    // SIGTERM: a clean stop that removes the socket, and closes the tunnel
    // at once (n2 does not wait for its 10 s idle timeout).
    let s1_prefix = s1.prefix;
    let stopping = std::time::Instant::now();
    n1.signal(libc::SIGTERM);
    let status = n1.wait_timeout(Duration::from_secs(10)).expect("stopped");
    assert!(status.success(), "{}", n1.log_text());
    assert!(n1.log_text().contains("re6st node stopped"));
    assert!(!sock.exists());
    loop {
        let tunnels: Vec<TunnelInfo> = json("tunnels", &d2);
        if !tunnels.iter().any(|t| t.peer_prefix == s1_prefix) {
            break;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(5),
            "n2 still has its tunnel to n1: {tunnels:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "n1 stopped and n2 dropped the tunnel after {:?}",
        stopping.elapsed()
    );
    assert!(
        n2.log_text().contains("closed by peer"),
        "{}",
        n2.log_text()
    );
    drop(reg);
}
