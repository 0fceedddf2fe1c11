//! Tokens for the Web API: the client-credentials and password grants against Microsoft's authority or any
//! other (a sovereign cloud, the emulator), or a token the caller already holds; one cache shared by every
//! request, refreshed before it expires. Sign-in failures become plain sentences that say what to fix.
//!
//! The credentials can be replaced while requests run (a secret rotated, another account): the next sign-in
//! uses the new ones, and a token got with the old ones is never handed out again. A long-lived client keeps
//! its throttling state and counters across the change, which a new client would start over.

use crate::environment::Environment;
use std::fmt;
use std::sync::Arc;
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
        token_url(&self.authority, &self.tenant_id)
    }
}

fn token_url(authority: &str, tenant_id: &str) -> String {
    format!("{}/{}/oauth2/v2.0/token", authority.trim_end_matches('/'), tenant_id)
}

/// A user's sign-in (the resource-owner password grant), for tools that act as a person rather than as an
/// application user. Entra ID refuses it for accounts that need MFA or are federated.
#[derive(Debug, Clone)]
pub struct PasswordCredentials {
    pub tenant_id: String,
    /// The public client application the user signs in through.
    pub client_id: String,
    pub username: String,
    pub password: Secret,
    /// Only for a confidential client application.
    pub client_secret: Option<Secret>,
    pub authority: String,
}

impl PasswordCredentials {
    pub fn token_url(&self) -> String {
        token_url(&self.authority, &self.tenant_id)
    }
}

/// How the client gets its tokens.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// An application user: the client-credentials grant.
    ClientSecret(ClientCredentials),
    /// A person: the password grant, then its refresh token.
    Password(PasswordCredentials),
    /// A token the caller got elsewhere. It is used as is: when it expires, requests fail with an auth error.
    Token(Secret),
}

impl From<ClientCredentials> for Credentials {
    fn from(c: ClientCredentials) -> Self {
        Credentials::ClientSecret(c)
    }
}

impl From<PasswordCredentials> for Credentials {
    fn from(c: PasswordCredentials) -> Self {
        Credentials::Password(c)
    }
}

impl Credentials {
    /// Who signs in, for messages: the client id, or the user name for the password grant. Never a secret.
    pub fn who(&self) -> &str {
        match self {
            Credentials::ClientSecret(c) => &c.client_id,
            Credentials::Password(c) => &c.username,
            Credentials::Token(_) => "a caller-supplied token",
        }
    }

    fn client_id(&self) -> &str {
        match self {
            Credentials::ClientSecret(c) => &c.client_id,
            Credentials::Password(c) => &c.client_id,
            Credentials::Token(_) => "",
        }
    }

    fn tenant_id(&self) -> &str {
        match self {
            Credentials::ClientSecret(c) => &c.tenant_id,
            Credentials::Password(c) => &c.tenant_id,
            Credentials::Token(_) => "",
        }
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
    #[error(
        "the password of {username} is wrong, or the account is locked: check it by signing in to the Power Apps portal"
    )]
    WrongPassword { username: String },
    #[error("user {username} does not exist in tenant {tenant_id}: check the user name (user@tenant)")]
    UnknownUser { username: String, tenant_id: String },
    #[error(
        "user {username} needs an interactive sign-in (multi-factor authentication or consent): use an application user instead"
    )]
    InteractionRequired { username: String },
    #[error("the caller-supplied token was refused: supply a fresh token for this environment")]
    TokenRefused,
    #[error("the sign-in service refused the scope {scope}: {detail}")]
    BadScope { scope: String, detail: String },
    #[error("sign-in failed with AADSTS{code} ({error}): {detail}")]
    Other { code: u32, error: String, detail: String },
    #[error("could not reach the sign-in service at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the sign-in service at {url} is temporarily unavailable ({detail}): it is tried again")]
    Unavailable { url: String, detail: String },
}

impl AuthError {
    /// Whether trying again later may succeed (the service was unreachable), as opposed to a setting to fix.
    pub fn is_transient(&self) -> bool {
        matches!(self, AuthError::Unreachable { .. } | AuthError::Unavailable { .. })
    }
}

struct CachedToken {
    token: Secret,
    refresh_at: Instant,
    /// From the password grant: signs in again without the password.
    refresh_token: Option<Secret>,
    /// The [`SignIn::generation`] it was got with.
    generation: u64,
}

/// The credentials the next sign-in uses, and the scope that goes with them.
struct SignIn {
    credentials: Credentials,
    scope: String,
    /// Counts the credentials set so far: a token got with earlier ones is stale whatever its expiry says.
    generation: u64,
}

