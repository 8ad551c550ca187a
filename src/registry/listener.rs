//! Accepting connections without letting any client starve the others.
//!
//! - At most [`Limits::max_connections`] connections are open. When full, a
//!   new connection closes an idle one (a TLS handshake in progress, or no
//!   request in flight): one that never sent a request first, then the
//!   longest idle; only when every connection is busy is the new one
//!   refused. So thousands of idle TLS connections cost a bounded amount of
//!   memory, and a client that keeps its connection for its requests keeps
//!   it while they churn.
//! - The TLS handshake and the request headers must arrive within
//!   [`Limits::request_timeout`] (slowloris), the body too (checked by
//!   [`limit_body`]); a connection idle for [`Limits::idle_timeout`] is
//!   closed, and so is one whose request has been in flight for
//!   [`Limits::busy_timeout`] (a client that does not read its answer).
//! - A body larger than [`MAX_BODY`](super::api::MAX_BODY) is read to its
//!   end (up to [`DRAIN_MAX`]) before the 413 is sent: closing with unread
//!   bytes makes the kernel reset the connection, and the client would
//!   lose the answer it was sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::api::{self, ErrorCode};
use super::core::Registry;
use super::metrics::endpoint;
use super::server::{ApiErr, ClientCert, router};
use super::server_tls::ServerTls;
use super::store;

/// Most bytes of an oversized body read (and dropped) before its 413.
pub const DRAIN_MAX: usize = 1024 * 1024;

/// Connection limits of the HTTPS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most open connections.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake, the request headers, and the
    /// request body.
    pub request_timeout: Duration,
    /// A connection without a request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// A request in flight for this long has its connection closed.
    pub busy_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            busy_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    Idle,
    /// Requests in flight (several with HTTP/2).
    Busy(u32),
}

#[derive(Debug)]
struct Slot {
    phase: Phase,
    since: Instant,
    /// Whether it has sent a request (evicted after those that have not).
    served: bool,
    close: Arc<Notify>,
}

/// Every open connection.
#[derive(Debug, Default)]
struct Table {
    slots: Mutex<HashMap<u64, Slot>>,
    next: AtomicU64,
}

