//! `flows` and `runs`. A flow is run by one job, named by its flow spec when it is made (activation when none is
//! given; a lead intake with the lead intake's flow spec); its job's handlers read, check and change it. An
//! activation flow is validated against the contact table of its destination each time it is saved or enabled,
//! a lead intake against the lead table.

use super::governance::governed;
use super::timeline::Changed;
use super::{
    ApiError, ApiResult, AppState, Caller, engagement, flow_json, id_and_etag, if_match, ingestion, items, leads,
    parse_body,
};
use crate::access::Role;
use crate::activation::{ActivationFlow, FlowDefinition, FlowState, job, validation};
use crate::engagement::definition::{self as engagement_definition, EventsFlow};
use crate::engagement::job as engagement_job;
use crate::ids::{Etag, FlowId};
use crate::ingestion::IngestionFlow;
use crate::leads::intake::LeadIntake;
use crate::leads::job as leads_job;
use crate::pipeline::Taken;
use crate::pipeline::inlet::InletLog;
use crate::pipeline::runner::ReplayError;
use crate::pipeline::{Flow, FlowSpecRef, JobDefinition, ReplaySummary};
use crate::specs::{ENGAGEMENT_EVENTS_FLOW_SPEC, INGESTION_FLOW_SPEC, LEAD_INTAKE_FLOW_SPEC};
use crate::store::{ChangeAction, ResourceKind};
use crate::store::{FlowRecord, Outcome, RunRecord};
use crate::target::CustomizationPrefix;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use dataverse::TableDefinition;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Checks a flow against its target: the target and its connection exist in the sandbox, and the contact table of
/// the environment has every column the flow writes.
async fn check(state: &AppState, caller: &Caller, flow: &FlowDefinition) -> ApiResult<()> {
    governed(state, caller, flow).await?;
    let report = |problems: Vec<validation::Problem>| {
        let report = validation::ValidationReport { flow: flow.name.clone(), table: "contact", problems };
        ApiError::new(StatusCode::BAD_REQUEST, "flow-validation", report.to_string()).with_problems(report.problems)
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
    let prefix = &target.customization_prefix;
    let contact = client.table("contact").await.map_err(unavailable)?;
    if validate_aside(flow, prefix, contact).await.is_ok() {
        return Ok(());
    }
    // The cached table may predate a column the user just created: read it again before saying no.
    client.invalidate_table("contact");
    let contact = client.table("contact").await.map_err(unavailable)?;
    validate_aside(flow, prefix, contact).await.map_err(|r| report(r.problems))
}

/// Validates on a blocking thread: checking a large flow is CPU work (tenths of a second at the caps), which on the
/// async runtime would hold up the acknowledgements of every inlet meanwhile.
async fn validate_aside(
    flow: &FlowDefinition,
    prefix: &CustomizationPrefix,
    contact: Arc<TableDefinition>,
) -> Result<(), validation::ValidationReport> {
    let (flow, prefix) = (flow.clone(), prefix.clone());
    tokio::task::spawn_blocking(move || validation::validate(&flow, &prefix, &contact))
        .await
        .expect("validating a flow does not panic")
}

fn parse_id(id: &str, caller: &Caller) -> ApiResult<FlowId> {
    id.parse().map_err(|_| ApiError::not_found("flow", id, &caller.sandbox))
}

/// A flow of any job.
async fn find_record(state: &AppState, caller: &Caller, id: &str) -> ApiResult<FlowRecord> {
    let found = state.store.flow(&caller.sandbox, parse_id(id, caller)?).await?;
    found.ok_or_else(|| ApiError::not_found("flow", id, &caller.sandbox))
}

/// A flow, as its job reads it.
enum AnyFlow {
    Activation(ActivationFlow),
    Leads(LeadIntake),
    Ingestion(IngestionFlow),
    Events(EventsFlow),
}

impl AnyFlow {
    fn of(record: &FlowRecord) -> ApiResult<AnyFlow> {
        Ok(match record.job.as_str() {
            leads_job::JOB => AnyFlow::Leads(LeadIntake::try_from(record)?),
            crate::ingestion::JOB => AnyFlow::Ingestion(IngestionFlow::try_from(record)?),
            engagement_definition::JOB => AnyFlow::Events(EventsFlow::try_from(record)?),
            _ => AnyFlow::Activation(ActivationFlow::try_from(record)?),
        })
    }

    fn json(&self) -> Json {
        match self {
            AnyFlow::Activation(flow) => flow_json(flow),
            AnyFlow::Leads(intake) => leads::intake_json(intake),
            AnyFlow::Ingestion(flow) => ingestion::ingestion_flow_json(flow),
            AnyFlow::Events(flow) => engagement::events_flow_json(flow),
        }
    }
}

async fn find_any(state: &AppState, caller: &Caller, id: &str) -> ApiResult<AnyFlow> {
    AnyFlow::of(&find_record(state, caller, id).await?)
}

pub async fn create(State(state): State<Arc<AppState>>, caller: Caller, body: Bytes) -> ApiResult<Response> {
    caller.may(Role::Manage)?;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Spec {
        flow_spec: Option<FlowSpecRef>,
    }
    match serde_json::from_slice::<Spec>(&body).ok().and_then(|s| s.flow_spec) {
        Some(spec) if spec.id == LEAD_INTAKE_FLOW_SPEC => return leads::create(&state, caller, &body).await,
        Some(spec) if spec.id == INGESTION_FLOW_SPEC => return ingestion::create_flow(&state, caller, &body).await,
        Some(spec) if spec.id == ENGAGEMENT_EVENTS_FLOW_SPEC => return engagement::create(&state, caller, &body).await,
        Some(spec) => {
            return Err(ApiError::bad_request(format!(
                "flowSpec.id {} is not a flow spec dynsync knows: use {LEAD_INTAKE_FLOW_SPEC} for a lead intake, \
                 {INGESTION_FLOW_SPEC} for a table ingestion, {ENGAGEMENT_EVENTS_FLOW_SPEC} for email events (GET \
                 /flowSpecs lists them), or leave flowSpec out for an audience activation flow",
                spec.id
            )));
        }
        None => {}
    }
    let flow = create_activation(&state, &caller, parse_body::<FlowDefinition>(&body)?).await?;
    Ok(id_and_etag(StatusCode::CREATED, flow.id, &flow.etag))
}

/// Makes an activation flow, checked against its destination's contact table first: its problems, every one,
/// are the error's report (`{"problems": [...]}`).
pub async fn create_activation(
    state: &AppState,
    caller: &Caller,
    definition: FlowDefinition,
) -> ApiResult<ActivationFlow> {
    caller.may(Role::Manage)?;
    let definition = definition.normalized();
    check(state, caller, &definition).await?;
    let flow = ActivationFlow::new(caller.sandbox.clone(), definition);
    state.store.insert_flow(&FlowRecord::from(&flow)).await?;
    state.supervisor.flows_changed();
    caller.made(state, Changed::from(&flow), ChangeAction::Created).await;
    Ok(flow)
}

pub async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Response> {
    let records = state.store.flows(&caller.sandbox).await?;
    let all = records.iter().map(AnyFlow::of).collect::<ApiResult<Vec<_>>>()?;
    Ok(items(all.iter().map(AnyFlow::json).collect()))
}

/// `GET /flows/{id}`: the flow, with its backlog — records accepted and not yet handled — and its lag, the
/// age of the oldest of them, and who runs it.
pub async fn get(State(state): State<Arc<AppState>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let flow = match find_any(&state, &caller, &id).await? {
        AnyFlow::Activation(flow) => flow,
        AnyFlow::Leads(intake) => {
            let mut body = leads::get(&state, &intake).await?;
            body["runtime"] = runtime(&state, intake.id).await?;
            return Ok(items(vec![body]));
        }
        AnyFlow::Ingestion(flow) => {
            let mut body = ingestion::ingestion_flow_json(&flow);
            let loads = ingestion::loads(&state, flow.id).await?;
            body["lastLoad"] = loads.first().map_or(Json::Null, ingestion::load_json);
            body["runtime"] = runtime(&state, flow.id).await?;
            return Ok(items(vec![body]));
        }
        AnyFlow::Events(flow) => {
            let mut body = engagement::get(&state, &flow).await?;
            body["runtime"] = runtime(&state, flow.id).await?;
            return Ok(items(vec![body]));
        }
    };
    let backlog = InletLog::backlog(&state.store, flow.id).await?;
    let mut body = flow_json(&flow);
    body["backlog"] = json!({
        "profiles": backlog.records,
        "oldestReceivedAt": backlog.oldest.map(|t| t.to_rfc3339()),
        "lagSeconds": backlog.oldest.map_or(0.0, |t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0),
    });
    body["inletUrl"] = json!(format!("/collection/{}", flow.id));
    body["runtime"] = runtime(&state, flow.id).await?;
    Ok(items(vec![body]))
}

/// Who runs the flow, and whether it runs or waits (a refused sign-in pauses it, losing nothing).
async fn runtime(state: &AppState, flow: FlowId) -> ApiResult<Json> {
    Ok(match state.store.lease_of(flow).await? {
        Some(l) => json!({"status": l.status, "detail": l.detail, "owner": l.owner, "generation": l.generation}),
        None => json!({"status": "waiting", "detail": "no process has started the flow yet"}),
    })
}

/// `PUT /flows/{id}`: replaces the definition, validated again; the state stays.
pub async fn replace(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    caller.may(Role::Manage)?;
    let current = match find_any(&state, &caller, &id).await? {
        AnyFlow::Activation(flow) => flow,
        AnyFlow::Leads(intake) => {
            if_match(&headers, "the intake", &intake.etag)?;
            return leads::replace(&state, caller, intake, &body).await;
        }
        AnyFlow::Events(flow) => {
            if_match(&headers, "the flow", &flow.etag)?;
            return engagement::replace(&state, caller, flow, &body).await;
        }
        AnyFlow::Ingestion(_) => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "not-replaceable",
                "an ingestion flow's definition is not replaced in place, since its dataset was loaded with it: \
                 create a new flow (a new dataset, or a new dataset generation) and delete this one",
            ));
        }
    };
    if_match(&headers, "the flow", &current.etag)?;
    let updated = replace_activation(&state, &caller, current, parse_body::<FlowDefinition>(&body)?).await?;
    Ok(id_and_etag(StatusCode::OK, updated.id, &updated.etag))
}

