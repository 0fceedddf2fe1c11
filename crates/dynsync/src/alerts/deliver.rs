//! Sending alert notices: a task that claims due deliveries from the store, POSTs each webhook's notice signed as
//! dataset webhooks are ([`SIGNATURE_HEADER`], [`signature`]) or sends each email through the service's
//! [`Mailer`], and records it sent, or the error and when to try again, by the one backoff.
//!
//! Why so: a notice is queued with the change it announces, in one transaction, so a crash loses none; a delivery
//! is claimed before it is sent, so two processes never send it at once; and a receiver that is down is tried
//! again, sooner at first and then every ten minutes at most, for a day — an alert a day old is no longer news.
//! A notice may be sent twice (a process dies after sending and before recording it), never lost: each POST
//! carries its delivery's id in [`DELIVERY_HEADER`], for the receiver to drop one it already has.

use super::evaluate::EmailMessage;
use crate::dataset::webhook::{DELIVERY_HEADER, REQUEST_TIMEOUT, SIGNATURE_HEADER, signature};
use crate::leads::notify::Mailer;
use crate::store::{AlertDelivery, Store};
use crate::text::clip;
use dataverse::Backoff;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How long a delivery is claimed by the process sending it: longer than one attempt may take.
const CLAIM: Duration = {
    let (smtp, webhook) = (crate::leads::notify::SMTP_TIMEOUT.as_secs(), REQUEST_TIMEOUT.as_secs());
    Duration::from_secs(if smtp > webhook { smtp } else { webhook } + 10)
};
/// Deliveries taken at a time.
const BATCH: i64 = 10;
/// How often the store is looked at when nothing was due, unless an evaluation rings first.
const IDLE: Duration = Duration::from_secs(1);
/// The longest wait between two attempts at one delivery.
const LONGEST: Duration = Duration::from_secs(600);
/// How long a delivery is tried for.
pub const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::hours(24);

/// The wait before the attempt after `attempts` failed ones, by the one backoff.
fn retry_in(attempts: i64) -> Duration {
    Backoff::delay(Duration::from_secs(1), LONGEST, attempts.clamp(0, 30) as u32 + 1)
}

/// Why an attempt failed, and whether trying again soon can help.
struct Failure {
    message: String,
    permanent: bool,
}

impl Failure {
    fn retry(message: String) -> Failure {
        Failure { message, permanent: false }
    }
    fn permanent(message: String) -> Failure {
        Failure { message, permanent: true }
    }
}

/// Sends due deliveries until stopped; `wake` rings when an evaluation queued some.
pub async fn deliver_every(store: Store, mailer: Option<Mailer>, wake: Arc<Notify>) {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("dynsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client for alert webhooks builds");
    loop {
        let since = chrono::Utc::now() - GIVE_UP_AFTER;
        let due = match store.claim_alert_deliveries(BATCH, CLAIM.as_millis() as i64, since).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "the alert deliveries cannot be read; trying again");
                let _ = tokio::time::timeout(IDLE, wake.notified()).await;
                continue;
            }
        };
        if due.is_empty() {
            let _ = tokio::time::timeout(IDLE, wake.notified()).await;
            continue;
        }
        for delivery in due {
            send_one(&store, mailer.as_ref(), &http, &delivery).await;
        }
    }
}

async fn send_one(store: &Store, mailer: Option<&Mailer>, http: &reqwest::Client, delivery: &AlertDelivery) {
    let sent = match delivery.channel.as_str() {
        "webhook" => post(store, http, delivery).await,
        "email" => email(mailer, delivery).await,
        other => Err(Failure::permanent(format!(
            "the channel '{other}' is not one this dynsync sends to; was it queued by a newer dynsync?"
        ))),
    };
    let recorded = match sent {
        Ok(()) => {
            tracing::info!(flow = %delivery.flow, channel = %delivery.channel, to = %delivery.target, "sent an alert notice");
            store.alert_delivery_sent(&delivery.id).await
        }
        Err(failure) => {
            let wait = if failure.permanent { LONGEST } else { retry_in(delivery.attempts) };
            tracing::warn!(
                flow = %delivery.flow,
                channel = %delivery.channel,
                to = %delivery.target,
                error = %failure.message,
                retry_in_s = wait.as_secs(),
                "an alert notice was not sent; it will be tried again"
            );
            store.alert_delivery_failed(&delivery.id, &failure.message, wait.as_millis() as i64).await
        }
    };
    if let Err(e) = recorded {
        // The claim runs out and the delivery is tried again: a notice may be sent twice, never lost.
        tracing::warn!(error = %e, "an alert delivery's outcome cannot be recorded");
    }
}

