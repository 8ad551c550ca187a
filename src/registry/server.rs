//! The registry's HTTPS server: axum behind tokio-rustls (ring, TLS 1.3),
//! HTTP/1.1 and HTTP/2, versioned JSON API (see [`super::api`]).
//!
//! TLS asks every client for a certificate but does not require one:
//! enrolment and the public documents need none, while renewal,
//! announcement and bootstrap check the client certificate in the handler,
//! against the store (the source of truth for revocation, so a revoked node
//! gets a clear JSON 403 instead of a bare TLS alert). An expired client
//! certificate passes the handshake (its chain is checked at its own
//! expiry time) so that a node that was offline can still renew within the
//! grace period; every other endpoint refuses it.
//!
//! Bad input never reaches a 500: bodies are limited to
//! [`super::api::MAX_BODY`], JSON and query rejections, unknown paths and
//! methods all answer with an [`ApiError`].

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use rustls::DigitallySignedStruct;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use super::api::{self, ApiError, ErrorCode};
use super::core::Registry;
use super::store::{self, NodeState, StoreError};
use crate::identity::tls::{CaVerifier, TlsIdentity, Trust, provider};
use crate::identity::{
    CertificateRequest, IdentityError, IssueParams, NodeCert, NodeKey, SignedAnnouncement, cert_pem,
};

/// Time allowed for a TLS handshake and for request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An error answer: status, code, message.
#[derive(Debug)]
pub struct ApiErr(pub StatusCode, pub ErrorCode, pub String);

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            warn!(code = ?self.1, "{}", self.2);
        } else {
            debug!(status = %self.0, code = ?self.1, "{}", self.2);
        }
        (
            self.0,
            Json(ApiError {
                error: self.1,
                message: self.2,
            }),
        )
            .into_response()
    }
}

fn bad(code: ErrorCode, msg: impl Into<String>) -> ApiErr {
    ApiErr(StatusCode::BAD_REQUEST, code, msg.into())
}

fn forbidden(code: ErrorCode, msg: impl Into<String>) -> ApiErr {
    ApiErr(StatusCode::FORBIDDEN, code, msg.into())
}

impl From<IdentityError> for ApiErr {
    fn from(e: IdentityError) -> Self {
        let msg = e.to_string();
        match e {
            IdentityError::BadPem { .. } => bad(ErrorCode::BadPem, msg),
            IdentityError::Malformed {
                what: "certificate request",
                ..
            } => bad(ErrorCode::MalformedCsr, msg),
            IdentityError::BadSignature {
                what: "certificate request",
            } => bad(ErrorCode::BadCsrSignature, msg),
            IdentityError::UnsupportedKeyType { .. } => bad(ErrorCode::UnsupportedKeyType, msg),
            IdentityError::Internal(_) => {
                ApiErr(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, msg)
            }
            _ => bad(ErrorCode::BadRequest, msg),
        }
    }
}

impl From<StoreError> for ApiErr {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::TokenRequired => {
                ApiErr(StatusCode::UNAUTHORIZED, ErrorCode::TokenRequired, msg)
            }
            StoreError::UnknownToken => forbidden(ErrorCode::UnknownToken, msg),
            StoreError::TokenUsed => forbidden(ErrorCode::TokenUsed, msg),
            StoreError::TokenExpired => forbidden(ErrorCode::TokenExpired, msg),
            StoreError::Exhausted(_) => {
                ApiErr(StatusCode::CONFLICT, ErrorCode::PrefixSpaceExhausted, msg)
            }
            StoreError::Unknown(_) => forbidden(ErrorCode::UnknownCertificate, msg),
            StoreError::Revoked(_) => forbidden(ErrorCode::CertificateRevoked, msg),
            StoreError::Expired(_) => forbidden(ErrorCode::CertificateExpired, msg),
            StoreError::Identity(e) => e.into(),
            StoreError::Unavailable(_) => ApiErr(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::DatabaseUnavailable,
                msg,
            ),
            StoreError::Busy(_) => ApiErr(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Busy, msg),
            StoreError::Database(_) | StoreError::Config(_) | StoreError::Internal(_) => {
                ApiErr(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, msg)
            }
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiErr {
    let status = r.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        _ => ErrorCode::BadRequest,
    };
    let status = if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiErr(status, code, r.body_text())
}

