//! What `GET /connections/{id}/explore` answers, in Flow Service's shape: the environment's tables and system
//! views (`objectType=root`), one table's or view's columns with their Dataverse and dataset types
//! (`objectType=table|view&object=…`), and a preview of its rows as the dataset would hold them (`preview=true`).
//!
//! Discovery reads one table's metadata at a time — the list of tables is one request without their columns —
//! so an environment with thousands of tables is explored in bounded memory.

use super::shape::{ColumnMapping, TableShape, dataset_type};
use crate::dataset::{ColumnKind, Operation, Value};
use chrono::Utc;
use dataverse::{ColumnDefinition, ColumnType, Query, TableDefinition};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value as Json};

/// The most rows a preview shows.
pub const MAX_PREVIEW: u32 = 100;
/// Rows a preview shows when `previewCount` does not say.
pub const DEFAULT_PREVIEW: u32 = 10;

/// An entry of `objectType=root`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExploredObject {
    /// `table` or `view`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// What Dynamics shows (`Contact`, `Active Contacts`).
    pub name: String,
    /// What to give as `object` (a table's logical name, a view's name).
    pub path: String,
    pub can_preview: bool,
    pub can_fetch_schema: bool,
    /// For a view, the table it returns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// For a table, whether Dynamics tracks its changes (incremental loads read only what changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_tracking: Option<bool>,
}

/// A column of `objectType=table`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExploredColumn {
    pub name: String,
    /// The dataset type (`string`, `integer`, `decimal`, `date`…).
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub meta: ColumnMeta,
    pub xdm: XdmType,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnMeta {
    /// Dataverse's `AttributeType`.
    pub original_type: String,
}

/// The XDM type of a column, as Adobe's explore answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct XdmType {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum: Option<i64>,
}

/// The answer of `objectType=table` (or `view`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExploredSchema {
    pub format: &'static str,
    pub schema: Columns,
    /// The preview's rows, as the dataset would hold them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<Map<String, Json>>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Columns {
    pub columns: Vec<ExploredColumn>,
    /// Columns that hold nothing a dataset can keep (`Virtual`, `EntityName`…), by name.
    #[serde(rename = "notLoadable", skip_serializing_if = "Vec::is_empty")]
    pub not_loadable: Vec<String>,
}

/// Dataverse's `AttributeType` of a column type.
pub fn attribute_type(kind: &ColumnType) -> String {
    match kind {
        ColumnType::String { .. } => "String",
        ColumnType::Memo { .. } => "Memo",
        ColumnType::Integer => "Integer",
        ColumnType::BigInt => "BigInt",
        ColumnType::Decimal => "Decimal",
        ColumnType::Double => "Double",
        ColumnType::Money => "Money",
        ColumnType::Boolean => "Boolean",
        ColumnType::DateTime { .. } => "DateTime",
        ColumnType::Picklist => "Picklist",
        ColumnType::MultiSelectPicklist => "MultiSelectPicklist",
        ColumnType::State => "State",
        ColumnType::Status => "Status",
        ColumnType::Lookup => "Lookup",
        ColumnType::Customer => "Customer",
        ColumnType::Owner => "Owner",
        ColumnType::Uniqueidentifier => "Uniqueidentifier",
        ColumnType::Other(name) => return name.clone(),
    }
    .to_string()
}

fn type_name(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Text => "string",
        ColumnKind::Boolean => "boolean",
        ColumnKind::Integer => "integer",
        ColumnKind::BigInt => "long",
        ColumnKind::Double => "double",
        ColumnKind::Decimal { .. } => "decimal",
        ColumnKind::Timestamp => "date-time",
        ColumnKind::Date => "date",
        ColumnKind::Uuid => "uuid",
    }
}

