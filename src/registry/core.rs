//! The registry's state: where it lives, its settings, CA, store and
//! writer, opened once and shared by the HTTPS handlers.
//!
//! With SQLite (the default), the registry directory holds everything:
//!
//! ```text
//! DIR/
//!   ca.key        PKCS#8 PEM CA key, mode 0600, or the same encrypted
//!                 (`RE6ST ENCRYPTED CA KEY`) when a CA key secret is given
//!   ca.crt        PEM CA certificate (what nodes pin)
//!   registry.db   SQLite store (+ -wal/-shm files)
//!   registry.lock held (flock) by the running server: one server per store
//! ```
//!
//! With PostgreSQL (`--database postgres://...`), the CA certificate and
//! the encrypted CA key live in the database's `meta` table, so every
//! replica shares them; the secret that decrypts the key is given to each
//! replica (`--ca-key-secret-file` or `RE6ST_CA_KEY_SECRET`) and never
//! stored in the database.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use super::ca_key::{CaSecret, is_sealed};
use super::metrics::RegistryMetrics;
use super::store::{
    self, Backend, Location, META_CA_CERT, META_CA_KEY, META_NETWORK, META_NETWORK_CONFIG,
    META_NEXT_SERIAL, META_SETTINGS, Policy, Store, StoreError, Tx,
};
use super::writer::Writer;
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

/// Where a registry keeps its state.
#[derive(Debug)]
pub struct Place {
    /// The registry directory (SQLite: everything; PostgreSQL: unused).
    pub dir: PathBuf,
    /// The database.
    pub database: Location,
    /// The secret that encrypts the CA key at rest (required with
    /// PostgreSQL).
    pub secret: Option<CaSecret>,
}

impl Place {
    /// SQLite in `dir`, CA key unencrypted.
    pub fn sqlite(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            database: Location::Sqlite(dir.join(DB)),
            secret: None,
        }
    }
}

/// Runs `f` on a thread outside the async executor when called inside it
/// (the PostgreSQL client blocks on a runtime of its own).
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    })
}

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
    /// Length of the IPv4 subnet each node gets when the network has IPv4
    /// (`network.ipv4`).
    #[serde(default = "default_ipv4_prefix_len")]
    pub ipv4_prefix_len: u8,
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
            ipv4_prefix_len: default_ipv4_prefix_len(),
            network: NetworkConfig::defaults(network, String::new()),
        }
    }

    /// Checks what the network configuration's own validation cannot:
    /// the IPv4 subnet length against the IPv4 network.
    pub fn validate(&self) -> Result<(), String> {
        self.network
            .validate()
            .map_err(|e| format!("invalid network parameters: {e}"))?;
        if let Some(net) = self.network.ipv4
            && (self.ipv4_prefix_len <= net.prefix_len() || self.ipv4_prefix_len > 32)
        {
            return Err(format!(
                "IPv4 node subnets of /{} do not fit in {net}: give --ipv4-prefix-len between {} \
                 and 32",
                self.ipv4_prefix_len,
                net.prefix_len() + 1
            ));
        }
        Ok(())
    }

    /// The issuing policy.
    pub fn policy(&self) -> Policy {
        Policy {
            open: self.open,
            node_prefix_len: self.network.node_prefix_len,
            cert_lifetime: Duration::from_secs(self.cert_lifetime_secs),
            renew_window: Duration::from_secs(self.renew_window_secs),
            grace_period: Duration::from_secs(self.grace_period_secs),
            ipv4: self.network.ipv4.map(|net| (net, self.ipv4_prefix_len)),
        }
    }
}

/// Node IPv4 subnets are /24 unless the operator chooses: room for a
/// host's containers or a small LAN behind each node.
fn default_ipv4_prefix_len() -> u8 {
    24
}

/// The settings in force and the signed configuration they make.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings in force.
    pub settings: Settings,
    /// The signed network configuration served to nodes.
    pub network_config: SignedNetworkConfig,
}

/// The opened registry.
pub struct Registry {
    /// The directory (SQLite), or where the process was started from.
    pub dir: PathBuf,
    /// The CA.
    pub ca: Ca,
    /// The network prefix.
    pub network: Ipv6Net,
    config: RwLock<Arc<Config>>,
    /// The database (reads, admin writes).
    pub store: Store,
    /// The group-commit writer (every write of the API).
    pub writer: Writer,
    /// This process's counts.
    pub metrics: Arc<RegistryMetrics>,
    /// Bootstrap requests answered since start (how much nodes rely on the
    /// registry to find peers; peer exchange should keep it low).
    pub bootstrap_requests: AtomicU64,
    /// Whether the API serves the map of the network to anyone
    /// (`--public-topology`); the metrics listener always does.
    pub public_topology: std::sync::atomic::AtomicBool,
    _lock: Option<std::fs::File>,
}

