//! Bulk messages: `CreateMultiple`, `UpdateMultiple` and `UpsertMultiple` bound to an entity set, all or
//! nothing as on standard tables, and `sdkmessagefilters`, which tells clients the tables that take them.

use super::{Request, empty_response, json_response, with_work};
use crate::error::{ApiError, ApiResult};
use crate::limits::Work;
use crate::odata::filter::matches_json;
use crate::odata::path::{Key, parse_path};
use crate::records::{self, Preconditions, WriteKind, WriteRequest};
use crate::schema::{Table, activities};
use crate::store::Data;
use crate::value::parse_guid;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

/// The bulk messages a table answers.
pub const BULK_MESSAGES: &[&str] = &["CreateMultiple", "UpdateMultiple", "UpsertMultiple"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    Create,
    Update,
    Upsert,
}

/// Adds which target failed to an error, so the caller can find the bad record among the thousand.
fn at(index: usize, mut error: ApiError) -> ApiError {
    error.message = format!("{} (Targets[{index}])", error.message);
    error
}

fn target_error(index: usize, message: impl Into<String>) -> ApiError {
    at(index, ApiError::invalid_argument(message))
}

/// The key a target names: `@odata.id` (`contacts(emailaddress1='a@b.c')`), else its primary key column.
fn target_key(data: &Data, table: &Table, target: &Map<String, Json>, index: usize) -> ApiResult<Option<Key>> {
    if let Some(reference) = target.get("@odata.id").and_then(Json::as_str) {
        let tail = reference
            .rsplit_once("/api/data/")
            .map_or(reference, |(_, rest)| rest.split_once('/').map_or(rest, |(_, r)| r));
        let segments = parse_path(tail.trim_start_matches('/')).map_err(|e| at(index, e))?;
        let [segment] = segments.as_slice() else {
            return Err(target_error(
                index,
                format!(
                    "'@odata.id' must name one {} record, as in {}(<key>).",
                    table.logical_name, table.entity_set_name
                ),
            ));
        };
        if segment.name != table.entity_set_name || segment.key.is_none() {
            return Err(target_error(
                index,
                format!("'@odata.id' {reference} does not name a record of {}.", table.entity_set_name),
            ));
        }
        let key = segment.key.clone().expect("checked");
        // Resolving checks that the key is one the table defines.
        records::resolve_key(data, table, &key).map_err(|e| at(index, e))?;
        return Ok(Some(key));
    }
    match target.get(&table.primary_id) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(text)) => parse_guid(text)
            .map(|id| Some(Key::Id(id)))
            .ok_or_else(|| at(index, ApiError::cannot_convert(&table.entity_set_name, text, "Edm.Guid"))),
        Some(other) => Err(at(index, ApiError::cannot_convert(&table.entity_set_name, &other.to_string(), "Edm.Guid"))),
    }
}

fn write_target(
    data: &mut Data,
    journal: &mut Vec<crate::store::Change>,
    request: &Request,
    table: &Table,
    message: Message,
    index: usize,
    target: &Json,
) -> ApiResult<Uuid> {
    let body =
        target.as_object().ok_or_else(|| target_error(index, "Each item of Targets is a record: a JSON object."))?;
    let expected = format!("Microsoft.Dynamics.CRM.{}", table.logical_name);
    match body.get("@odata.type").and_then(Json::as_str) {
        None => {
            return Err(target_error(index, format!("Each item of Targets needs \"@odata.type\": \"{expected}\".")));
        }
        Some(t) if t.trim_start_matches('#') != expected => {
            return Err(target_error(
                index,
                format!(
                    "The '@odata.type' '{t}' is not {expected}: all Targets of one request belong to the table it is sent to."
                ),
            ));
        }
        Some(_) => {}
    }
    let key = target_key(data, table, body, index)?;
    let update_only = Preconditions { if_match: Some("*".into()), if_none_match_any: false };
    let (kind, preconditions) = match (message, &key) {
        (Message::Create, _) => (WriteKind::Create, Preconditions::default()),
        (Message::Update, None) => {
            return Err(target_error(
                index,
                format!("UpdateMultiple needs the record's '{}' (or '@odata.id') in each target.", table.primary_id),
            ));
        }
        (Message::Update, Some(_)) => (WriteKind::Upsert, update_only),
        (Message::Upsert, None) => (WriteKind::Create, Preconditions::default()),
        (Message::Upsert, Some(_)) => (WriteKind::Upsert, Preconditions::default()),
    };
    // On the create path, an alternate key's columns may not also be in the body: Dataverse refuses it.
    if let (Message::Upsert, Some(Key::Named(parts))) = (message, &key) {
        let exists =
            records::resolve_key(data, table, key.as_ref().expect("named")).map_err(|e| at(index, e))?.is_some();
        if let Some((column, _)) = parts.iter().find(|(column, _)| body.contains_key(column)).filter(|_| !exists) {
            return Err(target_error(
                index,
                format!(
                    "The alternate key column '{column}' is both in '@odata.id' and in the body of a record to create; leave it out of the body."
                ),
            ));
        }
    }
    let key = if message == Message::Create { None } else { key };
    let write =
        WriteRequest { table, key: key.as_ref(), body, kind, preconditions: &preconditions, caller: request.caller };
    records::write(data, journal, write).map(|o| o.id).map_err(|e| at(index, e))
}

