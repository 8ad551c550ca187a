//! The packet loop's UDP socket on a link whose transmissions complete
//! late: a veth pair between two namespaces of a lab, with a token bucket
//! (`tc tbf`) on the sending side, so a datagram's buffer is freed when the
//! bucket lets it go, not during the send.
//!
//! A send must not wake the sending thread again when its buffer is freed
//! (a socket registered for writability would be woken each time), and a
//! send that finds the buffer full must be woken once there is room.

mod realnet_support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use re6st::netns::Lab;
use re6st::transport::socket;
use re6st::transport::udp::UdpIo;
use realnet_support::{enter, lab_or_skip};

const A: &str = "fd00:75::1";
const B: &str = "fd00:75::2";

/// Two namespaces joined by a veth whose `a` side sends through a token
/// bucket of `rate` (namespaces named after `tag`: one per test); `None`
/// (with a message) without root or without the `tbf` queueing
/// discipline.
fn lab(test: &str, tag: &str, rate: &str) -> Option<Lab> {
    let mut lab = lab_or_skip(test, tag)?;
    lab.add_ns("a").expect("namespace a");
    lab.add_ns("b").expect("namespace b");
    lab.veth(
        ("a", "veth0", Some(&format!("{A}/64"))),
        ("b", "veth0", Some(&format!("{B}/64"))),
    )
    .expect("veth");
    let tbf = [
        "tc", "qdisc", "add", "dev", "veth0", "root", "tbf", "rate", rate, "burst", "1600",
        "limit", "8mb",
    ];
    if let Err(e) = lab.exec("a", &tbf) {
        eprintln!("SKIPPED {test}: no token bucket qdisc here ({e:#})");
        return None;
    }
    Some(lab)
}

/// Voluntary context switches of the calling thread so far.
fn voluntary_switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("thread status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches")
}

/// Sends as the packet loop does: again once writable.
async fn send(udp: &mut UdpIo, to: SocketAddr, payload: &[u8]) {
    loop {
        match udp.try_send(to, None, None, None, payload) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::timeout(Duration::from_secs(5), udp.writable())
                    .await
                    .expect("a blocked send was never woken")
                    .expect("writable");
            }
            other => return other.expect("send"),
        }
    }
}

/// Runs `f` on a thread of its own in namespace `ns`, in a current-thread
/// runtime (as the packet loop is).
fn in_ns<T: Send + 'static>(
    ns: String,
    f: impl AsyncFnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        enter(&ns);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f())
    })
}

#[test]
fn a_send_does_not_wake_the_sender_again_when_its_buffer_is_freed() {
    // 1,200-byte datagrams every 20 ms (505 kbit/s of frames) through a
    // 450 kbit/s bucket: each leaves the bucket in the softirq some 20 ms
    // after its send, while the sender sleeps.
    let Some(lab) = lab(
        "a_send_does_not_wake_the_sender_again_when_its_buffer_is_freed",
        "udpwake",
        "450kbit",
    ) else {
        return;
    };
    let (ns_a, ns_b) = (lab.ns("a"), lab.ns("b"));
    let to: SocketAddr = format!("[{B}]:7000").parse().unwrap();
    // A receiver that never reads: its buffer holds the datagrams, and
    // nothing comes back (no port-unreachable errors).
    let (hold_tx, hold_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        enter(&ns_b);
        let s = UdpSocket::bind(to).expect("receiver");
        hold_rx.recv().ok();
        drop(s);
    });
    std::thread::sleep(Duration::from_millis(100));
    const SENDS: u64 = 50;
    let switches = in_ns(ns_a, async move || {
        let from = format!("[{A}]:0").parse().unwrap();
        let mut udp = UdpIo::new(socket::bind(from).expect("bind"), None).expect("UdpIo");
        let payload = [7u8; 1200];
        // The first sends pass at once (the bucket starts full).
        for _ in 0..3 {
            send(&mut udp, to, &payload).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = voluntary_switches();
        for _ in 0..SENDS {
            send(&mut udp, to, &payload).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        voluntary_switches() - before
    })
    .join()
    .expect("sender");
    hold_tx.send(()).ok();
    holder.join().unwrap();
    // About one wake-up per sleep (1.3 measured: the timer's own); a
    // socket registered for writability adds one per datagram the bucket
    // lets go (about 2 per sleep measured).
    assert!(
        switches <= SENDS * 8 / 5,
        "{switches} voluntary context switches for {SENDS} sends and sleeps"
    );
}

#[test]
fn a_blocked_send_is_woken_when_the_buffer_has_room() {
    // 3,000 datagrams of 1,200 bytes as fast as the loop can, through a
    // 40 Mbit/s bucket: the socket's send buffer fills within the first
    // few hundred; every datagram must still arrive, in order.
    let Some(lab) = lab(
        "a_blocked_send_is_woken_when_the_buffer_has_room",
        "udpblock",
        "40mbit",
    ) else {
        return;
    };
    let (ns_a, ns_b) = (lab.ns("a"), lab.ns("b"));
    let to: SocketAddr = format!("[{B}]:7001").parse().unwrap();
    const N: u32 = 3_000;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        enter(&ns_b);
        let s = socket2::Socket::from(socket::bind(to).expect("receiver"));
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let s = UdpSocket::from(s);
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 2048];
        let mut next = 0u32;
        while let Ok(n) = s.recv(&mut buf) {
            assert_eq!(n, 1200);
            let k = u32::from_be_bytes(buf[..4].try_into().unwrap());
            assert_eq!(k, next, "datagrams lost or out of order");
            next += 1;
            if next == N {
                break;
            }
        }
        next
    });
    ready_rx.recv().unwrap();
    let stats = in_ns(ns_a, async move || {
        let from = format!("[{A}]:0").parse().unwrap();
        // A small send buffer (the kernel doubles it): full within a few
        // dozen datagrams.
        let s = socket2::Socket::from(socket::bind(from).expect("bind"));
        s.set_send_buffer_size(32 << 10).expect("SO_SNDBUF");
        let mut udp = UdpIo::new(s.into(), None).expect("UdpIo");
        let mut payload = [0u8; 1200];
        for k in 0..N {
            payload[..4].copy_from_slice(&k.to_be_bytes());
            send(&mut udp, to, &payload).await;
        }
        udp.stats()
    })
    .join()
    .expect("sender");
    let received = receiver.join().expect("receiver");
    assert_eq!(received, N, "{stats:?}");
    assert!(
        stats.send_blocked > 0,
        "the send buffer never filled, the test proves nothing: {stats:?}"
    );
    drop(lab);
}
