//! Enrolment and renewal: the two operations that issue node certificates.

use std::time::{Duration, SystemTime};

use ipnet::{Ipv4Net, Ipv6Net};

use super::db::{Tx, vals};
use super::{Policy, Prefixes, StoreError, parse_prefix, secs, serial_i64, take_serials};
use crate::identity::{Ca, IssueParams, NodeCert, PublicKey, from_unix_secs};

/// Backdating of `not_before`, for nodes whose clock is a little behind.
const BACKDATE: Duration = Duration::from_secs(300);

/// A certificate handed to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// DER.
    pub der: Vec<u8>,
    /// Its serial.
    pub serial: u64,
    /// The node's prefix.
    pub prefix: Ipv6Net,
    /// False when an existing certificate was returned (idempotent retry).
    pub new: bool,
}

/// Result of a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewOutcome {
    /// The node's newest certificate.
    pub cert: Issued,
    /// Whether it was issued by this call.
    pub renewed: bool,
}

/// Enrols the key `key` (from a verified CSR), in the caller's write
/// transaction: checks the token, takes a prefix (and an IPv4 subnet when
/// the network has IPv4), signs and records the certificate, marks the
/// token used. On any error the caller rolls back
/// (and undoes `prefixes`' operation).
///
/// A key that is already enrolled (live node) gets its current
/// certificate back and consumes no token: a client that lost the
/// answer can simply retry, on any replica.
pub fn enrol(
    tx: &mut dyn Tx,
    prefixes: &mut Prefixes,
    ca: &Ca,
    policy: &Policy,
    key: &PublicKey,
    token: Option<&str>,
    now: SystemTime,
) -> Result<Issued, StoreError> {
    let key_id = key.id().to_vec();
    if let Some(existing) = latest_for_key(tx, &key_id)? {
        return Ok(existing);
    }
    let mut len = policy.node_prefix_len;
    match token {
        Some(t) => {
            let row = tx
                .query_opt(
                    "SELECT expires, prefix_len, used_by FROM token WHERE token = $1",
                    vals![t],
                )?
                .ok_or(StoreError::UnknownToken)?;
            if row.opt_int(2)?.is_some() {
                return Err(StoreError::TokenUsed);
            }
            if row.opt_int(0)?.is_some_and(|e| e < secs(now)) {
                return Err(StoreError::TokenExpired);
            }
            if let Some(l) = row.opt_int(1)? {
                len = u8::try_from(l)
                    .map_err(|_| StoreError::Internal(format!("bad token prefix length {l}")))?;
            }
        }
        None if !policy.open => return Err(StoreError::TokenRequired),
        None => {}
    }
    let prefix = prefixes.allocate(tx, len)?;
    let ipv4 = match policy.ipv4 {
        Some((net, len)) => Some(prefixes.allocate_v4(tx, net, len)?),
        None => None,
    };
    let node_id = tx
        .query_one(
            "INSERT INTO node(prefix, state, key_id, token, created, ipv4)
             VALUES ($1, 'active', $2, $3, $4, $5) RETURNING id",
            vals![
                prefix.to_string(),
                key_id,
                token,
                secs(now),
                ipv4.map(|n| n.to_string())
            ],
        )?
        .int(0)?;
    if let Some(t) = token {
        let n = tx.execute(
            "UPDATE token SET used_by = $1, used_at = $2 WHERE token = $3 AND used_by IS NULL",
            vals![node_id, secs(now), t],
        )?;
        if n != 1 {
            return Err(StoreError::TokenUsed);
        }
    }
    issue(tx, ca, policy, node_id, (prefix, ipv4), &key.spki_der, now)
}

/// Renews the node whose certificate has serial `presented`, in the
/// caller's write transaction: returns its newest certificate, issuing a
/// new one (same prefix, new serial) when the newest is within the
/// renewal window, has expired (within the grace period), `new_key`
/// differs from its key, or it lacks the node's IPv4 subnet (a network
/// that got IPv4 after the node enrolled: the subnet is taken now).
pub fn renew(
    tx: &mut dyn Tx,
    prefixes: &mut Prefixes,
    ca: &Ca,
    policy: &Policy,
    presented: u64,
    new_key: Option<&PublicKey>,
    now: SystemTime,
) -> Result<RenewOutcome, StoreError> {
    let (node_id, state, prefix) = node_of_serial(tx, presented)?;
    match state.as_str() {
        "active" => {}
        "revoked" => return Err(StoreError::Revoked(presented)),
        _ => {
            return Err(StoreError::Unknown(format!(
                "serial {presented}: prefix released, enrol again"
            )));
        }
    }
    let row = tx.query_one(
        "SELECT serial, der, spki, not_after FROM cert WHERE node_id = $1 ORDER BY serial DESC LIMIT 1",
        vals![node_id],
    )?;
    let (serial, der, spki, not_after) = (row.uint(0)?, row.blob(1)?, row.blob(2)?, row.int(3)?);
    if not_after.saturating_add(secs_of(policy.grace_period)) < secs(now) {
        return Err(StoreError::Expired(presented));
    }
    let key_spki = new_key.map(|k| k.spki_der.clone()).unwrap_or(spki.clone());
    let ipv4 = ipv4_of(tx, prefixes, policy, node_id)?;
    let cert_ipv4 = NodeCert::from_der(&der).ok().and_then(|c| c.ipv4);
    let due = not_after - secs_of(policy.renew_window) <= secs(now)
        || key_spki != spki
        || cert_ipv4 != ipv4;
    let prefix = parse_prefix(&prefix)?;
    if !due {
        let cert = Issued {
            der,
            serial,
            prefix,
            new: false,
        };
        return Ok(RenewOutcome {
            cert,
            renewed: false,
        });
    }
    if let Some(k) = new_key {
        tx.execute(
            "UPDATE node SET key_id = $1 WHERE id = $2",
            vals![k.id().to_vec(), node_id],
        )?;
    }
    let cert = issue(tx, ca, policy, node_id, (prefix, ipv4), &key_spki, now)?;
    Ok(RenewOutcome {
        cert,
        renewed: true,
    })
}

