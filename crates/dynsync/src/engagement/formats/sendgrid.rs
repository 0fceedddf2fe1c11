//! SendGrid's Event Webhook: a JSON list of events per POST, signed with ECDSA when "Signed Event Webhook" is on.
//!
//! The contract:
//! - [`parse`] reads every event type SendGrid documents: `processed` (sent), `delivered`, `deferred`, `dropped`,
//!   `bounce` (`type: "bounce"` is a hard bounce, `type: "blocked"` a soft one), `open`, `click`, `spamreport`,
//!   `unsubscribe` and `group_unsubscribe` (unsubscribed), `group_resubscribe` (resubscribed). The account event
//!   `account_status_change` is about the SendGrid account, not a recipient: it is a problem saying to untick it.
//! - The message id is `sg_message_id` as SendGrid gives it; the event's id is `sg_event_id`; `timestamp` is unix
//!   seconds. Custom args come as top-level fields of each event: `dynsync_contact_id` and `campaign` are read
//!   from there, and `category` (a text or a list: the first) is the campaign when there is no `campaign`.
//! - [`verify`] checks the signature: ECDSA P-256 with SHA-256 over the `X-Twilio-Email-Event-Webhook-Timestamp`
//!   header's text followed by the raw body bytes, the signature being the base64 DER in
//!   `X-Twilio-Email-Event-Webhook-Signature`, the key the base64 DER (SubjectPublicKeyInfo) public key SendGrid
//!   shows. [`SendGridKey::parse`] checks that key when the flow is saved.
//!
//! Why: the signature is over the raw bytes, so [`verify`] takes them as received, before any JSON reading.

use super::{
    BodyError, Draft, EventReader, KeyError, Parsed, Provider, SignatureError, at, check_count, describe, read_json,
};
use crate::engagement::event::{EmailEvent, EventKind, EventProblem};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use p256::ecdsa::signature::DigestVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The header that carries the signature (base64 DER).
pub const SIGNATURE_HEADER: &str = "X-Twilio-Email-Event-Webhook-Signature";
/// The header that carries the signed timestamp.
pub const TIMESTAMP_HEADER: &str = "X-Twilio-Email-Event-Webhook-Timestamp";

/// The event types SendGrid documents, in its order.
pub const EVENT_TYPES: [&str; 12] = [
    "processed",
    "dropped",
    "delivered",
    "deferred",
    "bounce",
    "open",
    "click",
    "spamreport",
    "unsubscribe",
    "group_unsubscribe",
    "group_resubscribe",
    "account_status_change",
];

const PROVIDER: Provider = Provider::SendGrid;

/// Reads an Event Webhook body: each event that reads is taken, each that does not is a problem.
pub fn parse(body: &[u8]) -> Result<Parsed, BodyError> {
    let value = read_json(PROVIDER, body)?;
    let Value::Array(items) = value else {
        return Err(BodyError::Shape { provider: PROVIDER, what: format!("the body is {}", describe(&value)) });
    };
    check_count(PROVIDER, items.len())?;
    let mut parsed = Parsed::default();
    for (index, item) in items.iter().enumerate() {
        parsed.add(read_event(index, item));
    }
    Ok(parsed)
}

