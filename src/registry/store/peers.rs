//! Peer announcements and bootstrap answers.

use std::time::SystemTime;

use rusqlite::{OptionalExtension, params};

use super::issue::node_of_serial;
use super::{NodeState, Store, StoreError, secs, serial_i64};
use crate::identity::{SignedAnnouncement, VerifiedAnnouncement};

impl Store {
    /// The state of the node that was issued certificate `serial` (`None`:
    /// not a node certificate of this registry).
    pub fn node_state(&self, serial: u64) -> Result<Option<NodeState>, StoreError> {
        let state: Option<String> = self
            .conn
            .query_row(
                "SELECT n.state FROM cert c JOIN node n ON n.id = c.node_id WHERE c.serial = ?1",
                [serial_i64(serial)?],
                |r| r.get(0),
            )
            .optional()?;
        Ok(state.map(|s| match s.as_str() {
            "active" => NodeState::Active,
            "revoked" => NodeState::Revoked,
            _ => NodeState::Released,
        }))
    }

    /// Stores a verified announcement of the node that holds certificate
    /// `verified.cert` unless a newer one is stored. Returns whether it was
    /// stored. The caller checked that the TLS client is that node.
    pub fn announce(
        &mut self,
        verified: &VerifiedAnnouncement,
        signed: &SignedAnnouncement,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let json =
            serde_json::to_string(signed).map_err(|e| StoreError::Internal(e.to_string()))?;
        let serial = verified.cert.serial;
        self.immediate(|tx| {
            let (node_id, state, _) = node_of_serial(tx, serial)?;
            if state != "active" {
                return Err(StoreError::Revoked(serial));
            }
            let ts = i64::try_from(verified.announcement.timestamp).unwrap_or(i64::MAX);
            let n = tx.execute(
                "INSERT INTO announcement(node_id, serial, timestamp, received, not_after, signed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(node_id) DO UPDATE SET serial = excluded.serial, timestamp = excluded.timestamp,
                   received = excluded.received, not_after = excluded.not_after, signed = excluded.signed
                 WHERE excluded.timestamp >= announcement.timestamp",
                params![node_id, serial_i64(serial)?, ts, secs(now), secs(verified.cert.not_after), json],
            )?;
            Ok(n == 1)
        })
    }

    /// Up to `n` announcements received since `since`, in random order, of
    /// live (not revoked, certificate not expired) nodes other than the one
    /// holding certificate `requester`.
    pub fn bootstrap(
        &self,
        requester: u64,
        n: u32,
        since: SystemTime,
        now: SystemTime,
    ) -> Result<Vec<SignedAnnouncement>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT a.signed FROM announcement a JOIN node n ON n.id = a.node_id
             WHERE n.state = 'active' AND a.received >= ?1 AND a.not_after >= ?2
               AND a.node_id IS NOT (SELECT node_id FROM cert WHERE serial = ?3)
             ORDER BY random() LIMIT ?4",
        )?;
        let rows = st
            .query_map(
                params![secs(since), secs(now), serial_i64(requester)?, n],
                |r| r.get::<_, String>(0),
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.iter()
            .map(|j| {
                serde_json::from_str(j)
                    .map_err(|e| StoreError::Internal(format!("stored announcement: {e}")))
            })
            .collect()
    }
}
