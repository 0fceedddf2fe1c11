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

use super::{Api, emulator_credentials};
use crate::engagement::formats::sendgrid;
use crate::engagement::install::{EngagementTables, install};
use crate::hosts::AllowedHosts;
use crate::service::{Service, ServiceConfig};
use crate::specs::ENGAGEMENT_EVENTS_FLOW_SPEC;
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use dataverse::{Client, Request};
use dataverse_emulator::{CostModel, EmulatorConfig};
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
    config.allowed_hosts = AllowedHosts::of_urls([emulator.url.as_str()]);
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
    let (_, target) = super::connect(&api, &emulator.url, &credentials, "new").await?;
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
        let timestamp = (DAY_START + 86_400 + n as i64).to_string();
        let signature: Signature = signing.sign(&[timestamp.as_bytes(), body.as_bytes()].concat());
        let response = http
            .post(&url)
            .header(sendgrid::SIGNATURE_HEADER, BASE64.encode(signature.to_der().as_bytes()))
            .header(sendgrid::TIMESTAMP_HEADER, &timestamp)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = response.status();
        let answer: Json = response.json().await?;
        anyhow::ensure!(status.is_success(), "post {n} was not accepted: {answer}");
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
    let ok = wrong.is_empty()
        && summary["failedRecordCount"].as_u64() == Some(unknown_posted)
        && summary["outputRecordCount"].as_u64() == Some(accepted - unknown_posted);
    for line in wrong.iter().take(10) {
        println!("   WRONG {line}");
    }
    if ok {
        println!(
            "PASS: a day of {} SendGrid events is on the contacts' timelines once each, with their opt-outs and follow-up tasks ({:.1} s)",
            day.len(),
            started.elapsed().as_secs_f64()
        );
    } else {
        println!("FAIL: Dynamics does not hold what it should (see above)");
    }
    service.stop().await;
    Ok(ok)
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
    let mut counts = HashMap::new();
    let mut next = Some(format!(
        "activitypointers?$select=_regardingobjectid_value&$filter=activitytypecode%20eq%20'{activity_table}'"
    ));
    while let Some(path) = next {
        let page: Json = dynamics.execute(&Request::get(path)).await?.read_json()?;
        for row in page["value"].as_array().context("a page of activities")? {
            if let Some(contact) = row["_regardingobjectid_value"].as_str().and_then(|i| i.parse::<Uuid>().ok()) {
                *counts.entry(contact).or_default() += 1;
            }
        }
        next = page["@odata.nextLink"].as_str().map(|link| {
            link.split_once("/api/data/").and_then(|(_, r)| r.split_once('/')).map_or(link, |(_, p)| p).to_string()
        });
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
