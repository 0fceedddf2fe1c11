//! dynsync's own events JSON, for senders that are not SendGrid, Mailgun or Amazon SES:
//! `{"events": [{"messageId", "type", "occurredAt", "email", "contactId"?, "campaign"?, "subject"?, "url"?,
//! "reason"?}]}`.
//!
//! The contract:
//! - `type` is one of the [`EventKind`] strings (`sent`, `delivered`, `opened`, `clicked`, `hard-bounce`,
//!   `soft-bounce`, `dropped`, `deferred`, `spam-complaint`, `unsubscribed`, `resubscribed`); `occurredAt` is
//!   RFC 3339 with a zone (`2024-05-01T12:30:00Z`); `contactId` is the Dynamics contact's GUID.
//! - Strict: a field this format does not have is a problem naming it (and the field it most likely meant), in
//!   the body as in an event, so that a typo such as `occuredAt` is caught rather than silently dropped.
//!
//! Why strict here and tolerant for the services: the services' formats are theirs and grow without notice; this
//! one is ours, written by the user's own code, where a misspelt field is a bug to show at once.

use super::{BodyError, Draft, EventReader, Parsed, Provider, at, check_count, describe, read_json, unknown_fields};
use crate::engagement::event::{EmailEvent, EventKind, EventProblem};
use serde_json::Value;

/// The fields of one event.
pub const FIELDS: [&str; 9] =
    ["messageId", "type", "occurredAt", "email", "contactId", "campaign", "subject", "url", "reason"];

const PROVIDER: Provider = Provider::Dynsync;

