//! `re6st node`: the program around [`Node`]. It binds the control socket,
//! joins the registry if the state directory is not enrolled yet (waiting
//! for a registry that does not answer: [`joining`]), opens the TUN
//! device in one of its three modes (or none), routes the network into
//! it, starts the node and the metrics, and runs until SIGINT or SIGTERM;
//! then Babel retracts the node's routes, the tunnels close cleanly, and
//! the kernel route it installed is removed.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use ipnet::Ipv6Net;
use re6st_dataplane::tun::{CreateConfig, Tun, TunOptions, TunSource};
use tokio::sync::watch;

pub mod joining;
pub mod options;
mod reload;

use self::joining::{JOIN_RETRY_MAX, JOIN_RETRY_MIN, JoinProgress, join_until_enrolled};
use self::options::{DEFAULT_MTU, NodeArgs, NodeOptions, TunChoice};
use super::host::echo::{self as echo_host, EchoCounters, EchoHost, EchoQueue};
use super::host::kernel_route;
use super::{Host, HostConfig, HostSlot, Node, NodeConfig, NodeHandle};
use crate::control::api::{HostInfo, SOCKET_FILE};
use crate::control::metrics;
use crate::control::server::{ControlSocket, Served, Source};
use crate::identity::NodeCert;
use crate::join::JoinArgs;
use crate::registry::backoff::Backoff;
use crate::state_dir::{NodeIdentity, StateDir, files};

/// Runs `re6st node` until SIGINT or SIGTERM.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    let opts = reload::read(&args)?;
    let choice = opts.tun_choice()?;
    let join = join_args(&args.dir, &opts)?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = opts.threads {
        rt.worker_threads(n);
    }
    let rt = rt
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(start(args, opts, choice, join))
}

/// What to join with when the directory holds no certificate yet; says
/// how to enrol when the options do not either.
fn join_args(dir: &Path, opts: &NodeOptions) -> anyhow::Result<Option<JoinArgs>> {
    if StateDir::new(dir).has(files::CERT) {
        return Ok(None);
    }
    let Some(registry) = opts.registry.clone().filter(|r| !r.is_empty()) else {
        bail!(
            "{} is not enrolled in a network yet: run `re6st join --registry URL --dir {0}` \
             (with --token TOKEN if the registry asks for one), or give `re6st node` \
             --registry URL [--token TOKEN] to join on the way",
            dir.display()
        );
    };
    Ok(Some(JoinArgs {
        registry,
        token: opts.token.clone(),
        ca_fingerprint: opts.ca_fingerprint,
        dir: dir.to_path_buf(),
    }))
}

/// SIGINT or SIGTERM.
struct Stop(tokio::signal::unix::Signal);

impl Stop {
    fn install() -> anyhow::Result<Self> {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map(Self)
            .context("installing the SIGTERM handler")
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.0.recv() => {}
        }
    }
}

/// Binds the control socket (a second node on the same directory stops
/// here), joins when needed, then runs the node.
async fn start(
    args: NodeArgs,
    opts: NodeOptions,
    choice: TunChoice,
    join: Option<JoinArgs>,
) -> anyhow::Result<()> {
    let dir = args.dir.clone();
    let mut stop = Stop::install()?;
    // From here SIGHUP reloads instead of killing (its default action).
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    if join.is_some() {
        StateDir::new(&dir).create()?;
    }
    let control_path = opts
        .control
        .clone()
        .unwrap_or_else(|| dir.join(SOCKET_FILE));
    let control = ControlSocket::bind(&control_path).await?;
    let (served, served_rx) = watch::channel(Served::Starting);
    let control_task = tokio::spawn(control.serve(served_rx));
    if let Some(join) = join {
        println!(
            "{} is not enrolled yet: joining {} (`re6st status --dir {0}` says how it goes)",
            dir.display(),
            join.registry
        );
        let progress = Arc::new(JoinProgress::new(&join.registry, SystemTime::now()));
        served.send_replace(Served::Joining(progress.clone()));
        let backoff = Backoff::new(JOIN_RETRY_MIN, JOIN_RETRY_MAX);
        let joined = tokio::select! {
            r = join_until_enrolled(&join, &progress, backoff) => Some(r),
            () = stop.wait() => None,
        };
        match joined {
            Some(r) => r.context("joining the registry")?,
            None => {
                control_task.abort();
                let _ = control_task.await;
                println!("re6st node stopped before it could join");
                return Ok(());
            }
        }
        served.send_replace(Served::Starting);
    }
    let identity = StateDir::new(&dir).load_identity().with_context(|| {
        format!(
            "loading the node identity from {} (enrol first with `re6st join --registry URL --dir {0}`)",
            dir.display()
        )
    })?;
    serve(
        args,
        opts,
        choice,
        identity,
        Control {
            path: control_path,
            served,
            task: control_task,
        },
        stop,
        hup,
    )
    .await
}

