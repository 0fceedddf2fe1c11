//! Ingestion's resources and loads: source connections, dataset targets (their PostgreSQL connection string
//! sealed like a connection's secrets) and each load an ingestion flow made — its kind, its dataset generation,
//! when it started and finished. A flow's run of a load is keyed by the load's start.

use super::{Result, Store, StoreError, timestamp};
use crate::dataset::DatasetName;
use crate::ids::{Etag, FlowId, Sandbox, SourceConnectionId, TargetConnectionId};
use crate::ingestion::resources::{DatasetFormat, DatasetTarget, SourceConnection, SourceObject};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A source connection's body as stored.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredSource {
    name: String,
    description: String,
    base_connection_id: crate::ids::ConnectionId,
    object: SourceObject,
}

/// A dataset target's body as stored (the connection string is sealed apart).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredDataset {
    name: String,
    description: String,
    dataset: DatasetName,
    #[serde(flatten)]
    format: DatasetFormat,
}

#[derive(sqlx::FromRow)]
struct ResourceRow {
    id: String,
    sandbox: String,
    body: String,
    etag: String,
    created_at: String,
    updated_at: String,
}

#[derive(sqlx::FromRow)]
struct DatasetRow {
    id: String,
    sandbox: String,
    body: String,
    secrets: String,
    etag: String,
    created_at: String,
    updated_at: String,
}

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

fn envelope<T: FromStr>(what: &'static str, text: &str) -> Result<T> {
    text.parse().map_err(|_| StoreError::Corrupt { what, detail: text.to_string() })
}

impl Store {
    // ------------------------------------------------------------------------------------- source connections

