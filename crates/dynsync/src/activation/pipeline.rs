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
        match step(&store, &flow, destination).await {
            Ok(0) => {
                let _ = tokio::time::timeout(Duration::from_millis(500), wake.notified()).await;
            }
            Ok(_) => pause = Duration::from_millis(500),
            Err(e) => {
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

/// Handles the next batch of a flow's log: how many profiles it acknowledged.
pub async fn step(store: &Store, flow: &ActivationFlow, destination: &Destination) -> Result<usize, StepError> {
    if flow.state != FlowState::Enabled {
        return Ok(0);
    }
    let acked = store.acknowledged(flow.id).await?;
    let entries = store.log_after(flow.id, acked, READ_BATCH).await?;
    let Some(last) = entries.last().map(|e| e.seq) else { return Ok(0) };
    let Destination { client, activation } = destination;

    let mut batch = Batch::default();
    for entry in &entries {
        batch.add(activation, entry);
    }
    let patches: Vec<ContactPatch> = batch.order.iter().map(|c| batch.patches.remove(c).expect("ordered")).collect();
    tracing::debug!(flow = %flow.id, after = acked, up_to = last, profiles = entries.len(), contacts = patches.len(), "writing a batch");
    let mut tally = batch.tally;
    let (failed, mut recovered) = record(sink::write(client, &patches).await, &patches, &mut tally);
    // Only contacts that had failed before leave the failed list: one statement each, so not every contact.
    if !recovered.is_empty() {
        let before: std::collections::HashSet<String> =
            store.failed_contacts(flow.id).await?.into_iter().map(|f| f.contact_id).collect();
        recovered.retain(|c| before.contains(c));
    }
    store.acknowledge(flow.id, last, hour_of(Utc::now()), &tally, &failed, &recovered).await?;
    Ok(entries.len())
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
    let (still_failed, recovered) = record(sink::write(&destination.client, &patches).await, &patches, &mut tally);
    let acked = store.acknowledged(flow.id).await?;
    store.acknowledge(flow.id, acked, hour_of(Utc::now()), &tally, &still_failed, &recovered).await?;
    Ok(RetrySummary { retried: patches.len() as u64, activated: tally.activated, failed: tally.failed })
}

/// Counts the results of a write into a run's tally; the contacts that failed, and those written.
fn record(
    results: Vec<(ContactId, Result<(), sink::Refusal>)>,
    patches: &[ContactPatch],
    tally: &mut RunTally,
) -> (Vec<FailedContact>, Vec<String>) {
    let mut failed = Vec::new();
    let mut recovered = Vec::new();
    let now = Utc::now();
    for ((contact, result), patch) in results.into_iter().zip(patches) {
        match result {
            Ok(()) => {
                tally.activated += 1;
                recovered.push(contact.to_string());
            }
            Err(refusal) => {
                tally.failed += 1;
                group(tally, "failed", &refusal.code, &refusal.message, &contact.to_string());
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
    patches: HashMap<ContactId, ContactPatch>,
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
                    group(&mut self.tally, "noted", "left-out", note, &contact.to_string());
                }
                match self.patches.get_mut(&contact) {
                    Some(earlier) => earlier.absorb(transformed.patch),
                    None => {
                        self.order.push(contact);
                        self.patches.insert(contact, transformed.patch);
                    }
                }
            }
        }
    }

    fn exclude(&mut self, exclusion: &Exclusion, identity: &str) {
        self.tally.excluded += 1;
        group(&mut self.tally, "excluded", exclusion.code(), &exclusion.to_string(), identity);
    }
}

/// Counts one identity in its outcome group, keeping a few of them as samples.
fn group(tally: &mut RunTally, outcome: &str, code: &str, message: &str, identity: &str) {
    match tally.groups.iter_mut().find(|g| g.outcome == outcome && g.code == code) {
        Some(g) => {
            g.count += 1;
            if g.samples.len() < 5 {
                g.samples.push(identity.to_string());
            }
        }
        None => tally.groups.push(OutcomeGroup {
            outcome: outcome.to_string(),
            code: code.to_string(),
            message: message.to_string(),
            count: 1,
            samples: vec![identity.to_string()],
        }),
    }
}
