//! Alerts on flows, as Airbyte, Hightouch and Census have them: per flow, rules that notify a webhook and email
//! addresses when the flow fails ([`AlertKind::Failure`]), when the share of the current hour's records that
//! failed or were excluded passes a threshold ([`AlertKind::FailureRate`], [`AlertKind::ExclusionRate`]), or when
//! it falls behind ([`AlertKind::Lag`]).
//!
//! The contract:
//! - An alert opens once when its rule's condition starts to hold, and resolves once when it stops; each change
//!   sends one notice to each of the rule's channels and is kept in the flow's history (newest first, the last
//!   [`ALERT_EVENTS_KEPT`](crate::store::ALERT_EVENTS_KEPT)), with each delivery's state.
//! - Notices are queued with the change, so a crash loses none, and sent until taken (retried by the one backoff,
//!   for a day): webhooks get the [`wire::AlertNotice`] as JSON, signed as dataset webhooks are; emails go through
//!   the service's SMTP server.
//! - Several processes on one PostgreSQL evaluate the same rules, and each change is recorded by one of them only.
//!
//! The parts: [`wire`] (the JSON), [`rules`] (what a rule means, on figures), [`evaluate`] (the periodic
//! evaluation), [`deliver`] (sending). The API's handlers are in `api/alerts.rs`.

pub mod deliver;
pub mod evaluate;
pub mod rules;
pub mod wire;

use crate::leads::notify::Mailer;
use crate::pipeline::Supervisor;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub use rules::{Condition, DEFAULT_MINIMUM_RECORDS, Figures, Measurement, Transition, transition};
pub use wire::{
    AlertChannels, AlertEvent, AlertHistory, AlertKind, AlertNotice, AlertRule, AlertSettings, AlertSettingsView,
    AlertStatus, ChannelKind, DeliveryState, DeliveryView, MeasureUnit, SigningSecret,
};

/// How often the rules are evaluated unless the service is configured otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Evaluates every enabled flow's rules every `every` and sends the notices, until the task is stopped. Emails go
/// through `mailer`; without one they wait, their error saying why.
pub async fn run(store: Store, supervisor: Arc<Supervisor>, mailer: Option<Mailer>, every: Duration) {
    let wake = Arc::new(Notify::new());
    tokio::join!(
        evaluate::evaluate_every(store.clone(), supervisor, every, wake.clone()),
        deliver::deliver_every(store, mailer, wake),
    );
}
