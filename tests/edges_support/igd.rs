//! An emulated home router: a namespace with a WAN and a LAN side, NAT
//! (nftables masquerade, stateful: nothing gets in unasked) and Debian's
//! `miniupnpd` (nftables backend) as the UPnP IGD.
//!
//! miniupnpd refuses to forward when its WAN address is private or
//! reserved (198.18.0.0/15 is), unless a STUN query says the WAN side is
//! not filtered; so the "internet" namespace runs a tiny STUN responder
//! that reports each query's source address (RFC 5389 XOR-MAPPED-ADDRESS).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Netns, must, veth, wait_for};

pub const MINIUPNPD: &str = "/usr/sbin/miniupnpd";

/// The nftables ruleset: NAT toward the WAN, a stateful forward filter,
/// and the empty chains miniupnpd fills.
fn ruleset(wan: &str, lan: &str) -> String {
    format!(
        "table inet filter {{
  chain miniupnpd {{
  }}
  chain prerouting_miniupnpd {{
  }}
  chain postrouting_miniupnpd {{
  }}
  chain forward {{
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname \"{lan}\" accept
    jump miniupnpd
  }}
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
    oifname \"{wan}\" masquerade
  }}
}}
"
    )
}

/// A NAT router between `wan_if` (address `wan_ip/24`) and `lan_if`
/// (`lan_ip/24`), optionally with miniupnpd on the LAN side.
pub struct NatRouter {
    pub wan_ip: String,
    pub lan_ip: String,
    stun: Option<StunServer>,
}

impl NatRouter {
    /// Configures `router` (its interfaces must exist) as a NAT. With
    /// `upnp`, starts miniupnpd and waits until it forwards ports; the
    /// STUN responder runs in `internet` at `stun_ip`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        router: &mut Netns,
        wan_if: &str,
        wan_ip: &str,
        lan_if: &str,
        lan_ip: &str,
        upnp: Option<(&Netns, &str)>,
    ) -> NatRouter {
        router.ip(&["addr", "add", &format!("{wan_ip}/24"), "dev", wan_if]);
        router.ip(&["addr", "add", &format!("{lan_ip}/24"), "dev", lan_if]);
        router.sysctl("net.ipv4.ip_forward=1");
        let rules = router.dir.join("nat.nft");
        std::fs::write(&rules, ruleset(wan_if, lan_if)).unwrap();
        router.exec(&["nft", "-f", rules.to_str().unwrap()]);
        let mut r = NatRouter {
            wan_ip: wan_ip.into(),
            lan_ip: lan_ip.into(),
            stun: None,
        };
        if let Some((internet, stun_ip)) = upnp {
            assert!(
                std::path::Path::new(MINIUPNPD).exists(),
                "{MINIUPNPD} missing: run scripts/install-deps (package miniupnpd-nftables)"
            );
            r.stun = Some(StunServer::start(internet, stun_ip));
            let lan_net = {
                let mut o: Vec<&str> = lan_ip.split('.').collect();
                o[3] = "0";
                o.join(".")
            };
            let conf = router.dir.join("miniupnpd.conf");
            std::fs::write(
                &conf,
                format!(
                    "ext_ifname={wan_if}\nlistening_ip={lan_if}\nport=0\n\
                     enable_natpmp=no\nenable_upnp=yes\nsecure_mode=yes\nsystem_uptime=yes\n\
                     notify_interval=60\nclean_ruleset_interval=600\n\
                     lease_file={}\n\
                     uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07d\n\
                     ext_perform_stun=yes\next_stun_host={stun_ip}\next_stun_port=3478\n\
                     allow 1024-65535 {lan_net}/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
                    router.dir.join("upnp.leases").display()
                ),
            )
            .unwrap();
            let pid = router.dir.join("miniupnpd.pid");
            let log = router.spawn(
                &[
                    MINIUPNPD,
                    "-d",
                    "-f",
                    conf.to_str().unwrap(),
                    "-P",
                    pid.to_str().unwrap(),
                ],
                "miniupnpd.log",
            );
            let ready = wait_for(Duration::from_secs(20), || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                (text.contains("Port forwarding is now enabled") && text.contains("HTTP listening"))
                    .then_some(())
            });
            assert!(
                ready.is_some(),
                "miniupnpd did not start forwarding:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        r
    }

    /// The UDP port redirections miniupnpd installed: `(external port,
    /// internal address)` from the nftables ruleset.
    pub fn redirections(router: &Netns) -> Vec<(u16, SocketAddr)> {
        let out = must(&[
            "ip",
            "netns",
            "exec",
            &router.name,
            "nft",
            "list",
            "chain",
            "inet",
            "filter",
            "prerouting_miniupnpd",
        ]);
        // e.g. `iif 3 @nh,72,8 0x11 th dport 40000 dnat ip to 198.18.2.2:5000`
        out.lines()
            .filter_map(|l| {
                let dport = l.split("dport ").nth(1)?.split_whitespace().next()?;
                let to = l.split("dnat ip to ").nth(1)?.split_whitespace().next()?;
                Some((dport.parse().ok()?, to.parse().ok()?))
            })
            .collect()
    }
}