/// Opens the store of `place`, creating the directory, CA and database on
/// first use. `network` is only used (and random if `None`) at creation;
/// afterwards it must match. Returns the store, the CA and the network.
pub fn open_store(
    place: &Place,
    network: Option<Ipv6Net>,
    now: SystemTime,
) -> anyhow::Result<(Store, Ca, Ipv6Net)> {
    off_runtime(|| {
        let (store, net) = open_database(place, network, now)?;
        let ca = load_ca(place, &store)?;
        Ok((store, ca, net))
    })
}

/// Opens the database (creating the directory, CA and network at first
/// use) without loading the CA: what the admin commands that sign nothing
/// need.
pub fn open_database(
    place: &Place,
    network: Option<Ipv6Net>,
    now: SystemTime,
) -> anyhow::Result<(Store, Ipv6Net)> {
    if place.database.backend() == Backend::Sqlite {
        let dir = &place.dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("setting mode 0700 on {}", dir.display()))?;
        }
    } else if place.secret.is_none() {
        anyhow::bail!(
            "a registry on PostgreSQL keeps its CA key in the database, encrypted: give the \
             secret that encrypts it with --ca-key-secret-file FILE or {}",
            super::ca_key::SECRET_ENV
        );
    }
    let store =
        Store::open(&place.database).with_context(|| format!("opening {}", place.database))?;
    // Creation runs in one write transaction: replicas starting together
    // on an empty database make one CA, not two.
    let net = store.write(|tx| {
        let stored: Option<Ipv6Net> = store::meta(tx, META_NETWORK)?
            .map(|s| {
                s.parse()
                    .map_err(|_| StoreError::Config("bad network prefix in the store".into()))
            })
            .transpose()?;
        let net = match (stored, network) {
            (Some(s), Some(n)) if s != n.trunc() => {
                return Err(StoreError::Config(format!(
                    "this registry serves {s}; the network prefix is fixed when the registry \
                     is created (a new prefix needs a new registry)"
                )));
            }
            (Some(s), _) => return Ok(s),
            (None, n) => n.map(|n| n.trunc()).unwrap_or_else(random_ula),
        };
        create_ca(place, tx, net, now)?;
        store::set_meta(tx, META_NETWORK, &net.to_string())?;
        store::set_meta(tx, META_NEXT_SERIAL, "2")?;
        Ok(net)
    })?;
    Ok((store, net))
}

/// Opens the database of a registry that a first start has initialised,
/// and creates nothing: what the admin commands use. A registry whose
/// first start has not yet recorded its network (or never ran) is an
/// error, so that an admin command racing that start cannot make a CA or
/// pick a network of its own.
pub fn open_initialised(place: &Place) -> anyhow::Result<(Store, Ipv6Net)> {
    if place.database.backend() == Backend::Sqlite && !place.dir.join(DB).exists() {
        anyhow::bail!(
            "no registry in {0}: not initialised (the first `re6st registry run --dir {0}` \
             creates it)",
            place.dir.display()
        );
    }
    let store =
        Store::open(&place.database).with_context(|| format!("opening {}", place.database))?;
    let Some(net) = store.meta(META_NETWORK)? else {
        anyhow::bail!(
            "the registry at {} is not initialised: its first `re6st registry run` has not \
             finished creating it (if one is starting now, try again in a moment)",
            place.database
        );
    };
    let net = net
        .parse()
        .map_err(|_| StoreError::Config("bad network prefix in the store".into()))?;
    Ok((store, net))
}

fn config_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Config(e.to_string())
}

/// Makes the CA of a new network (SQLite: its files, unless a previous
/// start made them and stopped before recording the network).
fn create_ca(
    place: &Place,
    tx: &mut dyn Tx,
    net: Ipv6Net,
    now: SystemTime,
) -> Result<(), StoreError> {
    let sealed = |ca: &Ca| -> Result<String, StoreError> {
        match &place.secret {
            Some(s) => s.seal(ca.key_pem()).map_err(config_error),
            None => Ok(ca.key_pem().to_string()),
        }
    };
    match place.database.backend() {
        Backend::Sqlite => {
            let (key_path, cert_path) = (place.dir.join(CA_KEY), place.dir.join(CA_CERT));
            if key_path.exists() && cert_path.exists() {
                return Ok(());
            }
            // Serial 1 is the CA's; node serials start at 2.
            let ca = Ca::generate(net, 1, now, CA_LIFETIME)?;
            write_atomic(&key_path, sealed(&ca)?.as_bytes(), 0o600).map_err(config_error)?;
            write_atomic(&cert_path, ca.cert_pem().as_bytes(), 0o644).map_err(config_error)?;
        }
        Backend::Postgres => {
            let ca = Ca::generate(net, 1, now, CA_LIFETIME)?;
            store::set_meta(tx, META_CA_KEY, &sealed(&ca)?)?;
            store::set_meta(tx, META_CA_CERT, &ca.cert_pem())?;
        }
    }
    Ok(())
}

