//! `dynsync demo engagement`: email events onto the Dynamics timeline, from end to end, on the embedded Dataverse
//! emulator.
//!
//! It does what a marketer would: installs the Email event table (as `dynsync engagement install` does), makes an
//! email events flow through the API with SendGrid's verification key, and then "SendGrid" posts a day of signed
//! Event Webhook bodies — sends, deliveries, opens, clicks, unsubscribes, a spam complaint, hard bounces, a later
//! resubscribe, and an event for an address no contact has — and posts the first body twice, as SendGrid does
//! when an answer is late. The demo waits until every accepted event is handled, then reads Dynamics back: each
//! contact's timeline holds exactly its events, the opt-outs are on the contacts (the resubscribed one cleared),
//! a click made a follow-up task, and the unknown address is a failed event waiting for its contact.
//!
//! Then records out: a flow sends the contacts, consent column included, to the marketing tool's webhook (a
//! receiver on loopback that checks every signature); a person opts contacts out in Dynamics, and the demo times
//! each change's arrival at the webhook; a person opts an unsubscriber back in, and SendGrid's older unsubscribe,
//! posted late, does not undo it — on the contact, at the webhook, and in the consent ledger.

use super::{Api, emulator_credentials};
use crate::demo::receiver::{WebhookReceiver, latest_flags};
use crate::engagement::formats::sendgrid;
use crate::engagement::install::{EngagementTables, install};
use crate::hosts::AllowedHosts;
use crate::service::{Service, ServiceConfig};
use crate::specs::{DATA_LAKE, ENGAGEMENT_EVENTS_FLOW_SPEC, INGESTION_FLOW_SPEC};
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use dataverse::{Client, Request};
use dataverse_emulator::{CostModel, EmulatorConfig};
use futures::TryStreamExt;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey;
use reqwest::Method;
use serde_json::{Value as Json, json};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Events in one SendGrid post.
const EVENTS_PER_POST: usize = 500;
/// The day's first event, 2026-11-30T08:00:00Z.
const DAY_START: i64 = 1_764_489_600;

/// One event SendGrid posts, and what it should leave in Dynamics.
struct DayEvent {
    contact: Option<usize>,
    body: Json,
}

