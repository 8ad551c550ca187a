//! Revocation, the CRL, and the release of expired or revoked prefixes.

use std::time::{Duration, SystemTime};

use ipnet::Ipv6Net;
use rusqlite::{Connection, OptionalExtension, params};

use super::issue::node_of_serial;
use super::{Store, StoreError, secs};
use crate::identity::{Ca, from_unix_secs};
use crate::registry::alloc::BuddyAllocator;

/// A CRL is valid this long...
pub const CRL_VALIDITY: Duration = Duration::from_secs(7 * 86_400);
/// ...and re-signed when older than this, even if nothing changed.
pub const CRL_REFRESH: Duration = Duration::from_secs(86_400);

/// What to revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeTarget {
    /// The live node holding this prefix.
    Prefix(Ipv6Net),
    /// The node that was issued this certificate serial.
    Serial(u64),
}

impl std::str::FromStr for RevokeTarget {
    type Err = String;

    /// A prefix (`fd00:1:2:3::/64`) or a decimal serial.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(p) = s.parse::<Ipv6Net>() {
            return Ok(Self::Prefix(p));
        }
        s.parse::<u64>()
            .map(Self::Serial)
            .map_err(|_| format!("{s:?} is neither a prefix (fd00:1:2:3::/64) nor a serial number"))
    }
}

/// Result of a revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeOutcome {
    /// The node's prefix (freed once its certificates expired).
    pub prefix: Ipv6Net,
    /// The serials now on the CRL for it.
    pub serials: Vec<u64>,
    /// False if the node was revoked already.
    pub newly: bool,
}

