//! Inlet logs: what a flow's inlet accepted over HTTP, durable before the sender hears "accepted", read by the
//! flow's owner in order, and pruned once acknowledged and older than the retention.
//!
//! Every message has a sequence number, but what one request accepted is kept as one row: its messages as a JSON
//! list, numbered up to the row's `seq` (the row holds `seq - messages + 1 ..= seq`). One row for a batch of a
//! thousand profiles rather than a thousand rows is what keeps the store's share of an inlet's cost small. A reader
//! takes whole rows, so a flow's cursor — the last number it acknowledged — is always a row's last.

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
    messages: i64,
    received_at: String,
    body: String,
}

impl LogRow {
    /// The row's messages, oldest first.
    fn entries(self) -> Result<Vec<LogEntry>> {
        let received_at = timestamp(&self.received_at).map_err(corrupt)?;
        if self.messages == 1 {
            return Ok(vec![LogEntry { seq: self.seq, received_at, body: self.body }]);
        }
        let listed: Vec<&serde_json::value::RawValue> = serde_json::from_str(&self.body)
            .map_err(|e| corrupt(format!("log row {} is not a list of messages: {e}", self.seq)))?;
        if listed.len() as i64 != self.messages {
            return Err(corrupt(format!(
                "log row {} lists {} messages where it counts {}",
                self.seq,
                listed.len(),
                self.messages
            )));
        }
        let first = self.seq - self.messages + 1;
        Ok(listed
            .into_iter()
            .enumerate()
            .map(|(i, message)| LogEntry { seq: first + i as i64, received_at, body: message.get().to_string() })
            .collect())
    }
}

#[derive(sqlx::FromRow)]
struct RowSize {
    seq: i64,
    messages: i64,
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
    /// Appends messages one request accepted to a flow's log, as one row; they are durable when this returns.
    pub async fn append_log(&self, flow: FlowId, messages: &[impl AsRef<str>]) -> Result<()> {
        let body = match messages {
            [] => return Ok(()),
            [one] => one.as_ref().to_string(),
            many => {
                let mut list = String::with_capacity(many.iter().map(|m| m.as_ref().len() + 1).sum::<usize>() + 1);
                for message in many {
                    list.push(if list.is_empty() { '[' } else { ',' });
                    list.push_str(message.as_ref());
                }
                list.push(']');
                list
            }
        };
        let (inlet, received_at) = (flow.to_string(), Utc::now().to_rfc3339());
        self.engine.append_log(LOG_APPEND_LOCK, &inlet, &received_at, messages.len() as i64, &body).await
    }

    /// The entries of a flow's log after sequence number `after`, oldest first, in whole rows: up to `limit`
    /// entries, or the first row's when it alone holds more.
    pub async fn log_after(&self, flow: FlowId, after: i64, limit: usize) -> Result<Vec<LogEntry>> {
        let sizes: Vec<RowSize> = self
            .engine
            .fetch_as(
                "SELECT seq, messages FROM inlet_log WHERE flow_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[flow.to_string().into(), after.into(), (limit as i64).into()],
            )
            .await?;
        let (mut taken, mut last) = (0, None);
        for row in &sizes {
            if last.is_some() && taken + row.messages > limit as i64 {
                break;
            }
            taken += row.messages;
            last = Some(row.seq);
        }
        let Some(last) = last else { return Ok(Vec::new()) };
        let rows: Vec<LogRow> = self
            .engine
            .fetch_as(
                "SELECT seq, messages, received_at, body FROM inlet_log WHERE flow_id = $1 AND seq > $2 AND seq <= $3
                 ORDER BY seq",
                &[flow.to_string().into(), after.into(), last.into()],
            )
            .await?;
        let mut entries = Vec::with_capacity(taken as usize);
        for row in rows {
            entries.extend(row.entries()?);
        }
        Ok(entries)
    }

