//! Crash safety of email events: `dynsync serve` is killed with SIGKILL while it writes a burst of events onto
//! the Dynamics timeline, and started again on the same data directory; the email service posts one body again
//! across the crash. Every accepted event ends up on its contact's timeline exactly once, the runs count each
//! posted event once with none failed, and the unsubscribes reach their contacts.

use dataverse::{Client, Filter, Query, Record, Table};
use dataverse_emulator::{CostModel, EmulatorConfig};
use dynsync::demo::emulator_client as dynamics;
use dynsync::engagement::install::{EngagementTables, install};
use futures::TryStreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use uuid::Uuid;

mod common;

use common::ServeProcess;

const BASE: &str = dynsync::api::BASE_PATH;
const CONTACTS: usize = 200;
/// Each contact's events: three messages delivered, opened and clicked, then an unsubscribe (every fifth
/// contact) or a fourth message delivered.
const EVENTS_PER_CONTACT: usize = 10;
const EVENTS_PER_POST: usize = 200;

/// A `dynsync serve` process that is killed when the test ends, however it ends.
struct Serving(ServeProcess);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.kill();
    }
}

fn email_of(n: usize) -> String {
    format!("person{n}@contoso.com")
}

fn unsubscribes(n: usize) -> bool {
    n.is_multiple_of(5)
}

/// Every event of the day in dynsync's own format, one per contact in turn, so that each body holds an event of
/// every contact and a crash leaves each timeline half written.
fn the_day() -> Vec<Json> {
    let mut events = Vec::with_capacity(CONTACTS * EVENTS_PER_CONTACT);
    for step in 0..EVENTS_PER_CONTACT {
        for n in 0..CONTACTS {
            let (message, kind, minute) = match step {
                0..9 => (step / 3, ["delivered", "opened", "clicked"][step % 3], step),
                _ if unsubscribes(n) => (3, "unsubscribed", 30),
                _ => (3, "delivered", 30),
            };
            events.push(json!({
                "messageId": format!("m-{n}-{message}"), "type": kind,
                "occurredAt": format!("2026-11-30T10:{minute:02}:00Z"), "email": email_of(n),
            }));
        }
    }
    events
}

/// Creates the contacts with CreateMultiple, as an import would; their ids, in the order of `email_of`.
async fn seed_contacts(dynamics: &Client) -> Vec<Uuid> {
    let targets: Vec<Json> = (0..CONTACTS)
        .map(|n| {
            json!({"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": format!("Person {n}"), "emailaddress1": email_of(n)})
        })
        .collect();
    let answer: Json = dynamics
        .send(Method::POST, "contacts/Microsoft.Dynamics.CRM.CreateMultiple", Some(&json!({"Targets": targets})))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<Uuid> =
        answer["Ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(ids.len(), CONTACTS, "{answer}");
    ids
}

/// Every row of a query, page after page.
async fn rows(dynamics: &Client, table: (&str, &str, &str), columns: &[&str], filter: Option<Filter>) -> Vec<Record> {
    let table = Table { logical_name: table.0.into(), entity_set: table.1.into(), primary_id: table.2.into() };
    let mut query = Query::new(&table).select(columns);
    if let Some(filter) = filter {
        query = query.filter(filter);
    }
    dynamics.query(&query).try_collect().await.unwrap()
}

/// The Email event rows in Dynamics.
async fn email_events(dynamics: &Client) -> Vec<Record> {
    rows(
        dynamics,
        ("new_emailevent", "new_emailevents", "activityid"),
        &["new_eventkey", "_regardingobjectid_value"],
        None,
    )
    .await
}

/// The flow's runs added up (zeros while dynsync does not answer).
async fn totals(http: &reqwest::Client, dynsync: &ServeProcess, flow: &str) -> HashMap<&'static str, u64> {
    let path = format!("{BASE}/runs?property=flowId=={flow}");
    let runs = dynsync.call(http, Method::GET, &path, None).await.unwrap_or(Json::Null);
    let mut sums = HashMap::new();
    for field in ["inputRecordCount", "outputRecordCount", "failedRecordCount"] {
        let sum = runs["items"].as_array().into_iter().flatten();
        sums.insert(field, sum.map(|r| r["metrics"]["recordSummary"][field].as_u64().unwrap_or(0)).sum());
    }
    sums
}

