//! The REST API, in Flow Service's shape, under `/data/foundation/flowservice/`. Every request carries
//! `Authorization: Bearer <token>` and `x-sandbox-name`; every resource lives in one sandbox and is not found from
//! the others. Errors are `{"type", "title", "status", "detail", "report"}` bodies whose detail says what to do.

pub(crate) mod alerts;
mod collection;
mod connections;
pub mod dashboard;
mod engagement;
mod flows;
mod governance;
mod health;
mod ingestion;
mod leads;
mod sns_certificates;
mod targets;
mod timeline;
pub use timeline::{ChangeBody, Timeline};
mod tokens;

use crate::access::{Denied, Grant, Role};
use crate::ids::Sandbox;
use crate::pipeline::{Clients, Flow, JobDefinition, Supervisor};
use crate::store::{Store, StoreError};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json as AxumJson, Router};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub const BASE_PATH: &str = "/data/foundation/flowservice";

/// What every handler shares.
pub struct AppState {
    pub store: Store,
    /// Which flows this process runs, and their runners.
    pub supervisor: Arc<Supervisor>,
    /// One Dataverse client per connection, shared with the flows' runners.
    pub clients: Arc<Clients>,
    pub http: reqwest::Client,
    /// The flows whose failed records are being replayed through this process.
    pub replays: Replays,
    /// Whether lead notifications have an SMTP server to go through.
    pub smtp_configured: bool,
    /// Where connections may send their credentials besides Microsoft's clouds.
    pub hosts: crate::hosts::AllowedHosts,
    /// The data directory: datasets kept as Parquet files are under it.
    pub data_dir: std::path::PathBuf,
    /// Datasets opened for a quick look at their rows.
    pub datasets: crate::ingestion::job::OpenDatasets,
    /// SHA-256 digests of the accepted API tokens.
    token_digests: Vec<[u8; 32]>,
    /// The Amazon SNS signing certificates fetched for SES flows' posts.
    sns_certificates: sns_certificates::SnsCertificates,
}

/// The flows being replayed, each at most once at a time.
#[derive(Default)]
pub struct Replays(std::sync::Mutex<std::collections::HashSet<crate::ids::FlowId>>);

/// A replay under way; the flow is free to replay again when it is dropped.
pub struct Replaying<'a> {
    replays: &'a Replays,
    flow: crate::ids::FlowId,
}

impl Replays {
    /// Marks a flow as being replayed; `None` when it already is.
    pub fn start(&self, flow: crate::ids::FlowId) -> Option<Replaying<'_>> {
        let inserted = self.0.lock().expect("replays lock").insert(flow);
        inserted.then(|| Replaying { replays: self, flow })
    }
}

impl Drop for Replaying<'_> {
    fn drop(&mut self) {
        self.replays.0.lock().expect("replays lock").remove(&self.flow);
    }
}

