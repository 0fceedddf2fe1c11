//! Table ingestion's part of the API, in Flow Service's shape (seed 003): `connections/{id}/explore`,
//! `sourceConnections`, dataset `targetConnections` (the data lake's connection spec), ingestion `flows` (the
//! CRM-to-dataset flow spec), their runs — one per load — and a quick look at a dataset's rows.

use super::timeline::Changed;
use super::{ApiError, ApiResult, AppState, Caller, flow_json, id_and_etag, items, parse_body};
use crate::access::Role;
use crate::dataset::DatasetName;
use crate::dataset::target::{DatasetFormat, DatasetTarget};
use crate::ids::{ConnectionId, Etag, FlowId, SourceConnectionId, TargetConnectionId};
use crate::ingestion::definition::FlowRequest;
use crate::ingestion::explore::{self, ExploredObject, ExploredSchema};
use crate::ingestion::job::open_destination;
use crate::ingestion::shape::TableShape;
use crate::ingestion::{IngestionFlow, job};
use crate::secrets::Secret;
use crate::source::{SourceConnection, SourceObject};
use crate::specs;
use crate::store::{ChangeAction, ResourceKind};
use crate::store::{FlowRecord, Load};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use std::sync::Arc;

/// The client of a Dynamics connection of the caller's sandbox.
async fn client_of(state: &AppState, caller: &Caller, id: ConnectionId) -> ApiResult<dataverse::Client> {
    let connection = state
        .store
        .connection(&caller.sandbox, id)
        .await?
        .ok_or_else(|| ApiError::not_found("connection", &id.to_string(), &caller.sandbox))?;
    state.clients.client(&connection).ok_or_else(|| {
        ApiError::bad_request(format!(
            "connection {id} does not reach a Dynamics environment: check its serviceUri (PATCH /connections/{id})"
        ))
    })
}

fn unreachable_metadata(what: &str, e: dataverse::Error) -> ApiError {
    let status =
        if e.kind() == dataverse::ErrorKind::NotFound { StatusCode::NOT_FOUND } else { StatusCode::BAD_GATEWAY };
    ApiError::new(status, "metadata-unavailable", format!("{what} cannot be read from Dynamics: {e}"))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExploreQuery {
    object_type: Option<String>,
    object: Option<String>,
    #[serde(default)]
    preview: bool,
    preview_count: Option<u32>,
}

/// `GET /connections/{id}/explore`.
pub async fn explore(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<ExploreQuery>,
) -> ApiResult<Response> {
    let id: ConnectionId = id.parse().map_err(|_| ApiError::not_found("connection", &id, &caller.sandbox))?;
    let client = client_of(&state, &caller, id).await?;
    let kind = query.object_type.as_deref().unwrap_or("root");
    match (kind, query.object.as_deref()) {
        ("root", _) => {
            let tables = client.tables().await.map_err(|e| unreachable_metadata("the list of tables", e))?;
            // Views of tables that are not listed (private ones) are left out with them.
            let views = client.system_views(None).await.map_err(|e| unreachable_metadata("the system views", e))?;
            let mut objects: Vec<ExploredObject> = tables
                .iter()
                .map(|t| ExploredObject {
                    kind: "table",
                    name: t.display_name.clone().unwrap_or_else(|| t.logical_name.clone()),
                    path: t.logical_name.clone(),
                    can_preview: true,
                    can_fetch_schema: true,
                    table: None,
                    change_tracking: Some(t.change_tracking),
                })
                .collect();
            objects.extend(views.iter().filter(|v| tables.iter().any(|t| t.logical_name == v.table)).map(|v| {
                ExploredObject {
                    kind: "view",
                    name: v.name.clone(),
                    path: v.name.clone(),
                    can_preview: true,
                    can_fetch_schema: true,
                    table: Some(v.table.clone()),
                    change_tracking: None,
                }
            }));
            Ok(axum::Json(objects).into_response())
        }
        ("table", Some(object)) => {
            let table = client.table(object).await.map_err(|e| unreachable_metadata(&format!("table {object}"), e))?;
            let data = match query.preview {
                true => Some(
                    explore::preview(&client, &table, None, preview_count(&query)?)
                        .await
                        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "preview-unavailable", e))?,
                ),
                false => None,
            };
            let answer = ExploredSchema { format: "flat", schema: explore::columns(&table, None), data };
            Ok(axum::Json(answer).into_response())
        }
        ("view", Some(object)) => {
            let view = find_view(&client, object).await?;
            let table = client
                .table(&view.table)
                .await
                .map_err(|e| unreachable_metadata(&format!("table {}", view.table), e))?;
            let columns = view.columns();
            // The preview reads the view's columns that hold data; the schema names the others as not loadable.
            let loadable: Vec<String> = columns
                .iter()
                .filter(|c| table.column(c).is_some_and(crate::ingestion::shape::loadable))
                .cloned()
                .collect();
            let data = match query.preview {
                true => Some(
                    explore::preview(&client, &table, Some(&loadable), preview_count(&query)?)
                        .await
                        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "preview-unavailable", e))?,
                ),
                false => None,
            };
            let answer = ExploredSchema { format: "flat", schema: explore::columns(&table, Some(&columns)), data };
            Ok(axum::Json(answer).into_response())
        }
        ("table" | "view", None) => Err(ApiError::bad_request(format!(
            "objectType={kind} needs object=<name>: GET …/explore?objectType=root lists them"
        ))),
        (other, _) => Err(ApiError::bad_request(format!(
            "objectType={other} is not something to explore: use root, table or view"
        ))),
    }
}

