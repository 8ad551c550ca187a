//! The registry's Prometheus metrics, served with the topology on a
//! loopback listener (`re6st registry run --metrics 127.0.0.1:9471`).
//!
//! Counted in memory by this process: requests by endpoint and status,
//! request latency, enrolments, renewals, announcements, database errors,
//! write batches, connections. Read from the database at each scrape (so
//! every replica reports the same): nodes by state, certificates issued,
//! revocations (a counter: revoked nodes are never un-revoked), the CRL
//! number. Every label set is bounded: endpoints are the API's routes and
//! `other`; statuses are the few the API answers with.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::core::Registry;
use crate::control::metrics::Metrics;

/// Upper bounds (seconds) of the request latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Upper bounds of the write batch size histogram's buckets.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A Prometheus histogram of fixed buckets.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of observations, in millionths.
    sum_micro: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micro
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, m: &mut Metrics, name: &str, labels: &[(&str, String)]) {
        let mut cumulative = 0;
        let with_le = |le: String| {
            let mut l = labels.to_vec();
            l.push(("le", le));
            l
        };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            m.sample(
                &format!("{name}_bucket"),
                &with_le(b.to_string()),
                cumulative as f64,
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        m.sample(
            &format!("{name}_bucket"),
            &with_le("+Inf".into()),
            count as f64,
        );
        m.sample(
            &format!("{name}_sum"),
            labels,
            self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6,
        );
        m.sample(&format!("{name}_count"), labels, count as f64);
    }
}

/// The API's endpoints as metric labels (anything else is `other`).
pub const ENDPOINTS: &[&str] = &[
    "/v1/ca",
    "/v1/crl",
    "/v1/network",
    "/v1/enrol",
    "/v1/renew",
    "/v1/announce",
    "/v1/bootstrap",
    "/v1/health",
    "/v1/topology.svg",
    "/v1/topology.json",
    "other",
];

/// The label of a request path.
pub fn endpoint(path: &str) -> &'static str {
    ENDPOINTS
        .iter()
        .find(|e| **e == path)
        .copied()
        .unwrap_or("other")
}

/// Counts of one registry process.
#[derive(Debug)]
pub struct RegistryMetrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Vec<Histogram>,
    batches: Histogram,
    database_errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Enrolments that issued a certificate.
    pub enrolled: AtomicU64,
    /// Enrolments that returned the key's existing certificate (a retry).
    pub enrol_repeated: AtomicU64,
    /// Renewals that issued a certificate.
    pub renewed: AtomicU64,
    /// Renewals that were not due.
    pub renew_not_due: AtomicU64,
    /// Announcements stored.
    pub announcements: AtomicU64,
    /// Bootstrap answers.
    pub bootstraps: AtomicU64,
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Idle connections closed to make room for new ones.
    pub connections_evicted: AtomicU64,
    /// Connections refused because every slot was busy.
    pub connections_refused: AtomicU64,
    /// Connections closed for a slow or stalled client.
    pub connections_timed_out: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
}

impl Default for RegistryMetrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            latency: ENDPOINTS
                .iter()
                .map(|_| Histogram::new(&LATENCY_BUCKETS))
                .collect(),
            batches: Histogram::new(&BATCH_BUCKETS),
            database_errors: Mutex::default(),
            enrolled: AtomicU64::new(0),
            enrol_repeated: AtomicU64::new(0),
            renewed: AtomicU64::new(0),
            renew_not_due: AtomicU64::new(0),
            announcements: AtomicU64::new(0),
            bootstraps: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_evicted: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_timed_out: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
        }
    }
}

/// What the database says at scrape time (`None` when it cannot answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbView {
    /// Active nodes.
    pub active: u64,
    /// Revoked nodes whose prefix is not released yet.
    pub revoked: u64,
    /// Node certificates ever issued.
    pub certificates: u64,
    /// Nodes ever revoked.
    pub revocations: u64,
    /// Number of the current CRL.
    pub crl_number: u64,
}

