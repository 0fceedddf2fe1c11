//! Email events as the email services post them, read into [`EmailEvent`]s, and the signatures that say a body
//! really comes from the service. Pure: no HTTP, no store, no clock but a `now` passed in.
//!
//! The contract:
//! - Each service has its module: [`sendgrid`] (a JSON list of events, ECDSA-signed), [`mailgun`] (one event per
//!   request, HMAC-signed in the body), [`ses`] (Amazon SES events inside Amazon SNS messages, whose signatures
//!   [`sns`] checks) and [`own`] (dynsync's own JSON, strict). [`parse`] picks the module by [`Provider`].
//! - One bad event never fails the others of its body: the events that read go into [`Parsed::events`], and each
//!   bad one becomes [`EventProblem`]s naming its place in the body, the field as the service names it, and what
//!   to do. Every event type a service documents is mapped (or refused with the reason, for the few that are not
//!   about a recipient); a type it does not document is a problem, never a panic.
//! - Only a body that cannot be read at all is refused whole, as a [`BodyError`]: not JSON, not the service's
//!   shape, larger than [`MAX_EVENTS_BODY_BYTES`], or with more than [`MAX_EVENTS_PER_BODY`] events.
//! - The sender can pass dynsync's contact id along with a message: `dynsync_contact_id` (a GUID) and `campaign`
//!   in SendGrid's custom args, Mailgun's `user-variables`, or Amazon SES's message tags. An id that is not a GUID
//!   is a problem, not a silent fall-back to the address: it means the sender is set up wrong.
//! - Keys are checked when they are saved ([`sendgrid::SendGridKey::parse`], [`mailgun::MailgunKey::parse`], and
//!   Amazon SNS certificates pinned on a flow with [`sns::SigningCertificate::from_pem`]), so a wrong key is refused
//!   while the user is there to fix it, not at the first event.
//!
//! Why: a service retries a body it gets an error for, sometimes for days; refusing a thousand good events for one
//! bad address would replay them all, and still lose the bad one.

pub mod mailgun;
pub mod own;
pub mod sendgrid;
pub mod ses;
pub mod sns;

pub use ses::SnsConfirmation;

use super::event::{EmailAddress, EmailEvent, EventKind, EventProblem, EventProblems, MessageId};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

use crate::text::describe;

/// The largest events body read: SendGrid posts batches of at most a few megabytes; a larger body is not a
/// service's.
pub const MAX_EVENTS_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The most events one body may bring (an Amazon SES notification counts one per recipient).
pub const MAX_EVENTS_PER_BODY: usize = 10_000;

/// The service that posted an events body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    SendGrid,
    Mailgun,
    Ses,
    /// dynsync's own JSON, for senders that are none of the above.
    Dynsync,
}

impl Provider {
    pub const ALL: [Provider; 4] = [Provider::SendGrid, Provider::Mailgun, Provider::Ses, Provider::Dynsync];

    /// As written in JSON and in settings: `sendgrid`, `mailgun`, `ses`, `dynsync`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::SendGrid => "sendgrid",
            Provider::Mailgun => "mailgun",
            Provider::Ses => "ses",
            Provider::Dynsync => "dynsync",
        }
    }

    /// The service's own name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Provider::SendGrid => "SendGrid",
            Provider::Mailgun => "Mailgun",
            Provider::Ses => "Amazon SES",
            Provider::Dynsync => "dynsync",
        }
    }

    /// What a body from this service looks like and what to check, for messages.
    fn expected(self) -> &'static str {
        match self {
            Provider::SendGrid => {
                "SendGrid posts a JSON list of events, [{\"email\": …, \"event\": …, \"timestamp\": …}]; check that \
                 this inlet's address was given to SendGrid's Event Webhook and to nothing else"
            }
            Provider::Mailgun => {
                "Mailgun posts one JSON object, {\"signature\": {…}, \"event-data\": {\"event\": …}}; check that this \
                 inlet's address was given to a Mailgun webhook and to nothing else"
            }
            Provider::Ses => {
                "Amazon SNS posts {\"Type\": \"Notification\", \"Message\": \"{…}\", …}; check that this inlet's \
                 address was given to the SNS subscription of the topic SES publishes to, and to nothing else"
            }
            Provider::Dynsync => {
                "dynsync's format is {\"events\": [{\"messageId\": …, \"type\": …, \"occurredAt\": …, \"email\": …}]}"
            }
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no [`Provider`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{given}' is not an email service dynsync reads: give sendgrid, mailgun, ses or dynsync")]
pub struct UnknownProvider {
    pub given: String,
}

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(text: &str) -> Result<Provider, UnknownProvider> {
        let wanted = text.trim().to_ascii_lowercase();
        Provider::ALL.into_iter().find(|p| p.as_str() == wanted).ok_or_else(|| UnknownProvider { given: text.into() })
    }
}

/// The events of one body: those that read, and the problems of those that did not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Parsed {
    pub events: Vec<EmailEvent>,
    pub problems: Vec<EventProblem>,
}