/// Gets and caches the token of one app or user for one environment.
pub struct TokenProvider {
    http: reqwest::Client,
    /// The resource every scope names.
    environment: Environment,
    /// Replaced whole by [`set_credentials`](Self::set_credentials); a sign-in works on the one it cloned.
    sign_in: std::sync::Mutex<Arc<SignIn>>,
    /// Held across a sign-in, so that concurrent callers wait for it and share its token.
    cache: Mutex<Option<CachedToken>>,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign_in = self.sign_in();
        f.debug_struct("TokenProvider")
            .field("credentials", &sign_in.credentials)
            .field("scope", &sign_in.scope)
            .finish_non_exhaustive()
    }
}

struct TokenAnswer {
    token: Secret,
    lifetime: Duration,
    refresh_token: Option<Secret>,
}

/// Tokens are renewed this long before they expire, so that no request carries one that expires in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

impl TokenProvider {
    pub fn new(http: reqwest::Client, credentials: impl Into<Credentials>, environment: &Environment) -> Self {
        let sign_in = Self::sign_in_with(environment, credentials.into(), 0);
        let sign_in = std::sync::Mutex::new(Arc::new(sign_in));
        TokenProvider { http, environment: environment.clone(), sign_in, cache: Mutex::new(None) }
    }

    fn sign_in_with(environment: &Environment, credentials: Credentials, generation: u64) -> SignIn {
        // A person signs in with a delegated scope; an application with the resource's `.default`.
        let scope = match &credentials {
            Credentials::Password(_) => format!("{}/user_impersonation offline_access", environment.url()),
            _ => environment.default_scope(),
        };
        SignIn { credentials, scope, generation }
    }

