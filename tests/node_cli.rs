//! `re6st node` end to end through the binary: a registry process, two
//! nodes enrolled with `re6st join`, run as processes; they find each other
//! through the registry, bring a tunnel up, and stop cleanly on SIGTERM
//! (`--no-tun`: no device, nothing touches the host's network).

mod registry_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use registry_support::{free_port, re6st, run, spawn_registry, spawn_registry_on};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A `re6st node` child, killed on drop; its log lines on a channel.
struct NodeProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeProcess {
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let mut child = re6st()
            .args([
                "node",
                "--dir",
                s(dir),
                "--listen",
                "127.0.0.1:0",
                "--no-tun",
            ])
            .args(extra)
            .env("RUST_LOG", "re6st=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning re6st node");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Self { child, lines }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// Waits for a log line containing `what`.
    fn expect(&self, what: &str, timeout: Duration) -> String {
        let t0 = Instant::now();
        while let Some(left) = timeout.checked_sub(t0.elapsed()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(what) => return l,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no {what:?} in the node's output within {timeout:?}");
    }

    /// Waits for the process to exit; its status and every line it printed
    /// (that nobody read yet).
    fn exit(mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(t0.elapsed() < timeout, "still running after {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        };
        // The readers end with the pipes.
        let mut out = String::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            out.push_str(&l);
            out.push('\n');
        }
        (status, out)
    }
}

/// `re6st status --dir DIR [--json]`: (success, stdout, stderr).
fn status(dir: &Path, json: bool) -> (bool, String, String) {
    let mut args = vec!["status", "--dir", s(dir)];
    if json {
        args.push("--json");
    }
    run(&args)
}

/// A node started on an empty state directory while its registry is down
/// keeps trying; `re6st status` says it waits for the registry; once the
/// registry starts (10 s later) the node joins and comes up.
#[test]
fn a_node_started_before_its_registry_joins_when_it_comes_up() {
    let tmp = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("https://{listen}");
    let dir = tmp.path().join("node");
    let started = Instant::now();
    let node = NodeProcess::start_with(&dir, &["--registry", &url]);
    node.expect("waiting for the registry", Duration::from_secs(20));

    let t0 = Instant::now();
    let text = loop {
        let (ok, out, err) = status(&dir, false);
        if ok && out.contains("unreachable since") {
            break out;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "status while joining: {out} {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        text.starts_with(&format!("joining: registry {url} unreachable since ")),
        "{text}"
    );
    assert!(text.contains("last error:"), "{text}");
    let (ok, out, err) = status(&dir, true);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["state"], "joining", "{out}");
    assert_eq!(j["registry"], url.as_str(), "{out}");
    assert!(j["unreachable_since"].is_u64(), "{out}");
    assert!(j["attempts"].as_u64().unwrap() >= 1, "{out}");
    let (ok, _, err) = run(&["tunnels", "--dir", s(&dir)]);
    assert!(
        !ok && err.contains("not joined its network yet"),
        "tunnels while joining: {err}"
    );
    assert!(!dir.join("node.crt").exists());

    if let Some(left) = Duration::from_secs(10).checked_sub(started.elapsed()) {
        std::thread::sleep(left);
    }
    let _reg = spawn_registry_on(
        &tmp.path().join("registry"),
        &listen,
        &["--enrolment", "open"],
    );
    let came_up = Instant::now();
    node.expect("QUIC on UDP", Duration::from_secs(60));
    println!(
        "registry up {:.1} s after the node; the node joined and ran {:.1} s later",
        came_up.duration_since(started).as_secs_f64(),
        came_up.elapsed().as_secs_f64()
    );
    assert!(dir.join("node.crt").exists());
    let (ok, out, err) = status(&dir, true);
    assert!(ok, "{err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["state"], "running", "{out}");
    assert_eq!(st["registry"]["url"], url.as_str(), "{out}");
}

/// Final join errors end the node at once (no waiting), with the reason:
/// a token the registry does not know, a CA that is not the pinned one.
#[test]
fn a_refused_join_ends_the_node_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = spawn_registry(&tmp.path().join("registry"), &[]);

    let node = NodeProcess::start_with(
        &tmp.path().join("a"),
        &["--registry", &reg.url, "--token", "not-a-token"],
    );
    let (st, out) = node.exit(Duration::from_secs(20));
    assert!(!st.success(), "{out}");
    assert!(
        out.contains("refused to enrol") && out.contains("unknown_token"),
        "{out}"
    );
    assert!(!out.contains("waiting for the registry"), "{out}");

    let pin = format!("sha256:{}", "00".repeat(32));
    let node = NodeProcess::start_with(
        &tmp.path().join("b"),
        &["--registry", &reg.url, "--ca-fingerprint", &pin],
    );
    let (st, out) = node.exit(Duration::from_secs(20));
    assert!(!st.success(), "{out}");
    assert!(out.contains("not the pinned"), "{out}");
}

/// Waits until the registry has an announcement, so that the next node's
/// bootstrap finds a peer.
fn wait_for_announcement(reg_dir: &Path) {
    let t0 = Instant::now();
    loop {
        let (ok, out, _) = run(&["registry", "list", "--dir", s(reg_dir), "--json"]);
        assert!(ok);
        let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
        let announced = rows
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["last_announce"].is_u64());
        if announced {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no announcement: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_node_processes_connect_and_stop_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let reg_dir = tmp.path().join("registry");
    let reg = spawn_registry(&reg_dir, &["--enrolment", "open", "--tunnels", "1"]);
    let (n1, n2) = (tmp.path().join("n1"), tmp.path().join("n2"));
    for d in [&n1, &n2] {
        let (ok, out, err) = run(&["join", "--registry", &reg.url, "--dir", s(d)]);
        assert!(ok, "join: {out} {err}");
    }
    let a = NodeProcess::start(&n1);
    a.expect("QUIC on UDP", Duration::from_secs(20));
    wait_for_announcement(&reg_dir);
    let b = NodeProcess::start(&n2);
    b.expect("tunnel up", Duration::from_secs(20));
    a.expect("accepted a tunnel", Duration::from_secs(20));
    assert!(
        n2.join("peers.db").exists(),
        "the peer DB is in the state directory"
    );

    // SIGTERM: a clean exit.
    for mut p in [a, b] {
        let pid = p.child.id() as libc::pid_t;
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = p.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status}");
        p.expect("shutting down", Duration::from_secs(1));
    }
}

/// `re6st CMD --dir DIR --json`, parsed.
fn json(cmd: &str, dir: &Path) -> serde_json::Value {
    let (ok, out, err) = run(&[cmd, "--dir", s(dir), "--json"]);
    assert!(ok, "{cmd}: {err}");
    serde_json::from_str(&out).unwrap()
}

/// The ids of the up tunnels.
fn up_tunnels(dir: &Path) -> Vec<u64> {
    let t = json("tunnels", dir);
    t.as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "up")
        .map(|t| t["id"].as_u64().unwrap())
        .collect()
}