/// Runs the demo; `Ok(true)` when Dynamics holds what it should.
pub async fn run(people: usize) -> anyhow::Result<bool> {
    let people = people.max(10);
    let started = Instant::now();
    let emulator = EmulatorConfig { cost: CostModel::free(), ..Default::default() }.start().await?;
    let credentials = emulator_credentials(&emulator);
    let dynamics = super::emulator_client(&emulator);
    let data_dir = tempfile::tempdir().context("creating the demo's data directory")?;
    let mut config = ServiceConfig::new(data_dir.path());
    config.api_tokens = vec![format!("demo-{}", Uuid::new_v4().simple())];
    // The marketing tool's webhook, on loopback: dynsync may send to it.
    let receiver = WebhookReceiver::start(WEBHOOK_SECRET).await.context("starting the marketing tool's webhook")?;
    config.allowed_hosts = AllowedHosts::of_urls([emulator.url.as_str(), receiver.url.as_str()]);
    let service = Service::start(config).await?;
    let api = Api { http: reqwest::Client::new(), service: &service };
    println!("dynsync demo engagement: Dynamics 365 at {}, dynsync at {}", emulator.url, service.url);

    // 1. The Email event table, as `dynsync engagement install` makes it, and the contacts.
    let tables = EngagementTables::new("new".parse().expect("new is a prefix"));
    let report = install(&dynamics, &tables).await.context("installing the Email event table")?;
    let contacts = seed_contacts(&dynamics, people).await?;
    println!(
        "1. installed {} ({} parts created); {people} contacts with email addresses",
        tables.activity_table(),
        report.created.len()
    );

    // 2. The flow, through the API, with SendGrid's verification key.
    let signing = SigningKey::from_slice(&Uuid::new_v4().as_bytes().repeat(2)).context("a signing key")?;
    let verification_key = BASE64.encode(
        p256::PublicKey::from(signing.verifying_key()).to_public_key_der().context("a verification key")?.as_bytes(),
    );
    let (connection, target) = super::connect(&api, &emulator.url, &credentials, "new").await?;
    let made = api
        .call(
            Method::POST,
            "flows",
            Some(json!({
                "name": "Newsletter events",
                "flowSpec": {"id": ENGAGEMENT_EVENTS_FLOW_SPEC, "version": "1.0"},
                "targetConnectionIds": [target],
                "provider": "sendgrid",
                "verificationKey": verification_key,
                "optOutColumns": ["donotbulkemail"],
                "followUp": {"onClick": true},
            })),
        )
        .await?;
    let flow = made["id"].as_str().context("the flow has an id")?.to_string();
    let url = format!("{}{}", service.url, made["eventsUrl"].as_str().context("the flow has an events URL")?);
    println!("2. made email events flow {flow}; SendGrid posts to {}?code=…", url.split('?').next().unwrap_or(""));

    // 3. SendGrid posts the day, signed; the first post twice.
    let day = the_day(people);
    let http = reqwest::Client::new();
    let mut accepted = 0;
    let mut unknown_posted = 0;
    let bodies: Vec<String> = day
        .chunks(EVENTS_PER_POST)
        .map(|chunk| Json::Array(chunk.iter().map(|e| e.body.clone()).collect()).to_string())
        .collect();
    let mut posts: Vec<&String> = bodies.iter().collect();
    posts.insert(1, &bodies[0]);
    for (n, body) in posts.iter().enumerate() {
        let answer = post_signed(&http, &url, &signing, body, DAY_START + 86_400 + n as i64).await?;
        accepted += answer["accepted"].as_u64().unwrap_or(0);
        unknown_posted += body.matches(UNKNOWN_ADDRESS).count() as u64;
    }
    println!(
        "3. SendGrid posted {} events in {} signed bodies (the first twice, as a retry): {accepted} accepted",
        day.len(),
        posts.len()
    );

    // 4. Every accepted event handled.
    let run = api.wait_for_run(&flow, accepted, Duration::from_secs(300)).await?;
    let summary = &run["metrics"]["recordSummary"];
    println!(
        "4. run: {} received, {} written, {} failed (the address no contact has, each time it was posted)",
        summary["inputRecordCount"], summary["outputRecordCount"], summary["failedRecordCount"]
    );

    // 5. Dynamics, read back.
    let mut wrong = Vec::new();
    let expected = expected_timelines(&day, &contacts);
    let timelines = read_timelines(&dynamics, &tables.activity_table()).await?;
    for (contact, count) in &expected {
        let holds = timelines.get(contact).copied().unwrap_or(0);
        if holds != *count {
            wrong.push(format!("contact {contact} has {holds} email events on its timeline, {count} expected"));
        }
    }
    if timelines.len() != expected.len() {
        wrong.push(format!("{} contacts have email events, {} expected", timelines.len(), expected.len()));
    }
    let opted_out = opted_out(&dynamics).await?;
    let should_be: BTreeSet<Uuid> = OPTED_OUT.iter().map(|&n| contacts[n]).collect();
    if opted_out != should_be {
        wrong.push(format!("the contacts opted out are {opted_out:?}, not {should_be:?}"));
    }
    let tasks: Json = dynamics.execute(&Request::get("tasks?$select=subject")).await?.read_json()?;
    let task_count = tasks["value"].as_array().map_or(0, Vec::len);
    let clicks = day.iter().filter(|e| e.body["event"] == "click").count();
    if task_count != clicks {
        wrong.push(format!("{task_count} follow-up tasks for {clicks} clicks"));
    }
    let events_on_timelines: usize = timelines.values().sum();
    println!(
        "5. Dynamics: {events_on_timelines} email events on {} timelines, {} contacts opted out ({} resubscribed), {task_count} follow-up tasks",
        timelines.len(),
        opted_out.len(),
        RESUBSCRIBED.len()
    );

    // 6. Records out: the contacts, consent included, to the marketing tool's webhook; a person's opt-outs in
    //    Dynamics reach it; a person's opt-in in Dynamics is not undone by SendGrid's older unsubscribe.
    let hook = api
        .post(
            "targetConnections",
            json!({"name": "Marketing tool", "connectionSpec": {"id": DATA_LAKE.to_string(), "version": "1.0"},
                   "params": {"dataSetId": "contacts_out", "format": "webhook", "url": receiver.url, "signingSecret": WEBHOOK_SECRET}}),
        )
        .await?;
    let source = api
        .post("sourceConnections", json!({"baseConnectionId": connection, "params": {"tableName": "contact"}}))
        .await?;
    api.post(
        "flows",
        json!({
            "name": "Contacts to the marketing tool",
            "flowSpec": {"id": INGESTION_FLOW_SPEC, "version": "1.0"},
            "sourceConnectionIds": [source], "targetConnectionIds": [hook],
            "transformations": [{"name": "Mapping", "params": {"mappings": [
                {"sourceAttribute": "emailaddress1", "destination": "email"},
                {"sourceAttribute": "donotbulkemail"}
            ]}}],
            "scheduleParams": {"frequency": "continuous", "interval": "1"},
        }),
    )
    .await?;
    let sent =
        receiver.records_when(Duration::from_secs(120), |r| latest_flags(r, "donotbulkemail").len() >= people).await;
    let sent_out: BTreeSet<Uuid> = latest_flags(&sent.unwrap_or_default(), "donotbulkemail")
        .into_iter()
        .filter(|(_, out)| *out)
        .map(|(id, _)| id)
        .collect();
    if sent_out != should_be {
        wrong.push(format!("the webhook has {sent_out:?} opted out, not {should_be:?}"));
    }
    let changes: Vec<(Uuid, Instant)> = {
        let mut changes = Vec::new();
        for &contact in contacts.iter().skip(OPTED_OUT.len() + 1).take(PERSON_CHANGES) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let at = Instant::now();
            dynamics.update(&dataverse::Table::contact(), contact, &record(json!({"donotbulkemail": true}))).await?;
            changes.push((contact, at));
        }
        changes
    };
    let arrived = receiver
        .records_when(Duration::from_secs(60), |r| {
            let held = latest_flags(r, "donotbulkemail");
            changes.iter().all(|(c, _)| held.get(c) == Some(&true))
        })
        .await
        .unwrap_or_default();
    let mut lags: Vec<Duration> = changes
        .iter()
        .filter_map(|(contact, at)| {
            arrived
                .iter()
                .find(|(when, r)| r.id == *contact && *when >= *at && r.values["donotbulkemail"] == true)
                .map(|(when, _)| *when - *at)
        })
        .collect();
    lags.sort();
    if lags.len() != changes.len() {
        wrong.push(format!("{} of {} opt-outs made in Dynamics reached the webhook", lags.len(), changes.len()));
    }
    let percentile = |p: f64| lags.get(((lags.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied();
    // The person opts the first unsubscriber back in; SendGrid's unsubscribe from before that arrives late.
    let first = contacts[UNSUBSCRIBED[0]];
    tokio::time::sleep(Duration::from_millis(1100)).await;
    dynamics.update(&dataverse::Table::contact(), first, &record(json!({"donotbulkemail": false}))).await?;
    let late = json!([{"email": email_of(UNSUBSCRIBED[0]), "event": "unsubscribe", "timestamp": DAY_START + 3_600,
                       "sg_event_id": "late-unsubscribe", "sg_message_id": "m-late"}])
    .to_string();
    let answer = post_signed(&http, &url, &signing, &late, DAY_START + 90_000).await?;
    let late_accepted = answer["accepted"].as_u64().unwrap_or(0);
    api.wait_for_run(&flow, accepted + late_accepted, Duration::from_secs(120)).await?;
    if self::opted_out(&dynamics).await?.contains(&first) {
        wrong.push(format!("SendGrid's older unsubscribe undid the person's opt-in of {first}"));
    }
    let back_in = receiver
        .records_when(Duration::from_secs(30), |r| latest_flags(r, "donotbulkemail").get(&first) == Some(&false))
        .await
        .is_some();
    if !back_in {
        wrong.push(format!("the person's opt-in of {first} did not reach the webhook"));
    }
    let ledger = api.call(Method::GET, &format!("flows/{flow}/consent?contactId={first}"), None).await?;
    let late_lost = ledger["items"].as_array().is_some_and(|items| {
        items.iter().any(|c| c["side"] == "dynamics" && c["optedOut"] == false)
            && items.iter().any(|c| c["side"] == "marketing" && c["optedOut"] == true && c["applied"] == false)
    });
    if !late_lost {
        wrong.push(format!("the consent ledger of {first} does not show the late unsubscribe losing: {ledger}"));
    }
    println!(
        "6. records out: {} contacts sent to the webhook, signed; {} opt-outs made in Dynamics reached it (p50 {:.1} s, p95 {:.1} s); a person's opt-in in Dynamics stood against SendGrid's older unsubscribe",
        people,
        lags.len(),
        percentile(0.5).unwrap_or_default().as_secs_f64(),
        percentile(0.95).unwrap_or_default().as_secs_f64(),
    );
    if receiver.received.bad_signatures.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        wrong.push("the webhook got deliveries whose signature did not verify".into());
    }

    let ok = wrong.is_empty()
        && summary["failedRecordCount"].as_u64() == Some(unknown_posted)
        && summary["outputRecordCount"].as_u64() == Some(accepted - unknown_posted);
    for line in wrong.iter().take(10) {
        println!("   WRONG {line}");
    }
    if ok {
        println!(
            "PASS: a day of {} SendGrid events is on the contacts' timelines once each, with their opt-outs and follow-up tasks; the contacts and a person's consent changes reached the marketing tool ({:.1} s)",
            day.len(),
            started.elapsed().as_secs_f64()
        );
    } else {
        println!("FAIL: Dynamics does not hold what it should (see above)");
    }
    service.stop().await;
    Ok(ok)
}

/// How many contacts a person opts out in Dynamics, after the day.
const PERSON_CHANGES: usize = 20;
/// The secret the marketing tool's webhook checks dynsync's signatures with.
const WEBHOOK_SECRET: &str = "demo-marketing-webhook-secret";

fn record(body: Json) -> dataverse::Record {
    match body {
        Json::Object(map) => map,
        _ => dataverse::Record::new(),
    }
}

/// Posts a body as SendGrid does, signed with `signing` at `timestamp`; the answer.
async fn post_signed(
    http: &reqwest::Client,
    url: &str,
    signing: &SigningKey,
    body: &str,
    timestamp: i64,
) -> anyhow::Result<Json> {
    let timestamp = timestamp.to_string();
    let signature: Signature = signing.sign(&[timestamp.as_bytes(), body.as_bytes()].concat());
    let response = http
        .post(url)
        .header(sendgrid::SIGNATURE_HEADER, BASE64.encode(signature.to_der().as_bytes()))
        .header(sendgrid::TIMESTAMP_HEADER, &timestamp)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status();
    let answer: Json = response.json().await?;
    anyhow::ensure!(status.is_success(), "a post was not accepted: {answer}");
    Ok(answer)
}

/// The people who unsubscribe (the first ones), complain (the next) and bounce hard (the two after).
const UNSUBSCRIBED: [usize; 3] = [0, 1, 2];
const COMPLAINED: usize = 3;
const BOUNCED: [usize; 2] = [4, 5];
/// Who resubscribes later in the day.
const RESUBSCRIBED: [usize; 1] = [1];
/// Who ends the day opted out.
const OPTED_OUT: [usize; 5] = [0, 2, 3, 4, 5];

/// The address of the event no contact has.
const UNKNOWN_ADDRESS: &str = "nobody@nowhere.example";

fn email_of(n: usize) -> String {
    format!("person{n}@fabrikam{}.com", n % 7)
}

/// A day of one newsletter: each person's events, in time order, and one event for an address nobody has.
fn the_day(people: usize) -> Vec<DayEvent> {
    let mut day = Vec::new();
    let mut event = |n: Option<usize>, kind: &str, offset: i64, extra: Json| {
        let email = n.map_or(UNKNOWN_ADDRESS.to_string(), email_of);
        let mut body = json!({
            "email": email, "timestamp": DAY_START + offset, "event": kind,
            "sg_message_id": format!("newsletter-1130.{}", n.map_or(9999, |n| n)),
            "sg_event_id": Uuid::new_v4().to_string(), "category": ["newsletter"], "campaign": "November newsletter",
        });
        if let (Json::Object(b), Json::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        day.push(DayEvent { contact: n, body });
    };
    for n in 0..people {
        let bounces = BOUNCED.contains(&n);
        event(Some(n), "processed", 0, json!({}));
        if bounces {
            event(
                Some(n),
                "bounce",
                20,
                json!({"type": "bounce", "reason": "550 5.1.1 The email account does not exist"}),
            );
            continue;
        }
        event(Some(n), "delivered", 10, json!({}));
        if n.is_multiple_of(2) {
            event(Some(n), "open", 600 + n as i64, json!({}));
        }
        if n.is_multiple_of(5) {
            event(Some(n), "click", 900 + n as i64, json!({"url": "https://contoso.com/winter-sale"}));
        }
        if UNSUBSCRIBED.contains(&n) {
            event(Some(n), "unsubscribe", 1200, json!({}));
        }
        if n == COMPLAINED {
            event(Some(n), "spamreport", 1300, json!({}));
        }
        if RESUBSCRIBED.contains(&n) {
            event(Some(n), "group_resubscribe", 7200, json!({"asm_group_id": 1}));
        }
    }
    event(None, "delivered", 10, json!({}));
    day
}

/// How many email events each contact's timeline should hold.
fn expected_timelines(day: &[DayEvent], contacts: &[Uuid]) -> HashMap<Uuid, usize> {
    let mut expected = HashMap::new();
    for event in day {
        if let Some(n) = event.contact {
            *expected.entry(contacts[n]).or_default() += 1;
        }
    }
    expected
}

async fn seed_contacts(dynamics: &Client, count: usize) -> anyhow::Result<Vec<Uuid>> {
    let targets: Vec<Json> = (0..count)
        .map(|n| {
            json!({"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": format!("Person {n}"), "emailaddress1": email_of(n)})
        })
        .collect();
    let mut ids = Vec::with_capacity(count);
    for chunk in targets.chunks(1000) {
        let answer: Json = dynamics
            .send(Method::POST, "contacts/Microsoft.Dynamics.CRM.CreateMultiple", Some(&json!({"Targets": chunk})))
            .await?
            .json()
            .await?;
        let created = answer["Ids"].as_array().context("CreateMultiple answered without Ids")?;
        ids.extend(created.iter().filter_map(|i| i.as_str()?.parse::<Uuid>().ok()));
    }
    anyhow::ensure!(ids.len() == count, "{} contacts were created instead of {count}", ids.len());
    Ok(ids)
}

/// Each contact's count of email events on its timeline, read through `activitypointers` as Dynamics shows it.
async fn read_timelines(dynamics: &Client, activity_table: &str) -> anyhow::Result<HashMap<Uuid, usize>> {
    let activities = dataverse::Table::new("activitypointer", "activitypointers");
    let query = dataverse::Query::new(&activities)
        .select(&["_regardingobjectid_value"])
        .filter(dataverse::Filter::eq("activitytypecode", activity_table));
    let rows: Vec<dataverse::Record> = dynamics.query(&query).try_collect().await?;
    let mut counts = HashMap::new();
    for row in rows {
        if let Some(contact) =
            row.get("_regardingobjectid_value").and_then(Json::as_str).and_then(|i| i.parse::<Uuid>().ok())
        {
            *counts.entry(contact).or_default() += 1;
        }
    }
    Ok(counts)
}

async fn opted_out(dynamics: &Client) -> anyhow::Result<BTreeSet<Uuid>> {
    let page: Json = dynamics
        .execute(&Request::get("contacts?$select=contactid&$filter=donotbulkemail%20eq%20true"))
        .await?
        .read_json()?;
    Ok(page["value"]
        .as_array()
        .context("a page of contacts")?
        .iter()
        .filter_map(|r| r["contactid"].as_str()?.parse().ok())
        .collect())
}
