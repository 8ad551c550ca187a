//! All-pairs reachability, sampled on a fixed schedule: every pair once per
//! period, the pairs spread evenly over the period (so the load is a steady
//! trickle, never a burst).
//!
//! As root a probe is a real ICMPv6 Echo Request from one node's namespace
//! to another node's overlay address: through the sender's kernel, its TUN
//! device, the overlay, the receiver's TUN and kernel, and back. One raw
//! socket per namespace (made there with `setns`), one thread for all.
//! On loopback (`--no-tun` nodes, nothing to ping through) a probe asks the
//! sender's control socket whether it has a route to the receiver's
//! prefix: reachability as the routers see it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::mem::MaybeUninit;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use ipnet::{IpNet, Ipv6Net};
use re6st::control::api::{Request, Response};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::analysis::Probe;

/// ICMPv6 Echo Request and Reply.
const ECHO_REQUEST: u8 = 128;
const ECHO_REPLY: u8 = 129;
/// `ICMP6_FILTER` (RFC 3542), at level `IPPROTO_ICMPV6`.
const ICMP6_FILTER: libc::c_int = 1;

/// What the prober needs to know of a node, kept current by the soak.
#[derive(Debug, Clone, Default)]
pub(crate) struct Target {
    /// Overlay address and prefix, when known.
    pub identity: Option<(Ipv6Addr, Ipv6Net)>,
    /// Its process runs and is not frozen (worth sending from).
    pub up: bool,
    /// Its control socket (loopback mode).
    pub socket: PathBuf,
}

/// The targets, shared with the soak's main loop.
pub(crate) type Targets = Arc<Mutex<Vec<Target>>>;

/// What the prober counted itself.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProberStats {
    /// Probes sent.
    pub sent: u64,
    /// Sends the kernel refused (no route from a dead node, full buffer).
    pub send_errors: u64,
    /// Answers that came after the timeout.
    pub late: u64,
    /// Probes not sent because the prober fell behind by more than a
    /// period (the machine was too busy to keep the schedule).
    pub skipped: u64,
    /// Times the prober waited for a socket or its next probe: about one
    /// per probe, so that probing costs little next to the nodes.
    pub wakeups: u64,
}

/// The probing thread; stopped by [`Prober::stop`].
#[derive(Debug)]
pub(crate) struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ProberStats>>,
}

/// Probe `k`'s pair among `n` nodes: by distance first, so that
/// consecutive probes leave from different nodes.
fn pair(k: u64, n: usize) -> (usize, usize) {
    let m = (n * (n - 1)) as u64;
    let slot = (k % m) as usize;
    let src = slot % n;
    let d = 1 + slot / n;
    (src, (src + d) % n)
}

/// When probe `k` is due, from the start.
fn due(k: u64, n: usize, period: Duration) -> Duration {
    let m = (n * (n - 1)) as u64;
    let round = k / m;
    let slot = k % m;
    period * u32::try_from(round).unwrap_or(u32::MAX) + period.mul_f64(slot as f64 / m as f64)
}

impl Prober {
    /// ICMPv6 probes from the namespaces `namespaces` (one per target).
    pub(crate) fn start_icmp(
        namespaces: &[String],
        targets: Targets,
        period: Duration,
        timeout: Duration,
        tx: Sender<Probe>,
        t0: Instant,
    ) -> anyhow::Result<Self> {
        let mut sockets = Vec::new();
        for ns in namespaces {
            sockets.push(icmp_socket_in(ns)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("soak-probe".into())
            .spawn(move || icmp_loop(&sockets, &targets, period, timeout, &tx, t0, &s))
            .context("starting the prober")?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Route probes through the nodes' control sockets.
    pub(crate) fn start_routes(
        targets: Targets,
        period: Duration,
        tx: Sender<Probe>,
        t0: Instant,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("soak-probe".into())
            .spawn(move || route_loop(&targets, period, &tx, t0, &s))
            .context("starting the prober")?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread; what it counted.
    pub(crate) fn stop(mut self) -> ProberStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw ICMPv6 socket in network namespace `ns` (full name) that only
/// receives Echo Replies.
fn icmp_socket_in(ns: &str) -> anyhow::Result<Socket> {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // setns changes only the calling thread, so a short-lived thread makes
    // the socket there; the socket stays in that namespace.
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> anyhow::Result<Socket> {
                enter_netns(&file).with_context(|| format!("entering {ns}"))?;
                let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
                    .context("a raw ICMPv6 socket")?;
                s.set_nonblocking(true)?;
                // Block every type but Echo Reply (a set bit blocks).
                let mut filter = [u32::MAX; 8];
                filter[usize::from(ECHO_REPLY >> 5)] &= !(1 << (ECHO_REPLY & 31));
                // SAFETY: the option value is the 32-byte icmp6_filter.
                let r = unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::IPPROTO_ICMPV6,
                        ICMP6_FILTER,
                        filter.as_ptr().cast(),
                        std::mem::size_of_val(&filter) as libc::socklen_t,
                    )
                };
                if r != 0 {
                    return Err(std::io::Error::last_os_error()).context("ICMP6_FILTER");
                }
                Ok(s)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
    })
}

/// Moves the calling thread into the network namespace open as `file`.
#[cfg(target_os = "linux")]
fn enter_netns(file: &std::fs::File) -> std::io::Result<()> {
    // SAFETY: setns on a namespace fd we hold open; it changes only the
    // calling thread's namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Network namespaces are Linux's: elsewhere the soak cannot run.
#[cfg(not(target_os = "linux"))]
fn enter_netns(_file: &std::fs::File) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "network namespaces need Linux",
    ))
}

