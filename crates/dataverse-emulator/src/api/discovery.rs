//! The sign-in discovery documents Microsoft's identity libraries read before they ask for a token, so
//! that MSAL and `azure-identity` work against the emulator with only the authority changed:
//!
//! - `GET /{tenant}/v2.0/.well-known/openid-configuration` (and `/{tenant}/.well-known/openid-configuration`,
//!   the v1 document): the OpenID Connect discovery document, whose `token_endpoint` MSAL then posts to.
//!   An unknown tenant gets Entra ID's `invalid_tenant` (AADSTS90002) with status 400, as MSAL expects.
//! - `GET /common/discovery/instance?api-version=1.1&authorization_endpoint=…`: the instance-discovery
//!   answer MSAL asks for before trusting an authority it does not know. It names the tenant discovery
//!   endpoint on this host for an authorization endpoint on this host, and `invalid_instance` (AADSTS50049)
//!   for any other.
//!
//! The emulator signs tokens with a key of its own (HMAC), which it alone can check, so the key set at
//! `jwks_uri` is empty: a client that validates Dataverse access tokens itself is not something Dataverse's
//! clients do (the token is for the Web API, which validates it).

use crate::auth::TokenError;
use crate::environment::Environment;
use axum::Json as JsonBody;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The OpenID Connect discovery document, with the fields Entra ID's has that clients read.
#[derive(Debug, Serialize)]
struct OpenIdConfiguration {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    device_authorization_endpoint: String,
    end_session_endpoint: String,
    jwks_uri: String,
    token_endpoint_auth_methods_supported: [&'static str; 2],
    grant_types_supported: [&'static str; 3],
    response_types_supported: [&'static str; 1],
    response_modes_supported: [&'static str; 2],
    subject_types_supported: [&'static str; 1],
    scopes_supported: [&'static str; 4],
    id_token_signing_alg_values_supported: [&'static str; 1],
    request_uri_parameter_supported: bool,
    tenant_region_scope: &'static str,
    cloud_instance_name: &'static str,
}

/// `v2.0` for the v2 endpoints, empty for the v1 ones: the paths differ, the document does not.
fn openid_configuration(env: &Environment, tenant: &str, v2: bool) -> OpenIdConfiguration {
    let base = format!("{}/{tenant}", env.url);
    let version = if v2 { "/v2.0" } else { "" };
    OpenIdConfiguration {
        issuer: format!("{base}{version}"),
        authorization_endpoint: format!("{base}/oauth2/v2.0/authorize"),
        token_endpoint: format!("{base}/oauth2/v2.0/token"),
        device_authorization_endpoint: format!("{base}/oauth2/v2.0/devicecode"),
        end_session_endpoint: format!("{base}/oauth2/v2.0/logout"),
        jwks_uri: format!("{base}/discovery/v2.0/keys"),
        token_endpoint_auth_methods_supported: ["client_secret_post", "client_secret_basic"],
        grant_types_supported: ["client_credentials", "password", "refresh_token"],
        response_types_supported: ["token"],
        response_modes_supported: ["query", "form_post"],
        subject_types_supported: ["pairwise"],
        scopes_supported: ["openid", "profile", "email", "offline_access"],
        id_token_signing_alg_values_supported: ["HS256"],
        request_uri_parameter_supported: false,
        tenant_region_scope: "WW",
        cloud_instance_name: "microsoftonline.com",
    }
}

fn cacheable(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=86400, private"));
    response
}

fn token_error(error: TokenError) -> Response {
    (StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST), JsonBody(error.body())).into_response()
}

fn configuration(env: &Environment, tenant: &str, v2: bool) -> Response {
    match env.directory.known_tenant(tenant, true) {
        Ok(()) => cacheable(JsonBody(openid_configuration(env, tenant, v2)).into_response()),
        Err(error) => token_error(error.named("invalid_tenant")),
    }
}

pub async fn openid_configuration_v2(State(env): State<Arc<Environment>>, Path(tenant): Path<String>) -> Response {
    configuration(&env, &tenant, true)
}

pub async fn openid_configuration_v1(State(env): State<Arc<Environment>>, Path(tenant): Path<String>) -> Response {
    configuration(&env, &tenant, false)
}

/// The emulator signs with a key only it holds: an empty key set, honestly.
pub async fn keys(State(env): State<Arc<Environment>>, Path(tenant): Path<String>) -> Response {
    match env.directory.known_tenant(&tenant, true) {
        Ok(()) => JsonBody(serde_json::json!({ "keys": [] })).into_response(),
        Err(error) => token_error(error.named("invalid_tenant")),
    }
}

#[derive(Debug, Deserialize)]
pub struct InstanceQuery {
    authorization_endpoint: Option<String>,
}

#[derive(Debug, Serialize)]
struct InstanceMetadata {
    preferred_network: String,
    preferred_cache: String,
    aliases: Vec<String>,
}

#[derive(Debug, Serialize)]
struct InstanceDiscovery {
    tenant_discovery_endpoint: String,
    #[serde(rename = "api-version")]
    api_version: &'static str,
    metadata: Vec<InstanceMetadata>,
}

pub async fn instance(State(env): State<Arc<Environment>>, Query(query): Query<InstanceQuery>) -> Response {
    let Some(endpoint) = query.authorization_endpoint else {
        return token_error(TokenError::missing_query("authorization_endpoint"));
    };
    let host = env.url.split_once("://").map_or(env.url.as_str(), |(_, host)| host);
    // https://host/{tenant}/oauth2/v2.0/authorize, on this host: the tenant is the first path segment.
    let tenant = url::Url::parse(&endpoint).ok().filter(|url| on_this_host(url, &env.url)).and_then(|url| {
        url.path_segments().and_then(|mut segments| segments.next().map(str::to_string)).filter(|t| !t.is_empty())
    });
    let Some(tenant) = tenant else {
        return token_error(TokenError::unknown_instance(&endpoint));
    };
    let answer = InstanceDiscovery {
        tenant_discovery_endpoint: format!("{}/{tenant}/v2.0/.well-known/openid-configuration", env.url),
        api_version: "1.1",
        metadata: vec![InstanceMetadata {
            preferred_network: host.to_string(),
            preferred_cache: host.to_string(),
            aliases: vec![host.to_string()],
        }],
    };
    cacheable(JsonBody(answer).into_response())
}

/// Whether an authorization endpoint is on this environment's host. MSAL writes the authority's host without its
/// port when it asks, so an endpoint without a port is on this host when the host is.
fn on_this_host(endpoint: &url::Url, environment_url: &str) -> bool {
    let Ok(ours) = url::Url::parse(environment_url) else { return false };
    let host = |url: &url::Url| {
        url.host_str().map(|h| if h == "localhost" { "127.0.0.1".to_string() } else { h.to_ascii_lowercase() })
    };
    host(endpoint) == host(&ours)
        && (endpoint.port().is_none() || endpoint.port_or_known_default() == ours.port_or_known_default())
}
