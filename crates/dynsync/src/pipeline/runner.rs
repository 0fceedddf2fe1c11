//! The runner of one flow, held by the flow's owner: read after the cursor → decide → fold writes of one key
//! → write while the next batch is read → acknowledge while the next batch is written. It never skips a record: a
//! batch is acknowledged only once the sink answered for each of its writes, and only after the batch before it;
//! a failed acknowledgement has the cursor read again, so what came after it is read and written again (a write
//! lands twice at worst, never out of order). What follows a batch is read only once the batch before it is
//! acknowledged, so a source may rely on everything two batches back being counted. A paused sink (sign-in
//! refused) is waited out with the batch kept. Replays of failed records go through the same sink and are counted
//! the same way.

use super::clients::Clients;
use super::sink::{Paused, Refusal};
use super::task::AbortOnDrop;
use super::{Decision, Job, Sink, Source, SourceRecord, StepError, Taken};
use crate::ids::{ConnectionId, FlowId, Sandbox};
use crate::store::{
    Acknowledgement, FailedRecord, Lease, Outcome, REPLAYED, Recovered, Replayed, RunTally, RuntimeStatus, Store,
    StoreError, hour_of,
};
use chrono::Utc;
use dataverse::Backoff;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Records read from a source at a time.
pub const READ_BATCH: usize = 5000;

/// The connection a flow reaches Dynamics through, kept up to date while the flow runs.
#[derive(Clone)]
pub struct ConnectionRef {
    pub store: Store,
    pub clients: Arc<Clients>,
    pub sandbox: Sandbox,
    pub id: ConnectionId,
    /// The environment the flow was started against: its sink and the table definitions it resolved are this
    /// environment's.
    pub environment: dataverse::Environment,
}

impl ConnectionRef {
    /// Gives the shared client the connection's current credentials, if they changed. A connection that now
    /// names another environment is `ConnectionMoved`: the flow starts again against it.
    pub async fn refresh(&self) -> Result<dataverse::Client, StepError> {
        let client = self.clients.current(&self.store, &self.sandbox, self.id).await?;
        if client.environment() != &self.environment {
            return Err(StepError::ConnectionMoved(self.id));
        }
        Ok(client)
    }

    /// Waits until the connection changes, or `longest` has passed.
    async fn wait_for_change(&self, longest: Duration) {
        let until = Instant::now() + longest;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(1).min(until - Instant::now())).await;
            if self.clients.changed(&self.store, &self.sandbox, self.id).await.unwrap_or(false) {
                return;
            }
        }
    }
}

/// The Dynamics environment a flow reaches through its target connection.
pub struct Reach {
    pub connection: ConnectionRef,
    pub client: dataverse::Client,
    pub target: crate::target::TargetConnection,
}

impl Reach {
    /// Follows a flow's target connection to its Dynamics connection and that connection's shared client.
    pub async fn resolve(
        store: &Store,
        clients: &Arc<Clients>,
        sandbox: &Sandbox,
        target: Option<crate::ids::TargetConnectionId>,
    ) -> Result<Reach, StepError> {
        let target_id = target.ok_or(StepError::NoDestination)?;
        let target = store.target_connection(sandbox, target_id).await?.ok_or(StepError::NoDestination)?;
        let client = clients.current(store, sandbox, target.base_connection_id).await?;
        let connection = ConnectionRef {
            store: store.clone(),
            clients: clients.clone(),
            sandbox: sandbox.clone(),
            id: target.base_connection_id,
            environment: client.environment().clone(),
        };
        Ok(Reach { connection, client, target })
    }
}

/// Tries `attempt` until it succeeds, waiting longer each time: a flow whose destination cannot be reached yet
/// (Dynamics down, metadata unreadable) waits for it rather than failing.
pub async fn until_ready<T, F, Fut>(flow: FlowId, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StepError>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match attempt().await {
            Ok(ready) => return ready,
            Err(e) => {
                tracing::warn!(flow = %flow, error = %e, "the flow cannot reach Dynamics yet; trying again");
                tokio::time::sleep(backoff.next()).await;
            }
        }
    }
}

