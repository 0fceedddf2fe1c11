//! `CreateMultiple`, `UpdateMultiple` and `UpsertMultiple`, in chunks sent side by side — and a write that
//! isolates bad records.
//!
//! On a standard table one bad target rolls its whole request back. [`Client::write_each`] therefore
//! answers for every record: when a chunk fails for a record-level reason, the records to blame are set
//! aside — the one the error names (`… (Targets[3])`), every record carrying an unknown column, or, when
//! the error names nobody, one half at a time (bisection) — and the rest are written again. One bad
//! record never fails its neighbours.

use crate::client::{Client, Request};
use crate::entity::{Record, RecordId, Table};
use crate::error::{ApiError, Error, ErrorKind};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt, stream};
use reqwest::Method;
use std::sync::Arc;

/// Which bulk message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkOperation {
    Create,
    Update,
    Upsert,
}

impl BulkOperation {
    fn message(self) -> &'static str {
        match self {
            BulkOperation::Create => "CreateMultiple",
            BulkOperation::Update => "UpdateMultiple",
            BulkOperation::Upsert => "UpsertMultiple",
        }
    }
}

/// How [`Client::write_each`] finds the records to blame in a chunk that failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Set aside the target the error names (`… (Targets[3])`) or every record with the unknown column it
    /// names; bisect when it names nothing.
    #[default]
    Named,
    /// Always bisect: for errors whose target index cannot be trusted.
    Bisect,
}

#[derive(Debug, Clone, Copy)]
pub struct BulkOptions {
    /// Records per request. Microsoft suggests starting at 1,000 for small records without plug-ins.
    pub chunk_size: usize,
    /// Chunks prepared and waiting at once. The executor decides how many are actually in flight; this
    /// bounds the memory the waiting ones hold.
    pub chunks_in_flight: usize,
    pub isolation: Isolation,
}

impl Default for BulkOptions {
    fn default() -> Self {
        BulkOptions { chunk_size: 1000, chunks_in_flight: 8, isolation: Isolation::Named }
    }
}

/// What happened to one record of a [`Client::write_each`].
pub type RecordOutcome = Result<Option<RecordId>, Arc<Error>>;

/// Every record's outcome, in the order the records were given.
#[derive(Debug)]
pub struct BulkReport {
    pub outcomes: Vec<RecordOutcome>,
}

impl BulkReport {
    pub fn written(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_ok()).count()
    }

    /// The records refused, by their index in the input, with the reason.
    pub fn rejected(&self) -> impl Iterator<Item = (usize, &Error)> {
        self.outcomes.iter().enumerate().filter_map(|(i, o)| o.as_ref().err().map(|e| (i, e.as_ref())))
    }
}

/// Whether an error is about the records sent (so another split may succeed), rather than about the
/// request as a whole (auth, the service being down).
fn blames_records(error: &Error) -> bool {
    match error {
        Error::Api(api) => match &api.kind {
            ErrorKind::Validation
            | ErrorKind::UnknownProperty(_)
            | ErrorKind::Duplicate
            | ErrorKind::NotFound
            | ErrorKind::PreconditionFailed => true,
            ErrorKind::Other => (400..500).contains(&api.status),
            _ => false,
        },
        _ => false,
    }
}

/// The target index an error names (` (Targets[3])`), and the message without it.
fn named_target(api: &ApiError) -> Option<(usize, String)> {
    let start = api.message.rfind(" (Targets[")?;
    let rest = &api.message[start + " (Targets[".len()..];
    let index = rest.strip_suffix("])")?.parse().ok()?;
    Some((index, api.message[..start].to_string()))
}

/// The body of a bulk message: `{"Targets": [...]}`, written from the records as they are.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct BulkBody<'a> {
    targets: Vec<Target<'a>>,
}

/// One target of a bulk message: the record's columns and its `@odata.type` (the table's, whatever the record says).
struct Target<'a> {
    record: &'a Record,
    odata_type: &'a str,
}

impl serde::Serialize for Target<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        const ODATA_TYPE: &str = "@odata.type";
        let columns = self.record.iter().filter(|(column, _)| *column != ODATA_TYPE);
        let mut map = serializer.serialize_map(None)?;
        for (column, value) in columns {
            map.serialize_entry(column, value)?;
        }
        map.serialize_entry(ODATA_TYPE, self.odata_type)?;
        map.end()
    }
}

