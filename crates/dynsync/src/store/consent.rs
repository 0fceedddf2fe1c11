//! The consent ledger: every change of a contact's consent that an engagement flow decided, whether it was
//! applied to Dynamics or a newer change already stood, with its side, source, reason and time. It is what the
//! conflict rule reads (the newest change wins; on a tie, the opt-out), and what a user browses to answer "why
//! is this contact opted out?". A change is recorded once per flow and event: a replay records nothing new.

use super::{Result, Store, StoreError};
use crate::ids::FlowId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a consent change was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentSide {
    /// On the marketing side: an email service's unsubscribe, complaint, bounce or resubscribe.
    Marketing,
    /// In Dynamics: a user or a process changed the contact.
    Dynamics,
}

impl ConsentSide {
    fn as_str(self) -> &'static str {
        match self {
            ConsentSide::Marketing => "marketing",
            ConsentSide::Dynamics => "dynamics",
        }
    }
}

/// One consent change of one contact.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsentChange {
    /// The event it came from (its key), unique in its flow.
    pub event_key: String,
    pub contact_id: Uuid,
    pub email: String,
    pub opted_out: bool,
    /// When the change was made, by its side's clock.
    pub occurred_at: DateTime<Utc>,
    pub side: ConsentSide,
    /// The system that made it (`SendGrid`).
    pub source: String,
    /// Why (`Unsubscribed`, `Hard bounce: 550 5.1.1 …`).
    pub reason: String,
    /// Whether it was written to the contact; `false` when a newer change already stood.
    pub applied: bool,
    pub recorded_at: DateTime<Utc>,
}

/// The change a contact's consent stands on now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandingConsent {
    pub opted_out: bool,
    pub occurred_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ChangeRow {
    event_key: String,
    contact_id: String,
    email: String,
    opted_out: i64,
    occurred_at: i64,
    side: String,
    source: String,
    reason: String,
    applied: i64,
    recorded_at: i64,
}

#[derive(sqlx::FromRow)]
struct StandingRow {
    opted_out: i64,
    occurred_at: i64,
}

fn at_millis(millis: i64) -> std::result::Result<DateTime<Utc>, String> {
    DateTime::from_timestamp_millis(millis).ok_or_else(|| format!("{millis} is not a time"))
}

impl Store {
    /// The applied change a contact's consent stands on, newest first and, at the same time, the opt-out.
    pub async fn standing_consent(&self, contact: Uuid) -> Result<Option<StandingConsent>> {
        let rows: Vec<StandingRow> = self
            .engine
            .fetch_as(
                "SELECT opted_out, occurred_at FROM consent_changes WHERE contact_id = $1 AND applied = 1 \
                 ORDER BY occurred_at DESC, opted_out DESC LIMIT 1",
                &[contact.to_string().into()],
            )
            .await?;
        let corrupt = |detail: String| StoreError::Corrupt { what: "consent change", detail };
        rows.into_iter()
            .next()
            .map(|r| {
                Ok(StandingConsent {
                    opted_out: r.opted_out != 0,
                    occurred_at: at_millis(r.occurred_at).map_err(corrupt)?,
                })
            })
            .transpose()
    }

    /// Records changes a flow decided; one already recorded for the same flow and event is left as it was.
    pub async fn record_consent(&self, flow: FlowId, changes: &[ConsentChange]) -> Result<()> {
        let flow = flow.to_string();
        let statements: Vec<_> = changes
            .iter()
            .map(|c| {
                (
                    "INSERT INTO consent_changes (flow_id, event_key, contact_id, email, opted_out, occurred_at, side, \
                     source, reason, applied, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (flow_id, event_key) DO NOTHING",
                    vec![
                        flow.as_str().into(),
                        c.event_key.as_str().into(),
                        c.contact_id.to_string().into(),
                        c.email.as_str().into(),
                        i64::from(c.opted_out).into(),
                        c.occurred_at.timestamp_millis().into(),
                        c.side.as_str().into(),
                        c.source.as_str().into(),
                        c.reason.as_str().into(),
                        i64::from(c.applied).into(),
                        c.recorded_at.timestamp_millis().into(),
                    ],
                )
            })
            .collect();
        self.engine.transaction(None, &statements).await
    }