fn preview_count(query: &ExploreQuery) -> ApiResult<u32> {
    match query.preview_count.unwrap_or(explore::DEFAULT_PREVIEW) {
        n @ 1..=explore::MAX_PREVIEW => Ok(n),
        n => Err(ApiError::bad_request(format!(
            "previewCount={n}: a preview shows 1 to {} rows; load the table to see more",
            explore::MAX_PREVIEW
        ))),
    }
}

async fn find_view(client: &dataverse::Client, name: &str) -> ApiResult<dataverse::SystemView> {
    let views = client.system_views(None).await.map_err(|e| unreachable_metadata("the system views", e))?;
    let mut found = views.into_iter().filter(|v| v.name == name || v.id.eq_ignore_ascii_case(name));
    match (found.next(), found.next()) {
        (Some(view), None) => Ok(view),
        (Some(a), Some(b)) => Err(ApiError::bad_request(format!(
            "two views are called '{name}' (of {} and of {}): name the view by its id ({} or {})",
            a.table, b.table, a.id, b.id
        ))),
        (None, _) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("there is no system view '{name}': GET …/explore?objectType=root lists them"),
        )),
    }
}

// ------------------------------------------------------------------------------------------- source connections

/// `POST /sourceConnections`'s body, and what the dashboard's load form makes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSource {
    name: Option<String>,
    #[serde(default)]
    description: String,
    base_connection_id: String,
    #[serde(default)]
    params: SourceParams,
    #[serde(default, rename = "data")]
    _data: Option<Json>,
    #[serde(default, rename = "connectionSpec")]
    _connection_spec: Option<Json>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SourceParams {
    table_name: Option<String>,
    primary_key: Option<String>,
    entity_type: Option<String>,
}

impl CreateSource {
    /// The table `table` of the connection `base_connection_id`, by its primary key.
    pub fn table(base_connection_id: String, table: String) -> CreateSource {
        CreateSource {
            name: None,
            description: String::new(),
            base_connection_id,
            params: SourceParams { table_name: Some(table), primary_key: None, entity_type: None },
            _data: None,
            _connection_spec: None,
        }
    }
}

/// `POST /sourceConnections`: which table (or view) of a Dynamics connection to read. The table is checked now.
pub async fn create_source(State(state): State<Arc<AppState>>, caller: Caller, body: Bytes) -> ApiResult<Response> {
    let source = create_source_connection(&state, &caller, parse_body(&body)?).await?;
    Ok(id_and_etag(StatusCode::CREATED, source.id, &source.etag))
}