/// The IPv4 subnet of node `node_id`: the one recorded, or one taken now
/// when the network has IPv4 and the node has none yet.
fn ipv4_of(
    tx: &mut dyn Tx,
    prefixes: &mut Prefixes,
    policy: &Policy,
    node_id: i64,
) -> Result<Option<Ipv4Net>, StoreError> {
    let recorded = tx
        .query_one("SELECT ipv4 FROM node WHERE id = $1", vals![node_id])?
        .opt_text(0)?;
    if let Some(s) = recorded {
        return s
            .parse()
            .map(Some)
            .map_err(|_| StoreError::Internal(format!("bad IPv4 subnet {s:?} in the database")));
    }
    let Some((net, len)) = policy.ipv4 else {
        return Ok(None);
    };
    let subnet = prefixes.allocate_v4(tx, net, len)?;
    tx.execute(
        "UPDATE node SET ipv4 = $1 WHERE id = $2",
        vals![subnet.to_string(), node_id],
    )?;
    Ok(Some(subnet))
}

fn secs_of(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The node, state and prefix owning certificate `serial`.
pub(crate) fn node_of_serial(
    tx: &mut dyn Tx,
    serial: u64,
) -> Result<(i64, String, String), StoreError> {
    let row = tx
        .query_opt(
            "SELECT n.id, n.state, n.prefix FROM cert c JOIN node n ON n.id = c.node_id WHERE c.serial = $1",
            vals![serial_i64(serial)?],
        )?
        .ok_or_else(|| StoreError::Unknown(format!("no node certificate with serial {serial}")))?;
    Ok((row.int(0)?, row.text(1)?, row.text(2)?))
}

/// The newest certificate of the live node holding key `key_id`, if any.
fn latest_for_key(tx: &mut dyn Tx, key_id: &[u8]) -> Result<Option<Issued>, StoreError> {
    let Some(row) = tx.query_opt(
        "SELECT c.der, c.serial, n.prefix FROM node n JOIN cert c ON c.node_id = n.id
         WHERE n.key_id = $1 AND n.state = 'active' ORDER BY c.serial DESC LIMIT 1",
        vals![key_id],
    )?
    else {
        return Ok(None);
    };
    Ok(Some(Issued {
        der: row.blob(0)?,
        serial: row.uint(1)?,
        prefix: parse_prefix(&row.text(2)?)?,
        new: false,
    }))
}

/// Signs and records a certificate for node `node_id` holding `space`
/// (its prefix and IPv4 subnet).
fn issue(
    tx: &mut dyn Tx,
    ca: &Ca,
    policy: &Policy,
    node_id: i64,
    (prefix, ipv4): (Ipv6Net, Option<Ipv4Net>),
    spki: &[u8],
    now: SystemTime,
) -> Result<Issued, StoreError> {
    let serial = take_serials(tx, 1)?;
    // Second precision, as in the certificate.
    let now_s = from_unix_secs(crate::identity::unix_secs(now));
    let p = IssueParams {
        serial,
        not_before: now_s.checked_sub(BACKDATE).unwrap_or(now_s),
        not_after: now_s + policy.cert_lifetime,
    };
    let der = ca.issue_node_with_ipv4(spki, prefix, ipv4, p)?;
    tx.execute(
        "INSERT INTO cert(serial, node_id, kind, not_before, not_after, spki, der, issued)
         VALUES ($1, $2, 'node', $3, $4, $5, $6, $7)",
        vals![
            serial_i64(serial)?,
            node_id,
            secs(p.not_before),
            secs(p.not_after),
            spki,
            &der,
            secs(now)
        ],
    )?;
    Ok(Issued {
        der,
        serial,
        prefix,
        new: true,
    })
}
