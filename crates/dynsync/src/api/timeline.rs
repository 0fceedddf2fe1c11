//! `GET /timeline`: who changed what in the sandbox, and when (`?property=resourceId==<id>` for one resource),
//! newest first — and [`record`], which every handler that changes a connection, a target, a source or a flow
//! calls once its change is stored.

use super::{ApiError, ApiResult, AppState, Caller};
use crate::access::Grant;
use crate::ids::Sandbox;
use crate::store::{CHANGES_SHOWN, Change, ChangeAction, ResourceKind};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

/// Who made a change, as the timeline names them: never the token itself.
pub fn actor(grant: &Grant) -> String {
    match grant {
        Grant::Operator => "operator".to_string(),
        Grant::Token { id, name, .. } => format!("token '{name}' ({id})"),
    }
}

/// What changed: a resource of the caller's sandbox, by kind, id and name.
pub struct Changed<'a> {
    pub kind: ResourceKind,
    pub id: Uuid,
    pub name: &'a str,
}

impl<'a, D: crate::pipeline::JobDefinition> From<&'a crate::pipeline::Flow<D>> for Changed<'a> {
    fn from(flow: &'a crate::pipeline::Flow<D>) -> Changed<'a> {
        Changed { kind: ResourceKind::Flow, id: flow.id.0, name: flow.definition.name() }
    }
}

/// Records a change the caller made, once it is stored. A timeline that cannot be written is logged, not
/// answered: the change itself was made, and failing its request would have the client make it again.
pub async fn record(state: &AppState, sandbox: &Sandbox, actor: &str, what: Changed<'_>, action: ChangeAction) {
    let change = Change {
        id: Uuid::new_v4(),
        sandbox: sandbox.clone(),
        kind: what.kind,
        resource: what.id,
        name: what.name.to_string(),
        action,
        actor: actor.to_string(),
        at: Utc::now(),
    };
    if let Err(e) = state.store.record_change(&change).await {
        tracing::warn!(error = %e, resource = %change.resource, action = %change.action, "a change was made, and the timeline could not record it");
    }
}

impl Caller {
    /// Records a change this caller made.
    pub async fn made(&self, state: &AppState, what: Changed<'_>, action: ChangeAction) {
        record(state, &self.sandbox, &actor(&self.grant), what, action).await;
    }
}

/// A change, as the API answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeBody {
    pub id: Uuid,
    pub resource_kind: ResourceKind,
    pub resource_id: Uuid,
    pub resource_name: String,
    pub action: ChangeAction,
    pub actor: String,
    /// RFC 3339.
    pub at: String,
}

impl From<&Change> for ChangeBody {
    fn from(c: &Change) -> ChangeBody {
        ChangeBody {
            id: c.id,
            resource_kind: c.kind,
            resource_id: c.resource,
            resource_name: c.name.clone(),
            action: c.action,
            actor: c.actor.clone(),
            at: c.at.to_rfc3339(),
        }
    }
}

/// `GET /timeline`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub items: Vec<ChangeBody>,
}

#[derive(Deserialize)]
pub struct TimelineQuery {
    property: Option<String>,
}

/// The resource a `property=resourceId==<id>` filter names.
pub fn resource_filter(property: Option<&str>) -> ApiResult<Option<Uuid>> {
    let Some(p) = property else { return Ok(None) };
    p.strip_prefix("resourceId==").and_then(|id| id.parse().ok()).map(Some).ok_or_else(|| {
        ApiError::bad_request(format!(
            "property={p} is not a filter the timeline takes: use property=resourceId==<the id of a connection, target, source or flow>"
        ))
    })
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<TimelineQuery>,
) -> ApiResult<Response> {
    let resource = resource_filter(query.property.as_deref())?;
    let changes = state.store.changes(&caller.sandbox, resource, CHANGES_SHOWN).await?;
    Ok(axum::Json(Timeline { items: changes.iter().map(ChangeBody::from).collect() }).into_response())
}