/// Replaces an activation flow's definition, checked again as when it was made; its state stays. Refused as stale
/// when the flow changed since `current` was read.
pub async fn replace_activation(
    state: &AppState,
    caller: &Caller,
    current: ActivationFlow,
    definition: FlowDefinition,
) -> ApiResult<ActivationFlow> {
    caller.may(Role::Manage)?;
    let definition = definition.normalized();
    check(state, caller, &definition).await?;
    let updated = ActivationFlow { definition, etag: Etag::new(), updated_at: Utc::now(), ..current.clone() };
    state.store.update_flow(&FlowRecord::from(&updated), &current.etag).await?;
    state.supervisor.flows_changed();
    caller.made(state, Changed::from(&updated), ChangeAction::Changed).await;
    Ok(updated)
}

/// One operation of `PATCH /flows/{id}`.
#[derive(Deserialize)]
struct FlowPatch {
    op: String,
    path: String,
    #[serde(default)]
    value: Json,
}

/// `PATCH /flows/{id}`: JSON Patch `replace` operations on `/scheduleParams/frequency`, `/scheduleParams/interval`
/// and `/scheduleParams/startTime` of an ingestion flow, with `If-Match`, as Flow Service changes a dataflow's
/// schedule. Every other change of a flow is a `PUT`.
pub async fn patch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    caller.may(Role::Manage)?;
    let AnyFlow::Ingestion(current) = find_any(&state, &caller, &id).await? else {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-patchable",
            "only an ingestion flow's schedule is patched: change this flow with PUT /flows/{id}",
        ));
    };
    if_match(&headers, "the flow", &current.etag)?;
    let operations: Vec<FlowPatch> = parse_body(&body)?;
    let mut params = current.definition.schedule.params();
    let mut problems = Vec::new();
    for (i, o) in operations.iter().enumerate() {
        match (o.op.as_str(), o.path.as_str()) {
            ("replace", "/scheduleParams/frequency") => params.frequency = o.value.as_str().map(str::to_string),
            ("replace", "/scheduleParams/interval") => params.interval = Some(o.value.clone()),
            ("replace", "/scheduleParams/startTime") => params.start_time = Some(o.value.clone()),
            (op, path) => problems.push(format!(
                "[{i}] {op} {path}: a flow's patch replaces /scheduleParams/frequency, /scheduleParams/interval or \
                 /scheduleParams/startTime"
            )),
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::bad_request(problems.join("; ")));
    }
    if params.frequency.as_deref() == Some("once") {
        params.interval = None;
    }
    let updated = ingestion::reschedule(&state, &caller, current, &params).await?;
    Ok(id_and_etag(StatusCode::OK, updated.id, &updated.etag))
}

