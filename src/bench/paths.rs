//! The packet-path lab of `re6st bench`: three namespaces in a line,
//! `a`–`b` on `fd00:be:ab::/64` and `b`–`c` on `fd00:be:bc::/64` (veths,
//! MTU 1500, no forwarding in `b`'s kernel), a registry in `b`, and one
//! `re6st node` with its TUN device in each. `a` and `c` cannot open a
//! tunnel to each other, so `a`'s traffic to `c` crosses node `b`: one lab
//! gives the raw veth (`a` to `b`'s underlay address), the two-node
//! overlay (`a` to `b`'s overlay address) and the three-node chain (`a`
//! to `c`'s overlay address). When `nft` is there, a fourth namespace `d`
//! hangs off `b` (`fd00:be:bd::/64`) with all its UDP dropped and its node
//! on `--transport tcp`: `d` to `b`'s overlay address is the two-node
//! overlay over a TCP tunnel, next to the QUIC one. The registry gives
//! every node an IPv4 subnet too (`10.98.0.0/16`): the two-node and chain
//! rows again over IPv4 inside the overlay.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::{IpNet, Ipv6Net};
use re6st::control::api::{Request, Response, SOCKET_FILE};
use re6st::netns::Lab;

/// One way through the lab that the bench measures.
#[derive(Debug, Clone)]
pub struct PathRow {
    /// Short name (`raw`, `two-node`, `chain`, `tcp`, `two-node-v4`,
    /// `chain-v4`), for `--only` and JSON.
    pub key: &'static str,
    /// What the table calls it.
    pub title: String,
    /// Namespace the traffic starts in.
    pub from: &'static str,
    /// Where it goes.
    pub dst: IpAddr,
    /// Processes that carry it (their CPU is reported).
    pub pids: Vec<u32>,
}

/// A running node of the lab.
#[derive(Debug, Clone)]
struct LabNode {
    pid: u32,
    socket: PathBuf,
    address: Ipv6Addr,
    prefix: Ipv6Net,
    ipv4: Option<Ipv4Addr>,
}

