//! The HTTP surface: the token endpoint and the Web API under `/api/data/v9.x/`.

pub(crate) mod batch;
mod bulk;
pub(crate) mod bulk_delete;
mod changes;
mod discovery;
mod metadata;
mod metadata_changes;
mod records;
mod relationships;
mod schema_changes;

use crate::auth::TokenProblem;
use crate::environment::Environment;
use crate::error::{ApiError, ApiResult, code};
use crate::limits::{Throttled, Work};
use crate::odata::path::{Segment, parse_path};
use crate::odata::query::{Prefer, QueryOptions};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Serialize;
use serde_json::{Map, Value as Json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

pub const ODATA_JSON: &str = "application/json; odata.metadata=minimal";

pub fn router(environment: Arc<Environment>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/{tenant}/v2.0/.well-known/openid-configuration", get(discovery::openid_configuration_v2))
        .route("/{tenant}/.well-known/openid-configuration", get(discovery::openid_configuration_v1))
        .route("/{tenant}/discovery/v2.0/keys", get(discovery::keys))
        .route("/common/discovery/instance", get(discovery::instance))
        .route("/api/data/{version}", any(web_api))
        .route("/api/data/{version}/", any(web_api))
        .route("/api/data/{version}/{*path}", any(web_api))
        .with_state(environment)
}

async fn token(State(env): State<Arc<Environment>>, Path(tenant): Path<String>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let (status, json) = match env.directory.token(&tenant, &form, &env.url) {
        Ok(answer) => (StatusCode::OK, answer),
        Err(e) => (StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST), e.body()),
    };
    let mut response = (status, axum::Json(json)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store, no-cache"));
    response
}

/// Everything a Web API handler needs to know about the request it answers.
pub struct Request {
    pub env: Arc<Environment>,
    /// The systemuser acting.
    pub caller: Uuid,
    /// `http://host:port/api/data/v9.2`, as the client called it.
    pub base: String,
    pub method: Method,
    pub headers: HeaderMap,
    pub prefer: Prefer,
    pub raw_query: Option<String>,
    pub body: Bytes,
}

impl Request {
    /// The query options of any request but a query of an entity set: `fetchXml`, `savedQuery` and `sql` query
    /// collections only.
    pub fn options(&self) -> ApiResult<QueryOptions> {
        let options = self.collection_options()?;
        let whole_query = [
            options.fetch_xml.as_ref().map(|_| "fetchXml"),
            options.saved_query.as_ref().map(|_| "savedQuery"),
            options.sql.as_ref().map(|_| "sql"),
        ];
        if let Some(name) = whole_query.into_iter().flatten().next() {
            return Err(ApiError::bad_query(format!(
                "The query parameter {name} queries an entity set: send it with GET /<entity set>?{name}=…"
            )));
        }
        Ok(options)
    }

    /// The query options of a `GET` of an entity set, which may be a `fetchXml`, `savedQuery` or `sql` query.
    pub fn collection_options(&self) -> ApiResult<QueryOptions> {
        QueryOptions::parse(self.raw_query.as_deref())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as a JSON object, with Dataverse's error when it is not one.
    pub fn json_object(&self, entity_set: &str) -> ApiResult<serde_json::Map<String, Json>> {
        match serde_json::from_slice::<Json>(&self.body) {
            Ok(Json::Object(map)) => Ok(map),
            Ok(_) => Err(ApiError::payload(entity_set, "The request body must be a JSON object.")),
            Err(e) => Err(ApiError::payload(entity_set, format!("Invalid JSON. {e}"))),
        }
    }
}

/// A JSON answer with the Web API's content type.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let mut response = Response::new(Body::from(serde_json::to_vec(body).expect("JSON serializes")));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ODATA_JSON));
    response
}

/// Something written as JSON straight into a response's bytes rather than through a serializer: a row, whose
/// property names are escaped once for a whole page rather than once a row.
pub trait WriteJson {
    fn write_json(&self, out: &mut Vec<u8>);
}

/// A collection as a response: the annotations before `value` (`@odata.context`, counts), the rows, then the
/// annotations after them (`@odata.nextLink`, `@odata.deltaLink`). The rows are written straight into the
/// response rather than built as JSON first.
pub fn collection_response(head: &Map<String, Json>, rows: &[impl WriteJson], tail: &Map<String, Json>) -> Response {
    // About what a row of a dozen columns with their annotations takes, so that a page seldom grows its buffer.
    let mut out = Vec::with_capacity(256 + rows.len() * 768);
    let entry = |out: &mut Vec<u8>, key: &str, value: &Json| {
        serde_json::to_writer(&mut *out, key).expect("writing to memory does not fail");
        out.push(b':');
        serde_json::to_writer(&mut *out, value).expect("writing to memory does not fail");
        out.push(b',');
    };
    out.push(b'{');
    for (key, value) in head {
        entry(&mut out, key, value);
    }
    out.extend_from_slice(b"\"value\":[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        row.write_json(&mut out);
    }
    out.extend_from_slice(b"],");
    for (key, value) in tail {
        entry(&mut out, key, value);
    }
    out.pop();
    out.push(b'}');
    let mut response = Response::new(Body::from(out));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ODATA_JSON));
    response
}

