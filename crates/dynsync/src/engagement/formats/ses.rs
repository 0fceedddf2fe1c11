//! Amazon SES events, as SES event publishing sends them through an Amazon SNS topic to an HTTPS subscription.
//!
//! The contract:
//! - The POST body is an SNS message. `Type: "Notification"` carries the SES event as JSON text in `Message`;
//!   `Type: "SubscriptionConfirmation"` (and `"UnsubscribeConfirmation"`) is returned as its own
//!   [`Received`] value with its `SubscribeURL`, which is checked to be an Amazon SNS address: the caller decides
//!   whether to visit it. A body that is the SES event itself (SNS "raw message delivery") is read too.
//! - Every SES event type is read, under `eventType` (event publishing) or `notificationType` (an identity's
//!   feedback notifications): `Send` (sent), `Delivery`, `Open`, `Click`, `Bounce` (`Permanent` is a hard bounce;
//!   `Transient` and `Undetermined` are soft, as neither says that the address does not exist), `Complaint`,
//!   `Reject` and `Rendering Failure` (dropped: SES did not send), `DeliveryDelay` (deferred), `Subscription`
//!   (unsubscribed or resubscribed, from the topic preferences before and after). The notice SES sends when a
//!   topic is set up ("Successfully validated SNS topic…", `AmazonSnsSubscriptionSucceeded`) brings no event.
//! - One SES event can name several recipients: a bounce of three addresses is three events, one per
//!   `bounce.bouncedRecipients[]` (likewise complaints, delays and deliveries); the other types concern every
//!   address of `mail.destination`. A problem's index is the recipient's place in that list.
//! - The message id is `mail.messageId`, the subject `mail.commonHeaders.subject`; `dynsync_contact_id` and
//!   `campaign` are message tags (`mail.tags`, whose values are lists: the first is taken).
//! - Signatures: every SNS message (a body with `Type`: a notification and both confirmations) is signed by SNS,
//!   and the inlet refuses one whose signature does not verify before this module reads it ([`super::sns`] says
//!   how: the string SNS signs, RSA with SHA-1 or SHA-256, a `SigningCertURL` that must be one of Amazon SNS's own
//!   addresses). The certificate is fetched from that address over HTTPS and kept a day, or, where AWS cannot be
//!   reached, pinned on the flow (`snsCertificates`). A body that is the SES event itself — SNS "raw message
//!   delivery" — carries no signature: it is let in by the inlet's secret URL alone, so turn raw message delivery
//!   off on the subscription to have every message verified.
//!
//! Why the inlet, not this module, checks signatures: the certificate may have to be fetched, and this module is
//! pure. Why a `SubscribeURL` is only ever one of Amazon SNS's own addresses, even in a signed message: so that
//! dynsync never calls an address a stranger chose, should a signature check ever be bypassed.

use super::sns::is_sns_address;
use super::{BodyError, Draft, EventReader, Parsed, Provider, Received, at, check_count, describe, read_json};
use crate::engagement::event::{EmailEvent, EventKind, EventProblem};
use serde_json::Value;
use url::Url;

/// The text SES publishes once to a topic when an event destination is made; not an event.
pub const SETUP_NOTICE: &str = "Successfully validated SNS topic for Amazon SES event publishing.";

/// The SES event types (`eventType`), in SES's order.
pub const EVENT_TYPES: [&str; 10] = [
    "Bounce",
    "Complaint",
    "Delivery",
    "Send",
    "Reject",
    "Open",
    "Click",
    "Rendering Failure",
    "DeliveryDelay",
    "Subscription",
];

const PROVIDER: Provider = Provider::Ses;

/// An Amazon SNS subscription to confirm, or whose end SNS reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsConfirmation {
    pub topic_arn: String,
    /// An `https://sns.<region>.amazonaws.com/…` address; visiting it confirms the subscription.
    pub subscribe_url: Url,
    pub token: Option<String>,
    /// SNS's words to a person.
    pub message: Option<String>,
}

