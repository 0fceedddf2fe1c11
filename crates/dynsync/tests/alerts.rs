//! Alerts on flows end to end, against the emulator: a rule's alert opens once when the flow fails, falls behind
//! or passes a rate, notifies a signed webhook and an email over real SMTP, and resolves once the cause is gone;
//! what a rule may be is checked whole, and its secret is never shown. Each scenario runs on both stores.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use common::{Backend, World, profile};
use dataverse_emulator::{CostModel, EmulatorConfig, Fault, FaultPlan, FaultRule, When};
use dynsync::alerts::{
    AlertChannels, AlertEvent, AlertHistory, AlertKind, AlertNotice, AlertRule, AlertSettings, AlertSettingsView,
    AlertStatus, ChannelKind, DeliveryState, SigningSecret,
};
use dynsync::dataset::webhook::{DELIVERY_HEADER, SIGNATURE_HEADER, verify};
use dynsync::leads::notify::SmtpSettings;
use dynsync::mailbox::Mailbox;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

const SECRET: &str = "alerts-signing-secret-0123456789";

/// A webhook receiver that checks each POST's signature and keeps the notices, with their delivery ids.
struct Receiver {
    url: String,
    notices: Arc<Mutex<Vec<(String, AlertNotice)>>>,
    bad: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Kept {
    notices: Arc<Mutex<Vec<(String, AlertNotice)>>>,
    bad: Arc<Mutex<Vec<String>>>,
}

async fn receive(State(kept): State<Kept>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if let Err(e) = verify(SECRET.as_bytes(), signature, &body, chrono::Utc::now().timestamp(), 300) {
        kept.bad.lock().unwrap().push(e);
        return AxumStatus::UNAUTHORIZED;
    }
    let delivery = headers.get(DELIVERY_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    match serde_json::from_slice::<AlertNotice>(&body) {
        Ok(notice) => {
            kept.notices.lock().unwrap().push((delivery, notice));
            AxumStatus::OK
        }
        Err(e) => {
            kept.bad.lock().unwrap().push(format!("not a notice: {e}"));
            AxumStatus::BAD_REQUEST
        }
    }
}

impl Receiver {
    async fn start() -> Receiver {
        let kept = Kept { notices: Arc::default(), bad: Arc::default() };
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(kept.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, notices: kept.notices, bad: kept.bad, task }
    }

    fn notices(&self) -> Vec<AlertNotice> {
        self.notices.lock().unwrap().iter().map(|(_, n)| n.clone()).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// dynsync evaluating alerts every 200 ms, sending email to `mailbox` when there is one.
async fn world(backend: Backend, mailbox: Option<&Mailbox>) -> Option<World> {
    let smtp = mailbox.map(|m| SmtpSettings::local(m.port(), "dynsync alerts <alerts@example.com>"));
    let emulator = EmulatorConfig { cost: CostModel::free(), ..Default::default() };
    World::start_configured(backend, emulator, |config| {
        config.alert_interval = Duration::from_millis(200);
        config.smtp = smtp;
    })
    .await
}

fn rule(kind: AlertKind, channels: AlertChannels) -> AlertRule {
    AlertRule { id: None, kind, threshold_percent: None, minimum_records: None, threshold_seconds: None, channels }
}

fn to_webhook(url: &str) -> AlertChannels {
    AlertChannels { webhook_url: Some(url.to_string()), emails: Vec::new() }
}

fn to_emails(emails: &[&str]) -> AlertChannels {
    AlertChannels { webhook_url: None, emails: emails.iter().map(|e| e.to_string()).collect() }
}

async fn put_alerts(world: &World, flow: &str, settings: &AlertSettings) -> common::Reply {
    let body = serde_json::to_value(settings).unwrap();
    world.send(Method::PUT, &format!("flows/{flow}/alerts"), Some(body)).await
}

async fn history(world: &World, flow: &str) -> AlertHistory {
    let reply = world.get(&format!("flows/{flow}/alerts/history")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    serde_json::from_str(&reply.text).unwrap_or_else(|e| panic!("{e}: {}", reply.text))
}

/// The flow's alert history once `ready` says it is what the test waits for; the test fails past a minute.
async fn history_when(world: &World, flow: &str, what: &str, ready: impl Fn(&[AlertEvent]) -> bool) -> Vec<AlertEvent> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let items = history(world, flow).await.items;
        if ready(&items) {
            return items;
        }
        assert!(Instant::now() < deadline, "{what} within a minute; the history is {items:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn all_sent(event: &AlertEvent) -> bool {
    !event.deliveries.is_empty() && event.deliveries.iter().all(|d| d.state == DeliveryState::Sent)
}

async fn a_failure_opens_one_alert_notifies_a_signed_webhook_and_an_email_and_resolves_once_replayed(backend: Backend) {
    let mailbox = Mailbox::start().await.unwrap();
    let receiver = Receiver::start().await;
    let Some(world) = world(backend, Some(&mailbox)).await else { return };
    let (_, target) = world.loyalty_destination().await;
    let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
    let channels = AlertChannels {
        webhook_url: Some(receiver.url.clone()),
        emails: vec!["ops@example.com".into(), "oncall@example.com".into()],
    };
    let settings = AlertSettings {
        rules: vec![rule(AlertKind::Failure, channels)],
        signing_secret: Some(SigningSecret(SECRET.into())),
    };
    let reply = put_alerts(&world, &flow, &settings).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    // A profile for a contact Dynamics does not have fails with 0x80040217; one for a contact it has is written.
    let ann = world.create_contact("Ann").await;
    let absent = Uuid::new_v4();
    world
        .stream_all(
            &flow,
            vec![
                profile(&ann.to_string(), Some("Ann"), &[("seg-gold", "realized")]),
                profile(&absent.to_string(), Some("Absent"), &[("seg-silver", "existing")]),
            ],
        )
        .await;
    let events = history_when(&world, &flow, "the alert opens and both notices are sent", |items| {
        items.first().is_some_and(all_sent)
    })
    .await;
    let [opened] = events.as_slice() else { panic!("one opening: {events:#?}") };
    assert_eq!(opened.notice.status, AlertStatus::Opened);
    assert_eq!((opened.notice.kind, opened.notice.rule_id.as_str()), (AlertKind::Failure, "failure"));
    assert_eq!(opened.notice.measured, 1.0);
    assert_eq!(opened.notice.summary, "1 record failed in this hour's run");
    assert_eq!(opened.notice.flow_name, "Loyalty audiences");
    let channels: Vec<(ChannelKind, &str)> = opened.deliveries.iter().map(|d| (d.channel, d.to.as_str())).collect();
    assert!(channels.contains(&(ChannelKind::Webhook, receiver.url.as_str())), "{channels:?}");
    assert!(channels.contains(&(ChannelKind::Email, "ops@example.com, oncall@example.com")), "{channels:?}");

    // The webhook got the notice the history shows, signed with the secret (checked by the receiver).
    assert!(receiver.bad.lock().unwrap().is_empty(), "{:?}", receiver.bad.lock().unwrap());
    assert_eq!(receiver.notices(), vec![opened.notice.clone()]);
    let mail = mailbox.wait_for(1, Duration::from_secs(30)).await;
    let [mail] = mail.as_slice() else { panic!("one email: {mail:?}") };
    assert_eq!(mail.to, ["ops@example.com", "oncall@example.com"]);
    assert_eq!(mail.from, "alerts@example.com");
    let subject = mail.header("Subject").unwrap();
    assert_eq!(subject, "[dynsync] Alert: Loyalty audiences — 1 record failed in this hour's run");
    assert!(mail.body().contains(&flow), "{}", mail.body());

    // The contact is created in Dynamics and the failed record replayed: the alert resolves, once.
    let reply = world
        .dynamics()
        .send(Method::PATCH, &format!("contacts({absent})"), Some(&json!({"lastname": "Absent"})))
        .await
        .unwrap();
    assert!(reply.status().is_success());
    let reply = world.send(Method::POST, &format!("flows/{flow}/action?op=retry-failed"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["activated"], 1, "{}", reply.text);
    let events = history_when(&world, &flow, "the alert resolves and its notices are sent", |items| {
        items.first().is_some_and(|e| e.notice.status == AlertStatus::Resolved && all_sent(e))
    })
    .await;
    let statuses: Vec<AlertStatus> = events.iter().map(|e| e.notice.status).collect();
    assert_eq!(statuses, [AlertStatus::Resolved, AlertStatus::Opened], "newest first, each once: {events:#?}");
    assert_eq!(events[0].notice.measured, 0.0);
    let received = receiver.notices();
    assert_eq!(received.iter().map(|n| n.status).collect::<Vec<_>>(), [AlertStatus::Opened, AlertStatus::Resolved]);
    assert_eq!(received[1], events[0].notice);
    let ids: Vec<String> = receiver.notices.lock().unwrap().iter().map(|(id, _)| id.clone()).collect();
    assert!(ids[0] != ids[1] && ids.iter().all(|id| id.parse::<Uuid>().is_ok()), "a delivery id each: {ids:?}");
    let mail = mailbox.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(mail.len(), 2, "{mail:?}");
    assert!(mail[1].header("Subject").unwrap().starts_with("[dynsync] Resolved: Loyalty audiences"), "{mail:?}");
    world.finish().await;
}

async fn a_rate_rule_does_not_fire_under_its_minimum_of_records_and_fires_once_it_is_reached(backend: Backend) {
    // No SMTP server: the emails wait, and the history says why.
    let Some(world) = world(backend, None).await else { return };
    let (_, target) = world.loyalty_destination().await;
    let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
    let emails = to_emails(&["ops@example.com"]);
    let rate = AlertRule { threshold_percent: Some(10.0), ..rule(AlertKind::FailureRate, emails.clone()) };
    let settings = AlertSettings { rules: vec![rule(AlertKind::Failure, emails), rate], signing_secret: None };
    let reply = put_alerts(&world, &flow, &settings).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let view: AlertSettingsView = serde_json::from_str(&reply.text).unwrap();
    assert_eq!(view.rules[1].id.as_deref(), Some("failureRate:10:20"));
    assert_eq!(view.rules[1].minimum_records, Some(20), "the default minimum is shown");

    // One of two records fails: 50 %, but of fewer than 20 records. The failure rule, measured on the same figures
    // in the same evaluation, says when the rate rule has been measured.
    let ann = world.create_contact("Ann").await;
    let failing = |_| profile(&Uuid::new_v4().to_string(), None, &[("seg-gold", "realized")]);
    world.stream_all(&flow, vec![profile(&ann.to_string(), None, &[("seg-gold", "realized")]), failing(0)]).await;
    let events = history_when(&world, &flow, "the failure rule opens and its email is tried", |items| {
        items.first().is_some_and(|e| e.deliveries.iter().all(|d| d.attempts > 0))
    })
    .await;
    let rules: Vec<&str> = events.iter().map(|e| e.notice.rule_id.as_str()).collect();
    assert_eq!(rules, ["failure"], "1 failed of 2 does not open the rate rule: {events:#?}");
    let email = &events[0].deliveries[0];
    assert_eq!((email.channel, email.state), (ChannelKind::Email, DeliveryState::Retrying), "{email:?}");
    assert!(email.error.as_deref().unwrap_or_default().contains("no SMTP server"), "{email:?}");

    // 19 more fail: 20 of 21, over 10 % of at least 20 records.
    world.stream_all(&flow, (1..20).map(failing).collect()).await;
    let events = history_when(&world, &flow, "the rate rule opens", |items| {
        items.iter().any(|e| e.notice.rule_id == "failureRate:10:20")
    })
    .await;
    let rate = events.iter().find(|e| e.notice.rule_id == "failureRate:10:20").unwrap();
    assert_eq!(rate.notice.status, AlertStatus::Opened);
    assert!(rate.notice.measured > 10.0, "{rate:?}");
    assert!(rate.notice.summary.contains("over the 10% threshold"), "{}", rate.notice.summary);
    assert_eq!(events.len(), 2, "each rule opened once: {events:#?}");
    world.finish().await;
}

async fn a_lag_rule_opens_while_records_wait_and_resolves_once_they_are_written(backend: Backend) {
    let receiver = Receiver::start().await;
    let Some(world) = world(backend, None).await else { return };
    let (_, target) = world.loyalty_destination().await;
    let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
    let lag = AlertRule { threshold_seconds: Some(1), ..rule(AlertKind::Lag, to_webhook(&receiver.url)) };
    let settings = AlertSettings { rules: vec![lag], signing_secret: Some(SigningSecret(SECRET.into())) };
    let reply = put_alerts(&world, &flow, &settings).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    // Dynamics answers 503 to everything: the profile waits in the flow's log, and the flow falls behind.
    let ann = world.create_contact("Ann").await;
    let unavailable = FaultRule { fault: Fault::Unavailable, when: When::Rate(1.0) };
    world.emulator.faults.inject(FaultPlan { seed: 1, rules: vec![unavailable] });
    world.stream_all(&flow, vec![profile(&ann.to_string(), Some("Ann"), &[("seg-gold", "realized")])]).await;
    let events = history_when(&world, &flow, "the lag alert opens", |items| items.first().is_some_and(all_sent)).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let opened = &events[0].notice;
    assert_eq!((opened.status, opened.rule_id.as_str()), (AlertStatus::Opened, "lag:1"));
    assert!(opened.measured > 1.0 && opened.summary.contains("over the 1 s threshold"), "{opened:?}");
    assert_eq!(receiver.notices(), vec![opened.clone()]);

    // Dynamics is back: the profile is written, nothing waits, and the alert resolves.
    world.emulator.faults.inject(FaultPlan::default());
    let events = history_when(&world, &flow, "the lag alert resolves", |items| {
        items.first().is_some_and(|e| e.notice.status == AlertStatus::Resolved && all_sent(e))
    })
    .await;
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(common::read_contact(&world.dynamics(), ann).await["new_gold"], "realized");
    assert_eq!(receiver.notices().len(), 2);
    world.finish().await;
}

async fn bad_rules_are_refused_with_every_problem_at_once(backend: Backend) {
    let Some(world) = world(backend, None).await else { return };
    let (_, target) = world.loyalty_destination().await;
    let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
    let settings = AlertSettings {
        rules: vec![
            rule(AlertKind::Failure, to_webhook("http://hooks.example.com/alerts")),
            rule(AlertKind::Failure, to_emails(&["ops@example.com", "ops at example"])),
            AlertRule { threshold_percent: Some(0.0), ..rule(AlertKind::FailureRate, to_emails(&["a@example.com"])) },
            AlertRule {
                threshold_percent: Some(150.0),
                ..rule(AlertKind::ExclusionRate, to_webhook("https://user:pw@hooks.example.com/"))
            },
        ],
        signing_secret: Some(SigningSecret("too-short".into())),
    };
    let reply = put_alerts(&world, &flow, &settings).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let problems: Vec<String> = serde_json::from_value(reply.json()["report"]["problems"].clone()).unwrap();
    let expected = [
        "rules[0].channels.webhookUrl (http://hooks.example.com/alerts) is not https",
        "rules[1].channels.emails[1] ('ops at example') is not an email address",
        "rules[1] is the same rule as rules[0] (failure)",
        "rules[2].thresholdPercent is 0: give a percent over 0 and at most 100",
        "rules[3].thresholdPercent is 150: give a percent over 0 and at most 100",
        "rules[3].channels.webhookUrl holds a user name or password",
        "signingSecret is 9 characters: give at least 16",
    ];
    for part in expected {
        assert!(problems.iter().any(|p| p.starts_with(part)), "no {part:?} in {problems:#?}");
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for problem in &problems {
        assert!(reply.detail().contains(problem.as_str()), "the detail says every problem too: {}", reply.detail());
    }
    // Nothing was kept.
    let view: AlertSettingsView = serde_json::from_str(&world.get(&format!("flows/{flow}/alerts")).await.text).unwrap();
    assert!(view.rules.is_empty() && !view.has_signing_secret, "{view:?}");
    // A field the rules do not have is refused, not ignored.
    let typo = json!({"rules": [{"kind": "lag", "thresholdSecond": 60, "channels": {"emails": ["a@example.com"]}}]});
    let reply = world.send(Method::PUT, &format!("flows/{flow}/alerts"), Some(typo)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(reply.detail().contains("thresholdSecond"), "{}", reply.detail());
    world.finish().await;
}

async fn the_signing_secret_is_never_returned_and_a_view_only_token_cannot_change_the_alerts(backend: Backend) {
    let Some(world) = world(backend, None).await else { return };
    let (_, target) = world.loyalty_destination().await;
    let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
    let lag =
        AlertRule { threshold_seconds: Some(600), ..rule(AlertKind::Lag, to_webhook("https://hooks.example.com/a")) };
    let settings = AlertSettings { rules: vec![lag], signing_secret: Some(SigningSecret(SECRET.into())) };
    let reply = put_alerts(&world, &flow, &settings).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(!reply.text.contains(SECRET), "{}", reply.text);
    let reply = world.get(&format!("flows/{flow}/alerts")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(!reply.text.contains(SECRET), "{}", reply.text);
    let view: AlertSettingsView = serde_json::from_str(&reply.text).unwrap();
    assert!(view.has_signing_secret);
    assert_eq!(view.rules[0].id.as_deref(), Some("lag:600"));

    // What a GET answers can be edited and sent back: the secret kept stays.
    let mut again = AlertSettings { rules: view.rules.clone(), signing_secret: None };
    again.rules[0].channels.emails = vec!["ops@example.com".into()];
    let reply = put_alerts(&world, &flow, &again).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let view: AlertSettingsView = serde_json::from_str(&reply.text).unwrap();
    assert!(view.has_signing_secret);
    assert_eq!(view.rules[0].channels.emails, ["ops@example.com"]);

    // A token that may only read sees the rules and may not change them.
    let reply = world.post("tokens", json!({"name": "watcher", "roles": ["view"], "sandboxes": [world.sandbox]})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let viewer = reply.json()["token"].as_str().unwrap().to_string();
    let path = format!("flows/{flow}/alerts");
    let reply = world.send_as(&viewer, &world.sandbox, Method::GET, &path, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let body = serde_json::to_value(AlertSettings { rules: Vec::new(), signing_secret: None }).unwrap();
    let reply = world.send_as(&viewer, &world.sandbox, Method::PUT, &path, Some(body)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    assert!(reply.detail().contains("manage"), "{}", reply.detail());
    let view: AlertSettingsView = serde_json::from_str(&world.get(&path).await.text).unwrap();
    assert_eq!(view.rules.len(), 1, "the rules are as they were");

    // Another sandbox does not see the flow's alerts.
    let reply = world.send_in("elsewhere", Method::GET, &path, None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
    world.finish().await;
}

/// Two dynsync processes share one PostgreSQL and both evaluate the flow's rules: the alert opens once and
/// resolves once, and the webhook hears each once.
#[tokio::test]
async fn two_processes_on_one_postgres_open_and_resolve_an_alert_once() {
    common::bounded(async {
        let receiver = Receiver::start().await;
        let Some(world) = world(Backend::Postgres, None).await else { return };
        let key = std::fs::read_to_string(world.data_dir.path().join(dynsync::secrets::KEY_FILE)).unwrap();
        let second_dir = tempfile::tempdir().unwrap();
        let mut config = dynsync::ServiceConfig::new(second_dir.path());
        config.database_url = world.database.as_ref().map(|d| d.url.clone());
        config.secret_key = Some(key.trim().to_string());
        config.allowed_hosts = common::LOOPBACK.parse().unwrap();
        config.alert_interval = Duration::from_millis(200);
        let second = dynsync::Service::start(config).await.unwrap();

        let (_, target) = world.loyalty_destination().await;
        let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
        let settings = AlertSettings {
            rules: vec![rule(AlertKind::Failure, to_webhook(&receiver.url))],
            signing_secret: Some(SigningSecret(SECRET.into())),
        };
        assert_eq!(put_alerts(&world, &flow, &settings).await.status, StatusCode::OK);
        let absent = Uuid::new_v4();
        world.stream_all(&flow, vec![profile(&absent.to_string(), None, &[("seg-gold", "realized")])]).await;
        history_when(&world, &flow, "the alert opens", |items| items.first().is_some_and(all_sent)).await;

        let reply = world
            .dynamics()
            .send(Method::PATCH, &format!("contacts({absent})"), Some(&json!({"lastname": "Absent"})))
            .await
            .unwrap();
        assert!(reply.status().is_success());
        let reply = world.send(Method::POST, &format!("flows/{flow}/action?op=retry-failed"), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let events = history_when(&world, &flow, "the alert resolves", |items| {
            items.first().is_some_and(|e| e.notice.status == AlertStatus::Resolved && all_sent(e))
        })
        .await;
        let statuses: Vec<AlertStatus> = events.iter().map(|e| e.notice.status).collect();
        assert_eq!(statuses, [AlertStatus::Resolved, AlertStatus::Opened], "{events:#?}");
        let heard: Vec<AlertStatus> = receiver.notices().iter().map(|n| n.status).collect();
        assert_eq!(heard, [AlertStatus::Opened, AlertStatus::Resolved], "each notice once");
        assert!(receiver.bad.lock().unwrap().is_empty(), "both processes sign with the flow's secret");
        second.stop().await;
        world.finish().await;
    })
    .await;
}

on_both_stores!(
    a_failure_opens_one_alert_notifies_a_signed_webhook_and_an_email_and_resolves_once_replayed,
    a_rate_rule_does_not_fire_under_its_minimum_of_records_and_fires_once_it_is_reached,
    a_lag_rule_opens_while_records_wait_and_resolves_once_they_are_written,
    bad_rules_are_refused_with_every_problem_at_once,
    the_signing_secret_is_never_returned_and_a_view_only_token_cannot_change_the_alerts,
);
