//! The registry client that `re6st join` and nodes use: enrol, fetch the
//! CA, CRL and network configuration, renew, announce, bootstrap.
//!
//! HTTPS via reqwest with our own rustls config (`rustls-no-provider` +
//! `use_preconfigured_tls`, ring only): the server must hold a certificate
//! from the network CA, and with a node identity the client presents its
//! certificate (mutual TLS) for renew/announce/bootstrap.
//!
//! Several replicas: the registry URL may be a comma-separated list
//! (`https://r1:8443,https://r2:8443`), and a host name may resolve to
//! several addresses (the connector tries each). A request that fails in
//! transport (refused, reset, timed out) or gets 502/503/504 is tried
//! again on the next URL, then once more around the list after a pause;
//! the URL that answered is tried first next time. Every request is safe
//! to repeat: enrolment with the same key returns the certificate already
//! issued (and consumes the token once), renewal returns the newest
//! certificate, an announcement replaces itself.
//!
//! Before a node has the CA, [`fetch_ca`] does trust-on-first-use: it
//! accepts whatever certificate the server shows, downloads the CA, then
//! checks that the server's certificate was issued by that CA for the URL's
//! host. The caller compares the CA's fingerprint with a pinned one (or
//! warns that it did not).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::api::{self, ApiError};
use crate::identity::tls::{TlsIdentity, Trust, provider};
use crate::identity::{IdentityError, SignedAnnouncement, SignedNetworkConfig};

/// Timeout of one request.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not an `https://` URL with a host.
    #[error("bad registry URL {0:?} (expected https://host[:port])")]
    BadUrl(String),
    /// Transport failure (connect, TLS, timeout, bad HTTP). The message
    /// carries the whole chain of causes ("connection refused" is deep in
    /// it).
    #[error("talking to the registry: {}", causes(.0))]
    Http(reqwest::Error),
    /// The registry answered with an error.
    #[error("registry refused ({status}): {} ({:?})", .error.message, .error.error)]
    Api {
        /// HTTP status.
        status: u16,
        /// Its explanation.
        error: ApiError,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from the registry: {0}")]
    Protocol(String),
    /// A certificate or signature did not check out.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        Self::Http(e)
    }
}

/// `e: cause: deeper cause`, without repeating a cause that its wrapper
/// already printed.
fn causes(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut next = std::error::Error::source(e);
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

impl ClientError {
    /// Whether trying again later may succeed: the registry could not be
    /// reached (connection refused or reset, DNS, timeout), or it (or a
    /// proxy in front of it) failed on its side (5xx, `internal`, 408,
    /// 429). Everything else is final until someone changes something: a
    /// refusal (token, revoked or unknown certificate, no prefix left), a
    /// bad URL, an answer that does not check out, or a server certificate
    /// that TLS rejects.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Http(e) => !rejects_certificate(e),
            Self::Api { status, error } => {
                error.error == api::ErrorCode::Internal
                    || *status >= 500
                    || *status == 408
                    || *status == 429
            }
            Self::BadUrl(_) | Self::Protocol(_) | Self::Identity(_) => false,
        }
    }

    /// The registry's refusal code, when it answered with one.
    pub fn code(&self) -> Option<api::ErrorCode> {
        match self {
            Self::Api { error, .. } => Some(error.error),
            _ => None,
        }
    }
}

/// Whether TLS refused the registry's certificate (another CA, another
/// name): a configuration or security problem, not an outage.
fn rejects_certificate(e: &reqwest::Error) -> bool {
    let mut next = std::error::Error::source(e);
    while let Some(s) = next {
        if let Some(rustls::Error::InvalidCertificate(_)) = s.downcast_ref::<rustls::Error>() {
            return true;
        }
        // `io::Error::source` skips the error it wraps: look at it.
        next = match s.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => s.source(),
        };
    }
    false
}

/// A client for one registry (one or several replicas).
#[derive(Debug, Clone)]
pub struct RegistryClient {
    bases: Vec<String>,
    http: reqwest::Client,
    /// The replica that answered last.
    preferred: Arc<AtomicUsize>,
}

/// Pause before going around the list of replicas again.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Whether trying another replica may help.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Http(e) => !rejects_certificate(e),
        ClientError::Api { status, .. } => matches!(status, 502..=504),
        _ => false,
    }
}

/// The URLs of a comma-separated list, each checked.
fn base_urls(urls: &str) -> Result<Vec<(String, String)>, ClientError> {
    let list: Vec<_> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(base_url)
        .collect::<Result<_, _>>()?;
    if list.is_empty() {
        return Err(ClientError::BadUrl(urls.into()));
    }
    Ok(list)
}

fn base_url(url: &str) -> Result<(String, String), ClientError> {
    let u = reqwest::Url::parse(url).map_err(|_| ClientError::BadUrl(url.into()))?;
    if u.scheme() != "https" {
        return Err(ClientError::BadUrl(url.into()));
    }
    let host = u
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .ok_or_else(|| ClientError::BadUrl(url.into()))?;
    Ok((url.trim_end_matches('/').to_string(), host))
}

