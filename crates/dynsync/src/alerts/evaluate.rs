//! The evaluation: every few seconds, every enabled flow that has rules is measured — its run of the current hour
//! and, when a lag rule asks for it, how far behind it is — and each rule whose alert changes is recorded with its
//! notices, to be sent by [`deliver`](super::deliver).
//!
//! Why this shape: it must stay cheap however many flows there are, so a tick reads every flow's rules, the flows
//! and the open alerts in three queries, then at most a few per flow with rules (one for its run, one or two for
//! its lag). Several processes may evaluate the same rules on one PostgreSQL: each records a change only if the
//! alert's state is still the one it read ([`Store::record_alert_change`]), so an alert opens once, whichever
//! process sees it first. A disabled flow is not evaluated: its alerts stay as they were until it runs again.

use super::rules::{Condition, Figures, Transition, transition};
use super::wire::{AlertNotice, AlertRule, AlertStatus, ChannelKind};
use crate::ids::FlowId;
use crate::pipeline::Supervisor;
use crate::store::{AlertChange, FlowRecord, FlowState, NewAlertDelivery, Store, StoreError, hour_of};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

/// How often every enabled flow's lag is sampled for its chart (or six evaluations, when they come faster).
const SAMPLE_EVERY: Duration = Duration::from_secs(60);

/// How often the alerts of deleted flows are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// What one evaluation changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evaluated {
    /// Flows whose rules were measured.
    pub flows: usize,
    /// Alerts this process opened, and resolved.
    pub opened: usize,
    pub resolved: usize,
}

/// An email to send, as a delivery keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailMessage {
    pub subject: String,
    pub body: String,
    pub recipients: Vec<String>,
}

/// Evaluates every enabled flow's rules every `every`, ringing `wake` when it recorded a change, and samples every
/// enabled flow's lag once a minute, until stopped.
pub async fn evaluate_every(store: Store, supervisor: Arc<Supervisor>, every: Duration, wake: Arc<Notify>) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_sweep, mut last_sample): (Option<tokio::time::Instant>, Option<tokio::time::Instant>) = (None, None);
    loop {
        ticks.tick().await;
        // The lag chart has a point a minute: one sample a minute is all it needs.
        if last_sample.is_none_or(|at| at.elapsed() >= SAMPLE_EVERY.min(every * 6)) {
            last_sample = Some(tokio::time::Instant::now());
            if let Err(e) = crate::health::sample_lags(&store, &supervisor, Utc::now()).await {
                tracing::warn!(error = %e, "the flows' lag cannot be sampled; trying again");
            }
        }
        match evaluate_once(&store, &supervisor, Utc::now()).await {
            Ok(done) if done.opened + done.resolved > 0 => wake.notify_one(),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the flows' alerts cannot be evaluated; trying again"),
        }
        if last_sweep.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
            last_sweep = Some(tokio::time::Instant::now());
            if let Err(e) = store.prune_lag(Utc::now()).await {
                tracing::warn!(error = %e, "old lag samples cannot be pruned; trying again later");
            }
            if let Err(e) = store.forget_alerts_of_deleted_flows().await {
                tracing::warn!(error = %e, "the alerts of deleted flows cannot be forgotten; trying again later");
            }
        }
    }
}

/// Measures every enabled flow's rules once, at `now`, and records the alerts that open or resolve. A flow whose
/// figures cannot be read is skipped (and said in the log); the others are still evaluated.
pub async fn evaluate_once(
    store: &Store,
    supervisor: &Supervisor,
    now: DateTime<Utc>,
) -> Result<Evaluated, StoreError> {
    let configured = store.all_alert_rules().await?;
    let mut done = Evaluated::default();
    if configured.iter().all(|c| c.rules == "[]") {
        return Ok(done);
    }
    let flows: HashMap<FlowId, FlowRecord> = store.all_flows().await?.into_iter().map(|f| (f.id, f)).collect();
    let open: HashSet<(FlowId, String)> = store.open_alerts().await?.into_iter().collect();
    for stored in configured {
        let Some(flow) = flows.get(&stored.flow).filter(|f| f.state == FlowState::Enabled) else { continue };
        let rules: Vec<AlertRule> = match serde_json::from_str(&stored.rules) {
            Ok(rules) => rules,
            Err(e) => {
                tracing::warn!(flow = %flow.id, error = %e, "a flow's alert rules cannot be read; were they written by a newer dynsync?");
                continue;
            }
        };
        let rules: Vec<(Condition, AlertRule)> =
            rules.into_iter().filter_map(|r| Condition::of(&r).map(|c| (c, r))).collect();
        if rules.is_empty() {
            continue;
        }
        let needs_lag = rules.iter().any(|(c, _)| c.needs_lag());
        let figures = match figures(store, supervisor, flow, needs_lag, now).await {
            Ok(figures) => figures,
            Err(e) => {
                tracing::warn!(flow = %flow.id, error = %e, "a flow's figures cannot be read to evaluate its alerts");
                continue;
            }
        };
        done.flows += 1;
        for (condition, rule) in &rules {
            let id = condition.id();
            let was_open = open.contains(&(flow.id, id.clone()));
            let opens = match transition(was_open, condition.measure(&figures).holds) {
                Transition::Unchanged => continue,
                Transition::Open => true,
                Transition::Resolve => false,
            };
            match record(store, flow, condition, rule, &figures, opens, now).await {
                Ok(true) if opens => done.opened += 1,
                Ok(true) => done.resolved += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(flow = %flow.id, rule = %id, error = %e, "an alert's change cannot be recorded")
                }
            }
        }
    }
    Ok(done)
}

