//! Mailgun's webhooks, in their current JSON form: one event per POST, `{"signature": {…}, "event-data": {…}}`,
//! signed inside the body.
//!
//! The contract:
//! - [`parse`] reads every event type Mailgun documents for mail sent: `accepted` (sent), `rejected` (dropped),
//!   `delivered`, `failed`, `opened`, `clicked`, `unsubscribed`, `complained`. A `failed` event is read by its
//!   `severity`: `temporary` is a deferral (Mailgun tries again); `permanent` is a hard bounce, except a refusal
//!   to send to a suppressed address (`reason: "suppress-…"`), which is a drop, and the end of retries
//!   (`reason: "old"`), which is a soft bounce: neither says that the address does not exist. `stored` (an
//!   incoming message) and the mailing-list events are not about mail sent: they are problems saying so.
//! - The message id is `message.headers.message-id` (angle brackets taken off, as Mailgun's send API gives them),
//!   the recipient `recipient`, the event's id `id`, the time `timestamp` (seconds with a fraction: milliseconds
//!   are kept). `dynsync_contact_id` and `campaign` come from `user-variables`; the first of `tags` is the campaign
//!   when there is no `campaign`.
//! - [`verify`] checks the signature: the hex HMAC-SHA256, under the webhook signing key, of `timestamp` followed
//!   by `token`, compared in constant time; `parent-signature` (a subaccount's event signed with the primary
//!   account's key) is accepted as well. A timestamp farther than the window from the `now` passed in, either way,
//!   is refused, so that a request captured once cannot be posted again later.
//!
//! The older form-encoded webhooks are not read: Mailgun sends JSON to every webhook made since 2018.

use super::{
    BodyError, Draft, EventReader, KeyError, MAX_EVENTS_BODY_BYTES, Parsed, Provider, SignatureError, at, describe,
    read_json,
};
use crate::engagement::event::{EmailEvent, EventKind, EventProblem};
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::fmt;

/// How far a signed timestamp may be from now: long enough for Mailgun's queue, short enough that a captured
/// request is soon useless.
pub const REPLAY_WINDOW: TimeDelta = TimeDelta::minutes(15);

/// The event types Mailgun documents.
pub const EVENT_TYPES: [&str; 12] = [
    "accepted",
    "rejected",
    "delivered",
    "failed",
    "opened",
    "clicked",
    "unsubscribed",
    "complained",
    "stored",
    "list_member_uploaded",
    "list_member_upload_error",
    "list_uploaded",
];

const PROVIDER: Provider = Provider::Mailgun;

/// Reads a webhook body: one event, taken or refused with its problems.
pub fn parse(body: &[u8]) -> Result<Parsed, BodyError> {
    let value = read_json(PROVIDER, body)?;
    let Some(data) = at(&value, &["event-data"]).filter(|d| d.is_object()) else {
        let what = match at(&value, &["event-data"]) {
            Some(other) => format!("its `event-data` is {}", describe(other)),
            None if value.is_object() => "the body has no `event-data`".to_owned(),
            None => format!("the body is {}", describe(&value)),
        };
        return Err(BodyError::Shape { provider: PROVIDER, what });
    };
    let mut parsed = Parsed::default();
    parsed.add(read_event(data));
    Ok(parsed)
}