/// Reads an SNS POST body: the events of an SES notification, or a subscription (un)confirmation.
pub fn parse(body: &[u8]) -> Result<Received, BodyError> {
    let value = read_json(PROVIDER, body)?;
    if !value.is_object() {
        return Err(BodyError::Shape { provider: PROVIDER, what: format!("the body is {}", describe(&value)) });
    }
    if is_ses_event(&value) {
        return events(&value, None).map(Received::Events);
    }
    let shape = |what: String| BodyError::Shape { provider: PROVIDER, what };
    match at(&value, &["Type"]).and_then(Value::as_str) {
        Some("Notification") => {
            let sns_id = at(&value, &["MessageId"]).and_then(Value::as_str);
            let message = match at(&value, &["Message"]) {
                Some(Value::String(message)) => message,
                Some(other) => return Err(shape(format!("its `Message` is {}, not JSON text", describe(other)))),
                None => return Err(shape("its `Message` is missing".to_owned())),
            };
            if message.trim() == SETUP_NOTICE {
                return Ok(Received::Events(Parsed::default()));
            }
            let event: Value = serde_json::from_str(message)
                .map_err(|e| shape(format!("its `Message` is not JSON ({e}), so not an Amazon SES event")))?;
            if !is_ses_event(&event) {
                return Err(shape(format!(
                    "its `Message` is {}, which has no `eventType`: an Amazon SES event has one; check that only SES \
                     publishes to this topic",
                    describe(&event)
                )));
            }
            events(&event, sns_id).map(Received::Events)
        }
        Some("SubscriptionConfirmation") => confirmation(&value).map(Received::SubscriptionConfirmation),
        Some("UnsubscribeConfirmation") => confirmation(&value).map(Received::UnsubscribeConfirmation),
        Some(other) => Err(shape(format!(
            "its `Type` is '{other}', not one Amazon SNS sends (Notification, SubscriptionConfirmation, \
             UnsubscribeConfirmation)"
        ))),
        None => Err(shape("the body has no `Type`".to_owned())),
    }
}

fn is_ses_event(value: &Value) -> bool {
    at(value, &["eventType"]).or_else(|| at(value, &["notificationType"])).is_some()
}

fn confirmation(value: &Value) -> Result<SnsConfirmation, BodyError> {
    let shape = |what: String| BodyError::Shape { provider: PROVIDER, what };
    let text = |key: &str| at(value, &[key]).and_then(Value::as_str).map(str::to_owned);
    let topic_arn = text("TopicArn").ok_or_else(|| shape("its `TopicArn` is missing".to_owned()))?;
    let url_text = text("SubscribeURL").ok_or_else(|| shape("its `SubscribeURL` is missing".to_owned()))?;
    let subscribe_url = Url::parse(&url_text).ok().filter(is_sns_address).ok_or_else(|| {
        shape(format!(
            "its `SubscribeURL` '{url_text}' is not an Amazon SNS address (https://sns.<region>.amazonaws.com/…): \
                 it is refused, so that dynsync never visits an address a stranger chose"
        ))
    })?;
    Ok(SnsConfirmation { topic_arn, subscribe_url, token: text("Token"), message: text("Message") })
}

/// Where the recipients of an event are, and the per-recipient object when there is one.
enum Recipients {
    /// A list of addresses: `mail.destination`, `delivery.recipients`.
    Addresses(&'static [&'static str]),
    /// A list of objects with `emailAddress`: bounced, complained and delayed recipients.
    Objects(&'static [&'static str]),
}

/// The events of one SES event, one per recipient.
fn events(event: &Value, sns_message_id: Option<&str>) -> Result<Parsed, BodyError> {
    let mut parsed = Parsed::default();
    let (type_field, type_value) = match at(event, &["eventType"]) {
        Some(value) => ("eventType", value),
        None => ("notificationType", at(event, &["notificationType"]).unwrap_or(&Value::Null)),
    };
    let event_type = type_value.as_str().unwrap_or_default().trim();
    if event_type == "AmazonSnsSubscriptionSucceeded" {
        return Ok(parsed);
    }
    let (recipients, timestamp): (Recipients, &[&str]) = match event_type {
        "Send" | "Reject" | "Rendering Failure" | "RenderingFailure" => {
            (Recipients::Addresses(&["mail", "destination"]), &["mail", "timestamp"])
        }
        "Open" => (Recipients::Addresses(&["mail", "destination"]), &["open", "timestamp"]),
        "Click" => (Recipients::Addresses(&["mail", "destination"]), &["click", "timestamp"]),
        "Subscription" => (Recipients::Addresses(&["mail", "destination"]), &["subscription", "timestamp"]),
        "Delivery" => (Recipients::Addresses(&["delivery", "recipients"]), &["delivery", "timestamp"]),
        "Bounce" => (Recipients::Objects(&["bounce", "bouncedRecipients"]), &["bounce", "timestamp"]),
        "Complaint" => (Recipients::Objects(&["complaint", "complainedRecipients"]), &["complaint", "timestamp"]),
        "DeliveryDelay" => {
            (Recipients::Objects(&["deliveryDelay", "delayedRecipients"]), &["deliveryDelay", "timestamp"])
        }
        _ => {
            let given = if event_type.is_empty() { describe(type_value) } else { format!("'{event_type}'") };
            parsed.problems.push(EventProblem::new(
                0,
                type_field,
                format!(
                    "{given} is not an event type Amazon SES documents ({}): check that only SES publishes to this \
                     topic",
                    EVENT_TYPES.join(", ")
                ),
            ));
            return Ok(parsed);
        }
    };
    let path = match &recipients {
        Recipients::Addresses(path) | Recipients::Objects(path) => *path,
    };
    let list = match at(event, path) {
        Some(Value::Array(list)) if !list.is_empty() => list,
        other => {
            let found = other.map_or_else(|| "missing".to_owned(), describe);
            parsed.problems.push(EventProblem::new(
                0,
                path.join("."),
                format!(
                    "is {found}, not a list of recipients: an SES {event_type} event names whom it concerns there; \
                     check that only SES publishes to this topic"
                ),
            ));
            return Ok(parsed);
        }
    };
    check_count(PROVIDER, list.len())?;
    for (index, recipient) in list.iter().enumerate() {
        let (field, address, details) = match recipients {
            Recipients::Addresses(_) => (format!("{}[{index}]", path.join(".")), Some(recipient), None),
            Recipients::Objects(_) => {
                (format!("{}[{index}].emailAddress", path.join(".")), at(recipient, &["emailAddress"]), Some(recipient))
            }
        };
        let one = One { event, event_type, timestamp, sns_message_id, field: &field, address, details };
        parsed.add(one.read(index));
    }
    Ok(parsed)
}

