//! The demo as root: one namespace per node, joined by a bridge in a hub
//! namespace that also runs the registry; every node a `re6st node`
//! process with its own TUN device; pings by the system's `ping -6`.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use re6st::control::api::{Request, Response, RouteView, SOCKET_FILE, Status, TunnelInfo};
use re6st::netns::Lab;

use super::{DemoArgs, DemoNode, Ping, step};

/// The underlay: `fd00:de::/64` on the bridge, the hub at `::ff`.
const HUB: &str = "fd00:de::ff";

/// The running network.
pub(crate) struct NetnsNet {
    lab: Lab,
    nodes: Vec<DemoNode>,
    sockets: Vec<PathBuf>,
}

impl NetnsNet {
    pub(crate) async fn start(args: &DemoArgs) -> anyhow::Result<Self> {
        let n = usize::from(args.nodes);
        let exe = std::env::current_exe().context("locating the re6st binary")?;
        let exe = exe.to_str().context("binary path")?.to_string();
        let mut lab = Lab::new("demo")?;
        if args.keep {
            lab.keep_dir();
        }
        let names: Vec<String> = (1..=n).map(|i| format!("node{i}")).collect();
        let addrs: Vec<String> = (1..=n).map(|i| format!("fd00:de::{i:x}/64")).collect();
        let star: Vec<(&str, &str)> = names
            .iter()
            .zip(&addrs)
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        step(1, "underlay: namespaces joined by a bridge");
        lab.star("hub", &format!("{HUB}/64"), &star)?;
        println!(
            "      hub namespace {} (bridge br0, {HUB}); node namespaces {}1 .. {n} ({} .. {})",
            lab.ns("hub"),
            lab.ns("node"),
            addrs[0].trim_end_matches("/64"),
            addrs[n - 1].trim_end_matches("/64"),
        );

        step(
            2,
            "registry, then the nodes (each joins, creates its TUN device and starts)",
        );
        let dir = lab.dir().to_path_buf();
        let reg_dir = dir.join("registry");
        let refresh = format!("{}s", args.refresh.as_secs().max(1));
        let reg_args: Vec<String> = [
            "registry",
            "run",
            "--dir",
            reg_dir.to_str().context("path")?,
            "--listen",
            &format!("[{HUB}]:8443"),
            "--hostname",
            HUB,
            "--enrolment",
            "open",
            "--tunnels",
            &args.tunnels.to_string(),
            "--tunnel-refresh",
            &refresh,
            "--babel-hello",
            "1s",
            "--babel-update",
            "4s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let ready = lab.start_registry("hub", &exe, &reg_args)?;
        let url = format!("https://[{HUB}]:8443");
        let fingerprint = ready.fingerprint;
        let network = ready.network.as_deref().unwrap_or("?");
        println!(
            "      registry {url} in the hub: network {network}, k = {} tunnels per node, refresh every {refresh}",
            args.tunnels
        );
        let mut sockets = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let state = dir.join(name);
            let a: Vec<String> = [
                "node",
                "--dir",
                state.to_str().context("path")?,
                "--registry",
                &url,
                "--ca-fingerprint",
                &fingerprint,
                "--listen",
                "[::]:4326",
                "--advertise",
                &format!("[{}]:4326", addrs[i].trim_end_matches("/64")),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            lab.spawn(Some(name), name, &exe, &a, |c| {
                c.env("RUST_LOG", "re6st=info");
            })?;
            sockets.push(state.join(SOCKET_FILE));
        }
        let mut nodes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let p = lab.proc(name).context("node process")?;
            p.wait_for_line("control socket", Duration::from_secs(60))?;
            let status = match query(&sockets[i], Request::Status).await? {
                Response::Status(s) => s,
                other => anyhow::bail!("unexpected answer {other:?}"),
            };
            println!(
                "      {name}: {} on TUN re6st0 in {} (underlay {})",
                status.address,
                lab.ns(name),
                addrs[i].trim_end_matches("/64")
            );
            nodes.push(DemoNode {
                name: name.clone(),
                address: status.address,
                prefix: status.prefix,
            });
        }
        Ok(Self {
            lab,
            nodes,
            sockets,
        })
    }

    pub(crate) fn nodes(&self) -> &[DemoNode] {
        &self.nodes
    }

    pub(crate) fn dir(&self) -> &Path {
        self.lab.dir()
    }

    pub(crate) async fn status(&self, i: usize) -> anyhow::Result<Status> {
        match query(&self.sockets[i], Request::Status).await? {
            Response::Status(s) => Ok(*s),
            other => anyhow::bail!("unexpected answer {other:?}"),
        }
    }

    pub(crate) async fn tunnels(&self, i: usize) -> anyhow::Result<Vec<TunnelInfo>> {
        match query(&self.sockets[i], Request::Tunnels).await? {
            Response::Tunnels(t) => Ok(t),
            other => anyhow::bail!("unexpected answer {other:?}"),
        }
    }

    pub(crate) async fn routes(&self, i: usize) -> anyhow::Result<Vec<RouteView>> {
        match query(&self.sockets[i], Request::Routes).await? {
            Response::Routes(r) => Ok(r),
            other => anyhow::bail!("unexpected answer {other:?}"),
        }
    }

    /// `ping -6` in the node's namespace.
    pub(crate) async fn ping(
        &self,
        from: usize,
        to: Ipv6Addr,
        count: u32,
        interval: Duration,
    ) -> Ping {
        let ping = self
            .lab
            .ping_command(&self.nodes[from].name, &to.to_string(), count, interval);
        let out = tokio::process::Command::from(ping).output().await;
        re6st::netns::ping_summary(out, count)
    }
}

async fn query(socket: &Path, req: Request) -> anyhow::Result<Response> {
    re6st::control::query(socket, req).await
}
