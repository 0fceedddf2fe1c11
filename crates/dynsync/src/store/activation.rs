//! What audience activation keeps: the durable log of accepted profiles, each flow's acknowledged position
//! in it, the hourly runs with their outcomes, and the contacts whose update failed for good (to replay).

use super::engine::Arg;
use super::{Result, Store, StoreError};
use crate::ids::FlowId;
use chrono::{DateTime, Utc};

/// The lock appends to the log take on PostgreSQL, so that sequence numbers commit in order and a reader
/// never moves past one that a slower writer has yet to commit.
const LOG_APPEND_LOCK: i64 = 0x6479_6e73_796e_6301;

/// An accepted profile message, as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub seq: i64,
    pub received_at: DateTime<Utc>,
    pub body: String,
}

/// What one outcome group of a run counts: activated, excluded for a reason, or failed with a code.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeGroup {
    /// `excluded` or `failed`.
    pub outcome: String,
    pub code: String,
    pub message: String,
    pub count: u64,
    /// A few of the identities, for the user to look up.
    pub samples: Vec<String>,
}

/// The counts one acknowledgement adds to a flow's run of the hour.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunTally {
    pub received: u64,
    pub activated: u64,
    pub excluded: u64,
    pub failed: u64,
    pub groups: Vec<OutcomeGroup>,
}

/// A flow's run: one hour of its work.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub flow_id: FlowId,
    pub hour: DateTime<Utc>,
    pub tally: RunTally,
}

/// A contact whose update failed for a reason retrying cannot fix, with the update to replay once it is fixed.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedContact {
    pub contact_id: String,
    pub code: String,
    pub message: String,
    /// The columns that were to be written, as JSON.
    pub patch: String,
    pub failed_at: DateTime<Utc>,
}

/// How far behind a flow is.
#[derive(Debug, Clone, PartialEq)]
pub struct Backlog {
    pub profiles: u64,
    pub oldest: Option<DateTime<Utc>>,
}

fn number(row: &[Option<String>], i: usize) -> Result<i64> {
    row.get(i).and_then(|v| v.as_deref()).unwrap_or("0").parse().map_err(corrupt)
}

fn time(row: &[Option<String>], i: usize) -> Result<DateTime<Utc>> {
    let text = row.get(i).and_then(|v| v.as_deref()).unwrap_or_default();
    DateTime::parse_from_rfc3339(text).map(|t| t.to_utc()).map_err(corrupt)
}

fn text(row: &[Option<String>], i: usize) -> String {
    row.get(i).cloned().flatten().unwrap_or_default()
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { what: "activation record", detail: e.to_string() }
}

/// The hour a moment falls in, as runs are keyed.
pub fn hour_of(moment: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = moment.timestamp() - moment.timestamp().rem_euclid(3600);
    DateTime::from_timestamp(seconds, 0).expect("an hour boundary is a valid time")
}

impl Store {
    /// Appends accepted profile messages to a flow's log; they are durable when this returns.
    pub async fn append_profiles(&self, flow: FlowId, bodies: &[String]) -> Result<()> {
        self.engine.append_log(LOG_APPEND_LOCK, &flow.to_string(), &Utc::now().to_rfc3339(), bodies).await
    }

    /// Up to `limit` entries of a flow's log after sequence number `after`, oldest first. (`ORDER BY` names the
    /// table's column: PostgreSQL would otherwise sort by the selected text of the same name.)
    pub async fn log_after(&self, flow: FlowId, after: i64, limit: usize) -> Result<Vec<LogEntry>> {
        let rows = self
            .engine
            .fetch(
                "SELECT CAST(seq AS TEXT), received_at, body FROM profile_log
                 WHERE inlet = $1 AND seq > CAST($2 AS BIGINT) ORDER BY profile_log.seq LIMIT CAST($3 AS BIGINT)",
                &[flow.to_string().into(), after.to_string().into(), limit.to_string().into()],
            )
            .await?;
        rows.iter().map(|r| Ok(LogEntry { seq: number(r, 0)?, received_at: time(r, 1)?, body: text(r, 2) })).collect()
    }

    /// The last log position a flow acknowledged (0 before its first).
    pub async fn acknowledged(&self, flow: FlowId) -> Result<i64> {
        let rows = self
            .engine
            .fetch("SELECT CAST(acked AS TEXT) FROM flow_progress WHERE flow_id = $1", &[flow.to_string().into()])
            .await?;
        rows.first().map_or(Ok(0), |r| number(r, 0))
    }

