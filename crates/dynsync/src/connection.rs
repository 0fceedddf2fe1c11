//! Dynamics 365 connections: how each signs in, and testing one the way dynsync uses it — sign in, then `WhoAmI`
//! in the environment. A failure says, in plain words, what is wrong and what to change.
//!
//! A destination connection may sign in as several app registrations of one tenant (`additionalRegistrations`),
//! each an application user with its own budget under Dataverse's service protection limits: its client spreads
//! the load over them. Each one's secret is as secret as the main one: sealed at rest, never shown, never logged.

use crate::hosts::{AllowedHosts, HostRefused};
use crate::ids::{ConnectionId, ConnectionSpecId, Etag, Sandbox};
use crate::specs;
use chrono::{DateTime, Utc};
use dataverse::{
    AuthError, Client, ClientCredentials, Credentials, Environment, Error, ExecutorOptions, PasswordCredentials,
    Region, Secret, WhoAmI,
};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::fmt;

/// The most app registrations a connection may add to its main one.
pub const MAX_ADDITIONAL_REGISTRATIONS: usize = 16;

/// The auth parameter that lists a destination's app registrations besides the main one.
pub const ADDITIONAL_REGISTRATIONS: &str = "additionalRegistrations";

/// Microsoft's public sample app, which Dataverse accepts for the password sign-in when the user names no app.
pub const PUBLIC_CLIENT_ID: &str = "51f81489-12ee-4a9e-aaae-a2591f45987d";

/// A base connection: one Dynamics 365 environment and the credentials that reach it.
#[derive(Debug, Clone)]
pub struct Connection {
    pub id: ConnectionId,
    pub sandbox: Sandbox,
    pub name: String,
    pub description: String,
    pub spec: ConnectionSpecId,
    pub auth: ConnectionAuth,
    /// Who the connection signed in as when it was last tested.
    pub signed_in_as: Option<WhoAmI>,
    pub etag: Etag,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The credentials of a connection, by auth spec.
#[derive(Debug, Clone)]
pub enum ConnectionAuth {
    /// The destination's app registration (seed 002).
    ClientCredentials(DestinationAuth),
    /// A user name and password (the source's "Basic Authentication for Dynamics-Online").
    Password {
        service_uri: String,
        username: String,
        password: Secret,
        client_id: Option<String>,
        authority_host: Option<String>,
    },
    /// An app registration (the source's "Service Principal Key Based Authentication").
    ServicePrincipal {
        service_uri: String,
        service_principal_id: String,
        service_principal_key: Secret,
        tenant_id: Option<String>,
        authority_host: Option<String>,
    },
}

/// What seed 002 asks for to reach a Dynamics 365 environment, plus an authority host to point at the emulator or a
/// sovereign cloud.
#[derive(Debug, Clone)]
pub struct DestinationAuth {
    pub client_id: String,
    pub client_secret: Secret,
    pub tenant_id: String,
    pub region: Option<String>,
    pub environment_url: String,
    pub authority_host: Option<String>,
    /// More app registrations of the same tenant, each an application user of the environment.
    pub additional: Vec<AdditionalRegistration>,
}

/// An app registration a destination signs in as besides its main one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdditionalRegistration {
    pub client_id: uuid::Uuid,
    pub client_secret: Secret,
}

/// A destination connection as a client of the API asks for one (`POST /connections`, seed 002's parameters):
/// what `dynsync connections create` and `dynsync apply -f` send. The secrets are read from the environment by
/// the caller and go to dynsync's API only.
#[derive(Debug)]
pub struct DestinationRequest {
    pub name: String,
    pub description: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub environment_url: String,
    pub region: Option<String>,
    pub authority_host: Option<String>,
    /// Other app registrations of the tenant: client id and secret.
    pub additional: Vec<(String, Secret)>,
}

impl DestinationRequest {
    /// The request's body.
    pub fn body(&self) -> Json {
        let mut params = serde_json::json!({
            "clientId": self.client_id, "clientSecret": self.client_secret.expose(), "tenantId": self.tenant_id,
            "environmentUrl": self.environment_url,
        });
        if let Some(region) = &self.region {
            params["region"] = region.as_str().into();
        }
        if let Some(authority) = &self.authority_host {
            params["authorityHost"] = authority.as_str().into();
        }
        if !self.additional.is_empty() {
            let registrations = self
                .additional
                .iter()
                .map(|(client_id, secret)| serde_json::json!({"clientId": client_id, "clientSecret": secret.expose()}));
            params[ADDITIONAL_REGISTRATIONS] = Json::Array(registrations.collect());
        }
        serde_json::json!({
            "name": self.name, "description": self.description,
            "auth": {"specName": specs::CLIENT_CREDENTIALS_AUTH, "params": params},
            "connectionSpec": {"id": specs::DYNAMICS_DESTINATION, "version": "1.0"},
        })
    }
}

