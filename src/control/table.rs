//! Text views of the control API's types, for a terminal: what
//! `re6st status/peers/tunnels/routes` print without `--json`.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::api::{JoiningInfo, PeerView, ProbeInfo, ProbeRoundInfo, RouteView, Status, TunnelInfo};

/// A table whose columns are as wide as their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|s| s.to_string()).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for r in &self.rows {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                if c + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ", w = width[c]);
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// `1h02m`, `3m04s`, `12s`.
pub fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// `912 B`, `1.5 kB`, `23.4 MB`, `1.2 GB` (powers of 1000).
pub fn bytes(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn ago(unix: u64) -> String {
    let now = crate::identity::unix_secs(SystemTime::now());
    format!("{} ago", duration(now.saturating_sub(unix)))
}

/// The status rows of the edges: addresses not announced (and why), NAT,
/// UPnP, LAN neighbours, gateway prefixes.
fn edges_rows(e: &super::api::EdgesInfo) -> Vec<(&'static str, String)> {
    let mut rows = Vec::new();
    for a in e.addresses.iter().filter(|a| !a.announced) {
        rows.push((
            "not announced",
            format!(
                "{} ({}): {}",
                a.addr,
                a.source,
                a.reason.as_deref().unwrap_or("-")
            ),
        ));
    }
    if e.dial_out_only {
        rows.push((
            "reachability",
            format!(
                "dial-out only{} (see --upnp, --advertise, --routable)",
                if e.behind_nat { ", behind NAT" } else { "" }
            ),
        ));
    } else if e.behind_nat {
        rows.push(("reachability", "behind NAT".into()));
    }
    if let Some((ext, int)) = e.upnp {
        rows.push(("upnp", format!("{ext} -> {int}")));
    }
    for (p, at) in &e.lan_neighbours {
        rows.push(("lan", format!("{p} at {at}")));
    }
    // Beacon outcomes that happened, accepted first.
    let (accepted, others): (Vec<_>, Vec<_>) = e
        .lan_beacons
        .iter()
        .filter(|&(_, &n)| n > 0)
        .partition(|&(k, _)| k == "accepted");
    let seen: Vec<String> = accepted
        .into_iter()
        .chain(others)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    if !seen.is_empty() {
        rows.push(("lan beacons", seen.join(", ")));
    }
    if !e.gateway.is_empty() {
        let g: Vec<String> = e.gateway.iter().map(ToString::to_string).collect();
        rows.push(("gateway", g.join(" ")));
    }
    rows
}

/// `re6st status`.
pub fn status(s: &Status) -> String {
    let mut t = Table::default();
    let mut kv = |k: &str, v: String| t.row(vec![k.to_string(), v]);
    kv(
        "node",
        format!("{}  prefix {}  serial {}", s.address, s.prefix, s.serial),
    );
    kv(
        "network",
        format!(
            "{}  up {}  CRL #{}",
            s.network,
            duration(s.uptime_secs),
            s.crl_number
        ),
    );
    if let Some(v4) = &s.ipv4 {
        let network = v4
            .network
            .map(|n| format!("  network {n}"))
            .unwrap_or_default();
        kv(
            "ipv4",
            format!("{}  subnet {}{network}", v4.address, v4.subnet),
        );
    }
    let adv: Vec<String> = s.advertised.iter().map(ToString::to_string).collect();
    kv(
        "udp",
        format!(
            "{}  advertised {}",
            s.listen.map_or("-".into(), |l| l.to_string()),
            if adv.is_empty() {
                "(none yet)".into()
            } else {
                adv.join(" ")
            }
        ),
    );
    let h = &s.host;
    kv(
        "host",
        match &h.device {
            Some(d) => format!(
                "TUN {d} ({}, offload {}, MTU {}, {} queue{}, network route {})",
                h.mode,
                if h.offload { "on" } else { "off" },
                h.mtu,
                h.queues,
                if h.queues == 1 { "" } else { "s" },
                h.route
            ),
            None => "no TUN (userspace: transit and ping only)".into(),
        },
    );
    kv(
        "tunnels",
        format!(
            "{} up ({} outgoing, {} incoming{}), {}{} draining",
            s.tunnels_up,
            s.tunnels_outgoing,
            (s.tunnels_up + s.tunnels_suspect + s.tunnels_draining)
                .saturating_sub(s.tunnels_outgoing + s.edges.lan_links),
            if s.edges.lan_links > 0 {
                format!(", {} LAN", s.edges.lan_links)
            } else {
                String::new()
            },
            if s.tunnels_suspect > 0 {
                format!("{} suspect (silent), ", s.tunnels_suspect)
            } else {
                String::new()
            },
            s.tunnels_draining
        ),
    );
    kv(
        "routes",
        format!("{} destinations  peer DB {} entries", s.routes, s.peer_db),
    );
    let r = &s.registry;
    let next = r
        .next_round_in_secs
        .map(|n| format!(", next try in {}", duration(n)))
        .unwrap_or_default();
    kv(
        "registry",
        match (&r.url, &r.last_error, r.last_ok) {
            (None, _, _) => "none (running without a registry)".into(),
            (Some(u), Some(e), _) => {
                format!("{u}  UNREACHABLE: {e} ({} failures{next})", r.failures)
            }
            (Some(u), None, Some(ok)) => format!("{u}  ok {}", ago(ok)),
            (Some(u), None, None) => format!("{u}  not contacted yet"),
        },
    );
    if s.certificate.not_after > 0 {
        kv("certificate", certificate(&s.certificate));
    }
    let c = |g: &str, n: &str| {
        s.counters
            .get(g)
            .and_then(|m| m.get(n))
            .copied()
            .unwrap_or(0)
    };
    for (k, v) in edges_rows(&s.edges) {
        kv(k, v);
    }
    if let Some(r) = s.probe_rounds.last() {
        kv("refresh", probe_round(r));
    }
    kv(
        "packets",
        format!(
            "delivered {}  forwarded {}  dropped {}  ICMPv6 errors {}",
            c("path", "delivered"),
            c("path", "forwarded"),
            c("path", "dropped"),
            c("path", "icmp_sent")
        ),
    );
    t.to_string()
}

/// `valid until TIME (in 29d)`, and what a failing renewal means.
fn certificate(c: &super::api::CertificateInfo) -> String {
    let now = crate::identity::unix_secs(SystemTime::now());
    let until = humantime::format_rfc3339_seconds(
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(c.not_after),
    );
    let when = match c.not_after.checked_sub(now) {
        Some(left) => format!("valid until {until} (in {})", duration(left)),
        None => format!("EXPIRED at {until}"),
    };
    match c.renewal.as_str() {
        "overdue" | "critical" => format!(
            "{when}  RENEWAL {}: the registry does not answer; retried with back-off",
            c.renewal.to_uppercase()
        ),
        "expired" => format!("{when}: peers refuse this node until the registry renews it"),
        _ => when,
    }
}

/// A node waiting for its registry: `joining: registry URL unreachable
/// since TIME (N attempts, next in S)` and the last error.
pub fn joining(j: &JoiningInfo) -> String {
    let mut out = match j.unreachable_since {
        Some(t) => format!(
            "joining: registry {} unreachable since {} ({} attempt{}",
            j.registry,
            humantime::format_rfc3339_seconds(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t)
            ),
            j.attempts,
            if j.attempts == 1 { "" } else { "s" },
        ),
        None => format!(
            "joining: asking registry {} ({} attempt{}",
            j.registry,
            j.attempts,
            if j.attempts == 1 { "" } else { "s" },
        ),
    };
    match j.next_attempt_in_secs {
        Some(s) => {
            let _ = write!(out, ", next in {})", duration(s));
        }
        None => out.push_str(", one running)"),
    }
    out.push('\n');
    if let Some(e) = &j.last_error {
        let _ = writeln!(out, "  last error: {e}");
    }
    out
}

