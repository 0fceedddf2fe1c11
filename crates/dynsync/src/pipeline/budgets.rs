//! Processes that write through the same application user share its budget under Dataverse's service protection
//! limits. Dataverse counts requests and execution time per user and per web server over a sliding window
//! (6,000 requests and 1,200 s per 300 s), whoever sends them: two `dynsync serve` processes on one store,
//! writing through one connection, spend one budget, and each must hold its requests for what the other spent.
//!
//! Every [`DEFAULT_INTERVAL`], each process writes to the store, per environment, app registration (client id) and
//! web server (the `ARRAffinity` id every client of the environment knows it by), what its clients spent in their
//! window — requests and execution time, the most each held since its last report (`dataverse::Budget::to_report`)
//! — and reads what the other processes wrote in the last window. Each of its clients then counts as spent, beside
//! its own, the others' requests and execution time on the same user and server: the other processes', and this
//! process's other clients of the same user (another connection with the same app registration). The server's
//! own word on execution time (`x-ms-ratelimit-time-remaining-xrm-requests`) still counts; the client takes the
//! larger of the two, never their sum (see `dataverse::budget`).
//!
//! The margin: what another process sends between two ticks is not seen until the next one (half a second, and
//! the store's round trip), nor what it has in flight then (its execution time counts when it ends). Most of it
//! takes the place of what left its window; room that opens in the window is seen by every process at once, so
//! each takes only its part of it (one of the processes reporting, and itself) until the next tick. What remains
//! unseen is absorbed by the 1% of the limits each client keeps in reserve (`dataverse::budget::SHARE`: 60
//! requests of Dynamics' 6,000 a window), and a 429 still pauses the lane for its `Retry-After` as before. A
//! process that stops reporting (stopped, crashed) is counted for a window after its last report: what it spent
//! leaves the server's window by then. A tick that cannot reach the store changes nothing: what each client last
//! heard lapses a window after it heard it.
//!
//! The limits are shared too: each tick writes the limits 429s stated to this process's clients (the latest of
//! each, per environment) and reads what the others were told, and each client takes a statement later than its
//! own. A process that starts, or a client that has not been refused yet, counts against the environment's own
//! limits from the next tick on, rather than against Dynamics 365's defaults until a 429 of its own.

use super::clients::Clients;
use crate::store::{EnvironmentLimit, ProcessId, ReportedSpending, SpendingReport, Store, StoreError};
use dataverse::{Spending, UserSpending};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often a process publishes its spending and reads the others'.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);

/// An application user on a web server of an environment: environment URL, client id, `ARRAffinity` id.
type UserOnServer = (String, String, Option<String>);

/// Shares this process's clients' budgets with the other processes' every `interval`, until dropped.
pub async fn run(store: Store, clients: Arc<Clients>, process: ProcessId, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = share(&store, &clients, process).await {
            tracing::warn!(
                error = %e,
                "could not share the Dataverse budget with the other processes through the store; each client counts \
                 what it last heard of them, for a window, and tries again"
            );
        }
    }
}

fn less(total: Spending, part: Spending) -> Spending {
    Spending {
        requests: total.requests.saturating_sub(part.requests),
        execution_time: total.execution_time.saturating_sub(part.execution_time),
    }
}

/// This process's clients' spending (each client's environment and its own), added up per user and server, with
/// how many clients each sum adds up.
fn added_up<'a>(
    own: impl IntoIterator<Item = (&'a str, &'a [UserSpending])>,
) -> HashMap<UserOnServer, (Spending, u32)> {
    let mut here: HashMap<UserOnServer, (Spending, u32)> = HashMap::new();
    for (environment, spending) in own {
        for s in spending {
            let key = (environment.to_string(), s.client_id.clone(), s.web_server.clone());
            let (sum, clients) = here.entry(key).or_default();
            *sum = *sum + s.spending;
            *clients += 1;
        }
    }
    here
}