/// Answers STUN Binding requests with the requester's address.
pub struct StunServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StunServer {
    pub fn start(ns: &Netns, ip: &str) -> StunServer {
        let addr: SocketAddr = format!("{ip}:3478").parse().unwrap();
        let sock = ns.run(move || UdpSocket::bind(addr).unwrap());
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if n < 20 || buf[0..2] != [0, 1] {
                    continue;
                }
                let SocketAddr::V4(from4) = from else {
                    continue;
                };
                let mut out = vec![0x01, 0x01, 0, 12];
                out.extend_from_slice(&buf[4..20]); // cookie + transaction id
                out.extend_from_slice(&[0x00, 0x20, 0, 8, 0, 1]);
                out.extend_from_slice(&(from4.port() ^ 0x2112).to_be_bytes());
                let ip = u32::from(*from4.ip()) ^ 0x2112_A442;
                out.extend_from_slice(&ip.to_be_bytes());
                let _ = sock.send_to(&out, from);
            }
        });
        StunServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StunServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The home network of the UPnP, NAT and LAN tests:
/// - the internet: a bridge in `switch` with the router's WAN side
///   (198.18.1.1) and the `outside` hosts (198.18.1.10, .11, ...; the first
///   runs the STUN responder);
/// - `router`: NAT (and miniupnpd with `upnp`) between the internet and
///   its LAN bridge 198.18.2.1/24;
/// - `hosts` on the LAN: 198.18.2.2, .3, ... (default route via the
///   router).
pub struct HomeNet {
    // Dropped first: the STUN thread stops before the namespaces go.
    pub nat: NatRouter,
    pub switch: Netns,
    pub outside: Vec<Netns>,
    pub router: Netns,
    pub hosts: Vec<Netns>,
}

impl HomeNet {
    pub const WAN_IP: &str = "198.18.1.1";
    /// The first outside host.
    pub const INTERNET_IP: &str = "198.18.1.10";

    /// The address of outside host `i`.
    pub fn outside_ip(i: usize) -> String {
        format!("198.18.1.{}", 10 + i)
    }

    /// The address of LAN host `i`.
    pub fn host_ip(i: usize) -> String {
        format!("198.18.2.{}", 2 + i)
    }

    pub fn new(tag: &str, hosts: usize, outside: usize, upnp: bool) -> HomeNet {
        let switch = Netns::new(&format!("{tag}-inet"));
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let mut router = Netns::new(&format!("{tag}-rtr"));
        veth(&router, "wan0", &switch, "pw");
        switch.ip(&["link", "set", "pw", "master", "br0"]);
        let mut out = Vec::new();
        for i in 0..outside.max(1) {
            let o = Netns::new(&format!("{tag}-o{i}"));
            let port = format!("po{i}");
            veth(&switch, &port, &o, "eth0");
            switch.ip(&["link", "set", &port, "master", "br0"]);
            o.ip(&[
                "addr",
                "add",
                &format!("{}/24", Self::outside_ip(i)),
                "dev",
                "eth0",
            ]);
            out.push(o);
        }
        router.ip(&["link", "add", "lan0", "type", "bridge"]);
        router.ip(&["link", "set", "lan0", "up"]);
        let mut hs = Vec::new();
        for i in 0..hosts {
            let h = Netns::new(&format!("{tag}-h{i}"));
            let port = format!("lanp{i}");
            veth(&router, &port, &h, "eth0");
            router.ip(&["link", "set", &port, "master", "lan0"]);
            h.ip(&[
                "addr",
                "add",
                &format!("{}/24", Self::host_ip(i)),
                "dev",
                "eth0",
            ]);
            h.ip(&["route", "add", "default", "via", "198.18.2.1"]);
            hs.push(h);
        }
        let nat = NatRouter::new(
            &mut router,
            "wan0",
            Self::WAN_IP,
            "lan0",
            "198.18.2.1",
            upnp.then_some((&out[0], Self::INTERNET_IP)),
        );
        HomeNet {
            nat,
            switch,
            outside: out,
            router,
            hosts: hs,
        }
    }
}