impl AppState {
    pub fn new(
        store: Store,
        tokens: &[String],
        supervisor: Arc<Supervisor>,
        clients: Arc<Clients>,
        data_dir: std::path::PathBuf,
    ) -> AppState {
        AppState {
            data_dir,
            datasets: Default::default(),
            store,
            supervisor,
            clients,
            http: reqwest::Client::new(),
            replays: Replays::default(),
            smtp_configured: false,
            hosts: crate::hosts::AllowedHosts::default(),
            token_digests: tokens.iter().map(|t| digest(t)).collect(),
            sns_certificates: Default::default(),
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(&format!("{BASE_PATH}/connectionSpecs"), get(connections::list_specs))
        .route(&format!("{BASE_PATH}/connectionSpecs/{{id}}"), get(connections::get_spec))
        .route(&format!("{BASE_PATH}/connections"), post(connections::create).get(connections::list))
        .route(
            &format!("{BASE_PATH}/connections/{{id}}"),
            get(connections::get).patch(connections::patch).delete(connections::delete),
        )
        .route(&format!("{BASE_PATH}/targetConnections"), post(targets::create).get(targets::list))
        .route(&format!("{BASE_PATH}/targetConnections/{{id}}"), get(targets::get).delete(targets::delete))
        .route(&format!("{BASE_PATH}/targetConnections/{{id}}/rows"), get(ingestion::dataset_rows))
        .route(&format!("{BASE_PATH}/connections/{{id}}/explore"), get(ingestion::explore))
        .route(&format!("{BASE_PATH}/sourceConnections"), post(ingestion::create_source).get(ingestion::list_sources))
        .route(
            &format!("{BASE_PATH}/sourceConnections/{{id}}"),
            get(ingestion::get_source).delete(ingestion::delete_source),
        )
        .route(&format!("{BASE_PATH}/flowSpecs"), get(flow_specs))
        .route(&format!("{BASE_PATH}/flows"), post(flows::create).get(flows::list))
        .route(
            &format!("{BASE_PATH}/flows/{{id}}"),
            get(flows::get).put(flows::replace).patch(flows::patch).delete(flows::delete),
        )
        .route(&format!("{BASE_PATH}/flows/{{id}}/action"), post(flows::action))
        .route(&format!("{BASE_PATH}/flows/{{id}}/rejects"), get(flows::rejects))
        .route(&format!("{BASE_PATH}/flows/{{id}}/alerts"), get(alerts::get).put(alerts::put))
        .route(&format!("{BASE_PATH}/flows/{{id}}/alerts/history"), get(alerts::history))
        .route(&format!("{BASE_PATH}/flows/{{id}}/consent"), get(engagement::consent))
        .route(&format!("{BASE_PATH}/runs"), get(flows::runs))
        .route(&format!("{BASE_PATH}/timeline"), get(timeline::list))
        .route(&format!("{BASE_PATH}/governance"), get(governance::get).put(governance::put))
        .route(&format!("{BASE_PATH}/tokens"), post(tokens::create).get(tokens::list))
        .route(&format!("{BASE_PATH}/tokens/{{id}}"), axum::routing::delete(tokens::revoke))
        .route("/leads/{flow}", post(leads::post_lead))
        .route("/events/{flow}", post(engagement::post_events))
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(dashboard::router())
        .route("/collection/{inlet}", post(collection::one))
        .route("/collection/batch/{inlet}", post(collection::batch))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no such endpoint: the API is under {BASE_PATH}/ (connectionSpecs, connections, sourceConnections, targetConnections, flowSpecs, flows, runs)"),
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(in_api_shape))
        .with_state(state)
}

/// The largest request body the API reads: 2 MiB, a batch of a few thousand profiles. The lead intake takes less
/// ([`leads::MAX_LEAD_BYTES`]), and a batch is also capped by its count ([`collection::MAX_BATCH_MESSAGES`]).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Puts the plain-text refusals of the HTTP layer (a body over the limit, a path or query that does not parse) in
/// the API's error shape, so that every error a client sees has the same fields.
async fn in_api_shape(response: Response) -> Response {
    let status = response.status();
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/plain"));
    // Only the refusals of a request are the HTTP layer's; a plain-text 503 is /readyz's own answer.
    if !plain || !status.is_client_error() {
        return response;
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            status,
            "too-large",
            format!(
                "the request body is over {MAX_BODY_BYTES} bytes (2 MiB), the API's limit: send profiles in batches \
                 of at most {} messages, each well under the limit",
                collection::MAX_BATCH_MESSAGES
            ),
        )
        .into_response();
    }
    let text = axum::body::to_bytes(response.into_body(), 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    ApiError::new(status, "bad-request", format!("{}: check the request's path, query and headers", text.trim()))
        .into_response()
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub detail: String,
    pub report: Option<Json>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, kind, detail: detail.into(), report: None }
    }
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }
    pub fn not_found(what: &str, id: &str, sandbox: &Sandbox) -> ApiError {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("there is no {what} {id} in sandbox {sandbox}: check the id, and the x-sandbox-name header"),
        )
    }
    /// The error of a refused definition, with every problem as its typed report.
    pub fn with_problems(self, problems: Vec<crate::checks::Problem>) -> ApiError {
        let report = crate::checks::Problems { problems };
        self.with_report(serde_json::to_value(report).expect("problems serialise"))
    }

    pub fn with_report(mut self, report: Json) -> ApiError {
        self.report = Some(report);
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::Stale(_) => ApiError::new(StatusCode::PRECONDITION_FAILED, "stale", error.to_string()),
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", format!("dynsync's store failed: {other}"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("dynsync:{}", self.kind),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(report) = self.report {
            body["report"] = report;
        }
        (self.status, AxumJson(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The caller of a request: authenticated, in a sandbox its token may act in. Adobe's `x-api-key` and
/// `x-gw-ims-org-id` are accepted and not needed.
pub struct Caller {
    pub sandbox: Sandbox,
    pub grant: Grant,
}

impl Caller {
    /// Whether the caller may act as `role` here: a 403 that says what the token lacks when it may not.
    pub fn may(&self, role: Role) -> ApiResult<()> {
        self.grant.may(role, &self.sandbox).map_err(ApiError::from)
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", denied.to_string())
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let grant = authenticate(&parts.headers, state).await?;
        let sandbox = parts.headers.get("x-sandbox-name").ok_or_else(|| {
            ApiError::bad_request(
                "the x-sandbox-name header is missing: name the sandbox the resource lives in (for example prod)",
            )
        })?;
        let sandbox = sandbox.to_str().ok().and_then(|s| s.parse::<Sandbox>().ok()).ok_or_else(|| {
            ApiError::bad_request(format!(
                "the x-sandbox-name header ({}) is not a sandbox name: use 1 to 64 lower-case letters, digits and '-' \
                 (for example prod or dev-eu)",
                shown_header(sandbox.as_bytes())
            ))
        })?;
        grant.enter(&sandbox)?;
        Ok(Caller { sandbox, grant })
    }
}

/// The caller of an operator's request (managing API tokens): no sandbox.
pub struct Operator;

impl FromRequestParts<Arc<AppState>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        authenticate(&parts.headers, state).await?.operate()?;
        Ok(Operator)
    }
}

