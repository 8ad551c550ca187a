//! A small network lab on this machine (Linux, root): network namespaces
//! joined by veth pairs or a bridge, and `re6st` processes running in them,
//! all removed again when the [`Lab`] is dropped, also on a panic or an
//! error. `re6st demo` and the real-network tests (`tests/realnet_*`) use
//! it.
//!
//! Names carry the owner's pid (`re6st-<tag>-<pid>-<name>`), so a lab whose
//! process was killed outright (no Drop) is cleaned up by the next one.
//! Underlay addresses must be in `fd00::/8` (or 198.18.0.0/15): traffic
//! never leaves the namespaces the lab made.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Whether this process runs as root (namespaces and TUN devices need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command to completion; its stdout, or an error with its stderr.
pub fn run(cmd: &[&str]) -> anyhow::Result<String> {
    let (program, args) = cmd.split_first().context("empty command")?;
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {}", cmd.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes the namespaces of labs with `tag` whose owner process is gone.
pub fn remove_stale(tag: &str) {
    let prefix = format!("re6st-{tag}-");
    let Ok(list) = run(&["ip", "netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !pid_alive(p)) {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

/// A `re6st` (or other) process of the lab: stopped with SIGTERM when
/// dropped (SIGKILL if it does not exit within 3 s). Its stdout and stderr
/// go to a log file.
#[derive(Debug)]
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its name in the lab.
    pub name: String,
    /// Its log file.
    pub log: PathBuf,
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGKILL`).
    pub fn signal(&self, signal: i32) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill has no memory preconditions; the pid is our child's
            // (not yet reaped, so not reused).
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for it to exit; its status.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until a log line contains `needle`; that line.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.log_text().lines().find(|l| l.contains(needle)) {
                return Ok(l.to_string());
            }
            if !self.running() {
                bail!(
                    "{} exited before printing {needle:?}; its log ({}):\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log_text(), 20)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not print {needle:?} within {timeout:?}; its log:\n{}",
                    self.name,
                    tail(&self.log_text(), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.running() {
            self.signal(libc::SIGTERM);
            if self.wait_timeout(grace).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// What `ping -q` says at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PingSummary {
    /// Echo Requests sent.
    pub sent: u32,
    /// Replies received.
    pub received: u32,
    /// Average RTT of the replies, milliseconds.
    pub avg_ms: Option<f64>,
}

/// Parses the summary of `ping`: "N packets transmitted, M received" and
/// "rtt min/avg/max/mdev = a/b/c/d ms". `sent` defaults to `count`.
pub fn parse_ping(out: &str, count: u32) -> PingSummary {
    let mut p = PingSummary {
        sent: count,
        ..PingSummary::default()
    };
    for line in out.lines() {
        if line.contains("packets transmitted") {
            let nums: Vec<u32> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|s| s.parse().ok())
                .collect();
            if let [sent, received, ..] = nums[..] {
                p.sent = sent;
                p.received = received;
            }
        } else if let Some(stats) = line.split(" = ").nth(1)
            && line.starts_with("rtt")
        {
            p.avg_ms = stats.split('/').nth(1).and_then(|s| s.parse().ok());
        }
    }
    p
}

/// The summary of a finished `ping` of `count` Echo Requests; none
/// received when it could not run.
pub fn ping_summary(out: std::io::Result<std::process::Output>, count: u32) -> PingSummary {
    match out {
        Ok(o) => parse_ping(&String::from_utf8_lossy(&o.stdout), count),
        Err(_) => PingSummary {
            sent: count,
            ..PingSummary::default()
        },
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What `re6st registry run` prints once it serves: "re6st registry:
/// listening on URL (network NET, ...), CA sha256:...".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryReady {
    /// The CA fingerprint (`sha256:...`), for `--ca-fingerprint`.
    pub fingerprint: String,
    /// The overlay network, as printed.
    pub network: Option<String>,
}

impl RegistryReady {
    /// Parses the registry's first line; `None` without a fingerprint.
    pub fn parse(line: &str) -> Option<RegistryReady> {
        let fingerprint = line
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))?
            .to_string();
        let network = line
            .split("(network ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .map(str::to_owned);
        Some(RegistryReady {
            fingerprint,
            network,
        })
    }
}

/// Namespaces, links and processes; everything is removed on drop
/// (processes first, then namespaces, then the working directory unless
/// [`Lab::keep_dir`] was called).
#[derive(Debug)]
pub struct Lab {
    tag: String,
    dir: PathBuf,
    keep_dir: bool,
    namespaces: BTreeSet<String>,
    /// The processes, in start order.
    pub procs: Vec<Proc>,
}

impl Lab {
    /// A new lab: needs root. Namespaces of dead labs with the same tag
    /// are removed first.
    pub fn new(tag: &str) -> anyhow::Result<Lab> {
        if !is_root() {
            bail!("the network lab needs root (network namespaces, veth pairs, TUN devices)");
        }
        remove_stale(tag);
        let dir = std::env::temp_dir().join(format!("re6st-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Lab {
            tag: tag.into(),
            dir,
            keep_dir: false,
            namespaces: BTreeSet::new(),
            procs: Vec::new(),
        })
    }

    /// The working directory (state directories, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keep the working directory after the lab is gone (to read logs).
    pub fn keep_dir(&mut self) {
        self.keep_dir = true;
    }

    /// The full name of the lab's namespace `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("re6st-{}-{}-{name}", self.tag, std::process::id())
    }

    /// Creates namespace `name` with its loopback up.
    pub fn add_ns(&mut self, name: &str) -> anyhow::Result<String> {
        let ns = self.ns(name);
        let _ = run(&["ip", "netns", "del", &ns]);
        run(&["ip", "netns", "add", &ns])?;
        self.namespaces.insert(ns.clone());
        self.exec(name, &["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs a command in namespace `name`.
    pub fn exec(&self, name: &str, cmd: &[&str]) -> anyhow::Result<String> {
        let ns = self.ns(name);
        let mut full = vec!["ip", "netns", "exec", &ns];
        full.extend_from_slice(cmd);
        run(&full)
    }

    /// A `Command` that runs `program` in namespace `name`.
    pub fn command(&self, name: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(name), program]);
        c
    }

    /// A veth pair: `a_if` in namespace `a`, `b_if` in `b`, both up, with
    /// the given addresses (`fd00:...::1/64`; DAD off, usable at once).
    pub fn veth(
        &self,
        (a, a_if, a_addr): (&str, &str, Option<&str>),
        (b, b_if, b_addr): (&str, &str, Option<&str>),
    ) -> anyhow::Result<()> {
        let (na, nb) = (self.ns(a), self.ns(b));
        run(&[
            "ip", "link", "add", "name", a_if, "netns", &na, "type", "veth", "peer", "name", b_if,
            "netns", &nb,
        ])?;
        for (ns, dev, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
            self.exec(ns, &["ip", "link", "set", "dev", dev, "up"])?;
            if let Some(addr) = addr {
                self.address(ns, dev, addr)?;
            }
        }
        Ok(())
    }

    /// Adds an address to a device (DAD off).
    pub fn address(&self, ns: &str, dev: &str, addr: &str) -> anyhow::Result<()> {
        let family = if addr.contains(':') { "-6" } else { "-4" };
        let mut cmd = vec!["ip", family, "addr", "add", addr, "dev", dev];
        if family == "-6" {
            cmd.push("nodad");
        }
        self.exec(ns, &cmd)?;
        Ok(())
    }

    /// A bridge `br0` in namespace `hub` (created if missing) with address
    /// `hub_addr`, and for each `(name, addr)` a namespace joined to it by
    /// a veth (`eth0` on the node's side).
    pub fn star(
        &mut self,
        hub: &str,
        hub_addr: &str,
        nodes: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        if !self.namespaces.contains(&self.ns(hub)) {
            self.add_ns(hub)?;
        }
        self.exec(hub, &["ip", "link", "add", "br0", "type", "bridge"])?;
        self.exec(hub, &["ip", "link", "set", "br0", "up"])?;
        self.address(hub, "br0", hub_addr)?;
        for (i, (name, addr)) in nodes.iter().enumerate() {
            if !self.namespaces.contains(&self.ns(name)) {
                self.add_ns(name)?;
            }
            let port = format!("p{i}");
            self.veth((hub, &port, None), (name, "eth0", Some(addr)))?;
            self.exec(hub, &["ip", "link", "set", "dev", &port, "master", "br0"])?;
        }
        Ok(())
    }

    /// Starts `program args` in namespace `ns` (`None`: here), its output
    /// to `<dir>/<name>.log`. `setup` can change the command (environment,
    /// a wrapper).
    pub fn spawn(
        &mut self,
        ns: Option<&str>,
        name: &str,
        program: &str,
        args: &[String],
        setup: impl FnOnce(&mut Command),
    ) -> anyhow::Result<&mut Proc> {
        let log = self.dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = match ns {
            Some(ns) => self.command(ns, program),
            None => Command::new(program),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("NO_COLOR", "1");
        setup(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({program})"))?;
        self.procs.push(Proc {
            child,
            name: name.into(),
            log,
        });
        Ok(self.procs.last_mut().expect("just pushed"))
    }

    /// Starts `program args` (a `re6st registry run`) in namespace `ns` as
    /// process `registry` and waits up to 30 s until it serves.
    pub fn start_registry(
        &mut self,
        ns: &str,
        program: &str,
        args: &[String],
    ) -> anyhow::Result<RegistryReady> {
        let line = self
            .spawn(Some(ns), "registry", program, args, |_| {})?
            .wait_for_line("listening on", Duration::from_secs(30))?;
        RegistryReady::parse(&line)
            .with_context(|| format!("no CA fingerprint in the registry's first line: {line}"))
    }

    /// The process called `name`.
    pub fn proc(&mut self, name: &str) -> Option<&mut Proc> {
        self.procs.iter_mut().find(|p| p.name == name)
    }

    /// Stops every process (SIGTERM, all at once, then SIGKILL after
    /// `grace`), so that nodes shut down in parallel.
    pub fn stop_all(&mut self, grace: Duration) {
        for p in &mut self.procs {
            if p.running() {
                p.signal(libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        for p in &mut self.procs {
            let left = deadline.saturating_duration_since(Instant::now());
            if p.wait_timeout(left).is_none() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

impl Lab {
    /// `ping -6` from namespace `ns` to `dst`: `count` pings `interval`
    /// apart, each waited for at most 2 s.
    pub fn ping(&self, ns: &str, dst: &str, count: u32, interval: Duration) -> PingSummary {
        ping_summary(self.ping_command(ns, dst, count, interval).output(), count)
    }

    /// The command [`Lab::ping`] runs (async callers run it with
    /// `tokio::process::Command::from`, then [`ping_summary`]).
    pub fn ping_command(&self, ns: &str, dst: &str, count: u32, interval: Duration) -> Command {
        let mut c = self.command(ns, "ping");
        c.args(["-6", "-q", "-n", "-W", "2", "-c", &count.to_string()])
            .args(["-i", &format!("{:.3}", interval.as_secs_f64())])
            .arg(dst);
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_all(Duration::from_secs(3));
        self.procs.clear();
        for ns in std::mem::take(&mut self.namespaces) {
            let _ = run(&["ip", "netns", "del", &ns]);
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary() {
        let out = "PING fd00::1 (fd00::1) 56 data bytes\n\n--- fd00::1 ping statistics ---\n\
                   3 packets transmitted, 2 received, 33.3333% packet loss, time 402ms\n\
                   rtt min/avg/max/mdev = 0.410/0.520/0.630/0.110 ms\n";
        let p = parse_ping(out, 3);
        assert_eq!((p.sent, p.received), (3, 2));
        assert_eq!(p.avg_ms, Some(0.52));
        let lost = parse_ping("3 packets transmitted, 0 received, 100% packet loss\n", 3);
        assert_eq!((lost.received, lost.avg_ms), (0, None));
        assert_eq!(parse_ping("", 4).sent, 4);
    }

    #[test]
    fn registry_ready_line() {
        let line = "re6st registry: listening on https://[fd00:de::ff]:8443 (network \
                    fd00:1::/48, node prefixes /64, open enrolment, config v1), CA sha256:ab12";
        let r = RegistryReady::parse(line).unwrap();
        assert_eq!(r.fingerprint, "sha256:ab12");
        assert_eq!(r.network.as_deref(), Some("fd00:1::/48"));
        assert_eq!(
            RegistryReady::parse("listening on [::]:1 (network x)"),
            None
        );
    }
}