/// The running lab (everything goes when it is dropped).
pub struct PathLab {
    pub lab: Lab,
    rows: Vec<PathRow>,
    /// The nodes' control sockets, by namespace.
    sockets: Vec<(&'static str, PathBuf)>,
}

const AB_A: &str = "fd00:be:ab::1";
const AB_B: &str = "fd00:be:ab::2";
const BC_B: &str = "fd00:be:bc::2";
const BC_C: &str = "fd00:be:bc::3";
const BD_B: &str = "fd00:be:bd::2";
const BD_D: &str = "fd00:be:bd::4";

/// Whether `nft` runs here (the TCP row needs it to drop `d`'s UDP).
fn have_nft() -> bool {
    std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl PathLab {
    /// Builds the lab and waits until `a` routes to `c` through `b`.
    pub async fn start(node_args: &[String], keep: bool) -> anyhow::Result<PathLab> {
        let exe = exe()?;
        let mut lab = Lab::new("bench")?;
        if keep {
            lab.keep_dir();
        }
        for ns in ["a", "b", "c"] {
            lab.add_ns(ns)?;
        }
        let tcp = have_nft();
        if tcp {
            lab.add_ns("d")?;
            lab.veth(
                ("b", "bd", Some(&format!("{BD_B}/64"))),
                ("d", "db", Some(&format!("{BD_D}/64"))),
            )?;
            for rule in [
                "add table inet noudp",
                "add chain inet noudp in { type filter hook input priority 0 ; }",
                "add chain inet noudp out { type filter hook output priority 0 ; }",
                "add rule inet noudp in meta l4proto udp drop",
                "add rule inet noudp out meta l4proto udp drop",
            ] {
                let mut cmd = vec!["nft"];
                cmd.extend(rule.split(' '));
                lab.exec("d", &cmd)?;
            }
        }
        lab.veth(
            ("a", "ab", Some(&format!("{AB_A}/64"))),
            ("b", "ba", Some(&format!("{AB_B}/64"))),
        )?;
        lab.veth(
            ("b", "bc", Some(&format!("{BC_B}/64"))),
            ("c", "cb", Some(&format!("{BC_C}/64"))),
        )?;
        let reg_dir = lab.dir().join("registry");
        let reg: Vec<String> = [
            "registry",
            "run",
            "--dir",
            reg_dir.to_str().context("path")?,
            "--listen",
            "[::]:8443",
            "--hostname",
            AB_B,
            "--hostname",
            BC_B,
            "--hostname",
            BD_B,
            "--enrolment",
            "open",
            "--tunnels",
            "2",
            // No tunnel replacement while measuring.
            "--tunnel-refresh",
            "1h",
            "--ipv4",
            "10.98.0.0/16",
            "--ipv4-prefix-len",
            "24",
        ]
        .map(String::from)
        .to_vec();
        let fp = lab.start_registry("b", &exe, &reg)?.fingerprint;
        let mut nodes = Vec::new();
        let mut lab_nodes = vec![
            ("b", AB_B, vec![AB_B, BC_B]),
            ("a", AB_B, vec![AB_A]),
            ("c", BC_B, vec![BC_C]),
        ];
        if tcp {
            lab_nodes[0].2.push(BD_B);
            lab_nodes.push(("d", BD_B, vec![BD_D]));
        }
        for (ns, registry, advertise) in lab_nodes {
            let dir = lab.dir().join(format!("node-{ns}"));
            let mut args: Vec<String> = vec![
                "node".into(),
                "--dir".into(),
                dir.to_str().context("path")?.into(),
                "--registry".into(),
                format!("https://[{registry}]:8443"),
                "--ca-fingerprint".into(),
                fp.clone(),
                "--listen".into(),
                "[::]:4326".into(),
            ];
            for a in advertise {
                args.extend(["--advertise".into(), format!("[{a}]:4326")]);
            }
            args.extend(node_args.iter().cloned());
            if ns == "d" {
                args.extend(["--transport".into(), "tcp".into()]);
            }
            let (program, mut full) = crate::bench::measure::wrapped(&exe);
            full.extend(args);
            let p = lab.spawn(Some(ns), &format!("node-{ns}"), &program, &full, |_| {})?;
            p.wait_for_line("control socket", Duration::from_secs(60))?;
            let pid = p.pid();
            let socket = dir.join(SOCKET_FILE);
            let status = match re6st::control::query(&socket, Request::Status).await? {
                Response::Status(s) => s,
                other => bail!("node {ns} answered {other:?}"),
            };
            nodes.push(LabNode {
                pid,
                socket,
                address: status.address,
                prefix: status.prefix,
                ipv4: status.ipv4.map(|v| v.address),
            });
        }
        let (b, a, c) = (&nodes[0], &nodes[1], &nodes[2]);
        for ns in ["b", "c"] {
            lab.spawn(
                Some(ns),
                &format!("iperf3-{ns}"),
                "iperf3",
                &["-s".into(), "-B".into(), "::".into()],
                |_| {},
            )
            .context("starting iperf3 (install it: apt-get install iperf3)")?;
        }
        wait_routes(a, c, b.prefix).await?;
        wait_routes(c, a, b.prefix).await?;
        let mut rows = vec![
            PathRow {
                key: "raw",
                title: "raw veth (MTU 1500)".into(),
                from: "a",
                dst: AB_B.parse::<Ipv6Addr>()?.into(),
                pids: Vec::new(),
            },
            PathRow {
                key: "two-node",
                title: "re6st, two nodes".into(),
                from: "a",
                dst: b.address.into(),
                pids: vec![a.pid, b.pid],
            },
            PathRow {
                key: "chain",
                title: "re6st, three-node chain".into(),
                from: "a",
                dst: c.address.into(),
                pids: vec![a.pid, b.pid, c.pid],
            },
        ];
        let (Some(b4), Some(c4)) = (b.ipv4, c.ipv4) else {
            bail!("the nodes have no IPv4 address (the registry gave none)");
        };
        rows.push(PathRow {
            key: "two-node-v4",
            title: "re6st, two nodes, IPv4 inside".into(),
            from: "a",
            dst: b4.into(),
            pids: vec![a.pid, b.pid],
        });
        rows.push(PathRow {
            key: "chain-v4",
            title: "re6st, three-node chain, IPv4 inside".into(),
            from: "a",
            dst: c4.into(),
            pids: vec![a.pid, b.pid, c.pid],
        });
        if let Some(d) = nodes.get(3) {
            rows.push(PathRow {
                key: "tcp",
                title: "re6st, two nodes over TCP".into(),
                from: "d",
                dst: b.address.into(),
                pids: vec![d.pid, b.pid],
            });
        }
        // The first packets find the routes: ping until they are answered.
        for row in &rows[1..] {
            let start = Instant::now();
            while crate::bench::measure::ping(
                &lab,
                row.from,
                row.dst,
                3,
                Duration::from_millis(100),
            )
            .await?
            .len()
                < 3
            {
                if start.elapsed() > Duration::from_secs(30) {
                    bail!("{}: pings to {} are not answered", row.title, row.dst);
                }
            }
        }
        let sockets = vec![
            ("b", b.socket.clone()),
            ("a", a.socket.clone()),
            ("c", c.socket.clone()),
        ];
        Ok(PathLab { lab, rows, sockets })
    }

    /// Each node's packet-path and host counters and its tunnels (QUIC
    /// window, losses, datagrams), as JSON: what `--node-status` prints.
    pub async fn node_status(&self) -> anyhow::Result<serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (ns, socket) in &self.sockets {
            let counters = match re6st::control::query(socket, Request::Status).await? {
                Response::Status(s) => s.counters,
                other => bail!("node {ns} answered {other:?}"),
            };
            let tunnels = match re6st::control::query(socket, Request::Tunnels).await? {
                Response::Tunnels(t) => t,
                other => bail!("node {ns} answered {other:?}"),
            };
            let pick = |g: &str| counters.get(g).cloned().unwrap_or_default();
            out.insert(
                (*ns).into(),
                serde_json::json!({
                    "path": pick("path"),
                    "host": pick("host"),
                    "tunnels": tunnels,
                }),
            );
        }
        Ok(serde_json::Value::Object(out))
    }

    /// The ways to measure.
    pub fn rows(&self) -> &[PathRow] {
        &self.rows
    }
}

/// Another `re6st` binary for the registry and the nodes (`--node-bin`).
static NODE_BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Runs the labs' registry and nodes from `bin` instead of this binary.
pub fn set_node_bin(bin: PathBuf) {
    let _ = NODE_BIN.set(bin);
}

/// The binary to run the registry and the nodes with: `--node-bin`, or
/// this one.
pub fn exe() -> anyhow::Result<String> {
    let exe = match NODE_BIN.get() {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("locating the re6st binary")?,
    };
    Ok(exe.to_str().context("binary path")?.to_string())
}

/// Waits until `from` has a selected route to `to`'s prefix through
/// `via`.
async fn wait_routes(from: &LabNode, to: &LabNode, via: Ipv6Net) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(Response::Routes(routes)) =
            re6st::control::query(&from.socket, Request::Routes).await
            && routes.iter().any(|r| {
                r.selected
                    && r.metric != u16::MAX
                    && r.prefix == IpNet::V6(to.prefix)
                    && r.via == Some(via)
            })
        {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(90) {
            bail!(
                "no route from {} to {} through {via} after 90 s",
                from.address,
                to.address
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