/// Makes a source connection, its table or view checked now.
pub async fn create_source_connection(
    state: &AppState,
    caller: &Caller,
    request: CreateSource,
) -> ApiResult<SourceConnection> {
    caller.may(Role::Manage)?;
    let base: ConnectionId = request.base_connection_id.parse().map_err(|_| {
        ApiError::bad_request(format!("baseConnectionId {} is not a connection id", request.base_connection_id))
    })?;
    let client = client_of(state, caller, base).await?;
    let name = request.params.table_name.as_deref().map(str::trim).filter(|n| !n.is_empty()).ok_or_else(|| {
        ApiError::bad_request("params.tableName is missing: name the table (contact) or view to read")
    })?;
    let object = match request.params.entity_type.as_deref().unwrap_or("table") {
        "table" => {
            let table = client
                .table(&name.to_ascii_lowercase())
                .await
                .map_err(|e| unreachable_metadata(&format!("table {name} (params.tableName)"), e))?;
            let primary_key = request.params.primary_key.clone().unwrap_or_else(|| table.primary_id.clone());
            // The same check a flow makes: the key is a column of the table.
            TableShape::new(&table, &primary_key, &[], "params")
                .map_err(|problems| ApiError::bad_request(format!("params.primaryKey: {}", problems[0].message)))?;
            SourceObject::Table { table: table.logical_name.clone(), primary_key }
        }
        "view" => {
            let view = find_view(&client, name).await?;
            let table = client
                .table(&view.table)
                .await
                .map_err(|e| unreachable_metadata(&format!("table {}", view.table), e))?;
            let view_id = view.id.parse().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "metadata-unavailable",
                    format!("view '{}' has no usable id ({})", view.name, view.id),
                )
            })?;
            SourceObject::View { view: view.name, view_id, table: view.table, primary_key: table.primary_id.clone() }
        }
        other => {
            return Err(ApiError::bad_request(format!("params.entityType={other}: a source reads a table or a view")));
        }
    };
    let now = Utc::now();
    let source = SourceConnection {
        id: SourceConnectionId::new(),
        sandbox: caller.sandbox.clone(),
        name: request.name.unwrap_or_else(|| format!("{name} from Dynamics")),
        description: request.description,
        base_connection_id: base,
        object,
        etag: Etag::new(),
        created_at: now,
        updated_at: now,
    };
    state.store.insert_source_connection(&source).await?;
    let what = Changed { kind: ResourceKind::SourceConnection, id: source.id.0, name: &source.name };
    caller.made(state, what, ChangeAction::Created).await;
    Ok(source)
}

fn source_json(s: &SourceConnection) -> Json {
    let params = match &s.object {
        SourceObject::Table { table, primary_key } => json!({"tableName": table, "primaryKey": primary_key}),
        SourceObject::View { view, view_id, table, primary_key } => {
            json!({"tableName": view, "entityType": "view", "viewId": view_id, "table": table, "primaryKey": primary_key})
        }
    };
    json!({
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "baseConnectionId": s.base_connection_id,
        "connectionSpec": {"id": specs::DYNAMICS_SOURCE, "version": "1.0"},
        "data": {"format": "tabular"},
        "params": params,
        "state": "enabled",
        "sandboxName": s.sandbox,
        "etag": s.etag,
        "createdAt": s.created_at.timestamp_millis(),
        "updatedAt": s.updated_at.timestamp_millis(),
    })
}

fn parse_source_id(id: &str, caller: &Caller) -> ApiResult<SourceConnectionId> {
    id.parse().map_err(|_| ApiError::not_found("source connection", id, &caller.sandbox))
}

pub async fn list_sources(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Response> {
    let all = state.store.source_connections(&caller.sandbox).await?;
    Ok(items(all.iter().map(source_json).collect()))
}

pub async fn get_source(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let found = state.store.source_connection(&caller.sandbox, parse_source_id(&id, &caller)?).await?;
    let s = found.ok_or_else(|| ApiError::not_found("source connection", &id, &caller.sandbox))?;
    Ok(items(vec![source_json(&s)]))
}

pub async fn delete_source(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.may(Role::Manage)?;
    let parsed = parse_source_id(&id, &caller)?;
    let Some(current) = state.store.source_connection(&caller.sandbox, parsed).await? else {
        return Err(ApiError::not_found("source connection", &id, &caller.sandbox));
    };
    let users = ingestion_flows(&state, &caller).await?;
    let users: Vec<String> =
        users.iter().filter(|f| f.definition.source_connection_id == parsed).map(|f| f.id.to_string()).collect();
    if !users.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "in-use",
            format!("source connection {id} is read by flow {}: delete the flows first", users.join(", ")),
        ));
    }
    state.store.delete_source_connection(&caller.sandbox, parsed).await?;
    let what = Changed { kind: ResourceKind::SourceConnection, id: parsed.0, name: &current.name };
    caller.made(&state, what, ChangeAction::Deleted).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn ingestion_flows(state: &AppState, caller: &Caller) -> ApiResult<Vec<IngestionFlow>> {
    let records = state.store.flows(&caller.sandbox).await?;
    Ok(records.iter().filter(|r| r.job == job::JOB).map(IngestionFlow::try_from).collect::<Result<_, _>>()?)
}

// ---------------------------------------------------------------------------------------------- dataset targets

