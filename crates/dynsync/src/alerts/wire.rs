//! The alerts' JSON: what `PUT …/flows/{id}/alerts` takes, what `GET …/alerts` and `GET …/alerts/history`
//! answer, and what an alert webhook receives. One set of types for the handlers, the notices and the tests, so
//! that each field is named once.
//!
//! A rule is the same object in a PUT and in a GET: a GET's answer can be edited and sent back. Its `id` is
//! dynsync's (made of its kind and thresholds), answered and ignored when sent. The signing secret is taken by a
//! PUT and never answered: a GET says only whether one is kept.

use crate::ids::FlowId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AlertKind {
    /// A record failed in the flow's run of the current hour.
    Failure,
    /// The share of the current hour's records that failed is over `thresholdPercent`.
    FailureRate,
    /// The share of the current hour's records that were excluded is over `thresholdPercent`.
    ExclusionRate,
    /// The flow is more than `thresholdSeconds` behind.
    Lag,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Failure => "failure",
            AlertKind::FailureRate => "failureRate",
            AlertKind::ExclusionRate => "exclusionRate",
            AlertKind::Lag => "lag",
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a rule's notices go: a webhook, email addresses, or both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertChannels {
    /// POSTed a signed [`AlertNotice`]: https, or http to a host the operator allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Sent one plain-text email, all of them in `To`, through the service's SMTP server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
}

/// One rule of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertRule {
    /// dynsync's name for the rule (`failureRate:5:20`), answered by a GET; ignored in a PUT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub kind: AlertKind,
    /// `failureRate`, `exclusionRate`: over 0, at most 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_percent: Option<f64>,
    /// `failureRate`, `exclusionRate`: the records the hour must have received before its rate counts (20 when
    /// not given), so that 1 failed of 2 does not open an alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_records: Option<u64>,
    /// `lag`: how far behind, in seconds, the flow may be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_seconds: Option<u64>,
    #[serde(default)]
    pub channels: AlertChannels,
}

/// A webhook's signing secret, as a PUT gives it: never shown in `Debug` output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SigningSecret(pub String);

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

/// The body of `PUT …/flows/{id}/alerts`: the flow's rules, replacing those it had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertSettings {
    pub rules: Vec<AlertRule>,
    /// What webhook POSTs are signed with (at least 16 characters). Needed once a rule has a webhook; the one kept
    /// stays when it is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<SigningSecret>,
}

/// The answer of `GET …/flows/{id}/alerts` (and of a PUT).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertSettingsView {
    pub flow_id: FlowId,
    pub rules: Vec<AlertRule>,
    /// Whether a signing secret is kept; the secret itself is never answered.
    pub has_signing_secret: bool,
    /// When the rules were last replaced; none before the first PUT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// Whether an alert opened or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Opened,
    Resolved,
}

/// What a measured figure counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeasureUnit {
    Records,
    Percent,
    Seconds,
}

/// An alert that opened or resolved: the body POSTed to a webhook (signed with the `Dynsync-Signature` header,
/// as dataset webhooks are), and an entry of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertNotice {
    /// The event's id: the same in every notice of one opening or resolution.
    pub id: Uuid,
    pub status: AlertStatus,
    pub flow_id: FlowId,
    pub flow_name: String,
    pub sandbox: String,
    pub rule_id: String,
    pub kind: AlertKind,
    /// The rule's threshold, in `unit`; none for a failure rule (any failed record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The figure measured when the alert changed, in `unit`.
    pub measured: f64,
    pub unit: MeasureUnit,
    /// One sentence a person reads: what happened, against what threshold.
    pub summary: String,
    pub at: DateTime<Utc>,
}

/// Which channel a delivery went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Webhook,
    Email,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Email => "email",
        }
    }
}

/// How a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeliveryState {
    /// Not tried yet.
    Pending,
    /// Taken by the webhook or the SMTP server.
    Sent,
    /// Tried and refused or unanswered: tried again later, `error` says why.
    Retrying,
    /// Not taken within a day: no longer tried, `error` says why.
    GaveUp,
}

/// One channel's delivery of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub channel: ChannelKind,
    /// The webhook's URL, or the recipients.
    pub to: String,
    pub state: DeliveryState,
    pub attempts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An entry of a flow's alert history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertEvent {
    #[serde(flatten)]
    pub notice: AlertNotice,
    pub deliveries: Vec<DeliveryView>,
}

/// The answer of `GET …/flows/{id}/alerts/history`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertHistory {
    pub items: Vec<AlertEvent>,
}
