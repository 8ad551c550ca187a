//! The one SQL interface the store's rules are written against, so that
//! SQLite and PostgreSQL run the same statements with the same meaning.
//!
//! Statements use `$1, $2, ...` placeholders (PostgreSQL's; rewritten to
//! `?1, ?2, ...` for SQLite) and only portable SQL: `ON CONFLICT`,
//! `RETURNING`, `IS DISTINCT FROM`, partial unique indexes. Values are
//! [`Value`]s: 64-bit integers, text, bytes and NULL, which both databases
//! store without loss (SQLite `INTEGER`/`TEXT`/`BLOB`, PostgreSQL
//! `BIGINT`/`TEXT`/`BYTEA`).

use super::StoreError;

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (rusqlite, bundled): one file, one writer at a time.
    Sqlite,
    /// PostgreSQL: shared by several registry replicas.
    Postgres,
}

impl Backend {
    /// Its name in logs, metrics and errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// One SQL value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// NULL.
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<u8> for Value {
    fn from(v: u8) -> Self {
        Self::Int(i64::from(v))
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Self::Int(i64::from(v))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Int(i64::from(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Self::Text(v.clone())
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Self::Blob(v.to_vec())
    }
}

impl From<&Vec<u8>> for Value {
    fn from(v: &Vec<u8>) -> Self {
        Self::Blob(v.clone())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Self::Blob(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

/// `vals![a, b, c]`: a parameter list of [`Value`]s.
macro_rules! vals {
    ($($v:expr),* $(,)?) => {
        &[$($crate::registry::store::db::Value::from($v)),*][..]
    };
}
pub(crate) use vals;

/// One result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

fn type_error(i: usize, want: &str, got: &Value) -> StoreError {
    StoreError::Internal(format!("column {i}: expected {want}, found {got:?}"))
}

impl Row {
    fn at(&self, i: usize) -> Result<&Value, StoreError> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Internal(format!("no column {i}")))
    }

    /// An integer column.
    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        match self.at(i)? {
            Value::Int(v) => Ok(*v),
            v => Err(type_error(i, "an integer", v)),
        }
    }

    /// An integer column that may be NULL.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    /// A non-negative integer column (counts, times, serials).
    pub fn uint(&self, i: usize) -> Result<u64, StoreError> {
        let v = self.int(i)?;
        u64::try_from(v).map_err(|_| StoreError::Internal(format!("column {i}: {v} < 0")))
    }

    /// A text column.
    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        match self.at(i)? {
            Value::Text(v) => Ok(v.clone()),
            v => Err(type_error(i, "text", v)),
        }
    }

    /// A text column that may be NULL.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }

    /// A bytes column.
    pub fn blob(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        match self.at(i)? {
            Value::Blob(v) => Ok(v.clone()),
            v => Err(type_error(i, "bytes", v)),
        }
    }
}

/// Statements inside a transaction (or, outside one, each on its own).
pub trait Tx {
    /// The database behind.
    fn backend(&self) -> Backend;

    /// Runs a statement; returns the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError>;

    /// Runs a query; returns every row.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError>;

    /// Runs a query expected to give at most one row.
    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Runs a query expected to give exactly one row.
    fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row, StoreError> {
        self.query_opt(sql, params)?
            .ok_or_else(|| StoreError::Internal(format!("no row from {sql:?}")))
    }
}

/// How a transaction is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxKind {
    /// Reads only.
    Read,
    /// Changes issuing state. Every such transaction, on every replica, is
    /// serialised by one lock taken first (SQLite `BEGIN IMMEDIATE`;
    /// PostgreSQL a transaction-scoped advisory lock), so what it reads
    /// (free prefixes, serial and CRL counters, tokens) cannot change under
    /// it until it commits.
    Write,
}

/// A database connection: [`Tx`] plus transaction control.
pub trait Conn: Tx + Send {
    /// Starts a transaction.
    fn begin(&mut self, kind: TxKind) -> Result<(), StoreError>;
    /// Commits it.
    fn commit(&mut self) -> Result<(), StoreError>;
    /// Rolls it back (errors are ignored: the connection is then dropped).
    fn rollback(&mut self);
    /// Runs statements separated by `;`, without parameters (schema, savepoints).
    fn batch(&mut self, sql: &str) -> Result<(), StoreError>;
    /// Whether the connection still works (it is dropped otherwise).
    fn is_broken(&self) -> bool;
}

/// Runs `f` in a transaction of `kind`: committed when `f` succeeds,
/// rolled back otherwise.
pub fn transaction<T>(
    conn: &mut dyn Conn,
    kind: TxKind,
    f: impl FnOnce(&mut dyn Conn) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.begin(kind)?;
    match f(conn) {
        Ok(v) => match conn.commit() {
            Ok(()) => Ok(v),
            Err(e) => {
                conn.rollback();
                Err(e)
            }
        },
        Err(e) => {
            conn.rollback();
            Err(e)
        }
    }
}

/// `$1, $2, ...` to SQLite's `?1, ?2, ...` (our statements have no `$` in
/// literals).
pub fn sqlite_placeholders(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains('$') {
        return sql.into();
    }
    sql.replace('$', "?").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_values() {
        let r = Row(vec![
            Value::Int(-1),
            Value::Null,
            "t".into(),
            Value::Blob(vec![1]),
        ]);
        assert_eq!(r.int(0).unwrap(), -1);
        assert!(r.uint(0).is_err());
        assert_eq!(r.opt_int(1).unwrap(), None);
        assert_eq!(r.opt_text(1).unwrap(), None);
        assert_eq!(r.text(2).unwrap(), "t");
        assert!(r.int(2).is_err());
        assert_eq!(r.blob(3).unwrap(), vec![1]);
        assert!(r.text(9).is_err());
        assert_eq!(Value::from(None::<i64>), Value::Null);
        assert_eq!(
            vals![1i64, "a", true],
            &[Value::Int(1), "a".into(), Value::Int(1)]
        );
        assert_eq!(
            sqlite_placeholders("a = $1 AND b = $12"),
            "a = ?1 AND b = ?12"
        );
    }
}
