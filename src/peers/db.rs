//! The peer DB: signed announcements of other nodes, kept in SQLite in the
//! state directory (`peers.db`) and mirrored in memory.
//!
//! Every entry is a [`SignedAnnouncement`] that verified against the CA and
//! the CRL in force: a relay (the registry, another node) cannot forge or
//! alter one, and nobody can announce addresses for a prefix that is not
//! its certificate's. Entries are re-verified when the DB is opened and
//! after every CRL change; revoked, expired and stale ones are dropped.
//!
//! An entry whose address now answers with another node's certificate is
//! stale: [`PeerDb::forget_replaced`] drops it and refuses the copies of it
//! that other nodes still pass around.
//!
//! It is a cache (re6stnet's `cache.db` is too): `synchronous=OFF`, since
//! losing the last writes in a crash only costs a few announcements that
//! peer exchange brings back. It is bounded (default 200 entries); when
//! full, the entry with the oldest announcement makes room.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ipnet::Ipv6Net;
use rusqlite::{Connection, params};
use serde::Serialize;

use crate::identity::tls::CaVerifier;
use crate::identity::{IdentityError, SignedAnnouncement, VerifiedAnnouncement, unix_secs};

/// File name of the peer DB in the state directory.
pub const FILE: &str = "peers.db";

/// Peer DB limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerDbConfig {
    /// Most entries kept.
    pub capacity: usize,
    /// An announcement older than this is stale and dropped. Live nodes
    /// re-sign theirs at every exchange round, so only departed nodes age.
    pub max_age: Duration,
}

impl Default for PeerDbConfig {
    fn default() -> Self {
        Self {
            capacity: 200,
            max_age: Duration::from_secs(3 * 86_400),
        }
    }
}

/// One known peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerEntry {
    /// Its prefix (its certificate's).
    pub prefix: Ipv6Net,
    /// Its certificate's serial.
    pub serial: u64,
    /// Where its QUIC endpoint listens.
    pub addresses: Vec<SocketAddr>,
    /// When it signed the announcement (UNIX seconds).
    pub timestamp: u64,
    /// The announcement itself, to persist and re-verify.
    #[serde(skip)]
    pub signed: SignedAnnouncement,
}

impl PeerEntry {
    fn new(v: VerifiedAnnouncement, signed: SignedAnnouncement) -> Self {
        Self {
            prefix: v.announcement.prefix,
            serial: v.cert.serial,
            addresses: v.announcement.addresses,
            timestamp: v.announcement.timestamp,
            signed,
        }
    }
}

/// What [`PeerDb::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A peer we did not know.
    New,
    /// A newer announcement of a known peer.
    Updated,
    /// Not newer than what we have: nothing changed.
    Unchanged,
}

/// Why an announcement was not stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerDbError {
    /// It did not verify (signature, certificate, CRL, prefix, age,
    /// addresses); the inner error says which.
    #[error("announcement rejected: {0}")]
    Rejected(#[from] IdentityError),
    /// It is our own.
    #[error("our own announcement")]
    Own,
    /// Its node was found replaced at its address, and it is not newer
    /// than that ([`PeerDb::forget_replaced`]).
    #[error("announcement of a node replaced at its address")]
    Replaced,
    /// SQLite failed.
    #[error("peer DB storage: {0}")]
    Storage(#[from] rusqlite::Error),
}

/// Counters of the peer DB.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerDbStats {
    /// New peers stored.
    pub inserted: u64,
    /// Known peers with a newer announcement.
    pub updated: u64,
    /// Announcements that were not newer.
    pub unchanged: u64,
    /// Refused: malformed, bad signature or unusable addresses.
    pub rejected_invalid: u64,
    /// Refused: the signer's certificate is revoked.
    pub rejected_revoked: u64,
    /// Refused: the certificate is expired, not yet valid or not from our CA.
    pub rejected_certificate: u64,
    /// Refused: the prefix is not the signer's certificate's.
    pub rejected_prefix: u64,
    /// Refused: too old, or from the future.
    pub rejected_stale: u64,
    /// Our own announcement came back.
    pub rejected_own: u64,
    /// Refused: an announcement of a node found replaced at its address,
    /// not newer than when it was found so.
    pub rejected_replaced: u64,
    /// Entries dropped because their address answered as another node.
    pub forgotten_replaced: u64,
    /// Entries dropped to make room.
    pub evicted: u64,
    /// Entries dropped at a re-verification (revoked, expired, stale).
    pub purged: u64,
}

