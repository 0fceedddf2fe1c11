//! Profiles in, as Adobe's streaming ingestion takes them: `POST /collection/{inletId}` with one XDM message,
//! `POST /collection/batch/{inletId}` with `{"messages": [...]}`. A flow's id is its inlet. The answer comes
//! once the messages are in the flow's durable log; a malformed message is refused with its index and reason
//! while the others of its batch are accepted.

use super::{ApiError, ApiResult, AppState, authenticate};
use crate::access::{Grant, Role};
use crate::activation::ActivationFlow;
use crate::activation::profile::{MalformedProfile, Profile};
use crate::ids::{FlowId, Sandbox};
use crate::text::clip;
use axum::Json as AxumJson;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeSeed;
use serde_json::json;
use serde_json::value::RawValue;
use std::sync::Arc;
use uuid::Uuid;

async fn inlet(state: &AppState, headers: &HeaderMap, inlet: &str) -> ApiResult<ActivationFlow> {
    let grant = authenticate(headers, state).await?;
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
    let flow = ActivationFlow::try_from(&record)?;
    may_send(&grant, &flow.sandbox, unknown)?;
    Ok(flow)
}

/// Whether a token may send data to an inlet of `sandbox`: when the sandbox is not the token's, the error `unknown`
/// makes — the inlet as unknown to it as the sandbox's other resources are; a 403 when it lacks the activate role.
pub fn may_send(grant: &Grant, sandbox: &Sandbox, unknown: impl FnOnce() -> ApiError) -> ApiResult<()> {
    grant.enter(sandbox).map_err(|_| unknown())?;
    grant.may(Role::Activate, sandbox).map_err(ApiError::from)
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
    let message = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request(format!("the message is not JSON: it is not UTF-8 ({e})")))?;
    Profile::check(message).map_err(|e| match e {
        MalformedProfile::NotJson(_) => ApiError::bad_request(e.to_string()),
        e => ApiError::bad_request(format!("the message is not a profile: {e}")),
    })?;
    state.store.append_log(flow.id, &[message.trim()]).await?;
    state.supervisor.wake(flow.id);
    Ok(AxumJson(json!({"inletId": inlet_id, "xactionId": Uuid::new_v4().to_string(), "receivedTimeMs": received_ms()}))
        .into_response())
}

/// Messages one batch may hold. Adobe's streaming ingestion takes batches of a few megabytes; five thousand
/// profiles is about that, and bounds both the work of one request and the size of its answer.
pub const MAX_BATCH_MESSAGES: usize = 5_000;

/// How much of one refused message's reason the answer repeats: enough to fix it, never the message itself.
const MAX_REASON_CHARS: usize = 300;

/// The answer to a batch: one response per message, in order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchAnswer {
    inlet_id: String,
    batch_id: Uuid,
    received_time_ms: i64,
    accepted: usize,
    responses: Vec<MessageAnswer>,
}

/// What became of one message of a batch.
#[derive(Serialize)]
#[serde(untagged, rename_all = "camelCase")]
enum MessageAnswer {
    Accepted {
        #[serde(rename = "xactionId")]
        xaction_id: Uuid,
    },
    Refused {
        index: usize,
        status: u16,
        message: String,
    },
}

/// The messages of a batch, checked one at a time as the body is read — each message's text is checked where
/// it lies in the body, and kept as it came — so that a batch over [`MAX_BATCH_MESSAGES`] is refused before it
/// is read whole.
#[derive(Default)]
struct Messages<'b> {
    accepted: Vec<&'b str>,
    responses: Vec<MessageAnswer>,
    /// Set when the batch held more messages than a batch may.
    too_many: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for &mut Messages<'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for &mut Messages<'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of XDM messages")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(message) = seq.next_element::<&'de RawValue>()? {
            let index = self.responses.len();
            if index == MAX_BATCH_MESSAGES {
                self.too_many = true;
                return Err(serde::de::Error::custom("too many messages"));
            }
            match Profile::check(message.get()) {
                Ok(()) => {
                    self.accepted.push(message.get());
                    self.responses.push(MessageAnswer::Accepted { xaction_id: Uuid::new_v4() });
                }
                Err(e) => self.responses.push(MessageAnswer::Refused {
                    index,
                    status: 400,
                    message: clip(&format!("messages[{index}] is not a profile: {e}"), MAX_REASON_CHARS).into_owned(),
                }),
            }
        }
        Ok(())
    }
}

/// The envelope `{"messages": [...]}`; other members are ignored, as Adobe's are.
struct Envelope<'a, 'de>(&'a mut Messages<'de>);

impl<'de> serde::de::DeserializeSeed<'de> for Envelope<'_, 'de> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Envelope<'_, 'de> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object with a \"messages\" list")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "messages" && !found {
                map.next_value_seed(&mut *self.0)?;
                found = true;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// `POST /collection/batch/{inletId}`: `{"messages": [...]}`, at most [`MAX_BATCH_MESSAGES`]. 200 when every
/// message was accepted, 207 when some were refused; `responses` has one item per message, in order.
pub async fn batch(
    State(state): State<Arc<AppState>>,
    Path(inlet_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let flow = inlet(&state, &headers, &inlet_id).await?;
    let mut messages = Messages::default();
    let mut reader = serde_json::Deserializer::from_slice(&body);
    let found = Envelope(&mut messages).deserialize(&mut reader).and_then(|found| reader.end().map(|()| found));
    match found {
        Err(_) if messages.too_many => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-many-messages",
                format!(
                    "a batch holds at most {MAX_BATCH_MESSAGES} messages, and this one has more: split it into \
                     batches of {MAX_BATCH_MESSAGES} or fewer; nothing of it was accepted"
                ),
            ));
        }
        Err(e) => return Err(ApiError::bad_request(format!("the batch is not JSON: {e}; nothing of it was accepted"))),
        Ok(false) => {
            return Err(ApiError::bad_request(
                "a batch is {\"messages\": [ … ]}: put the XDM messages in a list under \"messages\"",
            ));
        }
        Ok(true) => {}
    }
    let Messages { accepted, responses, .. } = messages;
    if !accepted.is_empty() {
        state.store.append_log(flow.id, &accepted).await?;
        state.supervisor.wake(flow.id);
    }
    let status = if accepted.len() == responses.len() { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    let answer = BatchAnswer {
        inlet_id,
        batch_id: Uuid::new_v4(),
        received_time_ms: received_ms(),
        accepted: accepted.len(),
        responses,
    };
    Ok((status, AxumJson(answer)).into_response())
}