/// `POST /targetConnections`'s body for a dataset, and what the dashboard's load form makes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateDataset {
    name: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    params: DatasetParams,
    #[serde(default, rename = "data")]
    _data: Option<Json>,
    #[serde(default, rename = "connectionSpec")]
    _connection_spec: Option<Json>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DatasetParams {
    data_set_id: Option<String>,
    format: Option<String>,
    /// `postgres`: the database's URL.
    connection_string: Option<String>,
    /// `azureBlob`: the storage account, its container, and the account key (or none: the environment's).
    account: Option<String>,
    container: Option<String>,
    access_key: Option<String>,
    /// `s3`: the bucket, its region, the key id and secret key (or none: the environment's).
    bucket: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    /// `azureBlob`, `s3`: a folder in the container or bucket, and the service's address when it is not the
    /// public cloud's (Azurite, an S3-compatible store).
    folder_path: Option<String>,
    endpoint: Option<String>,
    /// `webhook`: the marketing tool's URL, and the secret its signatures are checked with.
    url: Option<String>,
    signing_secret: Option<String>,
}

/// The shortest signing secret a webhook dataset takes: 16 characters, so that signatures cannot be forged by
/// guessing it.
pub const MIN_SIGNING_SECRET: usize = 16;

impl DatasetParams {
    /// Where the dataset is kept, and its secret; every problem is added to `problems`.
    fn format(
        &self,
        hosts: &crate::hosts::AllowedHosts,
        problems: &mut Vec<String>,
    ) -> Option<(DatasetFormat, Option<Secret>)> {
        let mut required = |name: &str, value: &Option<String>, what: &str| -> String {
            match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                Some(v) => v.to_string(),
                None => {
                    problems.push(format!("params.{name} is missing: {what}"));
                    String::new()
                }
            }
        };
        let format = self.format.as_deref().unwrap_or("parquet");
        let (found, secret, allowed) = match format {
            "parquet" => (DatasetFormat::Parquet, None, &[][..]),
            "postgres" => {
                let url = required(
                    "connectionString",
                    &self.connection_string,
                    "a postgres dataset needs the database's URL (postgres://user:password@host/db)",
                );
                (DatasetFormat::Postgres, Some(url), &["connectionString"][..])
            }
            "azureBlob" => (
                DatasetFormat::AzureBlob {
                    account: required("account", &self.account, "name the storage account"),
                    container: required("container", &self.container, "name the container the files go to"),
                    folder_path: self.folder_path.clone().unwrap_or_default(),
                    endpoint: self.endpoint.clone(),
                },
                self.access_key.clone(),
                &["account", "container", "accessKey", "folderPath", "endpoint"][..],
            ),
            "s3" => (
                DatasetFormat::S3 {
                    bucket: required("bucket", &self.bucket, "name the bucket the files go to"),
                    region: required("region", &self.region, "give the bucket's region (eu-west-1)"),
                    folder_path: self.folder_path.clone().unwrap_or_default(),
                    access_key_id: self.access_key_id.clone(),
                    endpoint: self.endpoint.clone(),
                },
                self.secret_access_key.clone(),
                &["bucket", "region", "accessKeyId", "secretAccessKey", "folderPath", "endpoint"][..],
            ),
            "webhook" => {
                let url = required("url", &self.url, "a webhook dataset needs the marketing tool's URL");
                let secret = required(
                    "signingSecret",
                    &self.signing_secret,
                    "a webhook dataset needs the secret its receiver checks signatures with",
                );
                if !url.is_empty() {
                    match url::Url::parse(&url) {
                        Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => problems.push(
                            "params.url holds a user name or password: the URL is shown to anyone who reads the \
                                 dataset; the receiver checks the signature instead"
                                .to_string(),
                        ),
                        Ok(parsed) if parsed.scheme() == "https" || hosts.lists(&parsed) => {}
                        Ok(_) => problems.push(format!(
                            "params.url ({url}) is not https: records go to a webhook over https, or to a host the \
                             operator allows (allowed_hosts in the config file or DYNSYNC_ALLOWED_HOSTS)"
                        )),
                        Err(e) => problems.push(format!("params.url ({url}) is not a URL: {e}")),
                    }
                }
                if !secret.is_empty() && secret.chars().count() < MIN_SIGNING_SECRET {
                    problems.push(format!(
                        "params.signingSecret is {} characters: give at least {MIN_SIGNING_SECRET}",
                        secret.chars().count()
                    ));
                }
                (DatasetFormat::Webhook { url }, Some(secret), &["url", "signingSecret"][..])
            }
            other => {
                problems.push(format!(
                    "params.format={other}: a dataset is kept as parquet (files in the data directory), postgres (a \
                     table), azureBlob or s3 (Parquet files in object storage), or sent to a webhook"
                ));
                return None;
            }
        };
        let given = [
            ("connectionString", &self.connection_string),
            ("account", &self.account),
            ("container", &self.container),
            ("accessKey", &self.access_key),
            ("bucket", &self.bucket),
            ("region", &self.region),
            ("accessKeyId", &self.access_key_id),
            ("secretAccessKey", &self.secret_access_key),
            ("folderPath", &self.folder_path),
            ("endpoint", &self.endpoint),
            ("url", &self.url),
            ("signingSecret", &self.signing_secret),
        ];
        for (name, value) in given {
            if value.is_some() && !allowed.contains(&name) {
                problems.push(format!("params.{name} is not a parameter of a {format} dataset"));
            }
        }
        // A key is sent only where it was given for: an endpoint of one's own must be allowed (DYNSYNC_ALLOWED_HOSTS).
        if let Some(endpoint) = &self.endpoint
            && let Err(refused) = hosts.check("endpoint", endpoint)
        {
            problems.push(format!("params.endpoint ({endpoint}) cannot be used: {}", refused.why));
        }
        Some((found, secret.filter(|s| !s.trim().is_empty()).map(Secret::new)))
    }
}

