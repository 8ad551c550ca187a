//! A throwaway PostgreSQL cluster for the `postgres_*` tests: made with
//! `initdb` in a temporary directory, run by `pg_ctl` as an unprivileged
//! user (`postgres`, or `nobody`, when the tests run as root), listening
//! on 127.0.0.1 on a free port. One cluster per test binary; a watchdog
//! process stops it and removes its directory when the test process exits,
//! however it exits. Each test gets a database of its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Cluster {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    user: Option<String>,
    next_db: AtomicUsize,
}

/// Where `pg_ctl` and `initdb` are: Debian's newest, else `PATH`.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("pg_ctl").exists() && b.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(b) = versions.pop() {
        return Some(b);
    }
    let out = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let dir = p.parent()?.to_path_buf();
    (out.status.success() && dir.join("initdb").exists()).then_some(dir)
}

fn user_exists(u: &str) -> bool {
    Command::new("id")
        .arg(u)
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Cluster {
    fn command(&self, tool: &str) -> Command {
        match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(self.bin.join(tool));
                c
            }
            None => Command::new(self.bin.join(tool)),
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let out = self
            .command(tool)
            .args(args)
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn start_args(&self) -> Vec<String> {
        vec![
            "-D".into(),
            self.data(),
            "-l".into(),
            self.dir.join("log").display().to_string(),
            "-o".into(),
            format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=200",
                self.port,
                self.dir.display()
            ),
            "-w".into(),
            "-t".into(),
            "60".into(),
        ]
    }

    /// Starts the server (after [`Self::stop`]).
    pub fn start(&self) {
        let args = self.start_args();
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.push("start");
        self.run("pg_ctl", &a).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Stops the server at once (`-m immediate`: what a crash looks like to
    /// its clients).
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// A URL of a new, empty database.
    pub fn database(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        let admin = format!("postgres://re6st@127.0.0.1:{}/postgres", self.port);
        let sql = format!("CREATE DATABASE {name}");
        re6st::registry::core::off_runtime(|| {
            let mut c = postgres::Client::connect(&admin, postgres::NoTls)
                .unwrap_or_else(|e| panic!("connecting to the test cluster: {e}"));
            c.batch_execute(&sql).unwrap();
        });
        format!("postgres://re6st@127.0.0.1:{}/{name}", self.port)
    }

    fn make(bin: PathBuf) -> Result<Self, String> {
        let root = is_root();
        let user = match root {
            false => None,
            true if user_exists("postgres") => Some("postgres".to_string()),
            true => Some("nobody".to_string()),
        };
        let dir = tempfile::Builder::new()
            .prefix("re6st-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        if let Some(u) = &user {
            let ok = Command::new("chown")
                .args([u.as_str(), &dir.display().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(format!("cannot give {} to {u}", dir.display()));
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let c = Self {
            port,
            dir,
            bin,
            user,
            next_db: AtomicUsize::new(0),
        };
        c.run(
            "initdb",
            &[
                "-D",
                &c.data(),
                "-U",
                "re6st",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        c.watchdog();
        c.start();
        Ok(c)
    }

    /// Stops the cluster and removes its directory once this process has
    /// exited (a test binary has no hook at its end, and may panic).
    fn watchdog(&self) {
        let stop = format!(
            "{} -D {} -m immediate stop",
            self.bin.join("pg_ctl").display(),
            self.data()
        );
        let stop = match &self.user {
            Some(u) => format!("runuser -u {u} -- {stop}"),
            None => stop,
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The cluster of this test binary, started at first use; `None` (after
/// printing why) when PostgreSQL is not installed. A cluster that is
/// installed but does not start is a failure, not a skip.
pub fn cluster() -> Option<&'static Cluster> {
    static C: OnceLock<Option<Cluster>> = OnceLock::new();
    let c = C.get_or_init(|| {
        let bin = binaries()?;
        Some(Cluster::make(bin).unwrap_or_else(|e| panic!("starting PostgreSQL: {e}")))
    });
    if c.is_none() {
        println!(
            "SKIPPED: PostgreSQL is not installed (scripts/install-deps installs Debian's postgresql)"
        );
    }
    c.as_ref()
}

/// A secret for the CA key of a test registry on PostgreSQL.
pub const TEST_SECRET: &str = "re6st test secret, not for production";