/// A destination connection ready to use: the environment and the credentials a [`Client`] needs.
#[derive(Debug, Clone)]
pub struct DestinationConnection {
    pub id: ConnectionId,
    pub name: String,
    pub environment: Environment,
    /// An app registration's, or a user's (the password grant).
    pub credentials: Credentials,
    /// The other app registrations it signs in as, in the order of `additionalRegistrations`.
    pub additional: Vec<Credentials>,
}

impl DestinationConnection {
    /// Every registration the connection signs in as, the main one first.
    pub fn registrations(&self) -> Vec<Credentials> {
        std::iter::once(self.credentials.clone()).chain(self.additional.iter().cloned()).collect()
    }

    pub fn client(&self) -> Client {
        if self.additional.is_empty() {
            return Client::new(self.environment.clone(), self.credentials.clone());
        }
        Client::with_registrations(self.environment.clone(), self.registrations(), ExecutorOptions::default())
            .expect("the main registration is always there")
    }
}

/// Why the `auth` of a request does not describe a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthParamsError {
    #[error("connection spec {spec} has no auth spec named '{name}': use one of {known}")]
    UnknownAuthSpec { spec: ConnectionSpecId, name: String, known: String },
    #[error("auth.params.{0} is missing: {1}")]
    Missing(&'static str, &'static str),
    #[error("auth.params.{0} must be a string")]
    NotAString(String),
    #[error("auth.params.{0} is not a parameter of '{1}': the parameters are {2}")]
    Unknown(String, String, String),
    #[error("auth.params: {0}")]
    Environment(#[from] dataverse::EnvironmentError),
    /// Every problem of `additionalRegistrations`, each starting with its place.
    #[error("{}", .0.join("; "))]
    Registrations(Vec<String>),
}

