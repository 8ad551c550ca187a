//! The registry: CA, prefix allocation, CRL, network configuration and
//! bootstrap peers, served over HTTPS; and its admin subcommands, which act
//! on the store directly (they run on the registry's host, as the user who
//! owns its directory, also while the server runs).
//!
//! - [`api`]: request/response types and paths, shared with [`client`].
//! - [`store`]: SQLite, one transaction per operation.
//! - [`alloc`]: buddy allocator of node prefixes.
//! - [`server`]: axum over tokio-rustls.
//! - [`client`]: what `re6st join` and nodes use.
//! - [`backoff`]: how they wait for a registry that does not answer.
//! - [`gateways`]: which node may route which prefix outside the overlay.

pub mod alloc;
pub mod api;
pub mod backoff;
pub mod ca_key;
pub mod client;
pub mod core;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateways;
pub mod listener;
pub mod metrics;
pub mod server;
pub mod server_tls;
pub mod store;
pub mod topology;
pub mod writer;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use ipnet::Ipv6Net;

use self::ca_key::{CaSecret, SECRET_ENV};
use self::core::{Place, Registry, Settings, load_ca, open_initialised};
use self::store::{Location, RevokeTarget};

/// Default registry directory.
pub const DEFAULT_DIR: &str = "/var/lib/re6st/registry";

/// `re6st registry` subcommands.
#[derive(Debug, clap::Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum RegistryCommand {
    /// Run the registry server. The first start creates the directory, the
    /// CA (ECDSA P-256) and the database; later starts keep them. Options
    /// given are stored and stay in force on later starts.
    Run(RunArgs),
    /// Make single-use enrolment tokens (printed one per line), or delete one.
    Token(TokenArgs),
    /// List enrolment tokens.
    Tokens(ListArgs),
    /// List nodes: prefix, state, newest serial, expiry, last announcement.
    List(ListArgs),
    /// Revoke a node, by prefix or by the serial of any of its certificates.
    /// Its certificates go on the CRL at once; its prefix is freed when its
    /// last certificate expires.
    Revoke(RevokeArgs),
    /// Authorise nodes to route prefixes outside the overlay (::/0 and
    /// others): add, list, remove.
    #[command(subcommand)]
    Gateway(gateways::GatewayCommand),
    /// Show the network prefix, the CA fingerprint to give to joining nodes,
    /// and counts.
    Info(DirArgs),
    /// Draw the overlay as the nodes last reported it: nodes (version,
    /// gateway), tunnels and LAN links. Text summary by default.
    Topology(TopologyArgs),
}

/// Options of `re6st registry topology`.
#[derive(Debug, Clone, clap::Args)]
pub struct TopologyArgs {
    /// The registry directory.
    #[command(flatten)]
    pub dir: DirArgs,
    /// Print the graph as JSON.
    #[arg(long, conflicts_with_all = ["dot", "svg"])]
    pub json: bool,
    /// Print Graphviz DOT (e.g. `| neato -Tpng > map.png`).
    #[arg(long, conflicts_with = "svg")]
    pub dot: bool,
    /// Print SVG (the drawing `GET /v1/topology.svg` serves).
    #[arg(long)]
    pub svg: bool,
    /// Only nodes that announced within this [default: the registry's
    /// --announce-max-age].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_age: Option<Duration>,
}

/// Where the registry keeps its state.
#[derive(Debug, Clone, clap::Args)]
pub struct DirArgs {
    /// Registry directory (SQLite: CA key, CA certificate, database).
    #[arg(long, env = "RE6ST_REGISTRY_DIR", default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// The database: `postgres://user[:password]@host[:port]/db` for
    /// several replicas on one PostgreSQL (the CA then lives in the
    /// database, its key encrypted), or `sqlite:PATH`. Default: SQLite in
    /// the registry directory.
    #[arg(long, env = "RE6ST_REGISTRY_DATABASE", value_name = "URL")]
    pub database: Option<Location>,
    /// File holding the secret that encrypts the CA key at rest (at least
    /// 16 bytes; e.g. `head -c 32 /dev/urandom | base64 > FILE`). Required
    /// with PostgreSQL; with SQLite, a plain ca.key is encrypted in place
    /// the first time it is given. The secret may instead be given in the
    /// environment variable RE6ST_CA_KEY_SECRET.
    #[arg(long, value_name = "FILE")]
    pub ca_key_secret_file: Option<PathBuf>,
}

