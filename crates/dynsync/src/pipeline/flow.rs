//! A flow as its job reads it: the stored [`FlowRecord`] with the job's own definition typed. Every job's flows
//! have the same envelope (id, sandbox, state, etag, times); only the definition differs, so the conversions are
//! written once here and each job says only what its definition is.

use crate::ids::{Etag, FlowId, Sandbox, TargetConnectionId};
use crate::store::{FlowRecord, FlowState, StoreError};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What a job's flows are defined by (the body of `POST /flows` for that job).
pub trait JobDefinition: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The job that runs these flows, as stored with each of them.
    const JOB: &'static str;

    fn name(&self) -> &str;

    /// The target connection the flow writes through, when it has one.
    fn target_connection_id(&self) -> Option<TargetConnectionId>;

    /// The source fields the flow sends to its destination, for data-usage policies to check.
    fn exported_fields(&self) -> Vec<crate::governance::ExportedField>;
}

/// A flow of one job.
#[derive(Debug, Clone)]
pub struct Flow<D> {
    pub id: FlowId,
    pub sandbox: Sandbox,
    pub definition: D,
    pub state: FlowState,
    pub etag: Etag,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl<D: JobDefinition> Flow<D> {
    /// A new flow, enabled.
    pub fn new(sandbox: Sandbox, definition: D) -> Flow<D> {
        let now = Utc::now();
        Flow {
            id: FlowId::new(),
            sandbox,
            definition,
            state: FlowState::Enabled,
            etag: Etag::new(),
            created_at: now,
            updated_at: now,
        }
    }
}

impl<D: JobDefinition> TryFrom<&FlowRecord> for Flow<D> {
    type Error = StoreError;

    fn try_from(record: &FlowRecord) -> Result<Flow<D>, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt { what: "flow definition", detail };
        if record.job != D::JOB {
            return Err(corrupt(format!("flow {} is run by the {} job, not by {}", record.id, record.job, D::JOB)));
        }
        let definition =
            serde_json::from_str(&record.definition).map_err(|e| corrupt(format!("{}: {e}", record.id)))?;
        Ok(Flow {
            id: record.id,
            sandbox: record.sandbox.clone(),
            definition,
            state: record.state,
            etag: record.etag.clone(),
            created_at: record.created_at,
            updated_at: record.updated_at,
        })
    }
}

impl<D: JobDefinition> From<&Flow<D>> for FlowRecord {
    fn from(flow: &Flow<D>) -> FlowRecord {
        FlowRecord {
            id: flow.id,
            sandbox: flow.sandbox.clone(),
            job: D::JOB.to_string(),
            name: flow.definition.name().to_string(),
            definition: serde_json::to_string(&flow.definition).expect("a flow definition serializes"),
            state: flow.state,
            target_connection_id: flow.definition.target_connection_id(),
            etag: flow.etag.clone(),
            created_at: flow.created_at,
            updated_at: flow.updated_at,
        }
    }
}

/// Which flow spec a flow follows, as Flow Service names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowSpecRef {
    pub id: uuid::Uuid,
    #[serde(default = "version_one")]
    pub version: String,
}

fn version_one() -> String {
    "1.0".into()
}
