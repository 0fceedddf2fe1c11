//! Tokens for the Web API: the client-credentials grant against Microsoft's authority or any other (a
//! sovereign cloud, the emulator), one cache shared by every request, refreshed before it expires.
//! Sign-in failures become plain sentences that say what to fix.

use crate::environment::Environment;
use std::fmt;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// A secret (client secret, token) that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// An app registration's credentials, and the authority that signs it in.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// `https://login.microsoftonline.com`, a sovereign cloud's, or the emulator's URL.
    pub authority: String,
}

impl ClientCredentials {
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.authority.trim_end_matches('/'), self.tenant_id)
    }
}

/// A failed sign-in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "the client secret is wrong or expired: create a new secret for app {client_id} in Entra ID and use its value (not its id)"
    )]
    WrongSecret { client_id: String },
    #[error("application {client_id} is not registered in tenant {tenant_id}: check the client id and the tenant id")]
    UnknownApplication { client_id: String, tenant_id: String },
    #[error(
        "tenant {tenant_id} does not exist: check the tenant id (a GUID, or a name such as contoso.onmicrosoft.com)"
    )]
    UnknownTenant { tenant_id: String },
    #[error("{environment} is not a Dataverse environment of tenant {tenant_id}: check the environment URL")]
    WrongEnvironment { environment: String, tenant_id: String },
    #[error("the sign-in service refused the scope {scope}: {detail}")]
    BadScope { scope: String, detail: String },
    #[error("sign-in failed with AADSTS{code} ({error}): {detail}")]
    Other { code: u32, error: String, detail: String },
    #[error("could not reach the sign-in service at {url}: {detail}")]
    Unreachable { url: String, detail: String },
}

impl AuthError {
    /// Whether trying again later may succeed (the service was unreachable), as opposed to a setting to fix.
    pub fn is_transient(&self) -> bool {
        matches!(self, AuthError::Unreachable { .. })
    }
}

struct CachedToken {
    token: Secret,
    refresh_at: Instant,
}

/// Gets and caches the token of one app for one environment.
pub struct TokenProvider {
    http: reqwest::Client,
    credentials: ClientCredentials,
    scope: String,
    cache: Mutex<Option<CachedToken>>,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProvider")
            .field("credentials", &self.credentials)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Tokens are renewed this long before they expire, so that no request carries one that expires in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

impl TokenProvider {
    pub fn new(http: reqwest::Client, credentials: ClientCredentials, environment: &Environment) -> Self {
        TokenProvider { http, credentials, scope: environment.default_scope(), cache: Mutex::new(None) }
    }

    /// A valid token: the cached one, or a new one when it is near its end. Concurrent callers share one
    /// sign-in.
    pub async fn token(&self) -> Result<Secret, AuthError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(cached.token.clone());
        }
        let (token, lifetime) = self.request().await?;
        let refresh_at = Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2));
        *cache = Some(CachedToken { token: token.clone(), refresh_at });
        Ok(token)
    }

    /// Forgets the cached token (after a 401), so the next call signs in again.
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn request(&self) -> Result<(Secret, Duration), AuthError> {
        let url = self.credentials.token_url();
        let unreachable = |detail: String| AuthError::Unreachable { url: url.clone(), detail };
        let response = self
            .http
            .post(&url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &self.credentials.client_id),
                ("client_secret", self.credentials.client_secret.expose()),
                ("scope", &self.scope),
            ])
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let body: serde_json::Value =
            response.json().await.map_err(|e| unreachable(format!("the answer is not JSON: {e}")))?;
        if status.is_success() {
            let token =
                body["access_token"].as_str().ok_or_else(|| unreachable("the answer has no access_token".into()))?;
            let lifetime = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(3599));
            return Ok((Secret::new(token), lifetime));
        }
        Err(self.explain(&body))
    }

    fn explain(&self, body: &serde_json::Value) -> AuthError {
        let code = body["error_codes"][0].as_u64().unwrap_or_default() as u32;
        let error = body["error"].as_str().unwrap_or_default().to_string();
        let description = body["error_description"].as_str().unwrap_or_default();
        // The first line, without the "AADSTSnnnn: " prefix and the trace lines after it.
        let detail = description.lines().next().unwrap_or_default();
        let detail = detail.split_once(": ").map_or(detail, |(_, rest)| rest).to_string();
        let c = &self.credentials;
        match code {
            7000215 | 7000222 | 7000218 => AuthError::WrongSecret { client_id: c.client_id.clone() },
            700016 => AuthError::UnknownApplication { client_id: c.client_id.clone(), tenant_id: c.tenant_id.clone() },
            90002 => AuthError::UnknownTenant { tenant_id: c.tenant_id.clone() },
            500011 => AuthError::WrongEnvironment {
                environment: self.scope.trim_end_matches("/.default").to_string(),
                tenant_id: c.tenant_id.clone(),
            },
            70011 | 1002012 | 700022 => AuthError::BadScope { scope: self.scope.clone(), detail },
            _ => AuthError::Other { code, error, detail },
        }
    }
}
