//! The store: connections, target connections and flows, per sandbox. SQLite in the data directory by default,
//! PostgreSQL when `DYNSYNC_DATABASE_URL` points at one; the same interface and the same SQL over both engines.
//! Secrets are sealed before they reach either.

mod engine;
mod flows;
mod leases;
mod log;
mod migrations;
mod runs;

use crate::connection::{Connection, ConnectionAuth};
use crate::ids::{ConnectionId, ConnectionSpecId, Etag, Sandbox, TargetConnectionId};
use crate::secrets::{Secret, SecretError, SecretKey};
use crate::target::TargetConnection;
use chrono::{DateTime, Utc};
use engine::{Arg, Engine};
use serde_json::{Map, Value as Json, json};
use std::path::Path;
use std::sync::Arc;

pub use engine::DatabaseKind;
pub use flows::{FlowRecord, FlowState};
pub use leases::{Lease, LeaseStatus, ProcessId, RuntimeStatus};
pub use log::{Backlog, LogEntry};
pub use runs::{Acknowledgement, FailedRecord, FlowTotals, Outcome, OutcomeGroup, RunRecord, RunTally, hour_of};

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
        "this process no longer owns the flow (another process took its lease over); its work is left to the new owner"
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

    pub fn kind(&self) -> DatabaseKind {
        self.engine.kind()
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.engine.fetch("SELECT 'ok'", &[]).await.map(|_| ())
    }

    // ------------------------------------------------------------------------------------------ connections

    /// The stored body of a connection and its sealed secrets.
    fn connection_columns(&self, c: &Connection) -> (String, String) {
        let (public, secrets) = c.auth.to_params();
        let body = json!({
            "name": c.name,
            "description": c.description,
            "connectionSpec": c.spec,
            "authSpec": c.auth.spec_name(),
            "params": public,
            "signedInAs": c.signed_in_as.as_ref().map(|w| json!({
                "userId": w.user_id, "businessUnitId": w.business_unit_id, "organizationId": w.organization_id
            })),
        });
        let context = format!("connection:{}", c.id);
        let sealed: Map<String, Json> =
            secrets.iter().map(|(k, v)| (k.to_string(), Json::String(self.key.seal(v.expose(), &context)))).collect();
        (body.to_string(), Json::Object(sealed).to_string())
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
        let rows = self
            .engine
            .fetch(
                "SELECT id, sandbox, body, secrets, etag, created_at, updated_at FROM connections \
                 WHERE sandbox = $1 AND id = $2",
                &[sandbox.as_str().into(), id.to_string().into()],
            )
            .await?;
        rows.into_iter().next().map(|r| self.connection_from(r)).transpose()
    }

    pub async fn connections(&self, sandbox: &Sandbox) -> Result<Vec<Connection>> {
        let rows = self
            .engine
            .fetch(
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

    fn connection_from(&self, row: Vec<Option<String>>) -> Result<Connection> {
        let corrupt = |detail: String| StoreError::Corrupt { what: "connection", detail };
        let [id, sandbox, body, secrets, etag, created, updated] = columns(row).map_err(corrupt)?;
        let id: ConnectionId = id.parse().map_err(|e: uuid::Error| corrupt(e.to_string()))?;
        let body: Json = serde_json::from_str(&body).map_err(|e| corrupt(e.to_string()))?;
        let secrets: Map<String, Json> = serde_json::from_str(&secrets).map_err(|e| corrupt(e.to_string()))?;
        let spec: ConnectionSpecId =
            serde_json::from_value(body["connectionSpec"].clone()).map_err(|e| corrupt(e.to_string()))?;
        let mut params = body["params"].as_object().cloned().unwrap_or_default();
        let context = format!("connection:{id}");
        for (name, sealed) in &secrets {
            let secret: Secret = self.key.open(sealed.as_str().unwrap_or_default(), &context)?;
            params.insert(name.clone(), Json::String(secret.expose().to_string()));
        }
        let auth = ConnectionAuth::from_params(spec, body["authSpec"].as_str().unwrap_or_default(), &params)
            .map_err(|e| corrupt(e.to_string()))?;
        let signed_in_as = body["signedInAs"].as_object().and_then(|w| {
            Some(dataverse::WhoAmI {
                user_id: w.get("userId")?.as_str()?.parse().ok()?,
                business_unit_id: w.get("businessUnitId")?.as_str()?.parse().ok()?,
                organization_id: w.get("organizationId")?.as_str()?.parse().ok()?,
            })
        });
        Ok(Connection {
            id,
            sandbox: sandbox.parse().map_err(|e: crate::ids::BadSandboxName| corrupt(e.to_string()))?,
            name: body["name"].as_str().unwrap_or_default().to_string(),
            description: body["description"].as_str().unwrap_or_default().to_string(),
            spec,
            auth,
            signed_in_as,
            etag: Etag(etag),
            created_at: timestamp(&created).map_err(corrupt)?,
            updated_at: timestamp(&updated).map_err(corrupt)?,
        })
    }

    // ----------------------------------------------------------------------------------- target connections

    pub async fn insert_target_connection(&self, t: &TargetConnection) -> Result<()> {
        let body = json!({
            "name": t.name,
            "description": t.description,
            "baseConnectionId": t.base_connection_id,
            "customizationPrefix": t.customization_prefix,
        });
        self.engine
            .execute(
                "INSERT INTO target_connections (id, sandbox, name, body, etag, created_at, updated_at, base_connection_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    t.id.to_string().into(),
                    t.sandbox.as_str().into(),
                    t.name.as_str().into(),
                    body.to_string().into(),
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
        let rows = self
            .engine
            .fetch(
                "SELECT id, sandbox, body, etag, created_at, updated_at FROM target_connections \
                 WHERE sandbox = $1 AND id = $2",
                &[sandbox.as_str().into(), id.to_string().into()],
            )
            .await?;
        rows.into_iter().next().map(target_from).transpose()
    }

    pub async fn target_connections(&self, sandbox: &Sandbox) -> Result<Vec<TargetConnection>> {
        let rows = self
            .engine
            .fetch(
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
        let rows = self
            .engine
            .fetch(
                "SELECT id FROM target_connections WHERE sandbox = $1 AND base_connection_id = $2 ORDER BY id",
                &[sandbox.as_str().into(), connection.to_string().into()],
            )
            .await?;
        ids(rows)
    }
}

fn ids<T: std::str::FromStr>(rows: Vec<Vec<Option<String>>>) -> Result<Vec<T>> {
    rows.into_iter()
        .map(|r| {
            let text = r.into_iter().next().flatten().unwrap_or_default();
            text.parse().map_err(|_| StoreError::Corrupt { what: "id", detail: text })
        })
        .collect()
}

fn columns<const N: usize>(row: Vec<Option<String>>) -> std::result::Result<[String; N], String> {
    let values: Vec<String> = row.into_iter().map(Option::unwrap_or_default).collect();
    values.try_into().map_err(|v: Vec<String>| format!("{} columns instead of {N}", v.len()))
}

fn timestamp(text: &str) -> std::result::Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|e| format!("{text}: {e}"))
}

fn target_from(row: Vec<Option<String>>) -> Result<TargetConnection> {
    let corrupt = |detail: String| StoreError::Corrupt { what: "target connection", detail };
    let [id, sandbox, body, etag, created, updated] = columns(row).map_err(corrupt)?;
    let body: Json = serde_json::from_str(&body).map_err(|e| corrupt(e.to_string()))?;
    Ok(TargetConnection {
        id: id.parse().map_err(|e: uuid::Error| corrupt(e.to_string()))?,
        sandbox: sandbox.parse().map_err(|e: crate::ids::BadSandboxName| corrupt(e.to_string()))?,
        name: body["name"].as_str().unwrap_or_default().to_string(),
        description: body["description"].as_str().unwrap_or_default().to_string(),
        base_connection_id: serde_json::from_value(body["baseConnectionId"].clone())
            .map_err(|e| corrupt(e.to_string()))?,
        customization_prefix: serde_json::from_value(body["customizationPrefix"].clone())
            .map_err(|e| corrupt(e.to_string()))?,
        etag: Etag(etag),
        created_at: timestamp(&created).map_err(corrupt)?,
        updated_at: timestamp(&updated).map_err(corrupt)?,
    })
}