    /// Records, as one transaction, that a flow has handled the log up to `acked`: the counts of its run of
    /// the hour, the contacts that failed for good, and those that no longer fail.
    pub async fn acknowledge(
        &self,
        flow: FlowId,
        acked: i64,
        hour: DateTime<Utc>,
        tally: &RunTally,
        failed: &[FailedContact],
        recovered: &[String],
    ) -> Result<()> {
        let flow_id = flow.to_string();
        let hour = hour.to_rfc3339();
        let mut statements: Vec<(&'static str, Vec<Arg>)> = vec![
            (
                "INSERT INTO flow_progress (flow_id, acked) VALUES ($1, CAST($2 AS BIGINT))
                 ON CONFLICT (flow_id) DO UPDATE SET acked = excluded.acked",
                vec![flow_id.as_str().into(), acked.to_string().into()],
            ),
            (
                "INSERT INTO activation_runs (flow_id, hour, received, activated, excluded, failed)
                 VALUES ($1, $2, CAST($3 AS BIGINT), CAST($4 AS BIGINT), CAST($5 AS BIGINT), CAST($6 AS BIGINT))
                 ON CONFLICT (flow_id, hour) DO UPDATE SET
                   received = activation_runs.received + excluded.received,
                   activated = activation_runs.activated + excluded.activated,
                   excluded = activation_runs.excluded + excluded.excluded,
                   failed = activation_runs.failed + excluded.failed",
                vec![
                    flow_id.as_str().into(),
                    hour.as_str().into(),
                    tally.received.to_string().into(),
                    tally.activated.to_string().into(),
                    tally.excluded.to_string().into(),
                    tally.failed.to_string().into(),
                ],
            ),
        ];
        for group in &tally.groups {
            statements.push((
                // Samples are kept to the first few: a run with a million failures lists five of them.
                "INSERT INTO run_outcomes (flow_id, hour, outcome, code, message, count, samples)
                 VALUES ($1, $2, $3, $4, $5, CAST($6 AS BIGINT), $7)
                 ON CONFLICT (flow_id, hour, outcome, code) DO UPDATE SET
                   count = run_outcomes.count + excluded.count,
                   message = excluded.message,
                   samples = CASE WHEN run_outcomes.count < 5 THEN run_outcomes.samples || ' ' || excluded.samples
                             ELSE run_outcomes.samples END",
                vec![
                    flow_id.as_str().into(),
                    hour.as_str().into(),
                    group.outcome.as_str().into(),
                    group.code.as_str().into(),
                    group.message.as_str().into(),
                    group.count.to_string().into(),
                    group.samples.iter().take(5).cloned().collect::<Vec<_>>().join(" ").into(),
                ],
            ));
        }
        for f in failed {
            statements.push((
                "INSERT INTO failed_contacts (flow_id, contact_id, code, message, patch, failed_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (flow_id, contact_id) DO UPDATE SET code = excluded.code, message = excluded.message,
                   patch = excluded.patch, failed_at = excluded.failed_at",
                vec![
                    flow_id.as_str().into(),
                    f.contact_id.as_str().into(),
                    f.code.as_str().into(),
                    f.message.as_str().into(),
                    f.patch.as_str().into(),
                    f.failed_at.to_rfc3339().into(),
                ],
            ));
        }
        for contact in recovered {
            statements.push((
                "DELETE FROM failed_contacts WHERE flow_id = $1 AND contact_id = $2",
                vec![flow_id.as_str().into(), contact.as_str().into()],
            ));
        }
        self.engine.transaction(None, &statements).await
    }

    /// A flow's runs, newest first, with their outcome groups.
    pub async fn runs(&self, flow: FlowId) -> Result<Vec<RunRecord>> {
        let flow_id = flow.to_string();
        let rows = self
            .engine
            .fetch(
                "SELECT hour, CAST(received AS TEXT), CAST(activated AS TEXT), CAST(excluded AS TEXT), CAST(failed AS TEXT)
                 FROM activation_runs WHERE flow_id = $1 ORDER BY hour DESC",
                &[flow_id.as_str().into()],
            )
            .await?;
        let groups = self
            .engine
            .fetch(
                "SELECT hour, outcome, code, message, CAST(count AS TEXT), samples FROM run_outcomes
                 WHERE flow_id = $1 ORDER BY hour DESC, run_outcomes.count DESC",
                &[flow_id.as_str().into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let hour = text(r, 0);
                let groups = groups
                    .iter()
                    .filter(|g| text(g, 0) == hour)
                    .map(|g| {
                        Ok(OutcomeGroup {
                            outcome: text(g, 1),
                            code: text(g, 2),
                            message: text(g, 3),
                            count: number(g, 4)? as u64,
                            samples: text(g, 5).split_whitespace().map(str::to_string).collect(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(RunRecord {
                    flow_id: flow,
                    hour: time(r, 0)?,
                    tally: RunTally {
                        received: number(r, 1)? as u64,
                        activated: number(r, 2)? as u64,
                        excluded: number(r, 3)? as u64,
                        failed: number(r, 4)? as u64,
                        groups,
                    },
                })
            })
            .collect()
    }

    /// The contacts of a flow whose update failed for good, to show or to replay.
    pub async fn failed_contacts(&self, flow: FlowId) -> Result<Vec<FailedContact>> {
        let rows = self
            .engine
            .fetch(
                "SELECT contact_id, code, message, patch, failed_at FROM failed_contacts WHERE flow_id = $1
                 ORDER BY failed_at, contact_id",
                &[flow.to_string().into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(FailedContact {
                    contact_id: text(r, 0),
                    code: text(r, 1),
                    message: text(r, 2),
                    patch: text(r, 3),
                    failed_at: time(r, 4)?,
                })
            })
            .collect()
    }

    /// How many accepted profiles a flow has yet to acknowledge, and when the oldest arrived.
    pub async fn backlog(&self, flow: FlowId) -> Result<Backlog> {
        let acked = self.acknowledged(flow).await?;
        let rows = self
            .engine
            .fetch(
                "SELECT CAST(COUNT(*) AS TEXT), MIN(received_at) FROM profile_log
                 WHERE inlet = $1 AND seq > CAST($2 AS BIGINT)",
                &[flow.to_string().into(), acked.to_string().into()],
            )
            .await?;
        let row = rows.first().cloned().unwrap_or_default();
        let oldest = match row.get(1).cloned().flatten() {
            Some(t) => Some(DateTime::parse_from_rfc3339(&t).map_err(corrupt)?.to_utc()),
            None => None,
        };
        Ok(Backlog { profiles: number(&row, 0)? as u64, oldest })
    }
}