    /// A flow's newest `limit` entries still in its log (acknowledged ones stay for the log's retention), newest
    /// first.
    pub async fn log_newest(&self, flow: FlowId, limit: usize) -> Result<Vec<LogEntry>> {
        let rows: Vec<LogRow> = self
            .engine
            .fetch_as(
                "SELECT seq, messages, received_at, body FROM inlet_log WHERE flow_id = $1 ORDER BY seq DESC LIMIT $2",
                &[flow.to_string().into(), (limit as i64).into()],
            )
            .await?;
        let mut entries = Vec::new();
        for row in rows {
            entries.extend(row.entries()?.into_iter().rev());
            if entries.len() >= limit {
                break;
            }
        }
        entries.truncate(limit);
        Ok(entries)
    }

    /// How many entries of a flow's log come after `after`, and when the oldest of them arrived.
    pub async fn log_backlog(&self, flow: FlowId, after: i64) -> Result<Backlog> {
        let rows: Vec<BacklogRow> = self
            .engine
            .fetch_as(
                "SELECT CAST(COALESCE(SUM(messages), 0) AS BIGINT) AS records, MIN(received_at) AS oldest FROM inlet_log
                 WHERE flow_id = $1 AND seq > $2",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(entries: &[LogEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.body.as_str()).collect()
    }

    #[tokio::test]
    async fn a_request_s_messages_are_one_row_read_back_one_entry_each_in_whole_rows() {
        for (store, _dir) in crate::store::test_stores().await {
            let flow = FlowId::new();
            store.append_log(flow, &[r#"{"m":"a"}"#]).await.unwrap();
            store.append_log(flow, &[r#"{"m":"b"}"#, r#"{"m":"c"}"#, r#"{"m":"d"}"#]).await.unwrap();
            store.append_log(flow, &[r#"{"m":"e"}"#, r#"{"m":"f"}"#]).await.unwrap();
            store.append_log(flow, &[] as &[&str]).await.unwrap();

            let all = store.log_after(flow, 0, 100).await.unwrap();
            assert_eq!(
                bodies(&all),
                [r#"{"m":"a"}"#, r#"{"m":"b"}"#, r#"{"m":"c"}"#, r#"{"m":"d"}"#, r#"{"m":"e"}"#, r#"{"m":"f"}"#]
            );
            let numbers: Vec<i64> = all.iter().map(|e| e.seq).collect();
            assert!(numbers.windows(2).all(|w| w[0] < w[1]), "each message has its own number, in order: {numbers:?}");
            // Numbers are the store's, shared by every flow: a row's messages are consecutive, rows may not be.
            assert_eq!([numbers[2] - numbers[1], numbers[3] - numbers[2], numbers[5] - numbers[4]], [1, 1, 1]);

            // Whole rows: a row that would pass the limit waits for the next read, unless it is the first.
            assert_eq!(bodies(&store.log_after(flow, 0, 2).await.unwrap()), [r#"{"m":"a"}"#]);
            assert_eq!(store.log_after(flow, 0, 4).await.unwrap().len(), 4);
            let row = store.log_after(flow, numbers[0], 1).await.unwrap();
            assert_eq!(bodies(&row), [r#"{"m":"b"}"#, r#"{"m":"c"}"#, r#"{"m":"d"}"#], "a row larger than the limit");
            assert_eq!(row.last().unwrap().seq, numbers[3], "the cursor after a batch is its last row's last number");
            assert!(store.log_after(flow, numbers[5], 10).await.unwrap().is_empty());

            let backlog = store.log_backlog(flow, numbers[0]).await.unwrap();
            assert_eq!(backlog.records, 5, "the backlog counts messages, not rows");
            let newest = store.log_newest(flow, 3).await.unwrap();
            assert_eq!(bodies(&newest), [r#"{"m":"f"}"#, r#"{"m":"e"}"#, r#"{"m":"d"}"#]);
        }
    }
}
