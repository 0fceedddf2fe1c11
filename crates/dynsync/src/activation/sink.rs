//! Writing contact updates to Dynamics with the client's `write_each`: `UpdateMultiple` a thousand contacts
//! a request, through the client's executor (which paces requests under Dynamics' limits and retries what can
//! be retried), with a contact that Dynamics refuses set apart so that it never fails its neighbours.
//! Contacts are updated, never created. Whatever is still failing for a reason that waiting can fix is sent
//! again, as long as it takes: no update is dropped for having been retried.

use super::patch::{ContactId, ContactPatch};
use dataverse::{BulkOperation, BulkOptions, Client, Error, ErrorKind, Record, Table};
use serde_json::json;
use std::time::Duration;

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

fn record(patch: &ContactPatch) -> Record {
    let mut record = Record::with_capacity(patch.columns.len() + 1);
    record.insert("contactid".into(), json!(patch.contact.0));
    record.extend(patch.columns.iter().map(|(k, v)| (k.clone(), v.clone())));
    record
}

/// Writes the updates; the result for each contact, in order. Only refusals that retrying cannot fix come
/// back as errors.
pub async fn write(client: &Client, patches: &[ContactPatch]) -> Vec<(ContactId, Result<(), Refusal>)> {
    let mut results: Vec<Option<Result<(), Refusal>>> = vec![None; patches.len()];
    let mut pending: Vec<usize> = (0..patches.len()).collect();
    let mut pause = Duration::from_millis(500);
    while !pending.is_empty() {
        let records: Vec<Record> = pending.iter().map(|&i| record(&patches[i])).collect();
        let report =
            client.write_each(BulkOperation::Update, &Table::contact(), &records, BulkOptions::default()).await;
        let mut again = Vec::new();
        for (&i, outcome) in pending.iter().zip(report.outcomes) {
            match outcome {
                Ok(_) => results[i] = Some(Ok(())),
                Err(error) if is_retryable(&error) => again.push(i),
                Err(error) => results[i] = Some(Err(Refusal::from_error(&error))),
            }
        }
        if !again.is_empty() {
            tracing::debug!(
                contacts = again.len(),
                wait_ms = pause.as_millis() as u64,
                "Dynamics is not taking writes; retrying"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(30));
        }
        pending = again;
    }
    patches.iter().zip(results).map(|(p, r)| (p.contact, r.expect("every contact has a result"))).collect()
}
