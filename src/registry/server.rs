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
//! [`super::api::MAX_BODY`] (see [`super::listener`], which also bounds
//! connections and time), JSON and query rejections, unknown paths and
//! methods all answer with an [`ApiError`]. A database that cannot be
//! reached is a 503 (`database_unavailable`), so clients try another
//! replica.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use rustls::pki_types::CertificateDer;
use tracing::{debug, info, warn};

use super::api::{self, ApiError, ErrorCode};
use super::core::Registry;
use super::store::{self, NodeState, StoreError};
use crate::identity::tls::{CaVerifier, Trust};
use crate::identity::{CertificateRequest, IdentityError, NodeCert, SignedAnnouncement, cert_pem};

/// How long the health check waits for the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

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
        .route(api::PATH_HEALTH, get(health))
        .route(api::PATH_TOPOLOGY_SVG, get(public_topology_svg))
        .route(api::PATH_TOPOLOGY_JSON, get(public_topology_json))
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

/// `GET /v1/health`: 200 when this replica can reach its database, 503
/// otherwise (what a load balancer checks).
pub async fn health(State(r): State<Arc<Registry>>) -> Response {
    let db = tokio::time::timeout(
        HEALTH_TIMEOUT,
        r.read(|_, tx| tx.query_one("SELECT 1", &[]).map(|_| ())),
    )
    .await;
    let database = match db {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {HEALTH_TIMEOUT:?}"),
    };
    let ok = database == "ok";
    let body = api::HealthResponse {
        status: if ok { "ok" } else { "unavailable" }.into(),
        database,
        backend: r.store.backend().name().into(),
        version: env!("CARGO_PKG_VERSION").into(),
        writes_queued: r.writer.queued() as u64,
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// The map of the network now (nodes that announced within the
/// bootstrap age).
pub async fn map(r: &Arc<Registry>) -> Result<super::topology::Map, ApiErr> {
    let now = SystemTime::now();
    let since = now - Duration::from_secs(r.config().settings.announce_max_age_secs);
    let anns = r
        .read(move |_, tx| store::peers::announcements(tx, since, now))
        .await?;
    Ok(super::topology::Map::build(Some(r.network), &anns, now))
}

/// `GET /v1/topology.svg`.
pub async fn topology_svg(State(r): State<Arc<Registry>>) -> Result<Response, ApiErr> {
    let svg = super::topology::svg::render(&map(&r).await?);
    Ok(([(axum::http::header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

/// `GET /v1/topology.json`.
pub async fn topology_json(State(r): State<Arc<Registry>>) -> ApiResult<super::topology::Map> {
    Ok(Json(map(&r).await?))
}

fn topology_allowed(r: &Registry) -> Result<(), ApiErr> {
    if r.public_topology.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    Err(forbidden(
        ErrorCode::TopologyNotPublic,
        "the map of the network is served on the registry's metrics listener; \
         run the registry with --public-topology to serve it here",
    ))
}

async fn public_topology_svg(State(r): State<Arc<Registry>>) -> Result<Response, ApiErr> {
    topology_allowed(&r)?;
    topology_svg(State(r)).await
}

async fn public_topology_json(State(r): State<Arc<Registry>>) -> ApiResult<super::topology::Map> {
    topology_allowed(&r)?;
    topology_json(State(r)).await
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
        .run(move |tx, prefixes| {
            store::issue::renew(
                tx,
                prefixes,
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

pub use super::listener::{Limits, serve, serve_with};
pub use super::server_tls::{ServerTls, server_tls};
