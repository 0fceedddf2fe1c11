//! One emulated environment: its store, its directory (who can sign in), its ids, and the server that
//! answers for it.
//!
//! The handle, [`RunningEmulator`], also does what an administrator does in Entra ID while clients keep
//! working: add and remove the application's client secrets and revoke the tokens issued so far, so that a
//! client's handling of secret rotation can be tested. With a state file these changes are kept (the
//! settings `client_secrets` and `signing_key`) and outlive a restart, as the credentials themselves do.

use crate::auth::{AppRegistration, Application, Directory, Secret, UserLogin};
use crate::faults::{FaultPlan, Faults};
use crate::limits::{CostModel, Limiter, Limits};
use crate::store::Store;
use crate::value::{Row, Value};
use anyhow::Context;
use rand::Rng;
use rand::distr::Alphanumeric;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use uuid::Uuid;

/// How to start an emulator. Everything left out is generated on first start and, with a state file,
/// kept for the next one.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub listen: SocketAddr,
    pub state: Option<PathBuf>,
    pub tenant_id: Option<Uuid>,
    pub client_id: Option<Uuid>,
    pub client_secret: Option<Secret>,
    /// Users for the password grant: (user name, password).
    pub users: Vec<(String, Secret)>,
    /// More app registrations besides the first (`client_id`), each with its own client id, secret and
    /// application user — and so its own service protection budget.
    pub applications: Vec<AppRegistration>,
    pub token_lifetime: Duration,
    /// Service protection limits, per user and per web server (Dynamics 365's by default).
    pub limits: Limits,
    /// The web servers the environment runs on (at least one), each counting every user's usage on its own
    /// and with its own capacity; a client is pinned to one by the `ARRAffinity` cookie, and spread over them
    /// without it.
    pub web_servers: usize,
    /// What each request costs in execution time, and so how long it takes to answer.
    pub cost: CostModel,
    /// Faults to inject, for resilience tests.
    pub faults: FaultPlan,
    /// Serve HTTPS with a self-signed certificate, written (as PEM) to this path for clients to trust.
    pub tls_certificate: Option<PathBuf>,
    /// How long a change-tracking token stays valid.
    pub change_retention: Duration,
    /// How many generated custom tables (with views and a few rows each) the environment has besides the
    /// built-in ones, so that discovery meets a catalog as broad as a real organization's; see
    /// [`crate::schema::generated`]. 0 by default.
    pub generated_tables: usize,
    /// Install Customer Insights – Journeys' consent tables, as the app's solution does: `msdynmkt_purpose` (with
    /// the default "Commercial" and "Transactional" purposes), `msdynmkt_topic` and `msdynmkt_contactpointconsent4`;
    /// see [`crate::schema::journeys`]. Off by default: environments without the app lack these tables. With a
    /// state file, tables once installed stay.
    pub journeys: bool,
}

/// Dataverse keeps change-tracking data for 7 days by default.
pub const DEFAULT_CHANGE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state: None,
            tenant_id: None,
            client_id: None,
            client_secret: None,
            users: Vec::new(),
            applications: Vec::new(),
            token_lifetime: Duration::from_secs(3599),
            limits: Limits::default(),
            web_servers: 1,
            cost: CostModel::default(),
            faults: FaultPlan::default(),
            tls_certificate: None,
            change_retention: DEFAULT_CHANGE_RETENTION,
            generated_tables: 0,
            journeys: false,
        }
    }
}

/// A running environment's shared state.
pub struct Environment {
    pub store: Store,
    pub directory: Directory,
    /// The environment URL (`http://127.0.0.1:PORT`): the resource tokens are issued for.
    pub url: String,
    pub organization_id: Uuid,
    pub business_unit_id: Uuid,
    /// Directory object id → the systemuser row that acts for it.
    pub callers: HashMap<Uuid, Uuid>,
    pub limiter: Arc<Limiter>,
    /// Behind a lock: a test may change the costs while clients run (see [`Environment::set_cost`]).
    cost: RwLock<CostModel>,
    pub change_retention: Duration,
}