/// `POST /flows/{id}/action?op=enable|disable`, as Flow Service enables and disables flows.
pub async fn action(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    // Rotating an intake's secret changes how it is reached, which is the manager's; the rest runs flows.
    let op = query.get("op").map(String::as_str);
    caller.may(if op == Some("rotate-secret") { Role::Manage } else { Role::Activate })?;
    let current = match find_any(&state, &caller, &id).await? {
        AnyFlow::Activation(flow) => flow,
        AnyFlow::Leads(intake) => return intake_action(&state, &caller, intake, op).await,
        AnyFlow::Ingestion(flow) => return ingestion_action(&state, &caller, flow, op).await,
        AnyFlow::Events(flow) => return events_action(&state, &caller, flow, op).await,
    };
    let wanted = match query.get("op").map(String::as_str) {
        Some("retry-failed") => {
            let replaying = job::retry_failed(&state.store, &state.clients, &current);
            return replay(&state, &caller, Changed::from(&current), "contacts", "activated", replaying).await;
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
    set_state(&state, &caller, current, wanted).await
}

/// The actions on a lead intake: enable, disable, retry-failed, validate, rotate-secret.
async fn intake_action(
    state: &AppState,
    caller: &Caller,
    current: LeadIntake,
    op: Option<&str>,
) -> ApiResult<Response> {
    let wanted = match op {
        Some("retry-failed") => {
            let replaying = leads_job::retry_failed(&state.store, &state.clients, &current);
            return replay(state, caller, Changed::from(&current), "leads", "written", replaying).await;
        }
        Some("validate") => return leads::validate(state, &current).await,
        Some("rotate-secret") => {
            let rotated = leads::rotate_secret(state, &current).await?;
            caller.made(state, Changed::from(&current), ChangeAction::SecretRotated).await;
            return Ok(rotated);
        }
        Some("enable") => FlowState::Enabled,
        Some("disable") => FlowState::Disabled,
        other => {
            return Err(ApiError::bad_request(format!(
                "op={} is not an action on a lead intake: use op=enable, op=disable, op=retry-failed, op=validate or op=rotate-secret",
                other.unwrap_or("")
            )));
        }
    };
    if wanted == FlowState::Enabled {
        governed(state, caller, &current.definition).await?;
    }
    set_state(state, caller, current, wanted).await
}

/// The actions on an ingestion flow: enable, disable, replay (its next load reads the whole table again and sends
/// every row, the columns whose updates are not applied included).
async fn ingestion_action(
    state: &AppState,
    caller: &Caller,
    current: IngestionFlow,
    op: Option<&str>,
) -> ApiResult<Response> {
    let wanted = match op {
        Some("enable") => FlowState::Enabled,
        Some("disable") => FlowState::Disabled,
        Some("replay") => {
            let at = chrono::Utc::now();
            state.store.request_replay(current.id, at).await?;
            state.supervisor.flows_changed();
            caller.made(state, Changed::from(&current), ChangeAction::Replayed).await;
            return Ok((
                StatusCode::ACCEPTED,
                axum::Json(serde_json::json!({"id": current.id, "replayRequestedAt": at.to_rfc3339()})),
            )
                .into_response());
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "op={} is not an action on an ingestion flow: use op=enable, op=disable or op=replay",
                other.unwrap_or("")
            )));
        }
    };
    set_state(state, caller, current, wanted).await
}