impl Parsed {
    /// How many events of the body were refused (an event can have several problems).
    pub fn refused(&self) -> usize {
        let mut indexes: Vec<usize> = self.problems.iter().map(|p| p.index).collect();
        indexes.dedup();
        indexes.len()
    }

    /// The problems grouped by event, in body order: one report per refused event.
    pub fn by_event(&self) -> Vec<EventProblems> {
        let mut reports: Vec<EventProblems> = Vec::new();
        for problem in &self.problems {
            match reports.last_mut() {
                Some(report) if report.problems[0].index == problem.index => report.problems.push(problem.clone()),
                _ => reports.push(EventProblems { problems: vec![problem.clone()] }),
            }
        }
        reports
    }

    fn add(&mut self, read: Result<EmailEvent, Vec<EventProblem>>) {
        match read {
            Ok(event) => self.events.push(event),
            Err(problems) => self.problems.extend(problems),
        }
    }
}

/// What a body brought: events, or (Amazon SNS only) a subscription to confirm or a notice that it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Events(Parsed),
    /// SNS asks to confirm that the inlet wants the topic's messages; the caller decides whether to visit
    /// [`SnsConfirmation::subscribe_url`].
    SubscriptionConfirmation(SnsConfirmation),
    /// SNS says that the subscription was deleted.
    UnsubscribeConfirmation(SnsConfirmation),
}

/// Reads a body posted by `provider`.
pub fn parse(provider: Provider, body: &[u8]) -> Result<Received, BodyError> {
    match provider {
        Provider::SendGrid => sendgrid::parse(body).map(Received::Events),
        Provider::Mailgun => mailgun::parse(body).map(Received::Events),
        Provider::Ses => ses::parse(body),
        Provider::Dynsync => own::parse(body).map(Received::Events),
    }
}

/// A body that cannot be read at all. None of its events is taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error(
        "the body is {bytes} bytes, more than the {cap} bytes (8 MiB) dynsync reads at once: send the events in \
         smaller bodies{}", provider_hint(.provider)
    )]
    TooLarge { provider: Provider, bytes: usize, cap: usize },
    #[error(
        "the body brings {count} events, more than the {cap} dynsync takes in one body: send them in bodies of at \
         most {cap}"
    )]
    TooManyEvents { provider: Provider, count: usize, cap: usize },
    #[error("the body is not JSON ({detail}): {}", .provider.expected())]
    NotJson { provider: Provider, detail: String },
    #[error("{what}: {}", .provider.expected())]
    Shape { provider: Provider, what: String },
}

fn provider_hint(provider: &Provider) -> &'static str {
    match *provider {
        Provider::Dynsync => "",
        _ => "; a service's own batches are far smaller, so check what posted this body",
    }
}

