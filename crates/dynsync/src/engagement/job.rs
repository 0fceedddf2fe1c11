//! Email events on the pipeline runtime. Its source is the flow's inlet log, where the events endpoint puts each
//! event it read as a [`ReceivedEvent`] once it is durable. An event's write is the event itself, keyed by its
//! [`EventKey`] (message, kind, time, recipient): the same event posted twice folds into one write in a batch and
//! upserts the same activity across batches, so a service's retries and a replayed day add nothing. The sink is
//! the contact's timeline through [`TimelineSink`].

use super::definition::{EventsDefinition, EventsFlow, JOB};
use super::event::{EmailEvent, EventKey};
use super::install::EngagementTables;
use super::sink::TimelineSink;
use crate::ids::FlowId;
use crate::pipeline::inlet::InletLog;
use crate::pipeline::runner::{self, Reach, ReplayError, ReplaySummary};
use crate::pipeline::supervisor::{BoxFuture, FlowContext, JobRunner};
use crate::pipeline::{Clients, Decision, Exclusion, Job, JobDefinition, SourceRecord, StepError};
use crate::store::{Backlog, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// An event as the endpoint keeps it in the flow's log: what was read from the service's post, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedEvent {
    pub received_at: DateTime<Utc>,
    pub event: EmailEvent,
}

/// An email events flow's job: each logged event is one write of itself.
pub struct EventsJob;

impl Job for EventsJob {
    type Body = String;
    type Key = EventKey;
    type Write = EmailEvent;

    fn decide(&self, record: SourceRecord) -> Decision<EventKey, EmailEvent> {
        match serde_json::from_str::<ReceivedEvent>(&record.body) {
            Ok(received) => Decision::Write { key: received.event.key(), write: received.event, notes: Vec::new() },
            Err(e) => Decision::Exclude(Exclusion {
                code: "unreadable-entry",
                message: format!(
                    "the log entry is not an email event ({e}); it was not written by the events endpoint"
                ),
                identity: record.position,
            }),
        }
    }

    /// Two writes of one key are the same event: the later stands.
    fn fold(&self, earlier: &mut EmailEvent, later: EmailEvent) {
        *earlier = later;
    }

    /// A later write of the same key wrote the same event.
    fn uncovered(&self, _failed: EmailEvent, _written: &EmailEvent) -> Option<EmailEvent> {
        None
    }
}

/// Where an email events flow writes, made ready against the environment.
pub struct Destination {
    pub reach: Reach,
    pub sink: TimelineSink,
}

impl Destination {
    pub async fn resolve(store: &Store, clients: &Arc<Clients>, flow: &EventsFlow) -> Result<Destination, StepError> {
        let definition: &EventsDefinition = &flow.definition;
        let reach = Reach::resolve(store, clients, &flow.sandbox, definition.target_connection_id()).await?;
        let tables = EngagementTables::new(reach.target.customization_prefix.clone());
        let sink = TimelineSink::resolve(reach.client.clone(), store.clone(), flow.id, tables, definition).await?;
        Ok(Destination { reach, sink })
    }
}

/// Runs email events flows for the supervisor.
pub struct EventsRunner;

impl EventsRunner {
    async fn run(context: FlowContext) -> Result<(), StepError> {
        let flow = EventsFlow::try_from(&context.flow).map_err(|e| StepError::Definition(e.to_string()))?;
        let destination =
            runner::until_ready(flow.id, || Destination::resolve(&context.store, &context.clients, &flow)).await;
        InletLog::run(context, flow.id, EventsJob, destination.sink, destination.reach.connection).await;
        Ok(())
    }
}

impl JobRunner for EventsRunner {
    fn name(&self) -> &'static str {
        JOB
    }

    fn run(&self, context: FlowContext) -> BoxFuture<'static, Result<(), StepError>> {
        Box::pin(EventsRunner::run(context))
    }

    fn backlog<'a>(&'a self, store: &'a Store, flow: FlowId) -> BoxFuture<'a, Result<Backlog, StoreError>> {
        Box::pin(InletLog::backlog(store, flow))
    }
}

/// Writes the flow's failed events again, once their cause is fixed (a contact created for an unknown address).
pub async fn retry_failed(
    store: &Store,
    clients: &Arc<Clients>,
    flow: &EventsFlow,
) -> Result<ReplaySummary, ReplayError> {
    let destination = Destination::resolve(store, clients, flow).await?;
    runner::replay(store, flow.id, &EventsJob, &destination.sink).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engagement::event::EventKind;

    fn received(kind: EventKind, body_email: &str) -> SourceRecord {
        let event: EmailEvent = serde_json::from_value(serde_json::json!({
            "provider": "sendgrid", "messageId": "m-1", "kind": kind, "occurredAt": "2026-11-30T10:00:00Z",
            "email": body_email,
        }))
        .unwrap();
        let received = ReceivedEvent { received_at: Utc::now(), event };
        SourceRecord { position: "log entry 1".into(), body: serde_json::to_string(&received).unwrap() }
    }

    #[test]
    fn the_same_event_posted_twice_is_one_write() {
        let prepared = runner::coalesce(
            &EventsJob,
            vec![received(EventKind::Opened, "ana@contoso.com"), received(EventKind::Opened, "ana@contoso.com")],
            "2".into(),
            None,
        );
        assert_eq!(prepared.writes.len(), 1);
        assert_eq!(prepared.records, [2]);
    }

    #[test]
    fn two_kinds_of_event_of_one_message_are_two_writes() {
        let prepared = runner::coalesce(
            &EventsJob,
            vec![received(EventKind::Opened, "ana@contoso.com"), received(EventKind::Clicked, "ana@contoso.com")],
            "2".into(),
            None,
        );
        assert_eq!(prepared.writes.len(), 2);
    }

    #[test]
    fn an_entry_that_is_not_an_event_is_excluded_by_its_position() {
        let record = SourceRecord { position: "log entry 7".into(), body: "{}".into() };
        match EventsJob.decide(record) {
            Decision::Exclude(e) => assert_eq!((e.code, e.identity.as_str()), ("unreadable-entry", "log entry 7")),
            other => panic!("{other:?}"),
        }
    }
}
