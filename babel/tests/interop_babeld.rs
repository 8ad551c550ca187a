//! Live interop with Debian's `babeld`.
//!
//! The test builds network namespaces joined by veth pairs (link-local
//! addresses only, plus fd00::/8 prefixes routed to `lo`), runs real
//! `babeld` in one of them with `enable-timestamps true`, and runs our
//! engine in the others behind a plain std UDP socket on port 6696 (the
//! engine does no I/O; the driver below is test code). Our driver runs in a
//! child process (this test binary re-executed under `ip netns exec`), so no
//! `setns` and no unsafe code are needed; it reports its tables as JSON in a
//! file the test polls.
//!
//! Shown: each side installs the other's prefixes (babeld's in the kernel
//! of its namespace, ours in the engine's table), RTT timestamps are
//! exchanged (we hold an RTT for babeld, babeld one for us), and
//! retractions propagate when either side stops; then a chain ours -
//! babeld - ours. With route-origin checks on (as the node runs them),
//! babeld skips our proof sub-TLVs and still installs our routes, and we
//! take nothing from babeld: it proves no origin.
//!
//! Needs root (CI is root); without it the test prints why and returns.
//! Everything is removed by a Drop guard, on failure too.

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use re6st_babel::engine::{
    Claim, Config, Engine, IfaceId, InterfaceKind, OriginAuth, Rejection, Sender, Verdict,
};
use re6st_babel::wire::{OriginProof, RouterId};

const GROUP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 6);

// ---------------------------------------------------------------- the lab

/// Namespaces, processes and files of one test; all removed on drop.
struct Lab {
    tag: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
}

