//! The child processes of the TUN tests: open a device one way, then run
//! the dataplane on it until stdin closes.

use std::io::{Read, Write};
use std::net::Ipv6Addr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ipnet::Ipv6Net;
use re6st_dataplane::fib::{Fib, Route};
use re6st_dataplane::forward::{Action, ForwardConfig, ForwardStats, Forwarder, Ingress};
use re6st_dataplane::icmp::MAX_ERROR_LEN;
use re6st_dataplane::nexthop::NextHopId;
use re6st_dataplane::packet::icmpv6::{Icmpv6Packet, Icmpv6Repr};
use re6st_dataplane::packet::ipv6::{self, Ipv6Packet, Ipv6Repr};
use re6st_dataplane::tun::{
    CreateConfig, RecvBatch, SendBatch, Tun, TunError, TunOptions, TunSource,
};

use super::{DEV, HOST, NOBODY, OVERLAY_MTU, PEER, ROUTER};

/// Runs the mode named by `RE6ST_TUN_HELPER`, if set.
pub(crate) fn run_mode() {
    let Ok(mode) = std::env::var("RE6ST_TUN_HELPER") else {
        return;
    };
    match mode.as_str() {
        "create" => {
            let rt = runtime();
            let options = TunOptions {
                offload: true,
                multi_queue: true,
            };
            let tun = rt.block_on(async {
                let config = CreateConfig {
                    name: DEV.into(),
                    address: Some(format!("{HOST}/64").parse().unwrap()),
                    mtu: 1400,
                };
                Tun::open(TunSource::Create(config), options).unwrap()
            });
            let second = rt.block_on(async { tun.clone_queue() }).unwrap();
            assert!(second.offload());
            // Even root does not attach to (create) a missing device.
            let missing = rt.block_on(async {
                let source = TunSource::Attach {
                    name: "re6st-none".into(),
                };
                error_name(Tun::open(source, TunOptions::default()).unwrap_err())
            });
            let offload = tun.offload();
            serve(
                &rt,
                vec![tun, second],
                format!("offload={offload} missing={missing}"),
            );
        }
        "attach" => {
            let ids = identity();
            let rt = runtime();
            let create = rt.block_on(async {
                let config = CreateConfig {
                    name: "re6st-new".into(),
                    address: None,
                    mtu: 1400,
                };
                error_name(Tun::open(TunSource::Create(config), TunOptions::default()).unwrap_err())
            });
            let missing = rt.block_on(async {
                let source = TunSource::Attach {
                    name: "re6st-none".into(),
                };
                error_name(Tun::open(source, TunOptions::default()).unwrap_err())
            });
            let tun = rt
                .block_on(async {
                    Tun::open(
                        TunSource::Attach { name: DEV.into() },
                        TunOptions::default(),
                    )
                })
                .unwrap_or_else(|e| panic!("attach failed: {e}"));
            let offload = tun.offload();
            serve(
                &rt,
                vec![tun],
                format!("{ids} create={create} missing={missing} offload={offload}"),
            );
        }
        "fd-parent" => {
            // Root: create and configure a device, then hand its fd to an
            // unprivileged process image.
            let dev = tun_rs::DeviceBuilder::new()
                .name(DEV)
                .ipv6(HOST.parse::<Ipv6Addr>().unwrap(), 64)
                .mtu(1400)
                .build_sync()
                .unwrap();
            let fd = dev.into_raw_fd();
            // SAFETY: fd is open and ours; clearing FD_CLOEXEC lets it
            // survive the exec below.
            unsafe {
                assert_eq!(libc::fcntl(fd, libc::F_SETFD, 0), 0);
            }
            let dir = PathBuf::from(std::env::var("RE6ST_TUN_HELPER_DIR").unwrap());
            let err = Command::new("setpriv")
                .args([
                    &format!("--reuid={NOBODY}"),
                    &format!("--regid={NOBODY}"),
                    "--clear-groups",
                    "--inh-caps=-all",
                    "--bounding-set=-all",
                ])
                .arg(dir.join("helper"))
                .args(["--exact", "helper", "--ignored", "--nocapture"])
                .env("RE6ST_TUN_HELPER", "fd-child")
                .env("RE6ST_TUN_FD", fd.to_string())
                .exec();
            panic!("exec failed: {err}");
        }
        "fd-child" => {
            let ids = identity();
            let fd: i32 = std::env::var("RE6ST_TUN_FD").unwrap().parse().unwrap();
            let rt = runtime();
            // SAFETY: the parent passed this open fd to us and nothing else
            // in this process uses it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let tun = rt
                .block_on(async { Tun::open(TunSource::Fd(owned), TunOptions::default()) })
                .unwrap_or_else(|e| panic!("adopting fd {fd} failed: {e}"));
            assert!(!tun.offload(), "adopted fds have no offload");
            serve(&rt, vec![tun], format!("{ids} adopted fd={fd}"));
        }
        "bridge" => {
            let other = std::env::var("RE6ST_TUN_OTHER_NS").unwrap();
            let rt = runtime();
            let open = |name: &str, net: &str| {
                let config = CreateConfig {
                    name: name.into(),
                    address: Some(net.parse().unwrap()),
                    mtu: 1400,
                };
                rt.block_on(async { Tun::open(TunSource::Create(config), TunOptions::default()) })
                    .unwrap_or_else(|e| panic!("creating {name}: {e}"))
            };
            let a = open("re6st-a", "fd00:a::1/64");
            enter_netns(&other);
            let b = open("re6st-b", "fd00:b::1/64");
            let ready = format!("offload={} {}", a.offload(), b.offload());
            bridge(&rt, a, b, ready);
        }
        other => panic!("unknown helper mode {other}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn error_name(e: TunError) -> &'static str {
    match e {
        TunError::CreatePermission { .. } => "CreatePermission",
        TunError::NotFound { .. } => "NotFound",
        TunError::AttachPermission { .. } => "AttachPermission",
        TunError::NoDriver { .. } => "NoDriver",
        TunError::Busy { .. } => "Busy",
        _ => "Other",
    }
}

/// "uid=N capeff=HEX" of this process.
fn identity() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let capeff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim()
        .to_owned();
    // SAFETY: geteuid has no preconditions.
    format!("uid={} capeff={capeff}", unsafe { libc::geteuid() })
}

/// Runs the dataplane on `tun` until stdin closes: the forwarder decides,
/// next hop 1 is a responder answering echo requests for PEER.
fn serve(rt: &tokio::runtime::Runtime, queues: Vec<Tun>, ready: String) {
    println!("READY {ready}");
    std::io::stdout().flush().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = stop_tx.send(true);
    });
    let report = rt.block_on(async move {
        let n = queues.len();
        let tasks: Vec<_> = queues
            .into_iter()
            .map(|tun| tokio::spawn(serve_queue(tun, stop_rx.clone())))
            .collect();
        let (mut replies, mut errors, mut stats) = (Vec::new(), 0, ForwardStats::default());
        for task in tasks {
            let (r, e, s) = task.await.unwrap();
            replies.push(r);
            errors += e;
            stats.merge(&s);
        }
        let total: u64 = replies.iter().sum();
        format!("queues={n} replies={total} per_queue={replies:?} errors={errors} stats={stats:?}")
    });
    println!("REPORT {report}");
}

