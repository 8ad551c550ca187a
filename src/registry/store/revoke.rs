//! Revocation, the CRL, and the release of expired or revoked prefixes.

use std::time::{Duration, SystemTime};

use ipnet::Ipv6Net;

use super::db::{Tx, vals};
use super::issue::node_of_serial;
use super::{Prefixes, StoreError, parse_prefix, secs};
use crate::identity::{Ca, from_unix_secs};

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

/// Revokes a node, in the caller's write transaction: every unexpired
/// certificate of it goes on the CRL (signed again in the same
/// transaction), its announcement is dropped, and its prefix is released
/// after its last certificate expires.
pub fn revoke(
    tx: &mut dyn Tx,
    ca: &Ca,
    target: RevokeTarget,
    now: SystemTime,
) -> Result<RevokeOutcome, StoreError> {
    let (node_id, state, prefix) = match target {
        RevokeTarget::Serial(s) => node_of_serial(tx, s)?,
        RevokeTarget::Prefix(p) => {
            let r = tx
                .query_opt(
                    "SELECT id, state, prefix FROM node WHERE prefix = $1 AND state != 'released'",
                    vals![p.trunc().to_string()],
                )?
                .ok_or_else(|| StoreError::Unknown(format!("no live node holds {p}")))?;
            (r.int(0)?, r.text(1)?, r.text(2)?)
        }
    };
    let newly = match state.as_str() {
        "active" => true,
        "revoked" => false,
        _ => {
            return Err(StoreError::Unknown(format!(
                "{prefix} was released already"
            )));
        }
    };
    if newly {
        tx.execute(
            "UPDATE node SET state = 'revoked', revoked_at = $1 WHERE id = $2",
            vals![secs(now), node_id],
        )?;
        tx.execute(
            "DELETE FROM announcement WHERE node_id = $1",
            vals![node_id],
        )?;
    }
    refresh_crl(tx, ca, now, true)?;
    let serials = tx
        .query(
            "SELECT serial FROM cert WHERE node_id = $1 AND not_after >= $2 ORDER BY serial",
            vals![node_id, secs(now)],
        )?
        .iter()
        .map(|r| r.uint(0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RevokeOutcome {
        prefix: parse_prefix(&prefix)?,
        serials,
        newly,
    })
}

/// Releases, in the caller's write transaction, the prefixes (and IPv4
/// subnets) of nodes whose newest certificate expired more than `grace`
/// ago, and of revoked nodes whose certificates all expired; returns the
/// prefixes (freed in `prefixes` too, with the subnets).
pub fn sweep(
    tx: &mut dyn Tx,
    prefixes: &mut Prefixes,
    grace: Duration,
    now: SystemTime,
) -> Result<Vec<Ipv6Net>, StoreError> {
    let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    let rows = tx.query(
        "SELECT n.id, n.prefix, n.ipv4 FROM node n JOIN cert c ON c.node_id = n.id
         WHERE n.state != 'released' GROUP BY n.id
         HAVING (n.state = 'active' AND MAX(c.not_after) + $1 < $2)
             OR (n.state = 'revoked' AND MAX(c.not_after) < $2)",
        vals![grace, secs(now)],
    )?;
    let mut out = vec![];
    for r in rows {
        let (id, prefix) = (r.int(0)?, parse_prefix(&r.text(1)?)?);
        tx.execute(
            "UPDATE node SET state = 'released', released_at = $1 WHERE id = $2",
            vals![secs(now), id],
        )?;
        tx.execute("DELETE FROM announcement WHERE node_id = $1", vals![id])?;
        prefixes.release(tx, prefix)?;
        if let Some(subnet) = r.opt_text(2)? {
            let subnet: ipnet::Ipv4Net = subnet.parse().map_err(|_| {
                StoreError::Internal(format!("bad IPv4 subnet {subnet:?} in the database"))
            })?;
            prefixes.release(tx, subnet)?;
        }
        out.push(prefix);
    }
    prefixes.prune(tx)?;
    Ok(out)
}

/// A CRL entry: serial, revocation time, expiry of the certificate.
type Entry = (u64, i64, i64);

/// Serials that must be on the CRL at `now`: unexpired certificates of
/// revoked nodes.
fn revoked_serials(tx: &mut dyn Tx, now: SystemTime) -> Result<Vec<Entry>, StoreError> {
    tx.query(
        "SELECT c.serial, n.revoked_at, c.not_after FROM cert c JOIN node n ON n.id = c.node_id
         WHERE n.state = 'revoked' AND c.not_after >= $1 ORDER BY c.serial",
        vals![secs(now)],
    )?
    .iter()
    .map(|r| Ok((r.uint(0)?, r.opt_int(1)?.unwrap_or(0), r.int(2)?)))
    .collect()
}

fn serial_list(v: &[Entry]) -> String {
    v.iter()
        .map(|(s, _, _)| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The stored CRL if it is still current: younger than [`CRL_REFRESH`]
/// and none of its entries expired. (Revocations re-sign it in their own
/// transaction, so a new revocation never leaves it stale.)
pub fn current_crl(tx: &mut dyn Tx, now: SystemTime) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(row) = tx.query_opt(
        "SELECT this_update, next_expiry, der FROM crl WHERE id = 1",
        &[],
    )?
    else {
        return Ok(None);
    };
    let now = secs(now);
    let fresh = row.int(0)? + i64::try_from(CRL_REFRESH.as_secs()).unwrap_or(0) > now
        && row.opt_int(1)?.is_some_and(|e| e >= now);
    fresh.then(|| row.blob(2)).transpose()
}

/// Signs a new CRL if needed (or always with `force`) and stores it, in
/// the caller's write transaction. Its number is the stored one plus one,
/// read under the write lock, so it never goes backwards whichever
/// replica signs.
pub fn refresh_crl(
    tx: &mut dyn Tx,
    ca: &Ca,
    now: SystemTime,
    force: bool,
) -> Result<Vec<u8>, StoreError> {
    if !force && let Some(der) = current_crl(tx, now)? {
        return Ok(der);
    }
    let list = revoked_serials(tx, now)?;
    let number = tx
        .query_opt("SELECT number FROM crl WHERE id = 1", &[])?
        .map(|r| r.int(0))
        .transpose()?
        .unwrap_or(0)
        + 1;
    let entries: Vec<(u64, SystemTime)> = list
        .iter()
        .map(|(s, t, _)| (*s, from_unix_secs(u64::try_from(*t).unwrap_or(0))))
        .collect();
    let next_expiry = list.iter().map(|e| e.2).min().unwrap_or(i64::MAX);
    let der = ca.sign_crl(
        u64::try_from(number).unwrap_or(0),
        &entries,
        now,
        now + CRL_VALIDITY,
    )?;
    tx.execute(
        "INSERT INTO crl(id, number, this_update, serials, der, next_expiry)
         VALUES (1, $1, $2, $3, $4, $5)
         ON CONFLICT(id) DO UPDATE SET number = excluded.number, this_update = excluded.this_update,
           serials = excluded.serials, der = excluded.der, next_expiry = excluded.next_expiry",
        vals![number, secs(now), serial_list(&list), &der, next_expiry],
    )?;
    Ok(der)
}
