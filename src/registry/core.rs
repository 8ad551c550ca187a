//! The registry's state: its directory, settings, CA, store and allocator,
//! opened once and shared by the HTTPS handlers.
//!
//! Registry directory layout:
//!
//! ```text
//! DIR/
//!   ca.key        PKCS#8 PEM CA key, mode 0600 (the network's root secret)
//!   ca.crt        PEM CA certificate (what nodes pin)
//!   registry.db   SQLite store (+ -wal/-shm files)
//!   registry.lock held (flock) by the running server: one server per store
//! ```

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use super::alloc::BuddyAllocator;
use super::store::{
    META_NETWORK, META_NETWORK_CONFIG, META_NEXT_SERIAL, META_SETTINGS, Policy, Store,
};
use crate::identity::{Ca, NetworkConfig, SignedNetworkConfig};
use crate::state_dir::write_atomic;

/// CA key file name.
pub const CA_KEY: &str = "ca.key";
/// CA certificate file name.
pub const CA_CERT: &str = "ca.crt";
/// Database file name.
pub const DB: &str = "registry.db";
/// Lock file name.
pub const LOCK: &str = "registry.lock";

/// Lifetime of the CA certificate made at first start.
const CA_LIFETIME: Duration = Duration::from_secs(20 * 365 * 86_400);

/// Persistent settings: chosen at first start, changed by later `run`
/// options, kept in the store so a restart without options keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Enrolment without a token.
    pub open: bool,
    /// Node certificate lifetime (seconds).
    pub cert_lifetime_secs: u64,
    /// Renewal window (seconds before expiry).
    pub renew_window_secs: u64,
    /// Grace period after expiry before the prefix is released (seconds).
    pub grace_period_secs: u64,
    /// Bootstrap answers only hold nodes announced this recently (seconds).
    pub announce_max_age_secs: u64,
    /// The network parameters (its `version`, `issued_at`, `network` and
    /// `registry_url` are managed by the registry).
    pub network: NetworkConfig,
}

impl Settings {
    /// Defaults for `network`: 1-year certificates renewed in their last 30
    /// days, 30 days of grace, bootstrap from nodes seen in the last 25 h.
    pub fn defaults(network: Ipv6Net) -> Self {
        Self {
            open: false,
            cert_lifetime_secs: 365 * 86_400,
            renew_window_secs: 30 * 86_400,
            grace_period_secs: 30 * 86_400,
            // Nodes announce at start and every 12 h: two rounds
            // and a margin, so a live node is always in bootstrap answers.
            announce_max_age_secs: 25 * 3600,
            network: NetworkConfig::defaults(network, String::new()),
        }
    }

    /// The issuing policy.
    pub fn policy(&self) -> Policy {
        Policy {
            open: self.open,
            node_prefix_len: self.network.node_prefix_len,
            cert_lifetime: Duration::from_secs(self.cert_lifetime_secs),
            renew_window: Duration::from_secs(self.renew_window_secs),
            grace_period: Duration::from_secs(self.grace_period_secs),
        }
    }
}

/// The opened registry.
pub struct Registry {
    /// The directory.
    pub dir: PathBuf,
    /// The CA.
    pub ca: Ca,
    /// Settings in force.
    pub settings: Settings,
    /// The signed network configuration served to nodes.
    pub network_config: SignedNetworkConfig,
    inner: Mutex<Inner>,
    /// Bootstrap requests answered since start (how much nodes rely on the
    /// registry to find peers; peer exchange should keep it low).
    pub bootstrap_requests: std::sync::atomic::AtomicU64,
    _lock: Option<std::fs::File>,
}

/// The store and the allocator, always used together under one lock.
pub struct Inner {
    /// The database.
    pub store: Store,
    /// Free prefixes (derived from the store).
    pub alloc: BuddyAllocator,
}

