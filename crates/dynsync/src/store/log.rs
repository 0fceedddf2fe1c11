//! Inlet logs: what a flow's inlet accepted over HTTP, durable before the sender hears "accepted", read by the
//! flow's owner in order, and pruned once acknowledged and older than the retention.

use super::{Result, Store, StoreError, timestamp};
use crate::ids::FlowId;
use chrono::{DateTime, Utc};

/// The lock appends to the log take on PostgreSQL, so that sequence numbers commit in order and a reader
/// never moves past one that a slower writer has yet to commit.
const LOG_APPEND_LOCK: i64 = 0x6479_6e73_796e_6301;

/// An accepted message, as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub seq: i64,
    pub received_at: DateTime<Utc>,
    pub body: String,
}

#[derive(sqlx::FromRow)]
struct LogRow {
    seq: i64,
    received_at: String,
    body: String,
}

/// How far behind a flow is.
#[derive(Debug, Clone, PartialEq)]
pub struct Backlog {
    pub records: u64,
    pub oldest: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct CursorRow {
    flow_id: String,
    cursor: String,
}

#[derive(sqlx::FromRow)]
struct AgeRow {
    seq: i64,
    received_at: String,
}

#[derive(sqlx::FromRow)]
struct BacklogRow {
    records: i64,
    oldest: Option<String>,
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt { what: "inlet log entry", detail }
}

impl Store {
    /// Appends accepted messages to a flow's log; they are durable when this returns.
    pub async fn append_log(&self, flow: FlowId, bodies: &[String]) -> Result<()> {
        self.engine.append_log(LOG_APPEND_LOCK, &flow.to_string(), &Utc::now().to_rfc3339(), bodies).await
    }

    /// Up to `limit` entries of a flow's log after sequence number `after`, oldest first.
    pub async fn log_after(&self, flow: FlowId, after: i64, limit: usize) -> Result<Vec<LogEntry>> {
        let rows: Vec<LogRow> = self
            .engine
            .fetch_as(
                "SELECT seq, received_at, body FROM inlet_log WHERE flow_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[flow.to_string().into(), after.into(), (limit as i64).into()],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(LogEntry { seq: r.seq, received_at: timestamp(&r.received_at).map_err(corrupt)?, body: r.body })
            })
            .collect()
    }

    /// A flow's newest `limit` entries still in its log (acknowledged ones stay for the log's retention), newest
    /// first.
    pub async fn log_newest(&self, flow: FlowId, limit: usize) -> Result<Vec<LogEntry>> {
        let rows: Vec<LogRow> = self
            .engine
            .fetch_as(
                "SELECT seq, received_at, body FROM inlet_log WHERE flow_id = $1 ORDER BY seq DESC LIMIT $2",
                &[flow.to_string().into(), (limit as i64).into()],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(LogEntry { seq: r.seq, received_at: timestamp(&r.received_at).map_err(corrupt)?, body: r.body })
            })
            .collect()
    }

    /// How many entries of a flow's log come after `after`, and when the oldest of them arrived.
    pub async fn log_backlog(&self, flow: FlowId, after: i64) -> Result<Backlog> {
        let rows: Vec<BacklogRow> = self
            .engine
            .fetch_as(
                "SELECT COUNT(*) AS records, MIN(received_at) AS oldest FROM inlet_log WHERE flow_id = $1 AND seq > $2",
                &[flow.to_string().into(), after.into()],
            )
            .await?;
        let row = rows.into_iter().next().unwrap_or(BacklogRow { records: 0, oldest: None });
        Ok(Backlog {
            records: row.records.max(0) as u64,
            oldest: row.oldest.as_deref().map(timestamp).transpose().map_err(corrupt)?,
        })
    }

    /// Deletes the entries each flow has acknowledged and that were received before `before`, a few hundred
    /// at a time: each step reads the oldest entries of one flow by index and holds the write lock briefly, so
    /// pruning a large log never stalls the inlets. The number of entries deleted.
    pub async fn prune_log(&self, before: DateTime<Utc>) -> Result<u64> {
        const STEP: i64 = 500;
        let cursors: Vec<CursorRow> = self.engine.fetch_as("SELECT flow_id, cursor FROM flow_cursors", &[]).await?;
        let mut deleted = 0;
        for flow in cursors {
            // A flow whose cursor is not a sequence number reads no inlet log.
            let Ok(acknowledged) = flow.cursor.parse::<i64>() else { continue };
            loop {
                let oldest: Vec<AgeRow> = self
                    .engine
                    .fetch_as(
                        "SELECT seq, received_at FROM inlet_log WHERE flow_id = $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                        &[flow.flow_id.as_str().into(), acknowledged.into(), STEP.into()],
                    )
                    .await?;
                // Entries are numbered as they arrive, so the old ones come first.
                let mut last_old = None;
                for row in &oldest {
                    if timestamp(&row.received_at).map_err(corrupt)? >= before {
                        break;
                    }
                    last_old = Some(row.seq);
                }
                let Some(last) = last_old else { break };
                deleted += self
                    .engine
                    .execute(
                        "DELETE FROM inlet_log WHERE flow_id = $1 AND seq <= $2",
                        &[flow.flow_id.as_str().into(), last.into()],
                    )
                    .await?;
                if oldest.len() < STEP as usize || oldest.last().map(|r| r.seq) != Some(last) {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}
