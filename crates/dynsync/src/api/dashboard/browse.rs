//! Browsing what dynsync reads and writes, as Flow Service's source workflow explores before it loads: a
//! connection's tables and views, a table's columns as a dataset would type them with a preview of its rows, and a
//! dataset's rows as the flow wrote them (the newest of each record). Each page reads a bounded number of rows:
//! [`PREVIEW_ROWS`] of a table, [`DATASET_ROWS`] of a dataset.

use super::session::Viewer;
use super::{Nav, page, problem_page, shown_time};
use crate::api::{ApiError, AppState};
use crate::dataset::Value;
use crate::ids::{ConnectionId, TargetConnectionId};
use crate::ingestion::explore;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value as Json;
use std::sync::Arc;

/// Rows a table's preview shows.
pub const PREVIEW_ROWS: u32 = 10;

/// Rows a dataset's page shows.
pub const DATASET_ROWS: usize = 50;

/// A table or view of an environment.
pub struct TableEntry {
    pub name: String,
    pub logical: String,
    pub tracked: &'static str,
}

#[derive(Template)]
#[template(path = "tables.html")]
struct TablesPage {
    nav: Option<Nav>,
    connection: String,
    connection_name: String,
    tables: Vec<TableEntry>,
}

async fn client(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
) -> Result<(ConnectionId, String, dataverse::Client), ApiError> {
    let not_found = || ApiError::not_found("connection", id, &viewer.caller.sandbox);
    let parsed: ConnectionId = id.parse().map_err(|_| not_found())?;
    let connection = state.store.connection(&viewer.caller.sandbox, parsed).await?.ok_or_else(not_found)?;
    let client = state.clients.client(&connection).ok_or_else(|| {
        ApiError::bad_request(format!(
            "connection {id} does not reach a Dynamics environment: check its environment URL"
        ))
    })?;
    Ok((parsed, connection.name, client))
}

fn unreachable(what: &str, e: dataverse::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "metadata-unavailable",
        format!("{what} cannot be read from Dynamics now: {e}"),
    )
}

pub async fn tables(State(state): State<Arc<AppState>>, viewer: Viewer, Path(id): Path<String>) -> Response {
    let listed = async {
        let (id, name, client) = client(&state, &viewer, &id).await?;
        let mut tables: Vec<TableEntry> = client
            .tables()
            .await
            .map_err(|e| unreachable("the list of tables", e))?
            .into_iter()
            .map(|t| TableEntry {
                name: t.display_name.unwrap_or_else(|| t.logical_name.clone()),
                logical: t.logical_name,
                tracked: if t.change_tracking { "yes" } else { "no" },
            })
            .collect();
        tables.sort_by_key(|t| t.name.to_lowercase());
        Ok::<_, ApiError>(TablesPage {
            nav: Nav::new("connections", &viewer),
            connection: id.to_string(),
            connection_name: name,
            tables,
        })
    };
    match listed.await {
        Ok(template) => page(StatusCode::OK, &template),
        Err(e) => problem_page(&viewer, e),
    }
}

/// A column, as the table's page shows it.
pub struct ColumnEntry {
    pub name: String,
    pub kind: &'static str,
    pub original: String,
}

#[derive(Template)]
#[template(path = "table.html")]
struct TablePage {
    nav: Option<Nav>,
    connection: String,
    connection_name: String,
    table: String,
    columns: Vec<ColumnEntry>,
    not_loadable: Vec<String>,
    /// The preview, one row of cells a line, in the columns' order.
    rows: Vec<Vec<String>>,
    preview_problem: Option<String>,
    may_manage: bool,
    frequencies: &'static [(&'static str, &'static str)],
    /// The load form, as typed, and why it was not taken.
    load: LoadForm,
    load_problem: Option<String>,
}

/// The form that loads a table into a dataset, as typed.
pub struct LoadForm {
    pub name: String,
    pub dataset: String,
    pub frequency: String,
    pub interval: String,
}

/// The schedules the load form offers: Flow Service's frequencies, and dynsync's continuous.
pub const FREQUENCIES: [(&str, &str); 6] = [
    ("once", "once"),
    ("continuous", "continuously (every few seconds)"),
    ("minute", "every N minutes (15 or more)"),
    ("hour", "every N hours"),
    ("day", "every N days"),
    ("week", "every N weeks"),
];