impl DirArgs {
    /// Where the state is, with the CA key secret read.
    pub fn place(&self) -> anyhow::Result<Place> {
        let secret = match &self.ca_key_secret_file {
            Some(f) => {
                let b = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                Some(CaSecret::new(&b).with_context(|| format!("in {}", f.display()))?)
            }
            None => std::env::var_os(SECRET_ENV)
                .filter(|v| !v.is_empty())
                .map(|v| CaSecret::new(v.as_encoded_bytes()))
                .transpose()
                .with_context(|| format!("in {SECRET_ENV}"))?,
        };
        let database = self
            .database
            .clone()
            .unwrap_or_else(|| Location::Sqlite(self.dir.join(core::DB)));
        Ok(Place {
            dir: self.dir.clone(),
            database,
            secret,
        })
    }
}

/// Whether nodes need a token to enrol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Enrolment {
    /// Anyone who can reach the registry may enrol.
    Open,
    /// A token from `re6st registry token` is needed (the default).
    Token,
}

/// Options of `re6st registry run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The registry directory.
    #[command(flatten)]
    pub dir: DirArgs,
    /// Address to listen on (HTTPS).
    #[arg(long, default_value = "[::]:8443")]
    pub listen: SocketAddr,
    /// DNS name or IP address nodes use to reach the registry; the HTTPS
    /// certificate is issued for these (repeat for several). Default:
    /// localhost, 127.0.0.1, ::1 and the --listen address if specific.
    #[arg(long = "hostname")]
    pub hostnames: Vec<String>,
    /// Public URL of the registry, written into the network configuration.
    /// Default: https://<first hostname>:<port>. Running nodes use a new
    /// one only when restarted.
    #[arg(long)]
    pub url: Option<String>,
    /// Network prefix (first start only; default: a random ULA /48).
    #[arg(long)]
    pub network: Option<Ipv6Net>,
    /// Length of node prefixes [stored default: 64]. Running nodes apply a
    /// change only when restarted.
    ///
    /// Changing one of the options below re-signs the network configuration
    /// (version + 1). Nodes learn it at their next registry round (every
    /// 12 h, and at start) and apply it without a restart.
    #[arg(long)]
    pub node_prefix_len: Option<u8>,
    /// Enrolment mode [stored default: token].
    #[arg(long, value_enum)]
    pub enrolment: Option<Enrolment>,
    /// Node certificate lifetime, e.g. 365d [stored default: 365d].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub cert_lifetime: Option<Duration>,
    /// Renew certificates that have less than this left [stored default: 30d].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub renew_window: Option<Duration>,
    /// How long after expiry a node may still renew before its prefix is
    /// released [stored default: 30d].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub grace_period: Option<Duration>,
    /// Bootstrap answers hold nodes that announced within this (nodes
    /// announce every 12 h) [stored default: 25h].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub announce_max_age: Option<Duration>,
    /// Outgoing tunnels per node, k [stored default: 10]. Applied live: a
    /// larger k opens the new tunnels at once; a smaller one drains one
    /// surplus tunnel per refresh period (routes move away first).
    #[arg(long)]
    pub tunnels: Option<u16>,
    /// Most tunnels per node [stored default: 3k]. Applied live: a lower
    /// maximum refuses new incoming tunnels, cuts none; the surplus goes as
    /// the peers replace their tunnels.
    #[arg(long)]
    pub max_tunnels: Option<u16>,
    /// Tunnel refresh period [stored default: 300s]. Applied live from the
    /// refresh already scheduled (a shorter one brings it forward).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub tunnel_refresh: Option<Duration>,
    /// How each refresh replaces a tunnel [stored default: least-used]:
    /// `least-used` (the 2012 report's policy: the tunnel routing the fewest
    /// destinations, replaced by one to a random peer) or
    /// `least-used-best-of-N` (same victim, but N random peers are probed
    /// and the lowest-RTT one is kept; N = 5 reached the report policy's
    /// latency in 5x fewer refreshes in `re6st sim beyond`, at the cost of
    /// N-1 extra QUIC handshakes per refresh). `random` and `never` exist
    /// for experiments; `shortcut-R` runs in `re6st sim` only. Applied live
    /// from the next refresh.
    #[arg(long, value_name = "POLICY", value_parser = crate::tunnels::policy::Replacement::parse_for_nodes)]
    pub tunnel_replacement: Option<crate::tunnels::policy::Replacement>,
    /// Babel Hello interval [stored default: 4s]; IHU is 3x Hello. Applied
    /// live to every tunnel (each Hello says its interval).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub babel_hello: Option<Duration>,
    /// Babel update interval [stored default: 16s]. Applied live.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub babel_update: Option<Duration>,
    /// Largest RTT penalty of a tunnel, in metric units where a hop costs 96
    /// [stored default: 1000]. Above 96 latency outweighs hops, so routes
    /// follow low latency (the report's optimisation); babeld's `type
    /// tunnel` uses 96 (routes follow hop count), re6stnet 5000 (routes
    /// change more often under RTT noise). Applied live: every tunnel is
    /// costed again and routes reselected.
    #[arg(long)]
    pub babel_rtt_penalty: Option<u16>,
    /// RTT at which the penalty is largest [stored default: 300ms]. Applied
    /// live.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub babel_rtt_max: Option<Duration>,
    /// Oldest node protocol version allowed [stored default: 1]. A running
    /// node older than this logs an error asking for an upgrade.
    #[arg(long)]
    pub min_protocol: Option<u32>,
    /// Carry IPv4 inside the overlay: every node gets an IPv4 subnet of
    /// this network (e.g. 10.42.0.0/16) with its certificate, puts the
    /// first address of it on its TUN and routes the network into the
    /// overlay. May be given at first start or later (running nodes get
    /// their subnet at their next registry round); fixed once set.
    #[arg(long, value_name = "NET/LEN")]
    pub ipv4: Option<ipnet::Ipv4Net>,
    /// Length of each node's IPv4 subnet [stored default: 24]. A change
    /// applies to subnets given from then on.
    #[arg(long, value_name = "LEN")]
    pub ipv4_prefix_len: Option<u8>,
    /// How often expired and revoked prefixes are released (and settings
    /// changed by another replica picked up).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub sweep_every: Duration,
    /// Serve Prometheus metrics (`/metrics`), the health check and the map
    /// of the network (`/v1/topology.svg`, `/v1/topology.json`) over plain
    /// HTTP on this loopback address, e.g. 127.0.0.1:9471.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Also serve the map of the network on the public API (it names every
    /// node and who it is connected to).
    #[arg(long)]
    pub public_topology: bool,
    /// Most HTTPS connections at once; when full, the longest-idle one is
    /// closed for a new one.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Time allowed for the TLS handshake, the request headers and the body.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Connections without a request for this long are closed.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
}

