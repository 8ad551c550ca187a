//! The options of `re6st node`: one struct that is both the command-line
//! flags (clap) and the TOML configuration file (serde), so that every
//! option of the file is also a flag with the same name. A flag given on
//! the command line wins over the file; the file wins over the defaults.
//!
//! ```toml
//! # /var/lib/re6st/node/node.toml (read when present, or --config FILE)
//! listen = "[::]:4326"
//! advertise = ["[2001:db8::7]:4326"]
//! tun = "re6st0"          # or tun-attach = "re6st0", or tun-fd = 3, or no-tun = true
//! mtu = 1400
//! metrics = "127.0.0.1:9470"
//! keep-alive = "200ms"    # liveness: a dead peer's routes move away in
//! suspect-after = "600ms" #   about 0.65 s; its connection closes at
//! idle-timeout = "10s"    #   the idle timeout
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Deserializer};

use crate::identity::Fingerprint;
use crate::node::{DEFAULT_PORT, EdgesConfig};
use crate::transport::TransportConfig;

/// Default TUN device name.
pub const DEFAULT_TUN: &str = "re6st0";

/// Default overlay MTU: the largest packet that fits one QUIC datagram on
/// a 1500-byte underlay (1414 bytes with `initial_mtu` 1452).
pub const DEFAULT_MTU: u16 = 1400;

/// Name of the configuration file read from the state directory.
pub const CONFIG_FILE: &str = "node.toml";

/// Arguments of `re6st node`.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// State directory written by `re6st join` (key, certificate, CA, CRL,
    /// network configuration; the node adds its peer DB and its control
    /// socket).
    #[arg(long, env = "RE6ST_DIR", default_value = crate::join::DEFAULT_DIR)]
    pub dir: PathBuf,
    /// TOML file with the same options as the flags (default: DIR/node.toml
    /// when it exists). Flags win over the file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The options.
    #[command(flatten)]
    pub options: NodeOptions,
}

