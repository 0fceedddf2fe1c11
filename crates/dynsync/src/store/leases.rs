//! Who runs which flow. Each enabled flow has at most one owner at a time: the process holding its lease. A lease
//! is renewed by heartbeat and expires when its owner stops renewing it; each new owner increments the flow's
//! generation, and every acknowledgement checks it, so a process that lost a flow can never move its cursor or
//! add to its runs — nor can the owner of a flow disabled or deleted since it started. Times are milliseconds
//! since the epoch, from the processes' clocks: expiry decides only how soon a flow is taken over, never whether
//! two owners can both acknowledge.

use super::{Result, Store, StoreError};
use crate::ids::FlowId;
use std::fmt;
use uuid::Uuid;

/// A serving process, new at each start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessId(pub Uuid);

impl ProcessId {
    pub fn new() -> ProcessId {
        ProcessId(Uuid::new_v4())
    }
}

impl Default for ProcessId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A flow held by a process, at a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub flow: FlowId,
    pub owner: ProcessId,
    pub generation: i64,
}

/// What a flow's owner says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeStatus {
    Running,
    /// Waiting for something outside dynsync to be fixed (a refused sign-in); nothing is lost meanwhile.
    Paused,
}

impl RuntimeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeStatus::Running => "running",
            RuntimeStatus::Paused => "paused",
        }
    }
}

/// A flow's lease as any process sees it: who holds it, until when, and what its owner says of the flow.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseStatus {
    pub flow_id: String,
    pub owner: String,
    pub generation: i64,
    pub expires_at: i64,
    pub status: RuntimeStatus,
    /// Why the flow is paused.
    pub detail: String,
}

#[derive(sqlx::FromRow)]
struct LeaseRow {
    flow_id: String,
    owner: String,
    generation: i64,
    expires_at: i64,
    status: String,
    detail: String,
}

impl TryFrom<LeaseRow> for LeaseStatus {
    type Error = StoreError;
    fn try_from(row: LeaseRow) -> Result<LeaseStatus> {
        let status = match row.status.as_str() {
            "running" => RuntimeStatus::Running,
            "paused" => RuntimeStatus::Paused,
            other => return Err(StoreError::Corrupt { what: "flow lease", detail: format!("status '{other}'") }),
        };
        Ok(LeaseStatus {
            flow_id: row.flow_id,
            owner: row.owner,
            generation: row.generation,
            expires_at: row.expires_at,
            status,
            detail: row.detail,
        })
    }
}

#[derive(sqlx::FromRow)]
struct GenerationRow {
    generation: i64,
}

#[derive(sqlx::FromRow)]
struct ProcessRow {
    id: String,
}

impl Store {
    /// Says this process is alive.
    pub async fn heartbeat(&self, process: ProcessId, now_ms: i64, started_at: &str) -> Result<()> {
        self.engine
            .execute(
                "INSERT INTO processes (id, seen_at, started_at) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
                &[process.to_string().into(), now_ms.into(), started_at.into()],
            )
            .await?;
        Ok(())
    }

    /// The processes seen since `since_ms`; those not seen for a day are forgotten.
    pub async fn live_processes(&self, since_ms: i64) -> Result<Vec<String>> {
        self.engine.execute("DELETE FROM processes WHERE seen_at < $1", &[(since_ms - 86_400_000).into()]).await?;
        let rows: Vec<ProcessRow> = self
            .engine
            .fetch_as("SELECT id FROM processes WHERE seen_at >= $1 ORDER BY id", &[since_ms.into()])
            .await?;
        Ok(rows.into_iter().map(|r| r.id).collect())
    }

    /// A process that stops says so: it no longer counts among the live processes.
    pub async fn leave(&self, process: ProcessId) -> Result<()> {
        self.engine.execute("DELETE FROM processes WHERE id = $1", &[process.to_string().into()]).await?;
        Ok(())
    }

    /// Takes a flow whose lease is free or expired; `None` when another process holds it.
    pub async fn claim_flow(&self, flow: FlowId, owner: ProcessId, now_ms: i64, ttl_ms: i64) -> Result<Option<Lease>> {
        let rows: Vec<GenerationRow> = self
            .engine
            .fetch_as(
                "INSERT INTO flow_leases (flow_id, owner, generation, expires_at, status, detail)
                 VALUES ($1, $2, 1, $3, 'running', '')
                 ON CONFLICT (flow_id) DO UPDATE SET owner = excluded.owner, generation = flow_leases.generation + 1,
                   expires_at = excluded.expires_at, status = 'running', detail = ''
                 WHERE flow_leases.expires_at < $4
                 RETURNING generation",
                &[flow.to_string().into(), owner.to_string().into(), (now_ms + ttl_ms).into(), now_ms.into()],
            )
            .await?;
        Ok(rows.into_iter().next().map(|r| Lease { flow, owner, generation: r.generation }))
    }

    /// Frees every flow's lease at once. Only for a store no other process can reach — SQLite in the data
    /// directory this process has locked — whose leases can only be those of a process that stopped: its flows
    /// are taken again at once rather than after their leases expire.
    pub async fn free_all_leases(&self) -> Result<()> {
        self.engine.execute("UPDATE flow_leases SET expires_at = 0", &[]).await?;
        Ok(())
    }

    /// Extends a lease; `false` when it is no longer the owner's.
    pub async fn renew_lease(&self, lease: &Lease, until_ms: i64) -> Result<bool> {
        let n = self
            .engine
            .execute(
                "UPDATE flow_leases SET expires_at = $1 WHERE flow_id = $2 AND owner = $3 AND generation = $4",
                &[
                    until_ms.into(),
                    lease.flow.to_string().into(),
                    lease.owner.to_string().into(),
                    lease.generation.into(),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    /// Gives a flow up, for another process to take from `free_at_ms` on.
    pub async fn release_lease(&self, lease: &Lease, free_at_ms: i64) -> Result<()> {
        self.engine
            .execute(
                "UPDATE flow_leases SET expires_at = $1 WHERE flow_id = $2 AND owner = $3 AND generation = $4",
                &[
                    free_at_ms.into(),
                    lease.flow.to_string().into(),
                    lease.owner.to_string().into(),
                    lease.generation.into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// What the owner says of its flow: `running`, or `paused` and why.
    pub async fn set_flow_status(&self, lease: &Lease, status: RuntimeStatus, detail: &str) -> Result<()> {
        self.engine
            .execute(
                "UPDATE flow_leases SET status = $1, detail = $2 WHERE flow_id = $3 AND owner = $4 AND generation = $5",
                &[
                    status.as_str().into(),
                    detail.into(),
                    lease.flow.to_string().into(),
                    lease.owner.to_string().into(),
                    lease.generation.into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Every flow's lease.
    pub async fn leases(&self) -> Result<Vec<LeaseStatus>> {
        let rows: Vec<LeaseRow> = self
            .engine
            .fetch_as(
                "SELECT flow_id, owner, generation, expires_at, status, detail FROM flow_leases ORDER BY flow_id",
                &[],
            )
            .await?;
        rows.into_iter().map(LeaseStatus::try_from).collect()
    }

    /// One flow's lease, if it ever had one.
    pub async fn lease_of(&self, flow: FlowId) -> Result<Option<LeaseStatus>> {
        let rows: Vec<LeaseRow> = self
            .engine
            .fetch_as(
                "SELECT flow_id, owner, generation, expires_at, status, detail FROM flow_leases WHERE flow_id = $1",
                &[flow.to_string().into()],
            )
            .await?;
        rows.into_iter().next().map(LeaseStatus::try_from).transpose()
    }
}