/// A signature that does not prove the body came from the service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "the request has no {what}: {} signs every request when signing is turned on; turn it on in {}, or check \
         that this inlet's address was given to {} and to nothing else", .provider.name(), .provider.name(),
        .provider.name()
    )]
    Missing { provider: Provider, what: &'static str },
    #[error("the {what} is not one {} makes ({why}): the request is refused", .provider.name())]
    Malformed { provider: Provider, what: &'static str, why: String },
    #[error(
        "the {} signature does not match this body and the key saved on the flow: the request was not signed by {} \
         with that key, or was changed on the way; check that the flow's key is the one {} shows now (a new one is \
         made when signing is turned off and on)", .provider.name(), .provider.name(), .provider.name()
    )]
    Mismatch { provider: Provider },
    #[error(
        "the signed timestamp is {age_seconds} s old, more than the {window_seconds} s allowed: an old request \
         posted again is refused; if every {} request is refused so, check this machine's clock", .provider.name()
    )]
    Stale { provider: Provider, age_seconds: i64, window_seconds: i64 },
    #[error(
        "the signed timestamp is {ahead_seconds} s ahead of this machine's clock, more than the {window_seconds} s \
         allowed: check this machine's clock"
    )]
    Early { provider: Provider, ahead_seconds: i64, window_seconds: i64 },
}

/// A key that cannot check signatures, refused when the flow is saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the {} key is blank: {}", .provider.name(), key_fix(.provider))]
    Blank { provider: Provider },
    #[error("the {} key is not one ({why}): {}", .provider.name(), key_fix(.provider))]
    Malformed { provider: Provider, why: String },
}

fn key_fix(provider: &Provider) -> &'static str {
    match *provider {
        Provider::SendGrid => {
            "paste the verification key SendGrid shows with the Event Webhook's signature verification (base64 text \
             that starts with MFkw)"
        }
        Provider::Mailgun => "paste the HTTP webhook signing key from Mailgun's Webhooks page",
        _ => "this service's requests are not signed",
    }
}

/// Refuses a body larger than [`MAX_EVENTS_BODY_BYTES`].
fn check_size(provider: Provider, body: &[u8]) -> Result<(), BodyError> {
    if body.len() > MAX_EVENTS_BODY_BYTES {
        return Err(BodyError::TooLarge { provider, bytes: body.len(), cap: MAX_EVENTS_BODY_BYTES });
    }
    Ok(())
}

/// Refuses a body of more than [`MAX_EVENTS_PER_BODY`] events.
fn check_count(provider: Provider, count: usize) -> Result<(), BodyError> {
    if count > MAX_EVENTS_PER_BODY {
        return Err(BodyError::TooManyEvents { provider, count, cap: MAX_EVENTS_PER_BODY });
    }
    Ok(())
}

/// Reads a body as JSON, after checking its size.
fn read_json(provider: Provider, body: &[u8]) -> Result<Value, BodyError> {
    check_size(provider, body)?;
    serde_json::from_slice(body).map_err(|e| BodyError::NotJson { provider, detail: e.to_string() })
}

/// The value at a path of object keys, when every step is an object that has the key.
fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| value.as_object()?.get(*key)).filter(|v| !v.is_null())
}

/// The earliest and latest instants taken as an event's time: outside them, the number was surely not seconds
/// (milliseconds given as seconds land in the year 50000).
fn plausible(time: DateTime<Utc>) -> bool {
    let earliest = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
    let latest = Utc.with_ymd_and_hms(2200, 1, 1, 0, 0, 0).unwrap();
    (earliest..latest).contains(&time)
}

/// An event read so far; what is missing is reported when it is finished.
#[derive(Default)]
struct Draft {
    message_id: Option<MessageId>,
    kind: Option<EventKind>,
    occurred_at: Option<DateTime<Utc>>,
    email: Option<EmailAddress>,
    contact_id: Option<uuid::Uuid>,
    campaign: Option<String>,
    subject: Option<String>,
    url: Option<String>,
    reason: Option<String>,
    provider_event_id: Option<String>,
}

/// Reads the fields of one event, keeping every problem found.
struct EventReader {
    provider: Provider,
    index: usize,
    problems: Vec<EventProblem>,
}

impl EventReader {
    fn new(provider: Provider, index: usize) -> EventReader {
        EventReader { provider, index, problems: Vec::new() }
    }

    fn problem(&mut self, field: &str, message: impl Into<String>) {
        self.problems.push(EventProblem::new(self.index, field, message));
    }

    fn missing(&mut self, field: &str, what: &str) {
        let message = match self.provider {
            Provider::Dynsync => format!("is missing: give {what} in every event"),
            provider => {
                format!("is missing: every {} event gives {what}; check what posted this body", provider.name())
            }
        };
        self.problem(field, message);
    }