/// `POST /targetConnections` with the data lake's connection spec: a dataset, and where it is kept.
pub async fn create_dataset_target(state: &AppState, caller: Caller, body: &[u8]) -> ApiResult<Response> {
    let target = create_dataset(state, &caller, parse_body(body)?).await?;
    Ok(id_and_etag(StatusCode::CREATED, target.id, &target.etag))
}

impl CreateDataset {
    /// The dataset `data_set_id`, as Parquet files in the data directory.
    pub fn parquet(data_set_id: String) -> CreateDataset {
        let params = DatasetParams { data_set_id: Some(data_set_id), ..DatasetParams::default() };
        CreateDataset { name: None, description: String::new(), params, _data: None, _connection_spec: None }
    }
}

/// Makes a dataset target, refused now if the dataset cannot be opened.
pub async fn create_dataset(state: &AppState, caller: &Caller, request: CreateDataset) -> ApiResult<DatasetTarget> {
    caller.may(Role::Manage)?;
    let mut problems = Vec::new();
    let dataset = match request.params.data_set_id.clone().map(DatasetName::try_from) {
        Some(Ok(name)) => Some(name),
        Some(Err(e)) => {
            problems.push(format!("params.dataSetId: {e}"));
            None
        }
        None => {
            problems.push("params.dataSetId is missing: name the dataset (contacts_from_dynamics)".into());
            None
        }
    };
    let format = request.params.format(&state.hosts, &mut problems);
    let (Some(dataset), Some((format, secret)), true) = (dataset, format, problems.is_empty()) else {
        return Err(ApiError::bad_request(problems.join("; ")).with_report(json!({"problems": problems})));
    };
    let now = Utc::now();
    let target = DatasetTarget {
        id: TargetConnectionId::new(),
        sandbox: caller.sandbox.clone(),
        name: request.name.unwrap_or_else(|| dataset.to_string()),
        description: request.description,
        dataset,
        format,
        secret,
        etag: Etag::new(),
        created_at: now,
        updated_at: now,
    };
    // A dataset that cannot be opened is refused now, not at the flow's first page.
    open_destination(&target, &state.data_dir, &state.store)
        .await
        .map_err(|e| ApiError::bad_request(format!("the dataset {} cannot be opened: {e}", target.dataset)))?;
    state.store.insert_dataset_target(&target).await?;
    let what = Changed { kind: ResourceKind::TargetConnection, id: target.id.0, name: &target.name };
    caller.made(state, what, ChangeAction::Created).await;
    Ok(target)
}

pub fn dataset_target_json(t: &DatasetTarget) -> Json {
    // The connection string is never answered: it holds the database's password.
    let mut params = serde_json::to_value(&t.format).expect("a format serializes");
    params["dataSetId"] = json!(t.dataset);
    json!({
        "id": t.id,
        "name": t.name,
        "description": t.description,
        "connectionSpec": {"id": specs::DATA_LAKE, "version": "1.0"},
        "params": params,
        "state": "enabled",
        "sandboxName": t.sandbox,
        "etag": t.etag,
        "createdAt": t.created_at.timestamp_millis(),
        "updatedAt": t.updated_at.timestamp_millis(),
    })
}

#[derive(Debug, Deserialize)]
pub struct RowsQuery {
    limit: Option<usize>,
    generation: Option<u32>,
}

/// The most rows a quick look at a dataset answers.
pub const MAX_ROWS: usize = 1000;