/// One recipient's event of an SES event.
struct One<'a> {
    event: &'a Value,
    event_type: &'a str,
    timestamp: &'a [&'a str],
    sns_message_id: Option<&'a str>,
    /// Where the recipient's address is, for problems.
    field: &'a str,
    address: Option<&'a Value>,
    /// The recipient's own object (bounce, complaint, delay), with its diagnostic.
    details: Option<&'a Value>,
}

impl One<'_> {
    fn read(&self, index: usize) -> Result<EmailEvent, Vec<EventProblem>> {
        let event = self.event;
        let field = |path: &[&str]| at(event, path);
        let mut reader = EventReader::new(PROVIDER, index);
        let mut draft = Draft {
            email: reader.email(self.field, self.address),
            message_id: reader.message_id("mail.messageId", field(&["mail", "messageId"])),
            occurred_at: reader.rfc3339(&self.timestamp.join("."), field(self.timestamp)),
            subject: reader.text("mail.commonHeaders.subject", field(&["mail", "commonHeaders", "subject"])),
            contact_id: reader.contact_id("mail.tags.dynsync_contact_id", tag(event, "dynsync_contact_id")),
            campaign: reader.text("mail.tags.campaign", tag(event, "campaign")),
            ..Draft::default()
        };
        let details = |key: &str| self.details.and_then(|d| at(d, &[key]));
        let diagnostic_field = format!("{}diagnosticCode", self.field.trim_end_matches("emailAddress"));
        draft.kind = match self.event_type {
            "Send" => Some(EventKind::Sent),
            "Delivery" => Some(EventKind::Delivered),
            "Open" => Some(EventKind::Opened),
            "Click" => {
                draft.url = reader.text("click.link", field(&["click", "link"]));
                Some(EventKind::Clicked)
            }
            "Bounce" => {
                let bounce_type = reader.text("bounce.bounceType", field(&["bounce", "bounceType"]));
                draft.reason = reader
                    .text(&diagnostic_field, details("diagnosticCode"))
                    .or_else(|| reader.text("bounce.bounceSubType", field(&["bounce", "bounceSubType"])));
                match bounce_type.as_deref() {
                    Some("Permanent") => Some(EventKind::Bounced { hard: true }),
                    Some("Transient" | "Undetermined") => Some(EventKind::Bounced { hard: false }),
                    other => {
                        let given = other.map_or_else(|| "is missing".to_owned(), |t| format!("'{t}' is not one"));
                        reader.problem(
                            "bounce.bounceType",
                            format!(
                                "{given} of the bounce types Amazon SES documents: Permanent (a hard bounce), \
                                 Transient or Undetermined (soft)"
                            ),
                        );
                        None
                    }
                }
            }
            "Complaint" => {
                draft.reason = reader
                    .text("complaint.complaintFeedbackType", field(&["complaint", "complaintFeedbackType"]))
                    .or_else(|| reader.text("complaint.complaintSubType", field(&["complaint", "complaintSubType"])));
                Some(EventKind::SpamComplaint)
            }
            "Reject" => {
                draft.reason = reader.text("reject.reason", field(&["reject", "reason"]));
                Some(EventKind::Dropped)
            }
            "Rendering Failure" | "RenderingFailure" => {
                draft.reason = reader.text("failure.errorMessage", field(&["failure", "errorMessage"]));
                Some(EventKind::Dropped)
            }
            "DeliveryDelay" => {
                draft.reason = reader
                    .text(&diagnostic_field, details("diagnosticCode"))
                    .or_else(|| reader.text("deliveryDelay.delayType", field(&["deliveryDelay", "delayType"])));
                Some(EventKind::Deferred)
            }
            "Subscription" => {
                let (kind, reason) = subscription(event);
                draft.reason = reason;
                Some(kind)
            }
            _ => None,
        };
        let feedback_id = field(&["bounce", "feedbackId"]).or_else(|| field(&["complaint", "feedbackId"]));
        draft.provider_event_id =
            reader.text("feedbackId", feedback_id).or_else(|| self.sns_message_id.map(str::to_owned));
        reader.finish(draft)
    }
}

