//! The unprivileged mode on real kernels: node `y` runs as `nobody` with
//! no capability at all, attached to a TUN device that root prepared with
//! `re6st tun-setup --user nobody` (what `ip tuntap add dev re6st0 mode tun
//! user nobody` plus address, MTU and up do, with an on-link route for the
//! network). Nodes `x` and `z` (root, their own devices) sit
//! on either side of it (veths x–y and y–z only), so `y` both delivers to
//! its own host and forwards between `x` and `z`.

mod realnet_support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use re6st::state_dir::StateDir;
use realnet_support::{FAST, TestNode, exe, lab_or_skip, start_node, start_registry, wait_until};

const NOBODY: &str = "65534";

#[test]
fn node_as_nobody_on_a_premade_tun_forwards_traffic() {
    let Some(mut lab) = lab_or_skip("node_as_nobody_on_a_premade_tun_forwards_traffic", "unpriv")
    else {
        return;
    };
    for ns in ["x", "y", "z"] {
        lab.add_ns(ns).unwrap();
    }
    lab.veth(
        ("x", "xy", Some("fd00:17::1/64")),
        ("y", "yx", Some("fd00:17::2/64")),
    )
    .unwrap();
    lab.veth(
        ("y", "yz", Some("fd00:27::2/64")),
        ("z", "zy", Some("fd00:27::3/64")),
    )
    .unwrap();
    let fp = start_registry(
        &mut lab,
        "y",
        "[::]:8443",
        &["fd00:17::2", "fd00:27::2"],
        2,
        &[],
    );
    let url = "https://[fd00:17::2]:8443";

    // Root enrols y and prepares its device; then hands the state
    // directory to nobody.
    let dir = lab.dir().join("y");
    let out = lab
        .exec(
            "y",
            &[
                &exe(),
                "join",
                "--registry",
                url,
                "--ca-fingerprint",
                &fp,
                "--dir",
                dir.to_str().unwrap(),
            ],
        )
        .unwrap();
    eprintln!("{out}");
    let id = StateDir::new(&dir).load_identity().unwrap();
    let network = id
        .network
        .as_ref()
        .unwrap()
        .verify(&id.ca_key)
        .unwrap()
        .network;
    // `re6st tun-setup` makes the device as `ip tuntap add ... user nobody`
    // plus `ip addr` and `ip link` would, with the network's prefix length
    // so that the on-link route covers the whole overlay.
    let out = lab
        .exec(
            "y",
            &[
                &exe(),
                "tun-setup",
                "--dir",
                dir.to_str().unwrap(),
                "--user",
                NOBODY,
            ],
        )
        .unwrap();
    eprintln!("{out}");
    let owner = lab
        .exec("y", &["cat", "/sys/class/net/re6st0/owner"])
        .unwrap();
    assert_eq!(owner.trim(), NOBODY);
    let addr = lab
        .exec("y", &["ip", "-6", "addr", "show", "dev", "re6st0"])
        .unwrap();
    let want = format!("{}/{}", id.cert.address, network.prefix_len());
    assert!(addr.contains(&want) && addr.contains("mtu 1400"), "{addr}");
    let again = lab.exec(
        "y",
        &[
            &exe(),
            "tun-setup",
            "--dir",
            dir.to_str().unwrap(),
            "--user",
            NOBODY,
        ],
    );
    assert!(
        again.is_err_and(|e| e.to_string().contains("exists already")),
        "a second tun-setup refuses to touch the device"
    );
    re6st::netns::run(&[
        "chown",
        "-R",
        &format!("{NOBODY}:{NOBODY}"),
        dir.to_str().unwrap(),
    ])
    .unwrap();
    // /dev/net/tun is often 0600: the wrapper binds a usable node over it
    // in the private mount namespace of `ip netns exec`.
    let tun_node = lab.dir().join("tun");
    re6st::netns::run(&["mknod", tun_node.to_str().unwrap(), "c", "10", "200"]).unwrap();
    std::fs::set_permissions(&tun_node, std::fs::Permissions::from_mode(0o666)).unwrap();

    let x = start_node(&mut lab, "x", url, &fp, &["[fd00:17::1]:4326"], FAST);
    let z = start_node(
        &mut lab,
        "z",
        "https://[fd00:27::2]:8443",
        &fp,
        &["[fd00:27::3]:4326"],
        FAST,
    );
    let script = format!(
        "mount --bind {tun} /dev/net/tun && exec setpriv --reuid={NOBODY} --regid={NOBODY} \
         --clear-groups --inh-caps=-all --bounding-set=-all {exe} node --dir {dir} \
         --tun-attach re6st0 --listen [::]:4326 --advertise [fd00:17::2]:4326 \
         --advertise [fd00:27::2]:4326 --keep-alive 300ms --idle-timeout 2s",
        tun = tun_node.display(),
        exe = exe(),
        dir = dir.display(),
    );
    let proc = lab
        .spawn(Some("y"), "y", "sh", &["-c".into(), script], |c| {
            c.env("RUST_LOG", "re6st=info");
        })
        .unwrap();
    proc.wait_for_line("control socket", Duration::from_secs(60))
        .unwrap();
    let pid = proc.pid();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        proc_status
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_default()
            .to_string()
    };
    eprintln!("y: {} {}", field("Uid:"), field("CapEff:"));
    assert!(
        field("Uid:")
            .split_whitespace()
            .skip(1)
            .all(|u| u == NOBODY)
    );
    assert_eq!(
        field("CapEff:").split_whitespace().nth(1),
        Some("0000000000000000")
    );
    let y = TestNode {
        name: "y".into(),
        socket: dir.join(re6st::control::api::SOCKET_FILE),
        dir: dir.clone(),
        address: id.cert.address,
        prefix: id.cert.prefix,
    };
    let host = y.status().host;
    assert_eq!(
        (host.mode.as_str(), host.route.as_str()),
        ("attached", "present")
    );

    let took = wait_until(
        "x and z route to each other through y",
        Duration::from_secs(90),
        || x.via(&z) == Some(y.prefix) && z.via(&x) == Some(y.prefix) && x.via(&y).is_some(),
    );
    eprintln!("routes through y after {took:?}");
    for (from, to) in [("x", &y), ("x", &z), ("z", &x)] {
        let mut p = lab.ping(from, &to.address.to_string(), 4, Duration::from_millis(200));
        for _ in 0..5 {
            if p.received == p.sent {
                break;
            }
            p = lab.ping(from, &to.address.to_string(), 4, Duration::from_millis(200));
        }
        eprintln!("ping {from} -> {}: {p:?}", to.name);
        assert_eq!(p.received, p.sent, "ping {from} -> {}", to.name);
    }
    // y delivered to and read from its own device, and forwarded x <-> z.
    assert!(y.counter("host", "tx_packets") >= 4 && y.counter("host", "rx_packets") >= 4);
    assert!(y.counter("path", "forwarded") >= 16);
}