/// A batch read and turned into writes, one per key, not written yet.
pub struct Prepared<K, W> {
    /// The cursor after its last record.
    pub cursor: String,
    /// The run it counts in; the hour's when `None`.
    pub run: Option<chrono::DateTime<Utc>>,
    pub writes: Vec<(K, W)>,
    /// How many records each write stands for: a run counts records, each with one outcome.
    pub records: Vec<u64>,
    pub tally: RunTally,
}

/// Decides each record of a batch and folds the writes of one key, in the order keys first appeared.
pub fn coalesce<J: Job>(
    job: &J,
    records: Vec<SourceRecord<J::Body>>,
    cursor: String,
    run: Option<chrono::DateTime<Utc>>,
) -> Prepared<J::Key, J::Write> {
    let mut index: HashMap<J::Key, usize> = HashMap::new();
    let mut writes: Vec<(J::Key, J::Write)> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    let mut tally = RunTally::default();
    for record in records {
        tally.received += 1;
        match job.decide(record) {
            Decision::Exclude(e) => tally.count(Outcome::Excluded, e.code, &e.message, &e.identity, 1),
            Decision::Write { key, write, notes } => {
                for note in &notes {
                    tally.count(Outcome::Noted, note.code, &note.message, &key.to_string(), 1);
                }
                match index.get(&key) {
                    Some(&i) => {
                        job.fold(&mut writes[i].1, write);
                        counts[i] += 1;
                    }
                    None => {
                        index.insert(key.clone(), writes.len());
                        writes.push((key, write));
                        counts.push(1);
                    }
                }
            }
        }
    }
    Prepared { cursor, run, writes, records: counts, tally }
}

/// Counts the sink's answers into a run's tally: the records that failed for good, and the keys written.
pub fn outcomes<K: std::fmt::Display, W: serde::Serialize>(
    tally: &mut RunTally,
    writes: &[(K, W)],
    records: &[u64],
    results: Vec<Result<Taken, Refusal>>,
) -> (Vec<FailedRecord>, Vec<String>) {
    let mut failed = Vec::new();
    let mut written = Vec::new();
    let now = Utc::now();
    for (((key, write), &records), result) in writes.iter().zip(records).zip(results) {
        let key = key.to_string();
        match result {
            Ok(taken) => {
                // Of records folded into a write that created its destination record, the first created it and
                // the later ones updated it.
                if taken == Taken::Created && records > 1 {
                    tally.count(Outcome::Written, Taken::Created.code(), "", &key, 1);
                    tally.count(Outcome::Written, Taken::Updated.code(), "", &key, records - 1);
                } else {
                    tally.count(Outcome::Written, taken.code(), "", &key, records);
                }
                written.push(key);
            }
            Err(refusal) => {
                tally.count(Outcome::Failed, &refusal.code, &refusal.message, &key, records);
                failed.push(FailedRecord {
                    key,
                    code: refusal.code,
                    message: refusal.message,
                    payload: serde_json::to_string(write).expect("a write serializes"),
                    failed_at: now,
                });
            }
        }
    }
    (failed, written)
}

/// Squares a batch's outcomes with the records that had failed before. A record that fails again keeps what
/// its earlier write held and the later write did not change (the two fold). A record written leaves the failed
/// list only when its write covered all the kept one held; otherwise what is left of it stays. Each removal
/// names the kept write it read, so a change made meanwhile (a replay, another batch) is never removed unseen.
pub(super) async fn reconcile_failed<J: Job>(
    store: &Store,
    flow: FlowId,
    job: &J,
    writes: &[(J::Key, J::Write)],
    failed: &mut Vec<FailedRecord>,
    written: Vec<String>,
) -> Result<Vec<Recovered>, StoreError> {
    if written.is_empty() && failed.is_empty() {
        return Ok(Vec::new());
    }
    let before: HashMap<String, FailedRecord> =
        store.failed_records(flow).await?.into_iter().map(|f| (f.key.clone(), f)).collect();
    if before.is_empty() {
        return Ok(Vec::new());
    }
    let read = |payload: &str| serde_json::from_str::<J::Write>(payload).ok();
    for f in failed.iter_mut() {
        if let (Some(earlier), Some(later)) = (before.get(&f.key).and_then(|b| read(&b.payload)), read(&f.payload)) {
            let mut merged = earlier;
            job.fold(&mut merged, later);
            f.payload = serde_json::to_string(&merged).expect("a write serializes");
        }
    }
    let by_key: HashMap<String, &J::Write> = writes.iter().map(|(k, w)| (k.to_string(), w)).collect();
    let mut recovered = Vec::new();
    for key in written {
        let (Some(kept), Some(write)) = (before.get(&key), by_key.get(&key)) else { continue };
        // A kept write that cannot be read back stays, to be reported by a replay.
        let Some(old) = read(&kept.payload) else { continue };
        match job.uncovered(old, write) {
            None => recovered.push(Recovered { key, payload: kept.payload.clone() }),
            Some(rest) => failed.push(FailedRecord {
                key,
                code: kept.code.clone(),
                message: kept.message.clone(),
                payload: serde_json::to_string(&rest).expect("a write serializes"),
                failed_at: kept.failed_at,
            }),
        }
    }
    Ok(recovered)
}