/// The control socket, already answering.
struct Control {
    path: PathBuf,
    served: watch::Sender<Served>,
    task: tokio::task::JoinHandle<()>,
}

/// The host side's other end, when it is a task of ours.
enum HostSide {
    /// The TUN device: the packet loop reads and writes it.
    Tun,
    /// The userspace ping responder's queue.
    Echo(EchoQueue),
}

/// What the host side needs to undo at the end.
struct RouteGuard {
    installed: Option<(Ipv6Net, String)>,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        if let Some((net, dev)) = self.installed.take() {
            kernel_route::remove(net, &dev);
        }
    }
}

async fn serve(
    args: NodeArgs,
    mut opts: NodeOptions,
    choice: TunChoice,
    identity: NodeIdentity,
    control: Control,
    mut stop: Stop,
    mut hup: tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    let dir = args.dir.clone();
    let metrics_listener = match opts.metrics {
        Some(a) => Some(metrics::bind(a).await?),
        None => None,
    };
    let network = identity
        .network
        .as_ref()
        .context("no network configuration in the state directory (run `re6st join` again)")?
        .verify(&identity.ca_key)
        .context("the network configuration does not verify against the CA")?
        .network;
    let cert = identity.cert.clone();
    let (host, mut info, side) = open_host(&choice, &opts, &cert)?;
    let route = RouteGuard {
        installed: route_network(&mut info, &opts, network),
    };

    let config = NodeConfig {
        listen: opts.listen(),
        advertise: opts.advertise.clone(),
        state_dir: Some(dir.clone()),
        registry_url: opts.registry.clone(),
        transport: opts.transport(),
        tcp: opts.tcp(),
        mtu: info.mtu,
        host: HostConfig::External(HostSlot::new(host)),
        tun_ipv4: info
            .device
            .clone()
            .map(|dev| crate::node::host::ipv4::TunIpv4Config {
                dev,
                no_route: opts.no_route,
            }),
        edges: options::edges_config(&opts),
        replacement: opts.tunnel_replacement,
        ..NodeConfig::default()
    };
    let mut node = Node::start(config, identity).await?;
    let mut host_failed = node.take_host_failure();
    let node = Arc::new(node);
    let counters = Arc::new(EchoCounters::default());
    let _echo = match side {
        HostSide::Tun => None,
        HostSide::Echo(queue) => Some(EchoHost::start(cert.address, queue, counters.clone())),
    };
    let source = Arc::new(Source::new(node.clone(), info.clone(), move || {
        counters.snapshot()
    }));
    control.served.send_replace(Served::Node(source.clone()));
    let mut servers = vec![control.task];
    banner(&node, &info, network, &control.path, &dir);
    let mut metrics_server = metrics_listener.map(|l| {
        if let Ok(a) = l.local_addr() {
            println!("  metrics: http://{a}/metrics");
        }
        tokio::spawn(metrics::serve(l, source.clone()))
    });

    let failure = loop {
        tokio::select! {
            () = stop.wait() => break None,
            _ = hup.recv() => {
                reload_options(&args, &mut opts, &node, &mut metrics_server, &source).await;
                // And what the registry holds: a new network configuration
                // (IPv4 added, say), the CRL, a certificate to renew.
                tracing::info!("reload: asking the registry now");
                node.refresh_registry().await;
            }
            e = async {
                match host_failed.as_mut() {
                    Some(rx) => match rx.await {
                        Ok(e) => e,
                        Err(_) => std::future::pending().await,
                    },
                    None => std::future::pending().await,
                }
            } => break Some(e),
        }
    };
    tracing::info!("shutting down: retracting routes and closing tunnels");
    servers.extend(metrics_server);
    for s in &servers {
        s.abort();
    }
    for s in servers {
        let _ = s.await;
    }
    control.served.send_replace(Served::Starting);
    drop(control.served);
    drop(source);
    shutdown(node).await;
    drop(route);
    match failure {
        Some(e) => Err(anyhow::Error::new(e).context(format!(
            "the TUN device {} failed (was it deleted?)",
            info.device.as_deref().unwrap_or("?")
        ))),
        None => {
            println!("re6st node stopped");
            Ok(())
        }
    }
}