impl RunArgs {
    /// Applies the options given to the stored settings.
    pub fn apply(&self, s: &mut Settings) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if let Some(v) = self.node_prefix_len {
            s.network.node_prefix_len = v;
        }
        if let Some(v) = self.enrolment {
            s.open = v == Enrolment::Open;
        }
        if let Some(v) = self.cert_lifetime {
            s.cert_lifetime_secs = v.as_secs().max(1);
        }
        if let Some(v) = self.renew_window {
            s.renew_window_secs = v.as_secs();
        }
        if let Some(v) = self.grace_period {
            s.grace_period_secs = v.as_secs();
        }
        if let Some(v) = self.announce_max_age {
            s.announce_max_age_secs = v.as_secs().max(1);
        }
        if let Some(v) = self.tunnels {
            s.network.tunnels = v;
            if self.max_tunnels.is_none() {
                s.network.max_tunnels = v.saturating_mul(3);
            }
        }
        if let Some(v) = self.max_tunnels {
            s.network.max_tunnels = v;
        }
        if let Some(v) = self.tunnel_refresh {
            s.network.tunnel_refresh_secs = v.as_secs().max(1);
        }
        if let Some(v) = self.tunnel_replacement {
            s.network.tunnel_replacement = v;
        }
        if let Some(v) = self.babel_hello {
            s.network.babel_hello_ms = ms(v).max(1);
            s.network.babel_ihu_ms = s.network.babel_hello_ms.saturating_mul(3);
        }
        if let Some(v) = self.babel_update {
            s.network.babel_update_ms = ms(v).max(1);
        }
        if let Some(v) = self.babel_rtt_penalty {
            s.network.babel_rtt_max_penalty = v;
        }
        if let Some(v) = self.babel_rtt_max {
            s.network.babel_rtt_max_ms = ms(v).max(11);
        }
        if let Some(v) = self.min_protocol {
            s.network.min_protocol = v;
        }
        if let Some(v) = self.ipv4 {
            s.network.ipv4 = Some(v);
        }
        if let Some(v) = self.ipv4_prefix_len {
            s.ipv4_prefix_len = v;
        }
    }

    fn hostnames(&self) -> Vec<String> {
        if !self.hostnames.is_empty() {
            return self.hostnames.clone();
        }
        let mut h = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        let ip = self.listen.ip();
        if !ip.is_unspecified() && !h.contains(&ip.to_string()) {
            h.insert(0, ip.to_string());
        }
        h
    }
}

