//! What a flow's acknowledgements leave behind: its cursor, its runs (one an hour, with each record's outcome
//! counted once) and the records that failed for good, with the write to replay. An acknowledgement writes all
//! of them in one transaction, fenced by the owner's lease: a process that lost a flow moves nothing.

use super::engine::{Arg, Guard};
use super::{FlowState, Lease, Result, Store, StoreError, timestamp};
use crate::ids::FlowId;
use crate::text::clip;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// What happened to a record, or a note about one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Written to the destination (grouped as `created` or `updated` when the sink can tell).
    Written,
    /// Left out on purpose (no identity, in no mapped audience…): nothing to retry.
    Excluded,
    /// Refused by the destination for a reason retrying cannot fix; kept to replay.
    Failed,
    /// Written, with something left out of it (a value too long for its column). Not an outcome of its own: a
    /// noted record is also written.
    Noted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Written => "written",
            Outcome::Excluded => "excluded",
            Outcome::Failed => "failed",
            Outcome::Noted => "noted",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = StoreError;
    fn from_str(text: &str) -> Result<Outcome> {
        Ok(match text {
            "written" => Outcome::Written,
            "excluded" => Outcome::Excluded,
            "failed" => Outcome::Failed,
            "noted" => Outcome::Noted,
            other => return Err(StoreError::Corrupt { what: "run outcome", detail: other.to_string() }),
        })
    }
}

/// Records of one outcome and one reason in a run.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeGroup {
    pub outcome: Outcome,
    pub code: String,
    pub message: String,
    pub count: u64,
    /// A few of the records' identities, for the user to look up.
    pub samples: Vec<String>,
}

/// Samples kept per outcome group: a run with a million failures lists five of them.
pub const SAMPLES: usize = 5;

/// The longest sample kept: a record's identity is an id, and one sent a megabyte long is shown cut.
pub const MAX_SAMPLE_CHARS: usize = 128;

/// The longest reason kept for an outcome group.
pub const MAX_MESSAGE_CHARS: usize = 1_000;

/// The counts one acknowledgement adds to a flow's run of the hour. Every record received has exactly one
/// outcome: `received == written + excluded + failed`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunTally {
    pub received: u64,
    pub written: u64,
    pub excluded: u64,
    pub failed: u64,
    pub groups: Vec<OutcomeGroup>,
}

impl RunTally {
    /// Counts `records` records of one outcome, grouped by reason, keeping a few identities as samples.
    pub fn count(&mut self, outcome: Outcome, code: &str, message: &str, identity: &str, records: u64) {
        match outcome {
            Outcome::Written => self.written += records,
            Outcome::Excluded => self.excluded += records,
            Outcome::Failed => self.failed += records,
            Outcome::Noted => {}
        }
        // A plain write is counted, not grouped; created and updated records are grouped by that code.
        if outcome == Outcome::Written && code.is_empty() {
            return;
        }
        // Samples are kept apart by spaces, so an identity keeps none. Only the few samples kept are clipped.
        let sample = || clip(identity, MAX_SAMPLE_CHARS).replace(char::is_whitespace, "_");
        match self.groups.iter_mut().find(|g| g.outcome == outcome && g.code == code) {
            Some(g) => {
                g.count += records;
                if g.samples.len() < SAMPLES {
                    g.samples.push(sample());
                }
            }
            None => self.groups.push(OutcomeGroup {
                outcome,
                code: code.to_string(),
                message: clip(message, MAX_MESSAGE_CHARS).into_owned(),
                count: records,
                samples: vec![sample()],
            }),
        }
    }

    /// Whether every record received has one outcome.
    pub fn is_balanced(&self) -> bool {
        self.received == self.written + self.excluded + self.failed
    }
}

/// A flow's run: one hour of its work.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub flow_id: FlowId,
    pub hour: DateTime<Utc>,
    pub tally: RunTally,
}

/// A record the destination refused for a reason retrying cannot fix, with the write to replay once it is fixed.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedRecord {
    /// The record's key at the destination (a contact's id).
    pub key: String,
    pub code: String,
    pub message: String,
    /// The write, as JSON.
    pub payload: String,
    pub failed_at: DateTime<Utc>,
}