/// The options shared by the flags and the file. `None`/empty/false means
/// "not given here".
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeOptions {
    /// Registry URL. When the state directory is not enrolled yet, the
    /// node joins this registry first (as `re6st join` would), waiting for
    /// it as long as it does not answer (`re6st status` says so); otherwise
    /// it overrides the URL of the network configuration (an empty string
    /// runs without a registry).
    #[arg(long)]
    pub registry: Option<String>,
    /// Enrolment token, for joining (see --registry). Tokens are
    /// base64url: one may begin with '-'.
    #[arg(
        long,
        env = "RE6ST_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub token: Option<String>,
    /// SHA-256 fingerprint of the network CA, checked when joining.
    #[arg(long)]
    #[serde(deserialize_with = "parsed")]
    pub ca_fingerprint: Option<Fingerprint>,
    /// UDP address of the QUIC endpoint; `[::]:PORT` is dual-stack
    /// [default: [::]:4326].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address to announce to peers (repeat for several); default: the
    /// listen address if specific, else what peers see.
    #[arg(long)]
    pub advertise: Vec<SocketAddr>,
    /// Create the TUN device NAME (root or CAP_NET_ADMIN), give it the node
    /// address and MTU, and route the network into it [default: re6st0].
    #[arg(long, value_name = "NAME", conflicts_with_all = ["tun_attach", "tun_fd", "no_tun"])]
    pub tun: Option<String>,
    /// Attach to the existing TUN device NAME made by an admin with
    /// `ip tuntap add dev NAME mode tun user USER` (no privilege needed).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["tun_fd", "no_tun"])]
    pub tun_attach: Option<String>,
    /// Use the TUN file descriptor N inherited from the parent (a
    /// container runtime or privileged helper opened it).
    #[arg(long, value_name = "N", conflicts_with = "no_tun")]
    pub tun_fd: Option<i32>,
    /// No TUN device: the node routes and forwards for others and answers
    /// pings to its address, but this host cannot use the overlay.
    #[arg(long)]
    pub no_tun: bool,
    /// Overlay MTU of a created device; larger packets get ICMPv6 Packet
    /// Too Big [default: 1400]. Attached devices keep the admin's MTU.
    #[arg(long)]
    pub mtu: Option<u16>,
    /// Open the TUN device multi-queue (N > 1; an attached device must
    /// have been made with `multi_queue`). The packet loop reads one
    /// queue [default: 1].
    #[arg(long)]
    pub queues: Option<usize>,
    /// Do not ask the kernel for TUN offload (GSO/GRO batches).
    #[arg(long)]
    pub no_offload: bool,
    /// Do not install the kernel route to the network through the device
    /// (the node still says whether it is there).
    #[arg(long)]
    pub no_route: bool,
    /// Control socket path [default: DIR/control.sock].
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (loopback only),
    /// e.g. 127.0.0.1:9470.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Worker threads of the node [default: one per core].
    #[arg(long)]
    pub threads: Option<usize>,
    /// QUIC keep-alive interval: a tunnel that received nothing for this
    /// long sends a PING, so a live tunnel is always heard [default: 200ms].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "duration")]
    pub keep_alive: Option<Duration>,
    /// A tunnel that hears nothing for this long (plus two round trips) is
    /// suspected: its routes move to other tunnels at once, the connection
    /// is kept, and the routes come back as soon as it is heard again
    /// [default: 600ms, or 3 keep-alives when --keep-alive is given].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "duration")]
    pub suspect_after: Option<Duration>,
    /// A tunnel that hears nothing for this long is dead: its connection is
    /// closed and the tunnel replaced [default: 10s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Option<Duration>,
    /// Bytes of datagrams a tunnel queues when QUIC's congestion control
    /// holds them back; beyond it the oldest are dropped, which is what
    /// tells the TCP inside to slow down. A large queue adds its whole
    /// length to the RTT of every packet during a bulk transfer
    /// [default: 2 MiB].
    #[arg(long, value_name = "BYTES")]
    pub datagram_queue: Option<usize>,
    /// Tunnels' transport: `quic`, `tcp` (always), or `auto` (QUIC first,
    /// TCP when QUIC to a peer gets no answer) [default: auto].
    #[arg(long, value_name = "quic|tcp|auto")]
    #[serde(deserialize_with = "parsed")]
    pub transport: Option<crate::transport::tcp::choice::Mode>,
    /// TCP port of the tunnels over TCP [default: the QUIC port's number].
    #[arg(long, value_name = "PORT")]
    pub tcp_port: Option<u16>,
    /// Neither listen on TCP nor dial over it: QUIC only.
    #[arg(long, conflicts_with_all = ["tcp_port", "quic_retry"])]
    pub no_tcp: bool,
    /// With `--transport auto`: how often a tunnel that fell back to TCP
    /// checks whether QUIC gets through again (and moves back), and how
    /// long dials go straight to TCP once QUIC looks blocked [default: 5m].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "duration")]
    pub quic_retry: Option<Duration>,
    /// A private network that every node of the overlay can reach (a
    /// company's 10.0.0.0/8, a lab's fd00:1::/64): local addresses in it
    /// are announced like public ones (repeat for several). Private
    /// addresses are not announced otherwise.
    #[arg(long, value_name = "NET")]
    pub routable: Vec<ipnet::IpNet>,
    /// Do not ask a UPnP router to forward the QUIC port (by default the
    /// node maps it when a UPnP gateway answers, and announces the
    /// router's external address).
    #[arg(long)]
    pub no_upnp: bool,
    /// Find nodes on the link of interface IFACE (repeat), or on every
    /// interface with `all`, by signed multicast beacons, and connect to
    /// them directly; such LAN links do not count against k. Off by
    /// default.
    #[arg(long, value_name = "IFACE")]
    pub lan: Vec<String>,
    /// Act as a gateway: announce a route to PREFIX into the overlay and
    /// forward what arrives for it to this host, whose kernel routes it
    /// on (repeat for several; without a value: the default route ::/0).
    /// The host needs IPv6 forwarding and a way back (see the README).
    #[arg(long, value_name = "PREFIX", num_args = 0..=1, default_missing_value = "::/0")]
    pub gateway: Vec<ipnet::Ipv6Net>,
    /// Metric added to the gateway routes (a backup gateway announces a
    /// higher one) [default: 0].
    #[arg(long, value_name = "N")]
    pub gateway_metric: Option<u16>,
    /// Replace tunnels with this policy instead of the network's
    /// (`re6st registry run --tunnel-replacement`): `least-used` or
    /// `least-used-best-of-N`. For experiments; normally every node follows
    /// the network.
    #[arg(long, value_name = "POLICY")]
    #[serde(deserialize_with = "parsed")]
    pub tunnel_replacement: Option<crate::tunnels::policy::Replacement>,
}

