//! The SQLite connection (rusqlite, bundled): the embedded default.
//!
//! WAL journal with `synchronous=FULL`: a commit returns after its WAL
//! frames reached the disk, so a certificate handed out survives a power
//! loss. The cost (one fsync per commit) is paid once per batch by the
//! registry's group commit, not once per request. Readers use their own
//! connections and never wait for the writer.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};

use super::StoreError;
use super::db::{Backend, Conn, Row, Tx, TxKind, Value, sqlite_placeholders};

/// An open SQLite database.
pub struct SqliteConn {
    conn: rusqlite::Connection,
    broken: bool,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(format!("sqlite: {e}"))
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Blob(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        })
    }
}

fn value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        // No column of ours holds a float; keep the integer part.
        ValueRef::Real(f) => Value::Int(f as i64),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

impl SqliteConn {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Self {
            conn,
            broken: false,
        })
    }
}

impl Tx for SqliteConn {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let mut st = self.conn.prepare_cached(&sqlite_placeholders(sql))?;
        let n = st.execute(rusqlite::params_from_iter(params))?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let mut st = self.conn.prepare_cached(&sqlite_placeholders(sql))?;
        let cols = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(params))?;
        let mut out = vec![];
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(cols);
            for i in 0..cols {
                row.push(value(r.get_ref(i)?));
            }
            out.push(Row(row));
        }
        Ok(out)
    }
}

impl Conn for SqliteConn {
    fn begin(&mut self, kind: TxKind) -> Result<(), StoreError> {
        self.batch(match kind {
            TxKind::Read => "BEGIN DEFERRED",
            TxKind::Write => "BEGIN IMMEDIATE",
        })
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.batch("COMMIT")
    }

    fn rollback(&mut self) {
        if self.conn.is_autocommit() {
            return;
        }
        if self.conn.execute_batch("ROLLBACK").is_err() {
            self.broken = true;
        }
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch(sql)?)
    }

    fn is_broken(&self) -> bool {
        self.broken
    }
}