/// A failed record that no longer fails, with the kept write that was read: it is removed only if that write
/// is still the one kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    pub key: String,
    pub payload: String,
}

/// All of a flow's runs added up.
#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow)]
pub struct FlowTotals {
    pub flow_id: String,
    pub received: i64,
    pub written: i64,
    pub excluded: i64,
    pub failed: i64,
}

/// What one acknowledgement records, as one transaction.
pub struct Acknowledgement<'a> {
    pub flow: FlowId,
    /// The owner's lease, checked first; `None` for a replay the user asked for, which moves no cursor.
    pub lease: Option<&'a Lease>,
    /// The flow's new cursor; `None` leaves it where it is.
    pub cursor: Option<&'a str>,
    pub hour: DateTime<Utc>,
    pub tally: &'a RunTally,
    pub failed: &'a [FailedRecord],
    /// Failed records whose write has now gone through: they leave the failed list.
    pub recovered: &'a [Recovered],
    /// Failed records a replay sent again: each is moved within the run it failed in, never counted twice.
    pub replayed: &'a [Replayed],
}

/// A failed record sent again by a replay. It was received and counted failed in the run of `hour`; a replay
/// receives nothing new, so it moves the record there: to written when it went through, or to its new reason
/// when it failed again.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    pub hour: DateTime<Utc>,
    /// The reason it was counted failed under.
    pub code: String,
    pub outcome: Outcome,
    /// The reason it is counted under now; for a written record, how it was written (`replayed` when the job
    /// tells no more).
    pub now_code: String,
    pub now_message: String,
}

/// The code a record written by a replay is grouped under, when the job's write says nothing more.
pub const REPLAYED: &str = "replayed";

#[derive(sqlx::FromRow)]
struct RunRow {
    hour: String,
    received: i64,
    written: i64,
    excluded: i64,
    failed: i64,
}

#[derive(sqlx::FromRow)]
struct GroupRow {
    hour: String,
    outcome: String,
    code: String,
    message: String,
    count: i64,
    samples: String,
}

#[derive(sqlx::FromRow)]
struct FailedRow {
    record_key: String,
    code: String,
    message: String,
    payload: String,
    failed_at: String,
}

#[derive(sqlx::FromRow)]
struct CursorRow {
    cursor: String,
}

/// The hour a moment falls in, as runs are keyed.
pub fn hour_of(moment: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = moment.timestamp() - moment.timestamp().rem_euclid(3600);
    DateTime::from_timestamp(seconds, 0).expect("an hour boundary is a valid time")
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt { what: "run", detail }
}

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

impl Store {
    /// Where a flow's source stands: what it acknowledged last (`None` before its first acknowledgement).
    pub async fn cursor(&self, flow: FlowId) -> Result<Option<String>> {
        let rows: Vec<CursorRow> = self
            .engine
            .fetch_as("SELECT cursor FROM flow_cursors WHERE flow_id = $1", &[flow.to_string().into()])
            .await?;
        Ok(rows.into_iter().next().map(|r| r.cursor))
    }

