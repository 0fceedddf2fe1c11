//! Flows as the store keeps them: which job runs them, their definition as the job wrote it (JSON), their state
//! and etag. The store knows no job: each job reads its own definition out of a `FlowRecord`.

use super::engine::Arg;
use super::{IdRow, Result, Store, StoreError, ids, timestamp};
use crate::ids::{Etag, FlowId, Sandbox, TargetConnectionId};
use chrono::{DateTime, Utc};
use std::fmt;

/// Whether a flow runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowState {
    Enabled,
    Disabled,
}

impl FlowState {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowState::Enabled => "enabled",
            FlowState::Disabled => "disabled",
        }
    }
}

impl fmt::Display for FlowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A flow as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowRecord {
    pub id: FlowId,
    pub sandbox: Sandbox,
    /// The job that runs the flow (`activation`).
    pub job: String,
    pub name: String,
    /// The job's definition of the flow, as JSON.
    pub definition: String,
    pub state: FlowState,
    /// The target connection it writes through, when it has one.
    pub target_connection_id: Option<TargetConnectionId>,
    pub etag: Etag,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct FlowRow {
    id: String,
    sandbox: String,
    job: String,
    name: String,
    body: String,
    state: String,
    target_connection_id: String,
    etag: String,
    created_at: String,
    updated_at: String,
}

impl TryFrom<FlowRow> for FlowRecord {
    type Error = StoreError;

    fn try_from(row: FlowRow) -> Result<FlowRecord> {
        let corrupt = |detail: String| StoreError::Corrupt { what: "flow", detail };
        Ok(FlowRecord {
            id: row.id.parse().map_err(|e: uuid::Error| corrupt(format!("id {}: {e}", row.id)))?,
            sandbox: row.sandbox.parse().map_err(|e: crate::ids::BadSandboxName| corrupt(e.to_string()))?,
            job: row.job,
            name: row.name,
            definition: row.body,
            state: match row.state.as_str() {
                "enabled" => FlowState::Enabled,
                "disabled" => FlowState::Disabled,
                other => return Err(corrupt(format!("state '{other}'"))),
            },
            target_connection_id: match row.target_connection_id.as_str() {
                "" => None,
                text => Some(text.parse().map_err(|e: uuid::Error| corrupt(format!("target {text}: {e}")))?),
            },
            etag: Etag(row.etag),
            created_at: timestamp(&row.created_at).map_err(corrupt)?,
            updated_at: timestamp(&row.updated_at).map_err(corrupt)?,
        })
    }
}

macro_rules! select_flows {
    ($where:literal) => {
        concat!(
            "SELECT id, sandbox, job, name, body, state, target_connection_id, etag, created_at, updated_at FROM flows ",
            $where
        )
    };
}

impl Store {
    async fn flows_where(&self, sql: &'static str, args: &[Arg]) -> Result<Vec<FlowRecord>> {
        self.engine.fetch_as::<FlowRow>(sql, args).await?.into_iter().map(FlowRecord::try_from).collect()
    }

