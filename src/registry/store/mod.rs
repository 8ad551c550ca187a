//! The registry's store: nodes and their prefixes, every certificate
//! issued, tokens, the CRL, announcements; in SQLite (the embedded
//! default) or PostgreSQL (several replicas), with the same schema
//! ([`schema`]) and the same statements ([`db`]).
//!
//! The rules are functions over a [`Tx`], so both databases run exactly
//! the same code: [`issue`] (enrolment, renewal), [`revoke`] (revocation,
//! CRL, release of prefixes), [`peers`] (announcements, bootstrap),
//! [`admin`] (tokens and listings). Every operation that issues or
//! changes something runs in one write transaction ([`TxKind::Write`])
//! that records the certificate, its serial and its prefix together. A
//! certificate is returned to a client only after its transaction
//! committed, so a crash (even SIGKILL, or power loss: SQLite runs with
//! `synchronous=FULL`, PostgreSQL with its default `synchronous_commit`)
//! never loses an issued certificate, and the partial unique index on live
//! prefixes makes it impossible to hand one prefix to two live nodes.
//!
//! Node life cycle (`node.state`): `active` → (`revoked`) → `released`. A
//! released node's prefix is free again; the row stays for history.
//!
//! The admin commands open the same database while servers run (SQLite
//! WAL and `busy_timeout`, or PostgreSQL): they only make tokens and
//! revoke, which never allocates nor frees a prefix.

pub mod admin;
pub mod db;
pub mod issue;
pub mod peers;
pub mod pool;
mod postgres;
pub mod prefixes;
pub mod revoke;
pub mod schema;
mod sqlite;

use std::time::{Duration, SystemTime};

use ipnet::Ipv6Net;

pub use admin::{NodeRow, NodeState, TokenRow};
pub use db::{Backend, Conn, Row, Tx, TxKind, Value};
pub use issue::{Issued, RenewOutcome};
pub use pool::{Location, Pool};
pub use prefixes::Prefixes;
pub use revoke::{RevokeOutcome, RevokeTarget};

use self::db::vals;
use super::alloc::AllocError;
use crate::identity::{Ca, IdentityError, unix_secs};

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
    /// IPv4 inside the overlay: the network and the length of each node's
    /// subnet in it.
    pub ipv4: Option<(ipnet::Ipv4Net, u8)>,
}

/// Why a store operation failed. The first variants are the client's fault
/// (the server maps them to 4xx); the others are ours.
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
    /// The database cannot be reached (it restarts, the network failed):
    /// the request may succeed if tried again.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Too many writes are queued: try again in a moment.
    #[error("the registry is busy ({0} writes queued); try again")]
    Busy(usize),
    /// The database refused a statement.
    #[error("database: {0}")]
    Database(String),
    /// The database or its settings do not fit this registry.
    #[error("{0}")]
    Config(String),
    /// Anything else that is the registry's fault.
    #[error("internal: {0}")]
    Internal(String),
}

impl StoreError {
    /// A copy of a failure shared by several requests (a failed commit of
    /// a batch).
    pub fn duplicate(&self) -> Self {
        match self {
            Self::Unavailable(m) => Self::Unavailable(m.clone()),
            Self::Busy(n) => Self::Busy(*n),
            other => Self::Database(other.to_string()),
        }
    }
}

/// The open store: a bounded pool of connections.
pub struct Store {
    pool: Pool,
}

/// Meta key: the network prefix.
pub const META_NETWORK: &str = "network";
/// Meta key: the next certificate serial.
pub const META_NEXT_SERIAL: &str = "next_serial";
/// Meta key: registry settings (JSON, see `super::Settings`).
pub const META_SETTINGS: &str = "settings";
/// Meta key: the signed network configuration (JSON).
pub const META_NETWORK_CONFIG: &str = "network_config";
/// Meta key: the CA certificate, PEM (PostgreSQL; SQLite keeps files).
pub const META_CA_CERT: &str = "ca_cert";
/// Meta key: the CA key, encrypted (PostgreSQL; SQLite keeps files).
pub const META_CA_KEY: &str = "ca_key";

pub(crate) fn secs(t: SystemTime) -> i64 {
    i64::try_from(unix_secs(t)).unwrap_or(i64::MAX)
}

