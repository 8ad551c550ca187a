//! Peer announcements and bootstrap answers.

use std::time::SystemTime;

use super::db::{Tx, vals};
use super::issue::node_of_serial;
use super::{NodeState, Store, StoreError, secs, serial_i64};
use crate::identity::{SignedAnnouncement, VerifiedAnnouncement};

/// The state of the node that was issued certificate `serial` (`None`:
/// not a node certificate of this registry).
pub fn node_state(tx: &mut dyn Tx, serial: u64) -> Result<Option<NodeState>, StoreError> {
    tx.query_opt(
        "SELECT n.state FROM cert c JOIN node n ON n.id = c.node_id WHERE c.serial = $1",
        vals![serial_i64(serial)?],
    )?
    .map(|r| Ok(NodeState::parse(&r.text(0)?)))
    .transpose()
}

/// Stores, in the caller's write transaction, a verified announcement of
/// the node that holds certificate `verified.cert` unless a newer one is
/// stored. Returns whether it was stored. The caller checked that the TLS
/// client is that node.
pub fn announce(
    tx: &mut dyn Tx,
    verified: &VerifiedAnnouncement,
    signed: &SignedAnnouncement,
    now: SystemTime,
) -> Result<bool, StoreError> {
    let json = serde_json::to_string(signed).map_err(|e| StoreError::Internal(e.to_string()))?;
    let serial = verified.cert.serial;
    let (node_id, state, _) = node_of_serial(tx, serial)?;
    if state != "active" {
        return Err(StoreError::Revoked(serial));
    }
    let ts = i64::try_from(verified.announcement.timestamp).unwrap_or(i64::MAX);
    let n = tx.execute(
        "INSERT INTO announcement(node_id, serial, timestamp, received, not_after, signed)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT(node_id) DO UPDATE SET serial = excluded.serial, timestamp = excluded.timestamp,
           received = excluded.received, not_after = excluded.not_after, signed = excluded.signed
         WHERE excluded.timestamp >= announcement.timestamp",
        vals![
            node_id,
            serial_i64(serial)?,
            ts,
            secs(now),
            secs(verified.cert.not_after),
            json
        ],
    )?;
    Ok(n == 1)
}

/// Up to `n` announcements received since `since`, in random order, of
/// live (not revoked, certificate not expired) nodes other than the one
/// holding certificate `requester`.
pub fn bootstrap(
    tx: &mut dyn Tx,
    requester: u64,
    n: u32,
    since: SystemTime,
    now: SystemTime,
) -> Result<Vec<SignedAnnouncement>, StoreError> {
    tx.query(
        "SELECT a.signed FROM announcement a JOIN node n ON n.id = a.node_id
         WHERE n.state = 'active' AND a.received >= $1 AND a.not_after >= $2
           AND a.node_id IS DISTINCT FROM (SELECT node_id FROM cert WHERE serial = $3)
         ORDER BY random() LIMIT $4",
        vals![secs(since), secs(now), serial_i64(requester)?, n],
    )?
    .iter()
    .map(|r| {
        serde_json::from_str(&r.text(0)?)
            .map_err(|e| StoreError::Internal(format!("stored announcement: {e}")))
    })
    .collect()
}

/// Every stored announcement of a live node received since `since`, with
/// when it was received (UNIX seconds): what the topology is drawn from.
pub fn announcements(
    tx: &mut dyn Tx,
    since: SystemTime,
    now: SystemTime,
) -> Result<Vec<(SignedAnnouncement, u64)>, StoreError> {
    tx.query(
        "SELECT a.signed, a.received FROM announcement a JOIN node n ON n.id = a.node_id
         WHERE n.state = 'active' AND a.received >= $1 AND a.not_after >= $2
         ORDER BY n.prefix",
        vals![secs(since), secs(now)],
    )?
    .iter()
    .map(|r| {
        let a = serde_json::from_str(&r.text(0)?)
            .map_err(|e| StoreError::Internal(format!("stored announcement: {e}")))?;
        Ok((a, r.uint(1)?))
    })
    .collect()
}

impl Store {
    /// See [`node_state`].
    pub fn node_state(&self, serial: u64) -> Result<Option<NodeState>, StoreError> {
        self.read(|tx| node_state(tx, serial))
    }

    /// See [`bootstrap`].
    pub fn bootstrap(
        &self,
        requester: u64,
        n: u32,
        since: SystemTime,
        now: SystemTime,
    ) -> Result<Vec<SignedAnnouncement>, StoreError> {
        self.read(|tx| bootstrap(tx, requester, n, since, now))
    }
}
