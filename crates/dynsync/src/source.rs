//! Source connections: which table or view of a Dynamics connection an ingestion reads, as Flow Service's
//! `sourceConnections` take it (seed 003).

use crate::ids::{ConnectionId, Etag, Sandbox, SourceConnectionId};
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
