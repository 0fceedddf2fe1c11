//! Datasets: what table ingestion produces. A dataset is a table of rows read from Dynamics, each with the columns
//! its flow maps and dynsync's metadata columns — the operation (`c`reate, `u`pdate, `d`elete, `r`ead by a full
//! load), the Dataverse `versionnumber` it was read at, whether it is deleted, and when dynsync wrote it.
//!
//! A dataset lives in a *generation*: a column whose type changes in Dynamics starts a new generation (and a full
//! load into it) instead of failing, and readers of the old one keep what they had. Columns added in Dynamics
//! join the current generation from the next page on; older rows read them as null.
//!
//! Writes are idempotent, because the pipeline runtime writes a page again when a crash came between the write
//! and its acknowledgement: the same rows written twice leave the dataset as once ([`Destination::write`]).
//! Destinations: Parquet files (the embedded default, in the data directory, or in object storage through the
//! `object_store` crate), a PostgreSQL table kept current by upsert, and a webhook — the marketing tool's URL,
//! sent each change signed, with what it was sent kept in dynsync's store.

pub mod files;
pub mod postgres;
pub mod target;
pub mod webhook;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// The metadata columns every dataset row carries after its mapped columns.
pub const OPERATION_COLUMN: &str = "_dynsync_op";
pub const VERSION_COLUMN: &str = "_dynsync_version";
pub const DELETED_COLUMN: &str = "_dynsync_deleted";
pub const SYNCED_AT_COLUMN: &str = "_dynsync_synced_at";

/// A dataset's name: what its files' folder and its PostgreSQL table are called. Letters, digits and `_`,
/// starting with a letter, at most 63 characters (PostgreSQL's limit on a name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DatasetName(String);

impl DatasetName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DatasetName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        let valid = name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            Ok(DatasetName(name))
        } else {
            Err(format!(
                "'{name}' is not a dataset name: use letters, digits and _, starting with a letter, at most 63 characters \
                 (contacts_from_dynamics)"
            ))
        }
    }
}

impl From<DatasetName> for String {
    fn from(name: DatasetName) -> String {
        name.0
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a dataset column holds. Each Dataverse type maps to one: choices are a whole number beside a text label
/// column, lookups a uuid beside a text column naming the target table, `DateOnly` a date, money and decimals an
/// exact decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum ColumnKind {
    Text,
    Boolean,
    /// 32-bit whole number.
    Integer,
    /// 64-bit whole number.
    BigInt,
    Double,
    /// An exact decimal: the value is `unscaled / 10^scale`. Precision is 38 digits.
    Decimal {
        scale: u8,
    },
    /// A moment, UTC, to the microsecond.
    Timestamp,
    Date,
    Uuid,
}

/// One mapped column of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetColumn {
    pub name: String,
    pub kind: ColumnKind,
}

/// The mapped columns of a dataset generation, in order (the metadata columns follow them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetSchema {
    pub columns: Vec<DatasetColumn>,
}

impl DatasetSchema {
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// A value of a dataset column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "t", content = "v")]
pub enum Value {
    Null,
    Text(String),
    Boolean(bool),
    Integer(i32),
    BigInt(i64),
    Double(f64),
    /// The unscaled value of a [`ColumnKind::Decimal`], as text so that JSON keeps all 38 digits.
    Decimal(#[serde(with = "unscaled")] i128),
    Timestamp(DateTime<Utc>),
    Date(NaiveDate),
    Uuid(Uuid),
}

mod unscaled {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(n: &i128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&n.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// What a row records, as Debezium's `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// Created since the last load.
    #[serde(rename = "c")]
    Create,
    /// Changed since the last load.
    #[serde(rename = "u")]
    Update,
    /// Deleted in Dynamics (or not seen again by a full load that replaced an expired delta token).
    #[serde(rename = "d")]
    Delete,
    /// Read by a full load.
    #[serde(rename = "r")]
    Read,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "c",
            Operation::Update => "u",
            Operation::Delete => "d",
            Operation::Read => "r",
        }
    }
}

/// One row of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetRow {
    /// The Dynamics record's id (its primary key column is also among `values` when the flow maps it).
    pub id: Uuid,
    pub operation: Operation,
    /// Dataverse's `versionnumber` of the record as read; `None` for a delete, which Dataverse reports without one.
    pub version: Option<i64>,
    /// One value per column of the generation's schema, in its order; a row read before a column was added has
    /// fewer values, and reads the rest as null.
    pub values: Vec<Value>,
    pub synced_at: DateTime<Utc>,
}

impl DatasetRow {
    pub fn deleted(&self) -> bool {
        self.operation == Operation::Delete
    }
}