/// Options of `re6st registry token`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The registry directory.
    #[command(flatten)]
    pub dir: DirArgs,
    /// How many tokens.
    #[arg(long, short = 'n', default_value_t = 1)]
    pub count: u32,
    /// Tokens expire after this (e.g. 7d); default: never.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub valid_for: Option<Duration>,
    /// Prefix length granted by these tokens (default: the network's).
    #[arg(long)]
    pub prefix_len: Option<u8>,
    /// Free text kept with the tokens (who they are for).
    #[arg(long, default_value = "")]
    pub comment: String,
    /// Delete this unused token instead of making new ones.
    /// (Tokens are base64url: one may begin with '-'.)
    #[arg(
        long,
        value_name = "TOKEN",
        allow_hyphen_values = true,
        conflicts_with_all = ["count", "valid_for", "prefix_len", "comment"]
    )]
    pub delete: Option<String>,
}

/// Options of the listing commands.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// The registry directory.
    #[command(flatten)]
    pub dir: DirArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Include released nodes.
    #[arg(long)]
    pub all: bool,
}

/// Options of `re6st registry revoke`.
#[derive(Debug, Clone, clap::Args)]
pub struct RevokeArgs {
    /// The registry directory.
    #[command(flatten)]
    pub dir: DirArgs,
    /// A node prefix (fd00:1:2:3::/64) or a certificate serial (decimal).
    pub target: RevokeTarget,
}

/// Runs a `re6st registry` subcommand.
pub fn run(cmd: RegistryCommand) -> anyhow::Result<()> {
    match cmd {
        RegistryCommand::Run(args) => {
            let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            rt.block_on(run_server(args))
        }
        RegistryCommand::Token(a) => admin_token(&a),
        RegistryCommand::Tokens(a) => admin_tokens(&a),
        RegistryCommand::List(a) => admin_list(&a),
        RegistryCommand::Revoke(a) => admin_revoke(&a),
        RegistryCommand::Gateway(c) => gateways::admin(c),
        RegistryCommand::Info(a) => admin_info(&a),
        RegistryCommand::Topology(a) => admin_topology(&a),
    }
}

/// `https://host:port` for a host that may be an IPv6 literal.
fn https_url(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => format!("https://[{a}]:{port}"),
        _ => format!("https://{host}:{port}"),
    }
}

