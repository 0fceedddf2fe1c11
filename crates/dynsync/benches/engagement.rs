//! Engagement sync, measured: how fast email events reach the Dynamics timeline against the best any client can
//! do, and how long an opt-out takes to reach the contact.
//!
//! 1. Events into Dynamics: `CONTACTS` contacts (5,000) each get `EVENTS_PER_CONTACT` events (16: sent, delivered,
//!    seven opens, seven clicks), posted in SendGrid bodies of 1,000 as fast as they are accepted, into an
//!    emulator with Dynamics' default costs and limits over a window scaled down thirty times (10 s, 40 s of
//!    execution time, 200 requests: the same ratios, so the same steady ceiling, while a run of a minute or two
//!    spans many windows rather than living on the first window's allowance). The ceiling is writing the
//!    activities alone, 1,000 to an `UpsertMultiple` (`d` = 115 ms + 1,000 × 6 ms): steadily
//!    `min(C, E / W) × 1000 / d` (README, "Limits, costs"); over a run of `T` seconds, which starts with a full
//!    window's allowance, at most `min(C, E × ⌈T / W⌉ / T) × 1000 / d`, the one the ratio is taken against. The
//!    80,000 events take about two minutes, twelve windows: the first window's allowance, which that bound
//!    credits in full, is a twelfth of it rather than a sixth as in a one-minute run. The run starts once the
//!    contacts' seeding has left the window.
//!    dynsync also pays for finding each address's contact, which a sender that passes `dynsync_contact_id`
//!    saves.
//! 2. Opt-out propagation, marketing to Dynamics: once the day is on the timelines, SendGrid keeps posting
//!    `STEADY_RATE` events a second (300, half the ceiling) for `OPT_OUT_SECONDS` (20), `OPT_OUTS` (100) of them
//!    unsubscribes; each unsubscribe's time from its post to the consent ledger recording it applied (recorded
//!    once the contact's update is answered), p50 and p95, against the 60 s target. (An unsubscribe posted behind
//!    a backlog waits its turn in the flow's log: during the day's burst it would wait for the burst.)
//! 3. Opt-out propagation, Dynamics to marketing: a records-out flow (continuous, every second) sends the contacts
//!    with `donotbulkemail` to a webhook on loopback; once it holds them all, a person opts `OPT_OUTS` contacts out
//!    in Dynamics, one every 100 ms; each change's time from its answer to its arrival at the webhook, p50 and
//!    p95, against the 60 s target.
//!
//! `cargo bench -p dynsync --bench engagement` (`-- --json FILE` also writes the figures as JSON).

use dataverse_emulator::{CostModel, EmulatorConfig, Limits};
use dynsync::dataset::webhook::DeliveredRecord;
use dynsync::demo::receiver::{WebhookReceiver, latest_flags};
use dynsync::engagement::install::{EngagementTables, install};
use dynsync::{Service, ServiceConfig};
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const BASE: &str = "/data/foundation/flowservice";
const EVENTS_PER_POST: usize = 1000;
const WEBHOOK_SECRET: &str = "bench-marketing-webhook-secret";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn email(n: usize) -> String {
    format!("person{n}@fabrikam.com")
}

fn sendgrid_event(n: usize, kind: &str, at: i64) -> Json {
    json!({
        "email": email(n), "timestamp": at, "event": kind, "sg_message_id": format!("bench-{n}"),
        "category": "bench", "url": "https://contoso.com/offer",
    })
}

struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Json>) -> Json {
        let mut request = self
            .http
            .request(method, format!("{}{BASE}/{path}", self.url))
            .bearer_auth("bench-token")
            .header("x-sandbox-name", "bench");
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    async fn written(&self, flow: &str) -> u64 {
        let runs = self.call(reqwest::Method::GET, &format!("runs?property=flowId=={flow}"), None).await;
        runs["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let s = &r["metrics"]["recordSummary"];
                s["outputRecordCount"].as_u64().unwrap_or(0) + s["failedRecordCount"].as_u64().unwrap_or(0)
            })
            .sum()
    }
}

