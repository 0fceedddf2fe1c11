//! `tokens`: API tokens with roles and sandboxes, made, listed and revoked by the operator. A token is shown once,
//! when it is made; afterwards only its id, name, roles and sandboxes.

use super::{ApiError, ApiResult, AppState, Operator, items, parse_body};
use crate::access::{Role, Sandboxes};
use crate::secrets::random_token;
use crate::store::{ApiToken, secret_digest};
use axum::Json as AxumJson;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use uuid::Uuid;

/// What `POST /tokens` takes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewToken {
    name: String,
    roles: BTreeSet<Role>,
    sandboxes: Sandboxes,
}

/// A token as the API shows it; `token` only in the answer that made it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenView {
    id: Uuid,
    name: String,
    roles: BTreeSet<Role>,
    sandboxes: Sandboxes,
    created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl From<&ApiToken> for TokenView {
    fn from(t: &ApiToken) -> TokenView {
        TokenView {
            id: t.id,
            name: t.name.clone(),
            roles: t.roles.clone(),
            sandboxes: t.sandboxes.clone(),
            created_at: t.created_at.timestamp_millis(),
            revoked_at: t.revoked_at.map(|r| r.timestamp_millis()),
            token: None,
        }
    }
}

/// `POST /tokens`: `{"name", "roles": ["activate"], "sandboxes": ["prod"] | "*"}`.
pub async fn create(State(state): State<Arc<AppState>>, _operator: Operator, body: Bytes) -> ApiResult<Response> {
    let request: NewToken = parse_body(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "{}; a token is {{\"name\": \"ci\", \"roles\": [\"manage\" | \"activate\" | \"view\"], \"sandboxes\": [\"prod\"] or \"*\"}}",
            e.detail
        ))
    })?;
    let mut problems = Vec::new();
    let name = request.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        problems
            .push("name: give the token a name of 1 to 100 characters that says who uses it (ci, the marketing team)");
    }
    if request.roles.is_empty() {
        problems.push("roles: give at least one of manage, activate, view");
    }
    if matches!(&request.sandboxes, Sandboxes::Only(only) if only.is_empty()) {
        problems.push("sandboxes: name at least one sandbox, or \"*\" for every sandbox");
    }
    if !problems.is_empty() {
        return Err(ApiError::bad_request(problems.join("; ")));
    }
    let token = random_token("dst_");
    let made = ApiToken {
        id: Uuid::new_v4(),
        name,
        roles: request.roles,
        sandboxes: request.sandboxes,
        created_at: Utc::now(),
        revoked_at: None,
    };
    state.store.insert_api_token(&made, &secret_digest(&token)).await?;
    tracing::info!(token = %made.id, name = %made.name, "API token made");
    let view = TokenView { token: Some(token), ..TokenView::from(&made) };
    Ok((StatusCode::CREATED, AxumJson(view)).into_response())
}

/// `GET /tokens`: every token made, revoked ones too; never a token itself.
pub async fn list(State(state): State<Arc<AppState>>, _operator: Operator) -> ApiResult<Response> {
    let tokens = state.store.api_tokens().await?;
    Ok(items(tokens.iter().map(|t| serde_json::to_value(TokenView::from(t)).expect("a token serializes")).collect()))
}

/// `DELETE /tokens/{id}`: the token stops working at once, in every process.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    _operator: Operator,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("there is no working API token {id}: GET tokens lists them"),
        )
    };
    let parsed: Uuid = id.parse().map_err(|_| not_found())?;
    if state.store.revoke_api_token(parsed).await? {
        tracing::info!(token = %parsed, "API token revoked");
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found())
    }
}