/// The actions on an email events flow: enable, disable, retry-failed, rotate-secret.
async fn events_action(
    state: &AppState,
    caller: &Caller,
    current: EventsFlow,
    op: Option<&str>,
) -> ApiResult<Response> {
    let wanted = match op {
        Some("retry-failed") => {
            let replaying = engagement_job::retry_failed(&state.store, &state.clients, &current);
            return replay(state, caller, Changed::from(&current), "events", "written", replaying).await;
        }
        Some("rotate-secret") => {
            let rotated = engagement::rotate_secret(state, &current).await?;
            caller.made(state, Changed::from(&current), ChangeAction::SecretRotated).await;
            return Ok(rotated);
        }
        Some("enable") => FlowState::Enabled,
        Some("disable") => FlowState::Disabled,
        other => {
            return Err(ApiError::bad_request(format!(
                "op={} is not an action on an email events flow: use op=enable, op=disable, op=retry-failed or op=rotate-secret",
                other.unwrap_or("")
            )));
        }
    };
    if wanted == FlowState::Enabled {
        governed(state, caller, &current.definition).await?;
    }
    set_state(state, caller, current, wanted).await
}

/// `op=retry-failed` of any job: its failed `records` written again, one replay of a flow at a time — two at
/// once would write and count the same records twice. `written_as` names the records written in the answer.
async fn replay(
    state: &AppState,
    caller: &Caller,
    flow: Changed<'_>,
    records: &str,
    written_as: &str,
    replaying: impl std::future::Future<Output = Result<ReplaySummary, ReplayError>>,
) -> ApiResult<Response> {
    let _replaying = state.replays.start(FlowId(flow.id)).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "replay-running",
            format!(
                "a replay of this flow's failed {records} is already running: wait for it to answer, then read the flow's runs"
            ),
        )
    })?;
    let summary = replaying.await.map_err(|e| {
        ApiError::new(StatusCode::BAD_GATEWAY, "dynamics", format!("the failed {records} were not replayed: {e}"))
    })?;
    caller.made(state, flow, ChangeAction::Replayed).await;
    Ok(axum::Json(json!({"retried": summary.retried, written_as: summary.written, "failed": summary.failed}))
        .into_response())
}

