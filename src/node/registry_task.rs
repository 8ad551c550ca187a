//! The node's registry task: the only place that talks HTTPS, so a slow or
//! unreachable registry never holds up the control loop.
//!
//! It carries out NodeCore's [`RegistryRequest`]s one at a time and reports
//! [`RegistryReply`]s: a bootstrap (peers' announcements), or a round
//! (announce our addresses, fetch the CRL and the network configuration,
//! renew the certificate when the registry says it is due). It checks what
//! it gets against the CA (CRL signature, configuration signature, the
//! renewed certificate's chain, key and prefix); what to do with it is
//! NodeCore's. A step the registry refuses does not stop the next ones (a
//! refused announcement must not block the renewal); an unreachable
//! registry ends the round at once.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;

use super::core::{RegistryReply, RegistryRequest};
use crate::identity::tls::{CaVerifier, TlsIdentity, Trust};
use crate::identity::{Crl, NodeCert, NodeKey, PublicKey, SignedAnnouncement};
use crate::registry::client::{ClientError, RegistryClient};

pub(crate) struct RegistryTask {
    pub(crate) url: String,
    pub(crate) ca_der: Vec<u8>,
    pub(crate) ca_key: PublicKey,
    pub(crate) cert: NodeCert,
    pub(crate) key: Arc<NodeKey>,
    pub(crate) rx: mpsc::Receiver<RegistryRequest>,
    pub(crate) replies: mpsc::Sender<RegistryReply>,
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

    async fn report(&self, reply: RegistryReply) {
        let _ = self.replies.send(reply).await;
    }

    pub(crate) async fn run(mut self) {
        while let Some(req) = self.rx.recv().await {
            let reply = match req {
                RegistryRequest::Bootstrap { n } => match self.bootstrap(n).await {
                    Ok(list) => RegistryReply::Bootstrapped(list),
                    Err(e) => RegistryReply::BootstrapFailed(format!("bootstrap: {e}")),
                },
                RegistryRequest::Round { announcement } => match self.round(announcement).await {
                    Ok(()) => RegistryReply::Done,
                    Err(e) => RegistryReply::RoundFailed(e),
                },
            };
            self.report(reply).await;
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
                Ok(crl) => self.report(RegistryReply::Crl(Box::new(crl))).await,
                Err(e) => refused.push(format!("CRL: {e}")),
            },
            Err(e) => step_failed("CRL", e, &mut refused)?,
        }
        match client.network().await {
            Ok(signed) => match signed.verify(&self.ca_key) {
                Ok(config) => {
                    self.report(RegistryReply::Network {
                        config: Box::new(config),
                        signed: Box::new(signed),
                    })
                    .await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the registry's network configuration does not verify")
                }
            },
            Err(e) => step_failed("network configuration", e, &mut refused)?,
        }
        match client.renew(None).await {
            Ok(r) => {
                if r.renewed {
                    match self.check_renewed(&r.certificate) {
                        Ok(cert) => {
                            self.cert = cert.clone();
                            self.report(RegistryReply::Renewed(Box::new(cert))).await;
                        }
                        Err(e) => refused.push(e),
                    }
                }
                if let Some(t) = r.renew_after {
                    let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t);
                    self.report(RegistryReply::RenewAfter(t)).await;
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

    /// Checks a renewed certificate: our key, our prefix, the CA.
    fn check_renewed(&self, pem: &str) -> Result<NodeCert, String> {
        let cert = NodeCert::from_pem(pem).map_err(|e| format!("renewed certificate: {e}"))?;
        let key = self.key.public_key().map_err(|e| e.to_string())?;
        if cert.public_key != key || cert.prefix != self.cert.prefix {
            return Err("the registry renewed with another key or prefix".into());
        }
        CaVerifier::new(&Trust::new(&self.ca_der, None))
            .and_then(|v| v.verify(&cert.der, SystemTime::now()))
            .map_err(|e| format!("renewed certificate: {e}"))?;
        Ok(cert)
    }
}
