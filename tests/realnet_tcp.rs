//! Tunnels over TCP where UDP does not get out, on real kernels: the
//! namespaces `a`, `b`, `c` in a line (as in `realnet_transit`), with
//! nftables in `a` dropping every UDP packet in and out. `a`'s node can
//! only reach `b`'s over TCP: its QUIC dials get no answer and are dialled
//! again over TCP (`--transport auto`, the default), and `b`'s dials to
//! `a` likewise. The a–b link is a TCP tunnel, the b–c link a QUIC one;
//! `ping -6` and an `iperf3` transfer cross both, both ways. Then UDP is
//! allowed again: the QUIC probe of the TCP tunnel (every
//! `--quic-retry`) gets an answer, the tunnel is closed and dialled
//! again over QUIC. The nodes listen on TCP apart from their QUIC port
//! (`--tcp-port`): TCP dials reach them only at the port they announce.

mod realnet_support;

use std::time::Duration;

use re6st::netns::Lab;
use realnet_support::{TestNode, iperf3, lab_or_skip, line_of_three_with, wait_until};

/// Drops all UDP in and out of namespace `ns`.
fn drop_udp(lab: &Lab, ns: &str) {
    for cmd in [
        &["nft", "add", "table", "inet", "noudp"][..],
        &[
            "nft", "add", "chain", "inet", "noudp", "in", "{", "type", "filter", "hook", "input",
            "priority", "0", ";", "}",
        ],
        &[
            "nft", "add", "chain", "inet", "noudp", "out", "{", "type", "filter", "hook", "output",
            "priority", "0", ";", "}",
        ],
        &[
            "nft", "add", "rule", "inet", "noudp", "in", "meta", "l4proto", "udp", "drop",
        ],
        &[
            "nft", "add", "rule", "inet", "noudp", "out", "meta", "l4proto", "udp", "drop",
        ],
    ] {
        lab.exec(ns, cmd).expect("nft");
    }
}

/// The transport of `n`'s up tunnel to `peer`.
fn transport(n: &TestNode, peer: &TestNode) -> Option<String> {
    n.tunnels()
        .into_iter()
        .find(|t| t.peer_prefix == peer.prefix && t.state == "up")
        .map(|t| t.transport)
}

fn ping_all(lab: &Lab, from: &str, dst: &TestNode) -> re6st::netns::PingSummary {
    let dst = dst.address.to_string();
    let mut p = lab.ping(from, &dst, 5, Duration::from_millis(200));
    for _ in 0..5 {
        if p.received == p.sent {
            break;
        }
        p = lab.ping(from, &dst, 5, Duration::from_millis(200));
    }
    p
}

#[test]
fn nodes_without_udp_join_and_carry_traffic_over_tcp() {
    let Some(mut lab) = lab_or_skip("nodes_without_udp_join_and_carry_traffic_over_tcp", "tcp")
    else {
        return;
    };
    if lab.exec("", &["nft", "--version"]).is_err() && which("nft").is_none() {
        eprintln!("SKIPPED nodes_without_udp_join_and_carry_traffic_over_tcp: no nft");
        return;
    }
    let (a, b, c) = line_of_three_with(
        &mut lab,
        &[],
        &["--quic-retry", "5s", "--tcp-port", "4433"],
        |lab| drop_udp(lab, "a"),
    );

    let took = wait_until(
        "a and b have a tunnel over TCP",
        Duration::from_secs(120),
        || {
            transport(&a, &b).as_deref() == Some("tcp")
                && transport(&b, &a).as_deref() == Some("tcp")
        },
    );
    eprintln!("a-b tunnel over TCP after {took:?}");
    let took = wait_until("b and c have a tunnel", Duration::from_secs(60), || {
        b.has_tunnel_to(&c)
    });
    eprintln!("b-c tunnel after {took:?}: {:?}", transport(&b, &c));
    assert_eq!(transport(&b, &c).as_deref(), Some("quic"));
    let took = wait_until("a routes to c through b", Duration::from_secs(90), || {
        a.via(&c) == Some(b.prefix) && c.via(&a) == Some(b.prefix)
    });
    eprintln!("routes a <-> c through b after {took:?}");
    let fallbacks = a.counter("tcp", "fallbacks");
    eprintln!("a: {fallbacks} QUIC dials dialled again over TCP");

    for (from, to) in [("a", &b), ("a", &c), ("c", &a), ("b", &a)] {
        let p = ping_all(&lab, from, to);
        eprintln!("ping {from} -> {}: {p:?}", to.name);
        assert_eq!(p.received, p.sent, "{from} -> {}: {p:?}", to.name);
    }

    let (bytes, gbps) = iperf3(&mut lab, "a", "b", b.address.into(), 2);
    eprintln!("iperf3 a -> b over the TCP tunnel: {bytes} bytes, {gbps:.3} Gbit/s");
    assert!(bytes > 1_000_000, "only {bytes} bytes crossed");
    let (bytes, gbps) = iperf3(&mut lab, "c", "a", a.address.into(), 2);
    eprintln!("iperf3 c -> a (QUIC then TCP, through b): {bytes} bytes, {gbps:.3} Gbit/s");
    assert!(bytes > 1_000_000, "only {bytes} bytes crossed");

    // UDP gets through again: back to QUIC.
    lab.exec("a", &["nft", "delete", "table", "inet", "noudp"])
        .expect("nft");
    let took = wait_until("a and b are back on QUIC", Duration::from_secs(60), || {
        transport(&a, &b).as_deref() == Some("quic") && transport(&b, &a).as_deref() == Some("quic")
    });
    let moved = a.counter("tcp", "moved_back") + b.counter("tcp", "moved_back");
    eprintln!("a-b tunnel back on QUIC after {took:?} ({moved} moved back)");
    assert!(moved >= 1);
    for (from, to) in [("a", &c), ("c", &a)] {
        let p = ping_all(&lab, from, to);
        eprintln!("ping {from} -> {} over QUIC: {p:?}", to.name);
        assert_eq!(p.received, p.sent, "{from} -> {}: {p:?}", to.name);
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.exists())
    })
}
