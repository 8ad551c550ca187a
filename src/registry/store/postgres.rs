//! The PostgreSQL connection (the `postgres` crate, rust-postgres'
//! synchronous client): for several registry replicas on one database.
//!
//! Transactions run at PostgreSQL's default READ COMMITTED; every write
//! transaction first takes one transaction-scoped advisory lock
//! ([`ISSUE_LOCK`]), so writes from all replicas are serialised and each
//! statement after the lock sees everything committed before it. Why not
//! SERIALIZABLE: nearly every write reads and bumps the same counters
//! (serial, CRL number, prefix log), so concurrent transactions would
//! conflict almost always and have to be retried; the lock gives the same
//! order without aborts, and the replica's group commit amortises it over
//! a batch. The lock dies with the session: a replica killed in the middle
//! of a transaction releases it and leaves nothing half-written.
//!
//! The client blocks on a private runtime, so it is only used on threads
//! outside the async executor (the writer thread, `spawn_blocking`, the
//! admin commands), and dropped there too (see [`PgConn`]'s `Drop`).

use std::collections::HashMap;
use std::error::Error;
use std::time::Duration;

use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::StoreError;
use super::db::{Backend, Conn, Row, Tx, TxKind, Value};

/// Key of the advisory lock that serialises issuing writes ("re6s").
pub const ISSUE_LOCK: i64 = 0x7265_3673;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Most prepared statements kept per connection (ours are a few dozen).
const STATEMENT_CACHE: usize = 128;

/// An open PostgreSQL session.
pub struct PgConn {
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
    broken: bool,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn")
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                _ => Err(format!("an integer given for a {ty} parameter").into()),
            },
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Whether `e` means the session is gone (the server restarted, the
/// network failed) rather than a statement failed.
fn is_connection_error(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Class 08 (connection exception), 57P0x (shutdown, crash recovery).
        Some(c) => c.code().starts_with("08") || c.code().starts_with("57P"),
        // No SQLSTATE: an I/O or protocol error.
        None => true,
    }
}

fn column(r: &postgres::Row, i: usize) -> Result<Value, StoreError> {
    let ty = r.columns()[i].type_().clone();
    let err = |e: postgres::Error| StoreError::Database(format!("postgres: column {i}: {e}"));
    Ok(match ty {
        Type::INT8 => r.try_get::<_, Option<i64>>(i).map_err(err)?.into(),
        Type::INT4 => r
            .try_get::<_, Option<i32>>(i)
            .map_err(err)?
            .map(i64::from)
            .into(),
        Type::INT2 => r
            .try_get::<_, Option<i16>>(i)
            .map_err(err)?
            .map(i64::from)
            .into(),
        Type::BOOL => r.try_get::<_, Option<bool>>(i).map_err(err)?.into(),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
            r.try_get::<_, Option<String>>(i).map_err(err)?.into()
        }
        Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i).map_err(err)?.into(),
        Type::VOID => Value::Null,
        other => {
            return Err(StoreError::Internal(format!(
                "column {i} has type {other}, which the store does not use"
            )));
        }
    })
}

impl PgConn {
    /// Connects to `url` (`postgres://user:password@host:port/db`, or any
    /// libpq-style connection string the `postgres` crate accepts).
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let mut cfg: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Config(format!("bad PostgreSQL URL: {e}")))?;
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_TIMEOUT);
        }
        cfg.keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .application_name("re6st-registry");
        let client = cfg
            .connect(postgres::NoTls)
            .map_err(|e| StoreError::Unavailable(format!("connecting to PostgreSQL: {e}")))?;
        Ok(Self {
            client: Some(client),
            statements: HashMap::new(),
            broken: false,
        })
    }

    fn client(&mut self) -> Result<&mut postgres::Client, StoreError> {
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("connection closed".into()))
    }

    fn fail(&mut self, e: postgres::Error) -> StoreError {
        if is_connection_error(&e) {
            self.broken = true;
            StoreError::Unavailable(format!("postgres: {e}"))
        } else {
            // The database's own message (e.g. the violated constraint).
            let detail = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string());
            StoreError::Database(format!("postgres: {detail}"))
        }
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let st = match self.client()?.prepare(sql) {
            Ok(s) => s,
            Err(e) => return Err(self.fail(e)),
        };
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), st.clone());
        Ok(st)
    }
}

fn refs(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl Tx for PgConn {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let st = self.statement(sql)?;
        match self.client()?.execute(&st, &refs(params)) {
            Ok(n) => Ok(n),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let st = self.statement(sql)?;
        let rows = match self.client()?.query(&st, &refs(params)) {
            Ok(r) => r,
            Err(e) => return Err(self.fail(e)),
        };
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| column(r, i))
                    .collect::<Result<_, _>>()
                    .map(Row)
            })
            .collect()
    }
}

impl Conn for PgConn {
    fn begin(&mut self, kind: TxKind) -> Result<(), StoreError> {
        match kind {
            TxKind::Read => self.batch("BEGIN READ ONLY"),
            TxKind::Write => self.batch(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({ISSUE_LOCK})"
            )),
        }
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.batch("COMMIT")
    }

    fn rollback(&mut self) {
        if self.broken {
            return;
        }
        if let Ok(c) = self.client()
            && c.batch_execute("ROLLBACK").is_err()
        {
            self.broken = true;
        }
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        match self.client()?.batch_execute(sql) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn is_broken(&self) -> bool {
        self.broken || self.client.as_ref().is_none_or(postgres::Client::is_closed)
    }
}

impl Drop for PgConn {
    /// The client owns a runtime, which may not be dropped on an async
    /// worker thread: there, it is dropped on a thread of its own.
    fn drop(&mut self) {
        if let Some(c) = self.client.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let _ = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(c));
        }
    }
}
