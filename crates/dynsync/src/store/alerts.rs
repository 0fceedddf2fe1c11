//! What alerts on flows leave in the store: each flow's rules (a JSON document the alerts module writes, and the
//! webhook's signing secret, sealed), whether each rule's alert is open, the history of openings and resolutions,
//! and the deliveries of their notices until each channel took them.
//!
//! Why here: several processes on one PostgreSQL evaluate the same rules, and an alert must open once, not once per
//! process. A change is recorded in one transaction whose first statement is a conditional write of the rule's
//! state (open only if closed, close only if open): the process whose write changed the row made the change, and
//! only it records the event and queues its deliveries — with the event, so that a crash never leaves a change
//! without its notices. Deliveries are claimed for a while before they are sent, as the outbox's messages are, so
//! that two processes never send one at once; they are kept in a table of their own because the outbox's sender
//! takes every message it holds for a lead's notification. The store knows no rule: it keeps text.

use super::engine::{Arg, Guard};
use super::{Result, Store, StoreError, timestamp};
use crate::ids::{FlowId, Sandbox};
use crate::secrets::Secret;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// The openings and resolutions kept per flow, newest first; older ones are dropped with their deliveries.
pub const ALERT_EVENTS_KEPT: i64 = 200;

/// A flow's alert rules as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRules {
    pub flow: FlowId,
    pub sandbox: Sandbox,
    /// The rules, as the alerts module wrote them (JSON).
    pub rules: String,
    /// Whether a signing secret is kept for the flow's webhooks (the secret itself is read only to sign).
    pub has_signing_secret: bool,
    pub updated_at: DateTime<Utc>,
}

/// A notice to send for an alert's change, on one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlertDelivery {
    pub id: String,
    /// `webhook` or `email`.
    pub channel: String,
    /// The webhook's URL, or the recipients.
    pub target: String,
    /// What is sent, as the alerts module wrote it.
    pub payload: String,
}

/// An alert that opens or resolves, with its notices.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange<'a> {
    pub flow: FlowId,
    pub rule_id: &'a str,
    /// True when the alert opens, false when it resolves.
    pub opens: bool,
    pub event_id: &'a str,
    pub at: DateTime<Utc>,
    /// The event as the history shows it (JSON).
    pub notice: &'a str,
    pub deliveries: &'a [NewAlertDelivery],
}

/// A delivery claimed to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertDelivery {
    pub id: String,
    pub event_id: String,
    pub flow: FlowId,
    pub channel: String,
    pub target: String,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
}

/// How a delivery stands.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertDeliveryState {
    pub channel: String,
    pub target: String,
    pub attempts: u64,
    pub sent_at: Option<DateTime<Utc>>,
    /// The last attempt's error, while it is not sent.
    pub last_error: String,
    pub created_at: DateTime<Utc>,
}

/// An opening or a resolution, with how its notices stand.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEventRecord {
    pub id: String,
    pub rule_id: String,
    pub at: DateTime<Utc>,
    /// The event as the alerts module wrote it (JSON).
    pub notice: String,
    pub deliveries: Vec<AlertDeliveryState>,
}

/// The counts of one run, without its outcome groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct RunCounts {
    pub received: i64,
    pub written: i64,
    pub excluded: i64,
    pub failed: i64,
}

#[derive(sqlx::FromRow)]
struct RulesRow {
    flow_id: String,
    sandbox: String,
    rules: String,
    signing_secret: String,
    updated_at: String,
}

#[derive(sqlx::FromRow)]
struct SealedRow {
    signing_secret: String,
}

#[derive(sqlx::FromRow)]
struct StateRow {
    flow_id: String,
    rule_id: String,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: String,
    rule_id: String,
    at: i64,
    notice: String,
}

#[derive(sqlx::FromRow)]
struct DeliveryStateRow {
    event_id: String,
    channel: String,
    target: String,
    attempts: i64,
    sent_at: String,
    last_error: String,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: String,
    event_id: String,
    flow_id: String,
    channel: String,
    target: String,
    payload: String,
    attempts: i64,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct LoadTimesRow {
    started_at: String,
    finished_at: String,
}

fn corrupt(detail: impl ToString) -> StoreError {
    StoreError::Corrupt { what: "alert", detail: detail.to_string() }
}

fn flow_id(text: &str) -> Result<FlowId> {
    text.parse().map_err(|e: uuid::Error| corrupt(format!("flow id {text}: {e}")))
}

fn at_millis(millis: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis).ok_or_else(|| corrupt(format!("{millis} is not a time")))
}