/// The newest row kept for an id: what a resync compares the table with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latest {
    pub version: Option<i64>,
    pub deleted: bool,
    pub synced_at: DateTime<Utc>,
}

/// A batch of rows for one generation of a dataset.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub dataset: &'a DatasetName,
    pub generation: u32,
    pub schema: &'a DatasetSchema,
    /// The load the rows belong to (its start), for the files' manifest.
    pub load: DateTime<Utc>,
    pub rows: &'a [&'a DatasetRow],
    /// Columns an update leaves as the destination has them ("apply updates" off): written when a record is
    /// first loaded, created or replayed. Only destinations kept current by upsert keep them.
    pub kept_on_update: &'a [String],
}

/// Why a dataset could not be written or read. Every variant is worth trying again once its cause is fixed.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("dataset {dataset}: the files at {location} cannot be written: {detail}")]
    Files { dataset: String, location: String, detail: String },
    #[error("dataset {dataset}: the PostgreSQL table {table} cannot be written: {detail}")]
    Postgres { dataset: String, table: String, detail: String },
    #[error("dataset {dataset}: the webhook at {url} did not take the records: {detail}")]
    Webhook { dataset: String, url: String, detail: String },
    #[error("dataset {dataset} has no generation {generation} yet: nothing was loaded into it")]
    NoGeneration { dataset: String, generation: u32 },
}

/// Where a dataset is kept.
pub enum Destination {
    Files(files::FileDestination),
    Postgres(postgres::PostgresDestination),
    Webhook(WebhookDataset),
}

/// A dataset sent to a webhook, with what it was sent kept in dynsync's store.
pub struct WebhookDataset {
    pub webhook: webhook::WebhookDestination,
    pub store: crate::store::Store,
    pub target: crate::ids::TargetConnectionId,
}

impl WebhookDataset {
    fn unavailable(&self, dataset: &DatasetName, e: crate::store::StoreError) -> DatasetError {
        DatasetError::Webhook {
            dataset: dataset.to_string(),
            url: self.webhook.url().to_string(),
            detail: format!("what was delivered cannot be kept in dynsync's store: {e}"),
        }
    }
}

impl Destination {
    /// Writes a batch's pages, in order; answers the rows the destination refused one by one (a webhook's answer to
    /// a record), by id, with why. Writing the same pages again (a crash before their acknowledgement, or an error
    /// on a later page) leaves the dataset as writing them once; a row older (by version) than the one kept for
    /// its id never replaces it.
    pub async fn write(&self, pages: &[Batch<'_>]) -> Result<Vec<(Uuid, String)>, DatasetError> {
        let mut refused = Vec::new();
        match self {
            Destination::Files(d) => d.write(pages).await?,
            Destination::Postgres(d) => {
                for &page in pages {
                    d.write(page).await?;
                }
            }
            Destination::Webhook(d) => {
                for &page in pages {
                    let answered = d.webhook.deliver(page).await?;
                    let taken: Vec<&DatasetRow> =
                        page.rows.iter().copied().filter(|r| !answered.iter().any(|(id, _)| *id == r.id)).collect();
                    d.store
                        .record_delivered(d.target, page.generation, page.schema, &taken)
                        .await
                        .map_err(|e| d.unavailable(page.dataset, e))?;
                    refused.extend(answered);
                }
            }
        }
        Ok(refused)
    }

    /// The newest row of each id in a generation (by version; a delete after it wins), without its values: a
    /// resync reads it once, to write only what changed and to mark deleted what it does not see again.
    pub async fn latest(
        &self,
        dataset: &DatasetName,
        generation: u32,
    ) -> Result<std::collections::HashMap<Uuid, Latest>, DatasetError> {
        match self {
            Destination::Files(d) => d.latest(dataset, generation).await,
            Destination::Postgres(d) => d.latest(dataset, generation).await,
            Destination::Webhook(d) => {
                d.store.delivered_latest(d.target, generation).await.map_err(|e| d.unavailable(dataset, e))
            }
        }
    }

    /// Up to `limit` rows of a generation, for a quick look through the API: the current row of each id.
    pub async fn rows(
        &self,
        dataset: &DatasetName,
        generation: u32,
        limit: usize,
    ) -> Result<(DatasetSchema, Vec<DatasetRow>), DatasetError> {
        match self {
            Destination::Files(d) => d.rows(dataset, generation, limit).await,
            Destination::Postgres(d) => d.rows(dataset, generation, limit).await,
            Destination::Webhook(d) => d
                .store
                .delivered_rows(d.target, generation, limit)
                .await
                .map_err(|e| d.unavailable(dataset, e))?
                .ok_or_else(|| DatasetError::NoGeneration { dataset: dataset.to_string(), generation }),
        }
    }
}
