//! The registry's SQLite store (rusqlite, bundled): nodes and their
//! prefixes, every certificate issued, tokens, the CRL, announcements.
//!
//! Durability: WAL journal with `synchronous=FULL`, and every operation that
//! issues or changes something runs in one `BEGIN IMMEDIATE` transaction
//! that records the certificate, its serial and its prefix together. A
//! certificate is returned to a client only after its transaction
//! committed, so a crash (even SIGKILL or power loss) never loses an issued
//! certificate, and the partial unique index on live prefixes makes it
//! impossible to hand one prefix to two live nodes.
//!
//! Node life cycle (`node.state`): `active` → (`revoked`) → `released`. A
//! released node's prefix is free again; the row stays for history.
//!
//! The admin CLI opens the same database while the server runs (WAL allows
//! it; `busy_timeout` serialises writers). Only the server allocates and
//! releases prefixes, so its in-memory [`BuddyAllocator`] stays exact.

mod admin;
mod issue;
mod peers;
mod revoke;

use std::path::Path;
use std::time::{Duration, SystemTime};

use ipnet::Ipv6Net;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

pub use admin::{NodeRow, NodeState, TokenRow};
pub use issue::{Issued, RenewOutcome};
pub use revoke::{RevokeOutcome, RevokeTarget};

use super::alloc::{AllocError, BuddyAllocator};
use crate::identity::{IdentityError, unix_secs};

/// Issuing rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Enrolment without a token is allowed.
    pub open: bool,
    /// Default node prefix length.
    pub node_prefix_len: u8,
    /// Validity of a node certificate.
    pub cert_lifetime: Duration,
    /// A certificate is renewed when it has less than this left.
    pub renew_window: Duration,
    /// An expired certificate may still be renewed for this long; after it
    /// the node's prefix is released.
    pub grace_period: Duration,
}

/// Why a store operation failed. The first variants are the client's fault
/// (the server maps them to 4xx); `Sqlite` and `Internal` are ours.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Enrolment without a token on a registry that needs one.
    #[error("this registry needs an enrolment token (make one with `re6st registry token`)")]
    TokenRequired,
    /// No such token.
    #[error("unknown token")]
    UnknownToken,
    /// The token was used (by another key).
    #[error("token already used")]
    TokenUsed,
    /// The token has expired.
    #[error("token expired")]
    TokenExpired,
    /// No prefix left.
    #[error("prefix space exhausted: {0}")]
    Exhausted(AllocError),
    /// The certificate (or node) is not known, or its prefix was released.
    #[error("unknown certificate or node: {0}")]
    Unknown(String),
    /// The node was revoked.
    #[error("certificate revoked (serial {0})")]
    Revoked(u64),
    /// The certificate expired beyond what the operation accepts.
    #[error("certificate expired (serial {0})")]
    Expired(u64),
    /// A bad identity object (CSR key, announcement...).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The database failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Anything else that is the registry's fault.
    #[error("internal: {0}")]
    Internal(String),
}