/// SIGHUP: re-reads the configuration file and applies what can change
/// while the node runs. A file that does not parse or validate changes
/// nothing.
async fn reload_options(
    args: &NodeArgs,
    opts: &mut NodeOptions,
    node: &NodeHandle,
    metrics_server: &mut Option<tokio::task::JoinHandle<()>>,
    source: &Arc<Source>,
) {
    let new = match reload::read(args) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("reload: {e:#}; keeping the options in force");
            return;
        }
    };
    let mut applied = match node.reconfigure(reload::live(&new)).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("reload: {e:#}; keeping the options in force");
            return;
        }
    };
    if new.metrics != opts.metrics {
        match new.metrics {
            Some(a) => match metrics::bind(a).await {
                Ok(l) => {
                    if let Some(old) =
                        metrics_server.replace(tokio::spawn(metrics::serve(l, source.clone())))
                    {
                        old.abort();
                    }
                    applied.push("metrics");
                }
                Err(e) => tracing::error!(
                    "reload: metrics on {a}: {e:#}; keeping the metrics server in force"
                ),
            },
            None => {
                if let Some(old) = metrics_server.take() {
                    old.abort();
                }
                applied.push("metrics");
            }
        }
    }
    let fixed = reload::restart_needed(opts, &new);
    if !fixed.is_empty() {
        tracing::warn!(
            options = fixed.join(", "),
            "reload: these options apply only at the next start; restart the node to apply them"
        );
    }
    tracing::info!(
        applied = if applied.is_empty() {
            "nothing".to_string()
        } else {
            applied.join(", ")
        },
        "reloaded the configuration"
    );
    // What differs and needs a restart stays as it runs, so it is named
    // again at the next reload.
    let keep = opts.clone();
    *opts = NodeOptions {
        tunnel_replacement: new.tunnel_replacement,
        gateway: new.gateway,
        gateway_metric: new.gateway_metric,
        metrics: if applied.contains(&"metrics") {
            new.metrics
        } else {
            keep.metrics
        },
        ..keep
    };
}

