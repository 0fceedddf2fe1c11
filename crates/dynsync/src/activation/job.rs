//! Audience activation on the pipeline runtime: its source is the flow's inlet log, a record becomes the update
//! of one contact (keyed by the profile's `contactId`), updates of one contact fold with the later value of each
//! column winning, and the sink is `UpdateMultiple` on the contact table — contacts are updated, never created.

use super::patch::{Activation, ContactId};
use super::profile::{CONTACT_NAMESPACE, Profile};
use super::{ActivationFlow, FlowDefinition};
use crate::ids::FlowId;
use crate::pipeline::inlet::InletLog;
use crate::pipeline::runner::{self, ConnectionRef, ReplayError, ReplaySummary, Runner};
use crate::pipeline::supervisor::{BoxFuture, FlowContext, JobRunner};
use crate::pipeline::{Clients, DataverseSink, Decision, Exclusion, Job, SourceRecord, StepError};
use crate::store::{Backlog, FlowRecord, Store, StoreError};
use dataverse::{Backoff, BulkOperation, Table};
use serde_json::{Map, Value as Json};
use std::sync::Arc;
use std::time::Duration;

/// The name activation flows are stored with.
pub const JOB: &str = "activation";

impl Job for Activation {
    type Key = ContactId;
    type Write = Map<String, Json>;

    fn decide(&self, record: &SourceRecord) -> Decision<ContactId, Map<String, Json>> {
        let profile = serde_json::from_str(&record.body).ok().and_then(|m| Profile::from_message(m).ok());
        let Some(profile) = profile else {
            // Ingestion accepts only well-formed profiles; a log entry that is not one was written by hand.
            let e = super::patch::Exclusion::NoContactId;
            return Decision::Exclude(Exclusion {
                code: e.code(),
                message: e.to_string(),
                identity: record.position.clone(),
            });
        };
        match self.transform(&profile) {
            Ok(t) => Decision::Write { key: t.patch.contact, write: t.patch.columns, notes: t.notes },
            Err(e) => Decision::Exclude(Exclusion {
                code: e.code(),
                message: e.to_string(),
                identity: profile.identity(CONTACT_NAMESPACE).unwrap_or("(none)").to_string(),
            }),
        }
    }

    fn fold(&self, earlier: &mut Map<String, Json>, later: Map<String, Json>) {
        earlier.extend(later);
    }

    /// The columns of a failed update that a later update did not set.
    fn uncovered(&self, mut failed: Map<String, Json>, written: &Map<String, Json>) -> Option<Map<String, Json>> {
        failed.retain(|column, _| !written.contains_key(column));
        (!failed.is_empty()).then_some(failed)
    }
}

/// Where an activation flow writes: its connection, and the flow made ready against the contact table.
pub struct Destination {
    pub connection: ConnectionRef,
    pub activation: Activation,
    pub sink: DataverseSink,
}

impl Destination {
    pub async fn resolve(
        store: &Store,
        clients: &Arc<Clients>,
        flow: &ActivationFlow,
    ) -> Result<Destination, StepError> {
        let target_id = flow.definition.target_connection_id().ok_or(StepError::NoDestination)?;
        let target = store.target_connection(&flow.sandbox, target_id).await?.ok_or(StepError::NoDestination)?;
        let client = clients.current(store, &flow.sandbox, target.base_connection_id).await?;
        let connection = ConnectionRef {
            store: store.clone(),
            clients: clients.clone(),
            sandbox: flow.sandbox.clone(),
            id: target.base_connection_id,
            environment: client.environment().clone(),
        };
        let contact = client.table("contact").await.map_err(|error| StepError::Metadata { table: "contact", error })?;
        let activation = Activation::new(&flow.definition, &target.customization_prefix, &contact);
        let sink = DataverseSink { client, table: Table::contact(), operation: BulkOperation::Update };
        Ok(Destination { connection, activation, sink })
    }
}

/// Runs activation flows for the supervisor.
pub struct ActivationJob;

impl ActivationJob {
    async fn run(context: FlowContext) -> Result<(), StepError> {
        let flow = ActivationFlow::try_from(&context.flow).map_err(|e| StepError::Definition(e.to_string()))?;
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let destination = loop {
            match Destination::resolve(&context.store, &context.clients, &flow).await {
                Ok(d) => break d,
                Err(e) => {
                    tracing::warn!(flow = %flow.id, error = %e, "the flow cannot reach Dynamics yet; trying again");
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        };
        Runner {
            store: context.store.clone(),
            flow: flow.id,
            lease: context.lease,
            job: destination.activation,
            source: InletLog { store: context.store, flow: flow.id },
            sink: destination.sink,
            connection: Some(destination.connection),
            wake: context.wake,
        }
        .run()
        .await;
        Ok(())
    }
}

impl JobRunner for ActivationJob {
    fn name(&self) -> &'static str {
        JOB
    }

    fn run(&self, context: FlowContext) -> BoxFuture<'static, Result<(), StepError>> {
        Box::pin(ActivationJob::run(context))
    }

    fn backlog<'a>(&'a self, store: &'a Store, flow: FlowId) -> BoxFuture<'a, Result<Backlog, StoreError>> {
        Box::pin(InletLog::backlog(store, flow))
    }
}

/// Sends the updates of a flow's failed contacts again, once the user has fixed their cause.
pub async fn retry_failed(
    store: &Store,
    clients: &Arc<Clients>,
    flow: &ActivationFlow,
) -> Result<ReplaySummary, ReplayError> {
    let destination = Destination::resolve(store, clients, flow).await?;
    runner::replay(store, flow.id, &destination.activation, &destination.sink).await
}

impl TryFrom<&FlowRecord> for ActivationFlow {
    type Error = StoreError;

    fn try_from(record: &FlowRecord) -> Result<ActivationFlow, StoreError> {
        let definition: FlowDefinition = serde_json::from_str(&record.definition)
            .map_err(|e| StoreError::Corrupt { what: "activation flow", detail: format!("{}: {e}", record.id) })?;
        Ok(ActivationFlow {
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

impl From<&ActivationFlow> for FlowRecord {
    fn from(flow: &ActivationFlow) -> FlowRecord {
        FlowRecord {
            id: flow.id,
            sandbox: flow.sandbox.clone(),
            job: JOB.to_string(),
            name: flow.definition.name.clone(),
            definition: serde_json::to_string(&flow.definition).expect("a flow serializes"),
            state: flow.state,
            target_connection_id: flow.definition.target_connection_id(),
            etag: flow.etag.clone(),
            created_at: flow.created_at,
            updated_at: flow.updated_at,
        }
    }
}