/// Reads a body of dynsync's own format.
pub fn parse(body: &[u8]) -> Result<Parsed, BodyError> {
    let value = read_json(PROVIDER, body)?;
    let shape = |what: String| BodyError::Shape { provider: PROVIDER, what };
    let Value::Object(object) = &value else {
        return Err(shape(format!("the body is {}", describe(&value))));
    };
    if let Some((field, meant)) = unknown_fields(object, &["events"]).into_iter().next() {
        return Err(shape(format!("the body has `{field}`{}, a field this format does not have", did_you_mean(meant))));
    }
    let items = match object.get("events") {
        Some(Value::Array(items)) => items,
        Some(other) => return Err(shape(format!("its `events` is {}, not a list", describe(other)))),
        None => return Err(shape("the body has no `events`".to_owned())),
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
    let Value::Object(object) = item else {
        reader.problem(
            "(event)",
            format!("is {}, not an event: give each event as {{\"messageId\": …, \"type\": …}}", describe(item)),
        );
        return Err(reader.problems);
    };
    for (field, meant) in unknown_fields(object, &FIELDS) {
        reader.problem(
            field,
            format!(
                "is not a field of dynsync's event format{}: the fields are {}; a misspelt field is refused rather \
                 than left out",
                did_you_mean(meant),
                FIELDS.join(", ")
            ),
        );
    }
    let field = |name: &str| at(item, &[name]);
    let event_type = reader.required_text("type", field("type"), "its `type`");
    let kind = event_type.and_then(|text| match text.parse::<EventKind>() {
        Ok(kind) => Some(kind),
        Err(unknown) => {
            reader.problem("type", unknown.to_string());
            None
        }
    });
    let draft = Draft {
        message_id: reader.message_id("messageId", field("messageId")),
        kind,
        occurred_at: reader.rfc3339("occurredAt", field("occurredAt")),
        email: reader.email("email", field("email")),
        contact_id: reader.contact_id("contactId", field("contactId")),
        campaign: reader.text("campaign", field("campaign")),
        subject: reader.text("subject", field("subject")),
        url: reader.text("url", field("url")),
        reason: reader.text("reason", field("reason")),
        provider_event_id: None,
    };
    reader.finish(draft)
}

fn did_you_mean(meant: Option<&str>) -> String {
    meant.map(|m| format!(" (did you mean `{m}`?)")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn parsed(body: &str) -> Parsed {
        parse(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_event_type_is_read_with_all_its_fields() {
        let events: Vec<String> = EventKind::ALL
            .iter()
            .map(|kind| {
                format!(
                    r#"{{"messageId": "m-{kind}", "type": "{kind}", "occurredAt": "2024-05-01T14:30:00.250+02:00",
                        "email": " Someone@Contoso.com ", "contactId": "2f4b6d3e-1a2b-4c5d-8e9f-0a1b2c3d4e5f",
                        "campaign": "spring", "subject": "Our spring offer", "url": "https://contoso.com/offer",
                        "reason": "550 no such user"}}"#
                )
            })
            .collect();
        let parsed = parsed(&format!(r#"{{"events": [{}]}}"#, events.join(",")));
        assert_eq!(parsed.problems, []);
        let kinds: Vec<EventKind> = parsed.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, EventKind::ALL);
        let first = &parsed.events[0];
        assert_eq!(first.provider, Provider::Dynsync);
        assert_eq!(first.message_id.as_str(), "m-sent");
        assert_eq!(first.occurred_at, Utc.timestamp_millis_opt(1_714_566_600_250).unwrap());
        assert_eq!(first.email.as_str(), "someone@contoso.com");
        assert_eq!(first.contact_id, Some("2f4b6d3e-1a2b-4c5d-8e9f-0a1b2c3d4e5f".parse().unwrap()));
        assert_eq!(
            (first.campaign.as_deref(), first.subject.as_deref(), first.url.as_deref(), first.reason.as_deref()),
            (Some("spring"), Some("Our spring offer"), Some("https://contoso.com/offer"), Some("550 no such user"))
        );
    }

    #[test]
    fn only_the_required_fields_are_needed() {
        let parsed = parsed(
            r#"{"events": [{"messageId": "m", "type": "opened", "occurredAt": "2024-05-01T12:30:00Z", "email": "a@b.co",
                            "campaign": null}]}"#,
        );
        assert_eq!(parsed.problems, []);
        assert_eq!(parsed.events[0].contact_id, None);
        assert_eq!(parsed.events[0].campaign, None);
    }

    #[test]
    fn a_misspelt_field_is_a_problem_naming_it_and_the_field_it_meant() {
        let parsed = parsed(
            r#"{"events": [
                {"messageId": "m1", "type": "opened", "occuredAt": "2024-05-01T12:30:00Z", "email": "a@b.co"},
                {"messageId": "m2", "type": "opened", "occurredAt": "2024-05-01T12:30:00Z", "email": "a@b.co"}
            ]}"#,
        );
        assert_eq!(parsed.events.len(), 1);
        let fields: Vec<&str> = parsed.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["occuredAt", "occurredAt"], "the typo, and the field it left missing");
        assert!(
            parsed.problems[0].to_string().starts_with(
                "event 0: occuredAt: is not a field of dynsync's event format (did you mean `occurredAt`?): the \
                 fields are messageId, type, occurredAt"
            ),
            "{}",
            parsed.problems[0]
        );
        assert_eq!(parsed.problems[1].message, "is missing: give the time of the event in every event");
    }

    #[test]
    fn good_events_are_taken_and_each_bad_one_is_named_by_index_and_field() {
        let parsed = parsed(
            r#"{"events": [
                {"messageId": "m0", "type": "clicked", "occurredAt": "2024-05-01T12:30:00Z", "email": "a@b.co"},
                {"messageId": "m1", "type": "bounced", "occurredAt": "2024-05-01T12:30:00Z", "email": "a@b.co"},
                {"messageId": "m2", "type": "opened", "occurredAt": "2024-05-01 12:30", "email": "a@b.co"},
                {"messageId": " ", "type": "opened", "occurredAt": "2024-05-01T12:30:00Z", "email": "a@b.co"},
                {"messageId": "m4", "type": "opened", "occurredAt": "2024-05-01T12:30:00Z", "email": "a@b.co", "contactId": "12"},
                {"messageId": "m5", "type": "opened", "occurredAt": "2024-05-01T12:30:00Z", "email": "a@b.co"},
                7
            ]}"#,
        );
        let ids: Vec<&str> = parsed.events.iter().map(|e| e.message_id.as_str()).collect();
        assert_eq!(ids, ["m0", "m5"]);
        let places: Vec<(usize, &str)> = parsed.problems.iter().map(|p| (p.index, p.field.as_str())).collect();
        assert_eq!(places, [(1, "type"), (2, "occurredAt"), (3, "messageId"), (4, "contactId"), (6, "(event)")]);
        assert!(parsed.problems[0].message.contains("'bounced' is not an event type: give one of sent"));
        assert!(parsed.problems[1].message.contains("'2024-05-01 12:30' is not a time in RFC 3339"));
        assert!(parsed.problems[2].message.starts_with("is missing: give the id of the message"));
    }

    #[test]
    fn every_problem_of_one_event_is_reported_at_once() {
        let parsed =
            parsed(r#"{"events": [{"type": "open", "occurredAt": 1714566600, "email": "nobody", "Campaign": "x"}]}"#);
        let fields: Vec<&str> = parsed.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["Campaign", "type", "messageId", "occurredAt", "email"]);
        assert_eq!(parsed.refused(), 1);
    }

    #[test]
    fn a_body_of_another_shape_is_refused_whole_naming_what_is_wrong() {
        for (body, what) in [
            (r#"[{"messageId": "m"}]"#, "the body is a list"),
            (r#"{"evnets": []}"#, "the body has `evnets` (did you mean `events`?), a field this format does not have"),
            (r#"{"events": {}}"#, "its `events` is an object ({}), not a list"),
            ("{}", "the body has no `events`"),
        ] {
            let err = parse(body.as_bytes()).unwrap_err().to_string();
            assert!(err.starts_with(what), "{body}: {err}");
            assert!(err.contains("dynsync's format is {\"events\": [{\"messageId\""), "{err}");
        }
    }

    #[test]
    fn more_events_than_the_cap_are_refused_whole() {
        let body = format!(r#"{{"events": [{}]}}"#, vec!["{}"; super::super::MAX_EVENTS_PER_BODY + 1].join(","));
        assert!(matches!(parse(body.as_bytes()).unwrap_err(), BodyError::TooManyEvents { cap: 10_000, .. }));
    }
}
