//! Lead intakes in the API: made, read and changed as flows (`POST /flows` with the lead intake's flow spec),
//! and their HTTPS endpoint, `POST /leads/{flowId}`, where Partner Center posts leads. The endpoint is opened by
//! the intake's secret in the URL (`?code=…`, as Partner Center sends no header; rotated with
//! `op=rotate-secret`, the previous one valid a week more) or by an API token. A lead is answered 202 only once
//! it is in the intake's durable log; one that cannot be a lead is answered 400 with every problem, and kept to
//! be inspected (`GET /flows/{id}/rejects`). A wrong secret is answered 401 and stores nothing.

use super::timeline::Changed;
use super::{ApiError, ApiResult, AppState, Caller, authenticate, id_and_etag, parse_body};
use crate::checks::{Problem, ValidationReport};
use crate::ids::{Etag, FlowId};
use crate::leads::intake::{IntakeDefinition, LeadIntake};
use crate::leads::job::{self, PostedLead};
use crate::leads::{Lead, LeadWrite, TEST_MARKER};
use crate::pipeline::JobDefinition;
use crate::pipeline::inlet::InletLog;
use crate::pipeline::runner::Reach;
use crate::store::ChangeAction;
use crate::store::{FlowRecord, InletReject};
use axum::Json as AxumJson;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest lead body taken: Partner Center's are a few hundred bytes.
pub const MAX_LEAD_BYTES: usize = 64 * 1024;
/// How long a rotated-out secret still opens the intake.
pub const PREVIOUS_SECRET_VALID: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long Validate waits for each step.
const VALIDATE_WAIT: Duration = Duration::from_secs(60);

pub fn intake_path(id: FlowId) -> String {
    format!("/leads/{id}")
}

/// A new secret for an intake's URL: 32 random bytes, hex.
fn new_secret() -> String {
    crate::secrets::random_token(SECRET_PREFIX)
}

/// What an intake URL's code starts with.
const SECRET_PREFIX: &str = "lis_";

/// Checks an intake against its destination: the target and its connection, and the lead table's columns.
async fn check(state: &AppState, caller: &Caller, definition: &IntakeDefinition) -> ApiResult<()> {
    super::governance::governed(state, caller, definition).await?;
    let report = |problems: Vec<Problem>| {
        let report = ValidationReport { flow: definition.name.clone(), table: "lead", problems };
        ApiError::new(StatusCode::BAD_REQUEST, "flow-validation", report.to_string()).with_problems(report.problems)
    };
    let shape = definition.check_shape();
    if !shape.is_empty() {
        return Err(report(shape));
    }
    let target = definition.target_connection_id();
    let reach = Reach::resolve(&state.store, &state.clients, &caller.sandbox, target)
        .await
        .map_err(|e| report(vec![Problem::new("targetConnectionIds[0]", e.to_string())]))?;
    let unavailable = |e: dataverse::Error| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "metadata-unavailable",
            format!(
                "the intake cannot be checked, because the lead table cannot be read: {e}; test the connection and try again"
            ),
        )
    };
    let mut lead = reach.client.table("lead").await.map_err(unavailable)?;
    if definition.lead_columns(&lead).is_err() {
        // The cached table may predate a column the user just created: read it again before saying no.
        reach.client.invalidate_table("lead");
        lead = reach.client.table("lead").await.map_err(unavailable)?;
    }
    let mut problems = definition.lead_columns(&lead).err().unwrap_or_default();
    if let Some(code) = definition.columns.lead_source_code {
        let options = reach.client.choice_options("lead", "leadsourcecode").await.map_err(unavailable)?;
        if !options.iter().any(|o| o.value == code) {
            let known: Vec<String> = options.iter().map(|o| format!("{} {}", o.value, o.label)).collect();
            problems.push(Problem::new(
                "columns.leadSourceCode",
                format!(
                    "{code} is not an option of the lead table's leadsourcecode ({}): add it to the choice in Dynamics, or pick one of these",
                    known.join(", ")
                ),
            ));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(report(problems)) }
}

pub fn intake_json(intake: &LeadIntake) -> Json {
    let mut body = super::flow_json(intake);
    body["intakeUrl"] = json!(intake_path(intake.id));
    body
}

