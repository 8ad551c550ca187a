//! `re6st join`: enrol with a registry and write the node's state directory
//! (layout in [`crate::state_dir`]).
//!
//! 1. Fetch the CA (trust on first use, checked against `--ca-fingerprint`
//!    when given; otherwise print its fingerprint and warn).
//! 2. Make the key (or reuse the one a previous, interrupted run wrote),
//!    written first with mode 0600 so a crash never loses the key a
//!    certificate was issued for.
//! 3. Enrol with a CSR and the token; check the answer (certificate for our
//!    key, chained to the CA; CRL and network configuration signed by it).
//! 4. Write CA, CRL, network configuration and certificate atomically, the
//!    certificate last: its presence means "enrolled".
//!
//! Failures are a [`JoinError`]: an unreachable registry is worth waiting
//! for (`re6st node --registry` does, with back-off), a refusal or a wrong
//! CA is not.
//!
//! On an enrolled directory it says so and asks the registry to renew (the
//! registry renews only within the renewal window), refreshing the CRL and
//! network configuration on the way.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, bail};

use crate::identity::tls::{CaVerifier, TlsIdentity, Trust};
use crate::identity::{Crl, Fingerprint, NodeCert, NodeKey, make_csr};
use crate::registry::api::ErrorCode;
use crate::registry::client::{ClientError, RegistryClient, fetch_ca};
use crate::state_dir::{StateDir, files};

/// Default node state directory.
pub const DEFAULT_DIR: &str = "/var/lib/re6st/node";

/// Arguments of `re6st join`.
#[derive(Debug, Clone, clap::Args)]
pub struct JoinArgs {
    /// Registry URL, e.g. https://registry.example.net:8443 (several
    /// replicas: a name with several addresses, or URLs separated by commas).
    #[arg(long, env = "RE6ST_REGISTRY")]
    pub registry: String,
    /// Enrolment token (from `re6st registry token` on the registry).
    /// Tokens are base64url: one may begin with '-'.
    #[arg(long, env = "RE6ST_TOKEN", allow_hyphen_values = true)]
    pub token: Option<String>,
    /// SHA-256 fingerprint of the network CA (`re6st registry info` prints
    /// it). Without it the CA is trusted on first use.
    #[arg(long, env = "RE6ST_CA_FINGERPRINT")]
    pub ca_fingerprint: Option<Fingerprint>,
    /// State directory to write.
    #[arg(long, env = "RE6ST_DIR", default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
}

/// Why joining failed. [`JoinError::is_final`] tells a node that waits for
/// its registry whether to try again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The registry could not be reached, or failed on its side
    /// ([`ClientError::is_transient`]): trying again later may work.
    #[error("the registry at {url} is unreachable: {error}")]
    Unreachable {
        /// The registry URL.
        url: String,
        /// What the client saw.
        error: ClientError,
    },
    /// The registry serves another CA than the pinned one.
    #[error("the registry's CA is {served}, not the pinned {pinned}: refusing to join")]
    WrongCa {
        /// The fingerprint of the CA the registry serves.
        served: Fingerprint,
        /// The fingerprint given with `--ca-fingerprint`.
        pinned: Fingerprint,
    },
    /// The registry refused to enrol this node: token missing, unknown,
    /// used or expired, no prefix left, a malformed request...
    #[error("the registry refused to enrol this node: {message} ({code})")]
    Refused {
        /// The registry's code (`token_used`, `prefix_space_exhausted`...).
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// Talking to the registry failed in a way that retrying does not fix:
    /// a bad URL, a server certificate TLS rejects, an answer that does
    /// not check out.
    #[error("{0}")]
    Registry(ClientError),
    /// The registry's answer does not fit what was asked (another key,
    /// another CA, a document that does not verify).
    #[error("the registry's answer does not check out: {0}")]
    BadAnswer(String),
    /// The state directory or the key could not be written or made.
    #[error(transparent)]
    Local(#[from] anyhow::Error),
}

impl JoinError {
    /// Whether trying again cannot help: everything but an unreachable
    /// registry.
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::Unreachable { .. })
    }

    fn from_client(url: &str, e: ClientError) -> Self {
        if e.is_transient() {
            return Self::Unreachable {
                url: url.to_string(),
                error: e,
            };
        }
        match e {
            ClientError::Api { error, .. } => Self::Refused {
                code: error.error,
                message: error.message,
            },
            e => Self::Registry(e),
        }
    }
}

/// Runs `re6st join`.
pub fn run(args: JoinArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        let sd = StateDir::new(&args.dir);
        if sd.has(files::CERT) {
            return rejoin(&sd, &args).await;
        }
        Ok(enrol(&args).await?)
    })
}

