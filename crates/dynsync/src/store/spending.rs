//! What each process spent of Dataverse's service protection limits, per application user and web server, so
//! that processes writing as the same user share one budget (see `pipeline/budgets.rs`). Each process replaces
//! its own rows every tick and reads the others'; a row is a process's own account of its window when it wrote
//! it, and counts for a window after that: a process that stopped (or crashed) still spent what it spent, and
//! that leaves the server's window a window later. Times are milliseconds since the epoch, from the processes'
//! clocks, as the leases' are.
//!
//! Beside it, the limits 429s stated for each environment (`stated_limits`): the latest statement of each limit,
//! whichever process was told, so that a process learns an environment's limits without being refused first.
//! They hold until a later 429 states them again (Dataverse's limits change rarely, and a 429 restates them).

use super::engine::Arg;
use super::{Result, Store};
use crate::store::ProcessId;
use dataverse::{LimitStatement, StatedLimit};
use std::time::{Duration, SystemTime};

/// One process's spending of one application user's budget on one web server, over its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendingReport {
    /// The environment's URL: an app registration is a user of each environment it is added to.
    pub environment: String,
    /// The app registration's client id (the user name for the password grant).
    pub client_id: String,
    /// The web server's `ARRAffinity` id; `None` for the server no answer named yet.
    pub web_server: Option<String>,
    pub requests: u32,
    pub execution_time: Duration,
}

/// Another process's report, and when it made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedSpending {
    pub report: SpendingReport,
    pub reported_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct SpendingRow {
    environment: String,
    client_id: String,
    web_server: String,
    requests: i64,
    execution_us: i64,
    reported_at: i64,
}

impl From<SpendingRow> for ReportedSpending {
    fn from(row: SpendingRow) -> ReportedSpending {
        ReportedSpending {
            report: SpendingReport {
                environment: row.environment,
                client_id: row.client_id,
                web_server: Some(row.web_server).filter(|s| !s.is_empty()),
                requests: u32::try_from(row.requests.max(0)).unwrap_or(u32::MAX),
                execution_time: Duration::from_micros(u64::try_from(row.execution_us).unwrap_or(0)),
            },
            reported_at_ms: row.reported_at,
        }
    }
}

/// A limit a 429 stated for an environment (its URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentLimit {
    pub environment: String,
    pub stated: StatedLimit,
}

#[derive(sqlx::FromRow)]
struct StatedLimitRow {
    environment: String,
    kind: String,
    limit_value: i64,
    window_s: i64,
    stated_at: i64,
}

const REQUESTS: &str = "requests";
const EXECUTION_TIME: &str = "execution_time";

impl StatedLimitRow {
    /// The limit this row holds; `None` for a kind this version does not know (a later version's) or numbers that
    /// cannot be limits.
    fn limit(self) -> Option<EnvironmentLimit> {
        let window = Duration::from_secs(u64::try_from(self.window_s).ok().filter(|s| *s > 0)?);
        let value = u64::try_from(self.limit_value).ok().filter(|v| *v > 0)?;
        let statement = match self.kind.as_str() {
            REQUESTS => LimitStatement::Requests { limit: u32::try_from(value).ok()?, window },
            EXECUTION_TIME => LimitStatement::ExecutionTime { limit: Duration::from_millis(value), window },
            _ => return None,
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(self.stated_at).ok()?);
        Some(EnvironmentLimit { environment: self.environment, stated: StatedLimit { statement, at } })
    }
}

