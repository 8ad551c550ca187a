//! Tokens and listings for the admin CLI.

use std::time::{Duration, SystemTime};

use base64::Engine;
use serde::Serialize;

use super::db::{Tx, vals};
use super::{Store, StoreError, secs};

/// A node's life-cycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Holds its prefix, may renew.
    Active,
    /// On the CRL; prefix freed after its certificates expire.
    Revoked,
    /// Gone; the prefix is free.
    Released,
}

impl NodeState {
    /// From the `node.state` column.
    pub fn parse(s: &str) -> Self {
        match s {
            "active" => Self::Active,
            "revoked" => Self::Revoked,
            _ => Self::Released,
        }
    }
}

/// One node, for `re6st registry list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    /// The prefix.
    pub prefix: String,
    /// Its state.
    pub state: NodeState,
    /// Serial of its newest certificate.
    pub serial: u64,
    /// Expiry of its newest certificate (UNIX seconds).
    pub not_after: u64,
    /// Enrolment time (UNIX seconds).
    pub created: u64,
    /// Token used to enrol, if any.
    pub token: Option<String>,
    /// When its last announcement was received (UNIX seconds).
    pub last_announce: Option<u64>,
    /// Its IPv4 subnet, in a network with IPv4 inside the overlay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
}

/// One token, for `re6st registry tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRow {
    /// The token.
    pub token: String,
    /// Creation time (UNIX seconds).
    pub created: u64,
    /// Expiry (UNIX seconds), if any.
    pub expires: Option<u64>,
    /// Prefix length it grants, if not the default.
    pub prefix_len: Option<u8>,
    /// Free text.
    pub comment: String,
    /// Prefix of the node that used it.
    pub used_by: Option<String>,
}

impl Store {
    /// Makes `count` single-use tokens (120 random bits each).
    pub fn create_tokens(
        &self,
        count: u32,
        valid_for: Option<Duration>,
        prefix_len: Option<u8>,
        comment: &str,
        now: SystemTime,
    ) -> Result<Vec<String>, StoreError> {
        let rng = ring::rand::SystemRandom::new();
        self.write(|tx| {
            let mut out = vec![];
            for _ in 0..count {
                let mut b = [0u8; 15];
                ring::rand::SecureRandom::fill(&rng, &mut b)
                    .map_err(|_| StoreError::Internal("no randomness".into()))?;
                let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
                let expires = valid_for.map(|d| secs(now + d));
                tx.execute(
                    "INSERT INTO token(token, created, expires, prefix_len, comment) VALUES ($1, $2, $3, $4, $5)",
                    vals![&t, secs(now), expires, prefix_len, comment],
                )?;
                out.push(t);
            }
            Ok(out)
        })
    }

    /// Every token, newest first.
    pub fn list_tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        self.read(|tx| {
            tx.query(
                "SELECT t.token, t.created, t.expires, t.prefix_len, t.comment, n.prefix
                 FROM token t LEFT JOIN node n ON n.id = t.used_by ORDER BY t.created DESC, t.token",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(TokenRow {
                    token: r.text(0)?,
                    created: r.uint(1)?,
                    expires: r.opt_int(2)?.map(u),
                    prefix_len: r.opt_int(3)?.and_then(|l| u8::try_from(l).ok()),
                    comment: r.text(4)?,
                    used_by: r.opt_text(5)?,
                })
            })
            .collect()
        })
    }

    /// Deletes an unused token; returns whether one was deleted.
    pub fn delete_token(&self, token: &str) -> Result<bool, StoreError> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM token WHERE token = $1 AND used_by IS NULL",
                vals![token],
            )? == 1)
        })
    }

    /// Every node (released ones only with `all`), by prefix.
    pub fn list_nodes(&self, all: bool) -> Result<Vec<NodeRow>, StoreError> {
        self.read(|tx| list_nodes(tx, all))
    }

    /// Counts of nodes per state and certificates issued.
    pub fn counts(&self) -> Result<(u64, u64, u64), StoreError> {
        self.read(counts)
    }
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// See [`Store::list_nodes`].
pub fn list_nodes(tx: &mut dyn Tx, all: bool) -> Result<Vec<NodeRow>, StoreError> {
    tx.query(
        "SELECT n.prefix, n.state, MAX(c.serial), MAX(c.not_after), n.created, n.token, MAX(a.received),
                n.ipv4
         FROM node n JOIN cert c ON c.node_id = n.id LEFT JOIN announcement a ON a.node_id = n.id
         WHERE $1 = 1 OR n.state != 'released'
         GROUP BY n.id ORDER BY n.state != 'active', n.prefix, n.id",
        vals![all],
    )?
    .iter()
    .map(|r| {
        Ok(NodeRow {
            prefix: r.text(0)?,
            state: NodeState::parse(&r.text(1)?),
            serial: r.uint(2)?,
            not_after: r.uint(3)?,
            created: r.uint(4)?,
            token: r.opt_text(5)?,
            last_announce: r.opt_int(6)?.map(u),
            ipv4: r.opt_text(7)?,
        })
    })
    .collect()
}

/// Counts of nodes per state and certificates issued.
pub fn counts(tx: &mut dyn Tx) -> Result<(u64, u64, u64), StoreError> {
    let r = tx.query_one(
        "SELECT (SELECT COUNT(*) FROM node WHERE state = 'active'),
                (SELECT COUNT(*) FROM node WHERE state = 'revoked'),
                (SELECT COUNT(*) FROM cert WHERE kind = 'node')",
        &[],
    )?;
    Ok((r.uint(0)?, r.uint(1)?, r.uint(2)?))
}