impl Store {
    /// Revokes a node: every unexpired certificate of it goes on the CRL
    /// (signed again in the same transaction), its announcement is dropped,
    /// and its prefix is released after its last certificate expires.
    pub fn revoke(
        &mut self,
        ca: &Ca,
        target: RevokeTarget,
        now: SystemTime,
    ) -> Result<RevokeOutcome, StoreError> {
        self.immediate(|tx| {
            let (node_id, state, prefix) = match target {
                RevokeTarget::Serial(s) => node_of_serial(tx, s)?,
                RevokeTarget::Prefix(p) => tx
                    .query_row(
                        "SELECT id, state, prefix FROM node WHERE prefix = ?1 AND state != 'released'",
                        [p.trunc().to_string()],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?
                    .ok_or_else(|| StoreError::Unknown(format!("no live node holds {p}")))?,
            };
            let newly = match state.as_str() {
                "active" => true,
                "revoked" => false,
                _ => return Err(StoreError::Unknown(format!("{prefix} was released already"))),
            };
            if newly {
                tx.execute("UPDATE node SET state = 'revoked', revoked_at = ?1 WHERE id = ?2", params![secs(now), node_id])?;
                tx.execute("DELETE FROM announcement WHERE node_id = ?1", [node_id])?;
            }
            refresh_crl(tx, ca, now, true)?;
            let mut st = tx.prepare("SELECT serial FROM cert WHERE node_id = ?1 AND not_after >= ?2 ORDER BY serial")?;
            let serials = st
                .query_map(params![node_id, secs(now)], |r| r.get::<_, i64>(0))?
                .map(|s| s.map(|s| u64::try_from(s).unwrap_or(0)))
                .collect::<Result<Vec<_>, _>>()?;
            let prefix = prefix.parse().map_err(|_| StoreError::Internal(format!("bad prefix {prefix:?}")))?;
            Ok(RevokeOutcome { prefix, serials, newly })
        })
    }

    /// The current CRL (DER), signed again when its content changed (a
    /// revoked certificate expired) or it is older than [`CRL_REFRESH`].
    pub fn crl(&mut self, ca: &Ca, now: SystemTime) -> Result<Vec<u8>, StoreError> {
        // Fast path without a write transaction.
        if let Some(der) = current_crl(&self.conn, now)? {
            return Ok(der);
        }
        self.immediate(|tx| refresh_crl(tx, ca, now, false))
    }

    /// Releases the prefixes of nodes whose newest certificate expired more
    /// than `grace` ago, and of revoked nodes whose certificates all
    /// expired; returns them (already freed in `alloc`).
    pub fn sweep(
        &mut self,
        alloc: &mut BuddyAllocator,
        grace: Duration,
        now: SystemTime,
    ) -> Result<Vec<Ipv6Net>, StoreError> {
        let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let released = self.immediate(|tx| {
            let mut st = tx.prepare(
                "SELECT n.id, n.prefix FROM node n JOIN cert c ON c.node_id = n.id
                 WHERE n.state != 'released' GROUP BY n.id
                 HAVING (n.state = 'active' AND MAX(c.not_after) + ?1 < ?2)
                     OR (n.state = 'revoked' AND MAX(c.not_after) < ?2)",
            )?;
            let rows = st
                .query_map(params![grace, secs(now)], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut out = vec![];
            for (id, prefix) in rows {
                tx.execute(
                    "UPDATE node SET state = 'released', released_at = ?1 WHERE id = ?2",
                    params![secs(now), id],
                )?;
                tx.execute("DELETE FROM announcement WHERE node_id = ?1", [id])?;
                out.push(
                    prefix
                        .parse::<Ipv6Net>()
                        .map_err(|_| StoreError::Internal(format!("bad prefix {prefix:?}")))?,
                );
            }
            Ok(out)
        })?;
        for p in &released {
            alloc
                .free(*p)
                .map_err(|e| StoreError::Internal(format!("freeing {p}: {e}")))?;
        }
        Ok(released)
    }
}

/// Serials that must be on the CRL at `now`: unexpired certificates of
/// revoked nodes, with their revocation time.
fn revoked_serials(conn: &Connection, now: SystemTime) -> Result<Vec<(u64, i64)>, StoreError> {
    let mut st = conn.prepare(
        "SELECT c.serial, n.revoked_at FROM cert c JOIN node n ON n.id = c.node_id
         WHERE n.state = 'revoked' AND c.not_after >= ?1 ORDER BY c.serial",
    )?;
    let rows = st
        .query_map([secs(now)], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
        })?
        .map(|r| r.map(|(s, t)| (u64::try_from(s).unwrap_or(0), t.unwrap_or(0))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn serial_list(v: &[(u64, i64)]) -> String {
    v.iter()
        .map(|(s, _)| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The stored CRL if it is still current.
fn current_crl(conn: &Connection, now: SystemTime) -> Result<Option<Vec<u8>>, StoreError> {
    let row: Option<(i64, String, Vec<u8>)> = conn
        .query_row(
            "SELECT this_update, serials, der FROM crl WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((this_update, serials, der)) = row else {
        return Ok(None);
    };
    let fresh = this_update + i64::try_from(CRL_REFRESH.as_secs()).unwrap_or(0) > secs(now);
    Ok((fresh && serials == serial_list(&revoked_serials(conn, now)?)).then_some(der))
}

/// Signs a new CRL if needed (or always with `force`) and stores it.
fn refresh_crl(
    conn: &Connection,
    ca: &Ca,
    now: SystemTime,
    force: bool,
) -> Result<Vec<u8>, StoreError> {
    if !force && let Some(der) = current_crl(conn, now)? {
        return Ok(der);
    }
    let list = revoked_serials(conn, now)?;
    let number: i64 = conn
        .query_row("SELECT number FROM crl WHERE id = 1", [], |r| r.get(0))
        .optional()?
        .unwrap_or(0)
        + 1;
    let entries: Vec<(u64, SystemTime)> = list
        .iter()
        .map(|(s, t)| (*s, from_unix_secs(u64::try_from(*t).unwrap_or(0))))
        .collect();
    let der = ca.sign_crl(
        u64::try_from(number).unwrap_or(0),
        &entries,
        now,
        now + CRL_VALIDITY,
    )?;
    conn.execute(
        "INSERT INTO crl(id, number, this_update, serials, der) VALUES (1, ?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET number = excluded.number, this_update = excluded.this_update,
           serials = excluded.serials, der = excluded.der",
        params![number, secs(now), serial_list(&list), der],
    )?;
    Ok(der)
}
