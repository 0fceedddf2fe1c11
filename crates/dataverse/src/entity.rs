//! Records and the single-record operations: create, retrieve, update, upsert, delete.

use crate::client::{Client, Request};
use crate::error::Error;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::Method;
use serde_json::Value as Json;
use std::fmt;
use uuid::Uuid;

/// A record as the Web API carries it: column logical names to JSON values.
pub type Record = serde_json::Map<String, Json>;

/// A record's primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct RecordId(pub Uuid);

impl RecordId {
    pub fn new_v4() -> Self {
        RecordId(Uuid::new_v4())
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Uuid> for RecordId {
    fn from(id: Uuid) -> Self {
        RecordId(id)
    }
}

/// A table as the Web API names it: its logical name (`contact`, for `@odata.type`), its entity set
/// (`contacts`, for URLs) and its primary key column (`contactid`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Table {
    pub logical_name: String,
    pub entity_set: String,
    pub primary_id: String,
}

impl Table {
    /// A table whose primary key follows the `<logical name>id` convention, as every table's does.
    pub fn new(logical_name: impl Into<String>, entity_set: impl Into<String>) -> Self {
        let logical_name = logical_name.into();
        let primary_id = format!("{logical_name}id");
        Table { logical_name, entity_set: entity_set.into(), primary_id }
    }

    pub fn contact() -> Self {
        Table::new("contact", "contacts")
    }

    pub fn lead() -> Self {
        Table::new("lead", "leads")
    }

    pub fn account() -> Self {
        Table::new("account", "accounts")
    }

    /// The `@odata.type` bulk messages need on every target.
    pub fn odata_type(&self) -> String {
        format!("Microsoft.Dynamics.CRM.{}", self.logical_name)
    }
}

/// A value in an alternate key.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValue {
    Text(String),
    Integer(i64),
    Guid(Uuid),
}

impl From<&str> for KeyValue {
    fn from(v: &str) -> Self {
        KeyValue::Text(v.to_string())
    }
}

impl From<String> for KeyValue {
    fn from(v: String) -> Self {
        KeyValue::Text(v)
    }
}

impl From<i64> for KeyValue {
    fn from(v: i64) -> Self {
        KeyValue::Integer(v)
    }
}

impl From<Uuid> for KeyValue {
    fn from(v: Uuid) -> Self {
        KeyValue::Guid(v)
    }
}

/// How a request names one record: by primary key, or by an alternate key defined on the table.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordKey {
    Id(RecordId),
    Alternate(Vec<(String, KeyValue)>),
}

impl From<RecordId> for RecordKey {
    fn from(id: RecordId) -> Self {
        RecordKey::Id(id)
    }
}

impl From<Uuid> for RecordKey {
    fn from(id: Uuid) -> Self {
        RecordKey::Id(RecordId(id))
    }
}

/// Characters that cannot stand as they are in a key segment of a URL path.
const KEY_SEGMENT: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'/').add(b'?').add(b'&').add(b'+');

impl RecordKey {
    pub fn alternate(columns: impl IntoIterator<Item = (impl Into<String>, impl Into<KeyValue>)>) -> Self {
        RecordKey::Alternate(columns.into_iter().map(|(c, v)| (c.into(), v.into())).collect())
    }

    /// The key as OData writes it in parentheses of a URL: `<guid>` or `emailaddress1='a@b.c',…`.
    pub fn segment(&self) -> String {
        self.written(true)
    }

    fn written(&self, in_url: bool) -> String {
        match self {
            RecordKey::Id(id) => id.to_string(),
            RecordKey::Alternate(columns) => columns
                .iter()
                .map(|(column, value)| {
                    let value = match value {
                        KeyValue::Text(t) => format!("'{}'", t.replace('\'', "''")),
                        KeyValue::Integer(i) => i.to_string(),
                        KeyValue::Guid(g) => g.to_string(),
                    };
                    if in_url {
                        format!("{column}={}", utf8_percent_encode(&value, KEY_SEGMENT))
                    } else {
                        format!("{column}={value}")
                    }
                })
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// The `@odata.id` that names the record in a bulk target (`contacts(emailaddress1='a@b.c')`), for
    /// upserting by an alternate key with `UpsertMultiple`.
    pub fn odata_id(&self, table: &Table) -> String {
        format!("{}({})", table.entity_set, self.written(false))
    }
}

/// The id at the end of an `OData-EntityId` (`…/contacts(<guid>)`).
fn id_in_entity_url(url: &str) -> Option<RecordId> {
    let inner = url.rsplit_once('(')?.1.strip_suffix(')')?;
    inner.parse().ok().map(RecordId)
}

impl Client {
    fn record_path(table: &Table, key: &RecordKey) -> String {
        format!("{}({})", table.entity_set, key.segment())
    }

    /// Creates a record and returns its id. Sent again only when the service surely did not act on it,
    /// unless the record carries its own primary key (then a second attempt cannot make a twin).
    pub async fn create(&self, table: &Table, record: &Record) -> Result<RecordId, Error> {
        let idempotent = record.get(&table.primary_id).is_some_and(|v| !v.is_null());
        let request =
            Request::new(Method::POST, &table.entity_set).json(&Json::Object(record.clone())).idempotent(idempotent);
        let reply = self.execute(&request).await?;
        reply.header("odata-entityid").and_then(id_in_entity_url).ok_or_else(|| Error::UnexpectedBody {
            url: reply.url.clone(),
            detail: "a create answered without an OData-EntityId naming the new record".into(),
        })
    }

    /// Reads one record; `select` names the columns (all of them when empty).
    pub async fn retrieve(&self, table: &Table, key: impl Into<RecordKey>, select: &[&str]) -> Result<Record, Error> {
        let mut path = Self::record_path(table, &key.into());
        if !select.is_empty() {
            path = format!("{path}?$select={}", select.join(","));
        }
        self.execute(&Request::get(path)).await?.read_json()
    }

    /// Changes an existing record; a missing one is an error (`If-Match: *`), never a new record.
    pub async fn update(&self, table: &Table, key: impl Into<RecordKey>, changes: &Record) -> Result<(), Error> {
        let request = Request::new(Method::PATCH, Self::record_path(table, &key.into()))
            .header("If-Match", "*")
            .json(&Json::Object(changes.clone()));
        self.execute(&request).await.map(drop)
    }

    /// Creates the record if the key names none, else updates it.
    pub async fn upsert(&self, table: &Table, key: impl Into<RecordKey>, record: &Record) -> Result<(), Error> {
        let request =
            Request::new(Method::PATCH, Self::record_path(table, &key.into())).json(&Json::Object(record.clone()));
        self.execute(&request).await.map(drop)
    }

    pub async fn delete(&self, table: &Table, key: impl Into<RecordKey>) -> Result<(), Error> {
        self.execute(&Request::new(Method::DELETE, Self::record_path(table, &key.into()))).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_as_odata_does() {
        let id = Uuid::parse_str("49b0be2e-d01c-ed11-b83e-000d3a572421").unwrap();
        assert_eq!(RecordKey::from(id).segment(), "49b0be2e-d01c-ed11-b83e-000d3a572421");
        let key = RecordKey::alternate([("firstname", KeyValue::from("Joe O'Hara")), ("n", KeyValue::Integer(2))]);
        assert_eq!(key.segment(), "firstname='Joe%20O''Hara',n=2");
        assert_eq!(
            id_in_entity_url("http://x/api/data/v9.2/contacts(49b0be2e-d01c-ed11-b83e-000d3a572421)"),
            Some(RecordId(id))
        );
    }
}
