//! The tasks of a tunnel: the handshakes (dialling and accepting, up to the
//! `Open`/`Accept` exchange on the control stream), and once it is up, its
//! datagram loop (the packet path) and its control stream reader and
//! writer.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use re6st_babel::engine::IfaceId;
use re6st_dataplane::fragment::Reassembler;
use tokio::sync::mpsc;

use super::core::DialError;
use super::link::TunnelLink;
use super::path::PacketPath;
use super::router::RouterIn;
use crate::transport::control::{self, Control, StreamError, close};
use crate::transport::liveness::{Clock, Sample, Verdict, authenticated};
use crate::transport::{Connected, DialError as TransportDialError, Transport};
use crate::tunnels::policy::{Failure, Refusal, TunnelId};

/// A tunnel whose handshake and control exchange completed.
#[derive(Debug)]
pub(crate) struct Established {
    pub(crate) connected: Connected,
    pub(crate) send: quinn::SendStream,
    pub(crate) recv: quinn::RecvStream,
    /// The peer's CRL number.
    pub(crate) peer_crl: u64,
    /// Our address as the peer saw it (dialler side only).
    pub(crate) observed: Option<SocketAddr>,
}

/// The refusal a close code stands for (the dialler's side).
pub(crate) fn refusal_of(e: &quinn::ConnectionError) -> Option<Refusal> {
    let quinn::ConnectionError::ApplicationClosed(c) = e else {
        return None;
    };
    let code = u32::try_from(c.error_code.into_inner()).ok()?;
    match code {
        close::REFUSED_FULL => {
            // The reason is the refusal's text: "full: T tunnels of at most M".
            let text = String::from_utf8_lossy(&c.reason);
            let mut nums = text
                .split(|ch: char| !ch.is_ascii_digit())
                .filter_map(|s| s.parse::<usize>().ok());
            Some(Refusal::Full {
                tunnels: nums.next().unwrap_or(0),
                max: nums.next().unwrap_or(0),
            })
        }
        close::REFUSED_DUPLICATE => Some(Refusal::Duplicate),
        close::REFUSED_LOOPBACK => Some(Refusal::Loopback),
        _ => None,
    }
}

/// Whether the dialler closed because our certificate is not the node it
/// wanted.
fn is_refused_by_dialler(e: Option<&quinn::ConnectionError>) -> bool {
    matches!(e, Some(quinn::ConnectionError::ApplicationClosed(c))
        if c.error_code == close::BAD_PEER.into())
}

/// The close code for a refusal (the acceptor's side).
pub(crate) fn code_of(r: &Refusal) -> u32 {
    match r {
        Refusal::Full { .. } => close::REFUSED_FULL,
        Refusal::Duplicate => close::REFUSED_DUPLICATE,
        _ => close::REFUSED_LOOPBACK,
    }
}

/// Dials a peer and runs the `Open`/`Accept` exchange.
pub(crate) async fn dial(
    transport: &Transport,
    addrs: &[SocketAddr],
    address: Ipv6Addr,
    our_crl: u64,
) -> Result<Established, DialError> {
    let unreachable = DialError::unreachable;
    let connected = transport.dial(addrs, address).await.map_err(|e| {
        let reason = e.to_string();
        match e {
            TransportDialError::OtherNode { found, .. } => DialError {
                answered_by: Some(found),
                ..unreachable(reason)
            },
            _ => unreachable(reason),
        }
    })?;
    let conn = connected.conn.clone();
    let timeout = transport.config().handshake_timeout;
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(StreamError::from)?;
        control::write(
            &mut send,
            &Control::Open {
                version: control::VERSION,
                crl_number: our_crl,
            },
        )
        .await?;
        let mut buf = Vec::new();
        let reply = control::read(&mut recv, &mut buf).await?;
        Ok::<_, StreamError>((send, recv, reply))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok((
            send,
            recv,
            Some(Control::Accept {
                crl_number,
                observed,
            }),
        ))) => Ok(Established {
            connected,
            send,
            recv,
            peer_crl: crl_number,
            observed: Some(canonical(observed)),
        }),
        Ok(Ok((_, _, other))) => {
            conn.close(close::PROTOCOL.into(), b"expected Accept");
            Err(unreachable(format!(
                "protocol: expected Accept, got {other:?}"
            )))
        }
        Ok(Err(e)) => {
            // A refusal arrives as the connection closing with its code.
            let closed = conn.close_reason();
            match closed.as_ref().and_then(refusal_of) {
                Some(r) => Err(DialError {
                    failure: Failure::Refused(r),
                    reason: r.to_string(),
                    answered_by: None,
                }),
                None => Err(unreachable(format!(
                    "{e}{}",
                    closed.map(|c| format!(" ({c})")).unwrap_or_default()
                ))),
            }
        }
        Err(_) => {
            conn.close(close::PROTOCOL.into(), b"no answer to Open");
            Err(unreachable(format!("no answer to Open within {timeout:?}")))
        }
    }
}

