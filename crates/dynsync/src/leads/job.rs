//! Lead intake on the pipeline runtime. Its source is the flow's inlet log, where the intake endpoint puts each
//! accepted lead as a [`PostedLead`] (the body as Partner Center posted it, with the id and time dynsync gave it)
//! once it is durable. A lead becomes a [`LeadWrite`] keyed by the person and the offer ([`LeadKey`]), so that one
//! person's steps in a batch fold into one write, in order of arrival; the sink is the `lead` table through
//! [`LeadSink`]. Runs count leads created and updated apart.

use super::intake::LeadIntake;
use super::sink::{LeadSink, NoticeQueue};
use super::{DedupKey, Lead, LeadColumns, LeadKey, LeadWrite};
use crate::ids::FlowId;
use crate::pipeline::inlet::InletLog;
use crate::pipeline::runner::{self, Reach, ReplayError, ReplaySummary};
use crate::pipeline::supervisor::{BoxFuture, FlowContext, JobRunner};
use crate::pipeline::{Clients, Decision, Exclusion, Job, JobDefinition, Note, SourceRecord, StepError};
use crate::store::{Backlog, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;

pub use super::intake::JOB;

/// An accepted lead as the intake keeps it in its log: what was posted, untouched, and what dynsync gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostedLead {
    /// The acceptance's id, answered to the sender; also the id of the note the lead's step becomes, so a
    /// replay writes the same note.
    pub id: uuid::Uuid,
    pub received_at: DateTime<Utc>,
    /// The body as posted.
    pub lead: serde_json::Value,
}

/// A lead intake's job: how a posted lead becomes a lead write.
pub struct LeadIntakeJob {
    pub columns: LeadColumns,
}

impl Job for LeadIntakeJob {
    type Body = String;
    type Key = LeadKey;
    type Write = LeadWrite;

    fn decide(&self, record: SourceRecord) -> Decision<LeadKey, LeadWrite> {
        let posted = match serde_json::from_str::<PostedLead>(&record.body) {
            Ok(posted) => posted,
            Err(e) => {
                return Decision::Exclude(Exclusion {
                    code: "unreadable-entry",
                    message: format!("the log entry is not an accepted lead ({e}); it was not written by the intake"),
                    identity: record.position.clone(),
                });
            }
        };
        // The intake accepted only leads that validate; one that no longer does was accepted by another version.
        let lead = match Lead::from_json(posted.lead.to_string().as_bytes()) {
            Ok(lead) => lead,
            Err(problems) => {
                return Decision::Exclude(Exclusion {
                    code: "invalid-lead",
                    message: problems.to_string(),
                    identity: posted.id.to_string(),
                });
            }
        };
        let key = DedupKey::for_lead(&lead).map_or(LeadKey::Alone(posted.id), LeadKey::Person);
        let (write, cuts) = LeadWrite::for_lead(&lead, &self.columns, posted.id, posted.received_at);
        Decision::Write { key, write, notes: cuts.iter().map(|c| Note::new("cut-to-fit", c.to_string())).collect() }
    }

    fn fold(&self, earlier: &mut LeadWrite, later: LeadWrite) {
        earlier.fold(later);
    }

    /// The steps of a failed write that a later write did not record; the later write's values stand.
    fn uncovered(&self, mut failed: LeadWrite, written: &LeadWrite) -> Option<LeadWrite> {
        let noted: HashSet<uuid::Uuid> = written.steps.iter().map(|s| s.note_id).collect();
        failed.steps.retain(|s| !noted.contains(&s.note_id));
        (!failed.steps.is_empty()).then_some(failed)
    }
}

/// Where a lead intake writes, made ready against the environment's lead table.
pub struct Destination {
    pub reach: Reach,
    pub job: LeadIntakeJob,
    pub sink: LeadSink,
}