impl ConnectionAuth {
    pub fn spec_name(&self) -> &'static str {
        match self {
            ConnectionAuth::ClientCredentials(_) => specs::CLIENT_CREDENTIALS_AUTH,
            ConnectionAuth::Password { .. } => specs::BASIC_AUTH,
            ConnectionAuth::ServicePrincipal { .. } => specs::SERVICE_PRINCIPAL_AUTH,
        }
    }

    /// Reads `auth: {specName, params}` of a connection request.
    pub fn from_params(
        spec: ConnectionSpecId,
        spec_name: &str,
        params: &Map<String, Json>,
    ) -> Result<ConnectionAuth, AuthParamsError> {
        let definition = specs::auth_params(spec, spec_name).ok_or_else(|| AuthParamsError::UnknownAuthSpec {
            spec,
            name: spec_name.to_string(),
            known: specs::auth_spec_names(spec).iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", "),
        })?;
        let mut values = BTreeMap::new();
        let mut additional = Vec::new();
        for (name, value) in params {
            if name == ADDITIONAL_REGISTRATIONS && spec_name == specs::CLIENT_CREDENTIALS_AUTH {
                let main = params.get("clientId").and_then(Json::as_str).unwrap_or_default();
                additional = additional_registrations(value, main).map_err(AuthParamsError::Registrations)?;
                continue;
            }
            if !definition.iter().any(|p| p.name == name) {
                let names = definition.iter().map(|p| p.name).collect::<Vec<_>>().join(", ");
                return Err(AuthParamsError::Unknown(name.clone(), spec_name.to_string(), names));
            }
            let text = value.as_str().ok_or_else(|| AuthParamsError::NotAString(name.clone()))?.trim();
            if !text.is_empty() {
                values.insert(name.as_str(), text.to_string());
            }
        }
        for p in definition.iter().filter(|p| p.required) {
            if !values.contains_key(p.name) {
                return Err(AuthParamsError::Missing(p.name, p.description));
            }
        }
        let mut take = |name: &str| values.remove(name);
        let auth = match spec_name {
            specs::BASIC_AUTH => ConnectionAuth::Password {
                service_uri: take("serviceUri").unwrap_or_default(),
                username: take("username").unwrap_or_default(),
                password: Secret::new(take("password").unwrap_or_default()),
                client_id: take("clientId"),
                authority_host: take("authorityHost"),
            },
            specs::SERVICE_PRINCIPAL_AUTH => ConnectionAuth::ServicePrincipal {
                service_uri: take("serviceUri").unwrap_or_default(),
                service_principal_id: take("servicePrincipalId").unwrap_or_default(),
                service_principal_key: Secret::new(take("servicePrincipalKey").unwrap_or_default()),
                tenant_id: take("tenantId"),
                authority_host: take("authorityHost"),
            },
            _ => ConnectionAuth::ClientCredentials(DestinationAuth {
                client_id: take("clientId").unwrap_or_default(),
                client_secret: Secret::new(take("clientSecret").unwrap_or_default()),
                tenant_id: take("tenantId").unwrap_or_default(),
                region: take("region"),
                environment_url: take("environmentUrl").unwrap_or_default(),
                authority_host: take("authorityHost"),
                additional,
            }),
        };
        auth.environment()?;
        Ok(auth)
    }

    /// The parameters that may be shown, and the secret ones, by place (`clientSecret`,
    /// `additionalRegistrations[1].clientSecret`); [`with_secrets`] puts them back.
    pub fn to_params(&self) -> (Map<String, Json>, BTreeMap<String, Secret>) {
        let mut public = Map::new();
        let mut secret = BTreeMap::new();
        let mut put = |name: &str, value: &Option<String>| {
            if let Some(v) = value {
                public.insert(name.to_string(), Json::String(v.clone()));
            }
        };
        match self {
            ConnectionAuth::ClientCredentials(d) => {
                put("clientId", &Some(d.client_id.clone()));
                put("tenantId", &Some(d.tenant_id.clone()));
                put("region", &d.region);
                put("environmentUrl", &Some(d.environment_url.clone()));
                put("authorityHost", &d.authority_host);
                secret.insert("clientSecret".to_string(), d.client_secret.clone());
                if !d.additional.is_empty() {
                    let ids = d.additional.iter().map(|r| json_object([("clientId", r.client_id.to_string())]));
                    public.insert(ADDITIONAL_REGISTRATIONS.to_string(), Json::Array(ids.collect()));
                    for (i, r) in d.additional.iter().enumerate() {
                        secret.insert(format!("{ADDITIONAL_REGISTRATIONS}[{i}].clientSecret"), r.client_secret.clone());
                    }
                }
            }
            ConnectionAuth::Password { service_uri, username, password, client_id, authority_host } => {
                put("serviceUri", &Some(service_uri.clone()));
                put("username", &Some(username.clone()));
                put("clientId", client_id);
                put("authorityHost", authority_host);
                secret.insert("password".to_string(), password.clone());
            }
            ConnectionAuth::ServicePrincipal {
                service_uri,
                service_principal_id,
                service_principal_key,
                tenant_id,
                authority_host,
            } => {
                put("serviceUri", &Some(service_uri.clone()));
                put("servicePrincipalId", &Some(service_principal_id.clone()));
                put("tenantId", tenant_id);
                put("authorityHost", authority_host);
                secret.insert("servicePrincipalKey".to_string(), service_principal_key.clone());
            }
        }
        (public, secret)
    }

    /// Where the connection sends its credentials, each URL with the parameter it comes from: the environment,
    /// and the sign-in authority when it is known before signing in (otherwise the environment names it).
    pub fn places(&self) -> Vec<(&'static str, String)> {
        let environment = self.environment().ok();
        let mut places: Vec<(&'static str, String)> = Vec::new();
        let (param, authority) = match self {
            ConnectionAuth::ClientCredentials(d) => {
                let authority = environment.as_ref().map(|e| authority_for(d.authority_host.as_deref(), e));
                ("environmentUrl", authority)
            }
            ConnectionAuth::Password { authority_host, .. }
            | ConnectionAuth::ServicePrincipal { authority_host, .. } => ("serviceUri", authority_host.clone()),
        };
        if let Some(environment) = environment {
            places.push((param, environment.url()));
        }
        if let Some(authority) = authority {
            places.push(("authorityHost", authority));
        }
        places
    }

    /// The Dynamics environment the connection reaches.
    pub fn environment(&self) -> Result<Environment, dataverse::EnvironmentError> {
        match self {
            ConnectionAuth::ClientCredentials(d) => {
                let url = d.environment_url.trim();
                if url.contains("://") {
                    Environment::from_url(url)
                } else if let Some(region) = &d.region {
                    Environment::from_organization(url, region.parse::<Region>()?)
                } else if url.contains('.') {
                    Environment::from_url(&format!("https://{url}"))
                } else {
                    // Seed 002 asks for the organization part alone, with the region beside it.
                    Environment::from_organization(url, Region::NorthAmerica)
                }
            }
            ConnectionAuth::Password { service_uri, .. } | ConnectionAuth::ServicePrincipal { service_uri, .. } => {
                Environment::from_url(service_uri)
            }
        }
    }
}

