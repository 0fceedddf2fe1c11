//! Starting the service: the data directory, the secret key, the API tokens, the store and its migrations, then
//! the HTTP server. Tests start it in-process on `127.0.0.1:0`.

use crate::activation::job::ActivationJob;
use crate::api::{self, AppState};
use crate::engagement::job::EventsRunner;
use crate::hosts::AllowedHosts;
use crate::ingestion::IngestionRunner;
use crate::leads::job::LeadIntakeRunner;
use crate::leads::notices::send_notices;
use crate::leads::notify::{MailError, Mailer, SmtpSettings};
use crate::pipeline::Supervisor;
use crate::pipeline::clients::Clients;
use crate::pipeline::supervisor::JobRunner;
pub use crate::pipeline::supervisor::LeaseTimings;
use crate::secrets::{self, SecretError, SecretKey};
use crate::store::{Store, StoreError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The file, in the data directory, that holds the API tokens, one a line.
pub const TOKENS_FILE: &str = "api-tokens";

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `postgres://…` for PostgreSQL; SQLite in the data directory when `None`.
    pub database_url: Option<String>,
    /// The key for secrets at rest, 32 bytes in base64; `<data_dir>/secret.key` when `None`.
    pub secret_key: Option<String>,
    /// Accepted API tokens; those of `<data_dir>/api-tokens` (created with one token on first start) when empty.
    pub api_tokens: Vec<String>,
    /// How long acknowledged entries stay in a flow's inlet log before they are pruned.
    pub log_retention: Duration,
    /// How flows are owned when several processes share one PostgreSQL database.
    pub lease: LeaseTimings,
    /// The SMTP server lead intakes' notifications go through; none are sent (they wait) when `None`.
    pub smtp: Option<SmtpSettings>,
    /// Hosts connections may send credentials to besides Microsoft's clouds (an emulator, a proxy).
    pub allowed_hosts: AllowedHosts,
    /// How often flows' alert rules are evaluated.
    pub alert_interval: Duration,
    /// How often this process tells the others sharing the store what it spent of each application user's
    /// Dataverse budget, and hears what they spent (see `pipeline/budgets.rs`).
    pub budget_interval: Duration,
}