    /// Records an acknowledgement: the flow's cursor, the counts of its run of the hour, the records that failed
    /// for good and those that no longer fail — all of it, or nothing when the lease is no longer the owner's.
    pub async fn acknowledge(&self, ack: &Acknowledgement<'_>) -> Result<()> {
        debug_assert!(ack.tally.is_balanced(), "an acknowledgement gives each record one outcome: {:?}", ack.tally);
        let flow_id = ack.flow.to_string();
        let hour = ack.hour.to_rfc3339();
        // The owner's lease, on a flow not disabled since: once a disable has committed, no acknowledgement moves
        // the flow's cursor, so what its inlet accepted afterwards waits for it (a deleted flow has no lease left).
        let guard = ack.lease.map(|lease| Guard {
            sql: "UPDATE flow_leases SET generation = generation WHERE flow_id = $1 AND owner = $2 AND generation = $3
                  AND NOT EXISTS (SELECT 1 FROM flows WHERE flows.id = $1 AND flows.state <> $4)",
            args: vec![
                flow_id.as_str().into(),
                lease.owner.to_string().into(),
                lease.generation.into(),
                FlowState::Enabled.as_str().into(),
            ],
        });
        let mut statements: Vec<(&'static str, Vec<Arg>)> = Vec::new();
        if let Some(cursor) = ack.cursor {
            statements.push((
                "INSERT INTO flow_cursors (flow_id, cursor) VALUES ($1, $2)
                 ON CONFLICT (flow_id) DO UPDATE SET cursor = excluded.cursor",
                vec![flow_id.as_str().into(), cursor.into()],
            ));
        }
        let t = ack.tally;
        if t.received > 0 {
            statements.push((
                "INSERT INTO runs (flow_id, hour, received, written, excluded, failed) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (flow_id, hour) DO UPDATE SET
               received = runs.received + excluded.received, written = runs.written + excluded.written,
               excluded = runs.excluded + excluded.excluded, failed = runs.failed + excluded.failed",
                vec![
                    flow_id.as_str().into(),
                    hour.as_str().into(),
                    (t.received as i64).into(),
                    (t.written as i64).into(),
                    (t.excluded as i64).into(),
                    (t.failed as i64).into(),
                ],
            ));
            for group in &t.groups {
                statements.push((
                    "INSERT INTO run_outcomes (flow_id, hour, outcome, code, message, count, samples)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
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
                        (group.count as i64).into(),
                        group.samples.iter().take(SAMPLES).cloned().collect::<Vec<_>>().join(" ").into(),
                    ],
                ));
            }
        }
        for r in ack.replayed {
            let hour = r.hour.to_rfc3339();
            if r.outcome == Outcome::Written {
                statements.push((
                    "UPDATE runs SET failed = failed - 1, written = written + 1 WHERE flow_id = $1 AND hour = $2",
                    vec![flow_id.as_str().into(), hour.as_str().into()],
                ));
            } else if r.now_code == r.code {
                continue;
            }
            statements.push((
                "UPDATE run_outcomes SET count = count - 1
                 WHERE flow_id = $1 AND hour = $2 AND outcome = $3 AND code = $4",
                vec![
                    flow_id.as_str().into(),
                    hour.as_str().into(),
                    Outcome::Failed.as_str().into(),
                    r.code.as_str().into(),
                ],
            ));
            statements.push((
                "DELETE FROM run_outcomes WHERE flow_id = $1 AND hour = $2 AND outcome = $3 AND code = $4 AND count <= 0",
                vec![flow_id.as_str().into(), hour.as_str().into(), Outcome::Failed.as_str().into(), r.code.as_str().into()],
            ));
            statements.push((
                "INSERT INTO run_outcomes (flow_id, hour, outcome, code, message, count, samples)
                 VALUES ($1, $2, $3, $4, $5, 1, '')
                 ON CONFLICT (flow_id, hour, outcome, code) DO UPDATE SET count = run_outcomes.count + 1",
                vec![
                    flow_id.as_str().into(),
                    hour.as_str().into(),
                    r.outcome.as_str().into(),
                    r.now_code.as_str().into(),
                    r.now_message.as_str().into(),
                ],
            ));
        }
        for f in ack.failed {
            statements.push((
                "INSERT INTO failed_records (flow_id, record_key, code, message, payload, failed_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (flow_id, record_key) DO UPDATE SET code = excluded.code, message = excluded.message,
                   payload = excluded.payload, failed_at = excluded.failed_at",
                vec![
                    flow_id.as_str().into(),
                    f.key.as_str().into(),
                    f.code.as_str().into(),
                    f.message.as_str().into(),
                    f.payload.as_str().into(),
                    f.failed_at.to_rfc3339().into(),
                ],
            ));
        }
        for r in ack.recovered {
            statements.push((
                "DELETE FROM failed_records WHERE flow_id = $1 AND record_key = $2 AND payload = $3",
                vec![flow_id.as_str().into(), r.key.as_str().into(), r.payload.as_str().into()],
            ));
        }
        self.engine.transaction(guard.as_ref(), &statements).await
    }

    /// A flow's runs, newest first, with their outcome groups.
    pub async fn runs(&self, flow: FlowId) -> Result<Vec<RunRecord>> {
        self.newest_runs(flow, i64::MAX).await
    }