/// A batch's acknowledgement under way: it goes on while the next batch is written.
type Acknowledging<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, StoreError>> + Send + 'a>>;

/// What became of a batch's acknowledgement, for the runner's next step.
enum Settled {
    Acknowledged,
    /// It failed: the cursor is read again from the store, and what came after it is read and written again.
    ReadAgain,
    /// Another process owns the flow now.
    Stop,
}

/// One flow's runner, owned by the process that holds `lease`.
pub struct Runner<J, S, K> {
    pub store: Store,
    pub flow: FlowId,
    pub lease: Lease,
    pub job: J,
    pub source: S,
    pub sink: K,
    /// The Dataverse connection the flow goes through, kept up to date before each batch; `None` for a sink that
    /// needs none.
    pub connection: Option<ConnectionRef>,
    /// Rung when records arrive for the flow.
    pub wake: Arc<Notify>,
}

impl<J, S, K> Runner<J, S, K>
where
    J: Job,
    S: Source<Body = J::Body>,
    K: super::Sink<J::Key, J::Write>,
{
    /// Steps until the task is stopped (or the lease is lost), waiting for records when there are none.
    pub async fn run(self) {
        Arc::new(self).steps().await
    }

    async fn steps(self: Arc<Self>) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        // The flow's cursor as last acknowledged; `None` while it is to be read from the store.
        let mut cursor: Option<Option<String>> = None;
        // The next batch, read and decided while the current one was being written.
        let mut next: Option<Prepared<J::Key, J::Write>> = None;
        // The acknowledgement of the batch written last, recorded while the next one is written. Batches are
        // acknowledged in order, each once the one before it is: a crash in between reads both again.
        let mut acking: Option<Acknowledging<'_>> = None;
        let mut paused = false;
        loop {
            if next.is_none()
                && let Some(ack) = acking.take()
            {
                // What to read next follows the last acknowledgement.
                match self.settle(ack, &mut cursor, &mut paused, &mut backoff).await {
                    Settled::Stop => return,
                    Settled::Acknowledged | Settled::ReadAgain => {}
                }
            }
            let after = match &cursor {
                Some(c) => c.clone(),
                None => match self.store.cursor(self.flow).await {
                    Ok(c) => {
                        cursor = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        self.trouble(&e.into(), &mut backoff).await;
                        continue;
                    }
                },
            };
            let current = match next.take() {
                Some(prepared) => prepared,
                None => match self.prepare(after.as_deref()).await {
                    Ok(Some(prepared)) => prepared,
                    Ok(None) => {
                        let _ = tokio::time::timeout(Duration::from_millis(500), self.wake.notified()).await;
                        continue;
                    }
                    Err(e) => {
                        self.trouble(&e, &mut backoff).await;
                        continue;
                    }
                },
            };
            if let Some(Err(e)) = self.refresh().await {
                if let StepError::ConnectionMoved(_) = e {
                    tracing::warn!(flow = %self.flow, error = %e, "the flow starts again against its connection's new environment");
                    if let Some(ack) = acking.take() {
                        self.settle(ack, &mut cursor, &mut paused, &mut backoff).await;
                    }
                    return;
                }
                next = Some(current);
                self.trouble(&e, &mut backoff).await;
                continue;
            }
            // Write this batch while the batch before is acknowledged and, once it is, the next is read (in a task
            // of its own, so that both use a core). A source is asked for what follows a batch only once the batch
            // before that one is acknowledged: its barriers (an empty batch after a load's last page) rely on it.
            let previous = acking.take();
            let after = current.cursor.clone();
            let (written, (before, following)) = tokio::join!(self.sink.write(&current.writes), async {
                let before = match previous {
                    Some(ack) => Some(self.settle(ack, &mut cursor, &mut paused, &mut backoff).await),
                    None => None,
                };
                let following = match before {
                    Some(Settled::Stop | Settled::ReadAgain) => None,
                    Some(Settled::Acknowledged) | None => {
                        let runner = self.clone();
                        AbortOnDrop::spawn(async move { runner.prepare(Some(&after)).await }).finished().await
                    }
                };
                (before, following)
            });
            match before {
                Some(Settled::Stop) => return,
                Some(Settled::ReadAgain) => {
                    // The batch before is not acknowledged: this one is read again after it, and written again.
                    next = None;
                    continue;
                }
                Some(Settled::Acknowledged) | None => {}
            }
            let results = match written {
                Ok(results) => results,
                Err(pause) => {
                    paused = true;
                    next = Some(current);
                    self.pause(&pause, &mut backoff).await;
                    continue;
                }
            };
            next = following.and_then(Result::ok).flatten();
            acking = Some(Box::pin(self.acknowledge(current, results)));
        }
    }

    /// Waits for a batch's acknowledgement and takes its cursor; or, when it failed, has the cursor read again
    /// from the store (the acknowledgement may have been recorded before the error).
    async fn settle(
        &self,
        ack: Acknowledging<'_>,
        cursor: &mut Option<Option<String>>,
        paused: &mut bool,
        backoff: &mut Backoff,
    ) -> Settled {
        let failed: StepError = match ack.await {
            Ok(acked) => {
                *cursor = Some(Some(acked));
                backoff.reset();
                if std::mem::take(paused) {
                    let _ = self.store.set_flow_status(&self.lease, RuntimeStatus::Running, "").await;
                    tracing::info!(flow = %self.flow, "the flow signs in again and runs");
                }
                return Settled::Acknowledged;
            }
            Err(StoreError::Fenced) => {
                tracing::warn!(flow = %self.flow, "the flow was taken over by another process, disabled or deleted: this process stops running it");
                return Settled::Stop;
            }
            Err(e) => e.into(),
        };
        *cursor = None;
        self.trouble(&failed, backoff).await;
        Settled::ReadAgain
    }

    async fn refresh(&self) -> Option<Result<dataverse::Client, StepError>> {
        Some(self.connection.as_ref()?.refresh().await)
    }

    async fn prepare(&self, cursor: Option<&str>) -> Result<Option<Prepared<J::Key, J::Write>>, StepError> {
        let Some(batch) = self.source.read(cursor, READ_BATCH).await? else { return Ok(None) };
        let records = batch.records.len();
        let prepared = coalesce(&self.job, batch.records, batch.cursor, batch.run);
        tracing::debug!(flow = %self.flow, records, writes = prepared.writes.len(), "batch ready");
        Ok(Some(prepared))
    }

    /// Records a written batch: its run counts, its failed records and the flow's new cursor, as one unit.
    async fn acknowledge(
        &self,
        prepared: Prepared<J::Key, J::Write>,
        results: Vec<Result<Taken, Refusal>>,
    ) -> Result<String, StoreError> {
        let Prepared { cursor, run, writes, records, mut tally } = prepared;
        let (mut failed, written) = outcomes(&mut tally, &writes, &records, results);
        let recovered = reconcile_failed(&self.store, self.flow, &self.job, &writes, &mut failed, written).await?;
        self.store
            .acknowledge(&Acknowledgement {
                flow: self.flow,
                lease: Some(&self.lease),
                cursor: Some(&cursor),
                hour: run.unwrap_or_else(|| hour_of(Utc::now())),
                tally: &tally,
                failed: &failed,
                recovered: &recovered,
                replayed: &[],
            })
            .await?;
        Ok(cursor)
    }

    async fn trouble(&self, error: &StepError, backoff: &mut Backoff) {
        let wait = backoff.next();
        tracing::warn!(flow = %self.flow, error = %error, retry_in_ms = wait.as_millis() as u64, "the flow's step failed; it will be tried again");
        tokio::time::sleep(wait).await;
    }

    async fn pause(&self, pause: &Paused, backoff: &mut Backoff) {
        let wait = backoff.next();
        tracing::warn!(flow = %self.flow, reason = %pause.reason, "the flow is paused: Dynamics refused the sign-in; nothing is lost, and it resumes when the connection is fixed");
        let _ = self.store.set_flow_status(&self.lease, RuntimeStatus::Paused, &pause.to_string()).await;
        match &self.connection {
            Some(connection) => connection.wait_for_change(wait).await,
            None => tokio::time::sleep(wait).await,
        }
    }
}

