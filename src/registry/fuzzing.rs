//! Entry point of the `registry_api` fuzz target and of the test that
//! replays its corpus: HTTP requests with arbitrary paths, methods,
//! content types, client certificates and bodies, answered by the
//! registry's real router over a real store (in a temporary directory),
//! without sockets or TLS.
//!
//! The promises checked: no panic, never a 5xx (bad input is the client's
//! fault), every error body is an [`ApiError`], every success body is the
//! endpoint's answer type.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Extension;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use rustls::pki_types::CertificateDer;
use tower::ServiceExt;

use super::api::{self, ApiError};
use super::core::Registry;
use super::server::{ClientCert, router};
use crate::identity::{NodeCert, NodeKey, make_csr};

/// Endpoints, by the input's first byte.
const PATHS: [&str; 9] = [
    api::PATH_CA,
    api::PATH_CRL,
    api::PATH_NETWORK,
    api::PATH_ENROL,
    api::PATH_RENEW,
    api::PATH_ANNOUNCE,
    api::PATH_BOOTSTRAP,
    "/v1/nothing",
    "/",
];

/// A registry to send requests to, removed when dropped.
pub struct ApiFuzzer {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    /// The certificate of a node this registry enrolled.
    cert: CertificateDer<'static>,
    _dir: tempfile::TempDir,
}

impl ApiFuzzer {
    /// A new registry (open enrolment) with one node enrolled.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let registry = Registry::open(
            dir.path(),
            Some("fd00:f0::/48".parse()?),
            "https://[::1]:8443".into(),
            |s| s.open = true,
            SystemTime::now(),
        )?;
        let app = router(Arc::new(registry));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let key = NodeKey::generate()?;
        let body = serde_json::to_vec(&api::EnrolRequest {
            csr: make_csr(&key)?,
            token: None,
        })?;
        let anonymous = app.clone().layer(Extension(ClientCert(None)));
        let (status, answer) =
            rt.block_on(send(anonymous, Method::POST, api::PATH_ENROL, true, body));
        anyhow::ensure!(status == StatusCode::OK, "enrolling: {status}");
        let enrolled: api::EnrolResponse = serde_json::from_slice(&answer)?;
        let cert = CertificateDer::from(NodeCert::from_pem(&enrolled.certificate)?.der);
        Ok(Self {
            rt,
            app,
            cert,
            _dir: dir,
        })
    }

    /// One request from `data`: byte 0 picks the endpoint, byte 1 the
    /// method, the content type, whether the node's certificate is
    /// presented and whether the rest is the query (else the body).
    pub fn request(&self, data: &[u8]) {
        let (Some(&which), Some(&flags)) = (data.first(), data.get(1)) else {
            return;
        };
        let rest = &data[2..];
        let path = PATHS[usize::from(which) % PATHS.len()];
        let method = match flags & 3 {
            0 => Method::GET,
            1 => Method::POST,
            2 => Method::PUT,
            _ => Method::DELETE,
        };
        let json = flags & 4 == 0;
        let cert = (flags & 8 != 0).then(|| self.cert.clone());
        let (uri, body) = if flags & 16 != 0 {
            let q: String = String::from_utf8_lossy(rest)
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .collect();
            (format!("{path}?{q}"), Vec::new())
        } else {
            (path.to_string(), rest.to_vec())
        };
        let (status, answer) = self.rt.block_on(async {
            let app = self.app.clone().layer(Extension(ClientCert(cert)));
            send(app, method, &uri, json, body).await
        });
        check(path, status, &answer);
    }
}

/// Sends one request to `app` (which says which client certificate the
/// connection presented); the status and the body.
async fn send(
    app: axum::Router,
    method: Method,
    uri: &str,
    json: bool,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if json {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let Ok(req) = req.body(Body::from(body)) else {
        // Not a request hyper would have parsed (a bad URI).
        return (StatusCode::BAD_REQUEST, b"{}".to_vec());
    };
    let resp = app.oneshot(req).await.expect("the router is infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("a response body in memory");
    (status, bytes.to_vec())
}

/// The answer's promises.
fn check(path: &str, status: StatusCode, body: &[u8]) {
    assert!(
        !status.is_server_error(),
        "{path}: {status} for bad input: {}",
        String::from_utf8_lossy(body)
    );
    if !status.is_success() {
        if body != b"{}" {
            serde_json::from_slice::<ApiError>(body).unwrap_or_else(|e| {
                panic!("{path}: an error body that is not an ApiError ({e}): {body:?}")
            });
        }
        return;
    }
    let ok = match path {
        api::PATH_CA => serde_json::from_slice::<api::CaResponse>(body).is_ok(),
        api::PATH_CRL => serde_json::from_slice::<api::CrlResponse>(body).is_ok(),
        api::PATH_NETWORK => serde_json::from_slice::<api::SignedNetworkConfig>(body).is_ok(),
        api::PATH_ENROL => serde_json::from_slice::<api::EnrolResponse>(body).is_ok(),
        api::PATH_RENEW => serde_json::from_slice::<api::RenewResponse>(body).is_ok(),
        api::PATH_ANNOUNCE => serde_json::from_slice::<api::AnnounceResponse>(body).is_ok(),
        api::PATH_BOOTSTRAP => serde_json::from_slice::<api::BootstrapResponse>(body).is_ok(),
        _ => false,
    };
    assert!(
        ok,
        "{path}: {status} with a body that is not its answer: {body:?}"
    );
}