impl Destination {
    pub async fn resolve(store: &Store, clients: &Arc<Clients>, intake: &LeadIntake) -> Result<Destination, StepError> {
        let definition = &intake.definition;
        let reach = Reach::resolve(store, clients, &intake.sandbox, definition.target_connection_id()).await?;
        let lead = reach.client.table("lead").await.map_err(|error| StepError::Metadata { table: "lead", error })?;
        let columns = definition.lead_columns(&lead).map_err(|problems| {
            let listed: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect();
            StepError::Definition(listed.join("; "))
        })?;
        let recipients = definition.recipients();
        let notices = (!recipients.is_empty()).then(|| NoticeQueue {
            store: store.clone(),
            flow: intake.id,
            intake: definition.name.clone(),
            recipients,
        });
        let sink = LeadSink {
            client: reach.client.clone(),
            columns: columns.clone(),
            window: definition.window(),
            match_accounts: definition.match_accounts_by_domain,
            notices,
        };
        Ok(Destination { reach, job: LeadIntakeJob { columns }, sink })
    }
}

/// Runs lead intakes for the supervisor.
pub struct LeadIntakeRunner;

impl LeadIntakeRunner {
    async fn run(context: FlowContext) -> Result<(), StepError> {
        let intake = LeadIntake::try_from(&context.flow).map_err(|e| StepError::Definition(e.to_string()))?;
        let destination =
            runner::until_ready(intake.id, || Destination::resolve(&context.store, &context.clients, &intake)).await;
        InletLog::run(context, intake.id, destination.job, destination.sink, destination.reach.connection).await;
        Ok(())
    }
}

impl JobRunner for LeadIntakeRunner {
    fn name(&self) -> &'static str {
        JOB
    }

    fn run(&self, context: FlowContext) -> BoxFuture<'static, Result<(), StepError>> {
        Box::pin(LeadIntakeRunner::run(context))
    }

    fn backlog<'a>(&'a self, store: &'a Store, flow: FlowId) -> BoxFuture<'a, Result<Backlog, StoreError>> {
        Box::pin(InletLog::backlog(store, flow))
    }
}

/// Writes the intake's failed leads again, once the user has fixed their cause.
pub async fn retry_failed(
    store: &Store,
    clients: &Arc<Clients>,
    intake: &LeadIntake,
) -> Result<ReplaySummary, ReplayError> {
    let destination = Destination::resolve(store, clients, intake).await?;
    runner::replay(store, intake.id, &destination.job, &destination.sink).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(body: serde_json::Value) -> SourceRecord {
        let posted = PostedLead { id: uuid::Uuid::new_v4(), received_at: Utc::now(), lead: body };
        SourceRecord { position: "log entry 1".into(), body: serde_json::to_string(&posted).unwrap() }
    }

    fn job() -> LeadIntakeJob {
        LeadIntakeJob { columns: LeadColumns::default() }
    }

    #[test]
    fn two_steps_of_one_person_fold_into_one_write_with_both_notes_in_order() {
        let job = job();
        let step = |code: &str| {
            posted(serde_json::json!({
                "UserDetails": {"FirstName": "Ana", "LastName": "Lima", "Email": "ana@contoso.com"},
                "LeadSource": format!("AppSource-{code}|contoso.crm"), "OfferTitle": "Contoso CRM"
            }))
        };
        let prepared = runner::coalesce(&job, vec![step("PLT"), step("INS")], "2".into(), None);
        assert_eq!(prepared.writes.len(), 1);
        assert_eq!(prepared.records, [2]);
        let steps: Vec<_> = prepared.writes[0].1.steps.iter().map(|s| s.action.clone().unwrap()).collect();
        assert_eq!(steps, ["Contact me", "Install"]);
    }

    #[test]
    fn a_lead_without_email_or_phone_stands_alone_under_its_own_id() {
        let job = job();
        let record = posted(serde_json::json!({"UserDetails": {"FirstName": "Ana", "LastName": "Lima"}}));
        let id = serde_json::from_str::<PostedLead>(&record.body).unwrap().id;
        match job.decide(record) {
            Decision::Write { key, .. } => assert_eq!(key, LeadKey::Alone(id)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_write_keeps_only_the_steps_a_later_write_did_not_record() {
        let job = job();
        let body = serde_json::json!({"UserDetails": {"Email": "a@contoso.com"}, "OfferTitle": "X"});
        let write = |record: SourceRecord| match job.decide(record) {
            Decision::Write { write, .. } => write,
            other => panic!("{other:?}"),
        };
        let (first, second) = (write(posted(body.clone())), write(posted(body)));
        assert_eq!(job.uncovered(first.clone(), &first), None);
        let rest = job.uncovered(first.clone(), &second).unwrap();
        assert_eq!(rest.steps, first.steps);
    }
}
