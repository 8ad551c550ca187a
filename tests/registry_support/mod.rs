//! Shared helpers of the registry integration tests: an in-process registry
//! on a random loopback port (on SQLite, or on a database of the test
//! PostgreSQL cluster), and node-side helpers.
#![allow(dead_code)]

pub mod postgres;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use clap::Parser;
use re6st::identity::tls::{TlsIdentity, Trust};
use re6st::identity::{NodeCert, NodeKey, make_csr};
use re6st::registry::RunArgs;
use re6st::registry::ca_key::CaSecret;
use re6st::registry::client::RegistryClient;
use re6st::registry::core::{Place, Registry};
use re6st::registry::store::Location;

/// The database a test registry runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Db {
    /// SQLite in the registry's directory.
    Sqlite,
    /// A database of the test cluster.
    Postgres(String),
}

impl Db {
    /// A new database on the test cluster; `None` when PostgreSQL is not
    /// installed (the test is then skipped).
    pub fn postgres() -> Option<Self> {
        postgres::cluster().map(|c| Self::Postgres(c.database()))
    }

    /// Where a registry with directory `dir` keeps its state.
    pub fn place(&self, dir: &Path) -> Place {
        match self {
            Self::Sqlite => Place::sqlite(dir),
            Self::Postgres(url) => Place {
                dir: dir.to_path_buf(),
                database: Location::Postgres(url.clone()),
                secret: Some(CaSecret::new(postgres::TEST_SECRET.as_bytes()).unwrap()),
            },
        }
    }

    /// `re6st registry` options that select this database.
    pub fn args(&self) -> Vec<String> {
        match self {
            Self::Sqlite => vec![],
            Self::Postgres(url) => vec!["--database".into(), url.clone()],
        }
    }
}

/// Parses `re6st registry run`-style options (so tests use the real CLI
/// parsing and defaults).
#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    run: RunArgs,
}

