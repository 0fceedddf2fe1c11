//! The store: connections, target connections and flows, per sandbox. SQLite in the data directory by default,
//! PostgreSQL when `DYNSYNC_DATABASE_URL` points at one; the same interface and the same SQL over both engines.
//! Secrets are sealed before they reach either.

mod alerts;
mod consent;
mod delivered;
mod engine;
mod flows;
mod governance;
mod inlets;
mod lag;
mod leases;
mod loads;
mod log;
mod migrations;
mod outbox;
mod runs;
mod sources;
mod spending;
mod timeline;
mod tokens;

use crate::connection::{Connection, ConnectionAuth};
use crate::ids::{ConnectionId, ConnectionSpecId, Etag, Sandbox, TargetConnectionId};
use crate::secrets::{SecretError, SecretKey};
use crate::target::TargetConnection;
use chrono::{DateTime, Utc};
use engine::{Arg, Engine};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use alerts::{
    ALERT_EVENTS_KEPT, AlertChange, AlertDelivery, AlertDeliveryState, AlertEventRecord, AlertRules, NewAlertDelivery,
    RunCounts,
};
pub use consent::{ConsentChange, ConsentSide, StandingConsent};
pub use engine::DatabaseKind;
pub use flows::{FlowRecord, FlowState};
pub use inlets::{InletReject, REJECTS_KEPT, secret_digest};
pub use lag::{HourLag, LAG_KEPT_DAYS};
pub use leases::{Lease, LeaseStatus, ProcessId, RuntimeStatus};
pub use loads::{Load, LoadKind};
pub use log::{Backlog, LogEntry};
pub use outbox::{OutboxEntry, OutboxMessage, OutboxState};
pub use runs::{
    Acknowledgement, FailedRecord, FlowTotals, Outcome, OutcomeGroup, REPLAYED, Recovered, Replayed, RunRecord,
    RunTally, hour_of,
};
pub use spending::{EnvironmentLimit, ReportedSpending, SpendingReport};
pub use timeline::{CHANGES_SHOWN, Change, ChangeAction, ResourceKind};
pub use tokens::ApiToken;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database {location} cannot be opened: {source}")]
    Open { location: String, source: sqlx::Error },
    #[error("the database answered an error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration {version} failed: {source}")]
    Migration { version: &'static str, source: sqlx::Error },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("a stored {what} cannot be read ({detail}); was it written by a newer dynsync?")]
    Corrupt { what: &'static str, detail: String },
    #[error("it changed since you read it (etag {0} is not the current one): read it again and reapply your change")]
    Stale(Etag),
    #[error(
        "this process no longer runs the flow (another process took its lease over, or it was disabled or deleted); its work is left to whoever runs it next"
    )]
    Fenced,
}

type Result<T> = std::result::Result<T, StoreError>;

/// The store, cheap to clone.
#[derive(Clone)]
pub struct Store {
    engine: Arc<Engine>,
    key: Arc<SecretKey>,
}

impl Store {
    /// Opens the store at `database_url` (`postgres://…` or `sqlite://…`), or `dynsync.db` in the data directory,
    /// and brings its schema up to date.
    pub async fn open(database_url: Option<&str>, data_dir: &Path, key: SecretKey) -> Result<Store> {
        let engine = match database_url {
            Some(url) => Engine::connect(url).await?,
            None => Engine::sqlite_file(&data_dir.join("dynsync.db")).await?,
        };
        migrations::run(&engine).await?;
        Ok(Store { engine: Arc::new(engine), key: Arc::new(key) })
    }

    /// The key the store seals secrets with, for what is sealed outside it (the dashboard's session cookie).
    pub fn secret_key(&self) -> &SecretKey {
        &self.key
    }

    pub fn kind(&self) -> DatabaseKind {
        self.engine.kind()
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.engine.execute("SELECT 1", &[]).await.map(|_| ())
    }

    // ------------------------------------------------------------------------------------------ connections

    /// The stored body of a connection and its sealed secrets.
    fn connection_columns(&self, c: &Connection) -> (String, String) {
        let (params, secrets) = c.auth.to_params();
        let body = StoredConnection {
            name: c.name.clone(),
            description: c.description.clone(),
            connection_spec: c.spec,
            auth_spec: c.auth.spec_name().to_string(),
            params,
            signed_in_as: c.signed_in_as.as_ref().map(|w| StoredWhoAmI {
                user_id: w.user_id,
                business_unit_id: w.business_unit_id,
                organization_id: w.organization_id,
            }),
        };
        let context = format!("connection:{}", c.id);
        let sealed: BTreeMap<String, String> =
            secrets.iter().map(|(k, v)| (k.to_string(), self.key.seal(v.expose(), &context))).collect();
        (
            serde_json::to_string(&body).expect("a connection serializes"),
            serde_json::to_string(&sealed).expect("sealed secrets serialize"),
        )
    }