/// Enables or disables a flow of any job.
async fn set_state<D: JobDefinition>(
    state: &AppState,
    caller: &Caller,
    current: Flow<D>,
    wanted: FlowState,
) -> ApiResult<Response> {
    let updated = Flow { state: wanted, etag: Etag::new(), updated_at: Utc::now(), ..current.clone() };
    state.store.update_flow(&FlowRecord::from(&updated), &current.etag).await?;
    state.supervisor.flows_changed();
    let action = match wanted {
        FlowState::Enabled => ChangeAction::Enabled,
        FlowState::Disabled => ChangeAction::Disabled,
    };
    caller.made(state, Changed::from(&updated), action).await;
    Ok(id_and_etag(StatusCode::OK, updated.id, &updated.etag))
}

/// Refused bodies shown at a time: at most 64 KB each, so an answer stays a few megabytes.
const REJECTS_SHOWN: i64 = 50;

/// `GET /flows/{id}/rejects`: the newest bodies the flow's inlet refused (a lead intake's, an email events
/// flow's), with why.
pub async fn rejects(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let flow = find_record(&state, &caller, &id).await?;
    let kept = state.store.inlet_rejects(flow.id, REJECTS_SHOWN).await?;
    Ok(items(
        kept.iter()
            .map(|r| json!({"id": r.id, "receivedAt": r.received_at.to_rfc3339(), "problems": r.problems, "body": r.body}))
            .collect(),
    ))
}

pub async fn delete(State(state): State<Arc<AppState>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    caller.may(Role::Manage)?;
    let flow = find_record(&state, &caller, &id).await?;
    state.store.delete_flow(&caller.sandbox, flow.id).await?;
    state.supervisor.flows_changed();
    let what = Changed { kind: ResourceKind::Flow, id: flow.id.0, name: &flow.name };
    caller.made(&state, what, ChangeAction::Deleted).await;
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
            Some(id) => vec![find_record(&state, &caller, id).await?],
            None => {
                return Err(ApiError::bad_request(format!(
                    "property={p} is not a filter runs take: use property=flowId==<flow id>"
                )));
            }
        },
        None => state.store.flows(&caller.sandbox).await?,
    };
    let mut all = Vec::new();
    for flow in flows {
        let runs = state.store.runs(flow.id).await?;
        if flow.job != crate::ingestion::JOB {
            all.extend(runs.iter().map(run_json));
            continue;
        }
        // An ingestion's runs are its loads: each with its kind, duration and freshness, and a load that read
        // nothing new (a scan that found no change) a run of no records.
        let loads = ingestion::loads(&state, flow.id).await?;
        let empty = loads.iter().filter(|l| !runs.iter().any(|r| r.hour == l.started_at)).map(|l| RunRecord {
            flow_id: flow.id,
            hour: l.started_at,
            tally: Default::default(),
        });
        let mut runs: Vec<RunRecord> = runs.iter().cloned().chain(empty).collect();
        runs.sort_by_key(|r| std::cmp::Reverse(r.hour));
        for run in &runs {
            let mut body = run_json(run);
            body["metrics"]["recordSummary"]["deletedRecordCount"] = json!(written_as(run, Taken::Deleted));
            if let Some(load) = loads.iter().find(|l| l.started_at == run.hour) {
                body["load"] = ingestion::load_json(load);
            }
            all.push(body);
        }
    }
    Ok(items(all))
}

/// Records of a run written in one way (created, updated), when its sink told them apart.
fn written_as(run: &RunRecord, how: Taken) -> u64 {
    let group = run.tally.groups.iter().find(|g| g.outcome == Outcome::Written && g.code == how.code());
    group.map_or(0, |g| g.count)
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
                "createdRecordCount": written_as(run, Taken::Created),
                "updatedRecordCount": written_as(run, Taken::Updated),
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
