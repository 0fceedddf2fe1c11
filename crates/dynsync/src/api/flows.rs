//! `flows` (activation flows) and `runs`. A flow is validated against the contact table of its destination each
//! time it is saved or enabled.

use super::{ApiError, ApiResult, AppState, Caller, id_and_etag, if_match, items, parse_body};
use crate::activation::{ActivationFlow, FlowDefinition, FlowState, job, validation};
use crate::ids::{Etag, FlowId};
use crate::pipeline::inlet::InletLog;
use crate::store::{FlowRecord, RunRecord};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Checks a flow against its target: the target and its connection exist in the sandbox, and the contact table of
/// the environment has every column the flow writes.
async fn check(state: &AppState, caller: &Caller, flow: &FlowDefinition) -> ApiResult<()> {
    let report = |problems: Vec<validation::Problem>| {
        let report = validation::ValidationReport { flow: flow.name.clone(), problems };
        ApiError::new(StatusCode::BAD_REQUEST, "flow-validation", report.to_string())
            .with_report(json!({"problems": report.problems}))
    };
    let shape = validation::check_shape(flow);
    let Some(target_id) = flow.target_connection_id() else {
        return Err(report(shape));
    };
    let target = state.store.target_connection(&caller.sandbox, target_id).await?.ok_or_else(|| {
        report(vec![validation::Problem {
            field: "targetConnectionIds[0]".into(),
            message: format!("there is no target connection {target_id} in sandbox {}", caller.sandbox),
            closest: Vec::new(),
        }])
    })?;
    let connection = state.store.connection(&caller.sandbox, target.base_connection_id).await?;
    let destination = connection.as_ref().and_then(|c| c.destination()).ok_or_else(|| {
        report(vec![validation::Problem {
            field: "targetConnectionIds[0]".into(),
            message: format!(
                "target connection {target_id} has no usable Dynamics 365 destination connection ({} is gone)",
                target.base_connection_id
            ),
            closest: Vec::new(),
        }])
    })?;
    if !shape.is_empty() {
        return Err(report(shape));
    }
    let client =
        connection.as_ref().and_then(|c| state.clients.client(c)).expect("a destination connection has a client");
    let unavailable = |e: dataverse::Error| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "metadata-unavailable",
            format!(
                "the flow cannot be checked, because the contact table of {} cannot be read: {e}; test the connection '{}' and try again",
                destination.environment, destination.name
            ),
        )
    };
    let contact = client.table("contact").await.map_err(unavailable)?;
    if validation::validate(flow, &target.customization_prefix, &contact).is_ok() {
        return Ok(());
    }
    // The cached table may predate a column the user just created: read it again before saying no.
    client.invalidate_table("contact");
    let contact = client.table("contact").await.map_err(unavailable)?;
    validation::validate(flow, &target.customization_prefix, &contact).map_err(|r| report(r.problems))
}

