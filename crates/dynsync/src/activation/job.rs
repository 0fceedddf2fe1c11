//! Audience activation on the pipeline runtime: its source is the flow's inlet log, a record becomes the update
//! of one contact (keyed by the profile's `contactId`), updates of one contact fold with the later value of each
//! column winning, and the sink is `UpdateMultiple` on the contact table — contacts are updated, never created.

use super::patch::{Activation, ContactId};
use super::profile::{CONTACT_NAMESPACE, Profile};
use super::{ActivationFlow, FlowDefinition};
use crate::governance::ExportedField;
use crate::ids::FlowId;
use crate::pipeline::inlet::InletLog;
use crate::pipeline::runner::{self, ConnectionRef, Reach, ReplayError, ReplaySummary};
use crate::pipeline::supervisor::{BoxFuture, FlowContext, JobRunner};
use crate::pipeline::{Clients, DataverseSink, Decision, Exclusion, Job, JobDefinition, SourceRecord, StepError};
use crate::store::{Backlog, Store, StoreError};
use dataverse::{BulkOperation, ColumnType, Table};
use serde_json::{Map, Value as Json};
use std::sync::Arc;

/// The name activation flows are stored with.
pub const JOB: &str = "activation";

impl Job for Activation {
    type Body = String;
    type Key = ContactId;
    type Write = Map<String, Json>;

    fn decide(&self, record: SourceRecord) -> Decision<ContactId, Map<String, Json>> {
        let profile = Profile::read(&record.body, self.paths()).ok();
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
        let Reach { connection, client, target } =
            Reach::resolve(store, clients, &flow.sandbox, flow.definition.target_connection_id()).await?;
        let contact = client.table("contact").await.map_err(|error| StepError::Metadata { table: "contact", error })?;
        let activation = Activation::new(&flow.definition, &target.customization_prefix, &contact);
        let kinds: Vec<ColumnType> = activation.number_columns().map(|(_, kind)| kind.clone()).collect();
        let ranges = client
            .number_ranges("contact", &kinds)
            .await
            .map_err(|error| StepError::Metadata { table: "contact", error })?;
        let activation = activation.with_column_ranges(&ranges);
        let sink = DataverseSink { client, table: Table::contact(), operation: BulkOperation::Update };
        Ok(Destination { connection, activation, sink })
    }
}

/// Runs activation flows for the supervisor.
pub struct ActivationJob;

impl ActivationJob {
    async fn run(context: FlowContext) -> Result<(), StepError> {
        let flow = ActivationFlow::try_from(&context.flow).map_err(|e| StepError::Definition(e.to_string()))?;
        let destination =
            runner::until_ready(flow.id, || Destination::resolve(&context.store, &context.clients, &flow)).await;
        InletLog::run(context, flow.id, destination.activation, destination.sink, destination.connection).await;
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

impl JobDefinition for FlowDefinition {
    const JOB: &'static str = JOB;

    fn name(&self) -> &str {
        &self.name
    }

    fn target_connection_id(&self) -> Option<crate::ids::TargetConnectionId> {
        FlowDefinition::target_connection_id(self)
    }

    /// Every mapped attribute, and each audience's membership (`segmentMembership.ups.<id>`).
    fn exported_fields(&self) -> Vec<ExportedField> {
        let mappings = self
            .mappings
            .iter()
            .enumerate()
            .map(|(i, m)| ExportedField { field: format!("mappings[{i}].source"), path: m.source.clone() });
        let audiences = self.audiences.iter().enumerate().map(|(i, a)| ExportedField {
            field: format!("audiences[{i}].id"),
            path: format!("segmentMembership.ups.{}", a.id),
        });
        mappings.chain(audiences).collect()
    }
}
