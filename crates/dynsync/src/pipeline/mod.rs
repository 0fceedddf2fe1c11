//! The pipeline runtime every job runs on: **source → transform → coalesce → write ∥ read the next batch →
//! acknowledge in one transaction → runs**.
//!
//! A job says only what is its own: how a record from its source becomes a write or an exclusion ([`Job`]),
//! how two writes of the same key fold into one, and where writes go ([`Sink`]). The runtime does the rest, the
//! same way for every job: it reads after the flow's cursor, writes each batch while the next is read, and
//! only once the destination has answered for every record records — in one transaction fenced by the flow's
//! lease — the new cursor, the run's counts (each record received has exactly one outcome: written, excluded
//! or failed) and the records that failed for good, with their write to replay. A crash before that
//! transaction means the batch is read and written again: the destination ends with the same values, and the
//! run counts them once. The supervisor gives each enabled flow one owner among the processes sharing the
//! store, and the flows of one connection share one Dataverse client, so one throttling budget.

pub mod budgets;
pub mod clients;
pub mod flow;
pub mod inlet;
pub mod metrics;
pub mod runner;
pub mod sink;
pub mod supervisor;
pub mod task;
#[cfg(test)]
mod tests;

use crate::store::StoreError;
use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::str::FromStr;

pub use clients::Clients;
pub use flow::{Flow, FlowSpecRef, JobDefinition};
pub use runner::{ReplaySummary, Runner};
pub use sink::{DataverseSink, Paused, Refusal};
pub use supervisor::Supervisor;

/// A record as a source gives it: the text an inlet logged, or what a feed read, typed as its job takes it — a
/// record goes from source to job without being written out and parsed again.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord<B = String> {
    /// Where the record is in its source, for reports (`log entry 42`).
    pub position: String,
    pub body: B,
}

/// Records read from a source, and the cursor that comes after the last of them.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceBatch<B = String> {
    pub records: Vec<SourceRecord<B>>,
    pub cursor: String,
    /// The run the records count in: a scheduled load's start. `None` for a stream, whose runs are hourly.
    pub run: Option<chrono::DateTime<chrono::Utc>>,
}

/// Where a flow's records come from: an inlet log that HTTP pushes into, or a change feed pulled from Dataverse.
pub trait Source: Send + Sync + 'static {
    /// What each record holds.
    type Body: Send + Sync + 'static;

    /// Up to `limit` records after `cursor` (from the start when `None`); `None` when there are none yet.
    fn read(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Option<SourceBatch<Self::Body>>, StepError>> + Send;
}

/// Why a record is not written: reported by identity in the flow's run.
#[derive(Debug, Clone, PartialEq)]
pub struct Exclusion {
    /// A short stable code to group by (`no-contact-id`).
    pub code: &'static str,
    /// What is wrong and what to do.
    pub message: String,
    /// The record's identity, as the user would look it up.
    pub identity: String,
}

/// What a job makes of one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<K, W> {
    /// Write this to the record of `key`; `notes` say what was left out of it and why.
    Write {
        key: K,
        write: W,
        notes: Vec<Note>,
    },
    Exclude(Exclusion),
}

/// Something left out of a write, and why; a run groups notes by their code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `wrong-type`, `out-of-range`, `cut-to-fit`: what kind of thing was left out.
    pub code: &'static str,
    pub message: String,
}

impl Note {
    pub fn new(code: &'static str, message: impl Into<String>) -> Note {
        Note { code, message: message.into() }
    }
}

/// What a job is made of: how a record becomes a write, and how writes of one key fold.
pub trait Job: Send + Sync + 'static {
    /// The records it takes, as its source gives them.
    type Body: Send + Sync + 'static;
    /// The destination record a write goes to: writes of the same key in a batch fold into one.
    type Key: Clone + Eq + Hash + Display + FromStr + Send + Sync + 'static;
    /// One write, kept as JSON when it fails so that it can be replayed.
    type Write: Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static;

    fn decide(&self, record: SourceRecord<Self::Body>) -> Decision<Self::Key, Self::Write>;

    /// Folds a later write of the same key into an earlier one: the result is what the destination holds
    /// after both.
    fn fold(&self, earlier: &mut Self::Write, later: Self::Write);

    /// What of a write that failed is still not at the destination once `written` went through for the same
    /// key; `None` when `written` covered all of it.
    fn uncovered(&self, failed: Self::Write, written: &Self::Write) -> Option<Self::Write>;
}

/// Where writes go. Answers, in order, whether each write was taken; a refusal that waiting can fix is never
/// an answer: the sink retries it. `Paused` when the destination cannot be reached as configured (sign-in
/// refused): nothing was decided, and the batch is tried again once the cause is fixed.
pub trait Sink<K, W>: Send + Sync + 'static {
    fn write(&self, writes: &[(K, W)]) -> impl Future<Output = Result<Vec<Result<Taken, Refusal>>, Paused>> + Send;
}

/// How the destination took a write, when the sink can tell: a run counts created and updated records apart
/// (a lead intake's run shows leads created and leads updated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Written,
    Created,
    Updated,
    /// A deletion, recorded (an ingestion's dataset keeps a deleted row, marked).
    Deleted,
}

impl Taken {
    /// The outcome group a written record is counted in; empty for a plain write.
    pub fn code(self) -> &'static str {
        match self {
            Taken::Written => "",
            Taken::Created => "created",
            Taken::Updated => "updated",
            Taken::Deleted => "deleted",
        }
    }
}

/// Why a step of a flow did not go through; it is tried again.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the flow's target connection or its Dynamics connection was deleted; reconnect the flow")]
    NoDestination,
    #[error("the {table} table cannot be read from Dynamics: {error}")]
    Metadata { table: &'static str, error: dataverse::Error },
    #[error("the flow's definition cannot be read ({0}); save the flow again")]
    Definition(String),
    #[error("connection {0} now names another Dynamics environment")]
    ConnectionMoved(crate::ids::ConnectionId),
    #[error("flow {0} is run by no job this dynsync knows ('{1}'); upgrade dynsync")]
    UnknownJob(crate::ids::FlowId, String),
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
}
