//! The store: connections, target connections and flows, per sandbox. SQLite in the data directory by default,
//! PostgreSQL when `DYNSYNC_DATABASE_URL` points at one; the same interface and the same SQL over both engines.
//! Secrets are sealed before they reach either.

mod activation;
mod engine;
mod migrations;

use crate::activation::{ActivationFlow, FlowDefinition, FlowState};
use crate::connection::{Connection, ConnectionAuth};
use crate::ids::{ConnectionId, ConnectionSpecId, Etag, FlowId, Sandbox, TargetConnectionId};
use crate::secrets::{Secret, SecretError, SecretKey};
use crate::target::TargetConnection;
use chrono::{DateTime, Utc};
use engine::{Arg, Engine};
use serde_json::{Map, Value as Json, json};
use std::path::Path;
use std::sync::Arc;

pub use activation::{Backlog, FailedContact, LogEntry, OutcomeGroup, RunRecord, RunTally, hour_of};
pub use engine::DatabaseKind;

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

    // ---------------------------------------------------------------------------------------------- flows

    pub async fn insert_flow(&self, f: &ActivationFlow) -> Result<()> {
        self.engine
            .execute(
                "INSERT INTO flows (id, sandbox, name, body, state, etag, created_at, updated_at, target_connection_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    f.id.to_string().into(),
                    f.sandbox.as_str().into(),
                    f.definition.name.as_str().into(),
                    serde_json::to_string(&f.definition).expect("a flow serializes").into(),
                    f.state.to_string().into(),
                    f.etag.0.as_str().into(),
                    f.created_at.to_rfc3339().into(),
                    f.updated_at.to_rfc3339().into(),
                    target_column(&f.definition).into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Replaces a flow's definition and state, if its etag is still `expected`.
    pub async fn update_flow(&self, f: &ActivationFlow, expected: &Etag) -> Result<()> {
        let n = self
            .engine
            .execute(
                "UPDATE flows SET name = $1, body = $2, state = $3, etag = $4, updated_at = $5, target_connection_id = $9 \
                 WHERE sandbox = $6 AND id = $7 AND etag = $8",
                &[
                    f.definition.name.as_str().into(),
                    serde_json::to_string(&f.definition).expect("a flow serializes").into(),
                    f.state.to_string().into(),
                    f.etag.0.as_str().into(),
                    f.updated_at.to_rfc3339().into(),
                    f.sandbox.as_str().into(),
                    f.id.to_string().into(),
                    expected.0.as_str().into(),
                    target_column(&f.definition).into(),
                ],
            )
            .await?;
        if n == 0 { Err(StoreError::Stale(expected.clone())) } else { Ok(()) }
    }

    pub async fn flow(&self, sandbox: &Sandbox, id: FlowId) -> Result<Option<ActivationFlow>> {
        let rows = self
            .engine
            .fetch(
                "SELECT id, sandbox, body, state, etag, created_at, updated_at FROM flows WHERE sandbox = $1 AND id = $2",
                &[sandbox.as_str().into(), id.to_string().into()],
            )
            .await?;
        rows.into_iter().next().map(flow_from).transpose()
    }

    /// A flow by id alone, as its inlet names it.
    pub async fn flow_by_id(&self, id: FlowId) -> Result<Option<ActivationFlow>> {
        let rows = self
            .engine
            .fetch(
                "SELECT id, sandbox, body, state, etag, created_at, updated_at FROM flows WHERE id = $1",
                &[id.to_string().into()],
            )
            .await?;
        rows.into_iter().next().map(flow_from).transpose()
    }

    pub async fn flows(&self, sandbox: &Sandbox) -> Result<Vec<ActivationFlow>> {
        let rows = self
            .engine
            .fetch(
                "SELECT id, sandbox, body, state, etag, created_at, updated_at FROM flows WHERE sandbox = $1 \
                 ORDER BY created_at, id",
                &[sandbox.as_str().into()],
            )
            .await?;
        rows.into_iter().map(flow_from).collect()
    }

    /// Every enabled flow of every sandbox: what the activation pipeline runs.
    pub async fn enabled_flows(&self) -> Result<Vec<ActivationFlow>> {
        let rows = self
            .engine
            .fetch(
                "SELECT id, sandbox, body, state, etag, created_at, updated_at FROM flows WHERE state = $1 \
                 ORDER BY created_at, id",
                &["enabled".into()],
            )
            .await?;
        rows.into_iter().map(flow_from).collect()
    }

    pub async fn delete_flow(&self, sandbox: &Sandbox, id: FlowId) -> Result<bool> {
        let n = self
            .engine
            .execute(
                "DELETE FROM flows WHERE sandbox = $1 AND id = $2",
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

    /// The flows that write through a target connection.
    pub async fn flows_of(&self, sandbox: &Sandbox, target: TargetConnectionId) -> Result<Vec<FlowId>> {
        let rows = self
            .engine
            .fetch(
                "SELECT id FROM flows WHERE sandbox = $1 AND target_connection_id = $2 ORDER BY id",
                &[sandbox.as_str().into(), target.to_string().into()],
            )
            .await?;
        ids(rows)
    }

    /// What a flow writes through: its target connection and the destination connection under it, from the flow's
    /// own sandbox. `None` when either was deleted.
    pub async fn flow_destination(
        &self,
        flow: &ActivationFlow,
    ) -> Result<Option<(TargetConnection, crate::connection::DestinationConnection)>> {
        let Some(target_id) = flow.definition.target_connection_id() else {
            return Ok(None);
        };
        let Some(target) = self.target_connection(&flow.sandbox, target_id).await? else {
            return Ok(None);
        };
        let connection = self.connection(&flow.sandbox, target.base_connection_id).await?;
        Ok(connection.and_then(|c| c.destination()).map(|d| (target, d)))
    }
}

fn target_column(flow: &FlowDefinition) -> String {
    flow.target_connection_id().map(|t| t.to_string()).unwrap_or_default()
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

fn flow_from(row: Vec<Option<String>>) -> Result<ActivationFlow> {
    let corrupt = |detail: String| StoreError::Corrupt { what: "flow", detail };
    let [id, sandbox, body, state, etag, created, updated] = columns(row).map_err(corrupt)?;
    let definition: FlowDefinition = serde_json::from_str(&body).map_err(|e| corrupt(e.to_string()))?;
    Ok(ActivationFlow {
        id: id.parse().map_err(|e: uuid::Error| corrupt(e.to_string()))?,
        sandbox: sandbox.parse().map_err(|e: crate::ids::BadSandboxName| corrupt(e.to_string()))?,
        definition,
        state: if state == "enabled" { FlowState::Enabled } else { FlowState::Disabled },
        etag: Etag(etag),
        created_at: timestamp(&created).map_err(corrupt)?,
        updated_at: timestamp(&updated).map_err(corrupt)?,
    })
}