fn read_event(data: &Value) -> Result<EmailEvent, Vec<EventProblem>> {
    let mut reader = EventReader::new(PROVIDER, 0);
    let field = |path: &[&str]| at(data, path);
    let mut draft = Draft {
        email: reader.email("event-data.recipient", field(&["recipient"])),
        occurred_at: reader.unix_seconds("event-data.timestamp", field(&["timestamp"])),
        ..Draft::default()
    };
    let event_type = reader.required_text("event-data.event", field(&["event"]), "its type in `event`");
    draft.kind = event_type.as_deref().and_then(|t| kind(&mut reader, data, t));
    let message_id_field = "event-data.message.headers.message-id";
    let message_id = field(&["message", "headers", "message-id"]).map(|id| match id {
        Value::String(text) => Value::String(without_angle_brackets(text).to_owned()),
        other => other.clone(),
    });
    draft.message_id = reader.message_id(message_id_field, message_id.as_ref());
    draft.provider_event_id = reader.text("event-data.id", field(&["id"]));
    draft.subject = reader.text("event-data.message.headers.subject", field(&["message", "headers", "subject"]));
    draft.contact_id = reader
        .contact_id("event-data.user-variables.dynsync_contact_id", field(&["user-variables", "dynsync_contact_id"]));
    let campaign = reader.text("event-data.user-variables.campaign", field(&["user-variables", "campaign"]));
    draft.campaign = campaign.or_else(|| match field(&["tags"]) {
        Some(Value::Array(tags)) => tags.first().and_then(|tag| reader.text("event-data.tags[0]", Some(tag))),
        _ => None,
    });
    match draft.kind {
        Some(EventKind::Clicked) => draft.url = reader.text("event-data.url", field(&["url"])),
        Some(EventKind::Bounced { .. } | EventKind::Deferred | EventKind::Dropped) => {
            draft.reason = failure_reason(&mut reader, data);
        }
        _ => {}
    }
    reader.finish(draft)
}

/// `<id@host>` as Mailgun's send API answers it, `id@host` as its webhooks give it: one id.
fn without_angle_brackets(text: &str) -> &str {
    let text = text.trim();
    text.strip_prefix('<').and_then(|t| t.strip_suffix('>')).unwrap_or(text)
}

fn kind(reader: &mut EventReader, data: &Value, event_type: &str) -> Option<EventKind> {
    Some(match event_type {
        "accepted" => EventKind::Sent,
        "rejected" => EventKind::Dropped,
        "delivered" => EventKind::Delivered,
        "failed" => return failure_kind(reader, data),
        "opened" => EventKind::Opened,
        "clicked" => EventKind::Clicked,
        "unsubscribed" => EventKind::Unsubscribed,
        "complained" => EventKind::SpamComplaint,
        "stored" | "list_member_uploaded" | "list_member_upload_error" | "list_uploaded" => {
            reader.problem(
                "event-data.event",
                format!(
                    "is `{event_type}`, which is about {}, not about mail sent to a recipient: dynsync takes email \
                     events only; leave this event out of the webhooks that point at dynsync",
                    if event_type == "stored" { "a message received" } else { "a mailing list" }
                ),
            );
            return None;
        }
        other => {
            reader.problem(
                "event-data.event",
                format!(
                    "'{other}' is not an event type Mailgun documents ({}): check what posted this body",
                    EVENT_TYPES.join(", ")
                ),
            );
            return None;
        }
    })
}

/// A `failed` event by its `severity` and `reason`.
fn failure_kind(reader: &mut EventReader, data: &Value) -> Option<EventKind> {
    let severity = reader.text("event-data.severity", at(data, &["severity"]));
    let reason = reader.text("event-data.reason", at(data, &["reason"])).unwrap_or_default();
    match severity.as_deref() {
        Some("temporary") => Some(EventKind::Deferred),
        Some("permanent") if reason.starts_with("suppress-") => Some(EventKind::Dropped),
        Some("permanent") if reason == "old" => Some(EventKind::Bounced { hard: false }),
        Some("permanent") => Some(EventKind::Bounced { hard: true }),
        Some(other) => {
            reader.problem(
                "event-data.severity",
                format!("'{other}' is not a severity Mailgun documents: a failure is `permanent` or `temporary`"),
            );
            None
        }
        None => {
            reader.problem(
                "event-data.severity",
                "is missing: a Mailgun failure says whether it is `permanent` (a bounce) or `temporary` (tried again)",
            );
            None
        }
    }
}