    /// A flow's newest `limit` runs, newest first, with their outcome groups: two queries, however many runs the
    /// flow has kept.
    pub async fn newest_runs(&self, flow: FlowId, limit: i64) -> Result<Vec<RunRecord>> {
        let flow_id = flow.to_string();
        let runs: Vec<RunRow> = self
            .engine
            .fetch_as(
                "SELECT hour, received, written, excluded, failed FROM runs WHERE flow_id = $1 ORDER BY hour DESC
                 LIMIT $2",
                &[flow_id.as_str().into(), limit.into()],
            )
            .await?;
        let Some(oldest) = runs.last().map(|r| r.hour.clone()) else { return Ok(Vec::new()) };
        let rows: Vec<GroupRow> = self
            .engine
            .fetch_as(
                "SELECT hour, outcome, code, message, count, samples FROM run_outcomes
                 WHERE flow_id = $1 AND hour >= $2 ORDER BY hour DESC, count DESC",
                &[flow_id.as_str().into(), oldest.into()],
            )
            .await?;
        let mut groups: HashMap<String, Vec<OutcomeGroup>> = HashMap::new();
        for g in rows {
            groups.entry(g.hour).or_default().push(OutcomeGroup {
                outcome: g.outcome.parse()?,
                code: g.code,
                message: g.message,
                count: count(g.count),
                samples: g.samples.split_whitespace().map(str::to_string).collect(),
            });
        }
        runs.into_iter()
            .map(|r| {
                Ok(RunRecord {
                    flow_id: flow,
                    hour: timestamp(&r.hour).map_err(corrupt)?,
                    tally: RunTally {
                        received: count(r.received),
                        written: count(r.written),
                        excluded: count(r.excluded),
                        failed: count(r.failed),
                        groups: groups.remove(&r.hour).unwrap_or_default(),
                    },
                })
            })
            .collect()
    }

    /// Every flow's runs added up, for metrics.
    pub async fn flow_totals(&self) -> Result<Vec<FlowTotals>> {
        self.engine
            .fetch_as(
                "SELECT flow_id, CAST(SUM(received) AS BIGINT) AS received, CAST(SUM(written) AS BIGINT) AS written,
                   CAST(SUM(excluded) AS BIGINT) AS excluded, CAST(SUM(failed) AS BIGINT) AS failed
                 FROM runs GROUP BY flow_id",
                &[],
            )
            .await
    }

    /// The records of a flow that failed for good, to show or to replay.
    pub async fn failed_records(&self, flow: FlowId) -> Result<Vec<FailedRecord>> {
        let rows: Vec<FailedRow> = self
            .engine
            .fetch_as(
                "SELECT record_key, code, message, payload, failed_at FROM failed_records WHERE flow_id = $1
                 ORDER BY failed_at, record_key",
                &[flow.to_string().into()],
            )
            .await?;
        failed(rows)
    }

    /// The newest `limit` of a flow's failed records, newest first, and how many it has: what a page shows.
    pub async fn newest_failed_records(&self, flow: FlowId, limit: i64) -> Result<(Vec<FailedRecord>, u64)> {
        #[derive(sqlx::FromRow)]
        struct Count {
            n: i64,
        }
        let flow_id = flow.to_string();
        let rows: Vec<FailedRow> = self
            .engine
            .fetch_as(
                "SELECT record_key, code, message, payload, failed_at FROM failed_records WHERE flow_id = $1
                 ORDER BY failed_at DESC, record_key LIMIT $2",
                &[flow_id.as_str().into(), limit.into()],
            )
            .await?;
        let counted: Vec<Count> = self
            .engine
            .fetch_as("SELECT COUNT(*) AS n FROM failed_records WHERE flow_id = $1", &[flow_id.as_str().into()])
            .await?;
        Ok((failed(rows)?, counted.first().map_or(0, |c| count(c.n))))
    }
}

fn failed(rows: Vec<FailedRow>) -> Result<Vec<FailedRecord>> {
    rows.into_iter()
        .map(|r| {
            Ok(FailedRecord {
                key: r.record_key,
                code: r.code,
                message: r.message,
                payload: r.payload,
                failed_at: timestamp(&r.failed_at).map_err(corrupt)?,
            })
        })
        .collect()
}