/// `POST /flows` for a lead intake: 201 with the intake's URL, its secret shown this once.
pub async fn create(state: &AppState, caller: Caller, body: &[u8]) -> ApiResult<Response> {
    let definition = parse_body::<IntakeDefinition>(body)?.normalized();
    check(state, &caller, &definition).await?;
    let intake = LeadIntake::new(caller.sandbox.clone(), definition);
    state.store.insert_flow(&FlowRecord::from(&intake)).await?;
    let secret = new_secret();
    state.store.rotate_inlet_secret(intake.id, &secret, 0).await?;
    state.supervisor.flows_changed();
    caller.made(state, Changed::from(&intake), ChangeAction::Created).await;
    let answer = json!({
        "id": intake.id,
        "etag": intake.etag.0,
        "intakeUrl": format!("{}?code={secret}", intake_path(intake.id)),
        "detail": "give Partner Center this URL, after dynsync's address; its code is shown only now (rotate it with op=rotate-secret)",
    });
    Ok((StatusCode::CREATED, AxumJson(answer)).into_response())
}

/// `PUT /flows/{id}` of a lead intake: the definition replaced, checked again; the state and the secret stay.
pub async fn replace(state: &AppState, caller: Caller, current: LeadIntake, body: &[u8]) -> ApiResult<Response> {
    let updated = replace_intake(state, &caller, current, parse_body::<IntakeDefinition>(body)?).await?;
    Ok(id_and_etag(StatusCode::OK, updated.id, &updated.etag))
}

/// Replaces a lead intake's definition, checked again; its state and secret stay.
pub async fn replace_intake(
    state: &AppState,
    caller: &Caller,
    current: LeadIntake,
    definition: IntakeDefinition,
) -> ApiResult<LeadIntake> {
    caller.may(crate::access::Role::Manage)?;
    let definition = definition.normalized();
    check(state, caller, &definition).await?;
    let updated = LeadIntake { definition, etag: Etag::new(), updated_at: Utc::now(), ..current.clone() };
    state.store.update_flow(&FlowRecord::from(&updated), &current.etag).await?;
    state.supervisor.flows_changed();
    caller.made(state, Changed::from(&updated), ChangeAction::Changed).await;
    Ok(updated)
}

/// `GET /flows/{id}` of a lead intake: with its backlog, what it refused, and how its notifications stand.
pub async fn get(state: &AppState, intake: &LeadIntake) -> ApiResult<Json> {
    let backlog = InletLog::backlog(&state.store, intake.id).await?;
    let notices = state.store.outbox_state(intake.id).await?;
    let rejected = state.store.inlet_reject_count(intake.id).await?;
    let mut body = intake_json(intake);
    body["backlog"] = json!({
        "leads": backlog.records,
        "oldestReceivedAt": backlog.oldest.map(|t| t.to_rfc3339()),
    });
    body["rejected"] = json!(rejected);
    body["notifications"] = json!({
        "sent": notices.sent, "waiting": notices.waiting, "lastError": notices.last_error,
    });
    Ok(body)
}

/// Accepts a body as a lead: kept in the intake's log (202), or refused and kept aside (400).
async fn accept(state: &AppState, intake: FlowId, body: &[u8]) -> ApiResult<PostedLead> {
    let received_at = Utc::now();
    // A body `Lead::from_json` takes is a JSON object.
    let parsed = Lead::from_json(body).map(|_| serde_json::from_slice::<Json>(body).expect("a lead's body is JSON"));
    match parsed {
        Ok(lead) => {
            let posted = PostedLead { id: uuid::Uuid::new_v4(), received_at, lead };
            state.store.append_log(intake, &[serde_json::to_string(&posted).expect("a lead serializes")]).await?;
            state.supervisor.wake(intake);
            Ok(posted)
        }
        Err(problems) => {
            let reject = InletReject {
                id: uuid::Uuid::new_v4(),
                received_at,
                body: String::from_utf8_lossy(body).into_owned(),
                problems: problems.to_string(),
            };
            state.store.keep_inlet_reject(intake, &reject).await?;
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid-lead",
                format!(
                    "the lead was not accepted: {problems}. It is kept as rejected {} (GET /flows/{intake}/rejects)",
                    reject.id
                ),
            )
            .with_report(json!({"problems": problems.problems, "rejectId": reject.id})))
        }
    }
}

