//! `re6st demo`: a registry and several nodes on this machine, shown
//! working. As root, each node runs as its own `re6st node` process in its
//! own network namespace with a real TUN device, the namespaces joined by
//! a bridge, and the pings are the system's `ping -6` through the kernel
//! and the overlay ([`netns`]). Otherwise the same network runs in this
//! process on loopback without TUN devices, and the nodes ping each other
//! in userspace ([`userspace`]).
//!
//! Steps: start the registry and the nodes, wait until every node has a
//! route to every other, ping every node from every other and print the
//! RTTs and the routes, then watch the tunnel refresh replace a tunnel
//! while pings keep flowing. Everything is cleaned up on exit, on an
//! error, and on Ctrl-C or SIGTERM.

mod netns;
mod userspace;

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::{IpNet, Ipv6Net};
use re6st::control::api::{RouteView, Status, TunnelInfo};
use re6st::control::table::Table;

/// Arguments of `re6st demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(2..=40))]
    pub nodes: u16,
    /// Outgoing tunnels per node (k). Small, so that some routes go
    /// through other nodes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub tunnels: u16,
    /// Tunnel refresh period of the demo network (300s in a real one).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
    /// Run in userspace (loopback, no namespaces, no TUN) even as root.
    #[arg(long)]
    pub userspace: bool,
    /// Keep the working directory (state directories and logs) at the end.
    #[arg(long)]
    pub keep: bool,
}

/// A demo node as the steps see it.
#[derive(Debug, Clone)]
pub(crate) struct DemoNode {
    name: String,
    address: Ipv6Addr,
    prefix: Ipv6Net,
}

/// The result of pinging.
pub(crate) type Ping = re6st::netns::PingSummary;

/// The two ways to run the demo network.
enum Net {
    Netns(netns::NetnsNet),
    User(userspace::UserNet),
}

impl Net {
    fn nodes(&self) -> &[DemoNode] {
        match self {
            Net::Netns(n) => n.nodes(),
            Net::User(n) => n.nodes(),
        }
    }

    async fn status(&self, i: usize) -> anyhow::Result<Status> {
        match self {
            Net::Netns(n) => n.status(i).await,
            Net::User(n) => n.source(i).status().await,
        }
    }

    async fn tunnels(&self, i: usize) -> anyhow::Result<Vec<TunnelInfo>> {
        match self {
            Net::Netns(n) => n.tunnels(i).await,
            Net::User(n) => n.source(i).tunnels().await,
        }
    }

    async fn routes(&self, i: usize) -> anyhow::Result<Vec<RouteView>> {
        match self {
            Net::Netns(n) => n.routes(i).await,
            Net::User(n) => n.source(i).routes().await,
        }
    }

    /// `count` pings from node `from` to `to`, `interval` apart.
    async fn ping(&self, from: usize, to: Ipv6Addr, count: u32, interval: Duration) -> Ping {
        match self {
            Net::Netns(n) => n.ping(from, to, count, interval).await,
            Net::User(n) => n.ping(from, to, count, interval).await,
        }
    }
}

/// Runs `re6st demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        // Dropping the demo future drops its network, which stops every
        // process and deletes every namespace.
        tokio::select! {
            r = demo(args) => r,
            _ = tokio::signal::ctrl_c() => {
                println!("\ninterrupted: cleaning up");
                bail!("interrupted")
            }
            _ = term.recv() => {
                println!("\nterminated: cleaning up");
                bail!("terminated")
            }
        }
    })
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let n = usize::from(args.nodes);
    let root = re6st::netns::is_root();
    let net = if root && !args.userspace {
        println!(
            "re6st demo: a registry and {n} nodes, each node in its own network namespace with a TUN device\n\
             (running as root; every namespace and process is removed at the end, also on Ctrl-C)\n"
        );
        Net::Netns(netns::NetnsNet::start(&args).await?)
    } else {
        if !root {
            println!(
                "re6st demo: not running as root, so no network namespaces or TUN devices: the same network\n\
                 runs in this process on loopback (userspace mode); the nodes ping each other themselves.\n\
                 Run it as root to see each node in its own namespace with a TUN device and the system's ping.\n"
            );
        } else {
            println!("re6st demo: userspace mode (loopback, no TUN devices), as asked\n");
        }
        Net::User(userspace::UserNet::start(&args).await?)
    };
    let nodes = net.nodes().to_vec();

    step(
        3,
        "waiting until every node has a route to every other node",
    );
    let t = Instant::now();
    converge(&net, Duration::from_secs(60)).await?;
    println!(
        "      converged after {:.1} s: each of the {n} nodes routes to the {} others",
        t.elapsed().as_secs_f64(),
        n - 1
    );

    step(
        4,
        "pinging every node from every other node through the overlay",
    );
    ping_matrix(&net).await;
    route_table(&net).await?;

    step(
        5,
        &format!(
            "tunnel refresh: every {} each node replaces its least useful tunnel; pings keep flowing",
            humantime::format_duration(args.refresh)
        ),
    );
    watch_refresh(&net, args.refresh * 2 + Duration::from_secs(2)).await?;

    println!(
        "\ndone in {:.0} s; stopping {} nodes and the registry",
        started.elapsed().as_secs_f64(),
        nodes.len()
    );
    if let Net::Netns(n) = &net
        && args.keep
    {
        println!("      (their logs stay in {})", n.dir().display());
    }
    drop(net);
    println!("cleaned up");
    Ok(())
}