async fn run_server(args: RunArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let bound = listener.local_addr()?;
    let hostnames = args.hostnames();
    let url = args.url.clone().unwrap_or_else(|| {
        https_url(
            hostnames.first().map_or("localhost", String::as_str),
            bound.port(),
        )
    });
    let now = SystemTime::now();
    let place = args.dir.place()?;
    let registry = Registry::open_at(&place, args.network, url.clone(), |s| args.apply(s), now)?;
    let tls = server::server_tls(&registry, &hostnames, now)?;
    let s = registry.settings();
    println!(
        "re6st registry: listening on {} (network {}, node prefixes /{}, {} enrolment, config v{}, {}), CA {}",
        https_url(&bound.ip().to_string(), bound.port()),
        s.network.network,
        s.network.node_prefix_len,
        if s.open { "open" } else { "token" },
        s.network.version,
        place.database,
        registry.ca.fingerprint(),
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(%url, "registry URL given to nodes");
    let registry = Arc::new(registry);
    registry
        .public_topology
        .store(args.public_topology, std::sync::atomic::Ordering::Relaxed);
    if let Some(addr) = args.metrics {
        let l = crate::control::metrics::bind(addr).await?;
        println!("re6st registry: metrics and topology on http://{addr}");
        tokio::spawn(metrics::serve(l, registry.clone()));
    }
    let limits = listener::Limits {
        max_connections: connection_budget(args.max_connections),
        request_timeout: args.request_timeout,
        idle_timeout: args.idle_timeout,
        busy_timeout: args.idle_timeout.max(args.request_timeout * 3),
    };
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
        }
        tracing::info!("shutting down");
    };
    server::serve_with(registry, listener, tls, args.sweep_every, limits, shutdown).await
}

/// `wanted` connections, fewer if the open-file limit (raised to its hard
/// maximum first) cannot hold them with room for the database and logs.
fn connection_budget(wanted: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return wanted;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    let room = usize::try_from(lim.rlim_cur)
        .unwrap_or(usize::MAX)
        .saturating_sub(64);
    if room < wanted {
        tracing::warn!(
            wanted,
            allowed = room,
            "the open-file limit allows fewer connections than --max-connections"
        );
    }
    wanted.min(room).max(1)
}

/// The store of an existing registry (the CA is loaded only by the
/// commands that sign). Never initialises one.
fn open_existing(a: &DirArgs) -> anyhow::Result<(store::Store, Place, Ipv6Net)> {
    let place = a.place()?;
    let (store, net) = open_initialised(&place)?;
    Ok((store, place, net))
}

fn admin_token(a: &TokenArgs) -> anyhow::Result<()> {
    let (store, _, net) = open_existing(&a.dir)?;
    if let Some(t) = &a.delete {
        if !store.delete_token(t)? {
            anyhow::bail!(
                "no unused token {t:?} (used tokens are kept as the record of who enrolled)"
            );
        }
        println!("deleted token {t}");
        return Ok(());
    }
    if let Some(l) = a.prefix_len
        && (l <= net.prefix_len() || l > 127)
    {
        anyhow::bail!(
            "--prefix-len {l} must be longer than the network's /{} and at most 127",
            net.prefix_len()
        );
    }
    for t in store.create_tokens(
        a.count,
        a.valid_for,
        a.prefix_len,
        &a.comment,
        SystemTime::now(),
    )? {
        println!("{t}");
    }
    Ok(())
}

fn fmt_time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(crate::identity::from_unix_secs(secs)).to_string()
}

fn admin_tokens(a: &ListArgs) -> anyhow::Result<()> {
    let (store, _, _) = open_existing(&a.dir)?;
    let rows = store.list_tokens()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<22} {:<21} {:<21} {:<5} {:<24} COMMENT",
        "TOKEN", "CREATED", "EXPIRES", "LEN", "USED BY"
    );
    for t in rows {
        println!(
            "{:<22} {:<21} {:<21} {:<5} {:<24} {}",
            t.token,
            fmt_time(t.created),
            t.expires.map_or("never".into(), fmt_time),
            t.prefix_len.map_or("-".into(), |l| format!("/{l}")),
            t.used_by.as_deref().unwrap_or("-"),
            t.comment
        );
    }
    Ok(())
}

fn admin_list(a: &ListArgs) -> anyhow::Result<()> {
    let (store, _, _) = open_existing(&a.dir)?;
    let rows = store.list_nodes(a.all)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    // The IPv4 column only where the network has IPv4.
    let ipv4 = rows.iter().any(|n| n.ipv4.is_some());
    let column = |s: &str| {
        if ipv4 {
            format!("{s:<18} ")
        } else {
            String::new()
        }
    };
    println!(
        "{:<28} {}{:<9} {:>8} {:<21} LAST ANNOUNCE",
        "PREFIX",
        column("IPV4"),
        "STATE",
        "SERIAL",
        "EXPIRES"
    );
    for n in rows {
        println!(
            "{:<28} {}{:<9} {:>8} {:<21} {}",
            n.prefix,
            column(n.ipv4.as_deref().unwrap_or("-")),
            format!("{:?}", n.state).to_lowercase(),
            n.serial,
            fmt_time(n.not_after),
            n.last_announce.map_or("never".into(), fmt_time)
        );
    }
    Ok(())
}