/// The parameters of [`ConnectionAuth::to_params`] with the secrets put back in their places, as
/// [`ConnectionAuth::from_params`] reads them.
pub fn with_secrets(mut params: Map<String, Json>, secrets: &BTreeMap<String, Secret>) -> Map<String, Json> {
    for (place, secret) in secrets {
        let value = Json::String(secret.expose().to_string());
        let nested = place
            .strip_prefix(ADDITIONAL_REGISTRATIONS)
            .and_then(|rest| rest.strip_prefix('['))
            .and_then(|rest| rest.split_once("]."))
            .and_then(|(index, name)| Some((index.parse::<usize>().ok()?, name)));
        match nested {
            Some((index, name)) => {
                let entry = params.get_mut(ADDITIONAL_REGISTRATIONS).and_then(|list| list.get_mut(index));
                if let Some(Json::Object(entry)) = entry {
                    entry.insert(name.to_string(), value);
                }
            }
            None => {
                params.insert(place.clone(), value);
            }
        }
    }
    params
}

/// The parameter a secret's place belongs to: `additionalRegistrations` for each of its secrets.
pub fn param_of(place: &str) -> &str {
    place.split(['[', '.']).next().unwrap_or(place)
}

fn json_object<const N: usize>(fields: [(&str, String); N]) -> Json {
    Json::Object(fields.into_iter().map(|(k, v)| (k.to_string(), Json::String(v))).collect())
}

/// Reads `additionalRegistrations`: a list of `{clientId, clientSecret}`, each client id a GUID, none twice and
/// none the main `clientId`. Every problem is returned, each named by its place.
fn additional_registrations(value: &Json, main_client_id: &str) -> Result<Vec<AdditionalRegistration>, Vec<String>> {
    let place = format!("auth.params.{ADDITIONAL_REGISTRATIONS}");
    let Json::Array(list) = value else {
        return Err(vec![format!("{place} must be a list of {{clientId, clientSecret}}, one per app registration")]);
    };
    let mut problems = Vec::new();
    if list.len() > MAX_ADDITIONAL_REGISTRATIONS {
        problems.push(format!(
            "{place} has {} app registrations: at most {MAX_ADDITIONAL_REGISTRATIONS} may be added to the main one;              split the load over several connections instead",
            list.len()
        ));
    }
    let main = main_client_id.trim().parse::<uuid::Uuid>().ok();
    let mut seen: Vec<(usize, uuid::Uuid)> = Vec::new();
    let mut found = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let at = format!("{place}[{i}]");
        let Json::Object(entry) = entry else {
            problems.push(format!("{at} must be an object {{clientId, clientSecret}}"));
            continue;
        };
        for name in entry.keys().filter(|k| *k != "clientId" && *k != "clientSecret") {
            problems
                .push(format!("{at}.{name} is not a parameter of an app registration: give clientId and clientSecret"));
        }
        let text = |name: &str| entry.get(name).and_then(Json::as_str).map(str::trim).filter(|t| !t.is_empty());
        let client_id = match (entry.get("clientId"), text("clientId")) {
            (_, Some(id)) => match id.parse::<uuid::Uuid>() {
                Ok(id) => Some(id),
                Err(_) => {
                    problems.push(format!(
                        "{at}.clientId {id} is not a GUID: give the Application (client) ID of the app registration"
                    ));
                    None
                }
            },
            (Some(v), None) if !v.is_string() => {
                problems.push(format!("{at}.clientId must be a string"));
                None
            }
            _ => {
                problems.push(format!(
                    "{at}.clientId is missing: give the Application (client) ID of the app registration"
                ));
                None
            }
        };
        let client_secret = match (entry.get("clientSecret"), text("clientSecret")) {
            (_, Some(secret)) => Some(Secret::new(secret)),
            (Some(v), None) if !v.is_string() => {
                problems.push(format!("{at}.clientSecret must be a string"));
                None
            }
            _ => {
                problems.push(format!("{at}.clientSecret is missing: give a client secret of the app registration"));
                None
            }
        };
        if let Some(id) = client_id {
            if Some(id) == main {
                problems.push(format!(
                    "{at}.clientId {id} is the connection's clientId: each additional registration must be another app"
                ));
            } else if let Some((first, _)) = seen.iter().find(|(_, s)| *s == id) {
                problems
                    .push(format!("{at}.clientId {id} is given twice (also at {place}[{first}]): give each app once"));
            }
            seen.push((i, id));
        }
        if let (Some(client_id), Some(client_secret)) = (client_id, client_secret) {
            found.push(AdditionalRegistration { client_id, client_secret });
        }
    }
    if problems.is_empty() { Ok(found) } else { Err(problems) }
}

