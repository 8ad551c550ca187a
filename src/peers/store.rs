//! The peer DB's durable copy: one SQLite table in the state directory
//! (`peers.db`), written by the control loop from the peer DB's
//! [`PeerChange`]s and read back at start.
//!
//! `synchronous=OFF`: losing the last writes in a crash only costs a few
//! announcements that peer exchange brings back. What is read back is
//! verified again before use ([`super::PeerDb::restore`]).

use std::path::Path;

use rusqlite::{Connection, params};

use super::db::PeerChange;
use crate::identity::SignedAnnouncement;

/// File name of the peer DB in the state directory.
pub const FILE: &str = "peers.db";

/// The durable copy of one node's peer DB.
#[derive(Debug)]
pub struct PeerStore {
    conn: Connection,
}

/// Rows of the store: the key (a prefix, as text) and the announcement.
pub type StoredPeers = Vec<(String, SignedAnnouncement)>;

impl PeerStore {
    /// Opens (creating) the store at `path` and reads every row.
    pub fn open(path: &Path) -> Result<(Self, StoredPeers), rusqlite::Error> {
        let conn = Connection::open(path)?;
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
        let rows = {
            let mut st =
                conn.prepare("SELECT prefix, payload, signature, certificate FROM peer")?;
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
        Ok((Self { conn }, rows))
    }

    /// Applies one change.
    pub fn apply(&mut self, change: &PeerChange) -> Result<(), rusqlite::Error> {
        match change {
            PeerChange::Store {
                prefix,
                timestamp,
                signed,
            } => {
                let timestamp = i64::try_from(*timestamp).unwrap_or(i64::MAX);
                self.conn.execute(
                    "INSERT OR REPLACE INTO peer (prefix, timestamp, payload, signature, certificate)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        prefix.to_string(),
                        timestamp,
                        signed.payload,
                        signed.signature,
                        signed.certificate
                    ],
                )?;
            }
            PeerChange::Remove(prefix) => {
                self.conn.execute(
                    "DELETE FROM peer WHERE prefix = ?1",
                    params![prefix.to_string()],
                )?;
            }
        }
        Ok(())
    }
}