/// The TLS client certificate of the connection, if any.
#[derive(Debug, Clone)]
pub struct ClientCert(pub Option<CertificateDer<'static>>);

type ApiResult<T> = Result<Json<T>, ApiErr>;

/// The API routes over `registry`.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(api::PATH_CA, get(get_ca))
        .route(api::PATH_CRL, get(get_crl))
        .route(api::PATH_NETWORK, get(get_network))
        .route(api::PATH_ENROL, post(enrol))
        .route(api::PATH_RENEW, post(renew))
        .route(api::PATH_ANNOUNCE, post(announce))
        .route(api::PATH_BOOTSTRAP, get(bootstrap))
        .fallback(|| async {
            ApiErr(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "no such endpoint (the API lives under /v1/)".into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiErr(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "method not allowed on this endpoint".into(),
            )
        })
        .layer(DefaultBodyLimit::max(api::MAX_BODY))
        .with_state(registry)
}

async fn get_ca(State(r): State<Arc<Registry>>) -> ApiResult<api::CaResponse> {
    Ok(Json(api::CaResponse {
        certificate: r.ca.cert_pem(),
        fingerprint: r.ca.fingerprint().to_string(),
    }))
}

async fn get_crl(State(r): State<Arc<Registry>>) -> ApiResult<api::CrlResponse> {
    let der = r.crl(SystemTime::now()).await?;
    Ok(Json(api::CrlResponse {
        crl: crate::identity::crl_pem(&der),
    }))
}

async fn get_network(State(r): State<Arc<Registry>>) -> ApiResult<api::SignedNetworkConfig> {
    Ok(Json(r.config().network_config.clone()))
}

async fn enrol(
    State(r): State<Arc<Registry>>,
    body: Result<Json<api::EnrolRequest>, JsonRejection>,
) -> ApiResult<api::EnrolResponse> {
    let Json(req) = body.map_err(json_rejection)?;
    let csr = CertificateRequest::from_pem(&req.csr)?;
    if req
        .token
        .as_ref()
        .is_some_and(|t| t.is_empty() || t.len() > 128)
    {
        return Err(forbidden(ErrorCode::UnknownToken, "unknown token"));
    }
    let policy = r.policy();
    let me = r.clone();
    let issued = r
        .writer
        .run(move |tx, prefixes| {
            store::issue::enrol(
                tx,
                prefixes,
                &me.ca,
                &policy,
                &csr.public_key,
                req.token.as_deref(),
                SystemTime::now(),
            )
        })
        .await?;
    let crl = r.crl(SystemTime::now()).await?;
    if issued.new {
        r.metrics.count(&r.metrics.enrolled);
        info!(prefix = %issued.prefix, serial = issued.serial, "enrolled");
    } else {
        r.metrics.count(&r.metrics.enrol_repeated);
    }
    Ok(Json(api::EnrolResponse {
        certificate: cert_pem(&issued.der),
        ca: r.ca.cert_pem(),
        crl: crate::identity::crl_pem(&crl),
        network: r.config().network_config.clone(),
    }))
}

/// The client's node certificate, refused when absent, not ours, revoked,
/// released, or (unless `allow_expired`) expired.
async fn client_node(
    r: &Arc<Registry>,
    cert: &ClientCert,
    allow_expired: bool,
) -> Result<NodeCert, ApiErr> {
    let der = cert.0.as_ref().ok_or_else(|| {
        ApiErr(
            StatusCode::UNAUTHORIZED,
            ErrorCode::ClientCertificateRequired,
            "this endpoint needs the node's certificate (mutual TLS)".into(),
        )
    })?;
    let node = NodeCert::from_der(der)
        .map_err(|e| forbidden(ErrorCode::UnknownCertificate, e.to_string()))?;
    let serial = node.serial;
    let state = r
        .read(move |_, tx| store::peers::node_state(tx, serial))
        .await?;
    match state {
        None | Some(NodeState::Released) => {
            return Err(forbidden(
                ErrorCode::UnknownCertificate,
                format!("serial {serial} is not a live node of this registry"),
            ));
        }
        Some(NodeState::Revoked) => {
            return Err(forbidden(
                ErrorCode::CertificateRevoked,
                format!("certificate serial {serial} was revoked"),
            ));
        }
        Some(NodeState::Active) => {}
    }
    if !allow_expired && node.is_expired(SystemTime::now()) {
        return Err(forbidden(
            ErrorCode::CertificateExpired,
            format!("certificate serial {serial} has expired; renew it"),
        ));
    }
    Ok(node)
}

async fn renew(
    State(r): State<Arc<Registry>>,
    Extension(cert): Extension<ClientCert>,
    body: Result<Json<api::RenewRequest>, JsonRejection>,
) -> ApiResult<api::RenewResponse> {
    let node = client_node(&r, &cert, true).await?;
    let Json(req) = body.map_err(json_rejection)?;
    let key = req
        .csr
        .as_deref()
        .map(CertificateRequest::from_pem)
        .transpose()?
        .map(|c| c.public_key);
    let policy = r.policy();
    let me = r.clone();
    let out = r
        .writer
        .run(move |tx, _| {
            store::issue::renew(
                tx,
                &me.ca,
                &policy,
                node.serial,
                key.as_ref(),
                SystemTime::now(),
            )
        })
        .await?;
    if out.renewed {
        r.metrics.count(&r.metrics.renewed);
        info!(prefix = %out.cert.prefix, serial = out.cert.serial, "renewed");
    } else {
        r.metrics.count(&r.metrics.renew_not_due);
    }
    let renew_after = NodeCert::from_der(&out.cert.der).ok().map(|c| {
        crate::identity::unix_secs(c.not_after)
            .saturating_sub(r.config().settings.renew_window_secs)
    });
    Ok(Json(api::RenewResponse {
        certificate: cert_pem(&out.cert.der),
        renewed: out.renewed,
        renew_after,
    }))
}

async fn announce(
    State(r): State<Arc<Registry>>,
    Extension(cert): Extension<ClientCert>,
    body: Result<Json<SignedAnnouncement>, JsonRejection>,
) -> ApiResult<api::AnnounceResponse> {
    let node = client_node(&r, &cert, false).await?;
    let Json(signed) = body.map_err(json_rejection)?;
    let now = SystemTime::now();
    let verifier = CaVerifier::new(&Trust::new(r.ca.cert_der(), None))?;
    let max_age = Duration::from_secs(r.config().settings.announce_max_age_secs);
    let verified = signed
        .verify(&verifier, now, max_age)
        .map_err(|e| bad(ErrorCode::BadAnnouncement, e.to_string()))?;
    if verified.cert.prefix != node.prefix {
        return Err(bad(
            ErrorCode::BadAnnouncement,
            format!(
                "a node may only announce itself ({}), not {}",
                node.prefix, verified.cert.prefix
            ),
        ));
    }
    let stored = r
        .writer
        .run(move |tx, _| store::peers::announce(tx, &verified, &signed, now))
        .await?;
    if stored {
        r.metrics.count(&r.metrics.announcements);
    }
    Ok(Json(api::AnnounceResponse { stored }))
}

async fn bootstrap(
    State(r): State<Arc<Registry>>,
    Extension(cert): Extension<ClientCert>,
    q: Result<Query<api::BootstrapQuery>, QueryRejection>,
) -> ApiResult<api::BootstrapResponse> {
    r.bootstrap_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let node = client_node(&r, &cert, false).await?;
    let Query(q) = q.map_err(|e| bad(ErrorCode::BadRequest, e.body_text()))?;
    if q.n == 0 || q.n > api::MAX_BOOTSTRAP {
        return Err(bad(
            ErrorCode::BadRequest,
            format!("n must be 1 to {}", api::MAX_BOOTSTRAP),
        ));
    }
    let now = SystemTime::now();
    let since = now - Duration::from_secs(r.config().settings.announce_max_age_secs);
    let peers = r
        .read(move |_, tx| store::peers::bootstrap(tx, node.serial, q.n, since, now))
        .await?;
    r.metrics.count(&r.metrics.bootstraps);
    Ok(Json(api::BootstrapResponse { peers }))
}

/// Accepts any CA-signed client certificate, also an expired one (checked
/// at its own `notAfter`), and none at all; the handlers decide.
#[derive(Debug)]
struct LenientClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for LenientClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) => {
                let not_after = NodeCert::from_der(end_entity)
                    .map_err(|_| Error::InvalidCertificate(CertificateError::Expired))?
                    .not_after;
                let at = UnixTime::since_unix_epoch(Duration::from_secs(
                    crate::identity::unix_secs(not_after),
                ));
                self.inner.verify_client_cert(end_entity, intermediates, at)
            }
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Lifetime of the registry's own HTTPS certificate...
pub const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(90 * 86_400);
/// ...which is replaced (without a restart) when it has less than this left.
pub const SERVER_CERT_RENEW: Duration = Duration::from_secs(30 * 86_400);

