//! `connectionSpecs` and `connections`. Creating a connection tests it: a token, then `WhoAmI`, for each app
//! registration it signs in as. GET shows no secret, and each registration's state (in rotation or refused) once the
//! connection's client has been used, so that a refused one is seen where the connection is.

use super::timeline::Changed;
use super::{ApiError, ApiResult, AppState, Caller, id_and_etag, if_match, items, parse_body};
use crate::access::Role;
use crate::connection::{self, Connection, ConnectionAuth};
use crate::ids::{ConnectionId, ConnectionSpecId, Etag};
use crate::specs;
use crate::store::{ChangeAction, ResourceKind};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use std::sync::Arc;

pub async fn list_specs(_caller: Caller) -> Response {
    items(specs::all())
}

pub async fn get_spec(_caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    specs::all().into_iter().find(|s| s["id"].as_str() == Some(id.as_str())).map(|s| items(vec![s])).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("there is no connection spec {id}: GET connectionSpecs lists them"),
        )
    })
}

/// `POST /connections`'s body, and what the dashboard's connect form makes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateConnection {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub auth: AuthBody,
    pub connection_spec: SpecRef,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthBody {
    pub spec_name: String,
    #[serde(default)]
    pub params: Map<String, Json>,
}

#[derive(Deserialize)]
pub struct SpecRef {
    pub id: String,
}

pub async fn create(State(state): State<Arc<AppState>>, caller: Caller, body: Bytes) -> ApiResult<Response> {
    let request: CreateConnection = parse_body(&body)?;
    let connection = create_connection(&state, &caller, request).await?;
    Ok(id_and_etag(StatusCode::CREATED, connection.id, &connection.etag))
}

/// Makes a connection: its credentials tested as it is saved, and kept only if they work.
pub async fn create_connection(state: &AppState, caller: &Caller, request: CreateConnection) -> ApiResult<Connection> {
    caller.may(Role::Manage)?;
    let spec: ConnectionSpecId = request
        .connection_spec
        .id
        .parse()
        .ok()
        .filter(|s| specs::is_known(*s))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "connectionSpec.id {} is not a connection spec of dynsync: use {} (Microsoft Dynamics source) or {} (Dynamics 365 destination)",
                request.connection_spec.id, specs::DYNAMICS_SOURCE, specs::DYNAMICS_DESTINATION
            ))
        })?;
    if request.name.trim().is_empty() {
        return Err(ApiError::bad_request("name is empty: give the connection a name you will recognize"));
    }
    let mut auth = ConnectionAuth::from_params(spec, &request.auth.spec_name, &request.auth.params)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let failed = |problem: connection::ConnectionProblem| {
        let status = if problem.is_transient() { StatusCode::BAD_GATEWAY } else { StatusCode::BAD_REQUEST };
        ApiError::new(status, "connection-test-failed", format!("the connection does not work: {problem}"))
            .with_report(json!({"connected": false}))
    };
    connection::settle_tenant(&state.http, &state.hosts, &mut auth).await.map_err(failed)?;
    let who = connection::test(&state.http, &state.hosts, &auth).await.map_err(failed)?;
    let now = Utc::now();
    let connection = Connection {
        id: ConnectionId::new(),
        sandbox: caller.sandbox.clone(),
        name: request.name.trim().to_string(),
        description: request.description,
        spec,
        auth,
        signed_in_as: Some(who),
        etag: Etag::new(),
        created_at: now,
        updated_at: now,
    };
    state.store.insert_connection(&connection).await?;
    let what = Changed { kind: ResourceKind::Connection, id: connection.id.0, name: &connection.name };
    caller.made(state, what, ChangeAction::Created).await;
    tracing::info!(connection = %connection.id, sandbox = %connection.sandbox, "connection created and tested");
    Ok(connection)
}

pub fn connection_json(c: &Connection) -> Json {
    let (params, _) = c.auth.to_params();
    json!({
        "id": c.id,
        "name": c.name,
        "description": c.description,
        "connectionSpec": {"id": c.spec, "version": "1.0"},
        "auth": {"specName": c.auth.spec_name(), "params": params},
        "state": "enabled",
        "status": if c.signed_in_as.is_some() { "connected" } else { "untested" },
        "signedInAs": c.signed_in_as.as_ref().map(|w| json!({"userId": w.user_id, "organizationId": w.organization_id})),
        "sandboxName": c.sandbox,
        "etag": c.etag,
        "createdAt": c.created_at.timestamp_millis(),
        "updatedAt": c.updated_at.timestamp_millis(),
    })
}

fn parse_id(id: &str, caller: &Caller) -> ApiResult<ConnectionId> {
    id.parse().map_err(|_| ApiError::not_found("connection", id, &caller.sandbox))
}

/// A connection as GET answers it: with, once its client has been used since dynsync started, each app
/// registration it signs in as and whether it is in rotation (a refused one says why and what to fix).
fn connection_with_registrations(state: &AppState, c: &Connection) -> Json {
    let mut body = connection_json(c);
    if let Some(registrations) = state.clients.registrations(c.id) {
        let registrations: Vec<RegistrationState> = registrations.into_iter().map(RegistrationState::from).collect();
        body["registrations"] = serde_json::to_value(registrations).expect("registration states serialize");
    }
    body
}

/// One app registration of a connection's client, as GET /connections shows it: never its secret.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct RegistrationState {
    client_id: String,
    in_rotation: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

impl From<dataverse::RegistrationStatus> for RegistrationState {
    fn from(status: dataverse::RegistrationStatus) -> RegistrationState {
        RegistrationState {
            in_rotation: status.refused.is_none(),
            problem: status.refused.map(|refused| {
                format!(
                    "its sign-in was refused, so requests go through the other registrations: {refused}; replace its \
                     secret with PATCH /connections/{{id}} to put it back"
                )
            }),
            client_id: status.name,
        }
    }
}