/// Reader connections of a SQLite store (its writer has its own).
const SQLITE_READERS: usize = 4;
/// Connections of a PostgreSQL store, per registry process.
const POSTGRES_CONNECTIONS: usize = 8;

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to
    /// date.
    pub fn open(location: &Location) -> Result<Self, StoreError> {
        let max = match location.backend() {
            Backend::Sqlite => SQLITE_READERS,
            Backend::Postgres => POSTGRES_CONNECTIONS,
        };
        let pool = Pool::new(location.clone(), max);
        pool.with(schema::migrate)?;
        Ok(Self { pool })
    }

    /// Where the database is.
    pub fn location(&self) -> &Location {
        self.pool.location()
    }

    /// Which database.
    pub fn backend(&self) -> Backend {
        self.location().backend()
    }

    /// A connection of its own (the registry's writer).
    pub fn connect(&self) -> Result<Box<dyn Conn>, StoreError> {
        self.location().connect()
    }

    /// Runs `f`'s statements one by one (no transaction).
    pub fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.pool.with(|c| f(c))
    }

    /// Runs `f` in a write transaction (committed on `Ok`).
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.pool
            .with(|c| db::transaction(c, TxKind::Write, |c| f(c)))
    }

    /// Reads a meta value.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.read(|tx| meta(tx, key))
    }

    /// Writes a meta value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(|tx| set_meta(tx, key, value))
    }

    /// Takes `count` serials from the counter and returns the first.
    pub fn take_serials(&self, count: u64) -> Result<u64, StoreError> {
        self.write(|tx| take_serials(tx, count))
    }

    /// The prefixes of every node that is not released.
    pub fn live_prefixes(&self) -> Result<Vec<Ipv6Net>, StoreError> {
        self.read(live_prefixes)
    }

    /// Records a certificate that belongs to no node (the registry's HTTPS
    /// server certificate), so its serial is never reused.
    pub fn record_server_cert(
        &self,
        serial: u64,
        der: &[u8],
        spki: &[u8],
        nb: SystemTime,
        na: SystemTime,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO cert(serial, node_id, kind, not_before, not_after, spki, der, issued)
                 VALUES ($1, NULL, 'server', $2, $3, $4, $5, $6)",
                vals![
                    serial_i64(serial)?,
                    secs(nb),
                    secs(na),
                    spki,
                    der,
                    secs(now)
                ],
            )?;
            Ok(())
        })
    }

    /// Revokes a node (see [`revoke::revoke`]).
    pub fn revoke(
        &self,
        ca: &Ca,
        target: RevokeTarget,
        now: SystemTime,
    ) -> Result<RevokeOutcome, StoreError> {
        self.write(|tx| revoke::revoke(tx, ca, target, now))
    }

    /// The current CRL (DER): the stored one while current, else signed
    /// again in a write transaction.
    pub fn crl(&self, ca: &Ca, now: SystemTime) -> Result<Vec<u8>, StoreError> {
        if let Some(der) = self.read(|tx| revoke::current_crl(tx, now))? {
            return Ok(der);
        }
        self.write(|tx| revoke::refresh_crl(tx, ca, now, false))
    }
}

/// Reads a meta value.
pub fn meta(tx: &mut dyn Tx, key: &str) -> Result<Option<String>, StoreError> {
    tx.query_opt("SELECT value FROM meta WHERE key = $1", vals![key])?
        .map(|r| r.text(0))
        .transpose()
}

/// Writes a meta value.
pub fn set_meta(tx: &mut dyn Tx, key: &str, value: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO meta(key, value) VALUES ($1, $2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        vals![key, value],
    )?;
    Ok(())
}

pub(crate) fn serial_i64(serial: u64) -> Result<i64, StoreError> {
    i64::try_from(serial).map_err(|_| StoreError::Internal("serial overflow".into()))
}

/// Takes `count` serials from the counter (in the caller's write
/// transaction) and returns the first.
pub fn take_serials(tx: &mut dyn Tx, count: u64) -> Result<u64, StoreError> {
    let next: u64 = meta(tx, META_NEXT_SERIAL)?
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
    set_meta(tx, META_NEXT_SERIAL, &after.to_string())?;
    Ok(next)
}

/// The prefixes of every node that is not released.
pub fn live_prefixes(tx: &mut dyn Tx) -> Result<Vec<Ipv6Net>, StoreError> {
    tx.query("SELECT prefix FROM node WHERE state != 'released'", &[])?
        .iter()
        .map(|r| parse_prefix(&r.text(0)?))
        .collect()
}

/// The IPv4 subnets of every node that is not released.
pub fn live_ipv4(tx: &mut dyn Tx) -> Result<Vec<ipnet::Ipv4Net>, StoreError> {
    tx.query(
        "SELECT ipv4 FROM node WHERE state != 'released' AND ipv4 IS NOT NULL",
        &[],
    )?
    .iter()
    .map(|r| {
        let s = r.text(0)?;
        s.parse()
            .map_err(|_| StoreError::Internal(format!("bad IPv4 subnet {s:?} in the database")))
    })
    .collect()
}

/// A prefix read from the database.
pub(crate) fn parse_prefix(p: &str) -> Result<Ipv6Net, StoreError> {
    p.parse()
        .map_err(|_| StoreError::Internal(format!("bad prefix {p:?} in the database")))
}

#[cfg(test)]
pub(crate) mod tests;
