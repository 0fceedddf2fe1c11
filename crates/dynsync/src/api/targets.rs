//! `targetConnections`: the destination details (name, description, customization prefix) over a base connection;
//! with the data lake's connection spec, a dataset an ingestion writes (`api/ingestion.rs`).

use super::timeline::Changed;
use super::{ApiError, ApiResult, AppState, Caller, id_and_etag, items, parse_body};
use crate::access::Role;
use crate::ids::{ConnectionId, Etag, TargetConnectionId};
use crate::specs;
use crate::store::{ChangeAction, ResourceKind};
use crate::target::{CustomizationPrefix, TargetConnection};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::sync::Arc;

/// `POST /targetConnections`'s body for a Dynamics 365 destination, and what the dashboard's form makes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateTarget {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub base_connection_id: String,
    #[serde(default)]
    pub params: TargetParams,
    /// Accepted as Adobe's clients send it; a target takes its spec from its base connection.
    #[serde(default, rename = "connectionSpec")]
    _connection_spec: Option<Json>,
}

impl CreateTarget {
    /// A destination named `name` over the connection `base_connection_id`, with the customization prefix `prefix`.
    pub fn new(name: String, base_connection_id: String, prefix: String) -> CreateTarget {
        CreateTarget {
            name,
            description: String::new(),
            base_connection_id,
            params: TargetParams { customization_prefix: Some(prefix) },
            _connection_spec: None,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetParams {
    pub customization_prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecOf {
    connection_spec: Option<SpecRef>,
}

#[derive(Deserialize)]
struct SpecRef {
    id: String,
}

pub async fn create(State(state): State<Arc<AppState>>, caller: Caller, body: Bytes) -> ApiResult<Response> {
    caller.may(Role::Manage)?;
    let spec = serde_json::from_slice::<SpecOf>(&body).ok().and_then(|s| s.connection_spec).map(|s| s.id);
    if spec.as_deref().is_some_and(|id| id.eq_ignore_ascii_case(&specs::DATA_LAKE.to_string())) {
        return super::ingestion::create_dataset_target(&state, caller, &body).await;
    }
    let request: CreateTarget = parse_body(&body)?;
    let target = create_target(&state, &caller, request).await?;
    Ok(id_and_etag(StatusCode::CREATED, target.id, &target.etag))
}

/// Makes a Dynamics 365 destination over a destination connection of the sandbox.
pub async fn create_target(state: &AppState, caller: &Caller, request: CreateTarget) -> ApiResult<TargetConnection> {
    caller.may(Role::Manage)?;
    if request.name.trim().is_empty() {
        return Err(ApiError::bad_request("name is empty: give the destination a name you will recognize"));
    }
    let base: ConnectionId = request.base_connection_id.parse().map_err(|_| {
        ApiError::bad_request(format!("baseConnectionId {} is not a connection id", request.base_connection_id))
    })?;
    let connection = state.store.connection(&caller.sandbox, base).await?.ok_or_else(|| {
        ApiError::bad_request(format!(
            "baseConnectionId: there is no connection {base} in sandbox {}: create it with POST /connections first",
            caller.sandbox
        ))
    })?;
    if connection.spec != specs::DYNAMICS_DESTINATION {
        return Err(ApiError::bad_request(format!(
            "baseConnectionId: connection {base} is a Dynamics source connection; a target needs a Dynamics 365 destination connection (connection spec {})",
            specs::DYNAMICS_DESTINATION
        )));
    }
    let prefix = request.params.customization_prefix.as_deref().ok_or_else(|| {
        ApiError::bad_request(
            "params.customizationPrefix is missing: give the customization prefix of the publisher of your audience columns (new for the default solution)",
        )
    })?;
    let prefix: CustomizationPrefix = prefix
        .parse()
        .map_err(|e: crate::target::BadPrefix| ApiError::bad_request(format!("params.customizationPrefix: {e}")))?;
    let now = Utc::now();
    let target = TargetConnection {
        id: TargetConnectionId::new(),
        sandbox: caller.sandbox.clone(),
        name: request.name.trim().to_string(),
        description: request.description,
        base_connection_id: base,
        customization_prefix: prefix,
        etag: Etag::new(),
        created_at: now,
        updated_at: now,
    };
    state.store.insert_target_connection(&target).await?;
    let what = Changed { kind: ResourceKind::TargetConnection, id: target.id.0, name: &target.name };
    caller.made(state, what, ChangeAction::Created).await;
    Ok(target)
}

pub fn target_json(t: &TargetConnection) -> Json {
    json!({
        "id": t.id,
        "name": t.name,
        "description": t.description,
        "baseConnectionId": t.base_connection_id,
        "connectionSpec": {"id": specs::DYNAMICS_DESTINATION, "version": "1.0"},
        "params": {"customizationPrefix": t.customization_prefix},
        "state": "enabled",
        "sandboxName": t.sandbox,
        "etag": t.etag,
        "createdAt": t.created_at.timestamp_millis(),
        "updatedAt": t.updated_at.timestamp_millis(),
    })
}

fn parse_id(id: &str, caller: &Caller) -> ApiResult<TargetConnectionId> {
    id.parse().map_err(|_| ApiError::not_found("target connection", id, &caller.sandbox))
}

pub async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Response> {
    let mut all: Vec<Json> = state.store.target_connections(&caller.sandbox).await?.iter().map(target_json).collect();
    let datasets = state.store.dataset_targets(&caller.sandbox).await?;
    all.extend(datasets.iter().map(super::ingestion::dataset_target_json));
    Ok(items(all))
}

pub async fn get(State(state): State<Arc<AppState>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let parsed = parse_id(&id, &caller)?;
    if let Some(t) = state.store.target_connection(&caller.sandbox, parsed).await? {
        return Ok(items(vec![target_json(&t)]));
    }
    let found = state.store.dataset_target(&caller.sandbox, parsed).await?;
    let t = found.ok_or_else(|| ApiError::not_found("target connection", &id, &caller.sandbox))?;
    Ok(items(vec![super::ingestion::dataset_target_json(&t)]))
}

pub async fn delete(State(state): State<Arc<AppState>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    caller.may(Role::Manage)?;
    let parsed = parse_id(&id, &caller)?;
    let dataset = state.store.dataset_target(&caller.sandbox, parsed).await?;
    let is_dataset = dataset.is_some();
    let name = match dataset {
        Some(d) => d.name,
        None => match state.store.target_connection(&caller.sandbox, parsed).await? {
            Some(t) => t.name,
            None => return Err(ApiError::not_found("target connection", &id, &caller.sandbox)),
        },
    };
    let flows = state.store.flows_of(&caller.sandbox, parsed).await?;
    if !flows.is_empty() {
        let list = flows.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "in-use",
            format!("target connection {id} is used by flow {list}: delete the flows first"),
        ));
    }
    if is_dataset {
        // The dataset's files or table stay: deleting the target forgets where it is, not what it holds.
        state.store.delete_dataset_target(&caller.sandbox, parsed).await?;
    } else {
        state.store.delete_target_connection(&caller.sandbox, parsed).await?;
    }
    let what = Changed { kind: ResourceKind::TargetConnection, id: parsed.0, name: &name };
    caller.made(&state, what, ChangeAction::Deleted).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
