//! Source connections and dataset targets, per sandbox; a dataset target's key or connection string is sealed like
//! a connection's secrets.

use super::{ResourceRow, Result, Store, StoreError, timestamp};
use crate::dataset::DatasetName;
use crate::dataset::target::{DatasetFormat, DatasetTarget};
use crate::ids::{Etag, Sandbox, SourceConnectionId, TargetConnectionId};
use crate::source::{SourceConnection, SourceObject};
use serde::{Deserialize, Serialize};
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
struct DatasetRow {
    id: String,
    sandbox: String,
    body: String,
    secrets: String,
    etag: String,
    created_at: String,
    updated_at: String,
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
