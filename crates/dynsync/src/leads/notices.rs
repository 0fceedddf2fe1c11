//! Sending new leads' notifications: a task of the service that takes released messages from the outbox, sends
//! each over the configured SMTP server, and records it sent, or the error and when to try again — as long as
//! it takes for the server to take it, with the one backoff. A message the server refuses for good (a bad
//! address) is tried again only after the longest wait, its error shown on the intake, so nothing is dropped
//! silently. Several processes on one PostgreSQL share the outbox: a claimed message is another's only once its
//! claim has run out.

use super::notify::{LeadNotice, Mailer};
use crate::store::{OutboxMessage, Store};
use dataverse::Backoff;
use std::time::Duration;

/// How long a message is claimed by the process sending it: longer than one attempt may take, short enough that a
/// message claimed by a process that died is sent by another within a minute.
const CLAIM: Duration = Duration::from_secs(super::notify::SMTP_TIMEOUT.as_secs() + 10);
/// Messages taken at a time: few, so that a process that dies leaves few claimed.
const BATCH: i64 = 10;
/// How often the outbox is looked at when it had nothing due.
const IDLE: Duration = Duration::from_millis(500);
/// The longest wait between two attempts at one message.
const LONGEST: Duration = Duration::from_secs(600);

/// The wait before the attempt after `attempts` failed ones, by the one backoff.
fn retry_in(attempts: i64) -> Duration {
    Backoff::delay(Duration::from_secs(1), LONGEST, attempts.clamp(0, 30) as u32 + 1)
}

/// Sends notifications until the task is stopped.
pub async fn send_notices(store: Store, mailer: Mailer) {
    loop {
        let due = match store.claim_messages(BATCH, CLAIM.as_millis() as i64).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "the outbox cannot be read; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if due.is_empty() {
            tokio::time::sleep(IDLE).await;
            continue;
        }
        for message in due {
            send_one(&store, &mailer, &message).await;
        }
    }
}

async fn send_one(store: &Store, mailer: &Mailer, message: &OutboxMessage) {
    let notice: LeadNotice = match serde_json::from_str(&message.payload) {
        Ok(notice) => notice,
        Err(e) => {
            let error = format!("the notification cannot be read ({e}); it was kept by another dynsync version");
            let _ = store.message_failed(&message.id, &error, LONGEST.as_millis() as i64).await;
            return;
        }
    };
    let recorded = match mailer.send(&notice).await {
        Ok(()) => {
            tracing::info!(flow = %message.flow_id, lead = %notice.lead_id, "sent the new lead's notification");
            store.message_sent(&message.id).await
        }
        Err(e) => {
            let wait = if e.is_permanent() { LONGEST } else { retry_in(message.attempts) };
            tracing::warn!(flow = %message.flow_id, lead = %notice.lead_id, error = %e, retry_in_s = wait.as_secs(), "the new lead's notification was not sent; it will be tried again");
            store.message_failed(&message.id, &e.to_string(), wait.as_millis() as i64).await
        }
    };
    if let Err(e) = recorded {
        // The claim runs out and the message is tried again: a notification may be sent twice, never lost.
        tracing::warn!(error = %e, "a notification's outcome cannot be recorded");
    }
}