fn since_epoch_ms(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The statement as a row's kind, value (a count, or milliseconds) and window in seconds.
fn as_row(statement: LimitStatement) -> (&'static str, i64, i64) {
    let seconds = |window: Duration| i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    match statement {
        LimitStatement::Requests { limit, window } => (REQUESTS, i64::from(limit), seconds(window)),
        LimitStatement::ExecutionTime { limit, window } => {
            (EXECUTION_TIME, i64::try_from(limit.as_millis()).unwrap_or(i64::MAX), seconds(window))
        }
    }
}

impl Store {
    /// Writes this process's spending as of `now_ms` and the limits its clients were told, in one transaction,
    /// and forgets every process's spending older than `forget_before_ms` (it no longer counts). A limit replaces
    /// the one stored only if it was stated later.
    pub async fn report_spending(
        &self,
        process: ProcessId,
        now_ms: i64,
        reports: &[SpendingReport],
        stated: &[EnvironmentLimit],
        forget_before_ms: i64,
    ) -> Result<()> {
        let process = process.to_string();
        let mut statements: Vec<(&'static str, Vec<Arg>)> = reports
            .iter()
            .map(|r| {
                let sql = "INSERT INTO budget_spending
                     (process_id, environment, client_id, web_server, requests, execution_us, reported_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (process_id, environment, client_id, web_server) DO UPDATE SET
                       requests = excluded.requests, execution_us = excluded.execution_us,
                       reported_at = excluded.reported_at";
                let execution_us = i64::try_from(r.execution_time.as_micros()).unwrap_or(i64::MAX);
                let args = vec![
                    process.as_str().into(),
                    r.environment.as_str().into(),
                    r.client_id.as_str().into(),
                    r.web_server.as_deref().unwrap_or("").into(),
                    i64::from(r.requests).into(),
                    execution_us.into(),
                    now_ms.into(),
                ];
                (sql, args)
            })
            .collect();
        for limit in stated {
            let (kind, value, window_s) = as_row(limit.stated.statement);
            let sql = "INSERT INTO stated_limits (environment, kind, limit_value, window_s, stated_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (environment, kind) DO UPDATE SET
                   limit_value = excluded.limit_value, window_s = excluded.window_s, stated_at = excluded.stated_at
                 WHERE excluded.stated_at > stated_limits.stated_at";
            let args = vec![
                limit.environment.as_str().into(),
                kind.into(),
                value.into(),
                window_s.into(),
                since_epoch_ms(limit.stated.at).into(),
            ];
            statements.push((sql, args));
        }
        statements.push(("DELETE FROM budget_spending WHERE reported_at < $1", vec![forget_before_ms.into()]));
        self.engine.transaction(None, &statements).await
    }

    /// The latest statement of each limit for each environment, whichever process was told it.
    pub async fn stated_limits(&self) -> Result<Vec<EnvironmentLimit>> {
        let rows: Vec<StatedLimitRow> = self
            .engine
            .fetch_as("SELECT environment, kind, limit_value, window_s, stated_at FROM stated_limits", &[])
            .await?;
        Ok(rows.into_iter().filter_map(StatedLimitRow::limit).collect())
    }

    /// The other processes' reports made since `since_ms`.
    pub async fn others_spending(&self, process: ProcessId, since_ms: i64) -> Result<Vec<ReportedSpending>> {
        let rows: Vec<SpendingRow> = self
            .engine
            .fetch_as(
                "SELECT environment, client_id, web_server, requests, execution_us, reported_at FROM budget_spending
                 WHERE process_id <> $1 AND reported_at >= $2",
                &[process.to_string().into(), since_ms.into()],
            )
            .await?;
        Ok(rows.into_iter().map(ReportedSpending::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[tokio::test]
    async fn a_process_reads_the_others_reports_of_the_window_and_its_own_replace_each_other() {
        for (store, _dir) in crate::store::test_stores().await {
            let environment = format!("https://{}.crm4.dynamics.com/", uuid::Uuid::new_v4().simple());
            let report = |web_server: Option<&str>, requests: u32| SpendingReport {
                environment: environment.clone(),
                client_id: "11111111-2222-3333-4444-555555555555".into(),
                web_server: web_server.map(str::to_string),
                requests,
                execution_time: Duration::from_micros(1_500_250),
            };
            let heard = |rows: Vec<ReportedSpending>| -> BTreeSet<(Option<String>, u32)> {
                rows.into_iter()
                    .filter(|r| r.report.environment == environment)
                    .map(|r| (r.report.web_server, r.report.requests))
                    .collect()
            };
            let (a, b) = (ProcessId::new(), ProcessId::new());
            let now = chrono::Utc::now().timestamp_millis();
            store.report_spending(a, now - 1_000, &[report(Some("s1"), 5)], &[], now - 5_000).await.unwrap();
            store.report_spending(a, now, &[report(Some("s1"), 7), report(None, 1)], &[], now - 5_000).await.unwrap();
            store.report_spending(b, now, &[report(Some("s1"), 3)], &[], now - 5_000).await.unwrap();

            let a_said = store.others_spending(b, now - 5_000).await.unwrap();
            assert_eq!(heard(a_said.clone()), BTreeSet::from([(Some("s1".into()), 7), (None, 1)]), "a's latest");
            let one = a_said.iter().find(|r| r.report.environment == environment).unwrap();
            assert_eq!(one.report.execution_time, Duration::from_micros(1_500_250));
            assert_eq!(one.reported_at_ms, now);
            assert_eq!(
                heard(store.others_spending(a, now - 5_000).await.unwrap()),
                BTreeSet::from([(Some("s1".into()), 3)])
            );
            assert!(heard(store.others_spending(a, now + 1).await.unwrap()).is_empty(), "older than asked for");

            // A window later, b's next report forgets a's rows: a stopped reporting.
            store.report_spending(b, now + 6_000, &[report(Some("s1"), 0)], &[], now + 1_000).await.unwrap();
            assert!(heard(store.others_spending(b, 0).await.unwrap()).is_empty());
            assert_eq!(heard(store.others_spending(a, 0).await.unwrap()), BTreeSet::from([(Some("s1".into()), 0)]));
        }
    }

    #[tokio::test]
    async fn the_latest_statement_of_each_limit_is_kept_per_environment() {
        for (store, _dir) in crate::store::test_stores().await {
            let environment = format!("https://{}.crm4.dynamics.com/", uuid::Uuid::new_v4().simple());
            let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
            let window = Duration::from_secs(10);
            let stated = |statement, ms| EnvironmentLimit {
                environment: environment.clone(),
                stated: StatedLimit { statement, at: at(ms) },
            };
            let requests = |limit| LimitStatement::Requests { limit, window };
            let time = LimitStatement::ExecutionTime { limit: Duration::from_millis(40_500), window };
            let (a, b) = (ProcessId::new(), ProcessId::new());
            let now = chrono::Utc::now().timestamp_millis();
            let ours = |all: Vec<EnvironmentLimit>| -> Vec<EnvironmentLimit> {
                let mut ours: Vec<_> = all.into_iter().filter(|l| l.environment == environment).collect();
                ours.sort_by_key(|l| l.stated.at);
                ours
            };
            store.report_spending(a, now, &[], &[stated(requests(100), 2_000)], now).await.unwrap();
            // An earlier statement, from a process that was told later than it reports: the later one stays.
            store.report_spending(b, now, &[], &[stated(requests(50), 1_000), stated(time, 3_000)], now).await.unwrap();
            assert_eq!(
                ours(store.stated_limits().await.unwrap()),
                [stated(requests(100), 2_000), stated(time, 3_000)],
                "each limit as last stated, the execution time to the millisecond"
            );
            store.report_spending(a, now, &[], &[stated(requests(80), 4_000)], now).await.unwrap();
            assert_eq!(ours(store.stated_limits().await.unwrap()), [stated(time, 3_000), stated(requests(80), 4_000)]);
        }
    }
}