fn parsed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Where the node's TUN device comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunChoice {
    /// Create it.
    Create(String),
    /// Attach to an existing one.
    Attach(String),
    /// Adopt an inherited descriptor.
    Fd(i32),
    /// No device.
    None,
}

impl NodeOptions {
    /// The file's options under the flags given.
    pub fn merge(self, file: NodeOptions) -> NodeOptions {
        // A TUN choice on the command line replaces the file's.
        let flag_tun = self.tun.is_some() || self.tun_attach.is_some() || self.tun_fd.is_some();
        let (tun, tun_attach, tun_fd, no_tun) = if flag_tun || self.no_tun {
            (self.tun, self.tun_attach, self.tun_fd, self.no_tun)
        } else {
            (file.tun, file.tun_attach, file.tun_fd, file.no_tun)
        };
        NodeOptions {
            registry: self.registry.or(file.registry),
            tunnel_replacement: self.tunnel_replacement.or(file.tunnel_replacement),
            token: self.token.or(file.token),
            ca_fingerprint: self.ca_fingerprint.or(file.ca_fingerprint),
            listen: self.listen.or(file.listen),
            advertise: if self.advertise.is_empty() {
                file.advertise
            } else {
                self.advertise
            },
            tun,
            tun_attach,
            tun_fd,
            no_tun,
            mtu: self.mtu.or(file.mtu),
            queues: self.queues.or(file.queues),
            no_offload: self.no_offload || file.no_offload,
            no_route: self.no_route || file.no_route,
            control: self.control.or(file.control),
            metrics: self.metrics.or(file.metrics),
            threads: self.threads.or(file.threads),
            keep_alive: self.keep_alive.or(file.keep_alive),
            suspect_after: self.suspect_after.or(file.suspect_after),
            idle_timeout: self.idle_timeout.or(file.idle_timeout),
            datagram_queue: self.datagram_queue.or(file.datagram_queue),
            transport: self.transport.or(file.transport),
            tcp_port: self.tcp_port.or(file.tcp_port),
            no_tcp: self.no_tcp || file.no_tcp,
            quic_retry: self.quic_retry.or(file.quic_retry),
            routable: if self.routable.is_empty() {
                file.routable
            } else {
                self.routable
            },
            no_upnp: self.no_upnp || file.no_upnp,
            lan: if self.lan.is_empty() {
                file.lan
            } else {
                self.lan
            },
            gateway: if self.gateway.is_empty() {
                file.gateway
            } else {
                self.gateway
            },
            gateway_metric: self.gateway_metric.or(file.gateway_metric),
        }
    }

