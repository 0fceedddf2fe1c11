//! A flow's health, as its page shows it and its alerts judge it: what it is doing ([`Activity`]) and whether it keeps
//! up ([`Timeliness`]), judged by its lag against what its schedule promises, as Airbyte judges a connection —
//! Delayed past once the promise, Error past twice.
//!
//! A streaming flow (activation, lead intake, email events) promises its records within
//! [`STREAMING_PROMISE`]: its lag is the age of the oldest record accepted and not yet handled. A scheduled
//! ingestion promises a load every interval: its lag is the time since its last load ended, and a load under way
//! is In progress, whatever it takes.

use crate::ingestion::IngestionFlow;
use crate::ingestion::schedule::{Every, Schedule};
use crate::pipeline::Supervisor;
use crate::store::{Backlog, FlowRecord, FlowState, LeaseStatus, RuntimeStatus, Store, StoreError};
use chrono::{DateTime, Duration, Utc};
use std::fmt;

/// How soon a streaming flow's records are handled when all is well.
pub const STREAMING_PROMISE: Duration = Duration::seconds(60);

/// The shortest promise a schedule makes: a continuous ingestion loads every few seconds, and a load of a large
/// table takes longer than that without being late.
pub const SHORTEST_PROMISE: Duration = Duration::seconds(60);

/// What a flow is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    /// Enabled, and a process runs it.
    Running,
    /// Enabled, and waiting for something outside dynsync (a refused sign-in): nothing is lost meanwhile.
    Paused { why: String },
    /// Enabled, and no process has taken it yet (one starts it within seconds).
    Starting,
    /// Turned off by a user.
    Disabled,
}

impl Activity {
    pub fn of(state: FlowState, lease: Option<&LeaseStatus>) -> Activity {
        match (state, lease) {
            (FlowState::Disabled, _) => Activity::Disabled,
            (FlowState::Enabled, None) => Activity::Starting,
            (FlowState::Enabled, Some(l)) => match l.status {
                RuntimeStatus::Running => Activity::Running,
                RuntimeStatus::Paused => Activity::Paused { why: l.detail.clone() },
            },
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Activity::Running => "Running",
            Activity::Paused { .. } => "Paused",
            Activity::Starting => "Starting",
            Activity::Disabled => "Disabled",
        }
    }
}

/// Whether a flow keeps its schedule's promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeliness {
    OnTime,
    /// Late by more than the promise.
    Delayed,
    /// Late by more than twice the promise.
    Error,
    /// A scheduled load is running.
    InProgress,
    /// Nothing is promised: a flow that is off, or a load that ran once.
    Idle,
}

impl Timeliness {
    /// A lag measured against a promise.
    pub fn of_lag(lag: Duration, promise: Duration) -> Timeliness {
        if lag > promise * 2 {
            Timeliness::Error
        } else if lag > promise {
            Timeliness::Delayed
        } else {
            Timeliness::OnTime
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Timeliness::OnTime => "On time",
            Timeliness::Delayed => "Delayed",
            Timeliness::Error => "Error",
            Timeliness::InProgress => "In progress",
            Timeliness::Idle => "—",
        }
    }

    /// The class the page colours it with.
    pub fn class(self) -> &'static str {
        match self {
            Timeliness::OnTime => "ok",
            Timeliness::Delayed => "warn",
            Timeliness::Error => "bad",
            Timeliness::InProgress | Timeliness::Idle => "idle",
        }
    }
}

/// A flow's lag and how it stands against its promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    pub lag: Duration,
    pub timeliness: Timeliness,
}

