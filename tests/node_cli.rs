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
    // Wait until the registry has its announcement, so that the second
    // node's bootstrap finds it.
    let t0 = Instant::now();
    loop {
        let (ok, out, _) = run(&["registry", "list", "--dir", s(&reg_dir), "--json"]);
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