/// `GET /targetConnections/{id}/rows`: a quick look at a dataset — the current row of each record.
pub async fn dataset_rows(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<RowsQuery>,
) -> ApiResult<Response> {
    let parsed: TargetConnectionId =
        id.parse().map_err(|_| ApiError::not_found("dataset target", &id, &caller.sandbox))?;
    let target = state
        .store
        .dataset_target(&caller.sandbox, parsed)
        .await?
        .ok_or_else(|| ApiError::not_found("dataset target", &id, &caller.sandbox))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_ROWS).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit={limit}: a quick look shows 1 to {MAX_ROWS} rows")));
    }
    let destination = state
        .datasets
        .open(&target, &state.data_dir, &state.store)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "dataset-unavailable", e.to_string()))?;
    let generation = query.generation.unwrap_or(1);
    let (schema, rows) = destination
        .rows(&target.dataset, generation, limit)
        .await
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "dataset-unavailable", e.to_string()))?;
    let rows: Vec<Json> = rows
        .iter()
        .map(|row| {
            let mut values = Map::new();
            for (i, column) in schema.columns.iter().enumerate() {
                let value = row.values.get(i).unwrap_or(&crate::dataset::Value::Null);
                values.insert(column.name.clone(), explore::value_json(value, Some(column.kind)));
            }
            json!({
                "id": row.id,
                "operation": row.operation.as_str(),
                "version": row.version,
                "deleted": row.deleted(),
                "syncedAt": row.synced_at.to_rfc3339(),
                "values": values,
            })
        })
        .collect();
    Ok(axum::Json(json!({"dataSetId": target.dataset, "generation": generation, "schema": schema, "rows": rows}))
        .into_response())
}

// ---------------------------------------------------------------------------------------------------- flows

/// `POST /flows` with the ingestion's flow spec. The source, the target and the columns are checked now.
pub async fn create_flow(state: &AppState, caller: Caller, body: &[u8]) -> ApiResult<Response> {
    let flow = create_ingestion(state, &caller, parse_body(body)?).await?;
    Ok(id_and_etag(StatusCode::CREATED, flow.id, &flow.etag))
}

/// Makes an ingestion flow: its source, target, columns and outbound rules checked now, every problem with its
/// field.
pub async fn create_ingestion(state: &AppState, caller: &Caller, request: FlowRequest) -> ApiResult<IngestionFlow> {
    caller.may(Role::Manage)?;
    let definition = request.definition(Utc::now()).map_err(|problems| {
        let listed: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect();
        ApiError::new(StatusCode::BAD_REQUEST, "flow-validation", listed.join("; "))
            .with_report(json!({"problems": problems}))
    })?;
    let refuse = |field: &str, message: String| {
        ApiError::new(StatusCode::BAD_REQUEST, "flow-validation", format!("{field}: {message}"))
            .with_report(json!({"problems": [{"field": field, "message": message}]}))
    };
    let source =
        state.store.source_connection(&caller.sandbox, definition.source_connection_id).await?.ok_or_else(|| {
            refuse(
                "sourceConnectionIds[0]",
                format!(
                    "there is no source connection {} in sandbox {}",
                    definition.source_connection_id, caller.sandbox
                ),
            )
        })?;
    let Some(target) = state.store.dataset_target(&caller.sandbox, definition.target_connection_id).await? else {
        return Err(refuse(
            "targetConnectionIds[0]",
            format!(
                "there is no dataset target {} in sandbox {}: create one with POST /targetConnections and the data lake's connection spec {}",
                definition.target_connection_id,
                caller.sandbox,
                specs::DATA_LAKE
            ),
        ));
    };
    let client = client_of(state, caller, source.base_connection_id).await?;
    let table = client
        .table(source.object.table())
        .await
        .map_err(|e| unreachable_metadata(&format!("table {}", source.object.table()), e))?;
    let field = crate::ingestion::definition::mappings_field(&request);
    let report = |problems: Vec<(String, String)>| {
        let listed: Vec<String> = problems.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let report: Vec<Json> = problems.iter().map(|(f, m)| json!({"field": f, "message": m})).collect();
        ApiError::new(StatusCode::BAD_REQUEST, "flow-validation", listed.join("; "))
            .with_report(json!({"problems": report}))
    };
    let shape = TableShape::new(&table, source.object.primary_key(), &definition.columns, &field)
        .map_err(|problems| report(problems.into_iter().map(|p| (p.field, p.message)).collect()))?;
    let mut definition = definition;
    let problems = check_outbound(&client, &table, &shape, &request, &mut definition, &target).await;
    if !problems.is_empty() {
        return Err(report(problems));
    }
    if !table.change_tracking && matches!(source.object, SourceObject::Table { .. }) {
        // Without change tracking, loads after the first read the rows modified since by the delta column.
        let delta = &definition.delta_column;
        match table.column(delta).map(|c| &c.kind) {
            Some(dataverse::ColumnType::DateTime { date_only: false }) => {}
            found => {
                let what = found.map_or("it has no such column".to_string(), |k| format!("it is a {k} column"));
                return Err(refuse(
                    "transformations[0].params.deltaColumn.name",
                    format!(
                        "the {} table has no change tracking, so it is read by a delta column, a date and time \
                         column Dynamics sets on every change (modifiedon); {delta} cannot be one: {what}. Name \
                         another, or turn change tracking on for the table in Dynamics",
                        table.logical_name
                    ),
                ));
            }
        }
    }
    let flow = IngestionFlow::new(caller.sandbox.clone(), definition);
    state.store.insert_flow(&FlowRecord::from(&flow)).await?;
    state.supervisor.flows_changed();
    caller.made(state, Changed::from(&flow), ChangeAction::Created).await;
    Ok(flow)
}

