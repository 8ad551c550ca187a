//! The gateway role on real kernels (namespaces and TUN devices; root
//! only, skipped otherwise): `re6st node` processes in `g` (the gateway,
//! `--gateway`) and `n`, joined by a veth; `x` is a host outside the
//! overlay, reachable from `g` only (fd00:99::/64). `n` has no underlay
//! route to `x` at all: its kernel sends overlay-sourced traffic into its
//! TUN (`ip -6 route add default from <overlay> dev re6st0`), its node
//! forwards it to `g` along the default route `g` announces in Babel, and
//! `g`'s node hands it to `g`'s kernel, which forwards it to `x`; the
//! answer comes back the same way (`x` routes the overlay to `g`).

mod realnet_support;

use std::time::Duration;

use ipnet::IpNet;
use realnet_support::{FAST, lab_or_skip, start_node, start_registry, wait_until};

const NETWORK: &str = "fd00:77::/48";
const OUTSIDE: &str = "fd00:99::2";

#[test]
fn a_node_reaches_an_outside_host_through_the_gateway() {
    let Some(mut lab) = lab_or_skip("a_node_reaches_an_outside_host_through_the_gateway", "gw")
    else {
        return;
    };
    for ns in ["g", "n", "x"] {
        lab.add_ns(ns).unwrap();
    }
    lab.veth(
        ("g", "gn", Some("fd00:1::1/64")),
        ("n", "ng", Some("fd00:1::2/64")),
    )
    .unwrap();
    lab.veth(
        ("g", "gx", Some("fd00:99::1/64")),
        ("x", "xg", Some("fd00:99::2/64")),
    )
    .unwrap();
    lab.exec("g", &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        .unwrap();
    // The outside host sends answers for the overlay to the gateway (the
    // "upstream routes the overlay to the gateway" setup; NAT66 on the
    // gateway is the other one).
    lab.exec(
        "x",
        &["ip", "-6", "route", "add", NETWORK, "via", "fd00:99::1"],
    )
    .unwrap();

    let fp = start_registry(
        &mut lab,
        "g",
        "[fd00:1::1]:8443",
        &["fd00:1::1"],
        1,
        &["--network", NETWORK, "--sweep-every", "200ms"],
    );
    let registry = "https://[fd00:1::1]:8443";
    let g = start_node(
        &mut lab,
        "g",
        registry,
        &fp,
        &["[fd00:1::1]:4326"],
        &[FAST, &["--no-upnp", "--gateway"]].concat(),
    );
    // Only a node the registry authorises may announce a prefix outside
    // the overlay; n fetches the grant with the network configuration
    // (served within a sweep).
    let out = std::process::Command::new(realnet_support::exe())
        .args(["registry", "gateway", "add", "--dir"])
        .arg(lab.dir().join("registry"))
        .args([&g.prefix.to_string(), "::/0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_secs(1));
    let n = start_node(
        &mut lab,
        "n",
        registry,
        &fp,
        &["[fd00:1::2]:4326"],
        &[FAST, &["--no-upnp"]].concat(),
    );

    // n learns the default route from g's announcement.
    let default: IpNet = "::/0".parse().unwrap();
    let took = wait_until(
        "n has a default route via g",
        Duration::from_secs(60),
        || {
            n.routes()
                .iter()
                .any(|r| r.selected && r.prefix == default && r.via == Some(g.prefix))
        },
    );
    eprintln!("default route via the gateway after {took:?}");

    // Without a kernel route into the TUN, n cannot reach x at all.
    let src = n.address.to_string();
    let ping = |count: &str| {
        lab.exec(
            "n",
            &[
                "ping", "-6", "-n", "-c", count, "-i", "0.2", "-W", "1", "-I", &src, OUTSIDE,
            ],
        )
    };
    assert!(ping("1").is_err(), "x reachable from n without the overlay");

    // Overlay-sourced traffic into the TUN (source-specific, as the README
    // recommends), then the kernel's ping crosses the overlay and g.
    lab.exec(
        "n",
        &[
            "ip", "-6", "route", "add", "default", "from", NETWORK, "dev", "re6st0",
        ],
    )
    .unwrap();
    let mut out = Err(anyhow::anyhow!("not tried"));
    for _ in 0..10 {
        out = ping("3");
        if out.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = out.expect("ping from n to the outside host through the gateway");
    assert!(out.contains(" 0% packet loss"), "{out}");
    // Figures (the first pings also wait for neighbour discovery and the
    // routes back): warm RTT through the gateway, and to the gateway's own
    // overlay address, in the same run.
    let rtt = |dst: &str, from: Option<&str>| {
        let mut cmd = vec!["ping", "-6", "-n", "-q", "-c", "5", "-i", "0.2"];
        if let Some(f) = from {
            cmd.extend(["-I", f]);
        }
        cmd.push(dst);
        let out = lab.exec("n", &cmd).expect("warm ping");
        out.lines().last().unwrap_or_default().to_string()
    };
    let g_addr = g.address.to_string();
    eprintln!(
        "through the gateway to {OUTSIDE}: {}",
        rtt(OUTSIDE, Some(&src))
    );
    eprintln!("to the gateway node {g_addr}: {}", rtt(&g_addr, None));

    // The gateway's node delivered them to its host (not forwarded in the
    // overlay), and refuses to loop traffic its own kernel sends back.
    assert!(
        g.counter("path", "delivered") >= 3,
        "{:?}",
        g.status().counters.get("path")
    );
}
