//! `RetrieveMetadataChanges(Query=@p1)?@p1={EntityQueryExpression}`: tables and their typed columns in one
//! request, as clients that want `MaxLength`, `MinValue`/`MaxValue` or `Precision` of every column without
//! a cast per type call it (Microsoft's Python SDK does, for typed column metadata).
//!
//! The query's `Criteria` pick the tables, `Properties` the table properties returned (`Attributes` and
//! `Keys` among them), and `AttributeQuery` does the same for columns. Columns come back as their derived
//! types (`@odata.type`), with `MetadataId` always and the requested properties their type has. The answer
//! is `RetrieveMetadataChangesResponse`: `EntityMetadata`, `ServerVersionStamp`, `DeletedMetadata`. A
//! `ClientVersionStamp` is accepted, and everything the query selects is returned again: the emulator keeps
//! no history of metadata changes to send only the differences.

use super::metadata::{attribute_json, key_json, table_json};
use super::{Request, json_response};
use crate::error::{ApiError, ApiResult};
use crate::schema::Table;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value as Json, json};

/// How deep `Filters` may nest, and how many conditions one query may hold.
const MAX_DEPTH: usize = 8;
const MAX_CONDITIONS: usize = 200;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_query(message)
}

/// The query, from the parameter alias the path names (`Query=@p1`) or inline JSON.
fn query_of(request: &Request, path: &str) -> ApiResult<Json> {
    let path = percent_encoding::percent_decode_str(path).decode_utf8_lossy().to_string();
    let decoded = path
        .strip_prefix("RetrieveMetadataChanges(")
        .and_then(|p| p.strip_suffix(')'))
        .ok_or_else(|| bad("Call RetrieveMetadataChanges(Query=@p1) with @p1 set to an EntityQueryExpression."))?;
    let mut query_text = None;
    for part in decoded.split(',') {
        let Some((name, value)) = part.split_once('=') else { continue };
        if name.trim() != "Query" {
            continue;
        }
        let value = value.trim();
        query_text = if let Some(alias) = value.strip_prefix('@') {
            let pairs = url::form_urlencoded::parse(request.raw_query.as_deref().unwrap_or_default().as_bytes());
            Some(
                pairs
                    .into_iter()
                    .find(|(k, _)| k.strip_prefix('@') == Some(alias))
                    .map(|(_, v)| v.into_owned())
                    .ok_or_else(|| bad(format!("The parameter alias @{alias} is not given in the query string.")))?,
            )
        } else {
            Some(value.to_string())
        };
    }
    let text = query_text.ok_or_else(|| bad("RetrieveMetadataChanges needs Query: an EntityQueryExpression."))?;
    serde_json::from_str(&text).map_err(|e| bad(format!("Query is not a valid EntityQueryExpression: {e}")))
}

/// The value a condition compares: the property, or the `Value` of a managed or enum-like property.
fn property_value<'j>(item: &'j Map<String, Json>, name: &str) -> &'j Json {
    match item.get(name) {
        Some(Json::Object(o)) => o.get("Value").unwrap_or(&Json::Null),
        Some(v) => v,
        None => &Json::Null,
    }
}

fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::String(a), Json::String(b)) => a.eq_ignore_ascii_case(b),
        (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
        (Json::String(a), Json::Number(b)) | (Json::Number(b), Json::String(a)) => a == &b.to_string(),
        (Json::Bool(a), Json::String(b)) | (Json::String(b), Json::Bool(a)) => b.eq_ignore_ascii_case(&a.to_string()),
        _ => a == b,
    }
}

/// Counts the conditions of a `MetadataFilterExpression`, refusing one nested too deep.
fn conditions_in(filter: Option<&Json>, depth: usize) -> ApiResult<usize> {
    let Some(filter) = filter.filter(|f| !f.is_null()) else { return Ok(0) };
    if depth > MAX_DEPTH {
        return Err(bad(format!("Criteria nest more than {MAX_DEPTH} Filters deep.")));
    }
    let mut count = filter.get("Conditions").and_then(Json::as_array).map_or(0, Vec::len);
    for nested in filter.get("Filters").and_then(Json::as_array).into_iter().flatten() {
        count += conditions_in(Some(nested), depth + 1)?;
    }
    Ok(count)
}