/// Changes an ingestion flow's schedule — the one part of it changed in place, since it changes no row of its
/// dataset — checked as when the flow was made; the next load comes by the new schedule.
pub async fn reschedule(
    state: &AppState,
    caller: &Caller,
    current: IngestionFlow,
    params: &crate::ingestion::schedule::ScheduleParams,
) -> ApiResult<IngestionFlow> {
    caller.may(Role::Manage)?;
    let schedule = crate::ingestion::schedule::Schedule::from_params(Some(params), Utc::now()).map_err(|problems| {
        let listed: Vec<String> = problems
            .iter()
            .map(|(f, m)| format!("scheduleParams.{}: {m}", f.trim_start_matches("scheduleParams.")))
            .collect();
        ApiError::bad_request(listed.join("; "))
    })?;
    let mut definition = current.definition.clone();
    definition.schedule = schedule;
    let updated = IngestionFlow { definition, etag: Etag::new(), updated_at: Utc::now(), ..current.clone() };
    state.store.update_flow(&FlowRecord::from(&updated), &current.etag).await?;
    state.supervisor.flows_changed();
    caller.made(state, Changed::from(&updated), ChangeAction::Changed).await;
    Ok(updated)
}

/// Checks a flow's outbound rules against its table and dataset: the columns they name, the values of
/// replacements (a choice's among its options, whose label is kept for the swap), "apply updates" off only where
/// the destination keeps values. Answers every problem, each with its field.
async fn check_outbound(
    client: &dataverse::Client,
    table: &dataverse::TableDefinition,
    shape: &TableShape,
    request: &FlowRequest,
    definition: &mut crate::ingestion::IngestionDefinition,
    target: &DatasetTarget,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let at = |name: &str| {
        let index = request.transformations.iter().position(|t| t.name == name).unwrap_or(0);
        format!("transformations[{index}].params")
    };
    let schema = &shape.schema;
    let names = || schema.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
    for (field, column) in definition.outbound.columns() {
        if schema.position(column).is_none() {
            let place = if field.starts_with("filter") { at("Filter") } else { at("Replace") };
            let field =
                field.strip_prefix("filter").map_or(format!("{place}.{field}"), |rest| format!("{place}{rest}"));
            problems.push((field, format!("the dataset has no column {column}; its columns are {}", names())));
        }
    }
    for (i, r) in definition.outbound.replacements.iter_mut().enumerate() {
        let field = format!("{}.replacements[{i}]", at("Replace"));
        let Some(position) = schema.position(&r.column) else { continue };
        let kind = schema.columns[position].kind;
        for (name, value) in [("value", &r.value), ("newValue", &r.new_value)] {
            if let Err(e) = crate::ingestion::outbound::to_value(value, kind) {
                problems.push((format!("{field}.{name}"), format!("{e}, as the column {} holds", r.column)));
            }
        }
        // A choice: both values among its options, and the new one's label kept to swap the label with it.
        let mapped = definition.columns.iter().find(|m| m.destination == r.column);
        let source = mapped.map_or(r.column.as_str(), |m| m.source.as_str());
        let choice = mapped.map_or(crate::ingestion::shape::ChoiceAs::Both, |m| m.choice);
        let is_choice = table.column(source).is_some_and(|c| {
            matches!(
                c.kind,
                dataverse::ColumnType::Picklist | dataverse::ColumnType::State | dataverse::ColumnType::Status
            )
        });
        if !is_choice {
            continue;
        }
        let options = match client.choice_options(&table.logical_name, source).await {
            Ok(options) => options,
            Err(e) => {
                problems.push((field.clone(), format!("the options of {source} cannot be read from Dynamics: {e}")));
                continue;
            }
        };
        let find = |v: &Json| {
            options.iter().find(|o| match choice {
                crate::ingestion::shape::ChoiceAs::Label => {
                    v.as_str().is_some_and(|l| l.eq_ignore_ascii_case(&o.label))
                }
                _ => v.as_i64() == Some(i64::from(o.value)) || v.as_str() == Some(&o.value.to_string()),
            })
        };
        let listed = || options.iter().map(|o| format!("{} ({})", o.value, o.label)).collect::<Vec<_>>().join(", ");
        for (name, value) in [("value", &r.value), ("newValue", &r.new_value)] {
            if !value.is_null() && find(value).is_none() {
                problems.push((
                    format!("{field}.{name}"),
                    format!("{value} is not an option of {source}; its options are {}", listed()),
                ));
            }
        }
        r.new_label = find(&r.new_value).map(|o| o.label.clone());
    }
    let keeps = matches!(target.format, DatasetFormat::Postgres | DatasetFormat::Webhook { .. });
    if !keeps {
        for (i, m) in definition.columns.iter().enumerate().filter(|(_, m)| !m.apply_updates) {
            problems.push((
                format!("{}.mappings[{i}].applyUpdates", at("Mapping")),
                format!(
                    "{} cannot keep its first value: a dataset of files keeps every version of a row. Send the \
                     records to a postgres or webhook dataset, or apply its updates",
                    m.destination
                ),
            ));
        }
    }
    problems
}