    pub async fn insert_source_connection(&self, s: &SourceConnection) -> Result<()> {
        let body = serde_json::to_string(&StoredSource {
            name: s.name.clone(),
            description: s.description.clone(),
            base_connection_id: s.base_connection_id,
            object: s.object.clone(),
        })
        .expect("a source connection serializes");
        self.engine
            .execute(
                "INSERT INTO source_connections (id, sandbox, name, body, etag, created_at, updated_at, base_connection_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    s.id.to_string().into(),
                    s.sandbox.as_str().into(),
                    s.name.as_str().into(),
                    body.into(),
                    s.etag.0.as_str().into(),
                    s.created_at.to_rfc3339().into(),
                    s.updated_at.to_rfc3339().into(),
                    s.base_connection_id.to_string().into(),
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn source_connection(
        &self,
        sandbox: &Sandbox,
        id: SourceConnectionId,
    ) -> Result<Option<SourceConnection>> {
        let rows: Vec<ResourceRow> = self
            .engine
            .fetch_as(
                "SELECT id, sandbox, body, etag, created_at, updated_at FROM source_connections \
                 WHERE sandbox = $1 AND id = $2",
                &[sandbox.as_str().into(), id.to_string().into()],
            )
            .await?;
        rows.into_iter().next().map(source_from).transpose()
    }

    pub async fn source_connections(&self, sandbox: &Sandbox) -> Result<Vec<SourceConnection>> {
        let rows: Vec<ResourceRow> = self
            .engine
            .fetch_as(
                "SELECT id, sandbox, body, etag, created_at, updated_at FROM source_connections \
                 WHERE sandbox = $1 ORDER BY created_at, id",
                &[sandbox.as_str().into()],
            )
            .await?;
        rows.into_iter().map(source_from).collect()
    }

    pub async fn delete_source_connection(&self, sandbox: &Sandbox, id: SourceConnectionId) -> Result<bool> {
        let n = self
            .engine
            .execute(
                "DELETE FROM source_connections WHERE sandbox = $1 AND id = $2",
                &[sandbox.as_str().into(), id.to_string().into()],
            )
            .await?;
        Ok(n > 0)
    }

    /// The source connections over a connection.
    pub async fn sources_of(
        &self,
        sandbox: &Sandbox,
        connection: crate::ids::ConnectionId,
    ) -> Result<Vec<SourceConnectionId>> {
        let rows: Vec<super::IdRow> = self
            .engine
            .fetch_as(
                "SELECT id FROM source_connections WHERE sandbox = $1 AND base_connection_id = $2 ORDER BY id",
                &[sandbox.as_str().into(), connection.to_string().into()],
            )
            .await?;
        super::ids(rows)
    }

    // ---------------------------------------------------------------------------------------- dataset targets

    pub async fn insert_dataset_target(&self, d: &DatasetTarget) -> Result<()> {
        let body = serde_json::to_string(&StoredDataset {
            name: d.name.clone(),
            description: d.description.clone(),
            dataset: d.dataset.clone(),
            format: d.format.clone(),
        })
        .expect("a dataset target serializes");
        let context = format!("dataset:{}", d.id);
        let sealed = d.secret.as_ref().map(|s| self.key.seal(s.expose(), &context)).unwrap_or_default();
        self.engine
            .execute(
                "INSERT INTO dataset_targets (id, sandbox, name, body, secrets, etag, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    d.id.to_string().into(),
                    d.sandbox.as_str().into(),
                    d.name.as_str().into(),
                    body.into(),
                    sealed.into(),
                    d.etag.0.as_str().into(),
                    d.created_at.to_rfc3339().into(),
                    d.updated_at.to_rfc3339().into(),
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn dataset_target(&self, sandbox: &Sandbox, id: TargetConnectionId) -> Result<Option<DatasetTarget>> {
        let rows: Vec<DatasetRow> = self
            .engine
            .fetch_as(
                "SELECT id, sandbox, body, secrets, etag, created_at, updated_at FROM dataset_targets \
                 WHERE sandbox = $1 AND id = $2",
                &[sandbox.as_str().into(), id.to_string().into()],
            )
            .await?;
        rows.into_iter().next().map(|r| self.dataset_from(r)).transpose()
    }

    pub async fn dataset_targets(&self, sandbox: &Sandbox) -> Result<Vec<DatasetTarget>> {
        let rows: Vec<DatasetRow> = self
            .engine
            .fetch_as(
                "SELECT id, sandbox, body, secrets, etag, created_at, updated_at FROM dataset_targets \
                 WHERE sandbox = $1 ORDER BY created_at, id",
                &[sandbox.as_str().into()],
            )
            .await?;
        rows.into_iter().map(|r| self.dataset_from(r)).collect()
    }

    pub async fn delete_dataset_target(&self, sandbox: &Sandbox, id: TargetConnectionId) -> Result<bool> {
        let n = self
            .engine
            .execute(
                "DELETE FROM dataset_targets WHERE sandbox = $1 AND id = $2",
                &[sandbox.as_str().into(), id.to_string().into()],
            )
            .await?;
        Ok(n > 0)
    }

    fn dataset_from(&self, row: DatasetRow) -> Result<DatasetTarget> {
        let corrupt = |detail: String| StoreError::Corrupt { what: "dataset target", detail };
        let body: StoredDataset = serde_json::from_str(&row.body).map_err(|e| corrupt(e.to_string()))?;
        let id: TargetConnectionId = envelope("dataset target id", &row.id)?;
        let secret = match row.secrets.as_str() {
            "" => None,
            sealed => Some(self.key.open(sealed, &format!("dataset:{id}"))?),
        };
        Ok(DatasetTarget {
            id,
            sandbox: envelope("sandbox", &row.sandbox)?,
            name: body.name,
            description: body.description,
            dataset: body.dataset,
            format: body.format,
            secret,
            etag: Etag(row.etag),
            created_at: timestamp(&row.created_at).map_err(corrupt)?,
            updated_at: timestamp(&row.updated_at).map_err(corrupt)?,
        })
    }

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

fn source_from(row: ResourceRow) -> Result<SourceConnection> {
    let corrupt = |detail: String| StoreError::Corrupt { what: "source connection", detail };
    let body: StoredSource = serde_json::from_str(&row.body).map_err(|e| corrupt(e.to_string()))?;
    Ok(SourceConnection {
        id: envelope("source connection id", &row.id)?,
        sandbox: envelope("sandbox", &row.sandbox)?,
        name: body.name,
        description: body.description,
        base_connection_id: body.base_connection_id,
        object: body.object,
        etag: Etag(row.etag),
        created_at: timestamp(&row.created_at).map_err(corrupt)?,
        updated_at: timestamp(&row.updated_at).map_err(corrupt)?,
    })
}
