//! IPv4 inside the overlay, on real kernels: a registry with `--ipv4
//! 10.42.0.0/16 --ipv4-prefix-len 24` and three `re6st node` processes in
//! namespaces `a`, `b`, `c` joined by veths in a line (as in
//! `realnet_transit`: `a` and `c` reach each other only through node `b`).
//! Each node puts its IPv4 address on its TUN and routes 10.42.0.0/16
//! into it; the kernel's `ping -4` goes to a neighbour and through `b`, an
//! `iperf3` TCP transfer crosses `b` over IPv4, and a ping with TTL 1
//! gets "Time to live exceeded" from `b`'s IPv4 address. And a network
//! that had no IPv4 gets it later: the registry restarted with `--ipv4`,
//! the running nodes take it on SIGHUP.

mod realnet_support;

use std::net::Ipv4Addr;
use std::time::Duration;

use re6st::netns::{Lab, PingSummary, parse_ping};
use realnet_support::{TestNode, iperf3, lab_or_skip, line_of_three, start_registry, wait_until};

fn ipv4(n: &TestNode) -> Ipv4Addr {
    n.status()
        .ipv4
        .unwrap_or_else(|| panic!("{} shows no IPv4 in its status", n.name))
        .address
}

fn ping4(lab: &Lab, ns: &str, dst: Ipv4Addr, count: u32) -> PingSummary {
    let out = lab
        .command(ns, "ping")
        .args([
            "-4",
            "-q",
            "-n",
            "-W",
            "2",
            "-i",
            "0.2",
            "-c",
            &count.to_string(),
        ])
        .arg(dst.to_string())
        .output()
        .expect("running ping");
    parse_ping(&String::from_utf8_lossy(&out.stdout), count)
}

/// Pings until every Echo Request of a round is answered (a few rounds
/// while the first packets find the routes on a loaded machine).
fn ping4_all(lab: &Lab, ns: &str, dst: Ipv4Addr) -> PingSummary {
    let mut p = ping4(lab, ns, dst, 5);
    for _ in 0..5 {
        if p.received == p.sent {
            break;
        }
        p = ping4(lab, ns, dst, 5);
    }
    p
}

#[test]
fn ipv4_ping_tcp_and_ttl_exceeded_across_the_overlay() {
    let Some(mut lab) = lab_or_skip("ipv4_ping_tcp_and_ttl_exceeded_across_the_overlay", "ipv4")
    else {
        return;
    };
    let (a, b, c) = line_of_three(
        &mut lab,
        &["--ipv4", "10.42.0.0/16", "--ipv4-prefix-len", "24"],
    );
    let (a4, b4, c4) = (ipv4(&a), ipv4(&b), ipv4(&c));
    eprintln!("IPv4: a {a4}, b {b4}, c {c4}");
    assert!(a4 != b4 && b4 != c4 && a4 != c4);
    for (n, addr) in [("a", a4), ("b", b4), ("c", c4)] {
        let addrs = lab
            .exec(n, &["ip", "-4", "addr", "show", "dev", "re6st0"])
            .unwrap();
        assert!(addrs.contains(&format!("{addr}/32")), "{n}: {addrs}");
        let routes = lab
            .exec(n, &["ip", "-4", "route", "show", "dev", "re6st0"])
            .unwrap();
        assert!(routes.contains("10.42.0.0/16"), "{n}: {routes}");
    }

    let took = wait_until("a routes to c through b", Duration::from_secs(90), || {
        a.via(&c) == Some(b.prefix) && c.via(&a) == Some(b.prefix)
    });
    eprintln!("routes a <-> c through b after {took:?}");
    let v4_routed = |n: &TestNode| {
        n.routes()
            .iter()
            .filter(|r| {
                r.selected && r.metric != u16::MAX && r.prefix.to_string().starts_with("10.42.")
            })
            .count()
    };
    let took = wait_until(
        "every node routes both other IPv4 subnets",
        Duration::from_secs(60),
        || [&a, &b, &c].iter().all(|n| v4_routed(n) >= 2),
    );
    eprintln!("IPv4 routes everywhere after {took:?}");

    let p = ping4_all(&lab, "a", b4);
    eprintln!("ping -4 a -> b: {p:?}");
    assert_eq!(p.received, p.sent, "{p:?}");
    let p = ping4_all(&lab, "a", c4);
    eprintln!("ping -4 a -> c (through b): {p:?}");
    assert_eq!(p.received, p.sent, "{p:?}");

    // TTL 1: a's node forwards it as the local kernel gave it, b is the
    // first overlay router to decrement it and answers.
    let out = lab
        .command("a", "ping")
        .args(["-4", "-n", "-W", "2", "-c", "3", "-i", "0.3", "-t", "1"])
        .arg(c4.to_string())
        .output()
        .expect("running ping");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("ping -4 -t 1 a -> c:\n{text}");
    assert!(
        text.contains(&format!("From {b4}")) && text.contains("Time to live exceeded"),
        "{text}"
    );

    let forwarded_before = b.counter("path", "forwarded");
    let (bytes, gbps) = iperf3(&mut lab, "a", "c", c4.into(), 2);
    let forwarded = b.counter("path", "forwarded") - forwarded_before;
    eprintln!(
        "iperf3 -4 a -> c through b: {bytes} bytes, {gbps:.3} Gbit/s; b forwarded {forwarded} packets"
    );
    assert!(bytes > 1_000_000, "only {bytes} bytes crossed");
    assert!(
        forwarded >= bytes / 1400,
        "b forwarded {forwarded} packets for {bytes} bytes"
    );
}

#[test]
fn ipv4_added_to_a_running_network_is_taken_on_reload() {
    let Some(mut lab) = lab_or_skip(
        "ipv4_added_to_a_running_network_is_taken_on_reload",
        "ipv4l",
    ) else {
        return;
    };
    let (a, b, c) = line_of_three(&mut lab, &[]);
    for n in [&a, &b, &c] {
        assert_eq!(n.status().ipv4, None, "{} has IPv4 already", n.name);
    }
    // The same registry (its directory, its CA), started again with IPv4.
    lab.proc("registry").unwrap().stop(Duration::from_secs(5));
    start_registry(
        &mut lab,
        "b",
        "[::]:8443",
        &["fd00:ab::2", "fd00:bc::2"],
        2,
        &["--ipv4", "10.43.0.0/16", "--ipv4-prefix-len", "24"],
    );
    for n in ["a", "b", "c"] {
        lab.proc(n).unwrap().signal(libc::SIGHUP);
    }
    let took = wait_until(
        "every node has an IPv4 address",
        Duration::from_secs(60),
        || [&a, &b, &c].iter().all(|n| n.status().ipv4.is_some()),
    );
    let (a4, c4) = (ipv4(&a), ipv4(&c));
    eprintln!("IPv4 after the reload: a {a4}, c {c4}, after {took:?}");
    let routes = lab
        .exec("a", &["ip", "-4", "route", "show", "dev", "re6st0"])
        .unwrap();
    assert!(routes.contains("10.43.0.0/16"), "a: {routes}");
    let p = ping4_all(&lab, "a", c4);
    eprintln!("ping -4 a -> c (through b): {p:?}");
    assert_eq!(p.received, p.sent, "{p:?}");
}