    pub async fn insert_flow(&self, f: &FlowRecord) -> Result<()> {
        self.engine
            .execute(
                "INSERT INTO flows (id, sandbox, job, name, body, state, target_connection_id, etag, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    f.id.to_string().into(),
                    f.sandbox.as_str().into(),
                    f.job.as_str().into(),
                    f.name.as_str().into(),
                    f.definition.as_str().into(),
                    f.state.as_str().into(),
                    f.target_connection_id.map(|t| t.to_string()).unwrap_or_default().into(),
                    f.etag.0.as_str().into(),
                    f.created_at.to_rfc3339().into(),
                    f.updated_at.to_rfc3339().into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Replaces a flow's name, definition and state, if its etag is still `expected`.
    pub async fn update_flow(&self, f: &FlowRecord, expected: &Etag) -> Result<()> {
        let n = self
            .engine
            .execute(
                "UPDATE flows SET name = $1, body = $2, state = $3, etag = $4, updated_at = $5, target_connection_id = $6 \
                 WHERE sandbox = $7 AND id = $8 AND etag = $9",
                &[
                    f.name.as_str().into(),
                    f.definition.as_str().into(),
                    f.state.as_str().into(),
                    f.etag.0.as_str().into(),
                    f.updated_at.to_rfc3339().into(),
                    f.target_connection_id.map(|t| t.to_string()).unwrap_or_default().into(),
                    f.sandbox.as_str().into(),
                    f.id.to_string().into(),
                    expected.0.as_str().into(),
                ],
            )
            .await?;
        if n == 0 { Err(StoreError::Stale(expected.clone())) } else { Ok(()) }
    }

    pub async fn flow(&self, sandbox: &Sandbox, id: FlowId) -> Result<Option<FlowRecord>> {
        let found = self
            .flows_where(
                select_flows!("WHERE sandbox = $1 AND id = $2"),
                &[sandbox.as_str().into(), id.to_string().into()],
            )
            .await?;
        Ok(found.into_iter().next())
    }

    /// A flow by id alone, as its inlet names it.
    pub async fn flow_by_id(&self, id: FlowId) -> Result<Option<FlowRecord>> {
        Ok(self.flows_where(select_flows!("WHERE id = $1"), &[id.to_string().into()]).await?.into_iter().next())
    }

    pub async fn flows(&self, sandbox: &Sandbox) -> Result<Vec<FlowRecord>> {
        self.flows_where(select_flows!("WHERE sandbox = $1 ORDER BY created_at, id"), &[sandbox.as_str().into()]).await
    }

    /// Every flow of every sandbox.
    pub async fn all_flows(&self) -> Result<Vec<FlowRecord>> {
        self.flows_where(select_flows!("ORDER BY created_at, id"), &[]).await
    }

    /// Deletes a flow with everything kept for it: its log, cursor, runs, failed records and lease.
    pub async fn delete_flow(&self, sandbox: &Sandbox, id: FlowId) -> Result<bool> {
        if self.flow(sandbox, id).await?.is_none() {
            return Ok(false);
        }
        let id = id.to_string();
        let of_flow = |sql: &'static str| (sql, vec![Arg::from(id.as_str())]);
        self.engine
            .transaction(
                None,
                &[
                    (
                        "DELETE FROM flows WHERE sandbox = $1 AND id = $2",
                        vec![sandbox.as_str().into(), id.as_str().into()],
                    ),
                    of_flow("DELETE FROM inlet_log WHERE flow_id = $1"),
                    of_flow("DELETE FROM flow_cursors WHERE flow_id = $1"),
                    of_flow("DELETE FROM flow_leases WHERE flow_id = $1"),
                    of_flow("DELETE FROM runs WHERE flow_id = $1"),
                    of_flow("DELETE FROM run_outcomes WHERE flow_id = $1"),
                    of_flow("DELETE FROM failed_records WHERE flow_id = $1"),
                    of_flow("DELETE FROM inlet_secrets WHERE flow_id = $1"),
                    of_flow("DELETE FROM signing_keys WHERE flow_id = $1"),
                    of_flow("DELETE FROM inlet_rejects WHERE flow_id = $1"),
                    of_flow("DELETE FROM outbox WHERE flow_id = $1"),
                    of_flow("DELETE FROM ingestion_loads WHERE flow_id = $1"),
                    of_flow("DELETE FROM resync_seen WHERE flow_id = $1"),
                    of_flow("DELETE FROM replays WHERE flow_id = $1"),
                    of_flow("DELETE FROM lag_samples WHERE flow_id = $1"),
                    of_flow("DELETE FROM alert_rules WHERE flow_id = $1"),
                    of_flow("DELETE FROM alert_states WHERE flow_id = $1"),
                    of_flow("DELETE FROM alert_events WHERE flow_id = $1"),
                    of_flow("DELETE FROM alert_deliveries WHERE flow_id = $1"),
                ],
            )
            .await?;
        Ok(true)
    }

    /// The flows that write through a target connection.
    pub async fn flows_of(&self, sandbox: &Sandbox, target: TargetConnectionId) -> Result<Vec<FlowId>> {
        let rows: Vec<IdRow> = self
            .engine
            .fetch_as(
                "SELECT id FROM flows WHERE sandbox = $1 AND target_connection_id = $2 ORDER BY id",
                &[sandbox.as_str().into(), target.to_string().into()],
            )
            .await?;
        ids(rows)
    }
}