pub fn run_args(dir: &Path, extra: &[&str]) -> RunArgs {
    let mut argv = vec![
        "x".to_string(),
        "--dir".into(),
        dir.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    Wrap::parse_from(argv).run
}

pub struct TestRegistry {
    pub db: Db,
    pub url: String,
    pub addr: SocketAddr,
    pub registry: Arc<Registry>,
    pub ca_der: Vec<u8>,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestRegistry {
    /// Starts a registry in a fresh directory with `extra` run options.
    pub async fn start(extra: &[&str]) -> Self {
        Self::start_with(&Db::Sqlite, extra).await
    }

    /// Starts a registry on `db` in a fresh directory.
    pub async fn start_with(db: &Db, extra: &[&str]) -> Self {
        Self::start_on_db("127.0.0.1", 0, tempfile::tempdir().unwrap(), db, extra).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        Self::start_at("127.0.0.1", dir, extra).await
    }

    /// Starts on a random port of the IPv4 address `ip` (one of this
    /// network namespace's), its certificate naming `ip`.
    pub async fn start_at(ip: &str, dir: tempfile::TempDir, extra: &[&str]) -> Self {
        Self::start_on(ip, 0, dir, extra).await
    }

    /// Starts on `ip`:`port` (0: any free port).
    pub async fn start_on(ip: &str, port: u16, dir: tempfile::TempDir, extra: &[&str]) -> Self {
        Self::start_on_db(ip, port, dir, &Db::Sqlite, extra).await
    }

    async fn start_on_db(
        ip: &str,
        port: u16,
        dir: tempfile::TempDir,
        db: &Db,
        extra: &[&str],
    ) -> Self {
        match Self::try_start_on(ip, port, dir, db, extra).await {
            Ok(r) => r,
            Err(d) => panic!("cannot open the registry in {}", d.path().display()),
        }
    }

    /// As [`Self::start_on`]; gives the directory back if the registry in
    /// it cannot be opened (still locked by a previous one).
    async fn try_start_on(
        ip: &str,
        port: u16,
        dir: tempfile::TempDir,
        db: &Db,
        extra: &[&str],
    ) -> Result<Self, tempfile::TempDir> {
        let args = run_args(dir.path(), extra);
        let listener = tokio::net::TcpListener::bind(format!("{ip}:{port}"))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("https://{ip}:{}", addr.port());
        let now = SystemTime::now();
        let reg = Registry::open_at(
            &db.place(dir.path()),
            args.network,
            url.clone(),
            |s| args.apply(s),
            now,
        );
        let reg = match reg {
            Ok(r) => r,
            Err(e) => {
                eprintln!("opening the registry: {e:#}");
                return Err(dir);
            }
        };
        let tls = re6st::registry::server::server_tls(&reg, &[ip.into()], now).unwrap();
        let ca_der = reg.ca.cert_der().to_vec();
        let registry = Arc::new(reg);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(re6st::registry::server::serve(
            registry.clone(),
            listener,
            tls,
            args.sweep_every,
            async {
                let _ = rx.await;
            },
        ));
        Ok(Self {
            db: db.clone(),
            url,
            addr,
            registry,
            ca_der,
            dir,
            stop: Some(tx),
            task,
        })
    }

    pub fn trust(&self) -> Trust {
        Trust::new(&self.ca_der, None)
    }

    /// A client without a client certificate.
    pub fn anon(&self) -> RegistryClient {
        RegistryClient::new(&self.url, &self.trust(), None).unwrap()
    }

    /// A raw reqwest client trusting the CA (for malformed requests).
    pub fn raw(&self, me: Option<TlsIdentity>) -> reqwest::Client {
        let cfg = self.trust().client_config(me).unwrap();
        reqwest::Client::builder()
            .use_preconfigured_tls(cfg)
            .build()
            .unwrap()
    }

    /// Enrols a fresh key; returns the node.
    pub async fn enrol(&self, token: Option<&str>) -> Node {
        let key = NodeKey::generate().unwrap();
        let resp = self
            .anon()
            .enrol(&make_csr(&key).unwrap(), token)
            .await
            .unwrap();
        let cert = NodeCert::from_pem(&resp.certificate).unwrap();
        Node { key, cert }
    }

    pub fn client(&self, n: &Node) -> RegistryClient {
        RegistryClient::new(&self.url, &self.trust(), Some(n.identity())).unwrap()
    }

    pub fn tokens(&self, n: u32) -> Vec<String> {
        re6st::registry::core::off_runtime(|| {
            self.registry
                .store
                .create_tokens(n, None, None, "test", SystemTime::now())
                .unwrap()
        })
    }

    /// (active nodes, revoked nodes, node certificates issued, tokens used).
    pub fn counts(&self) -> (u64, u64, u64, usize) {
        let store = &self.registry.store;
        re6st::registry::core::off_runtime(|| {
            let (a, r, c) = store.counts().unwrap();
            let used = store
                .list_tokens()
                .unwrap()
                .iter()
                .filter(|t| t.used_by.is_some())
                .count();
            (a, r, c, used)
        })
    }

    /// Stops and starts again on the same address and directory with other
    /// run options (a changed setting re-signs the network configuration).
    /// Connections still being served keep the old registry (and its
    /// directory lock) alive for a moment: the start is retried.
    pub async fn restart(self, extra: &[&str]) -> Self {
        self.pause().await.start(extra).await
    }

    /// Stops, keeping what it takes to start again on the same address
    /// and directory.
    pub async fn pause(self) -> StoppedRegistry {
        let (ip, port) = (self.addr.ip().to_string(), self.addr.port());
        StoppedRegistry {
            ip,
            port,
            db: self.db.clone(),
            dir: self.stop().await,
        }
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
        // Release the directory lock held by the registry.
        drop(self.registry);
        self.dir
    }
}

/// A registry stopped by [`TestRegistry::pause`].
pub struct StoppedRegistry {
    ip: String,
    port: u16,
    db: Db,
    dir: tempfile::TempDir,
}

impl StoppedRegistry {
    /// Its directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts it again with `extra` run options. Connections still being
    /// served keep the old registry (and its directory lock) alive for a
    /// moment: the start is retried.
    pub async fn start(self, extra: &[&str]) -> TestRegistry {
        let mut dir = self.dir;
        for _ in 0..100 {
            match TestRegistry::try_start_on(&self.ip, self.port, dir, &self.db, extra).await {
                Ok(r) => return r,
                Err(d) => dir = d,
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the registry did not release its directory within 10 s");
    }
}

pub struct Node {
    pub key: NodeKey,
    pub cert: NodeCert,
}

impl Node {
    pub fn identity(&self) -> TlsIdentity {
        TlsIdentity::node(&self.cert, &self.key)
    }
}

/// A `re6st registry run` child process, killed (SIGKILL) on drop.
pub struct RegistryProcess {
    pub child: std::process::Child,
    pub url: String,
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn re6st() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_re6st"))
}

/// Starts the binary's registry on a random loopback port and waits for
/// its "listening on" line.
pub fn spawn_registry(dir: &Path, extra: &[&str]) -> RegistryProcess {
    spawn_registry_on(dir, "127.0.0.1:0", extra)
}

/// A loopback port free now (for a server started later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary's registry on the loopback address `listen` and
/// waits for its "listening on" line.
pub fn spawn_registry_on(dir: &Path, listen: &str, extra: &[&str]) -> RegistryProcess {
    use std::io::BufRead;
    let mut child = re6st()
        .args(["registry", "run", "--dir"])
        .arg(dir)
        .args(["--listen", listen, "--hostname", "127.0.0.1"])
        .args(extra)
        .env(
            re6st::registry::ca_key::SECRET_ENV,
            if extra.contains(&"--database") {
                postgres::TEST_SECRET
            } else {
                ""
            },
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning re6st registry run");
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    RegistryProcess { child, url }
}

/// Runs the binary; returns (success, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = re6st().args(args).output().expect("running re6st");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Checks that the store holds no half-written state: every node has a
/// certificate, tokens and nodes point at each other, the serial counter
/// is past every serial, and the prefix log replays to the live prefixes.
pub fn check_consistency(store: &re6st::registry::store::Store) {
    re6st::registry::core::off_runtime(|| {
        store
            .read(|tx| {
                for (what, sql) in [
                    (
                        "nodes without a certificate",
                        "SELECT COUNT(*) FROM node n WHERE NOT EXISTS (SELECT 1 FROM cert c WHERE c.node_id = n.id)",
                    ),
                    (
                        "tokens used by no node holding them",
                        "SELECT COUNT(*) FROM token t WHERE t.used_by IS NOT NULL AND NOT EXISTS \
                         (SELECT 1 FROM node n WHERE n.id = t.used_by AND n.token = t.token)",
                    ),
                    (
                        "nodes whose token is not marked used by them",
                        "SELECT COUNT(*) FROM node n WHERE n.token IS NOT NULL AND NOT EXISTS \
                         (SELECT 1 FROM token t WHERE t.token = n.token AND t.used_by = n.id)",
                    ),
                    (
                        "live prefixes held twice",
                        "SELECT COUNT(*) FROM (SELECT prefix FROM node WHERE state != 'released' \
                         GROUP BY prefix HAVING COUNT(*) > 1) d",
                    ),
                ] {
                    assert_eq!(tx.query_one(sql, &[])?.int(0)?, 0, "{what}");
                }
                let next: i64 = re6st::registry::store::meta(tx, "next_serial")?
                    .unwrap()
                    .parse()
                    .unwrap();
                let max = tx
                    .query_one("SELECT COALESCE(MAX(serial), 0) FROM cert", &[])?
                    .int(0)?;
                assert!(next > max, "next serial {next} <= issued {max}");
                let mut live = std::collections::BTreeSet::new();
                for r in tx.query("SELECT prefix, op FROM prefix_log ORDER BY seq", &[])? {
                    let p = r.text(0)?;
                    if r.text(1)? == "take" {
                        assert!(live.insert(p.clone()), "log takes {p} twice");
                    } else {
                        assert!(live.remove(&p), "log frees {p}, not taken");
                    }
                }
                let mut db: Vec<String> = re6st::registry::store::live_prefixes(tx)?
                    .iter()
                    .map(|p| p.to_string())
                    .collect();
                db.sort();
                let mut log: Vec<String> = live.into_iter().collect();
                log.sort();
                assert_eq!(log, db, "the prefix log and the live prefixes differ");
                Ok(())
            })
            .unwrap()
    })
}