/// The registry's HTTPS identity: a CA-signed certificate for its host
/// names, replaced before it expires.
#[derive(Debug)]
pub struct ServerTls {
    hostnames: Vec<String>,
    current: RwLock<(Arc<rustls::ServerConfig>, SystemTime)>,
}

impl ServerTls {
    /// The TLS config for new connections.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Issues a new certificate if the current one expires within
    /// [`SERVER_CERT_RENEW`].
    pub fn refresh_if_due(&self, registry: &Registry, now: SystemTime) -> anyhow::Result<bool> {
        let not_after = self.current.read().unwrap_or_else(|p| p.into_inner()).1;
        if not_after > now + SERVER_CERT_RENEW {
            return Ok(false);
        }
        let fresh = issue_server_config(registry, &self.hostnames, now)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        info!("registry HTTPS certificate renewed");
        Ok(true)
    }
}

/// Issues the registry's own HTTPS certificate (fresh key, CA-signed, valid
/// [`SERVER_CERT_LIFETIME`]) for `hostnames` (DNS names or IPs).
pub fn server_tls(
    registry: &Registry,
    hostnames: &[String],
    now: SystemTime,
) -> anyhow::Result<ServerTls> {
    Ok(ServerTls {
        hostnames: hostnames.to_vec(),
        current: RwLock::new(issue_server_config(registry, hostnames, now)?),
    })
}

