//! Traffic through an intermediate node, on real kernels: three `re6st
//! node` processes in namespaces `a`, `b`, `c` joined by veths in a line
//! (a–b on fd00:ab::/64, b–c on fd00:bc::/64, and no forwarding in `b`'s
//! kernel), so `a` and `c` cannot open a tunnel to each other and their
//! traffic must cross node `b`. Each node has its own TUN device; the
//! kernel's `ping -6` and an `iperf3` TCP transfer go between the overlay
//! addresses of `a` and `c`.

mod realnet_support;

use std::time::Duration;

use realnet_support::{iperf3, lab_or_skip, line_of_three, wait_until};

#[test]
fn ping_and_tcp_cross_an_intermediate_node() {
    let Some(mut lab) = lab_or_skip("ping_and_tcp_cross_an_intermediate_node", "transit") else {
        return;
    };
    let (a, b, c) = line_of_three(&mut lab, &[]);

    let took = wait_until("a routes to c through b", Duration::from_secs(90), || {
        a.via(&c) == Some(b.prefix) && c.via(&a) == Some(b.prefix)
    });
    eprintln!("routes a <-> c through b after {took:?}");
    assert!(!a.has_tunnel_to(&c) && !c.has_tunnel_to(&a));
    let host = a.status().host;
    assert_eq!(
        (
            host.mode.as_str(),
            host.device.as_deref(),
            host.route.as_str()
        ),
        ("created", Some("re6st0"), "installed")
    );

    // ping -6 through the overlay (a retry or two while the first packets
    // find the routes on a loaded machine).
    let dst = c.address.to_string();
    let mut ping = lab.ping("a", &dst, 5, Duration::from_millis(200));
    for _ in 0..5 {
        if ping.received == ping.sent {
            break;
        }
        ping = lab.ping("a", &dst, 5, Duration::from_millis(200));
    }
    eprintln!("ping a -> c: {ping:?}");
    assert_eq!(ping.received, ping.sent, "{ping:?}");

    // TCP through the overlay.
    let forwarded_before = b.counter("path", "forwarded");
    let (bytes, gbps) = iperf3(&mut lab, "a", "c", c.address.into(), 2);
    let forwarded = b.counter("path", "forwarded") - forwarded_before;
    eprintln!(
        "iperf3 a -> c through b: {bytes} bytes, {gbps:.3} Gbit/s; b forwarded {forwarded} packets"
    );
    assert!(bytes > 1_000_000, "only {bytes} bytes crossed");
    // Every data segment crossed b (1400-byte packets at most).
    assert!(
        forwarded >= bytes / 1400,
        "b forwarded {forwarded} packets for {bytes} bytes"
    );
    // a's node read the TCP segments from its TUN device, c's node wrote
    // them to its own...
    let read = a.counter("host", "rx_packets");
    let written = c.counter("host", "tx_packets");
    assert!(
        read >= bytes / 1400 && written >= bytes / 1400,
        "a read {read}, c wrote {written}"
    );
    // ...in batches: a's kernel handed over GSO super-packets (fewer skbs
    // than packets), and c's writes were coalesced back (GRO: the kernel
    // received fewer skbs than the packets written).
    let skbs = |ns: &str, dir: &str| -> u64 {
        let path = format!("/sys/class/net/re6st0/statistics/{dir}_packets");
        lab.exec(ns, &["cat", &path])
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (gso, gro) = (skbs("a", "tx"), skbs("c", "rx"));
    eprintln!("a: {read} packets read from {gso} skbs; c: {written} packets written as {gro} skbs");
    assert!(
        gso * 2 < read,
        "no GSO super-packets: {gso} skbs for {read} packets"
    );
    assert!(
        gro * 2 < written,
        "no GRO coalescing: {gro} skbs for {written} packets"
    );
}
