//! The token endpoint (`POST /{tenant}/oauth2/v2.0/token`) with the client-credentials, password and
//! refresh-token grants and Entra ID's error shapes, and the checks the Web API makes of bearer tokens.
//!
//! The application holds a set of client secrets, as an Entra ID app registration does, so that a secret
//! can be rotated without an outage: an administrator adds a new one, moves the apps over to it, then
//! removes the old one. Any secret in the set signs in; one that is not gets AADSTS7000215. Removing a
//! secret leaves the tokens it got valid until they expire, as in Entra ID. Revoking tokens replaces the
//! signing key, so every token issued before — access and refresh — fails the signature check and the
//! Web API refuses it like any token this environment did not issue; signing in again gives one that works.
//! Both are behind locks because they change while the server answers requests.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;
use std::time::Duration;
use uuid::Uuid;

/// A secret that never shows in logs or `Debug` output.
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

/// A user who can sign in with the password grant.
#[derive(Debug, Clone)]
pub struct UserLogin {
    pub username: String,
    pub password: Secret,
    /// The user's object id in the directory; tokens carry it as `oid`.
    pub object_id: Uuid,
}

/// An app registration besides the first, as configured: its client id and secret.
#[derive(Debug, Clone)]
pub struct AppRegistration {
    pub client_id: Uuid,
    pub client_secret: Secret,
}

/// An app registration besides the first: it signs in as an application user of its own.
#[derive(Debug)]
pub struct Application {
    pub client_id: Uuid,
    pub client_secret: Secret,
    /// Its application user's object id.
    pub object_id: Uuid,
}

/// Who may get tokens, and for how long they last.
#[derive(Debug)]
pub struct Directory {
    pub tenant_id: Uuid,
    pub client_id: Uuid,
    /// The application's client secrets, the configured (or generated) one first: any of them signs in.
    pub client_secrets: RwLock<Vec<Secret>>,
    /// The application user's object id.
    pub app_object_id: Uuid,
    /// The other app registrations, each its own application user (and so its own budget under the limits).
    pub applications: Vec<Application>,
    pub users: Vec<UserLogin>,
    pub token_lifetime: Duration,
    /// The key tokens are signed with; replacing it revokes every token issued with the old one.
    pub signing_key: RwLock<Secret>,
}

/// The claims of an access (or refresh) token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub appid: String,
    pub oid: Uuid,
    pub tid: Uuid,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    pub ver: String,
    /// `access` or `refresh`.
    pub typ: String,
}

/// Why a bearer token was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenProblem {
    Missing,
    Malformed,
    BadSignature,
    Expired,
    WrongAudience,
}

type HmacSha256 = Hmac<Sha256>;

impl Directory {
    /// A MAC keyed with the current signing key.
    fn mac(&self) -> HmacSha256 {
        let key = self.signing_key.read().unwrap_or_else(|e| e.into_inner());
        HmacSha256::new_from_slice(key.expose().as_bytes()).expect("any key length works")
    }

    pub fn issue(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let unsigned = format!("{header}.{body}");
        let mut mac = self.mac();
        mac.update(unsigned.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{unsigned}.{signature}")
    }

    /// Whether `secret` is one of the application's client secrets.
    pub fn has_client_secret(&self, secret: &str) -> bool {
        self.client_secrets.read().unwrap_or_else(|e| e.into_inner()).iter().any(|s| s.expose() == secret)
    }

    /// Checks a token's signature, lifetime and audience.
    pub fn verify(&self, token: &str, audience: &str, kind: &str) -> Result<Claims, TokenProblem> {
        let (unsigned, signature) = token.rsplit_once('.').ok_or(TokenProblem::Malformed)?;
        let (_, body) = unsigned.split_once('.').ok_or(TokenProblem::Malformed)?;
        let mut mac = self.mac();
        mac.update(unsigned.as_bytes());
        let given = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenProblem::Malformed)?;
        mac.verify_slice(&given).map_err(|_| TokenProblem::BadSignature)?;
        let claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).map_err(|_| TokenProblem::Malformed)?)
                .map_err(|_| TokenProblem::Malformed)?;
        if claims.typ != kind {
            return Err(TokenProblem::Malformed);
        }
        if claims.exp <= Utc::now().timestamp() {
            return Err(TokenProblem::Expired);
        }
        if !same_resource(&claims.aud, audience) {
            return Err(TokenProblem::WrongAudience);
        }
        Ok(claims)
    }
}