/// Shuts the node down cleanly once the last control request let go of
/// it (a request being answered holds a reference for a moment).
async fn shutdown(mut node: Arc<NodeHandle>) {
    for _ in 0..100 {
        match Arc::try_unwrap(node) {
            Ok(n) => return n.shutdown().await,
            Err(n) => {
                node = n;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tracing::warn!("the node is still in use; stopping without a clean close");
}

fn open_host(
    choice: &TunChoice,
    opts: &NodeOptions,
    cert: &NodeCert,
) -> anyhow::Result<(Host, HostInfo, HostSide)> {
    let queues = opts.queues.unwrap_or(1);
    let options = TunOptions {
        offload: !opts.no_offload,
        multi_queue: queues > 1,
    };
    let (mode, first) = match choice {
        TunChoice::None => {
            let (host, queue) = echo_host::channel();
            let info = HostInfo {
                mode: "none".into(),
                device: None,
                offload: false,
                mtu: opts.mtu.unwrap_or(DEFAULT_MTU),
                queues: 0,
                route: "none".into(),
            };
            return Ok((host, info, HostSide::Echo(queue)));
        }
        TunChoice::Create(name) => {
            let address =
                Ipv6Net::new(cert.address, cert.prefix.prefix_len()).context("the node address")?;
            let config = CreateConfig {
                name: name.clone(),
                address: Some(address),
                mtu: opts.mtu.unwrap_or(DEFAULT_MTU),
            };
            (
                "created",
                Tun::open_detached(TunSource::Create(config), options)?,
            )
        }
        TunChoice::Attach(name) => (
            "attached",
            Tun::open_detached(TunSource::Attach { name: name.clone() }, options)?,
        ),
        TunChoice::Fd(fd) => {
            // SAFETY: F_GETFD only reads the descriptor flags.
            if unsafe { libc::fcntl(*fd, libc::F_GETFD) } < 0 {
                bail!(
                    "--tun-fd {fd}: no such open descriptor (the parent must pass it without FD_CLOEXEC)"
                );
            }
            // SAFETY: the descriptor is open and the operator hands it to
            // us; nothing else in this process uses it, and from here the
            // device owns and closes it.
            let owned = unsafe { OwnedFd::from_raw_fd(*fd) };
            ("fd", Tun::open_detached(TunSource::Fd(owned), options)?)
        }
    };
    let name = first.name().to_string();
    // A device we did not create keeps its admin's MTU.
    let mtu = match choice {
        TunChoice::Create(_) => opts.mtu.unwrap_or(DEFAULT_MTU),
        _ => first
            .mtu()
            .with_context(|| format!("reading the MTU of {name}"))?,
    };
    if mode != "created" {
        if opts.mtu.is_some_and(|m| m != mtu) {
            tracing::warn!(
                device = %name, mtu,
                "--mtu only applies to a device the node creates; using the device's MTU"
            );
        }
        if mtu > DEFAULT_MTU {
            tracing::warn!(
                device = %name, mtu,
                "packets above {DEFAULT_MTU} bytes do not fit one QUIC datagram on a 1500-byte underlay and are fragmented; `ip link set {name} mtu {DEFAULT_MTU}` is faster"
            );
        }
        if !kernel_route::has_address(cert.address, &name) {
            let a = Ipv6Net::new(cert.address, cert.prefix.prefix_len())
                .map(|a| kernel_route::address_command(a, &name))
                .unwrap_or_default();
            tracing::warn!(
                device = %name,
                "the device does not have the node address {}: this host cannot use the overlay until an admin runs `{a}`",
                cert.address
            );
        }
    }
    if queues > 1 {
        tracing::info!(
            device = %name, queues,
            "the packet loop reads one queue of the multi-queue device"
        );
    }
    let offload = first.offload();
    let info = HostInfo {
        mode: mode.into(),
        device: Some(name),
        offload,
        mtu,
        queues: 1,
        route: "missing".into(),
    };
    Ok((Host::Tun { tun: first, mtu }, info, HostSide::Tun))
}

/// Makes sure the kernel routes the network into the device; returns what
/// the node installed (to remove at the end).
fn route_network(
    info: &mut HostInfo,
    opts: &NodeOptions,
    network: Ipv6Net,
) -> Option<(Ipv6Net, String)> {
    let dev = info.device.clone()?;
    if kernel_route::has_route(network, &dev) {
        info.route = "present".into();
        return None;
    }
    let cmd = kernel_route::route_command(network, &dev);
    if opts.no_route {
        tracing::warn!(
            "no route to the overlay {network} through {dev} (--no-route): this host reaches no other node until an admin runs `{cmd}`"
        );
        return None;
    }
    match kernel_route::install(network, &dev) {
        Ok(()) => {
            info.route = "installed".into();
            Some((network, dev))
        }
        Err(e) => {
            tracing::warn!(
                "cannot route the overlay {network} into {dev} ({e}): this host reaches no other node until an admin (root or CAP_NET_ADMIN) runs `{cmd}`"
            );
            None
        }
    }
}

fn banner(node: &NodeHandle, info: &HostInfo, network: Ipv6Net, control: &Path, dir: &Path) {
    println!(
        "re6st node {} (prefix {}) in network {network}",
        node.address(),
        node.prefix()
    );
    let host = match &info.device {
        Some(d) => format!(
            "TUN {d} ({}, MTU {}, offload {}), route {network} -> {d} {}",
            info.mode,
            info.mtu,
            if info.offload { "on" } else { "off" },
            info.route
        ),
        None => "no TUN: userspace mode (routes and forwards for others, answers pings)".into(),
    };
    println!("  QUIC on UDP {}; {host}", node.local_addr());
    println!(
        "  control socket {}: try `re6st status --dir {}`",
        control.display(),
        dir.display()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