fn http_client(mut cfg: rustls::ClientConfig) -> Result<reqwest::Client, ClientError> {
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("re6st/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

impl RegistryClient {
    /// A client for `url` (one URL, or several separated by commas)
    /// trusting `trust`'s CA, presenting `identity` (a node certificate)
    /// when given.
    pub fn new(
        url: &str,
        trust: &Trust,
        identity: Option<TlsIdentity>,
    ) -> Result<Self, ClientError> {
        let bases = base_urls(url)?.into_iter().map(|(b, _)| b).collect();
        Ok(Self {
            bases,
            http: http_client(trust.client_config(identity)?)?,
            preferred: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The base URL tried first.
    pub fn url(&self) -> &str {
        &self.bases[self.preferred.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// Every base URL.
    pub fn urls(&self) -> &[String] {
        &self.bases
    }

    /// Sends `make(base)` to each replica in turn until one answers.
    async fn call<T: DeserializeOwned>(
        &self,
        make: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let n = self.bases.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for attempt in 0..2 * n {
            if attempt == n {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            let i = (first + attempt) % n;
            let out = match make(&self.bases[i]).send().await {
                Ok(resp) => Self::answer(resp).await,
                Err(e) => Err(e.into()),
            };
            match out {
                Err(e) if retryable(&e) => {
                    tracing::debug!(url = %self.bases[i], error = %e, "registry replica failed; trying the next");
                    last = Some(e);
                }
                other => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return other;
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::BadUrl(String::new())))
    }

    async fn answer<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
        } else {
            let error = serde_json::from_slice(&bytes).unwrap_or_else(|_| ApiError {
                error: api::ErrorCode::Unknown,
                message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            });
            Err(ClientError::Api {
                status: status.as_u16(),
                error,
            })
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(|base| self.http.get(format!("{base}{path}")))
            .await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(|base| self.http.post(format!("{base}{path}")).json(body))
            .await
    }

    /// `GET /v1/ca`: the CA certificate (PEM).
    pub async fn ca(&self) -> Result<api::CaResponse, ClientError> {
        self.get(api::PATH_CA).await
    }

    /// `GET /v1/crl`: the CRL (PEM; check it with [`crate::identity::Crl::from_pem`]).
    pub async fn crl(&self) -> Result<String, ClientError> {
        Ok(self.get::<api::CrlResponse>(api::PATH_CRL).await?.crl)
    }

    /// `GET /v1/network`: the signed network configuration (verify it with
    /// the CA key).
    pub async fn network(&self) -> Result<SignedNetworkConfig, ClientError> {
        self.get(api::PATH_NETWORK).await
    }

    /// `POST /v1/enrol`.
    pub async fn enrol(
        &self,
        csr_pem: &str,
        token: Option<&str>,
    ) -> Result<api::EnrolResponse, ClientError> {
        let req = api::EnrolRequest {
            csr: csr_pem.into(),
            token: token.map(Into::into),
        };
        self.post(api::PATH_ENROL, &req).await
    }

    /// `POST /v1/renew` (needs the node identity); `csr_pem` for a new key.
    pub async fn renew(&self, csr_pem: Option<&str>) -> Result<api::RenewResponse, ClientError> {
        self.post(
            api::PATH_RENEW,
            &api::RenewRequest {
                csr: csr_pem.map(Into::into),
            },
        )
        .await
    }

    /// `POST /v1/announce` (needs the node identity).
    pub async fn announce(
        &self,
        a: &SignedAnnouncement,
    ) -> Result<api::AnnounceResponse, ClientError> {
        self.post(api::PATH_ANNOUNCE, a).await
    }

    /// `GET /v1/bootstrap?n=N` (needs the node identity): up to `n` signed
    /// announcements of other live nodes. Verify each before use.
    pub async fn bootstrap(&self, n: u32) -> Result<Vec<SignedAnnouncement>, ClientError> {
        Ok(self
            .get::<api::BootstrapResponse>(&format!("{}?n={n}", api::PATH_BOOTSTRAP))
            .await?
            .peers)
    }
}

/// Fetches the CA from `url` (or the first of several comma-separated
/// URLs that answers) without knowing it yet (trust on first use), and
/// checks that the server's own certificate was issued by it for the URL's
/// host. Returns the CA's DER. Compare its fingerprint with a pinned one
/// before trusting it.
pub async fn fetch_ca(url: &str) -> Result<Vec<u8>, ClientError> {
    let mut last = None;
    for (base, host) in base_urls(url)? {
        match fetch_ca_from(&base, &host).await {
            Err(e) if retryable(&e) => last = Some(e),
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| ClientError::BadUrl(url.into())))
}

async fn fetch_ca_from(base: &str, host: &str) -> Result<Vec<u8>, ClientError> {
    let url = base;
    let capture = Arc::new(CaptureVerifier {
        seen: Mutex::new(None),
    });
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| IdentityError::Internal(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let http = http_client(cfg)?;
    let resp = http.get(format!("{base}{}", api::PATH_CA)).send().await?;
    let ca: api::CaResponse = RegistryClient::answer(resp).await?;
    let ca_der = crate::identity::ca_der_from_pem(&ca.certificate)?;
    crate::identity::ca_public_key(&ca_der)?;
    let server = capture
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| ClientError::Protocol("no server certificate seen".into()))?;
    let name =
        ServerName::try_from(host.to_string()).map_err(|_| ClientError::BadUrl(url.into()))?;
    Trust::new(&ca_der, None)
        .server_verifier()?
        .verify_server_cert(&server, &[], &name, &[], UnixTime::now())
        .map_err(|e| {
            ClientError::Identity(IdentityError::CertificateRejected(format!(
                "the registry's certificate is not from the CA it serves, for {host}: {e}"
            )))
        })?;
    Ok(ca_der)
}

/// Accepts any server certificate and remembers it; the TLS handshake
/// signature is still checked (the server holds that certificate's key).
#[derive(Debug)]
struct CaptureVerifier {
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for CaptureVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