/// The first value of a message tag: SES gives each tag as a list of values.
fn tag<'a>(event: &'a Value, name: &str) -> Option<&'a Value> {
    match at(event, &["mail", "tags", name])? {
        Value::Array(values) => values.first(),
        other => Some(other),
    }
}

/// A subscription change: unsubscribed when the recipient left the whole list or a topic, resubscribed when they
/// came back; the reason names the list and the topics.
fn subscription(event: &Value) -> (EventKind, Option<String>) {
    let new = at(event, &["subscription", "newTopicPreferences"]);
    let old = at(event, &["subscription", "oldTopicPreferences"]);
    let all = |prefs: Option<&Value>| prefs.and_then(|p| at(p, &["unsubscribeAll"])).and_then(Value::as_bool);
    let topics = |prefs: Option<&Value>, status: &str| -> Vec<String> {
        let list = prefs.and_then(|p| at(p, &["topicSubscriptionStatus"])).and_then(Value::as_array);
        list.into_iter()
            .flatten()
            .filter(|t| at(t, &["subscriptionStatus"]).and_then(Value::as_str) == Some(status))
            .filter_map(|t| at(t, &["topicName"]).and_then(Value::as_str).map(str::to_owned))
            .collect()
    };
    let (new_all, old_all) = (all(new).unwrap_or(false), all(old).unwrap_or(false));
    let (new_out, old_out) = (topics(new, "OptOut"), topics(old, "OptOut"));
    let (new_in, old_in) = (topics(new, "OptIn"), topics(old, "OptIn"));
    let newly = |now: &[String], before: &[String]| -> Vec<String> {
        now.iter().filter(|t| !before.contains(t)).cloned().collect()
    };
    let list = at(event, &["subscription", "contactList"]).and_then(Value::as_str);
    let of_list = list.map(|l| format!(" of contact list {l}")).unwrap_or_default();
    let out_of = |topics: &[String]| format!("opted out of topic{} {}{of_list}", plural(topics), topics.join(", "));
    let into = |topics: &[String]| format!("opted in to topic{} {}{of_list}", plural(topics), topics.join(", "));
    let left_all = format!("unsubscribed from all topics{of_list}");
    let (newly_out, newly_in) = (newly(&new_out, &old_out), newly(&new_in, &old_in));
    if new_all && !old_all {
        (EventKind::Unsubscribed, Some(left_all))
    } else if !newly_out.is_empty() {
        (EventKind::Unsubscribed, Some(out_of(&newly_out)))
    } else if old_all && !new_all {
        let to_list = list.map(|l| format!(" to contact list {l}")).unwrap_or_default();
        (EventKind::Resubscribed, Some(format!("subscribed again{to_list}")))
    } else if !newly_in.is_empty() {
        (EventKind::Resubscribed, Some(into(&newly_in)))
    } else if new_all {
        (EventKind::Unsubscribed, Some(left_all))
    } else if !new_out.is_empty() {
        (EventKind::Unsubscribed, Some(out_of(&new_out)))
    } else {
        (EventKind::Resubscribed, (!new_in.is_empty()).then(|| into(&new_in)))
    }
}

