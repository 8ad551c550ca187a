//! Prometheus text exposition (format 0.0.4) of the control API's views,
//! served on an optional loopback address (`--metrics 127.0.0.1:9470`).
//!
//! Everything comes from [`Status`] and [`TunnelInfo`], so the metrics and
//! `re6st status --json` never disagree. Counter groups become
//! `re6st_<group>_<counter>`; per-tunnel series carry `peer` (the peer's
//! prefix) and `id` labels.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::api::{Status, TunnelInfo};
use super::server::Source;

/// The exposition of `status` and `tunnels`.
pub fn render(status: &Status, tunnels: &[TunnelInfo]) -> String {
    let mut m = Metrics::default();
    m.gauge(
        "re6st_info",
        "The node's identity (value always 1).",
        &[
            ("address", status.address.to_string()),
            ("prefix", status.prefix.to_string()),
            ("network", status.network.to_string()),
            ("host", status.host.mode.clone()),
        ],
        1.0,
    );
    m.gauge(
        "re6st_uptime_seconds",
        "Seconds since the node started.",
        &[],
        status.uptime_secs as f64,
    );
    m.gauge(
        "re6st_crl_number",
        "Number of the CRL in force.",
        &[],
        status.crl_number as f64,
    );
    for (state, n) in [
        ("up", status.tunnels_up),
        ("draining", status.tunnels_draining),
        ("suspect", status.tunnels_suspect),
    ] {
        m.gauge(
            "re6st_tunnels",
            "Tunnels by state.",
            &[("state", state.into())],
            n as f64,
        );
    }
    m.gauge(
        "re6st_tunnels_outgoing",
        "Tunnels this node opened (its k).",
        &[],
        status.tunnels_outgoing as f64,
    );
    m.gauge(
        "re6st_routes",
        "Selected routes.",
        &[],
        status.routes as f64,
    );
    m.gauge(
        "re6st_peer_db_entries",
        "Entries of the peer DB.",
        &[],
        status.peer_db as f64,
    );
    m.gauge(
        "re6st_registry_reachable",
        "1 if the last exchange with the registry succeeded.",
        &[],
        if status.registry.url.is_some() && status.registry.last_error.is_none() {
            1.0
        } else {
            0.0
        },
    );
    m.counter(
        "re6st_registry_failures_total",
        "Failed exchanges with the registry.",
        &[],
        status.registry.failures as f64,
    );
    m.gauge(
        "re6st_certificate_expiry_timestamp_seconds",
        "End of validity of the node's certificate (UNIX time): alert on it \
         minus time() while the registry is unreachable.",
        &[],
        status.certificate.not_after as f64,
    );
    let e = &status.edges;
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    for (name, help, v) in [
        (
            "re6st_addresses_announced",
            "UDP addresses announced to peers (0: dial-out only).",
            e.addresses.iter().filter(|a| a.announced).count() as f64,
        ),
        (
            "re6st_behind_nat",
            "1 if peers see the node through a NAT.",
            flag(e.behind_nat),
        ),
        (
            "re6st_upnp_mapped",
            "1 if a UPnP port mapping is in force.",
            flag(e.upnp.is_some()),
        ),
        (
            "re6st_lan_neighbours",
            "Nodes heard on a LAN by their beacons.",
            e.lan_neighbours.len() as f64,
        ),
        (
            "re6st_lan_links",
            "LAN links (direct, not counted against k).",
            e.lan_links as f64,
        ),
        (
            "re6st_gateway_prefixes",
            "Prefixes this node offers the overlay as a gateway.",
            e.gateway.len() as f64,
        ),
    ] {
        m.gauge(name, help, &[], v);
    }
    for (outcome, n) in &e.lan_beacons {
        m.counter(
            "re6st_lan_beacons_total",
            "LAN beacons received, by outcome (accepted, own, repeated, malformed, bad_signature, ...).",
            &[("outcome", outcome.clone())],
            *n as f64,
        );
    }
    // One family at a time (the format wants each family's samples
    // together), one sample per tunnel.
    type Get = fn(&TunnelInfo) -> Option<f64>;
    let families: [(&str, &str, &str, Get); 11] = [
        (
            "re6st_tunnel_rtt_seconds",
            "QUIC smoothed RTT of the tunnel.",
            "gauge",
            |t| Some(t.rtt_ms / 1000.0),
        ),
        (
            "re6st_tunnel_babel_rtt_seconds",
            "Babel's smoothed RTT of the tunnel.",
            "gauge",
            |t| t.babel_rtt_ms.map(|b| b / 1000.0),
        ),
        (
            "re6st_tunnel_destinations",
            "Destinations routed through the tunnel.",
            "gauge",
            |t| Some(t.destinations as f64),
        ),
        (
            "re6st_tunnel_tx_packets_total",
            "Datagrams sent on the tunnel.",
            "counter",
            |t| Some(t.tx_packets as f64),
        ),
        (
            "re6st_tunnel_tx_bytes_total",
            "Bytes sent on the tunnel.",
            "counter",
            |t| Some(t.tx_bytes as f64),
        ),
        (
            "re6st_tunnel_tx_dropped_total",
            "Datagrams the tunnel refused to send.",
            "counter",
            |t| Some(t.tx_dropped as f64),
        ),
        (
            "re6st_tunnel_rx_packets_total",
            "Datagrams received on the tunnel.",
            "counter",
            |t| Some(t.rx_packets as f64),
        ),
        (
            "re6st_tunnel_rx_bytes_total",
            "Bytes received on the tunnel.",
            "counter",
            |t| Some(t.rx_bytes as f64),
        ),
        (
            "re6st_tunnel_quic_cwnd_bytes",
            "QUIC congestion window of the tunnel.",
            "gauge",
            |t| Some(t.quic.cwnd as f64),
        ),
        (
            "re6st_tunnel_quic_congestion_events_total",
            "Times QUIC cut the tunnel's congestion window.",
            "counter",
            |t| Some(t.quic.congestion_events as f64),
        ),
        (
            "re6st_tunnel_quic_lost_packets_total",
            "QUIC packets of the tunnel declared lost.",
            "counter",
            |t| Some(t.quic.lost_packets as f64),
        ),
    ];
    for (name, help, kind, get) in families {
        for t in tunnels {
            if let Some(v) = get(t) {
                let labels = [
                    ("peer", t.peer_prefix.to_string()),
                    ("id", t.id.to_string()),
                ];
                m.family(name, help, kind);
                m.sample(name, &labels, v);
            }
        }
    }
    for (group, counters) in &status.counters {
        for (name, v) in counters {
            let metric = format!("re6st_{}_{}", sanitize(group), sanitize(name));
            m.untyped(&metric, &format!("{group} counter {name}."), *v as f64);
        }
    }
    m.out
}

