//! Writing to a Dataverse table with the client's `write_each`: bulk messages a thousand records a request,
//! through the client's executor (which paces requests under Dynamics' limits and retries what can be
//! retried), with a record that Dynamics refuses set apart so that it never fails its neighbours. Whatever is
//! still failing for a reason that waiting can fix is sent again, as long as it takes: no write is dropped for
//! having been retried. A sign-in that is refused is no reason to fail records: the batch pauses until the
//! connection's credentials work again.

use super::{Sink, Taken};
use dataverse::{Backoff, BulkOperation, BulkOptions, Client, Error, ErrorKind, Record, Table};
use serde_json::{Map, Value as Json};
use std::fmt::Display;
use std::time::Duration;

/// Why one record's write failed for good: Dynamics' code and message.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: String,
    pub message: String,
}

impl Refusal {
    pub fn from_error(error: &Error) -> Refusal {
        match error {
            Error::Api(api) => Refusal { code: api.code.clone(), message: api.message.clone() },
            other => Refusal { code: "error".into(), message: other.to_string() },
        }
    }
}

/// The destination refused to let dynsync in: nothing of the batch was decided.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("Dynamics refused the sign-in: {reason}; fix the connection's credentials (PATCH /connections/{{id}})")]
pub struct Paused {
    pub reason: String,
}

/// Whether waiting and sending again can make a request succeed.
pub fn is_retryable(error: &Error) -> bool {
    match error {
        Error::Auth(auth) => auth.is_transient(),
        other => matches!(other.kind(), ErrorKind::Throttled(_) | ErrorKind::Transient),
    }
}

/// A table of a Dataverse environment, written with one bulk operation, records keyed by their primary id.
pub struct DataverseSink {
    pub client: Client,
    pub table: Table,
    pub operation: BulkOperation,
}

impl DataverseSink {
    fn record<K: Display>(&self, key: &K, columns: &Map<String, Json>) -> Record {
        let mut record = Record::with_capacity(columns.len() + 1);
        record.insert(self.table.primary_id.clone(), Json::String(key.to_string()));
        record.extend(columns.iter().map(|(k, v)| (k.clone(), v.clone())));
        record
    }
}

impl<K: Display + Send + Sync + 'static> Sink<K, Map<String, Json>> for DataverseSink {
    async fn write(&self, writes: &[(K, Map<String, Json>)]) -> Result<Vec<Result<Taken, Refusal>>, Paused> {
        let records: Vec<Record> = writes.iter().map(|(key, columns)| self.record(key, columns)).collect();
        let results = write_all(&self.client, self.operation, &self.table, &records, BulkOptions::default()).await?;
        Ok(results.into_iter().map(|r| r.map(|()| Taken::Written)).collect())
    }
}

/// Writes records to a table with one bulk operation, through the client's `write_each`: says, in order, whether
/// each was taken or why Dynamics refused it for good. What waiting can fix is sent again, as long as it takes.
pub async fn write_all(
    client: &Client,
    operation: BulkOperation,
    table: &Table,
    records: &[Record],
    options: BulkOptions,
) -> Result<Vec<Result<(), Refusal>>, Paused> {
    let mut results: Vec<Option<Result<(), Refusal>>> = vec![None; records.len()];
    let mut pending: Vec<usize> = (0..records.len()).collect();
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    while !pending.is_empty() {
        let report = if pending.len() == records.len() {
            client.write_each(operation, table, records, options).await
        } else {
            let again: Vec<Record> = pending.iter().map(|&i| records[i].clone()).collect();
            client.write_each(operation, table, &again, options).await
        };
        let mut again = Vec::new();
        for (&i, outcome) in pending.iter().zip(report.outcomes) {
            match outcome {
                Ok(_) => results[i] = Some(Ok(())),
                Err(error) if error.is_sign_in_refused() => return Err(Paused { reason: error.to_string() }),
                Err(error) if is_retryable(&error) => again.push(i),
                Err(error) => results[i] = Some(Err(Refusal::from_error(&error))),
            }
        }
        if !again.is_empty() {
            let wait = backoff.next();
            tracing::debug!(
                table = %table.logical_name,
                records = again.len(),
                wait_ms = wait.as_millis() as u64,
                "Dynamics is not taking writes; retrying"
            );
            tokio::time::sleep(wait).await;
        }
        pending = again;
    }
    Ok(results.into_iter().map(|r| r.expect("every write has a result")).collect())
}