fn issue_server_config(
    registry: &Registry,
    hostnames: &[String],
    now: SystemTime,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, SystemTime)> {
    let key = NodeKey::generate()?;
    let (mut dns, mut ips) = (vec![], vec![]);
    for h in hostnames {
        match h.parse::<std::net::IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(h.clone()),
        }
    }
    let serial = super::core::off_runtime(|| registry.store.take_serials(1))?;
    let p = IssueParams {
        serial,
        not_before: now - Duration::from_secs(300),
        not_after: now + SERVER_CERT_LIFETIME,
    };
    let spki = key.spki_der();
    let der = registry.ca.issue_server(&spki, &dns, &ips, p)?;
    super::core::off_runtime(|| {
        registry
            .store
            .record_server_cert(serial, &der, &spki, p.not_before, p.not_after, now)
    })?;
    let trust = Trust::new(registry.ca.cert_der(), None);
    let verifier = Arc::new(LenientClientVerifier {
        inner: trust.client_verifier()?,
    });
    let me = TlsIdentity {
        chain: vec![der.into()],
        key: key.to_rustls(),
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(me.chain, me.key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), p.not_after))
}

/// Serves the API on `listener` until `shutdown` resolves. Every
/// `sweep_every`, expired and revoked prefixes are released and the HTTPS
/// certificate is renewed if due.
pub async fn serve(
    registry: Arc<Registry>,
    listener: TcpListener,
    tls: ServerTls,
    sweep_every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let tls = Arc::new(tls);
    let app = router(registry.clone());
    let sweeper = tokio::spawn(sweep_loop(registry.clone(), tls.clone(), sweep_every));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => { warn!("accept: {e}"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            () = &mut shutdown => break,
        };
        let cfg = tls.config();
        tokio::spawn(connection(tcp, peer, cfg, app.clone()));
    }
    sweeper.abort();
    Ok(())
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    cfg: Arc<rustls::ServerConfig>,
    app: Router,
) {
    let _ = tcp.set_nodelay(true);
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return debug!(%peer, "TLS handshake failed: {e}"),
        Err(_) => return debug!(%peer, "TLS handshake timed out"),
    };
    let client = ClientCert(
        stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned()),
    );
    let svc = hyper_util::service::TowerToHyperService::new(app.layer(Extension(client)));
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    if let Err(e) = builder
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
        .await
    {
        debug!(%peer, "connection: {e}");
    }
}

async fn sweep_loop(registry: Arc<Registry>, tls: Arc<ServerTls>, every: Duration) {
    loop {
        if let Err(e) = tls.refresh_if_due(&registry, SystemTime::now()) {
            warn!("renewing the HTTPS certificate: {e:#}");
        }
        let grace = Duration::from_secs(registry.config().settings.grace_period_secs);
        let res = registry
            .writer
            .run(move |tx, prefixes| store::revoke::sweep(tx, prefixes, grace, SystemTime::now()))
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
            Err(e) => warn!("sweep: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}
