//! Profiles in, as Adobe's streaming ingestion takes them: `POST /collection/{inletId}` with one XDM message,
//! `POST /collection/batch/{inletId}` with `{"messages": [...]}`. A flow's id is its inlet. The answer comes
//! once the messages are in the flow's durable log; a malformed message is refused with its index and reason
//! while the others of its batch are accepted.

use super::{ApiError, ApiResult, AppState, authenticate};
use crate::activation::ActivationFlow;
use crate::activation::profile::Profile;
use crate::ids::FlowId;
use axum::Json as AxumJson;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use std::sync::Arc;
use uuid::Uuid;

async fn inlet(state: &AppState, headers: &HeaderMap, inlet: &str) -> ApiResult<ActivationFlow> {
    authenticate(headers, state)?;
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("there is no inlet {inlet}: a flow's inlet id is the flow's id (GET /flows lists them)"),
        )
    };
    let id: FlowId = inlet.parse().map_err(|_| unknown())?;
    let record =
        state.store.flow_by_id(id).await?.filter(|r| r.job == crate::activation::job::JOB).ok_or_else(unknown)?;
    Ok(ActivationFlow::try_from(&record)?)
}

fn received_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `POST /collection/{inletId}`: one message.
pub async fn one(
    State(state): State<Arc<AppState>>,
    Path(inlet_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let flow = inlet(&state, &headers, &inlet_id).await?;
    let message: Json =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the message is not JSON: {e}")))?;
    Profile::validate(&message).map_err(|e| ApiError::bad_request(format!("the message is not a profile: {e}")))?;
    state.store.append_log(flow.id, &[message.to_string()]).await?;
    state.supervisor.wake(flow.id);
    Ok(AxumJson(json!({"inletId": inlet_id, "xactionId": Uuid::new_v4().to_string(), "receivedTimeMs": received_ms()}))
        .into_response())
}

/// `POST /collection/batch/{inletId}`: `{"messages": [...]}`. 200 when every message was accepted, 207 when
/// some were refused; `responses` has one item per message, in order.
pub async fn batch(
    State(state): State<Arc<AppState>>,
    Path(inlet_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let flow = inlet(&state, &headers, &inlet_id).await?;
    let envelope: Json =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the batch is not JSON: {e}")))?;
    let messages = envelope.get("messages").and_then(Json::as_array).ok_or_else(|| {
        ApiError::bad_request("a batch is {\"messages\": [ … ]}: put the XDM messages in a list under \"messages\"")
    })?;
    let mut accepted = Vec::with_capacity(messages.len());
    let mut responses = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        match Profile::validate(message) {
            Ok(_) => {
                accepted.push(message.to_string());
                responses.push(json!({"xactionId": Uuid::new_v4().to_string()}));
            }
            Err(e) => responses.push(json!({
                "index": index,
                "status": 400,
                "message": format!("messages[{index}] is not a profile: {e}"),
            })),
        }
    }
    if !accepted.is_empty() {
        state.store.append_log(flow.id, &accepted).await?;
        state.supervisor.wake(flow.id);
    }
    let status = if accepted.len() == messages.len() { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    let answer = json!({
        "inletId": inlet_id,
        "batchId": Uuid::new_v4().to_string(),
        "receivedTimeMs": received_ms(),
        "accepted": accepted.len(),
        "responses": responses,
    });
    Ok((status, AxumJson(answer)).into_response())
}