/// The open database.
pub struct Store {
    conn: Connection,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta(
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS node(
    id INTEGER PRIMARY KEY,
    prefix TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'revoked', 'released')),
    key_id BLOB NOT NULL,
    token TEXT,
    created INTEGER NOT NULL,
    revoked_at INTEGER,
    released_at INTEGER
);
-- One live node per prefix, enforced by the database itself.
CREATE UNIQUE INDEX IF NOT EXISTS node_live_prefix ON node(prefix) WHERE state != 'released';
CREATE INDEX IF NOT EXISTS node_key ON node(key_id);
CREATE TABLE IF NOT EXISTS cert(
    serial INTEGER PRIMARY KEY,
    node_id INTEGER REFERENCES node(id),
    kind TEXT NOT NULL CHECK (kind IN ('node', 'server')),
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    spki BLOB NOT NULL,
    der BLOB NOT NULL,
    issued INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS cert_node ON cert(node_id);
CREATE TABLE IF NOT EXISTS token(
    token TEXT PRIMARY KEY,
    created INTEGER NOT NULL,
    expires INTEGER,
    prefix_len INTEGER,
    comment TEXT NOT NULL DEFAULT '',
    used_by INTEGER REFERENCES node(id),
    used_at INTEGER
);
CREATE TABLE IF NOT EXISTS crl(
    id INTEGER PRIMARY KEY CHECK (id = 1),
    number INTEGER NOT NULL,
    this_update INTEGER NOT NULL,
    serials TEXT NOT NULL,
    der BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS announcement(
    node_id INTEGER PRIMARY KEY REFERENCES node(id),
    serial INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    received INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    signed TEXT NOT NULL
);
"#;

/// Meta key: the network prefix.
pub const META_NETWORK: &str = "network";
/// Meta key: the next certificate serial.
pub const META_NEXT_SERIAL: &str = "next_serial";
/// Meta key: registry settings (JSON, see `super::Settings`).
pub const META_SETTINGS: &str = "settings";
/// Meta key: the signed network configuration (JSON).
pub const META_NETWORK_CONFIG: &str = "network_config";

pub(crate) fn secs(t: SystemTime) -> i64 {
    i64::try_from(unix_secs(t)).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn })
    }

    /// Reads a meta value.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Writes a meta value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        set_meta(&self.conn, key, value)
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction (committed on `Ok`).
    pub(crate) fn immediate<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Takes `count` serials from the counter (inside the caller's
    /// transaction when given one) and returns the first.
    pub fn take_serials(&mut self, count: u64) -> Result<u64, StoreError> {
        self.immediate(|tx| take_serials(tx, count))
    }

    /// The prefixes of every node that is not released (to rebuild the
    /// allocator).
    pub fn live_prefixes(&self) -> Result<Vec<Ipv6Net>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT prefix FROM node WHERE state != 'released'")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = vec![];
        for p in rows {
            let p = p?;
            out.push(
                p.parse().map_err(|_| {
                    StoreError::Internal(format!("bad prefix {p:?} in the database"))
                })?,
            );
        }
        Ok(out)
    }

    /// Builds the allocator for `network` from the live prefixes.
    pub fn allocator(&self, network: Ipv6Net) -> Result<BuddyAllocator, StoreError> {
        let mut a = BuddyAllocator::new(network);
        for p in self.live_prefixes()? {
            a.reserve(p)
                .map_err(|e| StoreError::Internal(format!("rebuilding the allocator: {e}")))?;
        }
        Ok(a)
    }

    /// Records a certificate that belongs to no node (the registry's HTTPS
    /// server certificate), so its serial is never reused.
    pub fn record_server_cert(
        &mut self,
        serial: u64,
        der: &[u8],
        spki: &[u8],
        nb: SystemTime,
        na: SystemTime,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO cert(serial, node_id, kind, not_before, not_after, spki, der, issued)
             VALUES (?1, NULL, 'server', ?2, ?3, ?4, ?5, ?6)",
            params![
                serial_i64(serial)?,
                secs(nb),
                secs(na),
                spki,
                der,
                secs(now)
            ],
        )?;
        Ok(())
    }
}

pub(crate) fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}

pub(crate) fn serial_i64(serial: u64) -> Result<i64, StoreError> {
    i64::try_from(serial).map_err(|_| StoreError::Internal("serial overflow".into()))
}

pub(crate) fn take_serials(conn: &Connection, count: u64) -> Result<u64, StoreError> {
    let next: u64 = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [META_NEXT_SERIAL],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .map(|v| {
            v.parse()
                .map_err(|_| StoreError::Internal("bad next_serial".into()))
        })
        .transpose()?
        .unwrap_or(1);
    let after = next
        .checked_add(count)
        .ok_or_else(|| StoreError::Internal("serial overflow".into()))?;
    serial_i64(after)?;
    set_meta(conn, META_NEXT_SERIAL, &after.to_string())?;
    Ok(next)
}

#[cfg(test)]
pub(crate) mod tests;