fn read_event(index: usize, item: &Value) -> Result<EmailEvent, Vec<EventProblem>> {
    let mut reader = EventReader::new(PROVIDER, index);
    if !item.is_object() {
        reader.problem(
            "(event)",
            format!("is {}, not an event: SendGrid posts each event as {{\"email\": …, \"event\": …}}", describe(item)),
        );
        return Err(reader.problems);
    }
    let field = |name: &str| at(item, &[name]);
    let mut draft = Draft {
        email: reader.email("email", field("email")),
        occurred_at: reader.unix_seconds("timestamp", field("timestamp")),
        ..Draft::default()
    };
    let event_type = reader.required_text("event", field("event"), "its type in `event`");
    draft.kind = event_type.as_deref().and_then(|t| kind(&mut reader, item, t));
    draft.message_id = reader.message_id("sg_message_id", field("sg_message_id"));
    draft.provider_event_id = reader.text("sg_event_id", field("sg_event_id"));
    draft.contact_id = reader.contact_id("dynsync_contact_id", field("dynsync_contact_id"));
    let campaign = reader.text("campaign", field("campaign"));
    draft.campaign = campaign.or_else(|| category(&mut reader, field("category")));
    match draft.kind {
        Some(EventKind::Clicked) => draft.url = reader.text("url", field("url")),
        Some(EventKind::Deferred) => draft.reason = reader.text("response", field("response")),
        Some(EventKind::Bounced { .. } | EventKind::Dropped) => {
            let reason = reader.text("reason", field("reason"));
            let classification = reader.text("bounce_classification", field("bounce_classification"));
            draft.reason = match (reason, classification) {
                (Some(reason), Some(class)) => Some(format!("{reason} ({class})")),
                (reason, class) => reason.or(class),
            };
        }
        Some(EventKind::Unsubscribed | EventKind::Resubscribed) => {
            draft.reason = reader.text("asm_group_id", field("asm_group_id")).map(|g| format!("unsubscribe group {g}"));
        }
        _ => {}
    }
    reader.finish(draft)
}

/// The kind of a SendGrid event type; a problem for an account event or a type SendGrid does not document.
fn kind(reader: &mut EventReader, item: &Value, event_type: &str) -> Option<EventKind> {
    Some(match event_type {
        "processed" => EventKind::Sent,
        "delivered" => EventKind::Delivered,
        "deferred" => EventKind::Deferred,
        "dropped" => EventKind::Dropped,
        "bounce" => return bounce_kind(reader, item),
        "open" => EventKind::Opened,
        "click" => EventKind::Clicked,
        "spamreport" => EventKind::SpamComplaint,
        "unsubscribe" | "group_unsubscribe" => EventKind::Unsubscribed,
        "group_resubscribe" => EventKind::Resubscribed,
        "account_status_change" => {
            reader.problem(
                "event",
                "is `account_status_change`, a notice about the SendGrid account, not about a recipient: dynsync \
                 takes email events only; untick \"Account status change\" in the Event Webhook's settings",
            );
            return None;
        }
        other => {
            reader.problem(
                "event",
                format!(
                    "'{other}' is not an event type SendGrid documents ({}): check what posted this body",
                    EVENT_TYPES.join(", ")
                ),
            );
            return None;
        }
    })
}

/// `type: "bounce"` is a hard bounce, `type: "blocked"` a soft one; without `type`, the SMTP `status` class says.
fn bounce_kind(reader: &mut EventReader, item: &Value) -> Option<EventKind> {
    let bounce_type = reader.text("type", at(item, &["type"]));
    match bounce_type.as_deref() {
        Some("bounce") => return Some(EventKind::Bounced { hard: true }),
        Some("blocked") => return Some(EventKind::Bounced { hard: false }),
        Some(other) => {
            reader.problem(
                "type",
                format!(
                    "'{other}' is not a bounce type SendGrid documents: `bounce` (the address refused the mail for \
                     good, a hard bounce) or `blocked` (the server refused it for now, a soft bounce)"
                ),
            );
            return None;
        }
        None => {}
    }
    match reader.text("status", at(item, &["status"])).as_deref().and_then(|s| s.chars().next()) {
        Some('5') => Some(EventKind::Bounced { hard: true }),
        Some('4') => Some(EventKind::Bounced { hard: false }),
        _ => {
            reader.problem(
                "type",
                "is missing, and so is an SMTP `status` of 4.x.x or 5.x.x: a SendGrid bounce says `bounce` (a hard \
                 bounce) or `blocked` (a soft bounce) in `type`",
            );
            None
        }
    }
}

/// SendGrid's `category`: a text, or a list of texts of which the first is taken.
fn category(reader: &mut EventReader, value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Array(items) => match items.first() {
            Some(first) => reader.text("category[0]", Some(first)),
            None => None,
        },
        other => reader.text("category", Some(other)),
    }
}

/// SendGrid's public verification key of a Signed Event Webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendGridKey(VerifyingKey);