/// What a flow's rules are measured on.
async fn figures(
    store: &Store,
    supervisor: &Supervisor,
    flow: &FlowRecord,
    needs_lag: bool,
    now: DateTime<Utc>,
) -> Result<Figures, StoreError> {
    let run = store.run_counts(flow.id, hour_of(now)).await?.unwrap_or_default();
    let lag_seconds = match needs_lag {
        true => crate::health::behind(store, supervisor, flow, now).await?.0.num_seconds().max(0) as u64,
        false => 0,
    };
    Ok(Figures {
        received: run.received.max(0) as u64,
        excluded: run.excluded.max(0) as u64,
        failed: run.failed.max(0) as u64,
        lag_seconds,
    })
}

/// Records an alert's opening or resolution with a notice for each of the rule's channels; `false` when another
/// process recorded it first.
async fn record(
    store: &Store,
    flow: &FlowRecord,
    condition: &Condition,
    rule: &AlertRule,
    figures: &Figures,
    opens: bool,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let event = Uuid::new_v4();
    let notice = AlertNotice {
        id: event,
        status: if opens { AlertStatus::Opened } else { AlertStatus::Resolved },
        flow_id: flow.id,
        flow_name: flow.name.clone(),
        sandbox: flow.sandbox.to_string(),
        rule_id: condition.id(),
        kind: condition.kind(),
        threshold: condition.threshold(),
        measured: condition.measure(figures).value,
        unit: condition.unit(),
        summary: condition.summary(figures),
        at: now,
    };
    let body = serde_json::to_string(&notice).expect("a notice serializes");
    let mut deliveries = Vec::new();
    if let Some(url) = &rule.channels.webhook_url {
        deliveries.push(NewAlertDelivery {
            id: Uuid::new_v4().to_string(),
            channel: ChannelKind::Webhook.as_str().to_string(),
            target: url.clone(),
            payload: body.clone(),
        });
    }
    if !rule.channels.emails.is_empty() {
        let email = email(&notice, &rule.channels.emails);
        deliveries.push(NewAlertDelivery {
            id: Uuid::new_v4().to_string(),
            channel: ChannelKind::Email.as_str().to_string(),
            target: rule.channels.emails.join(", "),
            payload: serde_json::to_string(&email).expect("an email serializes"),
        });
    }
    let event = event.to_string();
    let recorded = store
        .record_alert_change(&AlertChange {
            flow: flow.id,
            rule_id: &notice.rule_id,
            opens,
            event_id: &event,
            at: now,
            notice: &body,
            deliveries: &deliveries,
        })
        .await?;
    if recorded {
        tracing::info!(flow = %flow.id, rule = %notice.rule_id, status = ?notice.status, "{}", notice.summary);
    }
    Ok(recorded)
}

/// The email of a notice: a subject that says which flow and what, and a body with the figures.
pub fn email(notice: &AlertNotice, recipients: &[String]) -> EmailMessage {
    let what = match notice.status {
        AlertStatus::Opened => "Alert",
        AlertStatus::Resolved => "Resolved",
    };
    let subject = format!("[dynsync] {what}: {} — {}", notice.flow_name.trim(), notice.summary);
    let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut body = match notice.status {
        AlertStatus::Opened => format!("An alert opened on the flow \"{}\".\n\n", notice.flow_name.trim()),
        AlertStatus::Resolved => format!("The alert on the flow \"{}\" is resolved.\n\n", notice.flow_name.trim()),
    };
    body += &format!("{}.\n\n", notice.summary);
    body += &format!("Rule: {} ({})\n", notice.rule_id, notice.kind);
    body += &format!("When: {}\n", notice.at.to_rfc3339());
    body += &format!("Flow: {} in sandbox {}\n", notice.flow_id, notice.sandbox);
    body += &format!("Alert event: {}\n", notice.id);
    body +=
        "\nThe flow's runs and failed records are in dynsync's dashboard and at GET /runs?property=flowId==<flow>.\n";
    EmailMessage { subject, body, recipients: recipients.to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::wire::{AlertKind, MeasureUnit};

    #[test]
    fn an_email_says_which_flow_and_what_in_its_subject_and_every_figure_in_its_body() {
        let notice = AlertNotice {
            id: Uuid::nil(),
            status: AlertStatus::Opened,
            flow_id: FlowId::new(),
            flow_name: "Loyalty\naudiences".into(),
            sandbox: "prod".into(),
            rule_id: "failure".into(),
            kind: AlertKind::Failure,
            threshold: None,
            measured: 2.0,
            unit: MeasureUnit::Records,
            summary: "2 records failed in this hour's run".into(),
            at: Utc::now(),
        };
        let email = email(&notice, &["ops@example.com".into()]);
        assert_eq!(email.subject, "[dynsync] Alert: Loyalty audiences — 2 records failed in this hour's run");
        for part in ["Rule: failure (failure)", "sandbox prod", &notice.flow_id.to_string()] {
            assert!(email.body.contains(part), "{part:?} in {}", email.body);
        }
        let resolved = super::email(&AlertNotice { status: AlertStatus::Resolved, ..notice }, &[]);
        assert!(resolved.subject.starts_with("[dynsync] Resolved: "), "{}", resolved.subject);
    }
}