fn admin_revoke(a: &RevokeArgs) -> anyhow::Result<()> {
    let (store, place, _) = open_existing(&a.dir)?;
    let ca = load_ca(&place, &store)?;
    let now = SystemTime::now();
    let out = store.revoke(&ca, a.target, now)?;
    let grants = store.write(|tx| gateways::drop_nodes(tx, &ca, &[out.prefix], now))?;
    if grants > 0 {
        println!("withdrew its {grants} gateway authorisation(s)");
    }
    let serials = out
        .serials
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if out.newly {
        println!(
            "revoked {} (serials on the CRL: {serials}); the prefix is freed when they expire",
            out.prefix
        );
    } else {
        println!(
            "{} was already revoked (serials on the CRL: {serials})",
            out.prefix
        );
    }
    Ok(())
}

fn admin_info(a: &DirArgs) -> anyhow::Result<()> {
    let (store, place, net) = open_existing(a)?;
    let fingerprint = core::ca_fingerprint(&place, &store)?;
    let (active, revoked, certs) = store.counts()?;
    let settings: Option<Settings> = store
        .meta(store::META_SETTINGS)?
        .and_then(|j| serde_json::from_str(&j).ok());
    println!("network:         {net}");
    println!("database:        {}", place.database);
    println!("CA fingerprint:  {fingerprint}");
    if let Some(s) = settings {
        println!("registry URL:    {}", s.network.registry_url);
        println!("enrolment:       {}", if s.open { "open" } else { "token" });
        println!("node prefixes:   /{}", s.network.node_prefix_len);
        if let Some(v4) = s.network.ipv4 {
            println!("IPv4:            {v4}, node subnets /{}", s.ipv4_prefix_len);
        }
        println!("config version:  {}", s.network.version);
    }
    println!(
        "nodes:           {active} active, {revoked} revoked; {certs} node certificates issued"
    );
    Ok(())
}

fn admin_topology(a: &TopologyArgs) -> anyhow::Result<()> {
    let (store, _, net) = open_existing(&a.dir)?;
    let now = SystemTime::now();
    let max_age = match a.max_age {
        Some(d) => d,
        None => {
            let settings: Option<Settings> = store
                .meta(store::META_SETTINGS)?
                .and_then(|j| serde_json::from_str(&j).ok());
            Duration::from_secs(settings.map_or(25 * 3600, |s| s.announce_max_age_secs))
        }
    };
    let anns = store.read(|tx| store::peers::announcements(tx, now - max_age, now))?;
    let map = topology::Map::build(Some(net), &anns, now);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&map)?);
    } else if a.dot {
        print!("{}", topology::dot::render(&map));
    } else if a.svg {
        print!("{}", topology::svg::render(&map));
    } else {
        let (nodes, tunnels, lan) = map.counts();
        println!("network {net}: {nodes} nodes, {tunnels} tunnels, {lan} LAN links");
        println!(
            "{:<28} {:<10} {:>5} {:<6} GATEWAY",
            "NODE", "VERSION", "LINKS", "REPORT"
        );
        for n in &map.nodes {
            let links = map
                .links
                .iter()
                .filter(|l| l.a == n.prefix || l.b == n.prefix)
                .count();
            let gw: Vec<String> = n.gateways.iter().map(ToString::to_string).collect();
            println!(
                "{:<28} {:<10} {:>5} {:<6} {}",
                n.prefix.to_string(),
                n.version.as_deref().unwrap_or("-"),
                links,
                if n.reported { "yes" } else { "no" },
                if gw.is_empty() {
                    "-".into()
                } else {
                    gw.join(",")
                }
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: TokenArgs,
    }

    #[test]
    fn a_token_to_delete_may_begin_with_a_hyphen() {
        let w = Wrap::try_parse_from(["token", "--dir", "/tmp/r", "--delete", "-Ab_9"]).unwrap();
        assert_eq!(w.args.delete.as_deref(), Some("-Ab_9"));
    }
}