/// What the request's bearer token may do: one of the operator's tokens, or a token made through the API.
pub async fn authenticate(headers: &HeaderMap, state: &AppState) -> ApiResult<Grant> {
    let unauthorized = |detail: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
    let value = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("the Authorization header is missing: send Authorization: Bearer <token>, with a token from the api-tokens file in dynsync's data directory or from DYNSYNC_API_TOKENS"))?;
    // The scheme's name is case-insensitive (RFC 9110, 11.1).
    let token = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| {
            unauthorized("the Authorization header is not a bearer token: send Authorization: Bearer <token>")
        })?;
    authenticate_token(token, state).await
}

/// What a token may do: one of the operator's tokens, or a token made through the API (the dashboard's session
/// holds one).
pub async fn authenticate_token(token: &str, state: &AppState) -> ApiResult<Grant> {
    let unauthorized = |detail: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
    let presented = digest(token);
    // Comparing digests keeps the comparison's time independent of how much of a token matched.
    if state.token_digests.iter().any(|d| d == &presented) {
        return Ok(Grant::Operator);
    }
    match state.store.api_token_by_digest(&crate::store::secret_digest(token)).await? {
        Some(t) => Ok(Grant::Token { id: t.id, name: t.name, roles: t.roles, sandboxes: t.sandboxes }),
        None => Err(unauthorized(
            "this token is not one of dynsync's API tokens, or it was revoked: use one from the api-tokens file in \
             dynsync's data directory or from DYNSYNC_API_TOKENS, or one made with dynsync tokens create",
        )),
    }
}

