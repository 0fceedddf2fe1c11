//! Email events flows in the API: made, read and changed as flows (`POST /flows` with the engagement events flow
//! spec), and their endpoint, `POST /events/{flowId}`, where the email service posts events. The endpoint is opened
//! by the flow's secret in the URL (`?code=…`, as the services send no header of ours; rotated with
//! `op=rotate-secret`) or by an API token; a SendGrid flow with a verification key also requires SendGrid's
//! signature, a Mailgun flow with a signing key Mailgun's (its key kept sealed in the store, never shown), and an
//! Amazon SES flow Amazon SNS's on every SNS message (see [`super::sns_certificates`]; a raw SES event, which SNS
//! does not sign, is opened by the code alone). Events are answered 200 only once they are in the flow's durable
//! log; the events of a body that do not read are listed in the answer and kept to be inspected
//! (`GET /flows/{id}/rejects`), without failing the others — a service would otherwise post the whole body again for
//! a day. A body that cannot be read at all is answered 400 and kept the same way. A wrong code or signature is
//! answered 401 and stores nothing; an Amazon SNS certificate that cannot be fetched, 502 (SNS posts again later).
//! The consent changes a flow decided are browsed at `GET /flows/{id}/consent`.

use super::leads::rotate_inlet_secret;
use super::timeline::Changed;
use super::{ApiError, ApiResult, AppState, Caller, authenticate, id_and_etag, parse_body};
use crate::checks::{Problem, ValidationReport};
use crate::engagement::definition::{EventsDefinition, EventsFlow, JOB};
use crate::engagement::formats::mailgun::{self, MailgunKey};
use crate::engagement::formats::{self, Provider, Received, sendgrid};
use crate::engagement::install::EngagementTables;
use crate::engagement::job::ReceivedEvent;
use crate::ids::{Etag, FlowId};
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
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::sync::Arc;

/// What an events URL's code starts with.
const SECRET_PREFIX: &str = "evs_";

pub fn events_path(id: FlowId) -> String {
    format!("/events/{id}")
}

/// Checks a flow against its destination: the target and its connection, the contact's opt-out columns and the
/// Email event table.
async fn check(state: &AppState, caller: &Caller, definition: &EventsDefinition) -> ApiResult<()> {
    super::governance::governed(state, caller, definition).await?;
    let report = |problems: Vec<Problem>| {
        let report = ValidationReport { flow: definition.name.clone(), table: "contact", problems };
        ApiError::new(StatusCode::BAD_REQUEST, "flow-validation", report.to_string()).with_problems(report.problems)
    };
    let shape = definition.check_shape();
    if !shape.is_empty() {
        return Err(report(shape));
    }
    let reach = Reach::resolve(&state.store, &state.clients, &caller.sandbox, definition.target_connection_id())
        .await
        .map_err(|e| report(vec![Problem::new("targetConnectionIds[0]", e.to_string())]))?;
    let unavailable = |table: &str, e: dataverse::Error| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "metadata-unavailable",
            format!(
                "the flow cannot be checked, because the {table} table cannot be read: {e}; test the connection and try again"
            ),
        )
    };
    let contact = reach.client.table("contact").await.map_err(|e| unavailable("contact", e))?;
    let mut problems = definition.check_contact(&contact);
    let tables = EngagementTables::new(reach.target.customization_prefix.clone());
    let name = tables.activity_table();
    reach.client.invalidate_table(&name);
    match reach.client.table(&name).await {
        Ok(table) => problems.extend(tables.check(&table)),
        Err(e) if e.kind() == dataverse::ErrorKind::NotFound => problems.push(Problem::new(
            "targetConnectionIds[0]",
            format!(
                "the environment has no Email event table ({name}) for the target's prefix {}: run `dynsync engagement \
                 install` with the connection's environment and --prefix {}",
                reach.target.customization_prefix.as_str(),
                reach.target.customization_prefix.as_str()
            ),
        )),
        Err(e) => return Err(unavailable(&name, e)),
    }
    if problems.is_empty() { Ok(()) } else { Err(report(problems)) }
}

pub fn events_flow_json(flow: &EventsFlow) -> Json {
    let mut body = super::flow_json(flow);
    body["eventsUrl"] = json!(events_path(flow.id));
    body
}