/// Reads [`DbView`] (one statement).
pub fn db_view(
    tx: &mut dyn crate::registry::store::Tx,
) -> Result<DbView, crate::registry::store::StoreError> {
    let r = tx.query_one(
        "SELECT (SELECT COUNT(*) FROM node WHERE state = 'active'),
                (SELECT COUNT(*) FROM node WHERE state = 'revoked'),
                (SELECT COUNT(*) FROM cert WHERE kind = 'node'),
                (SELECT COUNT(*) FROM node WHERE revoked_at IS NOT NULL),
                (SELECT COALESCE(MAX(number), 0) FROM crl)",
        &[],
    )?;
    Ok(DbView {
        active: r.uint(0)?,
        revoked: r.uint(1)?,
        certificates: r.uint(2)?,
        revocations: r.uint(3)?,
        crl_number: r.uint(4)?,
    })
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl RegistryMetrics {
    /// Counts one answered request.
    pub fn request(&self, endpoint: &'static str, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((endpoint, status))
            .or_default() += 1;
        let i = ENDPOINTS
            .iter()
            .position(|e| *e == endpoint)
            .unwrap_or(ENDPOINTS.len() - 1);
        self.latency[i].observe(took.as_secs_f64());
    }

    /// Counts one failed database operation (`op`: a static name).
    pub fn database_error(&self, op: &'static str) {
        *self
            .database_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(op)
            .or_default() += 1;
    }

    /// Records the size of one committed (or failed) write batch.
    pub fn batch(&self, n: usize) {
        self.batches.observe(n as f64);
    }

    /// Counts an event (a shorthand for the public counters).
    pub fn count(&self, c: &AtomicU64) {
        inc(c);
    }

    /// The exposition; `db` is the database's view, `queued` the writes
    /// waiting.
    pub fn render(&self, db: Option<&DbView>, queued: usize) -> String {
        let mut m = Metrics::default();
        m.gauge(
            "re6st_registry_info",
            "The registry's version (value always 1).",
            &[("version", env!("CARGO_PKG_VERSION").into())],
            1.0,
        );
        {
            let req = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            for ((e, s), n) in req.iter() {
                m.counter(
                    "re6st_registry_requests_total",
                    "Requests answered, by endpoint and HTTP status.",
                    &[("endpoint", (*e).into()), ("status", s.to_string())],
                    *n as f64,
                );
            }
        }
        m.family(
            "re6st_registry_request_duration_seconds",
            "Time to answer a request, by endpoint.",
            "histogram",
        );
        for (e, h) in ENDPOINTS.iter().zip(&self.latency) {
            if h.count.load(Ordering::Relaxed) > 0 {
                h.render(
                    &mut m,
                    "re6st_registry_request_duration_seconds",
                    &[("endpoint", (*e).into())],
                );
            }
        }
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        for (result, c) in [("new", &self.enrolled), ("existing", &self.enrol_repeated)] {
            m.counter(
                "re6st_registry_enrolments_total",
                "Enrolments answered: new certificates, and retries that got the key's existing one.",
                &[("result", result.into())],
                load(c),
            );
        }
        for (result, c) in [("renewed", &self.renewed), ("not_due", &self.renew_not_due)] {
            m.counter(
                "re6st_registry_renewals_total",
                "Renewals answered: new certificates, and the current one when not due.",
                &[("result", result.into())],
                load(c),
            );
        }
        m.counter(
            "re6st_registry_announcements_total",
            "Announcements stored.",
            &[],
            load(&self.announcements),
        );
        m.counter(
            "re6st_registry_bootstraps_total",
            "Bootstrap answers.",
            &[],
            load(&self.bootstraps),
        );
        {
            let errs = self
                .database_errors
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            m.family(
                "re6st_registry_database_errors_total",
                "Failed database operations, by operation.",
                "counter",
            );
            for (op, n) in errs.iter() {
                m.sample(
                    "re6st_registry_database_errors_total",
                    &[("op", (*op).into())],
                    *n as f64,
                );
            }
        }
        m.family(
            "re6st_registry_write_batch_size",
            "Write operations committed together (group commit).",
            "histogram",
        );
        self.batches
            .render(&mut m, "re6st_registry_write_batch_size", &[]);
        m.gauge(
            "re6st_registry_write_queue",
            "Write operations waiting or running.",
            &[],
            queued as f64,
        );
        m.gauge(
            "re6st_registry_connections",
            "HTTPS connections open.",
            &[],
            load(&self.connections_open),
        );
        for (outcome, c) in [
            ("accepted", &self.connections_accepted),
            ("evicted", &self.connections_evicted),
            ("refused", &self.connections_refused),
            ("timed_out", &self.connections_timed_out),
        ] {
            m.counter(
                "re6st_registry_connections_total",
                "HTTPS connections by outcome: accepted, idle ones closed to make room, refused when every slot was busy, closed for a slow client.",
                &[("outcome", outcome.into())],
                load(c),
            );
        }
        m.gauge(
            "re6st_registry_database_up",
            "1 if the database answered this scrape.",
            &[],
            if db.is_some() { 1.0 } else { 0.0 },
        );
        if let Some(d) = db {
            for (state, n) in [("active", d.active), ("revoked", d.revoked)] {
                m.gauge(
                    "re6st_registry_nodes",
                    "Nodes holding a prefix, by state.",
                    &[("state", state.into())],
                    n as f64,
                );
            }
            m.counter(
                "re6st_registry_certificates_total",
                "Node certificates issued (all replicas).",
                &[],
                d.certificates as f64,
            );
            m.counter(
                "re6st_registry_revocations_total",
                "Nodes revoked (all replicas and admin commands).",
                &[],
                d.revocations as f64,
            );
            m.gauge(
                "re6st_registry_crl_number",
                "Number of the current CRL.",
                &[],
                d.crl_number as f64,
            );
        }
        m.out
    }
}

/// `GET /metrics` of the metrics listener.
async fn scrape(
    axum::extract::State(r): axum::extract::State<Arc<Registry>>,
) -> impl axum::response::IntoResponse {
    let db = r.read(|_, tx| db_view(tx)).await;
    if db.is_err() {
        r.metrics.database_error("scrape");
    }
    let body = r.metrics.render(db.as_ref().ok(), r.writer.queued());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}

/// Serves the metrics (`/metrics`), the health check and the map of the
/// network (`/v1/topology.svg`, `/v1/topology.json`) over plain HTTP on
/// `listener` (a loopback address: see
/// [`crate::control::metrics::bind`]).
pub async fn serve(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    use super::api;
    use super::server::{health, topology_json, topology_svg};
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/metrics", get(scrape))
        .route(api::PATH_HEALTH, get(health))
        .route(api::PATH_TOPOLOGY_SVG, get(topology_svg))
        .route(api::PATH_TOPOLOGY_JSON, get(topology_json))
        .with_state(registry);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "registry metrics server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_histograms_counters_and_db_view() {
        let m = RegistryMetrics::default();
        m.request("/v1/enrol", 200, Duration::from_millis(3));
        m.request("/v1/enrol", 200, Duration::from_millis(30));
        m.request(endpoint("/etc/passwd"), 404, Duration::from_micros(10));
        m.database_error("commit");
        m.batch(5);
        m.count(&m.enrolled);
        let db = DbView {
            active: 3,
            revoked: 1,
            certificates: 7,
            revocations: 2,
            crl_number: 4,
        };
        let text = m.render(Some(&db), 2);
        for line in [
            "re6st_registry_requests_total{endpoint=\"/v1/enrol\",status=\"200\"} 2",
            "re6st_registry_requests_total{endpoint=\"other\",status=\"404\"} 1",
            "re6st_registry_request_duration_seconds_bucket{endpoint=\"/v1/enrol\",le=\"0.005\"} 1",
            "re6st_registry_request_duration_seconds_bucket{endpoint=\"/v1/enrol\",le=\"+Inf\"} 2",
            "re6st_registry_request_duration_seconds_count{endpoint=\"/v1/enrol\"} 2",
            "re6st_registry_enrolments_total{result=\"new\"} 1",
            "re6st_registry_database_errors_total{op=\"commit\"} 1",
            "re6st_registry_write_batch_size_bucket{le=\"8\"} 1",
            "re6st_registry_write_queue 2",
            "re6st_registry_nodes{state=\"active\"} 3",
            "re6st_registry_revocations_total 2",
            "re6st_registry_crl_number 4",
            "re6st_registry_database_up 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // Each family's TYPE once.
        assert_eq!(
            text.matches("# TYPE re6st_registry_request_duration_seconds ")
                .count(),
            1
        );
        assert!(m.render(None, 0).contains("re6st_registry_database_up 0"));
    }
}