/// The sign-in authority to use: the one given, else the region's cloud.
fn authority_for(given: Option<&str>, environment: &Environment) -> String {
    given
        .map(|a| a.trim_end_matches('/').to_string())
        .or_else(|| environment.region().map(|r| r.authority().to_string()))
        .unwrap_or_else(|| Region::NorthAmerica.authority().to_string())
}

impl DestinationAuth {
    pub fn credentials(&self, environment: &Environment) -> ClientCredentials {
        ClientCredentials {
            tenant_id: self.tenant_id.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            authority: authority_for(self.authority_host.as_deref(), environment),
        }
    }

    /// The credentials of each additional registration, in their order: same tenant, same authority.
    pub fn additional_credentials(&self, environment: &Environment) -> Vec<ClientCredentials> {
        let main = self.credentials(environment);
        self.additional
            .iter()
            .map(|r| ClientCredentials {
                client_id: r.client_id.to_string(),
                client_secret: r.client_secret.clone(),
                ..main.clone()
            })
            .collect()
    }
}

impl Connection {
    /// The connection as a destination, if it is one: signed in as an app registration, or as a user with a
    /// password (through the public client app given, Microsoft's sample app by default).
    pub fn destination(&self) -> Option<DestinationConnection> {
        let environment = self.auth.environment().ok()?;
        let credentials = match &self.auth {
            ConnectionAuth::ClientCredentials(auth) => Credentials::ClientSecret(auth.credentials(&environment)),
            ConnectionAuth::Password { username, password, client_id, authority_host, .. } => {
                Credentials::Password(PasswordCredentials {
                    tenant_id: "organizations".into(),
                    client_id: client_id.clone().unwrap_or_else(|| PUBLIC_CLIENT_ID.to_string()),
                    username: username.clone(),
                    password: password.clone(),
                    client_secret: None,
                    authority: authority_for(authority_host.as_deref(), &environment),
                })
            }
            // A service principal signs in to its tenant: found when the connection was made, if not given.
            ConnectionAuth::ServicePrincipal {
                service_principal_id,
                service_principal_key,
                tenant_id: Some(tenant_id),
                authority_host,
                ..
            } => Credentials::ClientSecret(ClientCredentials {
                tenant_id: tenant_id.clone(),
                client_id: service_principal_id.clone(),
                client_secret: service_principal_key.clone(),
                authority: authority_for(authority_host.as_deref(), &environment),
            }),
            ConnectionAuth::ServicePrincipal { tenant_id: None, .. } => return None,
        };
        let additional = match &self.auth {
            ConnectionAuth::ClientCredentials(auth) => {
                auth.additional_credentials(&environment).into_iter().map(Credentials::ClientSecret).collect()
            }
            _ => Vec::new(),
        };
        Some(DestinationConnection { id: self.id, name: self.name.clone(), credentials, additional, environment })
    }
}

/// Why a connection does not work.
#[derive(Debug)]
pub struct ConnectionProblem {
    environment: String,
    reason: Reason,
}

#[derive(Debug)]
enum Reason {
    Dataverse(Error),
    PasswordSignIn {
        code: u32,
        username: String,
        detail: String,
    },
    Discovery(String),
    /// A URL the credentials may not be sent to.
    Refused(Box<HostRefused>),
    /// Additional app registrations that do not work (each with its place and why), and those that do.
    Registrations {
        failed: Vec<(String, uuid::Uuid, ConnectionProblem)>,
        signed_in: Vec<String>,
    },
}

impl ConnectionProblem {
    /// Whether trying again later may work (a network failure), as opposed to a setting to fix.
    pub fn is_transient(&self) -> bool {
        match &self.reason {
            Reason::Dataverse(Error::Auth(a)) => a.is_transient(),
            Reason::Dataverse(Error::Transport { .. }) => true,
            Reason::Dataverse(Error::Api(api)) => api.status >= 500 || api.status == 429,
            Reason::Discovery(_) => true,
            Reason::Registrations { failed, .. } => failed.iter().all(|(_, _, problem)| problem.is_transient()),
            _ => false,
        }
    }
}