/// `POST /flows` for an email events flow: 201 with the events URL, its code shown this once.
pub async fn create(state: &AppState, caller: Caller, body: &[u8]) -> ApiResult<Response> {
    let definition = parse_body::<EventsDefinition>(body)?.normalized();
    check(state, &caller, &definition).await?;
    let flow = EventsFlow::new(caller.sandbox.clone(), definition);
    state.store.insert_flow(&FlowRecord::from(&flow)).await?;
    if let Some(key) = flow.definition.mailgun_key() {
        state.store.set_signing_key(flow.id, key.expose()).await?;
    }
    let secret = crate::secrets::random_token(SECRET_PREFIX);
    state.store.rotate_inlet_secret(flow.id, &secret, 0).await?;
    state.supervisor.flows_changed();
    caller.made(state, Changed::from(&flow), ChangeAction::Created).await;
    let answer = json!({
        "id": flow.id,
        "etag": flow.etag.0,
        "eventsUrl": format!("{}?code={secret}", events_path(flow.id)),
        "detail": format!(
            "give {} this URL, after dynsync's address; its code is shown only now (rotate it with op=rotate-secret)",
            flow.definition.provider.name()
        ),
    });
    Ok((StatusCode::CREATED, AxumJson(answer)).into_response())
}

/// `PUT /flows/{id}` of an email events flow: the definition replaced, checked again; the state and the code stay.
pub async fn replace(state: &AppState, caller: Caller, current: EventsFlow, body: &[u8]) -> ApiResult<Response> {
    let updated = replace_events(state, &caller, current, parse_body::<EventsDefinition>(body)?).await?;
    Ok(id_and_etag(StatusCode::OK, updated.id, &updated.etag))
}

/// Replaces an email events flow's definition, checked again; its state and code stay, and so does its Mailgun
/// key when the definition gives none.
pub async fn replace_events(
    state: &AppState,
    caller: &Caller,
    current: EventsFlow,
    definition: EventsDefinition,
) -> ApiResult<EventsFlow> {
    caller.may(crate::access::Role::Manage)?;
    let definition = definition.normalized();
    check(state, caller, &definition).await?;
    let updated = EventsFlow { definition, etag: Etag::new(), updated_at: Utc::now(), ..current.clone() };
    state.store.update_flow(&FlowRecord::from(&updated), &current.etag).await?;
    // A key left out keeps the one stored: it is never shown, so it cannot be sent back.
    if let Some(key) = updated.definition.mailgun_key() {
        state.store.set_signing_key(updated.id, key.expose()).await?;
    }
    state.supervisor.flows_changed();
    caller.made(state, Changed::from(&updated), ChangeAction::Changed).await;
    Ok(updated)
}

/// `GET /flows/{id}` of an email events flow: with its backlog and how many bodies it refused.
pub async fn get(state: &AppState, flow: &EventsFlow) -> ApiResult<Json> {
    let backlog = InletLog::backlog(&state.store, flow.id).await?;
    let rejected = state.store.inlet_reject_count(flow.id).await?;
    let mut body = events_flow_json(flow);
    body["backlog"] = json!({
        "events": backlog.records,
        "oldestReceivedAt": backlog.oldest.map(|t| t.to_rfc3339()),
    });
    body["rejected"] = json!(rejected);
    if state.store.signing_key(flow.id).await?.is_some() {
        body["signingKey"] = json!("stored, encrypted; never shown");
    }
    Ok(body)
}

/// `POST /flows/{id}/action?op=rotate-secret` of an email events flow.
pub async fn rotate_secret(state: &AppState, flow: &EventsFlow) -> ApiResult<Response> {
    rotate_inlet_secret(state, flow.id, SECRET_PREFIX, "eventsUrl", &events_path(flow.id)).await
}

#[derive(Deserialize)]
pub struct EventsQuery {
    code: Option<String>,
}