pub fn empty_response(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

pub fn set_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
}

fn error_response(error: &ApiError) -> Response {
    json_response(error.status, &error.body())
}

fn unauthorized(env: &Environment, problem: TokenProblem) -> Response {
    let mut response = match problem {
        TokenProblem::Missing => empty_response(StatusCode::UNAUTHORIZED),
        TokenProblem::Expired => error_response(&ApiError::new(
            StatusCode::UNAUTHORIZED,
            code::ACCESS_TOKEN_EXPIRED,
            "The requested resource requires authentication. The access token has expired; get a new one.",
        )),
        TokenProblem::WrongAudience => error_response(&ApiError::new(
            StatusCode::UNAUTHORIZED,
            code::INVALID_AUTH_TICKET,
            format!(
                "The access token was issued for another resource; ask for a token with the scope {}/.default.",
                env.url
            ),
        )),
        TokenProblem::Malformed | TokenProblem::BadSignature => error_response(&ApiError::new(
            StatusCode::UNAUTHORIZED,
            code::INVALID_AUTH_TICKET,
            "The access token is not valid: it was not issued by this environment's authority.",
        )),
    };
    set_header(
        &mut response,
        "www-authenticate",
        &format!(
            "Bearer authorization_uri={}/{}/oauth2/authorize, resource_id={}",
            env.url, env.directory.tenant_id, env.url
        ),
    );
    response
}

fn authenticate(env: &Environment, headers: &HeaderMap) -> Result<Uuid, TokenProblem> {
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or(TokenProblem::Missing)?;
    let token =
        value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).ok_or(TokenProblem::Malformed)?;
    let claims = env.directory.verify(token.trim(), &env.url, "access")?;
    env.callers.get(&claims.oid).copied().ok_or(TokenProblem::Malformed)
}

async fn web_api(
    State(env): State<Arc<Environment>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = Uuid::new_v4().to_string();
    let server = env.limiter.route(affinity(&headers).as_deref());
    let mut response = match authenticate(&env, &headers) {
        Err(problem) => unauthorized(&env, problem),
        Ok(caller) => match env.limiter.admit(server, caller) {
            Err(throttled) => throttled_response(&throttled),
            Ok(mut admission) => {
                let started = Instant::now();
                let origin = origin(&env, &uri, &headers);
                let mut response = match route(env.clone(), caller, origin, method, uri, headers, body).await {
                    Ok(response) => response,
                    Err(error) => error_response(&error),
                };
                // The request takes as long as its work costs, and that cost counts against the limits.
                let work = response.extensions_mut().remove::<Work>().unwrap_or_default();
                let cost = env.limiter.shared(server, env.cost().of(work));
                admission.set_cost(cost);
                if let Some(wait) = cost.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                set_header(
                    &mut response,
                    "x-ms-ratelimit-burst-remaining-xrm-requests",
                    &admission.remaining_requests.to_string(),
                );
                set_header(
                    &mut response,
                    "x-ms-ratelimit-time-remaining-xrm-requests",
                    &format!("{:.2}", admission.remaining_execution.as_secs_f64() * 1000.0),
                );
                response
            }
        },
    };
    set_header(&mut response, "x-ms-dop-hint", &env.limiter.limits().dop_hint.to_string());
    // As Azure App Service's load balancer: the server that answered, for the client to come back to.
    let secure = if env.url.starts_with("https:") { "; Secure" } else { "" };
    set_header(
        &mut response,
        "set-cookie",
        &format!("{AFFINITY_COOKIE}={}; Path=/; HttpOnly{secure}", env.limiter.web_server_id(server)),
    );
    set_header(&mut response, "odata-version", "4.0");
    set_header(&mut response, "req_id", &request_id);
    set_header(&mut response, "x-ms-service-request-id", &request_id);
    response
}