fn fmt_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Enrols a node whose state directory holds no certificate yet, and
/// writes the directory.
pub async fn enrol(args: &JoinArgs) -> Result<(), JoinError> {
    let url = args.registry.as_str();
    let client_err = |e| JoinError::from_client(url, e);
    let bad = |e: &dyn std::fmt::Display| JoinError::BadAnswer(e.to_string());
    let sd = StateDir::new(&args.dir);
    sd.create()?;
    let ca_der = fetch_ca(url).await.map_err(client_err)?;
    let fp = Fingerprint::of(&ca_der);
    match args.ca_fingerprint {
        Some(pin) if pin != fp => {
            return Err(JoinError::WrongCa {
                served: fp,
                pinned: pin,
            });
        }
        Some(_) => println!("CA {fp} matches the pinned fingerprint"),
        None => eprintln!(
            "warning: the CA was not pinned; the registry's CA is {fp}. Compare it with `re6st registry info` \
             on the registry, and pass --ca-fingerprint next time."
        ),
    }
    let key = match sd.load_key()? {
        Some(k) => k,
        None => {
            let k = NodeKey::generate().map_err(anyhow::Error::from)?;
            sd.write(files::KEY, k.to_pem().as_bytes(), 0o600)?;
            k
        }
    };
    let trust = Trust::new(&ca_der, None);
    let client = RegistryClient::new(url, &trust, None).map_err(client_err)?;
    let csr = make_csr(&key).map_err(anyhow::Error::from)?;
    let resp = client
        .enrol(&csr, args.token.as_deref())
        .await
        .map_err(client_err)?;
    let cert = NodeCert::from_pem(&resp.certificate).map_err(|e| bad(&e))?;
    if cert.public_key != key.public_key().map_err(anyhow::Error::from)? {
        return Err(bad(&"the registry certified another key"));
    }
    if crate::identity::ca_der_from_pem(&resp.ca).map_err(|e| bad(&e))? != ca_der {
        return Err(bad(&"the registry answered with another CA"));
    }
    let now = SystemTime::now();
    CaVerifier::new(&trust)
        .and_then(|v| v.verify(&cert.der, now))
        .map_err(|e| {
            bad(&format!(
                "the new certificate does not verify against the CA: {e}"
            ))
        })?;
    let crl = Crl::from_pem(&resp.crl, &ca_der).map_err(|e| bad(&format!("the CRL: {e}")))?;
    let ca_key = crate::identity::ca_public_key(&ca_der).map_err(|e| bad(&e))?;
    let config = resp
        .network
        .verify(&ca_key)
        .map_err(|e| bad(&format!("the network configuration: {e}")))?;
    let network = serde_json::to_string_pretty(&resp.network).map_err(anyhow::Error::from)?;
    sd.write(
        files::CA,
        crate::identity::cert_pem(&ca_der).as_bytes(),
        0o644,
    )?;
    sd.write(files::CRL, crl.to_pem().as_bytes(), 0o644)?;
    sd.write(files::NETWORK, network.as_bytes(), 0o644)?;
    sd.write(files::REGISTRY_URL, format!("{url}\n").as_bytes(), 0o644)?;
    sd.write(files::CERT, cert.to_pem().as_bytes(), 0o644)?;
    println!(
        "enrolled in {}: prefix {}, address {}, certificate serial {} valid until {}",
        config.network,
        cert.prefix,
        cert.address,
        cert.serial,
        fmt_time(cert.not_after)
    );
    println!("state written to {}", sd.root().display());
    Ok(())
}

/// An enrolled directory: report, then renew if the registry says it is due.
async fn rejoin(sd: &StateDir, args: &JoinArgs) -> anyhow::Result<()> {
    let id = sd.load_identity().with_context(|| {
        format!(
            "{} holds a certificate but is not a usable state directory",
            sd.root().display()
        )
    })?;
    let fp = Fingerprint::of(&id.ca_der);
    if let Some(pin) = args.ca_fingerprint
        && pin != fp
    {
        bail!(
            "{} belongs to CA {fp}, not the pinned {pin}",
            sd.root().display()
        );
    }
    println!(
        "already enrolled: prefix {}, certificate serial {} valid until {}",
        id.cert.prefix,
        id.cert.serial,
        fmt_time(id.cert.not_after)
    );
    let trust = Trust::new(&id.ca_der, None);
    let client = RegistryClient::new(
        &args.registry,
        &trust,
        Some(TlsIdentity::node(&id.cert, &id.key)),
    )?;
    let renewed = match client.renew(None).await {
        Ok(r) => r,
        // Unreachable registry, still-valid certificate: nothing to do now.
        Err(e) if e.is_transient() && !id.cert.is_expired(SystemTime::now()) => {
            eprintln!(
                "warning: could not reach the registry to check for renewal ({e}); the certificate is still valid"
            );
            return Ok(());
        }
        Err(e) => return Err(e).context("asking the registry to renew"),
    };
    if renewed.renewed {
        let cert = NodeCert::from_pem(&renewed.certificate)?;
        if cert.public_key != id.key.public_key()? || cert.prefix != id.cert.prefix {
            bail!("the registry renewed with another key or prefix");
        }
        CaVerifier::new(&trust)?.verify(&cert.der, SystemTime::now())?;
        sd.write(files::CERT, cert.to_pem().as_bytes(), 0o644)?;
        println!(
            "renewed: serial {} valid until {}",
            cert.serial,
            fmt_time(cert.not_after)
        );
    } else {
        println!("certificate not due for renewal");
    }
    let crl = Crl::from_pem(&client.crl().await?, &id.ca_der).context("the registry's CRL")?;
    if id.crl.as_ref().is_none_or(|old| crl.number >= old.number) {
        sd.write(files::CRL, crl.to_pem().as_bytes(), 0o644)?;
    }
    let network = client.network().await?;
    let config = network
        .verify(&id.ca_key)
        .context("the network configuration")?;
    let newer = match &id.network {
        Some(old) => old
            .verify(&id.ca_key)
            .map_or(true, |o| config.version >= o.version),
        None => true,
    };
    if newer {
        sd.write(
            files::NETWORK,
            serde_json::to_string_pretty(&network)?.as_bytes(),
            0o644,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: JoinArgs,
    }

    #[test]
    fn a_token_may_begin_with_a_hyphen() {
        let w =
            Wrap::try_parse_from(["join", "--registry", "https://r", "--token", "-Ab_9"]).unwrap();
        assert_eq!(w.args.token.as_deref(), Some("-Ab_9"));
    }
}
