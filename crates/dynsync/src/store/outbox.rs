//! Messages to send on a flow's behalf (a new lead's notification), kept until the server takes them. A
//! message is held when the write it announces starts and released once that write went through, so that
//! nothing is announced that was not written, and a crash between the two leaves the message held, to be
//! released by the write's replay. Its id is chosen by the caller (the lead's id): holding it twice keeps one.
//! Sending claims a message for a while, so two processes on one PostgreSQL never send it at once.

use super::{Result, Store, StoreError};
use crate::ids::FlowId;
use chrono::Utc;

/// A message due to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub id: String,
    pub flow_id: FlowId,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// A flow's messages: sent, waiting to be sent, and the last error of those waiting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboxState {
    pub sent: u64,
    pub waiting: u64,
    pub last_error: Option<String>,
}

/// One message's state, looked up by id.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub sent_at: Option<String>,
    pub last_error: String,
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: String,
    flow_id: String,
    payload: String,
    attempts: i64,
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    sent_at: String,
    last_error: String,
}

#[derive(sqlx::FromRow)]
struct CountRow {
    sent: i64,
    waiting: i64,
}

#[derive(sqlx::FromRow)]
struct ErrorRow {
    last_error: String,
}

impl Store {
    /// Holds a message until [`release_message`](Store::release_message); a message already held or sent
    /// under `id` is left as it is.
    pub async fn hold_message(&self, id: &str, flow: FlowId, payload: &str) -> Result<()> {
        self.engine
            .execute(
                "INSERT INTO outbox (id, flow_id, payload, released, attempts, next_attempt_at, sent_at, last_error, created_at) \
                 VALUES ($1, $2, $3, 0, 0, 0, '', '', $4) ON CONFLICT (id) DO NOTHING",
                &[id.into(), flow.to_string().into(), payload.into(), Utc::now().to_rfc3339().into()],
            )
            .await?;
        Ok(())
    }

    /// Lets a held message be sent.
    pub async fn release_message(&self, id: &str) -> Result<()> {
        self.engine.execute("UPDATE outbox SET released = 1 WHERE id = $1 AND released = 0", &[id.into()]).await?;
        Ok(())
    }

    /// Claims up to `limit` released messages that are due, for `claim_ms` milliseconds: another process
    /// takes them only once the claim has run out unanswered.
    pub async fn claim_messages(&self, limit: i64, claim_ms: i64) -> Result<Vec<OutboxMessage>> {
        let now = Utc::now().timestamp_millis();
        let rows: Vec<MessageRow> = self
            .engine
            .fetch_as(
                "UPDATE outbox SET next_attempt_at = $2 \
                 WHERE id IN (SELECT id FROM outbox WHERE released = 1 AND sent_at = '' AND next_attempt_at <= $1 \
                              ORDER BY created_at LIMIT $3) \
                 AND released = 1 AND sent_at = '' AND next_attempt_at <= $1 \
                 RETURNING id, flow_id, payload, attempts",
                &[now.into(), (now + claim_ms).into(), limit.into()],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(OutboxMessage {
                    flow_id: r.flow_id.parse().map_err(|e: uuid::Error| StoreError::Corrupt {
                        what: "outbox message",
                        detail: format!("{}: {e}", r.id),
                    })?,
                    id: r.id,
                    payload: r.payload,
                    attempts: r.attempts,
                })
            })
            .collect()
    }

    /// Records that a message was sent.
    pub async fn message_sent(&self, id: &str) -> Result<()> {
        self.engine
            .execute(
                "UPDATE outbox SET sent_at = $2, attempts = attempts + 1, last_error = '' WHERE id = $1",
                &[id.into(), Utc::now().to_rfc3339().into()],
            )
            .await?;
        Ok(())
    }

    /// Records that an attempt failed, and when to try again (milliseconds from now).
    pub async fn message_failed(&self, id: &str, error: &str, retry_in_ms: i64) -> Result<()> {
        self.engine
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 WHERE id = $1",
                &[id.into(), error.into(), (Utc::now().timestamp_millis() + retry_in_ms).into()],
            )
            .await?;
        Ok(())
    }

    /// The state of one message.
    pub async fn message(&self, id: &str) -> Result<Option<OutboxEntry>> {
        let rows: Vec<EntryRow> =
            self.engine.fetch_as("SELECT sent_at, last_error FROM outbox WHERE id = $1", &[id.into()]).await?;
        Ok(rows
            .into_iter()
            .next()
            .map(|r| OutboxEntry { sent_at: Some(r.sent_at).filter(|s| !s.is_empty()), last_error: r.last_error }))
    }

    /// How a flow's messages stand.
    pub async fn outbox_state(&self, flow: FlowId) -> Result<OutboxState> {
        let flow = flow.to_string();
        let counts: Vec<CountRow> = self
            .engine
            .fetch_as(
                "SELECT COALESCE(SUM(CASE WHEN sent_at <> '' THEN 1 ELSE 0 END), 0) AS sent, \
                 COALESCE(SUM(CASE WHEN sent_at = '' AND released = 1 THEN 1 ELSE 0 END), 0) AS waiting \
                 FROM outbox WHERE flow_id = $1",
                &[flow.as_str().into()],
            )
            .await?;
        let errors: Vec<ErrorRow> = self
            .engine
            .fetch_as(
                "SELECT last_error FROM outbox WHERE flow_id = $1 AND sent_at = '' AND last_error <> '' \
                 ORDER BY next_attempt_at DESC LIMIT 1",
                &[flow.as_str().into()],
            )
            .await?;
        let counts = counts.into_iter().next().unwrap_or(CountRow { sent: 0, waiting: 0 });
        Ok(OutboxState {
            sent: counts.sent.max(0) as u64,
            waiting: counts.waiting.max(0) as u64,
            last_error: errors.into_iter().next().map(|e| e.last_error),
        })
    }
}
