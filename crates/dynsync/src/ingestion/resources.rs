//! The resources an ingestion is made of besides its flow: a **source connection** (which table or view of a
//! Dynamics connection it reads, as Flow Service's `sourceConnections` take it) and a **dataset target** (which
//! dataset it writes and where that dataset is kept, as a `targetConnections` of the data lake's connection spec).

use crate::dataset::DatasetName;
use crate::ids::{ConnectionId, Etag, Sandbox, SourceConnectionId, TargetConnectionId};
use crate::secrets::Secret;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a source connection reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "entityType")]
pub enum SourceObject {
    /// A table, by logical name, with its primary key column.
    #[serde(rename = "table")]
    Table { table: String, primary_key: String },
    /// A system view, by name, of the table it returns.
    #[serde(rename = "view")]
    View { view: String, view_id: uuid::Uuid, table: String, primary_key: String },
}

impl SourceObject {
    /// The table the rows come from.
    pub fn table(&self) -> &str {
        match self {
            SourceObject::Table { table, .. } | SourceObject::View { table, .. } => table,
        }
    }

    pub fn primary_key(&self) -> &str {
        match self {
            SourceObject::Table { primary_key, .. } | SourceObject::View { primary_key, .. } => primary_key,
        }
    }
}

/// A table or view of a Dynamics connection that an ingestion reads.
#[derive(Debug, Clone)]
pub struct SourceConnection {
    pub id: SourceConnectionId,
    pub sandbox: Sandbox,
    pub name: String,
    pub description: String,
    pub base_connection_id: ConnectionId,
    pub object: SourceObject,
    pub etag: Etag,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a dataset is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "format")]
pub enum DatasetFormat {
    /// Parquet files in the data directory (`<data dir>/datasets/<dataset>/`): the embedded default.
    #[serde(rename = "parquet")]
    Parquet,
    /// A PostgreSQL table kept current by upsert, in the database the (sealed) connection string names.
    #[serde(rename = "postgres")]
    Postgres,
}

/// A dataset an ingestion writes, and where it is kept.
#[derive(Debug, Clone)]
pub struct DatasetTarget {
    pub id: TargetConnectionId,
    pub sandbox: Sandbox,
    pub name: String,
    pub description: String,
    pub dataset: DatasetName,
    pub format: DatasetFormat,
    /// The PostgreSQL connection string of a `postgres` dataset: sealed at rest, never answered by the API.
    pub connection_string: Option<Secret>,
    pub etag: Etag,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
