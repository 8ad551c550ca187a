//! Namespaces, commands and the checks shared by the TUN tests.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};

use super::{DEV, NOBODY, OVERLAY_MTU, PEER, ROUTER};

pub(crate) fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {test}: needs root for network namespaces and TUN devices");
        return false;
    }
    true
}

pub(crate) fn run(cmd: &[&str]) -> std::process::Output {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

pub(crate) fn must(cmd: &[&str]) {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace deleted on drop, with the helper process killed.
pub(crate) struct Netns {
    pub(crate) name: String,
    dir: PathBuf,
    helper: Option<Child>,
}

impl Netns {
    pub(crate) fn new(tag: &str) -> Netns {
        remove_stale_namespaces();
        let name = format!("re6st-dp-{tag}-{}", std::process::id());
        let _ = run(&["ip", "netns", "del", &name]);
        must(&["ip", "netns", "add", &name]);
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ns = Netns {
            name,
            dir,
            helper: None,
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub(crate) fn exec_output(&self, cmd: &[&str]) -> std::process::Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(cmd);
        run(&full)
    }

    pub(crate) fn exec(&self, cmd: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(cmd);
        must(&full);
    }

    /// A copy of this test binary that `nobody` can execute (the build
    /// directory may not be reachable for it), and a world-usable
    /// `/dev/net/tun` node to bind over the real one (which is often 0600).
    pub(crate) fn unprivileged_files(&self) -> (String, String) {
        let exe = self.dir.join("helper");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        let node = self.dir.join("tun");
        must(&["mknod", node.to_str().unwrap(), "c", "10", "200"]);
        for (path, mode) in [(&self.dir, "755"), (&exe, "755"), (&node, "666")] {
            must(&["chmod", mode, path.to_str().unwrap()]);
        }
        (
            exe.to_str().unwrap().to_owned(),
            node.to_str().unwrap().to_owned(),
        )
    }

    /// Starts the helper in `mode` inside the namespace; `as_nobody` drops
    /// to uid/gid 65534 with no capabilities first. Returns its stdout once
    /// it printed READY.
    pub(crate) fn spawn_helper(
        &mut self,
        mode: &str,
        as_nobody: bool,
        env: &[(&str, &str)],
    ) -> (BufReader<ChildStdout>, String) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]);
        let helper_args = ["--exact", "helper", "--ignored", "--nocapture"];
        if as_nobody {
            let (exe, node) = self.unprivileged_files();
            // `ip netns exec` gives the child its own mount namespace, so
            // the bind mount stays private to it.
            let script = format!(
                "mount --bind {node} /dev/net/tun && exec setpriv --reuid={NOBODY} \
                 --regid={NOBODY} --clear-groups --inh-caps=-all --bounding-set=-all \
                 {exe} {}",
                helper_args.join(" ")
            );
            cmd.args(["sh", "-c", &script]);
        } else {
            cmd.arg(std::env::current_exe().unwrap()).args(helper_args);
        }
        let mut child = cmd
            .env("RE6ST_TUN_HELPER", mode)
            .env("RE6ST_TUN_HELPER_DIR", &self.dir)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        self.helper = Some(child);
        let mut line = String::new();
        loop {
            line.clear();
            let n = out.read_line(&mut line).unwrap();
            assert!(n > 0, "helper {mode} exited before READY");
            if let Some(rest) = line.strip_prefix("READY ") {
                return (out, rest.trim().to_owned());
            }
        }
    }

    /// Closes the helper's stdin (its signal to stop) and returns its
    /// REPORT line.
    pub(crate) fn finish_helper(&mut self, mut out: BufReader<ChildStdout>) -> String {
        let mut child = self.helper.take().unwrap();
        drop(child.stdin.take());
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "helper failed: {status}\n{rest}");
        let report = rest
            .lines()
            .find_map(|l| l.strip_prefix("REPORT "))
            .unwrap_or_else(|| panic!("no REPORT in:\n{rest}"))
            .to_owned();
        eprintln!("helper of {}: {report}", self.name);
        report
    }

    pub(crate) fn ping(&self, args: &[&str]) -> (bool, String) {
        let mut cmd = vec!["ping", "-6", "-n"];
        cmd.extend_from_slice(args);
        let out = self.exec_output(&cmd);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }
}

/// Deletes namespaces and temporary directories left by test processes
/// that were killed (a Drop guard does not run on SIGKILL): their names end
/// with a dead pid.
fn remove_stale_namespaces() {
    let list = run(&["ip", "netns", "list"]);
    let names = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect::<Vec<_>>();
    let dirs = std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for name in names.iter().chain(&dirs) {
        let Some(pid) = name
            .strip_prefix("re6st-dp-")
            .and_then(|rest| rest.rsplit('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", name]);
            let _ = std::fs::remove_dir_all(std::env::temp_dir().join(name));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(mut child) = self.helper.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = run(&["ip", "netns", "del", &self.name]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The checks every mode runs against the responder.
pub(crate) fn check_pings(ns: &Netns) {
    // Echo through the dataplane.
    // -w: keep sending until 3 replies or the deadline (robust to a loaded
    // machine delaying the helper; a dead path still fails).
    let (ok, text) = ns.ping(&["-c", "3", "-i", "0.2", "-w", "15", PEER]);
    assert!(ok && text.contains("3 received"), "ping failed:\n{text}");
    // No route: the dataplane answers Destination Unreachable.
    ns.exec(&["ip", "-6", "route", "add", "fd00:7::/64", "dev", DEV]);
    let (ok, text) = ns.ping(&["-c", "1", "-w", "10", "fd00:7::1"]);
    assert!(!ok, "ping to an unrouted address succeeded:\n{text}");
    assert!(
        text.contains("Destination unreachable") && text.contains(ROUTER),
        "no Destination Unreachable from {ROUTER}:\n{text}"
    );
    // Above the overlay MTU with DF semantics: Packet Too Big, and the
    // kernel learns the path MTU.
    let (_, text) = ns.ping(&[
        "-c", "2", "-i", "0.3", "-W", "2", "-M", "do", "-s", "1300", PEER,
    ]);
    let route = ns.exec_output(&["ip", "-6", "route", "get", PEER]);
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(
        route.contains(&format!("mtu {OVERLAY_MTU}")),
        "PMTU not learnt from Packet Too Big: {route}\nping said:\n{text}"
    );
    // Fitting packets still go through.
    let (ok, text) = ns.ping(&["-c", "1", "-w", "10", "-s", "1200", PEER]);
    assert!(ok, "1248-byte ping failed:\n{text}");
}
