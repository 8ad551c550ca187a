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

use registry_support::{re6st, run, spawn_registry};

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
        let mut child = re6st()
            .args([
                "node",
                "--dir",
                s(dir),
                "--listen",
                "127.0.0.1:0",
                "--no-tun",
            ])
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