pub async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Response> {
    let all = state.store.connections(&caller.sandbox).await?;
    Ok(items(all.iter().map(|c| connection_with_registrations(&state, c)).collect()))
}

pub async fn get(State(state): State<Arc<AppState>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let found = state.store.connection(&caller.sandbox, parse_id(&id, &caller)?).await?;
    let c = found.ok_or_else(|| ApiError::not_found("connection", &id, &caller.sandbox))?;
    Ok(items(vec![connection_with_registrations(&state, &c)]))
}

#[derive(Deserialize)]
struct PatchOperation {
    op: String,
    path: String,
    value: Json,
}

/// `PATCH /connections/{id}`: JSON Patch `replace` operations on `/name`, `/description` and
/// `/auth/params/<name>`, as Flow Service updates connections (to rotate a secret, say). New credentials are tested
/// before they are kept, and `If-Match` guards against a concurrent change.
pub async fn patch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    caller.may(Role::Manage)?;
    let parsed = parse_id(&id, &caller)?;
    let current = state
        .store
        .connection(&caller.sandbox, parsed)
        .await?
        .ok_or_else(|| ApiError::not_found("connection", &id, &caller.sandbox))?;
    if_match(&headers, &format!("connection {id}"), &current.etag)?;
    let operations: Vec<PatchOperation> = parse_body(&body)?;
    let mut updated = current.clone();
    let (public, secrets) = current.auth.to_params();
    let mut params = connection::with_secrets(public, &secrets);
    let mut credentials_changed = false;
    for (i, operation) in operations.iter().enumerate() {
        if operation.op != "replace" && operation.op != "add" {
            return Err(ApiError::bad_request(format!(
                "[{i}].op {} is not supported: use replace (or add) on /name, /description or /auth/params/<name>",
                operation.op
            )));
        }
        let text =
            || {
                operation.value.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad_request(format!("[{i}].value must be a string for {}", operation.path))
                })
            };
        match operation.path.as_str() {
            "/name" => updated.name = text()?,
            "/description" => updated.description = text()?,
            path => match path.strip_prefix("/auth/params/") {
                Some(name) if !name.is_empty() => {
                    params.insert(name.to_string(), operation.value.clone());
                    credentials_changed = true;
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "[{i}].path {path} cannot be changed: use /name, /description or /auth/params/<name>; \
                         the connection spec and auth spec stay (create a new connection to change them)"
                    )));
                }
            },
        }
    }
    if credentials_changed {
        updated.auth = ConnectionAuth::from_params(current.spec, current.auth.spec_name(), &params)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        // The stored secret goes only where it was given for: sending it somewhere new takes it given again.
        let secret_params: std::collections::BTreeSet<&str> = secrets.keys().map(|p| connection::param_of(p)).collect();
        let secret_given = secret_params
            .iter()
            .all(|name| operations.iter().any(|o| o.path.strip_prefix("/auth/params/") == Some(*name)));
        let moved: Vec<&str> = updated
            .auth
            .places()
            .into_iter()
            .filter(|place| !current.auth.places().contains(place))
            .map(|(param, _)| param)
            .collect();
        if !moved.is_empty() && !secret_given {
            let secret = secret_params.iter().copied().collect::<Vec<_>>().join(", /auth/params/");
            return Err(ApiError::bad_request(format!(
                "this change moves where the connection signs in or which environment it reaches ({}), and dynsync \
                 sends a stored secret only where it was given for: give /auth/params/{secret} again in the same \
                 request",
                moved.join(", ")
            )));
        }
        let failed = |problem: connection::ConnectionProblem| {
            ApiError::new(
                if problem.is_transient() { StatusCode::BAD_GATEWAY } else { StatusCode::BAD_REQUEST },
                "connection-test-failed",
                format!("the new credentials do not work, so the connection keeps its old ones: {problem}"),
            )
        };
        connection::settle_tenant(&state.http, &state.hosts, &mut updated.auth).await.map_err(failed)?;
        let who = connection::test(&state.http, &state.hosts, &updated.auth).await.map_err(failed)?;
        updated.signed_in_as = Some(who);
    }
    updated.etag = Etag::new();
    updated.updated_at = Utc::now();
    state.store.update_connection(&updated, &current.etag).await?;
    state.clients.refresh(&updated);
    let what = Changed { kind: ResourceKind::Connection, id: updated.id.0, name: &updated.name };
    caller.made(&state, what, ChangeAction::Changed).await;
    Ok(id_and_etag(StatusCode::OK, updated.id, &updated.etag))
}

pub async fn delete(State(state): State<Arc<AppState>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    caller.may(Role::Manage)?;
    let parsed = parse_id(&id, &caller)?;
    let Some(current) = state.store.connection(&caller.sandbox, parsed).await? else {
        return Err(ApiError::not_found("connection", &id, &caller.sandbox));
    };
    let targets = state.store.targets_of(&caller.sandbox, parsed).await?;
    if !targets.is_empty() {
        let list = targets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "in-use",
            format!("connection {id} is the base of target connection {list}: delete those (and their flows) first"),
        ));
    }
    let sources = state.store.sources_of(&caller.sandbox, parsed).await?;
    if !sources.is_empty() {
        let list = sources.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "in-use",
            format!("connection {id} is the base of source connection {list}: delete those (and their flows) first"),
        ));
    }
    state.store.delete_connection(&caller.sandbox, parsed).await?;
    state.clients.forget(parsed);
    let what = Changed { kind: ResourceKind::Connection, id: parsed.0, name: &current.name };
    caller.made(&state, what, ChangeAction::Deleted).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