fn xdm(kind: ColumnKind) -> XdmType {
    let plain = |kind| XdmType { kind, format: None, minimum: None, maximum: None };
    match kind {
        ColumnKind::Text => plain("string"),
        ColumnKind::Boolean => plain("boolean"),
        ColumnKind::Integer => {
            XdmType { minimum: Some(i32::MIN.into()), maximum: Some(i32::MAX.into()), ..plain("integer") }
        }
        ColumnKind::BigInt => XdmType { minimum: Some(i64::MIN), maximum: Some(i64::MAX), ..plain("integer") },
        ColumnKind::Double | ColumnKind::Decimal { .. } => plain("number"),
        ColumnKind::Timestamp => XdmType { format: Some("date-time"), ..plain("string") },
        ColumnKind::Date => XdmType { format: Some("date"), ..plain("string") },
        ColumnKind::Uuid => XdmType { format: Some("uuid"), ..plain("string") },
    }
}

/// A table's columns as explore shows them: each loadable column under its logical name, with its type.
pub fn columns(table: &TableDefinition, only: Option<&[String]>) -> Columns {
    let wanted = |c: &ColumnDefinition| only.is_none_or(|names| names.iter().any(|n| n == &c.logical_name));
    let mut columns = Vec::new();
    let mut not_loadable = Vec::new();
    for c in table.columns.iter().filter(|c| wanted(c)) {
        match dataset_type(c) {
            Some(kind) => columns.push(ExploredColumn {
                name: c.logical_name.clone(),
                kind: type_name(kind),
                meta: ColumnMeta { original_type: attribute_type(&c.kind) },
                xdm: xdm(kind),
            }),
            None => not_loadable.push(c.logical_name.clone()),
        }
    }
    Columns { columns, not_loadable }
}

/// A value of a dataset row as JSON, for a preview or a quick look at a dataset.
pub fn value_json(value: &Value, kind: Option<ColumnKind>) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Text(t) => Json::String(t.clone()),
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(n) => Json::from(*n),
        Value::BigInt(n) => Json::from(*n),
        Value::Double(n) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
        Value::Decimal(unscaled) => {
            let scale = match kind {
                Some(ColumnKind::Decimal { scale }) => u32::from(scale),
                _ => 0,
            };
            Json::String(decimal_text(*unscaled, scale))
        }
        Value::Timestamp(t) => Json::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        Value::Date(d) => Json::String(d.to_string()),
        Value::Uuid(u) => Json::String(u.to_string()),
    }
}

/// `unscaled / 10^scale` as exact decimal text (`1234500`, 4 → `123.4500`).
pub fn decimal_text(unscaled: i128, scale: u32) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

/// Up to `count` rows of a table as the dataset would hold them (every loadable column, or those of `only`).
pub async fn preview(
    client: &dataverse::Client,
    table: &TableDefinition,
    only: Option<&[String]>,
    count: u32,
) -> Result<Vec<Map<String, Json>>, String> {
    let mappings: Vec<ColumnMapping> =
        only.unwrap_or_default().iter().map(|c| ColumnMapping::new(c.clone(), c.clone())).collect();
    let shape = TableShape::new(table, &table.primary_id, &mappings, "columns")
        .map_err(|problems| problems.into_iter().map(|p| p.message).collect::<Vec<_>>().join("; "))?;
    let select = shape.select();
    let select: Vec<&str> = select.iter().map(String::as_str).collect();
    let entity = dataverse::Table {
        logical_name: table.logical_name.clone(),
        entity_set: table.entity_set_name.clone(),
        primary_id: table.primary_id.clone(),
    };
    shape.read_labels(client, table).await.map_err(|e| e.to_string())?;
    let query = Query::new(&entity).select(&select).top(count.min(MAX_PREVIEW)).annotated();
    let records: Vec<_> = client.query(&query).take(count.min(MAX_PREVIEW) as usize).collect().await;
    let now = Utc::now();
    let mut rows = Vec::new();
    for record in records {
        let record = record.map_err(|e| e.to_string())?;
        let Ok((row, _)) = shape.row(&record, Operation::Read, now) else { continue };
        let mut out = Map::new();
        for (column, value) in shape.schema.columns.iter().zip(&row.values) {
            out.insert(column.name.clone(), value_json(value, Some(column.kind)));
        }
        rows.push(out);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_read_as_exact_text() {
        assert_eq!(decimal_text(1_234_500, 4), "123.4500");
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(decimal_text(42, 0), "42");
    }
}