/// A value as a cell shows it.
fn cell(value: &Json) -> String {
    match value {
        Json::Null => String::new(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn table(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path((id, table)): Path<(String, String)>,
) -> Response {
    let load = LoadForm {
        name: format!("{table} into a dataset"),
        dataset: table.clone(),
        frequency: "hour".into(),
        interval: "1".into(),
    };
    table_page(&state, &viewer, &id, &table, load, None).await
}

async fn table_page(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    table: &str,
    load: LoadForm,
    load_problem: Option<String>,
) -> Response {
    let shown = async {
        let (id, name, client) = client(state, viewer, id).await?;
        let definition = client.table(table).await.map_err(|e| unreachable(&format!("table {table}"), e))?;
        let columns = explore::columns(&definition, None);
        let (rows, preview_problem) = match explore::preview(&client, &definition, None, PREVIEW_ROWS).await {
            Ok(rows) => (
                rows.iter()
                    .map(|row| columns.columns.iter().map(|c| row.get(&c.name).map(cell).unwrap_or_default()).collect())
                    .collect(),
                None,
            ),
            Err(e) => (Vec::new(), Some(format!("the preview cannot be read now: {e}"))),
        };
        Ok::<_, ApiError>(TablePage {
            nav: Nav::new("connections", viewer),
            connection: id.to_string(),
            connection_name: name,
            table: definition.logical_name.clone(),
            columns: columns
                .columns
                .iter()
                .map(|c| ColumnEntry { name: c.name.clone(), kind: c.kind, original: c.meta.original_type.clone() })
                .collect(),
            not_loadable: columns.not_loadable,
            rows,
            preview_problem,
            may_manage: viewer.may(crate::access::Role::Manage),
            frequencies: &FREQUENCIES,
            load,
            load_problem,
        })
    };
    match shown.await {
        Ok(template) => page(StatusCode::OK, &template),
        Err(e) => problem_page(viewer, e),
    }
}

/// `POST /connections/{id}/tables/{table}/load`: the table loaded into a new Parquet dataset on a schedule, as
/// Flow Service's source workflow ends — a source, a dataset and a flow made through the API's own functions, and
/// none of them kept when the flow is refused.
pub async fn load(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path((id, table)): Path<(String, String)>,
    axum::extract::RawForm(body): axum::extract::RawForm,
) -> Response {
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.trim().to_string())).collect();
    let get = |name: &str| form.get(name).cloned().unwrap_or_default();
    let typed =
        LoadForm { name: get("name"), dataset: get("dataset"), frequency: get("frequency"), interval: get("interval") };
    match made_load(&state, &viewer, &id, &table, &typed).await {
        Ok(flow) => axum::response::Redirect::to(&format!("/flows/{flow}?done=loading")).into_response(),
        Err(e) => table_page(&state, &viewer, &id, &table, typed, Some(e.detail)).await,
    }
}

async fn made_load(
    state: &AppState,
    viewer: &Viewer,
    connection: &str,
    table: &str,
    form: &LoadForm,
) -> Result<crate::ids::FlowId, ApiError> {
    use crate::api::ingestion::{
        CreateDataset, CreateSource, create_dataset, create_ingestion, create_source_connection,
    };
    let caller = &viewer.caller;
    let interval = match form.frequency.as_str() {
        "once" => None,
        _ => Some(serde_json::Value::String(form.interval.clone())),
    };
    let schedule = crate::ingestion::schedule::ScheduleParams {
        start_time: None,
        frequency: Some(form.frequency.clone()),
        interval,
    };
    // What can be checked before anything is made, is.
    crate::ingestion::schedule::Schedule::from_params(Some(&schedule), chrono::Utc::now()).map_err(|problems| {
        let listed: Vec<String> = problems.into_iter().map(|(field, message)| format!("{field}: {message}")).collect();
        ApiError::bad_request(listed.join("; "))
    })?;
    let source =
        create_source_connection(state, caller, CreateSource::table(connection.to_string(), table.to_string())).await?;
    let dataset = match create_dataset(state, caller, CreateDataset::parquet(form.dataset.clone())).await {
        Ok(dataset) => dataset,
        Err(e) => {
            let _ = state.store.delete_source_connection(&caller.sandbox, source.id).await;
            return Err(e);
        }
    };
    let request = crate::ingestion::definition::FlowRequest {
        name: Some(form.name.clone()),
        description: String::new(),
        source_connection_ids: vec![source.id.to_string()],
        target_connection_ids: vec![dataset.id.to_string()],
        transformations: Vec::new(),
        schedule_params: Some(schedule),
    };
    match create_ingestion(state, caller, request).await {
        Ok(flow) => Ok(flow.id),
        Err(e) => {
            // Neither is kept for a flow that was refused: the form is sent again, and makes them again.
            let _ = state.store.delete_dataset_target(&caller.sandbox, dataset.id).await;
            let _ = state.store.delete_source_connection(&caller.sandbox, source.id).await;
            Err(e)
        }
    }
}

/// A dataset row, as its page shows it.
pub struct DatasetRowView {
    pub id: String,
    pub operation: &'static str,
    pub version: String,
    pub synced_at: String,
    pub cells: Vec<String>,
}

#[derive(Template)]
#[template(path = "dataset.html")]
struct DatasetPage {
    nav: Option<Nav>,
    name: String,
    dataset: String,
    columns: Vec<String>,
    rows: Vec<DatasetRowView>,
}

pub async fn dataset(State(state): State<Arc<AppState>>, viewer: Viewer, Path(id): Path<String>) -> Response {
    let shown = async {
        let not_found = || ApiError::not_found("dataset target", &id, &viewer.caller.sandbox);
        let parsed: TargetConnectionId = id.parse().map_err(|_| not_found())?;
        let target = state.store.dataset_target(&viewer.caller.sandbox, parsed).await?.ok_or_else(not_found)?;
        let unavailable = |e: String| ApiError::new(StatusCode::BAD_GATEWAY, "dataset-unavailable", e);
        let destination = state
            .datasets
            .open(&target, &state.data_dir, &state.store)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let (schema, rows) = match destination.rows(&target.dataset, 1, DATASET_ROWS).await {
            Ok(read) => read,
            // Nothing loaded yet is an empty dataset, not an error.
            Err(crate::dataset::DatasetError::NoGeneration { .. }) => Default::default(),
            Err(e) => return Err(unavailable(e.to_string())),
        };
        let rows = rows
            .iter()
            .map(|row| DatasetRowView {
                id: row.id.to_string(),
                operation: row.operation.as_str(),
                version: row.version.map(|v| v.to_string()).unwrap_or_default(),
                synced_at: shown_time(row.synced_at),
                cells: schema
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| cell(&explore::value_json(row.values.get(i).unwrap_or(&Value::Null), Some(c.kind))))
                    .collect(),
            })
            .collect();
        Ok::<_, ApiError>(DatasetPage {
            nav: Nav::new("connections", &viewer),
            name: target.name.clone(),
            dataset: target.dataset.to_string(),
            columns: schema.columns.iter().map(|c| c.name.clone()).collect(),
            rows,
        })
    };
    match shown.await {
        Ok(template) => page(StatusCode::OK, &template),
        Err(e) => problem_page(&viewer, e),
    }
}