/// The CA certificate (PEM) and key (PEM, maybe encrypted) of an
/// existing registry.
fn ca_texts(place: &Place, store: &Store) -> anyhow::Result<(String, String)> {
    Ok(match place.database.backend() {
        Backend::Sqlite => {
            let (key_path, cert_path) = (place.dir.join(CA_KEY), place.dir.join(CA_CERT));
            if !key_path.exists() || !cert_path.exists() {
                anyhow::bail!(
                    "{} or {} is missing: restore them from backup",
                    key_path.display(),
                    cert_path.display()
                );
            }
            let read = |p: &Path| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            (read(&cert_path)?, read(&key_path)?)
        }
        Backend::Postgres => {
            let get = |k: &str| -> anyhow::Result<String> {
                store.meta(k)?.ok_or_else(|| {
                    anyhow::anyhow!("the database has no {k}: was it made by re6st?")
                })
            };
            (get(META_CA_CERT)?, get(META_CA_KEY)?)
        }
    })
}

/// The CA certificate's fingerprint (no secret needed).
pub fn ca_fingerprint(
    place: &Place,
    store: &Store,
) -> anyhow::Result<crate::identity::Fingerprint> {
    let (cert, _) = ca_texts(place, store)?;
    Ok(crate::identity::Fingerprint::of(
        &crate::identity::ca_der_from_pem(&cert)?,
    ))
}

