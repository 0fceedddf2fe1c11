//! The supervisor: which flows this process runs. Every `heartbeat` it says it is alive, renews the leases of
//! the flows it runs, stops those it lost or that were disabled, changed or deleted, gives back flows beyond
//! its fair share of the live processes, and claims free or expired ones up to that share — so flows spread
//! over the processes sharing the store, and a dead process's flows are taken over once its leases expire.
//!
//! A runner is stopped when its lease has not been renewed for `ttl - heartbeat`: by the time another process
//! may claim the flow, its old owner has stopped writing, so an older write never lands after a newer one.

use super::StepError;
use super::clients::Clients;
use crate::ids::{Etag, FlowId};
use crate::store::{Backlog, FlowRecord, FlowState, Lease, ProcessId, Store, StoreError};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// The timings of flow ownership. A process renews its leases every `heartbeat`; a lease not renewed for `ttl`
/// is taken over by another process. A process stops writing for a flow once `ttl - heartbeat` has passed since
/// its last renewal, so that a flow's old owner is silent before its new owner starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    pub heartbeat: Duration,
    pub ttl: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        LeaseTimings { heartbeat: Duration::from_secs(5), ttl: Duration::from_secs(15) }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a flow's runner is given.
pub struct FlowContext {
    pub store: Store,
    pub clients: Arc<Clients>,
    pub flow: FlowRecord,
    pub lease: Lease,
    pub wake: Arc<Notify>,
}

/// A job, as the supervisor knows it: by name, it starts a flow's runner.
pub trait JobRunner: Send + Sync + 'static {
    /// The name flows are stored with (`activation`).
    fn name(&self) -> &'static str;
    /// Runs a flow until the returned future is dropped; errors are the runner's to retry.
    fn run(&self, context: FlowContext) -> BoxFuture<'static, Result<(), StepError>>;
    /// How far behind a flow is.
    fn backlog<'a>(&'a self, store: &'a Store, flow: FlowId) -> BoxFuture<'a, Result<Backlog, StoreError>>;
}

struct Worker {
    /// The flow as the worker runs it: a worker whose flow has changed is restarted.
    etag: Etag,
    lease: Lease,
    wake: Arc<Notify>,
    /// Until when the worker may write: pushed forward by each renewal.
    valid_until: watch::Sender<Instant>,
    task: JoinHandle<()>,
}