    pub async fn insert_connection(&self, c: &Connection) -> Result<()> {
        let (body, sealed) = self.connection_columns(c);
        self.engine
            .execute(
                "INSERT INTO connections (id, sandbox, name, body, secrets, etag, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    Arg::from(c.id.to_string()),
                    c.sandbox.as_str().into(),
                    c.name.as_str().into(),
                    body.into(),
                    sealed.into(),
                    c.etag.0.as_str().into(),
                    c.created_at.to_rfc3339().into(),
                    c.updated_at.to_rfc3339().into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Replaces a connection's name, description and credentials, if its etag is still `expected`.
    pub async fn update_connection(&self, c: &Connection, expected: &Etag) -> Result<()> {
        let (body, sealed) = self.connection_columns(c);
        let n = self
            .engine
            .execute(
                "UPDATE connections SET name = $1, body = $2, secrets = $3, etag = $4, updated_at = $5 \
                 WHERE sandbox = $6 AND id = $7 AND etag = $8",
                &[
                    c.name.as_str().into(),
                    body.into(),
                    sealed.into(),
                    c.etag.0.as_str().into(),
                    c.updated_at.to_rfc3339().into(),
                    c.sandbox.as_str().into(),
                    c.id.to_string().into(),
                    expected.0.as_str().into(),
                ],
            )
            .await?;
        if n == 0 { Err(StoreError::Stale(expected.clone())) } else { Ok(()) }
    }

    pub async fn connection(&self, sandbox: &Sandbox, id: ConnectionId) -> Result<Option<Connection>> {
        let rows: Vec<ConnectionRow> = self
            .engine
            .fetch_as(
                "SELECT id, sandbox, body, secrets, etag, created_at, updated_at FROM connections \
                 WHERE sandbox = $1 AND id = $2",
                &[sandbox.as_str().into(), id.to_string().into()],
            )
            .await?;
        rows.into_iter().next().map(|r| self.connection_from(r)).transpose()
    }

    pub async fn connections(&self, sandbox: &Sandbox) -> Result<Vec<Connection>> {
        let rows: Vec<ConnectionRow> = self
            .engine
            .fetch_as(
                "SELECT id, sandbox, body, secrets, etag, created_at, updated_at FROM connections \
                 WHERE sandbox = $1 ORDER BY created_at, id",
                &[sandbox.as_str().into()],
            )
            .await?;
        rows.into_iter().map(|r| self.connection_from(r)).collect()
    }

    pub async fn delete_connection(&self, sandbox: &Sandbox, id: ConnectionId) -> Result<bool> {
        let n = self
            .engine
            .execute(
                "DELETE FROM connections WHERE sandbox = $1 AND id = $2",
                &[sandbox.as_str().into(), id.to_string().into()],
            )
            .await?;
        Ok(n > 0)
    }

    fn connection_from(&self, row: ConnectionRow) -> Result<Connection> {
        let corrupt = |detail: String| StoreError::Corrupt { what: "connection", detail };
        let id: ConnectionId = row.id.parse().map_err(|e: uuid::Error| corrupt(e.to_string()))?;
        let body: StoredConnection = serde_json::from_str(&row.body).map_err(|e| corrupt(e.to_string()))?;
        let sealed: BTreeMap<String, String> =
            serde_json::from_str(&row.secrets).map_err(|e| corrupt(e.to_string()))?;
        let context = format!("connection:{id}");
        let mut secrets = BTreeMap::new();
        for (place, sealed) in &sealed {
            secrets.insert(place.clone(), self.key.open(sealed, &context)?);
        }
        let params = crate::connection::with_secrets(body.params, &secrets);
        let auth = ConnectionAuth::from_params(body.connection_spec, &body.auth_spec, &params)
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(Connection {
            id,
            sandbox: row.sandbox.parse().map_err(|e: crate::ids::BadSandboxName| corrupt(e.to_string()))?,
            name: body.name,
            description: body.description,
            spec: body.connection_spec,
            auth,
            signed_in_as: body.signed_in_as.map(|w| dataverse::WhoAmI {
                user_id: w.user_id,
                business_unit_id: w.business_unit_id,
                organization_id: w.organization_id,
            }),
            etag: Etag(row.etag),
            created_at: timestamp(&row.created_at).map_err(corrupt)?,
            updated_at: timestamp(&row.updated_at).map_err(corrupt)?,
        })
    }

    // ----------------------------------------------------------------------------------- target connections

    pub async fn insert_target_connection(&self, t: &TargetConnection) -> Result<()> {
        let body = serde_json::to_string(&StoredTarget {
            name: t.name.clone(),
            description: t.description.clone(),
            base_connection_id: t.base_connection_id,
            customization_prefix: t.customization_prefix.clone(),
        })
        .expect("a target connection serializes");
        self.engine
            .execute(
                "INSERT INTO target_connections (id, sandbox, name, body, etag, created_at, updated_at, base_connection_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    t.id.to_string().into(),
                    t.sandbox.as_str().into(),
                    t.name.as_str().into(),
                    body.into(),
                    t.etag.0.as_str().into(),
                    t.created_at.to_rfc3339().into(),
                    t.updated_at.to_rfc3339().into(),
                    t.base_connection_id.to_string().into(),
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn target_connection(
        &self,
        sandbox: &Sandbox,
        id: TargetConnectionId,
    ) -> Result<Option<TargetConnection>> {
        let rows: Vec<ResourceRow> = self
            .engine
            .fetch_as(
                "SELECT id, sandbox, body, etag, created_at, updated_at FROM target_connections \
                 WHERE sandbox = $1 AND id = $2",
                &[sandbox.as_str().into(), id.to_string().into()],
            )
            .await?;
        rows.into_iter().next().map(target_from).transpose()
    }

    pub async fn target_connections(&self, sandbox: &Sandbox) -> Result<Vec<TargetConnection>> {
        let rows: Vec<ResourceRow> = self
            .engine
            .fetch_as(
                "SELECT id, sandbox, body, etag, created_at, updated_at FROM target_connections \
                 WHERE sandbox = $1 ORDER BY created_at, id",
                &[sandbox.as_str().into()],
            )
            .await?;
        rows.into_iter().map(target_from).collect()
    }

    pub async fn delete_target_connection(&self, sandbox: &Sandbox, id: TargetConnectionId) -> Result<bool> {
        let n = self
            .engine
            .execute(
                "DELETE FROM target_connections WHERE sandbox = $1 AND id = $2",
                &[sandbox.as_str().into(), id.to_string().into()],
            )
            .await?;
        Ok(n > 0)
    }

    /// The target connections over a connection.
    pub async fn targets_of(&self, sandbox: &Sandbox, connection: ConnectionId) -> Result<Vec<TargetConnectionId>> {
        let rows: Vec<IdRow> = self
            .engine
            .fetch_as(
                "SELECT id FROM target_connections WHERE sandbox = $1 AND base_connection_id = $2 ORDER BY id",
                &[sandbox.as_str().into(), connection.to_string().into()],
            )
            .await?;
        ids(rows)
    }
}

/// A connection's body as stored: everything but its secrets, which are sealed in a column of their own.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredConnection {
    name: String,
    #[serde(default)]
    description: String,
    connection_spec: ConnectionSpecId,
    auth_spec: String,
    #[serde(default)]
    params: Map<String, Json>,
    #[serde(default)]
    signed_in_as: Option<StoredWhoAmI>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredWhoAmI {
    user_id: uuid::Uuid,
    business_unit_id: uuid::Uuid,
    organization_id: uuid::Uuid,
}

/// A target connection's body as stored.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredTarget {
    name: String,
    #[serde(default)]
    description: String,
    base_connection_id: ConnectionId,
    customization_prefix: crate::target::CustomizationPrefix,
}

#[derive(sqlx::FromRow)]
struct ConnectionRow {
    id: String,
    sandbox: String,
    body: String,
    secrets: String,
    etag: String,
    created_at: String,
    updated_at: String,
}

/// A row of a sandbox's resource table (target connections, source connections): its envelope and JSON body.
#[derive(sqlx::FromRow)]
pub(super) struct ResourceRow {
    pub(super) id: String,
    pub(super) sandbox: String,
    pub(super) body: String,
    pub(super) etag: String,
    pub(super) created_at: String,
    pub(super) updated_at: String,
}

#[derive(sqlx::FromRow)]
struct IdRow {
    id: String,
}

fn ids<T: std::str::FromStr>(rows: Vec<IdRow>) -> Result<Vec<T>> {
    rows.into_iter().map(|r| r.id.parse().map_err(|_| StoreError::Corrupt { what: "id", detail: r.id })).collect()
}

/// A store on SQLite in a temporary directory and, when `DYNSYNC_TEST_DATABASE_URL` names one, on PostgreSQL.
#[cfg(test)]
pub(crate) async fn test_stores() -> Vec<(Store, tempfile::TempDir)> {
    let mut stores = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::load(None, dir.path()).unwrap();
    stores.push((Store::open(None, dir.path(), key).await.unwrap(), dir));
    if let Some(url) = std::env::var("DYNSYNC_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::load(None, dir.path()).unwrap();
        stores.push((Store::open(Some(&url), dir.path(), key).await.unwrap(), dir));
    }
    stores
}

fn timestamp(text: &str) -> std::result::Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|e| format!("{text}: {e}"))
}

fn target_from(row: ResourceRow) -> Result<TargetConnection> {
    let corrupt = |detail: String| StoreError::Corrupt { what: "target connection", detail };
    let body: StoredTarget = serde_json::from_str(&row.body).map_err(|e| corrupt(e.to_string()))?;
    Ok(TargetConnection {
        id: row.id.parse().map_err(|e: uuid::Error| corrupt(e.to_string()))?,
        sandbox: row.sandbox.parse().map_err(|e: crate::ids::BadSandboxName| corrupt(e.to_string()))?,
        name: body.name,
        description: body.description,
        base_connection_id: body.base_connection_id,
        customization_prefix: body.customization_prefix,
        etag: Etag(row.etag),
        created_at: timestamp(&row.created_at).map_err(corrupt)?,
        updated_at: timestamp(&row.updated_at).map_err(corrupt)?,
    })
}