impl fmt::Display for ConnectionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env = &self.environment;
        match &self.reason {
            Reason::Dataverse(Error::Auth(auth @ AuthError::Unreachable { .. })) => {
                write!(f, "{auth}; check the authority URL and the network")
            }
            Reason::Dataverse(Error::Auth(auth)) => write!(f, "{auth}"),
            Reason::Dataverse(Error::Api(api)) if api.status == 401 || api.status == 403 => write!(
                f,
                "the app signs in but has no access to {env}: add it to the environment as an application user with a \
                 security role (Power Platform admin center, Environments, Settings, Application users). Dataverse said: {}",
                api.message
            ),
            Reason::Dataverse(Error::Api(api)) if api.status == 404 => {
                write!(f, "{env} does not answer as a Dataverse environment (404 on WhoAmI): check the environment URL")
            }
            Reason::Dataverse(error @ Error::Transport { .. }) => {
                write!(f, "could not reach {env}: check the environment URL and the network ({error})")
            }
            Reason::Dataverse(other) => write!(f, "{other}"),
            Reason::PasswordSignIn { code: 50126, username, .. } => {
                write!(f, "the password of {username} is wrong, or has expired: check it by signing in to {env}")
            }
            Reason::PasswordSignIn { code: 50034, username, .. } => {
                write!(f, "user {username} does not exist in the environment's tenant: check the user name")
            }
            Reason::PasswordSignIn { code: 50076 | 50079, username, .. } => write!(
                f,
                "user {username} must use multi-factor authentication, which a password sign-in cannot do: use the \
                 Service Principal auth spec instead"
            ),
            Reason::PasswordSignIn { code: 700016, .. } => write!(
                f,
                "the app dynsync signs in with is not known in the environment's tenant: give auth.params.clientId, the \
                 id of a public client app registered there"
            ),
            Reason::PasswordSignIn { code, detail, .. } => write!(f, "sign-in failed with AADSTS{code}: {detail}"),
            Reason::Refused(refused) => write!(f, "{refused}"),
            Reason::Registrations { failed, signed_in } => {
                for (i, (place, client_id, problem)) in failed.iter().enumerate() {
                    let separator = if i == 0 { "" } else { "; " };
                    write!(
                        f,
                        "{separator}app registration {client_id} ({place}) does not work: {problem} (fix {place}, or \
                         remove it from the list)"
                    )?;
                }
                write!(f, "; these signed in: {}", signed_in.join(", "))
            }
            Reason::Discovery(detail) => write!(
                f,
                "could not find the sign-in authority of {env} ({detail}): check the service URI, or give authorityHost"
            ),
        }
    }
}

impl std::error::Error for ConnectionProblem {}

/// Signs in and asks the environment who the app is.
pub async fn check(environment: Environment, credentials: ClientCredentials) -> Result<WhoAmI, ConnectionProblem> {
    let url = environment.url();
    Client::new(environment, credentials)
        .who_am_i()
        .await
        .map_err(|error| ConnectionProblem { environment: url, reason: Reason::Dataverse(error) })
}

/// Fills in the tenant of a service principal connection that names none (seed 003 asks for none), as the
/// environment announces it: the connection then signs in to it without asking again.
pub async fn settle_tenant(
    http: &reqwest::Client,
    hosts: &AllowedHosts,
    auth: &mut ConnectionAuth,
) -> Result<(), ConnectionProblem> {
    let ConnectionAuth::ServicePrincipal { tenant_id: tenant_id @ None, service_uri, .. } = auth else { return Ok(()) };
    let environment = Environment::from_url(service_uri)
        .map_err(|e| ConnectionProblem { environment: String::new(), reason: Reason::Discovery(e.to_string()) })?;
    let problem = |reason| ConnectionProblem { environment: environment.url(), reason };
    hosts.check("serviceUri", service_uri).map_err(|refused| problem(Reason::Refused(Box::new(refused))))?;
    let (_, tenant) = discover_authority(http, &environment).await.map_err(|e| problem(Reason::Discovery(e)))?;
    *tenant_id = Some(tenant);
    Ok(())
}