/// A column of a contact, as the flow writes it.
pub struct ContactValue {
    /// What the flow writes there: `audience 'Gold'`, or the profile attribute.
    pub from: String,
    pub column: String,
    pub value: String,
}

#[derive(Template)]
#[template(path = "contact.html")]
struct ContactPage {
    nav: Option<Nav>,
    flow: String,
    flow_name: String,
    contact: String,
    values: Vec<ContactValue>,
    problem: Option<String>,
}

#[derive(serde::Deserialize)]
pub struct ContactQuery {
    id: Option<String>,
}

/// `GET /flows/{id}/contact?id=<contact id>`: a contact's activation data — what the activation flow writes onto
/// it (each audience's status column and each mapped attribute), as Dynamics holds it now.
pub async fn contact(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<ContactQuery>,
) -> Response {
    let shown = async {
        let not_found = || ApiError::not_found("activation flow", &id, &viewer.caller.sandbox);
        let flow: crate::activation::ActivationFlow = super::flow_of(&state, &viewer, &id, "activation flow").await?;
        let contact_text = query.id.unwrap_or_default();
        let mut page = ContactPage {
            nav: Nav::new("flows", &viewer),
            flow: id.clone(),
            flow_name: flow.definition.name.clone(),
            contact: contact_text.trim().to_string(),
            values: Vec::new(),
            problem: None,
        };
        if page.contact.is_empty() {
            return Ok(page);
        }
        let Ok(contact) = page.contact.parse::<uuid::Uuid>() else {
            page.problem =
                Some(format!("'{}' is not a contact id: give the contact's GUID (its contactid)", page.contact));
            return Ok(page);
        };
        let target_id = flow.definition.target_connection_id().ok_or_else(not_found)?;
        let gone = || ApiError::bad_request("the flow's destination is gone: the contact cannot be read through it");
        let target = state.store.target_connection(&viewer.caller.sandbox, target_id).await?.ok_or_else(gone)?;
        let connection = state.store.connection(&viewer.caller.sandbox, target.base_connection_id).await?;
        let client = connection.as_ref().and_then(|c| state.clients.client(c)).ok_or_else(gone)?;
        let mut wanted: Vec<(String, String)> =
            flow.definition.audiences.iter().map(|a| (a.label(), a.column(&target.customization_prefix))).collect();
        wanted.extend(
            flow.definition.mappings.iter().filter(|m| !m.is_identity()).map(|m| (m.source.clone(), m.target.clone())),
        );
        let select: Vec<&str> = wanted.iter().map(|(_, column)| column.as_str()).collect();
        match client.retrieve(&dataverse::Table::contact(), contact, &select).await {
            Ok(found) => {
                page.values = wanted
                    .into_iter()
                    .map(|(from, column)| ContactValue {
                        value: found.get(&column).map(cell).unwrap_or_default(),
                        from,
                        column,
                    })
                    .collect();
            }
            Err(e) if e.kind() == dataverse::ErrorKind::NotFound => {
                page.problem = Some(format!("Dynamics has no contact {contact}: check the id"));
            }
            Err(e) => page.problem = Some(format!("the contact cannot be read from Dynamics now: {e}")),
        }
        Ok::<_, ApiError>(page)
    };
    match shown.await {
        Ok(template) => page(StatusCode::OK, &template),
        Err(e) => problem_page(&viewer, e),
    }
}
