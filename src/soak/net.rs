//! The soak's network: a registry and `re6st node` processes, and the
//! faults done to them. As root each node runs in its own network
//! namespace with a TUN device, the namespaces joined by a bridge in a hub
//! namespace that also runs the registry (the demo's layout); links are
//! cut with nftables and degraded with tc netem. Otherwise the nodes run
//! with `--no-tun` on loopback, where only process faults exist.
//!
//! Every process is stopped and every namespace removed when the
//! [`SoakNet`] is dropped, also on an error or a panic.

use std::fs::File;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::Ipv6Net;
use re6st::control::api::{Request, Response, SOCKET_FILE, Status, TunnelInfo};
use re6st::netns::{Lab, Proc, RegistryReady, run, tail};

/// The hub's underlay address (the registry listens there).
const HUB: &str = "fd00:5a::ffff";

/// How the network is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One namespace and TUN device per node (root).
    Namespaces,
    /// `--no-tun` nodes on 127.0.0.1, one UDP port each.
    Loopback,
}

/// A node of the soak.
#[derive(Debug)]
pub(crate) struct SoakNode {
    /// `node7`: its process and namespace name.
    pub name: String,
    /// Its state directory.
    pub dir: PathBuf,
    /// Its underlay address (namespaces) or port (loopback).
    pub underlay: SocketAddr,
    /// Its overlay address and prefix, once known (they change when its
    /// state directory is wiped).
    pub identity: Option<(Ipv6Addr, Ipv6Net)>,
    /// The running process, if any (index into the processes).
    pub proc: Option<usize>,
    /// Processes started so far.
    pub incarnations: u32,
    /// When the current process was started.
    pub started: Option<Instant>,
    /// SIGSTOPped.
    pub frozen: bool,
}

impl SoakNode {
    /// Its control socket.
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.join(SOCKET_FILE)
    }
}

/// What the network is started with.
#[derive(Debug, Clone)]
pub(crate) struct NetConfig {
    /// Nodes.
    pub nodes: usize,
    /// Outgoing tunnels per node (k).
    pub tunnels: u16,
    /// Tunnel refresh period.
    pub refresh: Duration,
    /// Keep the working directory.
    pub keep: bool,
}

/// The running network.
#[derive(Debug)]
pub(crate) struct SoakNet {
    /// Every process ever started (dropped first: before the namespaces).
    pub procs: Vec<Proc>,
    /// The nodes.
    pub nodes: Vec<SoakNode>,
    /// The current registry process.
    pub registry: Option<usize>,
    /// Registry processes started so far.
    pub registry_incarnations: u32,
    /// The layout.
    pub mode: Mode,
    /// Whether this kernel has tc netem (else loss comes from nftables).
    pub netem: bool,
    exe: String,
    dir: PathBuf,
    reg_args: Vec<String>,
    url: String,
    fingerprint: String,
    lab: Option<Lab>,
    keep: bool,
    rt: tokio::runtime::Runtime,
}

