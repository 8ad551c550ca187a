//! Where the database is, and a bounded pool of connections to it.

use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::StoreError;
use super::db::{Backend, Conn};
use super::postgres::PgConn;
use super::sqlite::SqliteConn;

/// How long a caller waits for a free connection before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The database of a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://...` or `postgresql://...`).
    Postgres(String),
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for Location {
    /// Without the password of a PostgreSQL URL.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Self::Postgres(u) => match reqwest::Url::parse(u) {
                Ok(mut url) if url.password().is_some() => {
                    let _ = url.set_password(Some("***"));
                    write!(f, "{url}")
                }
                Ok(url) => write!(f, "{url}"),
                Err(_) => f.write_str("postgres (unparsable URL)"),
            },
        }
    }
}

impl std::str::FromStr for Location {
    type Err = String;

    /// `postgres://...`, `postgresql://...`, `sqlite:PATH` or a plain path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            s.parse::<postgres::Config>()
                .map_err(|e| format!("bad PostgreSQL URL: {e}"))?;
            return Ok(Self::Postgres(s.to_string()));
        }
        let path = s.strip_prefix("sqlite:").unwrap_or(s);
        if path.is_empty() || path.contains("://") {
            return Err(format!(
                "{s:?}: expected postgres://user@host/db, postgresql://..., or sqlite:PATH"
            ));
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

impl Location {
    /// Which database.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// A new connection.
    pub fn connect(&self) -> Result<Box<dyn Conn>, StoreError> {
        Ok(match self {
            Self::Sqlite(p) => Box::new(SqliteConn::open(p)?),
            Self::Postgres(u) => Box::new(PgConn::connect(u)?),
        })
    }
}

/// At most `max` connections, reused; a broken one is dropped and the next
/// caller connects again (so a restarted database is picked up by itself).
pub struct Pool {
    location: Location,
    max: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<Box<dyn Conn>>,
    in_use: usize,
}

impl Pool {
    /// A pool of up to `max` connections to `location` (none opened yet).
    pub fn new(location: Location, max: usize) -> Self {
        Self {
            location,
            max: max.max(1),
            state: Mutex::new(PoolState {
                idle: vec![],
                in_use: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// Where it connects.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Runs `f` on a connection (blocks while all are in use).
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let reused = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let deadline = std::time::Instant::now() + ACQUIRE_TIMEOUT;
            while s.in_use >= self.max {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(StoreError::Unavailable(
                        "every database connection is busy".into(),
                    ));
                }
                s = self
                    .freed
                    .wait_timeout(s, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            s.in_use += 1;
            s.idle.pop()
        };
        let conn = match reused {
            Some(c) => Ok(c),
            None => self.location.connect(),
        };
        let (out, back) = match conn {
            Ok(mut c) => {
                let out = f(c.as_mut());
                let back = (!c.is_broken()).then_some(c);
                (out, back)
            }
            Err(e) => (Err(e), None),
        };
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.in_use -= 1;
        s.idle.extend(back);
        self.freed.notify_one();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_hide_passwords() {
        assert_eq!(
            "sqlite:/x/r.db".parse::<Location>().unwrap(),
            Location::Sqlite("/x/r.db".into())
        );
        assert_eq!(
            "/x/r.db".parse::<Location>().unwrap(),
            Location::Sqlite("/x/r.db".into())
        );
        let pg: Location = "postgres://re6st:secret@db.example:5432/re6st"
            .parse()
            .unwrap();
        assert_eq!(pg.backend(), Backend::Postgres);
        assert!(!pg.to_string().contains("secret"), "{pg}");
        assert!("mysql://x".parse::<Location>().is_err());
        assert!("".parse::<Location>().is_err());
    }

    #[test]
    fn a_pool_reuses_and_bounds_connections() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::new(Location::Sqlite(dir.path().join("p.db")), 2);
        let n = pool
            .with(|c| c.query_one("SELECT 41 + 1", &[])?.int(0))
            .unwrap();
        assert_eq!(n, 42);
        assert_eq!(pool.state.lock().unwrap().idle.len(), 1);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    pool.with(|c| {
                        std::thread::sleep(Duration::from_millis(20));
                        c.query_one("SELECT 1", &[])
                    })
                    .unwrap();
                });
            }
        });
        assert!(pool.state.lock().unwrap().idle.len() <= 2);
    }
}