/// A started emulator. Dropping it stops the server.
pub struct RunningEmulator {
    pub url: String,
    pub web_api: String,
    pub token_url: String,
    pub tenant_id: Uuid,
    pub client_id: Uuid,
    /// The client secret the application started with; it stays here when rotated out.
    pub client_secret: Secret,
    /// The other app registrations, as configured.
    pub applications: Vec<AppRegistration>,
    pub environment: Arc<Environment>,
    /// The faults being injected; `faults.inject(plan)` changes them while the emulator runs.
    pub faults: Arc<Faults>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningEmulator {
    /// The line the binary prints on start, for scripts and tests to find the emulator.
    pub fn announcement(&self) -> serde_json::Value {
        serde_json::json!({
            "url": self.url,
            "web_api": self.web_api,
            "token_url": self.token_url,
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "client_secret": self.client_secret.expose(),
            "applications": self.applications.iter().map(|a| serde_json::json!({
                "client_id": a.client_id,
                "client_secret": a.client_secret.expose(),
            })).collect::<Vec<_>>(),
        })
    }

    /// Adds a client secret to the application, as an administrator does in Entra ID before rotating the
    /// old one out, and returns it: from now on it signs in, along with the others.
    pub fn add_client_secret(&self) -> Secret {
        let secret = Secret::new(random_secret());
        self.environment.change_client_secrets(|secrets| secrets.push(secret.clone()));
        secret
    }

    /// Removes a client secret from the application; true when it was one. Any secret may go, the last
    /// one too (then client credentials sign in no more). Tokens it got stay valid until they expire.
    pub fn remove_client_secret(&self, secret: &str) -> bool {
        self.environment.change_client_secrets(|secrets| {
            let before = secrets.len();
            secrets.retain(|s| s.expose() != secret);
            secrets.len() != before
        })
    }

    /// Revokes every token issued so far, access and refresh: the Web API answers them with the 401 it
    /// gives for a token this environment did not issue. Signing in again gives a token that works.
    pub fn revoke_tokens(&self) {
        let directory = &self.environment.directory;
        let mut key = directory.signing_key.write().unwrap_or_else(|e| e.into_inner());
        *key = Secret::new(random_secret());
        self.environment.store.keep_setting("signing_key", key.expose());
    }

    /// Stops accepting requests and waits for the server to finish and for the state file to hold every
    /// change, the rotations through this handle included.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Err(e) = self.environment.store.flush().await {
            tracing::error!(error = %e, "the state file may lack the last changes");
        }
    }
}

