//! Entity sets: queries with paging, and create, retrieve, update, upsert and delete of single rows and
//! single properties.

use super::{Request, collection_response, empty_response, json_response, set_header, with_work};
use crate::error::{ApiError, ApiResult};
use crate::limits::Work;
use crate::odata::fetchxml;
use crate::odata::filter::Predicate;
use crate::odata::paging::{MAX_PAGE, Order, page};
use crate::odata::path::{Key, Segment};
use crate::odata::query::{Cursor, QueryOptions};
use crate::records::{
    self, Preconditions, Projection, Selection, WriteKind, WriteOutcome, WriteRequest, etag, resolve_key,
};
use crate::schema::{Table, activities};
use crate::store::{Change, Data};
use crate::value::Value;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value as Json, json};
use std::sync::Arc;
use uuid::Uuid;

/// Answers a request to an entity set, with the work it did attached for the cost model: one record read
/// or written unless the handler counted otherwise (queries and bulk messages do).
pub async fn dispatch(request: &Request, segments: &[Segment]) -> ApiResult<Response> {
    let response = answer(request, segments).await?;
    if response.extensions().get::<Work>().is_some() {
        return Ok(response);
    }
    let work = if request.method == Method::GET { Work::read(1) } else { Work::written(1) };
    Ok(with_work(response, work))
}

async fn answer(request: &Request, segments: &[Segment]) -> ApiResult<Response> {
    let write = {
        let data = request.env.store.read();
        RecordWrite::plan(request, &data, segments)?
    };
    if let Some(write) = write {
        let caller = request.caller;
        let outcome = request.env.store.write(|data, journal| write.apply(data, journal, caller)).await?;
        return write.respond(request, &outcome);
    }
    let first = &segments[0];
    let table = {
        let data = request.env.store.read();
        data.schema.table_by_set(&first.name).cloned().ok_or_else(|| ApiError::segment_not_found(&first.name))?
    };
    match (&first.key, segments.get(1), segments.len()) {
        (None, None, 1) => match request.method {
            Method::GET => query(request, &table),
            _ => Err(ApiError::method_not_allowed(format!(
                "The HTTP method '{}' is not allowed on the collection {}; use GET to query or POST to create.",
                request.method, table.entity_set_name
            ))),
        },
        (None, Some(second), 2) if second.name == "$count" && request.method == Method::GET => count(request, &table),
        (None, Some(second), 2) if second.name.starts_with("Microsoft.Dynamics.CRM.") => {
            super::bulk::execute(request, &table, &second.name).await
        }
        (Some(key), None, 1) => match request.method {
            Method::GET => retrieve(request, &table, key),
            _ => Err(ApiError::method_not_allowed(format!(
                "The HTTP method '{}' is not allowed on a record; use GET, PATCH or DELETE.",
                request.method
            ))),
        },
        (Some(key), Some(property), 2) => property_request(request, &table, key, &property.name),
        _ => Err(ApiError::segment_not_found(&segments.last().expect("non-empty").name)),
    }
}

/// A write of one record: `POST` to a collection, `PATCH` or `DELETE` of a record, `PUT` or `DELETE` of one
/// of its columns. Planned from the request, applied under the store's lock — alone, or with the rest of a
/// `$batch` change set — and answered once the lock is released.
pub struct RecordWrite {
    table: Arc<Table>,
    action: WriteAction,
}

enum WriteAction {
    Create {
        body: Map<String, Json>,
    },
    Upsert {
        key: Key,
        body: Map<String, Json>,
        preconditions: Preconditions,
    },
    Delete {
        key: Key,
        if_match: Option<String>,
    },
    /// `PUT`/`DELETE /contacts(<id>)/<column>`: sets or clears one column of a record that must exist.
    Column {
        key: Key,
        body: Map<String, Json>,
    },
}

