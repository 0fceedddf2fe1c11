//! What a webhook dataset was sent: the newest row of each record delivered, per generation, and the schema it
//! was sent with. A webhook cannot be asked what it holds, and a scan must compare the table with it (to send
//! only what changed, and deletes for what left); a quick look at the dataset shows it. A row replaces the one
//! kept for its record by the rule a PostgreSQL dataset follows: a higher version, or a delete over an older row.

use super::engine::Arg;
use super::{Result, Store, StoreError};
use crate::dataset::{DatasetRow, DatasetSchema, Latest, Operation, Value};
use crate::ids::TargetConnectionId;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use uuid::Uuid;

/// A record delivered without a version (a delete): versions are never negative.
const NO_VERSION: i64 = -1;

#[derive(sqlx::FromRow)]
struct LatestRow {
    record_id: String,
    version: i64,
    deleted: i64,
    synced_at: i64,
}

#[derive(sqlx::FromRow)]
struct DeliveredRow {
    record_id: String,
    operation: String,
    version: i64,
    record_values: String,
    synced_at: i64,
}

#[derive(sqlx::FromRow)]
struct SchemaRow {
    schema: String,
}

fn corrupt(detail: impl ToString) -> StoreError {
    StoreError::Corrupt { what: "delivered record", detail: detail.to_string() }
}

fn at_millis(millis: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis).ok_or_else(|| corrupt(format!("{millis} is not a time")))
}