/// POSTs the notice to the webhook, signed with the flow's signing secret.
async fn post(store: &Store, http: &reqwest::Client, delivery: &AlertDelivery) -> Result<(), Failure> {
    let secret = match store.alert_signing_secret(delivery.flow).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return Err(Failure::permanent(
                "the flow's alerts have no signing secret: PUT the alerts again with a signingSecret".into(),
            ));
        }
        Err(e) => return Err(Failure::retry(format!("the signing secret cannot be read: {e}"))),
    };
    let body = delivery.payload.clone().into_bytes();
    let signed = signature(secret.expose().as_bytes(), chrono::Utc::now().timestamp(), &body);
    let answer = http
        .post(&delivery.target)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signed)
        .header(DELIVERY_HEADER, &delivery.id)
        .body(body)
        .send()
        .await;
    let response = match answer {
        Ok(response) => response,
        Err(e) if e.is_timeout() => {
            return Err(Failure::retry(format!(
                "the webhook did not answer within {} s; the notice is sent again later",
                REQUEST_TIMEOUT.as_secs()
            )));
        }
        Err(e) => {
            let mut cause = e.to_string();
            if let Some(url) = e.url() {
                cause = cause.replace(&format!(" for url ({url})"), "");
            }
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                if !cause.ends_with(&s.to_string()) {
                    cause = format!("{cause}: {s}");
                }
                source = s.source();
            }
            return Err(Failure::retry(format!(
                "the webhook could not be reached ({cause}); check that the URL is right and reachable from dynsync, \
                 the notice is sent again later"
            )));
        }
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ").replace(secret.expose(), "***");
    let hint = match status.as_u16() {
        401 | 403 => "check that the receiver checks signatures with the secret given as the alerts' signingSecret",
        300..=399 => "redirects are not followed: give the URL it points to",
        404 | 405 => "check the rule's webhookUrl",
        _ => "the notice is sent again later",
    };
    Err(Failure::retry(format!(
        "the webhook answered {status}{}; {hint}",
        if text.is_empty() { String::new() } else { format!(": {}", clip(&text, 200)) }
    )))
}

/// Sends the notice's email through the service's SMTP server.
async fn email(mailer: Option<&Mailer>, delivery: &AlertDelivery) -> Result<(), Failure> {
    let Some(mailer) = mailer else {
        return Err(Failure::permanent(
            "dynsync has no SMTP server to send email through: give it one (the [smtp] section of its config \
             file) and restart it; the email is tried again until then"
                .into(),
        ));
    };
    let message: EmailMessage = serde_json::from_str(&delivery.payload).map_err(|e| {
        Failure::permanent(format!("the email cannot be read ({e}); was it queued by a newer dynsync?"))
    })?;
    mailer.send_text(&message.subject, &message.body, &message.recipients).await.map_err(|e| {
        let message = format!("the alert's email was not sent: {e}");
        if e.is_permanent() { Failure::permanent(message) } else { Failure::retry(message) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time_up_to_ten_minutes() {
        assert!(retry_in(0) <= Duration::from_secs(1));
        assert!(retry_in(3) <= Duration::from_secs(8) && retry_in(3) >= Duration::from_secs(4));
        assert!(retry_in(1_000) <= LONGEST && retry_in(1_000) >= LONGEST / 2);
    }
}