/// The server's words: `delivery-status.description`, else its `message`, with the SMTP code; for a rejection,
/// `reject.reason`; else Mailgun's `reason`.
fn failure_reason(reader: &mut EventReader, data: &Value) -> Option<String> {
    let status = ["event-data.delivery-status.description", "event-data.delivery-status.message"];
    let words = reader
        .text(status[0], at(data, &["delivery-status", "description"]))
        .or_else(|| reader.text(status[1], at(data, &["delivery-status", "message"])))
        .or_else(|| reader.text("event-data.reject.reason", at(data, &["reject", "reason"])))
        .or_else(|| reader.text("event-data.reason", at(data, &["reason"])))?;
    match reader.text("event-data.delivery-status.code", at(data, &["delivery-status", "code"])) {
        Some(code) if !words.starts_with(&code) => Some(format!("{code} {words}")),
        _ => Some(words),
    }
}

/// The webhook signing key of a Mailgun account (Mailgun's "HTTP webhook signing key"). A secret: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct MailgunKey(String);

impl MailgunKey {
    /// Checks the key as pasted: not blank, no space inside.
    pub fn parse(text: &str) -> Result<MailgunKey, KeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyError::Blank { provider: PROVIDER });
        }
        if text.contains(char::is_whitespace) {
            return Err(KeyError::Malformed { provider: PROVIDER, why: "it contains a space".to_owned() });
        }
        Ok(MailgunKey(text.to_owned()))
    }

    /// The key, for sealing it into the store.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MailgunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MailgunKey(***)")
    }
}

/// The `signature` object of a Mailgun webhook body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailgunSignature {
    /// Seconds since 1970, as text.
    pub timestamp: String,
    pub token: String,
    /// Hex HMAC-SHA256 of `timestamp` + `token`.
    pub signature: String,
    /// The same, under the primary account's key, for a subaccount's event.
    pub parent_signature: Option<String>,
}

impl MailgunSignature {
    /// Reads the `signature` object of a webhook body.
    pub fn from_body(body: &[u8]) -> Result<MailgunSignature, SignatureError> {
        let malformed = |why: String| SignatureError::Malformed { provider: PROVIDER, what: "body", why };
        if body.len() > MAX_EVENTS_BODY_BYTES {
            return Err(malformed(format!("it is larger than {MAX_EVENTS_BODY_BYTES} bytes")));
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| malformed(format!("it is not JSON: {e}")))?;
        let Some(signature) = at(&value, &["signature"]) else {
            return Err(SignatureError::Missing { provider: PROVIDER, what: "`signature` object in its body" });
        };
        let text = |key: &'static str| match at(signature, &[key]) {
            Some(Value::String(text)) => Ok(text.trim().to_owned()),
            Some(Value::Number(number)) => Ok(number.to_string()),
            Some(other) => Err(malformed(format!("`signature.{key}` is {}, not text", describe(other)))),
            None => Err(malformed(format!("`signature.{key}` is missing"))),
        };
        Ok(MailgunSignature {
            timestamp: text("timestamp")?,
            token: text("token")?,
            signature: text("signature")?,
            parent_signature: text("parent-signature").ok().filter(|s| !s.is_empty()),
        })
    }
}