/// Opens the store of `dir`, creating the directory, CA and database on
/// first use. `network` is only used (and random if `None`) at creation;
/// afterwards it must match.
pub fn open_store(
    dir: &Path,
    network: Option<Ipv6Net>,
    now: SystemTime,
) -> anyhow::Result<(Store, Ca, Ipv6Net)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting mode 0700 on {}", dir.display()))?;
    }
    let store = Store::open(&dir.join(DB))
        .with_context(|| format!("opening {}", dir.join(DB).display()))?;
    let stored: Option<Ipv6Net> = store
        .meta(META_NETWORK)?
        .map(|s| s.parse().context("bad network prefix in the store"))
        .transpose()?;
    let net = match (stored, network) {
        (Some(s), Some(n)) if s != n.trunc() => anyhow::bail!(
            "this registry serves {s}; the network prefix is fixed when the registry is created \
             (a new prefix needs a new registry directory)"
        ),
        (Some(s), _) => s,
        (None, n) => n.map(|n| n.trunc()).unwrap_or_else(random_ula),
    };
    let (key_path, cert_path) = (dir.join(CA_KEY), dir.join(CA_CERT));
    let ca = if key_path.exists() && cert_path.exists() {
        let key = std::fs::read_to_string(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        let cert = std::fs::read_to_string(&cert_path)
            .with_context(|| format!("reading {}", cert_path.display()))?;
        Ca::from_pem(&cert, &key).context("loading the CA")?
    } else if stored.is_some() {
        anyhow::bail!(
            "{} or {} is missing: restore them from backup",
            key_path.display(),
            cert_path.display()
        );
    } else {
        // Serial 1 is the CA's; node serials start at 2.
        let ca = Ca::generate(net, 1, now, CA_LIFETIME)?;
        write_atomic(&key_path, ca.key_pem().as_bytes(), 0o600)?;
        write_atomic(&cert_path, ca.cert_pem().as_bytes(), 0o644)?;
        ca
    };
    if stored.is_none() {
        store.set_meta(META_NETWORK, &net.to_string())?;
        store.set_meta(META_NEXT_SERIAL, "2")?;
    }
    Ok((store, ca, net))
}

/// A random ULA /48 (RFC 4193: fd00::/8 + 40 random bits).
pub fn random_ula() -> Ipv6Net {
    let mut b = [0u8; 5];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[1..6].copy_from_slice(&b);
    Ipv6Net::new(std::net::Ipv6Addr::from(a), 48).unwrap_or_default()
}

impl Registry {
    /// Opens the registry in `dir` for serving: takes the lock, merges
    /// `apply` into the stored settings, re-signs the network configuration
    /// if its parameters or `registry_url` changed, rebuilds the allocator.
    pub fn open(
        dir: &Path,
        network: Option<Ipv6Net>,
        registry_url: String,
        apply: impl FnOnce(&mut Settings),
        now: SystemTime,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))
            .context("opening the lock file")?;
        lock.try_lock()
            .map_err(|_| anyhow::anyhow!("another registry is running on {}", dir.display()))?;
        let (store, ca, net) = open_store(dir, network, now)?;
        let mut settings: Settings = match store.meta(META_SETTINGS)? {
            Some(j) => serde_json::from_str(&j).context("bad settings in the store")?,
            None => Settings::defaults(net),
        };
        apply(&mut settings);
        settings.network.network = net;
        settings.network.registry_url = registry_url;
        settings
            .network
            .validate()
            .context("invalid network parameters")?;
        let previous: Option<SignedNetworkConfig> = store
            .meta(META_NETWORK_CONFIG)?
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .context("bad network configuration in the store")?;
        let stored_signed = previous.clone();
        let previous = previous.map(|p| p.verify(ca.public_key())).transpose()?;
        let network_config = match previous {
            Some(p) if p.same_parameters(&settings.network) => {
                settings.network = p;
                // Unchanged: keep serving the stored signed copy.
                stored_signed
                    .ok_or_else(|| anyhow::anyhow!("unreachable: no stored configuration"))?
            }
            p => {
                settings.network.version = p.map_or(1, |p| p.version + 1);
                settings.network.issued_at = crate::identity::unix_secs(now);
                let signed = settings.network.sign(&ca)?;
                store.set_meta(META_NETWORK_CONFIG, &serde_json::to_string(&signed)?)?;
                signed
            }
        };
        store.set_meta(META_SETTINGS, &serde_json::to_string(&settings)?)?;
        let alloc = store.allocator(net)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            ca,
            settings,
            network_config,
            inner: Mutex::new(Inner { store, alloc }),
            bootstrap_requests: std::sync::atomic::AtomicU64::new(0),
            _lock: Some(lock),
        })
    }

    /// Runs `f` on the store and allocator on a blocking thread (SQLite
    /// calls block, and fsync takes milliseconds).
    pub async fn with<T: Send + 'static>(
        self: &std::sync::Arc<Self>,
        f: impl FnOnce(&Self, &mut Inner) -> T + Send + 'static,
    ) -> T {
        let me = self.clone();
        let run = move || {
            let mut g = me.inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&me, &mut g)
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Runs `f` on the store synchronously (for startup and tests).
    pub fn with_sync<T>(&self, f: impl FnOnce(&Self, &mut Inner) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(self, &mut g)
    }
}