/// The Echo Request of probe number `k` (the kernel fills the checksum).
fn echo_request(ident: u16, k: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = ECHO_REQUEST;
    b[4..6].copy_from_slice(&ident.to_be_bytes());
    b[6..8].copy_from_slice(&(k as u16).to_be_bytes());
    b[8..16].copy_from_slice(&k.to_be_bytes());
    b
}

/// The probe number of an Echo Reply to us, if it is one.
fn echo_reply(ident: u16, b: &[u8]) -> Option<u64> {
    if b.len() < 16 || b[0] != ECHO_REPLY || b[1] != 0 || b[4..6] != ident.to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(b[8..16].try_into().ok()?))
}

fn icmp_loop(
    sockets: &[Socket],
    targets: &Targets,
    period: Duration,
    timeout: Duration,
    tx: &Sender<Probe>,
    t0: Instant,
    stop: &AtomicBool,
) -> ProberStats {
    let n = sockets.len();
    let mut stats = ProberStats::default();
    if n < 2 {
        return stats;
    }
    let ident = (std::process::id() & 0xffff) as u16;
    let mut next: u64 = 0;
    let mut pending: HashMap<u64, (usize, usize, Instant)> = HashMap::new();
    let mut order: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd() as RawFd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = [MaybeUninit::<u8>::uninit(); 256];
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        // Send what is due (skipping what is more than a period late).
        let mut snapshot: Option<Vec<Target>> = None;
        while start + due(next, n, period) <= now {
            let late = now - (start + due(next, n, period));
            let k = next;
            next += 1;
            if late > period {
                stats.skipped += 1;
                continue;
            }
            let (src, dst) = pair(k, n);
            let snapshot = snapshot
                .get_or_insert_with(|| targets.lock().map(|t| t.clone()).unwrap_or_default());
            let (Some(s), Some(d)) = (snapshot.get(src), snapshot.get(dst)) else {
                continue;
            };
            let Some((addr, _)) = d.identity else {
                continue;
            };
            if !s.up || s.identity.is_none() {
                continue;
            }
            let to = SockAddr::from(SocketAddrV6::new(addr, 0, 0, 0));
            let sent = Instant::now();
            stats.sent += 1;
            if sockets[src].send_to(&echo_request(ident, k), &to).is_err() {
                stats.send_errors += 1;
            }
            pending.insert(k, (src, dst, sent));
            order.push_back((sent, k));
        }
        // Receive what came, waiting until the next probe is due: to the
        // nanosecond, since probes are often less than a millisecond apart
        // and a wait rounded down to zero milliseconds would spin.
        let wait = (start + due(next, n, period))
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(10));
        stats.wakeups += 1;
        let ready = poll_for(&mut fds, wait);
        if ready > 0 {
            for (i, fd) in fds.iter_mut().enumerate() {
                if fd.revents & libc::POLLIN == 0 {
                    continue;
                }
                fd.revents = 0;
                while let Ok((len, _)) = sockets[i].recv_from(&mut buf) {
                    // SAFETY: recv_from initialised the first `len` bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), len) };
                    let Some(k) = echo_reply(ident, bytes) else {
                        continue;
                    };
                    match pending.remove(&k) {
                        Some((src, dst, sent)) => {
                            let _ = tx.send(Probe {
                                src,
                                dst,
                                sent: sent - t0,
                                rtt: Some(sent.elapsed()),
                            });
                        }
                        None => stats.late += 1,
                    }
                }
            }
        }
        // Expire what timed out.
        let now = Instant::now();
        while let Some(&(sent, k)) = order.front() {
            if sent + timeout > now {
                break;
            }
            order.pop_front();
            if let Some((src, dst, sent)) = pending.remove(&k) {
                let _ = tx.send(Probe {
                    src,
                    dst,
                    sent: sent - t0,
                    rtt: None,
                });
            }
        }
    }
    stats
}