/// A best-of-n round: which peer was kept, at what RTT, against which
/// others (`--json` has the last 8).
fn probe_round(r: &ProbeRoundInfo) -> String {
    let ms = |p: &ProbeInfo| p.rtt_ms.map_or("?".into(), |m| format!("{m:.0} ms"));
    let others: Vec<String> = r.probes.iter().filter(|p| !p.kept).map(ms).collect();
    let kept = r.probes.iter().find(|p| p.kept).map_or_else(
        || "no probe came up".to_string(),
        |p| format!("kept {} at {}", p.peer, ms(p)),
    );
    let mut out = format!(
        "best of {}: {kept}, others {}",
        r.probes.len() + r.cancelled,
        if others.is_empty() {
            "none up".into()
        } else {
            others.join(", ")
        }
    );
    if r.cancelled > 0 {
        let _ = write!(out, ", {} cancelled", r.cancelled);
    }
    out
}

/// `re6st tunnels`.
pub fn tunnels(list: &[TunnelInfo]) -> String {
    if list.is_empty() {
        return "no tunnels\n".into();
    }
    let mut t = Table::new(&[
        "ID",
        "PEER",
        "ADDRESS",
        "VIA",
        "DIR",
        "STATE",
        "RTT",
        "BABEL RTT",
        "AGE",
        "DEST",
        "TX",
        "RX",
    ]);
    for x in list {
        t.row(vec![
            x.id.to_string(),
            x.peer_prefix.to_string(),
            x.peer_udp.to_string(),
            x.transport.clone(),
            if x.direction == "outgoing" {
                "out"
            } else {
                "in"
            }
            .into(),
            x.state.clone(),
            format!("{:.1} ms", x.rtt_ms),
            x.babel_rtt_ms.map_or("-".into(), |r| format!("{r:.1} ms")),
            duration(x.age_secs),
            x.destinations.to_string(),
            format!("{} pkts {}", x.tx_packets, bytes(x.tx_bytes)),
            format!("{} pkts {}", x.rx_packets, bytes(x.rx_bytes)),
        ]);
    }
    t.to_string()
}

