//! One email event, whichever service sent it: the typed value every format in [`super::formats`] reads into, and
//! what the engagement job writes onto a contact's timeline.
//!
//! The contract:
//! - An [`EmailEvent`] holds only checked values: a [`MessageId`] that is not blank, an [`EmailAddress`] trimmed,
//!   lower-cased and shaped like an address, an [`EventKind`] from a closed list. A value that fails its check never
//!   becomes an event: it becomes an [`EventProblem`] naming the event's place in its body, the field as the
//!   service names it, and the fix.
//! - [`EventKind`] is written as one flat string (`"opened"`, `"hard-bounce"`), the same in dynsync's own JSON, in
//!   the store and on the REST API; [`EventKind::opts_out`] says which events set the contact's opt-out fields.
//! - [`EventKey`] is the idempotency key of an event: the same event posted twice, by a retrying service or by
//!   two dynsync processes, gives the same key, of at most 100 characters, so that it can be a Dataverse
//!   alternate-key value and a job key.
//!
//! Why: four services describe one open four ways; the job, the store and the dashboard should know one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

use super::formats::Provider;

/// An email event, read from a service's body and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailEvent {
    pub provider: Provider,
    /// The message the event is about, as the service names it (SendGrid's `sg_message_id` as is).
    pub message_id: MessageId,
    pub kind: EventKind,
    /// When it happened, by the service's clock; milliseconds are kept when the service gives them.
    pub occurred_at: DateTime<Utc>,
    /// The recipient.
    pub email: EmailAddress,
    /// The Dynamics contact, when the sender attached `dynsync_contact_id` to the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<uuid::Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The link, for a click.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The service's own words, for a bounce, a drop, a delay or a complaint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The service's id of this one event, when it has one (SendGrid's `sg_event_id`, Mailgun's `id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_event_id: Option<String>,
}

impl EmailEvent {
    /// The idempotency key of this event.
    pub fn key(&self) -> EventKey {
        EventKey::new(&self.message_id, self.kind, self.occurred_at, &self.email)
    }
}

/// What happened to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The service accepted the message for sending.
    Sent,
    /// The recipient's server accepted it.
    Delivered,
    Opened,
    Clicked,
    /// The recipient's server refused it: `hard` when the address does not exist or will never take mail, soft
    /// when the refusal may pass.
    Bounced {
        hard: bool,
    },
    /// The service did not send it (a suppressed address, a rejected message).
    Dropped,
    /// Delivery was put off and will be tried again.
    Deferred,
    SpamComplaint,
    Unsubscribed,
    Resubscribed,
}

impl EventKind {
    /// Every kind, in the order of a message's life.
    pub const ALL: [EventKind; 11] = [
        EventKind::Sent,
        EventKind::Delivered,
        EventKind::Opened,
        EventKind::Clicked,
        EventKind::Bounced { hard: true },
        EventKind::Bounced { hard: false },
        EventKind::Dropped,
        EventKind::Deferred,
        EventKind::SpamComplaint,
        EventKind::Unsubscribed,
        EventKind::Resubscribed,
    ];