/// `POST /events/{flowId}`: events, as the flow's email service posts them.
pub async fn post_events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let unauthorized = |detail: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
    let wrong_code = || {
        unauthorized(
            "this events URL's code is not the flow's: use the URL dynsync gave when the flow was made or its code last rotated"
                .into(),
        )
    };
    let flow: FlowId = id.parse().map_err(|_| wrong_code())?;
    let grant = match &query.code {
        Some(code) if state.store.inlet_secret_opens(flow, code).await? => None,
        Some(_) => return Err(wrong_code()),
        None => Some(authenticate(&headers, &state).await?),
    };
    let record = state.store.flow_by_id(flow).await?.filter(|r| r.job == JOB).ok_or_else(wrong_code)?;
    if let Some(grant) = grant {
        super::collection::may_send(&grant, &record.sandbox, wrong_code)?;
    }
    let flow = EventsFlow::try_from(&record)?;
    let provider = flow.definition.provider;
    if let Some(key) = flow.definition.sendgrid_key() {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let signed = match (header(sendgrid::SIGNATURE_HEADER), header(sendgrid::TIMESTAMP_HEADER)) {
            (Some(signature), Some(timestamp)) => sendgrid::verify(&key, signature, timestamp, &body),
            (None, _) => Err(formats::SignatureError::Missing { provider, what: "signature header" }),
            (_, None) => Err(formats::SignatureError::Missing { provider, what: "timestamp header" }),
        };
        signed.map_err(|e| unauthorized(e.to_string()))?;
    }
    if provider == Provider::Mailgun
        && let Some(key) = state.store.signing_key(flow.id).await?
    {
        let key = MailgunKey::parse(key.expose()).map_err(|e| unauthorized(e.to_string()))?;
        mailgun::verify_body(&key, &body, Utc::now(), mailgun::REPLAY_WINDOW)
            .map_err(|e| unauthorized(e.to_string()))?;
    }
    if provider == Provider::Ses {
        super::sns_certificates::check_ses(&state.sns_certificates, &flow, &body).await?;
    }
    let received_at = Utc::now();
    let parsed = match formats::parse(provider, &body) {
        Ok(Received::Events(parsed)) => parsed,
        Ok(Received::SubscriptionConfirmation(confirmation)) => {
            tracing::info!(flow = %flow.id, url = %confirmation.subscribe_url, "Amazon SNS asks to confirm the subscription");
            return Ok(AxumJson(json!({
                "status": "confirmation-needed",
                "detail": format!(
                    "Amazon SNS asks to confirm that this flow takes topic {}'s messages: open its SubscribeURL ({}) once, or confirm the subscription in the SNS console",
                    confirmation.topic_arn, confirmation.subscribe_url
                ),
            }))
            .into_response());
        }
        Ok(Received::UnsubscribeConfirmation(confirmation)) => {
            return Ok(AxumJson(json!({
                "status": "unsubscribed",
                "detail": format!("Amazon SNS says topic {} no longer sends to this flow", confirmation.topic_arn),
            }))
            .into_response());
        }
        Err(e) => {
            let reject = keep_reject(&state, flow.id, &body, e.to_string()).await?;
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid-events",
                format!(
                    "no event was taken: {e}. The body is kept as rejected {reject} (GET /flows/{}/rejects)",
                    flow.id
                ),
            ));
        }
    };
    let refused = parsed.refused();
    let entries: Vec<String> = parsed
        .events
        .into_iter()
        .map(|event| serde_json::to_string(&ReceivedEvent { received_at, event }).expect("an event serializes"))
        .collect();
    if !entries.is_empty() {
        state.store.append_log(flow.id, &entries).await?;
        state.supervisor.wake(flow.id);
    }
    let mut answer = json!({"status": "accepted", "accepted": entries.len(), "refused": refused});
    if !parsed.problems.is_empty() {
        let listed: Vec<String> = parsed.problems.iter().map(ToString::to_string).collect();
        let reject = keep_reject(&state, flow.id, &body, listed.join("\n")).await?;
        answer["problems"] = json!(listed);
        answer["rejectId"] = json!(reject);
        answer["detail"] = json!(format!(
            "the events that read are taken; the others are listed here and kept with the body (GET /flows/{}/rejects)",
            flow.id
        ));
    }
    Ok((StatusCode::OK, AxumJson(answer)).into_response())
}

async fn keep_reject(state: &AppState, flow: FlowId, body: &[u8], problems: String) -> ApiResult<uuid::Uuid> {
    let reject = InletReject {
        id: uuid::Uuid::new_v4(),
        received_at: Utc::now(),
        body: crate::text::clip(&String::from_utf8_lossy(body), 64 * 1024).into_owned(),
        problems,
    };
    state.store.keep_inlet_reject(flow, &reject).await?;
    Ok(reject.id)
}

/// Consent changes shown at a time.
const CONSENT_SHOWN: i64 = 500;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsentQuery {
    contact_id: Option<uuid::Uuid>,
}

/// `GET /flows/{id}/consent[?contactId=…]`: the consent changes the flow decided, newest first — each with its
/// side, source, reason and time, and whether it was applied or a newer change already stood.
pub async fn consent(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<ConsentQuery>,
) -> ApiResult<Response> {
    let not_found = || ApiError::not_found("email events flow", &id, &caller.sandbox);
    let flow: FlowId = id.parse().map_err(|_| not_found())?;
    let record = state.store.flow(&caller.sandbox, flow).await?.filter(|r| r.job == JOB).ok_or_else(not_found)?;
    let changes = state.store.consent_changes(record.id, query.contact_id, CONSENT_SHOWN).await?;
    Ok(super::items(changes.iter().map(|c| serde_json::to_value(c).expect("a consent change serializes")).collect()))
}