impl Lag {
    /// A streaming flow: `oldest` is when its oldest unhandled record was accepted.
    pub fn streaming(enabled: bool, oldest: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Lag {
        let lag = oldest.map_or(Duration::zero(), |t| (now - t).max(Duration::zero()));
        let timeliness = if enabled { Timeliness::of_lag(lag, STREAMING_PROMISE) } else { Timeliness::Idle };
        Lag { lag, timeliness }
    }

    /// A scheduled ingestion: its last load's start and end (`None` while it runs), if it has loaded.
    pub fn scheduled(
        enabled: bool,
        schedule: &Schedule,
        last: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
        now: DateTime<Utc>,
    ) -> Lag {
        let promise = match schedule.every {
            Every::Once => None,
            Every::Interval(s) | Every::Continuous(s) => Some(Duration::seconds(s).max(SHORTEST_PROMISE)),
        };
        match last {
            _ if !enabled => Lag { lag: Duration::zero(), timeliness: Timeliness::Idle },
            Some((started, None)) => Lag { lag: now - started, timeliness: Timeliness::InProgress },
            Some((_, Some(finished))) => {
                let lag = (now - finished).max(Duration::zero());
                Lag { lag, timeliness: promise.map_or(Timeliness::Idle, |p| Timeliness::of_lag(lag, p)) }
            }
            // Never loaded: late once its first load is due and has not started.
            None => {
                let lag = (now - schedule.start).max(Duration::zero());
                Lag { lag, timeliness: Timeliness::of_lag(lag, promise.unwrap_or(SHORTEST_PROMISE)) }
            }
        }
    }
}

/// A flow's records accepted and not handled yet, as its job counts them (none for a job this process lacks).
pub async fn backlog_of(store: &Store, supervisor: &Supervisor, flow: &FlowRecord) -> Result<Backlog, StoreError> {
    match supervisor.job(&flow.job) {
        Some(job) => job.backlog(store, flow.id).await,
        None => Ok(Backlog { records: 0, oldest: None }),
    }
}

/// How far behind a running flow is, and how many of its records wait: a streaming flow by the age of its oldest
/// record not handled yet; a scheduled ingestion by the time since its last load ended (a load under way does not
/// reset it), and not at all when its schedule promises nothing more (a single load). What alerts judge, and the
/// lag chart draws.
pub async fn behind(
    store: &Store,
    supervisor: &Supervisor,
    flow: &FlowRecord,
    now: DateTime<Utc>,
) -> Result<(Duration, u64), StoreError> {
    if flow.job == crate::ingestion::JOB {
        let ingestion = IngestionFlow::try_from(flow)?;
        let last = store.last_finished_load(flow.id).await?.map(|(started, finished)| (started, Some(finished)));
        let lag = Lag::scheduled(true, &ingestion.definition.schedule, last, now);
        return Ok((if lag.timeliness == Timeliness::Idle { Duration::zero() } else { lag.lag }, 0));
    }
    let backlog = backlog_of(store, supervisor, flow).await?;
    Ok((Lag::streaming(true, backlog.oldest, now).lag, backlog.records))
}

/// Samples every enabled flow's lag for the chart of its page (see `store/lag.rs`); a flow whose lag cannot be read
/// now is left for the next sample.
pub async fn sample_lags(store: &Store, supervisor: &Supervisor, now: DateTime<Utc>) -> Result<(), StoreError> {
    for flow in store.all_flows().await?.iter().filter(|f| f.state == FlowState::Enabled) {
        match behind(store, supervisor, flow, now).await {
            Ok((lag, waiting)) => store.record_lag(flow.id, now, lag, waiting).await?,
            Err(e) => tracing::debug!(flow = %flow.id, error = %e, "a flow's lag cannot be read now"),
        }
    }
    Ok(())
}

/// A duration as a person reads it: `42 s`, `3 min`, `5 h 12 min`, `2 d 4 h`.
pub struct Took(pub Duration);

impl fmt::Display for Took {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.num_seconds().max(0);
        match s {
            0..60 => write!(f, "{s} s"),
            60..3_600 => write!(f, "{} min", s / 60),
            3_600..86_400 => write!(f, "{} h {} min", s / 3_600, s % 3_600 / 60),
            _ => write!(f, "{} d {} h", s / 86_400, s % 86_400 / 3_600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn a_streaming_flow_is_delayed_past_its_promise_and_in_error_past_twice_it() {
        let now = at(1_000);
        assert_eq!(Lag::streaming(true, None, now).timeliness, Timeliness::OnTime);
        assert_eq!(Lag::streaming(true, Some(at(990)), now).timeliness, Timeliness::OnTime);
        assert_eq!(Lag::streaming(true, Some(at(900)), now).timeliness, Timeliness::Delayed);
        assert_eq!(Lag::streaming(true, Some(at(700)), now).timeliness, Timeliness::Error);
        assert_eq!(Lag::streaming(true, Some(at(700)), now).lag, Duration::seconds(300));
        assert_eq!(Lag::streaming(false, Some(at(700)), now).timeliness, Timeliness::Idle);
    }

    #[test]
    fn an_hourly_ingestion_is_judged_by_the_time_since_its_last_load_ended() {
        let schedule = Schedule { start: at(0), every: Every::Interval(3_600) };
        let now = at(10_000);
        let finished = |ago: i64| Some((at(0), Some(now - Duration::seconds(ago))));
        assert_eq!(Lag::scheduled(true, &schedule, finished(3_000), now).timeliness, Timeliness::OnTime);
        assert_eq!(Lag::scheduled(true, &schedule, finished(4_000), now).timeliness, Timeliness::Delayed);
        assert_eq!(Lag::scheduled(true, &schedule, finished(8_000), now).timeliness, Timeliness::Error);
        let running = Some((at(9_000), None));
        assert_eq!(Lag::scheduled(true, &schedule, running, now).timeliness, Timeliness::InProgress);
        assert_eq!(Lag::scheduled(false, &schedule, finished(8_000), now).timeliness, Timeliness::Idle);
    }

    #[test]
    fn a_continuous_ingestion_is_given_a_minute_and_a_single_load_promises_nothing_more() {
        let continuous = Schedule { start: at(0), every: Every::Continuous(5) };
        let now = at(1_000);
        let finished = Some((at(0), Some(now - Duration::seconds(30))));
        assert_eq!(Lag::scheduled(true, &continuous, finished, now).timeliness, Timeliness::OnTime);
        let once = Schedule { start: at(0), every: Every::Once };
        let long_ago = Some((at(0), Some(at(10))));
        assert_eq!(Lag::scheduled(true, &once, long_ago, now).timeliness, Timeliness::Idle);
    }

    #[test]
    fn durations_read_as_a_person_says_them() {
        assert_eq!(Took(Duration::seconds(42)).to_string(), "42 s");
        assert_eq!(Took(Duration::seconds(185)).to_string(), "3 min");
        assert_eq!(Took(Duration::seconds(5 * 3_600 + 12 * 60)).to_string(), "5 h 12 min");
        assert_eq!(Took(Duration::seconds(2 * 86_400 + 4 * 3_600)).to_string(), "2 d 4 h");
    }
}