/// Whether two environment URLs name the same resource (`localhost` and `127.0.0.1` are one host).
pub fn same_resource(a: &str, b: &str) -> bool {
    fn origin(text: &str) -> Option<(String, String, u16)> {
        let url = url::Url::parse(text.trim_end_matches('/')).ok()?;
        let host = match url.host_str()? {
            "localhost" | "[::1]" => "127.0.0.1".to_string(),
            other => other.to_ascii_lowercase(),
        };
        Some((url.scheme().to_string(), host, url.port_or_known_default()?))
    }
    matches!((origin(a), origin(b)), (Some(x), Some(y)) if x == y)
}

/// A token-endpoint error, with Entra ID's body shape.
#[derive(Debug)]
pub struct TokenError {
    pub status: u16,
    pub error: &'static str,
    pub code: u32,
    pub description: String,
}

impl TokenError {
    fn new(status: u16, error: &'static str, code: u32, description: impl Into<String>) -> Self {
        TokenError { status, error, code, description: description.into() }
    }

    fn missing(parameter: &str) -> Self {
        Self::new(
            400,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{parameter}'."),
        )
    }

    /// A query parameter the request lacks (discovery endpoints).
    pub fn missing_query(parameter: &str) -> Self {
        Self::new(
            400,
            "invalid_request",
            900144,
            format!("The request must contain the query parameter '{parameter}'."),
        )
    }

    /// Instance discovery for an authority that is not this environment's.
    pub fn unknown_instance(endpoint: &str) -> Self {
        Self::new(
            400,
            "invalid_instance",
            50049,
            format!(
                "Unknown or invalid instance: '{endpoint}'. Use this environment's authority, {{url}}/{{tenant}}, \
                 as printed when the emulator started."
            ),
        )
    }

    /// The same problem under another OAuth error name (`invalid_tenant` on the discovery endpoints).
    pub fn named(self, error: &'static str) -> Self {
        TokenError { error, ..self }
    }

    pub fn body(&self) -> Json {
        let trace = Uuid::new_v4();
        let correlation = Uuid::new_v4();
        let timestamp = Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
        json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {timestamp}",
                self.code, self.description
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        })
    }
}

/// What a successful grant gives.
pub struct Grant {
    pub claims: Claims,
    pub scope: String,
    pub refresh: bool,
}

impl Directory {
    /// Whether `tenant` is this directory's id; `organizations` and `common` too where `shared` (a user's
    /// sign-in and discovery, not an application's, which must name its tenant).
    pub fn known_tenant(&self, tenant: &str, shared: bool) -> Result<(), TokenError> {
        if tenant.eq_ignore_ascii_case(&self.tenant_id.to_string())
            || (shared && ["organizations", "common"].contains(&tenant))
        {
            return Ok(());
        }
        Err(TokenError::new(
            400,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. \
                 Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        ))
    }

    /// Answers one token request. `resource` is the environment URL that scopes must name.
    pub fn token(&self, tenant: &str, form: &HashMap<String, String>, resource: &str) -> Result<Json, TokenError> {
        let grant = self.grant(tenant, form, resource)?;
        let now = grant.claims.iat;
        let lifetime = grant.claims.exp - now;
        let mut answer = json!({
            "token_type": "Bearer",
            "scope": grant.scope,
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": self.issue(&grant.claims),
        });
        if grant.claims.scp.is_none() {
            answer.as_object_mut().expect("object").remove("scope");
        }
        if grant.refresh {
            let refresh = Claims { typ: "refresh".into(), exp: now + 90 * 24 * 3600, ..grant.claims.clone() };
            answer["refresh_token"] = Json::String(self.issue(&refresh));
        }
        Ok(answer)
    }

