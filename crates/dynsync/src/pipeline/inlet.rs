//! The inlet log as a source: what HTTP pushed into a flow's inlet, read in order after the flow's cursor,
//! which is the text of the last sequence number acknowledged.

use super::runner::{ConnectionRef, Runner};
use super::supervisor::FlowContext;
use super::{Job, Sink, Source, SourceBatch, SourceRecord, StepError};
use crate::ids::FlowId;
use crate::store::{Backlog, Store, StoreError};

pub struct InletLog {
    pub store: Store,
    pub flow: FlowId,
}

/// The sequence number a cursor names (0 before the first acknowledgement).
pub fn sequence(cursor: Option<&str>) -> Result<i64, StoreError> {
    match cursor {
        None => Ok(0),
        Some(text) => text.parse().map_err(|_| StoreError::Corrupt {
            what: "inlet cursor",
            detail: format!("'{text}' is not a log sequence number"),
        }),
    }
}

impl InletLog {
    /// Runs a flow fed by its inlet log, with the job and the sink it resolved, until the flow is stopped.
    pub async fn run<J, K>(context: FlowContext, flow: FlowId, job: J, sink: K, connection: ConnectionRef)
    where
        J: Job<Body = String>,
        K: Sink<J::Key, J::Write>,
    {
        Runner {
            store: context.store.clone(),
            flow,
            lease: context.lease,
            job,
            source: InletLog { store: context.store, flow },
            sink,
            connection: Some(connection),
            wake: context.wake,
        }
        .run()
        .await;
    }

    /// How many accepted records the flow has yet to acknowledge, and when the oldest arrived.
    pub async fn backlog(store: &Store, flow: FlowId) -> Result<Backlog, StoreError> {
        let after = sequence(store.cursor(flow).await?.as_deref())?;
        store.log_backlog(flow, after).await
    }
}

impl Source for InletLog {
    type Body = String;

    async fn read(&self, cursor: Option<&str>, limit: usize) -> Result<Option<SourceBatch>, StepError> {
        let after = sequence(cursor)?;
        let entries = self.store.log_after(self.flow, after, limit).await?;
        let Some(last) = entries.last().map(|e| e.seq) else { return Ok(None) };
        let records = entries
            .into_iter()
            .map(|e| SourceRecord { position: format!("log entry {}", e.seq), body: e.body })
            .collect();
        Ok(Some(SourceBatch { records, cursor: last.to_string(), run: None }))
    }
}