fn plural(items: &[String]) -> &'static str {
    if items.len() == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    /// The `mail` object of SES's documented examples, with the dynsync tags added.
    const MAIL: &str = r#""mail": {
        "timestamp": "2017-08-05T00:40:02.012Z", "source": "Sender Name <sender@example.com>",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/sender@example.com",
        "sendingAccountId": "123456789012", "messageId": "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
        "destination": ["recipient@example.com"], "headersTruncated": false,
        "headers": [{"name": "From", "value": "Sender Name <sender@example.com>"}, {"name": "To", "value": "recipient@example.com"},
                    {"name": "Subject", "value": "Message sent from Amazon SES"}],
        "commonHeaders": {"from": ["Sender Name <sender@example.com>"], "to": ["recipient@example.com"],
                          "messageId": "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
                          "subject": "Message sent from Amazon SES"},
        "tags": {"ses:configuration-set": ["ConfigSet"], "ses:source-ip": ["192.0.2.0"], "ses:from-domain": ["example.com"],
                 "ses:caller-identity": ["ses_user"], "dynsync_contact_id": ["2f4b6d3e-1a2b-4c5d-8e9f-0a1b2c3d4e5f"],
                 "campaign": ["spring"]}
    }"#;

    /// An SNS notification carrying an SES event.
    fn notification(event_type: &str, part: &str) -> String {
        let event = format!(r#"{{"eventType": "{event_type}", {part}, {MAIL}}}"#);
        serde_json::json!({
            "Type": "Notification",
            "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
            "Message": event,
            "Timestamp": "2017-08-05T00:41:03.000Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLEpH+..",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-east-1:123456789012:ses-events:1"
        })
        .to_string()
    }

    fn events_of(body: &str) -> Parsed {
        match parse(body.as_bytes()).unwrap_or_else(|e| panic!("{e}")) {
            Received::Events(parsed) => parsed,
            other => panic!("{other:?}"),
        }
    }

    fn one(event_type: &str, part: &str) -> EmailEvent {
        let parsed = events_of(&notification(event_type, part));
        assert_eq!(parsed.problems, [], "{event_type}");
        assert_eq!(parsed.events.len(), 1, "{event_type}");
        parsed.events.into_iter().next().unwrap()
    }

    #[test]
    fn every_ses_event_type_is_read_into_its_kind() {
        let cases = [
            ("Send", r#""send": {}"#, EventKind::Sent),
            (
                "Delivery",
                r#""delivery": {"timestamp": "2017-08-05T00:41:02.669Z", "processingTimeMillis": 1028,
                   "recipients": ["recipient@example.com"], "smtpResponse": "250 2.6.0 Message received",
                   "reportingMTA": "mta.example.com"}"#,
                EventKind::Delivered,
            ),
            (
                "Open",
                r#""open": {"ipAddress": "192.0.2.1", "timestamp": "2017-08-09T22:00:19.652Z", "userAgent": "Mozilla/5.0"}"#,
                EventKind::Opened,
            ),
            (
                "Click",
                r#""click": {"ipAddress": "192.0.2.1", "link": "http://docs.aws.amazon.com/ses/latest/DeveloperGuide/send-email-smtp.html",
                   "linkTags": {"samplekey0": ["samplevalue0"]}, "timestamp": "2017-08-09T23:51:25.570Z", "userAgent": "Mozilla/5.0"}"#,
                EventKind::Clicked,
            ),
            (
                "Bounce",
                r#""bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                   "bouncedRecipients": [{"emailAddress": "recipient@example.com", "action": "failed", "status": "5.1.1",
                                          "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
                   "timestamp": "2017-08-05T00:41:02.669Z", "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000",
                   "reportingMTA": "dsn; mta.example.com"}"#,
                EventKind::Bounced { hard: true },
            ),
            (
                "Bounce",
                r#""bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull",
                   "bouncedRecipients": [{"emailAddress": "recipient@example.com"}], "timestamp": "2017-08-05T00:41:02.669Z"}"#,
                EventKind::Bounced { hard: false },
            ),
            (
                "Complaint",
                r#""complaint": {"complainedRecipients": [{"emailAddress": "recipient@example.com"}],
                   "timestamp": "2017-08-05T00:41:02.669Z", "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000",
                   "userAgent": "Mozilla/5.0", "complaintFeedbackType": "abuse", "arrivalDate": "2017-08-05T00:41:02.669Z"}"#,
                EventKind::SpamComplaint,
            ),
            ("Reject", r#""reject": {"reason": "Bad content"}"#, EventKind::Dropped),
            (
                "Rendering Failure",
                r#""failure": {"errorMessage": "Attribute 'attributeName' is not present in the rendering data.",
                   "templateName": "MyTemplate"}"#,
                EventKind::Dropped,
            ),
            (
                "DeliveryDelay",
                r#""deliveryDelay": {"timestamp": "2020-06-16T00:15:40.641Z", "delayType": "InternalFailure",
                   "expirationTime": "2020-06-16T00:25:40.914Z", "delayedRecipients": [{"emailAddress": "recipient@example.com",
                   "status": "4.4.1", "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host"}]}"#,
                EventKind::Deferred,
            ),
            (
                "Subscription",
                r#""subscription": {"contactList": "ContactListName", "timestamp": "2022-01-12T01:00:17.910Z",
                   "source": "UnsubscribeHeader",
                   "newTopicPreferences": {"unsubscribeAll": true, "topicSubscriptionStatus": [{"topicName": "ExampleTopicName", "subscriptionStatus": "OptOut"}]},
                   "oldTopicPreferences": {"unsubscribeAll": false, "topicSubscriptionStatus": [{"topicName": "ExampleTopicName", "subscriptionStatus": "OptOut"}]}}"#,
                EventKind::Unsubscribed,
            ),
        ];
        for (event_type, part, kind) in cases {
            assert_eq!(one(event_type, part).kind, kind, "{event_type}: {part}");
        }
    }

    #[test]
    fn a_bounce_is_read_whole_from_the_documented_example() {
        let event = one(
            "Bounce",
            r#""bounce": {"bounceType": "Permanent", "bounceSubType": "General",
               "bouncedRecipients": [{"emailAddress": "recipient@example.com", "action": "failed", "status": "5.1.1",
                                      "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
               "timestamp": "2017-08-05T00:41:02.669Z", "feedbackId": "01000157c44f053b-feedback"}"#,
        );
        assert_eq!(event.provider, Provider::Ses);
        assert_eq!(event.message_id.as_str(), "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000");
        assert_eq!(event.email.as_str(), "recipient@example.com");
        assert_eq!(event.occurred_at, Utc.timestamp_millis_opt(1_501_893_662_669).unwrap(), "the bounce's own time");
        assert_eq!(event.subject.as_deref(), Some("Message sent from Amazon SES"));
        assert_eq!(event.contact_id, Some("2f4b6d3e-1a2b-4c5d-8e9f-0a1b2c3d4e5f".parse().unwrap()));
        assert_eq!(event.campaign.as_deref(), Some("spring"));
        assert_eq!(event.reason.as_deref(), Some("smtp; 550 5.1.1 user unknown"));
        assert_eq!(event.provider_event_id.as_deref(), Some("01000157c44f053b-feedback"));
        let send = one("Send", r#""send": {}"#);
        assert_eq!(
            send.occurred_at,
            Utc.timestamp_millis_opt(1_501_893_602_012).unwrap(),
            "a send is at mail.timestamp"
        );
        assert_eq!(send.provider_event_id.as_deref(), Some("95df01b4-ee98-5cb9-9903-4c221d41eb5e"), "the SNS message");
        let click =
            one("Click", r#""click": {"link": "https://example.com/offer", "timestamp": "2017-08-09T23:51:25.570Z"}"#);
        assert_eq!(click.url.as_deref(), Some("https://example.com/offer"));
    }

    #[test]
    fn a_bounce_of_three_addresses_is_three_events_with_three_keys() {
        let parsed = events_of(&notification(
            "Bounce",
            r#""bounce": {"bounceType": "Permanent", "timestamp": "2017-08-05T00:41:02.669Z",
               "bouncedRecipients": [{"emailAddress": "one@example.com"}, {"emailAddress": "Two@Example.com"},
                                     {"emailAddress": "three@example.com", "diagnosticCode": "smtp; 550 no such user"}]}"#,
        ));
        let emails: Vec<&str> = parsed.events.iter().map(|e| e.email.as_str()).collect();
        assert_eq!(emails, ["one@example.com", "two@example.com", "three@example.com"]);
        assert_eq!(parsed.events[2].reason.as_deref(), Some("smtp; 550 no such user"));
        let mut keys: Vec<_> = parsed.events.iter().map(EmailEvent::key).collect();
        keys.dedup();
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn a_bad_recipient_fails_only_itself_and_is_named_by_its_place() {
        let parsed = events_of(&notification(
            "Complaint",
            r#""complaint": {"timestamp": "2017-08-05T00:41:02.669Z",
               "complainedRecipients": [{"emailAddress": "one@example.com"}, {"emailAddress": "not-an-address"},
                                        {"email": "three@example.com"}, {"emailAddress": "four@example.com"}]}"#,
        ));
        let emails: Vec<&str> = parsed.events.iter().map(|e| e.email.as_str()).collect();
        assert_eq!(emails, ["one@example.com", "four@example.com"]);
        let places: Vec<(usize, &str)> = parsed.problems.iter().map(|p| (p.index, p.field.as_str())).collect();
        assert_eq!(
            places,
            [
                (1, "complaint.complainedRecipients[1].emailAddress"),
                (2, "complaint.complainedRecipients[2].emailAddress")
            ]
        );
        assert!(
            parsed.problems[1].message.starts_with("is missing: every Amazon SES event gives the recipient's address")
        );
    }

    #[test]
    fn every_problem_of_an_event_is_reported_at_once() {
        let body = notification(
            "Bounce",
            r#""bounce": {"bounceType": "Sometimes", "bouncedRecipients": [{"emailAddress": "a@b.co"}]}"#,
        )
        .replace("2f4b6d3e-1a2b-4c5d-8e9f-0a1b2c3d4e5f", "not-a-guid");
        let parsed = events_of(&body);
        let fields: Vec<&str> = parsed.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["bounce.timestamp", "mail.tags.dynsync_contact_id", "bounce.bounceType"]);
        assert_eq!(parsed.refused(), 1);
    }

    #[test]
    fn a_type_ses_does_not_document_or_a_missing_recipient_list_is_one_problem() {
        let unknown = events_of(&notification("Bounced", r#""bounce": {}"#));
        assert_eq!(unknown.events, []);
        assert_eq!(unknown.problems.len(), 1);
        assert_eq!(unknown.problems[0].field, "eventType");
        assert!(unknown.problems[0].message.starts_with("'Bounced' is not an event type Amazon SES documents"));
        let no_list = events_of(&notification("Bounce", r#""bounce": {"bounceType": "Permanent"}"#));
        assert_eq!(no_list.problems[0].field, "bounce.bouncedRecipients");
        assert!(no_list.problems[0].message.starts_with("is missing, not a list of recipients"));
    }

    #[test]
    fn identity_notifications_under_notification_type_are_read_too() {
        let body = serde_json::json!({
            "Type": "Notification",
            "Message": serde_json::json!({
                "notificationType": "Delivery",
                "mail": {"timestamp": "2016-01-27T14:59:38.237Z", "messageId": "0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000",
                         "destination": ["jane@example.com", "mary@example.com"]},
                "delivery": {"timestamp": "2016-01-27T14:59:38.237Z", "recipients": ["jane@example.com", "mary@example.com"],
                             "processingTimeMillis": 546, "smtpResponse": "250 ok"}
            }).to_string()
        });
        let parsed = events_of(&body.to_string());
        assert_eq!(parsed.events.len(), 2);
        assert!(parsed.events.iter().all(|e| e.kind == EventKind::Delivered && e.contact_id.is_none()));
    }

    #[test]
    fn a_raw_ses_event_without_the_sns_envelope_is_read() {
        let raw = format!(r#"{{"eventType": "Open", "open": {{"timestamp": "2017-08-09T22:00:19.652Z"}}, {MAIL}}}"#);
        assert_eq!(events_of(&raw).events[0].kind, EventKind::Opened);
    }

    #[test]
    fn subscription_changes_are_told_apart_by_the_preferences_before_and_after() {
        let change = |new: &str, old: &str| {
            let part = format!(
                r#""subscription": {{"contactList": "News", "timestamp": "2022-01-12T01:00:17.910Z",
                   "newTopicPreferences": {new}, "oldTopicPreferences": {old}}}"#
            );
            let event = one("Subscription", &part);
            (event.kind, event.reason.unwrap_or_default())
        };
        let prefs = |all: bool, topics: &[(&str, &str)]| {
            let list: Vec<String> =
                topics.iter().map(|(t, s)| format!(r#"{{"topicName": "{t}", "subscriptionStatus": "{s}"}}"#)).collect();
            format!(r#"{{"unsubscribeAll": {all}, "topicSubscriptionStatus": [{}]}}"#, list.join(","))
        };
        assert_eq!(
            change(&prefs(true, &[]), &prefs(false, &[])),
            (EventKind::Unsubscribed, "unsubscribed from all topics of contact list News".into())
        );
        assert_eq!(
            change(
                &prefs(false, &[("Offers", "OptOut"), ("Tips", "OptIn")]),
                &prefs(false, &[("Offers", "OptIn"), ("Tips", "OptIn")])
            ),
            (EventKind::Unsubscribed, "opted out of topic Offers of contact list News".into())
        );
        assert_eq!(
            change(&prefs(false, &[("Offers", "OptIn")]), &prefs(true, &[("Offers", "OptIn")])),
            (EventKind::Resubscribed, "subscribed again to contact list News".into())
        );
        assert_eq!(
            change(
                &prefs(false, &[("Offers", "OptIn"), ("Tips", "OptIn")]),
                &prefs(false, &[("Offers", "OptOut"), ("Tips", "OptOut")])
            ),
            (EventKind::Resubscribed, "opted in to topics Offers, Tips of contact list News".into())
        );
    }

    #[test]
    fn the_setup_notices_bring_no_event_and_no_problem() {
        let validated = serde_json::json!({"Type": "Notification", "MessageId": "m", "Message": SETUP_NOTICE});
        assert_eq!(events_of(&validated.to_string()), Parsed::default());
        let succeeded = serde_json::json!({"Type": "Notification", "Message": serde_json::json!({
            "notificationType": "AmazonSnsSubscriptionSucceeded",
            "message": "You have successfully subscribed your Amazon SNS topic 'arn:aws:sns:…' to receive 'Bounce' notifications from Amazon SES for identity 'example.com'."
        }).to_string()});
        assert_eq!(events_of(&succeeded.to_string()), Parsed::default());
    }

    #[test]
    fn a_subscription_confirmation_is_returned_with_its_address_for_the_caller_to_decide() {
        let body = serde_json::json!({
            "Type": "SubscriptionConfirmation",
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb71854e285d6ad02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728f4ae6fdb82efd087cc3b7849e05798d2d2785c03b0879594eeac82c01f235d0e717736",
            "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
            "Message": "You have chosen to subscribe to the topic arn:aws:sns:us-west-2:123456789012:MyTopic.\nTo confirm the subscription, visit the SubscribeURL included in this message.",
            "SubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37",
            "Timestamp": "2012-04-26T20:45:04.751Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fUQvi2egU3N858fiTDN6bkkOxYDVrY0Ad8L10Hs3zH81mtnPk5uvvolIC1CXGu43obcgFxeL3khZl8IKvO61GWB6jI9b5+gLPoBc1Q=",
            "SigningCertURL": "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"
        });
        let Received::SubscriptionConfirmation(confirmation) = parse(body.to_string().as_bytes()).unwrap() else {
            panic!("not a confirmation")
        };
        assert_eq!(confirmation.topic_arn, "arn:aws:sns:us-west-2:123456789012:MyTopic");
        assert_eq!(confirmation.subscribe_url.host_str(), Some("sns.us-west-2.amazonaws.com"));
        assert!(confirmation.token.unwrap().starts_with("2336412f37"));
        let mut ended = body.clone();
        ended["Type"] = "UnsubscribeConfirmation".into();
        assert!(matches!(parse(ended.to_string().as_bytes()).unwrap(), Received::UnsubscribeConfirmation(_)));
    }

    #[test]
    fn a_subscribe_address_that_is_not_amazon_snss_is_refused() {
        for url in [
            "http://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription",
            "https://169.254.169.254/latest/meta-data/",
            "https://sns.us-west-2.amazonaws.com.evil.example/",
            "https://sns.us-west-2.amazonaws.com:8443/",
            "https://user@sns.us-west-2.amazonaws.com/",
            "https://evil.example/?sns.amazonaws.com",
        ] {
            let body = serde_json::json!({"Type": "SubscriptionConfirmation", "TopicArn": "arn", "SubscribeURL": url});
            let err = parse(body.to_string().as_bytes()).unwrap_err();
            assert!(err.to_string().contains("is not an Amazon SNS address"), "{url}: {err}");
        }
        let china = serde_json::json!({"Type": "SubscriptionConfirmation", "TopicArn": "arn",
            "SubscribeURL": "https://sns.cn-north-1.amazonaws.com.cn/?Action=ConfirmSubscription"});
        assert!(parse(china.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn a_body_that_is_not_an_sns_message_is_refused_whole() {
        for (body, what) in [
            ("[]", "the body is a list"),
            (r#"{"hello": 1}"#, "the body has no `Type`"),
            (r#"{"Type": "Note"}"#, "its `Type` is 'Note', not one Amazon SNS sends"),
            (r#"{"Type": "Notification", "Message": "hello"}"#, "its `Message` is not JSON"),
            (
                r#"{"Type": "Notification", "Message": "{\"a\":1}"}"#,
                "its `Message` is an object ({\"a\":1}), which has no `eventType`",
            ),
        ] {
            let err = parse(body.as_bytes()).unwrap_err();
            assert!(err.to_string().starts_with(what), "{body}: {err}");
        }
    }

    #[test]
    fn a_notification_naming_more_recipients_than_the_cap_is_refused_whole() {
        let recipients: Vec<String> =
            (0..=super::super::MAX_EVENTS_PER_BODY).map(|i| format!("r{i}@example.com")).collect();
        let body = serde_json::json!({"eventType": "Send", "mail": {"destination": recipients}});
        let err = parse(body.to_string().as_bytes()).unwrap_err();
        assert!(matches!(err, BodyError::TooManyEvents { count: 10_001, .. }), "{err}");
    }
}