impl SendGridKey {
    /// Reads the key as SendGrid shows it: base64 DER (SubjectPublicKeyInfo) of a P-256 key. PEM framing and line
    /// breaks, as a copy from a file may have them, are accepted.
    pub fn parse(text: &str) -> Result<SendGridKey, KeyError> {
        let base64: String = text
            .lines()
            .filter(|line| !line.trim_start().starts_with("-----"))
            .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
            .collect();
        if base64.is_empty() {
            return Err(KeyError::Blank { provider: PROVIDER });
        }
        let malformed = |why: String| KeyError::Malformed { provider: PROVIDER, why };
        let der = BASE64.decode(&base64).map_err(|e| malformed(format!("it is not base64: {e}")))?;
        VerifyingKey::from_public_key_der(&der)
            .map(SendGridKey)
            .map_err(|e| malformed(format!("it is not a P-256 public key in DER: {e}")))
    }

    /// The key as SendGrid shows it, for storing.
    pub fn to_base64(&self) -> String {
        let der = p256::PublicKey::from(&self.0).to_public_key_der().expect("a P-256 public key always encodes");
        BASE64.encode(der.as_bytes())
    }
}

/// Checks that `body` was signed by SendGrid with `key`: `signature_b64` and `timestamp` are the values of the
/// [`SIGNATURE_HEADER`] and [`TIMESTAMP_HEADER`] headers, `body` the raw bytes as received.
pub fn verify(key: &SendGridKey, signature_b64: &str, timestamp: &str, body: &[u8]) -> Result<(), SignatureError> {
    let signature_b64 = signature_b64.trim();
    if signature_b64.is_empty() {
        return Err(SignatureError::Missing {
            provider: PROVIDER,
            what: "X-Twilio-Email-Event-Webhook-Signature header",
        });
    }
    if timestamp.is_empty() {
        return Err(SignatureError::Missing {
            provider: PROVIDER,
            what: "X-Twilio-Email-Event-Webhook-Timestamp header",
        });
    }
    let malformed = |why: String| SignatureError::Malformed { provider: PROVIDER, what: "signature", why };
    let der = BASE64.decode(signature_b64).map_err(|e| malformed(format!("it is not base64: {e}")))?;
    let signature =
        Signature::from_der(&der).map_err(|_| malformed("it is not an ECDSA signature in DER".to_owned()))?;
    let signed = Sha256::new().chain_update(timestamp.as_bytes()).chain_update(body);
    key.0.verify_digest(signed, &signature).map_err(|_| SignatureError::Mismatch { provider: PROVIDER })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer;

    /// The example of SendGrid's Event Webhook reference, one event of each type, with custom args added.
    const DOCUMENTED: &str = r#"[
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"processed","category":"cat facts","sg_event_id":"sg_event_id","sg_message_id":"sg_message_id",
       "dynsync_contact_id":"2f4b6d3e-1a2b-4c5d-8e9f-0a1b2c3d4e5f","campaign":"spring"},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"deferred","category":"cat facts","sg_event_id":"sg_event_id","sg_message_id":"sg_message_id",
       "response":"400 try again later","attempt":"5"},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"delivered","category":"cat facts","sg_event_id":"sg_event_id","sg_message_id":"sg_message_id",
       "response":"250 OK"},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"open","category":"cat facts","sg_event_id":"sg_event_id","sg_message_id":"sg_message_id",
       "useragent":"Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322; .NET CLR 2.0.50727)",
       "ip":"255.255.255.255","sg_machine_open":false},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"click","category":"cat facts","sg_event_id":"sg_event_id","sg_message_id":"sg_message_id",
       "useragent":"Mozilla/4.0","ip":"255.255.255.255","url":"http://www.sendgrid.com/"},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"bounce","category":"cat facts","sg_event_id":"sg_event_id","sg_message_id":"sg_message_id",
       "reason":"500 unknown recipient","status":"5.0.0","type":"bounce","bounce_classification":"Invalid Address"},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"bounce","category":"cat facts","sg_event_id":"sg_event_id","sg_message_id":"sg_message_id",
       "reason":"452 mailbox full","status":"4.2.2","type":"blocked"},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"dropped","category":"cat facts","sg_event_id":"sg_event_id","sg_message_id":"sg_message_id",
       "reason":"Bounced Address","status":"5.0.0"},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"spamreport","category":"cat facts","sg_event_id":"sg_event_id","sg_message_id":"sg_message_id"},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"unsubscribe","category":"cat facts","sg_event_id":"sg_event_id","sg_message_id":"sg_message_id"},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"group_unsubscribe","category":"cat facts","sg_event_id":"sg_event_id","sg_message_id":"sg_message_id",
       "useragent":"Mozilla/4.0","ip":"255.255.255.255","url":"http://www.sendgrid.com/","asm_group_id":10},
      {"email":"example@test.com","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event":"group_resubscribe","category":"cat facts","sg_event_id":"sg_event_id","sg_message_id":"sg_message_id",
       "useragent":"Mozilla/4.0","ip":"255.255.255.255","url":"http://www.sendgrid.com/","asm_group_id":10}
    ]"#;

    fn parsed(body: &str) -> Parsed {
        parse(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_documented_event_type_is_read_into_its_kind() {
        let parsed = parsed(DOCUMENTED);
        assert_eq!(parsed.problems, []);
        let kinds: Vec<EventKind> = parsed.events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Sent,
                EventKind::Deferred,
                EventKind::Delivered,
                EventKind::Opened,
                EventKind::Clicked,
                EventKind::Bounced { hard: true },
                EventKind::Bounced { hard: false },
                EventKind::Dropped,
                EventKind::SpamComplaint,
                EventKind::Unsubscribed,
                EventKind::Unsubscribed,
                EventKind::Resubscribed,
            ]
        );
        let first = &parsed.events[0];
        assert_eq!(first.provider, Provider::SendGrid);
        assert_eq!(first.message_id.as_str(), "sg_message_id");
        assert_eq!(first.email.as_str(), "example@test.com");
        assert_eq!(first.occurred_at, Utc.timestamp_opt(1_513_299_569, 0).unwrap());
        assert_eq!(first.provider_event_id.as_deref(), Some("sg_event_id"));
        assert_eq!(first.contact_id, Some("2f4b6d3e-1a2b-4c5d-8e9f-0a1b2c3d4e5f".parse().unwrap()));
        assert_eq!(first.campaign.as_deref(), Some("spring"), "the custom arg wins over the category");
        assert_eq!(parsed.events[1].campaign.as_deref(), Some("cat facts"), "the category when there is no campaign");
        assert_eq!(parsed.events[1].reason.as_deref(), Some("400 try again later"));
        assert_eq!(parsed.events[2].reason, None, "a delivery's 250 OK is not a reason");
        assert_eq!(parsed.events[4].url.as_deref(), Some("http://www.sendgrid.com/"));
        assert_eq!(parsed.events[5].reason.as_deref(), Some("500 unknown recipient (Invalid Address)"));
        assert_eq!(parsed.events[6].reason.as_deref(), Some("452 mailbox full"));
        assert_eq!(parsed.events[7].reason.as_deref(), Some("Bounced Address"));
        assert_eq!(parsed.events[10].reason.as_deref(), Some("unsubscribe group 10"));
        assert_eq!(parsed.events[10].url, None, "the link of an unsubscribe page is not a click");
    }

    #[test]
    fn a_category_list_gives_its_first_category_as_the_campaign() {
        let parsed = parsed(
            r#"[{"email":"a@b.co","timestamp":1513299569,"event":"open","sg_message_id":"m",
                "category":["newsletter","march"]}]"#,
        );
        assert_eq!(parsed.events[0].campaign.as_deref(), Some("newsletter"));
    }

    #[test]
    fn one_bad_event_never_fails_the_others_and_each_bad_one_is_named_by_index_and_field() {
        let parsed = parsed(
            r#"[
              {"email":"a@b.co","timestamp":1513299569,"event":"open","sg_message_id":"m1"},
              {"email":"not an address","timestamp":1513299569,"event":"open","sg_message_id":"m2"},
              {"email":"c@d.co","timestamp":1513299569,"event":"open","sg_message_id":"m3"},
              {"email":"e@f.co","timestamp":1513299569,"event":"opened","sg_message_id":"m4"},
              {"email":"g@h.co","timestamp":1513299569,"event":"click","sg_message_id":"m5","dynsync_contact_id":"42"},
              {"email":"i@j.co","event":"click","sg_message_id":"m6"},
              "open",
              {"email":"k@l.co","timestamp":1513299569123,"event":"open","sg_message_id":"m8"},
              {"email":"m@n.co","timestamp":1513299569,"event":"account_status_change","sg_message_id":"m9"}
            ]"#,
        );
        let ids: Vec<&str> = parsed.events.iter().map(|e| e.message_id.as_str()).collect();
        assert_eq!(ids, ["m1", "m3"]);
        let places: Vec<(usize, &str)> = parsed.problems.iter().map(|p| (p.index, p.field.as_str())).collect();
        assert_eq!(
            places,
            [
                (1, "email"),
                (3, "event"),
                (4, "dynsync_contact_id"),
                (5, "timestamp"),
                (6, "(event)"),
                (7, "timestamp"),
                (8, "event")
            ]
        );
        assert_eq!(parsed.refused(), 7);
        let text: Vec<String> = parsed.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            text[0],
            "event 1: email: 'not an address' is not an email address: it contains a space; give the recipient's address"
        );
        assert!(
            text[1].contains("'opened' is not an event type SendGrid documents (processed, dropped"),
            "{}",
            text[1]
        );
        assert!(text[2].contains("'42' is not a Dynamics contact id"), "{}", text[2]);
        assert!(text[3].contains("timestamp: is missing: every SendGrid event gives the time"), "{}", text[3]);
        assert!(text[5].contains("not a time in seconds since 1970"), "{}", text[5]);
        assert!(text[6].contains("untick \"Account status change\""), "{}", text[6]);
    }

    #[test]
    fn every_problem_of_one_event_is_reported_at_once() {
        let parsed = parsed(r#"[{"email":"x","event":"bounce","type":"soft","timestamp":"yesterday"}]"#);
        let fields: Vec<&str> = parsed.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["email", "timestamp", "type", "sg_message_id"]);
        assert_eq!(parsed.refused(), 1);
    }

    #[test]
    fn a_bounce_without_a_type_is_told_apart_by_its_smtp_status() {
        let parsed = parsed(
            r#"[{"email":"a@b.co","timestamp":1513299569,"event":"bounce","sg_message_id":"m","status":"5.1.1"},
                {"email":"a@b.co","timestamp":1513299569,"event":"bounce","sg_message_id":"m","status":"4.2.2"},
                {"email":"a@b.co","timestamp":1513299569,"event":"bounce","sg_message_id":"m"}]"#,
        );
        let kinds: Vec<EventKind> = parsed.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Bounced { hard: true }, EventKind::Bounced { hard: false }]);
        assert_eq!((parsed.problems[0].index, parsed.problems[0].field.as_str()), (2, "type"));
    }

    #[test]
    fn a_body_that_is_not_a_list_is_refused_whole() {
        let err = parse(br#"{"email":"a@b.co","event":"open"}"#).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "the body is an object ({\"email\":\"a@b.co\",\"event\":\"open\"}): SendGrid posts a JSON list"
            ),
            "{err}"
        );
        assert!(matches!(parse(b"").unwrap_err(), BodyError::NotJson { .. }));
    }

    #[test]
    fn a_body_of_more_events_than_the_cap_is_refused_whole_saying_the_cap() {
        let body = format!("[{}]", vec!["{}"; super::super::MAX_EVENTS_PER_BODY + 1].join(","));
        let err = parse(body.as_bytes()).unwrap_err();
        assert!(matches!(err, BodyError::TooManyEvents { count: 10_001, cap: 10_000, .. }), "{err}");
        assert!(err.to_string().contains("send them in bodies of at most 10000"), "{err}");
    }

    fn signing_key() -> SigningKey {
        SigningKey::from_slice(&[7; 32]).unwrap()
    }

    fn public_key_of(signing: &SigningKey) -> String {
        BASE64.encode(p256::PublicKey::from(signing.verifying_key()).to_public_key_der().unwrap().as_bytes())
    }

    fn sign(signing: &SigningKey, timestamp: &str, body: &[u8]) -> String {
        let signature: Signature = signing.sign(&[timestamp.as_bytes(), body].concat());
        BASE64.encode(signature.to_der().as_bytes())
    }

    #[test]
    fn a_body_signed_with_the_key_verifies() {
        let signing = signing_key();
        let key = SendGridKey::parse(&public_key_of(&signing)).unwrap();
        let body = DOCUMENTED.as_bytes();
        let signature = sign(&signing, "1588788367", body);
        assert_eq!(verify(&key, &signature, "1588788367", body), Ok(()));
    }

    #[test]
    fn sendgrids_own_test_vector_verifies() {
        // The key, signature and payload SendGrid's SDKs test their verification with.
        let key = SendGridKey::parse(
            "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==",
        )
        .unwrap();
        let signature =
            "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0=";
        let payload = br#"{"category":"example_payload","event":"test_event","message_id":"message_id"}"#;
        assert_eq!(verify(&key, signature, "1588788367", payload), Ok(()));
        assert_eq!(
            verify(&key, signature, "1388788367", payload),
            Err(SignatureError::Mismatch { provider: Provider::SendGrid })
        );
    }

    #[test]
    fn a_tampered_body_a_tampered_timestamp_and_another_key_do_not_verify() {
        let signing = signing_key();
        let key = SendGridKey::parse(&public_key_of(&signing)).unwrap();
        let body = DOCUMENTED.as_bytes();
        let signature = sign(&signing, "1588788367", body);
        let refused = SignatureError::Mismatch { provider: Provider::SendGrid };
        let mismatch = Err(refused.clone());
        let tampered = DOCUMENTED.replace("\"dropped\"", "\"delivered\"");
        assert_eq!(verify(&key, &signature, "1588788367", tampered.as_bytes()), mismatch);
        assert_eq!(verify(&key, &signature, "1588788368", body), mismatch);
        let other = SendGridKey::parse(&public_key_of(&SigningKey::from_slice(&[8; 32]).unwrap())).unwrap();
        assert_eq!(verify(&other, &signature, "1588788367", body), mismatch);
        let text = refused.to_string();
        assert!(text.contains("check that the flow's key is the one SendGrid shows now"), "{text}");
    }

    #[test]
    fn a_malformed_or_missing_signature_is_refused_saying_which() {
        let key = SendGridKey::parse(&public_key_of(&signing_key())).unwrap();
        let not_base64 = verify(&key, "%%%", "1588788367", b"[]").unwrap_err();
        assert!(matches!(not_base64, SignatureError::Malformed { .. }), "{not_base64}");
        assert!(not_base64.to_string().contains("it is not base64"), "{not_base64}");
        let not_der = verify(&key, &BASE64.encode([1, 2, 3]), "1588788367", b"[]").unwrap_err();
        assert!(not_der.to_string().contains("not an ECDSA signature in DER"), "{not_der}");
        let missing = verify(&key, " ", "1588788367", b"[]").unwrap_err();
        assert!(missing.to_string().contains("no X-Twilio-Email-Event-Webhook-Signature header"), "{missing}");
        let no_time = verify(&key, &sign(&signing_key(), "1", b"[]"), "", b"[]").unwrap_err();
        assert!(no_time.to_string().contains("no X-Twilio-Email-Event-Webhook-Timestamp header"), "{no_time}");
    }

    #[test]
    fn a_key_is_checked_when_saved_and_may_come_with_pem_framing() {
        let plain = public_key_of(&signing_key());
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n", &plain[..64], &plain[64..]);
        assert_eq!(SendGridKey::parse(&pem).unwrap(), SendGridKey::parse(&plain).unwrap());
        assert_eq!(SendGridKey::parse(&plain).unwrap().to_base64(), plain);
        assert_eq!(SendGridKey::parse("  ").unwrap_err(), KeyError::Blank { provider: Provider::SendGrid });
        let not_base64 = SendGridKey::parse("not a key!").unwrap_err().to_string();
        assert!(not_base64.contains("it is not base64") && not_base64.contains("starts with MFkw"), "{not_base64}");
        let not_p256 = SendGridKey::parse(&BASE64.encode(b"0123456789")).unwrap_err().to_string();
        assert!(not_p256.contains("it is not a P-256 public key in DER"), "{not_p256}");
    }
}
