//! The registry's HTTPS JSON API: paths and the request/response types that
//! the server ([`super::server`]) and the client ([`super::client`]) share.
//!
//! | method | path | TLS client cert | request | response |
//! |---|---|---|---|---|
//! | GET  | `/v1/ca` | – | – | [`CaResponse`] |
//! | GET  | `/v1/crl` | – | – | [`CrlResponse`] |
//! | GET  | `/v1/network` | – | – | [`SignedNetworkConfig`] |
//! | POST | `/v1/enrol` | – | [`EnrolRequest`] | [`EnrolResponse`] |
//! | POST | `/v1/renew` | node | [`RenewRequest`] | [`RenewResponse`] |
//! | POST | `/v1/announce` | node | [`SignedAnnouncement`] | [`AnnounceResponse`] |
//! | GET  | `/v1/bootstrap?n=N` | node | – | [`BootstrapResponse`] |
//! | GET  | `/v1/health` | – | – | [`HealthResponse`] (200, or 503) |
//! | GET  | `/v1/topology.svg`, `/v1/topology.json` | – | – | the map (only with `--public-topology`; always on the metrics listener) |
//!
//! Every error is a 4xx (or 5xx for the registry's own faults) with an
//! [`ApiError`] body, e.g. `{"error":"unknown_token","message":"..."}`.

use serde::{Deserialize, Serialize};

pub use crate::identity::{SignedAnnouncement, SignedNetworkConfig};

/// Path of the CA certificate.
pub const PATH_CA: &str = "/v1/ca";
/// Path of the CRL.
pub const PATH_CRL: &str = "/v1/crl";
/// Path of the signed network configuration.
pub const PATH_NETWORK: &str = "/v1/network";
/// Path of enrolment.
pub const PATH_ENROL: &str = "/v1/enrol";
/// Path of renewal (mutual TLS).
pub const PATH_RENEW: &str = "/v1/renew";
/// Path of announcements (mutual TLS).
pub const PATH_ANNOUNCE: &str = "/v1/announce";
/// Path of bootstrap (mutual TLS).
pub const PATH_BOOTSTRAP: &str = "/v1/bootstrap";
/// Path of the health check.
pub const PATH_HEALTH: &str = "/v1/health";
/// Path of the drawing of the network.
pub const PATH_TOPOLOGY_SVG: &str = "/v1/topology.svg";
/// Path of the network's graph, JSON.
pub const PATH_TOPOLOGY_JSON: &str = "/v1/topology.json";

/// Largest request body the registry reads.
pub const MAX_BODY: usize = 64 * 1024;
/// Most peers one bootstrap answer holds.
pub const MAX_BOOTSTRAP: u32 = 64;

/// `GET /v1/ca`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaResponse {
    /// The CA certificate, PEM.
    pub certificate: String,
    /// Its SHA-256 fingerprint (`sha256:<hex>`), informational: a client
    /// computes it itself.
    pub fingerprint: String,
}

/// `GET /v1/crl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlResponse {
    /// The CRL, PEM (`X509 CRL`), signed by the CA.
    pub crl: String,
}

/// `POST /v1/enrol`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolRequest {
    /// PEM CSR; only its key is used.
    pub csr: String,
    /// Enrolment token (required unless the registry runs with `--open`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Answer to an enrolment: everything a node needs to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolResponse {
    /// The node certificate, PEM.
    pub certificate: String,
    /// The CA certificate, PEM.
    pub ca: String,
    /// The current CRL, PEM.
    pub crl: String,
    /// The signed network configuration.
    pub network: SignedNetworkConfig,
}

/// `POST /v1/renew` (mutual TLS with the node's current certificate, which
/// may have expired less than the grace period ago).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    /// A CSR for a new key (key rotation); without one the current key is
    /// certified again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
}

/// Answer to a renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewResponse {
    /// The node's newest certificate, PEM (same prefix).
    pub certificate: String,
    /// Whether it was issued now (false: not due yet, this is the current one).
    pub renewed: bool,
    /// From when (UNIX seconds) the registry renews `certificate`: a node
    /// that cannot reach it after that is overdue (absent from older
    /// registries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_after: Option<u64>,
}

/// Answer to an announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceResponse {
    /// Whether it replaced the stored one (false: an equal or newer one is
    /// stored already).
    pub stored: bool,
}

/// Query of `GET /v1/bootstrap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapQuery {
    /// How many peers (1 to [`MAX_BOOTSTRAP`]).
    pub n: u32,
}