impl Store {
    /// Records rows a webhook took, in one transaction.
    pub async fn record_delivered(
        &self,
        target: TargetConnectionId,
        generation: u32,
        schema: &DatasetSchema,
        rows: &[&DatasetRow],
    ) -> Result<()> {
        let target = target.to_string();
        let generation = i64::from(generation);
        let schema = serde_json::to_string(schema).expect("a schema serializes");
        let mut statements: Vec<(&'static str, Vec<Arg>)> = vec![(
            "INSERT INTO delivered_schemas (target_id, generation, schema) VALUES ($1, $2, $3) \
             ON CONFLICT (target_id, generation) DO UPDATE SET schema = excluded.schema",
            vec![target.as_str().into(), generation.into(), schema.into()],
        )];
        for row in rows {
            let values = serde_json::to_string(&row.values).expect("values serialize");
            statements.push((
                "INSERT INTO delivered_records (target_id, generation, record_id, operation, version, deleted, \
                 record_values, synced_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (target_id, generation, record_id) DO UPDATE SET operation = excluded.operation, \
                 version = excluded.version, deleted = excluded.deleted, synced_at = excluded.synced_at, \
                 record_values = CASE WHEN excluded.deleted = 1 THEN delivered_records.record_values \
                 ELSE excluded.record_values END \
                 WHERE excluded.version > delivered_records.version \
                 OR (excluded.operation = 'r' AND excluded.version >= delivered_records.version) \
                 OR (excluded.deleted = 1 AND delivered_records.deleted = 0 AND (excluded.version = -1 \
                 OR delivered_records.version = -1 OR excluded.version >= delivered_records.version))",
                vec![
                    target.as_str().into(),
                    generation.into(),
                    row.id.to_string().into(),
                    row.operation.as_str().into(),
                    row.version.unwrap_or(NO_VERSION).into(),
                    i64::from(row.deleted()).into(),
                    values.into(),
                    row.synced_at.timestamp_millis().into(),
                ],
            ));
        }
        self.engine.transaction(None, &statements).await
    }

    /// The newest row delivered of each record of a generation, without its values.
    pub async fn delivered_latest(&self, target: TargetConnectionId, generation: u32) -> Result<HashMap<Uuid, Latest>> {
        let rows: Vec<LatestRow> = self
            .engine
            .fetch_as(
                "SELECT record_id, version, deleted, synced_at FROM delivered_records \
                 WHERE target_id = $1 AND generation = $2",
                &[target.to_string().into(), i64::from(generation).into()],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                let id = Uuid::parse_str(&r.record_id).map_err(corrupt)?;
                let version = (r.version != NO_VERSION).then_some(r.version);
                Ok((id, Latest { version, deleted: r.deleted != 0, synced_at: at_millis(r.synced_at)? }))
            })
            .collect()
    }

    /// Up to `limit` records delivered in a generation, with the schema they were sent with; `None` when nothing
    /// was delivered in it.
    pub async fn delivered_rows(
        &self,
        target: TargetConnectionId,
        generation: u32,
        limit: usize,
    ) -> Result<Option<(DatasetSchema, Vec<DatasetRow>)>> {
        let args = [target.to_string().into(), i64::from(generation).into()];
        let schema: Vec<SchemaRow> = self
            .engine
            .fetch_as("SELECT schema FROM delivered_schemas WHERE target_id = $1 AND generation = $2", &args)
            .await?;
        let Some(schema) = schema.into_iter().next() else { return Ok(None) };
        let schema: DatasetSchema = serde_json::from_str(&schema.schema).map_err(corrupt)?;
        let rows: Vec<DeliveredRow> = self
            .engine
            .fetch_as(
                "SELECT record_id, operation, version, record_values, synced_at FROM delivered_records \
                 WHERE target_id = $1 AND generation = $2 ORDER BY record_id LIMIT $3",
                &[args[0].clone(), args[1].clone(), (limit as i64).into()],
            )
            .await?;
        let rows = rows
            .into_iter()
            .map(|r| {
                let operation = match r.operation.as_str() {
                    "c" => Operation::Create,
                    "u" => Operation::Update,
                    "d" => Operation::Delete,
                    "r" => Operation::Read,
                    other => return Err(corrupt(format!("'{other}' is not an operation"))),
                };
                Ok(DatasetRow {
                    id: Uuid::parse_str(&r.record_id).map_err(corrupt)?,
                    operation,
                    version: (r.version != NO_VERSION).then_some(r.version),
                    values: serde_json::from_str::<Vec<Value>>(&r.record_values).map_err(corrupt)?,
                    synced_at: at_millis(r.synced_at)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((schema, rows)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{ColumnKind, DatasetColumn};

    fn row(id: u128, operation: Operation, version: Option<i64>, email: &str) -> DatasetRow {
        DatasetRow {
            id: Uuid::from_u128(id),
            operation,
            version,
            values: vec![Value::Text(email.into())],
            synced_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn a_delivered_row_is_replaced_only_by_a_newer_one_or_a_delete() {
        for (store, _dir) in crate::store::test_stores().await {
            let target = TargetConnectionId::new();
            let schema =
                DatasetSchema { columns: vec![DatasetColumn { name: "email".into(), kind: ColumnKind::Text }] };
            let newer = row(1, Operation::Update, Some(20), "new@contoso.com");
            let older = row(1, Operation::Update, Some(10), "old@contoso.com");
            store.record_delivered(target, 1, &schema, &[&newer]).await.unwrap();
            store.record_delivered(target, 1, &schema, &[&older]).await.unwrap();
            let (_, rows) = store.delivered_rows(target, 1, 10).await.unwrap().unwrap();
            assert_eq!(rows[0].values, vec![Value::Text("new@contoso.com".into())], "an older version never wins");
            let deleted = DatasetRow { values: vec![], ..row(1, Operation::Delete, None, "") };
            store.record_delivered(target, 1, &schema, &[&deleted]).await.unwrap();
            let latest = store.delivered_latest(target, 1).await.unwrap();
            assert!(latest[&Uuid::from_u128(1)].deleted);
            let (_, rows) = store.delivered_rows(target, 1, 10).await.unwrap().unwrap();
            assert_eq!(rows[0].values, vec![Value::Text("new@contoso.com".into())], "a delete keeps the last values");
            assert!(store.delivered_rows(target, 2, 10).await.unwrap().is_none());
        }
    }
}