impl RecordWrite {
    /// The write a request asks for, or `None` when it is not a single-record write.
    pub fn plan(request: &Request, data: &Data, segments: &[Segment]) -> ApiResult<Option<RecordWrite>> {
        let Some(first) = segments.first() else { return Ok(None) };
        let table =
            data.schema.table_by_set(&first.name).cloned().ok_or_else(|| ApiError::segment_not_found(&first.name))?;
        let action = match (&first.key, segments.get(1), &request.method) {
            (None, None, &Method::POST) => WriteAction::Create { body: request.json_object(&table.entity_set_name)? },
            (Some(key), None, &Method::PATCH) => WriteAction::Upsert {
                key: key.clone(),
                body: request.json_object(&table.entity_set_name)?,
                preconditions: preconditions(request),
            },
            (Some(key), None, &Method::DELETE) => {
                WriteAction::Delete { key: key.clone(), if_match: request.header("if-match").map(str::to_string) }
            }
            (Some(key), Some(property), method)
                if segments.len() == 2 && (method == Method::PUT || method == Method::DELETE) =>
            {
                let property = &property.name;
                let attribute =
                    table.attribute_by_property(property).ok_or_else(|| ApiError::segment_not_found(property))?;
                if attribute.is_lookup() {
                    return Err(ApiError::bad_query(format!(
                        "'{property}' is a lookup: set it with PATCH and '<navigation property>@odata.bind', or clear it with null."
                    )));
                }
                let value = if method == Method::PUT {
                    let body = request.json_object(&table.entity_set_name)?;
                    body.get("value").cloned().ok_or_else(|| {
                        ApiError::payload(
                            &table.entity_set_name,
                            format!("PUT of a single property takes {{\"value\": …}} for '{property}'."),
                        )
                    })?
                } else {
                    Json::Null
                };
                WriteAction::Column {
                    key: key.clone(),
                    body: Map::from_iter([(attribute.logical_name.clone(), value)]),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(RecordWrite { table, action }))
    }

    /// Applies the write; everything is checked before anything changes.
    pub fn apply(&self, data: &mut Data, journal: &mut Vec<Change>, caller: Uuid) -> ApiResult<WriteOutcome> {
        let table = &*self.table;
        let write = |data: &mut Data, journal: &mut Vec<Change>, key, body, kind, preconditions| {
            records::write(data, journal, WriteRequest { table, key, body, kind, preconditions, caller })
        };
        match &self.action {
            WriteAction::Create { body } => {
                write(data, journal, None, body, WriteKind::Create, &Preconditions::default())
            }
            WriteAction::Upsert { key, body, preconditions } => {
                write(data, journal, Some(key), body, WriteKind::Upsert, preconditions)
            }
            WriteAction::Column { key, body } => {
                let must_exist = Preconditions { if_match: Some("*".into()), if_none_match_any: false };
                write(data, journal, Some(key), body, WriteKind::Upsert, &must_exist)
            }
            WriteAction::Delete { key, if_match } => {
                if table.logical_name == activities::POINTER {
                    return Err(activities::pointer_not_writable("Delete"));
                }
                let id = resolve_key(data, table, key)?.ok_or_else(|| not_found(table, key))?;
                let row = data.rows(&table.logical_name).get(&id).expect("resolved");
                if let Some(tag) = if_match
                    && tag != "*"
                    && tag.trim() != etag(row)
                {
                    return Err(ApiError::version_mismatch());
                }
                data.remove_row(journal, &table.logical_name, id);
                Ok(WriteOutcome { id, created: false })
            }
        }
    }

    /// The answer to an applied write.
    pub fn respond(&self, request: &Request, outcome: &WriteOutcome) -> ApiResult<Response> {
        let table = &*self.table;
        match &self.action {
            WriteAction::Create { .. } => {
                write_response(request, table, &Key::Id(outcome.id), outcome.id, StatusCode::CREATED)
            }
            WriteAction::Upsert { key, .. } => {
                let status = if outcome.created { StatusCode::CREATED } else { StatusCode::OK };
                write_response(request, table, key, outcome.id, status)
            }
            WriteAction::Delete { .. } | WriteAction::Column { .. } => Ok(empty_response(StatusCode::NO_CONTENT)),
        }
    }

    /// The URL of the record written, as `$<Content-ID>` stands for in a change set.
    pub fn entity_url(&self, request: &Request, outcome: &WriteOutcome) -> String {
        entity_url(request, &self.table, &Key::Id(outcome.id))
    }
}

fn preconditions(request: &Request) -> Preconditions {
    Preconditions {
        if_match: request.header("if-match").map(str::to_string),
        if_none_match_any: request.header("if-none-match").is_some_and(|v| v.trim() == "*"),
    }
}

fn entity_url(request: &Request, table: &Table, key: &Key) -> String {
    format!("{}/{}({})", request.base, table.entity_set_name, key.to_url())
}

fn not_found(table: &Table, key: &Key) -> ApiError {
    match key {
        Key::Id(id) => ApiError::record_not_found(&table.logical_name, id),
        Key::Named(_) => ApiError::key_not_found(&table.logical_name),
    }
}

/// A row as a response body, with its `@odata.context`.
fn entity_body(request: &Request, table: &Table, id: Uuid, selection: &Selection) -> ApiResult<(Json, String)> {
    let data = request.env.store.read();
    let row =
        data.rows(&table.logical_name).get(&id).ok_or_else(|| ApiError::record_not_found(&table.logical_name, id))?;
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        Json::String(format!(
            "{}/$metadata#{}{}/$entity",
            request.base,
            table.entity_set_name,
            selection.context_suffix(table)
        )),
    );
    body.extend(Projection::new(&data, table, selection, &request.prefer).map(row));
    Ok((Json::Object(body), etag(row)))
}

fn applied_annotations(request: &Request, response: &mut Response) {
    if let Some(a) = &request.prefer.annotations {
        set_header(response, "preference-applied", &format!("odata.include-annotations=\"{a}\""));
    }
}

/// Answers a write: 204 with `OData-EntityId`, or the row with `Prefer: return=representation`.
fn write_response(
    request: &Request,
    table: &Table,
    key: &Key,
    id: Uuid,
    status_with_body: StatusCode,
) -> ApiResult<Response> {
    if request.prefer.return_representation {
        let options = request.options()?;
        let selection = Selection::parse(table, options.select.as_ref())?;
        let (body, tag) = entity_body(request, table, id, &selection)?;
        let mut response = json_response(status_with_body, &body);
        set_header(&mut response, "preference-applied", "return=representation");
        set_header(&mut response, "etag", &tag);
        return Ok(response);
    }
    let mut response = empty_response(StatusCode::NO_CONTENT);
    set_header(&mut response, "odata-entityid", &entity_url(request, table, key));
    Ok(response)
}

fn retrieve(request: &Request, table: &Table, key: &Key) -> ApiResult<Response> {
    let options = request.options()?;
    if options.expand.is_some() {
        return Err(ApiError::bad_query(
            "$expand is not supported by the emulator yet; read the related record by its id.",
        ));
    }
    let selection = Selection::parse(table, options.select.as_ref())?;
    let id = {
        let data = request.env.store.read();
        resolve_key(&data, table, key)?.ok_or_else(|| not_found(table, key))?
    };
    let (body, tag) = entity_body(request, table, id, &selection)?;
    let conditional = request.header("if-none-match").filter(|v| v.starts_with("W/"));
    if conditional == Some(tag.as_str()) && request.prefer.annotations.is_none() {
        return Ok(empty_response(StatusCode::NOT_MODIFIED));
    }
    let mut response = json_response(StatusCode::OK, &body);
    set_header(&mut response, "etag", &tag);
    applied_annotations(request, &mut response);
    Ok(response)
}

/// `GET /contacts(<id>)/<property>`, and `GET` of a single-valued navigation property.
fn property_request(request: &Request, table: &Table, key: &Key, property: &str) -> ApiResult<Response> {
    if request.method != Method::GET {
        return Err(ApiError::method_not_allowed("A single property answers GET, PUT and DELETE."));
    }
    if let Some((attribute, _)) = table.navigation(property) {
        let related = {
            let data = request.env.store.read();
            let id = resolve_key(&data, table, key)?.ok_or_else(|| not_found(table, key))?;
            match data.rows(&table.logical_name).get(&id).and_then(|r| r.get(attribute.logical_name.as_str())) {
                Some(Value::Lookup { id, table: target })
                    if table.navigation(property).is_some_and(|(_, t)| &t.table == target) =>
                {
                    Some((target.clone(), *id))
                }
                _ => None,
            }
        };
        let Some((target, id)) = related else {
            return Ok(empty_response(StatusCode::NO_CONTENT));
        };
        let target_table = request.env.store.read().schema.table(&target).cloned().expect("lookup targets exist");
        let options = request.options()?;
        let selection = Selection::parse(&target_table, options.select.as_ref())?;
        let (body, _) = entity_body(request, &target_table, id, &selection)?;
        return Ok(json_response(StatusCode::OK, &body));
    }
    let attribute = table.attribute_by_property(property).ok_or_else(|| ApiError::segment_not_found(property))?;
    let data = request.env.store.read();
    let id = resolve_key(&data, table, key)?.ok_or_else(|| not_found(table, key))?;
    let row = data.rows(&table.logical_name).get(&id).expect("resolved");
    match row.get(attribute.logical_name.as_str()) {
        None => Ok(empty_response(StatusCode::NO_CONTENT)),
        Some(value) => Ok(json_response(
            StatusCode::OK,
            &json!({
                "@odata.context": format!("{}/$metadata#{}({})/{}", request.base, table.entity_set_name, id, property),
                "value": value.to_json(),
            }),
        )),
    }
}

// ------------------------------------------------------------------------------------------ queries

pub(super) fn page_size(request: &Request) -> ApiResult<Option<usize>> {
    let Some(text) = &request.prefer.max_page_size else {
        return Ok(None);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(Some(n)),
        Ok(n) if n > MAX_PAGE => Err(ApiError::bad_query(format!(
            "You can't request a page size larger than 5,000 (odata.maxpagesize={n})."
        ))),
        _ => Err(ApiError::bad_query(format!(
            "odata.maxpagesize={text} is not a valid page size; use a whole number from 1 to 5000."
        ))),
    }
}

fn query(request: &Request, table: &Table) -> ApiResult<Response> {
    let mut options = request.collection_options()?;
    if request.prefer.track_changes
        && (options.fetch_xml.is_some() || options.saved_query.is_some() || options.sql.is_some())
    {
        return Err(ApiError::bad_query(
            "odata.track-changes goes with OData queries only: leave out the Prefer, or query with $select/$filter.",
        ));
    }
    if let Some(xml) = &options.fetch_xml {
        return fetch_query(request, table, xml);
    }
    if let Some(id) = &options.saved_query {
        return saved_query(request, table, id, &options);
    }
    if let Some(sql) = options.sql.clone() {
        crate::odata::sql::apply(&sql, table, &mut options)?;
    }
    if request.prefer.track_changes || options.deltatoken.is_some() {
        return super::changes::query(request, table, &options);
    }
    if options.expand.is_some() {
        return Err(ApiError::bad_query(
            "$expand is not supported by the emulator yet; query the related table by its lookup column.",
        ));
    }
    let selection = Selection::parse(table, options.select.as_ref())?;
    let predicate = options.filter.as_ref().map(|f| Predicate::bind(f, table)).transpose()?;
    let order = Order::parse(table, &options)?;
    let requested_page = page_size(request)?;
    // `$top` is ignored when a page size is asked for, as Dataverse documents.
    let top = if requested_page.is_some() { None } else { options.top };
    let limit = requested_page.unwrap_or(MAX_PAGE).min(top.unwrap_or(usize::MAX));
    let sort_columns: Vec<String> = order.columns.iter().map(|(c, _)| c.clone()).collect();
    let cursor = options
        .skiptoken
        .as_deref()
        .map(|t| Cursor::from_skiptoken(t, &table.primary_id, &sort_columns))
        .transpose()?;

    let data = request.env.store.read();
    let rows = data.rows(&table.logical_name);
    let (page_rows, more) = page(rows, table, predicate.as_ref(), &order, cursor.as_ref(), limit);
    let more = more && top.is_none_or(|t| t > limit);

    let mut head = Map::new();
    head.insert(
        "@odata.context".into(),
        Json::String(format!(
            "{}/$metadata#{}{}",
            request.base,
            table.entity_set_name,
            selection.context_suffix(table)
        )),
    );
    let total = if options.count || request.prefer.includes("Microsoft.Dynamics.CRM.totalrecordcount") {
        Some(rows.values().filter(|r| predicate.as_ref().is_none_or(|p| p.matches(r))).count())
    } else {
        None
    };
    if options.count {
        head.insert("@odata.count".into(), json!(total.unwrap_or_default().min(MAX_PAGE)));
    }
    if request.prefer.includes("Microsoft.Dynamics.CRM.totalrecordcount") {
        let count = if options.count { total.unwrap_or_default() as i64 } else { -1 };
        head.insert("@Microsoft.Dynamics.CRM.totalrecordcount".into(), json!(count.min(MAX_PAGE as i64)));
        head.insert(
            "@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded".into(),
            json!(total.unwrap_or_default() > MAX_PAGE),
        );
    }
    let projection = Projection::new(&data, table, &selection, &request.prefer);
    let values: Vec<_> = page_rows.iter().map(|(_, row)| projection.row(row)).collect();
    let returned = values.len();
    let mut tail = Map::new();
    if more {
        let (last_id, last_row) = *page_rows.last().expect("a page with more after it has rows");
        let next = Cursor {
            page: cursor.as_ref().map_or(1, |c| c.page + 1),
            sort_values: order
                .columns
                .iter()
                .map(|(c, _)| (c.clone(), last_row.get(c.as_str()).map(Value::to_text)))
                .collect(),
            last_id,
            first_id: page_rows[0].0,
        };
        let link = format!(
            "{}/{}?{}",
            request.base,
            table.entity_set_name,
            options.next_query(&next.to_skiptoken(&table.primary_id))
        );
        tail.insert("@odata.nextLink".into(), Json::String(link));
    }
    let response = collection_response(&head, &values, &tail);
    drop(data);
    let response = with_work(response, Work::read(returned));
    Ok(preferences_applied(request, response, requested_page))
}

/// `GET /accounts?fetchXml=…`: answered by [`fetchxml`], written as any other query.
fn fetch_query(request: &Request, table: &Table, xml: &str) -> ApiResult<Response> {
    let fetch = fetchxml::parse(xml)?;
    let answer = {
        let data = request.env.store.read();
        fetchxml::execute(&data, table, &fetch, &request.prefer, &request.base)?
    };
    let response = with_work(json_response(StatusCode::OK, &answer.body), Work::read(answer.returned));
    Ok(preferences_applied(request, response, None))
}

/// `GET /contacts?savedQuery=<savedqueryid>`: runs the system view's FetchXML as [`fetch_query`] would, paged by
/// `Prefer: odata.maxpagesize` (or the view's own `count`, else 5,000 rows) with an `@odata.nextLink` that keeps
/// `savedQuery` and carries the paging cookie in `$skiptoken`, as Dataverse pages a view.
fn saved_query(request: &Request, table: &Table, id_text: &str, options: &QueryOptions) -> ApiResult<Response> {
    let id = crate::value::parse_guid(id_text.trim().trim_matches(['{', '}'])).ok_or_else(|| {
        ApiError::bad_query(format!(
            "savedQuery='{id_text}' is not a view id: savedQuery takes the savedqueryid (a GUID) of a system view, as \
             GET savedqueries?$select=name,savedqueryid&$filter=returnedtypecode eq '{}' lists them.",
            table.logical_name
        ))
    })?;
    let requested_page = page_size(request)?;
    let answer = {
        let data = request.env.store.read();
        let view = data.rows("savedquery").get(&id).ok_or_else(|| ApiError::record_not_found("savedquery", id))?;
        let text = |column: &str| match view.get(column) {
            Some(Value::Text(t)) => Some(t.clone()),
            _ => None,
        };
        let name = text("name").unwrap_or_default();
        let returns = text("returnedtypecode").unwrap_or_default();
        if returns != table.logical_name {
            let set = data
                .schema
                .table(&returns)
                .map_or_else(|| "<its entity set>".to_string(), |t| t.entity_set_name.clone());
            return Err(ApiError::invalid_argument(format!(
                "The view '{name}' ({id}) returns '{returns}' rows, but it was run on the entity set '{}' of '{}': run \
                 it with GET {set}?savedQuery={id}, or pick a view of '{}' from savedqueries.",
                table.entity_set_name, table.logical_name, table.logical_name
            )));
        }
        let xml = text("fetchxml").ok_or_else(|| {
            ApiError::invalid_argument(format!(
                "The view '{name}' ({id}) has no fetchxml to run: give it one, or run another view of '{returns}'."
            ))
        })?;
        let mut fetch = fetchxml::parse(&xml)?;
        if let Some(n) = requested_page
            && fetch.top.is_none()
        {
            fetch.count = Some(n);
        }
        if let Some(token) = &options.skiptoken {
            let (page_number, cookie) = Cursor::skiptoken_parts(token)?;
            fetch.page = Some(page_number);
            fetch.paging_cookie = Some(cookie);
        }
        fetchxml::execute(&data, table, &fetch, &request.prefer, &request.base)?
    };
    let mut body = answer.body;
    if let Json::Object(map) = &mut body {
        if !request.prefer.includes("Microsoft.Dynamics.CRM.fetchxmlpagingcookie") {
            map.remove("@Microsoft.Dynamics.CRM.fetchxmlpagingcookie");
        }
        if let Some(next) = &answer.next {
            let link = format!(
                "{}/{}?{}",
                request.base,
                table.entity_set_name,
                options.next_query(&next.to_skiptoken(&table.primary_id))
            );
            map.insert("@odata.nextLink".into(), Json::String(link));
        }
    }
    let response = with_work(json_response(StatusCode::OK, &body), Work::read(answer.returned));
    Ok(preferences_applied(request, response, requested_page))
}

fn preferences_applied(request: &Request, mut response: Response, requested_page: Option<usize>) -> Response {
    let mut applied = Vec::new();
    if let Some(n) = requested_page {
        applied.push(format!("odata.maxpagesize={n}"));
    }
    if let Some(a) = &request.prefer.annotations {
        applied.push(format!("odata.include-annotations=\"{a}\""));
    }
    if !applied.is_empty() {
        set_header(&mut response, "preference-applied", &applied.join(","));
    }
    response
}

fn count(request: &Request, table: &Table) -> ApiResult<Response> {
    let options = request.options()?;
    let predicate = options.filter.as_ref().map(|f| Predicate::bind(f, table)).transpose()?;
    let n = {
        let data = request.env.store.read();
        data.rows(&table.logical_name).values().filter(|r| predicate.as_ref().is_none_or(|p| p.matches(r))).count()
    };
    let mut response = axum::response::IntoResponse::into_response(n.min(MAX_PAGE).to_string());
    set_header(&mut response, "content-type", "text/plain");
    Ok(response)
}