/// Builds the exposition, writing each metric family's HELP and TYPE once
/// (also used by the registry's metrics).
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) out: String,
    last_family: String,
}

impl Metrics {
    pub(crate) fn family(&mut self, name: &str, help: &str, kind: &str) {
        if self.last_family != name {
            let _ = writeln!(self.out, "# HELP {name} {help}");
            let _ = writeln!(self.out, "# TYPE {name} {kind}");
            self.last_family = name.to_string();
        }
    }

    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, String)], v: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {v}");
    }

    pub(crate) fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, String)], v: f64) {
        self.family(name, help, "gauge");
        self.sample(name, labels, v);
    }

    pub(crate) fn counter(&mut self, name: &str, help: &str, labels: &[(&str, String)], v: f64) {
        self.family(name, help, "counter");
        self.sample(name, labels, v);
    }

    fn untyped(&mut self, name: &str, help: &str, v: f64) {
        self.family(name, help, "untyped");
        self.sample(name, &[], v);
    }
}

/// Label values: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Metric-name characters only (`[a-zA-Z0-9_]`).
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

async fn handler(State(source): State<Arc<Source>>) -> impl IntoResponse {
    match source.metrics().await {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            body,
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("{e:#}\n"),
        ),
    }
}

/// Binds the metrics listener (the node's and the registry's). Only
/// loopback addresses are accepted: the
/// metrics name the node's peers and addresses, and the endpoint has no
/// authentication (put a reverse proxy in front to export them).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "--metrics {addr}: the metrics endpoint has no authentication, so it only listens on a loopback address (127.0.0.1 or ::1)"
    );
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for metrics on {addr}"))
}