/// Waits up to `wait` for one of `fds` to be readable (`ppoll`, whose
/// timeout has nanoseconds); the number ready, or -1 on an error.
#[cfg(target_os = "linux")]
fn poll_for(fds: &mut [libc::pollfd], wait: Duration) -> libc::c_int {
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: fds is a valid array of pollfd of the given length, ts a
    // valid timespec, and a null signal mask leaves the mask as it is.
    unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    }
}

/// Without `ppoll`: whole milliseconds, rounded up, so that a wait under
/// a millisecond is not zero (which would spin).
#[cfg(not(target_os = "linux"))]
fn poll_for(fds: &mut [libc::pollfd], wait: Duration) -> libc::c_int {
    let ms = libc::c_int::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
    // SAFETY: fds is a valid array of pollfd of the given length.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) }
}

fn route_loop(
    targets: &Targets,
    period: Duration,
    tx: &Sender<Probe>,
    t0: Instant,
    stop: &AtomicBool,
) -> ProberStats {
    let mut stats = ProberStats::default();
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return stats;
    };
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        next += period;
        if next < now {
            stats.skipped += 1;
            next = now + period;
        }
        let snapshot = targets.lock().map(|t| t.clone()).unwrap_or_default();
        for (src, s) in snapshot.iter().enumerate() {
            if !s.up || s.identity.is_none() {
                continue;
            }
            let sent = Instant::now();
            stats.sent += 1;
            let routes = rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(1),
                    re6st::control::query(&s.socket, Request::Routes),
                )
                .await
            });
            let have: HashSet<Ipv6Net> = match routes {
                Ok(Ok(Response::Routes(r))) => r
                    .into_iter()
                    .filter(|r| r.selected && !r.local && r.metric != u16::MAX)
                    .filter_map(|r| match r.prefix {
                        IpNet::V6(p) => Some(p),
                        IpNet::V4(_) => None,
                    })
                    .collect(),
                _ => {
                    stats.send_errors += 1;
                    HashSet::new()
                }
            };
            for (dst, d) in snapshot.iter().enumerate() {
                let Some((_, prefix)) = d.identity else {
                    continue;
                };
                if dst == src {
                    continue;
                }
                let _ = tx.send(Probe {
                    src,
                    dst,
                    sent: sent - t0,
                    rtt: have.contains(&prefix).then(|| sent.elapsed()),
                });
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_once_per_round_spread_over_the_period() {
        let n = 5;
        let m = (n * (n - 1)) as u64;
        let mut seen = HashSet::new();
        for k in 0..m {
            let (s, d) = pair(k, n);
            assert_ne!(s, d);
            assert!(seen.insert((s, d)), "pair {s}-{d} twice");
        }
        assert_eq!(pair(m, n), pair(0, n));
        // Consecutive probes leave from different nodes.
        assert_ne!(pair(0, n).0, pair(1, n).0);
        let p = Duration::from_secs(1);
        assert_eq!(due(0, n, p), Duration::ZERO);
        assert_eq!(due(m, n, p), p);
        assert_eq!(due(m / 2, n, p), p / 2);
    }

    /// Probes less than a millisecond apart must not make the prober spin:
    /// it wakes about once per probe (a wait rounded down to whole
    /// milliseconds woke it thousands of times more).
    #[test]
    fn the_prober_sleeps_between_probes() {
        let n = 40;
        let sockets: Vec<Socket> = (0..n)
            .map(|_| {
                let s = Socket::new(Domain::IPV6, Type::DGRAM, None).expect("a UDP socket");
                s.set_nonblocking(true).expect("non-blocking");
                s
            })
            .collect();
        // No target has an address yet: nothing is sent, the schedule runs.
        let targets: Targets = Arc::new(Mutex::new(vec![Target::default(); n]));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, _rx) = std::sync::mpsc::channel();
        let period = Duration::from_secs(1);
        let t = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                icmp_loop(
                    &sockets,
                    &targets,
                    period,
                    period,
                    &tx,
                    Instant::now(),
                    &stop,
                )
            })
        };
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let stats = t.join().expect("the prober");
        // 1,560 pairs per second: a probe due every 0.64 ms.
        let due = (start.elapsed().as_secs_f64() * (n * (n - 1)) as f64) as u64;
        assert!(
            stats.wakeups <= 2 * due + 50,
            "{} wake-ups for {due} probes due",
            stats.wakeups
        );
    }

    #[test]
    fn echo_round_trip() {
        let req = echo_request(0x1234, 99);
        assert_eq!(req[0], ECHO_REQUEST);
        let mut reply = req;
        reply[0] = ECHO_REPLY;
        assert_eq!(echo_reply(0x1234, &reply), Some(99));
        assert_eq!(echo_reply(0x1235, &reply), None);
        assert_eq!(echo_reply(0x1234, &req), None);
        assert_eq!(echo_reply(0x1234, &reply[..15]), None);
    }
}