/// What a client of `environment` whose own spending is `mine` hears of the others: each other process's report
/// made since `since_ms` (one client each), and this process's other clients of the same users (`here` less its
/// own).
fn heard_by(
    environment: &str,
    mine: &[UserSpending],
    here: &HashMap<UserOnServer, (Spending, u32)>,
    others: &[ReportedSpending],
    since_ms: i64,
) -> Vec<UserSpending> {
    let mut heard: HashMap<(String, Option<String>), (Spending, u32)> = HashMap::new();
    for other in others.iter().filter(|o| o.reported_at_ms >= since_ms && o.report.environment == environment) {
        let r = &other.report;
        let (sum, clients) = heard.entry((r.client_id.clone(), r.web_server.clone())).or_default();
        *sum = *sum + Spending { requests: r.requests, execution_time: r.execution_time };
        *clients += 1;
    }
    for ((e, client_id, web_server), (total, all)) in here {
        if e != environment {
            continue;
        }
        let this_one: Vec<_> =
            mine.iter().filter(|m| &m.client_id == client_id && &m.web_server == web_server).collect();
        let rest = this_one.iter().fold(*total, |rest, m| less(rest, m.spending));
        let other_clients = all.saturating_sub(this_one.len() as u32);
        if other_clients > 0 {
            let (sum, clients) = heard.entry((client_id.clone(), web_server.clone())).or_default();
            *sum = *sum + rest;
            *clients += other_clients;
        }
    }
    heard
        .into_iter()
        .map(|((client_id, web_server), (spending, clients))| UserSpending { client_id, web_server, spending, clients })
        .collect()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One tick: writes what this process's clients spent, reads the others', and gives each client what the others
/// spent of its users' budgets.
pub async fn share(store: &Store, clients: &Clients, process: ProcessId) -> Result<(), StoreError> {
    let clients = clients.all();
    if clients.is_empty() {
        return Ok(());
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let own: Vec<_> = clients
        .into_iter()
        .map(|(_, client)| {
            let environment = client.environment().url();
            let spending = client.spending();
            (client, environment, spending)
        })
        .collect();
    let here = added_up(own.iter().map(|(_, environment, spending)| (environment.as_str(), spending.as_slice())));
    let longest = own.iter().map(|(client, _, _)| client.window()).max().unwrap_or_default();
    let since = now_ms.saturating_sub(millis(longest));
    let reports: Vec<SpendingReport> = here
        .iter()
        .map(|((environment, client_id, web_server), (s, _))| SpendingReport {
            environment: environment.clone(),
            client_id: client_id.clone(),
            web_server: web_server.clone(),
            requests: s.requests,
            execution_time: s.execution_time,
        })
        .collect();
    let stated: Vec<EnvironmentLimit> = own
        .iter()
        .flat_map(|(client, environment, _)| {
            client
                .stated_limits()
                .into_iter()
                .map(|stated| EnvironmentLimit { environment: environment.clone(), stated })
        })
        .collect();
    store.report_spending(process, now_ms, &reports, &stated, since).await?;
    let others = store.others_spending(process, since).await?;
    let limits = store.stated_limits().await?;
    for (client, environment, mine) in &own {
        let told: Vec<_> = limits.iter().filter(|l| &l.environment == environment).map(|l| l.stated).collect();
        client.adopt_limits(&told);
        let since = now_ms.saturating_sub(millis(client.window()));
        client.set_others_spending(&heard_by(environment, mine, &here, &others, since));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTOSO: &str = "https://contoso.crm4.dynamics.com/";

    fn spent(client_id: &str, web_server: &str, requests: u32) -> UserSpending {
        UserSpending {
            client_id: client_id.into(),
            web_server: Some(web_server.into()),
            spending: Spending { requests, execution_time: Duration::from_secs(u64::from(requests)) },
            clients: 1,
        }
    }

    fn reported(environment: &str, client_id: &str, requests: u32, reported_at_ms: i64) -> ReportedSpending {
        let report = SpendingReport {
            environment: environment.into(),
            client_id: client_id.into(),
            web_server: Some("s1".into()),
            requests,
            execution_time: Duration::from_secs(u64::from(requests)),
        };
        ReportedSpending { report, reported_at_ms }
    }

    /// Client id, web server, requests and clients, in that order.
    fn sorted(heard: Vec<UserSpending>) -> Vec<(String, String, u32, u32)> {
        let mut heard: Vec<_> = heard
            .into_iter()
            .map(|h| (h.client_id, h.web_server.unwrap_or_default(), h.spending.requests, h.clients))
            .collect();
        heard.sort();
        heard
    }

    fn s(text: &str) -> String {
        text.to_string()
    }

    #[test]
    fn a_client_hears_the_other_processes_reports_of_its_environment_and_window() {
        let mine = [spent("app", "s1", 4)];
        let here = added_up([(CONTOSO, &mine[..])]);
        let others = [
            reported(CONTOSO, "app", 10, 1_000),
            reported(CONTOSO, "app", 5, 1_500),
            reported(CONTOSO, "other-app", 7, 1_500),
            reported(CONTOSO, "app", 100, 999),
            reported("https://fabrikam.crm.dynamics.com/", "app", 100, 1_500),
        ];
        let heard = heard_by(CONTOSO, &mine, &here, &others, 1_000);
        assert_eq!(
            sorted(heard),
            [(s("app"), s("s1"), 15, 2), (s("other-app"), s("s1"), 7, 1)],
            "two processes of app, one of other-app; not the stale report nor fabrikam's"
        );
        let one = &heard_by(CONTOSO, &mine, &here, &others[..1], 0)[0];
        assert_eq!(one.spending.execution_time, Duration::from_secs(10));
    }

    #[test]
    fn a_client_hears_this_process_s_other_clients_of_the_same_user_but_not_itself() {
        let (first, second) = ([spent("app", "s1", 4)], [spent("app", "s1", 6), spent("app", "s2", 1)]);
        let here = added_up([(CONTOSO, &first[..]), (CONTOSO, &second[..])]);
        assert_eq!(
            sorted(heard_by(CONTOSO, &first, &here, &[], 0)),
            [(s("app"), s("s1"), 6, 1), (s("app"), s("s2"), 1, 1)],
            "the other client's spending on each server"
        );
        assert_eq!(
            sorted(heard_by(CONTOSO, &second, &here, &[], 0)),
            [(s("app"), s("s1"), 4, 1)],
            "nothing on s2 but its own"
        );
        // Alone in the process, a client hears nobody.
        let alone = added_up([(CONTOSO, &first[..])]);
        assert!(heard_by(CONTOSO, &first, &alone, &[], 0).is_empty());
    }
}
