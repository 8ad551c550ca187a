//! What an operator sees of a running registry: Prometheus metrics and the
//! health check on the loopback listener, and the map of the network that
//! nodes report (SVG, JSON, DOT, `re6st registry topology`).

mod registry_support;

use std::time::SystemTime;

use re6st::identity::{LinkKind, LinkReport, PeerAnnouncement, Topology, unix_secs};
use re6st::registry::api::{self, ApiError, ErrorCode, HealthResponse};
use re6st::registry::topology::Map;
use registry_support::{Node, TestRegistry, run};

fn announcement(
    n: &Node,
    links: &[(&Node, LinkKind)],
    gateway: bool,
) -> re6st::identity::SignedAnnouncement {
    PeerAnnouncement {
        prefix: n.cert.prefix,
        addresses: vec!["127.0.0.1:4326".parse().unwrap()],
        timestamp: unix_secs(SystemTime::now()),
        tcp_port: None,
        topology: Some(Topology::new(
            "9.9.9",
            links
                .iter()
                .map(|(p, kind)| LinkReport {
                    peer: p.cert.prefix,
                    kind: *kind,
                    rtt_ms: Some(12),
                })
                .collect(),
            if gateway {
                vec!["::/0".parse().unwrap()]
            } else {
                vec![]
            },
        )),
    }
    .sign(&n.cert, &n.key)
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_the_map_of_the_network() {
    let r = TestRegistry::start(&["--enrolment", "open", "--network", "fd00:77::/48"]).await;
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let maddr = metrics.local_addr().unwrap();
    tokio::spawn(re6st::registry::metrics::serve(metrics, r.registry.clone()));
    let a = r.enrol(None).await;
    let b = r.enrol(None).await;
    let c = r.enrol(None).await;
    // a dials b, b reports it too; b and c share a LAN (only b says so);
    // c is a gateway.
    r.client(&a)
        .announce(&announcement(&a, &[(&b, LinkKind::Out)], false))
        .await
        .unwrap();
    r.client(&b)
        .announce(&announcement(
            &b,
            &[(&a, LinkKind::In), (&c, LinkKind::Lan)],
            false,
        ))
        .await
        .unwrap();
    r.client(&c)
        .announce(&announcement(&c, &[], true))
        .await
        .unwrap();

    // Health, on the API and on the metrics listener.
    let h: HealthResponse = r
        .raw(None)
        .get(format!("{}{}", r.url, api::PATH_HEALTH))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((h.status.as_str(), h.database.as_str()), ("ok", "ok"));
    // Plain HTTP; reqwest still wants a crypto provider installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let plain = reqwest::Client::new();
    let m = format!("http://{maddr}");
    let h: HealthResponse = plain
        .get(format!("{m}{}", api::PATH_HEALTH))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h.backend, "sqlite");

    // Metrics: requests by endpoint and status, latency, counts from the
    // database.
    let _ = r
        .raw(None)
        .get(format!("{}/nope", r.url))
        .send()
        .await
        .unwrap();
    let text = plain
        .get(format!("{m}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "re6st_registry_requests_total{endpoint=\"/v1/enrol\",status=\"200\"} 3",
        "re6st_registry_requests_total{endpoint=\"/v1/announce\",status=\"200\"} 3",
        "re6st_registry_requests_total{endpoint=\"other\",status=\"404\"} 1",
        "re6st_registry_enrolments_total{result=\"new\"} 3",
        "re6st_registry_announcements_total 3",
        "re6st_registry_request_duration_seconds_count{endpoint=\"/v1/enrol\"} 3",
        "re6st_registry_nodes{state=\"active\"} 3",
        "re6st_registry_certificates_total 3",
        "re6st_registry_database_up 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("re6st_registry_write_batch_size_bucket{le=\"+Inf\"}"));

    // The map: only on the metrics listener unless --public-topology.
    let resp = r
        .raw(None)
        .get(format!("{}{}", r.url, api::PATH_TOPOLOGY_SVG))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let e: ApiError = resp.json().await.unwrap();
    assert_eq!(e.error, ErrorCode::TopologyNotPublic);
    let map: Map = plain
        .get(format!("{m}{}", api::PATH_TOPOLOGY_JSON))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(map.counts(), (3, 1, 1));
    let tunnel = map.links.iter().find(|l| l.kind == "tunnel").unwrap();
    assert_eq!(
        (tunnel.a, tunnel.b, tunnel.confirmed),
        (a.cert.prefix, b.cert.prefix, true)
    );
    let gw = map
        .nodes
        .iter()
        .find(|n| n.prefix == c.cert.prefix)
        .unwrap();
    assert_eq!(gw.gateways.len(), 1);
    assert_eq!(gw.version.as_deref(), Some("9.9.9"));
    let svg = plain
        .get(format!("{m}{}", api::PATH_TOPOLOGY_SVG))
        .send()
        .await
        .unwrap();
    assert_eq!(
        svg.headers()["content-type"].to_str().unwrap(),
        "image/svg+xml"
    );
    let svg = svg.text().await.unwrap();
    assert!(svg.contains(&format!(">{}</text>", a.cert.prefix)));
    r.registry
        .public_topology
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let resp = r
        .raw(None)
        .get(format!("{}{}", r.url, api::PATH_TOPOLOGY_SVG))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // The same from the command line, while the registry runs.
    let dir = r.dir.path().to_str().unwrap().to_string();
    let (ok, out, err) = run(&["registry", "topology", "--dir", &dir, "--json"]);
    assert!(ok, "{err}");
    let cli: Map = serde_json::from_str(&out).unwrap();
    assert_eq!((cli.nodes, cli.links), (map.nodes, map.links));
    let (ok, out, _) = run(&["registry", "topology", "--dir", &dir, "--dot"]);
    assert!(ok && out.starts_with("digraph re6st {"));
    let (ok, out, _) = run(&["registry", "topology", "--dir", &dir]);
    assert!(
        ok && out.contains("3 nodes, 1 tunnels, 1 LAN links"),
        "{out}"
    );
    let (ok, out, _) = run(&["registry", "topology", "--dir", &dir, "--svg"]);
    assert!(ok && out.starts_with("<svg "));
}