    /// A flow's consent changes, newest first; only one contact's when `contact` names it.
    pub async fn consent_changes(&self, flow: FlowId, contact: Option<Uuid>, limit: i64) -> Result<Vec<ConsentChange>> {
        let rows: Vec<ChangeRow> = match contact {
            Some(contact) => {
                self.engine
                    .fetch_as(
                        "SELECT event_key, contact_id, email, opted_out, occurred_at, side, source, reason, applied, \
                         recorded_at FROM consent_changes WHERE flow_id = $1 AND contact_id = $2 \
                         ORDER BY occurred_at DESC, event_key LIMIT $3",
                        &[flow.to_string().into(), contact.to_string().into(), limit.into()],
                    )
                    .await?
            }
            None => {
                self.engine
                    .fetch_as(
                        "SELECT event_key, contact_id, email, opted_out, occurred_at, side, source, reason, applied, \
                         recorded_at FROM consent_changes WHERE flow_id = $1 ORDER BY occurred_at DESC, event_key LIMIT $2",
                        &[flow.to_string().into(), limit.into()],
                    )
                    .await?
            }
        };
        let corrupt = |detail: String| StoreError::Corrupt { what: "consent change", detail };
        rows.into_iter()
            .map(|r| {
                Ok(ConsentChange {
                    event_key: r.event_key,
                    contact_id: r.contact_id.parse().map_err(|e: uuid::Error| corrupt(e.to_string()))?,
                    email: r.email,
                    opted_out: r.opted_out != 0,
                    occurred_at: at_millis(r.occurred_at).map_err(corrupt)?,
                    side: match r.side.as_str() {
                        "dynamics" => ConsentSide::Dynamics,
                        "marketing" => ConsentSide::Marketing,
                        other => return Err(corrupt(format!("'{other}' is not a side"))),
                    },
                    source: r.source,
                    reason: r.reason,
                    applied: r.applied != 0,
                    recorded_at: at_millis(r.recorded_at).map_err(corrupt)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(key: &str, contact: Uuid, opted_out: bool, at: &str, applied: bool) -> ConsentChange {
        ConsentChange {
            event_key: key.into(),
            contact_id: contact,
            email: "ana@contoso.com".into(),
            opted_out,
            occurred_at: at.parse().unwrap(),
            side: ConsentSide::Marketing,
            source: "SendGrid".into(),
            reason: "Unsubscribed".into(),
            applied,
            recorded_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn a_contact_s_consent_stands_on_its_newest_applied_change_and_a_replay_records_nothing_new() {
        for (store, _dir) in crate::store::test_stores().await {
            let (flow, contact) = (FlowId::new(), Uuid::new_v4());
            assert_eq!(store.standing_consent(contact).await.unwrap(), None);
            let changes = [
                change("a", contact, true, "2026-11-30T10:00:00Z", true),
                change("b", contact, false, "2026-11-30T11:00:00Z", true),
                change("c", contact, true, "2026-11-30T12:00:00Z", false),
            ];
            store.record_consent(flow, &changes).await.unwrap();
            store.record_consent(flow, &changes[..1]).await.unwrap();
            let standing = store.standing_consent(contact).await.unwrap().unwrap();
            assert!(!standing.opted_out, "the newest applied change is the re-opt-in");
            assert_eq!(standing.occurred_at, "2026-11-30T11:00:00Z".parse::<DateTime<Utc>>().unwrap());
            let listed = store.consent_changes(flow, Some(contact), 10).await.unwrap();
            let keys: Vec<&str> = listed.iter().map(|c| c.event_key.as_str()).collect();
            assert_eq!(keys, ["c", "b", "a"], "newest first, each once");
            assert!(!listed[0].applied);
            assert!(store.consent_changes(flow, Some(Uuid::new_v4()), 10).await.unwrap().is_empty());
        }
    }
}