#[tokio::main]
async fn main() {
    let json_out = std::env::args().skip_while(|a| a != "--json").nth(1);
    let contacts = env_number("CONTACTS", 5_000);
    let per_contact = env_number("EVENTS_PER_CONTACT", 16).max(2);
    let (opt_outs, opt_out_seconds) = (env_number("OPT_OUTS", 100).min(contacts), env_number("OPT_OUT_SECONDS", 20));
    let limits = Limits {
        requests: 200,
        window: Duration::from_secs(10),
        execution_time: Duration::from_secs(40),
        ..Limits::default()
    };
    let cost = CostModel::default();
    let emulator = EmulatorConfig { cost, limits, ..Default::default() }.start().await.unwrap();
    let dynamics = dynsync::demo::emulator_client(&emulator);

    // The environment: the Email event table, and the contacts (written four requests at a time).
    install(&dynamics, &EngagementTables::new("new".parse().unwrap())).await.unwrap();
    let targets: Vec<Json> = (0..contacts)
        .map(|n| json!({"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": format!("P{n}"), "emailaddress1": email(n)}))
        .collect();
    let seeds = targets.chunks(1000).map(|chunk| {
        let dynamics = dynamics.clone();
        let body = json!({"Targets": chunk});
        async move {
            dynamics.send(reqwest::Method::POST, "contacts/Microsoft.Dynamics.CRM.CreateMultiple", Some(&body)).await
        }
    });
    for created in futures::future::join_all(seeds).await {
        created.unwrap();
    }
    // Seeding spent most of a window's execution time as the same application user: the run starts once it has
    // left the window, with the whole allowance the ceiling credits the run's first window with.
    tokio::time::sleep(limits.window).await;

    let data_dir = tempfile::tempdir().unwrap();
    let mut config = ServiceConfig::new(data_dir.path());
    config.api_tokens = vec!["bench-token".into()];
    config.allowed_hosts = "127.0.0.1".parse().unwrap();
    let service = Service::start(config).await.unwrap();
    let api = Api { http: reqwest::Client::new(), url: service.url.clone() };
    let spec = dynsync::specs::DYNAMICS_DESTINATION.to_string();
    let connection = api
        .call(reqwest::Method::POST, "connections", Some(json!({
            "name": "Emulator",
            "auth": {"specName": "Dynamics 365 Client Credentials", "params": {
                "clientId": emulator.client_id.to_string(), "clientSecret": emulator.client_secret.expose(),
                "tenantId": emulator.tenant_id.to_string(), "environmentUrl": emulator.url, "authorityHost": emulator.url}},
            "connectionSpec": {"id": spec, "version": "1.0"}
        })))
        .await["id"]
        .clone();
    let target = api
        .call(
            reqwest::Method::POST,
            "targetConnections",
            Some(json!({
                "name": "Timeline", "baseConnectionId": connection, "params": {"customizationPrefix": "new"},
                "connectionSpec": {"id": spec, "version": "1.0"}
            })),
        )
        .await["id"]
        .clone();
    let made = api
        .call(
            reqwest::Method::POST,
            "flows",
            Some(json!({
                "name": "Bench events", "flowSpec": {"id": dynsync::specs::ENGAGEMENT_EVENTS_FLOW_SPEC},
                "targetConnectionIds": [target], "provider": "sendgrid",
            })),
        )
        .await;
    let flow = made["id"].as_str().unwrap_or_else(|| panic!("the flow is made: {made}")).to_string();
    let events_url = format!("{}{}", service.url, made["eventsUrl"].as_str().unwrap());

    // 1. The day's events, posted as fast as they are accepted.
    let start_of_day = 1_764_489_600;
    let kinds = ["processed", "delivered", "open", "click"];
    let day: Vec<Json> = (0..per_contact)
        .flat_map(|i| {
            (0..contacts).map(move |n| {
                let kind = kinds[if i < 2 { i } else { 2 + (i % 2) }];
                sendgrid_event(n, kind, start_of_day + 60 * i as i64)
            })
        })
        .collect();
    let http = reqwest::Client::new();
    let started = Instant::now();
    for chunk in day.chunks(EVENTS_PER_POST) {
        let response = http.post(&events_url).json(&chunk).send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    }
    let posted = started.elapsed();
    let total = day.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(1800);
    while api.written(&flow).await < total {
        assert!(Instant::now() < deadline, "the day was not handled within the deadline");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = started.elapsed();
    let events_per_second = total as f64 / drained.as_secs_f64();
    let metrics = http.get(format!("{}/metrics", service.url)).send().await.unwrap().text().await.unwrap();
    let dataverse: Vec<&str> =
        metrics.lines().filter(|l| l.starts_with("dynsync_dataverse_") && !l.contains("duration_seconds")).collect();
    eprintln!("the connection's Dataverse client after the day's events:\n  {}", dataverse.join("\n  "));

    // 2. A steady stream, with unsubscribes in it.
    let steady_rate = env_number("STEADY_RATE", 300).max(1);
    let stream = steady_rate * opt_out_seconds;
    let every = (stream / opt_outs.max(1)).max(1);
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let per_tick = steady_rate.div_ceil(10);
    let mut n = 0;
    while n < stream {
        ticker.tick().await;
        let mut body = Vec::new();
        for _ in 0..per_tick.min(stream - n) {
            let contact = n % contacts;
            if n % every == 0 && sent_at.len() < opt_outs && !sent_at.contains_key(&email(contact)) {
                body.push(sendgrid_event(contact, "unsubscribe", start_of_day + 86_400));
                sent_at.insert(email(contact), Instant::now());
            } else {
                body.push(sendgrid_event(contact, "open", start_of_day + 86_400 + n as i64));
            }
            n += 1;
        }
        let response = http.post(&events_url).json(&body).send().await.unwrap();
        assert!(response.status().is_success());
    }
    let mut recorded: HashMap<String, Duration> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while recorded.len() < sent_at.len() {
        let ledger = api.call(reqwest::Method::GET, &format!("flows/{flow}/consent"), None).await;
        for change in ledger["items"].as_array().into_iter().flatten() {
            let email = change["email"].as_str().unwrap_or_default().to_string();
            if change["applied"] == true
                && let Some(sent) = sent_at.get(&email)
                && !recorded.contains_key(&email)
            {
                recorded.insert(email, sent.elapsed());
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} opt-outs applied within the deadline",
            recorded.len(),
            sent_at.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let opt_outs = sent_at.len();

    // 3. Opt-out propagation, Dynamics to the marketing side: a records-out flow sends the contacts, consent
    //    column included, to a webhook; once it holds them all, a person opts contacts out in Dynamics.
    let receiver = WebhookReceiver::start(WEBHOOK_SECRET).await.unwrap();
    let source = api
        .call(
            reqwest::Method::POST,
            "sourceConnections",
            Some(json!({"baseConnectionId": connection, "params": {"tableName": "contact"}})),
        )
        .await["id"]
        .clone();
    let hook = api
        .call(
            reqwest::Method::POST,
            "targetConnections",
            Some(json!({"name": "Marketing tool", "connectionSpec": {"id": dynsync::specs::DATA_LAKE.to_string()},
                        "params": {"dataSetId": "contacts_out", "format": "webhook", "url": receiver.url, "signingSecret": WEBHOOK_SECRET}})),
        )
        .await["id"]
        .clone();
    let made = api
        .call(
            reqwest::Method::POST,
            "flows",
            Some(json!({
                "name": "Contacts out", "flowSpec": {"id": dynsync::specs::INGESTION_FLOW_SPEC},
                "sourceConnectionIds": [source], "targetConnectionIds": [hook],
                "transformations": [{"name": "Mapping", "params": {"mappings": [
                    {"sourceAttribute": "emailaddress1"}, {"sourceAttribute": "donotbulkemail"}]}}],
                "scheduleParams": {"frequency": "continuous", "interval": 1}
            })),
        )
        .await;
    assert!(made["id"].is_string(), "the records-out flow is made: {made}");
    let consent = |records: &[(Instant, DeliveredRecord)]| latest_flags(records, "donotbulkemail");
    receiver.records_when(Duration::from_secs(600), |r| consent(r).len() >= contacts).await.expect("the full load");
    let ids: Vec<uuid::Uuid> = {
        let held = consent(&receiver.received.records());
        let mut ids: Vec<uuid::Uuid> = held.into_iter().filter(|(_, out)| !out).map(|(id, _)| id).collect();
        ids.sort();
        ids.truncate(opt_outs);
        ids
    };
    let mut changed_at: Vec<(uuid::Uuid, Instant)> = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    for id in &ids {
        ticker.tick().await;
        let mut change = dataverse::Record::new();
        change.insert("donotbulkemail".into(), Json::Bool(true));
        let at = Instant::now();
        dynamics.update(&dataverse::Table::contact(), *id, &change).await.unwrap();
        changed_at.push((*id, at));
    }
    let arrived = receiver
        .records_when(Duration::from_secs(600), |r| {
            let held = consent(r);
            ids.iter().all(|id| held.get(id) == Some(&true))
        })
        .await
        .expect("every opt-out made in Dynamics reaches the webhook");
    let mut out_lags: Vec<Duration> = changed_at
        .iter()
        .filter_map(|(id, at)| {
            arrived
                .iter()
                .find(|(when, r)| r.id == *id && *when >= *at && r.values["donotbulkemail"] == true)
                .map(|(when, _)| *when - *at)
        })
        .collect();
    out_lags.sort();

    let per_request = cost.per_request.as_secs_f64() + 1000.0 * cost.per_record_written.as_secs_f64();
    let (window, execution) = (limits.window.as_secs_f64(), limits.execution_time.as_secs_f64());
    let by_requests = f64::from(limits.requests) * 1000.0 / window;
    let steady = (f64::from(limits.concurrent).min(execution / window) * 1000.0 / per_request).min(by_requests);
    let run = drained.as_secs_f64();
    let allowed_in_flight = execution * (run / window).ceil() / run;
    let ceiling = (f64::from(limits.concurrent).min(allowed_in_flight) * 1000.0 / per_request).min(by_requests);
    println!(
        "| {total} events into Dynamics, default costs and limits | {events_per_second:.0} events/s (posted in {:.1} s, on the timeline in {run:.1} s) | ceiling {ceiling:.0} events/s over the run ({steady:.0} steady) | {:.2}× (target 0.9) |",
        posted.as_secs_f64(),
        events_per_second / ceiling
    );
    let mut lags: Vec<Duration> = recorded.values().copied().collect();
    lags.sort();
    let pct = |p: usize| lags[(lags.len() * p / 100).min(lags.len() - 1)].as_secs_f64();
    let (p50, p95) = (pct(50), pct(95));
    println!(
        "| opt-out propagation, marketing → Dynamics, {opt_outs} unsubscribes in {steady_rate} events/s for {opt_out_seconds} s | p50 {p50:.1} s, p95 {p95:.1} s | ≤ 60 s | {:.2}× |",
        p95 / 60.0
    );
    let out_pct = |p: usize| out_lags[(out_lags.len() * p / 100).min(out_lags.len() - 1)].as_secs_f64();
    let (out_p50, out_p95) = (out_pct(50), out_pct(95));
    println!(
        "| opt-out propagation, Dynamics → marketing, {} opt-outs a person makes, one each 100 ms, to the webhook | p50 {out_p50:.1} s, p95 {out_p95:.1} s | ≤ 60 s | {:.2}× |",
        out_lags.len(),
        out_p95 / 60.0
    );
    if let Some(path) = json_out {
        let figures = json!({
            "events": {"total": total, "events_per_second": events_per_second, "ceiling": ceiling, "steady_ceiling": steady,
                       "ratio": events_per_second / ceiling, "drain_s": drained.as_secs_f64(), "post_s": posted.as_secs_f64()},
            "opt_out": {"count": opt_outs, "p50_s": p50, "p95_s": p95},
            "opt_out_from_dynamics": {"count": out_lags.len(), "p50_s": out_p50, "p95_s": out_p95},
        });
        std::fs::write(path, serde_json::to_string_pretty(&figures).unwrap()).unwrap();
    }
    service.stop().await;
}