pub struct Supervisor {
    store: Store,
    clients: Arc<Clients>,
    jobs: Vec<Arc<dyn JobRunner>>,
    process: ProcessId,
    timings: LeaseTimings,
    log_retention: Duration,
    started_at: String,
    workers: Mutex<HashMap<FlowId, Worker>>,
    last_prune: Mutex<Option<Instant>>,
    /// Rung when this process changed a flow, so that it does not wait for the next heartbeat to act on it.
    flows_changed: Notify,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How often acknowledged log entries past the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Supervisor {
    pub fn new(
        store: Store,
        clients: Arc<Clients>,
        jobs: Vec<Arc<dyn JobRunner>>,
        timings: LeaseTimings,
        log_retention: Duration,
    ) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            store,
            clients,
            jobs,
            process: ProcessId::new(),
            timings,
            log_retention,
            started_at: chrono::Utc::now().to_rfc3339(),
            workers: Mutex::new(HashMap::new()),
            last_prune: Mutex::new(None),
            flows_changed: Notify::new(),
        })
    }

    pub fn process(&self) -> ProcessId {
        self.process
    }

    pub fn job(&self, name: &str) -> Option<&Arc<dyn JobRunner>> {
        self.jobs.iter().find(|j| j.name() == name)
    }

    /// Keeps this process's share of the flows running, until stopped.
    pub fn supervise(self: &Arc<Self>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.tick().await {
                    tracing::warn!(error = %e, "the supervisor could not read or renew the flows' leases; trying again");
                }
                let _ = tokio::time::timeout(this.timings.heartbeat, this.flows_changed.notified()).await;
            }
        })
    }

    /// One heartbeat: renew, release, claim, prune.
    pub async fn tick(&self) -> Result<(), StoreError> {
        let ttl = self.timings.ttl.as_millis() as i64;
        // Taken before any store call, so that a slow store shortens the workers' window, never lengthens it.
        let started = Instant::now();
        let now = now_ms();
        self.store.heartbeat(self.process, now, &self.started_at).await?;
        self.renew(now + ttl, started).await;
        let live = self.store.live_processes(now - ttl).await?.len().max(1);
        let enabled: Vec<FlowRecord> =
            self.store.all_flows().await?.into_iter().filter(|f| f.state == FlowState::Enabled).collect();
        let share = enabled.len().div_ceil(live);

        // Stop what is no longer to run as this process runs it, and what is beyond its share.
        let stopped: Vec<Worker> = {
            let mut workers = self.workers.lock().expect("workers lock");
            let mut keep = 0;
            workers
                .extract_if(|id, worker| {
                    let current = enabled.iter().any(|f| f.id == *id && f.etag == worker.etag);
                    let ok = current && !worker.task.is_finished() && keep < share;
                    keep += usize::from(ok);
                    !ok
                })
                .map(|(_, worker)| worker)
                .collect()
        };
        self.give_back(stopped).await?;

        // Claim free or expired flows, up to the share.
        for flow in enabled {
            if self.workers.lock().expect("workers lock").len() >= share {
                break;
            }
            if self.workers.lock().expect("workers lock").contains_key(&flow.id) {
                continue;
            }
            let claimed_at = Instant::now();
            if let Some(lease) = self.store.claim_flow(flow.id, self.process, now_ms(), ttl).await? {
                tracing::info!(flow = %flow.id, generation = lease.generation, process = %self.process, "this process runs the flow");
                self.start(flow, lease, claimed_at);
            }
        }
        self.prune().await;
        Ok(())
    }

    /// Renews each worker's lease; stops the workers whose lease another process took.
    async fn renew(&self, until_ms: i64, started: Instant) {
        let leases: Vec<Lease> = self.workers.lock().expect("workers lock").values().map(|w| w.lease.clone()).collect();
        for lease in leases {
            let renewed = self.store.renew_lease(&lease, until_ms).await;
            let mut workers = self.workers.lock().expect("workers lock");
            match renewed {
                Ok(true) => {
                    if let Some(w) = workers.get(&lease.flow) {
                        let _ = w.valid_until.send(started + self.write_window());
                    }
                }
                Ok(false) => {
                    tracing::warn!(flow = %lease.flow, "the flow's lease is no longer this process's (another process took it, or the flow was deleted): this one stops running it");
                    if let Some(w) = workers.remove(&lease.flow) {
                        w.task.abort();
                    }
                }
                // The store did not answer: the worker stops by itself when its window closes.
                Err(e) => tracing::warn!(flow = %lease.flow, error = %e, "the flow's lease could not be renewed"),
            }
        }
    }

    /// How long a worker may write after a renewal: it is silent before anyone may claim its flow.
    fn write_window(&self) -> Duration {
        self.timings.ttl.saturating_sub(self.timings.heartbeat).max(self.timings.heartbeat / 2)
    }

    /// Stops workers, waits until they have stopped, then gives their flows back after one heartbeat more, so a
    /// write the stopped worker had sent is answered before another process can take the flow.
    async fn give_back(&self, workers: Vec<Worker>) -> Result<(), StoreError> {
        for worker in &workers {
            worker.task.abort();
        }
        let free_at = now_ms() + self.timings.heartbeat.as_millis() as i64;
        for worker in workers {
            let _ = worker.task.await;
            self.store.release_lease(&worker.lease, free_at).await?;
        }
        Ok(())
    }

    fn start(&self, flow: FlowRecord, lease: Lease, claimed_at: Instant) {
        let wake = Arc::new(Notify::new());
        let (valid_until, window) = watch::channel(claimed_at + self.write_window());
        let id = flow.id;
        let etag = flow.etag.clone();
        let job = self.job(&flow.job).cloned();
        let context = FlowContext {
            store: self.store.clone(),
            clients: self.clients.clone(),
            flow,
            lease: lease.clone(),
            wake: wake.clone(),
        };
        let task = tokio::spawn(async move {
            let Some(job) = job else {
                let e = StepError::UnknownJob(context.flow.id, context.flow.job.clone());
                tracing::error!(error = %e, "the flow cannot run");
                return;
            };
            tokio::select! {
                result = job.run(context) => if let Err(e) = result {
                    tracing::warn!(flow = %id, error = %e, "the flow's runner stopped; it is started again");
                },
                () = fenced(window) => tracing::warn!(flow = %id, "the flow's lease was not renewed in time: this process stops writing for it"),
            }
        });
        self.workers.lock().expect("workers lock").insert(id, Worker { etag, lease, wake, valid_until, task });
    }

    async fn prune(&self) {
        {
            let mut last = self.last_prune.lock().expect("prune lock");
            if last.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let before = chrono::Utc::now() - self.log_retention;
        match self.store.prune_log(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "pruned acknowledged inlet log entries past their retention"),
            Err(e) => tracing::warn!(error = %e, "pruning the inlet log failed; it is tried again later"),
        }
    }

    /// Says a flow was created, changed, enabled, disabled or deleted: the supervisor acts on it at once.
    pub fn flows_changed(&self) {
        self.flows_changed.notify_one();
    }

    /// Tells a flow's runner that records arrived, if this process runs it.
    pub fn wake(&self, flow: FlowId) {
        if let Some(worker) = self.workers.lock().expect("workers lock").get(&flow) {
            worker.wake.notify_one();
        }
    }

    /// The flows this process runs.
    pub fn running(&self) -> Vec<FlowId> {
        self.workers.lock().expect("workers lock").keys().copied().collect()
    }

    /// Stops every runner and gives their flows back. What they had not acknowledged is read again by the next
    /// owner.
    pub async fn stop_all(&self) {
        let workers: Vec<Worker> = self.workers.lock().expect("workers lock").drain().map(|(_, w)| w).collect();
        if let Err(e) = self.give_back(workers).await {
            tracing::warn!(error = %e, "could not give the flows back; other processes take them when the leases expire");
        }
        if let Err(e) = self.store.leave(self.process).await {
            tracing::warn!(error = %e, "could not give the flows back; other processes take them when the leases expire");
        }
    }
}

/// Resolves once `valid_until` has passed without being pushed forward.
async fn fenced(mut valid_until: watch::Receiver<Instant>) {
    loop {
        let until = *valid_until.borrow_and_update();
        if until <= Instant::now() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(until.into()) => {}
            changed = valid_until.changed() => if changed.is_err() {
                // The supervisor dropped the worker: it is being stopped anyway.
                std::future::pending::<()>().await;
            },
        }
    }
}