    /// A text field: a string, trimmed (blank is absent), or a number read as its digits. Anything else is a
    /// problem.
    fn text(&mut self, field: &str, value: Option<&Value>) -> Option<String> {
        match value? {
            Value::String(text) => Some(text.trim()).filter(|t| !t.is_empty()).map(str::to_owned),
            Value::Number(number) => Some(number.to_string()),
            other => {
                self.problem(field, format!("is {}, not text: send it as a string, or leave it out", describe(other)));
                None
            }
        }
    }

    /// A text field that must be there.
    fn required_text(&mut self, field: &str, value: Option<&Value>, what: &str) -> Option<String> {
        let had_problem = self.problems.len();
        let text = self.text(field, value);
        if text.is_none() && self.problems.len() == had_problem {
            self.missing(field, what);
        }
        text
    }

    fn message_id(&mut self, field: &str, value: Option<&Value>) -> Option<MessageId> {
        let text = self.required_text(field, value, "the id of the message it is about")?;
        match MessageId::parse(&text) {
            Ok(id) => Some(id),
            Err(why) => {
                self.problem(field, format!("is not a message id: {why}; give the id the service gave the message"));
                None
            }
        }
    }

    fn email(&mut self, field: &str, value: Option<&Value>) -> Option<EmailAddress> {
        let text = self.required_text(field, value, "the recipient's address")?;
        self.address(field, &text)
    }

    fn address(&mut self, field: &str, text: &str) -> Option<EmailAddress> {
        match EmailAddress::parse(text) {
            Ok(email) => Some(email),
            Err(why) => {
                self.problem(field, format!("'{text}' is not an email address: {why}; give the recipient's address"));
                None
            }
        }
    }

    /// `dynsync_contact_id` from the sender's custom data: a GUID, or absent.
    fn contact_id(&mut self, field: &str, value: Option<&Value>) -> Option<uuid::Uuid> {
        let text = self.text(field, value)?;
        match uuid::Uuid::try_parse(text.trim_matches(|c| c == '{' || c == '}')) {
            Ok(id) => Some(id),
            Err(_) => {
                self.problem(
                    field,
                    format!(
                        "'{text}' is not a Dynamics contact id (a GUID such as 2f4b6d3e-0000-0000-0000-000000000001): \
                         pass the contact's `contactid` when sending, or leave it out to match the contact by address"
                    ),
                );
                None
            }
        }
    }

    /// Seconds since 1970, whole or with a fraction (milliseconds are kept), as a number or as digits.
    fn unix_seconds(&mut self, field: &str, value: Option<&Value>) -> Option<DateTime<Utc>> {
        let Some(value) = value else {
            self.missing(field, "the time of the event");
            return None;
        };
        let seconds = match value {
            Value::Number(number) => number.as_f64(),
            Value::String(text) => text.trim().parse::<f64>().ok(),
            _ => None,
        };
        let time = seconds
            .filter(|s| s.is_finite())
            .and_then(|s| Utc.timestamp_millis_opt((s * 1000.0).round() as i64).single())
            .filter(|t| plausible(*t));
        if time.is_none() {
            self.problem(
                field,
                format!(
                    "is {}, not a time in seconds since 1970 between the years 2000 and 2200: send the event's time \
                     as the service gives it",
                    describe(value)
                ),
            );
        }
        time
    }

    /// A time as RFC 3339 text (`2017-08-05T00:41:02.669Z`).
    fn rfc3339(&mut self, field: &str, value: Option<&Value>) -> Option<DateTime<Utc>> {
        let text = self.required_text(field, value, "the time of the event")?;
        let time = DateTime::parse_from_rfc3339(&text).ok().map(|t| t.with_timezone(&Utc)).filter(|t| plausible(*t));
        if time.is_none() {
            self.problem(
                field,
                format!(
                    "'{text}' is not a time in RFC 3339 between the years 2000 and 2200: give it as \
                     2024-05-01T12:30:00Z or with an offset, such as 2024-05-01T14:30:00+02:00"
                ),
            );
        }
        time
    }