impl Environment {
    /// What each request costs now.
    pub fn cost(&self) -> CostModel {
        *self.cost.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes what requests cost while the emulator runs: a client that modelled the old costs must
    /// adapt to the new ones.
    pub fn set_cost(&self, cost: CostModel) {
        *self.cost.write().unwrap_or_else(|e| e.into_inner()) = cost;
    }

    /// Changes the application's client secrets and keeps the new set in the state file. The set stays
    /// locked until the change is queued for the file, so concurrent changes reach it in order.
    fn change_client_secrets<T>(&self, change: impl FnOnce(&mut Vec<Secret>) -> T) -> T {
        let mut secrets = self.directory.client_secrets.write().unwrap_or_else(|e| e.into_inner());
        let result = change(&mut secrets);
        self.store.keep_setting("client_secrets", &secrets_setting(&secrets));
        result
    }
}

/// The `client_secrets` setting: the secrets as a JSON list.
fn secrets_setting(secrets: &[Secret]) -> String {
    serde_json::to_string(&secrets.iter().map(Secret::expose).collect::<Vec<_>>()).expect("strings serialize")
}

/// The application's client secrets on start: those the state file kept from the last rotation, else just
/// `client_secret` (configured or generated). A secret given in the configuration always signs in: it
/// comes first, in place of the one configured last time, and the state file keeps the resulting set.
async fn client_secrets(
    store: &Store,
    client_secret: &str,
    configured: bool,
    previous: Option<String>,
) -> anyhow::Result<Vec<Secret>> {
    let Some(text) = store.setting("client_secrets") else {
        return Ok(vec![Secret::new(client_secret)]);
    };
    let kept: Vec<String> =
        serde_json::from_str(&text).context("the state file's client_secrets setting is not a JSON list of strings")?;
    let mut secrets: Vec<Secret> = kept.into_iter().map(Secret::new).collect();
    if configured {
        secrets.retain(|s| s.expose() != client_secret && Some(s.expose()) != previous.as_deref());
        secrets.insert(0, Secret::new(client_secret));
        store.set_setting("client_secrets", &secrets_setting(&secrets)).await?;
    }
    if secrets.is_empty() {
        tracing::warn!("the application has no client secrets left: client-credentials sign-ins are refused");
    }
    Ok(secrets)
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn random_secret() -> String {
    rand::rng().sample_iter(&Alphanumeric).take(40).map(char::from).collect()
}

/// A setting from the flags, else from the state file, else generated — and kept in the state file.
async fn setting(
    store: &Store,
    key: &str,
    given: Option<String>,
    generate: impl FnOnce() -> String,
) -> anyhow::Result<String> {
    let value = match (given, store.setting(key)) {
        (Some(v), _) => v,
        (None, Some(stored)) => return Ok(stored),
        (None, None) => generate(),
    };
    store.set_setting(key, &value).await?;
    Ok(value)
}

async fn setting_id(store: &Store, key: &str, given: Option<Uuid>) -> anyhow::Result<Uuid> {
    let text = setting(store, key, given.map(|g| g.to_string()), || Uuid::new_v4().to_string()).await?;
    text.parse().with_context(|| format!("the state file holds '{text}' for {key}, which is not a GUID"))
}

/// The TLS acceptor for `--tls`: the certificate and key are generated once and kept in the state file, so
/// a client that trusts the certificate keeps trusting it across restarts; the certificate is (re)written
/// to `path` on every start.
async fn tls(store: &Store, path: &Path) -> anyhow::Result<TlsAcceptor> {
    let (certificate, key) = match (store.setting("tls_certificate"), store.setting("tls_key")) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let (c, k) = crate::serve::self_signed_certificate()?;
            store.set_setting("tls_certificate", &c).await?;
            store.set_setting("tls_key", &k).await?;
            (c, k)
        }
    };
    std::fs::write(path, &certificate)
        .with_context(|| format!("writing the TLS certificate to {}; choose a writable path", path.display()))?;
    crate::serve::tls_acceptor(&certificate, &key)
}

/// Makes sure a systemuser row exists for someone who can sign in.
async fn ensure_user(
    store: &Store,
    id: Uuid,
    name: &str,
    object_id: Uuid,
    application_id: Option<Uuid>,
) -> anyhow::Result<()> {
    store
        .write(|data, changes| {
            if data.rows("systemuser").get(&id).is_some() {
                return Ok::<_, anyhow::Error>(());
            }
            let now = Value::DateTime(chrono::Utc::now());
            let mut row = Row::new();
            row.insert("systemuserid".into(), Value::Guid(id));
            row.insert("fullname".into(), Value::Text(name.to_string()));
            row.insert("domainname".into(), Value::Text(name.to_string()));
            row.insert("azureactivedirectoryobjectid".into(), Value::Guid(object_id));
            if let Some(app) = application_id {
                row.insert("applicationid".into(), Value::Guid(app));
            }
            row.insert("isdisabled".into(), Value::Bool(false));
            row.insert("statecode".into(), Value::Int(0));
            row.insert("statuscode".into(), Value::Int(1));
            row.insert("createdon".into(), now.clone());
            row.insert("modifiedon".into(), now);
            row.insert("versionnumber".into(), Value::Int(data.next_version()));
            data.put_row(changes, "systemuser", id, row);
            Ok(())
        })
        .await
}

