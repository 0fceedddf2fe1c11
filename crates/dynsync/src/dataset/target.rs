//! Dataset targets: a dataset an ingestion writes and where it is kept, as a `targetConnections` of the data
//! lake's connection spec (seed 003) — Parquet files in the data directory or in object storage, a PostgreSQL
//! table, or the webhook of a marketing tool (seed 001's records out: the same rows, sent as they change). The
//! key, connection string or signing secret that reaches it is sealed at rest and never answered.

use super::DatasetName;
use crate::ids::{Etag, Sandbox, TargetConnectionId};
use crate::secrets::Secret;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    /// Parquet files in a container of Azure Blob Storage or ADLS Gen2, signed with the (sealed) account key, or
    /// with the credentials the environment gives `object_store` when there is none.
    #[serde(rename = "azureBlob", rename_all = "camelCase")]
    AzureBlob { account: String, container: String, folder_path: String, endpoint: Option<String> },
    /// Parquet files in an S3 bucket (or an S3-compatible store), signed with the key id and the (sealed) secret
    /// key, or with the environment's credentials.
    /// The marketing tool's webhook: each change POSTed as JSON, signed with HMAC-SHA256 under the (sealed)
    /// signing secret, in order, retried until answered; what it was sent is kept in dynsync's store.
    #[serde(rename = "webhook")]
    Webhook { url: String },
    #[serde(rename = "s3", rename_all = "camelCase")]
    S3 { bucket: String, region: String, folder_path: String, access_key_id: Option<String>, endpoint: Option<String> },
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
    /// The PostgreSQL connection string, the Azure account key, the S3 secret key or the webhook's signing secret:
    /// sealed at rest, never answered by the API, sent only to where the format names (a signing secret is sent
    /// nowhere: it signs).
    pub secret: Option<Secret>,
    pub etag: Etag,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
