//! Writing contact updates to Dynamics: `UpdateMultiple` of up to a thousand contacts a request, retried
//! while Dynamics is throttling or unavailable, and split when one bad contact rolls its request back, so
//! that it never fails its neighbours. Contacts are updated, never created.

use super::patch::{ContactId, ContactPatch};
use dataverse::{Client, Error, ErrorKind};
use reqwest::Method;
use serde_json::{Map, Value as Json, json};
use std::time::Duration;

/// Contacts per `UpdateMultiple` request.
pub const CHUNK: usize = 1000;

/// Why one contact's update failed for good: Dynamics' code and message.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: String,
    pub message: String,
}

impl Refusal {
    fn from_error(error: &Error) -> Refusal {
        match error {
            Error::Api(api) => Refusal { code: api.code.clone(), message: api.message.clone() },
            other => Refusal { code: "error".into(), message: other.to_string() },
        }
    }
}

/// Whether waiting and sending again can make a request succeed.
pub fn is_retryable(error: &Error) -> bool {
    match error {
        Error::Auth(auth) => auth.is_transient(),
        other => matches!(other.kind(), ErrorKind::Throttled(_) | ErrorKind::Transient),
    }
}

fn retry_after(error: &Error) -> Option<Duration> {
    match error {
        Error::Api(api) => api.retry_after,
        _ => None,
    }
}

/// Writes the updates; the result for each contact, in order. Retries what can be retried until it is
/// written, pausing as long as Dynamics asks; only refusals that retrying cannot fix come back as errors.
pub async fn write(client: &Client, patches: &[ContactPatch]) -> Vec<(ContactId, Result<(), Refusal>)> {
    let mut results = Vec::with_capacity(patches.len());
    for chunk in patches.chunks(CHUNK) {
        write_isolating(client, chunk, &mut results).await;
    }
    results
}

/// One request for the chunk; if Dynamics refuses it for one of its contacts, each half is sent again,
/// down to the contact at fault.
async fn write_isolating(client: &Client, chunk: &[ContactPatch], results: &mut Vec<(ContactId, Result<(), Refusal>)>) {
    let mut pending = vec![chunk];
    while let Some(part) = pending.pop() {
        match send_until_answered(client, part).await {
            Ok(()) => results.extend(part.iter().map(|p| (p.contact, Ok(())))),
            Err(error) if part.len() == 1 => results.push((part[0].contact, Err(Refusal::from_error(&error)))),
            Err(_) => {
                let (left, right) = part.split_at(part.len() / 2);
                // Popped last-in first-out: the left half first keeps results in order.
                pending.push(right);
                pending.push(left);
            }
        }
    }
}

async fn send_until_answered(client: &Client, part: &[ContactPatch]) -> Result<(), Error> {
    let targets: Vec<Json> = part
        .iter()
        .map(|p| {
            let mut target = Map::with_capacity(p.columns.len() + 2);
            target.insert("@odata.type".into(), json!("Microsoft.Dynamics.CRM.contact"));
            target.insert("contactid".into(), json!(p.contact.0));
            target.extend(p.columns.iter().map(|(k, v)| (k.clone(), v.clone())));
            Json::Object(target)
        })
        .collect();
    let body = json!({ "Targets": targets });
    let mut backoff = Duration::from_millis(200);
    loop {
        match client.send(Method::POST, "contacts/Microsoft.Dynamics.CRM.UpdateMultiple", Some(&body)).await {
            Ok(_) => return Ok(()),
            Err(error) if is_retryable(&error) => {
                let wait = retry_after(&error).unwrap_or(backoff);
                tracing::debug!(error = %error, wait_ms = wait.as_millis() as u64, "Dynamics asked to wait; retrying");
                tokio::time::sleep(wait + jitter(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(error) => return Err(error),
        }
    }
}

fn jitter(scale: Duration) -> Duration {
    scale.mul_f64(rand::random::<f64>() * 0.25)
}