impl EmulatorConfig {
    pub async fn start(self) -> anyhow::Result<RunningEmulator> {
        let store = match &self.state {
            Some(path) => Store::open(path).await?,
            None => Store::in_memory(),
        };
        let tenant_id = setting_id(&store, "tenant_id", self.tenant_id).await?;
        let client_id = setting_id(&store, "client_id", self.client_id).await?;
        let configured = self.client_secret.map(|s| s.expose().to_string());
        let previous = store.setting("client_secret");
        let initial = setting(&store, "client_secret", configured.clone(), random_secret).await?;
        let client_secrets = client_secrets(&store, &initial, configured.is_some(), previous).await?;
        // The handle's secret is the first that signs in (the configured one unless rotated out).
        let client_secret = client_secrets.first().cloned().unwrap_or_else(|| Secret::new(initial));
        let signing_key = Secret::new(setting(&store, "signing_key", None, random_secret).await?);
        let organization_id = setting_id(&store, "organization_id", None).await?;
        let business_unit_id = setting_id(&store, "business_unit_id", None).await?;
        let app_object_id = setting_id(&store, "application_object_id", None).await?;
        let app_user_id = setting_id(&store, "application_user_id", None).await?;
        ensure_user(&store, app_user_id, "# dataverse-emulator", app_object_id, Some(client_id)).await?;
        store
            .write(|data, changes| {
                crate::schema::generated::write_missing(data, changes, self.generated_tables, app_user_id);
                if self.journeys {
                    crate::schema::journeys::install(data, changes, app_user_id);
                }
                crate::schema::views::write_missing(data, changes);
                crate::api::bulk_delete::fail_unfinished(data, changes, app_user_id)
                    .map_err(|e| anyhow::anyhow!("marking unfinished system jobs failed: {}", e.message))?;
                Ok::<_, anyhow::Error>(())
            })
            .await?;
        let mut callers = HashMap::from([(app_object_id, app_user_id)]);
        let mut applications = Vec::new();
        for app in &self.applications {
            if app.client_id == client_id || applications.iter().any(|a: &Application| a.client_id == app.client_id) {
                anyhow::bail!(
                    "application {} is registered twice: give each registration its own client id",
                    app.client_id
                );
            }
            let object_id = setting_id(&store, &format!("application_object_id:{}", app.client_id), None).await?;
            let user_id = setting_id(&store, &format!("application_user_id:{}", app.client_id), None).await?;
            ensure_user(&store, user_id, &format!("# {}", app.client_id), object_id, Some(app.client_id)).await?;
            callers.insert(object_id, user_id);
            applications.push(Application {
                client_id: app.client_id,
                client_secret: app.client_secret.clone(),
                object_id,
            });
        }
        let mut users = Vec::new();
        for (name, password) in self.users {
            let object_id = setting_id(&store, &format!("user_object_id:{name}"), None).await?;
            let user_id = setting_id(&store, &format!("user_id:{name}"), None).await?;
            ensure_user(&store, user_id, &name, object_id, None).await?;
            callers.insert(object_id, user_id);
            users.push(UserLogin { username: name, password, object_id });
        }

        let listener = TcpListener::bind(self.listen).await.with_context(|| format!("listening on {}", self.listen))?;
        let mut addr = listener.local_addr()?;
        if addr.ip().is_unspecified() {
            addr.set_ip([127, 0, 0, 1].into());
        }
        let tls = match &self.tls_certificate {
            None => None,
            Some(path) => Some(tls(&store, path).await?),
        };
        let url = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
        let directory = Directory {
            tenant_id,
            client_id,
            client_secrets: RwLock::new(client_secrets),
            app_object_id,
            applications,
            users,
            token_lifetime: self.token_lifetime,
            signing_key: RwLock::new(signing_key),
        };
        let environment = Arc::new(Environment {
            store,
            directory,
            url: url.clone(),
            organization_id,
            business_unit_id,
            callers,
            limiter: Limiter::with_web_servers(self.limits, self.web_servers, organization_id),
            cost: RwLock::new(self.cost),
            change_retention: self.change_retention,
        });
        let router = crate::api::router(environment.clone());
        let (shutdown, stopped) = oneshot::channel::<()>();
        let faults = Arc::new(Faults::new(self.faults));
        let task = tokio::spawn(crate::serve::serve(listener, router, faults.clone(), tls, stopped));
        tracing::info!(%url, "dataverse emulator listening");
        Ok(RunningEmulator {
            web_api: format!("{url}/api/data/v9.2/"),
            token_url: format!("{url}/{tenant_id}/oauth2/v2.0/token"),
            url,
            tenant_id,
            client_id,
            client_secret,
            applications: self.applications,
            environment,
            faults,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }
}
