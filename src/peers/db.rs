//! The peer DB: signed announcements of other nodes, in memory.
//!
//! Every entry is a [`SignedAnnouncement`] that verified against the CA and
//! the CRL in force: a relay (the registry, another node) cannot forge or
//! alter one, and nobody can announce addresses for a prefix that is not
//! its certificate's. Entries are re-verified when restored from the
//! durable copy and after every CRL change; revoked, expired and stale ones
//! are dropped.
//!
//! An entry whose address now answers with another node's certificate is
//! stale: [`PeerDb::forget_replaced`] drops it and refuses the copies of it
//! that other nodes still pass around.
//!
//! Sans-IO: NodeCore owns it and takes its [`PeerChange`]s after every
//! input; the control loop applies them to the durable copy
//! ([`super::store::PeerStore`], SQLite in the state directory). It is a
//! cache (re6stnet's `cache.db` is too): losing the last changes in a
//! crash only costs a few announcements that peer exchange brings back.
//! It is bounded (default 200 entries); when full, the entry with the
//! oldest announcement makes room.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use ipnet::Ipv6Net;
use serde::Serialize;

use crate::identity::tls::CaVerifier;
use crate::identity::{IdentityError, SignedAnnouncement, VerifiedAnnouncement, unix_secs};

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
    /// The port its TCP tunnels listen on at those IPs (`None`: not
    /// announced; TCP dials use the addresses' ports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_port: Option<u16>,
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
            tcp_port: v.announcement.tcp_port,
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
}

/// One change of the peer DB, for its durable copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    /// Store (or replace) the announcement of its prefix.
    Store {
        /// The announced prefix (the key).
        prefix: Ipv6Net,
        /// When it was signed (UNIX seconds).
        timestamp: u64,
        /// The announcement, verified.
        signed: SignedAnnouncement,
    },
    /// Forget a prefix.
    Remove(Ipv6Net),
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
    me: Ipv6Net,
    config: PeerDbConfig,
    entries: BTreeMap<Ipv6Net, PeerEntry>,
    /// Certificates found replaced at their address (serial), and the
    /// newest announcement timestamp of theirs known stale. In memory and
    /// bounded like the entries: after a restart a stale copy can cost one
    /// more dial.
    replaced: BTreeMap<u64, u64>,
    stats: PeerDbStats,
    /// Changes not taken yet, one per prefix (the latest wins): bounded by
    /// the prefixes one input touches, since NodeCore takes them after
    /// every input.
    changes: BTreeMap<Ipv6Net, Option<(u64, SignedAnnouncement)>>,
}

impl PeerDb {
    /// An empty DB for the node holding `me`.
    pub fn new(me: Ipv6Net, config: PeerDbConfig) -> Self {
        Self {
            me,
            config,
            entries: BTreeMap::new(),
            replaced: BTreeMap::new(),
            stats: PeerDbStats::default(),
            changes: BTreeMap::new(),
        }
    }

    /// Fills the DB from its durable copy: `rows` of (stored key,
    /// announcement). Each is verified again; the bad ones (tampered,
    /// revoked, expired, stale, our own, stored under another key) are
    /// dropped and counted as purged, and their removal is a change.
    pub fn restore(
        &mut self,
        rows: impl IntoIterator<Item = (String, SignedAnnouncement)>,
        verifier: &CaVerifier,
        now: SystemTime,
    ) {
        for (key, signed) in rows {
            match signed.verify(verifier, now, self.config.max_age) {
                Ok(v)
                    if v.announcement.prefix.to_string() == key
                        && v.announcement.prefix != self.me
                        && !self.entries.contains_key(&v.announcement.prefix) =>
                {
                    let e = PeerEntry::new(v, signed);
                    self.entries.insert(e.prefix, e);
                }
                _ => {
                    self.stats.purged += 1;
                    if let Ok(prefix) = key.parse::<Ipv6Net>() {
                        self.changes.insert(prefix, None);
                    }
                }
            }
        }
        self.evict_to(self.config.capacity);
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
                self.evict_to(self.config.capacity.saturating_sub(1));
                Inserted::New
            }
        };
        if self.config.capacity == 0 {
            return Ok(Inserted::Unchanged);
        }
        self.changes
            .insert(prefix, Some((v.announcement.timestamp, signed.clone())));
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
    pub fn purge(&mut self, verifier: &CaVerifier, now: SystemTime) -> Vec<Ipv6Net> {
        let bad: Vec<Ipv6Net> = self
            .entries
            .values()
            .filter(|e| e.signed.verify(verifier, now, self.config.max_age).is_err())
            .map(|e| e.prefix)
            .collect();
        for p in &bad {
            self.delete(*p);
            self.stats.purged += 1;
        }
        // Announcements that old are refused as stale anyway.
        let horizon = unix_secs(now).saturating_sub(self.config.max_age.as_secs());
        self.replaced.retain(|_, stale| *stale >= horizon);
        bad
    }

    /// A dial to the entry of `prefix` (certificate `serial`) reached
    /// another node of the network at its address: the entry is stale.
    /// Drops it, and refuses from now on the announcements of that
    /// certificate signed up to now (or up to the entry's, if later):
    /// other nodes and the registry still hold copies, while a node that
    /// really moved signs a newer one. Returns whether an entry was
    /// dropped (none when the entry changed since the dial).
    pub fn forget_replaced(&mut self, prefix: Ipv6Net, serial: u64, now: SystemTime) -> bool {
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
            return false;
        }
        self.delete(prefix);
        self.stats.forgotten_replaced += 1;
        true
    }

    /// Forgets a peer; whether it was known.
    pub fn remove(&mut self, prefix: Ipv6Net) -> bool {
        let had = self.entries.contains_key(&prefix);
        if had {
            self.delete(prefix);
        }
        had
    }

    fn delete(&mut self, prefix: Ipv6Net) {
        self.entries.remove(&prefix);
        self.changes.insert(prefix, None);
    }

    /// Drops the oldest announcements until at most `keep` remain.
    fn evict_to(&mut self, keep: usize) {
        while self.entries.len() > keep {
            let Some(oldest) = self
                .entries
                .values()
                .min_by_key(|e| (e.timestamp, e.prefix))
                .map(|e| e.prefix)
            else {
                break;
            };
            self.delete(oldest);
            self.stats.evicted += 1;
        }
    }

    /// The changes since the last call, for the durable copy.
    pub fn take_changes(&mut self) -> impl Iterator<Item = PeerChange> + use<> {
        std::mem::take(&mut self.changes)
            .into_iter()
            .map(|(prefix, stored)| match stored {
                Some((timestamp, signed)) => PeerChange::Store {
                    prefix,
                    timestamp,
                    signed,
                },
                None => PeerChange::Remove(prefix),
            })
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
