//! `governance`: a sandbox's labels and data-usage policies (`GET`, `PUT` with `If-Match`), and the check every
//! flow passes when it is saved or enabled: no field it exports may carry a label a policy denies for its
//! destination.

use super::{ApiError, ApiResult, AppState, Caller, if_match, parse_body};
use crate::access::Role;
use crate::governance::Governance;
use crate::ids::Etag;
use crate::pipeline::JobDefinition;
use crate::store::FlowRecord;
use axum::Json as AxumJson;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

/// Refuses a flow that would export a field a policy of its sandbox denies for its destination.
pub async fn governed<D: JobDefinition>(state: &AppState, caller: &Caller, definition: &D) -> ApiResult<()> {
    let (governance, _) = state.store.governance(&caller.sandbox).await?;
    let problems = governance.violations(&definition.exported_fields(), definition.target_connection_id());
    if problems.is_empty() {
        return Ok(());
    }
    let listed = problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; ");
    let detail = format!("flow '{}' would export what its sandbox's policies deny: {listed}", definition.name());
    Err(ApiError::new(StatusCode::BAD_REQUEST, "policy-violation", detail).with_report(json!({"problems": problems})))
}

/// `GET /governance`: the sandbox's labels and policies.
pub async fn get(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Response> {
    let (governance, etag) = state.store.governance(&caller.sandbox).await?;
    let mut body = serde_json::to_value(&governance).expect("governance serializes");
    body["etag"] = json!(etag);
    Ok(AxumJson(body).into_response())
}

/// `PUT /governance`: replaces the labels and policies. The answer names the flows that the new policies would
/// refuse: they keep running as they are, and cannot be saved or enabled again until they comply.
pub async fn put(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    caller.may(Role::Manage)?;
    let governance: Governance = parse_body(&body)?;
    let problems = governance.problems();
    if !problems.is_empty() {
        let detail = problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; ");
        return Err(ApiError::bad_request(format!("the governance was not saved: {detail}"))
            .with_report(json!({"problems": problems})));
    }
    let (_, current) = state.store.governance(&caller.sandbox).await?;
    if let Some(current) = &current {
        if_match(&headers, "the sandbox's governance", current)?;
    }
    let etag = Etag::new();
    state.store.put_governance(&caller.sandbox, &governance, current.as_ref(), &etag).await?;
    let mut refused = Vec::new();
    for record in state.store.flows(&caller.sandbox).await? {
        let problems = violations(&governance, &record);
        if !problems.is_empty() {
            refused.push(json!({"id": record.id, "name": record.name, "state": record.state, "problems": problems}));
        }
    }
    Ok(AxumJson(json!({"etag": etag, "flowsInViolation": refused})).into_response())
}

/// A stored flow's violations, whichever its job.
fn violations(governance: &Governance, record: &FlowRecord) -> Vec<crate::checks::Problem> {
    fn of<D: JobDefinition>(governance: &Governance, record: &FlowRecord) -> Vec<crate::checks::Problem> {
        match crate::pipeline::Flow::<D>::try_from(record) {
            Ok(flow) => {
                governance.violations(&flow.definition.exported_fields(), flow.definition.target_connection_id())
            }
            Err(_) => Vec::new(),
        }
    }
    match record.job.as_str() {
        crate::leads::job::JOB => of::<crate::leads::intake::IntakeDefinition>(governance, record),
        _ => of::<crate::activation::FlowDefinition>(governance, record),
    }
}