/// Posts a body to the events URL as the email service does; how many events dynsync accepted.
async fn post(http: &reqwest::Client, dynsync: &ServeProcess, url: &str, body: &str) -> u64 {
    let response = http
        .post(format!("{}{url}", dynsync.url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let answer: Json = response.json().await.unwrap_or(Json::Null);
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["refused"], 0, "{answer}");
    answer["accepted"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_resumes_its_events_without_losing_or_doubling_one() {
    common::bounded_for(Duration::from_secs(90), killed_and_resumed()).await;
}

async fn killed_and_resumed() {
    // Each request and each record written cost time, so that the events are still being written when dynsync is
    // killed.
    let cost = CostModel {
        per_request: Duration::from_millis(25),
        per_record_written: Duration::from_millis(3),
        ..CostModel::free()
    };
    let emulator = EmulatorConfig { cost, ..Default::default() }.start().await.unwrap();
    let dynamics = dynamics(&emulator);
    // `ServeProcess::target` makes a target with the customization prefix `new`.
    install(&dynamics, &EngagementTables::new("new".parse().unwrap())).await.unwrap();
    let contacts = seed_contacts(&dynamics).await;

    let data_dir = tempfile::tempdir().unwrap();
    let args = ["--data-dir", data_dir.path().to_str().unwrap()];
    let http = reqwest::Client::new();
    let mut first = Serving(ServeProcess::start(&args, &[]));
    first.0.ready(&http).await;
    let target = first.0.target(&http, &emulator).await;
    let made = first
        .0
        .call(
            &http,
            Method::POST,
            &format!("{BASE}/flows"),
            Some(json!({
                "name": "Newsletter events",
                "flowSpec": {"id": dynsync::specs::ENGAGEMENT_EVENTS_FLOW_SPEC, "version": "1.0"},
                "targetConnectionIds": [target],
                "provider": "dynsync",
            })),
        )
        .await
        .unwrap();
    let flow = made["id"].as_str().unwrap().to_string();
    let url = made["eventsUrl"].as_str().unwrap().to_string();

    let day = the_day();
    let distinct = day.len();
    let bodies: Vec<String> = day.chunks(EVENTS_PER_POST).map(|chunk| json!({"events": chunk}).to_string()).collect();

    // The service has been posting for a while: its first body is on the timelines…
    let mut accepted = post(&http, &first.0, &url, &bodies[0]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while totals(&http, &first.0, &flow).await["inputRecordCount"] < accepted {
        assert!(Instant::now() < deadline, "the first body was never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // …when it posts the rest of the day at once, each body answered as accepted.
    for body in &bodies[1..] {
        accepted += post(&http, &first.0, &url, body).await;
    }
    assert_eq!(accepted, distinct as u64);

    // Killed while writing: more than the first body on the timelines, not every event.
    let deadline = Instant::now() + Duration::from_secs(30);
    while email_events(&dynamics).await.len() <= EVENTS_PER_POST {
        assert!(Instant::now() < deadline, "dynsync never wrote past the first body");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.0.kill();
    let at_kill = email_events(&dynamics).await.len();
    assert!(at_kill < distinct, "killed before every event was written ({at_kill} of {distinct})");

    // Started again on the same data directory; the service, retrying across the crash, posts its last body again.
    let second = Serving(ServeProcess::start(&args, &[]));
    second.0.ready(&http).await;
    accepted += post(&http, &second.0, &url, bodies.last().unwrap()).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let sums = loop {
        let sums = totals(&http, &second.0, &flow).await;
        if sums["inputRecordCount"] >= accepted {
            break sums;
        }
        assert!(Instant::now() < deadline, "only {sums:?} of {accepted} events handled after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sums["inputRecordCount"], accepted, "each posted event counted once: {sums:?}");
    assert_eq!(sums["failedRecordCount"], 0, "{sums:?}");
    assert_eq!(sums["outputRecordCount"], accepted, "{sums:?}");

    // Exactly one Email event per distinct event, each on its contact's timeline.
    let written = email_events(&dynamics).await;
    let mut per_key: HashMap<&str, usize> = HashMap::new();
    let mut per_contact: HashMap<Uuid, usize> = HashMap::new();
    for row in &written {
        *per_key.entry(row["new_eventkey"].as_str().unwrap()).or_default() += 1;
        let contact = row["_regardingobjectid_value"].as_str().unwrap().parse().unwrap();
        *per_contact.entry(contact).or_default() += 1;
    }
    let doubled: Vec<(&&str, &usize)> = per_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "events written twice: {doubled:?}");
    assert_eq!(per_key.len(), distinct, "every event is in Dynamics");
    assert_eq!(written.len(), distinct);
    for (n, contact) in contacts.iter().enumerate() {
        assert_eq!(per_contact.get(contact), Some(&EVENTS_PER_CONTACT), "contact {n}'s events");
    }
    let timelines = rows(
        &dynamics,
        ("activitypointer", "activitypointers", "activityid"),
        &["activityid"],
        Some(Filter::eq("activitytypecode", "new_emailevent")),
    )
    .await;
    assert_eq!(timelines.len(), distinct, "the timelines show each event once");

    // The unsubscribed contacts are out of bulk email, the others are not.
    let opted_out: BTreeSet<Uuid> =
        rows(&dynamics, ("contact", "contacts", "contactid"), &["contactid"], Some(Filter::eq("donotbulkemail", true)))
            .await
            .iter()
            .map(|r| r["contactid"].as_str().unwrap().parse().unwrap())
            .collect();
    let expected: BTreeSet<Uuid> = (0..CONTACTS).filter(|n| unsubscribes(*n)).map(|n| contacts[n]).collect();
    assert_eq!(opted_out, expected, "exactly the unsubscribed contacts have donotbulkemail");
    let still_in = rows(
        &dynamics,
        ("contact", "contacts", "contactid"),
        &["contactid"],
        Some(Filter::eq("donotbulkemail", false)),
    )
    .await;
    assert_eq!(still_in.len(), CONTACTS - expected.len(), "the others have donotbulkemail false");
    drop(second);
}