/// What replaying a flow's failed records did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    pub retried: u64,
    pub written: u64,
    pub failed: u64,
}

/// The reason of a failed record whose kept write cannot be read back.
const UNREADABLE: &str = "unreadable-write";

/// Sends the writes of a flow's failed records again, once the user has fixed their cause. A replay receives
/// nothing new: each record it sends was received, and counted failed, in an earlier run, and it stays counted
/// once there — moved to written when it goes through (it leaves the failed list), or to its new reason when it
/// fails again (it stays, keeping when it failed). A record whose write cannot be read back is reported, never
/// skipped.
pub async fn replay<J, K>(store: &Store, flow: FlowId, job: &J, sink: &K) -> Result<ReplaySummary, ReplayError>
where
    J: Job,
    K: Sink<J::Key, J::Write>,
{
    let failed = store.failed_records(flow).await?;
    let (mut still_failed, mut written, mut replayed) = (Vec::new(), Vec::new(), Vec::new());
    let mut kept = Vec::new();
    let mut writes = Vec::new();
    for record in &failed {
        let key = record.key.parse::<J::Key>().ok();
        let write = serde_json::from_str::<J::Write>(&record.payload).ok();
        match (key, write) {
            (Some(key), Some(write)) => {
                writes.push((key, write));
                kept.push(record);
            }
            _ => {
                let (code, message) = (
                    UNREADABLE,
                    "the kept write of this record cannot be read back (written by another dynsync version?); send the record again",
                );
                replayed.push(Replayed {
                    hour: hour_of(record.failed_at),
                    code: record.code.clone(),
                    outcome: Outcome::Failed,
                    now_code: code.into(),
                    now_message: message.into(),
                });
                still_failed.push(FailedRecord { code: code.into(), message: message.into(), ..record.clone() });
            }
        }
    }
    let results = sink.write(&writes).await?;
    for ((record, (key, _)), result) in kept.into_iter().zip(&writes).zip(results) {
        let hour = hour_of(record.failed_at);
        match result {
            Ok(taken) => {
                let code = if taken.code().is_empty() { REPLAYED } else { taken.code() };
                replayed.push(Replayed {
                    hour,
                    code: record.code.clone(),
                    outcome: Outcome::Written,
                    now_code: code.to_string(),
                    now_message: String::new(),
                });
                written.push(key.to_string());
            }
            Err(refusal) => {
                replayed.push(Replayed {
                    hour,
                    code: record.code.clone(),
                    outcome: Outcome::Failed,
                    now_code: refusal.code.clone(),
                    now_message: refusal.message.clone(),
                });
                still_failed.push(FailedRecord {
                    key: record.key.clone(),
                    code: refusal.code,
                    message: refusal.message,
                    payload: record.payload.clone(),
                    failed_at: record.failed_at,
                });
            }
        }
    }
    let summary = ReplaySummary {
        retried: failed.len() as u64,
        written: written.len() as u64,
        failed: still_failed.len() as u64,
    };
    let recovered = reconcile_failed(store, flow, job, &writes, &mut still_failed, written).await?;
    store
        .acknowledge(&Acknowledgement {
            flow,
            lease: None,
            cursor: None,
            hour: hour_of(Utc::now()),
            tally: &RunTally::default(),
            failed: &still_failed,
            recovered: &recovered,
            replayed: &replayed,
        })
        .await?;
    Ok(summary)
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Paused(#[from] Paused),
}

impl From<StoreError> for ReplayError {
    fn from(e: StoreError) -> Self {
        ReplayError::Step(e.into())
    }
}