/// A header's value as a message may show it: at most 64 characters, anything but printable ASCII escaped.
fn shown_header(value: &[u8]) -> String {
    let shown: String = value.iter().take(64).flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect();
    if value.len() > 64 { format!("'{shown}…'") } else { format!("'{shown}'") }
}

/// Checks `If-Match` against a resource's current etag (`*` matches any).
pub fn if_match(headers: &HeaderMap, what: &str, current: &crate::ids::Etag) -> ApiResult<()> {
    match headers.get("if-match").and_then(|v| v.to_str().ok()) {
        Some(given) if given != current.0 && given != "*" => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "stale",
            format!(
                "{what} changed since you read it (its etag is now {current}, not {given}): read it again and reapply your change"
            ),
        )),
        _ => Ok(()),
    }
}

/// Reads a JSON body, with a message that says where it is wrong.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not what this endpoint takes: {e}")))
}

/// `GET /flowSpecs`: the kinds of flow dynsync runs, by name (`property=name=="CRMToAEP"` picks one), as Flow
/// Service lists them.
async fn flow_specs(
    _caller: Caller,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Response> {
    let all = [
        (
            crate::specs::INGESTION_FLOW_SPEC,
            "CRMToAEP",
            "a Dynamics table loaded into a dataset, fully then incrementally",
        ),
        (
            crate::specs::LEAD_INTAKE_FLOW_SPEC,
            "LeadIntake",
            "marketplace leads posted over HTTPS written as Dynamics leads",
        ),
        (
            crate::specs::ENGAGEMENT_EVENTS_FLOW_SPEC,
            "EmailEvents",
            "email events posted by an email service written onto the Dynamics timeline, with their opt-outs",
        ),
    ];
    let wanted = match query.get("property") {
        None => None,
        Some(p) => Some(p.strip_prefix("name==").map(|n| n.trim_matches('"').to_string()).ok_or_else(|| {
            ApiError::bad_request(format!(
                "property={p} is not a filter flowSpecs take: use property=name==\"CRMToAEP\""
            ))
        })?),
    };
    let specs = all
        .iter()
        .filter(|(_, name, _)| wanted.as_deref().is_none_or(|w| w == *name))
        .map(|(id, name, description)| json!({"id": id, "name": name, "description": description, "version": "1.0"}))
        .collect();
    Ok(items(specs))
}

/// Adobe's answer to a create or an update.
pub fn id_and_etag(status: StatusCode, id: impl ToString, etag: &crate::ids::Etag) -> Response {
    (status, AxumJson(json!({"id": id.to_string(), "etag": etag.0}))).into_response()
}

/// A flow as the API shows it: its job's definition, with its id, state and times.
pub fn flow_json<D: JobDefinition>(f: &Flow<D>) -> Json {
    let mut body = serde_json::to_value(&f.definition).expect("a flow serializes");
    let extra = json!({
        "id": f.id,
        "state": f.state,
        "sandboxName": f.sandbox,
        "etag": f.etag,
        "createdAt": f.created_at.timestamp_millis(),
        "updatedAt": f.updated_at.timestamp_millis(),
    });
    if let (Json::Object(b), Json::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body
}

pub fn items(values: Vec<Json>) -> Response {
    AxumJson(json!({"items": values})).into_response()
}

#[cfg(test)]
mod tests {
    use super::Replays;
    use crate::ids::FlowId;

    #[test]
    fn a_flow_is_replayed_once_at_a_time_and_again_once_done() {
        let replays = Replays::default();
        let (flow, other) = (FlowId::new(), FlowId::new());
        let first = replays.start(flow).expect("a flow not being replayed can be");
        assert!(replays.start(flow).is_none(), "a second replay of the same flow waits");
        assert!(replays.start(other).is_some(), "another flow is not held up");
        drop(first);
        assert!(replays.start(flow).is_some(), "once done, the flow can be replayed again");
    }
}