    /// Reads a configuration file.
    pub fn from_file(path: &Path) -> anyhow::Result<NodeOptions> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in {}", path.display()))
    }

    /// The TUN device choice; an error if several were made (the file and
    /// the flags are merged first).
    pub fn tun_choice(&self) -> anyhow::Result<TunChoice> {
        let given = [
            self.tun.is_some(),
            self.tun_attach.is_some(),
            self.tun_fd.is_some(),
            self.no_tun,
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            bail!("choose one of tun, tun-attach, tun-fd and no-tun");
        }
        Ok(if let Some(n) = &self.tun {
            TunChoice::Create(n.clone())
        } else if let Some(n) = &self.tun_attach {
            TunChoice::Attach(n.clone())
        } else if let Some(fd) = self.tun_fd {
            TunChoice::Fd(fd)
        } else if self.no_tun {
            TunChoice::None
        } else {
            TunChoice::Create(DEFAULT_TUN.into())
        })
    }

    /// The listen address.
    pub fn listen(&self) -> SocketAddr {
        self.listen
            .unwrap_or(SocketAddr::from(([0u16; 8], DEFAULT_PORT)))
    }

    /// Checks values the node would otherwise reject late.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(r) = self.tunnel_replacement {
            r.for_nodes().map_err(anyhow::Error::msg)?;
        }
        if let Some(m) = self.mtu
            && !(1280..=65535).contains(&m)
        {
            bail!("mtu {m}: IPv6 needs at least 1280");
        }
        if self.queues == Some(0) || self.queues.is_some_and(|q| q > 64) {
            bail!("queues must be 1 to 64");
        }
        if self.threads == Some(0) || self.threads.is_some_and(|t| t > 256) {
            bail!("threads must be 1 to 256");
        }
        if let Some(fd) = self.tun_fd
            && fd < 3
        {
            bail!("tun-fd {fd}: descriptors 0-2 are stdin, stdout and stderr");
        }
        let t = self.transport();
        let (k, s, i) = (t.keep_alive, t.suspect_after, t.idle_timeout);
        if k >= i {
            bail!("keep-alive ({k:?}) must be shorter than idle-timeout ({i:?})");
        }
        if s <= k {
            bail!("suspect-after ({s:?}) must be longer than keep-alive ({k:?})");
        }
        if self
            .datagram_queue
            .is_some_and(|q| !(4096..=(64 << 20)).contains(&q))
        {
            bail!("datagram-queue must be 4096 bytes to 64 MiB");
        }
        Ok(())
    }

    /// The TCP tunnels' settings.
    pub fn tcp(&self) -> crate::node::TcpConfig {
        crate::node::TcpConfig {
            enabled: !self.no_tcp,
            port: self.tcp_port,
            mode: self.transport.unwrap_or_default(),
            prefer_tcp: self
                .quic_retry
                .unwrap_or(crate::node::packet_loop::PREFER_TCP),
        }
    }

    /// The transport settings: the liveness timers given, defaults for the
    /// rest (a suspect time not given is 3 keep-alives when the keep-alive
    /// is).
    pub fn transport(&self) -> TransportConfig {
        let d = TransportConfig::default();
        let keep_alive = self.keep_alive.unwrap_or(d.keep_alive);
        TransportConfig {
            keep_alive,
            suspect_after: self.suspect_after.unwrap_or(match self.keep_alive {
                Some(k) => TransportConfig::suspect_after_for(k),
                None => d.suspect_after,
            }),
            idle_timeout: self.idle_timeout.unwrap_or(d.idle_timeout),
            datagram_send_buffer: self.datagram_queue.unwrap_or(d.datagram_send_buffer),
            ..d
        }
    }
}

/// Entry point of the `node_config` fuzz target and of the test that
/// replays its corpus: `data` as a `node.toml`, read as the node reads it
/// at start and on SIGHUP. Whatever the file says, reading, merging and
/// checking it must not panic, and options that pass [`NodeOptions::validate`]
/// must be usable: every liveness timer (and a few multiples of it, as the
/// node's deadlines add them) fits on a clock.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = toml::from_str::<NodeOptions>(text) else {
        return;
    };
    // No flag: the file is what is in force. Flags that repeat the file
    // change nothing either.
    let opts = NodeOptions::default().merge(file.clone());
    assert_eq!(
        format!("{opts:?}"),
        format!("{file:?}"),
        "merge under no flags"
    );
    let again = file.clone().merge(file);
    assert_eq!(
        format!("{again:?}"),
        format!("{opts:?}"),
        "merge with itself"
    );
    let _ = opts.tun_choice();
    let _ = opts.listen();
    if opts.validate().is_ok() {
        let t = opts.transport();
        let now = std::time::Instant::now();
        for d in [t.keep_alive, t.suspect_after, t.idle_timeout] {
            let far = d.checked_mul(4).and_then(|d4| now.checked_add(d4));
            assert!(
                far.is_some(),
                "a validated timer does not fit on a clock: {d:?}"
            );
        }
    }
}