#[derive(Deserialize)]
pub struct IntakeQuery {
    code: Option<String>,
}

/// `POST /leads/{flowId}`: a lead, as Partner Center posts it.
pub async fn post_lead(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<IntakeQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this lead intake URL's code is not the intake's: use the URL dynsync gave when the intake was made or its secret last rotated",
        )
    };
    let flow: FlowId = id.parse().map_err(|_| unauthorized())?;
    let grant = match &query.code {
        Some(code) if state.store.inlet_secret_opens(flow, code).await? => None,
        Some(_) => return Err(unauthorized()),
        None => Some(authenticate(&headers, &state).await?),
    };
    let record = state.store.flow_by_id(flow).await?.filter(|r| r.job == job::JOB).ok_or_else(unauthorized)?;
    if let Some(grant) = grant {
        super::collection::may_send(&grant, &record.sandbox, unauthorized)?;
    }
    if body.len() > MAX_LEAD_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!(
                "a lead is at most {MAX_LEAD_BYTES} bytes, and this body has {}: send one lead per request",
                body.len()
            ),
        ));
    }
    let posted = accept(&state, record.id, &body).await?;
    let answer = json!({"id": posted.id, "receivedAt": posted.received_at.to_rfc3339(), "status": "accepted"});
    Ok((StatusCode::ACCEPTED, AxumJson(answer)).into_response())
}

/// `POST /flows/{id}/action?op=rotate-secret`: a new secret for the intake's URL, shown once; the previous one
/// keeps working a week, so that the sender can be moved over without losing a lead.
pub async fn rotate_secret(state: &AppState, intake: &LeadIntake) -> ApiResult<Response> {
    rotate_inlet_secret(state, intake.id, SECRET_PREFIX, "intakeUrl", &intake_path(intake.id)).await
}

/// A new secret for the URL of a flow's inlet at `path`, shown once as `field`; the previous one keeps working
/// [`PREVIOUS_SECRET_VALID`] more, so that the sender can be moved over without losing what it posts.
pub async fn rotate_inlet_secret(
    state: &AppState,
    flow: FlowId,
    prefix: &str,
    field: &str,
    path: &str,
) -> ApiResult<Response> {
    let secret = crate::secrets::random_token(prefix);
    let until = Utc::now().timestamp_millis() + PREVIOUS_SECRET_VALID.as_millis() as i64;
    state.store.rotate_inlet_secret(flow, &secret, until).await?;
    Ok(AxumJson(json!({
        field: format!("{path}?code={secret}"),
        "previousValidUntil": chrono::DateTime::from_timestamp_millis(until).map(|t| t.to_rfc3339()),
    }))
    .into_response())
}

/// One step of Validate.
/// How a step of Validate went, and how Validate went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Passed,
    Failed,
    Skipped,
}

/// A step of Validate: `accepted`, `written`, `notified`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidateStep {
    pub step: String,
    pub status: CheckStatus,
    pub detail: String,
    /// The test lead's id in the intake's log (`accepted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<uuid::Uuid>,
    /// The lead it became in Dynamics (`written`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_id: Option<String>,
}

/// What `op=validate` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidateReport {
    pub status: CheckStatus,
    pub steps: Vec<ValidateStep>,
}

fn step(name: &str, passed: bool, detail: String) -> ValidateStep {
    let status = if passed { CheckStatus::Passed } else { CheckStatus::Failed };
    ValidateStep { step: name.to_string(), status, detail, id: None, lead_id: None }
}

/// `POST /flows/{id}/action?op=validate`: sends a test lead, as Partner Center's Validate button does, through
/// the whole path, and reports each step: accepted, written to Dynamics (with the lead's id), notification sent.
pub async fn validate(state: &AppState, intake: &LeadIntake) -> ApiResult<Response> {
    Ok(AxumJson(validate_report(state, intake).await?).into_response())
}