/// A connection's entry, removed when dropped.
#[derive(Debug)]
struct Entry {
    table: Arc<Table>,
    id: u64,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for one more connection: `Ok` with the new entry (maybe
    /// after asking the longest-idle connection to close), `Err` when every
    /// connection is busy.
    fn admit(self: &Arc<Self>, max: usize) -> Result<(Entry, Arc<Notify>, bool), ()> {
        let mut slots = self.lock();
        let mut evicted = false;
        if slots.len() >= max {
            let victim = slots
                .iter()
                .filter(|(_, s)| !matches!(s.phase, Phase::Busy(_)))
                .min_by_key(|(_, s)| (s.served, s.since))
                .map(|(id, _)| *id);
            let Some(v) = victim else {
                return Err(());
            };
            if let Some(s) = slots.remove(&v) {
                s.close.notify_one();
                evicted = true;
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        slots.insert(
            id,
            Slot {
                phase: Phase::Handshake,
                since: Instant::now(),
                served: false,
                close: close.clone(),
            },
        );
        Ok((
            Entry {
                table: self.clone(),
                id,
            },
            close,
            evicted,
        ))
    }
}

impl Entry {
    fn set(&self, f: impl FnOnce(Phase) -> Phase) {
        if let Some(s) = self.table.lock().get_mut(&self.id) {
            let next = f(s.phase);
            if next != s.phase {
                s.phase = next;
                s.since = Instant::now();
            }
        }
    }

    fn begin(&self) {
        if let Some(s) = self.table.lock().get_mut(&self.id) {
            s.served = true;
        }
        self.set(|p| match p {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        });
    }

    fn end(&self) {
        self.set(|p| match p {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle,
        });
    }

    /// The phase and how long it has lasted (`None`: evicted).
    fn phase(&self) -> Option<(Phase, Duration)> {
        self.table
            .lock()
            .get(&self.id)
            .map(|s| (s.phase, s.since.elapsed()))
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.table.lock().remove(&self.id);
    }
}

/// Serves the API on `listener` with the default [`Limits`] until
/// `shutdown` resolves. Every `sweep_every`, expired and revoked prefixes
/// are released, the HTTPS certificate is renewed if due and settings
/// another replica stored are picked up.
pub async fn serve(
    registry: Arc<Registry>,
    listener: TcpListener,
    tls: ServerTls,
    sweep_every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    serve_with(
        registry,
        listener,
        tls,
        sweep_every,
        Limits::default(),
        shutdown,
    )
    .await
}

/// [`serve`] with other limits.
pub async fn serve_with(
    registry: Arc<Registry>,
    listener: TcpListener,
    tls: ServerTls,
    sweep_every: Duration,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let tls = Arc::new(tls);
    let app = router(registry.clone())
        .layer(axum::middleware::from_fn_with_state(
            (registry.clone(), limits),
            limit_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            registry.clone(),
            count_request,
        ));
    let table = Arc::new(Table::default());
    let sweeper = tokio::spawn(sweep_loop(registry.clone(), tls.clone(), sweep_every));
    let m = &registry.metrics;
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok((entry, close, evicted)) = table.admit(limits.max_connections) else {
            m.count(&m.connections_refused);
            debug!(%peer, "every connection is busy: refused");
            continue;
        };
        if evicted {
            m.count(&m.connections_evicted);
        }
        m.count(&m.connections_accepted);
        let (cfg, app, reg) = (tls.config(), app.clone(), registry.clone());
        tokio::spawn(async move {
            reg.metrics.connections_open.fetch_add(1, Ordering::Relaxed);
            let entry = Arc::new(entry);
            tokio::select! {
                () = connection(tcp, peer, cfg, app, entry.clone(), limits) => {}
                () = close.notified() => debug!(%peer, "idle connection closed to make room"),
                () = watchdog(&entry, limits) => {
                    reg.metrics.count(&reg.metrics.connections_timed_out);
                    debug!(%peer, "connection closed: stalled");
                }
            }
            reg.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    sweeper.abort();
    Ok(())
}

/// Resolves when the connection has been idle, or busy, for too long.
async fn watchdog(entry: &Entry, limits: Limits) {
    let tick = (limits.idle_timeout.min(limits.busy_timeout) / 4).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(tick).await;
        match entry.phase() {
            None => return,
            Some((Phase::Idle, t)) if t >= limits.idle_timeout => return,
            Some((Phase::Busy(_), t)) if t >= limits.busy_timeout => return,
            _ => {}
        }
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    cfg: Arc<rustls::ServerConfig>,
    app: Router,
    entry: Arc<Entry>,
    limits: Limits,
) {
    let _ = tcp.set_nodelay(true);
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let stream = match tokio::time::timeout(limits.request_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return debug!(%peer, "TLS handshake failed: {e}"),
        Err(_) => return debug!(%peer, "TLS handshake timed out"),
    };
    entry.set(|_| Phase::Idle);
    let client = ClientCert(
        stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned()),
    );
    let svc = hyper_util::service::TowerToHyperService::new(
        app.layer(axum::middleware::from_fn(track))
            .layer(Extension(entry))
            .layer(Extension(client)),
    );
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(64 * 1024);
    if let Err(e) = builder
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
        .await
    {
        debug!(%peer, "connection: {e}");
    }
}

/// Marks the connection busy while a request is in flight.
async fn track(Extension(entry): Extension<Arc<Entry>>, req: Request, next: Next) -> Response {
    entry.begin();
    let resp = next.run(req).await;
    entry.end();
    resp
}

/// Counts every answer by endpoint and status, with its latency.
async fn count_request(
    axum::extract::State(r): axum::extract::State<Arc<Registry>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    let start = Instant::now();
    let resp = next.run(req).await;
    r.metrics
        .request(endpoint(&path), resp.status().as_u16(), start.elapsed());
    resp
}

fn too_large() -> Response {
    let mut resp = ApiErr(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!("the body is larger than {} bytes", api::MAX_BODY),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Reads the body (at most [`api::MAX_BODY`], within the request timeout)
/// before the handler sees it; an oversized one is drained, then refused.
async fn limit_body(
    axum::extract::State((_, limits)): axum::extract::State<(Arc<Registry>, Limits)>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let deadline = tokio::time::Instant::now() + limits.request_timeout;
    let mut body = body;
    let mut buf = BytesMut::new();
    let mut over = declared.is_some_and(|n| n > api::MAX_BODY as u64);
    let mut read = 0usize;
    loop {
        let next = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                let mut resp = ApiErr(
                    StatusCode::REQUEST_TIMEOUT,
                    ErrorCode::RequestTimeout,
                    format!(
                        "the request body did not arrive within {:?}",
                        limits.request_timeout
                    ),
                )
                .into_response();
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return resp;
            }
            Ok(n) => n,
        };
        match next {
            None => break,
            Some(Ok(frame)) => {
                let Ok(chunk) = frame.into_data() else {
                    continue; // trailers
                };
                read += chunk.len();
                if over || read > api::MAX_BODY {
                    over = true;
                    buf.clear();
                    if read > DRAIN_MAX {
                        break;
                    }
                } else {
                    buf.extend_from_slice(&chunk);
                }
            }
            Some(Err(e)) => {
                return ApiErr(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadRequest,
                    format!("reading the body: {e}"),
                )
                .into_response();
            }
        }
    }
    if over {
        return too_large();
    }
    next.run(Request::from_parts(parts, Body::from(buf.freeze())))
        .await
}

async fn sweep_loop(registry: Arc<Registry>, tls: Arc<ServerTls>, every: Duration) {
    loop {
        if let Err(e) = tls.refresh_if_due(&registry, SystemTime::now()) {
            warn!("renewing the HTTPS certificate: {e:#}");
        }
        let grace = Duration::from_secs(registry.config().settings.grace_period_secs);
        let r = registry.clone();
        let res = registry
            .writer
            .run(move |tx, prefixes| {
                let now = SystemTime::now();
                let released = store::revoke::sweep(tx, prefixes, grace, now)?;
                // Before the prefix can be allocated again.
                super::gateways::drop_nodes(tx, &r.ca, &released, now)?;
                Ok(released)
            })
            .await;
        let r = registry.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || r.reload()).await {
            warn!("reading the settings: {e}");
        }
        match res {
            Ok(released) => {
                for p in released {
                    info!(prefix = %p, "prefix released (certificate expired past the grace period, or revoked and expired)");
                }
            }
            Err(e) => {
                registry.metrics.database_error("sweep");
                warn!("sweep: {e}");
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_evicts_the_longest_idle_and_never_a_busy_one() {
        let t = Arc::new(Table::default());
        // A connection that served a request outlives newer ones that did not.
        let (old, _, _) = t.admit(2).unwrap();
        old.begin();
        old.end();
        let (fresh, _, _) = t.admit(2).unwrap();
        fresh.set(|_| Phase::Idle);
        let (_newest, _, evicted) = t.admit(2).unwrap();
        assert!(evicted && fresh.phase().is_none() && old.phase().is_some());
        drop((old, fresh, _newest));
        let t = Arc::new(Table::default());
        let (a, close_a, _) = t.admit(2).unwrap();
        let (b, _, _) = t.admit(2).unwrap();
        a.set(|_| Phase::Idle);
        b.begin();
        // Full: a (idle) goes.
        let (c, _, evicted) = t.admit(2).unwrap();
        assert!(evicted);
        assert!(a.phase().is_none());
        drop(close_a);
        c.begin();
        // Full of busy connections: refused.
        assert!(t.admit(2).is_err());
        b.end();
        assert_eq!(b.phase().map(|p| p.0), Some(Phase::Idle));
        assert!(t.admit(2).is_ok());
        drop(c);
        assert!(t.lock().len() <= 2);
    }
}
