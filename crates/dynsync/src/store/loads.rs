//! What a scheduled flow's loads leave behind besides its runs: each load — its kind, its dataset generation, when
//! it started and finished (a flow's run of a load is keyed by the load's start) — and, while a scan reads a table
//! whole, the ids each of its pages saw, so that what it did not see can be marked deleted once it ends.

use super::{Result, Store, StoreError, timestamp};
use crate::ids::FlowId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a load of an ingestion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadKind {
    /// The first load: every row.
    Full,
    /// The changes since the last load.
    Incremental,
    /// A full load that replaced a delta token Dynamics no longer kept: rows not seen again are marked deleted.
    Resync,
    /// A full read of a table without change tracking, now and then, that marks deleted the rows not seen again.
    Scan,
}

impl LoadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadKind::Full => "full",
            LoadKind::Incremental => "incremental",
            LoadKind::Resync => "resync",
            LoadKind::Scan => "scan",
        }
    }
}

impl fmt::Display for LoadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LoadKind {
    type Err = StoreError;
    fn from_str(text: &str) -> Result<LoadKind> {
        Ok(match text {
            "full" => LoadKind::Full,
            "incremental" => LoadKind::Incremental,
            "resync" => LoadKind::Resync,
            "scan" => LoadKind::Scan,
            other => return Err(StoreError::Corrupt { what: "load kind", detail: other.to_string() }),
        })
    }
}

/// One load of an ingestion flow.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    pub flow: FlowId,
    pub started_at: DateTime<Utc>,
    pub kind: LoadKind,
    pub generation: u32,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct LoadRow {
    flow_id: String,
    started_at: String,
    kind: String,
    generation: i64,
    finished_at: String,
}

impl TryFrom<LoadRow> for Load {
    type Error = StoreError;
    fn try_from(row: LoadRow) -> Result<Load> {
        let corrupt = |detail: String| StoreError::Corrupt { what: "load", detail };
        Ok(Load {
            flow: row.flow_id.parse().map_err(|e: uuid::Error| corrupt(e.to_string()))?,
            started_at: timestamp(&row.started_at).map_err(corrupt)?,
            kind: row.kind.parse()?,
            generation: u32::try_from(row.generation).map_err(|e| corrupt(e.to_string()))?,
            finished_at: match row.finished_at.as_str() {
                "" => None,
                t => Some(timestamp(t).map_err(corrupt)?),
            },
        })
    }
}

impl Store {
    // ------------------------------------------------------------------------------------------------- loads

    /// Records that a load started, or finished; recording the same again changes nothing.
    pub async fn record_load(&self, load: &Load) -> Result<()> {
        self.engine
            .execute(
                "INSERT INTO ingestion_loads (flow_id, started_at, kind, generation, finished_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (flow_id, started_at) DO UPDATE SET finished_at = excluded.finished_at \
                 WHERE ingestion_loads.finished_at = ''",
                &[
                    load.flow.to_string().into(),
                    load.started_at.to_rfc3339().into(),
                    load.kind.as_str().into(),
                    i64::from(load.generation).into(),
                    load.finished_at.map(|t| t.to_rfc3339()).unwrap_or_default().into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Records the ids a page of a resync saw (the page named by its link); recording a page again replaces it.
    pub async fn record_resync_seen(
        &self,
        flow: FlowId,
        load: DateTime<Utc>,
        page: &str,
        ids: &[uuid::Uuid],
    ) -> Result<()> {
        use sha2::Digest;
        let page = format!("{:x}", sha2::Sha256::digest(page.as_bytes()));
        let ids: String = ids.iter().map(|id| id.simple().to_string()).collect();
        self.engine
            .execute(
                "INSERT INTO resync_seen (flow_id, load_started, page, ids) VALUES ($1, $2, $3, $4)                  ON CONFLICT (flow_id, load_started, page) DO UPDATE SET ids = excluded.ids",
                &[flow.to_string().into(), load.to_rfc3339().into(), page.into(), ids.into()],
            )
            .await?;
        Ok(())
    }

    /// Every id a resync saw.
    pub async fn resync_seen(
        &self,
        flow: FlowId,
        load: DateTime<Utc>,
    ) -> Result<std::collections::HashSet<uuid::Uuid>> {
        #[derive(sqlx::FromRow)]
        struct SeenRow {
            ids: String,
        }
        let rows: Vec<SeenRow> = self
            .engine
            .fetch_as(
                "SELECT ids FROM resync_seen WHERE flow_id = $1 AND load_started = $2",
                &[flow.to_string().into(), load.to_rfc3339().into()],
            )
            .await?;
        let mut seen = std::collections::HashSet::new();
        for row in rows {
            for chunk in row.ids.as_bytes().chunks(32) {
                let id = std::str::from_utf8(chunk).ok().and_then(|t| uuid::Uuid::parse_str(t).ok());
                seen.insert(id.ok_or_else(|| StoreError::Corrupt {
                    what: "resync ids",
                    detail: row.ids.chars().take(64).collect(),
                })?);
            }
        }
        Ok(seen)
    }

    /// Forgets what a flow's resyncs saw, once swept.
    pub async fn forget_resync_seen(&self, flow: FlowId) -> Result<()> {
        self.engine.execute("DELETE FROM resync_seen WHERE flow_id = $1", &[flow.to_string().into()]).await?;
        Ok(())
    }

    /// Asks for a replay of a flow: its next load reads the whole table again, every row sent as read.
    pub async fn request_replay(&self, flow: FlowId, at: DateTime<Utc>) -> Result<()> {
        self.engine
            .execute(
                "INSERT INTO replays (flow_id, requested_at) VALUES ($1, $2) \
                 ON CONFLICT (flow_id) DO UPDATE SET requested_at = excluded.requested_at",
                &[flow.to_string().into(), at.timestamp_millis().into()],
            )
            .await?;
        Ok(())
    }

    /// When a replay of a flow was last asked for.
    pub async fn replay_requested(&self, flow: FlowId) -> Result<Option<DateTime<Utc>>> {
        #[derive(sqlx::FromRow)]
        struct Requested {
            requested_at: i64,
        }
        let rows: Vec<Requested> = self
            .engine
            .fetch_as("SELECT requested_at FROM replays WHERE flow_id = $1", &[flow.to_string().into()])
            .await?;
        rows.into_iter()
            .next()
            .map(|r| {
                DateTime::from_timestamp_millis(r.requested_at).ok_or_else(|| StoreError::Corrupt {
                    what: "replay",
                    detail: format!("{} is not a time", r.requested_at),
                })
            })
            .transpose()
    }

    /// A flow's loads, newest first.
    pub async fn loads(&self, flow: FlowId) -> Result<Vec<Load>> {
        let rows: Vec<LoadRow> = self
            .engine
            .fetch_as(
                "SELECT flow_id, started_at, kind, generation, finished_at FROM ingestion_loads \
                 WHERE flow_id = $1 ORDER BY started_at DESC",
                &[flow.to_string().into()],
            )
            .await?;
        rows.into_iter().map(Load::try_from).collect()
    }
}