/// What a flow's signing secret is sealed for: it opens for that flow only.
fn secret_context(flow: FlowId) -> String {
    format!("alerts:{flow}")
}

impl Store {
    /// Replaces a flow's alert rules. The signing secret is replaced when one is given and kept otherwise. The
    /// state of every rule not in `kept_rule_ids` is forgotten: a rule removed, or changed into another, starts
    /// closed.
    pub async fn put_alert_rules(
        &self,
        flow: FlowId,
        sandbox: &Sandbox,
        rules: &str,
        signing_secret: Option<&Secret>,
        kept_rule_ids: &[String],
    ) -> Result<()> {
        let flow_text = flow.to_string();
        let now = Utc::now().to_rfc3339();
        let mut statements: Vec<(&'static str, Vec<Arg>)> = Vec::new();
        match signing_secret {
            Some(secret) => statements.push((
                "INSERT INTO alert_rules (flow_id, sandbox, rules, signing_secret, updated_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (flow_id) DO UPDATE SET rules = excluded.rules, signing_secret = excluded.signing_secret, \
                 updated_at = excluded.updated_at",
                vec![
                    flow_text.as_str().into(),
                    sandbox.as_str().into(),
                    rules.into(),
                    self.key.seal(secret.expose(), &secret_context(flow)).into(),
                    now.as_str().into(),
                ],
            )),
            None => statements.push((
                "INSERT INTO alert_rules (flow_id, sandbox, rules, signing_secret, updated_at) VALUES ($1, $2, $3, '', $4) \
                 ON CONFLICT (flow_id) DO UPDATE SET rules = excluded.rules, updated_at = excluded.updated_at",
                vec![flow_text.as_str().into(), sandbox.as_str().into(), rules.into(), now.as_str().into()],
            )),
        }
        let states: Vec<StateRow> = self
            .engine
            .fetch_as("SELECT flow_id, rule_id FROM alert_states WHERE flow_id = $1", &[flow_text.as_str().into()])
            .await?;
        for state in states.into_iter().filter(|s| !kept_rule_ids.contains(&s.rule_id)) {
            statements.push((
                "DELETE FROM alert_states WHERE flow_id = $1 AND rule_id = $2",
                vec![flow_text.as_str().into(), state.rule_id.into()],
            ));
        }
        self.engine.transaction(None, &statements).await
    }

    /// A flow's alert rules, if it has any.
    pub async fn alert_rules(&self, flow: FlowId) -> Result<Option<AlertRules>> {
        let rows: Vec<RulesRow> = self
            .engine
            .fetch_as(
                "SELECT flow_id, sandbox, rules, signing_secret, updated_at FROM alert_rules WHERE flow_id = $1",
                &[flow.to_string().into()],
            )
            .await?;
        rows.into_iter().next().map(rules_from).transpose()
    }

    /// Every flow's alert rules: what an evaluation reads first, in one query.
    pub async fn all_alert_rules(&self) -> Result<Vec<AlertRules>> {
        let rows: Vec<RulesRow> = self
            .engine
            .fetch_as(
                "SELECT flow_id, sandbox, rules, signing_secret, updated_at FROM alert_rules ORDER BY flow_id",
                &[],
            )
            .await?;
        rows.into_iter().map(rules_from).collect()
    }

    /// The secret a flow's alert webhooks are signed with.
    pub async fn alert_signing_secret(&self, flow: FlowId) -> Result<Option<Secret>> {
        let rows: Vec<SealedRow> = self
            .engine
            .fetch_as("SELECT signing_secret FROM alert_rules WHERE flow_id = $1", &[flow.to_string().into()])
            .await?;
        match rows.into_iter().next() {
            Some(row) if !row.signing_secret.is_empty() => {
                Ok(Some(self.key.open(&row.signing_secret, &secret_context(flow))?))
            }
            _ => Ok(None),
        }
    }

    /// The open alerts of every flow, as (flow, rule id).
    pub async fn open_alerts(&self) -> Result<Vec<(FlowId, String)>> {
        let rows: Vec<StateRow> =
            self.engine.fetch_as("SELECT flow_id, rule_id FROM alert_states WHERE open = 1", &[]).await?;
        rows.into_iter().map(|r| Ok((flow_id(&r.flow_id)?, r.rule_id))).collect()
    }

    /// Records that an alert opens or resolves, with its event and its deliveries, if its state is still the one
    /// it changes from. `false` when it is not (another process recorded the change first): nothing is written.
    pub async fn record_alert_change(&self, change: &AlertChange<'_>) -> Result<bool> {
        let flow = change.flow.to_string();
        let at = change.at.timestamp_millis();
        let guard = if change.opens {
            Guard {
                sql: "INSERT INTO alert_states (flow_id, rule_id, open, changed_at, event_id) VALUES ($1, $2, 1, $3, $4) \
                      ON CONFLICT (flow_id, rule_id) DO UPDATE SET open = 1, changed_at = excluded.changed_at, \
                      event_id = excluded.event_id WHERE alert_states.open = 0",
                args: vec![flow.as_str().into(), change.rule_id.into(), at.into(), change.event_id.into()],
            }
        } else {
            Guard {
                sql: "UPDATE alert_states SET open = 0, changed_at = $3, event_id = $4 \
                      WHERE flow_id = $1 AND rule_id = $2 AND open = 1",
                args: vec![flow.as_str().into(), change.rule_id.into(), at.into(), change.event_id.into()],
            }
        };
        let mut statements: Vec<(&'static str, Vec<Arg>)> = vec![(
            "INSERT INTO alert_events (id, flow_id, rule_id, at, notice) VALUES ($1, $2, $3, $4, $5)",
            vec![change.event_id.into(), flow.as_str().into(), change.rule_id.into(), at.into(), change.notice.into()],
        )];
        for d in change.deliveries {
            statements.push((
                "INSERT INTO alert_deliveries (id, event_id, flow_id, channel, target, payload, attempts, \
                 next_attempt_at, sent_at, last_error, created_at) VALUES ($1, $2, $3, $4, $5, $6, 0, 0, '', '', $7)",
                vec![
                    d.id.as_str().into(),
                    change.event_id.into(),
                    flow.as_str().into(),
                    d.channel.as_str().into(),
                    d.target.as_str().into(),
                    d.payload.as_str().into(),
                    at.into(),
                ],
            ));
        }
        statements.push((
            "DELETE FROM alert_events WHERE flow_id = $1 AND id NOT IN \
             (SELECT id FROM alert_events WHERE flow_id = $1 ORDER BY at DESC, id DESC LIMIT $2)",
            vec![flow.as_str().into(), ALERT_EVENTS_KEPT.into()],
        ));
        statements.push((
            "DELETE FROM alert_deliveries WHERE flow_id = $1 AND event_id NOT IN \
             (SELECT id FROM alert_events WHERE flow_id = $1)",
            vec![flow.as_str().into()],
        ));
        match self.engine.transaction(Some(&guard), &statements).await {
            Ok(()) => Ok(true),
            Err(StoreError::Fenced) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A flow's newest `limit` openings and resolutions, newest first, each with its deliveries: two queries.
    pub async fn alert_history(&self, flow: FlowId, limit: i64) -> Result<Vec<AlertEventRecord>> {
        let flow = flow.to_string();
        let events: Vec<EventRow> = self
            .engine
            .fetch_as(
                "SELECT id, rule_id, at, notice FROM alert_events WHERE flow_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
                &[flow.as_str().into(), limit.into()],
            )
            .await?;
        let Some(oldest) = events.last().map(|e| e.at) else { return Ok(Vec::new()) };
        let rows: Vec<DeliveryStateRow> = self
            .engine
            .fetch_as(
                "SELECT event_id, channel, target, attempts, sent_at, last_error, created_at FROM alert_deliveries \
                 WHERE flow_id = $1 AND created_at >= $2 ORDER BY channel DESC, id",
                &[flow.as_str().into(), oldest.into()],
            )
            .await?;
        let mut deliveries: HashMap<String, Vec<AlertDeliveryState>> = HashMap::new();
        for row in rows {
            deliveries.entry(row.event_id).or_default().push(AlertDeliveryState {
                channel: row.channel,
                target: row.target,
                attempts: row.attempts.max(0) as u64,
                sent_at: match row.sent_at.as_str() {
                    "" => None,
                    t => Some(timestamp(t).map_err(corrupt)?),
                },
                last_error: row.last_error,
                created_at: at_millis(row.created_at)?,
            });
        }
        events
            .into_iter()
            .map(|e| {
                Ok(AlertEventRecord {
                    deliveries: deliveries.remove(&e.id).unwrap_or_default(),
                    id: e.id,
                    rule_id: e.rule_id,
                    at: at_millis(e.at)?,
                    notice: e.notice,
                })
            })
            .collect()
    }

    /// Claims up to `limit` deliveries that are due and were made after `made_since`, for `claim_ms`
    /// milliseconds: another process takes them only once the claim has run out unanswered.
    pub async fn claim_alert_deliveries(
        &self,
        limit: i64,
        claim_ms: i64,
        made_since: DateTime<Utc>,
    ) -> Result<Vec<AlertDelivery>> {
        let now = Utc::now().timestamp_millis();
        let rows: Vec<ClaimedRow> = self
            .engine
            .fetch_as(
                "UPDATE alert_deliveries SET next_attempt_at = $2 \
                 WHERE id IN (SELECT id FROM alert_deliveries WHERE sent_at = '' AND next_attempt_at <= $1 \
                              AND created_at >= $4 ORDER BY created_at LIMIT $3) \
                 AND sent_at = '' AND next_attempt_at <= $1 \
                 RETURNING id, event_id, flow_id, channel, target, payload, attempts, created_at",
                &[now.into(), (now + claim_ms).into(), limit.into(), made_since.timestamp_millis().into()],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(AlertDelivery {
                    flow: flow_id(&r.flow_id)?,
                    created_at: at_millis(r.created_at)?,
                    id: r.id,
                    event_id: r.event_id,
                    channel: r.channel,
                    target: r.target,
                    payload: r.payload,
                    attempts: r.attempts,
                })
            })
            .collect()
    }

    /// Records that a delivery was taken.
    pub async fn alert_delivery_sent(&self, id: &str) -> Result<()> {
        self.engine
            .execute(
                "UPDATE alert_deliveries SET sent_at = $2, attempts = attempts + 1, last_error = '' WHERE id = $1",
                &[id.into(), Utc::now().to_rfc3339().into()],
            )
            .await?;
        Ok(())
    }

    /// Records that an attempt failed, and when to try again (milliseconds from now).
    pub async fn alert_delivery_failed(&self, id: &str, error: &str, retry_in_ms: i64) -> Result<()> {
        self.engine
            .execute(
                "UPDATE alert_deliveries SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 WHERE id = $1",
                &[id.into(), error.into(), (Utc::now().timestamp_millis() + retry_in_ms).into()],
            )
            .await?;
        Ok(())
    }

    /// The counts of a flow's run of `hour` (as [`hour_of`](super::hour_of) gives it), if it has one: one query.
    pub async fn run_counts(&self, flow: FlowId, hour: DateTime<Utc>) -> Result<Option<RunCounts>> {
        let rows: Vec<RunCounts> = self
            .engine
            .fetch_as(
                "SELECT received, written, excluded, failed FROM runs WHERE flow_id = $1 AND hour = $2",
                &[flow.to_string().into(), hour.to_rfc3339().into()],
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    /// When a scheduled flow's newest finished load started and finished: one query, however many loads it kept.
    pub async fn last_finished_load(&self, flow: FlowId) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>> {
        let rows: Vec<LoadTimesRow> = self
            .engine
            .fetch_as(
                "SELECT started_at, finished_at FROM ingestion_loads WHERE flow_id = $1 AND finished_at <> '' \
                 ORDER BY started_at DESC LIMIT 1",
                &[flow.to_string().into()],
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|r| Ok((timestamp(&r.started_at).map_err(corrupt)?, timestamp(&r.finished_at).map_err(corrupt)?)))
            .transpose()
    }

    /// Forgets the alerts of flows that were deleted: their rules, states, history and deliveries.
    pub async fn forget_alerts_of_deleted_flows(&self) -> Result<()> {
        let gone = |table: &'static str| (table, Vec::new());
        self.engine
            .transaction(
                None,
                &[
                    gone("DELETE FROM alert_rules WHERE flow_id NOT IN (SELECT id FROM flows)"),
                    gone("DELETE FROM alert_states WHERE flow_id NOT IN (SELECT id FROM flows)"),
                    gone("DELETE FROM alert_events WHERE flow_id NOT IN (SELECT id FROM flows)"),
                    gone("DELETE FROM alert_deliveries WHERE flow_id NOT IN (SELECT id FROM flows)"),
                ],
            )
            .await
    }
}

fn rules_from(row: RulesRow) -> Result<AlertRules> {
    Ok(AlertRules {
        flow: flow_id(&row.flow_id)?,
        sandbox: row.sandbox.parse().map_err(|e: crate::ids::BadSandboxName| corrupt(e))?,
        rules: row.rules,
        has_signing_secret: !row.signing_secret.is_empty(),
        updated_at: timestamp(&row.updated_at).map_err(corrupt)?,
    })
}

#[cfg(test)]
mod tests {
    //! The PostgreSQL test database is shared by every test and every run: each test names its own events and
    //! deliveries, and looks only at its own flow's.
    use super::*;
    use crate::store::test_stores;
    use chrono::Duration;

    fn unique(what: &str) -> String {
        format!("{what}-{}", uuid::Uuid::new_v4())
    }

    fn change<'a>(flow: FlowId, opens: bool, event: &'a str, deliveries: &'a [NewAlertDelivery]) -> AlertChange<'a> {
        AlertChange { flow, rule_id: "failure", opens, event_id: event, at: Utc::now(), notice: "{}", deliveries }
    }

    fn delivery(id: &str) -> NewAlertDelivery {
        NewAlertDelivery {
            id: id.into(),
            channel: "webhook".into(),
            target: "https://hooks.example.com/a".into(),
            payload: "{}".into(),
        }
    }

    async fn open_of(store: &Store, flow: FlowId) -> Vec<String> {
        store.open_alerts().await.unwrap().into_iter().filter(|(f, _)| *f == flow).map(|(_, rule)| rule).collect()
    }

    #[tokio::test]
    async fn an_alert_opens_once_and_resolves_once_however_many_times_it_is_recorded() {
        for (store, _dir) in test_stores().await {
            let flow = FlowId::new();
            let (e1, e2, e3, e4) = (unique("e1"), unique("e2"), unique("e3"), unique("e4"));
            let d1 = [delivery(&unique("d1"))];
            assert!(store.record_alert_change(&change(flow, true, &e1, &d1)).await.unwrap());
            let d2 = [delivery(&unique("d2"))];
            assert!(!store.record_alert_change(&change(flow, true, &e2, &d2)).await.unwrap(), "already open");
            assert_eq!(open_of(&store, flow).await, ["failure"]);
            assert!(store.record_alert_change(&change(flow, false, &e3, &[])).await.unwrap());
            assert!(!store.record_alert_change(&change(flow, false, &e4, &[])).await.unwrap(), "already resolved");
            assert!(open_of(&store, flow).await.is_empty());
            let history = store.alert_history(flow, 10).await.unwrap();
            let ids: Vec<&str> = history.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(ids.len(), 2, "{history:?}");
            assert!(ids.contains(&e1.as_str()) && ids.contains(&e3.as_str()), "{ids:?}");
            let opened = history.iter().find(|e| e.id == e1).unwrap();
            assert_eq!(opened.deliveries.len(), 1, "only the change recorded queued its delivery: {opened:?}");
            assert_eq!(opened.deliveries[0].attempts, 0);
        }
    }

    #[tokio::test]
    async fn a_delivery_is_claimed_once_waits_its_backoff_when_it_fails_and_is_given_up_when_old() {
        for (store, _dir) in test_stores().await {
            let flow = FlowId::new();
            // Made in the future, so that the claims below see no other test's deliveries.
            let at = Utc::now() + Duration::days(1_000);
            let (sent, late) = (unique("sent"), unique("late"));
            let deliveries = [delivery(&sent), delivery(&late)];
            let event = unique("e");
            store.record_alert_change(&AlertChange { at, ..change(flow, true, &event, &deliveries) }).await.unwrap();
            let claimed = store.claim_alert_deliveries(10, 60_000, at).await.unwrap();
            let mut ids: Vec<&str> = claimed.iter().map(|d| d.id.as_str()).collect();
            ids.sort();
            let mut expected = [late.as_str(), sent.as_str()];
            expected.sort();
            assert_eq!(ids, expected);
            assert!(store.claim_alert_deliveries(10, 60_000, at).await.unwrap().is_empty(), "claimed already");

            store.alert_delivery_sent(&sent).await.unwrap();
            store.alert_delivery_failed(&late, "it answered 503", 60_000).await.unwrap();
            assert!(store.claim_alert_deliveries(10, 0, at).await.unwrap().is_empty(), "waits its backoff");
            store.alert_delivery_failed(&late, "it answered 503", 0).await.unwrap();
            let due = store.claim_alert_deliveries(10, 0, at).await.unwrap();
            assert_eq!(due.iter().map(|d| (d.id.as_str(), d.attempts)).collect::<Vec<_>>(), [(late.as_str(), 2)]);
            let later = at + Duration::seconds(1);
            assert!(store.claim_alert_deliveries(10, 0, later).await.unwrap().is_empty(), "given up when too old");

            let history = store.alert_history(flow, 10).await.unwrap();
            let states = &history[0].deliveries;
            let sent_state = states.iter().find(|d| d.sent_at.is_some()).expect("one sent");
            assert_eq!((sent_state.attempts, sent_state.last_error.as_str()), (1, ""));
            let late_state = states.iter().find(|d| d.sent_at.is_none()).expect("one not sent");
            assert_eq!((late_state.attempts, late_state.last_error.as_str()), (2, "it answered 503"));
        }
    }

    #[tokio::test]
    async fn the_history_keeps_the_newest_events_of_a_flow() {
        for (store, _dir) in test_stores().await {
            let flow = FlowId::new();
            let start = Utc::now() - Duration::days(1);
            let mut events = Vec::new();
            for n in 0..(ALERT_EVENTS_KEPT + 3) {
                let id = format!("{n:04}-{}", uuid::Uuid::new_v4());
                let d = [delivery(&unique("d"))];
                let at = start + Duration::seconds(n);
                let change = AlertChange { at, ..change(flow, n % 2 == 0, &id, &d) };
                assert!(store.record_alert_change(&change).await.unwrap());
                events.push(id);
            }
            let history = store.alert_history(flow, 1_000).await.unwrap();
            assert_eq!(history.len() as i64, ALERT_EVENTS_KEPT);
            assert_eq!(history[0].id, events[events.len() - 1], "newest first");
            assert_eq!(history.last().unwrap().id, events[3], "the oldest three were dropped");
            assert!(history.iter().all(|e| e.deliveries.len() == 1), "with their deliveries");
        }
    }

    #[tokio::test]
    async fn the_signing_secret_is_sealed_kept_when_not_given_and_the_states_of_removed_rules_are_forgotten() {
        for (store, _dir) in test_stores().await {
            let flow = FlowId::new();
            let sandbox: Sandbox = "prod".parse().unwrap();
            let secret = Secret::new("a-secret-of-32-characters-long!!");
            store.put_alert_rules(flow, &sandbox, "[]", Some(&secret), &[]).await.unwrap();
            let sealed: Vec<SealedRow> = store
                .engine
                .fetch_as("SELECT signing_secret FROM alert_rules WHERE flow_id = $1", &[flow.to_string().into()])
                .await
                .unwrap();
            assert!(!sealed[0].signing_secret.contains("a-secret"), "sealed at rest");
            let event = unique("e");
            store.record_alert_change(&change(flow, true, &event, &[])).await.unwrap();
            store.put_alert_rules(flow, &sandbox, "[1]", None, &["failure".into()]).await.unwrap();
            assert_eq!(store.alert_signing_secret(flow).await.unwrap(), Some(secret));
            assert_eq!(open_of(&store, flow).await, ["failure"], "a rule kept stays open");
            let rules = store.alert_rules(flow).await.unwrap().unwrap();
            assert_eq!((rules.rules.as_str(), rules.has_signing_secret), ("[1]", true));
            store.put_alert_rules(flow, &sandbox, "[]", None, &[]).await.unwrap();
            assert!(open_of(&store, flow).await.is_empty(), "a rule removed is forgotten");
        }
    }
}