/// Tests a connection's credentials against its environment: a token, then `WhoAmI`. Nothing is sent to a host
/// `hosts` does not allow, the authority an environment names included.
pub async fn test(
    http: &reqwest::Client,
    hosts: &AllowedHosts,
    auth: &ConnectionAuth,
) -> Result<WhoAmI, ConnectionProblem> {
    let environment = auth
        .environment()
        .map_err(|e| ConnectionProblem { environment: String::new(), reason: Reason::Discovery(e.to_string()) })?;
    let problem = |reason| ConnectionProblem { environment: environment.url(), reason };
    for (param, url) in auth.places() {
        hosts.check(param, &url).map_err(|refused| problem(Reason::Refused(Box::new(refused))))?;
    }
    let discover = || async { discover_authority(http, &environment).await.map_err(|e| problem(Reason::Discovery(e))) };
    // An authority the environment named is checked as one given would be.
    let allowed = |authority: &str| hosts.check("authorityHost", authority).map_err(Box::new);
    match auth {
        ConnectionAuth::ClientCredentials(d) => {
            let who = check(environment.clone(), d.credentials(&environment)).await?;
            let mut failed = Vec::new();
            let mut signed_in = vec![d.client_id.clone()];
            for (i, credentials) in d.additional_credentials(&environment).into_iter().enumerate() {
                let client_id = d.additional[i].client_id;
                match check(environment.clone(), credentials).await {
                    Ok(_) => signed_in.push(client_id.to_string()),
                    Err(problem) => {
                        failed.push((format!("auth.params.{ADDITIONAL_REGISTRATIONS}[{i}]"), client_id, problem))
                    }
                }
            }
            if failed.is_empty() { Ok(who) } else { Err(problem(Reason::Registrations { failed, signed_in })) }
        }
        ConnectionAuth::ServicePrincipal {
            service_principal_id,
            service_principal_key,
            tenant_id,
            authority_host,
            ..
        } => {
            let (authority, tenant) = match (authority_host, tenant_id) {
                (Some(a), Some(t)) => (a.clone(), t.clone()),
                _ => {
                    let (found_authority, found_tenant) = discover().await?;
                    (authority_host.clone().unwrap_or(found_authority), tenant_id.clone().unwrap_or(found_tenant))
                }
            };
            allowed(&authority).map_err(|r| problem(Reason::Refused(r)))?;
            let credentials = ClientCredentials {
                tenant_id: tenant,
                client_id: service_principal_id.clone(),
                client_secret: service_principal_key.clone(),
                authority,
            };
            check(environment.clone(), credentials).await
        }
        ConnectionAuth::Password { username, password, client_id, authority_host, .. } => {
            let (found_authority, tenant) = discover().await?;
            let authority = authority_host.clone().unwrap_or(found_authority);
            allowed(&authority).map_err(|r| problem(Reason::Refused(r)))?;
            let token_url = format!("{}/{tenant}/oauth2/v2.0/token", authority.trim_end_matches('/'));
            let scope = format!("{}/user_impersonation", environment.url());
            let client_id = client_id.as_deref().unwrap_or(PUBLIC_CLIENT_ID);
            let reply = http
                .post(&token_url)
                .form(&[
                    ("grant_type", "password"),
                    ("client_id", client_id),
                    ("username", username),
                    ("password", password.expose()),
                    ("scope", &scope),
                ])
                .send()
                .await
                .map_err(|e| {
                    problem(Reason::Discovery(format!("the token endpoint {token_url} did not answer: {e}")))
                })?;
            let ok = reply.status().is_success();
            let body: Json = reply.json().await.unwrap_or_default();
            if !ok {
                let code = body["error_codes"][0].as_u64().unwrap_or_default() as u32;
                let detail = body["error_description"].as_str().unwrap_or_default();
                let detail = detail.lines().next().unwrap_or_default().to_string();
                return Err(problem(Reason::PasswordSignIn { code, username: username.clone(), detail }));
            }
            let token = body["access_token"].as_str().unwrap_or_default();
            let url = format!("{}WhoAmI", environment.web_api());
            let reply = http
                .get(&url)
                .bearer_auth(token)
                .header("Accept", "application/json")
                .send()
                .await
                .map_err(|source| problem(Reason::Dataverse(Error::Transport { url: url.clone(), source })))?;
            if !reply.status().is_success() {
                return Err(problem(Reason::Dataverse(Error::Api(dataverse::ApiError::from_response(reply).await))));
            }
            reply
                .json::<WhoAmI>()
                .await
                .map_err(|e| problem(Reason::Dataverse(Error::UnexpectedBody { url, detail: e.to_string() })))
        }
    }
}

/// The authority and tenant of an environment, from the `WWW-Authenticate` header Dataverse answers an anonymous
/// request with (`Bearer authorization_uri=https://login.microsoftonline.com/<tenant>/oauth2/authorize`).
async fn discover_authority(http: &reqwest::Client, environment: &Environment) -> Result<(String, String), String> {
    let url = format!("{}WhoAmI", environment.web_api());
    let reply = http.get(&url).send().await.map_err(|e| format!("{url} did not answer: {e}"))?;
    let header = reply
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("{url} answered {} without a WWW-Authenticate header", reply.status()))?;
    parse_authorization_uri(header).ok_or_else(|| format!("its WWW-Authenticate header names no authority: {header}"))
}

