//! What guards an inlet and what it turned away: the digests of the secrets that open a flow's inlet URL (a
//! secret itself is never stored, so it can never be read back or leak from the database), the key a sender's
//! signatures are checked with (sealed: it must be read back to check them), and the bodies that were refused,
//! kept for the user to inspect rather than dropped.

use super::engine::Arg;
use super::{Result, Store, StoreError, timestamp};
use crate::ids::FlowId;
use crate::secrets::Secret;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// Bodies kept per flow: the oldest refused bodies go first past this many.
pub const REJECTS_KEPT: i64 = 1000;

/// A body an inlet refused, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct InletReject {
    pub id: uuid::Uuid,
    pub received_at: DateTime<Utc>,
    pub body: String,
    pub problems: String,
}

#[derive(sqlx::FromRow)]
struct RejectRow {
    id: String,
    received_at: String,
    body: String,
    problems: String,
}

#[derive(sqlx::FromRow)]
struct SecretRow {
    digest: String,
    expires_at: i64,
}

/// The digest a secret is kept and compared as.
pub fn secret_digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Makes `secret` open the flow's inlet. The secrets it had stay valid until `previous_until` (milliseconds
    /// since the epoch; now or earlier revokes them at once), so that a sender can be moved to the new one
    /// without losing what it sends meanwhile.
    pub async fn rotate_inlet_secret(&self, flow: FlowId, secret: &str, previous_until: i64) -> Result<()> {
        let flow = flow.to_string();
        let now = Utc::now().timestamp_millis();
        self.engine
            .transaction(
                None,
                &[
                    (
                        "UPDATE inlet_secrets SET expires_at = $2 WHERE flow_id = $1 AND (expires_at = 0 OR expires_at > $2)",
                        vec![flow.as_str().into(), previous_until.into()],
                    ),
                    (
                        "DELETE FROM inlet_secrets WHERE flow_id = $1 AND expires_at <> 0 AND expires_at <= $2",
                        vec![flow.as_str().into(), now.into()],
                    ),
                    (
                        "INSERT INTO inlet_secrets (flow_id, digest, expires_at) VALUES ($1, $2, 0)",
                        vec![flow.as_str().into(), secret_digest(secret).into()],
                    ),
                ],
            )
            .await
    }

    /// Whether `secret` opens the flow's inlet now.
    pub async fn inlet_secret_opens(&self, flow: FlowId, secret: &str) -> Result<bool> {
        let rows: Vec<SecretRow> = self
            .engine
            .fetch_as("SELECT digest, expires_at FROM inlet_secrets WHERE flow_id = $1", &[flow.to_string().into()])
            .await?;
        let given = secret_digest(secret);
        let now = Utc::now().timestamp_millis();
        // Every row is compared, so the time taken says nothing about which one matched.
        let mut opens = false;
        for row in rows {
            let same = row.digest.len() == given.len()
                && row.digest.bytes().zip(given.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
            opens |= same && (row.expires_at == 0 || row.expires_at > now);
        }
        Ok(opens)
    }

    /// Keeps the key a flow checks its sender's signatures with (Mailgun's signing key), sealed; replaces the
    /// one it had.
    pub async fn set_signing_key(&self, flow: FlowId, key: &str) -> Result<()> {
        let sealed = self.key.seal(key, &format!("signing-key:{flow}"));
        self.engine
            .transaction(
                None,
                &[
                    ("DELETE FROM signing_keys WHERE flow_id = $1", vec![flow.to_string().into()]),
                    (
                        "INSERT INTO signing_keys (flow_id, sealed) VALUES ($1, $2)",
                        vec![flow.to_string().into(), sealed.into()],
                    ),
                ],
            )
            .await
    }

    /// The key a flow checks its sender's signatures with, when it has one.
    pub async fn signing_key(&self, flow: FlowId) -> Result<Option<Secret>> {
        #[derive(sqlx::FromRow)]
        struct Sealed {
            sealed: String,
        }
        let rows: Vec<Sealed> = self
            .engine
            .fetch_as("SELECT sealed FROM signing_keys WHERE flow_id = $1", &[flow.to_string().into()])
            .await?;
        rows.into_iter().next().map(|r| Ok(self.key.open(&r.sealed, &format!("signing-key:{flow}"))?)).transpose()
    }

    /// Keeps a body the flow's inlet refused, and why; the oldest go once a flow has [`REJECTS_KEPT`].
    pub async fn keep_inlet_reject(&self, flow: FlowId, reject: &InletReject) -> Result<()> {
        let flow = flow.to_string();
        self.engine
            .transaction(
                None,
                &[
                    (
                        "INSERT INTO inlet_rejects (id, flow_id, received_at, body, problems) VALUES ($1, $2, $3, $4, $5)",
                        vec![
                            reject.id.to_string().into(),
                            flow.as_str().into(),
                            reject.received_at.to_rfc3339().into(),
                            reject.body.as_str().into(),
                            reject.problems.as_str().into(),
                        ],
                    ),
                    (
                        "DELETE FROM inlet_rejects WHERE flow_id = $1 AND id NOT IN \
                         (SELECT id FROM inlet_rejects WHERE flow_id = $1 ORDER BY received_at DESC LIMIT $2)",
                        vec![flow.as_str().into(), Arg::Int(REJECTS_KEPT)],
                    ),
                ],
            )
            .await
    }

    /// How many refused bodies the flow's inlet keeps.
    pub async fn inlet_reject_count(&self, flow: FlowId) -> Result<u64> {
        #[derive(sqlx::FromRow)]
        struct Count {
            n: i64,
        }
        let rows: Vec<Count> = self
            .engine
            .fetch_as("SELECT COUNT(*) AS n FROM inlet_rejects WHERE flow_id = $1", &[flow.to_string().into()])
            .await?;
        Ok(rows.first().map_or(0, |c| c.n.max(0) as u64))
    }

    /// The bodies the flow's inlet refused, newest first.
    pub async fn inlet_rejects(&self, flow: FlowId, limit: i64) -> Result<Vec<InletReject>> {
        let rows: Vec<RejectRow> = self
            .engine
            .fetch_as(
                "SELECT id, received_at, body, problems FROM inlet_rejects WHERE flow_id = $1 \
                 ORDER BY received_at DESC LIMIT $2",
                &[flow.to_string().into(), limit.into()],
            )
            .await?;
        let corrupt = |detail: String| StoreError::Corrupt { what: "inlet reject", detail };
        rows.into_iter()
            .map(|r| {
                Ok(InletReject {
                    id: r.id.parse().map_err(|e: uuid::Error| corrupt(e.to_string()))?,
                    received_at: timestamp(&r.received_at).map_err(corrupt)?,
                    body: r.body,
                    problems: r.problems,
                })
            })
            .collect()
    }
}