/// An ingestion flow as the API shows it, in Flow Service's shape.
pub fn ingestion_flow_json(flow: &IngestionFlow) -> Json {
    let d = &flow.definition;
    let mut body = flow_json(flow);
    let mappings: Vec<Json> = d
        .columns
        .iter()
        .map(|m| {
            json!({"sourceAttribute": m.source, "destination": m.destination, "picklist": m.choice, "applyUpdates": m.apply_updates})
        })
        .collect();
    let rules = &d.outbound;
    let mut transformations = vec![
        json!({"name": "Copy", "params": {"deltaColumn": {"name": d.delta_column, "dateFormat": "yyyy-MM-ddTHH:mm:ssZ", "timezone": "UTC"}, "scanIntervalSeconds": d.scan_seconds, "applyDeletes": rules.apply_deletes}}),
        json!({"name": "Mapping", "params": {"mappings": mappings}}),
    ];
    if !rules.replacements.is_empty() {
        let replacements: Vec<Json> = rules
            .replacements
            .iter()
            .map(|r| json!({"column": r.column, "value": r.value, "newValue": r.new_value}))
            .collect();
        transformations.push(json!({"name": "Replace", "params": {"replacements": replacements}}));
    }
    if let Some(filter) = &rules.filter {
        let mut params = filter.to_params();
        params["deleteFilteredOut"] = json!(rules.delete_filtered_out);
        transformations.push(json!({"name": "Filter", "params": params}));
    }
    if let Json::Object(b) = &mut body {
        b.insert("flowSpec".into(), json!({"id": specs::INGESTION_FLOW_SPEC, "version": "1.0"}));
        b.insert("sourceConnectionIds".into(), json!([d.source_connection_id]));
        b.insert("targetConnectionIds".into(), json!([d.target_connection_id]));
        b.insert("scheduleParams".into(), d.schedule.to_params());
        b.insert("transformations".into(), Json::Array(transformations));
    }
    body
}

/// What a run of an ingestion flow adds to a run's answer: the load it counts, when it ran, how fresh it left the
/// dataset.
pub fn load_json(load: &Load) -> Json {
    let duration = load.finished_at.map(|f| (f - load.started_at).num_milliseconds());
    json!({
        "loadType": load.kind.as_str(),
        "generation": load.generation,
        "startedAt": load.started_at.to_rfc3339(),
        "completedAt": load.finished_at.map(|f| f.to_rfc3339()),
        "durationSummary": {"startedAtUTC": load.started_at.timestamp_millis(), "completedAtUTC": load.finished_at.map(|f| f.timestamp_millis()), "durationMs": duration},
        "status": if load.finished_at.is_some() { "success" } else { "inProgress" },
        // The dataset holds Dynamics as of the load's start.
        "freshAsOf": load.finished_at.map(|_| load.started_at.to_rfc3339()),
    })
}

/// The loads of a flow, for its runs.
pub async fn loads(state: &AppState, flow: FlowId) -> ApiResult<Vec<Load>> {
    Ok(state.store.loads(flow).await?)
}