/// The cookie Azure App Service's load balancer pins a client to a web server with.
pub const AFFINITY_COOKIE: &str = "ARRAffinity";

/// The web server the request's `ARRAffinity` cookie names, if it carries one.
fn affinity(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == AFFINITY_COOKIE)
        .map(|(_, value)| value.trim().to_string())
}

/// `scheme://host:port` as the client called it, for the links the answer carries: the host from `Host`
/// (HTTP/1.1) or the request's authority (HTTP/2), the scheme always the environment's own — a client on
/// HTTPS must be sent to HTTPS links whichever HTTP version it speaks.
fn origin(env: &Environment, uri: &Uri, headers: &HeaderMap) -> String {
    let scheme = env.url.split_once("://").map_or("http", |(scheme, _)| scheme);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| uri.authority().map(|a| a.as_str()));
    match host {
        Some(host) => format!("{scheme}://{host}"),
        None => env.url.clone(),
    }
}

fn throttled_response(throttled: &Throttled) -> Response {
    let error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, throttled.code, throttled.message.clone());
    let mut response = error_response(&error);
    set_header(&mut response, "retry-after", &throttled.retry_after.as_secs().to_string());
    response
}

/// Attaches the records a request wrote or read to its response, for the cost model.
pub fn with_work(mut response: Response, work: Work) -> Response {
    response.extensions_mut().insert(work);
    response
}

const VERSIONS: &[&str] = &["v9.0", "v9.1", "v9.2"];

async fn route(
    env: Arc<Environment>,
    caller: Uuid,
    origin: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let rest = uri.path().strip_prefix("/api/data/").unwrap_or_default();
    let (version, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !VERSIONS.contains(&version) {
        return Err(ApiError::segment_not_found(version));
    }
    let request = Request {
        prefer: Prefer::from_headers(&headers),
        base: format!("{origin}/api/data/{version}"),
        env,
        caller,
        method,
        headers,
        raw_query: uri.query().map(str::to_string),
        body,
    };
    // A function whose parameters are aliases (`Query=@p1`), which a resource path does not take.
    if path.starts_with("RetrieveMetadataChanges") {
        return metadata_changes::retrieve(&request, path);
    }
    let segments: Vec<Segment> = parse_path(path)?;
    let Some(first) = segments.first() else {
        return metadata::service_document(&request);
    };
    match first.name.as_str() {
        "$metadata" => metadata::csdl(&request),
        "$batch" if segments.len() == 1 => batch::execute(&request).await,
        "EntityDefinitions" => metadata::entity_definitions(&request, &segments).await,
        "RelationshipDefinitions" => relationships::definitions(&request, &segments).await,
        "CreateEntities" if segments.len() == 1 && request.method == Method::POST => {
            schema_changes::create_entities(&request).await
        }
        "WhoAmI" => who_am_i(&request, &segments),
        "InsertOptionValue" if segments.len() == 1 && request.method == Method::POST => {
            metadata::insert_option_value(&request).await
        }
        "DeleteOptionValue" if segments.len() == 1 && request.method == Method::POST => {
            metadata::delete_option_value(&request).await
        }
        "BulkDelete" if segments.len() == 1 && request.method == Method::POST => bulk_delete::submit(&request).await,
        "sdkmessagefilters" if segments.len() == 1 && request.method == Method::GET => {
            let data = request.env.store.read();
            bulk::message_filters(&data, &request)
        }
        _ => {
            relationships::refuse_many_to_many(&request, &segments)?;
            records::dispatch(&request, &segments).await
        }
    }
}

fn who_am_i(request: &Request, segments: &[Segment]) -> ApiResult<Response> {
    if request.method != Method::GET || segments.len() != 1 {
        return Err(ApiError::no_resource(&format!("{}/WhoAmI", request.base)));
    }
    let response = json_response(
        StatusCode::OK,
        &serde_json::json!({
            "@odata.context": format!("{}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse", request.base),
            "BusinessUnitId": request.env.business_unit_id,
            "UserId": request.caller,
            "OrganizationId": request.env.organization_id,
        }),
    );
    Ok(response)
}
