//! `POST /events/{flow}`: an email service's body from the internet, read as each service's format, each event
//! kept in the flow's log as JSON and read again by the engagement job; the signatures checked over it, and the
//! Amazon SNS envelopes and signing certificates read from it.
#![no_main]

use chrono::{TimeDelta, TimeZone, Utc};
use dynsync::engagement::event::{EmailEvent, EventKey};
use dynsync::engagement::formats::{self, Provider, Received, mailgun, sendgrid, sns};
use dynsync::engagement::job::ReceivedEvent;
use libfuzzer_sys::fuzz_target;

/// A verification key as SendGrid shows one (the one its SDK tests with).
const SENDGRID_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";

fuzz_target!(init: dynsync_fuzz::report_stack_overflows(), |data: &[u8]| {
    for provider in Provider::ALL {
        let Ok(received) = formats::parse(provider, data) else { continue };
        let Received::Events(parsed) = received else { continue };
        assert!(parsed.events.len() + parsed.refused() <= formats::MAX_EVENTS_PER_BODY * 2);
        for problem in &parsed.problems {
            assert!(!problem.message.is_empty(), "a problem says what to do: {problem:?}");
            let _ = problem.to_string();
        }
        for event in parsed.events {
            assert_eq!(event.provider, provider);
            // Logged as JSON, read again by the job: the same event, the same key.
            let logged = ReceivedEvent { received_at: Utc::now(), event: event.clone() };
            let text = serde_json::to_string(&logged).expect("an event serializes");
            let read: ReceivedEvent = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert_eq!(read.event, event, "{text}");
            let key = event.key();
            assert!(key.as_str().chars().count() <= EventKey::MAX_CHARS, "{key}");
            assert_eq!(key.to_string().parse::<EventKey>().as_ref(), Ok(&key));
            assert_eq!(read.event.key(), key);
            let _: &EmailEvent = &read.event;
        }
    }
    // Signatures over whatever arrives: an answer, never a panic.
    let key = sendgrid::SendGridKey::parse(SENDGRID_KEY).expect("the test key reads");
    let (head, body) = data.split_at(data.len().min(96));
    let head = String::from_utf8_lossy(head);
    let (signature, timestamp) = head.split_once('\n').unwrap_or((&head, "1764500000"));
    assert!(sendgrid::verify(&key, signature, timestamp, body).is_err(), "a forged signature never verifies");
    let mailgun_key = mailgun::MailgunKey::parse("key-3ax6xnjp29jd6fds4gc373sgvjxteol0").unwrap();
    let now = Utc.timestamp_opt(1_764_500_000, 0).unwrap();
    let _ = mailgun::verify_body(&mailgun_key, data, now, TimeDelta::minutes(15));
    // Amazon SNS: an envelope is read or refused, and whatever arrives as a signing certificate (fetched, or pasted
    // on a flow) is read or refused — never a panic.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(Some(envelope)) = sns::Envelope::read(&value)
    {
        assert!(sns::is_sns_certificate_address(&envelope.certificate_url));
        assert!(envelope.string_to_sign().ends_with(&format!("Type\n{}\n", envelope.message_type)));
    }
    if let Ok(certificate) = sns::SigningCertificate::from_pem(data) {
        assert!(certificate.bits >= sns::MIN_KEY_BITS);
    }
});