    fn grant(&self, tenant: &str, form: &HashMap<String, String>, resource: &str) -> Result<Grant, TokenError> {
        let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
        let grant_type = field("grant_type").ok_or_else(|| TokenError::missing("grant_type"))?;
        self.known_tenant(tenant, grant_type != "client_credentials")?;
        if !["client_credentials", "password", "refresh_token"].contains(&grant_type) {
            return Err(TokenError::new(
                400,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{grant_type}'."),
            ));
        }
        let client_id = field("client_id").ok_or_else(|| TokenError::missing("client_id"))?;
        let other = self.applications.iter().find(|a| client_id.eq_ignore_ascii_case(&a.client_id.to_string()));
        if other.is_none() && !client_id.eq_ignore_ascii_case(&self.client_id.to_string()) {
            return Err(TokenError::new(
                400,
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application \
                     has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have \
                     sent your authentication request to the wrong tenant.",
                    self.tenant_id
                ),
            ));
        }
        let (app_id, app_object_id) =
            other.map_or((self.client_id, self.app_object_id), |a| (a.client_id, a.object_id));
        let secret = field("client_secret");
        let wrong_secret = || {
            TokenError::new(
                401,
                "invalid_client",
                7000215,
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the \
                     client secret ID, for a secret added to app '{app_id}'."
                ),
            )
        };
        let known_secret = |s: &str| match other {
            Some(app) => app.client_secret.expose() == s,
            None => self.has_client_secret(s),
        };
        if secret.is_some_and(|s| !known_secret(s)) {
            return Err(wrong_secret());
        }
        let now = Utc::now().timestamp();
        let base = |oid: Uuid, scp: Option<String>, upn: Option<String>| Claims {
            aud: resource.trim_end_matches('/').to_string(),
            iss: format!("https://sts.windows.net/{}/", self.tenant_id),
            iat: now,
            nbf: now,
            exp: now + self.token_lifetime.as_secs() as i64,
            appid: app_id.to_string(),
            oid,
            tid: self.tenant_id,
            sub: oid.to_string(),
            scp,
            upn,
            ver: "1.0".into(),
            typ: "access".into(),
        };
        match grant_type {
            "client_credentials" => {
                if secret.is_none() {
                    return Err(TokenError::new(
                        401,
                        "invalid_client",
                        7000218,
                        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                    ));
                }
                let scope = field("scope").ok_or_else(|| TokenError::missing("scope"))?;
                self.check_scope(scope, resource, &[".default"], true)?;
                Ok(Grant { claims: base(app_object_id, None, None), scope: scope.to_string(), refresh: false })
            }
            "password" => {
                let username = field("username").ok_or_else(|| TokenError::missing("username"))?;
                let password = field("password").ok_or_else(|| TokenError::missing("password"))?;
                let scope = field("scope").ok_or_else(|| TokenError::missing("scope"))?;
                let resource_scope = self.check_scope(scope, resource, &["user_impersonation", ".default"], false)?;
                let user = self.users.iter().find(|u| u.username.eq_ignore_ascii_case(username)).ok_or_else(|| {
                    TokenError::new(
                        400,
                        "invalid_grant",
                        50034,
                        format!(
                            "The user account {{EUII Hidden}} does not exist in the {} directory. To sign into this application, the \
                             account must be added to the directory.",
                            self.tenant_id
                        ),
                    )
                })?;
                if user.password.expose() != password {
                    return Err(TokenError::new(
                        400,
                        "invalid_grant",
                        50126,
                        "Error validating credentials due to invalid username or password.",
                    ));
                }
                let refresh = scope.split_whitespace().any(|s| s == "offline_access");
                Ok(Grant {
                    claims: base(user.object_id, Some("user_impersonation".into()), Some(user.username.clone())),
                    scope: resource_scope,
                    refresh,
                })
            }
            _ => {
                let refresh_token = field("refresh_token").ok_or_else(|| TokenError::missing("refresh_token"))?;
                let old = self.verify(refresh_token, resource, "refresh").map_err(|_| {
                    TokenError::new(
                        400,
                        "invalid_grant",
                        9002313,
                        "Invalid request. Request is malformed or invalid: the refresh token is not valid.",
                    )
                })?;
                Ok(Grant {
                    claims: base(old.oid, old.scp.clone(), old.upn.clone()),
                    scope: format!("{}/user_impersonation", old.aud),
                    refresh: true,
                })
            }
        }
    }

    /// Checks that the scope names this environment with one of the allowed permissions; returns the
    /// resource scope granted.
    fn check_scope(
        &self,
        scope: &str,
        resource: &str,
        permissions: &[&str],
        client_credentials: bool,
    ) -> Result<String, TokenError> {
        let resource_scopes: Vec<&str> = scope
            .split_whitespace()
            .filter(|s| !["openid", "profile", "offline_access", "email"].contains(s))
            .collect();
        let invalid = || {
            TokenError::new(
                400,
                "invalid_scope",
                70011,
                format!(
                    "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
                ),
            )
        };
        let [one] = resource_scopes.as_slice() else {
            return Err(if resource_scopes.is_empty() {
                invalid()
            } else {
                TokenError::new(
                    400,
                    "invalid_scope",
                    700022,
                    "The provided value for the input parameter scope is not valid because it contains more than one resource.",
                )
            });
        };
        let (scope_resource, permission) = one.rsplit_once('/').ok_or_else(invalid)?;
        if client_credentials && permission != ".default" {
            return Err(TokenError::new(
                400,
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {one} is not valid. Client credential flows must have a scope value with /.default \
                     suffixed to the resource identifier (application ID URI)."
                ),
            ));
        }
        if !permissions.contains(&permission) || !scope_resource.contains("://") {
            return Err(invalid());
        }
        if !same_resource(scope_resource, resource) {
            return Err(TokenError::new(
                400,
                "invalid_resource",
                500011,
                format!(
                    "The resource principal named {scope_resource} was not found in the tenant named {}. This can happen if the \
                     application has not been installed by the administrator of the tenant or consented to by any user in the tenant. \
                     You might have sent your authentication request to the wrong tenant.",
                    self.tenant_id
                ),
            ));
        }
        Ok(one.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory() -> Directory {
        Directory {
            tenant_id: Uuid::new_v4(),
            client_id: Uuid::new_v4(),
            client_secrets: RwLock::new(vec![Secret::new("s3cret")]),
            app_object_id: Uuid::new_v4(),
            applications: vec![Application {
                client_id: Uuid::new_v4(),
                client_secret: Secret::new("0ther"),
                object_id: Uuid::new_v4(),
            }],
            users: vec![UserLogin {
                username: "ann@contoso.com".into(),
                password: Secret::new("pw"),
                object_id: Uuid::new_v4(),
            }],
            token_lifetime: Duration::from_secs(60),
            signing_key: RwLock::new(Secret::new("key")),
        }
    }

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const URL: &str = "http://127.0.0.1:5555";

    #[test]
    fn client_credentials_round_trip() {
        let d = directory();
        let (t, c) = (d.tenant_id.to_string(), d.client_id.to_string());
        let answer = d
            .token(
                &t,
                &form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", &c),
                    ("client_secret", "s3cret"),
                    ("scope", "http://localhost:5555/.default"),
                ]),
                URL,
            )
            .unwrap();
        assert_eq!(answer["expires_in"], 60);
        let claims = d.verify(answer["access_token"].as_str().unwrap(), URL, "access").unwrap();
        assert_eq!(claims.oid, d.app_object_id);
        let forged = format!("{}x", answer["access_token"].as_str().unwrap());
        assert!(d.verify(&forged, URL, "access").is_err());
    }

    #[test]
    fn errors_carry_the_aadsts_codes() {
        let d = directory();
        let (t, c) = (d.tenant_id.to_string(), d.client_id.to_string());
        let code = |f: &[(&str, &str)], tenant: &str| d.token(tenant, &form(f), URL).unwrap_err().code;
        let cc = |secret: &'static str, scope: &'static str| {
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", c.as_str()),
                ("client_secret", secret),
                ("scope", scope),
            ]
        };
        assert_eq!(code(&cc("nope", "http://127.0.0.1:5555/.default"), &t), 7000215);
        assert_eq!(code(&cc("s3cret", "http://127.0.0.1:9/.default"), &t), 500011);
        assert_eq!(code(&cc("s3cret", "http://127.0.0.1:5555/user_impersonation"), &t), 1002012);
        assert_eq!(code(&cc("s3cret", "nonsense"), &t), 70011);
        assert_eq!(code(&cc("s3cret", "http://127.0.0.1:5555/.default"), "contoso.onmicrosoft.com"), 90002);
        let unknown_app = [
            ("grant_type", "client_credentials"),
            ("client_id", "00000000-0000-0000-0000-000000000001"),
            ("client_secret", "s3cret"),
            ("scope", "http://127.0.0.1:5555/.default"),
        ];
        assert_eq!(code(&unknown_app, &t), 700016);
        let pw = |p: &'static str| {
            vec![
                ("grant_type", "password"),
                ("client_id", c.as_str()),
                ("username", "ann@contoso.com"),
                ("password", p),
                ("scope", "http://127.0.0.1:5555/user_impersonation"),
            ]
        };
        assert_eq!(code(&pw("bad"), &t), 50126);
        assert!(d.token(&t, &form(&pw("pw")), URL).is_ok());
    }

    #[test]
    fn any_of_the_application_secrets_signs_in_and_a_new_signing_key_refuses_older_tokens() {
        let d = directory();
        d.client_secrets.write().unwrap().push(Secret::new("n3w"));
        let (t, c) = (d.tenant_id.to_string(), d.client_id.to_string());
        let ask = |secret: &str| {
            d.token(
                &t,
                &form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", &c),
                    ("client_secret", secret),
                    ("scope", "http://127.0.0.1:5555/.default"),
                ]),
                URL,
            )
        };
        let old = ask("s3cret").unwrap()["access_token"].as_str().unwrap().to_string();
        assert!(ask("n3w").is_ok());
        assert_eq!(ask("other").unwrap_err().code, 7000215);
        *d.signing_key.write().unwrap() = Secret::new("another key");
        assert_eq!(d.verify(&old, URL, "access").unwrap_err(), TokenProblem::BadSignature);
        let new = ask("n3w").unwrap()["access_token"].as_str().unwrap().to_string();
        assert!(d.verify(&new, URL, "access").is_ok());
    }

    #[test]
    fn each_app_registration_signs_in_with_its_own_secret_as_its_own_application_user() {
        let d = directory();
        let t = d.tenant_id.to_string();
        let ask = |client_id: &Uuid, secret: &str| {
            d.token(
                &t,
                &form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", &client_id.to_string()),
                    ("client_secret", secret),
                    ("scope", "http://127.0.0.1:5555/.default"),
                ]),
                URL,
            )
        };
        let other = &d.applications[0];
        let answer = ask(&other.client_id, "0ther").unwrap();
        let claims = d.verify(answer["access_token"].as_str().unwrap(), URL, "access").unwrap();
        assert_eq!(claims.oid, other.object_id);
        assert_eq!(claims.appid, other.client_id.to_string());
        let refused = ask(&other.client_id, "s3cret").unwrap_err();
        assert_eq!(refused.code, 7000215, "the first registration's secret is not this one's");
        assert!(refused.description.contains(&other.client_id.to_string()), "{}", refused.description);
        assert_eq!(ask(&d.client_id, "0ther").unwrap_err().code, 7000215);
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let shown = format!("{:?}", directory());
        assert_eq!(shown.matches("s3cret").count() + shown.matches("0ther").count(), 0);
    }
}