impl Lab {
    fn new(name: &str) -> Lab {
        let tag = format!("r6e{}{name}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("re6st-interop-{tag}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Lab {
            tag,
            dir,
            namespaces: Vec::new(),
            children: Vec::new(),
        }
    }

    fn ns(&mut self, short: &str) -> String {
        let name = format!("{}{short}", self.tag);
        sh(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        ip(&name, &["link", "set", "lo", "up"]);
        name
    }

    /// A veth pair between two namespaces with fixed link-local addresses
    /// (no DAD, no EUI-64 address: the test knows every address).
    fn veth(&self, a: &str, a_if: &str, a_ll: &str, b: &str, b_if: &str, b_ll: &str) {
        let tmp_a = format!("{}t{a_if}", self.tag);
        let tmp_b = format!("{}t{b_if}", self.tag);
        sh(&[
            "ip", "link", "add", &tmp_a, "type", "veth", "peer", "name", &tmp_b,
        ]);
        for (tmp, ns, ifname, ll) in [(&tmp_a, a, a_if, a_ll), (&tmp_b, b, b_if, b_ll)] {
            sh(&["ip", "link", "set", tmp, "netns", ns]);
            ip(ns, &["link", "set", tmp, "name", ifname]);
            ip(ns, &["link", "set", ifname, "addrgenmode", "none"]);
            ip(
                ns,
                &[
                    "-6",
                    "addr",
                    "add",
                    &format!("{ll}/64"),
                    "dev",
                    ifname,
                    "nodad",
                ],
            );
            ip(ns, &["link", "set", ifname, "up"]);
        }
    }

    /// A kernel route for `prefix` (what babeld redistributes): on `lo`,
    /// as the dummy module may be missing.
    fn local_prefix(&self, ns: &str, prefix: &str) {
        let family = if prefix.contains(':') { "-6" } else { "-4" };
        ip(
            ns,
            &[family, "route", "add", prefix, "dev", "lo", "proto", "44"],
        );
    }

    /// Starts babeld in `ns` on `ifaces` (`type tunnel`, Hello every
    /// second), announcing `prefix`.
    fn babeld(&mut self, ns: &str, ifaces: &[&str], prefix: &str) -> PathBuf {
        let conf = "default type tunnel hello-interval 1 update-interval 4 enable-timestamps true";
        self.babeld_with(ns, ifaces, &[prefix], conf)
    }

    /// Starts babeld in `ns` on `ifaces` with the interface defaults
    /// `defaults`, redistributing the kernel routes to `prefixes` that
    /// `local_prefix` added (IPv6 /64s, IPv4 /24s).
    fn babeld_with(
        &mut self,
        ns: &str,
        ifaces: &[&str],
        prefixes: &[&str],
        defaults: &str,
    ) -> PathBuf {
        let sock = self.dir.join(format!("babeld-{ns}.sock"));
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            ns.into(),
            "babeld".into(),
            "-I".into(),
            self.dir
                .join(format!("babeld-{ns}.pid"))
                .display()
                .to_string(),
            "-S".into(),
            self.dir
                .join(format!("babeld-{ns}.state"))
                .display()
                .to_string(),
            "-g".into(),
            sock.display().to_string(),
            "-c".into(),
            "/dev/null".into(),
        ];
        let mut conf = vec![defaults.to_string()];
        for p in prefixes {
            let plen = if p.contains(':') { 64 } else { 24 };
            conf.push(format!("redistribute proto 44 ip {p} eq {plen} allow"));
        }
        conf.push("redistribute local deny".to_string());
        conf.push("redistribute deny".to_string());
        for c in conf {
            args.push("-C".into());
            args.push(c);
        }
        args.extend(ifaces.iter().map(|s| s.to_string()));
        let log = fs::File::create(self.dir.join(format!("babeld-{ns}.log"))).unwrap();
        let child = Command::new("ip")
            .args(&args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning babeld");
        self.children.push((format!("babeld-{ns}"), child));
        sock
    }

    /// Starts our engine in `ns` on `ifname`, announcing `prefix`; returns
    /// the state file it keeps up to date.
    fn ours(&mut self, ns: &str, ifname: &str, ll: &str, prefix: &str, id: u8) -> Ours {
        let driver = Driver {
            prefixes: &[prefix],
            id,
            ..Driver::default()
        };
        self.ours_with(ns, ifname, ll, &driver)
    }

    /// `ours`, with the prefixes, Hello interval and starting seqno of
    /// `driver`.
    fn ours_with(&mut self, ns: &str, ifname: &str, ll: &str, driver: &Driver) -> Ours {
        let Driver {
            prefixes,
            id,
            hello_ms,
            seqno,
            check_origins,
        } = driver;
        let state = self.dir.join(format!("ours-{ns}.json"));
        let stop = self.dir.join(format!("ours-{ns}.stop"));
        let exe = std::env::current_exe().unwrap();
        let log = fs::File::create(self.dir.join(format!("ours-{ns}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(exe)
            .args(["driver_process", "--exact", "--ignored", "--nocapture"])
            .env("RE6ST_INTEROP_IFACE", ifname)
            .env("RE6ST_INTEROP_LL", ll)
            .env("RE6ST_INTEROP_PREFIX", prefixes.join(","))
            .env("RE6ST_INTEROP_ID", id.to_string())
            .env("RE6ST_INTEROP_HELLO_MS", hello_ms.to_string())
            .env("RE6ST_INTEROP_SEQNO", seqno.to_string())
            .env(
                "RE6ST_INTEROP_CHECK",
                if *check_origins { "1" } else { "0" },
            )
            .env("RE6ST_INTEROP_STATE", &state)
            .env("RE6ST_INTEROP_STOP", &stop)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning our driver");
        self.children.push((format!("ours-{ns}"), child));
        Ours { state, stop }
    }

    /// Sends SIGTERM to a child (babeld then retracts its routes).
    fn terminate(&mut self, name: &str) {
        if let Some((_, c)) = self.children.iter_mut().find(|(n, _)| n == name) {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
        }
    }

    fn dump_logs(&self) {
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    let text = fs::read_to_string(&p).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    eprintln!("---- {} (last lines)", p.display());
                    for l in tail.into_iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for (_, c) in self.children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// What our driver runs with.
struct Driver<'a> {
    /// The prefixes it originates (IPv6 or IPv4).
    prefixes: &'a [&'a str],
    /// The last byte of its router-id.
    id: u8,
    /// Hello interval; IHUs every 3, full dumps every 4.
    hello_ms: u64,
    /// Its seqno at start.
    seqno: u16,
    /// Whether it checks route origins ([`Drivers`]) and proves its own.
    check_origins: bool,
}

impl Default for Driver<'_> {
    fn default() -> Self {
        Driver {
            prefixes: &[],
            id: 1,
            hello_ms: 1000,
            seqno: 1,
            check_origins: false,
        }
    }
}

struct Ours {
    state: PathBuf,
    stop: PathBuf,
}

impl Ours {
    fn state(&self) -> serde_json::Value {
        fs::read(&self.state)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    fn has_route(&self, prefix: &str) -> bool {
        self.state()["fib"]
            .as_array()
            .is_some_and(|f| f.iter().any(|e| e["prefix"] == prefix))
    }

    fn stop(&self) {
        fs::write(&self.stop, b"stop").unwrap();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(ns: &str, args: &[&str]) {
    let mut v = vec!["ip", "-n", ns];
    v.extend_from_slice(args);
    sh(&v);
}

/// The kernel routes of `ns`, IPv6 then IPv4.
fn kernel_routes(ns: &str) -> String {
    let mut routes = String::new();
    for family in ["-6", "-4"] {
        let out = Command::new("ip")
            .args(["-n", ns, family, "route", "show"])
            .output()
            .unwrap();
        routes.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    routes
}

/// babeld's local interface: one `dump`.
fn babeld_dump(sock: &Path) -> String {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Banner up to "ok", then the dump up to "ok".
    let _ = s.write_all(b"dump\n");
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if String::from_utf8_lossy(&out).matches("\nok\n").count() >= 2 {
            break;
        }
    }
    let _ = s.write_all(b"quit\n");
    String::from_utf8_lossy(&out).into_owned()
}

fn wait_for(what: &str, max: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < max {
        if f() {
            println!("{what}: {:.2} s", t0.elapsed().as_secs_f64());
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {max:?} waiting for: {what}");
}

/// Root, iproute2 with netns, and babeld (installed with apt when missing).
fn prerequisites() -> bool {
    let uid = Command::new("id").arg("-u").output().ok();
    if uid.is_none_or(|o| String::from_utf8_lossy(&o.stdout).trim() != "0") {
        println!("SKIPPED interop_babeld: needs root to create network namespaces");
        return false;
    }
    if Command::new("babeld").arg("-V").output().is_err() {
        println!("interop_babeld: babeld missing, installing it with apt-get");
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", "babeld"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "could not install babeld (scripts/install-deps lists it)"
        );
    }
    true
}

// ---------------------------------------------------------------- tests

#[test]
fn ours_and_babeld_exchange_routes_rtt_and_retractions() {
    if !prerequisites() {
        return;
    }
    let mut lab = Lab::new("p");
    let a = lab.ns("a");
    let b = lab.ns("b");
    lab.veth(&a, "va", "fe80::a", &b, "vb", "fe80::b");
    lab.local_prefix(&b, "fd00:b::/64");
    let ours = lab.ours(&a, "va", "fe80::a", "fd00:a::/64", 1);
    let sock = lab.babeld(&b, &["vb"], "fd00:b::/64");

    // Each side installs the other's prefix.
    wait_for(
        "babeld installed our fd00:a::/64",
        Duration::from_secs(30),
        || {
            kernel_routes(&b)
                .lines()
                .any(|l| l.starts_with("fd00:a::/64 via fe80::a dev vb proto babel"))
        },
    );
    wait_for(
        "we selected babeld's fd00:b::/64",
        Duration::from_secs(30),
        || ours.has_route("fd00:b::/64"),
    );
    let st = ours.state();
    let fib = st["fib"].as_array().unwrap();
    let e = fib.iter().find(|e| e["prefix"] == "fd00:b::/64").unwrap();
    assert_eq!(e["next_hop"], "fe80::b");

    // RTT timestamps both ways: we hold an RTT for babeld, babeld for us.
    wait_for(
        "we have an RTT sample for babeld",
        Duration::from_secs(20),
        || {
            ours.state()["neighbours"].as_array().is_some_and(|n| {
                n.iter()
                    .any(|n| n["address"] == "fe80::b" && !n["rtt"].is_null())
            })
        },
    );
    wait_for("babeld has an RTT for us", Duration::from_secs(20), || {
        babeld_dump(&sock)
            .lines()
            .any(|l| l.contains("neighbour") && l.contains("fe80::a") && l.contains(" rtt "))
    });
    let dump = babeld_dump(&sock);
    println!(
        "babeld sees us: {}",
        dump.lines()
            .find(|l| l.contains("neighbour") && l.contains("fe80::a"))
            .unwrap_or("")
    );
    println!("we see babeld: {}", ours.state()["neighbours"]);

    // babeld stops: its prefix is retracted from our table.
    lab.terminate(&format!("babeld-{b}"));
    wait_for(
        "babeld's retraction reached us",
        Duration::from_secs(10),
        || !ours.has_route("fd00:b::/64"),
    );

    wait_for(
        "babeld flushed its kernel routes",
        Duration::from_secs(10),
        || !kernel_routes(&b).contains("proto babel"),
    );

    // Restart babeld, then stop ours: our prefix leaves babeld's kernel table.
    let _ = lab.babeld(&b, &["vb"], "fd00:b::/64");
    wait_for(
        "babeld (restarted) installed our prefix",
        Duration::from_secs(30),
        || kernel_routes(&b).contains("fd00:a::/64 via fe80::a"),
    );
    ours.stop();
    wait_for(
        "our retraction reached babeld",
        Duration::from_secs(10),
        || !kernel_routes(&b).contains("fd00:a::/64 via"),
    );
}

#[test]
fn chain_ours_babeld_ours() {
    if !prerequisites() {
        return;
    }
    let mut lab = Lab::new("c");
    let a = lab.ns("a");
    let b = lab.ns("b");
    let c = lab.ns("c");
    lab.veth(&a, "va", "fe80::a", &b, "vb1", "fe80::b1");
    lab.veth(&c, "vc", "fe80::c", &b, "vb2", "fe80::b2");
    lab.local_prefix(&b, "fd00:b::/64");
    let oa = lab.ours(&a, "va", "fe80::a", "fd00:a::/64", 1);
    let oc = lab.ours(&c, "vc", "fe80::c", "fd00:c::/64", 3);
    let _sock = lab.babeld(&b, &["vb1", "vb2"], "fd00:b::/64");

    wait_for(
        "A reaches C's prefix through babeld",
        Duration::from_secs(40),
        || oa.has_route("fd00:c::/64"),
    );
    wait_for(
        "C reaches A's prefix through babeld",
        Duration::from_secs(40),
        || oc.has_route("fd00:a::/64"),
    );
    let st = oa.state();
    let r = st["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["prefix"] == "fd00:c::/64" && r["selected"] == true)
        .cloned()
        .unwrap();
    // Two hops: babeld's metric for C's prefix (96 + RTT penalty) plus ours.
    assert!(r["refmetric"].as_u64().unwrap() >= 96, "{r}");
    assert!(
        r["metric"].as_u64().unwrap() > r["refmetric"].as_u64().unwrap(),
        "{r}"
    );
    assert_eq!(r["neighbour"], "fe80::b1");
    let routes_b = kernel_routes(&b);
    assert!(
        routes_b.contains("fd00:a::/64 via fe80::a dev vb1 proto babel"),
        "{routes_b}"
    );
    assert!(
        routes_b.contains("fd00:c::/64 via fe80::c dev vb2 proto babel"),
        "{routes_b}"
    );

    // C stops: its retraction crosses babeld and reaches A.
    oc.stop();
    wait_for(
        "C's retraction reached A through babeld",
        Duration::from_secs(15),
        || !oa.has_route("fd00:c::/64"),
    );
}

/// babeld's interface types, split horizon on and off, against one engine
/// each: (name, babeld interface defaults, whether babeld echoes our routes
/// back to us). babeld's split horizon is on by default for `wired` only.
const SEQNO_CONFIGS: [(&str, &str, bool); 5] = [
    ("wired", "type wired", false),
    (
        "wired, split horizon off",
        "type wired split-horizon false",
        true,
    ),
    ("wireless", "type wireless", true),
    ("tunnel", "type tunnel", true),
    (
        "tunnel, split horizon on",
        "type tunnel split-horizon true",
        false,
    ),
];

/// Steady state, measured in real time: babeld and we send Hellos every
/// 0.5 s and full dumps every 2 s, so this spans 10 dumps and 40 Hellos
/// each way (60 s of babeld's defaults span under 4 dumps). The five
/// configurations run side by side, so the test costs the window once.
const STEADY: Duration = Duration::from_secs(20);

#[test]
fn seqno_stays_put_against_babeld() {
    if !prerequisites() {
        return;
    }
    let mut lab = Lab::new("s");
    let mut pairs = Vec::new();
    for (k, (name, conf, echoes)) in SEQNO_CONFIGS.iter().enumerate() {
        let a = lab.ns(&format!("a{k}"));
        let b = lab.ns(&format!("b{k}"));
        lab.veth(&a, "va", "fe80::a", &b, "vb", "fe80::b");
        let (ours_p, theirs_p) = (format!("fd00:a{k}::/64"), format!("fd00:b{k}::/64"));
        lab.local_prefix(&b, &theirs_p);
        let driver = Driver {
            prefixes: &[&ours_p],
            hello_ms: 500,
            ..Driver::default()
        };
        let ours = lab.ours_with(&a, "va", "fe80::a", &driver);
        let defaults =
            format!("default {conf} hello-interval 0.5 update-interval 2 enable-timestamps true");
        lab.babeld_with(&b, &["vb"], &[&theirs_p], &defaults);
        pairs.push((*name, *echoes, b, ours, ours_p, theirs_p));
    }
    for (name, _, b, ours, ours_p, theirs_p) in &pairs {
        wait_for(
            &format!("{name}: routes both ways"),
            Duration::from_secs(30),
            || {
                ours.has_route(theirs_p)
                    && kernel_routes(b).contains(&format!("{ours_p} via fe80::a"))
            },
        );
    }
    // Let a few full dumps go by (the first ones carry the start-up churn).
    std::thread::sleep(Duration::from_secs(3));
    let seen = |ours: &Ours, theirs_p: &str| {
        let st = ours.state();
        let theirs = st["routes"]
            .as_array()
            .and_then(|r| {
                r.iter()
                    .find(|r| r["prefix"] == theirs_p && r["selected"] == true)
            })
            .map(|r| r["seqno"].clone());
        (
            st["seqno"].clone(),
            theirs,
            st["counters"]["own_router_id"].clone(),
        )
    };
    let before: Vec<_> = pairs.iter().map(|p| seen(&p.3, &p.5)).collect();
    std::thread::sleep(STEADY);
    let mut failures = Vec::new();
    for (p, (seqno, theirs, echoes)) in pairs.iter().zip(&before) {
        let (name, babeld_echoes, _, ours, _, theirs_p) = p;
        let (seqno2, theirs2, echoes2) = seen(ours, theirs_p);
        let echoed = echoes2.as_u64().unwrap_or(0) - echoes.as_u64().unwrap_or(0);
        println!(
            "babeld {name}: our seqno {seqno} -> {seqno2}, babeld's {} -> {}, \
             {echoed} echoes of our route in {STEADY:?}",
            theirs.clone().unwrap_or_default(),
            theirs2.clone().unwrap_or_default()
        );
        if *seqno != seqno2 || *theirs != theirs2 || theirs2.is_none() {
            failures.push(format!("{name}: seqnos moved or route lost"));
        }
        // The configuration did what it says: babeld echoes our route
        // back exactly when its split horizon is off.
        if (echoed > 0) != *babeld_echoes {
            failures.push(format!("{name}: {echoed} echoes"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn ipv4_via_ipv6_routes_with_babeld() {
    if !prerequisites() {
        return;
    }
    let mut lab = Lab::new("v");
    let a = lab.ns("a");
    let b = lab.ns("b");
    // No IPv4 address anywhere: babeld can only announce its IPv4 prefix
    // as v4-via-v6 (RFC 9229, AE 4), and we only that way.
    lab.veth(&a, "va", "fe80::a", &b, "vb", "fe80::b");
    lab.local_prefix(&b, "fd00:b::/64");
    lab.local_prefix(&b, "10.66.2.0/24");
    let driver = Driver {
        prefixes: &["fd00:a::/64", "10.66.1.0/24"],
        ..Driver::default()
    };
    let ours = lab.ours_with(&a, "va", "fe80::a", &driver);
    let defaults = "default type tunnel hello-interval 1 update-interval 4 v4-via-v6 true";
    lab.babeld_with(&b, &["vb"], &["fd00:b::/64", "10.66.2.0/24"], defaults);

    wait_for(
        "babeld installed our 10.66.1.0/24 via our link-local address",
        Duration::from_secs(30),
        || {
            kernel_routes(&b)
                .lines()
                .any(|l| l.starts_with("10.66.1.0/24 via inet6 fe80::a dev vb proto babel"))
        },
    );
    wait_for(
        "we selected babeld's 10.66.2.0/24",
        Duration::from_secs(30),
        || ours.has_route("10.66.2.0/24"),
    );
    let st = ours.state();
    let e = st["fib"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["prefix"] == "10.66.2.0/24")
        .cloned()
        .unwrap();
    // An IPv6 next hop: babeld sent AE 4, whose next hop is the sender.
    assert_eq!(e["next_hop"], "fe80::b", "{e}");
    assert!(ours.has_route("fd00:b::/64"));
    println!("babeld's IPv4 prefix in our FIB: {e}");
    println!("babeld's kernel: {}", kernel_routes(&b).trim());

    // Our retraction of the IPv4 prefix reaches babeld too.
    ours.stop();
    wait_for(
        "our IPv4 retraction reached babeld",
        Duration::from_secs(10),
        || !kernel_routes(&b).contains("10.66.1.0/24 via"),
    );
}

#[test]
fn seqno_lost_is_caught_up_from_babelds_echo() {
    if !prerequisites() {
        return;
    }
    // babeld sends no catch-up hint, but with split horizon off (its
    // default on tunnels) its full dumps echo our route back to us, seqno
    // included, and that is enough.
    let mut lab = Lab::new("l");
    let a = lab.ns("a");
    let b = lab.ns("b");
    lab.veth(&a, "va", "fe80::a", &b, "vb", "fe80::b");
    lab.local_prefix(&b, "fd00:b::/64");
    let defaults = "default type tunnel hello-interval 0.5 update-interval 2";
    lab.babeld_with(&b, &["vb"], &["fd00:b::/64"], defaults);
    let before = Driver {
        prefixes: &["fd00:a::/64"],
        hello_ms: 500,
        seqno: 1000,
        ..Driver::default()
    };
    let ours = lab.ours_with(&a, "va", "fe80::a", &before);
    wait_for(
        "babeld installed our prefix",
        Duration::from_secs(30),
        || kernel_routes(&b).contains("fd00:a::/64 via fe80::a"),
    );
    wait_for(
        "our driver reports seqno 1000",
        Duration::from_secs(5),
        || ours.state()["seqno"] == 1000,
    );
    // A crash (no retraction), then a restart that lost the seqno.
    lab.terminate(&format!("ours-{a}"));
    let restarted = Driver {
        seqno: 900,
        ..before
    };
    let ours2 = lab.ours_with(&a, "va", "fe80::a", &restarted);
    let caught_up = wait_for(
        "we caught up past seqno 1000 from babeld's echo",
        Duration::from_secs(20),
        || ours2.state()["seqno"].as_u64().is_some_and(|s| s > 1000),
    );
    let st = ours2.state();
    println!(
        "restarted at 900: seqno {} after {caught_up:?}, counters {}",
        st["seqno"], st["counters"]
    );
    assert_eq!(st["counters"]["seqno_catch_ups"], 1);
    wait_for("routes both ways again", Duration::from_secs(10), || {
        ours2.has_route("fd00:b::/64") && kernel_routes(&b).contains("fd00:a::/64 via fe80::a")
    });
}

#[test]
fn origin_checks_against_babeld() {
    if !prerequisites() {
        return;
    }
    let mut lab = Lab::new("o");
    let a = lab.ns("a");
    let b = lab.ns("b");
    lab.veth(&a, "va", "fe80::a", &b, "vb", "fe80::b");
    lab.local_prefix(&b, "fd00:b::/64");
    let checking = Driver {
        prefixes: &["fd00:a::/64"],
        check_origins: true,
        ..Driver::default()
    };
    let ours = lab.ours_with(&a, "va", "fe80::a", &checking);
    let _sock = lab.babeld(&b, &["vb"], "fd00:b::/64");

    // babeld skips the Origin Proof sub-TLV (not mandatory) and installs
    // our route.
    wait_for(
        "babeld installed our proved fd00:a::/64",
        Duration::from_secs(30),
        || kernel_routes(&b).contains("fd00:a::/64 via fe80::a dev vb proto babel"),
    );
    // babeld's route proves no origin we know: refused and counted, over
    // several of its dumps (every 4 s).
    wait_for(
        "babeld's updates refused as of an unknown origin",
        Duration::from_secs(20),
        || {
            ours.state()["counters"]["origin"]["unknown_origin"]
                .as_u64()
                .is_some_and(|n| n >= 3)
        },
    );
    let st = ours.state();
    assert!(!ours.has_route("fd00:b::/64"), "{}", st["fib"]);
    assert!(
        st["counters"]["origin"]["proofs_sent"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{}",
        st["counters"]
    );
    // The neighbourship itself is plain Babel: it holds, with RTTs.
    assert!(
        st["neighbours"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["address"] == "fe80::b")),
        "{}",
        st["neighbours"]
    );
}

// ---------------------------------------------------------------- the driver

/// The origin policy of the drivers that check origins: only drivers'
/// router-ids (`2:0:0:0:0:0:ee:ID`) are known, each may originate any
/// prefix of fd00::/16, and its "proof" of a claim is
/// `[0x5a, ID, seqno_hi, seqno_lo]` (the test needs a policy the engine
/// runs, not cryptography).
#[derive(Debug, Default)]
struct Drivers;

fn driver_proof(c: &Claim) -> OriginProof {
    let [hi, lo] = c.seqno.to_be_bytes();
    OriginProof::new(&[0x5a, c.router_id.0[7], hi, lo]).unwrap()
}

impl OriginAuth for Drivers {
    fn check(&mut self, c: &Claim, proof: Option<&OriginProof>, _: Sender, _: Instant) -> Verdict {
        if c.router_id.0[..7] != [2, 0, 0, 0, 0, 0, 0xee] {
            return Verdict::Rejected(Rejection::UnknownOrigin);
        }
        if !self.holds(c, Instant::now()) {
            return Verdict::Rejected(Rejection::NotAuthorised);
        }
        match proof {
            None => Verdict::NeedProof,
            Some(p) if *p == driver_proof(c) => Verdict::Valid,
            Some(_) => Verdict::Rejected(Rejection::BadProof),
        }
    }

    fn holds(&mut self, c: &Claim, _: Instant) -> bool {
        "fd00::/16"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&c.prefix)
    }

    fn proof(&mut self, c: &Claim, _: Instant) -> Option<OriginProof> {
        Some(driver_proof(c))
    }
}

/// Not a test: the engine driver run by the tests above inside a namespace
/// (a std UDP socket on port 6696, multicast ff02::1:6). Does nothing when
/// run directly.
#[test]
#[ignore = "driver process for the interop tests, started by them"]
fn driver_process() {
    let Ok(ifname) = std::env::var("RE6ST_INTEROP_IFACE") else {
        return;
    };
    let env = |k: &str| std::env::var(k).unwrap();
    let ll: Ipv6Addr = env("RE6ST_INTEROP_LL").parse().unwrap();
    let prefixes: Vec<ipnet::IpNet> = env("RE6ST_INTEROP_PREFIX")
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    let id: u8 = env("RE6ST_INTEROP_ID").parse().unwrap();
    let hello = Duration::from_millis(env("RE6ST_INTEROP_HELLO_MS").parse().unwrap());
    let seqno: u16 = env("RE6ST_INTEROP_SEQNO").parse().unwrap();
    let state = PathBuf::from(env("RE6ST_INTEROP_STATE"));
    let stop = PathBuf::from(env("RE6ST_INTEROP_STOP"));
    let ifindex: u32 = fs::read_to_string(format!("/sys/class/net/{ifname}/ifindex"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let sock = UdpSocket::bind("[::]:6696").unwrap();
    sock.join_multicast_v6(&GROUP, ifindex).unwrap();
    sock.set_multicast_loop_v6(false).unwrap();

    let config = Config {
        hello_interval: hello,
        ihu_interval: hello * 3,
        update_interval: hello * 4,
        ..Config::default()
    };
    let t0 = Instant::now();
    let rid = RouterId([2, 0, 0, 0, 0, 0, 0xee, id]);
    let run = Run {
        sock,
        ifindex,
        ll,
        state,
        stop,
        prefixes,
        t0,
    };
    if env("RE6ST_INTEROP_CHECK") == "1" {
        run.drive(Engine::with_origin_auth(Drivers, config, rid, seqno, t0).unwrap());
    } else {
        run.drive(Engine::new(config, rid, seqno, t0).unwrap());
    }
}

/// What the driver runs with.
struct Run {
    sock: UdpSocket,
    ifindex: u32,
    ll: Ipv6Addr,
    state: PathBuf,
    stop: PathBuf,
    prefixes: Vec<ipnet::IpNet>,
    t0: Instant,
}

impl Run {
    fn drive<A: OriginAuth>(self, mut e: Engine<A>) {
        let Run {
            sock,
            ifindex,
            ll,
            state,
            stop,
            prefixes,
            t0,
        } = self;
        for p in prefixes {
            e.add_xroute(p, 0, t0).unwrap();
        }
        let iface = IfaceId(ifindex);
        e.add_interface(
            iface,
            InterfaceKind::Lan {
                address: IpAddr::V6(ll),
            },
            1400,
            t0,
        )
        .unwrap();

        let send = |e: &mut Engine<A>, now: Instant| {
            while let Some(t) = e.poll_transmit(now) {
                let dst = match t.dst {
                    Some(IpAddr::V6(a)) => a,
                    _ => GROUP,
                };
                let _ = sock.send_to(&t.bytes, SocketAddrV6::new(dst, 6696, 0, ifindex));
            }
            while e.poll_event().is_some() {}
        };
        let mut buf = vec![0u8; 65536];
        let mut last_state = t0;
        loop {
            let now = Instant::now();
            if e.poll_timeout().is_some_and(|t| t <= now) {
                e.handle_timeout(now);
            }
            send(&mut e, now);
            if now - last_state > Duration::from_millis(200) {
                last_state = now;
                let doc = serde_json::json!({
                    "seqno": e.seqno(),
                    "fib": e.fib(),
                    "routes": e.routes(now),
                    "neighbours": e.neighbours(),
                    "counters": e.counters(),
                });
                let tmp = state.with_extension("tmp");
                fs::write(&tmp, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
                fs::rename(&tmp, &state).unwrap();
            }
            if stop.exists() {
                e.retract_all(now);
                send(&mut e, now);
                std::thread::sleep(Duration::from_millis(200));
                println!("driver: stopped, counters {:?}", e.counters());
                return;
            }
            let wait = e
                .poll_timeout()
                .map_or(Duration::from_millis(100), |t| {
                    t.saturating_duration_since(now)
                })
                .clamp(Duration::from_millis(1), Duration::from_millis(100));
            sock.set_read_timeout(Some(wait)).unwrap();
            if let Ok((n, SocketAddr::V6(from))) = sock.recv_from(&mut buf)
                && *from.ip() != ll
            {
                e.handle_packet(iface, IpAddr::V6(*from.ip()), &buf[..n], Instant::now());
            }
        }
    }
}