/// IPv4-mapped IPv6 addresses (seen on a dual-stack socket) as IPv4.
pub(crate) fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Completes an incoming connection up to the dialler's `Open` and hands
/// it to the router, which accepts or refuses it.
pub(crate) async fn accept(
    transport: Arc<Transport>,
    incoming: quinn::Incoming,
    router: mpsc::Sender<RouterIn>,
) {
    let Some(connected) = transport.handshake(incoming).await else {
        return;
    };
    let conn = connected.conn.clone();
    let timeout = transport.config().handshake_timeout;
    let exchange = async {
        let (send, mut recv) = conn.accept_bi().await.map_err(StreamError::from)?;
        let mut buf = Vec::new();
        let open = control::read(&mut recv, &mut buf).await?;
        Ok::<_, StreamError>((send, recv, open))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok((send, recv, Some(Control::Open { crl_number, .. })))) => {
            let e = Established {
                connected,
                send,
                recv,
                peer_crl: crl_number,
                observed: None,
            };
            let _ = router.send(RouterIn::Incoming(Box::new(e))).await;
        }
        Ok(Ok(_)) => conn.close(close::PROTOCOL.into(), b"expected Open"),
        Ok(Err(e)) => {
            if is_refused_by_dialler(conn.close_reason().as_ref()) {
                // It dialled a previous identity of this address; it
                // forgets it now (one handshake per dialler).
                transport.count_refused_by_dialler();
                tracing::info!(
                    from = %conn.remote_address(),
                    "a peer dialled a node that is no longer at this address, and gave up on it"
                );
                return;
            }
            tracing::debug!(peer = %connected.peer.prefix, error = %e, "no Open");
            conn.close(close::PROTOCOL.into(), b"bad control stream");
        }
        Err(_) => conn.close(close::PROTOCOL.into(), b"no Open in time"),
    }
}

/// The datagram loop of an up tunnel: registers the tunnel with the
/// liveness clock, then every datagram through the packet path. Reports
/// the connection's end to the router.
pub(crate) async fn datagrams(
    link: Arc<TunnelLink>,
    iface: IfaceId,
    tunnel: TunnelId,
    mut path: PacketPath,
    router: mpsc::Sender<RouterIn>,
) {
    let conn = link.conn().clone();
    let _ = path.watch(tunnel, conn.clone()).await;
    let mut reassembler = Reassembler::default();
    let error = loop {
        match conn.read_datagram().await {
            Ok(d) => {
                link.count_rx(d.len());
                path.handle_datagram(iface, d, &mut reassembler, Instant::now());
            }
            Err(e) => break e,
        }
    };
    path.flush_stats(Some(reassembler.stats()));
    let _ = router.send(RouterIn::Closed { tunnel, error }).await;
}

/// The liveness task of one tunnel, as the router spawns it: nothing to do
/// any more, since the node's one [`liveness_clock`] watches every tunnel
/// (the datagram loop registers its connection there).
pub(crate) async fn liveness(
    _conn: quinn::Connection,
    _tunnel: TunnelId,
    _suspect_after: Duration,
    _router: mpsc::Sender<RouterIn>,
) {
}

/// A connection for the liveness clock to watch.
pub(crate) type Watch = (TunnelId, quinn::Connection);

/// Tunnels waiting to be registered with the clock before the datagram
/// loops wait (a node has at most a few hundred tunnels).
pub(crate) const WATCH_QUEUE: usize = 256;

/// The liveness of every up tunnel of the node, in one task and one timer
/// ([`Clock`]): it reads the authenticated-frame count of the tunnels due
/// (all of them once per `suspect_after / 12`, in one wake-up) and tells
/// the router when a tunnel falls silent for `suspect_after` and when it
/// is heard again. With no tunnel it sleeps until one registers.
pub(crate) async fn liveness_clock(
    mut watch: mpsc::Receiver<Watch>,
    suspect_after: Duration,
    router: mpsc::Sender<RouterIn>,
) {
    let mut clock = Clock::new(suspect_after, Instant::now());
    let mut conns: HashMap<TunnelId, quinn::Connection> = HashMap::new();
    loop {
        let wake = clock.poll_timeout();
        tokio::select! {
            w = watch.recv() => match w {
                Some((tunnel, conn)) => {
                    let count = authenticated(&conn.stats().frame_rx);
                    clock.insert(tunnel, count, Instant::now());
                    conns.insert(tunnel, conn);
                }
                None => return,
            },
            () = sleep_until(wake) => {}
        }
        let now = Instant::now();
        clock.handle_timeout(now, |t| {
            let conn = conns.get(&t).filter(|c| c.close_reason().is_none())?;
            let stats = conn.stats();
            Some(Sample {
                authenticated: authenticated(&stats.frame_rx),
                rtt: stats.path.rtt,
            })
        });
        if conns.len() != clock.len() {
            conns.retain(|t, _| clock.contains(*t));
        }
        while let Some(t) = clock.poll_transition() {
            let msg = RouterIn::Liveness {
                tunnel: t.tunnel,
                alive: t.verdict == Verdict::Alive,
                silent: t.silent,
            };
            if router.send(msg).await.is_err() {
                return;
            }
        }
    }
}

/// Sleeps until `at`; forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Reads the control stream and passes every message to the router.
pub(crate) async fn control_reader(
    mut recv: quinn::RecvStream,
    tunnel: TunnelId,
    router: mpsc::Sender<RouterIn>,
) {
    let mut buf = Vec::new();
    loop {
        match control::read(&mut recv, &mut buf).await {
            Ok(Some(msg)) => {
                if router
                    .send(RouterIn::Control { tunnel, msg })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) => return,
            Err(StreamError::Control(e)) => {
                let _ = router
                    .send(RouterIn::ControlError { tunnel, error: e })
                    .await;
                return;
            }
            // The connection ended: the datagram loop reports it.
            Err(_) => return,
        }
    }
}

/// Writes the router's control messages, in order.
pub(crate) async fn control_writer(mut send: quinn::SendStream, mut out: mpsc::Receiver<Control>) {
    while let Some(m) = out.recv().await {
        if control::write(&mut send, &m).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

/// How long the router waits for a clean shutdown to reach the peers.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);