impl Client {
    /// One bulk request of `records` (one chunk). Returns the ids of created records.
    async fn bulk_request(
        &self,
        op: BulkOperation,
        table: &Table,
        records: &[&Record],
    ) -> Result<Vec<RecordId>, Error> {
        let odata_type = table.odata_type();
        let body =
            BulkBody { targets: records.iter().map(|record| Target { record, odata_type: &odata_type }).collect() };
        // A create is safe to send twice only when every target carries its own id.
        let idempotent = op != BulkOperation::Create
            || records.iter().all(|r| r.get(&table.primary_id).is_some_and(|v| !v.is_null()));
        let path = format!("{}/Microsoft.Dynamics.CRM.{}", table.entity_set, op.message());
        let request = Request::new(Method::POST, path).json(&body).idempotent(idempotent);
        let reply = self.execute(&request).await?;
        if op != BulkOperation::Create {
            return Ok(Vec::new());
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Created {
            ids: Vec<RecordId>,
        }
        Ok(reply.read_json::<Created>()?.ids)
    }

    async fn bulk_chunks(
        &self,
        op: BulkOperation,
        table: &Table,
        records: &[Record],
        options: BulkOptions,
    ) -> Result<Vec<RecordId>, Error> {
        // Owned ranges: a closure over borrowed chunks makes the future impossible to spawn on a runtime.
        let size = options.chunk_size.max(1);
        let ranges: Vec<_> =
            (0..records.len()).step_by(size).map(|start| start..(start + size).min(records.len())).collect();
        let chunks = ranges.into_iter().map(|range| async move {
            let refs: Vec<&Record> = records[range].iter().collect();
            self.bulk_request(op, table, &refs).await
        });
        let results: Vec<_> = stream::iter(chunks).buffered(options.chunks_in_flight.max(1)).collect().await;
        let mut ids = Vec::new();
        for result in results {
            ids.extend(result?);
        }
        Ok(ids)
    }

    /// Creates the records in chunks of `CreateMultiple`; returns their ids in order. Each chunk is all or
    /// nothing; the first failure is returned (see [`Client::write_each`] to isolate bad records).
    pub async fn create_multiple(
        &self,
        table: &Table,
        records: &[Record],
        options: BulkOptions,
    ) -> Result<Vec<RecordId>, Error> {
        self.bulk_chunks(BulkOperation::Create, table, records, options).await
    }

    /// Updates the records (each carrying its primary key) in chunks of `UpdateMultiple`.
    pub async fn update_multiple(&self, table: &Table, records: &[Record], options: BulkOptions) -> Result<(), Error> {
        self.bulk_chunks(BulkOperation::Update, table, records, options).await.map(drop)
    }

    /// Creates or updates the records (keyed by primary key or `@odata.id`) in chunks of `UpsertMultiple`.
    pub async fn upsert_multiple(&self, table: &Table, records: &[Record], options: BulkOptions) -> Result<(), Error> {
        self.bulk_chunks(BulkOperation::Upsert, table, records, options).await.map(drop)
    }

    /// Writes every record it can and says, for each, whether it was written (with its id when known) or why
    /// not. Bad records are isolated so that they never fail the good ones.
    pub async fn write_each(
        &self,
        op: BulkOperation,
        table: &Table,
        records: &[Record],
        options: BulkOptions,
    ) -> BulkReport {
        let mut outcomes: Vec<Option<RecordOutcome>> = (0..records.len()).map(|_| None).collect();
        let indices: Vec<usize> = (0..records.len()).collect();
        // Owned chunks: a closure over borrowed slices makes the future impossible to spawn on a runtime.
        let chunks: Vec<Vec<usize>> = indices.chunks(options.chunk_size.max(1)).map(<[usize]>::to_vec).collect();
        let chunks = chunks.into_iter().map(|chunk| self.isolate(op, table, records, chunk, options.isolation));
        let mut results = stream::iter(chunks).buffer_unordered(options.chunks_in_flight.max(1));
        while let Some(chunk) = results.next().await {
            for (index, outcome) in chunk {
                outcomes[index] = Some(outcome);
            }
        }
        BulkReport { outcomes: outcomes.into_iter().map(|o| o.expect("every record has an outcome")).collect() }
    }

    /// As [`Client::write_each`], for records that arrive as a stream: at most `chunks_in_flight` chunks are
    /// held at once, so memory stays bounded however many records flow through. Yields each record's index
    /// in the stream with its outcome, chunk by chunk as they finish.
    pub fn write_stream<S>(
        &self,
        op: BulkOperation,
        table: &Table,
        records: S,
        options: BulkOptions,
    ) -> impl Stream<Item = (usize, RecordOutcome)> + Send + 'static
    where
        S: Stream<Item = Record> + Send + 'static,
    {
        let (client, table) = (self.clone(), table.clone());
        let chunk_size = options.chunk_size.max(1);
        records
            .chunks(chunk_size)
            .enumerate()
            .map(move |(n, chunk)| {
                let (client, table) = (client.clone(), table.clone());
                async move {
                    let indices = (0..chunk.len()).collect();
                    let outcomes = client.isolate(op, &table, &chunk, indices, options.isolation).await;
                    stream::iter(outcomes.into_iter().map(move |(i, outcome)| (n * chunk_size + i, outcome)))
                }
            })
            .buffer_unordered(options.chunks_in_flight.max(1))
            .flatten()
    }

    /// Writes `indices` of `records`, splitting away the records to blame until every one has an outcome.
    fn isolate<'a>(
        &'a self,
        op: BulkOperation,
        table: &'a Table,
        records: &'a [Record],
        indices: Vec<usize>,
        isolation: Isolation,
    ) -> BoxFuture<'a, Vec<(usize, RecordOutcome)>> {
        async move {
            if indices.is_empty() {
                return Vec::new();
            }
            let refs: Vec<&Record> = indices.iter().map(|i| &records[*i]).collect();
            let error = match self.bulk_request(op, table, &refs).await {
                Ok(ids) => {
                    return indices
                        .iter()
                        .enumerate()
                        .map(|(n, &i)| {
                            let id = ids.get(n).copied().or_else(|| {
                                records[i].get(&table.primary_id).and_then(|v| serde_json::from_value(v.clone()).ok())
                            });
                            (i, Ok(id))
                        })
                        .collect();
                }
                Err(error) => error,
            };
            if indices.len() == 1 || !blames_records(&error) {
                // Alone in its request, the record's "(Targets[0])" says nothing the caller needs.
                let error = match error {
                    Error::Api(api) => match named_target(&api) {
                        Some((_, message)) => Error::Api(ApiError { message, ..api }),
                        None => Error::Api(api),
                    },
                    other => other,
                };
                let error = Arc::new(error);
                return indices.into_iter().map(|i| (i, Err(error.clone()))).collect();
            }
            let api = error.api().expect("a record-level error is an API answer").clone();
            // Every record that carries an unknown column fails for it; the others are tried again.
            if let (Isolation::Named, ErrorKind::UnknownProperty(column)) = (isolation, &api.kind) {
                let (bad, good): (Vec<usize>, Vec<usize>) =
                    indices.iter().partition(|i| records[**i].contains_key(column.as_str()));
                if !bad.is_empty() {
                    let error = Arc::new(Error::Api(api.clone()));
                    let mut outcomes: Vec<_> = bad.into_iter().map(|i| (i, Err(error.clone()))).collect();
                    outcomes.extend(self.isolate(op, table, records, good, isolation).await);
                    return outcomes;
                }
            }
            // The error names the target to blame: set it aside, send the others again.
            if let Some((position, message)) =
                named_target(&api).filter(|(p, _)| isolation == Isolation::Named && *p < indices.len())
            {
                let bad = indices[position];
                let mut rest = indices;
                rest.remove(position);
                let error = Arc::new(Error::Api(ApiError { message, ..api }));
                let mut outcomes = vec![(bad, Err(error))];
                outcomes.extend(self.isolate(op, table, records, rest, isolation).await);
                return outcomes;
            }
            let right = indices[indices.len() / 2..].to_vec();
            let mut left = indices;
            left.truncate(left.len() / 2);
            let (mut a, b) = futures::join!(
                self.isolate(op, table, records, left, isolation),
                self.isolate(op, table, records, right, isolation)
            );
            a.extend(b);
            a
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_target_is_found() {
        let api = ApiError {
            status: 400,
            code: "0x80044331".into(),
            message: "A validation error occurred.  The length of the 'lastname' attribute … (Targets[12])".into(),
            request_id: None,
            retry_after: None,
            kind: ErrorKind::Validation,
        };
        assert_eq!(
            named_target(&api),
            Some((12, "A validation error occurred.  The length of the 'lastname' attribute …".into()))
        );
        assert!(blames_records(&Error::Api(api)));
    }
}