/// Acknowledged inlet entries are kept a week by default, to replay or inspect.
pub const DEFAULT_LOG_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl ServiceConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> ServiceConfig {
        ServiceConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            database_url: None,
            secret_key: None,
            api_tokens: Vec::new(),
            log_retention: DEFAULT_LOG_RETENTION,
            lease: LeaseTimings::default(),
            smtp: None,
            allowed_hosts: AllowedHosts::default(),
            alert_interval: crate::alerts::DEFAULT_INTERVAL,
            budget_interval: crate::pipeline::budgets::DEFAULT_INTERVAL,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the data directory {path} cannot be used: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("the API tokens file {path} cannot be used: {source}")]
    Tokens { path: PathBuf, source: std::io::Error },
    #[error("the API tokens file {0} has no token: put one token a line, or remove the file to have a new one made")]
    NoTokens(PathBuf),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "another dynsync process is already using the SQLite store in {0}: one process per data directory. To run \
         several processes, give each --database-url postgres://… (one PostgreSQL database shared by all; see the \
         README, \"Several processes\"); to run a second separate service, give it another --data-dir"
    )]
    DataDirInUse(PathBuf),
    #[error("the SMTP settings cannot be used: {0}")]
    Smtp(MailError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// A running service.
pub struct RunningService {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// An accepted API token.
    pub token: String,
    pub store: Store,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningService {
    /// The API's base URL, `…/data/foundation/flowservice`.
    pub fn api(&self) -> String {
        format!("{}{}", self.url, api::BASE_PATH)
    }

    /// Stops accepting requests and waits for those in flight.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Serves until the process is asked to stop.
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

pub struct Service;

impl Service {
    pub async fn start(config: ServiceConfig) -> Result<RunningService, StartError> {
        create_private_dir(&config.data_dir)
            .map_err(|source| StartError::DataDir { path: config.data_dir.clone(), source })?;
        let key = SecretKey::load(config.secret_key.as_deref(), &config.data_dir)?;
        let tokens =
            if config.api_tokens.is_empty() { load_tokens(&config.data_dir)? } else { config.api_tokens.clone() };
        let sqlite = config.database_url.as_deref().is_none_or(|url| url.starts_with("sqlite:"));
        let lock = if sqlite { Some(lock_data_dir(&config.data_dir)?) } else { None };
        let store = Store::open(config.database_url.as_deref(), &config.data_dir, key).await?;
        if config.database_url.is_none() {
            // The data directory's lock is ours: a lease in its store is a stopped process's (a crash).
            store.free_all_leases().await?;
        }
        let clients = Arc::new(Clients::new());
        let jobs: Vec<Arc<dyn JobRunner>> = vec![
            Arc::new(ActivationJob),
            Arc::new(LeadIntakeRunner),
            Arc::new(EventsRunner),
            Arc::new(IngestionRunner { data_dir: config.data_dir.clone() }),
        ];
        let mailer = config.smtp.as_ref().map(Mailer::new).transpose().map_err(StartError::Smtp)?;
        let alert_mailer = config.smtp.as_ref().map(Mailer::new).transpose().map_err(StartError::Smtp)?;
        let notifying = mailer.map(|mailer| tokio::spawn(send_notices(store.clone(), mailer)));
        let supervisor = Supervisor::new(store.clone(), clients.clone(), jobs, config.lease, config.log_retention);
        let budget_clients = clients.clone();
        let mut state = AppState::new(store.clone(), &tokens, supervisor.clone(), clients, config.data_dir.clone());
        state.smtp_configured = config.smtp.is_some();
        state.hosts = config.allowed_hosts.clone();
        let state = Arc::new(state);
        let supervising = supervisor.supervise();
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.listen, source })?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let alerting =
            tokio::spawn(crate::alerts::run(store.clone(), supervisor.clone(), alert_mailer, config.alert_interval));
        // Processes writing as the same application user share its budget.
        let sharing = tokio::spawn(crate::pipeline::budgets::run(
            store.clone(),
            budget_clients,
            supervisor.process(),
            config.budget_interval,
        ));
        let router = api::router(state);
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = server.await {
                tracing::error!(error = %e, "the API server stopped");
            }
            // Work not acknowledged yet stays in the log for the next start.
            supervising.abort();
            alerting.abort();
            sharing.abort();
            if let Some(notifying) = notifying {
                notifying.abort();
            }
            supervisor.stop_all().await;
            // The data directory is free for another process once this one has stopped.
            drop(lock);
        });
        let url = format!("http://{addr}");
        tracing::info!(%url, database = ?store.kind(), "dynsync listening");
        Ok(RunningService { url, token: tokens[0].clone(), store, shutdown: Some(shutdown), task })
    }
}

/// Takes the data directory's lock, held for as long as the service runs: SQLite's store is one process's.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StartError> {
    let path = data_dir.join("dynsync.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StartError::DataDir { path: path.clone(), source })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::DataDirInUse(data_dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(source)) => Err(StartError::DataDir { path, source }),
    }
}

/// Creates the data directory readable by its owner only: it holds the store, the key and the tokens. An existing
/// directory is left as its operator set it.
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}

/// The tokens of `<data_dir>/api-tokens`; on first start, the file is created with one new token.
pub fn load_tokens(data_dir: &Path) -> Result<Vec<String>, StartError> {
    let path = data_dir.join(TOKENS_FILE);
    let io = |source| StartError::Tokens { path: path.clone(), source };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = secrets::random_token("dsk_");
            let text =
                format!("# dynsync API tokens, one a line. Send one as Authorization: Bearer <token>.\n{token}\n");
            secrets::write_private(&path, &text).map_err(io)?;
            // The path, never the token: logs are read by more people than the data directory is.
            tracing::warn!(path = %path.display(), "created an API token for dynsync's API; read it from this file");
            eprintln!("dynsync: created an API token in {}", path.display());
            text
        }
        Err(e) => return Err(io(e)),
    };
    let tokens: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect();
    if tokens.is_empty() { Err(StartError::NoTokens(path)) } else { Ok(tokens) }
}
