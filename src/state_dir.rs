//! A node's state directory: the one place that names its files.
//!
//! ```text
//! STATE/
//!   node.key      PKCS#8 PEM private key (ECDSA P-256), mode 0600
//!   node.crt      PEM node certificate (CN = prefix, IP SAN = prefix::1)
//!   ca.crt        PEM network CA certificate (the trust anchor, pinned at join)
//!   crl.pem       PEM CRL, signed by the CA (refreshed from the registry)
//!   network.json  the signed network configuration (SignedNetworkConfig JSON)
//!   registry.url  the URL `re6st join` used (the config also carries one)
//! ```
//!
//! Every file is written atomically (temporary file in the same directory,
//! fsync, rename, fsync of the directory), so a crash leaves either the old
//! or the new content, never a torn file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::identity::{Crl, NodeCert, NodeKey, PublicKey, SignedNetworkConfig};

/// File names inside a node state directory.
pub mod files {
    /// The node's private key.
    pub const KEY: &str = "node.key";
    /// The node's certificate.
    pub const CERT: &str = "node.crt";
    /// The CA certificate.
    pub const CA: &str = "ca.crt";
    /// The current CRL.
    pub const CRL: &str = "crl.pem";
    /// The signed network configuration.
    pub const NETWORK: &str = "network.json";
    /// The registry URL used to join.
    pub const REGISTRY_URL: &str = "registry.url";
}

/// A node state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// Everything a node needs to run, loaded and cross-checked.
#[derive(Debug)]
pub struct NodeIdentity {
    /// The node key.
    pub key: NodeKey,
    /// The node certificate (its key is `key`'s).
    pub cert: NodeCert,
    /// The CA certificate DER.
    pub ca_der: Vec<u8>,
    /// The CA public key (verifies the network configuration).
    pub ca_key: PublicKey,
    /// The CRL, when present.
    pub crl: Option<Crl>,
    /// The signed network configuration, when present.
    pub network: Option<SignedNetworkConfig>,
}

impl StateDir {
    /// A state directory at `root` (not created yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a file of the directory (see [`files`]).
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates the directory (mode 0700) if missing.
    pub fn create(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("setting mode 0700 on {}", self.root.display()))?;
        }
        Ok(())
    }

    /// Whether the file exists.
    pub fn has(&self, name: &str) -> bool {
        self.path(name).exists()
    }

    /// Reads a file as text.
    pub fn read(&self, name: &str) -> anyhow::Result<String> {
        let p = self.path(name);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// Reads a file if it exists. Only "not found" means absent: a
    /// directory this user may not enter is an error, not a missing file.
    pub fn read_opt(&self, name: &str) -> anyhow::Result<Option<String>> {
        let p = self.path(name);
        match std::fs::read_to_string(&p) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", p.display()))),
        }
    }

    /// Writes a file atomically with `mode`.
    pub fn write(&self, name: &str, contents: &[u8], mode: u32) -> anyhow::Result<()> {
        write_atomic(&self.path(name), contents, mode)
    }

    /// Loads the key, if present.
    pub fn load_key(&self) -> anyhow::Result<Option<NodeKey>> {
        match self.read_opt(files::KEY)? {
            Some(pem) => Ok(Some(NodeKey::from_pem(&pem).with_context(|| {
                format!("parsing {}", self.path(files::KEY).display())
            })?)),
            None => Ok(None),
        }
    }

    /// Loads and cross-checks the node identity: the certificate must be for
    /// the key, the CRL and network configuration signed by the CA.
    pub fn load_identity(&self) -> anyhow::Result<NodeIdentity> {
        let key = self
            .load_key()?
            .with_context(|| format!("no {} in {}", files::KEY, self.root.display()))?;
        let cert = NodeCert::from_pem(&self.read(files::CERT)?)
            .with_context(|| format!("parsing {}", self.path(files::CERT).display()))?;
        if cert.public_key != key.public_key()? {
            anyhow::bail!("{} does not certify {}", files::CERT, files::KEY);
        }
        let ca_pem = self.read(files::CA)?;
        let ca_der = crate::identity::ca_der_from_pem(&ca_pem)
            .with_context(|| format!("parsing {}", self.path(files::CA).display()))?;
        let ca_key = crate::identity::ca_public_key(&ca_der)?;
        let crl = match self.read_opt(files::CRL)? {
            Some(pem) => Some(
                Crl::from_pem(&pem, &ca_der).with_context(|| format!("checking {}", files::CRL))?,
            ),
            None => None,
        };
        let network = match self.read_opt(files::NETWORK)? {
            Some(json) => {
                let signed: SignedNetworkConfig = serde_json::from_str(&json)
                    .with_context(|| format!("parsing {}", files::NETWORK))?;
                signed
                    .verify(&ca_key)
                    .with_context(|| format!("checking {}", files::NETWORK))?;
                Some(signed)
            }
            None => None,
        };
        Ok(NodeIdentity {
            key,
            cert,
            ca_der,
            ca_key,
            crl,
            network,
        })
    }
}

/// Writes `path` atomically: a temporary file in the same directory, fsync,
/// rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .context("setting file mode")?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.write_all(contents).context("writing")?;
    tmp.as_file().sync_all().context("fsync")?;
    tmp.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path().join("st"));
        s.create().unwrap();
        s.write(files::KEY, b"one", 0o600).unwrap();
        s.write(files::KEY, b"two", 0o600).unwrap();
        assert_eq!(s.read(files::KEY).unwrap(), "two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(s.path(files::KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600);
        }
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(s.root()).unwrap().count(), 1);
        assert!(s.load_identity().is_err());
    }

    #[test]
    fn unreadable_is_an_error_not_an_absence() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path().join("st"));
        s.create().unwrap();
        assert!(s.read_opt(files::KEY).unwrap().is_none());
        // A state "directory" that is a file: reading in it fails with
        // ENOTDIR, as it fails with EACCES in a directory of another user
        // (which root, running the tests, could enter).
        let file = d.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let s = StateDir::new(&file);
        assert!(s.read_opt(files::KEY).is_err());
        let err = format!("{:#}", s.load_identity().unwrap_err());
        assert!(err.starts_with("reading "), "{err}");
    }
}
