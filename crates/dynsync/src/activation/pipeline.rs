//! The activation pipeline of each enabled flow: durable log → transform → coalesce → write → acknowledge.
//!
//! A flow reads its log after the position it last acknowledged, turns profiles into contact updates,
//! keeps the latest update of each contact, writes them, and only then records — in one transaction — its
//! new position, the counts of its run and the contacts that failed. A crash anywhere before that
//! transaction means the same profiles are read and written again: Dynamics ends up with the same values,
//! and the run counts them once.

use super::patch::{Activation, ContactId, ContactPatch, Exclusion};
use super::profile::{CONTACT_NAMESPACE, Profile};
use super::sink;
use super::{ActivationFlow, FlowState};
use crate::ids::FlowId;
use crate::store::{FailedContact, LogEntry, OutcomeGroup, RunTally, Store, hour_of};
use chrono::Utc;
use dataverse::Client;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Profiles read from the log at a time.
const READ_BATCH: usize = 5000;

/// Runs one worker per enabled flow, starting and stopping them as flows are enabled, disabled and deleted.
pub struct Activations {
    store: Store,
    workers: Mutex<HashMap<FlowId, Worker>>,
}

struct Worker {
    /// The flow as the worker runs it: a worker whose flow has changed is restarted.
    etag: crate::ids::Etag,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Activations {
    pub fn new(store: Store) -> Arc<Activations> {
        Arc::new(Activations { store, workers: Mutex::new(HashMap::new()) })
    }

    /// Starts the workers of the enabled flows, then keeps them in line with the store.
    pub fn supervise(self: &Arc<Self>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.reconcile().await {
                    tracing::warn!(error = %e, "reading the enabled flows failed; trying again");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    /// Starts a worker for each enabled flow that has none, and stops those of flows no longer enabled.
    pub async fn reconcile(&self) -> Result<(), crate::store::StoreError> {
        let enabled = self.store.enabled_flows().await?;
        let mut workers = self.workers.lock().expect("workers lock");
        workers.retain(|id, worker| {
            let keep = enabled.iter().any(|f| f.id == *id && f.etag == worker.etag) && !worker.task.is_finished();
            if !keep {
                worker.task.abort();
            }
            keep
        });
        for flow in enabled {
            workers.entry(flow.id).or_insert_with(|| {
                let wake = Arc::new(Notify::new());
                let etag = flow.etag.clone();
                let task = tokio::spawn(run(self.store.clone(), flow, wake.clone()));
                Worker { etag, wake, task }
            });
        }
        Ok(())
    }

    /// Tells a flow's worker that profiles arrived.
    pub fn wake(&self, flow: FlowId) {
        if let Some(worker) = self.workers.lock().expect("workers lock").get(&flow) {
            worker.wake.notify_one();
        }
    }

    /// Stops every worker. What they had not acknowledged is read again on the next start.
    pub fn stop_all(&self) {
        for (_, worker) in self.workers.lock().expect("workers lock").drain() {
            worker.task.abort();
        }
    }
}

/// A flow's worker: steps until it is stopped, waiting for profiles when it has none.
async fn run(store: Store, flow: ActivationFlow, wake: Arc<Notify>) {
    let mut pause = Duration::from_millis(500);
    let mut destination = None;
    // The next batch, read and transformed while the current one was being written.
    let mut next: Option<Prepared> = None;
    loop {
        if destination.is_none() {
            match Destination::resolve(&store, &flow).await {
                Ok(d) => destination = Some(d),
                Err(e) => {
                    tracing::warn!(flow = %flow.id, error = %e, "the flow cannot reach Dynamics yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
        }
        let destination = destination.as_ref().expect("resolved");
        let current = match next.take() {
            Some(prepared) => Ok(Some(prepared)),
            None => match store.acknowledged(flow.id).await {
                Ok(acked) => prepare(&store, &flow, &destination.activation, acked).await,
                Err(e) => Err(e.into()),
            },
        };
        let outcome = match current {
            Ok(None) => {
                let _ = tokio::time::timeout(Duration::from_millis(500), wake.notified()).await;
                continue;
            }
            Ok(Some(current)) => {
                // Write this batch while reading the next: the next is acknowledged only after this one.
                let (results, following) = tokio::join!(
                    sink::write(&destination.client, &current.patches),
                    prepare(&store, &flow, &destination.activation, current.last)
                );
                next = following.ok().flatten();
                finish(&store, &flow, current, results).await
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => pause = Duration::from_millis(500),
            Err(e) => {
                next = None;
                tracing::warn!(flow = %flow.id, error = %e, "the flow's step failed; it will be tried again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the flow's target connection or its Dynamics connection was deleted; reconnect the flow")]
    NoDestination,
    #[error("the contact table cannot be read from Dynamics: {0}")]
    Metadata(dataverse::Error),
}

/// Where a flow writes, resolved once per worker: the client (with its token cache) and the flow's columns.
pub struct Destination {
    client: Client,
    activation: Activation,
}

impl Destination {
    pub async fn resolve(store: &Store, flow: &ActivationFlow) -> Result<Destination, StepError> {
        let (target, destination) = store.flow_destination(flow).await?.ok_or(StepError::NoDestination)?;
        let client = destination.client();
        let contact = client.table("contact").await.map_err(StepError::Metadata)?;
        let activation = Activation::new(&flow.definition, &target.customization_prefix, &contact);
        Ok(Destination { client, activation })
    }
}

/// A batch of a flow's log, read and turned into contact updates, not written yet.
struct Prepared {
    /// The last log position it holds.
    last: i64,
    patches: Vec<ContactPatch>,
    /// How many profiles each update stands for: a run counts profiles, each with one outcome.
    profiles: Vec<u64>,
    tally: RunTally,
}

/// Reads the batch of a flow's log after `after` and turns it into contact updates, one per contact.
async fn prepare(
    store: &Store,
    flow: &ActivationFlow,
    activation: &Activation,
    after: i64,
) -> Result<Option<Prepared>, StepError> {
    if flow.state != FlowState::Enabled {
        return Ok(None);
    }
    let entries = store.log_after(flow.id, after, READ_BATCH).await?;
    let Some(last) = entries.last().map(|e| e.seq) else { return Ok(None) };
    let mut batch = Batch::default();
    for entry in &entries {
        batch.add(activation, entry);
    }
    let (patches, profiles): (Vec<ContactPatch>, Vec<u64>) =
        batch.order.iter().map(|c| batch.patches.remove(c).expect("ordered")).unzip();
    tracing::debug!(flow = %flow.id, after, up_to = last, profiles = entries.len(), contacts = patches.len(), "batch ready");
    Ok(Some(Prepared { last, patches, profiles, tally: batch.tally }))
}

/// Records a written batch: its run counts, its failed contacts, and the flow's new position, as one unit.
async fn finish(
    store: &Store,
    flow: &ActivationFlow,
    prepared: Prepared,
    results: Vec<(ContactId, Result<(), sink::Refusal>)>,
) -> Result<(), StepError> {
    let Prepared { last, patches, profiles, mut tally } = prepared;
    let (failed, mut recovered) = record(results, &patches, &profiles, &mut tally);
    // Only contacts that had failed before leave the failed list: one statement each, so not every contact.
    if !recovered.is_empty() {
        let before: std::collections::HashSet<String> =
            store.failed_contacts(flow.id).await?.into_iter().map(|f| f.contact_id).collect();
        recovered.retain(|c| before.contains(c));
    }
    store.acknowledge(flow.id, last, hour_of(Utc::now()), &tally, &failed, &recovered).await?;
    Ok(())
}

/// What replaying a flow's failed contacts did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySummary {
    pub retried: u64,
    pub activated: u64,
    pub failed: u64,
}

/// Sends the updates of a flow's failed contacts again, once the user has fixed their cause. Those written
/// leave the failed list and count as activated in the run of the hour; the others stay, with the new reason.
pub async fn retry_failed(store: &Store, flow: &ActivationFlow) -> Result<RetrySummary, StepError> {
    let failed = store.failed_contacts(flow.id).await?;
    if failed.is_empty() {
        return Ok(RetrySummary { retried: 0, activated: 0, failed: 0 });
    }
    let destination = Destination::resolve(store, flow).await?;
    let patches: Vec<ContactPatch> = failed
        .iter()
        .filter_map(|f| {
            let contact = f.contact_id.parse().ok().map(ContactId)?;
            let columns = serde_json::from_str(&f.patch).ok()?;
            Some(ContactPatch { contact, columns })
        })
        .collect();
    let mut tally = RunTally::default();
    let results = sink::write(&destination.client, &patches).await;
    let (still_failed, recovered) = record(results, &patches, &vec![1; patches.len()], &mut tally);
    let acked = store.acknowledged(flow.id).await?;
    store.acknowledge(flow.id, acked, hour_of(Utc::now()), &tally, &still_failed, &recovered).await?;
    Ok(RetrySummary { retried: patches.len() as u64, activated: tally.activated, failed: tally.failed })
}

/// Counts the results of a write into a run's tally; the contacts that failed, and those written.
fn record(
    results: Vec<(ContactId, Result<(), sink::Refusal>)>,
    patches: &[ContactPatch],
    profiles: &[u64],
    tally: &mut RunTally,
) -> (Vec<FailedContact>, Vec<String>) {
    let mut failed = Vec::new();
    let mut recovered = Vec::new();
    let now = Utc::now();
    for (((contact, result), patch), &profiles) in results.into_iter().zip(patches).zip(profiles) {
        match result {
            Ok(()) => {
                tally.activated += profiles;
                recovered.push(contact.to_string());
            }
            Err(refusal) => {
                tally.failed += profiles;
                group(tally, "failed", &refusal.code, &refusal.message, &contact.to_string(), profiles);
                failed.push(FailedContact {
                    contact_id: contact.to_string(),
                    code: refusal.code,
                    message: refusal.message,
                    patch: serde_json::to_string(&patch.columns).expect("JSON serializes"),
                    failed_at: now,
                });
            }
        }
    }
    (failed, recovered)
}

/// The updates of one batch, one per contact, in the order contacts first appeared.
#[derive(Default)]
struct Batch {
    /// Each contact's update, and how many profiles it folds together.
    patches: HashMap<ContactId, (ContactPatch, u64)>,
    order: Vec<ContactId>,
    tally: RunTally,
}

impl Batch {
    fn add(&mut self, activation: &Activation, entry: &LogEntry) {
        self.tally.received += 1;
        let profile = serde_json::from_str(&entry.body).ok().and_then(|m| Profile::from_message(m).ok());
        let Some(profile) = profile else {
            // Ingestion accepts only well-formed profiles; a log entry that is not one was written by hand.
            self.exclude(&Exclusion::NoContactId, &format!("log entry {}", entry.seq));
            return;
        };
        match activation.transform(&profile) {
            Err(exclusion) => {
                let identity = profile.identity(CONTACT_NAMESPACE).unwrap_or("(none)").to_string();
                self.exclude(&exclusion, &identity);
            }
            Ok(transformed) => {
                let contact = transformed.patch.contact;
                for note in &transformed.notes {
                    group(&mut self.tally, "noted", "left-out", note, &contact.to_string(), 1);
                }
                match self.patches.get_mut(&contact) {
                    Some((earlier, profiles)) => {
                        earlier.absorb(transformed.patch);
                        *profiles += 1;
                    }
                    None => {
                        self.order.push(contact);
                        self.patches.insert(contact, (transformed.patch, 1));
                    }
                }
            }
        }
    }

    fn exclude(&mut self, exclusion: &Exclusion, identity: &str) {
        self.tally.excluded += 1;
        group(&mut self.tally, "excluded", exclusion.code(), &exclusion.to_string(), identity, 1);
    }
}

/// Counts `profiles` profiles of one identity in their outcome group, keeping a few identities as samples.
fn group(tally: &mut RunTally, outcome: &str, code: &str, message: &str, identity: &str, profiles: u64) {
    match tally.groups.iter_mut().find(|g| g.outcome == outcome && g.code == code) {
        Some(g) => {
            g.count += profiles;
            if g.samples.len() < 5 {
                g.samples.push(identity.to_string());
            }
        }
        None => tally.groups.push(OutcomeGroup {
            outcome: outcome.to_string(),
            code: code.to_string(),
            message: message.to_string(),
            count: profiles,
            samples: vec![identity.to_string()],
        }),
    }
}