/// `POST /<set>/Microsoft.Dynamics.CRM.<Message>`.
pub async fn execute(request: &Request, table: &Table, action: &str) -> ApiResult<Response> {
    let name = action.strip_prefix("Microsoft.Dynamics.CRM.").unwrap_or(action);
    let message = match name {
        "CreateMultiple" => Message::Create,
        "UpdateMultiple" => Message::Update,
        "UpsertMultiple" => Message::Upsert,
        "DeleteMultiple" => {
            return Err(ApiError::invalid_argument(
                "DeleteMultiple has not yet been implemented. It works on elastic tables only; use BulkDelete for standard tables.",
            ));
        }
        _ => return Err(ApiError::segment_not_found(action)),
    };
    if request.method != Method::POST {
        return Err(ApiError::no_resource(&format!("{}/{}/{action}", request.base, table.entity_set_name)));
    }
    if table.logical_name == activities::POINTER {
        return Err(activities::pointer_not_writable(name));
    }
    let body = request.json_object(&table.entity_set_name)?;
    let targets = body.get("Targets").and_then(Json::as_array).ok_or_else(|| {
        ApiError::invalid_argument(format!(
            "{name} takes {{\"Targets\": [ … ]}}: the records to write, each with \"@odata.type\"."
        ))
    })?;
    let ids = request
        .env
        .store
        .write(|data, journal| {
            data.atomically(journal, |data, journal| {
                targets
                    .iter()
                    .enumerate()
                    .map(|(i, target)| write_target(data, journal, request, table, message, i, target))
                    .collect::<ApiResult<Vec<Uuid>>>()
            })
        })
        .await?;
    let work = Work::written(ids.len());
    if message == Message::Create {
        return Ok(with_work(
            json_response(
                StatusCode::OK,
                &json!({"@odata.context": format!("{}/$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse", request.base), "Ids": ids}),
            ),
            work,
        ));
    }
    Ok(with_work(empty_response(StatusCode::NO_CONTENT), work))
}

/// `GET sdkmessagefilters`: one filter per table and message the emulator answers, so that clients that
/// look up bulk support before using it find it (`$filter=sdkmessageid/name eq 'CreateMultiple' and
/// primaryobjecttypecode eq 'contact'`).
pub fn message_filters(data: &Data, request: &Request) -> ApiResult<Response> {
    let options = request.options()?;
    let mut value = Vec::new();
    let messages = ["Create", "Retrieve", "RetrieveMultiple", "Update", "Delete", "Upsert"].iter().chain(BULK_MESSAGES);
    for message in messages {
        let message_id = Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("sdkmessage/{message}").as_bytes());
        for table in data.schema.tables() {
            // activitypointer answers reads only: Retrieve and RetrieveMultiple are its messages.
            if table.logical_name == activities::POINTER && !message.starts_with("Retrieve") {
                continue;
            }
            let id = Uuid::new_v5(&message_id, table.logical_name.as_bytes());
            let item = json!({
                "sdkmessagefilterid": id,
                "primaryobjecttypecode": table.logical_name,
                "secondaryobjecttypecode": "none",
                "iscustomprocessingstepallowed": true,
                "_sdkmessageid_value": message_id,
                "sdkmessageid": {"sdkmessageid": message_id, "name": message},
            });
            if let Some(filter) = &options.filter
                && !matches_json(filter, &item, "sdkmessagefilter")?
            {
                continue;
            }
            let mut item = item.as_object().cloned().expect("object");
            item.remove("sdkmessageid");
            if let Some(select) = &options.select {
                for name in select {
                    if !item.contains_key(name) {
                        return Err(ApiError::unknown_query_property(name, "sdkmessagefilter"));
                    }
                }
                item.retain(|k, _| k == "sdkmessagefilterid" || select.contains(k));
            }
            value.push(Json::Object(item));
        }
    }
    let context = format!("{}/$metadata#sdkmessagefilters", request.base);
    Ok(json_response(StatusCode::OK, &json!({"@odata.context": context, "value": value})))
}