/// One packet task: its own forwarder and buffers on one queue, as in a
/// node. Returns (echo replies, I/O errors, counters).
async fn serve_queue(
    tun: Tun,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (u64, u64, ForwardStats) {
    let net = |s: &str| s.parse::<Ipv6Net>().unwrap();
    let fib = Fib::from_routes([
        (net(&format!("{PEER}/128")), Route::Via(NextHopId(1))),
        (net("fd00:5::/64"), Route::Local),
    ]);
    let mut fwd = Forwarder::new(ForwardConfig {
        mtu: OVERLAY_MTU,
        ..ForwardConfig::new(ROUTER.parse().unwrap())
    });
    let mut rx = RecvBatch::new(usize::from(tun.mtu().unwrap_or(1400)), tun.offload());
    let mut tx = SendBatch::new();
    let mut icmp = [0u8; MAX_ERROR_LEN];
    let (mut replies, mut errors) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            _ = tokio::time::sleep_until(deadline.into()) => break,
            n = tun.recv_batch(&mut rx) => match n {
                Ok(n) => n,
                Err(e) => { eprintln!("recv: {e}"); errors += 1; continue; }
            },
        };
        for i in 0..n {
            let packet = rx.packet_mut(i);
            match fwd.handle_packet(&fib, Ingress::Tun, packet, &mut icmp, Instant::now()) {
                Action::Tun(bytes) => tx.push(bytes),
                Action::NextHop(NextHopId(1), bytes) => {
                    if let Some(reply) = echo_reply(bytes) {
                        tx.push(&reply);
                        replies += 1;
                    }
                }
                Action::NextHop(..) | Action::Drop => {}
            }
        }
        if let Err(e) = tun.send_batch(&mut tx).await {
            eprintln!("send: {e}");
            errors += 1;
        }
    }
    (replies, errors, fwd.stats().clone())
}