impl PeerDbStats {
    fn count_rejection(&mut self, e: &IdentityError) {
        let c = match e {
            IdentityError::PrefixMismatch { .. } => &mut self.rejected_prefix,
            IdentityError::BadTimestamp { .. } => &mut self.rejected_stale,
            IdentityError::CertificateRejected(why) if why.contains("evoked") => {
                &mut self.rejected_revoked
            }
            IdentityError::CertificateRejected(_) => &mut self.rejected_certificate,
            _ => &mut self.rejected_invalid,
        };
        *c += 1;
    }
}

/// The peer DB of one node.
#[derive(Debug)]
pub struct PeerDb {
    conn: Connection,
    me: Ipv6Net,
    config: PeerDbConfig,
    entries: BTreeMap<Ipv6Net, PeerEntry>,
    /// Certificates found replaced at their address (serial), and the
    /// newest announcement timestamp of theirs known stale. In memory and
    /// bounded like the entries: after a restart a stale copy can cost one
    /// more dial.
    replaced: BTreeMap<u64, u64>,
    stats: PeerDbStats,
}

impl PeerDb {
    /// Opens (creating) the DB at `path`, or an in-memory one for `None`,
    /// for the node holding `me`. Stored entries are re-verified; the bad
    /// ones are deleted.
    pub fn open(
        path: Option<&Path>,
        me: Ipv6Net,
        config: PeerDbConfig,
        verifier: &CaVerifier,
        now: SystemTime,
    ) -> Result<Self, PeerDbError> {
        let conn = match path {
            Some(p) => Connection::open(p)?,
            None => Connection::open_in_memory()?,
        };
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "OFF")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS peer (
                prefix      TEXT PRIMARY KEY,
                timestamp   INTEGER NOT NULL,
                payload     TEXT NOT NULL,
                signature   TEXT NOT NULL,
                certificate TEXT NOT NULL
            )",
        )?;
        let mut db = Self {
            conn,
            me,
            config,
            entries: BTreeMap::new(),
            replaced: BTreeMap::new(),
            stats: PeerDbStats::default(),
        };
        let rows: Vec<(String, SignedAnnouncement)> = {
            let mut st = db
                .conn
                .prepare("SELECT prefix, payload, signature, certificate FROM peer")?;
            st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    SignedAnnouncement {
                        payload: r.get(1)?,
                        signature: r.get(2)?,
                        certificate: r.get(3)?,
                    },
                ))
            })?
            .collect::<Result<_, _>>()?
        };
        for (key, signed) in rows {
            match signed.verify(verifier, now, config.max_age) {
                Ok(v)
                    if v.announcement.prefix.to_string() == key && v.announcement.prefix != me =>
                {
                    let e = PeerEntry::new(v, signed);
                    db.entries.insert(e.prefix, e);
                }
                _ => {
                    db.stats.purged += 1;
                    db.conn
                        .execute("DELETE FROM peer WHERE prefix = ?1", params![key])?;
                }
            }
        }
        db.evict_to(db.config.capacity)?;
        Ok(db)
    }

    /// Verifies `signed` and stores it if it is newer than what we have.
    pub fn insert(
        &mut self,
        signed: &SignedAnnouncement,
        verifier: &CaVerifier,
        now: SystemTime,
    ) -> Result<Inserted, PeerDbError> {
        let v = match signed.verify(verifier, now, self.config.max_age) {
            Ok(v) => v,
            Err(e) => {
                self.stats.count_rejection(&e);
                return Err(e.into());
            }
        };
        let prefix = v.announcement.prefix;
        if prefix == self.me {
            self.stats.rejected_own += 1;
            return Err(PeerDbError::Own);
        }
        if self
            .replaced
            .get(&v.cert.serial)
            .is_some_and(|stale| v.announcement.timestamp <= *stale)
        {
            self.stats.rejected_replaced += 1;
            return Err(PeerDbError::Replaced);
        }
        let outcome = match self.entries.get(&prefix) {
            Some(old) if old.timestamp >= v.announcement.timestamp => {
                self.stats.unchanged += 1;
                return Ok(Inserted::Unchanged);
            }
            Some(_) => Inserted::Updated,
            None => {
                self.evict_to(self.config.capacity.saturating_sub(1))?;
                Inserted::New
            }
        };
        if self.config.capacity == 0 {
            return Ok(Inserted::Unchanged);
        }
        self.conn.execute(
            "INSERT OR REPLACE INTO peer (prefix, timestamp, payload, signature, certificate)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                prefix.to_string(),
                i64::try_from(v.announcement.timestamp).unwrap_or(i64::MAX),
                signed.payload,
                signed.signature,
                signed.certificate
            ],
        )?;
        self.entries
            .insert(prefix, PeerEntry::new(v, signed.clone()));
        match outcome {
            Inserted::New => self.stats.inserted += 1,
            _ => self.stats.updated += 1,
        }
        Ok(outcome)
    }

    /// Re-verifies every entry (after a CRL change, and periodically for
    /// age); drops the failing ones. Returns the prefixes dropped.
    pub fn purge(
        &mut self,
        verifier: &CaVerifier,
        now: SystemTime,
    ) -> Result<Vec<Ipv6Net>, PeerDbError> {
        let bad: Vec<Ipv6Net> = self
            .entries
            .values()
            .filter(|e| e.signed.verify(verifier, now, self.config.max_age).is_err())
            .map(|e| e.prefix)
            .collect();
        for p in &bad {
            self.delete(*p)?;
            self.stats.purged += 1;
        }
        // Announcements that old are refused as stale anyway.
        let horizon = unix_secs(now).saturating_sub(self.config.max_age.as_secs());
        self.replaced.retain(|_, stale| *stale >= horizon);
        Ok(bad)
    }

    /// A dial to the entry of `prefix` (certificate `serial`) reached
    /// another node of the network at its address: the entry is stale.
    /// Drops it, and refuses from now on the announcements of that
    /// certificate signed up to now (or up to the entry's, if later):
    /// other nodes and the registry still hold copies, while a node that
    /// really moved signs a newer one. Returns whether an entry was
    /// dropped (none when the entry changed since the dial).
    pub fn forget_replaced(
        &mut self,
        prefix: Ipv6Net,
        serial: u64,
        now: SystemTime,
    ) -> Result<bool, PeerDbError> {
        let entry = self.entries.get(&prefix).filter(|e| e.serial == serial);
        let stale = entry.map_or(0, |e| e.timestamp).max(unix_secs(now));
        let known = self.replaced.entry(serial).or_insert(stale);
        *known = (*known).max(stale);
        while self.replaced.len() > self.config.capacity.max(1) {
            let Some(oldest) = self
                .replaced
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(s, _)| *s)
            else {
                break;
            };
            self.replaced.remove(&oldest);
        }
        if entry.is_none() {
            return Ok(false);
        }
        self.delete(prefix)?;
        self.stats.forgotten_replaced += 1;
        Ok(true)
    }

    /// Forgets a peer.
    pub fn remove(&mut self, prefix: Ipv6Net) -> Result<bool, PeerDbError> {
        let had = self.entries.contains_key(&prefix);
        self.delete(prefix)?;
        Ok(had)
    }

    fn delete(&mut self, prefix: Ipv6Net) -> Result<(), PeerDbError> {
        self.entries.remove(&prefix);
        self.conn.execute(
            "DELETE FROM peer WHERE prefix = ?1",
            params![prefix.to_string()],
        )?;
        Ok(())
    }

    /// Drops the oldest announcements until at most `keep` remain.
    fn evict_to(&mut self, keep: usize) -> Result<(), PeerDbError> {
        while self.entries.len() > keep {
            let Some(oldest) = self
                .entries
                .values()
                .min_by_key(|e| (e.timestamp, e.prefix))
                .map(|e| e.prefix)
            else {
                break;
            };
            self.delete(oldest)?;
            self.stats.evicted += 1;
        }
        Ok(())
    }

    /// A known peer.
    pub fn get(&self, prefix: &Ipv6Net) -> Option<&PeerEntry> {
        self.entries.get(prefix)
    }

    /// Every entry, by prefix.
    pub fn iter(&self) -> impl Iterator<Item = &PeerEntry> {
        self.entries.values()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the DB is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The limits.
    pub fn config(&self) -> &PeerDbConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &PeerDbStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests;