    /// The event, or every problem found in it.
    fn finish(mut self, draft: Draft) -> Result<EmailEvent, Vec<EventProblem>> {
        match (draft.message_id, draft.kind, draft.occurred_at, draft.email) {
            (Some(message_id), Some(kind), Some(occurred_at), Some(email)) if self.problems.is_empty() => {
                Ok(EmailEvent {
                    provider: self.provider,
                    message_id,
                    kind,
                    occurred_at,
                    email,
                    contact_id: draft.contact_id,
                    campaign: draft.campaign,
                    subject: draft.subject,
                    url: draft.url,
                    reason: draft.reason,
                    provider_event_id: draft.provider_event_id,
                })
            }
            _ => {
                if self.problems.is_empty() {
                    // Every reader above reports what it could not read; this is a guard, not a path.
                    self.problem("(event)", "could not be read whole; report this body to dynsync's maintainers");
                }
                Err(self.problems)
            }
        }
    }
}

/// An object's keys that a strict format does not know, each with the known key it is closest to.
fn unknown_fields<'a>(object: &'a Map<String, Value>, known: &[&'static str]) -> Vec<(&'a str, Option<&'static str>)> {
    object.keys().filter(|key| !known.contains(&key.as_str())).map(|key| (key.as_str(), closest(key, known))).collect()
}

/// The known name a typo most likely meant: the same but for case, or at most two edits away.
fn closest(name: &str, known: &[&'static str]) -> Option<&'static str> {
    let lower = name.to_lowercase();
    known
        .iter()
        .map(|k| (*k, edit_distance(&lower, &k.to_lowercase())))
        .filter(|(_, distance)| *distance <= 2)
        .min_by_key(|(_, distance)| *distance)
        .map(|(k, _)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_read_and_write_as_lower_case_names() {
        for provider in Provider::ALL {
            assert_eq!(provider.as_str().parse::<Provider>().unwrap(), provider);
            assert_eq!(serde_json::to_value(provider).unwrap(), provider.as_str());
        }
        assert_eq!(" SendGrid ".parse::<Provider>().unwrap(), Provider::SendGrid);
        assert!("postmark".parse::<Provider>().unwrap_err().to_string().contains("give sendgrid, mailgun, ses"));
    }

    #[test]
    fn a_body_over_the_size_cap_is_refused_whole_saying_the_cap_and_what_to_do() {
        let body = vec![b' '; MAX_EVENTS_BODY_BYTES + 1];
        for provider in Provider::ALL {
            let err = parse(provider, &body).unwrap_err();
            assert!(matches!(err, BodyError::TooLarge { .. }), "{provider}: {err}");
            let text = err.to_string();
            assert!(text.contains("(8 MiB)") && text.contains("send the events in smaller bodies"), "{text}");
        }
    }

    #[test]
    fn a_body_that_is_not_json_names_the_service_and_its_shape() {
        let err = parse(Provider::SendGrid, b"event=open&email=a@b.co").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("the body is not JSON ("), "{text}");
        assert!(text.contains("SendGrid posts a JSON list of events"), "{text}");
    }

    #[test]
    fn a_typo_is_matched_to_the_field_it_most_likely_meant() {
        let known = ["messageId", "occurredAt", "email"];
        assert_eq!(closest("occuredAt", &known), Some("occurredAt"));
        assert_eq!(closest("MessageID", &known), Some("messageId"));
        assert_eq!(closest("e-mail", &known), Some("email"));
        assert_eq!(closest("colour", &known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn refused_counts_events_not_problems() {
        let parsed = Parsed {
            events: vec![],
            problems: vec![
                EventProblem::new(1, "email", "x"),
                EventProblem::new(1, "timestamp", "y"),
                EventProblem::new(4, "event", "z"),
            ],
        };
        assert_eq!(parsed.refused(), 2);
        let reports = parsed.by_event();
        assert_eq!(reports.len(), 2);
        assert_eq!(
            reports[0].to_string(),
            "the event is refused, 2 problems:\nevent 1: email: x\nevent 1: timestamp: y"
        );
        assert_eq!(reports[1].to_string(), "the event is refused: event 4: event: z");
    }
}