impl Drop for SoakNet {
    fn drop(&mut self) {
        // A frozen process would not see SIGTERM.
        for p in &self.procs {
            p.signal(libc::SIGCONT);
        }
        for p in &mut self.procs {
            if p.running() {
                p.signal(libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for p in &mut self.procs {
            let left = deadline.saturating_duration_since(Instant::now());
            if p.wait_timeout(left).is_none() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
        // The lab (namespaces, and its directory in namespace mode) goes
        // after the processes.
        self.lab.take();
        if self.mode == Mode::Loopback && !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl SoakNet {
    /// Starts the registry and the nodes (without waiting for the nodes).
    pub(crate) fn start(cfg: &NetConfig, mode: Mode) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the re6st binary")?;
        let exe = exe.to_str().context("binary path")?.to_string();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a tokio runtime")?;
        let (lab, dir) = match mode {
            Mode::Namespaces => {
                let mut lab = Lab::new("soak")?;
                if cfg.keep {
                    lab.keep_dir();
                }
                let dir = lab.dir().to_path_buf();
                (Some(lab), dir)
            }
            Mode::Loopback => {
                let dir = std::env::temp_dir().join(format!("re6st-soak-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                (None, dir)
            }
        };
        let mut nodes = Vec::new();
        for i in 0..cfg.nodes {
            let name = format!("node{}", i + 1);
            let underlay = match mode {
                Mode::Namespaces => {
                    let a: Ipv6Addr = format!("fd00:5a::{:x}", i + 1).parse()?;
                    SocketAddr::new(a.into(), 4326)
                }
                Mode::Loopback => SocketAddr::new([127, 0, 0, 1].into(), free_udp_port()?),
            };
            nodes.push(SoakNode {
                dir: dir.join(&name),
                name,
                underlay,
                identity: None,
                proc: None,
                incarnations: 0,
                started: None,
                frozen: false,
            });
        }
        let mut net = Self {
            procs: Vec::new(),
            nodes,
            registry: None,
            registry_incarnations: 0,
            mode,
            netem: false,
            exe,
            dir,
            reg_args: Vec::new(),
            url: String::new(),
            fingerprint: String::new(),
            lab,
            keep: cfg.keep,
            rt,
        };
        if let Some(lab) = &mut net.lab {
            let names: Vec<(String, String)> = net
                .nodes
                .iter()
                .map(|n| (n.name.clone(), format!("{}/64", n.underlay.ip())))
                .collect();
            let star: Vec<(&str, &str)> = names
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            lab.star("hub", &format!("{HUB}/64"), &star)?;
            net.netem = has_netem(lab);
        }
        net.start_registry_first(cfg)?;
        for i in 0..net.nodes.len() {
            net.start_node(i)?;
        }
        Ok(net)
    }

    /// Keep the working directory when the soak ends.
    pub(crate) fn keep_dir(&mut self) {
        self.keep = true;
        if let Some(lab) = &mut self.lab {
            lab.keep_dir();
        }
    }

    /// The working directory (logs, state directories).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The full name of node `i`'s namespace (namespace mode).
    pub(crate) fn namespace(&self, i: usize) -> Option<String> {
        self.lab.as_ref().map(|l| l.ns(&self.nodes[i].name))
    }

    fn start_registry_first(&mut self, cfg: &NetConfig) -> anyhow::Result<()> {
        let reg_dir = self.dir.join("registry");
        let (listen, host) = match self.mode {
            Mode::Namespaces => (format!("[{HUB}]:8443"), HUB.to_string()),
            Mode::Loopback => {
                let port = free_tcp_port()?;
                (format!("127.0.0.1:{port}"), "127.0.0.1".to_string())
            }
        };
        let refresh = format!("{}s", cfg.refresh.as_secs().max(1));
        self.reg_args = [
            "registry",
            "run",
            "--dir",
            reg_dir.to_str().context("path")?,
            "--listen",
            &listen,
            "--hostname",
            &host,
            "--enrolment",
            "open",
            "--tunnels",
            &cfg.tunnels.to_string(),
            "--tunnel-refresh",
            &refresh,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.url = match self.mode {
            Mode::Namespaces => format!("https://[{HUB}]:8443"),
            Mode::Loopback => format!("https://{listen}"),
        };
        let i = self.start_registry()?;
        let line = self.procs[i].wait_for_line("listening on", Duration::from_secs(30))?;
        self.fingerprint = RegistryReady::parse(&line)
            .with_context(|| format!("no CA fingerprint in the registry's first line: {line}"))?
            .fingerprint;
        Ok(())
    }

    /// Starts the registry process (again); its index.
    pub(crate) fn start_registry(&mut self) -> anyhow::Result<usize> {
        self.registry_incarnations += 1;
        let name = format!("registry.{}", self.registry_incarnations);
        let args = self.reg_args.clone();
        let ns = self.lab.is_some().then_some("hub");
        let i = self.spawn(ns, &name, &args)?;
        self.registry = Some(i);
        Ok(i)
    }

    /// SIGKILLs the registry.
    pub(crate) fn kill_registry(&mut self) {
        if let Some(i) = self.registry.take() {
            let p = &mut self.procs[i];
            p.signal(libc::SIGKILL);
            let _ = p.wait_timeout(Duration::from_secs(5));
        }
    }

    /// Starts node `i`'s process: it joins the registry first when its state
    /// directory is empty.
    pub(crate) fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &self.nodes[i];
        if n.proc.is_some() {
            return Ok(());
        }
        let mut args: Vec<String> = [
            "node",
            "--dir",
            n.dir.to_str().context("path")?,
            "--registry",
            &self.url,
            "--ca-fingerprint",
            &self.fingerprint,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match self.mode {
            Mode::Namespaces => {
                args.extend(["--listen".into(), "[::]:4326".into()]);
                args.extend(["--advertise".into(), n.underlay.to_string()]);
            }
            Mode::Loopback => {
                args.extend(["--listen".into(), n.underlay.to_string()]);
                args.extend(["--advertise".into(), n.underlay.to_string()]);
                args.push("--no-tun".into());
            }
        }
        let name = format!("{}.{}", n.name, n.incarnations + 1);
        let ns = self.lab.is_some().then(|| self.nodes[i].name.clone());
        let p = self.spawn(ns.as_deref(), &name, &args)?;
        let n = &mut self.nodes[i];
        n.incarnations += 1;
        n.proc = Some(p);
        n.started = Some(Instant::now());
        n.frozen = false;
        Ok(())
    }

    /// SIGKILLs node `i` (and deletes its state directory when `wipe`).
    pub(crate) fn kill_node(&mut self, i: usize, wipe: bool) -> anyhow::Result<()> {
        if let Some(p) = self.nodes[i].proc.take() {
            let p = &mut self.procs[p];
            p.signal(libc::SIGKILL);
            p.signal(libc::SIGCONT);
            let _ = p.wait_timeout(Duration::from_secs(5));
        }
        let n = &mut self.nodes[i];
        n.frozen = false;
        n.started = None;
        if wipe {
            n.identity = None;
            if n.dir.exists() {
                std::fs::remove_dir_all(&n.dir)
                    .with_context(|| format!("wiping {}", n.dir.display()))?;
            }
        }
        Ok(())
    }

    /// SIGSTOP (`true`) or SIGCONT node `i`.
    pub(crate) fn freeze_node(&mut self, i: usize, freeze: bool) {
        if let Some(p) = self.nodes[i].proc {
            self.procs[p].signal(if freeze { libc::SIGSTOP } else { libc::SIGCONT });
            self.nodes[i].frozen = freeze;
        }
    }

    /// Revokes node `i`'s certificate at the registry (by prefix).
    pub(crate) fn revoke(&self, i: usize) -> anyhow::Result<()> {
        let (_, prefix) = self.nodes[i]
            .identity
            .context("revoking a node whose prefix is not known")?;
        let reg_dir = self.dir.join("registry");
        run(&[
            &self.exe,
            "registry",
            "revoke",
            "--dir",
            reg_dir.to_str().context("path")?,
            &prefix.to_string(),
        ])?;
        Ok(())
    }

    /// Drops (`true`) or restores every packet on node `i`'s underlay link.
    pub(crate) fn isolate(&self, i: usize, drop: bool) -> anyhow::Result<()> {
        let table = "soak_isolate";
        if drop {
            self.nft(
                i,
                &format!(
                    "table inet {table} {{\n\
                     chain input {{ type filter hook input priority 0; iifname \"eth0\" drop; }}\n\
                     chain output {{ type filter hook output priority 0; oifname \"eth0\" drop; }}\n\
                     }}\n"
                ),
            )
        } else {
            self.nft_delete(i, table)
        }
    }

    /// Drops (`true`) or restores the packets between nodes `a` and `b`
    /// (rules in `a`'s namespace, both directions).
    pub(crate) fn link(&self, a: usize, b: usize, drop: bool) -> anyhow::Result<()> {
        let table = format!("soak_link_{b}");
        if drop {
            let peer = self.nodes[b].underlay.ip();
            self.nft(
                a,
                &format!(
                    "table inet {table} {{\n\
                     chain input {{ type filter hook input priority 0; ip6 saddr {peer} drop; }}\n\
                     chain output {{ type filter hook output priority 0; ip6 daddr {peer} drop; }}\n\
                     }}\n"
                ),
            )
        } else {
            self.nft_delete(a, &table)
        }
    }

    /// Delay and loss on node `i`'s underlay link (outgoing), or none.
    /// Without netem only the loss is applied (nftables).
    pub(crate) fn netem(&self, i: usize, set: Option<(u32, u32, u32)>) -> anyhow::Result<()> {
        let lab = self.lab.as_ref().context("netem needs namespaces")?;
        let name = &self.nodes[i].name;
        match (set, self.netem) {
            (Some((delay, jitter, loss)), true) => {
                lab.exec(
                    name,
                    &[
                        "tc",
                        "qdisc",
                        "replace",
                        "dev",
                        "eth0",
                        "root",
                        "netem",
                        "delay",
                        &format!("{delay}ms"),
                        &format!("{jitter}ms"),
                        "loss",
                        &format!("{loss}%"),
                    ],
                )?;
                Ok(())
            }
            (None, true) => {
                lab.exec(name, &["tc", "qdisc", "del", "dev", "eth0", "root"])?;
                Ok(())
            }
            (Some((_, _, loss)), false) => self.nft(
                i,
                &format!(
                    "table inet soak_loss {{\n\
                     chain output {{ type filter hook output priority 0; \
                     oifname \"eth0\" numgen random mod 100 < {loss} drop; }}\n\
                     }}\n"
                ),
            ),
            (None, false) => self.nft_delete(i, "soak_loss"),
        }
    }

    fn nft(&self, i: usize, ruleset: &str) -> anyhow::Result<()> {
        let lab = self.lab.as_ref().context("nftables needs namespaces")?;
        let file = self.dir.join(format!("nft-{}.conf", self.nodes[i].name));
        std::fs::write(&file, ruleset)?;
        lab.exec(
            &self.nodes[i].name,
            &["nft", "-f", file.to_str().context("path")?],
        )?;
        Ok(())
    }

    fn nft_delete(&self, i: usize, table: &str) -> anyhow::Result<()> {
        let lab = self.lab.as_ref().context("nftables needs namespaces")?;
        lab.exec(
            &self.nodes[i].name,
            &["nft", "delete", "table", "inet", table],
        )?;
        Ok(())
    }

    fn spawn(&mut self, ns: Option<&str>, name: &str, args: &[String]) -> anyhow::Result<usize> {
        let log = self.dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = match (ns, &self.lab) {
            (Some(ns), Some(lab)) => lab.command(ns, &self.exe),
            _ => Command::new(&self.exe),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "re6st=info");
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", self.exe))?;
        self.procs.push(Proc {
            child,
            name: name.into(),
            log,
        });
        Ok(self.procs.len() - 1)
    }

    /// Asks node `i` (`None` when it does not answer within a second).
    pub(crate) fn query(&self, i: usize, req: Request) -> Option<Response> {
        let n = &self.nodes[i];
        if n.proc.is_none() || n.frozen {
            return None;
        }
        let socket = n.socket();
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), re6st::control::query(&socket, req))
                .await
                .ok()?
                .ok()
        })
    }

    /// Node `i`'s status, when it runs and answers.
    pub(crate) fn status(&self, i: usize) -> Option<Status> {
        match self.query(i, Request::Status)? {
            Response::Status(s) => Some(*s),
            _ => None,
        }
    }

    /// Node `i`'s tunnels, when it runs and answers.
    pub(crate) fn tunnels(&self, i: usize) -> Option<Vec<TunnelInfo>> {
        match self.query(i, Request::Tunnels)? {
            Response::Tunnels(t) => Some(t),
            _ => None,
        }
    }

    /// The processes that ended without being asked to: (process index,
    /// node index or `None` for the registry). Each is reported once.
    pub(crate) fn reap(&mut self) -> Vec<(usize, Option<usize>)> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            if let Some(p) = self.nodes[i].proc
                && !self.procs[p].running()
            {
                self.nodes[i].proc = None;
                self.nodes[i].started = None;
                out.push((p, Some(i)));
            }
        }
        if let Some(p) = self.registry
            && !self.procs[p].running()
        {
            self.registry = None;
            out.push((p, None));
        }
        out
    }

    /// The last lines of process `p`'s log.
    pub(crate) fn log_tail(&self, p: usize, lines: usize) -> String {
        tail(&self.procs[p].log_text(), lines)
    }
}

/// Whether `tc qdisc ... netem` works here (a scratch veth in a scratch
/// namespace of the lab).
fn has_netem(lab: &mut Lab) -> bool {
    if lab.add_ns("netem-check").is_err() {
        return false;
    }
    let ns = lab.ns("netem-check");
    let ok = run(&[
        "ip", "-n", &ns, "link", "add", "nc0", "type", "veth", "peer", "name", "nc1",
    ])
    .and_then(|_| {
        lab.exec(
            "netem-check",
            &[
                "tc", "qdisc", "add", "dev", "nc0", "root", "netem", "delay", "1ms",
            ],
        )
    })
    .is_ok();
    let _ = run(&["ip", "netns", "del", &ns]);
    ok
}

fn free_udp_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").context("finding a free UDP port")?;
    Ok(s.local_addr()?.port())
}

fn free_tcp_port() -> anyhow::Result<u16> {
    let s = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free TCP port")?;
    Ok(s.local_addr()?.port())
}

/// Checks the tools the namespace mode needs.
pub(crate) fn check_tools() -> anyhow::Result<()> {
    for (tool, pkg) in [("ip", "iproute2"), ("nft", "nftables"), ("tc", "iproute2")] {
        if run(&["sh", "-c", &format!("command -v {tool}")]).is_err() {
            bail!("`{tool}` is missing (Debian package {pkg}; scripts/install-deps installs it)");
        }
    }
    Ok(())
}