/// Serves `GET /metrics` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, source: Arc<Source>) {
    let app = axum::Router::new()
        .route("/metrics", get(handler))
        .with_state(source);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "metrics server stopped");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::control::api::{HostInfo, RegistryInfo};

    /// A status with one tunnel in every state (also for the table tests).
    pub(crate) fn status() -> Status {
        Status {
            state: Default::default(),
            address: "fd00:1:2:3::1".parse().unwrap(),
            prefix: "fd00:1:2:3::/64".parse().unwrap(),
            serial: 7,
            certificate: crate::control::api::CertificateInfo {
                not_after: 1_900_000_000,
                renewal: "ok".into(),
            },
            network: "fd00:1:2::/48".parse().unwrap(),
            ipv4: None,
            listen: None,
            advertised: vec![],
            uptime_secs: 42,
            crl_number: 1,
            host: HostInfo {
                mode: "created".into(),
                device: Some("re6st0".into()),
                offload: true,
                mtu: 1400,
                queues: 1,
                route: "installed".into(),
            },
            probe_rounds: vec![],
            tunnels_up: 2,
            tunnels_draining: 1,
            tunnels_suspect: 1,
            tunnels_outgoing: 2,
            routes: 5,
            peer_db: 9,
            registry: RegistryInfo {
                url: Some("https://r".into()),
                last_ok: Some(1),
                last_error: None,
                failures: 3,
                next_round_in_secs: Some(600),
            },
            counters: [(
                "path".to_string(),
                BTreeMap::from([("forwarded".to_string(), 11u64)]),
            )]
            .into(),
            edges: Default::default(),
        }
    }

    fn tunnel(id: u64) -> TunnelInfo {
        TunnelInfo {
            id,
            peer_prefix: "fd00:1:2:4::/64".parse().unwrap(),
            peer_serial: 8,
            peer_udp: "[fd00::2]:4326".parse().unwrap(),
            direction: "outgoing".into(),
            state: "up".into(),
            iface: Some(1),
            rtt_ms: 2.5,
            babel_rtt_ms: Some(3.0),
            age_secs: 10,
            destinations: 4,
            max_datagram_size: Some(1414),
            tx_packets: 100,
            tx_bytes: 140_000,
            tx_dropped: 0,
            rx_packets: 90,
            rx_bytes: 120_000,
            transport: "quic".into(),
            quic: Default::default(),
        }
    }

    #[test]
    fn lan_beacon_counters_are_a_counter_family_by_outcome() {
        let mut s = status();
        assert!(
            !render(&s, &[]).contains("re6st_lan_beacons"),
            "LAN off: none"
        );
        let stats = crate::lan::DiscoveryStats {
            accepted: 7,
            bad_signature: 2,
            ..Default::default()
        };
        s.edges = crate::node::EdgesStatus {
            lan_beacons: Some(stats),
            ..Default::default()
        }
        .info();
        assert_eq!(s.edges.lan_beacons["accepted"], 7);
        assert_eq!(s.edges.lan_beacons["bad_signature"], 2);
        assert_eq!(s.edges.lan_beacons["own"], 0);
        // In the JSON of `re6st status --json`, and back.
        let json = serde_json::to_string(&s).unwrap();
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back.edges.lan_beacons, s.edges.lan_beacons);
        let text = render(&s, &[]);
        assert_eq!(
            text.matches("# TYPE re6st_lan_beacons_total counter")
                .count(),
            1
        );
        assert!(text.contains("re6st_lan_beacons_total{outcome=\"accepted\"} 7\n"));
        assert!(text.contains("re6st_lan_beacons_total{outcome=\"bad_signature\"} 2\n"));
        assert!(text.contains("re6st_lan_beacons_total{outcome=\"malformed\"} 0\n"));
    }

    #[test]
    fn exposition_has_each_family_once_and_all_samples() {
        let text = render(&status(), &[tunnel(1), tunnel(2)]);
        assert_eq!(text.matches("# TYPE re6st_tunnels gauge").count(), 1);
        assert!(text.contains("re6st_tunnels{state=\"up\"} 2\n"));
        assert!(text.contains("re6st_tunnels{state=\"draining\"} 1\n"));
        assert!(text.contains("re6st_tunnels{state=\"suspect\"} 1\n"));
        assert!(text.contains("re6st_lan_links 0\n") && text.contains("re6st_behind_nat 0\n"));
        // Each family once, its samples together.
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut unique = types.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(types.len(), unique.len(), "a family is declared twice");
        let rx: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with("re6st_tunnel_rx_bytes_total{"))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(rx.len(), 2);
        assert_eq!(rx[1], rx[0] + 1, "samples of a family are adjacent");
        assert!(
            text.contains("re6st_tunnel_rtt_seconds{peer=\"fd00:1:2:4::/64\",id=\"2\"} 0.0025\n")
        );
        assert!(text.contains("re6st_path_forwarded 11\n"));
        assert!(text.contains("re6st_registry_reachable 1\n"));
        assert!(text.contains("re6st_registry_failures_total 3\n"));
        assert!(text.contains("re6st_certificate_expiry_timestamp_seconds 1900000000\n"));
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let bare = name.split('{').next().unwrap();
            assert!(
                bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(sanitize("a-b.c"), "a_b_c");
    }

    #[tokio::test]
    async fn non_loopback_metrics_address_is_refused() {
        let e = bind("0.0.0.0:0".parse().unwrap()).await.unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
        assert!(bind("127.0.0.1:0".parse().unwrap()).await.is_ok());
    }
}
