//! Tokens and listings for the admin CLI.

use std::time::{Duration, SystemTime};

use base64::Engine;
use rusqlite::params;
use serde::Serialize;

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

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Makes `count` single-use tokens (120 random bits each).
    pub fn create_tokens(
        &mut self,
        count: u32,
        valid_for: Option<Duration>,
        prefix_len: Option<u8>,
        comment: &str,
        now: SystemTime,
    ) -> Result<Vec<String>, StoreError> {
        let rng = ring::rand::SystemRandom::new();
        self.immediate(|tx| {
            let mut out = vec![];
            for _ in 0..count {
                let mut b = [0u8; 15];
                ring::rand::SecureRandom::fill(&rng, &mut b).map_err(|_| StoreError::Internal("no randomness".into()))?;
                let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
                let expires = valid_for.map(|d| secs(now + d));
                tx.execute(
                    "INSERT INTO token(token, created, expires, prefix_len, comment) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![t, secs(now), expires, prefix_len, comment],
                )?;
                out.push(t);
            }
            Ok(out)
        })
    }

    /// Every token, newest first.
    pub fn list_tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT t.token, t.created, t.expires, t.prefix_len, t.comment, n.prefix
             FROM token t LEFT JOIN node n ON n.id = t.used_by ORDER BY t.created DESC, t.token",
        )?;
        let rows = st.query_map([], |r| {
            Ok(TokenRow {
                token: r.get(0)?,
                created: u(r.get(1)?),
                expires: r.get::<_, Option<i64>>(2)?.map(u),
                prefix_len: r.get(3)?,
                comment: r.get(4)?,
                used_by: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes an unused token; returns whether one was deleted.
    pub fn delete_token(&mut self, token: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM token WHERE token = ?1 AND used_by IS NULL",
            [token],
        )? == 1)
    }

    /// Every node (released ones only with `all`), by prefix.
    pub fn list_nodes(&self, all: bool) -> Result<Vec<NodeRow>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT n.prefix, n.state, MAX(c.serial), MAX(c.not_after), n.created, n.token, a.received
             FROM node n JOIN cert c ON c.node_id = n.id LEFT JOIN announcement a ON a.node_id = n.id
             WHERE ?1 OR n.state != 'released'
             GROUP BY n.id ORDER BY n.state != 'active', n.prefix, n.id",
        )?;
        let rows = st.query_map([all], |r| {
            let state = match r.get::<_, String>(1)?.as_str() {
                "active" => NodeState::Active,
                "revoked" => NodeState::Revoked,
                _ => NodeState::Released,
            };
            Ok(NodeRow {
                prefix: r.get(0)?,
                state,
                serial: u(r.get(2)?),
                not_after: u(r.get(3)?),
                created: u(r.get(4)?),
                token: r.get(5)?,
                last_announce: r.get::<_, Option<i64>>(6)?.map(u),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Counts of nodes per state and certificates issued.
    pub fn counts(&self) -> Result<(u64, u64, u64), StoreError> {
        let c = |q: &str| -> Result<u64, StoreError> {
            Ok(u(self.conn.query_row(q, [], |r| r.get(0))?))
        };
        Ok((
            c("SELECT COUNT(*) FROM node WHERE state = 'active'")?,
            c("SELECT COUNT(*) FROM node WHERE state = 'revoked'")?,
            c("SELECT COUNT(*) FROM cert WHERE kind = 'node'")?,
        ))
    }
}