    /// The credentials as they are now. The lock is held only to clone an `Arc`, never across an await.
    fn sign_in(&self) -> Arc<SignIn> {
        self.sign_in.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the credentials the next sign-in uses and forgets the token and refresh token got with the
    /// old ones. A sign-in already under way finishes with the old credentials for the request that started
    /// it; its token is handed to no other.
    pub fn set_credentials(&self, credentials: impl Into<Credentials>) {
        let credentials = credentials.into();
        {
            let mut sign_in = self.sign_in.lock().unwrap_or_else(|e| e.into_inner());
            let generation = sign_in.generation + 1;
            *sign_in = Arc::new(Self::sign_in_with(&self.environment, credentials, generation));
        }
        // Drop the old secrets now if nobody is signing in; if somebody is, the generation keeps its token from
        // ever being handed out, and the next sign-in overwrites it.
        if let Ok(mut cache) = self.cache.try_lock() {
            *cache = None;
        }
    }

    /// A valid token: the cached one, or a new one when it is near its end. Concurrent callers share one
    /// sign-in.
    pub async fn token(&self) -> Result<Secret, AuthError> {
        if let Credentials::Token(token) = &self.sign_in().credentials {
            return Ok(token.clone());
        }
        let mut cache = self.cache.lock().await;
        // Read again: the credentials may have changed while this call waited for another's sign-in.
        let sign_in = self.sign_in();
        if let Credentials::Token(token) = &sign_in.credentials {
            return Ok(token.clone());
        }
        let current = cache.as_ref().filter(|c| c.generation == sign_in.generation);
        if let Some(cached) = current.filter(|c| Instant::now() < c.refresh_at) {
            return Ok(cached.token.clone());
        }
        let refresh_token = current.and_then(|c| c.refresh_token.clone());
        let answer = match refresh_token {
            // A refresh token that no longer works (revoked, expired) is no reason to fail: sign in afresh.
            Some(refresh) => match self.request(&sign_in, Some(&refresh)).await {
                Ok(answer) => answer,
                Err(e) if e.is_transient() => return Err(e),
                Err(_) => self.request(&sign_in, None).await?,
            },
            None => self.request(&sign_in, None).await?,
        };
        let lifetime = answer.lifetime;
        let refresh_at = Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2));
        *cache = Some(CachedToken {
            token: answer.token.clone(),
            refresh_at,
            refresh_token: answer.refresh_token,
            generation: sign_in.generation,
        });
        Ok(answer.token)
    }

    /// Forgets the cached token (after a 401), so the next call signs in again. The refresh token stays.
    pub async fn invalidate(&self) -> Result<(), AuthError> {
        if let Credentials::Token(_) = &self.sign_in().credentials {
            return Err(AuthError::TokenRefused);
        }
        if let Some(cached) = self.cache.lock().await.as_mut() {
            cached.refresh_at = Instant::now();
        }
        Ok(())
    }

    async fn request(&self, sign_in: &SignIn, refresh_token: Option<&Secret>) -> Result<TokenAnswer, AuthError> {
        let (url, mut form): (String, Vec<(&str, &str)>) = match &sign_in.credentials {
            Credentials::ClientSecret(c) => (
                c.token_url(),
                vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", &c.client_id),
                    ("client_secret", c.client_secret.expose()),
                ],
            ),
            Credentials::Password(c) => {
                let mut form = vec![("client_id", c.client_id.as_str())];
                match refresh_token {
                    Some(refresh) => {
                        form.extend([("grant_type", "refresh_token"), ("refresh_token", refresh.expose())])
                    }
                    None => form.extend([
                        ("grant_type", "password"),
                        ("username", &c.username),
                        ("password", c.password.expose()),
                    ]),
                }
                if let Some(secret) = &c.client_secret {
                    form.push(("client_secret", secret.expose()));
                }
                (c.token_url(), form)
            }
            Credentials::Token(_) => unreachable!("a caller-supplied token is never requested"),
        };
        form.push(("scope", &sign_in.scope));
        let unreachable = |detail: String| AuthError::Unreachable { url: url.clone(), detail };
        let response = self.http.post(&url).form(&form).send().await.map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| unreachable(e.to_string()))?;
        let body: serde_json::Value = match serde_json::from_str(&text) {
            Ok(body) => body,
            Err(_) if status.is_server_error() => {
                return Err(AuthError::Unavailable { url, detail: format!("HTTP {status}") });
            }
            Err(e) => return Err(unreachable(format!("the answer is not JSON: {e}"))),
        };
        if status.is_success() {
            let token =
                body["access_token"].as_str().ok_or_else(|| unreachable("the answer has no access_token".into()))?;
            let lifetime = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(3599));
            let refresh_token = body["refresh_token"].as_str().map(Secret::new);
            return Ok(TokenAnswer { token: Secret::new(token), lifetime, refresh_token });
        }
        if status.is_server_error() || body["error"] == "temporarily_unavailable" {
            let detail =
                body["error_description"].as_str().unwrap_or("no description").lines().next().unwrap_or_default();
            return Err(AuthError::Unavailable { url, detail: detail.to_string() });
        }
        Err(Self::explain(sign_in, &body))
    }

    fn explain(sign_in: &SignIn, body: &serde_json::Value) -> AuthError {
        let code = body["error_codes"][0].as_u64().unwrap_or_default() as u32;
        let error = body["error"].as_str().unwrap_or_default().to_string();
        let description = body["error_description"].as_str().unwrap_or_default();
        // The first line, without the "AADSTSnnnn: " prefix and the trace lines after it.
        let detail = description.lines().next().unwrap_or_default();
        let detail = detail.split_once(": ").map_or(detail, |(_, rest)| rest).to_string();
        let c = &sign_in.credentials;
        let (client_id, tenant_id) = (c.client_id().to_string(), c.tenant_id().to_string());
        let username = match c {
            Credentials::Password(p) => p.username.clone(),
            _ => String::new(),
        };
        match code {
            7000215 | 7000222 | 7000218 => AuthError::WrongSecret { client_id },
            700016 => AuthError::UnknownApplication { client_id, tenant_id },
            90002 => AuthError::UnknownTenant { tenant_id },
            500011 => AuthError::WrongEnvironment {
                environment: sign_in.scope.split(['/', ' ']).take(3).collect::<Vec<_>>().join("/"),
                tenant_id,
            },
            50126 | 50053 | 50055 | 50057 => AuthError::WrongPassword { username },
            50034 => AuthError::UnknownUser { username, tenant_id },
            50076 | 50079 | 65001 => AuthError::InteractionRequired { username },
            70011 | 1002012 | 700022 => AuthError::BadScope { scope: sign_in.scope.clone(), detail },
            _ => AuthError::Other { code, error, detail },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_secret() {
        let app = ClientCredentials {
            tenant_id: "contoso.onmicrosoft.com".into(),
            client_id: "app".into(),
            client_secret: Secret::new("app-secret-value"),
            authority: "https://login.microsoftonline.com".into(),
        };
        let user = PasswordCredentials {
            tenant_id: "contoso.onmicrosoft.com".into(),
            client_id: "app".into(),
            username: "ada@contoso.onmicrosoft.com".into(),
            password: Secret::new("user-password-value"),
            client_secret: Some(Secret::new("app-secret-value")),
            authority: "https://login.microsoftonline.com".into(),
        };
        let environment = Environment::from_url("https://contoso.crm4.dynamics.com").unwrap();
        let shown = format!(
            "{:?} {:?} {:?} {:?}",
            Credentials::from(app.clone()),
            Credentials::from(user.clone()),
            Credentials::Token(Secret::new("eyJ0eXAiOiJKV1Qi.token-value")),
            TokenProvider::new(reqwest::Client::new(), user, &environment),
        );
        for secret in ["app-secret-value", "user-password-value", "token-value"] {
            assert!(!shown.contains(secret), "{secret} shows in {shown}");
        }
        assert!(shown.contains("ada@contoso.onmicrosoft.com"), "who signs in is not a secret: {shown}");
    }
}