/// Answer to a bootstrap request: recently announced nodes, never the
/// requester, never revoked ones, in random order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapResponse {
    /// Signed announcements; verify each with the CA and CRL.
    pub peers: Vec<SignedAnnouncement>,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `ok`, or `unavailable` (with status 503).
    pub status: String,
    /// `ok`, or why the database cannot be used.
    pub database: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The registry's version.
    pub version: String,
    /// Write operations waiting in this replica.
    pub writes_queued: u64,
}

/// What went wrong, as a stable machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body is not the JSON expected (or a query parameter is bad).
    BadRequest,
    /// A PEM field does not hold a PEM block of the right kind.
    BadPem,
    /// The CSR's DER is malformed.
    MalformedCsr,
    /// The CSR's self-signature does not verify.
    BadCsrSignature,
    /// The key type is not accepted (ECDSA P-256/P-384 and Ed25519 are).
    UnsupportedKeyType,
    /// The registry needs a token and none was given.
    TokenRequired,
    /// The token does not exist.
    UnknownToken,
    /// The token was used already (by another key).
    TokenUsed,
    /// The token has expired.
    TokenExpired,
    /// No prefix of the requested size is free.
    PrefixSpaceExhausted,
    /// The body is larger than [`MAX_BODY`].
    PayloadTooLarge,
    /// This endpoint needs a client certificate (mutual TLS).
    ClientCertificateRequired,
    /// The client certificate was revoked.
    CertificateRevoked,
    /// The client certificate has expired (only renewal accepts it, within
    /// the grace period).
    CertificateExpired,
    /// The client certificate is not one the registry issued, or its prefix
    /// was released.
    UnknownCertificate,
    /// The announcement does not verify (signature, prefix, timestamp,
    /// addresses).
    BadAnnouncement,
    /// No such path.
    NotFound,
    /// The path exists but not with this method.
    MethodNotAllowed,
    /// The request needs `Content-Type: application/json`.
    UnsupportedMediaType,
    /// The registry failed (its fault, not the request's).
    Internal,
    /// The registry's database cannot be reached right now (503): try
    /// again, or another replica.
    DatabaseUnavailable,
    /// Too many requests are waiting (503): try again in a moment.
    Busy,
    /// The request (headers or body) did not arrive in time (408).
    RequestTimeout,
    /// The map of the network is served only on the metrics listener
    /// unless the registry runs with `--public-topology`.
    TopologyNotPublic,
    /// A code this client does not know (sent by a newer registry).
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for ErrorCode {
    /// The code as it travels (`token_used`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(s)) => f.write_str(&s),
            _ => write!(f, "{self:?}"),
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: ErrorCode,
    /// A sentence for humans saying what to fix.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_json() {
        let e = ApiError {
            error: ErrorCode::TokenUsed,
            message: "token was used".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"error":"token_used","message":"token was used"}"#
        );
        assert_eq!(ErrorCode::TokenUsed.to_string(), "token_used");
        let future: ApiError =
            serde_json::from_str(r#"{"error":"brand_new","message":"m"}"#).unwrap();
        assert_eq!(future.error, ErrorCode::Unknown);

        let r = EnrolRequest {
            csr: "C".into(),
            token: None,
        };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"csr":"C"}"#);
        let r: EnrolRequest = serde_json::from_str(r#"{"csr":"C","token":"t"}"#).unwrap();
        assert_eq!(r.token.as_deref(), Some("t"));

        let r: RenewRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(r, RenewRequest::default());
        assert_eq!(
            serde_json::to_string(&RenewResponse {
                certificate: "X".into(),
                renewed: true,
                renew_after: None,
            })
            .unwrap(),
            r#"{"certificate":"X","renewed":true}"#
        );
        let b = BootstrapResponse {
            peers: vec![SignedAnnouncement {
                payload: "p".into(),
                signature: "s".into(),
                certificate: "c".into(),
            }],
        };
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"peers":[{"payload":"p","signature":"s","certificate":"c"}]}"#
        );
        assert_eq!(
            serde_json::to_string(&CaResponse {
                certificate: "P".into(),
                fingerprint: "sha256:00".into()
            })
            .unwrap(),
            r#"{"certificate":"P","fingerprint":"sha256:00"}"#
        );
        assert_eq!(
            serde_json::to_string(&AnnounceResponse { stored: true }).unwrap(),
            r#"{"stored":true}"#
        );
    }
}
