//! The node's registry task: the only place that talks HTTPS, so a slow or
//! unreachable registry never holds up the router.
//!
//! The router asks for a [`RegistryCmd::Bootstrap`] when its peer DB is
//! empty or too small, and for a [`RegistryCmd::Round`] at start and twice
//! a day: announce our addresses, fetch the CRL and the network
//! configuration, renew the certificate when the registry says it is due.
//! Every failure is reported and the node goes on with what it knows (the
//! router tries a failed round again with back-off). A step the registry
//! refuses does not stop the next ones (a refused announcement must not
//! block the renewal); an unreachable registry ends the round at once.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;

use super::router::RouterIn;
use super::{NodeConfig, persist};
use crate::identity::tls::{CaVerifier, TlsIdentity, Trust};
use crate::identity::{Crl, NodeCert, NodeKey, PublicKey, SignedAnnouncement};
use crate::registry::client::{ClientError, RegistryClient};
use crate::state_dir::files;
use crate::transport::Transport;

/// What the router asks of the registry.
#[derive(Debug)]
pub(crate) enum RegistryCmd {
    /// Ask for up to `n` peers.
    Bootstrap { n: u32 },
    /// Announce (when we have an address), CRL, configuration, renewal.
    Round {
        announcement: Option<SignedAnnouncement>,
    },
}

/// What the registry task reports.
#[derive(Debug)]
pub(crate) enum RegistryEvent {
    /// Signed announcements of other nodes (verify before use).
    Bootstrapped(Vec<SignedAnnouncement>),
    /// The registry's CRL (checked against the CA).
    Crl(Crl),
    /// Our renewed certificate (already in use by the transport).
    Renewed(NodeCert),
    /// From when the registry renews our current certificate.
    RenewAfter(SystemTime),
    /// A newer network configuration (verified; already saved).
    Network(Box<crate::identity::NetworkConfig>),
    /// A round completed.
    Done,
    /// A round failed: the registry could not be reached, or refused a
    /// step; why.
    RoundFailed(String),
    /// A bootstrap request failed; why.
    BootstrapFailed(String),
}

pub(crate) struct RegistryTask {
    pub(crate) url: String,
    pub(crate) ca_der: Vec<u8>,
    pub(crate) ca_key: PublicKey,
    pub(crate) cert: NodeCert,
    pub(crate) key: Arc<NodeKey>,
    pub(crate) transport: Arc<Transport>,
    pub(crate) config: NodeConfig,
    pub(crate) network_version: u64,
    pub(crate) rx: mpsc::Receiver<RegistryCmd>,
    pub(crate) router: mpsc::Sender<RouterIn>,
}

/// A failed step of a round: an unreachable registry ends the round
/// (`Err`), a refusal is noted and the round goes on.
fn step_failed(what: &str, e: ClientError, refused: &mut Vec<String>) -> Result<(), String> {
    let why = format!("{what}: {e}");
    if e.is_transient() {
        return Err(why);
    }
    refused.push(why);
    Ok(())
}

impl RegistryTask {
    fn client(&self) -> Result<RegistryClient, String> {
        RegistryClient::new(
            &self.url,
            &Trust::new(&self.ca_der, None),
            Some(TlsIdentity::node(&self.cert, &self.key)),
        )
        .map_err(|e| e.to_string())
    }

    async fn report(&self, ev: RegistryEvent) {
        let _ = self.router.send(RouterIn::Registry(ev)).await;
    }

    pub(crate) async fn run(mut self) {
        while let Some(cmd) = self.rx.recv().await {
            let ev = match cmd {
                RegistryCmd::Bootstrap { n } => match self.bootstrap(n).await {
                    Ok(list) => RegistryEvent::Bootstrapped(list),
                    Err(e) => RegistryEvent::BootstrapFailed(format!("bootstrap: {e}")),
                },
                RegistryCmd::Round { announcement } => match self.round(announcement).await {
                    Ok(()) => RegistryEvent::Done,
                    Err(e) => RegistryEvent::RoundFailed(e),
                },
            };
            self.report(ev).await;
        }
    }

    async fn bootstrap(&self, n: u32) -> Result<Vec<SignedAnnouncement>, String> {
        self.client()?.bootstrap(n).await.map_err(|e| e.to_string())
    }

    async fn round(&mut self, announcement: Option<SignedAnnouncement>) -> Result<(), String> {
        let client = self.client()?;
        let mut refused = Vec::new();
        if let Some(a) = &announcement
            && let Err(e) = client.announce(a).await
        {
            step_failed("announce", e, &mut refused)?;
        }
        match client.crl().await {
            Ok(pem) => match Crl::from_pem(&pem, &self.ca_der) {
                Ok(crl) => self.report(RegistryEvent::Crl(crl)).await,
                Err(e) => refused.push(format!("CRL: {e}")),
            },
            Err(e) => step_failed("CRL", e, &mut refused)?,
        }
        match client.network().await {
            Ok(signed) => match signed.verify(&self.ca_key) {
                Ok(cfg) if cfg.version > self.network_version => {
                    if let Ok(json) = serde_json::to_string_pretty(&signed) {
                        persist(&self.config, files::NETWORK, json.as_bytes());
                    }
                    self.network_version = cfg.version;
                    self.report(RegistryEvent::Network(Box::new(cfg))).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the registry's network configuration does not verify")
                }
            },
            Err(e) => step_failed("network configuration", e, &mut refused)?,
        }
        match client.renew(None).await {
            Ok(r) => {
                if r.renewed
                    && let Err(e) = self.adopt(&r.certificate).await
                {
                    refused.push(e);
                }
                if let Some(t) = r.renew_after {
                    let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t);
                    self.report(RegistryEvent::RenewAfter(t)).await;
                }
            }
            Err(e) => step_failed("renew", e, &mut refused)?,
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(refused.join("; "))
        }
    }

    /// Checks and installs a renewed certificate.
    async fn adopt(&mut self, pem: &str) -> Result<(), String> {
        let cert = NodeCert::from_pem(pem).map_err(|e| format!("renewed certificate: {e}"))?;
        let key = self.key.public_key().map_err(|e| e.to_string())?;
        if cert.public_key != key || cert.prefix != self.cert.prefix {
            return Err("the registry renewed with another key or prefix".into());
        }
        CaVerifier::new(&Trust::new(&self.ca_der, None))
            .and_then(|v| v.verify(&cert.der, SystemTime::now()))
            .map_err(|e| format!("renewed certificate: {e}"))?;
        self.transport
            .set_identity(cert.clone(), &self.key)
            .map_err(|e| e.to_string())?;
        persist(&self.config, files::CERT, cert.to_pem().as_bytes());
        self.cert = cert.clone();
        self.report(RegistryEvent::Renewed(cert)).await;
        Ok(())
    }
}