/// The body of http://127.0.0.1:PORT/metrics, if it answers.
fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    c.read_to_string(&mut body).ok()?;
    Some(body)
}

/// SIGHUP re-reads node.toml: the tunnel replacement, the gateway prefixes
/// and the metrics address change on the running node, the tunnel stays up
/// (same id), the gateway route reaches the peer through it, options that
/// need a restart are named, and a broken file changes nothing.
#[test]
fn sighup_reloads_the_configuration_file_without_dropping_tunnels() {
    let tmp = tempfile::tempdir().unwrap();
    let reg_dir = tmp.path().join("registry");
    let reg = spawn_registry(
        &reg_dir,
        &[
            "--enrolment",
            "open",
            "--tunnels",
            "1",
            "--sweep-every",
            "200ms",
        ],
    );
    let (n1, n2) = (tmp.path().join("n1"), tmp.path().join("n2"));
    let mut prefixes = Vec::new();
    for d in [&n1, &n2] {
        let (ok, out, err) = run(&["join", "--registry", &reg.url, "--dir", s(d)]);
        assert!(ok, "join: {out} {err}");
        let prefix = out
            .split("prefix ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_else(|| panic!("no prefix in: {out}"));
        prefixes.push(prefix.to_string());
    }
    // Only a node the registry authorises may announce a prefix outside
    // the overlay: n1 gets the one its reloaded file adds below, and both
    // nodes fetch the grant with the network configuration at start.
    let (ok, out, err) = run(&[
        "registry",
        "gateway",
        "add",
        "--dir",
        s(&reg_dir),
        &prefixes[0],
        "2001:db8::/32",
    ]);
    assert!(ok, "gateway add: {out} {err}");
    // The running registry serves the new configuration within a sweep.
    std::thread::sleep(Duration::from_secs(1));
    let config = tmp.path().join("node.toml");
    let (port1, port2) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!("metrics = \"127.0.0.1:{port1}\"\nmtu = 1400\n"),
    )
    .unwrap();
    let a = NodeProcess::start_with(&n1, &["--config", s(&config)]);
    a.expect("QUIC on UDP", Duration::from_secs(20));
    wait_for_announcement(&reg_dir);
    let b = NodeProcess::start(&n2);
    b.expect("tunnel up", Duration::from_secs(20));
    a.expect("accepted a tunnel", Duration::from_secs(20));
    let before = up_tunnels(&n1);
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(scrape(port1).is_some_and(|m| m.contains("re6st_")));

    std::fs::write(
        &config,
        format!(
            "metrics = \"127.0.0.1:{port2}\"\nmtu = 1300\n\
             tunnel-replacement = \"least-used-best-of-3\"\n\
             gateway = [\"2001:db8::/32\"]\ngateway-metric = 5\n"
        ),
    )
    .unwrap();
    a.signal(libc::SIGHUP);
    let restart = a.expect("apply only at the next start", Duration::from_secs(10));
    assert!(restart.contains("mtu"), "{restart}");
    let done = a.expect("reloaded the configuration", Duration::from_secs(10));
    for option in ["tunnel-replacement", "gateway", "metrics"] {
        assert!(done.contains(option), "{option} not applied: {done}");
    }
    assert!(scrape(port2).is_some_and(|m| m.contains("re6st_")));
    assert!(scrape(port1).is_none(), "the old metrics server stopped");
    let status = json("status", &n1);
    assert_eq!(status["edges"]["gateway"][0], "2001:db8::/32", "{status}");
    // The peer learns the new gateway prefix through the same tunnel.
    let t0 = Instant::now();
    loop {
        let routes = json("routes", &n2);
        let learned = routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["prefix"] == "2001:db8::/32");
        if learned {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the peer has no route to the gateway prefix: {routes}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(up_tunnels(&n1), before, "the tunnel stayed up");

    // A broken file changes nothing, and the node keeps running.
    std::fs::write(&config, "gateway = [\"not a prefix\"]\n").unwrap();
    a.signal(libc::SIGHUP);
    a.expect("keeping the options in force", Duration::from_secs(10));
    assert!(scrape(port2).is_some());
    assert_eq!(json("status", &n1)["edges"]["gateway"][0], "2001:db8::/32");
    // Retracting the gateway is live too.
    std::fs::write(&config, format!("metrics = \"127.0.0.1:{port2}\"\n")).unwrap();
    a.signal(libc::SIGHUP);
    let done = a.expect("reloaded the configuration", Duration::from_secs(10));
    assert!(done.contains("gateway"), "{done}");
    assert!(
        json("status", &n1)["edges"]["gateway"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(up_tunnels(&n1), before, "the tunnel stayed up");
}