/// Moves this (single) thread into the named network namespace.
fn enter_netns(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
    // SAFETY: f is an open netns file; setns changes only this thread,
    // the only one of this helper process that opens devices.
    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Forwards between two TUNs until stdin closes: fd00:b::/64 is next hop 1
/// (TUN b), fd00:a::/64 next hop 2 (TUN a).
fn bridge(rt: &tokio::runtime::Runtime, a: Tun, b: Tun, ready: String) {
    println!("READY {ready}");
    std::io::stdout().flush().unwrap();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = stop_tx.send(());
    });
    let report = rt.block_on(async move {
        let net = |s: &str| s.parse::<Ipv6Net>().unwrap();
        let fib = Fib::from_routes([
            (net("fd00:b::/64"), Route::Via(NextHopId(1))),
            (net("fd00:a::/64"), Route::Via(NextHopId(2))),
        ]);
        let mut fwd = Forwarder::new(ForwardConfig {
            mtu: 1400,
            ..ForwardConfig::new("fd00:a::ff".parse().unwrap())
        });
        let tuns = [&a, &b];
        let mut rx = [
            RecvBatch::new(1400, a.offload()),
            RecvBatch::new(1400, b.offload()),
        ];
        let mut tx = [SendBatch::new(), SendBatch::new()];
        let mut icmp = [0u8; MAX_ERROR_LEN];
        let (mut max_batch, mut errors, mut packets) = (0usize, 0u64, 0u64);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let [rx_a, rx_b] = &mut rx;
            let (from, n) = tokio::select! {
                _ = &mut stop_rx => break,
                _ = tokio::time::sleep_until(deadline.into()) => break,
                n = a.recv_batch(rx_a) => (0, n),
                n = b.recv_batch(rx_b) => (1, n),
            };
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("recv: {e}");
                    errors += 1;
                    continue;
                }
            };
            max_batch = max_batch.max(n);
            packets += n as u64;
            for i in 0..n {
                let packet = rx[from].packet_mut(i);
                match fwd.handle_packet(&fib, Ingress::Tun, packet, &mut icmp, Instant::now()) {
                    Action::NextHop(NextHopId(id), bytes) => tx[id as usize % 2].push(bytes),
                    Action::Tun(bytes) => tx[from].push(bytes),
                    Action::Drop => {}
                }
            }
            for (tun, batch) in tuns.iter().zip(tx.iter_mut()) {
                if let Err(e) = tun.send_batch(batch).await {
                    eprintln!("send: {e}");
                    errors += 1;
                }
            }
        }
        format!("max_batch={max_batch} packets={packets} errors={errors}")
    });
    println!("REPORT {report}");
}

/// The reply to an ICMPv6 Echo Request, built with the packet module.
fn echo_reply(request: &[u8]) -> Option<Vec<u8>> {
    let ip = Ipv6Packet::new_checked(request).ok()?;
    let repr = Ipv6Repr::parse(&ip).ok()?;
    if repr.next_header != ipv6::NEXT_HEADER_ICMPV6 {
        return None;
    }
    let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
    let Icmpv6Repr::EchoRequest {
        ident,
        seq_no,
        data,
    } = Icmpv6Repr::parse(&repr.src_addr, &repr.dst_addr, &icmp).ok()?
    else {
        return None;
    };
    let reply = Icmpv6Repr::EchoReply {
        ident,
        seq_no,
        data,
    };
    let out_repr = Ipv6Repr {
        src_addr: repr.dst_addr,
        dst_addr: repr.src_addr,
        hop_limit: 64,
        payload_len: reply.buffer_len() as u16,
        ..repr
    };
    let mut out = vec![0u8; ipv6::HEADER_LEN + reply.buffer_len()];
    out_repr.emit(&mut Ipv6Packet::new_unchecked(&mut out[..]));
    reply.emit(
        &repr.dst_addr,
        &repr.src_addr,
        &mut Icmpv6Packet::new_unchecked(&mut out[ipv6::HEADER_LEN..]),
    );
    Some(out)
}