/// `re6st routes`: selected routes, then the alternatives (marked `-`).
pub fn routes(list: &[RouteView]) -> String {
    if list.is_empty() {
        return "no routes\n".into();
    }
    let mut t = Table::new(&["", "PREFIX", "METRIC", "NEXT HOP", "VIA PEER", "TUNNEL"]);
    for r in list {
        t.row(vec![
            if r.selected { "*" } else { "-" }.into(),
            r.prefix.to_string(),
            if r.metric == u16::MAX {
                "unreachable".into()
            } else {
                r.metric.to_string()
            },
            if r.local {
                "local".into()
            } else {
                r.next_hop.map_or("-".into(), |a| a.to_string())
            },
            r.via.map_or("-".into(), |p| p.to_string()),
            r.tunnel.map_or("-".into(), |x| x.to_string()),
        ]);
    }
    t.to_string()
}

/// `re6st peers`.
pub fn peers(list: &[PeerView]) -> String {
    if list.is_empty() {
        return "the peer DB is empty\n".into();
    }
    let mut t = Table::new(&["PREFIX", "SERIAL", "ANNOUNCED", "ADDRESSES"]);
    for p in list {
        let a: Vec<String> = p.addresses.iter().map(ToString::to_string).collect();
        t.row(vec![
            p.prefix.to_string(),
            p.serial.to_string(),
            ago(p.timestamp),
            a.join(" "),
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tunnels_line_counts_suspect_ones_apart() {
        let mut s = super::super::metrics::tests::status();
        let text = status(&s);
        // 2 up + 1 suspect + 1 draining, 2 of them outgoing.
        assert!(
            text.contains("2 up (2 outgoing, 2 incoming), 1 suspect (silent), 1 draining"),
            "{text}"
        );
        s.tunnels_suspect = 0;
        assert!(status(&s).contains("2 up (2 outgoing, 1 incoming), 1 draining"));
    }

    #[test]
    fn a_probe_round_names_the_kept_peer_and_the_others() {
        let p = |peer: &str, rtt, kept| ProbeInfo {
            peer: peer.parse().unwrap(),
            rtt_ms: Some(rtt),
            kept,
        };
        let r = ProbeRoundInfo {
            probes: vec![
                p("fd00:1:5::/64", 352.4, false),
                p("fd00:1:3::/64", 187.6, true),
            ],
            cancelled: 1,
        };
        assert_eq!(
            probe_round(&r),
            "best of 3: kept fd00:1:3::/64 at 188 ms, others 352 ms, 1 cancelled"
        );
        let none = ProbeRoundInfo {
            probes: vec![],
            cancelled: 2,
        };
        assert_eq!(
            probe_round(&none),
            "best of 2: no probe came up, others none up, 2 cancelled"
        );
    }

    #[test]
    fn edges_rows_say_why_and_how() {
        use super::super::api::{AddressInfo, EdgesInfo};
        let e = EdgesInfo {
            addresses: vec![
                AddressInfo {
                    addr: "198.51.100.7:40000".parse().unwrap(),
                    source: "upnp".into(),
                    announced: true,
                    reason: None,
                },
                AddressInfo {
                    addr: "192.168.1.5:4326".parse().unwrap(),
                    source: "local".into(),
                    announced: false,
                    reason: Some("private address".into()),
                },
            ],
            behind_nat: true,
            dial_out_only: false,
            upnp: Some((
                "198.51.100.7:40000".parse().unwrap(),
                "192.168.1.5:4326".parse().unwrap(),
            )),
            lan_neighbours: vec![(
                "fd00:1:0:9::/64".parse().unwrap(),
                "[fe80::9%2]:4326".into(),
            )],
            lan_links: 1,
            gateway: vec!["::/0".parse().unwrap()],
            lan_beacons: [("accepted", 12), ("own", 0), ("bad_signature", 1)]
                .map(|(k, n)| (k.to_string(), n))
                .into(),
        };
        let rows: Vec<String> = edges_rows(&e)
            .into_iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        assert_eq!(
            rows,
            vec![
                "not announced: 192.168.1.5:4326 (local): private address",
                "reachability: behind NAT",
                "upnp: 198.51.100.7:40000 -> 192.168.1.5:4326",
                "lan: fd00:1:0:9::/64 at [fe80::9%2]:4326",
                "lan beacons: 12 accepted, 1 bad_signature",
                "gateway: ::/0",
            ]
        );
        let nat = EdgesInfo {
            behind_nat: true,
            dial_out_only: true,
            ..EdgesInfo::default()
        };
        assert!(
            edges_rows(&nat)[0]
                .1
                .starts_with("dial-out only, behind NAT")
        );
        assert!(edges_rows(&EdgesInfo::default()).is_empty());
    }

    #[test]
    fn the_certificate_row_says_when_and_how_urgent() {
        let now = crate::identity::unix_secs(SystemTime::now());
        let c = |not_after, renewal: &str| super::super::api::CertificateInfo {
            not_after,
            renewal: renewal.into(),
        };
        let ok = certificate(&c(now + 3 * 86_400, "ok"));
        assert!(
            ok.starts_with("valid until ") && (ok.contains("(in 2d") || ok.contains("(in 3d")),
            "{ok}"
        );
        let due = certificate(&c(now + 3600, "overdue"));
        assert!(
            due.contains("RENEWAL OVERDUE: the registry does not answer"),
            "{due}"
        );
        let gone = certificate(&c(now - 10, "expired"));
        assert!(
            gone.starts_with("EXPIRED at ") && gone.contains("peers refuse"),
            "{gone}"
        );
    }

    #[test]
    fn joining_says_since_when_and_what_next() {
        let j = JoiningInfo {
            state: super::super::api::NodeState::Joining,
            registry: "https://r:8443".into(),
            since: 1_700_000_000,
            unreachable_since: Some(1_700_000_000),
            attempts: 3,
            last_error: Some("connection refused".into()),
            next_attempt_in_secs: Some(4),
        };
        assert_eq!(
            joining(&j),
            "joining: registry https://r:8443 unreachable since 2023-11-14T22:13:20Z (3 attempts, next in 4s)\n  last error: connection refused\n"
        );
        let first = JoiningInfo {
            unreachable_since: None,
            attempts: 1,
            last_error: None,
            next_attempt_in_secs: None,
            ..j
        };
        assert_eq!(
            joining(&first),
            "joining: asking registry https://r:8443 (1 attempt, one running)\n"
        );
    }

    #[test]
    fn columns_align_to_the_widest_cell() {
        let mut t = Table::new(&["A", "LONG HEADER", "C"]);
        t.row(vec!["xyz".into(), "1".into(), "end".into()]);
        assert_eq!(
            t.to_string(),
            "A    LONG HEADER  C\nxyz  1            end\n"
        );
    }

    #[test]
    fn human_units() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(125), "2m05s");
        assert_eq!(duration(3700), "1h01m");
        assert_eq!(duration(90_000), "1d01h");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1500), "1.5 kB");
        assert_eq!(bytes(2_340_000_000), "2.3 GB");
    }

    #[test]
    fn routes_mark_selected_and_local() {
        let r = |selected: bool, local: bool, metric: u16| RouteView {
            prefix: "fd00:1::/64".parse().unwrap(),
            metric,
            next_hop: (!local).then(|| "fd00:2::1".parse().unwrap()),
            via: (!local).then(|| "fd00:2::/64".parse().unwrap()),
            tunnel: (!local).then_some(3),
            selected,
            local,
            router_id: "00".into(),
            seqno: 1,
        };
        let text = routes(&[r(true, true, 0), r(false, false, u16::MAX)]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("*  fd00:1::/64  0 "), "{text}");
        assert!(lines[1].contains("local"));
        assert!(
            lines[2].starts_with("-  fd00:1::/64  unreachable  fd00:2::1"),
            "{text}"
        );
    }
}