    /// The kind as written in JSON: `sent`, `hard-bounce`, `spam-complaint`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Sent => "sent",
            EventKind::Delivered => "delivered",
            EventKind::Opened => "opened",
            EventKind::Clicked => "clicked",
            EventKind::Bounced { hard: true } => "hard-bounce",
            EventKind::Bounced { hard: false } => "soft-bounce",
            EventKind::Dropped => "dropped",
            EventKind::Deferred => "deferred",
            EventKind::SpamComplaint => "spam-complaint",
            EventKind::Unsubscribed => "unsubscribed",
            EventKind::Resubscribed => "resubscribed",
        }
    }

    /// What a marketer calls it, for the activity on the timeline: "Opened", "Hard bounce".
    pub fn label(self) -> &'static str {
        match self {
            EventKind::Sent => "Sent",
            EventKind::Delivered => "Delivered",
            EventKind::Opened => "Opened",
            EventKind::Clicked => "Clicked",
            EventKind::Bounced { hard: true } => "Hard bounce",
            EventKind::Bounced { hard: false } => "Soft bounce",
            EventKind::Dropped => "Dropped",
            EventKind::Deferred => "Deferred",
            EventKind::SpamComplaint => "Spam complaint",
            EventKind::Unsubscribed => "Unsubscribed",
            EventKind::Resubscribed => "Resubscribed",
        }
    }

    /// Whether the event sets the contact's opt-out fields: a hard bounce, a spam complaint, an unsubscribe.
    pub fn opts_out(self) -> bool {
        matches!(self, EventKind::Bounced { hard: true } | EventKind::SpamComplaint | EventKind::Unsubscribed)
    }

    /// Whether the event clears them again: the recipient subscribed again.
    pub fn opts_in(self) -> bool {
        self == EventKind::Resubscribed
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that is not one of the [`EventKind`] strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{given}' is not an event type: give one of {}", EventKind::ALL.map(EventKind::as_str).join(", "))]
pub struct UnknownKind {
    pub given: String,
}

impl FromStr for EventKind {
    type Err = UnknownKind;

    fn from_str(text: &str) -> Result<EventKind, UnknownKind> {
        let wanted = text.trim();
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == wanted)
            .ok_or_else(|| UnknownKind { given: text.to_owned() })
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The id of a message, as its service gives it: trimmed, never blank, at most 400 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    /// The longest id kept: longer than any service's, short enough for a Dataverse text column.
    pub const MAX_CHARS: usize = 400;

    /// Checks the id; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<MessageId, &'static str> {
        let text = text.trim();
        if text.is_empty() {
            return Err("it is blank");
        }
        if text.chars().any(char::is_control) {
            return Err("it contains a control character");
        }
        if text.chars().count() > Self::MAX_CHARS {
            return Err("it is longer than the 400 characters a message id may have");
        }
        Ok(MessageId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        MessageId::parse(&text).map_err(|why| serde::de::Error::custom(format!("'{text}' is not a message id: {why}")))
    }
}

/// A recipient's address: trimmed, lower-cased, one `@`, a domain with a dot, no spaces, at most 254 characters.
/// Lower-cased because the services do not agree on case and one person must be one contact.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Checks the shape; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<EmailAddress, &'static str> {
        // Checked once lower-cased: what is kept is what was checked, so it reads back as itself.
        crate::email::check_address(&text.to_lowercase()).map(|text| EmailAddress(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        EmailAddress::parse(&text)
            .map_err(|why| serde::de::Error::custom(format!("'{text}' is not an email address: {why}")))
    }
}

/// The idempotency key of an event: `{kind}:{occurred-at in unix milliseconds}:{email}:{message id}`, or, when
/// that is longer than 100 characters, the SHA-256 of it in 64 hex digits. The same event gives the same key in
/// every run and every process.
///
/// The recipient is part of the key because one message can go to several people: a bounce of one Amazon SES
/// message to three addresses is three events at the same instant, and must stay three.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey(String);

impl EventKey {
    /// The longest key: the length of the Dataverse alternate-key column it is written to.
    pub const MAX_CHARS: usize = 100;

    pub fn new(message_id: &MessageId, kind: EventKind, occurred_at: DateTime<Utc>, email: &EmailAddress) -> EventKey {
        let text = format!("{kind}:{}:{email}:{message_id}", occurred_at.timestamp_millis());
        if text.chars().count() <= Self::MAX_CHARS {
            return EventKey(text);
        }
        let digest = Sha256::digest(text.as_bytes());
        EventKey(digest.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A text that cannot be an [`EventKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{given}' is not an event key: {why}; an event key is made by dynsync from the event, not typed")]
pub struct BadEventKey {
    pub given: String,
    pub why: &'static str,
}

impl FromStr for EventKey {
    type Err = BadEventKey;

    /// Reads a key back as it was written: any text of 1 to 100 characters without control characters.
    fn from_str(text: &str) -> Result<EventKey, BadEventKey> {
        let why = if text.is_empty() {
            Some("it is empty")
        } else if text.chars().count() > Self::MAX_CHARS {
            Some("it is longer than 100 characters")
        } else if text.chars().any(char::is_control) {
            Some("it contains a control character")
        } else {
            None
        };
        match why {
            Some(why) => Err(BadEventKey { given: text.to_owned(), why }),
            None => Ok(EventKey(text.to_owned())),
        }
    }
}

impl Serialize for EventKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One thing wrong with one event of a body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventProblem {
    /// The event's place in its body, counted from 0 as in a JSON path (`[3]`); for an Amazon SES notification,
    /// the place of the recipient among those the notification names.
    pub index: usize,
    /// The field as the service names it: `email`, `event-data.severity`, `mail.tags.dynsync_contact_id`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl EventProblem {
    pub fn new(index: usize, field: impl Into<String>, message: impl Into<String>) -> EventProblem {
        EventProblem { index, field: field.into(), message: message.into() }
    }
}

impl fmt::Display for EventProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {}: {}: {}", self.index, self.field, self.message)
    }
}

/// Everything wrong with one event, found at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}", listing(.problems))]
pub struct EventProblems {
    pub problems: Vec<EventProblem>,
}

impl EventProblems {
    /// Whether a problem concerns this field.
    pub fn concerns(&self, field: &str) -> bool {
        self.problems.iter().any(|p| p.field == field)
    }
}

fn listing(problems: &[EventProblem]) -> String {
    let items: Vec<String> = problems.iter().map(EventProblem::to_string).collect();
    match items.as_slice() {
        [one] => format!("the event is refused: {one}"),
        many => format!("the event is refused, {} problems:\n{}", many.len(), many.join("\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(millis: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(millis).unwrap()
    }

    fn event(message_id: &str) -> EmailEvent {
        EmailEvent {
            provider: Provider::SendGrid,
            message_id: MessageId::parse(message_id).unwrap(),
            kind: EventKind::Bounced { hard: true },
            occurred_at: at(1_513_299_569_123),
            email: EmailAddress::parse("Example@Test.com").unwrap(),
            contact_id: Some(uuid::Uuid::from_u128(7)),
            campaign: Some("cat facts".into()),
            subject: None,
            url: None,
            reason: Some("500 unknown recipient".into()),
            provider_event_id: Some("sg_event_id".into()),
        }
    }

    #[test]
    fn an_event_key_is_the_kind_the_time_the_recipient_and_the_message() {
        let key = event("14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0").key();
        assert_eq!(
            key.as_str(),
            "hard-bounce:1513299569123:example@test.com:14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"
        );
        assert_eq!(key, event("14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0").key(), "stable");
    }

    #[test]
    fn a_long_message_id_gives_a_hashed_key_of_64_hex_digits_that_is_stable() {
        let long = format!("<{}@mail.example.com>", "x".repeat(300));
        let key = event(&long).key();
        assert_eq!(key.as_str().len(), 64);
        assert!(key.as_str().chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        // The hash is of the readable text, so it is the same in every process (not a random-seeded hasher).
        let readable = format!("hard-bounce:1513299569123:example@test.com:{long}");
        let expected: String = Sha256::digest(readable.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(key.as_str(), expected);
        assert_ne!(key, event(&format!("<{}@mail.example.com>", "y".repeat(300))).key());
    }

    #[test]
    fn every_key_is_at_most_100_characters() {
        for length in [1, 10, 40, 50, 60, 100, 400] {
            let key = event(&"m".repeat(length)).key();
            assert!(key.as_str().chars().count() <= EventKey::MAX_CHARS, "{length}: {key}");
        }
    }

    #[test]
    fn two_recipients_of_one_message_bouncing_at_once_have_two_keys() {
        let mut other = event("m-1");
        other.email = EmailAddress::parse("someone@else.com").unwrap();
        assert_ne!(event("m-1").key(), other.key());
    }

    #[test]
    fn an_event_key_round_trips_through_text_and_json() {
        for key in [event("m-1").key(), event(&"m".repeat(200)).key()] {
            assert_eq!(key.to_string().parse::<EventKey>().unwrap(), key);
            let json = serde_json::to_string(&key).unwrap();
            assert_eq!(json, format!("\"{key}\""));
            assert_eq!(serde_json::from_str::<EventKey>(&json).unwrap(), key);
        }
        assert!("".parse::<EventKey>().is_err());
        assert!("k".repeat(101).parse::<EventKey>().unwrap_err().to_string().contains("longer than 100"));
        assert!(serde_json::from_str::<EventKey>("\"a\\nb\"").is_err());
    }

    #[test]
    fn kinds_are_flat_strings_in_json_and_read_back() {
        for kind in EventKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), kind);
        }
        assert_eq!(serde_json::to_string(&EventKind::Bounced { hard: false }).unwrap(), "\"soft-bounce\"");
        let wrong = "bounced".parse::<EventKind>().unwrap_err().to_string();
        assert!(wrong.contains("'bounced' is not an event type: give one of sent, delivered"), "{wrong}");
        assert!(wrong.contains("hard-bounce, soft-bounce"), "{wrong}");
    }

    #[test]
    fn hard_bounces_complaints_and_unsubscribes_opt_out_and_a_resubscribe_opts_in() {
        let out: Vec<EventKind> = EventKind::ALL.into_iter().filter(|k| k.opts_out()).collect();
        assert_eq!(out, [EventKind::Bounced { hard: true }, EventKind::SpamComplaint, EventKind::Unsubscribed]);
        let back: Vec<EventKind> = EventKind::ALL.into_iter().filter(|k| k.opts_in()).collect();
        assert_eq!(back, [EventKind::Resubscribed]);
        assert_eq!(EventKind::Bounced { hard: true }.label(), "Hard bounce");
        assert_eq!(EventKind::Opened.label(), "Opened");
    }

    #[test]
    fn addresses_are_trimmed_lower_cased_and_checked() {
        assert_eq!(
            EmailAddress::parse("  Some.One+tag@Contoso.CO.uk ").unwrap().as_str(),
            "some.one+tag@contoso.co.uk"
        );
        for (bad, why) in [
            ("", "it is blank"),
            ("someone", "it has no '@'"),
            ("@contoso.com", "nothing comes before the '@'"),
            ("a@contoso", "it has no '.'"),
            ("a@b@contoso.com", "more than one '@'"),
            ("a b@contoso.com", "a space"),
            ("a@contoso..com", "an empty part"),
        ] {
            let err = EmailAddress::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let long = format!("{}@contoso.com", "a".repeat(250));
        assert!(EmailAddress::parse(&long).unwrap_err().contains("254"));
    }

    #[test]
    fn message_ids_are_trimmed_and_never_blank_or_too_long() {
        assert_eq!(MessageId::parse("  <a@b>  ").unwrap().as_str(), "<a@b>");
        assert_eq!(MessageId::parse(" ").unwrap_err(), "it is blank");
        assert!(MessageId::parse(&"m".repeat(400)).is_ok());
        assert!(MessageId::parse(&"m".repeat(401)).unwrap_err().contains("400"));
    }

    #[test]
    fn an_event_round_trips_through_camel_case_json_and_its_values_are_checked_when_read() {
        let event = event("m-1");
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["messageId"], "m-1");
        assert_eq!(json["kind"], "hard-bounce");
        assert_eq!(json["email"], "example@test.com");
        assert_eq!(json["occurredAt"], "2017-12-15T00:59:29.123Z");
        assert_eq!(json["provider"], "sendgrid");
        assert_eq!(json["providerEventId"], "sg_event_id");
        assert!(json.get("subject").is_none());
        assert_eq!(serde_json::from_value::<EmailEvent>(json.clone()).unwrap(), event);
        let mut bad = json;
        bad["email"] = "not an address".into();
        let err = serde_json::from_value::<EmailEvent>(bad).unwrap_err().to_string();
        assert!(err.contains("'not an address' is not an email address"), "{err}");
    }

    #[test]
    fn problems_read_as_event_field_and_fix() {
        let problem = EventProblem::new(3, "email", "'x' is not an email address; give the recipient's address");
        assert_eq!(problem.to_string(), "event 3: email: 'x' is not an email address; give the recipient's address");
        let two = EventProblems { problems: vec![problem.clone(), EventProblem::new(3, "timestamp", "is missing")] };
        assert!(two.to_string().starts_with("the event is refused, 2 problems:\nevent 3: email:"), "{two}");
        assert!(two.concerns("timestamp"));
        assert_eq!(
            EventProblems { problems: vec![problem] }.to_string(),
            "the event is refused: event 3: email: 'x' is not an email address; give the recipient's address"
        );
    }
}