/// Checks a signature with the key, and that its timestamp is within `window` of `now` either way.
pub fn verify(
    key: &MailgunKey,
    signature: &MailgunSignature,
    now: DateTime<Utc>,
    window: TimeDelta,
) -> Result<(), SignatureError> {
    let malformed =
        |what: &'static str, why: &str| SignatureError::Malformed { provider: PROVIDER, what, why: why.into() };
    let mut mac = Hmac::<Sha256>::new_from_slice(key.0.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(signature.timestamp.as_bytes());
    mac.update(signature.token.as_bytes());
    let given = decode_hex(&signature.signature).ok_or_else(|| malformed("signature", "it is not 64 hex digits"))?;
    let parent = signature.parent_signature.as_deref().and_then(decode_hex);
    let matches = |bytes: &[u8]| mac.clone().verify_slice(bytes).is_ok();
    if !matches(&given) && !parent.is_some_and(|p| matches(&p)) {
        return Err(SignatureError::Mismatch { provider: PROVIDER });
    }
    let seconds: i64 =
        signature.timestamp.parse().map_err(|_| malformed("signed timestamp", "it is not seconds since 1970"))?;
    let signed_at = DateTime::from_timestamp(seconds, 0)
        .ok_or_else(|| malformed("signed timestamp", "it is not seconds since 1970"))?;
    let age = now - signed_at;
    if age > window {
        return Err(SignatureError::Stale {
            provider: PROVIDER,
            age_seconds: age.num_seconds(),
            window_seconds: window.num_seconds(),
        });
    }
    if -age > window {
        return Err(SignatureError::Early {
            provider: PROVIDER,
            ahead_seconds: (-age).num_seconds(),
            window_seconds: window.num_seconds(),
        });
    }
    Ok(())
}

/// Reads the signature from a webhook body and checks it: [`MailgunSignature::from_body`] then [`verify`].
pub fn verify_body(key: &MailgunKey, body: &[u8], now: DateTime<Utc>, window: TimeDelta) -> Result<(), SignatureError> {
    verify(key, &MailgunSignature::from_body(body)?, now, window)
}

/// 64 hex digits (either case) as the 32 bytes of a SHA-256 HMAC.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A body shaped like Mailgun's documented webhook payloads, for an event type and its own fields.
    fn body(event: &str, extra: &str) -> String {
        format!(
            r#"{{
              "signature": {{"timestamp": "1529006854", "token": "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0",
                            "signature": "d2271d12299f6592d9d44cd9d250f0704e4674c30d79d07c47a66f95ce71cf55"}},
              "event-data": {{
                "event": "{event}", "timestamp": 1521472262.908181, "id": "CPgfbmQMTCKtHW6uIWtuVe",
                "log-level": "info", "recipient": "Alice@Example.com", "recipient-domain": "example.com",
                "tags": ["my_tag_1", "my_tag_2"],
                "user-variables": {{"dynsync_contact_id": "2f4b6d3e-1a2b-4c5d-8e9f-0a1b2c3d4e5f", "my-var-2": "awesome"}},
                "envelope": {{"transport": "smtp", "sender": "bob@sandbox.mailgun.org", "targets": "alice@example.com"}},
                "flags": {{"is-routed": false, "is-authenticated": true, "is-test-mode": false}},
                "message": {{"headers": {{"to": "Alice <alice@example.com>",
                  "message-id": "20130503182626.18666.16540@sandbox.mailgun.org", "from": "Bob <bob@sandbox.mailgun.org>",
                  "subject": "Test {event} webhook"}}, "attachments": [], "size": 111}}
                {extra}
              }}
            }}"#
        )
    }

    fn event(event: &str, extra: &str) -> EmailEvent {
        let parsed = parse(body(event, extra).as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.problems, [], "{event}");
        parsed.events.into_iter().next().unwrap()
    }

    #[test]
    fn a_delivered_event_is_read_whole() {
        let event = event(
            "delivered",
            r#", "delivery-status": {"tls": true, "code": 250, "description": "", "attempt-no": 1, "message": "OK"}"#,
        );
        assert_eq!(event.kind, EventKind::Delivered);
        assert_eq!(event.provider, Provider::Mailgun);
        assert_eq!(event.email.as_str(), "alice@example.com");
        assert_eq!(event.message_id.as_str(), "20130503182626.18666.16540@sandbox.mailgun.org");
        assert_eq!(event.occurred_at, Utc.timestamp_millis_opt(1_521_472_262_908).unwrap(), "milliseconds kept");
        assert_eq!(event.provider_event_id.as_deref(), Some("CPgfbmQMTCKtHW6uIWtuVe"));
        assert_eq!(event.subject.as_deref(), Some("Test delivered webhook"));
        assert_eq!(event.contact_id, Some("2f4b6d3e-1a2b-4c5d-8e9f-0a1b2c3d4e5f".parse().unwrap()));
        assert_eq!(event.campaign.as_deref(), Some("my_tag_1"), "the first tag when there is no campaign variable");
        assert_eq!(event.reason, None);
    }

    #[test]
    fn every_documented_event_type_for_mail_sent_is_read_into_its_kind() {
        let permanent = |reason: &str| {
            format!(
                r#", "severity": "permanent", "reason": "{reason}", "delivery-status": {{"attempt-no": 1, "message": "",
                   "code": 605, "description": "Not delivering to previously bounced address", "session-seconds": 0.0}}"#
            )
        };
        let cases = [
            ("accepted", String::new(), EventKind::Sent),
            (
                "rejected",
                r#", "reject": {"reason": "Sandbox subdomains are for test purposes only"}"#.into(),
                EventKind::Dropped,
            ),
            ("delivered", String::new(), EventKind::Delivered),
            ("failed", permanent("bounce"), EventKind::Bounced { hard: true }),
            ("failed", permanent("suppress-bounce"), EventKind::Dropped),
            ("failed", permanent("old"), EventKind::Bounced { hard: false }),
            (
                "failed",
                r#", "severity": "temporary", "reason": "generic", "delivery-status": {"code": 452,
                   "message": "4.2.2 The email account that you tried to reach is over quota", "description": ""}"#
                    .into(),
                EventKind::Deferred,
            ),
            ("opened", r#", "ip": "50.56.129.169", "geolocation": {"country": "US"}"#.into(), EventKind::Opened),
            ("clicked", r#", "url": "https://example.com/offer""#.into(), EventKind::Clicked),
            ("unsubscribed", String::new(), EventKind::Unsubscribed),
            ("complained", String::new(), EventKind::SpamComplaint),
        ];
        for (name, extra, kind) in cases {
            assert_eq!(event(name, &extra).kind, kind, "{name} {extra}");
        }
        assert_eq!(
            event("clicked", r#", "url": "https://example.com/offer""#).url.as_deref(),
            Some("https://example.com/offer")
        );
        assert_eq!(
            event("failed", &permanent("bounce")).reason.as_deref(),
            Some("605 Not delivering to previously bounced address")
        );
        let temporary = event(
            "failed",
            r#", "severity": "temporary", "delivery-status": {"code": 452, "message": "4.2.2 over quota"}"#,
        );
        assert_eq!(temporary.reason.as_deref(), Some("452 4.2.2 over quota"));
        let rejected = event("rejected", r#", "reject": {"reason": "Sandbox subdomains are for test purposes only"}"#);
        assert_eq!(rejected.reason.as_deref(), Some("Sandbox subdomains are for test purposes only"));
    }

    #[test]
    fn a_campaign_variable_wins_over_the_tags_and_angle_brackets_come_off_the_message_id() {
        let body = body("opened", "").replace(r#""my-var-2": "awesome""#, r#""campaign": "spring""#).replace(
            "20130503182626.18666.16540@sandbox.mailgun.org",
            "<20130503182626.18666.16540@sandbox.mailgun.org>",
        );
        let event = parse(body.as_bytes()).unwrap().events.remove(0);
        assert_eq!(event.campaign.as_deref(), Some("spring"));
        assert_eq!(event.message_id.as_str(), "20130503182626.18666.16540@sandbox.mailgun.org");
    }

    #[test]
    fn an_event_not_about_mail_sent_or_not_documented_is_a_problem_naming_the_field() {
        for (name, words) in [
            ("stored", "a message received"),
            ("list_uploaded", "a mailing list"),
            ("bounced", "not an event type Mailgun documents"),
        ] {
            let parsed = parse(body(name, "").as_bytes()).unwrap();
            assert_eq!(parsed.events, []);
            assert_eq!(parsed.problems.len(), 1, "{name}");
            assert_eq!(parsed.problems[0].field, "event-data.event");
            assert!(parsed.problems[0].message.contains(words), "{}", parsed.problems[0]);
        }
        let unknown_severity = parse(body("failed", r#", "severity": "fatal""#).as_bytes()).unwrap();
        assert_eq!(unknown_severity.problems[0].field, "event-data.severity");
    }

    #[test]
    fn every_problem_of_the_event_is_reported_at_once() {
        let body = body("failed", "")
            .replace("Alice@Example.com", "alice")
            .replace("1521472262.908181", "\"soon\"")
            .replace(r#""2f4b6d3e-1a2b-4c5d-8e9f-0a1b2c3d4e5f""#, r#""contact-7""#);
        let parsed = parse(body.as_bytes()).unwrap();
        let fields: Vec<&str> = parsed.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "event-data.recipient",
                "event-data.timestamp",
                "event-data.severity",
                "event-data.user-variables.dynsync_contact_id"
            ]
        );
        assert!(parsed.problems.iter().all(|p| p.index == 0));
    }

    #[test]
    fn a_body_without_event_data_is_refused_whole() {
        for (body, what) in [
            (r#"{"signature": {}}"#, "the body has no `event-data`"),
            (r#"{"event-data": "delivered"}"#, "its `event-data` is a string"),
            ("[1]", "the body is a list"),
        ] {
            let err = parse(body.as_bytes()).unwrap_err();
            assert!(err.to_string().starts_with(what), "{err}");
            assert!(err.to_string().contains("Mailgun posts one JSON object"), "{err}");
        }
        let form = parse(b"event=delivered&recipient=alice%40example.com").unwrap_err();
        assert!(matches!(form, BodyError::NotJson { .. }), "{form}");
    }

    const KEY: &str = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";

    fn signed(timestamp: &str, token: &str, key: &str) -> MailgunSignature {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{timestamp}{token}").as_bytes());
        let signature = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        MailgunSignature { timestamp: timestamp.into(), token: token.into(), signature, parent_signature: None }
    }

    fn at_seconds(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(seconds, 0).unwrap()
    }

    const TOKEN: &str = "e0b5477167110d68991efc6b9f89f0a11066af27834600e123";

    #[test]
    fn a_fresh_signature_made_with_the_key_verifies() {
        let key = MailgunKey::parse(KEY).unwrap();
        let signature = signed("1770920772", TOKEN, KEY);
        assert_eq!(verify(&key, &signature, at_seconds(1_770_920_772 + 60), REPLAY_WINDOW), Ok(()));
        let upper = MailgunSignature { signature: signature.signature.to_uppercase(), ..signature };
        assert_eq!(verify(&key, &upper, at_seconds(1_770_920_772), REPLAY_WINDOW), Ok(()));
    }

    #[test]
    fn the_signature_is_read_from_the_body_and_checked() {
        let key = MailgunKey::parse(KEY).unwrap();
        let signature = signed("1529006854", "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0", KEY);
        let body = body("delivered", "")
            .replace("d2271d12299f6592d9d44cd9d250f0704e4674c30d79d07c47a66f95ce71cf55", &signature.signature);
        assert_eq!(MailgunSignature::from_body(body.as_bytes()).unwrap(), signature);
        assert_eq!(verify_body(&key, body.as_bytes(), at_seconds(1_529_006_900), REPLAY_WINDOW), Ok(()));
        let missing = verify_body(&key, br#"{"event-data": {}}"#, at_seconds(0), REPLAY_WINDOW).unwrap_err();
        assert!(missing.to_string().contains("has no `signature` object in its body"), "{missing}");
    }

    #[test]
    fn a_tampered_timestamp_or_token_or_another_key_does_not_verify() {
        let key = MailgunKey::parse(KEY).unwrap();
        let now = at_seconds(1_770_920_772);
        let good = signed("1770920772", TOKEN, KEY);
        let mismatch = Err(SignatureError::Mismatch { provider: Provider::Mailgun });
        let later = MailgunSignature { timestamp: "1770920773".into(), ..good.clone() };
        assert_eq!(verify(&key, &later, now, REPLAY_WINDOW), mismatch);
        let other_token = MailgunSignature { token: "f".repeat(50), ..good.clone() };
        assert_eq!(verify(&key, &other_token, now, REPLAY_WINDOW), mismatch);
        let other_key = MailgunKey::parse("key-someone-else").unwrap();
        assert_eq!(verify(&other_key, &good, now, REPLAY_WINDOW), mismatch);
    }

    #[test]
    fn a_subaccount_event_verifies_with_the_primary_accounts_key_through_the_parent_signature() {
        let primary = "key-primary-account";
        let from_subaccount = MailgunSignature {
            signature: signed("1770920772", TOKEN, "key-subaccount").signature,
            parent_signature: Some(signed("1770920772", TOKEN, primary).signature),
            ..signed("1770920772", TOKEN, primary)
        };
        let key = MailgunKey::parse(primary).unwrap();
        assert_eq!(verify(&key, &from_subaccount, at_seconds(1_770_920_772), REPLAY_WINDOW), Ok(()));
    }

    #[test]
    fn an_old_signature_is_refused_as_a_replay_and_one_from_the_future_as_a_clock_problem() {
        let key = MailgunKey::parse(KEY).unwrap();
        let signature = signed("1770920772", TOKEN, KEY);
        let replayed = verify(&key, &signature, at_seconds(1_770_920_772 + 16 * 60), REPLAY_WINDOW).unwrap_err();
        assert_eq!(
            replayed,
            SignatureError::Stale { provider: Provider::Mailgun, age_seconds: 960, window_seconds: 900 }
        );
        assert!(replayed.to_string().contains("960 s old, more than the 900 s allowed"), "{replayed}");
        let early = verify(&key, &signature, at_seconds(1_770_920_772 - 20 * 60), REPLAY_WINDOW).unwrap_err();
        assert!(matches!(early, SignatureError::Early { ahead_seconds: 1200, .. }), "{early}");
        assert_eq!(
            verify(&key, &signature, at_seconds(1_770_920_772 + 15 * 60), REPLAY_WINDOW),
            Ok(()),
            "the edge is in"
        );
    }

    #[test]
    fn a_malformed_signature_is_refused_saying_what_is_wrong() {
        let key = MailgunKey::parse(KEY).unwrap();
        let short = MailgunSignature { signature: "abc".into(), ..signed("1770920772", TOKEN, KEY) };
        let err = verify(&key, &short, at_seconds(1_770_920_772), REPLAY_WINDOW).unwrap_err();
        assert!(err.to_string().contains("the signature is not one Mailgun makes (it is not 64 hex digits)"), "{err}");
        let not_hex = MailgunSignature { signature: "z".repeat(64), ..signed("1770920772", TOKEN, KEY) };
        assert!(matches!(verify(&key, &not_hex, at_seconds(0), REPLAY_WINDOW), Err(SignatureError::Malformed { .. })));
        let bad_time = signed("yesterday", TOKEN, KEY);
        let err = verify(&key, &bad_time, at_seconds(0), REPLAY_WINDOW).unwrap_err();
        assert!(err.to_string().contains("signed timestamp is not one Mailgun makes"), "{err}");
    }

    #[test]
    fn a_key_is_checked_when_saved_and_never_printed() {
        assert_eq!(MailgunKey::parse(" ").unwrap_err(), KeyError::Blank { provider: Provider::Mailgun });
        assert!(MailgunKey::parse("key 123").unwrap_err().to_string().contains("it contains a space"));
        let key = MailgunKey::parse(KEY).unwrap();
        assert_eq!(format!("{key:?}"), "MailgunKey(***)");
        assert_eq!(key.expose(), KEY);
    }
}