/// Loads the CA of an existing registry, decrypting its key with the
/// secret. On SQLite, a plain `ca.key` is encrypted in place when a secret
/// is given.
pub fn load_ca(place: &Place, store: &Store) -> anyhow::Result<Ca> {
    let (cert, key) = ca_texts(place, store)?;
    if place.database.backend() == Backend::Sqlite
        && let Some(s) = &place.secret
        && !is_sealed(&key)
    {
        Ca::from_pem(&cert, &key).context("loading the CA")?;
        let key_path = place.dir.join(CA_KEY);
        write_atomic(&key_path, s.seal(&key)?.as_bytes(), 0o600)?;
        tracing::info!(path = %key_path.display(), "the CA key is now encrypted at rest");
    }
    let key = match (is_sealed(&key), &place.secret) {
        (false, _) => key,
        (true, Some(s)) => s.open(&key)?,
        (true, None) => anyhow::bail!(
            "the CA key is encrypted: give its secret with --ca-key-secret-file FILE or {}",
            super::ca_key::SECRET_ENV
        ),
    };
    Ca::from_pem(&cert, &key).context("loading the CA")
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
    /// Opens the SQLite registry in `dir` for serving (see [`Self::open_at`]).
    pub fn open(
        dir: &Path,
        network: Option<Ipv6Net>,
        registry_url: String,
        apply: impl FnOnce(&mut Settings) + Send,
        now: SystemTime,
    ) -> anyhow::Result<Self> {
        Self::open_at(&Place::sqlite(dir), network, registry_url, apply, now)
    }

    /// Opens the registry at `place` for serving: takes the directory lock
    /// (SQLite), merges `apply` into the stored settings, re-signs the
    /// network configuration if its parameters or `registry_url` changed,
    /// starts the writer.
    pub fn open_at(
        place: &Place,
        network: Option<Ipv6Net>,
        registry_url: String,
        apply: impl FnOnce(&mut Settings) + Send,
        now: SystemTime,
    ) -> anyhow::Result<Self> {
        off_runtime(|| Self::open_blocking(place, network, registry_url, apply, now))
    }

    fn open_blocking(
        place: &Place,
        network: Option<Ipv6Net>,
        registry_url: String,
        apply: impl FnOnce(&mut Settings),
        now: SystemTime,
    ) -> anyhow::Result<Self> {
        let lock = match place.database.backend() {
            Backend::Sqlite => {
                let dir = &place.dir;
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let lock = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join(LOCK))
                    .context("opening the lock file")?;
                lock.try_lock().map_err(|_| {
                    anyhow::anyhow!("another registry is running on {}", dir.display())
                })?;
                Some(lock)
            }
            // Replicas share the database: no lock.
            Backend::Postgres => None,
        };
        let (store, ca, net) = open_store(place, network, now)?;
        let config = store.write(|tx| {
            let mut settings: Settings = match store::meta(tx, META_SETTINGS)? {
                Some(j) => serde_json::from_str(&j)
                    .map_err(|e| StoreError::Config(format!("bad settings in the store: {e}")))?,
                None => Settings::defaults(net),
            };
            let ipv4 = settings.network.ipv4;
            apply(&mut settings);
            settings.network.network = net;
            settings.network.registry_url = registry_url;
            if let Some(before) = ipv4
                && settings.network.ipv4 != Some(before)
            {
                return Err(StoreError::Config(format!(
                    "this registry's IPv4 network is {before}; it is fixed once set (nodes hold \
                     subnets of it)"
                )));
            }
            settings.validate().map_err(StoreError::Config)?;
            let stored_signed: Option<SignedNetworkConfig> = store::meta(tx, META_NETWORK_CONFIG)?
                .map(|j| serde_json::from_str(&j))
                .transpose()
                .map_err(|e| {
                    StoreError::Config(format!("bad network configuration in the store: {e}"))
                })?;
            let previous = stored_signed
                .clone()
                .map(|p| p.verify(ca.public_key()))
                .transpose()?;
            let network_config = match (previous, stored_signed) {
                (Some(p), Some(signed)) if p.same_parameters(&settings.network) => {
                    settings.network = p;
                    // Unchanged: keep serving the stored signed copy.
                    signed
                }
                (p, _) => {
                    settings.network.version = p.map_or(1, |p| p.version + 1);
                    settings.network.issued_at = crate::identity::unix_secs(now);
                    let signed = settings.network.sign(&ca)?;
                    store::set_meta(tx, META_NETWORK_CONFIG, &to_json(&signed)?)?;
                    signed
                }
            };
            store::set_meta(tx, META_SETTINGS, &to_json(&settings)?)?;
            Ok(Config {
                settings,
                network_config,
            })
        })?;
        let metrics = Arc::new(RegistryMetrics::default());
        let writer = Writer::start(&store, net, metrics.clone())?;
        Ok(Self {
            dir: place.dir.clone(),
            ca,
            network: net,
            config: RwLock::new(Arc::new(config)),
            store,
            writer,
            metrics,
            bootstrap_requests: AtomicU64::new(0),
            public_topology: std::sync::atomic::AtomicBool::new(false),
            _lock: lock,
        })
    }

    /// The settings and signed configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The settings in force.
    pub fn settings(&self) -> Settings {
        self.config().settings.clone()
    }

    /// The issuing policy in force.
    pub fn policy(&self) -> Policy {
        self.config().settings.policy()
    }

    /// Picks up settings another replica (or a restart) stored, when their
    /// signed configuration is newer than the one served. Returns whether
    /// it changed. Blocking: call from a blocking thread.
    pub fn reload(&self) -> Result<bool, StoreError> {
        let (settings, signed) = self.store.read(|tx| {
            Ok((
                store::meta(tx, META_SETTINGS)?,
                store::meta(tx, META_NETWORK_CONFIG)?,
            ))
        })?;
        let (Some(settings), Some(signed)) = (settings, signed) else {
            return Ok(false);
        };
        let settings: Settings = serde_json::from_str(&settings)
            .map_err(|e| StoreError::Config(format!("bad settings in the store: {e}")))?;
        let signed: SignedNetworkConfig = serde_json::from_str(&signed)
            .map_err(|e| StoreError::Config(format!("bad network configuration: {e}")))?;
        let version = signed.verify(self.ca.public_key())?.version;
        if version <= self.config().settings.network.version {
            return Ok(false);
        }
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Config {
            settings,
            network_config: signed,
        });
        tracing::info!(
            version,
            "network configuration changed by another registry replica"
        );
        Ok(true)
    }

    /// Runs `f` on a pooled connection, on a blocking thread.
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Self, &mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.store.read(|tx| f(&me, tx))).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// The current CRL (DER), signed again through the writer when stale.
    pub async fn crl(self: &Arc<Self>, now: SystemTime) -> Result<Vec<u8>, StoreError> {
        if let Some(der) = self
            .read(move |_, tx| store::revoke::current_crl(tx, now))
            .await?
        {
            return Ok(der);
        }
        let me = self.clone();
        self.writer
            .run(move |tx, _| store::revoke::refresh_crl(tx, &me.ca, now, false))
            .await
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}
