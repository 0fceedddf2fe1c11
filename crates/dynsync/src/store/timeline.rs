//! The timeline: every change a user made to a connection, a target, a source or a flow — made, changed, enabled,
//! disabled, replayed, its secret rotated, deleted — with who made it (the operator, or which API token) and when,
//! kept after the resource is gone, so that "who turned this off, and when?" always has an answer. A change is
//! recorded by the API once the change itself is stored.

use super::{Result, Store, StoreError};
use crate::ids::Sandbox;
use chrono::{DateTime, Utc};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// What kind of resource changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ResourceKind {
    Connection,
    TargetConnection,
    SourceConnection,
    Flow,
}

/// What was done to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeAction {
    Created,
    Changed,
    Enabled,
    Disabled,
    /// Failed records sent again, or (an ingestion) the whole table.
    Replayed,
    SecretRotated,
    Deleted,
}

macro_rules! text_enum {
    ($type:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        impl $type {
            pub fn as_str(self) -> &'static str {
                match self { $($type::$variant => $text),+ }
            }
        }
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $type {
            type Err = StoreError;
            fn from_str(text: &str) -> Result<$type> {
                match text {
                    $($text => Ok($type::$variant),)+
                    other => Err(StoreError::Corrupt { what: stringify!($type), detail: other.to_string() }),
                }
            }
        }
    };
}

text_enum!(ResourceKind {
    Connection = "connection",
    TargetConnection = "targetConnection",
    SourceConnection = "sourceConnection",
    Flow = "flow",
});

text_enum!(ChangeAction {
    Created = "created",
    Changed = "changed",
    Enabled = "enabled",
    Disabled = "disabled",
    Replayed = "replayed",
    SecretRotated = "secretRotated",
    Deleted = "deleted",
});

/// One change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub id: Uuid,
    pub sandbox: Sandbox,
    pub kind: ResourceKind,
    /// The resource's id.
    pub resource: Uuid,
    /// The resource's name when it changed.
    pub name: String,
    pub action: ChangeAction,
    /// Who: `operator`, or `token '<name>' (<id>)`.
    pub actor: String,
    pub at: DateTime<Utc>,
}

/// Changes a list shows at most.
pub const CHANGES_SHOWN: i64 = 200;

#[derive(sqlx::FromRow)]
struct ChangeRow {
    id: String,
    sandbox: String,
    kind: String,
    resource_id: String,
    name: String,
    action: String,
    actor: String,
    at: i64,
}

impl TryFrom<ChangeRow> for Change {
    type Error = StoreError;
    fn try_from(row: ChangeRow) -> Result<Change> {
        let corrupt = |detail: String| StoreError::Corrupt { what: "timeline change", detail };
        Ok(Change {
            id: row.id.parse().map_err(|e| corrupt(format!("id {}: {e}", row.id)))?,
            sandbox: row.sandbox.parse().map_err(|e: crate::ids::BadSandboxName| corrupt(e.to_string()))?,
            kind: row.kind.parse()?,
            resource: row.resource_id.parse().map_err(|e| corrupt(format!("resource {}: {e}", row.resource_id)))?,
            name: row.name,
            action: row.action.parse()?,
            actor: row.actor,
            at: DateTime::from_timestamp_millis(row.at).ok_or_else(|| corrupt(format!("{} is not a time", row.at)))?,
        })
    }
}

impl Store {
    pub async fn record_change(&self, change: &Change) -> Result<()> {
        self.engine
            .execute(
                "INSERT INTO timeline (id, sandbox, kind, resource_id, name, action, actor, at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    change.id.to_string().into(),
                    change.sandbox.as_str().into(),
                    change.kind.as_str().into(),
                    change.resource.to_string().into(),
                    change.name.as_str().into(),
                    change.action.as_str().into(),
                    change.actor.as_str().into(),
                    change.at.timestamp_millis().into(),
                ],
            )
            .await
            .map(|_| ())
    }

    /// The newest changes of a sandbox, or of one resource in it, newest first, at most `limit`.
    pub async fn changes(&self, sandbox: &Sandbox, resource: Option<Uuid>, limit: i64) -> Result<Vec<Change>> {
        let rows: Vec<ChangeRow> = match resource {
            Some(id) => {
                self.engine
                    .fetch_as(
                        "SELECT id, sandbox, kind, resource_id, name, action, actor, at FROM timeline
                         WHERE sandbox = $1 AND resource_id = $2 ORDER BY at DESC, id LIMIT $3",
                        &[sandbox.as_str().into(), id.to_string().into(), limit.into()],
                    )
                    .await?
            }
            None => {
                self.engine
                    .fetch_as(
                        "SELECT id, sandbox, kind, resource_id, name, action, actor, at FROM timeline
                         WHERE sandbox = $1 ORDER BY at DESC, id LIMIT $2",
                        &[sandbox.as_str().into(), limit.into()],
                    )
                    .await?
            }
        };
        rows.into_iter().map(Change::try_from).collect()
    }
}