pub(crate) fn step(k: u32, what: &str) {
    println!("[{k}/5] {what}");
}

/// Waits until every node has a selected route to every other node.
async fn converge(net: &Net, timeout: Duration) -> anyhow::Result<()> {
    let nodes = net.nodes();
    let deadline = Instant::now() + timeout;
    loop {
        let mut missing = Vec::new();
        for i in 0..nodes.len() {
            let routes = net.routes(i).await.unwrap_or_default();
            let have = reachable(&routes);
            let lacking = nodes
                .iter()
                .enumerate()
                .filter(|(j, o)| *j != i && !have.contains(&o.prefix))
                .count();
            if lacking > 0 {
                missing.push(format!("{} lacks {lacking}", nodes[i].name));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the network did not converge within {timeout:?}: {}",
                missing.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The node prefixes a route table reaches.
fn reachable(routes: &[RouteView]) -> Vec<Ipv6Net> {
    routes
        .iter()
        .filter(|r| r.selected && !r.local && r.metric != u16::MAX)
        .filter_map(|r| match r.prefix {
            IpNet::V6(p) => Some(p),
            IpNet::V4(_) => None,
        })
        .collect()
}

async fn ping_matrix(net: &Net) {
    let nodes = net.nodes();
    let mut jobs = Vec::new();
    for (i, _) in nodes.iter().enumerate() {
        for (j, to) in nodes.iter().enumerate() {
            if i != j {
                let addr = to.address;
                jobs.push(async move {
                    let p = net.ping(i, addr, 3, Duration::from_millis(200)).await;
                    ((i, j), p)
                });
            }
        }
    }
    let results: BTreeMap<(usize, usize), Ping> =
        futures_join_all(jobs).await.into_iter().collect();
    let mut header = vec!["from \\ to".to_string()];
    header.extend(nodes.iter().map(|n| n.name.clone()));
    let refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = Table::new(&refs);
    let (mut sent, mut received) = (0, 0);
    for (i, from) in nodes.iter().enumerate() {
        let mut row = vec![from.name.clone()];
        for j in 0..nodes.len() {
            row.push(match results.get(&(i, j)) {
                None => "-".into(),
                Some(p) => {
                    sent += p.sent;
                    received += p.received;
                    match p.avg_ms {
                        Some(ms) if p.received == p.sent => format!("{ms:.2}"),
                        Some(ms) => format!("{ms:.2} ({}/{})", p.received, p.sent),
                        None => "LOST".into(),
                    }
                }
            });
        }
        t.row(row);
    }
    println!("      average round-trip time in ms (3 pings each):");
    for l in t.to_string().lines() {
        println!("      {l}");
    }
    println!("      {received} of {sent} pings answered");
}

/// Awaits all the futures concurrently (a tiny `join_all`).
async fn futures_join_all<F: std::future::Future>(jobs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = jobs.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (k, f) in pinned.iter_mut().enumerate() {
            if done[k].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[k] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

async fn route_table(net: &Net) -> anyhow::Result<()> {
    let nodes = net.nodes();
    let name_of = |p: Ipv6Net| {
        nodes
            .iter()
            .find(|n| n.prefix == p)
            .map_or_else(|| p.to_string(), |n| n.name.clone())
    };
    println!("      next hop of each route (\"direct\": an own tunnel; numbers: Babel metric):");
    let mut header = vec!["at \\ to".to_string()];
    header.extend(nodes.iter().map(|n| n.name.clone()));
    let refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = Table::new(&refs);
    let mut transit = 0;
    for (i, n) in nodes.iter().enumerate() {
        let routes = net.routes(i).await?;
        let mut row = vec![n.name.clone()];
        for to in nodes {
            let r = routes
                .iter()
                .find(|r| r.selected && r.prefix == IpNet::V6(to.prefix));
            row.push(match r {
                _ if to.prefix == n.prefix => "-".into(),
                None => "none".into(),
                Some(r) => match r.via {
                    Some(v) if v == to.prefix => format!("direct {}", r.metric),
                    Some(v) => {
                        transit += 1;
                        format!("via {} {}", name_of(v), r.metric)
                    }
                    None => "?".into(),
                },
            });
        }
        t.row(row);
    }
    for l in t.to_string().lines() {
        println!("      {l}");
    }
    println!(
        "      {transit} routes cross another node (each node keeps {} of the {} possible tunnels)",
        tunnel_summary(net).await,
        nodes.len() - 1
    );
    Ok(())
}

async fn tunnel_summary(net: &Net) -> String {
    let mut counts = Vec::new();
    for i in 0..net.nodes().len() {
        if let Ok(s) = net.status(i).await {
            counts.push(s.tunnels_up);
        }
    }
    let (lo, hi) = (
        counts.iter().min().copied().unwrap_or(0),
        counts.iter().max().copied().unwrap_or(0),
    );
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo} to {hi}")
    }
}

/// Outgoing tunnels of every node, by peer prefix.
async fn outgoing(net: &Net) -> Vec<Vec<(Ipv6Net, usize)>> {
    let mut all = Vec::new();
    for i in 0..net.nodes().len() {
        let t = net.tunnels(i).await.unwrap_or_default();
        all.push(
            t.iter()
                // A suspected tunnel is still the node's own (it may come back).
                .filter(|t| {
                    t.direction == "outgoing" && matches!(t.state.as_str(), "up" | "suspect")
                })
                .map(|t| (t.peer_prefix, t.destinations))
                .collect(),
        );
    }
    all
}

/// Watches for a tunnel replacement, with a ring of pings running.
async fn watch_refresh(net: &Net, timeout: Duration) -> anyhow::Result<()> {
    let nodes = net.nodes();
    let name_of = |p: &Ipv6Net| {
        nodes
            .iter()
            .find(|n| &n.prefix == p)
            .map_or_else(|| p.to_string(), |n| n.name.clone())
    };
    // Pings around the ring for the whole watch, 5 per second each.
    let count = u32::try_from(timeout.as_millis() / 200)
        .unwrap_or(50)
        .max(10);
    let pings = futures_join_all(
        (0..nodes.len())
            .map(|i| {
                let to = nodes[(i + 1) % nodes.len()].address;
                net.ping(i, to, count, Duration::from_millis(200))
            })
            .collect(),
    );
    let watch = async {
        let start = Instant::now();
        let mut before = outgoing(net).await;
        // Per node, tunnels that went and came and are not paired yet: the
        // new tunnel may come up a sample before or after the old one goes.
        let mut gone: Vec<Vec<(Ipv6Net, usize)>> = vec![Vec::new(); before.len()];
        let mut added: Vec<Vec<Ipv6Net>> = vec![Vec::new(); before.len()];
        let mut seen = 0;
        while start.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = outgoing(net).await;
            for (i, (old, new)) in before.iter().zip(&now).enumerate() {
                for o in old.iter().filter(|o| !new.iter().any(|x| x.0 == o.0)) {
                    // One that came and went again is no replacement.
                    match added[i].iter().position(|a| *a == o.0) {
                        Some(k) => {
                            added[i].remove(k);
                        }
                        None => gone[i].push(*o),
                    }
                }
                for x in new.iter().filter(|x| !old.iter().any(|o| o.0 == x.0)) {
                    match gone[i].iter().position(|g| g.0 == x.0) {
                        Some(k) => {
                            gone[i].remove(k);
                        }
                        None => added[i].push(x.0),
                    }
                }
                while !gone[i].is_empty() && !added[i].is_empty() {
                    let (g, a) = (gone[i].remove(0), added[i].remove(0));
                    seen += 1;
                    if seen > 8 {
                        continue;
                    }
                    println!(
                        "      {:>5.1} s  {} replaced its tunnel to {} (it carried {} destination{}) by a new one to {}",
                        start.elapsed().as_secs_f64(),
                        nodes[i].name,
                        name_of(&g.0),
                        g.1,
                        if g.1 == 1 { "" } else { "s" },
                        name_of(&a)
                    );
                }
            }
            before = now;
        }
        seen
    };
    let (results, seen) = tokio::join!(pings, watch);
    let sent: u32 = results.iter().map(|p| p.sent).sum();
    let received: u32 = results.iter().map(|p| p.received).sum();
    match seen {
        0 => println!(
            "      no replacement seen within {timeout:?} (the network may be too small to need one)"
        ),
        1..=8 => {}
        _ => println!("      ({} replacements in all)", seen),
    }
    println!(
        "      pings around the ring during the refresh: {received} of {sent} answered{}",
        if received == sent {
            " (tunnels are drained before they close: no loss)"
        } else {
            ""
        }
    );
    Ok(())
}
