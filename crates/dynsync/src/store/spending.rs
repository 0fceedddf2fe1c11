//! What each process spent of Dataverse's service protection limits, per application user and web server, so
//! that processes writing as the same user share one budget (see `pipeline/budgets.rs`). Each process replaces
//! its own rows every tick and reads the others'; a row is a process's own account of its window when it wrote
//! it, and counts for a window after that: a process that stopped (or crashed) still spent what it spent, and
//! that leaves the server's window a window later. Times are milliseconds since the epoch, from the processes'
//! clocks, as the leases' are.

use super::engine::Arg;
use super::{Result, Store};
use crate::store::ProcessId;
use std::time::Duration;

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

impl Store {
    /// Writes this process's spending as of `now_ms`, in one transaction, and forgets every process's rows
    /// older than `forget_before_ms` (they no longer count).
    pub async fn report_spending(
        &self,
        process: ProcessId,
        now_ms: i64,
        reports: &[SpendingReport],
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
        statements.push(("DELETE FROM budget_spending WHERE reported_at < $1", vec![forget_before_ms.into()]));
        self.engine.transaction(None, &statements).await
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
            store.report_spending(a, now - 1_000, &[report(Some("s1"), 5)], now - 5_000).await.unwrap();
            store.report_spending(a, now, &[report(Some("s1"), 7), report(None, 1)], now - 5_000).await.unwrap();
            store.report_spending(b, now, &[report(Some("s1"), 3)], now - 5_000).await.unwrap();

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
            store.report_spending(b, now + 6_000, &[report(Some("s1"), 0)], now + 1_000).await.unwrap();
            assert!(heard(store.others_spending(b, 0).await.unwrap()).is_empty());
            assert_eq!(heard(store.others_spending(a, 0).await.unwrap()), BTreeSet::from([(Some("s1".into()), 0)]));
        }
    }
}
