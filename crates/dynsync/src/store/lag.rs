//! A flow's lag over time, for the chart of its page: the largest lag seen in each minute (the age of its oldest
//! waiting record, or for an ingestion the time since its last load ended), sampled by every process that watches
//! flows — several samples of one minute keep the largest — and kept [`LAG_KEPT_DAYS`] days.

use super::{Result, Store};
use crate::ids::FlowId;
use chrono::{DateTime, Duration, Utc};

/// Days of samples kept.
pub const LAG_KEPT_DAYS: i64 = 7;

/// The largest lag of an hour, and how many records waited then at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourLag {
    pub hour: DateTime<Utc>,
    pub lag: Duration,
    pub waiting: u64,
}

#[derive(sqlx::FromRow)]
struct HourRow {
    hour: i64,
    lag_ms: i64,
    waiting: i64,
}

impl Store {
    /// Records a flow's lag as seen at `at`: the minute keeps the largest of its samples.
    pub async fn record_lag(&self, flow: FlowId, at: DateTime<Utc>, lag: Duration, waiting: u64) -> Result<()> {
        let minute = at.timestamp() / 60 * 60_000;
        let (lag_ms, waiting) = (lag.num_milliseconds().max(0), i64::try_from(waiting).unwrap_or(i64::MAX));
        self.engine
            .execute(
                "INSERT INTO lag_samples (flow_id, minute, lag_ms, waiting) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (flow_id, minute) DO UPDATE SET
                   lag_ms = CASE WHEN excluded.lag_ms > lag_samples.lag_ms THEN excluded.lag_ms ELSE lag_samples.lag_ms END,
                   waiting = CASE WHEN excluded.waiting > lag_samples.waiting THEN excluded.waiting ELSE lag_samples.waiting END",
                &[flow.to_string().into(), minute.into(), lag_ms.into(), waiting.into()],
            )
            .await
            .map(|_| ())
    }

    /// A flow's largest lag in each hour since `since`, oldest first.
    pub async fn lag_by_hour(&self, flow: FlowId, since: DateTime<Utc>) -> Result<Vec<HourLag>> {
        let rows: Vec<HourRow> = self
            .engine
            .fetch_as(
                "SELECT minute / 3600000 * 3600000 AS hour, MAX(lag_ms) AS lag_ms, MAX(waiting) AS waiting
                 FROM lag_samples WHERE flow_id = $1 AND minute >= $2 GROUP BY minute / 3600000 ORDER BY hour",
                &[flow.to_string().into(), since.timestamp_millis().into()],
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(HourLag {
                    hour: DateTime::from_timestamp_millis(r.hour)?,
                    lag: Duration::milliseconds(r.lag_ms),
                    waiting: u64::try_from(r.waiting).unwrap_or(0),
                })
            })
            .collect())
    }

    /// Forgets samples older than [`LAG_KEPT_DAYS`].
    pub async fn prune_lag(&self, now: DateTime<Utc>) -> Result<u64> {
        let before = (now - Duration::days(LAG_KEPT_DAYS)).timestamp_millis();
        self.engine.execute("DELETE FROM lag_samples WHERE minute < $1", &[before.into()]).await
    }
}