/// The edge settings of `re6st node` from its options: UPnP on unless
/// `--no-upnp`, LAN discovery on the `--lan` interfaces, `--gateway`
/// prefixes, `--routable` networks.
pub(crate) fn edges_config(opts: &NodeOptions) -> EdgesConfig {
    EdgesConfig {
        routable: opts.routable.clone(),
        upnp: (!opts.no_upnp).then(crate::upnp::UpnpConfig::default),
        lan: crate::lan::LanConfig {
            interfaces: crate::lan::LanInterfaces::from_args(&opts.lan),
            ..crate::lan::LanConfig::default()
        },
        gateway: if opts.gateway.is_empty() {
            crate::gateway::GatewayConfig::default()
        } else {
            crate::gateway::GatewayConfig::new(&opts.gateway, opts.gateway_metric.unwrap_or(0))
        },
        ..EdgesConfig::default()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use clap::Parser;
    use ipnet::Ipv6Net;

    use super::*;
    use crate::lan::LanInterfaces;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: NodeArgs,
    }

    /// The options of `re6st node` given these flags (the edge tests use
    /// it too).
    pub(in crate::node) fn flags(a: &[&str]) -> NodeOptions {
        let mut argv = vec!["re6st-node"];
        argv.extend_from_slice(a);
        Wrap::try_parse_from(argv).unwrap().args.options
    }

    #[test]
    fn a_token_may_begin_with_a_hyphen() {
        let o = flags(&["--registry", "https://r", "--token", "-Ab_9"]);
        assert_eq!(o.token.as_deref(), Some("-Ab_9"));
    }

    #[test]
    fn every_file_key_is_a_flag_and_flags_win() {
        let file: NodeOptions = toml::from_str(
            r#"
            registry = "https://r:8443"
            listen = "[::]:5000"
            advertise = ["[fd00::1]:5000"]
            tun-attach = "ovl0"
            mtu = 1280
            queues = 2
            no-offload = true
            metrics = "127.0.0.1:9470"
            keep-alive = "500ms"
            idle-timeout = "2s"
            ca-fingerprint = "00000000000000000000000000000000000000000000000000000000000000ff"
            tunnel-replacement = "least-used-best-of-3"
            "#,
        )
        .unwrap();
        let cli = flags(&["--listen", "[::]:6000", "--tun", "re6st9", "--mtu", "1400"]);
        let m = cli.merge(file);
        assert_eq!(m.listen(), "[::]:6000".parse().unwrap());
        assert_eq!(m.tun_choice().unwrap(), TunChoice::Create("re6st9".into()));
        assert_eq!(m.mtu, Some(1400));
        assert_eq!(m.queues, Some(2));
        assert!(m.no_offload);
        assert_eq!(m.registry.as_deref(), Some("https://r:8443"));
        assert_eq!(m.keep_alive, Some(Duration::from_millis(500)));
        assert_eq!(m.advertise, vec!["[fd00::1]:5000".parse().unwrap()]);
        assert!(m.ca_fingerprint.is_some());
        assert_eq!(
            m.tunnel_replacement,
            Some(crate::tunnels::policy::Replacement::LeastUsedBestOf { probes: 3 })
        );
        m.validate().unwrap();
    }

    #[test]
    fn liveness_timers_default_to_sub_second_suspicion() {
        let t = flags(&[]).merge(NodeOptions::default()).transport();
        assert_eq!(t.keep_alive, Duration::from_millis(200));
        assert_eq!(t.suspect_after, Duration::from_millis(600));
        assert_eq!(t.idle_timeout, Duration::from_secs(10));
        // A keep-alive alone brings its suspect time along.
        let t = flags(&["--keep-alive", "1s"]).transport();
        assert_eq!(t.suspect_after, Duration::from_secs(3));
        let o = flags(&["--keep-alive", "1s", "--suspect-after", "2500ms"]);
        assert_eq!(o.transport().suspect_after, Duration::from_millis(2500));
        o.validate().unwrap();
    }

    #[test]
    fn defaults_and_bad_values() {
        let d = flags(&[]).merge(NodeOptions::default());
        assert_eq!(
            d.tun_choice().unwrap(),
            TunChoice::Create(DEFAULT_TUN.into())
        );
        assert_eq!(d.listen().port(), DEFAULT_PORT);
        // Conflicting flags are refused by clap, conflicting file keys here.
        let mut argv = vec!["x", "--tun", "a", "--no-tun"];
        assert!(Wrap::try_parse_from(&argv).is_err());
        argv = vec!["x", "--tun-attach", "a", "--tun-fd", "4"];
        assert!(Wrap::try_parse_from(&argv).is_err());
        let both: NodeOptions = toml::from_str("tun = \"a\"\nno-tun = true").unwrap();
        assert!(both.tun_choice().is_err());
        // A flag choice replaces the file's.
        let m = flags(&["--no-tun"]).merge(both);
        assert_eq!(m.tun_choice().unwrap(), TunChoice::None);
        assert!(
            toml::from_str::<NodeOptions>("tun-name = \"x\"").is_err(),
            "unknown key"
        );
        assert!(toml::from_str::<NodeOptions>("idle-timeout = \"soon\"").is_err());
        for bad in ["least-used-best-of-1", "best-of-5", "least-used-best-of-17"] {
            let argv = ["x", "--tunnel-replacement", bad];
            assert!(Wrap::try_parse_from(argv).is_err(), "{bad}");
            let file = format!("tunnel-replacement = \"{bad}\"");
            assert!(toml::from_str::<NodeOptions>(&file).is_err(), "{bad}");
        }
        for bad in [
            "mtu = 1000",
            "queues = 0",
            "threads = 0",
            "tun-fd = 1",
            "keep-alive = \"5s\"\nidle-timeout = \"1s\"",
            "keep-alive = \"20s\"",
            "suspect-after = \"100ms\"",
            // The simulator's only (no direct RTT estimates on nodes).
            "tunnel-replacement = \"shortcut-3\"",
            "keep-alive = \"300ms\"\nsuspect-after = \"300ms\"",
        ] {
            let o: NodeOptions = toml::from_str(bad).unwrap();
            assert!(o.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn edge_options_from_flags_and_file() {
        let d = edges_config(&flags(&[]));
        assert!(d.upnp.is_some(), "UPnP is on by default");
        assert_eq!(d.lan.interfaces, LanInterfaces::Off);
        assert!(!d.gateway.is_enabled());

        let c = edges_config(&flags(&[
            "--no-upnp",
            "--lan",
            "eth0",
            "--lan",
            "wlan0",
            "--gateway",
            "--routable",
            "10.0.0.0/8",
        ]));
        assert!(c.upnp.is_none());
        assert_eq!(
            c.lan.interfaces,
            LanInterfaces::Named(vec!["eth0".into(), "wlan0".into()])
        );
        assert_eq!(c.gateway.prefixes, vec!["::/0".parse::<Ipv6Net>().unwrap()]);
        assert_eq!(c.routable, vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(
            edges_config(&flags(&["--lan", "all"])).lan.interfaces,
            LanInterfaces::All
        );

        let file: NodeOptions = toml::from_str(
            r#"
            no-upnp = true
            lan = ["all"]
            gateway = ["2001:db8::/32", "::/0"]
            gateway-metric = 5
            routable = ["fd00:1::/64"]
            "#,
        )
        .unwrap();
        let m = flags(&["--gateway", "2001:db8:1::/48"]).merge(file);
        let c = edges_config(&m);
        assert!(c.upnp.is_none());
        assert_eq!(c.lan.interfaces, LanInterfaces::All);
        assert_eq!(
            c.gateway.prefixes,
            vec!["2001:db8:1::/48".parse::<Ipv6Net>().unwrap()]
        );
        assert_eq!(c.gateway.metric, 5);
        assert_eq!(c.routable, vec!["fd00:1::/64".parse().unwrap()]);
    }
}