fn flow_json(f: &ActivationFlow) -> Json {
    let mut body = serde_json::to_value(&f.definition).expect("a flow serializes");
    let extra = json!({
        "id": f.id,
        "state": f.state,
        "sandboxName": f.sandbox,
        "etag": f.etag,
        "createdAt": f.created_at.timestamp_millis(),
        "updatedAt": f.updated_at.timestamp_millis(),
    });
    if let (Json::Object(b), Json::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body
}

fn parse_id(id: &str, caller: &Caller) -> ApiResult<FlowId> {
    id.parse().map_err(|_| ApiError::not_found("flow", id, &caller.sandbox))
}

async fn find(state: &AppState, caller: &Caller, id: &str) -> ApiResult<ActivationFlow> {
    let found = state.store.flow(&caller.sandbox, parse_id(id, caller)?).await?;
    let record = found.ok_or_else(|| ApiError::not_found("flow", id, &caller.sandbox))?;
    Ok(ActivationFlow::try_from(&record)?)
}

pub async fn create(State(state): State<Arc<AppState>>, caller: Caller, body: Bytes) -> ApiResult<Response> {
    let definition = parse_body::<FlowDefinition>(&body)?.normalized();
    check(&state, &caller, &definition).await?;
    let now = Utc::now();
    let flow = ActivationFlow {
        id: FlowId::new(),
        sandbox: caller.sandbox,
        definition,
        state: FlowState::Enabled,
        etag: Etag::new(),
        created_at: now,
        updated_at: now,
    };
    state.store.insert_flow(&FlowRecord::from(&flow)).await?;
    state.supervisor.flows_changed();
    Ok(id_and_etag(StatusCode::CREATED, flow.id, &flow.etag))
}

pub async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Response> {
    let all = activation_flows(state.store.flows(&caller.sandbox).await?)?;
    Ok(items(all.iter().map(flow_json).collect()))
}

/// `GET /flows/{id}`: the flow, with its backlog — profiles accepted and not yet handled — and its lag, the
/// age of the oldest of them.
pub async fn get(State(state): State<Arc<AppState>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let flow = find(&state, &caller, &id).await?;
    let backlog = InletLog::backlog(&state.store, flow.id).await?;
    let lease = state.store.lease_of(flow.id).await?;
    let mut body = flow_json(&flow);
    body["backlog"] = json!({
        "profiles": backlog.records,
        "oldestReceivedAt": backlog.oldest.map(|t| t.to_rfc3339()),
        "lagSeconds": backlog.oldest.map_or(0.0, |t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0),
    });
    body["inletUrl"] = json!(format!("/collection/{}", flow.id));
    // Who runs the flow, and whether it runs or waits (a refused sign-in pauses it, losing nothing).
    body["runtime"] = match lease {
        Some(l) => json!({"status": l.status, "detail": l.detail, "owner": l.owner, "generation": l.generation}),
        None => json!({"status": "waiting", "detail": "no process has started the flow yet"}),
    };
    Ok(items(vec![body]))
}

/// `PUT /flows/{id}`: replaces the definition, validated again; the state stays.
pub async fn replace(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let current = find(&state, &caller, &id).await?;
    if_match(&headers, "the flow", &current.etag)?;
    let definition = parse_body::<FlowDefinition>(&body)?.normalized();
    check(&state, &caller, &definition).await?;
    let updated = ActivationFlow { definition, etag: Etag::new(), updated_at: Utc::now(), ..current.clone() };
    state.store.update_flow(&FlowRecord::from(&updated), &current.etag).await?;
    state.supervisor.flows_changed();
    Ok(id_and_etag(StatusCode::OK, updated.id, &updated.etag))
}

/// `POST /flows/{id}/action?op=enable|disable`, as Flow Service enables and disables flows.
pub async fn action(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let current = find(&state, &caller, &id).await?;
    let wanted = match query.get("op").map(String::as_str) {
        Some("retry-failed") => {
            // One replay of a flow at a time: two at once would write and count the same records twice.
            let _replaying = state.replays.start(current.id).ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "replay-running",
                    "a replay of this flow's failed contacts is already running: wait for it to answer, then read the flow's runs",
                )
            })?;
            let summary = job::retry_failed(&state.store, &state.clients, &current).await.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "dynamics",
                    format!("the failed contacts were not replayed: {e}"),
                )
            })?;
            return Ok(axum::Json(json!({
                "retried": summary.retried, "activated": summary.written, "failed": summary.failed
            }))
            .into_response());
        }
        Some("enable") => FlowState::Enabled,
        Some("disable") => FlowState::Disabled,
        other => {
            return Err(ApiError::bad_request(format!(
                "op={} is not an action on a flow: use op=enable, op=disable or op=retry-failed",
                other.unwrap_or("")
            )));
        }
    };
    if wanted == FlowState::Enabled {
        // Columns may have been removed in Dynamics while the flow was off.
        check(&state, &caller, &current.definition).await?;
    }
    let updated = ActivationFlow { state: wanted, etag: Etag::new(), updated_at: Utc::now(), ..current.clone() };
    state.store.update_flow(&FlowRecord::from(&updated), &current.etag).await?;
    state.supervisor.flows_changed();
    Ok(id_and_etag(StatusCode::OK, updated.id, &updated.etag))
}

pub async fn delete(State(state): State<Arc<AppState>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let flow = find(&state, &caller, &id).await?;
    state.store.delete_flow(&caller.sandbox, flow.id).await?;
    state.supervisor.flows_changed();
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct RunsQuery {
    property: Option<String>,
}

/// `GET /runs?property=flowId==…`: a flow's runs, one an hour, newest first; without the filter, those of every
/// flow of the sandbox.
pub async fn runs(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<RunsQuery>,
) -> ApiResult<Response> {
    let flows = match query.property.as_deref() {
        Some(p) => match p.strip_prefix("flowId==") {
            Some(id) => vec![find(&state, &caller, id).await?],
            None => {
                return Err(ApiError::bad_request(format!(
                    "property={p} is not a filter runs take: use property=flowId==<flow id>"
                )));
            }
        },
        None => activation_flows(state.store.flows(&caller.sandbox).await?)?,
    };
    let mut all = Vec::new();
    for flow in flows {
        all.extend(state.store.runs(flow.id).await?.iter().map(run_json));
    }
    Ok(items(all))
}

/// A run in Flow Service's shape: its record summary, and each outcome group with sample identities.
fn run_json(run: &RunRecord) -> Json {
    let t = &run.tally;
    let decided = t.written + t.excluded + t.failed;
    let status = match (t.failed, t.written) {
        (0, _) => "success",
        (_, 0) => "failed",
        _ => "partialSuccess",
    };
    json!({
        "id": Uuid::new_v5(&run.flow_id.0, run.hour.to_rfc3339().as_bytes()),
        "flowId": run.flow_id,
        "hour": run.hour.to_rfc3339(),
        "createdAt": run.hour.timestamp_millis(),
        "metrics": {
            "recordSummary": {
                "inputRecordCount": t.received,
                "outputRecordCount": t.written,
                "skippedRecordCount": t.excluded,
                "failedRecordCount": t.failed,
            },
            "activationRate": if decided == 0 { 0.0 } else { t.written as f64 / decided as f64 },
        },
        "statusSummary": {"status": status},
        "outcomes": t.groups.iter().map(|g| json!({
            "outcome": g.outcome.as_str(), "code": g.code, "message": g.message, "count": g.count, "samples": g.samples,
        })).collect::<Vec<_>>(),
    })
}

fn activation_flows(records: Vec<FlowRecord>) -> ApiResult<Vec<ActivationFlow>> {
    records.iter().map(|r| ActivationFlow::try_from(r).map_err(ApiError::from)).collect()
}