/// Evaluates a `MetadataFilterExpression` (`Conditions`, nested `Filters`, `FilterOperator`) over an item.
fn matches(filter: Option<&Json>, item: &Map<String, Json>) -> ApiResult<bool> {
    let Some(filter) = filter.filter(|f| !f.is_null()) else { return Ok(true) };
    let any = match filter.get("FilterOperator").and_then(Json::as_str).unwrap_or("And") {
        "And" => false,
        "Or" => true,
        other => return Err(bad(format!("FilterOperator '{other}' is not And or Or."))),
    };
    let mut results = Vec::new();
    for condition in filter.get("Conditions").and_then(Json::as_array).into_iter().flatten() {
        let name = condition
            .get("PropertyName")
            .and_then(Json::as_str)
            .ok_or_else(|| bad("Each condition needs a PropertyName."))?;
        let wanted = condition.get("Value").map(|v| v.get("Value").unwrap_or(v)).unwrap_or(&Json::Null);
        let value = property_value(item, name);
        let in_list = || wanted.as_array().is_some_and(|list| list.iter().any(|w| same(value, w)));
        let compare = |greater: bool| match (value.as_f64(), wanted.as_f64()) {
            (Some(v), Some(w)) => {
                if greater {
                    v > w
                } else {
                    v < w
                }
            }
            _ => false,
        };
        results.push(match condition.get("ConditionOperator").and_then(Json::as_str).unwrap_or("Equals") {
            "Equals" => same(value, wanted),
            "NotEquals" => !same(value, wanted),
            "In" => in_list(),
            "NotIn" => !in_list(),
            "GreaterThan" => compare(true),
            "LessThan" => compare(false),
            other => {
                return Err(bad(format!(
                    "ConditionOperator '{other}' is not one of Equals, NotEquals, In, NotIn, GreaterThan, LessThan."
                )));
            }
        });
    }
    for nested in filter.get("Filters").and_then(Json::as_array).into_iter().flatten() {
        results.push(matches(Some(nested), item)?);
    }
    Ok(if any { results.is_empty() || results.contains(&true) } else { !results.contains(&false) })
}

/// The property names a `Properties` (`MetadataPropertiesExpression`) asks for; `None` for all.
fn wanted_properties(query: &Json) -> Option<Vec<String>> {
    let properties = query.get("Properties").filter(|p| !p.is_null())?;
    if properties.get("AllProperties").and_then(Json::as_bool) == Some(true) {
        return None;
    }
    Some(
        properties
            .get("PropertyNames")
            .and_then(Json::as_array)
            .map(|names| names.iter().filter_map(Json::as_str).map(str::to_string).collect())
            .unwrap_or_default(),
    )
}

fn project(mut item: Map<String, Json>, wanted: &Option<Vec<String>>) -> Map<String, Json> {
    if let Some(names) = wanted {
        item.retain(|k, _| k == "MetadataId" || k == "@odata.type" || names.iter().any(|n| n == k));
    }
    item
}

fn entity(table: &Table, query: &Json) -> ApiResult<Map<String, Json>> {
    let wanted = wanted_properties(query);
    let asks = |name: &str| wanted.as_ref().is_none_or(|w| w.iter().any(|n| n == name));
    let mut item = project(table_json(table), &wanted);
    if asks("Attributes") {
        let attribute_query = query.get("AttributeQuery").cloned().unwrap_or(Json::Null);
        let attribute_wanted = wanted_properties(&attribute_query);
        let mut attributes = Vec::new();
        for (position, attribute) in table.attributes.iter().enumerate() {
            let full = attribute_json(table, attribute, position);
            if matches(attribute_query.get("Criteria"), &full)? {
                attributes.push(Json::Object(project(full, &attribute_wanted)));
            }
        }
        item.insert("Attributes".into(), Json::Array(attributes));
    }
    if asks("Keys") {
        let keys = table.keys.iter().map(|k| Json::Object(key_json(table, k))).collect();
        item.insert("Keys".into(), Json::Array(keys));
    }
    Ok(item)
}

/// `GET RetrieveMetadataChanges(Query=@p1)?@p1=…`.
pub fn retrieve(request: &Request, path: &str) -> ApiResult<Response> {
    if request.method != Method::GET {
        return Err(ApiError::method_not_allowed("RetrieveMetadataChanges is a function: call it with GET."));
    }
    let query = query_of(request, path)?;
    if !query.is_object() {
        return Err(bad("Query must be an EntityQueryExpression object."));
    }
    let conditions =
        conditions_in(query.get("Criteria"), 0)? + conditions_in(query.pointer("/AttributeQuery/Criteria"), 0)?;
    if conditions > MAX_CONDITIONS {
        return Err(bad(format!("The query holds {conditions} conditions; at most {MAX_CONDITIONS} are accepted.")));
    }
    let data = request.env.store.read();
    let mut entities = Vec::new();
    for table in data.schema.tables() {
        if matches(query.get("Criteria"), &table_json(table))? {
            entities.push(Json::Object(entity(table, &query)?));
        }
    }
    let stamp = format!("{}!{}", data.version, chrono::Utc::now().format("%m/%d/%Y %H:%M:%S"));
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "@odata.context": format!("{}/$metadata#Microsoft.Dynamics.CRM.RetrieveMetadataChangesResponse", request.base),
            "EntityMetadata": entities,
            "ServerVersionStamp": stamp,
            "DeletedMetadata": null,
        }),
    ))
}