fn parse_authorization_uri(header: &str) -> Option<(String, String)> {
    let start = header.find("authorization_uri=")? + "authorization_uri=".len();
    let uri = header[start..].split([',', ' ']).next()?.trim_matches('"');
    let parsed = url::Url::parse(uri).ok()?;
    let tenant = parsed.path_segments()?.next()?.to_string();
    let authority = uri[..uri.find(&format!("/{tenant}/"))?].to_string();
    Some((authority, tenant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_app_without_access_is_told_where_to_grant_it() {
        let api = dataverse::ApiError {
            status: 403,
            code: "0x80072560".into(),
            message: "The user is not a member of the organization.".into(),
            request_id: None,
            retry_after: None,
            kind: dataverse::ErrorKind::Auth,
        };
        let problem = ConnectionProblem {
            environment: "https://contoso.crm4.dynamics.com".into(),
            reason: Reason::Dataverse(Error::Api(api)),
        };
        let text = problem.to_string();
        assert!(text.starts_with("the app signs in but has no access to https://contoso.crm4.dynamics.com"), "{text}");
        assert!(text.contains("Application users") && text.contains("not a member of the organization"), "{text}");
        assert!(!problem.is_transient());
    }

    #[test]
    fn the_authority_comes_from_www_authenticate() {
        assert_eq!(
            parse_authorization_uri(
                "Bearer authorization_uri=https://login.microsoftonline.com/0f1e2d3c/oauth2/authorize, resource_id=https://x"
            ),
            Some(("https://login.microsoftonline.com".into(), "0f1e2d3c".into()))
        );
        assert_eq!(
            parse_authorization_uri("Bearer authorization_uri=http://127.0.0.1:4000/t1/oauth2/authorize"),
            Some(("http://127.0.0.1:4000".into(), "t1".into()))
        );
        assert_eq!(parse_authorization_uri("Basic realm=x"), None);
    }

    #[test]
    fn destination_environments_come_from_an_organization_and_a_region_or_a_url() {
        let params = |env: &str, region: Option<&str>| {
            let mut p = json!({"clientId": "c", "clientSecret": "s", "tenantId": "t", "environmentUrl": env});
            if let Some(r) = region {
                p["region"] = json!(r);
            }
            p.as_object().unwrap().clone()
        };
        let auth = |p| ConnectionAuth::from_params(specs::DYNAMICS_DESTINATION, specs::CLIENT_CREDENTIALS_AUTH, &p);
        let env = |p| auth(p).unwrap().environment().unwrap().url();
        assert_eq!(env(params("org57771b33", Some("crm3"))), "https://org57771b33.crm3.dynamics.com");
        assert_eq!(env(params("org57771b33", None)), "https://org57771b33.crm.dynamics.com");
        assert_eq!(env(params("https://contoso.crm4.dynamics.com", None)), "https://contoso.crm4.dynamics.com");
        assert_eq!(env(params("contoso.crm4.dynamics.com", None)), "https://contoso.crm4.dynamics.com");
        assert!(matches!(auth(params("x", Some("crm99"))), Err(AuthParamsError::Environment(_))));
        let mut missing = params("x", None);
        missing.remove("clientSecret");
        assert_eq!(
            auth(missing).unwrap_err().to_string().split(':').next(),
            Some("auth.params.clientSecret is missing")
        );
        let (public, secret) = auth(params("x", Some("crm"))).unwrap().to_params();
        assert!(!public.contains_key("clientSecret"));
        assert_eq!(secret["clientSecret"].expose(), "s");
    }

    #[test]
    fn additional_registrations_round_trip_with_their_secrets_apart() {
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let params = json!({
            "clientId": "c", "clientSecret": "s", "tenantId": "t", "environmentUrl": "https://contoso.crm4.dynamics.com",
            "additionalRegistrations": [{"clientId": a.to_string(), "clientSecret": "secret-of-a"}, {"clientId": b.to_string(), "clientSecret": "secret-of-b"}]
        });
        let read = |p: &Map<String, Json>| {
            ConnectionAuth::from_params(specs::DYNAMICS_DESTINATION, specs::CLIENT_CREDENTIALS_AUTH, p).unwrap()
        };
        let auth = read(params.as_object().unwrap());
        let (public, secrets) = auth.to_params();
        assert_eq!(
            public["additionalRegistrations"],
            json!([{"clientId": a.to_string()}, {"clientId": b.to_string()}])
        );
        assert_eq!(secrets["additionalRegistrations[1].clientSecret"].expose(), "secret-of-b");
        assert_eq!(param_of("additionalRegistrations[1].clientSecret"), "additionalRegistrations");
        let again = read(&with_secrets(public, &secrets));
        let ConnectionAuth::ClientCredentials(d) = &again else { panic!("{again:?}") };
        assert_eq!(
            d.additional.iter().map(|r| (r.client_id, r.client_secret.expose())).collect::<Vec<_>>(),
            [(a, "secret-of-a"), (b, "secret-of-b")]
        );
        let shown = format!("{again:?}");
        assert!(!shown.contains("secret-of-a") && !shown.contains("secret-of-b"), "no secret in Debug: {shown}");
    }
}