/// Validate's steps, each with how it went.
pub async fn validate_report(state: &AppState, intake: &LeadIntake) -> ApiResult<ValidateReport> {
    let tag = format!("{TEST_MARKER}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let lead = json!({
        "UserDetails": {
            "FirstName": TEST_MARKER, "LastName": tag, "Email": format!("{}@example.com", tag.to_lowercase()),
            "Phone": "0000000000", "Country": "US", "Company": TEST_MARKER, "Title": TEST_MARKER,
        },
        "LeadSource": format!("AzureMarketplace-INS|{}", tag.to_lowercase()),
        "ActionCode": "INS",
        "OfferTitle": format!("{TEST_MARKER} offer"),
        "Description": "Partner Center's test lead, sent by dynsync's Validate",
    });
    let posted = accept(state, intake.id, lead.to_string().as_bytes()).await?;
    let mut steps = vec![ValidateStep {
        id: Some(posted.id),
        ..step("accepted", true, "the test lead is in the intake's log".into())
    }];
    let deadline = Instant::now() + VALIDATE_WAIT;
    let written = wait_written(state, intake, posted.id, deadline).await;
    let lead_id = match written {
        Ok(lead_id) => {
            steps.push(ValidateStep {
                lead_id: Some(lead_id.clone()),
                ..step("written", true, format!("the test lead is lead {lead_id} in Dynamics"))
            });
            Some(lead_id)
        }
        Err(detail) => {
            steps.push(step("written", false, detail));
            None
        }
    };
    if let Some(lead_id) = lead_id {
        if intake.definition.notify.is_empty() {
            steps.push(ValidateStep {
                status: CheckStatus::Skipped,
                ..step("notified", true, "the intake notifies no one (notify is empty)".into())
            });
        } else {
            let (sent, detail) = wait_notified(state, &lead_id, deadline).await;
            steps.push(step("notified", sent, detail));
        }
    }
    let passed = steps.iter().all(|s| s.status != CheckStatus::Failed);
    Ok(ValidateReport { status: if passed { CheckStatus::Passed } else { CheckStatus::Failed }, steps })
}

/// Waits for the test lead's note in Dynamics; the lead's id, or why it is not there.
async fn wait_written(
    state: &AppState,
    intake: &LeadIntake,
    note: uuid::Uuid,
    deadline: Instant,
) -> Result<String, String> {
    let target = intake.definition.target_connection_id();
    let reach =
        Reach::resolve(&state.store, &state.clients, &intake.sandbox, target).await.map_err(|e| e.to_string())?;
    let path = format!("annotations({note})?$select=_objectid_value");
    loop {
        if let Ok(answer) = reach.client.execute(&dataverse::Request::get(path.clone())).await
            && let Ok(row) = answer.read_json::<Json>()
            && let Some(lead) = row.get("_objectid_value").and_then(Json::as_str)
        {
            return Ok(lead.to_string());
        }
        let failed = state.store.failed_records(intake.id).await.unwrap_or_default();
        let holds_note = |payload: &str| {
            serde_json::from_str::<LeadWrite>(payload).is_ok_and(|w| w.steps.iter().any(|s| s.note_id == note))
        };
        if let Some(f) = failed.iter().find(|f| holds_note(&f.payload)) {
            return Err(format!(
                "Dynamics refused the test lead: {} ({}); fix it, then replay with op=retry-failed",
                f.message, f.code
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the test lead was not in Dynamics within {} s: read the intake's runtime status (GET /flows/{}) for why",
                VALIDATE_WAIT.as_secs(),
                intake.id
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits for the test lead's notification to be sent; whether it was, and what happened.
async fn wait_notified(state: &AppState, lead: &str, deadline: Instant) -> (bool, String) {
    loop {
        let entry = state.store.message(lead).await.ok().flatten();
        if let Some(sent_at) = entry.as_ref().and_then(|e| e.sent_at.clone()) {
            return (true, format!("the notification was sent at {sent_at}"));
        }
        if Instant::now() >= deadline {
            let detail = match entry {
                Some(e) if !e.last_error.is_empty() => format!("the notification was not sent: {}", e.last_error),
                Some(_) if state.smtp_configured => "the notification is waiting to be sent".to_string(),
                Some(_) => "the notification waits: dynsync has no SMTP server configured ([smtp] in the config file)"
                    .to_string(),
                None => "no notification was made for the test lead".to_string(),
            };
            return (false, detail);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
